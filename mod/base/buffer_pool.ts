// Preallocated, reusable byte buffers for hot paths. Fresh large allocations page-fault
// their way in at a fraction of memory bandwidth; a pool touches each page once.

import { assert } from "./assert.ts";

export interface BufferPoolOptions {
  /** Size of every buffer in the pool. */
  bufferSizeBytes: number;
  /** Buffers allocated up front. */
  preallocateCount?: number;
  /** Upper bound on buffers the pool will ever own (free + lent). */
  countMax: number;
}

export interface BufferPoolStats {
  bufferSizeBytes: number;
  countMax: number;
  allocated: number;
  free: number;
  lent: number;
  acquires: number;
  misses: number;
}

/**
 * A pool of equal-sized buffers. `acquire()` returns a free buffer (allocating while under
 * `countMax`) or null when every buffer is lent, so callers choose to wait, shed or fall
 * back; `release()` returns it. Buffers are slices of slabs, so neighbours share pages.
 */
export class BufferPool {
  readonly bufferSizeBytes: number;
  readonly countMax: number;
  #free: Uint8Array[] = [];
  #lent = new Set<Uint8Array>();
  #allocated = 0;
  #acquires = 0;
  #misses = 0;

  constructor(options: BufferPoolOptions) {
    const { bufferSizeBytes, countMax, preallocateCount = 0 } = options;
    assert(Number.isInteger(bufferSizeBytes) && bufferSizeBytes > 0, "bufferSizeBytes > 0");
    assert(Number.isInteger(countMax) && countMax > 0, "countMax > 0");
    assert(preallocateCount >= 0 && preallocateCount <= countMax, "preallocateCount <= countMax");
    this.bufferSizeBytes = bufferSizeBytes;
    this.countMax = countMax;
    if (preallocateCount > 0) this.#grow(preallocateCount);
  }

  /** A buffer of exactly `bufferSizeBytes`, or null if the pool is exhausted. */
  acquire(): Uint8Array | null {
    this.#acquires++;
    if (this.#free.length === 0) {
      if (this.#allocated >= this.countMax) {
        this.#misses++;
        return null;
      }
      // Grow in slabs so many small buffers do not each cost an allocation.
      const slabCount = Math.min(
        this.countMax - this.#allocated,
        Math.max(1, Math.floor((4 << 20) / this.bufferSizeBytes)),
        Math.max(1, this.#allocated),
      );
      this.#grow(slabCount);
    }
    const buffer = this.#free.pop()!;
    this.#lent.add(buffer);
    return buffer;
  }

  /** Like acquire(), but throws when exhausted: for callers that size the pool exactly. */
  acquireOrThrow(): Uint8Array {
    const buffer = this.acquire();
    if (buffer === null) {
      throw new RangeError(`buffer pool exhausted (${this.countMax} x ${this.bufferSizeBytes} B)`);
    }
    return buffer;
  }

  /** Returns a buffer obtained from acquire(). Releasing twice is a programmer error. */
  release(buffer: Uint8Array): void {
    assert(this.#lent.delete(buffer), "release() of a buffer this pool did not lend");
    this.#free.push(buffer);
  }

  stats(): BufferPoolStats {
    return {
      bufferSizeBytes: this.bufferSizeBytes,
      countMax: this.countMax,
      allocated: this.#allocated,
      free: this.#free.length,
      lent: this.#lent.size,
      acquires: this.#acquires,
      misses: this.#misses,
    };
  }

  #grow(count: number): void {
    const slab = new Uint8Array(count * this.bufferSizeBytes);
    // Touch each page now so the first request does not pay the page faults.
    for (let i = 0; i < slab.length; i += 4096) slab[i] = 0;
    for (let i = 0; i < count; i++) {
      this.#free.push(slab.subarray(i * this.bufferSizeBytes, (i + 1) * this.bufferSizeBytes));
    }
    this.#allocated += count;
  }
}
