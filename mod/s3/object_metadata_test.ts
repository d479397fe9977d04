import assert from "node:assert/strict";
import { S3Error } from "./errors.ts";
import {
  metadataHeaders,
  objectMetadata,
  storedChecksums,
  withChecksums,
} from "./object_metadata.ts";

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

Deno.test("objectMetadata() keeps Content-Encoding and the other stored headers as sent", () => {
  const sent = {
    "content-encoding": "gzip,  br",
    "cache-control": "no-cache,no-store ,  max-age=0",
    "content-disposition": 'inline;filename="\u00e9t\u00e9.txt"',
  };
  const metadata = objectMetadata(new Headers(sent));
  assert.equal(metadata[":content-encoding"], sent["content-encoding"]);
  assert.equal(metadata[":cache-control"], sent["cache-control"]);
  assert.equal(metadata[":content-disposition"], sent["content-disposition"]);
});

Deno.test("objectMetadata() limits user metadata to 2 KiB and the stored headers apart", () => {
  // 2 KiB of user metadata (name without its prefix, plus value) and 4 KiB of stored headers
  // together: each within its own limit, so accepted.
  const headers = new Headers({
    "x-amz-meta-big": "x".repeat(2048 - 3),
    "content-disposition": "y".repeat(4096),
  });
  const metadata = objectMetadata(headers, {
    SHA256: "gg62K3Zgohb3Eb0N83rIoXa2YqFZlZhw7cIAuFcmLa8=",
  });
  assert.equal(metadata.big!.length, 2045);
  assert.equal(metadata[":content-disposition"]!.length, 4096);
  assert.throws(
    () => objectMetadata(new Headers({ "x-amz-meta-big": "x".repeat(2048 - 2) })),
    (e: unknown) => e instanceof S3Error && e.code === "MetadataTooLarge",
  );
});

Deno.test("withChecksums() replaces the checksum entries and keeps the rest", () => {
  const source = objectMetadata(new Headers({ "x-amz-meta-a": "1" }), { CRC32: "old=" });
  assert.deepEqual(withChecksums(source, { SHA1: "new=" }), { a: "1", ":checksum-sha1": "new=" });
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
  // A multipart object's checksum of part checksums ("-<parts>") is COMPOSITE.
  assert.deepEqual(metadataHeaders({ ":checksum-crc32": "AAAAAA==-2" }, { checksums: true }), [
    ["x-amz-checksum-crc32", "AAAAAA==-2"],
    ["x-amz-checksum-type", "COMPOSITE"],
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
