// The pure TypeScript twin of the ISA-L shim: the same Cauchy matrix, the same field, so the
// same parity bytes, using 256-entry multiply rows and 32-bit words. It runs wherever the
// shim is not built (or KISEKI_FFI=off) and is the reference the shim is tested against.

import { assert } from "../base/mod.ts";
import {
  asyncThresholdBytes,
  BoundedLru,
  carveFragments,
  checkEncodeArgs,
  checkGeometry,
  EC_DECODE_TABLES_BYTES_MAX,
  EC_DECODE_TABLES_ENTRIES_MAX,
  EC_GEOMETRIES_CACHED_MAX,
  type ErasureCodec,
  type ErasureCodecFactory,
  type ErasureCodecOptions,
  fragmentStride,
  planReconstruct,
} from "./codec.ts";
import { mulRow } from "./gf256.ts";
import { cauchyEncodeMatrix, decodeMatrix } from "./matrix.ts";

/** Coefficients shared by every codec of one (k, m): encode rows and decode rows per pattern. */
interface TypeScriptTables {
  k: number;
  m: number;
  /** (k+m) x k encode matrix; rows k.. are the parity coefficients. */
  matrix: Uint8Array;
  parityRows: Uint8Array;
  /** Decode coefficient rows keyed by ReconstructPlan.key. */
  decode: BoundedLru<Uint8Array>;
}

export class TypeScriptCodec implements ErasureCodec {
  readonly implementation = "typescript" as const;
  readonly k: number;
  readonly m: number;
  readonly #tables: TypeScriptTables;

  constructor(tables: TypeScriptTables) {
    this.#tables = tables;
    this.k = tables.k;
    this.m = tables.m;
  }

  encode(data: readonly Uint8Array[], parity: readonly Uint8Array[]): void {
    const length = checkEncodeArgs(this.k, this.m, data, parity);
    codeRows(this.#tables.parityRows, this.k, this.m, data, parity, length);
  }

  /** Runs on the event loop: there is no thread to hand pure TypeScript work to. */
  encodeAsync(data: readonly Uint8Array[], parity: readonly Uint8Array[]): Promise<void> {
    try {
      this.encode(data, parity);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  reconstruct(
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): void {
    const { k, m } = this;
    const plan = planReconstruct(k, m, fragments, targets);
    if (plan === null) return;
    const t = this.#tables;
    let rows = t.decode.get(plan.key);
    if (rows === undefined) {
      const computed = decodeMatrix(t.matrix, k, m, plan.survivors, plan.targets);
      // Any k distinct rows of a Cauchy encode matrix are independent.
      assert(computed !== null, `Cauchy survivor matrix ${plan.survivors} is singular`);
      t.decode.set(plan.key, computed, computed.byteLength);
      rows = computed;
    }
    const sources = plan.survivors.map((i) => fragments[i]!);
    const dests = plan.targets.map((i) => targets.get(i)!);
    codeRows(rows, k, plan.targets.length, sources, dests, plan.length);
  }

  reconstructAsync(
    fragments: readonly (Uint8Array | null)[],
    targets: ReadonlyMap<number, Uint8Array>,
  ): Promise<void> {
    try {
      this.reconstruct(fragments, targets);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

export class TypeScriptCodecFactory implements ErasureCodecFactory {
  readonly implementation = "typescript" as const;
  readonly reason: string;
  readonly #tables = new BoundedLru<TypeScriptTables>(EC_GEOMETRIES_CACHED_MAX, Infinity);

  constructor(reason = "pure TypeScript twin requested") {
    this.reason = reason;
  }

  create(options: ErasureCodecOptions): ErasureCodec {
    checkGeometry(options);
    asyncThresholdBytes(options); // validated for parity with the shim; unused here
    const { k, m } = options;
    const key = `${k}+${m}`;
    let tables = this.#tables.get(key);
    if (tables === undefined) {
      const matrix = cauchyEncodeMatrix(k, m);
      tables = {
        k,
        m,
        matrix,
        parityRows: matrix.subarray(k * k),
        decode: new BoundedLru(EC_DECODE_TABLES_ENTRIES_MAX, EC_DECODE_TABLES_BYTES_MAX),
      };
      this.#tables.set(key, tables, matrix.byteLength);
    }
    return new TypeScriptCodec(tables);
  }

  /** Offsets are multiples of 64, so every fragment takes the Uint32 path. */
  allocateFragments(count: number, length: number): Uint8Array[] {
    const stride = fragmentStride(count, length);
    return carveFragments(new Uint8Array(count * stride), 0, stride, count, length);
  }
}

/**
 * dests[r] = sum over j of coefficients[r*k + j] * sources[j], byte-wise in GF(2^8).
 * Aligned buffers go four bytes per step through Uint32 views (byte order does not matter:
 * each byte is looked up and put back in its own lane); sources are taken two per pass to
 * halve the read-modify-write traffic on the destination; zero coefficients are skipped.
 */
export function codeRows(
  coefficients: Uint8Array,
  k: number,
  rows: number,
  sources: readonly Uint8Array[],
  dests: readonly Uint8Array[],
  length: number,
): void {
  assert(coefficients.length >= rows * k, "codeRows: coefficient rows");
  let aligned = true;
  for (let j = 0; j < k; j++) aligned &&= (sources[j]!.byteOffset & 3) === 0;
  for (let r = 0; r < rows; r++) aligned &&= (dests[r]!.byteOffset & 3) === 0;
  const words = aligned ? length >>> 2 : 0;
  const tail = words << 2;
  const sourceWords: Uint32Array[] = [];
  if (words > 0) {
    for (let j = 0; j < k; j++) {
      const s = sources[j]!;
      sourceWords.push(new Uint32Array(s.buffer, s.byteOffset, words));
    }
  }
  const terms: number[] = [];
  for (let r = 0; r < rows; r++) {
    const d = dests[r]!;
    terms.length = 0;
    for (let j = 0; j < k; j++) if (coefficients[r * k + j] !== 0) terms.push(j);
    if (terms.length === 0) {
      d.fill(0);
      continue;
    }
    if (words > 0) {
      const dw = new Uint32Array(d.buffer, d.byteOffset, words);
      let t = 0;
      if (terms.length & 1) {
        const j = terms[0]!;
        wordsAssign1(dw, sourceWords[j]!, mulRow(coefficients[r * k + j]!), words);
        t = 1;
      }
      for (; t < terms.length; t += 2) {
        const a = terms[t]!;
        const b = terms[t + 1]!;
        const ta = mulRow(coefficients[r * k + a]!);
        const tb = mulRow(coefficients[r * k + b]!);
        if (t === 0) wordsAssign2(dw, sourceWords[a]!, ta, sourceWords[b]!, tb, words);
        else wordsXor2(dw, sourceWords[a]!, ta, sourceWords[b]!, tb, words);
      }
    }
    if (tail < length) {
      for (let t = 0; t < terms.length; t++) {
        const j = terms[t]!;
        const table = mulRow(coefficients[r * k + j]!);
        if (t === 0) bytesAssign(d, sources[j]!, table, tail, length);
        else bytesXor(d, sources[j]!, table, tail, length);
      }
    }
  }
}

function wordsAssign1(d: Uint32Array, s: Uint32Array, t: Uint8Array, words: number): void {
  for (let i = 0; i < words; i++) {
    const w = s[i]!;
    d[i] = t[w & 255]! | (t[(w >>> 8) & 255]! << 8) | (t[(w >>> 16) & 255]! << 16) |
      (t[w >>> 24]! << 24);
  }
}

function wordsAssign2(
  d: Uint32Array,
  s: Uint32Array,
  t: Uint8Array,
  v: Uint32Array,
  u: Uint8Array,
  words: number,
): void {
  for (let i = 0; i < words; i++) {
    const w = s[i]!;
    const x = v[i]!;
    d[i] = (t[w & 255]! ^ u[x & 255]!) | ((t[(w >>> 8) & 255]! ^ u[(x >>> 8) & 255]!) << 8) |
      ((t[(w >>> 16) & 255]! ^ u[(x >>> 16) & 255]!) << 16) | ((t[w >>> 24]! ^ u[x >>> 24]!) << 24);
  }
}

function wordsXor2(
  d: Uint32Array,
  s: Uint32Array,
  t: Uint8Array,
  v: Uint32Array,
  u: Uint8Array,
  words: number,
): void {
  for (let i = 0; i < words; i++) {
    const w = s[i]!;
    const x = v[i]!;
    d[i] ^= (t[w & 255]! ^ u[x & 255]!) | ((t[(w >>> 8) & 255]! ^ u[(x >>> 8) & 255]!) << 8) |
      ((t[(w >>> 16) & 255]! ^ u[(x >>> 16) & 255]!) << 16) | ((t[w >>> 24]! ^ u[x >>> 24]!) << 24);
  }
}

function bytesAssign(
  d: Uint8Array,
  s: Uint8Array,
  t: Uint8Array,
  start: number,
  end: number,
): void {
  for (let i = start; i < end; i++) d[i] = t[s[i]!]!;
}

function bytesXor(d: Uint8Array, s: Uint8Array, t: Uint8Array, start: number, end: number): void {
  for (let i = start; i < end; i++) d[i] ^= t[s[i]!]!;
}
