import assert from "node:assert/strict";
import { createLogger } from "../obs/mod.ts";
import { type MembershipChange, RaftHost, type RaftStateMachine } from "./host.ts";
import { MemoryRaftLogStore } from "./memory_storage.ts";
import type { ConfState, Entry, Message, NodeId, Snapshot } from "./types.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const GROUPS = [0, 1];
const STEPS_MAX = 3_000;

/** Keeps the commands it applied; its snapshot is their list. */
class ListMachine implements RaftStateMachine {
  items: string[] = [];
  apply(_entry: Entry, command: Uint8Array): unknown {
    this.items.push(new TextDecoder().decode(command));
    return this.items.length;
  }
  restore(snapshot: Snapshot): void {
    this.items = snapshot.data.length <= 1
      ? []
      : JSON.parse(new TextDecoder().decode(snapshot.data));
  }
}

interface SimNode {
  id: NodeId;
  host: RaftHost;
  stores: Map<number, MemoryRaftLogStore>;
  machines: Map<number, ListMachine>;
  alive: boolean;
  changes: MembershipChange[];
}

/** Hosts wired through an in-memory network that drops messages to or from a dead node. */
class Sim {
  readonly nodes = new Map<NodeId, SimNode>();
  readonly queue: { shard: number; m: Message }[] = [];

  start(id: NodeId, voters: NodeId[], stores?: Map<number, MemoryRaftLogStore>): SimNode {
    const changes: MembershipChange[] = [];
    const host = new RaftHost({
      nodeId: id,
      sink: { send: (shard, m) => this.queue.push({ shard, m }) },
      log: quiet,
      raft: {
        electionTick: 10,
        heartbeatTick: 1,
        maxSizePerMsgBytes: 1 << 20,
        maxInflightMsgs: 64,
        maxUncommittedEntriesBytes: 0,
        preVote: true,
        checkQuorum: true,
        randomInt: (n) => (id * 7) % n,
      },
      requestTimeoutMs: 20_000,
      waitersPerGroupMax: 64,
      onConfChange: (_shard, change) => changes.push(change),
    });
    const ownStores = stores ?? new Map<number, MemoryRaftLogStore>();
    const machines = new Map<number, ListMachine>();
    for (const shardId of GROUPS) {
      let store = ownStores.get(shardId);
      if (store === undefined) {
        store = new MemoryRaftLogStore({
          snapshot: {
            meta: { index: 1, term: 1, conf: { voters, learners: [] } },
            data: Uint8Array.of(0),
          },
          hardState: { term: 1, vote: 0, commit: 1 },
        });
        ownStores.set(shardId, store);
      }
      const sm = new ListMachine();
      sm.restore(store.snapshot());
      machines.set(shardId, sm);
      host.addGroup({ shardId, store, stateMachine: sm, applied: store.snapshot().meta.index });
    }
    const node = { id, host, stores: ownStores, machines, alive: true, changes };
    this.nodes.set(id, node);
    return node;
  }

  async kill(id: NodeId): Promise<void> {
    const n = this.nodes.get(id)!;
    n.alive = false;
    await n.host.stop();
  }

  /** Ticks and delivers until `done` holds; fails after STEPS_MAX steps. */
  async until(what: string, done: () => boolean): Promise<void> {
    for (let step = 0; step < STEPS_MAX; step++) {
      if (done()) return;
      for (const n of this.nodes.values()) if (n.alive) n.host.tick();
      for (let round = 0; round < 4; round++) {
        const batch = this.queue.splice(0);
        for (const { shard, m } of batch) {
          const to = this.nodes.get(m.to);
          if (to?.alive && this.nodes.get(m.from)?.alive) to.host.step(shard, m);
        }
        await new Promise((r) => setTimeout(r, 0));
      }
    }
    assert.fail(`not reached within ${STEPS_MAX} steps: ${what}`);
  }

  leader(shardId: number): SimNode | undefined {
    return [...this.nodes.values()].find((n) =>
      n.alive && n.host.status(shardId).role === "leader"
    );
  }

  live(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.alive);
  }
}

const voterEverywhere = (sim: Sim, id: NodeId) => () =>
  sim.live().every((n) => GROUPS.every((g) => n.host.conf(g).voters.includes(id)));
const sameConf = (c: ConfState) => ({
  voters: [...c.voters].sort(),
  learners: [...c.learners].sort(),
});

Deno.test("RaftHost.changeMembership() adds a learner that catches up by snapshot, promotes it, and removes a voter, across a leader killed mid-change", async () => {
  const sim = new Sim();
  for (const id of [1, 2, 3]) sim.start(id, [1, 2, 3]);
  await sim.until("a leader in every group", () => GROUPS.every((g) => sim.leader(g)));

  // Writes before the new node exists; then the log is compacted behind a snapshot, so the
  // new node can only catch up by one.
  for (const g of GROUPS) {
    for (let i = 0; i < 5; i++) {
      const p = sim.nodes.get(1)!.host.propose(g, new TextEncoder().encode(`g${g}-before-${i}`));
      await sim.until(
        `write ${i} on group ${g}`,
        () => sim.nodes.get(1)!.machines.get(g)!.items.length > i,
      );
      assert.equal((await p).result, i + 1);
    }
  }
  await sim.until(
    "every node applied the writes",
    () => sim.live().every((n) => GROUPS.every((g) => n.machines.get(g)!.items.length === 5)),
  );
  for (const n of sim.live()) {
    for (const g of GROUPS) {
      const applied = n.host.status(g).applied;
      await n.host.compact(
        g,
        {
          index: applied,
          data: new TextEncoder().encode(JSON.stringify(n.machines.get(g)!.items)),
        },
        applied,
      );
    }
  }

  // Node 4 starts with the existing members as voters (not itself) and no campaign.
  const four = sim.start(4, [1, 2, 3]);
  // Added as a learner from a follower of group 0 (forwarded) and the leader of group 1.
  const follower0 = sim.live().find((n) => n.id !== 4 && n.host.status(0).role !== "leader")!;
  const added = GROUPS.map((g) =>
    (g === 0 ? follower0 : sim.leader(g)!).host.changeMembership(g, {
      type: "add_learner",
      nodeId: 4,
      addr: "127.0.0.4:9300",
    })
  );
  await sim.until("learner added", () => sim.leader(0)!.host.conf(0).learners.includes(4));
  // The leader of group 0 dies mid-change: the learner is added but not yet promoted (it
  // is still catching up); the next leader finishes the promotion.
  assert.ok(!sim.leader(0)!.host.conf(0).voters.includes(4), "not promoted before catching up");
  const killed = sim.leader(0)!.id;
  await sim.kill(killed);
  await sim.until("node 4 is a voter in every group", voterEverywhere(sim, 4));
  for (const p of added) {
    const conf = await p.catch(() => null); // the killed node's own waiter fails
    if (conf !== null) assert.ok(conf.learners.includes(4) || conf.voters.includes(4));
  }
  // It caught up through the snapshot and then the log, and took part in new writes.
  for (const g of GROUPS) {
    assert.ok(
      four.stores.get(g)!.snapshot().meta.index > 1,
      `group ${g} reached node 4 by snapshot`,
    );
    await sim.until(`group ${g} has a leader again`, () => sim.leader(g) !== undefined);
    const p = four.host.propose(g, new TextEncoder().encode(`g${g}-after`));
    await sim.until(`write after on group ${g}`, () => four.machines.get(g)!.items.length === 6);
    await p;
    assert.deepEqual(four.machines.get(g)!.items, [
      ...Array.from({ length: 5 }, (_, i) => `g${g}-before-${i}`),
      `g${g}-after`,
    ]);
  }
  // Every node learned node 4's address through the log.
  for (const n of sim.live()) {
    if (n.id === 4) continue;
    assert.ok(n.changes.some((c) => c.nodeId === 4 && c.addr === "127.0.0.4:9300"));
  }

  // Remove a surviving original voter: it leaves every group, the rest keep committing.
  const gone = [1, 2, 3].find((id) => id !== killed)!;
  const appliedBeforeRemoval = four.host.status(0).applied;
  for (const g of GROUPS) {
    let conf: ConfState | null = null;
    for (let attempt = 0; attempt < 5 && conf === null; attempt++) {
      await sim.until(`group ${g} leader`, () => sim.leader(g) !== undefined);
      const p = sim.leader(g)!.host.changeMembership(g, { type: "remove_node", nodeId: gone });
      let settled = false;
      p.then(() => (settled = true), () => (settled = true));
      await sim.until("removal settles", () => settled);
      conf = await p.catch(() => null);
    }
    assert.ok(conf !== null, `removal from group ${g} applied`);
    assert.ok(!conf.voters.includes(gone));
  }
  const survivors = [1, 2, 3, 4].filter((id) => id !== killed && id !== gone);
  await sim.until(
    "survivors see the removal",
    () =>
      survivors.every((id) =>
        GROUPS.every((g) => !sim.nodes.get(id)!.host.conf(g).voters.includes(gone))
      ),
  );
  // A snapshot taken at an index before the removal records the membership there.
  const snapshotIndex = four.stores.get(0)!.snapshot().meta.index;
  assert.ok(appliedBeforeRemoval > snapshotIndex, "a snapshot there is news");
  await four.host.compact(0, { index: appliedBeforeRemoval, data: Uint8Array.of(0) }, 0);
  const snap = four.stores.get(0)!.snapshot().meta;
  assert.equal(snap.index, appliedBeforeRemoval);
  assert.ok(snap.conf.voters.includes(gone), "the removal came after the snapshot's index");
  assert.ok(!four.host.conf(0).voters.includes(gone));
  await sim.kill(gone);
  for (const g of GROUPS) {
    await sim.until(`group ${g} leader among survivors`, () => sim.leader(g) !== undefined);
    const p = sim.leader(g)!.host.propose(g, new TextEncoder().encode(`g${g}-after-removal`));
    let done = false;
    p.then(() => (done = true), () => (done = true));
    await sim.until("write after removal", () => done);
    await p;
  }

  // A restarted survivor keeps the membership: it is in the log (and replays from it).
  const keep = survivors.find((id) => id !== 4)!;
  const before = GROUPS.map((g) => sameConf(sim.nodes.get(keep)!.host.conf(g)));
  const stores = new Map(
    [...sim.nodes.get(keep)!.stores].map(([g, s]) => [g, s.cloneDurable()]),
  );
  await sim.kill(keep);
  const restarted = sim.start(keep, [1, 2, 3], stores);
  await sim.until(
    "restarted node applied its log",
    () => GROUPS.every((g) => restarted.machines.get(g)!.items.includes(`g${g}-after-removal`)),
  );
  assert.deepEqual(GROUPS.map((g) => sameConf(restarted.host.conf(g))), before);
  for (const g of GROUPS) {
    assert.ok(restarted.host.conf(g).voters.includes(4));
    assert.ok(!restarted.host.conf(g).voters.includes(gone));
  }
  for (const n of sim.live()) await n.host.stop();
});
