// Admin: the node's operator HTTP endpoint (health, metrics; the dashboard comes later).
export {
  AdminApi,
  adminHandler,
  adminJson,
  AdminUi,
  ReadinessFlag,
  startAdminServer,
} from "./http.ts";
export type { AdminRoute, AdminServer, AdminServerOptions, Readiness } from "./http.ts";
export { poolsRoute } from "./pools.ts";
export type { PoolSource } from "./pools.ts";
export { buildClusterView, clusterViewHandler } from "./cluster.ts";
export type {
  ChunkHealthView,
  ClusterView,
  ClusterViewInputs,
  DeviceView,
  DrainView,
  NodeView,
  NodeViewState,
  ShardMemberView,
  ShardView,
} from "./cluster.ts";
