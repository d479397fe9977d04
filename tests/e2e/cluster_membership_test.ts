// Cluster membership with real `kiseki server` processes on loopback, driven by aws-cli and
// boto3: a fourth node joins a running three-node cluster and fragments rebalance onto it;
// `kiseki admin node drain` moves every fragment off a node (a drain that would lower the
// node losses chunks survive is refused), `node remove` takes it out once every node has
// reported it evacuated; and a node killed past KISEKI_NODE_DOWN_GRACE is recorded down,
// its fragments rebuilt from the survivors, and recorded up again when it returns. Every
// object reads back byte-exact through every live node.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ClusterView } from "../../mod/admin/mod.ts";
import { ROLE_TABLE } from "../../mod/role/mod.ts";
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
const PYTHON = "/usr/bin/python3";
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };
const KiB = 1024;
/** Room for start-up on a loaded shared machine. */
const READY_MS = 90_000;
/** Room for a rebalance, a drain or a rebuild (passes every few seconds, rate-limited). */
const SETTLE_MS = 90_000;

interface Node {
  id: number;
  host: string;
  dir: string;
  env: Record<string, string>;
  role: RunningRole | null;
}

function cluster(octet: number, ids: number[], extra: Record<string, string> = {}): Node[] {
  const peers = ids.map((id) => `${id}=127.0.${octet}.${id}:${PORTS.raft}`).join(",");
  return ids.map((id) => {
    const host = `127.0.${octet}.${id}`;
    const on = (port: number) => `${host}:${port}`;
    return {
      id,
      host,
      dir: "",
      role: null,
      env: {
        KISEKI_NODE_ID: String(id),
        KISEKI_RAFT_PEERS: peers,
        KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
        // Membership and chunk movement, not authentication: plain TCP on loopback, said so.
        KISEKI_ALLOW_INSECURE: "true",
        KISEKI_RAFT_ADDR: on(PORTS.raft),
        KISEKI_DATA_ADDR: on(PORTS.data),
        KISEKI_METRICS_ADDR: on(PORTS.metrics),
        KISEKI_S3_ADDR: on(PORTS.s3),
        KISEKI_NFS_ADDR: on(PORTS.nfs),
        KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
        KISEKI_RAFT_TICK_MS: "50",
        KISEKI_SHARDS: "2",
        KISEKI_POOLS: JSON.stringify({ devices: 2, deviceSize: "128MiB", segmentSize: "4MiB" }),
        ...extra,
      },
    };
  });
}

async function start(n: Node, work: string): Promise<void> {
  n.dir = `${work}/n${n.id}`;
  n.role = startRole("server", { ...n.env, KISEKI_DATA_DIR: n.dir });
  try {
    const exited = n.role.exited.then((code) => {
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

async function metric(n: Node, name: string, label = ""): Promise<number> {
  const text = await (await fetch(`http://${n.host}:${PORTS.metrics}/metrics`)).text();
  return text.split("\n")
    .filter((l) => l.startsWith(`${name}{`) && l.includes(label))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

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

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}

/** Objects written and read through the nodes by aws-cli (and boto3 for reads). */
class Objects {
  readonly written: { key: string; bytes: Uint8Array }[] = [];
  #credentials = "";
  constructor(readonly work: string, readonly bucket: string) {}

  async init(first: Node): Promise<void> {
    this.#credentials = `${first.dir}.s3-credentials`;
    await readS3Credentials(this.#credentials);
    await this.aws(first, "s3", "mb", `s3://${this.bucket}`);
  }

  async aws(n: Node, ...args: string[]): Promise<string> {
    const r = await run(AWS, ["--endpoint-url", `http://${n.host}:${PORTS.s3}`, ...args], {
      env: {
        AWS_SHARED_CREDENTIALS_FILE: this.#credentials,
        AWS_CONFIG_FILE: "/dev/null",
        AWS_DEFAULT_REGION: "us-east-1",
      },
    });
    assert.equal(r.code, 0, `aws ${args.join(" ")} on node ${n.id}: ${r.stderr}`);
    return r.stdout;
  }

  /**
   * Writes the objects through `n` in one aws-cli run (each run costs seconds to start). A
   * run refused with 503 SlowDown (an election in a cluster that just started, past the
   * gateway's own retries and aws-cli's) is run again, twice at most, and says so.
   */
  async put(n: Node, objects: { key: string; bytes: Uint8Array }[]): Promise<void> {
    const dir = await Deno.makeTempDir({ dir: this.work, prefix: "up-" });
    for (const o of objects) await Deno.writeFile(`${dir}/${o.key}`, o.bytes);
    const args = ["s3", "cp", "--only-show-errors", "--recursive", dir, `s3://${this.bucket}/`];
    for (let attempt = 0;; attempt++) {
      const r = await run(AWS, ["--endpoint-url", `http://${n.host}:${PORTS.s3}`, ...args], {
        env: {
          AWS_SHARED_CREDENTIALS_FILE: this.#credentials,
          AWS_CONFIG_FILE: "/dev/null",
          AWS_DEFAULT_REGION: "us-east-1",
        },
      });
      if (r.code === 0) break;
      assert.ok(
        attempt < 2 && /SlowDown|503/.test(r.stderr),
        `aws s3 cp on node ${n.id}: ${r.stderr}`,
      );
      console.log(`aws s3 cp on node ${n.id} refused (${r.stderr.trim()}), run again`);
    }
    this.written.push(...objects);
    await Deno.remove(dir, { recursive: true });
  }

  /** Every object through `n` with aws-cli (one run), byte-exact. */
  async readAll(n: Node): Promise<void> {
    const dir = await Deno.makeTempDir({ dir: this.work, prefix: `back-${n.id}-` });
    await this.aws(n, "s3", "cp", "--only-show-errors", "--recursive", `s3://${this.bucket}/`, dir);
    for (const o of this.written) {
      assert.deepEqual(await Deno.readFile(`${dir}/${o.key}`), o.bytes, `${o.key} via ${n.id}`);
    }
    await Deno.remove(dir, { recursive: true });
  }

  /** Every object through `n` with boto3: SHA-256 of what it read, against what was written. */
  async readAllBoto3(n: Node): Promise<void> {
    const { accessKeyId, secretAccessKey } = await readS3Credentials(this.#credentials);
    const script = `
import boto3, hashlib, json, sys
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
    aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
out = {}
for key in json.loads(sys.argv[5]):
    out[key] = hashlib.sha256(s3.get_object(Bucket=sys.argv[4], Key=key)["Body"].read()).hexdigest()
print(json.dumps(out))
`;
    const r = await run(PYTHON, [
      "-c",
      script,
      `http://${n.host}:${PORTS.s3}`,
      accessKeyId,
      secretAccessKey,
      this.bucket,
      JSON.stringify(this.written.map((o) => o.key)),
    ]);
    assert.equal(r.code, 0, `boto3 on node ${n.id}: ${r.stderr}`);
    const got = JSON.parse(r.stdout) as Record<string, string>;
    for (const o of this.written) {
      const want = createHash("sha256").update(o.bytes).digest("hex");
      assert.equal(got[o.key], want, `${o.key} through node ${n.id} (boto3)`);
    }
  }
}

async function stopAll(list: Node[], work: string): Promise<void> {
  for (const n of list) {
    if (n.role !== null) await n.role.stop("SIGKILL").catch(() => {});
  }
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

Deno.test({
  name:
    "cluster: a fourth node joins and takes its share, a drained node gives up every fragment and is removed, nothing is lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-members-" });
    // Four configured nodes; the fourth starts later (three of four voters keep quorum).
    const all = cluster(221, [1, 2, 3, 4]);
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
    const all = cluster(222, [1, 2, 3], { KISEKI_NODE_DOWN_GRACE: "4s" });
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
