import assert from "node:assert/strict";
import { BoundedLru } from "./lru.ts";

Deno.test("BoundedLru.set() drops the least recently used past the entry bound", () => {
  const evicted: string[] = [];
  const lru = new BoundedLru<number>(2, 1000, (k) => evicted.push(k));
  lru.set("a", 1, 1);
  lru.set("b", 2, 1);
  assert.equal(lru.get("a"), 1); // a is now newer than b
  lru.set("c", 3, 1);
  assert.deepEqual([...lru.keys()], ["a", "c"]);
  assert.deepEqual(evicted, ["b"]);
});

Deno.test("BoundedLru.set() drops by bytes and keeps an oversized newest entry", () => {
  const lru = new BoundedLru<string>(10, 10);
  lru.set("a", "x", 4);
  lru.set("b", "y", 4);
  lru.set("c", "z", 4);
  assert.deepEqual([...lru.keys()], ["b", "c"]);
  assert.equal(lru.bytes, 8);
  lru.set("big", "w", 50);
  assert.deepEqual([...lru.keys()], ["big"]);
  assert.equal(lru.bytes, 50);
});

Deno.test("BoundedLru.delete() and clear() keep the byte count exact, peek() keeps order", () => {
  const lru = new BoundedLru<number, number>(3, 100);
  lru.set(1, 1, 10);
  lru.set(2, 2, 20);
  assert.equal(lru.peek(1), 1);
  assert.deepEqual([...lru.keys()], [1, 2]);
  assert.equal(lru.delete(2), true);
  assert.equal(lru.delete(2), false);
  assert.equal(lru.bytes, 10);
  lru.set(1, 5, 7);
  assert.equal(lru.bytes, 7);
  lru.clear();
  assert.equal(lru.size, 0);
  assert.equal(lru.bytes, 0);
});
