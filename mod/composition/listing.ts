// Listing shapes the views answer (S3 ListObjectsV2 / v1, ListMultipartUploads, ListParts,
// POSIX readdir), their limits, and the opaque continuation token.

import { ByteReader, ByteWriter } from "./bytes.ts";
import type { DirEntry, ObjectSummary, Part, Upload } from "./composition.ts";
import { COMPOSITION_KEY_BYTES_MAX } from "./composition.ts";
import { CompositionError } from "./errors.ts";

/** S3 returns at most 1000 keys, uploads or parts per page. */
export const LIST_KEYS_MAX = 1000;
export const LIST_UPLOADS_MAX = 1000;
export const LIST_PARTS_MAX = 1000;
export const READDIR_ENTRIES_MAX = 4096;
export const DELIMITER_BYTES_MAX = 1024;

export interface ListObjectsOptions {
  prefix?: string;
  /** Keys whose remainder after `prefix` holds it roll up into one common prefix. */
  delimiter?: string;
  /** Start after this key (ignored when a continuation token is given). */
  startAfter?: string;
  continuationToken?: string;
  /** 0..LIST_KEYS_MAX (default LIST_KEYS_MAX); common prefixes count against it. */
  maxKeys?: number;
}

export interface ListObjectsResult {
  objects: ObjectSummary[];
  commonPrefixes: string[];
  /** Keys plus common prefixes returned. */
  keyCount: number;
  isTruncated: boolean;
  /** Opaque; resumes after the last key or common prefix returned. Null unless truncated. */
  nextContinuationToken: string | null;
  /** The last key or common prefix returned (ListObjects v1 NextMarker). Null unless truncated. */
  nextMarker: string | null;
}

export interface ListUploadsOptions {
  prefix?: string;
  delimiter?: string;
  keyMarker?: string;
  /** With keyMarker: uploads of that key with a greater upload id are included. */
  uploadIdMarker?: string;
  maxUploads?: number;
}

export interface ListUploadsResult {
  /** By key, then by upload id (which is initiation order). */
  uploads: Upload[];
  commonPrefixes: string[];
  isTruncated: boolean;
  nextKeyMarker: string | null;
  nextUploadIdMarker: string | null;
}

export interface ListPartsOptions {
  partNumberMarker?: number;
  maxParts?: number;
}

export interface ListPartsResult {
  upload: Upload;
  parts: Part[];
  isTruncated: boolean;
  nextPartNumberMarker: number | null;
}

export interface ReaddirOptions {
  /** 0: from the start; else a cookie a previous readdir returned. */
  cookie?: number;
  count?: number;
}

export interface ReaddirResult {
  entries: DirEntry[];
  eof: boolean;
}

/** Where a listing resumes: after one key, or after every key starting with a prefix. */
export type ListPosition = { after: "key" | "prefix"; value: Uint8Array };

const TOKEN_VERSION = 1;
const TOKEN_AFTER_KEY = 1;
const TOKEN_AFTER_PREFIX = 2;

function invalidToken(message: string): never {
  throw new CompositionError("invalid_argument", `continuation token is invalid: ${message}`);
}

export function encodeContinuationToken(position: ListPosition): string {
  const bytes = new ByteWriter()
    .u8(TOKEN_VERSION)
    .u8(position.after === "key" ? TOKEN_AFTER_KEY : TOKEN_AFTER_PREFIX)
    .bytes16(position.value)
    .finish();
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Throws CompositionError("invalid_argument") for anything encodeContinuationToken() did not make. */
export function decodeContinuationToken(token: string): ListPosition {
  if (!/^[A-Za-z0-9_-]*$/.test(token) || token.length > 4 * COMPOSITION_KEY_BYTES_MAX) {
    invalidToken("not base64url");
  }
  let binary: string;
  try {
    binary = atob(token.replaceAll("-", "+").replaceAll("_", "/"));
  } catch {
    invalidToken("not base64url");
  }
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  const r = new ByteReader(bytes, invalidToken);
  if (r.u8("version") !== TOKEN_VERSION) invalidToken("unknown version");
  const kind = r.u8("kind");
  if (kind !== TOKEN_AFTER_KEY && kind !== TOKEN_AFTER_PREFIX) invalidToken("unknown kind");
  const value = r.bytes16(COMPOSITION_KEY_BYTES_MAX, "position");
  r.end("token");
  if (value.length === 0) invalidToken("empty position");
  return { after: kind === TOKEN_AFTER_KEY ? "key" : "prefix", value };
}
