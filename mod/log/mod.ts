// Log: shards and their key ranges, the delta format, and the durable Raft log store.
// The lmdb-backed store loads lmdb lazily, so importing this door needs no FFI permission.
export {
  decodeDelta,
  DELTA_CHUNK_REF_BYTES,
  DELTA_CHUNK_REFS_MAX,
  DELTA_CRC_BYTES,
  DELTA_ENCODED_BYTES_MAX,
  DELTA_FORMAT_VERSION,
  DELTA_HEADER_BYTES,
  DELTA_OPS,
  DELTA_PAYLOAD_BYTES_MAX,
  DELTA_TENANT_ID_BYTES,
  DeltaFormatError,
  encodedDeltaBytes,
  encodeDelta,
} from "./delta.ts";
export type { Delta, DeltaOp } from "./delta.ts";
export {
  compareKeys,
  HASHED_KEY_BYTES,
  HASHED_KEY_MIN,
  isShardId,
  rangeContains,
  SHARD_ID_MAX,
  SHARD_MAP_SHARDS_MAX,
  shardForKey,
  ShardMap,
  ShardMapError,
} from "./shard.ts";
export type { ShardId, ShardRange } from "./shard.ts";
export {
  LmdbRaftLogStore,
  openRaftLogEnv,
  RAFT_CONF_MEMBERS_MAX,
  RAFT_ENTRY_CACHE_BYTES_MAX_DEFAULT,
  RAFT_ENTRY_CACHE_ENTRIES_MAX_DEFAULT,
  RAFT_ENV_MAP_SIZE_BYTES_DEFAULT,
  RAFT_LOG_TABLE,
  RAFT_STAGED_WRITES_MAX,
  RAFT_TAIL_VERIFY_ENTRIES_DEFAULT,
  RaftLogCorruptError,
} from "./lmdb_raft_store.ts";
export type { LmdbRaftLogStoreOptions } from "./lmdb_raft_store.ts";
export {
  DeltaLog,
  LogError,
  READ_DELTAS_PAGE_BYTES_MAX,
  READ_DELTAS_PAGE_MAX,
  ShardStateMachine,
} from "./delta_log.ts";
export type {
  AppendResult,
  DeltaListener,
  DeltaLogOptions,
  LogErrorCode,
  LoggedDelta,
  ReadDeltasResult,
  ShardHealth,
} from "./delta_log.ts";
export {
  LogCompactor,
  RAFT_COMPACT_INTERVAL_MS_DEFAULT,
  RAFT_LOG_FOLLOWER_RETAIN_ENTRIES_MAX,
  RAFT_LOG_MARGIN_ENTRIES_DEFAULT,
  RAFT_SNAPSHOT_ENTRIES_DEFAULT,
} from "./compactor.ts";
export type { CompactorShardStats, LogCompactorOptions } from "./compactor.ts";
export {
  decodeInlineSnapshot,
  encodeInlineSnapshot,
  SNAPSHOT_CHUNK_BYTES_MAX,
  SNAPSHOT_INLINE_BYTES_MAX,
  SNAPSHOT_PART_NAME_BYTES_MAX,
  SNAPSHOT_PARTS_MAX,
  SnapshotFormatError,
} from "./snapshot.ts";
export type {
  DurableSnapshotPart,
  InlineSnapshotPart,
  SnapshottingStateMachine,
} from "./snapshot.ts";
