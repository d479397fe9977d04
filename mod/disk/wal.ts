// A write-ahead log in segment files: records appended in order, each with a CRC-32C and a
// log sequence number (LSN), made durable together by one fdatasync per group commit. It is
// what a write waits for; the indexes behind it (lmdb) are checkpointed from it in the
// background and release the segments they no longer need (see wal_kv.ts).
//
// Layout of a directory:
//
//   <first lsn, 16 hex>.wal    a segment: header, then records, then zeros to its size
//   next.prealloc              the next segment, already written with zeros and synced
//
// A segment is preallocated before it is used: its size is set up front, so an append never
// changes the file's size (fdatasync() then has no inode size to write). By default its
// blocks are allocated as records land ("size"), so the log occupies on disk only what it
// holds; "zeros" writes and syncs the whole segment first, so appends overwrite allocated
// blocks in place (measured here no faster within the noise, at 2 x segment bytes at rest).
// Once a checkpoint holds every record of the segment being written and it has taken
// WAL_ROLL_CHECKPOINTED_BYTES, the next append starts a new one, so that the checkpointed
// one can be released: the log stays near what is not yet checkpointed.
//
// Segment header (32 bytes, big-endian): magic "KSKWAL01" | first lsn u64 | size u64 |
// crc u32 (over the 24 bytes before it) | zero u32.
// Record (8-byte aligned): body length u32 | crc u32 | lsn u64 | batch lsn u64 | body, the
// CRC over length, lsn, batch lsn and body; `batch lsn` is the first LSN of the group
// commit the record was written with. A zero length ends a segment's records.
//
// Recovery reads the segments in order and stops at the first record that is not whole and
// valid (a torn tail: the batch being written when the process or the machine stopped).
// A valid record after it from a later batch means a record already acknowledged was
// damaged: the log refuses to open (WalCorruptError) rather than lose it. The next append
// after a torn tail starts a fresh segment, so the damaged bytes are never overwritten in
// place and never read again.

import { assert, crc32c } from "../base/mod.ts";

/**
 * Bytes of a new segment (a record larger than this gets a segment of its own size). A log
 * holds at least one segment and one preallocated: 32 MiB of a node's disk at rest.
 */
export const WAL_SEGMENT_BYTES_DEFAULT: number = 16 << 20;
export const WAL_SEGMENT_BYTES_MIN: number = 64 << 10;
/** The largest record body (a Raft snapshot travels as one). */
export const WAL_RECORD_BYTES_MAX: number = 1 << 30;
/** Bytes of records queued for the next group commit before append() waits. */
export const WAL_QUEUED_BYTES_MAX: number = 64 << 20;
/** Records written by one group commit at most (one write, one fdatasync). */
export const WAL_BATCH_RECORDS_MAX = 65_536;
/** Segments a log may hold at once (released segments do not count). */
export const WAL_SEGMENTS_MAX = 4096;
/**
 * How long a group commit that failed for want of space (ENOSPC, quota) is tried again, in
 * a fresh segment each time, before the log stops; and how often.
 */
export const WAL_SPACE_WAIT_MS = 30_000;
export const WAL_SPACE_RETRY_MS = 1_000;
/** Bytes a fully checkpointed segment must hold before appends move on to release it. */
export const WAL_ROLL_CHECKPOINTED_BYTES: number = 64 << 10;
/** Zeros written per call while a segment is preallocated. */
const PREALLOC_WRITE_BYTES = 1 << 20;

const MAGIC = new TextEncoder().encode("KSKWAL01");
const SEGMENT_HEADER_BYTES = 32;
const RECORD_HEADER_BYTES = 24;
const SEGMENT_SUFFIX = ".wal";
const PREALLOC_NAME = "next.prealloc";
/** How far past a torn record recovery looks for records of later batches. */
const LSN_LOOKAHEAD_MAX = 1 << 24;

/** The log holds damage that would lose acknowledged records; it must not be opened as is. */
export class WalCorruptError extends Error {
  override name = "WalCorruptError";
}

export interface WalRecord {
  lsn: number;
  body: Uint8Array;
}

export interface WalOptions {
  /** Directory of the segments (created if missing). */
  dir: string;
  segmentBytes?: number;
  /** How segments are preallocated (see the top of this file); default "size". */
  preallocate?: "size" | "zeros";
  /** Told before a group commit that met a full filesystem is tried again (callers log it). */
  onSpaceRetry?: (attempt: number, error: Error) => void;
  /** Wait between those tries (default WAL_SPACE_RETRY_MS; tests shorten it). */
  spaceRetryMs?: number;
  /** Told once when recovery cut a torn tail (callers log it). */
  onTornTail?: (info: { segment: string; lsn: number; offset: number }) => void;
}

export interface WalStats {
  /** The last LSN appended (durable or not) and the last one known durable. */
  lastLsn: number;
  durableLsn: number;
  segments: number;
  /** Group commits (writes + fdatasync) and records written since open. */
  syncs: number;
  records: number;
  bytesOnDisk: number;
}

interface Segment {
  name: string;
  firstLsn: number;
  size: number;
  /** The last LSN in it (firstLsn - 1 when empty). */
  lastLsn: number;
}

interface Queued {
  lsn: number;
  body: Uint8Array;
  resolve: () => void;
  reject: (e: Error) => void;
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

function writeU64(view: DataView, at: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, `u64 ${value}`);
  view.setUint32(at, Math.floor(value / 0x1_0000_0000));
  view.setUint32(at + 4, value >>> 0);
}

function readU64(view: DataView, at: number): number {
  return view.getUint32(at) * 0x1_0000_0000 + view.getUint32(at + 4);
}

function segmentName(firstLsn: number): string {
  return firstLsn.toString(16).padStart(16, "0") + SEGMENT_SUFFIX;
}

function recordCrc(bytes: Uint8Array, at: number, length: number): number {
  // length u32 | (crc skipped) | lsn u64 | batch u64 | body
  return crc32c(
    bytes.subarray(at + 8, at + RECORD_HEADER_BYTES + length),
    crc32c(bytes.subarray(at, at + 4)),
  );
}

/** Encodes `records` (consecutive LSNs from one batch) into `out` at `at`; returns the end. */
function encodeRecords(out: Uint8Array, at: number, records: Queued[], batchLsn: number): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (const r of records) {
    view.setUint32(at, r.body.length);
    writeU64(view, at + 8, r.lsn);
    writeU64(view, at + 16, batchLsn);
    out.set(r.body, at + RECORD_HEADER_BYTES);
    view.setUint32(at + 4, recordCrc(out, at, r.body.length));
    at += pad8(RECORD_HEADER_BYTES + r.body.length);
  }
  return at;
}

type Parsed =
  | { kind: "record"; lsn: number; batchLsn: number; body: Uint8Array; next: number }
  | { kind: "end" }
  | { kind: "bad" };

function parseRecord(bytes: Uint8Array, at: number): Parsed {
  if (at + RECORD_HEADER_BYTES > bytes.length) return { kind: "end" };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getUint32(at);
  const lsn = readU64(view, at + 8);
  if (length === 0 && view.getUint32(at + 4) === 0 && lsn === 0) return { kind: "end" };
  if (length > WAL_RECORD_BYTES_MAX || at + RECORD_HEADER_BYTES + length > bytes.length) {
    return { kind: "bad" };
  }
  if (view.getUint32(at + 4) !== recordCrc(bytes, at, length)) return { kind: "bad" };
  const batchLsn = readU64(view, at + 16);
  if (!Number.isSafeInteger(lsn) || batchLsn > lsn) return { kind: "bad" };
  return {
    kind: "record",
    lsn,
    batchLsn,
    body: bytes.slice(at + RECORD_HEADER_BYTES, at + RECORD_HEADER_BYTES + length),
    next: at + pad8(RECORD_HEADER_BYTES + length),
  };
}

function encodeSegmentHeader(firstLsn: number, size: number): Uint8Array {
  const header = new Uint8Array(SEGMENT_HEADER_BYTES);
  const view = new DataView(header.buffer);
  header.set(MAGIC, 0);
  writeU64(view, 8, firstLsn);
  writeU64(view, 16, size);
  view.setUint32(24, crc32c(header.subarray(0, 24)));
  return header;
}

function parseSegmentHeader(bytes: Uint8Array): { firstLsn: number; size: number } | null {
  if (bytes.length < SEGMENT_HEADER_BYTES) return null;
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(24) !== crc32c(bytes.subarray(0, 24))) return null;
  return { firstLsn: readU64(view, 8), size: readU64(view, 16) };
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

function syncDir(dir: string): void {
  const handle = Deno.openSync(dir, { read: true });
  try {
    handle.syncSync();
  } finally {
    handle.close();
  }
}

/**
 * The log. open() recovers it and hands back the records it holds (after `fromLsn`); append()
 * queues a record and resolves once it is durable; release() drops segments wholly behind a
 * checkpoint.
 */
export class FileWal {
  readonly dir: string;
  readonly #segmentBytes: number;
  readonly #preallocate: "size" | "zeros";
  #segments: Segment[] = [];
  #file: Deno.FsFile | null = null;
  /** Write offset in the current segment. */
  #offset = 0;
  /** Start a fresh segment before the next write (after recovery cut a torn tail). */
  #rollBeforeWrite = false;
  #lastLsn = 0;
  #durableLsn = 0;
  #queue: Queued[] = [];
  #queuedBytes = 0;
  #roomWaiters: (() => void)[] = [];
  #writing: Promise<void> | null = null;
  #prealloc: Promise<void> | null = null;
  #failed: Error | null = null;
  /** Failures the next writes meet (tests; see injectWalWriteFailure()). */
  #injected: Error[] = [];
  #spaceRetryMs = WAL_SPACE_RETRY_MS;
  #onSpaceRetry: ((attempt: number, error: Error) => void) | undefined;
  #closed = false;
  #syncs = 0;
  #records = 0;

  private constructor(dir: string, segmentBytes: number, preallocate: "size" | "zeros") {
    this.dir = dir;
    this.#segmentBytes = segmentBytes;
    this.#preallocate = preallocate;
  }

  /**
   * Opens (creating) the log in `options.dir` and returns it with every valid record whose
   * LSN is above `fromLsn`, in order.
   */
  static async open(
    options: WalOptions & { fromLsn?: number },
  ): Promise<{ wal: FileWal; records: WalRecord[] }> {
    const segmentBytes = options.segmentBytes ?? WAL_SEGMENT_BYTES_DEFAULT;
    assert(
      Number.isSafeInteger(segmentBytes) && segmentBytes >= WAL_SEGMENT_BYTES_MIN &&
        segmentBytes % 4096 === 0,
      `WAL segment size ${segmentBytes} must be a multiple of 4096, at least ${WAL_SEGMENT_BYTES_MIN}`,
    );
    const dir = options.dir.replace(/\/+$/, "");
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const wal = new FileWal(dir, segmentBytes, options.preallocate ?? "size");
    wal.#onSpaceRetry = options.onSpaceRetry;
    if (options.spaceRetryMs !== undefined) wal.#spaceRetryMs = options.spaceRetryMs;
    const records = await wal.#recover(options.fromLsn ?? 0, options.onTornTail);
    return { wal, records };
  }

  async #recover(
    fromLsn: number,
    onTornTail: WalOptions["onTornTail"],
  ): Promise<WalRecord[]> {
    const names: string[] = [];
    for await (const e of Deno.readDir(this.dir)) {
      if (e.isFile && /^[0-9a-f]{16}\.wal$/.test(e.name)) names.push(e.name);
    }
    names.sort();
    assert(names.length <= WAL_SEGMENTS_MAX, `WAL ${this.dir} holds over ${WAL_SEGMENTS_MAX}`);
    const out: WalRecord[] = [];
    let expected = -1; // the next LSN; -1 until the first segment names it
    for (const [i, name] of names.entries()) {
      const bytes = await Deno.readFile(`${this.dir}/${name}`);
      const header = parseSegmentHeader(bytes);
      const last = i === names.length - 1;
      if (header === null) {
        // A segment is named only after its header is durable: this is damage.
        throw new WalCorruptError(`WAL segment ${this.dir}/${name} has a damaged header`);
      }
      if (name !== segmentName(header.firstLsn)) {
        throw new WalCorruptError(`WAL segment ${name} names first LSN ${header.firstLsn}`);
      }
      const previous = this.#segments[this.#segments.length - 1];
      if (
        previous !== undefined && header.firstLsn < expected &&
        header.firstLsn > previous.firstLsn
      ) {
        // A group commit that failed (a full disk) was written again in this fresh segment:
        // the copy here supersedes whatever of it reached the one before.
        const from = out.findIndex((r) => r.lsn >= header.firstLsn);
        if (from >= 0) out.splice(from);
        previous.lastLsn = header.firstLsn - 1;
        expected = header.firstLsn;
      }
      if (expected !== -1 && header.firstLsn !== expected) {
        throw new WalCorruptError(
          `WAL segment ${name} starts at LSN ${header.firstLsn}, expected ${expected}: ` +
            `records are missing`,
        );
      }
      expected = header.firstLsn;
      let at = SEGMENT_HEADER_BYTES;
      for (;;) {
        const parsed = parseRecord(bytes, at);
        if (parsed.kind === "record" && parsed.lsn === expected) {
          if (parsed.lsn > fromLsn) out.push({ lsn: parsed.lsn, body: parsed.body });
          expected++;
          at = parsed.next;
          continue;
        }
        // Not a whole record where the next one belongs: the end, or a torn tail, unless a
        // record of a later batch follows (then this one was acknowledged and is damaged).
        const later = this.#laterBatch(bytes, at, expected);
        if (later !== null) {
          throw new WalCorruptError(
            `WAL segment ${this.dir}/${name}: the record of LSN ${expected} at offset ${at} is ` +
              `damaged, yet LSN ${later} of a later group commit follows it`,
          );
        }
        // Past the last segment's end, or a tail an earlier run cut and went on after in the
        // next segment (whose first LSN was checked above).
        if (parsed.kind === "end" || !last) break;
        onTornTail?.({ segment: name, lsn: expected, offset: at });
        this.#rollBeforeWrite = true;
        break;
      }
      this.#segments.push({
        name,
        firstLsn: header.firstLsn,
        size: bytes.length,
        lastLsn: expected - 1,
      });
      if (last) this.#offset = at;
    }
    this.#lastLsn = Math.max(expected === -1 ? 0 : expected - 1, fromLsn);
    this.#durableLsn = this.#lastLsn;
    if (this.#segments.length > 0) {
      const tail = this.#segments[this.#segments.length - 1]!;
      if (tail.lastLsn < fromLsn) {
        // The checkpoint holds everything here: the segments go, the next starts after it.
        for (const seg of this.#segments.splice(0)) await Deno.remove(`${this.dir}/${seg.name}`);
        syncDir(this.dir);
        this.#rollBeforeWrite = true;
      } else {
        this.#file = await Deno.open(`${this.dir}/${tail.name}`, { read: true, write: true });
        await this.#file.seek(this.#offset, Deno.SeekMode.Start);
      }
    }
    return out;
  }

  /** The LSN of a valid record of a later batch than `lsn` found past `at`, or null. */
  #laterBatch(bytes: Uint8Array, at: number, lsn: number): number | null {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let p = pad8(at); p + RECORD_HEADER_BYTES <= bytes.length; p += 8) {
      const candidate = readU64(view, p + 8);
      if (candidate <= lsn || candidate - lsn > LSN_LOOKAHEAD_MAX) continue;
      const parsed = parseRecord(bytes, p);
      if (parsed.kind === "record" && parsed.batchLsn > lsn) return parsed.lsn;
    }
    return null;
  }

  get lastLsn(): number {
    return this.#lastLsn;
  }

  get durableLsn(): number {
    return this.#durableLsn;
  }

  stats(): WalStats {
    return {
      lastLsn: this.#lastLsn,
      durableLsn: this.#durableLsn,
      segments: this.#segments.length,
      syncs: this.#syncs,
      records: this.#records,
      bytesOnDisk: this.#segments.reduce((t, s) => t + s.size, 0),
    };
  }

  /**
   * Queues `body` as the next record; its LSN is returned at once, and `durable` resolves
   * once it (and everything before it) is on stable storage. Records queued in the same
   * event turn, and while a group commit is in flight, share the next one.
   */
  append(body: Uint8Array): { lsn: number; durable: Promise<void> } {
    this.#checkUsable();
    assert(body.length <= WAL_RECORD_BYTES_MAX, `WAL record of ${body.length} bytes is too big`);
    const lsn = ++this.#lastLsn;
    const durable = new Promise<void>((resolve, reject) => {
      this.#queue.push({ lsn, body, resolve, reject });
    });
    this.#queuedBytes += body.length;
    this.#kick();
    return { lsn, durable };
  }

  /** Whether append() may queue more now (WAL_QUEUED_BYTES_MAX). */
  hasRoom(): boolean {
    return this.#queuedBytes < WAL_QUEUED_BYTES_MAX;
  }

  /** Resolves when the queue has room for more records (WAL_QUEUED_BYTES_MAX). */
  async room(): Promise<void> {
    while (this.#queuedBytes >= WAL_QUEUED_BYTES_MAX && this.#failed === null) {
      await new Promise<void>((r) => this.#roomWaiters.push(r));
    }
    this.#checkUsable();
  }

  #checkUsable(): void {
    assert(!this.#closed, `WAL ${this.dir} is closed`);
    if (this.#failed !== null) {
      throw new WalCorruptError(
        `WAL ${this.dir}: an earlier write failed (${this.#failed.message}); reopen it`,
      );
    }
  }

  #kick(): void {
    if (this.#writing !== null) return;
    // A microtask later, so that records appended in the same turn share the group commit.
    this.#writing = Promise.resolve().then(() => this.#writeLoop()).finally(() => {
      this.#writing = null;
      if (this.#queue.length > 0 && this.#failed === null) this.#kick();
    });
  }

  async #writeLoop(): Promise<void> {
    while (this.#queue.length > 0 && this.#failed === null) {
      const batch = this.#queue.splice(0, WAL_BATCH_RECORDS_MAX);
      const bytes = batch.reduce((t, r) => t + pad8(RECORD_HEADER_BYTES + r.body.length), 0);
      try {
        await this.#writeRetrying(batch, bytes);
      } catch (e) {
        // The durable state of this batch is unknown: nothing more is written, the owner must
        // reopen (recovery finds what made it).
        this.#failed = e as Error;
        for (const r of [...batch, ...this.#queue.splice(0)]) r.reject(e as Error);
        for (const w of this.#roomWaiters.splice(0)) w();
        return;
      }
      this.#queuedBytes -= batch.reduce((t, r) => t + r.body.length, 0);
      this.#durableLsn = batch[batch.length - 1]!.lsn;
      this.#syncs++;
      this.#records += batch.length;
      for (const r of batch) r.resolve();
      if (this.#queuedBytes < WAL_QUEUED_BYTES_MAX) {
        for (const w of this.#roomWaiters.splice(0)) w();
      }
    }
  }

  /**
   * #writeBatch(), tried again in a fresh segment while the filesystem is full (up to
   * WAL_SPACE_WAIT_MS): a failed write or sync leaves the bytes at the tail unknown, so they
   * are never trusted or overwritten; recovery takes the batch from the later segment.
   */
  async #writeRetrying(batch: Queued[], bytes: number): Promise<void> {
    const deadline = performance.now() + WAL_SPACE_WAIT_MS;
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#writeBatch(batch, bytes);
      } catch (e) {
        if (!isSpaceError(e) || performance.now() >= deadline || this.#closed) throw e;
        this.#onSpaceRetry?.(attempt, e as Error);
        this.#rollBeforeWrite = true;
        await new Promise((r) => setTimeout(r, this.#spaceRetryMs));
      }
    }
  }

  async #writeBatch(batch: Queued[], bytes: number): Promise<void> {
    const tail = this.#segments[this.#segments.length - 1];
    if (
      this.#file === null || this.#rollBeforeWrite || tail === undefined ||
      this.#offset + bytes > tail.size
    ) {
      await this.#roll(batch[0]!.lsn, bytes);
    }
    const buffer = new Uint8Array(bytes);
    encodeRecords(buffer, 0, batch, batch[0]!.lsn);
    // The write only copies into the page cache: done in place, it saves the commit one trip
    // through the runtime's blocking thread pool; the fdatasync is the wait that remains.
    for (let at = 0; at < buffer.length;) at += this.#file!.writeSync(buffer.subarray(at));
    // An injected failure comes where a full disk shows with delayed allocation: the bytes
    // are written, the sync fails.
    if (this.#injected.length > 0) throw this.#injected.shift()!;
    await this.#file!.syncData();
    this.#offset += bytes;
    this.#segments[this.#segments.length - 1]!.lastLsn = batch[batch.length - 1]!.lsn;
  }

  /** Starts a new segment at `firstLsn` that holds at least `bytes` of records. */
  async #roll(firstLsn: number, bytes: number): Promise<void> {
    assert(this.#segments.length < WAL_SEGMENTS_MAX, `WAL ${this.dir}: too many segments`);
    const needed = SEGMENT_HEADER_BYTES + bytes + RECORD_HEADER_BYTES;
    const size = Math.max(this.#segmentBytes, Math.ceil(needed / 4096) * 4096);
    const prealloc = `${this.dir}/${PREALLOC_NAME}`;
    if (this.#prealloc !== null) await this.#prealloc.catch(() => {});
    this.#prealloc = null;
    let stat: Deno.FileInfo | null = null;
    try {
      stat = await Deno.stat(prealloc);
    } catch { /* none prepared */ }
    if (stat === null || stat.size !== size) await preallocate(prealloc, size, this.#preallocate);
    const name = segmentName(firstLsn);
    const file = await Deno.open(prealloc, { read: true, write: true });
    try {
      await writeAll(file, encodeSegmentHeader(firstLsn, size));
      await file.syncData();
    } catch (e) {
      file.close();
      throw e;
    }
    await Deno.rename(prealloc, `${this.dir}/${name}`);
    syncDir(this.dir);
    this.#file?.close();
    this.#file = file;
    this.#offset = SEGMENT_HEADER_BYTES;
    this.#rollBeforeWrite = false;
    // A segment rolled to again before it took a record (a retried commit) was just replaced.
    if (this.#segments[this.#segments.length - 1]?.name === name) this.#segments.pop();
    this.#segments.push({ name, firstLsn, size, lastLsn: firstLsn - 1 });
    // The next one is prepared off the write path.
    this.#prealloc = preallocate(prealloc, this.#segmentBytes, this.#preallocate).catch(() => {});
  }

  /**
   * Drops the segments whose records all have LSN <= `lsn` (a checkpoint holds them). The
   * segment being written is kept.
   */
  async release(lsn: number): Promise<number> {
    let released = 0;
    while (this.#segments.length > 1 && this.#segments[0]!.lastLsn <= lsn) {
      // The next segment starting at or below lsn + 1 shows this one is wholly covered.
      const next = this.#segments[1]!;
      if (next.firstLsn - 1 > lsn) break;
      const seg = this.#segments.shift()!;
      await Deno.remove(`${this.dir}/${seg.name}`);
      released++;
    }
    if (released > 0) syncDir(this.dir);
    const tail = this.#segments[this.#segments.length - 1];
    if (
      tail !== undefined && tail.lastLsn <= lsn &&
      this.#offset - SEGMENT_HEADER_BYTES >= WAL_ROLL_CHECKPOINTED_BYTES
    ) {
      this.#rollBeforeWrite = true;
    }
    return released;
  }

  /** See injectWalWriteFailure(). */
  injectFailures(errors: Error[]): void {
    this.#injected.push(...errors);
  }

  /** Waits for queued records to be durable, then closes. */
  async close(): Promise<void> {
    if (this.#closed) return;
    while (this.#writing !== null) await this.#writing.catch(() => {});
    await this.#prealloc?.catch(() => {});
    this.#closed = true;
    this.#file?.close();
    this.#file = null;
  }
}

/** Whether a failed write or sync failed for want of space. */
function isSpaceError(e: unknown): boolean {
  const message = e instanceof Error ? e.message : String(e);
  return /No space left|ENOSPC|os error 28|Disk quota exceeded|EDQUOT|os error 122/.test(message);
}

/**
 * Fault injection for tests: the next `errors.length` group commits of `wal` fail with these
 * errors after their bytes are written and before the sync, through the same retry path as
 * real failures.
 */
export function injectWalWriteFailure(wal: FileWal, errors: Error[]): void {
  wal.injectFailures(errors);
}

/** Makes `path` a zero-filled file of `size` bytes, synced (see the top of this file). */
async function preallocate(path: string, size: number, mode: "size" | "zeros"): Promise<void> {
  const tmp = `${path}.tmp`;
  const file = await Deno.open(tmp, { create: true, write: true, truncate: true, mode: 0o600 });
  try {
    if (mode === "size") {
      await file.truncate(size);
    } else {
      const zeros = new Uint8Array(Math.min(PREALLOC_WRITE_BYTES, size));
      for (let at = 0; at < size; at += zeros.length) {
        await writeAll(file, zeros.subarray(0, Math.min(zeros.length, size - at)));
      }
    }
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(tmp, path);
}
