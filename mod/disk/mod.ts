// Disk: the device and key-value I/O ports and their adapters. lmdb.ts is the only module
// that imports the `lmdb` package (loaded lazily, so importing this door needs no FFI).
export {
  compareBytes,
  fileExists,
  injectCommitFailure,
  KV_KEY_BYTES_MAX,
  KV_PAGE_KEY_BYTES,
  KV_READERS_MAX_DEFAULT,
  KV_REKEY_BATCH_RECORDS,
  KV_TABLES_MAX_DEFAULT,
  KV_TXN_OPERATIONS_MAX,
  KvError,
  kvFailureKind,
  LMDB_ENV_VARS,
  LMDB_SYS_PERMISSIONS,
  lmdbPermissionFlags,
  openKvEnv,
  transactionRetrying,
} from "./lmdb.ts";
export type {
  KvEntry,
  KvEnv,
  KvEnvOptions,
  KvFailureKind,
  KvPageKeys,
  KvRangeOptions,
  KvRetryPolicy,
  KvTable,
  KvTxn,
} from "./lmdb.ts";
export {
  checkBatch,
  DISK_ALLOCATE_BYTES_MAX,
  DISK_BATCH_OPS_MAX,
  DISK_DIRECT_ALIGNMENT_BYTES,
  DISK_ERRNO,
  DISK_OP_BYTES_MAX,
  DISK_QUEUED_OPS_MAX,
  DISK_SIZE_BYTES_MAX,
  DiskError,
  diskErrorFromErrno,
  isDiskErrorCode,
} from "./device.ts";
export type {
  Disk,
  DiskErrorCode,
  DiskOp,
  DiskOpener,
  DiskOpenOptions,
  DiskOpKind,
} from "./device.ts";
export { FILE_DISK_HANDLES_DEFAULT, FILE_DISK_HANDLES_MAX, FileDisk } from "./file_disk.ts";
export type { FileDiskOptions } from "./file_disk.ts";
export {
  probeUring,
  URING_QUEUE_DEPTH_DEFAULT,
  URING_QUEUE_DEPTH_MAX,
  UringDisk,
  uringSchedulerTotals,
  UringSetupError,
} from "./uring_disk.ts";
export type { UringDiskOptions } from "./uring_disk.ts";
export {
  FaultyDisk,
  SIM_DISK_SIZE_BYTES_MAX,
  SIM_TEAR_SECTOR_BYTES_DEFAULT,
  SimDisk,
} from "./faulty_disk.ts";
export type {
  DiskCall,
  FailOptions,
  SimCrashOptions,
  SimCrashReport,
  SimDiskOptions,
} from "./faulty_disk.ts";
export {
  FileWal,
  injectWalWriteFailure,
  WAL_BATCH_RECORDS_MAX,
  WAL_QUEUED_BYTES_MAX,
  WAL_RECORD_BYTES_MAX,
  WAL_SEGMENT_BYTES_DEFAULT,
  WAL_SEGMENT_BYTES_MIN,
  WAL_SEGMENTS_MAX,
  WAL_SPACE_RETRY_MS,
  WAL_SPACE_WAIT_MS,
  WalCorruptError,
} from "./wal.ts";
export type { WalOptions, WalRecord, WalStats } from "./wal.ts";
export {
  WAL_CHECKPOINT_BYTES_DEFAULT,
  WAL_CHECKPOINT_DELAY_MS_DEFAULT,
  WAL_CHECKPOINT_OPERATIONS_MAX,
  WAL_CHECKPOINT_TABLE,
  WAL_OVERLAY_BYTES_MAX,
  WAL_SYNC_WAITERS_MAX,
  WalKvEnv,
} from "./wal_kv.ts";
export type { WalKvEnvOptions } from "./wal_kv.ts";
export { chooseDiskMechanism, selectDisk } from "./select.ts";
export type { DiskMechanism, SelectDiskOptions } from "./select.ts";
