import assert from "node:assert/strict";
import { Prng } from "./prng.ts";

Deno.test("Prng is reproducible from its seed", () => {
  assert.deepEqual(new Prng(42).bytes(100), new Prng(42).bytes(100));
  assert.notDeepEqual(new Prng(42).bytes(100), new Prng(43).bytes(100));
});

Deno.test("Prng.nextInt() stays in range and covers it", () => {
  const prng = new Prng(7);
  const seen = new Set<number>();
  for (let i = 0; i < 1000; i++) {
    const v = prng.nextInt(10);
    if (v < 0 || v >= 10 || !Number.isInteger(v)) throw new Error(`out of range: ${v}`);
    seen.add(v);
  }
  assert.deepEqual(seen.size, 10);
});

Deno.test("Prng.fill() handles lengths that are not a multiple of four", () => {
  const b = new Prng(1).bytes(7);
  assert.deepEqual(b.length, 7);
  assert.deepEqual(b.some((v) => v !== 0), true);
});
