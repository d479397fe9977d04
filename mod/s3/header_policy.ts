// Request headers that ask for a feature Kiseki does not implement: customer-provided keys
// (SSE-C), ACLs, tags and Object Lock. Ignoring them would let a client believe it got what
// it asked for (worst for SSE-C: data stored under our keys while the client thinks it is
// under its own), so each is answered NotImplemented, except the one value that asks for
// what every object already gets.

import { S3Error } from "./errors.ts";
import type { S3OperationName } from "./request.ts";

/** Operations that write an object or a part, where AWS accepts these headers. */
const OBJECT_WRITES: ReadonlySet<S3OperationName> = new Set([
  "PutObject",
  "CopyObject",
  "CreateMultipartUpload",
  "UploadPart",
  "UploadPartCopy",
]);

/** Operations that read or write an object: SSE-C applies to all of them. */
const OBJECT_OPERATIONS: ReadonlySet<S3OperationName> = new Set([
  ...OBJECT_WRITES,
  "GetObject",
  "HeadObject",
  "CompleteMultipartUpload",
]);

/**
 * Canned ACLs that change nothing here: every object is private to its tenant, and the
 * tenant owns both the bucket and the object (aws-cli and s3cmd send no ACL by default;
 * some tools send `private` on every write).
 */
export const S3_NO_OP_CANNED_ACLS: ReadonlySet<string> = new Set([
  "private",
  "bucket-owner-full-control",
]);

function notImplemented(header: string, feature: string): S3Error {
  return new S3Error(
    "NotImplemented",
    `${feature} is not implemented: refusing the request rather than ignoring ${header}`,
    { details: { Header: header } },
  );
}

/**
 * Throws NotImplemented when `headers` ask `operation` for SSE-C, a non-private ACL or grant,
 * object tags or Object Lock. Runs after authentication (an unsigned request is refused as
 * such first) and before any body is read.
 */
export function refuseUnsupportedHeaders(operation: S3OperationName, headers: Headers): void {
  const objectOperation = OBJECT_OPERATIONS.has(operation);
  const write = OBJECT_WRITES.has(operation) || operation === "CreateBucket";
  // forEach, not for...of: a tenth of the cost over Headers on the pinned runtime.
  headers.forEach((value, name) => {
    if (!name.startsWith("x-amz-")) return;
    if (
      objectOperation &&
      (name.startsWith("x-amz-server-side-encryption-customer-") ||
        name.startsWith("x-amz-copy-source-server-side-encryption-customer-"))
    ) {
      throw notImplemented(name, "Server-side encryption with customer-provided keys (SSE-C)");
    }
    if (!write) return;
    if (name === "x-amz-acl") {
      if (!S3_NO_OP_CANNED_ACLS.has(value.trim().toLowerCase())) {
        throw notImplemented(name, `The canned ACL '${value.trim()}'`);
      }
    } else if (name.startsWith("x-amz-grant-")) {
      throw notImplemented(name, "Access control grants");
    } else if (name === "x-amz-tagging") {
      if (value.trim() !== "") throw notImplemented(name, "Object tagging");
    } else if (name.startsWith("x-amz-object-lock-")) {
      const noOp = name === "x-amz-object-lock-legal-hold" && value.trim().toUpperCase() === "OFF";
      if (!noOp) throw notImplemented(name, "Object Lock");
    }
  });
}
