// The durable Raft log of one shard, in an lmdb environment shared by all shards of a node
// ($KISEKI_DATA_DIR/raft/), behind the node's write-ahead log ($KISEKI_DATA_DIR/raft/wal/,
// mod/disk/wal_kv.ts). Writes are staged in memory, visible to reads at once, and made
// durable together by persist(): one transaction per Ready, which the WAL makes durable with
// one append and one fdatasync shared by every shard persisting in the same group commit;
// lmdb takes the same records from the log in the background. Every record carries a
// CRC-32C; on open the tail is verified and a damaged uncommitted tail is cut off, a damaged
// committed entry refuses to start.
//
// At rest, the WAL holds what lmdb holds here, record for record: entry payloads are Raft
// commands whose delta payloads are sealed per tenant by their writers; headers, hard
// states, log bounds and membership are ids, indexes and terms.
//
// Layout, one table `raft_log`, keys prefixed by the shard id so a shard's records are
// contiguous (one named table per shard would cap the shard count at lmdb's maxDbs, and
// LMDB scans its open tables on every transaction):
//
//   shard u32 | 0x01                 hard state
//   shard u32 | 0x02                 log start: index and term of the entry before the first
//   shard u32 | 0x03                 snapshot metadata (with the CRC of its data)
//   shard u32 | 0x04                 snapshot data
//   shard u32 | 0x10 | index u64     entry
//
// Values, big-endian: an entry is format u8 (1) | type u8 | term u64 | crc u32 | data, the
// CRC over term u64 | index u64 | type u8 | data. Other records are format u8 | crc u32 |
// fields, the CRC over the key and the fields.

import { assert, crc32c } from "../base/mod.ts";
import {
  type KvEnv,
  type KvPageKeys,
  type KvTable,
  type KvTxn,
  openKvEnv,
  transactionRetrying,
  WalKvEnv,
} from "../disk/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import {
  CompactedError,
  type ConfState,
  type Entry,
  type EntryType,
  type HardState,
  type NodeId,
  type RaftLogStore,
  type Snapshot,
  type SnapshotMetadata,
  UnavailableError,
} from "../raft/mod.ts";
import { isShardId, type ShardId } from "./shard.ts";

export const RAFT_LOG_TABLE = "raft_log";
/** The write-ahead log's directory inside the raft environment's. */
export const RAFT_WAL_DIR = "wal";
/** Initial map size of the node's raft environment; lmdb-js grows it on demand. */
export const RAFT_ENV_MAP_SIZE_BYTES_DEFAULT: number = 1 << 30;
/** Durable entries kept in memory per shard, newest first out last (the leader's hot tail). */
export const RAFT_ENTRY_CACHE_ENTRIES_MAX_DEFAULT = 1024;
export const RAFT_ENTRY_CACHE_BYTES_MAX_DEFAULT: number = 4 << 20;
/** Entries at the end of the log whose checksums are verified on open. */
export const RAFT_TAIL_VERIFY_ENTRIES_DEFAULT = 1024;
/** Writes (entries, states, snapshots) staged between two persist() calls. */
export const RAFT_STAGED_WRITES_MAX = 65_536;
/** Times a persist lmdb failed as "damaged" is tried again after the environment rebuilt. */
export const RAFT_PERSIST_DAMAGED_RETRIES = 2;
/** How long a persist waits for room on a full filesystem before the shard stops. */
export const RAFT_PERSIST_SPACE_WAIT_MS = 30_000;
export const RAFT_PERSIST_SPACE_RETRY_MS = 1_000;
/** Voters, and separately learners, in a stored membership. */
export const RAFT_CONF_MEMBERS_MAX = 1024;
/** Bookkeeping bytes charged per cached entry besides its data. */
const CACHE_ENTRY_OVERHEAD_BYTES = 64;

const FORMAT = 1;
const TAG_HARD_STATE = 0x01;
const TAG_LOG_START = 0x02;
const TAG_SNAPSHOT_META = 0x03;
const TAG_SNAPSHOT_DATA = 0x04;
const TAG_ENTRY = 0x10;
const ENTRY_HEADER_BYTES = 1 + 1 + 8 + 4;
const ENTRY_TYPES: readonly EntryType[] = ["normal", "conf_change"];
const EMPTY = new Uint8Array(0);

/** Stored Raft state is damaged in a way that cannot be repaired without losing committed data. */
export class RaftLogCorruptError extends Error {
  override name = "RaftLogCorruptError";
}

/**
 * Opens (creating) the node's raft environment at `$KISEKI_DATA_DIR/raft`. Not page-encrypted:
 * every record that carries tenant data is sealed by its writer (delta payloads under the
 * tenant's keys; headers hold ids and digests), and lmdb-js's page encryption measured
 * unstable under sustained writes (see DESIGN in mod/role/data_dir.ts).
 */
export async function openRaftLogEnv(options: {
  dataDir: string;
  /**
   * The node key store's page keys: a raft environment an earlier version page-encrypted
   * under them is rewritten unencrypted once (null: tests).
   */
  pageKeys: KvPageKeys | null;
  mapSizeBytes?: number;
  /**
   * The write-ahead log in front of lmdb (`raft/wal/`, see mod/disk/wal_kv.ts): a persist is
   * durable after one append and fdatasync shared by every shard's persist in the same group
   * commit; lmdb is brought up to date in the background. Default on; false (or a tuned
   * one, for tests) opens lmdb alone, where every persist is a durable lmdb commit. An
   * environment opened without it after one with it first needs the log replayed: only
   * tests that damage lmdb itself turn it off.
   */
  wal?: boolean | { segmentBytes?: number; checkpointDelayMs?: number };
  logger?: Logger;
}): Promise<KvEnv> {
  const path = `${options.dataDir.replace(/\/+$/, "")}/raft`;
  const inner = await openKvEnv({
    path,
    pageKeys: null,
    ...(options.pageKeys === null ? {} : { legacyPageKeys: options.pageKeys }),
    mapSizeBytes: options.mapSizeBytes ?? RAFT_ENV_MAP_SIZE_BYTES_DEFAULT,
    tablesMax: 4,
  });
  const wal = options.wal ?? true;
  if (wal === false) return inner;
  try {
    return await WalKvEnv.open({
      inner,
      walDir: `${path}/${RAFT_WAL_DIR}`,
      ...(wal === true ? {} : wal),
      ...(options.logger ? { logger: options.logger } : {}),
    });
  } catch (e) {
    await inner.close().catch(() => {});
    throw e;
  }
}

export interface LmdbRaftLogStoreOptions {
  env: KvEnv;
  shardId: ShardId;
  logger?: Logger;
  cacheEntriesMax?: number;
  cacheBytesMax?: number;
  tailVerifyEntries?: number;
  /** State for a shard that has nothing stored yet (bootstrap); ignored otherwise. */
  initial?: { snapshot?: Snapshot; hardState?: HardState };
}

// ---- keys and records ----------------------------------------------------------------------

function writeU64(view: DataView, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `u64 field ${value} is not a safe integer`);
  view.setUint32(offset, Math.floor(value / 0x1_0000_0000));
  view.setUint32(offset + 4, value >>> 0);
}

/** Reads a u64 that must be a safe integer; null when it is not (damage). */
function readU64(view: DataView, offset: number): number | null {
  const hi = view.getUint32(offset);
  if (hi > 0x1f_ffff) return null;
  return hi * 0x1_0000_0000 + view.getUint32(offset + 4);
}

function shardKey(shardId: ShardId, tag: number): Uint8Array {
  const key = new Uint8Array(5);
  new DataView(key.buffer).setUint32(0, shardId);
  key[4] = tag;
  return key;
}

/** The key of entry `index` of `shardId` (exported for tests that damage records). */
export function raftEntryKey(shardId: ShardId, index: number): Uint8Array {
  const key = new Uint8Array(13);
  const view = new DataView(key.buffer);
  view.setUint32(0, shardId);
  key[4] = TAG_ENTRY;
  writeU64(view, 5, index);
  return key;
}

function entryIndexOfKey(key: Uint8Array): number | null {
  if (key.length !== 13 || key[4] !== TAG_ENTRY) return null;
  return readU64(new DataView(key.buffer, key.byteOffset, key.byteLength), 5);
}

function entryCrc(term: number, index: number, typeCode: number, data: Uint8Array): number {
  const head = new Uint8Array(17);
  const view = new DataView(head.buffer);
  writeU64(view, 0, term);
  writeU64(view, 8, index);
  head[16] = typeCode;
  return crc32c(data, crc32c(head));
}

function encodeEntry(entry: Entry): Uint8Array {
  const typeCode = ENTRY_TYPES.indexOf(entry.type);
  const value = new Uint8Array(ENTRY_HEADER_BYTES + entry.data.length);
  const view = new DataView(value.buffer);
  value[0] = FORMAT;
  value[1] = typeCode;
  writeU64(view, 2, entry.term);
  view.setUint32(10, entryCrc(entry.term, entry.index, typeCode, entry.data));
  value.set(entry.data, ENTRY_HEADER_BYTES);
  return value;
}

/** The entry, or a description of the damage. */
function decodeEntry(index: number, value: Uint8Array): Entry | string {
  if (value.length < ENTRY_HEADER_BYTES) return `entry ${index} is ${value.length} bytes, torn`;
  if (value[0] !== FORMAT) return `entry ${index} has unknown format ${value[0]}`;
  const view = new DataView(value.buffer, value.byteOffset, value.byteLength);
  const type = ENTRY_TYPES[value[1]!];
  const term = readU64(view, 2);
  if (type === undefined || term === null) return `entry ${index} has a damaged header`;
  const data = value.subarray(ENTRY_HEADER_BYTES);
  if (view.getUint32(10) !== entryCrc(term, index, value[1]!, data)) {
    return `entry ${index} fails its checksum`;
  }
  return { term, index, type, data };
}

/** format u8 | crc u32 (over key and body) | body */
function sealRecord(key: Uint8Array, body: Uint8Array): Uint8Array {
  const value = new Uint8Array(5 + body.length);
  value[0] = FORMAT;
  new DataView(value.buffer).setUint32(1, crc32c(body, crc32c(key)));
  value.set(body, 5);
  return value;
}

function openRecord(key: Uint8Array, value: Uint8Array): DataView | null {
  if (value.length < 5 || value[0] !== FORMAT) return null;
  const body = value.subarray(5);
  const stored = new DataView(value.buffer, value.byteOffset).getUint32(1);
  if (stored !== crc32c(body, crc32c(key))) return null;
  return new DataView(body.buffer, body.byteOffset, body.byteLength);
}

function encodeHardState(hs: HardState): Uint8Array {
  const body = new Uint8Array(24);
  const view = new DataView(body.buffer);
  writeU64(view, 0, hs.term);
  writeU64(view, 8, hs.vote);
  writeU64(view, 16, hs.commit);
  return body;
}

function decodeHardState(view: DataView): HardState | null {
  if (view.byteLength !== 24) return null;
  const term = readU64(view, 0);
  const vote = readU64(view, 8);
  const commit = readU64(view, 16);
  return term === null || vote === null || commit === null ? null : { term, vote, commit };
}

function encodeLogStart(index: number, term: number): Uint8Array {
  const body = new Uint8Array(16);
  const view = new DataView(body.buffer);
  writeU64(view, 0, index);
  writeU64(view, 8, term);
  return body;
}

function decodeLogStart(view: DataView): { index: number; term: number } | null {
  if (view.byteLength !== 16) return null;
  const index = readU64(view, 0);
  const term = readU64(view, 8);
  return index === null || term === null ? null : { index, term };
}

interface StoredSnapshotMeta {
  meta: SnapshotMetadata;
  dataBytes: number;
  dataCrc: number;
}

function encodeSnapshotMeta(snapshot: Snapshot): Uint8Array {
  const { voters, learners } = snapshot.meta.conf;
  assert(
    voters.length <= RAFT_CONF_MEMBERS_MAX && learners.length <= RAFT_CONF_MEMBERS_MAX,
    "snapshot membership is over RAFT_CONF_MEMBERS_MAX",
  );
  const body = new Uint8Array(16 + 4 + 4 * voters.length + 4 + 4 * learners.length + 8 + 4);
  const view = new DataView(body.buffer);
  writeU64(view, 0, snapshot.meta.index);
  writeU64(view, 8, snapshot.meta.term);
  let at = 16;
  for (const ids of [voters, learners]) {
    view.setUint32(at, ids.length);
    at += 4;
    for (const id of ids) {
      assert(Number.isInteger(id) && id > 0 && id <= 0xffff_ffff, `node id ${id} is not a u32`);
      view.setUint32(at, id);
      at += 4;
    }
  }
  writeU64(view, at, snapshot.data.length);
  view.setUint32(at + 8, crc32c(snapshot.data));
  return body;
}

function decodeSnapshotMeta(view: DataView): StoredSnapshotMeta | null {
  if (view.byteLength < 16 + 4 + 4 + 12) return null;
  const index = readU64(view, 0);
  const term = readU64(view, 8);
  let at = 16;
  const lists: NodeId[][] = [];
  for (let l = 0; l < 2; l++) {
    if (at + 4 > view.byteLength) return null;
    const count = view.getUint32(at);
    at += 4;
    if (count > RAFT_CONF_MEMBERS_MAX || at + 4 * count > view.byteLength) return null;
    const ids: NodeId[] = [];
    for (let i = 0; i < count; i++, at += 4) ids.push(view.getUint32(at));
    lists.push(ids);
  }
  if (at + 12 !== view.byteLength) return null;
  const dataBytes = readU64(view, at);
  if (index === null || term === null || dataBytes === null) return null;
  return {
    meta: { index, term, conf: { voters: lists[0]!, learners: lists[1]! } },
    dataBytes,
    dataCrc: view.getUint32(at + 8),
  };
}

function cloneConf(conf: ConfState): ConfState {
  return { voters: conf.voters.slice(), learners: conf.learners.slice() };
}

function checkEntry(entry: Entry): void {
  assert(Number.isSafeInteger(entry.index) && entry.index > 0, `entry index ${entry.index}`);
  assert(Number.isSafeInteger(entry.term) && entry.term >= 0, `entry term ${entry.term}`);
  assert(ENTRY_TYPES.includes(entry.type), `entry type ${entry.type}`);
  assert(entry.data instanceof Uint8Array, "entry data must be a Uint8Array");
}

// ---- the store -----------------------------------------------------------------------------

const openShards = new WeakMap<KvEnv, Set<ShardId>>();

export class LmdbRaftLogStore implements RaftLogStore {
  readonly shardId: ShardId;
  readonly #env: KvEnv;
  readonly #table: KvTable;
  readonly #log: Logger;
  readonly #cacheEntriesMax: number;
  readonly #cacheBytesMax: number;
  readonly #keys: {
    hardState: Uint8Array;
    logStart: Uint8Array;
    snapshotMeta: Uint8Array;
    snapshotData: Uint8Array;
  };

  // The live view, including staged writes.
  #hardState: HardState = { term: 0, vote: 0, commit: 0 };
  #snapshotMeta: StoredSnapshotMeta = {
    meta: { index: 0, term: 0, conf: { voters: [], learners: [] } },
    dataBytes: 0,
    dataCrc: 0,
  };
  /** Snapshot data not yet known durable (null: read it from lmdb). */
  #snapshotData: Uint8Array | null = EMPTY;
  #dummyIndex = 0;
  #dummyTerm = 0;
  #lastIndex = 0;
  /** Entries whose newest version is staged or being persisted; they shadow lmdb. */
  #unstable = new Map<number, Entry>();
  /** Durable entries, ascending by index, bounded; a read-through cache of the tail. */
  #cache = new Map<number, Entry>();
  #cacheBytes = 0;

  // What the next persist() must write.
  #dirtyEntries = new Map<number, Entry>();
  #dirtyHardState = false;
  #dirtyLogStart = false;
  #dirtySnapshot: Snapshot | null = null;
  #stagedWrites = 0;

  /** Entries lmdb holds once every submitted transaction commits: (#lmdbDummy, #lmdbLast]. */
  #lmdbDummy = 0;
  #lmdbLast = 0;
  #lastPersist: Promise<void> = Promise.resolve();
  #failed: Error | null = null;
  /** Persists started; only the newest is tried again after a recoverable failure. */
  #persistSeq = 0;
  #closed = false;

  private constructor(options: LmdbRaftLogStoreOptions) {
    this.shardId = options.shardId;
    this.#env = options.env;
    this.#table = options.env.table(RAFT_LOG_TABLE);
    this.#log = (options.logger ?? rootLog).child({
      component: "raft_log_store",
      shard: options.shardId,
    });
    this.#cacheEntriesMax = options.cacheEntriesMax ?? RAFT_ENTRY_CACHE_ENTRIES_MAX_DEFAULT;
    this.#cacheBytesMax = options.cacheBytesMax ?? RAFT_ENTRY_CACHE_BYTES_MAX_DEFAULT;
    assert(
      Number.isInteger(this.#cacheEntriesMax) && this.#cacheEntriesMax >= 0,
      "cacheEntriesMax",
    );
    assert(Number.isInteger(this.#cacheBytesMax) && this.#cacheBytesMax >= 0, "cacheBytesMax");
    this.#keys = {
      hardState: shardKey(this.shardId, TAG_HARD_STATE),
      logStart: shardKey(this.shardId, TAG_LOG_START),
      snapshotMeta: shardKey(this.shardId, TAG_SNAPSHOT_META),
      snapshotData: shardKey(this.shardId, TAG_SNAPSHOT_DATA),
    };
  }

  /**
   * Opens the shard's log: loads its state, verifies the last `tailVerifyEntries` entries,
   * cuts off a damaged uncommitted tail (logged), and refuses with RaftLogCorruptError when
   * damage reaches committed entries or the stored state.
   */
  static async open(options: LmdbRaftLogStoreOptions): Promise<LmdbRaftLogStore> {
    assert(isShardId(options.shardId), `shard id ${options.shardId} is not a u32`);
    let shards = openShards.get(options.env);
    if (!shards) openShards.set(options.env, shards = new Set());
    assert(!shards.has(options.shardId), `shard ${options.shardId} is already open`);
    const store = new LmdbRaftLogStore(options);
    shards.add(options.shardId);
    try {
      await store.#load(options);
    } catch (e) {
      shards.delete(options.shardId);
      throw e;
    }
    return store;
  }

  async #load(options: LmdbRaftLogStoreOptions): Promise<void> {
    const fail = (what: string): never => {
      throw new RaftLogCorruptError(
        `shard ${this.shardId}: ${what} in ${this.#env.path}; refusing to start this shard`,
      );
    };
    const [first] = this.#table.range({
      start: shardKey(this.shardId, 0),
      end: shardKey(this.shardId, 0xff),
      limit: 1,
    });
    if (first === undefined) {
      const { snapshot, hardState } = options.initial ?? {};
      if (snapshot !== undefined || hardState !== undefined) {
        if (snapshot) {
          this.#stage();
          this.#stageSnapshot(snapshot);
        }
        const hs = hardState ?? { term: 0, vote: 0, commit: snapshot?.meta.index ?? 0 };
        assert(hs.commit >= (snapshot?.meta.index ?? 0), "initial commit is below the snapshot");
        this.setHardState(hs);
        await this.persist();
      }
      return;
    }

    const hsValue = this.#table.getSync(this.#keys.hardState);
    if (hsValue !== undefined) {
      const view = openRecord(this.#keys.hardState, hsValue);
      const hs = view && decodeHardState(view);
      this.#hardState = hs ?? fail("the hard state record is damaged");
    }
    const metaValue = this.#table.getSync(this.#keys.snapshotMeta);
    if (metaValue !== undefined) {
      const view = openRecord(this.#keys.snapshotMeta, metaValue);
      const meta = view && decodeSnapshotMeta(view);
      this.#snapshotMeta = meta ?? fail("the snapshot metadata record is damaged");
      this.#snapshotData = null;
    }
    // Every move of the log start is written with it; no record means it never moved.
    const startValue = this.#table.getSync(this.#keys.logStart);
    if (startValue !== undefined) {
      const view = openRecord(this.#keys.logStart, startValue);
      const start = view && decodeLogStart(view);
      if (!start) fail("the log start record is damaged");
      this.#dummyIndex = start!.index;
      this.#dummyTerm = start!.term;
    }

    // The tail, newest first.
    const verify = options.tailVerifyEntries ?? RAFT_TAIL_VERIFY_ENTRIES_DEFAULT;
    assert(Number.isInteger(verify) && verify >= 1, "tailVerifyEntries must be >= 1");
    const window: { index: number; key: Uint8Array; entry: Entry | string }[] = [];
    for (
      const { key, value } of this.#table.range({
        start: raftEntryKey(this.shardId, this.#dummyIndex + 1),
        end: shardKey(this.shardId, TAG_ENTRY + 1),
        reverse: true,
        limit: verify,
      })
    ) {
      const index = entryIndexOfKey(key) ?? fail("an entry key is malformed");
      window.push({ index, key, entry: decodeEntry(index, value) });
    }
    window.reverse();
    // The lowest index from which the log cannot be trusted, and why.
    let firstBad = Infinity;
    let why = "";
    const mark = (index: number, reason: string): void => {
      if (index < firstBad) [firstBad, why] = [index, reason];
    };
    if (window.length > 0 && window.length < verify && window[0]!.index !== this.#dummyIndex + 1) {
      mark(
        this.#dummyIndex + 1,
        `entries ${this.#dummyIndex + 1}..${window[0]!.index - 1} are missing`,
      );
    }
    for (let i = 0; i < window.length; i++) {
      const { index, entry } = window[i]!;
      const previous = window[i - 1];
      if (previous && index !== previous.index + 1) {
        mark(previous.index + 1, `entries ${previous.index + 1}..${index - 1} are missing`);
      }
      if (typeof entry === "string") {
        mark(index, entry);
      } else if (
        previous && typeof previous.entry !== "string" && entry.term < previous.entry.term
      ) {
        mark(index, `entry ${index} has term ${entry.term} below its predecessor's`);
      }
    }
    let lastIndex = window.length > 0 ? window[window.length - 1]!.index : this.#dummyIndex;
    if (firstBad <= this.#hardState.commit) {
      fail(`${why}, at or below the commit index ${this.#hardState.commit}`);
    }
    if (firstBad !== Infinity) {
      const cut = window.filter((w) => w.index >= firstBad);
      await this.#env.transaction((txn) => {
        for (const w of cut) txn.delete(this.#table, w.key);
      });
      this.#log.warn("cut a damaged tail off the raft log", {
        reason: why,
        fromIndex: firstBad,
        toIndex: lastIndex,
        entries: cut.length,
        commit: this.#hardState.commit,
      });
      lastIndex = firstBad - 1;
    }
    if (this.#hardState.commit > lastIndex) {
      fail(`the commit index ${this.#hardState.commit} is past the last entry ${lastIndex}`);
    }
    this.#lastIndex = lastIndex;
    this.#lmdbDummy = this.#dummyIndex;
    this.#lmdbLast = lastIndex;
    for (const w of window) {
      if (w.index < firstBad && typeof w.entry !== "string") this.#cacheAdd(w.entry);
    }
  }

  /** Waits for persists in flight and releases the shard (staged writes are dropped). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#lastPersist.catch(() => {});
    openShards.get(this.#env)?.delete(this.shardId);
  }

  #check(): void {
    assert(!this.#closed, `shard ${this.shardId} log store is closed`);
    if (this.#failed) {
      throw new RaftLogCorruptError(
        `shard ${this.shardId}: an earlier persist failed (${this.#failed.message}); the ` +
          `durable state is unknown, restart the shard`,
      );
    }
  }

  // ---- RaftStorage ---------------------------------------------------------------------

  initialState(): { hardState: HardState; confState: ConfState } {
    this.#check();
    return {
      hardState: { ...this.#hardState },
      confState: cloneConf(this.#snapshotMeta.meta.conf),
    };
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    this.#check();
    assert(lo <= hi, `entries(${lo}, ${hi}): lo > hi`);
    if (lo <= this.#dummyIndex) {
      throw new CompactedError(`entries(${lo}): compacted, first index is ${this.#dummyIndex + 1}`);
    }
    if (hi > this.#lastIndex + 1) {
      throw new UnavailableError(`entries(${lo}, ${hi}): last index is ${this.#lastIndex}`);
    }
    const out: Entry[] = [];
    let size = 0;
    for (let index = lo; index < hi; index++) {
      const entry = this.#entry(index);
      size += entry.data.byteLength;
      if (out.length > 0 && size > maxBytes) break;
      out.push(entry);
    }
    return out;
  }

  term(index: number): number {
    this.#check();
    if (index < this.#dummyIndex) {
      throw new CompactedError(`term(${index}): compacted, first index is ${this.#dummyIndex + 1}`);
    }
    if (index > this.#lastIndex) {
      throw new UnavailableError(`term(${index}): last index is ${this.#lastIndex}`);
    }
    return index === this.#dummyIndex ? this.#dummyTerm : this.#entry(index).term;
  }

  firstIndex(): number {
    this.#check();
    return this.#dummyIndex + 1;
  }

  lastIndex(): number {
    this.#check();
    return this.#lastIndex;
  }

  snapshot(): Snapshot {
    this.#check();
    const { meta, dataBytes, dataCrc } = this.#snapshotMeta;
    let data = this.#snapshotData;
    if (data === null) {
      data = this.#table.getSync(this.#keys.snapshotData) ?? EMPTY;
      if (data.length !== dataBytes || crc32c(data) !== dataCrc) {
        throw new RaftLogCorruptError(
          `shard ${this.shardId}: snapshot ${meta.index} data fails its checksum`,
        );
      }
    }
    return { meta: { index: meta.index, term: meta.term, conf: cloneConf(meta.conf) }, data };
  }

  /** The entry at `index` (dummy < index <= last): staged, cached, or read and verified. */
  #entry(index: number): Entry {
    const staged = this.#unstable.get(index) ?? this.#cache.get(index);
    if (staged) return staged;
    const value = this.#table.getSync(raftEntryKey(this.shardId, index));
    const entry = value === undefined ? `entry ${index} is missing` : decodeEntry(index, value);
    if (typeof entry === "string") {
      throw new RaftLogCorruptError(`shard ${this.shardId}: ${entry} in ${this.#env.path}`);
    }
    return entry;
  }

  // ---- RaftLogStore: staged writes -----------------------------------------------------

  #stage(): void {
    this.#check();
    assert(this.#stagedWrites < RAFT_STAGED_WRITES_MAX, "too many writes staged without persist()");
    this.#stagedWrites++;
  }

  append(entries: Entry[]): void {
    this.#check();
    if (entries.length === 0) return;
    const first = entries[0]!.index;
    assert(
      first <= this.#lastIndex + 1,
      `append at ${first} leaves a gap after ${this.#lastIndex}`,
    );
    const skip = Math.max(0, this.#dummyIndex + 1 - first);
    if (skip >= entries.length) return;
    this.#stage();
    const from = first + skip;
    for (let i = skip; i < entries.length; i++) {
      checkEntry(entries[i]!);
      assert(entries[i]!.index === from + i - skip, "appended entries must be contiguous");
    }
    if (from <= this.#lastIndex) this.#dropFrom(from);
    for (let i = skip; i < entries.length; i++) {
      const entry = entries[i]!;
      this.#unstable.set(entry.index, entry);
      this.#dirtyEntries.set(entry.index, entry);
    }
    this.#lastIndex = entries[entries.length - 1]!.index;
  }

  /** Forgets every in-memory entry at or after `from` (a conflicting suffix). */
  #dropFrom(from: number): void {
    for (let i = from; i <= this.#lastIndex; i++) {
      this.#unstable.delete(i);
      this.#dirtyEntries.delete(i);
      this.#cacheDelete(i);
    }
    this.#lastIndex = from - 1;
  }

  setHardState(state: HardState): void {
    this.#stage();
    for (const v of [state.term, state.vote, state.commit]) {
      assert(Number.isSafeInteger(v) && v >= 0, `hard state field ${v}`);
    }
    this.#hardState = { term: state.term, vote: state.vote, commit: state.commit };
    this.#dirtyHardState = true;
  }

  applySnapshot(snapshot: Snapshot): void {
    this.#stage();
    assert(
      snapshot.meta.index > this.#snapshotMeta.meta.index,
      `snapshot ${snapshot.meta.index} is not newer than ${this.#snapshotMeta.meta.index}`,
    );
    this.#stageSnapshot(snapshot);
    this.#unstable.clear();
    this.#dirtyEntries.clear();
    this.#cache.clear();
    this.#cacheBytes = 0;
    this.#dummyIndex = snapshot.meta.index;
    this.#dummyTerm = snapshot.meta.term;
    this.#lastIndex = snapshot.meta.index;
    this.#dirtyLogStart = true;
  }

  #stageSnapshot(snapshot: Snapshot): void {
    assert(Number.isSafeInteger(snapshot.meta.index) && snapshot.meta.index >= 0, "snapshot index");
    assert(Number.isSafeInteger(snapshot.meta.term) && snapshot.meta.term >= 0, "snapshot term");
    const stored: Snapshot = {
      meta: {
        index: snapshot.meta.index,
        term: snapshot.meta.term,
        conf: cloneConf(snapshot.meta.conf),
      },
      data: snapshot.data,
    };
    const meta = decodeSnapshotMeta(new DataView(encodeSnapshotMeta(stored).buffer));
    assert(meta !== null, "snapshot metadata must round-trip");
    this.#snapshotMeta = meta;
    this.#snapshotData = stored.data;
    this.#dirtySnapshot = stored;
    if (this.#dummyIndex < stored.meta.index && this.#lastIndex < stored.meta.index) {
      // Bootstrap from a snapshot: the log starts after it.
      this.#dummyIndex = stored.meta.index;
      this.#dummyTerm = stored.meta.term;
      this.#lastIndex = stored.meta.index;
      this.#dirtyLogStart = true;
    }
  }

  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    this.#stage();
    assert(
      index > this.#snapshotMeta.meta.index,
      `snapshot at ${index} is not newer than ${this.#snapshotMeta.meta.index}`,
    );
    assert(index <= this.#hardState.commit, `snapshot at ${index} is past the commit index`);
    const snapshot: Snapshot = {
      meta: { index, term: this.term(index), conf: cloneConf(conf) },
      data,
    };
    this.#stageSnapshot(snapshot);
    return this.snapshot();
  }

  compact(index: number): void {
    this.#check();
    if (index <= this.#dummyIndex) return;
    this.#stage();
    assert(
      index <= this.#snapshotMeta.meta.index,
      `compact(${index}) is not covered by the snapshot at ${this.#snapshotMeta.meta.index}`,
    );
    assert(index <= this.#lastIndex, `compact(${index}) is past the last index`);
    const term = this.term(index);
    for (let i = this.#dummyIndex + 1; i <= index; i++) {
      this.#unstable.delete(i);
      this.#dirtyEntries.delete(i);
      this.#cacheDelete(i);
    }
    this.#dummyIndex = index;
    this.#dummyTerm = term;
    this.#dirtyLogStart = true;
  }

  /**
   * Writes everything staged since the last call in one lmdb transaction and resolves once
   * it is synced (and so is every earlier persist). A failed persist leaves the durable
   * state unknown: the store refuses further use and the shard must be reopened.
   */
  /**
   * One transaction, tried again when lmdb failed it in a way the environment recovers from:
   * "damaged" (the environment rebuilds itself from its records; the same writes then go to
   * the fresh file) or "space" (a full filesystem, for up to RAFT_PERSIST_SPACE_WAIT_MS).
   * A failed commit changed nothing, so the same writes are the right retry.
   */
  #commitRetrying(fn: (txn: KvTxn) => void, seq: number): Promise<void> {
    return transactionRetrying(this.#env, fn, {
      damagedRetries: RAFT_PERSIST_DAMAGED_RETRIES,
      spaceWaitMs: RAFT_PERSIST_SPACE_WAIT_MS,
      spaceRetryMs: RAFT_PERSIST_SPACE_RETRY_MS,
      // Only the newest persist is tried again: a later one may already have replaced what
      // this one writes (a rewritten tail, a newer hard state).
      stillWanted: () => seq === this.#persistSeq,
      onRetry: (kind, attempt, error) =>
        this.#log.warn("persisting the raft log failed; trying again", {
          kind,
          attempt,
          error: error.message,
        }),
    });
  }

  persist(): Promise<void> {
    try {
      this.#check();
    } catch (e) {
      return Promise.reject(e);
    }
    const previous = this.#lastPersist;
    if (this.#stagedWrites === 0) {
      // Nothing new: durable once the persists already in flight are.
      return previous.then(() => this.#check());
    }
    const written: Entry[] = [];
    const snapshot = this.#dirtySnapshot;
    const deletes: number[] = [];
    // Entries lmdb holds after earlier transactions that are no longer in (dummy, last].
    for (let i = this.#lmdbDummy + 1; i <= Math.min(this.#dummyIndex, this.#lmdbLast); i++) {
      deletes.push(i);
    }
    for (let i = Math.max(this.#lastIndex, this.#lmdbDummy) + 1; i <= this.#lmdbLast; i++) {
      deletes.push(i);
    }
    for (const entry of this.#dirtyEntries.values()) {
      if (entry.index > this.#dummyIndex && entry.index <= this.#lastIndex) written.push(entry);
    }
    const hardState = this.#dirtyHardState ? { ...this.#hardState } : null;
    const logStart = this.#dirtyLogStart ? encodeLogStart(this.#dummyIndex, this.#dummyTerm) : null;
    this.#dirtyEntries = new Map();
    this.#dirtyHardState = false;
    this.#dirtyLogStart = false;
    this.#dirtySnapshot = null;
    this.#stagedWrites = 0;
    this.#lmdbDummy = this.#dummyIndex;
    this.#lmdbLast = this.#lastIndex;

    const table = this.#table;
    const keys = this.#keys;
    const seq = ++this.#persistSeq;
    const committed = this.#commitRetrying((txn: KvTxn) => {
      if (snapshot) {
        const meta = sealRecord(keys.snapshotMeta, encodeSnapshotMeta(snapshot));
        txn.put(table, keys.snapshotMeta, meta);
        txn.put(table, keys.snapshotData, snapshot.data);
      }
      for (const index of deletes) txn.delete(table, raftEntryKey(this.shardId, index));
      for (const entry of written) {
        txn.put(table, raftEntryKey(this.shardId, entry.index), encodeEntry(entry));
      }
      if (logStart) txn.put(table, keys.logStart, sealRecord(keys.logStart, logStart));
      if (hardState) {
        txn.put(table, keys.hardState, sealRecord(keys.hardState, encodeHardState(hardState)));
      }
    }, seq);
    const done = (async () => {
      let error: Error | null = null;
      try {
        await committed;
      } catch (e) {
        error = e as Error;
      }
      // lmdb commits in order; still, report success only once every earlier persist has.
      await previous;
      if (error) {
        this.#failed ??= error;
        this.#log.error("persisting the raft log failed; the shard must be restarted", {
          error,
        });
        throw error;
      }
      this.#check();
      // Durable now: entries still current move from the unstable map to the cache.
      for (const entry of written) {
        if (this.#unstable.get(entry.index) === entry) {
          this.#unstable.delete(entry.index);
          this.#cacheAdd(entry);
        }
      }
      if (snapshot && this.#dirtySnapshot === null && this.#snapshotData === snapshot.data) {
        this.#snapshotData = null;
      }
    })();
    this.#lastPersist = done.then(() => {}, () => {});
    return done;
  }

  // ---- cache -----------------------------------------------------------------------------

  #cacheAdd(entry: Entry): void {
    if (this.#cacheEntriesMax === 0) return;
    const size = entry.data.byteLength + CACHE_ENTRY_OVERHEAD_BYTES;
    if (size > this.#cacheBytesMax) return;
    this.#cacheDelete(entry.index);
    this.#cache.set(entry.index, entry);
    this.#cacheBytes += size;
    for (const [index, old] of this.#cache) {
      if (this.#cache.size <= this.#cacheEntriesMax && this.#cacheBytes <= this.#cacheBytesMax) {
        break;
      }
      this.#cache.delete(index);
      this.#cacheBytes -= old.data.byteLength + CACHE_ENTRY_OVERHEAD_BYTES;
    }
  }

  #cacheDelete(index: number): void {
    const old = this.#cache.get(index);
    if (old) {
      this.#cache.delete(index);
      this.#cacheBytes -= old.data.byteLength + CACHE_ENTRY_OVERHEAD_BYTES;
    }
  }

  /** Cache occupancy (for metrics and tests). */
  cacheStats(): { entries: number; bytes: number; unstable: number } {
    return { entries: this.#cache.size, bytes: this.#cacheBytes, unstable: this.#unstable.size };
  }
}
