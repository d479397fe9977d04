import assert from "node:assert/strict";
import { crc32c, Prng } from "../base/mod.ts";
import {
  decodeDelta,
  type Delta,
  DELTA_CHUNK_REFS_MAX,
  DELTA_ENCODED_BYTES_MAX,
  DELTA_HEADER_BYTES,
  DELTA_PAYLOAD_BYTES_MAX,
  DeltaFormatError,
  encodeDelta,
} from "./delta.ts";

function sampleDelta(prng = new Prng(1), refs = 3, payloadBytes = 100): Delta {
  return {
    sequence: 123_456_789_012,
    shardId: 0xdead_beef,
    tenantId: prng.bytes(16),
    op: "update",
    hashedKey: prng.bytes(32),
    timestamp: { physicalMs: 1_700_000_000_123, logical: 42 },
    chunkRefs: Array.from({ length: refs }, () => prng.bytes(32)),
    payload: prng.bytes(payloadBytes),
  };
}

/** Recomputes the trailing CRC so a test can reach the checks behind it. */
function reseal(bytes: Uint8Array): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(
    bytes.length - 4,
    crc32c(bytes.subarray(0, bytes.length - 4)),
  );
  return bytes;
}

const rejects = (bytes: Uint8Array, pattern: RegExp): void => {
  assert.throws(
    () => decodeDelta(bytes),
    (e: unknown) => e instanceof DeltaFormatError && pattern.test(e.message),
  );
};

Deno.test("decodeDelta() inverts encodeDelta() for every operation and size", () => {
  const prng = new Prng(2);
  for (const op of ["create", "update", "delete", "rename", "set_attributes"] as const) {
    for (const [refs, payload] of [[0, 0], [1, 1], [5, 4096], [DELTA_CHUNK_REFS_MAX, 0]]) {
      const delta = { ...sampleDelta(prng, refs, payload), op };
      const bytes = encodeDelta(delta);
      assert.equal(bytes.length, DELTA_HEADER_BYTES + 32 * refs! + payload! + 4);
      assert.deepEqual(decodeDelta(bytes), delta);
    }
  }
  const edge = { ...sampleDelta(prng, 0, DELTA_PAYLOAD_BYTES_MAX), sequence: 2 ** 53 - 1 };
  assert.deepEqual(decodeDelta(encodeDelta(edge)), edge);
});

Deno.test("encodeDelta() writes the documented v1 layout", () => {
  const delta: Delta = {
    sequence: 0x0102030405,
    shardId: 7,
    tenantId: new Uint8Array(16).fill(0x11),
    op: "rename",
    hashedKey: new Uint8Array(32).fill(0x22),
    timestamp: { physicalMs: 0x0a0b0c0d0e0f, logical: 0x1234 },
    chunkRefs: [new Uint8Array(32).fill(0x33)],
    payload: Uint8Array.of(0xaa, 0xbb),
  };
  const bytes = encodeDelta(delta);
  const hex = (from: number, to: number): string =>
    [...bytes.subarray(from, to)].map((b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(hex(0, 24), "01040000" + "00000007" + "0000000102030405" + "0a0b0c0d0e0f1234");
  assert.equal(hex(24, 40), "11".repeat(16));
  assert.equal(hex(40, 72), "22".repeat(32));
  assert.equal(hex(72, 80), "00000001" + "00000002");
  assert.equal(hex(80, 112), "33".repeat(32));
  assert.equal(hex(112, 114), "aabb");
  assert.equal(bytes.length, 118);
  const crc = new DataView(bytes.buffer).getUint32(114);
  assert.equal(crc, crc32c(bytes.subarray(0, 114)));
});

Deno.test("encodeDelta() rejects malformed fields and over-limit sizes with DeltaFormatError", () => {
  const base = sampleDelta();
  const bad: Partial<Delta>[] = [
    { sequence: -1 },
    { sequence: 1.5 },
    { sequence: 2 ** 53 },
    { shardId: 2 ** 32 },
    { tenantId: new Uint8Array(15) },
    { op: "explode" as never },
    { hashedKey: new Uint8Array(31) },
    { timestamp: { physicalMs: -1, logical: 0 } },
    { chunkRefs: [new Uint8Array(31)] },
    { chunkRefs: Array.from({ length: DELTA_CHUNK_REFS_MAX + 1 }, () => new Uint8Array(32)) },
    { payload: new Uint8Array(DELTA_PAYLOAD_BYTES_MAX + 1) },
  ];
  for (const change of bad) {
    assert.throws(
      () => encodeDelta({ ...base, ...change }),
      DeltaFormatError,
      JSON.stringify(change),
    );
  }
});

Deno.test("decodeDelta() rejects truncation, a wrong version and a bad checksum", () => {
  const bytes = encodeDelta(sampleDelta());
  rejects(new Uint8Array(0), /shorter than a header/);
  rejects(bytes.subarray(0, DELTA_HEADER_BYTES + 3), /shorter than a header/);
  rejects(bytes.subarray(0, bytes.length - 1), /checksum/);
  const wrongVersion = bytes.slice();
  wrongVersion[0] = 2;
  rejects(reseal(wrongVersion), /version 2/);
  const flipped = bytes.slice();
  flipped[100]! ^= 0x04;
  rejects(flipped, /checksum/);
  const trailing = new Uint8Array(bytes.length + 1);
  trailing.set(bytes);
  rejects(trailing, /checksum/);
  rejects(reseal(trailing), /header describes/);
  rejects(new Uint8Array(DELTA_ENCODED_BYTES_MAX + 1), /max/);
});

Deno.test("decodeDelta() checks every header field even when the checksum matches", () => {
  const bytes = encodeDelta(sampleDelta(new Prng(3), 2, 10));
  const edit = (fn: (b: Uint8Array, v: DataView) => void): Uint8Array => {
    const copy = bytes.slice();
    fn(copy, new DataView(copy.buffer));
    return reseal(copy);
  };
  rejects(edit((b) => (b[1] = 0)), /operation code 0/);
  rejects(edit((b) => (b[1] = 99)), /operation code 99/);
  rejects(edit((b) => (b[2] = 1)), /reserved/);
  rejects(edit((b) => (b[3] = 1)), /reserved/);
  rejects(edit((_, v) => v.setBigUint64(8, 2n ** 53n)), /sequence/);
  rejects(edit((_, v) => v.setUint32(72, DELTA_CHUNK_REFS_MAX + 1)), /chunk refs/);
  rejects(edit((_, v) => v.setUint32(72, 3)), /header describes/);
  rejects(edit((_, v) => v.setUint32(76, DELTA_PAYLOAD_BYTES_MAX + 1)), /payload/);
  rejects(edit((_, v) => v.setUint32(76, 9)), /header describes/);
  rejects(edit((_, v) => v.setUint32(76, 0xffff_ffff)), /payload/);
});

Deno.test("decodeDelta() returns copies that do not alias its input", () => {
  const bytes = encodeDelta(sampleDelta());
  const delta = decodeDelta(bytes);
  bytes.fill(0);
  assert.deepEqual(delta, sampleDelta());
});

Deno.test("decodeDelta() fuzz: random and mutated input only ever throws DeltaFormatError", () => {
  const prng = new Prng(20240601);
  const valid = [
    encodeDelta(sampleDelta(prng, 0, 0)),
    encodeDelta(sampleDelta(prng, 4, 300)),
  ];
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    let input: Uint8Array;
    const mode = prng.nextInt(4);
    if (mode === 0) {
      input = prng.bytes(prng.nextInt(600));
    } else {
      const source = valid[prng.nextInt(valid.length)]!;
      input = source.slice(0, prng.nextInt(source.length + 8) + 1);
      if (input.length < source.length + 8 && prng.nextInt(2) === 0) {
        const longer = new Uint8Array(source.length + prng.nextInt(40));
        longer.set(source.subarray(0, Math.min(source.length, longer.length)));
        input = longer;
      }
      for (let flips = prng.nextInt(4); flips > 0; flips--) {
        if (input.length > 0) input[prng.nextInt(input.length)]! ^= 1 << prng.nextInt(8);
      }
      // Half the time fix the checksum so the field checks behind it are exercised.
      if (mode >= 2 && input.length >= 4) reseal(input);
    }
    try {
      const delta = decodeDelta(input);
      // Whatever decodes must re-encode to exactly the same bytes.
      assert.deepEqual(encodeDelta(delta), input);
      accepted++;
    } catch (e) {
      if (!(e instanceof DeltaFormatError)) throw e;
    }
  }
  assert.ok(accepted > 0, "the fuzzer should also produce some valid deltas");
});
