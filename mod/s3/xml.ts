// S3's XML bodies: the documents the gateway sends (listings, multipart results, copy and
// delete results, bucket location and versioning) laid out as AWS lays them out, and the
// three request bodies it reads (CreateBucketConfiguration, CompleteMultipartUpload,
// Delete), parsed strictly. The only importer of fast-xml-parser.

import { XMLParser, XMLValidator } from "fast-xml-parser";
import { escapeXml, S3Error } from "./errors.ts";

export const S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/";
const DECLARATION = `<?xml version="1.0" encoding="UTF-8"?>\n`;

/** Largest XML request body read (10,000 parts or 1,000 keys of 1 KiB, escaped). */
export const XML_BODY_BYTES_MAX = 8 << 20;
/** Keys one DeleteObjects request may name (AWS: 1,000). */
export const DELETE_OBJECTS_KEYS_MAX = 1000;
/** Parts one CompleteMultipartUpload may list (AWS: 10,000). */
export const MULTIPART_PARTS_MAX = 10000;
/** Nesting depth of a request document: none of the three goes past four. */
const XML_DEPTH_MAX = 8;

// --- Dates and encodings -------------------------------------------------------------------

/** ISO 8601 with milliseconds, as S3 lists times: `2026-11-24T10:00:00.000Z`. */
export function formatS3Date(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * `encoding-type=url` as S3 applies it: percent-encoding of the UTF-8 bytes (a space is
 * `%20`, `+` is `%2B`) except RFC 3986's unreserved characters and `/`, which stay. AWS
 * answers so: ceph's s3-tests (test_bucket_list_encoding_basic, run against AWS) expect the
 * keys `quux ab/` and `foo+1/` as `quux%20ab/` and `foo%2B1/`, and AWS's documentation shows
 * `test_file(3).png` as `test_file%283%29.png`. botocore decodes it with unquote_plus, the
 * other SDKs with a plain percent-decoder: both read `%20` back as a space.
 */
export function s3UrlEncode(text: string): string {
  let out = "";
  for (const b of new TextEncoder().encode(text)) {
    if (
      (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) ||
      b === 0x2d || b === 0x2e || b === 0x5f || b === 0x7e || b === 0x2f
    ) {
      out += String.fromCharCode(b);
    } else {
      out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }
  }
  return out;
}

/** An ETag as S3 writes it: in double quotes. */
export function quoteETag(etag: string): string {
  return etag.startsWith('"') ? etag : `"${etag}"`;
}

// --- A small writer --------------------------------------------------------------------------

type Child = string | null | undefined | false;

function el(name: string, ...children: Child[]): string {
  const body = children.filter((c): c is string => typeof c === "string").join("");
  return `<${name}>${body}</${name}>`;
}

function text(name: string, value: string | number | boolean | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  return `<${name}>${escapeXml(String(value))}</${name}>`;
}

function root(name: string, ...children: Child[]): string {
  const body = children.filter((c): c is string => typeof c === "string").join("");
  return `${DECLARATION}<${name} xmlns="${S3_XMLNS}">${body}</${name}>`;
}

// --- Documents the gateway sends -------------------------------------------------------------

export interface S3Owner {
  id: string;
  displayName: string;
}

function owner(name: string, o: S3Owner | undefined): string | null {
  if (o === undefined) return null;
  return el(name, text("ID", o.id), text("DisplayName", o.displayName));
}

export interface BucketEntry {
  name: string;
  creationDateMs: number;
}

/**
 * ListBuckets. ContinuationToken (the next page's token) is sent when more buckets follow,
 * Prefix when the request gave one, as AWS does.
 */
export function buildListAllMyBucketsResult(result: {
  owner: S3Owner;
  buckets: readonly BucketEntry[];
  continuationToken?: string;
  prefix?: string;
}): string {
  return root(
    "ListAllMyBucketsResult",
    owner("Owner", result.owner),
    el(
      "Buckets",
      ...result.buckets.map((b) =>
        el("Bucket", text("Name", b.name), text("CreationDate", formatS3Date(b.creationDateMs)))
      ),
    ),
    text("ContinuationToken", result.continuationToken),
    text("Prefix", result.prefix),
  );
}

export interface ObjectEntry {
  key: string;
  lastModifiedMs: number;
  etag: string;
  sizeBytes: number;
  storageClass?: string;
  /** Sent when the listing asks for owners (v1 always, v2 with fetch-owner=true). */
  owner?: S3Owner;
}

export interface ListObjectsCommon {
  bucket: string;
  prefix: string;
  delimiter?: string;
  maxKeys: number;
  isTruncated: boolean;
  contents: readonly ObjectEntry[];
  commonPrefixes: readonly string[];
  /** encoding-type=url: keys, prefixes, delimiter and markers sent URL-encoded. */
  encodingUrl?: boolean;
}

function encoder(encodingUrl: boolean | undefined): (s: string) => string {
  return encodingUrl ? s3UrlEncode : (s) => s;
}

function contents(entries: readonly ObjectEntry[], enc: (s: string) => string): string[] {
  return entries.map((o) =>
    el(
      "Contents",
      text("Key", enc(o.key)),
      text("LastModified", formatS3Date(o.lastModifiedMs)),
      text("ETag", quoteETag(o.etag)),
      text("Size", o.sizeBytes),
      owner("Owner", o.owner),
      text("StorageClass", o.storageClass ?? "STANDARD"),
    )
  );
}

function commonPrefixes(prefixes: readonly string[], enc: (s: string) => string): string[] {
  return prefixes.map((p) => el("CommonPrefixes", text("Prefix", enc(p))));
}

/** ListObjects (v1). NextMarker is sent when truncated and a delimiter was given. */
export function buildListObjectsResult(
  result: ListObjectsCommon & { marker: string; nextMarker?: string },
): string {
  const enc = encoder(result.encodingUrl);
  return root(
    "ListBucketResult",
    text("Name", result.bucket),
    text("Prefix", enc(result.prefix)),
    text("Marker", enc(result.marker)),
    result.nextMarker !== undefined && text("NextMarker", enc(result.nextMarker)),
    text("MaxKeys", result.maxKeys),
    result.delimiter !== undefined && text("Delimiter", enc(result.delimiter)),
    text("IsTruncated", result.isTruncated),
    ...contents(result.contents, enc),
    ...commonPrefixes(result.commonPrefixes, enc),
    result.encodingUrl && text("EncodingType", "url"),
  );
}

/** ListObjectsV2. KeyCount counts contents and common prefixes, as AWS does. */
export function buildListObjectsV2Result(
  result: ListObjectsCommon & {
    continuationToken?: string;
    nextContinuationToken?: string;
    startAfter?: string;
  },
): string {
  const enc = encoder(result.encodingUrl);
  return root(
    "ListBucketResult",
    text("Name", result.bucket),
    text("Prefix", enc(result.prefix)),
    result.continuationToken !== undefined && text("ContinuationToken", result.continuationToken),
    result.nextContinuationToken !== undefined &&
      text("NextContinuationToken", result.nextContinuationToken),
    text("KeyCount", result.contents.length + result.commonPrefixes.length),
    text("MaxKeys", result.maxKeys),
    result.delimiter !== undefined && text("Delimiter", enc(result.delimiter)),
    text("IsTruncated", result.isTruncated),
    result.startAfter !== undefined && text("StartAfter", enc(result.startAfter)),
    ...contents(result.contents, enc),
    ...commonPrefixes(result.commonPrefixes, enc),
    result.encodingUrl && text("EncodingType", "url"),
  );
}

/**
 * ListObjectVersions of an unversioned bucket: every object is its only version, with
 * VersionId `null` and IsLatest true, and there are no delete markers.
 */
export function buildListVersionsResult(
  result: ListObjectsCommon & {
    owner: S3Owner;
    keyMarker: string;
    versionIdMarker: string;
    nextKeyMarker?: string;
    nextVersionIdMarker?: string;
  },
): string {
  const enc = encoder(result.encodingUrl);
  return root(
    "ListVersionsResult",
    text("Name", result.bucket),
    text("Prefix", enc(result.prefix)),
    text("KeyMarker", enc(result.keyMarker)),
    text("VersionIdMarker", result.versionIdMarker),
    result.nextKeyMarker !== undefined && text("NextKeyMarker", enc(result.nextKeyMarker)),
    result.nextVersionIdMarker !== undefined &&
      text("NextVersionIdMarker", result.nextVersionIdMarker),
    text("MaxKeys", result.maxKeys),
    result.delimiter !== undefined && text("Delimiter", enc(result.delimiter)),
    text("IsTruncated", result.isTruncated),
    ...result.contents.map((o) =>
      el(
        "Version",
        text("Key", enc(o.key)),
        text("VersionId", "null"),
        text("IsLatest", true),
        text("LastModified", formatS3Date(o.lastModifiedMs)),
        text("ETag", quoteETag(o.etag)),
        text("Size", o.sizeBytes),
        owner("Owner", o.owner ?? result.owner),
        text("StorageClass", o.storageClass ?? "STANDARD"),
      )
    ),
    ...commonPrefixes(result.commonPrefixes, enc),
    result.encodingUrl && text("EncodingType", "url"),
  );
}

export function buildInitiateMultipartUploadResult(
  result: { bucket: string; key: string; uploadId: string },
): string {
  return root(
    "InitiateMultipartUploadResult",
    text("Bucket", result.bucket),
    text("Key", result.key),
    text("UploadId", result.uploadId),
  );
}

/** Checksums a result may carry, by element name (ChecksumCRC32, ...), base64 values. */
export type ChecksumElements = Partial<
  Record<
    | "ChecksumCRC32"
    | "ChecksumCRC32C"
    | "ChecksumCRC64NVME"
    | "ChecksumSHA1"
    | "ChecksumSHA256",
    string
  >
>;

function checksumElements(checksums: ChecksumElements | undefined): string[] {
  if (checksums === undefined) return [];
  return Object.entries(checksums).map(([name, value]) => text(name, value)!);
}

export function buildCompleteMultipartUploadResult(result: {
  location: string;
  bucket: string;
  key: string;
  etag: string;
  checksums?: ChecksumElements;
}): string {
  return root(
    "CompleteMultipartUploadResult",
    text("Location", result.location),
    text("Bucket", result.bucket),
    text("Key", result.key),
    text("ETag", quoteETag(result.etag)),
    ...checksumElements(result.checksums),
  );
}

export interface PartEntry {
  partNumber: number;
  lastModifiedMs: number;
  etag: string;
  sizeBytes: number;
  checksums?: ChecksumElements;
}

export function buildListPartsResult(result: {
  bucket: string;
  key: string;
  uploadId: string;
  initiator: S3Owner;
  owner: S3Owner;
  storageClass?: string;
  partNumberMarker: number;
  nextPartNumberMarker?: number;
  maxParts: number;
  isTruncated: boolean;
  parts: readonly PartEntry[];
}): string {
  return root(
    "ListPartsResult",
    text("Bucket", result.bucket),
    text("Key", result.key),
    text("UploadId", result.uploadId),
    owner("Initiator", result.initiator),
    owner("Owner", result.owner),
    text("StorageClass", result.storageClass ?? "STANDARD"),
    text("PartNumberMarker", result.partNumberMarker),
    result.nextPartNumberMarker !== undefined &&
      text("NextPartNumberMarker", result.nextPartNumberMarker),
    text("MaxParts", result.maxParts),
    text("IsTruncated", result.isTruncated),
    ...result.parts.map((p) =>
      el(
        "Part",
        text("PartNumber", p.partNumber),
        text("LastModified", formatS3Date(p.lastModifiedMs)),
        text("ETag", quoteETag(p.etag)),
        text("Size", p.sizeBytes),
        ...checksumElements(p.checksums),
      )
    ),
  );
}

export interface UploadEntry {
  key: string;
  uploadId: string;
  initiator: S3Owner;
  owner: S3Owner;
  storageClass?: string;
  initiatedMs: number;
}

export function buildListMultipartUploadsResult(result: {
  bucket: string;
  keyMarker: string;
  uploadIdMarker: string;
  nextKeyMarker?: string;
  nextUploadIdMarker?: string;
  delimiter?: string;
  prefix: string;
  maxUploads: number;
  isTruncated: boolean;
  uploads: readonly UploadEntry[];
  commonPrefixes: readonly string[];
  encodingUrl?: boolean;
}): string {
  const enc = encoder(result.encodingUrl);
  return root(
    "ListMultipartUploadsResult",
    text("Bucket", result.bucket),
    text("KeyMarker", enc(result.keyMarker)),
    text("UploadIdMarker", result.uploadIdMarker),
    result.nextKeyMarker !== undefined && text("NextKeyMarker", enc(result.nextKeyMarker)),
    result.nextUploadIdMarker !== undefined &&
      text("NextUploadIdMarker", result.nextUploadIdMarker),
    result.delimiter !== undefined && text("Delimiter", enc(result.delimiter)),
    text("Prefix", enc(result.prefix)),
    text("MaxUploads", result.maxUploads),
    text("IsTruncated", result.isTruncated),
    ...result.uploads.map((u) =>
      el(
        "Upload",
        text("Key", enc(u.key)),
        text("UploadId", u.uploadId),
        owner("Initiator", u.initiator),
        owner("Owner", u.owner),
        text("StorageClass", u.storageClass ?? "STANDARD"),
        text("Initiated", formatS3Date(u.initiatedMs)),
      )
    ),
    ...commonPrefixes(result.commonPrefixes, enc),
    result.encodingUrl && text("EncodingType", "url"),
  );
}

export function buildCopyObjectResult(
  result: { lastModifiedMs: number; etag: string; checksums?: ChecksumElements },
): string {
  return root(
    "CopyObjectResult",
    text("LastModified", formatS3Date(result.lastModifiedMs)),
    text("ETag", quoteETag(result.etag)),
    ...checksumElements(result.checksums),
  );
}

export function buildCopyPartResult(
  result: { lastModifiedMs: number; etag: string; checksums?: ChecksumElements },
): string {
  return root(
    "CopyPartResult",
    text("LastModified", formatS3Date(result.lastModifiedMs)),
    text("ETag", quoteETag(result.etag)),
    ...checksumElements(result.checksums),
  );
}

export interface DeleteOutcome {
  key: string;
  versionId?: string;
  /** Absent when the key was deleted (or did not exist: S3 reports that as deleted too). */
  error?: { code: string; message: string };
}

/** DeleteObjects' answer; in quiet mode only the failures are listed. */
export function buildDeleteResult(
  result: { quiet: boolean; outcomes: readonly DeleteOutcome[] },
): string {
  return root(
    "DeleteResult",
    ...result.outcomes.map((o) => {
      if (o.error !== undefined) {
        return el(
          "Error",
          text("Key", o.key),
          text("VersionId", o.versionId),
          text("Code", o.error.code),
          text("Message", o.error.message),
        );
      }
      if (result.quiet) return null;
      return el("Deleted", text("Key", o.key), text("VersionId", o.versionId));
    }),
  );
}

/** GetBucketLocation: empty for us-east-1, as AWS answers. */
export function buildLocationConstraint(region: string): string {
  const value = region === "us-east-1" ? "" : escapeXml(region);
  return `${DECLARATION}<LocationConstraint xmlns="${S3_XMLNS}">${value}</LocationConstraint>`;
}

/** GetBucketVersioning of a bucket whose versioning was never enabled: an empty document. */
export function buildVersioningConfiguration(): string {
  return `${DECLARATION}<VersioningConfiguration xmlns="${S3_XMLNS}"/>`;
}

// --- Request bodies --------------------------------------------------------------------------

/** One element of a parsed request document. */
export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  /** The element's text (character data and CDATA), entities decoded. */
  text: string;
}

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: "",
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: false,
  removeNSPrefix: false,
  processEntities: false,
  htmlEntities: false,
  cdataPropName: "#cdata",
  commentPropName: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
  maxNestedTags: XML_DEPTH_MAX,
});

const ENTITY = /&(?:(amp|lt|gt|quot|apos)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));|&/g;
const NAMED: Readonly<Record<string, string>> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
};

function malformed(detail?: string): S3Error {
  return new S3Error(
    "MalformedXML",
    detail === undefined ? undefined : `${S3_MALFORMED_MESSAGE} (${detail})`,
  );
}
const S3_MALFORMED_MESSAGE =
  "The XML you provided was not well-formed or did not validate against our published schema";

function isXmlChar(cp: number): boolean {
  return cp === 0x9 || cp === 0xa || cp === 0xd || (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) || (cp >= 0x10000 && cp <= 0x10ffff);
}

/** Decodes the five predefined entities and character references; anything else is malformed. */
function decodeEntities(raw: string): string {
  return raw.replace(ENTITY, (whole, named, dec, hex) => {
    if (named !== undefined) return NAMED[named]!;
    if (dec === undefined && hex === undefined) throw malformed(`stray "&"`);
    const cp = dec !== undefined ? parseInt(dec, 10) : parseInt(hex, 16);
    if (!isXmlChar(cp)) throw malformed(`${whole} is not an XML character`);
    return String.fromCodePoint(cp);
  });
}

type OrderedNode = Record<string, unknown>;

function toElement(node: OrderedNode, depth: number): XmlElement {
  const name = Object.keys(node).find((k) => k !== ":@")!;
  const attributes = (node[":@"] ?? {}) as Record<string, string>;
  const element: XmlElement = { name, attributes, children: [], text: "" };
  if (depth > XML_DEPTH_MAX) throw malformed("nested too deeply");
  // S3 documents use the default namespace; a prefixed name is another vocabulary.
  if (name.includes(":")) throw malformed(`<${name}> is not an S3 element`);
  for (const child of (node[name] ?? []) as OrderedNode[]) {
    if ("#text" in child) {
      element.text += decodeEntities(normalizeNewlines(String(child["#text"])));
    } else if ("#cdata" in child) {
      for (const part of child["#cdata"] as OrderedNode[]) {
        element.text += normalizeNewlines(String(part["#text"] ?? ""));
      }
    } else {
      element.children.push(toElement(child, depth + 1));
    }
  }
  if (element.children.length > 0 && element.text.trim() !== "") {
    throw malformed(`<${name}> mixes text and elements`);
  }
  return element;
}

function normalizeNewlines(text: string): string {
  return text.replace(/\r\n?/g, "\n");
}

/**
 * Parses a request document into elements: well-formed XML 1.0, no DOCTYPE (no entity
 * definitions to expand), one root. MalformedXML otherwise; MaxMessageLengthExceeded when
 * longer than XML_BODY_BYTES_MAX.
 */
export function parseXmlDocument(body: string | Uint8Array): XmlElement {
  if (typeof body !== "string") {
    if (body.length > XML_BODY_BYTES_MAX) throw new S3Error("MaxMessageLengthExceeded");
    try {
      body = new TextDecoder("utf-8", { fatal: true }).decode(body);
    } catch {
      throw malformed("the body is not UTF-8");
    }
  }
  if (body.length > XML_BODY_BYTES_MAX) throw new S3Error("MaxMessageLengthExceeded");
  if (body.trim() === "") throw new S3Error("MissingRequestBodyError");
  if (/<!DOCTYPE/i.test(body)) throw malformed("document type declarations are not accepted");
  const valid = XMLValidator.validate(body);
  if (valid !== true) throw malformed(`line ${valid.err.line}: ${valid.err.msg}`);
  let ordered: OrderedNode[];
  try {
    ordered = parser.parse(body) as OrderedNode[];
  } catch (e) {
    throw malformed((e as Error).message);
  }
  const roots = ordered.filter((n) => !("#text" in n));
  if (roots.length !== 1) throw malformed("a document has exactly one root element");
  return toElement(roots[0]!, 1);
}

function expectRoot(element: XmlElement, name: string): void {
  if (element.name !== name) throw malformed(`the root element must be <${name}>`);
  const ns = element.attributes["xmlns"];
  if (ns !== undefined && ns !== S3_XMLNS) throw malformed(`unknown namespace ${ns}`);
}

function only(element: XmlElement, allowed: readonly string[]): void {
  for (const child of element.children) {
    if (!allowed.includes(child.name)) {
      throw malformed(`<${child.name}> is not allowed in <${element.name}>`);
    }
  }
}

function single(element: XmlElement, name: string): XmlElement | undefined {
  const found = element.children.filter((c) => c.name === name);
  if (found.length > 1) throw malformed(`<${name}> appears more than once in <${element.name}>`);
  const first = found[0];
  if (first !== undefined && first.children.length > 0) {
    throw malformed(`<${name}> must hold text`);
  }
  return first;
}

export interface CreateBucketConfiguration {
  locationConstraint: string | null;
}

/** CreateBucket's optional body; an empty body is no constraint. */
export function parseCreateBucketConfiguration(
  body: string | Uint8Array,
): CreateBucketConfiguration {
  const text = typeof body === "string" ? body : new TextDecoder().decode(body);
  if (text.trim() === "") return { locationConstraint: null };
  const doc = parseXmlDocument(body);
  expectRoot(doc, "CreateBucketConfiguration");
  only(doc, ["LocationConstraint", "Location", "Bucket"]);
  const location = single(doc, "LocationConstraint");
  const value = location?.text.trim();
  return { locationConstraint: value === undefined || value === "" ? null : value };
}

export interface CompletedPart {
  partNumber: number;
  /** The ETag as the client listed it, without quotes. */
  etag: string;
  checksums: ChecksumElements;
}

const CHECKSUM_ELEMENT_NAMES = [
  "ChecksumCRC32",
  "ChecksumCRC32C",
  "ChecksumCRC64NVME",
  "ChecksumSHA1",
  "ChecksumSHA256",
] as const;

/**
 * CompleteMultipartUpload's part list, in the order given (ordering is the caller's check).
 * MalformedXML for an empty body, as AWS answers it.
 */
export function parseCompleteMultipartUpload(body: string | Uint8Array): CompletedPart[] {
  // AWS answers an empty completion MalformedXML (not MissingRequestBodyError).
  const blank = body.length <= XML_BODY_BYTES_MAX &&
    (typeof body === "string" ? body.trim() === "" : body.every((b) => b <= 0x20));
  if (blank) throw malformed("the body is empty");
  const doc = parseXmlDocument(body);
  expectRoot(doc, "CompleteMultipartUpload");
  only(doc, ["Part"]);
  if (doc.children.length === 0) throw malformed("no <Part> is listed");
  if (doc.children.length > MULTIPART_PARTS_MAX) {
    throw malformed(`more than ${MULTIPART_PARTS_MAX} parts are listed`);
  }
  return doc.children.map((part) => {
    only(part, ["PartNumber", "ETag", ...CHECKSUM_ELEMENT_NAMES]);
    const numberText = single(part, "PartNumber")?.text.trim();
    const etagText = single(part, "ETag")?.text.trim();
    if (numberText === undefined || etagText === undefined) {
      throw malformed("every <Part> needs <PartNumber> and <ETag>");
    }
    if (!/^[0-9]{1,5}$/.test(numberText)) {
      throw malformed(`PartNumber ${numberText} is not a number`);
    }
    const partNumber = Number(numberText);
    if (partNumber < 1 || partNumber > MULTIPART_PARTS_MAX) {
      throw new S3Error(
        "InvalidArgument",
        `Part number must be an integer between 1 and ${MULTIPART_PARTS_MAX}, inclusive`,
        { details: { ArgumentName: "partNumber", ArgumentValue: numberText } },
      );
    }
    const checksums: ChecksumElements = {};
    for (const name of CHECKSUM_ELEMENT_NAMES) {
      const value = single(part, name)?.text.trim();
      if (value !== undefined) checksums[name] = value;
    }
    return { partNumber, etag: etagText.replace(/^"(.*)"$/, "$1"), checksums };
  });
}

export interface DeleteRequest {
  quiet: boolean;
  objects: Array<{ key: string; versionId?: string }>;
}

/** DeleteObjects' body: 1 to DELETE_OBJECTS_KEYS_MAX objects, optional Quiet. */
export function parseDelete(body: string | Uint8Array): DeleteRequest {
  const doc = parseXmlDocument(body);
  expectRoot(doc, "Delete");
  only(doc, ["Object", "Quiet"]);
  const quietText = single(doc, "Quiet")?.text.trim();
  if (quietText !== undefined && quietText !== "true" && quietText !== "false") {
    throw malformed(`Quiet must be true or false, not ${quietText}`);
  }
  const objects = doc.children.filter((c) => c.name === "Object");
  if (objects.length === 0) throw malformed("no <Object> is listed");
  if (objects.length > DELETE_OBJECTS_KEYS_MAX) {
    throw malformed(`more than ${DELETE_OBJECTS_KEYS_MAX} objects are listed`);
  }
  return {
    quiet: quietText === "true",
    objects: objects.map((o) => {
      only(o, ["Key", "VersionId", "ETag", "LastModifiedTime", "Size"]);
      const key = single(o, "Key")?.text;
      if (key === undefined || key === "") throw malformed("every <Object> needs a <Key>");
      const versionId = single(o, "VersionId")?.text.trim();
      return versionId === undefined ? { key } : { key, versionId };
    }),
  };
}
