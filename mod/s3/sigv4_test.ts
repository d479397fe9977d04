import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";
// Test only: the AWS SDK's own signer, to check verification against real signatures. Pinned
// here rather than in deno.json so production code cannot import it.
// deno-lint-ignore no-import-prefix
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";
import { missingPart } from "../base/mod.ts";
import { S3Error } from "./errors.ts";
import {
  canonicalQuery,
  canonicalUri,
  chunkSignature,
  EMPTY_SHA256_HEX,
  formatAmzDate,
  parseAmzDate,
  parseHttpDate,
  parseSigV4,
  signaturesEqual,
  type SigV4Request,
  SigV4Verifier,
  trailerSignature,
  uriEncode,
} from "./sigv4.ts";

const AKID = "AKIAIOSFODNN7EXAMPLE";
const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EXAMPLE_MS = Date.UTC(2013, 4, 24);
const HOST = "examplebucket.s3.amazonaws.com";

interface TestCredential {
  secretAccessKey: string;
  tenantId: string;
}

const credentials: Record<string, TestCredential> = {
  [AKID]: { secretAccessKey: SECRET, tenantId: "t1" },
  AKIDOTHER: { secretAccessKey: "other-secret", tenantId: "t2" },
};
const lookup = (id: string): TestCredential | null => credentials[id] ?? null;

function sha256Hex(data: string): string {
  return createHash("sha256").update(data).digest("hex");
}

async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  messagePart?: string,
): Promise<S3Error> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof S3Error, `expected S3Error ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (messagePart !== undefined) {
    assert.ok(caught.message.includes(messagePart), `"${caught.message}" lacks "${messagePart}"`);
  }
  return caught;
}

// --- AWS's published examples ------------------------------------------------------------

function exampleRequest(
  method: string,
  path: string,
  query: string,
  headers: Record<string, string>,
  signedHeaders: string,
  signature: string,
): SigV4Request {
  return {
    method,
    path,
    query,
    headers: new Headers({
      ...headers,
      authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20130524/us-east-1/s3/aws4_request,` +
        `SignedHeaders=${signedHeaders},Signature=${signature}`,
    }),
  };
}

Deno.test("SigV4Verifier accepts AWS's published header-signed examples", async () => {
  const verifier = new SigV4Verifier();
  const amz = { host: HOST, "x-amz-date": "20130524T000000Z" };
  const welcome = sha256Hex("Welcome to Amazon S3.");
  const examples: SigV4Request[] = [
    exampleRequest(
      "GET",
      "/test.txt",
      "",
      { ...amz, range: "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256_HEX },
      "host;range;x-amz-content-sha256;x-amz-date",
      "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    ),
    exampleRequest(
      "PUT",
      "/test$file.text",
      "",
      {
        ...amz,
        date: "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": welcome,
      },
      "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
      "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    ),
    exampleRequest(
      "GET",
      "/",
      "lifecycle",
      { ...amz, "x-amz-content-sha256": EMPTY_SHA256_HEX },
      "host;x-amz-content-sha256;x-amz-date",
      "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
    ),
    exampleRequest(
      "GET",
      "/",
      "prefix=J&max-keys=2",
      { ...amz, "x-amz-content-sha256": EMPTY_SHA256_HEX },
      "host;x-amz-content-sha256;x-amz-date",
      "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
    ),
  ];
  for (const request of examples) {
    const verified = await verifier.verify(request, { nowMs: EXAMPLE_MS, lookup });
    assert.equal(verified.kind, "header");
    assert.equal(verified.accessKeyId, AKID);
    assert.equal(verified.credential.tenantId, "t1");
    assert.equal(verified.scope, "20130524/us-east-1/s3/aws4_request");
    assert.equal(verified.payload, "sha256");
  }
  // The PUT signed the body's hash; it is handed on for checking the body.
  const put = await verifier.verify(examples[1]!, { nowMs: EXAMPLE_MS, lookup });
  assert.equal(put.payloadSha256Hex, welcome);
});

Deno.test("SigV4Verifier accepts AWS's published presigned URL, and refuses it once expired", async () => {
  const verifier = new SigV4Verifier();
  const query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F" +
    "20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400" +
    "&X-Amz-SignedHeaders=host&X-Amz-Signature=" +
    "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
  const request = { method: "GET", path: "/test.txt", query, headers: new Headers({ host: HOST }) };
  const verified = await verifier.verify(request, { nowMs: EXAMPLE_MS + 3600_000, lookup });
  assert.equal(verified.kind, "presigned");
  assert.equal(verified.payload, "unsigned");
  assert.equal(verified.expiresAtMs, EXAMPLE_MS + 86400_000);
  // Presigned URLs are not bound by the 15-minute skew, only by X-Amz-Expires.
  await verifier.verify(request, { nowMs: EXAMPLE_MS + 86400_000, lookup });
  const expired = await rejectsWith(
    verifier.verify(request, { nowMs: EXAMPLE_MS + 86400_001, lookup }),
    "AccessDenied",
    "Request has expired",
  );
  assert.equal(expired.details["X-Amz-Expires"], "86400");
  await rejectsWith(
    verifier.verify(request, { nowMs: EXAMPLE_MS - 16 * 60_000, lookup }),
    "AccessDenied",
    "not valid yet",
  );
  const tampered = { ...request, path: "/test2.txt" };
  await rejectsWith(
    verifier.verify(tampered, { nowMs: EXAMPLE_MS, lookup }),
    "SignatureDoesNotMatch",
  );
});

Deno.test("chunkSignature() and trailerSignature() reproduce AWS's streaming examples", async () => {
  // sigv4-streaming.html, "Example: PUT Object": 64 KiB + 1 KiB of 'a' in chunks.
  const verifier = new SigV4Verifier();
  const request = exampleRequest(
    "PUT",
    "/examplebucket/chunkObject.txt",
    "",
    {
      host: "s3.amazonaws.com",
      "x-amz-date": "20130524T000000Z",
      "x-amz-storage-class": "REDUCED_REDUNDANCY",
      "content-encoding": "aws-chunked",
      "x-amz-decoded-content-length": "66560",
      "content-length": "66824",
      "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    },
    "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;" +
      "x-amz-decoded-content-length;x-amz-storage-class",
    "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
  );
  const seed = await verifier.verify(request, { nowMs: EXAMPLE_MS, lookup });
  assert.equal(seed.payload, "streaming-signed");
  assert.equal(seed.signature, "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9");
  const expected = [
    [65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"],
    [1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"],
    [0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"],
  ] as const;
  let previous = seed.signature;
  for (const [size, signature] of expected) {
    const chunkSha256Hex = createHash("sha256").update("a".repeat(size)).digest("hex");
    previous = chunkSignature({
      signingKey: seed.signingKey,
      amzDate: seed.amzDate,
      scope: seed.scope,
      previousSignature: previous,
      chunkSha256Hex,
    });
    assert.equal(previous, signature);
  }
  // sigv4-streaming-trailers.html: the trailer chunk after a final chunk signed e05ab64f...
  assert.equal(
    trailerSignature({
      signingKey: seed.signingKey,
      amzDate: seed.amzDate,
      scope: seed.scope,
      previousSignature: "e05ab64fe1dfdbf0b5870abbaabdb063c371d4e96f2767e6934d90529c5ae850",
      trailerSha256Hex: sha256Hex("x-amz-checksum-crc32c:wdBDMA==\n"),
    }),
    "41e14ac611e27a8bb3d66c3bad6856f209297767d5dd4fc87d8fa9e422e03faf",
  );
});

// --- Requests signed by the AWS SDK's signer (@smithy/signature-v4) ----------------------

/** The SDK's hash interface over node:crypto. */
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

function sdkSigner(accessKeyId = AKID, secretAccessKey = SECRET, region = "us-east-1") {
  return new SignatureV4({
    service: "s3",
    region,
    credentials: { accessKeyId, secretAccessKey },
    sha256: NodeSha256,
    // S3 clients encode the key themselves and the signer must not encode it again.
    uriEscapePath: false,
    applyChecksum: true,
  });
}

interface SdkRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query: Record<string, string | string[] | null>;
  headers: Record<string, string>;
}

/** The request as the wire carries it: query built the way the SDK builds it. */
function wire(signed: SdkRequest): SigV4Request {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(signed.query)) {
    const values = value === null ? [null] : Array.isArray(value) ? value : [value];
    for (const v of values) {
      parts.push(v === null ? uriEncode(name) : `${uriEncode(name)}=${uriEncode(v)}`);
    }
  }
  return {
    method: signed.method,
    path: signed.path,
    query: parts.join("&"),
    headers: new Headers(signed.headers),
  };
}

/** An S3 client's path for a key: every segment encoded, slashes kept. */
function keyPath(bucket: string, key: string): string {
  return `/${bucket}/${uriEncode(key, true)}`;
}

function sdkRequest(
  method: string,
  path: string,
  query: Record<string, string | string[] | null> = {},
  headers: Record<string, string> = {},
): SdkRequest {
  return {
    method,
    protocol: "http:",
    hostname: "localhost",
    port: 9000,
    path,
    query,
    headers: {
      host: "localhost:9000",
      "x-amz-content-sha256": EMPTY_SHA256_HEX,
      ...headers,
    },
  };
}

const NOW_MS = Date.UTC(2026, 10, 24, 10, 0, 0);
const signingDate = new Date(NOW_MS);

const SDK_CASES: Array<[string, SdkRequest]> = [
  ["ListBuckets", sdkRequest("GET", "/")],
  ["a key with slashes", sdkRequest("GET", keyPath("bkt", "dir/sub/file.txt"))],
  [
    "a key with spaces and reserved characters",
    sdkRequest("GET", keyPath("bkt", "a b+c=d&e;f,g:h@i$j")),
  ],
  ["a key with sub-delims", sdkRequest("GET", keyPath("bkt", "x!y*z'(1)~_-.txt"))],
  ["a unicode key", sdkRequest("GET", keyPath("bkt", "日本語/ファイル 名.txt"))],
  ["a key with emoji and percent", sdkRequest("GET", keyPath("bkt", "100% \u{1f600}.bin"))],
  // Sent and signed without encoding !*'(): some clients do, and the wire path is honoured.
  ["a path signed as sent", sdkRequest("GET", "/bkt/raw!*'()path,;:@=&$")],
  ["a key with dot segments", sdkRequest("GET", keyPath("bkt", "a/../b/./c"))],
  ["a key with doubled and trailing slashes", sdkRequest("GET", keyPath("bkt", "a//b/"))],
  [
    "ListObjectsV2 with every parameter",
    sdkRequest("GET", "/bkt", {
      "list-type": "2",
      prefix: "photos/2026 summer/",
      delimiter: "/",
      "continuation-token": "abc+/=",
      "start-after": "ü",
      "max-keys": "10",
      "encoding-type": "url",
      "fetch-owner": "true",
    }),
  ],
  ["a subresource without a value", sdkRequest("POST", keyPath("bkt", "big.iso"), { uploads: "" })],
  [
    "UploadPart",
    sdkRequest("PUT", keyPath("bkt", "big.iso"), { partNumber: "3", uploadId: "u/+=1" }, {
      "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
      "content-length": "5242880",
    }),
  ],
  [
    "PutObject with metadata and odd whitespace",
    sdkRequest("PUT", keyPath("bkt", "k"), {}, {
      "x-amz-content-sha256": sha256Hex("hello"),
      "content-type": "text/plain",
      "x-amz-meta-note": "  two   spaces\tand a tab  ",
      "x-amz-meta-unicode": "caf\u00e9",
      "content-md5": "XUFAKrxLKna5cZ2REBfFkg==",
    }),
  ],
  [
    "CopyObject",
    sdkRequest("PUT", keyPath("bkt", "dst"), {}, {
      "x-amz-copy-source": "/src/a%20b",
      "x-amz-metadata-directive": "REPLACE",
    }),
  ],
  [
    "a streaming upload",
    sdkRequest("PUT", keyPath("bkt", "s"), {}, {
      "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
      "content-encoding": "aws-chunked",
      "x-amz-decoded-content-length": "10",
      "x-amz-trailer": "x-amz-checksum-crc32",
    }),
  ],
];

Deno.test("SigV4Verifier accepts requests the AWS SDK signer signed", async () => {
  const verifier = new SigV4Verifier();
  for (const [name, request] of SDK_CASES) {
    const signed = await sdkSigner().sign(request, { signingDate }) as SdkRequest;
    const verified = await verifier.verify(wire(signed), { nowMs: NOW_MS, lookup });
    assert.equal(verified.accessKeyId, AKID, name);
    assert.equal(verified.region, "us-east-1", name);
    assert.equal(verified.amzDate, "20261124T100000Z", name);
  }
});

Deno.test("SigV4Verifier refuses SDK-signed requests changed after signing", async () => {
  const verifier = new SigV4Verifier();
  const changes: Array<[string, (r: SigV4Request) => SigV4Request]> = [
    ["method", (r) => ({ ...r, method: r.method === "GET" ? "DELETE" : "GET" })],
    ["path", (r) => ({ ...r, path: r.path + "x" })],
    [
      "path case",
      (r) => ({
        ...r,
        path: r.path.toUpperCase() === r.path ? r.path + "a" : r.path.toUpperCase(),
      }),
    ],
    ["query", (r) => ({ ...r, query: r.query === "" ? "acl" : r.query + "&x=1" })],
    ["host", (r) => withHeader(r, "host", "localhost:9001")],
    ["a signed header", (r) => withHeader(r, "x-amz-date", "20261124T100001Z")],
    [
      "the payload hash",
      (r) => withHeader(r, "x-amz-content-sha256", sha256Hex("something else")),
    ],
    ["the signature", (r) => {
      const auth = r.headers.get("authorization")!;
      const last = auth.at(-1) === "0" ? "1" : "0";
      return withHeader(r, "authorization", auth.slice(0, -1) + last);
    }],
  ];
  for (const [name, request] of SDK_CASES) {
    const signed = wire(await sdkSigner().sign(request, { signingDate }) as SdkRequest);
    for (const [what, change] of changes) {
      await rejectsWith(
        verifier.verify(change(signed), { nowMs: NOW_MS, lookup }),
        "SignatureDoesNotMatch",
      ).catch((e) => {
        throw new Error(`${name}, changed ${what}: ${e.message}`);
      });
    }
  }
  // A request signed with another secret for the same key id.
  const forged = await sdkSigner(AKID, "not-the-secret").sign(SDK_CASES[1]![1], { signingDate });
  const error = await rejectsWith(
    verifier.verify(wire(forged as SdkRequest), { nowMs: NOW_MS, lookup }),
    "SignatureDoesNotMatch",
  );
  assert.equal(error.details.AWSAccessKeyId, AKID);
  assert.ok(error.details.CanonicalRequest!.startsWith("GET\n/bkt/dir/sub/file.txt\n"));
  assert.ok(error.details.StringToSign!.startsWith("AWS4-HMAC-SHA256\n20261124T100000Z\n"));
});

function withHeader(r: SigV4Request, name: string, value: string): SigV4Request {
  const headers = new Headers(r.headers);
  headers.set(name, value);
  return { ...r, headers };
}

Deno.test("SigV4Verifier accepts any wire encoding of the signed path and query", async () => {
  const verifier = new SigV4Verifier();
  const request = sdkRequest("GET", keyPath("bkt", "a~b c/é!"), { prefix: "x~y z", marker: "" });
  const signed = wire(await sdkSigner().sign(request, { signingDate }) as SdkRequest);
  assert.equal(signed.path, "/bkt/a~b%20c/%C3%A9%21");
  const variants: SigV4Request[] = [
    { ...signed, path: "/bkt/a%7Eb%20c/%c3%a9!" },
    { ...signed, path: "/bkt/a%7eb c/é%21" },
    { ...signed, query: signed.query.replace("x~y%20z", "x%7Ey%20z") },
    { ...signed, query: signed.query.split("&").reverse().join("&") },
    { ...signed, query: signed.query.replace("marker=", "marker") },
  ];
  for (const variant of variants) {
    await verifier.verify(variant, { nowMs: NOW_MS, lookup });
  }
});

Deno.test("SigV4Verifier accepts URLs the AWS SDK presigned", async () => {
  const verifier = new SigV4Verifier();
  for (const [name, request] of SDK_CASES) {
    const unsigned = { ...request, headers: { ...request.headers } };
    // As the S3 presigner does: it signs UNSIGNED-PAYLOAD and the URL carries no hash.
    unsigned.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD";
    const presigned = await sdkSigner().presign(unsigned, {
      signingDate,
      expiresIn: 3600,
    }) as SdkRequest;
    assert.equal(presigned.headers["x-amz-content-sha256"], undefined);
    const onWire = wire(presigned);
    const verified = await verifier.verify(onWire, { nowMs: NOW_MS + 60_000, lookup });
    assert.equal(verified.kind, "presigned", name);
    assert.equal(verified.payload, "unsigned", name);
    await rejectsWith(
      verifier.verify(onWire, { nowMs: NOW_MS + 3601_000, lookup }),
      "AccessDenied",
      "Request has expired",
    );
    await rejectsWith(
      verifier.verify({ ...onWire, path: onWire.path + "2" }, { nowMs: NOW_MS, lookup }),
      "SignatureDoesNotMatch",
    );
  }
});

Deno.test("SigV4Verifier refuses presigned URLs valid for more than seven days", async () => {
  const verifier = new SigV4Verifier();
  const request = sdkRequest("GET", "/bkt/k", {}, { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" });
  const presigned = await sdkSigner().presign(request, {
    signingDate,
    expiresIn: 604800,
  }) as SdkRequest;
  await verifier.verify(wire(presigned), { nowMs: NOW_MS, lookup });
  for (
    const [expires, message] of [
      ["604801", "less than a week"],
      ["-1", "not negative"],
      ["0", "at least 1 second"],
      ["soon", "number"],
    ]
  ) {
    const request = wire({ ...presigned, query: { ...presigned.query, "X-Amz-Expires": expires } });
    const e = await rejectsWith(
      verifier.verify(request, { nowMs: NOW_MS, lookup }),
      "AuthorizationQueryParametersError",
      message,
    );
    // Out of range is 403 at AWS; a value that is no number is a malformed request (400).
    assert.equal(e.status, expires === "soon" ? 400 : 403, expires);
  }
});

Deno.test("SigV4Verifier refuses requests more than 15 minutes from the server's time", async () => {
  const verifier = new SigV4Verifier();
  const signed = wire(
    await sdkSigner().sign(sdkRequest("GET", "/bkt/k"), { signingDate }) as SdkRequest,
  );
  for (const skew of [-15 * 60_000, 15 * 60_000, 0]) {
    await verifier.verify(signed, { nowMs: NOW_MS + skew, lookup });
  }
  for (const skew of [-15 * 60_000 - 1, 15 * 60_000 + 1, 86400_000]) {
    const error = await rejectsWith(
      verifier.verify(signed, { nowMs: NOW_MS + skew, lookup }),
      "RequestTimeTooSkewed",
    );
    assert.equal(error.status, 403);
    assert.equal(error.details.RequestTime, "20261124T100000Z");
    assert.equal(error.details.MaxAllowedSkewMilliseconds, "900000");
  }
});

Deno.test("SigV4Verifier refuses unknown keys, other regions when pinned, and anonymous requests", async () => {
  const signed = wire(
    await sdkSigner("AKIDUNKNOWN", "x").sign(sdkRequest("GET", "/"), { signingDate }) as SdkRequest,
  );
  const error = await rejectsWith(
    new SigV4Verifier().verify(signed, { nowMs: NOW_MS, lookup }),
    "InvalidAccessKeyId",
  );
  assert.equal(error.details.AWSAccessKeyId, "AKIDUNKNOWN");

  const west = wire(
    await sdkSigner(AKID, SECRET, "us-west-2").sign(sdkRequest("GET", "/"), {
      signingDate,
    }) as SdkRequest,
  );
  const anyRegion = await new SigV4Verifier().verify(west, { nowMs: NOW_MS, lookup });
  assert.equal(anyRegion.region, "us-west-2");
  await rejectsWith(
    new SigV4Verifier({ region: "us-east-1" }).verify(west, { nowMs: NOW_MS, lookup }),
    "AuthorizationHeaderMalformed",
    "the region 'us-west-2' is wrong; expecting 'us-east-1'",
  );

  const anonymous = {
    method: "GET",
    path: "/bkt/k",
    query: "",
    headers: new Headers({ host: "h" }),
  };
  await rejectsWith(
    new SigV4Verifier().verify(anonymous, { nowMs: NOW_MS, lookup }),
    "AccessDenied",
    "Signature Version 4",
  );
});

Deno.test("parseSigV4() refuses Signature Version 2 by naming Signature Version 4", () => {
  const v2Header = {
    method: "GET",
    path: "/bkt/k",
    query: "",
    headers: new Headers({
      authorization: "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
    }),
  };
  const v2Query = {
    method: "GET",
    path: "/bkt/k",
    query:
      "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
    headers: new Headers(),
  };
  for (const request of [v2Header, v2Query]) {
    assert.throws(
      () => parseSigV4(request),
      (e: S3Error) => e.code === "InvalidRequest" && e.message.includes("AWS4-HMAC-SHA256"),
    );
  }
  const sigv4a = {
    ...v2Header,
    headers: new Headers({ authorization: "AWS4-ECDSA-P256-SHA256 Credential=x" }),
  };
  assert.throws(() => parseSigV4(sigv4a), (e: S3Error) => e.code === "InvalidRequest");
});

Deno.test("parseSigV4() reports what is malformed in an Authorization header", () => {
  const base = {
    host: "h",
    "x-amz-date": "20261124T100000Z",
    "x-amz-content-sha256": EMPTY_SHA256_HEX,
  };
  const good = `Credential=${AKID}/20261124/us-east-1/s3/aws4_request`;
  const sig = "a".repeat(64);
  const cases: Array<[string, string, Record<string, string>?]> = [
    [`AWS4-HMAC-SHA256 ${good}, SignedHeaders=host`, "no Signature"],
    [
      `AWS4-HMAC-SHA256 Credential=${AKID}/20261124/us-east-1/s3, SignedHeaders=host, Signature=${sig}`,
      "not of the form",
    ],
    [
      `AWS4-HMAC-SHA256 Credential=${AKID}/20261124/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=${sig}`,
      "service 'ec2'",
    ],
    [
      `AWS4-HMAC-SHA256 Credential=${AKID}/20261123/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=${sig}`,
      "Invalid credential date",
    ],
    [`AWS4-HMAC-SHA256 ${good}, SignedHeaders=x-amz-date;host, Signature=${sig}`, "sorted"],
    [`AWS4-HMAC-SHA256 ${good}, SignedHeaders=x-amz-date, Signature=${sig}`, "must include host"],
    [`AWS4-HMAC-SHA256 ${good}, SignedHeaders=Host, Signature=${sig}`, "invalid header name"],
    [`AWS4-HMAC-SHA256 ${good}, SignedHeaders=host, Signature=${sig.toUpperCase()}`, "hex"],
    [`AWS4-HMAC-SHA256 ${good}, SignedHeaders=host, Signature=${sig}, Extra=1`, "unknown field"],
    [`AWS4-HMAC-SHA256 ${good}, ${good}, SignedHeaders=host, Signature=${sig}`, "twice"],
  ];
  for (const [authorization, part] of cases) {
    assert.throws(
      () =>
        parseSigV4({
          method: "GET",
          path: "/",
          query: "",
          headers: new Headers({ ...base, authorization }),
        }),
      (e: S3Error) => e.code === "AuthorizationHeaderMalformed" && e.message.includes(part),
      authorization,
    );
  }
  const ok = `AWS4-HMAC-SHA256 ${good}, SignedHeaders=host;x-amz-date, Signature=${sig}`;
  const noDate = { host: "h", "x-amz-content-sha256": EMPTY_SHA256_HEX, authorization: ok };
  assert.throws(
    () => parseSigV4({ method: "GET", path: "/", query: "", headers: new Headers(noDate) }),
    (e: S3Error) => e.code === "AccessDenied" && e.message.includes("x-amz-date"),
  );
  const noHash = { host: "h", "x-amz-date": "20261124T100000Z", authorization: ok };
  assert.throws(
    () => parseSigV4({ method: "GET", path: "/", query: "", headers: new Headers(noHash) }),
    (e: S3Error) => e.code === "InvalidRequest" && e.message.includes("x-amz-content-sha256"),
  );
  // Sent in place of x-amz-date, the Date header dates the request.
  const withDate = { ...noDate, date: "Tue, 24 Nov 2026 10:00:00 GMT" };
  const parsed = parseSigV4({
    method: "GET",
    path: "/",
    query: "",
    headers: new Headers(withDate),
  });
  assert.equal(parsed.amzDate, "20261124T100000Z");
});

Deno.test("parseSigV4() classifies x-amz-content-sha256", () => {
  const headers = (hash: string) =>
    new Headers({
      host: "h",
      "x-amz-date": "20261124T100000Z",
      "x-amz-content-sha256": hash,
      authorization: `AWS4-HMAC-SHA256 Credential=${AKID}/20261124/us-east-1/s3/aws4_request, ` +
        `SignedHeaders=host, Signature=${"0".repeat(64)}`,
    });
  const cases: Array<[string, string]> = [
    ["UNSIGNED-PAYLOAD", "unsigned"],
    [EMPTY_SHA256_HEX, "sha256"],
    [EMPTY_SHA256_HEX.toUpperCase(), "sha256"],
    ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "streaming-signed"],
    ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "streaming-signed-trailer"],
    ["STREAMING-UNSIGNED-PAYLOAD-TRAILER", "streaming-unsigned-trailer"],
  ];
  for (const [hash, payload] of cases) {
    assert.equal(
      parseSigV4({ method: "PUT", path: "/", query: "", headers: headers(hash) }).payload,
      payload,
    );
  }
  for (const bad of ["", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", "abc", "g".repeat(64)]) {
    assert.throws(
      () => parseSigV4({ method: "PUT", path: "/", query: "", headers: headers(bad) }),
      (e: S3Error) => e.code === "InvalidArgument",
      bad,
    );
  }
});

Deno.test("SigV4Verifier keeps at most signingKeysCachedMax signing keys", async () => {
  const verifier = new SigV4Verifier({ signingKeysCachedMax: 2 });
  for (const id of ["A1", "A2", "A3", "A1"]) {
    credentials[id] = { secretAccessKey: `secret-${id}`, tenantId: id };
    const signed = await sdkSigner(id, `secret-${id}`).sign(sdkRequest("GET", "/"), {
      signingDate,
    });
    await verifier.verify(wire(signed as SdkRequest), { nowMs: NOW_MS, lookup });
    assert.ok(verifier.signingKeysCached <= 2);
  }
  assert.equal(verifier.signingKeysCached, 2);
  assert.throws(() => new SigV4Verifier({ signingKeysCachedMax: 0 }));
});

Deno.test("canonicalUri() and canonicalQuery() encode once with S3's rules", () => {
  assert.equal(canonicalUri(""), "/");
  assert.equal(canonicalUri("/b/a b+c"), "/b/a%20b%2Bc");
  assert.equal(canonicalUri("/b/%zz%2"), "/b/%25zz%252");
  assert.equal(canonicalUri("/b/a%2fb"), "/b/a/b");
  assert.equal(canonicalQuery("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
  assert.equal(canonicalQuery("X-Amz-Signature=x&k=v", "X-Amz-Signature"), "k=v");
  assert.equal(canonicalQuery("p=a+b%20c"), "p=a%2Bb%20c");
  assert.equal(uriEncode("a/b~c d", true), "a/b~c%20d");
  assert.equal(uriEncode("a/b"), "a%2Fb");
});

Deno.test("parseAmzDate() and parseHttpDate() accept only real dates", () => {
  assert.equal(parseAmzDate("20130524T000000Z"), EXAMPLE_MS);
  assert.equal(formatAmzDate(EXAMPLE_MS), "20130524T000000Z");
  for (
    const bad of [
      "20130231T000000Z",
      "20131324T000000Z",
      "20130524T240000Z",
      "20130524",
      "2013-05-24T00:00:00Z",
    ]
  ) {
    assert.equal(parseAmzDate(bad), null, bad);
  }
  assert.equal(parseHttpDate("Fri, 24 May 2013 00:00:00 GMT"), EXAMPLE_MS);
  assert.equal(parseHttpDate("Friday, 24-May-13 00:00:00 GMT"), EXAMPLE_MS);
  assert.equal(parseHttpDate("Fri May 24 00:00:00 2013"), EXAMPLE_MS);
  assert.equal(parseHttpDate("Fri, 31 Feb 2013 00:00:00 GMT"), null);
  assert.equal(parseHttpDate("yesterday"), null);
});

Deno.test("signaturesEqual() compares whole signatures", () => {
  const a = "ab".repeat(32);
  assert.ok(signaturesEqual(a, a));
  assert.ok(!signaturesEqual(a, "ab".repeat(31) + "ac"));
  assert.ok(!signaturesEqual(a, a.slice(0, 63)));
});

// --- Requests signed by boto3 (botocore, also under aws-cli), when it is installed ---------

// A boto3 client whose requests are captured just before they would be sent.
const BOTO3_SCRIPT = `
import base64, json, sys
import boto3, botocore
from botocore.config import Config

class Captured(Exception):
    pass

captured = []
def capture(request, **kwargs):
    body = request.body
    if hasattr(body, "read"):
        body = body.read()
    if isinstance(body, str):
        body = body.encode()
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    captured.append({"url": request.url, "method": request.method, "headers": headers,
                     "body": base64.b64encode(body or b"").decode(), "presigned": False})
    raise Captured()

s3 = boto3.client("s3", endpoint_url="http://localhost:9000", region_name="us-east-1",
                  aws_access_key_id="${AKID}", aws_secret_access_key="${SECRET}",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0},
                                signature_version="s3v4"))
s3.meta.events.register("before-send.s3", capture)
# Without signature_version, botocore before 1.31 presigns with Signature Version 2.
default = boto3.client("s3", endpoint_url="http://localhost:9000", region_name="us-east-1",
                       aws_access_key_id="${AKID}", aws_secret_access_key="${SECRET}",
                       config=Config(s3={"addressing_style": "path"}))
keys = json.load(sys.stdin)
for key in keys:
    for call in [
        lambda: s3.put_object(Bucket="bkt", Key=key, Body=b"hello", Metadata={"a": "1  2"}),
        lambda: s3.get_object(Bucket="bkt", Key=key, Range="bytes=0-1"),
        lambda: s3.list_objects_v2(Bucket="bkt", Prefix=key, Delimiter="/"),
        lambda: s3.create_multipart_upload(Bucket="bkt", Key=key),
        lambda: s3.upload_part(Bucket="bkt", Key=key, UploadId="u/1+", PartNumber=2, Body=b"x" * 100),
        lambda: s3.copy_object(Bucket="bkt", Key=key + ".copy", CopySource={"Bucket": "bkt", "Key": key}),
        lambda: s3.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": key}]}),
    ]:
        try:
            call()
        except Captured:
            pass
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": key}, ExpiresIn=900)
    captured.append({"url": url, "method": "GET", "headers": {}, "body": "", "presigned": True})
url = default.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k"})
captured.append({"url": url, "method": "GET", "headers": {}, "body": "", "presigned": True})
print(json.dumps({"version": botocore.__version__, "requests": captured}))
`;

/** Interpreters with boto3 importable: Debian's python3-boto3 first, then any other. */
function boto3Pythons(): string[] {
  const found: string[] = [];
  const versions = new Set<string>();
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      const probe = new Deno.Command(python, {
        args: ["-c", "import boto3, botocore; print(botocore.__version__)"],
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      const version = new TextDecoder().decode(probe.stdout).trim();
      if (probe.success && !versions.has(version)) {
        versions.add(version);
        found.push(python);
      }
    } catch {
      // Not installed here.
    }
  }
  return found;
}

const pythons = boto3Pythons();

Deno.test({
  name: "SigV4Verifier accepts requests and presigned URLs from boto3",
  ignore: missingPart(
    "boto3 (Debian python3-boto3)",
    pythons.length === 0 && "no python3 that imports boto3",
  ),
  async fn() {
    const keys = [
      "plain.txt",
      "dir/a b/c+d.txt",
      "ünï/日本 語~!*'().bin",
      "a//b/../c",
      "100%",
      "a=b&c",
    ];
    for (const python of pythons) {
      const child = new Deno.Command(python, {
        args: ["-c", BOTO3_SCRIPT],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(JSON.stringify(keys)));
      await writer.close();
      const output = await child.output();
      assert.ok(output.success, new TextDecoder().decode(output.stderr));
      const { version, requests } = JSON.parse(new TextDecoder().decode(output.stdout)) as {
        version: string;
        requests: Array<{
          url: string;
          method: string;
          headers: Record<string, string>;
          body: string;
          presigned: boolean;
        }>;
      };
      assert.equal(requests.length, keys.length * 8 + 1, `botocore ${version}`);
      const defaultPresigned = requests.pop()!;
      const verifier = new SigV4Verifier();
      for (const captured of requests) {
        const rest = captured.url.slice("http://localhost:9000".length);
        const q = rest.indexOf("?");
        const headers = new Headers(captured.headers);
        headers.set("host", "localhost:9000");
        const request = {
          method: captured.method,
          path: q < 0 ? rest : rest.slice(0, q),
          query: q < 0 ? "" : rest.slice(q + 1),
          headers,
        };
        const amzDate = captured.presigned
          ? new URLSearchParams(request.query).get("X-Amz-Date")!
          : headers.get("x-amz-date")!;
        const nowMs = parseAmzDate(amzDate)!;
        const what = `botocore ${version}: ${captured.method} ${captured.url}`;
        const verified = await verifier.verify(request, { nowMs, lookup }).catch((e) => {
          throw new Error(`${what}: ${e.message}\n${e.details?.CanonicalRequest}`);
        });
        assert.equal(verified.kind, captured.presigned ? "presigned" : "header", what);
        if (verified.payload === "sha256") {
          const body = Uint8Array.from(atob(captured.body), (c) => c.charCodeAt(0));
          assert.equal(
            verified.payloadSha256Hex,
            createHash("sha256").update(body).digest("hex"),
            what,
          );
        }
        if (captured.headers["x-amz-meta-a"] !== undefined) {
          await rejectsWith(
            verifier.verify(withHeader(request, "x-amz-meta-a", "1 3"), { nowMs, lookup }),
            "SignatureDoesNotMatch",
          );
        }
      }
      // A Signature Version 2 URL is refused with a message that names version 4.
      const rest = defaultPresigned.url.slice("http://localhost:9000".length);
      const query = rest.slice(rest.indexOf("?") + 1);
      if (query.includes("AWSAccessKeyId=")) {
        await rejectsWith(
          verifier.verify({
            method: "GET",
            path: rest.slice(0, rest.indexOf("?")),
            query,
            headers: new Headers({ host: "localhost:9000" }),
          }, { nowMs: NOW_MS, lookup }),
          "InvalidRequest",
          "AWS4-HMAC-SHA256",
        );
      }
    }
  },
});
