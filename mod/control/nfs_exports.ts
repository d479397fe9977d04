// NFS exports as cluster-state records: which path a client mounts, which tenant (and
// optionally which one bucket) it reaches, from which client networks, read-only or
// read-write, with or without root squash. Pure, like the state machine that folds them:
// every node holds the same exports, so every node's gateway answers a client alike.
//
// An export's id (1..NFS_EXPORT_ID_MAX) rides in every NFS file handle of the export, so a
// handle is checked against the export it was issued under. Ids are handed out round-robin
// past the last one given, so a removed export's id (and the handles clients still hold) is
// reused as late as possible; a reused id still never reaches another tenant's data, since
// the gateway checks a handle's namespace against its export's tenant.

/** Exports the cluster holds (one byte of each file handle names the export). */
export const NFS_EXPORTS_MAX = 255;
/** The largest export id; 0 is the built-in default export (loopback, default tenant). */
export const NFS_EXPORT_ID_MAX = 255;
/** Client networks one export may list. */
export const NFS_EXPORT_CLIENTS_MAX = 64;
/** An export path's bytes at most (MOUNT's MNTPATHLEN is 1024; exports are short names). */
export const NFS_EXPORT_PATH_BYTES_MAX = 255;
/** The uid and gid root is squashed to (nobody/nogroup), unless an export says otherwise. */
export const NFS_ANON_ID_DEFAULT = 65534;

export type NfsExportAccess = "ro" | "rw";

export interface NfsExport {
  /** In file handles (1..NFS_EXPORT_ID_MAX), assigned when the record is applied. */
  id: number;
  /** What a client mounts: "/" or "/name[/name...]". */
  path: string;
  /** 32 hex digits. */
  tenantId: string;
  /** One bucket of the tenant as the export's root, or null: every bucket, as directories. */
  bucket: string | null;
  /** Client networks (CIDR, IPv4 or IPv6; a bare address is a /32 or /128). */
  clients: string[];
  access: NfsExportAccess;
  /** Whether uid 0 is mapped to anonUid/anonGid. */
  rootSquash: boolean;
  anonUid: number;
  anonGid: number;
  createdAtMs: number;
}

/** What an `nfs_export` record carries: the export without its id (the state assigns it). */
export type NfsExportSpec = Omit<NfsExport, "id">;

/** The export records of the cluster state. */
export type NfsExportRecord =
  | { type: "nfs_export"; spec: NfsExportSpec }
  | { type: "nfs_export_remove"; path: string };

/** A parsed client network. */
export interface Cidr {
  family: 4 | 6;
  /** The address, 4 or 16 bytes. */
  bytes: Uint8Array;
  prefix: number;
}

/** Why `path` cannot be an export path, or null. */
export function nfsExportPathProblem(path: string): string | null {
  if (typeof path !== "string") return "an export path is text";
  if (new TextEncoder().encode(path).length > NFS_EXPORT_PATH_BYTES_MAX) {
    return `an export path has at most ${NFS_EXPORT_PATH_BYTES_MAX} bytes`;
  }
  if (path === "/") return null;
  if (!/^(\/[A-Za-z0-9._-]+)+$/.test(path) || /\/\.\.?(\/|$)/.test(path)) {
    return `export path ${JSON.stringify(path)} is not "/" or /name[/name...] of A-Z a-z 0-9 . _ -`;
  }
  return null;
}

function parseIpv4(text: string): Uint8Array | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (m === null) return null;
  const octets = m.slice(1).map(Number);
  if (octets.some((o) => o > 255)) return null;
  return Uint8Array.from(octets);
}

function parseIpv6(text: string): Uint8Array | null {
  let h = text.toLowerCase();
  // An IPv4 tail (::ffff:10.0.0.1) becomes two groups.
  const v4 = /^(.*:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(h);
  if (v4 !== null) {
    const b = parseIpv4(v4[2]!);
    if (b === null) return null;
    h = `${v4[1]}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  if (!/^[0-9a-f:]+$/.test(h) || !h.includes(":")) return null;
  const halves = h.split("::");
  if (halves.length > 2) return null;
  const head = halves[0] === "" ? [] : halves[0]!.split(":");
  const tail = halves.length === 2 && halves[1] !== "" ? halves[1]!.split(":") : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (groups.some((g) => g.length === 0 || g.length > 4)) return null;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = parseInt(g, 16);
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

/** An IP literal (IPv6 with or without brackets) as bytes; IPv4-mapped IPv6 as IPv4. */
export function parseIpAddress(host: string): { family: 4 | 6; bytes: Uint8Array } | null {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  const v4 = parseIpv4(h);
  if (v4 !== null) return { family: 4, bytes: v4 };
  const v6 = parseIpv6(h);
  if (v6 === null) return null;
  const mapped = v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff;
  return mapped ? { family: 4, bytes: v6.slice(12) } : { family: 6, bytes: v6 };
}

/** A client network "10.0.0.0/8", "fd00::/8", or one address; null when it is none. */
export function parseCidr(text: string): Cidr | null {
  if (typeof text !== "string") return null;
  const slash = text.indexOf("/");
  const address = parseIpAddress(slash < 0 ? text : text.slice(0, slash));
  if (address === null) return null;
  const bits = address.family === 4 ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > bits) return null;
    prefix = Number(p);
  }
  return { ...address, prefix };
}

/** Whether the client address `host` lies in `cidr`. */
export function cidrContains(cidr: Cidr, host: string): boolean {
  const a = parseIpAddress(host);
  if (a === null || a.family !== cidr.family) return false;
  let left = cidr.prefix;
  for (let i = 0; i < a.bytes.length && left > 0; i++, left -= 8) {
    const mask = left >= 8 ? 0xff : (0xff << (8 - left)) & 0xff;
    if ((a.bytes[i]! & mask) !== (cidr.bytes[i]! & mask)) return false;
  }
  return true;
}

/** Why `spec` cannot be an export, or null. */
export function nfsExportSpecProblem(spec: NfsExportSpec): string | null {
  const path = nfsExportPathProblem(spec.path);
  if (path !== null) return path;
  if (!/^[0-9a-f]{32}$/.test(spec.tenantId)) return "an export's tenant is 32 hex digits";
  if (spec.bucket !== null) {
    if (
      typeof spec.bucket !== "string" || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(spec.bucket)
    ) {
      return `bucket ${JSON.stringify(spec.bucket)} is not a bucket name`;
    }
  }
  if (!Array.isArray(spec.clients) || spec.clients.length === 0) {
    return "an export names at least one client network";
  }
  if (spec.clients.length > NFS_EXPORT_CLIENTS_MAX) {
    return `an export names at most ${NFS_EXPORT_CLIENTS_MAX} client networks`;
  }
  for (const c of spec.clients) {
    if (parseCidr(c) === null) {
      return `client network ${JSON.stringify(c)} is not an address/prefix`;
    }
  }
  if (spec.access !== "ro" && spec.access !== "rw") return "an export's access is ro or rw";
  if (typeof spec.rootSquash !== "boolean") return "root squash is true or false";
  for (const [what, v] of [["anonUid", spec.anonUid], ["anonGid", spec.anonGid]] as const) {
    if (!Number.isSafeInteger(v) || v < 0 || v > 0xffff_ffff) return `${what} is a 32-bit id`;
  }
  if (!Number.isSafeInteger(spec.createdAtMs) || spec.createdAtMs < 0) {
    return "createdAtMs is a time";
  }
  return null;
}

/** The spec of a JSON record, checked; throws with the problem (the caller's error type). */
export function nfsExportSpecFromJson(json: unknown, fail: (why: string) => Error): NfsExportSpec {
  if (typeof json !== "object" || json === null) throw fail("an export spec is an object");
  // deno-lint-ignore no-explicit-any
  const j = json as any;
  const spec: NfsExportSpec = {
    path: j.path,
    tenantId: j.tenantId,
    bucket: j.bucket ?? null,
    clients: Array.isArray(j.clients) ? [...j.clients] : j.clients,
    access: j.access,
    rootSquash: j.rootSquash,
    anonUid: j.anonUid,
    anonGid: j.anonGid,
    createdAtMs: j.createdAtMs,
  };
  const problem = nfsExportSpecProblem(spec);
  if (problem !== null) throw fail(problem);
  return spec;
}

/** The exports of one node's cluster state, folded from records in log order. */
export class NfsExportTable {
  readonly #byPath = new Map<string, NfsExport>();
  /** The last id handed out (ids go round-robin from there). */
  #lastId = 0;

  /** Why `record` is refused now, or null once it is applied. */
  apply(record: NfsExportRecord): string | null {
    if (record.type === "nfs_export_remove") {
      if (!this.#byPath.delete(record.path)) return `no NFS export ${record.path}`;
      return null;
    }
    const spec = record.spec;
    const problem = nfsExportSpecProblem(spec);
    if (problem !== null) return problem;
    if (this.#byPath.has(spec.path)) return `NFS export ${spec.path} exists`;
    if (this.#byPath.size >= NFS_EXPORTS_MAX) {
      return `the cluster holds ${NFS_EXPORTS_MAX} NFS exports (NFS_EXPORTS_MAX)`;
    }
    const used = new Set([...this.#byPath.values()].map((e) => e.id));
    let id = this.#lastId;
    do id = (id % NFS_EXPORT_ID_MAX) + 1; while (used.has(id));
    this.#lastId = id;
    this.#byPath.set(spec.path, { ...spec, clients: [...spec.clients], id });
    return null;
  }

  list(): NfsExport[] {
    return [...this.#byPath.values()]
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
      .map((e) => ({ ...e, clients: [...e.clients] }));
  }

  /** The table for a snapshot (ids and the round-robin position included). */
  snapshot(): { lastId: number; exports: NfsExport[] } {
    return { lastId: this.#lastId, exports: this.list() };
  }

  /** Replaces the table with a snapshot's; throws `fail(problem)` on a bad one. */
  restore(snapshot: unknown, fail: (why: string) => Error): void {
    this.clear();
    if (snapshot === undefined || snapshot === null) return;
    // deno-lint-ignore no-explicit-any
    const s = snapshot as any;
    for (const e of s.exports ?? []) {
      const spec = nfsExportSpecFromJson(e, fail);
      const id = e.id;
      if (!Number.isSafeInteger(id) || id < 1 || id > NFS_EXPORT_ID_MAX) {
        throw fail(`export ${spec.path} has id ${id}`);
      }
      if (this.#byPath.has(spec.path) || [...this.#byPath.values()].some((x) => x.id === id)) {
        throw fail(`export ${spec.path} or id ${id} twice`);
      }
      if (this.#byPath.size >= NFS_EXPORTS_MAX) throw fail("too many NFS exports");
      this.#byPath.set(spec.path, { ...spec, id });
    }
    const lastId = s.lastId ?? 0;
    if (!Number.isSafeInteger(lastId) || lastId < 0 || lastId > NFS_EXPORT_ID_MAX) {
      throw fail(`NFS export lastId ${lastId}`);
    }
    this.#lastId = lastId;
  }

  clear(): void {
    this.#byPath.clear();
    this.#lastId = 0;
  }
}
