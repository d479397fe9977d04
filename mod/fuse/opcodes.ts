// The opcode table: for each opcode the server handles, its name, the fixed bytes its body
// starts with, how it is answered (no reply, an empty one, or a body) and the handler that
// decodes the body and calls the file system. An opcode not in the table is ENOSYS.

import * as abi from "./abi.ts";
import { FuseError } from "./fs_api.ts";
import type { Context, RawFileSystem, SetAttrIn } from "./fs_api.ts";

/** How an opcode is answered. */
export type ReplyShape = "none" | "empty" | "body";

export interface Request {
  header: abi.InHeader;
  body: abi.InReader;
  ctx: Context;
}

export interface Limits {
  validity: abi.Validity;
  /** Largest READ/readdir reply the kernel may ask for. */
  maxRead: number;
}

export interface OpSpec {
  name: string;
  /** Bytes of fixed struct the body must hold (shorter: EINVAL). */
  inBytes: number;
  reply: ReplyShape;
  handle(fs: RawFileSystem, req: Request, limits: Limits): Promise<Uint8Array | null>;
}

const ENCODER = new TextEncoder();

function entryBody(e: { nodeid: bigint; attr: abi.Attr }, limits: Limits): Uint8Array {
  return abi.entryOut(e.nodeid, 0n, e.attr, limits.validity);
}

/** fuse_file_lock after fh and owner, and the lk flags. */
function lockIn(r: abi.InReader) {
  const fh = r.u64(), owner = r.u64();
  const start = r.u64(), end = r.u64(), type = r.u32(), pid = r.u32();
  const lkFlags = r.u32();
  return {
    fh,
    owner,
    lock: { start, end, type, pid },
    flock: (lkFlags & abi.FUSE_LK_FLOCK) !== 0,
  };
}

function timeOf(valid: number, setBit: number, nowBit: number, sec: bigint, nsec: number) {
  if ((valid & nowBit) !== 0) return "now" as const;
  if ((valid & setBit) !== 0) return Number(sec) * 1000 + nsec / 1e6;
  return undefined;
}

async function readdirReply(
  fs: RawFileSystem,
  req: Request,
  plus: boolean,
  limits: Limits,
): Promise<Uint8Array> {
  const r = req.body;
  const fh = r.u64(), offset = r.u64(), size = Math.min(r.u32(), limits.maxRead);
  const perEntry = plus ? abi.DIRENTPLUS_BYTES + 8 : abi.DIRENT_BYTES + 8;
  const max = Math.max(1, Math.floor(size / perEntry));
  const entries = await fs.readdir(req.ctx, req.header.nodeid, fh, offset, max, plus);
  const w = new abi.OutWriter(size);
  let i = 0;
  for (; i < entries.length; i++) {
    const e = entries[i]!;
    const name = ENCODER.encode(e.name);
    if (w.length + abi.direntBytes(name.length, plus) > size) break;
    const entry = plus
      ? (e.entry ? { nodeid: e.entry.nodeid, attr: e.entry.attr, valid: limits.validity } : null)
      : undefined;
    abi.writeDirent(w, e.ino, e.off, e.type, name, entry);
  }
  // Entries that did not fit were looked up for nothing: the kernel never saw them.
  for (; i < entries.length; i++) {
    const e = entries[i]!.entry;
    if (e) fs.forget(e.nodeid, 1);
  }
  return w.done();
}

function renameFlagsOk(flags: number): void {
  if ((flags & ~(abi.RENAME_NOREPLACE | abi.RENAME_EXCHANGE)) !== 0) {
    throw new FuseError(abi.EINVAL, `rename flags ${flags} are not supported`);
  }
}

export const OPCODES: ReadonlyMap<number, OpSpec> = new Map<number, OpSpec>([
  [abi.FUSE_LOOKUP, {
    name: "LOOKUP",
    inBytes: 0,
    reply: "body",
    handle: async (fs, req, l) =>
      entryBody(await fs.lookup(req.ctx, req.header.nodeid, req.body.cstring()), l),
  }],
  [abi.FUSE_FORGET, {
    name: "FORGET",
    inBytes: 8,
    reply: "none",
    handle: (fs, req) => {
      fs.forget(req.header.nodeid, Number(req.body.u64()));
      return Promise.resolve(null);
    },
  }],
  [abi.FUSE_BATCH_FORGET, {
    name: "BATCH_FORGET",
    inBytes: 8,
    reply: "none",
    handle: (fs, req) => {
      const r = req.body;
      const count = r.u32();
      r.skip(4);
      for (let i = 0; i < count && r.remaining >= 16; i++) {
        const nodeid = r.u64();
        fs.forget(nodeid, Number(r.u64()));
      }
      return Promise.resolve(null);
    },
  }],
  [abi.FUSE_GETATTR, {
    name: "GETATTR",
    inBytes: 16,
    reply: "body",
    handle: async (fs, req, l) => {
      const flags = req.body.u32();
      req.body.skip(4);
      const fh = req.body.u64();
      const attr = await fs.getattr(
        req.ctx,
        req.header.nodeid,
        (flags & abi.FUSE_GETATTR_FH) !== 0 ? fh : null,
      );
      return abi.attrOut(attr, l.validity.attrMs);
    },
  }],
  [abi.FUSE_SETATTR, {
    name: "SETATTR",
    inBytes: 88,
    reply: "body",
    handle: async (fs, req, l) => {
      const r = req.body;
      const valid = r.u32();
      r.skip(4);
      const fh = r.u64(), size = r.u64n();
      r.skip(8); // lock_owner
      const atime = r.u64(), mtime = r.u64();
      r.skip(8); // ctime
      const atimensec = r.u32(), mtimensec = r.u32();
      r.skip(4);
      const mode = r.u32();
      r.skip(4);
      const uid = r.u32(), gid = r.u32();
      const changes: SetAttrIn = {};
      if (valid & abi.FATTR_MODE) changes.mode = mode & 0o7777;
      if (valid & abi.FATTR_UID) changes.uid = uid;
      if (valid & abi.FATTR_GID) changes.gid = gid;
      if (valid & abi.FATTR_SIZE) changes.size = size;
      if (valid & abi.FATTR_FH) changes.fh = fh;
      changes.atimeMs = timeOf(valid, abi.FATTR_ATIME, abi.FATTR_ATIME_NOW, atime, atimensec);
      changes.mtimeMs = timeOf(valid, abi.FATTR_MTIME, abi.FATTR_MTIME_NOW, mtime, mtimensec);
      const attr = await fs.setattr(req.ctx, req.header.nodeid, changes);
      return abi.attrOut(attr, l.validity.attrMs);
    },
  }],
  [abi.FUSE_READLINK, {
    name: "READLINK",
    inBytes: 0,
    reply: "body",
    handle: (fs, req) => fs.readlink(req.ctx, req.header.nodeid),
  }],
  [abi.FUSE_SYMLINK, {
    name: "SYMLINK",
    inBytes: 0,
    reply: "body",
    handle: async (fs, req, l) => {
      const name = req.body.cstring(), target = req.body.cstring();
      return entryBody(await fs.symlink(req.ctx, req.header.nodeid, name, target), l);
    },
  }],
  [abi.FUSE_MKNOD, {
    name: "MKNOD",
    inBytes: 16,
    reply: "body",
    handle: async (fs, req, l) => {
      const mode = req.body.u32(), rdev = req.body.u32();
      req.body.skip(8);
      const name = req.body.cstring();
      return entryBody(await fs.mknod(req.ctx, req.header.nodeid, name, mode, rdev), l);
    },
  }],
  [abi.FUSE_MKDIR, {
    name: "MKDIR",
    inBytes: 8,
    reply: "body",
    handle: async (fs, req, l) => {
      const mode = req.body.u32();
      req.body.skip(4);
      const name = req.body.cstring();
      return entryBody(await fs.mkdir(req.ctx, req.header.nodeid, name, mode), l);
    },
  }],
  [abi.FUSE_UNLINK, {
    name: "UNLINK",
    inBytes: 0,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.unlink(req.ctx, req.header.nodeid, req.body.cstring());
      return null;
    },
  }],
  [abi.FUSE_RMDIR, {
    name: "RMDIR",
    inBytes: 0,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.rmdir(req.ctx, req.header.nodeid, req.body.cstring());
      return null;
    },
  }],
  [abi.FUSE_RENAME, {
    name: "RENAME",
    inBytes: 8,
    reply: "empty",
    handle: async (fs, req) => {
      const newdir = req.body.u64();
      const name = req.body.cstring(), newName = req.body.cstring();
      await fs.rename(req.ctx, req.header.nodeid, name, newdir, newName, 0);
      return null;
    },
  }],
  [abi.FUSE_RENAME2, {
    name: "RENAME2",
    inBytes: 16,
    reply: "empty",
    handle: async (fs, req) => {
      const newdir = req.body.u64(), flags = req.body.u32();
      req.body.skip(4);
      renameFlagsOk(flags);
      const name = req.body.cstring(), newName = req.body.cstring();
      await fs.rename(req.ctx, req.header.nodeid, name, newdir, newName, flags);
      return null;
    },
  }],
  [abi.FUSE_LINK, {
    name: "LINK",
    inBytes: 8,
    reply: "body",
    handle: async (fs, req, l) => {
      const old = req.body.u64();
      const name = req.body.cstring();
      return entryBody(await fs.link(req.ctx, old, req.header.nodeid, name), l);
    },
  }],
  [abi.FUSE_OPEN, {
    name: "OPEN",
    inBytes: 8,
    reply: "body",
    handle: async (fs, req) => {
      const o = await fs.open(req.ctx, req.header.nodeid, req.body.u32());
      return abi.openOut(o.fh, o.openFlags);
    },
  }],
  [abi.FUSE_CREATE, {
    name: "CREATE",
    inBytes: 16,
    reply: "body",
    handle: async (fs, req, l) => {
      const flags = req.body.u32(), mode = req.body.u32();
      req.body.skip(8);
      const name = req.body.cstring();
      const { entry, opened } = await fs.create(req.ctx, req.header.nodeid, name, mode, flags);
      const out = new Uint8Array(abi.ENTRY_OUT_BYTES + abi.OPEN_OUT_BYTES);
      out.set(entryBody(entry, l));
      out.set(abi.openOut(opened.fh, opened.openFlags), abi.ENTRY_OUT_BYTES);
      return out;
    },
  }],
  [abi.FUSE_READ, {
    name: "READ",
    inBytes: 40,
    reply: "body",
    handle: (fs, req, l) => {
      const fh = req.body.u64(), offset = req.body.u64n(), size = req.body.u32();
      return fs.read(req.ctx, req.header.nodeid, fh, offset, Math.min(size, l.maxRead));
    },
  }],
  [abi.FUSE_WRITE, {
    name: "WRITE",
    inBytes: 40,
    reply: "body",
    handle: async (fs, req) => {
      const r = req.body;
      const fh = r.u64(), offset = r.u64n(), size = r.u32();
      r.skip(20);
      const data = r.bytes(size);
      return abi.writeOut(await fs.write(req.ctx, req.header.nodeid, fh, offset, data));
    },
  }],
  [abi.FUSE_STATFS, {
    name: "STATFS",
    inBytes: 0,
    reply: "body",
    handle: async (fs, req) => abi.statfsOut(await fs.statfs(req.ctx, req.header.nodeid)),
  }],
  [abi.FUSE_RELEASE, {
    name: "RELEASE",
    inBytes: 24,
    reply: "empty",
    handle: async (fs, req) => {
      const fh = req.body.u64();
      req.body.skip(4);
      const releaseFlags = req.body.u32(), owner = req.body.u64();
      const flockOwner = (releaseFlags & abi.FUSE_RELEASE_FLOCK_UNLOCK) !== 0 ? owner : null;
      await fs.release(req.header.nodeid, fh, flockOwner);
      return null;
    },
  }],
  [abi.FUSE_FSYNC, {
    name: "FSYNC",
    inBytes: 16,
    reply: "empty",
    handle: async (fs, req) => {
      const fh = req.body.u64(), flags = req.body.u32();
      await fs.fsync(req.ctx, req.header.nodeid, fh, (flags & 1) !== 0);
      return null;
    },
  }],
  [abi.FUSE_SETXATTR, {
    name: "SETXATTR",
    inBytes: 8,
    reply: "empty",
    handle: async (fs, req) => {
      const size = req.body.u32(), flags = req.body.u32();
      const name = req.body.cstring();
      const value = req.body.bytes(size).slice();
      await fs.setxattr(req.ctx, req.header.nodeid, name, value, flags);
      return null;
    },
  }],
  [abi.FUSE_GETXATTR, {
    name: "GETXATTR",
    inBytes: 8,
    reply: "body",
    handle: async (fs, req) => {
      const size = req.body.u32();
      req.body.skip(4);
      const value = await fs.getxattr(req.ctx, req.header.nodeid, req.body.cstring());
      if (size === 0) return abi.getxattrOut(value.length);
      if (value.length > size) throw new FuseError(abi.ERANGE, "the value is larger");
      return value;
    },
  }],
  [abi.FUSE_LISTXATTR, {
    name: "LISTXATTR",
    inBytes: 8,
    reply: "body",
    handle: async (fs, req) => {
      const size = req.body.u32();
      const names = await fs.listxattr(req.ctx, req.header.nodeid);
      const list = ENCODER.encode(names.map((n) => `${n}\0`).join(""));
      if (size === 0) return abi.getxattrOut(list.length);
      if (list.length > size) throw new FuseError(abi.ERANGE, "the list is larger");
      return list;
    },
  }],
  [abi.FUSE_REMOVEXATTR, {
    name: "REMOVEXATTR",
    inBytes: 0,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.removexattr(req.ctx, req.header.nodeid, req.body.cstring());
      return null;
    },
  }],
  [abi.FUSE_FLUSH, {
    name: "FLUSH",
    inBytes: 24,
    reply: "empty",
    handle: async (fs, req) => {
      const fh = req.body.u64();
      req.body.skip(8);
      await fs.flush(req.ctx, req.header.nodeid, fh, req.body.u64());
      return null;
    },
  }],
  [abi.FUSE_OPENDIR, {
    name: "OPENDIR",
    inBytes: 8,
    reply: "body",
    handle: async (fs, req) => {
      const o = await fs.opendir(req.ctx, req.header.nodeid);
      return abi.openOut(o.fh, o.openFlags);
    },
  }],
  [abi.FUSE_READDIR, {
    name: "READDIR",
    inBytes: 40,
    reply: "body",
    handle: (fs, req, l) => readdirReply(fs, req, false, l),
  }],
  [abi.FUSE_READDIRPLUS, {
    name: "READDIRPLUS",
    inBytes: 40,
    reply: "body",
    handle: (fs, req, l) => readdirReply(fs, req, true, l),
  }],
  [abi.FUSE_RELEASEDIR, {
    name: "RELEASEDIR",
    inBytes: 24,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.releasedir(req.header.nodeid, req.body.u64());
      return null;
    },
  }],
  [abi.FUSE_FSYNCDIR, {
    name: "FSYNCDIR",
    inBytes: 16,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.fsyncdir(req.ctx, req.header.nodeid, req.body.u64());
      return null;
    },
  }],
  [abi.FUSE_GETLK, {
    name: "GETLK",
    inBytes: 48,
    reply: "body",
    handle: async (fs, req) =>
      abi.lkOut(await fs.getlk(req.ctx, req.header.nodeid, lockIn(req.body))),
  }],
  [abi.FUSE_SETLK, {
    name: "SETLK",
    inBytes: 48,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.setlk(req.ctx, req.header.nodeid, lockIn(req.body), false);
      return null;
    },
  }],
  [abi.FUSE_SETLKW, {
    name: "SETLKW",
    inBytes: 48,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.setlk(req.ctx, req.header.nodeid, lockIn(req.body), true);
      return null;
    },
  }],
  [abi.FUSE_ACCESS, {
    name: "ACCESS",
    inBytes: 8,
    reply: "empty",
    handle: async (fs, req) => {
      await fs.access(req.ctx, req.header.nodeid, req.body.u32());
      return null;
    },
  }],
  [abi.FUSE_FALLOCATE, {
    name: "FALLOCATE",
    inBytes: 32,
    reply: "empty",
    handle: async (fs, req) => {
      const r = req.body;
      const fh = r.u64(), offset = r.u64n(), length = r.u64n(), mode = r.u32();
      await fs.fallocate(req.ctx, req.header.nodeid, fh, offset, length, mode);
      return null;
    },
  }],
  [abi.FUSE_LSEEK, {
    name: "LSEEK",
    inBytes: 24,
    reply: "body",
    handle: async (fs, req) => {
      const fh = req.body.u64(), offset = req.body.u64n(), whence = req.body.u32();
      return abi.u64Out(await fs.lseek(req.ctx, req.header.nodeid, fh, offset, whence));
    },
  }],
]);

/** Names of every opcode, handled or not, for logs. */
export function opcodeName(opcode: number): string {
  return OPCODES.get(opcode)?.name ?? OTHER_NAMES[opcode] ?? `OPCODE_${opcode}`;
}

const OTHER_NAMES: Record<number, string> = {
  [abi.FUSE_INIT]: "INIT",
  [abi.FUSE_INTERRUPT]: "INTERRUPT",
  [abi.FUSE_DESTROY]: "DESTROY",
  [abi.FUSE_BMAP]: "BMAP",
  [abi.FUSE_IOCTL]: "IOCTL",
  [abi.FUSE_POLL]: "POLL",
  [abi.FUSE_NOTIFY_REPLY]: "NOTIFY_REPLY",
  [abi.FUSE_COPY_FILE_RANGE]: "COPY_FILE_RANGE",
  [abi.FUSE_SETUPMAPPING]: "SETUPMAPPING",
  [abi.FUSE_REMOVEMAPPING]: "REMOVEMAPPING",
  [abi.FUSE_SYNCFS]: "SYNCFS",
  [abi.FUSE_TMPFILE]: "TMPFILE",
  [abi.FUSE_STATX]: "STATX",
};
