// Node-to-node Raft transport: every shard's messages between two nodes share one TCP (or
// mutual-TLS) connection per direction, on the node's one Raft port (KISEKI_RAFT_ADDR,
// default 9300). Messages queued while a write is in flight leave together in one write, as
// one frame of many (shard, message) pairs. Raft tolerates loss, so the transport never
// blocks or retries a message: a full queue or a dead peer drops it and tells the caller
// (onUnreachable) so the shard's Raft can back off.
//
// Wire protocol, version 1 (all integers big-endian):
//
//   Each connection carries one direction: the dialer sends, the acceptor receives. A node
//   dials every peer it has messages for, so two nodes talking use two connections.
//
//   Handshake, dialer first, then the acceptor's answer in the same shape:
//     off size
//     0   4    magic "KRFT" (0x4b 0x52 0x46 0x54)
//     4   1    protocol version (1)
//     5   1    status: 0 hello / accepted; in an answer 1 unsupported version,
//              2 wrong cluster, 3 wrong node (the receiver id is not the acceptor's)
//     6   2    cluster id length n (0..64)
//     8   4    sender node id
//     12  4    receiver node id (the node the sender means to reach)
//     16  n    cluster id (UTF-8)
//   The acceptor answers a version it does not speak with status 1 and its own version, so
//   an old node can name the mismatch. Any status but 0 closes the connection.
//
//   Then frames, dialer to acceptor only (the length counts the payload, not the 5-byte
//   header; it is at most FRAME_PAYLOAD_SIZE_BYTES_MAX):
//     [payload length u32][type u8][payload]
//   type 1 = batch; its payload:
//     [count u32, 1..FRAME_MESSAGE_COUNT_MAX] then count x [shard id u32][length u32][message]
//   where message is mod/raft/codec.ts's encoding (its own version byte first). Every
//   message's `from` must be the handshake's sender and its `to` the acceptor. Anything
//   else (unknown type, bad length, undecodable message) closes the connection.
//
//   With TLS material, both ends run TLS 1.2+ first and present certificates of the cluster
//   CA; the dialer checks the certificate names the address it dials, and both check its
//   subject OU is a cluster server's (node, keyserver, control), not a tenant's or admin's.
//   Without TLS, the acceptor takes loopback connections only, unless told to take any
//   (a cluster run without mTLS on purpose, KISEKI_ALLOW_INSECURE).
//
//   Other connection kinds share the port: a connection whose first four bytes are another
//   registered magic (the chunk fabric's "KFAB", fabric_wire.ts) passes the same TLS or
//   loopback checks and is then handed over whole to that kind's acceptor.

import * as net from "node:net";
import * as tls from "node:tls";
import {
  assert,
  formatHostPort,
  type HostPort,
  isLoopbackAddress,
  type RaftPeer,
  type TlsPaths,
} from "../base/mod.ts";
import { counter, gauge, histogram, log as rootLog, type Logger } from "../obs/mod.ts";
import {
  CodecError,
  encodedMessageSizeBytes,
  MESSAGE_SIZE_BYTES_MAX,
  readMessage,
  writeMessage,
} from "../raft/codec.ts";
import type { Message, NodeId } from "../raft/mod.ts";
import { SERVER_CERTIFICATE_KINDS } from "./peer_identity.ts";

export const RAFT_PROTOCOL_VERSION = 1;
const MAGIC = 0x4b52_4654; // "KRFT"
export const HANDSHAKE_FIXED_SIZE_BYTES = 16;
export const CLUSTER_ID_SIZE_BYTES_MAX = 64;
export const FRAME_HEADER_SIZE_BYTES = 5;
export const FRAME_TYPE_BATCH = 1;
/** Per message in a batch: shard id and length. */
const BATCH_ENTRY_HEADER_SIZE_BYTES = 8;
const BATCH_COUNT_SIZE_BYTES = 4;
/** Largest frame payload any peer may send: one maximal message in a batch of one. */
export const FRAME_PAYLOAD_SIZE_BYTES_MAX: number = BATCH_COUNT_SIZE_BYTES +
  BATCH_ENTRY_HEADER_SIZE_BYTES + MESSAGE_SIZE_BYTES_MAX;
/** Most messages one frame may carry (receivers reject more). */
export const FRAME_MESSAGE_COUNT_MAX = 65536;

export const HANDSHAKE_OK = 0;
export const HANDSHAKE_UNSUPPORTED_VERSION = 1;
export const HANDSHAKE_WRONG_CLUSTER = 2;
export const HANDSHAKE_WRONG_NODE = 3;
const HANDSHAKE_STATUS_TEXT: Record<number, string> = {
  [HANDSHAKE_UNSUPPORTED_VERSION]: "unsupported protocol version",
  [HANDSHAKE_WRONG_CLUSTER]: "wrong cluster id",
  [HANDSHAKE_WRONG_NODE]: "wrong node id",
};

/** Tunable bounds of one transport. Relationships are asserted when a transport starts. */
export interface RaftTransportLimits {
  /** Most messages waiting for one peer; more are dropped and reported unreachable. */
  peerQueueCountMax: number;
  /** Most encoded bytes waiting for one peer (at least one maximal message). */
  peerQueueSizeBytesMax: number;
  /** Most messages in one frame. */
  batchCountMax: number;
  /** A frame is closed once it holds this many bytes (a bigger message travels alone). */
  batchSizeBytesMax: number;
  /** Bytes handed to one socket write (several frames); at least one frame always goes. */
  writeSizeBytesMax: number;
  connectTimeoutMs: number;
  /** Time a new connection has to complete TLS and the handshake. */
  handshakeTimeoutMs: number;
  /**
   * A write the peer has not taken within this time fails the connection (a peer that is
   * gone without a reset, or stopped reading).
   */
  writeTimeoutMs: number;
  /** TCP keepalive probes start after this much idle time (finds dead inbound peers). */
  keepAliveMs: number;
  reconnectDelayMsMin: number;
  reconnectDelayMsMax: number;
  /** Most accepted connections at once (each may buffer up to one frame). */
  inboundConnectionsMax: number;
}

export const RAFT_TRANSPORT_LIMITS_DEFAULT: Readonly<RaftTransportLimits> = {
  peerQueueCountMax: 8192,
  peerQueueSizeBytesMax: 2 * MESSAGE_SIZE_BYTES_MAX,
  batchCountMax: 4096,
  batchSizeBytesMax: 1024 * 1024,
  writeSizeBytesMax: 4 * 1024 * 1024,
  connectTimeoutMs: 5000,
  handshakeTimeoutMs: 5000,
  writeTimeoutMs: 10_000,
  keepAliveMs: 30_000,
  reconnectDelayMsMin: 50,
  reconnectDelayMsMax: 5000,
  inboundConnectionsMax: 256,
};

export type RaftMessageHandler = (shardId: number, msg: Message) => void;
/**
 * Takes over an inbound connection of another kind on the Raft port, already through the
 * TLS or loopback checks; `head` holds the bytes read so far (its magic first).
 */
export type ConnectionAcceptor = (socket: net.Socket, head: Uint8Array) => void;
/** Most connection kinds besides Raft one port dispatches. */
export const CONNECTION_KINDS_MAX = 4;
/** A message to `peerId` for `shardId` was dropped: tell that shard's Raft the peer is unreachable. */
export type UnreachableHandler = (shardId: number, peerId: NodeId) => void;

/**
 * The port the Raft host uses to reach other nodes. Delivery is best-effort and unordered
 * across failures (ordered on one healthy connection); a drop is reported, never retried.
 */
export interface RaftTransport {
  /** Queues `msg` for node `msg.to`. Never blocks, never throws for network reasons. */
  send(shardId: number, msg: Message): void;
  /** Sets the handler for every message received (one handler; later calls replace it). */
  onMessage(handler: RaftMessageHandler): void;
  /** Sets the handler told about dropped messages. */
  onUnreachable(handler: UnreachableHandler): void;
  /** Adds or changes a peer's address (membership change). */
  setPeer(id: NodeId, addr: HostPort): void;
  removePeer(id: NodeId): void;
  close(): Promise<void>;
}

/** PEM text of the cluster CA and this node's certificate and key. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

export async function readTlsMaterial(paths: TlsPaths): Promise<TlsMaterial> {
  const [ca, cert, key] = await Promise.all([
    Deno.readTextFile(paths.caPath),
    Deno.readTextFile(paths.certPath),
    Deno.readTextFile(paths.keyPath),
  ]);
  return { ca, cert, key };
}

export interface TcpRaftTransportOptions {
  nodeId: NodeId;
  /** Both ends must agree; guards against wiring two clusters together. */
  clusterId: string;
  /** Where to listen (KISEKI_RAFT_ADDR); port 0 picks a free port (see `addr`). */
  listen: HostPort;
  /** KISEKI_RAFT_PEERS; this node's own entry is ignored. */
  peers: readonly RaftPeer[];
  /** Mutual TLS: both sides present certificates signed by `ca`. Null: plain TCP. */
  tls?: TlsMaterial | null;
  /**
   * With TLS, the certificate subject OUs a peer may have (gen_certs.sh issues node,
   * keyserver and control server certificates; tenant and admin certificates are refused).
   */
  peerOrganizationalUnits?: readonly string[];
  /**
   * Without TLS, which inbound connections to take: `loopback` (the default; a lone
   * development node) or `any` (a cluster run without mTLS on purpose). Ignored with TLS.
   */
  plaintextPeers?: "loopback" | "any";
  limits?: Partial<RaftTransportLimits>;
  logger?: Logger;
  /** Jitter source for reconnect delays, in [0, 1). */
  random?: () => number;
}

/** Counts since the transport started (metrics are process-wide; these are per instance). */
export interface RaftTransportStats {
  messagesSent: number;
  framesSent: number;
  writes: number;
  bytesSent: number;
  messagesReceived: number;
  framesReceived: number;
  bytesReceived: number;
  messagesDropped: number;
  reconnects: number;
  protocolErrors: number;
  connectedPeers: number;
}

const metrics = {
  framesSent: counter<"peer">({
    name: "kiseki_raft_transport_frames_sent_total",
    help: "Raft transport frames written, by destination node.",
    labelNames: ["peer"],
  }),
  bytesSent: counter<"peer">({
    name: "kiseki_raft_transport_bytes_sent_total",
    help: "Raft transport bytes written (frames and handshakes), by destination node.",
    labelNames: ["peer"],
  }),
  messagesSent: counter<"peer">({
    name: "kiseki_raft_transport_messages_sent_total",
    help: "Raft messages written, by destination node.",
    labelNames: ["peer"],
  }),
  framesReceived: counter<"peer">({
    name: "kiseki_raft_transport_frames_received_total",
    help: "Raft transport frames received, by sending node.",
    labelNames: ["peer"],
  }),
  bytesReceived: counter<"peer">({
    name: "kiseki_raft_transport_bytes_received_total",
    help: "Raft transport bytes received (handshakes and frames), by sending node.",
    labelNames: ["peer"],
  }),
  messagesReceived: counter<"peer">({
    name: "kiseki_raft_transport_messages_received_total",
    help: "Raft messages received and delivered, by sending node.",
    labelNames: ["peer"],
  }),
  messagesDropped: counter<"peer" | "reason">({
    name: "kiseki_raft_transport_messages_dropped_total",
    help: "Raft messages dropped before sending (queue_full, disconnected, unknown_peer, closed).",
    labelNames: ["peer", "reason"],
  }),
  reconnects: counter<"peer">({
    name: "kiseki_raft_transport_reconnects_total",
    help: "Connection attempts to a peer after a failed attempt or a lost connection.",
    labelNames: ["peer"],
  }),
  protocolErrors: counter<"reason">({
    name: "kiseki_raft_transport_protocol_errors_total",
    help: "Connections closed for breaking the protocol or failing the handshake or TLS.",
    labelNames: ["reason"],
  }),
  connectedPeers: gauge({
    name: "kiseki_raft_transport_connected_peers",
    help: "Outgoing Raft connections that completed the handshake.",
  }),
  batchMessages: histogram({
    name: "kiseki_raft_transport_batch_messages",
    help: "Messages per frame written.",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096],
  }),
};

/** A protocol violation by the remote end of one connection. */
class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

/** Encodes a handshake block (hello or answer). */
function encodeHandshake(
  status: number,
  clusterId: Uint8Array,
  sender: NodeId,
  receiver: NodeId,
): Uint8Array {
  const bytes = new Uint8Array(HANDSHAKE_FIXED_SIZE_BYTES + clusterId.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MAGIC);
  view.setUint8(4, RAFT_PROTOCOL_VERSION);
  view.setUint8(5, status);
  view.setUint16(6, clusterId.length);
  view.setUint32(8, sender);
  view.setUint32(12, receiver);
  bytes.set(clusterId, HANDSHAKE_FIXED_SIZE_BYTES);
  return bytes;
}

interface Handshake {
  version: number;
  status: number;
  sender: NodeId;
  receiver: NodeId;
  clusterId: Uint8Array;
}

/**
 * Bytes received on one connection, reassembled: a growable buffer read from `start` to
 * `end`, compacted as it drains and shrunk back after a large frame has gone through.
 */
class ReceiveBuffer {
  static readonly SIZE_BYTES_DEFAULT = 64 * 1024;
  bytes = new Uint8Array(ReceiveBuffer.SIZE_BYTES_DEFAULT);
  view = new DataView(this.bytes.buffer);
  start = 0;
  end = 0;

  get length(): number {
    return this.end - this.start;
  }

  push(chunk: Uint8Array): void {
    if (this.end + chunk.length > this.bytes.length) {
      const live = this.length;
      if (live + chunk.length <= this.bytes.length) {
        this.bytes.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(Math.max(live + chunk.length, this.bytes.length * 2));
        grown.set(this.bytes.subarray(this.start, this.end));
        this.bytes = grown;
        this.view = new DataView(grown.buffer);
      }
      this.start = 0;
      this.end = live;
    }
    this.bytes.set(chunk, this.end);
    this.end += chunk.length;
  }

  consume(n: number): void {
    this.start += n;
    if (this.start === this.end) {
      this.start = this.end = 0;
      if (this.bytes.length > 16 * ReceiveBuffer.SIZE_BYTES_DEFAULT) {
        this.bytes = new Uint8Array(ReceiveBuffer.SIZE_BYTES_DEFAULT);
        this.view = new DataView(this.bytes.buffer);
      }
    }
  }

  /** Parses a complete handshake at the front, or returns null when more bytes are needed. */
  takeHandshake(): Handshake | null {
    // The magic is checked as soon as it is here, so garbage fails fast.
    if (this.length >= 4 && this.view.getUint32(this.start) !== MAGIC) {
      // A TLS record (handshake or alert, version 3.x) means TLS is set up on one side only.
      const first = this.bytes[this.start]!;
      const tlsRecord = (first === 0x15 || first === 0x16) && this.bytes[this.start + 1] === 3;
      throw new ProtocolError(
        "bad_magic",
        tlsRecord
          ? "the other side speaks TLS and this one does not (set KISEKI_CA_PATH, KISEKI_CERT_PATH and KISEKI_KEY_PATH on every node, or on none)"
          : "not a Kiseki Raft connection (bad magic)",
      );
    }
    if (this.length < HANDSHAKE_FIXED_SIZE_BYTES) return null;
    const at = this.start;
    const clusterLength = this.view.getUint16(at + 6);
    if (clusterLength > CLUSTER_ID_SIZE_BYTES_MAX) {
      throw new ProtocolError(
        "bad_handshake",
        `cluster id of ${clusterLength} bytes exceeds ${CLUSTER_ID_SIZE_BYTES_MAX}`,
      );
    }
    if (this.length < HANDSHAKE_FIXED_SIZE_BYTES + clusterLength) return null;
    const handshake: Handshake = {
      version: this.view.getUint8(at + 4),
      status: this.view.getUint8(at + 5),
      sender: this.view.getUint32(at + 8),
      receiver: this.view.getUint32(at + 12),
      clusterId: this.bytes.slice(
        at + HANDSHAKE_FIXED_SIZE_BYTES,
        at + HANDSHAKE_FIXED_SIZE_BYTES + clusterLength,
      ),
    };
    this.consume(HANDSHAKE_FIXED_SIZE_BYTES + clusterLength);
    return handshake;
  }

  /**
   * Takes a complete frame's payload off the front, as a fresh array the decoded messages
   * may keep views into (one allocation per frame). Null when more bytes are needed.
   */
  takeFrame(): Uint8Array | null {
    if (this.length < FRAME_HEADER_SIZE_BYTES) return null;
    const payloadLength = this.view.getUint32(this.start);
    const type = this.view.getUint8(this.start + 4);
    if (type !== FRAME_TYPE_BATCH) {
      throw new ProtocolError("bad_frame", `unknown frame type ${type}`);
    }
    if (payloadLength > FRAME_PAYLOAD_SIZE_BYTES_MAX) {
      throw new ProtocolError(
        "bad_frame",
        `frame of ${payloadLength} bytes exceeds ${FRAME_PAYLOAD_SIZE_BYTES_MAX}`,
      );
    }
    if (this.length < FRAME_HEADER_SIZE_BYTES + payloadLength) return null;
    const from = this.start + FRAME_HEADER_SIZE_BYTES;
    const payload = this.bytes.slice(from, from + payloadLength);
    this.consume(FRAME_HEADER_SIZE_BYTES + payloadLength);
    return payload;
  }
}

/** Decodes a batch payload into parallel arrays, validating all of it before any delivery. */
function decodeBatch(
  payload: Uint8Array,
  sender: NodeId,
  receiver: NodeId,
  shardIds: number[],
  messages: Message[],
): void {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (payload.length < BATCH_COUNT_SIZE_BYTES) {
    throw new ProtocolError("bad_frame", "batch frame without a count");
  }
  const count = view.getUint32(0);
  if (count < 1 || count > FRAME_MESSAGE_COUNT_MAX) {
    throw new ProtocolError(
      "bad_frame",
      `batch of ${count} messages (1..${FRAME_MESSAGE_COUNT_MAX})`,
    );
  }
  let at = BATCH_COUNT_SIZE_BYTES;
  for (let i = 0; i < count; i++) {
    if (payload.length - at < BATCH_ENTRY_HEADER_SIZE_BYTES) {
      throw new ProtocolError("bad_frame", `batch message ${i} header cut short`);
    }
    const shardId = view.getUint32(at);
    const length = view.getUint32(at + 4);
    at += BATCH_ENTRY_HEADER_SIZE_BYTES;
    if (length > payload.length - at) {
      throw new ProtocolError("bad_frame", `batch message ${i} cut short`);
    }
    let msg: Message;
    try {
      msg = readMessage(view, payload, at, at + length);
    } catch (e) {
      if (e instanceof CodecError) {
        throw new ProtocolError("bad_message", `batch message ${i}: ${e.message}`);
      }
      throw e;
    }
    if (msg.from !== sender || msg.to !== receiver) {
      throw new ProtocolError(
        "bad_message",
        `message ${msg.from}->${msg.to} on the connection from node ${sender}`,
      );
    }
    shardIds.push(shardId);
    messages.push(msg);
    at += length;
  }
  if (at !== payload.length) {
    throw new ProtocolError("bad_frame", `${payload.length - at} trailing bytes in batch frame`);
  }
}

interface Pending {
  shardId: number;
  msg: Message;
  sizeBytes: number;
}

type LinkState = "idle" | "connecting" | "handshaking" | "connected" | "backoff" | "closed";

/** The outgoing side towards one peer: its queue, its connection, its reconnect schedule. */
class PeerLink {
  readonly peerLabel: { peer: string };
  state: LinkState = "idle";
  queue: Pending[] = [];
  queuedBytes = 0;
  socket: net.Socket | null = null;
  writing = false;
  flushScheduled = false;
  failures = 0;
  timer: ReturnType<typeof setTimeout> | null = null;
  /** Whether the current outage has been logged (one line per outage, not per attempt). */
  outageLogged = false;
  everConnected = false;
  /** performance.now() when the write in flight started. */
  writeStartedMs = 0;
  writeBytes = new Uint8Array(64 * 1024);
  writeView = new DataView(this.writeBytes.buffer);
  answer = new ReceiveBuffer();

  constructor(readonly id: NodeId, public addr: HostPort) {
    this.peerLabel = { peer: String(id) };
  }
}

/** Raft transport over TCP, or mutual TLS when TLS material is given. */
/**
 * Dials a node's Raft port: plain TCP, or TLS 1.2+ presenting `material` when given, where the
 * peer's certificate must name the address dialled (an IP SAN or DNS name). No Nagle delay,
 * TCP keep-alive after `keepAliveMs`. The caller waits for "connect" or "secureConnect".
 */
export function dialNode(
  addr: HostPort,
  material: TlsMaterial | null,
  keepAliveMs: number,
): net.Socket {
  const { host, port } = addr;
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
  socket.setNoDelay(true);
  socket.setKeepAlive(true, keepAliveMs);
  return socket;
}

export class TcpRaftTransport implements RaftTransport {
  readonly nodeId: NodeId;
  /** The cluster id both ends check (the chunk fabric on this port uses the same). */
  readonly clusterId: string;
  readonly #clusterId: Uint8Array;
  readonly #limits: RaftTransportLimits;
  readonly #tls: TlsMaterial | null;
  readonly #peerOus: readonly string[];
  readonly #plaintextPeers: "loopback" | "any";
  readonly #log: Logger;
  readonly #random: () => number;
  readonly #server: net.Server;
  readonly #links = new Map<NodeId, PeerLink>();
  readonly #inbound = new Set<net.Socket>();
  readonly #unknownPeersLogged = new Set<NodeId>();
  /** Other connection kinds on this port, by their magic. */
  readonly #kinds = new Map<number, ConnectionAcceptor>();
  #onMessage: RaftMessageHandler | null = null;
  #onUnreachable: UnreachableHandler | null = null;
  #closed = false;
  /** Checks for stalled writes; one timer for all peers rather than one per write. */
  #watchdog: ReturnType<typeof setInterval> | null = null;
  #addr: HostPort;
  readonly #stats: RaftTransportStats = {
    messagesSent: 0,
    framesSent: 0,
    writes: 0,
    bytesSent: 0,
    messagesReceived: 0,
    framesReceived: 0,
    bytesReceived: 0,
    messagesDropped: 0,
    reconnects: 0,
    protocolErrors: 0,
    connectedPeers: 0,
  };

  private constructor(options: TcpRaftTransportOptions, server: net.Server) {
    this.nodeId = options.nodeId;
    this.clusterId = options.clusterId;
    this.#clusterId = new TextEncoder().encode(options.clusterId);
    this.#limits = { ...RAFT_TRANSPORT_LIMITS_DEFAULT, ...options.limits };
    this.#tls = options.tls ?? null;
    this.#peerOus = options.peerOrganizationalUnits ?? SERVER_CERTIFICATE_KINDS;
    this.#plaintextPeers = options.plaintextPeers ?? "loopback";
    this.#log = (options.logger ?? rootLog).child({
      component: "raft_transport",
      node: options.nodeId,
    });
    this.#random = options.random ?? Math.random;
    this.#server = server;
    this.#addr = options.listen;
    for (const peer of options.peers) {
      if (peer.id !== this.nodeId) this.#links.set(peer.id, new PeerLink(peer.id, peer.addr));
    }
  }

  /** Starts listening and returns the transport; peers are dialled lazily on first send. */
  static async listen(options: TcpRaftTransportOptions): Promise<TcpRaftTransport> {
    assert(
      Number.isInteger(options.nodeId) && options.nodeId >= 1 && options.nodeId <= 0xffff_ffff,
      "node id",
    );
    const clusterBytes = new TextEncoder().encode(options.clusterId).length;
    assert(
      clusterBytes <= CLUSTER_ID_SIZE_BYTES_MAX,
      `cluster id over ${CLUSTER_ID_SIZE_BYTES_MAX} bytes`,
    );
    const limits = { ...RAFT_TRANSPORT_LIMITS_DEFAULT, ...options.limits };
    checkLimits(limits);

    const material = options.tls ?? null;
    // Both kinds of server are created before the transport exists; the handler looks it up.
    let transport: TcpRaftTransport | null = null;
    const server: net.Server = material === null
      ? net.createServer({ noDelay: true }, (socket) => transport!.#accept(socket))
      : tls.createServer({
        ca: [material.ca],
        cert: material.cert,
        key: material.key,
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: limits.handshakeTimeoutMs,
        minVersion: "TLSv1.2",
      }, (socket) => transport!.#accept(socket));
    transport = new TcpRaftTransport(options, server);
    const self = transport;
    server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
      const from = socket?.remoteAddress ? ` from ${socket.remoteAddress}` : "";
      self.#protocolError("tls", `refused an inbound TLS connection${from}`, error);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.listen.port, options.listen.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (error: Error) => self.#log.error("raft listener error", { error }));
    const bound = server.address() as net.AddressInfo;
    transport.#addr = { host: options.listen.host, port: bound.port };
    transport.#watchdog = setInterval(
      () => transport.#checkWrites(),
      Math.max(10, Math.floor(limits.writeTimeoutMs / 4)),
    );
    transport.#log.info("raft transport listening", {
      addr: formatHostPort(transport.#addr),
      tls: material !== null,
    });
    return transport;
  }

  /** The bound listen address (the real port when 0 was asked for). */
  get addr(): HostPort {
    return this.#addr;
  }

  stats(): RaftTransportStats {
    return { ...this.#stats };
  }

  /** Each peer's link as this node sees it: up, down (failing), or never tried yet. */
  peerLinks(): { id: NodeId; addr: HostPort; link: "up" | "down" | "never" }[] {
    return [...this.#links.values()].map((l) => ({
      id: l.id,
      addr: l.addr,
      link: l.state === "connected" ? "up" : l.failures > 0 || l.everConnected ? "down" : "never",
    }));
  }

  onMessage(handler: RaftMessageHandler): void {
    this.#onMessage = handler;
  }

  onUnreachable(handler: UnreachableHandler): void {
    this.#onUnreachable = handler;
  }

  /**
   * Hands inbound connections that open with `magic` (a u32, not Raft's) to `acceptor`,
   * after the same TLS or loopback checks Raft connections pass. Later calls for one magic
   * replace its acceptor.
   */
  acceptConnectionKind(magic: number, acceptor: ConnectionAcceptor): void {
    assert(
      magic !== MAGIC && Number.isInteger(magic) && magic >= 0 && magic <= 0xffff_ffff,
      "magic",
    );
    assert(
      this.#kinds.has(magic) || this.#kinds.size < CONNECTION_KINDS_MAX,
      `over ${CONNECTION_KINDS_MAX} connection kinds`,
    );
    this.#kinds.set(magic, acceptor);
  }

  setPeer(id: NodeId, addr: HostPort): void {
    assert(id !== this.nodeId, "setPeer() with this node's own id");
    const link = this.#links.get(id);
    if (link === undefined) {
      this.#links.set(id, new PeerLink(id, addr));
      this.#unknownPeersLogged.delete(id);
      return;
    }
    if (link.addr.host === addr.host && link.addr.port === addr.port) return;
    link.addr = addr;
    // The next send dials the new address.
    this.#disconnect(link, "disconnected", false);
    link.failures = 0;
  }

  removePeer(id: NodeId): void {
    const link = this.#links.get(id);
    if (link === undefined) return;
    this.#disconnect(link, "unknown_peer", false);
    link.state = "closed";
    this.#links.delete(id);
  }

  send(shardId: number, msg: Message): void {
    assert(
      Number.isInteger(shardId) && shardId >= 0 && shardId <= 0xffff_ffff,
      "shard id is a u32",
    );
    assert(msg.to !== this.nodeId, "a node does not send Raft messages to itself");
    assert(msg.from === this.nodeId, `message from ${msg.from} sent by node ${this.nodeId}`);
    if (this.#closed) {
      this.#drop(null, msg.to, shardId, "closed", false);
      return;
    }
    const link = this.#links.get(msg.to);
    if (link === undefined) {
      if (!this.#unknownPeersLogged.has(msg.to)) {
        this.#unknownPeersLogged.add(msg.to);
        this.#log.warn("no address for raft peer; dropping its messages", { peer: msg.to });
      }
      this.#drop(null, msg.to, shardId, "unknown_peer", true);
      return;
    }
    const sizeBytes = encodedMessageSizeBytes(msg);
    if (
      link.queue.length >= this.#limits.peerQueueCountMax ||
      link.queuedBytes + sizeBytes > this.#limits.peerQueueSizeBytesMax
    ) {
      this.#drop(link, msg.to, shardId, "queue_full", true);
      return;
    }
    link.queue.push({ shardId, msg, sizeBytes });
    link.queuedBytes += sizeBytes;
    switch (link.state) {
      case "idle":
        this.#connect(link);
        break;
      case "connected":
        // Deferred, so everything a Raft Ready sends in one go leaves in one frame.
        if (!link.writing && !link.flushScheduled) {
          link.flushScheduled = true;
          queueMicrotask(() => {
            link.flushScheduled = false;
            this.#flush(link);
          });
        }
        break;
      default:
        // connecting, handshaking, backoff: the queue goes out once connected.
        break;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#watchdog !== null) clearInterval(this.#watchdog);
    this.#watchdog = null;
    for (const link of this.#links.values()) {
      this.#disconnect(link, "closed", false);
      link.state = "closed";
    }
    for (const socket of this.#inbound) socket.destroy();
    this.#inbound.clear();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  // ---- sending -------------------------------------------------------------------------

  #drop(
    link: PeerLink | null,
    peer: NodeId,
    shardId: number,
    reason: string,
    report: boolean,
  ): void {
    this.#stats.messagesDropped++;
    metrics.messagesDropped.inc({ peer: link?.peerLabel.peer ?? String(peer), reason });
    if (report) this.#onUnreachable?.(shardId, peer);
  }

  #connect(link: PeerLink): void {
    assert(link.state === "idle" || link.state === "backoff", `connect from ${link.state}`);
    if (link.failures > 0) {
      this.#stats.reconnects++;
      metrics.reconnects.inc(link.peerLabel);
    }
    link.state = "connecting";
    link.answer = new ReceiveBuffer();
    const material = this.#tls;
    const socket = dialNode(link.addr, material, this.#limits.keepAliveMs);
    link.socket = socket;
    const setupMs = this.#limits.connectTimeoutMs + this.#limits.handshakeTimeoutMs;
    link.timer = setTimeout(() => {
      link.timer = null;
      this.#fail(link, `not connected and handshaken within ${setupMs} ms`);
    }, setupMs);
    socket.on("error", (error: Error) => {
      if (link.socket === socket) this.#fail(link, error.message);
    });
    socket.on("close", () => {
      if (link.socket === socket) this.#fail(link, "connection closed by peer");
    });
    socket.once(material === null ? "connect" : "secureConnect", () => {
      if (link.socket !== socket) return;
      if (material !== null) {
        const problem = checkPeerCertificate(socket as tls.TLSSocket, this.#peerOus);
        if (problem !== null) {
          this.#protocolError("tls", problem, null, false);
          this.#fail(link, problem);
          return;
        }
      }
      link.state = "handshaking";
      const hello = encodeHandshake(HANDSHAKE_OK, this.#clusterId, this.nodeId, link.id);
      socket.write(hello);
      this.#countSent(link, hello.length);
    });
    socket.on("data", (chunk: Uint8Array) => {
      if (link.socket !== socket) return;
      try {
        this.#onAnswer(link, chunk);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        this.#protocolError(e.reason, e.message, null, false);
        this.#fail(link, e.message);
      }
    });
  }

  #onAnswer(link: PeerLink, chunk: Uint8Array): void {
    if (link.state !== "handshaking") {
      throw new ProtocolError("bad_handshake", "data from the acceptor after its answer");
    }
    link.answer.push(chunk);
    const answer = link.answer.takeHandshake();
    if (answer === null) return;
    if (answer.status !== HANDSHAKE_OK) {
      throw new ProtocolError(
        "refused",
        `refused our handshake: ${
          HANDSHAKE_STATUS_TEXT[answer.status] ?? `status ${answer.status}`
        }` +
          ` (it speaks protocol v${answer.version}, we speak v${RAFT_PROTOCOL_VERSION})`,
      );
    }
    if (answer.version !== RAFT_PROTOCOL_VERSION || answer.sender !== link.id) {
      throw new ProtocolError(
        "bad_handshake",
        `answered as node ${answer.sender} protocol v${answer.version}`,
      );
    }
    if (link.answer.length !== 0) {
      throw new ProtocolError("bad_handshake", "data from the acceptor after its answer");
    }
    if (link.timer !== null) clearTimeout(link.timer);
    link.timer = null;
    link.state = "connected";
    link.failures = 0;
    this.#stats.connectedPeers++;
    metrics.connectedPeers.inc();
    if (link.outageLogged || !link.everConnected) {
      this.#log.info("raft peer connected", { peer: link.id, addr: formatHostPort(link.addr) });
    }
    link.outageLogged = false;
    link.everConnected = true;
    this.#flush(link);
  }

  /** Writes as much of the queue as one write may carry, in frames of bounded size. */
  #flush(link: PeerLink): void {
    if (link.state !== "connected" || link.writing || link.queue.length === 0) return;
    const limits = this.#limits;
    // Size the write: whole frames, until writeSizeBytesMax (at least one message).
    let total = 0;
    let taken = 0;
    let frameBytes = 0;
    let frameCount = 0;
    for (const p of link.queue) {
      const entryBytes = BATCH_ENTRY_HEADER_SIZE_BYTES + p.sizeBytes;
      const newFrame = frameCount === 0 || frameCount >= limits.batchCountMax ||
        frameBytes + entryBytes > limits.batchSizeBytesMax;
      const add = entryBytes + (newFrame ? FRAME_HEADER_SIZE_BYTES + BATCH_COUNT_SIZE_BYTES : 0);
      if (taken > 0 && total + add > limits.writeSizeBytesMax) break;
      total += add;
      taken++;
      if (newFrame) {
        frameBytes = BATCH_COUNT_SIZE_BYTES;
        frameCount = 0;
      }
      frameBytes += entryBytes;
      frameCount++;
    }
    if (total > link.writeBytes.length) {
      link.writeBytes = new Uint8Array(Math.max(total, link.writeBytes.length * 2));
      link.writeView = new DataView(link.writeBytes.buffer);
    }
    const bytes = link.writeBytes;
    const view = link.writeView;
    let at = 0;
    let frameStart = -1;
    frameCount = 0;
    frameBytes = 0;
    let frames = 0;
    const closeFrame = (): void => {
      view.setUint32(frameStart, at - frameStart - FRAME_HEADER_SIZE_BYTES);
      view.setUint8(frameStart + 4, FRAME_TYPE_BATCH);
      view.setUint32(frameStart + FRAME_HEADER_SIZE_BYTES, frameCount);
      metrics.batchMessages.observe({}, frameCount);
      frames++;
    };
    for (let i = 0; i < taken; i++) {
      const p = link.queue[i]!;
      const entryBytes = BATCH_ENTRY_HEADER_SIZE_BYTES + p.sizeBytes;
      if (
        frameStart < 0 || frameCount >= limits.batchCountMax ||
        frameBytes + entryBytes > limits.batchSizeBytesMax
      ) {
        if (frameStart >= 0) closeFrame();
        frameStart = at;
        at += FRAME_HEADER_SIZE_BYTES + BATCH_COUNT_SIZE_BYTES;
        frameCount = 0;
        frameBytes = BATCH_COUNT_SIZE_BYTES;
      }
      view.setUint32(at, p.shardId);
      view.setUint32(at + 4, p.sizeBytes);
      const end = writeMessage(view, bytes, at + BATCH_ENTRY_HEADER_SIZE_BYTES, p.msg);
      assert(end === at + entryBytes, "encoded size disagrees with the queued size");
      at = end;
      frameBytes += entryBytes;
      frameCount++;
    }
    closeFrame();
    assert(at === total, "write size disagrees with its plan");

    let sentBytes = 0;
    for (let i = 0; i < taken; i++) sentBytes += link.queue[i]!.sizeBytes;
    link.queue = taken === link.queue.length ? [] : link.queue.slice(taken);
    link.queuedBytes -= sentBytes;
    link.writing = true;
    link.writeStartedMs = performance.now();
    const socket = link.socket!;
    this.#stats.messagesSent += taken;
    this.#stats.framesSent += frames;
    this.#stats.writes++;
    metrics.messagesSent.inc(link.peerLabel, taken);
    metrics.framesSent.inc(link.peerLabel, frames);
    this.#countSent(link, total);
    // The buffer is reused, so it must not change until the socket is done with it: the
    // write callback says so, and no new flush starts before it.
    socket.write(bytes.subarray(0, total), (error?: Error | null) => {
      if (link.socket !== socket) return;
      link.writing = false;
      if (error) {
        this.#fail(link, error.message);
        return;
      }
      this.#flush(link);
    });
  }

  #checkWrites(): void {
    const now = performance.now();
    for (const link of this.#links.values()) {
      if (link.writing && now - link.writeStartedMs > this.#limits.writeTimeoutMs) {
        this.#fail(link, `a write stalled for over ${this.#limits.writeTimeoutMs} ms`);
      }
    }
  }

  #countSent(link: PeerLink, n: number): void {
    this.#stats.bytesSent += n;
    metrics.bytesSent.inc(link.peerLabel, n);
  }

  /** The connection or attempt failed: drop the queue, report, and schedule a retry. */
  #fail(link: PeerLink, why: string): void {
    if (link.state === "closed" || this.#closed) return;
    if (!link.outageLogged) {
      link.outageLogged = true;
      this.#log.warn("raft peer unreachable; retrying with backoff", {
        peer: link.id,
        addr: formatHostPort(link.addr),
        reason: why,
      });
    }
    this.#disconnect(link, "disconnected", true);
    link.failures++;
    const delayMs = Math.min(
      this.#limits.reconnectDelayMsMax,
      this.#limits.reconnectDelayMsMin * 2 ** Math.min(link.failures - 1, 30),
    ) * (0.5 + 0.5 * this.#random());
    link.state = "backoff";
    link.timer = setTimeout(() => {
      link.timer = null;
      if (link.state !== "backoff") return;
      // Lazy: a quiet peer is not redialled until there is something to send.
      if (link.queue.length > 0) this.#connect(link);
      else link.state = "idle";
    }, delayMs);
  }

  /** Tears down the link's connection and drops its queue (reporting if asked). */
  #disconnect(link: PeerLink, reason: string, report: boolean): void {
    if (link.timer !== null) clearTimeout(link.timer);
    link.timer = null;
    if (link.state === "connected") {
      this.#stats.connectedPeers--;
      metrics.connectedPeers.dec();
    }
    const socket = link.socket;
    link.socket = null;
    link.writing = false;
    if (socket !== null) socket.destroy();
    if (link.state !== "closed") link.state = "idle";
    const dropped = link.queue;
    link.queue = [];
    link.queuedBytes = 0;
    if (dropped.length > 0) {
      this.#stats.messagesDropped += dropped.length;
      metrics.messagesDropped.inc({ ...link.peerLabel, reason }, dropped.length);
      if (report && this.#onUnreachable !== null) {
        const shards = new Set<number>();
        for (const p of dropped) shards.add(p.shardId);
        for (const shardId of shards) this.#onUnreachable(shardId, link.id);
      }
    }
  }

  // ---- receiving -----------------------------------------------------------------------

  #accept(socket: net.Socket): void {
    socket.on("error", () => {}); // reported through 'close' and protocol errors
    if (this.#closed || this.#inbound.size >= this.#limits.inboundConnectionsMax) {
      if (!this.#closed) {
        this.#protocolError(
          "too_many_connections",
          `over ${this.#limits.inboundConnectionsMax} inbound connections`,
          null,
        );
      }
      socket.destroy();
      return;
    }
    if (this.#tls !== null) {
      const problem = checkPeerCertificate(socket as tls.TLSSocket, this.#peerOus);
      if (problem !== null) {
        this.#protocolError("tls", `inbound from ${socket.remoteAddress ?? "?"}: ${problem}`, null);
        socket.destroy();
        return;
      }
    } else if (
      this.#plaintextPeers === "loopback" && !isLoopbackAddress(socket.remoteAddress ?? "")
    ) {
      this.#protocolError(
        "not_loopback",
        `refused an inbound connection from ${socket.remoteAddress ?? "?"}: without TLS this ` +
          "node takes Raft connections from loopback only (KISEKI_ALLOW_INSECURE=true takes any)",
        null,
      );
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.setKeepAlive(true, this.#limits.keepAliveMs);
    this.#inbound.add(socket);
    const buffer = new ReceiveBuffer();
    let sender: NodeId = 0;
    let senderLabel = { peer: "?" };
    let timer: ReturnType<typeof setTimeout> | null = setTimeout(() => {
      timer = null;
      this.#protocolError(
        "handshake_timeout",
        `inbound from ${
          socket.remoteAddress ?? "?"
        }: no handshake within ${this.#limits.handshakeTimeoutMs} ms`,
        null,
      );
      socket.destroy();
    }, this.#limits.handshakeTimeoutMs);
    const shardIds: number[] = [];
    const messages: Message[] = [];
    socket.on("close", () => {
      if (timer !== null) clearTimeout(timer);
      this.#inbound.delete(socket);
    });
    const onData = (chunk: Uint8Array): void => {
      if (socket.destroyed) return;
      try {
        buffer.push(chunk);
        if (sender === 0 && buffer.length >= 4) {
          const acceptor = this.#kinds.get(buffer.view.getUint32(buffer.start));
          if (acceptor !== undefined) {
            // Another kind: it owns the socket, its limits and its accounting from here.
            if (timer !== null) clearTimeout(timer);
            timer = null;
            socket.off("data", onData);
            this.#inbound.delete(socket);
            acceptor(socket, buffer.bytes.slice(buffer.start, buffer.end));
            return;
          }
        }
        this.#stats.bytesReceived += chunk.length;
        metrics.bytesReceived.inc(senderLabel, chunk.length);
        if (sender === 0) {
          const hello = buffer.takeHandshake();
          if (hello === null) return;
          const status = this.#checkHello(hello);
          socket.write(encodeHandshake(status, this.#clusterId, this.nodeId, hello.sender));
          if (status !== HANDSHAKE_OK) {
            throw new ProtocolError(
              "refused",
              `refused node ${hello.sender} (protocol v${hello.version}): ${
                HANDSHAKE_STATUS_TEXT[status]
              }`,
            );
          }
          if (timer !== null) clearTimeout(timer);
          timer = null;
          sender = hello.sender;
          senderLabel = { peer: String(sender) };
        }
        for (let payload = buffer.takeFrame(); payload !== null; payload = buffer.takeFrame()) {
          shardIds.length = 0;
          messages.length = 0;
          decodeBatch(payload, sender, this.nodeId, shardIds, messages);
          this.#stats.framesReceived++;
          metrics.framesReceived.inc(senderLabel);
          this.#deliver(senderLabel, shardIds, messages);
        }
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        this.#protocolError(
          e.reason,
          `closing inbound connection from ${socket.remoteAddress ?? "?"} (node ${
            sender || "?"
          }): ${e.message}`,
          null,
        );
        // end() lets a refusal answer reach the dialer; destroy() follows for garbage.
        if (e.reason === "refused") socket.end();
        else socket.destroy();
      }
    };
    socket.on("data", onData);
  }

  #checkHello(hello: Handshake): number {
    if (hello.version !== RAFT_PROTOCOL_VERSION || hello.status !== HANDSHAKE_OK) {
      return HANDSHAKE_UNSUPPORTED_VERSION;
    }
    if (!equalBytes(hello.clusterId, this.#clusterId)) return HANDSHAKE_WRONG_CLUSTER;
    if (hello.receiver !== this.nodeId || hello.sender === 0 || hello.sender === this.nodeId) {
      return HANDSHAKE_WRONG_NODE;
    }
    return HANDSHAKE_OK;
  }

  #deliver(senderLabel: { peer: string }, shardIds: number[], messages: Message[]): void {
    const handler = this.#onMessage;
    this.#stats.messagesReceived += messages.length;
    metrics.messagesReceived.inc(senderLabel, messages.length);
    if (handler === null) return;
    for (let i = 0; i < messages.length; i++) {
      try {
        handler(shardIds[i]!, messages[i]!);
      } catch (error) {
        // A handler bug must not tear down a connection shared by every shard.
        this.#log.error("raft message handler threw", { shard: shardIds[i], error });
      }
    }
  }

  /**
   * Counts a bad connection and logs it: one line per connection, which is then closed. An
   * outgoing connection's problem is logged by its outage warning instead (`log` false).
   */
  #protocolError(reason: string, message: string, error: Error | null, log = true): void {
    this.#stats.protocolErrors++;
    metrics.protocolErrors.inc({ reason });
    if (log) this.#log.warn(message, error === null ? { reason } : { reason, error });
  }
}

/**
 * Why a TLS peer's certificate is not a cluster server's, or null when it is: TLS has checked
 * the chain against the cluster CA; this checks the subject OU is one of `ous`.
 */
export function checkPeerCertificate(
  socket: tls.TLSSocket,
  ous: readonly string[],
): string | null {
  if (!socket.authorized) {
    return `certificate not authorized: ${String(socket.authorizationError ?? "unknown")}`;
  }
  const subject = socket.getPeerCertificate()?.subject as { OU?: string | string[] } | undefined;
  const have = subject?.OU === undefined
    ? []
    : Array.isArray(subject.OU)
    ? subject.OU
    : [subject.OU];
  if (!have.some((ou) => ous.includes(ou))) {
    return `certificate OU ${JSON.stringify(have)} is not one of ${JSON.stringify(ous)}`;
  }
  return null;
}

function checkLimits(l: RaftTransportLimits): void {
  for (const [name, value] of Object.entries(l)) {
    assert(
      Number.isInteger(value) && value > 0,
      `raft transport limit ${name}=${value} must be a positive integer`,
    );
  }
  assert(
    l.peerQueueSizeBytesMax >= MESSAGE_SIZE_BYTES_MAX,
    "peerQueueSizeBytesMax must hold one largest message",
  );
  assert(l.batchCountMax <= FRAME_MESSAGE_COUNT_MAX, "batchCountMax over what receivers accept");
  assert(
    l.batchSizeBytesMax <= FRAME_PAYLOAD_SIZE_BYTES_MAX,
    "batchSizeBytesMax over what receivers accept",
  );
  assert(l.writeSizeBytesMax >= l.batchSizeBytesMax, "writeSizeBytesMax must hold a full batch");
  assert(l.reconnectDelayMsMin <= l.reconnectDelayMsMax, "reconnect delay min over max");
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
