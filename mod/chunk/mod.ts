// Chunk: content-defined chunking and chunk identity (placement, EC/replication, devices,
// refcount GC, scrub and repair come later).
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
