// One behavioural suite for every RaftLogStore (hono's shared router suite): each
// implementation registers it with a factory, so the lmdb store and the in-memory store the
// simulator uses are held to the same contract.

import assert from "node:assert/strict";
import { AssertionError } from "../base/mod.ts";
import {
  CompactedError,
  type Entry,
  type HardState,
  type RaftLogStore,
  type Snapshot,
  UnavailableError,
} from "../raft/mod.ts";

export interface RaftLogStoreHarness {
  store: RaftLogStore;
  /**
   * Simulates a crash and restart: returns a store holding only what persist() made
   * durable (the old store must not be used afterwards).
   */
  restart(): Promise<RaftLogStore>;
  /** Releases everything the harness holds. */
  close(): Promise<void>;
}

export interface RaftLogStoreFactoryOptions {
  snapshot?: Snapshot;
  hardState?: HardState;
}

export type RaftLogStoreFactory = (
  options?: RaftLogStoreFactoryOptions,
) => Promise<RaftLogStoreHarness>;

export interface RaftLogStoreConformanceOptions {
  /** Registers the tests as ignored (an implementation that does not exist yet). */
  ignore?: boolean;
}

const bytes = (...values: number[]): Uint8Array => Uint8Array.from(values);

/** Entries [from, to] with the given term and data of `index % 7` bytes. */
export function makeEntries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let index = from; index <= to; index++) {
    out.push({
      term,
      index,
      type: index % 5 === 0 ? "conf_change" : "normal",
      data: new Uint8Array(index % 7).fill(index & 0xff),
    });
  }
  return out;
}

const conf = (voters: number[], learners: number[] = []) => ({ voters, learners });

/** Every read of the RaftStorage port, for comparing two stores or two moments. */
export function readAll(store: RaftLogStore): unknown {
  const first = store.firstIndex();
  const last = store.lastIndex();
  const entries = last >= first ? store.entries(first, last + 1, Number.MAX_SAFE_INTEGER) : [];
  const snapshot = store.snapshot();
  return {
    initial: store.initialState(),
    first,
    last,
    dummyTerm: store.term(first - 1),
    entries: entries.map((e) => ({ ...e, data: [...e.data] })),
    snapshot: { meta: snapshot.meta, data: [...snapshot.data] },
  };
}

/** Registers the conformance tests for one implementation. */
export function defineRaftLogStoreConformance(
  name: string,
  factory: RaftLogStoreFactory,
  options: RaftLogStoreConformanceOptions = {},
): void {
  const test = (
    title: string,
    fn: (h: RaftLogStoreHarness) => Promise<void>,
    factoryOptions?: RaftLogStoreFactoryOptions,
  ): void => {
    Deno.test({
      name: `${name}: ${title}`,
      ignore: options.ignore,
      async fn() {
        const harness = await factory(factoryOptions);
        try {
          await fn(harness);
        } finally {
          await harness.close();
        }
      },
    });
  };

  test("a new store is empty at index 0, term 0", async ({ store }) => {
    assert.deepEqual(store.initialState(), {
      hardState: { term: 0, vote: 0, commit: 0 },
      confState: conf([]),
    });
    assert.equal(store.firstIndex(), 1);
    assert.equal(store.lastIndex(), 0);
    assert.equal(store.term(0), 0);
    assert.deepEqual(store.entries(1, 1, 100), []);
    assert.deepEqual(store.snapshot().meta, { index: 0, term: 0, conf: conf([]) });
    assert.equal(store.snapshot().data.length, 0);
    await store.persist();
  });

  test("append() is readable at once, before and after persist()", async ({ store }) => {
    const entries = makeEntries(1, 10, 1);
    store.append(entries);
    const check = (): void => {
      assert.equal(store.lastIndex(), 10);
      assert.equal(store.term(7), 1);
      assert.deepEqual(store.entries(1, 11, Number.MAX_SAFE_INTEGER), entries);
      assert.deepEqual(store.entries(4, 6, Number.MAX_SAFE_INTEGER), entries.slice(3, 5));
    };
    check();
    await store.persist();
    check();
  });

  test("append() replaces a conflicting suffix, staged or durable", async (h) => {
    h.store.append(makeEntries(1, 10, 1));
    await h.store.persist();
    h.store.append(makeEntries(6, 8, 2));
    assert.equal(h.store.lastIndex(), 8);
    assert.equal(h.store.term(5), 1);
    assert.equal(h.store.term(6), 2);
    assert.throws(() => h.store.term(9), UnavailableError);
    h.store.append(makeEntries(8, 12, 3)); // replaces a staged entry too
    const expected = [...makeEntries(1, 5, 1), ...makeEntries(6, 7, 2), ...makeEntries(8, 12, 3)];
    assert.deepEqual(h.store.entries(1, 13, Number.MAX_SAFE_INTEGER), expected);
    await h.store.persist();
    const after = await h.restart();
    assert.equal(after.lastIndex(), 12);
    assert.deepEqual(after.entries(1, 13, Number.MAX_SAFE_INTEGER), expected);
    // Shrinking the log leaves no stale entry behind after a restart.
    after.append(makeEntries(3, 4, 4));
    await after.persist();
    const shrunk = await h.restart();
    assert.equal(shrunk.lastIndex(), 4);
    assert.throws(() => shrunk.entries(1, 6, 100), UnavailableError);
    assert.deepEqual(shrunk.entries(1, 5, 1000), [
      ...makeEntries(1, 2, 1),
      ...makeEntries(3, 4, 4),
    ]);
  });

  test("append() asserts on a gap and on non-contiguous entries", async ({ store }) => {
    store.append(makeEntries(1, 3, 1));
    assert.throws(() => store.append(makeEntries(5, 6, 1)), AssertionError);
    const broken = [...makeEntries(4, 4, 1), ...makeEntries(6, 6, 1)];
    assert.throws(() => store.append(broken), AssertionError);
    await Promise.resolve();
  });

  test("entries() honours maxBytes but returns at least one entry", async ({ store }) => {
    const entries: Entry[] = [1, 2, 3, 4].map((index) => ({
      term: 1,
      index,
      type: "normal",
      data: new Uint8Array(10),
    }));
    store.append(entries);
    await store.persist();
    assert.equal(store.entries(1, 5, 0).length, 1);
    assert.equal(store.entries(1, 5, 10).length, 1);
    assert.equal(store.entries(1, 5, 29).length, 2);
    assert.equal(store.entries(1, 5, 30).length, 3);
    assert.equal(store.entries(1, 5, 1000).length, 4);
  });

  test("entries() and term() throw CompactedError and UnavailableError at the edges", async (h) => {
    const { store } = h;
    store.append(makeEntries(1, 10, 1));
    store.setHardState({ term: 1, vote: 0, commit: 8 });
    store.createSnapshot(6, conf([1]), bytes(6));
    store.compact(5);
    await store.persist();
    assert.equal(store.firstIndex(), 6);
    assert.equal(store.term(5), 1);
    assert.throws(() => store.term(4), CompactedError);
    assert.throws(() => store.entries(5, 7, 100), CompactedError);
    assert.throws(() => store.entries(6, 12, 100), UnavailableError);
    assert.throws(() => store.term(11), UnavailableError);
    assert.deepEqual(store.entries(6, 11, 1000), makeEntries(6, 10, 1));
  });

  test("setHardState() is readable at once and durable after persist()", async (h) => {
    h.store.append(makeEntries(1, 3, 2));
    h.store.setHardState({ term: 2, vote: 3, commit: 2 });
    assert.deepEqual(h.store.initialState().hardState, { term: 2, vote: 3, commit: 2 });
    await h.store.persist();
    h.store.setHardState({ term: 3, vote: 0, commit: 3 });
    const after = await h.restart();
    assert.deepEqual(after.initialState().hardState, { term: 2, vote: 3, commit: 2 });
  });

  test("createSnapshot() records the state machine without dropping entries", async (h) => {
    h.store.append(makeEntries(1, 10, 2));
    h.store.setHardState({ term: 2, vote: 1, commit: 9 });
    const snapshot = h.store.createSnapshot(7, conf([1, 2], [3]), bytes(1, 2, 3));
    assert.deepEqual(snapshot.meta, { index: 7, term: 2, conf: conf([1, 2], [3]) });
    assert.deepEqual(h.store.snapshot().data, bytes(1, 2, 3));
    assert.equal(h.store.firstIndex(), 1);
    assert.throws(() => h.store.createSnapshot(7, conf([1]), bytes()), AssertionError);
    assert.throws(() => h.store.createSnapshot(10, conf([1]), bytes()), AssertionError);
    await h.store.persist();
    const after = await h.restart();
    assert.deepEqual(after.snapshot().meta, snapshot.meta);
    assert.deepEqual(after.snapshot().data, bytes(1, 2, 3));
    assert.deepEqual(after.initialState().confState, conf([1, 2], [3]));
    assert.equal(after.firstIndex(), 1);
    assert.equal(after.lastIndex(), 10);
  });

  test("compact() drops entries covered by the snapshot, durably", async (h) => {
    h.store.append(makeEntries(1, 10, 1));
    h.store.append(makeEntries(6, 10, 2));
    h.store.setHardState({ term: 2, vote: 1, commit: 10 });
    h.store.createSnapshot(8, conf([1]), bytes(8));
    h.store.compact(3);
    h.store.compact(2); // below the compaction point: nothing to do
    assert.equal(h.store.firstIndex(), 4);
    assert.throws(() => h.store.compact(9), AssertionError); // not covered by the snapshot
    h.store.compact(7);
    assert.equal(h.store.firstIndex(), 8);
    assert.equal(h.store.term(7), 2);
    await h.store.persist();
    const after = await h.restart();
    assert.equal(after.firstIndex(), 8);
    assert.equal(after.term(7), 2);
    assert.throws(() => after.entries(7, 9, 100), CompactedError);
    assert.deepEqual(after.entries(8, 11, 1000), makeEntries(8, 10, 2));
  });

  test("applySnapshot() replaces the log and the membership", async (h) => {
    h.store.append(makeEntries(1, 10, 1));
    await h.store.persist();
    const snapshot: Snapshot = {
      meta: { index: 20, term: 4, conf: conf([1, 2, 3]) },
      data: bytes(9, 9),
    };
    h.store.applySnapshot(snapshot);
    h.store.setHardState({ term: 4, vote: 0, commit: 20 });
    const check = (store: RaftLogStore, last: number): void => {
      assert.equal(store.firstIndex(), 21);
      assert.equal(store.lastIndex(), last);
      assert.equal(store.term(20), 4);
      assert.throws(() => store.term(19), CompactedError);
      assert.deepEqual(store.snapshot(), snapshot);
      assert.deepEqual(store.initialState().confState, conf([1, 2, 3]));
    };
    check(h.store, 20);
    h.store.append(makeEntries(21, 22, 4));
    await h.store.persist();
    const after = await h.restart();
    check(after, 22);
    assert.deepEqual(after.entries(21, 23, 1000), makeEntries(21, 22, 4));
    assert.throws(
      () => after.applySnapshot({ meta: { index: 15, term: 4, conf: conf([1]) }, data: bytes() }),
      AssertionError,
    );
  });

  test("append() skips entries at or below the compaction point", async ({ store }) => {
    store.applySnapshot({ meta: { index: 5, term: 2, conf: conf([1]) }, data: bytes() });
    store.append(makeEntries(3, 7, 2));
    assert.equal(store.firstIndex(), 6);
    assert.equal(store.lastIndex(), 7);
    assert.deepEqual(store.entries(6, 8, 1000), makeEntries(6, 7, 2));
    store.append(makeEntries(2, 4, 2)); // wholly compacted: nothing
    assert.equal(store.lastIndex(), 7);
    await store.persist();
  });

  test("a store created from a snapshot starts after it", async ({ store }) => {
    assert.equal(store.firstIndex(), 11);
    assert.equal(store.lastIndex(), 10);
    assert.equal(store.term(10), 3);
    assert.deepEqual(store.initialState(), {
      hardState: { term: 3, vote: 0, commit: 10 },
      confState: conf([1, 2]),
    });
    store.append(makeEntries(11, 12, 3));
    await store.persist();
  }, {
    snapshot: { meta: { index: 10, term: 3, conf: conf([1, 2]) }, data: bytes(1) },
    hardState: { term: 3, vote: 0, commit: 10 },
  });

  test("writes staged after the last persist() are lost on a crash", async (h) => {
    h.store.append(makeEntries(1, 5, 1));
    h.store.setHardState({ term: 1, vote: 1, commit: 3 });
    await h.store.persist();
    const durable = readAll(h.store);
    h.store.append(makeEntries(4, 9, 2));
    h.store.setHardState({ term: 2, vote: 1, commit: 5 });
    h.store.createSnapshot(5, conf([1]), bytes(5));
    const after = await h.restart();
    assert.deepEqual(readAll(after), durable);
  });

  test("persist() calls without waiting in between are all durable in order", async (h) => {
    const persists: Promise<void>[] = [];
    for (let i = 1; i <= 20; i++) {
      h.store.append(makeEntries(i, i, 1 + (i >> 2)));
      h.store.setHardState({ term: 1 + (i >> 2), vote: 1, commit: Math.min(i - 1, 10) });
      persists.push(h.store.persist());
    }
    h.store.append(makeEntries(15, 16, 9)); // truncate while earlier persists are in flight
    persists.push(h.store.persist());
    await Promise.all(persists);
    await h.store.persist(); // nothing staged: resolves
    const expected = readAll(h.store);
    const after = await h.restart();
    assert.deepEqual(readAll(after), expected);
    assert.equal(after.lastIndex(), 16);
  });
}
