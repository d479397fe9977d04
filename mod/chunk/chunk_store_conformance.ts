// The behaviour every ChunkStore owes its callers, as one suite that each implementation's
// tests run against a harness (a local store on simulated or real devices now, a remote
// store later).

import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { randomChunk, sha256 } from "./_testing.ts";
import { type ChunkStore, ChunkStoreError, type ChunkStoreErrorCode } from "./chunk_store.ts";

export interface ChunkStoreHarness {
  store: ChunkStore;
  /** Closes the store and opens it again on the same devices and index. */
  reopen(): Promise<void>;
  close(): Promise<void>;
}

function isCode(code: ChunkStoreErrorCode) {
  return (e: unknown) => e instanceof ChunkStoreError && e.code === code;
}

const SIZES = [0, 1, 63, 64, 65, 4095, 4096, 4097, 65_536, 100_003, 1 << 20];

export function defineChunkStoreConformance(
  name: string,
  makeHarness: () => Promise<ChunkStoreHarness>,
): void {
  const test = (title: string, fn: (h: ChunkStoreHarness) => Promise<void>) =>
    Deno.test(`${name}: ${title}`, async () => {
      const h = await makeHarness();
      try {
        await fn(h);
      } finally {
        await h.close();
      }
    });

  test("put() then get() returns the bytes, for every size", async (h) => {
    const prng = new Prng(101);
    const chunks = SIZES.map((size) => randomChunk(prng, size));
    for (const c of chunks) assert.deepEqual(await h.store.put(c.id, c.bytes), { created: true });
    for (const c of chunks) {
      const back = await h.store.get(c.id);
      assert.equal(back.length, c.bytes.length);
      assert.ok(back.every((b, i) => b === c.bytes[i]), `size ${c.bytes.length} differs`);
    }
  });

  test("put() of a stored id only adds a reference", async (h) => {
    const c = randomChunk(new Prng(102), 10_000);
    assert.deepEqual(await h.store.put(c.id, c.bytes), { created: true });
    assert.deepEqual(await h.store.put(c.id, c.bytes), { created: false });
    assert.equal((await h.store.stat(c.id))!.refcount, 2);
    assert.equal((await h.store.stat(c.id))!.lengthBytes, 10_000);
  });

  test("concurrent puts of one id create it once", async (h) => {
    const c = randomChunk(new Prng(103), 5000);
    const results = await Promise.all(Array.from({ length: 8 }, () => h.store.put(c.id, c.bytes)));
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal((await h.store.stat(c.id))!.refcount, 8);
  });

  test("concurrent puts of many chunks are all durable and readable", async (h) => {
    const prng = new Prng(104);
    const chunks = Array.from({ length: 100 }, () => randomChunk(prng, 1 + prng.nextInt(20_000)));
    await Promise.all(chunks.map((c) => h.store.put(c.id, c.bytes)));
    await h.reopen();
    for (const c of chunks) assert.deepEqual(await h.store.get(c.id), c.bytes);
  });

  test("incRef() and decRef() count references; zero means gone for readers", async (h) => {
    const c = randomChunk(new Prng(105), 3000);
    await h.store.put(c.id, c.bytes);
    assert.equal(await h.store.incRef(c.id), 2);
    assert.equal(await h.store.decRef(c.id), 1);
    assert.equal(await h.store.has(c.id), true);
    assert.equal(await h.store.decRef(c.id), 0);
    assert.equal(await h.store.has(c.id), false);
    await assert.rejects(h.store.get(c.id), isCode("not_found"));
    await assert.rejects(h.store.decRef(c.id), isCode("refcount_underflow"));
    // Stored again before GC: revived without writing.
    assert.deepEqual(await h.store.put(c.id, c.bytes), { created: false });
    assert.deepEqual(await h.store.get(c.id), c.bytes);
  });

  test("unknown ids are not found; bad ids and conflicting lengths are refused", async (h) => {
    const unknown = sha256(new TextEncoder().encode("never stored"));
    assert.equal(await h.store.has(unknown), false);
    assert.equal(await h.store.stat(unknown), null);
    await assert.rejects(h.store.get(unknown), isCode("not_found"));
    await assert.rejects(h.store.incRef(unknown), isCode("not_found"));
    await assert.rejects(h.store.decRef(unknown), isCode("not_found"));
    await assert.rejects(h.store.put(new Uint8Array(31), new Uint8Array(1)), isCode("invalid_id"));
    await assert.rejects(h.store.get(new Uint8Array(33)), isCode("invalid_id"));
    const c = randomChunk(new Prng(106), 100);
    await h.store.put(c.id, c.bytes);
    await assert.rejects(h.store.put(c.id, new Uint8Array(101)), isCode("id_conflict"));
  });

  test("references and bytes survive reopening", async (h) => {
    const c = randomChunk(new Prng(107), 70_000);
    await h.store.put(c.id, c.bytes);
    await h.store.incRef(c.id);
    await h.reopen();
    assert.equal((await h.store.stat(c.id))!.refcount, 2);
    assert.deepEqual(await h.store.get(c.id), c.bytes);
  });
}
