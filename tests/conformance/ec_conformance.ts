// One conformance suite for every ErasureCodec implementation: each case is registered as a
// Deno.test for a factory, so the ISA-L shim and the TypeScript twin pass identical checks.
// With a `reference` factory every encode is also compared byte for byte against it.

import { missingPart, Prng } from "../../mod/base/mod.ts";
import {
  EC_DECODE_TABLES_ENTRIES_MAX,
  EC_FRAGMENTS_MAX,
  EcError,
  type EcErrorCode,
  type ErasureCodec,
  type ErasureCodecFactory,
  join,
  split,
} from "../../mod/ec/mod.ts";

export interface EcConformanceOptions {
  /** Prefix of every test name, e.g. "ErasureCodec[isa-l]". */
  name: string;
  /** Called inside each test, so an absent implementation costs nothing when ignored. */
  factory: () => ErasureCodecFactory;
  /**
   * Why the implementation is missing here: every case is registered ignored with this reason
   * in its name (under CI=true the run fails instead; see missingPart()).
   */
  ignoreReason?: string;
  /** Another implementation whose parity must be byte-identical. */
  reference?: () => ErasureCodecFactory;
}

/** Geometries of the spread: the named 4+2 and 8+3, small edges, and wide codes. */
export const EC_CONFORMANCE_GEOMETRIES: readonly [number, number][] = [
  [1, 1],
  [2, 1],
  [3, 2],
  [4, 2],
  [6, 3],
  [8, 3],
  [10, 4],
  [12, 4],
  [16, 4],
  [20, 8],
];
/** Fragment lengths: single bytes, word and SIMD-width edges, a page plus one. */
export const EC_CONFORMANCE_LENGTHS: readonly number[] = [1, 3, 63, 65, 4097];
/** Geometries whose every erasure pattern (all subsets of size 1..m) is tested. */
const EXHAUSTIVE: readonly string[] = ["4+2", "8+3"];
/** Erasure patterns drawn per length for the other geometries. */
const SAMPLED_PATTERNS = 24;

/**
 * Parity of seeded 16-byte fragments as ISA-L 2.30 computes it (data: k fragments of
 * new Prng(0x5eed + k * 256 + m).bytes(16)); pins both implementations to the real library.
 */
const GOLDEN_PARITY: Record<string, string[]> = {
  "4+2": ["08420e8f66b07caf7416b189e8ef88d8", "1467283ada64551825d9d2692ee908eb"],
  "8+3": [
    "0c87da52060503667eea08a3951132f3",
    "a106c5cd59be25f9afe48e5af81b10b2",
    "0f45fe44858ae71a7bdf74553cc04653",
  ],
  "20+8": [
    "19ad5c95048542ec0cbdbb6986ffceb8",
    "391fc59df09e63d0c062ffea70926b9a",
    "bc85b2953432a9b4b3c5afefff951eda",
    "6e44879662ad54e7d75dfe94d5aac942",
    "a5e6eddc629cc2d1476c8bd5789d9f54",
    "58ac1573701b21fff8bb1203c7260639",
    "0eb0176e20d5700628f4aa98f3e9df11",
    "2345a845563f4c8aa508e2c8621e1d60",
  ],
};

function fail(message: string): never {
  throw new Error(message);
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) {
    fail(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

function assertEcError(fn: () => unknown, code: EcErrorCode, what: string): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof EcError && e.code === code) return;
    fail(
      `${what}: threw ${
        e instanceof Error ? `${e.name}(${(e as EcError).code}) ${e.message}` : e
      }, expected EcError ${code}`,
    );
  }
  fail(`${what}: did not throw, expected EcError ${code}`);
}

async function assertRejectsEcError(
  fn: () => Promise<unknown>,
  code: EcErrorCode,
  what: string,
): Promise<void> {
  let promise: Promise<unknown>;
  try {
    promise = fn();
  } catch (e) {
    fail(`${what}: threw synchronously (${e}); async calls must reject`);
  }
  try {
    await promise;
  } catch (e) {
    if (e instanceof EcError && e.code === code) return;
    fail(`${what}: rejected with ${e}, expected EcError ${code}`);
  }
  fail(`${what}: resolved, expected EcError ${code}`);
}

interface Stripe {
  data: Uint8Array[];
  parity: Uint8Array[];
  all: Uint8Array[];
}

function encodeStripe(codec: ErasureCodec, prng: Prng, length: number): Stripe {
  const data = Array.from({ length: codec.k }, () => prng.bytes(length));
  // Parity starts as garbage: encode() must overwrite, not accumulate.
  const parity = Array.from({ length: codec.m }, () => prng.bytes(length));
  codec.encode(data, parity);
  return { data, parity, all: [...data, ...parity] };
}

/** Erases `pattern` and checks reconstruct() rebuilds exactly those fragments. */
function checkPattern(codec: ErasureCodec, stripe: Stripe, pattern: readonly number[]): void {
  const fragments: (Uint8Array | null)[] = stripe.all.slice();
  const targets = new Map<number, Uint8Array>();
  const length = stripe.all[0]!.length;
  for (const i of pattern) {
    fragments[i] = null;
    targets.set(i, new Uint8Array(length).fill(0xa5));
  }
  codec.reconstruct(fragments, targets);
  for (const i of pattern) {
    assertBytes(
      targets.get(i)!,
      stripe.all[i]!,
      `${codec.k}+${codec.m} len ${length} lost [${pattern}] fragment ${i}`,
    );
  }
}

/** Every subset of 0..n-1 of size 1..max, in lexicographic order. */
export function allPatterns(n: number, max: number): number[][] {
  const out: number[][] = [];
  const walk = (start: number, current: number[]): void => {
    if (current.length > 0) out.push(current.slice());
    if (current.length === max) return;
    for (let i = start; i < n; i++) {
      current.push(i);
      walk(i + 1, current);
      current.pop();
    }
  };
  walk(0, []);
  return out;
}

function samplePattern(prng: Prng, n: number, size: number): number[] {
  const pool = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < size; i++) {
    const j = i + prng.nextInt(n - i);
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, size).sort((a, b) => a - b);
}

/** Registers the whole suite for one implementation. */
export function registerEcConformance(options: EcConformanceOptions): void {
  const ignore = missingPart(options.name, options.ignoreReason);
  const suffix = ignore ? ` [ignored: ${options.ignoreReason}]` : "";
  const test = (name: string, fn: () => void | Promise<void>): void => {
    Deno.test({ name: `${options.name} ${name}${suffix}`, ignore, fn });
  };
  const reference = (k: number, m: number): ErasureCodec | null =>
    options.reference ? options.reference().create({ k, m }) : null;

  test("create() accepts 1 <= k, 1 <= m, k + m <= 255 and rejects the rest", () => {
    const f = options.factory();
    for (const [k, m] of [[1, 1], [1, 254], [254, 1], [128, 127]]) f.create({ k: k!, m: m! });
    const bad: [number, number][] = [[0, 1], [1, 0], [-1, 2], [1.5, 2], [2, NaN], [128, 128], [
      255,
      1,
    ]];
    for (const [k, m] of bad) {
      assertEcError(() => f.create({ k, m }), "invalid_geometry", `k=${k} m=${m}`);
    }
    if (f.implementation !== "isa-l" && f.implementation !== "typescript") fail("implementation");
    if (typeof f.reason !== "string" || f.reason.length === 0) fail("factory needs a reason");
  });

  test("encode() matches ISA-L's golden parity for 4+2, 8+3 and 20+8", () => {
    const f = options.factory();
    for (const [key, expected] of Object.entries(GOLDEN_PARITY)) {
      const [k, m] = key.split("+").map(Number) as [number, number];
      const prng = new Prng(0x5eed + k * 256 + m);
      const data = Array.from({ length: k }, () => prng.bytes(16));
      const parity = Array.from({ length: m }, () => new Uint8Array(16));
      f.create({ k, m }).encode(data, parity);
      const actual = parity.map(hex);
      for (let i = 0; i < m; i++) {
        if (actual[i] !== expected[i]) fail(`${key} parity ${i}: ${actual[i]} != ${expected[i]}`);
      }
    }
  });

  for (const [k, m] of EC_CONFORMANCE_GEOMETRIES) {
    const key = `${k}+${m}`;
    const exhaustive = EXHAUSTIVE.includes(key);
    test(
      `${key} rebuilds ${
        exhaustive ? "every" : "sampled"
      } erasure pattern up to m, lengths ${EC_CONFORMANCE_LENGTHS}`,
      () => {
        const codec = options.factory().create({ k, m });
        const twin = reference(k, m);
        const prng = new Prng(k * 1000 + m);
        for (const length of EC_CONFORMANCE_LENGTHS) {
          const stripe = encodeStripe(codec, prng, length);
          if (twin !== null) {
            const parity = Array.from({ length: m }, () => new Uint8Array(length));
            twin.encode(stripe.data, parity);
            for (let i = 0; i < m; i++) {
              assertBytes(
                stripe.parity[i]!,
                parity[i]!,
                `${key} len ${length} parity ${i} vs ${twin.implementation}`,
              );
            }
          }
          if (exhaustive) {
            for (const pattern of allPatterns(k + m, m)) checkPattern(codec, stripe, pattern);
          } else {
            for (let s = 0; s < SAMPLED_PATTERNS; s++) {
              // Half the draws lose exactly m (the hardest case), half a smaller number.
              const size = s % 2 === 0 ? m : 1 + prng.nextInt(m);
              checkPattern(codec, stripe, samplePattern(prng, k + m, size));
            }
            // Always include: every data fragment lost that can be, and all parity lost.
            checkPattern(codec, stripe, Array.from({ length: Math.min(m, k) }, (_, i) => i));
            checkPattern(codec, stripe, Array.from({ length: m }, (_, i) => k + i));
          }
        }
      },
    );
  }

  test("k + m = 255 (223+32) encodes and rebuilds 32 lost fragments", () => {
    const k = 223;
    const m = EC_FRAGMENTS_MAX - k;
    const codec = options.factory().create({ k, m });
    const twin = reference(k, m);
    const prng = new Prng(255);
    const stripe = encodeStripe(codec, prng, 16);
    if (twin !== null) {
      const parity = Array.from({ length: m }, () => new Uint8Array(16));
      twin.encode(stripe.data, parity);
      for (let i = 0; i < m; i++) assertBytes(stripe.parity[i]!, parity[i]!, `parity ${i}`);
    }
    checkPattern(codec, stripe, samplePattern(prng, k + m, m));
    checkPattern(codec, stripe, Array.from({ length: m }, (_, i) => i * 7));
  });

  test("split() of 1 MiB + 1 bytes round-trips through encode, loss of m and join()", () => {
    const prng = new Prng(0x1_0001);
    const object = prng.bytes((1 << 20) + 1);
    for (const [k, m] of [[4, 2], [8, 3]] as const) {
      const codec = options.factory().create({ k, m });
      const twin = reference(k, m);
      const { fragments, fragmentLength, dataLength } = split(object, k);
      const parity = Array.from({ length: m }, () => new Uint8Array(fragmentLength));
      codec.encode(fragments, parity);
      if (twin !== null) {
        const other = Array.from({ length: m }, () => new Uint8Array(fragmentLength));
        twin.encode(fragments, other);
        for (let i = 0; i < m; i++) assertBytes(parity[i]!, other[i]!, `${k}+${m} parity ${i}`);
      }
      for (const pattern of [[0, 1].concat(m === 3 ? [k - 1] : []), [1, k].slice(0, m)]) {
        const slots: (Uint8Array | null)[] = [...fragments, ...parity];
        const targets = new Map<number, Uint8Array>();
        for (const i of pattern) {
          slots[i] = null;
          targets.set(i, new Uint8Array(fragmentLength));
        }
        codec.reconstruct(slots, targets);
        const rebuilt = slots.slice(0, k).map((f, i) => f ?? targets.get(i)!);
        assertBytes(join(rebuilt, dataLength), object, `${k}+${m} lost [${pattern}] object`);
      }
    }
  });

  test("reconstruct() rebuilds only the requested targets, data or parity", () => {
    const codec = options.factory().create({ k: 6, m: 3 });
    const stripe = encodeStripe(codec, new Prng(63), 257);
    // Degraded read: data 2 and parity 7 lost, only the data fragment is wanted.
    const slots: (Uint8Array | null)[] = stripe.all.slice();
    slots[2] = null;
    slots[7] = null;
    const out = new Uint8Array(257);
    codec.reconstruct(slots, new Map([[2, out]]));
    assertBytes(out, stripe.data[2]!, "data 2");
    // Scrub: all data present, every parity fragment recomputed.
    const scrub: (Uint8Array | null)[] = [...stripe.data, null, null, null];
    const targets = new Map([6, 7, 8].map((i) => [i, new Uint8Array(257)]));
    codec.reconstruct(scrub, targets);
    for (const i of [6, 7, 8]) assertBytes(targets.get(i)!, stripe.all[i]!, `parity ${i}`);
    // Nothing to rebuild is not an error.
    codec.reconstruct(stripe.all, new Map());
  });

  test("reconstruct() stays exact past the decode-table cache bound", () => {
    const k = 20;
    const m = 8;
    const codec = options.factory().create({ k, m });
    const prng = new Prng(2008);
    const stripe = encodeStripe(codec, prng, 8);
    const patterns = EC_DECODE_TABLES_ENTRIES_MAX + 40;
    for (let s = 0; s < patterns; s++) {
      checkPattern(codec, stripe, samplePattern(prng, k + m, 1 + (s % m)));
    }
    // The first patterns were evicted; they must still decode.
    checkPattern(codec, stripe, [0, 1, 2, 3, 4, 5, 6, 7]);
  });

  test("encode() and reconstruct() accept unaligned views into shared buffers", () => {
    const k = 4;
    const m = 2;
    const codec = options.factory().create({ k, m });
    const twin = reference(k, m);
    const length = 1001;
    const slab = new Prng(7).bytes(3 + (k + m) * length + 5);
    const views = Array.from(
      { length: k + m },
      (_, i) => slab.subarray(3 + i * length, 3 + (i + 1) * length),
    );
    codec.encode(views.slice(0, k), views.slice(k));
    const copies = views.map((v) => v.slice());
    const expected = Array.from({ length: m }, () => new Uint8Array(length));
    options.factory().create({ k, m }).encode(copies.slice(0, k), expected);
    for (let i = 0; i < m; i++) assertBytes(views[k + i]!, expected[i]!, `parity ${i}`);
    if (twin !== null) {
      const other = Array.from({ length: m }, () => new Uint8Array(length));
      twin.encode(copies.slice(0, k), other);
      for (let i = 0; i < m; i++) assertBytes(views[k + i]!, other[i]!, `twin parity ${i}`);
    }
    const out = new Uint8Array(length + 1).subarray(1);
    codec.reconstruct([null, ...views.slice(1)], new Map([[0, out]]));
    assertBytes(out, copies[0]!, "data 0");
  });

  test("encodeAsync() and reconstructAsync() equal the synchronous results", async () => {
    for (const asyncThresholdBytes of [0, undefined]) {
      const k = 8;
      const m = 3;
      const codec = options.factory().create({ k, m, asyncThresholdBytes });
      const prng = new Prng(31);
      const stripe = encodeStripe(codec, prng, 65_537);
      const parity = Array.from({ length: m }, () => new Uint8Array(65_537));
      await codec.encodeAsync(stripe.data, parity);
      for (let i = 0; i < m; i++) assertBytes(parity[i]!, stripe.parity[i]!, `async parity ${i}`);
      const slots: (Uint8Array | null)[] = stripe.all.slice();
      const targets = new Map<number, Uint8Array>();
      for (const i of [0, 5, 9]) {
        slots[i] = null;
        targets.set(i, new Uint8Array(65_537));
      }
      await codec.reconstructAsync(slots, targets);
      for (const [i, out] of targets) assertBytes(out, stripe.all[i]!, `async rebuilt ${i}`);
      // Concurrent calls use separate descriptors and must not disturb each other.
      const outs = Array.from(
        { length: 4 },
        () => Array.from({ length: m }, () => new Uint8Array(65_537)),
      );
      await Promise.all(outs.map((o) => codec.encodeAsync(stripe.data, o)));
      for (const o of outs) {
        for (let i = 0; i < m; i++) assertBytes(o[i]!, stripe.parity[i]!, "concurrent parity");
      }
    }
  });

  test("allocateFragments() gives zeroed, disjoint buffers that encode and rebuild", () => {
    const f = options.factory();
    for (const length of [1, 63, 4097, 65_536]) {
      const k = 4;
      const m = 2;
      const buffers = f.allocateFragments(k + m + 1, length);
      if (buffers.length !== k + m + 1) fail("count");
      for (const b of buffers) {
        if (b.length !== length) fail(`length ${b.length} != ${length}`);
        if (b.some((x) => x !== 0)) fail("not zero-filled");
      }
      for (let i = 0; i < buffers.length; i++) {
        for (let j = i + 1; j < buffers.length; j++) {
          const a = buffers[i]!;
          const b = buffers[j]!;
          if (
            a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.length &&
            b.byteOffset < a.byteOffset + a.length
          ) {
            fail(`buffers ${i} and ${j} overlap`);
          }
        }
      }
      const prng = new Prng(length);
      buffers.slice(0, k).forEach((b) => prng.fill(b));
      const codec = f.create({ k, m });
      codec.encode(buffers.slice(0, k), buffers.slice(k, k + m));
      const expected = buffers[1]!.slice();
      buffers[1]!.fill(0);
      const slots: (Uint8Array | null)[] = buffers.slice(0, k + m);
      slots[1] = null;
      codec.reconstruct(slots, new Map([[1, buffers[k + m]!]]));
      assertBytes(buffers[k + m]!, expected, `len ${length} rebuilt into an allocated buffer`);
    }
    assertEcError(() => f.allocateFragments(0, 64), "wrong_fragment_count", "count 0");
    assertEcError(() => f.allocateFragments(2, 0), "bad_fragment_length", "length 0");
  });

  test("reconstruct() with fewer than k fragments throws too_few_fragments", async () => {
    const codec = options.factory().create({ k: 4, m: 2 });
    const stripe = encodeStripe(codec, new Prng(3), 64);
    for (const lost of [[0, 1, 2], [3, 4, 5], [0, 1, 2, 3, 4, 5]]) {
      const slots: (Uint8Array | null)[] = stripe.all.slice();
      for (const i of lost) slots[i] = null;
      const targets = new Map(lost.map((i) => [i, new Uint8Array(64)]));
      assertEcError(() => codec.reconstruct(slots, targets), "too_few_fragments", `lost ${lost}`);
      await assertRejectsEcError(
        () => codec.reconstructAsync(slots, targets),
        "too_few_fragments",
        `async lost ${lost}`,
      );
      for (const out of targets.values()) {
        if (out.some((b) => b !== 0)) fail("a failed call wrote output");
      }
    }
  });

  test("encode() rejects wrong counts, mismatched, empty, overlapping and non-buffer fragments", async () => {
    const k = 4;
    const m = 2;
    const codec = options.factory().create({ k, m });
    const d = () => Array.from({ length: k }, () => new Uint8Array(32));
    const p = () => Array.from({ length: m }, () => new Uint8Array(32));
    assertEcError(() => codec.encode(d().slice(1), p()), "wrong_fragment_count", "k-1 data");
    assertEcError(() => codec.encode(d(), p().slice(1)), "wrong_fragment_count", "m-1 parity");
    assertEcError(
      () => codec.encode([...d().slice(1), new Uint8Array(31)], p()),
      "length_mismatch",
      "short data",
    );
    assertEcError(
      () => codec.encode(d(), [new Uint8Array(33), new Uint8Array(32)]),
      "length_mismatch",
      "long parity",
    );
    assertEcError(
      () =>
        codec.encode(Array.from({ length: k }, () => new Uint8Array(0)), [
          new Uint8Array(0),
          new Uint8Array(0),
        ]),
      "bad_fragment_length",
      "empty fragments",
    );
    const data = d();
    assertEcError(
      () => codec.encode(data, [data[1]!, new Uint8Array(32)]),
      "overlapping_buffers",
      "parity is data",
    );
    const slab = new Uint8Array(48);
    assertEcError(
      () => codec.encode(d(), [slab.subarray(0, 32), slab.subarray(16, 48)]),
      "overlapping_buffers",
      "parity overlaps parity",
    );
    const notBuffer = [...d().slice(1), [1, 2, 3] as unknown as Uint8Array];
    assertEcError(() => codec.encode(notBuffer, p()), "not_a_buffer", "array of numbers");
    await assertRejectsEcError(
      () => codec.encodeAsync(d().slice(1), p()),
      "wrong_fragment_count",
      "async k-1",
    );
  });

  test("reconstruct() rejects bad slots, targets and lengths", () => {
    const codec = options.factory().create({ k: 4, m: 2 });
    const stripe = encodeStripe(codec, new Prng(9), 40);
    const lost = (): (Uint8Array | null)[] => [null, ...stripe.all.slice(1)];
    const out = () => new Map([[0, new Uint8Array(40)]]);
    assertEcError(
      () => codec.reconstruct(lost().slice(1), out()),
      "wrong_fragment_count",
      "5 slots",
    );
    const mixed = lost();
    mixed[3] = new Uint8Array(41);
    assertEcError(
      () => codec.reconstruct(mixed, out()),
      "length_mismatch",
      "fragment of another length",
    );
    assertEcError(
      () => codec.reconstruct(lost(), new Map([[0, new Uint8Array(39)]])),
      "length_mismatch",
      "short target",
    );
    assertEcError(
      () => codec.reconstruct(lost(), new Map([[1, new Uint8Array(40)]])),
      "invalid_target",
      "present target",
    );
    assertEcError(
      () => codec.reconstruct(lost(), new Map([[6, new Uint8Array(40)]])),
      "invalid_target",
      "index k+m",
    );
    assertEcError(
      () => codec.reconstruct(lost(), new Map([[-1, new Uint8Array(40)]])),
      "invalid_target",
      "index -1",
    );
    const slots = lost();
    assertEcError(
      () => codec.reconstruct(slots, new Map([[0, slots[2]!.subarray(0, 40)]])),
      "overlapping_buffers",
      "target is a survivor",
    );
  });
}
