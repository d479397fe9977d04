// The operator API of NFS exports (/api/v1/nfs-exports), behind `kiseki admin nfs-export`:
// GET lists them, POST adds one, DELETE ?path=/x removes one. Exports are cluster state:
// added through any node, every node's gateway serves them at its next call.

import { adminJson } from "../admin/mod.ts";
import type { ClusterStateService } from "../control/mod.ts";
import {
  NFS_ANON_ID_DEFAULT,
  type NfsExportSpec,
  nfsExportSpecProblem,
} from "../control/nfs_exports.ts";

export const NFS_EXPORTS_API_PREFIX = "/api/v1/nfs-exports";
/** A POST body's bytes at most (an export is a few hundred bytes). */
const BODY_BYTES_MAX = 64 * 1024;

export function nfsExportsApi(
  state: ClusterStateService,
): (req: Request, url: URL) => Promise<Response> {
  return async (req, url) => {
    if (url.pathname !== NFS_EXPORTS_API_PREFIX) {
      return adminJson(404, { error: "not_found", message: url.pathname });
    }
    if (!state.isReady()) {
      return adminJson(503, { error: "unavailable", message: "the cluster state is not reached" });
    }
    if (req.method === "GET") {
      await state.sync();
      return adminJson(200, { exports: state.stateMachine.nfsExports() });
    }
    if (req.method === "DELETE") {
      const path = url.searchParams.get("path") ?? "";
      const outcome = await state.propose({ type: "nfs_export_remove", path });
      if (!outcome.ok) return adminJson(404, { error: "not_found", message: outcome.refused });
      return adminJson(200, { removed: path });
    }
    if (req.method !== "POST") {
      return adminJson(405, { error: "method_not_allowed", message: req.method });
    }
    const text = await req.text();
    if (text.length > BODY_BYTES_MAX) {
      return adminJson(413, { error: "too_large", message: `at most ${BODY_BYTES_MAX} bytes` });
    }
    // deno-lint-ignore no-explicit-any
    let body: any;
    try {
      body = JSON.parse(text);
    } catch {
      return adminJson(400, { error: "invalid_argument", message: "the body is not JSON" });
    }
    const tenant = body?.tenant === undefined || body.tenant === "default"
      ? state.defaultTenant()
      : String(body.tenant).toLowerCase();
    if (!state.stateMachine.hasTenant(tenant)) {
      return adminJson(400, { error: "invalid_argument", message: `no tenant ${tenant}` });
    }
    const spec: NfsExportSpec = {
      path: body?.path,
      tenantId: tenant,
      bucket: body?.bucket ?? null,
      clients: body?.clients ?? ["127.0.0.0/8", "::1"],
      access: body?.access ?? "rw",
      rootSquash: body?.rootSquash ?? true,
      anonUid: body?.anonUid ?? NFS_ANON_ID_DEFAULT,
      anonGid: body?.anonGid ?? NFS_ANON_ID_DEFAULT,
      createdAtMs: state.clock.nowMs(),
    };
    const problem = nfsExportSpecProblem(spec);
    if (problem !== null) return adminJson(400, { error: "invalid_argument", message: problem });
    const outcome = await state.propose({ type: "nfs_export", spec });
    if (!outcome.ok) return adminJson(409, { error: "conflict", message: outcome.refused });
    const made = state.stateMachine.nfsExports().find((e) => e.path === spec.path);
    return adminJson(200, { export: made });
  };
}
