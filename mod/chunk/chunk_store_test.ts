import assert from "node:assert/strict";
import {
  codecs,
  ecPool,
  openTestEnv,
  Prng,
  quietLogger,
  randomChunk,
  SimHarness,
  SimPool,
  type TestChunk,
} from "./_testing.ts";
import { type ChunkStoreHarness, defineChunkStoreConformance } from "./chunk_store_conformance.ts";
import { ChunkStoreError, type ChunkStoreErrorCode, LocalChunkStore } from "./chunk_store.ts";
import { FileDisk, injectCommitFailure } from "../disk/mod.ts";
import { renderMetrics } from "../obs/mod.ts";
import { parsePoolSpecs } from "./pool.ts";
import { RECORD_HEADER_BYTES } from "./segment_store.ts";

function isCode(code: ChunkStoreErrorCode) {
  return (e: unknown) => e instanceof ChunkStoreError && e.code === code;
}

defineChunkStoreConformance(
  "LocalChunkStore (simulated devices, EC 4+2)",
  () => SimHarness.create(ecPool()),
);

defineChunkStoreConformance(
  "LocalChunkStore (simulated O_DIRECT devices, 2 copies)",
  () =>
    SimHarness.create(
      new SimPool({
        devices: 3,
        durability: { kind: "copies", copies: 2 },
        deviceSizeBytes: 16 << 20,
        segmentSizeBytes: 2 << 20,
        alignmentBytes: 4096,
      }),
    ),
);

defineChunkStoreConformance("LocalChunkStore (device files via selectDisk, EC 4+2)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-chunk-files-" });
  const [pool] = parsePoolSpecs(
    JSON.stringify({ name: "files", devices: 6, deviceSize: "16MiB", segmentSize: "2MiB" }),
    { dataDir: dir },
  );
  const log = quietLogger();
  const open = () =>
    LocalChunkStore.open({
      pool: pool!,
      codecs,
      indexDir: `${dir}/chunks/index`,
      indexPageKeys: null,
      logger: log.logger,
    });
  const h: ChunkStoreHarness = {
    store: await open(),
    async reopen() {
      await h.store.close();
      h.store = await open();
    },
    async close() {
      await h.store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return h;
});

defineChunkStoreConformance("LocalChunkStore (device files via FileDisk, 2 copies)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-chunk-filedisk-" });
  const [pool] = parsePoolSpecs(
    JSON.stringify({ name: "plain", devices: 3, deviceSize: "16MiB", segmentSize: "2MiB" }),
    { dataDir: dir },
  );
  const log = quietLogger();
  const open = () =>
    LocalChunkStore.open({
      pool: pool!,
      codecs,
      indexDir: `${dir}/chunks/index`,
      indexPageKeys: null,
      openDevice: async (spec) => {
        await Deno.mkdir(`${dir}/chunks/devices`, { recursive: true });
        return await FileDisk.open(spec.path, { sizeBytes: spec.sizeBytes });
      },
      logger: log.logger,
    });
  const h: ChunkStoreHarness = {
    store: await open(),
    async reopen() {
      await h.store.close();
      h.store = await open();
    },
    async close() {
      await h.store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return h;
});

async function putAll(store: LocalChunkStore, chunks: TestChunk[]): Promise<void> {
  await Promise.all(chunks.map((c) => store.put(c.id, c.bytes)));
}

Deno.test("LocalChunkStore.put() spreads EC 4+2 fragments over six distinct devices", async () => {
  const h = await SimHarness.create(ecPool(9));
  try {
    const prng = new Prng(1);
    for (let i = 0; i < 30; i++) {
      const c = randomChunk(prng, 1 + prng.nextInt(50_000));
      await h.store.put(c.id, c.bytes);
      const stat = (await h.store.stat(c.id))!;
      assert.equal(stat.durability, "ec:4+2");
      assert.equal(stat.fragments.length, 6);
      assert.equal(new Set(stat.fragments.map((f) => f.device)).size, 6);
      assert.equal(stat.fragmentBytes % 64, 0);
      assert.ok(stat.fragmentBytes * 4 >= c.bytes.length);
    }
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore.put() groups concurrent puts into few writes and syncs", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const prng = new Prng(2);
    const chunks = Array.from({ length: 64 }, () => randomChunk(prng, 8000));
    const before = h.pool.spec.devices.map((_, i) => h.pool.faulty(i).calls);
    await putAll(h.store, chunks);
    for (let i = 0; i < 6; i++) {
      const calls = h.pool.faulty(i).calls - before[i]!;
      // One submit and one sync per batch; 64 puts arriving together make a handful of batches.
      assert.ok(calls <= 8, `device ${i}: ${calls} calls for 64 puts`);
    }
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore.read() rebuilds from any four fragments and fails clearly with three", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const c = randomChunk(new Prng(3), 200_000);
    await h.store.put(c.id, c.bytes);
    const stat = (await h.store.stat(c.id))!;
    const rot = (fragment: number) => {
      const f = stat.fragments[fragment]!;
      h.pool.sim(h.poolIndex(f.device)).flipBits(f.offsetBytes + RECORD_HEADER_BYTES + 100, 0x08);
    };
    assert.deepEqual((await h.store.read(c.id)).reconstructed, []);
    rot(1);
    rot(4);
    const degraded = await h.store.read(c.id);
    assert.deepEqual(degraded.bytes, c.bytes);
    assert.deepEqual(degraded.reconstructed, [1]);
    assert.deepEqual(degraded.faults.map((f) => [f.fragment, f.fault]), [[1, "checksum"], [
      4,
      "checksum",
    ]]);
    rot(0);
    await assert.rejects(h.store.get(c.id), (e: unknown) => {
      assert.ok(isCode("unrecoverable")(e), String(e));
      assert.match((e as Error).message, /fewer than 4 good fragments/);
      return true;
    });
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore keeps serving reads with a device offline and writes around it", async () => {
  const h = await SimHarness.create(ecPool(7));
  try {
    const prng = new Prng(4);
    const chunks = Array.from({ length: 20 }, () => randomChunk(prng, 30_000));
    await putAll(h.store, chunks);
    await h.store.close();
    h.pool.failOpen(2);
    await h.reopen();
    for (const c of chunks) assert.deepEqual(await h.store.get(c.id), c.bytes);
    const more = Array.from({ length: 20 }, () => randomChunk(prng, 30_000));
    await putAll(h.store, more);
    const offline = h.store.devices().find((d) => d.id === "test-2")!.device;
    for (const c of more) {
      const stat = (await h.store.stat(c.id))!;
      assert.ok(stat.fragments.every((f) => f.device !== offline));
    }
    // With two of seven offline, EC 4+2 cannot find six distinct devices.
    await h.store.close();
    h.pool.failOpen(3);
    await h.reopen();
    const c = randomChunk(prng, 100);
    await assert.rejects(h.store.put(c.id, c.bytes), isCode("insufficient_devices"));
  } finally {
    h.pool.failOpen(2, false);
    h.pool.failOpen(3, false);
    await h.close();
  }
});

Deno.test("LocalChunkStore.put() moves fragments off a device whose write fails", async () => {
  const h = await SimHarness.create(ecPool(7));
  try {
    const prng = new Prng(5);
    h.pool.faulty(3).failWhen((call) => call.kind === "sync", "EIO", { times: 1 });
    const chunks = Array.from({ length: 10 }, () => randomChunk(prng, 12_000));
    await putAll(h.store, chunks);
    const failed = h.store.devices().find((d) => d.id === "test-3")!;
    assert.equal(failed.status, "failed");
    for (const c of chunks) {
      const stat = (await h.store.stat(c.id))!;
      assert.ok(stat.fragments.every((f) => f.device !== failed.device));
      assert.equal(new Set(stat.fragments.map((f) => f.device)).size, 6);
      assert.deepEqual(await h.store.get(c.id), c.bytes);
    }
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore: acknowledged puts survive a power cut on every device", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const prng = new Prng(6);
    const chunks = Array.from({ length: 30 }, () => randomChunk(prng, 1 + prng.nextInt(40_000)));
    await putAll(h.store, chunks);
    // A put in flight when the power goes is not acknowledged and may vanish.
    const late = randomChunk(prng, 5000);
    const pending = h.store.put(late.id, late.bytes).catch(() => {});
    for (let i = 0; i < 6; i++) h.pool.sim(i).crash({ tear: false });
    await pending;
    await h.reopen();
    for (const c of chunks) assert.deepEqual(await h.store.get(c.id), c.bytes);
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore refuses new chunks above the fill threshold but still dedups", async () => {
  const h = await SimHarness.create(
    ecPool(6, { deviceSizeBytes: 2 << 20, segmentSizeBytes: 256 << 10, fullPercent: 50 }),
  );
  try {
    const prng = new Prng(7);
    const stored: TestChunk[] = [];
    let error: unknown = null;
    for (let i = 0; i < 100 && error === null; i++) {
      const c = randomChunk(prng, 200_000);
      try {
        await h.store.put(c.id, c.bytes);
        stored.push(c);
      } catch (e) {
        error = e;
      }
    }
    assert.ok(isCode("pool_full")(error), String(error));
    assert.match((error as Error).message, /below 50% used/);
    assert.ok(stored.length >= 5, `only ${stored.length} chunks fit`);
    assert.deepEqual(await h.store.put(stored[0]!.id, stored[0]!.bytes), { created: false });
    const c = randomChunk(prng, h.store.chunkBytesMax + 1);
    await assert.rejects(h.store.put(c.id, c.bytes), isCode("too_large"));
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore with copies places each copy on a distinct node when it can", async () => {
  const pool = new SimPool({
    devices: 6,
    durability: { kind: "copies", copies: 3 },
    deviceSizeBytes: 4 << 20,
    nodeOf: (i) => `n${i % 3}`,
  });
  const h = await SimHarness.create(pool);
  try {
    const prng = new Prng(8);
    for (let i = 0; i < 20; i++) {
      const c = randomChunk(prng, 2000);
      await h.store.put(c.id, c.bytes);
      const stat = (await h.store.stat(c.id))!;
      const nodes = stat.fragments.map((f) => pool.spec.devices[h.poolIndex(f.device)]!.node);
      assert.equal(new Set(nodes).size, 3, `copies on nodes ${nodes}`);
    }
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore.close() makes later calls fail with a typed error", async () => {
  const h = await SimHarness.create(ecPool());
  const c = randomChunk(new Prng(9), 10);
  await h.store.close();
  await assert.rejects(h.store.put(c.id, c.bytes), isCode("closed"));
  await assert.rejects(h.store.get(c.id), isCode("closed"));
  await Deno.remove(h.dir, { recursive: true });
});

Deno.test("LocalChunkStore with an external index environment leaves it open", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-chunk-env-" });
  const env = await openTestEnv(dir);
  try {
    const pool = ecPool();
    const store = await LocalChunkStore.open({
      pool: pool.spec,
      codecs,
      env,
      openDevice: pool.open,
      logger: quietLogger().logger,
    });
    const c = randomChunk(new Prng(10), 1000);
    await store.put(c.id, c.bytes);
    await store.close();
    assert.ok(env.table("chunk_index").getSync(c.id) !== undefined, "env still usable");
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("LocalChunkStore exports chunk, EC and per-pool capacity metrics", async () => {
  const h = await SimHarness.create(ecPool(6, { name: "metrics" }));
  try {
    const c = randomChunk(new Prng(11), 40_000);
    await h.store.put(c.id, c.bytes);
    await h.store.put(c.id, c.bytes);
    const stat = (await h.store.stat(c.id))!;
    const f = stat.fragments[0]!;
    h.pool.sim(h.poolIndex(f.device)).flipBits(f.offsetBytes + RECORD_HEADER_BYTES, 1);
    await h.store.get(c.id);
    const text = await renderMetrics();
    const value = (name: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${name}{pool="metrics"`));
      assert.ok(line !== undefined, `${name} for pool metrics is exported`);
      return Number(line.split(" ").at(-1));
    };
    assert.equal(value("kiseki_pool_capacity_bytes"), 6 * 7 * (1 << 20));
    assert.ok(value("kiseki_pool_used_bytes") > 0);
    assert.equal(value("kiseki_pool_live_bytes"), 6 * (RECORD_HEADER_BYTES + stat.fragmentBytes));
    assert.equal(value("kiseki_chunk_dedup_hits_total"), 1);
    assert.equal(value("kiseki_chunk_bytes_written_total"), 6 * stat.fragmentBytes);
    assert.ok(value("kiseki_chunk_bytes_read_total") >= 4 * stat.fragmentBytes);
    assert.equal(value("kiseki_chunk_degraded_reads_total"), 1);
    assert.ok(value("kiseki_ec_encode_seconds_count") >= 1);
    assert.equal(value("kiseki_ec_decode_seconds_count"), 1);
    assert.match(text, /kiseki_pool_devices\{pool="metrics",status="ok"\} 6/);
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore recovers from failed index commits: a damaged environment is rebuilt, puts are tried again, full is pool_full", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const prng = new Prng(41);
    const before = Array.from({ length: 24 }, () => randomChunk(prng, 1 + prng.nextInt(40_000)));
    await putAll(h.store, before);
    // lmdb finds its free list inconsistent on the next commit: the batch fails, the
    // environment rebuilds itself, the store reads its segment state back, and the puts of
    // the failed batch go in again: their callers see success.
    injectCommitFailure(
      h.store.env,
      "MDB_BAD_TXN: Transaction must abort: freelist entry 12 had bad/duplicate entries",
    );
    const during = Array.from({ length: 16 }, () => randomChunk(prng, 1 + prng.nextInt(40_000)));
    await putAll(h.store, during);
    assert.equal(h.store.env.rebuilds, 1);
    // A full filesystem: the batch's callers hear pool_full (S3 507), and the store goes on.
    injectCommitFailure(h.store.env, "No space left on device");
    const refused = randomChunk(prng, 9_000);
    await assert.rejects(h.store.put(refused.id, refused.bytes), isCode("pool_full"));
    assert.equal(await h.store.has(refused.id), false);
    // A reference count change that fails is refused, and the next one works.
    injectCommitFailure(h.store.env, "MDB_CORRUPTED: Located page was wrong type");
    await assert.rejects(h.store.incRef(before[0]!.id), isCode("unavailable"));
    assert.equal(await h.store.incRef(before[0]!.id), 2);
    const after = Array.from({ length: 16 }, () => randomChunk(prng, 1 + prng.nextInt(40_000)));
    await putAll(h.store, after);
    await h.store.put(refused.id, refused.bytes);
    for (const c of [...before, ...during, ...after, refused]) {
      assert.deepEqual(await h.store.get(c.id), c.bytes);
    }
    // Live counts match the index exactly: nothing the failed commits counted stayed live.
    assert.deepEqual(h.store.segments.audit(), []);
    // And all of it is what the next start finds.
    await h.reopen();
    for (const c of [...before, ...during, ...after, refused]) {
      assert.deepEqual(await h.store.get(c.id), c.bytes);
    }
    assert.deepEqual(h.store.segments.audit(), []);
    assert.match(
      await renderMetrics(),
      /kiseki_chunk_index_recoveries_total\{[^}]*kind="damaged"[^}]*\} 2/,
    );
  } finally {
    await h.close();
  }
});

Deno.test("LocalChunkStore.put() with a device keeps the chunk there or refuses it", async () => {
  const h = await SimHarness.create(
    new SimPool({ devices: 3, durability: { kind: "copies", copies: 1 }, name: "pin" }),
  );
  try {
    const prng = new Prng(77);
    for (const device of ["pin-0", "pin-1", "pin-2", "pin-1"]) {
      const c = randomChunk(prng, 5000);
      await h.store.put(c.id, c.bytes, { device });
      assert.equal((await h.store.stat(c.id))!.fragments[0]!.deviceId, device);
    }
    const c = randomChunk(prng, 5000);
    await assert.rejects(
      h.store.put(c.id, c.bytes, { device: "nope" }),
      isCode("insufficient_devices"),
    );
    // A device that cannot be opened takes nothing: the pinned put is refused, not moved.
    await h.store.close();
    h.pool.failOpen(2);
    await h.reopen();
    const d = randomChunk(prng, 5000);
    await assert.rejects(h.store.put(d.id, d.bytes, { device: "pin-2" }), isCode("pool_full"));
    assert.equal(await h.store.has(d.id), false);
    h.pool.failOpen(2, false);
  } finally {
    await h.close();
  }
});
