import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";
// Test only: the AWS SDK's signer, to send hand-made requests as an SDK would sign them.
// deno-lint-ignore no-import-prefix
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";
// Test only: the AWS SDK for JavaScript, as applications use it.
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import {
  type EngineStack,
  type EngineStackOptions,
  startEngineStack,
} from "../role/engine_stack.ts";
import { missingPart } from "../base/mod.ts";
import { type Hashing, OpensslHashing } from "../crypto/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { createLogger } from "../obs/mod.ts";
import type { S3Backend } from "./backend.ts";
import { LocalCredentialStore, type NewAccessKey } from "./credentials.ts";
import { listenS3 } from "./listener.ts";
import {
  answeredWithoutContinue,
  completionParts,
  s3ErrorOf,
  S3Gateway,
  WHOLE_BODY_BYTES_MAX,
} from "./gateway.ts";
import { CompositionError } from "../composition/mod.ts";
import { ObjectPartError, ObjectRangeError } from "../composition/object_engine.ts";
import { S3Error } from "./errors.ts";
import { chunkSignature, uriEncode } from "./sigv4.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const TENANT_A = "7e000000000000000000000000000001";
const TENANT_B = "7e000000000000000000000000000002";

interface Harness {
  endpoint: string;
  port: number;
  dataDir: string;
  stack: EngineStack;
  gateway: S3Gateway;
  keyA: NewAccessKey;
  keyB: NewAccessKey;
}

/** A single-node engine, an access-key store with keys of two tenants, the gateway on a port. */
async function withGateway(
  fn: (h: Harness) => Promise<void>,
  engine: EngineStackOptions["engine"] = {},
  hashing?: Hashing,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-s3-gateway-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 256 << 20, segmentSizeBytes: 4 << 20 },
    engine,
  });
  const credentials = await LocalCredentialStore.open({
    dir: `${dataDir}/s3`,
    aead: stack.aead,
    logger: quiet,
  });
  const backend: S3Backend = stack.engine;
  const gateway = new S3Gateway({
    backend,
    credentials,
    baseDomains: ["s3.localhost"],
    logger: quiet,
    hashing,
  });
  // The listener the server runs, so real clients meet its HTTP as well.
  const server = listenS3({
    hostname: "127.0.0.1",
    port: 0,
    handler: (request) => gateway.handle(request),
    logger: quiet,
  });
  try {
    await fn({
      endpoint: `http://127.0.0.1:${server.addr.port}`,
      port: server.addr.port,
      dataDir,
      stack,
      gateway,
      keyA: await credentials.create(TENANT_A),
      keyB: await credentials.create(TENANT_B),
    });
  } finally {
    await server.shutdown();
    await credentials.close();
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

// ---- hand-made requests, signed as the AWS SDK signs them ---------------------------------

class NodeSha256 {
  readonly #hash: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#hash = secret === undefined
      ? createHash("sha256")
      : createHmac("sha256", typeof secret === "string" ? secret : toBuffer(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#hash.update(typeof data === "string" ? data : toBuffer(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#hash.digest()));
  }
}

function toBuffer(data: ArrayBuffer | ArrayBufferView): Buffer {
  return ArrayBuffer.isView(data)
    ? Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    : Buffer.from(data);
}

function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

interface SendOptions {
  key?: NewAccessKey;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** x-amz-content-sha256 to sign instead of the body's hash. */
  payloadHash?: string;
  signingDate?: Date;
  /** Changes the request after signing. */
  tamper?: (r: { headers: Record<string, string>; body: Uint8Array }) => void;
}

/** Sends a request signed by @smithy/signature-v4 (path-style, key path encoded). */
async function send(h: Harness, method: string, path: string, options: SendOptions = {}) {
  const key = options.key ?? h.keyA;
  const body = typeof options.body === "string"
    ? new TextEncoder().encode(options.body)
    : options.body ?? new Uint8Array(0);
  const signer = new SignatureV4({
    service: "s3",
    region: "us-east-1",
    credentials: { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey },
    sha256: NodeSha256,
    uriEscapePath: false,
  });
  const headers: Record<string, string> = {
    host: `127.0.0.1:${h.port}`,
    "x-amz-content-sha256": options.payloadHash ?? sha256Hex(body),
    ...options.headers,
  };
  if (body.length > 0 || method === "PUT" || method === "POST") {
    headers["content-length"] ??= String(body.length);
  }
  const signed = await signer.sign({
    method,
    protocol: "http:",
    hostname: "127.0.0.1",
    port: h.port,
    path,
    query: options.query ?? {},
    headers,
  }, { signingDate: options.signingDate ?? new Date() });
  const sent: { headers: Record<string, string>; body: Uint8Array } = {
    headers: { ...signed.headers } as Record<string, string>,
    body,
  };
  options.tamper?.(sent);
  const query = Object.entries(options.query ?? {})
    .map(([k, v]) => v === "" ? uriEncode(k) : `${uriEncode(k)}=${uriEncode(v)}`)
    .join("&");
  delete sent.headers.host;
  const response = await fetch(`${h.endpoint}${path}${query ? "?" + query : ""}`, {
    method,
    headers: sent.headers,
    body: method === "GET" || method === "HEAD" ? undefined : new Uint8Array(sent.body),
  });
  const bytes = new Uint8Array(await response.arrayBuffer());
  return {
    status: response.status,
    headers: response.headers,
    bytes,
    text: new TextDecoder().decode(bytes),
  };
}

function errorCode(text: string): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
}

Deno.test("s3ErrorOf() maps composition failures to the codes AWS sends", () => {
  const target = { bucket: "bkt", key: "k" };
  const cases: Array<[ConstructorParameters<typeof CompositionError>[0], string]> = [
    ["namespace_not_found", "NoSuchBucket"],
    ["namespace_exists", "BucketAlreadyOwnedByYou"],
    ["namespace_not_empty", "BucketNotEmpty"],
    ["not_found", "NoSuchKey"],
    ["precondition_failed", "PreconditionFailed"],
    ["no_such_upload", "NoSuchUpload"],
    ["invalid_part", "InvalidPart"],
    ["invalid_part_order", "InvalidPartOrder"],
    ["entity_too_small", "EntityTooSmall"],
    ["too_large", "EntityTooLarge"],
    ["invalid_argument", "InvalidArgument"],
    ["unavailable", "SlowDown"],
    ["read_only", "ServiceUnavailable"],
  ];
  for (const [code, s3Code] of cases) {
    assert.equal(s3ErrorOf(new CompositionError(code, "detail"), target).code, s3Code, code);
  }
  assert.equal(s3ErrorOf(new CompositionError("not_found", "x"), target).key, "k");
  assert.equal(
    s3ErrorOf(new CompositionError("namespace_not_found", "x"), target).bucketName,
    "bkt",
  );
  const range = s3ErrorOf(new ObjectRangeError("past the end", 10));
  assert.equal(range.code, "InvalidRange");
  assert.equal(range.headers["Content-Range"], "bytes */10");
  const part = s3ErrorOf(new ObjectPartError(4, 3));
  assert.deepEqual([part.code, part.status, part.message], [
    "InvalidPartNumber",
    416,
    "The requested partnumber is not satisfiable",
  ]);
  assert.deepEqual(part.details, { PartNumberRequested: "4", ActualPartCount: "3" });
  const internal = s3ErrorOf(new Error("disk on fire"));
  assert.equal(internal.code, "InternalError");
  assert.ok(!internal.message.includes("fire"));
  const s3 = new S3Error("AccessDenied");
  assert.equal(s3ErrorOf(s3), s3);
});

Deno.test("completionParts() takes a part number listed twice once, its last entry; a descent is InvalidPartOrder", () => {
  const p = (partNumber: number, etag: string) => ({ partNumber, etag, checksums: {} });
  assert.deepEqual(
    completionParts([p(1, "a"), p(1, "b"), p(2, "c"), p(5, "d"), p(5, "e"), p(5, "f")]),
    [p(1, "b"), p(2, "c"), p(5, "f")],
  );
  assert.deepEqual(completionParts([p(3, "a")]), [p(3, "a")]);
  assert.throws(
    () => completionParts([p(1, "a"), p(2, "b"), p(1, "c")]),
    (e: unknown) => e instanceof S3Error && e.code === "InvalidPartOrder",
  );
});

Deno.test("answeredWithoutContinue() is true for Expect: 100-continue with an empty or unread body", async () => {
  const put = (headers: Record<string, string>, body: string) =>
    new Request("http://127.0.0.1/bkt/k", { method: "PUT", headers, body });
  const expect = { expect: "100-continue" };
  assert.equal(answeredWithoutContinue(put({ ...expect, "content-length": "0" }, "")), true);
  assert.equal(answeredWithoutContinue(put(expect, "body")), true, "body never read");
  const read = put(expect, "body");
  await read.arrayBuffer();
  assert.equal(answeredWithoutContinue(read), false, "reading the body sent 100 Continue");
  assert.equal(answeredWithoutContinue(put({}, "body")), false, "no Expect");
  assert.equal(answeredWithoutContinue(put({ "content-length": "0" }, "")), false);
});

Deno.test("S3Gateway closes the connection after an Expect: 100-continue request it answered without 100", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    // An empty body: the HTTP server never sends 100 Continue for it.
    const empty = await send(h, "PUT", "/bkt/empty", { headers: { expect: "100-continue" } });
    assert.equal(empty.status, 200, empty.text);
    assert.equal(empty.headers.get("connection"), "close");
    const plain = await send(h, "PUT", "/bkt/plain", { body: "x" });
    assert.equal(plain.headers.get("connection"), null);
  });
});

Deno.test("S3Gateway refuses response-* parameters no header can carry, before reading the object", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    await send(h, "PUT", "/bkt/k", { body: "body" });
    // Percent-decoded, these reach a response header: a control character there makes the
    // HTTP writer panic and the process exit.
    const cases: Record<string, string> = {
      "response-content-type": "text/\u0001plain",
      "response-content-disposition": "attachment\u007f",
      "response-content-encoding": "gzip\u001b",
      "response-content-language": "en\u0000",
      "response-cache-control": "no-store\u4e2d",
      "response-expires": "\u0008",
    };
    for (const [param, value] of Object.entries(cases)) {
      const got = await send(h, "GET", "/bkt/k", { query: { [param]: value } });
      assert.equal(got.status, 400, `${param}: ${got.text}`);
      assert.equal(errorCode(got.text), "InvalidArgument");
      assert.ok(got.text.includes(`<ArgumentName>${param}</ArgumentName>`), got.text);
      const head = await send(h, "HEAD", "/bkt/k", { query: { [param]: value } });
      assert.equal(head.status, 400, param);
    }
    // Tabs, visible ASCII and Latin-1 letters pass as before.
    const ok = await send(h, "GET", "/bkt/k", {
      query: { "response-content-disposition": 'attachment;\tfilename="r\u00e9sum\u00e9.pdf"' },
    });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(
      ok.headers.get("content-disposition"),
      'attachment;\tfilename="r\u00e9sum\u00e9.pdf"',
    );
  });
});

Deno.test("S3Gateway answers errors with AWS's XML document and request id", async () => {
  await withGateway(async (h) => {
    const missing = await send(h, "GET", "/nobucket/k");
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get("content-type"), "application/xml");
    assert.match(
      missing.text,
      /^<\?xml version="1.0" encoding="UTF-8"\?>\n<Error><Code>NoSuch(Bucket|Key)<\/Code><Message>/,
    );
    const requestId = missing.headers.get("x-amz-request-id")!;
    assert.match(requestId, /^[0-9A-F]{16}$/);
    assert.ok(missing.text.includes(`<RequestId>${requestId}</RequestId>`));

    assert.equal((await send(h, "PUT", "/bkt")).status, 200);
    const noKey = await send(h, "GET", "/bkt/no/such%20key");
    assert.equal(noKey.status, 404);
    assert.equal(errorCode(noKey.text), "NoSuchKey");
    assert.ok(noKey.text.includes("<Key>no/such key</Key>"), noKey.text);
    assert.ok(noKey.text.includes("<Resource>/bkt/no/such key</Resource>"), noKey.text);
    // HEAD errors carry the status only.
    const head = await send(h, "HEAD", "/bkt/no-such-key");
    assert.equal(head.status, 404);
    assert.equal(head.bytes.length, 0);
    const noBucket = await send(h, "GET", "/other-bucket", { query: { "list-type": "2" } });
    assert.equal(errorCode(noBucket.text), "NoSuchBucket");
    assert.ok(noBucket.text.includes("<BucketName>other-bucket</BucketName>"));
    const acl = await send(h, "GET", "/bkt", { query: { acl: "" } });
    assert.equal(acl.status, 501);
    assert.equal(errorCode(acl.text), "NotImplemented");
    assert.ok(acl.text.includes("acl"));
    const badName = await send(h, "PUT", "/Bad_Bucket");
    assert.equal(errorCode(badName.text), "InvalidBucketName");
  });
});

Deno.test("S3Gateway refuses unsigned, forged, skewed and Signature Version 2 requests", async () => {
  await withGateway(async (h) => {
    assert.equal((await send(h, "PUT", "/bkt")).status, 200);
    const anonymous = await fetch(`${h.endpoint}/bkt/k`);
    assert.equal(anonymous.status, 403);
    assert.equal(errorCode(await anonymous.text()), "AccessDenied");
    const v2 = await fetch(`${h.endpoint}/bkt/k`, {
      headers: { authorization: `AWS ${h.keyA.accessKeyId}:c2lnbmF0dXJl` },
    });
    assert.equal(v2.status, 400);
    assert.ok((await v2.text()).includes("AWS4-HMAC-SHA256"));
    const forged = await send(h, "GET", "/bkt", {
      key: { ...h.keyA, secretAccessKey: "not-the-secret-not-the-secret-not-the-se" },
    });
    assert.equal(forged.status, 403);
    assert.equal(errorCode(forged.text), "SignatureDoesNotMatch");
    const unknown = await send(h, "GET", "/bkt", {
      key: { ...h.keyA, accessKeyId: "KSKIAAAAAAAAAAAAAAAA" },
    });
    assert.equal(errorCode(unknown.text), "InvalidAccessKeyId");
    const skewed = await send(h, "GET", "/bkt", {
      signingDate: new Date(Date.now() - 20 * 60_000),
    });
    assert.equal(skewed.status, 403);
    assert.equal(errorCode(skewed.text), "RequestTimeTooSkewed");
    const tampered = await send(h, "PUT", "/bkt/k", {
      body: "hello",
      tamper: (r) => (r.headers["x-amz-meta-added"] = "after signing") && undefined,
      headers: { "x-amz-meta-original": "1" },
    });
    assert.equal(tampered.status, 200, "an unsigned extra header is not covered, as on AWS");
    const changedSigned = await send(h, "PUT", "/bkt/k", {
      body: "hello",
      headers: { "x-amz-meta-original": "1" },
      tamper: (r) => void (r.headers["x-amz-meta-original"] = "2"),
    });
    assert.equal(errorCode(changedSigned.text), "SignatureDoesNotMatch");
  });
});

Deno.test("S3Gateway keeps tenants apart", async () => {
  await withGateway(async (h) => {
    assert.equal((await send(h, "PUT", "/shared-name")).status, 200);
    assert.equal((await send(h, "PUT", "/shared-name/k", { body: "tenant a" })).status, 200);
    // Tenant B has its own namespace of bucket names.
    const bList = await send(h, "GET", "/", { key: h.keyB });
    assert.ok(!bList.text.includes("shared-name"));
    assert.equal(
      errorCode((await send(h, "GET", "/shared-name/k", { key: h.keyB })).text),
      "NoSuchBucket",
    );
    assert.equal((await send(h, "PUT", "/shared-name", { key: h.keyB })).status, 200);
    assert.equal(
      errorCode((await send(h, "GET", "/shared-name/k", { key: h.keyB })).text),
      "NoSuchKey",
    );
    assert.equal((await send(h, "GET", "/shared-name/k")).text, "tenant a");
  });
});

const offLoopHashing = OpensslHashing.load(defaultShimOptions());

for (const hashing of [undefined, offLoopHashing.ok ? offLoopHashing.hashing : null]) {
  Deno.test({
    name: "S3Gateway refuses bodies that differ from their digests and stores nothing" +
      (hashing === undefined ? "" : " (payload SHA-256 off the event loop)"),
    ignore: hashing === null,
    fn: () => refusesBadDigests(hashing ?? undefined),
  });
}

async function refusesBadDigests(hashing: Hashing | undefined): Promise<void> {
  await withGateway(
    async (h) => {
      await send(h, "PUT", "/bkt");
      const badMd5 = await send(h, "PUT", "/bkt/md5", {
        body: "hello",
        headers: { "content-md5": "AAAAAAAAAAAAAAAAAAAAAA==" },
      });
      assert.equal(badMd5.status, 400);
      assert.equal(errorCode(badMd5.text), "BadDigest");
      const badSha = await send(h, "PUT", "/bkt/sha", {
        body: "hello",
        payloadHash: sha256Hex("other"),
      });
      assert.equal(errorCode(badSha.text), "XAmzContentSHA256Mismatch");
      const badCrc = await send(h, "PUT", "/bkt/crc", {
        body: "hello",
        headers: { "x-amz-checksum-crc32": "AAAAAA==" },
      });
      assert.equal(errorCode(badCrc.text), "BadDigest");
      for (const key of ["md5", "sha", "crc"]) {
        assert.equal((await send(h, "HEAD", `/bkt/${key}`)).status, 404, key);
      }
      const good = await send(h, "PUT", "/bkt/good", {
        body: "hello",
        headers: { "content-md5": "XUFAKrxLKna5cZ2REBfFkg==", "x-amz-checksum-crc32": "NhCmhg==" },
      });
      assert.equal(good.status, 200);
      assert.equal(good.headers.get("etag"), '"5d41402abc4b2a76b9719d911017c592"');
      assert.equal(good.headers.get("x-amz-checksum-crc32"), "NhCmhg==");
      // Above WHOLE_BODY_BYTES_MAX the body streams through the same checks.
      const big = new Uint8Array(WHOLE_BODY_BYTES_MAX + 1).fill(7);
      const bigSha = await send(h, "PUT", "/bkt/big-sha", {
        body: big,
        payloadHash: sha256Hex("other"),
      });
      assert.equal(errorCode(bigSha.text), "XAmzContentSHA256Mismatch");
      const bigMd5 = await send(h, "PUT", "/bkt/big-md5", {
        body: big,
        headers: { "content-md5": "AAAAAAAAAAAAAAAAAAAAAA==" },
      });
      assert.equal(errorCode(bigMd5.text), "BadDigest");
      for (const key of ["big-sha", "big-md5"]) {
        assert.equal((await send(h, "HEAD", `/bkt/${key}`)).status, 404, key);
      }
      const bigGood = await send(h, "PUT", "/bkt/big-good", { body: big });
      assert.equal(bigGood.status, 200);
      assert.equal(bigGood.headers.get("etag"), `"${createHash("md5").update(big).digest("hex")}"`);
    },
    {},
    hashing,
  );
}

/** An aws-chunked body signed from `seed`, as SDKs that sign chunks send it. */
function signedChunked(
  chunks: Uint8Array[],
  signing: { signingKey: Uint8Array; amzDate: string; scope: string; seed: string },
): Uint8Array {
  const parts: Uint8Array[] = [];
  let previous = signing.seed;
  const enc = new TextEncoder();
  for (const chunk of [...chunks, new Uint8Array(0)]) {
    previous = chunkSignature({
      signingKey: signing.signingKey,
      amzDate: signing.amzDate,
      scope: signing.scope,
      previousSignature: previous,
      chunkSha256Hex: sha256Hex(chunk),
    });
    parts.push(
      enc.encode(`${chunk.length.toString(16)};chunk-signature=${previous}\r\n`),
      chunk,
      enc.encode("\r\n"),
    );
  }
  return Buffer.concat(parts);
}

/** Length of the signed aws-chunked encoding of `chunks`: known before signing. */
function chunkedLength(chunks: Uint8Array[]): number {
  let n = 0;
  for (const c of [...chunks, new Uint8Array(0)]) {
    n += c.length.toString(16).length + ";chunk-signature=".length + 64 + 2 + c.length + 2;
  }
  return n;
}

Deno.test("S3Gateway stores signed aws-chunked uploads and refuses tampered chunks", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    const chunks = [new Uint8Array(70000).fill(1), new Uint8Array(100).fill(2)];
    const whole = Buffer.concat(chunks);
    for (const tamper of [false, true]) {
      const key = tamper ? "tampered" : "chunked";
      const response = await send(h, "PUT", `/bkt/${key}`, {
        payloadHash: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        headers: {
          "content-encoding": "aws-chunked",
          "x-amz-decoded-content-length": String(whole.length),
          "content-length": String(chunkedLength(chunks)),
        },
        tamper: (r) => {
          const auth = r.headers.authorization!;
          const seed = /Signature=([0-9a-f]{64})/.exec(auth)![1]!;
          const amzDate = r.headers["x-amz-date"]!;
          const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
          const signingKey = h.gateway.verifier.signingKey(
            h.keyA.secretAccessKey,
            amzDate.slice(0, 8),
            "us-east-1",
            "s3",
          );
          const body = signedChunked(chunks, { signingKey, amzDate, scope, seed });
          assert.equal(body.length, chunkedLength(chunks));
          // A byte of the second chunk's data (the final chunk and CRLFs are the last 90).
          if (tamper) body[body.length - 150] ^= 1;
          r.body = body;
        },
      });
      if (tamper) {
        assert.equal(response.status, 403, response.text);
        assert.equal(errorCode(response.text), "SignatureDoesNotMatch");
        assert.equal((await send(h, "HEAD", `/bkt/${key}`)).status, 404);
      } else {
        assert.equal(response.status, 200, response.text);
        const got = await send(h, "GET", `/bkt/${key}`);
        assert.deepEqual(got.bytes, new Uint8Array(whole));
      }
    }
  });
});

Deno.test("S3Gateway serves ranges and conditional requests as S3 does", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    const data = new Uint8Array(1000).map((_, i) => i & 0xff);
    const put = await send(h, "PUT", "/bkt/r", { body: data });
    const etag = put.headers.get("etag")!;
    const r = await send(h, "GET", "/bkt/r", { headers: { range: "bytes=100-199" } });
    assert.equal(r.status, 206);
    assert.equal(r.headers.get("content-range"), "bytes 100-199/1000");
    assert.deepEqual(r.bytes, data.subarray(100, 200));
    // Several ranges: S3 sends the whole object.
    const multi = await send(h, "GET", "/bkt/r", { headers: { range: "bytes=0-1,5-6" } });
    assert.equal(multi.status, 200);
    assert.equal(multi.bytes.length, 1000);
    const unsatisfiable = await send(h, "GET", "/bkt/r", { headers: { range: "bytes=1000-" } });
    assert.equal(unsatisfiable.status, 416);
    assert.equal(unsatisfiable.headers.get("content-range"), "bytes */1000");
    assert.equal(errorCode(unsatisfiable.text), "InvalidRange");
    const headRange = await send(h, "HEAD", "/bkt/r", { headers: { range: "bytes=-10" } });
    assert.equal(headRange.status, 206);
    assert.equal(headRange.headers.get("content-length"), "10");

    const notModified = await send(h, "GET", "/bkt/r", { headers: { "if-none-match": etag } });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.bytes.length, 0);
    assert.equal(notModified.headers.get("etag"), etag);
    const failed = await send(h, "GET", "/bkt/r", { headers: { "if-match": '"other"' } });
    assert.equal(failed.status, 412);
    const lastModified = r.headers.get("last-modified")!;
    const since = await send(h, "HEAD", "/bkt/r", {
      headers: { "if-modified-since": lastModified },
    });
    assert.equal(since.status, 304);
    // If-Match true wins over If-Unmodified-Since false.
    const both = await send(h, "GET", "/bkt/r", {
      headers: { "if-match": etag, "if-unmodified-since": "Mon, 01 Jan 2001 00:00:00 GMT" },
    });
    assert.equal(both.status, 200);

    const absent = await send(h, "PUT", "/bkt/r", { body: "x", headers: { "if-none-match": "*" } });
    assert.equal(absent.status, 412);
    const created = await send(h, "PUT", "/bkt/new", {
      body: "x",
      headers: { "if-none-match": "*" },
    });
    assert.equal(created.status, 200);
  });
});

/** A multipart upload of `parts` through the gateway; the completed object's ETag. */
async function uploadParts(h: Harness, path: string, parts: Uint8Array[]): Promise<string> {
  const init = await send(h, "POST", path, { query: { uploads: "" } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init.text)![1]!;
  const listed: string[] = [];
  for (const [i, body] of parts.entries()) {
    const put = await send(h, "PUT", path, {
      query: { partNumber: String(i + 1), uploadId },
      body,
    });
    assert.equal(put.status, 200, put.text);
    listed.push(
      `<Part><PartNumber>${i + 1}</PartNumber><ETag>${put.headers.get("etag")}</ETag></Part>`,
    );
  }
  const done = await send(h, "POST", path, {
    query: { uploadId },
    body: `<CompleteMultipartUpload>${listed.join("")}</CompleteMultipartUpload>`,
  });
  assert.equal(done.status, 200, done.text);
  return /<ETag>([^<]+)<\/ETag>/.exec(done.text)![1]!.replaceAll("&quot;", '"');
}

Deno.test("S3Gateway serves GET and HEAD ?partNumber: a multipart object's part, 206, with the part count", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    const parts = [1000, 2000, 37].map((n, i) =>
      new Uint8Array(n).map((_, j) => (j * 7 + i) & 0xff)
    );
    const whole = new Uint8Array(Buffer.concat(parts));
    const etag = await uploadParts(h, "/bkt/m", parts);
    const expectedETag = `"${
      createHash("md5").update(
        Buffer.concat(parts.map((p) => createHash("md5").update(p).digest())),
      )
        .digest("hex")
    }-3"`;
    assert.equal(etag, expectedETag);

    const bounds = [[0, 999], [1000, 2999], [3000, 3036]];
    for (const [i, [first, last]] of bounds.entries()) {
      const query = { partNumber: String(i + 1) };
      const got = await send(h, "GET", "/bkt/m", { query });
      assert.equal(got.status, 206, `part ${i + 1}`);
      assert.deepEqual(got.bytes, whole.subarray(first!, last! + 1));
      assert.deepEqual(got.bytes, parts[i]);
      assert.equal(got.headers.get("content-range"), `bytes ${first}-${last}/${whole.length}`);
      assert.equal(got.headers.get("content-length"), String(parts[i]!.length));
      assert.equal(got.headers.get("x-amz-mp-parts-count"), "3");
      assert.equal(got.headers.get("etag"), expectedETag);
      const head = await send(h, "HEAD", "/bkt/m", { query });
      assert.equal(head.status, 206);
      assert.equal(head.bytes.length, 0);
      assert.equal(head.headers.get("content-length"), String(parts[i]!.length));
      assert.equal(head.headers.get("content-range"), `bytes ${first}-${last}/${whole.length}`);
      assert.equal(head.headers.get("x-amz-mp-parts-count"), "3");
    }
    // Without partNumber: the whole object, and no part count (as AWS).
    const plainGet = await send(h, "GET", "/bkt/m");
    assert.equal(plainGet.status, 200);
    assert.deepEqual(plainGet.bytes, whole);
    assert.equal(plainGet.headers.get("x-amz-mp-parts-count"), null);

    const beyond = await send(h, "GET", "/bkt/m", { query: { partNumber: "4" } });
    assert.equal(beyond.status, 416);
    assert.equal(errorCode(beyond.text), "InvalidPartNumber");
    assert.match(beyond.text, /The requested partnumber is not satisfiable/);
    assert.match(beyond.text, /<ActualPartCount>3<\/ActualPartCount>/);
    const headBeyond = await send(h, "HEAD", "/bkt/m", { query: { partNumber: "4" } });
    assert.equal(headBeyond.status, 416);
    const both = await send(h, "GET", "/bkt/m", {
      query: { partNumber: "1" },
      headers: { range: "bytes=0-9" },
    });
    assert.equal(both.status, 400);
    assert.equal(errorCode(both.text), "InvalidRequest");
    assert.match(both.text, /Cannot specify both Range header and partNumber query parameter/);
    for (const bad of ["0", "10001", "-1", "two", "1.5", ""]) {
      const r = await send(h, "GET", "/bkt/m", { query: { partNumber: bad } });
      assert.equal(r.status, 400, `partNumber=${bad}`);
      assert.equal(errorCode(r.text), "InvalidArgument", `partNumber=${bad}`);
    }

    // Conditions apply as to any read.
    const same = await send(h, "GET", "/bkt/m", {
      query: { partNumber: "2" },
      headers: { "if-none-match": expectedETag },
    });
    assert.equal(same.status, 304);
    const other = await send(h, "GET", "/bkt/m", {
      query: { partNumber: "2" },
      headers: { "if-match": '"other"' },
    });
    assert.equal(other.status, 412);
    const headOther = await send(h, "HEAD", "/bkt/m", {
      query: { partNumber: "2" },
      headers: { "if-match": '"other"' },
    });
    assert.equal(headOther.status, 412);
    const matched = await send(h, "GET", "/bkt/m", {
      query: { partNumber: "3" },
      headers: { "if-match": expectedETag },
    });
    assert.equal(matched.status, 206);
    assert.deepEqual(matched.bytes, parts[2]);

    // A copy keeps the ETag, so it keeps the parts.
    const copy = await send(h, "PUT", "/bkt/m-copy", {
      headers: { "x-amz-copy-source": "/bkt/m" },
    });
    assert.equal(copy.status, 200, copy.text);
    const copied = await send(h, "GET", "/bkt/m-copy", { query: { partNumber: "3" } });
    assert.equal(copied.status, 206);
    assert.deepEqual(copied.bytes, parts[2]);
    assert.equal(copied.headers.get("etag"), expectedETag);
    assert.equal(copied.headers.get("x-amz-mp-parts-count"), "3");

    // An empty last part: no bytes, no range to name.
    const withEmpty = await uploadParts(h, "/bkt/e", [parts[0]!, new Uint8Array(0)]);
    assert.match(withEmpty, /-2"$/);
    const empty = await send(h, "GET", "/bkt/e", { query: { partNumber: "2" } });
    assert.equal(empty.status, 206);
    assert.equal(empty.bytes.length, 0);
    assert.equal(empty.headers.get("content-length"), "0");
    assert.equal(empty.headers.get("content-range"), null);
    assert.equal(empty.headers.get("x-amz-mp-parts-count"), "2");
  }, { partBytesMin: 0 });
});

Deno.test("S3Gateway answers ?partNumber=1 of a single-part object with the whole object, 200", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    for (const [key, size] of [["chunked", 70_000], ["inline", 10], ["empty", 0]] as const) {
      const data = new Uint8Array(size).map((_, i) => (i * 13) & 0xff);
      const put = await send(h, "PUT", `/bkt/${key}`, { body: data });
      const got = await send(h, "GET", `/bkt/${key}`, { query: { partNumber: "1" } });
      assert.equal(got.status, 200, key);
      assert.deepEqual(got.bytes, data, key);
      assert.equal(got.headers.get("etag"), put.headers.get("etag"), key);
      assert.equal(got.headers.get("content-range"), null, key);
      assert.equal(got.headers.get("x-amz-mp-parts-count"), null, key);
      const head = await send(h, "HEAD", `/bkt/${key}`, { query: { partNumber: "1" } });
      assert.equal(head.status, 200, key);
      assert.equal(head.headers.get("content-length"), String(size), key);
      assert.equal(head.headers.get("x-amz-mp-parts-count"), null, key);
      const second = await send(h, "GET", `/bkt/${key}`, { query: { partNumber: "2" } });
      assert.equal(second.status, 416, key);
      assert.equal(errorCode(second.text), "InvalidPartNumber", key);
      assert.match(second.text, /<ActualPartCount>1<\/ActualPartCount>/);
    }
    const missing = await send(h, "GET", "/bkt/missing", { query: { partNumber: "1" } });
    assert.equal(errorCode(missing.text), "NoSuchKey");
  });
});

Deno.test("S3Gateway stores Cache-Control, Content-Disposition, Content-Encoding, Content-Language and Expires", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    const stored = {
      "cache-control": "max-age=60",
      "content-disposition": 'attachment; filename="r.txt"',
      "content-encoding": "gzip",
      "content-language": "de",
      expires: "Wed, 21 Oct 2037 07:28:00 GMT",
    };
    // Gzip bytes, as Content-Encoding says (fetch decodes them).
    const gzipped = new Uint8Array(
      await new Response(
        new Blob(["stored headers"]).stream().pipeThrough(new CompressionStream("gzip")),
      ).arrayBuffer(),
    );
    const put = await send(h, "PUT", "/bkt/h", {
      body: gzipped,
      headers: { ...stored, "x-amz-meta-k": "v" },
    });
    assert.equal(put.status, 200, put.text);
    for (const method of ["GET", "HEAD"]) {
      const got = await send(h, method, "/bkt/h");
      if (method === "GET") assert.equal(got.text, "stored headers");
      for (const [name, value] of Object.entries(stored)) {
        assert.equal(got.headers.get(name), value, `${method} ${name}`);
      }
      assert.equal(got.headers.get("x-amz-meta-k"), "v");
      assert.ok(![...got.headers.keys()].some((n) => n.includes(":")));
    }
    // response-* parameters still win; a copy keeps them, a REPLACE copy takes the request's.
    const overridden = await send(h, "GET", "/bkt/h", {
      query: { "response-cache-control": "no-store" },
    });
    assert.equal(overridden.headers.get("cache-control"), "no-store");
    await send(h, "PUT", "/bkt/h-copy", { headers: { "x-amz-copy-source": "/bkt/h" } });
    assert.equal((await send(h, "HEAD", "/bkt/h-copy")).headers.get("expires"), stored.expires);
    await send(h, "PUT", "/bkt/h-replaced", {
      headers: {
        "x-amz-copy-source": "/bkt/h",
        "x-amz-metadata-directive": "REPLACE",
        "cache-control": "no-cache",
      },
    });
    const replaced = await send(h, "HEAD", "/bkt/h-replaced");
    assert.equal(replaced.headers.get("cache-control"), "no-cache");
    assert.equal(replaced.headers.get("content-disposition"), null);
    assert.equal(replaced.headers.get("x-amz-meta-k"), null);
    // A multipart upload keeps what its initiation said.
    const init = await send(h, "POST", "/bkt/h-multi", {
      query: { uploads: "" },
      headers: { "content-disposition": "inline" },
    });
    const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init.text)![1]!;
    const part = await send(h, "PUT", "/bkt/h-multi", {
      query: { partNumber: "1", uploadId },
      body: "p",
    });
    const done = await send(h, "POST", "/bkt/h-multi", {
      query: { uploadId },
      body: `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${
        part.headers.get("etag")
      }</ETag></Part></CompleteMultipartUpload>`,
    });
    assert.equal(done.status, 200, done.text);
    assert.equal(
      (await send(h, "HEAD", "/bkt/h-multi")).headers.get("content-disposition"),
      "inline",
    );
  });
});

Deno.test("S3Gateway sends the checksums a put declared when x-amz-checksum-mode is ENABLED", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    // CRC32 of "hello" and SHA-256 of "hello", base64.
    const crc32 = "NhCmhg==";
    const sha256 = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
    const put = await send(h, "PUT", "/bkt/c", {
      body: "hello",
      headers: { "x-amz-checksum-crc32": crc32, "x-amz-checksum-sha256": sha256 },
    });
    assert.equal(put.status, 200, put.text);
    const mode = { "x-amz-checksum-mode": "ENABLED" };
    for (const method of ["GET", "HEAD"]) {
      const got = await send(h, method, "/bkt/c", { headers: mode });
      assert.equal(got.headers.get("x-amz-checksum-crc32"), crc32, method);
      assert.equal(got.headers.get("x-amz-checksum-sha256"), sha256, method);
      assert.equal(got.headers.get("x-amz-checksum-type"), "FULL_OBJECT", method);
      // Not asked for, or a range (whose bytes the whole object's checksum does not cover).
      const plain = await send(h, method, "/bkt/c");
      assert.equal(plain.headers.get("x-amz-checksum-crc32"), null, method);
      const ranged = await send(h, method, "/bkt/c", { headers: { ...mode, range: "bytes=1-2" } });
      assert.equal(ranged.status, 206);
      assert.equal(ranged.headers.get("x-amz-checksum-crc32"), null, method);
    }
    // A put that only names an algorithm stores no checksum it did not declare.
    await send(h, "PUT", "/bkt/named", {
      body: "hello",
      headers: { "x-amz-sdk-checksum-algorithm": "CRC32" },
    });
    const named = await send(h, "HEAD", "/bkt/named", { headers: mode });
    assert.equal(named.headers.get("x-amz-checksum-crc32"), null);
    // An overwrite without checksums leaves none of the old ones behind.
    await send(h, "PUT", "/bkt/c", { body: "other" });
    const overwritten = await send(h, "HEAD", "/bkt/c", { headers: mode });
    assert.equal(overwritten.headers.get("x-amz-checksum-crc32"), null);
  });
});

Deno.test("S3Gateway lists with prefixes, delimiters, pages and url encoding", async () => {
  await withGateway(async (h) => {
    await send(h, "PUT", "/bkt");
    for (const key of ["a/1", "a/2", "a/b/3", "c d", "é"]) {
      assert.equal(
        (await send(h, "PUT", `/bkt/${uriEncode(key, true)}`, { body: key })).status,
        200,
      );
    }
    const top = await send(h, "GET", "/bkt", { query: { "list-type": "2", delimiter: "/" } });
    assert.ok(top.text.includes("<CommonPrefixes><Prefix>a/</Prefix></CommonPrefixes>"), top.text);
    assert.ok(top.text.includes("<Key>c d</Key>"));
    assert.ok(top.text.includes("<KeyCount>3</KeyCount>"));
    const encoded = await send(h, "GET", "/bkt", {
      query: { "list-type": "2", "encoding-type": "url", prefix: "c " },
    });
    assert.ok(encoded.text.includes("<Key>c%20d</Key>"), encoded.text);
    assert.ok(encoded.text.includes("<Prefix>c%20</Prefix>"), encoded.text);
    const page1 = await send(h, "GET", "/bkt", { query: { "list-type": "2", "max-keys": "2" } });
    assert.ok(page1.text.includes("<IsTruncated>true</IsTruncated>"));
    const token = /<NextContinuationToken>([^<]*)</.exec(page1.text)![1]!;
    const page2 = await send(h, "GET", "/bkt", {
      query: { "list-type": "2", "max-keys": "2", "continuation-token": token },
    });
    assert.ok(page2.text.includes("<Key>a/b/3</Key>"), page2.text);
    const bad = await send(h, "GET", "/bkt", {
      query: { "list-type": "2", "continuation-token": "zz!" },
    });
    assert.equal(errorCode(bad.text), "InvalidArgument");
    const v1 = await send(h, "GET", "/bkt", { query: { marker: "a/b/3" } });
    assert.ok(v1.text.includes("<Marker>a/b/3</Marker>") && v1.text.includes("<Key>c d</Key>"));
    assert.ok(!v1.text.includes("<Key>a/1</Key>"));
  });
});

Deno.test("S3Gateway addresses buckets by virtual host under its base domains", async () => {
  await withGateway(async (h) => {
    const signer = new SignatureV4({
      service: "s3",
      region: "us-east-1",
      credentials: { accessKeyId: h.keyA.accessKeyId, secretAccessKey: h.keyA.secretAccessKey },
      sha256: NodeSha256,
      uriEscapePath: false,
    });
    // No resolver here knows *.s3.localhost: the request goes to the handler directly.
    const call = async (method: string, host: string, path: string, body?: string) => {
      const signed = await signer.sign({
        method,
        protocol: "http:",
        hostname: host,
        path,
        query: {},
        headers: {
          host,
          "x-amz-content-sha256": sha256Hex(body ?? ""),
          ...(body === undefined ? {} : { "content-length": String(body.length) }),
        },
      }, { signingDate: new Date() });
      const response = await h.gateway.handle(
        new Request(`http://${host}${path}`, { method, headers: signed.headers, body }),
      );
      return { status: response.status, text: await response.text() };
    };
    assert.equal((await call("PUT", "vhost.s3.localhost", "/")).status, 200);
    assert.equal((await call("PUT", "vhost.s3.localhost", "/dir/k.txt", "virtual")).status, 200);
    assert.equal((await call("GET", "vhost.s3.localhost", "/dir/k.txt")).text, "virtual");
    // The same object, path style.
    assert.equal((await call("GET", "s3.localhost", "/vhost/dir/k.txt")).text, "virtual");
    const listing = await call("GET", "vhost.s3.localhost", "/");
    assert.ok(listing.text.includes("<Key>dir/k.txt</Key>"), listing.text);
  });
});

// ---- real clients -----------------------------------------------------------------------------

const decoder = new TextDecoder();

/** Runs a client command against the gateway; fails the test with its output. */
async function run(
  command: string,
  args: string[],
  env: Record<string, string>,
  stdin?: string,
): Promise<string> {
  const child = new Deno.Command(command, {
    args,
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: env.HOME ?? "/tmp", ...env },
    clearEnv: true,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  const text = decoder.decode(output.stdout);
  if (!output.success) {
    throw new Error(
      `${command} ${args.join(" ")} exited ${output.code}\n${text}\n${
        decoder.decode(output.stderr)
      }`,
    );
  }
  return text;
}

function installed(command: string, args: string[]): boolean {
  try {
    return new Deno.Command(command, { args, stdout: "null", stderr: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

/** Interpreters with boto3: Debian's python3-boto3, and any other boto3 on PATH. */
const boto3Pythons = (() => {
  const found = new Map<string, string>();
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      const out = new Deno.Command(python, {
        args: ["-c", "import boto3, botocore; print(botocore.__version__)"],
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      const version = decoder.decode(out.stdout).trim();
      if (out.success && !found.has(version)) found.set(version, python);
    } catch {
      // Not installed.
    }
  }
  return [...found.entries()];
})();

Deno.test({
  name: "S3Gateway serves every operation to boto3",
  ignore: missingPart(
    "boto3 (Debian python3-boto3)",
    boto3Pythons.length === 0 && "no python3 that imports boto3",
  ),
  async fn() {
    const script = new URL("./testdata/boto3_scenario.py", import.meta.url).pathname;
    await withGateway(async (h) => {
      for (const [version, python] of boto3Pythons) {
        const out = await run(python, [script], {
          S3_ENDPOINT: h.endpoint,
          S3_ACCESS_KEY_ID: h.keyA.accessKeyId,
          S3_SECRET_ACCESS_KEY: h.keyA.secretAccessKey,
          S3_BUCKET: `boto3-${version.replaceAll(".", "-")}`,
        });
        assert.equal(out.trim(), `ok ${version}`);
      }
    });
  },
});

/** aws-cli installs: Debian's (/usr/bin/aws), and any other on PATH. */
const awsClis = (() => {
  const found = new Map<string, string>();
  for (const aws of ["/usr/bin/aws", "aws"]) {
    try {
      const out = new Deno.Command(aws, { args: ["--version"], stdout: "piped", stderr: "piped" })
        .outputSync();
      const version = (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim().split(
        " ",
      )[0]!;
      if (out.success && !found.has(version)) found.set(version, aws);
    } catch {
      // Not installed.
    }
  }
  return [...found.entries()];
})();

Deno.test({
  name: "S3Gateway works with aws-cli: mb, cp, sync, ls, s3api, presign, rm, rb",
  ignore: missingPart("aws-cli (Debian awscli)", awsClis.length === 0 && "no aws command on PATH"),
  async fn() {
    await withGateway(async (h) => {
      for (const [version, aws] of awsClis) {
        const dir = await Deno.makeTempDir({ dir: h.dataDir });
        await Deno.writeTextFile(
          `${dir}/credentials`,
          `[default]\naws_access_key_id = ${h.keyA.accessKeyId}\n` +
            `aws_secret_access_key = ${h.keyA.secretAccessKey}\n`,
        );
        // aws-cli v1 presigns with Signature Version 2 unless told otherwise (v2 needs nothing).
        await Deno.writeTextFile(
          `${dir}/config`,
          "[default]\nregion = eu-west-1\ns3 =\n    signature_version = s3v4\n",
        );
        const env = {
          HOME: dir,
          AWS_SHARED_CREDENTIALS_FILE: `${dir}/credentials`,
          AWS_CONFIG_FILE: `${dir}/config`,
          AWS_PAGER: "",
        };
        const cli = (...args: string[]) => run(aws, ["--endpoint-url", h.endpoint, ...args], env);
        const bucket = `cli-${version.replace(/[^0-9a-z]/gi, "-").toLowerCase()}`;
        await cli("s3", "mb", `s3://${bucket}`);
        assert.ok((await cli("s3", "ls")).includes(bucket));
        // A tree with nested directories, spaces and unicode, and one file big enough to
        // go multipart (aws-cli's threshold is 8 MiB).
        const tree = `${dir}/tree`;
        const files: Record<string, Uint8Array> = {
          "a.txt": new TextEncoder().encode("alpha\n"),
          "sub dir/b c.txt": new TextEncoder().encode("bravo charlie\n"),
          "sub dir/深い/ü.bin": new Uint8Array(4096).map((_, i) => i * 7),
          "big.bin": new Uint8Array(20 << 20).map((_, i) => (i * 31) >> 3),
        };
        for (const [path, bytes] of Object.entries(files)) {
          await Deno.mkdir(`${tree}/${path}`.replace(/\/[^/]*$/, ""), { recursive: true });
          await Deno.writeFile(`${tree}/${path}`, bytes);
        }
        await cli("s3", "sync", tree, `s3://${bucket}/tree`);
        const listing = await cli("s3", "ls", "--recursive", `s3://${bucket}/`);
        for (const path of Object.keys(files)) assert.ok(listing.includes(`tree/${path}`), listing);
        await cli("s3", "sync", `s3://${bucket}/tree`, `${dir}/back`);
        for (const [path, bytes] of Object.entries(files)) {
          assert.deepEqual(await Deno.readFile(`${dir}/back/${path}`), bytes, path);
        }
        // A second sync finds nothing to do.
        assert.equal((await cli("s3", "sync", tree, `s3://${bucket}/tree`)).trim(), "");
        await cli("s3", "cp", `s3://${bucket}/tree/a.txt`, `s3://${bucket}/copied.txt`);
        assert.equal(await cli("s3", "cp", `s3://${bucket}/copied.txt`, "-"), "alpha\n");

        await cli(
          "s3api",
          "put-object",
          "--bucket",
          bucket,
          "--key",
          "meta.txt",
          "--body",
          `${tree}/a.txt`,
          "--metadata",
          "color=blue,size=small",
          "--content-type",
          "text/x-test",
        );
        const head = JSON.parse(
          await cli("s3api", "head-object", "--bucket", bucket, "--key", "meta.txt"),
        );
        assert.deepEqual(head.Metadata, { color: "blue", size: "small" });
        assert.equal(head.ContentType, "text/x-test");
        await cli(
          "s3api",
          "get-object",
          "--bucket",
          bucket,
          "--key",
          "tree/big.bin",
          "--range",
          "bytes=1000-1999",
          `${dir}/range.out`,
        );
        assert.deepEqual(
          await Deno.readFile(`${dir}/range.out`),
          files["big.bin"]!.subarray(1000, 2000),
        );
        const v2 = JSON.parse(
          await cli(
            "s3api",
            "list-objects-v2",
            "--bucket",
            bucket,
            "--prefix",
            "tree/",
            "--delimiter",
            "/",
          ),
        );
        assert.deepEqual(v2.CommonPrefixes.map((p: { Prefix: string }) => p.Prefix), [
          "tree/sub dir/",
        ]);
        assert.deepEqual(v2.Contents.map((c: { Key: string }) => c.Key), [
          "tree/a.txt",
          "tree/big.bin",
        ]);
        const url = (await cli("s3", "presign", `s3://${bucket}/tree/a.txt`, "--expires-in", "60"))
          .trim();
        const presigned = await fetch(url);
        assert.equal(await presigned.text(), "alpha\n", url);

        await cli("s3", "rm", "--recursive", `s3://${bucket}/`);
        await cli("s3", "rb", `s3://${bucket}`);
        assert.ok(!(await cli("s3", "ls")).includes(bucket));
      }
    });
  },
});

const s3cmdInstalled = installed("s3cmd", ["--version"]);

Deno.test({
  name: "S3Gateway works with s3cmd: mb, put (multipart), ls, get, del, rb",
  ignore: missingPart("s3cmd (Debian s3cmd)", !s3cmdInstalled && "no s3cmd command on PATH"),
  async fn() {
    await withGateway(async (h) => {
      const dir = await Deno.makeTempDir({ dir: h.dataDir });
      const host = `127.0.0.1:${h.port}`;
      await Deno.writeTextFile(
        `${dir}/s3cfg`,
        `[default]\naccess_key = ${h.keyA.accessKeyId}\nsecret_key = ${h.keyA.secretAccessKey}\n` +
          `host_base = ${host}\nhost_bucket = ${host}\nuse_https = False\n` +
          `signature_v2 = False\nbucket_location = us-east-1\n`,
      );
      const s3cmd = (...args: string[]) =>
        run("s3cmd", ["-c", `${dir}/s3cfg`, ...args], { HOME: dir });
      await s3cmd("mb", "s3://s3cmd-bucket");
      const small = new TextEncoder().encode("small file\n");
      const big = new Uint8Array(12 << 20).map((_, i) => (i * 13) >> 2);
      await Deno.writeFile(`${dir}/small.txt`, small);
      await Deno.writeFile(`${dir}/big.bin`, big);
      await s3cmd("put", `${dir}/small.txt`, "s3://s3cmd-bucket/docs/small file.txt");
      await s3cmd(
        "put",
        "--multipart-chunk-size-mb=5",
        `${dir}/big.bin`,
        "s3://s3cmd-bucket/big.bin",
      );
      const ls = await s3cmd("ls", "--recursive", "s3://s3cmd-bucket");
      assert.ok(ls.includes("s3://s3cmd-bucket/docs/small file.txt"), ls);
      assert.ok(ls.includes("s3://s3cmd-bucket/big.bin"), ls);
      await s3cmd("get", "s3://s3cmd-bucket/docs/small file.txt", `${dir}/small.out`);
      await s3cmd("get", "s3://s3cmd-bucket/big.bin", `${dir}/big.out`);
      assert.deepEqual(await Deno.readFile(`${dir}/small.out`), small);
      assert.deepEqual(await Deno.readFile(`${dir}/big.out`), big);
      await s3cmd("del", "s3://s3cmd-bucket/docs/small file.txt", "s3://s3cmd-bucket/big.bin");
      await s3cmd("rb", "s3://s3cmd-bucket");
      assert.ok(!(await s3cmd("ls")).includes("s3cmd-bucket"));
    });
  },
});

Deno.test("S3Gateway works with @aws-sdk/client-s3", async () => {
  await withGateway(async (h) => {
    const client = new S3Client({
      endpoint: h.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: h.keyA.accessKeyId, secretAccessKey: h.keyA.secretAccessKey },
    });
    try {
      await client.send(new CreateBucketCommand({ Bucket: "js-bucket" }));
      const text = "hello from the JS SDK";
      const put = await client.send(
        new PutObjectCommand({
          Bucket: "js-bucket",
          Key: "dir/hello world.txt",
          Body: text,
          ContentType: "text/plain",
          Metadata: { origin: "sdk" },
        }),
      );
      assert.equal(put.ETag, `"${createHash("md5").update(text).digest("hex")}"`);
      // Bytes with an explicit checksum algorithm (the SDK sends x-amz-checksum-crc32c).
      // Stream bodies of unknown length need https: over http the SDK must hash them first.
      const streamed = new Uint8Array(300_000).map((_, i) => i % 251);
      const withChecksum = await client.send(
        new PutObjectCommand({
          Bucket: "js-bucket",
          Key: "streamed.bin",
          Body: streamed,
          ChecksumAlgorithm: "CRC32C",
        }),
      );
      assert.ok(withChecksum.ChecksumCRC32C, "the stored checksum is echoed");
      const got = await client.send(
        new GetObjectCommand({ Bucket: "js-bucket", Key: "dir/hello world.txt" }),
      );
      assert.equal(await got.Body!.transformToString(), text);
      assert.deepEqual(got.Metadata, { origin: "sdk" });
      const back = await client.send(
        new GetObjectCommand({ Bucket: "js-bucket", Key: "streamed.bin" }),
      );
      assert.deepEqual(await back.Body!.transformToByteArray(), streamed);
      const ranged = await client.send(
        new GetObjectCommand({ Bucket: "js-bucket", Key: "streamed.bin", Range: "bytes=10-14" }),
      );
      assert.deepEqual(await ranged.Body!.transformToByteArray(), streamed.subarray(10, 15));
      const head = await client.send(
        new HeadObjectCommand({ Bucket: "js-bucket", Key: "streamed.bin" }),
      );
      assert.equal(head.ContentLength, streamed.length);
      await client.send(
        new CopyObjectCommand({
          Bucket: "js-bucket",
          Key: "copy.txt",
          CopySource: "js-bucket/dir/hello%20world.txt",
        }),
      );
      const list = await client.send(new ListObjectsV2Command({ Bucket: "js-bucket" }));
      assert.deepEqual(list.Contents?.map((c) => c.Key), [
        "copy.txt",
        "dir/hello world.txt",
        "streamed.bin",
      ]);

      const { UploadId } = await client.send(
        new CreateMultipartUploadCommand({ Bucket: "js-bucket", Key: "multi" }),
      );
      const part1 = new Uint8Array(5 << 20).fill(1);
      const e1 = await client.send(
        new UploadPartCommand({
          Bucket: "js-bucket",
          Key: "multi",
          UploadId,
          PartNumber: 1,
          Body: part1,
        }),
      );
      const e2 = await client.send(
        new UploadPartCommand({
          Bucket: "js-bucket",
          Key: "multi",
          UploadId,
          PartNumber: 2,
          Body: "tail",
        }),
      );
      await client.send(
        new CompleteMultipartUploadCommand({
          Bucket: "js-bucket",
          Key: "multi",
          UploadId,
          MultipartUpload: {
            Parts: [{ PartNumber: 1, ETag: e1.ETag }, { PartNumber: 2, ETag: e2.ETag }],
          },
        }),
      );
      const multi = await client.send(new HeadObjectCommand({ Bucket: "js-bucket", Key: "multi" }));
      assert.equal(multi.ContentLength, (5 << 20) + 4);
      assert.match(multi.ETag!, /^"[0-9a-f]{32}-2"$/);
      assert.equal(multi.PartsCount, undefined);
      const tail = await client.send(
        new GetObjectCommand({ Bucket: "js-bucket", Key: "multi", PartNumber: 2 }),
      );
      assert.equal(await tail.Body!.transformToString(), "tail");
      assert.equal(tail.PartsCount, 2);
      assert.equal(tail.ContentRange, `bytes ${5 << 20}-${(5 << 20) + 3}/${(5 << 20) + 4}`);
      assert.equal(tail.ETag, multi.ETag);
      const first = await client.send(
        new HeadObjectCommand({ Bucket: "js-bucket", Key: "multi", PartNumber: 1 }),
      );
      assert.equal(first.ContentLength, 5 << 20);
      assert.equal(first.PartsCount, 2);

      await assert.rejects(
        client.send(new GetObjectCommand({ Bucket: "js-bucket", Key: "missing" })),
        (e: unknown) => e instanceof S3ServiceException && e.name === "NoSuchKey",
      );
      await assert.rejects(
        client.send(new DeleteBucketCommand({ Bucket: "js-bucket" })),
        (e: unknown) => e instanceof S3ServiceException && e.name === "BucketNotEmpty",
      );
      const deleted = await client.send(
        new DeleteObjectsCommand({
          Bucket: "js-bucket",
          Delete: {
            Objects: ["copy.txt", "dir/hello world.txt", "streamed.bin", "multi"].map((Key) => ({
              Key,
            })),
          },
        }),
      );
      assert.equal(deleted.Deleted?.length, 4);
      await client.send(new DeleteBucketCommand({ Bucket: "js-bucket" }));
    } finally {
      client.destroy();
    }
  });
});
