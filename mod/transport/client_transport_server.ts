// The node's end of the framed client transport: native clients put and get sealed chunks
// here (metadata goes over ClientService on gRPC). Each connection is authenticated twice:
// by TLS (a client certificate of the cluster CA; without TLS, loopback callers only unless
// the node serves any) and by a session ClientService.Hello opened for the same caller; the
// session decides which chunks the connection may touch. Bounded everywhere: connections,
// requests in flight per connection, bytes in flight per node (past it, sockets stop being
// read: backpressure on the senders), and idle and hello timeouts.

import * as net from "node:net";
import * as tls from "node:tls";
import { assert, formatHostPort, type HostPort, isLoopbackAddress } from "../base/mod.ts";
import { counter, log as rootLog, type Logger } from "../obs/mod.ts";
import type { PlaintextCallers } from "./grpc.ts";
import { certificateIdentity, type PeerIdentity } from "./peer_identity.ts";
import type { TlsMaterial } from "./raft_transport.ts";
import {
  CLIENT_CHUNK_ID_BYTES,
  CLIENT_FRAME_BODY_BYTES_MAX,
  CLIENT_OP_GET,
  CLIENT_OP_HELLO,
  CLIENT_OP_PUT,
  CLIENT_SESSION_BYTES,
  CLIENT_STATUS_FORBIDDEN,
  CLIENT_STATUS_INVALID,
  CLIENT_STATUS_OK,
  CLIENT_STATUS_UNAVAILABLE,
  type ClientFrame,
  ClientFrameError,
  ClientFrameReader,
  encodeClientFrame,
  utf8Body,
} from "./client_wire.ts";

export interface ClientTransportServerLimits {
  connectionsMax: number;
  requestsInFlightPerConnectionMax: number;
  /** Request and response bodies held across all connections before sockets pause. */
  bytesInFlightMax: number;
  helloTimeoutMs: number;
  idleTimeoutMs: number;
  handshakeTimeoutMs: number;
}

export const CLIENT_TRANSPORT_SERVER_LIMITS_DEFAULT: Readonly<ClientTransportServerLimits> = {
  connectionsMax: 1024,
  requestsInFlightPerConnectionMax: 16,
  bytesInFlightMax: 512 * 1024 * 1024,
  helloTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  handshakeTimeoutMs: 10_000,
};

/** A request refused with a status other than OK. */
export class ClientTransportRefusal extends Error {
  override name = "ClientTransportRefusal";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** What a connection may do once its HELLO named a session. */
export interface ClientTransportSession {
  /** Stores a sealed chunk; refuses (ClientTransportRefusal) what the session may not put. */
  put(chunkId: Uint8Array, envelope: Uint8Array): Promise<{ created: boolean }>;
  get(chunkId: Uint8Array): Promise<Uint8Array>;
}

export interface ClientChunkHandler {
  /** The session named by HELLO for this caller, or why there is none. */
  session(session: Uint8Array, caller: PeerIdentity): ClientTransportSession | string;
}

export interface ClientTransportServerOptions {
  addr: HostPort;
  handler: ClientChunkHandler;
  tls?: TlsMaterial | null;
  plaintextCallers?: PlaintextCallers;
  limits?: Partial<ClientTransportServerLimits>;
  logger?: Logger;
}

const requestsTotal = counter<"op" | "status">({
  name: "kiseki_client_transport_requests_total",
  help: "Client transport requests a node answered, by op and status",
  labelNames: ["op", "status"],
});
const bytesTotal = counter<"direction">({
  name: "kiseki_client_transport_bytes_total",
  help: "Sealed chunk bytes the client transport received (in) and sent (out)",
  labelNames: ["direction"],
});

const OP_NAMES: Record<number, string> = {
  [CLIENT_OP_HELLO]: "hello",
  [CLIENT_OP_PUT]: "put",
  [CLIENT_OP_GET]: "get",
};

export class ClientTransportServer {
  readonly addr: HostPort;
  readonly tls: boolean;
  readonly #server: net.Server;
  readonly #connections = new Set<net.Socket>();
  readonly #paused = new Set<net.Socket>();
  readonly #limits: ClientTransportServerLimits;
  readonly #log: Logger;
  #bytesInFlight = 0;

  private constructor(
    server: net.Server,
    addr: HostPort,
    tlsOn: boolean,
    limits: ClientTransportServerLimits,
    logger: Logger,
  ) {
    this.#server = server;
    this.addr = addr;
    this.tls = tlsOn;
    this.#limits = limits;
    this.#log = logger;
  }

  static async start(options: ClientTransportServerOptions): Promise<ClientTransportServer> {
    const limits = { ...CLIENT_TRANSPORT_SERVER_LIMITS_DEFAULT, ...options.limits };
    for (const [name, value] of Object.entries(limits)) {
      assert(Number.isInteger(value) && value > 0, `client transport limit ${name} > 0`);
    }
    assert(
      limits.bytesInFlightMax >= 2 * CLIENT_FRAME_BODY_BYTES_MAX,
      "bytesInFlightMax holds a request and a response of the largest size",
    );
    const logger = (options.logger ?? rootLog).child({ component: "client-transport" });
    const material = options.tls ?? null;
    const plaintextCallers = options.plaintextCallers ?? "loopback";
    let self: ClientTransportServer | null = null;
    const onSocket = (socket: net.Socket) =>
      self!.#accept(socket, options.handler, {
        tls: material !== null,
        plaintextCallers,
      });
    const server: net.Server = material === null
      ? net.createServer({ noDelay: true }, onSocket)
      : tls.createServer({
        ca: [material.ca],
        cert: material.cert,
        key: material.key,
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: limits.handshakeTimeoutMs,
        minVersion: "TLSv1.2",
      }, onSocket);
    server.on("tlsClientError", (error: Error) => {
      logger.warn("refused a client transport TLS connection", { error: error.message });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: options.addr.host, port: options.addr.port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const bound = server.address() as net.AddressInfo;
    const addr = { host: options.addr.host, port: bound.port };
    self = new ClientTransportServer(server, addr, material !== null, limits, logger);
    logger.info("client transport listening", { addr: formatHostPort(addr), tls: !!material });
    return self;
  }

  get connections(): number {
    return this.#connections.size;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const s of this.#connections) s.destroy();
    await closed;
  }

  #take(bytes: number): void {
    this.#bytesInFlight += bytes;
    if (this.#bytesInFlight > this.#limits.bytesInFlightMax) {
      for (const s of this.#connections) {
        if (!this.#paused.has(s)) {
          s.pause();
          this.#paused.add(s);
        }
      }
    }
  }

  #give(bytes: number): void {
    this.#bytesInFlight -= bytes;
    assert(this.#bytesInFlight >= 0, "client transport bytes in flight never negative");
    if (this.#bytesInFlight <= this.#limits.bytesInFlightMax / 2 && this.#paused.size > 0) {
      for (const s of this.#paused) s.resume();
      this.#paused.clear();
    }
  }

  #callerOf(
    socket: net.Socket,
    gate: { tls: boolean; plaintextCallers: PlaintextCallers },
  ): PeerIdentity | string {
    if (gate.tls) {
      const cert = (socket as tls.TLSSocket).getPeerCertificate();
      if (!cert || !cert.subject) return "no client certificate";
      const identity = certificateIdentity({
        subject: cert.subject as unknown as Record<string, string | string[]>,
        subjectAltName: cert.subjectaltname ?? "",
      });
      return identity;
    }
    if (gate.plaintextCallers === "any") return { kind: "insecure" };
    const address = socket.remoteAddress ?? "";
    if (isLoopbackAddress(address)) return { kind: "loopback" };
    return `this node serves the client transport without TLS to loopback callers only, ` +
      `and ${address} is not loopback`;
  }

  #accept(
    socket: net.Socket,
    handler: ClientChunkHandler,
    gate: { tls: boolean; plaintextCallers: PlaintextCallers },
  ): void {
    if (this.#connections.size >= this.#limits.connectionsMax) {
      socket.destroy();
      return;
    }
    this.#connections.add(socket);
    socket.setNoDelay(true);
    const reader = new ClientFrameReader();
    const caller = this.#callerOf(socket, gate);
    let session: ClientTransportSession | null = null;
    let inFlight = 0;
    let closed = false;
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = (ms: number) => {
      clearTimeout(idle);
      idle = setTimeout(() => socket.destroy(), ms);
    };
    arm(this.#limits.helloTimeoutMs);
    const send = (status: number, requestId: number, body: Uint8Array) => {
      if (closed) return;
      socket.write(encodeClientFrame(status, requestId, body));
    };
    const fail = (requestId: number, message: string) => {
      send(CLIENT_STATUS_INVALID, requestId, utf8Body(message));
      socket.end();
      closed = true;
    };
    const handle = async (frame: ClientFrame): Promise<void> => {
      const op = OP_NAMES[frame.kind] ?? "unknown";
      let status = CLIENT_STATUS_OK;
      try {
        if (frame.kind === CLIENT_OP_PUT) {
          if (frame.body.length <= CLIENT_CHUNK_ID_BYTES) {
            return fail(frame.requestId, "PUT body is shorter than a chunk id and an envelope");
          }
          const id = frame.body.subarray(0, CLIENT_CHUNK_ID_BYTES);
          const envelope = frame.body.subarray(CLIENT_CHUNK_ID_BYTES);
          const { created } = await session!.put(id, envelope);
          bytesTotal.inc({ direction: "in" }, envelope.length);
          send(CLIENT_STATUS_OK, frame.requestId, Uint8Array.of(created ? 1 : 0));
        } else if (frame.kind === CLIENT_OP_GET) {
          if (frame.body.length !== CLIENT_CHUNK_ID_BYTES) {
            return fail(frame.requestId, "GET body is not a chunk id");
          }
          const envelope = await session!.get(frame.body);
          this.#take(envelope.length);
          try {
            send(CLIENT_STATUS_OK, frame.requestId, envelope);
            bytesTotal.inc({ direction: "out" }, envelope.length);
          } finally {
            this.#give(envelope.length);
          }
        } else {
          return fail(frame.requestId, `op ${frame.kind} is not PUT or GET`);
        }
      } catch (e) {
        status = e instanceof ClientTransportRefusal ? e.status : CLIENT_STATUS_UNAVAILABLE;
        if (status === CLIENT_STATUS_UNAVAILABLE) {
          this.#log.warn("client transport request failed", { op, error: (e as Error).message });
        }
        send(status, frame.requestId, utf8Body((e as Error).message));
      } finally {
        requestsTotal.inc({ op, status: String(status) });
      }
    };
    socket.on("data", (data: Uint8Array) => {
      let frames: ClientFrame[];
      try {
        frames = reader.push(data);
      } catch (e) {
        if (!(e instanceof ClientFrameError)) throw e;
        return fail(0, e.message);
      }
      for (const frame of frames) {
        if (closed) return;
        arm(this.#limits.idleTimeoutMs);
        if (session === null) {
          if (frame.kind !== CLIENT_OP_HELLO || frame.body.length !== CLIENT_SESSION_BYTES) {
            return fail(frame.requestId, "the first frame must be HELLO with a session");
          }
          if (typeof caller === "string") {
            send(CLIENT_STATUS_FORBIDDEN, frame.requestId, utf8Body(caller));
            socket.end();
            closed = true;
            return;
          }
          const found = handler.session(frame.body, caller);
          if (typeof found === "string") {
            send(CLIENT_STATUS_FORBIDDEN, frame.requestId, utf8Body(found));
            socket.end();
            closed = true;
            return;
          }
          session = found;
          requestsTotal.inc({ op: "hello", status: "0" });
          send(CLIENT_STATUS_OK, frame.requestId, new Uint8Array(0));
          continue;
        }
        if (inFlight >= this.#limits.requestsInFlightPerConnectionMax) {
          return fail(frame.requestId, "too many requests in flight on one connection");
        }
        inFlight++;
        const bytes = frame.body.length;
        this.#take(bytes);
        handle(frame).finally(() => {
          inFlight--;
          this.#give(bytes);
        });
      }
    });
    const cleanup = () => {
      closed = true;
      clearTimeout(idle);
      this.#connections.delete(socket);
      this.#paused.delete(socket);
    };
    socket.on("error", () => cleanup());
    socket.on("close", cleanup);
  }
}
