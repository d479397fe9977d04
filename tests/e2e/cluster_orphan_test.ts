// Chunks whose writer is gone for good, with real `kiseki server` processes on loopback: node
// 1 writes objects through aws-cli; those deleted through node 2 give their space back (the
// references are dropped on node 1); then node 1 is killed and recorded down past
// KISEKI_NODE_DOWN_GRACE, the survivors find its chunks from the fragments they hold, one
// adopts each, and the repairer rebuilds node 1's fragments on them. Nothing stays degraded,
// and every object reads back byte-exact through the others (aws-cli and boto3).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ClusterView } from "../../mod/admin/mod.ts";
import {
  pollUntil,
  readS3Credentials,
  run,
  type RunningRole,
  startRole,
  waitForHttp,
} from "./_role.ts";

const AWS = "/usr/bin/aws";
const PYTHON = "/usr/bin/python3";
const PORTS = { s3: 29500, nfs: 22549, metrics: 29590, data: 29600, advisory: 29601, raft: 29800 };
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
    "cluster: the chunks of a writer killed for good return to full redundancy on the survivors and read back through them",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-orphan-" });
    const all = cluster(227, [1, 2, 3], { KISEKI_NODE_DOWN_GRACE: "4s" });
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
      const live = async () => {
        let sum = 0;
        for (const n of all) sum += await metric(n, "kiseki_pool_live_bytes");
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
