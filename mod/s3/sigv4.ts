// AWS Signature Version 4 as S3 checks it: the Authorization header and presigned-URL
// forms, the canonical request with S3's encoding rules, the signing-key derivation (cached)
// and the chunk and trailer signatures of streaming uploads. Pure: the caller passes the
// time and a lookup for secrets; nothing here reads a clock or does I/O.

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { assert } from "../base/mod.ts";
import { S3Error } from "./errors.ts";

export const SIGV4_ALGORITHM = "AWS4-HMAC-SHA256";
export const SIGV4_SERVICE = "s3";
export const SIGV4_TERMINATOR = "aws4_request";
/** How far a header-signed request's time may be from the server's (AWS: 15 minutes). */
export const SIGV4_CLOCK_SKEW_MS_MAX = 15 * 60 * 1000;
/** The shortest X-Amz-Expires AWS accepts: one second. */
export const SIGV4_PRESIGNED_EXPIRES_SECONDS_MIN = 1;
/** The longest X-Amz-Expires AWS accepts: seven days. */
export const SIGV4_PRESIGNED_EXPIRES_SECONDS_MAX = 7 * 24 * 60 * 60;
/** Signing keys kept; one per (secret, day, region, service) in use. */
export const SIGV4_SIGNING_KEYS_CACHED_MAX = 1024;
/** Longest Authorization header parsed: a few hundred bytes plus the signed-header list. */
export const SIGV4_AUTHORIZATION_BYTES_MAX = 4096;
/** Signed headers one request may list. */
export const SIGV4_SIGNED_HEADERS_MAX = 64;

export const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";
export const STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
export const STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
export const STREAMING_UNSIGNED_PAYLOAD_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/** Hex SHA-256 of the empty string. */
export const EMPTY_SHA256_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/**
 * How the body is protected, from x-amz-content-sha256:
 * - `unsigned`: not at all (UNSIGNED-PAYLOAD, and presigned URLs);
 * - `sha256`: its SHA-256 (`payloadSha256Hex`) was signed; the body must match it;
 * - `streaming-signed`: aws-chunked, every chunk signed, chained from the seed signature;
 * - `streaming-signed-trailer`: the same, then signed trailing headers;
 * - `streaming-unsigned-trailer`: aws-chunked without signatures, trailing checksum.
 */
export type PayloadMode =
  | "unsigned"
  | "sha256"
  | "streaming-signed"
  | "streaming-signed-trailer"
  | "streaming-unsigned-trailer";

/** The parts of an HTTP request a signature covers, as received. */
export interface SigV4Request {
  method: string;
  /** The path as on the wire (percent-encoded), starting with `/`. */
  path: string;
  /** The query string as on the wire, without `?`; empty when there is none. */
  query: string;
  headers: Headers;
}

/** What a credential lookup returns: at least the secret. */
export interface SigV4Secret {
  secretAccessKey: string;
}

export interface VerifySigV4Options<C extends SigV4Secret> {
  /** The server's time, in ms since the epoch. */
  nowMs: number;
  /** The credential of an access key id, or null when there is none. */
  lookup: (accessKeyId: string) => Promise<C | null> | C | null;
}

/** A request whose signature checked out. */
export interface VerifiedSigV4<C extends SigV4Secret> {
  kind: "header" | "presigned";
  accessKeyId: string;
  credential: C;
  /** The request time, ISO 8601 basic (`20130524T000000Z`). */
  amzDate: string;
  /** The credential scope: `20130524/us-east-1/s3/aws4_request`. */
  scope: string;
  region: string;
  /** The request's signature: the seed of a streaming upload's chunk signatures. */
  signature: string;
  /** The key the request was signed with; chunk and trailer signatures use it too. */
  signingKey: Uint8Array;
  payload: PayloadMode;
  /** For `sha256`: the lowercase hex digest the body must have. */
  payloadSha256Hex?: string;
  /** For presigned URLs: when the URL stops being valid. */
  expiresAtMs?: number;
}

export interface SigV4VerifierOptions {
  /**
   * The region requests must be signed for; null accepts any region the client chose (many
   * clients default to us-east-1 and can't be told otherwise). Default null.
   */
  region?: string | null;
  clockSkewMsMax?: number;
  signingKeysCachedMax?: number;
}

/** The fields of a SigV4 signature before the secret is known. */
export interface ParsedSigV4 {
  kind: "header" | "presigned";
  accessKeyId: string;
  date: string;
  region: string;
  service: string;
  amzDate: string;
  /** The request time in ms since the epoch. */
  requestTimeMs: number;
  signedHeaders: string[];
  signature: string;
  payload: PayloadMode;
  payloadHash: string;
  /** Presigned only: X-Amz-Expires in seconds. */
  expiresSeconds?: number;
}

const encoder = new TextEncoder();

function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function hmac(key: Uint8Array | string, data: string): Uint8Array {
  const d = createHmac("sha256", key).update(data).digest();
  return new Uint8Array(d.buffer, d.byteOffset, d.length);
}

function hmacHex(key: Uint8Array, data: string): string {
  return createHmac("sha256", key).update(data).digest("hex");
}

/** The SigV4 signing key: HMAC chain over date, region, service and `aws4_request`. */
export function deriveSigningKey(
  secretAccessKey: string,
  date: string,
  region: string,
  service: string,
): Uint8Array {
  const kDate = hmac(encoder.encode(`AWS4${secretAccessKey}`), date);
  const kRegion = hmac(kDate, region);
  const kService = hmac(kRegion, service);
  return hmac(kService, SIGV4_TERMINATOR);
}

// --- URI encoding -------------------------------------------------------------------------

const HEX = "0123456789ABCDEF";

function isUnreserved(b: number): boolean {
  return (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
    b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/**
 * The bytes `text` stands for after one round of percent-decoding. A `%` not followed by
 * two hex digits stands for itself; other characters stand for their UTF-8 bytes. `+` is a
 * plus: S3 clients send a space as `%20`.
 */
export function percentDecodeBytes(text: string): Uint8Array {
  const raw = encoder.encode(text);
  const out = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!;
    if (b === 0x25 && i + 2 < raw.length) {
      const hi = hexValue(raw[i + 1]!);
      const lo = hexValue(raw[i + 2]!);
      if (hi >= 0 && lo >= 0) {
        out[n++] = (hi << 4) | lo;
        i += 2;
        continue;
      }
    }
    out[n++] = b;
  }
  return out.subarray(0, n);
}

/**
 * SigV4's URI-encode of bytes: unreserved characters (A-Z a-z 0-9 - . _ ~) as they are,
 * everything else as %XY with upper-case hex; `/` kept when `keepSlash`.
 */
export function uriEncodeBytes(bytes: Uint8Array, keepSlash: boolean): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (isUnreserved(b) || (keepSlash && b === 0x2f)) out += String.fromCharCode(b);
    else out += "%" + HEX[b >> 4] + HEX[b & 15];
  }
  return out;
}

/** SigV4's URI-encode of a string (its UTF-8 bytes). */
export function uriEncode(text: string, keepSlash = false): string {
  return uriEncodeBytes(encoder.encode(text), keepSlash);
}

/**
 * The canonical URI of a wire path. S3 signs the path encoded once, neither normalized nor
 * double-encoded, so a path is decoded once and encoded again: any of the encodings clients
 * put on the wire (`~` or `%7E`, `%2f` or `%2F`) gives the same result.
 */
export function canonicalUri(wirePath: string): string {
  if (wirePath === "") return "/";
  return uriEncodeBytes(percentDecodeBytes(wirePath), true);
}

/**
 * The canonical query string of a wire query: every parameter decoded once and encoded
 * again, `name=` for a parameter without a value, sorted by name then value.
 * `exclude` names a parameter to leave out (X-Amz-Signature of a presigned URL).
 */
export function canonicalQuery(wireQuery: string, exclude?: string): string {
  if (wireQuery === "") return "";
  const pairs: [string, string][] = [];
  for (const part of wireQuery.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const rawName = eq < 0 ? part : part.slice(0, eq);
    const rawValue = eq < 0 ? "" : part.slice(eq + 1);
    const name = uriEncodeBytes(percentDecodeBytes(rawName), false);
    if (exclude !== undefined && name === exclude) continue;
    pairs.push([name, uriEncodeBytes(percentDecodeBytes(rawValue), false)]);
  }
  // Encoded names and values are ASCII: code-unit order is byte order.
  pairs.sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
  return pairs.map(([n, v]) => `${n}=${v}`).join("&");
}

/** A header value as SigV4 signs it: trimmed, inner runs of whitespace made one space. */
export function canonicalHeaderValue(value: string): string {
  return value.trim().replace(/\s+/g, " ");
}

/** The canonical request (method, URI, query, headers, signed-header list, payload hash). */
export function canonicalRequest(
  request: SigV4Request,
  signedHeaders: readonly string[],
  payloadHash: string,
  excludeQuery?: string,
  uri: string = canonicalUri(request.path),
): string {
  const headerLines = signedHeaders.map((name) =>
    `${name}:${canonicalHeaderValue(request.headers.get(name) ?? "")}\n`
  );
  return [
    request.method.toUpperCase(),
    uri,
    canonicalQuery(request.query, excludeQuery),
    headerLines.join(""),
    signedHeaders.join(";"),
    payloadHash,
  ].join("\n");
}

/** The string to sign of a canonical request. */
export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return `${SIGV4_ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonical)}`;
}

/** The signature of one aws-chunked chunk whose data hashes to `chunkSha256Hex`. */
export function chunkSignature(options: {
  signingKey: Uint8Array;
  amzDate: string;
  scope: string;
  previousSignature: string;
  chunkSha256Hex: string;
}): string {
  return hmacHex(
    options.signingKey,
    `${SIGV4_ALGORITHM}-PAYLOAD\n${options.amzDate}\n${options.scope}\n` +
      `${options.previousSignature}\n${EMPTY_SHA256_HEX}\n${options.chunkSha256Hex}`,
  );
}

/** The signature of the trailing headers of an aws-chunked body (canonical form hashed). */
export function trailerSignature(options: {
  signingKey: Uint8Array;
  amzDate: string;
  scope: string;
  previousSignature: string;
  trailerSha256Hex: string;
}): string {
  return hmacHex(
    options.signingKey,
    `${SIGV4_ALGORITHM}-TRAILER\n${options.amzDate}\n${options.scope}\n` +
      `${options.previousSignature}\n${options.trailerSha256Hex}`,
  );
}

/** Compares two hex signatures in time independent of where they differ. */
export function signaturesEqual(expected: string, provided: string): boolean {
  const a = encoder.encode(expected);
  const b = encoder.encode(provided);
  // Lengths are public (64 hex digits); compare equal-length buffers only.
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}

// --- Parsing ------------------------------------------------------------------------------

const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const SIGNATURE_HEX = /^[0-9a-f]{64}$/;
/** A path already in URI form: printable ASCII, every `%` starting an escape. */
const WIRE_PATH = /^\/(?:[!$&-;=@-Z_a-z~]|%[0-9A-Fa-f]{2})*$/;
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

/** Milliseconds since the epoch of an ISO 8601 basic time (`20130524T000000Z`), or null. */
export function parseAmzDate(text: string): number | null {
  const m = AMZ_DATE.exec(text);
  if (m === null) return null;
  const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) return null;
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  // Date.UTC rolls 31 February over into March; a real date comes back unchanged.
  if (new Date(ms).getUTCDate() !== d) return null;
  return ms;
}

/** ISO 8601 basic form of a time: `20130524T000000Z`. */
export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

function classifyPayload(
  hash: string,
  presigned: boolean,
  malformed: (message: string) => S3Error,
): { payload: PayloadMode; hash: string } {
  switch (hash) {
    case UNSIGNED_PAYLOAD:
      return { payload: "unsigned", hash };
    case STREAMING_PAYLOAD:
      if (!presigned) return { payload: "streaming-signed", hash };
      break;
    case STREAMING_PAYLOAD_TRAILER:
      if (!presigned) return { payload: "streaming-signed-trailer", hash };
      break;
    case STREAMING_UNSIGNED_PAYLOAD_TRAILER:
      return { payload: "streaming-unsigned-trailer", hash };
    default:
      if (/^[0-9a-fA-F]{64}$/.test(hash)) return { payload: "sha256", hash };
  }
  throw malformed(
    `x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, ` +
      `STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a ` +
      `valid sha256 value.`,
  );
}

function parseCredential(
  credential: string,
  malformed: (message: string) => S3Error,
): { accessKeyId: string; date: string; region: string; service: string } {
  const parts = credential.split("/");
  if (parts.length !== 5 || parts.some((p) => p === "")) {
    throw malformed(
      `the Credential ${JSON.stringify(credential)} is not of the form ` +
        `<access key id>/<YYYYMMDD>/<region>/s3/aws4_request`,
    );
  }
  const [accessKeyId, date, region, service, terminator] = parts as [
    string,
    string,
    string,
    string,
    string,
  ];
  if (!/^\d{8}$/.test(date)) {
    throw malformed(`Invalid credential date "${date}". This date is not the same as X-Amz-Date.`);
  }
  if (service !== SIGV4_SERVICE) {
    throw malformed(`The service '${service}' in the credential is incorrect; expecting 's3'`);
  }
  if (terminator !== SIGV4_TERMINATOR) {
    throw malformed(
      `The credential terminator '${terminator}' is incorrect; expecting 'aws4_request'`,
    );
  }
  return { accessKeyId, date, region, service };
}

function parseSignedHeaders(text: string, malformed: (message: string) => S3Error): string[] {
  const names = text.split(";");
  if (names.length > SIGV4_SIGNED_HEADERS_MAX) {
    throw malformed(`at most ${SIGV4_SIGNED_HEADERS_MAX} headers may be signed`);
  }
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (!HEADER_NAME.test(name)) {
      throw malformed(`SignedHeaders has an invalid header name ${JSON.stringify(name)}`);
    }
    if (i > 0 && names[i - 1]! >= name) {
      throw malformed("SignedHeaders must be lowercase, sorted and without duplicates");
    }
  }
  if (!names.includes("host")) throw malformed("SignedHeaders must include host");
  return names;
}

const SIGV4_ONLY = "The authorization mechanism you have provided is not supported. " +
  "Please use AWS4-HMAC-SHA256.";

/** The query parameters of a wire query, decoded (the last value of a repeated name wins). */
function queryParams(wireQuery: string): Map<string, string> {
  const decoder = new TextDecoder();
  const params = new Map<string, string>();
  for (const part of wireQuery.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const name = decoder.decode(percentDecodeBytes(eq < 0 ? part : part.slice(0, eq)));
    const value = eq < 0 ? "" : decoder.decode(percentDecodeBytes(part.slice(eq + 1)));
    params.set(name, value);
  }
  return params;
}

/**
 * Reads the signature fields of a request (Authorization header or presigned query). Throws
 * AccessDenied for an anonymous request, InvalidRequest for Signature Version 2, and
 * AuthorizationHeaderMalformed / AuthorizationQueryParametersError for a malformed one.
 */
export function parseSigV4(request: SigV4Request): ParsedSigV4 {
  const authorization = request.headers.get("authorization");
  const params = queryParams(request.query);
  const presigned = params.has("X-Amz-Algorithm") || params.has("X-Amz-Credential") ||
    params.has("X-Amz-Signature");
  if (authorization !== null && presigned) {
    throw new S3Error(
      "InvalidArgument",
      "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature " +
        "query string parameter or the Authorization header should be specified",
    );
  }
  if (authorization !== null) return parseHeaderAuth(request, authorization);
  if (presigned) return parsePresigned(params);
  if (params.has("AWSAccessKeyId") || params.has("Signature")) {
    throw new S3Error("InvalidRequest", SIGV4_ONLY + " (Signature Version 2 is not accepted)");
  }
  throw new S3Error(
    "AccessDenied",
    "Anonymous requests are not accepted; sign the request with AWS Signature Version 4",
  );
}

function parseHeaderAuth(request: SigV4Request, authorization: string): ParsedSigV4 {
  const malformed = (message: string) =>
    new S3Error(
      "AuthorizationHeaderMalformed",
      `The authorization header is malformed; ${message}`,
    );
  if (authorization.length > SIGV4_AUTHORIZATION_BYTES_MAX) {
    throw malformed(`it is longer than ${SIGV4_AUTHORIZATION_BYTES_MAX} bytes`);
  }
  const space = authorization.indexOf(" ");
  const algorithm = space < 0 ? authorization : authorization.slice(0, space);
  if (algorithm !== SIGV4_ALGORITHM) {
    if (algorithm === "AWS") {
      throw new S3Error("InvalidRequest", SIGV4_ONLY + " (Signature Version 2 is not accepted)");
    }
    throw new S3Error("InvalidRequest", SIGV4_ONLY);
  }
  const fields = new Map<string, string>();
  for (const item of authorization.slice(space + 1).split(",")) {
    const trimmed = item.trim();
    if (trimmed === "") continue;
    const eq = trimmed.indexOf("=");
    if (eq < 0) throw malformed(`${JSON.stringify(trimmed)} is not name=value`);
    const name = trimmed.slice(0, eq).trim();
    if (fields.has(name)) throw malformed(`${name} appears twice`);
    fields.set(name, trimmed.slice(eq + 1).trim());
  }
  for (const name of ["Credential", "SignedHeaders", "Signature"]) {
    if (!fields.has(name)) throw malformed(`it has no ${name}`);
  }
  for (const name of fields.keys()) {
    if (!["Credential", "SignedHeaders", "Signature"].includes(name)) {
      throw malformed(`unknown field ${JSON.stringify(name)}`);
    }
  }
  const credential = parseCredential(fields.get("Credential")!, malformed);
  const signedHeaders = parseSignedHeaders(fields.get("SignedHeaders")!, malformed);
  const signature = fields.get("Signature")!;
  if (!SIGNATURE_HEX.test(signature)) {
    throw malformed("the Signature is not 64 lowercase hex digits");
  }

  let amzDate = request.headers.get("x-amz-date");
  let requestTimeMs: number | null;
  if (amzDate !== null) {
    requestTimeMs = parseAmzDate(amzDate.trim());
    amzDate = amzDate.trim();
  } else {
    // SigV4 allows the Date header in its place; the string to sign uses the basic form.
    const date = request.headers.get("date");
    requestTimeMs = date === null ? null : parseHttpDate(date);
    amzDate = requestTimeMs === null ? null : formatAmzDate(requestTimeMs);
  }
  if (amzDate === null || requestTimeMs === null) {
    throw new S3Error(
      "AccessDenied",
      "AWS authentication requires a valid Date or x-amz-date header",
    );
  }
  if (amzDate.slice(0, 8) !== credential.date) {
    throw malformed(
      `Invalid credential date "${credential.date}". This date is not the same as X-Amz-Date: ` +
        `"${amzDate.slice(0, 8)}".`,
    );
  }
  const claimed = request.headers.get("x-amz-content-sha256");
  if (claimed === null) {
    throw new S3Error(
      "InvalidRequest",
      "Missing required header for this request: x-amz-content-sha256",
    );
  }
  const { payload, hash } = classifyPayload(
    claimed.trim(),
    false,
    (m) => new S3Error("InvalidArgument", m),
  );
  return {
    kind: "header",
    ...credential,
    amzDate,
    requestTimeMs,
    signedHeaders,
    signature,
    payload,
    payloadHash: hash,
  };
}

function parsePresigned(params: Map<string, string>): ParsedSigV4 {
  const malformed = (message: string) => new S3Error("AuthorizationQueryParametersError", message);
  const algorithm = params.get("X-Amz-Algorithm");
  if (algorithm !== SIGV4_ALGORITHM) {
    throw malformed(
      'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"' +
        (algorithm === undefined ? " and must be present" : ""),
    );
  }
  for (const name of ["X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"]) {
    if (!params.has(name)) {
      throw malformed(
        "Query-string authentication version 4 requires the X-Amz-Algorithm, " +
          "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and " +
          "X-Amz-Expires parameters.",
      );
    }
  }
  const credential = parseCredential(
    params.get("X-Amz-Credential")!,
    (m) => malformed(`Error parsing the X-Amz-Credential parameter; ${m}`),
  );
  const amzDate = params.get("X-Amz-Date")!;
  const requestTimeMs = parseAmzDate(amzDate);
  if (requestTimeMs === null) {
    throw malformed(
      `X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd'T'HHmmss'Z'"`,
    );
  }
  if (amzDate.slice(0, 8) !== credential.date) {
    throw malformed(
      `Invalid credential date "${credential.date}". This date is not the same as X-Amz-Date: ` +
        `"${amzDate.slice(0, 8)}".`,
    );
  }
  const expiresText = params.get("X-Amz-Expires");
  if (expiresText === undefined) {
    throw malformed(
      "Query-string authentication version 4 requires the X-Amz-Algorithm, " +
        "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and " +
        "X-Amz-Expires parameters.",
    );
  }
  if (!/^-?\d{1,10}$/.test(expiresText)) {
    throw malformed("X-Amz-Expires should be a number");
  }
  const expiresSeconds = Number(expiresText);
  // AWS refuses 0 as well as negative values, and more than a week, with 403 (ceph's
  // s3-tests test_object_raw_get_x_amz_expires_out_range_zero and _out_max_range).
  const outOfRange = (message: string) =>
    new S3Error("AuthorizationQueryParametersError", message, { status: 403 });
  if (expiresSeconds < SIGV4_PRESIGNED_EXPIRES_SECONDS_MIN) {
    throw outOfRange(
      `X-Amz-Expires must be at least ${SIGV4_PRESIGNED_EXPIRES_SECONDS_MIN} second and not negative`,
    );
  }
  if (expiresSeconds > SIGV4_PRESIGNED_EXPIRES_SECONDS_MAX) {
    throw outOfRange(
      `X-Amz-Expires must be less than a week (in seconds) that is ` +
        `${SIGV4_PRESIGNED_EXPIRES_SECONDS_MAX}`,
    );
  }
  const signedHeaders = parseSignedHeaders(
    params.get("X-Amz-SignedHeaders")!,
    (m) => malformed(`X-Amz-SignedHeaders: ${m}`),
  );
  const signature = params.get("X-Amz-Signature")!;
  if (!SIGNATURE_HEX.test(signature)) {
    throw malformed("X-Amz-Signature is not 64 lowercase hex digits");
  }
  // A presigned URL signs UNSIGNED-PAYLOAD unless it carries the hash as a parameter.
  const claimed = params.get("X-Amz-Content-Sha256") ?? UNSIGNED_PAYLOAD;
  const { payload, hash } = classifyPayload(claimed, true, malformed);
  return {
    kind: "presigned",
    ...credential,
    amzDate,
    requestTimeMs,
    signedHeaders,
    signature,
    payload,
    payloadHash: hash,
    expiresSeconds,
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * An HTTP date (RFC 9110 IMF-fixdate, also RFC 850 and asctime forms) as ms since the
 * epoch, or null when it is none of them.
 */
export function parseHttpDate(text: string): number | null {
  const t = text.trim();
  let m = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/.exec(t);
  let day: string, month: string, year: number, time: string[];
  if (m !== null) {
    [day, month, year, time] = [m[1]!, m[2]!, Number(m[3]), [m[4]!, m[5]!, m[6]!]];
  } else if (
    (m = /^[A-Za-z]+, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/.exec(t)) !==
      null
  ) {
    const yy = Number(m[3]);
    [day, month, year, time] = [m[1]!, m[2]!, yy < 70 ? 2000 + yy : 1900 + yy, [
      m[4]!,
      m[5]!,
      m[6]!,
    ]];
  } else if (
    (m = /^[A-Za-z]{3} ([A-Za-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/.exec(t)) !== null
  ) {
    [day, month, year, time] = [m[2]!.trim().padStart(2, "0"), m[1]!, Number(m[6]), [
      m[3]!,
      m[4]!,
      m[5]!,
    ]];
  } else {
    return null;
  }
  const mo = MONTHS.indexOf(month);
  if (mo < 0) return null;
  const d = Number(day);
  const [h, mi, s] = time.map(Number) as [number, number, number];
  if (d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return null;
  const ms = Date.UTC(year, mo, d, h, mi, Math.min(s, 59));
  if (new Date(ms).getUTCDate() !== d) return null;
  return ms;
}

// --- Verification -------------------------------------------------------------------------

/**
 * Checks SigV4 signatures against a credential lookup. Holds only a bounded cache of
 * derived signing keys; the time comes with each call.
 */
export class SigV4Verifier {
  readonly region: string | null;
  readonly clockSkewMsMax: number;
  readonly signingKeysCachedMax: number;
  readonly #keys = new Map<string, Uint8Array>();

  constructor(options: SigV4VerifierOptions = {}) {
    this.region = options.region ?? null;
    this.clockSkewMsMax = options.clockSkewMsMax ?? SIGV4_CLOCK_SKEW_MS_MAX;
    this.signingKeysCachedMax = options.signingKeysCachedMax ?? SIGV4_SIGNING_KEYS_CACHED_MAX;
    assert(this.clockSkewMsMax >= 0, "clockSkewMsMax must not be negative");
    assert(
      Number.isInteger(this.signingKeysCachedMax) && this.signingKeysCachedMax >= 1,
      "signingKeysCachedMax must be a positive integer",
    );
  }

  /** Signing keys held now. */
  get signingKeysCached(): number {
    return this.#keys.size;
  }

  /**
   * Verifies `request`: the signature fields, the access key, the request time (skew, or a
   * presigned URL's validity) and the signature itself. Resolves with what the rest of the
   * request needs (who signed, how the body is protected, the seed for chunk signatures);
   * rejects with the S3Error AWS would send.
   */
  async verify<C extends SigV4Secret>(
    request: SigV4Request,
    options: VerifySigV4Options<C>,
  ): Promise<VerifiedSigV4<C>> {
    const parsed = parseSigV4(request);
    if (this.region !== null && parsed.region !== this.region) {
      const message = `the region '${parsed.region}' is wrong; expecting '${this.region}'`;
      throw parsed.kind === "header"
        ? new S3Error(
          "AuthorizationHeaderMalformed",
          `The authorization header is malformed; ${message}`,
        )
        : new S3Error(
          "AuthorizationQueryParametersError",
          `Error parsing the X-Amz-Credential parameter; ${message}`,
        );
    }
    const credential = await options.lookup(parsed.accessKeyId);
    if (credential === null) {
      throw new S3Error("InvalidAccessKeyId", undefined, {
        details: { AWSAccessKeyId: parsed.accessKeyId },
      });
    }
    const expiresAtMs = this.#checkTime(parsed, options.nowMs);
    const scope = `${parsed.date}/${parsed.region}/${parsed.service}/${SIGV4_TERMINATOR}`;
    const signingKey = this.signingKey(
      credential.secretAccessKey,
      parsed.date,
      parsed.region,
      parsed.service,
    );
    const excludeQuery = parsed.kind === "presigned" ? "X-Amz-Signature" : undefined;
    const canonical = canonicalRequest(
      request,
      parsed.signedHeaders,
      parsed.payloadHash,
      excludeQuery,
    );
    const toSign = stringToSign(parsed.amzDate, scope, canonical);
    if (
      !signaturesEqual(hmacHex(signingKey, toSign), parsed.signature) &&
      !this.#matchesWirePath(request, parsed, scope, signingKey, excludeQuery)
    ) {
      throw new S3Error("SignatureDoesNotMatch", undefined, {
        details: {
          AWSAccessKeyId: parsed.accessKeyId,
          StringToSign: toSign,
          SignatureProvided: parsed.signature,
          CanonicalRequest: canonical,
        },
      });
    }
    const verified: VerifiedSigV4<C> = {
      kind: parsed.kind,
      accessKeyId: parsed.accessKeyId,
      credential,
      amzDate: parsed.amzDate,
      scope,
      region: parsed.region,
      signature: parsed.signature,
      signingKey,
      payload: parsed.payload,
    };
    if (parsed.payload === "sha256") verified.payloadSha256Hex = parsed.payloadHash.toLowerCase();
    if (expiresAtMs !== undefined) verified.expiresAtMs = expiresAtMs;
    return verified;
  }

  /** The signing key, from the cache when it was derived before. */
  signingKey(secretAccessKey: string, date: string, region: string, service: string): Uint8Array {
    const id = `${date}\u0000${region}\u0000${service}\u0000${secretAccessKey}`;
    const cached = this.#keys.get(id);
    if (cached !== undefined) {
      // Refresh its place: the map's insertion order is the eviction order.
      this.#keys.delete(id);
      this.#keys.set(id, cached);
      return cached;
    }
    const key = deriveSigningKey(secretAccessKey, date, region, service);
    if (this.#keys.size >= this.signingKeysCachedMax) {
      this.#keys.delete(this.#keys.keys().next().value!);
    }
    this.#keys.set(id, key);
    return key;
  }

  /**
   * Some clients send characters such as `!*'()` unencoded and sign the path exactly as
   * they sent it. The wire path names the same key either way, so a signature over the
   * path as received is as good as one over its canonical encoding.
   */
  #matchesWirePath(
    request: SigV4Request,
    parsed: ParsedSigV4,
    scope: string,
    signingKey: Uint8Array,
    excludeQuery: string | undefined,
  ): boolean {
    const path = request.path === "" ? "/" : request.path;
    if (path === canonicalUri(path) || !WIRE_PATH.test(path)) return false;
    const canonical = canonicalRequest(
      request,
      parsed.signedHeaders,
      parsed.payloadHash,
      excludeQuery,
      path,
    );
    const toSign = stringToSign(parsed.amzDate, scope, canonical);
    return signaturesEqual(hmacHex(signingKey, toSign), parsed.signature);
  }

  #checkTime(parsed: ParsedSigV4, nowMs: number): number | undefined {
    // Formatted only for an error's details: every request checks its time.
    if (parsed.kind === "presigned") {
      if (parsed.requestTimeMs - nowMs > this.clockSkewMsMax) {
        throw new S3Error("AccessDenied", "Request is not valid yet", {
          details: { "X-Amz-Date": parsed.amzDate, ServerTime: formatAmzDate(nowMs) },
        });
      }
      const expiresAtMs = parsed.requestTimeMs + parsed.expiresSeconds! * 1000;
      if (nowMs > expiresAtMs) {
        throw new S3Error("AccessDenied", "Request has expired", {
          details: {
            "X-Amz-Expires": String(parsed.expiresSeconds),
            Expires: new Date(expiresAtMs).toISOString().replace(/\.\d{3}Z$/, "Z"),
            ServerTime: new Date(nowMs).toISOString().replace(/\.\d{3}Z$/, "Z"),
          },
        });
      }
      return expiresAtMs;
    }
    if (Math.abs(parsed.requestTimeMs - nowMs) > this.clockSkewMsMax) {
      throw new S3Error("RequestTimeTooSkewed", undefined, {
        details: {
          RequestTime: parsed.amzDate,
          ServerTime: formatAmzDate(nowMs),
          MaxAllowedSkewMilliseconds: String(this.clockSkewMsMax),
        },
      });
    }
    return undefined;
  }
}
