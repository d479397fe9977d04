import assert from "node:assert/strict";
import { ByteWriter, type Composition } from "../composition/mod.ts";
import {
  decodeObject,
  decodeObjectSummary,
  decodePart,
  encodeObject,
  encodePart,
  objectKeyBytes,
  utf8,
  ViewCorruptError,
} from "./_records.ts";

const NS = new Uint8Array(16).fill(4);
const CHUNK = new Uint8Array(32).fill(8);

function multipart(partSizes?: number[]): Composition {
  const object: Composition = {
    namespaceId: NS,
    key: "dir/big.bin",
    version: 77,
    size: 12,
    contentType: "video/x",
    metadata: { a: "1" },
    etag: "0123456789abcdef0123456789abcdef-3",
    createdMs: 1_700_000_000_000,
    modifiedMs: 1_700_000_000_500,
    content: {
      kind: "chunks",
      chunkRefs: [{ chunkId: CHUNK, offsetBytes: 0, lengthBytes: 12 }],
    },
  };
  if (partSizes !== undefined) object.partSizes = partSizes;
  return object;
}

/** An object record as the view wrote it before part sizes were kept, laid out by hand. */
function objectRecordV1(): Uint8Array {
  const w = new ByteWriter()
    .u8(1)
    .string16("dir/big.bin")
    .u64(77)
    .u64(12)
    .u64(1_700_000_000_500)
    .string16("0123456789abcdef0123456789abcdef-3")
    .u64(1_700_000_000_000)
    .string16("video/x")
    .u16(1)
    .string16("a")
    .string16("1");
  w.u8(1).u32(1).raw(CHUNK).u64(0).u32(12);
  return w.finish();
}

Deno.test("decodeObject() reads a record stored before part sizes were kept, without them", () => {
  const old = objectRecordV1();
  const decoded = decodeObject(NS, old);
  assert.deepEqual(decoded, multipart());
  assert.ok(!("partSizes" in decoded), "a multipart object of old reads as one part");
  assert.deepEqual(decodeObjectSummary(old), {
    key: "dir/big.bin",
    version: 77,
    size: 12,
    modifiedMs: 1_700_000_000_500,
    etag: "0123456789abcdef0123456789abcdef-3",
  });
  // An object without part sizes is still written exactly so.
  assert.deepEqual(encodeObject(multipart()), old);
});

Deno.test("encodeObject() names a completed upload in a version 3 record: version 2, then the id", () => {
  const uploadId = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
  const object = { ...multipart([5, 5, 2]), completedUploadId: uploadId };
  const bytes = encodeObject(object);
  const v2 = encodeObject(multipart([5, 5, 2]));
  assert.deepEqual(bytes, Uint8Array.of(3, ...v2.subarray(1), ...uploadId));
  assert.deepEqual(decodeObject(NS, bytes), object);
  assert.equal(decodeObjectSummary(bytes).etag, "0123456789abcdef0123456789abcdef-3");
  assert.throws(() => decodeObject(NS, bytes.subarray(0, bytes.length - 1)), ViewCorruptError);
  assert.throws(
    () => encodeObject({ ...multipart(), completedUploadId: uploadId }),
    /only a multipart object/,
  );
});

Deno.test("encodeObject() keeps part sizes as a version 2 record: the version 1 bytes, then the sizes", () => {
  const bytes = encodeObject(multipart([5, 5, 2]));
  const old = objectRecordV1();
  const tail = new ByteWriter().u16(3).u64(5).u64(5).u64(2).finish();
  assert.deepEqual(bytes, Uint8Array.of(2, ...old.subarray(1), ...tail));
  assert.deepEqual(decodeObject(NS, bytes), multipart([5, 5, 2]));
  assert.equal(decodeObjectSummary(bytes).etag, "0123456789abcdef0123456789abcdef-3");
  assert.deepEqual(objectKeyBytes(bytes), utf8("dir/big.bin"));
  assert.throws(() => encodeObject(multipart([5, 5])), /part sizes are valid/);
});

Deno.test("decodeObject() refuses part sizes that do not describe the object, and unknown versions", () => {
  const old = objectRecordV1();
  const withTail = (tail: Uint8Array) => Uint8Array.of(2, ...old.subarray(1), ...tail);
  const cases: Array<[Uint8Array, RegExp]> = [
    [withTail(new ByteWriter().u16(2).u64(5).u64(5).finish()), /add up to 10 bytes/],
    [withTail(new ByteWriter().u16(0).finish()), /part sizes are empty/],
    [withTail(new ByteWriter().u16(2).u64(12).finish()), /part size: needs 8 bytes, 0 left/],
    [withTail(new Uint8Array(0)), /part size count: needs 2 bytes/],
    [Uint8Array.of(1, ...old.subarray(1), 0, 1), /object: 2 trailing bytes/],
    [Uint8Array.of(4, ...old.subarray(1)), /object record version 4/],
    [Uint8Array.of(0, ...old.subarray(1)), /object record version 0/],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(() => decodeObject(NS, bytes), (e: unknown) => {
      assert.ok(e instanceof ViewCorruptError, String(e));
      assert.match(e.message, message);
      return true;
    });
  }
});

Deno.test("encodePart() keeps a part's metadata as a version 2 record; version 1 parts read unchanged", () => {
  const part = {
    partNumber: 3,
    size: 12,
    etag: "0123456789abcdef0123456789abcdef",
    modifiedMs: 1_700_000_000_500,
    chunkRefs: [{ chunkId: CHUNK, offsetBytes: 0, lengthBytes: 12 }],
  };
  const v1 = encodePart(part);
  assert.equal(v1[0], 1);
  assert.deepEqual(decodePart(v1), part);
  // Empty metadata is no metadata: the version 1 bytes.
  assert.deepEqual(encodePart({ ...part, metadata: {} }), v1);
  const withSums = { ...part, metadata: { ":checksum-crc32": "NhCmhg==" } };
  const v2 = encodePart(withSums);
  const tail = new ByteWriter().u16(1).string16(":checksum-crc32").string16("NhCmhg==").finish();
  assert.deepEqual(v2, Uint8Array.of(2, ...v1.subarray(1), ...tail));
  assert.deepEqual(decodePart(v2), withSums);
  const empty = Uint8Array.of(2, ...v1.subarray(1), 0, 0);
  assert.throws(() => decodePart(empty), /without metadata/);
  assert.throws(() => decodePart(Uint8Array.of(3, ...v1.subarray(1))), /part record version 3/);
});
