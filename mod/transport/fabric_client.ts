// The chunk fabric's asking side: puts, gets, stats and deletes fragments on other nodes over
// their Raft port (fabric_wire.ts). Per peer, a small pool of connections carries pipelined
// requests; the bytes in flight to a peer are bounded, and a caller over the bound waits its
// turn (in a bounded line) rather than queueing bytes. Every request has a deadline and may
// be cancelled; a lost connection fails its requests as unavailable, and the next request
// dials again (after a backoff while the peer keeps refusing).
//
// Where bytes are copied: a PUT's fragment once, into a pooled frame buffer behind its
// header (one write per frame, and the caller's buffer is free when put() returns), unless
// the caller produced it in a buffer lent by lendFragmentBuffer() (then not at all); a GET's
// range once, from the socket's chunks into the caller's `into` buffer (or a fresh one).

import type * as net from "node:net";
import type * as tls from "node:tls";
import { assert, formatHostPort, type HostPort } from "../base/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import type { NodeId } from "../raft/mod.ts";
import { FramePool } from "./fabric_pool.ts";
import { fabricMetrics as metrics } from "./fabric_metrics.ts";
import {
  decodeFabricHandshake,
  encodeFabricHandshake,
  errorOfStatus,
  FABRIC_CHUNK_ID_SIZE_BYTES,
  FABRIC_CLUSTER_ID_SIZE_BYTES_MAX,
  FABRIC_ERROR_TEXT_BYTES_MAX,
  FABRIC_FRAGMENT_SIZE_BYTES_LIMIT,
  FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
  FABRIC_FRAME_OVERHEAD_BYTES_MAX,
  FABRIC_HANDSHAKE_OK,
  FABRIC_HANDSHAKE_STATUS_TEXT,
  FABRIC_META_SIZE_BYTES_MAX,
  FABRIC_PROTOCOL_VERSION,
  FABRIC_REQUEST_HEADER_SIZE_BYTES,
  FABRIC_RESPONSE_HEADER_SIZE_BYTES,
  FabricBadRequestError,
  FabricCancelledError,
  FabricError,
  type FabricOp,
  FabricProtocolError,
  FabricTimeoutError,
  FabricUnavailableError,
  OP_DELETE,
  OP_GET,
  OP_NAMES,
  OP_PUT,
  OP_STAT,
  readResponseHeader,
  type ResponseHeader,
  STATUS_NOT_FOUND,
  STATUS_OK,
  writeRequestHeader,
} from "./fabric_wire.ts";
import { checkPeerCertificate, dialNode, type TlsMaterial } from "./raft_transport.ts";
import { SERVER_CERTIFICATE_KINDS } from "./peer_identity.ts";

/** Bounds of one fabric client. Relationships are asserted at construction. */
export interface FabricClientLimits {
  /** Largest fragment this node puts or takes in a GET response. */
  fragmentSizeBytesMax: number;
  /** Most connections to one peer (opened as load needs them). */
  connectionsPerPeerMax: number;
  /** Most requests outstanding on one connection (the server's limit must not be lower). */
  outstandingPerConnectionMax: number;
  /**
   * Most fragment bytes in flight to one peer: PUT bodies being sent or stored, GET ranges
   * asked for and not yet received. A request over the bound waits.
   */
  inflightBytesPerPeerMax: number;
  /** Most requests waiting for room to one peer; more fail at once as unavailable. */
  waitingPerPeerMax: number;
  /** Default deadline of a request (admission, connection, answer), unless the call sets one. */
  requestTimeoutMs: number;
  /** Time to connect, run TLS and the handshake. */
  connectTimeoutMs: number;
  keepAliveMs: number;
  reconnectDelayMsMin: number;
  reconnectDelayMsMax: number;
}

export const FABRIC_CLIENT_LIMITS_DEFAULT: Readonly<FabricClientLimits> = {
  fragmentSizeBytesMax: FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
  // Two: a large transfer does not hold every small request behind it, and on a loaded
  // host more sockets cost more than they carry (bench:fabric).
  connectionsPerPeerMax: 2,
  outstandingPerConnectionMax: 64,
  inflightBytesPerPeerMax: 64 * 1024 * 1024,
  waitingPerPeerMax: 4096,
  requestTimeoutMs: 30_000,
  connectTimeoutMs: 5000,
  keepAliveMs: 30_000,
  reconnectDelayMsMin: 50,
  reconnectDelayMsMax: 2000,
};

export interface FabricClientOptions {
  nodeId: NodeId;
  /** The Raft transport's cluster id. */
  clusterId: string;
  /** Where each peer's Raft port is (KISEKI_RAFT_PEERS); more with setPeer(). */
  peers?: readonly { id: NodeId; addr: HostPort }[];
  /** Mutual TLS with the cluster CA (the Raft port's material). Null: plain TCP. */
  tls?: TlsMaterial | null;
  /** With TLS, the certificate OUs a peer may have (cluster servers by default). */
  peerOrganizationalUnits?: readonly string[];
  limits?: Partial<FabricClientLimits>;
  logger?: Logger;
  /** Jitter source for reconnect delays, in [0, 1). */
  random?: () => number;
}

/** Per-call options. */
export interface FabricCallOptions {
  /** Deadline for this request (default limits.requestTimeoutMs). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface FragmentAddress {
  /** 32 bytes. */
  chunkId: Uint8Array;
  index: number;
}

export interface FragmentPutRequest extends FragmentAddress {
  bytes: Uint8Array;
  /** Kept with the fragment by the receiver; at most FABRIC_META_SIZE_BYTES_MAX bytes. */
  meta?: Uint8Array;
}

export interface FragmentGetRequest extends FragmentAddress {
  /** First byte of the range (default 0). */
  offset?: number;
  /**
   * Most bytes wanted (default: `into`'s length, else fragmentSizeBytesMax). This many bytes
   * are counted in flight until the answer, so callers that know the size should say it.
   */
  length?: number;
  /** Where to receive the range (a pooled buffer of the caller's); else a fresh buffer. */
  into?: Uint8Array;
}

export interface FragmentGetResult {
  /** The range (a view of `into` when given). */
  bytes: Uint8Array;
  /** The whole stored fragment's length. */
  sizeBytes: number;
}

export interface FragmentStatResult {
  sizeBytes: number;
  meta: Uint8Array;
}

export interface FabricClientStats {
  requests: number;
  bytesSent: number;
  bytesReceived: number;
  connects: number;
  reconnects: number;
  protocolErrors: number;
  /** Requests that waited for in-flight room. */
  waits: number;
  /** Largest in-flight bytes seen to one peer. */
  inflightBytesPeak: number;
}

type Resolve = (value: ResponseHeader & { body: Uint8Array | null }) => void;

interface Pending {
  op: number;
  resolve: Resolve;
  reject: (error: Error) => void;
  /** The caller gave up (deadline, signal): its answer is read and dropped. */
  abandoned: boolean;
  /** GET: most range bytes the answer may carry, and where to put them. */
  lengthMax: number;
  into: Uint8Array | null;
}

interface Waiter {
  costBytes: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

type ConnState = "connecting" | "ready" | "closed";

/** One dialled connection: its socket, its outstanding requests, its receive state. */
class ClientConnection {
  state: ConnState = "connecting";
  socket: net.Socket | null = null;
  /** Request id → request (bounded by outstandingPerConnectionMax). */
  readonly pending = new Map<number, Pending>();
  nextId = 1;
  ready: Promise<void>;
  onReady!: () => void;
  onFailed!: (error: Error) => void;
  handshake = new Uint8Array(0);
  header = new Uint8Array(FABRIC_RESPONSE_HEADER_SIZE_BYTES);
  headerView = new DataView(this.header.buffer);
  headerHave = 0;
  /** The response whose body is being read. */
  current: ResponseHeader | null = null;
  currentPending: Pending | null = null;
  body: Uint8Array | null = null;
  bodyHave = 0;
  /** Request frames the socket has not finished writing. */
  readonly writing = new Set<Uint8Array>();
  lastReceiveMs = performance.now();
  /** Bytes received and not yet added to the metric. */
  receivedUnreported = 0;
  peerFragmentSizeBytesMax = 0;
  timer: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly channel: PeerChannel) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.onReady = resolve;
      this.onFailed = reject;
    });
    this.ready.catch(() => {}); // seen by whoever awaits it
  }
}

/** Everything towards one peer: address, connections, in-flight accounting, waiting line. */
class PeerChannel {
  readonly label: { peer: string; side: string };
  readonly peerLabel: { peer: string };
  readonly conns: ClientConnection[] = [];
  inflightBytes = 0;
  inflightRequests = 0;
  readonly waiters: Waiter[] = [];
  failures = 0;
  downUntilMs = 0;
  lastError = "";
  everConnected = false;
  outageLogged = false;
  removed = false;

  constructor(readonly id: NodeId, public addr: HostPort) {
    this.label = { peer: String(id), side: "client" };
    this.peerLabel = { peer: String(id) };
  }
}

/** Asks other nodes' fabric servers for fragments. */
export class FabricClient {
  readonly nodeId: NodeId;
  readonly #clusterId: Uint8Array;
  readonly #limits: FabricClientLimits;
  readonly #tls: TlsMaterial | null;
  readonly #peerOus: readonly string[];
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #pool: FramePool;
  readonly #channels = new Map<NodeId, PeerChannel>();
  /** Buffers lent by lendFragmentBuffer(), to the frames they live in. */
  readonly #lent = new WeakMap<Uint8Array, Uint8Array>();
  #closed = false;
  readonly #stats: FabricClientStats = {
    requests: 0,
    bytesSent: 0,
    bytesReceived: 0,
    connects: 0,
    reconnects: 0,
    protocolErrors: 0,
    waits: 0,
    inflightBytesPeak: 0,
  };

  constructor(options: FabricClientOptions) {
    const limits = { ...FABRIC_CLIENT_LIMITS_DEFAULT, ...options.limits };
    checkClientLimits(limits);
    assert(Number.isInteger(options.nodeId) && options.nodeId >= 1, "node id");
    this.nodeId = options.nodeId;
    this.#clusterId = new TextEncoder().encode(options.clusterId);
    assert(this.#clusterId.length <= FABRIC_CLUSTER_ID_SIZE_BYTES_MAX, "cluster id length");
    this.#limits = limits;
    this.#tls = options.tls ?? null;
    this.#peerOus = options.peerOrganizationalUnits ?? SERVER_CERTIFICATE_KINDS;
    this.#log = (options.logger ?? rootLog).child({ component: "fabric", node: options.nodeId });
    this.#random = options.random ?? Math.random;
    this.#pool = new FramePool({
      sizeBytesMax: FABRIC_REQUEST_HEADER_SIZE_BYTES + FABRIC_META_SIZE_BYTES_MAX +
        limits.fragmentSizeBytesMax,
      classBytesMax: limits.inflightBytesPerPeerMax,
    });
    for (const p of options.peers ?? []) if (p.id !== this.nodeId) this.setPeer(p.id, p.addr);
  }

  stats(): FabricClientStats {
    return { ...this.#stats };
  }

  /** Bytes in flight to `peer` now (0 for an unknown peer). */
  inflightBytes(peer: NodeId): number {
    return this.#channels.get(peer)?.inflightBytes ?? 0;
  }

  setPeer(id: NodeId, addr: HostPort): void {
    assert(id !== this.nodeId, "setPeer() with this node's own id");
    const channel = this.#channels.get(id);
    if (channel === undefined) {
      this.#channels.set(id, new PeerChannel(id, addr));
      return;
    }
    if (channel.addr.host === addr.host && channel.addr.port === addr.port) return;
    channel.addr = addr;
    channel.failures = 0;
    channel.downUntilMs = 0;
    for (const conn of [...channel.conns]) this.#drop(conn, "the peer moved to a new address");
  }

  removePeer(id: NodeId): void {
    const channel = this.#channels.get(id);
    if (channel === undefined) return;
    this.#channels.delete(id);
    // Removed first, so that room freed by the dropped connections admits no one.
    channel.removed = true;
    for (const w of channel.waiters.splice(0)) {
      w.reject(new FabricUnavailableError(`node ${id} was removed`, id));
    }
    for (const conn of [...channel.conns]) this.#drop(conn, "the peer was removed");
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const id of [...this.#channels.keys()]) this.removePeer(id);
    await Promise.resolve();
  }

  // ---- the four operations -------------------------------------------------------------

  /** Stores a fragment on `peer`; resolves once the peer's store acknowledged it. */
  async put(
    peer: NodeId,
    request: FragmentPutRequest,
    options: FabricCallOptions = {},
  ): Promise<void> {
    // A lent buffer is the put's from here on, whatever happens.
    const lentFrame = this.#lent.get(request.bytes) ?? null;
    this.#lent.delete(request.bytes);
    const body: RequestBody = {
      meta: request.meta ?? new Uint8Array(0),
      bytes: request.bytes,
      offset: 0,
      length: 0,
      into: null,
      lentFrame,
    };
    try {
      if (body.meta!.length > FABRIC_META_SIZE_BYTES_MAX) {
        throw new FabricBadRequestError(
          `fragment metadata of ${body.meta!.length} bytes exceeds ${FABRIC_META_SIZE_BYTES_MAX}`,
          peer,
        );
      }
      if (request.bytes.length > this.#limits.fragmentSizeBytesMax) {
        throw new FabricBadRequestError(
          `fragment of ${request.bytes.length} bytes exceeds ${this.#limits.fragmentSizeBytesMax}`,
          peer,
        );
      }
      const costBytes = body.meta!.length + request.bytes.length;
      await this.#call(peer, OP_PUT, request, costBytes, options, body);
    } finally {
      // Not handed to a socket (refused before sending): back to the pool now.
      if (body.lentFrame !== null) this.#pool.release(body.lentFrame);
    }
  }

  /**
   * A buffer of `sizeBytes` inside a pooled frame, for a caller that produces a fragment (an
   * erasure coder, a disk read) straight into it: put() with exactly this array sends it
   * without copying, and takes it back (do not touch it after calling put()). One never put
   * goes back with returnFragmentBuffer().
   */
  lendFragmentBuffer(sizeBytes: number): Uint8Array {
    assert(
      Number.isInteger(sizeBytes) && sizeBytes >= 0 &&
        sizeBytes <= this.#limits.fragmentSizeBytesMax,
      `lent fragment of ${sizeBytes} bytes (at most ${this.#limits.fragmentSizeBytesMax})`,
    );
    const frame = this.#pool.acquire(FABRIC_FRAME_OVERHEAD_BYTES_MAX + sizeBytes);
    const view = frame.subarray(
      FABRIC_FRAME_OVERHEAD_BYTES_MAX,
      FABRIC_FRAME_OVERHEAD_BYTES_MAX + sizeBytes,
    );
    this.#lent.set(view, frame);
    return view;
  }

  /** Gives back a buffer from lendFragmentBuffer() that was not put. */
  returnFragmentBuffer(view: Uint8Array): void {
    const frame = this.#lent.get(view);
    assert(frame !== undefined, "returnFragmentBuffer() of a buffer not lent (or already put)");
    this.#lent.delete(view);
    this.#pool.release(frame);
  }

  /** A fragment's range from `peer`; FabricNotFoundError when the peer does not hold it. */
  async get(
    peer: NodeId,
    request: FragmentGetRequest,
    options: FabricCallOptions = {},
  ): Promise<FragmentGetResult> {
    const offset = request.offset ?? 0;
    const length = request.length ?? request.into?.length ?? this.#limits.fragmentSizeBytesMax;
    if (
      !Number.isSafeInteger(offset) || offset < 0 || !Number.isInteger(length) || length < 0 ||
      length > this.#limits.fragmentSizeBytesMax
    ) {
      throw new FabricBadRequestError(
        `range ${offset}+${length} (at most ${this.#limits.fragmentSizeBytesMax} bytes)`,
        peer,
      );
    }
    const answer = await this.#call(peer, OP_GET, request, length, options, {
      meta: null,
      bytes: null,
      offset,
      length,
      into: request.into ?? null,
      lentFrame: null,
    });
    const empty = request.into?.subarray(0, 0) ?? new Uint8Array(0);
    return { bytes: answer.body ?? empty, sizeBytes: answer.fragmentSizeBytes };
  }

  /** The fragment's size and metadata on `peer`, or null when it does not hold it. */
  async stat(
    peer: NodeId,
    request: FragmentAddress,
    options: FabricCallOptions = {},
  ): Promise<FragmentStatResult | null> {
    const answer = await this.#call(peer, OP_STAT, request, 0, options, NO_BODY);
    if (answer.status === STATUS_NOT_FOUND) return null;
    return { sizeBytes: answer.fragmentSizeBytes, meta: answer.body ?? new Uint8Array(0) };
  }

  /** Deletes the fragment on `peer`; true when it was there. */
  async delete(
    peer: NodeId,
    request: FragmentAddress,
    options: FabricCallOptions = {},
  ): Promise<boolean> {
    const answer = await this.#call(peer, OP_DELETE, request, 0, options, NO_BODY);
    return answer.status === STATUS_OK;
  }

  // ---- one request ---------------------------------------------------------------------

  async #call(
    peer: NodeId,
    op: number,
    address: FragmentAddress,
    costBytes: number,
    options: FabricCallOptions,
    body: RequestBody,
  ): Promise<ResponseHeader & { body: Uint8Array | null }> {
    if (address.chunkId.length !== FABRIC_CHUNK_ID_SIZE_BYTES) {
      throw new FabricBadRequestError(`chunk id of ${address.chunkId.length} bytes (32)`, peer);
    }
    if (!Number.isInteger(address.index) || address.index < 0 || address.index > 0xffff_ffff) {
      throw new FabricBadRequestError(`fragment index ${address.index}`, peer);
    }
    const opName = OP_NAMES[op]!;
    const started = performance.now();
    this.#stats.requests++;
    const timeoutMs = options.timeoutMs ?? this.#limits.requestTimeoutMs;
    // One controller per request: the deadline and the caller's signal both end it.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onCallerAbort = () => controller.abort();
    options.signal?.addEventListener("abort", onCallerAbort, { once: true });
    const signal = controller.signal;
    const ended = (): FabricError =>
      timedOut
        ? new FabricTimeoutError(
          `${opName} to node ${peer}: no answer within ${timeoutMs} ms`,
          peer,
        )
        : new FabricCancelledError(`${opName} to node ${peer} cancelled`, peer);
    let channel: PeerChannel | null = null;
    let admitted = false;
    try {
      if (options.signal?.aborted) throw ended();
      channel = this.#channels.get(peer) ?? null;
      if (channel === null || this.#closed) {
        throw new FabricUnavailableError(`no fabric address for node ${peer}`, peer);
      }
      await this.#admit(channel, costBytes, signal, ended);
      admitted = true;
      let conn = await this.#connection(channel, signal, ended);
      // Others may have filled or lost the connection while this request was resumed.
      for (
        let retry = 0;
        conn.state !== "ready" || conn.pending.size >= this.#limits.outstandingPerConnectionMax;
        retry++
      ) {
        if (retry >= this.#limits.connectionsPerPeerMax) {
          throw new FabricUnavailableError(`no free connection to node ${peer}`, peer);
        }
        conn = await this.#connection(channel, signal, ended);
      }
      if (op === OP_PUT && body.bytes!.length > conn.peerFragmentSizeBytesMax) {
        throw new FabricBadRequestError(
          `fragment of ${
            body.bytes!.length
          } bytes exceeds node ${peer}'s limit of ${conn.peerFragmentSizeBytesMax}`,
          peer,
        );
      }
      const answer = await this.#send(conn, op, address, body, signal, ended);
      // Stat and delete answer "not here" as a result; for put and get it is an error.
      const notFoundIsAnswer = answer.status === STATUS_NOT_FOUND &&
        (op === OP_STAT || op === OP_DELETE);
      if (answer.status !== STATUS_OK && !notFoundIsAnswer) {
        const text = new TextDecoder().decode(answer.body ?? new Uint8Array(0));
        throw errorOfStatus(answer.status, text, peer);
      }
      this.#finish(opName, answer.status === STATUS_OK ? "ok" : "not_found", started);
      return answer;
    } catch (error) {
      this.#finish(opName, error instanceof FabricError ? error.code : "internal", started);
      throw error;
    } finally {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onCallerAbort);
      if (admitted) this.#release(channel!, costBytes);
    }
  }

  #finish(op: FabricOp, outcome: string, started: number): void {
    metrics.requests.inc({ side: "client", op, outcome });
    metrics.latency.observe({ side: "client", op }, (performance.now() - started) / 1000);
  }

  /** Waits (in line, bounded) until `costBytes` more fit in flight to the peer. */
  #admit(
    channel: PeerChannel,
    costBytes: number,
    signal: AbortSignal,
    ended: () => FabricError,
  ): Promise<void> {
    const limits = this.#limits;
    const requestsMax = limits.connectionsPerPeerMax * limits.outstandingPerConnectionMax;
    const fits = () =>
      channel.inflightRequests < requestsMax &&
      channel.inflightBytes + costBytes <= limits.inflightBytesPerPeerMax;
    if (channel.waiters.length === 0 && fits()) {
      this.#take(channel, costBytes);
      return Promise.resolve();
    }
    if (channel.waiters.length >= limits.waitingPerPeerMax) {
      return Promise.reject(
        new FabricUnavailableError(
          `over ${limits.waitingPerPeerMax} requests waiting for room to node ${channel.id}`,
          channel.id,
        ),
      );
    }
    this.#stats.waits++;
    metrics.waits.inc(channel.peerLabel);
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        costBytes,
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = channel.waiters.indexOf(waiter);
        if (at >= 0) channel.waiters.splice(at, 1);
        reject(ended());
        // The line may move now that this waiter left it.
        this.#wake(channel);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      channel.waiters.push(waiter);
    });
  }

  #take(channel: PeerChannel, costBytes: number): void {
    channel.inflightBytes += costBytes;
    channel.inflightRequests++;
    metrics.inflightBytes.inc(channel.peerLabel, costBytes);
    if (channel.inflightBytes > this.#stats.inflightBytesPeak) {
      this.#stats.inflightBytesPeak = channel.inflightBytes;
    }
  }

  #release(channel: PeerChannel, costBytes: number): void {
    channel.inflightBytes -= costBytes;
    channel.inflightRequests--;
    metrics.inflightBytes.dec(channel.peerLabel, costBytes);
    assert(channel.inflightBytes >= 0 && channel.inflightRequests >= 0, "in-flight accounting");
    this.#wake(channel);
  }

  /** Lets waiters in, first come first served, while they fit. */
  #wake(channel: PeerChannel): void {
    const limits = this.#limits;
    const requestsMax = limits.connectionsPerPeerMax * limits.outstandingPerConnectionMax;
    while (channel.waiters.length > 0 && !channel.removed) {
      const next = channel.waiters[0]!;
      if (
        channel.inflightRequests >= requestsMax ||
        channel.inflightBytes + next.costBytes > limits.inflightBytesPerPeerMax
      ) {
        return;
      }
      channel.waiters.shift();
      this.#take(channel, next.costBytes);
      next.resolve();
    }
  }

  /** A ready connection with room, dialling another while there are fewer than allowed. */
  async #connection(
    channel: PeerChannel,
    signal: AbortSignal,
    ended: () => FabricError,
  ): Promise<ClientConnection> {
    const limits = this.#limits;
    for (let attempt = 0; attempt <= limits.connectionsPerPeerMax; attempt++) {
      if (channel.removed) {
        throw new FabricUnavailableError(`node ${channel.id} was removed`, channel.id);
      }
      let best: ClientConnection | null = null;
      let connecting: ClientConnection | null = null;
      for (const c of channel.conns) {
        if (c.state === "connecting") connecting ??= c;
        else if (
          c.state === "ready" && c.pending.size < limits.outstandingPerConnectionMax &&
          (best === null || c.pending.size < best.pending.size)
        ) {
          best = c;
        }
      }
      if (best !== null && best.pending.size === 0) return best;
      if (connecting === null && channel.conns.length < limits.connectionsPerPeerMax) {
        if (performance.now() < channel.downUntilMs) {
          if (best !== null) return best;
          throw new FabricUnavailableError(
            `node ${channel.id} at ${
              formatHostPort(channel.addr)
            } is unreachable (${channel.lastError})`,
            channel.id,
          );
        }
        connecting = this.#dial(channel);
      }
      if (best !== null) return best;
      if (connecting === null) {
        throw new FabricUnavailableError(
          `every connection to node ${channel.id} is full of unanswered requests`,
          channel.id,
        );
      }
      await abortable(connecting.ready, signal, ended);
    }
    throw new FabricUnavailableError(`no connection to node ${channel.id}`, channel.id);
  }

  // ---- connections ---------------------------------------------------------------------

  #dial(channel: PeerChannel): ClientConnection {
    const conn = new ClientConnection(channel);
    channel.conns.push(conn);
    this.#stats.connects++;
    if (channel.failures > 0) {
      this.#stats.reconnects++;
      metrics.reconnects.inc(channel.peerLabel);
    }
    const material = this.#tls;
    const socket = dialNode(channel.addr, material, this.#limits.keepAliveMs);
    conn.socket = socket;
    conn.timer = setTimeout(() => {
      conn.timer = null;
      this.#drop(conn, `not connected within ${this.#limits.connectTimeoutMs} ms`);
    }, this.#limits.connectTimeoutMs);
    socket.on("error", (error: Error) => this.#drop(conn, error.message));
    socket.on("close", () => this.#drop(conn, "connection closed by the peer"));
    socket.once(material === null ? "connect" : "secureConnect", () => {
      if (conn.state !== "connecting") return;
      if (material !== null) {
        const problem = checkPeerCertificate(socket as tls.TLSSocket, this.#peerOus);
        if (problem !== null) {
          this.#protocolError("tls", problem);
          this.#drop(conn, problem);
          return;
        }
      }
      const hello = encodeFabricHandshake(
        FABRIC_HANDSHAKE_OK,
        this.#clusterId,
        this.nodeId,
        channel.id,
        this.#limits.fragmentSizeBytesMax,
      );
      socket.write(hello);
      this.#countSent(channel, hello.length);
    });
    socket.on("data", (chunk: Uint8Array) => {
      try {
        this.#onData(conn, chunk);
      } catch (e) {
        if (!(e instanceof FabricProtocolError)) throw e;
        this.#protocolError(e.reason, e.message);
        this.#drop(conn, e.message);
      }
    });
    return conn;
  }

  #onData(conn: ClientConnection, chunk: Uint8Array): void {
    if (conn.state === "closed") return;
    const channel = conn.channel;
    conn.lastReceiveMs = performance.now();
    this.#stats.bytesReceived += chunk.length;
    // Reported per answer, not per socket chunk (a labelled metric update is not free).
    conn.receivedUnreported += chunk.length;
    let at = 0;
    if (conn.state === "connecting") {
      // The handshake answer is 20 to 84 bytes: gathered by copying.
      const bytes = new Uint8Array(conn.handshake.length + chunk.length);
      bytes.set(conn.handshake);
      bytes.set(chunk, conn.handshake.length);
      const parsed = decodeFabricHandshake(bytes);
      if (parsed === null) {
        conn.handshake = bytes;
        return;
      }
      const answer = parsed.handshake;
      if (answer.status !== FABRIC_HANDSHAKE_OK) {
        throw new FabricProtocolError(
          "refused",
          `node ${channel.id} refused the fabric handshake: ${
            FABRIC_HANDSHAKE_STATUS_TEXT[answer.status] ?? `status ${answer.status}`
          } (it speaks v${answer.version}, this node v${FABRIC_PROTOCOL_VERSION})`,
        );
      }
      if (answer.version !== FABRIC_PROTOCOL_VERSION || answer.sender !== channel.id) {
        throw new FabricProtocolError(
          "bad_handshake",
          `answered as node ${answer.sender} protocol v${answer.version}`,
        );
      }
      if (parsed.sizeBytes !== bytes.length) {
        throw new FabricProtocolError("bad_handshake", "data before any request");
      }
      conn.handshake = new Uint8Array(0);
      conn.peerFragmentSizeBytesMax = answer.fragmentSizeBytesMax;
      if (conn.timer !== null) clearTimeout(conn.timer);
      conn.timer = null;
      conn.state = "ready";
      metrics.connections.inc({ side: "client" });
      channel.failures = 0;
      channel.downUntilMs = 0;
      if (channel.outageLogged || !channel.everConnected) {
        this.#log.info("fabric peer connected", {
          peer: channel.id,
          addr: formatHostPort(channel.addr),
        });
      }
      channel.outageLogged = false;
      channel.everConnected = true;
      conn.onReady();
      return;
    }
    while (at < chunk.length) {
      if (conn.current === null) {
        const n = Math.min(FABRIC_RESPONSE_HEADER_SIZE_BYTES - conn.headerHave, chunk.length - at);
        // Response headers (24 bytes) are copied out so they may span two socket chunks.
        conn.header.set(chunk.subarray(at, at + n), conn.headerHave);
        conn.headerHave += n;
        at += n;
        if (conn.headerHave < FABRIC_RESPONSE_HEADER_SIZE_BYTES) break;
        conn.headerHave = 0;
        this.#startResponse(conn);
      } else {
        const h = conn.current;
        const n = Math.min(h.bodySizeBytes - conn.bodyHave, chunk.length - at);
        // The one copy of a GET's range on this side: socket chunks into the destination.
        // An abandoned request's bytes are skipped, never written into its caller's buffer.
        if (conn.body !== null && !conn.currentPending!.abandoned) {
          conn.body.set(chunk.subarray(at, at + n), conn.bodyHave);
        }
        conn.bodyHave += n;
        at += n;
        if (conn.bodyHave === h.bodySizeBytes) this.#completeResponse(conn);
      }
    }
  }

  #startResponse(conn: ClientConnection): void {
    const h = readResponseHeader(conn.headerView, 0);
    const p = conn.pending.get(h.requestId);
    if (p === undefined) {
      throw new FabricProtocolError("bad_frame", `response to unknown request ${h.requestId}`);
    }
    if (h.op !== p.op) {
      throw new FabricProtocolError("bad_frame", `response op ${h.op} to a request of op ${p.op}`);
    }
    // The answer's body must fit what was asked: its bytes are counted in flight already.
    const bodyMax = h.status !== STATUS_OK
      ? FABRIC_ERROR_TEXT_BYTES_MAX
      : p.op === OP_GET
      ? p.lengthMax
      : p.op === OP_STAT
      ? FABRIC_META_SIZE_BYTES_MAX
      : 0;
    if (
      h.bodySizeBytes > bodyMax ||
      (h.status === STATUS_OK && p.op === OP_GET && h.metaSizeBytes !== 0)
    ) {
      throw new FabricProtocolError(
        "bad_frame",
        `a ${OP_NAMES[p.op]} answer of ${h.bodySizeBytes} bytes (at most ${bodyMax})`,
      );
    }
    if (h.status === STATUS_OK && p.op === OP_STAT && h.metaSizeBytes !== h.bodySizeBytes) {
      throw new FabricProtocolError("bad_frame", "a stat answer with bytes beyond its metadata");
    }
    conn.current = h;
    conn.currentPending = p;
    conn.bodyHave = 0;
    if (p.abandoned || h.bodySizeBytes === 0) {
      conn.body = null;
    } else if (p.into !== null && p.into.length >= h.bodySizeBytes && h.status === STATUS_OK) {
      conn.body = p.into.subarray(0, h.bodySizeBytes);
    } else {
      // Without a buffer from the caller, the range lands in a fresh one the caller keeps.
      conn.body = new Uint8Array(h.bodySizeBytes);
    }
    if (h.bodySizeBytes === 0) this.#completeResponse(conn);
  }

  #completeResponse(conn: ClientConnection): void {
    const h = conn.current!;
    const p = conn.currentPending!;
    const body = conn.body;
    conn.current = null;
    conn.currentPending = null;
    conn.body = null;
    conn.bodyHave = 0;
    conn.pending.delete(h.requestId);
    this.#reportReceived(conn);
    if (!p.abandoned) p.resolve({ ...h, body });
  }

  /** Writes one request frame and waits for its answer. */
  #send(
    conn: ClientConnection,
    op: number,
    address: FragmentAddress,
    body: RequestBody,
    signal: AbortSignal,
    ended: () => FabricError,
  ): Promise<ResponseHeader & { body: Uint8Array | null }> {
    if (signal.aborted) return Promise.reject(ended());
    assert(conn.state === "ready", "send on a connection that is not ready");
    assert(conn.pending.size < this.#limits.outstandingPerConnectionMax, "connection is full");
    let id = conn.nextId;
    while (id === 0 || conn.pending.has(id)) id = (id + 1) >>> 0;
    conn.nextId = (id + 1) >>> 0;
    const metaBytes = body.meta?.length ?? 0;
    const dataBytes = body.bytes?.length ?? 0;
    const frameBytes = FABRIC_REQUEST_HEADER_SIZE_BYTES + metaBytes + dataBytes;
    let frame: Uint8Array;
    let start = 0;
    if (body.lentFrame !== null) {
      // The fragment is already in a frame (lent): header and metadata go right before it.
      frame = body.lentFrame;
      body.lentFrame = null;
      start = FABRIC_FRAME_OVERHEAD_BYTES_MAX - metaBytes - FABRIC_REQUEST_HEADER_SIZE_BYTES;
    } else {
      frame = this.#pool.acquire(frameBytes);
      // The fragment is copied behind its header: one write per frame, and the caller's
      // buffer is its own again as soon as this returns.
      if (body.bytes !== null) {
        frame.set(body.bytes, FABRIC_REQUEST_HEADER_SIZE_BYTES + metaBytes);
      }
    }
    const head = frame.subarray(start, start + frameBytes);
    writeRequestHeader(new DataView(head.buffer, head.byteOffset, head.byteLength), head, {
      bodySizeBytes: metaBytes + dataBytes,
      op,
      metaSizeBytes: metaBytes,
      requestId: id,
      index: address.index,
      offset: body.offset,
      length: body.length,
      chunkId: address.chunkId,
    });
    if (body.meta !== null) head.set(body.meta, FABRIC_REQUEST_HEADER_SIZE_BYTES);
    return new Promise((resolve, reject) => {
      const pending: Pending = {
        op,
        resolve: (answer) => {
          signal.removeEventListener("abort", onAbort);
          resolve(answer);
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
        abandoned: false,
        lengthMax: body.length,
        into: body.into,
      };
      const onAbort = () => {
        // The id stays taken until the answer comes (or the connection goes): a late answer
        // must not be matched to a later request.
        pending.abandoned = true;
        reject(ended());
        // A peer that sent nothing for a whole request deadline is treated as gone.
        if (performance.now() - conn.lastReceiveMs >= this.#limits.requestTimeoutMs) {
          this.#drop(conn, "no bytes from the peer for a whole request deadline");
        }
      };
      signal.addEventListener("abort", onAbort, { once: true });
      conn.pending.set(id, pending);
      conn.writing.add(frame);
      this.#countSent(conn.channel, frameBytes);
      conn.socket!.write(head, () => {
        if (conn.writing.delete(frame)) this.#pool.release(frame);
      });
    });
  }

  #reportReceived(conn: ClientConnection): void {
    if (conn.receivedUnreported === 0) return;
    metrics.bytesReceived.inc(conn.channel.label, conn.receivedUnreported);
    conn.receivedUnreported = 0;
  }

  #countSent(channel: PeerChannel, n: number): void {
    this.#stats.bytesSent += n;
    metrics.bytesSent.inc(channel.label, n);
  }

  /** Closes a connection: its requests fail as unavailable, and a failed dial backs off. */
  #drop(conn: ClientConnection, why: string): void {
    if (conn.state === "closed") return;
    const channel = conn.channel;
    const wasReady = conn.state === "ready";
    conn.state = "closed";
    if (conn.timer !== null) clearTimeout(conn.timer);
    conn.timer = null;
    const at = channel.conns.indexOf(conn);
    if (at >= 0) channel.conns.splice(at, 1);
    conn.socket?.destroy();
    // A destroyed socket writes nothing more: its unfinished frames go back to the pool.
    for (const frame of conn.writing) this.#pool.release(frame);
    conn.writing.clear();
    if (wasReady) metrics.connections.dec({ side: "client" });
    this.#reportReceived(conn);
    channel.lastError = why;
    const error = new FabricUnavailableError(
      `node ${channel.id} at ${formatHostPort(channel.addr)}: ${why}`,
      channel.id,
    );
    if (!wasReady && !channel.removed) {
      channel.failures++;
      const delayMs = Math.min(
        this.#limits.reconnectDelayMsMax,
        this.#limits.reconnectDelayMsMin * 2 ** Math.min(channel.failures - 1, 30),
      ) * (0.5 + 0.5 * this.#random());
      channel.downUntilMs = performance.now() + delayMs;
    }
    if (!channel.outageLogged && !channel.removed && !this.#closed) {
      channel.outageLogged = true;
      this.#log.warn("fabric peer unreachable", {
        peer: channel.id,
        addr: formatHostPort(channel.addr),
        reason: why,
      });
    }
    conn.onFailed(error);
    const pending = [...conn.pending.values()];
    conn.pending.clear();
    for (const p of pending) if (!p.abandoned) p.reject(error);
  }

  #protocolError(reason: string, message: string): void {
    this.#stats.protocolErrors++;
    metrics.protocolErrors.inc({ side: "client", reason });
    this.#log.debug("fabric protocol error", { reason, message });
  }
}

interface RequestBody {
  meta: Uint8Array | null;
  bytes: Uint8Array | null;
  offset: number;
  length: number;
  into: Uint8Array | null;
  /** The pooled frame `bytes` lives in (lendFragmentBuffer()), until a socket takes it. */
  lentFrame: Uint8Array | null;
}

const NO_BODY: Readonly<RequestBody> = {
  meta: null,
  bytes: null,
  offset: 0,
  length: 0,
  into: null,
  lentFrame: null,
};

/** `promise`, or the request's end if its signal fires first. */
function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  ended: () => FabricError,
): Promise<T> {
  if (signal.aborted) return Promise.reject(ended());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(ended());
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

function checkClientLimits(l: FabricClientLimits): void {
  for (const [name, value] of Object.entries(l)) {
    assert(
      Number.isInteger(value) && value > 0,
      `fabric client limit ${name}=${value} must be a positive integer`,
    );
  }
  assert(l.fragmentSizeBytesMax <= FABRIC_FRAGMENT_SIZE_BYTES_LIMIT, "fragmentSizeBytesMax");
  assert(
    l.inflightBytesPerPeerMax >= l.fragmentSizeBytesMax + FABRIC_META_SIZE_BYTES_MAX,
    "inflightBytesPerPeerMax must hold one largest fragment",
  );
  assert(l.reconnectDelayMsMin <= l.reconnectDelayMsMax, "reconnect delay min over max");
}

// ---- reading from several owners -------------------------------------------------------

/** One fragment to fetch and who holds it. */
export interface FragmentSource extends FragmentGetRequest {
  peer: NodeId;
}

export interface FetchedFragment {
  /** Position of the source in the list given. */
  source: number;
  index: number;
  bytes: Uint8Array;
  sizeBytes: number;
}

export interface FetchFragmentsOptions extends FabricCallOptions {
  /** Sources asked beyond `need` from the start, to hide a slow owner (default 0). */
  hedge?: number;
}

/**
 * Fetches `need` of `sources` (e.g. any k of an EC chunk's k+m fragments) from their owners
 * concurrently: asks need + hedge at once, asks the next source whenever one fails, and
 * returns as soon as `need` arrived, cancelling the rest (their `into` buffers are not
 * written after that). Fails with FabricUnavailableError naming every failure when fewer
 * than `need` can arrive.
 */
export function fetchFragments(
  client: FabricClient,
  sources: readonly FragmentSource[],
  need: number,
  options: FetchFragmentsOptions = {},
): Promise<FetchedFragment[]> {
  assert(Number.isInteger(need) && need >= 1, "need at least one fragment");
  if (sources.length < need) {
    return Promise.reject(
      new FabricUnavailableError(`${need} fragments needed, ${sources.length} sources given`),
    );
  }
  const controller = new AbortController();
  const onCallerAbort = () => controller.abort();
  options.signal?.addEventListener("abort", onCallerAbort, { once: true });
  const got: FetchedFragment[] = [];
  const failures: string[] = [];
  let next = 0;
  let running = 0;
  let settled = false;
  return new Promise<FetchedFragment[]>((resolve, reject) => {
    const finish = (error: Error | null) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener("abort", onCallerAbort);
      controller.abort();
      if (error === null) resolve(got);
      else reject(error);
    };
    const start = () => {
      const i = next++;
      const s = sources[i]!;
      running++;
      client.get(s.peer, s, { timeoutMs: options.timeoutMs, signal: controller.signal }).then(
        (r) => {
          running--;
          if (settled) return;
          got.push({ source: i, index: s.index, bytes: r.bytes, sizeBytes: r.sizeBytes });
          if (got.length === need) finish(null);
        },
        (e: unknown) => {
          running--;
          if (settled) return;
          if (e instanceof FabricCancelledError && options.signal?.aborted) {
            finish(e);
            return;
          }
          failures.push(`fragment ${s.index} on node ${s.peer}: ${(e as Error).message}`);
          if (next < sources.length) start();
          else if (got.length + running < need) {
            finish(
              new FabricUnavailableError(
                `${got.length} of ${need} fragments arrived; ${failures.join("; ")}`,
              ),
            );
          }
        },
      );
    };
    const first = Math.min(sources.length, need + (options.hedge ?? 0));
    for (let i = 0; i < first; i++) start();
  });
}
