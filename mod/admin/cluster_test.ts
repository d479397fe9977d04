import assert from "node:assert/strict";
import type { PoolReport } from "../chunk/mod.ts";
import { buildClusterView, clusterViewHandler, type ShardView } from "./cluster.ts";
import { adminHandler, AdminUi, ReadinessFlag } from "./http.ts";

const pool = (capacityBytes: number): PoolReport => ({
  name: "default",
  durability: "ec:4+2",
  segmentSizeBytes: 1 << 20,
  fullPercent: 90,
  capacityBytes,
  usedBytes: 10,
  liveBytes: 5,
  writableDevices: 1,
  devices: [{
    device: 0,
    id: "default-0",
    path: "/d/0",
    status: "ok",
    reason: "",
    capacityBytes,
    usedBytes: 10,
    liveBytes: 5,
    segments: 4,
    segmentsFree: 3,
    writable: true,
  }],
});

const shard: ShardView = {
  shardId: 1,
  leader: 2,
  term: 3,
  commit: 40,
  applied: 40,
  state: "healthy",
  members: [{ id: 1, role: "follower", match: 0 }],
  log: { firstIndex: 30, lastIndex: 40, snapshotIndex: 35 },
};

Deno.test("buildClusterView() gives this node's devices, peers' states from the transport unless the cluster state knows better", () => {
  const view = buildClusterView({
    nodeId: 1,
    members: [
      { id: 3, address: "n3:9300", link: "never" },
      { id: 1, address: "n1:9300", link: null },
      { id: 2, address: "n2:9300", link: "down" },
      { id: 4, address: "n4:9300", link: "up" },
    ],
    clusterState: (id) => id === 4 ? "draining" : null,
    drain: (id) => id === 4 ? { evacuatedBy: [1], waitingFor: [2, 4] } : null,
    pools: (id) => id === 1 ? [pool(1000)] : id === 2 ? [pool(500), pool(250)] : null,
    shards: () => [shard, { ...shard, shardId: 0 }],
  }, new Date(0));
  assert.deepEqual(view.nodes.map((n) => [n.id, n.state, n.stateSource]), [
    [1, "up", "local"],
    [2, "unreachable", "transport"],
    [3, "unknown", "transport"],
    [4, "draining", "cluster"],
  ]);
  assert.equal(view.nodes[0]!.self, true);
  assert.deepEqual(view.nodes[3]!.drain, { evacuatedBy: [1], waitingFor: [2, 4] });
  assert.equal("drain" in view.nodes[1]!, false, "only a draining node has a drain");
  assert.equal(view.nodes[0]!.capacityBytes, 1000);
  assert.equal(view.nodes[1]!.capacityBytes, 750);
  assert.equal(view.nodes[1]!.devices!.length, 2);
  assert.equal(view.nodes[2]!.devices, null);
  assert.equal(view.nodes[2]!.capacityBytes, null);
  assert.deepEqual(view.shards.map((s) => s.shardId), [0, 1]);
  assert.deepEqual(view.chunks, { degraded: 0, repairing: 0 });
  assert.equal(view.generatedAt, "1970-01-01T00:00:00.000Z");
});

Deno.test("AdminUi serves its views to any caller with GET only, and 404s the rest", async () => {
  const ui = new AdminUi();
  const view = buildClusterView({
    nodeId: 1,
    members: [{ id: 1, address: "n1:9300", link: null }],
    pools: () => null,
    shards: () => [shard],
    chunks: () => ({ degraded: 2, repairing: 1 }),
  }, new Date(0));
  ui.mount("/ui/api/cluster", clusterViewHandler(() => view));
  assert.throws(() => ui.mount("/ui/api/cluster", clusterViewHandler(() => view)));
  assert.throws(() => ui.mount("/api/v1/cluster", clusterViewHandler(() => view)));
  const readiness = new ReadinessFlag();
  const handle = adminHandler(readiness, undefined, ui);
  const remote = { remoteAddr: { hostname: "10.1.2.3" } };
  const ok = await handle(new Request("http://x/ui/api/cluster"), remote);
  assert.equal(ok.status, 200);
  const body = await ok.json();
  assert.deepEqual(body.chunks, { degraded: 2, repairing: 1 });
  assert.equal(body.shards[0].leader, 2);
  const post = await handle(new Request("http://x/ui/api/cluster", { method: "POST" }), remote);
  assert.equal(post.status, 405);
  await post.body?.cancel();
  const missing = await handle(new Request("http://x/ui/api/nodes"), remote);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});
