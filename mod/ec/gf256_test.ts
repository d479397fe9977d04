import { GF256_POLYNOMIAL, gfInv, gfMul, MUL_TABLE, mulRow } from "./gf256.ts";

function assertEquals(actual: unknown, expected: unknown, what: string): void {
  if (actual !== expected) throw new Error(`${what}: ${actual} !== ${expected}`);
}

/** Carry-less multiply reduced by 0x11d, bit by bit: an oracle independent of the tables. */
function slowMul(a: number, b: number): number {
  let product = 0;
  for (let i = 0; i < 8; i++) if (b & (1 << i)) product ^= a << i;
  for (let bit = 15; bit >= 8; bit--) {
    if (product & (1 << bit)) product ^= GF256_POLYNOMIAL << (bit - 8);
  }
  return product;
}

Deno.test("gfMul() agrees with bitwise multiplication modulo 0x11d for every pair", () => {
  for (let a = 0; a < 256; a++) {
    for (let b = 0; b < 256; b++) assertEquals(gfMul(a, b), slowMul(a, b), `${a}*${b}`);
  }
  // The reduction ISA-L documents: x^7 * x = x^8 = x^4 + x^3 + x^2 + 1.
  assertEquals(gfMul(0x80, 2), 0x1d, "0x80*2");
});

Deno.test("gfInv() is a multiplicative inverse and maps 0 to 0 like ISA-L", () => {
  assertEquals(gfInv(0), 0, "inv(0)");
  for (let a = 1; a < 256; a++) assertEquals(gfMul(a, gfInv(a)), 1, `a*inv(a), a=${a}`);
});

Deno.test("MUL_TABLE and mulRow() hold c * x at [c * 256 + x]", () => {
  for (let c = 0; c < 256; c++) {
    const row = mulRow(c);
    assertEquals(row.length, 256, "row length");
    for (let x = 0; x < 256; x++) {
      assertEquals(MUL_TABLE[c * 256 + x], gfMul(c, x), `table ${c}*${x}`);
      assertEquals(row[x], gfMul(c, x), `row ${c}*${x}`);
    }
  }
});
