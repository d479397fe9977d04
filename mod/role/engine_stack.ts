// The whole single-node object engine from a data directory: system key epochs and the
// built-in tenant KMS in keys/, a pool of file devices with EC (or copies) in chunks/, the
// metadata plane (lmdb Raft log, one single-voter Raft group per shard, ShardStateMachine,
// DeltaLog) in raft/, the views in views/, the composition service and the engine on top.
// Tests, the crash harness and the benchmark start it; the server reuses its parts. It lives
// with the roles because it picks implementations (AEAD, erasure codec, disk, KMS), which
// only roles do; composition and view no longer depend on each other through it.

import { assert, HybridLogicalClock, Prng, SystemClock } from "../base/mod.ts";
import {
  ChunkGc,
  type ChunkStore,
  type DedupMode,
  LocalChunkStore,
  type LocalChunkStoreOptions,
  parsePoolSpecs,
  type PoolSpec,
  TENANT_DEDUP_KEY_BYTES_MIN,
} from "../chunk/mod.ts";
import {
  type Aead,
  AEAD_KEY_BYTES,
  type Hashing,
  OpensslHashing,
  selectAead,
  systemRandom,
} from "../crypto/mod.ts";
import type { KvEnv, KvPageKeys, KvTable } from "../disk/mod.ts";
import { type ErasureCodecFactory, selectErasureCodec } from "../ec/mod.ts";
import {
  InternalTenantKms,
  LocalKeyStore,
  LocalSealedKeyProvider,
  type SystemKeyProvider,
  TenantDataKeys,
  TenantKeyNotFoundError,
  type TenantKms,
} from "../keys/mod.ts";
import {
  DeltaLog,
  HASHED_KEY_BYTES,
  HASHED_KEY_MIN,
  LmdbRaftLogStore,
  LogCompactor,
  openRaftLogEnv,
  shardForKey,
  ShardMap,
  ShardStateMachine,
} from "../log/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import { RaftHost } from "../raft/host.ts";
import { openViewEnv, ViewStore } from "../view/mod.ts";
import { defaultShimOptions, type ShimOptions } from "../../ffi/loader.ts";
import { fromHex, utf8 } from "../composition/bytes.ts";
import { CompositionService } from "../composition/service.ts";
import {
  ObjectEngine,
  type ObjectEngineOptions,
  type TenantDedup,
} from "../composition/object_engine.ts";
import { KmsPayloadCipher, kmsTenantName } from "../composition/tenant_payload_cipher.ts";
import { namespaceRoutingKey } from "../composition/namespace.ts";

/** Shards of the local metadata plane unless configured. */
export const ENGINE_STACK_SHARDS_DEFAULT = 2;
/** Raft tick of the local metadata plane (a lone voter needs no elections to speak of). */
export const ENGINE_STACK_TICK_MS = 20;
/** Tenant dedup keys held unwrapped in memory. */
export const DEDUP_KEYS_CACHED_MAX = 1024;
const DEDUP_KEY_TABLE = "tenant_dedup_keys";

// ---- tenant dedup keys ---------------------------------------------------------------------

export interface KmsTenantDedupOptions {
  /** Where the wrapped keys live (a table of the node's key store). */
  table: KvTable;
  env: KvEnv;
  kms: TenantKms;
  modeFor?: (tenantId: Uint8Array) => DedupMode;
  random?: (target: Uint8Array) => void;
}

/**
 * Tenant dedup keys for HMAC chunk ids: 32 random bytes per tenant, kept wrapped by the
 * tenant's KEK, so shredding the tenant also destroys its dedup key.
 */
export class KmsTenantDedup implements TenantDedup {
  readonly #table: KvTable;
  readonly #env: KvEnv;
  readonly #kms: TenantKms;
  readonly #modeFor: (tenantId: Uint8Array) => DedupMode;
  readonly #random: (target: Uint8Array) => void;
  readonly #keys = new Map<string, Promise<Uint8Array>>();
  readonly #unsubscribe: () => void;

  constructor(options: KmsTenantDedupOptions) {
    this.#table = options.table;
    this.#env = options.env;
    this.#kms = options.kms;
    this.#modeFor = options.modeFor ?? (() => "global");
    this.#random = options.random ?? systemRandom;
    this.#unsubscribe = this.#kms.onKeyDestroyed((name) => this.#keys.delete(name));
  }

  modeFor(tenantId: Uint8Array): DedupMode {
    return this.#modeFor(tenantId);
  }

  keyFor(tenantId: Uint8Array): Promise<Uint8Array> {
    const name = kmsTenantName(tenantId);
    let key = this.#keys.get(name);
    if (key === undefined) {
      key = this.#load(name);
      if (this.#keys.size >= DEDUP_KEYS_CACHED_MAX) {
        this.#keys.delete(this.#keys.keys().next().value!);
      }
      this.#keys.set(name, key);
      key.catch(() => this.#keys.delete(name));
    }
    return key;
  }

  close(): void {
    this.#unsubscribe();
    this.#keys.clear();
  }

  async #load(name: string): Promise<Uint8Array> {
    const id = utf8(name);
    const wrapped = this.#table.getSync(id);
    if (wrapped !== undefined) return await this.#kms.unwrap(name, wrapped);
    // First use: one caller per tenant gets here (the promise is cached above).
    const key = new Uint8Array(AEAD_KEY_BYTES);
    this.#random(key);
    const sealed = await this.#kms.wrap(name, key);
    await this.#env.transaction((txn) => txn.put(this.#table, id, sealed));
    return key;
  }
}

assert(AEAD_KEY_BYTES >= TENANT_DEDUP_KEY_BYTES_MIN, "dedup keys are long enough for HMAC ids");

// ---- the metadata plane --------------------------------------------------------------------

/** `count` shards splitting the hashed key space evenly by its first byte. */
export function evenShardMap(count: number): ShardMap {
  assert(Number.isInteger(count) && count >= 1 && count <= 256, "1..256 shards");
  return new ShardMap(
    Array.from({ length: count }, (_, i) => {
      const at = (n: number) => {
        const key = new Uint8Array(HASHED_KEY_BYTES);
        key[0] = Math.floor((n * 256) / count);
        return key;
      };
      return {
        shardId: i,
        start: i === 0 ? HASHED_KEY_MIN : at(i),
        end: i === count - 1 ? null : at(i + 1),
      };
    }),
  );
}

/** What the engine needs of a metadata plane (the server's cluster, or the local one). */
export interface MetadataPlane {
  deltaLog: DeltaLog;
  stateMachines: ReadonlyMap<number, ShardStateMachine>;
  shardMap: ShardMap;
  close(): Promise<void>;
}

/**
 * Starts a metadata plane, calling `onShard` for each shard before it applies anything;
 * `pageKeys` encrypt its raft environment.
 */
export type MetadataPlaneFactory = (
  onShard: (shardId: number, stateMachine: ShardStateMachine) => void,
  pageKeys: KvPageKeys,
) => Promise<MetadataPlane>;

export interface LocalMetadataPlane extends MetadataPlane {
  host: RaftHost;
  stateMachines: Map<number, ShardStateMachine>;
}

/**
 * One node's metadata plane without a network: a single-voter Raft group per shard on the
 * lmdb log in `<dataDir>/raft`. `onShard` sees each state machine before anything is
 * applied to it (attach the views there).
 */
export async function startLocalMetadataPlane(options: {
  dataDir: string;
  shardCount: number;
  logger: Logger;
  onShard?: (shardId: number, stateMachine: ShardStateMachine) => void;
  raftMapBytes?: number;
  /** Log compaction thresholds (tests shorten them). */
  compaction?: { snapshotEntries?: number; marginEntries?: number; intervalMs?: number };
  /** Page keys of the raft environment (the key store's; null: unencrypted, tests only). */
  pageKeys: KvPageKeys | null;
}): Promise<LocalMetadataPlane> {
  const { logger } = options;
  const env = await openRaftLogEnv({
    dataDir: options.dataDir,
    pageKeys: options.pageKeys,
    mapSizeBytes: options.raftMapBytes,
  });
  const prng = new Prng(0x656e67);
  const host = new RaftHost({
    nodeId: 1,
    sink: { send: () => {} },
    log: logger,
    raft: {
      electionTick: 10,
      heartbeatTick: 1,
      maxSizePerMsgBytes: 1 << 20,
      maxInflightMsgs: 256,
      maxUncommittedEntriesBytes: 64 << 20,
      preVote: true,
      checkQuorum: true,
      randomInt: (n) => prng.nextInt(n),
    },
    requestTimeoutMs: 10_000,
    waitersPerGroupMax: 4096,
  });
  const shards = new Map<number, { store: LmdbRaftLogStore; stateMachine: ShardStateMachine }>();
  const stateMachines = new Map<number, ShardStateMachine>();
  try {
    for (let shardId = 0; shardId < options.shardCount; shardId++) {
      const store = await LmdbRaftLogStore.open({
        env,
        shardId,
        logger,
        initial: {
          snapshot: {
            meta: { index: 1, term: 1, conf: { voters: [1], learners: [] } },
            data: new Uint8Array([0]),
          },
          hardState: { term: 1, vote: 0, commit: 1 },
        },
      });
      const stateMachine = new ShardStateMachine(shardId);
      options.onShard?.(shardId, stateMachine);
      shards.set(shardId, { store, stateMachine });
      stateMachines.set(shardId, stateMachine);
      const snapshot = store.snapshot();
      stateMachine.restore(snapshot);
      host.addGroup({ shardId, store, stateMachine, applied: snapshot.meta.index });
    }
  } catch (e) {
    await host.stop();
    await env.close();
    throw e;
  }
  const ticker = setInterval(() => host.tick(), ENGINE_STACK_TICK_MS);
  for (const shardId of shards.keys()) host.campaign(shardId);
  const compactor = new LogCompactor({ host, shards, log: logger, ...options.compaction });
  compactor.start();
  const deltaLog = new DeltaLog({
    host,
    hlc: new HybridLogicalClock({ clock: new SystemClock() }),
    shards,
    memberAddress: () => "local",
  });
  let closed = false;
  return {
    host,
    deltaLog,
    stateMachines,
    shardMap: evenShardMap(options.shardCount),
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(ticker);
      await compactor.stop();
      // stop() waits for a drain in progress and keeps scheduled ones from running.
      await host.stop();
      await env.close();
    },
  };
}

// ---- the stack -----------------------------------------------------------------------------

export interface EnginePoolOptions {
  /** Device files `<dataDir>/chunks/devices/default-<i>.dev` (default 6). */
  devices?: number;
  /** "ec:4+2" (default with 6+ devices), "copies:N", ... */
  durability?: string;
  deviceSizeBytes?: number;
  segmentSizeBytes?: number;
}

export interface EngineStackOptions {
  dataDir: string;
  /** Where the FFI shims are and whether to use them (default: the source checkout's). */
  shim?: ShimOptions;
  aead?: Aead;
  codecs?: ErasureCodecFactory;
  /** A full pool spec, or the shape of the default file-device pool. */
  pool?: PoolSpec | EnginePoolOptions;
  /** Opens pool devices (tests wrap them in FaultyDisk); default: selectDisk(). */
  openDevice?: LocalChunkStoreOptions["openDevice"];
  /**
   * In a cluster: the chunk store the engine uses instead of the local pool, made once the
   * metadata plane (and its node transport) is up; the local pool then holds this node's
   * fragments. Closed with the stack, before the metadata plane.
   */
  clusterChunks?: (
    local: LocalChunkStore,
  ) => Promise<{ store: ChunkStore; close(): Promise<void> }>;
  shardCount?: number;
  /**
   * The metadata plane (the server passes its cluster); default: startLocalMetadataPlane()
   * in `<dataDir>/raft` with `shardCount` shards. It is closed with the stack.
   */
  metadata?: MetadataPlaneFactory;
  /**
   * The system key epochs and the tenant KMS (the server passes the cluster state's);
   * default: node-local ones in `<dataDir>/keys`.
   */
  keys?: (keyStore: LocalKeyStore) => Promise<EngineKeys>;
  /** Per-tenant dedup mode (default "global": SHA-256 chunk ids). */
  dedupModeFor?: (tenantId: Uint8Array) => DedupMode;
  inlineBytesMax?: number;
  outcomeWaitMs?: number;
  logger?: Logger;
  raftMapBytes?: number;
  viewMapBytes?: number;
  /** Log compaction thresholds of the local metadata plane (tests shorten them). */
  compaction?: { snapshotEntries?: number; marginEntries?: number; intervalMs?: number };
  /** Passed to the engine (CDC parameters, part minimum, limits). */
  engine?: Pick<
    ObjectEngineOptions,
    | "cdc"
    | "putChunkRefsMax"
    | "partBytesMin"
    | "chunksInFlightMax"
    | "readAheadChunks"
    | "readAheadBytesMax"
    | "readStallMs"
    | "chunkCacheBytes"
    | "hashWorker"
    | "hashWorkers"
    | "hashing"
  >;
}

/** A tenant KMS that can also name the tenants whose KEK it destroyed (see finishShreds()). */
export type ShreddableKms = TenantKms & { destroyedTenants(max: number): string[] };

/** The keys an engine seals under: system key epochs for chunks, tenant KEKs for payloads. */
export interface EngineKeys {
  systemKeys: SystemKeyProvider;
  kms: ShreddableKms;
}

export interface EngineStack {
  dataDir: string;
  engine: ObjectEngine;
  service: CompositionService;
  /** The node's pool (in a cluster: its fragments of every node's chunks). */
  chunkStore: LocalChunkStore;
  /** The chunk store the engine uses: the cluster's, or the local pool. */
  chunks: ChunkStore;
  gc: ChunkGc;
  views: ViewStore;
  metadata: MetadataPlane;
  keyStore: LocalKeyStore;
  systemKeys: SystemKeyProvider;
  kms: ShreddableKms;
  tenantKeys: TenantDataKeys;
  cipher: KmsPayloadCipher;
  dedup: KmsTenantDedup;
  aead: Aead;
  /** Resolves once the views hold everything the log had applied when it was called. */
  caughtUp(): Promise<void>;
  /** Crypto-shreds a tenant (see shredTenant()). */
  shredTenant(tenantId: Uint8Array): Promise<TenantShred>;
  close(): Promise<void>;
}

function poolSpecFor(options: EngineStackOptions): PoolSpec {
  const pool = options.pool ?? {};
  if ("name" in pool && "devices" in pool && Array.isArray(pool.devices)) return pool;
  const shape = pool as EnginePoolOptions;
  const devices = shape.devices ?? 6;
  const [spec] = parsePoolSpecs(
    JSON.stringify({
      name: "default",
      devices,
      ...(shape.durability === undefined ? {} : { durability: shape.durability }),
      ...(shape.deviceSizeBytes === undefined ? {} : { deviceSize: shape.deviceSizeBytes }),
      ...(shape.segmentSizeBytes === undefined ? {} : { segmentSize: shape.segmentSizeBytes }),
    }),
    { dataDir: options.dataDir },
  );
  return spec!;
}

// ---- crypto-shred ----------------------------------------------------------------------------

/** chunkStore.decRef() calls in flight while a shred gives back a tenant's references. */
export const SHRED_RELEASES_IN_FLIGHT_MAX = 64;

/** What shredTenant() did. */
export interface TenantShred {
  tenant: string;
  /** False when the tenant never had a KEK (it never wrote anything sealed). */
  keyDestroyed: boolean;
  namespaces: number;
  viewRecords: number;
  chunkRefsReleased: number;
  chunkReleaseFailures: number;
}

/**
 * Crypto-shred of one tenant on this node, in an order that is safe to repeat after a crash:
 * 1. destroy the tenant's KEK (durable tombstone): its deltas in the Raft log, its wrapped
 *    data and dedup keys no longer open, so no fold or rebuild brings its records back;
 * 2. drop its view records (names, metadata, inline bytes, upload state, POSIX tree) and
 *    give back the chunk references they held, so GC erases its unshared chunks;
 * 3. rekey the views and the key store: both are copied under fresh page keys and the old
 *    files and keys destroyed, so the dropped records and the KEK's old sealed record, which
 *    lingered in free pages, are unreadable with any key that still exists.
 * Other tenants keep working throughout (writes to the views wait for the rekey's copy).
 */
export async function shredTenant(options: {
  tenantId: Uint8Array;
  kms: TenantKms;
  views: ViewStore;
  chunkStore: Pick<ChunkStore, "decRef">;
  keyStore: LocalKeyStore;
  logger: Logger;
}): Promise<TenantShred> {
  const tenant = kmsTenantName(options.tenantId);
  let keyDestroyed = true;
  try {
    await options.kms.destroyKey(tenant);
  } catch (e) {
    if (!(e instanceof TenantKeyNotFoundError)) throw e;
    keyDestroyed = false;
  }
  const dropped = await options.views.dropTenant(options.tenantId);
  let released = 0;
  let failures = 0;
  const ids = dropped.releasedChunkIds;
  for (let at = 0; at < ids.length; at += SHRED_RELEASES_IN_FLIGHT_MAX) {
    const batch = ids.slice(at, at + SHRED_RELEASES_IN_FLIGHT_MAX);
    for (const r of await Promise.allSettled(batch.map((id) => options.chunkStore.decRef(id)))) {
      if (r.status === "fulfilled") released++;
      else failures++;
    }
  }
  if (failures > 0) {
    // Space, never data: an unreleased reference keeps a sealed chunk until a later audit.
    options.logger.warn("crypto-shred could not give back some chunk references", {
      tenant,
      failures,
    });
  }
  await options.views.rekey();
  await options.keyStore.env.rekey();
  await options.views.rekeyDone();
  const result: TenantShred = {
    tenant,
    keyDestroyed,
    namespaces: dropped.namespaces,
    viewRecords: dropped.records,
    chunkRefsReleased: released,
    chunkReleaseFailures: failures,
  };
  options.logger.info("tenant crypto-shredded", { ...result });
  return result;
}

/** Destroyed tenants whose shred finishShreds() checks at start. */
export const SHRED_TENANTS_CHECKED_MAX = 4096;

/**
 * Finishes shreds a crash interrupted: a tenant whose KEK is destroyed but whose namespaces
 * are still in the views is shredded again (each step is safe to repeat), and views that
 * dropped records without being rekeyed since are rekeyed, with the key store.
 */
async function finishShreds(options: {
  kms: ShreddableKms;
  views: ViewStore;
  chunkStore: Pick<ChunkStore, "decRef">;
  keyStore: LocalKeyStore;
  logger: Logger;
}): Promise<void> {
  for (const name of options.kms.destroyedTenants(SHRED_TENANTS_CHECKED_MAX)) {
    const tenantId = /^([0-9a-f]{2})+$/.test(name) ? fromHex(name, name.length / 2) : null;
    if (tenantId === null || options.views.namespaces(tenantId).length === 0) continue;
    options.logger.warn("finishing an interrupted crypto-shred", { tenant: name });
    await shredTenant({ ...options, tenantId });
  }
  if (options.views.rekeyDue()) {
    options.logger.warn("finishing an interrupted crypto-shred: rekeying the views and keys");
    await options.views.rekey();
    await options.keyStore.env.rekey();
    await options.views.rekeyDone();
  }
}

/** Opens (creating on first start) every part of a single-node engine in `dataDir`. */
export async function startEngineStack(options: EngineStackOptions): Promise<EngineStack> {
  const dataDir = options.dataDir.replace(/\/+$/, "");
  const logger = options.logger ?? rootLog;
  const shim = options.shim ?? defaultShimOptions();
  const aead = options.aead ?? selectAead(shim, logger);
  const codecs = options.codecs ?? selectErasureCodec(shim);
  await Deno.mkdir(dataDir, { recursive: true });
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) {
      try {
        await close();
      } catch (e) {
        logger.error("closing the engine stack", { error: (e as Error).message });
      }
    }
  };
  try {
    const keyStore = await LocalKeyStore.open({ dir: `${dataDir}/keys`, aead, logger });
    closers.push(() => keyStore.close());
    let systemKeys: SystemKeyProvider;
    let kms: ShreddableKms;
    if (options.keys !== undefined) {
      ({ systemKeys, kms } = await options.keys(keyStore));
    } else {
      const local = await LocalSealedKeyProvider.open({ store: keyStore, logger });
      closers.push(() => local.close());
      systemKeys = local;
      kms = new InternalTenantKms({ store: keyStore, logger });
    }
    const tenantKeys = new TenantDataKeys({ kms, aead });
    closers.push(() => tenantKeys.close());
    const cipher = new KmsPayloadCipher({ keys: tenantKeys, createKeys: true });
    const dedup = new KmsTenantDedup({
      table: keyStore.table(DEDUP_KEY_TABLE),
      env: keyStore.env,
      kms,
      modeFor: options.dedupModeFor,
    });
    closers.push(() => dedup.close());

    const chunkStore = await LocalChunkStore.open({
      pool: poolSpecFor(options),
      codecs,
      indexDir: `${dataDir}/chunks/index`,
      indexPageKeys: keyStore.pageKeys,
      openDevice: options.openDevice,
      shim,
      logger,
    });
    closers.push(() => chunkStore.close());
    const gc = new ChunkGc(chunkStore, { holds: null });

    const viewEnv = await openViewEnv({
      dataDir,
      pageKeys: keyStore.pageKeys,
      mapSizeBytes: options.viewMapBytes,
    });
    closers.push(() => viewEnv.close());
    const views = await ViewStore.open({ env: viewEnv, cipher, logger });
    // The metadata plane says which shard orders which namespace once it is up.
    let shardMap: ShardMap | null = null;
    const onShard = (shardId: number, stateMachine: ShardStateMachine) => {
      views.attach(shardId, stateMachine);
      stateMachine.addDurablePart(
        views.snapshotPart(shardId, (namespaceId) => {
          assert(shardMap !== null, "a view snapshot before the metadata plane started");
          return shardForKey(shardMap, namespaceRoutingKey(namespaceId)) === shardId;
        }),
      );
    };
    const metadata = options.metadata !== undefined
      ? await options.metadata(onShard, keyStore.pageKeys)
      : await startLocalMetadataPlane({
        dataDir,
        pageKeys: keyStore.pageKeys,
        shardCount: options.shardCount ?? ENGINE_STACK_SHARDS_DEFAULT,
        logger,
        onShard,
        raftMapBytes: options.raftMapBytes,
        compaction: options.compaction,
      });
    closers.push(() => metadata.close());
    shardMap = metadata.shardMap;
    let chunks: ChunkStore = chunkStore;
    if (options.clusterChunks !== undefined) {
      const cluster = await options.clusterChunks(chunkStore);
      closers.push(() => cluster.close());
      chunks = cluster.store;
    }
    views.start(metadata.deltaLog);
    closers.push(() => views.close());
    await finishShreds({ kms, views, chunkStore: chunks, keyStore, logger });

    const service = new CompositionService({
      committer: metadata.deltaLog,
      cipher,
      shardMap: () => metadata.shardMap,
      views,
      inlineBytesMax: options.inlineBytesMax,
      outcomeWaitMs: options.outcomeWaitMs,
    });
    const engine = new ObjectEngine({
      service,
      chunkStore: chunks,
      aead,
      systemKeys,
      tenantGate: cipher,
      dedup,
      logger,
      // The put path's hashing off the event loop when the shim loads (else hash workers);
      // an engine told to hash inline (hashWorker: false) keeps doing so.
      hashing: options.engine?.hashWorker === false ? undefined : selectHashing(shim, logger),
      ...options.engine,
    });
    closers.push(() => engine.close());
    let closed = false;
    return {
      dataDir,
      engine,
      service,
      chunkStore,
      chunks,
      gc,
      views,
      metadata,
      keyStore,
      systemKeys,
      kms,
      tenantKeys,
      cipher,
      dedup,
      aead,
      shredTenant: (tenantId) =>
        shredTenant({ tenantId, kms, views, chunkStore: chunks, keyStore, logger }),
      async caughtUp() {
        for (const [shardId, sm] of metadata.stateMachines) {
          // A linearizable read waits until the shard has a leader and has applied its log.
          // From the applied tip: the log before it may be compacted.
          await metadata.deltaLog.read(shardId, sm.lastApplied + 1, 1, true);
          await views.whenFolded(shardId, sm.lastApplied);
        }
      },
      async close() {
        if (closed) return;
        closed = true;
        await closeAll();
      },
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/**
 * The OpenSSL hashing shim when it loads (said once in the log either way), else undefined:
 * the engine then hashes on its workers with node:crypto.
 */
export function selectHashing(shim: ShimOptions, logger: Logger): Hashing | undefined {
  const loaded = OpensslHashing.load(shim);
  if (!hashingAnnounced) {
    hashingAnnounced = true;
    logger.info("hashing implementation", {
      impl: loaded.ok ? "openssl" : "node",
      reason: loaded.ok ? `shim loaded from ${loaded.path}` : loaded.reason,
    });
  }
  return loaded.ok ? loaded.hashing : undefined;
}
let hashingAnnounced = false;
