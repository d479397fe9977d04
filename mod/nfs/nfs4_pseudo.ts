// NFSv4's view of the exports (RFC 8881 §7): the pseudo-file system whose directories lead to
// the export paths a client may use, and the crossings between it and the exports. An export
// at "/" (the built-in one included) is the pseudo root itself, so a client of a fresh node
// mounts host:/bucket as before. A client sees only the exports whose networks hold it; the
// handles of the others, and paths through them, answer NFS4ERR_ACCESS.

import { createHash } from "node:crypto";
import type { Caller, DirEntry, FileAttr } from "./bucket_fs.ts";
import type { AuthSys, ExportFs, NfsExports } from "./exports.ts";
import { fileIdOf, type FsNode } from "./file_handle.ts";
import {
  NFS4ERR_ACCESS,
  NFS4ERR_BADHANDLE,
  NFS4ERR_INVAL,
  NFS4ERR_ISDIR,
  NFS4ERR_NOENT,
  NFS4ERR_ROFS,
  NFS4ERR_STALE,
} from "./nfs4_const.ts";
import { Nfs4Error } from "./nfs4_errors.ts";

/** The first byte of a pseudo directory's handle (an export's handles start with 1). */
const PSEUDO_FH_TAG = 0xf0;
const PSEUDO_DIGEST_BYTES = 16;
/** The namespace id pseudo directories' nodes carry (no tenant namespace is all zeros). */
const PSEUDO_NS = new Uint8Array(16);
const ACCESS4_READ = 0x1;
const ACCESS4_LOOKUP = 0x2;

/** The file system a handle is in: an export's, or the pseudo one above them. */
export type Nfs4Fs = ExportFs | PseudoFs;

/** A handle's place: the file system it is in and the node in it. */
export interface Nfs4Place {
  fs: Nfs4Fs;
  node: FsNode;
}

function pseudoDigest(path: string): Uint8Array {
  return new Uint8Array(
    createHash("sha256").update("kiseki/nfs4-pseudo/v1\0").update(path).digest(),
  )
    .subarray(0, PSEUDO_DIGEST_BYTES);
}

function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

function parentPath(path: string): string {
  const at = path.lastIndexOf("/");
  return at <= 0 ? "/" : path.slice(0, at);
}

/** Whether `path` is `under` or a directory above it. */
function leadsTo(path: string, under: string): boolean {
  return path === "/" || under === path || under.startsWith(`${path}/`);
}

function readOnlyFs(): never {
  throw new Nfs4Error(NFS4ERR_ROFS, "the pseudo-file system is read-only");
}

/** The pseudo directories one client sees: the paths above the exports it may use. */
export class PseudoFs {
  readonly readOnly = true;
  readonly #exports: readonly string[];

  constructor(exportPaths: readonly string[]) {
    this.#exports = exportPaths;
  }

  static node(path: string): FsNode {
    return { kind: "dir", ns: PSEUDO_NS, path };
  }

  caller(auth: AuthSys): Caller {
    return { uid: auth.uid, gid: auth.gid, gids: auth.gids };
  }

  handle(node: FsNode): Uint8Array {
    const path = node.kind === "root" ? "/" : node.path;
    const fh = new Uint8Array(1 + PSEUDO_DIGEST_BYTES);
    fh[0] = PSEUDO_FH_TAG;
    fh.set(pseudoDigest(path), 1);
    return fh;
  }

  /** The names one step below `path` toward the exports. */
  children(path: string): string[] {
    const names = new Set<string>();
    for (const e of this.#exports) {
      if (e === path || !leadsTo(path, e)) continue;
      names.add(e.slice(path === "/" ? 1 : path.length + 1).split("/")[0]!);
    }
    return [...names].sort();
  }

  getattr(node: FsNode): Promise<FileAttr> {
    const path = node.kind === "root" ? "/" : node.path;
    return Promise.resolve({
      type: "dir",
      mode: 0o555,
      nlink: 2 + this.children(path).length,
      uid: 0,
      gid: 0,
      size: 4096,
      fileid: path === "/" ? 1n : fileIdOf(PseudoFs.node(path)),
      atimeMs: 0,
      mtimeMs: 0,
      ctimeMs: 0,
    });
  }

  /** A name below a pseudo directory (as a directory: operations on it find it read-only). */
  async lookup(dir: FsNode, name: string): Promise<{ node: FsNode; attr: FileAttr }> {
    const path = dir.kind === "root" ? "/" : dir.path;
    if (!this.children(path).includes(name)) {
      throw new Nfs4Error(NFS4ERR_NOENT, `no ${JSON.stringify(name)}`);
    }
    const node = PseudoFs.node(join(path, name));
    return { node, attr: await this.getattr(node) };
  }

  access(_attr: FileAttr, _caller: Caller, asked: number): number {
    return asked & (ACCESS4_READ | ACCESS4_LOOKUP);
  }

  async readdir(
    dir: FsNode,
    cookie: bigint,
    max: number,
  ): Promise<{ entries: DirEntry[]; eof: boolean }> {
    const path = dir.kind === "root" ? "/" : dir.path;
    const names = this.children(path);
    const entries: DirEntry[] = [];
    // Cookies 0-2 are the protocol's; the n-th name is n + 3.
    for (let i = Math.max(0, Number(cookie) - 2); i < names.length && entries.length < max; i++) {
      const node = PseudoFs.node(join(path, names[i]!));
      const attr = await this.getattr(node);
      entries.push({ name: names[i]!, node, fileid: attr.fileid, cookie: BigInt(i + 3), attr });
    }
    const last = entries.at(-1);
    return { entries, eof: last === undefined || Number(last.cookie) - 3 >= names.length - 1 };
  }

  readlink(): Promise<string> {
    throw new Nfs4Error(NFS4ERR_INVAL, "not a symlink");
  }

  read(): Promise<{ data: Uint8Array; eof: boolean; attr: FileAttr }> {
    throw new Nfs4Error(NFS4ERR_ISDIR, "a directory");
  }

  commit(): Promise<void> {
    throw new Nfs4Error(NFS4ERR_ISDIR, "a directory");
  }

  write = readOnlyFs;
  setattr = readOnlyFs;
  create = readOnlyFs;
  mkdir = readOnlyFs;
  symlink = readOnlyFs;
  link = readOnlyFs;
  remove = readOnlyFs;
  rmdir = readOnlyFs;
  rename = readOnlyFs;

  usage(): Promise<{ bytes: number; objects: number }> {
    return Promise.resolve({ bytes: 0, objects: 0 });
  }
}

/** The fsid attribute's major number: every export is a file system of its own. */
export function nfs4FsidOf(fs: Nfs4Fs, base: bigint): bigint {
  return fs instanceof PseudoFs ? base - 1n : base + BigInt(fs.export.id);
}

/** The exports one client may use, as NFSv4's namespace: handles, the root, crossings. */
export class Nfs4Namespace {
  readonly #exports: NfsExports;

  constructor(exports: NfsExports) {
    this.#exports = exports;
  }

  #visible(host: string): ExportFs[] {
    return this.#exports.visible(host);
  }

  /**
   * The place `path` of the pseudo-file system names for `host`: an export's root, a pseudo
   * directory above exports, NFS4ERR_ACCESS when only exports `host` may not use lie there.
   */
  #at(path: string, host: string): Nfs4Place {
    const visible = this.#visible(host);
    const exact = visible.find((fs) => fs.export.path === path);
    if (exact !== undefined) return { fs: exact, node: exact.root };
    if (visible.some((fs) => leadsTo(path, fs.export.path))) {
      const pseudo = new PseudoFs(visible.map((fs) => fs.export.path));
      return { fs: pseudo, node: PseudoFs.node(path) };
    }
    if (this.#exports.list().some((e) => leadsTo(path, e.path))) {
      throw new Nfs4Error(NFS4ERR_ACCESS, `${host} may use no export under ${path}`);
    }
    throw new Nfs4Error(NFS4ERR_NOENT, `no export under ${path}`);
  }

  /** PUTROOTFH: the pseudo root, or the export at "/". */
  root(host: string): Nfs4Place {
    return this.#at("/", host);
  }

  /** PUTFH: STALE for a pseudo directory no longer there, ACCESS outside the networks. */
  fromHandle(fh: Uint8Array, host: string): Nfs4Place {
    if (fh.length > 0 && fh[0] === PSEUDO_FH_TAG) {
      if (fh.length !== 1 + PSEUDO_DIGEST_BYTES) {
        throw new Nfs4Error(NFS4ERR_BADHANDLE, "a pseudo handle of a bad length");
      }
      const digest = fh.subarray(1);
      const paths = new Set<string>(["/"]);
      for (const e of this.#exports.list()) {
        // An export's own path too: READDIR of a pseudo directory may have handed it out.
        for (let p = e.path; p !== "/"; p = parentPath(p)) paths.add(p).add(parentPath(p));
      }
      for (const p of paths) {
        if (pseudoDigest(p).every((b, i) => b === digest[i])) return this.#at(p, host);
      }
      throw new Nfs4Error(NFS4ERR_STALE, "a pseudo directory no longer there");
    }
    const fs = this.#exports.scopeOf(fh, host);
    return { fs, node: fs.decode(fh) };
  }

  /** LOOKUP: within an export, or across into one from the pseudo-file system or a root. */
  async lookup(at: Nfs4Place, name: string, host: string, auth: AuthSys): Promise<Nfs4Place> {
    if (at.fs instanceof PseudoFs) {
      const path = join(at.node.kind === "root" ? "/" : at.node.path, name);
      if (!at.fs.children(parentPath(path)).includes(name)) {
        throw new Nfs4Error(NFS4ERR_NOENT, `no ${JSON.stringify(name)}`);
      }
      return this.#at(path, host);
    }
    const fs = at.fs;
    if (fs.isRoot(at.node)) {
      // An export below this one's root is reached through its path (the longest wins).
      const path = join(fs.export.path, name);
      if (this.#exports.list().some((e) => e !== fs.export && leadsTo(path, e.path))) {
        return this.#at(path, host);
      }
    }
    return { fs: at.fs, node: (await fs.lookup(at.node, name, fs.caller(auth))).node };
  }

  /** LOOKUPP: the parent, leaving an export's root for the pseudo directory above it. */
  parent(at: Nfs4Place, host: string): Nfs4Place {
    if (at.fs instanceof PseudoFs) {
      const path = at.node.kind === "root" ? "/" : at.node.path;
      if (path === "/") throw new Nfs4Error(NFS4ERR_NOENT, "the root has no parent");
      return this.#at(parentPath(path), host);
    }
    const fs = at.fs;
    if (fs.isRoot(at.node)) {
      if (fs.export.path === "/") throw new Nfs4Error(NFS4ERR_NOENT, "the root has no parent");
      return this.#at(parentPath(fs.export.path), host);
    }
    return { fs: at.fs, node: fs.parentOf(at.node) };
  }
}
