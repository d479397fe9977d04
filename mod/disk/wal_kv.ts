// A key-value environment whose commits are durable once they are in a write-ahead log
// (wal.ts), as etcd puts its WAL in front of bbolt: a transaction is one WAL record, and
// every transaction of a group commit shares one fdatasync. The lmdb environment behind it
// keeps the tables; it is brought up to date from the log in the background (a checkpoint:
// one lmdb transaction for many records, with the LSN it reached), after which the log's
// segments behind that LSN are released. Until then the records live in an in-memory
// overlay that reads consult first. On open, the records past the checkpoint are replayed
// into lmdb.
//
// Without a log (walDir null: "replayable" state, such as views folded from the Raft log
// with their watermark in the same records), a transaction is visible at once and reaches
// lmdb with the next checkpoint: a crash loses a suffix of transactions, never a part of
// one, and synced() says when lmdb holds what was committed (the owner's durable
// watermark). Nothing is written anywhere but lmdb, so page-encrypted environments may use
// this mode.
//
// What the WAL holds on disk: exactly the puts and deletes its owners commit (table name,
// key, value), as lmdb would hold them, plus LSNs and checksums. It adds nothing readable
// that the environment behind it does not already hold, so an environment may only be put
// behind a WAL when its records are sealed by their owners (the Raft log: delta payloads
// sealed per tenant, headers of ids and digests); page-encrypted environments are not.

import { assert, toHex } from "../base/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import {
  compareBytes,
  KV_KEY_BYTES_MAX,
  KV_TXN_OPERATIONS_MAX,
  type KvEntry,
  type KvEnv,
  KvError,
  type KvRangeOptions,
  type KvTable,
  type KvTxn,
  transactionRetrying,
} from "./lmdb.ts";
import { FileWal, WAL_RECORD_BYTES_MAX, type WalRecord } from "./wal.ts";

/** The table of the environment behind the log that holds the checkpointed LSN. */
export const WAL_CHECKPOINT_TABLE = "wal_checkpoint";
/** How long committed records wait in the overlay before a checkpoint writes them to lmdb. */
export const WAL_CHECKPOINT_DELAY_MS_DEFAULT = 100;
/** Overlay bytes that start a checkpoint at once. */
export const WAL_CHECKPOINT_BYTES_DEFAULT: number = 8 << 20;
/** Overlay bytes above which new transactions wait for a checkpoint (the overlay's bound). */
export const WAL_OVERLAY_BYTES_MAX: number = 64 << 20;
/** Callers of synced() waiting at once (one per fold batch in flight, say). */
export const WAL_SYNC_WAITERS_MAX = 65_536;
/** Operations one checkpoint writes in one lmdb transaction at most. */
export const WAL_CHECKPOINT_OPERATIONS_MAX = 262_144;
/** Times a checkpoint lmdb failed as "damaged" is tried again after the rebuild. */
export const WAL_CHECKPOINT_DAMAGED_RETRIES = 2;
/** How long a checkpoint waits for room on a full filesystem before the log stops. */
export const WAL_CHECKPOINT_SPACE_WAIT_MS = 30_000;
export const WAL_CHECKPOINT_SPACE_RETRY_MS = 1_000;
/** Bookkeeping bytes charged per overlay record besides key and value. */
const OVERLAY_RECORD_OVERHEAD_BYTES = 96;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const CHECKPOINT_KEY = encoder.encode("lsn");
const RECORD_FORMAT = 1;
const OP_PUT = 1;
const OP_DELETE = 2;

interface Op {
  kind: "put" | "delete";
  table: string;
  key: Uint8Array;
  value: Uint8Array | null;
}

/** format u8 | count u32 | ops: kind u8 | table len u8 | table | key len u16 | key | value len u32 | value */
function encodeOps(ops: Op[]): Uint8Array {
  const names = ops.map((o) => encoder.encode(o.table));
  let size = 5;
  for (const [i, o] of ops.entries()) {
    size += 1 + 1 + names[i]!.length + 2 + o.key.length + 4 + (o.value?.length ?? 0);
  }
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = RECORD_FORMAT;
  view.setUint32(1, ops.length);
  let at = 5;
  for (const [i, o] of ops.entries()) {
    out[at++] = o.kind === "put" ? OP_PUT : OP_DELETE;
    out[at++] = names[i]!.length;
    out.set(names[i]!, at);
    at += names[i]!.length;
    view.setUint16(at, o.key.length);
    out.set(o.key, at + 2);
    at += 2 + o.key.length;
    view.setUint32(at, o.value?.length ?? 0);
    if (o.value) out.set(o.value, at + 4);
    at += 4 + (o.value?.length ?? 0);
  }
  return out;
}

function decodeOps(lsn: number, body: Uint8Array): Op[] {
  const bad = (why: string) => new KvError(`WAL record ${lsn}: ${why}`, "damaged");
  if (body.length < 5 || body[0] !== RECORD_FORMAT) throw bad("unknown format");
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const count = view.getUint32(1);
  const ops: Op[] = [];
  let at = 5;
  for (let i = 0; i < count; i++) {
    if (at + 2 > body.length) throw bad("truncated");
    const kind = body[at]!;
    const nameBytes = body[at + 1]!;
    at += 2;
    if (at + nameBytes + 2 > body.length) throw bad("truncated");
    const table = decoder.decode(body.subarray(at, at + nameBytes));
    at += nameBytes;
    const keyBytes = view.getUint16(at);
    at += 2;
    if (at + keyBytes + 4 > body.length) throw bad("truncated");
    const key = body.slice(at, at + keyBytes);
    at += keyBytes;
    const valueBytes = view.getUint32(at);
    at += 4;
    if (at + valueBytes > body.length) throw bad("truncated");
    const value = body.slice(at, at + valueBytes);
    at += valueBytes;
    if (kind === OP_PUT) ops.push({ kind: "put", table, key, value });
    else if (kind === OP_DELETE) ops.push({ kind: "delete", table, key, value: null });
    else throw bad(`unknown operation ${kind}`);
  }
  if (at !== body.length) throw bad("trailing bytes");
  return ops;
}

function readLsn(value: Uint8Array | undefined): number {
  if (value === undefined) return 0;
  assert(value.length === 8, "WAL checkpoint record is 8 bytes");
  const view = new DataView(value.buffer, value.byteOffset, 8);
  return view.getUint32(0) * 0x1_0000_0000 + view.getUint32(4);
}

function lsnBytes(lsn: number): Uint8Array {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, Math.floor(lsn / 0x1_0000_0000));
  view.setUint32(4, lsn >>> 0);
  return out;
}

interface OverlayRecord {
  key: Uint8Array;
  /** null: deleted. */
  value: Uint8Array | null;
  lsn: number;
}

export interface WalKvEnvOptions {
  /** The lmdb environment the log stands in front of (owned from here on: closed with it). */
  inner: KvEnv;
  /** Directory of the log's segments; null: no log (see the top of this file). */
  walDir: string | null;
  segmentBytes?: number;
  checkpointDelayMs?: number;
  checkpointBytes?: number;
  overlayBytesMax?: number;
  logger?: Logger;
}

class WalKvTable implements KvTable {
  readonly overlay = new Map<string, OverlayRecord>();
  constructor(readonly env: WalKvEnv, readonly inner: KvTable) {}

  get name(): string {
    return this.inner.name;
  }

  getSync(key: Uint8Array): Uint8Array | undefined {
    const o = this.overlay.get(toHex(key));
    if (o !== undefined) return o.value === null ? undefined : o.value.slice();
    return this.inner.getSync(key);
  }

  *range(options: KvRangeOptions = {}): Iterable<KvEntry> {
    if (this.overlay.size === 0) {
      yield* this.inner.range(options);
      return;
    }
    const reverse = options.reverse === true;
    const inRange = (k: Uint8Array) =>
      (options.start === undefined || compareBytes(k, options.start) >= 0) &&
      (options.end === undefined || compareBytes(k, options.end) < 0);
    const mine = [...this.overlay.values()].filter((o) => inRange(o.key));
    mine.sort((a, b) => reverse ? compareBytes(b.key, a.key) : compareBytes(a.key, b.key));
    const shadowed = new Set(mine.map((o) => toHex(o.key)));
    const limit = options.limit ?? Infinity;
    let given = 0;
    let m = 0;
    const before = (a: Uint8Array, b: Uint8Array) =>
      reverse ? compareBytes(a, b) > 0 : compareBytes(a, b) < 0;
    const { limit: _limit, ...innerOptions } = options;
    for (const entry of this.inner.range(innerOptions)) {
      while (m < mine.length && !before(entry.key, mine[m]!.key)) {
        const o = mine[m++]!;
        if (o.value !== null) {
          if (given >= limit) return;
          given++;
          yield { key: o.key.slice(), value: o.value.slice() };
        }
      }
      if (shadowed.has(toHex(entry.key))) continue;
      if (given >= limit) return;
      given++;
      yield entry;
    }
    for (; m < mine.length; m++) {
      const o = mine[m]!;
      if (o.value === null) continue;
      if (given >= limit) return;
      given++;
      yield { key: o.key.slice(), value: o.value.slice() };
    }
  }
}

class WalTxn implements KvTxn {
  readonly ops: Op[] = [];
  closed = false;
  constructor(readonly env: WalKvEnv) {}

  get operationCount(): number {
    return this.ops.length;
  }

  put(table: KvTable, key: Uint8Array, value: Uint8Array): void {
    this.#stage({ kind: "put", table: this.#own(table).name, key: checkKey(key), value });
  }

  delete(table: KvTable, key: Uint8Array): void {
    this.#stage({ kind: "delete", table: this.#own(table).name, key: checkKey(key), value: null });
  }

  #stage(op: Op): void {
    assert(!this.closed, "KvTxn used after its transaction function returned");
    assert(this.ops.length < KV_TXN_OPERATIONS_MAX, "KvTxn: too many operations");
    this.ops.push(op);
  }

  #own(table: KvTable): WalKvTable {
    assert(
      table instanceof WalKvTable && table.env === this.env,
      "KvTxn: table belongs to another environment",
    );
    return table;
  }
}

function checkKey(key: Uint8Array): Uint8Array {
  assert(key instanceof Uint8Array, "key must be a Uint8Array");
  assert(key.length > 0 && key.length <= KV_KEY_BYTES_MAX, `key of ${key.length} bytes`);
  return key.slice();
}

/** A KvEnv whose commits are WAL records (see the top of this file). */
export class WalKvEnv implements KvEnv {
  readonly #inner: KvEnv;
  readonly #wal: FileWal | null;
  readonly #log: Logger;
  readonly #tables = new Map<string, WalKvTable>();
  readonly #checkpointTable: KvTable | null;
  readonly #checkpointDelayMs: number;
  readonly #checkpointBytes: number;
  readonly #overlayBytesMax: number;
  /** Committed records not yet in lmdb, in LSN order. */
  #pending: { lsn: number; ops: Op[] }[] = [];
  #overlayBytes = 0;
  #checkpointedLsn: number;
  /** The last LSN given out without a log (with one, the log's). */
  #lastLsn: number;
  /** Callers of synced() waiting for a checkpoint to reach their LSN. */
  #syncWaiters: { lsn: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  #checkpointTimer: ReturnType<typeof setTimeout> | null = null;
  #checkpointing: Promise<void> | null = null;
  #roomWaiters: (() => void)[] = [];
  /** Transactions waiting for room (see transaction()), and the end of that queue. */
  #admitting = 0;
  #admission: Promise<void> = Promise.resolve();
  #failed: Error | null = null;
  #closed = false;
  #checkpoints = 0;

  private constructor(options: WalKvEnvOptions, wal: FileWal | null, checkpointedLsn: number) {
    this.#inner = options.inner;
    this.#wal = wal;
    this.#log = (options.logger ?? rootLog).child({
      component: "wal",
      path: options.walDir ?? options.inner.path,
    });
    this.#checkpointTable = wal === null ? null : options.inner.table(WAL_CHECKPOINT_TABLE);
    this.#checkpointDelayMs = options.checkpointDelayMs ?? WAL_CHECKPOINT_DELAY_MS_DEFAULT;
    this.#checkpointBytes = options.checkpointBytes ?? WAL_CHECKPOINT_BYTES_DEFAULT;
    this.#overlayBytesMax = options.overlayBytesMax ?? WAL_OVERLAY_BYTES_MAX;
    assert(this.#checkpointBytes <= this.#overlayBytesMax, "checkpointBytes <= overlayBytesMax");
    this.#checkpointedLsn = checkpointedLsn;
    this.#lastLsn = checkpointedLsn;
  }

  /**
   * Opens the log in front of `inner`: replays the records past its checkpoint into it (one
   * transaction, then the segments behind are released) and returns the environment.
   */
  static async open(options: WalKvEnvOptions): Promise<WalKvEnv> {
    if (options.walDir === null) return new WalKvEnv(options, null, 0);
    const log = (options.logger ?? rootLog).child({ component: "wal", path: options.walDir });
    const marker = options.inner.table(WAL_CHECKPOINT_TABLE);
    const fromLsn = readLsn(marker.getSync(CHECKPOINT_KEY));
    const { wal, records } = await FileWal.open({
      dir: options.walDir,
      segmentBytes: options.segmentBytes,
      fromLsn,
      onTornTail: (info) =>
        log.warn("cut a torn tail off the write-ahead log (a group commit never finished)", info),
      onSpaceRetry: (attempt, error) =>
        log.warn("the write-ahead log met a full filesystem; trying again", {
          attempt,
          error: error.message,
        }),
    });
    const env = new WalKvEnv(options, wal, fromLsn);
    try {
      await env.#replay(records);
    } catch (e) {
      await wal.close().catch(() => {});
      throw e;
    }
    return env;
  }

  async #replay(records: WalRecord[]): Promise<void> {
    if (records.length === 0) return;
    const batches: { lsn: number; ops: Op[] }[] = records.map((r) => ({
      lsn: r.lsn,
      ops: decodeOps(r.lsn, r.body),
    }));
    // In chunks of whole records, each chunk one transaction with the LSN it reached.
    for (let i = 0; i < batches.length;) {
      const chunk: typeof batches = [];
      let ops = 0;
      while (i < batches.length && (chunk.length === 0 || ops < WAL_CHECKPOINT_OPERATIONS_MAX)) {
        ops += batches[i]!.ops.length;
        chunk.push(batches[i++]!);
      }
      await this.#writeInner(chunk);
    }
    this.#log.info("replayed the write-ahead log into lmdb", {
      records: records.length,
      fromLsn: records[0]!.lsn,
      toLsn: records[records.length - 1]!.lsn,
    });
    await this.#wal!.release(this.#checkpointedLsn);
  }

  /** Writes whole records into lmdb with the checkpoint LSN, in one transaction. */
  async #writeInner(chunk: { lsn: number; ops: Op[] }[]): Promise<void> {
    const lsn = chunk[chunk.length - 1]!.lsn;
    await transactionRetrying(this.#inner, (txn) => {
      for (const record of chunk) {
        for (const op of record.ops) {
          const table = this.#innerTable(op.table);
          if (op.kind === "put") txn.put(table, op.key, op.value!);
          else txn.delete(table, op.key);
        }
      }
      if (this.#checkpointTable !== null) {
        txn.put(this.#checkpointTable, CHECKPOINT_KEY, lsnBytes(lsn));
      }
    }, {
      damagedRetries: WAL_CHECKPOINT_DAMAGED_RETRIES,
      spaceWaitMs: WAL_CHECKPOINT_SPACE_WAIT_MS,
      spaceRetryMs: WAL_CHECKPOINT_SPACE_RETRY_MS,
      stillWanted: () => true,
      onRetry: (kind, attempt, error) =>
        this.#log.warn("checkpointing the write-ahead log into lmdb failed; trying again", {
          kind,
          attempt,
          error: error.message,
        }),
    });
    this.#checkpointedLsn = lsn;
    this.#checkpoints++;
    if (this.#syncWaiters.length > 0) {
      const still = [];
      for (const w of this.#syncWaiters) {
        if (w.lsn <= lsn) w.resolve();
        else still.push(w);
      }
      this.#syncWaiters = still;
    }
  }

  #innerTable(name: string): KvTable {
    return this.#tables.get(name)?.inner ?? this.#inner.table(name);
  }

  get path(): string {
    return this.#inner.path;
  }

  get rebuilds(): number {
    return this.#inner.rebuilds;
  }

  table(name: string): KvTable {
    assert(name !== WAL_CHECKPOINT_TABLE, `table ${name} is the log's own`);
    let table = this.#tables.get(name);
    if (table === undefined) {
      table = new WalKvTable(this, this.#inner.table(name));
      this.#tables.set(name, table);
    }
    return table;
  }

  async transaction(fn: (txn: KvTxn) => void): Promise<void> {
    this.#check();
    const txn = new WalTxn(this);
    try {
      fn(txn);
    } finally {
      txn.closed = true;
    }
    if (txn.ops.length === 0) return;
    const body = encodeOps(txn.ops);
    if (body.length > WAL_RECORD_BYTES_MAX) {
      throw new KvError(`a transaction of ${body.length} bytes is over the WAL record bound`);
    }
    // Transactions take LSNs in the order they were called (as lmdb commits them): one that
    // must wait for room waits behind those already waiting, and later ones behind it.
    if (this.#admitting > 0 || !this.#hasRoom()) {
      this.#admitting++;
      const turn = this.#admission.then(async () => {
        while (!this.#hasRoom() && this.#failed === null) {
          if (this.#overlayBytes >= this.#overlayBytesMax) {
            const room = new Promise<void>((r) => this.#roomWaiters.push(r));
            this.#startCheckpoint();
            await room;
          } else {
            await this.#wal?.room();
          }
        }
      });
      this.#admission = turn.finally(() => this.#admitting--);
      await this.#admission;
      this.#check();
    }
    let lsn: number;
    if (this.#wal === null) {
      lsn = ++this.#lastLsn;
    } else {
      const appended = this.#wal.append(body);
      lsn = appended.lsn;
      try {
        await appended.durable;
      } catch (e) {
        this.#failed ??= e as Error;
        throw new KvError(
          `WAL commit in ${this.#wal.dir} failed: ${(e as Error).message}`,
          "other",
          { cause: e },
        );
      }
    }
    // Durable: visible to reads, and due for the next checkpoint. Records resolve in LSN
    // order, so the overlay always holds the newest version.
    for (const op of txn.ops) {
      const table = this.table(op.table) as WalKvTable;
      const id = toHex(op.key);
      const old = table.overlay.get(id);
      if (old !== undefined) this.#overlayBytes -= overlaySize(old);
      const record = { key: op.key, value: op.value, lsn };
      table.overlay.set(id, record);
      this.#overlayBytes += overlaySize(record);
    }
    this.#pending.push({ lsn, ops: txn.ops });
    if (this.#overlayBytes >= this.#checkpointBytes) this.#startCheckpoint();
    else this.#scheduleCheckpoint();
  }

  #scheduleCheckpoint(): void {
    if (this.#checkpointTimer !== null || this.#checkpointing !== null) return;
    if (this.#pending.length === 0) return;
    this.#checkpointTimer = setTimeout(() => {
      this.#checkpointTimer = null;
      this.#startCheckpoint();
    }, this.#checkpointDelayMs);
  }

  #hasRoom(): boolean {
    return this.#overlayBytes < this.#overlayBytesMax && (this.#wal?.hasRoom() ?? true);
  }

  #check(): void {
    assert(!this.#closed, `environment ${this.path} is closed`);
    if (this.#failed !== null) {
      throw new KvError(
        `the write-ahead log of ${this.path} failed (${this.#failed.message}); reopen it`,
      );
    }
  }

  #startCheckpoint(): Promise<void> {
    if (this.#checkpointTimer !== null) {
      clearTimeout(this.#checkpointTimer);
      this.#checkpointTimer = null;
    }
    if (this.#checkpointing !== null) return this.#checkpointing;
    this.#checkpointing = this.#checkpointLoop().finally(() => {
      this.#checkpointing = null;
    });
    return this.#checkpointing;
  }

  async #checkpointLoop(): Promise<void> {
    while (this.#pending.length > 0 && this.#failed === null) {
      const chunk: { lsn: number; ops: Op[] }[] = [];
      let ops = 0;
      while (
        this.#pending.length > 0 && (chunk.length === 0 || ops < WAL_CHECKPOINT_OPERATIONS_MAX)
      ) {
        ops += this.#pending[0]!.ops.length;
        chunk.push(this.#pending.shift()!);
      }
      try {
        await this.#writeInner(chunk);
      } catch (e) {
        // The records are still in the log and the overlay; commits stop until a reopen
        // replays them.
        this.#failed ??= e as Error;
        this.#log.error("checkpointing the write-ahead log failed; the log must be reopened", {
          error: e,
        });
        for (const w of this.#syncWaiters.splice(0)) w.reject(e as Error);
        for (const w of this.#roomWaiters.splice(0)) w();
        return;
      }
      const lsn = this.#checkpointedLsn;
      for (const table of this.#tables.values()) {
        for (const [id, record] of table.overlay) {
          if (record.lsn <= lsn) {
            table.overlay.delete(id);
            this.#overlayBytes -= overlaySize(record);
          }
        }
      }
      for (const w of this.#roomWaiters.splice(0)) w();
      try {
        await this.#wal?.release(lsn);
      } catch (e) {
        this.#log.warn("releasing write-ahead log segments failed", { error: e });
      }
    }
    for (const w of this.#roomWaiters.splice(0)) w();
  }

  /**
   * Resolves once lmdb holds every transaction committed before the call (at the latest
   * after the next checkpoint); rejects if that checkpoint failed.
   */
  synced(): Promise<void> {
    const lsn = this.#wal?.lastLsn ?? this.#lastLsn;
    if (lsn <= this.#checkpointedLsn) return Promise.resolve();
    if (this.#failed !== null) return Promise.reject(this.#failed);
    if (this.#syncWaiters.length >= WAL_SYNC_WAITERS_MAX) {
      return Promise.reject(new KvError(`over ${WAL_SYNC_WAITERS_MAX} callers wait for synced()`));
    }
    // No timer of its own may be due: make sure a checkpoint is.
    this.#scheduleCheckpoint();
    return new Promise((resolve, reject) => this.#syncWaiters.push({ lsn, resolve, reject }));
  }

  /** Writes every committed record into lmdb now (tests, close). */
  async checkpoint(): Promise<void> {
    while (this.#pending.length > 0 && this.#failed === null) await this.#startCheckpoint();
    await this.#checkpointing;
  }

  stats(): {
    checkpointedLsn: number;
    checkpoints: number;
    overlayBytes: number;
    pendingRecords: number;
    wal: ReturnType<FileWal["stats"]> | null;
  } {
    return {
      checkpointedLsn: this.#checkpointedLsn,
      checkpoints: this.#checkpoints,
      overlayBytes: this.#overlayBytes,
      pendingRecords: this.#pending.length,
      wal: this.#wal?.stats() ?? null,
    };
  }

  async rekey(): Promise<void> {
    await this.checkpoint();
    await this.#inner.rekey();
  }

  async rebuild(): Promise<void> {
    await this.checkpoint();
    await this.#inner.rebuild();
  }

  settled(): Promise<void> {
    return this.#inner.settled();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (this.#failed === null) await this.checkpoint();
    } finally {
      if (this.#checkpointTimer !== null) clearTimeout(this.#checkpointTimer);
      await this.#checkpointing?.catch(() => {});
      await this.#wal?.close();
      await this.#inner.close();
    }
  }
}

function overlaySize(record: OverlayRecord): number {
  return record.key.length + (record.value?.length ?? 0) + OVERLAY_RECORD_OVERHEAD_BYTES;
}
