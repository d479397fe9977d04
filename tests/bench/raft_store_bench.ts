// Raft log persist() latency against the disk's own sync cost: LmdbRaftLogStore.persist() for
// a Ready of 1 and of 64 entries of 1 KiB, and 16 shards persisting in one turn (one shared
// commit), each behind the write-ahead log (one append + fdatasync; lmdb checkpointed in the
// background) and on lmdb alone (one lmdb transaction: pages, fdatasync, an O_DSYNC meta
// write), taken in turns; a plain file write + fdatasync of the same sizes in the same
// directory is the floor.
//
//   deno run -A tests/bench/raft_store_bench.ts [--quick] [--dir=/path/on/the/disk]
//
// Latencies are per call, in milliseconds, p50 and p90 over the samples. The environment is
// page-encrypted as on a node (page key sealed under a random KEK).

import { LmdbRaftLogStore, openRaftLogEnv } from "../../mod/log/mod.ts";
import { selectAead } from "../../mod/crypto/mod.ts";
import { SealedPageKeys } from "../../mod/keys/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import type { Entry } from "../../mod/raft/mod.ts";

const QUICK = Deno.args.includes("--quick");
const SAMPLES = QUICK ? 50 : 400;
const ENTRY_BYTES = 1024;
const dirArg = Deno.args.find((a) => a.startsWith("--dir="))?.slice("--dir=".length);

function percentile(samples: number[], p: number): number {
  const sorted = samples.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

interface Row {
  what: string;
  p50Ms: number;
  p90Ms: number;
}

const rows: Row[] = [];
function record(what: string, samples: number[]): void {
  rows.push({ what, p50Ms: percentile(samples, 0.5), p90Ms: percentile(samples, 0.9) });
}

async function rawSync(dir: string, bytes: number): Promise<number[]> {
  const path = `${dir}/raw.bin`;
  const file = await Deno.open(path, { create: true, write: true, truncate: true });
  const block = new Uint8Array(bytes).fill(7);
  const samples: number[] = [];
  try {
    for (let i = 0; i < SAMPLES; i++) {
      const t0 = performance.now();
      await file.write(block);
      await file.syncData();
      samples.push(performance.now() - t0);
    }
  } finally {
    file.close();
    await Deno.remove(path);
  }
  return samples;
}

function entries(from: number, count: number): Entry[] {
  return Array.from({ length: count }, (_, i) => ({
    term: 1,
    index: from + i,
    type: "normal" as const,
    data: new Uint8Array(ENTRY_BYTES).fill(i & 0xff),
  }));
}

async function persistLatency(
  dir: string,
  batch: number,
  shards: number,
  wal: boolean,
): Promise<number[]> {
  const aead = selectAead(defaultShimOptions());
  const pageKeys = new SealedPageKeys({
    aead,
    kek: await aead.importKey(crypto.getRandomValues(new Uint8Array(32))),
    random: (b) => crypto.getRandomValues(b),
  });
  const env = await openRaftLogEnv({ dataDir: dir, pageKeys, mapSizeBytes: 256 << 20, wal });
  const stores = await Promise.all(
    Array.from({ length: shards }, (_, s) => LmdbRaftLogStore.open({ env, shardId: 1000 + s })),
  );
  const samples: number[] = [];
  try {
    for (let i = 0; i < SAMPLES; i++) {
      for (const store of stores) {
        store.append(entries(store.lastIndex() + 1, batch));
        store.setHardState({ term: 1, vote: 1, commit: store.lastIndex() });
      }
      const t0 = performance.now();
      await Promise.all(stores.map((s) => s.persist()));
      samples.push(performance.now() - t0);
    }
  } finally {
    await Promise.all(stores.map((s) => s.close()));
    await env.close();
    await Deno.remove(`${dir}/raft`, { recursive: true });
  }
  return samples;
}

const dir = dirArg ?? await Deno.makeTempDir({ prefix: "kiseki-raft-bench-" });
try {
  record("raw write 1 KiB + fdatasync", await rawSync(dir, ENTRY_BYTES));
  record("raw write 64 KiB + fdatasync", await rawSync(dir, 64 * ENTRY_BYTES));
  for (
    const [batch, shards, what] of [
      [1, 1, "persist() 1 x 1 KiB"],
      [64, 1, "persist() 64 x 1 KiB"],
      [1, 16, "16 shards x persist() 1 x 1 KiB, one turn"],
    ] as const
  ) {
    record(`${what}, WAL`, await persistLatency(dir, batch, shards, true));
    record(`${what}, lmdb alone`, await persistLatency(dir, batch, shards, false));
  }
} finally {
  if (!dirArg) await Deno.remove(dir, { recursive: true });
}

console.log(`dir ${dir}, ${SAMPLES} samples each`);
console.log("what".padEnd(56) + "p50 ms".padStart(10) + "p90 ms".padStart(10));
for (const r of rows) {
  console.log(
    r.what.padEnd(56) + r.p50Ms.toFixed(3).padStart(10) + r.p90Ms.toFixed(3).padStart(10),
  );
}
