// The view store's persistence format: binary records, one version byte first, big-endian.
// The store is written only by the fold, so a record that does not decode is damage: a
// ViewCorruptError, which stops the view (dropAndRebuild() recovers it from the log).
//
// Tables and keys (ns = 16-byte namespace id, ok(key) = ordered key, see _ordered.ts):
//   view_meta       "format" -> u8 | "wm" u32 shard -> u64 watermark | "rebuilding" -> u8
//   view_ns         ns -> namespace record
//   view_ns_tenant  tenant [16] name -> ns
//   view_obj        ok(ns, key) -> object record
//   view_upload     ok(ns, key) 0x00 upload id [16] -> upload record
//   view_upload_id  ns upload id [16] -> the upload's view_upload key
//   view_part       ns upload id [16] u16 part -> part record
//   view_inode      ns u64 inode -> inode record
//   view_dirent     ns u64 dir name -> u64 inode, u8 type, u64 cookie
//   view_cookie     ns u64 dir u64 cookie -> u64 inode, u8 type, string name
//
// Object records have two versions: v1, and v2 = v1 followed by a multipart object's part
// sizes (u16 count, 1.., + u64 per part). An object without part sizes is written as v1,
// so stores written before v2 read unchanged (their multipart objects have no part sizes).
// Part records: v1, and v2 = v1 followed by the part's metadata (its checksums), written only
// for a part that has some.
// Object v3 = v2 followed by the id of the multipart upload the object was completed from [16]
// (written only for such objects; stores written before v3 read unchanged, and their
// objects name no upload, so a repeated completion of one answers NoSuchUpload as before).

import { assert } from "../base/mod.ts";
import {
  ByteReader,
  ByteWriter,
  CHUNK_ID_BYTES,
  type ChunkRef,
  type Composition,
  COMPOSITION_CHUNK_REFS_MAX,
  COMPOSITION_KEY_BYTES_MAX,
  type Content,
  CONTENT_TYPE_BYTES_MAX,
  ETAG_BYTES_MAX,
  fromUtf8,
  INLINE_BYTES_MAX,
  type Inode,
  INODE_TYPES,
  type InodeType,
  type Metadata,
  METADATA_BYTES_MAX,
  METADATA_ENTRIES_MAX,
  METADATA_NAME_BYTES_MAX,
  type Namespace,
  NAMESPACE_KINDS,
  NAMESPACE_NAME_BYTES_MAX,
  type NamespaceKind,
  type ObjectSummary,
  type Part,
  PART_NUMBER_MAX,
  partSizesProblem,
  POSIX_NAME_BYTES_MAX,
  type PosixTime,
  SYMLINK_TARGET_BYTES_MAX,
  TENANT_ID_BYTES,
  toHex,
  type Upload,
  UPLOAD_ID_BYTES,
  utf8,
} from "../composition/mod.ts";

export const VIEW_FORMAT_VERSION = 1;
const RECORD_VERSION = 1;
/** Object records with part sizes (see above). */
const OBJECT_RECORD_VERSION_PARTS = 2;
/** Object records naming the upload they were completed from (see above). */
const OBJECT_RECORD_VERSION_UPLOAD = 3;

/** A stored view record that does not decode: the view store is damaged. */
export class ViewCorruptError extends Error {
  override name = "ViewCorruptError";
}

function corrupt(message: string): never {
  throw new ViewCorruptError(`view record: ${message}`);
}

function reader(bytes: Uint8Array, what: string): ByteReader {
  return versionedReader(bytes, what, RECORD_VERSION).r;
}

function versionedReader(
  bytes: Uint8Array,
  what: string,
  newest: number,
): { r: ByteReader; version: number } {
  const r = new ByteReader(bytes, corrupt);
  const version = r.u8(`${what} version`);
  if (version < RECORD_VERSION || version > newest) corrupt(`${what} record version ${version}`);
  return { r, version };
}

function objectReader(bytes: Uint8Array): { r: ByteReader; version: number } {
  return versionedReader(bytes, "object", OBJECT_RECORD_VERSION_UPLOAD);
}

export function u64Bytes(value: number): Uint8Array {
  return new ByteWriter(8).u64(value).finish();
}

export function u32Bytes(value: number): Uint8Array {
  return new ByteWriter(4).u32(value).finish();
}

export function readU64(bytes: Uint8Array, offset = 0): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hi = view.getUint32(offset);
  if (hi > 0x1f_ffff) corrupt("u64 beyond a safe integer");
  return hi * 0x1_0000_0000 + view.getUint32(offset + 4);
}

// ---- shared pieces -------------------------------------------------------------------------

function writeMetadata(w: ByteWriter, metadata: Metadata): void {
  const names = Object.keys(metadata).sort();
  w.u16(names.length);
  for (const name of names) w.string16(name).string16(metadata[name]!);
}

function readMetadata(r: ByteReader): Metadata {
  const count = r.u16("metadata count");
  if (count > METADATA_ENTRIES_MAX) corrupt("too many metadata entries");
  const metadata: Record<string, string> = {};
  for (let i = 0; i < count; i++) {
    const name = r.string16(METADATA_NAME_BYTES_MAX, "metadata name");
    metadata[name] = r.string16(METADATA_BYTES_MAX, "metadata value");
  }
  return metadata;
}

function writeRefs(w: ByteWriter, refs: readonly ChunkRef[]): void {
  w.u32(refs.length);
  for (const r of refs) w.raw(r.chunkId).u64(r.offsetBytes).u32(r.lengthBytes);
}

function readRefs(r: ByteReader): ChunkRef[] {
  const count = r.u32("chunk ref count");
  if (count > COMPOSITION_CHUNK_REFS_MAX) corrupt("too many chunk refs");
  const refs: ChunkRef[] = [];
  for (let i = 0; i < count; i++) {
    refs.push({
      chunkId: r.raw(CHUNK_ID_BYTES, "chunk id"),
      offsetBytes: r.u64("chunk offset"),
      lengthBytes: r.u32("chunk length"),
    });
  }
  return refs;
}

function writeContent(w: ByteWriter, content: Content): void {
  if (content.kind === "inline") w.u8(2).bytes32(content.bytes);
  else {
    w.u8(1);
    writeRefs(w, content.chunkRefs);
  }
}

function readContent(r: ByteReader): Content {
  const kind = r.u8("content kind");
  if (kind === 2) return { kind: "inline", bytes: r.bytes32(INLINE_BYTES_MAX, "inline") };
  if (kind === 1) return { kind: "chunks", chunkRefs: readRefs(r) };
  corrupt(`content kind ${kind}`);
}

function writeTime(w: ByteWriter, t: PosixTime): void {
  w.u64(t.sec).u32(t.nsec);
}

function readTime(r: ByteReader): PosixTime {
  return { sec: r.u64("seconds"), nsec: r.u32("nanoseconds") };
}

const KIND_BY_CODE = new Map<number, NamespaceKind>(
  Object.entries(NAMESPACE_KINDS).map(([k, v]) => [v, k as NamespaceKind]),
);
const TYPE_BY_CODE = new Map<number, InodeType>(
  Object.entries(INODE_TYPES).map(([k, v]) => [v, k as InodeType]),
);

export function inodeTypeOf(code: number): InodeType {
  return TYPE_BY_CODE.get(code) ?? corrupt(`inode type ${code}`);
}

// ---- namespaces ----------------------------------------------------------------------------

export interface NamespaceRecord extends Namespace {
  /** POSIX: the next inode number to hand out. */
  nextInode: number;
}

export function encodeNamespace(ns: NamespaceRecord): Uint8Array {
  return new ByteWriter(128)
    .u8(RECORD_VERSION)
    .raw(ns.tenantId)
    .u8(NAMESPACE_KINDS[ns.kind])
    .string16(ns.name)
    .u64(ns.createdMs)
    .u64(ns.objects)
    .u64(ns.bytes)
    .u64(ns.uploads)
    .u64(ns.nextInode)
    .finish();
}

export function decodeNamespace(id: Uint8Array, bytes: Uint8Array): NamespaceRecord {
  const r = reader(bytes, "namespace");
  const tenantId = r.raw(TENANT_ID_BYTES, "tenant");
  const kind = KIND_BY_CODE.get(r.u8("kind")) ?? corrupt("namespace kind");
  const ns: NamespaceRecord = {
    id: id.slice(),
    tenantId,
    kind,
    name: r.string16(NAMESPACE_NAME_BYTES_MAX, "name"),
    createdMs: r.u64("created"),
    objects: r.u64("objects"),
    bytes: r.u64("bytes"),
    uploads: r.u64("uploads"),
    nextInode: r.u64("next inode"),
  };
  r.end("namespace");
  return ns;
}

/** The public shape (without fold-internal counters). */
export function publicNamespace(ns: NamespaceRecord): Namespace {
  const { nextInode: _nextInode, ...rest } = ns;
  return rest;
}

// ---- objects -------------------------------------------------------------------------------

export function encodeObject(o: Composition): Uint8Array {
  assert(
    o.completedUploadId === undefined || o.partSizes !== undefined,
    "only a multipart object names the upload it was completed from",
  );
  const w = new ByteWriter(256 + (o.partSizes?.length ?? 0) * 8)
    .u8(
      o.completedUploadId !== undefined
        ? OBJECT_RECORD_VERSION_UPLOAD
        : o.partSizes === undefined
        ? RECORD_VERSION
        : OBJECT_RECORD_VERSION_PARTS,
    )
    .string16(o.key)
    .u64(o.version)
    .u64(o.size)
    .u64(o.modifiedMs)
    .string16(o.etag)
    .u64(o.createdMs)
    .string16(o.contentType);
  writeMetadata(w, o.metadata);
  writeContent(w, o.content);
  if (o.partSizes !== undefined) {
    // The fold stores only layouts it checked: anything else here is a bug, not damage.
    assert(partSizesProblem(o.partSizes, o.size) === null, "an object's part sizes are valid");
    w.u16(o.partSizes.length);
    for (const n of o.partSizes) w.u64(n);
  }
  if (o.completedUploadId !== undefined) {
    assert(o.completedUploadId.length === UPLOAD_ID_BYTES, "an upload id's length");
    w.raw(o.completedUploadId);
  }
  return w.finish();
}

/** The listing fields only: the record's head, without metadata or content. */
export function decodeObjectSummary(bytes: Uint8Array): ObjectSummary {
  const { r } = objectReader(bytes);
  return {
    key: r.string16(COMPOSITION_KEY_BYTES_MAX, "key"),
    version: r.u64("version"),
    size: r.u64("size"),
    modifiedMs: r.u64("modified"),
    etag: r.string16(ETAG_BYTES_MAX, "etag"),
  };
}

export function decodeObject(namespaceId: Uint8Array, bytes: Uint8Array): Composition {
  const { r, version } = objectReader(bytes);
  const key = r.string16(COMPOSITION_KEY_BYTES_MAX, "key");
  const objectVersion = r.u64("version");
  const size = r.u64("size");
  const modifiedMs = r.u64("modified");
  const etag = r.string16(ETAG_BYTES_MAX, "etag");
  const createdMs = r.u64("created");
  const contentType = r.string16(CONTENT_TYPE_BYTES_MAX, "content type");
  const metadata = readMetadata(r);
  const content = readContent(r);
  const object: Composition = {
    namespaceId: namespaceId.slice(),
    key,
    version: objectVersion,
    size,
    contentType,
    metadata,
    etag,
    createdMs,
    modifiedMs,
    content,
  };
  if (version >= OBJECT_RECORD_VERSION_PARTS) {
    const count = r.u16("part size count");
    const partSizes: number[] = [];
    for (let i = 0; i < count; i++) partSizes.push(r.u64("part size"));
    const problem = partSizesProblem(partSizes, size, PART_NUMBER_MAX);
    if (problem !== null) corrupt(`object ${key}: ${problem}`);
    object.partSizes = partSizes;
  }
  if (version === OBJECT_RECORD_VERSION_UPLOAD) {
    object.completedUploadId = r.raw(UPLOAD_ID_BYTES, "completed upload id");
  }
  r.end("object");
  return object;
}

/** The full key of an object record (the first field after the version). */
export function objectKeyBytes(bytes: Uint8Array): Uint8Array {
  const { r } = objectReader(bytes);
  return r.bytes16(COMPOSITION_KEY_BYTES_MAX, "key");
}

// ---- uploads and parts ---------------------------------------------------------------------

export interface UploadRecord {
  key: string;
  uploadId: Uint8Array;
  initiatedMs: number;
  parts: number;
  contentType: string;
  metadata: Metadata;
}

export function encodeUpload(u: UploadRecord): Uint8Array {
  const w = new ByteWriter(128)
    .u8(RECORD_VERSION)
    .string16(u.key)
    .raw(u.uploadId)
    .u64(u.initiatedMs)
    .u32(u.parts)
    .string16(u.contentType);
  writeMetadata(w, u.metadata);
  return w.finish();
}

export function decodeUpload(bytes: Uint8Array): UploadRecord {
  const r = reader(bytes, "upload");
  const u: UploadRecord = {
    key: r.string16(COMPOSITION_KEY_BYTES_MAX, "key"),
    uploadId: r.raw(UPLOAD_ID_BYTES, "upload id"),
    initiatedMs: r.u64("initiated"),
    parts: r.u32("parts"),
    contentType: r.string16(CONTENT_TYPE_BYTES_MAX, "content type"),
    metadata: readMetadata(r),
  };
  r.end("upload");
  return u;
}

/** Key and upload id of an upload record, for ordered scans. */
export function uploadOrder(bytes: Uint8Array): { key: Uint8Array; tie: Uint8Array } {
  const r = reader(bytes, "upload");
  const key = r.bytes16(COMPOSITION_KEY_BYTES_MAX, "key");
  return { key, tie: r.raw(UPLOAD_ID_BYTES, "upload id") };
}

export function publicUpload(namespaceId: Uint8Array, u: UploadRecord): Upload {
  return {
    namespaceId: namespaceId.slice(),
    key: u.key,
    uploadId: toHex(u.uploadId),
    initiatedMs: u.initiatedMs,
    contentType: u.contentType,
    metadata: u.metadata,
    parts: u.parts,
  };
}

/** Part records with metadata (see above). */
const PART_RECORD_VERSION_METADATA = 2;

export function encodePart(p: Part): Uint8Array {
  const withMetadata = p.metadata !== undefined && Object.keys(p.metadata).length > 0;
  const w = new ByteWriter(64 + p.chunkRefs.length * 44)
    .u8(withMetadata ? PART_RECORD_VERSION_METADATA : RECORD_VERSION)
    .u16(p.partNumber)
    .u64(p.size)
    .string16(p.etag)
    .u64(p.modifiedMs);
  writeRefs(w, p.chunkRefs);
  if (withMetadata) writeMetadata(w, p.metadata!);
  return w.finish();
}

export function decodePart(bytes: Uint8Array): Part {
  const { r, version } = versionedReader(bytes, "part", PART_RECORD_VERSION_METADATA);
  const p: Part = {
    partNumber: r.u16("part number"),
    size: r.u64("size"),
    etag: r.string16(ETAG_BYTES_MAX, "etag"),
    modifiedMs: r.u64("modified"),
    chunkRefs: readRefs(r),
  };
  if (version === PART_RECORD_VERSION_METADATA) {
    p.metadata = readMetadata(r);
    if (Object.keys(p.metadata).length === 0) corrupt("a version 2 part record without metadata");
  }
  r.end("part");
  return p;
}

// ---- POSIX ---------------------------------------------------------------------------------

export interface InodeRecord extends Inode {
  /** Directories: the next readdir cookie to hand out. */
  nextCookie: number;
}

export function encodeInode(i: InodeRecord): Uint8Array {
  const w = new ByteWriter(128)
    .u8(RECORD_VERSION)
    .u8(INODE_TYPES[i.type])
    .u32(i.mode)
    .u32(i.uid)
    .u32(i.gid)
    .u32(i.nlink)
    .u64(i.size);
  writeTime(w, i.atime);
  writeTime(w, i.mtime);
  writeTime(w, i.ctime);
  w.u64(i.version).u64(i.parent).u64(i.entries).u64(i.nextCookie).string16(i.target);
  writeContent(w, i.content);
  return w.finish();
}

export function decodeInode(
  namespaceId: Uint8Array,
  inode: number,
  bytes: Uint8Array,
): InodeRecord {
  const r = reader(bytes, "inode");
  const rec: InodeRecord = {
    namespaceId: namespaceId.slice(),
    inode,
    type: inodeTypeOf(r.u8("type")),
    mode: r.u32("mode"),
    uid: r.u32("uid"),
    gid: r.u32("gid"),
    nlink: r.u32("nlink"),
    size: r.u64("size"),
    atime: readTime(r),
    mtime: readTime(r),
    ctime: readTime(r),
    version: r.u64("version"),
    parent: r.u64("parent"),
    entries: r.u64("entries"),
    nextCookie: r.u64("next cookie"),
    target: r.string16(SYMLINK_TARGET_BYTES_MAX, "target"),
    content: readContent(r),
  };
  r.end("inode");
  return rec;
}

export function publicInode(i: InodeRecord): Inode {
  const { nextCookie: _nextCookie, ...rest } = i;
  return structuredClone(rest);
}

export interface DirentValue {
  inode: number;
  type: InodeType;
  cookie: number;
}

export function encodeDirent(d: DirentValue): Uint8Array {
  return new ByteWriter(17).u64(d.inode).u8(INODE_TYPES[d.type]).u64(d.cookie).finish();
}

export function decodeDirent(bytes: Uint8Array): DirentValue {
  const r = new ByteReader(bytes, corrupt);
  const d = { inode: r.u64("inode"), type: inodeTypeOf(r.u8("type")), cookie: r.u64("cookie") };
  r.end("dirent");
  return d;
}

export function encodeCookieEntry(inode: number, type: InodeType, name: string): Uint8Array {
  return new ByteWriter(16 + name.length * 3).u64(inode).u8(INODE_TYPES[type]).string16(name)
    .finish();
}

export function decodeCookieEntry(
  bytes: Uint8Array,
): { inode: number; type: InodeType; name: string } {
  const r = new ByteReader(bytes, corrupt);
  const e = {
    inode: r.u64("inode"),
    type: inodeTypeOf(r.u8("type")),
    name: r.string16(POSIX_NAME_BYTES_MAX, "name"),
  };
  r.end("cookie entry");
  return e;
}

export { fromUtf8, utf8 };
