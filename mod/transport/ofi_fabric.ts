// The client transport over libfabric message endpoints, through ffi/fabric (the tcp
// provider here; verbs where an RDMA device exists). libfabric keeps message boundaries but
// caps their size, so a frame travels as messages of at most msgBytesMax bytes: the first
// carries a 4-byte big-endian frame length, then as much of the frame as fits; the rest
// follow as plain continuation messages, in order on the one endpoint.

import {
  cString,
  type FabricShim,
  FI_EAGAIN,
  FI_ECANCELED,
  FI_ECONNREFUSED,
  FI_ECONNRESET,
  FI_ETIMEDOUT,
} from "../../ffi/fabric/bindings.ts";
import { assert } from "../base/mod.ts";
import {
  MESSAGE_CONNECT_TIMEOUT_MS_DEFAULT,
  MESSAGE_FRAME_BYTES_MAX_DEFAULT,
  type MessageConnection,
  type MessageDialOptions,
  type MessageListener,
  type MessageTransport,
  TransportError,
} from "./ofi_port.ts";

const FRAME_HEADER_BYTES = 4;
/** Longest single wait on a runtime worker; loops re-check closing between waits. */
const WAIT_SLICE_MS = 1_000;
/** How long close() waits for queued sends to complete. */
const CLOSE_FLUSH_MS = 2_000;
/** How long send() waits for a send buffer before it calls the connection stuck. */
const SEND_TIMEOUT_MS = 30_000;

const EMPTY = new Uint8Array(0);

function pointerFrom(out: BigUint64Array): Deno.PointerObject {
  const p = Deno.UnsafePointer.create(out[0]!);
  assert(p !== null, "the shim returned a null handle with status 0");
  return p;
}

function errorOf(shim: FabricShim, status: number | bigint, what: string): TransportError {
  const code = -Number(status);
  const text = `${what}: ${shim.describe(status)}`;
  if (code === FI_ECONNREFUSED) return new TransportError("refused", text);
  if (code === FI_ETIMEDOUT || code === FI_EAGAIN) return new TransportError("timeout", text);
  if (code === FI_ECONNRESET || code === FI_ECANCELED) return new TransportError("closed", text);
  return new TransportError("unavailable", text);
}

class FabricMessageConnection implements MessageConnection {
  readonly remote: string;
  readonly #shim: FabricShim;
  readonly #handle: Deno.PointerObject;
  readonly #frameBytesMax: number;
  readonly #msgMax: number;
  readonly #scratch: Uint8Array<ArrayBuffer>;
  #sendChain: Promise<void> = Promise.resolve();
  /** Frames passed to send() and not yet settled (this one included while it runs). */
  #sendsQueued = 0;
  #receiving: Promise<unknown> | null = null;
  #closing = false;
  #closed = false;
  #peerGone = false;
  /** Set when a frame broke the protocol: the stream is out of step, every receive fails. */
  #broken: TransportError | null = null;

  constructor(shim: FabricShim, handle: Deno.PointerObject, remote: string, frameBytesMax: number) {
    this.#shim = shim;
    this.#handle = handle;
    this.remote = remote;
    this.#frameBytesMax = frameBytesMax;
    this.#msgMax = shim.msgBytesMax;
    this.#scratch = new Uint8Array(this.#msgMax);
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
    if (this.#closing) {
      return Promise.reject(new TransportError("closed", `connection to ${this.remote} closed`));
    }
    this.#sendsQueued++;
    const next = this.#sendChain.then(() => this.#sendFrame(frame)).finally(() => {
      this.#sendsQueued--;
    });
    // A failed frame fails its caller; later frames still try (and fail fast if it is broken).
    this.#sendChain = next.catch(() => {});
    return next;
  }

  async #sendFrame(frame: Uint8Array): Promise<void> {
    const header = new Uint8Array(FRAME_HEADER_BYTES);
    new DataView(header.buffer).setUint32(0, frame.length);
    let at = Math.min(frame.length, this.#msgMax - FRAME_HEADER_BYTES);
    await this.#sendMessage(header, frame.subarray(0, at));
    while (at < frame.length) {
      const end = Math.min(frame.length, at + this.#msgMax);
      await this.#sendMessage(EMPTY, frame.subarray(at, end));
      at = end;
    }
    // The tcp provider moves queued sends only while someone polls the send queue (manual
    // progress): the last frame of a burst waits until its messages have completed, frames
    // with more behind them leave that to the next one (which polls while it queues).
    if (this.#sendsQueued > 1) return;
    const s = this.#shim.lib.symbols;
    let rc = s.kf_flush_now(this.#handle, 0);
    if (rc === -FI_EAGAIN) rc = await s.kf_flush(this.#handle, SEND_TIMEOUT_MS);
    if (rc !== 0) throw errorOf(this.#shim, rc, `send to ${this.remote}`);
  }

  async #sendMessage(head: Uint8Array, body: Uint8Array): Promise<void> {
    const s = this.#shim.lib.symbols;
    const h = head as Uint8Array<ArrayBuffer>;
    const b = body as Uint8Array<ArrayBuffer>;
    let rc = s.kf_send_now(this.#handle, h, BigInt(h.length), b, BigInt(b.length), 0);
    if (rc === -FI_EAGAIN) {
      rc = await s.kf_send(this.#handle, h, BigInt(h.length), b, BigInt(b.length), SEND_TIMEOUT_MS);
    }
    if (rc !== 0) throw errorOf(this.#shim, rc, `send to ${this.remote}`);
  }

  receive(): Promise<Uint8Array | null> {
    assert(this.#receiving === null, "one receive() at a time");
    const p = this.#receiveFrame().finally(() => {
      this.#receiving = null;
    });
    this.#receiving = p.catch(() => {});
    return p;
  }

  /** One message into `out` (at least msgMax bytes); its length, or null when the peer left. */
  async #receiveMessage(out: Uint8Array<ArrayBuffer>): Promise<number | null> {
    const s = this.#shim.lib.symbols;
    for (;;) {
      if (this.#peerGone) return null;
      let n = s.kf_recv_now(this.#handle, out, BigInt(out.length), 0);
      if (n === BigInt(-FI_EAGAIN)) {
        if (this.#closing) return null;
        n = await s.kf_recv(this.#handle, out, BigInt(out.length), WAIT_SLICE_MS);
      }
      if (n >= 0n) return Number(n);
      if (n === BigInt(-FI_EAGAIN)) continue;
      if (n === BigInt(-FI_ECONNRESET) || (n === BigInt(-FI_ECANCELED) && this.#closing)) {
        this.#peerGone = n === BigInt(-FI_ECONNRESET);
        return null;
      }
      throw errorOf(this.#shim, n, `receive from ${this.remote}`);
    }
  }

  async #receiveFrame(): Promise<Uint8Array | null> {
    if (this.#broken !== null) throw this.#broken;
    try {
      return await this.#receiveFrameChecked();
    } catch (e) {
      if (e instanceof TransportError && (e.code === "too_large" || e.code === "protocol")) {
        this.#broken = e;
      }
      throw e;
    }
  }

  async #receiveFrameChecked(): Promise<Uint8Array | null> {
    const first = await this.#receiveMessage(this.#scratch);
    if (first === null) return null;
    if (first < FRAME_HEADER_BYTES) {
      throw new TransportError(
        "protocol",
        `a ${first}-byte message from ${this.remote} has no frame header`,
      );
    }
    const length = new DataView(this.#scratch.buffer).getUint32(0);
    if (length > this.#frameBytesMax) {
      throw new TransportError(
        "too_large",
        `frame of ${length} bytes from ${this.remote} is over ${this.#frameBytesMax}`,
      );
    }
    const frame = new Uint8Array(length);
    let got = first - FRAME_HEADER_BYTES;
    if (got > length) {
      throw new TransportError("protocol", `frame from ${this.remote} overruns its length`);
    }
    frame.set(this.#scratch.subarray(FRAME_HEADER_BYTES, first));
    while (got < length) {
      // Straight into the frame when a whole message surely fits; else through scratch.
      const direct = length - got >= this.#msgMax;
      const target = direct ? frame.subarray(got, got + this.#msgMax) : this.#scratch;
      const n = await this.#receiveMessage(target);
      if (n === null) {
        throw new TransportError("closed", `${this.remote} closed in the middle of a frame`);
      }
      if (got + n > length) {
        throw new TransportError("protocol", `frame from ${this.remote} overruns its length`);
      }
      if (!direct) frame.set(this.#scratch.subarray(0, n), got);
      got += n;
    }
    return frame;
  }

  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const s = this.#shim.lib.symbols;
    await this.#sendChain;
    if (!this.#peerGone) await s.kf_flush(this.#handle, CLOSE_FLUSH_MS);
    s.kf_conn_cancel(this.#handle);
    await this.#receiving;
    if (!this.#closed) {
      this.#closed = true;
      s.kf_conn_close(this.#handle);
    }
  }
}

class FabricMessageListener implements MessageListener {
  readonly port: number;
  readonly #transport: FabricMessageTransport;
  readonly #shim: FabricShim;
  readonly #handle: Deno.PointerObject;
  #accepting: Promise<unknown> | null = null;
  #closed = false;

  constructor(
    transport: FabricMessageTransport,
    shim: FabricShim,
    handle: Deno.PointerObject,
    port: number,
  ) {
    this.#transport = transport;
    this.#shim = shim;
    this.#handle = handle;
    this.port = port;
  }

  accept(): Promise<MessageConnection | null> {
    assert(this.#accepting === null, "one accept() at a time");
    const p = this.#acceptOne().finally(() => {
      this.#accepting = null;
    });
    this.#accepting = p.catch(() => {});
    return p;
  }

  async #acceptOne(): Promise<MessageConnection | null> {
    const out = new BigUint64Array(1);
    for (;;) {
      if (this.#closed) return null;
      const rc = await this.#shim.lib.symbols.kf_accept(this.#handle, WAIT_SLICE_MS, out);
      if (rc === -FI_EAGAIN) continue;
      if (rc === -FI_ECANCELED) return null;
      if (rc !== 0) throw errorOf(this.#shim, rc, `accept on port ${this.port}`);
      return this.#transport.wrap(pointerFrom(out), `${this.#transport.name} peer`);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#shim.lib.symbols.kf_listener_cancel(this.#handle);
    await this.#accepting;
    this.#shim.lib.symbols.kf_listener_close(this.#handle);
  }
}

export interface FabricMessageTransportOptions {
  shim: FabricShim;
  /** The libfabric provider: "tcp", "verbs" or "cxi". */
  provider: string;
  frameBytesMax?: number;
}

export class FabricMessageTransport implements MessageTransport {
  readonly name: string;
  readonly provider: string;
  readonly #shim: FabricShim;
  readonly #frameBytesMax: number;

  constructor(options: FabricMessageTransportOptions) {
    this.#shim = options.shim;
    this.provider = options.provider;
    this.name = `libfabric-${options.provider}`;
    this.#frameBytesMax = options.frameBytesMax ?? MESSAGE_FRAME_BYTES_MAX_DEFAULT;
    assert(this.#frameBytesMax >= 1 && this.#frameBytesMax <= 0xffff_ffff, "frameBytesMax");
  }

  /** @internal: a connection handle from the shim, as the port's connection. */
  wrap(handle: Deno.PointerObject, remote: string): MessageConnection {
    return new FabricMessageConnection(this.#shim, handle, remote, this.#frameBytesMax);
  }

  listen(host: string, port: number): Promise<MessageListener> {
    const out = new BigUint64Array(1);
    const bound = new Uint32Array(1);
    const rc = this.#shim.lib.symbols.kf_listen(
      cString(this.provider),
      cString(host),
      cString(String(port)),
      out,
      bound,
    );
    if (rc !== 0) {
      return Promise.reject(errorOf(this.#shim, rc, `listen on ${host}:${port} (${this.name})`));
    }
    return Promise.resolve(
      new FabricMessageListener(this, this.#shim, pointerFrom(out), bound[0]!),
    );
  }

  async dial(
    host: string,
    port: number,
    options: MessageDialOptions = {},
  ): Promise<MessageConnection> {
    const out = new BigUint64Array(1);
    const rc = await this.#shim.lib.symbols.kf_connect(
      cString(this.provider),
      cString(host),
      cString(String(port)),
      options.timeoutMs ?? MESSAGE_CONNECT_TIMEOUT_MS_DEFAULT,
      out,
    );
    if (rc !== 0) throw errorOf(this.#shim, rc, `dial ${host}:${port} (${this.name})`);
    return this.wrap(pointerFrom(out), `${host}:${port}`);
  }
}
