// XDR (RFC 4506): the byte encoding of every ONC RPC program. Pure: no I/O, no clock. A reader
// over a received record throws XdrError on anything short, oversized or malformed, so a
// decoder never reads past its record or allocates what a client merely claims to send.

/** Malformed XDR input: the caller answers GARBAGE_ARGS (or its program's error). */
export class XdrError extends Error {
  override name = "XdrError";
}

const TEXT_DECODER = new TextDecoder("utf-8", { fatal: true });
const TEXT_ENCODER = new TextEncoder();

function pad4(n: number): number {
  return (4 - (n & 3)) & 3;
}

export class XdrReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #at: number;

  constructor(bytes: Uint8Array, offset = 0) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#at = offset;
  }

  get offset(): number {
    return this.#at;
  }

  /** A reader of the same bytes from the current offset (to look ahead without consuming). */
  fork(): XdrReader {
    return new XdrReader(this.#bytes, this.#at);
  }

  get remaining(): number {
    return this.#bytes.length - this.#at;
  }

  #need(n: number, what: string): void {
    if (n > this.#bytes.length - this.#at) {
      throw new XdrError(`${what}: needs ${n} bytes, ${this.remaining} left`);
    }
  }

  u32(): number {
    this.#need(4, "uint32");
    const v = this.#view.getUint32(this.#at);
    this.#at += 4;
    return v;
  }

  i32(): number {
    this.#need(4, "int32");
    const v = this.#view.getInt32(this.#at);
    this.#at += 4;
    return v;
  }

  /** A uint64 as a bigint (offsets, sizes, cookies and file ids on the wire). */
  u64(): bigint {
    this.#need(8, "uint64");
    const v = this.#view.getBigUint64(this.#at);
    this.#at += 8;
    return v;
  }

  /** A uint64 that must fit a safe integer (offsets and sizes the server can hold). */
  u64Number(what = "uint64"): number {
    const v = this.u64();
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new XdrError(`${what} ${v} is too large`);
    return Number(v);
  }

  bool(): boolean {
    const v = this.u32();
    if (v > 1) throw new XdrError(`bool is ${v}`);
    return v === 1;
  }

  /** Fixed-length opaque data (padded to four bytes); a view into the record. */
  fixed(n: number): Uint8Array {
    const padded = n + pad4(n);
    this.#need(padded, "opaque");
    const v = this.#bytes.subarray(this.#at, this.#at + n);
    this.#at += padded;
    return v;
  }

  /** Variable-length opaque data of at most `max` bytes; a view into the record. */
  opaque(max: number): Uint8Array {
    const n = this.u32();
    if (n > max) throw new XdrError(`opaque of ${n} bytes exceeds its maximum ${max}`);
    return this.fixed(n);
  }

  /** A UTF-8 string of at most `max` bytes. */
  string(max: number): string {
    const bytes = this.opaque(max);
    try {
      return TEXT_DECODER.decode(bytes);
    } catch {
      throw new XdrError("string is not UTF-8");
    }
  }

  /** `optional-data` (`*T`): a bool, then T when true. */
  optional<T>(read: () => T): T | null {
    return this.bool() ? read() : null;
  }

  /** Skips `n` bytes (padded). */
  skip(n: number): void {
    this.fixed(n);
  }

  /** Everything not yet read (a view). */
  rest(): Uint8Array {
    const v = this.#bytes.subarray(this.#at);
    this.#at = this.#bytes.length;
    return v;
  }
}

/** Builds XDR into a growing buffer; `finish()` returns the bytes written. */
export class XdrWriter {
  #bytes: Uint8Array;
  #view: DataView;
  #at = 0;

  constructor(initialBytes = 256) {
    this.#bytes = new Uint8Array(initialBytes);
    this.#view = new DataView(this.#bytes.buffer);
  }

  get length(): number {
    return this.#at;
  }

  #room(n: number): void {
    if (this.#at + n <= this.#bytes.length) return;
    let size = this.#bytes.length * 2;
    while (size < this.#at + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.#bytes.subarray(0, this.#at));
    this.#bytes = grown;
    this.#view = new DataView(grown.buffer);
  }

  u32(v: number): this {
    this.#room(4);
    this.#view.setUint32(this.#at, v >>> 0);
    this.#at += 4;
    return this;
  }

  i32(v: number): this {
    this.#room(4);
    this.#view.setInt32(this.#at, v | 0);
    this.#at += 4;
    return this;
  }

  u64(v: bigint | number): this {
    this.#room(8);
    this.#view.setBigUint64(this.#at, BigInt.asUintN(64, BigInt(v)));
    this.#at += 8;
    return this;
  }

  bool(v: boolean): this {
    return this.u32(v ? 1 : 0);
  }

  fixed(bytes: Uint8Array): this {
    const padded = bytes.length + pad4(bytes.length);
    this.#room(padded);
    this.#bytes.set(bytes, this.#at);
    this.#bytes.fill(0, this.#at + bytes.length, this.#at + padded);
    this.#at += padded;
    return this;
  }

  opaque(bytes: Uint8Array): this {
    this.u32(bytes.length);
    return this.fixed(bytes);
  }

  string(s: string): this {
    return this.opaque(TEXT_ENCODER.encode(s));
  }

  /** Overwrites the uint32 at `offset` (a count known only after its items). */
  patchU32(offset: number, v: number): void {
    this.#view.setUint32(offset, v >>> 0);
  }

  finish(): Uint8Array {
    return this.#bytes.subarray(0, this.#at);
  }
}
