import assert from "node:assert/strict";
import { CompositionError } from "./errors.ts";
import { ReadBudget } from "./read_budget.ts";

Deno.test("ReadBudget.tryTake() takes only free bytes, and not ahead of a waiting read", async () => {
  const budget = new ReadBudget(10);
  assert.ok(budget.tryTake(6));
  assert.ok(!budget.tryTake(5), "6 + 5 > 10");
  const waiting = budget.take(5);
  assert.equal(budget.waiting, 1);
  assert.ok(!budget.tryTake(1), "a read-ahead does not pass a read that waits");
  budget.give(6);
  await waiting;
  assert.equal(budget.usedBytes, 5);
  assert.equal(budget.waiting, 0);
  budget.give(5);
  assert.equal(budget.usedBytes, 0);
});

Deno.test("ReadBudget.take() wakes waiters in order as bytes come back", async () => {
  const budget = new ReadBudget(10);
  assert.ok(budget.tryTake(10));
  const order: number[] = [];
  const a = budget.take(4).then(() => order.push(1));
  const b = budget.take(4).then(() => order.push(2));
  const c = budget.take(4).then(() => order.push(3));
  budget.give(8);
  await Promise.all([a, b]);
  assert.deepEqual(order, [1, 2]);
  assert.equal(budget.usedBytes, 10);
  budget.give(4);
  await c;
  assert.deepEqual(order, [1, 2, 3]);
});

Deno.test("ReadBudget.take() fails unavailable after its wait bound", async () => {
  const budget = new ReadBudget(10);
  assert.ok(budget.tryTake(10));
  const e = await budget.take(1, 20).catch((e) => e);
  assert.ok(e instanceof CompositionError && e.code === "unavailable", String(e));
  assert.equal(budget.waiting, 0);
  assert.ok(budget.exhausted() instanceof CompositionError);
});
