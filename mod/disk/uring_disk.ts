// UringDisk: the Disk port on io_uring through ffi/uring. One ring per disk; the disks
// opened on one shim share a scheduler that drives every disk with queued work in ONE
// nonblocking FFI call (kiseki_uring_run: all rings at once, each ring's fdatasync issued
// as soon as its writes are done). Work that arrives while a disk is in a call is merged
// into that disk's next call, so the FFI hop (tens of microseconds) is paid once per round
// for all devices of a pool rather than once per device and operation.

import {
  URING_EBROKEN,
  URING_ENOTRUN,
  URING_EWEDGED,
  URING_INFO_DIRECT,
  URING_INFO_DIRECT_ERRNO,
  URING_INFO_ERRNO,
  URING_INFO_SLOTS,
  URING_INFO_STAGE,
  URING_OP_ADDRESS,
  URING_OP_KIND,
  URING_OP_LENGTH,
  URING_OP_OFFSET,
  URING_OP_WORDS,
  URING_PLAN_COUNT,
  URING_PLAN_DESC,
  URING_PLAN_FLAGS,
  URING_PLAN_RESULTS,
  URING_PLAN_RING,
  URING_PLAN_SYNC,
  URING_PLAN_WORDS,
  URING_READ,
  URING_SHIM_BATCH_OPS_MAX,
  URING_SHIM_DEPTH_MAX,
  URING_SHIM_PLAN_ENTRIES_MAX,
  URING_STAGE_QUEUE_INIT,
  URING_STAGE_TEXT,
  URING_WANT_DIRECT,
  URING_WRITE,
  type UringRing,
  type UringShim,
} from "../../ffi/uring/bindings.ts";
import { assert } from "../base/mod.ts";
import { counter } from "../obs/mod.ts";
import {
  alignedStride,
  carveAligned,
  checkBatch,
  checkDeviceSize,
  checkOpenOptions,
  checkPath,
  closedError,
  type Disk,
  DISK_BATCH_OPS_MAX,
  DISK_DIRECT_ALIGNMENT_BYTES,
  DISK_ERRNO,
  DISK_QUEUED_OPS_MAX,
  DiskError,
  diskErrorFromErrno,
  type DiskOp,
  type DiskOpenOptions,
  queueFullError,
} from "./device.ts";
import { openDeviceFile } from "./file_disk.ts";

/** Ring entries by default: requests in flight at once per disk. */
export const URING_QUEUE_DEPTH_DEFAULT = 64;
/** Largest ring a disk may ask for (the shim's own maximum). */
export const URING_QUEUE_DEPTH_MAX = URING_SHIM_DEPTH_MAX;

assert(DISK_BATCH_OPS_MAX === URING_SHIM_BATCH_OPS_MAX, "batch limit matches the shim's");

export interface UringDiskOptions extends DiskOpenOptions {
  /** Ring entries: requests the kernel has in flight at once (1..URING_QUEUE_DEPTH_MAX). */
  queueDepth?: number;
}

/**
 * The kernel refused to set up a ring for this disk (io_uring_queue_init: ENOMEM under a
 * low RLIMIT_MEMLOCK, EPERM, ...): not a fault of the device, so callers may fall back to
 * FileDisk.
 */
export class UringSetupError extends DiskError {
  override name = "UringSetupError";
}

// Buffers of a call whose ring failed with requests still in flight: the kernel may write
// them at any time, so they are kept reachable for the life of the process.
const wedged: unknown[] = [];

// Base address of every ArrayBuffer seen, from the shim (Deno.UnsafePointer.of() needs
// unscoped --allow-ffi). Backing stores never move once an ArrayBuffer exists; weak keys
// bound the map by what the program still holds. Numbers, not BigInts: user-space
// addresses fit in 53 bits and BigInt arithmetic allocates.
const baseAddresses = new WeakMap<ArrayBufferLike, number>();
const TWO_POW_32 = 0x1_0000_0000;

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;
assert(LITTLE_ENDIAN, "the op descriptor is written for little-endian hosts");

function addressOf(shim: UringShim, view: Uint8Array): number {
  // Reading .buffer also moves a small on-heap typed array off the V8 heap, so the address
  // handed to the kernel cannot be moved by the garbage collector.
  const buffer = view.buffer;
  let base = baseAddresses.get(buffer);
  if (base === undefined) {
    const value = shim.symbols.kiseki_uring_address_of(new Uint8Array(buffer));
    assert(value !== 0n && value < 2n ** 53n, "buffer address out of range");
    base = Number(value);
    baseAddresses.set(buffer, base);
  }
  return base + view.byteOffset;
}

/** Writes `value` (< 2^53) into 64-bit slot `slot` of a descriptor seen as 32-bit words. */
function putWord(words: Uint32Array, slot: number, value: number): void {
  words[2 * slot] = value >>> 0;
  words[2 * slot + 1] = Math.floor(value / TWO_POW_32);
}

/** Why io_uring cannot be used by this process, or null when it can. */
export function probeUring(shim: UringShim): string | null {
  const rc = shim.symbols.kiseki_uring_probe();
  if (rc === 0) return null;
  const error = diskErrorFromErrno(-rc, "io_uring probe");
  const hint = rc === -DISK_ERRNO.EPERM
    ? " (kernel.io_uring_disabled or a seccomp filter forbids io_uring)"
    : rc === -DISK_ERRNO.ENOSYS
    ? " (kernel without io_uring)"
    : rc === -DISK_ERRNO.EOPNOTSUPP
    ? " (kernel lacks IORING_OP_READ, WRITE or FSYNC)"
    : "";
  return `io_uring unavailable: ${error.message}${hint}`;
}

/**
 * Called after an await with everything a nonblocking call read by address: the use after
 * resumption keeps the values live across the suspension.
 */
function keepAlive(..._values: unknown[]): void {}

interface SubmitJob {
  kind: "submit";
  ops: readonly DiskOp[];
  resolve: (bytes: number[]) => void;
  reject: (error: DiskError) => void;
}

interface SyncJob {
  kind: "sync";
  resolve: () => void;
  reject: (error: DiskError) => void;
}

type Job = SubmitJob | SyncJob;

const rings = new FinalizationRegistry<{ shim: UringShim; ring: UringRing }>(
  // A disk dropped without close(): no call can be running (a running call keeps the disk
  // reachable), so the ring can be torn down here.
  ({ shim, ring }) => shim.symbols.kiseki_uring_close(ring),
);

const uringCalls = counter({
  name: "kiseki_disk_uring_calls_total",
  help: "kiseki_uring_run() calls (one nonblocking FFI crossing each)",
});
const uringRounds = counter({
  name: "kiseki_disk_uring_rounds_total",
  help: "Disk rounds (merged submits, then maybe a sync) those calls carried",
});
const schedulerTotals = { calls: 0, rounds: 0 };

/** kiseki_uring_run() calls made by this process so far, and the disk rounds they carried. */
export function uringSchedulerTotals(): { calls: number; rounds: number } {
  return { ...schedulerTotals };
}

/** One round of a disk in a kiseki_uring_run() call: merged submits, then maybe a sync. */
interface Round {
  disk: UringDisk;
  jobs: SubmitJob[];
  count: number;
  sync: SyncJob | null;
}

/**
 * Drives the disks of one shim: whenever disks have queued work and are not already in a
 * call, one kiseki_uring_run() call takes a round from each of them (started a microtask
 * later, so that the submits and syncs a caller issues to several disks in one turn ride
 * together). A disk is in at most one call at a time, which keeps each disk's order;
 * different disks may be in different calls at once.
 */
class UringScheduler {
  readonly #shim: UringShim;
  readonly #ready = new Set<UringDisk>();
  #scheduled = false;

  constructor(shim: UringShim) {
    this.#shim = shim;
  }

  /** `disk` has queued work and is not in a call. */
  wake(disk: UringDisk): void {
    this.#ready.add(disk);
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#call();
    });
  }

  async #call(): Promise<void> {
    const rounds: Round[] = [];
    for (const disk of this.#ready) {
      if (rounds.length === URING_SHIM_PLAN_ENTRIES_MAX) break;
      this.#ready.delete(disk);
      const round = disk.takeRound();
      if (round !== null) rounds.push(round);
    }
    if (this.#ready.size > 0) this.wake(this.#ready.values().next().value!);
    if (rounds.length === 0) return;
    const plan = new Uint32Array(2 * URING_PLAN_WORDS * rounds.length);
    const status = new Int32Array(2 * rounds.length);
    let rc: number;
    schedulerTotals.calls++;
    schedulerTotals.rounds += rounds.length;
    uringCalls.inc();
    uringRounds.inc(rounds.length);
    try {
      rounds.forEach((r, i) => r.disk.planRound(r, plan, i * URING_PLAN_WORDS));
      rc = await this.#shim.symbols.kiseki_uring_run(plan, rounds.length, status);
      keepAlive(plan, status, rounds);
    } catch {
      // Nothing reached the kernel (a plan that cannot be written, a call that cannot be
      // made): the rounds' disks fail their jobs rather than wait for ever.
      rc = URING_EBROKEN;
    }
    rounds.forEach((r, i) => {
      // Any other return (-ENOMEM: the shim could not allocate its call state) ran nothing.
      const [batch, sync] = rc === 0
        ? [status[2 * i]!, status[2 * i + 1]!]
        : [URING_EBROKEN, URING_ENOTRUN];
      r.disk.finishRound(r, batch, sync);
    });
  }
}

const schedulers = new WeakMap<UringShim, UringScheduler>();
function schedulerFor(shim: UringShim): UringScheduler {
  let s = schedulers.get(shim);
  if (s === undefined) {
    s = new UringScheduler(shim);
    schedulers.set(shim, s);
  }
  return s;
}

export class UringDisk implements Disk {
  readonly implementation = "io_uring";
  readonly reason: string;
  readonly path: string;
  readonly sizeBytes: number;
  readonly alignmentBytes: number;
  readonly direct: boolean;
  readonly queueDepth: number;
  readonly #shim: UringShim;
  readonly #ring: UringRing;
  /** Holds the exclusive lock on the device file until close(). */
  readonly #lockFile: Deno.FsFile;
  /** Reused by every call: only one call runs on the ring at a time. */
  readonly #descriptor = new Uint32Array(2 * URING_OP_WORDS * DISK_BATCH_OPS_MAX);
  readonly #results = new Int32Array(DISK_BATCH_OPS_MAX);
  /** Addresses of the ring, #descriptor and #results, for kiseki_uring_run() plans. */
  readonly #ringAddress: number;
  readonly #descriptorAddress: number;
  readonly #resultsAddress: number;
  readonly #scheduler: UringScheduler;
  readonly #queue: Job[] = [];
  #queuedOps = 0;
  /** True from the first queued job until the queue is empty and no call holds this disk. */
  #draining = false;
  /** True while this disk is handed to the scheduler or in one of its calls. */
  #scheduled = false;
  #idle: (() => void)[] = [];
  /** Set when the ring broke or a sync failed: every later call gets this error. */
  #failed: DiskError | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;

  private constructor(
    shim: UringShim,
    ring: UringRing,
    lockFile: Deno.FsFile,
    path: string,
    sizeBytes: number,
    direct: boolean,
    queueDepth: number,
    reason: string,
  ) {
    this.#shim = shim;
    this.#ring = ring;
    this.#lockFile = lockFile;
    this.path = path;
    this.sizeBytes = sizeBytes;
    this.direct = direct;
    this.alignmentBytes = direct ? DISK_DIRECT_ALIGNMENT_BYTES : 1;
    this.queueDepth = queueDepth;
    this.reason = reason;
    this.#ringAddress = Number(shim.symbols.kiseki_uring_ring_address(ring));
    this.#descriptorAddress = addressOf(shim, new Uint8Array(this.#descriptor.buffer));
    this.#resultsAddress = addressOf(shim, new Uint8Array(this.#results.buffer));
    this.#scheduler = schedulerFor(shim);
    rings.register(this, { shim, ring }, this);
  }

  /**
   * Opens (creating or extending) the device file under Deno's permission checks, then a
   * ring on it. With `direct` (the default) O_DIRECT is kept only if the shim's test read
   * and write of block 0 pass; otherwise the disk is buffered and `reason` says why.
   */
  static async open(
    shim: UringShim,
    path: string,
    options: UringDiskOptions,
  ): Promise<UringDisk> {
    checkPath(path);
    checkOpenOptions(options, path);
    const sizeBytes = checkDeviceSize(options.sizeBytes, path);
    const queueDepth = options.queueDepth ?? URING_QUEUE_DEPTH_DEFAULT;
    if (!Number.isInteger(queueDepth) || queueDepth < 1 || queueDepth > URING_QUEUE_DEPTH_MAX) {
      throw new DiskError(
        "EINVAL",
        `${path}: queueDepth ${queueDepth} must be 1..${URING_QUEUE_DEPTH_MAX}`,
      );
    }
    const wantDirect = options.direct ?? true;
    const lockFile = await openDeviceFile(path, sizeBytes);
    const info = new Int32Array(URING_INFO_SLOTS);
    const pathBytes = new TextEncoder().encode(path + "\0");
    let ring: UringRing | null;
    try {
      ring = await shim.symbols.kiseki_uring_open(
        pathBytes,
        wantDirect ? URING_WANT_DIRECT : 0,
        queueDepth,
        info,
      );
    } catch (e) {
      lockFile.close();
      throw e;
    }
    keepAlive(pathBytes, info);
    const stage = URING_STAGE_TEXT[info[URING_INFO_STAGE]!] ?? `stage ${info[URING_INFO_STAGE]}`;
    if (ring === null) {
      lockFile.close();
      const error = diskErrorFromErrno(
        info[URING_INFO_ERRNO]!,
        `io_uring open of ${path} (${stage})`,
      );
      if (info[URING_INFO_STAGE] === URING_STAGE_QUEUE_INIT) {
        throw new UringSetupError(error.code, error.message.slice(error.code.length + 2), {
          errno: error.errno,
        });
      }
      throw error;
    }
    const direct = info[URING_INFO_DIRECT] === 1;
    let reason: string;
    if (direct) {
      reason = "io_uring with O_DIRECT (test read and write of block 0 passed)";
    } else if (!wantDirect) {
      reason = "io_uring, buffered: O_DIRECT not requested";
    } else {
      const refused = diskErrorFromErrno(info[URING_INFO_DIRECT_ERRNO]!, stage);
      reason = `io_uring, buffered: the file system refused O_DIRECT (${refused.message})`;
    }
    return new UringDisk(shim, ring, lockFile, path, sizeBytes, direct, queueDepth, reason);
  }

  get closed(): boolean {
    return this.#closed;
  }

  submit(ops: readonly DiskOp[]): Promise<number[]> {
    if (this.#closed) return Promise.reject(closedError(this.path, "submit()"));
    if (this.#failed !== null) return Promise.reject(this.#failed);
    try {
      checkBatch(ops, {
        path: this.path,
        sizeBytes: this.sizeBytes,
        alignmentBytes: this.alignmentBytes,
        isAligned: (buffer) => addressOf(this.#shim, buffer) % DISK_DIRECT_ALIGNMENT_BYTES === 0,
      });
    } catch (e) {
      return Promise.reject(e);
    }
    if (ops.length === 0) return Promise.resolve([]);
    if (this.#queuedOps + ops.length > DISK_QUEUED_OPS_MAX) {
      return Promise.reject(queueFullError(this.path, this.#queuedOps));
    }
    return new Promise((resolve, reject) => {
      this.#queuedOps += ops.length;
      this.#queue.push({ kind: "submit", ops, resolve, reject });
      this.#pump();
    });
  }

  sync(): Promise<void> {
    if (this.#closed) return Promise.reject(closedError(this.path, "sync()"));
    if (this.#failed !== null) return Promise.reject(this.#failed);
    // A barrier in the queue: everything submitted before it has completed when it runs.
    return new Promise((resolve, reject) => {
      this.#queue.push({ kind: "sync", resolve, reject });
      this.#pump();
    });
  }

  close(): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    this.#closed = true;
    this.#closing = (async () => {
      while (this.#draining) await new Promise<void>((resolve) => this.#idle.push(resolve));
      rings.unregister(this);
      const rc = this.#shim.symbols.kiseki_uring_close(this.#ring);
      try {
        this.#lockFile.close();
      } catch {
        // Already closed by the runtime: the lock went with it.
      }
      if (rc < 0) throw diskErrorFromErrno(-rc, `close ${this.path}`);
    })();
    return this.#closing;
  }

  allocateAligned(count: number, sizeBytes: number): Uint8Array[] {
    const stride = alignedStride(count, sizeBytes, this.alignmentBytes);
    // The allocator aligns to 16 bytes; over-allocate and start at the next 4 KiB address
    // (also when buffered: page-aligned buffers cost nothing and copy faster).
    const align = DISK_DIRECT_ALIGNMENT_BYTES;
    const slab = new Uint8Array(count * stride + align);
    const skew = (align - (addressOf(this.#shim, slab) % align)) % align;
    return carveAligned(slab, skew, stride, count, sizeBytes);
  }

  #pump(): void {
    this.#draining = true;
    if (this.#scheduled) return;
    this.#scheduled = true;
    this.#scheduler.wake(this);
  }

  /**
   * For the scheduler: this disk's next round (consecutive submits merged up to one
   * descriptor's worth of ops, and the sync that follows them, if any), its descriptor
   * written; null when there is nothing to run (failed jobs are answered here).
   */
  takeRound(): Round | null {
    const round: Round = { disk: this, jobs: [], count: 0, sync: null };
    while (this.#queue.length > 0) {
      const next = this.#queue[0]!;
      if (next.kind === "sync") {
        round.sync = next;
        this.#queue.shift();
        break;
      }
      if (round.count + next.ops.length > DISK_BATCH_OPS_MAX) break;
      round.jobs.push(next);
      round.count += next.ops.length;
      this.#queue.shift();
    }
    if (this.#failed !== null) {
      this.#queuedOps -= round.count;
      for (const job of round.jobs) job.reject(this.#failed);
      round.sync?.reject(this.#failed);
      this.#afterRound();
      return null;
    }
    if (round.jobs.length === 0 && round.sync === null) {
      this.#afterRound();
      return null;
    }
    const words = this.#descriptor;
    let slot = 0;
    for (const job of round.jobs) {
      for (const op of job.ops) {
        const base = slot * URING_OP_WORDS;
        putWord(words, base + URING_OP_KIND, op.kind === "read" ? URING_READ : URING_WRITE);
        putWord(words, base + URING_OP_OFFSET, op.offsetBytes);
        putWord(
          words,
          base + URING_OP_ADDRESS,
          op.buffer.length > 0 ? addressOf(this.#shim, op.buffer) : 0,
        );
        putWord(words, base + URING_OP_LENGTH, op.buffer.length);
        slot++;
      }
    }
    return round;
  }

  /** For the scheduler: writes this disk's entry of a kiseki_uring_run() plan. */
  planRound(round: Round, plan: Uint32Array, base: number): void {
    putWord(plan, base + URING_PLAN_RING, this.#ringAddress);
    putWord(plan, base + URING_PLAN_DESC, this.#descriptorAddress);
    putWord(plan, base + URING_PLAN_COUNT, round.count);
    putWord(plan, base + URING_PLAN_RESULTS, this.#resultsAddress);
    putWord(plan, base + URING_PLAN_FLAGS, round.sync !== null ? URING_PLAN_SYNC : 0);
  }

  /** For the scheduler: answers a round's jobs from the call's statuses. */
  finishRound(round: Round, batchRc: number, syncRc: number): void {
    try {
      if (round.jobs.length > 0) this.#finishBatch(round.jobs, batchRc);
      if (round.sync !== null) this.#finishSync(round.sync, batchRc, syncRc);
    } finally {
      this.#queuedOps -= round.count;
      this.#afterRound();
    }
  }

  /** Hands the disk back to the scheduler when more is queued, else reports it idle. */
  #afterRound(): void {
    if (this.#queue.length > 0) {
      this.#scheduler.wake(this);
      return;
    }
    this.#scheduled = false;
    this.#draining = false;
    for (const resolve of this.#idle.splice(0)) resolve();
  }

  #finishSync(job: SyncJob, batchRc: number, rc: number): void {
    if (rc === 0) return job.resolve();
    if (rc === URING_ENOTRUN) {
      return job.reject(
        this.#failed ??
          diskErrorFromErrno(
            batchRc < 0 && batchRc > -1000 ? -batchRc : DISK_ERRNO.EIO,
            `fdatasync ${this.path}`,
          ),
      );
    }
    const error = rc === URING_EBROKEN
      ? new DiskError("EIO", `${this.path}: io_uring failed during fdatasync`)
      : diskErrorFromErrno(-rc, `fdatasync ${this.path}`);
    // Linux forgets which writes a failed fsync lost: refuse everything after it.
    this.#failed = new DiskError(
      error.code,
      `${this.path} failed: ${error.message}; close it and recover from redundancy`,
      { errno: error.errno },
    );
    job.reject(error);
  }

  #finishBatch(jobs: readonly SubmitJob[], rc: number): void {
    assert(rc !== -DISK_ERRNO.EINVAL, "kiseki_uring_run refused a batch checked in TypeScript");
    if (rc === URING_EWEDGED) wedged.push(jobs.map((job) => job.ops.map((op) => op.buffer)));
    if (rc !== 0) {
      this.#failed ??= new DiskError(
        "EIO",
        `${this.path}: io_uring failed${rc === URING_EWEDGED ? " with requests in flight" : ""}` +
          `; close it and recover from redundancy`,
      );
    }
    const results = this.#results;
    let slot = 0;
    for (const job of jobs) {
      let error: DiskError | null = null;
      const bytes: number[] = [];
      for (let i = 0; i < job.ops.length; i++, slot++) {
        const op = job.ops[i]!;
        const result = results[slot]!;
        if (result < 0 && error === null) error = this.#opError(op, i, -result);
        if (result >= 0 && error === null) {
          assert(result === op.buffer.length, `op finished with ${result} bytes, not all`);
        }
        bytes.push(result);
      }
      if (error === null && this.#failed !== null) error = this.#failed;
      if (error === null) job.resolve(bytes);
      else job.reject(error);
    }
  }

  #opError(op: DiskOp, index: number, errno: number): DiskError {
    const what = `${op.kind} of ${op.buffer.length} bytes at offset ${op.offsetBytes} on ` +
      this.path;
    if (errno === DISK_ERRNO.ENODATA) {
      return new DiskError("EIO", `${what}: end of file (device file truncated?)`, {
        opIndex: index,
      });
    }
    return diskErrorFromErrno(errno, what, { opIndex: index });
  }
}
