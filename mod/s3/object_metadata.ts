// What an S3 object keeps besides its bytes and Content-Type, in the one metadata map the
// object backend stores: user metadata (x-amz-meta-*), the headers S3 sends back as they
// were written (Cache-Control, Content-Disposition, ...), and the checksums a client declared.

import { METADATA_BYTES_MAX } from "../composition/mod.ts";
import { CHECKSUM_ALGORITHMS, type ChecksumAlgorithm, checksumHeaderName } from "./checksums.ts";
import { S3Error } from "./errors.ts";
import { parseUserMetadata, USER_METADATA_PREFIX } from "./request.ts";

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

/** A Content-Encoding without `aws-chunked`, which only framed the upload (AWS drops it). */
function storedContentEncoding(value: string): string {
  return value.split(",")
    .map((v) => v.trim())
    .filter((v) => v !== "" && v.toLowerCase() !== "aws-chunked")
    .join(",");
}

/**
 * The metadata an object is written with: x-amz-meta-* (MetadataTooLarge past 2 KiB, as AWS),
 * the stored headers present in `headers`, and `checksums` (base64 values, verified against
 * the body before anything commits). MetadataTooLarge too when all of it exceeds what the
 * backend keeps per object.
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
  for (const [algorithm, value] of Object.entries(checksums)) {
    metadata[`${CHECKSUM_ENTRY_PREFIX}${algorithm.toLowerCase()}`] = value!;
  }
  const encoder = new TextEncoder();
  let bytes = 0;
  for (const [name, value] of Object.entries(metadata)) {
    bytes += encoder.encode(name).length + encoder.encode(value).length;
  }
  if (bytes > METADATA_BYTES_MAX) {
    throw new S3Error(
      "MetadataTooLarge",
      `User metadata and the headers stored with the object (Cache-Control, ` +
        `Content-Disposition, Content-Encoding, Content-Language, Expires) exceed ` +
        `${METADATA_BYTES_MAX} bytes together`,
      { details: { Size: String(bytes), MaxSizeAllowed: String(METADATA_BYTES_MAX) } },
    );
  }
  return metadata;
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
    if (checksums.length > 0) out.push(["x-amz-checksum-type", "FULL_OBJECT"]);
  }
  return out;
}
