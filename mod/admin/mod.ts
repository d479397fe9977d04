// Admin: the node's operator HTTP endpoint (health, metrics; the dashboard comes later).
export { AdminApi, adminHandler, adminJson, ReadinessFlag, startAdminServer } from "./http.ts";
export type { AdminRoute, AdminServer, AdminServerOptions, Readiness } from "./http.ts";
export { poolsRoute } from "./pools.ts";
export type { PoolSource } from "./pools.ts";
