import assert from "node:assert/strict";
import { BufferPool } from "./buffer_pool.ts";
import { AssertionError } from "./assert.ts";

Deno.test("BufferPool.acquire() reuses released buffers", () => {
  const pool = new BufferPool({ bufferSizeBytes: 1024, countMax: 4, preallocateCount: 1 });
  const a = pool.acquire()!;
  assert.deepEqual(a.length, 1024);
  pool.release(a);
  assert.equal(pool.acquire(), a);
});

Deno.test("BufferPool.acquire() returns null at countMax and counts the miss", () => {
  const pool = new BufferPool({ bufferSizeBytes: 16, countMax: 3 });
  const lent = [pool.acquire(), pool.acquire(), pool.acquire()];
  for (const b of lent) assert.notEqual(b, null);
  assert.deepEqual(new Set(lent).size, 3);
  assert.deepEqual(pool.acquire(), null);
  assert.throws(() => pool.acquireOrThrow(), RangeError);
  const s = pool.stats();
  assert.deepEqual([s.allocated, s.lent, s.free, s.misses], [3, 3, 0, 2]);
});

Deno.test("BufferPool buffers do not overlap", () => {
  const pool = new BufferPool({ bufferSizeBytes: 8, countMax: 64 });
  const bufs = Array.from({ length: 64 }, () => pool.acquireOrThrow());
  bufs.forEach((b, i) => b.fill(i));
  bufs.forEach((b, i) => assert.deepEqual(b.every((v) => v === i), true));
});

Deno.test("BufferPool.release() of a foreign or twice-released buffer is an assertion", () => {
  const pool = new BufferPool({ bufferSizeBytes: 8, countMax: 2 });
  const a = pool.acquireOrThrow();
  pool.release(a);
  assert.throws(() => pool.release(a), AssertionError);
  assert.throws(() => pool.release(new Uint8Array(8)), AssertionError);
});

Deno.test("BufferPool rejects impossible options", () => {
  assert.throws(() => new BufferPool({ bufferSizeBytes: 0, countMax: 1 }), AssertionError);
  assert.throws(
    () => new BufferPool({ bufferSizeBytes: 1, countMax: 1, preallocateCount: 2 }),
    AssertionError,
  );
});
