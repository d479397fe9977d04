import assert from "node:assert/strict";
import { ecPool, Prng, randomChunk, SimHarness, type TestChunk } from "./_testing.ts";
import type { LocalChunkStore } from "./chunk_store.ts";
import { ChunkGc } from "./gc.ts";
import { LmdbHoldStore } from "./holds.ts";
import { ChunkScrubber } from "./scrub.ts";
import { RECORD_HEADER_BYTES } from "./segment_store.ts";

function used(store: LocalChunkStore): number {
  return store.devices().reduce((n, d) => n + d.usedBytes, 0);
}

function live(store: LocalChunkStore): number {
  return store.devices().reduce((n, d) => n + d.liveBytes, 0);
}

async function fill(
  store: LocalChunkStore,
  seed: number,
  count: number,
  size: number,
): Promise<TestChunk[]> {
  const prng = new Prng(seed);
  const chunks = Array.from({ length: count }, () => randomChunk(prng, size));
  // In groups, so the batches (and segments) interleave chunks that will live and die.
  for (let i = 0; i < chunks.length; i += 8) {
    await Promise.all(chunks.slice(i, i + 8).map((c) => store.put(c.id, c.bytes)));
  }
  return chunks;
}

function smallSegments() {
  return ecPool(6, { deviceSizeBytes: 8 << 20, segmentSizeBytes: 256 << 10 });
}

Deno.test("ChunkGc erases unreferenced chunks and compaction returns their space", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    const chunks = await fill(h.store, 1, 60, 60_000);
    const usedBefore = used(h.store);
    for (const c of chunks) await h.store.decRef(c.id);
    assert.equal(used(h.store), usedBefore, "decRef alone frees nothing");
    const gc = new ChunkGc(h.store, { holds: null });
    const report = await gc.run();
    assert.equal(report.erased, 60);
    assert.equal(report.bytesErased, 60 * 60_000);
    assert.ok(report.segmentsFreed > 0);
    assert.equal(live(h.store), 0);
    assert.equal(used(h.store), 0, "every segment is free again");
    assert.equal(h.store.index.count(), 0);
    for (const c of chunks.slice(0, 5)) assert.equal(await h.store.stat(c.id), null);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkGc compaction moves live records out of mostly dead segments", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    const chunks = await fill(h.store, 2, 80, 50_000);
    const keep = chunks.filter((_, i) => i % 5 === 0);
    for (const c of chunks) if (!keep.includes(c)) await h.store.decRef(c.id);
    const usedBefore = used(h.store);
    const gc = new ChunkGc(h.store, { holds: null, compactBytesPerStep: 64 << 10 });
    const report = await gc.run();
    assert.equal(report.erased, 64);
    assert.ok(report.bytesMoved > 0, "live records were copied forward");
    assert.ok(used(h.store) < usedBefore / 2, `used ${used(h.store)} of ${usedBefore}`);
    for (const c of keep) {
      const read = await h.store.read(c.id);
      assert.deepEqual(read.bytes, c.bytes);
      assert.deepEqual(read.faults, []);
    }
    await h.reopen();
    for (const c of keep) assert.deepEqual(await h.store.get(c.id), c.bytes);
    assert.deepEqual(h.store.segments.audit(), []);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkGc leaves chunks under a retention hold, and erases them once it is lifted", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const holds = new LmdbHoldStore(h.store.env);
    const prng = new Prng(3);
    const held = randomChunk(prng, 5000);
    const tenants = randomChunk(prng, 5000);
    const plain = randomChunk(prng, 5000);
    await h.store.put(held.id, held.bytes);
    await h.store.put(tenants.id, tenants.bytes, { tenant: "acme" });
    await h.store.put(plain.id, plain.bytes, { tenant: "globex" });
    await holds.place({ id: "case-7", kind: "chunks", chunkIds: [held.id] });
    await holds.place({ id: "acme-retention", kind: "tenant", tenant: "acme" });
    for (const c of [held, tenants, plain]) await h.store.decRef(c.id);
    const gc = new ChunkGc(h.store, { holds });
    const first = await gc.run();
    assert.equal(first.erased, 1);
    assert.equal(first.held, 2);
    assert.equal(await h.store.stat(plain.id), null);
    assert.ok((await h.store.stat(held.id)) !== null);
    assert.ok((await h.store.stat(tenants.id)) !== null);
    await holds.release("case-7");
    await holds.release("acme-retention");
    const second = await gc.run();
    assert.equal(second.erased, 2);
    assert.equal(h.store.index.count(), 0);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkGc does not erase a chunk referenced again before it ran", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const c = randomChunk(new Prng(4), 4000);
    await h.store.put(c.id, c.bytes);
    await h.store.decRef(c.id);
    assert.deepEqual(await h.store.put(c.id, c.bytes), { created: false });
    const report = await new ChunkGc(h.store, { holds: null }).run();
    assert.equal(report.erased, 0);
    assert.deepEqual(await h.store.get(c.id), c.bytes);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkGc.step() does bounded work and resumes", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const chunks = await fill(h.store, 5, 23, 1000);
    for (const c of chunks) await h.store.decRef(c.id);
    const gc = new ChunkGc(h.store, { holds: null, chunksPerStep: 5 });
    const steps = [];
    for (;;) {
      const step = await gc.step();
      assert.ok(step.examined <= 5);
      steps.push(step);
      if (step.passComplete) break;
    }
    assert.equal(steps.length, 5);
    assert.equal(steps.reduce((n, s) => n + s.erased, 0), 23);
  } finally {
    await h.close();
  }
});

Deno.test("compaction never copies a damaged record forward; it marks it lost", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    const chunks = await fill(h.store, 6, 40, 50_000);
    const keep = chunks[0]!;
    for (const c of chunks.slice(1)) await h.store.decRef(c.id);
    const stat = (await h.store.stat(keep.id))!;
    const f = stat.fragments[2]!;
    h.pool.sim(h.poolIndex(f.device)).flipBits(f.offsetBytes + RECORD_HEADER_BYTES + 7, 0x80);
    await new ChunkGc(h.store, { holds: null }).run();
    const after = (await h.store.stat(keep.id))!;
    // 39 of 40 chunks died, so every segment was compacted: the rotten record was not copied.
    assert.equal(after.fragments[2]!.lost, true);
    assert.ok(after.fragments.every((g, i) => i === 2 || !g.lost));
    assert.deepEqual(await h.store.get(keep.id), keep.bytes);
  } finally {
    await h.close();
  }
});

Deno.test("a lost fragment whose space was reused never frees the new owner's record", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    const chunks = await fill(h.store, 7, 40, 50_000);
    const keep = chunks[0]!;
    for (const c of chunks.slice(1)) await h.store.decRef(c.id);
    const lostAt = (await h.store.stat(keep.id))!.fragments[2]!;
    h.pool.sim(h.poolIndex(lostAt.device)).flipBits(lostAt.offsetBytes + RECORD_HEADER_BYTES, 1);
    await new ChunkGc(h.store, { holds: null }).run();
    assert.equal((await h.store.stat(keep.id))!.fragments[2]!.lost, true);
    // New chunks of the same size reuse the freed segments, and so the lost record's place.
    const fresh = await fill(h.store, 8, 40, 50_000);
    let reused = false;
    for (const c of fresh) {
      const stat = (await h.store.stat(c.id))!;
      if (
        stat.fragments.some((f) =>
          f.device === lostAt.device && f.offsetBytes === lostAt.offsetBytes
        )
      ) {
        reused = true;
      }
    }
    assert.ok(reused, "the test needs the lost record's offset to be reused");
    const pass = await new ChunkScrubber(h.store).runPass();
    assert.equal(pass.fragmentsRepaired, 1);
    assert.deepEqual(h.store.segments.audit(), []);
    // Every fragment the index points at is still a live extent (compaction would move it).
    for (const c of [keep, ...fresh]) {
      const stat = (await h.store.stat(c.id))!;
      for (const f of stat.fragments) {
        assert.ok(h.store.segments.holds(f, c.id, f.index), `fragment ${f.index} lost its extent`);
      }
    }
    await new ChunkGc(h.store, { holds: null }).run();
    for (const c of [keep, ...fresh]) {
      const read = await h.store.read(c.id);
      assert.deepEqual(read.bytes, c.bytes);
      assert.deepEqual(read.faults, []);
    }
    assert.deepEqual(h.store.segments.audit(), []);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkGc.step() erases a whole batch of chunks in one index commit", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    const chunks = await fill(h.store, 9, 40, 20_000);
    for (const c of chunks) await h.store.decRef(c.id);
    const env = h.store.env;
    const original = env.transaction.bind(env);
    let commits = 0;
    env.transaction = (fn) => {
      commits++;
      return original(fn);
    };
    try {
      const step = await new ChunkGc(h.store, { holds: null, chunksPerStep: 64 }).step();
      assert.equal(step.erased, 40);
      assert.equal(commits, 1, "one commit for the batch, not one per chunk");
    } finally {
      env.transaction = original;
    }
    assert.equal(live(h.store), 0);
    assert.deepEqual(h.store.segments.audit(), []);
  } finally {
    await h.close();
  }
});

Deno.test("compaction brings used bytes within one segment per device of live bytes", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    // Two chunks in three live: each segment stays about two-thirds live, above the
    // mostly-dead threshold, so only the device-wide dead-byte bound reclaims the rest.
    const chunks = await fill(h.store, 10, 150, 40_000);
    const keep = chunks.filter((_, i) => i % 3 !== 0);
    for (const c of chunks) if (!keep.includes(c)) await h.store.decRef(c.id);
    const gc = new ChunkGc(h.store, { holds: null });
    await gc.run();
    const segment = h.pool.spec.segmentSizeBytes;
    for (const d of h.store.devices()) {
      assert.ok(
        d.usedBytes - d.liveBytes <= segment,
        `device ${d.id}: used ${d.usedBytes}, live ${d.liveBytes}, segment ${segment}`,
      );
    }
    for (const c of keep) assert.deepEqual(await h.store.get(c.id), c.bytes);
    await h.reopen();
    for (const c of keep) assert.deepEqual(await h.store.get(c.id), c.bytes);
    assert.deepEqual(h.store.segments.audit(), []);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkGc.start() reclaims released chunks in the background, then stops", async () => {
  const h = await SimHarness.create(smallSegments());
  const gc = new ChunkGc(h.store, { holds: null });
  const background = gc.start({ idlePollMs: 5, recheckMs: 50, logger: h.log.logger });
  try {
    for (let round = 0; round < 3; round++) {
      const chunks = await fill(h.store, 20 + round, 60, 30_000);
      for (const c of chunks) await h.store.decRef(c.id);
      const deadline = Date.now() + 10_000;
      while ((used(h.store) > 0 || h.store.index.count() > 0) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(h.store.index.count(), 0, `round ${round}: every chunk erased`);
      assert.equal(used(h.store), 0, `round ${round}: every segment free`);
    }
    assert.equal(background.stats.erased, 180);
    assert.ok(background.stats.segmentsFreed > 0);
    assert.equal(background.stats.failures, 0);
  } finally {
    await background.stop();
    await h.close();
  }
});

Deno.test("a put that finds the pool full waits for a background GC to reclaim deleted space", async () => {
  const h = await SimHarness.create(smallSegments());
  const gc = new ChunkGc(h.store, { holds: null });
  // A GC that would not look again for a minute: only the full put can wake it.
  const background = gc.start({ idlePollMs: 60_000, recheckMs: 60_000, logger: h.log.logger });
  try {
    const prng = new Prng(41);
    const written: TestChunk[] = [];
    let refused: unknown = null;
    for (let i = 0; i < 400 && refused === null; i++) {
      const c = randomChunk(prng, 200_000);
      try {
        await h.store.put(c.id, c.bytes);
        written.push(c);
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused !== null, "the pool filled");
    assert.ok(String(refused).includes("full"), String(refused));
    // Released but not reclaimed: the pool is still full until GC runs.
    for (const c of written) await h.store.decRef(c.id);
    assert.ok(used(h.store) > 0);
    const next = randomChunk(prng, 200_000);
    await h.store.put(next.id, next.bytes);
    assert.deepEqual(await h.store.get(next.id), next.bytes);
    assert.ok(background.stats.segmentsFreed > 0, "the put was taken once GC freed segments");
  } finally {
    await background.stop();
    await h.close();
  }
});

Deno.test("without a background GC a full pool refuses at once", async () => {
  const h = await SimHarness.create(smallSegments());
  try {
    const prng = new Prng(42);
    const written: TestChunk[] = [];
    const put = async () => {
      const c = randomChunk(prng, 200_000);
      await h.store.put(c.id, c.bytes);
      written.push(c);
    };
    let refused: unknown = null;
    for (let i = 0; i < 400 && refused === null; i++) await put().catch((e) => (refused = e));
    assert.ok(String(refused).includes("full"), String(refused));
    for (const c of written.splice(0)) await h.store.decRef(c.id);
    const started = performance.now();
    await assert.rejects(put(), /full/, "nothing reclaims: refused");
    assert.ok(performance.now() - started < 5_000, "refused without waiting");
  } finally {
    await h.close();
  }
});

Deno.test("a power cut in the middle of GC and compaction loses no live chunk", async () => {
  for (const turns of [0, 1, 3, 8, 20, 50]) {
    const h = await SimHarness.create(smallSegments());
    try {
      const chunks = await fill(h.store, 30 + turns, 120, 40_000);
      const keep = chunks.filter((_, i) => i % 3 !== 0);
      for (const c of chunks) if (!keep.includes(c)) await h.store.decRef(c.id);
      // GC erases and compacts (moving the live two thirds) while the power goes.
      const running = new ChunkGc(h.store, { holds: null, compactBytesPerStep: 64 << 10 })
        .run().catch(() => null);
      for (let i = 0; i < turns; i++) await new Promise((r) => setTimeout(r, 0));
      for (let i = 0; i < 6; i++) h.pool.sim(i).crash({ tear: true });
      await running;
      await h.reopen();
      for (const c of keep) {
        assert.deepEqual(await h.store.get(c.id), c.bytes, `after ${turns} turns`);
      }
      // The store carries on: GC finishes what the cut interrupted.
      await new ChunkGc(h.store, { holds: null }).run();
      for (const c of keep) assert.deepEqual(await h.store.get(c.id), c.bytes);
      assert.deepEqual(h.store.segments.audit(), []);
    } finally {
      await h.close();
    }
  }
});
