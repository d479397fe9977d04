// The node's operator HTTP endpoint (KISEKI_METRICS_ADDR, 9090): /health answers `OK` once
// the node is ready and 503 before, /metrics serves the Prometheus exposition.

import { formatHostPort, type HostPort } from "../base/mod.ts";
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
  signal?: AbortSignal;
}

/** A late-bound handler for /api/ requests (the node registers it when its services are up). */
export class AdminApi {
  #handler: ((req: Request) => Promise<Response>) | null = null;

  set(handler: (req: Request) => Promise<Response>): void {
    this.#handler = handler;
  }

  handle(req: Request): Promise<Response> {
    return this.#handler === null
      ? Promise.resolve(new Response("node is starting\n", { status: 503, headers: TEXT }))
      : this.#handler(req);
  }
}

export interface AdminServer {
  /** The bound address (port resolved when 0 was asked for). */
  addr: HostPort;
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

const TEXT = { "content-type": "text/plain; charset=utf-8" };

export function adminHandler(
  readiness: Readiness,
  api?: AdminApi,
): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (api !== undefined && url.pathname.startsWith("/api/")) return await api.handle(req);
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
  }, adminHandler(options.readiness, options.api));
  const addr = { host: server.addr.hostname, port: server.addr.port };
  log.info("admin endpoint listening", { addr: formatHostPort(addr) });
  return { addr, finished: server.finished, shutdown: () => server.shutdown() };
}
