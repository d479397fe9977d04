// The chunk fabric's wire format: how fragments of chunks move between nodes, on the node's
// Raft port (KISEKI_RAFT_ADDR), beside Raft. This file owns the constants, the typed errors,
// the handshake and the frame headers; fabric_server.ts and fabric_client.ts speak it.
//
// Wire protocol, version 1 (all integers big-endian):
//
//   A connection is opened by the node that asks (the dialer) and carries its requests to the
//   acceptor and the acceptor's responses back. Many requests are outstanding at once; each
//   response names its request, and responses come in any order.
//
//   Handshake, dialer first, then the acceptor's answer in the same shape:
//     off size
//     0   4    magic "KFAB" (0x4b 0x46 0x41 0x42); the Raft listener dispatches on it
//     4   1    protocol version (1)
//     5   1    status: 0 hello / accepted; in an answer 1 unsupported version, 2 wrong
//              cluster, 3 wrong node (the receiver id is not the acceptor's), 4 busy (the
//              acceptor holds too many fabric connections)
//     6   2    cluster id length n (0..64)
//     8   4    sender node id
//     12  4    receiver node id (the node the sender means to reach)
//     16  4    largest fragment the sender takes (its fragmentSizeBytesMax)
//     20  n    cluster id (UTF-8)
//   Any status but 0 closes the connection.
//
//   Request, dialer to acceptor: a 60-byte header, then its body.
//     0   4    body length B (PUT: M + fragment length; otherwise 0)
//     4   1    op: 1 PUT, 2 GET, 3 STAT, 4 DELETE
//     5   1    reserved, 0
//     6   2    metadata length M (PUT only, 0..FABRIC_META_SIZE_BYTES_MAX)
//     8   4    request id (chosen by the dialer; unique among its outstanding requests on
//              this connection; at most outstandingPerConnectionMax outstanding)
//     12  4    fragment index
//     16  8    offset (GET: first byte of the range; otherwise 0; below 2^53)
//     24  4    length (GET: most bytes to return; otherwise 0)
//     28  32   chunk id
//     60  B    body: PUT: M bytes of metadata (opaque here, kept by the receiver with the
//              fragment), then the fragment
//
//   Response, acceptor to dialer: a 24-byte header, then its body.
//     0   4    body length B
//     4   1    op of the request | 0x80
//     5   1    status: 0 ok, 1 not found, 2 no space, 3 bad request, 4 unavailable,
//              5 internal error
//     6   2    metadata length M (STAT ok: the fragment's metadata; otherwise 0)
//     8   4    request id
//     12  4    reserved, 0
//     16  8    fragment size (GET and STAT ok: the whole stored fragment's length)
//     24  B    body: GET ok: the bytes of the range; STAT ok: the metadata; an error: a
//              UTF-8 message of at most FABRIC_ERROR_TEXT_BYTES_MAX bytes; otherwise empty
//
//   A frame larger than the receiver's limit (its handshake's fragment size plus the largest
//   metadata), an unknown op, a nonzero reserved byte, a duplicate or unknown request id,
//   or more outstanding requests than allowed closes the connection; requests in flight on
//   it fail as unavailable at the dialer.
//
//   Security is the Raft port's (raft_transport.ts): with TLS material, mutual TLS with a
//   cluster server certificate (OU node, keyserver or control) on both ends; without it,
//   loopback peers only unless KISEKI_ALLOW_INSECURE. The cluster id and node ids are checked
//   at the handshake.

import { assert } from "../base/mod.ts";
import type { NodeId } from "../raft/mod.ts";

export const FABRIC_PROTOCOL_VERSION = 1;
/** "KFAB": the first four bytes of a fabric connection (Raft's are "KRFT"). */
export const FABRIC_MAGIC = 0x4b46_4142;
export const FABRIC_HANDSHAKE_FIXED_SIZE_BYTES = 20;
export const FABRIC_CLUSTER_ID_SIZE_BYTES_MAX = 64;
export const FABRIC_REQUEST_HEADER_SIZE_BYTES = 60;
export const FABRIC_RESPONSE_HEADER_SIZE_BYTES = 24;
export const FABRIC_CHUNK_ID_SIZE_BYTES = 32;
/** Largest per-fragment metadata a PUT may carry (placement, EC geometry, lengths). */
export const FABRIC_META_SIZE_BYTES_MAX = 1024;
/** Longest error text in a response (longer texts are cut). */
export const FABRIC_ERROR_TEXT_BYTES_MAX = 1024;
/**
 * Largest fragment any node may be configured to take: a replicated copy of the largest
 * chunk content-defined chunking may cut (cdc.ts CDC_MAX_BYTES_MAX, 256 MiB) with room for
 * its envelope.
 */
export const FABRIC_FRAGMENT_SIZE_BYTES_LIMIT = 257 * 1024 * 1024;
/** Default largest fragment: a replicated copy of the default largest chunk (4 MiB) and more. */
export const FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT = 16 * 1024 * 1024;
/** Bytes around a fragment in a frame: the larger header and the largest metadata. */
export const FABRIC_FRAME_OVERHEAD_BYTES_MAX = FABRIC_REQUEST_HEADER_SIZE_BYTES +
  FABRIC_META_SIZE_BYTES_MAX;

export const OP_PUT = 1;
export const OP_GET = 2;
export const OP_STAT = 3;
export const OP_DELETE = 4;
export const OP_RESPONSE_BIT = 0x80;
export type FabricOp = "put" | "get" | "stat" | "delete";
export const OP_NAMES: Record<number, FabricOp> = {
  [OP_PUT]: "put",
  [OP_GET]: "get",
  [OP_STAT]: "stat",
  [OP_DELETE]: "delete",
};

export const FABRIC_HANDSHAKE_OK = 0;
export const FABRIC_HANDSHAKE_UNSUPPORTED_VERSION = 1;
export const FABRIC_HANDSHAKE_WRONG_CLUSTER = 2;
export const FABRIC_HANDSHAKE_WRONG_NODE = 3;
export const FABRIC_HANDSHAKE_BUSY = 4;
export const FABRIC_HANDSHAKE_STATUS_TEXT: Record<number, string> = {
  [FABRIC_HANDSHAKE_UNSUPPORTED_VERSION]: "unsupported protocol version",
  [FABRIC_HANDSHAKE_WRONG_CLUSTER]: "wrong cluster id",
  [FABRIC_HANDSHAKE_WRONG_NODE]: "wrong node id",
  [FABRIC_HANDSHAKE_BUSY]: "too many fabric connections",
};

export const STATUS_OK = 0;
export const STATUS_NOT_FOUND = 1;
export const STATUS_NO_SPACE = 2;
export const STATUS_BAD_REQUEST = 3;
export const STATUS_UNAVAILABLE = 4;
export const STATUS_INTERNAL = 5;
const STATUS_MAX = STATUS_INTERNAL;

// ---- typed errors ----------------------------------------------------------------------

/**
 * Why a fabric request failed. `not_found`, `no_space`, `bad_request`, `unavailable` and
 * `internal` may come from the remote node; `unavailable` also means the peer could not be
 * reached or the connection was lost (the request may or may not have been carried out);
 * `timeout` and `cancelled` are the caller's own deadline and signal.
 */
export type FabricErrorCode =
  | "not_found"
  | "no_space"
  | "bad_request"
  | "unavailable"
  | "internal"
  | "timeout"
  | "cancelled";

export class FabricError extends Error {
  override name = "FabricError";
  constructor(readonly code: FabricErrorCode, message: string, readonly peer: NodeId = 0) {
    super(message);
  }
}
export class FabricNotFoundError extends FabricError {
  override name = "FabricNotFoundError";
  constructor(message: string, peer: NodeId = 0) {
    super("not_found", message, peer);
  }
}
export class FabricNoSpaceError extends FabricError {
  override name = "FabricNoSpaceError";
  constructor(message: string, peer: NodeId = 0) {
    super("no_space", message, peer);
  }
}
export class FabricBadRequestError extends FabricError {
  override name = "FabricBadRequestError";
  constructor(message: string, peer: NodeId = 0) {
    super("bad_request", message, peer);
  }
}
export class FabricUnavailableError extends FabricError {
  override name = "FabricUnavailableError";
  constructor(message: string, peer: NodeId = 0) {
    super("unavailable", message, peer);
  }
}
export class FabricInternalError extends FabricError {
  override name = "FabricInternalError";
  constructor(message: string, peer: NodeId = 0) {
    super("internal", message, peer);
  }
}
/** The caller's deadline passed; the peer may still carry the request out. */
export class FabricTimeoutError extends FabricError {
  override name = "FabricTimeoutError";
  constructor(message: string, peer: NodeId = 0) {
    super("timeout", message, peer);
  }
}
/** The caller's signal aborted the request; the peer may still carry it out. */
export class FabricCancelledError extends FabricError {
  override name = "FabricCancelledError";
  constructor(message: string, peer: NodeId = 0) {
    super("cancelled", message, peer);
  }
}

const STATUS_OF_CODE: Partial<Record<FabricErrorCode, number>> = {
  not_found: STATUS_NOT_FOUND,
  no_space: STATUS_NO_SPACE,
  bad_request: STATUS_BAD_REQUEST,
  unavailable: STATUS_UNAVAILABLE,
  internal: STATUS_INTERNAL,
};

/** The response status a handler's error becomes (anything not a FabricError is internal). */
export function statusOfError(error: unknown): number {
  if (error instanceof FabricError) return STATUS_OF_CODE[error.code] ?? STATUS_UNAVAILABLE;
  return STATUS_INTERNAL;
}

/** The typed error a response status becomes at the dialer. */
export function errorOfStatus(status: number, text: string, peer: NodeId): FabricError {
  const message = `node ${peer}: ${text}`;
  switch (status) {
    case STATUS_NOT_FOUND:
      return new FabricNotFoundError(message, peer);
    case STATUS_NO_SPACE:
      return new FabricNoSpaceError(message, peer);
    case STATUS_BAD_REQUEST:
      return new FabricBadRequestError(message, peer);
    case STATUS_UNAVAILABLE:
      return new FabricUnavailableError(message, peer);
    default:
      return new FabricInternalError(message, peer);
  }
}

/** A protocol violation by the remote end of one connection: the connection is closed. */
export class FabricProtocolError extends Error {
  override name = "FabricProtocolError";
  constructor(readonly reason: string, message: string) {
    super(message);
  }
}

// ---- handshake -------------------------------------------------------------------------

export interface FabricHandshake {
  version: number;
  status: number;
  sender: NodeId;
  receiver: NodeId;
  fragmentSizeBytesMax: number;
  clusterId: Uint8Array;
}

export function encodeFabricHandshake(
  status: number,
  clusterId: Uint8Array,
  sender: NodeId,
  receiver: NodeId,
  fragmentSizeBytesMax: number,
): Uint8Array {
  assert(clusterId.length <= FABRIC_CLUSTER_ID_SIZE_BYTES_MAX, "cluster id length");
  const bytes = new Uint8Array(FABRIC_HANDSHAKE_FIXED_SIZE_BYTES + clusterId.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, FABRIC_MAGIC);
  view.setUint8(4, FABRIC_PROTOCOL_VERSION);
  view.setUint8(5, status);
  view.setUint16(6, clusterId.length);
  view.setUint32(8, sender);
  view.setUint32(12, receiver);
  view.setUint32(16, fragmentSizeBytesMax);
  bytes.set(clusterId, FABRIC_HANDSHAKE_FIXED_SIZE_BYTES);
  return bytes;
}

/**
 * Parses a handshake at the front of `bytes`: the handshake and its size, null when more
 * bytes are needed, or a FabricProtocolError for garbage.
 */
export function decodeFabricHandshake(
  bytes: Uint8Array,
): { handshake: FabricHandshake; sizeBytes: number } | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length >= 4 && view.getUint32(0) !== FABRIC_MAGIC) {
    const tlsRecord = (bytes[0] === 0x15 || bytes[0] === 0x16) && bytes[1] === 3;
    throw new FabricProtocolError(
      "bad_magic",
      tlsRecord
        ? "the other side speaks TLS and this one does not (set KISEKI_CA_PATH, KISEKI_CERT_PATH and KISEKI_KEY_PATH on every node, or on none)"
        : "not a Kiseki fabric connection (bad magic)",
    );
  }
  if (bytes.length < FABRIC_HANDSHAKE_FIXED_SIZE_BYTES) return null;
  const clusterLength = view.getUint16(6);
  if (clusterLength > FABRIC_CLUSTER_ID_SIZE_BYTES_MAX) {
    throw new FabricProtocolError(
      "bad_handshake",
      `cluster id of ${clusterLength} bytes exceeds ${FABRIC_CLUSTER_ID_SIZE_BYTES_MAX}`,
    );
  }
  const sizeBytes = FABRIC_HANDSHAKE_FIXED_SIZE_BYTES + clusterLength;
  if (bytes.length < sizeBytes) return null;
  return {
    handshake: {
      version: view.getUint8(4),
      status: view.getUint8(5),
      sender: view.getUint32(8),
      receiver: view.getUint32(12),
      fragmentSizeBytesMax: view.getUint32(16),
      clusterId: bytes.slice(FABRIC_HANDSHAKE_FIXED_SIZE_BYTES, sizeBytes),
    },
    sizeBytes,
  };
}

// ---- frame headers ---------------------------------------------------------------------

/** A request header, decoded. `chunkId` is a copy (it outlives the receive buffer). */
export interface RequestHeader {
  bodySizeBytes: number;
  op: number;
  metaSizeBytes: number;
  requestId: number;
  index: number;
  offset: number;
  length: number;
  chunkId: Uint8Array;
}

export interface ResponseHeader {
  bodySizeBytes: number;
  op: number;
  status: number;
  metaSizeBytes: number;
  requestId: number;
  fragmentSizeBytes: number;
}

/** Writes a request header at `view[0..60)`. */
export function writeRequestHeader(view: DataView, bytes: Uint8Array, h: RequestHeader): void {
  assert(h.chunkId.length === FABRIC_CHUNK_ID_SIZE_BYTES, "chunk id is 32 bytes");
  view.setUint32(0, h.bodySizeBytes);
  view.setUint8(4, h.op);
  view.setUint8(5, 0);
  view.setUint16(6, h.metaSizeBytes);
  view.setUint32(8, h.requestId);
  view.setUint32(12, h.index);
  setU53(view, 16, h.offset);
  view.setUint32(24, h.length);
  bytes.set(h.chunkId, 28);
}

/**
 * Decodes and checks a request header at `bytes[at..at+60)`; `bodySizeBytesMax` is what
 * this acceptor takes. Throws FabricProtocolError for anything out of shape.
 */
export function readRequestHeader(
  view: DataView,
  bytes: Uint8Array,
  at: number,
  bodySizeBytesMax: number,
): RequestHeader {
  const h: RequestHeader = {
    bodySizeBytes: view.getUint32(at),
    op: view.getUint8(at + 4),
    metaSizeBytes: view.getUint16(at + 6),
    requestId: view.getUint32(at + 8),
    index: view.getUint32(at + 12),
    offset: getU53(view, at + 16),
    length: view.getUint32(at + 24),
    chunkId: bytes.slice(at + 28, at + 28 + FABRIC_CHUNK_ID_SIZE_BYTES),
  };
  if (OP_NAMES[h.op] === undefined) {
    throw new FabricProtocolError("bad_frame", `unknown request op ${h.op}`);
  }
  if (view.getUint8(at + 5) !== 0) {
    throw new FabricProtocolError("bad_frame", "nonzero reserved byte in a request");
  }
  if (h.offset < 0) throw new FabricProtocolError("bad_frame", "request offset over 2^53");
  if (h.op === OP_PUT) {
    if (h.metaSizeBytes > FABRIC_META_SIZE_BYTES_MAX) {
      throw new FabricProtocolError(
        "bad_frame",
        `metadata of ${h.metaSizeBytes} bytes exceeds ${FABRIC_META_SIZE_BYTES_MAX}`,
      );
    }
    if (h.bodySizeBytes < h.metaSizeBytes || h.bodySizeBytes > bodySizeBytesMax) {
      throw new FabricProtocolError(
        "bad_frame",
        `put body of ${h.bodySizeBytes} bytes (metadata ${h.metaSizeBytes}, most ${bodySizeBytesMax})`,
      );
    }
  } else if (h.bodySizeBytes !== 0 || h.metaSizeBytes !== 0) {
    throw new FabricProtocolError("bad_frame", `a ${OP_NAMES[h.op]} request with a body`);
  }
  return h;
}

export function writeResponseHeader(view: DataView, at: number, h: ResponseHeader): void {
  view.setUint32(at, h.bodySizeBytes);
  view.setUint8(at + 4, h.op | OP_RESPONSE_BIT);
  view.setUint8(at + 5, h.status);
  view.setUint16(at + 6, h.metaSizeBytes);
  view.setUint32(at + 8, h.requestId);
  view.setUint32(at + 12, 0);
  setU53(view, at + 16, h.fragmentSizeBytes);
}

/** Decodes and checks the shape of a response header (its fit to the request is the caller's). */
export function readResponseHeader(view: DataView, at: number): ResponseHeader {
  const opByte = view.getUint8(at + 4);
  const h: ResponseHeader = {
    bodySizeBytes: view.getUint32(at),
    op: opByte & ~OP_RESPONSE_BIT,
    status: view.getUint8(at + 5),
    metaSizeBytes: view.getUint16(at + 6),
    requestId: view.getUint32(at + 8),
    fragmentSizeBytes: getU53(view, at + 16),
  };
  if ((opByte & OP_RESPONSE_BIT) === 0 || OP_NAMES[h.op] === undefined) {
    throw new FabricProtocolError("bad_frame", `unknown response op ${opByte}`);
  }
  if (h.status > STATUS_MAX) {
    throw new FabricProtocolError("bad_frame", `unknown response status ${h.status}`);
  }
  if (view.getUint32(at + 12) !== 0) {
    throw new FabricProtocolError("bad_frame", "nonzero reserved bytes in a response");
  }
  if (h.fragmentSizeBytes < 0) {
    throw new FabricProtocolError("bad_frame", "fragment size over 2^53");
  }
  if (h.metaSizeBytes > h.bodySizeBytes) {
    throw new FabricProtocolError("bad_frame", "response metadata longer than its body");
  }
  return h;
}

/** Writes a non-negative integer below 2^53 as a u64. */
function setU53(view: DataView, at: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, "u53");
  view.setUint32(at, Math.floor(value / 0x1_0000_0000));
  view.setUint32(at + 4, value >>> 0);
}

/** Reads a u64; -1 when it is 2^53 or more (not a safe JavaScript integer). */
function getU53(view: DataView, at: number): number {
  const high = view.getUint32(at);
  if (high > 0x1f_ffff) return -1;
  return high * 0x1_0000_0000 + view.getUint32(at + 4);
}
