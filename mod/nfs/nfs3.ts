// NFS version 3 (RFC 1813), program 100003: one table of the 22 procedures, each decoding its
// arguments, calling the file system, and encoding its result shape: every failure carries
// the status and the attributes its resfail arm holds, so the client's caches stay right.

import {
  type Caller,
  type CreateHow,
  type FileAttr,
  LINKS_MAX,
  type SetAttr,
} from "./bucket_fs.ts";
import type { ExportFs, NfsExports } from "./exports.ts";
import {
  NFS3_OK,
  NFS3ERR_BAD_COOKIE,
  NFS3ERR_FBIG,
  NFS3ERR_INVAL,
  NFS3ERR_NOTSUPP,
  NFS3ERR_TOOSMALL,
  NfsError,
  nfsStatusOf,
} from "./errors.ts";
import { type FsNode, NFS3_FHSIZE } from "./file_handle.ts";
import { PROC_UNAVAIL, RPC_RECORD_BYTES_MAX } from "./rpc.ts";
import { assert } from "../base/mod.ts";
import { counter, histogram } from "../obs/mod.ts";
import { RpcAcceptError, type RpcContext, type RpcProgram } from "./rpc_server.ts";
import { XdrError, type XdrReader, XdrWriter } from "./xdr.ts";
import type { Logger } from "../obs/mod.ts";

export const NFS_PROGRAM = 100003;
export const NFS_V3 = 3;

export const NFSPROC3_NULL = 0;
export const NFSPROC3_GETATTR = 1;
export const NFSPROC3_SETATTR = 2;
export const NFSPROC3_LOOKUP = 3;
export const NFSPROC3_ACCESS = 4;
export const NFSPROC3_READLINK = 5;
export const NFSPROC3_READ = 6;
export const NFSPROC3_WRITE = 7;
export const NFSPROC3_CREATE = 8;
export const NFSPROC3_MKDIR = 9;
export const NFSPROC3_SYMLINK = 10;
export const NFSPROC3_MKNOD = 11;
export const NFSPROC3_REMOVE = 12;
export const NFSPROC3_RMDIR = 13;
export const NFSPROC3_RENAME = 14;
export const NFSPROC3_LINK = 15;
export const NFSPROC3_READDIR = 16;
export const NFSPROC3_READDIRPLUS = 17;
export const NFSPROC3_FSSTAT = 18;
export const NFSPROC3_FSINFO = 19;
export const NFSPROC3_PATHCONF = 20;
export const NFSPROC3_COMMIT = 21;

// ftype3
export const NF3REG = 1;
export const NF3DIR = 2;
export const NF3LNK = 5;

// stable_how
export const UNSTABLE = 0;
export const DATA_SYNC = 1;
export const FILE_SYNC = 2;

// createmode3
export const CREATE_UNCHECKED = 0;
export const CREATE_GUARDED = 1;
export const CREATE_EXCLUSIVE = 2;

/** READ and WRITE sizes (FSINFO rtmax/wtmax); a record holds a WRITE of wtmax. */
export const NFS3_IO_BYTES_MAX = 1 << 20;
/** READDIR replies the server builds at most (FSINFO dtpref and the reply cap). */
export const NFS3_READDIR_BYTES_MAX = 1 << 20;
/** Entries one READDIR(PLUS) reply holds at most. */
export const NFS3_READDIR_ENTRIES_MAX = 1024;
/** Filenames in arguments: longer ones are NAMETOOLONG, much longer ones garbage. */
const FILENAME_BYTES_DECODE_MAX = 4096;
const SYMLINK_BYTES_DECODE_MAX = 8192;
/** The largest file (FSINFO maxfilesize): the engine's object limit. */
export const NFS3_FILE_BYTES_MAX = 5 * 1024 ** 4;

// A record holds the largest WRITE with its header and file handle.
assert(RPC_RECORD_BYTES_MAX >= NFS3_IO_BYTES_MAX + 1024, "a record holds a WRITE of wtmax");
assert(NFS3_READDIR_BYTES_MAX <= NFS3_IO_BYTES_MAX, "a READDIR reply fits the large writer");

const requestsTotal = counter<"proc" | "status">({
  name: "kiseki_nfs_requests_total",
  help: "NFSv3 calls answered, by procedure and nfsstat3 (ok or its number)",
  labelNames: ["proc", "status"],
});
const requestSeconds = histogram<"proc">({
  name: "kiseki_nfs_request_duration_seconds",
  help: "Time to answer an NFSv3 call",
  labelNames: ["proc"],
});

const FSF3_SYMLINK = 0x0002;
const FSF3_HOMOGENEOUS = 0x0008;
const FSF3_CANSETTIME = 0x0010;

const NON_IDEMPOTENT = new Set([
  NFSPROC3_SETATTR,
  NFSPROC3_CREATE,
  NFSPROC3_MKDIR,
  NFSPROC3_SYMLINK,
  NFSPROC3_MKNOD,
  NFSPROC3_REMOVE,
  NFSPROC3_RMDIR,
  NFSPROC3_RENAME,
  NFSPROC3_LINK,
]);

export interface Nfs3Options {
  /** Which export a handle is of, who may use it, and the file system it shows. */
  exports: NfsExports;
  /** 8 bytes that change on every start: the WRITE/COMMIT verifier. */
  writeVerifier: Uint8Array;
  /** 8 bytes that change on every start: the READDIR cookie verifier. */
  cookieVerifier: Uint8Array;
  /** Pool space for FSSTAT. */
  space?: () => { totalBytes: number; freeBytes: number };
  /** The fsid of attributes. */
  fsid?: bigint;
  logger?: Logger;
}

type Shape = "status" | "post" | "wcc" | "wcc2" | "link";

interface Proc {
  name: string;
  /** Replies up to NFS3_IO_BYTES_MAX (READ, READDIR, READDIRPLUS). */
  large?: boolean;
  /** The resfail shape: what follows the status when the call fails. */
  fail: Shape;
  run(r: XdrReader, w: XdrWriter, caller: Caller): Promise<void>;
}

function nfsTime(w: XdrWriter, ms: number): void {
  const seconds = Math.floor(ms / 1000);
  w.u32(seconds).u32(Math.round((ms - seconds * 1000) * 1e6));
}

function readTime(r: XdrReader): number {
  const s = r.u32();
  const ns = r.u32();
  if (ns >= 1e9) throw new XdrError(`nseconds ${ns} out of range`);
  return s * 1000 + ns / 1e6;
}

function readFilename(r: XdrReader): string {
  return r.string(FILENAME_BYTES_DECODE_MAX);
}

function readSattr(r: XdrReader): SetAttr {
  const a: SetAttr = {};
  if (r.bool()) a.mode = r.u32() & 0o7777;
  if (r.bool()) a.uid = r.u32();
  if (r.bool()) a.gid = r.u32();
  if (r.bool()) a.size = r.u64Number("size");
  for (const which of ["atime", "mtime"] as const) {
    const how = r.u32();
    if (how === 1) a[which] = "now";
    else if (how === 2) a[which] = readTime(r);
    else if (how !== 0) throw new XdrError(`time_how ${how}`);
  }
  return a;
}

export class Nfs3Program implements RpcProgram {
  readonly prog = NFS_PROGRAM;
  readonly versLow = NFS_V3;
  readonly versHigh = NFS_V3;
  readonly #exports: NfsExports;
  /** One procedure table per export's file system (the closures hold it). */
  readonly #tables = new WeakMap<ExportFs, (Proc | undefined)[]>();
  /** Names and reply shapes of the procedures (a table whose procedures never run). */
  readonly #shapes: (Proc | undefined)[];
  readonly #writeVerifier: Uint8Array;
  readonly #cookieVerifier: Uint8Array;
  readonly #space: (() => { totalBytes: number; freeBytes: number }) | undefined;
  readonly #fsid: bigint;
  readonly #log: Logger | undefined;

  constructor(options: Nfs3Options) {
    this.#exports = options.exports;
    this.#shapes = this.#table(null as unknown as ExportFs);
    this.#writeVerifier = options.writeVerifier;
    this.#cookieVerifier = options.cookieVerifier;
    this.#space = options.space;
    this.#fsid = options.fsid ?? 0x6b69_7365n;
    this.#log = options.logger;
  }

  nonIdempotent(_vers: number, proc: number): boolean {
    return NON_IDEMPOTENT.has(proc);
  }

  async call(_vers: number, proc: number, args: XdrReader, ctx: RpcContext): Promise<Uint8Array> {
    if (proc === NFSPROC3_NULL) return new Uint8Array(0);
    const p = this.#shapes[proc];
    if (p === undefined) throw new RpcAcceptError(PROC_UNAVAIL, `NFSv3 procedure ${proc}`);
    const started = performance.now();
    const reply = await this.#run(proc, p, args, ctx);
    const status = new DataView(reply.buffer, reply.byteOffset, 4).getUint32(0);
    requestsTotal.inc({ proc: p.name, status: status === NFS3_OK ? "ok" : String(status) });
    requestSeconds.observe({ proc: p.name }, (performance.now() - started) / 1000);
    return reply;
  }

  async #run(proc: number, p: Proc, args: XdrReader, ctx: RpcContext): Promise<Uint8Array> {
    const auth = ctx.auth!;
    // READ and READDIR replies are large: one allocation instead of doublings.
    const w = new XdrWriter(p.large ? NFS3_IO_BYTES_MAX + 4096 : 256);
    // Every procedure's arguments start with a handle: its export decides who may call, and
    // which file system the call sees.
    let fs: ExportFs;
    try {
      fs = this.#exports.scopeOf(args.fork().opaque(NFS3_FHSIZE), ctx.peerHost);
    } catch (e) {
      if (!(e instanceof NfsError)) throw e;
      w.u32(e.status);
      this.#failBody(w, p.fail);
      return w.finish();
    }
    let table = this.#tables.get(fs);
    if (table === undefined) {
      table = this.#table(fs);
      this.#tables.set(fs, table);
    }
    try {
      await table[proc]!.run(args, w, fs.caller(auth));
      return w.finish();
    } catch (e) {
      if (e instanceof XdrError || e instanceof RpcAcceptError) throw e;
      const status = nfsStatusOf(e);
      if (!(e instanceof NfsError)) {
        this.#log?.warn("nfs3: a procedure failed", { proc: p.name, status, error: e });
      }
      const fail = new XdrWriter(64).u32(status);
      this.#failBody(fail, p.fail);
      return fail.finish();
    }
  }

  #failBody(w: XdrWriter, shape: Shape): void {
    if (shape === "post") w.bool(false);
    else if (shape === "wcc") w.bool(false).bool(false);
    else if (shape === "wcc2") w.bool(false).bool(false).bool(false).bool(false);
    else if (shape === "link") w.bool(false).bool(false).bool(false);
  }

  #fattr(w: XdrWriter, a: FileAttr): void {
    w.u32(a.type === "dir" ? NF3DIR : a.type === "symlink" ? NF3LNK : NF3REG);
    w.u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid);
    w.u64(a.size).u64(a.type === "dir" ? 4096 : Math.ceil(a.size / 4096) * 4096);
    w.u32(0).u32(0); // rdev
    w.u64(this.#fsid).u64(a.fileid);
    nfsTime(w, a.atimeMs);
    nfsTime(w, a.mtimeMs);
    nfsTime(w, a.ctimeMs);
  }

  #postOp(w: XdrWriter, a: FileAttr | null): void {
    w.bool(a !== null);
    if (a !== null) this.#fattr(w, a);
  }

  #preOp(w: XdrWriter, a: FileAttr | null): void {
    w.bool(a !== null);
    if (a !== null) {
      w.u64(a.size);
      nfsTime(w, a.mtimeMs);
      nfsTime(w, a.ctimeMs);
    }
  }

  #table(fs: ExportFs): (Proc | undefined)[] {
    const readFh = (r: XdrReader): FsNode => fs.decode(r.opaque(NFS3_FHSIZE));
    const putFh = (w: XdrWriter, node: FsNode): void => {
      w.opaque(fs.handle(node));
    };
    /** Attributes when they can be had; a failure to get them is no failure of the call. */
    const attrOf = async (node: FsNode): Promise<FileAttr | null> => {
      try {
        return await fs.getattr(node);
      } catch {
        return null;
      }
    };
    const wcc = async (w: XdrWriter, node: FsNode, before: FileAttr | null): Promise<void> => {
      this.#preOp(w, before);
      this.#postOp(w, await attrOf(node));
    };
    const t: (Proc | undefined)[] = [];
    t[NFSPROC3_GETATTR] = {
      name: "GETATTR",
      fail: "status",
      run: async (r, w) => {
        const node = readFh(r);
        const a = await fs.getattr(node);
        w.u32(NFS3_OK);
        this.#fattr(w, a);
      },
    };
    t[NFSPROC3_SETATTR] = {
      name: "SETATTR",
      fail: "wcc",
      run: async (r, w, caller) => {
        const node = readFh(r);
        const attr = readSattr(r);
        const guard = r.bool() ? readTime(r) : null;
        const before = await fs.getattr(node);
        try {
          const after = await fs.setattr(node, attr, caller, guard);
          w.u32(NFS3_OK);
          this.#preOp(w, before);
          this.#postOp(w, after);
        } catch (e) {
          w.u32(nfsStatusOf(e));
          await wcc(w, node, before);
          if (!(e instanceof NfsError)) throw e;
        }
      },
    };
    t[NFSPROC3_LOOKUP] = {
      name: "LOOKUP",
      fail: "post",
      run: async (r, w, caller) => {
        const dir = readFh(r);
        const name = readFilename(r);
        try {
          const found = await fs.lookup(dir, name, caller);
          w.u32(NFS3_OK);
          putFh(w, found.node);
          this.#postOp(w, found.attr);
          this.#postOp(w, await attrOf(dir));
        } catch (e) {
          w.u32(nfsStatusOf(e));
          this.#postOp(w, await attrOf(dir));
        }
      },
    };
    t[NFSPROC3_ACCESS] = {
      name: "ACCESS",
      fail: "post",
      run: async (r, w, caller) => {
        const node = readFh(r);
        const asked = r.u32();
        const a = await fs.getattr(node);
        w.u32(NFS3_OK);
        this.#postOp(w, a);
        w.u32(fs.access(a, caller, asked));
      },
    };
    t[NFSPROC3_READLINK] = {
      name: "READLINK",
      fail: "post",
      run: async (r, w) => {
        const node = readFh(r);
        const target = await fs.readlink(node);
        w.u32(NFS3_OK);
        this.#postOp(w, await attrOf(node));
        w.string(target);
      },
    };
    t[NFSPROC3_READ] = {
      name: "READ",
      large: true,
      fail: "post",
      run: async (r, w, caller) => {
        const node = readFh(r);
        const offset = r.u64Number("offset");
        const count = Math.min(r.u32(), NFS3_IO_BYTES_MAX);
        const got = await fs.read(node, offset, count, caller);
        w.u32(NFS3_OK);
        this.#postOp(w, got.attr);
        w.u32(got.data.length).bool(got.eof).opaque(got.data);
      },
    };
    t[NFSPROC3_WRITE] = {
      name: "WRITE",
      fail: "wcc",
      run: async (r, w, caller) => {
        const node = readFh(r);
        const offset = r.u64Number("offset");
        const count = r.u32();
        const stable = r.u32();
        if (stable > FILE_SYNC) throw new XdrError(`stable_how ${stable}`);
        const data = r.opaque(NFS3_IO_BYTES_MAX);
        if (count !== data.length) {
          throw new NfsError(NFS3ERR_INVAL, `count ${count} but ${data.length} bytes of data`);
        }
        if (offset + data.length > NFS3_FILE_BYTES_MAX) {
          throw new NfsError(NFS3ERR_FBIG, "past the largest file");
        }
        const before = await fs.getattr(node);
        // A view of the record, which no one else holds: pending writes keep it until stored.
        await fs.write(node, offset, data, stable !== UNSTABLE, caller);
        w.u32(NFS3_OK);
        await wcc(w, node, before);
        w.u32(data.length).u32(stable === UNSTABLE ? UNSTABLE : FILE_SYNC).fixed(
          this.#writeVerifier,
        );
      },
    };
    const made = async (
      w: XdrWriter,
      dir: FsNode,
      before: FileAttr | null,
      op: () => Promise<{ node: FsNode; attr: FileAttr }>,
    ) => {
      try {
        const done = await op();
        w.u32(NFS3_OK);
        w.bool(true);
        putFh(w, done.node);
        this.#postOp(w, done.attr);
        await wcc(w, dir, before);
      } catch (e) {
        w.u32(nfsStatusOf(e));
        await wcc(w, dir, before);
        if (!(e instanceof NfsError)) throw e;
      }
    };
    t[NFSPROC3_CREATE] = {
      name: "CREATE",
      fail: "wcc",
      run: async (r, w, caller) => {
        const dir = readFh(r);
        const name = readFilename(r);
        const mode = r.u32();
        let how: CreateHow;
        if (mode === CREATE_UNCHECKED || mode === CREATE_GUARDED) {
          how = { mode: mode === CREATE_UNCHECKED ? "unchecked" : "guarded", attr: readSattr(r) };
        } else if (mode === CREATE_EXCLUSIVE) {
          how = { mode: "exclusive", verifier: r.fixed(8).slice() };
        } else throw new XdrError(`createmode3 ${mode}`);
        const before = await attrOf(dir);
        await made(w, dir, before, () => fs.create(dir, name, how, caller));
      },
    };
    t[NFSPROC3_MKDIR] = {
      name: "MKDIR",
      fail: "wcc",
      run: async (r, w, caller) => {
        const dir = readFh(r);
        const name = readFilename(r);
        const attr = readSattr(r);
        const before = await attrOf(dir);
        await made(w, dir, before, () => fs.mkdir(dir, name, attr, caller));
      },
    };
    t[NFSPROC3_SYMLINK] = {
      name: "SYMLINK",
      fail: "wcc",
      run: async (r, w, caller) => {
        const dir = readFh(r);
        const name = readFilename(r);
        const attr = readSattr(r);
        const target = r.string(SYMLINK_BYTES_DECODE_MAX);
        const before = await attrOf(dir);
        await made(w, dir, before, () => fs.symlink(dir, name, target, attr, caller));
      },
    };
    t[NFSPROC3_MKNOD] = {
      name: "MKNOD",
      fail: "wcc",
      run: async (r, w) => {
        const dir = readFh(r);
        readFilename(r);
        const type = r.u32();
        if (type === 3 || type === 4) {
          readSattr(r);
          r.u32();
          r.u32();
        } else if (type === 6 || type === 7) readSattr(r);
        else if (type < 1 || type > 7) throw new XdrError(`ftype3 ${type}`);
        // Devices, sockets and fifos have no object form: refused, never half-made.
        w.u32(NFS3ERR_NOTSUPP);
        await wcc(w, dir, await attrOf(dir));
      },
    };
    const removing = async (
      r: XdrReader,
      w: XdrWriter,
      op: (dir: FsNode, name: string) => Promise<void>,
    ) => {
      const dir = readFh(r);
      const name = readFilename(r);
      const before = await attrOf(dir);
      try {
        await op(dir, name);
        w.u32(NFS3_OK);
      } catch (e) {
        w.u32(nfsStatusOf(e));
        if (!(e instanceof NfsError)) {
          this.#log?.warn("nfs3: remove failed", { error: e });
        }
      }
      await wcc(w, dir, before);
    };
    t[NFSPROC3_REMOVE] = {
      name: "REMOVE",
      fail: "wcc",
      run: (r, w, caller) => removing(r, w, (d, n) => fs.remove(d, n, caller)),
    };
    t[NFSPROC3_RMDIR] = {
      name: "RMDIR",
      fail: "wcc",
      run: (r, w, caller) => removing(r, w, (d, n) => fs.rmdir(d, n, caller)),
    };
    t[NFSPROC3_RENAME] = {
      name: "RENAME",
      fail: "wcc2",
      run: async (r, w, caller) => {
        const from = readFh(r);
        const fromName = readFilename(r);
        const to = readFh(r);
        const toName = readFilename(r);
        const fromBefore = await attrOf(from);
        const toBefore = await attrOf(to);
        try {
          await fs.rename(from, fromName, to, toName, caller);
          w.u32(NFS3_OK);
        } catch (e) {
          w.u32(nfsStatusOf(e));
          if (!(e instanceof NfsError)) this.#log?.warn("nfs3: rename failed", { error: e });
        }
        await wcc(w, from, fromBefore);
        await wcc(w, to, toBefore);
      },
    };
    t[NFSPROC3_LINK] = {
      name: "LINK",
      fail: "link",
      run: async (r, w, caller) => {
        const file = readFh(r);
        const dir = readFh(r);
        const name = readFilename(r);
        const before = await attrOf(dir);
        try {
          await fs.link(file, dir, name, caller);
          w.u32(NFS3_OK);
        } catch (e) {
          w.u32(nfsStatusOf(e));
          if (!(e instanceof NfsError)) this.#log?.warn("nfs3: link failed", { error: e });
        }
        this.#postOp(w, await attrOf(file));
        await wcc(w, dir, before);
      },
    };
    const readdir = async (r: XdrReader, w: XdrWriter, caller: Caller, plus: boolean) => {
      const dir = readFh(r);
      const cookie = r.u64();
      const verifier = r.fixed(8);
      const dircount = r.u32();
      const maxcount = plus ? r.u32() : dircount;
      if (cookie !== 0n && !bytesEqual8(verifier, this.#cookieVerifier)) {
        throw new NfsError(NFS3ERR_BAD_COOKIE, "the cookie verifier is from another start");
      }
      const replyMax = Math.min(maxcount, NFS3_READDIR_BYTES_MAX);
      // Status, attributes, verifier, list end and eof take ~ 120 bytes.
      if (replyMax < 128) throw new NfsError(NFS3ERR_TOOSMALL, `count ${maxcount} is too small`);
      const estimate = plus ? 240 : 40;
      const want = Math.max(
        1,
        Math.min(NFS3_READDIR_ENTRIES_MAX, Math.floor((replyMax - 120) / estimate) + 2),
      );
      const listed = await fs.readdir(dir, cookie, want, plus, caller);
      const dirAttr = await attrOf(dir);
      w.u32(NFS3_OK);
      this.#postOp(w, dirAttr);
      w.fixed(this.#cookieVerifier);
      let eof = listed.eof;
      let count = 0;
      let dirBytes = 0;
      for (const e of listed.entries) {
        const entry = new XdrWriter(plus ? 256 : 64);
        entry.bool(true).u64(e.fileid).string(e.name).u64(e.cookie);
        const nameBytes = entry.length;
        if (plus) {
          this.#postOp(entry, e.attr ?? null);
          entry.bool(true);
          putFh(entry, e.node);
        }
        const bytes = entry.finish();
        if (
          w.length + bytes.length + 8 > replyMax ||
          (plus && dirBytes + nameBytes > dircount && count > 0)
        ) {
          eof = false;
          break;
        }
        w.fixed(bytes);
        dirBytes += nameBytes;
        count++;
      }
      if (count === 0 && listed.entries.length > 0) {
        throw new NfsError(NFS3ERR_TOOSMALL, "not even one entry fits");
      }
      w.bool(false).bool(eof);
    };
    t[NFSPROC3_READDIR] = {
      name: "READDIR",
      large: true,
      fail: "post",
      run: (r, w, caller) => readdir(r, w, caller, false),
    };
    t[NFSPROC3_READDIRPLUS] = {
      name: "READDIRPLUS",
      large: true,
      fail: "post",
      run: (r, w, caller) => readdir(r, w, caller, true),
    };
    t[NFSPROC3_FSSTAT] = {
      name: "FSSTAT",
      fail: "post",
      run: async (r, w) => {
        const node = readFh(r);
        const a = await fs.getattr(node);
        const usage = await fs.usage();
        const space = this.#space?.() ?? null;
        const total = space?.totalBytes ?? Math.max(usage.bytes, 0);
        const free = space?.freeBytes ?? 0;
        w.u32(NFS3_OK);
        this.#postOp(w, a);
        w.u64(total).u64(free).u64(free);
        // Files are objects: as many as the space holds, in principle.
        const files = BigInt(usage.objects) + BigInt(Math.floor(free / 4096));
        const freeFiles = BigInt(Math.floor(free / 4096));
        w.u64(files).u64(freeFiles).u64(freeFiles);
        w.u32(0); // invarsec: may change at any time
      },
    };
    t[NFSPROC3_FSINFO] = {
      name: "FSINFO",
      fail: "post",
      run: async (r, w) => {
        const node = readFh(r);
        const a = await fs.getattr(node);
        w.u32(NFS3_OK);
        this.#postOp(w, a);
        w.u32(NFS3_IO_BYTES_MAX).u32(NFS3_IO_BYTES_MAX).u32(4096);
        w.u32(NFS3_IO_BYTES_MAX).u32(NFS3_IO_BYTES_MAX).u32(4096);
        w.u32(64 << 10);
        w.u64(NFS3_FILE_BYTES_MAX);
        w.u32(0).u32(1_000_000); // time_delta: millisecond times
        w.u32(FSF3_SYMLINK | FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
      },
    };
    t[NFSPROC3_PATHCONF] = {
      name: "PATHCONF",
      fail: "post",
      run: async (r, w) => {
        const node = readFh(r);
        const a = await fs.getattr(node);
        w.u32(NFS3_OK);
        this.#postOp(w, a);
        w.u32(LINKS_MAX).u32(255).bool(true).bool(true).bool(false).bool(true);
      },
    };
    t[NFSPROC3_COMMIT] = {
      name: "COMMIT",
      fail: "wcc",
      run: async (r, w) => {
        const node = readFh(r);
        r.u64();
        r.u32();
        const before = await fs.getattr(node);
        await fs.commit(node);
        w.u32(NFS3_OK);
        await wcc(w, node, before);
        w.fixed(this.#writeVerifier);
      },
    };
    return t;
  }
}

function bytesEqual8(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
