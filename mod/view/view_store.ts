// The view store: folds applied deltas into the bucket and POSIX views, persisted in an lmdb
// environment together with one watermark per shard, and answers the composition service's
// reads and "what became of my mutation" questions.
//
// Folding is asynchronous. ShardStateMachine.onDelta listeners must be synchronous and must
// not throw, but a payload can only be read through the PayloadCipher port, which is async
// (the tenant KMS may be remote) and may fail for a while; and the lmdb commit is async.
// So the listener only queues the delta (bounded; on overflow it drops the queue and the
// shard catches up from the DeltaSource); one loop opens a batch of payloads concurrently,
// folds them in sequence order into an overlay, and commits overlay and watermarks in one
// transaction. Read-your-writes: every payload carries a random token; the writer
// registers it before appending, and its promise resolves only after the batch holding the
// delta is committed, i.e. when its effect is visible to reads on this node.
//
// The environment (openViewEnv) makes a commit visible at once and writes it to lmdb with
// the next background checkpoint (WalKvEnv without a log): a writer waits for no sync of
// its own here, its delta is durable in the Raft log. A crash loses a suffix of fold
// batches, records and watermarks together, and the views fold again from the log past the
// watermark lmdb kept; the snapshot part's durable index is that watermark (synced()), so
// log compaction never drops what the views would need to fold again.

import { assert } from "../base/mod.ts";
import {
  bytesEqual,
  ByteWriter,
  type Composition,
  CompositionError,
  type CompositionViews,
  concatBytes,
  type Content,
  decodePayload,
  type Inode,
  type ListObjectsOptions,
  type ListObjectsResult,
  type ListPartsOptions,
  type ListPartsResult,
  type ListUploadsOptions,
  type ListUploadsResult,
  type MutationOutcome,
  type Namespace,
  namespaceIdFor,
  namespaceRoutingKey,
  PART_NUMBER_MAX,
  type Payload,
  PAYLOAD_OPS,
  type PayloadCipher,
  PayloadFormatError,
  PayloadUnreadableError,
  type PendingOutcome,
  type ReaddirOptions,
  type ReaddirResult,
  toHex,
  type Upload,
  utf8,
} from "../composition/mod.ts";
import {
  KV_TXN_OPERATIONS_MAX,
  type KvEnv,
  type KvPageKeys,
  type KvTxn,
  openKvEnv,
  transactionRetrying,
  WalKvEnv,
} from "../disk/mod.ts";
import {
  type Delta,
  type DeltaListener,
  type DurableSnapshotPart,
  READ_DELTAS_PAGE_MAX,
  type ShardId,
} from "../log/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import {
  type Fold,
  FoldRefusal,
  openTables,
  refuse,
  VIEW_TABLE_NAMES,
  type ViewTables,
} from "./_fold.ts";
import { successor } from "./_ordered.ts";
import { clearShardViews, exportShardViews, installShardViews } from "./_shard_snapshot.ts";
import { committed, Overlay } from "./_overlay.ts";
import {
  decodeNamespace,
  decodeObject,
  decodePart,
  encodeNamespace,
  type NamespaceRecord,
  publicNamespace,
  readU64,
  u32Bytes,
  u64Bytes,
  VIEW_FORMAT_VERSION,
  ViewCorruptError,
} from "./_records.ts";
import { BucketView, foldBucket, isBucketPayload } from "./bucket_view.ts";
import {
  createRoot,
  deleteRoot,
  foldPosix,
  isPosixPayload,
  PosixView,
  rootIsEmpty,
} from "./posix_view.ts";

/** Deltas one fold batch takes from the queues (or one catch-up read). */
export const VIEW_BATCH_DELTAS_MAX = 256;
/** Staged writes after which a batch commits early (a soft bound; see the assertion below). */
export const VIEW_BATCH_OPERATIONS_MAX = 65_536;
/** Most writes one delta can stage: a completion or abort of an upload with every part. */
export const VIEW_DELTA_OPERATIONS_MAX = 2 * PART_NUMBER_MAX + 64;
/** Deltas and bytes a shard's queue holds before it is dropped for a catch-up read. */
export const VIEW_QUEUE_DELTAS_MAX = 8192;
export const VIEW_QUEUE_BYTES_MAX = 64 << 20;
export const VIEW_OUTCOME_WAITERS_MAX = 65_536;
export const VIEW_FOLD_WAITERS_MAX = 65_536;
/** Keys deleted per transaction while dropping the view. */
/** Maintenance tasks (tenant drops) queued at once. */
export const VIEW_TASKS_MAX = 64;
export const VIEW_CLEAR_KEYS_PER_TXN = 50_000;
/** Back-off while the PayloadCipher fails transiently. */
export const VIEW_RETRY_MS_MIN = 50;
export const VIEW_RETRY_MS_MAX = 5_000;
/** Times a fold batch lmdb failed as "damaged" is tried again after the environment rebuilt. */
export const VIEW_COMMIT_DAMAGED_RETRIES = 2;
/** How long a fold batch waits for room on a full filesystem before folding stops. */
export const VIEW_COMMIT_SPACE_WAIT_MS = 30_000;
export const VIEW_COMMIT_SPACE_RETRY_MS = 1_000;
export const VIEW_ENV_MAP_SIZE_BYTES_DEFAULT: number = 1 << 30;

assert(
  VIEW_BATCH_OPERATIONS_MAX + VIEW_DELTA_OPERATIONS_MAX + 1024 <= KV_TXN_OPERATIONS_MAX,
  "a view batch must fit one lmdb transaction",
);
assert(VIEW_BATCH_DELTAS_MAX <= READ_DELTAS_PAGE_MAX, "a catch-up page is one ReadDeltas page");
assert(VIEW_CLEAR_KEYS_PER_TXN <= KV_TXN_OPERATIONS_MAX, "clearing fits one transaction");

/** Committed deltas of a shard in order (DeltaLog.read satisfies it). */
export interface DeltaSource {
  read(
    shardId: number,
    fromSequence: number,
    maxCount: number,
    linearizable?: boolean,
  ): Promise<{ deltas: Delta[]; nextSequence: number; tip: number }>;
}

/** Where applied deltas are announced (ShardStateMachine satisfies it). */
export interface DeltaFeed {
  onDelta(listener: DeltaListener): void;
}

/** Opens (creating) the node's view environment at `$KISEKI_DATA_DIR/views`. */
export async function openViewEnv(options: {
  dataDir: string;
  /** The node key store's page keys (null: unencrypted, tests only). */
  pageKeys: KvPageKeys | null;
  mapSizeBytes?: number;
  /**
   * Commits visible at once and checkpointed into lmdb in the background (default; see the
   * top of this file); false: each commit is its own lmdb commit (tests that fail lmdb).
   */
  deferred?: boolean;
}): Promise<KvEnv> {
  const inner = await openKvEnv({
    path: `${options.dataDir.replace(/\/+$/, "")}/views`,
    pageKeys: options.pageKeys,
    mapSizeBytes: options.mapSizeBytes ?? VIEW_ENV_MAP_SIZE_BYTES_DEFAULT,
    tablesMax: Object.keys(VIEW_TABLE_NAMES).length,
    // Views are folded from the log and carry their watermark in the same commits.
    durability: "replayable",
  });
  if (options.deferred === false) return inner;
  return WalKvEnv.open({ inner, walDir: null });
}

/** What dropTenant() removed. */
export interface TenantDrop {
  namespaces: number;
  records: number;
  /** One chunk id per reference the dropped objects and parts held (to decRef). */
  releasedChunkIds: Uint8Array[];
}

function chunkRefsOf(content: Content): readonly { chunkId: Uint8Array }[] {
  return content.kind === "chunks" ? content.chunkRefs : [];
}

export interface ViewStoreOptions {
  /** The environment the views live in (the caller opens and closes it). */
  env: KvEnv;
  cipher: PayloadCipher;
  logger?: Logger;
  /** Deltas a shard's queue holds (default and maximum VIEW_QUEUE_DELTAS_MAX). */
  queueDeltasMax?: number;
  /** Deltas per fold batch (default and maximum VIEW_BATCH_DELTAS_MAX). */
  batchDeltasMax?: number;
}

export interface ViewStoreStats {
  shards: ShardViewStats[];
  /** Why folding stopped, or null. */
  failed: string | null;
  rebuilding: boolean;
  /** Batches committed (one durable transaction each, or more for very large batches). */
  batches: number;
  /** Pages read from the DeltaSource (start-up, queue overflow, rebuild). */
  catchUpReads: number;
  /** Deltas whose payload could not be opened or decoded (skipped). */
  skipped: number;
}

export interface ShardViewStats {
  shardId: ShardId;
  /** The last sequence folded and durable. */
  watermark: number;
  queued: number;
  catchingUp: boolean;
}

const META_FORMAT = utf8("format");
const META_REBUILDING = utf8("rebuilding");
/** Set by dropTenant(), cleared by rekey(): dropped records may linger in free pages. */
const META_REKEY_DUE = utf8("rekey_due");
const META_WATERMARK = utf8("wm");
/** Present while a shard's views are replaced by a snapshot (its records are incomplete). */
const META_INSTALLING = utf8("installing");

function installingKey(shardId: ShardId): Uint8Array {
  return concatBytes(META_INSTALLING, u32Bytes(shardId));
}

function watermarkKey(shardId: ShardId): Uint8Array {
  return concatBytes(META_WATERMARK, u32Bytes(shardId));
}

interface ShardState {
  shardId: ShardId;
  /** Durable watermark: every delta up to it is folded and committed. */
  folded: number;
  /** Highest sequence handed to the fold. */
  collected: number;
  /** Highest sequence the listener has seen (replays up to it are ignored). */
  enqueued: number;
  queue: Delta[];
  head: number;
  queueBytes: number;
  /** Reading from the DeltaSource instead of the queue. */
  behind: boolean;
  /** Bumped whenever the queue is dropped: a catch-up read must start after the last drop. */
  generation: number;
  /**
   * The shard's records are being replaced by a snapshot, or a replacement was cut short:
   * nothing is folded until one completes (the log before the snapshot may be gone).
   */
  installing: boolean;
  waiters: { sequence: number; resolve: () => void; reject: (e: Error) => void }[];
}

interface OutcomeWaiter {
  resolve(outcome: MutationOutcome): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

export class ViewStore implements CompositionViews {
  readonly #env: KvEnv;
  readonly #tables: ViewTables;
  readonly #cipher: PayloadCipher;
  readonly #log: Logger;
  readonly #bucket: BucketView;
  readonly #posix: PosixView;
  readonly #shards = new Map<ShardId, ShardState>();
  readonly #persisted = new Map<ShardId, number>();
  /** Per shard, the watermark lmdb is known to hold (the durable snapshot part's index). */
  readonly #synced = new Map<ShardId, number>();
  /** Raised when views are dropped or replaced: sync notes taken before then are void. */
  #syncEpoch = 0;
  readonly #outcomes = new Map<string, OutcomeWaiter>();
  /** Shards whose views a snapshot is replacing, with the namespaces each owns. */
  readonly #installing = new Map<ShardId, (namespaceId: Uint8Array) => boolean>();
  #source: DeltaSource | null = null;
  #loop: Promise<void> | null = null;
  #wake: (() => void) | null = null;
  #dirty = false;
  #closing = false;
  #failure: Error | null = null;
  #rebuildRequested = false;
  #rebuilding = false;
  #rebuildWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Work that must not interleave with a fold batch (dropTenant), run between batches. */
  #tasks: { run: () => Promise<void>; resolve: () => void; reject: (e: Error) => void }[] = [];
  readonly #sleepers = new Set<() => void>();
  readonly #queueDeltasMax: number;
  readonly #batchDeltasMax: number;
  #batches = 0;
  #collectFrom = 0;
  #catchUpReads = 0;
  #skipped = 0;

  private constructor(options: ViewStoreOptions, tables: ViewTables) {
    this.#env = options.env;
    this.#tables = tables;
    this.#cipher = options.cipher;
    this.#log = (options.logger ?? rootLog).child({ component: "views" });
    this.#bucket = new BucketView(tables);
    this.#posix = new PosixView(tables);
    this.#queueDeltasMax = options.queueDeltasMax ?? VIEW_QUEUE_DELTAS_MAX;
    this.#batchDeltasMax = options.batchDeltasMax ?? VIEW_BATCH_DELTAS_MAX;
    assert(
      Number.isInteger(this.#queueDeltasMax) && this.#queueDeltasMax >= 1 &&
        this.#queueDeltasMax <= VIEW_QUEUE_DELTAS_MAX,
      `queueDeltasMax must be 1..${VIEW_QUEUE_DELTAS_MAX}`,
    );
    assert(
      Number.isInteger(this.#batchDeltasMax) && this.#batchDeltasMax >= 1 &&
        this.#batchDeltasMax <= VIEW_BATCH_DELTAS_MAX,
      `batchDeltasMax must be 1..${VIEW_BATCH_DELTAS_MAX}`,
    );
  }

  /** Opens the views in `env`, reading the persisted watermarks. */
  static async open(options: ViewStoreOptions): Promise<ViewStore> {
    const tables = openTables(options.env);
    const store = new ViewStore(options, tables);
    const format = tables.meta.getSync(META_FORMAT);
    if (format === undefined) {
      await options.env.transaction((txn) =>
        txn.put(tables.meta, META_FORMAT, Uint8Array.of(VIEW_FORMAT_VERSION))
      );
    } else if (format.length !== 1 || format[0] !== VIEW_FORMAT_VERSION) {
      store.#log.warn("view format changed: the views will be rebuilt from the log", {
        stored: format[0],
        current: VIEW_FORMAT_VERSION,
      });
      store.#rebuildRequested = true;
    }
    if (tables.meta.getSync(META_REBUILDING) !== undefined) {
      store.#log.warn("a view rebuild was interrupted: starting it again");
      store.#rebuildRequested = true;
    }
    for (const e of tables.meta.range({ start: META_WATERMARK, end: successor(META_WATERMARK) })) {
      const view = new DataView(e.key.buffer, e.key.byteOffset, e.key.byteLength);
      store.#persisted.set(view.getUint32(META_WATERMARK.length), readU64(e.value));
      store.#synced.set(view.getUint32(META_WATERMARK.length), readU64(e.value));
    }
    return store;
  }

  /**
   * Subscribes to a shard's applied deltas. Call before the Raft host starts applying (so
   * no delta is missed before start() can catch up) and before start().
   */
  attach(shardId: ShardId, feed: DeltaFeed): void {
    assert(!this.#shards.has(shardId), `shard ${shardId} attached twice`);
    const folded = this.#rebuildRequested ? 0 : this.#persisted.get(shardId) ?? 0;
    const s: ShardState = {
      shardId,
      folded,
      collected: folded,
      enqueued: folded,
      queue: [],
      head: 0,
      queueBytes: 0,
      // Whatever was applied before this attach (or before start) comes from the source.
      behind: true,
      generation: 0,
      installing: this.#tables.meta.getSync(installingKey(shardId)) !== undefined,
      waiters: [],
    };
    if (s.installing) {
      this.#log.warn("a snapshot install of the shard's views was cut short; waiting for another", {
        shard: shardId,
      });
    }
    this.#shards.set(shardId, s);
    feed.onDelta(this.#listener(s));
    this.#wakeUp();
  }

  /** Starts folding; `source` serves catch-up reads (DeltaLog). */
  start(source: DeltaSource): void {
    assert(this.#loop === null, "ViewStore started twice");
    this.#source = source;
    this.#loop = this.#run();
  }

  /** Stops folding (waiting for the batch in flight); fails every waiter. Does not close the env. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    this.#wakeUp();
    for (const wake of this.#sleepers) wake();
    this.#sleepers.clear();
    await this.#loop;
    this.#failAll(new CompositionError("unavailable", "the view store is closed"));
    for (const task of this.#tasks.splice(0)) {
      task.reject(new CompositionError("unavailable", "the view store is closed"));
    }
  }

  watermark(shardId: ShardId): number {
    return this.#shards.get(shardId)?.folded ?? this.#persisted.get(shardId) ?? 0;
  }

  stats(): ViewStoreStats {
    return {
      shards: [...this.#shards.values()].map((s) => ({
        shardId: s.shardId,
        watermark: s.folded,
        queued: s.queue.length - s.head,
        catchingUp: s.behind,
      })),
      failed: this.#failure?.message ?? null,
      rebuilding: this.#rebuilding || this.#rebuildRequested,
      batches: this.#batches,
      catchUpReads: this.#catchUpReads,
      skipped: this.#skipped,
    };
  }

  /** Resolves once every delta of `shardId` up to `sequence` is folded and visible. */
  whenFolded(shardId: ShardId, sequence: number): Promise<void> {
    const s = this.#shards.get(shardId);
    if (s === undefined) {
      return Promise.reject(
        new CompositionError("unavailable", `shard ${shardId} is not attached`),
      );
    }
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (s.folded >= sequence) return Promise.resolve();
    if (s.waiters.length >= VIEW_FOLD_WAITERS_MAX) {
      return Promise.reject(
        new CompositionError("unavailable", "too many readers waiting for the view"),
      );
    }
    return new Promise((resolve, reject) => s.waiters.push({ sequence, resolve, reject }));
  }

  awaitOutcome(token: Uint8Array, timeoutMs: number): PendingOutcome {
    const id = toHex(token);
    let cancel = () => {};
    const promise = new Promise<MutationOutcome>((resolve, reject) => {
      if (this.#failure !== null || this.#closing) {
        reject(this.#failure ?? new CompositionError("unavailable", "the view store is closed"));
        return;
      }
      if (this.#outcomes.size >= VIEW_OUTCOME_WAITERS_MAX) {
        reject(new CompositionError("unavailable", "too many writes waiting for the view"));
        return;
      }
      assert(!this.#outcomes.has(id), "a request token was used twice");
      const timer = setTimeout(() => {
        this.#outcomes.delete(id);
        reject(
          new CompositionError(
            "unavailable",
            `the write was not folded into the view within ${timeoutMs} ms (it may have been committed)`,
          ),
        );
      }, timeoutMs);
      this.#outcomes.set(id, { resolve, reject, timer });
      cancel = () => {
        clearTimeout(timer);
        this.#outcomes.delete(id);
      };
    });
    // A cancelled or failed wait nobody awaits must not become an unhandled rejection.
    promise.catch(() => {});
    return { promise, cancel: () => cancel() };
  }

  /**
   * Clears every view and folds the whole log again from its first delta. Resolves once every
   * attached shard has caught up with the log's tip as of the catch-up. Reads in between see
   * a partial view.
   */
  dropAndRebuild(): Promise<void> {
    assert(this.#loop !== null, "dropAndRebuild() before start()");
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#rebuildWaiters.push({ resolve, reject });
      this.#rebuildRequested = true;
      this.#wakeUp();
    });
  }

  /**
   * Crypto-shred of a tenant's views: deletes every record of the tenant's namespaces
   * (objects, uploads, parts, POSIX tree, the namespaces themselves), between fold batches so
   * no batch in flight writes one back. Call after the tenant's KEK is destroyed: the log's
   * deltas of the tenant no longer open, so no later fold or rebuild recreates them. The
   * deleted records stay in free pages until rekey().
   */
  dropTenant(tenantId: Uint8Array): Promise<TenantDrop> {
    assert(this.#loop !== null, "dropTenant() before start()");
    if (this.#failure !== null) return Promise.reject(this.#failure);
    let result: TenantDrop = { namespaces: 0, records: 0, releasedChunkIds: [] };
    return new Promise<void>((resolve, reject) => {
      if (this.#tasks.length >= VIEW_TASKS_MAX) {
        reject(new CompositionError("unavailable", "too many view maintenance tasks queued"));
        return;
      }
      this.#tasks.push({
        run: async () => {
          result = await this.#dropTenant(tenantId);
        },
        resolve,
        reject,
      });
      this.#wakeUp();
    }).then(() => result);
  }

  /**
   * Copies the views into a fresh environment under a new page key and destroys the old
   * file and key (KvEnv.rekey): records deleted before it, free pages included, are gone.
   */
  rekey(): Promise<void> {
    return this.#env.rekey();
  }

  /**
   * True from a dropTenant() until rekeyDone(): dropped records may linger in free pages.
   * The caller clears it once everything the shred rekeys (views, key store) is rekeyed.
   */
  rekeyDue(): boolean {
    return this.#tables.meta.getSync(META_REKEY_DUE) !== undefined;
  }

  async rekeyDone(): Promise<void> {
    if (!this.rekeyDue()) return;
    await this.#env.transaction((txn) => txn.delete(this.#tables.meta, META_REKEY_DUE));
  }

  async #runTasks(): Promise<void> {
    while (this.#tasks.length > 0 && !this.#closing) {
      const task = this.#tasks.shift()!;
      try {
        await task.run();
        task.resolve();
      } catch (e) {
        task.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
  }

  async #dropTenant(tenantId: Uint8Array): Promise<TenantDrop> {
    const t = this.#tables;
    const byTenant = [...t.nsTenant.range({ start: tenantId, end: successor(tenantId) })];
    let records = 0;
    const releasedChunkIds: Uint8Array[] = [];
    const scoped = [t.obj, t.upload, t.uploadId, t.part, t.inode, t.dirent, t.cookie];
    for (const { key: indexKey, value: nsId } of byTenant) {
      const end = successor(nsId);
      assert(end !== undefined, "a namespace id has a successor");
      // One namespace's records, in transactions of bounded size.
      for (const table of scoped) {
        for (;;) {
          const entries = [...table.range({ start: nsId, end, limit: VIEW_CLEAR_KEYS_PER_TXN })];
          if (entries.length === 0) break;
          // Each reference an object or part holds is one chunk refcount to give back.
          for (const e of entries) {
            const refs = table === t.obj
              ? chunkRefsOf(decodeObject(nsId, e.value).content)
              : table === t.part
              ? decodePart(e.value).chunkRefs
              : [];
            for (const ref of refs) releasedChunkIds.push(ref.chunkId);
          }
          const keys = entries.map((e) => e.key);
          await this.#env.transaction((txn) => {
            for (const key of keys) txn.delete(table, key);
          });
          records += keys.length;
        }
      }
      await this.#env.transaction((txn) => {
        txn.delete(t.ns, nsId);
        txn.delete(t.nsTenant, indexKey);
        // The dropped records stay in free pages until rekey(): a restart finishes it.
        txn.put(t.meta, META_REKEY_DUE, Uint8Array.of(1));
      });
      records += 2;
    }
    this.#log.info("tenant views dropped (crypto-shred)", {
      namespaces: byTenant.length,
      records,
      chunkRefs: releasedChunkIds.length,
    });
    return { namespaces: byTenant.length, records, releasedChunkIds };
  }

  /**
   * Every table's entries in key order, table by table: equal bytes mean equal views (the
   * rebuild test compares an incrementally folded view with a rebuilt one this way).
   */
  serialize(): Uint8Array {
    const w = new ByteWriter(1 << 16);
    for (const [field, name] of Object.entries(VIEW_TABLE_NAMES)) {
      w.string16(name);
      for (const e of this.#tables[field as keyof ViewTables].range()) {
        if (field === "meta" && bytesEqual(e.key, META_REBUILDING)) continue;
        if (field === "meta" && bytesEqual(e.key, META_REKEY_DUE)) continue;
        w.u8(1).bytes16(e.key).bytes32(e.value);
      }
      w.u8(0);
    }
    return w.finish();
  }

  // ---- reads (CompositionViews) ----------------------------------------------------------

  /**
   * The shard's views as a durable snapshot part: durable up to the shard's watermark,
   * exported and installed between fold batches. `owns` tells the namespaces the shard
   * orders (by their routing key).
   */
  snapshotPart(shardId: ShardId, owns: (namespaceId: Uint8Array) => boolean): DurableSnapshotPart {
    // An install cut short by a crash: its namespaces stay unreadable until one completes.
    if (this.#shards.get(shardId)?.installing) this.#installing.set(shardId, owns);
    return {
      name: "views",
      durableIndex: () => Math.min(this.watermark(shardId), this.#synced.get(shardId) ?? 0),
      export: async (write, atLeast) => {
        let index = 0;
        await this.#task(async () => {
          const s = this.#shards.get(shardId);
          if (s === undefined || s.installing || s.folded < atLeast) {
            // Not waited for: the stream would sit idle; the leader asks again later.
            throw new CompositionError(
              "unavailable",
              `the views of shard ${shardId} are not at ${atLeast} yet`,
            );
          }
          index = s.folded;
          const records = await exportShardViews(this.#tables, owns, write);
          this.#log.info("views of a shard exported for a snapshot", {
            shard: shardId,
            index,
            records,
          });
        });
        return index;
      },
      install: (chunks, index) =>
        this.#task(async () => {
          const s = this.#shards.get(shardId);
          assert(s !== undefined, `shard ${shardId} is not attached`);
          if (!s.installing && s.folded >= index) {
            for await (const _ of chunks) { /* already there: drain the stream */ }
            return;
          }
          s.installing = true;
          this.#installing.set(shardId, owns);
          this.#syncEpoch++;
          this.#synced.set(shardId, 0);
          await this.#env.transaction((txn) =>
            txn.put(this.#tables.meta, installingKey(shardId), Uint8Array.of(1))
          );
          const cleared = await clearShardViews(this.#env, this.#tables, owns);
          const records = await installShardViews(this.#env, this.#tables, chunks);
          await this.#env.transaction((txn) => {
            txn.put(this.#tables.meta, watermarkKey(shardId), u64Bytes(index));
            txn.delete(this.#tables.meta, installingKey(shardId));
          });
          s.queue = [];
          s.head = 0;
          s.queueBytes = 0;
          s.folded = s.collected = s.enqueued = index;
          s.behind = true;
          s.generation++;
          s.installing = false;
          this.#installing.delete(shardId);
          this.#persisted.set(shardId, index);
          this.#noteSynced(new Map([[shardId, index]]));
          const ready = s.waiters.filter((w) => w.sequence <= index);
          s.waiters = s.waiters.filter((w) => w.sequence > index);
          for (const w of ready) w.resolve();
          this.#log.info("views of a shard replaced by a snapshot", {
            shard: shardId,
            index,
            cleared,
            records,
          });
        }),
    };
  }

  /** Runs `run` between fold batches. */
  #task(run: () => Promise<void>): Promise<void> {
    assert(this.#loop !== null, "a view task before start()");
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise<void>((resolve, reject) => {
      if (this.#tasks.length >= VIEW_TASKS_MAX) {
        reject(new CompositionError("unavailable", "too many view maintenance tasks queued"));
        return;
      }
      this.#tasks.push({ run, resolve, reject });
      this.#wakeUp();
    });
  }

  namespace(namespaceId: Uint8Array): Namespace | undefined {
    this.#checkReadable(namespaceId);
    const bytes = this.#tables.ns.getSync(namespaceId);
    return bytes === undefined ? undefined : publicNamespace(decodeNamespace(namespaceId, bytes));
  }

  namespaces(tenantId: Uint8Array): Namespace[] {
    this.#checkReadable(null);
    const out: Namespace[] = [];
    for (const e of this.#tables.nsTenant.range({ start: tenantId, end: successor(tenantId) })) {
      const ns = this.namespace(e.value);
      assert(ns !== undefined, "the tenant index names a missing namespace");
      out.push(ns);
    }
    return out;
  }

  object(namespaceId: Uint8Array, key: string): Composition | undefined {
    this.#checkReadable(namespaceId);
    return this.#bucket.object(namespaceId, key);
  }

  list(namespaceId: Uint8Array, options: ListObjectsOptions): ListObjectsResult {
    this.#checkReadable(namespaceId);
    return this.#bucket.list(namespaceId, options);
  }

  upload(namespaceId: Uint8Array, uploadId: Uint8Array): Upload | undefined {
    this.#checkReadable(namespaceId);
    return this.#bucket.upload(namespaceId, uploadId);
  }

  listUploads(namespaceId: Uint8Array, options: ListUploadsOptions): ListUploadsResult {
    this.#checkReadable(namespaceId);
    return this.#bucket.listUploads(namespaceId, options);
  }

  listParts(
    namespaceId: Uint8Array,
    uploadId: Uint8Array,
    options: ListPartsOptions,
  ): ListPartsResult | undefined {
    this.#checkReadable(namespaceId);
    return this.#bucket.listParts(namespaceId, uploadId, options);
  }

  inode(namespaceId: Uint8Array, inode: number): Inode | undefined {
    this.#checkReadable(namespaceId);
    return this.#posix.inode(namespaceId, inode);
  }

  lookup(namespaceId: Uint8Array, parent: number, name: string): Inode | undefined {
    this.#checkReadable(namespaceId);
    return this.#posix.lookup(namespaceId, parent, name);
  }

  readdir(namespaceId: Uint8Array, directory: number, options: ReaddirOptions): ReaddirResult {
    this.#checkReadable(namespaceId);
    return this.#posix.readdir(namespaceId, directory, options);
  }

  /**
   * Refuses reads of a namespace whose shard's views are being replaced by a snapshot (or of
   * every namespace, for null): half-replaced records must not be served.
   */
  #checkReadable(namespaceId: Uint8Array | null): void {
    if (this.#installing.size === 0) return;
    for (const owns of this.#installing.values()) {
      if (namespaceId === null || owns(namespaceId)) {
        throw new CompositionError(
          "unavailable",
          "this node is installing a snapshot of the namespace's shard; try again shortly",
        );
      }
    }
  }

  // ---- the fold loop -----------------------------------------------------------------------

  #listener(s: ShardState): DeltaListener {
    return (delta) => {
      if (this.#closing || s.installing || delta.sequence <= s.enqueued) return;
      s.enqueued = delta.sequence;
      const bytes = delta.payload.length + delta.chunkRefs.length * 32 + 128;
      if (
        s.queue.length - s.head >= this.#queueDeltasMax ||
        s.queueBytes + bytes > VIEW_QUEUE_BYTES_MAX
      ) {
        // Drop the queue; the shard reads what it missed from the log instead.
        s.queue = [];
        s.head = 0;
        s.queueBytes = 0;
        s.behind = true;
        s.generation++;
      } else {
        s.queue.push(delta);
        s.queueBytes += bytes;
      }
      this.#wakeUp();
    };
  }

  #wakeUp(): void {
    this.#dirty = true;
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async #run(): Promise<void> {
    try {
      while (!this.#closing) {
        this.#dirty = false;
        if (this.#rebuildRequested) await this.#drop();
        await this.#runTasks();
        if (this.#closing) break;
        const batch = await this.#collect();
        if (batch.length > 0) await this.#foldBatch(batch);
        this.#checkRebuilt();
        if (batch.length === 0 && !this.#hasWork()) await this.#idle();
      }
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      this.#failure = error;
      this.#log.error("view folding stopped", { error });
      this.#failAll(error);
      for (const task of this.#tasks.splice(0)) task.reject(error);
    }
  }

  #hasWork(): boolean {
    if (this.#dirty || this.#rebuildRequested || this.#tasks.length > 0) return true;
    for (const s of this.#shards.values()) {
      if (!s.installing && (s.behind || s.head < s.queue.length)) return true;
    }
    return false;
  }

  #idle(): Promise<void> {
    if (this.#dirty || this.#closing) return Promise.resolve();
    return new Promise((resolve) => (this.#wake = resolve));
  }

  async #collect(): Promise<Delta[]> {
    const out: Delta[] = [];
    // Start at a different shard each time, so that one busy shard cannot starve the others.
    const shards = [...this.#shards.values()];
    const first = shards.length === 0 ? 0 : this.#collectFrom++ % shards.length;
    for (const s of [...shards.slice(first), ...shards.slice(0, first)]) {
      const room = this.#batchDeltasMax - out.length;
      if (room <= 0 || this.#closing) break;
      if (s.installing) continue;
      if (s.behind) {
        const generation = s.generation;
        const from = s.collected === 0 ? 0 : s.collected + 1;
        const page = await this.#source!.read(s.shardId, from, room, false);
        this.#catchUpReads++;
        for (const d of page.deltas) {
          if (d.sequence <= s.collected) continue;
          out.push(d);
          s.collected = d.sequence;
        }
        const caughtUp = page.deltas.length === 0 || page.nextSequence > page.tip;
        if (caughtUp && s.generation === generation) s.behind = false;
        continue;
      }
      while (s.head < s.queue.length && out.length < this.#batchDeltasMax) {
        const d = s.queue[s.head]!;
        s.queue[s.head++] = undefined as unknown as Delta;
        s.queueBytes -= d.payload.length + d.chunkRefs.length * 32 + 128;
        if (d.sequence <= s.collected) continue;
        out.push(d);
        s.collected = d.sequence;
      }
      if (s.head === s.queue.length) {
        s.queue = [];
        s.head = 0;
        s.queueBytes = 0;
      }
    }
    return out;
  }

  /** Opens every payload; retries the whole batch while the cipher fails transiently. */
  async #openAll(batch: Delta[]): Promise<(Uint8Array | PayloadUnreadableError)[] | null> {
    for (let delayMs = VIEW_RETRY_MS_MIN;; delayMs = Math.min(delayMs * 2, VIEW_RETRY_MS_MAX)) {
      try {
        return await Promise.all(batch.map(async (d) => {
          try {
            return await this.#cipher.open(d.tenantId, d.payload);
          } catch (e) {
            if (e instanceof PayloadUnreadableError) return e;
            throw e;
          }
        }));
      } catch (e) {
        this.#log.warn("cannot open delta payloads yet; retrying", { error: e, retryMs: delayMs });
        await this.#sleep(delayMs);
        if (this.#closing) return null;
      }
    }
  }

  async #foldBatch(batch: Delta[]): Promise<void> {
    const opened = await this.#openAll(batch);
    if (opened === null) return;
    let overlay = new Overlay(committed);
    let done: { token: string; outcome: MutationOutcome }[] = [];
    let last = new Map<ShardId, number>();
    for (let i = 0; i < batch.length; i++) {
      const d = batch[i]!;
      const result = this.#foldOne(overlay, d, opened[i]!);
      if (result !== null) done.push(result);
      last.set(d.shardId, d.sequence);
      if (overlay.operationCount >= VIEW_BATCH_OPERATIONS_MAX) {
        await this.#commit(overlay, last, done);
        overlay = new Overlay(committed);
        done = [];
        last = new Map();
      }
    }
    if (last.size > 0) await this.#commit(overlay, last, done);
  }

  #foldOne(
    overlay: Overlay,
    delta: Delta,
    opened: Uint8Array | PayloadUnreadableError,
  ): { token: string; outcome: MutationOutcome } | null {
    const where = { shard: delta.shardId, sequence: delta.sequence };
    if (opened instanceof PayloadUnreadableError) {
      this.#log.warn("delta payload unreadable; skipped", { ...where, reason: opened.message });
      this.#skipped++;
      return null;
    }
    let payload: Payload;
    try {
      payload = decodePayload(opened, delta.chunkRefs);
    } catch (e) {
      if (!(e instanceof PayloadFormatError)) throw e;
      this.#skipped++;
      this.#log.warn("delta payload is not a composition mutation; skipped", {
        ...where,
        reason: e.message,
      });
      return null;
    }
    const outcome: MutationOutcome = {
      shardId: delta.shardId,
      sequence: delta.sequence,
      error: null,
      released: [],
    };
    const layer = new Overlay(overlay);
    const fold: Fold = {
      store: layer,
      tables: this.#tables,
      delta,
      nowMs: delta.timestamp.physicalMs,
      outcome,
    };
    let result = outcome;
    try {
      foldPayload(fold, payload);
      assert(layer.operationCount <= VIEW_DELTA_OPERATIONS_MAX, "one delta staged too many writes");
      layer.mergeInto(overlay);
    } catch (e) {
      if (!(e instanceof FoldRefusal)) throw e;
      result = {
        shardId: delta.shardId,
        sequence: delta.sequence,
        error: { code: e.code, message: e.message },
        released: [],
      };
    }
    const token = toHex(payload.token);
    return this.#outcomes.has(token) ? { token, outcome: result } : null;
  }

  async #commit(
    overlay: Overlay,
    last: Map<ShardId, number>,
    done: { token: string; outcome: MutationOutcome }[],
  ): Promise<void> {
    await this.#commitRetrying((txn) => {
      overlay.stage(txn);
      for (const [shardId, sequence] of last) {
        txn.put(this.#tables.meta, watermarkKey(shardId), u64Bytes(sequence));
      }
    });
    this.#batches++;
    this.#noteSynced(last);
    // Visible now: publish watermarks, then answer the writers.
    for (const [shardId, sequence] of last) {
      const s = this.#shards.get(shardId)!;
      s.folded = sequence;
      if (s.waiters.length > 0) {
        const still = [];
        for (const w of s.waiters) {
          if (w.sequence <= sequence) w.resolve();
          else still.push(w);
        }
        s.waiters = still;
      }
    }
    for (const { token, outcome } of done) {
      const waiter = this.#outcomes.get(token);
      if (waiter === undefined) continue;
      this.#outcomes.delete(token);
      clearTimeout(waiter.timer);
      waiter.resolve(outcome);
    }
    this.#checkRebuilt();
  }

  /** Raises the synced watermarks to `marks` once lmdb holds what is committed now. */
  #noteSynced(marks: ReadonlyMap<ShardId, number>): void {
    const epoch = this.#syncEpoch;
    const copy = new Map(marks);
    const synced = this.#env.synced?.() ?? Promise.resolve();
    // A failed checkpoint fails the environment's next commit, which stops folding.
    synced.then(() => {
      if (epoch !== this.#syncEpoch) return;
      for (const [shardId, sequence] of copy) {
        this.#synced.set(shardId, Math.max(this.#synced.get(shardId) ?? 0, sequence));
      }
    }, () => {});
  }

  /**
   * A fold batch's commit, tried again when lmdb failed it in a way the environment recovers
   * from: "damaged" (it rebuilds itself from its records; the same writes then go to the
   * fresh file) or "space" (a full filesystem, for up to VIEW_COMMIT_SPACE_WAIT_MS). A failed
   * commit changed nothing and the fold loop is the only writer of these records, so the
   * same writes are the right retry; anything else stops the folding, as before.
   */
  #commitRetrying(fn: (txn: KvTxn) => void): Promise<void> {
    return transactionRetrying(this.#env, fn, {
      damagedRetries: VIEW_COMMIT_DAMAGED_RETRIES,
      spaceWaitMs: VIEW_COMMIT_SPACE_WAIT_MS,
      spaceRetryMs: VIEW_COMMIT_SPACE_RETRY_MS,
      stillWanted: () => !this.#closing,
      onRetry: (kind, attempt, error) =>
        this.#log.warn("committing folded views failed; trying again", {
          kind,
          attempt,
          error: error.message,
        }),
      sleep: (ms) => this.#sleep(ms),
    });
  }

  /** A rebuild is done once every shard has read the log up to its tip and folded it. */
  #checkRebuilt(): void {
    if (!this.#rebuilding || [...this.#shards.values()].some((s) => s.behind)) return;
    if ([...this.#shards.values()].some((s) => s.collected > s.folded)) return;
    this.#rebuilding = false;
    for (const w of this.#rebuildWaiters.splice(0)) w.resolve();
    this.#log.info("views rebuilt from the log", {
      watermarks: [...this.#shards.values()].map((s) => `${s.shardId}:${s.folded}`).join(","),
    });
  }

  /** Clears every table (crash-safe: the "rebuilding" mark survives until the end). */
  async #drop(): Promise<void> {
    this.#rebuildRequested = false;
    this.#rebuilding = true;
    const started = performance.now();
    await this.#env.transaction((txn) =>
      txn.put(this.#tables.meta, META_REBUILDING, Uint8Array.of(1))
    );
    for (const [field, table] of Object.entries(this.#tables)) {
      if (field === "meta") continue;
      for (;;) {
        const keys: Uint8Array[] = [];
        for (const e of table.range({ limit: VIEW_CLEAR_KEYS_PER_TXN })) keys.push(e.key);
        if (keys.length === 0) break;
        await this.#env.transaction((txn) => {
          for (const k of keys) txn.delete(table, k);
        });
      }
    }
    const watermarks = [
      ...this.#tables.meta.range({ start: META_WATERMARK, end: successor(META_WATERMARK) }),
    ];
    await this.#env.transaction((txn) => {
      for (const e of watermarks) txn.delete(this.#tables.meta, e.key);
      txn.put(this.#tables.meta, META_FORMAT, Uint8Array.of(VIEW_FORMAT_VERSION));
      txn.delete(this.#tables.meta, META_REBUILDING);
    });
    this.#syncEpoch++;
    this.#synced.clear();
    for (const s of this.#shards.values()) {
      s.folded = 0;
      s.collected = 0;
      s.behind = true;
      s.generation++;
    }
    this.#log.info("views dropped; refolding from the start of the log", {
      ms: Math.round(performance.now() - started),
    });
  }

  /** Waits `ms`, or less if the store closes meanwhile. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#sleepers.delete(wake);
        resolve();
      }, ms);
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#sleepers.add(wake);
    });
  }

  #failAll(error: Error): void {
    for (const w of this.#outcomes.values()) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.#outcomes.clear();
    for (const s of this.#shards.values()) {
      for (const w of s.waiters) w.reject(error);
      s.waiters = [];
    }
    for (const w of this.#rebuildWaiters.splice(0)) w.reject(error);
  }
}

// ---- the fold dispatcher -------------------------------------------------------------------

function loadNamespace(fold: Fold, id: Uint8Array): NamespaceRecord | undefined {
  const bytes = fold.store.get(fold.tables.ns, id);
  return bytes === undefined ? undefined : decodeNamespace(id, bytes);
}

/** Folds one decoded payload; throws FoldRefusal when the mutation does not apply. */
export function foldPayload(fold: Fold, p: Payload): void {
  const d = fold.delta;
  if (d.op !== PAYLOAD_OPS[p.type]) {
    refuse("invalid_argument", `a ${p.type} payload travelled as a ${d.op} delta`);
  }
  if (!bytesEqual(d.hashedKey, namespaceRoutingKey(p.namespaceId))) {
    refuse("invalid_argument", "the delta is not routed by its namespace");
  }
  if (p.type === "namespace_create") {
    if (!bytesEqual(p.namespaceId, namespaceIdFor(d.tenantId, p.name))) {
      refuse("invalid_argument", "the namespace id does not belong to this tenant and name");
    }
    if (loadNamespace(fold, p.namespaceId) !== undefined) {
      refuse("namespace_exists", `namespace ${p.name} exists`);
    }
    const ns: NamespaceRecord = {
      id: p.namespaceId,
      tenantId: d.tenantId,
      name: p.name,
      kind: p.kind,
      createdMs: fold.nowMs,
      objects: 0,
      bytes: 0,
      uploads: 0,
      nextInode: 0,
    };
    if (p.kind === "posix") createRoot(fold, ns, p.rootMode, p.rootUid, p.rootGid);
    fold.store.put(fold.tables.ns, ns.id, encodeNamespace(ns));
    fold.store.put(fold.tables.nsTenant, concatBytes(d.tenantId, utf8(p.name)), ns.id);
    fold.outcome.namespace = publicNamespace(ns);
    return;
  }
  const ns = loadNamespace(fold, p.namespaceId);
  // Another tenant's namespace is indistinguishable from none.
  if (ns === undefined || !bytesEqual(ns.tenantId, d.tenantId)) {
    refuse("namespace_not_found", "no such namespace");
  }
  if (p.type === "namespace_delete") {
    const empty = ns.kind === "bucket"
      ? ns.objects === 0 && ns.uploads === 0
      : rootIsEmpty(fold, ns);
    if (!empty) refuse("namespace_not_empty", `namespace ${ns.name} is not empty`);
    if (ns.kind === "posix") deleteRoot(fold, ns);
    fold.store.delete(fold.tables.ns, ns.id);
    fold.store.delete(fold.tables.nsTenant, concatBytes(ns.tenantId, utf8(ns.name)));
    return;
  }
  if (isBucketPayload(p)) {
    if (ns.kind !== "bucket") refuse("wrong_kind", `namespace ${ns.name} is not a bucket`);
    foldBucket(fold, p, ns);
  } else if (isPosixPayload(p)) {
    if (ns.kind !== "posix") refuse("wrong_kind", `namespace ${ns.name} is not a POSIX namespace`);
    foldPosix(fold, p, ns);
  } else {
    throw new ViewCorruptError(`no fold for payload type ${(p as Payload).type}`);
  }
  fold.store.put(fold.tables.ns, ns.id, encodeNamespace(ns));
}
