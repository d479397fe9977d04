// The node's operator HTTP endpoint (KISEKI_METRICS_ADDR, 9090): /health answers `OK` once
// the node is ready and 503 before, /metrics serves the Prometheus exposition. The operator
// API under /api/ hands out S3 secrets and this endpoint has no TLS, so it answers loopback
// callers only (an operator elsewhere runs `kiseki admin` on the node, or tunnels to it:
// `ssh -L 9090:127.0.0.1:9090 <node>`); /health and /metrics stay open to scrapers, and so
// do the dashboard's read-only views under /ui/api/ (no secrets: node and shard state).

import {
  assert,
  concatBytes,
  formatHostPort,
  type HostPort,
  isLoopbackAddress,
} from "../base/mod.ts";
import { log, METRICS_CONTENT_TYPE, renderMetrics } from "../obs/mod.ts";

/** What the endpoint asks of the node: is it ready, and if not, why. */
export interface Readiness {
  ready(): boolean;
  /** One line on what is still missing (shown in the 503 body). */
  reason(): string;
}

export class ReadinessFlag implements Readiness {
  #ready = false;
  #reason = "starting";

  ready(): boolean {
    return this.#ready;
  }
  reason(): string {
    return this.#reason;
  }
  set(ready: boolean, reason: string): void {
    this.#ready = ready;
    this.#reason = reason;
  }
}

export interface AdminServerOptions {
  addr: HostPort;
  readiness: Readiness;
  /** The operator JSON API under /api/, once the node has what it serves. */
  api?: AdminApi;
  /** The dashboard's read-only views under /ui/api/. */
  ui?: AdminUi;
  signal?: AbortSignal;
}

/** Views the dashboard may read (a bound on a client-fed lookup). */
export const ADMIN_UI_VIEWS_MAX = 16;

/** The dashboard's read-only JSON views, mounted by exact path as services come up. */
export class AdminUi {
  readonly #views = new Map<string, (req: Request) => Promise<Response>>();

  mount(path: string, view: (req: Request) => Promise<Response>): void {
    assert(/^\/ui\/api\/[a-z0-9-]+$/.test(path), `dashboard view ${path} is invalid`);
    assert(!this.#views.has(path), `dashboard view ${path} is mounted twice`);
    assert(this.#views.size < ADMIN_UI_VIEWS_MAX, "too many dashboard views");
    this.#views.set(path, view);
  }

  /** The view's answer, or null when no view has that path. */
  async handle(req: Request, url: URL): Promise<Response | null> {
    const view = this.#views.get(url.pathname);
    if (view === undefined) return null;
    try {
      return await view(req);
    } catch (e) {
      return adminJson(500, { error: "internal", message: (e as Error).message });
    }
  }
}

/** One operator API route: a handler for every path under its prefix. */
export type AdminRoute = (req: Request, url: URL) => Promise<Response>;

/** Routes the operator API may hold (one per service; a bound on a client-fed lookup). */
export const ADMIN_ROUTES_MAX = 64;

/**
 * The operator JSON API under /api/: services mount their routes by path prefix as they
 * come up, and every request must carry the node's admin token (config/admin-token) as a
 * bearer token, checked once here. Before the token is set the API answers 503.
 */
export class AdminApi {
  readonly #routes = new Map<string, AdminRoute>();
  #token: Uint8Array | null = null;

  /** Sets the bearer token requests must carry (the API answers 503 until then). */
  setToken(token: string): void {
    assert(token.length >= 32, "the admin token must be at least 32 characters");
    this.#token = new TextEncoder().encode(token);
  }

  /** Serves every path equal to `prefix` or under `prefix/` with `route`. */
  mount(prefix: string, route: AdminRoute): void {
    assert(/^\/api\/v1\/[a-z0-9-]+$/.test(prefix), `admin route prefix ${prefix} is invalid`);
    assert(!this.#routes.has(prefix), `admin route ${prefix} is mounted twice`);
    assert(this.#routes.size < ADMIN_ROUTES_MAX, "too many admin routes");
    this.#routes.set(prefix, route);
  }

  async handle(req: Request): Promise<Response> {
    if (this.#token === null) {
      return adminJson(503, { error: "unavailable", message: "node is starting" });
    }
    const auth = new TextEncoder().encode(req.headers.get("authorization") ?? "");
    if (!sameBytes(auth, concatBytes(BEARER, this.#token))) {
      return adminJson(401, { error: "unauthorized", message: "a valid admin token is required" });
    }
    const url = new URL(req.url);
    const prefix = url.pathname.split("/").slice(0, 4).join("/");
    const route = this.#routes.get(prefix);
    if (route === undefined) return adminJson(404, { error: "not_found", message: url.pathname });
    try {
      return await route(req, url);
    } catch (e) {
      log.error("operator API request failed", { path: url.pathname, error: e });
      return adminJson(500, { error: "internal", message: (e as Error).message });
    }
  }
}

const BEARER = new TextEncoder().encode("Bearer ");

/** Constant-time equality: the token check must not leak how much of a guess was right. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}

/** A JSON answer of the operator API. */
export function adminJson(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body) + "\n", { status, headers: JSON_HEADERS });
}

const JSON_HEADERS = { "content-type": "application/json" };

export interface AdminServer {
  /** The bound address (port resolved when 0 was asked for). */
  addr: HostPort;
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

const TEXT = { "content-type": "text/plain; charset=utf-8" };

/** Where a request came from, as Deno.serve tells its handler. */
export interface AdminRequestInfo {
  remoteAddr: { hostname: string };
}

/**
 * The operator API's answer to a caller that is not on this host (or unknown: a handler
 * called without connection info), before its token is even looked at; null for loopback.
 */
export function adminApiRemoteRefusal(info: AdminRequestInfo | undefined): Response | null {
  const host = info?.remoteAddr.hostname;
  if (host !== undefined && isLoopbackAddress(host)) return null;
  return adminJson(403, {
    error: "forbidden",
    message: `the operator API answers loopback callers only (it hands out S3 secrets, and ` +
      `this endpoint has no TLS); ${host ?? "an unknown address"} is not loopback: run ` +
      "kiseki admin on the node, or tunnel: ssh -L 9090:127.0.0.1:9090 <node>",
  });
}

export function adminHandler(
  readiness: Readiness,
  api?: AdminApi,
  ui?: AdminUi,
): (req: Request, info?: AdminRequestInfo) => Promise<Response> {
  return async (req: Request, info?: AdminRequestInfo): Promise<Response> => {
    const url = new URL(req.url);
    if (api !== undefined && url.pathname.startsWith("/api/")) {
      return adminApiRemoteRefusal(info) ?? await api.handle(req);
    }
    if (ui !== undefined && url.pathname.startsWith("/ui/api/")) {
      const answer = await ui.handle(req, url);
      if (answer !== null) return answer;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", {
        status: 405,
        headers: { ...TEXT, allow: "GET, HEAD" },
      });
    }
    switch (url.pathname) {
      case "/health":
        return readiness.ready()
          ? new Response("OK", { status: 200, headers: TEXT })
          : new Response(`NOT READY: ${readiness.reason()}`, { status: 503, headers: TEXT });
      case "/metrics":
        return new Response(await renderMetrics(), {
          status: 200,
          headers: { "content-type": METRICS_CONTENT_TYPE },
        });
      default:
        return new Response("not found\n", { status: 404, headers: TEXT });
    }
  };
}

/** Starts the endpoint; throws (e.g. AddrInUse) when it cannot listen. */
export function startAdminServer(options: AdminServerOptions): AdminServer {
  const server = Deno.serve({
    hostname: options.addr.host,
    port: options.addr.port,
    signal: options.signal,
    onListen: () => {},
    onError: (e) => {
      log.error("admin endpoint request failed", { error: e });
      return new Response("internal error\n", { status: 500, headers: TEXT });
    },
  }, adminHandler(options.readiness, options.api, options.ui));
  const addr = { host: server.addr.hostname, port: server.addr.port };
  log.info("admin endpoint listening", { addr: formatHostPort(addr) });
  return { addr, finished: server.finished, shutdown: () => server.shutdown() };
}
