import assert from "node:assert/strict";
import { XdrError, XdrReader, XdrWriter } from "./xdr.ts";

Deno.test("XdrWriter and XdrReader round-trip every type with four-byte padding", () => {
  const w = new XdrWriter(4).u32(0xffff_ffff).i32(-2).u64(2n ** 64n - 1n).bool(true)
    .opaque(new Uint8Array([1, 2, 3])).string("名前").fixed(new Uint8Array([9]));
  const bytes = w.finish();
  assert.equal(bytes.length, 4 + 4 + 8 + 4 + (4 + 4) + (4 + 8) + 4);
  // Opaque padding is zeros.
  assert.deepEqual([...bytes.subarray(24, 28)], [1, 2, 3, 0]);
  const r = new XdrReader(bytes);
  assert.equal(r.u32(), 0xffff_ffff);
  assert.equal(r.i32(), -2);
  assert.equal(r.u64(), 2n ** 64n - 1n);
  assert.equal(r.bool(), true);
  assert.deepEqual([...r.opaque(3)], [1, 2, 3]);
  assert.equal(r.string(6), "名前");
  assert.deepEqual([...r.fixed(1)], [9]);
  assert.equal(r.remaining, 0);
});

Deno.test("XdrReader refuses short input, oversized opaques, bad bools and non-UTF-8 strings", () => {
  assert.throws(() => new XdrReader(new Uint8Array(3)).u32(), XdrError);
  assert.throws(() => new XdrReader(new Uint8Array(7)).u64(), XdrError);
  const claims = new XdrWriter().u32(1 << 30).finish();
  assert.throws(() => new XdrReader(claims).opaque(1024), /exceeds its maximum/);
  const short = new XdrWriter().u32(8).u32(0).finish();
  assert.throws(() => new XdrReader(short).opaque(1024), /needs 8 bytes/);
  assert.throws(() => new XdrReader(new XdrWriter().u32(2).finish()).bool(), /bool is 2/);
  const bad = new XdrWriter().opaque(new Uint8Array([0xff, 0xfe])).finish();
  assert.throws(() => new XdrReader(bad).string(16), /not UTF-8/);
  const big = new XdrWriter().u64(2n ** 60n).finish();
  assert.throws(() => new XdrReader(big).u64Number("offset"), /offset .* too large/);
});

Deno.test("XdrReader.optional reads a value only when its flag is set", () => {
  const r = new XdrReader(new XdrWriter().bool(false).bool(true).u32(7).finish());
  assert.equal(r.optional(() => r.u32()), null);
  assert.equal(r.optional(() => r.u32()), 7);
});
