// What an S3 object keeps besides its bytes and Content-Type, in the one metadata map the
// object backend stores: user metadata (x-amz-meta-*), the headers S3 sends back as they
// were written (Cache-Control, Content-Disposition, ...), and the checksums a client declared.

import { assert } from "../base/mod.ts";
import { METADATA_BYTES_MAX, METADATA_ENTRIES_MAX } from "../composition/mod.ts";
import { CHECKSUM_ALGORITHMS, type ChecksumAlgorithm, checksumHeaderName } from "./checksums.ts";
import { parseUserMetadata, REQUEST_HEADERS_BYTES_MAX, USER_METADATA_PREFIX } from "./request.ts";

/** Headers S3 stores with an object and answers with it (Content-Type is kept apart). */
export const STORED_HEADERS: readonly string[] = Object.freeze([
  "cache-control",
  "content-disposition",
  "content-encoding",
  "content-language",
  "expires",
]);

/**
 * Entries the gateway keeps for itself start with ":", a character no HTTP header name may
 * hold, so no x-amz-meta-* name can ever take or shadow them.
 */
export const GATEWAY_METADATA_PREFIX = ":";
const CHECKSUM_ENTRY_PREFIX = `${GATEWAY_METADATA_PREFIX}checksum-`;

/**
 * Bytes the checksum entries of one object take at most: every algorithm once, its entry
 * name and a base64 value of at most 64 bytes (a composite value adds "-<parts>").
 */
const CHECKSUM_ENTRIES_BYTES_MAX = CHECKSUM_ALGORITHMS.length *
  (CHECKSUM_ENTRY_PREFIX.length + 32 + 64);

// User metadata (2 KiB) and the stored headers each have S3's own limit, both inside the
// request's header section (REQUEST_HEADERS_BYTES_MAX); with the checksums (which may come
// from a trailer) they must always fit what the engine keeps per object, so the engine's
// limit never answers MetadataTooLarge before S3's would.
assert(
  REQUEST_HEADERS_BYTES_MAX + CHECKSUM_ENTRIES_BYTES_MAX <= METADATA_BYTES_MAX,
  "the engine's metadata limit holds a full header section and every checksum",
);
assert(
  REQUEST_HEADERS_BYTES_MAX / (USER_METADATA_PREFIX.length + 4) + STORED_HEADERS.length +
      CHECKSUM_ALGORITHMS.length <= METADATA_ENTRIES_MAX,
  "the engine's metadata entry limit holds every header a request can carry",
);

/**
 * Content-Encoding as stored: as sent, byte for byte, unless it names `aws-chunked`, which
 * only framed the upload and which AWS drops (then the other codings, as listed).
 */
function storedContentEncoding(value: string): string {
  const codings = value.split(",");
  if (!codings.some((v) => v.trim().toLowerCase() === "aws-chunked")) return value;
  return codings
    .filter((v) => v.trim().toLowerCase() !== "aws-chunked")
    .map((v) => v.trim())
    .filter((v) => v !== "")
    .join(",");
}

/**
 * The metadata an object is written with: x-amz-meta-* (MetadataTooLarge past 2 KiB, as AWS
 * measures it: names without the prefix, and values, in UTF-8), the stored headers present in
 * `headers` (as sent; bounded by the request's header section, as at AWS), and `checksums`
 * (base64 values, verified against the body before anything commits).
 */
export function objectMetadata(
  headers: Headers,
  checksums: Partial<Record<ChecksumAlgorithm, string>> = {},
): Record<string, string> {
  const metadata = parseUserMetadata(headers);
  for (const name of STORED_HEADERS) {
    const raw = headers.get(name);
    if (raw === null) continue;
    const value = name === "content-encoding" ? storedContentEncoding(raw) : raw;
    if (value !== "") metadata[`${GATEWAY_METADATA_PREFIX}${name}`] = value;
  }
  return withChecksums(metadata, checksums);
}

/** `metadata` with `checksums` (base64 values by algorithm) as its checksum entries. */
export function withChecksums(
  metadata: Readonly<Record<string, string>>,
  checksums: Partial<Record<ChecksumAlgorithm, string>>,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(metadata)) {
    if (!name.startsWith(CHECKSUM_ENTRY_PREFIX)) out[name] = value;
  }
  for (const [algorithm, value] of Object.entries(checksums)) {
    out[`${CHECKSUM_ENTRY_PREFIX}${algorithm.toLowerCase()}`] = value!;
  }
  return out;
}

/** How a multipart object's checksum is made: of its parts' checksums, or of its bytes. */
export type ChecksumType = "COMPOSITE" | "FULL_OBJECT";

/** The checksum an upload was created with (x-amz-checksum-algorithm and -type). */
export interface UploadChecksum {
  algorithm: ChecksumAlgorithm;
  type: ChecksumType;
}

const UPLOAD_ALGORITHM_ENTRY = `${CHECKSUM_ENTRY_PREFIX}algorithm`;
const UPLOAD_TYPE_ENTRY = `${CHECKSUM_ENTRY_PREFIX}type`;

/**
 * An upload's checksum as entries of its metadata. They start like the checksum entries but
 * name no algorithm, so they are never answered as a checksum, and a copy drops them.
 */
export function uploadChecksumEntries(checksum: UploadChecksum): Record<string, string> {
  return { [UPLOAD_ALGORITHM_ENTRY]: checksum.algorithm, [UPLOAD_TYPE_ENTRY]: checksum.type };
}

/** The checksum an upload was created with, from its metadata; null for none. */
export function uploadChecksum(metadata: Readonly<Record<string, string>>): UploadChecksum | null {
  const algorithm = CHECKSUM_ALGORITHMS.find((a) => a === metadata[UPLOAD_ALGORITHM_ENTRY]);
  const type = metadata[UPLOAD_TYPE_ENTRY];
  if (algorithm === undefined || (type !== "COMPOSITE" && type !== "FULL_OBJECT")) return null;
  return { algorithm, type };
}

/** The checksums stored with an object, by algorithm (base64 values). */
export function storedChecksums(
  metadata: Readonly<Record<string, string>>,
): Partial<Record<ChecksumAlgorithm, string>> {
  const out: Partial<Record<ChecksumAlgorithm, string>> = {};
  for (const [name, value] of Object.entries(metadata)) {
    if (!name.startsWith(CHECKSUM_ENTRY_PREFIX)) continue;
    const lower = name.slice(CHECKSUM_ENTRY_PREFIX.length);
    // An algorithm this gateway does not know (written by a newer one) is not sent.
    const algorithm = CHECKSUM_ALGORITHMS.find((a) => a.toLowerCase() === lower);
    if (algorithm !== undefined) out[algorithm] = value;
  }
  return out;
}

/**
 * The response headers of an object's metadata: x-amz-meta-* and the stored headers, plus,
 * with `checksums` (x-amz-checksum-mode: ENABLED on a whole-object read), the stored
 * checksums and their type.
 */
export function metadataHeaders(
  metadata: Readonly<Record<string, string>>,
  options: { checksums: boolean },
): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [name, value] of Object.entries(metadata)) {
    if (!name.startsWith(GATEWAY_METADATA_PREFIX)) {
      out.push([`${USER_METADATA_PREFIX}${name}`, value]);
      continue;
    }
    const header = name.slice(GATEWAY_METADATA_PREFIX.length);
    if (STORED_HEADERS.includes(header)) out.push([header, value]);
  }
  if (options.checksums) {
    const checksums = Object.entries(storedChecksums(metadata));
    for (const [algorithm, value] of checksums) {
      out.push([checksumHeaderName(algorithm as ChecksumAlgorithm), value]);
    }
    // A multipart object's checksum of its parts' checksums ends "-<parts>" (AWS's form).
    const composite = checksums.some(([, value]) => value!.includes("-"));
    if (checksums.length > 0) {
      out.push(["x-amz-checksum-type", composite ? "COMPOSITE" : "FULL_OBJECT"]);
    }
  }
  return out;
}
