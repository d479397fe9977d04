// A bad-input campaign against a running S3 gateway, over raw TCP: malformed request lines
// and headers, SigV4 in headers and presigned URLs (valid, then bent), aws-chunked framing,
// XML bodies, truncated bodies, half-closed and abandoned connections. Every case comes
// from (seed, index) alone, so one failing case is replayed from the two numbers.
//
// What an answer must be: from the gateway (it carries x-amz-request-id), a success or an
// S3 XML error whose code is one AWS defines, and never a 500; from the HTTP layer (a
// request it could not parse), a 4xx without a body or a closed connection. No case may
// leave the connection hanging past its timeout.

import { createHash, createHmac } from "node:crypto";
import { Prng } from "../../mod/base/mod.ts";
import { S3_ERRORS } from "../../mod/s3/mod.ts";

export interface FuzzTarget {
  host: string;
  port: number;
  accessKeyId: string;
  secretAccessKey: string;
  /** An existing bucket of the key's tenant, holding FUZZ_OBJECT_KEY. */
  bucket: string;
  region?: string;
}

export interface FuzzOptions {
  seed: number;
  /** Cases to run at most. */
  cases: number;
  /** Stop starting cases after this long. */
  timeMs: number;
  /** Connections in flight at once. */
  concurrency?: number;
  /** A case that has neither an answer nor a closed connection by then hangs. */
  caseTimeoutMs?: number;
  /** Run only these case indexes (replay). */
  only?: readonly number[];
}

export interface FuzzFailure {
  index: number;
  family: string;
  why: string;
  /** The request's first bytes, escaped. */
  request: string;
  response: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  elapsedMs: number;
  /** Answers by HTTP status ("closed": the server closed without one; "abandoned": no check). */
  byStatus: Record<string, number>;
  byCode: Record<string, number>;
  byFamily: Record<string, number>;
  /** Cases with Expect: 100-continue that were refused, and how many saw 100 first. */
  continueRefused: number;
  continueBeforeRefusal: number;
  /** Milliseconds spent per family (summed over its cases), and the slowest case. */
  msByFamily: Record<string, number>;
  slowest: { index: number; family: string; ms: number } | null;
  failures: FuzzFailure[];
}

/** The object the target bucket holds for reads. */
export const FUZZ_OBJECT_KEY = "fuzz/object.bin";
/** Failures a report keeps in full (the count goes on). */
export const FUZZ_FAILURES_KEPT_MAX = 50;
/**
 * Bytes of a response the campaign reads at most: a listing of 1,000 uploads the campaign
 * made is ~400 KB; nothing it stores or lists comes near this.
 */
const RESPONSE_BYTES_MAX = 8 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export type Ending = "keep" | "half-close" | "close";

export interface FuzzCase {
  family: string;
  /** Written in order. */
  pieces: Uint8Array[];
  ending: Ending;
  /** The request is well-formed HTTP: the gateway must answer it (closing is a failure). */
  mustAnswer: boolean;
  method: string;
  /** Sent with Expect: 100-continue and its body held back until 100 arrives. */
  expectContinue?: Uint8Array;
  /**
   * Two requests on one connection: the first refused (its body unread), the second a
   * valid GET of FUZZ_OBJECT_KEY that must be answered as such unless the first answer
   * closed the connection.
   */
  followUp?: boolean;
}

// ---- signing (independent of the gateway's own code) ----------------------------------------

export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function hmac(key: Uint8Array | string, data: string): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest());
}

function encodeRfc3986(text: string, keepSlash: boolean): string {
  let out = "";
  for (const b of encoder.encode(text)) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function amzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

interface Signed {
  headers: [string, string][];
  signingKey: Uint8Array;
  signature: string;
  date: string;
  scope: string;
}

export class Signer {
  constructor(readonly target: FuzzTarget) {}

  get region(): string {
    return this.target.region ?? "us-east-1";
  }

  key(date: string): Uint8Array {
    const kDate = hmac(`AWS4${this.target.secretAccessKey}`, date.slice(0, 8));
    return hmac(hmac(hmac(kDate, this.region), "s3"), "aws4_request");
  }

  /** Canonical query of name/value pairs already in wire form. */
  static canonicalQuery(query: [string, string][]): string {
    return query
      .map((
        [n, v],
      ) => [
        encodeRfc3986(decodeURIComponentSafe(n), false),
        encodeRfc3986(decodeURIComponentSafe(v), false),
      ])
      .sort((a, b) => a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : a[1]! < b[1]! ? -1 : 1)
      .map(([n, v]) => `${n}=${v}`).join("&");
  }

  /** Header-signed request: returns every header to send (host and x-amz-* included). */
  sign(
    method: string,
    path: string,
    query: [string, string][],
    headers: [string, string][],
    payloadHash: string,
    nowMs: number,
  ): Signed {
    const date = amzDate(nowMs);
    // Header names and values HTTP accepts: these cases test S3 parsing, not HTTP's.
    const all: [string, string][] = [
      ["host", `${this.target.host}:${this.target.port}`],
      ["x-amz-date", date],
      ["x-amz-content-sha256", payloadHash],
      ...headers.map(([n, v]): [string, string] => [
        n.replace(/[^!#$%&'*+\-.^_`|~0-9A-Za-z]/g, "_"),
        Gen.safe(v),
      ]),
    ];
    const signedNames = [...new Set(all.map(([n]) => n.toLowerCase()))].sort();
    const canonicalHeaders = signedNames.map((n) =>
      `${n}:${all.filter(([m]) => m.toLowerCase() === n).map(([, v]) => v.trim()).join(",")}\n`
    ).join("");
    const canonical = [
      method,
      encodeRfc3986(decodeURIComponentSafe(path), true),
      Signer.canonicalQuery(query),
      canonicalHeaders,
      signedNames.join(";"),
      payloadHash,
    ].join("\n");
    const scope = `${date.slice(0, 8)}/${this.region}/s3/aws4_request`;
    const toSign = `AWS4-HMAC-SHA256\n${date}\n${scope}\n${sha256Hex(canonical)}`;
    const signingKey = this.key(date);
    const signature = Buffer.from(hmac(signingKey, toSign)).toString("hex");
    all.push([
      "authorization",
      `AWS4-HMAC-SHA256 Credential=${this.target.accessKeyId}/${scope}, ` +
      `SignedHeaders=${signedNames.join(";")}, Signature=${signature}`,
    ]);
    return { headers: all, signingKey, signature, date, scope };
  }

  /** Presigned query parameters for `method path`, signing only host. */
  presign(
    method: string,
    path: string,
    query: [string, string][],
    expires: string,
    nowMs: number,
  ): [string, string][] {
    const date = amzDate(nowMs);
    const scope = `${date.slice(0, 8)}/${this.region}/s3/aws4_request`;
    const params: [string, string][] = [
      ...query,
      ["X-Amz-Algorithm", "AWS4-HMAC-SHA256"],
      ["X-Amz-Credential", `${this.target.accessKeyId}/${scope}`],
      ["X-Amz-Date", date],
      ["X-Amz-Expires", expires],
      ["X-Amz-SignedHeaders", "host"],
    ];
    const canonical = [
      method,
      encodeRfc3986(decodeURIComponentSafe(path), true),
      Signer.canonicalQuery(
        params.map(([n, v]) => [encodeRfc3986(n, false), encodeRfc3986(v, false)]),
      ),
      `host:${this.target.host}:${this.target.port}\n`,
      "host",
      "UNSIGNED-PAYLOAD",
    ].join("\n");
    const toSign = `AWS4-HMAC-SHA256\n${date}\n${scope}\n${sha256Hex(canonical)}`;
    const signature = Buffer.from(hmac(this.key(date), toSign)).toString("hex");
    params.push(["X-Amz-Signature", signature]);
    return params;
  }
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

import { Buffer } from "node:buffer";

// ---- case generation -----------------------------------------------------------------------

const METHODS = ["GET", "PUT", "POST", "DELETE", "HEAD"];
const JUNK_METHODS = [
  "get",
  "PATCH",
  "OPTIONS",
  "TRACE",
  "CONNECT",
  "G\u0000T",
  "PUTX",
  "",
  "M".repeat(300),
];

class Gen {
  constructor(readonly r: Prng, readonly t: FuzzTarget, readonly signer: Signer) {}

  int(n: number): number {
    return this.r.nextInt(n);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.r.nextFloat() < p;
  }
  bytes(n: number): Uint8Array {
    return this.r.bytes(n);
  }
  /** Printable or not, short or long: what a hostile client puts in a field. */
  junk(): string {
    switch (this.int(8)) {
      case 0:
        return "";
      case 1:
        return "x".repeat(1 + this.int(20_000));
      case 2:
        return String.fromCharCode(...this.bytes(1 + this.int(40)).map((b) => b & 0x7f));
      case 3:
        return "%" + this.pick(["", "G", "zz", "00", "ff", "c3%28", "%", "2F..%2F"]);
      case 4:
        return this.pick(["-1", "0", "1e9", "99999999999999999999", "NaN", "0x10", " 5", "5 "]);
      case 5:
        return "\u00e9\u4e2d\ud83d\ude00";
      case 6:
        return "../".repeat(1 + this.int(10)) + "etc/passwd";
      default:
        return this.pick(["true", "null", "*", ",", ";", "=", "&", "?", "#", "\\"]);
    }
  }

  host(): string {
    return `${this.t.host}:${this.t.port}`;
  }

  path(): string {
    switch (this.int(10)) {
      case 0:
        return "/";
      case 1:
        return `/${this.t.bucket}`;
      case 2:
        return `/${this.t.bucket}/${FUZZ_OBJECT_KEY}`;
      case 3:
        return `/${this.t.bucket}/${encodeRfc3986(this.junk().slice(0, 1500), true)}`;
      case 4:
        return `/${encodeRfc3986(this.junk().slice(0, 80), false)}`;
      case 5:
        return `/${this.t.bucket}/k${this.int(1000)}`;
      case 6:
        return `/no-such-bucket-${this.int(100)}/k`;
      case 7:
        return `/${this.t.bucket}/${"a/".repeat(this.int(600))}`;
      default:
        return `/${this.t.bucket}/fuzz/k${this.int(50)}`;
    }
  }

  query(): [string, string][] {
    const names = [
      "max-keys",
      "prefix",
      "delimiter",
      "continuation-token",
      "start-after",
      "encoding-type",
      "list-type",
      "uploads",
      "uploadId",
      "partNumber",
      "delete",
      "versioning",
      "location",
      "acl",
      "tagging",
      "marker",
      "key-marker",
      "upload-id-marker",
      "max-parts",
      "part-number-marker",
      "max-uploads",
      "fetch-owner",
      "response-content-type",
      "versionId",
      "x-id",
      "X-Amz-Expires",
    ];
    const out: [string, string][] = [];
    for (let i = this.int(4); i > 0; i--) {
      const value = this.chance(0.5)
        ? this.junk().slice(0, 200)
        : this.pick(["", "1", "2", "url", "0"]);
      out.push([this.pick(names), encodeRfc3986(value, false)]);
    }
    return out;
  }

  /** A header value HTTP allows (visible ASCII and spaces): the signed families send these. */
  static safe(text: string): string {
    return text.replace(/[^\x20-\x7e]/g, "?");
  }

  wire(
    method: string,
    path: string,
    query: [string, string][],
    headers: [string, string][],
    body?: Uint8Array,
  ): Uint8Array {
    const q = query.length === 0
      ? ""
      : "?" + query.map(([n, v]) => v === "" && this.chance(0.3) ? n : `${n}=${v}`).join("&");
    const head = `${method} ${path}${q} HTTP/1.1\r\n` +
      headers.map(([n, v]) => `${n}: ${v}\r\n`).join("") + "\r\n";
    const h = encoder.encode(head);
    if (body === undefined || body.length === 0) return h;
    const out = new Uint8Array(h.length + body.length);
    out.set(h);
    out.set(body, h.length);
    return out;
  }

  nowMs(): number {
    // Mostly now; sometimes far off (RequestTimeTooSkewed) or in another day's scope.
    return Date.now() +
      (this.chance(0.05) ? this.pick([-1, 1]) * (16 + this.int(10_000)) * 60_000 : 0);
  }

  /** One case of the family chosen for this index. */
  make(): FuzzCase {
    const families: Array<[string, () => FuzzCase]> = [
      ["request-line", () => this.requestLine()],
      ["headers", () => this.badHeaders()],
      ["sigv4-header", () => this.sigv4Header()],
      ["sigv4-presigned", () => this.presigned()],
      ["aws-chunked", () => this.awsChunked()],
      ["xml", () => this.xml()],
      ["truncated-body", () => this.truncated()],
      ["half-closed", () => this.halfClosed()],
      ["expect-continue", () => this.expectContinue()],
      ["unsupported-headers", () => this.unsupported()],
      ["keep-alive", () => this.keepAlive()],
    ];
    const [family, make] = this.pick(families);
    const c = make();
    c.family = family;
    return c;
  }

  requestLine(): FuzzCase {
    const lines = [
      () => `${this.pick(JUNK_METHODS)} / HTTP/1.1`,
      () => `GET ${this.junk().slice(0, 9000)} HTTP/1.1`,
      () => `GET / HTTP/${this.pick(["0.9", "1.2", "2.0", "9.9", "1", "x"])}`,
      () => `GET /`,
      () => `GET  /  HTTP/1.1`,
      () => `GET http://${this.host()}/${this.t.bucket} HTTP/1.1`,
      () => `GET /${"a".repeat(20_000 + this.int(60_000))} HTTP/1.1`,
      () => String.fromCharCode(...this.bytes(1 + this.int(200))),
      () => `${this.pick(METHODS)} /?${"&".repeat(this.int(3000))} HTTP/1.1`,
      () =>
        `GET /?${
          Array.from({ length: 70 + this.int(200) }, (_, i) => `p${i}=v`).join("&")
        } HTTP/1.1`,
    ];
    const line = this.pick(lines)();
    return {
      family: "",
      pieces: [encoder.encode(`${line}\r\nHost: ${this.host()}\r\n\r\n`)],
      ending: this.pick<Ending>(["keep", "half-close"]),
      mustAnswer: false,
      method: line.split(" ")[0] ?? "",
    };
  }

  badHeaders(): FuzzCase {
    const method = this.pick(METHODS);
    const headers: [string, string][] = [["Host", this.host()]];
    const variants = [
      () => headers.push(["Content-Length", this.junk().slice(0, 30)]),
      () => headers.push(["Content-Length", "5"], ["Content-Length", "7"]),
      () => headers.push(["Transfer-Encoding", "chunked"], ["Content-Length", "3"]),
      () =>
        headers.push([
          "Transfer-Encoding",
          this.pick(["gzip", "chunked, gzip", "identity", "xchunked"]),
        ]),
      () => headers.splice(0, 1),
      () => headers.push(["Host", "other.example"]),
      () => headers.push([`X-${"h".repeat(this.int(100))}`, "v".repeat(this.int(70_000))]),
      () => {
        for (let i = 0; i < 100 + this.int(300); i++) headers.push([`x-amz-meta-${i}`, "v"]);
      },
      () => headers.push(["Bad Header", "x"]),
      () => headers.push(["x-amz-date", this.junk().slice(0, 50)]),
      () => headers.push(["Authorization", this.junk().slice(0, 5000)]),
      () => headers.push(["Authorization", `AWS4-HMAC-SHA256 ${this.junk().slice(0, 300)}`]),
      () => headers.push(["Authorization", "AWS AKIA:abc"]),
      () =>
        headers.push([
          "Range",
          this.pick([
            "bytes=",
            "bytes=5-1",
            "bytes=-",
            "bytes=0-0,1-1",
            "lines=1-2",
            `bytes=${this.junk().slice(0, 30)}`,
          ]),
        ]),
      () =>
        headers.push(["Expect", this.pick(["100-continue", "200-ok", ""])], [
          "Content-Length",
          "10",
        ]),
    ];
    this.pick(variants)();
    let body: Uint8Array | undefined;
    const te = headers.find(([n]) => n === "Transfer-Encoding");
    if (te !== undefined) {
      body = encoder.encode(
        this.pick(["3\r\nabc\r\n0\r\n\r\n", "zz\r\nabc\r\n", "5\r\nab", "0\r\n\r\n"]),
      );
    }
    return {
      family: "",
      pieces: [this.wire(method, this.path(), this.query(), headers, body)],
      ending: "half-close",
      mustAnswer: false,
      method,
    };
  }

  /** A request signed in its header, then (mostly) bent in one place. */
  sigv4Header(): FuzzCase {
    const method = this.pick(METHODS);
    const path = this.path();
    const query = this.query();
    const body = method === "PUT" || method === "POST"
      ? this.bytes(this.int(3000))
      : new Uint8Array(0);
    const extra: [string, string][] = [];
    if (body.length > 0 || method === "PUT") extra.push(["content-length", String(body.length)]);
    if (this.chance(0.2)) {
      extra.push(["content-md5", this.pick(["", "abc", "1B2M2Y8AsgTpgAmY7PhCfg=="])]);
    }
    if (this.chance(0.2)) extra.push(["x-amz-checksum-crc32", this.pick(["", "AAAAAA==", "zz"])]);
    if (this.chance(0.1)) {
      extra.push([
        "x-amz-copy-source",
        this.pick([`/${this.t.bucket}/${FUZZ_OBJECT_KEY}`, this.junk().slice(0, 300), "/"]),
      ]);
    }
    if (this.chance(0.1)) extra.push(["if-none-match", this.pick(["*", '"abc"', ""])]);
    if (this.chance(0.1)) {
      extra.push([
        "x-amz-meta-" + this.pick(["a", "", "\u00e9", "x".repeat(3000)]),
        this.junk().slice(0, 3000),
      ]);
    }
    const payloadHash = this.chance(0.7)
      ? sha256Hex(body)
      : this.pick(["UNSIGNED-PAYLOAD", sha256Hex("other"), "zz", ""]);
    const signed = this.signer.sign(
      method,
      path.split("?")[0]!,
      query,
      extra,
      payloadHash,
      this.nowMs(),
    );
    const headers = signed.headers;
    const auth = headers.findIndex(([n]) => n === "authorization");
    const mutations = [
      () => {}, // valid
      () => {}, // valid
      () => {
        headers[auth]![1] = headers[auth]![1].replace(
          /Signature=([0-9a-f])/,
          (_, c) => `Signature=${c === "0" ? "1" : "0"}`,
        );
      },
      () => {
        headers[auth]![1] = headers[auth]![1].replace(
          /Credential=[A-Z0-9]+/,
          "Credential=AKIANOTAKEY0000000000",
        );
      },
      () => {
        headers[auth]![1] = headers[auth]![1].replace(
          /\/s3\//,
          "/" + this.pick(["ec2", "", "s3 "]) + "/",
        );
      },
      () => {
        headers[auth]![1] = headers[auth]![1].replace("SignedHeaders=", "SignedHeaders=zzz;");
      },
      () => {
        headers[auth]![1] = headers[auth]![1].replace(/SignedHeaders=[^,]*/, "SignedHeaders=");
      },
      () => {
        headers[auth]![1] = headers[auth]![1].replace(", ", this.pick([",", " ", ",,", ", , "]));
      },
      () => {
        headers[auth]![1] = headers[auth]![1].slice(0, this.int(headers[auth]![1].length));
      },
      () => {
        headers[auth]![1] += this.pick([", Signature=00", ",Extra=1", "\t"]);
      },
      () => {
        headers.splice(headers.findIndex(([n]) => n === "x-amz-date"), 1);
      },
      () => {
        headers.splice(headers.findIndex(([n]) => n === "x-amz-content-sha256"), 1);
      },
      () => {
        headers.find(([n]) => n === "x-amz-date")![1] = Gen.safe(this.junk().slice(0, 40));
      },
      () => {
        headers.push(["x-amz-date", amzDate(Date.now() - 3600_000)]);
      },
      () => {
        headers.splice(auth, 1);
      }, // anonymous
      () => {
        headers.push(["authorization", headers[auth]![1]]);
      },
    ];
    this.pick(mutations)();
    const ending = this.pick<Ending>(["keep", "keep", "half-close"]);
    return {
      family: "",
      pieces: this.split(this.wire(method, path, query, headers, body)),
      ending,
      // The HTTP server does not keep a connection half-closed after a whole request (it
      // may close before answering); a body cut short by the half-close is answered.
      mustAnswer: ending === "keep",
      method,
    };
  }

  /** Splits a request at random points, so reads see it in pieces. */
  split(wire: Uint8Array): Uint8Array[] {
    if (!this.chance(0.2) || wire.length < 2) return [wire];
    const at = 1 + this.int(wire.length - 1);
    return [wire.subarray(0, at), wire.subarray(at)];
  }

  presigned(): FuzzCase {
    const method = this.pick(["GET", "HEAD", "PUT", "DELETE"]);
    const path = this.chance(0.5) ? `/${this.t.bucket}/${FUZZ_OBJECT_KEY}` : this.path();
    const expires = this.pick([
      "60",
      "1",
      "604800",
      "0",
      "-1",
      "604801",
      "abc",
      "",
      "1e3",
      "99999999999999999999",
    ]);
    const params = this.signer.presign(
      method,
      path,
      this.chance(0.2) ? this.query() : [],
      expires,
      this.nowMs(),
    );
    const mutations = [
      () => {},
      () => {
        params.find(([n]) => n === "X-Amz-Signature")![1] = "0".repeat(64);
      },
      () => {
        params.splice(this.int(params.length), 1);
      },
      () => {
        params.push(this.pick(params));
      },
      () => {
        params.find(([n]) => n === "X-Amz-Date")![1] = this.junk().slice(0, 30);
      },
      () => {
        params.find(([n]) => n === "X-Amz-Credential")![1] = this.junk().slice(0, 200);
      },
      () => {
        params.find(([n]) => n === "X-Amz-SignedHeaders")![1] = this.pick([
          "",
          "host;x-amz-date",
          "HOST",
          ";",
        ]);
      },
      () => {
        params.find(([n]) => n === "X-Amz-Algorithm")![1] = this.pick([
          "AWS4-HMAC-SHA1",
          "",
          "aws4-hmac-sha256",
        ]);
      },
    ];
    this.pick(mutations)();
    const query: [string, string][] = params.map((
      [n, v],
    ) => [encodeRfc3986(n, false), encodeRfc3986(v, false)]);
    const body = method === "PUT" ? this.bytes(this.int(2000)) : undefined;
    const headers: [string, string][] = [["Host", this.host()]];
    if (body !== undefined) headers.push(["Content-Length", String(body.length)]);
    if (this.chance(0.1)) headers.push(["Authorization", "AWS4-HMAC-SHA256 Credential=x"]);
    return {
      family: "",
      pieces: [this.wire(method, path, query, headers, body)],
      ending: "keep",
      mustAnswer: true,
      method,
    };
  }

  awsChunked(): FuzzCase {
    const payload = this.bytes(this.int(5000));
    const unsigned = this.chance(0.3);
    const mode = unsigned
      ? "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
      : "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    const cut = Math.min(payload.length, this.int(4096) + 1);
    const chunks = payload.length === 0
      ? []
      : [payload.subarray(0, cut), payload.subarray(cut)].filter((c) => c.length > 0);
    // Content-Length is the framed length: framing is built first with placeholder signatures.
    const decodedLength = this.chance(0.85) ? String(payload.length) : this.junk().slice(0, 20);
    const extra: [string, string][] = [
      ["content-encoding", "aws-chunked"],
      ["x-amz-decoded-content-length", decodedLength],
    ];
    if (unsigned) {
      extra.push(["x-amz-trailer", this.pick(["x-amz-checksum-crc32", "x-amz-checksum-zzz", ""])]);
    }
    const frame = (sigs: string[]): Uint8Array => {
      let text = "";
      const parts: Uint8Array[] = [];
      const all = [...chunks, new Uint8Array(0)];
      all.forEach((c, i) => {
        const size = c.length.toString(16);
        text = unsigned
          ? `${size}\r\n`
          : `${size};chunk-signature=${sigs[i] ?? "0".repeat(64)}\r\n`;
        parts.push(
          encoder.encode(text),
          c,
          encoder.encode(i === all.length - 1 && unsigned ? "" : "\r\n"),
        );
      });
      if (unsigned) {
        const crc = Buffer.from(new Uint8Array(4)).toString("base64");
        parts.push(
          encoder.encode(
            this.pick([`x-amz-checksum-crc32:${crc}\r\n\r\n`, "\r\n", "garbage\r\n\r\n", ""]),
          ),
        );
      }
      const total = parts.reduce((n, p) => n + p.length, 0);
      const out = new Uint8Array(total);
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    };
    const draft = frame([]);
    const path = this.chance(0.8) ? `/${this.t.bucket}/fuzz/chunked${this.int(20)}` : this.path();
    const signed = this.signer.sign(
      "PUT",
      path,
      [],
      [["content-length", String(draft.length)], ...extra],
      mode,
      this.nowMs(),
    );
    let previous = signed.signature;
    const sigs: string[] = [];
    for (const c of [...chunks, new Uint8Array(0)]) {
      const s = Buffer.from(
        hmac(
          signed.signingKey,
          `AWS4-HMAC-SHA256-PAYLOAD\n${signed.date}\n${signed.scope}\n${previous}\n${
            sha256Hex("")
          }\n${sha256Hex(c)}`,
        ),
      ).toString("hex");
      sigs.push(s);
      previous = s;
    }
    let body = frame(sigs);
    const mutations = [
      () => {},
      () => {},
      () => {
        body = body.subarray(0, this.int(body.length));
      },
      () => {
        body = Uint8Array.from(body);
        body[this.int(body.length)] ^= 1 << this.int(8);
      },
      () => {
        body = encoder.encode(
          this.pick([
            "zz\r\n",
            "-1;chunk-signature=00\r\n",
            "ffffffffff;chunk-signature=00\r\n",
            "5\r\nabc",
            "0\r\n",
            "1;chunk-signature=\r\nx\r\n0;chunk-signature=\r\n\r\n",
          ]),
        );
      },
      () => {
        const extraBytes = this.bytes(1 + this.int(100));
        const b = new Uint8Array(body.length + extraBytes.length);
        b.set(body);
        b.set(extraBytes, body.length);
        body = b;
      },
    ];
    this.pick(mutations)();
    // Content-Length follows what is sent unless this case lies about it (then half-close).
    const headers = signed.headers.map(([n, v]): [string, string] =>
      n === "content-length" ? [n, String(body.length)] : [n, v]
    );
    const lie = this.chance(0.1);
    if (lie) {
      headers.find(([n]) => n === "content-length")![1] = String(body.length + 1 + this.int(100));
    }
    const wire = this.wire("PUT", path, [], headers, body);
    return {
      family: "",
      pieces: this.split(wire),
      ending: lie ? "half-close" : "keep",
      mustAnswer: true,
      method: "PUT",
    };
  }

  xml(): FuzzCase {
    const docs = [
      () =>
        `<Delete><Object><Key>a</Key></Object>${
          "<Object><Key>k</Key></Object>".repeat(this.int(1200))
        }</Delete>`,
      () =>
        `<Delete><Quiet>${this.junk().slice(0, 20)}</Quiet><Object><Key>${
          this.junk().slice(0, 2000)
        }</Key></Object></Delete>`,
      () =>
        `<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><Delete><Object><Key>&c;</Key></Object></Delete>`,
      () =>
        `<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>`,
      () => "<a>".repeat(1 + this.int(5000)) + "</a>".repeat(this.int(5000)),
      () =>
        `<CompleteMultipartUpload>${
          Array.from({ length: this.int(30) }, () =>
            `<Part><PartNumber>${this.junk().slice(0, 12)}</PartNumber><ETag>${
              this.junk().slice(0, 40)
            }</ETag></Part>`).join("")
        }</CompleteMultipartUpload>`,
      () =>
        `<CreateBucketConfiguration><LocationConstraint>${
          this.junk().slice(0, 100)
        }</LocationConstraint></CreateBucketConfiguration>`,
      () => String.fromCharCode(...this.bytes(this.int(3000))),
      () => `<Delete><Object><Key>a</Key></Object>`,
      () => "",
    ];
    const doc = encoder.encode(this.pick(docs)());
    const targets: Array<[string, string, [string, string][]]> = [
      ["POST", `/${this.t.bucket}`, [["delete", ""]]],
      ["POST", `/${this.t.bucket}/fuzz/mpu`, [[
        "uploadId",
        encodeRfc3986(this.junk().slice(0, 60), false),
      ]]],
      ["PUT", `/fuzz-bucket-${this.int(5)}`, []],
      ["POST", `/${this.t.bucket}/fuzz/mpu`, [["uploads", ""]]],
    ];
    const [method, path, query] = this.pick(targets);
    const extra: [string, string][] = [["content-length", String(doc.length)]];
    if (this.chance(0.7)) {
      extra.push(["content-md5", createHash("md5").update(doc).digest("base64")]);
    }
    const signed = this.signer.sign(method, path, query, extra, sha256Hex(doc), Date.now());
    return {
      family: "",
      pieces: this.split(this.wire(method, path, query, signed.headers, doc)),
      ending: "keep",
      mustAnswer: true,
      method,
    };
  }

  truncated(): FuzzCase {
    const size = 1 + this.int(this.chance(0.2) ? 3 << 20 : 20_000);
    const sent = this.int(size);
    const body = this.bytes(sent);
    const path = `/${this.t.bucket}/fuzz/trunc${this.int(20)}`;
    const payload = this.pick(["UNSIGNED-PAYLOAD", sha256Hex("x".repeat(size))]);
    const signed = this.signer.sign(
      "PUT",
      path,
      [],
      [["content-length", String(size)]],
      payload,
      Date.now(),
    );
    const ending = this.pick<Ending>(["half-close", "half-close", "close"]);
    return {
      family: "",
      pieces: [this.wire("PUT", path, [], signed.headers, body)],
      ending,
      mustAnswer: ending === "half-close",
      method: "PUT",
    };
  }

  halfClosed(): FuzzCase {
    const full = this.wire("GET", `/${this.t.bucket}`, [], [["Host", this.host()], [
      "X-Long",
      "v".repeat(100),
    ]]);
    return {
      family: "",
      pieces: [full.subarray(0, this.int(full.length))],
      ending: this.pick<Ending>(["half-close", "close"]),
      mustAnswer: false,
      method: "GET",
    };
  }

  /** Unsigned or wrongly signed uploads that wait for 100 Continue before their body. */
  expectContinue(): FuzzCase {
    const size = 1 + this.int(1 << 20);
    const path = `/${this.t.bucket}/fuzz/expect${this.int(10)}`;
    let headers: [string, string][];
    if (this.chance(0.5)) {
      headers = [["Host", this.host()], ["Content-Length", String(size)]];
    } else {
      const signed = this.signer.sign(
        "PUT",
        path,
        [],
        [["content-length", String(size)]],
        "UNSIGNED-PAYLOAD",
        Date.now(),
      );
      headers = signed.headers.map(([n, v]): [string, string] =>
        n === "authorization" ? [n, v.replace(/Signature=[0-9a-f]{4}/, "Signature=0000")] : [n, v]
      );
    }
    headers.push(["Expect", "100-continue"]);
    return {
      family: "",
      pieces: [this.wire("PUT", path, [], headers)],
      ending: "keep",
      mustAnswer: true,
      method: "PUT",
      expectContinue: this.bytes(Math.min(size, 64 * 1024)),
    };
  }

  /**
   * A refused upload whose body the gateway does not read (wrong signature, SSE-C, no
   * such bucket), then a valid GET on the same connection: the leftover body must not be
   * read as the next request.
   */
  keepAlive(): FuzzCase {
    const body = this.bytes(this.int(this.chance(0.2) ? 300_000 : 5000));
    const path = this.pick([`/${this.t.bucket}/fuzz/ka`, `/no-such-bucket-${this.int(9)}/k`]);
    const extra: [string, string][] = [["content-length", String(body.length)]];
    if (this.chance(0.3)) extra.push(["x-amz-server-side-encryption-customer-algorithm", "AES256"]);
    const first = this.signer.sign("PUT", path, [], extra, "UNSIGNED-PAYLOAD", Date.now());
    if (this.chance(0.5)) {
      const auth = first.headers.find(([n]) => n === "authorization")!;
      auth[1] = auth[1].replace(/Signature=[0-9a-f]{6}/, "Signature=000000");
    }
    const getPath = `/${this.t.bucket}/${FUZZ_OBJECT_KEY}`;
    const second = this.signer.sign("GET", getPath, [], [], sha256Hex(""), Date.now());
    return {
      family: "",
      pieces: [
        this.wire("PUT", path, [], first.headers, body),
        this.wire("GET", getPath, [], second.headers),
      ],
      ending: "keep",
      mustAnswer: true,
      method: "PUT",
      followUp: true,
    };
  }

  /** Signed writes asking for SSE-C, ACLs, tags or Object Lock. */
  unsupported(): FuzzCase {
    const headers: [string, string][] = [this.pick<[string, string]>([
      ["x-amz-server-side-encryption-customer-algorithm", "AES256"],
      ["x-amz-server-side-encryption-customer-key", Buffer.from(this.bytes(32)).toString("base64")],
      [
        "x-amz-acl",
        this.pick(["public-read", "private", "authenticated-read", this.junk().slice(0, 40)]),
      ],
      ["x-amz-grant-read", "id=abc"],
      ["x-amz-tagging", this.pick(["a=b", "", this.junk().slice(0, 100)])],
      ["x-amz-object-lock-mode", "GOVERNANCE"],
      ["x-amz-object-lock-legal-hold", this.pick(["ON", "OFF"])],
    ])];
    const body = this.bytes(this.int(100));
    const path = `/${this.t.bucket}/fuzz/unsupported`;
    const query: [string, string][] = this.chance(0.2) ? [["uploads", ""]] : [];
    const method = query.length > 0 ? "POST" : "PUT";
    const payload = method === "PUT" ? body : new Uint8Array(0);
    const signed = this.signer.sign(
      method,
      path,
      query,
      [["content-length", String(payload.length)], ...headers],
      sha256Hex(payload),
      Date.now(),
    );
    return {
      family: "",
      pieces: [this.wire(method, path, query, signed.headers, payload)],
      ending: "keep",
      mustAnswer: true,
      method,
    };
  }
}

// ---- running a case ------------------------------------------------------------------------

export interface Answer {
  status: number;
  headers: Map<string, string>;
  body: string;
}

export interface Outcome {
  answers: Answer[];
  /** The server closed (or reset) the connection. */
  closed: boolean;
  timedOut: boolean;
  /** Bytes of the request body sent after an interim 100 (expect-continue cases). */
  continued: boolean;
  /** The response ran past RESPONSE_BYTES_MAX. */
  overflow?: boolean;
}

/** Parses complete responses at the start of `buf`; returns them and the bytes used. */
function parseResponses(
  buf: Uint8Array,
  method: string,
): { answers: Answer[]; used: number; partial: boolean } {
  const answers: Answer[] = [];
  let at = 0;
  while (at < buf.length) {
    const text = decoder.decode(buf.subarray(at, Math.min(buf.length, at + 65536)));
    const end = text.indexOf("\r\n\r\n");
    if (end < 0) return { answers, used: at, partial: true };
    const headBytes = encoder.encode(text.slice(0, end + 4)).length;
    const lines = text.slice(0, end).split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!);
    if (m === null) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0])}`);
    const status = Number(m[1]);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const i = line.indexOf(":");
      if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
    let bodyStart = at + headBytes;
    let body = "";
    if (status >= 100 && status < 200) {
      answers.push({ status, headers, body });
      at = bodyStart;
      continue;
    }
    if (method !== "HEAD" && status !== 204 && status !== 304) {
      if (headers.get("transfer-encoding")?.toLowerCase().includes("chunked")) {
        let p = bodyStart;
        const parts: string[] = [];
        while (true) {
          const rest = decoder.decode(buf.subarray(p, Math.min(buf.length, p + 32)));
          const nl = rest.indexOf("\r\n");
          if (nl < 0) return { answers, used: at, partial: true };
          const size = parseInt(rest.slice(0, nl), 16);
          p += nl + 2;
          if (size === 0) {
            if (buf.length < p + 2) return { answers, used: at, partial: true };
            p += 2;
            break;
          }
          if (buf.length < p + size + 2) return { answers, used: at, partial: true };
          parts.push(decoder.decode(buf.subarray(p, p + size)));
          p += size + 2;
        }
        body = parts.join("");
        bodyStart = p;
      } else {
        const length = Number(headers.get("content-length") ?? "0");
        if (buf.length < bodyStart + length) return { answers, used: at, partial: true };
        body = decoder.decode(buf.subarray(bodyStart, bodyStart + length));
        bodyStart += length;
      }
    }
    answers.push({ status, headers, body });
    at = bodyStart;
    return { answers, used: at, partial: false };
  }
  return { answers, used: at, partial: false };
}

async function runCase(target: FuzzTarget, c: FuzzCase, timeoutMs: number): Promise<Outcome> {
  const conn = await Deno.connect({ hostname: target.host, port: target.port });
  const outcome: Outcome = { answers: [], closed: false, timedOut: false, continued: false };
  let buf = new Uint8Array(0);
  let settle: () => void = () => {};
  const done = new Promise<void>((r) => (settle = r));
  const timer = setTimeout(() => {
    outcome.timedOut = true;
    settle();
  }, timeoutMs);
  let final = false;
  let sawContinue = false;
  const reading = (async () => {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (!final) {
        const n = await conn.read(chunk);
        if (n === null) {
          if (!outcome.timedOut) outcome.closed = true; // not by our own close after a timeout
          break;
        }
        if (buf.length + n > RESPONSE_BYTES_MAX) {
          outcome.overflow = true;
          break;
        }
        const next = new Uint8Array(buf.length + n);
        next.set(buf);
        next.set(chunk.subarray(0, n), buf.length);
        buf = next;
        // Every complete answer in the buffer (pipelined answers may arrive in one read).
        while (!final) {
          const parsed = parseResponses(buf, c.method);
          if (parsed.answers.length === 0) break;
          for (const a of parsed.answers) {
            if (a.status === 100) {
              if (!sawContinue && c.expectContinue !== undefined) {
                sawContinue = true;
                outcome.continued = true;
                conn.write(c.expectContinue).catch(() => {});
              }
              continue;
            }
            outcome.answers.push(a);
            final = outcome.answers.length >= (c.followUp ? 2 : 1) ||
              a.headers.get("connection")?.toLowerCase() === "close";
          }
          buf = buf.slice(parsed.used);
        }
      }
    } catch {
      if (!outcome.timedOut) outcome.closed = true; // not by our own close after a timeout
    } finally {
      settle();
    }
  })();
  try {
    for (const piece of c.pieces) {
      await conn.write(piece);
    }
    if (c.ending === "half-close") await conn.closeWrite();
    if (c.ending === "close") {
      conn.close();
      clearTimeout(timer);
      await reading.catch(() => {});
      return outcome;
    }
  } catch {
    // The server may answer and close before the request was written in full.
  }
  await done;
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* closed */ }
  await reading.catch(() => {});
  return outcome;
}

function escape(bytes: Uint8Array, max = 400): string {
  return JSON.stringify(decoder.decode(bytes.subarray(0, max)));
}

/**
 * Codes the gateway answers with another status than their usual one, where AWS does so too
 * (S3ErrorOptions.status), and the message that marks that case.
 */
const OTHER_STATUSES: Readonly<Record<string, { status: number; message: RegExp }>> = {
  // An X-Amz-Expires out of range is refused 403, not 400 (mod/s3/sigv4.ts).
  AuthorizationQueryParametersError: { status: 403, message: /X-Amz-Expires must be/ },
};

/** Why an outcome is wrong, or null when it is a protocol-shaped answer. */
export function judge(c: FuzzCase, o: Outcome): string | null {
  if (c.ending === "close") return null;
  if (o.overflow) return `a response longer than ${RESPONSE_BYTES_MAX} bytes`;
  if (o.timedOut && o.answers.length === 0) {
    return o.closed ? null : "no answer and the connection still open (hang)";
  }
  if (o.answers.length === 0) {
    return c.mustAnswer ? "connection closed without an answer to a well-formed request" : null;
  }
  const a = o.answers[0]!;
  if (c.followUp) {
    // HTTP lets a server close after any answer (the HTTP server does when a body was left
    // unread); what it must never do is read the leftover body as the next request.
    const second = o.answers[1];
    const closedFirst = a.headers.get("connection")?.toLowerCase() === "close";
    if (second === undefined && !o.closed && !closedFirst) {
      return "no answer to the request after a refused one, and the connection still open (hang)";
    }
    const getAnswer = second === undefined ||
      // (other cases overwrite and delete the object: any version of it, or its absence)
      (second.status === 200 && second.headers.has("etag")) ||
      (second.status === 404 && second.body.includes(`<Key>${FUZZ_OBJECT_KEY}</Key>`));
    if (!getAnswer) {
      return `the request after a refused one got ${second!.status}: ${second!.body.slice(0, 200)}`;
    }
  }
  const fromGateway = a.headers.has("x-amz-request-id");
  if (a.status === 500) return `500 answered: ${a.body.slice(0, 300)}`;
  // 501 NotImplemented, 503 SlowDown and 507 InsufficientStorage (a full pool) are answers.
  if (a.status >= 500 && a.status !== 501 && a.status !== 503 && a.status !== 507) {
    return `${a.status} answered`;
  }
  if (!fromGateway) {
    // The HTTP layer refused what it could not parse: a 4xx without a body.
    if (a.status < 400 || a.status >= 500) return `${a.status} without x-amz-request-id`;
    if (c.mustAnswer && a.status !== 431 && a.status !== 414 && a.status !== 413) {
      return `a well-formed request answered ${a.status} by the HTTP layer`;
    }
    return null;
  }
  if (a.status >= 300 && c.method !== "HEAD" && a.status !== 304) {
    const code = /<Error><Code>([A-Za-z0-9]+)<\/Code>/.exec(a.body)?.[1];
    if (code === undefined) return `${a.status} without an S3 XML error: ${a.body.slice(0, 200)}`;
    if (!(code in S3_ERRORS)) return `unknown S3 error code ${code}`;
    if (!a.body.startsWith('<?xml version="1.0" encoding="UTF-8"?>')) return "no XML declaration";
    const spec = S3_ERRORS[code as keyof typeof S3_ERRORS];
    const other = OTHER_STATUSES[code];
    const otherStatus = other !== undefined && other.status === a.status &&
      other.message.test(a.body);
    if (spec.status !== a.status && !otherStatus) {
      return `${code} answered with ${a.status}, not ${spec.status}`;
    }
    if (a.status === 503 && !a.headers.has("retry-after")) return "503 without Retry-After";
  }
  return null;
}

function errorCode(a: Answer): string {
  return /<Error><Code>([A-Za-z0-9]+)<\/Code>/.exec(a.body)?.[1] ??
    (a.status < 300 ? "OK" : `http-${a.status}`);
}

/** Runs the campaign; never throws for a bad answer (they are in the report). */
export async function runFuzz(target: FuzzTarget, options: FuzzOptions): Promise<FuzzReport> {
  const started = Date.now();
  const concurrency = options.concurrency ?? 8;
  const caseTimeoutMs = options.caseTimeoutMs ?? 10_000;
  const report: FuzzReport = {
    seed: options.seed,
    cases: 0,
    elapsedMs: 0,
    byStatus: {},
    byCode: {},
    byFamily: {},
    continueRefused: 0,
    continueBeforeRefusal: 0,
    msByFamily: {},
    slowest: null,
    failures: [],
  };
  const signer = new Signer(target);
  const indexes = options.only ?? null;
  let next = 0;
  const bump = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  const worker = async () => {
    while (Date.now() - started < options.timeMs) {
      const slot = next++;
      if (indexes !== null ? slot >= indexes.length : slot >= options.cases) return;
      const index = indexes !== null ? indexes[slot]! : slot;
      // Each case from (seed, index) alone: replayable by itself.
      const r = new Prng(((options.seed >>> 0) * 1_000_003 + index) >>> 0 || 1);
      const c = new Gen(r, target, signer).make();
      let outcome: Outcome;
      try {
        const caseStarted = performance.now();
        outcome = await runCase(target, c, caseTimeoutMs);
        const ms = performance.now() - caseStarted;
        report.msByFamily[c.family] = (report.msByFamily[c.family] ?? 0) + ms;
        if (report.slowest === null || ms > report.slowest.ms) {
          report.slowest = { index, family: c.family, ms: Math.round(ms) };
        }
      } catch (e) {
        outcome = { answers: [], closed: true, timedOut: false, continued: false };
        if (!(e instanceof Deno.errors.ConnectionRefused)) {
          // A refused connect means the server is down: a failure of its own below.
        } else {
          report.failures.push({
            index,
            family: c.family,
            why: `cannot connect: ${(e as Error).message}`,
            request: escape(c.pieces[0]!),
            response: "",
          });
        }
      }
      report.cases++;
      bump(report.byFamily, c.family);
      const first = outcome.answers[0];
      bump(
        report.byStatus,
        c.ending === "close"
          ? "abandoned"
          : first
          ? String(first.status)
          : outcome.timedOut
          ? "timeout"
          : "closed",
      );
      if (first) bump(report.byCode, errorCode(first));
      if (c.expectContinue !== undefined && first && first.status >= 400) {
        report.continueRefused++;
        if (outcome.continued) report.continueBeforeRefusal++;
      }
      const why = judge(c, outcome);
      if (why !== null) {
        if (report.failures.length < FUZZ_FAILURES_KEPT_MAX) {
          report.failures.push({
            index,
            family: c.family,
            why,
            request: escape(c.pieces[0]!),
            response: first ? `${first.status} ${first.body.slice(0, 300)}` : "",
          });
        } else report.failures.length; // counted below
        failuresTotal++;
      }
    }
  };
  let failuresTotal = 0;
  await Promise.all(Array.from({ length: concurrency }, worker));
  report.elapsedMs = Date.now() - started;
  (report as FuzzReport & { failuresTotal: number }).failuresTotal = failuresTotal;
  return report;
}

/** A signed PUT then GET of a small object: the server still serves normal requests. */
export async function healthyRoundTrip(target: FuzzTarget): Promise<void> {
  const signer = new Signer(target);
  const body = encoder.encode(`after the campaign ${Date.now()}`);
  const path = `/${target.bucket}/fuzz/after`;
  const put = signer.sign(
    "PUT",
    path,
    [],
    [["content-length", String(body.length)]],
    sha256Hex(body),
    Date.now(),
  );
  const gen = new Gen(new Prng(1), target, signer);
  let o = await runCase(target, {
    family: "check",
    pieces: [gen.wire("PUT", path, [], put.headers, body)],
    ending: "keep",
    mustAnswer: true,
    method: "PUT",
  }, 10_000);
  if (o.answers[0]?.status !== 200) {
    throw new Error(`PUT after the campaign: ${JSON.stringify(o.answers[0] ?? o)}`);
  }
  const get = signer.sign("GET", path, [], [], sha256Hex(""), Date.now());
  o = await runCase(target, {
    family: "check",
    pieces: [gen.wire("GET", path, [], get.headers)],
    ending: "keep",
    mustAnswer: true,
    method: "GET",
  }, 10_000);
  if (o.answers[0]?.status !== 200 || o.answers[0].body !== decoder.decode(body)) {
    throw new Error(`GET after the campaign: ${JSON.stringify(o.answers[0] ?? o)}`);
  }
}

/** Creates the target bucket and its object with a signed request of the campaign's own. */
export async function prepareTarget(target: FuzzTarget): Promise<void> {
  const signer = new Signer(target);
  const gen = new Gen(new Prng(1), target, signer);
  const send = async (method: string, path: string, body: Uint8Array) => {
    const s = signer.sign(
      method,
      path,
      [],
      [["content-length", String(body.length)]],
      sha256Hex(body),
      Date.now(),
    );
    const o = await runCase(target, {
      family: "prepare",
      pieces: [gen.wire(method, path, [], s.headers, body)],
      ending: "keep",
      mustAnswer: true,
      method,
    }, 10_000);
    const status = o.answers[0]?.status;
    if (status !== 200 && status !== 409) {
      throw new Error(`${method} ${path}: ${JSON.stringify(o.answers[0] ?? o)}`);
    }
  };
  await send("PUT", `/${target.bucket}`, new Uint8Array(0));
  await send(
    "PUT",
    `/${target.bucket}/${FUZZ_OBJECT_KEY}`,
    encoder.encode("fuzz object ".repeat(100)),
  );
}

/** One line per number, for the task's output and the test's log. */
export function formatReport(report: FuzzReport): string {
  const total = (report as FuzzReport & { failuresTotal?: number }).failuresTotal ??
    report.failures.length;
  const sorted = (m: Record<string, number>) =>
    Object.entries(m).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}=${v}`).join(" ");
  const lines = [
    `seed ${report.seed}: ${report.cases} cases in ${
      (report.elapsedMs / 1000).toFixed(1)
    } s, ${total} failures`,
    `  families: ${sorted(report.byFamily)}`,
    `  statuses: ${sorted(report.byStatus)}`,
    `  codes:    ${sorted(report.byCode)}`,
    `  expect 100-continue refused: ${report.continueRefused} (100 Continue sent first: ${report.continueBeforeRefusal})`,
    `  time by family (s): ${
      Object.entries(report.msByFamily).sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k}=${(v / 1000).toFixed(1)}`).join(" ")
    }; slowest case #${report.slowest?.index} [${report.slowest?.family}] ${report.slowest?.ms} ms`,
  ];
  for (const f of report.failures) {
    lines.push(
      `  FAIL #${f.index} [${f.family}] ${f.why}\n    request ${f.request}\n    response ${f.response}`,
    );
  }
  return lines.join("\n");
}
