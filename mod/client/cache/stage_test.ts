import assert from "node:assert/strict";
import { MemoryDataset } from "./_testing.ts";
import {
  DiskL2Store,
  formatProgress,
  L2FullError,
  type Progress,
  Stager,
  TieredChunkCache,
} from "./mod.ts";

function chunk(tag: string, size = 1000): Uint8Array {
  const out = new Uint8Array(size).fill(0x20);
  out.set(new TextEncoder().encode(tag.padEnd(32, "_")));
  return out;
}

async function withStager(
  maxBytes: number,
  fn: (stager: Stager, cache: TieredChunkCache, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-stage-test-" });
  const l2 = await DiskL2Store.open({ dir, maxBytes });
  const cache = new TieredChunkCache({ mode: "pinned", l1MaxBytes: 0, l2 });
  try {
    await fn(new Stager({ cache, dir: `${dir}/staging` }), cache, dir);
  } finally {
    await cache.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Stager.stage() pins every chunk of a dataset and reports progress", async () => {
  await withStager(1 << 20, async (stager, cache) => {
    const data = new MemoryDataset();
    data.add("/train/a.bin", "v1", [chunk("a0"), chunk("a1")]);
    data.add("/train/b.bin", "v1", [chunk("b0")]);
    data.add("/other/c.bin", "v1", [chunk("c0")]);
    const seen: Progress[] = [];
    const state = await stager.stage(data, "/train", { onProgress: (p) => seen.push(p) });
    assert.equal(state.finished, true);
    assert.equal(state.filesDone, 2);
    assert.equal(state.bytesDone, 3000);
    assert.equal(state.chunksPinned, 3);
    assert.equal(cache.stats().l2!.pinnedEntries, 3);
    assert.equal(data.fetchCount(), 3);
    assert.deepEqual(seen.map((p) => p.filesDone), [1, 2]);
    assert.match(formatProgress(seen[1]!), /\[#{24}\] 100%.*2\/2 files/);
    const [status] = await stager.status("/train");
    assert.equal(status!.finished, true);
    assert.deepEqual(await stager.status("/nothing"), []);
  });
});

Deno.test("Stager.stage() resumes after an interruption without fetching staged files again", async () => {
  await withStager(1 << 20, async (stager, cache) => {
    const data = new MemoryDataset();
    for (let i = 0; i < 5; i++) data.add(`/ds/f${i}`, "v1", [chunk(`f${i}-0`), chunk(`f${i}-1`)]);
    data.failAfterFetches = 5; // the node goes away during the third file
    await assert.rejects(stager.stage(data, "/ds"), /node went away/);
    const [partial] = await stager.status("/ds");
    assert.equal(partial!.finished, false);
    assert.equal(data.fetchCount(), 5);

    data.failAfterFetches = Infinity;
    const state = await stager.stage(data, "/ds");
    assert.equal(state.finished, true);
    assert.equal(state.filesDone, 5);
    // Files 0 and 1 were journaled; file 2's first chunk was pinned already (not refetched).
    assert.equal(data.fetchCount(), 10);
    assert.equal(cache.stats().l2!.pinnedEntries, 10);

    // A file that changed is staged again; the others are not.
    data.add("/ds/f3", "v2", [chunk("f3-new")]);
    await stager.stage(data, "/ds");
    assert.equal(data.fetchCount(), 11);
  });
});

Deno.test("Stager.release() unpins a dataset but keeps chunks another staged dataset shares", async () => {
  await withStager(1 << 20, async (stager, cache, dir) => {
    const data = new MemoryDataset();
    data.add("/a/x", "v1", [chunk("shared"), chunk("only-a")]);
    data.add("/b/y", "v1", [chunk("shared"), chunk("only-b")]);
    await stager.stage(data, "/a");
    await stager.stage(data, "/b");
    assert.equal(cache.stats().l2!.pinnedEntries, 3);
    assert.equal(await stager.release("/a"), 1);
    assert.equal(cache.stats().l2!.pinnedEntries, 2);
    assert.deepEqual(await stager.status("/a"), []);
    assert.equal((await stager.status()).length, 1);
    // Nothing on the node names a dataset or a file.
    for await (const e of Deno.readDir(`${dir}/staging`)) {
      const text = await Deno.readTextFile(`${dir}/staging/${e.name}`);
      assert.ok(!text.includes("/b") && !text.includes("/a/x") && !text.includes("only"), text);
    }
  });
});

Deno.test("Stager.stage() stops with L2FullError when the dataset does not fit, keeping the rest", async () => {
  await withStager(2500, async (stager, cache) => {
    const data = new MemoryDataset();
    data.add("/big/1", "v1", [chunk("1a"), chunk("1b")]);
    data.add("/big/2", "v1", [chunk("2a")]);
    await assert.rejects(stager.stage(data, "/big"), L2FullError);
    assert.equal(cache.stats().l2!.pinnedEntries, 2);
    const [s] = await stager.status("/big");
    assert.equal(s!.finished, false);
  });
});

Deno.test("formatProgress() shows bytes, files, rate and ETA", () => {
  const line = formatProgress({
    bytesDone: 512 * 1024 * 1024,
    bytesTotal: 2 * 1024 * 1024 * 1024,
    filesDone: 10,
    filesTotal: 40,
    bytesMoved: 256 * 1024 * 1024,
    elapsedMs: 2000,
  });
  assert.equal(
    line,
    "[######..................]  25%  512.0 MiB/2.00 GiB  10/40 files  128.0 MiB/s  ETA 00:12",
  );
});

Deno.test("Stager.release() also unpins what an interrupted run pinned before journaling a file", async () => {
  await withStager(1 << 20, async (stager, cache) => {
    const data = new MemoryDataset();
    data.add("/ds/a", "v1", [chunk("a0"), chunk("a1"), chunk("a2")]);
    data.failAfterFetches = 2; // a0 and a1 pinned, a2 fails: the file never completes
    await assert.rejects(stager.stage(data, "/ds"));
    assert.equal(cache.stats().l2!.pinnedEntries, 2);
    assert.equal(await stager.release("/ds"), 2);
    assert.equal(cache.stats().l2!.pinnedEntries, 0);
  });
});
