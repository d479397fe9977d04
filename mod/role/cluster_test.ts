import assert from "node:assert/strict";
import type { RaftHost } from "../raft/host.ts";
import type { RaftStatus } from "../raft/mod.ts";
import { LeaderSpread, preferredLeader } from "./cluster.ts";

/** A host whose shards this node leads at `term`, with peers' progress as given. */
function fakeHost(term: number, progress: Map<number, { recentActive: boolean; match: number }>) {
  const transfers: [number, number][] = [];
  const host = {
    status: () => ({ role: "leader", term, commit: 10, progress }) as unknown as RaftStatus,
    transferLeadership: (shard: number, to: number) => transfers.push([shard, to]),
  } as unknown as RaftHost;
  return { host, transfers };
}

Deno.test("preferredLeader() gives each voter shards/N of the shards in turn", () => {
  const voters = [1, 2, 3];
  const counts = new Map<number, number>();
  for (let s = 0; s < 12; s++) {
    const n = preferredLeader(s, voters);
    counts.set(n, (counts.get(n) ?? 0) + 1);
  }
  assert.deepEqual([...counts.entries()].sort(), [[1, 4], [2, 4], [3, 4]]);
});

Deno.test("LeaderSpread hands start-up leadership to caught-up preferred leaders only", () => {
  const active = { recentActive: true, match: 10 };
  const { host, transfers } = fakeHost(
    2,
    new Map([[2, active], [3, { recentActive: true, match: 4 }]]),
  );
  const spread = new LeaderSpread(host, 1, [1, 2, 3], [0, 1, 2]);
  spread.balance();
  assert.deepEqual(transfers, [], "nothing before a leader was seen");
  for (const shard of [0, 1, 2]) spread.observe(shard, 1, 2);
  spread.balance();
  // Shard 0 is node 1's own; shard 2's preferred leader (node 3) lags behind the commit.
  assert.deepEqual(transfers, [[1, 2]]);
});

Deno.test("LeaderSpread leaves leadership won after another leader (a failover) where it is", () => {
  const active = { recentActive: true, match: 10 };
  const { host, transfers } = fakeHost(5, new Map([[1, active], [3, active]]));
  const spread = new LeaderSpread(host, 2, [1, 2, 3], [0, 2]);
  spread.observe(0, 1, 2); // node 1 led first; node 2 won shard 0 later, at term 5
  spread.observe(0, 2, 5);
  spread.observe(2, 2, 3); // node 2 led shard 2 first, at term 3, but is now at term 5
  spread.balance();
  assert.deepEqual(transfers, []);
});
