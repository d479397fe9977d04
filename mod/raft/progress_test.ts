import assert from "node:assert/strict";
import { AssertionError } from "../base/mod.ts";
import { INFLIGHT_MSGS_MAX, Inflights, Progress, ProgressTracker } from "./progress.ts";

Deno.test("Inflights.add() fills up to capacity and then refuses", () => {
  const inflights = new Inflights(3);
  inflights.add(5);
  inflights.add(7);
  assert.equal(inflights.full(), false);
  inflights.add(9);
  assert.equal(inflights.full(), true);
  assert.throws(() => inflights.add(11), AssertionError);
});

Deno.test("Inflights.freeLE() frees every message ending at or below the index", () => {
  const inflights = new Inflights(4);
  for (const i of [2, 4, 6, 8]) inflights.add(i);
  inflights.freeLE(5);
  assert.equal(inflights.count, 2);
  inflights.freeLE(1); // stale: nothing
  assert.equal(inflights.count, 2);
  inflights.freeLE(100);
  assert.equal(inflights.count, 0);
});

Deno.test("Inflights wraps around its ring", () => {
  const inflights = new Inflights(3);
  let last = 0;
  for (let round = 0; round < 10; round++) {
    while (!inflights.full()) inflights.add(++last);
    inflights.freeLE(last - 1); // keep only the newest
    assert.equal(inflights.count, 1);
  }
  inflights.freeFirstOne();
  assert.equal(inflights.count, 0);
});

Deno.test("Inflights.add() rejects indexes that do not increase", () => {
  const inflights = new Inflights(3);
  inflights.add(5);
  assert.throws(() => inflights.add(5), AssertionError);
});

Deno.test("Inflights capacity is bounded by INFLIGHT_MSGS_MAX", () => {
  assert.throws(() => new Inflights(0), AssertionError);
  assert.throws(() => new Inflights(INFLIGHT_MSGS_MAX + 1), AssertionError);
  new Inflights(INFLIGHT_MSGS_MAX);
});

Deno.test("Progress in probe state pauses after sending entries until a response", () => {
  const pr = new Progress(6, 4, false);
  assert.equal(pr.isPaused(), false);
  pr.sentEntries(0, 0); // an empty probe does not pause
  assert.equal(pr.isPaused(), false);
  pr.sentEntries(2, 7);
  assert.equal(pr.isPaused(), true);
  assert.equal(pr.next, 6, "probe does not move next optimistically");
  assert.equal(pr.maybeUpdate(7), true);
  assert.equal(pr.isPaused(), false);
  assert.equal(pr.next, 8);
});

Deno.test("Progress in replicate state pipelines until inflights are full", () => {
  const pr = new Progress(1, 2, false);
  pr.becomeReplicate();
  pr.sentEntries(3, 3);
  assert.equal(pr.next, 4);
  assert.equal(pr.isPaused(), false);
  pr.sentEntries(2, 5);
  assert.equal(pr.isPaused(), true);
  pr.maybeUpdate(3);
  pr.inflights.freeLE(3);
  assert.equal(pr.isPaused(), false);
});

Deno.test("Progress.maybeUpdate() ignores stale acknowledgments", () => {
  const pr = new Progress(10, 4, false);
  assert.equal(pr.maybeUpdate(9), true);
  assert.equal(pr.maybeUpdate(5), false);
  assert.equal(pr.match, 9);
  assert.equal(pr.next, 10);
});

Deno.test("Progress.maybeDecrTo() in replicate state goes back to match + 1", () => {
  const pr = new Progress(1, 4, false);
  pr.maybeUpdate(5);
  pr.becomeReplicate();
  pr.sentEntries(5, 10);
  assert.equal(pr.maybeDecrTo(4, 0), false, "rejection below match is stale");
  assert.equal(pr.maybeDecrTo(8, 3), true);
  assert.equal(pr.next, 6);
});

Deno.test("Progress.maybeDecrTo() in probe state uses the hint and ignores stale rejections", () => {
  const pr = new Progress(20, 4, false);
  pr.sentEntries(1, 20);
  assert.equal(pr.maybeDecrTo(15, 3), false, "only next - 1 can be rejected");
  assert.equal(pr.maybeDecrTo(19, 12), true);
  assert.equal(pr.next, 13);
  assert.equal(pr.isPaused(), false);
  // The hint never moves next below match + 1.
  pr.maybeUpdate(10);
  pr.next = 15;
  assert.equal(pr.maybeDecrTo(14, 2), true);
  assert.equal(pr.next, 11);
});

Deno.test("Progress in snapshot state is paused and probes after the snapshot", () => {
  const pr = new Progress(5, 4, false);
  pr.becomeSnapshot(20);
  assert.equal(pr.isPaused(), true);
  pr.becomeProbe();
  assert.equal(pr.next, 21);
  assert.equal(pr.pendingSnapshot, 0);
});

Deno.test("Progress.canBumpCommit() only when the follower may lack the commit index", () => {
  const pr = new Progress(11, 4, false);
  pr.sentCommitIndex(8);
  assert.equal(pr.canBumpCommit(8), false);
  assert.equal(pr.canBumpCommit(9), true);
  pr.sentCommitIndex(10); // covers next - 1: nothing more can be committed there
  assert.equal(pr.canBumpCommit(12), false);
});

Deno.test("ProgressTracker promotes, demotes and removes members", () => {
  const tracker = new ProgressTracker(4);
  tracker.reset({ voters: [1, 2, 3], learners: [4] }, 11);
  assert.deepEqual(tracker.confState(), { voters: [1, 2, 3], learners: [4] });
  tracker.progress.get(4)!.maybeUpdate(7);
  tracker.addVoter(4, 11);
  assert.equal(tracker.progress.get(4)!.match, 7, "promotion keeps progress");
  assert.equal(tracker.progress.get(4)!.isLearner, false);
  tracker.addLearner(3, 11);
  tracker.remove(2);
  assert.deepEqual(tracker.confState(), { voters: [1, 4], learners: [3] });
  assert.equal(tracker.isMember(2), false);
});

Deno.test("ProgressTracker.committed() and quorumActive() count voters only", () => {
  const tracker = new ProgressTracker(4);
  tracker.reset({ voters: [1, 2, 3], learners: [4, 5] }, 1);
  tracker.progress.get(1)!.maybeUpdate(9);
  tracker.progress.get(4)!.maybeUpdate(9);
  tracker.progress.get(5)!.maybeUpdate(9);
  assert.equal(tracker.committed(), 0);
  tracker.progress.get(3)!.maybeUpdate(6);
  assert.equal(tracker.committed(), 6);

  tracker.resetRecentActive(1);
  for (const id of [4, 5]) tracker.progress.get(id)!.recentActive = true;
  assert.equal(tracker.quorumActive(1), false);
  tracker.progress.get(2)!.recentActive = true;
  assert.equal(tracker.quorumActive(1), true);
});
