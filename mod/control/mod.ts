// Control: the cluster state every node shares (the replicated state machine and the
// service over it: tenants, S3 access keys, system key epochs, built-in tenant KEKs, node
// membership and state). Namespaces, quotas, IAM and federation come here later.
export {
  CLUSTER_ACCESS_KEYS_MAX,
  CLUSTER_ACCESS_KEYS_PER_TENANT_MAX,
  CLUSTER_KEY_EPOCHS_MAX,
  CLUSTER_NODES_MAX,
  CLUSTER_RECORD_BYTES_MAX,
  CLUSTER_STATE_GROUP_ID,
  CLUSTER_TENANT_KEKS_MAX,
  CLUSTER_TENANTS_MAX,
  ClusterRecordError,
  ClusterStateMachine,
  decodeClusterRecord,
  encodeClusterRecord,
  NODE_STATES,
} from "./cluster_state.ts";
export type {
  ClusterAccessKey,
  ClusterApplyOutcome,
  ClusterCreation,
  ClusterKeyEpoch,
  ClusterNode,
  ClusterRecord,
  ClusterStateListener,
  ClusterTenantKek,
  NodeDirectory,
  NodeState,
} from "./cluster_state.ts";
export {
  CLUSTER_CREDENTIALS_CACHED_MAX,
  CLUSTER_KEKS_CACHED_MAX,
  CLUSTER_PROPOSE_RETRY_MS,
  CLUSTER_READY_WAIT_MS,
  ClusterCredentials,
  ClusterStateError,
  ClusterStateService,
  ClusterStateUnavailableError,
  ClusterSystemKeys,
  ClusterTenantKms,
} from "./cluster_state_service.ts";
export type { ClusterStateGroup, ClusterStateServiceOptions } from "./cluster_state_service.ts";
