// The compute node's end of the framed client transport: one connection to one node,
// requests pipelined (bounded in flight, each with a deadline), answered in any order.

import * as net from "node:net";
import * as tls from "node:tls";
import { assert, type HostPort } from "../base/mod.ts";
import type { TlsMaterial } from "./raft_transport.ts";
import {
  bodyText,
  CLIENT_OP_GET,
  CLIENT_OP_HELLO,
  CLIENT_OP_PUT,
  CLIENT_STATUS_FORBIDDEN,
  CLIENT_STATUS_INVALID,
  CLIENT_STATUS_NOT_FOUND,
  CLIENT_STATUS_OK,
  type ClientFrame,
  ClientFrameError,
  ClientFrameReader,
  encodeClientFrame,
} from "./client_wire.ts";

/** Requests one connection keeps in flight (the server accepts 16). */
export const CLIENT_CONN_REQUESTS_IN_FLIGHT_MAX = 16;
export const CLIENT_CONN_CONNECT_TIMEOUT_MS = 5_000;
/** A request unanswered this long fails (and the connection with it). */
export const CLIENT_CONN_REQUEST_TIMEOUT_MS = 30_000;

export type ClientTransportErrorKind = "unavailable" | "not_found" | "forbidden" | "invalid";

/** A failed transport request; "unavailable" means: the node or the link, try another node. */
export class ClientTransportError extends Error {
  override name = "ClientTransportError";
  constructor(readonly kind: ClientTransportErrorKind, message: string) {
    super(message);
  }
}

export interface ClientTransportConnectOptions {
  addr: HostPort;
  session: Uint8Array;
  tls?: TlsMaterial | null;
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
}

interface Pending {
  resolve: (frame: ClientFrame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class ClientTransportConnection {
  readonly addr: HostPort;
  readonly #socket: net.Socket;
  readonly #pending = new Map<number, Pending>();
  readonly #waiters: (() => void)[] = [];
  readonly #requestTimeoutMs: number;
  #nextId = 1;
  #failure: ClientTransportError | null = null;

  private constructor(addr: HostPort, socket: net.Socket, requestTimeoutMs: number) {
    this.addr = addr;
    this.#socket = socket;
    this.#requestTimeoutMs = requestTimeoutMs;
    const reader = new ClientFrameReader();
    socket.on("data", (data: Uint8Array) => {
      let frames: ClientFrame[];
      try {
        frames = reader.push(data);
      } catch (e) {
        if (!(e instanceof ClientFrameError)) throw e;
        return this.#fail(new ClientTransportError("unavailable", `bad frame: ${e.message}`));
      }
      for (const frame of frames) {
        const p = this.#pending.get(frame.requestId);
        if (p === undefined) continue;
        this.#pending.delete(frame.requestId);
        clearTimeout(p.timer);
        p.resolve(frame);
        this.#waiters.shift()?.();
      }
    });
    const lost = (why: string) =>
      this.#fail(
        new ClientTransportError("unavailable", `connection to ${addr.host}:${addr.port} ${why}`),
      );
    socket.on("error", (e: Error) => lost(`failed: ${e.message}`));
    socket.on("close", () => lost("closed"));
  }

  static async connect(options: ClientTransportConnectOptions): Promise<ClientTransportConnection> {
    const { addr } = options;
    const material = options.tls ?? null;
    const socket: net.Socket = material === null
      ? net.connect({ host: addr.host, port: addr.port, noDelay: true })
      : tls.connect({
        host: addr.host,
        port: addr.port,
        ca: [material.ca],
        cert: material.cert,
        key: material.key,
        minVersion: "TLSv1.2",
        servername: net.isIP(addr.host) === 0 ? addr.host : undefined,
      });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new ClientTransportError("unavailable", `connect to ${addr.host}:${addr.port} timed out`),
        );
      }, options.connectTimeoutMs ?? CLIENT_CONN_CONNECT_TIMEOUT_MS);
      socket.once(material === null ? "connect" : "secureConnect", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.once("error", (e: Error) => {
        clearTimeout(timer);
        reject(
          new ClientTransportError(
            "unavailable",
            `connect to ${addr.host}:${addr.port}: ${e.message}`,
          ),
        );
      });
    });
    const conn = new ClientTransportConnection(
      addr,
      socket,
      options.requestTimeoutMs ?? CLIENT_CONN_REQUEST_TIMEOUT_MS,
    );
    const answer = await conn.#request(CLIENT_OP_HELLO, options.session);
    if (answer.kind !== CLIENT_STATUS_OK) {
      conn.close();
      throw statusError(answer);
    }
    return conn;
  }

  get failed(): boolean {
    return this.#failure !== null;
  }

  /** Stores a sealed chunk; resolves with whether it was new on the node. */
  async put(chunkId: Uint8Array, envelope: Uint8Array): Promise<boolean> {
    const answer = await this.#request(CLIENT_OP_PUT, chunkId, envelope);
    if (answer.kind !== CLIENT_STATUS_OK) throw statusError(answer);
    return answer.body[0] === 1;
  }

  /** A sealed chunk (the envelope as stored). */
  async get(chunkId: Uint8Array): Promise<Uint8Array> {
    const answer = await this.#request(CLIENT_OP_GET, chunkId);
    if (answer.kind !== CLIENT_STATUS_OK) throw statusError(answer);
    return answer.body;
  }

  close(): void {
    this.#socket.destroy();
    this.#fail(new ClientTransportError("unavailable", "connection closed"));
  }

  async #request(op: number, ...body: Uint8Array[]): Promise<ClientFrame> {
    while (this.#pending.size >= CLIENT_CONN_REQUESTS_IN_FLIGHT_MAX && this.#failure === null) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#failure !== null) throw this.#failure;
    const id = this.#nextId;
    this.#nextId = this.#nextId === 0xffff_ffff ? 1 : this.#nextId + 1;
    assert(!this.#pending.has(id), "request ids are unique among those in flight");
    return await new Promise<ClientFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#fail(
          new ClientTransportError(
            "unavailable",
            `request to ${this.addr.host}:${this.addr.port} timed out`,
          ),
        );
      }, this.#requestTimeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#socket.write(encodeClientFrame(op, id, ...body));
    });
  }

  #fail(error: ClientTransportError): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#socket.destroy();
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.#pending.clear();
    for (const w of this.#waiters.splice(0)) w();
  }
}

function statusError(frame: ClientFrame): ClientTransportError {
  const message = bodyText(frame.body);
  switch (frame.kind) {
    case CLIENT_STATUS_NOT_FOUND:
      return new ClientTransportError("not_found", message);
    case CLIENT_STATUS_FORBIDDEN:
      return new ClientTransportError("forbidden", message);
    case CLIENT_STATUS_OK:
      throw new Error("unreachable");
    default:
      return new ClientTransportError(
        frame.kind === CLIENT_STATUS_INVALID ? "invalid" : "unavailable",
        message,
      );
  }
}
