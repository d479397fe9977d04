import { Prng } from "../base/mod.ts";
import { gfMul } from "./gf256.ts";
import { codeRows, TypeScriptCodecFactory } from "./typescript_codec.ts";

function fail(message: string): never {
  throw new Error(message);
}

/** Byte-at-a-time oracle for codeRows(). */
function slowCodeRows(coef: Uint8Array, k: number, rows: number, src: Uint8Array[], len: number) {
  return Array.from({ length: rows }, (_, r) => {
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s ^= gfMul(coef[r * k + j]!, src[j]![i]!);
      out[i] = s;
    }
    return out;
  });
}

Deno.test("codeRows() equals the byte oracle for aligned, unaligned, zero and odd-count rows", () => {
  const prng = new Prng(5);
  for (
    const [k, rows, len, offset] of [
      [1, 1, 9, 0],
      [3, 2, 64, 0],
      [4, 3, 67, 1],
      [5, 2, 4096, 0],
      [7, 4, 1003, 2],
    ] as const
  ) {
    const coef = prng.bytes(rows * k);
    coef[0] = 0; // a zero coefficient is skipped
    if (rows > 1) coef.fill(0, k, 2 * k); // an all-zero row clears its output
    const src = Array.from({ length: k }, () => prng.bytes(len + offset).subarray(offset));
    const dst = Array.from({ length: rows }, () => prng.bytes(len + offset).subarray(offset));
    codeRows(coef, k, rows, src, dst, len);
    const expected = slowCodeRows(coef, k, rows, src, len);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < len; i++) {
        if (dst[r]![i] !== expected[r]![i]) {
          fail(`k=${k} len=${len} off=${offset} row ${r} byte ${i}`);
        }
      }
    }
  }
});

Deno.test("TypeScriptCodecFactory reports typescript with its reason and reuses tables", () => {
  const f = new TypeScriptCodecFactory("KISEKI_FFI=off");
  if (f.implementation !== "typescript" || f.reason !== "KISEKI_FFI=off") fail("identity");
  const a = f.create({ k: 3, m: 2 });
  const b = f.create({ k: 3, m: 2 });
  if (a.k !== 3 || a.m !== 2 || a.implementation !== "typescript") fail("codec shape");
  const data = [Uint8Array.of(1, 2), Uint8Array.of(3, 4), Uint8Array.of(5, 6)];
  const pa = [new Uint8Array(2), new Uint8Array(2)];
  const pb = [new Uint8Array(2), new Uint8Array(2)];
  a.encode(data, pa);
  b.encode(data, pb);
  if (pa.some((p, i) => p[0] !== pb[i]![0] || p[1] !== pb[i]![1])) fail("codecs disagree");
});
