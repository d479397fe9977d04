// The chunk store of a cluster: a chunk's fragments (EC k+m or copies) go to (node, device)
// pairs chosen by rendezvous placement over every node's devices (cluster_placement.ts),
// this node's through its LocalFragmentStore, the others' over the chunk fabric (the
// FragmentPeers port). The index of the chunks this node wrote (where each fragment lives,
// refcounts, tenants) is kept in lmdb beside the local fragment index.
//
// A put is acknowledged once the full redundancy is durable on distinct nodes; when nodes
// are down, fragments meant for them go to the next devices of their ranking, and when even
// that cannot place them all, a still-safe subset (k+1 of EC, 2 copies, one node's loss
// survivable) is acknowledged and the chunk recorded degraded; the repairer restores it once
// nodes are back. Less is never acknowledged. Reads fetch any k fragments in parallel and
// rebuild the missing ones. Refcount GC releases every fragment on its node, and keeps a
// release for a node that is down until it is reachable again.

import { assert, crc32c } from "../base/mod.ts";
import type { KvEnv, KvTable, KvTxn } from "../disk/mod.ts";
import { type ErasureCodec, type ErasureCodecFactory, fragmentLengthFor } from "../ec/mod.ts";
import { counter, gauge, log, type Logger } from "../obs/mod.ts";
import {
  type ChunkRead,
  type ChunkStat,
  type ChunkStore,
  ChunkStoreError,
  type FragmentFaultReport,
  hex,
  type PoolReport,
  type PutOptions,
  type PutResult,
} from "./chunk_store.ts";
import { addTenant, tenantTag } from "./chunk_index.ts";
import {
  ClusterPlacement,
  fragmentsNeeded,
  perNodeMaxFor,
  safeFragmentsFor,
} from "./cluster_placement.ts";
import {
  type DeviceInventory,
  fragmentId,
  type LocalFragmentStore,
  writerChunkId,
} from "./fragment_store.ts";
import {
  decodeFragmentFrame,
  encodeFragmentFrame,
  FRAGMENT_FRAME_HEADER_BYTES,
  type FragmentOrigin,
} from "./fragment_frame.ts";
import { type Durability, formatDurability, fragmentCount } from "./pool.ts";
import {
  CLUSTER_INDEX_TABLES,
  type ClusterEntry,
  decodeClusterEntry,
  encodeClusterEntry,
  REFERENCE_FRAGMENT_INDEX,
  releaseKey,
} from "./cluster_index.ts";
import {
  type ClusterMember,
  type ClusterMembers,
  type ClusterNodeState,
  evicts,
  FragmentPeerError,
  type FragmentPeers,
  takesFragments,
} from "./cluster_nodes.ts";

export {
  CLUSTER_INDEX_TABLES,
  type ClusterEntry,
  type ClusterFragment,
  decodeClusterEntry,
  encodeClusterEntry,
} from "./cluster_index.ts";
export {
  CLUSTER_NODES_MAX,
  type ClusterMember,
  type ClusterMembers,
  type ClusterNodeState,
  evicts,
  FragmentPeerError,
  type FragmentPeerFailure,
  type FragmentPeers,
  RecordedClusterMembers,
  type RecordedNode,
  StaticClusterMembers,
  takesFragments,
} from "./cluster_nodes.ts";

/** Puts accepted and not yet durable; further puts wait for room. */
export const CLUSTER_PUTS_IN_FLIGHT_MAX = 256;
/** Rounds of placing fragments again after some were refused or their node unreachable. */
export const CLUSTER_PLACEMENT_ROUNDS_MAX = 4;
/** Index changes one group commit carries at most. */
export const CLUSTER_COMMIT_BATCH_MAX = 1024;
/** Chunks one GC or repair step looks at. */
export const CLUSTER_STEP_CHUNKS_MAX = 256;
/** A read whose fragment fetches take longer than this asks one more holder. */
export const CLUSTER_READ_HEDGE_MS = 1_000;
/** Chunks one verify step asks the holders about. */
export const CLUSTER_VERIFY_CHUNKS_MAX = 256;
/** Chunks one repair step rebuilds at once. */
export const CLUSTER_REPAIRS_IN_FLIGHT_MAX = 8;
/** Fragment releases one step sends at most. */
export const CLUSTER_RELEASES_STEP_MAX = 1024;
/** Degraded chunks a metric scrape counts at most (the gauge saturates there). */
export const CLUSTER_DEGRADED_COUNTED_MAX = 100_000;
/**
 * A node that failed a request is skipped by writes for this long, then tried again; the
 * background pass asks it sooner (every CLUSTER_REPAIR_INTERVAL_MS_DEFAULT).
 */
export const CLUSTER_NODE_RETRY_MS_DEFAULT = 30_000;
/** A peer's device inventory is asked again after this long. */
export const CLUSTER_INVENTORY_REFRESH_MS_DEFAULT = 10_000;
/** Deadline of one fragment request to a peer. */
export const CLUSTER_FRAGMENT_TIMEOUT_MS_DEFAULT = 10_000;
/** Repair rate (fragment bytes written per second) by default: well below foreground I/O. */
export const CLUSTER_REPAIR_BYTES_PER_SECOND_DEFAULT = 32 << 20;
/** Pause of the background repairer between passes when there is nothing to do. */
export const CLUSTER_REPAIR_INTERVAL_MS_DEFAULT = 5_000;
/** How long this node's own device report is reused by placement (it walks every device). */
export const CLUSTER_LOCAL_INVENTORY_MS = 1_000;
/** Entries of chunks other nodes wrote, found on their holders and kept for later reads. */
export const CLUSTER_LOCATED_CACHED_MAX = 4096;
/** Chunks one rebalance step looks at. */
export const CLUSTER_REBALANCE_CHUNKS_MAX = 256;
/** Chunks a rebalance sweep counts up front (for its progress) at most. */
export const CLUSTER_REBALANCE_COUNTED_MAX = 1_000_000;
/** Local fragment records one adoption step reads at most. */
export const CLUSTER_ADOPT_RECORDS_MAX = 256;
/**
 * A sweep that had to leave a chunk (too few holders answered) starts again after this long:
 * each sweep reads every fragment record of the node.
 */
export const CLUSTER_ADOPT_RETRY_MS = 60_000;
/** Chunks whose last repair could not finish, remembered to tell repairing from waiting. */
export const CLUSTER_REPAIR_BLOCKED_MAX = 100_000;

// ---- metrics -------------------------------------------------------------------------------

const openStores = new Set<ClusterChunkStore>();
gauge<"pool">({
  name: "kiseki_chunk_degraded",
  help: "Chunks stored with less than their full redundancy, waiting for repair",
  labelNames: ["pool"],
  collect: (set) => {
    for (const s of openStores) set({ pool: s.poolName }, s.degradedCount());
  },
});
const degradedWrites = counter<"pool">({
  name: "kiseki_chunk_degraded_writes_total",
  help: "Chunks acknowledged with a still-safe subset of their fragments (nodes were down)",
  labelNames: ["pool"],
});
const movedFragments = counter<"pool" | "reason">({
  name: "kiseki_chunk_moved_fragments_total",
  help: "Fragments moved to another node: rebalance after a node joined, or off a node " +
    "draining, down past its grace period or removed",
  labelNames: ["pool", "reason"],
});
const repairedChunks = counter<"pool">({
  name: "kiseki_chunk_repaired_total",
  help: "Degraded chunks brought back to full redundancy",
  labelNames: ["pool"],
});
const repairBytes = counter<"pool">({
  name: "kiseki_chunk_repair_bytes_total",
  help: "Fragment bytes written by repair",
  labelNames: ["pool"],
});
const remoteFragments = counter<"pool" | "op">({
  name: "kiseki_chunk_remote_fragments_total",
  help: "Fragments put to or read from other nodes",
  labelNames: ["pool", "op"],
});
const adoptedChunks = counter<"pool">({
  name: "kiseki_chunk_adopted_total",
  help: "Chunks taken over from a writer node recorded down or removed, to be repaired here",
  labelNames: ["pool"],
});
const degradedReads = counter<"pool">({
  name: "kiseki_chunk_cluster_degraded_reads_total",
  help: "Cluster chunk reads that rebuilt fragments or skipped missing ones",
  labelNames: ["pool"],
});

// ---- the store -----------------------------------------------------------------------------

export interface ClusterChunkStoreOptions {
  /** This node's id. */
  self: number;
  members: ClusterMembers;
  /** This node's fragments (and devices). */
  local: LocalFragmentStore;
  peers: FragmentPeers;
  codecs: ErasureCodecFactory;
  /** Durability of new chunks (the pool's). */
  durability: Durability;
  /** The index environment (default: the local fragment store's). */
  env?: KvEnv;
  chunkBytesMax?: number;
  /** Largest fragment (with its frame header) the peers take: the fabric's fragment limit. */
  fragmentBytesMax?: number;
  nodeRetryMs?: number;
  inventoryRefreshMs?: number;
  repairBytesPerSecond?: number;
  repairIntervalMs?: number;
  logger?: Logger;
  /** Milliseconds clock (default performance.now). */
  now?: () => number;
}

interface Located {
  /** Index in the placement's device list. */
  device: number;
  node: number;
  deviceId: string;
}

/** Where the rebalance of this node's chunks over the current membership stands. */
export interface RebalanceProgress {
  /** "idle": every chunk was looked at since membership last changed. */
  state: "idle" | "running";
  /** Chunks looked at in the current (or last) sweep, of `total`. */
  examined: number;
  total: number;
  /** Fragments moved in the current (or last) sweep. */
  moved: number;
}

export interface ClusterStepReport {
  examined: number;
  erased: number;
  released: number;
  repaired: number;
  repairBytes: number;
  /** More work is waiting. */
  more: boolean;
}

/** Chunks of one pool spread over the cluster's nodes. */
export class ClusterChunkStore implements ChunkStore {
  readonly self: number;
  readonly durability: Durability;
  readonly poolName: string;
  readonly chunkBytesMax: number;
  readonly local: LocalFragmentStore;
  readonly #members: ClusterMembers;
  readonly #peers: FragmentPeers;
  readonly #codecs: ErasureCodecFactory;
  readonly #codecCache = new Map<string, ErasureCodec>();
  readonly #env: KvEnv;
  readonly #chunks: KvTable;
  readonly #degraded: KvTable;
  readonly #unreferenced: KvTable;
  readonly #releases: KvTable;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #nodeRetryMs: number;
  readonly #inventoryRefreshMs: number;
  readonly #repairBytesPerSecond: number;
  readonly #repairIntervalMs: number;
  readonly #locks = new Map<string, Promise<void>>();
  readonly #downUntil = new Map<number, number>();
  readonly #inventories = new Map<number, { inventory: DeviceInventory; at: number }>();
  /** Chunks this node did not write, located on their holders (oldest dropped first). */
  readonly #located = new Map<string, ClusterEntry>();
  #placement: { key: string; placement: ClusterPlacement } | null = null;
  #localInventory: { inventory: DeviceInventory; at: number } | null = null;
  readonly #staged: {
    stage: (txn: KvTxn) => void;
    resolve: () => void;
    reject: (e: Error) => void;
  }[] = [];
  #committing: Promise<void> | null = null;
  /** Where the next verifyStep() starts (null: at the first chunk). */
  #verifyCursor: Uint8Array | null = null;
  /** The rebalance sweep: the membership it balances for, where it is, what it did. */
  #rebalance: {
    key: string;
    cursor: Uint8Array | null;
    done: boolean;
    examined: number;
    total: number;
    moved: number;
  } | null = null;
  /**
   * The adoption sweep over this node's fragment records: the writers (down or removed) it
   * looks for, where it is, and whether a chunk had to be left for another sweep.
   */
  /**
   * The hand-back sweep over this node's index after the writers gone changed: chunks adopted
   * from a writer that is back and still indexes them are left to it again.
   */
  #handBack: { key: string; cursor: Uint8Array | null; done: boolean; startedAt: number } | null =
    null;
  #adopt: {
    key: string;
    cursor: Uint8Array | null;
    done: boolean;
    deferred: boolean;
    startedAt: number;
  } | null = null;
  /** Degraded chunks whose last repair could not finish (hex ids; bounded). */
  readonly #repairBlocked = new Set<string>();
  #inFlight = 0;
  readonly #roomWaiters: (() => void)[] = [];
  #closed = false;
  #background: { stop: () => Promise<void> } | null = null;

  constructor(options: ClusterChunkStoreOptions) {
    this.self = options.self;
    this.durability = options.durability;
    this.local = options.local;
    this.poolName = options.local.store.pool.name;
    this.#members = options.members;
    this.#peers = options.peers;
    this.#codecs = options.codecs;
    this.#env = options.env ?? options.local.store.env;
    this.#chunks = this.#env.table(CLUSTER_INDEX_TABLES.chunks);
    this.#degraded = this.#env.table(CLUSTER_INDEX_TABLES.degraded);
    this.#unreferenced = this.#env.table(CLUSTER_INDEX_TABLES.unreferenced);
    this.#releases = this.#env.table(CLUSTER_INDEX_TABLES.releases);
    this.#logger = options.logger ?? log;
    this.#now = options.now ?? (() => performance.now());
    this.#nodeRetryMs = options.nodeRetryMs ?? CLUSTER_NODE_RETRY_MS_DEFAULT;
    this.#inventoryRefreshMs = options.inventoryRefreshMs ?? CLUSTER_INVENTORY_REFRESH_MS_DEFAULT;
    this.#repairBytesPerSecond = options.repairBytesPerSecond ??
      CLUSTER_REPAIR_BYTES_PER_SECOND_DEFAULT;
    this.#repairIntervalMs = options.repairIntervalMs ?? CLUSTER_REPAIR_INTERVAL_MS_DEFAULT;
    const d = this.durability;
    // A fragment is one record of the local store; EC splits the chunk into k of them.
    const byFragment = Math.min(
      options.local.store.chunkBytesMax,
      options.fragmentBytesMax ?? Infinity,
    ) - FRAGMENT_FRAME_HEADER_BYTES;
    const byLayout = d.kind === "ec" ? d.k * byFragment : byFragment;
    this.chunkBytesMax = Math.min(options.chunkBytesMax ?? byLayout, byLayout);
    if (d.kind === "ec") this.#codecFor(d);
    openStores.add(this);
  }

  // ---- port --------------------------------------------------------------------------------

  async put(id: Uint8Array, bytes: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.#checkOpen();
    checkId(id);
    if (bytes.length > this.chunkBytesMax) {
      throw new ChunkStoreError(
        "too_large",
        `chunk of ${bytes.length} bytes exceeds ${this.chunkBytesMax} (pool ${this.poolName})`,
      );
    }
    const tenant = options.tenant === undefined ? null : tenantTag(options.tenant);
    await this.#room();
    try {
      return await this.#withLock(id, async () => {
        const found = this.#entry(id);
        if (found === undefined && this.#legacy(id)) {
          return await this.local.store.put(id, bytes, options);
        }
        // An adopted chunk of a writer only down takes no reference (#heldForWriter()): this
        // node stores its own copy, which replaces the adopted entry (the writer's fragments
        // stay where they are for its return; if it is removed, the next adoption sweep
        // releases them, as for any writer's copy of a chunk this node also holds).
        const replacing = found !== undefined && this.#heldForWriter(found);
        const existing = replacing ? undefined : found;
        if (existing !== undefined) {
          if (existing.lengthBytes !== bytes.length) {
            throw new ChunkStoreError(
              "id_conflict",
              `chunk ${hex(id)} is stored with ${existing.lengthBytes} bytes; this put has ` +
                `${bytes.length}: two contents under one id`,
            );
          }
          await this.#addRef(id, existing, tenant);
          return { created: false };
        }
        const d = this.durability;
        const { frames: fragments, crcs, fragmentBytes } = await this.#frames(bytes, d, {
          chunkId: id,
          writer: this.self,
        });
        const failures = { unreachable: 0, refused: 0 };
        // Fragments go by the chunk id scoped to this writer (placement too).
        const key = writerChunkId(id, this.self);
        const placed = await this.#writeFragments(
          key,
          fragments,
          d,
          new Array(fragments.length).fill(null),
          new Set(),
          failures,
        );
        const verdict = this.#judge(d, placed);
        if (verdict === "unsafe") {
          await this.#releaseAll(key, placed);
          const stored = placed.filter((p) => p !== null).length;
          // Every node answered, and the devices refused: the pool is full, not the cluster down.
          const full = failures.unreachable === 0 && failures.refused > 0;
          throw new ChunkStoreError(
            full ? "pool_full" : "insufficient_devices",
            `chunk ${hex(id)}: only ${stored} of ${fragments.length} fragments of ` +
              `${formatDurability(d)} could be stored on distinct reachable nodes; at least ` +
              `${safeFragmentsFor(d)} surviving the loss of any one node are needed`,
          );
        }
        const entry: ClusterEntry = {
          writer: this.self,
          durability: d,
          refcount: 1,
          lengthBytes: bytes.length,
          fragmentBytes,
          fragments: placed.map((p, i) =>
            p === null ? null : { node: p.node, device: p.deviceId, crc: crcs[i]! }
          ),
          tenants: [],
          tenantOverflow: false,
        };
        if (tenant !== null) addTenant(entry, tenant);
        await this.#commit((txn) => {
          txn.put(this.#chunks, id, encodeClusterEntry(entry));
          if (verdict === "degraded") txn.put(this.#degraded, id, new Uint8Array(0));
          else if (replacing) txn.delete(this.#degraded, id);
        });
        if (replacing) {
          this.#logger.info("own copy stored for a chunk adopted from a node down", {
            chunk: hex(id),
            writer: found!.writer,
          });
        }
        if (verdict === "degraded") {
          degradedWrites.inc({ pool: this.poolName });
          this.#logger.warn("chunk stored degraded", {
            chunk: hex(id),
            fragments: `${placed.filter((p) => p !== null).length}/${fragments.length}`,
          });
        }
        return { created: true };
      });
    } finally {
      this.#inFlight--;
      this.#roomWaiters.shift()?.();
    }
  }

  async get(id: Uint8Array): Promise<Uint8Array> {
    return (await this.read(id)).bytes;
  }

  async read(id: Uint8Array): Promise<ChunkRead> {
    this.#checkOpen();
    checkId(id);
    let entry = this.#entry(id);
    if (entry === undefined && this.#legacy(id)) return await this.local.store.read(id);
    // Written through another node: its holders say where the fragments are.
    if (entry === undefined) entry = await this.#locate(id) ?? undefined;
    if (entry === undefined || entry.refcount === 0) throw notFound(id);
    const result = await this.#readEntry(id, entry);
    if (result.bytes === null) this.#located.delete(hex(id));
    if (result.bytes === null) {
      // Fragments on nodes that did not answer may well be there: unavailable, not lost.
      throw new ChunkStoreError(
        result.unreachable > 0 ? "unavailable" : "unrecoverable",
        `chunk ${hex(id)}: fewer than ${fragmentsNeeded(entry.durability)} fragments readable ` +
          `(${formatDurability(entry.durability)}); ${
            result.faults.map((f) => `fragment ${f.fragment} on ${f.device}: ${f.detail}`).join(
              "; ",
            )
          }`,
      );
    }
    if (result.faults.length > 0) degradedReads.inc({ pool: this.poolName });
    if (result.missing) {
      // A holder answered without the fragment (a wiped device): queue the chunk for repair.
      await this.#commit((txn) => txn.put(this.#degraded, id, new Uint8Array(0)));
    }
    return { bytes: result.bytes, reconstructed: result.reconstructed, faults: result.faults };
  }

  has(id: Uint8Array): Promise<boolean> {
    this.#checkOpen();
    checkId(id);
    const entry = this.#entry(id);
    if (entry === undefined && this.#legacy(id)) return this.local.store.has(id);
    return Promise.resolve(entry !== undefined && entry.refcount > 0);
  }

  stat(id: Uint8Array): Promise<ChunkStat | null> {
    this.#checkOpen();
    checkId(id);
    const entry = this.#entry(id);
    if (entry === undefined && this.#legacy(id)) return this.local.store.stat(id);
    if (entry === undefined) return Promise.resolve(null);
    return Promise.resolve({
      refcount: entry.refcount,
      lengthBytes: entry.lengthBytes,
      durability: formatDurability(entry.durability),
      fragmentBytes: entry.fragmentBytes,
      fragments: entry.fragments.map((f, index) => ({
        index,
        device: 0,
        deviceId: f === null ? "" : `${f.node}/${f.device}`,
        node: f?.node,
        offsetBytes: 0,
        lost: f === null,
      })),
    });
  }

  /**
   * Adds a reference; to a chunk this node does not index (written through another node),
   * on the node that counts it (#forwardRef()).
   */
  async incRef(id: Uint8Array, options: PutOptions = {}): Promise<number> {
    this.#checkOpen();
    checkId(id);
    const tenant = options.tenant === undefined ? null : tenantTag(options.tenant);
    const own = await this.#withLock(id, async () => {
      const entry = this.#entry(id);
      if (entry === undefined && this.#legacy(id)) {
        return await this.local.store.incRef(id, options);
      }
      if (entry === undefined) return null;
      if (this.#heldForWriter(entry)) throw heldForWriter(id, entry.writer);
      return await this.#addRef(id, entry, tenant);
    });
    return own ?? await this.#forwardRef(id, tenant);
  }

  /**
   * Whether `entry` is a chunk adopted from a writer only down, which takes no reference:
   * that writer may come back with its index, take the chunk back (#handBackStep()) and
   * erase it once its own count drops to 0, so a reference taken meanwhile would be counted
   * nowhere and its object lose the chunk. A chunk of a writer removed stays with its
   * adopter for good and takes references as any other.
   */
  #heldForWriter(entry: ClusterEntry): boolean {
    return entry.adopted === true && entry.writer !== this.self &&
      this.#states().get(entry.writer) === "down";
  }

  /**
   * Adds a reference to a chunk this node does not index on the node that counts it, its
   * writer (returns 1: the count is the writer's). A chunk whose writer is removed is
   * retained by its adopter whatever its references, so there is nothing to count; one whose
   * writer is only down takes none (#heldForWriter(): it is not_found, so a put stores the
   * bytes afresh as this node's own chunk).
   */
  async #forwardRef(id: Uint8Array, tenant: string | null): Promise<number> {
    const found = await this.#locate(id);
    if (found === null) throw notFound(id);
    const state = this.#states().get(found.writer);
    if (state === "down") throw heldForWriter(id, found.writer);
    if (state === "removed") return 1;
    try {
      await this.#peers.put(
        found.writer,
        id,
        REFERENCE_FRAGMENT_INDEX,
        new Uint8Array(0),
        tenant ?? "",
      );
    } catch (e) {
      this.#located.delete(hex(id));
      if (e instanceof FragmentPeerError && e.kind === "refused") throw notFound(id);
      throw new ChunkStoreError(
        "unavailable",
        `chunk ${hex(id)}: its writer, node ${found.writer}, did not add the reference: ` +
          (e as Error).message,
      );
    }
    return 1;
  }

  /**
   * Adds one reference to a chunk this node's index counts (for a node through which the
   * reference was taken); false when it counts none.
   */
  async addOwn(id: Uint8Array, tenantTag: string | null): Promise<boolean> {
    this.#checkOpen();
    checkId(id);
    return await this.#withLock(id, async () => {
      const entry = this.#entry(id);
      if (entry === undefined || this.#heldForWriter(entry)) return false;
      await this.#addRef(id, entry, tenantTag);
      return true;
    });
  }

  /**
   * Drops a reference. A chunk this node does not index (written through another node) has
   * its reference dropped on the node that counts it, its writer, over the fabric (then 0 is
   * returned: the count is the writer's); one whose writer is recorded down or removed is
   * kept by the survivor that adopted it (adoptStep()).
   */
  async decRef(id: Uint8Array): Promise<number> {
    this.#checkOpen();
    checkId(id);
    const own = await this.#withLock(id, async () => {
      const entry = this.#entry(id);
      if (entry === undefined && this.#legacy(id)) return await this.local.store.decRef(id);
      if (entry === undefined) return null;
      return await this.#dropRef(id, entry);
    });
    if (own !== null) return own;
    const found = await this.#locate(id);
    if (found === null) throw notFound(id);
    const state = this.#states().get(found.writer);
    if (state === "down" || state === "removed") {
      this.#logger.debug("reference to a chunk of a node gone kept by its adopter", {
        chunk: hex(id),
        writer: found.writer,
      });
      return 1;
    }
    let dropped: boolean;
    try {
      dropped = await this.#peers.release(found.writer, id, REFERENCE_FRAGMENT_INDEX);
    } catch (e) {
      throw new ChunkStoreError(
        "unavailable",
        `chunk ${hex(id)}: its writer, node ${found.writer}, did not drop the reference: ` +
          (e as Error).message,
      );
    }
    this.#located.delete(hex(id));
    if (!dropped) throw notFound(id);
    return 0;
  }

  /**
   * Drops one reference to a chunk this node's index counts (asked by another node through
   * which the chunk's reference was given back); false when it counts none.
   */
  async dropOwn(id: Uint8Array): Promise<boolean> {
    this.#checkOpen();
    checkId(id);
    return await this.#withLock(id, async () => {
      const entry = this.#entry(id);
      if (entry === undefined || entry.refcount === 0) return false;
      await this.#dropRef(id, entry);
      return true;
    });
  }

  /** Whether this node wrote chunk `id` and indexes references to it. */
  hasOwn(id: Uint8Array): boolean {
    this.#checkOpen();
    checkId(id);
    const entry = this.#entry(id);
    return entry !== undefined && entry.writer === this.self && entry.refcount > 0;
  }

  async #dropRef(id: Uint8Array, entry: ClusterEntry): Promise<number> {
    // The writer's count of references left with it: an adopted chunk is kept (its space
    // leaks, never its data). Recounting it at adoption from the views (the manifests and
    // parts every node folds from the log) would undercount, so it is not done:
    // - the engine takes a reference (dedup hit, copy, sealed object) before it commits the
    //   record that holds it (object_engine.ts, sealed_objects.ts), so a put in flight when
    //   the adopter counts holds a reference no view shows yet; its later delete would drop
    //   a reference the count never had;
    // - it drops a reference after the commit that released it, some in the background
    //   (#releaseBehind()): a delete committed before the count and released after it would
    //   be dropped twice;
    // - a commit whose outcome was unknown keeps its references and may land after the count.
    // Either way the count falls below the references still held and the chunk is erased
    // under a live object. A correct count needs the release to carry the log index that
    // released it (dropped only past the count's index) and references in flight to be
    // fenced (a reference to a gone writer's chunk refused until adopted, then counted on
    // the adopter, and the count taken once every put that took one before has settled).
    if (entry.adopted) return entry.refcount;
    if (entry.refcount === 0) {
      throw new ChunkStoreError(
        "refcount_underflow",
        `chunk ${hex(id)} has no references to drop`,
      );
    }
    const next = { ...entry, refcount: entry.refcount - 1 };
    await this.#commit((txn) => {
      txn.put(this.#chunks, id, encodeClusterEntry(next));
      if (next.refcount === 0) txn.put(this.#unreferenced, id, new Uint8Array(0));
    });
    return next.refcount;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#background?.stop();
    this.#closed = true;
    // Wait for puts in flight (their locks) so none commits after the caller closes the env.
    while (this.#locks.size > 0) await Promise.allSettled([...this.#locks.values()]);
    while (this.#committing !== null) await this.#committing;
    openStores.delete(this);
  }

  // ---- reports -------------------------------------------------------------------------------

  degradedCount(): number {
    let n = 0;
    for (const _ of this.#degraded.range({ limit: CLUSTER_DEGRADED_COUNTED_MAX })) n++;
    return n;
  }

  /**
   * Degraded chunks the repairer is working through: queued and not blocked on their last
   * attempt (too few fragments readable, or nowhere to put them).
   */
  repairingCount(): number {
    let n = 0;
    for (const { key } of this.#degraded.range({ limit: CLUSTER_DEGRADED_COUNTED_MAX })) {
      if (!this.#repairBlocked.has(hex(key))) n++;
    }
    return n;
  }

  /** The rebalance sweep over the current membership (idle before any ran). */
  rebalanceProgress(): RebalanceProgress {
    const r = this.#rebalance;
    if (r === null) return { state: "idle", examined: 0, total: 0, moved: 0 };
    return {
      state: r.done ? "idle" : "running",
      examined: r.examined,
      total: r.total,
      moved: r.moved,
    };
  }

  /**
   * Fragments of this node's chunks still on `node` (at most `max` counted): what a drain
   * of `node` still has to move, as far as this node's index knows.
   */
  fragmentsOn(node: number, max = CLUSTER_DEGRADED_COUNTED_MAX): number {
    let n = 0;
    for (const { value } of this.#chunks.range()) {
      const entry = decodeClusterEntry(value);
      if (entry.refcount === 0) continue;
      for (const f of entry.fragments) if (f?.node === node) n++;
      if (n >= max) return max;
    }
    return n;
  }

  /** The local pool's report, with the cluster's degraded chunks and durability. */
  poolReport(): PoolReport {
    return {
      ...this.local.store.poolReport(),
      durability: formatDurability(this.durability),
      degradedChunks: this.degradedCount(),
    };
  }

  /** The nodes as this store sees them (membership, reachability, inventory). */
  nodes(): (ClusterMember & { devices: number })[] {
    return this.#members.nodes().map((m) => ({
      ...m,
      state: this.#isDown(m.id) && !evicts(m.state) ? "unreachable" : m.state,
      devices: m.id === this.self
        ? this.local.inventory().devices.length
        : this.#inventories.get(m.id)?.inventory.devices.length ?? 0,
    }));
  }

  // ---- writing -------------------------------------------------------------------------------

  async #room(): Promise<void> {
    while (this.#inFlight >= CLUSTER_PUTS_IN_FLIGHT_MAX) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
    this.#inFlight++;
  }

  /** The chunk's fragments: k data (zero-padded) then m parity, or `copies` times the bytes. */
  async #encode(bytes: Uint8Array, d: Durability): Promise<Uint8Array[]> {
    if (d.kind === "copies") return Array.from({ length: d.copies }, () => bytes);
    const fl = fragmentLengthFor(bytes.length, d.k);
    const data = Array.from({ length: d.k }, (_, i) => {
      const out = new Uint8Array(fl);
      out.set(bytes.subarray(Math.min(i * fl, bytes.length), Math.min((i + 1) * fl, bytes.length)));
      return out;
    });
    const parity = Array.from({ length: d.m }, () => new Uint8Array(fl));
    await this.#codecFor(d).encodeAsync(data, parity);
    return [...data, ...parity];
  }

  /** The chunk's fragments as their holders keep them (fragment_frame.ts), and their CRCs. */
  async #frames(
    bytes: Uint8Array,
    d: Durability,
    origin: FragmentOrigin,
  ): Promise<{ frames: Uint8Array[]; crcs: number[]; fragmentBytes: number }> {
    const payloads = await this.#encode(bytes, d);
    const crcs: number[] = [];
    payloads.forEach((p, i) => crcs.push(i > 0 && p === payloads[0] ? crcs[0]! : crc32c(p)));
    return {
      frames: payloads.map((p, i) => encodeFragmentFrame(d, i, bytes.length, p, origin, crcs[i])),
      crcs,
      fragmentBytes: payloads[0]!.length,
    };
  }

  /**
   * Writes the fragments not yet `placed` to the devices placement chooses, moving a
   * fragment to the next device of its ranking when its node is unreachable or its device
   * refuses it, for a few rounds. Returns where each fragment is (null: nowhere).
   */
  async #writeFragments(
    id: Uint8Array,
    fragments: readonly Uint8Array[],
    d: Durability,
    placed: (Located | null)[],
    /** Nodes not to use (they hold a broken copy of one of these fragments). */
    avoid: ReadonlySet<number> = new Set(),
    /** Counts the failed fragment writes by kind. */
    failures: { unreachable: number; refused: number } = { unreachable: 0, refused: 0 },
  ): Promise<(Located | null)[]> {
    const refused = new Set<string>();
    for (let round = 0; round < CLUSTER_PLACEMENT_ROUNDS_MAX; round++) {
      const placement = await this.#currentPlacement();
      const eligible = this.#eligibleNodes();
      const total = Math.max(1, eligible.size);
      const fixed = new Map<number, number>();
      placed.forEach((p, f) => {
        if (p === null) return;
        let index = placement.indexOf(p.node, p.deviceId);
        // A holder whose device is not known (an adopted chunk's): one of its node's devices
        // stands for it, so the node counts as used.
        if (index < 0 && p.deviceId === "") {
          index = placement.devices.findIndex((dev) => dev.node === p.node);
        }
        if (index >= 0) fixed.set(f, index);
      });
      const choice = placement.place(id, fragments.length, {
        perNodeMax: perNodeMaxFor(d, total),
        fixed,
        exclude: (i) => {
          const dev = placement.devices[i]!;
          return refused.has(`${dev.node}/${dev.id}`) || avoid.has(dev.node) ||
            !eligible.has(dev.node) || this.#isDown(dev.node) ||
            !this.#writable(dev.node, dev.id);
        },
      });
      const todo = choice.flatMap((c, f) => (c === null || placed[f] !== null ? [] : [f]));
      if (todo.length === 0) break;
      const outcomes = await Promise.allSettled(todo.map((f) => {
        const dev = placement.devices[choice[f]!]!;
        return this.#putFragment(dev.node, id, f, fragments[f]!, dev.id);
      }));
      outcomes.forEach((o, j) => {
        const f = todo[j]!;
        const dev = placement.devices[choice[f]!]!;
        if (o.status === "fulfilled") {
          placed[f] = { device: choice[f]!, node: dev.node, deviceId: dev.id };
          return;
        }
        const e = o.reason;
        if (e instanceof FragmentPeerError && e.kind === "unreachable") {
          this.#markDown(dev.node);
          failures.unreachable++;
        } else {
          refused.add(`${dev.node}/${dev.id}`);
          failures.refused++;
        }
        this.#logger.warn("fragment not stored, placing it again", {
          chunk: hex(id),
          fragment: f,
          node: dev.node,
          device: dev.id,
          error: (e as Error).message,
        });
      });
      if (placed.every((p) => p !== null)) break;
    }
    return placed;
  }

  /** "full": every fragment placed; "degraded": a still-safe subset; "unsafe": less. */
  #judge(d: Durability, placed: readonly (Located | null)[]): "full" | "degraded" | "unsafe" {
    const stored = placed.filter((p) => p !== null) as Located[];
    if (stored.length === placed.length) return "full";
    if (stored.length < safeFragmentsFor(d)) return "unsafe";
    const perNode = new Map<number, number>();
    for (const p of stored) perNode.set(p.node, (perNode.get(p.node) ?? 0) + 1);
    const worst = Math.max(...perNode.values());
    // One node's loss (any one: the busiest) must leave enough to read the chunk.
    const multiNode = this.#members.nodes().length > 1;
    if (multiNode && stored.length - worst < fragmentsNeeded(d)) return "unsafe";
    return "degraded";
  }

  async #putFragment(
    node: number,
    id: Uint8Array,
    index: number,
    bytes: Uint8Array,
    device: string,
  ): Promise<void> {
    if (node === this.self) {
      try {
        await this.local.put(id, index, bytes, device);
      } catch (e) {
        throw new FragmentPeerError("refused", node, (e as Error).message);
      }
      return;
    }
    try {
      await this.#peers.put(node, id, index, bytes, device);
      this.#members.report?.(node, true);
      remoteFragments.inc({ pool: this.poolName, op: "put" });
    } catch (e) {
      if (e instanceof FragmentPeerError && e.kind === "unreachable") {
        this.#members.report?.(node, false);
      }
      throw e;
    }
  }

  /** Gives back fragments of a put that is not acknowledged (or of an erased chunk). */
  async #releaseAll(id: Uint8Array, placed: readonly (Located | null)[]): Promise<void> {
    await this.#commit((txn) => {
      placed.forEach((p, f) => {
        if (p !== null) txn.put(this.#releases, releaseKey(id, f, p.node), new Uint8Array(0));
      });
    });
    await this.releasePending();
  }

  async #addRef(id: Uint8Array, entry: ClusterEntry, tenant: string | null): Promise<number> {
    if (entry.refcount >= 0xffff_ffff) {
      throw new ChunkStoreError("refcount_overflow", `chunk ${hex(id)} has 2^32-1 references`);
    }
    const next: ClusterEntry = {
      ...entry,
      tenants: [...entry.tenants],
      refcount: entry.refcount + 1,
    };
    if (tenant !== null) addTenant(next, tenant);
    await this.#commit((txn) => {
      txn.put(this.#chunks, id, encodeClusterEntry(next));
      if (entry.refcount === 0) txn.delete(this.#unreferenced, id);
    });
    return next.refcount;
  }

  // ---- reading -------------------------------------------------------------------------------

  async #readEntry(id: Uint8Array, entry: ClusterEntry): Promise<{
    bytes: Uint8Array | null;
    reconstructed: number[];
    faults: FragmentFaultReport[];
    missing: boolean;
    present: (Uint8Array | null)[];
    /** Fragments whose node did not answer. */
    unreachable: number;
  }> {
    const d = entry.durability;
    const n = entry.fragments.length;
    const need = fragmentsNeeded(d);
    const faults: FragmentFaultReport[] = [];
    let missing = false;
    const present: (Uint8Array | null)[] = new Array(n).fill(null);
    const located: number[] = [];
    entry.fragments.forEach((f, i) => {
      if (f === null) faults.push({ fragment: i, device: "", fault: "lost", detail: "not stored" });
      else located.push(i);
    });
    // Data fragments first (no decoding), this node first, nodes known down last.
    const rankOf = (i: number) => {
      const f = entry.fragments[i]!;
      return (d.kind === "ec" && i >= d.k ? 4 : 0) + (this.#isDown(f.node) ? 2 : 0) +
        (f.node === this.self ? 0 : 1);
    };
    const order = located.sort((a, b) => rankOf(a) - rankOf(b) || a - b);
    const key = writerChunkId(id, entry.writer);
    let next = 0;
    let good = 0;
    let unreachable = 0;
    const worker = async () => {
      while (good < need && next < order.length) {
        const i = order[next++]!;
        const f = entry.fragments[i]!;
        const where = `${f.node}/${f.device}`;
        try {
          const frame = await this.#getFragment(
            f.node,
            key,
            i,
            FRAGMENT_FRAME_HEADER_BYTES + entry.fragmentBytes,
          );
          if (frame === null) {
            missing = true;
            faults.push({ fragment: i, device: where, fault: "lost", detail: "not on its node" });
            continue;
          }
          let payload: Uint8Array | null = null;
          let detail = "";
          try {
            const decoded = decodeFragmentFrame(frame, i);
            payload = decoded.payload;
            if (
              payload.length !== entry.fragmentBytes ||
              decoded.header.lengthBytes !== entry.lengthBytes ||
              (f.crc >= 0 && decoded.header.payloadCrc !== f.crc)
            ) {
              detail = "not the fragment the index names (length or checksum)";
              payload = null;
            }
          } catch (e) {
            detail = (e as Error).message;
          }
          if (payload === null) {
            missing = true;
            faults.push({ fragment: i, device: where, fault: "checksum", detail });
          } else if (good < need) {
            present[i] = payload;
            good++;
          }
        } catch (e) {
          // A holder that answered but could not read its record needs the fragment again.
          if (!(e instanceof FragmentPeerError && e.kind === "unreachable")) missing = true;
          else unreachable++;
          faults.push({
            fragment: i,
            device: where,
            fault: "offline",
            detail: (e as Error).message,
          });
        }
      }
    };
    // `need` fetches at once; while they are slower than the hedge delay and fragments are
    // left, one more starts each time, and the read goes on as soon as `need` are good (a
    // slow holder's answer is then dropped).
    await new Promise<void>((resolve) => {
      let running = 0;
      let hedge: ReturnType<typeof setTimeout> | undefined;
      const finish = () => {
        clearTimeout(hedge);
        resolve();
      };
      const start = () => {
        running++;
        worker().finally(() => {
          running--;
          if (good >= need || (running === 0 && next >= order.length)) finish();
          else if (running === 0) start();
        });
      };
      const arm = () => {
        hedge = setTimeout(() => {
          if (good >= need || next >= order.length) return;
          start();
          arm();
        }, CLUSTER_READ_HEDGE_MS);
      };
      for (let w = 0; w < need; w++) start();
      arm();
    });
    if (good < need) {
      return { bytes: null, reconstructed: [], faults, missing, present, unreachable };
    }
    if (d.kind === "copies") {
      const bytes = present.find((p) => p !== null)!;
      return {
        bytes: bytes.subarray(0, entry.lengthBytes),
        reconstructed: [],
        faults,
        missing,
        present,
        unreachable,
      };
    }
    const fl = entry.fragmentBytes;
    const out = new Uint8Array(d.k * fl);
    const targets = new Map<number, Uint8Array>();
    for (let i = 0; i < d.k; i++) {
      if (present[i] === null) targets.set(i, out.subarray(i * fl, (i + 1) * fl));
      else out.set(present[i]!, i * fl);
    }
    if (targets.size > 0) await this.#codecFor(d).reconstructAsync(present, targets);
    return {
      bytes: out.subarray(0, entry.lengthBytes),
      reconstructed: [...targets.keys()],
      faults,
      missing,
      present,
      unreachable,
    };
  }

  /**
   * Finds a chunk this node has no entry for on the nodes that hold its fragments: each
   * fragment index is looked for on the nodes in its placement ranking order (where it
   * is unless its write went around a node that was down), and the first frame found says
   * the chunk's geometry and length. Null when fewer fragments than a read needs are found.
   */
  async #locate(id: Uint8Array): Promise<ClusterEntry | null> {
    const key = hex(id);
    const cached = this.#located.get(key);
    if (cached !== undefined) return cached;
    // Whoever wrote it: each writer's fragments are its own (writerChunkId()).
    let entry: ClusterEntry | null = null;
    for (const m of this.#members.nodes()) {
      if (m.id === this.self) continue;
      entry = await this.#locateWritten(id, m.id);
      if (entry !== null) break;
    }
    if (entry === null) return null;
    this.#located.set(key, entry);
    if (this.#located.size > CLUSTER_LOCATED_CACHED_MAX) {
      this.#located.delete(this.#located.keys().next().value!);
    }
    return entry;
  }

  /** The entry of `id` as node `writer` wrote it, found on the holders; null if not found. */
  async #locateWritten(id: Uint8Array, writer: number): Promise<ClusterEntry | null> {
    const key = writerChunkId(id, writer);
    const placement = await this.#currentPlacement();
    const states = this.#states();
    const members = [...states.keys()];
    const ranked = (f: number) => {
      const order = [...new Set(placement.rank(key, f).map((i) => placement.nodeOf(i)))];
      for (const m of members) if (!order.includes(m)) order.push(m);
      // A node recorded down or removed is not asked (a draining one still holds its own).
      return order.filter((n) =>
        n === this.self ||
        (!this.#isDown(n) && states.get(n) !== "down" && states.get(n) !== "removed")
      );
    };
    const holderOf = async (f: number): Promise<number | null> => {
      for (const node of ranked(f)) {
        try {
          const held = node === this.self
            ? (await this.local.size(key, f)) !== null
            : await this.#peers.has(node, key, f);
          if (held) return node;
        } catch (e) {
          if (e instanceof FragmentPeerError && e.kind === "unreachable") this.#markDown(node);
        }
      }
      return null;
    };
    const search = (from: number, to: number) =>
      Promise.all(Array.from({ length: to - from }, (_, i) => holderOf(from + i)));
    let holders = await search(0, fragmentCount(this.durability));
    const first = holders.findIndex((h) => h !== null);
    if (first < 0) return null;
    const frame = await this.#getFragment(
      holders[first]!,
      key,
      first,
      this.local.store.chunkBytesMax,
    )
      .catch(() => null);
    if (frame === null) return null;
    let header;
    let payloadBytes;
    try {
      const decoded = decodeFragmentFrame(frame, first);
      header = decoded.header;
      payloadBytes = decoded.payload.length;
    } catch {
      return null;
    }
    const d: Durability = header.durability.kind === "ec"
      ? header.durability
      : { kind: "copies", copies: holders.length };
    const n = fragmentCount(d);
    if (n > holders.length) holders = [...holders, ...await search(holders.length, n)];
    holders = holders.slice(0, n);
    if (holders.filter((h) => h !== null).length < fragmentsNeeded(d)) return null;
    return {
      writer,
      durability: d,
      refcount: 1,
      lengthBytes: header.lengthBytes,
      fragmentBytes: payloadBytes,
      // The CRCs come with each frame; -1: no index of this node's to check them against.
      fragments: holders.map((node) => node === null ? null : { node, device: "", crc: -1 }),
      tenants: [],
      tenantOverflow: false,
    };
  }

  async #getFragment(
    node: number,
    id: Uint8Array,
    index: number,
    sizeBytes: number,
  ): Promise<Uint8Array | null> {
    if (node === this.self) return await this.local.get(id, index);
    try {
      const bytes = await this.#peers.get(node, id, index, sizeBytes);
      this.#members.report?.(node, true);
      remoteFragments.inc({ pool: this.poolName, op: "get" });
      return bytes;
    } catch (e) {
      if (e instanceof FragmentPeerError && e.kind === "unreachable") {
        this.#markDown(node);
        this.#members.report?.(node, false);
      }
      throw e;
    }
  }

  // ---- GC and repair -------------------------------------------------------------------------

  /**
   * Erases up to `max` chunks whose last reference is gone: their entries go, and a release
   * of each fragment is queued durably and sent to its node (releasePending()).
   */
  async collect(max = CLUSTER_STEP_CHUNKS_MAX): Promise<{ examined: number; erased: number }> {
    this.#checkOpen();
    const ids: Uint8Array[] = [];
    for (const { key } of this.#unreferenced.range({ limit: max })) ids.push(key);
    let erased = 0;
    for (const id of ids) {
      await this.#withLock(id, async () => {
        const entry = this.#entry(id);
        await this.#commit((txn) => {
          txn.delete(this.#unreferenced, id);
          if (entry === undefined || entry.refcount > 0) return;
          txn.delete(this.#chunks, id);
          txn.delete(this.#degraded, id);
          const key = writerChunkId(id, entry.writer);
          entry.fragments.forEach((f, i) => {
            if (f !== null) txn.put(this.#releases, releaseKey(key, i, f.node), new Uint8Array(0));
          });
          erased++;
        });
      });
    }
    if (erased > 0) await this.releasePending();
    return { examined: ids.length, erased };
  }

  /**
   * Sends queued fragment releases; those to unreachable nodes stay queued, those to a node
   * removed from the cluster are dropped (its data left with it).
   */
  async releasePending(max = CLUSTER_RELEASES_STEP_MAX): Promise<number> {
    const keys: Uint8Array[] = [];
    for (const { key } of this.#releases.range({ limit: max })) keys.push(key);
    const done: Uint8Array[] = [];
    const states = this.#states();
    await Promise.all(keys.map(async (key) => {
      const view = new DataView(key.buffer, key.byteOffset, key.byteLength);
      const id = key.slice(0, 32);
      const index = view.getUint32(32);
      const node = view.getUint32(36);
      if (node !== this.self && states.get(node) === "removed") {
        done.push(key);
        return;
      }
      if (node !== this.self && this.#isDown(node)) return;
      try {
        if (node === this.self) await this.local.release(id, index);
        else await this.#peers.release(node, id, index);
        done.push(key);
      } catch (e) {
        if (e instanceof FragmentPeerError && e.kind === "unreachable") this.#markDown(node);
        this.#logger.debug("fragment release deferred", { node, error: (e as Error).message });
      }
    }));
    if (done.length > 0) {
      await this.#commit((txn) => {
        for (const key of done) txn.delete(this.#releases, key);
      });
    }
    return done.length;
  }

  pendingReleases(max = CLUSTER_RELEASES_STEP_MAX): number {
    let n = 0;
    for (const _ of this.#releases.range({ limit: max })) n++;
    return n;
  }

  /**
   * Brings up to `max` degraded chunks back to full redundancy (fragments rebuilt from any k
   * and written where placement now says), writing at most about `bytesMax` bytes. A chunk
   * whose nodes are still down stays queued.
   */
  async repairStep(
    options: { max?: number; bytesMax?: number } = {},
  ): Promise<{ examined: number; repaired: number; bytes: number; more: boolean }> {
    this.#checkOpen();
    const max = options.max ?? CLUSTER_STEP_CHUNKS_MAX;
    const bytesMax = options.bytesMax ?? Infinity;
    const ids: Uint8Array[] = [];
    for (const { key } of this.#degraded.range({ limit: max })) ids.push(key);
    let repaired = 0;
    let bytes = 0;
    let examined = 0;
    // A few chunks at a time: each waits mostly on its holders, not on this node.
    for (let at = 0; at < ids.length && bytes < bytesMax; at += CLUSTER_REPAIRS_IN_FLIGHT_MAX) {
      const group = ids.slice(at, at + CLUSTER_REPAIRS_IN_FLIGHT_MAX);
      examined += group.length;
      const outcomes = await Promise.all(
        group.map((id) => this.#withLock(id, () => this.#repairChunk(id))),
      );
      for (const outcome of outcomes) {
        bytes += outcome.bytes;
        if (outcome.repaired) repaired++;
      }
    }
    return { examined, repaired, bytes, more: examined < ids.length || ids.length === max };
  }

  async #repairChunk(id: Uint8Array): Promise<{ repaired: boolean; bytes: number }> {
    const entry = this.#entry(id);
    if (entry === undefined || entry.refcount === 0) {
      await this.#commit((txn) => txn.delete(this.#degraded, id));
      return { repaired: false, bytes: 0 };
    }
    // Which located fragments are really there, read whole: a holder without it (a wiped
    // device) or with a record it cannot read back (a broken one) needs it again; a holder
    // that is down counts as present: bringing it back is the membership's business.
    const gone = new Set<number>();
    /** Holders of a broken record: it goes elsewhere, and our reference there is dropped. */
    const broken = new Map<number, number>();
    /**
     * Holders recorded down, draining or removed: the fragment is made again elsewhere (from
     * any k, or copied), and the holder's reference is dropped once it answers again.
     */
    const leaving = new Map<number, number>();
    const states = this.#states();
    const key = writerChunkId(id, entry.writer);
    await Promise.all(entry.fragments.map(async (f, i) => {
      if (f === null) {
        gone.add(i);
        return;
      }
      if (evicts(states.get(f.node) ?? "unknown")) {
        gone.add(i);
        leaving.set(i, f.node);
        return;
      }
      try {
        const frame = await this.#getFragment(
          f.node,
          key,
          i,
          FRAGMENT_FRAME_HEADER_BYTES + entry.fragmentBytes,
        );
        if (frame === null) {
          gone.add(i);
          return;
        }
        const { header } = decodeFragmentFrame(frame, i);
        // An adopted chunk's entry knows no CRCs (-1): the frame's own check stands.
        if (
          (f.crc >= 0 && header.payloadCrc !== f.crc) || header.lengthBytes !== entry.lengthBytes
        ) {
          throw new Error("not the fragment the index names");
        }
      } catch (e) {
        if (e instanceof FragmentPeerError && e.kind === "unreachable") return;
        gone.add(i);
        broken.set(i, f.node);
      }
    }));
    const read = await this.#readEntry(id, entry);
    if (read.bytes === null) {
      this.#logger.warn("degraded chunk not readable now; repair later", { chunk: hex(id) });
      this.#blockRepair(id);
      return { repaired: false, bytes: 0 };
    }
    const d = entry.durability;
    const { frames: fragments, crcs } = await this.#frames(read.bytes.slice(), d, {
      chunkId: id,
      writer: entry.writer,
    });
    const placement = await this.#currentPlacement();
    const placed: (Located | null)[] = entry.fragments.map((f, i) => {
      if (f === null || gone.has(i)) return null;
      return { device: placement.indexOf(f.node, f.device), node: f.node, deviceId: f.device };
    });
    const kept = placed.map((p) => p !== null);
    const before = placed.filter((p) => p !== null).length;
    await this.#writeFragments(key, fragments, d, placed, new Set(broken.values()));
    const written = placed.filter((p) => p !== null).length - before;
    const next: ClusterEntry = {
      ...entry,
      // A fragment that could not leave its holder yet stays named there: it is still held
      // (and still holds its reference) until a later pass finds it a place.
      // A fragment left where it was keeps its record as it was (an adopted chunk's holders
      // it did not write keep CRC -1: they hold the writer's reference, not this node's).
      fragments: placed.map((p, i) =>
        p === null
          ? (leaving.has(i) ? entry.fragments[i]! : null)
          : kept[i]
          ? entry.fragments[i]!
          : { node: p.node, device: p.deviceId, crc: crcs[i]! }
      ),
    };
    const complete = placed.every((p) => p !== null);
    await this.#commit((txn) => {
      txn.put(this.#chunks, id, encodeClusterEntry(next));
      if (complete) txn.delete(this.#degraded, id);
      // A broken record still holds this chunk's reference on its node: give it back (a
      // fragment that was simply not there holds none).
      for (const [i, node] of [...broken, ...leaving]) {
        if (placed[i] !== null) {
          txn.put(this.#releases, releaseKey(key, i, node), new Uint8Array(0));
        }
      }
    });
    const bytes = written * entry.fragmentBytes;
    repairBytes.inc({ pool: this.poolName }, bytes);
    const left = [...leaving.keys()].filter((i) => placed[i] !== null).length;
    if (left > 0) {
      movedFragments.inc({ pool: this.poolName, reason: "evacuate" }, left);
    }
    if (complete) this.#repairBlocked.delete(hex(id));
    else this.#blockRepair(id);
    if (complete) {
      repairedChunks.inc({ pool: this.poolName });
      this.#logger.info("chunk repaired", { chunk: hex(id), fragments: written });
    }
    return { repaired: complete, bytes };
  }

  /**
   * Takes over chunks whose writer is recorded down or removed, found from the fragments this
   * node holds: every frame names its chunk and writer (fragment_frame.ts), placement is
   * known, so the survivors find the chunk's other holders without the writer. One survivor
   * adopts it (the lowest node id among the live holders, so all agree without talking),
   * records it in its index as degraded, and the repairer rebuilds the writer's fragments
   * elsewhere. The chosen design keeps the index per node (no cluster-wide index through
   * Raft): the writer's reference count is lost with it, so an adopted chunk is retained
   * rather than collected (see #dropRef() for why it is not recounted from the views); if
   * this node has its own copy of the same chunk, that copy serves
   * the id, is retained likewise, and the orphan's fragments are released (once the writer
   * is removed). A writer that comes back with its index gets its chunks back; until then
   * they take no new reference (#heldForWriter()), which that index would not count.
   *
   * Reads up to `max` of this node's records (about `bytesMax` bytes) per step; a sweep
   * runs once each time the set of writers gone changes (again, CLUSTER_ADOPT_RETRY_MS
   * after it started, if it left a chunk).
   */
  async adoptStep(
    options: { max?: number; bytesMax?: number } = {},
  ): Promise<{ examined: number; adopted: number; bytes: number; more: boolean }> {
    this.#checkOpen();
    const max = options.max ?? CLUSTER_ADOPT_RECORDS_MAX;
    const bytesMax = options.bytesMax ?? Infinity;
    const idle = { examined: 0, adopted: 0, bytes: 0, more: false };
    const gone = this.#members.nodes()
      .filter((m) => m.id !== this.self && (m.state === "down" || m.state === "removed"))
      .map((m) => m.id)
      .sort((a, b) => a - b);
    const sweepKey = gone.join(",");
    await this.#handBackStep(sweepKey, gone, max);
    if (gone.length === 0) {
      this.#adopt = null;
      return idle;
    }
    if (
      this.#adopt === null || this.#adopt.key !== sweepKey ||
      (this.#adopt.done && this.#adopt.deferred &&
        this.#now() - this.#adopt.startedAt >= CLUSTER_ADOPT_RETRY_MS)
    ) {
      this.#adopt = {
        key: sweepKey,
        cursor: null,
        done: false,
        deferred: false,
        startedAt: this.#now(),
      };
    }
    const sweep = this.#adopt;
    if (sweep.done) return idle;
    const records = this.local.store.index.scan(sweep.cursor, max);
    let examined = 0;
    let adopted = 0;
    let bytes = 0;
    for (const { id: recordId, entry: record } of records) {
      if (bytes >= bytesMax) break;
      examined++;
      sweep.cursor = recordId;
      if (record.refcount === 0) continue;
      let frame: Uint8Array;
      try {
        frame = await this.local.store.get(recordId);
      } catch (e) {
        // Unreadable here: the holder's scrub and the chunk's owner deal with it.
        this.#logger.debug("fragment not read for adoption", { error: (e as Error).message });
        continue;
      }
      bytes += frame.length;
      let origin: FragmentOrigin | null;
      let index: number;
      try {
        const { header } = decodeFragmentFrame(frame, null);
        origin = header.origin;
        index = header.index;
      } catch {
        continue; // a whole chunk from before the cluster, not a fragment
      }
      if (origin === null || !gone.includes(origin.writer)) continue;
      const key = writerChunkId(origin.chunkId, origin.writer);
      // The frame is the one kept under its own name (not a record that claims another's).
      if (!bytesEqual(fragmentId(key, index), recordId)) continue;
      const { chunkId, writer } = origin;
      const outcome = await this.#withLock(chunkId, () => this.#adoptChunk(chunkId, writer));
      if (outcome === "adopted") adopted++;
      if (outcome === "deferred") sweep.deferred = true;
    }
    if (examined === records.length && records.length < max) sweep.done = true;
    if (adopted > 0) adoptedChunks.inc({ pool: this.poolName }, adopted);
    return { examined, adopted, bytes, more: !sweep.done };
  }

  /**
   * Gives back up to `max` adopted chunks whose writer is up again and still indexes them
   * (it came back with its data): the writer owns them again, and the fragments this node
   * wrote for them (known CRC; the others hold the writer's reference) are released.
   */
  async #handBackStep(key: string, gone: readonly number[], max: number): Promise<void> {
    const h = this.#handBack;
    if (
      h === null || h.key !== key ||
      // A writer that did not answer is asked again after the node retry delay.
      (h.done && h.cursor !== null && this.#now() - h.startedAt >= this.#nodeRetryMs)
    ) {
      this.#handBack = { key, cursor: null, done: false, startedAt: this.#now() };
    }
    const sweep = this.#handBack!;
    if (sweep.done) return;
    const start = sweep.cursor ?? undefined;
    const batch: { id: Uint8Array; entry: ClusterEntry }[] = [];
    for (const { key: id, value } of this.#chunks.range({ start, limit: max + 1 })) {
      if (start !== undefined && batch.length === 0 && bytesEqual(id, start)) continue;
      if (batch.length === max) break;
      batch.push({ id, entry: decodeClusterEntry(value) });
    }
    /** Set when a writer could not be asked: the sweep runs again later. */
    let unasked: Uint8Array | null = null;
    const states = this.#states();
    for (const { id, entry } of batch) {
      if (!entry.adopted || entry.writer === this.self || gone.includes(entry.writer)) continue;
      if (!takesFragments(states.get(entry.writer) ?? "unknown")) continue;
      let owns = false;
      try {
        owns = await this.#peers.has(entry.writer, id, REFERENCE_FRAGMENT_INDEX);
      } catch {
        unasked = id;
        continue;
      }
      if (!owns) continue; // back without its data: this node keeps the chunk
      await this.#withLock(id, async () => {
        const now = this.#entry(id);
        if (now === undefined || !now.adopted || now.writer !== entry.writer) return;
        const key = writerChunkId(id, now.writer);
        await this.#commit((txn) => {
          txn.delete(this.#chunks, id);
          txn.delete(this.#degraded, id);
          now.fragments.forEach((f, i) => {
            if (f !== null && f.crc >= 0) {
              txn.put(this.#releases, releaseKey(key, i, f.node), new Uint8Array(0));
            }
          });
        });
      });
      this.#logger.info("adopted chunk given back to its writer", {
        chunk: hex(id),
        writer: entry.writer,
      });
    }
    if (batch.length < max) {
      sweep.done = true;
      // Done, or to be run again from the start for a writer that did not answer.
      sweep.cursor = unasked;
    } else {
      sweep.cursor = batch[batch.length - 1]!.id;
    }
  }

  async #adoptChunk(
    id: Uint8Array,
    writer: number,
  ): Promise<"adopted" | "skipped" | "deferred"> {
    const existing = this.#entry(id);
    if (existing !== undefined && existing.writer === writer) return "skipped";
    const key = writerChunkId(id, writer);
    const found = await this.#locateWritten(id, writer);
    if (found === null) {
      this.#logger.warn("chunk of a node gone not readable from its holders now; later", {
        chunk: hex(id),
        writer,
      });
      return "deferred";
    }
    const holders = found.fragments.flatMap((f) => (f === null ? [] : [f.node]));
    if (Math.min(...holders) !== this.self) return "skipped";
    if (existing !== undefined) {
      // This node's own copy of the same bytes serves the id; it now carries the orphan's
      // references too (uncounted). The orphan's fragments go once its writer is removed; a
      // writer only down may come back with its index naming them.
      const removed = this.#states().get(writer) === "removed";
      await this.#commit((txn) => {
        txn.put(this.#chunks, id, encodeClusterEntry({ ...existing, adopted: true }));
        if (!removed) return;
        found.fragments.forEach((f, i) => {
          if (f !== null) txn.put(this.#releases, releaseKey(key, i, f.node), new Uint8Array(0));
        });
      });
      this.#logger.info("chunk of a node gone merged into this node's copy", {
        chunk: hex(id),
        writer,
      });
      return "adopted";
    }
    const fragments = await Promise.all(found.fragments.map(async (f, i) => {
      if (f === null) return null;
      const device = f.node === this.self ? (await this.local.deviceOf(key, i)) ?? "" : "";
      return { node: f.node, device, crc: -1 };
    }));
    const entry: ClusterEntry = { ...found, refcount: 1, fragments, adopted: true };
    await this.#commit((txn) => {
      txn.put(this.#chunks, id, encodeClusterEntry(entry));
      txn.put(this.#degraded, id, new Uint8Array(0));
    });
    this.#located.delete(hex(id));
    this.#logger.info("chunk of a node gone adopted for repair", { chunk: hex(id), writer });
    return "adopted";
  }

  /**
   * Asks the holders of up to `max` chunks (continuing where the last step stopped, from the
   * start after the end) whether they still hold each fragment, and queues a chunk for
   * repair when one does not (a node that lost its data and came back empty). Cheap: a stat
   * per fragment, no bytes; unreadable records are found by reads and by the holder's scrub.
   */
  async verifyStep(max = CLUSTER_VERIFY_CHUNKS_MAX): Promise<{ checked: number; missing: number }> {
    this.#checkOpen();
    const start = this.#verifyCursor ?? undefined;
    const batch: { id: Uint8Array; entry: ClusterEntry }[] = [];
    for (const { key, value } of this.#chunks.range({ start, limit: max + 1 })) {
      if (start !== undefined && batch.length === 0 && bytesEqual(key, start)) continue;
      if (batch.length === max) break;
      batch.push({ id: key, entry: decodeClusterEntry(value) });
    }
    this.#verifyCursor = batch.length < max ? null : batch[batch.length - 1]!.id;
    const states = this.#states();
    const missing: Uint8Array[] = [];
    await Promise.all(batch.map(async ({ id, entry }) => {
      if (entry.refcount === 0) return;
      const held = await Promise.all(entry.fragments.map(async (f, i) => {
        if (f === null) return false;
        // A holder recorded down, draining or removed: the fragment must move.
        if (evicts(states.get(f.node) ?? "unknown")) return false;
        if (f.node !== this.self && this.#isDown(f.node)) return true;
        try {
          const key = writerChunkId(id, entry.writer);
          return f.node === this.self
            ? (await this.local.size(key, i)) !== null
            : await this.#peers.has(f.node, key, i);
        } catch (e) {
          if (e instanceof FragmentPeerError && e.kind === "unreachable") this.#markDown(f.node);
          return true;
        }
      }));
      if (held.includes(false)) missing.push(id);
    }));
    if (missing.length > 0) {
      await this.#commit((txn) => {
        for (const id of missing) txn.put(this.#degraded, id, new Uint8Array(0));
      });
    }
    return { checked: batch.length, missing: missing.length };
  }

  /**
   * Runs GC of released chunks, fragment releases and rate-limited repair in the background
   * until close() (or the returned stop()).
   */
  start(): { stop: () => Promise<void> } {
    assert(this.#background === null, "background already started");
    let stopped = false;
    let wake: (() => void) | null = null;
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          wake = null;
          resolve();
        }, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    let verifiedAt = -Infinity;
    let verifyHot = false;
    const loop = (async () => {
      while (!stopped) {
        let busy = false;
        try {
          // A store that has never held a chunk leaves the other nodes alone (no fabric
          // connections on their Raft ports until chunks move).
          if (this.#holdsAnything()) await this.#refreshInventories(true);
          const gc = await this.collect();
          await this.releasePending();
          // The verify walk asks every holder about every fragment: one step a pass interval,
          // except that a walk which found work (a drain, a node down, a wiped one) goes on
          // step after step to the end of the index.
          let missing = 0;
          if (verifyHot || this.#now() - verifiedAt >= this.#repairIntervalMs) {
            verifiedAt = this.#now();
            missing = (await this.verifyStep()).missing;
            verifyHot = missing > 0 || (verifyHot && this.#verifyCursor !== null);
          }
          // Repair and rebalance bytes in one step: a second's worth at the configured rate
          // (repair first: it restores redundancy, rebalance only spreads it).
          const started = this.#now();
          // Adoption reads this node's fragment records: counted against the same budget.
          const a = await this.adoptStep({ bytesMax: this.#repairBytesPerSecond });
          const r = await this.repairStep({
            bytesMax: Math.max(0, this.#repairBytesPerSecond - a.bytes),
          });
          const b = await this.rebalanceStep({
            bytesMax: Math.max(0, this.#repairBytesPerSecond - a.bytes - r.bytes),
          });
          busy = gc.examined > 0 || a.more || r.more || b.more || missing > 0 || verifyHot;
          const spent = a.bytes + r.bytes + b.bytes;
          if (spent > 0) {
            const owedMs = (spent / this.#repairBytesPerSecond) * 1000 - (this.#now() - started);
            if (owedMs > 0 && !stopped) await sleep(owedMs);
          }
        } catch (e) {
          if (stopped || this.#closed) break;
          this.#logger.warn("chunk repair pass failed", { error: (e as Error).message });
        }
        if (!stopped && !busy) await sleep(this.#repairIntervalMs);
      }
    })();
    const handle = {
      stop: async () => {
        stopped = true;
        (wake as (() => void) | null)?.();
        await loop;
        this.#background = null;
      },
    };
    this.#background = handle;
    return handle;
  }

  /**
   * Moves fragments of up to `max` of this node's chunks to where placement over the current
   * membership puts them (a node joined: about its share moves to it), writing at most about
   * `bytesMax` bytes. A sweep runs once over every chunk each time the membership changes;
   * chunks with a fragment missing or on a node that is not answering are left to repair.
   */
  async rebalanceStep(
    options: { max?: number; bytesMax?: number } = {},
  ): Promise<{ examined: number; moved: number; bytes: number; more: boolean }> {
    this.#checkOpen();
    const max = options.max ?? CLUSTER_REBALANCE_CHUNKS_MAX;
    const bytesMax = options.bytesMax ?? Infinity;
    // No chunk, nothing to move, and no peer to ask for its devices: a store that just
    // started must not find its peers not listening yet and skip them for the retry delay.
    let empty = true;
    for (const _ of this.#chunks.range({ limit: 1 })) empty = false;
    if (empty) return { examined: 0, moved: 0, bytes: 0, more: false };
    const placement = await this.#currentPlacement();
    const eligible = this.#eligibleNodes();
    // Until every member that takes fragments said what devices it has, a placement would
    // move fragments for want of its devices, and back again later.
    if ([...eligible].some((n) => !placement.nodes.includes(n))) {
      return { examined: 0, moved: 0, bytes: 0, more: false };
    }
    const sweepKey = `${placement.devices.map((d) => `${d.node}/${d.id}`).join(",")}|${
      [...eligible].sort((a, b) => a - b).join(",")
    }`;
    if (this.#rebalance?.key !== sweepKey) {
      let total = 0;
      for (const _ of this.#chunks.range({ limit: CLUSTER_REBALANCE_COUNTED_MAX })) total++;
      // Also once after opening: the membership may have changed while the node was away.
      this.#rebalance = { key: sweepKey, cursor: null, done: false, examined: 0, total, moved: 0 };
    }
    const sweep = this.#rebalance;
    if (sweep.done) return { examined: 0, moved: 0, bytes: 0, more: false };
    const start = sweep.cursor ?? undefined;
    const ids: Uint8Array[] = [];
    for (const { key } of this.#chunks.range({ start, limit: max + 1 })) {
      if (start !== undefined && ids.length === 0 && bytesEqual(key, start)) continue;
      if (ids.length === max) break;
      ids.push(key);
    }
    let moved = 0;
    let bytes = 0;
    let examined = 0;
    for (const id of ids) {
      if (bytes >= bytesMax) break;
      examined++;
      sweep.cursor = id;
      const r = await this.#withLock(id, () => this.#rebalanceChunk(id, placement, eligible));
      moved += r.moved;
      bytes += r.bytes;
    }
    sweep.examined += examined;
    sweep.moved += moved;
    if (examined === ids.length && ids.length < max) sweep.done = true;
    if (moved > 0) movedFragments.inc({ pool: this.poolName, reason: "rebalance" }, moved);
    return { examined, moved, bytes, more: !sweep.done };
  }

  async #rebalanceChunk(
    id: Uint8Array,
    placement: ClusterPlacement,
    eligible: ReadonlySet<number>,
  ): Promise<{ moved: number; bytes: number }> {
    const entry = this.#entry(id);
    if (entry === undefined || entry.refcount === 0) return { moved: 0, bytes: 0 };
    if (this.#degraded.getSync(id) !== undefined) return { moved: 0, bytes: 0 };
    const current: number[] = [];
    for (const f of entry.fragments) {
      if (f === null || !eligible.has(f.node) || this.#isDown(f.node)) {
        return { moved: 0, bytes: 0 };
      }
      const index = placement.indexOf(f.node, f.device);
      if (index < 0) return { moved: 0, bytes: 0 };
      current.push(index);
    }
    const d = entry.durability;
    const perNodeMax = perNodeMaxFor(d, Math.max(1, eligible.size));
    const choice = placement.place(writerChunkId(id, entry.writer), current.length, {
      perNodeMax,
      // Not excluding nodes failing requests now: their share is not taken from them.
      exclude: (i) => {
        const dev = placement.devices[i]!;
        return !eligible.has(dev.node) || !this.#writable(dev.node, dev.id);
      },
    });
    const key = writerChunkId(id, entry.writer);
    const next: ClusterEntry = { ...entry, fragments: [...entry.fragments] };
    const releases: { index: number; node: number }[] = [];
    let bytes = 0;
    // Only as many fragments move as nodes are short of the count placement gives them:
    // each from a node holding more than its count, to a device placement chose on a node
    // holding fewer. Which fragment goes where does not matter to reads (the index names the
    // holder), so a node's arrival moves about its share and nothing shifts between the
    // others; every step keeps devices distinct and nodes within the per-node bound.
    const countByNode = (devices: readonly (number | null)[]) => {
      const counts = new Map<number, number>();
      for (const dev of devices) {
        if (dev !== null) {
          counts.set(placement.nodeOf(dev), (counts.get(placement.nodeOf(dev)) ?? 0) + 1);
        }
      }
      return counts;
    };
    const want = countByNode(choice);
    const have = countByNode(current);
    const moves: { fragment: number; target: number }[] = [];
    for (const target of choice) {
      if (target === null || current.includes(target)) continue;
      const targetNode = placement.nodeOf(target);
      if ((have.get(targetNode) ?? 0) >= (want.get(targetNode) ?? 0)) continue;
      if (this.#isDown(targetNode)) continue;
      // The fragment to move: on a node over its count, preferably on a device placement
      // no longer chose.
      let fragment = -1;
      for (let g = 0; g < current.length; g++) {
        const node = placement.nodeOf(current[g]!);
        if ((have.get(node) ?? 0) <= (want.get(node) ?? 0)) continue;
        if (moves.some((m) => m.fragment === g)) continue;
        if (
          fragment < 0 || (choice.includes(current[fragment]!) && !choice.includes(current[g]!))
        ) {
          fragment = g;
        }
      }
      if (fragment < 0) break;
      const from = placement.nodeOf(current[fragment]!);
      have.set(from, have.get(from)! - 1);
      have.set(targetNode, (have.get(targetNode) ?? 0) + 1);
      moves.push({ fragment, target });
    }
    for (const { fragment: f, target } of moves) {
      const from = placement.devices[current[f]!]!;
      const to = placement.devices[target]!;
      try {
        const frame = await this.#getFragment(
          from.node,
          key,
          f,
          FRAGMENT_FRAME_HEADER_BYTES + entry.fragmentBytes,
        );
        if (frame === null) continue;
        const { header } = decodeFragmentFrame(frame, f);
        const crc = entry.fragments[f]!.crc;
        if (header.payloadCrc !== crc || header.lengthBytes !== entry.lengthBytes) continue;
        await this.#putFragment(to.node, key, f, frame, to.id);
        bytes += frame.length;
      } catch (e) {
        this.#logger.debug("fragment not moved", { chunk: hex(id), fragment: f, error: e });
        continue;
      }
      next.fragments[f] = { node: to.node, device: to.id, crc: entry.fragments[f]!.crc };
      releases.push({ index: f, node: from.node });
      current[f] = target;
    }
    if (releases.length === 0) return { moved: 0, bytes };
    await this.#commit((txn) => {
      txn.put(this.#chunks, id, encodeClusterEntry(next));
      for (const r of releases) {
        txn.put(this.#releases, releaseKey(key, r.index, r.node), new Uint8Array(0));
      }
    });
    return { moved: releases.length, bytes };
  }

  // ---- nodes and placement ---------------------------------------------------------------------

  /** Each member's state (recorded, or as the static peers know it), by id. */
  #states(): Map<number, ClusterNodeState> {
    return new Map(this.#members.nodes().map((m) => [m.id, m.state]));
  }

  /** Nodes that take new fragments (reachable or not right now). */
  #eligibleNodes(): Set<number> {
    return new Set(this.#members.nodes().filter((m) => takesFragments(m.state)).map((m) => m.id));
  }

  #blockRepair(id: Uint8Array): void {
    if (this.#repairBlocked.size >= CLUSTER_REPAIR_BLOCKED_MAX) {
      this.#repairBlocked.delete(this.#repairBlocked.values().next().value!);
    }
    this.#repairBlocked.add(hex(id));
  }

  #holdsAnything(): boolean {
    for (const table of [this.#chunks, this.#releases, this.#degraded, this.#unreferenced]) {
      for (const _ of table.range({ limit: 1 })) return true;
    }
    return false;
  }

  #isDown(node: number): boolean {
    if (node === this.self) return false;
    const until = this.#downUntil.get(node);
    if (until === undefined) return false;
    if (this.#now() >= until) {
      this.#downUntil.delete(node);
      return false;
    }
    return true;
  }

  #markDown(node: number): void {
    if (node !== this.self) this.#downUntil.set(node, this.#now() + this.#nodeRetryMs);
  }

  /** This node's inventory, asked of its pool at most every CLUSTER_LOCAL_INVENTORY_MS. */
  #ownInventory(): DeviceInventory {
    const now = this.#now();
    if (
      this.#localInventory === null || now - this.#localInventory.at >= CLUSTER_LOCAL_INVENTORY_MS
    ) {
      this.#localInventory = { inventory: this.local.inventory(), at: now };
    }
    return this.#localInventory.inventory;
  }

  #writable(node: number, device: string): boolean {
    const inventory = node === this.self
      ? this.#ownInventory()
      : this.#inventories.get(node)?.inventory;
    return inventory?.devices.find((d) => d.id === device)?.writable ?? false;
  }

  /**
   * Asks nodes for their device inventories: those never heard from (always), and with
   * `stale`, those last asked longer than the refresh interval ago.
   */
  async #refreshInventories(stale: boolean): Promise<void> {
    const now = this.#now();
    await Promise.all(
      this.#members.nodes().map(async (m) => {
        if (m.id === this.self || m.state === "removed") return;
        // A node found down is skipped by writes until its retry delay, but a background pass
        // (stale) asks it every time, so a node that is back is used again within a pass.
        const down = this.#isDown(m.id);
        if (down && !stale) return;
        const known = this.#inventories.get(m.id);
        if (
          !down && known !== undefined && (!stale || now - known.at < this.#inventoryRefreshMs)
        ) return;
        try {
          const inventory = await this.#peers.inventory(m.id);
          if (inventory.node !== m.id) {
            throw new Error(`node ${m.id} answered as ${inventory.node}`);
          }
          this.#inventories.set(m.id, { inventory, at: this.#now() });
          this.#downUntil.delete(m.id);
          this.#members.report?.(m.id, true);
        } catch (e) {
          this.#markDown(m.id);
          this.#members.report?.(m.id, false);
          this.#logger.debug("no device inventory from node", {
            node: m.id,
            error: (e as Error).message,
          });
        }
      }),
    );
  }

  /** The placement over every node's devices known now (rebuilt when they change). */
  async #currentPlacement(): Promise<ClusterPlacement> {
    await this.#refreshInventories(false);
    const devices: { node: number; id: string; weight: number }[] = [];
    for (const m of this.#members.nodes()) {
      if (m.state === "removed") continue;
      const inventory = m.id === this.self
        ? this.#ownInventory()
        : this.#inventories.get(m.id)?.inventory;
      for (const d of inventory?.devices ?? []) {
        devices.push({ node: m.id, id: d.id, weight: d.weight });
      }
    }
    const key = devices.map((d) => `${d.node}/${d.id}:${d.weight}`).join(",");
    if (this.#placement?.key !== key) {
      this.#placement = { key, placement: new ClusterPlacement(devices) };
    }
    return this.#placement.placement;
  }

  // ---- helpers -------------------------------------------------------------------------------

  /**
   * Commits `stage` durably. Index changes that arrive while a commit is being made share the
   * next one (one lmdb commit, two syncs, for all of them); each chunk's changes stay in
   * order because its lock is held until its commit resolves.
   */
  #commit(stage: (txn: KvTxn) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#staged.push({ stage, resolve, reject });
      if (this.#committing !== null) return;
      this.#committing = (async () => {
        while (this.#staged.length > 0) {
          const batch = this.#staged.splice(0, CLUSTER_COMMIT_BATCH_MAX);
          try {
            await this.#env.transaction((txn) => {
              for (const s of batch) s.stage(txn);
            });
            for (const s of batch) s.resolve();
          } catch (e) {
            for (const s of batch) s.reject(e as Error);
          }
        }
        this.#committing = null;
      })();
    });
  }

  #entry(id: Uint8Array): ClusterEntry | undefined {
    const raw = this.#chunks.getSync(id);
    return raw === undefined ? undefined : decodeClusterEntry(raw);
  }

  /**
   * True when `id` is a whole chunk of the local store (written before this node joined a
   * cluster): it keeps being served, referenced and collected there.
   */
  #legacy(id: Uint8Array): boolean {
    return this.local.store.index.get(id) !== undefined;
  }

  #codecFor(d: Durability): ErasureCodec {
    assert(d.kind === "ec", "codec for EC only");
    const key = `${d.k}+${d.m}`;
    let codec = this.#codecCache.get(key);
    if (codec === undefined) {
      codec = this.#codecs.create({ k: d.k, m: d.m });
      this.#codecCache.set(key, codec);
    }
    return codec;
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new ChunkStoreError("closed", `cluster chunk store ${this.poolName} is closed`);
    }
  }

  async #withLock<T>(id: Uint8Array, fn: () => Promise<T>): Promise<T> {
    const key = hex(id);
    const previous = this.#locks.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.#locks.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
    }
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function checkId(id: unknown): asserts id is Uint8Array {
  if (!(id instanceof Uint8Array) || id.length !== 32) {
    throw new ChunkStoreError(
      "invalid_id",
      `chunk id must be 32 bytes, got ${id instanceof Uint8Array ? id.length : typeof id}`,
    );
  }
}

function notFound(id: Uint8Array): ChunkStoreError {
  return new ChunkStoreError("not_found", `chunk ${hex(id)} is not stored`);
}

/** A reference refused to a chunk whose writer is down (ClusterChunkStore #heldForWriter()). */
function heldForWriter(id: Uint8Array, writer: number): ChunkStoreError {
  return new ChunkStoreError(
    "not_found",
    `chunk ${hex(id)}: its writer, node ${writer}, is down; it takes no new reference ` +
      `until that node is back or removed (store the bytes afresh)`,
  );
}
