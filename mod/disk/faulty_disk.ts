// Disks for failure tests. SimDisk keeps a device in memory as a durable image plus the
// volatile bytes written since the last sync, so a crash loses exactly what a power cut
// would (FoundationDB's AsyncFileNonDurable). FaultyDisk wraps any Disk and makes chosen
// calls fail or chosen bytes rot (MinIO's naughty disk).

import { assert, type Prng } from "../base/mod.ts";
import {
  alignedStride,
  carveAligned,
  checkBatch,
  checkDeviceSize,
  closedError,
  type Disk,
  DISK_DIRECT_ALIGNMENT_BYTES,
  DiskError,
  type DiskErrorCode,
  type DiskOp,
  isDiskErrorCode,
} from "./device.ts";

/** A SimDisk holds two full images in memory; beyond this size use a FileDisk. */
export const SIM_DISK_SIZE_BYTES_MAX = 1 << 30;
/** Granularity of torn writes by default: the classic atomic sector. */
export const SIM_TEAR_SECTOR_BYTES_DEFAULT = 512;
/** Unsynced data is tracked in blocks of this size (sync and crash copy whole blocks). */
const SIM_DIRTY_BLOCK_BYTES = DISK_DIRECT_ALIGNMENT_BYTES;

export interface SimDiskOptions {
  sizeBytes: number;
  /** Name used in messages and as `path`. */
  path?: string;
  /** 1 (buffered, the default) or DISK_DIRECT_ALIGNMENT_BYTES to enforce O_DIRECT rules. */
  alignmentBytes?: number;
  /** Randomness for torn writes; crash({ tear: true }) needs it. */
  prng?: Prng;
  /** Torn writes keep a prefix of the last write cut at a multiple of this. */
  tearSectorBytes?: number;
}

export interface SimCrashOptions {
  /**
   * Keep a random prefix, cut at a sector boundary, of the last unsynced write, as a disk
   * that lost power in the middle of it would.
   */
  tear?: boolean;
}

export interface SimCrashReport {
  /** Dirty blocks whose unsynced contents were lost (before any torn prefix is kept). */
  blocksLost: number;
  /** Bytes of the last unsynced write that reached the media anyway (0 if not torn). */
  tornBytesKept: number;
}

/** The medium: what a crash keeps, what it loses, and which handle has it open. */
class SimMedia {
  readonly durable: Uint8Array;
  readonly volatile: Uint8Array;
  readonly #dirtyMap: Uint8Array;
  #dirtyList: number[] = [];
  /** The most recent write not yet synced: the one a crash may tear. */
  lastWrite: { offsetBytes: number; lengthBytes: number } | null = null;
  current: SimDisk | null = null;

  constructor(sizeBytes: number) {
    this.durable = new Uint8Array(sizeBytes);
    this.volatile = new Uint8Array(sizeBytes);
    this.#dirtyMap = new Uint8Array(sizeBytes / SIM_DIRTY_BLOCK_BYTES);
  }

  write(offsetBytes: number, data: Uint8Array): void {
    if (data.length === 0) return;
    this.volatile.set(data, offsetBytes);
    const first = Math.floor(offsetBytes / SIM_DIRTY_BLOCK_BYTES);
    const last = Math.floor((offsetBytes + data.length - 1) / SIM_DIRTY_BLOCK_BYTES);
    for (let block = first; block <= last; block++) {
      if (this.#dirtyMap[block] === 0) {
        this.#dirtyMap[block] = 1;
        this.#dirtyList.push(block);
      }
    }
    this.lastWrite = { offsetBytes, lengthBytes: data.length };
  }

  /** Copies dirty blocks from `from` to `to` and forgets them; returns how many. */
  #settle(from: Uint8Array, to: Uint8Array): number {
    const count = this.#dirtyList.length;
    for (const block of this.#dirtyList) {
      const start = block * SIM_DIRTY_BLOCK_BYTES;
      to.set(from.subarray(start, start + SIM_DIRTY_BLOCK_BYTES), start);
      this.#dirtyMap[block] = 0;
    }
    this.#dirtyList = [];
    this.lastWrite = null;
    return count;
  }

  sync(): void {
    this.#settle(this.volatile, this.durable);
  }

  crash(tear: boolean, prng: Prng | undefined, sectorBytes: number): SimCrashReport {
    let tornBytesKept = 0;
    const last = this.lastWrite;
    if (tear && last !== null) {
      assert(prng !== undefined, "crash({ tear: true }) needs a SimDisk created with a prng");
      // Cut points: the write's start, each sector boundary inside it, and its end.
      const start = last.offsetBytes;
      const end = start + last.lengthBytes;
      const firstBoundary = (Math.floor(start / sectorBytes) + 1) * sectorBytes;
      const boundaries = firstBoundary < end
        ? Math.floor((end - 1 - firstBoundary) / sectorBytes) + 1
        : 0;
      const cut = prng.nextInt(boundaries + 2);
      const keepEnd = cut === 0
        ? start
        : cut <= boundaries
        ? firstBoundary + (cut - 1) * sectorBytes
        : end;
      this.durable.set(this.volatile.subarray(start, keepEnd), start);
      tornBytesKept = keepEnd - start;
    }
    const blocksLost = this.#settle(this.durable, this.volatile);
    return { blocksLost, tornBytesKept };
  }
}

/**
 * An in-memory Disk that loses unsynced writes on crash(). Reads see every write (the
 * volatile image); sync() makes them durable; crash() kills this handle, keeps the durable
 * image (plus, when tearing, a sector-cut prefix of the last unsynced write), and reopen()
 * gives a new handle on what survived.
 */
export class SimDisk implements Disk {
  readonly implementation = "sim";
  readonly reason = "in-memory simulated device";
  readonly path: string;
  readonly sizeBytes: number;
  readonly alignmentBytes: number;
  readonly direct: boolean;
  readonly #media: SimMedia;
  readonly #options: SimDiskOptions;
  #closed = false;
  readonly stats = { submits: 0, opsRead: 0, opsWritten: 0, syncs: 0, crashes: 0 };

  private constructor(media: SimMedia, options: SimDiskOptions) {
    this.#media = media;
    this.#options = options;
    this.path = options.path ?? "sim";
    this.sizeBytes = media.durable.length;
    this.alignmentBytes = options.alignmentBytes ?? 1;
    this.direct = this.alignmentBytes > 1;
    media.current = this;
  }

  /** A fresh zero-filled device. */
  static create(options: SimDiskOptions): SimDisk {
    const path = options?.path ?? "sim";
    const sizeBytes = checkDeviceSize(options?.sizeBytes, path);
    if (sizeBytes > SIM_DISK_SIZE_BYTES_MAX) {
      throw new DiskError(
        "EINVAL",
        `${path}: sizeBytes ${sizeBytes} exceeds SIM_DISK_SIZE_BYTES_MAX (${SIM_DISK_SIZE_BYTES_MAX})`,
      );
    }
    const alignment = options.alignmentBytes ?? 1;
    if (alignment !== 1 && alignment !== DISK_DIRECT_ALIGNMENT_BYTES) {
      throw new DiskError(
        "EINVAL",
        `${path}: alignmentBytes must be 1 or ${DISK_DIRECT_ALIGNMENT_BYTES}`,
      );
    }
    const sector = options.tearSectorBytes ?? SIM_TEAR_SECTOR_BYTES_DEFAULT;
    if (!Number.isInteger(sector) || sector < 1 || sector > sizeBytes) {
      throw new DiskError("EINVAL", `${path}: tearSectorBytes ${sector} out of range`);
    }
    return new SimDisk(new SimMedia(sizeBytes), { ...options });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A new handle on the same medium, after close() or crash(); EBUSY while one is open. */
  reopen(): SimDisk {
    if (this.#media.current !== null) {
      throw new DiskError("EBUSY", `${this.path} is already open as a Disk`);
    }
    return new SimDisk(this.#media, this.#options);
  }

  submit(ops: readonly DiskOp[]): Promise<number[]> {
    if (this.#closed) return Promise.reject(closedError(this.path, "submit()"));
    try {
      checkBatch(ops, {
        path: this.path,
        sizeBytes: this.sizeBytes,
        alignmentBytes: this.alignmentBytes,
        // No addresses without FFI: check the view's place in its slab instead.
        isAligned: (buffer) => buffer.byteOffset % this.alignmentBytes === 0,
      });
    } catch (e) {
      return Promise.reject(e);
    }
    this.stats.submits++;
    const media = this.#media;
    for (const op of ops) {
      if (op.kind === "read") {
        op.buffer.set(
          media.volatile.subarray(op.offsetBytes, op.offsetBytes + op.buffer.length),
        );
        this.stats.opsRead++;
      } else {
        media.write(op.offsetBytes, op.buffer);
        this.stats.opsWritten++;
      }
    }
    return Promise.resolve(ops.map((op) => op.buffer.length));
  }

  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError(this.path, "sync()"));
    this.#media.sync();
    this.stats.syncs++;
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      if (this.#media.current === this) this.#media.current = null;
    }
    return Promise.resolve();
  }

  /**
   * Power loss: the open handle (this one or a later reopen()) dies, and every write not
   * synced is lost except, with `tear`, a sector-cut prefix of the last one. Works after
   * close() too: closing never made anything durable.
   */
  crash(options: SimCrashOptions = {}): SimCrashReport {
    const media = this.#media;
    const open = media.current;
    if (open !== null) {
      open.#closed = true;
      media.current = null;
    }
    this.stats.crashes++;
    return media.crash(
      options.tear === true,
      this.#options.prng,
      this.#options.tearSectorBytes ?? SIM_TEAR_SECTOR_BYTES_DEFAULT,
    );
  }

  /** A copy of what would survive a crash now (for assertions). */
  readDurable(offsetBytes: number, lengthBytes: number): Uint8Array {
    assert(offsetBytes >= 0 && offsetBytes + lengthBytes <= this.sizeBytes, "range in device");
    return this.#media.durable.slice(offsetBytes, offsetBytes + lengthBytes);
  }

  /** Media corruption: XORs `mask` into the byte at `offsetBytes`, durable and volatile. */
  flipBits(offsetBytes: number, mask: number): void {
    checkFlip(offsetBytes, mask, this.sizeBytes, this.path);
    this.#media.durable[offsetBytes]! ^= mask;
    this.#media.volatile[offsetBytes]! ^= mask;
  }

  allocateAligned(count: number, sizeBytes: number): Uint8Array[] {
    const stride = alignedStride(count, sizeBytes, this.alignmentBytes);
    return carveAligned(new Uint8Array(count * stride), 0, stride, count, sizeBytes);
  }
}

function checkFlip(offsetBytes: number, mask: number, sizeBytes: number, path: string): void {
  if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || offsetBytes >= sizeBytes) {
    throw new DiskError("EINVAL", `${path}: bit flip offset ${offsetBytes} outside the device`);
  }
  if (!Number.isInteger(mask) || mask < 1 || mask > 0xff) {
    throw new DiskError("EINVAL", `${path}: bit flip mask ${mask} must be 1..255`);
  }
}

/** One call a FaultyDisk saw: its 1-based number among submit() and sync() calls. */
export interface DiskCall {
  number: number;
  kind: "submit" | "sync";
  /** The batch of a submit(); empty for sync(). */
  ops: readonly DiskOp[];
}

export interface FailOptions {
  /**
   * Perform the call on the wrapped disk before failing it, as a device that wrote (some of)
   * the data and still reported an error. Default false: nothing is done.
   */
  applied?: boolean;
  /** Calls to fail before the rule retires; default unlimited for failWhen(), 1 for failCall(). */
  times?: number;
}

interface FailRule {
  match: (call: DiskCall) => boolean;
  code: DiskErrorCode;
  applied: boolean;
  remaining: number;
}

interface FlipRule {
  offsetBytes: number;
  mask: number;
  remaining: number;
}

/**
 * Wraps a Disk and injects faults: failed calls with a chosen errno, bits flipped in what
 * reads return, and bits flipped in the data at rest. Calls are numbered from 1 across
 * submit() and sync(); bad input is refused (EINVAL) before it is counted. Like every Disk,
 * a failed sync() (injected or not) leaves the disk failed.
 */
export class FaultyDisk implements Disk {
  readonly inner: Disk;
  readonly #fails: FailRule[] = [];
  readonly #flips: FlipRule[] = [];
  #calls = 0;
  #injected = 0;
  #failed: DiskError | null = null;

  constructor(inner: Disk) {
    this.inner = inner;
  }

  get implementation(): string {
    return `faulty(${this.inner.implementation})`;
  }
  get reason(): string {
    return this.inner.reason;
  }
  get path(): string {
    return this.inner.path;
  }
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get alignmentBytes(): number {
    return this.inner.alignmentBytes;
  }
  get direct(): boolean {
    return this.inner.direct;
  }
  get closed(): boolean {
    return this.inner.closed;
  }
  /** submit() and sync() calls counted so far. */
  get calls(): number {
    return this.#calls;
  }
  /** Failures injected so far. */
  get injected(): number {
    return this.#injected;
  }

  /** Fails call number `callNumber` (1-based, counting submit() and sync()). */
  failCall(callNumber: number, code: DiskErrorCode = "EIO", options: FailOptions = {}): this {
    assert(Number.isInteger(callNumber) && callNumber >= 1, "call numbers start at 1");
    return this.failWhen((call) => call.number === callNumber, code, { times: 1, ...options });
  }

  /** Fails every call `match` accepts, `times` times (default: for ever). */
  failWhen(
    match: (call: DiskCall) => boolean,
    code: DiskErrorCode = "EIO",
    options: FailOptions = {},
  ): this {
    assert(isDiskErrorCode(code), `unknown disk error code ${code}`);
    const times = options.times ?? Infinity;
    assert(times >= 1, "a fault fires at least once");
    this.#fails.push({ match, code, applied: options.applied ?? false, remaining: times });
    return this;
  }

  /** Reads that cover `offsetBytes` return that byte XOR `mask` (the device is unchanged). */
  flipOnRead(offsetBytes: number, mask = 0x01, options: { times?: number } = {}): this {
    checkFlip(offsetBytes, mask, this.sizeBytes, this.path);
    this.#flips.push({ offsetBytes, mask, remaining: options.times ?? Infinity });
    return this;
  }

  /**
   * Corrupts the stored byte at `offsetBytes` (XOR `mask`), as bit rot would: in both images
   * of a SimDisk, otherwise by a read-modify-write of its aligned block on the wrapped disk.
   * Not counted as a call and never failed.
   */
  async flipAtRest(offsetBytes: number, mask = 0x01): Promise<void> {
    checkFlip(offsetBytes, mask, this.sizeBytes, this.path);
    const inner = this.inner;
    if (inner instanceof FaultyDisk) return await inner.flipAtRest(offsetBytes, mask);
    if (inner instanceof SimDisk) return inner.flipBits(offsetBytes, mask);
    const block = inner.alignmentBytes;
    const start = Math.floor(offsetBytes / block) * block;
    const [buffer] = inner.allocateAligned(1, block);
    await inner.submit([{ kind: "read", offsetBytes: start, buffer: buffer! }]);
    buffer![offsetBytes - start]! ^= mask;
    await inner.submit([{ kind: "write", offsetBytes: start, buffer: buffer! }]);
  }

  /** Removes every fault rule (counters keep counting). */
  clearFaults(): this {
    this.#fails.length = 0;
    this.#flips.length = 0;
    return this;
  }

  async submit(ops: readonly DiskOp[]): Promise<number[]> {
    if (this.inner.closed) throw closedError(this.path, "submit()");
    if (this.#failed !== null) throw this.#failed;
    checkBatch(ops, this);
    const call: DiskCall = { number: ++this.#calls, kind: "submit", ops };
    const rule = this.#take(call);
    if (rule !== null && !rule.applied) throw this.#inject(call, rule);
    const bytes = await this.inner.submit(ops);
    if (rule !== null) throw this.#inject(call, rule);
    if (this.#flips.length > 0) this.#flipReads(ops);
    return bytes;
  }

  async sync(): Promise<void> {
    if (this.inner.closed) throw closedError(this.path, "sync()");
    if (this.#failed !== null) throw this.#failed;
    const call: DiskCall = { number: ++this.#calls, kind: "sync", ops: [] };
    const rule = this.#take(call);
    if (rule !== null && rule.applied) await this.inner.sync();
    if (rule !== null) {
      const error = this.#inject(call, rule);
      this.#failed = new DiskError(
        error.code,
        `${this.path} failed: ${error.message}; close it and recover from redundancy`,
      );
      throw error;
    }
    await this.inner.sync();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  allocateAligned(count: number, sizeBytes: number): Uint8Array[] {
    return this.inner.allocateAligned(count, sizeBytes);
  }

  #take(call: DiskCall): FailRule | null {
    for (let i = 0; i < this.#fails.length; i++) {
      const rule = this.#fails[i]!;
      if (!rule.match(call)) continue;
      if (--rule.remaining <= 0) this.#fails.splice(i, 1);
      return rule;
    }
    return null;
  }

  #inject(call: DiskCall, rule: FailRule): DiskError {
    this.#injected++;
    return new DiskError(
      rule.code,
      `${this.path}: injected fault on call ${call.number} (${call.kind}` +
        `${call.kind === "submit" ? ` of ${call.ops.length} ops` : ""}` +
        `${rule.applied ? ", performed" : ", not performed"})`,
      call.kind === "submit" && call.ops.length > 0 ? { opIndex: 0 } : {},
    );
  }

  #flipReads(ops: readonly DiskOp[]): void {
    for (const op of ops) {
      if (op.kind !== "read") continue;
      for (let i = 0; i < this.#flips.length; i++) {
        const flip = this.#flips[i]!;
        const at = flip.offsetBytes - op.offsetBytes;
        if (at < 0 || at >= op.buffer.length) continue;
        op.buffer[at]! ^= flip.mask;
        if (--flip.remaining <= 0) this.#flips.splice(i--, 1);
      }
    }
  }
}
