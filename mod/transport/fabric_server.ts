// The chunk fabric's serving side: takes fabric connections handed over by the Raft port's
// listener, reads pipelined fragment requests, runs each through a FragmentHandler (the node's
// fragment store) concurrently, and answers each when its handler settles, in any order.
// Wire format: fabric_wire.ts. Memory is bounded: a connection stops being read while it,
// or the server as a whole, holds more request and response bytes than its limit.
//
// Where bytes are copied: a PUT's fragment once, from the socket's chunks into one pooled
// buffer (the handler gets it whole); a GET's range once, into the pooled response frame
// behind its header, unless the handler read it straight into the buffer allocate() lent
// (then not at all). Each response leaves in one write.

import type * as net from "node:net";
import { assert } from "../base/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import type { NodeId } from "../raft/mod.ts";
import { FramePool } from "./fabric_pool.ts";
import { fabricMetrics as metrics } from "./fabric_metrics.ts";
import {
  decodeFabricHandshake,
  encodeFabricHandshake,
  FABRIC_CLUSTER_ID_SIZE_BYTES_MAX,
  FABRIC_ERROR_TEXT_BYTES_MAX,
  FABRIC_FRAGMENT_SIZE_BYTES_LIMIT,
  FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
  FABRIC_HANDSHAKE_BUSY,
  FABRIC_HANDSHAKE_OK,
  FABRIC_HANDSHAKE_STATUS_TEXT,
  FABRIC_HANDSHAKE_UNSUPPORTED_VERSION,
  FABRIC_HANDSHAKE_WRONG_CLUSTER,
  FABRIC_HANDSHAKE_WRONG_NODE,
  FABRIC_MAGIC,
  FABRIC_META_SIZE_BYTES_MAX,
  FABRIC_PROTOCOL_VERSION,
  FABRIC_REQUEST_HEADER_SIZE_BYTES,
  FABRIC_RESPONSE_HEADER_SIZE_BYTES,
  FabricProtocolError,
  OP_DELETE,
  OP_GET,
  OP_NAMES,
  OP_PUT,
  OP_STAT,
  readRequestHeader,
  type RequestHeader,
  STATUS_INTERNAL,
  STATUS_NOT_FOUND,
  STATUS_OK,
  statusOfError,
  writeResponseHeader,
} from "./fabric_wire.ts";
import type { TcpRaftTransport } from "./raft_transport.ts";

/** Which fragment a request is about, and which node asked. */
export interface FragmentRef {
  /** The node on the other end (checked at the handshake). */
  from: NodeId;
  /** 32 bytes; the handler's to keep. */
  chunkId: Uint8Array;
  index: number;
}

export interface FragmentPut extends FragmentRef {
  /** The fragment. A view into a pooled buffer: valid only until put() settles. */
  bytes: Uint8Array;
  /** The sender's metadata for this fragment (up to FABRIC_META_SIZE_BYTES_MAX); same lifetime. */
  meta: Uint8Array;
}

export interface FragmentGet extends FragmentRef {
  /** First byte of the range. */
  offset: number;
  /** Most bytes to return (the range may end earlier, at the fragment's end). */
  lengthMax: number;
  /**
   * A pooled buffer of `sizeBytes` (at most lengthMax) that the response will be sent from:
   * a handler that reads the range straight into it and returns it saves a copy.
   */
  allocate(sizeBytes: number): Uint8Array;
}

export interface FragmentData {
  /** The range asked for: at most lengthMax bytes from offset. */
  bytes: Uint8Array;
  /** The whole stored fragment's length. */
  sizeBytes: number;
}

export interface FragmentStat {
  sizeBytes: number;
  /** The metadata stored with the fragment at put(). */
  meta: Uint8Array;
}

/**
 * What a node's fragment store offers the fabric. Errors: throw FabricNoSpaceError,
 * FabricBadRequestError (e.g. a range past the end) or FabricUnavailableError to answer with
 * that status; anything else answers "internal error" and is logged.
 */
export interface FragmentHandler {
  /** Stores the fragment durably (it is acknowledged when this resolves). */
  put(request: FragmentPut): Promise<void>;
  /** The range, or null when the fragment is not here. */
  get(request: FragmentGet): Promise<FragmentData | null>;
  stat(request: FragmentRef): Promise<FragmentStat | null>;
  /** True when the fragment was here. */
  delete(request: FragmentRef): Promise<boolean>;
}

/** Bounds of one fabric server. Relationships are asserted at construction. */
export interface FabricServerLimits {
  /** Largest fragment a PUT may carry (announced in the handshake). */
  fragmentSizeBytesMax: number;
  /** Most requests one connection may have outstanding; more closes it. */
  outstandingPerConnectionMax: number;
  /** A connection is not read while it holds this many request and response bytes. */
  connectionBytesMax: number;
  /**
   * No connection is read while the server holds this many bytes. A connection stops at
   * the next socket chunk, so each may add one frame and one chunk past either bound.
   */
  serverBytesMax: number;
  /** Most fabric connections at once; more are answered busy. */
  inboundConnectionsMax: number;
  /** Time a handed-over connection has to complete its handshake. */
  handshakeTimeoutMs: number;
}

export const FABRIC_SERVER_LIMITS_DEFAULT: Readonly<FabricServerLimits> = {
  fragmentSizeBytesMax: FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
  outstandingPerConnectionMax: 256,
  connectionBytesMax: 64 * 1024 * 1024,
  serverBytesMax: 512 * 1024 * 1024,
  inboundConnectionsMax: 1024,
  handshakeTimeoutMs: 5000,
};

export interface FabricServerOptions {
  nodeId: NodeId;
  /** Both ends must agree (the Raft transport's cluster id). */
  clusterId: string;
  handler: FragmentHandler;
  limits?: Partial<FabricServerLimits>;
  logger?: Logger;
}

export interface FabricServerStats {
  connections: number;
  requests: number;
  bytesReceived: number;
  bytesSent: number;
  protocolErrors: number;
  heldBytes: number;
  /** Times a connection stopped being read because a byte bound was reached. */
  pauses: number;
}

type ConnState = "handshake" | "header" | "body" | "closed";

/** One accepted fabric connection's receive state and accounting. */
class ServerConnection {
  state: ConnState = "handshake";
  peer: NodeId = 0;
  label = { peer: "?", side: "server" };
  /** Handshake bytes until the handshake is complete. */
  handshake: Uint8Array;
  header = new Uint8Array(FABRIC_REQUEST_HEADER_SIZE_BYTES);
  headerView = new DataView(this.header.buffer);
  headerHave = 0;
  current: RequestHeader | null = null;
  body: Uint8Array | null = null;
  bodyHave = 0;
  /** Request ids outstanding (client-fed; bounded by outstandingPerConnectionMax). */
  outstanding = new Set<number>();
  heldBytes = 0;
  /** Bytes received and not yet added to the metric (labelled once the peer is known). */
  receivedUnreported = 0;
  /** Response buffers the socket has not finished writing (released at close if never). */
  writing = new Set<Uint8Array>();
  paused = false;
  timer: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly socket: net.Socket, head: Uint8Array) {
    this.handshake = head;
  }
}

export class FabricServer {
  readonly nodeId: NodeId;
  readonly #clusterId: Uint8Array;
  readonly #handler: FragmentHandler;
  readonly #limits: FabricServerLimits;
  readonly #log: Logger;
  readonly #pool: FramePool;
  readonly #conns = new Set<ServerConnection>();
  readonly #paused = new Set<ServerConnection>();
  #heldBytes = 0;
  #closed = false;
  readonly #stats = {
    requests: 0,
    bytesReceived: 0,
    bytesSent: 0,
    protocolErrors: 0,
    pauses: 0,
  };

  constructor(options: FabricServerOptions) {
    const limits = { ...FABRIC_SERVER_LIMITS_DEFAULT, ...options.limits };
    checkServerLimits(limits);
    assert(Number.isInteger(options.nodeId) && options.nodeId >= 1, "node id");
    this.nodeId = options.nodeId;
    this.#clusterId = new TextEncoder().encode(options.clusterId);
    assert(this.#clusterId.length <= FABRIC_CLUSTER_ID_SIZE_BYTES_MAX, "cluster id length");
    this.#handler = options.handler;
    this.#limits = limits;
    this.#log = (options.logger ?? rootLog).child({ component: "fabric", node: options.nodeId });
    this.#pool = new FramePool({
      sizeBytesMax: FABRIC_REQUEST_HEADER_SIZE_BYTES + FABRIC_META_SIZE_BYTES_MAX +
        limits.fragmentSizeBytesMax,
      classBytesMax: limits.serverBytesMax,
    });
  }

  /**
   * A server that takes the fabric connections arriving on `transport`'s port (after its
   * TLS or loopback checks). The transport's close() ends the listener; close() this too.
   */
  static attach(transport: TcpRaftTransport, options: FabricServerOptions): FabricServer {
    assert(options.nodeId === transport.nodeId, "the fabric server is the transport's node");
    const server = new FabricServer(options);
    transport.acceptConnectionKind(FABRIC_MAGIC, (socket, head) => server.accept(socket, head));
    return server;
  }

  stats(): FabricServerStats {
    return { ...this.#stats, connections: this.#conns.size, heldBytes: this.#heldBytes };
  }

  /** Takes over a connection whose first bytes (`head`, the magic first) were already read. */
  accept(socket: net.Socket, head: Uint8Array): void {
    socket.on("error", () => {}); // reported through 'close' and protocol errors
    if (this.#closed) {
      socket.destroy();
      return;
    }
    const conn = new ServerConnection(socket, head);
    if (this.#conns.size >= this.#limits.inboundConnectionsMax) {
      this.#protocolError(
        conn,
        "too_many_connections",
        `over ${this.#limits.inboundConnectionsMax} fabric connections`,
      );
      socket.end(
        encodeFabricHandshake(FABRIC_HANDSHAKE_BUSY, this.#clusterId, this.nodeId, 0, 0),
      );
      // The answer has this long to leave; a peer that keeps its side open is cut off.
      const timer = setTimeout(() => socket.destroy(), this.#limits.handshakeTimeoutMs);
      socket.once("close", () => clearTimeout(timer));
      return;
    }
    this.#conns.add(conn);
    conn.timer = setTimeout(() => {
      conn.timer = null;
      this.#protocolError(
        conn,
        "handshake_timeout",
        `no fabric handshake within ${this.#limits.handshakeTimeoutMs} ms`,
      );
      this.#close(conn);
    }, this.#limits.handshakeTimeoutMs);
    socket.on("close", () => this.#close(conn));
    socket.on("data", (chunk: Uint8Array) => this.#onData(conn, chunk));
    this.#stats.bytesReceived += head.length;
    conn.receivedUnreported += head.length;
    this.#onData(conn, new Uint8Array(0));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [...this.#conns]) this.#close(conn);
    await Promise.resolve();
  }

  // ---- receiving -----------------------------------------------------------------------

  #onData(conn: ServerConnection, chunk: Uint8Array): void {
    if (conn.state === "closed") return;
    this.#stats.bytesReceived += chunk.length;
    // Reported per request, not per socket chunk (a labelled metric update is not free).
    conn.receivedUnreported += chunk.length;
    try {
      let at = 0;
      if (conn.state === "handshake") {
        // Handshake bytes are few: gathered by copying (the only copy of them).
        const bytes = new Uint8Array(conn.handshake.length + chunk.length);
        bytes.set(conn.handshake);
        bytes.set(chunk, conn.handshake.length);
        const parsed = decodeFabricHandshake(bytes);
        if (parsed === null) {
          conn.handshake = bytes;
          return;
        }
        this.#answerHello(conn, parsed.handshake);
        conn.handshake = new Uint8Array(0);
        conn.state = "header";
        chunk = bytes.subarray(parsed.sizeBytes);
      }
      while (at < chunk.length && (conn.state as ConnState) !== "closed") {
        if (conn.state === "header") {
          const n = Math.min(FABRIC_REQUEST_HEADER_SIZE_BYTES - conn.headerHave, chunk.length - at);
          // A request header is copied out of the socket's chunk (60 bytes) so it may span
          // two chunks.
          conn.header.set(chunk.subarray(at, at + n), conn.headerHave);
          conn.headerHave += n;
          at += n;
          if (conn.headerHave < FABRIC_REQUEST_HEADER_SIZE_BYTES) break;
          conn.headerHave = 0;
          this.#startRequest(conn);
        } else {
          const body = conn.body!;
          const n = Math.min(conn.current!.bodySizeBytes - conn.bodyHave, chunk.length - at);
          // The one copy of a PUT's bytes on this side: socket chunks into one contiguous
          // pooled buffer the handler can take as a single fragment.
          body.set(chunk.subarray(at, at + n), conn.bodyHave);
          conn.bodyHave += n;
          at += n;
          if (conn.bodyHave === conn.current!.bodySizeBytes) this.#dispatch(conn);
        }
      }
    } catch (e) {
      if (!(e instanceof FabricProtocolError)) throw e;
      this.#protocolError(conn, e.reason, e.message);
      if (e.reason === "refused") {
        conn.state = "closed";
        conn.socket.end();
      } else {
        this.#close(conn);
      }
    }
  }

  #answerHello(conn: ServerConnection, hello: {
    version: number;
    status: number;
    sender: NodeId;
    receiver: NodeId;
    clusterId: Uint8Array;
  }): void {
    let status = FABRIC_HANDSHAKE_OK;
    if (hello.version !== FABRIC_PROTOCOL_VERSION || hello.status !== FABRIC_HANDSHAKE_OK) {
      status = FABRIC_HANDSHAKE_UNSUPPORTED_VERSION;
    } else if (!sameBytes(hello.clusterId, this.#clusterId)) {
      status = FABRIC_HANDSHAKE_WRONG_CLUSTER;
    } else if (
      hello.receiver !== this.nodeId || hello.sender === 0 || hello.sender === this.nodeId
    ) {
      status = FABRIC_HANDSHAKE_WRONG_NODE;
    }
    const answer = encodeFabricHandshake(
      status,
      this.#clusterId,
      this.nodeId,
      hello.sender,
      this.#limits.fragmentSizeBytesMax,
    );
    conn.socket.write(answer);
    this.#stats.bytesSent += answer.length;
    if (status !== FABRIC_HANDSHAKE_OK) {
      throw new FabricProtocolError(
        "refused",
        `refused node ${hello.sender} (fabric protocol v${hello.version}): ${
          FABRIC_HANDSHAKE_STATUS_TEXT[status]
        }`,
      );
    }
    if (conn.timer !== null) clearTimeout(conn.timer);
    conn.timer = null;
    conn.peer = hello.sender;
    conn.label = { peer: String(hello.sender), side: "server" };
    metrics.connections.inc({ side: "server" });
    metrics.bytesSent.inc(conn.label, answer.length);
  }

  #startRequest(conn: ServerConnection): void {
    const limits = this.#limits;
    const h = readRequestHeader(
      conn.headerView,
      conn.header,
      0,
      FABRIC_META_SIZE_BYTES_MAX + limits.fragmentSizeBytesMax,
    );
    if (conn.outstanding.has(h.requestId)) {
      throw new FabricProtocolError("bad_frame", `request id ${h.requestId} already outstanding`);
    }
    if (conn.outstanding.size >= limits.outstandingPerConnectionMax) {
      throw new FabricProtocolError(
        "too_many_requests",
        `over ${limits.outstandingPerConnectionMax} outstanding requests`,
      );
    }
    conn.outstanding.add(h.requestId);
    conn.current = h;
    if (h.bodySizeBytes === 0) {
      conn.body = null;
      this.#dispatch(conn);
      return;
    }
    conn.body = this.#pool.acquire(h.bodySizeBytes);
    conn.bodyHave = 0;
    this.#hold(conn, conn.body.length);
    conn.state = "body";
  }

  /** The current request is complete: serve it in the background and read the next one. */
  #dispatch(conn: ServerConnection): void {
    const h = conn.current!;
    const body = conn.body;
    conn.current = null;
    conn.body = null;
    conn.bodyHave = 0;
    conn.state = "header";
    this.#stats.requests++;
    this.#reportReceived(conn);
    void this.#serve(conn, h, body);
  }

  async #serve(conn: ServerConnection, h: RequestHeader, body: Uint8Array | null): Promise<void> {
    const started = performance.now();
    const ref: FragmentRef = { from: conn.peer, chunkId: h.chunkId, index: h.index };
    let frame: Uint8Array | null = null;
    let frameBytes = 0;
    let status = STATUS_OK;
    let fragmentSizeBytes = 0;
    let meta: Uint8Array | null = null;
    let text = "";
    try {
      switch (h.op) {
        case OP_PUT:
          await this.#handler.put({
            ...ref,
            meta: (body ?? EMPTY).subarray(0, h.metaSizeBytes),
            bytes: (body ?? EMPTY).subarray(h.metaSizeBytes, h.bodySizeBytes),
          });
          break;
        case OP_GET: {
          let lent: Uint8Array | null = null;
          const data = await this.#handler.get({
            ...ref,
            offset: h.offset,
            lengthMax: h.length,
            allocate: (sizeBytes: number): Uint8Array => {
              assert(
                lent === null && sizeBytes >= 0 && sizeBytes <= h.length,
                "allocate() once, for at most lengthMax bytes",
              );
              frame = this.#pool.acquire(FABRIC_RESPONSE_HEADER_SIZE_BYTES + sizeBytes);
              this.#hold(conn, frame.length);
              lent = frame.subarray(
                FABRIC_RESPONSE_HEADER_SIZE_BYTES,
                FABRIC_RESPONSE_HEADER_SIZE_BYTES + sizeBytes,
              );
              return lent;
            },
          });
          if (data === null) {
            status = STATUS_NOT_FOUND;
            text = "no such fragment";
            break;
          }
          if (data.bytes.length > h.length || data.sizeBytes < data.bytes.length) {
            status = STATUS_INTERNAL;
            text = "the store returned more bytes than asked";
            this.#log.error("fragment handler returned a bad range", {
              lengthMax: h.length,
              returned: data.bytes.length,
              sizeBytes: data.sizeBytes,
            });
            break;
          }
          fragmentSizeBytes = data.sizeBytes;
          frameBytes = FABRIC_RESPONSE_HEADER_SIZE_BYTES + data.bytes.length;
          const inPlace = frame !== null &&
            data.bytes.buffer === (frame as Uint8Array).buffer &&
            data.bytes.byteOffset ===
              (frame as Uint8Array).byteOffset + FABRIC_RESPONSE_HEADER_SIZE_BYTES;
          if (!inPlace) {
            if (frame === null || (frame as Uint8Array).length < frameBytes) {
              if (frame !== null) this.#free(conn, frame);
              frame = this.#pool.acquire(frameBytes);
              this.#hold(conn, frame.length);
            }
            // The handler's bytes are copied behind the header so the response leaves in
            // one write and the handler's buffer is its own again at once.
            (frame as Uint8Array).set(data.bytes, FABRIC_RESPONSE_HEADER_SIZE_BYTES);
          }
          break;
        }
        case OP_STAT: {
          const stat = await this.#handler.stat(ref);
          if (stat === null) {
            status = STATUS_NOT_FOUND;
            text = "no such fragment";
          } else {
            assert(stat.meta.length <= FABRIC_META_SIZE_BYTES_MAX, "stored metadata too long");
            fragmentSizeBytes = stat.sizeBytes;
            meta = stat.meta;
          }
          break;
        }
        case OP_DELETE:
          if (!await this.#handler.delete(ref)) {
            status = STATUS_NOT_FOUND;
            text = "no such fragment";
          }
          break;
      }
    } catch (error) {
      status = statusOfError(error);
      text = error instanceof Error ? error.message : String(error);
      if (status === STATUS_INTERNAL) {
        this.#log.error("fragment handler failed", { op: OP_NAMES[h.op], error });
      }
    } finally {
      if (body !== null) this.#free(conn, body);
    }
    const op = OP_NAMES[h.op]!;
    metrics.latency.observe({ side: "server", op }, (performance.now() - started) / 1000);
    metrics.requests.inc({ side: "server", op, outcome: outcomeOf(status) });

    if (status !== STATUS_OK) {
      if (frame !== null) this.#free(conn, frame);
      frame = null;
      meta = encodeText(text);
    }
    if (frame === null) {
      // A small response (status, metadata or error text): header and body in one buffer.
      const small = meta ?? new Uint8Array(0);
      frameBytes = FABRIC_RESPONSE_HEADER_SIZE_BYTES + small.length;
      frame = this.#pool.acquire(frameBytes);
      this.#hold(conn, frame.length);
      (frame as Uint8Array).set(small, FABRIC_RESPONSE_HEADER_SIZE_BYTES);
    }
    const out = frame as Uint8Array;
    writeResponseHeader(new DataView(out.buffer, out.byteOffset, out.byteLength), 0, {
      bodySizeBytes: frameBytes - FABRIC_RESPONSE_HEADER_SIZE_BYTES,
      op: h.op,
      status,
      metaSizeBytes: status === STATUS_OK && meta !== null ? meta.length : 0,
      requestId: h.requestId,
      fragmentSizeBytes,
    });
    if (conn.state === "closed") {
      this.#free(conn, out);
      return;
    }
    conn.outstanding.delete(h.requestId);
    this.#stats.bytesSent += frameBytes;
    metrics.bytesSent.inc(conn.label, frameBytes);
    // One write per response; the pooled buffer is released when the socket is done with it.
    conn.writing.add(out);
    conn.socket.write(out.subarray(0, frameBytes), () => {
      if (conn.writing.delete(out)) this.#free(conn, out);
    });
  }

  // ---- flow control --------------------------------------------------------------------

  #hold(conn: ServerConnection, n: number): void {
    conn.heldBytes += n;
    this.#heldBytes += n;
    metrics.serverHeldBytes.inc({}, n);
    if (
      !conn.paused && conn.state !== "closed" &&
      (conn.heldBytes >= this.#limits.connectionBytesMax ||
        this.#heldBytes >= this.#limits.serverBytesMax)
    ) {
      conn.paused = true;
      this.#paused.add(conn);
      this.#stats.pauses++;
      conn.socket.pause();
    }
  }

  #free(conn: ServerConnection, buffer: Uint8Array): void {
    this.#pool.release(buffer);
    conn.heldBytes -= buffer.length;
    this.#heldBytes -= buffer.length;
    metrics.serverHeldBytes.dec({}, buffer.length);
    assert(conn.heldBytes >= 0 && this.#heldBytes >= 0, "held bytes went negative");
    if (this.#paused.size === 0 || this.#heldBytes >= this.#limits.serverBytesMax) return;
    for (const c of this.#paused) {
      if (c.heldBytes < this.#limits.connectionBytesMax) {
        c.paused = false;
        this.#paused.delete(c);
        if (c.state !== "closed") c.socket.resume();
      }
    }
  }

  #reportReceived(conn: ServerConnection): void {
    if (conn.receivedUnreported === 0) return;
    metrics.bytesReceived.inc(conn.label, conn.receivedUnreported);
    conn.receivedUnreported = 0;
  }

  #close(conn: ServerConnection): void {
    if (!this.#conns.delete(conn)) return;
    this.#reportReceived(conn);
    if (conn.timer !== null) clearTimeout(conn.timer);
    conn.timer = null;
    if (conn.peer !== 0) metrics.connections.dec({ side: "server" });
    conn.state = "closed";
    this.#paused.delete(conn);
    conn.socket.destroy();
    if (conn.body !== null) {
      this.#free(conn, conn.body);
      conn.body = null;
    }
    // A destroyed socket writes nothing more, so its unfinished writes' buffers are free.
    for (const out of conn.writing) this.#free(conn, out);
    conn.writing.clear();
  }

  #protocolError(conn: ServerConnection, reason: string, message: string): void {
    this.#stats.protocolErrors++;
    metrics.protocolErrors.inc({ side: "server", reason });
    this.#log.warn(
      `closing fabric connection from ${conn.socket.remoteAddress ?? "?"} (node ${
        conn.peer || "?"
      }): ${message}`,
      { reason },
    );
  }
}

function checkServerLimits(l: FabricServerLimits): void {
  for (const [name, value] of Object.entries(l)) {
    assert(
      Number.isInteger(value) && value > 0,
      `fabric server limit ${name}=${value} must be a positive integer`,
    );
  }
  assert(l.fragmentSizeBytesMax <= FABRIC_FRAGMENT_SIZE_BYTES_LIMIT, "fragmentSizeBytesMax");
  assert(
    l.connectionBytesMax <= l.serverBytesMax,
    "connectionBytesMax must not exceed serverBytesMax",
  );
}

export function outcomeOf(status: number): string {
  return ["ok", "not_found", "no_space", "bad_request", "unavailable", "internal"][status] ??
    "internal";
}

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** UTF-8 of `text`, cut to FABRIC_ERROR_TEXT_BYTES_MAX bytes. */
function encodeText(text: string): Uint8Array {
  const bytes = encoder.encode(text);
  return bytes.length <= FABRIC_ERROR_TEXT_BYTES_MAX
    ? bytes
    : bytes.subarray(0, FABRIC_ERROR_TEXT_BYTES_MAX);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
