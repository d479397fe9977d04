// `deno task bench:gc [--quick]` (deno run -A tests/bench/gc_bench.ts): how fast deleted
// space comes back. A LocalChunkStore on six device files (EC 4+2, 64 MiB segments, the
// server's disk selection) is filled with chunks of 64 KiB and 1 MiB, every reference is
// dropped, and GC runs until the pool's used bytes are back to its live bytes. Reports the
// write rate, the release rate (decRef) and the reclaim rate (erase + compaction), in MB/s
// of chunk bytes, and writes tests/bench/results/gc.json. The ceiling column is the write
// rate of the same store in the same run: GC keeps up when reclaim >= write. Two ways of
// driving GC: "steps" calls step() and compactStep() back to back (the mechanism's own
// speed); "background" is ChunkGc.start() as the server runs it, timed from the last
// release until used bytes are back to zero.

import { defaultShimOptions, SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { selectAead } from "../../mod/crypto/mod.ts";
import { SealedPageKeys } from "../../mod/keys/mod.ts";
import { selectCrc32c } from "../../ffi/ec/crc32c.ts";
import { installCrc32c, Prng } from "../../mod/base/mod.ts";
import { ChunkGc, LocalChunkStore, parsePoolSpecs } from "../../mod/chunk/mod.ts";
import { sha256ChunkId } from "../../mod/chunk/mod.ts";
import { selectErasureCodec } from "../../mod/ec/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { table } from "./_table.ts";

{
  const crc = selectCrc32c({ ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" });
  installCrc32c(crc.impl, crc.name, crc.reason);
}

const MIB = 1 << 20;
const QUICK = Deno.args.includes("--quick");
const RESULTS = new URL("./results/gc.json", import.meta.url);
const SIZES = [
  { bytes: 64 << 10, count: QUICK ? 800 : 4000 },
  { bytes: 1 * MIB, count: QUICK ? 64 : 400 },
];
/** Puts kept in flight while filling (the engine keeps about this many). */
const PUT_CONCURRENCY = 32;
/** Longest a reclaim may take before the bench gives up on it. */
const RECLAIM_SECONDS_MAX = QUICK ? 60 : 600;

type Mode = "steps" | "background";

interface Row {
  mode: Mode;
  chunkBytes: number;
  chunks: number;
  writeMbPerS: number;
  releaseMbPerS: number;
  reclaimMbPerS: number;
  ratio: number;
}

const encoder = new TextEncoder();
function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

function totals(store: LocalChunkStore): { used: number; live: number } {
  let used = 0;
  let live = 0;
  for (const d of store.devices()) {
    used += d.usedBytes;
    live += d.liveBytes;
  }
  return { used, live };
}

async function runSize(dir: string, mode: Mode, bytes: number, count: number): Promise<Row> {
  const [pool] = parsePoolSpecs(
    JSON.stringify({ name: "bench", devices: 6, deviceSize: "4GiB", durability: "ec:4+2" }),
    { dataDir: dir },
  );
  // The index is page-encrypted as on a node (page key sealed under a random KEK).
  const aead = selectAead(defaultShimOptions());
  const indexPageKeys = new SealedPageKeys({
    aead,
    kek: await aead.importKey(crypto.getRandomValues(new Uint8Array(32))),
    random: (b) => crypto.getRandomValues(b),
  });
  const store = await LocalChunkStore.open({
    pool: pool!,
    codecs: selectErasureCodec(),
    indexDir: `${dir}/chunks/index`,
    indexPageKeys,
    shim: { ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" },
    logger: createLogger({
      level: "error",
      format: "text",
      sink: { write: (line) => Deno.stderr.writeSync(encoder.encode(line + "\n")) },
    }),
  });
  try {
    const prng = new Prng(bytes);
    const body = prng.bytes(bytes);
    const ids: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      // Distinct contents (and ids) from one random body: the first 8 bytes count.
      new DataView(body.buffer).setUint32(0, i, true);
      ids.push(sha256ChunkId(body));
    }
    let started = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: PUT_CONCURRENCY }, async () => {
      while (next < count) {
        const i = next++;
        const copy = body.slice();
        new DataView(copy.buffer).setUint32(0, i, true);
        await store.put(ids[i]!, copy);
      }
    }));
    const writeSeconds = (performance.now() - started) / 1000;
    started = performance.now();
    next = 0;
    await Promise.all(Array.from({ length: PUT_CONCURRENCY }, async () => {
      while (next < count) await store.decRef(ids[next++]!);
    }));
    const releaseSeconds = (performance.now() - started) / 1000;
    const gc = new ChunkGc(store, { holds: null });
    started = performance.now();
    const background = mode === "background" ? gc.start() : null;
    try {
      for (;;) {
        if (background === null) {
          await gc.step();
          await gc.compactStep();
        } else {
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        const { used, live } = totals(store);
        if (live === 0 && used === 0) break;
        if ((performance.now() - started) / 1000 > RECLAIM_SECONDS_MAX) {
          throw new Error(
            `reclaim took over ${RECLAIM_SECONDS_MAX} s (used ${used}, live ${live})`,
          );
        }
      }
    } finally {
      await background?.stop();
    }
    const reclaimSeconds = (performance.now() - started) / 1000;
    const mb = (bytes * count) / 1e6;
    return {
      mode,
      chunkBytes: bytes,
      chunks: count,
      writeMbPerS: mb / writeSeconds,
      releaseMbPerS: mb / releaseSeconds,
      reclaimMbPerS: mb / reclaimSeconds,
      ratio: (mb / reclaimSeconds) / (mb / writeSeconds),
    };
  } finally {
    await store.close();
  }
}

const rows: Row[] = [];
for (const mode of ["steps", "background"] as const) {
  for (const size of SIZES) {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-gc-bench-" });
    try {
      rows.push(await runSize(dir, mode, size.bytes, size.count));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
}
const fmt = (n: number) => n.toFixed(1);
print(`GC reclaim, EC 4+2 on six device files (${QUICK ? "quick" : "full"} run)`);
table(
  print,
  ["mode", "chunk", "chunks", "write MB/s", "release MB/s", "reclaim MB/s", "ratio"],
  rows.map((r) => [
    r.mode,
    `${r.chunkBytes >> 10} KiB`,
    r.chunks,
    fmt(r.writeMbPerS),
    fmt(r.releaseMbPerS),
    fmt(r.reclaimMbPerS),
    r.ratio.toFixed(2),
  ]),
);
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(
  RESULTS,
  JSON.stringify({ mode: QUICK ? "quick" : "full", rows }, null, 2) + "\n",
);
