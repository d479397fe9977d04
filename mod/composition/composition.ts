// Compositions: what an object or file is made of. An ordered list of chunk references
// (each places the first `lengthBytes` bytes of a stored chunk at `offsetBytes` of the
// object) or, for small objects, the bytes themselves inline. Also the multipart and POSIX
// shapes the views return, and the validators shared by the service (early, typed errors)
// and the payload codec (strict decoding), so both accept exactly the same values.

import { DELTA_CHUNK_REF_BYTES, DELTA_CHUNK_REFS_MAX } from "../log/mod.ts";
import { utf8 } from "./bytes.ts";

/** S3's key limit. */
export const COMPOSITION_KEY_BYTES_MAX = 1024;
export const CONTENT_TYPE_BYTES_MAX = 256;
export const ETAG_BYTES_MAX = 128;
/**
 * An object's metadata map: entries and total bytes of names and values. It holds more than
 * S3's user metadata (2 KiB, the gateway's own limit): the headers S3 stores with an object
 * and its checksums ride in it too, and those have their own limits (all request headers
 * together: 8 KiB), so the engine's bound is the sum, not S3's user-metadata limit.
 */
export const METADATA_ENTRIES_MAX = 1024;
export const METADATA_BYTES_MAX = 16 * 1024;
/** One name: a user metadata name may take all of S3's 2 KiB. */
export const METADATA_NAME_BYTES_MAX = 2048;
/** Inline threshold the service uses unless configured otherwise. */
export const INLINE_THRESHOLD_BYTES_DEFAULT = 4096;
/** Largest inline content any configuration may allow (must ride in one delta). */
export const INLINE_BYTES_MAX = 64 * 1024;
/** Chunk references one put (one delta) may carry; larger objects go multipart. */
export const PUT_CHUNK_REFS_MAX = DELTA_CHUNK_REFS_MAX;
/** Chunk references one stored composition may hold (multipart concatenation included). */
export const COMPOSITION_CHUNK_REFS_MAX = 262_144;
/** A chunk reference's length is a u32 on the wire. */
export const CHUNK_LENGTH_BYTES_MAX = 0xffff_ffff;
export const CHUNK_ID_BYTES = DELTA_CHUNK_REF_BYTES;
/** S3's part number range. */
export const PART_NUMBER_MAX = 10_000;
/**
 * Part sizes one put (one delta) may carry, with as many chunk refs: a copy of an object of
 * more parts goes through hidden parts, whose completion can carry all PART_NUMBER_MAX.
 */
export const PUT_PART_SIZES_MAX = PUT_CHUNK_REFS_MAX;
/** POSIX NAME_MAX. */
export const POSIX_NAME_BYTES_MAX = 255;
/** POSIX PATH_MAX - 1. */
export const SYMLINK_TARGET_BYTES_MAX = 4095;
export const LINK_COUNT_MAX = 65_000;
/** The root directory's inode number in every POSIX namespace. */
export const ROOT_INODE = 1;
/** Permission bits (setuid, setgid, sticky, rwx x3). */
export const MODE_BITS_MAX = 0o7777;
export const UPLOAD_ID_BYTES = 16;

export interface ChunkRef {
  /** 32-byte chunk id. */
  chunkId: Uint8Array;
  /** Where the chunk's bytes begin in the object. */
  offsetBytes: number;
  /** How many bytes of the chunk (from its start) the object uses. */
  lengthBytes: number;
}

export type Content =
  | { kind: "chunks"; chunkRefs: ChunkRef[] }
  | { kind: "inline"; bytes: Uint8Array };

export type Metadata = Readonly<Record<string, string>>;

/** An object of a bucket namespace, as the bucket view holds it. */
export interface Composition {
  namespaceId: Uint8Array;
  key: string;
  /** The sequence of the delta that wrote it: increases with every write of the key. */
  version: number;
  size: number;
  contentType: string;
  metadata: Metadata;
  etag: string;
  /** When the key came into existence (kept across overwrites), HLC physical ms. */
  createdMs: number;
  /** When this version was committed, HLC physical ms. */
  modifiedMs: number;
  content: Content;
  /**
   * A multipart object's layout: each part's size, in part order (they sum to `size`).
   * Absent for a single-part object, and for multipart objects stored before part sizes
   * were recorded (those read as one part).
   */
  partSizes?: number[];
  /**
   * The multipart upload this version was completed from (with partSizes): a repeated
   * completion of the same upload answers with this version instead of NoSuchUpload.
   */
  completedUploadId?: Uint8Array;
}

/** One entry of a listing. */
export interface ObjectSummary {
  key: string;
  size: number;
  etag: string;
  modifiedMs: number;
  version: number;
}

export interface Upload {
  namespaceId: Uint8Array;
  key: string;
  /** 32 hex characters; increases with initiation time within a namespace. */
  uploadId: string;
  initiatedMs: number;
  contentType: string;
  metadata: Metadata;
  /** Parts uploaded so far. */
  parts: number;
}

export interface Part {
  partNumber: number;
  size: number;
  etag: string;
  modifiedMs: number;
  chunkRefs: ChunkRef[];
  /** What the writer keeps with the part (S3: its checksums); absent when nothing. */
  metadata?: Metadata;
}

export type InodeType = "file" | "directory" | "symlink";
export const INODE_TYPES = Object.freeze({ file: 1, directory: 2, symlink: 3 } as const);

/** POSIX time: seconds and nanoseconds since the Unix epoch. */
export interface PosixTime {
  sec: number;
  nsec: number;
}

export interface Inode {
  namespaceId: Uint8Array;
  inode: number;
  type: InodeType;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  atime: PosixTime;
  mtime: PosixTime;
  ctime: PosixTime;
  /** Sequence of the last delta that changed the inode (NFS change attribute). */
  version: number;
  /** Directories: the parent directory (the root is its own parent); 0 otherwise. */
  parent: number;
  /** Directories: entries other than "." and "..". */
  entries: number;
  /** Symlinks: the target; "" otherwise. */
  target: string;
  /** Files: the content; empty chunks otherwise. */
  content: Content;
}

export interface DirEntry {
  name: string;
  inode: number;
  type: InodeType;
  /** Stable resume point: entries created later have larger cookies; never reused. */
  cookie: number;
}

export interface SetAttributes {
  mode?: number;
  uid?: number;
  gid?: number;
  /** Truncate or extend (files only). */
  size?: number;
  /** An explicit time, or "now" (the commit time). */
  atime?: PosixTime | "now";
  mtime?: PosixTime | "now";
}

export const EMPTY_CONTENT: Content = Object.freeze({ kind: "chunks", chunkRefs: [] }) as Content;

/** Milliseconds to a POSIX time. */
export function posixTimeOfMs(ms: number): PosixTime {
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

function isSize(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/** Why `key` cannot name an object, or null. 1..1024 bytes of UTF-8 without NUL. */
export function keyProblem(key: string): string | null {
  if (typeof key !== "string" || key.length === 0) return "key is empty";
  const bytes = utf8(key).length;
  if (bytes > COMPOSITION_KEY_BYTES_MAX) {
    return `key is ${bytes} bytes (max ${COMPOSITION_KEY_BYTES_MAX})`;
  }
  if (key.includes("\u0000")) return "key contains NUL";
  if (!key.isWellFormed()) return "key is not well-formed Unicode";
  return null;
}

/** Why `name` cannot be a directory entry, or null. */
export function posixNameProblem(name: string): string | null {
  if (typeof name !== "string" || name.length === 0) return "name is empty";
  const bytes = utf8(name).length;
  if (bytes > POSIX_NAME_BYTES_MAX) {
    return `name is ${bytes} bytes (max ${POSIX_NAME_BYTES_MAX})`;
  }
  if (name === "." || name === "..") return `name ${JSON.stringify(name)} is reserved`;
  if (name.includes("/") || name.includes("\u0000")) return "name contains '/' or NUL";
  if (!name.isWellFormed()) return "name is not well-formed Unicode";
  return null;
}

export function symlinkTargetProblem(target: string): string | null {
  if (typeof target !== "string" || target.length === 0) return "symlink target is empty";
  const bytes = utf8(target).length;
  if (bytes > SYMLINK_TARGET_BYTES_MAX) {
    return `symlink target is ${bytes} bytes (max ${SYMLINK_TARGET_BYTES_MAX})`;
  }
  if (target.includes("\u0000")) return "symlink target contains NUL";
  if (!target.isWellFormed()) return "symlink target is not well-formed Unicode";
  return null;
}

export function shortTextProblem(what: string, text: string, maxBytes: number): string | null {
  if (typeof text !== "string") return `${what} is not a string`;
  const bytes = utf8(text).length;
  if (bytes > maxBytes) return `${what} is ${bytes} bytes (max ${maxBytes})`;
  if (text.includes("\u0000")) return `${what} contains NUL`;
  if (!text.isWellFormed()) return `${what} is not well-formed Unicode`;
  return null;
}

export function metadataProblem(metadata: Metadata): string | null {
  const entries = Object.entries(metadata);
  if (entries.length > METADATA_ENTRIES_MAX) {
    return `${entries.length} metadata entries (max ${METADATA_ENTRIES_MAX})`;
  }
  let total = 0;
  for (const [name, value] of entries) {
    if (name.length === 0) return "metadata name is empty";
    const problem = shortTextProblem("metadata name", name, METADATA_NAME_BYTES_MAX) ??
      shortTextProblem(`metadata value of ${name}`, value, METADATA_BYTES_MAX);
    if (problem !== null) return problem;
    total += utf8(name).length + utf8(value).length;
  }
  if (total > METADATA_BYTES_MAX) {
    return `metadata is ${total} bytes (max ${METADATA_BYTES_MAX})`;
  }
  return null;
}

/**
 * Why `content` cannot be the content of an object of `size` bytes, or null.
 * "contiguous" (objects, parts): the refs tile [0, size) exactly, or the inline bytes are
 * the whole object. "sparse" (POSIX files): refs ascend without overlap inside [0, size);
 * gaps and a tail past the last ref read as zeros; inline bytes may be shorter than size.
 */
export function contentProblem(
  content: Content,
  size: number,
  layout: "contiguous" | "sparse",
  refsMax: number = PUT_CHUNK_REFS_MAX,
): string | null {
  if (!isSize(size)) return `size ${size} is not a non-negative safe integer`;
  if (content.kind === "inline") {
    if (!(content.bytes instanceof Uint8Array)) return "inline content is not bytes";
    if (content.bytes.length > INLINE_BYTES_MAX) {
      return `inline content is ${content.bytes.length} bytes (max ${INLINE_BYTES_MAX})`;
    }
    if (layout === "contiguous" && content.bytes.length !== size) {
      return `inline content is ${content.bytes.length} bytes but size is ${size}`;
    }
    if (content.bytes.length > size) {
      return `inline content is ${content.bytes.length} bytes, more than size ${size}`;
    }
    return null;
  }
  if (content.kind !== "chunks") return "content kind is neither chunks nor inline";
  const refs = content.chunkRefs;
  if (refs.length > refsMax) return `${refs.length} chunk refs (max ${refsMax})`;
  let end = 0;
  for (let i = 0; i < refs.length; i++) {
    const r = refs[i]!;
    if (!(r.chunkId instanceof Uint8Array) || r.chunkId.length !== CHUNK_ID_BYTES) {
      return `chunk ref ${i}: chunk id must be ${CHUNK_ID_BYTES} bytes`;
    }
    if (!isSize(r.offsetBytes)) return `chunk ref ${i}: offset ${r.offsetBytes} is invalid`;
    if (
      !Number.isInteger(r.lengthBytes) || r.lengthBytes < 1 ||
      r.lengthBytes > CHUNK_LENGTH_BYTES_MAX
    ) {
      return `chunk ref ${i}: length ${r.lengthBytes} is not 1..${CHUNK_LENGTH_BYTES_MAX}`;
    }
    if (layout === "contiguous" ? r.offsetBytes !== end : r.offsetBytes < end) {
      return `chunk ref ${i}: offset ${r.offsetBytes} does not follow the previous ref (end ${end})`;
    }
    end = r.offsetBytes + r.lengthBytes;
    if (!Number.isSafeInteger(end) || end > size) {
      return `chunk ref ${i}: ends at ${end}, past size ${size}`;
    }
  }
  if (layout === "contiguous" && end !== size) {
    return `chunk refs cover ${end} bytes but size is ${size}`;
  }
  return null;
}

/**
 * Why `partSizes` cannot be an object's part layout, or null: 1..`countMax` sizes, each a
 * non-negative safe integer, adding up to `size` (when known) without overflow.
 */
export function partSizesProblem(
  partSizes: readonly number[],
  size: number | null,
  countMax: number = PART_NUMBER_MAX,
): string | null {
  if (!Array.isArray(partSizes)) return "part sizes are not a list";
  if (partSizes.length === 0) return "part sizes are empty (a single-part object has none)";
  if (partSizes.length > countMax) return `${partSizes.length} part sizes (max ${countMax})`;
  let total = 0;
  for (let i = 0; i < partSizes.length; i++) {
    const n = partSizes[i]!;
    if (!isSize(n)) return `part ${i + 1} size ${n} is not a non-negative safe integer`;
    total += n;
    if (!Number.isSafeInteger(total)) return "part sizes add up past a safe integer";
  }
  if (size !== null && total !== size) {
    return `part sizes add up to ${total} bytes but size is ${size}`;
  }
  return null;
}

export function modeProblem(mode: number): string | null {
  return Number.isInteger(mode) && mode >= 0 && mode <= MODE_BITS_MAX
    ? null
    : `mode ${mode} is not within 0..0o7777`;
}

export function idProblem(what: string, id: number): string | null {
  return Number.isInteger(id) && id >= 0 && id <= 0xffff_ffff ? null : `${what} ${id} is not a u32`;
}

export function posixTimeProblem(what: string, t: PosixTime): string | null {
  return isSize(t.sec) && Number.isInteger(t.nsec) && t.nsec >= 0 && t.nsec < 1_000_000_000
    ? null
    : `${what} is not a valid time`;
}

export function inodeNumberProblem(what: string, inode: number): string | null {
  return Number.isSafeInteger(inode) && inode >= 1 ? null : `${what} ${inode} is not an inode`;
}

/** The chunk ids of `content`, in order (what the delta header carries). */
export function chunkIdsOf(content: Content): Uint8Array[] {
  return content.kind === "chunks" ? content.chunkRefs.map((r) => r.chunkId) : [];
}
