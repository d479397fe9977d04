import assert from "node:assert/strict";
import { S3Error } from "./errors.ts";
import { refuseUnsupportedHeaders } from "./header_policy.ts";

function refused(
  operation: Parameters<typeof refuseUnsupportedHeaders>[0],
  headers: Record<string, string>,
): string | null {
  try {
    refuseUnsupportedHeaders(operation, new Headers(headers));
    return null;
  } catch (e) {
    assert.ok(e instanceof S3Error);
    assert.equal(e.status, 501);
    return `${e.code} ${e.details.Header}`;
  }
}

Deno.test("refuseUnsupportedHeaders() refuses SSE-C on every object operation", () => {
  for (
    const op of [
      "PutObject",
      "GetObject",
      "HeadObject",
      "UploadPart",
      "CreateMultipartUpload",
      "CopyObject",
      "UploadPartCopy",
    ] as const
  ) {
    assert.equal(
      refused(op, { "x-amz-server-side-encryption-customer-algorithm": "AES256" }),
      "NotImplemented x-amz-server-side-encryption-customer-algorithm",
      op,
    );
  }
  assert.equal(
    refused("CopyObject", { "x-amz-copy-source-server-side-encryption-customer-key": "a" }),
    "NotImplemented x-amz-copy-source-server-side-encryption-customer-key",
  );
});

Deno.test("refuseUnsupportedHeaders() accepts the no-op ACLs and refuses the others", () => {
  assert.equal(refused("PutObject", { "x-amz-acl": "private" }), null);
  assert.equal(refused("PutObject", { "x-amz-acl": " Private " }), null);
  assert.equal(
    refused("CreateMultipartUpload", { "x-amz-acl": "bucket-owner-full-control" }),
    null,
  );
  assert.equal(refused("CreateBucket", { "x-amz-acl": "private" }), null);
  assert.equal(refused("PutObject", { "x-amz-acl": "public-read" }), "NotImplemented x-amz-acl");
  assert.equal(
    refused("CreateBucket", { "x-amz-acl": "public-read-write" }),
    "NotImplemented x-amz-acl",
  );
  assert.equal(
    refused("CopyObject", { "x-amz-grant-read": "id=x" }),
    "NotImplemented x-amz-grant-read",
  );
});

Deno.test("refuseUnsupportedHeaders() refuses tags and Object Lock but not their empty or OFF values", () => {
  assert.equal(refused("PutObject", { "x-amz-tagging": "" }), null);
  assert.equal(refused("PutObject", { "x-amz-tagging": "a=b" }), "NotImplemented x-amz-tagging");
  assert.equal(
    refused("CreateMultipartUpload", { "x-amz-tagging": "a=b" }),
    "NotImplemented x-amz-tagging",
  );
  assert.equal(refused("PutObject", { "x-amz-object-lock-legal-hold": "OFF" }), null);
  assert.equal(
    refused("PutObject", { "x-amz-object-lock-legal-hold": "ON" }),
    "NotImplemented x-amz-object-lock-legal-hold",
  );
  assert.equal(
    refused("CopyObject", { "x-amz-object-lock-mode": "GOVERNANCE" }),
    "NotImplemented x-amz-object-lock-mode",
  );
});

Deno.test("refuseUnsupportedHeaders() leaves reads, listings and plain writes alone", () => {
  assert.equal(refused("GetObject", { "x-amz-acl": "public-read", "x-amz-tagging": "a=b" }), null);
  assert.equal(
    refused("ListObjectsV2", { "x-amz-server-side-encryption-customer-key": "k" }),
    null,
  );
  assert.equal(
    refused("PutObject", { "x-amz-server-side-encryption": "AES256", "x-amz-meta-a": "b" }),
    null,
  );
});
