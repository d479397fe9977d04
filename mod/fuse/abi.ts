// The FUSE kernel ABI (include/uapi/linux/fuse.h), protocol 7.31 and later: opcodes, INIT
// flags, errno values and the wire structs as readers and writers over little-endian bytes.
// Pure: no Deno, no I/O. Names keep the kernel's so they can be checked against the header.

export const FUSE_KERNEL_VERSION = 7;
/** The minor version this server speaks (7.31: fuse_attr.flags, max_pages, map_alignment). */
export const FUSE_KERNEL_MINOR_VERSION = 31;
/** The oldest kernel minor accepted (max_pages and readdirplus need it). */
export const FUSE_KERNEL_MINOR_MIN = 28;

export const FUSE_ROOT_ID = 1n;

// ---- opcodes -------------------------------------------------------------------------------
export const FUSE_LOOKUP = 1;
export const FUSE_FORGET = 2;
export const FUSE_GETATTR = 3;
export const FUSE_SETATTR = 4;
export const FUSE_READLINK = 5;
export const FUSE_SYMLINK = 6;
export const FUSE_MKNOD = 8;
export const FUSE_MKDIR = 9;
export const FUSE_UNLINK = 10;
export const FUSE_RMDIR = 11;
export const FUSE_RENAME = 12;
export const FUSE_LINK = 13;
export const FUSE_OPEN = 14;
export const FUSE_READ = 15;
export const FUSE_WRITE = 16;
export const FUSE_STATFS = 17;
export const FUSE_RELEASE = 18;
export const FUSE_FSYNC = 20;
export const FUSE_SETXATTR = 21;
export const FUSE_GETXATTR = 22;
export const FUSE_LISTXATTR = 23;
export const FUSE_REMOVEXATTR = 24;
export const FUSE_FLUSH = 25;
export const FUSE_INIT = 26;
export const FUSE_OPENDIR = 27;
export const FUSE_READDIR = 28;
export const FUSE_RELEASEDIR = 29;
export const FUSE_FSYNCDIR = 30;
export const FUSE_GETLK = 31;
export const FUSE_SETLK = 32;
export const FUSE_SETLKW = 33;
export const FUSE_ACCESS = 34;
export const FUSE_CREATE = 35;
export const FUSE_INTERRUPT = 36;
export const FUSE_BMAP = 37;
export const FUSE_DESTROY = 38;
export const FUSE_IOCTL = 39;
export const FUSE_POLL = 40;
export const FUSE_NOTIFY_REPLY = 41;
export const FUSE_BATCH_FORGET = 42;
export const FUSE_FALLOCATE = 43;
export const FUSE_READDIRPLUS = 44;
export const FUSE_RENAME2 = 45;
export const FUSE_LSEEK = 46;
export const FUSE_COPY_FILE_RANGE = 47;
export const FUSE_SETUPMAPPING = 48;
export const FUSE_REMOVEMAPPING = 49;
export const FUSE_SYNCFS = 50;
export const FUSE_TMPFILE = 51;
export const FUSE_STATX = 52;

// ---- INIT flags ----------------------------------------------------------------------------
export const FUSE_ASYNC_READ = 1 << 0;
export const FUSE_POSIX_LOCKS = 1 << 1;
export const FUSE_ATOMIC_O_TRUNC = 1 << 3;
export const FUSE_BIG_WRITES = 1 << 5;
export const FUSE_DONT_MASK = 1 << 6;
export const FUSE_FLOCK_LOCKS = 1 << 10;
export const FUSE_AUTO_INVAL_DATA = 1 << 12;
export const FUSE_DO_READDIRPLUS = 1 << 13;
export const FUSE_READDIRPLUS_AUTO = 1 << 14;
export const FUSE_ASYNC_DIO = 1 << 15;
export const FUSE_WRITEBACK_CACHE = 1 << 16;
export const FUSE_PARALLEL_DIROPS = 1 << 18;
export const FUSE_ABORT_ERROR = 1 << 21;
export const FUSE_MAX_PAGES = 1 << 22;
export const FUSE_CACHE_SYMLINKS = 1 << 23;

// ---- other flags ---------------------------------------------------------------------------
export const FATTR_MODE = 1 << 0;
export const FATTR_UID = 1 << 1;
export const FATTR_GID = 1 << 2;
export const FATTR_SIZE = 1 << 3;
export const FATTR_ATIME = 1 << 4;
export const FATTR_MTIME = 1 << 5;
export const FATTR_FH = 1 << 6;
export const FATTR_ATIME_NOW = 1 << 7;
export const FATTR_MTIME_NOW = 1 << 8;
export const FATTR_LOCKOWNER = 1 << 9;
export const FATTR_CTIME = 1 << 10;

export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;

export const FUSE_RELEASE_FLOCK_UNLOCK = 1 << 1;
export const FUSE_LK_FLOCK = 1 << 0;
export const FUSE_GETATTR_FH = 1 << 0;

export const RENAME_NOREPLACE = 1 << 0;
export const RENAME_EXCHANGE = 1 << 1;
export const RENAME_WHITEOUT = 1 << 2;

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/** Directory entry types (DT_*), as readdir reports them. */
export const DT_DIR = 4;
export const DT_REG = 8;
export const DT_LNK = 10;

// ---- errno (Linux, x86_64 and aarch64 alike) -------------------------------------------------
export const EPERM = 1;
export const ENOENT = 2;
export const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const E2BIG = 7;
export const EBADF = 9;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EEXIST = 17;
export const EXDEV = 18;
export const ENODEV = 19;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const ENFILE = 23;
export const EFBIG = 27;
export const ENOSPC = 28;
export const EROFS = 30;
export const EMLINK = 31;
export const ERANGE = 34;
export const EDEADLK = 35;
export const ENAMETOOLONG = 36;
export const ENOLCK = 37;
export const ENOSYS = 38;
export const ENOTEMPTY = 39;
export const ENODATA = 61;
export const EPROTO = 71;
export const EOPNOTSUPP = 95;
export const ESTALE = 116;
export const EDQUOT = 122;

// ---- sizes ---------------------------------------------------------------------------------
export const IN_HEADER_BYTES = 40;
export const OUT_HEADER_BYTES = 16;
export const ATTR_BYTES = 88;
export const ENTRY_OUT_BYTES = 40 + ATTR_BYTES;
export const ATTR_OUT_BYTES = 16 + ATTR_BYTES;
export const INIT_OUT_BYTES = 64;
export const OPEN_OUT_BYTES = 16;
export const WRITE_OUT_BYTES = 8;
export const STATFS_OUT_BYTES = 80;
export const GETXATTR_OUT_BYTES = 8;
export const LK_OUT_BYTES = 24;
export const LSEEK_OUT_BYTES = 8;
export const DIRENT_BYTES = 24;
export const DIRENTPLUS_BYTES = ENTRY_OUT_BYTES + DIRENT_BYTES;

const DECODER = new TextDecoder();

/** A request's fuse_in_header. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

export function readInHeader(view: DataView): InHeader {
  return {
    len: view.getUint32(0, true),
    opcode: view.getUint32(4, true),
    unique: view.getBigUint64(8, true),
    nodeid: view.getBigUint64(16, true),
    uid: view.getUint32(24, true),
    gid: view.getUint32(28, true),
    pid: view.getUint32(32, true),
  };
}

/** Raised by a decoder when the request body is shorter than its struct: answered EINVAL. */
export class AbiError extends Error {
  override name = "AbiError";
}

/** A cursor over one request's body (after the in header). */
export class InReader {
  readonly #view: DataView;
  readonly #bytes: Uint8Array;
  #at = 0;

  constructor(body: Uint8Array) {
    this.#bytes = body;
    this.#view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  }

  get remaining(): number {
    return this.#bytes.length - this.#at;
  }

  #need(n: number): void {
    if (this.#at + n > this.#bytes.length) {
      throw new AbiError(`a request body of ${this.#bytes.length} bytes is too short`);
    }
  }

  u32(): number {
    this.#need(4);
    const v = this.#view.getUint32(this.#at, true);
    this.#at += 4;
    return v;
  }

  u64(): bigint {
    this.#need(8);
    const v = this.#view.getBigUint64(this.#at, true);
    this.#at += 8;
    return v;
  }

  /** A u64 that must fit a JS number exactly (offsets and sizes). */
  u64n(): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new AbiError(`${v} is out of range`);
    return Number(v);
  }

  skip(n: number): void {
    this.#need(n);
    this.#at += n;
  }

  /** A NUL-terminated name. */
  cstring(): string {
    const end = this.#bytes.indexOf(0, this.#at);
    if (end < 0) throw new AbiError("a name without its terminating NUL");
    const s = DECODER.decode(this.#bytes.subarray(this.#at, end));
    this.#at = end + 1;
    return s;
  }

  /** The next `n` bytes, as a view (valid only while the request buffer is). */
  bytes(n: number): Uint8Array {
    this.#need(n);
    const b = this.#bytes.subarray(this.#at, this.#at + n);
    this.#at += n;
    return b;
  }

  rest(): Uint8Array {
    const b = this.#bytes.subarray(this.#at);
    this.#at = this.#bytes.length;
    return b;
  }
}

/** A writer of reply structs into a fixed buffer. */
export class OutWriter {
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  #at = 0;

  constructor(size: number) {
    this.bytes = new Uint8Array(size);
    this.#view = new DataView(this.bytes.buffer);
  }

  get length(): number {
    return this.#at;
  }

  u16(v: number): this {
    this.#view.setUint16(this.#at, v, true);
    this.#at += 2;
    return this;
  }

  u32(v: number): this {
    this.#view.setUint32(this.#at, v >>> 0, true);
    this.#at += 4;
    return this;
  }

  u64(v: bigint | number): this {
    this.#view.setBigUint64(this.#at, BigInt(v), true);
    this.#at += 8;
    return this;
  }

  put(b: Uint8Array): this {
    this.bytes.set(b, this.#at);
    this.#at += b.length;
    return this;
  }

  pad(n: number): this {
    this.#at += n; // fresh buffers are zeroed
    return this;
  }

  /** Pads to the next multiple of 8 (dirents are 8-aligned). */
  align8(): this {
    this.#at = (this.#at + 7) & ~7;
    return this;
  }

  done(): Uint8Array {
    return this.bytes.subarray(0, this.#at);
  }
}

/** What fuse_attr carries. */
export interface Attr {
  ino: bigint;
  size: number;
  blocks: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** File type and permission bits (S_IF* | 07777). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  blksize: number;
}

function putTime(ms: number): { sec: number; nsec: number } {
  const sec = Math.floor(ms / 1000);
  return { sec, nsec: Math.round((ms - sec * 1000) * 1e6) % 1e9 };
}

export function writeAttr(w: OutWriter, a: Attr): void {
  const at = putTime(a.atimeMs), mt = putTime(a.mtimeMs), ct = putTime(a.ctimeMs);
  w.u64(a.ino).u64(a.size).u64(a.blocks).u64(at.sec).u64(mt.sec).u64(ct.sec);
  w.u32(at.nsec).u32(mt.nsec).u32(ct.nsec);
  w.u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid).u32(0).u32(a.blksize).u32(0);
}

/** Cache lifetimes the kernel is given with an entry or attributes. */
export interface Validity {
  entryMs: number;
  attrMs: number;
}

function putValid(w: OutWriter, ms: number): void {
  w.u64(Math.floor(ms / 1000));
}

function validNsec(ms: number): number {
  return Math.round((ms % 1000) * 1e6);
}

export function writeEntryOut(
  w: OutWriter,
  nodeid: bigint,
  generation: bigint,
  attr: Attr,
  valid: Validity,
): void {
  w.u64(nodeid).u64(generation);
  putValid(w, valid.entryMs);
  putValid(w, valid.attrMs);
  w.u32(validNsec(valid.entryMs)).u32(validNsec(valid.attrMs));
  writeAttr(w, attr);
}

export function entryOut(
  nodeid: bigint,
  generation: bigint,
  attr: Attr,
  valid: Validity,
): Uint8Array {
  const w = new OutWriter(ENTRY_OUT_BYTES);
  writeEntryOut(w, nodeid, generation, attr, valid);
  return w.done();
}

export function attrOut(attr: Attr, validMs: number): Uint8Array {
  const w = new OutWriter(ATTR_OUT_BYTES);
  putValid(w, validMs);
  w.u32(validNsec(validMs)).u32(0);
  writeAttr(w, attr);
  return w.done();
}

export function openOut(fh: bigint, openFlags: number): Uint8Array {
  return new OutWriter(OPEN_OUT_BYTES).u64(fh).u32(openFlags).u32(0).done();
}

export function writeOut(size: number): Uint8Array {
  return new OutWriter(WRITE_OUT_BYTES).u32(size).u32(0).done();
}

export function u64Out(v: bigint | number): Uint8Array {
  return new OutWriter(8).u64(v).done();
}

export function getxattrOut(size: number): Uint8Array {
  return new OutWriter(GETXATTR_OUT_BYTES).u32(size).u32(0).done();
}

export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

export function statfsOut(s: StatFs): Uint8Array {
  const w = new OutWriter(STATFS_OUT_BYTES);
  w.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree);
  w.u32(s.bsize).u32(s.namelen).u32(s.frsize).u32(0);
  return w.pad(24).done();
}

export interface FileLock {
  start: bigint;
  end: bigint;
  type: number;
  pid: number;
}

export function lkOut(l: FileLock): Uint8Array {
  return new OutWriter(LK_OUT_BYTES).u64(l.start).u64(l.end).u32(l.type).u32(l.pid).done();
}

/** fuse_init_in as far as this server reads it. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export interface InitOut {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGranNs: number;
  maxPages: number;
}

export function initOut(o: InitOut): Uint8Array {
  const w = new OutWriter(INIT_OUT_BYTES);
  w.u32(FUSE_KERNEL_VERSION).u32(o.minor).u32(o.maxReadahead).u32(o.flags);
  w.u16(o.maxBackground).u16(o.congestionThreshold).u32(o.maxWrite).u32(o.timeGranNs);
  w.u16(o.maxPages).u16(0).u32(0);
  return w.pad(INIT_OUT_BYTES - w.length).done();
}

/** The bytes one dirent of `name` takes (8-aligned). */
export function direntBytes(nameBytes: number, plus: boolean): number {
  return (((plus ? DIRENTPLUS_BYTES : DIRENT_BYTES) + nameBytes) + 7) & ~7;
}

/** Appends a fuse_dirent (or, with `entry`, a fuse_direntplus) to `w`. */
export function writeDirent(
  w: OutWriter,
  ino: bigint,
  off: bigint,
  type: number,
  name: Uint8Array,
  entry?: { nodeid: bigint; attr: Attr; valid: Validity } | null,
): void {
  if (entry !== undefined) {
    if (entry === null) {
      // A direntplus whose entry the kernel must not take (nodeid 0): all zero.
      w.pad(ENTRY_OUT_BYTES);
    } else writeEntryOut(w, entry.nodeid, 0n, entry.attr, entry.valid);
  }
  w.u64(ino).u64(off).u32(name.length).u32(type).put(name).align8();
}
