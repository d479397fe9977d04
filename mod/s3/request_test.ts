import assert from "node:assert/strict";
import { S3Error } from "./errors.ts";
import {
  bucketNameProblem,
  evaluateCopySourceConditions,
  evaluateReadConditions,
  evaluateWriteConditions,
  KEY_BYTES_MAX,
  parseConditions,
  parseContentLength,
  parseCopySource,
  parseCopySourceRange,
  parseETagList,
  parseIntegerParam,
  parseQuery,
  parseRange,
  parseS3Request,
  parseUserMetadata,
  REQUEST_HEADERS_BYTES_MAX,
  resolveRange,
  type S3OperationName,
  splitRequestUrl,
  USER_METADATA_BYTES_MAX,
} from "./request.ts";

const options = { baseDomains: ["s3.example.com", "localhost.localdomain"] };

function req(method: string, target: string, headers: Record<string, string> = {}) {
  return {
    method,
    url: `http://${headers.host ?? "127.0.0.1:9000"}${target}`,
    headers: new Headers({ host: "127.0.0.1:9000", ...headers }),
  };
}

function throwsCode(fn: () => unknown, code: string, part?: string): S3Error {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof S3Error, `expected ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (part !== undefined) assert.ok(caught.message.includes(part), caught.message);
  return caught;
}

Deno.test("parseS3Request() maps method and subresources to operations", () => {
  const cases: Array<[string, string, S3OperationName, Record<string, string>?]> = [
    ["GET", "/", "ListBuckets"],
    ["PUT", "/bkt", "CreateBucket"],
    ["PUT", "/bkt/", "CreateBucket"],
    ["HEAD", "/bkt", "HeadBucket"],
    ["DELETE", "/bkt", "DeleteBucket"],
    ["GET", "/bkt?location", "GetBucketLocation"],
    ["GET", "/bkt?versioning", "GetBucketVersioning"],
    ["GET", "/bkt?versions&prefix=a", "ListObjectVersions"],
    ["GET", "/bkt", "ListObjects"],
    ["GET", "/bkt?prefix=a&delimiter=%2F&marker=m&max-keys=5", "ListObjects"],
    ["GET", "/bkt?list-type=2&prefix=a&continuation-token=x", "ListObjectsV2"],
    ["GET", "/bkt?uploads", "ListMultipartUploads"],
    ["POST", "/bkt?delete", "DeleteObjects"],
    ["PUT", "/bkt/k", "PutObject"],
    ["PUT", "/bkt/k", "CopyObject", { "x-amz-copy-source": "/src/k" }],
    ["GET", "/bkt/k", "GetObject"],
    ["GET", "/bkt/k?response-content-type=text%2Fplain&x-id=GetObject", "GetObject"],
    ["GET", "/bkt/k?partNumber=2", "GetObject"],
    ["HEAD", "/bkt/k", "HeadObject"],
    ["HEAD", "/bkt/k?partNumber=1", "HeadObject"],
    ["DELETE", "/bkt/k", "DeleteObject"],
    ["POST", "/bkt/k?uploads", "CreateMultipartUpload"],
    ["PUT", "/bkt/k?partNumber=1&uploadId=u", "UploadPart"],
    ["PUT", "/bkt/k?uploadId=u&partNumber=2", "UploadPartCopy", { "x-amz-copy-source": "src/k" }],
    ["GET", "/bkt/k?uploadId=u", "ListParts"],
    ["POST", "/bkt/k?uploadId=u", "CompleteMultipartUpload"],
    ["DELETE", "/bkt/k?uploadId=u", "AbortMultipartUpload"],
  ];
  for (const [method, target, operation, headers] of cases) {
    assert.equal(
      parseS3Request(req(method, target, headers), options).operation,
      operation,
      `${method} ${target}`,
    );
  }
});

Deno.test("parseS3Request() answers unsupported subresources NotImplemented, naming them", () => {
  const cases: Array<[string, string, string]> = [
    ["GET", "/bkt?acl", "acl"],
    ["PUT", "/bkt?versioning", "versioning"],
    ["GET", "/bkt?lifecycle", "lifecycle"],
    ["PUT", "/bkt?policy", "policy"],
    ["DELETE", "/bkt?cors", "cors"],
    ["GET", "/bkt/k?tagging", "tagging"],
    ["PUT", "/bkt/k?acl", "acl"],
    ["POST", "/bkt/k?restore", "restore"],
    ["POST", "/bkt/k?select&select-type=2", "select"],
    ["GET", "/bkt/k?partNumber=1&tagging", "tagging"],
    ["POST", "/bkt", "POST Object"],
    ["OPTIONS", "/bkt/k", "CORS"],
    ["GET", "/?acl", "acl"],
  ];
  for (const [method, target, name] of cases) {
    const e = throwsCode(
      () => parseS3Request(req(method, target), options),
      "NotImplemented",
      name,
    );
    assert.equal(e.status, 501);
  }
});

Deno.test("parseS3Request() refuses methods a resource does not have", () => {
  const e = throwsCode(() => parseS3Request(req("PUT", "/"), options), "MethodNotAllowed");
  assert.equal(e.status, 405);
  assert.equal(e.headers.Allow, "GET");
  throwsCode(() => parseS3Request(req("PATCH", "/bkt/k"), options), "MethodNotAllowed");
  throwsCode(() => parseS3Request(req("POST", "/bkt/k"), options), "MethodNotAllowed");
  throwsCode(() => parseS3Request(req("GET", "/bkt?list-type=1"), options), "InvalidArgument");
  throwsCode(() => parseS3Request(req("PUT", "/bkt/k?partNumber=1"), options), "InvalidRequest");
});

Deno.test("parseS3Request() decodes keys once, keeping slashes, dots and pluses", () => {
  const cases: Array<[string, string]> = [
    ["/bkt/a/b/c.txt", "a/b/c.txt"],
    ["/bkt/a%20b+c", "a b+c"],
    ["/bkt/a%2Fb", "a/b"],
    ["/bkt/a%252F", "a%2F"],
    ["/bkt/%E6%97%A5%E6%9C%AC", "日本"],
    ["/bkt/a/../b/./c", "a/../b/./c"],
    ["/bkt//lead", "/lead"],
    ["/bkt/trail/", "trail/"],
    ["/bkt/100%", "100%"],
  ];
  for (const [path, key] of cases) {
    const parsed = parseS3Request(req("GET", path), options);
    assert.equal(parsed.bucket, "bkt");
    assert.equal(parsed.key, key, path);
    assert.equal(parsed.wirePath, path);
    assert.equal(parsed.resource, `/bkt/${key}`);
    assert.equal(parsed.addressing, "path");
  }
  throwsCode(() => parseS3Request(req("GET", "/bkt/%FF%FE"), options), "InvalidURI");
});

Deno.test("parseS3Request() addresses buckets by host under a base domain", () => {
  const v = parseS3Request(
    req("GET", "/a/b?list-type=2", { host: "photos.s3.example.com:9000" }),
    options,
  );
  assert.deepEqual([v.addressing, v.bucket, v.key, v.operation], [
    "virtual-host",
    "photos",
    "a/b",
    "GetObject",
  ]);
  const dotted = parseS3Request(
    req("GET", "/?list-type=2", { host: "my.logs.S3.Example.com" }),
    options,
  );
  assert.deepEqual([dotted.bucket, dotted.key, dotted.operation], [
    "my.logs",
    null,
    "ListObjectsV2",
  ]);
  // The base domain itself, an IP address and unknown names are path style.
  for (const host of ["s3.example.com", "127.0.0.1:9000", "[::1]:9000", "other.example.org"]) {
    const p = parseS3Request(req("GET", "/bkt/k", { host }), options);
    assert.deepEqual([p.addressing, p.bucket, p.key], ["path", "bkt", "k"], host);
  }
  throwsCode(
    () => parseS3Request(req("GET", "/", { host: "Bad_Name.s3.example.com" }), options),
    "InvalidBucketName",
  );
});

Deno.test("parseS3Request() enforces the key and header limits", () => {
  const longest = "k".repeat(KEY_BYTES_MAX);
  assert.equal(parseS3Request(req("GET", `/bkt/${longest}`), options).key, longest);
  throwsCode(() => parseS3Request(req("GET", `/bkt/${longest}k`), options), "KeyTooLongError");
  // Counted in UTF-8 bytes: 342 three-byte characters are 1026 bytes.
  throwsCode(
    () => parseS3Request(req("GET", `/bkt/${"%E6%97%A5".repeat(342)}`), options),
    "KeyTooLongError",
  );
  throwsCode(
    () =>
      parseS3Request(
        req("GET", "/bkt/k", { "x-big": "v".repeat(REQUEST_HEADERS_BYTES_MAX) }),
        options,
      ),
    "RequestHeaderSectionTooLarge",
  );
});

Deno.test("bucketNameProblem() applies AWS's naming rules", () => {
  for (const good of ["abc", "a.b.c", "my-bucket-1", "0ab", "a".repeat(63), "1.2.3"]) {
    assert.equal(bucketNameProblem(good), null, good);
  }
  const bad = [
    "ab",
    "a".repeat(64),
    "ABC",
    "a_b",
    "-ab",
    "ab-",
    ".ab",
    "a..b",
    "a.-b",
    "a-.b",
    "192.168.1.1",
    "xn--abc",
    "sthree-x",
    "amzn-s3-demo-x",
    "abc-s3alias",
    "abc--ol-s3",
    "abc.mrap",
    "abc--x-s3",
    "ab c",
  ];
  for (const name of bad) assert.notEqual(bucketNameProblem(name), null, name);
  throwsCode(() => parseS3Request(req("PUT", "/Bad"), options), "InvalidBucketName");
});

Deno.test("splitRequestUrl() keeps the path exactly as sent", () => {
  assert.deepEqual(splitRequestUrl("http://h:1/b/a/../c?x=1#f"), {
    wirePath: "/b/a/../c",
    wireQuery: "x=1",
  });
  assert.deepEqual(splitRequestUrl("http://h"), { wirePath: "/", wireQuery: "" });
  assert.deepEqual(splitRequestUrl("http://h/?"), { wirePath: "/", wireQuery: "" });
  assert.deepEqual(parseQuery("a=1&a=2&b&c=%2B+"), new Map([["a", "1"], ["b", ""], ["c", "++"]]));
});

Deno.test("parseUserMetadata() collects x-amz-meta-* up to 2 KiB", () => {
  const headers = new Headers({
    "X-Amz-Meta-Color": "blue",
    "x-amz-meta-a-b": " x ",
    "content-type": "t",
  });
  assert.deepEqual(parseUserMetadata(headers), { "a-b": "x", color: "blue" });
  const exact = new Headers({ "x-amz-meta-k": "v".repeat(USER_METADATA_BYTES_MAX - 1) });
  assert.equal(parseUserMetadata(exact).k!.length, USER_METADATA_BYTES_MAX - 1);
  const over = new Headers({ "x-amz-meta-k": "v".repeat(USER_METADATA_BYTES_MAX) });
  throwsCode(() => parseUserMetadata(over), "MetadataTooLarge");
});

Deno.test("parseRange() reads one byte range and ignores what S3 ignores", () => {
  assert.deepEqual(parseRange("bytes=0-9"), { kind: "bounded", first: 0, last: 9 });
  assert.deepEqual(parseRange("bytes=100-"), { kind: "from", first: 100 });
  assert.deepEqual(parseRange("bytes=-20"), { kind: "suffix", length: 20 });
  assert.deepEqual(parseRange("Bytes = 5 - 5"), { kind: "bounded", first: 5, last: 5 });
  assert.deepEqual(parseRange("bytes=0-99999999999999999999"), {
    kind: "bounded",
    first: 0,
    last: Number.MAX_SAFE_INTEGER,
  });
  for (
    const ignored of [
      null,
      "bytes=0-1,3-4",
      "bytes=5-2",
      "items=0-1",
      "bytes=-",
      "bytes=a-b",
      "0-9",
    ]
  ) {
    assert.equal(parseRange(ignored), null, String(ignored));
  }
});

Deno.test("resolveRange() clamps to the object and refuses ranges past its end", () => {
  assert.deepEqual(resolveRange({ kind: "bounded", first: 0, last: 9 }, 100), {
    start: 0,
    end: 9,
    contentRange: "bytes 0-9/100",
  });
  assert.equal(
    resolveRange({ kind: "bounded", first: 90, last: 500 }, 100)!.contentRange,
    "bytes 90-99/100",
  );
  assert.equal(resolveRange({ kind: "from", first: 99 }, 100)!.contentRange, "bytes 99-99/100");
  assert.equal(resolveRange({ kind: "suffix", length: 20 }, 100)!.contentRange, "bytes 80-99/100");
  assert.equal(resolveRange({ kind: "suffix", length: 150 }, 100)!.contentRange, "bytes 0-99/100");
  assert.equal(resolveRange({ kind: "suffix", length: 5 }, 0), null);
  for (
    const spec of [
      { kind: "from", first: 100 },
      { kind: "bounded", first: 100, last: 200 },
      { kind: "suffix", length: 0 },
    ] as const
  ) {
    const e = throwsCode(() => resolveRange(spec, 100), "InvalidRange");
    assert.equal(e.status, 416);
    assert.equal(e.headers["Content-Range"], "bytes */100");
    assert.equal(e.details.ActualObjectSize, "100");
  }
  throwsCode(() => resolveRange({ kind: "from", first: 0 }, 0), "InvalidRange");
});

const object = { etag: '"abc"', lastModifiedMs: Date.UTC(2026, 10, 24, 10, 0, 0, 500) };
const HTTP_DATE = "Tue, 24 Nov 2026 10:00:00 GMT";
const BEFORE = "Tue, 24 Nov 2026 09:59:59 GMT";

function conditions(headers: Record<string, string>) {
  return parseConditions(new Headers(headers));
}

Deno.test("evaluateReadConditions() follows S3's precedence", () => {
  const ok = (h: Record<string, string>) =>
    assert.equal(evaluateReadConditions(conditions(h), object), "ok", JSON.stringify(h));
  const notModified = (h: Record<string, string>) =>
    assert.equal(evaluateReadConditions(conditions(h), object), "not-modified", JSON.stringify(h));
  const failed = (h: Record<string, string>) =>
    throwsCode(() => evaluateReadConditions(conditions(h), object), "PreconditionFailed");

  ok({});
  ok({ "if-match": '"abc"' });
  ok({ "if-match": "abc" });
  ok({ "if-match": '"x", "abc"' });
  ok({ "if-match": "*" });
  failed({ "if-match": '"x"' });
  ok({ "if-unmodified-since": HTTP_DATE });
  failed({ "if-unmodified-since": BEFORE });
  // If-Match true and If-Unmodified-Since false: served.
  ok({ "if-match": '"abc"', "if-unmodified-since": BEFORE });
  notModified({ "if-none-match": '"abc"' });
  notModified({ "if-none-match": "*" });
  ok({ "if-none-match": '"x"' });
  notModified({ "if-modified-since": HTTP_DATE });
  ok({ "if-modified-since": BEFORE });
  // If-None-Match false and If-Modified-Since true: 304.
  notModified({ "if-none-match": '"abc"', "if-modified-since": BEFORE });
  ok({ "if-none-match": '"x"', "if-modified-since": HTTP_DATE });
  // 412 wins over 304.
  failed({ "if-match": '"x"', "if-none-match": '"abc"' });
  // An unparseable date is ignored.
  ok({ "if-unmodified-since": "not a date" });
  ok({ "if-modified-since": "2026-11-24T09:00:00Z" });
  const e = throwsCode(
    () => evaluateReadConditions(conditions({ "if-match": "x" }), object),
    "PreconditionFailed",
  );
  assert.equal(e.details.Condition, "if-match");
});

Deno.test("evaluateCopySourceConditions() answers every failure 412", () => {
  const h = (v: Record<string, string>) => parseConditions(new Headers(v), "x-amz-copy-source-");
  evaluateCopySourceConditions(h({ "x-amz-copy-source-if-match": "abc" }), object);
  evaluateCopySourceConditions(h({ "if-match": "nope" }), object);
  const e = throwsCode(
    () => evaluateCopySourceConditions(h({ "x-amz-copy-source-if-none-match": "abc" }), object),
    "PreconditionFailed",
  );
  assert.equal(e.details.Condition, "x-amz-copy-source-if-none-match");
  throwsCode(
    () =>
      evaluateCopySourceConditions(h({ "x-amz-copy-source-if-modified-since": HTTP_DATE }), object),
    "PreconditionFailed",
  );
});

Deno.test("evaluateWriteConditions() implements If-None-Match and If-Match on writes", () => {
  const a = { etag: "a", version: 7 };
  assert.deepEqual(evaluateWriteConditions(conditions({}), a), {});
  assert.deepEqual(evaluateWriteConditions(conditions({ "if-none-match": "*" }), null), {
    ifAbsent: true,
  });
  throwsCode(
    () => evaluateWriteConditions(conditions({ "if-none-match": "*" }), a),
    "PreconditionFailed",
  );
  assert.deepEqual(evaluateWriteConditions(conditions({ "if-match": '"a"' }), a), {
    ifVersion: 7,
  });
  throwsCode(
    () => evaluateWriteConditions(conditions({ "if-match": "b" }), a),
    "PreconditionFailed",
  );
  throwsCode(() => evaluateWriteConditions(conditions({ "if-match": "a" }), null), "NoSuchKey");
  // If-None-Match with ETags: refused only when the current object has one of them.
  throwsCode(
    () => evaluateWriteConditions(conditions({ "if-none-match": '"x", "a"' }), a),
    "PreconditionFailed",
  );
  assert.deepEqual(evaluateWriteConditions(conditions({ "if-none-match": '"b"' }), a), {
    ifVersion: 7,
  });
  assert.deepEqual(evaluateWriteConditions(conditions({ "if-none-match": '"a"' }), null), {
    ifAbsent: true,
  });
  assert.deepEqual(parseETagList('W/"a", "b",c'), ["a", "b", "c"]);
});

Deno.test("parseCopySource() reads bucket and key, encoded, with or without a slash", () => {
  assert.deepEqual(parseCopySource("/src/a%20b/c"), { bucket: "src", key: "a b/c" });
  assert.deepEqual(parseCopySource("src/%E6%97%A5"), { bucket: "src", key: "日" });
  assert.deepEqual(parseCopySource("src/k?versionId=null"), {
    bucket: "src",
    key: "k",
    versionId: "null",
  });
  throwsCode(() => parseCopySource("src"), "InvalidArgument");
  throwsCode(() => parseCopySource("/src/"), "InvalidArgument");
  throwsCode(() => parseCopySource("src/k?acl"), "InvalidArgument");
  throwsCode(() => parseCopySource("Bad_Bucket/k"), "InvalidBucketName");
  throwsCode(() => parseCopySource("src/k?versionId=3"), "NoSuchKey");
  assert.deepEqual(parseCopySourceRange("bytes=0-99"), { first: 0, last: 99 });
  for (const bad of ["bytes=5-1", "bytes=0-", "bytes=-5", "0-9"]) {
    throwsCode(() => parseCopySourceRange(bad), "InvalidArgument");
  }
});

Deno.test("parseIntegerParam() and parseContentLength() check integers", () => {
  const q = new Map([["max-keys", "5000"], ["bad", "1.5"], ["neg", "-1"]]);
  assert.equal(parseIntegerParam(q, "max-keys", { fallback: 1000, min: 0, clampMax: 1000 }), 1000);
  assert.equal(parseIntegerParam(q, "absent", { fallback: 1000, min: 0 }), 1000);
  const e = throwsCode(
    () => parseIntegerParam(q, "bad", { fallback: 0, min: 0 }),
    "InvalidArgument",
  );
  assert.equal(e.details.ArgumentName, "bad");
  throwsCode(() => parseIntegerParam(q, "neg", { fallback: 0, min: 0 }), "InvalidArgument");
  throwsCode(
    () => parseIntegerParam(q, "max-keys", { fallback: 0, min: 0, max: 100 }),
    "InvalidArgument",
  );
  assert.equal(parseContentLength(new Headers({ "content-length": "42" })), 42);
  assert.equal(parseContentLength(new Headers()), null);
  throwsCode(() => parseContentLength(new Headers({ "content-length": "-1" })), "InvalidArgument");
});
