import assert from "node:assert/strict";
import { AssertionError } from "../base/mod.ts";
import { decodeConfChange, encodeConfChange } from "./conf_change.ts";
import { MemoryRaftLogStore } from "./memory_storage.ts";
import { INFLIGHT_MSGS_MAX } from "./progress.ts";
import { createRaftNode, raftOf } from "./raw_node.ts";
import { emptyMessage, ProposalDroppedError } from "./types.ts";
import type { Message, NodeId, RaftConfig, RaftNode, Ready } from "./types.ts";

const text = (s: string) => new TextEncoder().encode(s);

interface TestNode {
  id: NodeId;
  node: RaftNode;
  store: MemoryRaftLogStore;
  config: RaftConfig;
}

function makeNode(
  id: NodeId,
  voters: NodeId[],
  overrides: Partial<RaftConfig> = {},
  store?: MemoryRaftLogStore,
): TestNode {
  store ??= new MemoryRaftLogStore({
    snapshot: { meta: { index: 10, term: 1, conf: { voters, learners: [] } }, data: text("s") },
    hardState: { term: 1, vote: 0, commit: 10 },
  });
  const config: RaftConfig = {
    id,
    electionTick: 10,
    heartbeatTick: 1,
    storage: store,
    applied: 10,
    maxSizePerMsgBytes: 1 << 20,
    maxInflightMsgs: 16,
    maxUncommittedEntriesBytes: 0,
    preVote: false,
    checkQuorum: false,
    randomInt: () => 0,
    ...overrides,
  };
  return { id, node: createRaftNode(config), store, config };
}

/** The host's Ready cycle: persist, apply conf changes, advance. Returns the Ready. */
function handle(n: TestNode): Ready {
  const rd = n.node.ready();
  if (rd.snapshot !== null) n.store.applySnapshot(rd.snapshot);
  n.store.append(rd.entries);
  if (rd.hardState !== null) n.store.setHardState(rd.hardState);
  void n.store.persist();
  for (const e of rd.committedEntries) {
    if (e.type === "conf_change") n.node.applyConfChange(decodeConfChange(e.data));
  }
  n.node.advance(rd);
  return rd;
}

/** Delivers messages and handles Readies until nothing moves. */
function stabilize(nodes: TestNode[]): void {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  let inFlight: Message[] = [];
  for (let round = 0; round < 100; round++) {
    let moved = false;
    for (const n of nodes) {
      if (n.node.hasReady()) {
        inFlight.push(...handle(n).messages);
        moved = true;
      }
    }
    const batch = inFlight;
    inFlight = [];
    for (const m of batch) {
      byId.get(m.to)?.node.step(m);
      moved = true;
    }
    if (!moved) return;
  }
  assert.fail("did not stabilize");
}

function electedGroup(size: number): TestNode[] {
  const voters = Array.from({ length: size }, (_, i) => i + 1);
  const nodes = voters.map((id) => makeNode(id, voters));
  nodes[0].node.campaign();
  stabilize(nodes);
  assert.equal(nodes[0].node.status().role, "leader");
  return nodes;
}

Deno.test("createRaftNode() asserts on inconsistent limits", () => {
  assert.throws(() => makeNode(1, [1], { electionTick: 1, heartbeatTick: 1 }), AssertionError);
  assert.throws(() => makeNode(1, [1], { maxInflightMsgs: INFLIGHT_MSGS_MAX + 1 }), AssertionError);
  assert.throws(() => makeNode(1, [1], { maxInflightMsgs: 0 }), AssertionError);
  assert.throws(() => makeNode(0, [1]), AssertionError);
  assert.throws(() => makeNode(1, [1], { applied: 11 }), AssertionError);
});

Deno.test("tick() campaigns after the randomized timeout in [electionTick, 2*electionTick)", () => {
  for (const [jitter, expectedTicks] of [[0, 10], [9, 19]]) {
    const n = makeNode(1, [1, 2, 3], { randomInt: (k) => Math.min(jitter, k - 1) });
    let ticks = 0;
    while (n.node.status().role === "follower") {
      n.node.tick();
      ticks++;
      assert.ok(ticks <= 20);
    }
    assert.equal(ticks, expectedTicks);
  }
  assert.throws(() => makeNode(1, [1], { randomInt: (k) => k }), AssertionError);
});

Deno.test("ready() asserts when called again before advance()", () => {
  const n = makeNode(1, [1]);
  n.node.campaign();
  assert.equal(n.node.hasReady(), true);
  const rd = n.node.ready();
  assert.equal(n.node.hasReady(), false, "nothing new while a Ready is outstanding");
  assert.throws(() => n.node.ready(), AssertionError);
  assert.throws(() => n.node.advance(rd), AssertionError, "entries not in storage yet");
  n.store.append(rd.entries);
  n.node.advance(rd);
  assert.equal(n.node.hasReady(), true, "the self-acknowledgment commits the empty entry");
  assert.throws(() => n.node.advance(rd), AssertionError);
});

Deno.test("a leader counts only entries whose Ready was advanced (persist before count)", () => {
  const n = makeNode(1, [1]);
  n.node.campaign();
  handle(n);
  handle(n);
  assert.equal(n.node.status().commit, 11);
  n.node.propose(text("a"));
  const rd = n.node.ready();
  assert.deepEqual(rd.entries.map((e) => e.index), [12]);
  n.node.propose(text("b")); // arrives while the host persists `a`
  assert.equal(n.node.status().commit, 11);
  n.store.append(rd.entries);
  void n.store.persist();
  n.node.advance(rd);
  assert.equal(n.node.status().commit, 12, "b is not durable yet");
  const next = handle(n);
  assert.deepEqual(next.entries.map((e) => e.index), [13]);
  assert.deepEqual(next.committedEntries.map((e) => e.index), [12]);
  assert.equal(n.node.status().commit, 13);
});

Deno.test("a follower acknowledges entries only in the Ready that persists them", () => {
  const [leader, follower] = electedGroup(2);
  leader.node.propose(text("x"));
  const app = handle(leader).messages.find((m) => m.type === "append" && m.to === 2)!;
  follower.node.step(app);
  const rd = follower.node.ready();
  assert.deepEqual(rd.entries.map((e) => e.index), [12]);
  assert.deepEqual(rd.messages.map((m) => [m.type, m.index]), [["append_resp", 12]]);
});

Deno.test("step() ignores stale terms, misrouted and malformed messages", () => {
  const nodes = electedGroup(3);
  const follower = nodes[1];
  const before = follower.node.status();

  const stale = emptyMessage("append", 1, 2, before.term - 1);
  follower.node.step(stale);
  const misrouted = emptyMessage("heartbeat", 1, 3, before.term + 5);
  follower.node.step(misrouted);
  const gap = emptyMessage("append", 1, 2, before.term);
  gap.index = 11;
  gap.logTerm = 2;
  gap.entries = [{ term: 2, index: 13, type: "normal", data: text("gap") }];
  follower.node.step(gap);
  const untermed = emptyMessage("heartbeat", 1, 2, 0);
  follower.node.step(untermed);

  assert.equal(follower.node.hasReady(), false);
  assert.deepEqual(follower.node.status(), before);
});

Deno.test("a snapshot at or below the follower's commit index is not installed", () => {
  const [leader, follower] = electedGroup(2);
  const snap = emptyMessage("snapshot", 1, 2, leader.node.status().term);
  snap.snapshot = {
    meta: { index: 5, term: 1, conf: { voters: [1, 2], learners: [] } },
    data: text("old"),
  };
  follower.node.step(snap);
  const rd = handle(follower);
  assert.equal(rd.snapshot, null);
  assert.deepEqual(rd.messages.map((m) => [m.type, m.index, m.reject]), [[
    "append_resp",
    11,
    false,
  ]]);
});

Deno.test("a restarted node hands committed entries past its applied index to the host again", () => {
  const n = makeNode(1, [1]);
  n.node.campaign();
  handle(n);
  handle(n);
  n.node.propose(text("a"));
  handle(n);
  handle(n);
  assert.equal(n.node.status().commit, 12);
  // Restart with the state machine durable only up to 10.
  const again = makeNode(1, [1], { applied: 10 }, n.store.cloneDurable());
  assert.equal(again.node.status().term, 2);
  const rd = again.node.ready();
  assert.deepEqual(rd.committedEntries.map((e) => e.index), [11, 12]);
});

Deno.test("campaign() is refused while a committed conf change is not applied", () => {
  const store = new MemoryRaftLogStore({
    snapshot: { meta: { index: 10, term: 1, conf: { voters: [1], learners: [] } }, data: text("") },
    hardState: { term: 1, vote: 0, commit: 11 },
  });
  store.append([{
    term: 1,
    index: 11,
    type: "conf_change",
    data: encodeConfChange({ type: "add_voter", nodeId: 2, context: new Uint8Array(0) }),
  }]);
  const n = makeNode(1, [1], { applied: 10 }, store);
  n.node.campaign();
  assert.equal(n.node.status().role, "follower");
  const rd = n.node.ready();
  assert.equal(rd.committedEntries.length, 1);
  n.node.applyConfChange({ type: "add_voter", nodeId: 2, context: new Uint8Array(0) });
  n.node.advance(rd);
  n.node.campaign();
  assert.equal(n.node.status().role, "candidate");
});

Deno.test("a restart replays applied conf changes that postdate the storage snapshot", () => {
  const store = new MemoryRaftLogStore({
    snapshot: { meta: { index: 10, term: 1, conf: { voters: [1], learners: [] } }, data: text("") },
    hardState: { term: 1, vote: 1, commit: 12 },
  });
  const change = (type: "add_learner" | "add_voter", nodeId: number) => ({
    term: 1,
    index: type === "add_learner" ? 11 : 12,
    type: "conf_change" as const,
    data: encodeConfChange({ type, nodeId, context: new Uint8Array(0) }),
  });
  store.append([change("add_learner", 2), change("add_voter", 3)]);
  const n = makeNode(1, [1], { applied: 12 }, store);
  assert.deepEqual(n.node.status().conf, { voters: [1, 3], learners: [2] });
});

Deno.test("a conf change that would remove the last voter is replaced and ignored", () => {
  const n = makeNode(1, [1]);
  n.node.campaign();
  handle(n);
  handle(n);
  n.node.proposeConfChange({ type: "remove_node", nodeId: 1, context: new Uint8Array(0) });
  const rd = handle(n);
  assert.deepEqual(rd.entries.map((e) => [e.type, e.data.byteLength]), [["normal", 0]]);
  assert.deepEqual(
    n.node.applyConfChange({ type: "remove_node", nodeId: 1, context: new Uint8Array(0) }),
    { voters: [1], learners: [] },
  );
  assert.deepEqual(
    n.node.applyConfChange({ type: "add_learner", nodeId: 1, context: new Uint8Array(0) }),
    { voters: [1], learners: [] },
  );
});

Deno.test("propose() throws ProposalDroppedError without a leader", () => {
  const n = makeNode(1, [1, 2, 3]);
  assert.throws(() => n.node.propose(text("x")), ProposalDroppedError);
  assert.throws(() => n.node.readIndex(text("r")), ProposalDroppedError);
  n.node.campaign();
  assert.throws(() => n.node.propose(text("x")), ProposalDroppedError);
});

Deno.test("reportSnapshot() moves a follower out of snapshot state, paused until it answers", () => {
  const nodes = electedGroup(3);
  const [leader] = nodes;
  leader.node.propose(text("a"));
  stabilize(nodes);
  leader.store.createSnapshot(12, { voters: [1, 2, 3], learners: [] }, text("s12"));
  leader.store.compact(12);
  const raft = raftOf(leader.node);
  const pr = raft.tracker.progress.get(3)!;
  pr.becomeProbe();
  pr.match = 0;
  pr.next = 5; // as if 3 had lost its log
  leader.node.reportUnreachable(3);
  const hb = emptyMessage("heartbeat_resp", 3, 1, raft.term);
  leader.node.step(hb);
  assert.equal(pr.state, "snapshot");
  assert.equal(pr.pendingSnapshot, 12);
  leader.node.reportSnapshot(3, "failure");
  assert.equal(pr.state, "probe");
  assert.equal(pr.next, 1);
  assert.equal(pr.isPaused(), true);
});

Deno.test("a removed leader hands leadership to the most caught-up voter", () => {
  const nodes = electedGroup(3);
  const [leader] = nodes;
  leader.node.proposeConfChange({ type: "remove_node", nodeId: 1, context: new Uint8Array(0) });
  stabilize(nodes);
  // 2 was chosen (caught up, lowest id), told to campaign, and won at term 3.
  assert.equal(nodes[1].node.status().role, "leader");
  assert.equal(nodes[1].node.status().term, 3);
  assert.deepEqual(nodes[1].node.status().conf, { voters: [2, 3], learners: [] });
  // The old leader refuses proposals and steps down after an election timeout.
  assert.throws(() => leader.node.propose(text("x")), ProposalDroppedError);
  for (let i = 0; i < 10 && leader.node.status().role === "leader"; i++) leader.node.tick();
  assert.equal(leader.node.status().role, "follower");
});

Deno.test("a removed leader left with one other voter does not answer reads on its own", () => {
  const nodes = electedGroup(2);
  const [leader, other] = nodes;
  leader.node.proposeConfChange({ type: "remove_node", nodeId: 1, context: new Uint8Array(0) });
  // Commit and apply the removal on the leader only; 2 stays unaware.
  const rd1 = handle(leader);
  other.node.step(rd1.messages.find((m) => m.type === "append")!);
  leader.node.step(handle(other).messages.find((m) => m.type === "append_resp")!);
  handle(leader);
  assert.deepEqual(leader.node.status().conf, { voters: [2], learners: [] });
  assert.equal(leader.node.status().role, "leader");
  leader.node.readIndex(text("r"));
  const rd = handle(leader);
  assert.deepEqual(rd.readStates, [], "needs 2's acknowledgment first");
  assert.ok(rd.messages.some((m) => m.type === "heartbeat" && m.to === 2));
});

Deno.test("a (pre)vote rejection teaches the candidate a commit index it can verify", () => {
  const [leader, follower] = electedGroup(2);
  leader.node.propose(text("a"));
  const rd = handle(leader);
  follower.node.step(rd.messages.find((m) => m.type === "append")!);
  handle(follower);
  assert.equal(follower.node.status().commit, 11, "12 is not known committed on 2");
  const term = follower.node.status().term;
  const mismatch = emptyMessage("vote_resp", 1, 2, term);
  mismatch.reject = true;
  mismatch.commit = 12;
  mismatch.logTerm = term + 1; // not the term of our entry 12
  follower.node.step(mismatch);
  assert.equal(follower.node.status().commit, 11);
  const matching = { ...mismatch, logTerm: term };
  follower.node.step(matching);
  assert.equal(follower.node.status().commit, 12);
  const beyond = { ...mismatch, commit: 20, logTerm: term };
  follower.node.step(beyond);
  assert.equal(follower.node.status().commit, 12, "an index we do not hold teaches nothing");
});
