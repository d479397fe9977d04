// The S3 listener: accepts TCP connections and serves HTTP on each, within named limits on
// open connections, requests in flight and request bodies being received, and closes
// connections left idle. Past a limit the answer is AWS's: 503 SlowDown with Retry-After.
//
// Why it accepts connections and speaks HTTP itself (mod/s3/http1.ts): Deno.serve has no cap
// on connections and no timeout at all (measured on the pinned runtime: a connection that
// sends nothing, or half a request head, stays open indefinitely), and it answers "100
// Continue" before any handler has seen the head, so an unsigned upload would be invited
// to send its body before its 403.

import { assert } from "../base/mod.ts";
import { counter, gauge, log as rootLog, type Logger } from "../obs/mod.ts";
import { renderS3Error, S3Error } from "./errors.ts";
import { type Http1Connection, type Http1Info, serveHttp1 } from "./http1.ts";
import type { S3HttpRequest } from "./request_body.ts";

/** Open connections the S3 listener keeps at most (KISEKI_S3_CONNECTIONS_MAX). */
export const S3_CONNECTIONS_MAX_DEFAULT = 1024;
/**
 * Connections past the cap that are still answered SlowDown (and then closed); beyond these
 * a new connection is closed at once, so refusing costs no more than this many sockets.
 */
export const S3_REFUSED_CONNECTIONS_MAX = 64;
/**
 * Requests whose bodies are being received at once. Small bodies (up to 1 MiB) are read
 * whole, so this bounds that memory at 256 MiB; larger ones stream through the engine's
 * bounded buffers.
 */
export const S3_BODIES_IN_FLIGHT_MAX = 256;
/** A connection with no request in progress for this long is closed. */
export const S3_CONNECTION_IDLE_MS = 60_000;
/** A refused connection gets this long to send its request and read the SlowDown. */
export const S3_REFUSED_CONNECTION_MS = 5_000;
/** Retry-After of SlowDown and ServiceUnavailable answers. */
export const S3_RETRY_AFTER_SECONDS = "1";

const connectionsOpen = gauge({
  name: "kiseki_s3_connections_open",
  help: "S3 connections open",
});
const requestsInFlight = gauge({
  name: "kiseki_s3_requests_in_flight",
  help: "S3 requests being answered (until the response is sent)",
});
const refusedTotal = counter<"reason">({
  name: "kiseki_s3_refused_total",
  help: "S3 connections and requests refused with SlowDown, by the limit they hit",
  labelNames: ["reason"],
});
const idleClosedTotal = counter({
  name: "kiseki_s3_idle_connections_closed_total",
  help: "S3 connections closed after S3_CONNECTION_IDLE_MS with no request in progress",
});

export interface S3ListenerLimits {
  connectionsMax: number;
  requestsInFlightMax: number;
  bodiesInFlightMax: number;
  idleMs: number;
}

export interface S3ListenerOptions extends Partial<S3ListenerLimits> {
  hostname: string;
  port: number;
  handler: (request: S3HttpRequest) => Promise<Response>;
  signal?: AbortSignal;
  logger?: Logger;
  /** Sent as x-amz-id-2 and HostId on refusals. */
  hostId?: string;
}

export interface S3ListenerStats {
  connectionsOpen: number;
  requestsInFlight: number;
  bodiesInFlight: number;
}

export interface S3Listener {
  readonly addr: Deno.NetAddr;
  readonly limits: S3ListenerLimits;
  stats(): S3ListenerStats;
  /** Stops accepting, closes idle connections, waits for requests in progress. */
  shutdown(): Promise<void>;
}

function requestId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
}

/** The SlowDown answer to a request refused by a limit; the connection closes after it. */
export function slowDownResponse(limit: string, hostId: string, method = "GET"): Response {
  const error = new S3Error("SlowDown", `Please reduce your request rate (${limit}).`);
  const id = requestId();
  const headers = {
    "retry-after": S3_RETRY_AFTER_SECONDS,
    "x-amz-request-id": id,
    "x-amz-id-2": hostId,
    server: "Kiseki",
    connection: "close",
  };
  if (method === "HEAD") return new Response(null, { status: error.status, headers });
  return new Response(renderS3Error(error, { requestId: id, hostId }), {
    status: error.status,
    headers: { ...headers, "content-type": "application/xml" },
  });
}

/**
 * Whether `value` can be sent as an HTTP header value: tab, visible ASCII, space and the
 * bytes 0x80..0xff. A Headers object accepts other control characters (0x01..0x1f, 0x7f),
 * but the pinned runtime's HTTP writer then panics and the whole process exits (measured on
 * Deno 2.9.6: "invalid response header value"), so nothing client-given reaches a response
 * header unchecked.
 */
export function isSendableHeaderValue(value: string): boolean {
  return /^[\t\x20-\x7e\x80-\xff]*$/.test(value);
}

/** The first header of `response` that cannot be sent, or null. */
function unsendableHeader(response: Response): string | null {
  let unsendable: string | null = null;
  // forEach, not for...of: a tenth of the cost over Headers on the pinned runtime.
  response.headers.forEach((value, name) => {
    if (unsendable === null && !isSendableHeaderValue(value)) unsendable = name;
  });
  return unsendable;
}

/** The answer in place of a response whose headers cannot be sent. */
function unsendableResponse(hostId: string, method: string): Response {
  const error = new S3Error("InternalError");
  const id = requestId();
  const headers = { "x-amz-request-id": id, "x-amz-id-2": hostId, server: "Kiseki" };
  if (method === "HEAD") return new Response(null, { status: error.status, headers });
  return new Response(renderS3Error(error, { requestId: id, hostId }), {
    status: error.status,
    headers: { ...headers, "content-type": "application/xml" },
  });
}

function hasBody(request: S3HttpRequest): boolean {
  const length = request.headers.get("content-length");
  if (length !== null) return length.trim() !== "0";
  return request.headers.has("transfer-encoding");
}

/** Starts the S3 listener on `hostname:port`. */
export function listenS3(options: S3ListenerOptions): S3Listener {
  const limits: S3ListenerLimits = {
    connectionsMax: options.connectionsMax ?? S3_CONNECTIONS_MAX_DEFAULT,
    requestsInFlightMax: options.requestsInFlightMax ??
      options.connectionsMax ?? S3_CONNECTIONS_MAX_DEFAULT,
    bodiesInFlightMax: options.bodiesInFlightMax ?? S3_BODIES_IN_FLIGHT_MAX,
    idleMs: options.idleMs ?? S3_CONNECTION_IDLE_MS,
  };
  for (const [name, value] of Object.entries(limits)) {
    assert(Number.isSafeInteger(value) && value >= 1, `S3 listener ${name} must be >= 1`);
  }
  const log = options.logger ?? rootLog;
  const hostId = options.hostId ?? "kiseki";
  let requests = 0;
  let bodies = 0;

  /** Admits a request within the limits, or answers SlowDown; releases when it is sent. */
  const admit = async (request: S3HttpRequest, info: Http1Info): Promise<Response> => {
    const body = hasBody(request);
    let limit: string | null = null;
    if (requests >= limits.requestsInFlightMax) limit = "requests in flight";
    else if (body && bodies >= limits.bodiesInFlightMax) limit = "request bodies in flight";
    if (limit !== null) {
      refusedTotal.inc({ reason: limit === "requests in flight" ? "requests" : "bodies" });
      return slowDownResponse(limit, hostId, request.method);
    }
    requests++;
    requestsInFlight.inc();
    if (body) bodies++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      requests--;
      requestsInFlight.dec();
      if (body) bodies--;
    };
    info.completed.then(release, release);
    let response: Response;
    try {
      response = await options.handler(request);
    } catch (e) {
      release();
      throw e;
    }
    const unsendable = unsendableHeader(response);
    if (unsendable === null) return response;
    // A gateway fault (client-given text reached a header unchecked), but never one that
    // takes the process down.
    log.error("s3 request failed", {
      code: "InternalError",
      error: `response header ${unsendable} holds a control character`,
      method: request.method,
    });
    await response.body?.cancel().catch(() => {});
    return unsendableResponse(hostId, request.method);
  };

  const onError = (error: unknown): Response => {
    log.error("s3 listener: handler failed", { error: String(error) });
    return new Response(null, { status: 500, headers: { connection: "close" } });
  };

  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  const listening = listener.addr as Deno.NetAddr;
  // The URL host of a request without a Host header.
  const hostname = listening.hostname.includes(":")
    ? `[${listening.hostname}]:${listening.port}`
    : `${listening.hostname}:${listening.port}`;
  const open = new Set<Connection>();
  let refusing = 0;
  let closing = false;

  /** Every connection being served, refused ones included (the idle sweep's list). */
  const all = new Set<Connection>();

  /** One accepted connection: its HTTP server, requests in progress and idle clock. */
  class Connection {
    #served: Http1Connection | null = null;
    active = 0;
    /** When the last request ended (or the connection opened), in performance.now() ms. */
    idleSince = performance.now();
    finished: Promise<void> = Promise.resolve();

    constructor(readonly idleMs: number) {}

    /** Closes the connection once no request is in progress (at once when idle). */
    close(): void {
      this.#served?.close();
    }

    serve(
      conn: Deno.Conn,
      handler: (r: S3HttpRequest, info: Http1Info) => Promise<Response>,
    ): void {
      all.add(this);
      const served = serveHttp1(conn, {
        handler: (request, info) => {
          this.active++;
          const done = () => {
            if (--this.active > 0) return;
            this.idleSince = performance.now();
            if (closing) this.close();
          };
          info.completed.then(done, done);
          return handler(request, info);
        },
        onError,
        defaultHost: hostname,
      });
      this.#served = served;
      this.finished = served.finished.catch(() => {}).finally(() => all.delete(this));
    }
  }

  // One sweep closes the connections idle past their bound, instead of a timer per
  // connection re-armed by every request; a connection closes within a sweep period of it.
  const sweepMs = Math.max(
    10,
    Math.min(1000, Math.floor(Math.min(limits.idleMs, S3_REFUSED_CONNECTION_MS) / 4)),
  );
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const c of all) {
      if (c.active === 0 && now - c.idleSince >= c.idleMs) {
        idleClosedTotal.inc();
        c.close();
      }
    }
  }, sweepMs);

  const refuseAll = (request: S3HttpRequest): Promise<Response> =>
    Promise.resolve(slowDownResponse("connections", hostId, request.method));

  const acceptLoop = (async () => {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (closing || e instanceof Deno.errors.BadResource) return;
        // Out of file descriptors and the like: keep serving the connections we have.
        log.warn("s3 listener: accept failed", { error: String(e) });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (closing) {
        conn.close();
        return;
      }
      if (open.size >= limits.connectionsMax) {
        refusedTotal.inc({ reason: "connections" });
        if (refusing >= S3_REFUSED_CONNECTIONS_MAX) {
          try {
            conn.close();
          } catch { /* already gone */ }
          continue;
        }
        refusing++;
        const c = new Connection(S3_REFUSED_CONNECTION_MS);
        c.serve(conn, refuseAll);
        c.finished.finally(() => refusing--);
        continue;
      }
      const c = new Connection(limits.idleMs);
      open.add(c);
      connectionsOpen.set({}, open.size);
      c.serve(conn, admit);
      c.finished.finally(() => {
        open.delete(c);
        connectionsOpen.set({}, open.size);
      });
    }
  })();

  const shutdown = async () => {
    if (closing) return;
    closing = true;
    try {
      listener.close();
    } catch { /* closed */ }
    await acceptLoop;
    // Graceful: each closes after the response in progress, if any.
    for (const c of all) c.close();
    await Promise.all([...all].map((c) => c.finished));
    clearInterval(sweep);
  };
  options.signal?.addEventListener("abort", () => void shutdown(), { once: true });

  return {
    addr: listener.addr as Deno.NetAddr,
    limits,
    stats: () => ({
      connectionsOpen: open.size,
      requestsInFlight: requests,
      bodiesInFlight: bodies,
    }),
    shutdown,
  };
}
