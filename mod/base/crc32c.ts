// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 and
// SCTP: detects torn and corrupted records on disk and on the wire. crc32c() calls whichever
// implementation the role installed (ISA-L through ffi/ec), else the pure TypeScript twin
// here, slicing-by-8 with tables built once at load. This module never imports ffi.

const POLYNOMIAL = 0x82f63b78;
const SLICES = 8;

const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256 * SLICES);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL : c >>> 1;
    table[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    let c = table[n]!;
    for (let s = 1; s < SLICES; s++) {
      c = (table[c & 0xff]! ^ (c >>> 8)) >>> 0;
      table[s * 256 + n] = c;
    }
  }
  return table;
})();

/** A CRC-32C implementation: `previous` continues an earlier result, the result is a uint32. */
export type Crc32cFunction = (bytes: Uint8Array, previous: number) => number;

/** Which implementation crc32c() calls, and why it was chosen. */
export interface Crc32cImplementation {
  /** "typescript" for the pure twin, else the installer's label (e.g. "isa-l"). */
  name: string;
  reason: string;
}

/** The pure TypeScript twin: the default, the fallback, and the reference in tests. */
export function crc32cPure(bytes: Uint8Array, previous = 0): number {
  const t = TABLE;
  let crc = ~previous >>> 0;
  let i = 0;
  const end8 = bytes.length - (bytes.length % 8);
  for (; i < end8; i += 8) {
    const lo = (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)) ^
      crc;
    crc = t[1792 + (lo & 0xff)]! ^
      t[1536 + ((lo >>> 8) & 0xff)]! ^
      t[1280 + ((lo >>> 16) & 0xff)]! ^
      t[1024 + (lo >>> 24)]! ^
      t[768 + bytes[i + 4]!]! ^
      t[512 + bytes[i + 5]!]! ^
      t[256 + bytes[i + 6]!]! ^
      t[bytes[i + 7]!]!;
  }
  for (; i < bytes.length; i++) crc = t[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

let impl: Crc32cFunction = crc32cPure;
let active: Crc32cImplementation = {
  name: "typescript",
  reason: "default (no native implementation installed)",
};

/**
 * CRC-32C of `bytes`. Pass the result of an earlier call as `previous` to continue over
 * concatenated input: `crc32c(b, crc32c(a)) === crc32c(concat(a, b))`.
 */
export function crc32c(bytes: Uint8Array, previous = 0): number {
  return impl(bytes, previous);
}

/**
 * Makes crc32c() call `fn` from now on; for composition roots only. `fn` must agree with
 * crc32cPure() on every input (tests/conformance/crc32c_test.ts), because records written
 * under one implementation are verified under the other after a restart.
 */
export function installCrc32c(fn: Crc32cFunction, name: string, reason: string): void {
  impl = fn;
  active = { name, reason };
}

/** The implementation crc32c() currently calls. */
export function crc32cImplementation(): Crc32cImplementation {
  return { ...active };
}
