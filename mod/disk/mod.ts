// Disk: the device and key-value I/O ports and their adapters. lmdb.ts is the only module
// that imports the `lmdb` package (loaded lazily, so importing this door needs no FFI).
export {
  compareBytes,
  KV_KEY_BYTES_MAX,
  KV_READERS_MAX_DEFAULT,
  KV_TABLES_MAX_DEFAULT,
  KV_TXN_OPERATIONS_MAX,
  KvError,
  LMDB_ENV_VARS,
  LMDB_SYS_PERMISSIONS,
  lmdbPermissionFlags,
  openKvEnv,
} from "./lmdb.ts";
export type { KvEntry, KvEnv, KvEnvOptions, KvRangeOptions, KvTable, KvTxn } from "./lmdb.ts";
