// The file-system API the FUSE protocol server calls: inode level (node ids the kernel holds
// lookup counts on), one method per operation, errors as FuseError with an errno. Anything
// may implement it; KisekiFs does over the shared bucket namespace.

import type { Attr, FileLock, StatFs } from "./abi.ts";

/** A refusal the kernel gets as -errno. */
export class FuseError extends Error {
  override name = "FuseError";
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Who asks (from fuse_in_header), and the signal an INTERRUPT of this request aborts. */
export interface Context {
  uid: number;
  gid: number;
  pid: number;
  signal: AbortSignal;
}

/** A node handed to the kernel: its lookup count goes up by one. */
export interface Entry {
  nodeid: bigint;
  attr: Attr;
}

export interface SetAttrIn {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atimeMs?: number | "now";
  mtimeMs?: number | "now";
  /** The open file the change came through (ftruncate, fchmod), when there is one. */
  fh?: bigint;
}

export interface Opened {
  fh: bigint;
  /** FOPEN_* flags. */
  openFlags: number;
}

export interface DirEntryOut {
  name: string;
  ino: bigint;
  /** DT_* type. */
  type: number;
  /** The offset a readdir resuming after this entry passes. */
  off: bigint;
  /** For readdirplus (null: the kernel gets no entry for it, as for "." and ".."). */
  entry?: Entry | null;
}

export interface LockRequest {
  fh: bigint;
  owner: bigint;
  lock: FileLock;
  /** flock(2) rather than fcntl(2) locks. */
  flock: boolean;
}

export interface RawFileSystem {
  lookup(ctx: Context, parent: bigint, name: string): Promise<Entry>;
  forget(nodeid: bigint, nlookup: number): void;
  getattr(ctx: Context, nodeid: bigint, fh: bigint | null): Promise<Attr>;
  setattr(ctx: Context, nodeid: bigint, changes: SetAttrIn): Promise<Attr>;
  readlink(ctx: Context, nodeid: bigint): Promise<Uint8Array>;
  mknod(ctx: Context, parent: bigint, name: string, mode: number, rdev: number): Promise<Entry>;
  mkdir(ctx: Context, parent: bigint, name: string, mode: number): Promise<Entry>;
  unlink(ctx: Context, parent: bigint, name: string): Promise<void>;
  rmdir(ctx: Context, parent: bigint, name: string): Promise<void>;
  symlink(ctx: Context, parent: bigint, name: string, target: string): Promise<Entry>;
  rename(
    ctx: Context,
    parent: bigint,
    name: string,
    newParent: bigint,
    newName: string,
    flags: number,
  ): Promise<void>;
  link(ctx: Context, nodeid: bigint, newParent: bigint, newName: string): Promise<Entry>;
  open(ctx: Context, nodeid: bigint, flags: number): Promise<Opened>;
  create(
    ctx: Context,
    parent: bigint,
    name: string,
    mode: number,
    flags: number,
  ): Promise<{ entry: Entry; opened: Opened }>;
  read(ctx: Context, nodeid: bigint, fh: bigint, offset: number, size: number): Promise<Uint8Array>;
  write(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: number,
    data: Uint8Array,
  ): Promise<number>;
  flush(ctx: Context, nodeid: bigint, fh: bigint, lockOwner: bigint): Promise<void>;
  release(nodeid: bigint, fh: bigint, flockOwner: bigint | null): Promise<void>;
  fsync(ctx: Context, nodeid: bigint, fh: bigint, dataOnly: boolean): Promise<void>;
  opendir(ctx: Context, nodeid: bigint): Promise<Opened>;
  /** Entries after `offset`, at most `max` (the server packs what fits, forgets the rest). */
  readdir(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: bigint,
    max: number,
    plus: boolean,
  ): Promise<DirEntryOut[]>;
  releasedir(nodeid: bigint, fh: bigint): Promise<void>;
  fsyncdir(ctx: Context, nodeid: bigint, fh: bigint): Promise<void>;
  statfs(ctx: Context, nodeid: bigint): Promise<StatFs>;
  access(ctx: Context, nodeid: bigint, mask: number): Promise<void>;
  getxattr(ctx: Context, nodeid: bigint, name: string): Promise<Uint8Array>;
  listxattr(ctx: Context, nodeid: bigint): Promise<string[]>;
  setxattr(
    ctx: Context,
    nodeid: bigint,
    name: string,
    value: Uint8Array,
    flags: number,
  ): Promise<void>;
  removexattr(ctx: Context, nodeid: bigint, name: string): Promise<void>;
  fallocate(
    ctx: Context,
    nodeid: bigint,
    fh: bigint,
    offset: number,
    length: number,
    mode: number,
  ): Promise<void>;
  lseek(ctx: Context, nodeid: bigint, fh: bigint, offset: number, whence: number): Promise<number>;
  getlk(ctx: Context, nodeid: bigint, req: LockRequest): Promise<FileLock>;
  setlk(ctx: Context, nodeid: bigint, req: LockRequest, wait: boolean): Promise<void>;
  /** The connection ended (DESTROY or unmount): store what is pending. */
  destroy(): Promise<void>;
}
