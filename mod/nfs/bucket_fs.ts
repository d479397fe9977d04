// The file system NFS serves: a tenant's buckets as top-level directories and their object
// keys as paths, so S3 and NFS see one namespace. A file is an object; a directory is a key
// prefix ending in "/" (with an empty marker object "dir/" when it has nothing else in it);
// a symlink is an object whose mode (user metadata `mode`, as s3fs writes it) says S_IFLNK.
// Owners, modes and mtimes are the user metadata `uid`, `gid`, `mode`, `mtime`, so an object
// written over S3 reads with defaults and one written over NFS keeps what the client set.
//
// Hard links (DESIGN): a file with several names is several objects, one per name, so S3
// lists and reads each name as an ordinary object. They share one content (the same chunk
// references: a link, a write's propagation and a rename copy references, never bytes) and
// carry two gateway-private metadata entries: ":nfs-inode", the file's identity (its fileid,
// the same under every name), and ":nfs-links", every name of the file (its link count).
// A change stored under one name (a write when committed, a setattr) is copied to the other
// names that still carry the same inode; unlinking a name drops it from the others' lists.
// An S3 PUT to one name replaces that object, so it leaves the link (as replacing a name by
// rename does in POSIX). The names are updated one after another, not atomically: a crash
// between two leaves a name with its previous content or list, never a lost file.
// Rename moves the composition (chunk references) to the new key and deletes the old one:
// no data is read or written, however large the file.

import { toHex } from "../base/mod.ts";
import type {
  Body,
  CopyOptions,
  GetObjectOptions,
  GetObjectResult,
  ListObjectsOptions,
  ListObjectsResult,
  Metadata,
  Namespace,
  NamespaceKind,
  NamespaceRef,
  ObjectInfo,
  PutObjectOptions,
  PutObjectResult,
} from "../composition/mod.ts";
import { CompositionError, namespaceNameProblem } from "../composition/mod.ts";
import { COMPOSITION_KEY_BYTES_MAX } from "../composition/composition.ts";
import type { Logger } from "../obs/mod.ts";
import {
  NFS3ERR_ACCES,
  NFS3ERR_BAD_COOKIE,
  NFS3ERR_EXIST,
  NFS3ERR_FBIG,
  NFS3ERR_INVAL,
  NFS3ERR_ISDIR,
  NFS3ERR_MLINK,
  NFS3ERR_NAMETOOLONG,
  NFS3ERR_NOENT,
  NFS3ERR_NOT_SYNC,
  NFS3ERR_NOTDIR,
  NFS3ERR_NOTEMPTY,
  NFS3ERR_NOTSUPP,
  NFS3ERR_PERM,
  NFS3ERR_STALE,
  NFS3ERR_XDEV,
  NfsError,
} from "./errors.ts";
import { fileIdOf, type FsNode } from "./file_handle.ts";
import { collect, FileWrites, notFound, WRITE_IDLE_MS } from "./file_writes.ts";
import { ReadStreams } from "./read_streams.ts";

/** The object interface the NFS gateway sees (ObjectEngine satisfies it). */
export interface NfsObjectBackend {
  namespace(tenantId: Uint8Array, name: string): NamespaceRef;
  createNamespace(tenantId: Uint8Array, name: string, kind?: NamespaceKind): Promise<Namespace>;
  deleteNamespace(ns: NamespaceRef): Promise<void>;
  getNamespace(ns: NamespaceRef): Promise<Namespace>;
  listNamespaces(tenantId: Uint8Array): Promise<Namespace[]>;
  putObject(
    ns: NamespaceRef,
    key: string,
    body: Body,
    options?: PutObjectOptions,
  ): Promise<PutObjectResult>;
  headObject(ns: NamespaceRef, key: string): Promise<ObjectInfo>;
  getObject(ns: NamespaceRef, key: string, options?: GetObjectOptions): Promise<GetObjectResult>;
  deleteObject(ns: NamespaceRef, key: string): Promise<{ deleted: boolean }>;
  copyObject(
    source: NamespaceRef,
    sourceKey: string,
    target: NamespaceRef,
    targetKey: string,
    options?: CopyOptions,
  ): Promise<PutObjectResult>;
  listObjects(ns: NamespaceRef, options?: ListObjectsOptions): Promise<ListObjectsResult>;
}

/** A file name's bytes at most (NAME_MAX). */
export const NAME_BYTES_MAX = 255;
/** A symlink target's bytes at most (PATH_MAX). */
export const SYMLINK_TARGET_BYTES_MAX = 4096;
/**
 * Readdir cookies remembered (oldest first out; a forgotten one is NFS3ERR_BAD_COOKIE, and
 * the client lists the directory again); each holds a directory's path and a name.
 */
export const READDIR_COOKIES_MAX = 1 << 16;
/** Objects one directory rename may move (each is a copy and a delete). */
export const RENAME_KEYS_MAX = 10_000;
/**
 * The largest hole a write or truncate may open past a file's end. An object has no holes:
 * a hole is stored as zeros (deduplicated, but hashed and sealed), so a client cannot make
 * the gateway write terabytes with one call.
 */
export const WRITE_HOLE_BYTES_MAX = 1 << 30;
/** Names one file may have (PATHCONF linkmax). */
export const LINKS_MAX = 64;
/** The bytes of a file's list of names at most (it rides in each name's metadata). */
export const LINK_NAMES_BYTES_MAX = 8 * 1024;
/** Buckets whose change time is tracked (for directory mtimes). */
export const TRACKED_BUCKETS_MAX = 4096;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

const MODE_KEY = "mode";
const UID_KEY = "uid";
const GID_KEY = "gid";
const MTIME_KEY = "mtime";
/** Exclusive CREATE's verifier; gateway-private (":" is no x-amz-meta name). */
const VERIFIER_KEY = ":nfs-create-verifier";
/** Extended attributes (gateway-private, as the verifier). */
const XATTR_PREFIX = ":xattr:";
/** A linked file's identity (hex), the same under each of its names. */
const INODE_KEY = ":nfs-inode";
/** A linked file's names (JSON array of keys in its bucket). */
const LINKS_KEY = ":nfs-links";
const DEFAULT_CONTENT_TYPE = "application/octet-stream";

export type FileType = "dir" | "file" | "symlink";

export interface FileAttr {
  type: FileType;
  /** Permission bits (07777). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  fileid: bigint;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** What a caller may change (sattr3). */
export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: number | "now";
  mtime?: number | "now";
}

/** The caller (AUTH_SYS). */
export interface Caller {
  uid: number;
  gid: number;
  gids: readonly number[];
}

export interface DirEntry {
  name: string;
  node: FsNode;
  fileid: bigint;
  cookie: bigint;
  /** Present for readdirplus. */
  attr?: FileAttr;
}

export type CreateHow =
  | { mode: "unchecked" | "guarded"; attr: SetAttr }
  | { mode: "exclusive"; verifier: Uint8Array };

export const ACCESS_READ = 0x01;
export const ACCESS_LOOKUP = 0x02;
export const ACCESS_MODIFY = 0x04;
export const ACCESS_EXTEND = 0x08;
export const ACCESS_DELETE = 0x10;
export const ACCESS_EXECUTE = 0x20;

export interface BucketFsOptions {
  backend: NfsObjectBackend;
  tenantId: Uint8Array;
  logger?: Logger;
  now?: () => number;
  writeIdleMs?: number;
  /** Default WRITE_HOLE_BYTES_MAX. */
  writeHoleBytesMax?: number;
}

function childPath(dir: string, name: string): string {
  return dir === "" ? name : `${dir}/${name}`;
}

function parentPath(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

const hex = toHex;

const ENCODER = new TextEncoder();

/** Why `name` cannot name an entry, as an NfsError, or null. */
function checkName(name: string): void {
  const bytes = ENCODER.encode(name).length;
  if (bytes > NAME_BYTES_MAX) throw new NfsError(NFS3ERR_NAMETOOLONG, `name of ${bytes} bytes`);
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw new NfsError(NFS3ERR_INVAL, `${JSON.stringify(name)} cannot name an entry`);
  }
}

function checkKey(key: string): void {
  if (ENCODER.encode(key).length + 1 > COMPOSITION_KEY_BYTES_MAX) {
    throw new NfsError(
      NFS3ERR_NAMETOOLONG,
      `a path longer than ${COMPOSITION_KEY_BYTES_MAX} bytes`,
    );
  }
}

/** S3's bucket naming (a top-level directory is a bucket). */
function bucketNameProblem(name: string): string | null {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) || name.includes("..")) {
    return "a top-level directory is a bucket: 3..63 of a-z 0-9 . -, starting and ending alnum";
  }
  return namespaceNameProblem(name);
}

function checkHole(size: number, offset: number, max: number): void {
  if (offset - size > max) {
    throw new NfsError(
      NFS3ERR_FBIG,
      `a hole of ${offset - size} bytes past the end (at most ${max})`,
    );
  }
}

/** The names of a linked file, or null for a file with one name. */
function linksOf(m: Metadata): string[] | null {
  const raw = m[LINKS_KEY];
  if (raw === undefined) return null;
  try {
    const v: unknown = JSON.parse(raw);
    return Array.isArray(v) && v.every((x) => typeof x === "string") ? v : null;
  } catch {
    return null;
  }
}

function parseNumber(v: string | undefined): number | undefined {
  if (v === undefined || !/^[0-9]+(\.[0-9]+)?$/.test(v)) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

export class BucketFs {
  readonly #backend: NfsObjectBackend;
  readonly #tenant: Uint8Array;
  readonly #log: Logger | undefined;
  readonly #now: () => number;
  readonly #holeBytesMax: number;
  readonly #cookies = new Map<bigint, { dir: string; after: string }>();
  #nextCookie = 3n;
  readonly #files: FileWrites;
  readonly #reads: ReadStreams;
  /** Per bucket: the objects/bytes last seen and when they last changed. */
  readonly #bucketChange = new Map<string, { objects: number; bytes: number; changedMs: number }>();
  readonly #startedMs: number;
  #rootChangedMs: number;
  #bucketCount = -1;

  constructor(options: BucketFsOptions) {
    this.#backend = options.backend;
    this.#tenant = options.tenantId;
    this.#log = options.logger;
    this.#now = options.now ?? Date.now;
    this.#holeBytesMax = options.writeHoleBytesMax ?? WRITE_HOLE_BYTES_MAX;
    this.#reads = new ReadStreams(this.#backend);
    this.#files = new FileWrites({
      backend: this.#backend,
      ref: (ns) => this.#ref(ns),
      logger: this.#log,
      now: this.#now,
      idleMs: options.writeIdleMs ?? WRITE_IDLE_MS,
      stored: (ns, path) => {
        this.#touchBucket(ns);
        // A write stored in the background reaches the file's other names too.
        this.#propagate(ns, path).catch((e) =>
          this.#log?.warn("nfs: copying a write to the other names of a file failed", {
            path,
            error: e,
          })
        );
      },
      metadataOf: (m) => ({ ...m, [MTIME_KEY]: (this.#now() / 1000).toFixed(3) }),
    });
    this.#startedMs = this.#now();
    this.#rootChangedMs = this.#startedMs;
  }

  #ref(ns: Uint8Array): NamespaceRef {
    return { tenantId: this.#tenant, id: ns };
  }

  /** The namespace id of this tenant's bucket `name`. */
  namespaceIdOf(name: string): Uint8Array {
    return this.#backend.namespace(this.#tenant, name).id;
  }

  // ---- attributes ----------------------------------------------------------------------------

  async getattr(node: FsNode): Promise<FileAttr> {
    if (node.kind === "root") return await this.#rootAttr();
    if (node.kind === "dir") return await this.#dirAttr(node);
    return await this.#objectAttr(node);
  }

  async #rootAttr(): Promise<FileAttr> {
    const buckets = await this.#buckets();
    if (buckets.length !== this.#bucketCount) {
      if (this.#bucketCount !== -1) this.#rootChangedMs = this.#now();
      this.#bucketCount = buckets.length;
    }
    return {
      type: "dir",
      mode: 0o755,
      nlink: 2 + buckets.length,
      uid: 0,
      gid: 0,
      size: 4096,
      fileid: 1n,
      atimeMs: this.#rootChangedMs,
      mtimeMs: this.#rootChangedMs,
      ctimeMs: this.#rootChangedMs,
    };
  }

  async #buckets(): Promise<Namespace[]> {
    const all = await this.#backend.listNamespaces(this.#tenant);
    return all.filter((n) => n.kind === "bucket").sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** When anything in the bucket last changed, as far as this gateway can tell. */
  async #bucketChangedMs(ns: Uint8Array): Promise<number> {
    let info: Namespace;
    try {
      info = await this.#backend.getNamespace(this.#ref(ns));
    } catch (e) {
      if (notFound(e)) throw new NfsError(NFS3ERR_STALE, "the bucket is gone");
      throw e;
    }
    const id = hex(ns);
    const seen = this.#bucketChange.get(id);
    if (seen === undefined) {
      if (this.#bucketChange.size >= TRACKED_BUCKETS_MAX) {
        this.#bucketChange.delete(this.#bucketChange.keys().next().value!);
      }
      const changedMs = Math.max(info.createdMs, this.#startedMs);
      this.#bucketChange.set(id, { objects: info.objects, bytes: info.bytes, changedMs });
      return changedMs;
    }
    if (seen.objects !== info.objects || seen.bytes !== info.bytes) {
      seen.objects = info.objects;
      seen.bytes = info.bytes;
      seen.changedMs = Math.max(this.#now(), seen.changedMs + 1);
    }
    return seen.changedMs;
  }

  #touchBucket(ns: Uint8Array): void {
    const seen = this.#bucketChange.get(hex(ns));
    if (seen !== undefined) seen.changedMs = Math.max(this.#now(), seen.changedMs + 1);
  }

  async #dirAttr(node: Extract<FsNode, { kind: "dir" }>): Promise<FileAttr> {
    const changedMs = await this.#bucketChangedMs(node.ns);
    let mode = 0o755, uid = 0, gid = 0, mtimeMs = changedMs;
    if (node.path !== "") {
      const marker = await this.#head(node.ns, `${node.path}/`);
      if (marker === null) {
        const listed = await this.#backend.listObjects(this.#ref(node.ns), {
          prefix: `${node.path}/`,
          maxKeys: 1,
        });
        if (listed.keyCount === 0) throw new NfsError(NFS3ERR_STALE, "the directory is gone");
      } else {
        const m = marker.metadata;
        mode = (parseNumber(m[MODE_KEY]) ?? mode) & 0o7777;
        uid = parseNumber(m[UID_KEY]) ?? uid;
        gid = parseNumber(m[GID_KEY]) ?? gid;
        mtimeMs = Math.max(mtimeMs, marker.modifiedMs);
      }
    }
    return {
      type: "dir",
      mode,
      nlink: 2,
      uid,
      gid,
      size: 4096,
      fileid: fileIdOf(node),
      atimeMs: mtimeMs,
      mtimeMs,
      ctimeMs: mtimeMs,
    };
  }

  async #head(ns: Uint8Array, key: string): Promise<ObjectInfo | null> {
    try {
      return await this.#backend.headObject(this.#ref(ns), key);
    } catch (e) {
      if (notFound(e)) return null;
      throw e;
    }
  }

  #objectAttrOf(node: FsNode, info: ObjectInfo): FileAttr {
    const m = info.metadata;
    const rawMode = parseNumber(m[MODE_KEY]);
    const type: FileType = rawMode !== undefined && (rawMode & S_IFMT) === S_IFLNK
      ? "symlink"
      : "file";
    const mtimeSeconds = parseNumber(m[MTIME_KEY]);
    let mtimeMs = mtimeSeconds === undefined ? info.modifiedMs : Math.round(mtimeSeconds * 1000);
    let size = info.size;
    const pending = node.kind === "object" ? this.#files.pending(node.ns, node.path) : null;
    if (pending !== null) {
      size = pending.size;
      mtimeMs = Math.max(mtimeMs, pending.lastWriteMs);
    }
    const inode = m[INODE_KEY];
    return {
      type,
      mode: rawMode === undefined ? (type === "symlink" ? 0o777 : 0o644) : rawMode & 0o7777,
      nlink: Math.max(1, linksOf(m)?.length ?? 1),
      uid: parseNumber(m[UID_KEY]) ?? 0,
      gid: parseNumber(m[GID_KEY]) ?? 0,
      size,
      fileid: inode === undefined || node.kind === "root"
        ? fileIdOf(node)
        : fileIdOf({ kind: "object", ns: node.ns, path: `\0inode\0${inode}` }),
      atimeMs: mtimeMs,
      mtimeMs,
      ctimeMs: Math.max(info.modifiedMs, mtimeMs),
    };
  }

  async #objectAttr(node: Extract<FsNode, { kind: "object" }>): Promise<FileAttr> {
    const info = await this.#head(node.ns, node.path);
    if (info === null) throw new NfsError(NFS3ERR_STALE, "the file is gone");
    return this.#objectAttrOf(node, info);
  }

  /** The ACCESS bits `caller` has on a node of `attr` (of those asked). */
  access(attr: FileAttr, caller: Caller, asked: number): number {
    const r = this.#permits(attr, caller, 4), w = this.#permits(attr, caller, 2);
    const x = this.#permits(attr, caller, 1);
    let granted = 0;
    if (r) granted |= ACCESS_READ;
    if (attr.type === "dir") {
      if (x) granted |= ACCESS_LOOKUP;
      if (w) granted |= ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE;
    } else {
      if (w) granted |= ACCESS_MODIFY | ACCESS_EXTEND;
      if (x) granted |= ACCESS_EXECUTE;
    }
    return granted & asked;
  }

  #permits(attr: FileAttr, caller: Caller, bit: number): boolean {
    if (caller.uid === 0) return bit !== 1 || attr.type === "dir" || (attr.mode & 0o111) !== 0;
    if (caller.uid === attr.uid) return ((attr.mode >> 6) & bit) !== 0;
    if (caller.gid === attr.gid || caller.gids.includes(attr.gid)) {
      return ((attr.mode >> 3) & bit) !== 0;
    }
    return (attr.mode & bit) !== 0;
  }

  #require(attr: FileAttr, caller: Caller, bit: number, what: string): void {
    if (!this.#permits(attr, caller, bit)) throw new NfsError(NFS3ERR_ACCES, what);
  }

  // ---- names ---------------------------------------------------------------------------------

  /** The node `name` names in directory `dir`, with its attributes. */
  async lookup(
    dir: FsNode,
    name: string,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    const dirAttr = await this.getattr(dir);
    if (dirAttr.type !== "dir") throw new NfsError(NFS3ERR_NOTDIR, "lookup in a non-directory");
    this.#require(dirAttr, caller, 1, "no search permission on the directory");
    if (name === ".") return { node: dir, attr: dirAttr };
    if (name === "..") {
      const parent = this.parentOf(dir);
      return { node: parent, attr: await this.getattr(parent) };
    }
    if (ENCODER.encode(name).length > NAME_BYTES_MAX) {
      throw new NfsError(NFS3ERR_NAMETOOLONG, "name too long");
    }
    if (name === "" || name.includes("/") || name.includes("\0")) {
      throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(name)}`);
    }
    const found = await this.#child(dir, name);
    if (found === null) throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(name)}`);
    return found;
  }

  parentOf(node: FsNode): FsNode {
    if (node.kind === "root" || (node.kind === "dir" && node.path === "")) return { kind: "root" };
    return { kind: "dir", ns: node.ns, path: parentPath(node.path) };
  }

  /** The entry `name` of `dir`, or null: a directory wins over an object of the same name. */
  async #child(dir: FsNode, name: string): Promise<{ node: FsNode; attr: FileAttr } | null> {
    if (dir.kind === "root") {
      if (bucketNameProblem(name) !== null) return null;
      const ref = this.#backend.namespace(this.#tenant, name);
      try {
        const ns = await this.#backend.getNamespace(ref);
        if (ns.kind !== "bucket") return null;
      } catch (e) {
        if (notFound(e)) return null;
        throw e;
      }
      const node: FsNode = { kind: "dir", ns: ref.id, path: "" };
      return { node, attr: await this.getattr(node) };
    }
    if (dir.kind !== "dir") return null;
    const path = childPath(dir.path, name);
    const asDir: FsNode = { kind: "dir", ns: dir.ns, path };
    const listed = await this.#backend.listObjects(this.#ref(dir.ns), {
      prefix: `${path}/`,
      maxKeys: 1,
    });
    if (listed.keyCount > 0) return { node: asDir, attr: await this.getattr(asDir) };
    const info = await this.#head(dir.ns, path);
    if (info === null) return null;
    const node: FsNode = { kind: "object", ns: dir.ns, path };
    return { node, attr: this.#objectAttrOf(node, info) };
  }

  // ---- directories ---------------------------------------------------------------------------

  #dirId(dir: FsNode): string {
    return dir.kind === "root" ? "/" : `${hex((dir as { ns: Uint8Array }).ns)}/${dir.path}`;
  }

  #cookieFor(dir: string, after: string): bigint {
    const cookie = this.#nextCookie++;
    this.#cookies.set(cookie, { dir, after });
    if (this.#cookies.size > READDIR_COOKIES_MAX) {
      this.#cookies.delete(this.#cookies.keys().next().value!);
    }
    return cookie;
  }

  /**
   * Up to `max` entries of `dir` after `cookie` (0: from the start; "." and ".." come first
   * as cookies 1 and 2). With `plus`, each entry carries its attributes.
   */
  async readdir(
    dir: FsNode,
    cookie: bigint,
    max: number,
    plus: boolean,
    caller: Caller,
  ): Promise<{ entries: DirEntry[]; eof: boolean }> {
    const dirAttr = await this.getattr(dir);
    if (dirAttr.type !== "dir") throw new NfsError(NFS3ERR_NOTDIR, "readdir of a non-directory");
    this.#require(dirAttr, caller, 4, "no read permission on the directory");
    const id = this.#dirId(dir);
    const entries: DirEntry[] = [];
    let after = "";
    if (cookie === 0n || cookie === 1n) {
      if (cookie === 0n) {
        entries.push({ name: ".", node: dir, fileid: dirAttr.fileid, cookie: 1n, attr: dirAttr });
      }
      const parent = this.parentOf(dir);
      const parentAttr = plus ? await this.getattr(parent) : undefined;
      entries.push({
        name: "..",
        node: parent,
        fileid: fileIdOf(parent),
        cookie: 2n,
        attr: parentAttr,
      });
    } else if (cookie !== 2n) {
      const known = this.#cookies.get(cookie);
      if (known === undefined || known.dir !== id) {
        throw new NfsError(NFS3ERR_BAD_COOKIE, `cookie ${cookie} is not one of this directory`);
      }
      after = known.after;
    }
    const room = Math.max(1, max - entries.length);
    if (dir.kind === "root") {
      const buckets = (await this.#buckets()).filter((b) => b.name > after);
      for (const b of buckets.slice(0, room)) {
        const node: FsNode = { kind: "dir", ns: b.id, path: "" };
        entries.push({
          name: b.name,
          node,
          fileid: fileIdOf(node),
          cookie: this.#cookieFor(id, b.name),
          attr: plus ? await this.getattr(node) : undefined,
        });
      }
      return { entries, eof: buckets.length <= room };
    }
    if (dir.kind !== "dir") throw new NfsError(NFS3ERR_NOTDIR, "readdir of a non-directory");
    const prefix = dir.path === "" ? "" : `${dir.path}/`;
    const listed = await this.#backend.listObjects(this.#ref(dir.ns), {
      prefix,
      delimiter: "/",
      startAfter: after === "" ? undefined : prefix + after,
      maxKeys: Math.min(room + 1, 1000),
    });
    // Objects and common prefixes merge in key order; a name both a file and a directory is
    // the directory, and the directory's own marker is no entry.
    const merged: { name: string; dir: boolean; after: string; size?: number }[] = [];
    for (const o of listed.objects) {
      const name = o.key.slice(prefix.length);
      if (name === "" || name.includes("/")) continue;
      merged.push({ name, dir: false, after: name });
    }
    for (const p of listed.commonPrefixes) {
      const name = p.slice(prefix.length, -1);
      if (name === "") continue;
      merged.push({ name, dir: true, after: `${name}/\u{10FFFF}` });
    }
    merged.sort((a, b) => (a.after < b.after ? -1 : a.after > b.after ? 1 : 0));
    const names = new Set(merged.filter((m) => m.dir).map((m) => m.name));
    let eof = !listed.isTruncated;
    for (const m of merged) {
      if (!m.dir && names.has(m.name)) continue;
      if (entries.length >= max) {
        eof = false;
        break;
      }
      const node: FsNode = m.dir
        ? { kind: "dir", ns: dir.ns, path: prefix + m.name }
        : { kind: "object", ns: dir.ns, path: prefix + m.name };
      let attr: FileAttr | undefined;
      if (plus) {
        try {
          attr = await this.getattr(node);
        } catch (e) {
          // Gone since the listing: skip it, as a later listing would.
          if (e instanceof NfsError && e.status === NFS3ERR_STALE) continue;
          throw e;
        }
      }
      entries.push({
        name: m.name,
        node,
        fileid: fileIdOf(node),
        cookie: this.#cookieFor(id, m.after),
        attr,
      });
    }
    return { entries, eof };
  }

  async mkdir(
    dir: FsNode,
    name: string,
    attr: SetAttr,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    checkName(name);
    await this.#writableDir(dir, caller);
    if (dir.kind === "root") {
      const problem = bucketNameProblem(name);
      if (problem !== null) throw new NfsError(NFS3ERR_INVAL, problem);
      await this.#backend.createNamespace(this.#tenant, name, "bucket");
      this.#rootChangedMs = Math.max(this.#now(), this.#rootChangedMs + 1);
      const node: FsNode = {
        kind: "dir",
        ns: this.#backend.namespace(this.#tenant, name).id,
        path: "",
      };
      return { node, attr: await this.getattr(node) };
    }
    if (dir.kind !== "dir") throw new NfsError(NFS3ERR_NOTDIR, "mkdir in a non-directory");
    if ((await this.#child(dir, name)) !== null) throw new NfsError(NFS3ERR_EXIST, "exists");
    const path = childPath(dir.path, name);
    checkKey(`${path}/`);
    await this.#backend.putObject(this.#ref(dir.ns), `${path}/`, new Uint8Array(0), {
      contentType: "application/x-directory",
      metadata: this.#ownerMetadata(S_IFDIR, attr, caller, 0o755),
    });
    this.#touchBucket(dir.ns);
    const node: FsNode = { kind: "dir", ns: dir.ns, path };
    return { node, attr: await this.getattr(node) };
  }

  #ownerMetadata(type: number, attr: SetAttr, caller: Caller, modeDefault: number): Metadata {
    const mtime = attr.mtime === undefined || attr.mtime === "now" ? this.#now() : attr.mtime;
    return {
      [MODE_KEY]: String(type | ((attr.mode ?? modeDefault) & 0o7777)),
      [UID_KEY]: String(attr.uid ?? caller.uid),
      [GID_KEY]: String(attr.gid ?? caller.gid),
      [MTIME_KEY]: (mtime / 1000).toFixed(3),
    };
  }

  async #writableDir(dir: FsNode, caller: Caller): Promise<FileAttr> {
    const attr = await this.getattr(dir);
    if (attr.type !== "dir") throw new NfsError(NFS3ERR_NOTDIR, "not a directory");
    this.#require(attr, caller, 2, "no write permission on the directory");
    this.#require(attr, caller, 1, "no search permission on the directory");
    return attr;
  }

  async rmdir(dir: FsNode, name: string, caller: Caller): Promise<void> {
    checkName(name);
    await this.#writableDir(dir, caller);
    const found = await this.#child(dir, name);
    if (found === null) throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(name)}`);
    if (found.node.kind !== "dir") throw new NfsError(NFS3ERR_NOTDIR, "not a directory");
    if (found.node.path === "") {
      await this.#backend.deleteNamespace(this.#ref(found.node.ns));
      this.#rootChangedMs = Math.max(this.#now(), this.#rootChangedMs + 1);
      return;
    }
    const ns = found.node.ns;
    const prefix = `${found.node.path}/`;
    const listed = await this.#backend.listObjects(this.#ref(ns), { prefix, maxKeys: 2 });
    if (listed.objects.some((o) => o.key !== prefix) || listed.commonPrefixes.length > 0) {
      throw new NfsError(NFS3ERR_NOTEMPTY, "directory not empty");
    }
    await this.#backend.deleteObject(this.#ref(ns), prefix);
    this.#touchBucket(ns);
    await this.#keepDir(dir);
  }

  /** A directory left with no entries keeps existing: it gets a marker if it had none. */
  async #keepDir(dir: FsNode): Promise<void> {
    if (dir.kind !== "dir" || dir.path === "") return;
    const prefix = `${dir.path}/`;
    const listed = await this.#backend.listObjects(this.#ref(dir.ns), { prefix, maxKeys: 1 });
    if (listed.keyCount === 0) {
      await this.#backend.putObject(this.#ref(dir.ns), prefix, new Uint8Array(0), {
        contentType: "application/x-directory",
        metadata: { [MODE_KEY]: String(S_IFDIR | 0o755) },
      });
    }
  }

  // ---- files ---------------------------------------------------------------------------------

  async create(
    dir: FsNode,
    name: string,
    how: CreateHow,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    checkName(name);
    await this.#writableDir(dir, caller);
    if (dir.kind !== "dir") throw new NfsError(NFS3ERR_ACCES, "files live in buckets, not at /");
    const path = childPath(dir.path, name);
    checkKey(path);
    const node: FsNode = { kind: "object", ns: dir.ns, path };
    const existing = await this.#child(dir, name);
    if (existing !== null) {
      if (existing.node.kind === "dir") throw new NfsError(NFS3ERR_EXIST, "a directory exists");
      if (how.mode === "guarded") throw new NfsError(NFS3ERR_EXIST, "the file exists");
      if (how.mode === "exclusive") {
        const info = await this.#head(dir.ns, path);
        if (info?.metadata[VERIFIER_KEY] === hex(how.verifier)) return existing;
        throw new NfsError(NFS3ERR_EXIST, "the file exists");
      }
      const attr = Object.keys(how.attr).length === 0
        ? existing.attr
        : await this.setattr(node, how.attr, caller, null);
      return { node, attr };
    }
    const attr = how.mode === "exclusive" ? {} : how.attr;
    const metadata: Record<string, string> = {
      ...this.#ownerMetadata(S_IFREG, { ...attr, size: undefined }, caller, 0o644),
    };
    if (how.mode === "exclusive") metadata[VERIFIER_KEY] = hex(how.verifier);
    const size = attr.size ?? 0;
    checkHole(0, size, this.#holeBytesMax);
    try {
      await this.#backend.putObject(this.#ref(dir.ns), path, new Uint8Array(0), {
        contentType: DEFAULT_CONTENT_TYPE,
        metadata,
        ifAbsent: how.mode !== "unchecked",
      });
    } catch (e) {
      if (e instanceof CompositionError && e.code === "precondition_failed") {
        throw new NfsError(NFS3ERR_EXIST, "the file exists");
      }
      throw e;
    }
    // A size given at creation is a hole: streamed as zeros, never allocated whole.
    if (size > 0) await this.#files.truncate(dir.ns, path, size);
    this.#touchBucket(dir.ns);
    return { node, attr: await this.getattr(node) };
  }

  async symlink(
    dir: FsNode,
    name: string,
    target: string,
    attr: SetAttr,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    checkName(name);
    await this.#writableDir(dir, caller);
    if (dir.kind !== "dir") throw new NfsError(NFS3ERR_ACCES, "symlinks live in buckets");
    const bytes = ENCODER.encode(target);
    if (bytes.length === 0 || bytes.length > SYMLINK_TARGET_BYTES_MAX) {
      throw new NfsError(NFS3ERR_INVAL, `a symlink target of ${bytes.length} bytes`);
    }
    const path = childPath(dir.path, name);
    checkKey(path);
    if ((await this.#child(dir, name)) !== null) throw new NfsError(NFS3ERR_EXIST, "exists");
    try {
      await this.#backend.putObject(this.#ref(dir.ns), path, bytes, {
        contentType: DEFAULT_CONTENT_TYPE,
        metadata: this.#ownerMetadata(S_IFLNK, { ...attr, mode: 0o777 }, caller, 0o777),
        ifAbsent: true,
      });
    } catch (e) {
      if (e instanceof CompositionError && e.code === "precondition_failed") {
        throw new NfsError(NFS3ERR_EXIST, "exists");
      }
      throw e;
    }
    this.#touchBucket(dir.ns);
    const node: FsNode = { kind: "object", ns: dir.ns, path };
    return { node, attr: await this.getattr(node) };
  }

  async readlink(node: FsNode): Promise<string> {
    const attr = await this.getattr(node);
    if (attr.type !== "symlink" || node.kind !== "object") {
      throw new NfsError(NFS3ERR_INVAL, "not a symlink");
    }
    const got = await this.#backend.getObject(this.#ref(node.ns), node.path);
    const bytes = await collect(got.body, Math.min(got.contentLength, SYMLINK_TARGET_BYTES_MAX));
    return new TextDecoder().decode(bytes);
  }

  /** LINK: `name` in `dir` becomes another name of the file `file` (same bucket). */
  async link(file: FsNode, dir: FsNode, name: string, caller: Caller): Promise<FileAttr> {
    checkName(name);
    if (file.kind !== "object") throw new NfsError(NFS3ERR_ISDIR, "a directory has one name");
    await this.#writableDir(dir, caller);
    if (dir.kind !== "dir") throw new NfsError(NFS3ERR_ACCES, "files live in buckets, not at /");
    if (hex(dir.ns) !== hex(file.ns)) {
      throw new NfsError(NFS3ERR_XDEV, "a hard link stays within its bucket");
    }
    const path = childPath(dir.path, name);
    checkKey(path);
    if ((await this.#child(dir, name)) !== null) throw new NfsError(NFS3ERR_EXIST, "exists");
    await this.#settle(file);
    const info = await this.#head(file.ns, file.path);
    if (info === null) throw new NfsError(NFS3ERR_STALE, "the file is gone");
    const names = linksOf(info.metadata) ?? [file.path];
    if (names.length >= LINKS_MAX) {
      throw new NfsError(NFS3ERR_MLINK, `a file has at most ${LINKS_MAX} names`);
    }
    const next = [...names.filter((n) => n !== path), path];
    const list = JSON.stringify(next);
    if (ENCODER.encode(list).length > LINK_NAMES_BYTES_MAX) {
      throw new NfsError(
        NFS3ERR_MLINK,
        `a file's names take at most ${LINK_NAMES_BYTES_MAX} bytes`,
      );
    }
    const inode = info.metadata[INODE_KEY] ??
      hex(crypto.getRandomValues(new Uint8Array(16)));
    const ref = this.#ref(file.ns);
    // The new name first (sharing the content's chunks), then the others learn of it.
    await this.#backend.copyObject(ref, file.path, ref, path, {
      metadataOf: (m) => ({ ...m, [INODE_KEY]: inode, [LINKS_KEY]: list }),
    });
    await this.#relink(file.ns, next, inode, path);
    this.#touchBucket(file.ns);
    return await this.getattr(file);
  }

  /** Writes `names` as the name list of every name of file `inode` but `except`. */
  async #relink(ns: Uint8Array, names: string[], inode: string, except: string): Promise<void> {
    const ref = this.#ref(ns);
    const list = JSON.stringify(names);
    for (const other of names) {
      if (other === except) continue;
      const info = await this.#head(ns, other);
      // A name replaced since (an S3 PUT) is another file now.
      if (info === null || (info.metadata[INODE_KEY] ?? inode) !== inode) continue;
      await this.#settle({ kind: "object", ns, path: other });
      await this.#backend.copyObject(ref, other, ref, other, {
        metadataOf: (m) => ({ ...m, [INODE_KEY]: inode, [LINKS_KEY]: list }),
      });
    }
  }

  /** Copies the content and attributes stored under `path` to the file's other names. */
  async #propagate(ns: Uint8Array, path: string): Promise<void> {
    const info = await this.#head(ns, path);
    if (info === null) return;
    const names = linksOf(info.metadata);
    const inode = info.metadata[INODE_KEY];
    if (names === null || names.length < 2 || inode === undefined) return;
    const ref = this.#ref(ns);
    for (const other of names) {
      if (other === path) continue;
      const had = await this.#head(ns, other);
      if (had === null || had.metadata[INODE_KEY] !== inode) continue;
      const same = had.etag === info.etag && had.size === info.size &&
        JSON.stringify(had.metadata) === JSON.stringify(info.metadata);
      if (same) continue;
      await this.#backend.copyObject(ref, path, ref, other);
    }
  }

  /** After `path` stopped being a name of its file: the other names forget it. */
  async #unlinked(ns: Uint8Array, path: string, info: ObjectInfo): Promise<void> {
    const names = linksOf(info.metadata);
    const inode = info.metadata[INODE_KEY];
    if (names === null || inode === undefined) return;
    const rest = names.filter((n) => n !== path);
    if (rest.length > 0) await this.#relink(ns, rest, inode, path);
  }

  async remove(dir: FsNode, name: string, caller: Caller): Promise<void> {
    checkName(name);
    await this.#writableDir(dir, caller);
    const found = await this.#child(dir, name);
    if (found === null) throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(name)}`);
    if (found.node.kind !== "object") throw new NfsError(NFS3ERR_ISDIR, "is a directory");
    await this.#settle(found.node);
    const info = await this.#head(found.node.ns, found.node.path);
    const { deleted } = await this.#backend.deleteObject(this.#ref(found.node.ns), found.node.path);
    if (!deleted) throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(name)}`);
    if (info !== null) await this.#unlinked(found.node.ns, found.node.path, info);
    this.#touchBucket(found.node.ns);
    await this.#keepDir(dir);
  }

  async rename(
    fromDir: FsNode,
    fromName: string,
    toDir: FsNode,
    toName: string,
    caller: Caller,
  ): Promise<void> {
    checkName(fromName);
    checkName(toName);
    await this.#writableDir(fromDir, caller);
    await this.#writableDir(toDir, caller);
    const from = await this.#child(fromDir, fromName);
    if (from === null) throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(fromName)}`);
    if (from.node.kind === "root" || toDir.kind === "root" || fromDir.kind === "root") {
      throw new NfsError(NFS3ERR_NOTSUPP, "a bucket cannot be renamed");
    }
    if (toDir.kind !== "dir") {
      throw new NfsError(NFS3ERR_NOTDIR, "not a directory");
    }
    const src = from.node;
    const target = childPath(toDir.path, toName);
    checkKey(`${target}/`);
    const to = await this.#child(toDir, toName);
    if (to !== null && to.node.kind !== "root") {
      if (hex(to.node.ns) === hex(src.ns) && to.node.path === src.path) return;
      if (src.kind === "object" && to.node.kind === "dir") {
        throw new NfsError(NFS3ERR_ISDIR, "cannot replace a directory with a file");
      }
      if (src.kind === "dir" && to.node.kind === "object") {
        throw new NfsError(NFS3ERR_NOTDIR, "cannot replace a file with a directory");
      }
      if (to.node.kind === "dir") {
        const marker = `${to.node.path}/`;
        const listed = await this.#backend.listObjects(this.#ref(to.node.ns), {
          prefix: marker,
          maxKeys: 2,
        });
        if (listed.objects.some((o) => o.key !== marker) || listed.commonPrefixes.length > 0) {
          throw new NfsError(NFS3ERR_NOTEMPTY, "the target directory is not empty");
        }
      }
    }
    const fromRef = this.#ref(src.ns), toRef = this.#ref(toDir.ns);
    if (src.kind === "object") {
      await this.#settle(src);
      if (to !== null && to.node.kind === "object" && hex(to.node.ns) === hex(src.ns)) {
        // Two names of one file: rename(2) leaves both as they are.
        const [a, b] = [await this.#head(src.ns, src.path), await this.#head(src.ns, to.node.path)];
        const inode = a?.metadata[INODE_KEY];
        if (inode !== undefined && b?.metadata[INODE_KEY] === inode) return;
      }
      if (to !== null && to.node.kind === "object") {
        // The replaced name leaves its file: its other names forget it.
        const old = await this.#head(to.node.ns, to.node.path);
        if (old !== null) await this.#unlinked(to.node.ns, to.node.path, old);
      }
      const info = await this.#head(src.ns, src.path);
      if (info === null) throw new NfsError(NFS3ERR_NOENT, `no ${JSON.stringify(fromName)}`);
      const names = linksOf(info.metadata);
      const inode = info.metadata[INODE_KEY];
      const sameBucket = hex(src.ns) === hex(toDir.ns);
      // A linked file renamed within its bucket keeps its links; moved to another bucket, the
      // moved name is a file of its own there.
      const renamed = names === null || inode === undefined
        ? null
        : sameBucket
        ? names.map((n) => (n === src.path ? target : n))
        : null;
      // The composition (its chunk references) moves; no byte of the file is read or written.
      await this.#backend.copyObject(fromRef, src.path, toRef, target, {
        metadataOf: (m) => {
          if (names === null) return m;
          const { [LINKS_KEY]: _l, [INODE_KEY]: _i, ...rest } = m;
          return renamed === null
            ? rest
            : { ...rest, [INODE_KEY]: inode!, [LINKS_KEY]: JSON.stringify(renamed) };
        },
      });
      await this.#backend.deleteObject(fromRef, src.path);
      if (renamed !== null) await this.#relink(src.ns, renamed, inode!, target);
      else if (names !== null) await this.#unlinked(src.ns, src.path, info);
    } else {
      if (src.path === "") throw new NfsError(NFS3ERR_NOTSUPP, "a bucket cannot be renamed");
      const srcPrefix = `${src.path}/`;
      if (hex(src.ns) === hex(toDir.ns) && `${target}/`.startsWith(srcPrefix)) {
        throw new NfsError(NFS3ERR_INVAL, "a directory cannot move under itself");
      }
      const keys: string[] = [];
      let token: string | undefined;
      do {
        const page = await this.#backend.listObjects(fromRef, {
          prefix: srcPrefix,
          continuationToken: token,
        });
        for (const o of page.objects) keys.push(o.key);
        if (keys.length > RENAME_KEYS_MAX) {
          throw new NfsError(
            NFS3ERR_NOTSUPP,
            `a directory of more than ${RENAME_KEYS_MAX} objects cannot be renamed`,
          );
        }
        token = page.nextContinuationToken ?? undefined;
      } while (token !== undefined);
      for (const key of keys) {
        const moved = `${target}/${key.slice(srcPrefix.length)}`;
        checkKey(moved);
        await this.#settle({ kind: "object", ns: src.ns, path: key });
        await this.#backend.copyObject(fromRef, key, toRef, moved);
        await this.#backend.deleteObject(fromRef, key);
      }
      if (keys.length === 0) {
        await this.#backend.putObject(toRef, `${target}/`, new Uint8Array(0), {
          contentType: "application/x-directory",
          metadata: { [MODE_KEY]: String(S_IFDIR | 0o755) },
        });
      }
    }
    this.#touchBucket(src.ns);
    this.#touchBucket(toDir.ns);
    await this.#keepDir(fromDir);
  }

  /**
   * Changes attributes. `guardCtimeMs` (sattrguard3) refuses with NFS3ERR_NOT_SYNC unless the
   * node's ctime is that.
   */
  async setattr(
    node: FsNode,
    attr: SetAttr,
    caller: Caller,
    guardCtimeMs: number | null,
  ): Promise<FileAttr> {
    const before = await this.getattr(node);
    if (guardCtimeMs !== null && Math.floor(before.ctimeMs) !== Math.floor(guardCtimeMs)) {
      throw new NfsError(NFS3ERR_NOT_SYNC, "ctime changed");
    }
    const owner = caller.uid === 0 || caller.uid === before.uid;
    if ((attr.mode !== undefined || attr.gid !== undefined) && !owner) {
      throw new NfsError(NFS3ERR_PERM, "only the owner changes the mode or group");
    }
    if (attr.uid !== undefined && attr.uid !== before.uid && caller.uid !== 0) {
      throw new NfsError(NFS3ERR_PERM, "only root changes the owner");
    }
    if ((attr.atime !== undefined || attr.mtime !== undefined) && !owner) {
      this.#require(before, caller, 2, "no write permission to set times");
    }
    if (node.kind === "root" || (node.kind === "dir" && node.path === "")) {
      if (attr.mode !== undefined || attr.uid !== undefined || attr.gid !== undefined) {
        throw new NfsError(NFS3ERR_PERM, "the root and bucket directories keep their owner");
      }
      if (attr.size !== undefined) throw new NfsError(NFS3ERR_ISDIR, "a directory has no size");
      return before;
    }
    if (node.kind === "dir") {
      if (attr.size !== undefined) throw new NfsError(NFS3ERR_ISDIR, "a directory has no size");
      const current: SetAttr = {
        mode: attr.mode ?? before.mode,
        uid: attr.uid ?? before.uid,
        gid: attr.gid ?? before.gid,
        mtime: attr.mtime ?? before.mtimeMs,
      };
      await this.#backend.putObject(this.#ref(node.ns), `${node.path}/`, new Uint8Array(0), {
        contentType: "application/x-directory",
        metadata: this.#ownerMetadata(S_IFDIR, current, caller, 0o755),
      });
      this.#touchBucket(node.ns);
      return await this.getattr(node);
    }
    if (attr.size !== undefined) {
      if (before.type !== "file") throw new NfsError(NFS3ERR_INVAL, "only files have a size");
      this.#require(before, caller, 2, "no write permission");
      checkHole(before.size, attr.size, this.#holeBytesMax);
      await this.#files.truncate(node.ns, node.path, attr.size);
    }
    if (
      attr.mode !== undefined || attr.uid !== undefined || attr.gid !== undefined ||
      attr.mtime !== undefined
    ) {
      await this.#settle(node);
      const type = before.type === "symlink" ? S_IFLNK : S_IFREG;
      const changes = this.#ownerMetadata(
        type,
        {
          mode: attr.mode ?? before.mode,
          uid: attr.uid ?? before.uid,
          gid: attr.gid ?? before.gid,
          mtime: attr.mtime ?? (attr.size !== undefined ? "now" : before.mtimeMs),
        },
        caller,
        0o644,
      );
      const ref = this.#ref(node.ns);
      await this.#backend.copyObject(ref, node.path, ref, node.path, {
        metadataOf: (m) => ({ ...m, ...changes }),
      });
    }
    // Size, owner, mode and times are the file's, whichever name they were set through.
    if (node.kind === "object") await this.#propagate(node.ns, node.path);
    this.#touchBucket(node.ns);
    return await this.getattr(node);
  }

  // ---- extended attributes -------------------------------------------------------------------

  /**
   * The extended attributes of a file or directory: user metadata `:xattr:<name>` (":" is no
   * x-amz-meta name, so S3 never shows them), values base64. Root and buckets have none.
   */
  async xattrs(node: FsNode): Promise<Map<string, Uint8Array>> {
    const out = new Map<string, Uint8Array>();
    if (node.kind === "root" || (node.kind === "dir" && node.path === "")) return out;
    const key = node.kind === "dir" ? `${node.path}/` : node.path;
    const info = await this.#head(node.ns, key);
    if (info === null) {
      if (node.kind === "dir") return out;
      throw new NfsError(NFS3ERR_STALE, "the file is gone");
    }
    for (const [k, v] of Object.entries(info.metadata)) {
      if (k.startsWith(XATTR_PREFIX)) {
        out.set(k.slice(XATTR_PREFIX.length), Uint8Array.from(atob(v), (c) => c.charCodeAt(0)));
      }
    }
    return out;
  }

  /** Sets (a value) or removes (null) extended attributes; needs write permission. */
  async setXattrs(
    node: FsNode,
    changes: Record<string, Uint8Array | null>,
    caller: Caller,
  ): Promise<void> {
    if (node.kind === "root" || (node.kind === "dir" && node.path === "")) {
      throw new NfsError(NFS3ERR_NOTSUPP, "the root and buckets keep no extended attributes");
    }
    const attr = await this.getattr(node);
    if (caller.uid !== 0 && caller.uid !== attr.uid) {
      this.#require(attr, caller, 2, "no write permission");
    }
    const apply = (m: Metadata): Metadata => {
      const next: Record<string, string> = { ...m };
      for (const [name, value] of Object.entries(changes)) {
        if (value === null) delete next[XATTR_PREFIX + name];
        else next[XATTR_PREFIX + name] = btoa(String.fromCharCode(...value));
      }
      return next;
    };
    const ref = this.#ref(node.ns);
    if (node.kind === "dir") {
      const marker = `${node.path}/`;
      const info = await this.#head(node.ns, marker);
      const base = info?.metadata ??
        this.#ownerMetadata(
          S_IFDIR,
          { mode: attr.mode, uid: attr.uid, gid: attr.gid },
          caller,
          0o755,
        );
      await this.#backend.putObject(ref, marker, new Uint8Array(0), {
        contentType: "application/x-directory",
        metadata: apply(base),
      });
    } else {
      await this.#settle(node);
      await this.#backend.copyObject(ref, node.path, ref, node.path, { metadataOf: apply });
    }
    this.#touchBucket(node.ns);
  }

  // ---- data ----------------------------------------------------------------------------------

  async read(
    node: FsNode,
    offset: number,
    count: number,
    caller: Caller,
  ): Promise<{ data: Uint8Array; eof: boolean; attr: FileAttr }> {
    if (node.kind !== "object") {
      throw new NfsError(node.kind === "root" ? NFS3ERR_ISDIR : NFS3ERR_ISDIR, "not a file");
    }
    await this.#settle(node);
    const info = await this.#head(node.ns, node.path);
    if (info === null) throw new NfsError(NFS3ERR_STALE, "the file is gone");
    const attr = this.#objectAttrOf(node, info);
    if (attr.type !== "file") throw new NfsError(NFS3ERR_INVAL, "not a regular file");
    this.#require(attr, caller, 4, "no read permission");
    if (offset >= info.size || count === 0) {
      return { data: new Uint8Array(0), eof: offset >= info.size, attr };
    }
    const end = Math.min(info.size, offset + count) - 1;
    const ref = this.#ref(node.ns);
    const streamed = await this.#reads.read(ref, node.path, info.version, offset, end - offset + 1);
    if (streamed !== null) {
      return { data: streamed, eof: offset + streamed.length >= info.size, attr };
    }
    try {
      const got = await this.#backend.getObject(ref, node.path, { range: { start: offset, end } });
      const data = await collect(got.body, got.contentLength);
      return { data, eof: offset + data.length >= got.size, attr };
    } catch (e) {
      if (notFound(e)) throw new NfsError(NFS3ERR_STALE, "the file is gone");
      throw e;
    }
  }

  /** Accepts a write; with `stable`, it is durable before this resolves. */
  async write(
    node: FsNode,
    offset: number,
    data: Uint8Array,
    stable: boolean,
    caller: Caller,
  ): Promise<void> {
    if (node.kind !== "object") throw new NfsError(NFS3ERR_ISDIR, "not a file");
    let size = this.#files.pending(node.ns, node.path)?.size;
    if (size === undefined) {
      const attr = await this.getattr(node);
      if (attr.type !== "file") throw new NfsError(NFS3ERR_INVAL, "not a regular file");
      this.#require(attr, caller, 2, "no write permission");
      size = attr.size;
    }
    checkHole(size, offset, this.#holeBytesMax);
    await this.#files.write(node.ns, node.path, offset, data);
    if (stable) await this.commit(node);
  }

  /** Makes every write to `node` durable (COMMIT). */
  async commit(node: FsNode): Promise<void> {
    if (node.kind !== "object") return;
    await this.#files.commit(node.ns, node.path);
    await this.#propagate(node.ns, node.path);
  }

  /** Stores pending writes of `node` before it is read, copied or removed. */
  async #settle(node: FsNode): Promise<void> {
    if (node.kind === "object" && this.#files.has(node.ns, node.path)) await this.commit(node);
  }

  /** READs served from an open stream (the rest were ranged GETs). */
  get streamedReads(): number {
    return this.#reads.hits;
  }

  /** Commits every file's pending writes (shutdown). */
  async close(): Promise<void> {
    this.#reads.close();
    await this.#files.close();
  }

  /** Space figures for FSSTAT: what the tenant's buckets hold. */
  async usage(): Promise<{ bytes: number; objects: number }> {
    let bytes = 0, objects = 0;
    for (const b of await this.#buckets()) {
      bytes += b.bytes;
      objects += b.objects;
    }
    return { bytes, objects };
  }

  /** The node a MOUNT path names ("/", "/bucket", "/bucket/dir"). */
  async resolve(path: string, caller: Caller): Promise<FsNode> {
    let node: FsNode = { kind: "root" };
    for (const part of path.split("/")) {
      if (part === "" || part === ".") continue;
      const found = await this.lookup(node, part, caller);
      node = found.node;
    }
    if ((await this.getattr(node)).type !== "dir") {
      throw new NfsError(NFS3ERR_NOTDIR, "a mount path names a directory");
    }
    return node;
  }
}
