// FileDisk: the Disk port on Deno.FsFile, the pure twin of UringDisk. Buffered I/O only
// (Deno cannot open with O_DIRECT). Deno has no pread, so each op runs on a handle of its
// own (seek, then read or write) drawn from a small pool, which gives real queue depth on
// Deno's blocking thread pool without two ops ever sharing a file position.

import { assert } from "../base/mod.ts";
import {
  alignedStride,
  carveAligned,
  checkBatch,
  checkDeviceSize,
  checkOpenOptions,
  checkPath,
  closedError,
  type Disk,
  DISK_QUEUED_OPS_MAX,
  DiskError,
  diskErrorFromDeno,
  type DiskOp,
  type DiskOpenOptions,
  queueFullError,
} from "./device.ts";

/** Handles opened per disk by default: ops in flight at once. */
export const FILE_DISK_HANDLES_DEFAULT = 4;
/** Upper bound on handles per disk (each is an open file description). */
export const FILE_DISK_HANDLES_MAX = 64;

export interface FileDiskOptions extends DiskOpenOptions {
  /** Ops in flight at once, each on its own handle (1..FILE_DISK_HANDLES_MAX). */
  handles?: number;
}

/**
 * Opens `path` read-write, creating or extending it to `sizeBytes`, and takes an exclusive
 * lock on it (held until close()). Throws DiskError (EBUSY when another Disk has it open).
 */
export async function openDeviceFile(
  path: string,
  sizeBytes: number,
): Promise<Deno.FsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true, create: true });
  } catch (e) {
    throw diskErrorFromDeno(e, `open ${path}`);
  }
  try {
    if (!(await file.tryLock(true))) {
      throw new DiskError("EBUSY", `${path} is already open as a Disk (exclusive lock held)`);
    }
    const stat = await file.stat();
    if (!stat.isFile) {
      throw new DiskError("EINVAL", `${path} is not a regular file (block devices: later)`);
    }
    if (stat.size > sizeBytes) {
      throw new DiskError(
        "EINVAL",
        `${path} is ${stat.size} bytes, larger than sizeBytes ${sizeBytes}: refusing to ` +
          `shrink it or use part of it`,
      );
    }
    if (stat.size < sizeBytes) await file.truncate(sizeBytes);
    return file;
  } catch (e) {
    file.close();
    throw diskErrorFromDeno(e, `open ${path}`);
  }
}

export class FileDisk implements Disk {
  readonly implementation = "file";
  readonly reason: string;
  readonly path: string;
  readonly sizeBytes: number;
  readonly alignmentBytes = 1;
  readonly direct = false;
  /** Holds the exclusive lock; also one of the I/O handles. */
  readonly #lockHandle: Deno.FsFile;
  readonly #free: Deno.FsFile[];
  readonly #waiters: ((handle: Deno.FsFile) => void)[] = [];
  readonly #all: Deno.FsFile[];
  /** Submits in flight, so sync() and close() can wait for the ones called before them. */
  readonly #inflight = new Set<Promise<unknown>>();
  #queuedOps = 0;
  /** Set when a sync failed: every later call gets this error. */
  #failed: DiskError | null = null;
  #closed = false;
  #closing: Promise<void> | null = null;

  private constructor(path: string, sizeBytes: number, handles: Deno.FsFile[], reason: string) {
    this.path = path;
    this.sizeBytes = sizeBytes;
    this.#lockHandle = handles[0]!;
    this.#all = handles;
    this.#free = [...handles];
    this.reason = reason;
  }

  /** Opens (creating or extending) the device file; see DiskOpenOptions. */
  static async open(path: string, options: FileDiskOptions): Promise<FileDisk> {
    checkPath(path);
    checkOpenOptions(options, path);
    const sizeBytes = checkDeviceSize(options.sizeBytes, path);
    const count = options.handles ?? FILE_DISK_HANDLES_DEFAULT;
    if (!Number.isInteger(count) || count < 1 || count > FILE_DISK_HANDLES_MAX) {
      throw new DiskError("EINVAL", `handles ${count} must be 1..${FILE_DISK_HANDLES_MAX}`);
    }
    const first = await openDeviceFile(path, sizeBytes);
    const handles = [first];
    try {
      for (let i = 1; i < count; i++) {
        handles.push(await Deno.open(path, { read: true, write: true }));
      }
    } catch (e) {
      for (const h of handles) h.close();
      throw diskErrorFromDeno(e, `open ${path}`);
    }
    const reason = options.direct === false
      ? "buffered I/O requested"
      : "buffered: Deno.FsFile cannot open with O_DIRECT";
    return new FileDisk(path, sizeBytes, handles, reason);
  }

  get closed(): boolean {
    return this.#closed;
  }

  submit(ops: readonly DiskOp[]): Promise<number[]> {
    if (this.#closed) return Promise.reject(closedError(this.path, "submit()"));
    if (this.#failed !== null) return Promise.reject(this.#failed);
    try {
      checkBatch(ops, this);
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#queuedOps + ops.length > DISK_QUEUED_OPS_MAX) {
      return Promise.reject(queueFullError(this.path, this.#queuedOps));
    }
    this.#queuedOps += ops.length;
    const done = this.#run(ops).finally(() => {
      this.#queuedOps -= ops.length;
    });
    this.#track(done);
    return done;
  }

  async sync(): Promise<void> {
    if (this.#closed) throw closedError(this.path, "sync()");
    if (this.#failed !== null) throw this.#failed;
    // fdatasync covers the inode, so any handle will do once earlier writes have landed.
    const before = [...this.#inflight];
    const done = (async () => {
      await Promise.allSettled(before);
      try {
        await this.#lockHandle.syncData();
      } catch (e) {
        const error = diskErrorFromDeno(e, `fdatasync ${this.path}`);
        // Linux forgets which writes a failed fsync lost: refuse everything after it.
        this.#failed ??= new DiskError(
          error.code,
          `${this.path} failed: ${error.message}; close it and recover from redundancy`,
          { errno: error.errno },
        );
        throw error;
      }
    })();
    this.#track(done);
    await done;
  }

  close(): Promise<void> {
    if (this.#closing !== null) return this.#closing;
    this.#closed = true;
    this.#closing = (async () => {
      await Promise.allSettled([...this.#inflight]);
      for (const handle of this.#all) {
        try {
          handle.close(); // releases the lock with the last reference to its description
        } catch {
          // Already closed by the runtime: nothing left to release.
        }
      }
    })();
    return this.#closing;
  }

  allocateAligned(count: number, sizeBytes: number): Uint8Array[] {
    const stride = alignedStride(count, sizeBytes, this.alignmentBytes);
    return carveAligned(new Uint8Array(count * stride), 0, stride, count, sizeBytes);
  }

  #track(promise: Promise<unknown>): void {
    this.#inflight.add(promise);
    const forget = () => this.#inflight.delete(promise);
    promise.then(forget, forget);
  }

  async #run(ops: readonly DiskOp[]): Promise<number[]> {
    // Every op is attempted and finished before the batch settles (all-or-error contract).
    const outcomes = await Promise.allSettled(ops.map((op, i) => this.#one(op, i)));
    for (const outcome of outcomes) {
      if (outcome.status === "rejected") throw outcome.reason;
    }
    return ops.map((op) => op.buffer.length);
  }

  async #one(op: DiskOp, index: number): Promise<void> {
    const length = op.buffer.length;
    if (length === 0) return;
    const handle = await this.#acquire();
    const what = `${op.kind} of ${length} bytes at offset ${op.offsetBytes} on ${this.path}`;
    try {
      // lseek is a cheap syscall: a synchronous call saves an async op hop per transfer.
      handle.seekSync(op.offsetBytes, Deno.SeekMode.Start);
      let done = 0;
      while (done < length) {
        const view = op.buffer.subarray(done);
        if (op.kind === "read") {
          const n = await handle.read(view);
          if (n === null || n === 0) {
            throw new DiskError(
              "EIO",
              `${what}: end of file after ${done} bytes (device file truncated?)`,
              { opIndex: index },
            );
          }
          done += n;
        } else {
          const n = await handle.write(view);
          assert(n > 0, "FsFile.write() made no progress without an error");
          done += n;
        }
      }
    } catch (e) {
      throw diskErrorFromDeno(e, what, { opIndex: index });
    } finally {
      this.#release(handle);
    }
  }

  #acquire(): Promise<Deno.FsFile> {
    const handle = this.#free.pop();
    if (handle !== undefined) return Promise.resolve(handle);
    // Waiters are bounded by DISK_QUEUED_OPS_MAX, checked in submit().
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #release(handle: Deno.FsFile): void {
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter(handle);
    else this.#free.push(handle);
  }
}
