// The client transport port: framed messages between a compute node and a storage node, for
// chunk bytes (gRPC measured 62 MB/s at 1 MiB messages here: not for bulk bytes). One port,
// several implementations: TCP (with TLS when there is TLS material; ofi_tcp.ts) and
// libfabric through its shim (tcp, verbs or cxi providers; ofi_fabric.ts). Selection order
// and the "which one and why" line live in ofi_select.ts; one conformance suite holds them all.

/** Largest frame either end sends or accepts by default; a larger one closes the connection. */
export const MESSAGE_FRAME_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** How long dial() waits for a connection by default. */
export const MESSAGE_CONNECT_TIMEOUT_MS_DEFAULT = 10_000;
/** Bytes a connection holds received but not yet taken by receive(); past it reading pauses. */
export const MESSAGE_RECEIVE_BUFFER_BYTES_MAX = 8 * 1024 * 1024;
/** Connections a listener holds accepted but not yet taken by accept(); past it, refused. */
export const MESSAGE_ACCEPT_BACKLOG_MAX = 128;

export type TransportErrorCode =
  | "refused"
  | "timeout"
  | "closed"
  | "too_large"
  | "protocol"
  | "unavailable";

/** A transport failure the caller can act on (retry elsewhere, report). */
export class TransportError extends Error {
  override name = "TransportError";
  constructor(readonly code: TransportErrorCode, message: string) {
    super(message);
  }
}

export interface MessageDialOptions {
  timeoutMs?: number;
}

/** One ordered, reliable stream of frames in each direction. */
export interface MessageConnection {
  /** The peer, as host:port where known. */
  readonly remote: string;
  /** Sends one frame; frames arrive whole and in the order sent. Calls may overlap. */
  send(frame: Uint8Array): Promise<void>;
  /**
   * The next frame; null once the peer closed after its last whole frame. Throws
   * TransportError when the connection broke (mid-frame, reset, over the frame bound).
   */
  receive(): Promise<Uint8Array | null>;
  /** Closes both directions; frames already sent are delivered first where possible. */
  close(): Promise<void>;
}

export interface MessageListener {
  /** The bound port (the real one when 0 was asked for). */
  readonly port: number;
  /** The next inbound connection; null after close(). */
  accept(): Promise<MessageConnection | null>;
  close(): Promise<void>;
}

export interface MessageTransport {
  /** What moves the bytes: "tcp", "tls", "libfabric-tcp", "libfabric-verbs", "libfabric-cxi". */
  readonly name: string;
  listen(host: string, port: number): Promise<MessageListener>;
  dial(host: string, port: number, options?: MessageDialOptions): Promise<MessageConnection>;
}
