// The client's chunk cache: L1 memory and L2 local disk behind the ChunkCache port, the
// disconnect bound that wipes it, staging (datasets pinned into L2), and the one place that
// turns configuration into a cache.
export { CACHE_INFLIGHT_MAX, L1_ENTRIES_MAX, TieredChunkCache } from "./tiered_cache.ts";
export type { CacheLevel, CacheStats, TieredChunkCacheOptions } from "./tiered_cache.ts";
export {
  decodeL2Header,
  DiskL2Store,
  encodeL2Header,
  L2_CHUNK_ID_BYTES_MAX,
  L2_ENTRIES_MAX,
  L2_HEADER_BYTES,
  L2_WRITES_PENDING_MAX,
  L2FullError,
} from "./l2_store.ts";
export type { DiskL2StoreOptions, L2Entry, L2Read, L2Stats } from "./l2_store.ts";
export { CONTACT_STAMP_INTERVAL_MS_MAX, DisconnectWipe, SYSTEM_TIMERS } from "./disconnect_wipe.ts";
export type { DisconnectTimers, DisconnectWipeOptions } from "./disconnect_wipe.ts";
export { createChunkCache } from "./create.ts";
export type { ClientCache, CreateChunkCacheOptions } from "./create.ts";
export {
  datasetId,
  STAGE_CHUNKS_PER_FILE_MAX,
  STAGE_DATASETS_MAX,
  STAGE_FILES_MAX,
  StageError,
  Stager,
} from "./stage.ts";
export type {
  DatasetChunk,
  DatasetFile,
  DatasetSource,
  StagerOptions,
  StageRunOptions,
  StageState,
} from "./stage.ts";
export { formatBytes, formatDuration, formatProgress } from "./progress.ts";
export type { Progress } from "./progress.ts";
