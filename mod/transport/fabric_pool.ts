// Frame buffers for the chunk fabric: size classes of pooled buffers, so a 1 MiB fragment
// travels in a buffer that was touched once, not in a fresh allocation that page-faults its
// way in (several times slower on these machines, see mod/base/buffer_pool.ts).

import { assert, BufferPool } from "../base/mod.ts";
import { FABRIC_FRAME_OVERHEAD_BYTES_MAX } from "./fabric_wire.ts";

/** The smallest class: headers, small responses, error texts. */
const SMALL_CLASS_SIZE_BYTES = 4096;
/** The first fragment-sized class; each further class doubles it. */
const FIRST_FRAGMENT_CLASS_SIZE_BYTES = 64 * 1024;

export interface FramePoolOptions {
  /** Largest buffer ever asked for (a whole frame). */
  sizeBytesMax: number;
  /** Bytes each class may own at most (a class holds at least two buffers). */
  classBytesMax: number;
}

export interface FramePoolStats {
  acquires: number;
  /** Acquisitions no pooled buffer could serve: a fresh allocation instead. */
  fresh: number;
  pooledBytes: number;
}

/**
 * Buffers of at least the size asked, from the smallest class that fits. A class that is
 * out of buffers does not block: the caller gets a fresh buffer (counted), since every user
 * already bounds its bytes in flight; the pool only makes the common case cheap.
 */
export class FramePool {
  readonly #classes: BufferPool[] = [];
  readonly #fresh = new WeakSet<Uint8Array>();
  #acquires = 0;
  #freshCount = 0;

  constructor(options: FramePoolOptions) {
    assert(options.sizeBytesMax > 0 && options.classBytesMax > 0, "frame pool sizes");
    const sizes = [SMALL_CLASS_SIZE_BYTES];
    for (
      let fragment = FIRST_FRAGMENT_CLASS_SIZE_BYTES;
      sizes[sizes.length - 1]! < options.sizeBytesMax;
      fragment *= 2
    ) {
      // Each class holds a power-of-two fragment and the largest header and metadata.
      sizes.push(fragment + FABRIC_FRAME_OVERHEAD_BYTES_MAX);
    }
    for (const size of sizes) {
      this.#classes.push(
        new BufferPool({
          bufferSizeBytes: size,
          countMax: Math.max(2, Math.ceil(options.classBytesMax / size)),
        }),
      );
    }
  }

  /** A buffer of at least `sizeBytes`; give it back with release() when done. */
  acquire(sizeBytes: number): Uint8Array {
    this.#acquires++;
    for (const pool of this.#classes) {
      if (pool.bufferSizeBytes < sizeBytes) continue;
      const buffer = pool.acquire();
      if (buffer !== null) return buffer;
      break;
    }
    this.#freshCount++;
    const buffer = new Uint8Array(sizeBytes);
    this.#fresh.add(buffer);
    return buffer;
  }

  release(buffer: Uint8Array): void {
    if (this.#fresh.has(buffer)) {
      this.#fresh.delete(buffer);
      return;
    }
    const pool = this.#classes.find((p) => p.bufferSizeBytes === buffer.length);
    assert(pool !== undefined, "release() of a buffer this frame pool did not lend");
    pool.release(buffer);
  }

  stats(): FramePoolStats {
    let pooledBytes = 0;
    for (const p of this.#classes) pooledBytes += p.stats().allocated * p.bufferSizeBytes;
    return { acquires: this.#acquires, fresh: this.#freshCount, pooledBytes };
  }
}
