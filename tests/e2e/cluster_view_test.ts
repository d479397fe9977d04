// The cluster view on three real server processes on loopback: GET /ui/api/cluster on every
// node shows the three nodes, every shard with one leader all nodes agree on, its term,
// members and commit index, this node's devices and capacity, and the chunk counts;
// `kiseki admin status` prints the same as tables; a killed node shows as unreachable.

import assert from "node:assert/strict";
import type { ClusterView } from "../../mod/admin/mod.ts";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import {
  flagsFor,
  pollUntil,
  ROOT,
  run,
  type RunningRole,
  startRole,
  waitForHttp,
} from "./_role.ts";

const HOST = "127.44.13";
const SHARDS = 2;
const DEADLINE_MS = 30_000;

function addrs(id: number) {
  const host = `${HOST}.${id}`;
  return {
    KISEKI_S3_ADDR: `${host}:29000`,
    KISEKI_NFS_ADDR: `${host}:22049`,
    KISEKI_METRICS_ADDR: `${host}:29090`,
    KISEKI_DATA_ADDR: `${host}:29100`,
    KISEKI_ADVISORY_ADDR: `${host}:29101`,
    KISEKI_RAFT_ADDR: `${host}:29300`,
  };
}

/** `kiseki admin` with the role's own permissions. */
function admin(args: string[]) {
  return run(Deno.execPath(), [
    "run",
    "--quiet",
    ...flagsFor("admin", {}),
    `${ROOT}${ROLE_TABLE.admin.entry}`,
    ...args,
  ]);
}

async function view(id: number): Promise<ClusterView> {
  const r = await fetch(`http://${addrs(id).KISEKI_METRICS_ADDR}/ui/api/cluster`);
  assert.equal(r.status, 200);
  return await r.json() as ClusterView;
}

function until<T>(what: string, get: () => Promise<T | null>): Promise<T> {
  return pollUntil(what, get, DEADLINE_MS, 200);
}

Deno.test("GET /ui/api/cluster and kiseki admin status show three real nodes, their shards and a lost node", async () => {
  const peers = [1, 2, 3].map((id) => `${id}=${addrs(id).KISEKI_RAFT_ADDR}`).join(",");
  const dirs: string[] = [];
  const nodes: RunningRole[] = [];
  let seen: ClusterView[] = [];
  try {
    for (const id of [1, 2, 3]) {
      const dir = await Deno.makeTempDir({ prefix: `kiseki-view-n${id}-` });
      dirs.push(dir);
      nodes.push(startRole("server", {
        ...addrs(id),
        KISEKI_NODE_ID: String(id),
        KISEKI_RAFT_PEERS: peers,
        KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
        // Loopback only; mTLS between nodes is data_path_auth_test.ts's subject.
        KISEKI_ALLOW_INSECURE: "true",
        KISEKI_DATA_DIR: dir,
        KISEKI_SHARDS: String(SHARDS),
        KISEKI_RAFT_TICK_MS: "50",
        KISEKI_LOG_LEVEL: "warn",
      }));
    }
    for (const id of [1, 2, 3]) {
      await waitForHttp(`http://${addrs(id).KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    }

    // Every node sees every shard led by the same node, with all three members.
    const views = await until("every node to agree on the shard leaders", async () => {
      const vs = await Promise.all([1, 2, 3].map(view));
      seen = vs;
      for (let s = 0; s < SHARDS; s++) {
        const leaders = new Set(vs.map((v) => v.shards[s]!.leader));
        if (leaders.size !== 1 || leaders.has(0)) return null;
      }
      // A node talks to the leaders of its shards (two followers may never talk at all).
      for (const v of vs) {
        for (const s of v.shards) {
          if (s.leader === v.nodeId) continue;
          if (v.nodes.find((n) => n.id === s.leader)?.state !== "reachable") return null;
        }
      }
      return vs;
    });
    for (const [i, v] of views.entries()) {
      const id = i + 1;
      assert.equal(v.nodeId, id);
      assert.deepEqual(v.nodes.map((n) => n.id), [1, 2, 3]);
      assert.deepEqual(
        v.nodes.map((n) => n.address),
        [1, 2, 3].map((n) => addrs(n).KISEKI_RAFT_ADDR),
      );
      const self = v.nodes.find((n) => n.self)!;
      assert.equal(self.id, id);
      assert.equal(self.state, "up");
      assert(self.devices !== null && self.devices.length > 0, "this node's devices");
      assert(self.capacityBytes! > 0, "this node's capacity");
      for (const other of v.nodes.filter((n) => !n.self)) assert.equal(other.devices, null);
      assert.equal(v.shards.length, SHARDS);
      for (const s of v.shards) {
        assert(s.term >= 1 && s.commit >= 1, JSON.stringify(s));
        assert.deepEqual(s.members.map((m) => m.id).sort(), [1, 2, 3]);
        assert.equal(s.members.filter((m) => m.role === "leader").length, 1);
        assert(s.log.firstIndex >= 1 && s.log.lastIndex >= s.log.firstIndex - 1);
      }
      assert.deepEqual(v.chunks, {
        degraded: 0,
        repairing: 0,
        rebalance: { state: "idle", examined: 0, total: 0, moved: 0 },
      });
    }

    const table = await admin(["status", "--node", addrs(1).KISEKI_METRICS_ADDR]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^node\s+address\s+state\s+devices\s+capacity\s+used$/m);
    assert.match(
      table.stdout,
      new RegExp(`^1 \\*\\s+${HOST.replaceAll(".", "\\.")}\\.1:29300\\s+up`, "m"),
    );
    assert.match(table.stdout, /^3\s+\S+\s+(reachable|unknown) \(transport\)\s+\?/m);
    assert.match(
      table.stdout,
      /^shard\s+leader\s+term\s+commit\s+applied\s+state\s+members\s+log$/m,
    );
    assert.match(table.stdout, /^0\s+[123]\s+\d+\s+\d+/m);
    assert.match(
      table.stdout,
      /^degraded chunks\s+repairing chunks\s+rebalance\n0\s+0\s+idle \(last: 0 fragments moved\)$/m,
    );

    // Node 3 dies: the others see it unreachable and their shards degraded, not lost.
    await nodes[2]!.stop("SIGKILL");
    await until("node 1 to see node 3 unreachable", async () => {
      const v = await view(1);
      return v.nodes.find((n) => n.id === 3)!.state === "unreachable" ? v : null;
    });
    const json = await admin(["status", "--node", addrs(2).KISEKI_METRICS_ADDR, "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const status = JSON.parse(json.stdout);
    assert.equal(status.cluster.nodeId, 2);
    assert.equal(status.cluster.shards.length, SHARDS);
  } catch (e) {
    console.error(`last views: ${JSON.stringify(seen)}`);
    for (const [i, n] of nodes.entries()) {
      console.error(`node ${i + 1}:\n${n.stderr().slice(-3000)}`);
    }
    throw e;
  } finally {
    for (const n of nodes) await n.stop("SIGKILL").catch(() => {});
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});
