// Client chunk cache, warm reads: a working set of 1 MiB chunks (sealed with AES-256-GCM
// through the process's AEAD, as the client seals them) read through TieredChunkCache,
// each read copied out as a FUSE reply would be, against ceilings measured in the same run:
//   l1 hit        plaintext from memory              vs memcpy of the same bytes
//   l2 hit        sealed file read, CRC-32C, open    vs fio sequential read (1 MiB, page cache)
//   l2 raw read   sealed file read and CRC-32C only  vs the same fio read
//   miss          fetch (in memory) + open + fill    vs AES-GCM open alone
// L2 files are read from the page cache (they were just written; dropping caches is not
// allowed here): the rows measure the cache's own path, not the NVMe. Prints a table and
// writes tests/bench/results/client_cache.json.
//
//   deno run -A tests/bench/client_cache_bench.ts [--quick]

import { selectCrc32c } from "../../ffi/ec/crc32c.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { installCrc32c, Prng } from "../../mod/base/mod.ts";
import { DiskL2Store, TieredChunkCache } from "../../mod/client/cache/mod.ts";
import { AEAD_TAG_BYTES, type AeadKey, chooseAead } from "../../mod/crypto/mod.ts";
import { table as printTable } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const MIB = 1 << 20;
const CHUNK_BYTES = MIB;
const NONCE_BYTES = 12;
const CHUNKS = QUICK ? 16 : 64;
/** Passes over the working set per round. */
const PASSES = QUICK ? 2 : 4;
const ROUNDS = QUICK ? 2 : 3;
const RESULTS_PATH = new URL("./results/client_cache.json", import.meta.url);

const encoder = new TextEncoder();
const decoder = new TextDecoder();
function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

interface Row {
  path: string;
  mbPerSecond: number;
  ceiling: string;
  ceilingMbPerSecond: number | null;
  ratio: number | null;
}

async function fioRead(path: string, sizeBytes: number): Promise<number | null> {
  try {
    const out = await new Deno.Command("fio", {
      args: [
        "--name=kiseki-cache",
        `--filename=${path}`,
        "--rw=read",
        `--bs=${MIB}`,
        `--size=${sizeBytes}`,
        "--ioengine=psync",
        "--invalidate=0",
        `--loops=${PASSES}`,
        "--output-format=json",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) return null;
    const text = decoder.decode(out.stdout);
    const json = JSON.parse(text.slice(text.indexOf("{"))) as {
      jobs: { read: { bw_bytes: number } }[];
    };
    return json.jobs[0]!.read.bw_bytes / 1e6;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const shim = defaultShimOptions();
  const crc = selectCrc32c(shim);
  installCrc32c(crc.impl, crc.name, crc.reason);
  const aead = chooseAead(shim);
  const key: AeadKey = await aead.importKey(new Uint8Array(32).fill(3));
  const aad = new Uint8Array(0);
  const prng = new Prng(42);

  const ids: Uint8Array[] = [];
  const sealed: Uint8Array[] = [];
  for (let i = 0; i < CHUNKS; i++) {
    const plain = new Uint8Array(CHUNK_BYTES);
    prng.fill(plain);
    // nonce || ciphertext || tag, a fresh nonce per chunk as the envelope has.
    const out = new Uint8Array(NONCE_BYTES + CHUNK_BYTES + AEAD_TAG_BYTES);
    new DataView(out.buffer).setUint32(0, i);
    await aead.seal(key, out.subarray(0, NONCE_BYTES), plain, aad, out.subarray(NONCE_BYTES));
    sealed.push(out);
    const id = new Uint8Array(32);
    new DataView(id.buffer).setUint32(0, i);
    ids.push(id);
  }
  const open = async (s: Uint8Array): Promise<Uint8Array> => {
    const out = new Uint8Array(s.length - NONCE_BYTES - AEAD_TAG_BYTES);
    await aead.open(key, s.subarray(0, NONCE_BYTES), s.subarray(NONCE_BYTES), aad, out);
    return out;
  };
  const reply = new Uint8Array(CHUNK_BYTES);
  const totalBytes = CHUNKS * CHUNK_BYTES;

  /** Best MB/s of `passOnce` (each pass touches the whole working set). */
  async function best(passOnce: () => Promise<void>): Promise<number> {
    let top = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const start = performance.now();
      for (let p = 0; p < PASSES; p++) await passOnce();
      const seconds = (performance.now() - start) / 1000;
      top = Math.max(top, (PASSES * totalBytes) / 1e6 / seconds);
    }
    return top;
  }

  const dir = await Deno.makeTempDir({ prefix: "kiseki-cache-bench-" });
  const rows: Row[] = [];
  try {
    const fetchOf = (i: number) => () => Promise.resolve(sealed[i]!);

    // L1: every chunk fits; the first pass fills it.
    const l1Cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 2 * totalBytes, l2: null });
    for (let i = 0; i < CHUNKS; i++) await l1Cache.read(ids[i]!, fetchOf(i), open);
    const l1 = await best(async () => {
      for (let i = 0; i < CHUNKS; i++) reply.set(await l1Cache.read(ids[i]!, fetchOf(i), open));
    });
    await l1Cache.close();
    const plainSet = sealed.map((s) => s.subarray(NONCE_BYTES, NONCE_BYTES + CHUNK_BYTES));
    const memcpy = await best(() => {
      for (let i = 0; i < CHUNKS; i++) reply.set(plainSet[i]!);
      return Promise.resolve();
    });
    rows.push(row("l1 hit", l1, "memcpy", memcpy));

    // L2: L1 holds nothing, so every read is an L2 hit.
    const l2 = await DiskL2Store.open({ dir: `${dir}/l2`, maxBytes: 2 * totalBytes });
    const l2Cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 0, l2 });
    for (let i = 0; i < CHUNKS; i++) await l2Cache.read(ids[i]!, fetchOf(i), open);
    await l2.flush();
    const l2Hit = await best(async () => {
      for (let i = 0; i < CHUNKS; i++) reply.set(await l2Cache.read(ids[i]!, fetchOf(i), open));
    });
    const stats = l2Cache.stats();
    if (stats.fetches !== CHUNKS) throw new Error(`L2 rows refetched: ${stats.fetches} fetches`);
    const l2Raw = await best(async () => {
      for (let i = 0; i < CHUNKS; i++) {
        const got = await l2.read(ids[i]!);
        if (got.kind !== "hit") throw new Error(`L2 entry ${i}: ${got.kind}`);
        reply.set(got.sealed.subarray(0, CHUNK_BYTES));
      }
    });
    await l2Cache.close();
    const fioPath = `${dir}/fio-file`;
    const fill = new Uint8Array(totalBytes);
    prng.fill(fill);
    await Deno.writeFile(fioPath, fill);
    const fio = await fioRead(fioPath, totalBytes);
    if (fio === null) print("no fio ceiling: fio not installed or failed");
    rows.push(row("l2 hit (read, crc, open)", l2Hit, "fio read", fio));
    rows.push(row("l2 raw read (read, crc)", l2Raw, "fio read", fio));

    // Misses: fetched from memory, opened, kept in L1 (L2 off so disk writes do not count).
    const openOnly = await best(async () => {
      for (let i = 0; i < CHUNKS; i++) reply.set(await open(sealed[i]!));
    });
    let missCache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1, l2: null });
    const miss = await best(async () => {
      await missCache.close();
      missCache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1, l2: null });
      for (let i = 0; i < CHUNKS; i++) reply.set(await missCache.read(ids[i]!, fetchOf(i), open));
    });
    await missCache.close();
    rows.push(row("miss (fetch, open, fill)", miss, `${aead.implementation} open`, openOnly));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  print(
    `client cache warm reads: ${CHUNKS} x 1 MiB chunks, ${PASSES} passes, best of ${ROUNDS}; ` +
      `aead ${aead.implementation}, crc32c ${crc.name}; MB/s = 10^6 B/s`,
  );
  printTable(
    print,
    ["path", "MB/s", "ceiling", "ceiling MB/s", "ratio"],
    rows.map((r) => [
      r.path,
      r.mbPerSecond,
      r.ceiling,
      r.ceilingMbPerSecond ?? "-",
      r.ratio ?? "-",
    ]),
    { leftColumns: 1 },
  );
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        mode: QUICK ? "quick" : "full",
        chunkBytes: CHUNK_BYTES,
        chunks: CHUNKS,
        aead: aead.implementation,
        crc32c: crc.name,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
}

function row(path: string, mb: number, ceiling: string, ceilingMb: number | null): Row {
  return {
    path,
    mbPerSecond: Math.round(mb),
    ceiling,
    ceilingMbPerSecond: ceilingMb === null ? null : Math.round(ceilingMb),
    ratio: ceilingMb === null ? null : Math.round((mb / ceilingMb) * 1000) / 1000,
  };
}

if (import.meta.main) await main();
