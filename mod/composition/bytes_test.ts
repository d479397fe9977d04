import assert from "node:assert/strict";
import { ByteReader, ByteWriter, fromHex, fromUtf8, toHex } from "./bytes.ts";

class Short extends Error {}
const fail = (m: string): never => {
  throw new Short(m);
};

Deno.test("ByteWriter grows across fields and ByteReader reads them back", () => {
  const w = new ByteWriter(1);
  w.u8(7).u16(0xbeef).u32(0xdeadbeef).u64(Number.MAX_SAFE_INTEGER).string16("héllo").bytes32(
    new Uint8Array(300).fill(9),
  );
  const r = new ByteReader(w.finish(), fail);
  assert.equal(r.u8("a"), 7);
  assert.equal(r.u16("b"), 0xbeef);
  assert.equal(r.u32("c"), 0xdeadbeef);
  assert.equal(r.u64("d"), Number.MAX_SAFE_INTEGER);
  assert.equal(r.string16(10, "e"), "héllo");
  assert.deepEqual(r.bytes32(300, "f"), new Uint8Array(300).fill(9));
  r.end("all");
});

Deno.test("ByteReader refuses short input, over-long fields, unsafe u64 and trailing bytes", () => {
  assert.throws(() => new ByteReader(Uint8Array.of(1), fail).u16("x"), Short);
  assert.throws(() => new ByteReader(Uint8Array.of(0, 5, 1), fail).bytes16(10, "x"), Short);
  assert.throws(
    () => new ByteReader(Uint8Array.of(0, 5, 1, 2, 3, 4, 5), fail).bytes16(4, "x"),
    /max 4/,
  );
  assert.throws(() => new ByteReader(new Uint8Array(8).fill(0xff), fail).u64("x"), /safe integer/);
  assert.throws(() => new ByteReader(Uint8Array.of(1, 2), fail).end("x"), /trailing/);
  assert.throws(() => new ByteReader(Uint8Array.of(0, 1, 0xff), fail).string16(5, "x"), /UTF-8/);
});

Deno.test("toHex() and fromHex() round-trip; fromHex() refuses the wrong length or digits", () => {
  const bytes = Uint8Array.of(0, 1, 0xab, 0xff);
  assert.equal(toHex(bytes), "0001abff");
  assert.deepEqual(fromHex("0001ABff", 4), bytes);
  assert.equal(fromHex("0001ab", 4), null);
  assert.equal(fromHex("0001abzz", 4), null);
  assert.equal(fromUtf8(Uint8Array.of(0xef, 0xbb, 0xbf, 0x61)), "\ufeffa");
});
