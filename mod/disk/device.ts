// The Disk port: a block-addressed device (a regular file now, a raw block device later) that
// the chunk store reads and writes in batches. Implementations: UringDisk (io_uring shim),
// FileDisk (its pure twin), SimDisk (in memory, crashable) and FaultyDisk (wraps any Disk).

/** O_DIRECT transfers: offsets, lengths and buffer addresses are multiples of this. */
export const DISK_DIRECT_ALIGNMENT_BYTES = 4096;
/** Ops in one submit() batch. */
export const DISK_BATCH_OPS_MAX = 1024;
/** Bytes in one op: below 2^31, so one io_uring completion (an int) always holds it. */
export const DISK_OP_BYTES_MAX = 1 << 30;
/** Device size: 1 PiB, far below 2^53 so every offset is an exact Number. */
export const DISK_SIZE_BYTES_MAX = 2 ** 50;
/** Ops accepted by submit() and not yet finished, per disk; beyond it submit() fails EAGAIN. */
export const DISK_QUEUED_OPS_MAX = 16 * DISK_BATCH_OPS_MAX;
/** Bytes one allocateAligned() call may hand out. */
export const DISK_ALLOCATE_BYTES_MAX = 1 << 30;

/** Linux errno values of the codes a Disk reports (asm-generic/errno-base.h, errno.h). */
export const DISK_ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  ENODATA: 61,
  EOPNOTSUPP: 95,
  EDQUOT: 122,
  ECANCELED: 125,
} as const;

export type DiskErrorCode = keyof typeof DISK_ERRNO;

const CODE_BY_ERRNO = new Map<number, DiskErrorCode>(
  Object.entries(DISK_ERRNO).map(([code, errno]) => [errno, code as DiskErrorCode]),
);

const CODE_TEXT: Record<DiskErrorCode, string> = {
  EPERM: "operation not permitted",
  ENOENT: "no such file or directory",
  EIO: "input/output error",
  ENXIO: "no such device or address",
  EBADF: "disk is closed",
  EAGAIN: "resource temporarily unavailable",
  ENOMEM: "out of memory",
  EACCES: "permission denied",
  EBUSY: "device is in use",
  ENOTDIR: "not a directory",
  EISDIR: "is a directory",
  EINVAL: "invalid argument",
  EFBIG: "file too large",
  ENOSPC: "no space left on device",
  EROFS: "read-only file system",
  ENOSYS: "function not implemented",
  ENODATA: "no data (end of file)",
  EOPNOTSUPP: "operation not supported",
  EDQUOT: "disk quota exceeded",
  ECANCELED: "operation canceled",
};

export function isDiskErrorCode(value: unknown): value is DiskErrorCode {
  return typeof value === "string" && Object.hasOwn(DISK_ERRNO, value);
}

/**
 * A failed or refused disk operation, shaped like the errno the kernel would return. `opIndex`
 * names the op of a submit() batch that failed (null for open, sync, close and whole-batch
 * refusals).
 */
export class DiskError extends Error {
  override name = "DiskError";
  readonly code: DiskErrorCode;
  /** The Linux errno; for a code outside DISK_ERRNO (reported as EIO) the original value. */
  readonly errno: number;
  readonly opIndex: number | null;

  constructor(code: DiskErrorCode, message: string, options: DiskErrorOptions = {}) {
    super(`${code}: ${message}`, options.cause === undefined ? {} : { cause: options.cause });
    this.code = code;
    this.errno = options.errno ?? DISK_ERRNO[code];
    this.opIndex = options.opIndex ?? null;
  }
}

export interface DiskErrorOptions {
  errno?: number;
  opIndex?: number;
  cause?: unknown;
}

/** A DiskError for a positive Linux errno; unknown values become EIO and keep the number. */
export function diskErrorFromErrno(
  errno: number,
  what: string,
  options: Omit<DiskErrorOptions, "errno"> = {},
): DiskError {
  const code = CODE_BY_ERRNO.get(errno);
  if (code === undefined) {
    return new DiskError("EIO", `${what}: errno ${errno}`, { ...options, errno });
  }
  return new DiskError(code, `${what}: ${CODE_TEXT[code]}`, options);
}

/** Turns an error thrown by a Deno file API into a DiskError (already-typed ones pass). */
export function diskErrorFromDeno(
  error: unknown,
  what: string,
  options: Omit<DiskErrorOptions, "errno" | "cause"> = {},
): DiskError {
  if (error instanceof DiskError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const withCause = { ...options, cause: error };
  const code = (error as { code?: unknown } | null)?.code;
  if (isDiskErrorCode(code)) return new DiskError(code, `${what}: ${message}`, withCause);
  const os = /\(os error (\d+)\)/.exec(message);
  if (os !== null) {
    const errno = Number(os[1]);
    const known = CODE_BY_ERRNO.get(errno);
    if (known !== undefined) return new DiskError(known, `${what}: ${message}`, withCause);
    return new DiskError("EIO", `${what}: ${message}`, { ...withCause, errno });
  }
  if (error instanceof Deno.errors.NotFound) {
    return new DiskError("ENOENT", `${what}: ${message}`, withCause);
  }
  if (error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied) {
    return new DiskError("EACCES", `${what}: ${message}`, withCause);
  }
  if (error instanceof Deno.errors.BadResource) {
    return new DiskError("EBADF", `${what}: ${message}`, withCause);
  }
  return new DiskError("EIO", `${what}: ${message}`, withCause);
}

export type DiskOpKind = "read" | "write";

export interface DiskOp {
  kind: DiskOpKind;
  offsetBytes: number;
  /** Read into, or written from, all of this view. */
  buffer: Uint8Array;
}

export interface DiskOpenOptions {
  /**
   * Size of the device, a positive multiple of DISK_DIRECT_ALIGNMENT_BYTES. A missing file is
   * created, a shorter one extended (sparse); a longer one is refused (EINVAL) rather than
   * silently truncated or half used.
   */
  sizeBytes: number;
  /**
   * Ask for O_DIRECT (default true). Implementations that cannot, or a file system that
   * refuses it, open buffered and say why in `reason`; check `direct` and `alignmentBytes`.
   */
  direct?: boolean;
}

/**
 * A block-addressed device.
 *
 * submit() semantics (every implementation):
 * - The whole batch is validated first; bad input (an op out of range, unaligned when
 *   `alignmentBytes` > 1, writes that overlap another op of the same batch, a closed disk)
 *   rejects with a DiskError and performs no op at all.
 * - Ops of one batch, and submits that overlap in time, run in no particular order and may
 *   run concurrently. Callers order dependent I/O by awaiting. Read buffers in flight at
 *   once must not share memory (their bytes would be undefined), and no buffer may be
 *   changed or transferred until its submit settles.
 * - All or error: the promise resolves with the byte count of every op, always its buffer
 *   length (short transfers are continued internally), or rejects with the DiskError of the
 *   first failed op (`opIndex`). Every op was attempted and has finished by then, so no
 *   buffer is touched after the promise settles; the other writes of a failed batch may or
 *   may not have reached the device, and read buffers of a failed batch hold unspecified
 *   bytes.
 *
 * sync() makes durable every write of every submit() called before it (fdatasync). A failed
 * sync() leaves the disk failed: every later call rejects, because Linux forgets which
 * writes a failed fsync lost; the owner closes it and recovers from redundancy. close()
 * lets queued work finish, then releases the device; it does not sync. Calls after close()
 * reject with EBADF. A device is exclusive: opening it twice fails with EBUSY.
 */
export interface Disk {
  /** Which mechanism does the I/O: "io_uring", "file", "sim", or "faulty(<inner>)". */
  readonly implementation: string;
  /** Why this mechanism and mode (buffered or O_DIRECT) were chosen. */
  readonly reason: string;
  readonly path: string;
  readonly sizeBytes: number;
  /** DISK_DIRECT_ALIGNMENT_BYTES when transfers bypass the page cache, else 1. */
  readonly alignmentBytes: number;
  /** True when transfers bypass the page cache (O_DIRECT). */
  readonly direct: boolean;
  readonly closed: boolean;
  submit(ops: readonly DiskOp[]): Promise<number[]>;
  sync(): Promise<void>;
  close(): Promise<void>;
  /**
   * `count` buffers of `sizeBytes` each, carved from one slab so that each starts on an
   * `alignmentBytes` boundary: the only buffers an O_DIRECT disk is guaranteed to accept.
   */
  allocateAligned(count: number, sizeBytes: number): Uint8Array[];
}

/** Opens a device by path: the shape every file-backed implementation's open() has. */
export type DiskOpener = (path: string, options: DiskOpenOptions) => Promise<Disk>;

/** Throws EINVAL unless `sizeBytes` is a usable device size. */
export function checkDeviceSize(sizeBytes: unknown, path: string): number {
  if (
    typeof sizeBytes !== "number" || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 ||
    sizeBytes > DISK_SIZE_BYTES_MAX || sizeBytes % DISK_DIRECT_ALIGNMENT_BYTES !== 0
  ) {
    throw new DiskError(
      "EINVAL",
      `${path}: sizeBytes ${String(sizeBytes)} must be a positive multiple of ` +
        `${DISK_DIRECT_ALIGNMENT_BYTES} up to ${DISK_SIZE_BYTES_MAX}`,
    );
  }
  return sizeBytes;
}

export function checkOpenOptions(options: unknown, path: string): void {
  if (typeof options !== "object" || options === null) {
    throw new DiskError("EINVAL", `${path}: open() needs options with sizeBytes`);
  }
  const direct = (options as DiskOpenOptions).direct;
  if (direct !== undefined && typeof direct !== "boolean") {
    throw new DiskError("EINVAL", `${path}: direct must be a boolean`);
  }
}

export function checkPath(path: unknown): string {
  if (typeof path !== "string" || path.length === 0 || path.includes("\0")) {
    throw new DiskError("EINVAL", `device path ${JSON.stringify(path)} is not a file path`);
  }
  return path;
}

export interface BatchLimits {
  path: string;
  sizeBytes: number;
  alignmentBytes: number;
  /**
   * Checks a buffer's start against alignmentBytes when > 1. UringDisk asks the shim for the
   * real address; implementations without addresses check the byte offset in its slab.
   */
  isAligned?: (buffer: Uint8Array) => boolean;
}

function describeOp(op: DiskOp, index: number): string {
  return `op ${index} (${op.kind} of ${op.buffer.length} bytes at offset ${op.offsetBytes})`;
}

/**
 * Validates a whole batch against the device, throwing DiskError EINVAL (with opIndex) for
 * the first bad op. Shared by every implementation so they refuse exactly the same input.
 */
export function checkBatch(ops: unknown, limits: BatchLimits): readonly DiskOp[] {
  const { path, sizeBytes, alignmentBytes } = limits;
  if (!Array.isArray(ops)) {
    throw new DiskError("EINVAL", `${path}: submit() takes an array of ops`);
  }
  if (ops.length > DISK_BATCH_OPS_MAX) {
    throw new DiskError(
      "EINVAL",
      `${path}: batch of ${ops.length} ops exceeds DISK_BATCH_OPS_MAX (${DISK_BATCH_OPS_MAX})`,
    );
  }
  let writes = 0;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i] as Partial<DiskOp> | null;
    const bad = (why: string): never => {
      throw new DiskError("EINVAL", `${path}: op ${i}: ${why}`, { opIndex: i });
    };
    if (typeof op !== "object" || op === null) bad("not an op object");
    if (op!.kind !== "read" && op!.kind !== "write") bad(`unknown kind ${String(op!.kind)}`);
    const { offsetBytes, buffer } = op!;
    if (typeof offsetBytes !== "number" || !Number.isSafeInteger(offsetBytes) || offsetBytes < 0) {
      bad(`offsetBytes ${String(offsetBytes)} is not a non-negative integer`);
    }
    if (!(buffer instanceof Uint8Array)) bad("buffer is not a Uint8Array");
    if (buffer!.buffer instanceof ArrayBuffer && buffer!.buffer.detached) {
      bad("buffer is detached");
    }
    const length = buffer!.length;
    if (length > DISK_OP_BYTES_MAX) {
      bad(`${length} bytes exceed DISK_OP_BYTES_MAX (${DISK_OP_BYTES_MAX})`);
    }
    if (offsetBytes! + length > sizeBytes) {
      bad(
        `${op!.kind} of ${length} bytes at offset ${offsetBytes} runs past the end of the ` +
          `${sizeBytes}-byte device`,
      );
    }
    if (alignmentBytes > 1) {
      if (offsetBytes! % alignmentBytes !== 0 || length % alignmentBytes !== 0) {
        bad(`offset ${offsetBytes} and length ${length} must be multiples of ${alignmentBytes}`);
      }
      if (length > 0 && limits.isAligned !== undefined && !limits.isAligned(buffer!)) {
        bad(`buffer does not start on a ${alignmentBytes}-byte boundary (use allocateAligned())`);
      }
    }
    if (op!.kind === "write") writes++;
  }
  if (writes > 0 && ops.length > 1) checkNoOverlap(ops as DiskOp[], path);
  return ops as DiskOp[];
}

/** Rejects a batch where a write overlaps any other op: its outcome would depend on order. */
function checkNoOverlap(ops: readonly DiskOp[], path: string): void {
  const order = ops.map((_, i) => i).filter((i) => ops[i]!.buffer.length > 0);
  order.sort((a, b) => ops[a]!.offsetBytes - ops[b]!.offsetBytes);
  // Sweep in offset order, remembering the op that reaches furthest so far.
  let reach = -1;
  let reachIndex = -1;
  for (const i of order) {
    const op = ops[i]!;
    if (reachIndex >= 0 && op.offsetBytes < reach) {
      const other = ops[reachIndex]!;
      if (op.kind === "write" || other.kind === "write") {
        throw new DiskError(
          "EINVAL",
          `${path}: ${describeOp(op, i)} overlaps ${describeOp(other, reachIndex)} in one ` +
            `batch with a write; split them into batches awaited in order`,
          { opIndex: i },
        );
      }
    }
    const end = op.offsetBytes + op.buffer.length;
    // Among overlapping reads keep a write as the witness if one reaches as far.
    if (end > reach || (end === reach && op.kind === "write")) {
      reach = end;
      reachIndex = i;
    }
  }
}

/** The error every call on a closed disk gets. */
export function closedError(path: string, what: string): DiskError {
  return new DiskError("EBADF", `${path}: ${what} after close()`);
}

export function queueFullError(path: string, queuedOps: number): DiskError {
  return new DiskError(
    "EAGAIN",
    `${path}: ${queuedOps} ops already queued (DISK_QUEUED_OPS_MAX ${DISK_QUEUED_OPS_MAX}); ` +
      `await earlier submits first`,
  );
}

/** Validates allocateAligned() arguments; returns the stride between buffers. */
export function alignedStride(count: number, sizeBytes: number, alignmentBytes: number): number {
  if (!Number.isSafeInteger(count) || count < 1) {
    throw new DiskError("EINVAL", `allocateAligned(): count ${count} must be a positive integer`);
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 1) {
    throw new DiskError(
      "EINVAL",
      `allocateAligned(): sizeBytes ${sizeBytes} must be a positive integer`,
    );
  }
  const stride = Math.ceil(sizeBytes / alignmentBytes) * alignmentBytes;
  if (count * stride + alignmentBytes > DISK_ALLOCATE_BYTES_MAX) {
    throw new DiskError(
      "EINVAL",
      `allocateAligned(): ${count} x ${sizeBytes} bytes exceed DISK_ALLOCATE_BYTES_MAX ` +
        `(${DISK_ALLOCATE_BYTES_MAX})`,
    );
  }
  return stride;
}

/** Cuts `count` buffers of `sizeBytes` out of `slab` from `skew`, `stride` apart. */
export function carveAligned(
  slab: Uint8Array,
  skew: number,
  stride: number,
  count: number,
  sizeBytes: number,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const start = skew + i * stride;
    out.push(slab.subarray(start, start + sizeBytes));
  }
  return out;
}
