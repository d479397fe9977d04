// Real `kiseki server` processes on loopback for the cluster tests: a cluster of nodes on
// 127.0.<octet>.<id> (one test file, one octet), each started with the role table's flags and
// waited for, and objects written and read through any node with aws-cli and boto3.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ClusterView } from "../../mod/admin/mod.ts";
import { readS3Credentials, run, type RunningRole, startRole, waitForHttp } from "./_role.ts";

export const AWS: string = "/usr/bin/aws";
export const PYTHON: string = "/usr/bin/python3";
export const KiB = 1024;
/** Room for start-up on a loaded shared machine. */
export const READY_MS = 90_000;
/** Room for a rebalance, a drain or a rebuild (passes every few seconds, rate-limited). */
export const SETTLE_MS = 90_000;

/** The ports every node of one test's cluster listens on (each node on its own 127.0.x.y). */
export interface ClusterPorts {
  s3: number;
  nfs: number;
  metrics: number;
  data: number;
  advisory: number;
  raft: number;
}

export interface Node {
  id: number;
  host: string;
  ports: ClusterPorts;
  dir: string;
  env: Record<string, string>;
  role: RunningRole | null;
}

export function cluster(
  octet: number,
  ids: number[],
  ports: ClusterPorts,
  extra: Record<string, string> = {},
): Node[] {
  const peers = ids.map((id) => `${id}=127.0.${octet}.${id}:${ports.raft}`).join(",");
  return ids.map((id) => {
    const host = `127.0.${octet}.${id}`;
    const on = (port: number) => `${host}:${port}`;
    return {
      id,
      host,
      ports,
      dir: "",
      role: null,
      env: {
        KISEKI_NODE_ID: String(id),
        KISEKI_RAFT_PEERS: peers,
        KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
        // Membership and chunk movement, not authentication: plain TCP on loopback, said so.
        KISEKI_ALLOW_INSECURE: "true",
        KISEKI_RAFT_ADDR: on(ports.raft),
        KISEKI_DATA_ADDR: on(ports.data),
        KISEKI_METRICS_ADDR: on(ports.metrics),
        KISEKI_S3_ADDR: on(ports.s3),
        KISEKI_NFS_ADDR: on(ports.nfs),
        KISEKI_ADVISORY_ADDR: on(ports.advisory),
        KISEKI_RAFT_TICK_MS: "50",
        KISEKI_SHARDS: "2",
        KISEKI_POOLS: JSON.stringify({ devices: 2, deviceSize: "128MiB", segmentSize: "4MiB" }),
        ...extra,
      },
    };
  });
}

export async function start(n: Node, work: string): Promise<void> {
  n.dir = `${work}/n${n.id}`;
  n.role = startRole("server", { ...n.env, KISEKI_DATA_DIR: n.dir });
  try {
    const exited = n.role.exited.then((code) => {
      throw new Error(`exited with ${code}`);
    });
    await Promise.race([
      waitForHttp(`http://${n.host}:${n.ports.metrics}/health`, "OK", READY_MS),
      exited,
    ]);
  } catch (e) {
    throw new Error(`node ${n.id}: ${(e as Error).message}\n${n.role?.stderr().slice(-4000)}`);
  }
}

export async function view(n: Node): Promise<ClusterView> {
  const r = await fetch(`http://${n.host}:${n.ports.metrics}/ui/api/cluster`);
  assert.equal(r.status, 200);
  return await r.json() as ClusterView;
}

export async function metric(n: Node, name: string, label = ""): Promise<number> {
  const text = await (await fetch(`http://${n.host}:${n.ports.metrics}/metrics`)).text();
  return text.split("\n")
    .filter((l) => l.startsWith(`${name}{`) && l.includes(label))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
}

export function pattern(length: number, seed: number): Uint8Array {
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
export class Objects {
  readonly written: { key: string; bytes: Uint8Array }[] = [];
  #credentials = "";
  constructor(readonly work: string, readonly bucket: string) {}

  async init(first: Node): Promise<void> {
    this.#credentials = `${first.dir}.s3-credentials`;
    await readS3Credentials(this.#credentials);
    await this.aws(first, "s3", "mb", `s3://${this.bucket}`);
  }

  async aws(n: Node, ...args: string[]): Promise<string> {
    const r = await run(AWS, ["--endpoint-url", `http://${n.host}:${n.ports.s3}`, ...args], {
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
      const r = await run(AWS, ["--endpoint-url", `http://${n.host}:${n.ports.s3}`, ...args], {
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
      `http://${n.host}:${n.ports.s3}`,
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

export async function stopAll(list: Node[], work: string): Promise<void> {
  for (const n of list) {
    if (n.role !== null) await n.role.stop("SIGKILL").catch(() => {});
  }
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
