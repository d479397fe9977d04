// The client's chunk cache: L1 plaintext in memory, L2 sealed on local disk, chunk-addressed
// (a chunk many files share is held once), each level bounded and least-recently-used.
// Concurrent misses of one chunk share one fetch. Modes (KISEKI_CACHE_MODE):
//   organic  every chunk read or written is kept in L1 and L2, evicted by recency;
//   pinned   L1 as organic, but L2 holds only what staging pinned (reads never fill it);
//   bypass   nothing is kept (createChunkCache() hands out the bypass cache for it).
// Pinned L2 entries are never evicted by reads; release() makes them organic again.

import { assert, BoundedLru, type CacheMode, toHex } from "../../base/mod.ts";
import { counter, gauge, log, type Logger } from "../../obs/mod.ts";
import type { ChunkCache } from "../cache_port.ts";
import type { DiskL2Store, L2Stats } from "./l2_store.ts";

/** Chunks L1 holds at most, whatever their size. */
export const L1_ENTRIES_MAX = 1024 * 1024;
/** Distinct chunks being fetched at once that share their fetch; past it, misses fetch alone. */
export const CACHE_INFLIGHT_MAX = 4096;

export type CacheLevel = "l1" | "l2";

export interface CacheStats {
  l1Hits: number;
  l1Misses: number;
  l2Hits: number;
  l2Misses: number;
  /** Reads that found a fetch of the same chunk in flight and waited for it. */
  sharedFetches: number;
  fetches: number;
  fetchedBytes: number;
  l1Entries: number;
  l1Bytes: number;
  l1Evicted: number;
  wipes: number;
  l2: L2Stats | null;
}

export interface TieredChunkCacheOptions {
  mode: Exclude<CacheMode, "bypass">;
  l1MaxBytes: number;
  /** The disk level; null runs L1 only (a node without local disk to spare). */
  l2: DiskL2Store | null;
  logger?: Logger;
}

const hitsTotal = counter<"level">({
  name: "kiseki_client_cache_hits_total",
  help: "Client chunk cache hits, per level (l1 memory, l2 local disk)",
  labelNames: ["level"],
});
const missesTotal = counter<"level">({
  name: "kiseki_client_cache_misses_total",
  help: "Client chunk cache misses, per level",
  labelNames: ["level"],
});
const hitBytesTotal = counter<"level">({
  name: "kiseki_client_cache_hit_bytes_total",
  help: "Plaintext bytes served from the client chunk cache, per level",
  labelNames: ["level"],
});
const fetchedBytesTotal = counter({
  name: "kiseki_client_cache_fetched_bytes_total",
  help: "Sealed bytes the client chunk cache fetched from the cluster on misses",
});
const corruptTotal = counter({
  name: "kiseki_client_cache_l2_corrupt_total",
  help: "L2 entries that failed their checksum, were dropped and fetched again",
});
const wipesTotal = counter<"reason">({
  name: "kiseki_client_cache_wipes_total",
  help: "Client chunk cache wipes, per reason",
  labelNames: ["reason"],
});

// Levels' sizes, read at scrape time from every live cache (a process normally has one).
const liveCaches = new Set<TieredChunkCache>();
/** Caches a process may have open at once (tests open several). */
const LIVE_CACHES_MAX = 64;
gauge<"level" | "kind">({
  name: "kiseki_client_cache_bytes",
  help: "Bytes held by the client chunk cache, per level (kind: all or pinned)",
  labelNames: ["level", "kind"],
  collect(set) {
    let l1 = 0, l2 = 0, pinned = 0;
    for (const c of liveCaches) {
      const s = c.stats();
      l1 += s.l1Bytes;
      l2 += s.l2?.bytes ?? 0;
      pinned += s.l2?.pinnedBytes ?? 0;
    }
    set({ level: "l1", kind: "all" }, l1);
    set({ level: "l2", kind: "all" }, l2);
    set({ level: "l2", kind: "pinned" }, pinned);
  },
});

/** The cache of organic and pinned modes. Plaintext it returns is shared: never mutate it. */
export class TieredChunkCache implements ChunkCache {
  readonly mode: Exclude<CacheMode, "bypass">;
  readonly l1MaxBytes: number;
  readonly #l1: BoundedLru<Uint8Array>;
  readonly #l2: DiskL2Store | null;
  readonly #inflight = new Map<string, Promise<Uint8Array>>();
  readonly #logger: Logger;
  #stats = {
    l1Hits: 0,
    l1Misses: 0,
    l2Hits: 0,
    l2Misses: 0,
    sharedFetches: 0,
    fetches: 0,
    fetchedBytes: 0,
    l1Evicted: 0,
    wipes: 0,
  };
  // Bumped by wipe(): a fetch that began before a wipe must not refill the cache after it.
  #generation = 0;
  #closed = false;

  constructor(options: TieredChunkCacheOptions) {
    assert(options.mode === "organic" || options.mode === "pinned", "cache mode");
    assert(Number.isSafeInteger(options.l1MaxBytes) && options.l1MaxBytes >= 0, "l1MaxBytes");
    this.mode = options.mode;
    this.l1MaxBytes = options.l1MaxBytes;
    this.#l1 = new BoundedLru(L1_ENTRIES_MAX, Math.max(1, options.l1MaxBytes), () => {
      this.#stats.l1Evicted++;
    });
    this.#l2 = options.l2;
    this.#logger = options.logger ?? log;
    if (liveCaches.size < LIVE_CACHES_MAX) liveCaches.add(this);
  }

  get l2(): DiskL2Store | null {
    return this.#l2;
  }

  async read(
    chunkId: Uint8Array,
    fetchSealed: () => Promise<Uint8Array>,
    open: (sealed: Uint8Array) => Promise<Uint8Array>,
  ): Promise<Uint8Array> {
    assert(!this.#closed, "read() after close()");
    const hex = toHex(chunkId);
    const inL1 = this.#l1.get(hex);
    if (inL1 !== undefined) {
      this.#stats.l1Hits++;
      hitsTotal.inc({ level: "l1" });
      hitBytesTotal.inc({ level: "l1" }, inL1.length);
      return inL1;
    }
    this.#stats.l1Misses++;
    missesTotal.inc({ level: "l1" });
    const shared = this.#inflight.get(hex);
    if (shared !== undefined) {
      this.#stats.sharedFetches++;
      return await shared;
    }
    const load = this.#load(chunkId, hex, fetchSealed, open);
    if (this.#inflight.size >= CACHE_INFLIGHT_MAX) return await load;
    this.#inflight.set(hex, load);
    try {
      return await load;
    } finally {
      this.#inflight.delete(hex);
    }
  }

  async #load(
    chunkId: Uint8Array,
    hex: string,
    fetchSealed: () => Promise<Uint8Array>,
    open: (sealed: Uint8Array) => Promise<Uint8Array>,
  ): Promise<Uint8Array> {
    const generation = this.#generation;
    if (this.#l2 !== null) {
      const got = await this.#l2.read(chunkId);
      if (got.kind === "hit") {
        let plaintext: Uint8Array | null = null;
        try {
          plaintext = await open(got.sealed);
        } catch (e) {
          // Sealed bytes that pass the checksum but do not open (a key that changed under
          // them): treated like corruption, dropped and refetched.
          this.#logger.warn("client cache: L2 entry did not open; fetching it again", {
            chunk: hex,
            error: (e as Error).message,
          });
          await this.#l2.drop(chunkId);
        }
        if (plaintext !== null) {
          this.#stats.l2Hits++;
          hitsTotal.inc({ level: "l2" });
          hitBytesTotal.inc({ level: "l2" }, plaintext.length);
          if (generation === this.#generation) this.#keepL1(hex, plaintext);
          return plaintext;
        }
      } else if (got.kind === "corrupt") {
        corruptTotal.inc();
        this.#logger.warn("client cache: L2 entry corrupt, dropped; fetching it again", {
          chunk: hex,
          reason: got.reason,
        });
      }
      this.#stats.l2Misses++;
      missesTotal.inc({ level: "l2" });
    }
    const sealed = await fetchSealed();
    this.#stats.fetches++;
    this.#stats.fetchedBytes += sealed.length;
    fetchedBytesTotal.inc(sealed.length);
    const plaintext = await open(sealed);
    if (generation === this.#generation && !this.#closed) {
      this.#keepL1(hex, plaintext);
      if (this.mode === "organic") this.#l2?.put(chunkId, sealed);
    }
    return plaintext;
  }

  wrote(chunkId: Uint8Array, sealed: Uint8Array, plaintext: Uint8Array): void {
    if (this.#closed) return;
    this.#keepL1(toHex(chunkId), plaintext);
    if (this.mode === "organic") this.#l2?.put(chunkId, sealed);
  }

  #keepL1(hex: string, plaintext: Uint8Array): void {
    // A chunk larger than all of L1 would push everything else out for nothing.
    if (plaintext.length > this.l1MaxBytes) return;
    this.#l1.set(hex, plaintext, plaintext.length);
  }

  /**
   * Pins a chunk into L2 (staging): fetched only when L2 does not already hold it. Returns
   * whether it was fetched. Throws L2FullError when pinned bytes would pass KISEKI_CACHE_L2_MAX.
   */
  async pin(chunkId: Uint8Array, fetchSealed: () => Promise<Uint8Array>): Promise<boolean> {
    assert(this.#l2 !== null, "pin() needs an L2 cache");
    await this.#l2.settled(chunkId);
    const entry = this.#l2.entry(chunkId);
    if (entry?.pinned) return false;
    if (entry !== null) {
      const got = await this.#l2.read(chunkId);
      if (got.kind === "hit") {
        await this.#l2.pin(chunkId, got.sealed);
        return false;
      }
    }
    const sealed = await fetchSealed();
    this.#stats.fetches++;
    this.#stats.fetchedBytes += sealed.length;
    fetchedBytesTotal.inc(sealed.length);
    await this.#l2.pin(chunkId, sealed);
    return true;
  }

  /** Unpins chunks (staging --release): they stay in L2 as organic entries until evicted. */
  async release(chunkIds: Iterable<Uint8Array>): Promise<number> {
    return this.#l2 === null ? 0 : await this.#l2.release(chunkIds);
  }

  async wipe(reason: string): Promise<void> {
    this.#generation++;
    this.#stats.wipes++;
    wipesTotal.inc({ reason });
    this.#l1.clear();
    await this.#l2?.wipe();
    this.#logger.info("client cache wiped", { reason });
  }

  stats(): CacheStats {
    return {
      ...this.#stats,
      l1Entries: this.#l1.size,
      l1Bytes: this.#l1.bytes,
      l2: this.#l2?.stats() ?? null,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    liveCaches.delete(this);
    this.#l1.clear();
    await this.#l2?.close();
  }
}
