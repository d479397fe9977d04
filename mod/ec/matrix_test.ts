import { Prng } from "../base/mod.ts";
import { gfInv, gfMul } from "./gf256.ts";
import { cauchyEncodeMatrix, decodeMatrix, invertMatrix } from "./matrix.ts";

function fail(message: string): never {
  throw new Error(message);
}

function multiply(
  a: Uint8Array,
  b: Uint8Array,
  rows: number,
  inner: number,
  cols: number,
): Uint8Array {
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      let s = 0;
      for (let i = 0; i < inner; i++) s ^= gfMul(a[r * inner + i]!, b[i * cols + c]!);
      out[r * cols + c] = s;
    }
  }
  return out;
}

function isIdentity(a: Uint8Array, n: number): boolean {
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (a[r * n + c] !== (r === c ? 1 : 0)) return false;
  }
  return true;
}

Deno.test("cauchyEncodeMatrix() is identity over 1 / (i ^ j), as gf_gen_cauchy1_matrix", () => {
  // 4+2 rows 4 and 5 written out from ISA-L's definition: 1/(4^j) and 1/(5^j).
  const a = cauchyEncodeMatrix(4, 2);
  const expected = [
    [1, 0, 0, 0],
    [0, 1, 0, 0],
    [0, 0, 1, 0],
    [0, 0, 0, 1],
    [gfInv(4), gfInv(5), gfInv(6), gfInv(7)],
    [gfInv(5), gfInv(4), gfInv(7), gfInv(6)],
  ].flat();
  for (let i = 0; i < expected.length; i++) {
    if (a[i] !== expected[i]) fail(`entry ${i}: ${a[i]} != ${expected[i]}`);
  }
  // 1/4 in GF(2^8)/0x11d is 0x47 (4 * 0x47 = 0x11c ^ 0x11d = 1).
  if (a[16] !== 0x47) fail(`1/4 = ${a[16]}`);
});

Deno.test("invertMatrix() inverts random matrices and returns null for singular ones", () => {
  const prng = new Prng(11);
  let inverted = 0;
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + prng.nextInt(12);
    const a = prng.bytes(n * n);
    const before = a.slice();
    const inv = invertMatrix(a, n);
    if (a.some((x, i) => x !== before[i])) fail("input was modified");
    if (inv === null) continue;
    inverted++;
    if (!isIdentity(multiply(a, inv, n, n, n), n)) fail(`A * inv(A) != I for n=${n}`);
  }
  if (inverted < 150) fail(`only ${inverted} of 200 random matrices inverted`);
  // Two equal rows: singular.
  if (invertMatrix(Uint8Array.of(3, 7, 3, 7), 2) !== null) fail("singular matrix inverted");
  // A zero pivot that needs a row swap.
  const swapped = invertMatrix(Uint8Array.of(0, 1, 1, 0), 2);
  if (swapped === null || !isIdentity(multiply(Uint8Array.of(0, 1, 1, 0), swapped, 2, 2, 2), 2)) {
    fail("row swap");
  }
});

Deno.test("decodeMatrix() rows times the survivor rows give the target encode rows", () => {
  for (const [k, m] of [[4, 2], [8, 3], [10, 4]] as const) {
    const enc = cauchyEncodeMatrix(k, m);
    const prng = new Prng(k * 10 + m);
    for (let trial = 0; trial < 50; trial++) {
      const order = Array.from({ length: k + m }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = prng.nextInt(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const lost = order.slice(0, m).sort((a, b) => a - b);
      const survivors = order.slice(m).sort((a, b) => a - b).slice(0, k);
      const rows = decodeMatrix(enc, k, m, survivors, lost);
      if (rows === null) fail("Cauchy survivors were singular");
      const b = new Uint8Array(k * k);
      survivors.forEach((s, r) => b.set(enc.subarray(s * k, s * k + k), r * k));
      const product = multiply(rows, b, lost.length, k, k);
      lost.forEach((t, r) => {
        for (let c = 0; c < k; c++) {
          if (product[r * k + c] !== enc[t * k + c]) fail(`${k}+${m} target ${t} column ${c}`);
        }
      });
    }
  }
});
