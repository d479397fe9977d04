import assert from "node:assert/strict";
import { FreshCall } from "./fresh_call.ts";

Deno.test("FreshCall.call() never hands a caller a run that started before it asked", async () => {
  const started: number[] = [];
  const releases: (() => void)[] = [];
  let runs = 0;
  const call = new FreshCall(() => {
    const n = ++runs;
    started.push(n);
    return new Promise<number>((resolve) => releases.push(() => resolve(n)));
  });
  const a = call.call();
  const b = call.call(); // arrives during run 1: must get run 2
  const c = call.call(); // shares run 2 with b
  assert.deepEqual(started, [1]);
  releases.shift()!();
  assert.equal(await a, 1);
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(started, [1, 2]);
  releases.shift()!();
  assert.equal(await b, 2);
  assert.equal(await c, 2);
  const d = call.call(); // idle again: a run of its own
  releases.shift()!();
  assert.equal(await d, 3);
});

Deno.test("FreshCall.call() runs again after a failed run", async () => {
  let runs = 0;
  const call = new FreshCall(() =>
    ++runs === 1 ? Promise.reject(new Error("no leader")) : Promise.resolve(runs)
  );
  await assert.rejects(call.call(), /no leader/);
  assert.equal(await call.call(), 2);
});
