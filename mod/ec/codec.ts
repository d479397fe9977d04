// The erasure-coding port: Reed-Solomon over GF(2^8) with k data and m parity fragments,
// any k of which rebuild the rest. Owns the contract every implementation honours (limits,
// argument checks, errors), the bounded table cache they share, and split()/join(), which
// turn an object into k equal fragments and back.

import { assert, type BufferPool } from "../base/mod.ts";

/**
 * Most fragments in one stripe. The Cauchy construction uses the row values k..k+m-1 and
 * the column values 0..k-1 as distinct elements of GF(2^8) (entry 1 / (i XOR j)), so k+m
 * can never pass the field's 256 elements; 255 also keeps the count itself a byte, as the
 * shim's index arrays assume, and is the bound (MMAX) of ISA-L's own examples.
 */
export const EC_FRAGMENTS_MAX = 255;
/** ISA-L takes the fragment length as a C int. */
export const EC_FRAGMENT_BYTES_MAX = 0x7fff_ffff;
/** split() rounds fragments up to this so every fragment starts SIMD-aligned in one slab. */
export const EC_FRAGMENT_ALIGN_BYTES = 64;
/**
 * allocateFragments() leaves this gap between fragments so fragments of a power-of-two
 * length do not all start on the same cache sets (a k+m encode streams them in lockstep).
 */
export const EC_FRAGMENT_STAGGER_BYTES = 256;
/** Decode tables kept per (k, m), one per erasure pattern seen; least recently used go. */
export const EC_DECODE_TABLES_ENTRIES_MAX = 256;
/** Bytes of decode tables kept per (k, m): wide codes have large tables per pattern. */
export const EC_DECODE_TABLES_BYTES_MAX = 8 << 20;
/** (k, m) geometries whose encode tables a factory keeps. */
export const EC_GEOMETRIES_CACHED_MAX = 64;
/**
 * encodeAsync()/reconstructAsync() hand work to a thread only at this much data (k x
 * fragment length). A nonblocking FFI call costs 13-85 us on this class of machine and ISA-L
 * codes 40-60 GB/s, so below ~4 MiB (under ~100 us of work) the hop costs more than the stall.
 */
export const EC_ASYNC_THRESHOLD_BYTES_DEFAULT = 4 << 20;

// The widest code's decode table for one pattern (ISA-L: 32 bytes per coefficient, k x m at
// most 127 x 128) must fit the cache's byte bound, or wide codes would rebuild tables per call.
assert(32 * 127 * 128 <= EC_DECODE_TABLES_BYTES_MAX, "decode table bound below one wide table");

export type EcImplementation = "isa-l" | "typescript";

export type EcErrorCode =
  | "invalid_geometry"
  | "wrong_fragment_count"
  | "not_a_buffer"
  | "bad_fragment_length"
  | "length_mismatch"
  | "overlapping_buffers"
  | "too_few_fragments"
  | "invalid_target";

/** Bad input to a codec: a caller's mistake, reported without touching any buffer. */
export class EcError extends Error {
  override name = "EcError";
  constructor(readonly code: EcErrorCode, message: string) {
    super(message);
  }
}

export interface EcGeometry {
  /** Data fragments, 1..254. */
  k: number;
  /** Parity fragments, 1..254; k + m <= EC_FRAGMENTS_MAX. */
  m: number;
}

export interface ErasureCodecOptions extends EcGeometry {
  /** Data bytes (k x fragment length) from which the async calls leave the event loop. */
  asyncThresholdBytes?: number;
}

/**
 * One (k, m) Reed-Solomon code. Fragments are equal-length Uint8Arrays; outputs are
 * caller-provided and must not overlap any other fragment. Every implementation produces
 * byte-identical parity (ISA-L's Cauchy matrix over GF(2^8) with polynomial 0x11d).
 */
export interface ErasureCodec {
  readonly k: number;
  readonly m: number;
  readonly implementation: EcImplementation;
  /** Fills the m `parity` buffers from the k `data` fragments. */
  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void;
  /**
   * Like encode(), off the event loop when the data is large enough to be worth a thread
   * hop. The buffers must not be touched until the promise settles.
   */
  encodeAsync(data: readonly Uint8Array[], parity: readonly Uint8Array[]): Promise<void>;
  /**
   * Rebuilds lost fragments. `fragments` has k+m slots in stripe order (data 0..k-1, then
   * parity), null where a fragment is missing; at least k must be present. `targets` maps
   * the index of each fragment to rebuild (its slot must be null; data or parity alike, so
   * scrub and repair use the same call) to a caller-provided buffer of the fragment length.
   * Only the targets are written; missing slots that are not targets are simply not rebuilt.
   */
  reconstruct(
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): void;
  /** Like reconstruct(), off the event loop for large fragments (see encodeAsync()). */
  reconstructAsync(
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): Promise<void>;
}

/** Makes codecs; select.ts picks the implementation once per process. */
export interface ErasureCodecFactory {
  readonly implementation: EcImplementation;
  /** Why this implementation is active (logged once at start-up). */
  readonly reason: string;
  create(options: ErasureCodecOptions): ErasureCodec;
  /**
   * `count` zero-filled buffers of `length` bytes laid out for this implementation: views
   * of one slab, each starting 64-byte aligned in memory where the implementation can see
   * addresses (ISA-L's AVX-512 kernels lose ~12% on fragments that are only 16-byte
   * aligned, which is what a fresh Uint8Array gets) and staggered apart. Use it for
   * long-lived fragment, parity and rebuild buffers.
   */
  allocateFragments(count: number, length: number): Uint8Array[];
}

/** Throws EcError unless 1 <= k, 1 <= m, k + m <= EC_FRAGMENTS_MAX. */
export function checkGeometry(options: EcGeometry): void {
  const { k, m } = options;
  if (!Number.isInteger(k) || !Number.isInteger(m) || k < 1 || m < 1 || k + m > EC_FRAGMENTS_MAX) {
    throw new EcError(
      "invalid_geometry",
      `k=${k} m=${m} is not a valid code: need integers 1 <= k, 1 <= m, k + m <= ${EC_FRAGMENTS_MAX}`,
    );
  }
}

/** The async threshold from options, checked. */
export function asyncThresholdBytes(options: ErasureCodecOptions): number {
  const value = options.asyncThresholdBytes ?? EC_ASYNC_THRESHOLD_BYTES_DEFAULT;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new EcError("invalid_geometry", `asyncThresholdBytes=${value} must be an integer >= 0`);
  }
  return value;
}

function checkLength(what: string, buffer: unknown, length: number): void {
  if (!(buffer instanceof Uint8Array)) {
    throw new EcError("not_a_buffer", `${what} is not a Uint8Array`);
  }
  if (buffer.length !== length) {
    throw new EcError(
      "length_mismatch",
      `${what} is ${buffer.length} bytes, other fragments are ${length}`,
    );
  }
}

function firstLength(what: string, buffer: unknown): number {
  if (!(buffer instanceof Uint8Array)) {
    throw new EcError("not_a_buffer", `${what} is not a Uint8Array`);
  }
  const length = buffer.length;
  if (length < 1 || length > EC_FRAGMENT_BYTES_MAX) {
    throw new EcError(
      "bad_fragment_length",
      `${what} is ${length} bytes; fragments must be 1..${EC_FRAGMENT_BYTES_MAX} bytes`,
    );
  }
  return length;
}

/** Byte ranges of two views of the same buffer intersect. */
function rangesOverlap(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

/**
 * Checks encode() arguments and returns the fragment length. Outputs may not overlap
 * inputs or each other: the SIMD kernels would read half-written bytes and corrupt silently.
 */
export function checkEncodeArgs(
  k: number,
  m: number,
  data: readonly Uint8Array[],
  parity: readonly Uint8Array[],
): number {
  if (!Array.isArray(data) || data.length !== k) {
    throw new EcError("wrong_fragment_count", `encode() needs ${k} data fragments`);
  }
  if (!Array.isArray(parity) || parity.length !== m) {
    throw new EcError("wrong_fragment_count", `encode() needs ${m} parity buffers`);
  }
  const length = firstLength("data[0]", data[0]);
  for (let i = 1; i < k; i++) checkLength(`data[${i}]`, data[i], length);
  // Each .buffer read once: the getter is the costly part of this check.
  const buffers: ArrayBufferLike[] = new Array(k + m);
  for (let j = 0; j < k; j++) buffers[j] = data[j]!.buffer;
  for (let i = 0; i < m; i++) {
    const p = parity[i]!;
    checkLength(`parity[${i}]`, p, length);
    const buffer = p.buffer;
    for (let j = 0; j < k + i; j++) {
      if (buffers[j] === buffer && rangesOverlap(p, j < k ? data[j]! : parity[j - k]!)) {
        const other = j < k ? `data[${j}]` : `parity[${j - k}]`;
        throw new EcError("overlapping_buffers", `parity[${i}] overlaps ${other}`);
      }
    }
    buffers[k + i] = buffer;
  }
  return length;
}

/**
 * Checks allocateFragments() arguments and returns the slab stride: the length rounded up
 * to EC_FRAGMENT_ALIGN_BYTES plus the stagger.
 */
export function fragmentStride(count: number, length: number): number {
  if (!Number.isInteger(count) || count < 1 || count > EC_FRAGMENTS_MAX) {
    throw new EcError("wrong_fragment_count", `count=${count} must be 1..${EC_FRAGMENTS_MAX}`);
  }
  if (!Number.isInteger(length) || length < 1 || length > EC_FRAGMENT_BYTES_MAX) {
    throw new EcError(
      "bad_fragment_length",
      `length=${length} must be 1..${EC_FRAGMENT_BYTES_MAX} bytes`,
    );
  }
  const rounded = Math.ceil(length / EC_FRAGMENT_ALIGN_BYTES) * EC_FRAGMENT_ALIGN_BYTES;
  return rounded + EC_FRAGMENT_STAGGER_BYTES;
}

/** `count` views of `length` bytes cut from `slab` every `stride` bytes from `first`. */
export function carveFragments(
  slab: Uint8Array,
  first: number,
  stride: number,
  count: number,
  length: number,
): Uint8Array[] {
  assert(first + (count - 1) * stride + length <= slab.length, "slab too small for fragments");
  return Array.from({ length: count }, (_, i) => {
    const start = first + i * stride;
    return slab.subarray(start, start + length);
  });
}

/** What reconstruct() will do: which k fragments it reads and which it writes. */
export interface ReconstructPlan {
  length: number;
  /** The first k present fragments in stripe order (data first: identity rows are cheap). */
  survivors: number[];
  /** Target indices, ascending. */
  targets: number[];
  /** Cache key for the decode tables of this (survivors, targets) pattern. */
  key: string;
}

/** Checks reconstruct() arguments; null when there is nothing to rebuild. */
export function planReconstruct(
  k: number,
  m: number,
  fragments: readonly (Uint8Array | null)[],
  targets: ReadonlyMap<number, Uint8Array>,
): ReconstructPlan | null {
  const n = k + m;
  if (!Array.isArray(fragments) || fragments.length !== n) {
    throw new EcError("wrong_fragment_count", `reconstruct() needs ${n} fragment slots`);
  }
  if (!(targets instanceof Map)) {
    throw new EcError("invalid_target", "reconstruct() targets must be a Map of index to buffer");
  }
  const survivors: number[] = [];
  let length = -1;
  let present = 0;
  for (let i = 0; i < n; i++) {
    const f = fragments[i];
    if (f === null || f === undefined) continue;
    if (length < 0) length = firstLength(`fragments[${i}]`, f);
    else checkLength(`fragments[${i}]`, f, length);
    present++;
    if (survivors.length < k) survivors.push(i);
  }
  if (present < k) {
    throw new EcError(
      "too_few_fragments",
      `reconstruct() has ${present} of ${n} fragments; any ${k} are needed`,
    );
  }
  if (targets.size === 0) return null;
  const buffers: (ArrayBufferLike | null)[] = new Array(n);
  for (let i = 0; i < n; i++) buffers[i] = fragments[i]?.buffer ?? null;
  const order: number[] = [];
  for (const [index, out] of targets) {
    if (!Number.isInteger(index) || index < 0 || index >= n) {
      throw new EcError("invalid_target", `target index ${index} is outside 0..${n - 1}`);
    }
    if (buffers[index] !== null) {
      throw new EcError("invalid_target", `target ${index} is present; only null slots rebuild`);
    }
    checkLength(`target ${index}`, out, length);
    const buffer = out.buffer;
    for (let i = 0; i < n; i++) {
      if (buffers[i] === buffer && rangesOverlap(out, fragments[i] ?? targets.get(i)!)) {
        const other = fragments[i] ? `fragments[${i}]` : `target ${i}`;
        throw new EcError("overlapping_buffers", `target ${index} overlaps ${other}`);
      }
    }
    // Later targets are checked against this one through the same table.
    buffers[index] = buffer;
    order.push(index);
  }
  // targets.size <= n - present <= m, so the count always fits the coding tables.
  assert(order.length <= m, "more targets than missing fragments");
  if (order.length > 1) order.sort((a, b) => a - b);
  // One char per index (all < 256): a short, collision-free key for the decode tables.
  let key = "";
  for (let i = 0; i < k; i++) key += String.fromCharCode(survivors[i]!);
  key += "/";
  for (let i = 0; i < order.length; i++) key += String.fromCharCode(order[i]!);
  return { length, survivors, targets: order, key };
}

// Decode tables, which callers feed (one entry per erasure pattern they hit), live in the
// base LRU.
export { BoundedLru } from "../base/lru.ts";

/** An object cut into k equal fragments by split(). */
export interface SplitObject {
  fragments: Uint8Array[];
  fragmentLength: number;
  /** The object's length before padding; join() needs it. */
  dataLength: number;
  /** Returns pooled fragment buffers to their pool; a no-op when none were taken. */
  release(): void;
}

/** Fragment length split() uses for an object of `dataLength` bytes. */
export function fragmentLengthFor(dataLength: number, k: number): number {
  assert(Number.isSafeInteger(dataLength) && dataLength >= 0, "dataLength");
  assert(Number.isInteger(k) && k >= 1, "k");
  const raw = Math.max(1, Math.ceil(dataLength / k));
  return Math.ceil(raw / EC_FRAGMENT_ALIGN_BYTES) * EC_FRAGMENT_ALIGN_BYTES;
}

/**
 * Cuts `data` into k fragments of fragmentLengthFor(data.length, k) bytes, zero-padding the
 * tail. When `data` is already exactly k fragments long the fragments are views of it (no
 * copy). Otherwise they are copied into one fresh slab, or, with `pool`, into pool buffers
 * (each at least a fragment long; throws RangeError when the pool is too small or empty).
 */
export function split(data: Uint8Array, k: number, pool?: BufferPool): SplitObject {
  if (!Number.isInteger(k) || k < 1 || k >= EC_FRAGMENTS_MAX) {
    throw new EcError("invalid_geometry", `split() k=${k} must be 1..${EC_FRAGMENTS_MAX - 1}`);
  }
  const fragmentLength = fragmentLengthFor(data.length, k);
  if (fragmentLength > EC_FRAGMENT_BYTES_MAX) {
    throw new EcError("bad_fragment_length", `object of ${data.length} bytes is too large`);
  }
  const fragments: Uint8Array[] = [];
  const noop = (): void => {};
  if (data.length === k * fragmentLength) {
    for (let i = 0; i < k; i++) {
      fragments.push(data.subarray(i * fragmentLength, (i + 1) * fragmentLength));
    }
    return { fragments, fragmentLength, dataLength: data.length, release: noop };
  }
  let release = noop;
  if (pool !== undefined) {
    if (pool.bufferSizeBytes < fragmentLength) {
      throw new RangeError(
        `split() needs ${fragmentLength}-byte fragments; pool buffers are ${pool.bufferSizeBytes}`,
      );
    }
    const taken: Uint8Array[] = [];
    try {
      for (let i = 0; i < k; i++) taken.push(pool.acquireOrThrow());
    } catch (e) {
      for (const b of taken) pool.release(b);
      throw e;
    }
    for (const b of taken) fragments.push(b.subarray(0, fragmentLength));
    release = () => {
      for (const b of taken.splice(0)) pool.release(b);
    };
  } else {
    const slab = new Uint8Array(k * fragmentLength);
    for (let i = 0; i < k; i++) {
      fragments.push(slab.subarray(i * fragmentLength, (i + 1) * fragmentLength));
    }
  }
  for (let i = 0; i < k; i++) {
    const start = i * fragmentLength;
    const chunk = data.subarray(
      Math.min(start, data.length),
      Math.min(start + fragmentLength, data.length),
    );
    fragments[i]!.set(chunk);
    if (chunk.length < fragmentLength) fragments[i]!.fill(0, chunk.length);
  }
  return { fragments, fragmentLength, dataLength: data.length, release };
}

/**
 * The first `dataLength` bytes of the concatenated data fragments. When the fragments are
 * adjacent views of one buffer (as split() makes them) the result is a view, not a copy;
 * otherwise it is written to `out` (or a fresh array) and returned.
 */
export function join(
  fragments: readonly Uint8Array[],
  dataLength: number,
  out?: Uint8Array,
): Uint8Array {
  let total = 0;
  for (const f of fragments) total += f.length;
  if (!Number.isSafeInteger(dataLength) || dataLength < 0 || dataLength > total) {
    throw new EcError(
      "bad_fragment_length",
      `join() dataLength=${dataLength} does not fit in ${total} fragment bytes`,
    );
  }
  const first = fragments[0];
  if (first !== undefined && out === undefined) {
    let contiguous = true;
    for (let i = 1; i < fragments.length && contiguous; i++) {
      const prev = fragments[i - 1]!;
      const f = fragments[i]!;
      contiguous = f.buffer === first.buffer && f.byteOffset === prev.byteOffset + prev.length;
    }
    if (contiguous) return new Uint8Array(first.buffer, first.byteOffset, dataLength);
  }
  const target = out ?? new Uint8Array(dataLength);
  if (target.length < dataLength) {
    throw new RangeError(`join() out is ${target.length} bytes, needs ${dataLength}`);
  }
  let offset = 0;
  for (const f of fragments) {
    if (offset >= dataLength) break;
    const take = Math.min(f.length, dataLength - offset);
    target.set(take === f.length ? f : f.subarray(0, take), offset);
    offset += take;
  }
  return target.length === dataLength ? target : target.subarray(0, dataLength);
}
