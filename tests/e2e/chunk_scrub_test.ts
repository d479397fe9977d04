// End to end on real device files: a pool of six file-backed devices (selectDisk: io_uring
// with O_DIRECT where the shim and file system allow, else plain file I/O) with EC 4+2.
// Dedup, GC with and without holds, a deleted device file and flipped bytes found by
// scrub and repaired, and a clear error (never garbage) once more than m devices are gone.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Prng } from "../../mod/base/mod.ts";
import { ChunkStoreError, LocalChunkStore } from "../../mod/chunk/chunk_store.ts";
import { ChunkGc } from "../../mod/chunk/gc.ts";
import { LmdbHoldStore } from "../../mod/chunk/holds.ts";
import { parsePoolSpecs, type PoolSpec } from "../../mod/chunk/pool.ts";
import { ChunkScrubber } from "../../mod/chunk/scrub.ts";
import { RECORD_HEADER_BYTES } from "../../mod/chunk/segment_store.ts";
import { selectErasureCodec } from "../../mod/ec/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";

const CHUNKS = 240;

interface TestChunk {
  id: Uint8Array;
  bytes: Uint8Array;
}

function randomChunk(prng: Prng, length: number): TestChunk {
  const bytes = prng.bytes(length);
  return { id: new Uint8Array(createHash("sha256").update(bytes).digest()), bytes };
}
const logger = createLogger({ level: "warn", format: "text", sink: { write: () => {} } });

function openStore(pool: PoolSpec, dir: string): Promise<LocalChunkStore> {
  return LocalChunkStore.open({
    pool,
    codecs: selectErasureCodec(),
    indexDir: `${dir}/chunks/index`,
    indexPageKeys: null,
    logger,
  });
}

async function readAllExact(store: LocalChunkStore, chunks: TestChunk[]): Promise<number> {
  let rebuilt = 0;
  for (const c of chunks) {
    const read = await store.read(c.id);
    assert.equal(read.bytes.length, c.bytes.length);
    assert.ok(read.bytes.every((b, i) => b === c.bytes[i]), "read is byte-exact");
    if (read.faults.length > 0) rebuilt++;
  }
  return rebuilt;
}

async function flipByte(path: string, offset: number): Promise<void> {
  const file = await Deno.open(path, { read: true, write: true });
  try {
    const one = new Uint8Array(1);
    await file.seek(offset, Deno.SeekMode.Start);
    await file.read(one);
    one[0]! ^= 0x5a;
    await file.seek(offset, Deno.SeekMode.Start);
    await file.write(one);
    await file.syncData();
  } finally {
    file.close();
  }
}

Deno.test("chunk store e2e: dedup, GC, scrub repairs a deleted device file and flipped bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-e2e-chunks-" });
  const [pool] = parsePoolSpecs(
    JSON.stringify({
      name: "bulk-ssd",
      devices: 6,
      durability: "ec:4+2",
      deviceSize: "128MiB",
      segmentSize: "1MiB",
    }),
    { dataDir: dir },
  );
  let store = await openStore(pool!, dir);
  try {
    assert.deepEqual(store.devices().map((d) => d.status), Array(6).fill("ok"));

    // Many chunks, written by concurrent callers (group commit).
    const prng = new Prng(2024);
    const chunks = Array.from(
      { length: CHUNKS },
      () => randomChunk(prng, 1 + prng.nextInt(200_000)),
    );
    for (let i = 0; i < chunks.length; i += 24) {
      const created = await Promise.all(
        chunks.slice(i, i + 24).map((c) => store.put(c.id, c.bytes)),
      );
      assert.ok(created.every((r) => r.created));
    }
    assert.equal(await readAllExact(store, chunks), 0);

    // Dedup: the same chunk again adds a reference and writes nothing.
    const liveBefore = store.devices().reduce((n, d) => n + d.liveBytes, 0);
    assert.deepEqual(await store.put(chunks[0]!.id, chunks[0]!.bytes), { created: false });
    assert.equal((await store.stat(chunks[0]!.id))!.refcount, 2);
    assert.equal(store.devices().reduce((n, d) => n + d.liveBytes, 0), liveBefore);
    assert.equal(store.index.count(), CHUNKS);

    // GC: refcount zero is erased and its space comes back, unless a hold covers it.
    const holds = new LmdbHoldStore(store.env);
    // Two of every three chunks die, so most segments fall below half live.
    const doomed = chunks.filter((_, i) => i % 3 !== 0);
    chunks.splice(0, chunks.length, ...chunks.filter((_, i) => i % 3 === 0));
    const held = doomed.slice(0, 5);
    await holds.place({ id: "audit-2024", kind: "chunks", chunkIds: held.map((c) => c.id) });
    for (const c of doomed) assert.equal(await store.decRef(c.id), 0);
    const usedBefore = store.devices().reduce((n, d) => n + d.usedBytes, 0);
    const gc = new ChunkGc(store, { holds });
    const swept = await gc.run();
    assert.equal(swept.erased, doomed.length - 5);
    assert.equal(swept.held, 5);
    const usedAfter = store.devices().reduce((n, d) => n + d.usedBytes, 0);
    assert.ok(usedAfter < usedBefore, `space reclaimed: ${usedBefore} -> ${usedAfter}`);
    for (const c of held) assert.ok((await store.stat(c.id)) !== null, "held chunk kept");
    await assert.rejects(
      store.get(doomed[10]!.id),
      (e) => e instanceof ChunkStoreError && e.code === "not_found",
    );
    await holds.release("audit-2024");
    assert.equal((await gc.run()).erased, 5);
    assert.equal(await readAllExact(store, chunks), 0, "survivors unharmed by compaction");
    assert.deepEqual(store.segments.audit(), [], "segment accounting matches the extents");

    // Faults with the store stopped: delete one device file, flip bytes in another.
    const devices = pool!.devices.map((d) => d.path);
    const victims = chunks.slice(0, 40);
    const stats = await Promise.all(victims.map((c) => store.stat(c.id)));
    const rotten = store.devices().find((d) => d.path === devices[4])!.device;
    const deleted = store.devices().find((d) => d.path === devices[1])!.device;
    // Reads use the data fragments (0..3) first: those on the deleted device force a rebuild.
    let needRebuild = 0;
    for (const c of chunks) {
      const stat = (await store.stat(c.id))!;
      if (stat.fragments.some((f, i) => i < 4 && f.device === deleted)) needRebuild++;
    }
    await store.close();
    await Deno.remove(devices[1]!);
    let flipped = 0;
    for (const stat of stats) {
      const f = stat!.fragments.find((f) => f.device === rotten)!;
      // Alternate between the payload and the header of the record.
      const at = flipped % 2 === 0 ? RECORD_HEADER_BYTES + 11 : 20;
      await flipByte(devices[4]!, f.offsetBytes + at);
      flipped++;
    }
    store = await openStore(pool!, dir);
    assert.deepEqual(
      store.devices().map((d) => d.status),
      Array(6).fill("ok"),
      "blank file re-labelled",
    );
    const degraded = await readAllExact(store, chunks);
    assert.ok(degraded >= needRebuild && needRebuild > chunks.length / 2, `${degraded} degraded`);

    const scrubber = new ChunkScrubber(store, { chunksPerStep: 32 });
    const pass = await scrubber.runPass();
    assert.equal(pass.chunksChecked, chunks.length);
    assert.equal(pass.fragmentsChecked, chunks.length * 6);
    assert.equal(pass.fragmentsDamaged, chunks.length + flipped);
    assert.equal(pass.fragmentsRepaired, pass.fragmentsDamaged);
    assert.equal(pass.chunksUnrecoverable, 0);
    assert.equal(await readAllExact(store, chunks), 0, "no read needs reconstruction after scrub");
    const clean = await scrubber.runPass();
    assert.equal(clean.fragmentsDamaged, 0, "every fragment healthy again");
    assert.deepEqual(store.segments.audit(), []);

    // A device file deleted while the store runs: scrub notices and rebuilds it.
    await Deno.remove(devices[5]!);
    const live = await scrubber.runPass();
    assert.equal(live.devicesReattached, 1);
    assert.equal(live.fragmentsRepaired, chunks.length);
    assert.equal(await readAllExact(store, chunks), 0);
    const reopened = store;
    await reopened.close();
    store = await openStore(pool!, dir);
    assert.equal(await readAllExact(store, chunks), 0, "repairs are durable");

    // More than m devices lost: a clear typed error, never garbage.
    await store.close();
    for (const path of [devices[0]!, devices[2]!, devices[3]!]) await Deno.remove(path);
    store = await openStore(pool!, dir);
    for (const c of chunks.slice(0, 10)) {
      await assert.rejects(store.get(c.id), (e: unknown) => {
        assert.ok(e instanceof ChunkStoreError, String(e));
        assert.equal(e.code, "unrecoverable");
        assert.match(e.message, /fewer than 4 good fragments/);
        return true;
      });
    }
    const lost = await new ChunkScrubber(store).runPass();
    assert.equal(lost.chunksUnrecoverable, chunks.length);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
