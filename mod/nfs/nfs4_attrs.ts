// NFSv4 attributes (RFC 8881 §5): the bitmaps, the fattr4 the server returns for a node of
// the bucket namespace (required and the usual recommended attributes), and the settable ones
// it decodes from SETATTR, CREATE and OPEN. Owners are numeric strings ("1000"), as the Linux
// client sends and expects with AUTH_SYS.

import type { FileAttr, SetAttr } from "./bucket_fs.ts";
import {
  NF4DIR,
  NF4LNK,
  NF4REG,
  NFS4ERR_ATTRNOTSUPP,
  NFS4ERR_BADOWNER,
  NFS4ERR_INVAL,
  SET_TO_CLIENT_TIME4,
  SET_TO_SERVER_TIME4,
} from "./nfs4_const.ts";
import { Nfs4Error } from "./nfs4_errors.ts";
import { XdrError, XdrReader, XdrWriter } from "./xdr.ts";

export const FATTR4_SUPPORTED_ATTRS = 0;
export const FATTR4_TYPE = 1;
export const FATTR4_FH_EXPIRE_TYPE = 2;
export const FATTR4_CHANGE = 3;
export const FATTR4_SIZE = 4;
export const FATTR4_LINK_SUPPORT = 5;
export const FATTR4_SYMLINK_SUPPORT = 6;
export const FATTR4_NAMED_ATTR = 7;
export const FATTR4_FSID = 8;
export const FATTR4_UNIQUE_HANDLES = 9;
export const FATTR4_LEASE_TIME = 10;
export const FATTR4_RDATTR_ERROR = 11;
export const FATTR4_ACLSUPPORT = 13;
export const FATTR4_CANSETTIME = 15;
export const FATTR4_CASE_INSENSITIVE = 16;
export const FATTR4_CASE_PRESERVING = 17;
export const FATTR4_CHOWN_RESTRICTED = 18;
export const FATTR4_FILEHANDLE = 19;
export const FATTR4_FILEID = 20;
export const FATTR4_FILES_AVAIL = 21;
export const FATTR4_FILES_FREE = 22;
export const FATTR4_FILES_TOTAL = 23;
export const FATTR4_HOMOGENEOUS = 26;
export const FATTR4_MAXFILESIZE = 27;
export const FATTR4_MAXLINK = 28;
export const FATTR4_MAXNAME = 29;
export const FATTR4_MAXREAD = 30;
export const FATTR4_MAXWRITE = 31;
export const FATTR4_MODE = 33;
export const FATTR4_NO_TRUNC = 34;
export const FATTR4_NUMLINKS = 35;
export const FATTR4_OWNER = 36;
export const FATTR4_OWNER_GROUP = 37;
export const FATTR4_RAWDEV = 41;
export const FATTR4_SPACE_AVAIL = 42;
export const FATTR4_SPACE_FREE = 43;
export const FATTR4_SPACE_TOTAL = 44;
export const FATTR4_SPACE_USED = 45;
export const FATTR4_TIME_ACCESS = 47;
export const FATTR4_TIME_ACCESS_SET = 48;
export const FATTR4_TIME_DELTA = 51;
export const FATTR4_TIME_METADATA = 52;
export const FATTR4_TIME_MODIFY = 53;
export const FATTR4_TIME_MODIFY_SET = 54;
export const FATTR4_MOUNTED_ON_FILEID = 55;
export const FATTR4_SUPPATTR_EXCLCREAT = 75;

/** Bitmap words a client may send (attributes end below 96). */
export const BITMAP_WORDS_MAX = 8;
/** A fattr4's attribute bytes at most (settable attributes are a few dozen bytes). */
export const FATTR4_BYTES_MAX = 8192;
/** An owner string's bytes at most. */
const OWNER_BYTES_MAX = 1024;

/** The attributes this server returns, in bit order. */
export const SUPPORTED_ATTRS: readonly number[] = [
  FATTR4_SUPPORTED_ATTRS,
  FATTR4_TYPE,
  FATTR4_FH_EXPIRE_TYPE,
  FATTR4_CHANGE,
  FATTR4_SIZE,
  FATTR4_LINK_SUPPORT,
  FATTR4_SYMLINK_SUPPORT,
  FATTR4_NAMED_ATTR,
  FATTR4_FSID,
  FATTR4_UNIQUE_HANDLES,
  FATTR4_LEASE_TIME,
  FATTR4_RDATTR_ERROR,
  FATTR4_ACLSUPPORT,
  FATTR4_CANSETTIME,
  FATTR4_CASE_INSENSITIVE,
  FATTR4_CASE_PRESERVING,
  FATTR4_CHOWN_RESTRICTED,
  FATTR4_FILEHANDLE,
  FATTR4_FILEID,
  FATTR4_FILES_AVAIL,
  FATTR4_FILES_FREE,
  FATTR4_FILES_TOTAL,
  FATTR4_HOMOGENEOUS,
  FATTR4_MAXFILESIZE,
  FATTR4_MAXLINK,
  FATTR4_MAXNAME,
  FATTR4_MAXREAD,
  FATTR4_MAXWRITE,
  FATTR4_MODE,
  FATTR4_NO_TRUNC,
  FATTR4_NUMLINKS,
  FATTR4_OWNER,
  FATTR4_OWNER_GROUP,
  FATTR4_RAWDEV,
  FATTR4_SPACE_AVAIL,
  FATTR4_SPACE_FREE,
  FATTR4_SPACE_TOTAL,
  FATTR4_SPACE_USED,
  FATTR4_TIME_ACCESS,
  FATTR4_TIME_ACCESS_SET,
  FATTR4_TIME_DELTA,
  FATTR4_TIME_METADATA,
  FATTR4_TIME_MODIFY,
  FATTR4_TIME_MODIFY_SET,
  FATTR4_MOUNTED_ON_FILEID,
  FATTR4_SUPPATTR_EXCLCREAT,
];
const SETTABLE = new Set([
  FATTR4_SIZE,
  FATTR4_MODE,
  FATTR4_OWNER,
  FATTR4_OWNER_GROUP,
  FATTR4_TIME_ACCESS_SET,
  FATTR4_TIME_MODIFY_SET,
]);
/** Write-only attributes: settable, never returned by GETATTR. */
const WRITE_ONLY = new Set([FATTR4_TIME_ACCESS_SET, FATTR4_TIME_MODIFY_SET]);
const SUPPORTED = new Set(SUPPORTED_ATTRS);

/** A set of attribute numbers as bitmap4 words. */
export function bitmapOf(bits: Iterable<number>): number[] {
  const words: number[] = [];
  for (const b of bits) {
    const w = b >>> 5;
    while (words.length <= w) words.push(0);
    words[w] = (words[w]! | (1 << (b & 31))) >>> 0;
  }
  return words;
}

export function readBitmap(r: XdrReader): Set<number> {
  const n = r.u32();
  if (n > BITMAP_WORDS_MAX) throw new XdrError(`bitmap of ${n} words`);
  const bits = new Set<number>();
  for (let w = 0; w < n; w++) {
    const word = r.u32();
    for (let b = 0; b < 32; b++) if ((word >>> b) & 1) bits.add(w * 32 + b);
  }
  return bits;
}

export function writeBitmap(w: XdrWriter, bits: Iterable<number>): void {
  const words = bitmapOf(bits);
  w.u32(words.length);
  for (const word of words) w.u32(word);
}

/** What attributes of a node need beyond its FileAttr: the file system's figures. */
export interface AttrContext {
  fh: Uint8Array;
  fsid: bigint;
  leaseSeconds: number;
  ioBytesMax: number;
  fileBytesMax: number;
  space: { totalBytes: number; freeBytes: number; files: number };
  /** mounted_on_fileid: the node's own id (one file system, no mount points below). */
  mountedOnFileid?: bigint;
}

function nfsTime4(w: XdrWriter, ms: number): void {
  const seconds = Math.floor(ms / 1000);
  w.u64(BigInt(seconds)).u32(Math.round((ms - seconds * 1000) * 1e6) % 1_000_000_000);
}

/** The change attribute: the node's last change in nanoseconds (ctime or mtime, later). */
export function changeOf(a: FileAttr): bigint {
  return BigInt(Math.round(Math.max(a.ctimeMs, a.mtimeMs) * 1000)) * 1000n;
}

function typeOf(a: FileAttr): number {
  return a.type === "dir" ? NF4DIR : a.type === "symlink" ? NF4LNK : NF4REG;
}

/** fattr4 of `a` for the `asked` attributes this server supports. */
export function encodeFattr(
  w: XdrWriter,
  asked: ReadonlySet<number>,
  a: FileAttr,
  ctx: AttrContext,
): void {
  const bits = [...asked].filter((b) => SUPPORTED.has(b) && !WRITE_ONLY.has(b)).sort((x, y) =>
    x - y
  );
  writeBitmap(w, bits);
  const v = new XdrWriter(256);
  for (const b of bits) {
    switch (b) {
      case FATTR4_SUPPORTED_ATTRS:
        writeBitmap(v, SUPPORTED_ATTRS);
        break;
      case FATTR4_TYPE:
        v.u32(typeOf(a));
        break;
      case FATTR4_FH_EXPIRE_TYPE:
        v.u32(0); // FH4_PERSISTENT
        break;
      case FATTR4_CHANGE:
        v.u64(changeOf(a));
        break;
      case FATTR4_SIZE:
        v.u64(a.size);
        break;
      case FATTR4_LINK_SUPPORT:
        v.bool(false);
        break;
      case FATTR4_SYMLINK_SUPPORT:
        v.bool(true);
        break;
      case FATTR4_NAMED_ATTR:
        v.bool(false);
        break;
      case FATTR4_FSID:
        v.u64(ctx.fsid).u64(0);
        break;
      case FATTR4_UNIQUE_HANDLES:
        v.bool(true);
        break;
      case FATTR4_LEASE_TIME:
        v.u32(ctx.leaseSeconds);
        break;
      case FATTR4_RDATTR_ERROR:
        v.u32(0);
        break;
      case FATTR4_ACLSUPPORT:
        v.u32(0);
        break;
      case FATTR4_CANSETTIME:
        v.bool(true);
        break;
      case FATTR4_CASE_INSENSITIVE:
        v.bool(false);
        break;
      case FATTR4_CASE_PRESERVING:
        v.bool(true);
        break;
      case FATTR4_CHOWN_RESTRICTED:
        v.bool(true);
        break;
      case FATTR4_FILEHANDLE:
        v.opaque(ctx.fh);
        break;
      case FATTR4_FILEID:
        v.u64(a.fileid);
        break;
      case FATTR4_FILES_AVAIL:
      case FATTR4_FILES_FREE:
        v.u64(Math.floor(ctx.space.freeBytes / 4096));
        break;
      case FATTR4_FILES_TOTAL:
        v.u64(ctx.space.files + Math.floor(ctx.space.freeBytes / 4096));
        break;
      case FATTR4_HOMOGENEOUS:
        v.bool(true);
        break;
      case FATTR4_MAXFILESIZE:
        v.u64(ctx.fileBytesMax);
        break;
      case FATTR4_MAXLINK:
        v.u32(1);
        break;
      case FATTR4_MAXNAME:
        v.u32(255);
        break;
      case FATTR4_MAXREAD:
      case FATTR4_MAXWRITE:
        v.u64(ctx.ioBytesMax);
        break;
      case FATTR4_MODE:
        v.u32(a.mode & 0o7777);
        break;
      case FATTR4_NO_TRUNC:
        v.bool(true);
        break;
      case FATTR4_NUMLINKS:
        v.u32(a.nlink);
        break;
      case FATTR4_OWNER:
        v.string(String(a.uid));
        break;
      case FATTR4_OWNER_GROUP:
        v.string(String(a.gid));
        break;
      case FATTR4_RAWDEV:
        v.u32(0).u32(0);
        break;
      case FATTR4_SPACE_AVAIL:
      case FATTR4_SPACE_FREE:
        v.u64(ctx.space.freeBytes);
        break;
      case FATTR4_SPACE_TOTAL:
        v.u64(ctx.space.totalBytes);
        break;
      case FATTR4_SPACE_USED:
        v.u64(a.type === "dir" ? 4096 : Math.ceil(a.size / 4096) * 4096);
        break;
      case FATTR4_TIME_ACCESS:
        nfsTime4(v, a.atimeMs);
        break;
      case FATTR4_TIME_DELTA:
        v.u64(0n).u32(1_000_000); // millisecond times
        break;
      case FATTR4_TIME_METADATA:
        nfsTime4(v, a.ctimeMs);
        break;
      case FATTR4_TIME_MODIFY:
        nfsTime4(v, a.mtimeMs);
        break;
      case FATTR4_MOUNTED_ON_FILEID:
        v.u64(ctx.mountedOnFileid ?? a.fileid);
        break;
      case FATTR4_SUPPATTR_EXCLCREAT:
        writeBitmap(v, [FATTR4_SIZE, FATTR4_MODE, FATTR4_OWNER, FATTR4_OWNER_GROUP]);
        break;
    }
  }
  w.opaque(v.finish());
}

function readTime4(r: XdrReader): number {
  const seconds = r.u64();
  const ns = r.u32();
  if (ns >= 1e9) throw new Nfs4Error(NFS4ERR_INVAL, `nseconds ${ns} out of range`);
  if (seconds > 1n << 40n) throw new Nfs4Error(NFS4ERR_INVAL, "a time past year 30000");
  return Number(seconds) * 1000 + ns / 1e6;
}

function readOwner(r: XdrReader): number {
  const s = r.string(OWNER_BYTES_MAX);
  // Numeric ids, bare or with a domain ("1000@example.org"): AUTH_SYS has no names.
  const m = /^([0-9]{1,10})(@.*)?$/.exec(s);
  if (m === null || Number(m[1]) > 0xffff_ffff) {
    throw new Nfs4Error(NFS4ERR_BADOWNER, `owner ${JSON.stringify(s.slice(0, 64))} is no id`);
  }
  return Number(m[1]);
}

/** A decoded fattr4 of settable attributes, with the bits it set. */
export interface DecodedSetAttr {
  attr: SetAttr;
  bits: number[];
}

/**
 * The settable attributes of a fattr4 (SETATTR, CREATE, OPEN). Unsupported ones are
 * NFS4ERR_ATTRNOTSUPP, read-only ones NFS4ERR_INVAL (RFC 8881 §18.30.4).
 */
export function decodeSetAttr(r: XdrReader): DecodedSetAttr {
  const bits = [...readBitmap(r)].sort((a, b) => a - b);
  const values = new XdrReader(r.opaque(FATTR4_BYTES_MAX));
  for (const b of bits) {
    if (!SUPPORTED.has(b)) throw new Nfs4Error(NFS4ERR_ATTRNOTSUPP, `attribute ${b}`);
    if (!SETTABLE.has(b)) throw new Nfs4Error(NFS4ERR_INVAL, `attribute ${b} is read-only`);
  }
  const attr: SetAttr = {};
  for (const b of bits) {
    switch (b) {
      case FATTR4_SIZE:
        attr.size = values.u64Number("size");
        break;
      case FATTR4_MODE:
        attr.mode = values.u32() & 0o7777;
        break;
      case FATTR4_OWNER:
        attr.uid = readOwner(values);
        break;
      case FATTR4_OWNER_GROUP:
        attr.gid = readOwner(values);
        break;
      case FATTR4_TIME_ACCESS_SET:
      case FATTR4_TIME_MODIFY_SET: {
        const how = values.u32();
        let t: number | "now";
        if (how === SET_TO_SERVER_TIME4) t = "now";
        else if (how === SET_TO_CLIENT_TIME4) t = readTime4(values);
        else throw new XdrError(`time_how4 ${how}`);
        if (b === FATTR4_TIME_ACCESS_SET) attr.atime = t;
        else attr.mtime = t;
        break;
      }
    }
  }
  if (values.remaining !== 0) throw new XdrError("attribute values longer than their bitmap");
  return { attr, bits };
}
