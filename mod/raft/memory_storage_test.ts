import assert from "node:assert/strict";
import { AssertionError } from "../base/mod.ts";
import { MemoryRaftLogStore } from "./memory_storage.ts";
import { CompactedError, UnavailableError } from "./types.ts";
import type { Entry } from "./types.ts";

const conf = { voters: [1, 2, 3], learners: [] };

function entry(term: number, index: number, data = ""): Entry {
  return { term, index, type: "normal", data: new TextEncoder().encode(data) };
}

/** A store holding entries 1..5 at terms 1,1,2,2,3, committed to 5. */
function filledStore(): MemoryRaftLogStore {
  const store = new MemoryRaftLogStore({
    snapshot: { meta: { index: 0, term: 0, conf }, data: new Uint8Array(0) },
  });
  store.append([entry(1, 1), entry(1, 2), entry(2, 3), entry(2, 4), entry(3, 5)]);
  store.setHardState({ term: 3, vote: 1, commit: 5 });
  return store;
}

Deno.test("MemoryRaftLogStore starts empty after its snapshot", () => {
  const store = new MemoryRaftLogStore({
    snapshot: { meta: { index: 10, term: 4, conf }, data: new Uint8Array([1]) },
  });
  assert.equal(store.firstIndex(), 11);
  assert.equal(store.lastIndex(), 10);
  assert.equal(store.term(10), 4);
  assert.deepEqual(store.initialState(), {
    hardState: { term: 0, vote: 0, commit: 10 },
    confState: conf,
  });
  assert.deepEqual(store.entries(11, 11, 100), []);
});

Deno.test("MemoryRaftLogStore.append() truncates a conflicting suffix", () => {
  const store = filledStore();
  store.append([entry(4, 3, "x"), entry(4, 4, "y")]);
  assert.equal(store.lastIndex(), 4);
  assert.deepEqual(store.entries(1, 5, 1000).map((e) => e.term), [1, 1, 4, 4]);
});

Deno.test("MemoryRaftLogStore.append() refuses a gap and skips compacted entries", () => {
  const store = filledStore();
  assert.throws(() => store.append([entry(3, 7)]), AssertionError);
  store.createSnapshot(3, conf, new Uint8Array(0));
  store.compact(3);
  store.append([entry(1, 2), entry(2, 3), entry(2, 4), entry(5, 5)]);
  assert.equal(store.firstIndex(), 4);
  assert.deepEqual(store.entries(4, 6, 1000).map((e) => e.term), [2, 5]);
});

Deno.test("MemoryRaftLogStore.entries() honours maxBytes but returns at least one entry", () => {
  const store = new MemoryRaftLogStore();
  store.append([entry(1, 1, "aaaa"), entry(1, 2, "bbbb"), entry(1, 3, "cccc")]);
  assert.equal(store.entries(1, 4, 0).length, 1);
  assert.equal(store.entries(1, 4, 8).length, 2);
  assert.equal(store.entries(1, 4, 12).length, 3);
});

Deno.test("MemoryRaftLogStore reads below the compaction point throw CompactedError", () => {
  const store = filledStore();
  store.createSnapshot(3, conf, new Uint8Array([7]));
  store.compact(3);
  assert.equal(store.firstIndex(), 4);
  assert.equal(store.term(3), 2, "the compaction point keeps its term");
  assert.throws(() => store.term(2), CompactedError);
  assert.throws(() => store.entries(3, 5, 100), CompactedError);
  assert.deepEqual(store.entries(4, 6, 100).map((e) => e.index), [4, 5]);
  assert.equal(store.snapshot().meta.index, 3);
  assert.equal(store.snapshot().meta.term, 2);
});

Deno.test("MemoryRaftLogStore reads past the last index throw UnavailableError", () => {
  const store = filledStore();
  assert.throws(() => store.term(6), UnavailableError);
  assert.throws(() => store.entries(4, 7, 100), UnavailableError);
});

Deno.test("MemoryRaftLogStore.compact() must be covered by a snapshot", () => {
  const store = filledStore();
  assert.throws(() => store.compact(2), AssertionError);
  store.createSnapshot(4, conf, new Uint8Array(0));
  store.compact(2);
  assert.equal(store.firstIndex(), 3);
  store.compact(1); // already compacted: nothing to do
  assert.equal(store.firstIndex(), 3);
});

Deno.test("MemoryRaftLogStore.createSnapshot() refuses stale or uncommitted indexes", () => {
  const store = filledStore();
  store.setHardState({ term: 3, vote: 1, commit: 4 });
  assert.throws(() => store.createSnapshot(5, conf, new Uint8Array(0)), AssertionError);
  store.createSnapshot(4, conf, new Uint8Array(0));
  assert.throws(() => store.createSnapshot(4, conf, new Uint8Array(0)), AssertionError);
});

Deno.test("MemoryRaftLogStore.applySnapshot() replaces the log", () => {
  const store = filledStore();
  store.applySnapshot({
    meta: { index: 20, term: 6, conf: { voters: [1], learners: [2] } },
    data: new Uint8Array(0),
  });
  assert.equal(store.firstIndex(), 21);
  assert.equal(store.lastIndex(), 20);
  assert.equal(store.term(20), 6);
  assert.deepEqual(store.initialState().confState, { voters: [1], learners: [2] });
  assert.throws(
    () => store.applySnapshot({ meta: { index: 15, term: 6, conf }, data: new Uint8Array(0) }),
    AssertionError,
  );
});

Deno.test("MemoryRaftLogStore.cloneDurable() keeps only what persist() made durable", async () => {
  const store = new MemoryRaftLogStore();
  store.append([entry(1, 1), entry(1, 2)]);
  store.setHardState({ term: 1, vote: 1, commit: 1 });
  await store.persist();
  store.append([entry(2, 2), entry(2, 3)]);
  store.setHardState({ term: 2, vote: 2, commit: 1 });
  assert.equal(store.stagedWriteCount, 2);

  const crashed = store.cloneDurable();
  assert.equal(crashed.lastIndex(), 2);
  assert.equal(crashed.term(2), 1);
  assert.deepEqual(crashed.initialState().hardState, { term: 1, vote: 1, commit: 1 });

  await store.persist();
  const recovered = store.cloneDurable();
  assert.equal(recovered.lastIndex(), 3);
  assert.equal(recovered.term(2), 2);
  assert.equal(store.stagedWriteCount, 0);
});
