// NFS exports as the gateway applies them: which export a MOUNT path or a file handle falls
// under, whether the client's address may use it, and the file system a call then sees (an
// ExportFs: the tenant's BucketFs held to the export's root, read-only if so exported, with
// root squashed). Every protocol version asks the same questions here (NFSv3 and MOUNT now,
// v4's PUTFH/PUTROOTFH/LOOKUP through scopeOf() and mount() too), so they answer alike.
//
// With no export configured there is one built-in export (id 0): the default tenant's
// buckets under "/", to loopback clients, read-write, without root squash: a fresh node
// passes the deployment guide's mount check. Once exports exist, only they are served.

import { assert, fromHex, isLoopbackAddress, toHex } from "../base/mod.ts";
import { cidrContains, type NfsExport, parseCidr } from "../control/nfs_exports.ts";
import type { Logger } from "../obs/mod.ts";
import {
  ACCESS_DELETE,
  ACCESS_EXTEND,
  ACCESS_MODIFY,
  BucketFs,
  type Caller,
  type CreateHow,
  type DirEntry,
  type FileAttr,
  type NfsObjectBackend,
  type SetAttr,
} from "./bucket_fs.ts";
import {
  NFS3ERR_ACCES,
  NFS3ERR_BADHANDLE,
  NFS3ERR_NOENT,
  NFS3ERR_NOTDIR,
  NFS3ERR_ROFS,
  NFS3ERR_STALE,
  NFS3ERR_XDEV,
  NfsError,
} from "./errors.ts";
import { exportIdOf, type FsNode, type HandleTable } from "./file_handle.ts";

export type { NfsExport } from "../control/nfs_exports.ts";

/** The built-in export's id (in handles). */
export const NFS_DEFAULT_EXPORT_ID = 0;
/**
 * Tenants whose file systems the gateway holds at once: one per export at most (exports are
 * bounded by NFS_EXPORTS_MAX), plus the default tenant.
 */
export const NFS_TENANT_FS_MAX = 256;

const TENANT_ID_BYTES = 16;

export interface NfsExportsOptions {
  backend: NfsObjectBackend;
  /** The tenant of the built-in export (served while no export is configured). */
  defaultTenant: Uint8Array;
  handles: HandleTable;
  /** The configured exports (the cluster state's), read at every call; none: the default. */
  exports?: () => NfsExport[];
  /** Who may use the built-in export (default: loopback). */
  defaultClientAllowed?: (host: string) => boolean;
  logger?: Logger;
  writeIdleMs?: number;
  writeHoleBytesMax?: number;
}

/** AUTH_SYS credentials as a call carries them. */
export interface AuthSys {
  uid: number;
  gid: number;
  gids: readonly number[];
}

/** The parsed networks of one export record (cached by record). */
interface Scope {
  record: NfsExport;
  allowed: (host: string) => boolean;
  fs: ExportFs;
}

export class NfsExports {
  readonly #options: NfsExportsOptions;
  readonly #fsByTenant = new Map<string, BucketFs>();
  /** Scopes by export id, rebuilt when the export's record changes. */
  readonly #scopes = new Map<number, { key: string; scope: Scope }>();
  readonly #default: NfsExport;

  constructor(options: NfsExportsOptions) {
    assert(options.defaultTenant.length === TENANT_ID_BYTES, "a tenant id is 16 bytes");
    this.#options = options;
    this.#default = {
      id: NFS_DEFAULT_EXPORT_ID,
      path: "/",
      tenantId: toHex(options.defaultTenant),
      bucket: null,
      clients: ["127.0.0.0/8", "::1"],
      access: "rw",
      rootSquash: false,
      anonUid: 65534,
      anonGid: 65534,
      createdAtMs: 0,
    };
  }

  /** The exports served now: the configured ones, or the built-in one when there are none. */
  list(): NfsExport[] {
    const configured = this.#options.exports?.() ?? [];
    return configured.length === 0 ? [this.#default] : configured;
  }

  /** The tenant file system of the built-in export (for FSSTAT-like questions and tests). */
  get defaultFs(): BucketFs {
    return this.#tenantFs(this.#default.tenantId);
  }

  #tenantFs(tenantHex: string): BucketFs {
    let fs = this.#fsByTenant.get(tenantHex);
    if (fs === undefined) {
      assert(this.#fsByTenant.size < NFS_TENANT_FS_MAX, "more tenant file systems than exports");
      const tenantId = fromHex(tenantHex, TENANT_ID_BYTES);
      assert(tenantId !== null, "an export's tenant is 32 hex digits");
      fs = new BucketFs({
        backend: this.#options.backend,
        tenantId,
        logger: this.#options.logger,
        writeIdleMs: this.#options.writeIdleMs,
        writeHoleBytesMax: this.#options.writeHoleBytesMax,
      });
      this.#fsByTenant.set(tenantHex, fs);
    }
    return fs;
  }

  #scope(record: NfsExport): Scope {
    const key = JSON.stringify(record);
    const known = this.#scopes.get(record.id);
    if (known !== undefined && known.key === key) return known.scope;
    let allowed: (host: string) => boolean;
    if (record.id === NFS_DEFAULT_EXPORT_ID && record === this.#default) {
      allowed = this.#options.defaultClientAllowed ?? isLoopbackAddress;
    } else {
      const nets = record.clients.map((c) => parseCidr(c)).filter((c) => c !== null);
      allowed = (host) => nets.some((n) => cidrContains(n, host));
    }
    const fs = new ExportFs(record, this.#tenantFs(record.tenantId), this.#options.handles);
    const scope = { record, allowed, fs };
    this.#scopes.set(record.id, { key, scope });
    return scope;
  }

  /**
   * MNT: the export a mount path falls under (the longest export path that is it or a parent
   * of it), checked against the client's address, and the directory the path names in it.
   * NFS3ERR_ACCES for a client outside the export's networks, NOENT for no export.
   */
  async mount(
    path: string,
    host: string,
    auth: AuthSys,
  ): Promise<{ fs: ExportFs; node: FsNode; handle: Uint8Array }> {
    const clean = "/" + path.split("/").filter((p) => p !== "" && p !== ".").join("/");
    let best: NfsExport | null = null;
    for (const e of this.list()) {
      const under = e.path === "/" || clean === e.path || clean.startsWith(`${e.path}/`);
      if (under && (best === null || e.path.length > best.path.length)) best = e;
    }
    if (best === null) throw new NfsError(NFS3ERR_NOENT, `no export holds ${clean}`);
    const scope = this.#scope(best);
    if (!scope.allowed(host)) {
      throw new NfsError(NFS3ERR_ACCES, `${host} is outside the networks of export ${best.path}`);
    }
    const rest = best.path === "/" ? clean : clean.slice(best.path.length);
    const node = await scope.fs.resolve(rest, scope.fs.caller(auth));
    return { fs: scope.fs, node, handle: scope.fs.handle(node) };
  }

  /**
   * The file system a call with handle `fh` from `host` sees: NFS3ERR_ACCES when the client
   * is outside the handle's export's networks, STALE when the export is gone.
   */
  scopeOf(fh: Uint8Array, host: string): ExportFs {
    const id = exportIdOf(fh);
    if (id === null) throw new NfsError(NFS3ERR_BADHANDLE, "a handle is at least 4 bytes");
    const record = this.list().find((e) => e.id === id);
    if (record === undefined) throw new NfsError(NFS3ERR_STALE, `export ${id} is gone`);
    const scope = this.#scope(record);
    if (!scope.allowed(host)) {
      throw new NfsError(NFS3ERR_ACCES, `${host} is outside the networks of export ${record.path}`);
    }
    return scope.fs;
  }

  /** The file systems of the exports `host` may use (NFSv4's pseudo-file system shows them). */
  visible(host: string): ExportFs[] {
    return this.list().map((e) => this.#scope(e)).filter((s) => s.allowed(host)).map((s) => s.fs);
  }

  /** Whether `host` may use any export (the RPC-level gate of calls without a handle). */
  anyAllowed(host: string): boolean {
    return this.list().some((e) => this.#scope(e).allowed(host));
  }

  /** Commits every tenant file system's pending writes (shutdown). */
  async close(): Promise<void> {
    for (const fs of this.#fsByTenant.values()) await fs.close();
  }
}

/**
 * A tenant's BucketFs as one export shows it: nodes outside the export's root are refused,
 * ".." stops at the root, a read-only export refuses changes with NFS3ERR_ROFS, and root
 * squash maps uid 0 to the export's anonymous ids.
 */
export class ExportFs {
  readonly export: NfsExport;
  readonly fs: BucketFs;
  readonly #handles: HandleTable;
  /** The export's root: "/" of the tenant, or one bucket's directory. */
  readonly root: FsNode;

  constructor(record: NfsExport, fs: BucketFs, handles: HandleTable) {
    this.export = record;
    this.fs = fs;
    this.#handles = handles;
    this.root = record.bucket === null
      ? { kind: "root" }
      : { kind: "dir", ns: fs.namespaceIdOf(record.bucket), path: "" };
  }

  get readOnly(): boolean {
    return this.export.access === "ro";
  }

  /** The caller a call's AUTH_SYS credentials make, root squashed when the export says so. */
  caller(auth: AuthSys): Caller {
    if (this.export.rootSquash && auth.uid === 0) {
      return { uid: this.export.anonUid, gid: this.export.anonGid, gids: [] };
    }
    return { uid: auth.uid, gid: auth.gid, gids: auth.gids };
  }

  handle(node: FsNode): Uint8Array {
    return this.#handles.encode(node, this.export.id);
  }

  /** The node of a handle of this export; XDEV for another export's, ACCES outside the root. */
  decode(fh: Uint8Array): FsNode {
    if (exportIdOf(fh) !== this.export.id) {
      throw new NfsError(NFS3ERR_XDEV, "the handles are of different exports");
    }
    const node = this.#handles.decode(fh);
    this.#inside(node);
    return node;
  }

  #inside(node: FsNode): void {
    const root = this.root;
    if (root.kind === "root") return;
    if (node.kind === "root" || toHex(node.ns) !== toHex((root as { ns: Uint8Array }).ns)) {
      throw new NfsError(NFS3ERR_ACCES, "the handle is outside the export");
    }
  }

  /** Whether `node` is the export's root (where NFSv4's pseudo-file system joins it). */
  isRoot(node: FsNode): boolean {
    const root = this.root;
    if (root.kind === "root") return node.kind === "root";
    return node.kind === "dir" && node.path === "" &&
      toHex(node.ns) === toHex((root as { ns: Uint8Array }).ns);
  }

  #writable(): void {
    if (this.readOnly) throw new NfsError(NFS3ERR_ROFS, `export ${this.export.path} is read-only`);
  }

  getattr(node: FsNode): Promise<FileAttr> {
    return this.fs.getattr(node);
  }

  access(attr: FileAttr, caller: Caller, asked: number): number {
    const granted = this.fs.access(attr, caller, asked);
    return this.readOnly ? granted & ~(ACCESS_MODIFY | ACCESS_EXTEND | ACCESS_DELETE) : granted;
  }

  parentOf(node: FsNode): FsNode {
    return this.isRoot(node) ? node : this.fs.parentOf(node);
  }

  async lookup(
    dir: FsNode,
    name: string,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    if (name === ".." && this.isRoot(dir)) return await this.fs.lookup(dir, ".", caller);
    return await this.fs.lookup(dir, name, caller);
  }

  async readdir(
    dir: FsNode,
    cookie: bigint,
    max: number,
    plus: boolean,
    caller: Caller,
  ): Promise<{ entries: DirEntry[]; eof: boolean }> {
    const listed = await this.fs.readdir(dir, cookie, max, plus, caller);
    if (this.isRoot(dir)) {
      for (const e of listed.entries) {
        if (e.name !== "..") continue;
        const self = listed.entries.find((x) => x.name === ".");
        e.node = dir;
        e.fileid = self?.fileid ?? e.fileid;
        if (plus) e.attr = self?.attr ?? await this.fs.getattr(dir);
      }
    }
    return listed;
  }

  readlink(node: FsNode): Promise<string> {
    return this.fs.readlink(node);
  }

  read(
    node: FsNode,
    offset: number,
    count: number,
    caller: Caller,
  ): Promise<{ data: Uint8Array; eof: boolean; attr: FileAttr }> {
    return this.fs.read(node, offset, count, caller);
  }

  async write(
    node: FsNode,
    offset: number,
    data: Uint8Array,
    stable: boolean,
    caller: Caller,
  ): Promise<void> {
    this.#writable();
    return await this.fs.write(node, offset, data, stable, caller);
  }

  commit(node: FsNode): Promise<void> {
    return this.fs.commit(node);
  }

  async setattr(
    node: FsNode,
    attr: SetAttr,
    caller: Caller,
    guardCtimeMs: number | null,
  ): Promise<FileAttr> {
    this.#writable();
    return await this.fs.setattr(node, attr, caller, guardCtimeMs);
  }

  async create(
    dir: FsNode,
    name: string,
    how: CreateHow,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    this.#writable();
    return await this.fs.create(dir, name, how, caller);
  }

  async mkdir(
    dir: FsNode,
    name: string,
    attr: SetAttr,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    this.#writable();
    return await this.fs.mkdir(dir, name, attr, caller);
  }

  async symlink(
    dir: FsNode,
    name: string,
    target: string,
    attr: SetAttr,
    caller: Caller,
  ): Promise<{ node: FsNode; attr: FileAttr }> {
    this.#writable();
    return await this.fs.symlink(dir, name, target, attr, caller);
  }

  async link(file: FsNode, dir: FsNode, name: string, caller: Caller): Promise<FileAttr> {
    this.#writable();
    return await this.fs.link(file, dir, name, caller);
  }

  async remove(dir: FsNode, name: string, caller: Caller): Promise<void> {
    this.#writable();
    return await this.fs.remove(dir, name, caller);
  }

  async rmdir(dir: FsNode, name: string, caller: Caller): Promise<void> {
    this.#writable();
    return await this.fs.rmdir(dir, name, caller);
  }

  async rename(
    fromDir: FsNode,
    fromName: string,
    toDir: FsNode,
    toName: string,
    caller: Caller,
  ): Promise<void> {
    this.#writable();
    return await this.fs.rename(fromDir, fromName, toDir, toName, caller);
  }

  usage(): Promise<{ bytes: number; objects: number }> {
    return this.fs.usage();
  }

  /** The directory a path inside the export names ("" or "/": the export's root). */
  async resolve(path: string, caller: Caller): Promise<FsNode> {
    let node = this.root;
    for (const part of path.split("/")) {
      if (part === "" || part === ".") continue;
      node = (await this.lookup(node, part, caller)).node;
    }
    if ((await this.fs.getattr(node)).type !== "dir") {
      throw new NfsError(NFS3ERR_NOTDIR, "a mount path names a directory");
    }
    return node;
  }
}
