// The mount's file system: the tenant's buckets as top-level directories and object keys as
// paths, through the same BucketFs NFS serves, so a file written here is an object over S3
// and a file over NFS by construction. This layer adds what the kernel's inode protocol
// needs on top of paths: node ids with lookup counts (moved along on rename), open handles,
// directory snapshots for stable readdir offsets, locks, and unlinked-while-open files.

import * as abi from "./abi.ts";
import { FuseError } from "./fs_api.ts";
import type {
  Context,
  DirEntryOut,
  Entry,
  LockRequest,
  Opened,
  RawFileSystem,
  SetAttrIn,
} from "./fs_api.ts";
import { LockTable } from "./locks.ts";
import { type FileReaders, HandleStreams } from "./file_reads.ts";
import {
  BucketFs,
  type Caller,
  type FileAttr,
  type FsNode,
  type NfsObjectBackend,
  nfsStatusOf,
  type SetAttr,
} from "../nfs/mod.ts";
import { toHex } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";

/** Node ids the kernel may hold at once (it forgets under memory pressure). */
export const FUSE_NODES_MAX = 1 << 20;
/** Open files and directories at once. */
export const FUSE_HANDLES_MAX = 65_536;
/** Entries one directory listing snapshot holds (past it: EFBIG for that directory). */
export const DIR_SNAPSHOT_ENTRIES_MAX = 1 << 20;
/** One extended attribute value's bytes at most (all of a file's share 16 KiB of metadata). */
export const XATTR_VALUE_BYTES_MAX = 4096;
/** The capacity statfs reports: the cluster's free space is not known to a mount. */
export const STATFS_CAPACITY_BYTES_DEFAULT = 2 ** 50;
/** Names an unlinked file that is still open gets until its last close. */
export const UNLINKED_PREFIX = ".kiseki-unlinked-";

const BLOCK_BYTES = 4096;
/** st_blksize: tools size their buffers from it; a FUSE write carries up to 1 MiB. */
const IO_BLOCK_BYTES = 1 << 20;
const LISTING_PAGE = 1000;
const ENCODER = new TextEncoder();
const ROOT_CALLER: Caller = { uid: 0, gid: 0, gids: [] };

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_EXCL = 0o200;

/** errno of each nfsstat3 BucketFs raises. */
const ERRNO_OF_NFS: Record<number, number> = {
  1: abi.EPERM,
  2: abi.ENOENT,
  5: abi.EIO,
  6: abi.ENXIO,
  13: abi.EACCES,
  17: abi.EEXIST,
  18: abi.EXDEV,
  19: abi.ENODEV,
  20: abi.ENOTDIR,
  21: abi.EISDIR,
  22: abi.EINVAL,
  27: abi.EFBIG,
  28: abi.ENOSPC,
  30: abi.EROFS,
  31: abi.EMLINK,
  63: abi.ENAMETOOLONG,
  66: abi.ENOTEMPTY,
  69: abi.EDQUOT,
  70: abi.ENOENT, // a stale path is a file that is gone
  10001: abi.ESTALE,
  10002: abi.EIO,
  10003: abi.EINVAL,
  10004: abi.EOPNOTSUPP,
  10005: abi.ERANGE,
  10006: abi.EIO,
  10007: abi.EINVAL,
  10008: abi.EAGAIN,
};

/** The errno of a BucketFs or object engine failure. */
export function errnoOfNfs(e: unknown): number {
  if (e instanceof FuseError) return e.errno;
  return ERRNO_OF_NFS[nfsStatusOf(e)] ?? abi.EIO;
}

interface Inode {
  nodeid: bigint;
  node: FsNode;
  key: string;
  nlookup: number;
  opens: number;
  /** Unlinked while open: kept under a hidden name until the last close. */
  unlinked: boolean;
  /**
   * The file's other names known here (hard links): each maps to this node id, as the kernel
   * wants one inode for all of a file's names. `node` is the name operations go through; a
   * write through it reaches the others when it is committed.
   */
  others: FsNode[];
  /** Written through this mount since a read last committed (a commit asks the node). */
  dirty: boolean;
}

interface FileHandle {
  nodeid: bigint;
  writable: boolean;
}

interface DirHandle {
  nodeid: bigint;
  snapshot: { name: string; node: FsNode; ino: bigint; type: number }[] | null;
}

export interface KisekiFsOptions {
  backend: NfsObjectBackend;
  tenantId: Uint8Array;
  logger?: Logger;
  /** Reported by statfs as the file system's size. */
  capacityBytes?: number;
  /** Keeps an open file's chunk list for random reads (the cluster client; see file_reads). */
  readers?: FileReaders;
}

function keyOf(node: FsNode): string {
  return node.kind === "root" ? "/" : `${node.kind[0]}:${toHex(node.ns)}:${node.path}`;
}

function childOf(dir: FsNode, name: string, kind: "dir" | "object"): FsNode | null {
  if (dir.kind === "root") return null;
  if (dir.kind !== "dir") return null;
  return { kind, ns: dir.ns, path: dir.path === "" ? name : `${dir.path}/${name}` };
}

function typeBits(attr: FileAttr): number {
  return attr.type === "dir" ? abi.S_IFDIR : attr.type === "symlink" ? abi.S_IFLNK : abi.S_IFREG;
}

function direntType(attr: FileAttr | null, node: FsNode): number {
  if (attr !== null) {
    return attr.type === "dir" ? abi.DT_DIR : attr.type === "symlink" ? abi.DT_LNK : abi.DT_REG;
  }
  return node.kind === "object" ? abi.DT_REG : abi.DT_DIR;
}

export class KisekiFs implements RawFileSystem {
  readonly #fs: BucketFs;
  readonly #log: Logger | undefined;
  readonly #capacity: number;
  readonly #nodes = new Map<bigint, Inode>();
  readonly #byKey = new Map<string, bigint>();
  /** Files with more than one name, by fileid: a name looked up joins its file's node id. */
  readonly #byFileid = new Map<bigint, bigint>();
  readonly #files = new Map<bigint, FileHandle>();
  readonly #dirs = new Map<bigint, DirHandle>();
  readonly #locks = new LockTable();
  readonly #streams: HandleStreams;
  readonly #tenant: Uint8Array;
  #nextNode = 2n;
  #nextHandle = 1n;

  constructor(options: KisekiFsOptions) {
    this.#fs = new BucketFs({
      backend: options.backend,
      tenantId: options.tenantId,
      logger: options.logger,
    });
    this.#log = options.logger;
    this.#tenant = options.tenantId;
    this.#streams = new HandleStreams(options.backend, options.readers ?? null);
    this.#capacity = options.capacityBytes ?? STATFS_CAPACITY_BYTES_DEFAULT;
    const root: Inode = {
      nodeid: abi.FUSE_ROOT_ID,
      node: { kind: "root" },
      key: "/",
      nlookup: 1,
      opens: 0,
      unlinked: false,
      others: [],
      dirty: false,
    };
    this.#nodes.set(root.nodeid, root);
    this.#byKey.set(root.key, root.nodeid);
  }

  /** Node ids held (for tests: forgets bring it back down). */
  get nodeCount(): number {
    return this.#nodes.size;
  }

  // ---- node ids ------------------------------------------------------------------------------

  #inode(nodeid: bigint): Inode {
    const n = this.#nodes.get(nodeid);
    if (n === undefined) throw new FuseError(abi.ESTALE, `node ${nodeid} is not known`);
    return n;
  }

  #attr(attr: FileAttr, inode: Inode | null): abi.Attr {
    return {
      ino: attr.fileid,
      size: attr.size,
      blocks: Math.ceil(attr.size / 512),
      atimeMs: attr.atimeMs,
      mtimeMs: attr.mtimeMs,
      ctimeMs: attr.ctimeMs,
      mode: typeBits(attr) | (attr.mode & 0o7777),
      nlink: inode?.unlinked ? 0 : attr.nlink,
      uid: attr.uid,
      gid: attr.gid,
      blksize: IO_BLOCK_BYTES,
    };
  }

  /** Hands `node` to the kernel: its id, lookup count one higher. */
  #entry(node: FsNode, attr: FileAttr): Entry {
    const key = keyOf(node);
    let id = this.#byKey.get(key);
    let inode = id === undefined ? undefined : this.#nodes.get(id);
    if (inode === undefined && attr.nlink > 1 && node.kind === "object") {
      // Another name of a file this mount already has a node id for.
      const same = this.#byFileid.get(attr.fileid);
      inode = same === undefined ? undefined : this.#nodes.get(same);
      if (inode !== undefined) {
        inode.others.push(node);
        this.#byKey.set(key, inode.nodeid);
      }
    }
    if (inode === undefined) {
      if (this.#nodes.size >= FUSE_NODES_MAX) {
        throw new FuseError(abi.ENFILE, `more than ${FUSE_NODES_MAX} nodes in use`);
      }
      id = this.#nextNode++;
      inode = {
        nodeid: id,
        node,
        key,
        nlookup: 0,
        opens: 0,
        unlinked: false,
        others: [],
        dirty: false,
      };
      this.#nodes.set(id, inode);
      this.#byKey.set(key, id);
      if (attr.nlink > 1 && node.kind === "object") this.#byFileid.set(attr.fileid, id);
    }
    inode.nlookup++;
    return { nodeid: inode.nodeid, attr: this.#attr(attr, inode) };
  }

  #drop(inode: Inode): void {
    if (inode.nodeid === abi.FUSE_ROOT_ID || inode.nlookup > 0 || inode.opens > 0) return;
    this.#nodes.delete(inode.nodeid);
    if (this.#byKey.get(inode.key) === inode.nodeid) this.#byKey.delete(inode.key);
    for (const other of inode.others) {
      const k = keyOf(other);
      if (this.#byKey.get(k) === inode.nodeid) this.#byKey.delete(k);
    }
    for (const [fileid, id] of this.#byFileid) {
      if (id === inode.nodeid) this.#byFileid.delete(fileid);
    }
  }

  /**
   * `node` (one of the inode's names) is gone: the inode forgets it, and if it was the name
   * operations went through, the next name takes over. False when it had no other name.
   */
  #forgetName(inode: Inode, node: FsNode): boolean {
    const key = keyOf(node);
    if (this.#byKey.get(key) === inode.nodeid) this.#byKey.delete(key);
    const i = inode.others.findIndex((o) => keyOf(o) === key);
    if (i >= 0) {
      inode.others.splice(i, 1);
      return true;
    }
    if (key !== inode.key) return true;
    const next = inode.others.shift();
    if (next === undefined) return false;
    inode.node = next;
    inode.key = keyOf(next);
    this.#byKey.set(inode.key, inode.nodeid);
    return true;
  }

  forget(nodeid: bigint, nlookup: number): void {
    const inode = this.#nodes.get(nodeid);
    if (inode === undefined) return;
    inode.nlookup = Math.max(0, inode.nlookup - nlookup);
    this.#drop(inode);
  }

  #rekey(inode: Inode, node: FsNode): void {
    if (this.#byKey.get(inode.key) === inode.nodeid) this.#byKey.delete(inode.key);
    inode.node = node;
    inode.key = keyOf(node);
    this.#byKey.set(inode.key, inode.nodeid);
  }

  #caller(ctx: Context): Caller {
    return { uid: ctx.uid, gid: ctx.gid, gids: [] };
  }

  async #call<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof FuseError) throw e;
      const errno = errnoOfNfs(e);
      if (errno === abi.EIO) this.#log?.warn("fuse operation failed", { error: e as Error });
      throw new FuseError(errno, (e as Error).message);
    }
  }

  // ---- attributes and names ------------------------------------------------------------------

  lookup(ctx: Context, parent: bigint, name: string): Promise<Entry> {
    const dir = this.#inode(parent).node;
    return this.#call(async () => {
      if (name.startsWith(UNLINKED_PREFIX)) throw new FuseError(abi.ENOENT, "no such entry");
      const found = await this.#fs.lookup(dir, name, this.#caller(ctx));
      return this.#entry(found.node, found.attr);
    });
  }

  getattr(_ctx: Context, nodeid: bigint): Promise<abi.Attr> {
    const inode = this.#inode(nodeid);
    return this.#call(async () => this.#attr(await this.#fs.getattr(inode.node), inode));
  }

  setattr(ctx: Context, nodeid: bigint, c: SetAttrIn): Promise<abi.Attr> {
    const inode = this.#inode(nodeid);
    // A change through an open file was allowed when the file was opened (ftruncate).
    const viaHandle = c.fh !== undefined && this.#files.get(c.fh)?.writable === true;
    const caller = viaHandle && c.mode === undefined && c.uid === undefined &&
        c.gid === undefined
      ? ROOT_CALLER
      : this.#caller(ctx);
    const attr: SetAttr = {};
    if (c.mode !== undefined) attr.mode = c.mode;
    if (c.uid !== undefined) attr.uid = c.uid;
    if (c.gid !== undefined) attr.gid = c.gid;
    if (c.size !== undefined) attr.size = c.size;
    if (c.atimeMs !== undefined) attr.atime = c.atimeMs;
    if (c.mtimeMs !== undefined) attr.mtime = c.mtimeMs;
    if (c.size !== undefined) this.#streams.changed(nodeid);
    return this.#call(async () =>
      this.#attr(await this.#fs.setattr(inode.node, attr, caller, null), inode)
    );
  }

  readlink(_ctx: Context, nodeid: bigint): Promise<Uint8Array> {
    const inode = this.#inode(nodeid);
    return this.#call(async () => ENCODER.encode(await this.#fs.readlink(inode.node)));
  }

  mknod(ctx: Context, parent: bigint, name: string, mode: number): Promise<Entry> {
    if ((mode & abi.S_IFMT) !== abi.S_IFREG && (mode & abi.S_IFMT) !== 0) {
      return Promise.reject(new FuseError(abi.EPERM, "only regular files can be made"));
    }
    const dir = this.#inode(parent).node;
    return this.#call(async () => {
      const made = await this.#fs.create(dir, name, {
        mode: "guarded",
        attr: { mode: mode & 0o7777, uid: ctx.uid, gid: ctx.gid },
      }, this.#caller(ctx));
      return this.#entry(made.node, made.attr);
    });
  }

  mkdir(ctx: Context, parent: bigint, name: string, mode: number): Promise<Entry> {
    const dir = this.#inode(parent).node;
    return this.#call(async () => {
      const made = await this.#fs.mkdir(dir, name, { mode: mode & 0o7777 }, this.#caller(ctx));
      return this.#entry(made.node, made.attr);
    });
  }

  unlink(ctx: Context, parent: bigint, name: string): Promise<void> {
    const dir = this.#inode(parent).node;
    return this.#call(async () => {
      const child = childOf(dir, name, "object");
      const id = child === null ? undefined : this.#byKey.get(keyOf(child));
      const inode = id === undefined ? undefined : this.#nodes.get(id);
      if (
        inode !== undefined && inode.opens > 0 && !inode.unlinked && inode.others.length === 0
      ) {
        // Still open: it lives on under a hidden name until its last close (as NFS clients do).
        await this.#hide(inode, dir, name, this.#caller(ctx));
        return;
      }
      await this.#fs.remove(dir, name, this.#caller(ctx));
      if (inode !== undefined && child !== null) this.#forgetName(inode, child);
    });
  }

  /** Moves an open file out of sight: it is removed at its last close. */
  async #hide(inode: Inode, dir: FsNode, name: string, caller: Caller): Promise<void> {
    const hidden = `${UNLINKED_PREFIX}${inode.nodeid}`;
    await this.#fs.rename(dir, name, dir, hidden, caller);
    this.#rekey(inode, childOf(dir, hidden, "object")!);
    inode.unlinked = true;
  }

  rmdir(ctx: Context, parent: bigint, name: string): Promise<void> {
    const dir = this.#inode(parent).node;
    return this.#call(async () => {
      await this.#fs.rmdir(dir, name, this.#caller(ctx));
      const child = childOf(dir, name, "dir");
      if (child !== null) this.#byKey.delete(keyOf(child));
    });
  }

  symlink(ctx: Context, parent: bigint, name: string, target: string): Promise<Entry> {
    const dir = this.#inode(parent).node;
    return this.#call(async () => {
      const made = await this.#fs.symlink(dir, name, target, {}, this.#caller(ctx));
      return this.#entry(made.node, made.attr);
    });
  }

  rename(
    ctx: Context,
    parent: bigint,
    name: string,
    newParent: bigint,
    newName: string,
    flags: number,
  ): Promise<void> {
    const from = this.#inode(parent).node, to = this.#inode(newParent).node;
    const caller = this.#caller(ctx);
    return this.#call(async () => {
      const src = await this.#fs.lookup(from, name, caller);
      let dst: { node: FsNode } | null = null;
      try {
        dst = await this.#fs.lookup(to, newName, caller);
      } catch (e) {
        if (errnoOfNfs(e) !== abi.ENOENT) throw e;
      }
      if ((flags & abi.RENAME_NOREPLACE) !== 0 && dst !== null) {
        throw new FuseError(abi.EEXIST, "the target exists");
      }
      if ((flags & abi.RENAME_EXCHANGE) !== 0) {
        if (dst === null) throw new FuseError(abi.ENOENT, "nothing to exchange with");
        // Three moves through a hidden name: not atomic to other protocols, but to this mount
        // (the kernel holds both directories locked for the call).
        const tmp = `${UNLINKED_PREFIX}x${this.#nextHandle++}`;
        await this.#fs.rename(to, newName, to, tmp, caller);
        await this.#fs.rename(from, name, to, newName, caller);
        await this.#fs.rename(to, tmp, from, name, caller);
        const a = this.#moved(src.node, to, newName), b = this.#moved(dst.node, from, name);
        a?.();
        b?.();
        return;
      }
      if (dst !== null && keyOf(dst.node) !== keyOf(src.node)) {
        // A replaced file still open lives on, unlinked, until its last close.
        const id = this.#byKey.get(keyOf(dst.node));
        const replaced = id === undefined ? undefined : this.#nodes.get(id);
        if (replaced === undefined) this.#byKey.delete(keyOf(dst.node));
        else if (replaced.others.length > 0) this.#forgetName(replaced, dst.node);
        else if (replaced.opens > 0 && dst.node.kind === "object") {
          await this.#hide(replaced, to, newName, caller);
        } else this.#byKey.delete(keyOf(dst.node));
      }
      await this.#fs.rename(from, name, to, newName, caller);
      this.#moved(src.node, to, newName)?.();
    });
  }

  /**
   * What renaming `node` to `name` in `dir` does to node ids: the moved one (and, for a
   * directory, every node under it) now names the new path. Returned as a step so an
   * exchange computes both before applying either.
   */
  #moved(node: FsNode, dir: FsNode, name: string): (() => void) | null {
    if (node.kind === "root") return null;
    const target = childOf(dir, name, node.kind);
    if (target === null || target.kind === "root") return null;
    const moves: [Inode, FsNode][] = [];
    const renamedLinks: [Inode, FsNode, FsNode][] = [];
    const oldPrefix = `${node.path}/`;
    const ns = toHex(node.ns);
    for (const inode of this.#nodes.values()) {
      for (const other of inode.others) {
        // A hard link's other name moved (a directory holding one is not followed here).
        if (node.kind === "object" && keyOf(other) === keyOf(node)) {
          renamedLinks.push([inode, other, target]);
        }
      }
      const n = inode.node;
      if (n.kind === "root" || toHex(n.ns) !== ns) continue;
      if (n.path === node.path && n.kind === node.kind) {
        moves.push([inode, target]);
      } else if (node.kind === "dir" && n.path.startsWith(oldPrefix)) {
        moves.push([inode, {
          kind: n.kind,
          ns: target.ns,
          path: `${target.path}/${n.path.slice(oldPrefix.length)}`,
        }]);
      }
    }
    return () => {
      for (const [inode] of moves) {
        if (this.#byKey.get(inode.key) === inode.nodeid) this.#byKey.delete(inode.key);
      }
      for (const [inode, n] of moves) this.#rekey(inode, n);
      for (const [inode, from, to] of renamedLinks) {
        const i = inode.others.indexOf(from);
        if (i < 0) continue;
        if (this.#byKey.get(keyOf(from)) === inode.nodeid) this.#byKey.delete(keyOf(from));
        inode.others[i] = to;
        this.#byKey.set(keyOf(to), inode.nodeid);
      }
    };
  }

  link(ctx: Context, nodeid: bigint, newParent: bigint, newName: string): Promise<Entry> {
    const inode = this.#inode(nodeid);
    const dir = this.#inode(newParent).node;
    return this.#call(async () => {
      if (newName.startsWith(UNLINKED_PREFIX)) throw new FuseError(abi.EPERM, "a reserved name");
      if (inode.unlinked) throw new FuseError(abi.ENOENT, "the file was unlinked");
      if (inode.node.kind !== "object") throw new FuseError(abi.EPERM, "not a file");
      // What this handle wrote is the content the new name shares.
      await this.#fs.commit(inode.node);
      const attr = await this.#fs.link(inode.node, dir, newName, this.#caller(ctx));
      const node = childOf(dir, newName, "object")!;
      // The same node id for both names: the kernel's inode for the file gets a second dentry.
      inode.others.push(node);
      this.#byKey.set(keyOf(node), inode.nodeid);
      this.#byFileid.set(attr.fileid, inode.nodeid);
      inode.nlookup++;
      return { nodeid: inode.nodeid, attr: this.#attr(attr, inode) };
    });
  }

  // ---- files ---------------------------------------------------------------------------------

  #newHandle(): bigint {
    if (this.#files.size + this.#dirs.size >= FUSE_HANDLES_MAX) {
      throw new FuseError(abi.ENFILE, `more than ${FUSE_HANDLES_MAX} open files`);
    }
    return this.#nextHandle++;
  }

  open(_ctx: Context, nodeid: bigint, flags: number): Promise<Opened> {
    const inode = this.#inode(nodeid);
    return this.#call(async () => {
      const attr = await this.#fs.getattr(inode.node);
      if (attr.type === "dir") throw new FuseError(abi.EISDIR, "is a directory");
      return this.#opened(inode, flags);
    });
  }

  #opened(inode: Inode, flags: number): Opened {
    const fh = this.#newHandle();
    const acc = flags & O_ACCMODE;
    this.#files.set(fh, { nodeid: inode.nodeid, writable: acc === O_WRONLY || acc === O_RDWR });
    inode.opens++;
    // No FOPEN_KEEP_CACHE: each open drops cached pages (close-to-open consistency).
    return { fh, openFlags: 0 };
  }

  create(
    ctx: Context,
    parent: bigint,
    name: string,
    mode: number,
    flags: number,
  ): Promise<{ entry: Entry; opened: Opened }> {
    const dir = this.#inode(parent).node;
    const caller = this.#caller(ctx);
    return this.#call(async () => {
      let made: { node: FsNode; attr: FileAttr };
      try {
        made = await this.#fs.create(dir, name, {
          mode: "guarded",
          attr: { mode: mode & 0o7777, uid: ctx.uid, gid: ctx.gid },
        }, caller);
      } catch (e) {
        if (errnoOfNfs(e) !== abi.EEXIST || (flags & O_EXCL) !== 0) throw e;
        made = await this.#fs.lookup(dir, name, caller);
        if (made.attr.type === "dir") throw new FuseError(abi.EISDIR, "is a directory");
      }
      const entry = this.#entry(made.node, made.attr);
      return { entry, opened: this.#opened(this.#inode(entry.nodeid), flags) };
    });
  }

  #file(fh: bigint, nodeid: bigint): Inode {
    const h = this.#files.get(fh);
    if (h === undefined || h.nodeid !== nodeid) throw new FuseError(abi.EBADF, "not open");
    return this.#inode(nodeid);
  }

  read(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: number,
    size: number,
  ): Promise<Uint8Array> {
    const inode = this.#file(fh, nodeid);
    return this.#call(async () => {
      const node = inode.node;
      if (node.kind === "object") {
        // This file's pending writes first (a write landing meanwhile marks it again).
        if (inode.dirty) {
          inode.dirty = false;
          try {
            await this.#fs.commit(node);
          } catch (e) {
            inode.dirty = true;
            throw e;
          }
        }
        const ref = { tenantId: this.#tenant, id: node.ns };
        const got = await this.#streams.read(fh, nodeid, ref, node.path, offset, size) ??
          await this.#streams.readAt(fh, nodeid, ref, node.path, offset, size);
        if (got !== null) return got;
      }
      // The kernel takes a short read for the end of the file: read until full or EOF.
      const parts: Uint8Array[] = [];
      let got = 0;
      for (;;) {
        const r = await this.#fs.read(inode.node, offset + got, size - got, ROOT_CALLER);
        if (r.data.length > 0) parts.push(r.data);
        got += r.data.length;
        if (r.eof || got >= size || r.data.length === 0) break;
      }
      if (parts.length === 1) return parts[0]!;
      const out = new Uint8Array(got);
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    });
  }

  write(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: number,
    data: Uint8Array,
  ): Promise<number> {
    const inode = this.#file(fh, nodeid);
    // The request buffer goes back to the pool once this answers: keep a copy.
    const copy = data.slice();
    this.#streams.changed(nodeid);
    inode.dirty = true;
    return this.#call(async () => {
      await this.#fs.write(inode.node, offset, copy, false, ROOT_CALLER);
      inode.dirty = true;
      return copy.length;
    });
  }

  flush(_ctx: Context, nodeid: bigint, fh: bigint, lockOwner: bigint): Promise<void> {
    const inode = this.#file(fh, nodeid);
    // close(2) drops the closer's fcntl locks; and what was written is stored before close
    // returns, so S3 and NFS (and the next open) see it.
    this.#locks.releaseOwner(nodeid, lockOwner, false);
    return this.#call(() => this.#fs.commit(inode.node));
  }

  release(nodeid: bigint, fh: bigint, flockOwner: bigint | null): Promise<void> {
    const h = this.#files.get(fh);
    if (h === undefined) return Promise.resolve();
    this.#files.delete(fh);
    this.#streams.close(fh);
    if (flockOwner !== null) this.#locks.releaseOwner(nodeid, flockOwner, true);
    const inode = this.#nodes.get(nodeid);
    if (inode === undefined) return Promise.resolve();
    inode.opens--;
    return this.#call(async () => {
      try {
        await this.#fs.commit(inode.node);
        if (inode.unlinked && inode.opens === 0) await this.#removeUnlinked(inode);
      } finally {
        this.#drop(inode);
      }
    });
  }

  async #removeUnlinked(inode: Inode): Promise<void> {
    const node = inode.node;
    if (node.kind !== "object") return;
    const i = node.path.lastIndexOf("/");
    const dir: FsNode = { kind: "dir", ns: node.ns, path: i < 0 ? "" : node.path.slice(0, i) };
    await this.#fs.remove(dir, node.path.slice(i + 1), ROOT_CALLER);
    if (this.#byKey.get(inode.key) === inode.nodeid) this.#byKey.delete(inode.key);
  }

  fsync(_ctx: Context, nodeid: bigint, fh: bigint): Promise<void> {
    const inode = this.#file(fh, nodeid);
    return this.#call(() => this.#fs.commit(inode.node));
  }

  fallocate(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: number,
    length: number,
    mode: number,
  ): Promise<void> {
    const inode = this.#file(fh, nodeid);
    if ((mode & ~abi.FALLOC_FL_KEEP_SIZE) !== 0) {
      return Promise.reject(new FuseError(abi.EOPNOTSUPP, "only plain allocation"));
    }
    return this.#call(async () => {
      const attr = await this.#fs.getattr(inode.node);
      // Objects have no preallocation: space is taken when bytes are stored. Growing the
      // size (without KEEP_SIZE) is a truncate up.
      if ((mode & abi.FALLOC_FL_KEEP_SIZE) === 0 && offset + length > attr.size) {
        await this.setattr(ctx, nodeid, { size: offset + length, fh });
      }
    });
  }

  lseek(
    _ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: number,
    whence: number,
  ): Promise<number> {
    const inode = this.#file(fh, nodeid);
    return this.#call(async () => {
      const { size } = await this.#fs.getattr(inode.node);
      // An object has no holes: all of it is data, and the only hole is past its end.
      if (whence === abi.SEEK_DATA || whence === abi.SEEK_HOLE) {
        if (offset >= size) throw new FuseError(abi.ENXIO, "past the end of the file");
        return whence === abi.SEEK_DATA ? offset : size;
      }
      throw new FuseError(abi.EINVAL, `whence ${whence}`);
    });
  }

  // ---- directories ---------------------------------------------------------------------------

  opendir(_ctx: Context, nodeid: bigint): Promise<Opened> {
    this.#inode(nodeid);
    const fh = this.#newHandle();
    this.#dirs.set(fh, { nodeid, snapshot: null });
    return Promise.resolve({ fh, openFlags: 0 });
  }

  /** The whole listing, taken when a read starts at offset 0, so offsets stay stable. */
  async #snapshot(ctx: Context, dir: FsNode): Promise<DirHandle["snapshot"] & object> {
    const out: NonNullable<DirHandle["snapshot"]> = [];
    let cookie = 0n;
    for (;;) {
      const page = await this.#fs.readdir(dir, cookie, LISTING_PAGE, false, this.#caller(ctx));
      for (const e of page.entries) {
        cookie = e.cookie;
        if (e.name.startsWith(UNLINKED_PREFIX)) continue;
        if (out.length >= DIR_SNAPSHOT_ENTRIES_MAX) {
          throw new FuseError(abi.EFBIG, `more than ${DIR_SNAPSHOT_ENTRIES_MAX} entries`);
        }
        out.push({ name: e.name, node: e.node, ino: e.fileid, type: direntType(null, e.node) });
      }
      if (page.eof || page.entries.length === 0) return out;
    }
  }

  readdir(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    max: number,
    plus: boolean,
  ): Promise<DirEntryOut[]> {
    const h = this.#dirs.get(fh);
    if (h === undefined || h.nodeid !== nodeid) {
      return Promise.reject(new FuseError(abi.EBADF, "not open"));
    }
    const dir = this.#inode(nodeid).node;
    return this.#call(async () => {
      if (offset === 0n || h.snapshot === null) h.snapshot = await this.#snapshot(ctx, dir);
      const out: DirEntryOut[] = [];
      for (let i = Number(offset); i < h.snapshot.length && out.length < max; i++) {
        const e = h.snapshot[i]!;
        const off = BigInt(i + 1);
        if (!plus || e.name === "." || e.name === "..") {
          out.push({ name: e.name, ino: e.ino, type: e.type, off, entry: plus ? null : undefined });
          continue;
        }
        let attr: FileAttr;
        try {
          attr = await this.#fs.getattr(e.node);
        } catch (err) {
          if (errnoOfNfs(err) === abi.ENOENT) continue; // gone since the snapshot
          throw err;
        }
        out.push({
          name: e.name,
          ino: attr.fileid,
          type: direntType(attr, e.node),
          off,
          entry: this.#entry(e.node, attr),
        });
      }
      return out;
    });
  }

  releasedir(_nodeid: bigint, fh: bigint): Promise<void> {
    this.#dirs.delete(fh);
    return Promise.resolve();
  }

  fsyncdir(): Promise<void> {
    // Directory changes are committed by the engine before their calls answer.
    return Promise.resolve();
  }

  // ---- the rest ------------------------------------------------------------------------------

  statfs(): Promise<abi.StatFs> {
    return this.#call(async () => {
      const { bytes, objects } = await this.#fs.usage();
      const blocks = Math.ceil(this.#capacity / BLOCK_BYTES);
      const used = Math.min(blocks, Math.ceil(bytes / BLOCK_BYTES));
      return {
        blocks,
        bfree: blocks - used,
        bavail: blocks - used,
        files: objects + 1_000_000_000,
        ffree: 1_000_000_000,
        bsize: BLOCK_BYTES,
        namelen: 255,
        frsize: BLOCK_BYTES,
      };
    });
  }

  access(ctx: Context, nodeid: bigint, mask: number): Promise<void> {
    const inode = this.#inode(nodeid);
    return this.#call(async () => {
      const attr = await this.#fs.getattr(inode.node);
      // ACCESS3 bits: READ 1, LOOKUP 2, MODIFY 4, EXECUTE 0x20.
      let asked = 0;
      if (mask & 4) asked |= 0x01;
      if (mask & 2) asked |= 0x04;
      if (mask & 1) asked |= attr.type === "dir" ? 0x02 : 0x20;
      if (this.#fs.access(attr, this.#caller(ctx), asked) !== asked) {
        throw new FuseError(abi.EACCES, "access denied");
      }
    });
  }

  #xattrName(name: string): void {
    if (!name.startsWith("user.")) {
      throw new FuseError(abi.EOPNOTSUPP, "only user.* extended attributes are kept");
    }
  }

  getxattr(_ctx: Context, nodeid: bigint, name: string): Promise<Uint8Array> {
    const inode = this.#inode(nodeid);
    // The kernel asks for security.capability before writes: no, quickly.
    if (!name.startsWith("user.")) return Promise.reject(new FuseError(abi.ENODATA, "none"));
    return this.#call(async () => {
      const v = (await this.#fs.xattrs(inode.node)).get(name.slice(5));
      if (v === undefined) throw new FuseError(abi.ENODATA, "no such attribute");
      return v;
    });
  }

  listxattr(_ctx: Context, nodeid: bigint): Promise<string[]> {
    const inode = this.#inode(nodeid);
    return this.#call(async () =>
      [...(await this.#fs.xattrs(inode.node)).keys()].map((n) => `user.${n}`)
    );
  }

  setxattr(
    ctx: Context,
    nodeid: bigint,
    name: string,
    value: Uint8Array,
    flags: number,
  ): Promise<void> {
    const inode = this.#inode(nodeid);
    return this.#call(async () => {
      this.#xattrName(name);
      if (value.length > XATTR_VALUE_BYTES_MAX) {
        throw new FuseError(abi.E2BIG, `values hold at most ${XATTR_VALUE_BYTES_MAX} bytes`);
      }
      const short = name.slice(5);
      if (flags & (abi.XATTR_CREATE | abi.XATTR_REPLACE)) {
        const has = (await this.#fs.xattrs(inode.node)).has(short);
        if ((flags & abi.XATTR_CREATE) && has) throw new FuseError(abi.EEXIST, "exists");
        if ((flags & abi.XATTR_REPLACE) && !has) throw new FuseError(abi.ENODATA, "absent");
      }
      await this.#fs.setXattrs(inode.node, { [short]: value }, this.#caller(ctx));
    });
  }

  removexattr(ctx: Context, nodeid: bigint, name: string): Promise<void> {
    const inode = this.#inode(nodeid);
    return this.#call(async () => {
      this.#xattrName(name);
      const short = name.slice(5);
      if (!(await this.#fs.xattrs(inode.node)).has(short)) {
        throw new FuseError(abi.ENODATA, "no such attribute");
      }
      await this.#fs.setXattrs(inode.node, { [short]: null }, this.#caller(ctx));
    });
  }

  getlk(_ctx: Context, nodeid: bigint, req: LockRequest): Promise<abi.FileLock> {
    const held = this.#locks.test(nodeid, { ...req.lock, owner: req.owner, flock: req.flock });
    return Promise.resolve({ start: held.start, end: held.end, type: held.type, pid: held.pid });
  }

  async setlk(ctx: Context, nodeid: bigint, req: LockRequest, wait: boolean): Promise<void> {
    const ask = { ...req.lock, owner: req.owner, flock: req.flock, pid: req.lock.pid || ctx.pid };
    if (wait) await this.#locks.setWait(nodeid, ask, ctx.signal);
    else this.#locks.set(nodeid, ask);
  }

  async destroy(): Promise<void> {
    for (const inode of this.#nodes.values()) {
      if (!inode.unlinked) continue;
      try {
        await this.#removeUnlinked(inode);
      } catch (e) {
        this.#log?.warn("an unlinked file was not removed", { error: e as Error });
      }
    }
    this.#streams.closeAll();
    await this.#fs.close();
  }
}
