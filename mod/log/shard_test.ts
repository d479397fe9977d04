import assert from "node:assert/strict";
import { AssertionError, Prng } from "../base/mod.ts";
import {
  HASHED_KEY_BYTES,
  HASHED_KEY_MIN,
  rangeContains,
  shardForKey,
  ShardMap,
  ShardMapError,
  type ShardRange,
} from "./shard.ts";

/** A 32-byte key whose first byte is `b` (rest zero). */
const at = (b: number): Uint8Array => {
  const k = new Uint8Array(HASHED_KEY_BYTES);
  k[0] = b;
  return k;
};
const MAX_KEY = new Uint8Array(HASHED_KEY_BYTES).fill(0xff);

function threeShards(): ShardRange[] {
  // Given out of order on purpose.
  return [
    { shardId: 30, start: at(0xc0), end: null },
    { shardId: 10, start: HASHED_KEY_MIN, end: at(0x40) },
    { shardId: 20, start: at(0x40), end: at(0xc0) },
  ];
}

Deno.test("shardForKey() finds the owner at range edges, with end exclusive", () => {
  const map = new ShardMap(threeShards());
  assert.equal(shardForKey(map, HASHED_KEY_MIN), 10);
  const below = at(0x3f);
  below.fill(0xff, 1);
  assert.equal(shardForKey(map, below), 10);
  assert.equal(shardForKey(map, at(0x40)), 20);
  assert.equal(shardForKey(map, at(0xbf)), 20);
  assert.equal(shardForKey(map, at(0xc0)), 30);
  assert.equal(shardForKey(map, MAX_KEY), 30);
  assert.deepEqual(map.ranges().map((r) => r.shardId), [10, 20, 30]);
});

Deno.test("shardForKey() agrees with a linear scan on random keys and maps", () => {
  const prng = new Prng(99);
  for (let trial = 0; trial < 20; trial++) {
    const cuts = [
      ...new Set(Array.from({ length: 1 + prng.nextInt(40) }, () => prng.nextInt(65536))),
    ]
      .filter((c) => c > 0).sort((a, b) => a - b);
    const keyAt = (c: number): Uint8Array => {
      const k = new Uint8Array(HASHED_KEY_BYTES);
      k[0] = c >> 8;
      k[1] = c & 0xff;
      return k;
    };
    const ranges: ShardRange[] = [];
    let start = HASHED_KEY_MIN;
    cuts.forEach((c, i) => {
      ranges.push({ shardId: i + 1, start, end: keyAt(c) });
      start = keyAt(c);
    });
    ranges.push({ shardId: 1000, start, end: null });
    const map = new ShardMap(ranges);
    for (let i = 0; i < 200; i++) {
      const key = prng.bytes(HASHED_KEY_BYTES);
      const owners = ranges.filter((r) => rangeContains(r, key));
      assert.equal(owners.length, 1);
      assert.equal(shardForKey(map, key), owners[0]!.shardId);
    }
  }
});

Deno.test("ShardMap rejects gaps, overlaps, uncovered ends and bad ids with ShardMapError", () => {
  const bad: [string, ShardRange[]][] = [
    ["empty", []],
    ["gap", [{ shardId: 1, start: HASHED_KEY_MIN, end: at(0x40) }, {
      shardId: 2,
      start: at(0x50),
      end: null,
    }]],
    ["overlap", [{ shardId: 1, start: HASHED_KEY_MIN, end: at(0x50) }, {
      shardId: 2,
      start: at(0x40),
      end: null,
    }]],
    ["low end uncovered", [{ shardId: 1, start: at(1), end: null }]],
    ["high end uncovered", [{ shardId: 1, start: HASHED_KEY_MIN, end: at(0x80) }]],
    ["duplicate id", [{ shardId: 1, start: HASHED_KEY_MIN, end: at(0x40) }, {
      shardId: 1,
      start: at(0x40),
      end: null,
    }]],
    ["not u32", [{ shardId: -1, start: HASHED_KEY_MIN, end: null }]],
    ["short key", [{ shardId: 1, start: new Uint8Array(31), end: null }]],
    ["empty range", [
      { shardId: 1, start: HASHED_KEY_MIN, end: at(0x40) },
      { shardId: 2, start: at(0x40), end: at(0x40) },
      { shardId: 3, start: at(0x40), end: null },
    ]],
  ];
  for (const [what, ranges] of bad) {
    assert.throws(() => new ShardMap(ranges), ShardMapError, what);
  }
});

Deno.test("ShardMap copies its input and asserts on keys that are not 32 bytes", () => {
  const ranges = threeShards();
  const map = new ShardMap(ranges);
  ranges[2]!.start[0] = 0x41; // mutating the caller's array does not move the boundary
  assert.equal(shardForKey(map, at(0x40)), 20);
  assert.equal(map.rangeOf(20)!.start[0], 0x40);
  assert.throws(() => shardForKey(map, new Uint8Array(16)), AssertionError);
  assert.equal(ShardMap.single(7).shardForKey(MAX_KEY), 7);
});
