import assert from "node:assert/strict";
import { codecs, Prng, quietLogger, randomChunk } from "./_testing.ts";
import {
  CHUNK_INDEX_MAP_BYTES_DEFAULT,
  CHUNK_INDEX_MAP_BYTES_MAX,
  ChunkStoreError,
  indexMapBytesFor,
  LocalChunkStore,
} from "./chunk_store.ts";
import { ChunkGc } from "./gc.ts";
import {
  parsePoolSpecs,
  POOL_ALIGNMENT_BYTES,
  POOL_RESERVE_BYTES_MAX,
  POOL_RESERVE_BYTES_MIN,
  PoolSpecError,
} from "./pool.ts";
import { FilesystemSpace, type SpaceGuard, statFilesystem } from "./space.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/** A filesystem whose room the test sets; counts what the store says it allocates. */
class TestSpace implements SpaceGuard {
  readonly reserveBytes = 0;
  room: number;
  allocated = 0;
  constructor(room: number) {
    this.room = room;
  }
  headroomBytes(): number {
    return Math.max(0, this.room - this.allocated);
  }
  noteAllocated(bytes: number): void {
    this.allocated += bytes;
  }
}

Deno.test('parsePoolSpecs() sizes "auto" devices from the filesystem and keeps a reserve', () => {
  const asked: string[] = [];
  const [pool] = parsePoolSpecs(JSON.stringify({ devices: 6, deviceSize: "auto" }), {
    dataDir: "/srv/kiseki/",
    filesystemBytes: (path) => {
      asked.push(path);
      return 250 * GIB + 12345;
    },
  });
  assert.deepEqual(asked, ["/srv/kiseki/chunks/devices"]);
  const segment = pool!.segmentSizeBytes;
  // Whole segments after the label, as large as the filesystem.
  assert.equal(pool!.devices[0]!.sizeBytes, Math.floor(250 * GIB / segment) * segment + 4096);
  assert.equal(pool!.devices[0]!.sizeBytes % POOL_ALIGNMENT_BYTES, 0);
  // 5% of 250 GiB, within the bounds.
  assert.deepEqual(pool!.growth, {
    path: "/srv/kiseki/chunks/devices",
    reserveBytes: Math.floor((250 * GIB + 12345) * 0.05 / 4096) * 4096,
  });
  const small = parsePoolSpecs(JSON.stringify({ devices: 6, deviceSize: "auto" }), {
    dataDir: "/d",
    filesystemBytes: () => 4 * GIB,
  })[0]!;
  assert.equal(small.growth!.reserveBytes, POOL_RESERVE_BYTES_MIN);
  const huge = parsePoolSpecs(JSON.stringify({ devices: 6, deviceSize: "auto" }), {
    dataDir: "/d",
    filesystemBytes: () => 100 * 1024 * GIB,
  })[0]!;
  assert.equal(huge.growth!.reserveBytes, POOL_RESERVE_BYTES_MAX);
  const given = parsePoolSpecs(
    JSON.stringify({ devices: 6, deviceSize: "auto", reserve: "20GiB" }),
    { dataDir: "/d", filesystemBytes: () => null },
  )[0]!;
  assert.equal(given.growth!.reserveBytes, 20 * GIB);
  // Fixed sizes have no growth.
  assert.equal(
    parsePoolSpecs(JSON.stringify({ devices: 6, deviceSize: "1GiB" }), { dataDir: "/d" })[0]!
      .growth,
    null,
  );
  for (
    const [spec, pattern] of [
      [{ devices: ["/dev/sdb"], deviceSize: "auto" }, /"auto" is for device files/],
      [{ devices: 6, deviceSize: "1GiB", reserve: "1GiB" }, /only for "deviceSize": "auto"/],
      [{ devices: 6, deviceSize: "auto", reserve: "lots" }, /reserve/],
    ] as const
  ) {
    assert.throws(
      () => parsePoolSpecs(JSON.stringify(spec), { dataDir: "/d" }),
      (e: unknown) => e instanceof PoolSpecError && pattern.test(e.message),
    );
  }
});

Deno.test("statFilesystem() answers for a path that does not exist yet", () => {
  const dir = Deno.makeTempDirSync({ prefix: "kiseki-space-" });
  try {
    const s = statFilesystem(`${dir}/chunks/devices`);
    assert.ok(s !== null && s.totalBytes > 0 && s.availableBytes <= s.totalBytes);
    const space = new FilesystemSpace({ path: dir, reserveBytes: 0, now: () => 0 });
    const before = space.headroomBytes();
    space.noteAllocated(MIB);
    assert.equal(space.headroomBytes(), before - MIB, "allocations count until the next probe");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

async function growingStore(dir: string, fsBytes: number, space: SpaceGuard) {
  const [pool] = parsePoolSpecs(
    JSON.stringify({ name: "grow", devices: 6, deviceSize: "auto", segmentSize: "256KiB" }),
    { dataDir: dir, filesystemBytes: () => fsBytes },
  );
  return await LocalChunkStore.open({
    pool: pool!,
    codecs,
    indexDir: `${dir}/chunks/index`,
    indexPageKeys: null,
    space,
    logger: quietLogger().logger,
  });
}

Deno.test("a growing pool takes new segments only above the reserve, and reuses freed ones with none left", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-space-store-" });
  const space = new TestSpace(3 * MIB);
  let store = await growingStore(dir, 64 * MIB, space);
  try {
    const report = store.poolReport();
    assert.equal(report.capacityBytes, 3 * MIB, "capacity is the room the filesystem has");
    const prng = new Prng(1);
    const stored = [];
    let refused: unknown = null;
    for (let i = 0; i < 200 && refused === null; i++) {
      const c = randomChunk(prng, 100 * KIB);
      try {
        await store.put(c.id, c.bytes);
        stored.push(c);
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused instanceof ChunkStoreError && refused.code === "pool_full", String(refused));
    assert.ok(space.allocated <= 3 * MIB, `allocated ${space.allocated} past the room`);
    assert.ok(stored.length > 10);
    // The filesystem has no room left at all; freed segments were written before and are
    // reused without new blocks.
    space.room = space.allocated;
    for (const c of stored) await store.decRef(c.id);
    await new ChunkGc(store, { holds: null }).run();
    for (let i = 0; i < stored.length / 2; i++) {
      const c = randomChunk(prng, 100 * KIB);
      await store.put(c.id, c.bytes);
    }
    const after = store.poolReport();
    assert.ok(after.capacityBytes >= after.usedBytes);
    // Across a restart the written segments are remembered (from the segment table).
    await store.close();
    store = await growingStore(dir, 64 * MIB, space);
    const c = randomChunk(prng, 100 * KIB);
    await store.put(c.id, c.bytes);
    assert.deepEqual(await store.get(c.id), c.bytes);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a growing pool's device files grow with a larger filesystem; data stays", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-space-grow-" });
  const space = new TestSpace(2 ** 40);
  let store = await growingStore(dir, 2 * MIB, space);
  try {
    const small = store.poolReport().devices.map((d) => d.capacityBytes);
    assert.deepEqual(small, new Array(6).fill(8 * 256 * KIB));
    const prng = new Prng(2);
    const chunks = Array.from({ length: 20 }, () => randomChunk(prng, 60 * KIB));
    for (const c of chunks) await store.put(c.id, c.bytes);
    await store.close();
    store = await growingStore(dir, 8 * MIB, space);
    const grown = store.poolReport();
    assert.deepEqual(grown.devices.map((d) => d.capacityBytes), new Array(6).fill(8 * MIB));
    assert.equal(grown.devices.every((d) => d.status === "ok"), true);
    for (const c of chunks) assert.deepEqual(await store.get(c.id), c.bytes);
    // A smaller filesystem later does not shrink the files (nor lose anything on them).
    await store.close();
    store = await growingStore(dir, 2 * MIB, space);
    assert.deepEqual(
      store.poolReport().devices.map((d) => d.capacityBytes),
      new Array(6).fill(8 * MIB),
    );
    for (const c of chunks) assert.deepEqual(await store.get(c.id), c.bytes);
    assert.deepEqual(store.segments.audit(), []);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("indexMapBytesFor() grows the index map with the pool's devices, within bounds", () => {
  const pool = (deviceSize: string) =>
    parsePoolSpecs(JSON.stringify({ devices: 6, deviceSize }), { dataDir: "/d" })[0]!;
  assert.equal(indexMapBytesFor(pool("1GiB")), CHUNK_INDEX_MAP_BYTES_DEFAULT);
  assert.equal(indexMapBytesFor(pool("256GiB")), 6 * 256 * GIB / 32);
  assert.equal(indexMapBytesFor(pool("1024TiB")), CHUNK_INDEX_MAP_BYTES_MAX);
});
