// The one least-recently-used map of the codebase: bounded by entry count and by total
// bytes, so a cache that callers feed (decode tables, tenant keys, client chunks) cannot
// grow past what its owner named.

import { assert } from "./assert.ts";

interface LruEntry<V> {
  value: V;
  bytes: number;
}

/**
 * A map that keeps at most `entriesMax` entries and `bytesMax` bytes (as each set() says),
 * dropping the least recently used first and telling `onEvict` of each entry it drops.
 * The newest entry is kept even when it alone is over the byte bound: it is about to be used;
 * callers that must never exceed the bound check the size before set().
 */
export class BoundedLru<V, K = string> {
  readonly #entries = new Map<K, LruEntry<V>>();
  readonly #onEvict: ((key: K, value: V) => void) | null;
  #bytes = 0;
  #newestKey: K | undefined = undefined;

  constructor(
    readonly entriesMax: number,
    readonly bytesMax: number,
    onEvict?: (key: K, value: V) => void,
  ) {
    assert(entriesMax >= 1 && bytesMax >= 1, "BoundedLru limits must be positive");
    this.#onEvict = onEvict ?? null;
  }

  /** The value, now the most recently used. */
  get(key: K): V | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    // Steady state repeats one key; re-inserting the newest entry would only cost time.
    if (key !== this.#newestKey) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      this.#newestKey = key;
    }
    return entry.value;
  }

  /** The value without touching its recency. */
  peek(key: K): V | undefined {
    return this.#entries.get(key)?.value;
  }

  has(key: K): boolean {
    return this.#entries.has(key);
  }

  set(key: K, value: V, bytes: number): void {
    assert(Number.isSafeInteger(bytes) && bytes >= 0, "BoundedLru entry bytes");
    const old = this.#entries.get(key);
    if (old !== undefined) {
      this.#entries.delete(key);
      this.#bytes -= old.bytes;
    }
    this.#entries.set(key, { value, bytes });
    this.#newestKey = key;
    this.#bytes += bytes;
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size <= this.entriesMax && this.#bytes <= this.bytesMax) break;
      if (oldest === key) break;
      this.#entries.delete(oldest);
      this.#bytes -= entry.bytes;
      this.#onEvict?.(oldest, entry.value);
    }
  }

  /** Removes an entry without calling onEvict (the caller knows why it goes). */
  delete(key: K): boolean {
    const entry = this.#entries.get(key);
    if (entry === undefined) return false;
    this.#entries.delete(key);
    this.#bytes -= entry.bytes;
    if (key === this.#newestKey) this.#newestKey = undefined;
    return true;
  }

  /** Removes every entry without calling onEvict. */
  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
    this.#newestKey = undefined;
  }

  /** Keys from least to most recently used. */
  keys(): IterableIterator<K> {
    return this.#entries.keys();
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }
}
