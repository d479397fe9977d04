// S3 errors as AWS sends them: the code table (HTTP status and AWS's default message) and
// the XML error document. Every request the gateway refuses ends as one S3Error rendered
// here; nothing else in the gateway invents status codes.

/** An error code's HTTP status and the message AWS sends when nothing more specific applies. */
export interface S3ErrorSpec {
  readonly status: number;
  readonly message: string;
}

/**
 * The S3 error codes Kiseki sends, with AWS's statuses and default messages (from the S3
 * API reference, "List of error codes").
 */
export const S3_ERRORS = {
  AccessDenied: { status: 403, message: "Access Denied" },
  AuthorizationHeaderMalformed: {
    status: 400,
    message: "The authorization header you provided is invalid.",
  },
  AuthorizationQueryParametersError: {
    status: 400,
    message: "Error parsing the X-Amz-Credential parameter.",
  },
  BadDigest: {
    status: 400,
    message: "The Content-MD5 you specified did not match what we received.",
  },
  BucketAlreadyExists: {
    status: 409,
    message: "The requested bucket name is not available. The bucket namespace is shared by " +
      "all users of the system. Please select a different name and try again.",
  },
  BucketAlreadyOwnedByYou: {
    status: 409,
    message: "Your previous request to create the named bucket succeeded and you already own it.",
  },
  BucketNotEmpty: { status: 409, message: "The bucket you tried to delete is not empty" },
  EntityTooLarge: {
    status: 400,
    message: "Your proposed upload exceeds the maximum allowed object size.",
  },
  EntityTooSmall: {
    status: 400,
    message: "Your proposed upload is smaller than the minimum allowed object size.",
  },
  IncompleteBody: {
    status: 400,
    message: "You did not provide the number of bytes specified by the Content-Length HTTP header.",
  },
  // Not an AWS code (AWS never runs out of space); MinIO answers 507 XMinioStorageFull.
  InsufficientStorage: {
    status: 507,
    message: "The storage pool has no free space for this write. Space returns as deleted " +
      "data is reclaimed; retry later, delete data or add capacity.",
  },
  InternalError: { status: 500, message: "We encountered an internal error. Please try again." },
  InvalidAccessKeyId: {
    status: 403,
    message: "The AWS Access Key Id you provided does not exist in our records.",
  },
  InvalidArgument: { status: 400, message: "Invalid Argument" },
  InvalidBucketName: { status: 400, message: "The specified bucket is not valid." },
  InvalidDigest: { status: 400, message: "The Content-MD5 you specified is not valid." },
  InvalidLocationConstraint: {
    status: 400,
    message: "The specified location-constraint is not valid",
  },
  InvalidPart: {
    status: 400,
    message: "One or more of the specified parts could not be found. The part may not have " +
      "been uploaded, or the specified entity tag may not match the part's entity tag.",
  },
  InvalidPartNumber: { status: 416, message: "The requested partnumber is not satisfiable" },
  InvalidPartOrder: {
    status: 400,
    message: "The list of parts was not in ascending order. Parts must be ordered by part number.",
  },
  InvalidRange: { status: 416, message: "The requested range is not satisfiable" },
  InvalidRequest: { status: 400, message: "Invalid Request" },
  InvalidURI: { status: 400, message: "Couldn't parse the specified URI." },
  KeyTooLongError: { status: 400, message: "Your key is too long" },
  MalformedXML: {
    status: 400,
    message: "The XML you provided was not well-formed or did not validate against our " +
      "published schema",
  },
  MalformedTrailerError: {
    status: 400,
    message: "The request contained trailing data that was not well-formed or did not " +
      "conform to our published schema.",
  },
  MaxMessageLengthExceeded: { status: 400, message: "Your request was too big." },
  MetadataTooLarge: {
    status: 400,
    message: "Your metadata headers exceed the maximum allowed metadata size",
  },
  MethodNotAllowed: {
    status: 405,
    message: "The specified method is not allowed against this resource.",
  },
  MissingContentLength: {
    status: 411,
    message: "You must provide the Content-Length HTTP header.",
  },
  MissingRequestBodyError: { status: 400, message: "Request Body is empty" },
  NoSuchBucket: { status: 404, message: "The specified bucket does not exist" },
  NoSuchKey: { status: 404, message: "The specified key does not exist." },
  NoSuchUpload: {
    status: 404,
    message: "The specified upload does not exist. The upload ID may be invalid, or the " +
      "upload may have been aborted or completed.",
  },
  NotImplemented: {
    status: 501,
    message: "A header you provided implies functionality that is not implemented",
  },
  NotModified: { status: 304, message: "Not Modified" },
  PreconditionFailed: {
    status: 412,
    message: "At least one of the pre-conditions you specified did not hold",
  },
  RequestHeaderSectionTooLarge: {
    status: 400,
    message: "Your request header section exceeds the maximum allowed size.",
  },
  RequestTimeout: {
    status: 400,
    message: "Your socket connection to the server was not read from or written to within " +
      "the timeout period.",
  },
  RequestTimeTooSkewed: {
    status: 403,
    message: "The difference between the request time and the current time is too large.",
  },
  ServiceUnavailable: { status: 503, message: "Reduce your request rate." },
  SignatureDoesNotMatch: {
    status: 403,
    message: "The request signature we calculated does not match the signature you provided. " +
      "Check your key and signing method.",
  },
  SlowDown: { status: 503, message: "Please reduce your request rate." },
  XAmzContentSHA256Mismatch: {
    status: 400,
    message: "The provided 'x-amz-content-sha256' header does not match what was computed.",
  },
} as const satisfies Record<string, S3ErrorSpec>;

export type S3ErrorCode = keyof typeof S3_ERRORS;

/** Statuses whose responses never carry a body (RFC 9110: 304; HEAD is the caller's). */
const BODYLESS_STATUSES: ReadonlySet<number> = new Set([204, 304]);

/** Extra error elements (ArgumentName, RequestTime, ...) a rendered error may carry. */
export const S3_ERROR_DETAILS_MAX = 16;

export interface S3ErrorOptions {
  /** The resource the request named: `/bucket/key`, `/bucket`. */
  resource?: string;
  /** Rendered as <BucketName>, as AWS does for NoSuchBucket and bucket-level errors. */
  bucketName?: string;
  /** Rendered as <Key>, as AWS does for NoSuchKey. */
  key?: string;
  /**
   * Further elements AWS adds for some codes, in order: ArgumentName/ArgumentValue for
   * InvalidArgument, RequestTime/ServerTime/MaxAllowedSkewMilliseconds for
   * RequestTimeTooSkewed, StringToSign/CanonicalRequest for SignatureDoesNotMatch, ...
   */
  details?: Record<string, string>;
  /** Response headers the error needs (Content-Range on 416, Allow on 405, ...). */
  headers?: Record<string, string>;
  /**
   * The HTTP status, where AWS answers a code with another than its usual one: an
   * X-Amz-Expires out of range is AuthorizationQueryParametersError with 403, not 400.
   */
  status?: 400 | 403;
  cause?: unknown;
}

/** A request the gateway refuses, shaped as S3 reports it. */
export class S3Error extends Error {
  override name = "S3Error";
  readonly code: S3ErrorCode;
  readonly status: number;
  resource: string | undefined;
  bucketName: string | undefined;
  key: string | undefined;
  readonly details: Readonly<Record<string, string>>;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: S3ErrorCode, message?: string, options: S3ErrorOptions = {}) {
    super(message ?? S3_ERRORS[code].message, { cause: options.cause });
    this.code = code;
    this.status = options.status ?? S3_ERRORS[code].status;
    this.resource = options.resource;
    this.bucketName = options.bucketName;
    this.key = options.key;
    const details = options.details ?? {};
    if (Object.keys(details).length > S3_ERROR_DETAILS_MAX) {
      throw new RangeError(`S3Error carries at most ${S3_ERROR_DETAILS_MAX} details`);
    }
    for (const name of Object.keys(details)) {
      if (!/^[A-Za-z][A-Za-z0-9-]*$/.test(name)) {
        throw new RangeError(`S3Error detail name ${JSON.stringify(name)} is not an XML name`);
      }
    }
    this.details = Object.freeze({ ...details });
    this.headers = Object.freeze({ ...(options.headers ?? {}) });
  }

  /** False for NotModified: a 304 has headers only. */
  get hasBody(): boolean {
    return !BODYLESS_STATUSES.has(this.status);
  }
}

/** Whether `code` is one of the codes in S3_ERRORS. */
export function isS3ErrorCode(code: string): code is S3ErrorCode {
  return Object.hasOwn(S3_ERRORS, code);
}

// XML 1.0 allows tab, LF, CR and U+0020 upward except surrogates, U+FFFE and U+FFFF.
// AWS writes the others as character references; clients that parse leniently recover
// them, strict ones would fail on a raw control character either way.
// deno-lint-ignore no-control-regex
const XML_ESCAPE = /[&<>"'\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g;
const XML_ESCAPES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&apos;",
};

/** Escapes text for an XML element or attribute value. */
export function escapeXml(text: string): string {
  return text.replace(
    XML_ESCAPE,
    (c) => XML_ESCAPES[c] ?? `&#x${c.charCodeAt(0).toString(16).toUpperCase()};`,
  );
}

export interface RenderS3ErrorOptions {
  /** The request id also sent as x-amz-request-id. */
  requestId: string;
  /** Sent as <HostId> (and x-amz-id-2) when given. */
  hostId?: string;
}

/**
 * The XML error document for `error`, byte for byte as AWS lays it out:
 * `<?xml ...?>\n<Error><Code/><Message/>[<BucketName/>][<Key/>][details]<Resource/>
 * <RequestId/>[<HostId/>]</Error>` on one line after the declaration.
 */
export function renderS3Error(error: S3Error, options: RenderS3ErrorOptions): string {
  const parts = [
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error>`,
    element("Code", error.code),
    element("Message", error.message),
  ];
  if (error.bucketName !== undefined) parts.push(element("BucketName", error.bucketName));
  if (error.key !== undefined) parts.push(element("Key", error.key));
  for (const [name, value] of Object.entries(error.details)) parts.push(element(name, value));
  if (error.resource !== undefined) parts.push(element("Resource", error.resource));
  parts.push(element("RequestId", options.requestId));
  if (options.hostId !== undefined) parts.push(element("HostId", options.hostId));
  parts.push("</Error>");
  return parts.join("");
}

function element(name: string, value: string): string {
  return `<${name}>${escapeXml(value)}</${name}>`;
}

/** Any thrown value as an S3Error: S3Errors pass through, anything else is InternalError. */
export function toS3Error(error: unknown): S3Error {
  if (error instanceof S3Error) return error;
  return new S3Error("InternalError", undefined, { cause: error });
}
