// HTTP/1.1 on one accepted connection, for the S3 listener: request heads parsed within named
// limits, keep-alive and pipelining, Content-Length and chunked request bodies, responses
// with a length or chunked, HEAD, Connection: close.
//
// Why not the runtime's server: Deno.serve (2.9.6) writes "100 Continue" as soon as it has
// read a head that asks for it, before any handler runs, so an upload the gateway refuses
// (no or a wrong signature, SlowDown) has already been told to send its body. Here "100
// Continue" goes out when the handler first reads the body, which the gateway does only
// after the signature in the head checked out; a refusal is the first answer the client
// sees, and the connection closes after it without reading the body.

import { assert } from "../base/mod.ts";
import type { S3HttpRequest } from "./request_body.ts";

/** Bytes of a request head (request line and headers) at most; past them: 431 (or 414). */
export const HTTP1_HEAD_BYTES_MAX = 64 * 1024;
/** Header fields of one request at most; past them: 431. */
export const HTTP1_HEADERS_MAX = 100;
/** Bytes of a chunk-size line (with its extensions) of a chunked body at most. */
export const HTTP1_CHUNK_LINE_BYTES_MAX = 4096;
/** Bytes of the trailer section of a chunked body at most. */
export const HTTP1_TRAILER_BYTES_MAX = 16 * 1024;
/** Bytes each read of a request body asks the socket for at most. */
export const HTTP1_BODY_READ_BYTES = 256 * 1024;
/**
 * A body read whole is read straight into one buffer of its Content-Length when that is at
 * most this; a larger claim is collected as it arrives, so a length alone allocates nothing.
 */
export const HTTP1_WHOLE_BODY_PREALLOCATED_BYTES_MAX = 8 * 1024 * 1024;
/** Bytes of the read buffer a connection starts with (it grows to hold a head). */
export const HTTP1_READ_BUFFER_BYTES = 16 * 1024;
/**
 * Unread request body a connection reads and drops after the answer to stay open; a larger
 * one (or one never asked for with 100 Continue) closes the connection instead.
 */
export const HTTP1_DRAIN_BYTES_MAX = 64 * 1024;
/**
 * A connection closed with request bytes unread keeps reading (and dropping) them this long
 * and this much at most after its last answer, so the close is a FIN and not a reset that
 * could take the answer with it before the client has read it.
 */
export const HTTP1_LINGER_MS = 2_000;
export const HTTP1_LINGER_BYTES_MAX = 4 * 1024 * 1024;
/**
 * A response body without a Content-Length is read up to this size to learn its length;
 * past it, it is sent chunked.
 */
export const HTTP1_BUFFERED_RESPONSE_BYTES_MAX = 64 * 1024;
/**
 * A response body (or its first chunk) up to this size is copied behind its head and sent
 * in one write; a larger one is written after the head as it is (a copy would cost more
 * than the second write).
 */
export const HTTP1_COMBINED_WRITE_BYTES_MAX = 16 * 1024;

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Payload Too Large",
  414: "URI Too Long",
  416: "Range Not Satisfiable",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  507: "Insufficient Storage",
};

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const OWS = /^[ \t]+|[ \t]+$/g;
/** Control characters other than tab: never in a header value or request target. */
// deno-lint-ignore no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const TARGET = /^[\x21-\x7e]+$/;
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
const LAST_CHUNK = new TextEncoder().encode("0\r\n\r\n");

export interface Http1Info {
  /** Settles once the response is written (or the connection failed); never rejects. */
  completed: Promise<void>;
}

export type Http1Handler = (request: S3HttpRequest, info: Http1Info) => Promise<Response>;

export interface Http1Options {
  handler: Http1Handler;
  /** The answer when the handler throws (the connection closes after it). */
  onError: (error: unknown) => Response;
  /** Host of the request URL when a request has no Host header. */
  defaultHost: string;
}

export interface Http1Connection {
  /** Settles when the connection is closed. */
  readonly finished: Promise<void>;
  /** Whether a request is between its head and the end of its answer. */
  readonly busy: boolean;
  /** Closes at once when idle or halfway through a head, else after the answer in progress. */
  close(): void;
}

/** A request head the connection refuses itself (malformed or too large). */
class HeadError extends Error {
  constructor(readonly status: 400 | 414 | 431, message: string) {
    super(message);
  }
}

/** The bytes 0x00..0xff of `buf[from, to)` as one character each (a ByteString). */
function byteString(buf: Uint8Array, from: number, to: number): string {
  let text = "";
  for (let i = from; i < to; i += 8192) {
    text += String.fromCharCode.apply(
      null,
      buf.subarray(i, Math.min(to, i + 8192)) as unknown as number[],
    );
  }
  return text;
}

/** Writes `text` (a ByteString: every character below 0x100) into `out` at `at`. */
function putByteString(text: string, out: Uint8Array, at: number): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    out[at++] = c < 0x100 ? c : 0x3f; // '?': the listener refuses such values before
  }
  return at;
}

let dateSecond = 0;
let dateText = "";
/** The Date header value, formatted once per second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/** How a request body is framed and how much of it is left. */
type Framing =
  | { kind: "length"; remaining: number }
  | { kind: "chunked"; chunkLeft: number; done: boolean };

/** The body of one request, read off the connection on demand. */
class BodySource {
  /** A read of the connection in progress (no other may start until it settles). */
  pending = false;
  /** The handler asked for bytes (or 100 Continue went out). */
  started = false;
  /** The answer has been written: nothing more is read for the handler. */
  detached = false;
  done = false;
  #stream: ReadableStream<Uint8Array> | null = null;

  constructor(
    private readonly conn: ConnectionState,
    readonly framing: Framing,
    readonly expectContinue: boolean,
  ) {
    if (framing.kind === "length" && framing.remaining === 0) this.done = true;
  }

  /** Whether the client still waits for 100 Continue before sending the body. */
  get awaitingContinue(): boolean {
    return this.expectContinue && !this.started && !this.done;
  }

  async #begin(): Promise<void> {
    if (this.detached) throw new Error("the request body was left unread before the answer");
    if (this.started) return;
    this.started = true;
    if (this.expectContinue && !this.done) await this.conn.write(CONTINUE);
  }

  /** The next bytes of the body, or null at its end. */
  async read(): Promise<Uint8Array | null> {
    await this.#begin();
    if (this.done) return null;
    assert(!this.pending, "one read of a request body at a time");
    this.pending = true;
    try {
      const chunk = this.framing.kind === "length"
        ? await this.#readLength(this.framing)
        : await this.#readChunked(this.framing);
      if (chunk === null) this.done = true;
      return chunk;
    } finally {
      this.pending = false;
    }
  }

  async #readLength(f: { remaining: number }): Promise<Uint8Array | null> {
    if (f.remaining === 0) return null;
    const chunk = await this.conn.readSome(Math.min(f.remaining, HTTP1_BODY_READ_BYTES));
    f.remaining -= chunk.length;
    if (f.remaining === 0) this.done = true;
    return chunk;
  }

  async #readChunked(
    f: { chunkLeft: number; done: boolean },
  ): Promise<Uint8Array | null> {
    if (f.done) return null;
    if (f.chunkLeft === 0) {
      const size = await this.conn.chunkSize();
      if (size === 0) {
        await this.conn.trailers();
        f.done = true;
        return null;
      }
      f.chunkLeft = size;
    }
    const chunk = await this.conn.readSome(Math.min(f.chunkLeft, HTTP1_BODY_READ_BYTES));
    f.chunkLeft -= chunk.length;
    if (f.chunkLeft === 0) await this.conn.expectCrlf();
    return chunk;
  }

  /** The whole body in one buffer (the caller bounds its size by its Content-Length). */
  async bytes(): Promise<Uint8Array<ArrayBuffer>> {
    if (this.#stream !== null && (this.#stream.locked || this.started)) {
      throw new TypeError("the request body is already being read");
    }
    await this.#begin();
    if (
      this.framing.kind === "length" && !this.done &&
      this.framing.remaining <= HTTP1_WHOLE_BODY_PREALLOCATED_BYTES_MAX
    ) {
      const out = new Uint8Array(this.framing.remaining);
      this.pending = true;
      try {
        await this.conn.readInto(out);
      } finally {
        this.pending = false;
      }
      this.framing.remaining = 0;
      this.done = true;
      return out;
    }
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let chunk = await this.read(); chunk !== null; chunk = await this.read()) {
      parts.push(chunk);
      total += chunk.length;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  get stream(): ReadableStream<Uint8Array> {
    if (this.#stream === null) {
      this.#stream = new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          const chunk = await this.read();
          if (chunk === null) controller.close();
          else controller.enqueue(chunk);
        },
      }, { highWaterMark: 0 });
    }
    return this.#stream;
  }

  /** Unread body bytes when known (a Content-Length body), else Infinity. */
  get unread(): number {
    if (this.done) return 0;
    return this.framing.kind === "length" ? this.framing.remaining : Infinity;
  }
}

/** The request the handler sees: what the gateway reads of a fetch Request, and no more. */
class Http1Request implements S3HttpRequest {
  constructor(
    readonly method: string,
    readonly url: string,
    readonly headers: Headers,
    readonly source: BodySource | null,
    /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
    readonly minor: number,
  ) {}

  get body(): ReadableStream<Uint8Array> | null {
    return this.source === null ? null : this.source.stream;
  }

  get bodyUsed(): boolean {
    return this.source !== null && this.source.started;
  }

  bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return this.source === null ? Promise.resolve(new Uint8Array(0)) : this.source.bytes();
  }
}

/** The read buffer and writer of one connection. */
class ConnectionState {
  buf = new Uint8Array(HTTP1_READ_BUFFER_BYTES);
  start = 0;
  end = 0;
  eof = false;

  constructor(readonly conn: Deno.Conn) {}

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  /** Reads more into the buffer; false at the end of the stream. */
  async fill(limit: number): Promise<boolean> {
    if (this.eof) return false;
    if (this.start === this.end) this.start = this.end = 0;
    if (this.end === this.buf.length) {
      if (this.start > 0) {
        this.buf.copyWithin(0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      } else {
        // Callers stop at their limit before the buffer holds more than it.
        const size = Math.min(this.buf.length * 2, limit + HTTP1_READ_BUFFER_BYTES);
        assert(size > this.buf.length, "a full read buffer is past its reader's limit");
        const grown = new Uint8Array(size);
        grown.set(this.buf.subarray(0, this.end));
        this.buf = grown;
      }
    }
    const n = await this.conn.read(this.buf.subarray(this.end));
    if (n === null) {
      this.eof = true;
      return false;
    }
    this.end += n;
    return true;
  }

  /** Up to `max` (> 0) bytes, from the buffer first, else in one read of the socket. */
  async readSome(max: number): Promise<Uint8Array> {
    if (this.start < this.end) {
      const n = Math.min(max, this.end - this.start);
      const out = this.buf.slice(this.start, this.start + n);
      this.start += n;
      return out;
    }
    if (this.eof) throw new Deno.errors.UnexpectedEof("connection closed before the body ended");
    const out = new Uint8Array(max);
    const n = await this.conn.read(out);
    if (n === null) {
      this.eof = true;
      throw new Deno.errors.UnexpectedEof("connection closed before the body ended");
    }
    // A short read keeps its own buffer only when it fills most of it.
    return n === max ? out : n >= max / 2 ? out.subarray(0, n) : out.slice(0, n);
  }

  /** Fills `out` exactly, from the buffer first, then straight from the socket. */
  async readInto(out: Uint8Array): Promise<void> {
    let at = Math.min(out.length, this.end - this.start);
    out.set(this.buf.subarray(this.start, this.start + at));
    this.start += at;
    while (at < out.length) {
      const n = this.eof ? null : await this.conn.read(out.subarray(at));
      if (n === null) {
        this.eof = true;
        throw new Deno.errors.UnexpectedEof("connection closed before the body ended");
      }
      at += n;
    }
  }

  /** One CRLF- (or LF-) terminated line of at most `max` bytes, without its ending. */
  async line(max: number, what: string): Promise<string> {
    // Bytes after `start` already searched: fill() may move the buffer's contents.
    let scanned = 0;
    while (true) {
      const from = this.start + scanned;
      const lf = this.buf.subarray(from, this.end).indexOf(10);
      if (lf >= 0) {
        const at = from + lf;
        const stop = at > this.start && this.buf[at - 1] === 13 ? at - 1 : at;
        const text = byteString(this.buf, this.start, stop);
        this.start = at + 1;
        return text;
      }
      if (this.end - this.start > max) throw new Error(`${what} longer than ${max} bytes`);
      scanned = this.end - this.start;
      if (!(await this.fill(max))) {
        throw new Deno.errors.UnexpectedEof("connection closed before the body ended");
      }
    }
  }

  async chunkSize(): Promise<number> {
    const line = await this.line(HTTP1_CHUNK_LINE_BYTES_MAX, "a chunk-size line");
    const hex = line.split(";", 1)[0]!.trim();
    if (!/^[0-9a-fA-F]{1,13}$/.test(hex)) throw new Error("malformed chunk size");
    return parseInt(hex, 16);
  }

  async expectCrlf(): Promise<void> {
    if ((await this.line(2, "a chunk ending")) !== "") throw new Error("chunk not ended by CRLF");
  }

  async trailers(): Promise<void> {
    let total = 0;
    while (true) {
      const line = await this.line(HTTP1_TRAILER_BYTES_MAX, "a trailer");
      if (line === "") return;
      total += line.length + 2;
      if (total > HTTP1_TRAILER_BYTES_MAX) throw new Error("trailers too large");
    }
  }

  /**
   * The end of a request head in the buffer (the index after its empty line), or -1.
   * Lines end with CRLF or a bare LF, as HTTP parsers commonly accept.
   */
  headEnd(from: number): number {
    const buf = this.buf;
    for (let i = Math.max(from, this.start); i < this.end; i++) {
      if (buf[i] !== 10) continue;
      if (i + 1 < this.end && buf[i + 1] === 10) return i + 2;
      if (i + 2 < this.end && buf[i + 1] === 13 && buf[i + 2] === 10) return i + 3;
    }
    return -1;
  }
}

interface Head {
  method: string;
  target: string;
  minor: number;
  headers: Headers;
}

/** Parses the head in `text` (its request line first, ending with an empty line). */
function parseHead(text: string): Head {
  const lines = text.split(/\r?\n/);
  const requestLine = lines[0]!;
  const sp1 = requestLine.indexOf(" ");
  const sp2 = requestLine.lastIndexOf(" ");
  if (sp1 <= 0 || sp2 <= sp1 + 1) throw new HeadError(400, "malformed request line");
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if (!TOKEN.test(method)) throw new HeadError(400, "malformed method");
  if (!TARGET.test(target)) throw new HeadError(400, "malformed request target");
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    throw new HeadError(400, "unsupported HTTP version");
  }
  // The head ends with an empty line: two empty strings after the split.
  const count = lines.length - 3;
  if (count > HTTP1_HEADERS_MAX) throw new HeadError(431, "too many header fields");
  const headers = new Headers();
  for (let i = 1; i <= count; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    // Headers.append() checks the name is a token; the value is trimmed of spaces and tabs.
    const value = line.slice(colon + 1).replace(OWS, "");
    if (colon <= 0 || BAD_VALUE.test(value)) throw new HeadError(400, "malformed header field");
    try {
      headers.append(name, value);
    } catch {
      throw new HeadError(400, "malformed header field");
    }
  }
  return { method, target, minor: version === "HTTP/1.1" ? 1 : 0, headers };
}

/** How the body of a request is framed; a HeadError when it cannot be told safely. */
function framingOf(head: Head): Framing | null {
  const te = head.headers.get("transfer-encoding");
  const cl = head.headers.get("content-length");
  if (te !== null) {
    // Both, or a coding other than chunked alone: where the body ends is ambiguous.
    if (cl !== null || head.minor === 0 || te.trim().toLowerCase() !== "chunked") {
      throw new HeadError(400, "unsupported transfer-encoding");
    }
    return { kind: "chunked", chunkLeft: 0, done: false };
  }
  if (cl === null) return null;
  // Repeated fields arrive joined by ", ": all must agree.
  const values = cl.split(",").map((v) => v.trim());
  if (values.some((v) => v !== values[0]) || !/^\d{1,15}$/.test(values[0]!)) {
    throw new HeadError(400, "malformed content-length");
  }
  return { kind: "length", remaining: Number(values[0]) };
}

/** A response of the connection itself (no handler saw the request). */
function plainResponse(status: number): Uint8Array {
  return new TextEncoder().encode(
    `HTTP/1.1 ${status} ${REASONS[status] ?? ""}\r\ncontent-length: 0\r\nconnection: close\r\n` +
      `date: ${httpDate()}\r\n\r\n`,
  );
}

/** Serves HTTP/1.1 on `conn` until either side closes it. */
export function serveHttp1(conn: Deno.Conn, options: Http1Options): Http1Connection {
  // A head written apart from its body, or a body's last short segment, must not wait for
  // the client's delayed ACK (Nagle's algorithm).
  try {
    (conn as Deno.TcpConn).setNoDelay?.(true);
  } catch { /* not TCP, or already closed */ }
  const state = new ConnectionState(conn);
  let busy = false;
  let closing = false;
  let closed = false;

  const closeNow = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch { /* already gone */ }
  };

  /** Reads and drops what the client still sends, within bounds, then closes. */
  const linger = async () => {
    try {
      await conn.closeWrite();
    } catch {
      return closeNow();
    }
    const timer = setTimeout(closeNow, HTTP1_LINGER_MS);
    try {
      const scratch = new Uint8Array(64 * 1024);
      let dropped = 0;
      while (!closed && dropped < HTTP1_LINGER_BYTES_MAX) {
        const n = await conn.read(scratch);
        if (n === null) break;
        dropped += n;
      }
    } catch { /* closed by the timer, or reset */ }
    clearTimeout(timer);
    closeNow();
  };

  /** Writes the answer to `request`; whether the connection can serve another request. */
  const respond = async (
    request: Http1Request,
    response: Response,
    keepAlive: boolean,
  ): Promise<boolean> => {
    const source = request.source;
    const status = response.status;
    const noBody = request.method === "HEAD" || status === 204 || status === 304 ||
      status < 200;
    const wantsClose = response.headers.get("connection")?.toLowerCase().includes("close");
    // Whatever of the request body is unread stays unread: a small rest is dropped to keep
    // the connection, else it closes (and a client waiting for 100 Continue never got it).
    if (source !== null) source.detached = true;
    const unread = source === null ? 0 : source.unread;
    const drain = source !== null && unread > 0 && !source.pending &&
      !source.awaitingContinue && unread <= HTTP1_DRAIN_BYTES_MAX;
    let keep = keepAlive && !closing && !wantsClose && (unread === 0 || drain);

    let body: Uint8Array | null = null;
    let stream: ReadableStreamDefaultReader<Uint8Array> | null = null;
    let first: Uint8Array | null = null;
    let length = -1; // -1: chunked
    const lengthHeader = response.headers.get("content-length");
    const declared = lengthHeader !== null && /^\d{1,15}$/.test(lengthHeader) ? lengthHeader : null;
    if (noBody) {
      // HEAD answers with the object's length and nothing after the head.
      await response.body?.cancel().catch(() => {});
    } else if (declared !== null && Number(declared) <= HTTP1_COMBINED_WRITE_BYTES_MAX) {
      body = await response.bytes();
    } else if (declared !== null) {
      length = Number(declared);
      stream = response.body?.getReader() ?? null;
      if (stream === null) body = new Uint8Array(0);
      else {
        const r = await stream.read();
        first = r.done ? new Uint8Array(0) : r.value;
      }
    } else if (response.body === null) {
      body = new Uint8Array(0);
    } else {
      // No length given: read up to the buffered bound to find it, else send it chunked.
      stream = response.body.getReader();
      const parts: Uint8Array[] = [];
      let total = 0;
      let ended = false;
      // One read past the bound too: a body given whole (an XML string) comes as one chunk
      // of any size, and its end tells its length.
      let reads = 0;
      while (total <= HTTP1_BUFFERED_RESPONSE_BYTES_MAX || reads === 1) {
        const r = await stream.read();
        reads++;
        if (r.done) {
          ended = true;
          break;
        }
        parts.push(r.value);
        total += r.value.length;
      }
      first = parts.length === 1 ? parts[0]! : new Uint8Array(total);
      if (parts.length > 1) {
        let at = 0;
        for (const p of parts) {
          first.set(p, at);
          at += p.length;
        }
      }
      if (ended) {
        body = first;
        first = null;
        stream = null;
      } else if (request.minor === 0) {
        keep = false; // HTTP/1.0 has no chunked: the close ends the body
        length = -2;
      }
    }

    let head = `HTTP/1.1 ${status} ${response.statusText || REASONS[status] || "Status"}\r\n`;
    response.headers.forEach((value, name) => {
      if (
        name === "content-length" || name === "connection" || name === "transfer-encoding" ||
        name === "keep-alive" || name === "date"
      ) return;
      head += `${name}: ${value}\r\n`;
    });
    head += `date: ${httpDate()}\r\n`;
    if (noBody) {
      // HEAD: the length a GET would have (0 when the answer does not say), as hyper does.
      if (request.method === "HEAD") head += `content-length: ${declared ?? 0}\r\n`;
    } else if (body !== null) {
      head += `content-length: ${body.length}\r\n`;
    } else if (length >= 0) {
      head += `content-length: ${length}\r\n`;
    } else if (length === -1) {
      head += "transfer-encoding: chunked\r\n";
    }
    if (!keep) head += "connection: close\r\n";
    else if (request.minor === 0) head += "connection: keep-alive\r\n";
    head += "\r\n";

    // The head, and behind it the body or its first chunk when that is small.
    let behind = body ?? first;
    if (behind !== null && behind.length > HTTP1_COMBINED_WRITE_BYTES_MAX) behind = null;
    if (behind !== null && length === -1) behind = null; // a chunk needs its framing
    const out = new Uint8Array(head.length + (behind?.length ?? 0));
    const at = putByteString(head, out, 0);
    if (behind !== null) out.set(behind, at);
    await state.write(out);
    if (body !== null && behind === null && body.length > 0) await state.write(body);
    let sentBefore = 0;
    if (first !== null && behind === first) {
      sentBefore = first.length;
      first = null;
    }

    if (stream !== null) {
      try {
        keep = await writeStream(stream, first, sentBefore, length) && keep;
      } catch (e) {
        await stream.cancel(e).catch(() => {});
        throw e;
      }
    }
    if (keep && drain) {
      source!.detached = false;
      source!.started = true; // no 100 Continue for a body being dropped
      while ((await source!.read()) !== null) { /* dropped */ }
    }
    return keep;
  };

  /** Streams a response body; false when it did not end where its length said. */
  const writeStream = async (
    reader: ReadableStreamDefaultReader<Uint8Array>,
    first: Uint8Array | null,
    sentBefore: number,
    length: number,
  ): Promise<boolean> => {
    let sent = sentBefore;
    let next: Promise<ReadableStreamReadResult<Uint8Array>> = first === null
      ? reader.read()
      : Promise.resolve({ done: false, value: first });
    while (true) {
      const r = await next;
      if (r.done) break;
      // The next chunk is being made while this one is written.
      next = reader.read();
      next.catch(() => {});
      const chunk = r.value;
      if (length >= 0 && sent + chunk.length > length) {
        // The body is longer than its Content-Length: stop where the length ends.
        await state.write(chunk.subarray(0, length - sent));
        await reader.cancel().catch(() => {});
        return false;
      }
      await writeChunk(chunk, length);
      sent += chunk.length;
    }
    if (length === -1) await state.write(LAST_CHUNK);
    // A body shorter than its Content-Length cannot be completed: the close tells the client.
    return length < 0 || sent === length;
  };

  const writeChunk = async (chunk: Uint8Array, length: number) => {
    if (chunk.length === 0) return;
    if (length !== -1) return await state.write(chunk);
    const size = `${chunk.length.toString(16)}\r\n`;
    const framed = new Uint8Array(size.length + chunk.length + 2);
    putByteString(size, framed, 0);
    framed.set(chunk, size.length);
    framed[framed.length - 2] = 13;
    framed[framed.length - 1] = 10;
    await state.write(framed);
  };

  const run = async () => {
    let lingerAfter = false;
    try {
      while (!closing) {
        // The head: skip empty lines before it, then read until its empty line.
        // `scanned`: bytes after `start` already searched (fill() may move the buffer).
        let scanned = 0;
        let end = -1;
        while (true) {
          while (
            state.start < state.end &&
            (state.buf[state.start] === 13 || state.buf[state.start] === 10)
          ) {
            state.start++;
            scanned = Math.max(0, scanned - 1);
          }
          end = state.headEnd(state.start + Math.max(0, scanned - 2));
          if (end >= 0) break;
          if (state.end - state.start > HTTP1_HEAD_BYTES_MAX) break;
          scanned = state.end - state.start;
          if (!(await state.fill(HTTP1_HEAD_BYTES_MAX))) return;
        }
        let head: Head;
        let framing: Framing | null;
        try {
          if (end < 0 || end - state.start > HTTP1_HEAD_BYTES_MAX) {
            const lf = state.buf.subarray(state.start, state.end).indexOf(10);
            // The request line alone past the bound: the URI is what is too long.
            const uriTooLong = lf < 0 || lf >= HTTP1_HEAD_BYTES_MAX;
            throw new HeadError(uriTooLong ? 414 : 431, "request head too large");
          }
          head = parseHead(byteString(state.buf, state.start, end));
          framing = framingOf(head);
        } catch (e) {
          if (!(e instanceof HeadError)) throw e;
          busy = true;
          await state.write(plainResponse(e.status));
          lingerAfter = true;
          return;
        }
        state.start = end;
        busy = true;

        const connection = head.headers.get("connection")?.toLowerCase() ?? "";
        const keepAlive = head.minor === 1
          ? !connection.includes("close")
          : connection.includes("keep-alive");
        const expect = head.minor === 1 &&
          head.headers.get("expect")?.trim().toLowerCase() === "100-continue";
        const source = framing === null ? null : new BodySource(state, framing, expect);
        const host = head.headers.get("host") ?? options.defaultHost;
        const url = head.target.startsWith("/")
          ? `http://${host}${head.target}`
          : /^https?:\/\//i.test(head.target)
          ? head.target
          : `http://${host}/${head.target}`;
        const request = new Http1Request(head.method, url, head.headers, source, head.minor);

        let settle: () => void = () => {};
        const completed = new Promise<void>((r) => (settle = r));
        let keep = false;
        try {
          let response: Response;
          let failed = false;
          try {
            response = await options.handler(request, { completed });
          } catch (e) {
            response = options.onError(e);
            failed = true;
          }
          keep = await respond(request, response, keepAlive && !failed) && !failed;
        } finally {
          settle();
          busy = false;
        }
        if (!keep) {
          lingerAfter = source !== null && source.unread > 0 && !source.pending;
          return;
        }
      }
    } catch {
      // The client went away or sent what cannot be framed: the connection ends.
    } finally {
      busy = false;
      if (lingerAfter && !closed) await linger();
      else closeNow();
    }
  };

  const finished = run();
  return {
    finished,
    get busy() {
      return busy;
    },
    close() {
      closing = true;
      if (!busy) closeNow();
    },
  };
}
