// From an HTTP request to an S3 operation: the URL taken apart without normalizing it,
// path-style and virtual-host-style addressing, bucket-name and key rules, the operation
// table (method + subresource + copy header), and the pure parsers of headers operations
// share: user metadata, Range, conditional headers, copy source, integer parameters.

import { S3Error } from "./errors.ts";
import { parseHttpDate, percentDecodeBytes } from "./sigv4.ts";

/** Longest key, in UTF-8 bytes (AWS: 1,024). */
export const KEY_BYTES_MAX = 1024;
/** User metadata (x-amz-meta-* names without the prefix, plus values), UTF-8 bytes (AWS: 2 KiB). */
export const USER_METADATA_BYTES_MAX = 2048;
/** All request headers together, names and values (AWS: 8 KiB). */
export const REQUEST_HEADERS_BYTES_MAX = 8192;
export const BUCKET_NAME_LENGTH_MIN = 3;
export const BUCKET_NAME_LENGTH_MAX = 63;
/** Query parameters one request may carry. */
export const QUERY_PARAMS_MAX = 64;
export const USER_METADATA_PREFIX = "x-amz-meta-";

export type S3OperationName =
  | "ListBuckets"
  | "CreateBucket"
  | "HeadBucket"
  | "DeleteBucket"
  | "GetBucketLocation"
  | "GetBucketVersioning"
  | "ListObjectVersions"
  | "ListObjects"
  | "ListObjectsV2"
  | "ListMultipartUploads"
  | "DeleteObjects"
  | "PutObject"
  | "GetObject"
  | "HeadObject"
  | "DeleteObject"
  | "CopyObject"
  | "CreateMultipartUpload"
  | "UploadPart"
  | "UploadPartCopy"
  | "ListParts"
  | "CompleteMultipartUpload"
  | "AbortMultipartUpload";

/**
 * Query parameters that select a subresource. Any of them on a request the table does not
 * serve is answered NotImplemented, naming it, rather than served as the plain operation.
 */
export const S3_SUBRESOURCES: ReadonlySet<string> = new Set([
  "accelerate",
  "acl",
  "analytics",
  "attributes",
  "cors",
  "delete",
  "encryption",
  "intelligent-tiering",
  "inventory",
  "legal-hold",
  "lifecycle",
  "location",
  "logging",
  "metadataConfiguration",
  "metadataTable",
  "metrics",
  "notification",
  "object-lock",
  "ownershipControls",
  "partNumber",
  "policy",
  "policyStatus",
  "publicAccessBlock",
  "renameObject",
  "replication",
  "requestPayment",
  "restore",
  "retention",
  "select",
  "session",
  "tagging",
  "torrent",
  "uploadId",
  "uploads",
  "versioning",
  "versions",
  "website",
]);

/** A request's target before the operation is chosen: raw pieces and decoded names. */
export interface S3Target {
  /** The path as on the wire (for signatures), `/` at least. */
  wirePath: string;
  /** The query as on the wire, without `?`. */
  wireQuery: string;
  /** Query parameters decoded once; a repeated name keeps its first value. */
  query: Map<string, string>;
  addressing: "path" | "virtual-host";
  bucket: string | null;
  key: string | null;
  /** `/bucket/key` as error documents name it. */
  resource: string;
}

export interface S3Request extends S3Target {
  operation: S3OperationName;
}

export interface ParseS3RequestOptions {
  /**
   * Host names (without port) under which buckets are addressed virtual-host style:
   * with `s3.example.com`, `photos.s3.example.com` is bucket `photos`. Other hosts (IP
   * addresses, localhost, the base domain itself) are path style.
   */
  baseDomains: readonly string[];
}

/** The parts of an HTTP request the parser reads. */
export interface HttpRequestLine {
  method: string;
  /** Absolute URL as the server received it (the listener keeps the path as sent). */
  url: string;
  headers: Headers;
}

/** Splits an absolute URL into wire path and query without resolving `.`/`..` or decoding. */
export function splitRequestUrl(url: string): { wirePath: string; wireQuery: string } {
  const scheme = url.indexOf("://");
  const pathStart = scheme < 0 ? 0 : url.indexOf("/", scheme + 3);
  if (pathStart < 0) return { wirePath: "/", wireQuery: "" };
  let rest = url.slice(pathStart);
  const hash = rest.indexOf("#");
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf("?");
  return q < 0
    ? { wirePath: rest, wireQuery: "" }
    : { wirePath: rest.slice(0, q), wireQuery: rest.slice(q + 1) };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Percent-decodes once into a UTF-8 string; InvalidURI when the bytes are not UTF-8. */
export function decodeComponent(text: string): string {
  try {
    return utf8.decode(percentDecodeBytes(text));
  } catch {
    throw new S3Error("InvalidURI", `Couldn't parse the specified URI: ${text.slice(0, 256)}`);
  }
}

/** Decoded query parameters; `+` is a plus, as S3 reads it. */
export function parseQuery(wireQuery: string): Map<string, string> {
  const params = new Map<string, string>();
  if (wireQuery === "") return params;
  const parts = wireQuery.split("&");
  if (parts.length > QUERY_PARAMS_MAX) {
    throw new S3Error(
      "InvalidArgument",
      `A request may carry at most ${QUERY_PARAMS_MAX} query parameters`,
    );
  }
  for (const part of parts) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const name = decodeComponent(eq < 0 ? part : part.slice(0, eq));
    if (params.has(name)) continue;
    params.set(name, eq < 0 ? "" : decodeComponent(part.slice(eq + 1)));
  }
  return params;
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * Why `name` is not a valid bucket name (AWS's rules for general purpose buckets), or null:
 * 3-63 characters of a-z 0-9 . -, beginning and ending with a letter or digit, no `..`, `.-`
 * or `-.`, not an IPv4 address, none of AWS's reserved prefixes and suffixes.
 */
export function bucketNameProblem(name: string): string | null {
  if (name.length < BUCKET_NAME_LENGTH_MIN || name.length > BUCKET_NAME_LENGTH_MAX) {
    return `must be ${BUCKET_NAME_LENGTH_MIN} to ${BUCKET_NAME_LENGTH_MAX} characters long`;
  }
  if (!/^[a-z0-9.-]+$/.test(name)) {
    return "may contain only lowercase letters, digits, dots and hyphens";
  }
  if (!/^[a-z0-9].*[a-z0-9]$/.test(name)) return "must begin and end with a letter or digit";
  if (/\.\.|\.-|-\./.test(name)) return "must not contain '..', '.-' or '-.'";
  if (IPV4.test(name)) return "must not be formatted as an IP address";
  for (const prefix of ["xn--", "sthree-", "amzn-s3-demo-"]) {
    if (name.startsWith(prefix)) return `must not start with '${prefix}'`;
  }
  for (const suffix of ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"]) {
    if (name.endsWith(suffix)) return `must not end with '${suffix}'`;
  }
  return null;
}

/** Throws InvalidBucketName when `name` breaks the bucket naming rules. */
export function checkBucketName(name: string): void {
  const problem = bucketNameProblem(name);
  if (problem !== null) {
    throw new S3Error(
      "InvalidBucketName",
      `The specified bucket is not valid: the name ${problem}.`,
      {
        bucketName: name,
      },
    );
  }
}

/** Throws KeyTooLongError for a key over KEY_BYTES_MAX UTF-8 bytes. */
export function checkKey(key: string): void {
  const bytes = new TextEncoder().encode(key).length;
  if (bytes > KEY_BYTES_MAX) {
    throw new S3Error("KeyTooLongError", undefined, {
      details: { Size: String(bytes), MaxSizeAllowed: String(KEY_BYTES_MAX) },
    });
  }
}

function hostName(host: string | null): string | null {
  if (host === null) return null;
  const h = host.trim().toLowerCase();
  if (h.startsWith("[")) return h.slice(0, h.indexOf("]") + 1); // IPv6 literal
  const colon = h.lastIndexOf(":");
  return colon < 0 ? h : h.slice(0, colon);
}

/** Resolves addressing, bucket and key of a request (no operation yet). */
export function parseS3Target(request: HttpRequestLine, options: ParseS3RequestOptions): S3Target {
  const { wirePath, wireQuery } = splitRequestUrl(request.url);
  if (!wirePath.startsWith("/")) throw new S3Error("InvalidURI");
  const query = parseQuery(wireQuery);
  const host = hostName(request.headers.get("host"));
  let bucket: string | null = null;
  let keyPart: string;
  let addressing: S3Target["addressing"] = "path";
  const base = host === null
    ? undefined
    : options.baseDomains.find((d) => host.endsWith("." + d.toLowerCase()));
  if (host !== null && base !== undefined) {
    addressing = "virtual-host";
    bucket = host.slice(0, host.length - base.length - 1);
    keyPart = wirePath.slice(1);
  } else {
    const rest = wirePath.slice(1);
    const slash = rest.indexOf("/");
    const bucketPart = slash < 0 ? rest : rest.slice(0, slash);
    keyPart = slash < 0 ? "" : rest.slice(slash + 1);
    if (bucketPart !== "") bucket = decodeComponent(bucketPart);
  }
  if (bucket !== null) checkBucketName(bucket);
  let key: string | null = null;
  if (keyPart !== "") {
    if (bucket === null) throw new S3Error("InvalidURI");
    key = decodeComponent(keyPart);
    checkKey(key);
  }
  const resource = bucket === null ? "/" : key === null ? `/${bucket}` : `/${bucket}/${key}`;
  return { wirePath, wireQuery, query, addressing, bucket, key, resource };
}

function notImplemented(what: string, resource: string): S3Error {
  return new S3Error("NotImplemented", `${what} is not implemented`, { resource });
}

function firstSubresource(
  query: Map<string, string>,
  except: readonly string[] = [],
): string | null {
  for (const name of query.keys()) {
    if (S3_SUBRESOURCES.has(name) && !except.includes(name)) return name;
  }
  return null;
}

function methodNotAllowed(method: string, target: S3Target, allow: string): S3Error {
  return new S3Error("MethodNotAllowed", undefined, {
    resource: target.resource,
    details: {
      Method: method,
      ResourceType: target.key !== null ? "OBJECT" : target.bucket !== null ? "BUCKET" : "SERVICE",
    },
    headers: { Allow: allow },
  });
}

/** The operation a request asks for, from the table of method, subresource and headers. */
export function chooseOperation(
  method: string,
  target: S3Target,
  headers: Headers,
): S3OperationName {
  const m = method.toUpperCase();
  const q = target.query;
  const sub = (except: readonly string[] = []) => firstSubresource(q, except);
  const unsupported = (name: string) =>
    notImplemented(`The ${name} subresource (${m} ?${name})`, target.resource);
  if (m === "OPTIONS") throw notImplemented("CORS (OPTIONS requests)", target.resource);

  if (target.bucket === null) {
    if (m === "GET") {
      const s = sub();
      if (s !== null) throw unsupported(s);
      return "ListBuckets";
    }
    throw methodNotAllowed(m, target, "GET");
  }

  if (target.key === null) {
    switch (m) {
      case "GET": {
        if (q.has("location")) return "GetBucketLocation";
        if (q.has("versioning")) return "GetBucketVersioning";
        if (q.has("versions")) return "ListObjectVersions";
        if (q.has("uploads")) return "ListMultipartUploads";
        const s = sub();
        if (s !== null) throw unsupported(s);
        if (q.has("list-type")) {
          if (q.get("list-type") !== "2") {
            throw new S3Error("InvalidArgument", "Invalid list-type; only 2 is supported", {
              details: { ArgumentName: "list-type", ArgumentValue: q.get("list-type")! },
            });
          }
          return "ListObjectsV2";
        }
        return "ListObjects";
      }
      case "HEAD":
        return "HeadBucket";
      case "PUT": {
        const s = sub();
        if (s !== null) throw unsupported(s);
        return "CreateBucket";
      }
      case "DELETE": {
        const s = sub();
        if (s !== null) throw unsupported(s);
        return "DeleteBucket";
      }
      case "POST": {
        if (q.has("delete")) return "DeleteObjects";
        const s = sub();
        if (s !== null) throw unsupported(s);
        throw notImplemented("POST Object (browser form uploads)", target.resource);
      }
      default:
        throw methodNotAllowed(m, target, "GET, HEAD, PUT, DELETE, POST");
    }
  }

  const hasUploadId = q.has("uploadId");
  const hasPartNumber = q.has("partNumber");
  switch (m) {
    case "GET": {
      if (hasUploadId) return "ListParts";
      // ?partNumber=N reads one part of the object (the gateway checks N).
      const s = sub(["partNumber"]);
      if (s !== null) throw unsupported(s);
      return "GetObject";
    }
    case "HEAD": {
      const s = sub(["partNumber"]);
      if (s !== null) throw unsupported(s);
      return "HeadObject";
    }
    case "PUT": {
      const copy = headers.has("x-amz-copy-source");
      if (hasUploadId || hasPartNumber) {
        if (!(hasUploadId && hasPartNumber)) {
          throw new S3Error(
            "InvalidRequest",
            "UploadPart needs both the uploadId and partNumber query parameters",
          );
        }
        const s = sub(["uploadId", "partNumber"]);
        if (s !== null) throw unsupported(s);
        return copy ? "UploadPartCopy" : "UploadPart";
      }
      const s = sub();
      if (s !== null) throw unsupported(s);
      return copy ? "CopyObject" : "PutObject";
    }
    case "DELETE": {
      if (hasUploadId) return "AbortMultipartUpload";
      const s = sub();
      if (s !== null) throw unsupported(s);
      return "DeleteObject";
    }
    case "POST": {
      if (q.has("uploads")) return "CreateMultipartUpload";
      if (hasUploadId) return "CompleteMultipartUpload";
      const s = sub();
      if (s !== null) throw unsupported(s);
      throw methodNotAllowed(m, target, "GET, HEAD, PUT, DELETE");
    }
    default:
      throw methodNotAllowed(m, target, "GET, HEAD, PUT, DELETE, POST");
  }
}

/** Total size of the request's headers as S3 counts it (name and value bytes). */
export function headersBytes(headers: Headers): number {
  let n = 0;
  // forEach, not for...of: a tenth of the cost over Headers on the pinned runtime.
  headers.forEach((value, name) => n += name.length + value.length + 4);
  return n;
}

/**
 * Parses a request into its operation and target. Throws the S3Error AWS sends for what
 * it cannot serve: InvalidBucketName, KeyTooLongError, InvalidURI, NotImplemented (naming
 * the subresource), MethodNotAllowed, RequestHeaderSectionTooLarge.
 */
export function parseS3Request(
  request: HttpRequestLine,
  options: ParseS3RequestOptions,
): S3Request {
  if (headersBytes(request.headers) > REQUEST_HEADERS_BYTES_MAX) {
    throw new S3Error("RequestHeaderSectionTooLarge", undefined, {
      details: { MaxSizeAllowed: String(REQUEST_HEADERS_BYTES_MAX) },
    });
  }
  const target = parseS3Target(request, options);
  return { ...target, operation: chooseOperation(request.method, target, request.headers) };
}

// --- Headers operations share ----------------------------------------------------------------

/**
 * The x-amz-meta-* headers as a map from name (lowercase, prefix removed) to value.
 * MetadataTooLarge past USER_METADATA_BYTES_MAX.
 */
export function parseUserMetadata(headers: Headers): Record<string, string> {
  const metadata: Record<string, string> = {};
  let bytes = 0;
  const encoder = new TextEncoder();
  headers.forEach((value, name) => {
    if (!name.startsWith(USER_METADATA_PREFIX)) return;
    const short = name.slice(USER_METADATA_PREFIX.length);
    if (short === "") {
      throw new S3Error("InvalidArgument", "A user metadata header needs a name after x-amz-meta-");
    }
    bytes += encoder.encode(short).length + encoder.encode(value).length;
    metadata[short] = value;
  });
  if (bytes > USER_METADATA_BYTES_MAX) {
    throw new S3Error("MetadataTooLarge", undefined, {
      details: { Size: String(bytes), MaxSizeAllowed: String(USER_METADATA_BYTES_MAX) },
    });
  }
  return metadata;
}

/** A single byte range as requested: `a-b`, `a-` or `-n`. */
export type RangeSpec =
  | { kind: "bounded"; first: number; last: number }
  | { kind: "from"; first: number }
  | { kind: "suffix"; length: number };

/**
 * The Range header, or null when the whole object is to be sent. As S3 does, a header it
 * cannot honour is ignored rather than refused: absent, another unit, malformed syntax,
 * last < first, or more than one range (S3 does not serve multipart/byteranges; it answers
 * 200 with the whole object).
 */
export function parseRange(header: string | null): RangeSpec | null {
  if (header === null) return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (m === null) return null;
  const [firstText, lastText] = [m[1]!, m[2]!];
  if (firstText === "" && lastText === "") return null;
  if (firstText === "") return { kind: "suffix", length: bigToSafe(lastText) };
  const first = bigToSafe(firstText);
  if (lastText === "") return { kind: "from", first };
  const last = bigToSafe(lastText);
  if (last < first) return null;
  return { kind: "bounded", first, last };
}

function bigToSafe(digits: string): number {
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

/** The bytes a range selects of an object of `sizeBytes`, inclusive at both ends. */
export interface ResolvedRange {
  start: number;
  end: number;
  /** The Content-Range value of the 206 response. */
  contentRange: string;
}

/**
 * Resolves a range against the object's size: ends past the object are clamped, a suffix
 * longer than the object is the whole object. InvalidRange (416, with `Content-Range:
 * bytes * /size`) when no byte is selected. Null for an empty object and a satisfiable
 * suffix: the whole (empty) object, 200.
 */
export function resolveRange(spec: RangeSpec, sizeBytes: number): ResolvedRange | null {
  let start: number;
  let end: number;
  if (spec.kind === "suffix") {
    if (spec.length === 0) throw invalidRange(spec, sizeBytes);
    if (sizeBytes === 0) return null;
    start = Math.max(0, sizeBytes - spec.length);
    end = sizeBytes - 1;
  } else {
    if (spec.first >= sizeBytes) throw invalidRange(spec, sizeBytes);
    start = spec.first;
    end = spec.kind === "bounded" ? Math.min(spec.last, sizeBytes - 1) : sizeBytes - 1;
  }
  return { start, end, contentRange: `bytes ${start}-${end}/${sizeBytes}` };
}

function formatRange(spec: RangeSpec): string {
  switch (spec.kind) {
    case "bounded":
      return `bytes=${spec.first}-${spec.last}`;
    case "from":
      return `bytes=${spec.first}-`;
    case "suffix":
      return `bytes=-${spec.length}`;
  }
}

function invalidRange(spec: RangeSpec, sizeBytes: number): S3Error {
  return new S3Error("InvalidRange", undefined, {
    details: { RangeRequested: formatRange(spec), ActualObjectSize: String(sizeBytes) },
    headers: { "Content-Range": `bytes */${sizeBytes}` },
  });
}

/** Conditional headers, parsed: ETag lists without quotes, dates in ms. */
export interface Conditions {
  ifMatch?: string[];
  ifNoneMatch?: string[];
  ifModifiedSinceMs?: number;
  ifUnmodifiedSinceMs?: number;
}

/** ETags of an If-Match / If-None-Match list, unquoted, weak markers dropped; `*` kept. */
export function parseETagList(value: string): string[] {
  return value.split(",").map((t) => t.trim()).filter((t) => t !== "").map((t) =>
    t.replace(/^W\//, "").replace(/^"(.*)"$/, "$1")
  );
}

/**
 * Reads If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, or with `prefix`
 * `x-amz-copy-source-` their copy-source forms. Unparseable dates are ignored, as S3
 * ignores them.
 */
export function parseConditions(
  headers: Headers,
  prefix: "" | "x-amz-copy-source-" = "",
  parseDate: (text: string) => number | null = parseHttpDateLoose,
): Conditions {
  const conditions: Conditions = {};
  const ifMatch = headers.get(`${prefix}if-match`);
  if (ifMatch !== null) conditions.ifMatch = parseETagList(ifMatch);
  const ifNoneMatch = headers.get(`${prefix}if-none-match`);
  if (ifNoneMatch !== null) conditions.ifNoneMatch = parseETagList(ifNoneMatch);
  const ims = headers.get(`${prefix}if-modified-since`);
  const imsMs = ims === null ? null : parseDate(ims);
  if (imsMs !== null) conditions.ifModifiedSinceMs = imsMs;
  const ius = headers.get(`${prefix}if-unmodified-since`);
  const iusMs = ius === null ? null : parseDate(ius);
  if (iusMs !== null) conditions.ifUnmodifiedSinceMs = iusMs;
  return conditions;
}

/** HTTP dates, and the ISO 8601 UTC form some clients send in their place. */
function parseHttpDateLoose(text: string): number | null {
  const http = parseHttpDate(text);
  if (http !== null) return http;
  const t = text.trim();
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/.test(t)) return null;
  const ms = Date.parse(t);
  return Number.isFinite(ms) ? ms : null;
}

function etagMatches(list: readonly string[], etag: string): boolean {
  const bare = etag.replace(/^"(.*)"$/, "$1");
  return list.some((t) => t === "*" || t === bare);
}

/** The first condition that does not hold, in RFC 9110 order, or null. */
function failedCondition(
  conditions: Conditions,
  object: { etag: string; lastModifiedMs: number },
): { status: 412 | 304; header: string } | null {
  const modifiedS = Math.floor(object.lastModifiedMs / 1000);
  if (conditions.ifMatch !== undefined) {
    if (!etagMatches(conditions.ifMatch, object.etag)) return { status: 412, header: "if-match" };
  } else if (conditions.ifUnmodifiedSinceMs !== undefined) {
    if (modifiedS > Math.floor(conditions.ifUnmodifiedSinceMs / 1000)) {
      return { status: 412, header: "if-unmodified-since" };
    }
  }
  if (conditions.ifNoneMatch !== undefined) {
    if (etagMatches(conditions.ifNoneMatch, object.etag)) {
      return { status: 304, header: "if-none-match" };
    }
  } else if (conditions.ifModifiedSinceMs !== undefined) {
    if (modifiedS <= Math.floor(conditions.ifModifiedSinceMs / 1000)) {
      return { status: 304, header: "if-modified-since" };
    }
  }
  return null;
}

/** What a conditional read decided: serve it, or answer 304. 412 is thrown. */
export type ReadConditionResult = "ok" | "not-modified";

/**
 * Evaluates conditions for GET and HEAD in RFC 9110 order, which is S3's: If-Match (412),
 * else If-Unmodified-Since (412); then If-None-Match (304), else If-Modified-Since (304).
 * So If-Match true with If-Unmodified-Since false serves the object, and If-None-Match
 * false with If-Modified-Since true answers 304. Times compare at whole seconds, the
 * precision of HTTP dates. Throws PreconditionFailed; returns "not-modified" for 304.
 */
export function evaluateReadConditions(
  conditions: Conditions,
  object: { etag: string; lastModifiedMs: number },
): ReadConditionResult {
  const failed = failedCondition(conditions, object);
  if (failed === null) return "ok";
  if (failed.status === 304) return "not-modified";
  throw preconditionFailed(failed.header);
}

/**
 * The copy-source conditions of CopyObject and UploadPartCopy: the same rules, but every
 * failure is 412 PreconditionFailed (a copy never answers 304).
 */
export function evaluateCopySourceConditions(
  conditions: Conditions,
  source: { etag: string; lastModifiedMs: number },
): void {
  const failed = failedCondition(conditions, source);
  if (failed !== null) throw preconditionFailed(`x-amz-copy-source-${failed.header}`);
}

/** What a conditional write's commit must still find: the key absent, or at a version. */
export interface WriteGuard {
  ifAbsent?: boolean;
  ifVersion?: number;
}

/**
 * Conditional writes (PutObject, CompleteMultipartUpload): If-None-Match `*` refuses to
 * overwrite an existing key, If-None-Match with ETags refuses to overwrite an object that
 * has one of them, If-Match requires one of its ETags (412 PreconditionFailed; If-Match on a
 * missing key is NoSuchKey). `current` is the object now under the key, or null. Returns what
 * the commit must find so that the decision still holds when it is ordered (the key still
 * absent, or still at the version judged), none when no condition was given.
 */
export function evaluateWriteConditions(
  conditions: Conditions,
  current: { etag: string; version: number } | null,
): WriteGuard {
  if (conditions.ifNoneMatch === undefined && conditions.ifMatch === undefined) return {};
  if (conditions.ifNoneMatch !== undefined && current !== null) {
    if (etagMatches(conditions.ifNoneMatch, current.etag)) {
      throw preconditionFailed("If-None-Match");
    }
  }
  if (conditions.ifMatch !== undefined) {
    if (current === null) throw new S3Error("NoSuchKey");
    if (!etagMatches(conditions.ifMatch, current.etag)) throw preconditionFailed("If-Match");
  }
  return current === null ? { ifAbsent: true } : { ifVersion: current.version };
}

function preconditionFailed(condition: string): S3Error {
  return new S3Error("PreconditionFailed", undefined, { details: { Condition: condition } });
}

/** The source of a copy, from x-amz-copy-source (`bucket/key` or `/bucket/key`, encoded). */
export interface CopySource {
  bucket: string;
  key: string;
  versionId?: string;
}

export function parseCopySource(value: string): CopySource {
  const invalid = (why: string) =>
    new S3Error("InvalidArgument", `Invalid copy source: ${why}`, {
      details: { ArgumentName: "x-amz-copy-source", ArgumentValue: value.slice(0, 1100) },
    });
  let text = value.trim();
  let versionId: string | undefined;
  const q = text.indexOf("?");
  if (q >= 0) {
    const params = parseQuery(text.slice(q + 1));
    for (const name of params.keys()) {
      if (name !== "versionId") throw invalid(`unknown parameter ${name}`);
    }
    versionId = params.get("versionId");
    text = text.slice(0, q);
  }
  if (text.startsWith("/")) text = text.slice(1);
  const slash = text.indexOf("/");
  if (slash <= 0 || slash === text.length - 1) throw invalid("it must be bucket/key");
  const bucket = decodeComponent(text.slice(0, slash));
  const key = decodeComponent(text.slice(slash + 1));
  checkBucketName(bucket);
  checkKey(key);
  if (versionId !== undefined && versionId !== "null") {
    throw new S3Error("NoSuchKey", "The specified version does not exist.", { key });
  }
  return versionId === undefined ? { bucket, key } : { bucket, key, versionId };
}

/** x-amz-copy-source-range of UploadPartCopy: `bytes=first-last`, both given. */
export function parseCopySourceRange(value: string): { first: number; last: number } {
  const m = /^bytes=(\d+)-(\d+)$/.exec(value.trim());
  const first = m === null ? NaN : Number(m[1]);
  const last = m === null ? NaN : Number(m[2]);
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first) {
    throw new S3Error(
      "InvalidArgument",
      "The x-amz-copy-source-range value must be of the form bytes=first-last where first " +
        "and last are the zero-based offsets of the first and last bytes to copy",
      { details: { ArgumentName: "x-amz-copy-source-range", ArgumentValue: value } },
    );
  }
  return { first, last };
}

/**
 * An integer query parameter (max-keys, part-number-marker, ...): `fallback` when absent,
 * InvalidArgument when not an integer in [min, max]; values above `clampMax` are lowered
 * to it (S3 caps max-keys at 1,000 instead of refusing more).
 */
export function parseIntegerParam(
  query: Map<string, string>,
  name: string,
  options: { fallback: number; min: number; max?: number; clampMax?: number },
): number {
  const text = query.get(name);
  if (text === undefined) return options.fallback;
  const invalid = () =>
    new S3Error("InvalidArgument", `Provided ${name} is not a valid integer in range`, {
      details: { ArgumentName: name, ArgumentValue: text },
    });
  if (!/^-?\d{1,16}$/.test(text)) throw invalid();
  const n = Number(text);
  if (n < options.min || (options.max !== undefined && n > options.max)) throw invalid();
  return options.clampMax === undefined ? n : Math.min(n, options.clampMax);
}

/**
 * Content-Length as a byte count; null when absent. InvalidArgument when malformed;
 * MissingContentLength is the caller's to raise, since chunked bodies may omit it.
 */
export function parseContentLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  if (value === null) return null;
  if (!/^\d{1,16}$/.test(value.trim())) {
    throw new S3Error("InvalidArgument", "Content-Length is not a valid byte count", {
      details: { ArgumentName: "Content-Length", ArgumentValue: value },
    });
  }
  return Number(value.trim());
}
