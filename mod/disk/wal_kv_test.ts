import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { type KvEnv, type KvRangeOptions, openKvEnv } from "./lmdb.ts";
import { WalKvEnv } from "./wal_kv.ts";

const MAP_BYTES = 16 << 20;

function key(n: number): Uint8Array {
  return Uint8Array.of(n >> 8, n & 0xff);
}

function dump(env: KvEnv, options: KvRangeOptions): string[] {
  return [...env.table("t").range(options)].map((e) => `${e.key.join(".")}=${e.value.join(".")}`);
}

Deno.test("WalKvEnv reads as lmdb alone does, before and after checkpoints and a reopen", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-walkv-" });
  const prng = new Prng(77);
  const plain = await openKvEnv({ path: `${dir}/plain`, pageKeys: null, mapSizeBytes: MAP_BYTES });
  const open = async () =>
    WalKvEnv.open({
      inner: await openKvEnv({ path: `${dir}/wal`, pageKeys: null, mapSizeBytes: MAP_BYTES }),
      walDir: `${dir}/wal/log`,
      segmentBytes: 64 << 10,
      // Checkpoints at random moments: some reads see the overlay, some lmdb, some both.
      checkpointDelayMs: 1,
      checkpointBytes: 4096,
    });
  let wal = await open();
  try {
    const compare = () => {
      for (let i = 0; i < 4; i++) {
        const a = prng.nextInt(300);
        const b = a + prng.nextInt(300);
        const options: KvRangeOptions = {
          ...(prng.nextInt(3) > 0 ? { start: key(a) } : {}),
          ...(prng.nextInt(3) > 0 ? { end: key(b) } : {}),
          ...(prng.nextInt(2) > 0 ? { reverse: true } : {}),
          ...(prng.nextInt(2) > 0 ? { limit: prng.nextInt(40) } : {}),
        };
        assert.deepEqual(dump(wal, options), dump(plain, options), JSON.stringify(options));
        const k = key(prng.nextInt(300));
        assert.deepEqual(wal.table("t").getSync(k), plain.table("t").getSync(k));
      }
    };
    for (let round = 0; round < 200; round++) {
      const ops: [number, number | null][] = [];
      for (let i = 0; i < 1 + prng.nextInt(12); i++) {
        ops.push([prng.nextInt(300), prng.nextInt(4) === 0 ? null : prng.nextInt(256)]);
      }
      const commit = (env: KvEnv) =>
        env.transaction((txn) => {
          const t = env.table("t");
          for (const [k, v] of ops) {
            if (v === null) txn.delete(t, key(k));
            else txn.put(t, key(k), Uint8Array.of(v, round & 0xff));
          }
        });
      // Some rounds overlap two commits of the WAL environment (one group commit).
      if (round % 3 === 0) await Promise.all([commit(wal), commit(plain)]);
      else {
        await commit(wal);
        await commit(plain);
      }
      compare();
      if (round % 50 === 49) {
        await wal.close();
        wal = await open();
        compare();
      }
    }
    await wal.checkpoint();
    assert.equal(wal.stats().overlayBytes, 0);
    assert.equal(wal.stats().checkpointedLsn, wal.stats().wal!.lastLsn);
    // Everything is in lmdb: at most the segment being written is left.
    assert.equal(wal.stats().wal!.segments, 1);
    compare();
  } finally {
    await wal.close();
    await plain.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("WalKvEnv without a log: a commit is visible at once and in lmdb once synced() resolves", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-walkv-" });
  const inner = await openKvEnv({ path: `${dir}/env`, pageKeys: null, mapSizeBytes: MAP_BYTES });
  const env = await WalKvEnv.open({ inner, walDir: null, checkpointDelayMs: 50 });
  try {
    await env.transaction((txn) => txn.put(env.table("t"), key(1), Uint8Array.of(9)));
    assert.deepEqual(env.table("t").getSync(key(1)), Uint8Array.of(9));
    assert.equal(inner.table("t").getSync(key(1)), undefined);
    await env.synced();
    assert.deepEqual(inner.table("t").getSync(key(1)), Uint8Array.of(9));
    // Nothing but lmdb: no log directory, no checkpoint table.
    assert.deepEqual([...Deno.readDirSync(`${dir}/env`)].map((e) => e.name).sort(), [
      "data.mdb",
      "lock.mdb",
    ]);
    await env.synced(); // nothing new: at once
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
});
