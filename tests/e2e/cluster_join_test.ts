// A node that is not in the members' KISEKI_RAFT_PEERS joins a running three-node cluster
// with real `kiseki server` processes on loopback: started with the three as its peers, it
// is added by `kiseki admin node add` as a learner of every Raft group, promoted to voter
// once caught up, and then serves every object written before and after. A drained node is
// then removed: it leaves every group, and the cluster keeps serving with it killed.

import assert from "node:assert/strict";
import type { ClusterView } from "../../mod/admin/mod.ts";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
import { CLIENT_SERVICE, createGrpcClient } from "../../mod/transport/mod.ts";
import {
  flagsFor,
  pollUntil,
  readS3Credentials,
  ROOT,
  run,
  type RunningRole,
  startRole,
  waitForHttp,
} from "./_role.ts";

const AWS = "/usr/bin/aws";
const OCTET = 224;
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };
/** Room for start-up on a loaded shared machine. */
const READY_MS = 90_000;
const SETTLE_MS = 60_000;

interface Node {
  id: number;
  host: string;
  dir: string;
  env: Record<string, string>;
  role: RunningRole | null;
}

/** The data-path nodes a native client is told of by node `n` (ClientService Hello). */
async function clientNodes(n: Node): Promise<string[]> {
  const grpc = createGrpcClient(CLIENT_SERVICE, { host: n.host, port: PORTS.data }, {
    tls: null,
    deadlineMs: 10_000,
  });
  try {
    const hello = await grpc.Hello({});
    return hello.nodes.map((x) => `${x.nodeId}=${x.dataAddr}`);
  } finally {
    grpc.close();
  }
}

const dataAddrs = (ids: number[]) => ids.map((i) => `${i}=127.0.${OCTET}.${i}:${PORTS.data}`);

/** Nodes 1..3 are the members; every node, node 4 included, names only them as peers. */
function node(id: number, work: string): Node {
  const peers = [1, 2, 3].map((p) => `${p}=127.0.${OCTET}.${p}:${PORTS.raft}`).join(",");
  const host = `127.0.${OCTET}.${id}`;
  const on = (port: number) => `${host}:${port}`;
  const dir = `${work}/n${id}`;
  return {
    id,
    host,
    dir,
    role: null,
    env: {
      KISEKI_NODE_ID: String(id),
      KISEKI_RAFT_PEERS: peers,
      KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
      // Nodes added later are on this network: the members' sandboxes may dial them.
      KISEKI_PEER_NETWORKS: `127.0.${OCTET}.0/24`,
      // Membership, not authentication: plain TCP on loopback, said so.
      KISEKI_ALLOW_INSECURE: "true",
      KISEKI_DATA_DIR: dir,
      KISEKI_RAFT_ADDR: on(PORTS.raft),
      KISEKI_DATA_ADDR: on(PORTS.data),
      KISEKI_METRICS_ADDR: on(PORTS.metrics),
      KISEKI_S3_ADDR: on(PORTS.s3),
      KISEKI_NFS_ADDR: on(PORTS.nfs),
      KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
      KISEKI_RAFT_TICK_MS: "50",
      KISEKI_SHARDS: "2",
      KISEKI_POOLS: JSON.stringify({ devices: 2, deviceSize: "128MiB", segmentSize: "4MiB" }),
    },
  };
}

async function healthy(n: Node): Promise<void> {
  try {
    const exited = n.role!.exited.then((code) => {
      throw new Error(`exited with ${code}`);
    });
    await Promise.race([
      waitForHttp(`http://${n.host}:${PORTS.metrics}/health`, "OK", READY_MS),
      exited,
    ]);
  } catch (e) {
    throw new Error(`node ${n.id}: ${(e as Error).message}\n${n.role?.stderr().slice(-4000)}`);
  }
}

async function view(n: Node): Promise<ClusterView> {
  const r = await fetch(`http://${n.host}:${PORTS.metrics}/ui/api/cluster`);
  assert.equal(r.status, 200);
  return await r.json() as ClusterView;
}

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

/** The members of every shard as `n` sees them: "id:role" sorted, per shard. */
async function shardMembers(n: Node): Promise<string[][]> {
  return (await view(n)).shards.map((s) =>
    s.members.map((m) => `${m.id}:${m.role === "learner" ? "learner" : "voter"}`).sort()
  );
}

function bytesOf(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed * 17) & 0xff;
  return out;
}

Deno.test({
  name:
    "cluster: a node outside KISEKI_RAFT_PEERS is added by `kiseki admin node add` (learner, then voter of every group) and serves every object; a drained node is removed from every group",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-join-" });
    const all = [1, 2, 3, 4].map((id) => node(id, work));
    const [n1, n2, n3, n4] = all as [Node, Node, Node, Node];
    const written = new Map<string, Uint8Array>();
    let credentials = "";
    const aws = async (n: Node, ...args: string[]) => {
      for (let attempt = 0;; attempt++) {
        const r = await run(AWS, ["--endpoint-url", `http://${n.host}:${PORTS.s3}`, ...args], {
          env: {
            AWS_SHARED_CREDENTIALS_FILE: credentials,
            AWS_CONFIG_FILE: "/dev/null",
            AWS_DEFAULT_REGION: "us-east-1",
          },
        });
        if (r.code === 0) return r.stdout;
        // An election right after a membership change may refuse a write for a moment.
        assert.ok(attempt < 2 && /SlowDown|503/.test(r.stderr), `aws on ${n.id}: ${r.stderr}`);
        console.log(`aws ${args[1]} on node ${n.id} refused (${r.stderr.trim()}), run again`);
      }
    };
    const put = async (n: Node, key: string, bytes: Uint8Array) => {
      const file = `${work}/${key}`;
      await Deno.writeFile(file, bytes);
      await aws(n, "s3", "cp", "--only-show-errors", file, `s3://join/${key}`);
      written.set(key, bytes);
    };
    const readAll = async (n: Node) => {
      const dir = await Deno.makeTempDir({ dir: work, prefix: `back-${n.id}-` });
      await aws(n, "s3", "cp", "--only-show-errors", "--recursive", "s3://join/", dir);
      for (const [key, bytes] of written) {
        assert.deepEqual(await Deno.readFile(`${dir}/${key}`), bytes, `${key} via ${n.id}`);
      }
    };
    try {
      for (const n of [n1, n2, n3]) n.role = startRole("server", n.env);
      await Promise.all([n1, n2, n3].map(healthy));
      credentials = `${n1.dir}.s3-credentials`;
      await readS3Credentials(credentials);
      await aws(n1, "s3", "mb", "s3://join");
      await put(n1, "before-a", bytesOf(1, 200 * 1024));
      await put(n2, "before-b", bytesOf(2, 5 * 1024));

      // Node 4 starts with the three as its peers: it waits, a member of no group.
      n4.role = startRole("server", n4.env);
      const started = Date.now();
      const add = await admin(n2, [
        "node",
        "add",
        "--id",
        "4",
        "--raft-addr",
        `${n4.host}:${PORTS.raft}`,
      ]);
      assert.equal(add.code, 0, `${add.stderr}\n--- node 4\n${n4.role.stderr().slice(-3000)}`);
      console.log(`node 4 a voter of every group ${(Date.now() - started) / 1000} s after start`);
      // Every node's view: node 4 votes in every shard.
      for (const n of [n1, n2, n3]) {
        for (const members of await shardMembers(n)) {
          assert.deepEqual(members, ["1:voter", "2:voter", "3:voter", "4:voter"]);
        }
      }
      await healthy(n4);
      await readAll(n4);
      await put(n4, "after-add", bytesOf(3, 150 * 1024));
      for (const n of [n1, n3, n4]) await readAll(n);
      // Native clients learn the joined node from any member (none names it in its peers).
      for (const n of [n1, n4]) {
        await pollUntil(`node ${n.id} tells clients of node 4`, async () => {
          const got = await clientNodes(n);
          return got.join() === dataAddrs([1, 2, 3, 4]).join() ? true : null;
        }, SETTLE_MS);
      }

      // Drain node 2, then remove it: it leaves every group.
      const drain = await admin(n1, ["node", "drain", "--id", "2", "--wait"]);
      assert.equal(drain.code, 0, drain.stderr);
      const removed = await admin(n3, ["node", "remove", "--id", "2"]);
      assert.equal(removed.code, 0, removed.stderr);
      for (const n of [n1, n3, n4]) {
        await pollUntil(`node ${n.id} sees node 2 out of every group`, async () => {
          const shards = await shardMembers(n);
          return shards.every((m) => m.join() === "1:voter,3:voter,4:voter") ? true : null;
        }, SETTLE_MS);
      }
      // ...and no longer of the removed one.
      for (const n of [n1, n4]) {
        await pollUntil(`node ${n.id} tells clients of node 2 no more`, async () => {
          const got = await clientNodes(n);
          return got.join() === dataAddrs([1, 3, 4]).join() ? true : null;
        }, SETTLE_MS);
      }
      await n2.role!.stop("SIGKILL");
      n2.role = null;
      await put(n4, "after-remove", bytesOf(4, 100 * 1024));
      for (const n of [n1, n3, n4]) await readAll(n);

      // The joined node keeps its membership through kill -9 and a restart (still named by
      // no one's KISEKI_RAFT_PEERS): a voter of every group, serving every object.
      await n4.role!.stop("SIGKILL");
      n4.role = startRole("server", n4.env);
      await healthy(n4);
      for (const members of await shardMembers(n4)) {
        assert.deepEqual(members, ["1:voter", "3:voter", "4:voter"]);
      }
      await readAll(n4);
    } catch (e) {
      for (const n of all) {
        if (n.role !== null) console.error(`--- node ${n.id}\n${n.role.stderr().slice(-3000)}`);
      }
      throw e;
    } finally {
      for (const n of all) if (n.role !== null) await n.role.stop("SIGKILL").catch(() => {});
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
