// The chunk store: the ChunkStore port (put, get, refcounts) and LocalChunkStore, which
// keeps a pool's chunks as EC fragments or copies on distinct local devices chosen by
// rendezvous placement, in segments (segment_store.ts) indexed in lmdb (chunk_index.ts).
// Chunk ids and bytes are opaque here: the bytes are already an encrypted envelope.
//
// Durability: put() resolves only once every fragment is written and fdatasync'd on its
// device and the index entry is committed durably. Puts that arrive while a batch is being
// written form the next batch (group commit): one write and one sync per device, one lmdb
// commit, for all of them.

import { assert, toHex } from "../base/mod.ts";
import type { ShimOptions } from "../../ffi/loader.ts";
import {
  type Disk,
  DISK_OP_BYTES_MAX,
  type KvEnv,
  KvError,
  type KvPageKeys,
  type KvTxn,
  openKvEnv,
  selectDisk,
} from "../disk/mod.ts";
import { type ErasureCodec, type ErasureCodecFactory, fragmentLengthFor } from "../ec/mod.ts";
import { counter, gauge, histogram, log, type Logger } from "../obs/mod.ts";
import {
  addTenant,
  type ChunkEntry,
  decodeChunkEntry,
  LmdbChunkIndex,
  tenantTag,
} from "./chunk_index.ts";
import type { HoldSubject } from "./holds.ts";
import { Placement, PlacementError } from "./placement.ts";
import { FilesystemSpace, type SpaceGuard } from "./space.ts";
import { type Durability, formatDurability, fragmentCount, type PoolSpec } from "./pool.ts";
import {
  bytesEqual,
  CHUNK_ID_LENGTH,
  type DeviceOpener,
  type DeviceProbe,
  type DeviceReport,
  type Extent,
  type FragmentFault,
  type FragmentLocation,
  recordBytesFor,
  SEGMENT_COMPACT_STEP_BYTES_DEFAULT,
  SEGMENT_COMPACT_STEP_RECORDS_MAX,
  SEGMENT_FREE_BATCH_MAX,
  type SegmentBatch,
  SegmentStore,
  type Slot,
} from "./segment_store.ts";

/** Largest chunk accepted by default (the chunker's maximum is 4 MiB by default). */
export const CHUNK_BYTES_MAX_DEFAULT = 16 << 20;
/** Chunks one GC erase commits at once (each stages its entry and its fragments' extents). */
export const CHUNK_ERASE_BATCH_MAX = 4096;
/** The unreferenced chunks a metric scrape counts at most (the gauge saturates there). */
export const CHUNK_UNREFERENCED_COUNTED_MAX = 10_000;
/** Chunks one group commit writes at most. */
export const CHUNK_BATCH_CHUNKS_MAX = 256;
/** Puts accepted and not yet durable; further puts wait for room. */
export const CHUNK_PUTS_IN_FLIGHT_MAX = 1024;
/** Times a read starts over when the index moved fragments under it (compaction, repair). */
export const CHUNK_READ_ATTEMPTS_MAX = 3;
/**
 * How long a put that found the pool full waits for GC to reclaim released space before it
 * is refused pool_full (a pool whose deletes are not yet reclaimed is not full).
 */
export const CHUNK_FULL_WAIT_MS = 30_000;
/** Rounds of re-placing fragments whose device failed during one batch. */
export const CHUNK_PLACEMENT_ROUNDS_MAX = 3;
/** Smallest lmdb map opened for a store's own index environment. */
export const CHUNK_INDEX_MAP_BYTES_DEFAULT = 256 << 20;
/** Largest lmdb map a store opens by itself (address space only until written). */
export const CHUNK_INDEX_MAP_BYTES_MAX = 256 * 1024 ** 3;
/**
 * Device bytes per byte of index map: an entry and its extents take about 1 KiB per chunk
 * and chunks are at least 64 KiB (smaller objects ride inline), so 1/32 leaves room twice
 * over; a map that fills would stop the store.
 */
export const CHUNK_INDEX_MAP_DEVICE_RATIO = 32;

/** The index map for `pool`: it grows with the devices (a growing pool's are large). */
export function indexMapBytesFor(pool: PoolSpec): number {
  const deviceBytes = pool.devices.reduce((n, d) => n + d.sizeBytes, 0);
  const wanted = Math.ceil(deviceBytes / CHUNK_INDEX_MAP_DEVICE_RATIO / (1 << 20)) * (1 << 20);
  return Math.min(CHUNK_INDEX_MAP_BYTES_MAX, Math.max(CHUNK_INDEX_MAP_BYTES_DEFAULT, wanted));
}

// A whole chunk as one record (copies) must fit one disk op.
assert(recordBytesFor(CHUNK_BYTES_MAX_DEFAULT) <= DISK_OP_BYTES_MAX, "chunk limit above op limit");

export type ChunkStoreErrorCode =
  | "invalid_id"
  | "too_large"
  | "not_found"
  | "unrecoverable"
  | "pool_full"
  | "insufficient_devices"
  /** Enough of the chunk exists, but not enough of it is reachable now (nodes down). */
  | "unavailable"
  | "id_conflict"
  | "refcount_overflow"
  | "refcount_underflow"
  | "closed"
  | "unavailable"
  | "io";

/** A chunk operation that could not be done; `code` says which way it failed. */
export class ChunkStoreError extends Error {
  override name = "ChunkStoreError";
  constructor(readonly code: ChunkStoreErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

export interface PutOptions {
  /** The tenant taking the reference: retention holds on that tenant then cover the chunk. */
  tenant?: string;
  /**
   * The id of the device that must hold the chunk (a pool of one fragment per chunk whose
   * device a cluster placement chose): when it cannot take it the put fails pool_full (or
   * insufficient_devices for a device that is not in the pool) instead of going elsewhere.
   */
  device?: string;
}

export interface PutResult {
  /** False when the chunk was already stored and only its refcount went up. */
  created: boolean;
}

export interface FragmentFaultReport {
  fragment: number;
  device: string;
  fault: FragmentFault | "lost";
  detail: string;
}

export interface ChunkRead {
  bytes: Uint8Array;
  /** Fragments rebuilt from the others for this read (empty for a clean read). */
  reconstructed: number[];
  faults: FragmentFaultReport[];
}

export interface ChunkFragmentStat {
  index: number;
  device: number;
  deviceId: string;
  offsetBytes: number;
  lost: boolean;
  /** The node holding the fragment (a cluster store's chunks). */
  node?: number;
}

export interface ChunkStat {
  refcount: number;
  lengthBytes: number;
  durability: string;
  fragmentBytes: number;
  fragments: ChunkFragmentStat[];
}

/**
 * The chunk store port: content-addressed, reference-counted storage of opaque chunks.
 * Implemented locally (LocalChunkStore) and, later, by a remote store over the chunk
 * fabric; the engine above sees only this.
 */
export interface ChunkStore {
  /**
   * Stores `bytes` under `id`, or, when `id` is stored already, only adds a reference.
   * Resolves once the chunk and its index entry are durable.
   */
  put(id: Uint8Array, bytes: Uint8Array, options?: PutOptions): Promise<PutResult>;
  /** The chunk's bytes, verified; rebuilt from surviving fragments when some are bad. */
  get(id: Uint8Array): Promise<Uint8Array>;
  /** Like get(), also saying what had to be rebuilt. */
  read(id: Uint8Array): Promise<ChunkRead>;
  /** True when the chunk is stored and referenced. */
  has(id: Uint8Array): Promise<boolean>;
  stat(id: Uint8Array): Promise<ChunkStat | null>;
  /** Adds a reference; returns the new refcount. */
  incRef(id: Uint8Array, options?: PutOptions): Promise<number>;
  /** Drops a reference; returns the new refcount (at zero, GC may erase the chunk). */
  decRef(id: Uint8Array): Promise<number>;
  close(): Promise<void>;
}

export interface LocalChunkStoreOptions {
  pool: PoolSpec;
  codecs: ErasureCodecFactory;
  /** The index environment; when omitted one is opened at `indexDir` and owned. */
  env?: KvEnv;
  indexDir?: string;
  /**
   * The node's page keys (required with `indexDir`; null only in tests). The index is not
   * page-encrypted: it holds chunk ids (digests, in the devices' record headers too),
   * fragment places, counts and hashed tenant tags, nothing tenant-readable, and lmdb-js's
   * page encryption measured unstable under the index's write load. An index an earlier
   * version encrypted under these keys is rewritten unencrypted once.
   */
  indexPageKeys?: KvPageKeys | null;
  indexMapBytes?: number;
  /** Opens a device (default: selectDisk() on the spec's path, creating its directory). */
  openDevice?: DeviceOpener;
  /** Shim location and FFI mode for the default opener (the role's KISEKI_FFI/KISEKI_FFI_DIR). */
  shim?: ShimOptions;
  /** Identity of a device path (default with the default opener: the file's dev:inode). */
  probeDevice?: DeviceProbe;
  chunkBytesMax?: number;
  stagingBytes?: number;
  /** Filesystem room of a growing pool (default: statfs of `pool.growth.path`). */
  space?: SpaceGuard;
  logger?: Logger;
  randomBytes?: (length: number) => Uint8Array;
}

export interface ScrubChunkReport {
  fragmentsChecked: number;
  fragmentsDamaged: number;
  fragmentsRepaired: number;
  bytesChecked: number;
  /** The chunk has fewer good fragments than it needs: it cannot be read or repaired. */
  unrecoverable: boolean;
}

export type EraseOutcome = "erased" | "held" | "referenced" | "gone";

export interface EraseResult {
  outcome: EraseOutcome;
  /** Chunk bytes erased (0 unless erased). */
  bytes: number;
  /** The hold that kept the chunk (outcome "held"). */
  hold?: string;
}

export interface CompactReport {
  /** No segment needed compaction. */
  idle: boolean;
  segmentsFreed: number;
  recordsMoved: number;
  bytesMoved: number;
}

// ---- metrics -----------------------------------------------------------------------------

const recoveries = counter<"pool" | "kind">({
  name: "kiseki_chunk_index_recoveries_total",
  help: "Failed chunk index commits the store recovered from (kind: space, damaged, other)",
  labelNames: ["pool", "kind"],
});
/** Times a put whose batch failed to commit is tried again after the store recovered. */
export const CHUNK_PUT_RETRIES_AFTER_RECOVERY = 2;
const bytesWritten = counter<"pool">({
  name: "kiseki_chunk_bytes_written_total",
  help: "Fragment payload bytes written to devices (parity and copies included)",
  labelNames: ["pool"],
});
const bytesRead = counter<"pool">({
  name: "kiseki_chunk_bytes_read_total",
  help: "Fragment payload bytes read from devices and verified",
  labelNames: ["pool"],
});
const dedupHits = counter<"pool">({
  name: "kiseki_chunk_dedup_hits_total",
  help: "Puts of a chunk already stored: a reference added, nothing written",
  labelNames: ["pool"],
});
const degradedReads = counter<"pool">({
  name: "kiseki_chunk_degraded_reads_total",
  help: "Chunk reads that had to rebuild or skip bad fragments",
  labelNames: ["pool"],
});
const encodeSeconds = histogram<"pool">({
  name: "kiseki_ec_encode_seconds",
  help: "Time to compute the parity of one chunk",
  labelNames: ["pool"],
});
const decodeSeconds = histogram<"pool">({
  name: "kiseki_ec_decode_seconds",
  help: "Time to rebuild lost fragments of one chunk",
  labelNames: ["pool"],
});

/** Stores whose capacity the pool gauges report, bounded by the pools a process opens. */
const openStores = new Set<LocalChunkStore>();

gauge<"pool">({
  name: "kiseki_pool_capacity_bytes",
  help: "Bytes the pool's devices can hold in segments (a pool that grows with its " +
    "filesystem: what it holds now plus the filesystem's room above its reserve)",
  labelNames: ["pool"],
  collect: (set) => {
    for (const s of openStores) set({ pool: s.pool.name }, s.poolReport().capacityBytes);
  },
});
gauge<"pool">({
  name: "kiseki_pool_used_bytes",
  help: "Bytes of the pool's segments in use (live and not yet compacted)",
  labelNames: ["pool"],
  collect: (set) => {
    for (const s of openStores) set({ pool: s.pool.name }, s.poolReport().usedBytes);
  },
});
gauge<"pool">({
  name: "kiseki_pool_live_bytes",
  help: "Bytes of live fragment records in the pool",
  labelNames: ["pool"],
  collect: (set) => {
    for (const s of openStores) set({ pool: s.pool.name }, s.poolReport().liveBytes);
  },
});
gauge<"pool">({
  name: "kiseki_pool_unreferenced_chunks",
  help: "Chunks whose last reference is gone and that GC has not erased yet",
  labelNames: ["pool"],
  collect: (set) => {
    for (const s of openStores) set({ pool: s.pool.name }, s.unreferencedPending());
  },
});
gauge<"pool" | "status">({
  name: "kiseki_pool_devices",
  help: "Devices of the pool by status (ok, failed, offline)",
  labelNames: ["pool", "status"],
  collect: (set) => {
    for (const s of openStores) {
      const counts = { ok: 0, failed: 0, offline: 0 };
      for (const d of s.devices()) counts[d.status]++;
      for (const [status, n] of Object.entries(counts)) set({ pool: s.pool.name, status }, n);
    }
  },
});

/** What a pool holds and can hold, for metrics and the operator API. */
export interface PoolReport {
  name: string;
  durability: string;
  segmentSizeBytes: number;
  fullPercent: number;
  /** Bytes of segments the pool can hold (see kiseki_pool_capacity_bytes). */
  capacityBytes: number;
  /** Bytes of segments in use: what new writes cannot have until compaction frees them. */
  usedBytes: number;
  /** Bytes of live fragment records. */
  liveBytes: number;
  /** Devices that take new chunks now (healthy, below the fill threshold, room left). */
  writableDevices: number;
  devices: DeviceReport[];
  /** Chunks stored with less than their full redundancy (a cluster store's), awaiting repair. */
  degradedChunks?: number;
}

// ---- the store -----------------------------------------------------------------------------

interface PendingPut {
  id: Uint8Array;
  bytes: Uint8Array;
  tenant: string | null;
  /** Pinned device number (PutOptions.device), or null. */
  device: number | null;
  resolve: () => void;
  reject: (e: Error) => void;
}

interface PreparedPut {
  put: PendingPut;
  slots: Slot[];
  devices: Set<number>;
}

/** Chunks of one pool on its local devices. */
export class LocalChunkStore implements ChunkStore {
  readonly pool: PoolSpec;
  readonly durability: Durability;
  readonly chunkBytesMax: number;
  readonly index: LmdbChunkIndex;
  readonly segments: SegmentStore;
  readonly #env: KvEnv;
  readonly #ownsEnv: boolean;
  readonly #codec: ErasureCodec | null;
  readonly #codecs: ErasureCodecFactory;
  /** Codecs of other geometries met in old entries (bounded by the geometries pools allow). */
  readonly #otherCodecs = new Map<string, ErasureCodec>();
  readonly #placement: Placement;
  readonly #logger: Logger;
  readonly #locks = new Map<string, Promise<void>>();
  readonly #queue: PendingPut[] = [];
  #flushing: Promise<void> | null = null;
  readonly #commits = new Set<Promise<unknown>>();
  #inFlight = 0;
  readonly #roomWaiters: (() => void)[] = [];
  #closed = false;
  /** Set when recovery itself failed: the store then refuses everything until restarted. */
  #failed: Error | null = null;
  /** Set while the store recovers from a failed commit: new batches and commits wait. */
  #recovering: Promise<void> | null = null;
  #unreferencedTotal = 0;
  /** Set by a background GC: reclaims what it can now; true when space was freed. */
  #reclaimer: (() => Promise<boolean>) | null = null;

  private constructor(
    options: LocalChunkStoreOptions,
    env: KvEnv,
    ownsEnv: boolean,
    segments: SegmentStore,
  ) {
    this.pool = options.pool;
    this.durability = options.pool.durability;
    this.#env = env;
    this.#ownsEnv = ownsEnv;
    this.index = new LmdbChunkIndex(env);
    this.segments = segments;
    this.#logger = options.logger ?? log;
    const d = this.durability;
    this.#codecs = options.codecs;
    this.#codec = d.kind === "ec" ? options.codecs.create({ k: d.k, m: d.m }) : null;
    this.#placement = new Placement(
      options.pool.devices.map((s) => ({ id: s.id, node: s.node, weight: s.weight })),
    );
    // A fragment's record must fit in one segment.
    const fragmentMax = options.pool.segmentSizeBytes - recordBytesFor(0) - 64;
    const byLayout = d.kind === "ec" ? d.k * fragmentMax : fragmentMax;
    this.chunkBytesMax = Math.min(options.chunkBytesMax ?? CHUNK_BYTES_MAX_DEFAULT, byLayout);
  }

  static async open(options: LocalChunkStoreOptions): Promise<LocalChunkStore> {
    const pool = options.pool;
    assert(fragmentCount(pool.durability) <= pool.devices.length, "pool has enough devices");
    let env = options.env;
    const ownsEnv = env === undefined;
    if (env === undefined) {
      assert(options.indexDir !== undefined, "LocalChunkStore needs env or indexDir");
      assert(options.indexPageKeys !== undefined, "LocalChunkStore: indexPageKeys with indexDir");
      await Deno.mkdir(options.indexDir, { recursive: true });
      env = await openKvEnv({
        path: options.indexDir,
        pageKeys: null,
        ...(options.indexPageKeys ? { legacyPageKeys: options.indexPageKeys } : {}),
        mapSizeBytes: options.indexMapBytes ?? indexMapBytesFor(pool),
      });
    }
    const useDefaultOpener = options.openDevice === undefined;
    let segments: SegmentStore;
    try {
      segments = await SegmentStore.open({
        env,
        pool: pool.name,
        devices: pool.devices,
        segmentSizeBytes: pool.segmentSizeBytes,
        fullPercent: pool.fullPercent,
        openDevice: options.openDevice ??
          ((spec) => openFileDevice(spec, options.shim, pool.growth !== null)),
        probeDevice: options.probeDevice ?? (useDefaultOpener ? probeFileDevice : undefined),
        stagingBytes: options.stagingBytes,
        space: options.space ??
          (pool.growth === null ? undefined : new FilesystemSpace(pool.growth)),
        logger: options.logger,
        randomBytes: options.randomBytes,
      });
    } catch (e) {
      if (ownsEnv) await env.close();
      throw e;
    }
    const store = new LocalChunkStore(options, env, ownsEnv, segments);
    openStores.add(store);
    (options.logger ?? log).info("chunk store open", {
      pool: pool.name,
      durability: formatDurability(pool.durability),
      devices: segments.devices().map((d) => `${d.id}:${d.status}`).join(","),
      codec: store.#codec?.implementation ?? "none",
    });
    return store;
  }

  devices(): DeviceReport[] {
    return this.segments.devices();
  }

  poolReport(): PoolReport {
    const devices = this.segments.devices();
    const capacityBytes = this.segments.capacityBytes();
    let usedBytes = 0;
    let liveBytes = 0;
    for (const d of devices) {
      usedBytes += d.usedBytes;
      liveBytes += d.liveBytes;
    }
    return {
      name: this.pool.name,
      durability: formatDurability(this.durability),
      segmentSizeBytes: this.pool.segmentSizeBytes,
      fullPercent: this.pool.fullPercent,
      capacityBytes,
      usedBytes,
      liveBytes,
      writableDevices: devices.filter((d) => d.writable).length,
      devices,
    };
  }

  /** Chunks waiting for GC (a count of the unreferenced queue, bounded walk). */
  unreferencedPending(): number {
    return this.index.countUnreferenced(CHUNK_UNREFERENCED_COUNTED_MAX);
  }

  /** Times a refcount fell to zero since the store opened: background GC polls it. */
  /**
   * Lets a put that finds the pool full ask for released space to be reclaimed now (a
   * background GC registers itself; null unregisters) instead of failing while deletes wait.
   */
  setReclaimer(reclaimer: (() => Promise<boolean>) | null): void {
    this.#reclaimer = reclaimer;
  }

  get unreferencedTotal(): number {
    return this.#unreferencedTotal;
  }

  /** The lmdb environment of the index (scrub persists its cursor there). */
  get env(): KvEnv {
    return this.#env;
  }

  /** Notices deleted or replaced device files (see SegmentStore.checkDevices()). */
  checkDevices(): Promise<number[]> {
    return this.segments.checkDevices();
  }

  // ---- port --------------------------------------------------------------------------------

  async put(id: Uint8Array, bytes: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    this.#checkOpen();
    checkId(id);
    if (!(bytes instanceof Uint8Array)) throw new TypeError("chunk bytes must be a Uint8Array");
    if (bytes.length > this.chunkBytesMax) {
      throw new ChunkStoreError(
        "too_large",
        `chunk of ${bytes.length} bytes exceeds ${this.chunkBytesMax} (pool ${this.pool.name})`,
      );
    }
    const tenant = options.tenant === undefined ? null : tenantTag(options.tenant);
    let device: number | null = null;
    if (options.device !== undefined) {
      assert(fragmentCount(this.durability) === 1, "a pinned device needs one fragment per chunk");
      const number = this.segments.numberOf(options.device);
      if (number === undefined) {
        throw new ChunkStoreError(
          "insufficient_devices",
          `pool ${this.pool.name} has no device ${JSON.stringify(options.device)}`,
        );
      }
      device = number;
    }
    await this.#room();
    try {
      return await this.#withLock(id, async () => {
        const existing = this.index.get(id);
        if (existing !== undefined) {
          if (existing.lengthBytes !== bytes.length) {
            throw new ChunkStoreError(
              "id_conflict",
              `chunk ${hex(id)} is stored with ${existing.lengthBytes} bytes; this put has ` +
                `${bytes.length}: two contents under one id`,
            );
          }
          await this.#addRef(id, existing, tenant);
          dedupHits.inc({ pool: this.pool.name });
          return { created: false };
        }
        const deadline = performance.now() + CHUNK_FULL_WAIT_MS;
        let retries = 0;
        for (;;) {
          try {
            await new Promise<void>((resolve, reject) => {
              this.#queue.push({ id: id.slice(), bytes, tenant, device, resolve, reject });
              this.#kick();
            });
            return { created: true };
          } catch (e) {
            // Its batch failed to commit and the store recovered: nothing of it was kept.
            if (
              e instanceof ChunkStoreError && e.code === "unavailable" &&
              retries++ < CHUNK_PUT_RETRIES_AFTER_RECOVERY
            ) {
              await this.#recovered();
              continue;
            }
            // Full, but deletes may wait for GC: refused only once nothing more comes back.
            const reclaim = this.#reclaimer;
            if (
              !(e instanceof ChunkStoreError && e.code === "pool_full") || reclaim === null ||
              performance.now() >= deadline || !(await reclaim())
            ) throw e;
          }
        }
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
    let faults: FragmentFaultReport[] = [];
    for (let attempt = 0; attempt < CHUNK_READ_ATTEMPTS_MAX; attempt++) {
      const raw = this.#rawEntry(id);
      if (raw === undefined) throw notFound(id);
      const entry = decodeChunkEntry(raw);
      if (entry.refcount === 0) throw notFound(id);
      const result = await this.#readEntry(id, entry);
      if (result.bytes !== null) {
        if (result.faults.length > 0) degradedReads.inc({ pool: this.pool.name });
        return { bytes: result.bytes, reconstructed: result.reconstructed, faults: result.faults };
      }
      faults = result.faults;
      // Compaction or repair may have moved fragments while we read: try the new places.
      const now = this.#rawEntry(id);
      if (now === undefined || !bytesEqual(now, raw)) continue;
      break;
    }
    const need = this.durability.kind === "ec" ? this.durability.k : 1;
    throw new ChunkStoreError(
      "unrecoverable",
      `chunk ${hex(id)}: fewer than ${need} good fragments (pool ${this.pool.name}, ` +
        `${formatDurability(this.durability)}); ${
          faults.map((f) => `fragment ${f.fragment} on ${f.device}: ${f.fault}`).join("; ")
        }`,
    );
  }

  has(id: Uint8Array): Promise<boolean> {
    this.#checkOpen();
    checkId(id);
    const entry = this.index.get(id);
    return Promise.resolve(entry !== undefined && entry.refcount > 0);
  }

  stat(id: Uint8Array): Promise<ChunkStat | null> {
    this.#checkOpen();
    checkId(id);
    const entry = this.index.get(id);
    if (entry === undefined) return Promise.resolve(null);
    return Promise.resolve({
      refcount: entry.refcount,
      lengthBytes: entry.lengthBytes,
      durability: formatDurability(entry.durability),
      fragmentBytes: entry.fragmentBytes,
      fragments: entry.fragments.map((f, index) => ({
        index,
        device: f.device,
        deviceId: this.segments.deviceId(f.device),
        offsetBytes: f.offsetBytes,
        lost: f.lost,
      })),
    });
  }

  incRef(id: Uint8Array, options: PutOptions = {}): Promise<number> {
    this.#checkOpen();
    checkId(id);
    const tenant = options.tenant === undefined ? null : tenantTag(options.tenant);
    return this.#withLock(id, async () => {
      const entry = this.index.get(id);
      if (entry === undefined) throw notFound(id);
      return await this.#addRef(id, entry, tenant);
    });
  }

  decRef(id: Uint8Array): Promise<number> {
    this.#checkOpen();
    checkId(id);
    return this.#withLock(id, async () => {
      const entry = this.index.get(id);
      if (entry === undefined) throw notFound(id);
      if (entry.refcount === 0) {
        throw new ChunkStoreError(
          "refcount_underflow",
          `chunk ${hex(id)} has no references to drop`,
        );
      }
      const next = { ...entry, refcount: entry.refcount - 1 };
      await this.#commit((txn) => this.index.stagePut(txn, id, next, entry));
      if (next.refcount === 0) this.#unreferencedTotal++;
      return next.refcount;
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#flushing !== null) await this.#flushing;
    await Promise.allSettled([...this.#commits]);
    openStores.delete(this);
    await this.segments.close();
    if (this.#ownsEnv) await this.#env.close();
  }

  // ---- references ----------------------------------------------------------------------------

  async #addRef(id: Uint8Array, entry: ChunkEntry, tenant: string | null): Promise<number> {
    if (entry.refcount >= 0xffff_ffff) {
      throw new ChunkStoreError("refcount_overflow", `chunk ${hex(id)} has 2^32-1 references`);
    }
    const next: ChunkEntry = {
      ...entry,
      tenants: [...entry.tenants],
      refcount: entry.refcount + 1,
    };
    if (tenant !== null) addTenant(next, tenant);
    await this.#commit((txn) => this.index.stagePut(txn, id, next, entry));
    return next.refcount;
  }

  // ---- writes --------------------------------------------------------------------------------

  /** Waits until fewer than CHUNK_PUTS_IN_FLIGHT_MAX puts are in flight, then takes a place. */
  async #room(): Promise<void> {
    while (this.#inFlight >= CHUNK_PUTS_IN_FLIGHT_MAX) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
    this.#inFlight++;
  }

  #kick(): void {
    if (this.#flushing !== null) return;
    this.#flushing = (async () => {
      try {
        while (this.#queue.length > 0) await this.#writeBatch();
      } finally {
        this.#flushing = null;
      }
    })();
  }

  async #writeBatch(): Promise<void> {
    await this.#recovered();
    const taken: PreparedPut[] = [];
    let outcome: { ok: PreparedPut[]; durable: Promise<void> };
    try {
      outcome = await this.segments.batch(async (batch) => {
        this.#takeBatch(batch, taken);
        await this.#fill(taken);
        await batch.flush();
        const ok = await this.#replaceFailed(batch, taken);
        const durable = this.#env.transaction((txn) => {
          batch.stageSegments(txn);
          for (const p of ok) {
            const entry = this.#newEntry(p);
            this.index.stagePut(txn, p.put.id, entry);
            for (const slot of p.slots) this.segments.stageLive(txn, slot);
          }
        });
        // Counted before the section ends: a recovery's read-back (the next section) waits
        // for it.
        const pending = durable.catch(() => {});
        this.#commits.add(pending);
        pending.finally(() => this.#commits.delete(pending));
        return { ok, durable };
      });
    } catch (e) {
      // Nothing of this batch is acknowledged; its callers hear why.
      const error = asStoreError(e, "writing a batch of chunks");
      if (taken.length === 0) {
        // The batch never started (store closing): fail what waits rather than spin.
        for (const put of this.#queue.splice(0)) put.reject(error);
      }
      for (const p of taken) p.put.reject(error);
      return;
    }
    const { ok, durable } = outcome;
    const tracked = durable.then(
      () => {
        for (const p of ok) {
          bytesWritten.inc({ pool: this.pool.name }, p.slots.length * p.slots[0]!.payloadBytes);
          p.put.resolve();
        }
      },
      (e) => {
        const error = this.#commitFailed(e);
        for (const p of ok) p.put.reject(error);
      },
    );
    this.#commits.add(tracked);
    tracked.finally(() => this.#commits.delete(tracked));
  }

  /**
   * Moves queued puts into `prepared`, reserving their fragments, until the batch is full;
   * rejects the ones that cannot be placed.
   */
  #takeBatch(batch: SegmentBatch, prepared: PreparedPut[]): void {
    while (this.#queue.length > 0 && prepared.length < CHUNK_BATCH_CHUNKS_MAX) {
      const put = this.#queue[0]!;
      const result = this.#reserveChunk(batch, put);
      if (result === "staging" && prepared.length > 0) break;
      this.#queue.shift();
      if (result instanceof Error) put.reject(result);
      else if (result === "staging") {
        put.reject(new ChunkStoreError("io", "staging buffer refused a lone chunk"));
      } else prepared.push(result);
    }
  }

  #fragmentBytesFor(length: number): number {
    return this.durability.kind === "ec" ? fragmentLengthFor(length, this.durability.k) : length;
  }

  #reserveChunk(batch: SegmentBatch, put: PendingPut): PreparedPut | "staging" | ChunkStoreError {
    const n = fragmentCount(this.durability);
    const payloadBytes = this.#fragmentBytesFor(put.bytes.length);
    const refused = new Set<number>();
    for (let attempt = 0; attempt <= this.pool.devices.length; attempt++) {
      let chosen: number[];
      if (put.device !== null) {
        if (refused.has(put.device) || !this.segments.writable(put.device)) {
          return new ChunkStoreError(
            "pool_full",
            `pool ${this.pool.name}: device ${this.segments.deviceId(put.device)} cannot take ` +
              `a new chunk`,
          );
        }
        chosen = [put.device];
      } else {
        try {
          chosen = this.#place(
            put.id,
            n,
            (number) => !refused.has(number) && this.segments.writable(number),
          );
        } catch (e) {
          return this.#placementError(e, n);
        }
      }
      const slots: Slot[] = [];
      let retry = false;
      for (let i = 0; i < n; i++) {
        const r = batch.reserve(chosen[i]!, put.id, i, payloadBytes);
        if (r.ok) {
          slots.push(r.slot);
          continue;
        }
        // Reserved records of this chunk stay unused: written as padding, never indexed.
        if (r.why === "staging") return "staging";
        refused.add(chosen[i]!);
        retry = true;
        break;
      }
      if (!retry) return { put, slots, devices: new Set(chosen) };
    }
    return new ChunkStoreError("pool_full", `pool ${this.pool.name}: no room for a new chunk`);
  }

  /** Device numbers for `count` fragments of `id` among devices `usable` accepts. */
  #place(id: Uint8Array, count: number, usable: (device: number) => boolean): number[] {
    const numbers = this.pool.devices.map((s) => this.segments.numberOf(s.id));
    const chosen = this.#placement.place(id, count, {
      exclude: (i) => numbers[i] === undefined || !usable(numbers[i]!),
    });
    return chosen.map((i) => numbers[i]!);
  }

  #placementError(e: unknown, n: number): ChunkStoreError {
    if (!(e instanceof PlacementError)) throw e;
    const reports = this.segments.devices();
    const healthy = reports.filter((d) => d.status === "ok").length;
    if (healthy >= n) {
      return new ChunkStoreError(
        "pool_full",
        `pool ${this.pool.name} is full: fewer than ${n} devices below ${this.pool.fullPercent}% ` +
          `used (${formatDurability(this.durability)} needs ${n})`,
      );
    }
    return new ChunkStoreError(
      "insufficient_devices",
      `pool ${this.pool.name}: ${healthy} healthy devices, ${formatDurability(this.durability)} ` +
        `needs ${n} distinct ones`,
    );
  }

  /** Copies data into the reserved payloads and computes parity into the others. */
  async #fill(prepared: readonly PreparedPut[]): Promise<void> {
    for (const p of prepared) {
      const bytes = p.put.bytes;
      if (this.#codec === null) {
        for (const slot of p.slots) slot.payload.set(bytes);
        continue;
      }
      const k = this.#codec.k;
      const length = p.slots[0]!.payloadBytes;
      for (let i = 0; i < k; i++) {
        const target = p.slots[i]!.payload;
        const part = bytes.subarray(
          Math.min(i * length, bytes.length),
          Math.min((i + 1) * length, bytes.length),
        );
        target.set(part);
        target.fill(0, part.length);
      }
      const started = performance.now();
      await this.#codec.encodeAsync(
        p.slots.slice(0, k).map((s) => s.payload),
        p.slots.slice(k).map((s) => s.payload),
      );
      encodeSeconds.observe({ pool: this.pool.name }, (performance.now() - started) / 1000);
    }
  }

  /**
   * Fragments whose device failed during flush() go to other devices of the pool (not one
   * already holding a fragment of the same chunk), for a few rounds. Returns the puts whose
   * fragments are all durable; the rest are rejected.
   */
  async #replaceFailed(batch: SegmentBatch, prepared: PreparedPut[]): Promise<PreparedPut[]> {
    for (let round = 0; round < CHUNK_PLACEMENT_ROUNDS_MAX; round++) {
      let moved = false;
      for (const p of prepared) {
        for (let i = 0; i < p.slots.length; i++) {
          const old = p.slots[i]!;
          // A pinned chunk fails with its device: the placement above it chooses again.
          if (old.state !== "failed" || p.put.device !== null) continue;
          let target: number | undefined;
          try {
            target = this.#place(p.put.id, 1, (d) =>
              !p.devices.has(d) && this.segments.writable(d))[0];
          } catch {
            continue;
          }
          const r = batch.reserve(target!, p.put.id, i, old.payloadBytes);
          if (!r.ok) continue;
          r.slot.payload.set(old.payload);
          p.devices.add(target!);
          p.slots[i] = r.slot;
          moved = true;
        }
      }
      if (!moved) break;
      await batch.flush();
    }
    const ok: PreparedPut[] = [];
    for (const p of prepared) {
      if (p.slots.every((s) => s.state === "durable")) {
        ok.push(p);
        continue;
      }
      const bad = p.slots.filter((s) => s.state !== "durable").length;
      p.put.reject(
        new ChunkStoreError(
          "insufficient_devices",
          `chunk ${hex(p.put.id)}: ${bad} fragments could not be written to any healthy device`,
        ),
      );
    }
    return ok;
  }

  #newEntry(p: PreparedPut): ChunkEntry {
    const entry: ChunkEntry = {
      durability: this.durability,
      refcount: 1,
      lengthBytes: p.put.bytes.length,
      fragmentBytes: p.slots[0]!.payloadBytes,
      fragments: p.slots.map((s) => ({
        device: s.device,
        offsetBytes: s.offsetBytes,
        payloadCrc: s.payloadCrc,
        lost: false,
      })),
      tenants: [],
      tenantOverflow: false,
    };
    if (p.put.tenant !== null) addTenant(entry, p.put.tenant);
    return entry;
  }

  // ---- reads ---------------------------------------------------------------------------------

  #rawEntry(id: Uint8Array): Uint8Array | undefined {
    return this.index.getRaw(id);
  }

  async #readEntry(id: Uint8Array, entry: ChunkEntry): Promise<{
    bytes: Uint8Array | null;
    reconstructed: number[];
    faults: FragmentFaultReport[];
  }> {
    const faults: FragmentFaultReport[] = [];
    const fl = entry.fragmentBytes;
    const note = (i: number, fault: FragmentFault | "lost", detail: string) =>
      faults.push({
        fragment: i,
        device: this.segments.deviceId(entry.fragments[i]!.device),
        fault,
        detail,
      });
    const request = (i: number, into?: Uint8Array) => ({
      device: entry.fragments[i]!.device,
      offsetBytes: entry.fragments[i]!.offsetBytes,
      chunkId: id,
      fragmentIndex: i,
      payloadBytes: fl,
      payloadCrc: entry.fragments[i]!.payloadCrc,
      into,
    });
    for (const [i, f] of entry.fragments.entries()) {
      if (f.lost) note(i, "lost", "marked lost in the index");
    }
    const d = entry.durability;
    if (d.kind === "copies") {
      const out = new Uint8Array(entry.lengthBytes);
      // Healthy devices first; every copy is tried before giving up.
      const order = entry.fragments.map((_, i) => i).filter((i) => !entry.fragments[i]!.lost)
        .sort((a, b) =>
          Number(!this.segments.healthy(entry.fragments[a]!.device)) -
          Number(!this.segments.healthy(entry.fragments[b]!.device))
        );
      for (const i of order) {
        const [outcome] = await this.segments.read([request(i, out)]);
        if (outcome!.ok) {
          bytesRead.inc({ pool: this.pool.name }, fl);
          return { bytes: out, reconstructed: [], faults };
        }
        note(i, outcome!.fault, outcome!.detail);
      }
      return { bytes: null, reconstructed: [], faults };
    }
    const { k, m } = d;
    const n = k + m;
    const out = new Uint8Array(k * fl);
    const present: (Uint8Array | null)[] = new Array(n).fill(null);
    const tried = new Set<number>();
    let good = 0;
    for (const [i, f] of entry.fragments.entries()) if (f.lost) tried.add(i);
    // Data fragments first (no decoding needed), then just enough others to make up k.
    let wave = entry.fragments.map((_, i) => i).filter((i) => i < k && !tried.has(i));
    while (good < k) {
      if (wave.length === 0) {
        for (let i = 0; i < n && wave.length < k - good; i++) if (!tried.has(i)) wave.push(i);
        if (wave.length === 0) break;
      }
      for (const i of wave) tried.add(i);
      const current = wave;
      const outcomes = await this.segments.read(
        current.map((i) =>
          request(i, i < k ? out.subarray(i * fl, (i + 1) * fl) : new Uint8Array(fl))
        ),
      );
      outcomes.forEach((o, j) => {
        const i = current[j]!;
        if (o.ok) {
          present[i] = o.payload;
          good++;
        } else {
          note(i, o.fault, o.detail);
        }
      });
      wave = [];
    }
    bytesRead.inc({ pool: this.pool.name }, good * fl);
    if (good < k) return { bytes: null, reconstructed: [], faults };
    const targets = new Map<number, Uint8Array>();
    for (let i = 0; i < k; i++) {
      if (present[i] === null) targets.set(i, out.subarray(i * fl, (i + 1) * fl));
    }
    if (targets.size > 0) {
      const started = performance.now();
      await this.#codecFor(d).reconstructAsync(present, targets);
      decodeSeconds.observe({ pool: this.pool.name }, (performance.now() - started) / 1000);
    }
    return {
      bytes: out.subarray(0, entry.lengthBytes),
      reconstructed: [...targets.keys()],
      faults,
    };
  }

  // ---- scrub, GC and compaction (driven by scrub.ts and gc.ts) --------------------------------

  /**
   * Reads and verifies every fragment of `id`; with `repair`, rebuilds the bad ones from the
   * good and writes them to their own device when it is healthy, else to another device
   * holding no fragment of the chunk, then commits the new locations durably.
   */
  scrubChunk(id: Uint8Array, options: { repair: boolean }): Promise<ScrubChunkReport> {
    this.#checkOpen();
    checkId(id);
    return this.#withLock(id, async () => {
      const report: ScrubChunkReport = {
        fragmentsChecked: 0,
        fragmentsDamaged: 0,
        fragmentsRepaired: 0,
        bytesChecked: 0,
        unrecoverable: false,
      };
      const entry = this.index.get(id);
      if (entry === undefined) return report;
      const n = entry.fragments.length;
      const fl = entry.fragmentBytes;
      const outcomes = await this.segments.read(entry.fragments.map((f, i) => ({
        device: f.device,
        offsetBytes: f.offsetBytes,
        chunkId: id,
        fragmentIndex: i,
        payloadBytes: fl,
        payloadCrc: f.payloadCrc,
      })));
      report.fragmentsChecked = n;
      report.bytesChecked = n * fl;
      // A readable record the extent table no longer counts (its fragment was marked lost and
      // the extent dropped) would be freed by compaction: rewrite it like a damaged one.
      const present: (Uint8Array | null)[] = outcomes.map((o, i) =>
        o.ok && this.segments.holds(entry.fragments[i]!, id, i) ? o.payload : null
      );
      const bad = present.flatMap((p, i) => (p === null ? [i] : []));
      report.fragmentsDamaged = bad.length;
      if (bad.length === 0) {
        if (entry.fragments.some((f) => f.lost)) {
          // Marked lost earlier but readable now (a device came back): clear the marks.
          const next = { ...entry, fragments: entry.fragments.map((f) => ({ ...f, lost: false })) };
          await this.#commit((txn) => this.index.stagePut(txn, id, next, entry));
        }
        return report;
      }
      const need = entry.durability.kind === "ec" ? entry.durability.k : 1;
      if (n - bad.length < need) {
        report.unrecoverable = true;
        this.#logger.error("chunk unrecoverable", {
          pool: this.pool.name,
          chunk: hex(id),
          good: n - bad.length,
          need,
        });
        return report;
      }
      if (!options.repair) return report;
      const rebuilt = new Map<number, Uint8Array>();
      for (const i of bad) rebuilt.set(i, new Uint8Array(fl));
      if (entry.durability.kind === "ec") {
        const codec = this.#codecFor(entry.durability);
        const started = performance.now();
        await codec.reconstructAsync(present, rebuilt);
        decodeSeconds.observe({ pool: this.pool.name }, (performance.now() - started) / 1000);
      } else {
        const source = present.find((p) => p !== null)!;
        for (const buffer of rebuilt.values()) buffer.set(source);
      }
      const next: ChunkEntry = { ...entry, fragments: entry.fragments.map((f) => ({ ...f })) };
      const written = await this.#writeRepairs(id, entry, rebuilt, (txn, written) => {
        for (const [i, slot] of written) {
          this.segments.stageDead(txn, entry.fragments[i]!, id, i);
          this.segments.stageLive(txn, slot);
          next.fragments[i] = {
            device: slot.device,
            offsetBytes: slot.offsetBytes,
            payloadCrc: slot.payloadCrc,
            lost: false,
          };
        }
        for (const i of bad) if (!written.has(i)) next.fragments[i]!.lost = true;
        this.index.stagePut(txn, id, next, entry);
      });
      if (written.size === 0) {
        await this.#markLost(id, entry, bad);
        return report;
      }
      bytesWritten.inc({ pool: this.pool.name }, written.size * fl);
      report.fragmentsRepaired = written.size;
      return report;
    });
  }

  /**
   * The codec for an entry's geometry: the pool's, or (for chunks written before the pool's
   * durability was changed) one made on demand and kept.
   */
  #codecFor(d: Durability): ErasureCodec {
    assert(d.kind === "ec", "codec for EC entries only");
    if (this.#codec !== null && this.#codec.k === d.k && this.#codec.m === d.m) return this.#codec;
    const key = `${d.k}+${d.m}`;
    let codec = this.#otherCodecs.get(key);
    if (codec === undefined) {
      codec = this.#codecs.create({ k: d.k, m: d.m });
      this.#otherCodecs.set(key, codec);
    }
    return codec;
  }

  async #markLost(id: Uint8Array, entry: ChunkEntry, bad: number[]): Promise<void> {
    if (bad.every((i) => entry.fragments[i]!.lost)) return;
    const next: ChunkEntry = { ...entry, fragments: entry.fragments.map((f) => ({ ...f })) };
    for (const i of bad) next.fragments[i]!.lost = true;
    await this.#commit((txn) => this.index.stagePut(txn, id, next, entry));
  }

  /**
   * Writes rebuilt fragments and commits them with `stage` before the batch lock is let go
   * (until then their records count nowhere as live, and compaction could free the segment
   * they are in); returns the durable slots by fragment index.
   */
  async #writeRepairs(
    id: Uint8Array,
    entry: ChunkEntry,
    rebuilt: Map<number, Uint8Array>,
    stage: (txn: KvTxn, written: Map<number, Slot>) => void,
  ): Promise<Map<number, Slot>> {
    return await this.segments.batch(async (batch) => {
      const written = new Map<number, Slot>();
      const holding = new Set(entry.fragments.map((f) => f.device));
      const refused = new Set<number>();
      for (
        let round = 0;
        round < CHUNK_PLACEMENT_ROUNDS_MAX && written.size < rebuilt.size;
        round++
      ) {
        const slots = new Map<number, Slot>();
        for (const [i, payload] of rebuilt) {
          if (written.has(i)) continue;
          const own = entry.fragments[i]!.device;
          let target: number | undefined;
          if (this.segments.healthy(own) && !refused.has(own)) {
            target = own;
          } else {
            const taken = new Set([
              ...holding,
              ...[...slots.values()].map((s) => s.device),
              ...[...written.values()].map((s) => s.device),
            ]);
            try {
              target = this.#place(id, 1, (d) =>
                !taken.has(d) && !refused.has(d) && this.segments.healthy(d))[0];
            } catch {
              continue;
            }
          }
          const r = batch.reserve(target!, id, i, payload.length);
          if (!r.ok) {
            refused.add(target!);
            continue;
          }
          r.slot.payload.set(payload);
          slots.set(i, r.slot);
        }
        if (slots.size === 0) break;
        await batch.flush();
        for (const [i, slot] of slots) {
          if (slot.state === "durable") written.set(i, slot);
          else refused.add(slot.device);
        }
      }
      if (written.size > 0) {
        await this.#commitInSection((txn) => {
          batch.stageSegments(txn);
          stage(txn, written);
        });
      }
      return written;
    });
  }

  /** Erases `id` when it is unreferenced and no hold covers it (GC). */
  async eraseUnreferenced(
    id: Uint8Array,
    holding: (id: Uint8Array, subject: HoldSubject) => string | null,
  ): Promise<EraseResult> {
    return (await this.eraseUnreferencedMany([id], holding))[0]!;
  }

  /**
   * Erases every one of `ids` that is unreferenced and not held, in one durable commit: GC
   * pays one lmdb commit (two syncs) per batch, not per chunk. Results are in `ids` order.
   */
  eraseUnreferencedMany(
    ids: readonly Uint8Array[],
    holding: (id: Uint8Array, subject: HoldSubject) => string | null,
  ): Promise<EraseResult[]> {
    this.#checkOpen();
    for (const id of ids) checkId(id);
    assert(ids.length <= CHUNK_ERASE_BATCH_MAX, `erase at most ${CHUNK_ERASE_BATCH_MAX} at once`);
    return this.#withLocks([...ids], async () => {
      const results: EraseResult[] = [];
      const doomed: { id: Uint8Array; entry: ChunkEntry }[] = [];
      const seen = new Set<string>();
      for (const id of ids) {
        const key = hex(id);
        const entry = seen.has(key) ? undefined : this.index.get(id);
        seen.add(key);
        if (entry === undefined) {
          results.push({ outcome: "gone", bytes: 0 });
        } else if (entry.refcount > 0) {
          results.push({ outcome: "referenced", bytes: 0 });
        } else {
          const hold = holding(id, entry);
          if (hold !== null) {
            results.push({ outcome: "held", bytes: 0, hold });
          } else {
            results.push({ outcome: "erased", bytes: entry.lengthBytes });
            doomed.push({ id, entry });
          }
        }
      }
      if (doomed.length > 0) {
        await this.#commit((txn) => {
          for (const { id, entry } of doomed) {
            this.index.stageDelete(txn, id);
            entry.fragments.forEach((f, i) => this.segments.stageDead(txn, f, id, i));
          }
        });
      }
      return results;
    });
  }

  /**
   * One bounded step of compaction. Segments whose records have all died are freed first,
   * all of them in one commit (no bytes move). Otherwise the segment compactionCandidate()
   * picks has its live records (at most `bytesMax` of them) read, copied to the device's
   * head segment and re-indexed in one commit, which frees the segment once it is empty.
   * The copies are durable before the index points at them, so a crash at any point leaves
   * every fragment readable at the place the index names.
   */
  async compactStep(options: { bytesMax?: number } = {}): Promise<CompactReport> {
    this.#checkOpen();
    const bytesMax = options.bytesMax ?? SEGMENT_COMPACT_STEP_BYTES_DEFAULT;
    const report: CompactReport = { idle: false, segmentsFreed: 0, recordsMoved: 0, bytesMoved: 0 };
    const empty = this.segments.emptySegments(SEGMENT_FREE_BATCH_MAX);
    if (empty.length > 0) {
      await this.segments.batch(async () => {
        let freed = 0;
        await this.#commitInSection((txn) => {
          for (const { device, segment } of empty) {
            if (this.segments.stageFreeIfEmpty(txn, device, segment)) freed++;
          }
        });
        report.segmentsFreed += freed;
      });
      return report;
    }
    const candidate = this.segments.compactionCandidate();
    if (candidate === null) return { ...report, idle: true };
    const { device, segment } = candidate;
    const extents: Extent[] = [];
    let bytes = 0;
    for (
      const e of this.segments.extents(
        device,
        candidate.offsetBytes,
        candidate.lengthBytes,
        SEGMENT_COMPACT_STEP_RECORDS_MAX,
      )
    ) {
      if (extents.length > 0 && bytes + e.recordBytes > bytesMax) break;
      extents.push(e);
      bytes += e.recordBytes;
    }
    await this.#withLocks(extents.map((e) => e.chunkId), async () => {
      // Under the chunk locks nothing else moves these fragments (erase, repair and other
      // compaction steps take them too), so they are read before the batch lock is taken:
      // foreground writes wait only for the copy's write and commit, not for its reads.
      const entries = new Map<string, ChunkEntry>();
      const wanted: { e: Extent; entry: ChunkEntry }[] = [];
      for (const e of extents) {
        const entry = entries.get(hex(e.chunkId)) ?? this.index.get(e.chunkId);
        const f = entry?.fragments[e.fragmentIndex];
        if (
          entry === undefined || f === undefined || f.device !== e.device ||
          f.offsetBytes !== e.offsetBytes
        ) {
          continue; // The index moved on; the extent dies with its own change.
        }
        entries.set(hex(e.chunkId), entry);
        wanted.push({ e, entry });
      }
      const outcomes = await this.segments.read(wanted.map(({ e, entry }) => ({
        device: e.device,
        offsetBytes: e.offsetBytes,
        chunkId: e.chunkId,
        fragmentIndex: e.fragmentIndex,
        payloadBytes: entry.fragmentBytes,
        payloadCrc: entry.fragments[e.fragmentIndex]!.payloadCrc,
      })));
      await this.segments.batch(async (batch) => {
        const moves: {
          id: Uint8Array;
          index: number;
          from: FragmentLocation;
          slot: Slot | null;
        }[] = [];
        for (const [i, { e, entry }] of wanted.entries()) {
          const outcome = outcomes[i]!;
          if (!outcome.ok) {
            // Never copy a damaged record forward: mark it lost and let scrub rebuild it.
            moves.push({ id: e.chunkId, index: e.fragmentIndex, from: e, slot: null });
            continue;
          }
          const r = batch.reserve(e.device, e.chunkId, e.fragmentIndex, entry.fragmentBytes);
          if (!r.ok) break;
          r.slot.payload.set(outcome.payload);
          moves.push({ id: e.chunkId, index: e.fragmentIndex, from: e, slot: r.slot });
        }
        await batch.flush();
        await this.#commitInSection((txn) => {
          batch.stageSegments(txn);
          for (const move of moves) {
            if (move.slot !== null && move.slot.state !== "durable") continue;
            const key = hex(move.id);
            const entry = entries.get(key)!;
            const next: ChunkEntry = {
              ...entry,
              fragments: entry.fragments.map((f) => ({ ...f })),
            };
            if (move.slot === null) {
              next.fragments[move.index]!.lost = true;
            } else {
              this.segments.stageLive(txn, move.slot);
              next.fragments[move.index] = {
                device: move.slot.device,
                offsetBytes: move.slot.offsetBytes,
                payloadCrc: move.slot.payloadCrc,
                lost: false,
              };
              report.recordsMoved++;
              report.bytesMoved += move.slot.recordBytes;
            }
            this.segments.stageDead(txn, move.from, move.id, move.index);
            this.index.stagePut(txn, move.id, next, entry);
            entries.set(key, next);
          }
          if (this.segments.stageFreeIfEmpty(txn, device, segment)) report.segmentsFreed++;
        });
      });
    });
    return report;
  }

  // ---- helpers -----------------------------------------------------------------------------------

  async #commit(fn: Parameters<KvEnv["transaction"]>[0]): Promise<void> {
    await this.#recovered();
    await this.#commitInSection(fn);
  }

  /**
   * #commit() from inside the segment store's exclusive section (a batch() callback): it must
   * not wait for a recovery, whose read-back queues behind this very section; the read-back
   * waits for this commit instead.
   */
  async #commitInSection(fn: Parameters<KvEnv["transaction"]>[0]): Promise<void> {
    this.#checkOpen();
    const commit = this.#env.transaction(fn);
    const tracked = commit.catch(() => {});
    this.#commits.add(tracked);
    try {
      await commit;
    } catch (e) {
      throw this.#commitFailed(e);
    } finally {
      this.#commits.delete(tracked);
    }
  }

  /** Resolves once no recovery is running (at once, usually). */
  async #recovered(): Promise<void> {
    while (this.#recovering !== null) await this.#recovering;
  }

  /**
   * A commit of the index failed, so nothing it staged happened; but the segment state in
   * memory had already counted it. The store recovers instead of stopping: new batches and
   * commits wait, those in flight end, the environment finishes rebuilding itself if lmdb
   * found it damaged (KvError "damaged"), and the segment state is read back from the index.
   * Returns the error for the failed commit's callers: "pool_full" when the filesystem or
   * map is full (S3 507), else "unavailable" (puts are tried again once recovered).
   */
  #commitFailed(e: unknown): ChunkStoreError {
    const kind = e instanceof KvError ? e.kind : "other";
    const message = `committing the chunk index: ${(e as Error).message}`;
    if (this.#recovering === null && this.#failed === null && !this.#closed) {
      this.#logger.error("chunk index commit failed: recovering", {
        pool: this.pool.name,
        kind,
        error: String(e),
      });
      recoveries.inc({ pool: this.pool.name, kind });
      const recovery = this.#recover().then(
        () => this.#logger.info("chunk store recovered", { pool: this.pool.name }),
        (failure) => {
          this.#failed = failure as Error;
          this.#logger.error("chunk store could not recover: refusing chunk operations", {
            pool: this.pool.name,
            error: String(failure),
          });
        },
      ).finally(() => {
        this.#recovering = null;
      });
      this.#recovering = recovery;
    }
    return new ChunkStoreError(kind === "space" ? "pool_full" : "unavailable", message, {
      cause: e,
    });
  }

  async #recover(): Promise<void> {
    await this.#env.settled();
    await this.segments.resync(async () => {
      // Inside the segment store's exclusive section: no batch stages anything now, and
      // every commit already handed to the environment ends before the state is read back.
      while (this.#commits.size > 0) await Promise.allSettled([...this.#commits]);
      await this.#env.settled();
    });
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new ChunkStoreError("closed", `chunk store ${this.pool.name} is closed`);
    }
    if (this.#failed !== null) {
      throw new ChunkStoreError(
        "io",
        `chunk store ${this.pool.name} failed: ${this.#failed.message}`,
        { cause: this.#failed },
      );
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

  /** Takes the locks of several chunks in id order (no deadlock with single-lock holders). */
  async #withLocks<T>(ids: Uint8Array[], fn: () => Promise<T>): Promise<T> {
    const unique = [...new Map(ids.map((id) => [hex(id), id])).entries()].sort((
      [a],
      [b],
    ) => (a < b ? -1 : a > b ? 1 : 0));
    const take = (i: number): Promise<T> =>
      i === unique.length ? fn() : this.#withLock(unique[i]![1], () => take(i + 1));
    return await take(0);
  }
}

function checkId(id: unknown): asserts id is Uint8Array {
  if (!(id instanceof Uint8Array) || id.length !== CHUNK_ID_LENGTH) {
    throw new ChunkStoreError(
      "invalid_id",
      `chunk id must be ${CHUNK_ID_LENGTH} bytes, got ${
        id instanceof Uint8Array ? id.length : typeof id
      }`,
    );
  }
}

function notFound(id: Uint8Array): ChunkStoreError {
  return new ChunkStoreError("not_found", `chunk ${hex(id)} is not stored`);
}

function asStoreError(e: unknown, what: string): ChunkStoreError {
  if (e instanceof ChunkStoreError) return e;
  return new ChunkStoreError("io", `${what}: ${(e as Error).message}`, { cause: e });
}

/** Lower-case hex of a chunk id (and any bytes). */
export const hex = toHex;

/**
 * The default device opener: a file-backed (or block) device through selectDisk(). A device
 * file of a pool that grows with its filesystem never shrinks: one made larger before (a
 * bigger filesystem then) keeps its size.
 */
async function openFileDevice(
  spec: { path: string; sizeBytes: number },
  shim: ShimOptions | undefined,
  growing: boolean,
): Promise<Disk> {
  const dir = spec.path.slice(0, spec.path.lastIndexOf("/"));
  if (dir.length > 0) await Deno.mkdir(dir, { recursive: true });
  let sizeBytes = spec.sizeBytes;
  if (growing) {
    try {
      sizeBytes = Math.max(sizeBytes, (await Deno.stat(spec.path)).size);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return await selectDisk({ path: spec.path, sizeBytes, shim });
}

/** dev:inode of the file at `path`, or null when it is gone. */
async function probeFileDevice(path: string): Promise<string | null> {
  try {
    const info = await Deno.stat(path);
    return `${info.dev}:${info.ino}`;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}
