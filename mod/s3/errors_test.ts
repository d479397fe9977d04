import assert from "node:assert/strict";
import {
  escapeXml,
  isS3ErrorCode,
  renderS3Error,
  S3_ERRORS,
  S3Error,
  type S3ErrorCode,
  toS3Error,
} from "./errors.ts";

Deno.test("S3_ERRORS carries AWS's status for every code the gateway sends", () => {
  const expected: Record<string, number> = {
    NoSuchBucket: 404,
    NoSuchKey: 404,
    BucketAlreadyExists: 409,
    BucketAlreadyOwnedByYou: 409,
    BucketNotEmpty: 409,
    InvalidBucketName: 400,
    InvalidArgument: 400,
    InvalidRange: 416,
    PreconditionFailed: 412,
    NotModified: 304,
    EntityTooSmall: 400,
    EntityTooLarge: 400,
    InvalidPart: 400,
    InvalidPartOrder: 400,
    InvalidPartNumber: 416,
    NoSuchUpload: 404,
    MalformedXML: 400,
    BadDigest: 400,
    AccessDenied: 403,
    SignatureDoesNotMatch: 403,
    InvalidAccessKeyId: 403,
    RequestTimeTooSkewed: 403,
    NotImplemented: 501,
    KeyTooLongError: 400,
    MetadataTooLarge: 400,
    InvalidDigest: 400,
    MissingContentLength: 411,
    XAmzContentSHA256Mismatch: 400,
    InternalError: 500,
    MethodNotAllowed: 405,
    InvalidRequest: 400,
    SlowDown: 503,
    ServiceUnavailable: 503,
  };
  for (const [code, status] of Object.entries(expected)) {
    assert.ok(isS3ErrorCode(code), code);
    assert.equal(S3_ERRORS[code as S3ErrorCode].status, status, code);
    assert.equal(new S3Error(code as S3ErrorCode).status, status, code);
  }
  assert.equal(isS3ErrorCode("NoSuchThing"), false);
  assert.equal(isS3ErrorCode("toString"), false);
});

Deno.test("renderS3Error() lays the document out as AWS does", () => {
  const error = new S3Error("NoSuchKey", undefined, { key: "a/b.txt", resource: "/bkt/a/b.txt" });
  assert.equal(
    renderS3Error(error, { requestId: "4442587FB7D0A2F9" }),
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>` +
      `<Message>The specified key does not exist.</Message><Key>a/b.txt</Key>` +
      `<Resource>/bkt/a/b.txt</Resource><RequestId>4442587FB7D0A2F9</RequestId></Error>`,
  );
  const bucket = new S3Error("NoSuchBucket", undefined, { bucketName: "bkt" });
  assert.equal(
    renderS3Error(bucket, { requestId: "r", hostId: "h" }),
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchBucket</Code>` +
      `<Message>The specified bucket does not exist</Message><BucketName>bkt</BucketName>` +
      `<RequestId>r</RequestId><HostId>h</HostId></Error>`,
  );
});

Deno.test("renderS3Error() escapes keys, messages and details", () => {
  const error = new S3Error("InvalidArgument", `bad <value> & "quotes"`, {
    key: "a&b<c>'d\u0001",
    details: { ArgumentName: "x-amz-meta-<x>", ArgumentValue: "1 & 2" },
  });
  const xml = renderS3Error(error, { requestId: "r&1" });
  assert.ok(xml.includes(`<Message>bad &lt;value&gt; &amp; &quot;quotes&quot;</Message>`));
  assert.ok(xml.includes(`<Key>a&amp;b&lt;c&gt;&apos;d&#x1;</Key>`));
  assert.ok(xml.includes(`<ArgumentName>x-amz-meta-&lt;x&gt;</ArgumentName>`));
  assert.ok(xml.includes(`<ArgumentValue>1 &amp; 2</ArgumentValue>`));
  assert.ok(xml.includes(`<RequestId>r&amp;1</RequestId>`));
});

Deno.test("escapeXml() keeps tab, newline and non-ASCII text", () => {
  assert.equal(escapeXml("a\tb\nc\rd日本\u{1f600}"), "a\tb\nc\rd日本\u{1f600}");
  assert.equal(escapeXml("\u0000\u001f\uffff"), "&#x0;&#x1F;&#xFFFF;");
});

Deno.test("S3Error rejects detail names that would break the document", () => {
  assert.throws(() => new S3Error("InvalidArgument", "x", { details: { "a b": "1" } }), RangeError);
  assert.throws(() => new S3Error("InvalidArgument", "x", { details: { "<x>": "1" } }), RangeError);
});

Deno.test("S3Error.hasBody is false only for NotModified", () => {
  assert.equal(new S3Error("NotModified").hasBody, false);
  assert.equal(new S3Error("PreconditionFailed").hasBody, true);
});

Deno.test("toS3Error() keeps S3Errors and hides anything else as InternalError", () => {
  const e = new S3Error("NoSuchKey");
  assert.equal(toS3Error(e), e);
  const internal = toS3Error(new TypeError("secret detail"));
  assert.equal(internal.code, "InternalError");
  assert.equal(internal.status, 500);
  assert.ok(!internal.message.includes("secret"));
  assert.ok(internal.cause instanceof TypeError);
});
