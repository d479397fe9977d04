import assert from "node:assert/strict";
import { bypassChunkCache } from "../cache_port.ts";
import {
  createChunkCache,
  type DisconnectTimers,
  DisconnectWipe,
  DiskL2Store,
  L2_HEADER_BYTES,
  L2FullError,
  TieredChunkCache,
} from "./mod.ts";

// Real AES-256-GCM (WebCrypto) stands in for the client's envelope: what L2 keeps must be
// what `open` needs, and nothing readable.
const KEY = await crypto.subtle.importKey(
  "raw",
  new Uint8Array(32).fill(7),
  "AES-GCM",
  false,
  ["encrypt", "decrypt"],
);

async function seal(plaintext: Uint8Array): Promise<Uint8Array> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv }, KEY, plaintext as Uint8Array<ArrayBuffer>),
  );
  const out = new Uint8Array(12 + ct.length);
  out.set(iv);
  out.set(ct, 12);
  return out;
}

async function open(sealed: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: sealed.subarray(0, 12) as Uint8Array<ArrayBuffer> },
      KEY,
      sealed.subarray(12) as Uint8Array<ArrayBuffer>,
    ),
  );
}

async function chunkIdOf(plaintext: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest("SHA-256", plaintext as Uint8Array<ArrayBuffer>),
  );
}

function canaryChunk(n: number, size = 4096): Uint8Array {
  const text = new TextEncoder().encode(`KISEKI-CANARY-${n}-`);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += text.length) out.set(text.subarray(0, size - i), i);
  return out;
}

/** A cluster of sealed chunks that counts how often each is fetched. */
class FakeOrigin {
  readonly sealed = new Map<string, Uint8Array>();
  readonly fetches = new Map<string, number>();
  async add(plaintext: Uint8Array): Promise<Uint8Array> {
    const id = await chunkIdOf(plaintext);
    this.sealed.set(id.join(","), await seal(plaintext));
    return id;
  }
  fetcher(id: Uint8Array, delayMs = 0): () => Promise<Uint8Array> {
    return async () => {
      const key = id.join(",");
      this.fetches.set(key, (this.fetches.get(key) ?? 0) + 1);
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      const s = this.sealed.get(key);
      if (s === undefined) throw new Error("not found");
      return s;
    };
  }
  count(id: Uint8Array): number {
    return this.fetches.get(id.join(",")) ?? 0;
  }
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-cache-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function l2Files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const shard of Deno.readDir(`${dir}/chunks`)) {
    for await (const f of Deno.readDir(`${dir}/chunks/${shard.name}`)) {
      out.push(`${dir}/chunks/${shard.name}/${f.name}`);
    }
  }
  return out;
}

Deno.test("TieredChunkCache.read() fetches once, then serves L1; L2 survives a restart", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const plain = canaryChunk(1);
    const id = await origin.add(plain);
    let l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    let cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2 });
    assert.deepEqual(await cache.read(id, origin.fetcher(id), open), plain);
    assert.deepEqual(await cache.read(id, origin.fetcher(id), open), plain);
    assert.equal(origin.count(id), 1);
    assert.equal(cache.stats().l1Hits, 1);
    await cache.close();

    l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    assert.equal(l2.stats().entries, 1, "index rebuilt from the files");
    cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2 });
    assert.deepEqual(await cache.read(id, origin.fetcher(id), open), plain);
    assert.equal(origin.count(id), 1, "served from L2 after the restart");
    assert.equal(cache.stats().l2Hits, 1);
    await cache.close();
  });
});

Deno.test("TieredChunkCache.read() shares one fetch among concurrent misses of a chunk", async () => {
  const origin = new FakeOrigin();
  const plain = canaryChunk(2);
  const id = await origin.add(plain);
  const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2: null });
  const reads = await Promise.all(
    Array.from({ length: 16 }, () => cache.read(id, origin.fetcher(id, 20), open)),
  );
  for (const r of reads) assert.deepEqual(r, plain);
  assert.equal(origin.count(id), 1);
  assert.equal(cache.stats().sharedFetches, 15);
  await cache.close();
});

Deno.test("TieredChunkCache.read() drops a corrupt L2 entry and fetches the chunk again", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const plain = canaryChunk(3);
    const id = await origin.add(plain);
    const l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    const warm = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2 });
    await warm.read(id, origin.fetcher(id), open);
    await warm.close();
    const [file] = await l2Files(dir);
    const bytes = await Deno.readFile(file!);
    bytes[L2_HEADER_BYTES + 100]! ^= 0x01; // one flipped bit in the sealed body
    await Deno.writeFile(file!, bytes);

    const l2b = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2: l2b });
    assert.deepEqual(await cache.read(id, origin.fetcher(id), open), plain);
    assert.equal(origin.count(id), 2, "refetched");
    assert.equal(l2b.stats().corruptDropped, 1);
    await l2b.flush();
    assert.equal(l2b.stats().entries, 1, "written again, whole");
    await cache.close();

    // A flipped header byte is caught when the index is rebuilt.
    const [again] = await l2Files(dir);
    const b2 = await Deno.readFile(again!);
    b2[9]! ^= 0x40;
    await Deno.writeFile(again!, b2);
    const l2c = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    assert.equal(l2c.stats().entries, 0);
    assert.equal(l2c.stats().corruptDropped, 1);
    assert.deepEqual(await l2Files(dir), []);
    await l2c.close();
  });
});

Deno.test("TieredChunkCache keeps L1 and L2 under their bounds, least recently used first", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const ids: Uint8Array[] = [];
    for (let i = 0; i < 10; i++) ids.push(await origin.add(canaryChunk(100 + i, 4096)));
    const sealedSize = 4096 + 12 + 16;
    const l2 = await DiskL2Store.open({ dir, maxBytes: 4 * sealedSize });
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 3 * 4096, l2 });
    for (const id of ids) {
      await cache.read(id, origin.fetcher(id), open);
      await l2.flush();
    }
    const s = cache.stats();
    assert.equal(s.l1Entries, 3);
    assert.ok(s.l1Bytes <= 3 * 4096);
    assert.equal(s.l2!.entries, 4);
    assert.ok(s.l2!.bytes <= 4 * sealedSize);
    assert.equal((await l2Files(dir)).length, 4, "evicted entries leave the disk");
    // The newest are kept: the last chunk is an L1 hit, the 7th an L2 hit, the 1st a fetch.
    await cache.read(ids[9]!, origin.fetcher(ids[9]!), open);
    await cache.read(ids[6]!, origin.fetcher(ids[6]!), open);
    await cache.read(ids[0]!, origin.fetcher(ids[0]!), open);
    assert.equal(origin.count(ids[9]!), 1);
    assert.equal(origin.count(ids[6]!), 1);
    assert.equal(origin.count(ids[0]!), 2);
    await cache.close();
  });
});

Deno.test("TieredChunkCache keeps one copy of a chunk two files share, sealed only", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const plain = canaryChunk(7, 8192);
    const id = await origin.add(plain);
    const l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2 });
    cache.wrote(id, origin.sealed.get(id.join(","))!, plain); // file A wrote it
    await l2.flush();
    assert.deepEqual(await cache.read(id, origin.fetcher(id), open), plain); // file B reads it
    assert.equal(origin.count(id), 0);
    const files = await l2Files(dir);
    assert.equal(files.length, 1);
    const onDisk = new TextDecoder("latin1").decode(await Deno.readFile(files[0]!));
    assert.ok(!onDisk.includes("KISEKI-CANARY"), "no plaintext on disk");
    await cache.close();
  });
});

Deno.test("TieredChunkCache in pinned mode fills L2 only by pin(); release() makes it organic", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const a = await origin.add(canaryChunk(10));
    const b = await origin.add(canaryChunk(11));
    const l2 = await DiskL2Store.open({ dir, maxBytes: 3 * 4200 });
    const cache = new TieredChunkCache({ mode: "pinned", l1MaxBytes: 1 << 20, l2 });
    await cache.read(a, origin.fetcher(a), open);
    await l2.flush();
    assert.equal(l2.stats().entries, 0, "a read does not fill L2 in pinned mode");
    assert.equal(await cache.pin(b, origin.fetcher(b)), true);
    assert.equal(await cache.pin(b, origin.fetcher(b)), false, "already pinned: not fetched");
    assert.equal(l2.stats().pinnedEntries, 1);
    const c = await origin.add(canaryChunk(12));
    const d = await origin.add(canaryChunk(13));
    await cache.pin(c, origin.fetcher(c));
    await cache.pin(d, origin.fetcher(d));
    const e = await origin.add(canaryChunk(14));
    await assert.rejects(cache.pin(e, origin.fetcher(e)), L2FullError);
    assert.equal(await cache.release([b, c]), 2);
    assert.equal(l2.stats().pinnedEntries, 1);
    await cache.close();
    const reopened = await DiskL2Store.open({ dir, maxBytes: 3 * 4200 });
    assert.equal(reopened.stats().pinnedEntries, 1, "pin flags survive a restart");
    assert.equal(reopened.stats().entries, 3);
    await reopened.close();
  });
});

Deno.test("TieredChunkCache.read() never evicts pinned entries for organic ones", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const pinned = await origin.add(canaryChunk(20));
    const l2 = await DiskL2Store.open({ dir, maxBytes: 3 * 4200 });
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1, l2 });
    await cache.pin(pinned, origin.fetcher(pinned));
    for (let i = 0; i < 6; i++) {
      const id = await origin.add(canaryChunk(30 + i));
      await cache.read(id, origin.fetcher(id), open);
      await l2.flush();
    }
    assert.equal(l2.entry(pinned)?.pinned, true);
    assert.equal(l2.stats().entries, 3);
    await cache.close();
  });
});

Deno.test("TieredChunkCache.wipe() empties both levels; a fetch in flight does not refill", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const a = await origin.add(canaryChunk(40));
    const b = await origin.add(canaryChunk(41));
    const l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2 });
    await cache.read(a, origin.fetcher(a), open);
    await cache.pin(a, origin.fetcher(a));
    const slow = cache.read(b, origin.fetcher(b, 50), open);
    await cache.wipe("crypto-shred");
    await slow;
    await l2.flush();
    assert.equal(cache.stats().l1Entries, 0);
    assert.equal(l2.stats().entries, 0);
    assert.deepEqual(await l2Files(dir), []);
    await cache.read(a, origin.fetcher(a), open);
    assert.equal(origin.count(a), 2, "fetched again after the wipe");
    await cache.close();
  });
});

class ManualTimers implements DisconnectTimers {
  now = 1_000_000;
  #next = 1;
  readonly pending = new Map<number, { at: number; fn: () => void }>();
  nowMs(): number {
    return this.now;
  }
  setTimeout(fn: () => void, ms: number): number {
    const id = this.#next++;
    this.pending.set(id, { at: this.now + ms, fn });
    return id;
  }
  clearTimeout(id: number): void {
    this.pending.delete(id);
  }
  advance(ms: number): void {
    this.now += ms;
    for (const [id, t] of [...this.pending]) {
      if (t.at <= this.now) {
        this.pending.delete(id);
        t.fn();
      }
    }
  }
}

Deno.test("DisconnectWipe wipes after a disconnect past its bound, not before", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const a = await origin.add(canaryChunk(50));
    const l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2 });
    const timers = new ManualTimers();
    const watch = new DisconnectWipe({ cache, l2, boundMs: 10_000, timers });
    watch.connected();
    await cache.read(a, origin.fetcher(a), open);
    await l2.flush();
    watch.disconnected();
    timers.advance(9_000);
    watch.connected(); // back in time: nothing wiped
    watch.disconnected();
    timers.advance(9_999);
    await Promise.resolve();
    assert.equal(cache.stats().wipes, 0);
    timers.advance(1);
    await watch.close();
    assert.equal(cache.stats().wipes, 1);
    assert.equal(l2.stats().entries, 0);
    await cache.close();
  });
});

Deno.test("createChunkCache() wipes L2 at start when the last contact is past the bound", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const a = await origin.add(canaryChunk(60));
    const timers = new ManualTimers();
    const options = {
      mode: "organic" as const,
      dir,
      l1MaxBytes: 1 << 20,
      l2MaxBytes: 1 << 20,
      disconnectWipeMs: 10_000,
      timers,
    };
    const first = await createChunkCache(options);
    first.disconnect!.connected();
    await first.cache.read(a, origin.fetcher(a), open);
    await first.close();

    timers.now += 5_000; // a quick restart keeps L2
    const second = await createChunkCache(options);
    assert.equal(second.tiered!.stats().l2!.entries, 1);
    await second.close();

    timers.now += 20_000; // a long absence wipes it
    const third = await createChunkCache(options);
    assert.equal(third.tiered!.stats().l2!.entries, 0);
    assert.equal(third.tiered!.stats().wipes, 1);
    await third.close();

    const bypass = await createChunkCache({ ...options, mode: "bypass" });
    assert.equal(bypass.cache, bypassChunkCache);
    await bypass.close();
  });
});

Deno.test("DiskL2Store.open() removes leftovers of writes cut short", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/chunks/ab`, { recursive: true });
    await Deno.writeFile(`${dir}/chunks/ab/abcd.tmp`, new Uint8Array(10));
    await Deno.writeFile(`${dir}/chunks/ab/abcdef`, new Uint8Array(5)); // torn header
    const l2 = await DiskL2Store.open({ dir, maxBytes: 1 << 20 });
    assert.equal(l2.stats().entries, 0);
    assert.deepEqual(await l2Files(dir), []);
    await l2.close();
  });
});

Deno.test("DiskL2Store.read() adopts an entry another process wrote after the index was built", async () => {
  await withDir(async (dir) => {
    const origin = new FakeOrigin();
    const a = await origin.add(canaryChunk(70));
    const mount = await DiskL2Store.open({ dir, maxBytes: 1 << 20 }); // e.g. the FUSE client
    const stager = await DiskL2Store.open({ dir, maxBytes: 1 << 20 }); // kiseki-client stage
    await stager.pin(a, origin.sealed.get(a.join(","))!);
    const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2: mount });
    assert.deepEqual(await cache.read(a, origin.fetcher(a), open), canaryChunk(70));
    assert.equal(origin.count(a), 0, "served from the other process's entry");
    assert.equal(mount.entry(a)?.pinned, true);
    await cache.close();
    await stager.close();
  });
});

Deno.test("TieredChunkCache exports hits, misses and bytes per level as metrics", async () => {
  const { renderMetrics } = await import("../../obs/mod.ts");
  const origin = new FakeOrigin();
  const id = await origin.add(canaryChunk(80));
  const cache = new TieredChunkCache({ mode: "organic", l1MaxBytes: 1 << 20, l2: null });
  await cache.read(id, origin.fetcher(id), open);
  await cache.read(id, origin.fetcher(id), open);
  const text = await renderMetrics();
  assert.match(text, /kiseki_client_cache_hits_total\{level="l1"\} [1-9]/);
  assert.match(text, /kiseki_client_cache_misses_total\{level="l1"\} [1-9]/);
  assert.match(text, /kiseki_client_cache_bytes\{level="l1",kind="all"\} [1-9]/);
  assert.match(text, /kiseki_client_cache_fetched_bytes_total [1-9]/);
  await cache.close();
});
