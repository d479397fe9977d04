// Chunks whose writer is gone for good, with real `kiseki server` processes on loopback: node
// 1 writes objects through aws-cli; those deleted through node 2 give their space back (the
// references are dropped on node 1); then node 1 is killed and recorded down past
// KISEKI_NODE_DOWN_GRACE, the survivors find its chunks from the fragments they hold, one
// adopts each, and the repairer rebuilds node 1's fragments on them. Nothing stays degraded,
// and every object reads back byte-exact through the others (aws-cli and boto3); objects
// deleted through node 2 afterwards go, and the others still read back.

import assert from "node:assert/strict";
import { pollUntil } from "./_role.ts";
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
  s3: 29500,
  nfs: 22549,
  metrics: 29590,
  data: 29600,
  advisory: 29601,
  raft: 29800,
};

Deno.test({
  name:
    "cluster: the chunks of a writer killed for good return to full redundancy on the survivors and read back through them",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-orphan-" });
    const all = cluster(227, [1, 2, 3], PORTS, { KISEKI_NODE_DOWN_GRACE: "4s" });
    const [n1, n2, n3] = all as [Node, Node, Node];
    const survivors = [n2, n3];
    const objects = new Objects(work, "orphans");
    try {
      await Promise.all(all.map((n) => start(n, work)));
      await objects.init(n1);
      await objects.put(
        n1,
        Array.from(
          { length: 4 },
          (_, i) => ({ key: `o${i}`, bytes: pattern(300 * KiB + i, i + 11) }),
        ),
      );
      await pollUntil(
        "no degraded chunks",
        async () => ((await view(n1)).chunks.degraded === 0 ? true : null),
        SETTLE_MS,
        500,
      );
      // A delete through a node that did not write the objects gives their space back: the
      // references are dropped on their writer, node 1, whose GC releases every fragment.
      const doomed = Array.from({ length: 3 }, (_, i) => ({
        key: `d${i}`,
        bytes: pattern(400 * KiB + i, i + 40),
      }));
      await objects.put(n1, doomed);
      const live = async (nodes: readonly Node[] = all) => {
        let sum = 0;
        for (const n of nodes) sum += await metric(n, "kiseki_pool_live_bytes");
        return sum;
      };
      const before = await live();
      await objects.aws(
        n2,
        "s3",
        "rm",
        "--recursive",
        "--exclude",
        "*",
        "--include",
        "d*",
        "s3://orphans/",
      );
      objects.written.splice(
        0,
        objects.written.length,
        ...objects.written.filter((o) => !o.key.startsWith("d")),
      );
      const deletedBytes = doomed.reduce((sum, o) => sum + o.bytes.length, 0);
      const after = await pollUntil(
        "the space of the objects deleted through node 2 given back",
        async () => {
          const now = await live();
          // Three copies each: at least two copies' worth must be gone.
          return before - now >= 2 * deletedBytes ? now : null;
        },
        SETTLE_MS,
        500,
      );
      console.log(
        `deleted ${deletedBytes} bytes through node 2: live fragment bytes ${before} -> ${after}`,
      );
      // Node 1 wrote every chunk: the others index none of them.
      for (const n of survivors) assert.equal(await metric(n, "kiseki_chunk_adopted_total"), 0);

      const killedAt = Date.now();
      await n1.role!.stop("SIGKILL");
      n1.role = null;
      const downAt = await pollUntil(
        "node 1 recorded down",
        async () => {
          const v = await view(n2);
          return v.nodes.find((x) => x.id === 1)?.state === "down" ? Date.now() : null;
        },
        SETTLE_MS,
        200,
      );
      // The survivors adopt node 1's chunks and rebuild its fragments on themselves.
      const adopted = await pollUntil(
        "node 1's chunks adopted and repaired",
        async () => {
          let adopted = 0;
          for (const n of survivors) {
            const v = await view(n);
            if (v.chunks.degraded !== 0 || v.chunks.repairing !== 0) return null;
            adopted += await metric(n, "kiseki_chunk_adopted_total");
          }
          const repaired = await Promise.all(
            survivors.map((n) => metric(n, "kiseki_chunk_repaired_total")),
          );
          return adopted > 0 && repaired.reduce((a, b) => a + b, 0) >= adopted ? adopted : null;
        },
        SETTLE_MS,
        500,
      );
      console.log(
        `node 1 recorded down ${((downAt - killedAt) / 1000).toFixed(1)} s after the kill; ` +
          `the survivors adopted and repaired its ${adopted} chunks ` +
          `${((Date.now() - downAt) / 1000).toFixed(1)} s later`,
      );
      for (const n of survivors) await objects.readAll(n);
      await objects.readAllBoto3(n3);

      // Deletes through node 2 of objects whose chunks were adopted succeed and lose nothing:
      // the adopter keeps those chunks (node 1's reference counts went with it, and a count
      // rebuilt from the views could fall short, see ClusterChunkStore #dropRef()), so their
      // space stays taken; the objects left read back byte-exact through both survivors.
      const adoptedBefore = await live(survivors);
      const gone = objects.written.slice(0, 2);
      for (const o of gone) await objects.aws(n2, "s3", "rm", `s3://orphans/${o.key}`);
      objects.written.splice(0, gone.length);
      const listed = await objects.aws(n3, "s3api", "list-objects-v2", "--bucket", "orphans");
      for (const o of gone) assert.ok(!listed.includes(`"${o.key}"`), `${o.key} deleted`);
      assert.equal(objects.written.length, 2);
      for (const n of survivors) await objects.readAll(n);
      await objects.readAllBoto3(n3);
      for (const n of survivors) {
        const v = await view(n);
        assert.equal(v.chunks.degraded, 0, `node ${n.id}: nothing degraded after the deletes`);
      }
      console.log(
        `deleted ${gone.reduce((sum, o) => sum + o.bytes.length, 0)} bytes of adopted ` +
          `objects through node 2: live fragment bytes ${adoptedBefore} -> ${await live(
            survivors,
          )} ` +
          `(adopted chunks are retained)`,
      );
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
