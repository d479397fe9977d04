// The S3 gateway: one HTTP request in, one response out. Parses the request into an
// operation, verifies its SigV4 signature against the access-key store, runs the operation
// on the object backend (buckets are the signing tenant's namespaces) and answers with the
// headers, XML and error documents AWS sends. Bodies stream both ways; an upload's body is
// decoded (aws-chunked) and verified (signatures, SHA-256, Content-MD5, checksums) on its
// way into the backend, which commits nothing when the stream fails.

import { assert, type Clock, SystemClock } from "../base/mod.ts";
import {
  CompositionError,
  type CompositionErrorCode,
  fromHex,
  type Namespace,
  type NamespaceRef,
  resolvePart,
  TENANT_ID_BYTES,
  toHex,
} from "../composition/mod.ts";
import { type Hashing, type RandomSource, systemRandom } from "../crypto/mod.ts";
import { counter, histogram, log as rootLog, type Logger } from "../obs/mod.ts";
import { AwsChunkedDecoder } from "./aws_chunked.ts";
import type { BackendBody, BackendByteRange, BackendObjectInfo, S3Backend } from "./backend.ts";
import {
  BodyDigester,
  type BodyDigestOptions,
  type BodyDigests,
  BodyDigestStream,
  type ChecksumAlgorithm,
  checksumAlgorithmOfHeader,
  checksumHeaderName,
  combineCrcs,
  fromBase64,
  isCombinable,
  parseChecksumAlgorithm,
  parseChecksumValue,
  parseContentMd5,
  toBase64,
} from "./checksums.ts";
import type { Credential, CredentialStore } from "./credentials.ts";
import { renderS3Error, S3_ERRORS, S3Error, type S3ErrorCode } from "./errors.ts";
import { refuseUnsupportedHeaders } from "./header_policy.ts";
import { isSendableHeaderValue, S3_RETRY_AFTER_SECONDS } from "./listener.ts";
import {
  type ChecksumType,
  metadataHeaders,
  objectMetadata,
  storedChecksums,
  type UploadChecksum,
  uploadChecksum,
  uploadChecksumEntries,
  withChecksums,
} from "./object_metadata.ts";
import { readRequestBytes, requestBodyStream, type S3HttpRequest } from "./request_body.ts";
import {
  evaluateCopySourceConditions,
  evaluateReadConditions,
  evaluateWriteConditions,
  parseConditions,
  parseContentLength,
  parseCopySource,
  parseCopySourceRange,
  parseIntegerParam,
  parseRange,
  parseS3Request,
  resolveRange,
  type S3OperationName,
  type S3Request,
  type WriteGuard,
} from "./request.ts";
import { type SigV4Request, SigV4Verifier, uriEncode, type VerifiedSigV4 } from "./sigv4.ts";
import {
  buildCompleteMultipartUploadResult,
  buildCopyObjectResult,
  buildCopyPartResult,
  buildDeleteResult,
  buildInitiateMultipartUploadResult,
  buildListAllMyBucketsResult,
  buildListMultipartUploadsResult,
  buildListObjectsResult,
  buildListObjectsV2Result,
  buildListPartsResult,
  buildListVersionsResult,
  buildLocationConstraint,
  buildVersioningConfiguration,
  type ChecksumElements,
  type CompletedPart,
  type DeleteOutcome,
  MULTIPART_PARTS_MAX,
  type ObjectEntry,
  parseCompleteMultipartUpload,
  parseCreateBucketConfiguration,
  parseDelete,
  quoteETag,
  type S3Owner,
  XML_BODY_BYTES_MAX,
} from "./xml.ts";

/** The region buckets report (GetBucketLocation, x-amz-bucket-region) unless configured. */
export const S3_REGION_DEFAULT = "us-east-1";
/** Keys, uploads or parts one listing page returns at most (AWS: 1,000). */
export const S3_LIST_PAGE_MAX = 1000;
/** Deletes of one DeleteObjects request run this many at a time. */
export const S3_DELETE_OBJECTS_CONCURRENCY = 16;
/** Buckets one ListBuckets page returns at most (AWS: 10,000 with max-buckets). */
export const S3_LIST_BUCKETS_PAGE_MAX = 10000;
/**
 * Open uploads DeleteBucket aborts at most before it gives up with BucketNotEmpty: the
 * views' own bound on uploads per namespace (100,000).
 */
export const S3_DELETE_BUCKET_UPLOADS_MAX = 100_000;
/** What AWS answers objects stored without a Content-Type. */
export const S3_CONTENT_TYPE_DEFAULT = "binary/octet-stream";

const XML_CONTENT_TYPE = "application/xml";

const requestsTotal = counter<"op" | "status">({
  name: "kiseki_gateway_requests_total",
  help: "S3 requests answered, by operation and HTTP status",
  labelNames: ["op", "status"],
});
const requestSeconds = histogram<"op">({
  name: "kiseki_gateway_request_duration_seconds",
  help: "Time to answer an S3 request (until the response starts)",
  labelNames: ["op"],
});
const bytesIn = counter<"op">({
  name: "kiseki_gateway_bytes_in_total",
  help: "Request body bytes declared by Content-Length (or x-amz-decoded-content-length)",
  labelNames: ["op"],
});
const bytesOut = counter<"op">({
  name: "kiseki_gateway_bytes_out_total",
  help: "Response body bytes declared by Content-Length",
  labelNames: ["op"],
});

export interface S3GatewayOptions {
  backend: S3Backend;
  credentials: CredentialStore;
  /** Host names under which buckets are addressed virtual-host style (see request.ts). */
  baseDomains?: readonly string[];
  /** Region reported for buckets; requests may be signed for any region. */
  region?: string;
  clock?: Clock;
  random?: RandomSource;
  logger?: Logger;
  /** Sent as x-amz-id-2 and HostId: which node answered. */
  hostId?: string;
  /** The backend's tenant id of a credential's tenant (default: 32 hex digits). */
  tenantIdOf?: (tenantId: string) => Uint8Array;
  /**
   * Hashing off the event loop (the OpenSSL shim) for streamed bodies' payload SHA-256;
   * default: node:crypto on the loop.
   */
  hashing?: Hashing;
}

/** What every operation gets: the parsed request, who signed it, the raw request. */
interface OperationContext {
  http: S3HttpRequest;
  s3: S3Request;
  auth: VerifiedSigV4<Credential>;
  tenant: Uint8Array;
  owner: S3Owner;
}

function hexTenantId(tenantId: string): Uint8Array {
  const bytes = /^[0-9a-f]+$/.test(tenantId) ? fromHex(tenantId, TENANT_ID_BYTES) : null;
  // A broken access-key record, not a client error: logged, answered InternalError.
  if (bytes === null) {
    throw new Error(`access key of tenant ${JSON.stringify(tenantId)}: not a tenant id`);
  }
  return bytes;
}

function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

/** S3 error code of each composition failure, as the composition layer documents it. */
const COMPOSITION_CODES: Record<CompositionErrorCode, S3ErrorCode> = {
  invalid_argument: "InvalidArgument",
  namespace_not_found: "NoSuchBucket",
  namespace_exists: "BucketAlreadyOwnedByYou",
  namespace_not_empty: "BucketNotEmpty",
  wrong_kind: "InvalidRequest",
  not_found: "NoSuchKey",
  exists: "InvalidRequest",
  not_empty: "InvalidRequest",
  not_a_directory: "InvalidRequest",
  is_a_directory: "InvalidRequest",
  invalid_rename: "InvalidRequest",
  too_many_links: "InvalidRequest",
  precondition_failed: "PreconditionFailed",
  no_such_upload: "NoSuchUpload",
  invalid_part: "InvalidPart",
  invalid_part_order: "InvalidPartOrder",
  entity_too_small: "EntityTooSmall",
  too_large: "EntityTooLarge",
  read_only: "ServiceUnavailable",
  no_space: "InsufficientStorage",
  unavailable: "SlowDown",
};

/** The S3Error for anything an operation threw; unknown errors become InternalError. */
export function s3ErrorOf(
  e: unknown,
  target?: { bucket: string | null; key: string | null },
): S3Error {
  if (e instanceof S3Error) return e;
  if (e instanceof CompositionError) {
    const { sizeBytes, partNumber, partsCount } = e as CompositionError & {
      sizeBytes?: number;
      partNumber?: number;
      partsCount?: number;
    };
    if (
      e.name === "ObjectPartError" && typeof partNumber === "number" &&
      typeof partsCount === "number"
    ) {
      return new S3Error("InvalidPartNumber", undefined, {
        details: { PartNumberRequested: String(partNumber), ActualPartCount: String(partsCount) },
        cause: e,
      });
    }
    if (e.name === "ObjectRangeError" && typeof sizeBytes === "number") {
      return new S3Error("InvalidRange", undefined, {
        details: { ActualObjectSize: String(sizeBytes) },
        headers: { "Content-Range": `bytes */${sizeBytes}` },
        cause: e,
      });
    }
    const code = COMPOSITION_CODES[e.code] ?? "InternalError";
    const options: {
      bucketName?: string;
      key?: string;
      cause: unknown;
      headers?: Record<string, string>;
    } = { cause: e };
    if (S3_ERRORS[code].status === 503) options.headers = { "Retry-After": S3_RETRY_AFTER_SECONDS };
    if (
      code === "NoSuchBucket" || code === "BucketNotEmpty" || code === "BucketAlreadyOwnedByYou"
    ) {
      if (target?.bucket) options.bucketName = target.bucket;
    }
    if (code === "NoSuchKey" && target?.key) options.key = target.key;
    // Default messages where AWS's wording is what clients expect; the cause keeps detail.
    const message = code === "InvalidArgument" || code === "InvalidRequest" ||
        code === "EntityTooLarge" || code === "InvalidPart"
      ? e.message
      : undefined;
    return new S3Error(code, message, options);
  }
  return new S3Error("InternalError", undefined, { cause: e });
}

/** Listing entries of objects, with `owner` when the listing shows owners. */
function objectEntries(
  objects: readonly { key: string; modifiedMs: number; etag: string; size: number }[],
  owner: ObjectEntry["owner"],
): ObjectEntry[] {
  return objects.map((o) => ({
    key: o.key,
    lastModifiedMs: o.modifiedMs,
    etag: o.etag,
    sizeBytes: o.size,
    owner,
  }));
}

/**
 * Whether `request` asked for "100 Continue" and gets its final answer without one: the
 * listener sends 100 only when the body is first read (mod/s3/http1.ts), so an empty body
 * and a refused upload (its signature is checked before any body byte is asked for) are
 * answered without it, and a client may still send the body after waiting. botocore (seen
 * with 1.29, under aws-cli v2 and boto3) then parses the next response on that connection
 * with this one's status line, misreads it and waits out its read timeout (60 s): `aws s3
 * sync` of a tree holding an empty file stalls so. Closing the connection avoids it.
 */
export function answeredWithoutContinue(request: S3HttpRequest): boolean {
  if (request.headers.get("expect")?.trim().toLowerCase() !== "100-continue") return false;
  return request.headers.get("content-length")?.trim() === "0" || !request.bodyUsed;
}

/** Query parameters of GET and HEAD Object that set a response header, and the header. */
const RESPONSE_HEADER_OVERRIDES: ReadonlyArray<readonly [string, string]> = [
  ["response-content-disposition", "content-disposition"],
  ["response-content-encoding", "content-encoding"],
  ["response-content-language", "content-language"],
  ["response-cache-control", "cache-control"],
  ["response-expires", "expires"],
];

/**
 * Refuses response-* parameters whose (percent-decoded) value no header can carry: a
 * control character or one past U+00FF. Checked before the object is read.
 */
export function checkResponseOverrides(query: ReadonlyMap<string, string>): void {
  for (const param of ["response-content-type", ...RESPONSE_HEADER_OVERRIDES.map(([p]) => p)]) {
    const value = query.get(param);
    if (value !== undefined && !isSendableHeaderValue(value)) {
      throw new S3Error("InvalidArgument", `${param} holds a character no header can carry`, {
        details: { ArgumentName: param, ArgumentValue: JSON.stringify(value).slice(1, -1) },
      });
    }
  }
}

/** Reads a whole (small) body, refusing more than `maxBytes`. */
async function readAll(stream: ReadableStream<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += chunk.length;
    if (total > maxBytes) throw new S3Error("MaxMessageLengthExceeded");
    parts.push(chunk);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(controller) {
      controller.close();
    },
  });
}

/** Runs `fn` over `items`, at most `limit` at a time, keeping order of results. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Plain bodies (neither aws-chunked nor unsigned-length) announced at or below this size are
 * read whole in one native read and digested in one pass: no stream hop per piece.
 */
export const WHOLE_BODY_BYTES_MAX = 1 << 20;

/**
 * The decoded, verified body of an upload and what it promised: `source` is the whole body
 * (already verified) or a stream that fails unless it verifies.
 */
interface RequestBody<Source = BackendBody> {
  source: Source;
  /** Decoded length announced by the client; null when it announced none. */
  sizeBytes: number | null;
  /** Resolves with the body's digests once it ended and verified. */
  digests: Promise<BodyDigests>;
  /**
   * Checksums the client sent in x-amz-checksum-* headers (base64): known before the body
   * streams, and the body fails unless it matches them, so they may be stored with it.
   */
  declaredChecksums: Partial<Record<ChecksumAlgorithm, string>>;
  /**
   * A checksum an aws-chunked trailer carries (x-amz-trailer names it): known, and verified,
   * only once the body has ended; null when the upload announced none.
   */
  trailerChecksums: Promise<Partial<Record<ChecksumAlgorithm, string>>> | null;
}

/**
 * A completion's part list as AWS takes it: ascending part numbers, where a number may be
 * listed more than once (a client that uploaded a part twice lists both answers; ceph's
 * s3-tests test_multipart_resend_first_finishes_last, which AWS passes, completes so) and
 * the last entry of a number is the one that counts; a number below the previous one is
 * InvalidPartOrder.
 */
export function completionParts(listed: readonly CompletedPart[]): CompletedPart[] {
  const out: CompletedPart[] = [];
  for (const part of listed) {
    const last = out[out.length - 1];
    if (last !== undefined && part.partNumber < last.partNumber) {
      throw new S3Error("InvalidPartOrder");
    }
    if (last !== undefined && part.partNumber === last.partNumber) out[out.length - 1] = part;
    else out.push(part);
  }
  return out;
}

export class S3Gateway {
  readonly backend: S3Backend;
  readonly credentials: CredentialStore;
  readonly baseDomains: readonly string[];
  readonly region: string;
  readonly verifier: SigV4Verifier;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #log: Logger;
  readonly #hostId: string;
  readonly #tenantIdOf: (tenantId: string) => Uint8Array;
  readonly #hashing: Hashing | undefined;

  constructor(options: S3GatewayOptions) {
    this.backend = options.backend;
    this.credentials = options.credentials;
    this.baseDomains = options.baseDomains ?? [];
    this.region = options.region ?? S3_REGION_DEFAULT;
    this.verifier = new SigV4Verifier();
    this.#clock = options.clock ?? new SystemClock();
    this.#random = options.random ?? systemRandom;
    this.#log = options.logger ?? rootLog;
    this.#hostId = options.hostId ?? "kiseki";
    this.#tenantIdOf = options.tenantIdOf ?? hexTenantId;
    this.#hashing = options.hashing;
  }

  /** Answers one request; never throws (every failure is an S3 error response). */
  async handle(request: S3HttpRequest): Promise<Response> {
    const started = performance.now();
    const requestId = this.#requestId();
    let s3: S3Request | null = null;
    let response: Response;
    try {
      s3 = parseS3Request(
        { method: request.method, url: request.url, headers: request.headers },
        { baseDomains: this.baseDomains },
      );
      const signed: SigV4Request = {
        method: request.method,
        path: s3.wirePath,
        query: s3.wireQuery,
        headers: request.headers,
      };
      const auth = await this.verifier.verify(signed, {
        nowMs: this.#clock.nowMs(),
        lookup: (id) => this.credentials.lookup(id),
      });
      refuseUnsupportedHeaders(s3.operation, request.headers);
      const tenantHex = auth.credential.tenantId;
      const ctx: OperationContext = {
        http: request,
        s3,
        auth,
        tenant: this.#tenantIdOf(tenantHex),
        owner: { id: tenantHex, displayName: tenantHex },
      };
      response = await this.#dispatch(ctx);
    } catch (e) {
      response = this.#errorResponse(e, request.method, s3, requestId);
    }
    response.headers.set("x-amz-request-id", requestId);
    response.headers.set("x-amz-id-2", this.#hostId);
    response.headers.set("server", "Kiseki");
    if (answeredWithoutContinue(request)) response.headers.set("connection", "close");
    const op = s3?.operation ?? "unknown";
    const seconds = (performance.now() - started) / 1000;
    requestsTotal.inc({ op, status: String(response.status) });
    requestSeconds.observe({ op }, seconds);
    const inBytes = Number(
      request.headers.get("x-amz-decoded-content-length") ??
        request.headers.get("content-length") ?? 0,
    );
    if (inBytes > 0) bytesIn.inc({ op }, inBytes);
    const outBytes = Number(response.headers.get("content-length") ?? 0);
    if (outBytes > 0) bytesOut.inc({ op }, outBytes);
    if (this.#log.enabled("debug")) {
      // One access-log line per request, at debug level.
      this.#log.debug("s3 access", {
        requestId,
        method: request.method,
        path: new URL(request.url).pathname,
        op,
        status: response.status,
        ms: Math.round(seconds * 1000 * 10) / 10,
        in: inBytes,
        out: outBytes,
      });
    }
    return response;
  }

  #requestId(): string {
    const bytes = new Uint8Array(8);
    this.#random(bytes);
    return toHex(bytes).toUpperCase();
  }

  #errorResponse(e: unknown, method: string, s3: S3Request | null, requestId: string): Response {
    const error = s3ErrorOf(e, s3 ?? undefined);
    if (error.resource === undefined && s3 !== null) error.resource = s3.resource;
    // Server-side failures only: NotImplemented and SlowDown are answers, not faults.
    if (error.status >= 500 && error.status !== 501 && error.status !== 503) {
      this.#log.error("s3 request failed", {
        op: s3?.operation ?? "unknown",
        code: error.code,
        error: String((error.cause as Error | undefined)?.message ?? error.message),
        requestId,
      });
    }
    const headers = new Headers(error.headers);
    if (method === "HEAD" || !error.hasBody) {
      return new Response(null, { status: error.status, headers });
    }
    headers.set("content-type", XML_CONTENT_TYPE);
    return new Response(renderS3Error(error, { requestId, hostId: this.#hostId }), {
      status: error.status,
      headers,
    });
  }

  #dispatch(ctx: OperationContext): Promise<Response> {
    const handlers: Record<S3OperationName, (ctx: OperationContext) => Promise<Response>> = {
      ListBuckets: (c) => this.#listBuckets(c),
      CreateBucket: (c) => this.#createBucket(c),
      HeadBucket: (c) => this.#headBucket(c),
      DeleteBucket: (c) => this.#deleteBucket(c),
      GetBucketLocation: (c) => this.#getBucketLocation(c),
      GetBucketVersioning: (c) => this.#getBucketVersioning(c),
      ListObjectVersions: (c) => this.#listObjectVersions(c),
      ListObjects: (c) => this.#listObjects(c, 1),
      ListObjectsV2: (c) => this.#listObjects(c, 2),
      ListMultipartUploads: (c) => this.#listMultipartUploads(c),
      DeleteObjects: (c) => this.#deleteObjects(c),
      PutObject: (c) => this.#putObject(c),
      GetObject: (c) => this.#getObject(c, false),
      HeadObject: (c) => this.#getObject(c, true),
      DeleteObject: (c) => this.#deleteObject(c),
      CopyObject: (c) => this.#copyObject(c),
      CreateMultipartUpload: (c) => this.#createMultipartUpload(c),
      UploadPart: (c) => this.#uploadPart(c),
      UploadPartCopy: (c) => this.#uploadPartCopy(c),
      ListParts: (c) => this.#listParts(c),
      CompleteMultipartUpload: (c) => this.#completeMultipartUpload(c),
      AbortMultipartUpload: (c) => this.#abortMultipartUpload(c),
    };
    return handlers[ctx.s3.operation](ctx);
  }

  // ---- helpers -------------------------------------------------------------------------------

  #ns(ctx: OperationContext, bucket = ctx.s3.bucket): NamespaceRef {
    assert(bucket !== null, "a bucket operation names a bucket");
    return this.backend.namespace(ctx.tenant, bucket);
  }

  async #bucket(ctx: OperationContext): Promise<Namespace> {
    const ns = await this.backend.getNamespace(this.#ns(ctx));
    if (ns.kind !== "bucket") {
      throw new S3Error(
        "InvalidRequest",
        `${ctx.s3.bucket} is a POSIX file system namespace, not a bucket`,
        { bucketName: ctx.s3.bucket! },
      );
    }
    return ns;
  }

  #xml(body: string, status = 200, headers: Record<string, string> = {}): Response {
    return new Response(body, {
      status,
      headers: { "content-type": XML_CONTENT_TYPE, ...headers },
    });
  }

  /**
   * The upload body: aws-chunked decoded when streamed, then checked against the length,
   * SHA-256, Content-MD5 and x-amz-checksum-* the client claimed. `required`: a body
   * without any length (neither Content-Length nor aws-chunked's decoded length) is
   * MissingContentLength.
   */
  /**
   * The body of an upload for the backend: a small plain body whole and already verified
   * (WHOLE_BODY_BYTES_MAX), anything else as a verifying stream (see #requestBody).
   */
  async #uploadBody(ctx: OperationContext): Promise<RequestBody> {
    const sizeBytes = parseContentLength(ctx.http.headers);
    if (
      ctx.auth.payload.startsWith("streaming-") || sizeBytes === null ||
      sizeBytes > WHOLE_BODY_BYTES_MAX
    ) {
      return this.#requestBody(ctx, true);
    }
    const { options, declaredChecksums } = this.#digestOptions(ctx, sizeBytes);
    const digester = new BodyDigester(options);
    const bytes = await readRequestBytes(ctx.http);
    digester.update(bytes);
    const digests = digester.finish();
    return {
      source: bytes,
      sizeBytes,
      digests: Promise.resolve(digests),
      declaredChecksums,
      trailerChecksums: null,
    };
  }

  #requestBody(
    ctx: OperationContext,
    required: boolean,
    checksumsOfBody = true,
  ): RequestBody<ReadableStream<Uint8Array>> {
    const headers = ctx.http.headers;
    const contentLength = parseContentLength(headers);
    let stream = requestBodyStream(ctx.http) ?? emptyStream();
    let sizeBytes: number | null = contentLength;
    const payload = ctx.auth.payload;
    let trailerChecksums: RequestBody["trailerChecksums"] = null;
    if (payload.startsWith("streaming-")) {
      const decoded = headers.get("x-amz-decoded-content-length");
      if (decoded === null || !/^\d{1,16}$/.test(decoded.trim())) {
        throw new S3Error(
          "MissingContentLength",
          "A streaming (aws-chunked) upload must send x-amz-decoded-content-length",
        );
      }
      sizeBytes = Number(decoded.trim());
      const signed = payload !== "streaming-unsigned-trailer";
      const decoder = new AwsChunkedDecoder({
        signing: signed
          ? {
            signingKey: ctx.auth.signingKey,
            amzDate: ctx.auth.amzDate,
            scope: ctx.auth.scope,
            seedSignature: ctx.auth.signature,
          }
          : null,
        trailer: payload.endsWith("trailer"),
        announcedTrailers: headers.get("x-amz-trailer"),
        decodedLengthBytes: sizeBytes,
      });
      stream = stream.pipeThrough(decoder);
      const announced = headers.get("x-amz-trailer") ?? "";
      if (announced.split(",").some((n) => checksumAlgorithmOfHeader(n.trim()) !== null)) {
        trailerChecksums = decoder.result.then((r) =>
          r.checksum === undefined ? {} : { [r.checksum.algorithm]: r.checksum.value }
        );
        // The body's own error reports a failure; nobody need be waiting for this one.
        trailerChecksums.catch(() => {});
      }
    } else if (sizeBytes === null && required) {
      throw new S3Error("MissingContentLength");
    }
    const { options, declaredChecksums } = this.#digestOptions(ctx, sizeBytes, checksumsOfBody);
    // A streamed body's payload SHA-256 may run off the event loop (its pieces come from the
    // socket and are never changed after).
    const digests = new BodyDigestStream({ ...options, hashing: this.#hashing });
    const trailed = trailerChecksums;
    const all = trailed === null ? digests.digests : Promise.all([digests.digests, trailed])
      .then(([d, t]) => ({ ...d, checksums: { ...d.checksums, ...t } }));
    all.catch(() => {});
    return {
      source: stream.pipeThrough(digests),
      sizeBytes,
      digests: all,
      declaredChecksums,
      trailerChecksums,
    };
  }

  /**
   * What a body must verify against: length, signed SHA-256, Content-MD5, checksums (unless
   * `checksumsOfBody` is false: CompleteMultipartUpload's x-amz-checksum-* is the object's).
   */
  #digestOptions(ctx: OperationContext, sizeBytes: number | null, checksumsOfBody = true): {
    options: BodyDigestOptions;
    declaredChecksums: Partial<Record<ChecksumAlgorithm, string>>;
  } {
    const headers = ctx.http.headers;
    const payload = ctx.auth.payload;
    const checksums: Array<{ algorithm: ChecksumAlgorithm; expected?: Uint8Array }> = [];
    const declaredChecksums: Partial<Record<ChecksumAlgorithm, string>> = {};
    if (checksumsOfBody) {
      headers.forEach((value, name) => {
        const algorithm = checksumAlgorithmOfHeader(name);
        if (algorithm !== null) {
          const expected = parseChecksumValue(algorithm, value);
          checksums.push({ algorithm, expected });
          declaredChecksums[algorithm] = toBase64(expected);
        }
      });
    }
    const named = headers.get("x-amz-checksum-algorithm") ??
      headers.get("x-amz-sdk-checksum-algorithm");
    if (named !== null && !payload.endsWith("trailer") && checksumsOfBody) {
      const algorithm = parseChecksumAlgorithm(named);
      if (!checksums.some((c) => c.algorithm === algorithm)) checksums.push({ algorithm });
    }
    const md5Header = headers.get("content-md5");
    return {
      options: {
        expectedSizeBytes: sizeBytes ?? undefined,
        expectedSha256Hex: payload === "sha256" ? ctx.auth.payloadSha256Hex : undefined,
        expectedMd5: md5Header === null ? undefined : parseContentMd5(md5Header),
        checksums,
      },
      declaredChecksums,
    };
  }

  /** A small XML request body, whole and verified. */
  async #xmlBody(ctx: OperationContext, checksumsOfBody = true): Promise<Uint8Array> {
    const body = this.#requestBody(ctx, false, checksumsOfBody);
    if (body.sizeBytes !== null && body.sizeBytes > XML_BODY_BYTES_MAX) {
      throw new S3Error("MaxMessageLengthExceeded");
    }
    const bytes = await readAll(body.source, XML_BODY_BYTES_MAX);
    await body.digests;
    return bytes;
  }

  /**
   * The checksums the client sent with a body, in x-amz-checksum-* headers or an aws-chunked
   * trailer, once the body has ended and matched them (a checksum only named, for the gateway
   * to compute, is answered but not stored).
   */
  async #sentChecksums(body: RequestBody): Promise<Partial<Record<ChecksumAlgorithm, string>>> {
    await body.digests;
    const trailed = body.trailerChecksums === null ? {} : await body.trailerChecksums;
    return { ...body.declaredChecksums, ...trailed };
  }

  /** Response headers of a stored checksum the client asked for. */
  async #checksumHeaders(body: RequestBody): Promise<Record<string, string>> {
    const { checksums } = await body.digests;
    const out: Record<string, string> = {};
    for (const [algorithm, value] of Object.entries(checksums)) {
      out[`x-amz-checksum-${algorithm.toLowerCase()}`] = value!;
    }
    return out;
  }

  /**
   * The headers of an object read. `wholeObject`: the body is the whole object (not a range),
   * so its stored checksums are sent when the client asked with x-amz-checksum-mode.
   */
  #objectHeaders(
    info: BackendObjectInfo,
    ctx: OperationContext,
    wholeObject: boolean,
  ): Headers {
    const query = ctx.s3.query;
    const headers = new Headers({
      "content-type": query.get("response-content-type") ?? (info.contentType ||
        S3_CONTENT_TYPE_DEFAULT),
      etag: quoteETag(info.etag),
      "last-modified": httpDate(info.modifiedMs),
      "accept-ranges": "bytes",
    });
    const checksums = wholeObject &&
      ctx.http.headers.get("x-amz-checksum-mode")?.trim().toUpperCase() === "ENABLED";
    for (const [name, value] of metadataHeaders(info.metadata, { checksums })) {
      headers.set(name, value);
    }
    for (const [param, header] of RESPONSE_HEADER_OVERRIDES) {
      const value = query.get(param);
      if (value !== undefined) headers.set(header, value);
    }
    return headers;
  }

  #copySource(ctx: OperationContext) {
    const source = parseCopySource(ctx.http.headers.get("x-amz-copy-source")!);
    return { ...source, ns: this.#ns(ctx, source.bucket) };
  }

  // ---- buckets -------------------------------------------------------------------------------

  async #listBuckets(ctx: OperationContext): Promise<Response> {
    const q = ctx.s3.query;
    const maxBuckets = parseIntegerParam(q, "max-buckets", {
      fallback: S3_LIST_BUCKETS_PAGE_MAX,
      min: 1,
      max: S3_LIST_BUCKETS_PAGE_MAX,
    });
    const prefix = q.get("prefix") ?? "";
    // The token is the last name of the page before, base64url: opaque to clients, as AWS's.
    const token = q.get("continuation-token") || undefined;
    let after = "";
    if (token !== undefined) {
      const decoded = /^[A-Za-z0-9_-]{1,128}$/.test(token) ? base64UrlDecode(token) : null;
      if (decoded === null) {
        throw new S3Error("InvalidArgument", "The continuation token provided is incorrect", {
          details: { ArgumentName: "continuation-token", ArgumentValue: token },
        });
      }
      after = decoded;
    }
    const namespaces = await this.backend.listNamespaces(ctx.tenant);
    const matching = namespaces
      .filter((n) => n.kind === "bucket" && n.name.startsWith(prefix) && n.name > after)
      .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    const page = matching.slice(0, maxBuckets);
    const last = page[page.length - 1];
    return this.#xml(buildListAllMyBucketsResult({
      owner: ctx.owner,
      buckets: page.map((n) => ({ name: n.name, creationDateMs: n.createdMs })),
      continuationToken: matching.length > page.length && last !== undefined
        ? base64UrlEncode(last.name)
        : undefined,
      prefix: q.has("prefix") ? prefix : undefined,
    }));
  }

  async #createBucket(ctx: OperationContext): Promise<Response> {
    // Any location constraint is accepted: clients send their configured region.
    parseCreateBucketConfiguration(await this.#xmlBody(ctx));
    if (ctx.http.headers.get("x-amz-bucket-object-lock-enabled")?.toLowerCase() === "true") {
      throw new S3Error("NotImplemented", "Object Lock is not implemented");
    }
    await this.backend.createNamespace(ctx.tenant, ctx.s3.bucket!, "bucket");
    return new Response(null, { status: 200, headers: { location: `/${ctx.s3.bucket}` } });
  }

  async #headBucket(ctx: OperationContext): Promise<Response> {
    await this.#bucket(ctx);
    return new Response(null, { status: 200, headers: { "x-amz-bucket-region": this.region } });
  }

  async #deleteBucket(ctx: OperationContext): Promise<Response> {
    await this.#bucket(ctx);
    const ns = this.#ns(ctx);
    try {
      await this.backend.deleteNamespace(ns);
    } catch (e) {
      if (!(e instanceof CompositionError && e.code === "namespace_not_empty")) throw e;
      // AWS deletes a bucket that holds only multipart uploads, aborting them. An object
      // (or an upload) arriving meanwhile leaves it BucketNotEmpty, as a race at AWS would.
      const objects = await this.backend.listObjects(ns, { maxKeys: 1 });
      if (objects.objects.length > 0) throw e;
      for (let aborted = 0; aborted < S3_DELETE_BUCKET_UPLOADS_MAX;) {
        const { uploads } = await this.backend.listMultipartUploads(ns, {
          maxUploads: S3_LIST_PAGE_MAX,
        });
        if (uploads.length === 0) break;
        await mapLimited(uploads, S3_DELETE_OBJECTS_CONCURRENCY, async (u) => {
          try {
            await this.backend.abortMultipartUpload(ns, u.key, u.uploadId);
          } catch (abortError) {
            // Completed or aborted by someone else meanwhile: gone either way.
            const gone = abortError instanceof CompositionError &&
              abortError.code === "no_such_upload";
            if (!gone) throw abortError;
          }
        });
        aborted += uploads.length;
      }
      await this.backend.deleteNamespace(ns);
    }
    return new Response(null, { status: 204 });
  }

  async #getBucketLocation(ctx: OperationContext): Promise<Response> {
    await this.#bucket(ctx);
    return this.#xml(buildLocationConstraint(this.region));
  }

  async #getBucketVersioning(ctx: OperationContext): Promise<Response> {
    await this.#bucket(ctx);
    return this.#xml(buildVersioningConfiguration());
  }

  // ---- listings ------------------------------------------------------------------------------

  #encodingUrl(query: Map<string, string>): boolean {
    const encoding = query.get("encoding-type");
    if (encoding === undefined) return false;
    if (encoding !== "url") {
      throw new S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", {
        details: { ArgumentName: "encoding-type", ArgumentValue: encoding },
      });
    }
    return true;
  }

  #maxKeys(query: Map<string, string>, name: string): number {
    return parseIntegerParam(query, name, {
      fallback: S3_LIST_PAGE_MAX,
      min: 0,
      max: 2 ** 31 - 1,
      clampMax: S3_LIST_PAGE_MAX,
    });
  }

  /** The parameters every listing shares, checked before the bucket is looked up. */
  async #listing(ctx: OperationContext, pageParam: "max-keys" | "max-uploads"): Promise<{
    q: Map<string, string>;
    encodingUrl: boolean;
    maxKeys: number;
    prefix: string;
    delimiter: string | undefined;
  }> {
    const q = ctx.s3.query;
    const encodingUrl = this.#encodingUrl(q);
    const maxKeys = this.#maxKeys(q, pageParam);
    const prefix = q.get("prefix") ?? "";
    const delimiter = q.get("delimiter") || undefined;
    await this.#bucket(ctx);
    return { q, encodingUrl, maxKeys, prefix, delimiter };
  }

  async #listObjects(ctx: OperationContext, version: 1 | 2): Promise<Response> {
    const { q, encodingUrl, maxKeys, prefix, delimiter } = await this.#listing(ctx, "max-keys");
    const ns = this.#ns(ctx);
    if (version === 1) {
      const marker = q.get("marker") ?? "";
      const result = await this.backend.listObjects(ns, {
        prefix,
        delimiter,
        startAfter: marker || undefined,
        maxKeys,
      });
      return this.#xml(buildListObjectsResult({
        bucket: ctx.s3.bucket!,
        prefix,
        delimiter,
        maxKeys,
        marker,
        nextMarker: result.isTruncated && delimiter !== undefined && result.nextMarker !== null
          ? result.nextMarker
          : undefined,
        isTruncated: result.isTruncated,
        contents: objectEntries(result.objects, ctx.owner),
        commonPrefixes: result.commonPrefixes,
        encodingUrl,
      }));
    }
    // An empty token is no token (AWS: the first page), and is not echoed.
    const continuationToken = q.get("continuation-token") || undefined;
    const startAfter = q.get("start-after");
    const fetchOwner = q.get("fetch-owner") === "true";
    let result;
    try {
      result = await this.backend.listObjects(ns, {
        prefix,
        delimiter,
        startAfter: startAfter || undefined,
        continuationToken: continuationToken === undefined ? undefined : continuationToken,
        maxKeys,
      });
    } catch (e) {
      if (e instanceof CompositionError && e.code === "invalid_argument" && continuationToken) {
        throw new S3Error("InvalidArgument", "The continuation token provided is incorrect", {
          details: { ArgumentName: "continuation-token", ArgumentValue: continuationToken },
        });
      }
      throw e;
    }
    return this.#xml(buildListObjectsV2Result({
      bucket: ctx.s3.bucket!,
      prefix,
      delimiter,
      maxKeys,
      continuationToken,
      nextContinuationToken: result.nextContinuationToken ?? undefined,
      startAfter,
      isTruncated: result.isTruncated,
      contents: objectEntries(result.objects, fetchOwner ? ctx.owner : undefined),
      commonPrefixes: result.commonPrefixes,
      encodingUrl,
    }));
  }

  async #listObjectVersions(ctx: OperationContext): Promise<Response> {
    const { q, encodingUrl, maxKeys, prefix, delimiter } = await this.#listing(ctx, "max-keys");
    const keyMarker = q.get("key-marker") ?? "";
    const result = await this.backend.listObjects(this.#ns(ctx), {
      prefix,
      delimiter,
      startAfter: keyMarker || undefined,
      maxKeys,
    });
    const truncated = result.isTruncated && result.nextMarker !== null;
    return this.#xml(buildListVersionsResult({
      bucket: ctx.s3.bucket!,
      owner: ctx.owner,
      prefix,
      delimiter,
      maxKeys,
      keyMarker,
      versionIdMarker: q.get("version-id-marker") ?? "",
      nextKeyMarker: truncated ? result.nextMarker! : undefined,
      nextVersionIdMarker: truncated ? "null" : undefined,
      isTruncated: result.isTruncated,
      contents: objectEntries(result.objects, undefined),
      commonPrefixes: result.commonPrefixes,
      encodingUrl,
    }));
  }

  async #listMultipartUploads(ctx: OperationContext): Promise<Response> {
    const { q, encodingUrl, maxKeys: maxUploads, prefix, delimiter } = await this.#listing(
      ctx,
      "max-uploads",
    );
    const keyMarker = q.get("key-marker") ?? "";
    const uploadIdMarker = q.get("upload-id-marker") ?? "";
    const result = await this.backend.listMultipartUploads(this.#ns(ctx), {
      prefix,
      delimiter,
      keyMarker: keyMarker || undefined,
      uploadIdMarker: uploadIdMarker || undefined,
      maxUploads,
    });
    return this.#xml(buildListMultipartUploadsResult({
      bucket: ctx.s3.bucket!,
      keyMarker,
      uploadIdMarker,
      nextKeyMarker: result.nextKeyMarker ?? undefined,
      nextUploadIdMarker: result.nextUploadIdMarker ?? undefined,
      delimiter,
      prefix,
      maxUploads,
      isTruncated: result.isTruncated,
      uploads: result.uploads.map((u) => ({
        key: u.key,
        uploadId: u.uploadId,
        initiator: ctx.owner,
        owner: ctx.owner,
        initiatedMs: u.initiatedMs,
      })),
      commonPrefixes: result.commonPrefixes,
      encodingUrl,
    }));
  }

  // ---- objects -------------------------------------------------------------------------------

  async #putObject(ctx: OperationContext): Promise<Response> {
    const headers = ctx.http.headers;
    // Early, so that bad metadata is refused before anything is read.
    objectMetadata(headers);
    const contentType = headers.get("content-type") ?? S3_CONTENT_TYPE_DEFAULT;
    const ns = this.#ns(ctx);
    const key = ctx.s3.key!;
    const guard = await this.#writeGuard(ns, key, parseConditions(headers));
    const body = await this.#uploadBody(ctx);
    const result = await this.backend.putObject(ns, key, body.source, {
      contentType,
      // The checksums the client sent (in headers or a trailer), once the body verified them.
      metadataAfterBody: async () => objectMetadata(headers, await this.#sentChecksums(body)),
      sizeHint: body.sizeBytes ?? undefined,
      ...guard,
    });
    return new Response(null, {
      status: 200,
      headers: { etag: quoteETag(result.etag), ...(await this.#checksumHeaders(body)) },
    });
  }

  /**
   * What a conditional write (If-None-Match, If-Match) needs its commit to find, judged
   * against the object now under the key; nothing without conditions.
   */
  async #writeGuard(
    ns: NamespaceRef,
    key: string,
    conditions: ReturnType<typeof parseConditions>,
  ): Promise<WriteGuard> {
    if (conditions.ifMatch === undefined && conditions.ifNoneMatch === undefined) return {};
    return evaluateWriteConditions(conditions, await this.#currentObject(ns, key));
  }

  async #currentObject(ns: NamespaceRef, key: string): Promise<BackendObjectInfo | null> {
    try {
      return await this.backend.headObject(ns, key);
    } catch (e) {
      if (e instanceof CompositionError && e.code === "not_found") return null;
      throw e;
    }
  }

  async #getObject(ctx: OperationContext, head: boolean): Promise<Response> {
    checkResponseOverrides(ctx.s3.query);
    const headers = ctx.http.headers;
    const ns = this.#ns(ctx);
    const key = ctx.s3.key!;
    const conditions = parseConditions(headers);
    const partNumber = this.#partNumber(ctx) || null;
    if (partNumber !== null && headers.has("range")) {
      throw new S3Error(
        "InvalidRequest",
        "Cannot specify both Range header and partNumber query parameter",
      );
    }
    const spec = parseRange(headers.get("range"));
    if (head) {
      const info = await this.backend.headObject(ns, key);
      if (
        evaluateReadConditions(conditions, { etag: info.etag, lastModifiedMs: info.modifiedMs }) ===
          "not-modified"
      ) {
        return this.#notModified(this.#objectHeaders(info, ctx, false));
      }
      if (partNumber !== null) {
        const part = resolvePart(info.partSizes, info.size, partNumber);
        return this.#partResponse(this.#objectHeaders(info, ctx, part === null), info, part, null);
      }
      // After the conditions: a failed precondition wins over an unsatisfiable range.
      const range = spec === null ? null : resolveRange(spec, info.size);
      const out = this.#objectHeaders(info, ctx, range === null);
      if (range === null) {
        out.set("content-length", String(info.size));
        return new Response(null, { status: 200, headers: out });
      }
      out.set("content-length", String(range.end - range.start + 1));
      out.set("content-range", range.contentRange);
      return new Response(null, { status: 206, headers: out });
    }
    let range: BackendByteRange | undefined;
    if (spec !== null) {
      range = spec.kind === "suffix"
        ? { suffixBytes: spec.length }
        : spec.kind === "from"
        ? { start: spec.first }
        : { start: spec.first, end: spec.last };
    }
    const result = await this.backend.getObject(
      ns,
      key,
      partNumber === null ? { range } : { partNumber },
    );
    let status: ReturnType<typeof evaluateReadConditions>;
    try {
      status = evaluateReadConditions(conditions, {
        etag: result.etag,
        lastModifiedMs: result.modifiedMs,
      });
    } catch (e) {
      await result.body.cancel().catch(() => {});
      throw e;
    }
    const out = this.#objectHeaders(result, ctx, result.range === null);
    if (status === "not-modified") {
      await result.body.cancel().catch(() => {});
      return this.#notModified(out);
    }
    if (partNumber !== null) return this.#partResponse(out, result, result.range, result.body);
    out.set("content-length", String(result.contentLength));
    if (result.range !== null) {
      out.set("content-range", `bytes ${result.range.start}-${result.range.end}/${result.size}`);
      return new Response(result.body, { status: 206, headers: out });
    }
    return new Response(result.body, { status: 200, headers: out });
  }

  /**
   * The answer to GET or HEAD ?partNumber: 206 with the part's bytes and the object's part
   * count, or 200 with the whole object (part 1 of a single-part object; no part count).
   */
  #partResponse(
    out: Headers,
    info: BackendObjectInfo,
    part: { start: number; end: number } | null,
    body: ReadableStream<Uint8Array> | null,
  ): Response {
    if (part === null) {
      out.set("content-length", String(info.size));
      return new Response(body, { status: 200, headers: out });
    }
    assert(info.partSizes !== null, "only a multipart object has a part range");
    const length = part.end - part.start + 1;
    out.set("x-amz-mp-parts-count", String(info.partSizes.length));
    out.set("content-length", String(length));
    // An empty part (an empty last part of an upload) has no byte range to name.
    if (length > 0) out.set("content-range", `bytes ${part.start}-${part.end}/${info.size}`);
    return new Response(body, { status: 206, headers: out });
  }

  #notModified(headers: Headers): Response {
    const out = new Headers();
    for (const name of ["etag", "last-modified"]) out.set(name, headers.get(name)!);
    return new Response(null, { status: 304, headers: out });
  }

  async #deleteObject(ctx: OperationContext): Promise<Response> {
    const versionId = ctx.s3.query.get("versionId");
    if (versionId !== undefined && versionId !== "null") {
      throw new S3Error("InvalidArgument", "Invalid version id specified", {
        details: { ArgumentName: "versionId", ArgumentValue: versionId },
      });
    }
    await this.backend.deleteObject(this.#ns(ctx), ctx.s3.key!);
    return new Response(null, { status: 204 });
  }

  async #deleteObjects(ctx: OperationContext): Promise<Response> {
    const request = parseDelete(await this.#xmlBody(ctx));
    await this.#bucket(ctx);
    const ns = this.#ns(ctx);
    const outcomes = await mapLimited(
      request.objects,
      S3_DELETE_OBJECTS_CONCURRENCY,
      async (o): Promise<DeleteOutcome> => {
        if (o.versionId !== undefined && o.versionId !== "null") {
          return {
            key: o.key,
            versionId: o.versionId,
            error: { code: "NoSuchVersion", message: "The specified version does not exist." },
          };
        }
        try {
          await this.backend.deleteObject(ns, o.key);
          return o.versionId === undefined
            ? { key: o.key }
            : { key: o.key, versionId: o.versionId };
        } catch (e) {
          const error = s3ErrorOf(e, { bucket: ctx.s3.bucket, key: o.key });
          return { key: o.key, error: { code: error.code, message: error.message } };
        }
      },
    );
    return this.#xml(buildDeleteResult({ quiet: request.quiet, outcomes }));
  }

  async #copyObject(ctx: OperationContext): Promise<Response> {
    const headers = ctx.http.headers;
    const source = this.#copySource(ctx);
    const directive = (headers.get("x-amz-metadata-directive") ?? "COPY").toUpperCase();
    if (directive !== "COPY" && directive !== "REPLACE") {
      throw new S3Error("InvalidArgument", "Unknown metadata directive.", {
        details: { ArgumentName: "x-amz-metadata-directive", ArgumentValue: directive },
      });
    }
    const sameObject = source.bucket === ctx.s3.bucket && source.key === ctx.s3.key;
    if (sameObject && directive === "COPY") {
      throw new S3Error(
        "InvalidRequest",
        "This copy request is illegal because it is trying to copy an object to itself " +
          "without changing the object's metadata, storage class, website redirect location " +
          "or encryption attributes.",
      );
    }
    const conditions = parseConditions(headers, "x-amz-copy-source-");
    if (Object.keys(conditions).length > 0) {
      const info = await this.backend.headObject(source.ns, source.key).catch((e) => {
        throw s3ErrorOf(e, { bucket: source.bucket, key: source.key });
      });
      evaluateCopySourceConditions(conditions, {
        etag: info.etag,
        lastModifiedMs: info.modifiedMs,
      });
    }
    const replaced = directive === "REPLACE" ? objectMetadata(headers) : null;
    const options = replaced !== null
      ? {
        // The bytes are the source's, so are their checksums: kept under new metadata.
        metadataOf: (source: Readonly<Record<string, string>>) =>
          withChecksums(replaced, storedChecksums(source)),
        contentType: headers.get("content-type") ?? S3_CONTENT_TYPE_DEFAULT,
      }
      : {};
    const target = this.#ns(ctx);
    const result = await this.backend.copyObject(
      source.ns,
      source.key,
      target,
      ctx.s3.key!,
      options,
    ).catch((e) => {
      // A missing source is named by its own key.
      throw s3ErrorOf(
        e,
        e instanceof CompositionError && e.code === "not_found"
          ? { bucket: source.bucket, key: source.key }
          : ctx.s3,
      );
    });
    const modifiedMs = await this.backend.headObject(target, ctx.s3.key!)
      .then((i) => i.modifiedMs, () => this.#clock.nowMs());
    return this.#xml(buildCopyObjectResult({ lastModifiedMs: modifiedMs, etag: result.etag }));
  }

  // ---- multipart -----------------------------------------------------------------------------

  #partNumber(ctx: OperationContext): number {
    return parseIntegerParam(ctx.s3.query, "partNumber", {
      fallback: 0,
      min: 1,
      max: MULTIPART_PARTS_MAX,
    });
  }

  #uploadId(ctx: OperationContext): string {
    return ctx.s3.query.get("uploadId")!;
  }

  async #createMultipartUpload(ctx: OperationContext): Promise<Response> {
    const headers = ctx.http.headers;
    const named = headers.get("x-amz-checksum-algorithm");
    const algorithm = named === null ? null : parseChecksumAlgorithm(named);
    const type = headers.get("x-amz-checksum-type")?.trim().toUpperCase();
    if (type !== undefined && type !== "COMPOSITE" && type !== "FULL_OBJECT") {
      throw new S3Error("InvalidRequest", `Value for x-amz-checksum-type header is invalid.`);
    }
    if (type !== undefined && algorithm === null) {
      throw new S3Error(
        "InvalidRequest",
        "x-amz-checksum-type requires x-amz-checksum-algorithm.",
      );
    }
    // AWS's defaults and combinations: CRC64NVME is of the whole object only, SHA-1 and
    // SHA-256 of the parts only, CRC32 and CRC32C either (of the parts unless asked).
    const checksum: UploadChecksum | null = algorithm === null ? null : {
      algorithm,
      type: (type ?? (algorithm === "CRC64NVME" ? "FULL_OBJECT" : "COMPOSITE")) as ChecksumType,
    };
    if (
      checksum !== null &&
      ((checksum.type === "FULL_OBJECT" && !isCombinable(checksum.algorithm)) ||
        (checksum.type === "COMPOSITE" && checksum.algorithm === "CRC64NVME"))
    ) {
      throw new S3Error(
        "InvalidRequest",
        `The ${checksum.type} checksum type cannot be used with the ${checksum.algorithm} ` +
          `algorithm.`,
      );
    }
    const metadata = objectMetadata(headers);
    const { uploadId } = await this.backend.createMultipartUpload(this.#ns(ctx), ctx.s3.key!, {
      contentType: headers.get("content-type") ?? S3_CONTENT_TYPE_DEFAULT,
      metadata: checksum === null ? metadata : { ...metadata, ...uploadChecksumEntries(checksum) },
    });
    // The algorithm (and type) the client named come back, as AWS answers them.
    const answer: Record<string, string> = {};
    if (checksum !== null) {
      answer["x-amz-checksum-algorithm"] = checksum.algorithm;
      answer["x-amz-checksum-type"] = checksum.type;
    }
    return this.#xml(
      buildInitiateMultipartUploadResult({ bucket: ctx.s3.bucket!, key: ctx.s3.key!, uploadId }),
      200,
      answer,
    );
  }

  async #uploadPart(ctx: OperationContext): Promise<Response> {
    const partNumber = this.#partNumber(ctx);
    const ns = this.#ns(ctx);
    const key = ctx.s3.key!;
    const uploadId = this.#uploadId(ctx);
    const checksum = await this.#uploadChecksumOf(ns, key, uploadId);
    const body = await this.#uploadBody(ctx);
    // The upload's algorithm is computed over the part when the client sent none of it.
    const sent = checksum !== null && (checksum.algorithm in body.declaredChecksums ||
      (ctx.http.headers.get("x-amz-trailer") ?? "").toLowerCase().includes(
        checksumHeaderName(checksum.algorithm),
      ));
    const computed = checksum === null || sent ? null : digestOf(body.source, checksum.algorithm);
    const result = await this.backend.uploadPart(
      ns,
      key,
      uploadId,
      partNumber,
      computed?.source ?? body.source,
      {
        sizeHint: body.sizeBytes ?? undefined,
        // Kept with the part: the upload's checksum is made from its parts'.
        metadataAfterBody: async () =>
          withChecksums({}, {
            ...(computed === null ? {} : await computed.checksums),
            ...(await this.#sentChecksums(body)),
          }),
      },
    );
    const answer = await this.#checksumHeaders(body);
    for (const [algorithm, value] of Object.entries(computed ? await computed.checksums : {})) {
      answer[checksumHeaderName(algorithm as ChecksumAlgorithm)] ??= value!;
    }
    return new Response(null, {
      status: 200,
      headers: { etag: quoteETag(result.etag), ...answer },
    });
  }

  /** The checksum `uploadId` was created with; null for none, or when it is not there. */
  async #uploadChecksumOf(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
  ): Promise<UploadChecksum | null> {
    try {
      const { upload } = await this.backend.listParts(ns, key, uploadId, { maxParts: 1 });
      return uploadChecksum(upload.metadata);
    } catch (e) {
      // The part's own write answers NoSuchUpload.
      if (e instanceof CompositionError && e.code === "no_such_upload") return null;
      throw e;
    }
  }

  async #uploadPartCopy(ctx: OperationContext): Promise<Response> {
    const headers = ctx.http.headers;
    const partNumber = this.#partNumber(ctx);
    const source = this.#copySource(ctx);
    const rangeHeader = headers.get("x-amz-copy-source-range");
    const range = rangeHeader === null ? null : parseCopySourceRange(rangeHeader);
    const got = await this.backend.getObject(source.ns, source.key, {
      range: range === null ? undefined : { start: range.first, end: range.last },
    }).catch((e) => {
      throw s3ErrorOf(e, { bucket: source.bucket, key: source.key });
    });
    try {
      evaluateCopySourceConditions(parseConditions(headers, "x-amz-copy-source-"), {
        etag: got.etag,
        lastModifiedMs: got.modifiedMs,
      });
      if (range !== null && range.last >= got.size) {
        // AWS: a copy range that reaches past the source's end is not satisfiable.
        throw new S3Error("InvalidRange", undefined, {
          details: { RangeRequested: rangeHeader!, ActualObjectSize: String(got.size) },
        });
      }
    } catch (e) {
      await got.body.cancel().catch(() => {});
      throw e;
    }
    const ns = this.#ns(ctx);
    const key = ctx.s3.key!;
    const uploadId = this.#uploadId(ctx);
    let checksum: UploadChecksum | null;
    try {
      checksum = await this.#uploadChecksumOf(ns, key, uploadId);
    } catch (e) {
      await got.body.cancel().catch(() => {});
      throw e;
    }
    // A copied part gets the upload's checksum too, computed over the bytes copied.
    const computed = checksum === null ? null : digestOf(got.body, checksum.algorithm);
    const result = await this.backend.uploadPart(
      ns,
      key,
      uploadId,
      partNumber,
      computed?.source ?? got.body,
      {
        sizeHint: got.contentLength,
        ...(computed !== null && {
          metadataAfterBody: async () => withChecksums({}, await computed.checksums),
        }),
      },
    );
    const elements: ChecksumElements = {};
    for (const [algorithm, value] of Object.entries(computed ? await computed.checksums : {})) {
      elements[`Checksum${algorithm as ChecksumAlgorithm}`] = value!;
    }
    return this.#xml(
      buildCopyPartResult({
        lastModifiedMs: this.#clock.nowMs(),
        etag: result.etag,
        checksums: elements,
      }),
    );
  }

  async #listParts(ctx: OperationContext): Promise<Response> {
    const q = ctx.s3.query;
    const maxParts = this.#maxKeys(q, "max-parts");
    const partNumberMarker = parseIntegerParam(q, "part-number-marker", {
      fallback: 0,
      min: 0,
      max: MULTIPART_PARTS_MAX,
    });
    const result = await this.backend.listParts(this.#ns(ctx), ctx.s3.key!, this.#uploadId(ctx), {
      partNumberMarker,
      maxParts,
    });
    return this.#xml(buildListPartsResult({
      bucket: ctx.s3.bucket!,
      key: ctx.s3.key!,
      uploadId: this.#uploadId(ctx),
      initiator: ctx.owner,
      owner: ctx.owner,
      partNumberMarker,
      nextPartNumberMarker: result.nextPartNumberMarker ?? undefined,
      maxParts,
      isTruncated: result.isTruncated,
      parts: result.parts.map((p) => ({
        partNumber: p.partNumber,
        lastModifiedMs: p.modifiedMs,
        etag: p.etag,
        sizeBytes: p.size,
        checksums: Object.fromEntries(
          Object.entries(storedChecksums(p.metadata ?? {})).map(([a, v]) => [`Checksum${a}`, v]),
        ),
      })),
    }));
  }

  async #completeMultipartUpload(ctx: OperationContext): Promise<Response> {
    // x-amz-checksum-* of a completion is the whole object's, not its body's.
    const parts = completionParts(parseCompleteMultipartUpload(await this.#xmlBody(ctx, false)));
    const ns = this.#ns(ctx);
    const key = ctx.s3.key!;
    const uploadId = this.#uploadId(ctx);
    const conditions = parseConditions(ctx.http.headers);
    let guard: WriteGuard = {};
    if (conditions.ifMatch !== undefined || conditions.ifNoneMatch !== undefined) {
      const current = await this.#currentObject(ns, key);
      // A repeat of the completion that made the current object answers as it did (the
      // backend checks the parts); its conditions were judged the first time.
      if (current?.completedUploadId !== uploadId.toLowerCase()) {
        guard = evaluateWriteConditions(conditions, current);
      }
    }
    const checksum = await this.#completionChecksum(ctx, ns, key, uploadId, parts);
    const result = await this.backend.completeMultipartUpload(
      ns,
      key,
      uploadId,
      parts.map((p) => ({ partNumber: p.partNumber, etag: p.etag })),
      { ...guard, ...(checksum !== null && { metadata: withChecksums({}, checksum) }) },
    );
    const url = new URL(ctx.http.url);
    const path = ctx.s3.addressing === "path"
      ? `/${ctx.s3.bucket}/${uriEncode(ctx.s3.key!, true)}`
      : `/${uriEncode(ctx.s3.key!, true)}`;
    // A repeat (the upload is gone) answers the checksum the first completion stored.
    let answered: Partial<Record<ChecksumAlgorithm, string>> = checksum ?? {};
    if (checksum === null) {
      const current = await this.#currentObject(ns, key);
      if (
        current !== null && current.completedUploadId === uploadId.toLowerCase() &&
        current.etag === result.etag
      ) {
        answered = storedChecksums(current.metadata);
      }
    }
    const elements: ChecksumElements = {};
    for (const [algorithm, value] of Object.entries(answered)) {
      elements[`Checksum${algorithm as ChecksumAlgorithm}`] = value!;
    }
    return this.#xml(buildCompleteMultipartUploadResult({
      location: `${url.protocol}//${ctx.http.headers.get("host") ?? url.host}${path}`,
      bucket: ctx.s3.bucket!,
      key: ctx.s3.key!,
      etag: result.etag,
      checksums: elements,
    }));
  }

  /**
   * The checksum of the object a completion makes, when its upload was created with one:
   * COMPOSITE, the checksum of the listed parts' checksums then "-<parts>" (AWS's form);
   * FULL_OBJECT, the CRC of the whole object, combined from the parts' CRCs and checked
   * against one the client sent (BadDigest). A part checksum listed in the request must be the
   * stored part's (InvalidPart). Null when the upload has no checksum, or is gone (a repeated
   * completion, answered by the backend).
   */
  async #completionChecksum(
    ctx: OperationContext,
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    parts: readonly CompletedPart[],
  ): Promise<Partial<Record<ChecksumAlgorithm, string>> | null> {
    const stored = new Map<number, { size: number; metadata?: Readonly<Record<string, string>> }>();
    let spec: UploadChecksum | null = null;
    let marker = 0;
    for (let page = 0; page <= MULTIPART_PARTS_MAX / S3_LIST_PAGE_MAX; page++) {
      let listed;
      try {
        listed = await this.backend.listParts(ns, key, uploadId, {
          partNumberMarker: marker,
          maxParts: S3_LIST_PAGE_MAX,
        });
      } catch (e) {
        if (e instanceof CompositionError && e.code === "no_such_upload") return null;
        throw e;
      }
      spec = uploadChecksum(listed.upload.metadata);
      if (spec === null) return null;
      for (const p of listed.parts) stored.set(p.partNumber, p);
      if (!listed.isTruncated || listed.nextPartNumberMarker === null) break;
      marker = listed.nextPartNumberMarker;
    }
    if (spec === null) return null;
    const { algorithm, type } = spec;
    const element = `Checksum${algorithm}` as const;
    const values: Array<{ crc: Uint8Array; sizeBytes: number }> = [];
    for (const p of parts) {
      const part = stored.get(p.partNumber);
      // A part not uploaded: the backend answers InvalidPart.
      if (part === undefined) return null;
      const value = storedChecksums(part.metadata ?? {})[algorithm];
      // Every part gets the upload's checksum (sent or computed); one stored before parts
      // kept checksums has none, and the object then has none either.
      if (value === undefined) return null;
      const listedValue = p.checksums[element];
      if (listedValue !== undefined && listedValue !== value) {
        throw new S3Error(
          "InvalidPart",
          `The ${algorithm} checksum listed for part ${p.partNumber} is not the part's.`,
        );
      }
      values.push({ crc: fromBase64(value)!, sizeBytes: part.size });
    }
    if (type === "COMPOSITE") {
      const digester = new BodyDigester({ checksums: [{ algorithm }] });
      for (const v of values) digester.update(v.crc);
      return { [algorithm]: `${digester.finish().checksums[algorithm]!}-${values.length}` };
    }
    const whole = toBase64(combineCrcs(algorithm, values));
    const claimed = ctx.http.headers.get(checksumHeaderName(algorithm));
    if (claimed !== null && claimed.trim() !== whole) {
      throw new S3Error(
        "BadDigest",
        `The ${algorithm} you specified did not match the calculated checksum.`,
      );
    }
    return { [algorithm]: whole };
  }

  async #abortMultipartUpload(ctx: OperationContext): Promise<Response> {
    await this.backend.abortMultipartUpload(this.#ns(ctx), ctx.s3.key!, this.#uploadId(ctx));
    return new Response(null, { status: 204 });
  }
}

/** `source` passed through a digest of `algorithm`, whose value is known once it has ended. */
function digestOf(
  source: BackendBody,
  algorithm: ChecksumAlgorithm,
): { source: BackendBody; checksums: Promise<Partial<Record<ChecksumAlgorithm, string>>> } {
  if (source instanceof Uint8Array) {
    const digester = new BodyDigester({ checksums: [{ algorithm }] });
    digester.update(source);
    return { source, checksums: Promise.resolve(digester.finish().checksums) };
  }
  const stream = new BodyDigestStream({ checksums: [{ algorithm }] });
  const checksums = stream.digests.then((d) => d.checksums);
  checksums.catch(() => {});
  return { source: source.pipeThrough(stream), checksums };
}

function base64UrlEncode(text: string): string {
  return toBase64(new TextEncoder().encode(text))
    .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The text of a base64url token, or null when it is not one of ours. */
function base64UrlDecode(token: string): string | null {
  const b64 = token.replaceAll("-", "+").replaceAll("_", "/");
  const bytes = fromBase64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  if (bytes === null) return null;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return null;
  }
}
