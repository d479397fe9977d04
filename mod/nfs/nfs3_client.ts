// An NFSv3 + MOUNT v3 client at the XDR level, over RpcClient: what tests use to call every
// procedure (including the calls real clients never make) and read every field of the reply.

import { MOUNT_PROGRAM, MOUNT_V3 } from "./mount.ts";
import {
  NF3DIR,
  NF3LNK,
  NFS_PROGRAM,
  NFS_V3,
  NFSPROC3_ACCESS,
  NFSPROC3_COMMIT,
  NFSPROC3_CREATE,
  NFSPROC3_FSINFO,
  NFSPROC3_FSSTAT,
  NFSPROC3_GETATTR,
  NFSPROC3_LINK,
  NFSPROC3_LOOKUP,
  NFSPROC3_MKDIR,
  NFSPROC3_MKNOD,
  NFSPROC3_PATHCONF,
  NFSPROC3_READ,
  NFSPROC3_READDIR,
  NFSPROC3_READDIRPLUS,
  NFSPROC3_READLINK,
  NFSPROC3_REMOVE,
  NFSPROC3_RENAME,
  NFSPROC3_RMDIR,
  NFSPROC3_SETATTR,
  NFSPROC3_SYMLINK,
  NFSPROC3_WRITE,
} from "./nfs3.ts";
import type { ReplyBody } from "./rpc.ts";
import type { RpcClient } from "./rpc_client.ts";
import { type XdrReader, XdrWriter } from "./xdr.ts";

export interface Fattr {
  type: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  used: number;
  fsid: bigint;
  fileid: bigint;
  atime: number;
  mtime: number;
  ctime: number;
}

export interface Wcc {
  before: { size: number; mtime: number; ctime: number } | null;
  after: Fattr | null;
}

export interface Made {
  status: number;
  fh?: Uint8Array;
  attr?: Fattr | null;
  dirWcc: Wcc;
}

export interface FsStat {
  status: number;
  tbytes?: number;
  fbytes?: number;
  abytes?: number;
  tfiles?: number;
  ffiles?: number;
  afiles?: number;
  invarsec?: number;
}

export interface FsInfo {
  status: number;
  rtmax?: number;
  rtpref?: number;
  rtmult?: number;
  wtmax?: number;
  wtpref?: number;
  wtmult?: number;
  dtpref?: number;
  maxfilesize?: number;
  timeDeltaMs?: number;
  properties?: number;
}

export interface PathConf {
  status: number;
  linkmax?: number;
  nameMax?: number;
  noTrunc?: boolean;
  chownRestricted?: boolean;
  caseInsensitive?: boolean;
  casePreserving?: boolean;
}

export interface SattrIn {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  mtime?: number | "now";
}

function time(r: XdrReader): number {
  return r.u32() * 1000 + r.u32() / 1e6;
}

export function readFattr(r: XdrReader): Fattr {
  const type = r.u32(), mode = r.u32(), nlink = r.u32(), uid = r.u32(), gid = r.u32();
  const size = Number(r.u64()), used = Number(r.u64());
  r.u32();
  r.u32();
  const fsid = r.u64(), fileid = r.u64();
  return {
    type,
    mode,
    nlink,
    uid,
    gid,
    size,
    used,
    fsid,
    fileid,
    atime: time(r),
    mtime: time(r),
    ctime: time(r),
  };
}

function postOp(r: XdrReader): Fattr | null {
  return r.bool() ? readFattr(r) : null;
}

function wcc(r: XdrReader): Wcc {
  const before = r.bool() ? { size: Number(r.u64()), mtime: time(r), ctime: time(r) } : null;
  return { before, after: postOp(r) };
}

function sattr(w: XdrWriter, a: SattrIn): void {
  w.bool(a.mode !== undefined);
  if (a.mode !== undefined) w.u32(a.mode);
  w.bool(a.uid !== undefined);
  if (a.uid !== undefined) w.u32(a.uid);
  w.bool(a.gid !== undefined);
  if (a.gid !== undefined) w.u32(a.gid);
  w.bool(a.size !== undefined);
  if (a.size !== undefined) w.u64(a.size);
  w.u32(0); // atime: don't change
  if (a.mtime === undefined) w.u32(0);
  else if (a.mtime === "now") w.u32(1);
  else w.u32(2).u32(Math.floor(a.mtime / 1000)).u32((a.mtime % 1000) * 1e6);
}

/** The results of a successful RPC, or a thrown Error naming the RPC-level failure. */
function results(body: ReplyBody): XdrReader {
  if (body.kind !== "success") throw new Error(`rpc failed: ${JSON.stringify(body)}`);
  return body.results;
}

export class Nfs3Client {
  constructor(readonly rpc: RpcClient) {}

  async #call(proc: number, w: XdrWriter): Promise<XdrReader> {
    return results(await this.rpc.call(NFS_PROGRAM, NFS_V3, proc, w.finish()));
  }

  async mount(path: string): Promise<{ status: number; fh?: Uint8Array; flavors?: number[] }> {
    const r = results(
      await this.rpc.call(MOUNT_PROGRAM, MOUNT_V3, 1, new XdrWriter().string(path).finish()),
    );
    const status = r.u32();
    if (status !== 0) return { status };
    const fh = r.opaque(64).slice();
    const flavors = [];
    for (let n = r.u32(); n > 0; n--) flavors.push(r.u32());
    return { status, fh, flavors };
  }

  async getattr(fh: Uint8Array): Promise<{ status: number; attr?: Fattr }> {
    const r = await this.#call(NFSPROC3_GETATTR, new XdrWriter().opaque(fh));
    const status = r.u32();
    return status === 0 ? { status, attr: readFattr(r) } : { status };
  }

  async setattr(
    fh: Uint8Array,
    a: SattrIn,
    guardCtimeMs?: number,
  ): Promise<{ status: number; wcc: Wcc }> {
    const w = new XdrWriter().opaque(fh);
    sattr(w, a);
    w.bool(guardCtimeMs !== undefined);
    if (guardCtimeMs !== undefined) {
      w.u32(Math.floor(guardCtimeMs / 1000)).u32(Math.round((guardCtimeMs % 1000) * 1e6));
    }
    const r = await this.#call(NFSPROC3_SETATTR, w);
    return { status: r.u32(), wcc: wcc(r) };
  }

  async lookup(
    dir: Uint8Array,
    name: string,
  ): Promise<{ status: number; fh?: Uint8Array; attr?: Fattr | null; dirAttr: Fattr | null }> {
    const r = await this.#call(NFSPROC3_LOOKUP, new XdrWriter().opaque(dir).string(name));
    const status = r.u32();
    if (status !== 0) return { status, dirAttr: postOp(r) };
    const fh = r.opaque(64).slice();
    return { status, fh, attr: postOp(r), dirAttr: postOp(r) };
  }

  async access(fh: Uint8Array, asked: number): Promise<{ status: number; granted?: number }> {
    const r = await this.#call(NFSPROC3_ACCESS, new XdrWriter().opaque(fh).u32(asked));
    const status = r.u32();
    postOp(r);
    return status === 0 ? { status, granted: r.u32() } : { status };
  }

  async readlink(fh: Uint8Array): Promise<{ status: number; target?: string }> {
    const r = await this.#call(NFSPROC3_READLINK, new XdrWriter().opaque(fh));
    const status = r.u32();
    postOp(r);
    return status === 0 ? { status, target: r.string(8192) } : { status };
  }

  async read(
    fh: Uint8Array,
    offset: number,
    count: number,
  ): Promise<{ status: number; data?: Uint8Array; eof?: boolean; attr: Fattr | null }> {
    const r = await this.#call(NFSPROC3_READ, new XdrWriter().opaque(fh).u64(offset).u32(count));
    const status = r.u32();
    const attr = postOp(r);
    if (status !== 0) return { status, attr };
    r.u32();
    const eof = r.bool();
    return { status, eof, data: r.opaque(1 << 24).slice(), attr };
  }

  async write(
    fh: Uint8Array,
    offset: number,
    data: Uint8Array,
    stable = 0,
  ): Promise<
    { status: number; wcc: Wcc; count?: number; committed?: number; verifier?: Uint8Array }
  > {
    const w = new XdrWriter(data.length + 128).opaque(fh).u64(offset).u32(data.length).u32(stable)
      .opaque(data);
    const r = await this.#call(NFSPROC3_WRITE, w);
    const status = r.u32();
    const c = wcc(r);
    if (status !== 0) return { status, wcc: c };
    return { status, wcc: c, count: r.u32(), committed: r.u32(), verifier: r.fixed(8).slice() };
  }

  async #made(proc: number, w: XdrWriter): Promise<Made> {
    const r = await this.#call(proc, w);
    const status = r.u32();
    if (status !== 0) return { status, dirWcc: wcc(r) };
    const fh = r.bool() ? r.opaque(64).slice() : undefined;
    return { status, fh, attr: postOp(r), dirWcc: wcc(r) };
  }

  create(
    dir: Uint8Array,
    name: string,
    how: { mode: 0 | 1; attr: SattrIn } | { mode: 2; verifier: Uint8Array },
  ): Promise<Made> {
    const w = new XdrWriter().opaque(dir).string(name).u32(how.mode);
    if (how.mode === 2) w.fixed(how.verifier);
    else sattr(w, how.attr);
    return this.#made(NFSPROC3_CREATE, w);
  }

  mkdir(dir: Uint8Array, name: string, attr: SattrIn = {}): Promise<Made> {
    const w = new XdrWriter().opaque(dir).string(name);
    sattr(w, attr);
    return this.#made(NFSPROC3_MKDIR, w);
  }

  symlink(dir: Uint8Array, name: string, target: string): Promise<Made> {
    const w = new XdrWriter().opaque(dir).string(name);
    sattr(w, {});
    w.string(target);
    return this.#made(NFSPROC3_SYMLINK, w);
  }

  mknod(dir: Uint8Array, name: string, type: number): Promise<Made> {
    const w = new XdrWriter().opaque(dir).string(name).u32(type);
    if (type === 3 || type === 4) {
      sattr(w, {});
      w.u32(1).u32(2);
    } else if (type === 6 || type === 7) sattr(w, {});
    return this.#made(NFSPROC3_MKNOD, w);
  }

  async remove(dir: Uint8Array, name: string): Promise<{ status: number; wcc: Wcc }> {
    const r = await this.#call(NFSPROC3_REMOVE, new XdrWriter().opaque(dir).string(name));
    return { status: r.u32(), wcc: wcc(r) };
  }

  async rmdir(dir: Uint8Array, name: string): Promise<{ status: number; wcc: Wcc }> {
    const r = await this.#call(NFSPROC3_RMDIR, new XdrWriter().opaque(dir).string(name));
    return { status: r.u32(), wcc: wcc(r) };
  }

  async rename(
    from: Uint8Array,
    fromName: string,
    to: Uint8Array,
    toName: string,
  ): Promise<{ status: number; fromWcc: Wcc; toWcc: Wcc }> {
    const w = new XdrWriter().opaque(from).string(fromName).opaque(to).string(toName);
    const r = await this.#call(NFSPROC3_RENAME, w);
    return { status: r.u32(), fromWcc: wcc(r), toWcc: wcc(r) };
  }

  async link(file: Uint8Array, dir: Uint8Array, name: string): Promise<{ status: number }> {
    const w = new XdrWriter().opaque(file).opaque(dir).string(name);
    const r = await this.#call(NFSPROC3_LINK, w);
    const status = r.u32();
    postOp(r);
    wcc(r);
    return { status };
  }

  async readdir(
    dir: Uint8Array,
    cookie: bigint,
    verifier: Uint8Array,
    count: number,
    plus = false,
  ): Promise<{
    status: number;
    verifier?: Uint8Array;
    entries: {
      fileid: bigint;
      name: string;
      cookie: bigint;
      attr?: Fattr | null;
      fh?: Uint8Array;
    }[];
    eof: boolean;
  }> {
    const w = new XdrWriter().opaque(dir).u64(cookie).fixed(verifier).u32(count);
    if (plus) w.u32(count);
    const r = await this.#call(plus ? NFSPROC3_READDIRPLUS : NFSPROC3_READDIR, w);
    const status = r.u32();
    postOp(r);
    if (status !== 0) return { status, entries: [], eof: false };
    const v = r.fixed(8).slice();
    const entries = [];
    while (r.bool()) {
      const e: {
        fileid: bigint;
        name: string;
        cookie: bigint;
        attr?: Fattr | null;
        fh?: Uint8Array;
      } = { fileid: r.u64(), name: r.string(1024), cookie: r.u64() };
      if (plus) {
        e.attr = postOp(r);
        if (r.bool()) e.fh = r.opaque(64).slice();
      }
      entries.push(e);
    }
    return { status, verifier: v, entries, eof: r.bool() };
  }

  /** Every entry of a directory, page by page with `count`-byte replies. */
  async list(dir: Uint8Array, count = 4096, plus = false): Promise<string[]> {
    const names: string[] = [];
    let cookie = 0n;
    let verifier: Uint8Array = new Uint8Array(8);
    for (let page = 0; page < 10_000; page++) {
      const got = await this.readdir(dir, cookie, verifier, count, plus);
      if (got.status !== 0) throw new Error(`readdir status ${got.status}`);
      for (const e of got.entries) names.push(e.name);
      if (got.eof) return names;
      cookie = got.entries[got.entries.length - 1]!.cookie;
      verifier = got.verifier!;
    }
    throw new Error("readdir did not end");
  }

  async fsstat(fh: Uint8Array): Promise<FsStat> {
    const r = await this.#call(NFSPROC3_FSSTAT, new XdrWriter().opaque(fh));
    const status = r.u32();
    postOp(r);
    if (status !== 0) return { status };
    const n = () => Number(r.u64());
    return {
      status,
      tbytes: n(),
      fbytes: n(),
      abytes: n(),
      tfiles: n(),
      ffiles: n(),
      afiles: n(),
      invarsec: r.u32(),
    };
  }

  async fsinfo(fh: Uint8Array): Promise<FsInfo> {
    const r = await this.#call(NFSPROC3_FSINFO, new XdrWriter().opaque(fh));
    const status = r.u32();
    postOp(r);
    if (status !== 0) return { status };
    return {
      status,
      rtmax: r.u32(),
      rtpref: r.u32(),
      rtmult: r.u32(),
      wtmax: r.u32(),
      wtpref: r.u32(),
      wtmult: r.u32(),
      dtpref: r.u32(),
      maxfilesize: Number(r.u64()),
      timeDeltaMs: time(r),
      properties: r.u32(),
    };
  }

  async pathconf(fh: Uint8Array): Promise<PathConf> {
    const r = await this.#call(NFSPROC3_PATHCONF, new XdrWriter().opaque(fh));
    const status = r.u32();
    postOp(r);
    if (status !== 0) return { status };
    return {
      status,
      linkmax: r.u32(),
      nameMax: r.u32(),
      noTrunc: r.bool(),
      chownRestricted: r.bool(),
      caseInsensitive: r.bool(),
      casePreserving: r.bool(),
    };
  }

  async commit(fh: Uint8Array): Promise<{ status: number; wcc: Wcc; verifier?: Uint8Array }> {
    const r = await this.#call(NFSPROC3_COMMIT, new XdrWriter().opaque(fh).u64(0).u32(0));
    const status = r.u32();
    const c = wcc(r);
    return status === 0 ? { status, wcc: c, verifier: r.fixed(8).slice() } : { status, wcc: c };
  }
}

export { NF3DIR, NF3LNK };
