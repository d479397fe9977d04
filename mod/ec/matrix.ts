// Coding matrices over GF(2^8): the Cauchy encode matrix exactly as ISA-L's
// gf_gen_cauchy1_matrix builds it, Gauss-Jordan inversion, and the decode rows that rebuild
// lost fragments from k survivors. Pure; matrices are row-major Uint8Arrays.

import { assert } from "../base/mod.ts";
import { gfInv, gfMul } from "./gf256.ts";

/**
 * The (k+m) x k encode matrix: identity over the data rows, then parity row i (k <= i < k+m)
 * holds 1 / (i XOR j) for column j. Rows and columns come from disjoint ranges, so i ^ j is
 * never 0, and every square sub-matrix of a Cauchy matrix is invertible: any k rows decode.
 */
export function cauchyEncodeMatrix(k: number, m: number): Uint8Array {
  assert(Number.isInteger(k) && Number.isInteger(m) && k >= 1 && m >= 1 && k + m <= 255);
  const n = k + m;
  const a = new Uint8Array(n * k);
  for (let i = 0; i < k; i++) a[k * i + i] = 1;
  let p = k * k;
  for (let i = k; i < n; i++) {
    for (let j = 0; j < k; j++) a[p++] = gfInv(i ^ j);
  }
  return a;
}

/** The inverse of the n x n matrix `input` (left untouched), or null when it is singular. */
export function invertMatrix(input: Uint8Array, n: number): Uint8Array | null {
  assert(input.length === n * n, "invertMatrix: input must be n x n");
  const a = input.slice();
  const out = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) out[i * n + i] = 1;
  for (let i = 0; i < n; i++) {
    if (a[i * n + i] === 0) {
      let j = i + 1;
      while (j < n && a[j * n + i] === 0) j++;
      if (j === n) return null;
      for (let c = 0; c < n; c++) {
        let t = a[i * n + c]!;
        a[i * n + c] = a[j * n + c]!;
        a[j * n + c] = t;
        t = out[i * n + c]!;
        out[i * n + c] = out[j * n + c]!;
        out[j * n + c] = t;
      }
    }
    const scale = gfInv(a[i * n + i]!);
    for (let c = 0; c < n; c++) {
      a[i * n + c] = gfMul(a[i * n + c]!, scale);
      out[i * n + c] = gfMul(out[i * n + c]!, scale);
    }
    for (let r = 0; r < n; r++) {
      const f = a[r * n + i]!;
      if (r === i || f === 0) continue;
      for (let c = 0; c < n; c++) {
        a[r * n + c]! ^= gfMul(f, a[i * n + c]!);
        out[r * n + c]! ^= gfMul(f, out[i * n + c]!);
      }
    }
  }
  return out;
}

/**
 * Rows (targets.length x k) that turn the k fragments `survivors` into the fragments
 * `targets`. A lost data fragment is a row of the inverted survivor matrix; a lost parity
 * fragment is its encode row times that inverse, i.e. re-encoding from the recovered data,
 * which is how scrub and repair rebuild parity without a second pass. Null when the
 * survivors do not span the data (cannot happen for a Cauchy matrix and distinct survivors).
 */
export function decodeMatrix(
  encodeMatrix: Uint8Array,
  k: number,
  m: number,
  survivors: readonly number[],
  targets: readonly number[],
): Uint8Array | null {
  const n = k + m;
  assert(encodeMatrix.length === n * k, "decodeMatrix: encode matrix must be (k+m) x k");
  assert(survivors.length === k, "decodeMatrix: exactly k survivors");
  const b = new Uint8Array(k * k);
  for (let r = 0; r < k; r++) {
    const s = survivors[r]!;
    assert(Number.isInteger(s) && s >= 0 && s < n, "decodeMatrix: survivor index");
    b.set(encodeMatrix.subarray(s * k, s * k + k), r * k);
  }
  const inverse = invertMatrix(b, k);
  if (inverse === null) return null;
  const out = new Uint8Array(targets.length * k);
  for (let t = 0; t < targets.length; t++) {
    const target = targets[t]!;
    assert(Number.isInteger(target) && target >= 0 && target < n, "decodeMatrix: target index");
    if (target < k) {
      out.set(inverse.subarray(target * k, target * k + k), t * k);
      continue;
    }
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let i = 0; i < k; i++) s ^= gfMul(inverse[i * k + j]!, encodeMatrix[target * k + i]!);
      out[t * k + j] = s;
    }
  }
  return out;
}
