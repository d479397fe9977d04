// The framed client transport's wire format: how a native client puts and gets sealed chunks
// on a node (bulk bytes never go over gRPC). Requests and responses are frames with one
// 12-byte header (big-endian):
//
//   offset size  field
//        0    4  body length
//        4    1  request: op (HELLO, PUT, GET); response: status
//        5    3  zero
//        8    4  request id (the response repeats it; responses may come in any order)
//       12    n  body
//
// HELLO body: the 32-byte session from ClientService.Hello; the first frame of a connection,
// answered before anything else is read. PUT body: chunk id (32) || envelope. GET body: chunk
// id (32); its OK response carries the envelope. A PUT's OK body is one byte, 1 when the
// chunk was new. Error responses carry a UTF-8 message. Pure: no I/O.

import { assert } from "../base/mod.ts";

export const CLIENT_FRAME_HEADER_BYTES = 12;
/** A node's client transport listens this far above its data-path gRPC port (9100 -> 9102). */
export const CLIENT_TRANSPORT_PORT_OFFSET = 2;
export const CLIENT_CHUNK_ID_BYTES = 32;
export const CLIENT_SESSION_BYTES = 32;
/**
 * Largest frame body: a chunk id and the envelope of the largest chunk a client cuts
 * (4 MiB, the CDC default maximum, well inside this) with header and tag.
 */
export const CLIENT_FRAME_BODY_BYTES_MAX = 16 * 1024 * 1024 + 1024;

export const CLIENT_OP_HELLO = 1;
export const CLIENT_OP_PUT = 2;
export const CLIENT_OP_GET = 3;

export const CLIENT_STATUS_OK = 0;
/** No such chunk (GET). */
export const CLIENT_STATUS_NOT_FOUND = 1;
/** The session may not touch this chunk, or there is no session: ask the metadata first. */
export const CLIENT_STATUS_FORBIDDEN = 2;
/** A malformed request; the connection closes after it. */
export const CLIENT_STATUS_INVALID = 3;
/** The node cannot serve it now (storage failing, shutting down): try another node. */
export const CLIENT_STATUS_UNAVAILABLE = 4;

export interface ClientFrame {
  kind: number;
  requestId: number;
  body: Uint8Array;
}

/** A frame's bytes: header and body in one array (one write). */
export function encodeClientFrame(
  kind: number,
  requestId: number,
  ...body: Uint8Array[]
): Uint8Array {
  const length = body.reduce((n, b) => n + b.length, 0);
  assert(length <= CLIENT_FRAME_BODY_BYTES_MAX, "client frame body within its maximum");
  assert(Number.isInteger(requestId) && requestId >= 0 && requestId <= 0xffff_ffff, "u32 id");
  const out = new Uint8Array(CLIENT_FRAME_HEADER_BYTES + length);
  const view = new DataView(out.buffer);
  view.setUint32(0, length);
  out[4] = kind;
  view.setUint32(8, requestId);
  let at = CLIENT_FRAME_HEADER_BYTES;
  for (const b of body) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** Bytes that are not client frames; the connection that sent them is closed. */
export class ClientFrameError extends Error {
  override name = "ClientFrameError";
}

/**
 * Cuts a byte stream into frames. Bytes are copied once, into the body of the frame they
 * belong to; a header naming a body over `bodyBytesMax` is refused before any is buffered.
 */
export class ClientFrameReader {
  readonly #bodyBytesMax: number;
  readonly #header = new Uint8Array(CLIENT_FRAME_HEADER_BYTES);
  #headerHave = 0;
  #body: Uint8Array | null = null;
  #bodyHave = 0;
  #kind = 0;
  #requestId = 0;

  constructor(bodyBytesMax = CLIENT_FRAME_BODY_BYTES_MAX) {
    this.#bodyBytesMax = bodyBytesMax;
  }

  /** Bytes buffered for a frame not yet complete. */
  get pendingBytes(): number {
    return this.#headerHave + this.#bodyHave;
  }

  /** Consumes `bytes`; returns the frames they completed. */
  push(bytes: Uint8Array): ClientFrame[] {
    const frames: ClientFrame[] = [];
    let at = 0;
    while (at < bytes.length) {
      if (this.#body === null) {
        const take = Math.min(CLIENT_FRAME_HEADER_BYTES - this.#headerHave, bytes.length - at);
        this.#header.set(bytes.subarray(at, at + take), this.#headerHave);
        this.#headerHave += take;
        at += take;
        if (this.#headerHave < CLIENT_FRAME_HEADER_BYTES) break;
        const view = new DataView(this.#header.buffer);
        const length = view.getUint32(0);
        if (length > this.#bodyBytesMax) {
          throw new ClientFrameError(
            `frame body of ${length} bytes exceeds the maximum ${this.#bodyBytesMax}`,
          );
        }
        if (this.#header[5] !== 0 || this.#header[6] !== 0 || this.#header[7] !== 0) {
          throw new ClientFrameError("frame header reserved bytes are not zero");
        }
        this.#kind = this.#header[4]!;
        this.#requestId = view.getUint32(8);
        this.#body = new Uint8Array(length);
        this.#bodyHave = 0;
        this.#headerHave = 0;
      }
      const body = this.#body;
      const take = Math.min(body.length - this.#bodyHave, bytes.length - at);
      body.set(bytes.subarray(at, at + take), this.#bodyHave);
      this.#bodyHave += take;
      at += take;
      if (this.#bodyHave === body.length) {
        frames.push({ kind: this.#kind, requestId: this.#requestId, body });
        this.#body = null;
        this.#bodyHave = 0;
      }
    }
    return frames;
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function utf8Body(message: string): Uint8Array {
  return encoder.encode(message.slice(0, 1024));
}

export function bodyText(body: Uint8Array): string {
  return decoder.decode(body);
}
