import assert from "node:assert/strict";
import {
  AEAD_BATCH_ITEMS_MAX,
  AEAD_PLAINTEXT_MAX_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  batchError,
  checkBatchSize,
  checkKeyBytes,
  checkOpenArgs,
  checkSealArgs,
  truncatedError,
} from "./aead.ts";

const NONCE = new Uint8Array(12);
const NONE = new Uint8Array(0);

Deno.test("AEAD_PLAINTEXT_MAX_BYTES is GCM's 2^39 - 256 bits", () => {
  assert.equal(AEAD_PLAINTEXT_MAX_BYTES * 8, 2 ** 39 - 256);
});

Deno.test("checkKeyBytes() accepts exactly 32 bytes", () => {
  checkKeyBytes(new Uint8Array(32));
  assert.throws(() => checkKeyBytes(new Uint8Array(31)), RangeError);
  assert.throws(() => checkKeyBytes(new Uint8Array(64)), RangeError);
  assert.throws(() => checkKeyBytes([1, 2] as unknown as Uint8Array), TypeError);
});

Deno.test("checkSealArgs() needs room for the tag and a 12-byte nonce", () => {
  checkSealArgs(NONCE, new Uint8Array(10), NONE, new Uint8Array(10 + AEAD_TAG_BYTES));
  assert.throws(
    () => checkSealArgs(NONCE, new Uint8Array(10), NONE, new Uint8Array(10 + AEAD_TAG_BYTES - 1)),
    /out holds 25 bytes, seal needs 26/,
  );
  assert.throws(
    () => checkSealArgs(new Uint8Array(16), NONE, NONE, new Uint8Array(16)),
    RangeError,
  );
  checkSealArgs(NONCE, NONE, NONE, new Uint8Array(AEAD_TAG_BYTES), 7);
});

Deno.test("checkSealArgs() names the batch item at fault", () => {
  assert.throws(
    () => checkSealArgs(new Uint8Array(3), NONE, NONE, new Uint8Array(16), 41),
    /^RangeError: item 41: nonce must be 12 bytes, got 3$/,
  );
});

Deno.test("checkSealArgs() allows exact in-place but not partial overlap", () => {
  const buffer = new Uint8Array(100);
  checkSealArgs(NONCE, buffer.subarray(0, 50), NONE, buffer);
  checkSealArgs(NONCE, buffer.subarray(0, 40), NONE, buffer.subarray(40, 100));
  assert.throws(
    () => checkSealArgs(NONCE, buffer.subarray(0, 50), NONE, buffer.subarray(1)),
    /partially overlaps/,
  );
  assert.throws(
    () => checkSealArgs(NONCE, buffer.subarray(10, 40), NONE, buffer.subarray(0, 60)),
    /partially overlaps/,
  );
  // Only the bytes seal writes count: a long out that overlaps beyond them is fine.
  const other = new Uint8Array(new ArrayBuffer(100));
  checkSealArgs(NONCE, other.subarray(40, 50), NONE, other.subarray(0, 80));
});

Deno.test("checkOpenArgs() returns the plaintext length, or -1 below a tag", () => {
  assert.equal(checkOpenArgs(NONCE, new Uint8Array(20), NONE, new Uint8Array(4)), 4);
  assert.equal(checkOpenArgs(NONCE, new Uint8Array(16), NONE, NONE), 0);
  assert.equal(checkOpenArgs(NONCE, new Uint8Array(15), NONE, NONE), -1);
  assert.throws(
    () => checkOpenArgs(NONCE, new Uint8Array(20), NONE, new Uint8Array(3)),
    /out holds 3 bytes, open needs 4/,
  );
  const buffer = new Uint8Array(64);
  assert.equal(checkOpenArgs(NONCE, buffer, NONE, buffer), 48);
  assert.throws(
    () => checkOpenArgs(NONCE, buffer.subarray(8), NONE, buffer),
    /partially overlaps/,
  );
});

Deno.test("checkBatchSize() caps batches at AEAD_BATCH_ITEMS_MAX", () => {
  checkBatchSize(AEAD_BATCH_ITEMS_MAX);
  assert.throws(() => checkBatchSize(AEAD_BATCH_ITEMS_MAX + 1), RangeError);
});

Deno.test("batchError() lists failed items and shortens long lists", () => {
  const few = batchError([2, 5], 10);
  assert.ok(few instanceof AeadError);
  assert.deepEqual(few.failed, [2, 5]);
  assert.equal(few.message, "authentication failed for 2 of 10 items (2, 5)");
  const many = batchError(Array.from({ length: 20 }, (_, i) => i), 30);
  assert.match(many.message, /\(0, 1, 2, 3, 4, 5, 6, 7, \.\.\.\)$/);
  assert.equal(many.failed.length, 20);
});

Deno.test("truncatedError() is an AeadError with no failed items", () => {
  const e = truncatedError(3);
  assert.equal(e.name, "AeadError");
  assert.deepEqual(e.failed, []);
  assert.match(e.message, /3 bytes is shorter than the 16-byte tag/);
});
