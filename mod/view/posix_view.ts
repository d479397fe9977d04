// The POSIX tree view: inodes (files, directories, symlinks) with their attributes, and
// directory entries by name (lookup) and by cookie (readdir). Inode numbers are handed out
// by the fold from a per-namespace counter and never reused; readdir cookies from a
// per-directory counter, so a cookie stays a valid resume point whatever else changes.
// Folded from posix_* deltas with rename(2) semantics: replace a compatible target, refuse
// to move a directory under itself, keep link counts (a directory has 2 + subdirectories).

import { assert } from "../base/mod.ts";
import {
  CompositionError,
  concatBytes,
  type Content,
  EMPTY_CONTENT,
  type Inode,
  type InodeType,
  LINK_COUNT_MAX,
  type Payload,
  type PosixTime,
  posixTimeOfMs,
  READDIR_ENTRIES_MAX,
  type ReaddirOptions,
  type ReaddirResult,
  ROOT_INODE,
} from "../composition/mod.ts";
import { type Fold, refuse, release, type ViewTables } from "./_fold.ts";
import { successor } from "./_ordered.ts";
import {
  decodeCookieEntry,
  decodeDirent,
  decodeInode,
  type DirentValue,
  encodeCookieEntry,
  encodeDirent,
  encodeInode,
  type InodeRecord,
  type NamespaceRecord,
  publicInode,
  u64Bytes,
  utf8,
} from "./_records.ts";

/** The first readdir cookie handed out (0 means "from the start"; 1 and 2 are "." and ".."). */
export const FIRST_COOKIE = 3;
/** Parent hops a rename's cycle check may take (deeper trees are refused). */
export const TREE_DEPTH_MAX = 4096;

function inodeKey(ns: Uint8Array, inode: number): Uint8Array {
  return concatBytes(ns, u64Bytes(inode));
}

function direntKey(ns: Uint8Array, dir: number, name: string): Uint8Array {
  return concatBytes(ns, u64Bytes(dir), utf8(name));
}

function cookieKey(ns: Uint8Array, dir: number, cookie: number): Uint8Array {
  return concatBytes(ns, u64Bytes(dir), u64Bytes(cookie));
}

// ---- folding -------------------------------------------------------------------------------

type PosixPayload = Extract<Payload, { type: `posix_${string}` }>;

export function isPosixPayload(p: Payload): p is PosixPayload {
  return p.type.startsWith("posix_");
}

/** The inodes one delta touches: read once, changed in place, written back at the end. */
class Inodes {
  readonly #fold: Fold;
  readonly #ns: NamespaceRecord;
  readonly #cache = new Map<number, InodeRecord | null>();
  readonly #dirty = new Set<number>();

  constructor(fold: Fold, ns: NamespaceRecord) {
    this.#fold = fold;
    this.#ns = ns;
  }

  get(inode: number): InodeRecord | undefined {
    if (this.#cache.has(inode)) return this.#cache.get(inode) ?? undefined;
    const bytes = this.#fold.store.get(this.#fold.tables.inode, inodeKey(this.#ns.id, inode));
    const rec = bytes === undefined ? null : decodeInode(this.#ns.id, inode, bytes);
    this.#cache.set(inode, rec);
    return rec ?? undefined;
  }

  require(inode: number): InodeRecord {
    return this.get(inode) ?? refuse("not_found", `no inode ${inode}`);
  }

  directory(inode: number): InodeRecord {
    const dir = this.require(inode);
    if (dir.type !== "directory") refuse("not_a_directory", `inode ${inode} is not a directory`);
    return dir;
  }

  /** Marks `rec` changed by this delta (its ctime and version move). */
  changed(rec: InodeRecord, now: PosixTime): void {
    rec.ctime = now;
    rec.version = this.#fold.delta.sequence;
    this.#dirty.add(rec.inode);
  }

  create(fields: Omit<InodeRecord, "inode" | "namespaceId">): InodeRecord {
    const inode = this.#ns.nextInode++;
    assert(this.get(inode) === undefined, `inode ${inode} handed out twice`);
    const rec: InodeRecord = { namespaceId: this.#ns.id, inode, ...fields };
    this.#cache.set(inode, rec);
    this.#dirty.add(inode);
    this.#ns.objects++;
    this.#ns.bytes += rec.size;
    return rec;
  }

  remove(rec: InodeRecord): void {
    this.#cache.set(rec.inode, null);
    this.#dirty.add(rec.inode);
    this.#ns.objects--;
    this.#ns.bytes -= rec.size;
    release(this.#fold, rec.content);
  }

  flush(): void {
    for (const inode of this.#dirty) {
      const rec = this.#cache.get(inode);
      const key = inodeKey(this.#ns.id, inode);
      if (rec === null || rec === undefined) this.#fold.store.delete(this.#fold.tables.inode, key);
      else this.#fold.store.put(this.#fold.tables.inode, key, encodeInode(rec));
    }
  }
}

function getEntry(fold: Fold, ns: Uint8Array, dir: number, name: string): DirentValue | undefined {
  const bytes = fold.store.get(fold.tables.dirent, direntKey(ns, dir, name));
  return bytes === undefined ? undefined : decodeDirent(bytes);
}

function addEntry(
  fold: Fold,
  ns: Uint8Array,
  dir: InodeRecord,
  name: string,
  child: InodeRecord,
): void {
  const cookie = dir.nextCookie++;
  fold.store.put(
    fold.tables.dirent,
    direntKey(ns, dir.inode, name),
    encodeDirent({ inode: child.inode, type: child.type, cookie }),
  );
  fold.store.put(
    fold.tables.cookie,
    cookieKey(ns, dir.inode, cookie),
    encodeCookieEntry(child.inode, child.type, name),
  );
  dir.entries++;
}

function removeEntry(
  fold: Fold,
  ns: Uint8Array,
  dir: InodeRecord,
  name: string,
  entry: DirentValue,
): void {
  fold.store.delete(fold.tables.dirent, direntKey(ns, dir.inode, name));
  fold.store.delete(fold.tables.cookie, cookieKey(ns, dir.inode, entry.cookie));
  assert(dir.entries > 0, "directory entry count underflow");
  dir.entries--;
}

function newInode(
  type: InodeType,
  mode: number,
  uid: number,
  gid: number,
  now: PosixTime,
  version: number,
): Omit<InodeRecord, "inode" | "namespaceId"> {
  return {
    type,
    mode,
    uid,
    gid,
    nlink: type === "directory" ? 2 : 1,
    size: 0,
    atime: now,
    mtime: now,
    ctime: now,
    version,
    parent: 0,
    entries: 0,
    nextCookie: FIRST_COOKIE,
    target: "",
    content: EMPTY_CONTENT,
  };
}

/** Writes the root directory of a new POSIX namespace. */
export function createRoot(
  fold: Fold,
  ns: NamespaceRecord,
  mode: number,
  uid: number,
  gid: number,
): void {
  const now = posixTimeOfMs(fold.nowMs);
  const root: InodeRecord = {
    namespaceId: ns.id,
    inode: ROOT_INODE,
    ...newInode("directory", mode, uid, gid, now, fold.delta.sequence),
    parent: ROOT_INODE,
  };
  fold.store.put(fold.tables.inode, inodeKey(ns.id, ROOT_INODE), encodeInode(root));
  ns.nextInode = ROOT_INODE + 1;
}

/** Whether the namespace's root holds no entries (it may then be deleted). */
export function rootIsEmpty(fold: Fold, ns: NamespaceRecord): boolean {
  const bytes = fold.store.get(fold.tables.inode, inodeKey(ns.id, ROOT_INODE));
  assert(bytes !== undefined, "a POSIX namespace without a root directory");
  return decodeInode(ns.id, ROOT_INODE, bytes).entries === 0;
}

export function deleteRoot(fold: Fold, ns: NamespaceRecord): void {
  fold.store.delete(fold.tables.inode, inodeKey(ns.id, ROOT_INODE));
}

function truncate(content: Content, size: number, fold: Fold): Content {
  if (content.kind === "inline") {
    return content.bytes.length <= size
      ? content
      : { kind: "inline", bytes: content.bytes.slice(0, size) };
  }
  const kept = [];
  for (const r of content.chunkRefs) {
    if (r.offsetBytes >= size) {
      fold.outcome.released.push(r.chunkId);
      continue;
    }
    kept.push(
      r.offsetBytes + r.lengthBytes <= size ? r : { ...r, lengthBytes: size - r.offsetBytes },
    );
  }
  return { kind: "chunks", chunkRefs: kept };
}

/** Applies one POSIX mutation to namespace `ns` (a posix namespace owned by the delta's tenant). */
export function foldPosix(fold: Fold, p: PosixPayload, ns: NamespaceRecord): void {
  const inodes = new Inodes(fold, ns);
  const now = posixTimeOfMs(fold.nowMs);
  const touchDir = (dir: InodeRecord) => {
    dir.mtime = now;
    inodes.changed(dir, now);
  };
  const freeName = (dir: InodeRecord, name: string) => {
    if (getEntry(fold, ns.id, dir.inode, name) !== undefined) {
      refuse("exists", `${JSON.stringify(name)} exists in directory ${dir.inode}`);
    }
  };
  let result: InodeRecord | undefined;
  switch (p.type) {
    case "posix_mkdir": {
      const dir = inodes.directory(p.parent);
      freeName(dir, p.name);
      if (dir.nlink >= LINK_COUNT_MAX) refuse("too_many_links", `directory ${dir.inode} is full`);
      const child = inodes.create({
        ...newInode("directory", p.mode, p.uid, p.gid, now, fold.delta.sequence),
        parent: dir.inode,
      });
      addEntry(fold, ns.id, dir, p.name, child);
      dir.nlink++;
      touchDir(dir);
      result = child;
      break;
    }
    case "posix_create":
    case "posix_symlink": {
      const dir = inodes.directory(p.parent);
      freeName(dir, p.name);
      const fields = p.type === "posix_create"
        ? newInode("file", p.mode, p.uid, p.gid, now, fold.delta.sequence)
        : {
          ...newInode("symlink", 0o777, p.uid, p.gid, now, fold.delta.sequence),
          target: p.target,
          size: utf8(p.target).length,
        };
      const child = inodes.create(fields);
      addEntry(fold, ns.id, dir, p.name, child);
      touchDir(dir);
      result = child;
      break;
    }
    case "posix_link": {
      const target = inodes.require(p.inode);
      if (target.type === "directory") {
        refuse("is_a_directory", "directories cannot be hard-linked");
      }
      if (target.nlink >= LINK_COUNT_MAX) {
        refuse("too_many_links", `inode ${target.inode} has too many links`);
      }
      const dir = inodes.directory(p.parent);
      freeName(dir, p.name);
      addEntry(fold, ns.id, dir, p.name, target);
      target.nlink++;
      inodes.changed(target, now);
      touchDir(dir);
      result = target;
      break;
    }
    case "posix_unlink": {
      const dir = inodes.directory(p.parent);
      const entry = getEntry(fold, ns.id, dir.inode, p.name) ??
        refuse("not_found", `no ${JSON.stringify(p.name)} in directory ${dir.inode}`);
      if (entry.type === "directory") {
        refuse("is_a_directory", `${JSON.stringify(p.name)} is a directory`);
      }
      const target = inodes.require(entry.inode);
      removeEntry(fold, ns.id, dir, p.name, entry);
      touchDir(dir);
      dropLink(inodes, target, now);
      break;
    }
    case "posix_rmdir": {
      const dir = inodes.directory(p.parent);
      const entry = getEntry(fold, ns.id, dir.inode, p.name) ??
        refuse("not_found", `no ${JSON.stringify(p.name)} in directory ${dir.inode}`);
      if (entry.type !== "directory") {
        refuse("not_a_directory", `${JSON.stringify(p.name)} is not a directory`);
      }
      const target = inodes.require(entry.inode);
      if (target.entries > 0) {
        refuse("not_empty", `directory ${JSON.stringify(p.name)} is not empty`);
      }
      removeEntry(fold, ns.id, dir, p.name, entry);
      dir.nlink--;
      touchDir(dir);
      inodes.remove(target);
      break;
    }
    case "posix_rename":
      rename(fold, ns, inodes, p, now);
      break;
    case "posix_setattr": {
      const target = inodes.require(p.inode);
      const a = p.attributes;
      if (a.size !== undefined && target.type !== "file") {
        refuse(
          target.type === "directory" ? "is_a_directory" : "invalid_argument",
          "only files have a settable size",
        );
      }
      if (a.mode !== undefined) target.mode = a.mode;
      if (a.uid !== undefined) target.uid = a.uid;
      if (a.gid !== undefined) target.gid = a.gid;
      if (a.size !== undefined && a.size !== target.size) {
        target.content = truncate(target.content, a.size, fold);
        ns.bytes += a.size - target.size;
        target.size = a.size;
        target.mtime = now;
      }
      if (a.atime !== undefined) target.atime = a.atime === "now" ? now : a.atime;
      if (a.mtime !== undefined) target.mtime = a.mtime === "now" ? now : a.mtime;
      inodes.changed(target, now);
      result = target;
      break;
    }
    case "posix_write": {
      const target = inodes.require(p.inode);
      if (target.type !== "file") {
        refuse(
          target.type === "directory" ? "is_a_directory" : "invalid_argument",
          `inode ${p.inode} is not a file`,
        );
      }
      release(fold, target.content);
      target.content = p.content;
      ns.bytes += p.size - target.size;
      target.size = p.size;
      target.mtime = now;
      inodes.changed(target, now);
      result = target;
      break;
    }
  }
  inodes.flush();
  if (result !== undefined) fold.outcome.inode = publicInode(result);
}

/** One name of a non-directory is gone: the inode goes with its last name. */
function dropLink(inodes: Inodes, target: InodeRecord, now: PosixTime): void {
  assert(target.nlink > 0, "link count underflow");
  target.nlink--;
  if (target.nlink === 0) inodes.remove(target);
  else inodes.changed(target, now);
}

function rename(
  fold: Fold,
  ns: NamespaceRecord,
  inodes: Inodes,
  p: Extract<PosixPayload, { type: "posix_rename" }>,
  now: PosixTime,
): void {
  const from = inodes.directory(p.parent);
  const to = inodes.directory(p.newParent);
  const entry = getEntry(fold, ns.id, from.inode, p.name) ??
    refuse("not_found", `no ${JSON.stringify(p.name)} in directory ${from.inode}`);
  const moving = inodes.require(entry.inode);
  if (moving.type === "directory") {
    // Walk up from the target directory: meeting the moved directory means a cycle.
    let at = to.inode;
    for (let hops = 0;; hops++) {
      if (at === moving.inode) {
        refuse("invalid_rename", "a directory cannot move into itself or its subdirectories");
      }
      if (at === ROOT_INODE) break;
      if (hops >= TREE_DEPTH_MAX) refuse("too_large", `the tree is deeper than ${TREE_DEPTH_MAX}`);
      at = inodes.require(at).parent;
    }
  }
  const existing = getEntry(fold, ns.id, to.inode, p.newName);
  if (existing !== undefined) {
    // rename(2): when both names are links to the same inode, do nothing.
    if (existing.inode === moving.inode) return;
    const replaced = inodes.require(existing.inode);
    if (moving.type === "directory") {
      if (replaced.type !== "directory") {
        refuse("not_a_directory", `${JSON.stringify(p.newName)} is not a directory`);
      }
      if (replaced.entries > 0) {
        refuse("not_empty", `directory ${JSON.stringify(p.newName)} is not empty`);
      }
    } else if (replaced.type === "directory") {
      refuse("is_a_directory", `${JSON.stringify(p.newName)} is a directory`);
    }
    removeEntry(fold, ns.id, to, p.newName, existing);
    if (replaced.type === "directory") {
      to.nlink--;
      inodes.remove(replaced);
    } else {
      dropLink(inodes, replaced, now);
    }
  }
  removeEntry(fold, ns.id, from, p.name, entry);
  if (moving.type === "directory" && from.inode !== to.inode) {
    if (to.nlink >= LINK_COUNT_MAX) refuse("too_many_links", `directory ${to.inode} is full`);
    from.nlink--;
    to.nlink++;
    moving.parent = to.inode;
  }
  addEntry(fold, ns.id, to, p.newName, moving);
  inodes.changed(moving, now);
  from.mtime = now;
  inodes.changed(from, now);
  to.mtime = now;
  inodes.changed(to, now);
}

// ---- reading -------------------------------------------------------------------------------

/** Reads of the POSIX view (committed state). */
export class PosixView {
  readonly #tables: ViewTables;

  constructor(tables: ViewTables) {
    this.#tables = tables;
  }

  inode(ns: Uint8Array, inode: number): Inode | undefined {
    if (!Number.isSafeInteger(inode) || inode < 1) return undefined;
    const bytes = this.#tables.inode.getSync(inodeKey(ns, inode));
    return bytes === undefined ? undefined : publicInode(decodeInode(ns, inode, bytes));
  }

  lookup(ns: Uint8Array, parent: number, name: string): Inode | undefined {
    if (!Number.isSafeInteger(parent) || parent < 1) return undefined;
    const bytes = this.#tables.dirent.getSync(direntKey(ns, parent, name));
    if (bytes === undefined) return undefined;
    const found = this.inode(ns, decodeDirent(bytes).inode);
    assert(found !== undefined, "a directory entry names a missing inode");
    return found;
  }

  readdir(ns: Uint8Array, dir: number, options: ReaddirOptions): ReaddirResult {
    const cookie = options.cookie ?? 0;
    const count = options.count ?? READDIR_ENTRIES_MAX;
    if (!Number.isSafeInteger(cookie) || cookie < 0) {
      throw new CompositionError("invalid_argument", `cookie ${cookie} is invalid`);
    }
    if (!Number.isInteger(count) || count < 1) {
      throw new CompositionError("invalid_argument", `count ${count} is invalid`);
    }
    const max = Math.min(count, READDIR_ENTRIES_MAX);
    const entries = [];
    let eof = true;
    const prefix = concatBytes(ns, u64Bytes(dir));
    for (
      const e of this.#tables.cookie.range({
        start: cookieKey(ns, dir, cookie + 1),
        end: successor(prefix),
      })
    ) {
      if (entries.length === max) {
        eof = false;
        break;
      }
      const c = decodeCookieEntry(e.value);
      entries.push({ name: c.name, inode: c.inode, type: c.type, cookie: readCookie(e.key) });
    }
    return { entries, eof };
  }
}

function readCookie(key: Uint8Array): number {
  const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
  return view.getUint32(key.length - 8) * 0x1_0000_0000 + view.getUint32(key.length - 4);
}
