// Cluster state as a replicated state machine: the records every node must agree on (the
// cluster's creation, tenants, S3 access keys, system key epochs, tenant KEKs of the built-in
// KMS, node membership and state), folded from one Raft group in log order, so all nodes hold
// the same state. Pure: no I/O, no clock, no randomness; secrets arrive already sealed under
// the cluster key and are only ever held sealed here.
//
// DESIGN: the cluster state has a Raft group of its own (CLUSTER_STATE_GROUP_ID) beside the
// data shards, on the same multi-group host, log environment and transport. A group of its
// own rather than reserved record kinds in shard 0: its log stays small (no object traffic
// to replay or compact), data shards can later split, merge and move without carrying it,
// and its leadership and read index are independent of any data shard's. The group id is a
// u32 far above any data shard's (shard maps hold at most SHARD_MAP_SHARDS_MAX shards
// numbered from 0), so it never collides with one.

import { assert } from "../base/mod.ts";
import type { Entry, Snapshot } from "../raft/mod.ts";
import {
  type NfsExport,
  type NfsExportRecord,
  nfsExportSpecFromJson,
  NfsExportTable,
} from "./nfs_exports.ts";

/** The Raft group that carries cluster state (never a data shard id). */
export const CLUSTER_STATE_GROUP_ID = 0xffff_ff00;
/** Tenants the cluster state holds. */
export const CLUSTER_TENANTS_MAX = 65_536;
/** S3 access keys across all tenants. */
export const CLUSTER_ACCESS_KEYS_MAX = 262_144;
/** Access keys one tenant may hold (as the node-local store allowed). */
export const CLUSTER_ACCESS_KEYS_PER_TENANT_MAX = 100;
/** System key epochs (at one rotation a day, eleven years). */
export const CLUSTER_KEY_EPOCHS_MAX = 4096;
/** Tenant KEKs of the built-in KMS, live and destroyed. */
export const CLUSTER_TENANT_KEKS_MAX = 65_536;
/** Nodes the membership records may name. */
export const CLUSTER_NODES_MAX = 1024;
/** Largest encoded record (sealed keys are small; this leaves room for names). */
export const CLUSTER_RECORD_BYTES_MAX = 16 * 1024;
/** Longest text field of a record (ids, names, addresses). */
export const CLUSTER_TEXT_BYTES_MAX = 256;

/** First byte of every cluster-state command (a data shard's commands start 1 or 2). */
const COMMAND_CLUSTER_RECORD = 0xc5;
const RECORD_VERSION = 1;
const SNAPSHOT_VERSION = 1;

export type NodeState = "up" | "down" | "draining" | "removed";
export const NODE_STATES: readonly NodeState[] = ["up", "down", "draining", "removed"];

/** A node as the cluster knows it; the narrow view placement and status pages consume. */
export interface ClusterNode {
  id: number;
  /** Its Raft/fabric address, host:port. */
  addr: string;
  state: NodeState;
  sinceMs: number;
}

/**
 * The narrow view of membership that placement, repair and status pages consume
 * (ClusterStateService implements it): every node named so far, with its state.
 */
export interface NodeDirectory {
  nodes(): ClusterNode[];
}

/** The cluster's birth certificate, written once by the bootstrap node. */
export interface ClusterCreation {
  /** 32 hex digits, random. */
  clusterUid: string;
  /** Hex of a MAC of the cluster key, so a node can tell the right key from a wrong one. */
  keyCheck: string;
  /** The default tenant's id (32 hex digits). */
  defaultTenant: string;
  bootstrapNode: number;
  createdAtMs: number;
}

export interface ClusterAccessKey {
  accessKeyId: string;
  tenantId: string;
  createdAtMs: number;
  /** The secret, sealed under the cluster key (bound to key id and tenant). */
  sealedSecret: Uint8Array;
}

export interface ClusterKeyEpoch {
  epoch: number;
  createdAtMs: number;
  /** The master key, sealed under the cluster key (bound to the epoch). */
  sealedKey: Uint8Array;
}

export type ClusterTenantKek =
  | { state: "active"; createdAtMs: number; sealedKek: Uint8Array }
  | { state: "destroyed"; destroyedAtMs: number };

/** One change to the cluster state: the command a proposal carries. */
export type ClusterRecord =
  | { type: "create"; creation: ClusterCreation }
  | { type: "tenant"; tenantId: string; name: string; createdAtMs: number }
  | { type: "access_key"; key: ClusterAccessKey }
  | { type: "access_key_revoke"; accessKeyId: string }
  | { type: "key_epoch"; epoch: ClusterKeyEpoch }
  | { type: "tenant_kek"; tenant: string; createdAtMs: number; sealedKek: Uint8Array }
  | { type: "tenant_kek_destroy"; tenant: string; atMs: number }
  | { type: "node"; node: ClusterNode }
  /**
   * Node `by` moved every fragment of its chunks off node `node`, drained since
   * `drainSinceMs` (a node's removal waits for every node's report).
   */
  | { type: "node_evacuated"; node: number; by: number; drainSinceMs: number }
  | NfsExportRecord;

/** What applying a record did: accepted, or refused with a reason (the same on every node). */
export type ClusterApplyOutcome = { ok: true; index: number } | { ok: false; refused: string };

/** Bytes that are not a cluster record. */
export class ClusterRecordError extends Error {
  override name = "ClusterRecordError";
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function unb64(text: unknown, what: string): Uint8Array {
  if (typeof text !== "string") throw new ClusterRecordError(`${what} is not base64 text`);
  try {
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  } catch {
    throw new ClusterRecordError(`${what} is not base64`);
  }
}

// Records travel as JSON (few, small, rare): sealed bytes as base64, then a version byte and
// the command byte in front. JSON.stringify of a fixed object shape is deterministic enough
// for a log: what is replicated is the bytes, never a re-encoding.
function toJson(record: ClusterRecord): unknown {
  switch (record.type) {
    case "access_key":
      return { ...record, key: { ...record.key, sealedSecret: b64(record.key.sealedSecret) } };
    case "key_epoch":
      return { ...record, epoch: { ...record.epoch, sealedKey: b64(record.epoch.sealedKey) } };
    case "tenant_kek":
      return { ...record, sealedKek: b64(record.sealedKek) };
    default:
      return record;
  }
}

function text(value: unknown, what: string): string {
  if (typeof value !== "string" || encoder.encode(value).length > CLUSTER_TEXT_BYTES_MAX) {
    throw new ClusterRecordError(`${what} is not text of at most ${CLUSTER_TEXT_BYTES_MAX} bytes`);
  }
  return value;
}

function num(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new ClusterRecordError(`${what} is not a non-negative integer`);
  }
  return value;
}

// deno-lint-ignore no-explicit-any
function fromJson(j: any): ClusterRecord {
  if (typeof j !== "object" || j === null) throw new ClusterRecordError("record is not an object");
  switch (j.type) {
    case "create": {
      const c = j.creation ?? {};
      return {
        type: "create",
        creation: {
          clusterUid: text(c.clusterUid, "clusterUid"),
          keyCheck: text(c.keyCheck, "keyCheck"),
          defaultTenant: text(c.defaultTenant, "defaultTenant"),
          bootstrapNode: num(c.bootstrapNode, "bootstrapNode"),
          createdAtMs: num(c.createdAtMs, "createdAtMs"),
        },
      };
    }
    case "tenant":
      return {
        type: "tenant",
        tenantId: text(j.tenantId, "tenantId"),
        name: text(j.name, "name"),
        createdAtMs: num(j.createdAtMs, "createdAtMs"),
      };
    case "access_key": {
      const k = j.key ?? {};
      return {
        type: "access_key",
        key: {
          accessKeyId: text(k.accessKeyId, "accessKeyId"),
          tenantId: text(k.tenantId, "tenantId"),
          createdAtMs: num(k.createdAtMs, "createdAtMs"),
          sealedSecret: unb64(k.sealedSecret, "sealedSecret"),
        },
      };
    }
    case "access_key_revoke":
      return { type: "access_key_revoke", accessKeyId: text(j.accessKeyId, "accessKeyId") };
    case "key_epoch": {
      const e = j.epoch ?? {};
      return {
        type: "key_epoch",
        epoch: {
          epoch: num(e.epoch, "epoch"),
          createdAtMs: num(e.createdAtMs, "createdAtMs"),
          sealedKey: unb64(e.sealedKey, "sealedKey"),
        },
      };
    }
    case "tenant_kek":
      return {
        type: "tenant_kek",
        tenant: text(j.tenant, "tenant"),
        createdAtMs: num(j.createdAtMs, "createdAtMs"),
        sealedKek: unb64(j.sealedKek, "sealedKek"),
      };
    case "tenant_kek_destroy":
      return {
        type: "tenant_kek_destroy",
        tenant: text(j.tenant, "tenant"),
        atMs: num(j.atMs, "atMs"),
      };
    case "node": {
      const n = j.node ?? {};
      if (!NODE_STATES.includes(n.state)) throw new ClusterRecordError(`node state ${n.state}`);
      return {
        type: "node",
        node: {
          id: num(n.id, "node id"),
          addr: text(n.addr, "node addr"),
          state: n.state,
          sinceMs: num(n.sinceMs, "sinceMs"),
        },
      };
    }
    case "node_evacuated":
      return {
        type: "node_evacuated",
        node: num(j.node, "node"),
        by: num(j.by, "by"),
        drainSinceMs: num(j.drainSinceMs, "drainSinceMs"),
      };
    case "nfs_export":
      return {
        type: "nfs_export",
        spec: nfsExportSpecFromJson(j.spec, (why) => new ClusterRecordError(why)),
      };
    case "nfs_export_remove":
      return { type: "nfs_export_remove", path: text(j.path, "export path") };
    default:
      throw new ClusterRecordError(`unknown cluster record type ${JSON.stringify(j.type)}`);
  }
}

/** The command bytes of `record` (what is proposed to the cluster-state group). */
export function encodeClusterRecord(record: ClusterRecord): Uint8Array {
  const body = encoder.encode(JSON.stringify(toJson(record)));
  const out = new Uint8Array(2 + body.length);
  out[0] = COMMAND_CLUSTER_RECORD;
  out[1] = RECORD_VERSION;
  out.set(body, 2);
  if (out.length > CLUSTER_RECORD_BYTES_MAX) {
    throw new ClusterRecordError(
      `cluster record of ${out.length} bytes exceeds ${CLUSTER_RECORD_BYTES_MAX}`,
    );
  }
  return out;
}

/** Reverses encodeClusterRecord(); ClusterRecordError for anything else. */
export function decodeClusterRecord(command: Uint8Array): ClusterRecord {
  if (command.length < 2 || command[0] !== COMMAND_CLUSTER_RECORD) {
    throw new ClusterRecordError("not a cluster-state command");
  }
  if (command[1] !== RECORD_VERSION) {
    throw new ClusterRecordError(`cluster record version ${command[1]} is not known`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(command.subarray(2)));
  } catch {
    throw new ClusterRecordError("cluster record is not JSON");
  }
  return fromJson(parsed);
}

/** Sees each record after it was applied (not for refused ones); must not throw. */
export type ClusterStateListener = (record: ClusterRecord, index: number) => void;

/**
 * The cluster state of one node: every record applied in log order. Accessors return
 * copies or immutable values; sealed fields stay sealed.
 */
export class ClusterStateMachine {
  lastApplied = 0;
  #creation: ClusterCreation | null = null;
  readonly #tenants = new Map<string, { name: string; createdAtMs: number }>();
  readonly #accessKeys = new Map<string, ClusterAccessKey>();
  readonly #keysByTenant = new Map<string, Set<string>>();
  readonly #epochs = new Map<number, ClusterKeyEpoch>();
  #currentEpoch = 0;
  readonly #keks = new Map<string, ClusterTenantKek>();
  readonly #nodes = new Map<number, ClusterNode>();
  /** Nodes that reported a draining node evacuated of their chunks (for its current drain). */
  readonly #evacuated = new Map<number, Set<number>>();
  readonly #nfsExports = new NfsExportTable();
  readonly #listeners: ClusterStateListener[] = [];

  /** The Raft host's entry point: one committed command. */
  apply(entry: Entry, command: Uint8Array): ClusterApplyOutcome | undefined {
    this.lastApplied = entry.index;
    let record: ClusterRecord;
    try {
      record = decodeClusterRecord(command);
    } catch (e) {
      // Every replica skips the same bytes alike (a newer version's record, or garbage).
      return { ok: false, refused: (e as Error).message };
    }
    const refused = this.#applyRecord(record);
    if (refused !== null) return { ok: false, refused };
    for (const listener of this.#listeners) listener(record, entry.index);
    return { ok: true, index: entry.index };
  }

  /** Calls `listener` after each accepted record (destroyed keys, revoked credentials). */
  onRecord(listener: ClusterStateListener): void {
    assert(this.#listeners.length < 16, "too many cluster state listeners");
    this.#listeners.push(listener);
  }

  /** Why `record` is refused in the current state, or null once it is applied. */
  #applyRecord(r: ClusterRecord): string | null {
    switch (r.type) {
      case "create":
        if (this.#creation !== null) return "the cluster was already created";
        this.#creation = { ...r.creation };
        if (!this.#tenants.has(r.creation.defaultTenant)) {
          this.#tenants.set(r.creation.defaultTenant, {
            name: "default",
            createdAtMs: r.creation.createdAtMs,
          });
        }
        return null;
      case "tenant":
        if (this.#tenants.has(r.tenantId)) return `tenant ${r.tenantId} exists`;
        if (this.#tenants.size >= CLUSTER_TENANTS_MAX) {
          return `the cluster holds ${CLUSTER_TENANTS_MAX} tenants (CLUSTER_TENANTS_MAX)`;
        }
        this.#tenants.set(r.tenantId, { name: r.name, createdAtMs: r.createdAtMs });
        return null;
      case "access_key": {
        const k = r.key;
        if (this.#accessKeys.has(k.accessKeyId)) return `access key ${k.accessKeyId} exists`;
        if (this.#accessKeys.size >= CLUSTER_ACCESS_KEYS_MAX) {
          return `the cluster holds ${CLUSTER_ACCESS_KEYS_MAX} access keys`;
        }
        const ids = this.#keysByTenant.get(k.tenantId) ?? new Set<string>();
        if (ids.size >= CLUSTER_ACCESS_KEYS_PER_TENANT_MAX) {
          return `tenant ${k.tenantId} holds ${CLUSTER_ACCESS_KEYS_PER_TENANT_MAX} access keys ` +
            `(ACCESS_KEYS_PER_TENANT_MAX); revoke one first`;
        }
        ids.add(k.accessKeyId);
        this.#keysByTenant.set(k.tenantId, ids);
        this.#accessKeys.set(k.accessKeyId, { ...k, sealedSecret: k.sealedSecret.slice() });
        return null;
      }
      case "access_key_revoke": {
        const k = this.#accessKeys.get(r.accessKeyId);
        if (k === undefined) return `no access key ${r.accessKeyId}`;
        this.#accessKeys.delete(r.accessKeyId);
        const ids = this.#keysByTenant.get(k.tenantId);
        ids?.delete(r.accessKeyId);
        if (ids?.size === 0) this.#keysByTenant.delete(k.tenantId);
        return null;
      }
      case "key_epoch":
        // Epochs only grow, one at a time: two rotations racing leave exactly one new epoch.
        if (r.epoch.epoch !== this.#currentEpoch + 1) {
          return `epoch ${r.epoch.epoch} does not follow the current epoch ${this.#currentEpoch}`;
        }
        if (this.#epochs.size >= CLUSTER_KEY_EPOCHS_MAX) {
          return `the cluster holds ${CLUSTER_KEY_EPOCHS_MAX} key epochs`;
        }
        this.#epochs.set(r.epoch.epoch, { ...r.epoch, sealedKey: r.epoch.sealedKey.slice() });
        this.#currentEpoch = r.epoch.epoch;
        return null;
      case "tenant_kek": {
        const had = this.#keks.get(r.tenant);
        if (had !== undefined) return `tenant ${r.tenant} already has a key (${had.state})`;
        if (this.#keks.size >= CLUSTER_TENANT_KEKS_MAX) {
          return `the cluster holds ${CLUSTER_TENANT_KEKS_MAX} tenant keys`;
        }
        this.#keks.set(r.tenant, {
          state: "active",
          createdAtMs: r.createdAtMs,
          sealedKek: r.sealedKek.slice(),
        });
        return null;
      }
      case "tenant_kek_destroy": {
        const had = this.#keks.get(r.tenant);
        if (had === undefined) return `tenant ${r.tenant} has no key`;
        if (had.state === "destroyed") return `tenant ${r.tenant}'s key is already destroyed`;
        this.#keks.set(r.tenant, { state: "destroyed", destroyedAtMs: r.atMs });
        return null;
      }
      case "node": {
        const had = this.#nodes.get(r.node.id);
        if (had === undefined && this.#nodes.size >= CLUSTER_NODES_MAX) {
          return `the cluster names ${CLUSTER_NODES_MAX} nodes`;
        }
        // Reports of an evacuation belong to one drain: any change of state starts over.
        if (had?.state !== r.node.state || had.sinceMs !== r.node.sinceMs) {
          this.#evacuated.delete(r.node.id);
        }
        this.#nodes.set(r.node.id, { ...r.node });
        return null;
      }
      case "node_evacuated": {
        const n = this.#nodes.get(r.node);
        if (n?.state !== "draining" || n.sinceMs !== r.drainSinceMs) {
          return `node ${r.node} is not in the drain of ${r.drainSinceMs}`;
        }
        if (!this.#nodes.has(r.by)) return `node ${r.by} is not a member`;
        const by = this.#evacuated.get(r.node) ?? new Set<number>();
        if (by.has(r.by)) return `node ${r.by} already reported node ${r.node} evacuated`;
        by.add(r.by);
        this.#evacuated.set(r.node, by);
        return null;
      }
      case "nfs_export":
      case "nfs_export_remove":
        return this.#nfsExports.apply(r);
    }
  }

  // ---- accessors ---------------------------------------------------------------------------

  creation(): ClusterCreation | null {
    return this.#creation === null ? null : { ...this.#creation };
  }

  tenants(): { tenantId: string; name: string; createdAtMs: number }[] {
    return [...this.#tenants].map(([tenantId, t]) => ({ tenantId, ...t }));
  }

  hasTenant(tenantId: string): boolean {
    return this.#tenants.has(tenantId);
  }

  accessKey(accessKeyId: string): ClusterAccessKey | undefined {
    return this.#accessKeys.get(accessKeyId);
  }

  accessKeys(tenantId: string): ClusterAccessKey[] {
    const ids = [...(this.#keysByTenant.get(tenantId) ?? [])].sort();
    return ids.map((id) => this.#accessKeys.get(id)!);
  }

  currentEpoch(): number {
    return this.#currentEpoch;
  }

  keyEpoch(epoch: number): ClusterKeyEpoch | undefined {
    return this.#epochs.get(epoch);
  }

  keyEpochs(): ClusterKeyEpoch[] {
    return [...this.#epochs.values()].sort((a, b) => a.epoch - b.epoch);
  }

  tenantKek(tenant: string): ClusterTenantKek | undefined {
    return this.#keks.get(tenant);
  }

  /** Tenants whose KEK was destroyed, at most `max`. */
  destroyedTenants(max: number): string[] {
    const out: string[] = [];
    for (const [tenant, kek] of this.#keks) {
      if (out.length >= max) break;
      if (kek.state === "destroyed") out.push(tenant);
    }
    return out;
  }

  /** Membership and state of every node named so far, by id. */
  nodes(): ClusterNode[] {
    return [...this.#nodes.values()].sort((a, b) => a.id - b.id).map((n) => ({ ...n }));
  }

  /** Nodes that reported draining node `node` evacuated of their chunks, by id. */
  evacuatedBy(node: number): number[] {
    return [...(this.#evacuated.get(node) ?? [])].sort((a, b) => a - b);
  }

  /** The NFS exports, by path. */
  nfsExports(): NfsExport[] {
    return this.#nfsExports.list();
  }

  // ---- snapshots ---------------------------------------------------------------------------

  /**
   * The whole state as snapshot bytes (for log compaction): [u8 version][JSON]. Sealed
   * fields stay sealed, so a snapshot is as safe on disk or on the wire as the log.
   */
  snapshot(): Uint8Array {
    const state = {
      lastApplied: this.lastApplied,
      creation: this.#creation,
      tenants: this.tenants(),
      accessKeys: [...this.#accessKeys.values()].map((k) => ({
        ...k,
        sealedSecret: b64(k.sealedSecret),
      })),
      epochs: this.keyEpochs().map((e) => ({ ...e, sealedKey: b64(e.sealedKey) })),
      keks: [...this.#keks].map(([tenant, k]) =>
        k.state === "active"
          ? { tenant, state: k.state, createdAtMs: k.createdAtMs, sealedKek: b64(k.sealedKek) }
          : { tenant, state: k.state, destroyedAtMs: k.destroyedAtMs }
      ),
      nodes: this.nodes(),
      evacuated: [...this.#evacuated].map(([node, by]) => ({
        node,
        by: [...by].sort((a, b) => a - b),
      })),
      nfsExports: this.#nfsExports.snapshot(),
    };
    const body = encoder.encode(JSON.stringify(state));
    const out = new Uint8Array(1 + body.length);
    out[0] = SNAPSHOT_VERSION;
    out.set(body, 1);
    return out;
  }

  /** Replaces the state with a snapshot's (the one-byte bootstrap snapshot is empty state). */
  restore(snapshot: Snapshot): void {
    this.#clear();
    this.lastApplied = snapshot.meta.index;
    if (snapshot.data.length <= 1) return;
    if (snapshot.data[0] !== SNAPSHOT_VERSION) {
      throw new ClusterRecordError(`cluster snapshot version ${snapshot.data[0]} is not known`);
    }
    // deno-lint-ignore no-explicit-any
    const s: any = JSON.parse(decoder.decode(snapshot.data.subarray(1)));
    // Rebuilt through the same checks as records, so a snapshot cannot hold what a log cannot.
    if (s.creation !== null) this.#must({ type: "create", creation: s.creation });
    for (const t of s.tenants) {
      if (!this.#tenants.has(t.tenantId)) this.#must(fromJson({ type: "tenant", ...t }));
    }
    for (const k of s.accessKeys) this.#must(fromJson({ type: "access_key", key: k }));
    for (const e of s.epochs) this.#must(fromJson({ type: "key_epoch", epoch: e }));
    for (const k of s.keks) {
      this.#must(fromJson({
        type: "tenant_kek",
        tenant: k.tenant,
        createdAtMs: k.createdAtMs ?? 0,
        sealedKek: k.sealedKek ?? "",
      }));
      if (k.state === "destroyed") {
        this.#must({ type: "tenant_kek_destroy", tenant: k.tenant, atMs: k.destroyedAtMs });
      }
    }
    for (const n of s.nodes) this.#must(fromJson({ type: "node", node: n }));
    // Absent from snapshots taken before drains were recorded.
    for (const e of s.evacuated ?? []) {
      const drainSinceMs = this.#nodes.get(e.node)?.sinceMs ?? -1;
      for (const by of e.by) {
        this.#must(fromJson({ type: "node_evacuated", node: e.node, by, drainSinceMs }));
      }
    }
    this.#nfsExports.restore(s.nfsExports, (why) => new ClusterRecordError(why));
  }

  #must(record: ClusterRecord): void {
    const refused = this.#applyRecord(record);
    if (refused !== null) throw new ClusterRecordError(`cluster snapshot: ${refused}`);
  }

  #clear(): void {
    this.#creation = null;
    this.#tenants.clear();
    this.#accessKeys.clear();
    this.#keysByTenant.clear();
    this.#epochs.clear();
    this.#currentEpoch = 0;
    this.#keks.clear();
    this.#nodes.clear();
    this.#evacuated.clear();
    this.#nfsExports.clear();
  }
}
