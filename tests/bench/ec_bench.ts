// Erasure-coding throughput: the ISA-L shim (blocking and nonblocking FFI) and the TypeScript
// twin against a same-run native ceiling (ffi/build/isal_bench, the same ISA-L calls with no
// FFI). Prints a table and writes tests/bench/results/ec.json.
//
//   deno run -A tests/bench/ec_bench.ts [--quick]
//
// MB/s counts data bytes (k x fragment) per second, 10^6 bytes per MB. Each figure is the
// best of several time-boxed rounds: the machine is shared and noisy, and the best round is
// the one least disturbed, for us and for the ceiling alike.

import { openEcShim } from "../../ffi/ec/bindings.ts";
import { defaultShimOptions, SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { Prng } from "../../mod/base/mod.ts";
import {
  EC_ASYNC_THRESHOLD_BYTES_DEFAULT,
  type ErasureCodec,
  type ErasureCodecFactory,
  IsalCodecFactory,
  TypeScriptCodecFactory,
} from "../../mod/ec/mod.ts";
import { table as printTable } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
/** Wall time one measurement round runs for. */
const ROUND_MS = QUICK ? 120 : 500;
/** Rounds per figure; the best is reported. */
const ROUNDS = QUICK ? 2 : 5;
const GEOMETRIES: readonly [number, number][] = [[4, 2], [8, 3]];
const FRAGMENT_SIZES: readonly number[] = [64 << 10, 1 << 20];
const NATIVE_BENCH = `${SOURCE_FFI_DIR}/isal_bench`;
const RESULTS_PATH = new URL("./results/ec.json", import.meta.url);

type Op = "encode" | "decode";

interface Row {
  impl: string;
  op: Op;
  k: number;
  m: number;
  fragmentBytes: number;
  mbPerS: number;
  ceilingMbPerS: number | null;
  ratio: number | null;
}

interface NativeResult {
  encode_mb_s: number;
  decode_mb_s: number;
  iterations: number;
}

const encoder = new TextEncoder();
function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

/** A stripe with buffers allocated once and reused by every iteration. */
interface Stripe {
  data: Uint8Array[];
  parity: Uint8Array[];
  /** k+m slots with data fragments 0..m-1 missing. */
  degraded: (Uint8Array | null)[];
  targets: Map<number, Uint8Array>;
}

/**
 * Buffers come from allocateFragments(), 64-byte aligned like the native benchmark's
 * posix_memalign() ones, so both sides of the ratio stream the same kind of memory.
 */
function makeStripe(
  k: number,
  m: number,
  fragmentBytes: number,
  factory: ErasureCodecFactory,
): Stripe {
  const prng = new Prng(k * 100 + m);
  const buffers = factory.allocateFragments(k + 2 * m, fragmentBytes);
  const data = buffers.slice(0, k).map((b) => prng.fill(b));
  const parity = buffers.slice(k, k + m);
  factory.create({ k, m }).encode(data, parity);
  const degraded: (Uint8Array | null)[] = [...data, ...parity];
  const targets = new Map<number, Uint8Array>();
  for (let i = 0; i < m; i++) {
    degraded[i] = null;
    targets.set(i, buffers[k + m + i]!);
  }
  return { data, parity, degraded, targets };
}

function verify(stripe: Stripe, what: string): void {
  for (const [i, out] of stripe.targets) {
    const expected = stripe.data[i]!;
    for (let b = 0; b < out.length; b += 4093) {
      if (out[b] !== expected[b]) throw new Error(`${what}: fragment ${i} rebuilt wrongly`);
    }
    out.fill(0);
  }
}

/** Best ops/s over ROUNDS time-boxed rounds. */
async function measure(op: () => void | Promise<void>, isAsync: boolean): Promise<number> {
  for (let i = 0; i < 3; i++) await op(); // warm-up: JIT, decode tables, page faults
  let best = 0;
  for (let round = 0; round < ROUNDS; round++) {
    let n = 0;
    const start = performance.now();
    let elapsed = 0;
    do {
      if (isAsync) await op();
      else op();
      n++;
      elapsed = performance.now() - start;
    } while (elapsed < ROUND_MS);
    best = Math.max(best, (n * 1000) / elapsed);
  }
  return best;
}

async function runNative(
  k: number,
  m: number,
  fragmentBytes: number,
  opsPerSecond: number,
): Promise<NativeResult | null> {
  try {
    Deno.statSync(NATIVE_BENCH);
  } catch {
    return null;
  }
  const iterations = Math.max(10, Math.round((opsPerSecond * ROUND_MS) / 1000));
  let best: NativeResult | null = null;
  for (let round = 0; round < ROUNDS; round++) {
    const out = await new Deno.Command(NATIVE_BENCH, {
      args: [String(k), String(m), String(fragmentBytes), String(iterations)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`isal_bench failed: ${new TextDecoder().decode(out.stderr).trim()}`);
    }
    const result = JSON.parse(new TextDecoder().decode(out.stdout)) as NativeResult;
    best = best === null ? result : {
      encode_mb_s: Math.max(best.encode_mb_s, result.encode_mb_s),
      decode_mb_s: Math.max(best.decode_mb_s, result.decode_mb_s),
      iterations,
    };
  }
  return best;
}

async function main(): Promise<void> {
  const started = performance.now();
  const twin = new TypeScriptCodecFactory("benchmark");
  const shim = openEcShim(defaultShimOptions());
  const isal: ErasureCodecFactory | null = shim.ok
    ? new IsalCodecFactory(shim.lib, `shim loaded from ${shim.path}`)
    : null;
  if (!shim.ok) print(`ISA-L shim absent (${shim.reason}); measuring the twin only`);

  const rows: Row[] = [];
  const native: Record<string, NativeResult | null> = {};
  for (const [k, m] of GEOMETRIES) {
    for (const fragmentBytes of FRAGMENT_SIZES) {
      const dataBytes = k * fragmentBytes;
      const mbPerS = (opsPerSecond: number) => (opsPerSecond * dataBytes) / 1e6;
      const impls: { impl: string; codec: ErasureCodec; isAsync: boolean }[] = [];
      if (isal !== null) {
        impls.push({ impl: "isa-l sync", codec: isal.create({ k, m }), isAsync: false });
        // Threshold 0 forces the nonblocking symbol so its cost shows at every size.
        impls.push({
          impl: "isa-l async",
          codec: isal.create({ k, m, asyncThresholdBytes: 0 }),
          isAsync: true,
        });
      }
      impls.push({ impl: "typescript", codec: twin.create({ k, m }), isAsync: false });
      const stripe = makeStripe(k, m, fragmentBytes, isal ?? twin);

      const measured: { impl: string; op: Op; opsPerSecond: number }[] = [];
      for (const { impl, codec, isAsync } of impls) {
        const encode = isAsync
          ? () => codec.encodeAsync(stripe.data, stripe.parity)
          : () => codec.encode(stripe.data, stripe.parity);
        const decode = isAsync
          ? () => codec.reconstructAsync(stripe.degraded, stripe.targets)
          : () => codec.reconstruct(stripe.degraded, stripe.targets);
        await decode();
        verify(stripe, `${impl} ${k}+${m}`);
        measured.push({ impl, op: "encode", opsPerSecond: await measure(encode, isAsync) });
        measured.push({ impl, op: "decode", opsPerSecond: await measure(decode, isAsync) });
      }
      const fastest = Math.max(...measured.map((r) => r.opsPerSecond));
      const ceiling = await runNative(k, m, fragmentBytes, fastest);
      native[`${k}+${m}/${fragmentBytes}`] = ceiling;
      for (const r of measured) {
        const ceilingMbPerS = ceiling === null
          ? null
          : r.op === "encode"
          ? ceiling.encode_mb_s
          : ceiling.decode_mb_s;
        const value = mbPerS(r.opsPerSecond);
        rows.push({
          impl: r.impl,
          op: r.op,
          k,
          m,
          fragmentBytes,
          mbPerS: Math.round(value),
          ceilingMbPerS: ceilingMbPerS === null ? null : Math.round(ceilingMbPerS),
          ratio: ceilingMbPerS === null ? null : Math.round((value / ceilingMbPerS) * 1000) / 1000,
        });
      }
    }
  }

  const size = (bytes: number) => bytes >= 1 << 20 ? `${bytes >> 20} MiB` : `${bytes >> 10} KiB`;
  const header = ["impl", "op", "k+m", "fragment", "MB/s", "ceiling MB/s", "ratio"];
  const table = rows.map((r) => [
    r.impl,
    r.op,
    `${r.k}+${r.m}`,
    size(r.fragmentBytes),
    String(r.mbPerS),
    r.ceilingMbPerS === null ? "-" : String(r.ceilingMbPerS),
    r.ratio === null ? "-" : r.ratio.toFixed(2),
  ]);
  printTable(print, header, table, { leftColumns: 4, markdown: true });
  const seconds = (performance.now() - started) / 1000;
  print();
  print(
    `ceiling: ${NATIVE_BENCH} (same ISA-L calls, no FFI); async rows force the nonblocking ` +
      `symbol (encodeAsync() uses it only from ${
        EC_ASYNC_THRESHOLD_BYTES_DEFAULT >> 20
      } MiB of data); ` +
      `${QUICK ? "quick" : "full"} run, ${seconds.toFixed(1)} s`,
  );

  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        benchmark: "ec",
        generatedAt: new Date().toISOString(),
        quick: QUICK,
        unit: "MB/s of data (k x fragment bytes), 10^6 bytes",
        roundMs: ROUND_MS,
        rounds: ROUNDS,
        asyncThresholdBytes: EC_ASYNC_THRESHOLD_BYTES_DEFAULT,
        shim: shim.ok ? shim.path : `absent: ${shim.reason}`,
        deno: Deno.version.deno,
        cpus: navigator.hardwareConcurrency,
        seconds: Math.round(seconds * 10) / 10,
        results: rows,
        native,
      },
      null,
      2,
    ) + "\n",
  );
  print(`wrote ${RESULTS_PATH.pathname}`);
}

await main();
