import assert from "node:assert/strict";
import { AssertionError, HybridLogicalClock, ManualClock } from "../base/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { RaftHost } from "../raft/host.ts";
import { MemoryRaftLogStore } from "../raft/mod.ts";
import { LogCompactor } from "./compactor.ts";
import { DeltaLog, ShardStateMachine } from "./delta_log.ts";
import {
  decodeInlineSnapshot,
  type DurableSnapshotPart,
  encodeInlineSnapshot,
  SnapshotFormatError,
} from "./snapshot.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });

Deno.test("encodeInlineSnapshot() round-trips its parts; the bootstrap byte decodes as the shard part", () => {
  const parts = new Map([["shard", Uint8Array.of(1)], ["cluster", new Uint8Array(300).fill(7)]]);
  assert.deepEqual(decodeInlineSnapshot(encodeInlineSnapshot(parts)), parts);
  assert.deepEqual(decodeInlineSnapshot(Uint8Array.of(0)), new Map([["shard", Uint8Array.of(0)]]));
  const encoded = encodeInlineSnapshot(parts);
  assert.throws(
    () => decodeInlineSnapshot(encoded.subarray(0, encoded.length - 1)),
    SnapshotFormatError,
  );
  assert.throws(() => decodeInlineSnapshot(Uint8Array.of(9, 0, 0)), SnapshotFormatError);
  assert.throws(
    () => decodeInlineSnapshot(Uint8Array.of(...encoded, 0)),
    SnapshotFormatError,
  );
});

Deno.test("ShardStateMachine captures every inline part at the applied index and restores them", () => {
  const sm = new ShardStateMachine(0);
  let clusterState = "tenants:1";
  sm.addInlinePart({
    name: "cluster",
    capture: () => new TextEncoder().encode(clusterState),
    restore: (bytes) => (clusterState = bytes ? new TextDecoder().decode(bytes) : ""),
  });
  assert.throws(
    () => sm.addInlinePart({ name: "cluster", capture: () => new Uint8Array(), restore() {} }),
    AssertionError,
  );
  sm.apply({ index: 7, term: 2, type: "normal", data: new Uint8Array() }, Uint8Array.of(2, 1));
  assert.equal(sm.maintenance, true);
  const snap = sm.captureSnapshot();
  assert.equal(snap.index, 7);

  const other = new ShardStateMachine(0);
  let restored = "";
  other.addInlinePart({
    name: "cluster",
    capture: () => new Uint8Array(),
    restore: (bytes) => (restored = new TextDecoder().decode(bytes)),
  });
  other.restore({
    meta: { index: 7, term: 2, conf: { voters: [1], learners: [] } },
    data: snap.data,
  });
  assert.equal(other.maintenance, true);
  assert.equal(other.lastApplied, 7);
  assert.equal(restored, "tenants:1");
  // The bootstrap record leaves the shard at 0 (no command applied yet).
  const fresh = new ShardStateMachine(1);
  fresh.restore({
    meta: { index: 1, term: 1, conf: { voters: [1], learners: [] } },
    data: Uint8Array.of(0),
  });
  assert.equal(fresh.lastApplied, 0);
});

/** A durable part whose durable index the test moves by hand. */
function durablePart(): DurableSnapshotPart & { durable: number } {
  const part = {
    name: "views",
    durable: 0,
    durableIndex: () => part.durable,
    export: () => Promise.reject(new Error("not in this test")),
    install: () => Promise.reject(new Error("not in this test")),
  };
  return part;
}

Deno.test("LogCompactor truncates behind a snapshot only once every durable part holds it, keeping the margin", async () => {
  const store = new MemoryRaftLogStore({
    snapshot: {
      meta: { index: 1, term: 1, conf: { voters: [1], learners: [] } },
      data: Uint8Array.of(0),
    },
    hardState: { term: 1, vote: 0, commit: 1 },
  });
  const host = new RaftHost({
    nodeId: 1,
    sink: { send: () => {} },
    log: quiet,
    raft: {
      electionTick: 10,
      heartbeatTick: 1,
      maxSizePerMsgBytes: 1 << 20,
      maxInflightMsgs: 64,
      maxUncommittedEntriesBytes: 0,
      preVote: false,
      checkQuorum: false,
      randomInt: () => 0,
    },
    requestTimeoutMs: 5_000,
    waitersPerGroupMax: 1024,
  });
  const sm = new ShardStateMachine(0);
  const views = durablePart();
  sm.addDurablePart(views);
  const shards = new Map([[0, { store, stateMachine: sm }]]);
  host.addGroup({ shardId: 0, store, stateMachine: sm, applied: 1 });
  host.campaign(0);
  const log = new DeltaLog({
    host,
    hlc: new HybridLogicalClock({ clock: new ManualClock(1) }),
    shards,
    memberAddress: () => "local",
  });
  const compactor = new LogCompactor({
    host,
    shards,
    log: quiet,
    snapshotEntries: 10,
    marginEntries: 4,
  });
  try {
    for (let i = 0; i < 30; i++) {
      await log.append({
        shardId: 0,
        tenantId: new Uint8Array(16),
        op: "create",
        hashedKey: new Uint8Array(32),
        chunkRefs: [],
        payload: Uint8Array.of(i),
      });
    }
    const applied = sm.lastApplied;
    assert(applied >= 31, `applied ${applied}`);
    // The views have nothing durable yet: the snapshot waits, the log stays whole.
    await compactor.runOnce();
    assert.equal(store.firstIndex(), 2);
    // The views catch up: the snapshot taken at `applied` lands, the log keeps the margin.
    views.durable = applied;
    await compactor.runOnce();
    assert.equal(store.snapshot().meta.index, applied);
    assert.equal(store.firstIndex(), applied - 4 + 1);
    assert.equal(compactor.stats()[0]!.compactions, 1);
    // Reads of what was compacted are refused with out_of_range, not served wrong.
    await assert.rejects(() => log.read(0, 2, 10, false), /compacted/);
    const tail = await log.read(0, applied - 3, 10, false);
    assert.deepEqual(tail.deltas.map((d) => d.sequence), [
      applied - 3,
      applied - 2,
      applied - 1,
      applied,
    ]);
  } finally {
    await compactor.stop();
    await host.stop();
  }
});
