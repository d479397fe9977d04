// Turns the KISEKI_CACHE_* settings into the client's cache: bypass keeps nothing; organic
// and pinned open L2 under KISEKI_CACHE_DIR (rebuilding its index), wipe it when the last
// contact is older than the disconnect bound, and start the disconnect watch.

import type { CacheMode } from "../../base/mod.ts";
import { log, type Logger } from "../../obs/mod.ts";
import { bypassChunkCache, type ChunkCache } from "../cache_port.ts";
import { type DisconnectTimers, DisconnectWipe } from "./disconnect_wipe.ts";
import { DiskL2Store } from "./l2_store.ts";
import { TieredChunkCache } from "./tiered_cache.ts";

export interface CreateChunkCacheOptions {
  mode: CacheMode;
  dir: string;
  l1MaxBytes: number;
  l2MaxBytes: number;
  disconnectWipeMs: number;
  logger?: Logger;
  timers?: DisconnectTimers;
}

/** What the client holds: the cache (the port), the tiered one when there is one, the watch. */
export interface ClientCache {
  cache: ChunkCache;
  tiered: TieredChunkCache | null;
  /** Tell it connected() / disconnected(); null in bypass mode (nothing to wipe). */
  disconnect: DisconnectWipe | null;
  close(): Promise<void>;
}

export async function createChunkCache(options: CreateChunkCacheOptions): Promise<ClientCache> {
  const logger = options.logger ?? log;
  if (options.mode === "bypass") {
    logger.info("client cache", { mode: "bypass" });
    return { cache: bypassChunkCache, tiered: null, disconnect: null, close: async () => {} };
  }
  const l2 = options.l2MaxBytes > 0
    ? await DiskL2Store.open({ dir: options.dir, maxBytes: options.l2MaxBytes })
    : null;
  const tiered = new TieredChunkCache({
    mode: options.mode,
    l1MaxBytes: options.l1MaxBytes,
    l2,
    logger,
  });
  const disconnect = new DisconnectWipe({
    cache: tiered,
    l2,
    boundMs: options.disconnectWipeMs,
    timers: options.timers,
  });
  await disconnect.checkAtStart();
  const s = tiered.stats();
  logger.info("client cache", {
    mode: options.mode,
    dir: l2 === null ? "none" : options.dir,
    l1MaxBytes: options.l1MaxBytes,
    l2MaxBytes: options.l2MaxBytes,
    l2Entries: s.l2?.entries ?? 0,
    l2Bytes: s.l2?.bytes ?? 0,
  });
  return {
    cache: tiered,
    tiered,
    disconnect,
    close: async () => {
      await disconnect.close();
      await tiered.close();
    },
  };
}
