import assert from "node:assert/strict";
import { ecPool, Prng, randomChunk, SimHarness, SimPool, type TestChunk } from "./_testing.ts";
import type { LocalChunkStore } from "./chunk_store.ts";
import { ChunkScrubber } from "./scrub.ts";
import { RECORD_HEADER_BYTES } from "./segment_store.ts";

async function fill(store: LocalChunkStore, seed: number, count: number): Promise<TestChunk[]> {
  const prng = new Prng(seed);
  const chunks = Array.from({ length: count }, () => randomChunk(prng, 1 + prng.nextInt(30_000)));
  await Promise.all(chunks.map((c) => store.put(c.id, c.bytes)));
  return chunks;
}

async function rot(h: SimHarness, c: TestChunk, fragment: number, at = 5): Promise<void> {
  const f = (await h.store.stat(c.id))!.fragments[fragment]!;
  h.pool.sim(h.poolIndex(f.device)).flipBits(f.offsetBytes + RECORD_HEADER_BYTES + at, 0x20);
}

async function assertClean(store: LocalChunkStore, chunks: TestChunk[]): Promise<void> {
  for (const c of chunks) {
    const read = await store.read(c.id);
    assert.deepEqual(read.bytes, c.bytes);
    assert.deepEqual(read.faults, [], "read needed no reconstruction");
  }
}

Deno.test("ChunkScrubber finds flipped bytes and rewrites the fragments in place", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const chunks = await fill(h.store, 1, 30);
    await rot(h, chunks[0]!, 0);
    await rot(h, chunks[1]!, 5);
    await rot(h, chunks[2]!, 1);
    await rot(h, chunks[2]!, 4);
    const devicesBefore = (await h.store.stat(chunks[2]!.id))!.fragments.map((f) => f.device);
    const scrubber = new ChunkScrubber(h.store, { chunksPerStep: 7 });
    const pass = await scrubber.runPass();
    assert.equal(pass.chunksChecked, 30);
    assert.equal(pass.fragmentsChecked, 180);
    assert.equal(pass.fragmentsDamaged, 4);
    assert.equal(pass.fragmentsRepaired, 4);
    assert.equal(pass.chunksUnrecoverable, 0);
    assert.ok(pass.passComplete);
    const devicesAfter = (await h.store.stat(chunks[2]!.id))!.fragments.map((f) => f.device);
    assert.deepEqual(devicesAfter, devicesBefore, "healthy devices keep their fragments");
    await assertClean(h.store, chunks);
    const again = await scrubber.runPass();
    assert.equal(again.fragmentsDamaged, 0);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkScrubber rebuilds a replaced (blank) device", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const chunks = await fill(h.store, 2, 25);
    await h.store.close();
    h.pool.wipe(3);
    await h.reopen();
    for (const c of chunks) assert.deepEqual(await h.store.get(c.id), c.bytes);
    const pass = await new ChunkScrubber(h.store).runPass();
    assert.equal(pass.fragmentsDamaged, 25, "one fragment of every chunk was on the wiped device");
    assert.equal(pass.fragmentsRepaired, 25);
    await assertClean(h.store, chunks);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkScrubber moves fragments of a lost device to devices the chunk does not use", async () => {
  const h = await SimHarness.create(ecPool(8));
  try {
    const chunks = await fill(h.store, 3, 30);
    await h.store.close();
    h.pool.failOpen(5);
    await h.reopen();
    const gone = h.store.devices().find((d) => d.id === "test-5")!.device;
    const pass = await new ChunkScrubber(h.store).runPass();
    assert.ok(pass.fragmentsRepaired > 0);
    assert.equal(pass.fragmentsRepaired, pass.fragmentsDamaged);
    for (const c of chunks) {
      const stat = (await h.store.stat(c.id))!;
      assert.ok(stat.fragments.every((f) => f.device !== gone && !f.lost));
      assert.equal(
        new Set(stat.fragments.map((f) => f.device)).size,
        6,
        "still six distinct devices",
      );
    }
    await assertClean(h.store, chunks);
  } finally {
    h.pool.failOpen(5, false);
    await h.close();
  }
});

Deno.test("ChunkScrubber notices a device swapped under a running store", async () => {
  const identities = new Map<string, string>();
  const h = await SimHarness.create(ecPool(), {
    probeDevice: (path) => Promise.resolve(identities.get(path) ?? "1"),
  });
  try {
    const chunks = await fill(h.store, 4, 12);
    identities.set(h.pool.spec.devices[1]!.path, "2");
    h.pool.wipeOnNextOpen(1);
    const pass = await new ChunkScrubber(h.store).runPass();
    assert.equal(pass.devicesReattached, 1);
    assert.equal(pass.fragmentsRepaired, 12);
    await assertClean(h.store, chunks);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkScrubber persists its cursor: a pass resumes after a restart", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const chunks = await fill(h.store, 5, 20);
    let scrubber = new ChunkScrubber(h.store, { chunksPerStep: 6, now: () => 500 });
    const first = await scrubber.step();
    assert.equal(first.chunksChecked, 6);
    assert.equal(first.passComplete, false);
    const cursor = scrubber.cursor();
    assert.ok(cursor !== null);
    await h.reopen();
    let now = 1_000;
    scrubber = new ChunkScrubber(h.store, { chunksPerStep: 6, now: () => now });
    assert.deepEqual(scrubber.cursor(), cursor);
    const underway = scrubber.progress();
    assert.equal(underway.pass?.chunksChecked, 6, "the pass's totals survive the restart");
    assert.equal(underway.passesCompleted, 0);
    now = 9_000;
    const rest = await scrubber.runPass();
    assert.equal(first.chunksChecked + rest.chunksChecked, chunks.length);
    assert.equal(scrubber.cursor(), null, "a finished pass clears the cursor");
    const done = scrubber.progress();
    assert.equal(done.pass, null);
    assert.equal(done.passesCompleted, 1);
    assert.equal(done.lastPass?.chunksChecked, chunks.length, "resumed, not restarted");
    assert.equal(done.lastPass?.fragmentsChecked, chunks.length * 6);
    assert.equal(done.lastPass?.startedAtMs, 500, "started before the restart");
    assert.equal(done.lastPass?.finishedAtMs, 9_000);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkScrubber counts chunks it cannot rebuild and only reports when repair is off", async () => {
  const h = await SimHarness.create(ecPool());
  try {
    const chunks = await fill(h.store, 6, 5);
    for (const i of [0, 1, 2]) await rot(h, chunks[0]!, i);
    await rot(h, chunks[1]!, 4);
    const report = await new ChunkScrubber(h.store, { repair: false }).runPass();
    assert.equal(report.chunksUnrecoverable, 1);
    assert.equal(report.fragmentsDamaged, 4);
    assert.equal(report.fragmentsRepaired, 0);
    assert.equal(
      (await h.store.read(chunks[1]!.id)).reconstructed.length,
      0,
      "fragment 4 is parity",
    );
    assert.equal((await h.store.read(chunks[1]!.id)).faults.length, 0, "data fragments read first");
    const repaired = await new ChunkScrubber(h.store).runPass();
    assert.equal(repaired.fragmentsRepaired, 1);
    assert.equal(repaired.chunksUnrecoverable, 1);
  } finally {
    await h.close();
  }
});

Deno.test("ChunkScrubber repairs copies from a good copy", async () => {
  const pool = new SimPool({
    devices: 3,
    durability: { kind: "copies", copies: 2 },
    deviceSizeBytes: 4 << 20,
  });
  const h = await SimHarness.create(pool);
  try {
    const chunks = await fill(h.store, 7, 10);
    await rot(h, chunks[0]!, 1);
    await rot(h, chunks[4]!, 0);
    const pass = await new ChunkScrubber(h.store).runPass();
    assert.equal(pass.fragmentsRepaired, 2);
    await assertClean(h.store, chunks);
  } finally {
    await h.close();
  }
});
