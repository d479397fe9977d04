// Chunk: content-defined chunking, chunk identity, and the chunk store: placement by
// rendezvous hashing, EC or copies on pools of devices, refcount GC with holds, scrub/repair.
export {
  CDC_AVG_BYTES_DEFAULT,
  CDC_AVG_BYTES_MAX,
  CDC_AVG_BYTES_MIN,
  CDC_MAX_BYTES_DEFAULT,
  CDC_MAX_BYTES_MAX,
  CDC_MIN_BYTES_DEFAULT,
  CDC_NORMALIZATION_LEVEL_DEFAULT,
  CDC_NORMALIZATION_LEVEL_MAX,
  cdcParams,
  chunkStream,
  ContentDefinedChunker,
  cutPoints,
  splitChunks,
} from "./cdc.ts";
export type { CdcOptions, CdcParams, ChunkStreamOptions, StreamChunk } from "./cdc.ts";
export {
  CHUNK_ID_BYTES,
  chunkIdEquals,
  ChunkIdError,
  chunkIdFromBytes,
  chunkIdFromHex,
  chunkIdToHex,
  computeChunkId,
  DEDUP_MODES,
  hmacChunkId,
  sha256ChunkId,
  TENANT_DEDUP_KEY_BYTES_MIN,
} from "./chunk_id.ts";
export type { ChunkId, DedupMode } from "./chunk_id.ts";
export { ChunkCache } from "./chunk_cache.ts";
export { CHUNK_BYTES_MAX_DEFAULT, ChunkStoreError, LocalChunkStore } from "./chunk_store.ts";
export type {
  ChunkRead,
  ChunkStat,
  ChunkStore,
  ChunkStoreErrorCode,
  LocalChunkStoreOptions,
  PoolReport,
  PutOptions,
  PutResult,
} from "./chunk_store.ts";
export {
  CLUSTER_FRAGMENT_TIMEOUT_MS_DEFAULT,
  CLUSTER_REPAIR_BYTES_PER_SECOND_DEFAULT,
  ClusterChunkStore,
  evicts,
  FragmentPeerError,
  RecordedClusterMembers,
  StaticClusterMembers,
  takesFragments,
} from "./cluster_store.ts";
export type {
  ClusterChunkStoreOptions,
  ClusterMember,
  ClusterMembers,
  ClusterNodeState,
  FragmentPeers,
  RebalanceProgress,
  RecordedNode,
} from "./cluster_store.ts";
export {
  ClusterPlacement,
  nodeLossesSurvivable,
  perNodeMaxFor,
  safeFragmentsFor,
} from "./cluster_placement.ts";
export type { ClusterDevice } from "./cluster_placement.ts";
export { FabricFragmentPeers, fragmentHandler } from "./fabric_fragments.ts";
export { fragmentId, LocalFragmentStore } from "./fragment_store.ts";
export type { DeviceInventory, InventoryDevice } from "./fragment_store.ts";
export { ChunkGc, GC_COMPACT_BYTES_PER_SECOND_DEFAULT, GC_IDLE_POLL_MS_DEFAULT } from "./gc.ts";
export type {
  ChunkGcOptions,
  GcBackground,
  GcBackgroundOptions,
  GcBackgroundStats,
  GcRunReport,
  GcStepReport,
} from "./gc.ts";
export { ChunkScrubber } from "./scrub.ts";
export type { ChunkScrubberOptions, ScrubPass, ScrubProgress, ScrubReport } from "./scrub.ts";
export { HoldError, LmdbHoldStore } from "./holds.ts";
export type { HoldSpec, HoldSummary } from "./holds.ts";
export { Placement, PlacementError } from "./placement.ts";
export type { PlacementDevice } from "./placement.ts";
export {
  defaultDurability,
  defaultPoolSpecs,
  formatDurability,
  loadPoolSpecs,
  parseDurability,
  parsePoolSpecs,
  POOLS_ENV,
  PoolSpecError,
} from "./pool.ts";
export type { DeviceSpec, Durability, PoolContext, PoolSpec } from "./pool.ts";
export {
  SCRUB_PASS_INTERVAL_MS_DEFAULT,
  SCRUB_RATE_BYTES_PER_SECOND_DEFAULT,
  ScrubRunner,
} from "./scrub_runner.ts";
export type { ScrubRunnerOptions, ScrubState, ScrubStatus } from "./scrub_runner.ts";
