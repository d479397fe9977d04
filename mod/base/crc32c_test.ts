import assert from "node:assert/strict";
import { crc32c, crc32cImplementation, crc32cPure, installCrc32c } from "./crc32c.ts";
import { Prng } from "./prng.ts";

/** Bit-at-a-time reference, to check the sliced tables against. */
function crc32cBitwise(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

Deno.test("crc32c() matches the standard check value and the RFC 3720 vectors", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(0)), 0);
  // RFC 3720 appendix B.4.
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
});

Deno.test("crc32c() agrees with a bitwise reference at every length and offset", () => {
  const prng = new Prng(7);
  const data = prng.bytes(300);
  for (let start = 0; start < 9; start++) {
    for (let length = 0; start + length <= data.length; length += 1 + (length >> 3)) {
      const slice = data.subarray(start, start + length);
      assert.equal(crc32c(slice), crc32cBitwise(slice), `start ${start} length ${length}`);
    }
  }
});

Deno.test("crc32c() continues over concatenated input", () => {
  const prng = new Prng(11);
  const data = prng.bytes(1000);
  for (const cut of [0, 1, 7, 8, 9, 500, 999, 1000]) {
    assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data));
  }
});

Deno.test("crc32c() changes when any single bit flips", () => {
  const data = new Prng(3).bytes(64);
  const good = crc32c(data);
  for (let bit = 0; bit < data.length * 8; bit++) {
    data[bit >> 3]! ^= 1 << (bit & 7);
    assert.notEqual(crc32c(data), good);
    data[bit >> 3]! ^= 1 << (bit & 7);
  }
});

Deno.test("crc32c() runs the pure twin until an implementation is installed", () => {
  assert.deepEqual(crc32cImplementation(), {
    name: "typescript",
    reason: "default (no native implementation installed)",
  });
  const data = new Prng(5).bytes(100);
  assert.equal(crc32c(data), crc32cPure(data));
  assert.equal(crc32c(data, 0x1234), crc32cPure(data, 0x1234));
});

Deno.test("installCrc32c() routes crc32c() and names the implementation", () => {
  const calls: [Uint8Array, number][] = [];
  installCrc32c(
    (bytes, previous) => {
      calls.push([bytes, previous]);
      return 42;
    },
    "fake",
    "test double",
  );
  try {
    const data = new Uint8Array(3);
    assert.equal(crc32c(data), 42);
    assert.equal(crc32c(data, 7), 42);
    assert.deepEqual(calls, [[data, 0], [data, 7]]);
    assert.deepEqual(crc32cImplementation(), { name: "fake", reason: "test double" });
  } finally {
    installCrc32c(crc32cPure, "typescript", "restored by test");
  }
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assert.equal(crc32cImplementation().name, "typescript");
});
