// Admin: the node's operator HTTP endpoint (health, metrics; the dashboard comes later).
export { AdminApi, adminHandler, ReadinessFlag, startAdminServer } from "./http.ts";
export type { AdminServer, AdminServerOptions, Readiness } from "./http.ts";
