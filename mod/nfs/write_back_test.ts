import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { WriteSession } from "./write_back.ts";

/** A session over `base` whose stored version lands in the returned holder. */
function session(base: Uint8Array, pendingBytesMax?: number) {
  const stored: { bytes: Uint8Array | null; fills: number } = { bytes: null, fills: 0 };
  const s = new WriteSession({
    baseSize: base.length,
    pendingBytesMax,
    fill: (offset, length) => {
      stored.fills++;
      return Promise.resolve(base.slice(offset, offset + length));
    },
    sink: async (body) => {
      const parts = [];
      for await (const p of body) parts.push(p.slice());
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      stored.bytes = out;
    },
  });
  return { s, stored };
}

Deno.test("WriteSession stores sequential writes in one pass without reading the old version", async () => {
  const { s, stored } = session(new Uint8Array(0));
  s.write(0, new Uint8Array([1, 2, 3]));
  await s.room();
  s.write(3, new Uint8Array([4, 5]));
  await s.finish();
  assert.deepEqual([...stored.bytes!], [1, 2, 3, 4, 5]);
  assert.equal(stored.fills, 0);
});

Deno.test("WriteSession keeps the old bytes around a write and zero-fills holes past the end", async () => {
  const base = new Uint8Array([9, 9, 9, 9, 9, 9]);
  const { s, stored } = session(base);
  s.write(2, new Uint8Array([1, 1]));
  s.write(8, new Uint8Array([7]));
  assert.equal(s.size, 9);
  await s.finish();
  assert.deepEqual([...stored.bytes!], [9, 9, 1, 1, 9, 9, 0, 0, 7]);
});

Deno.test("WriteSession orders out-of-order writes and lets newer bytes win overlaps", async () => {
  const { s, stored } = session(new Uint8Array(0));
  s.write(4, new Uint8Array([5, 6, 7, 8]));
  s.write(2, new Uint8Array([3, 3, 3]));
  s.write(0, new Uint8Array([1, 2]));
  s.write(3, new Uint8Array([4]));
  await s.finish();
  assert.deepEqual([...stored.bytes!], [1, 2, 3, 4, 3, 6, 7, 8]);
});

Deno.test("WriteSession refuses writes behind the stream and truncates pending extents", async () => {
  const { s, stored } = session(new Uint8Array(10).fill(1));
  s.write(0, new Uint8Array([2, 2]));
  // Let the body take the first extent.
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(s.accepts(0), false);
  assert.equal(s.accepts(2), true);
  s.write(4, new Uint8Array([3, 3, 3, 3]));
  s.truncate(6);
  await s.finish();
  assert.deepEqual([...stored.bytes!], [2, 2, 1, 1, 3, 3]);
  assert.equal(s.accepts(8), false, "a finished session takes nothing");
});

Deno.test("WriteSession under pressure fills gaps instead of holding more than its limit", async () => {
  const { s, stored } = session(new Uint8Array(0), 64);
  // Far-away writes with a gap at 0 that is never written.
  s.write(100, new Uint8Array(50).fill(5));
  s.write(150, new Uint8Array(50).fill(6));
  await s.room();
  assert.equal(s.accepts(10), false, "the gap was streamed as zeros");
  await s.finish();
  assert.equal(stored.bytes!.length, 200);
  assert.deepEqual([...stored.bytes!.subarray(95, 105)], [0, 0, 0, 0, 0, 5, 5, 5, 5, 5]);
});

Deno.test("WriteSession matches a model for random write patterns", async () => {
  const prng = new Prng(0x5752_4954);
  for (let run = 0; run < 50; run++) {
    const base = prng.bytes(prng.nextInt(300));
    const model = Array.from(base);
    const { s, stored } = session(base, 1 + prng.nextInt(200));
    for (let i = 0; i < 20; i++) {
      const offset = prng.nextInt(400);
      const bytes = prng.bytes(1 + prng.nextInt(60));
      if (!s.accepts(offset)) break;
      s.write(offset, bytes);
      while (model.length < offset) model.push(0);
      for (let j = 0; j < bytes.length; j++) model[offset + j] = bytes[j]!;
      await s.room();
    }
    await s.finish();
    assert.deepEqual([...stored.bytes!], model, `run ${run}`);
  }
});

Deno.test("WriteSession reports a failed store to the writer and to finish()", async () => {
  const s = new WriteSession({
    baseSize: 0,
    fill: () => Promise.resolve(new Uint8Array(0)),
    sink: () => Promise.reject(new Error("disk full")),
  });
  await new Promise((r) => setTimeout(r, 0));
  assert.ok(s.failed instanceof Error);
  assert.equal(s.accepts(0), false);
  await assert.rejects(s.finish(), /disk full/);
});
