// A five-node cluster of real `kiseki server` processes, each in a network namespace of its
// own on one bridge, driven by aws-cli and boto3 against every node: objects written through
// one node read back byte-exact through all five; the metadata leader cut off from its
// peers (its bridge port down, its client link up) acknowledges no PUT, while the other
// four elect a leader and take PUTs; after healing, every acknowledged object reads back
// through every node, the cut-off node included, and nothing it was asked to write exists.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ClusterView } from "../../mod/admin/mod.ts";
import { pollUntil, readS3Credentials, run, type RunningRole, startRole } from "./_role.ts";

const AWS = "/usr/bin/aws";
const PYTHON = "/usr/bin/python3";
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };
const IDS = [1, 2, 3, 4, 5];
const READY_MS = 120_000;
const ELECTION_MS = 30_000;

const IP = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}) ?? "ip";
const NS_PREFIX = "ksf-";
const NS_BRIDGE = `${NS_PREFIX}br`;
const nodeNs = (id: number) => `${NS_PREFIX}n${id}`;
const bridgePort = (id: number) => `${NS_PREFIX}r${id}b`;
const clientHost = (id: number) => `10.216.${id}.1`;
const raftHost = (id: number) => `10.215.0.${id}`;

async function ip(...args: string[]): Promise<void> {
  const r = await run(IP, args);
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim()}`);
}

/** Removes what an earlier (crashed) run of this test left: its processes and namespaces. */
async function removeNetwork(): Promise<void> {
  const listed = await run(IP, ["netns", "list"]);
  const ours = [NS_BRIDGE, ...IDS.map(nodeNs)];
  for (const line of listed.stdout.split("\n")) {
    const ns = line.split(" ")[0] ?? "";
    if (!ours.includes(ns)) continue;
    // Only this test starts processes in these namespaces.
    const pids = await run(IP, ["netns", "pids", ns]);
    for (const pid of pids.stdout.split("\n").map(Number).filter((p) => p > 0)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await run(IP, ["netns", "del", ns]);
  }
  for (const id of IDS) await run(IP, ["link", "del", `${NS_PREFIX}c${id}`]);
}

/**
 * Five node namespaces on a bridge (the cluster network, 10.215.0.0/24) and a client link
 * from the root namespace to each (10.216.<id>.0/24), so a node cut off from its peers can
 * still be asked to write (see cluster_test.ts for the same layout with three nodes).
 */
async function createNetwork(): Promise<void> {
  await ip("netns", "add", NS_BRIDGE);
  await ip("-n", NS_BRIDGE, "link", "set", "lo", "up");
  await ip("-n", NS_BRIDGE, "link", "add", "br0", "type", "bridge");
  await ip("-n", NS_BRIDGE, "link", "set", "br0", "up");
  for (const id of IDS) {
    const ns = nodeNs(id);
    await ip("netns", "add", ns);
    await ip("-n", ns, "link", "set", "lo", "up");
    const raftIf = `${NS_PREFIX}r${id}`;
    await ip("-n", ns, "link", "add", raftIf, "type", "veth", "peer", "name", bridgePort(id));
    await ip("-n", ns, "link", "set", bridgePort(id), "netns", NS_BRIDGE);
    await ip("-n", NS_BRIDGE, "link", "set", bridgePort(id), "master", "br0", "up");
    await ip("-n", ns, "addr", "add", `${raftHost(id)}/24`, "dev", raftIf);
    await ip("-n", ns, "link", "set", raftIf, "up");
    const rootIf = `${NS_PREFIX}c${id}`;
    await ip("link", "add", rootIf, "type", "veth", "peer", "name", `${rootIf}n`);
    await ip("link", "set", `${rootIf}n`, "netns", ns);
    await ip("addr", "add", `10.216.${id}.254/24`, "dev", rootIf);
    await ip("link", "set", rootIf, "up");
    await ip("-n", ns, "addr", "add", `${clientHost(id)}/24`, "dev", `${rootIf}n`);
    await ip("-n", ns, "link", "set", `${rootIf}n`, "up");
  }
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

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

// boto3: reads a JSON job from argv[1], prints a JSON answer. No retries: an answer is the
// server's, not the client's second try.
const BOTO3 = `
import hashlib, json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError, EndpointConnectionError
job = json.loads(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=job["endpoint"], region_name="us-east-1",
    aws_access_key_id=job["key"], aws_secret_access_key=job["secret"],
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                  retries={"max_attempts": 1, "mode": "standard"},
                  connect_timeout=5, read_timeout=job.get("timeout", 60)))
out = {}
if job["op"] == "get":
    for key in job["keys"]:
        try:
            body = s3.get_object(Bucket=job["bucket"], Key=key)["Body"].read()
            out[key] = hashlib.sha256(body).hexdigest()
        except ClientError as e:
            out[key] = "error:" + e.response["Error"]["Code"]
elif job["op"] == "put":
    try:
        with open(job["file"], "rb") as f:
            s3.put_object(Bucket=job["bucket"], Key=job["name"], Body=f.read())
        out["result"] = "acknowledged"
    except ClientError as e:
        out["result"] = "error:" + e.response["Error"]["Code"]
    except (ReadTimeoutError, EndpointConnectionError) as e:
        out["result"] = "timeout"
print(json.dumps(out))
`;

Deno.test({
  name:
    "cluster: five nodes in namespaces serve every object through every node (aws-cli, boto3); a partitioned leader acknowledges nothing while the majority writes on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await removeNetwork();
    const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-five-" });
    const roles = new Map<number, RunningRole>();
    const peers = IDS.map((id) => `${id}=${raftHost(id)}:${PORTS.raft}`).join(",");
    try {
      await createNetwork();
      for (const id of IDS) {
        const on = (port: number) => `${clientHost(id)}:${port}`;
        roles.set(
          id,
          startRole(
            "server",
            {
              KISEKI_NODE_ID: String(id),
              KISEKI_RAFT_PEERS: peers,
              KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
              // Partitions, not authentication: plain TCP between namespaces, said so.
              KISEKI_ALLOW_INSECURE: "true",
              KISEKI_RAFT_ADDR: `${raftHost(id)}:${PORTS.raft}`,
              KISEKI_DATA_ADDR: on(PORTS.data),
              KISEKI_METRICS_ADDR: on(PORTS.metrics),
              KISEKI_S3_ADDR: on(PORTS.s3),
              KISEKI_NFS_ADDR: on(PORTS.nfs),
              KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
              KISEKI_DATA_DIR: `${work}/n${id}`,
              KISEKI_RAFT_TICK_MS: "50",
              KISEKI_SHARDS: "1",
              KISEKI_POOLS: JSON.stringify({
                devices: 2,
                deviceSize: "128MiB",
                segmentSize: "4MiB",
              }),
            },
            [],
            { prefix: [IP, "netns", "exec", nodeNs(id)] },
          ),
        );
      }
      const view = async (id: number) => {
        const r = await fetch(`http://${clientHost(id)}:${PORTS.metrics}/ui/api/cluster`, {
          signal: AbortSignal.timeout(5000),
        });
        assert.equal(r.status, 200);
        return await r.json() as ClusterView;
      };
      await Promise.all(IDS.map((id) =>
        pollUntil(
          `node ${id} ready`,
          async () => {
            const r = await fetch(`http://${clientHost(id)}:${PORTS.metrics}/health`, {
              signal: AbortSignal.timeout(2000),
            });
            return (await r.text()).trim() === "OK" ? true : null;
          },
          READY_MS,
          300,
        )
      ));
      const credentials = `${work}/n1.s3-credentials`;
      const { accessKeyId, secretAccessKey } = await readS3Credentials(credentials);
      const aws = async (id: number, ...args: string[]) => {
        const r = await run(AWS, [
          "--endpoint-url",
          `http://${clientHost(id)}:${PORTS.s3}`,
          ...args,
        ], {
          env: {
            AWS_SHARED_CREDENTIALS_FILE: credentials,
            AWS_CONFIG_FILE: "/dev/null",
            AWS_DEFAULT_REGION: "us-east-1",
          },
        });
        return r;
      };
      const boto3 = async (id: number, job: Record<string, unknown>) => {
        const r = await run(PYTHON, [
          "-c",
          BOTO3,
          JSON.stringify({
            endpoint: `http://${clientHost(id)}:${PORTS.s3}`,
            key: accessKeyId,
            secret: secretAccessKey,
            bucket: "five",
            ...job,
          }),
        ]);
        assert.equal(r.code, 0, `boto3 on node ${id}: ${r.stderr}`);
        return JSON.parse(r.stdout) as Record<string, string>;
      };
      const written = new Map<string, Uint8Array>();
      const putDir = async (id: number, objects: [string, Uint8Array][]) => {
        const dir = await Deno.makeTempDir({ dir: work, prefix: "up-" });
        for (const [key, bytes] of objects) await Deno.writeFile(`${dir}/${key}`, bytes);
        const r = await aws(id, "s3", "cp", "--only-show-errors", "--recursive", dir, "s3://five/");
        assert.equal(r.code, 0, `aws s3 cp on node ${id}: ${r.stderr}`);
        for (const [key, bytes] of objects) written.set(key, bytes);
      };
      /** Every acknowledged object through node `id` with boto3, byte-exact by SHA-256. */
      const readAll = async (id: number) => {
        const got = await boto3(id, { op: "get", keys: [...written.keys()] });
        for (const [key, bytes] of written) {
          assert.equal(got[key], sha256(bytes), `${key} through node ${id}`);
        }
      };

      const mb = await aws(3, "s3", "mb", "s3://five");
      assert.equal(mb.code, 0, mb.stderr);
      // Written through node 3 (chunked and inline objects), read through all five.
      await putDir(3, [
        ["big-1", pattern(400 * 1024, 1)],
        ["big-2", pattern(250 * 1024 + 7, 2)],
        ["small-1", pattern(900, 3)],
      ]);
      for (const id of IDS) await readAll(id);
      // aws-cli on node 5 sees the listing node 3 made.
      const listing = await aws(5, "s3", "ls", "s3://five/");
      assert.equal(listing.code, 0, listing.stderr);
      for (const key of written.keys()) assert.match(listing.stdout, new RegExp(` ${key}\n`));

      // Cut off the leader of the data shard from its peers.
      const leader = (await view(1)).shards[0]!.leader;
      assert.ok(IDS.includes(leader), `a leader (${leader})`);
      const majority = IDS.filter((id) => id !== leader);
      await ip("-n", NS_BRIDGE, "link", "set", bridgePort(leader), "down");
      // Asked to write, the cut-off node acknowledges nothing (small: inline in the log;
      // large: its chunks need other nodes too).
      const attempts: string[] = [];
      for (
        const [name, bytes] of [["cut-small", pattern(700, 8)], [
          "cut-big",
          pattern(200 * 1024, 9),
        ]] as const
      ) {
        const file = `${work}/${name}`;
        await Deno.writeFile(file, bytes);
        const r = await boto3(leader, { op: "put", name, file, timeout: 30 });
        attempts.push(`${name}: ${r.result}`);
        assert.notEqual(r.result, "acknowledged", `node ${leader}, cut off, acknowledged ${name}`);
      }
      console.log(`cut-off node ${leader} answered ${attempts.join(", ")}`);
      // The four others elect a leader and take PUTs (aws-cli retries through the election).
      const elected = await pollUntil(
        "a new leader among the four",
        async () => {
          const v = await view(majority[0]!);
          const l = v.shards[0]!.leader;
          return majority.includes(l) ? l : null;
        },
        ELECTION_MS,
        300,
      );
      await putDir(majority[majority.length - 1]!, [["during-1", pattern(300 * 1024, 10)], [
        "during-2",
        pattern(1200, 11),
      ]]);
      console.log(`node ${elected} leads the four while node ${leader} is cut off`);
      for (const id of majority) await readAll(id);

      // Healed: the old leader follows, serves everything acknowledged, and nothing it was
      // asked to write while cut off exists anywhere.
      await ip("-n", NS_BRIDGE, "link", "set", bridgePort(leader), "up");
      await pollUntil(
        `node ${leader} follows again`,
        async () => {
          const got = await boto3(leader, { op: "get", keys: [...written.keys()] });
          return [...written].every(([key, bytes]) => got[key] === sha256(bytes)) ? true : null;
        },
        ELECTION_MS * 2,
        1000,
      );
      for (const id of IDS) {
        const got = await boto3(id, { op: "get", keys: ["cut-small", "cut-big"] });
        assert.deepEqual(got, { "cut-small": "error:NoSuchKey", "cut-big": "error:NoSuchKey" });
      }
      await readAll(leader);
    } catch (e) {
      for (const [id, role] of roles) {
        console.error(`--- node ${id}\n${role.stderr().slice(-3000)}`);
      }
      throw e;
    } finally {
      for (const role of roles.values()) await role.stop("SIGKILL").catch(() => {});
      await removeNetwork();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
