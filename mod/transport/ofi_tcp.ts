// The pure TypeScript twin of the client transport: frames over one TCP connection, with
// mutual TLS when there is TLS material (the cluster CA, this end's certificate and key), as
// the Raft port does it. Wire: each frame is a 4-byte big-endian length, then its bytes.

import * as net from "node:net";
import * as tls from "node:tls";
import { assert } from "../base/mod.ts";
import {
  MESSAGE_ACCEPT_BACKLOG_MAX,
  MESSAGE_CONNECT_TIMEOUT_MS_DEFAULT,
  MESSAGE_FRAME_BYTES_MAX_DEFAULT,
  MESSAGE_RECEIVE_BUFFER_BYTES_MAX,
  type MessageConnection,
  type MessageDialOptions,
  type MessageListener,
  type MessageTransport,
  TransportError,
} from "./ofi_port.ts";
import type { TlsMaterial } from "./raft_transport.ts";

/** Frames up to this size go out as one write with their header (one syscall, no Nagle gap). */
const COALESCE_BYTES_MAX = 64 * 1024;
const FRAME_HEADER_BYTES = 4;
/** How long close() lets the peer see the end before the socket is destroyed. */
const CLOSE_GRACE_MS = 2_000;

export interface TcpMessageTransportOptions {
  /** Mutual TLS material; null or absent: plain TCP. */
  tls?: TlsMaterial | null;
  frameBytesMax?: number;
}

interface Waiter {
  resolve(frame: Uint8Array | null): void;
  reject(error: Error): void;
}

/** A frame stream over a node:net (or node:tls) socket. */
export class SocketMessageConnection implements MessageConnection {
  readonly remote: string;
  readonly #socket: net.Socket;
  readonly #frameBytesMax: number;
  readonly #frames: Uint8Array[] = [];
  #queuedBytes = 0;
  #waiter: Waiter | null = null;
  #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerGot = 0;
  #body: Uint8Array | null = null;
  #bodyGot = 0;
  #ended = false;
  #error: TransportError | null = null;
  #paused = false;
  #closed: Promise<void>;

  constructor(socket: net.Socket, frameBytesMax: number) {
    this.#socket = socket;
    this.#frameBytesMax = frameBytesMax;
    this.remote = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    socket.setNoDelay(true);
    socket.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    socket.on("end", () => this.#onEnd());
    socket.on("error", (e: Error) => {
      this.#fail(new TransportError("closed", `connection to ${this.remote}: ${e.message}`));
    });
    this.#closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.#onEnd();
        resolve();
      })
    );
  }

  #onData(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && this.#error === null) {
      if (this.#body === null) {
        const take = Math.min(FRAME_HEADER_BYTES - this.#headerGot, chunk.length - at);
        this.#header.set(chunk.subarray(at, at + take), this.#headerGot);
        this.#headerGot += take;
        at += take;
        if (this.#headerGot < FRAME_HEADER_BYTES) break;
        const length = new DataView(this.#header.buffer).getUint32(0);
        this.#headerGot = 0;
        if (length > this.#frameBytesMax) {
          this.#fail(
            new TransportError(
              "too_large",
              `frame of ${length} bytes from ${this.remote} is over ${this.#frameBytesMax}`,
            ),
          );
          this.#socket.destroy();
          return;
        }
        this.#body = new Uint8Array(length);
        this.#bodyGot = 0;
      }
      const body = this.#body;
      const take = Math.min(body.length - this.#bodyGot, chunk.length - at);
      body.set(chunk.subarray(at, at + take), this.#bodyGot);
      this.#bodyGot += take;
      at += take;
      if (this.#bodyGot === body.length) {
        this.#body = null;
        this.#deliver(body);
      }
    }
  }

  #deliver(frame: Uint8Array): void {
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      waiter.resolve(frame);
      return;
    }
    this.#frames.push(frame);
    this.#queuedBytes += frame.length;
    if (!this.#paused && this.#queuedBytes > MESSAGE_RECEIVE_BUFFER_BYTES_MAX) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #onEnd(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#body !== null || this.#headerGot > 0) {
      this.#fail(new TransportError("closed", `${this.remote} closed in the middle of a frame`));
      return;
    }
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.resolve(null);
  }

  #fail(error: TransportError): void {
    if (this.#error !== null) return;
    this.#error = error;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.reject(error);
  }

  receive(): Promise<Uint8Array | null> {
    assert(this.#waiter === null, "one receive() at a time");
    const frame = this.#frames.shift();
    if (frame !== undefined) {
      this.#queuedBytes -= frame.length;
      if (this.#paused && this.#queuedBytes <= MESSAGE_RECEIVE_BUFFER_BYTES_MAX / 2) {
        this.#paused = false;
        this.#socket.resume();
      }
      return Promise.resolve(frame);
    }
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  send(frame: Uint8Array): Promise<void> {
    if (frame.length > this.#frameBytesMax) {
      return Promise.reject(
        new TransportError(
          "too_large",
          `frame of ${frame.length} bytes is over ${this.#frameBytesMax}`,
        ),
      );
    }
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#socket.destroyed || this.#socket.writableEnded) {
      return Promise.reject(new TransportError("closed", `connection to ${this.remote} closed`));
    }
    const header = new Uint8Array(FRAME_HEADER_BYTES);
    new DataView(header.buffer).setUint32(0, frame.length);
    return new Promise((resolve, reject) => {
      // Settled once the bytes are handed to the kernel: the caller may reuse its buffer.
      const done = (e?: Error | null) =>
        e
          ? reject(new TransportError("closed", `send to ${this.remote}: ${e.message}`))
          : resolve();
      if (frame.length <= COALESCE_BYTES_MAX) {
        const one = new Uint8Array(FRAME_HEADER_BYTES + frame.length);
        one.set(header);
        one.set(frame, FRAME_HEADER_BYTES);
        this.#socket.write(one, done);
      } else {
        this.#socket.write(header);
        this.#socket.write(frame, done);
      }
    });
  }

  async close(): Promise<void> {
    if (!this.#socket.destroyed) {
      this.#socket.end();
      const timer = setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS);
      await this.#closed;
      clearTimeout(timer);
    }
  }
}

class TcpMessageListener implements MessageListener {
  readonly port: number;
  readonly #server: net.Server;
  readonly #backlog: SocketMessageConnection[] = [];
  #waiter: ((c: SocketMessageConnection | null) => void) | null = null;
  #closed = false;

  constructor(server: net.Server, port: number) {
    this.#server = server;
    this.port = port;
  }

  offer(conn: SocketMessageConnection, socket: net.Socket): void {
    if (this.#closed || this.#backlog.length >= MESSAGE_ACCEPT_BACKLOG_MAX) {
      socket.destroy();
      return;
    }
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      waiter(conn);
    } else this.#backlog.push(conn);
  }

  accept(): Promise<MessageConnection | null> {
    assert(this.#waiter === null, "one accept() at a time");
    const next = this.#backlog.shift();
    if (next !== undefined) return Promise.resolve(next);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.(null);
    for (const c of this.#backlog.splice(0)) await c.close();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** TCP, or mutual TLS with material: what every client can always fall back to. */
export class TcpMessageTransport implements MessageTransport {
  readonly name: string;
  readonly #tls: TlsMaterial | null;
  readonly #frameBytesMax: number;

  constructor(options: TcpMessageTransportOptions = {}) {
    this.#tls = options.tls ?? null;
    this.#frameBytesMax = options.frameBytesMax ?? MESSAGE_FRAME_BYTES_MAX_DEFAULT;
    assert(this.#frameBytesMax >= 1 && this.#frameBytesMax <= 0xffff_ffff, "frameBytesMax");
    this.name = this.#tls === null ? "tcp" : "tls";
  }

  async listen(host: string, port: number): Promise<MessageListener> {
    let listener: TcpMessageListener | null = null;
    const onSocket = (socket: net.Socket) => {
      listener!.offer(new SocketMessageConnection(socket, this.#frameBytesMax), socket);
    };
    const material = this.#tls;
    const server: net.Server = material === null
      ? net.createServer({ noDelay: true }, onSocket)
      : tls.createServer({
        ca: [material.ca],
        cert: material.cert,
        key: material.key,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
      }, onSocket);
    // A client that fails its TLS handshake is its own problem, never the listener's.
    server.on("tlsClientError", () => {});
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", () => {});
    listener = new TcpMessageListener(server, (server.address() as net.AddressInfo).port);
    return listener;
  }

  dial(host: string, port: number, options: MessageDialOptions = {}): Promise<MessageConnection> {
    const timeoutMs = options.timeoutMs ?? MESSAGE_CONNECT_TIMEOUT_MS_DEFAULT;
    const material = this.#tls;
    return new Promise((resolve, reject) => {
      const socket: net.Socket = material === null
        ? net.connect({ host, port, noDelay: true })
        : tls.connect({
          host,
          port,
          ca: [material.ca],
          cert: material.cert,
          key: material.key,
          minVersion: "TLSv1.2",
          servername: net.isIP(host) === 0 ? host : undefined,
        });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new TransportError("timeout", `no connection to ${host}:${port} in ${timeoutMs} ms`),
        );
      }, timeoutMs);
      const fail = (e: Error & { code?: string }) => {
        clearTimeout(timer);
        reject(
          new TransportError(
            e.code === "ECONNREFUSED" ? "refused" : "unavailable",
            `${host}:${port}: ${e.message}`,
          ),
        );
      };
      socket.once("error", fail);
      socket.once(material === null ? "connect" : "secureConnect", () => {
        clearTimeout(timer);
        socket.off("error", fail);
        resolve(new SocketMessageConnection(socket, this.#frameBytesMax));
      });
    });
  }
}
