import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import {
  CHUNK_ID_BYTES,
  chunkIdEquals,
  ChunkIdError,
  chunkIdFromBytes,
  chunkIdFromHex,
  chunkIdToHex,
  computeChunkId,
  hmacChunkId,
  hmacSha256,
  sha256ChunkId,
} from "./chunk_id.ts";

const text = (s: string) => new TextEncoder().encode(s);
const hex = (h: string) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));

Deno.test("sha256ChunkId() matches FIPS 180-2 known answers", () => {
  const vectors: [Uint8Array, string][] = [
    [text(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    [text("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    [
      text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ],
    [
      new Uint8Array(1_000_000).fill(0x61),
      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    ],
  ];
  for (const [input, expected] of vectors) {
    const id = sha256ChunkId(input);
    assert.equal(id.length, CHUNK_ID_BYTES);
    assert.equal(Object.getPrototypeOf(id), Uint8Array.prototype, "plain Uint8Array, not Buffer");
    assert.equal(id.byteOffset, 0);
    assert.equal(id.buffer.byteLength, CHUNK_ID_BYTES, "owns its memory");
    assert.equal(chunkIdToHex(id), expected);
  }
});

Deno.test("hmacSha256() matches RFC 4231 test cases 1, 2 and 4", () => {
  assert.equal(
    chunkIdToHex(hmacSha256(new Uint8Array(20).fill(0x0b), text("Hi There"))),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  );
  assert.equal(
    chunkIdToHex(hmacSha256(text("Jefe"), text("what do ya want for nothing?"))),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
  assert.equal(
    chunkIdToHex(
      hmacSha256(Uint8Array.from({ length: 25 }, (_, i) => i + 1), new Uint8Array(50).fill(0xcd)),
    ),
    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
  );
});

Deno.test("hmacChunkId() matches RFC 4231 test cases 6 and 7 (131-byte keys)", () => {
  const key = new Uint8Array(131).fill(0xaa);
  assert.equal(
    chunkIdToHex(hmacChunkId(key, text("Test Using Larger Than Block-Size Key - Hash Key First"))),
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  );
  assert.equal(
    chunkIdToHex(
      hmacChunkId(
        key,
        text(
          "This is a test using a larger than block-size key and a larger than block-size " +
            "data. The key needs to be hashed before being used by the HMAC algorithm.",
        ),
      ),
    ),
    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
  );
});

Deno.test("hmacChunkId() isolates tenants and rejects short keys", () => {
  const prng = new Prng(1);
  const data = prng.bytes(4096);
  const a = prng.bytes(32);
  const b = prng.bytes(32);
  assert.ok(chunkIdEquals(hmacChunkId(a, data), hmacChunkId(a, data)), "stable per tenant");
  assert.ok(!chunkIdEquals(hmacChunkId(a, data), hmacChunkId(b, data)), "differs across tenants");
  assert.ok(!chunkIdEquals(hmacChunkId(a, data), sha256ChunkId(data)), "differs from global");
  assert.throws(() => hmacChunkId(new Uint8Array(31), data), RangeError);
  assert.throws(() => hmacChunkId(new Uint8Array(0), data), RangeError);
});

Deno.test("computeChunkId() picks SHA-256 for global and HMAC for tenant dedup", () => {
  const data = text("chunk");
  const key = new Uint8Array(32).fill(9);
  assert.deepEqual(computeChunkId("global", data), sha256ChunkId(data));
  assert.deepEqual(computeChunkId("tenant", data, key), hmacChunkId(key, data));
  assert.throws(() => computeChunkId("tenant", data), RangeError);
  assert.throws(() => computeChunkId("other" as "global", data), RangeError);
});

Deno.test("chunkIdFromHex() round-trips chunkIdToHex() and rejects non-ids", () => {
  const id = sha256ChunkId(text("abc"));
  const h = chunkIdToHex(id);
  assert.deepEqual(chunkIdFromHex(h), id);
  assert.deepEqual(chunkIdFromHex(h.toUpperCase()), id);
  assert.deepEqual(chunkIdFromHex(h), hex(h));
  for (
    const bad of [
      "",
      h.slice(2),
      h + "00",
      h.slice(0, 63) + "g",
      " " + h.slice(1),
      h.slice(0, 62) + "0x",
    ]
  ) {
    assert.throws(() => chunkIdFromHex(bad), ChunkIdError, JSON.stringify(bad));
  }
  assert.throws(() => chunkIdFromHex(42 as unknown as string), ChunkIdError);
});

Deno.test("chunkIdFromBytes() copies 32 bytes and rejects other lengths", () => {
  const raw = new Uint8Array(40).fill(3);
  const id = chunkIdFromBytes(raw.subarray(4, 36));
  raw.fill(0);
  assert.deepEqual(id, new Uint8Array(32).fill(3));
  assert.throws(() => chunkIdFromBytes(new Uint8Array(31)), ChunkIdError);
  assert.throws(() => chunkIdFromBytes(new Uint8Array(33)), ChunkIdError);
  assert.ok(!chunkIdEquals(id, sha256ChunkId(raw)));
});
