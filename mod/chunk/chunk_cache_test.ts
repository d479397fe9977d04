import assert from "node:assert/strict";
import { ChunkCache } from "./chunk_cache.ts";

const bytes = (n: number, fill: number) => new Uint8Array(n).fill(fill);

Deno.test("ChunkCache keeps entries within its bound, least recently used out first", () => {
  const cache = new ChunkCache(1000);
  cache.set("a", bytes(100, 1));
  cache.set("b", bytes(100, 2));
  cache.set("c", bytes(100, 3));
  assert.equal(cache.get("a")?.[0], 1); // a is now the most recent
  for (let i = 0; i < 9; i++) cache.set(`f${i}`, bytes(100, 10 + i));
  assert.ok(cache.bytes <= 1000, `holds ${cache.bytes}`);
  assert.equal(cache.get("b"), undefined, "b was least recently used");
  assert.equal(cache.get("c"), undefined);
  assert.equal(cache.get("a")?.[0], 1, "a survived: it was used");
  assert.equal(cache.get("f8")?.[0], 18);
  assert.equal(cache.hits, 3);
  assert.equal(cache.misses, 2);
});

Deno.test("ChunkCache replaces an entry under the same key and accounts its bytes once", () => {
  const cache = new ChunkCache(1000);
  cache.set("a", bytes(100, 1));
  cache.set("a", bytes(50, 2));
  assert.equal(cache.bytes, 50);
  assert.equal(cache.size, 1);
  cache.delete("a");
  assert.equal(cache.bytes, 0);
  assert.equal(cache.get("a"), undefined);
});

Deno.test("ChunkCache refuses entries over a quarter of its bound, and a 0 bound caches nothing", () => {
  const cache = new ChunkCache(400);
  cache.set("big", bytes(101, 1));
  assert.equal(cache.get("big"), undefined);
  cache.set("ok", bytes(100, 1));
  assert.equal(cache.get("ok")?.length, 100);
  const off = new ChunkCache(0);
  off.set("a", bytes(1, 1));
  assert.equal(off.get("a"), undefined);
  assert.equal(off.size, 0);
  assert.throws(() => new ChunkCache(-1), RangeError);
});
