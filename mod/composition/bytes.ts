// Big-endian byte writing and strict reading, shared by the payload codec and the view
// records. The reader never trusts a length before checking it against what is left and
// against the field's named maximum; every failure goes through the caller's `fail`.

import { assert } from "../base/mod.ts";

const encoder = new TextEncoder();
// fatal: malformed UTF-8 is an error, not U+FFFD; ignoreBOM: a leading BOM is kept as text.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Decodes UTF-8 strictly; null when the bytes are not valid UTF-8. */
export function fromUtf8(bytes: Uint8Array): string | null {
  try {
    return decoder.decode(bytes);
  } catch {
    return null;
  }
}

/** A growable big-endian buffer. */
export class ByteWriter {
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

  #reserve(n: number): number {
    const need = this.#at + n;
    if (need > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(need, this.#bytes.length * 2));
      grown.set(this.#bytes.subarray(0, this.#at));
      this.#bytes = grown;
      this.#view = new DataView(grown.buffer);
    }
    const at = this.#at;
    this.#at = need;
    return at;
  }

  u8(value: number): this {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xff, `u8 ${value}`);
    const at = this.#reserve(1);
    this.#bytes[at] = value;
    return this;
  }

  u16(value: number): this {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xffff, `u16 ${value}`);
    const at = this.#reserve(2);
    this.#view.setUint16(at, value);
    return this;
  }

  u32(value: number): this {
    assert(Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff, `u32 ${value}`);
    const at = this.#reserve(4);
    this.#view.setUint32(at, value);
    return this;
  }

  /** An unsigned 64-bit field holding a safe integer. */
  u64(value: number): this {
    assert(Number.isSafeInteger(value) && value >= 0, `u64 ${value} is not a safe integer`);
    const at = this.#reserve(8);
    this.#view.setUint32(at, Math.floor(value / 0x1_0000_0000));
    this.#view.setUint32(at + 4, value >>> 0);
    return this;
  }

  raw(bytes: Uint8Array): this {
    const at = this.#reserve(bytes.length); // may replace #bytes: reserve first
    this.#bytes.set(bytes, at);
    return this;
  }

  /** u16 length, then the bytes. */
  bytes16(bytes: Uint8Array): this {
    return this.u16(bytes.length).raw(bytes);
  }

  /** u32 length, then the bytes. */
  bytes32(bytes: Uint8Array): this {
    return this.u32(bytes.length).raw(bytes);
  }

  /** u16 length, then UTF-8. */
  string16(text: string): this {
    return this.bytes16(utf8(text));
  }

  /** A copy of what was written. */
  finish(): Uint8Array {
    return this.#bytes.slice(0, this.#at);
  }
}

/** Reads fields in order; any shortfall or out-of-range value calls `fail` (which throws). */
export class ByteReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #fail: (message: string) => never;
  #at = 0;

  constructor(bytes: Uint8Array, fail: (message: string) => never) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#fail = fail;
  }

  get remaining(): number {
    return this.#bytes.length - this.#at;
  }

  #take(n: number, what: string): number {
    if (n > this.remaining) {
      this.#fail(`${what}: needs ${n} bytes, ${this.remaining} left`);
    }
    const at = this.#at;
    this.#at += n;
    return at;
  }

  u8(what: string): number {
    return this.#bytes[this.#take(1, what)]!;
  }

  u16(what: string): number {
    return this.#view.getUint16(this.#take(2, what));
  }

  u32(what: string): number {
    return this.#view.getUint32(this.#take(4, what));
  }

  /** A u64 that must be a safe integer. */
  u64(what: string): number {
    const at = this.#take(8, what);
    const hi = this.#view.getUint32(at);
    if (hi > 0x1f_ffff) this.#fail(`${what}: ${hi} * 2^32 is beyond a safe integer`);
    return hi * 0x1_0000_0000 + this.#view.getUint32(at + 4);
  }

  /** Exactly `n` bytes (a copy). */
  raw(n: number, what: string): Uint8Array {
    const at = this.#take(n, what);
    return this.#bytes.slice(at, at + n);
  }

  bytes16(max: number, what: string): Uint8Array {
    const n = this.u16(`${what} length`);
    if (n > max) this.#fail(`${what} is ${n} bytes (max ${max})`);
    return this.raw(n, what);
  }

  bytes32(max: number, what: string): Uint8Array {
    const n = this.u32(`${what} length`);
    if (n > max) this.#fail(`${what} is ${n} bytes (max ${max})`);
    return this.raw(n, what);
  }

  string16(max: number, what: string): string {
    const text = fromUtf8(this.bytes16(max, what));
    if (text === null) this.#fail(`${what} is not valid UTF-8`);
    return text;
  }

  /** Fails unless every byte was consumed. */
  end(what: string): void {
    if (this.remaining !== 0) this.#fail(`${what}: ${this.remaining} trailing bytes`);
  }
}

export { bytesEqual, concatBytes, fromHex, toHex } from "../base/mod.ts";
