// Chunks across a three-node cluster of real `kiseki server` processes on loopback: objects
// written through node 1 with aws-cli put a copy of every chunk on each node's devices (over
// the chunk fabric on the Raft port); with node 3 killed (-9) they still read back, new
// writes are acknowledged degraded (two copies on distinct nodes, counted by the pools API
// and the metrics), and once node 3 is back the repairer restores the third copy.

import assert from "node:assert/strict";
import { run, type RunningRole, startRole, waitForHttp } from "./_role.ts";

const AWS = "/usr/bin/aws";
const OCTET = 214;
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };
const MiB = 1 << 20;
/** Room for start-up on a loaded machine, and for repair's retry and pass intervals. */
const READY_MS = 90_000;
const REPAIR_MS = 90_000;

interface Node {
  id: number;
  host: string;
  dir: string;
  env: Record<string, string>;
  role: RunningRole | null;
}

function metricsUrl(n: Node): string {
  return `http://${n.host}:${PORTS.metrics}`;
}

async function metric(n: Node, name: string): Promise<number> {
  const text = await (await fetch(`${metricsUrl(n)}/metrics`)).text();
  const line = text.split("\n").find((l) =>
    l.startsWith(`${name}{`) && l.includes('pool="default"')
  );
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1));
}

async function pools(n: Node): Promise<{ degradedChunks?: number; durability: string }[]> {
  const token = (await Deno.readTextFile(`${n.dir}/config/admin-token`)).trim();
  const r = await fetch(`${metricsUrl(n)}/api/v1/pools`, {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(r.status, 200);
  return ((await r.json()) as { pools: { degradedChunks?: number; durability: string }[] }).pools;
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

Deno.test("chunks spread over three server processes, survive a killed node and are repaired", async () => {
  const work = await Deno.makeTempDir({ prefix: "kiseki-e2e-fabric-" });
  const peers = [1, 2, 3].map((id) => `${id}=127.0.${OCTET}.${id}:${PORTS.raft}`).join(",");
  const nodes: Node[] = [];
  for (const id of [1, 2, 3]) {
    const host = `127.0.${OCTET}.${id}`;
    const dir = `${work}/n${id}`;
    const on = (port: number) => `${host}:${port}`;
    nodes.push({
      id,
      host,
      dir,
      role: null,
      env: {
        KISEKI_NODE_ID: String(id),
        KISEKI_RAFT_PEERS: peers,
        KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
        // Chunk placement and repair, not authentication: plain TCP on loopback, said so.
        KISEKI_ALLOW_INSECURE: "true",
        KISEKI_RAFT_ADDR: on(PORTS.raft),
        KISEKI_DATA_ADDR: on(PORTS.data),
        KISEKI_METRICS_ADDR: on(PORTS.metrics),
        KISEKI_S3_ADDR: on(PORTS.s3),
        KISEKI_NFS_ADDR: on(PORTS.nfs),
        KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
        KISEKI_DATA_DIR: dir,
        KISEKI_RAFT_TICK_MS: "50",
        KISEKI_POOLS: JSON.stringify({ devices: 3, deviceSize: "256MiB", segmentSize: "8MiB" }),
      },
    });
  }
  const start = (n: Node) => {
    n.role = startRole("server", n.env);
  };
  const ready = async (n: Node) => {
    try {
      const exited = n.role!.exited.then((code) => {
        throw new Error(`exited with ${code}`);
      });
      await Promise.race([waitForHttp(`${metricsUrl(n)}/health`, "OK", READY_MS), exited]);
    } catch (e) {
      throw new Error(`node ${n.id}: ${(e as Error).message}\n${n.role?.stderr().slice(-4000)}`);
    }
  };
  const [n1, n2, n3] = nodes as [Node, Node, Node];
  const endpoint = `http://${n1.host}:${PORTS.s3}`;
  const aws = async (...args: string[]) => {
    const r = await run(AWS, ["--endpoint-url", endpoint, ...args], {
      env: {
        AWS_SHARED_CREDENTIALS_FILE: `${n1.dir}.s3-credentials`,
        AWS_CONFIG_FILE: "/dev/null",
        AWS_DEFAULT_REGION: "us-east-1",
      },
    });
    assert.equal(r.code, 0, `aws ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const objects: { key: string; bytes: Uint8Array }[] = [];
  const put = async (key: string, bytes: Uint8Array) => {
    const file = `${work}/${key}`;
    await Deno.writeFile(file, bytes);
    await aws("s3", "cp", "--quiet", file, `s3://fabric/${key}`);
    objects.push({ key, bytes });
  };
  const readAll = async () => {
    for (const o of objects) {
      const file = `${work}/back-${o.key}`;
      await aws("s3", "cp", "--quiet", `s3://fabric/${o.key}`, file);
      assert.deepEqual(await Deno.readFile(file), o.bytes, `${o.key} reads back byte-exact`);
    }
  };
  try {
    for (const n of nodes) start(n);
    await Promise.all(nodes.map(ready));
    assert.equal((await pools(n1))[0]!.durability, "copies:3");
    await aws("s3", "mb", "s3://fabric");
    for (let i = 0; i < 3; i++) await put(`a${i}`, pattern(2 * MiB + i * 4097, i + 1));
    const written = objects.reduce((n, o) => n + o.bytes.length, 0);
    // A copy of every chunk on each of the other nodes' devices.
    for (const n of [n2, n3]) {
      const live = await metric(n, "kiseki_pool_live_bytes");
      assert.ok(live >= written, `node ${n.id} holds ${live} bytes of ${written} written`);
    }
    await readAll();

    // Node 3 is killed: reads go on, and writes are acknowledged with two copies, degraded.
    // What node 3 holds now: the repair adds the copies of what is written while it is away
    // (measured here, since the repair may finish before node 3's metrics are read again).
    const before = await metric(n3, "kiseki_pool_live_bytes");
    await n3.role!.stop("SIGKILL");
    n3.role = null;
    await readAll();
    for (let i = 0; i < 2; i++) await put(`b${i}`, pattern(MiB + 333 * i, 10 + i));
    const degraded = (await pools(n1))[0]!.degradedChunks ?? 0;
    assert.ok(degraded >= 2, `${degraded} degraded chunks reported`);
    assert.equal(await metric(n1, "kiseki_chunk_degraded"), degraded);
    await readAll();

    // Node 3 returns: the repairer restores the third copy of every degraded chunk.
    start(n3);
    await ready(n3);
    const deadline = Date.now() + REPAIR_MS;
    let left = degraded;
    while (Date.now() < deadline) {
      left = (await pools(n1))[0]!.degradedChunks ?? 0;
      if (left === 0) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    assert.equal(left, 0, `still ${left} degraded chunks\n${n1.role?.stderr().slice(-3000)}`);
    const after = await metric(n3, "kiseki_pool_live_bytes");
    assert.ok(after > before, `node 3 received the missing copies (${before} -> ${after})`);
    assert.ok(after >= objects.reduce((n, o) => n + o.bytes.length, 0));
    await readAll();
  } finally {
    await Promise.all(nodes.map((n) => n.role?.stop("SIGKILL")));
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
