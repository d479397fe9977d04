// View: materialized views folded from the shard delta log (bucket listings, POSIX tree),
// persisted in lmdb with a watermark per shard, rebuilt from the log on demand.
export {
  foldPayload,
  openViewEnv,
  VIEW_BATCH_DELTAS_MAX,
  VIEW_BATCH_OPERATIONS_MAX,
  VIEW_CLEAR_KEYS_PER_TXN,
  VIEW_DELTA_OPERATIONS_MAX,
  VIEW_ENV_MAP_SIZE_BYTES_DEFAULT,
  VIEW_FOLD_WAITERS_MAX,
  VIEW_OUTCOME_WAITERS_MAX,
  VIEW_QUEUE_BYTES_MAX,
  VIEW_QUEUE_DELTAS_MAX,
  VIEW_RETRY_MS_MAX,
  VIEW_RETRY_MS_MIN,
  VIEW_TASKS_MAX,
  ViewStore,
} from "./view_store.ts";
export type {
  DeltaFeed,
  DeltaSource,
  ShardViewStats,
  TenantDrop,
  ViewStoreOptions,
  ViewStoreStats,
} from "./view_store.ts";
export { BucketView, UPLOADS_PER_NAMESPACE_MAX } from "./bucket_view.ts";
export { FIRST_COOKIE, PosixView, TREE_DEPTH_MAX } from "./posix_view.ts";
export { KEY_VERBATIM_BYTES, LONG_KEY_GROUP_ENTRIES_MAX } from "./_ordered.ts";
export { VIEW_FORMAT_VERSION, ViewCorruptError } from "./_records.ts";
export { VIEW_TABLE_NAMES } from "./_fold.ts";
