import assert from "node:assert/strict";
import { S3Error } from "./errors.ts";
import { metadataHeaders, objectMetadata, storedChecksums } from "./object_metadata.ts";

Deno.test("objectMetadata() keeps user metadata, stored headers and declared checksums", () => {
  const headers = new Headers({
    "x-amz-meta-color": "blue",
    "cache-control": "max-age=60",
    "content-disposition": 'attachment; filename="a b.txt"',
    "content-encoding": "gzip",
    "content-language": "en",
    expires: "Wed, 21 Oct 2037 07:28:00 GMT",
    "content-type": "text/plain",
    "x-amz-request-payer": "requester",
  });
  assert.deepEqual(objectMetadata(headers, { CRC32: "NhCmhg==" }), {
    color: "blue",
    ":cache-control": "max-age=60",
    ":content-disposition": 'attachment; filename="a b.txt"',
    ":content-encoding": "gzip",
    ":content-language": "en",
    ":expires": "Wed, 21 Oct 2037 07:28:00 GMT",
    ":checksum-crc32": "NhCmhg==",
  });
});

Deno.test("objectMetadata() drops aws-chunked from Content-Encoding", () => {
  assert.deepEqual(objectMetadata(new Headers({ "content-encoding": "aws-chunked" })), {});
  assert.deepEqual(
    objectMetadata(new Headers({ "content-encoding": "aws-chunked, gzip" })),
    { ":content-encoding": "gzip" },
  );
});

Deno.test("objectMetadata() refuses more than the backend keeps as MetadataTooLarge", () => {
  const headers = new Headers({
    "x-amz-meta-big": "x".repeat(1500),
    "content-disposition": "y".repeat(1000),
  });
  assert.throws(
    () => objectMetadata(headers),
    (e: unknown) => e instanceof S3Error && e.code === "MetadataTooLarge",
  );
  assert.throws(
    () => objectMetadata(new Headers({ "x-amz-meta-big": "x".repeat(3000) })),
    (e: unknown) => e instanceof S3Error && e.code === "MetadataTooLarge",
  );
});

Deno.test("metadataHeaders() answers user metadata and stored headers; checksums only when asked", () => {
  const metadata = objectMetadata(
    new Headers({ "x-amz-meta-a": "1", "cache-control": "no-cache" }),
    { SHA256: "gg62K3Zgohb3Eb0N83rIoXa2YqFZlZhw7cIAuFcmLa8=", CRC32C: "CmqD1A==" },
  );
  assert.deepEqual(metadataHeaders(metadata, { checksums: false }), [
    ["x-amz-meta-a", "1"],
    ["cache-control", "no-cache"],
  ]);
  assert.deepEqual(metadataHeaders(metadata, { checksums: true }), [
    ["x-amz-meta-a", "1"],
    ["cache-control", "no-cache"],
    ["x-amz-checksum-sha256", "gg62K3Zgohb3Eb0N83rIoXa2YqFZlZhw7cIAuFcmLa8="],
    ["x-amz-checksum-crc32c", "CmqD1A=="],
    ["x-amz-checksum-type", "FULL_OBJECT"],
  ]);
  // No checksum stored: no checksum type either.
  assert.deepEqual(metadataHeaders({ a: "1" }, { checksums: true }), [["x-amz-meta-a", "1"]]);
  // Entries of the gateway it does not know are not sent.
  assert.deepEqual(
    metadataHeaders({ ":future": "x", ":checksum-md99": "y" }, { checksums: true }),
    [],
  );
});

Deno.test("storedChecksums() reads the checksums back by algorithm", () => {
  const metadata = { a: "1", ":expires": "e", ":checksum-sha1": "s", ":checksum-crc32": "c" };
  assert.deepEqual(storedChecksums(metadata), { SHA1: "s", CRC32: "c" });
});
