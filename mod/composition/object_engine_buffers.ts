// The object engine's write buffers: CDC assembly buffers lent from a pool and envelope
// buffers in shared memory (the hash workers read a chunk where it lies, and sealing writes
// the envelope over it in place), both bounded, with a bounded queue of borrowers.

import { BufferPool } from "../base/mod.ts";
import { CompositionError } from "./errors.ts";
import { ENGINE_BUFFER_WAITERS_MAX } from "./object_engine_limits.ts";

/** Lends buffers of one size from a BufferPool, queueing borrowers when all are out. */
export class BufferLender {
  readonly #pool: BufferPool;
  readonly #waiters: ((buffer: Uint8Array) => void)[] = [];

  constructor(bufferSizeBytes: number, countMax: number) {
    this.#pool = new BufferPool({ bufferSizeBytes, countMax });
  }

  acquire(): Promise<Uint8Array> {
    const buffer = this.#pool.acquire();
    if (buffer !== null) return Promise.resolve(buffer);
    return waitFor(this.#waiters);
  }

  release(buffer: Uint8Array): void {
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter(buffer);
    else this.#pool.release(buffer);
  }
}

export function waitFor<T>(waiters: ((value: T) => void)[]): Promise<T> {
  if (waiters.length >= ENGINE_BUFFER_WAITERS_MAX) {
    return Promise.reject(
      new CompositionError("unavailable", "the engine is out of write buffers; retry"),
    );
  }
  return new Promise((resolve) => waiters.push(resolve));
}

/** An envelope buffer: shared memory, so the hash worker reads the chunk where it lies. */
export interface EnvelopeBuffer {
  bytes: Uint8Array;
  /** Its number at the hash worker (-1: not registered). */
  index: number;
}

/**
 * Envelope buffers of one size in SharedArrayBuffers, allocated on first need (each page
 * touched once) up to `countMax`, then reused; borrowers queue when all are lent.
 */
export class EnvelopeBuffers {
  readonly #size: number;
  readonly #countMax: number;
  readonly #register: (buffer: SharedArrayBuffer) => number;
  readonly #free: EnvelopeBuffer[] = [];
  readonly #waiters: ((buffer: EnvelopeBuffer) => void)[] = [];
  #allocated = 0;

  constructor(
    size: number,
    countMax: number,
    preallocate: number,
    register: (buffer: SharedArrayBuffer) => number,
  ) {
    this.#size = size;
    this.#countMax = countMax;
    this.#register = register;
    for (let i = 0; i < preallocate; i++) this.#free.push(this.#allocate());
  }

  acquire(): Promise<EnvelopeBuffer> {
    const free = this.#free.pop() ?? (this.#allocated < this.#countMax ? this.#allocate() : null);
    return free !== null ? Promise.resolve(free) : waitFor(this.#waiters);
  }

  release(buffer: EnvelopeBuffer): void {
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) waiter(buffer);
    else this.#free.push(buffer);
  }

  #allocate(): EnvelopeBuffer {
    const shared = new SharedArrayBuffer(this.#size);
    const bytes = new Uint8Array(shared);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = 0;
    this.#allocated++;
    return { bytes, index: this.#register(shared) };
  }
}
