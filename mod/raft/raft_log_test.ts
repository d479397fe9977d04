import assert from "node:assert/strict";
import { AssertionError } from "../base/mod.ts";
import { MemoryRaftLogStore } from "./memory_storage.ts";
import { limitSize, RaftLog } from "./raft_log.ts";
import { CompactedError, UnavailableError } from "./types.ts";
import type { Entry, Snapshot } from "./types.ts";

const conf = { voters: [1], learners: [] };
const BIG = 1 << 30;

function entry(term: number, index: number, data = ""): Entry {
  return { term, index, type: "normal", data: new TextEncoder().encode(data) };
}

function snapshot(index: number, term: number): Snapshot {
  return { meta: { index, term, conf }, data: new Uint8Array(0) };
}

/** A log whose storage holds `stored` (durable) after a snapshot at `snapIndex`. */
function makeLog(stored: Entry[], snapIndex = 0, snapTerm = 0): RaftLog {
  const store = new MemoryRaftLogStore({ snapshot: snapshot(snapIndex, snapTerm) });
  store.append(stored);
  return new RaftLog(store, BIG);
}

Deno.test("limitSize() keeps a prefix within the budget, never less than one entry", () => {
  const es = [entry(1, 1, "aa"), entry(1, 2, "bb"), entry(1, 3, "cc")];
  assert.equal(limitSize(es, 0).length, 1);
  assert.equal(limitSize(es, 3).length, 1);
  assert.equal(limitSize(es, 4).length, 2);
  assert.equal(limitSize(es, 100).length, 3);
  assert.deepEqual(limitSize([], 10), []);
});

Deno.test("RaftLog starts committed and applied at the snapshot", () => {
  const log = makeLog([entry(2, 6), entry(2, 7)], 5, 2);
  assert.equal(log.firstIndex(), 6);
  assert.equal(log.lastIndex(), 7);
  assert.equal(log.committed, 5);
  assert.equal(log.applied, 5);
  assert.equal(log.persistedLastIndex(), 7);
});

Deno.test("RaftLog.term() handles the snapshot point, compaction and the end", () => {
  const log = makeLog([entry(2, 6), entry(3, 7)], 5, 2);
  log.append([entry(4, 8)]);
  assert.equal(log.term(5), 2);
  assert.equal(log.term(7), 3);
  assert.equal(log.term(8), 4, "unstable entries count");
  assert.throws(() => log.term(4), CompactedError);
  assert.throws(() => log.term(9), UnavailableError);
  assert.equal(log.termOrZero(4), 0);
  assert.equal(log.termOrZero(9), 0);
  assert.equal(log.matchTerm(4, 0), false, "a compacted index never matches");
});

Deno.test("RaftLog.findConflict() finds the first missing or conflicting entry", () => {
  const log = makeLog([entry(1, 1), entry(2, 2), entry(3, 3)]);
  assert.equal(log.findConflict([]), 0);
  assert.equal(log.findConflict([entry(1, 1), entry(2, 2)]), 0);
  assert.equal(log.findConflict([entry(2, 2), entry(3, 3), entry(4, 4)]), 4);
  assert.equal(log.findConflict([entry(1, 1), entry(4, 2), entry(4, 3)]), 2);
});

Deno.test("RaftLog.findConflictByTerm() skips entries with a larger term", () => {
  const log = makeLog([entry(1, 1), entry(1, 2), entry(3, 3), entry(3, 4), entry(5, 5)]);
  assert.deepEqual(log.findConflictByTerm(5, 4), { index: 4, term: 3 });
  assert.deepEqual(log.findConflictByTerm(5, 2), { index: 2, term: 1 });
  assert.deepEqual(log.findConflictByTerm(5, 0), { index: 0, term: 0 });
  assert.deepEqual(log.findConflictByTerm(9, 5), { index: 5, term: 5 }, "clamped to the end");
});

Deno.test("RaftLog.findConflictByTerm() answers term 0 for compacted indexes", () => {
  const log = makeLog([entry(5, 11), entry(6, 12)], 10, 5);
  assert.deepEqual(log.findConflictByTerm(12, 6), { index: 12, term: 6 });
  assert.deepEqual(log.findConflictByTerm(12, 5), { index: 11, term: 5 });
  // Index 10 is the snapshot point (term 5 > 4); below it terms are unknown: may match.
  assert.deepEqual(log.findConflictByTerm(12, 4), { index: 9, term: 0 });
});

Deno.test("RaftLog.maybeAppend() appends after a match, truncating a conflicting tail", () => {
  const log = makeLog([entry(1, 1), entry(2, 2), entry(2, 3)]);
  assert.equal(log.maybeAppend(2, 1, 3, [entry(3, 3)]), null, "mismatch at the previous entry");
  assert.equal(log.maybeAppend(2, 2, 1, [entry(3, 3), entry(3, 4)]), 4);
  assert.deepEqual(log.unstableEntries().map((e) => [e.term, e.index]), [[3, 3], [3, 4]]);
  assert.equal(log.committed, 1);
  // Already present entries are not rewritten, and commit stops at the last new index.
  assert.equal(log.maybeAppend(1, 1, 10, [entry(2, 2)]), 2);
  assert.equal(log.committed, 2);
  assert.equal(log.lastIndex(), 4);
});

Deno.test("RaftLog.maybeAppend() asserts on a conflict with a committed entry", () => {
  const log = makeLog([entry(1, 1), entry(2, 2)]);
  log.commitTo(2);
  assert.throws(() => log.maybeAppend(1, 1, 2, [entry(3, 2)]), AssertionError);
});

Deno.test("RaftLog commit never decreases and never passes the last index", () => {
  const log = makeLog([entry(1, 1), entry(1, 2)]);
  log.commitTo(2);
  log.commitTo(1);
  assert.equal(log.committed, 2);
  assert.throws(() => log.commitTo(3), AssertionError);
  assert.throws(() => log.appliedTo(3), AssertionError);
  log.appliedTo(2);
  assert.throws(() => log.appliedTo(1), AssertionError);
});

Deno.test("RaftLog.maybeCommit() commits only an entry of the given term", () => {
  const log = makeLog([entry(1, 1), entry(2, 2)]);
  assert.equal(log.maybeCommit(1, 2), false, "entry 1 is from an earlier term");
  assert.equal(log.maybeCommit(2, 2), true);
  assert.equal(log.committed, 2);
});

Deno.test("RaftLog.stableTo() drops persisted unstable entries unless they were replaced", () => {
  const log = makeLog([entry(1, 1)]);
  log.append([entry(1, 2), entry(1, 3)]);
  assert.equal(log.persistedLastIndex(), 1);
  log.append([entry(2, 3)]);
  log.stableTo(3, 1); // the entry persisted was replaced meanwhile
  assert.equal(log.unstableEntries().length, 2);
  log.stableTo(2, 1);
  assert.deepEqual(log.unstableEntries().map((e) => e.index), [3]);
  assert.equal(log.persistedLastIndex(), 2);
});

Deno.test("RaftLog.slice() spans storage and the unstable tail within maxBytes", () => {
  const log = makeLog([entry(1, 1, "a"), entry(1, 2, "b")]);
  log.append([entry(1, 3, "c"), entry(1, 4, "d")]);
  assert.deepEqual(log.slice(1, 5, BIG).map((e) => e.index), [1, 2, 3, 4]);
  assert.deepEqual(log.slice(2, 4, BIG).map((e) => e.index), [2, 3]);
  assert.deepEqual(log.slice(1, 5, 3).map((e) => e.index), [1, 2, 3]);
  assert.deepEqual(log.slice(1, 5, 1).map((e) => e.index), [1]);
  assert.throws(() => log.slice(2, 6, BIG), AssertionError);
});

Deno.test("RaftLog.restore() makes the snapshot pending and hides committed entries", () => {
  const log = makeLog([entry(1, 1), entry(1, 2)]);
  log.commitTo(2);
  log.restore(snapshot(10, 3));
  assert.equal(log.firstIndex(), 11);
  assert.equal(log.lastIndex(), 10);
  assert.equal(log.committed, 10);
  assert.equal(log.term(10), 3);
  assert.equal(log.persistedLastIndex(), 0, "nothing of the new log is durable yet");
  assert.deepEqual(log.nextCommittedEntries(), []);
  assert.equal(log.hasNextCommittedEntries(), false);
  log.append([entry(3, 11)]);
  assert.equal(log.lastIndex(), 11);
  log.stableSnapTo(10);
  assert.equal(log.hasPendingSnapshot(), false);
  assert.throws(() => log.restore(snapshot(9, 3)), AssertionError);
});

Deno.test("RaftLog.nextCommittedEntries() returns (applied, committed], size-bounded", () => {
  const store = new MemoryRaftLogStore();
  store.append([entry(1, 1, "aaaa"), entry(1, 2, "bbbb"), entry(1, 3, "cccc")]);
  const log = new RaftLog(store, 8);
  assert.deepEqual(log.nextCommittedEntries(), []);
  log.commitTo(3);
  assert.deepEqual(log.nextCommittedEntries().map((e) => e.index), [1, 2]);
  log.appliedTo(2);
  assert.deepEqual(log.nextCommittedEntries().map((e) => e.index), [3]);
  log.appliedTo(3);
  assert.equal(log.hasNextCommittedEntries(), false);
});

Deno.test("RaftLog.isUpToDate() compares last term, then last index", () => {
  const log = makeLog([entry(1, 1), entry(3, 2)]);
  assert.equal(log.isUpToDate(1, 4), true);
  assert.equal(log.isUpToDate(2, 3), true);
  assert.equal(log.isUpToDate(1, 3), false);
  assert.equal(log.isUpToDate(10, 2), false);
});
