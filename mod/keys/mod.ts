// Keys: system master key epochs (the SystemKeyProvider port and the node-local sealed
// provider), and tenant KMSs (the TenantKms port, the built-in provider, and the tenant
// payload helper for deltas), and the cluster key that seals replicated cluster state, with
// its exchange over the node transport. Vault Transit and the key server client come later.
export {
  KEY_STORE_MAP_SIZE_BYTES_DEFAULT,
  KeyStoreError,
  LocalKeyStore,
  LocalSealedKeyProvider,
  NODE_KEK_FILE,
  SYSTEM_KEY_EPOCH_MAX,
  SYSTEM_KEY_EPOCHS_MAX,
  SYSTEM_MASTER_KEY_BYTES,
  UnknownEpochError,
} from "./system_keys.ts";
export type {
  LocalKeyStoreOptions,
  LocalSealedKeyProviderOptions,
  SystemKeyEpoch,
  SystemKeyProvider,
} from "./system_keys.ts";
export {
  InternalTenantKms,
  openTenantPayload,
  sealTenantPayload,
  TENANT_DATA_KEY_SEALS_MAX_DEFAULT,
  TENANT_DATA_KEYS_OPEN_KEYS_MAX,
  TENANT_DATA_KEYS_TENANTS_MAX_DEFAULT,
  TENANT_ID_BYTES_MAX,
  TENANT_KEKS_CACHED_MAX_DEFAULT,
  TENANT_KMS_LISTENERS_MAX,
  TENANT_PAYLOAD_BYTES_MAX,
  TENANT_PAYLOAD_VERSION,
  TENANT_WRAP_PLAINTEXT_BYTES_MAX,
  TENANT_WRAPPED_KEY_BYTES_MAX,
  TenantDataKeys,
  tenantIdBytes,
  TenantKeyDestroyedError,
  TenantKeyNotFoundError,
  TenantKmsError,
  TenantPayloadError,
  TenantUnwrapError,
  unwrapUnderKek,
  wrapUnderKek,
} from "./tenant_kms.ts";
export type { InternalTenantKmsOptions, TenantDataKeysOptions, TenantKms } from "./tenant_kms.ts";
export { openKeyedEnv, readKeyFile, writeKeyFile } from "./key_file.ts";
export type { KeyedEnvOptions } from "./key_file.ts";
export { PAGE_KEY_FILE, PageKeyError, SealedPageKeys } from "./page_keys.ts";
export type { SealedPageKeysOptions } from "./page_keys.ts";
export {
  CLUSTER_KEY_BYTES,
  clusterKeyCheck,
  ClusterKeyError,
  ClusterSealer,
  loadLocalClusterKey,
  saveLocalClusterKey,
} from "./cluster_key.ts";
export type { ClusterKeySource } from "./cluster_key.ts";
export {
  KEY_EXCHANGE_MAGIC,
  KeyExchangeError,
  PeerClusterKeySource,
  requestClusterKey,
  serveClusterKey,
} from "./cluster_key_exchange.ts";
export type {
  ClusterKeyServerOptions,
  PeerClusterKeySourceOptions,
} from "./cluster_key_exchange.ts";
