// A bounded memory cache of chunk plaintexts read through the engine, least recently used
// first out. Chunk data files are opened with O_DIRECT, so the kernel's page cache holds
// none of it; this is the server's replacement for it (as BlueStore keeps its own cache).
//
// Safe to share across tenants because a chunk id names one content for good: the id is
// the SHA-256 of the plaintext (or an HMAC under a tenant's dedup key), so a cached entry
// can never be stale, and a reader reaches an id only through a composition it was allowed
// to resolve. Entries are handed out read-only by contract: callers must not write into
// them (the engine decrypts misses into their own buffers).

import { counter, gauge } from "../obs/mod.ts";

/** Chunks larger than this fraction of the bound are not cached (one would evict the rest). */
const ENTRY_FRACTION_MAX = 4;

const lookups = counter<"outcome">({
  name: "kiseki_chunk_cache_lookups_total",
  help: "Chunk cache lookups by outcome (hit or miss)",
  labelNames: ["outcome"],
});
const cachedBytes = gauge({
  name: "kiseki_chunk_cache_bytes",
  help: "Bytes held by the chunk cache",
});
const cachedEntries = gauge({
  name: "kiseki_chunk_cache_entries",
  help: "Chunks held by the chunk cache",
});

export class ChunkCache {
  readonly maxBytes: number;
  /** Insertion order is recency order: a hit moves its entry to the end. */
  readonly #entries = new Map<string, Uint8Array>();
  #bytes = 0;
  hits = 0;
  misses = 0;

  constructor(maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new RangeError(`chunk cache bound ${maxBytes} must be a byte count >= 0`);
    }
    this.maxBytes = maxBytes;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cached plaintext of `key` (do not modify it), or undefined. */
  get(key: string): Uint8Array | undefined {
    if (this.maxBytes === 0) return undefined;
    const hit = this.#entries.get(key);
    if (hit === undefined) {
      this.misses++;
      lookups.inc({ outcome: "miss" });
      return undefined;
    }
    this.hits++;
    lookups.inc({ outcome: "hit" });
    this.#entries.delete(key);
    this.#entries.set(key, hit);
    return hit;
  }

  /** Keeps `bytes` (which the cache now owns: never modify it afterwards) under `key`. */
  set(key: string, bytes: Uint8Array): void {
    if (bytes.length * ENTRY_FRACTION_MAX > this.maxBytes) return;
    const old = this.#entries.get(key);
    if (old !== undefined) {
      this.#entries.delete(key);
      this.#bytes -= old.length;
    }
    this.#entries.set(key, bytes);
    this.#bytes += bytes.length;
    for (const [k, v] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(k);
      this.#bytes -= v.length;
    }
    this.#report();
  }

  delete(key: string): void {
    const old = this.#entries.get(key);
    if (old === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= old.length;
    this.#report();
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
    this.#report();
  }

  #report(): void {
    cachedBytes.set({}, this.#bytes);
    cachedEntries.set({}, this.#entries.size);
  }
}
