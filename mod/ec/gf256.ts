// Arithmetic in GF(2^8) with the reducing polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d) and
// generator 2: the field ISA-L uses, so the TypeScript twin and the shim agree on every
// byte. Pure; the tables are built once when the module loads (about 66 KiB).

/** The reducing polynomial, including the x^8 term. */
export const GF256_POLYNOMIAL = 0x11d;

/** Non-zero elements; every one is a power of the generator. */
const GROUP_ORDER = 255;

/** exp[i] = 2^i, doubled in length so exp[log a + log b] needs no modulo. */
const EXP = new Uint8Array(GROUP_ORDER * 2);
/** log[a] for a != 0; log[0] is never read. */
const LOG = new Uint8Array(256);

{
  let x = 1;
  for (let i = 0; i < GROUP_ORDER; i++) {
    EXP[i] = x;
    EXP[i + GROUP_ORDER] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= GF256_POLYNOMIAL;
  }
}

/** a * b in GF(2^8). */
export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a]! + LOG[b]!]!;
}

/** 1 / a in GF(2^8); like ISA-L's gf_inv, 0 maps to 0 (callers never invert 0). */
export function gfInv(a: number): number {
  if (a === 0) return 0;
  return EXP[GROUP_ORDER - LOG[a]!]!;
}

/**
 * MUL_TABLE[c * 256 + x] = c * x. The coding loops read one 256-byte row per coefficient,
 * which keeps a k x m code's working set (k * m rows) inside L1.
 */
export const MUL_TABLE: Uint8Array = new Uint8Array(256 * 256);
for (let c = 1; c < 256; c++) {
  for (let x = 1; x < 256; x++) MUL_TABLE[c * 256 + x] = gfMul(c, x);
}

/** The 256-entry row of MUL_TABLE for coefficient `c` (a view, not a copy). */
export function mulRow(c: number): Uint8Array {
  return MUL_TABLE.subarray(c * 256, c * 256 + 256);
}
