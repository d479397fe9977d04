// The operator API's view of storage pools: GET /api/v1/pools answers what each pool holds
// and can hold (capacity, used and live bytes, its devices) and what its background GC has
// reclaimed, from reports the role supplies.

import type { GcBackgroundStats, PoolReport } from "../chunk/mod.ts";
import { adminJson, type AdminRoute } from "./http.ts";

export interface PoolSource {
  report(): PoolReport;
  /** The pool's background GC totals, or null when none runs. */
  gc(): GcBackgroundStats | null;
}

/** The route to mount at /api/v1/pools. */
export function poolsRoute(pools: () => readonly PoolSource[]): AdminRoute {
  return (req, url) => {
    if (url.pathname !== "/api/v1/pools") {
      return Promise.resolve(adminJson(404, { error: "not_found", message: url.pathname }));
    }
    if (req.method !== "GET") {
      return Promise.resolve(
        adminJson(405, { error: "method_not_allowed", message: `${req.method} ${url.pathname}` }),
      );
    }
    return Promise.resolve(adminJson(200, {
      pools: pools().map((p) => ({ ...p.report(), gc: p.gc() })),
    }));
  };
}
