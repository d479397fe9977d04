// Cluster membership with real `kiseki server` processes on loopback, driven by aws-cli and
// boto3: a fourth node joins a running three-node cluster and fragments rebalance onto it;
// `kiseki admin node drain` moves every fragment off a node (a drain that would lower the
// node losses chunks survive is refused), `node remove` takes it out once every node has
// reported it evacuated; and a node killed past KISEKI_NODE_DOWN_GRACE is recorded down,
// its fragments rebuilt from the survivors, and recorded up again when it returns. Every
// object reads back byte-exact through every live node.

import assert from "node:assert/strict";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import { flagsFor, pollUntil, ROOT, run } from "./_role.ts";
import {
  cluster,
  type ClusterPorts,
  KiB,
  metric,
  type Node,
  Objects,
  pattern,
  SETTLE_MS,
  start,
  stopAll,
  view,
} from "./_cluster_nodes.ts";

const PORTS: ClusterPorts = {
  s3: 29000,
  nfs: 22049,
  metrics: 29090,
  data: 29100,
  advisory: 29101,
  raft: 29300,
};

/** `kiseki admin` with the role's own permissions, against `n`'s operator endpoint. */
async function admin(n: Node, args: string[]) {
  const env = { KISEKI_DATA_DIR: n.dir, KISEKI_METRICS_ADDR: `${n.host}:${PORTS.metrics}` };
  return await run(Deno.execPath(), [
    "run",
    "--quiet",
    ...flagsFor("admin", env),
    `${ROOT}${ROLE_TABLE.admin.entry}`,
    ...args,
  ], { env });
}

interface NodesAnswer {
  nodes: { id: number; state: string; evacuatedBy?: number[]; waitingFor?: number[] }[];
}

async function nodes(n: Node): Promise<NodesAnswer> {
  const r = await admin(n, ["node", "list", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as NodesAnswer;
}

Deno.test({
  name:
    "cluster: a fourth node joins and takes its share, a drained node gives up every fragment and is removed, nothing is lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-members-" });
    // Four configured nodes; the fourth starts later (three of four voters keep quorum).
    const all = cluster(221, [1, 2, 3, 4], PORTS);
    const [n1, n2, n3, n4] = all as [Node, Node, Node, Node];
    const objects = new Objects(work, "members");
    try {
      await Promise.all([n1, n2, n3].map((n) => start(n, work)));
      await objects.init(n1);
      // Objects of a few chunks each, through two writers (each indexes its own chunks).
      const some = (prefix: string, count: number, size: number, seed: number) =>
        Array.from({ length: count }, (_, i) => ({
          key: `${prefix}${i}`,
          bytes: pattern(size + i, seed + i),
        }));
      await objects.put(n1, some("a", 4, 300 * KiB, 1));
      await objects.put(n2, some("b", 2, 200 * KiB, 9));

      await start(n4, work);
      const joinedAt = Date.now();
      // Node 4 joins through the cluster state; node 1's rebalance moves fragments onto it.
      const moved = await pollUntil(
        "node 4 recorded up and fragments moved onto it",
        async () => {
          const v = await view(n1);
          const state = (await nodes(n1)).nodes.find((x) => x.id === 4)?.state;
          const moved = await metric(
            n1,
            "kiseki_chunk_moved_fragments_total",
            'reason="rebalance"',
          );
          return state === "up" && moved > 0 && v.chunks.rebalance?.state === "idle" ? moved : null;
        },
        SETTLE_MS,
        500,
      );
      const sweep = (await view(n1)).chunks.rebalance!;
      console.log(
        `node 4 joined: node 1 moved ${moved} of ${3 * sweep.total} fragments of its ` +
          `${sweep.total} chunks within ${((Date.now() - joinedAt) / 1000).toFixed(1)} s`,
      );
      await objects.readAll(n4);

      // 4 nodes, 3 copies: a drain leaves 3 and chunks still survive two node losses.
      const drain = await admin(n1, ["node", "drain", "--id", "2", "--wait"]);
      assert.equal(drain.code, 0, drain.stderr);
      assert.match(drain.stderr, /node 2 draining \[#+\] 100%/, "a progress bar to the end");
      const drained = (await nodes(n3)).nodes.find((x) => x.id === 2)!;
      assert.equal(drained.state, "draining");
      assert.deepEqual(drained.waitingFor, []);
      assert.deepEqual(drained.evacuatedBy, [1, 2, 3, 4]);
      // With node 2 out, a second drain would leave two nodes for three copies: refused.
      const refused = await admin(n3, ["node", "drain", "--id", "4"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /refused: draining node 4 would leave 2 node\(s\)/);
      // The cluster view and `kiseki admin status` show the drain done, on any node.
      assert.deepEqual((await view(n4)).nodes.find((x) => x.id === 2)!.drain, {
        evacuatedBy: [1, 2, 3, 4],
        waitingFor: [],
      });
      const during = await admin(n3, ["status"]);
      assert.equal(during.code, 0, during.stderr);
      assert.match(during.stdout, /\n2 +\S+ +draining \[#{10}\] 100% \(4\/4\) nodes moved off/);
      const removed = await admin(n4, ["node", "remove", "--id", "2"]);
      assert.equal(removed.code, 0, removed.stderr);
      assert.equal((await nodes(n1)).nodes.find((x) => x.id === 2)!.state, "removed");

      // Node 2's process goes away: every object still reads back, through every node left.
      await n2.role!.stop("SIGKILL");
      n2.role = null;
      for (const n of [n1, n3, n4]) await objects.readAll(n);
      await objects.readAllBoto3(n3);
      // And writes go on over the remaining three.
      await objects.put(n4, [{ key: "after-drain", bytes: pattern(150 * KiB, 77) }]);
      await objects.readAllBoto3(n1);
      const status = await admin(n1, ["status"]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, /\n2 +\S+ +removed/);
    } catch (e) {
      for (const n of all) {
        if (n.role !== null) console.error(`--- node ${n.id}\n${n.role.stderr().slice(-3000)}`);
      }
      throw e;
    } finally {
      await stopAll(all, work);
    }
  },
});

Deno.test({
  name:
    "cluster: a node away past KISEKI_NODE_DOWN_GRACE is recorded down, its fragments are rebuilt from the survivors, and it is up again when it returns",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-down-" });
    const all = cluster(222, [1, 2, 3], PORTS, { KISEKI_NODE_DOWN_GRACE: "4s" });
    const [n1, n2, n3] = all as [Node, Node, Node];
    const objects = new Objects(work, "down");
    try {
      await Promise.all(all.map((n) => start(n, work)));
      await objects.init(n1);
      await objects.put(
        n1,
        Array.from(
          { length: 4 },
          (_, i) => ({ key: `o${i}`, bytes: pattern(250 * KiB + i, i + 3) }),
        ),
      );
      // Full redundancy first (a write racing a peer's first answer may land degraded and be
      // repaired in the background).
      await pollUntil(
        "no degraded chunks",
        async () => {
          return (await view(n1)).chunks.degraded === 0 ? true : null;
        },
        SETTLE_MS,
        500,
      );

      const killedAt = Date.now();
      await n3.role!.stop("SIGKILL");
      n3.role = null;
      const downAt = await pollUntil(
        "node 3 recorded down",
        async () => {
          const v = await view(n1);
          return v.nodes.find((x) => x.id === 3)?.state === "down" ? Date.now() : null;
        },
        SETTLE_MS,
        200,
      );
      assert.ok(downAt - killedAt >= 4_000, "not before the grace period");
      // Every writer rebuilds the fragments that were on node 3 from the survivors.
      const rebuilt = await pollUntil(
        "fragments off node 3 rebuilt",
        async () => {
          const moved = await metric(n1, "kiseki_chunk_moved_fragments_total", 'reason="evacuate"');
          const v = await view(n1);
          return moved > 0 && v.chunks.degraded === 0 && v.chunks.repairing === 0 ? moved : null;
        },
        SETTLE_MS,
        500,
      );
      console.log(
        `node 3 recorded down ${((downAt - killedAt) / 1000).toFixed(1)} s after the kill ` +
          `(grace 4 s); node 1 rebuilt ${rebuilt} fragments ` +
          `${((Date.now() - downAt) / 1000).toFixed(1)} s later`,
      );
      for (const n of [n1, n2]) await objects.readAll(n);
      await objects.readAllBoto3(n2);

      // Node 3 returns: recorded up again, it serves every object, and writes use it again.
      await start(n3, work);
      await pollUntil(
        "node 3 recorded up",
        async () => {
          const state = (await nodes(n2)).nodes.find((x) => x.id === 3)?.state;
          // Recorded up, and shown so: reachable from node 2.
          const shown = (await view(n2)).nodes.find((x) => x.id === 3)?.state;
          return state === "up" && shown === "reachable" ? true : null;
        },
        SETTLE_MS,
        200,
      );
      await objects.put(n3, [{ key: "after-return", bytes: pattern(100 * KiB, 5) }]);
      await objects.readAll(n3);
      await objects.readAllBoto3(n1);
    } catch (e) {
      for (const n of all) {
        if (n.role !== null) console.error(`--- node ${n.id}\n${n.role.stderr().slice(-3000)}`);
      }
      throw e;
    } finally {
      await stopAll(all, work);
    }
  },
});
