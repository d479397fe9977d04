// The NFSv4 operations on files, directories, opens and locks (RFC 8881 §18, RFC 7862 §15):
// one table from operation number to a handler that decodes its arguments, acts on BucketFs
// (the namespace S3 and NFSv3 share) and Nfs4State, and writes its result after the status.

import { assert, toHex } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { Caller, CreateHow, FileAttr, SetAttr } from "./bucket_fs.ts";
import { ACCESS_MODIFY, ACCESS_READ } from "./bucket_fs.ts";
import { NFS3ERR_EXIST, NfsError } from "./errors.ts";
import type { NfsExports } from "./exports.ts";
import type { FsNode } from "./file_handle.ts";
import { type Nfs4Fs, nfs4FsidOf, Nfs4Namespace, type Nfs4Place, PseudoFs } from "./nfs4_pseudo.ts";
import {
  type AttrContext,
  changeOf,
  decodeSetAttr,
  encodeFattr,
  FATTR4_BYTES_MAX,
  FATTR4_FILES_AVAIL,
  FATTR4_FILES_FREE,
  FATTR4_FILES_TOTAL,
  FATTR4_RDATTR_ERROR,
  FATTR4_SPACE_AVAIL,
  FATTR4_SPACE_FREE,
  FATTR4_SPACE_TOTAL,
  readBitmap,
  SUPPORTED_ATTRS,
  writeBitmap,
} from "./nfs4_attrs.ts";
import {
  AUTH_SYS_FLAVOR,
  CLAIM_DELEG_CUR_FH,
  CLAIM_DELEG_PREV_FH,
  CLAIM_DELEGATE_CUR,
  CLAIM_DELEGATE_PREV,
  CLAIM_FH,
  CLAIM_NULL,
  CLAIM_PREVIOUS,
  EXCLUSIVE4,
  EXCLUSIVE4_1,
  FILE_SYNC4,
  GUARDED4,
  NF4BLK,
  NF4CHR,
  NF4DIR,
  NF4FIFO,
  NF4LNK,
  NF4SOCK,
  NFS4_CONTENT_DATA,
  NFS4_CONTENT_HOLE,
  NFS4ERR_ACCESS,
  NFS4ERR_ATTRNOTSUPP,
  NFS4ERR_BAD_COOKIE,
  NFS4ERR_BAD_STATEID,
  NFS4ERR_BADTYPE,
  NFS4ERR_COMPLETE_ALREADY,
  NFS4ERR_FBIG,
  NFS4ERR_GRACE,
  NFS4ERR_INVAL,
  NFS4ERR_ISDIR,
  NFS4ERR_LOCKED,
  NFS4ERR_NO_GRACE,
  NFS4ERR_NOENT,
  NFS4ERR_NOFILEHANDLE,
  NFS4ERR_NOT_SAME,
  NFS4ERR_NOTDIR,
  NFS4ERR_NOTSUPP,
  NFS4ERR_NXIO,
  NFS4ERR_OPENMODE,
  NFS4ERR_RECLAIM_BAD,
  NFS4ERR_RESTOREFH,
  NFS4ERR_ROFS,
  NFS4ERR_SAME,
  NFS4ERR_SYMLINK,
  NFS4ERR_TOOSMALL,
  NFS4ERR_XDEV,
  OP_ACCESS,
  OP_ALLOCATE,
  OP_CLOSE,
  OP_COMMIT,
  OP_COPY,
  OP_CREATE,
  OP_DEALLOCATE,
  OP_DELEGRETURN,
  OP_FREE_STATEID,
  OP_GETATTR,
  OP_GETFH,
  OP_LINK,
  OP_LOCK,
  OP_LOCKT,
  OP_LOCKU,
  OP_LOOKUP,
  OP_LOOKUPP,
  OP_NVERIFY,
  OP_OPEN,
  OP_OPEN_DOWNGRADE,
  OP_PUTFH,
  OP_PUTPUBFH,
  OP_PUTROOTFH,
  OP_READ,
  OP_READDIR,
  OP_READLINK,
  OP_RECLAIM_COMPLETE,
  OP_REMOVE,
  OP_RENAME,
  OP_RESTOREFH,
  OP_SAVEFH,
  OP_SECINFO,
  OP_SECINFO_NO_NAME,
  OP_SEEK,
  OP_SETATTR,
  OP_TEST_STATEID,
  OP_VERIFY,
  OP_WRITE,
  OPEN4_CREATE,
  OPEN4_NOCREATE,
  OPEN4_RESULT_LOCKTYPE_POSIX,
  OPEN4_SHARE_ACCESS_READ,
  OPEN4_SHARE_ACCESS_WRITE,
  OPEN_DELEGATE_NONE,
  READ_LT,
  UNCHECKED4,
  UNSTABLE4,
  WRITE_LT,
  WRITEW_LT,
} from "./nfs4_const.ts";
import { Nfs4Error, nfs4StatusOf } from "./nfs4_errors.ts";
import {
  type Client,
  LockDeniedError,
  lockRange,
  type LockState,
  NFS4_OPAQUE_LIMIT,
  type Nfs4State,
  type OpenState,
  type Session,
  type Stateid,
} from "./nfs4_state.ts";
import { RPC_RECORD_BYTES_MAX } from "./rpc.ts";
import type { RpcContext } from "./rpc_server.ts";
import { XdrError, XdrReader, XdrWriter } from "./xdr.ts";

/** An nfs_fh4 is at most this many bytes (this server's handles are at most 64). */
export const NFS4_FHSIZE = 128;
/** READ and WRITE sizes (maxread/maxwrite); a record holds a WRITE of this. */
export const NFS4_IO_BYTES_MAX = 1 << 20;
/** READDIR replies the server builds at most. */
export const NFS4_READDIR_BYTES_MAX = 1 << 20;
/** Entries one READDIR reply holds at most. */
export const NFS4_READDIR_ENTRIES_MAX = 1024;
/** Stateids one TEST_STATEID may ask about. */
export const NFS4_TEST_STATEIDS_MAX = 1024;
/** Bytes one COPY moves at most; the client asks again for the rest. */
export const NFS4_COPY_BYTES_MAX = 256 << 20;
/** Bytes one DEALLOCATE zeroes at most (objects have no holes: the range is written). */
export const NFS4_DEALLOCATE_BYTES_MAX = 256 << 20;
/** The largest file (maxfilesize): the engine's object limit. */
export const NFS4_FILE_BYTES_MAX = 5 * 1024 ** 4;
// A record holds the largest WRITE with its COMPOUND, SEQUENCE, PUTFH and stateid around it.
assert(RPC_RECORD_BYTES_MAX >= NFS4_IO_BYTES_MAX + 1024, "a record holds a WRITE of maxwrite");
assert(NFS4_READDIR_BYTES_MAX <= RPC_RECORD_BYTES_MAX - 1024, "a READDIR reply fits a record");
const COMPONENT_BYTES_DECODE_MAX = 4096;
const LINKTEXT_BYTES_DECODE_MAX = 8192;
const IO_PIECE_BYTES = 1 << 20;
const ZEROS = new Uint8Array(IO_PIECE_BYTES);
const SPACE_BITS = [
  FATTR4_FILES_AVAIL,
  FATTR4_FILES_FREE,
  FATTR4_FILES_TOTAL,
  FATTR4_SPACE_AVAIL,
  FATTR4_SPACE_FREE,
  FATTR4_SPACE_TOTAL,
];

/** What one COMPOUND carries from operation to operation. */
export interface OpContext {
  caller: Caller;
  rpc: RpcContext;
  minor: number;
  session: Session | null;
  client: Client | null;
  /** The current and saved file handles, and the file systems (exports) they are in. */
  cfh: FsNode | null;
  sfh: FsNode | null;
  cfs: Nfs4Fs | null;
  sfs: Nfs4Fs | null;
  /** The current and saved stateids (RFC 8881 §16.2.3.1.2). */
  cst: Stateid | null;
  sst: Stateid | null;
}

export type OpHandler = (r: XdrReader, w: XdrWriter, c: OpContext) => Promise<void>;
export type OpTable = (OpHandler | undefined)[];

export interface Nfs4OpsOptions {
  /** What a client may reach: the exports its address is in, under the pseudo-file system. */
  exports: NfsExports;
  state: Nfs4State;
  writeVerifier: Uint8Array;
  cookieVerifier: Uint8Array;
  fsid?: bigint;
  space?: () => { totalBytes: number; freeBytes: number };
  logger?: Logger;
}

function readStateid(r: XdrReader): Stateid {
  return { seqid: r.u32(), other: r.fixed(12).slice() };
}

function writeStateid(w: XdrWriter, s: { seqid: number; other: Uint8Array }): void {
  w.u32(s.seqid).fixed(s.other);
}

function isZero(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

function isOnes(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0xff) return false;
  return true;
}

function readComponent(r: XdrReader): string {
  const name = r.string(COMPONENT_BYTES_DECODE_MAX);
  if (name.length === 0) throw new Nfs4Error(NFS4ERR_INVAL, "an empty name");
  return name;
}

function withBody(e: unknown, body: Uint8Array): never {
  if (e instanceof Nfs4Error) {
    (e as Nfs4Error & { failBody?: Uint8Array }).failBody = body;
    throw e;
  }
  const wrapped = new Nfs4Error(nfs4StatusOf(e), e instanceof Error ? e.message : String(e));
  (wrapped as Nfs4Error & { failBody?: Uint8Array }).failBody = body;
  if (!(e instanceof NfsError)) wrapped.cause = e;
  throw wrapped;
}

function fileKeyOf(node: FsNode): string {
  return node.kind === "root" ? "/" : `${toHex(node.ns)}/${node.kind}/${node.path}`;
}

/** The table of operations (session operations live in nfs4_compound.ts). */
export function nfs4Ops(options: Nfs4OpsOptions): OpTable {
  const { state } = options;
  const namespace = new Nfs4Namespace(options.exports);
  const fsid = options.fsid ?? 0x6b69_7365n;
  const t: OpTable = [];

  const cfh = (c: OpContext): FsNode => {
    if (c.cfh === null) throw new Nfs4Error(NFS4ERR_NOFILEHANDLE, "no current file handle");
    return c.cfh;
  };
  const sfh = (c: OpContext): FsNode => {
    if (c.sfh === null) throw new Nfs4Error(NFS4ERR_NOFILEHANDLE, "no saved file handle");
    sameFs(c);
    return c.sfh;
  };
  const setFh = (c: OpContext, at: Nfs4Place) => {
    c.cfs = at.fs;
    c.cfh = at.node;
    c.cst = null;
  };
  /** The file system of the current handle. */
  const F = (c: OpContext): Nfs4Fs => {
    if (c.cfs === null) throw new Nfs4Error(NFS4ERR_NOFILEHANDLE, "no current file handle");
    return c.cfs;
  };
  /** The caller as the current handle's export sees it (root squashed when it says so). */
  const who = (c: OpContext): Caller => F(c).caller(c.caller);
  /** The saved handle of a two-handle operation, which must be of the current one's export. */
  const sameFs = (c: OpContext): void => {
    if (c.sfs !== c.cfs) throw new Nfs4Error(NFS4ERR_XDEV, "the handles are of different exports");
  };
  /** Every change refused up front on a read-only export (or the pseudo-file system). */
  const writable = (c: OpContext): void => {
    if (F(c).readOnly) throw new Nfs4Error(NFS4ERR_ROFS, "the export is read-only");
  };
  const attrOf = async (c: OpContext, node: FsNode): Promise<FileAttr | null> => {
    try {
      return await F(c).getattr(node);
    } catch {
      return null;
    }
  };
  const dirOf = async (c: OpContext): Promise<{ node: FsNode; attr: FileAttr }> => {
    const node = cfh(c);
    const attr = await F(c).getattr(node);
    if (attr.type === "symlink") throw new Nfs4Error(NFS4ERR_SYMLINK, "a symlink");
    if (attr.type !== "dir") throw new Nfs4Error(NFS4ERR_NOTDIR, "not a directory");
    return { node, attr };
  };
  /** The current file as a regular file (READ, WRITE, LOCK, ...). */
  const fileOf = async (c: OpContext, node: FsNode): Promise<FileAttr> => {
    const attr = await F(c).getattr(node);
    if (attr.type === "dir") throw new Nfs4Error(NFS4ERR_ISDIR, "a directory");
    if (attr.type === "symlink") throw new Nfs4Error(NFS4ERR_SYMLINK, "a symlink");
    return attr;
  };
  const cinfo = (w: XdrWriter, before: FileAttr | null, after: FileAttr | null) => {
    w.bool(false).u64(before === null ? 0n : changeOf(before)).u64(
      after === null ? 0n : changeOf(after),
    );
  };
  const attrCtx = (c: OpContext, node: FsNode, asked: ReadonlySet<number>) =>
    attrCtxIn(F(c), node, asked);
  const attrCtxIn = async (
    fs: Nfs4Fs,
    node: FsNode,
    asked: ReadonlySet<number>,
  ): Promise<AttrContext> => {
    let space = { totalBytes: 0, freeBytes: 0, files: 0 };
    if (SPACE_BITS.some((b) => asked.has(b))) {
      const usage = await fs.usage();
      const s = options.space?.() ?? null;
      space = {
        totalBytes: s?.totalBytes ?? usage.bytes,
        freeBytes: s?.freeBytes ?? 0,
        files: usage.objects,
      };
    }
    return {
      fh: fs.handle(node),
      fsid: nfs4FsidOf(fs, fsid),
      leaseSeconds: Math.round(state.leaseMs / 1000),
      ioBytesMax: NFS4_IO_BYTES_MAX,
      fileBytesMax: NFS4_FILE_BYTES_MAX,
      space,
    };
  };
  const clientOf = (c: OpContext): Client => {
    if (c.client === null) throw new Nfs4Error(NFS4ERR_INVAL, "no session");
    return c.client;
  };

  /**
   * The state a stateid argument names for I/O on `node`: null for the anonymous and READ
   * bypass stateids, the open (of a lock stateid, its open) otherwise.
   */
  const ioState = (c: OpContext, id: Stateid, node: FsNode): OpenState | null => {
    if (id.seqid === 1 && isZero(id.other)) {
      if (c.cst === null) throw new Nfs4Error(NFS4ERR_BAD_STATEID, "no current stateid");
      id = c.cst;
    }
    if (isZero(id.other) && id.seqid === 0) return null;
    if (isOnes(id.other) && id.seqid === 0xffff_ffff) return null;
    const st = state.find(id);
    if (st.client !== c.client) throw new Nfs4Error(NFS4ERR_BAD_STATEID, "another client's");
    if (st.fileKey !== fileKeyOf(node)) throw new Nfs4Error(NFS4ERR_BAD_STATEID, "another file's");
    return st.kind === "open" ? st : st.open;
  };
  const stateArg = (c: OpContext, id: Stateid): Stateid => {
    if (id.seqid === 1 && isZero(id.other)) {
      if (c.cst === null) throw new Nfs4Error(NFS4ERR_BAD_STATEID, "no current stateid");
      return c.cst;
    }
    return id;
  };
  const openOf = (c: OpContext, id: Stateid): OpenState => {
    const st = state.find(stateArg(c, id));
    if (st.kind !== "open" || st.client !== c.client) {
      throw new Nfs4Error(NFS4ERR_BAD_STATEID, "not an open stateid of this client");
    }
    return st;
  };
  const lockOf = (c: OpContext, id: Stateid): LockState => {
    const st = state.find(stateArg(c, id));
    if (st.kind !== "lock" || st.client !== c.client) {
      throw new Nfs4Error(NFS4ERR_BAD_STATEID, "not a lock stateid of this client");
    }
    return st;
  };
  const forWrite = (c: OpContext, id: Stateid, node: FsNode) => {
    const open = ioState(c, id, node);
    if (open === null) {
      if (state.denied(fileKeyOf(node), OPEN4_SHARE_ACCESS_WRITE)) {
        throw new Nfs4Error(NFS4ERR_LOCKED, "writes are denied by a share reservation");
      }
    } else if ((open.access & OPEN4_SHARE_ACCESS_WRITE) === 0) {
      throw new Nfs4Error(NFS4ERR_OPENMODE, "not open for writing");
    }
  };
  const forRead = (c: OpContext, id: Stateid, node: FsNode) => {
    const open = ioState(c, id, node);
    if (open === null && state.denied(fileKeyOf(node), OPEN4_SHARE_ACCESS_READ)) {
      throw new Nfs4Error(NFS4ERR_LOCKED, "reads are denied by a share reservation");
    }
  };

  // ---- file handles --------------------------------------------------------------------------

  t[OP_PUTROOTFH] = (_r, _w, c) => {
    setFh(c, namespace.root(c.rpc.peerHost));
    return Promise.resolve();
  };
  t[OP_PUTPUBFH] = t[OP_PUTROOTFH];
  t[OP_PUTFH] = (r, _w, c) => {
    const fh = r.opaque(NFS4_FHSIZE);
    setFh(c, namespace.fromHandle(fh, c.rpc.peerHost));
    return Promise.resolve();
  };
  t[OP_GETFH] = (_r, w, c) => {
    w.opaque(F(c).handle(cfh(c)));
    return Promise.resolve();
  };
  t[OP_SAVEFH] = (_r, _w, c) => {
    c.sfh = cfh(c);
    c.sfs = c.cfs;
    c.sst = c.cst;
    return Promise.resolve();
  };
  t[OP_RESTOREFH] = (_r, _w, c) => {
    if (c.sfh === null) throw new Nfs4Error(NFS4ERR_RESTOREFH, "no saved file handle");
    c.cfh = c.sfh;
    c.cfs = c.sfs;
    c.cst = c.sst;
    return Promise.resolve();
  };
  t[OP_LOOKUP] = async (r, _w, c) => {
    const name = readComponent(r);
    const { node } = await dirOf(c);
    setFh(c, await namespace.lookup({ fs: F(c), node }, name, c.rpc.peerHost, c.caller));
  };
  t[OP_LOOKUPP] = async (_r, _w, c) => {
    const { node } = await dirOf(c);
    setFh(c, namespace.parent({ fs: F(c), node }, c.rpc.peerHost));
  };
  const secinfo = (w: XdrWriter, c: OpContext) => {
    w.u32(1).u32(AUTH_SYS_FLAVOR);
    // SECINFO consumes the current file handle (RFC 8881 §2.6.3.1.1.8).
    c.cfh = null;
    c.cfs = null;
  };
  t[OP_SECINFO_NO_NAME] = async (r, w, c) => {
    const style = r.u32();
    if (style > 1) throw new Nfs4Error(NFS4ERR_INVAL, `secinfo style ${style}`);
    const node = cfh(c);
    if (style === 1) {
      const { node: dir } = await dirOf(c);
      namespace.parent({ fs: F(c), node: dir }, c.rpc.peerHost);
    } else await F(c).getattr(node);
    secinfo(w, c);
  };
  t[OP_SECINFO] = async (r, w, c) => {
    const name = readComponent(r);
    const { node } = await dirOf(c);
    await namespace.lookup({ fs: F(c), node }, name, c.rpc.peerHost, c.caller);
    secinfo(w, c);
  };

  // ---- attributes ----------------------------------------------------------------------------

  t[OP_GETATTR] = async (r, w, c) => {
    const asked = readBitmap(r);
    const node = cfh(c);
    const attr = await F(c).getattr(node);
    encodeFattr(w, asked, attr, await attrCtx(c, node, asked));
  };
  const verify = async (r: XdrReader, c: OpContext): Promise<boolean> => {
    const asked = readBitmap(r);
    const theirs = r.opaque(FATTR4_BYTES_MAX);
    for (const b of asked) {
      if (!SUPPORTED_ATTRS.includes(b)) throw new Nfs4Error(NFS4ERR_ATTRNOTSUPP, `attr ${b}`);
      if (b === FATTR4_RDATTR_ERROR) throw new Nfs4Error(NFS4ERR_INVAL, "rdattr_error");
    }
    const node = cfh(c);
    const mine = new XdrWriter(256);
    encodeFattr(mine, asked, await F(c).getattr(node), await attrCtx(c, node, asked));
    const ours = new XdrReader(mine.finish());
    readBitmap(ours);
    const values = ours.opaque(FATTR4_BYTES_MAX);
    return values.length === theirs.length && values.every((b, i) => b === theirs[i]);
  };
  t[OP_VERIFY] = async (r, _w, c) => {
    if (!(await verify(r, c))) throw new Nfs4Error(NFS4ERR_NOT_SAME, "attributes differ");
  };
  t[OP_NVERIFY] = async (r, _w, c) => {
    if (await verify(r, c)) throw new Nfs4Error(NFS4ERR_SAME, "attributes are the same");
  };
  t[OP_SETATTR] = async (r, w, c) => {
    const empty = new XdrWriter(4).u32(0).finish();
    let bits: number[] = [];
    try {
      const id = readStateid(r);
      const decoded = decodeSetAttr(r);
      bits = decoded.bits;
      const node = cfh(c);
      writable(c);
      if (decoded.attr.size !== undefined) {
        await fileOf(c, node);
        forWrite(c, id, node);
      }
      await F(c).setattr(node, decoded.attr, who(c), null);
    } catch (e) {
      if (e instanceof XdrError) throw e;
      withBody(e, empty);
    }
    writeBitmap(w, bits);
  };
  t[OP_ACCESS] = async (r, w, c) => {
    const asked = r.u32();
    const attr = await F(c).getattr(cfh(c));
    w.u32(asked & 0x3f).u32(F(c).access(attr, who(c), asked & 0x3f));
  };

  // ---- directories ---------------------------------------------------------------------------

  t[OP_READDIR] = async (r, w, c) => {
    const cookie = r.u64();
    const verifier = r.fixed(8);
    const dircount = r.u32();
    const maxcount = r.u32();
    const asked = readBitmap(r);
    const { node: dir } = await dirOf(c);
    if (cookie === 1n || cookie === 2n) throw new Nfs4Error(NFS4ERR_BAD_COOKIE, "reserved");
    if (cookie !== 0n && toHex(verifier) !== toHex(options.cookieVerifier)) {
      throw new Nfs4Error(NFS4ERR_BAD_COOKIE, "the cookie verifier is from another start");
    }
    const replyMax = Math.min(maxcount, NFS4_READDIR_BYTES_MAX);
    if (replyMax < 64) throw new Nfs4Error(NFS4ERR_TOOSMALL, `maxcount ${maxcount}`);
    const want = Math.max(1, Math.min(NFS4_READDIR_ENTRIES_MAX, Math.floor(replyMax / 128) + 1));
    const listed = await F(c).readdir(dir, cookie === 0n ? 2n : cookie, want, true, who(c));
    w.fixed(options.cookieVerifier);
    const start = w.length;
    let eof = listed.eof;
    let count = 0;
    let dirBytes = 0;
    for (const e of listed.entries) {
      if (e.name === "." || e.name === "..") continue;
      const entry = new XdrWriter(256);
      entry.bool(true).u64(e.cookie).string(e.name);
      const nameBytes = entry.length;
      // A pseudo directory's entries are the places LOOKUP finds: export roots among them.
      const place = F(c) instanceof PseudoFs
        ? await namespace.lookup({ fs: F(c), node: dir }, e.name, c.rpc.peerHost, c.caller)
        : { fs: F(c), node: e.node };
      const attr = place.fs === F(c)
        ? e.attr ?? await attrOf(c, e.node)
        : await place.fs.getattr(place.node);
      if (attr === null) continue;
      encodeFattr(entry, asked, attr, await attrCtxIn(place.fs, place.node, asked));
      const bytes = entry.finish();
      if (
        start + (w.length - start) + bytes.length + 16 > replyMax ||
        (dircount > 0 && dirBytes + nameBytes > dircount && count > 0)
      ) {
        eof = false;
        break;
      }
      w.fixed(bytes);
      dirBytes += nameBytes;
      count++;
    }
    if (count === 0 && !eof) throw new Nfs4Error(NFS4ERR_TOOSMALL, "not even one entry fits");
    w.bool(false).bool(eof);
  };
  t[OP_CREATE] = async (r, w, c) => {
    const type = r.u32();
    let target = "";
    if (type === NF4LNK) target = r.string(LINKTEXT_BYTES_DECODE_MAX);
    else if (type === NF4BLK || type === NF4CHR) {
      r.u32();
      r.u32();
    } else if (type !== NF4DIR && type !== NF4SOCK && type !== NF4FIFO && (type < 1 || type > 9)) {
      throw new XdrError(`nfs_ftype4 ${type}`);
    }
    const name = readComponent(r);
    const decoded = decodeSetAttr(r);
    writable(c);
    const { node: dir, attr: before } = await dirOf(c);
    let made: { node: FsNode; attr: FileAttr };
    if (type === NF4DIR) made = await F(c).mkdir(dir, name, decoded.attr, who(c));
    else if (type === NF4LNK) {
      made = await F(c).symlink(dir, name, target, decoded.attr, who(c));
    } else {
      // Devices, sockets and fifos have no object form; regular files come from OPEN.
      throw new Nfs4Error(NFS4ERR_BADTYPE, `type ${type} cannot be created`);
    }
    cinfo(w, before, await attrOf(c, dir));
    writeBitmap(w, decoded.bits);
    c.cfh = made.node;
    c.cst = null;
  };
  t[OP_REMOVE] = async (r, w, c) => {
    const name = readComponent(r);
    writable(c);
    const { node: dir, attr: before } = await dirOf(c);
    const found = await F(c).lookup(dir, name, who(c));
    if (found.attr.type === "dir") await F(c).rmdir(dir, name, who(c));
    else await F(c).remove(dir, name, who(c));
    cinfo(w, before, await attrOf(c, dir));
  };
  t[OP_RENAME] = async (r, w, c) => {
    const oldName = readComponent(r);
    const newName = readComponent(r);
    writable(c);
    const from = sfh(c);
    const to = cfh(c);
    const fromBefore = await F(c).getattr(from);
    const { attr: toBefore } = await dirOf(c);
    if (fromBefore.type !== "dir") throw new Nfs4Error(NFS4ERR_NOTDIR, "not a directory");
    await F(c).rename(from, oldName, to, newName, who(c));
    cinfo(w, fromBefore, await attrOf(c, from));
    cinfo(w, toBefore, await attrOf(c, to));
  };
  t[OP_LINK] = async (r, w, c) => {
    const name = readComponent(r);
    writable(c);
    const file = sfh(c);
    const { node: dir, attr: before } = await dirOf(c);
    // Names of one file share its chunk references and fileid (BucketFs's hard links).
    try {
      await F(c).link(file, dir, name, who(c));
    } catch (e) {
      // A client that sends a LINK again (its first answer lost, or a later operation of the
      // compound asked it to retry) finds the link it made: that is the answer it wanted.
      if (!(e instanceof NfsError && e.status === NFS3ERR_EXIST)) throw e;
      const [found, mine] = await Promise.all([
        F(c).lookup(dir, name, who(c)).catch(() => null),
        F(c).getattr(file),
      ]);
      if (found === null || found.attr.fileid !== mine.fileid) throw e;
    }
    cinfo(w, before, await attrOf(c, dir));
  };
  t[OP_READLINK] = async (_r, w, c) => {
    const node = cfh(c);
    const attr = await F(c).getattr(node);
    if (attr.type !== "symlink") throw new Nfs4Error(NFS4ERR_INVAL, "not a symlink");
    w.string(await F(c).readlink(node));
  };

  // ---- opens ---------------------------------------------------------------------------------

  t[OP_OPEN] = async (r, w, c) => {
    r.u32(); // seqid: unused in 4.1 (slots order the calls)
    const shareAccess = r.u32();
    const shareDeny = r.u32();
    r.u64(); // the open owner's clientid: the session's client owns it
    const owner = r.opaque(NFS4_OPAQUE_LIMIT);
    const opentype = r.u32();
    let how: CreateHow | null = null;
    let createAttr: { attr: SetAttr; bits: number[] } = { attr: {}, bits: [] };
    let exclusiveAttr = false;
    if (opentype === OPEN4_CREATE) {
      const mode = r.u32();
      if (mode === UNCHECKED4 || mode === GUARDED4) {
        createAttr = decodeSetAttr(r);
        how = { mode: mode === UNCHECKED4 ? "unchecked" : "guarded", attr: createAttr.attr };
      } else if (mode === EXCLUSIVE4) {
        how = { mode: "exclusive", verifier: r.fixed(8).slice() };
      } else if (mode === EXCLUSIVE4_1) {
        how = { mode: "exclusive", verifier: r.fixed(8).slice() };
        createAttr = decodeSetAttr(r);
        exclusiveAttr = true;
      } else throw new XdrError(`createmode4 ${mode}`);
    } else if (opentype !== OPEN4_NOCREATE) throw new XdrError(`opentype4 ${opentype}`);
    const claim = r.u32();
    let name: string | null = null;
    if (claim === CLAIM_NULL) name = readComponent(r);
    else if (claim === CLAIM_PREVIOUS) r.u32();
    else if (claim === CLAIM_DELEGATE_CUR) {
      readStateid(r);
      readComponent(r);
    } else if (claim === CLAIM_DELEGATE_PREV) readComponent(r);
    else if (claim === CLAIM_DELEG_CUR_FH) readStateid(r);
    else if (claim !== CLAIM_FH && claim !== CLAIM_DELEG_PREV_FH) {
      throw new XdrError(`open_claim_type4 ${claim}`);
    }
    const client = clientOf(c);
    const access = shareAccess & 3;
    const deny = shareDeny & 3;
    if (access === 0 || (shareDeny & ~3) !== 0) {
      throw new Nfs4Error(NFS4ERR_INVAL, `share access ${shareAccess} deny ${shareDeny}`);
    }
    if ((access & OPEN4_SHARE_ACCESS_WRITE) !== 0 && F(c).readOnly) {
      throw new Nfs4Error(NFS4ERR_ROFS, "the export is read-only");
    }
    if (claim !== CLAIM_NULL && claim !== CLAIM_FH && claim !== CLAIM_PREVIOUS) {
      // No delegation is ever granted, so none is there to claim.
      throw new Nfs4Error(NFS4ERR_RECLAIM_BAD, "no delegation to claim");
    }
    if (claim === CLAIM_PREVIOUS) {
      if (!state.inGrace() || client.reclaimComplete) {
        throw new Nfs4Error(NFS4ERR_NO_GRACE, "not in the grace period");
      }
      if (!client.mayReclaim) throw new Nfs4Error(NFS4ERR_RECLAIM_BAD, "no state to reclaim");
    } else if (state.inGrace()) {
      throw new Nfs4Error(NFS4ERR_GRACE, "in the grace period");
    }
    let node: FsNode;
    let attr: FileAttr;
    let created = false;
    let before: FileAttr | null = null;
    let after: FileAttr | null = null;
    let attrset: number[] = [];
    if (claim === CLAIM_NULL) {
      const { node: dir, attr: dirBefore } = await dirOf(c);
      before = dirBefore;
      let existing: { node: FsNode; attr: FileAttr } | null = null;
      try {
        existing = await F(c).lookup(dir, name!, who(c));
      } catch (e) {
        if (nfs4StatusOf(e) !== NFS4ERR_NOENT) throw e;
      }
      if (existing !== null && existing.attr.type === "dir") {
        throw new Nfs4Error(NFS4ERR_ISDIR, "a directory");
      }
      if (existing !== null && existing.attr.type === "symlink") {
        throw new Nfs4Error(NFS4ERR_SYMLINK, "a symlink");
      }
      if (how === null) {
        if (existing === null) throw new Nfs4Error(NFS4ERR_NOENT, `no ${JSON.stringify(name)}`);
        node = existing.node;
        attr = existing.attr;
      } else {
        const made = await F(c).create(dir, name!, how, who(c));
        created = existing === null;
        node = made.node;
        attr = made.attr;
        if (exclusiveAttr && created && createAttr.bits.length > 0) {
          attr = await F(c).setattr(node, createAttr.attr, who(c), null);
        }
        if (created || how.mode === "unchecked") attrset = createAttr.bits;
        after = await attrOf(c, dir);
      }
      after ??= before;
    } else {
      if (how !== null) throw new Nfs4Error(NFS4ERR_INVAL, "create by file handle");
      node = cfh(c);
      attr = await fileOf(c, node);
    }
    if (attr.type === "dir") throw new Nfs4Error(NFS4ERR_ISDIR, "a directory");
    if (attr.type === "symlink") throw new Nfs4Error(NFS4ERR_SYMLINK, "a symlink");
    if (!created) {
      let asked = 0;
      if (access & OPEN4_SHARE_ACCESS_READ) asked |= ACCESS_READ;
      if (access & OPEN4_SHARE_ACCESS_WRITE) asked |= ACCESS_MODIFY;
      if (F(c).access(attr, who(c), asked) !== asked) {
        throw new Nfs4Error(NFS4ERR_ACCESS, "the mode does not permit this open");
      }
    }
    const st = state.open(client, toHex(owner), fileKeyOf(node), access, deny);
    c.cfh = node;
    c.cst = { seqid: st.seqid, other: st.other };
    writeStateid(w, st);
    cinfo(w, before, after);
    w.u32(OPEN4_RESULT_LOCKTYPE_POSIX);
    writeBitmap(w, attrset);
    w.u32(OPEN_DELEGATE_NONE);
  };
  t[OP_CLOSE] = (r, w, c) => {
    r.u32();
    const st = openOf(c, readStateid(r));
    state.close(st);
    c.cst = null;
    // The invalid special stateid: the open is gone (RFC 8881 §18.2.4).
    w.u32(0xffff_ffff).fixed(new Uint8Array(12));
    return Promise.resolve();
  };
  t[OP_OPEN_DOWNGRADE] = (r, w, c) => {
    const id = readStateid(r);
    r.u32();
    const access = r.u32() & 3;
    const deny = r.u32();
    if (deny > 3) throw new Nfs4Error(NFS4ERR_INVAL, `deny ${deny}`);
    const st = openOf(c, id);
    state.downgrade(st, access, deny);
    c.cst = { seqid: st.seqid, other: st.other };
    writeStateid(w, st);
    return Promise.resolve();
  };
  t[OP_DELEGRETURN] = (r) => {
    readStateid(r);
    throw new Nfs4Error(NFS4ERR_BAD_STATEID, "no delegation was granted");
  };
  t[OP_TEST_STATEID] = (r, w, c) => {
    const n = r.u32();
    if (n > NFS4_TEST_STATEIDS_MAX) throw new XdrError(`${n} stateids`);
    const ids: Stateid[] = [];
    for (let i = 0; i < n; i++) ids.push(readStateid(r));
    w.u32(n);
    for (const id of ids) {
      try {
        const st = state.find(id);
        w.u32(st.client === c.client ? 0 : NFS4ERR_BAD_STATEID);
      } catch (e) {
        w.u32(nfs4StatusOf(e));
      }
    }
    return Promise.resolve();
  };
  t[OP_FREE_STATEID] = (r, _w, c) => {
    const st = state.find(stateArg(c, readStateid(r)));
    if (st.client !== c.client) throw new Nfs4Error(NFS4ERR_BAD_STATEID, "another client's");
    state.free(st);
    return Promise.resolve();
  };
  t[OP_RECLAIM_COMPLETE] = (r, _w, c) => {
    const oneFs = r.bool();
    const client = clientOf(c);
    if (!oneFs) {
      if (client.reclaimComplete) throw new Nfs4Error(NFS4ERR_COMPLETE_ALREADY, "already");
      state.reclaimComplete(client);
    }
    return Promise.resolve();
  };

  // ---- locks ---------------------------------------------------------------------------------

  const lockType = (type: number) => {
    if (type < READ_LT || type > WRITEW_LT) throw new XdrError(`nfs_lock_type4 ${type}`);
    return type;
  };
  const denied = (e: unknown) => {
    if (e instanceof LockDeniedError) {
      const d = e.denied;
      const body = new XdrWriter(64).u64(d.start).u64(d.length).u32(d.type).u64(d.owner.clientId)
        .opaque(d.owner.owner).finish();
      withBody(e, body);
    }
    throw e;
  };
  t[OP_LOCK] = async (r, w, c) => {
    const type = lockType(r.u32());
    const reclaim = r.bool();
    const range = lockRange(r.u64(), r.u64());
    const fresh = r.bool();
    let openId: Stateid | null = null;
    let lockId: Stateid | null = null;
    let owner: { clientId: bigint; owner: Uint8Array } | null = null;
    if (fresh) {
      r.u32();
      openId = readStateid(r);
      r.u32();
      owner = { clientId: r.u64(), owner: r.opaque(NFS4_OPAQUE_LIMIT).slice() };
    } else {
      lockId = readStateid(r);
      r.u32();
    }
    const client = clientOf(c);
    if (reclaim) {
      if (!state.inGrace() || client.reclaimComplete) {
        throw new Nfs4Error(NFS4ERR_NO_GRACE, "not in the grace period");
      }
    } else if (state.inGrace()) throw new Nfs4Error(NFS4ERR_GRACE, "in the grace period");
    const node = cfh(c);
    await fileOf(c, node);
    let lst: LockState;
    if (owner !== null) {
      const open = openOf(c, openId!);
      if (open.fileKey !== fileKeyOf(node)) {
        throw new Nfs4Error(NFS4ERR_BAD_STATEID, "another file's open");
      }
      lst = state.lockStateFor(open, { clientId: client.id, owner: owner.owner });
    } else {
      lst = lockOf(c, lockId!);
      if (lst.fileKey !== fileKeyOf(node)) {
        throw new Nfs4Error(NFS4ERR_BAD_STATEID, "another file's lock");
      }
    }
    const write = type === WRITE_LT || type === WRITEW_LT;
    const mode = write ? OPEN4_SHARE_ACCESS_WRITE : OPEN4_SHARE_ACCESS_READ;
    if ((lst.open.access & mode) === 0) {
      throw new Nfs4Error(NFS4ERR_OPENMODE, "the open does not permit this lock");
    }
    try {
      state.lock(lst, type, range);
    } catch (e) {
      denied(e);
    }
    c.cst = { seqid: lst.seqid, other: lst.other };
    writeStateid(w, lst);
  };
  t[OP_LOCKT] = async (r, _w, c) => {
    const type = lockType(r.u32());
    const range = lockRange(r.u64(), r.u64());
    const owner = { clientId: r.u64(), owner: r.opaque(NFS4_OPAQUE_LIMIT) };
    const client = clientOf(c);
    if (state.inGrace()) throw new Nfs4Error(NFS4ERR_GRACE, "in the grace period");
    const node = cfh(c);
    await fileOf(c, node);
    const found = state.conflict(
      fileKeyOf(node),
      `${client.id}:${toHex(owner.owner)}`,
      type,
      range,
    );
    if (found !== null) denied(new LockDeniedError(found));
  };
  t[OP_LOCKU] = async (r, w, c) => {
    lockType(r.u32());
    r.u32();
    const id = readStateid(r);
    const range = lockRange(r.u64(), r.u64());
    const lst = lockOf(c, id);
    const node = cfh(c);
    await fileOf(c, node);
    if (lst.fileKey !== fileKeyOf(node)) throw new Nfs4Error(NFS4ERR_BAD_STATEID, "another file's");
    state.unlock(lst, range);
    c.cst = { seqid: lst.seqid, other: lst.other };
    writeStateid(w, lst);
  };

  // ---- data ----------------------------------------------------------------------------------

  t[OP_READ] = async (r, w, c) => {
    const id = readStateid(r);
    const offset = r.u64Number("offset");
    const asked = r.u32();
    const node = cfh(c);
    await fileOf(c, node);
    forRead(c, id, node);
    const room = (c.session?.maxResponseBytes ?? NFS4_IO_BYTES_MAX) - 512;
    const count = Math.max(0, Math.min(asked, NFS4_IO_BYTES_MAX, room));
    const got = await F(c).read(node, offset, count, who(c));
    w.bool(got.eof).opaque(got.data);
  };
  t[OP_WRITE] = async (r, w, c) => {
    const id = readStateid(r);
    const offset = r.u64Number("offset");
    const stable = r.u32();
    if (stable > FILE_SYNC4) throw new XdrError(`stable_how4 ${stable}`);
    const data = r.opaque(NFS4_IO_BYTES_MAX);
    writable(c);
    const node = cfh(c);
    await fileOf(c, node);
    forWrite(c, id, node);
    if (offset + data.length > NFS4_FILE_BYTES_MAX) {
      throw new Nfs4Error(NFS4ERR_FBIG, "past the largest file");
    }
    await F(c).write(node, offset, data, stable !== UNSTABLE4, who(c));
    w.u32(data.length).u32(stable === UNSTABLE4 ? UNSTABLE4 : FILE_SYNC4)
      .fixed(options.writeVerifier);
  };
  t[OP_COMMIT] = async (r, w, c) => {
    r.u64();
    r.u32();
    const node = cfh(c);
    await fileOf(c, node);
    await F(c).commit(node);
    w.fixed(options.writeVerifier);
  };

  // ---- 4.2 -----------------------------------------------------------------------------------

  t[OP_ALLOCATE] = async (r, _w, c) => {
    const id = readStateid(r);
    const offset = r.u64Number("offset");
    const length = r.u64Number("length");
    writable(c);
    const node = cfh(c);
    const attr = await fileOf(c, node);
    forWrite(c, id, node);
    if (offset + length > NFS4_FILE_BYTES_MAX) throw new Nfs4Error(NFS4ERR_FBIG, "too large");
    // An object's space is its bytes: allocating past the end makes the file that long.
    if (offset + length > attr.size) {
      await F(c).setattr(node, { size: offset + length }, who(c), null);
    }
  };
  t[OP_DEALLOCATE] = async (r, _w, c) => {
    const id = readStateid(r);
    const offset = r.u64Number("offset");
    const length = r.u64Number("length");
    writable(c);
    const node = cfh(c);
    const attr = await fileOf(c, node);
    forWrite(c, id, node);
    const end = Math.min(attr.size, offset + length);
    if (end <= offset) return;
    if (end - offset > NFS4_DEALLOCATE_BYTES_MAX) {
      throw new Nfs4Error(NFS4ERR_NOTSUPP, `a hole of more than ${NFS4_DEALLOCATE_BYTES_MAX}`);
    }
    // Objects keep no holes: the range reads as zeros, stored deduplicated.
    for (let at = offset; at < end; at += IO_PIECE_BYTES) {
      await F(c).write(
        node,
        at,
        ZEROS.subarray(0, Math.min(IO_PIECE_BYTES, end - at)),
        false,
        who(c),
      );
    }
    await F(c).commit(node);
  };
  t[OP_SEEK] = async (r, w, c) => {
    const id = readStateid(r);
    const offset = r.u64();
    const what = r.u32();
    if (what !== NFS4_CONTENT_DATA && what !== NFS4_CONTENT_HOLE) {
      throw new XdrError(`data_content4 ${what}`);
    }
    const node = cfh(c);
    const attr = await fileOf(c, node);
    forRead(c, id, node);
    if (offset >= BigInt(attr.size)) throw new Nfs4Error(NFS4ERR_NXIO, "past the end");
    // Data everywhere (holes are stored as zeros); the only hole is the one at the end.
    if (what === NFS4_CONTENT_DATA) w.bool(false).u64(offset);
    else w.bool(true).u64(attr.size);
  };
  t[OP_COPY] = async (r, w, c) => {
    const srcId = readStateid(r);
    const dstId = readStateid(r);
    const srcOffset = r.u64Number("offset");
    const dstOffset = r.u64Number("offset");
    const count = r.u64Number("count");
    r.bool(); // consecutive
    r.bool(); // synchronous: every copy here is
    const servers = r.u32();
    if (servers !== 0) throw new Nfs4Error(NFS4ERR_NOTSUPP, "inter-server copy");
    writable(c);
    const src = sfh(c);
    const dst = cfh(c);
    const srcAttr = await fileOf(c, src);
    await fileOf(c, dst);
    forRead(c, srcId, src);
    forWrite(c, dstId, dst);
    if (srcOffset > srcAttr.size || (count !== 0 && srcOffset + count > srcAttr.size)) {
      throw new Nfs4Error(NFS4ERR_INVAL, "the range is past the source's end");
    }
    let total = count === 0 ? srcAttr.size - srcOffset : count;
    if (
      fileKeyOf(src) === fileKeyOf(dst) && srcOffset < dstOffset + total &&
      dstOffset < srcOffset + total
    ) throw new Nfs4Error(NFS4ERR_INVAL, "overlapping ranges of one file");
    if (dstOffset + total > NFS4_FILE_BYTES_MAX) throw new Nfs4Error(NFS4ERR_FBIG, "too large");
    total = Math.min(total, NFS4_COPY_BYTES_MAX);
    let copied = 0;
    while (copied < total) {
      const got = await F(c).read(
        src,
        srcOffset + copied,
        Math.min(IO_PIECE_BYTES, total - copied),
        who(c),
      );
      if (got.data.length === 0) break;
      await F(c).write(dst, dstOffset + copied, got.data, false, who(c));
      copied += got.data.length;
    }
    await F(c).commit(dst);
    w.u32(0).u64(copied).u32(FILE_SYNC4).fixed(options.writeVerifier);
    w.bool(true).bool(true);
  };
  return t;
}
