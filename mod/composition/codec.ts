// The plaintext of a composition delta's payload: what a mutation says, before the tenant's
// PayloadCipher seals it. Binary, versioned, big-endian, decoded strictly (every length
// checked, every enum known, canonical order, no trailing bytes): anything else is a
// PayloadFormatError. Chunk ids are not repeated here: they ride in the delta header (so
// the GC can count them without the tenant key) and the payload carries only where each
// one sits, in the same order.
//
// v1 layout: version u8 (1) | type u8 | token [16] | namespace id [16] | body (per type).
//   string = u16 length + UTF-8; metadata = u16 count + (string name, string value) in
//   ascending byte order of names, no duplicates; content = u8 kind (1 chunks: u32 count +
//   (u64 offset, u32 length) per ref | 2 inline: u32 length + bytes); time = u64 sec + u32 nsec.
// v2 layout: a v1 payload whose body is followed by a multipart object's part layout, for
//   the two types that can carry one: object_put: part sizes = u16 count (1..) + u64 per
//   part; upload_complete: u8 layout (1: the listed parts' sizes | 2: part sizes). A payload
//   without a layout is always written as v1 (so its bytes are what they were before v2,
//   and decode everywhere v1 does); a v2 payload without one is refused, as is v2 for any
//   other type: every payload has exactly one encoding. A v1 payload has no layout.
// v3 layout, upload_part: a v1 payload followed by the part's metadata (non-empty; S3 keeps
//   a part's checksums so), written only when there is some.
// v3 layout, upload_complete: a v2 payload followed by a precondition (u8 0 none | 1 absent |
//   2 version + u64, as object_put's) and metadata entries added to the upload's (the
//   checksums of the whole object, known only at completion). Written only when one of the
//   two is there (so every other completion keeps its v1/v2 bytes), only for upload_complete,
//   and only with a part layout; a v3 payload with neither is refused.

import { DELTA_PAYLOAD_BYTES_MAX, type DeltaOp } from "../log/mod.ts";
import { ByteReader, ByteWriter, fromUtf8, utf8 } from "./bytes.ts";
import {
  CHUNK_ID_BYTES,
  chunkIdsOf,
  type ChunkRef,
  COMPOSITION_KEY_BYTES_MAX,
  type Content,
  CONTENT_TYPE_BYTES_MAX,
  contentProblem,
  ETAG_BYTES_MAX,
  idProblem,
  INLINE_BYTES_MAX,
  inodeNumberProblem,
  keyProblem,
  type Metadata,
  METADATA_BYTES_MAX,
  METADATA_ENTRIES_MAX,
  METADATA_NAME_BYTES_MAX,
  metadataProblem,
  modeProblem,
  PART_NUMBER_MAX,
  partSizesProblem,
  posixNameProblem,
  type PosixTime,
  posixTimeProblem,
  PUT_CHUNK_REFS_MAX,
  PUT_PART_SIZES_MAX,
  type SetAttributes,
  shortTextProblem,
  SYMLINK_TARGET_BYTES_MAX,
  symlinkTargetProblem,
  UPLOAD_ID_BYTES,
} from "./composition.ts";
import {
  NAMESPACE_ID_BYTES,
  NAMESPACE_KINDS,
  NAMESPACE_NAME_BYTES_MAX,
  type NamespaceKind,
  namespaceNameProblem,
  sha256,
} from "./namespace.ts";

/** The newest payload format; encodePayload() writes the oldest that can say the payload. */
export const PAYLOAD_FORMAT_VERSION = 3;
/** The oldest payload format still decoded (v1: no part layouts). */
export const PAYLOAD_FORMAT_VERSION_MIN = 1;
/** The format that adds part layouts (see the top of this file). */
const VERSION_PART_LAYOUTS = 2;
/** The format that adds a completion's precondition and metadata (see the top of this file). */
const VERSION_COMPLETE_CONDITIONS = 3;
/** A random per-request token: how the writer finds its mutation's outcome in the view. */
export const PAYLOAD_TOKEN_BYTES = 16;
export const PARTS_DIGEST_BYTES = 32;
/**
 * What a PayloadCipher may add to a plaintext (nonce, tag, key reference). Part of the
 * port's contract: plaintexts are bounded so that the sealed payload fits a delta.
 */
export const PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX = 1024;
export const PAYLOAD_PLAINTEXT_BYTES_MAX = DELTA_PAYLOAD_BYTES_MAX -
  PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX;

/** Wire codes of payload types; the numbers never change meaning. */
export const PAYLOAD_TYPES = Object.freeze(
  {
    namespace_create: 1,
    namespace_delete: 2,
    object_put: 3,
    object_delete: 4,
    upload_start: 5,
    upload_part: 6,
    upload_complete: 7,
    upload_abort: 8,
    posix_mkdir: 9,
    posix_create: 10,
    posix_symlink: 11,
    posix_link: 12,
    posix_unlink: 13,
    posix_rmdir: 14,
    posix_rename: 15,
    posix_setattr: 16,
    posix_write: 17,
  } as const,
);
export type PayloadType = keyof typeof PAYLOAD_TYPES;

/** The delta operation each payload type travels as (checked when folding). */
export const PAYLOAD_OPS: Readonly<Record<PayloadType, DeltaOp>> = Object.freeze({
  namespace_create: "create",
  namespace_delete: "delete",
  object_put: "update",
  object_delete: "delete",
  upload_start: "create",
  upload_part: "update",
  upload_complete: "update",
  upload_abort: "delete",
  posix_mkdir: "create",
  posix_create: "create",
  posix_symlink: "create",
  posix_link: "create",
  posix_unlink: "delete",
  posix_rmdir: "delete",
  posix_rename: "rename",
  posix_setattr: "set_attributes",
  posix_write: "update",
});

/** A put's precondition: none, the key must not exist, or it must be at `version`. */
export type PutCondition =
  | { kind: "none" }
  | { kind: "absent" }
  | { kind: "version"; version: number };

interface Base {
  token: Uint8Array;
  namespaceId: Uint8Array;
}

export interface NamespaceCreatePayload extends Base {
  type: "namespace_create";
  name: string;
  kind: NamespaceKind;
  /** The POSIX root directory's owner and mode (ignored for buckets, but carried). */
  rootMode: number;
  rootUid: number;
  rootGid: number;
}
export interface NamespaceDeletePayload extends Base {
  type: "namespace_delete";
}
export interface ObjectPutPayload extends Base {
  type: "object_put";
  key: string;
  size: number;
  contentType: string;
  metadata: Metadata;
  etag: string;
  content: Content;
  condition: PutCondition;
  /**
   * A multipart object's part sizes (at most PUT_PART_SIZES_MAX, adding up to `size`):
   * a copy keeps its source's layout. Absent: a single-part object.
   */
  partSizes?: number[];
}
export interface ObjectDeletePayload extends Base {
  type: "object_delete";
  key: string;
}
export interface UploadStartPayload extends Base {
  type: "upload_start";
  key: string;
  contentType: string;
  metadata: Metadata;
}
export interface UploadPartPayload extends Base {
  type: "upload_part";
  key: string;
  uploadId: Uint8Array;
  partNumber: number;
  size: number;
  etag: string;
  chunkRefs: ChunkRef[];
  /** What the writer keeps with the part (see v3 above); absent or empty: nothing. */
  metadata?: Metadata;
}
export interface UploadCompletePayload extends Base {
  type: "upload_complete";
  key: string;
  uploadId: Uint8Array;
  /** Strictly ascending part numbers, as the client listed them. */
  partNumbers: number[];
  /** partsDigest() of the listed parts' numbers and etags; all zero: not checked. */
  partsDigest: Uint8Array;
  /** Every listed part but the last must be at least this big (S3: 5 MiB). */
  partBytesMin: number;
  etag: string;
  /**
   * The object's part layout. "listed": the listed parts' sizes (an S3 completion); sizes:
   * these, which must add up to the listed parts' total (a multipart object copied through
   * hidden parts). Absent: a single-part object (a large put's hidden parts; every v1
   * completion).
   */
  partSizes?: "listed" | number[];
  /** The key's precondition (If-None-Match / If-Match); absent: none. Needs partSizes. */
  condition?: PutCondition;
  /** Entries added to (or replacing) the upload's metadata in the object; needs partSizes. */
  metadata?: Metadata;
}
export interface UploadAbortPayload extends Base {
  type: "upload_abort";
  key: string;
  uploadId: Uint8Array;
}
export interface PosixMkdirPayload extends Base {
  type: "posix_mkdir";
  parent: number;
  name: string;
  mode: number;
  uid: number;
  gid: number;
}
export interface PosixCreatePayload extends Base {
  type: "posix_create";
  parent: number;
  name: string;
  mode: number;
  uid: number;
  gid: number;
}
export interface PosixSymlinkPayload extends Base {
  type: "posix_symlink";
  parent: number;
  name: string;
  target: string;
  uid: number;
  gid: number;
}
export interface PosixLinkPayload extends Base {
  type: "posix_link";
  inode: number;
  parent: number;
  name: string;
}
export interface PosixUnlinkPayload extends Base {
  type: "posix_unlink";
  parent: number;
  name: string;
}
export interface PosixRmdirPayload extends Base {
  type: "posix_rmdir";
  parent: number;
  name: string;
}
export interface PosixRenamePayload extends Base {
  type: "posix_rename";
  parent: number;
  name: string;
  newParent: number;
  newName: string;
}
export interface PosixSetattrPayload extends Base {
  type: "posix_setattr";
  inode: number;
  attributes: SetAttributes;
}
export interface PosixWritePayload extends Base {
  type: "posix_write";
  inode: number;
  size: number;
  content: Content;
}

export type Payload =
  | NamespaceCreatePayload
  | NamespaceDeletePayload
  | ObjectPutPayload
  | ObjectDeletePayload
  | UploadStartPayload
  | UploadPartPayload
  | UploadCompletePayload
  | UploadAbortPayload
  | PosixMkdirPayload
  | PosixCreatePayload
  | PosixSymlinkPayload
  | PosixLinkPayload
  | PosixUnlinkPayload
  | PosixRmdirPayload
  | PosixRenamePayload
  | PosixSetattrPayload
  | PosixWritePayload;

/** Bytes that are not a valid payload, or a payload that cannot be encoded. */
export class PayloadFormatError extends Error {
  override name = "PayloadFormatError";
}

function fail(message: string): never {
  throw new PayloadFormatError(message);
}

function check(problem: string | null): void {
  if (problem !== null) fail(problem);
}

const TYPE_BY_CODE: ReadonlyMap<number, PayloadType> = new Map(
  Object.entries(PAYLOAD_TYPES).map(([name, code]) => [code, name as PayloadType]),
);
const KIND_BY_CODE: ReadonlyMap<number, NamespaceKind> = new Map(
  Object.entries(NAMESPACE_KINDS).map(([name, code]) => [code, name as NamespaceKind]),
);

const CONTENT_CHUNKS = 1;
const CONTENT_INLINE = 2;
const CONDITION_NONE = 0;
const CONDITION_ABSENT = 1;
const CONDITION_VERSION = 2;
const LAYOUT_LISTED = 1;
const LAYOUT_SIZES = 2;

const SET_MODE = 1;
const SET_UID = 2;
const SET_GID = 4;
const SET_SIZE = 8;
const SET_ATIME = 16;
const SET_MTIME = 32;
const SET_ATIME_NOW = 64;
const SET_MTIME_NOW = 128;

/** The chunk ids the delta header must carry for `payload`, in order. */
export function payloadChunkIds(payload: Payload): Uint8Array[] {
  switch (payload.type) {
    case "object_put":
    case "posix_write":
      return chunkIdsOf(payload.content);
    case "upload_part":
      return payload.chunkRefs.map((r) => r.chunkId);
    default:
      return [];
  }
}

/** The digest a complete payload carries over the parts the client listed, in order. */
export function partsDigest(parts: readonly { partNumber: number; etag: string }[]): Uint8Array {
  const w = new ByteWriter();
  for (const p of parts) w.u16(p.partNumber).string16(p.etag);
  return sha256(w.finish());
}

// ---- encoding ------------------------------------------------------------------------------

function writeMetadata(w: ByteWriter, metadata: Metadata): void {
  check(metadataProblem(metadata));
  const entries = Object.entries(metadata).map(([k, v]) => [utf8(k), utf8(v)] as const);
  entries.sort((a, b) => compareBytes(a[0], b[0]));
  w.u16(entries.length);
  for (const [k, v] of entries) w.bytes16(k).bytes16(v);
}

function writeContent(
  w: ByteWriter,
  content: Content,
  size: number,
  layout: "contiguous" | "sparse",
): void {
  check(contentProblem(content, size, layout));
  if (content.kind === "inline") {
    w.u8(CONTENT_INLINE).bytes32(content.bytes);
  } else {
    w.u8(CONTENT_CHUNKS).u32(content.chunkRefs.length);
    for (const r of content.chunkRefs) w.u64(r.offsetBytes).u32(r.lengthBytes);
  }
}

function writeText(w: ByteWriter, what: string, text: string, max: number): void {
  check(shortTextProblem(what, text, max));
  w.string16(text);
}

function writeName(w: ByteWriter, name: string): void {
  check(posixNameProblem(name));
  w.string16(name);
}

function writeInode(w: ByteWriter, what: string, inode: number): void {
  check(inodeNumberProblem(what, inode));
  w.u64(inode);
}

function writeId(w: ByteWriter, what: string, id: number): void {
  check(idProblem(what, id));
  w.u32(id);
}

function writeTime(w: ByteWriter, what: string, t: PosixTime): void {
  check(posixTimeProblem(what, t));
  w.u64(t.sec).u32(t.nsec);
}

function writeUploadId(w: ByteWriter, uploadId: Uint8Array): void {
  if (uploadId.length !== UPLOAD_ID_BYTES) fail(`upload id must be ${UPLOAD_ID_BYTES} bytes`);
  w.raw(uploadId);
}

/** Encodes a payload; throws PayloadFormatError when a field is malformed or over a limit. */
export function encodePayload(payload: Payload): Uint8Array {
  const code = PAYLOAD_TYPES[payload.type];
  if (code === undefined) fail(`unknown payload type ${JSON.stringify(payload.type)}`);
  if (payload.token.length !== PAYLOAD_TOKEN_BYTES) {
    fail(`token must be ${PAYLOAD_TOKEN_BYTES} bytes`);
  }
  if (payload.namespaceId.length !== NAMESPACE_ID_BYTES) {
    fail(`namespace id must be ${NAMESPACE_ID_BYTES} bytes`);
  }
  const layout = payload.type === "object_put" || payload.type === "upload_complete"
    ? payload.partSizes
    : undefined;
  const completeExtras = payload.type === "upload_complete" &&
    ((payload.condition !== undefined && payload.condition.kind !== "none") ||
      (payload.metadata !== undefined && Object.keys(payload.metadata).length > 0));
  if (completeExtras && layout === undefined) fail("a conditional completion needs a part layout");
  const partExtras = payload.type === "upload_part" && payload.metadata !== undefined &&
    Object.keys(payload.metadata).length > 0;
  const w = new ByteWriter(512);
  w.u8(
    completeExtras || partExtras
      ? VERSION_COMPLETE_CONDITIONS
      : layout === undefined
      ? PAYLOAD_FORMAT_VERSION_MIN
      : VERSION_PART_LAYOUTS,
  );
  w.u8(code).raw(payload.token).raw(payload.namespaceId);
  switch (payload.type) {
    case "namespace_create": {
      check(namespaceNameProblem(payload.name));
      const kind = NAMESPACE_KINDS[payload.kind];
      if (kind === undefined) fail(`unknown namespace kind ${JSON.stringify(payload.kind)}`);
      w.string16(payload.name).u8(kind);
      check(modeProblem(payload.rootMode));
      w.u32(payload.rootMode);
      writeId(w, "root uid", payload.rootUid);
      writeId(w, "root gid", payload.rootGid);
      break;
    }
    case "namespace_delete":
      break;
    case "object_put": {
      check(keyProblem(payload.key));
      w.string16(payload.key).u64(payload.size);
      writeText(w, "content type", payload.contentType, CONTENT_TYPE_BYTES_MAX);
      writeMetadata(w, payload.metadata);
      writeText(w, "etag", payload.etag, ETAG_BYTES_MAX);
      writeContent(w, payload.content, payload.size, "contiguous");
      writeCondition(w, payload.condition);
      if (payload.partSizes !== undefined) {
        writePartSizes(w, payload.partSizes, payload.size, PUT_PART_SIZES_MAX);
      }
      break;
    }
    case "object_delete":
      check(keyProblem(payload.key));
      w.string16(payload.key);
      break;
    case "upload_start":
      check(keyProblem(payload.key));
      w.string16(payload.key);
      writeText(w, "content type", payload.contentType, CONTENT_TYPE_BYTES_MAX);
      writeMetadata(w, payload.metadata);
      break;
    case "upload_part": {
      check(keyProblem(payload.key));
      w.string16(payload.key);
      writeUploadId(w, payload.uploadId);
      checkPartNumber(payload.partNumber);
      w.u16(payload.partNumber).u64(payload.size);
      writeText(w, "etag", payload.etag, ETAG_BYTES_MAX);
      writeContent(w, { kind: "chunks", chunkRefs: payload.chunkRefs }, payload.size, "contiguous");
      if (partExtras) writeMetadata(w, payload.metadata!);
      break;
    }
    case "upload_complete": {
      check(keyProblem(payload.key));
      w.string16(payload.key);
      writeUploadId(w, payload.uploadId);
      checkPartNumbers(payload.partNumbers);
      w.u16(payload.partNumbers.length);
      for (const n of payload.partNumbers) w.u16(n);
      if (payload.partsDigest.length !== PARTS_DIGEST_BYTES) {
        fail(`parts digest must be ${PARTS_DIGEST_BYTES} bytes`);
      }
      w.raw(payload.partsDigest);
      if (!Number.isSafeInteger(payload.partBytesMin) || payload.partBytesMin < 0) {
        fail(`minimum part size ${payload.partBytesMin} is invalid`);
      }
      w.u64(payload.partBytesMin);
      writeText(w, "etag", payload.etag, ETAG_BYTES_MAX);
      if (payload.partSizes === "listed") w.u8(LAYOUT_LISTED);
      else if (Array.isArray(payload.partSizes)) {
        w.u8(LAYOUT_SIZES);
        writePartSizes(w, payload.partSizes, null, PART_NUMBER_MAX);
      } else if (payload.partSizes !== undefined) fail("unknown part layout");
      if (completeExtras) {
        writeCondition(w, payload.condition ?? { kind: "none" });
        writeMetadata(w, payload.metadata ?? {});
      }
      break;
    }
    case "upload_abort":
      check(keyProblem(payload.key));
      w.string16(payload.key);
      writeUploadId(w, payload.uploadId);
      break;
    case "posix_mkdir":
    case "posix_create":
      writeInode(w, "parent", payload.parent);
      writeName(w, payload.name);
      check(modeProblem(payload.mode));
      w.u32(payload.mode);
      writeId(w, "uid", payload.uid);
      writeId(w, "gid", payload.gid);
      break;
    case "posix_symlink":
      writeInode(w, "parent", payload.parent);
      writeName(w, payload.name);
      check(symlinkTargetProblem(payload.target));
      w.string16(payload.target);
      writeId(w, "uid", payload.uid);
      writeId(w, "gid", payload.gid);
      break;
    case "posix_link":
      writeInode(w, "inode", payload.inode);
      writeInode(w, "parent", payload.parent);
      writeName(w, payload.name);
      break;
    case "posix_unlink":
    case "posix_rmdir":
      writeInode(w, "parent", payload.parent);
      writeName(w, payload.name);
      break;
    case "posix_rename":
      writeInode(w, "parent", payload.parent);
      writeName(w, payload.name);
      writeInode(w, "new parent", payload.newParent);
      writeName(w, payload.newName);
      break;
    case "posix_setattr": {
      writeInode(w, "inode", payload.inode);
      const a = payload.attributes;
      let mask = 0;
      if (a.mode !== undefined) mask |= SET_MODE;
      if (a.uid !== undefined) mask |= SET_UID;
      if (a.gid !== undefined) mask |= SET_GID;
      if (a.size !== undefined) mask |= SET_SIZE;
      if (a.atime !== undefined) mask |= a.atime === "now" ? SET_ATIME_NOW : SET_ATIME;
      if (a.mtime !== undefined) mask |= a.mtime === "now" ? SET_MTIME_NOW : SET_MTIME;
      w.u8(mask);
      if (a.mode !== undefined) {
        check(modeProblem(a.mode));
        w.u32(a.mode);
      }
      if (a.uid !== undefined) writeId(w, "uid", a.uid);
      if (a.gid !== undefined) writeId(w, "gid", a.gid);
      if (a.size !== undefined) {
        if (!Number.isSafeInteger(a.size) || a.size < 0) fail(`size ${a.size} is invalid`);
        w.u64(a.size);
      }
      if (a.atime !== undefined && a.atime !== "now") writeTime(w, "atime", a.atime);
      if (a.mtime !== undefined && a.mtime !== "now") writeTime(w, "mtime", a.mtime);
      break;
    }
    case "posix_write":
      writeInode(w, "inode", payload.inode);
      w.u64(payload.size);
      writeContent(w, payload.content, payload.size, "sparse");
      break;
    default:
      fail(`unknown payload type ${JSON.stringify((payload as Payload).type)}`);
  }
  if (w.length > PAYLOAD_PLAINTEXT_BYTES_MAX) {
    fail(`payload is ${w.length} bytes (max ${PAYLOAD_PLAINTEXT_BYTES_MAX})`);
  }
  return w.finish();
}

function writeCondition(w: ByteWriter, c: PutCondition): void {
  if (c.kind === "none") w.u8(CONDITION_NONE);
  else if (c.kind === "absent") w.u8(CONDITION_ABSENT);
  else if (c.kind === "version") {
    if (!Number.isSafeInteger(c.version) || c.version < 1) fail("condition version invalid");
    w.u8(CONDITION_VERSION).u64(c.version);
  } else fail("unknown put condition");
}

function readCondition(r: ByteReader): PutCondition {
  const code = r.u8("condition");
  if (code === CONDITION_NONE) return { kind: "none" };
  if (code === CONDITION_ABSENT) return { kind: "absent" };
  if (code === CONDITION_VERSION) {
    const v = r.u64("condition version");
    if (v < 1) fail("condition version must be at least 1");
    return { kind: "version", version: v };
  }
  fail(`unknown put condition ${code}`);
}

function writePartSizes(
  w: ByteWriter,
  partSizes: readonly number[],
  size: number | null,
  countMax: number,
): void {
  check(partSizesProblem(partSizes, size, countMax));
  w.u16(partSizes.length);
  for (const n of partSizes) w.u64(n);
}

function checkPartNumber(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > PART_NUMBER_MAX) {
    fail(`part number ${n} is not 1..${PART_NUMBER_MAX}`);
  }
}

/** Only shape here; ascending order is the fold's to judge (InvalidPartOrder, not a format error). */
function checkPartNumbers(parts: readonly number[]): void {
  if (parts.length === 0) fail("a completion lists no parts");
  if (parts.length > PART_NUMBER_MAX) fail(`${parts.length} parts (max ${PART_NUMBER_MAX})`);
  for (const n of parts) checkPartNumber(n);
}

// ---- decoding ------------------------------------------------------------------------------

function readMetadata(r: ByteReader): Metadata {
  const count = r.u16("metadata count");
  if (count > METADATA_ENTRIES_MAX) fail(`${count} metadata entries (max ${METADATA_ENTRIES_MAX})`);
  const metadata: Record<string, string> = {};
  let previous: Uint8Array | null = null;
  for (let i = 0; i < count; i++) {
    const nameBytes = r.bytes16(METADATA_NAME_BYTES_MAX, "metadata name");
    if (previous !== null && compareBytes(previous, nameBytes) >= 0) {
      fail("metadata names are not in ascending order without duplicates");
    }
    previous = nameBytes;
    const name = decodeText(nameBytes, "metadata name");
    metadata[name] = r.string16(METADATA_BYTES_MAX, "metadata value");
  }
  check(metadataProblem(metadata));
  return metadata;
}

function readPartSizes(r: ByteReader, size: number | null, countMax: number): number[] {
  const count = r.u16("part size count");
  if (count > countMax) fail(`${count} part sizes (max ${countMax})`);
  const partSizes: number[] = [];
  for (let i = 0; i < count; i++) partSizes.push(r.u64("part size"));
  check(partSizesProblem(partSizes, size, countMax));
  return partSizes;
}

function decodeText(bytes: Uint8Array, what: string): string {
  const text = fromUtf8(bytes);
  if (text === null) fail(`${what} is not valid UTF-8`);
  return text;
}

function readContent(
  r: ByteReader,
  size: number,
  layout: "contiguous" | "sparse",
  ids: Uint8Array[],
  used: { count: number },
): Content {
  const kind = r.u8("content kind");
  let content: Content;
  if (kind === CONTENT_INLINE) {
    content = { kind: "inline", bytes: r.bytes32(INLINE_BYTES_MAX, "inline content") };
  } else if (kind === CONTENT_CHUNKS) {
    content = { kind: "chunks", chunkRefs: readRefs(r, ids, used) };
  } else {
    fail(`unknown content kind ${kind}`);
  }
  check(contentProblem(content, size, layout));
  return content;
}

function readRefs(r: ByteReader, ids: Uint8Array[], used: { count: number }): ChunkRef[] {
  const count = r.u32("chunk ref count");
  if (count > PUT_CHUNK_REFS_MAX) fail(`${count} chunk refs (max ${PUT_CHUNK_REFS_MAX})`);
  if (count !== ids.length) {
    fail(`payload places ${count} chunks but the delta header lists ${ids.length}`);
  }
  const refs: ChunkRef[] = [];
  for (let i = 0; i < count; i++) {
    const offsetBytes = r.u64("chunk offset");
    const lengthBytes = r.u32("chunk length");
    const chunkId = ids[i]!;
    if (chunkId.length !== CHUNK_ID_BYTES) fail(`chunk id ${i} is not ${CHUNK_ID_BYTES} bytes`);
    refs.push({ chunkId: chunkId.slice(), offsetBytes, lengthBytes });
  }
  used.count = count;
  return refs;
}

function readName(r: ByteReader, what: string): string {
  const name = r.string16(0xffff, what);
  check(posixNameProblem(name));
  return name;
}

function readInode(r: ByteReader, what: string): number {
  const inode = r.u64(what);
  check(inodeNumberProblem(what, inode));
  return inode;
}

function readMode(r: ByteReader): number {
  const mode = r.u32("mode");
  check(modeProblem(mode));
  return mode;
}

function readTime(r: ByteReader, what: string): PosixTime {
  const t = { sec: r.u64(`${what} seconds`), nsec: r.u32(`${what} nanoseconds`) };
  check(posixTimeProblem(what, t));
  return t;
}

function readKey(r: ByteReader): string {
  const key = r.string16(COMPOSITION_KEY_BYTES_MAX, "key");
  check(keyProblem(key));
  return key;
}

function readText(r: ByteReader, what: string, max: number): string {
  const text = r.string16(max, what);
  check(shortTextProblem(what, text, max));
  return text;
}

/**
 * Decodes a payload that fills `bytes` exactly, with `chunkIds` from its delta header.
 * Throws PayloadFormatError for anything encodePayload() would not have produced.
 */
export function decodePayload(bytes: Uint8Array, chunkIds: Uint8Array[]): Payload {
  if (bytes.length > PAYLOAD_PLAINTEXT_BYTES_MAX) {
    fail(`payload is ${bytes.length} bytes (max ${PAYLOAD_PLAINTEXT_BYTES_MAX})`);
  }
  const r = new ByteReader(bytes, fail);
  const version = r.u8("version");
  if (version < PAYLOAD_FORMAT_VERSION_MIN || version > PAYLOAD_FORMAT_VERSION) {
    fail(
      `payload format version ${version} is not ${PAYLOAD_FORMAT_VERSION_MIN}..${PAYLOAD_FORMAT_VERSION}`,
    );
  }
  const typeCode = r.u8("type");
  const type = TYPE_BY_CODE.get(typeCode);
  if (type === undefined) fail(`unknown payload type code ${typeCode}`);
  if (version === VERSION_PART_LAYOUTS && type !== "object_put" && type !== "upload_complete") {
    fail(`a ${type} payload has no version 2 form`);
  }
  if (
    version === VERSION_COMPLETE_CONDITIONS && type !== "upload_complete" && type !== "upload_part"
  ) {
    fail(`a ${type} payload has no version 3 form`);
  }
  const token = r.raw(PAYLOAD_TOKEN_BYTES, "token");
  const namespaceId = r.raw(NAMESPACE_ID_BYTES, "namespace id");
  const used = { count: 0 };
  let payload: Payload;
  switch (type) {
    case "namespace_create": {
      const name = r.string16(NAMESPACE_NAME_BYTES_MAX, "namespace name");
      check(namespaceNameProblem(name));
      const kindCode = r.u8("namespace kind");
      const kind = KIND_BY_CODE.get(kindCode);
      if (kind === undefined) fail(`unknown namespace kind code ${kindCode}`);
      const rootMode = readMode(r);
      const rootUid = r.u32("root uid");
      const rootGid = r.u32("root gid");
      payload = { type, token, namespaceId, name, kind, rootMode, rootUid, rootGid };
      break;
    }
    case "namespace_delete":
      payload = { type, token, namespaceId };
      break;
    case "object_put": {
      const key = readKey(r);
      const size = r.u64("size");
      const contentType = readText(r, "content type", CONTENT_TYPE_BYTES_MAX);
      const metadata = readMetadata(r);
      const etag = readText(r, "etag", ETAG_BYTES_MAX);
      const content = readContent(r, size, "contiguous", chunkIds, used);
      const condition = readCondition(r);
      payload = {
        type,
        token,
        namespaceId,
        key,
        size,
        contentType,
        metadata,
        etag,
        content,
        condition,
      };
      if (version === VERSION_PART_LAYOUTS) {
        payload.partSizes = readPartSizes(r, size, PUT_PART_SIZES_MAX);
      }
      break;
    }
    case "object_delete":
      payload = { type, token, namespaceId, key: readKey(r) };
      break;
    case "upload_start": {
      const key = readKey(r);
      const contentType = readText(r, "content type", CONTENT_TYPE_BYTES_MAX);
      const metadata = readMetadata(r);
      payload = { type, token, namespaceId, key, contentType, metadata };
      break;
    }
    case "upload_part": {
      const key = readKey(r);
      const uploadId = r.raw(UPLOAD_ID_BYTES, "upload id");
      const partNumber = r.u16("part number");
      checkPartNumber(partNumber);
      const size = r.u64("part size");
      const etag = readText(r, "etag", ETAG_BYTES_MAX);
      const content = readContent(r, size, "contiguous", chunkIds, used);
      if (content.kind !== "chunks") fail("a part's content must be chunk refs");
      payload = {
        type,
        token,
        namespaceId,
        key,
        uploadId,
        partNumber,
        size,
        etag,
        chunkRefs: content.chunkRefs,
      };
      if (version === VERSION_COMPLETE_CONDITIONS) {
        const metadata = readMetadata(r);
        if (Object.keys(metadata).length === 0) fail("a version 3 part carries metadata");
        payload.metadata = metadata;
      }
      break;
    }
    case "upload_complete": {
      const key = readKey(r);
      const uploadId = r.raw(UPLOAD_ID_BYTES, "upload id");
      const count = r.u16("part count");
      const partNumbers: number[] = [];
      for (let i = 0; i < count; i++) partNumbers.push(r.u16("part number"));
      checkPartNumbers(partNumbers);
      const digest = r.raw(PARTS_DIGEST_BYTES, "parts digest");
      const partBytesMin = r.u64("minimum part size");
      const etag = readText(r, "etag", ETAG_BYTES_MAX);
      payload = {
        type,
        token,
        namespaceId,
        key,
        uploadId,
        partNumbers,
        partsDigest: digest,
        partBytesMin,
        etag,
      };
      if (version >= VERSION_PART_LAYOUTS) {
        const layout = r.u8("part layout");
        if (layout === LAYOUT_LISTED) payload.partSizes = "listed";
        else if (layout === LAYOUT_SIZES) {
          payload.partSizes = readPartSizes(r, null, PART_NUMBER_MAX);
        } else fail(`unknown part layout ${layout}`);
      }
      if (version === VERSION_COMPLETE_CONDITIONS) {
        const condition = readCondition(r);
        const metadata = readMetadata(r);
        // One encoding per payload: v3 only when it says more than v2 could.
        if (condition.kind === "none" && Object.keys(metadata).length === 0) {
          fail("a version 3 completion carries a condition or metadata");
        }
        if (condition.kind !== "none") payload.condition = condition;
        if (Object.keys(metadata).length > 0) payload.metadata = metadata;
      }
      break;
    }
    case "upload_abort": {
      const key = readKey(r);
      payload = { type, token, namespaceId, key, uploadId: r.raw(UPLOAD_ID_BYTES, "upload id") };
      break;
    }
    case "posix_mkdir":
    case "posix_create": {
      const parent = readInode(r, "parent");
      const name = readName(r, "name");
      const mode = readMode(r);
      payload = {
        type,
        token,
        namespaceId,
        parent,
        name,
        mode,
        uid: r.u32("uid"),
        gid: r.u32("gid"),
      };
      break;
    }
    case "posix_symlink": {
      const parent = readInode(r, "parent");
      const name = readName(r, "name");
      const target = r.string16(SYMLINK_TARGET_BYTES_MAX, "symlink target");
      check(symlinkTargetProblem(target));
      payload = {
        type,
        token,
        namespaceId,
        parent,
        name,
        target,
        uid: r.u32("uid"),
        gid: r.u32("gid"),
      };
      break;
    }
    case "posix_link": {
      const inode = readInode(r, "inode");
      const parent = readInode(r, "parent");
      payload = { type, token, namespaceId, inode, parent, name: readName(r, "name") };
      break;
    }
    case "posix_unlink":
    case "posix_rmdir": {
      const parent = readInode(r, "parent");
      payload = { type, token, namespaceId, parent, name: readName(r, "name") };
      break;
    }
    case "posix_rename": {
      const parent = readInode(r, "parent");
      const name = readName(r, "name");
      const newParent = readInode(r, "new parent");
      const newName = readName(r, "new name");
      payload = { type, token, namespaceId, parent, name, newParent, newName };
      break;
    }
    case "posix_setattr": {
      const inode = readInode(r, "inode");
      const mask = r.u8("attribute mask");
      if ((mask & SET_ATIME) && (mask & SET_ATIME_NOW)) fail("atime is both explicit and now");
      if ((mask & SET_MTIME) && (mask & SET_MTIME_NOW)) fail("mtime is both explicit and now");
      const attributes: SetAttributes = {};
      if (mask & SET_MODE) attributes.mode = readMode(r);
      if (mask & SET_UID) attributes.uid = r.u32("uid");
      if (mask & SET_GID) attributes.gid = r.u32("gid");
      if (mask & SET_SIZE) attributes.size = r.u64("size");
      if (mask & SET_ATIME) attributes.atime = readTime(r, "atime");
      if (mask & SET_ATIME_NOW) attributes.atime = "now";
      if (mask & SET_MTIME) attributes.mtime = readTime(r, "mtime");
      if (mask & SET_MTIME_NOW) attributes.mtime = "now";
      payload = { type, token, namespaceId, inode, attributes };
      break;
    }
    case "posix_write": {
      const inode = readInode(r, "inode");
      const size = r.u64("size");
      const content = readContent(r, size, "sparse", chunkIds, used);
      payload = { type, token, namespaceId, inode, size, content };
      break;
    }
  }
  r.end("payload");
  if (used.count !== chunkIds.length) {
    fail(`delta header lists ${chunkIds.length} chunks the payload does not place`);
  }
  return payload;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}
