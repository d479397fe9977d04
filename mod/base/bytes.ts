// Byte-array helpers shared by every context.

import { assert } from "./assert.ts";

/** True when `a` and `b` hold the same bytes. Not constant-time: never for secrets. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A fresh array holding `parts` one after another. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Writes `value` (a non-negative safe integer) as a little-endian u64 at `offset`. */
export function setU64LE(view: DataView, offset: number, value: number): void {
  assert(Number.isSafeInteger(value) && value >= 0, "u64 field out of range");
  view.setUint32(offset, value % 0x1_0000_0000, true);
  view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
}

/** The little-endian u64 at `offset` (callers store only safe integers there). */
export function getU64LE(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * 0x1_0000_0000;
}
