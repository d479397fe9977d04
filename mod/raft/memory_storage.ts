// An in-memory RaftLogStore for tests and the simulator. Writes take effect for readers at
// once (as the port requires) and are also journaled, so that `cloneDurable()` can show
// what a node would find after a crash: only what `persist()` made durable.

import { assert } from "../base/mod.ts";
import { limitSize } from "./raft_log.ts";
import { CompactedError, UnavailableError } from "./types.ts";
import type { ConfState, Entry, HardState, RaftLogStore, Snapshot } from "./types.ts";

/** Upper bound on writes staged between two persist() calls (one Ready stages a few). */
export const MEMORY_STORE_STAGED_WRITES_MAX = 65_536;

export interface MemoryRaftLogStoreOptions {
  /** The log starts right after this snapshot (default: index 0, term 0, no members). */
  snapshot?: Snapshot;
  /** Initial hard state (default: term 0, no vote, commit at the snapshot). */
  hardState?: HardState;
}

/** The log's contents, shared by the live and durable views. */
class LogState {
  hardState: HardState;
  snapshot: Snapshot;
  /** Index and term of the entry before `entries[0]` (the compaction point). */
  dummyIndex: number;
  dummyTerm: number;
  entries: Entry[];

  constructor(hardState: HardState, snapshot: Snapshot, dummyTerm: number, entries: Entry[]) {
    this.hardState = hardState;
    this.snapshot = snapshot;
    this.dummyIndex = snapshot.meta.index;
    this.dummyTerm = dummyTerm;
    this.entries = entries;
  }

  clone(): LogState {
    const copy = new LogState(
      { ...this.hardState },
      this.snapshot,
      this.dummyTerm,
      this.entries.slice(),
    );
    copy.dummyIndex = this.dummyIndex;
    return copy;
  }

  lastIndex(): number {
    return this.dummyIndex + this.entries.length;
  }

  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = entries[0].index;
    assert(
      first <= this.lastIndex() + 1,
      `append at ${first} leaves a gap after ${this.lastIndex()}`,
    );
    // Entries at or below the compaction point are already covered by the snapshot.
    const skip = Math.max(0, this.dummyIndex + 1 - first);
    if (skip >= entries.length) return;
    const from = first + skip;
    this.entries.length = from - this.dummyIndex - 1;
    for (let i = skip; i < entries.length; i++) {
      assert(entries[i].index === from + i - skip, "appended entries must be contiguous");
      this.entries.push(entries[i]);
    }
  }

  applySnapshot(snapshot: Snapshot): void {
    assert(
      snapshot.meta.index > this.snapshot.meta.index,
      `snapshot ${snapshot.meta.index} is not newer than ${this.snapshot.meta.index}`,
    );
    this.snapshot = snapshot;
    this.dummyIndex = snapshot.meta.index;
    this.dummyTerm = snapshot.meta.term;
    this.entries = [];
  }

  createSnapshot(snapshot: Snapshot): void {
    this.snapshot = snapshot;
  }

  compact(index: number): void {
    if (index <= this.dummyIndex) return; // already compacted
    assert(
      index <= this.snapshot.meta.index,
      `compact(${index}) is not covered by the snapshot at ${this.snapshot.meta.index}`,
    );
    assert(index <= this.lastIndex(), `compact(${index}) is past the last index`);
    const dropped = index - this.dummyIndex;
    this.dummyTerm = this.entries[dropped - 1].term;
    this.entries = this.entries.slice(dropped);
    this.dummyIndex = index;
  }
}

type StagedWrite = (state: LogState) => void;

export class MemoryRaftLogStore implements RaftLogStore {
  #live: LogState;
  #durable: LogState;
  #staged: StagedWrite[] = [];

  constructor(options: MemoryRaftLogStoreOptions = {}) {
    const snapshot: Snapshot = options.snapshot ??
      { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: new Uint8Array(0) };
    const hardState = options.hardState ?? { term: 0, vote: 0, commit: snapshot.meta.index };
    assert(hardState.commit >= snapshot.meta.index, "hard state commit is below the snapshot");
    this.#live = new LogState({ ...hardState }, snapshot, snapshot.meta.term, []);
    this.#durable = this.#live.clone();
  }

  static #fromState(state: LogState): MemoryRaftLogStore {
    const store = new MemoryRaftLogStore();
    store.#live = state.clone();
    store.#durable = state.clone();
    return store;
  }

  // RaftStorage (reads see staged writes).

  initialState(): { hardState: HardState; confState: ConfState } {
    const conf = this.#live.snapshot.meta.conf;
    return {
      hardState: { ...this.#live.hardState },
      confState: { voters: conf.voters.slice(), learners: conf.learners.slice() },
    };
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const state = this.#live;
    assert(lo <= hi, `entries(${lo}, ${hi}): lo > hi`);
    if (lo <= state.dummyIndex) {
      throw new CompactedError(`entries(${lo}): compacted, first index is ${state.dummyIndex + 1}`);
    }
    if (hi > state.lastIndex() + 1) {
      throw new UnavailableError(`entries(${lo}, ${hi}): last index is ${state.lastIndex()}`);
    }
    const slice = state.entries.slice(lo - state.dummyIndex - 1, hi - state.dummyIndex - 1);
    return limitSize(slice, maxBytes);
  }

  term(index: number): number {
    const state = this.#live;
    if (index < state.dummyIndex) {
      throw new CompactedError(`term(${index}): compacted, first index is ${state.dummyIndex + 1}`);
    }
    if (index > state.lastIndex()) {
      throw new UnavailableError(`term(${index}): last index is ${state.lastIndex()}`);
    }
    if (index === state.dummyIndex) return state.dummyTerm;
    return state.entries[index - state.dummyIndex - 1].term;
  }

  firstIndex(): number {
    return this.#live.dummyIndex + 1;
  }

  lastIndex(): number {
    return this.#live.lastIndex();
  }

  snapshot(): Snapshot {
    return this.#live.snapshot;
  }

  // RaftLogStore (staged writes).

  #stage(write: StagedWrite): void {
    assert(
      this.#staged.length < MEMORY_STORE_STAGED_WRITES_MAX,
      "too many writes staged without persist()",
    );
    write(this.#live);
    this.#staged.push(write);
  }

  append(entries: Entry[]): void {
    const copy = entries.slice();
    this.#stage((state) => state.append(copy));
  }

  setHardState(hardState: HardState): void {
    const copy = { ...hardState };
    this.#stage((state) => {
      state.hardState = { ...copy };
    });
  }

  applySnapshot(snapshot: Snapshot): void {
    this.#stage((state) => state.applySnapshot(snapshot));
  }

  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot {
    const state = this.#live;
    assert(
      index > state.snapshot.meta.index,
      `snapshot at ${index} is not newer than ${state.snapshot.meta.index}`,
    );
    assert(index <= state.hardState.commit, `snapshot at ${index} is past the commit index`);
    const snapshot: Snapshot = {
      meta: {
        index,
        term: this.term(index),
        conf: { voters: conf.voters.slice(), learners: conf.learners.slice() },
      },
      data,
    };
    this.#stage((s) => s.createSnapshot(snapshot));
    return snapshot;
  }

  compact(index: number): void {
    this.#stage((state) => state.compact(index));
  }

  persist(): Promise<void> {
    for (const write of this.#staged) write(this.#durable);
    this.#staged = [];
    return Promise.resolve();
  }

  // Beyond the port: crash simulation.

  /** Writes staged since the last persist() (lost on a crash). */
  get stagedWriteCount(): number {
    return this.#staged.length;
  }

  /** A new store holding only what persist() made durable: what a node finds after a crash. */
  cloneDurable(): MemoryRaftLogStore {
    return MemoryRaftLogStore.#fromState(this.#durable);
  }
}
