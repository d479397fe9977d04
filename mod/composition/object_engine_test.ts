import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Prng } from "../base/mod.ts";
import { parseEnvelopeHeader } from "../crypto/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { CompositionError, type CompositionErrorCode } from "./errors.ts";
import {
  type EngineStack,
  type EngineStackOptions,
  startEngineStack,
  startLocalMetadataPlane,
} from "../role/engine_stack.ts";
import type { NamespaceRef } from "./namespace.ts";
import { hmacChunkId, sha256ChunkId, splitChunks } from "../chunk/mod.ts";
import { ObjectEngine, ObjectPartError, ObjectRangeError, resolvePart } from "./object_engine.ts";
import { kmsTenantName } from "./tenant_payload_cipher.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { OpensslHashing } from "../crypto/mod.ts";

const nativeHashing = OpensslHashing.load(defaultShimOptions());

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const MiB = 1 << 20;
/** Prng blocks are generated in this size (a multiple of 4) so a stream is reproducible. */
const BLOCK_BYTES = 256 << 10;

function tenant(n: number): Uint8Array {
  const id = new Uint8Array(16);
  id[0] = 0x7e;
  id[15] = n;
  return id;
}

function isCode(code: CompositionErrorCode) {
  return (e: unknown) => e instanceof CompositionError && e.code === code;
}

type Options = Omit<EngineStackOptions, "dataDir">;

const smallPool = { deviceSizeBytes: 256 * MiB, segmentSizeBytes: 4 * MiB };

async function withStack(
  fn: (stack: EngineStack, reopen: () => Promise<EngineStack>) => Promise<void>,
  options: Options = {},
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-engine-" });
  const open = () => startEngineStack({ dataDir, logger: quiet, pool: smallPool, ...options });
  let stack = await open();
  try {
    await fn(stack, async () => {
      await stack.close();
      stack = await open();
      await stack.caughtUp();
      return stack;
    });
  } finally {
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Deterministic bytes from `seed`, in BLOCK_BYTES blocks (the last one shorter). */
function* prngBlocks(seed: number, size: number): Generator<Uint8Array> {
  const prng = new Prng(seed);
  for (let at = 0; at < size; at += BLOCK_BYTES) {
    yield prng.fill(new Uint8Array(Math.min(BLOCK_BYTES, size - at)));
  }
}

function prngBytes(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const block of prngBlocks(seed, size)) {
    out.set(block, at);
    at += block.length;
  }
  return out;
}

/** A body that is never whole in memory: blocks generated as the engine pulls them. */
function prngStream(seed: number, size: number): ReadableStream<Uint8Array> {
  const blocks = prngBlocks(seed, size);
  return new ReadableStream({
    pull(controller) {
      const next = blocks.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
  });
}

function md5(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(
    Buffer.from(b.buffer, b.byteOffset, b.length),
  );
}

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  let n = 0;
  for await (const p of body) {
    pieces.push(p);
    n += p.length;
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Compares a streamed body with the Prng stream it was written from, without holding either. */
async function assertStreamEquals(
  body: ReadableStream<Uint8Array>,
  seed: number,
  size: number,
): Promise<string> {
  const expected = prngBlocks(seed, size);
  let block: Uint8Array = new Uint8Array(0);
  let blockAt = 0;
  let total = 0;
  const hash = createHash("md5");
  for await (let piece of body) {
    hash.update(piece);
    total += piece.length;
    while (piece.length > 0) {
      if (blockAt === block.length) {
        const next = expected.next();
        assert.ok(!next.done, "body is longer than what was written");
        block = next.value;
        blockAt = 0;
      }
      const n = Math.min(piece.length, block.length - blockAt);
      assert.ok(same(piece.subarray(0, n), block.subarray(blockAt, blockAt + n)), `at ${total}`);
      piece = piece.subarray(n);
      blockAt += n;
    }
  }
  assert.equal(total, size);
  return hash.digest("hex");
}

async function get(stack: EngineStack, ns: NamespaceRef, key: string): Promise<Uint8Array> {
  return await readAll((await stack.engine.getObject(ns, key)).body);
}

async function refcounts(stack: EngineStack, ns: NamespaceRef, key: string): Promise<number[]> {
  const object = stack.service.get(ns, key);
  assert.equal(object.content.kind, "chunks");
  if (object.content.kind !== "chunks") return [];
  return await Promise.all(
    object.content.chunkRefs.map(async (r) => (await stack.chunkStore.stat(r.chunkId))!.refcount),
  );
}

function chunkIds(stack: EngineStack, ns: NamespaceRef, key: string): Uint8Array[] {
  const c = stack.service.get(ns, key).content;
  return c.kind === "chunks" ? c.chunkRefs.map((r) => r.chunkId) : [];
}

Deno.test("ObjectEngine round-trips 0 B to 5 MiB + 1, inline up to the threshold and chunked above", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "round");
    for (const size of [0, 1, 4095, 4096, 4097, 5 * MiB + 1]) {
      const bytes = prngBytes(size, size);
      const key = `obj-${size}`;
      const asStream = size % 2 === 1;
      const put = await engine.putObject(
        ns,
        key,
        asStream ? prngStream(size, size) : bytes,
        { contentType: "application/x-test", metadata: { n: String(size) } },
      );
      assert.equal(put.size, size);
      assert.equal(put.etag, md5(bytes));
      const got = await engine.getObject(ns, key);
      assert.equal(got.size, size);
      assert.equal(got.contentLength, size);
      assert.equal(got.etag, md5(bytes));
      assert.equal(got.contentType, "application/x-test");
      assert.deepEqual(got.metadata, { n: String(size) });
      assert.equal(got.version, put.version);
      assert.ok(same(await readAll(got.body), bytes), `${size} bytes read back`);
      const kind = stack.service.get(ns, key).content.kind;
      assert.equal(kind, size <= engine.inlineBytesMax ? "inline" : "chunks", `${size}`);
      const head = await engine.headObject(ns, key);
      assert.equal(head.size, size);
      assert.equal(head.etag, md5(bytes));
    }
    const listed = await engine.listObjects(ns);
    assert.equal(listed.objects.length, 6);
  });
});

Deno.test("ObjectEngine serves repeated reads from its chunk cache, byte-exact, within its bound", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "cached");
    const bytes = prngBytes(77, 3 * MiB + 17);
    await engine.putObject(ns, "a", bytes);
    const chunks = chunkIds(stack, ns, "a").length;
    assert.ok(chunks >= 2, `${chunks} chunks`);
    assert.ok(same(await get(stack, ns, "a"), bytes), "first read (from the devices)");
    assert.deepEqual(
      { hits: engine.chunkCacheStats().hits, misses: engine.chunkCacheStats().misses },
      { hits: 0, misses: chunks },
    );
    const first = await get(stack, ns, "a");
    const second = await get(stack, ns, "a");
    assert.ok(same(first, bytes) && same(second, bytes), "cached reads are byte-exact");
    assert.equal(engine.chunkCacheStats().hits, 2 * chunks);
    const range = await readAll(
      (await engine.getObject(ns, "a", { range: { start: MiB - 5, end: 2 * MiB + 4 } })).body,
    );
    assert.ok(same(range, bytes.subarray(MiB - 5, 2 * MiB + 5)), "a cached range");
    // A new content under the same key is new chunks: never served from the old entries.
    const other = prngBytes(78, 3 * MiB + 17);
    await engine.putObject(ns, "a", other);
    assert.ok(same(await get(stack, ns, "a"), other), "the overwrite reads back");
    await engine.putObject(ns, "b", prngBytes(79, 3 * MiB + 17));
    await get(stack, ns, "b");
    const stats = engine.chunkCacheStats();
    assert.ok(stats.bytes <= 8 * MiB, `cache holds ${stats.bytes} bytes, bound 8 MiB`);
    assert.ok(stats.bytes > 4 * MiB, `cache holds ${stats.bytes} bytes`);
  }, { engine: { chunkCacheBytes: 8 * MiB } });
});

Deno.test("ObjectEngine bounds read-ahead by one budget: a get past it is refused, the others finish byte-exact", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "budget");
    const bytes = prngBytes(81, 12 * MiB + 5);
    await engine.putObject(ns, "a", bytes);
    const { bytesMax } = engine.readBudgetStats();
    assert.equal(bytesMax, 4 * MiB);
    const open: ReadableStream<Uint8Array>[] = [];
    let refused: unknown = null;
    for (let i = 0; i < 16 && refused === null; i++) {
      try {
        open.push((await engine.getObject(ns, "a")).body);
      } catch (e) {
        refused = e;
      }
      assert.ok(engine.readBudgetStats().usedBytes <= bytesMax, "never past the budget");
    }
    assert.ok(isCode("unavailable")(refused), `a get past the budget is refused: ${refused}`);
    assert.ok(open.length >= 1);
    // Every get that started finishes byte-exact, in turn for the budget.
    const read = await Promise.all(open.map((body) => readAll(body)));
    for (const r of read) assert.ok(same(r, bytes), "byte-exact under a tight budget");
    assert.deepEqual(engine.readBudgetStats(), { usedBytes: 0, bytesMax, waiting: 0 });
    // Given back on cancel too.
    const cancelled = await engine.getObject(ns, "a");
    await cancelled.body.cancel();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(engine.readBudgetStats().usedBytes, 0);
    assert.ok(same(await get(stack, ns, "a"), bytes));
  }, { engine: { readAheadBytesMax: 4 * MiB } });
});

Deno.test("ObjectEngine fails a get whose reader stalls and gives its read-ahead back", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "stall");
    await engine.putObject(ns, "a", prngBytes(82, 8 * MiB));
    const got = await engine.getObject(ns, "a");
    const reader = got.body.getReader();
    assert.ok(!(await reader.read()).done);
    assert.ok(engine.readBudgetStats().usedBytes > 0, "chunks fetched ahead");
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(engine.readBudgetStats().usedBytes, 0, "given back after the stall");
    await assert.rejects(reader.read(), isCode("unavailable"));
    // A reader that keeps reading is not cut off, however long the object.
    assert.equal((await get(stack, ns, "a")).length, 8 * MiB);
  }, { engine: { readStallMs: 200 } });
});

Deno.test("ObjectEngine streams a 64 MiB object in and out, byte-exact", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "big");
    const size = 64 * MiB;
    const put = await engine.putObject(ns, "big", prngStream(64, size), { sizeHint: size });
    assert.equal(put.size, size);
    const got = await engine.getObject(ns, "big");
    assert.equal(got.contentLength, size);
    const readMd5 = await assertStreamEquals(got.body, 64, size);
    assert.equal(readMd5, put.etag);
    const refs = stack.service.get(ns, "big").content;
    assert.ok(refs.kind === "chunks" && refs.chunkRefs.length >= 16, "cut into many chunks");
  });
});

Deno.test("ObjectEngine ranges read only the bytes asked for: first, last, across chunk boundaries", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "ranges");
    const size = 6 * MiB + 123;
    const bytes = prngBytes(7, size);
    await engine.putObject(ns, "o", bytes);
    await engine.putObject(ns, "small", bytes.subarray(0, 100));
    const content = stack.service.get(ns, "o").content;
    assert.ok(content.kind === "chunks" && content.chunkRefs.length >= 3);
    const cut = content.chunkRefs[1]!.offsetBytes;
    const cut2 = content.chunkRefs[2]!.offsetBytes;
    const cases: [{ start: number; end?: number } | { suffixBytes: number }, number, number][] = [
      [{ start: 0, end: 0 }, 0, 0],
      [{ start: size - 1, end: size - 1 }, size - 1, size - 1],
      [{ start: size - 1 }, size - 1, size - 1],
      [{ start: cut - 1, end: cut }, cut - 1, cut],
      [{ start: cut - 10, end: cut2 + 10 }, cut - 10, cut2 + 10],
      [{ start: cut, end: cut2 - 1 }, cut, cut2 - 1],
      [{ start: 5, end: size + 100 }, 5, size - 1],
      [{ suffixBytes: 1000 }, size - 1000, size - 1],
      [{ suffixBytes: size + 5 }, 0, size - 1],
    ];
    for (const [range, start, end] of cases) {
      const got = await engine.getObject(ns, "o", { range });
      assert.deepEqual(got.range, { start, end }, JSON.stringify(range));
      assert.equal(got.contentLength, end - start + 1);
      const body = await readAll(got.body);
      assert.ok(same(body, bytes.subarray(start, end + 1)), JSON.stringify(range));
    }
    const inline = await engine.getObject(ns, "small", { range: { start: 10, end: 19 } });
    assert.ok(same(await readAll(inline.body), bytes.subarray(10, 20)));
    await assert.rejects(
      engine.getObject(ns, "o", { range: { start: size } }),
      (e) => e instanceof ObjectRangeError && e.sizeBytes === size,
    );
    await assert.rejects(
      engine.getObject(ns, "o", { range: { start: 5, end: 4 } }),
      isCode("invalid_argument"),
    );
    await assert.rejects(
      engine.getObject(ns, "o", { range: { suffixBytes: 0 } }),
      ObjectRangeError,
    );
  });
});

Deno.test("ObjectEngine dedups: the same object twice is stored once with refcount 2", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "dedup");
    const bytes = prngBytes(11, 3 * MiB);
    await engine.putObject(ns, "a", bytes);
    const stored = engine.stats().chunksStored;
    const live = stack.chunkStore.devices().reduce((n, d) => n + d.liveBytes, 0);
    await engine.putObject(ns, "b", prngStream(11, 3 * MiB));
    assert.equal(engine.stats().chunksStored, stored, "nothing new stored");
    assert.equal(stack.chunkStore.devices().reduce((n, d) => n + d.liveBytes, 0), live);
    assert.deepEqual(chunkIds(stack, ns, "a"), chunkIds(stack, ns, "b"));
    assert.ok((await refcounts(stack, ns, "a")).every((n) => n === 2));
    assert.equal(stack.chunkStore.index.count(), chunkIds(stack, ns, "a").length);
    assert.ok(same(await get(stack, ns, "b"), bytes));
  });
});

Deno.test("ObjectEngine overwrite and delete give chunks back, and GC erases them", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "gc");
    await engine.putObject(ns, "k", prngBytes(1, 2 * MiB));
    const first = chunkIds(stack, ns, "k");
    await engine.putObject(ns, "k", prngBytes(2, 2 * MiB));
    const second = chunkIds(stack, ns, "k");
    // The overwritten version's chunks are released behind the writer.
    await engine.releasesSettled();
    for (const id of first) assert.equal((await stack.chunkStore.stat(id))!.refcount, 0);
    for (const id of second) assert.equal((await stack.chunkStore.stat(id))!.refcount, 1);
    const swept = await stack.gc.run();
    assert.equal(swept.erased, first.length);
    for (const id of first) assert.equal(await stack.chunkStore.stat(id), null);
    assert.ok(same(await get(stack, ns, "k"), prngBytes(2, 2 * MiB)));
    assert.deepEqual(await engine.deleteObject(ns, "k"), { deleted: true });
    assert.deepEqual(await engine.deleteObject(ns, "k"), { deleted: false });
    await assert.rejects(engine.getObject(ns, "k"), isCode("not_found"));
    assert.equal((await stack.gc.run()).erased, second.length);
    assert.equal(stack.chunkStore.index.count(), 0);
    assert.equal(engine.stats().releaseFailures, 0);
  });
});

Deno.test("ObjectEngine multipart: parts out of order, an unlisted part released, S3 etag, abort releases", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "mpu");
    const parts = [prngBytes(31, 5 * MiB), prngBytes(32, 5 * MiB), prngBytes(33, MiB + 7)];
    const { uploadId } = await engine.createMultipartUpload(ns, "m", {
      contentType: "video/x",
      metadata: { who: "test" },
    });
    const etags: string[] = [];
    for (const i of [2, 0, 1]) {
      const r = await engine.uploadPart(
        ns,
        "m",
        uploadId,
        i + 1,
        prngStream(31 + i, parts[i]!.length),
      );
      assert.equal(r.etag, md5(parts[i]!));
      etags[i] = r.etag;
    }
    const extra = await engine.uploadPart(ns, "m", uploadId, 9, prngBytes(39, MiB));
    const extraIds = stack.service.listParts(ns, "m", uploadId).parts.find((p) =>
      p.partNumber === 9
    )!.chunkRefs.map((r) => r.chunkId);
    const listed = await engine.listParts(ns, "m", uploadId);
    assert.deepEqual(listed.parts.map((p) => p.partNumber), [1, 2, 3, 9]);
    const uploads = await engine.listMultipartUploads(ns);
    assert.deepEqual(uploads.uploads.map((u) => u.uploadId), [uploadId]);
    // A part below 5 MiB that is not the last is refused.
    await assert.rejects(
      engine.completeMultipartUpload(ns, "m", uploadId, [
        { partNumber: 3, etag: etags[2]! },
        { partNumber: 9, etag: extra.etag },
      ]),
      isCode("entity_too_small"),
    );
    const done = await engine.completeMultipartUpload(
      ns,
      "m",
      uploadId,
      etags.map((etag, i) => ({ partNumber: i + 1, etag: `"${etag}"` })),
    );
    const expectedEtag = createHash("md5")
      .update(Buffer.concat(etags.map((e) => Buffer.from(e, "hex"))))
      .digest("hex") + "-3";
    assert.equal(done.etag, expectedEtag);
    const whole = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      whole.set(p, at);
      at += p.length;
    }
    assert.equal(done.size, whole.length);
    const got = await engine.getObject(ns, "m");
    assert.equal(got.etag, expectedEtag);
    assert.equal(got.contentType, "video/x");
    assert.ok(same(await readAll(got.body), whole));
    const ranged = await engine.getObject(ns, "m", {
      range: { start: 5 * MiB - 3, end: 5 * MiB + 2 },
    });
    assert.ok(same(await readAll(ranged.body), whole.subarray(5 * MiB - 3, 5 * MiB + 3)));
    for (const id of extraIds) assert.equal((await stack.chunkStore.stat(id))!.refcount, 0);
    assert.deepEqual((await engine.listMultipartUploads(ns)).uploads, []);

    // Abort gives every part's chunks back.
    const second = await engine.createMultipartUpload(ns, "n");
    await engine.uploadPart(ns, "n", second.uploadId, 1, prngBytes(41, 2 * MiB));
    await engine.uploadPart(ns, "n", second.uploadId, 1, prngBytes(42, 2 * MiB)); // replaced
    await engine.uploadPart(ns, "n", second.uploadId, 2, prngBytes(43, MiB));
    const before = stack.chunkStore.index.count();
    await engine.abortMultipartUpload(ns, "n", second.uploadId);
    await assert.rejects(engine.listParts(ns, "n", second.uploadId), isCode("no_such_upload"));
    await assert.rejects(
      engine.uploadPart(ns, "n", second.uploadId, 3, prngBytes(44, MiB)),
      isCode("no_such_upload"),
    );
    const swept = await stack.gc.run();
    assert.ok(swept.erased > 0);
    assert.equal(stack.chunkStore.index.count(), before - swept.erased);
    assert.equal(
      stack.chunkStore.index.count(),
      new Set(chunkIds(stack, ns, "m").map(String)).size,
    );
    assert.equal(engine.stats().releaseFailures, 0);
  });
});

Deno.test("ObjectEngine completion: preconditions hold at the commit, a repeat answers the same, metadata is added", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "cond");
    const upload = async (key: string, seed: number) => {
      const { uploadId } = await engine.createMultipartUpload(ns, key, { metadata: { a: "1" } });
      const { etag } = await engine.uploadPart(ns, key, uploadId, 1, prngBytes(seed, 1000));
      return { uploadId, parts: [{ partNumber: 1, etag }] };
    };
    // ifAbsent on an existing key: refused, the upload stays open, nothing is overwritten.
    const old = await engine.putObject(ns, "k", prngBytes(60, 10));
    const first = await upload("k", 61);
    await assert.rejects(
      engine.completeMultipartUpload(ns, "k", first.uploadId, first.parts, { ifAbsent: true }),
      isCode("precondition_failed"),
    );
    assert.equal((await engine.headObject(ns, "k")).etag, old.etag);
    assert.equal((await engine.listParts(ns, "k", first.uploadId)).parts.length, 1);
    await assert.rejects(
      engine.completeMultipartUpload(ns, "k", first.uploadId, first.parts, {
        ifVersion: old.version + 1,
      }),
      isCode("precondition_failed"),
    );
    const done = await engine.completeMultipartUpload(ns, "k", first.uploadId, first.parts, {
      ifVersion: old.version,
      metadata: { ":checksum-crc32": "AAAAAA==-1" },
    });
    const info = await engine.headObject(ns, "k");
    assert.equal(info.version, done.version);
    assert.equal(info.completedUploadId, first.uploadId);
    assert.deepEqual(info.metadata, { a: "1", ":checksum-crc32": "AAAAAA==-1" });
    // The same completion again: the same answer, nothing committed.
    const again = await engine.completeMultipartUpload(ns, "k", first.uploadId, first.parts);
    assert.deepEqual(again, done);
    assert.equal((await engine.headObject(ns, "k")).version, done.version);
    // With other parts, or once the key holds something else: the upload is gone.
    await assert.rejects(
      engine.completeMultipartUpload(ns, "k", first.uploadId, [{
        partNumber: 1,
        etag: md5(prngBytes(1, 1)),
      }]),
      isCode("no_such_upload"),
    );
    await engine.putObject(ns, "k", prngBytes(62, 10));
    await assert.rejects(
      engine.completeMultipartUpload(ns, "k", first.uploadId, first.parts),
      isCode("no_such_upload"),
    );
    // ifAbsent on a free key completes.
    const second = await upload("fresh", 63);
    await engine.completeMultipartUpload(ns, "fresh", second.uploadId, second.parts, {
      ifAbsent: true,
    });
    assert.equal((await engine.headObject(ns, "fresh")).completedUploadId, second.uploadId);
  });
});

/** Uploads `parts` as a multipart upload of `key`, completed with all of them in order. */
async function putMultipart(
  engine: ObjectEngine,
  ns: NamespaceRef,
  key: string,
  parts: Uint8Array[],
): Promise<string> {
  const { uploadId } = await engine.createMultipartUpload(ns, key);
  const listed = [];
  for (const [i, part] of parts.entries()) {
    const { etag } = await engine.uploadPart(ns, key, uploadId, i + 1, part);
    listed.push({ partNumber: i + 1, etag });
  }
  return (await engine.completeMultipartUpload(ns, key, uploadId, listed)).etag;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

Deno.test("resolvePart() finds a part's bytes; a single-part object is its own part 1", () => {
  assert.deepEqual(resolvePart([10, 20, 5], 35, 1), { start: 0, end: 9 });
  assert.deepEqual(resolvePart([10, 20, 5], 35, 2), { start: 10, end: 29 });
  assert.deepEqual(resolvePart([10, 20, 5], 35, 3), { start: 30, end: 34 });
  assert.deepEqual(resolvePart([10, 0], 10, 2), { start: 10, end: 9 }, "an empty last part");
  assert.equal(resolvePart(null, 35, 1), null);
  for (const [sizes, n, count] of [[[10, 20, 5], 4, 3], [null, 2, 1], [[7], 10_000, 1]] as const) {
    assert.throws(() => resolvePart(sizes, 35, n), (e: unknown) => {
      assert.ok(e instanceof ObjectPartError, String(e));
      assert.deepEqual([e.partNumber, e.partsCount, e.code], [n, count, "invalid_argument"]);
      return true;
    });
  }
  for (const n of [0, -1, 1.5, 10_001]) {
    assert.throws(
      () => resolvePart([35], 35, n),
      (e: unknown) => isCode("invalid_argument")(e) && !(e instanceof ObjectPartError),
    );
  }
});

Deno.test("ObjectEngine multipart objects keep their part sizes: getObject({ partNumber }) reads one part", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "parts");
    // Parts across chunk boundaries, and an empty last part.
    const parts = [
      prngBytes(61, 300_007),
      prngBytes(62, 200_000),
      prngBytes(63, 1),
      new Uint8Array(),
    ];
    await putMultipart(engine, ns, "m", parts);
    const whole = concat(parts);
    const sizes = parts.map((p) => p.length);
    const info = await engine.headObject(ns, "m");
    assert.deepEqual(info.partSizes, sizes);
    assert.match(info.etag, /-4$/);
    let start = 0;
    for (const [i, part] of parts.entries()) {
      const got = await engine.getObject(ns, "m", { partNumber: i + 1 });
      assert.deepEqual(got.range, { start, end: start + part.length - 1 }, `part ${i + 1}`);
      assert.equal(got.contentLength, part.length);
      assert.deepEqual(got.partSizes, sizes);
      assert.equal(got.etag, info.etag);
      assert.ok(same(await readAll(got.body), whole.subarray(start, start + part.length)));
      start += part.length;
    }
    await assert.rejects(
      engine.getObject(ns, "m", { partNumber: 5 }),
      (e: unknown) => e instanceof ObjectPartError && e.partsCount === 4,
    );
    await assert.rejects(
      engine.getObject(ns, "m", { partNumber: 1, range: { start: 0, end: 1 } }),
      isCode("invalid_argument"),
    );
    await assert.rejects(engine.getObject(ns, "m", { partNumber: 0 }), isCode("invalid_argument"));

    // Single-part objects (chunked and inline) are one part: part 1 is the whole object.
    const plain = prngBytes(64, 100_000);
    await engine.putObject(ns, "plain", plain);
    await engine.putObject(ns, "tiny", new Uint8Array([1, 2, 3]));
    for (const [key, bytes] of [["plain", plain], ["tiny", new Uint8Array([1, 2, 3])]] as const) {
      assert.equal((await engine.headObject(ns, key)).partSizes, null, key);
      const got = await engine.getObject(ns, key, { partNumber: 1 });
      assert.equal(got.range, null, key);
      assert.equal(got.partSizes, null, key);
      assert.ok(same(await readAll(got.body), bytes), key);
      await assert.rejects(
        engine.getObject(ns, key, { partNumber: 2 }),
        (e: unknown) => e instanceof ObjectPartError && e.partsCount === 1,
      );
    }
    // An overwrite by a plain put drops the layout.
    await engine.putObject(ns, "m", plain);
    assert.equal((await engine.headObject(ns, "m")).partSizes, null);
  }, { engine: { cdc: { avgBytes: 64 << 10 }, partBytesMin: 0 } });
});

Deno.test("ObjectEngine copy keeps a multipart source's part sizes (also through hidden parts); a large put has none", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "copies");
    // Few chunks: the copy is one put that carries the layout.
    const small = [prngBytes(71, 5), prngBytes(72, 6), prngBytes(73, 7)];
    const smallETag = await putMultipart(engine, ns, "small", small);
    // Many chunks (more than putChunkRefsMax): the copy goes through hidden parts.
    const large = [prngBytes(74, 300_000), prngBytes(75, 300_000), prngBytes(76, 1234)];
    const largeETag = await putMultipart(engine, ns, "large", large);
    const refsOf = (key: string) => {
      const c = stack.service.get(ns, key).content;
      return c.kind === "chunks" ? c.chunkRefs.length : 0;
    };
    assert.ok(refsOf("small") <= 8 && refsOf("large") > 8, `${refsOf("large")} refs`);
    for (
      const [key, parts, etag] of [["small", small, smallETag], [
        "large",
        large,
        largeETag,
      ]] as const
    ) {
      const copy = await engine.copyObject(ns, key, ns, `${key}-copy`);
      assert.equal(copy.etag, etag);
      const info = await engine.headObject(ns, `${key}-copy`);
      assert.equal(info.etag, etag);
      assert.deepEqual(info.partSizes, parts.map((p) => p.length), key);
      const second = await engine.getObject(ns, `${key}-copy`, { partNumber: 2 });
      assert.ok(same(await readAll(second.body), parts[1]!), key);
    }
    // A put too big for one delta goes through hidden parts, which are not its parts.
    const plain = prngBytes(77, 700_000);
    const put = await engine.putObject(ns, "plain", plain);
    assert.equal(put.etag, md5(plain));
    assert.ok(refsOf("plain") > 8);
    assert.equal((await engine.headObject(ns, "plain")).partSizes, null);
    await engine.copyObject(ns, "plain", ns, "plain-copy");
    assert.equal((await engine.headObject(ns, "plain-copy")).partSizes, null);
    assert.ok(same(await get(stack, ns, "plain-copy"), plain));
    assert.deepEqual((await engine.listMultipartUploads(ns)).uploads, []);
  }, { engine: { cdc: { avgBytes: 64 << 10 }, putChunkRefsMax: 8, partBytesMin: 0 } });
});

Deno.test("ObjectEngine copy references the same chunks and survives the source's delete", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "src");
    const other = await engine.createNamespace(tenant(1), "dst");
    const bytes = prngBytes(51, 3 * MiB);
    const put = await engine.putObject(ns, "a", bytes, { metadata: { x: "1" } });
    const stored = engine.stats().chunksStored;
    const copy = await engine.copyObject(ns, "a", other, "b");
    assert.equal(copy.etag, put.etag);
    const replaced = await engine.copyObject(ns, "a", ns, "c", { metadata: { y: "2" } });
    assert.equal(replaced.size, bytes.length);
    assert.deepEqual((await engine.headObject(ns, "c")).metadata, { y: "2" });
    assert.deepEqual((await engine.headObject(other, "b")).metadata, { x: "1" });
    assert.equal(engine.stats().chunksStored, stored);
    assert.ok((await refcounts(stack, ns, "a")).every((n) => n === 3));
    await engine.putObject(ns, "tiny", new Uint8Array([1, 2, 3]));
    await engine.copyObject(ns, "tiny", other, "tiny");
    assert.deepEqual(await get(stack, other, "tiny"), new Uint8Array([1, 2, 3]));
    await engine.deleteObject(ns, "a");
    await engine.deleteObject(ns, "c");
    await stack.gc.run();
    assert.ok(same(await get(stack, other, "b"), bytes));
    assert.ok((await refcounts(stack, other, "b")).every((n) => n === 1));
    await assert.rejects(engine.copyObject(ns, "a", other, "z"), isCode("not_found"));
  });
});

Deno.test("ObjectEngine reads objects sealed under every key epoch after a rotation and a restart", async () => {
  await withStack(async (stack, reopen) => {
    const ns = await stack.engine.createNamespace(tenant(1), "epochs");
    const old = prngBytes(61, 2 * MiB);
    await stack.engine.putObject(ns, "old", old);
    const rotated = await stack.systemKeys.rotate();
    assert.equal(rotated, 2);
    const fresh = prngBytes(62, 2 * MiB);
    await stack.engine.putObject(ns, "new", fresh);
    const epochOf = async (key: string) =>
      parseEnvelopeHeader(await stack.chunkStore.get(chunkIds(stack, ns, key)[0]!)).epoch;
    assert.equal(await epochOf("old"), 1);
    assert.equal(await epochOf("new"), 2);
    assert.ok(same(await get(stack, ns, "old"), old));
    assert.ok(same(await get(stack, ns, "new"), fresh));
    stack = await reopen();
    assert.ok(same(await get(stack, ns, "old"), old));
    assert.ok(same(await get(stack, ns, "new"), fresh));
    assert.equal(await stack.systemKeys.currentEpoch(), 2);
  });
});

Deno.test("ObjectEngine reads byte-exact with m device files of an EC 4+2 pool gone", async () => {
  await withStack(async (stack, reopen) => {
    const ns = await stack.engine.createNamespace(tenant(1), "degraded");
    const objects = [1, 2, 3].map((i) => prngBytes(70 + i, i * MiB + i));
    for (const [i, bytes] of objects.entries()) await stack.engine.putObject(ns, `o${i}`, bytes);
    assert.equal(stack.chunkStore.durability.kind, "ec");
    const paths = stack.chunkStore.pool.devices.map((d) => d.path);
    await stack.close();
    await Deno.remove(paths[0]!);
    await Deno.remove(paths[3]!);
    stack = await reopen();
    let rebuilt = 0;
    for (const [i] of objects.entries()) {
      for (const id of chunkIds(stack, ns, `o${i}`)) {
        if ((await stack.chunkStore.read(id)).reconstructed.length > 0) rebuilt++;
      }
    }
    assert.ok(rebuilt > 0, "some reads had to rebuild data fragments");
    for (const [i, bytes] of objects.entries()) {
      assert.ok(same(await get(stack, ns, `o${i}`), bytes), `o${i} rebuilt`);
    }
    const r = await stack.engine.getObject(ns, "o2", { range: { start: MiB, end: MiB + 10 } });
    assert.ok(same(await readAll(r.body), objects[2]!.subarray(MiB, MiB + 11)));
  });
});

Deno.test("ObjectEngine re-stores only the chunks around an insert in the middle of a large object", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "edit");
    const size = 24 * MiB;
    const original = prngBytes(80, size);
    await engine.putObject(ns, "v1", original);
    const chunks = chunkIds(stack, ns, "v1").length;
    const middle = size / 2 + 12_345;
    const edited = new Uint8Array(size + 100);
    edited.set(original.subarray(0, middle));
    edited.set(new Prng(81).bytes(100), middle);
    edited.set(original.subarray(middle), middle + 100);
    const before = engine.stats();
    await engine.putObject(ns, "v2", edited);
    const after = engine.stats();
    const stored = after.chunksStored - before.chunksStored;
    const reused = after.chunksDeduplicated - before.chunksDeduplicated;
    assert.ok(stored >= 1 && stored <= 2, `${stored} new chunks of ${chunks}`);
    assert.ok(reused >= chunks - 2, `${reused} chunks reused of ${chunks}`);
    assert.ok(same(await get(stack, ns, "v2"), edited));
  });
});

Deno.test("ObjectEngine keeps tenants apart: another tenant cannot read, list, copy or delete", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const a = await engine.createNamespace(tenant(1), "shared-name");
    const b = await engine.createNamespace(tenant(2), "shared-name");
    assert.notDeepEqual(a.id, b.id);
    await engine.putObject(a, "secret", prngBytes(90, 2 * MiB));
    await engine.putObject(a, "small", new Uint8Array([1]));
    await assert.rejects(engine.getObject(b, "secret"), isCode("not_found"));
    const forged: NamespaceRef = { tenantId: tenant(2), id: a.id };
    await assert.rejects(engine.getObject(forged, "secret"), isCode("namespace_not_found"));
    await assert.rejects(engine.headObject(forged, "small"), isCode("namespace_not_found"));
    await assert.rejects(engine.listObjects(forged), isCode("namespace_not_found"));
    await assert.rejects(
      engine.copyObject(forged, "secret", b, "stolen"),
      isCode("namespace_not_found"),
    );
    await assert.rejects(engine.deleteObject(forged, "secret"), isCode("namespace_not_found"));
    await assert.rejects(
      engine.putObject(forged, "x", prngBytes(91, MiB)),
      isCode("namespace_not_found"),
    );
    assert.deepEqual((await engine.listNamespaces(tenant(2))).map((n) => n.name), ["shared-name"]);
    assert.equal((await engine.listObjects(b)).objects.length, 0);
    assert.equal((await engine.listObjects(a)).objects.length, 2);
    assert.equal(engine.stats().releaseFailures, 0);
  });
});

Deno.test("ObjectEngine after crypto-shred: the tenant's reads and writes fail cleanly, others go on", async () => {
  await withStack(async (stack, reopen) => {
    const a = await stack.engine.createNamespace(tenant(1), "doomed");
    const b = await stack.engine.createNamespace(tenant(2), "kept");
    await stack.engine.putObject(a, "big", prngBytes(100, 2 * MiB));
    await stack.engine.putObject(a, "small", new Uint8Array([1, 2]));
    await stack.engine.putObject(b, "big", prngBytes(101, 2 * MiB));
    await stack.kms.destroyKey(kmsTenantName(tenant(1)));
    const shredded = (e: unknown) =>
      e instanceof CompositionError && e.code === "namespace_not_found" &&
      /crypto-shred/.test(e.message);
    for (let round = 0; round < 2; round++) {
      await assert.rejects(stack.engine.getObject(a, "big"), shredded);
      await assert.rejects(stack.engine.getObject(a, "small"), shredded);
      await assert.rejects(stack.engine.headObject(a, "small"), shredded);
      await assert.rejects(stack.engine.listObjects(a), shredded);
      await assert.rejects(stack.engine.putObject(a, "more", prngBytes(102, MiB)), shredded);
      await assert.rejects(stack.engine.createNamespace(tenant(1), "again"), shredded);
      assert.ok(same(await get(stack, b, "big"), prngBytes(101, 2 * MiB)));
      stack = await reopen();
    }
  });
});

Deno.test("ObjectEngine gives back every chunk of a put whose body fails or is truncated", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "fail");
    const blocks = prngBlocks(110, 8 * MiB);
    let sent = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 6 * MiB) {
          controller.error(new Error("client went away"));
          return;
        }
        const next = blocks.next().value!;
        sent += next.length;
        controller.enqueue(next);
      },
    });
    await assert.rejects(engine.putObject(ns, "x", failing), /client went away/);
    assert.ok(engine.stats().chunksStored > 0, "some chunks were stored before the failure");
    await assert.rejects(
      engine.putObject(ns, "y", prngStream(111, 3 * MiB), { sizeHint: 3 * MiB + 1 }),
      isCode("invalid_argument"),
    );
    await assert.rejects(
      engine.putObject(ns, "z", prngBytes(112, 10), { sizeHint: 11 }),
      isCode("invalid_argument"),
    );
    await assert.rejects(engine.getObject(ns, "x"), isCode("not_found"));
    await assert.rejects(engine.getObject(ns, "y"), isCode("not_found"));
    // A refused commit (precondition) gives its chunks back too.
    await engine.putObject(ns, "p", prngBytes(113, 2 * MiB));
    await assert.rejects(
      engine.putObject(ns, "p", prngBytes(114, 2 * MiB), { ifVersion: 1 }),
      isCode("precondition_failed"),
    );
    await assert.rejects(
      engine.putObject(ns, "p", prngBytes(115, 2 * MiB), { ifAbsent: true }),
      isCode("precondition_failed"),
    );
    const swept = await stack.gc.run();
    assert.ok(swept.erased > 0);
    assert.equal(stack.chunkStore.index.count(), chunkIds(stack, ns, "p").length);
    assert.equal(engine.stats().releaseFailures, 0);
  });
});

Deno.test("ObjectEngine commits a composition larger than one delta through hidden parts", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "spill");
    const size = 3 * MiB + 17;
    const bytes = prngBytes(120, size);
    const put = await engine.putObject(ns, "s", prngStream(120, size), { metadata: { m: "1" } });
    assert.equal(put.etag, md5(bytes));
    const object = stack.service.get(ns, "s");
    assert.equal(object.etag, md5(bytes), "the etag of a plain put, not of parts");
    assert.deepEqual(object.metadata, { m: "1" });
    assert.ok(object.content.kind === "chunks" && object.content.chunkRefs.length > 16);
    assert.ok(same(await get(stack, ns, "s"), bytes));
    assert.deepEqual((await engine.listMultipartUploads(ns)).uploads, []);
    // A copy of it takes the same path.
    await engine.copyObject(ns, "s", ns, "s2");
    assert.ok(same(await get(stack, ns, "s2"), bytes));
    assert.equal((await engine.headObject(ns, "s2")).etag, md5(bytes));
    await engine.deleteObject(ns, "s");
    await engine.deleteObject(ns, "s2");
    await stack.gc.run();
    assert.equal(stack.chunkStore.index.count(), 0);
    await assert.rejects(
      engine.putObject(ns, "c", prngBytes(121, MiB), { ifAbsent: true }),
      isCode("invalid_argument"),
    );
    assert.deepEqual((await engine.listMultipartUploads(ns)).uploads, []);
    await stack.gc.run();
    assert.equal(stack.chunkStore.index.count(), 0);
    assert.equal(engine.stats().releaseFailures, 0);
  }, { engine: { cdc: { avgBytes: 64 << 10 }, putChunkRefsMax: 4 } });
});

Deno.test("ObjectEngine: a hidden part refused midway gives every ref back once; an unknown outcome keeps them", async () => {
  await withStack(async (stack) => {
    let failCode: CompositionErrorCode = "read_only";
    let partCalls = 0;
    const service = new Proxy(stack.service, {
      get(target, property) {
        if (property === "putPart") {
          return (...args: Parameters<typeof target.putPart>) =>
            ++partCalls === 2
              ? Promise.reject(new CompositionError(failCode, "injected"))
              : target.putPart(...args);
        }
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const engine = new ObjectEngine({
      service,
      chunkStore: stack.chunkStore,
      aead: stack.aead,
      systemKeys: stack.systemKeys,
      cdc: { avgBytes: 64 << 10 },
      putChunkRefsMax: 4,
      logger: quiet,
    });
    try {
      const ns = await engine.createNamespace(tenant(1), "midway");
      await assert.rejects(engine.putObject(ns, "x", prngBytes(160, 2 * MiB)), isCode("read_only"));
      assert.deepEqual((await engine.listMultipartUploads(ns)).uploads, [], "upload aborted");
      await stack.gc.run();
      assert.equal(stack.chunkStore.index.count(), 0, "every chunk came back");
      assert.equal(engine.stats().releaseFailures, 0, "none came back twice");

      failCode = "unavailable";
      partCalls = 0;
      await assert.rejects(
        engine.putObject(ns, "y", prngBytes(161, 2 * MiB)),
        isCode("unavailable"),
      );
      assert.deepEqual((await engine.listMultipartUploads(ns)).uploads, []);
      await assert.rejects(engine.getObject(ns, "y"), isCode("not_found"));
      assert.ok(engine.stats().releaseFailures > 0, "refs of an unknown outcome are kept");
      await stack.gc.run();
      assert.ok(stack.chunkStore.index.count() > 0, "kept refs leak space, never data");
    } finally {
      await engine.close();
    }
  });
});

Deno.test("ObjectEngine names chunks with the tenant's HMAC key in tenant dedup mode", async () => {
  await withStack(async (stack, reopen) => {
    const a = await stack.engine.createNamespace(tenant(1), "a");
    const b = await stack.engine.createNamespace(tenant(2), "b");
    const bytes = prngBytes(130, 2 * MiB);
    await stack.engine.putObject(a, "x", bytes);
    await stack.engine.putObject(b, "x", bytes);
    await stack.engine.putObject(a, "y", bytes);
    const ids = (ns: NamespaceRef, key: string) => chunkIds(stack, ns, key).map(String);
    assert.deepEqual(ids(a, "x"), ids(a, "y"), "dedup within the tenant");
    assert.notDeepEqual(ids(a, "x"), ids(b, "x"), "no dedup across tenants");
    stack = await reopen();
    await stack.engine.putObject(a, "z", bytes);
    assert.deepEqual(ids(a, "z"), ids(a, "x"), "the dedup key survives a restart");
    assert.ok(same(await get(stack, b, "x"), bytes));
  }, { dedupModeFor: (t) => (t[15] === 1 ? "tenant" : "global") });
});

Deno.test("ObjectEngine serves concurrent puts and gets of one namespace", async () => {
  await withStack(async (stack) => {
    const { engine } = stack;
    const ns = await engine.createNamespace(tenant(1), "busy");
    const sizes = [0, 10, 5000, MiB, 3 * MiB + 1, 2 * MiB, 100, 4 * MiB];
    await Promise.all(sizes.map((n, i) => engine.putObject(ns, `k${i}`, prngStream(200 + i, n))));
    await Promise.all(sizes.map(async (n, i) => {
      assert.ok(same(await get(stack, ns, `k${i}`), prngBytes(200 + i, n)));
    }));
  });
});

Deno.test("ObjectEngine hashes alike on the worker and on the event loop, in both dedup modes", async () => {
  await withStack(async (stack) => {
    const inline = new ObjectEngine({
      service: stack.service,
      chunkStore: stack.chunkStore,
      aead: stack.aead,
      systemKeys: stack.systemKeys,
      tenantGate: stack.cipher,
      dedup: stack.dedup,
      hashWorker: false,
      logger: quiet,
    });
    for (const t of [1, 2]) {
      const ns = await stack.engine.createNamespace(tenant(t), `mode-${t}`);
      const bytes = prngBytes(140 + t, 5 * MiB + 3);
      const viaWorker = await stack.engine.putObject(ns, "w", prngStream(140 + t, bytes.length));
      const viaLoop = await inline.putObject(ns, "i", prngStream(140 + t, bytes.length));
      assert.equal(viaWorker.etag, md5(bytes));
      assert.equal(viaLoop.etag, md5(bytes));
      assert.deepEqual(chunkIds(stack, ns, "w"), chunkIds(stack, ns, "i"));
      assert.equal(inline.stats().chunksStored, 0, "the second copy deduplicates entirely");
      const first = splitChunks(bytes, stack.engine.cdc)[0]!;
      const expected = t === 1
        ? sha256ChunkId(first)
        : hmacChunkId(await stack.dedup.keyFor(tenant(t)), first);
      assert.deepEqual(chunkIds(stack, ns, "w")[0], expected);
    }
    // Three workers: concurrent puts spread over them, each put's MD5 on one of them.
    const pooled = new ObjectEngine({
      service: stack.service,
      chunkStore: stack.chunkStore,
      aead: stack.aead,
      systemKeys: stack.systemKeys,
      tenantGate: stack.cipher,
      dedup: stack.dedup,
      hashWorkers: 3,
      logger: quiet,
    });
    try {
      for (const t of [1, 2]) {
        const ns = stack.engine.namespace(tenant(t), `mode-${t}`);
        const sizes = [3 * MiB + 1, 2 * MiB, 5 * MiB + 3, 700_000, 4 * MiB, 1];
        const puts = await Promise.all(
          sizes.map((size, i) => pooled.putObject(ns, `p${i}`, prngStream(160 + i, size))),
        );
        for (const [i, size] of sizes.entries()) {
          assert.equal(puts[i]!.etag, md5(prngBytes(160 + i, size)), `put ${i} of tenant ${t}`);
          const again = await inline.putObject(ns, `q${i}`, prngStream(160 + i, size));
          assert.equal(again.etag, puts[i]!.etag);
          assert.deepEqual(chunkIds(stack, ns, `q${i}`), chunkIds(stack, ns, `p${i}`));
        }
      }
      assert.equal(inline.stats().chunksStored, 0, "the event loop's copies deduplicate entirely");
    } finally {
      await pooled.close();
    }
    // With its worker stopped the engine hashes on the event loop.
    await stack.engine.close();
    const ns = stack.engine.namespace(tenant(1), "mode-1");
    const put = await stack.engine.putObject(ns, "after", prngBytes(150, 2 * MiB));
    assert.equal(put.etag, md5(prngBytes(150, 2 * MiB)));
    assert.ok(same(await get(stack, ns, "after"), prngBytes(150, 2 * MiB)));
  }, { dedupModeFor: (t) => (t[15] === 2 ? "tenant" : "global") });
});

Deno.test({
  name: "ObjectEngine hashes off the event loop (OpenSSL shim) as on the loop, in both dedup modes",
  ignore: !nativeHashing.ok,
  fn: async () => {
    if (!nativeHashing.ok) return;
    const hashing = nativeHashing.hashing;
    await withStack(async (stack) => {
      const make = (options: { hashing?: typeof hashing; hashWorker?: boolean }) =>
        new ObjectEngine({
          service: stack.service,
          chunkStore: stack.chunkStore,
          aead: stack.aead,
          systemKeys: stack.systemKeys,
          tenantGate: stack.cipher,
          dedup: stack.dedup,
          logger: quiet,
          ...options,
        });
      const native = make({ hashing });
      const inline = make({ hashWorker: false });
      try {
        for (const t of [1, 2]) {
          const ns = await stack.engine.createNamespace(tenant(t), `native-${t}`);
          const sizes = [3 * MiB + 1, 2 * MiB, 5 * MiB + 3, 700_000, 1];
          const puts = await Promise.all(
            sizes.map((size, i) => native.putObject(ns, `n${i}`, prngStream(180 + i, size))),
          );
          for (const [i, size] of sizes.entries()) {
            const bytes = prngBytes(180 + i, size);
            assert.equal(puts[i]!.etag, md5(bytes), `put ${i} of tenant ${t}`);
            const again = await inline.putObject(ns, `l${i}`, prngStream(180 + i, size));
            assert.equal(again.etag, puts[i]!.etag);
            assert.deepEqual(chunkIds(stack, ns, `l${i}`), chunkIds(stack, ns, `n${i}`));
            assert.ok(same(await get(stack, ns, `n${i}`), bytes));
          }
          const first = splitChunks(prngBytes(180, sizes[0]!), stack.engine.cdc)[0]!;
          const expected = t === 1
            ? sha256ChunkId(first)
            : hmacChunkId(await stack.dedup.keyFor(tenant(t)), first);
          assert.deepEqual(chunkIds(stack, ns, "n0")[0], expected);
        }
        assert.equal(inline.stats().chunksStored, 0, "the loop's copies deduplicate entirely");
      } finally {
        await native.close();
        await inline.close();
      }
    }, { dedupModeFor: (t) => (t[15] === 2 ? "tenant" : "global") });
  },
});

Deno.test("startEngineStack() runs on a metadata plane it is given, attaching the views to every shard", async () => {
  const raftDir = await Deno.makeTempDir({ prefix: "kiseki-engine-raft-" });
  let shards = 0;
  try {
    await withStack(async (stack, reopen) => {
      assert.equal(stack.metadata.stateMachines.size, 3);
      const ns = await stack.engine.createNamespace(tenant(1), "given");
      await stack.engine.putObject(ns, "k", prngBytes(170, MiB));
      stack = await reopen();
      assert.ok(same(await get(stack, ns, "k"), prngBytes(170, MiB)));
      assert.equal(shards, 6, "views attached to 3 shards, twice");
    }, {
      metadata: (onShard, pageKeys) =>
        startLocalMetadataPlane({
          dataDir: raftDir,
          pageKeys,
          shardCount: 3,
          logger: quiet,
          onShard: (id, sm) => {
            shards++;
            onShard(id, sm);
          },
        }),
    });
    assert.ok((await Deno.stat(`${raftDir}/raft`)).isDirectory, "the given plane's log was used");
  } finally {
    await Deno.remove(raftDir, { recursive: true });
  }
});
