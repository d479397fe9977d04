import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { murmur3, Placement, type PlacementDevice, PlacementError } from "./placement.ts";

const IDS = 3000;

function ids(seed: number, count = IDS): Uint8Array[] {
  const prng = new Prng(seed);
  return Array.from({ length: count }, () => prng.bytes(32));
}

function devices(count: number, nodes = 1, prefix = "d"): PlacementDevice[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}`, node: `n${i % nodes}` }));
}

function chosenIds(p: Placement, key: Uint8Array, count: number): string[] {
  return p.place(key, count).map((i) => p.devices[i]!.id);
}

Deno.test("murmur3() matches the reference vectors", () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(murmur3(enc(""), 0), 0);
  assert.equal(murmur3(enc(""), 1), 0x514e28b7);
  assert.equal(murmur3(enc("hello"), 0), 0x248bfa47);
  assert.equal(murmur3(enc("Hello, world!"), 1234), 0xfaf6cdb3);
  assert.equal(murmur3(enc("abc"), 0), 0xb3dd93fa);
});

Deno.test("Placement.place() always returns distinct devices (random ids and pools)", () => {
  const prng = new Prng(11);
  for (let round = 0; round < 60; round++) {
    const deviceCount = 1 + prng.nextInt(40);
    const nodes = 1 + prng.nextInt(8);
    const p = new Placement(devices(deviceCount, nodes));
    const count = 1 + prng.nextInt(Math.min(deviceCount, 16));
    for (const key of ids(round, 200)) {
      const chosen = p.place(key, count);
      assert.equal(chosen.length, count);
      assert.equal(new Set(chosen).size, count, "two fragments on one device");
    }
  }
});

Deno.test("Placement.place() never puts two fragments on one node when nodes suffice", () => {
  const prng = new Prng(12);
  for (let round = 0; round < 40; round++) {
    const nodes = 2 + prng.nextInt(10);
    const perNode = 1 + prng.nextInt(4);
    const p = new Placement(devices(nodes * perNode, nodes));
    const count = 1 + prng.nextInt(Math.min(nodes * perNode, 12));
    for (const key of ids(100 + round, 150)) {
      const chosen = p.place(key, count);
      const byNode = new Map<string, number>();
      for (const i of chosen) {
        const node = p.devices[i]!.node!;
        byNode.set(node, (byNode.get(node) ?? 0) + 1);
      }
      const most = Math.max(...byNode.values());
      if (nodes >= count) assert.equal(most, 1, `count ${count} over ${nodes} nodes`);
      else assert.ok(most <= Math.ceil(count / nodes), `uneven: ${most} on one node`);
    }
  }
});

Deno.test("Placement.place() moves only what an added device takes", () => {
  const before = new Placement(devices(12));
  const after = new Placement([...devices(12), { id: "d-new", node: "n0" }]);
  let moved = 0;
  for (const key of ids(21)) {
    const a = new Set(chosenIds(before, key, 6));
    const b = new Set(chosenIds(after, key, 6));
    const gone = [...a].filter((d) => !b.has(d));
    const came = [...b].filter((d) => !a.has(d));
    assert.ok(gone.length <= 1);
    if (gone.length === 1) {
      assert.deepEqual(came, ["d-new"]);
      moved++;
    } else {
      assert.deepEqual(came, []);
    }
  }
  // The new device should take about 6/13 of the chunks (one fragment each).
  const expected = IDS * 6 / 13;
  assert.ok(Math.abs(moved - expected) < expected * 0.15, `moved ${moved}, expected ~${expected}`);
});

Deno.test("Placement.place() moves only the fragments of a removed device", () => {
  const all = devices(12);
  const before = new Placement(all);
  const after = new Placement(all.filter((d) => d.id !== "d5"));
  for (const key of ids(22)) {
    const a = chosenIds(before, key, 6);
    const b = new Set(chosenIds(after, key, 6));
    if (!a.includes("d5")) {
      assert.deepEqual([...b].sort(), [...a].sort(), "a chunk without d5 moved");
    } else {
      const kept = a.filter((d) => d !== "d5");
      for (const d of kept) assert.ok(b.has(d), "a surviving fragment moved");
      assert.equal(b.size, 6);
    }
  }
});

Deno.test("Placement.place() does not depend on the order devices are listed in", () => {
  const list = devices(9, 3);
  const shuffled = [...list].reverse();
  const a = new Placement(list);
  const b = new Placement(shuffled);
  for (const key of ids(23, 500)) {
    assert.deepEqual(chosenIds(a, key, 5), chosenIds(b, key, 5));
  }
});

Deno.test("Placement.place() spreads load evenly, and by weight", () => {
  const even = new Placement(devices(10));
  const counts = new Array(10).fill(0);
  for (const key of ids(24, 20000)) counts[even.place(key, 1)[0]!]++;
  for (const c of counts) assert.ok(Math.abs(c - 2000) < 250, `device got ${c} of 20000`);

  const weighted = new Placement([{ id: "small", weight: 1 }, { id: "big", weight: 3 }]);
  let big = 0;
  for (const key of ids(25, 20000)) if (weighted.place(key, 1)[0] === 1) big++;
  assert.ok(Math.abs(big - 15000) < 400, `weight 3 of 4 got ${big} of 20000`);
});

Deno.test("Placement.place() honours exclude and reports too few devices", () => {
  const p = new Placement(devices(6));
  const key = ids(26, 1)[0]!;
  const chosen = p.place(key, 5, { exclude: (i) => i === 2 });
  assert.ok(!chosen.includes(2));
  assert.throws(
    () => p.place(key, 6, { exclude: (i) => i === 2 }),
    (e: unknown) => e instanceof PlacementError && e.code === "too_few_devices",
  );
});

Deno.test("Placement rejects empty, repeated and badly weighted device lists", () => {
  const invalid = (e: unknown) => e instanceof PlacementError && e.code === "invalid_devices";
  assert.throws(() => new Placement([]), invalid);
  assert.throws(() => new Placement([{ id: "a" }, { id: "a" }]), invalid);
  assert.throws(() => new Placement([{ id: "a", weight: 0 }]), invalid);
  assert.throws(() => new Placement([{ id: "" }]), invalid);
});
