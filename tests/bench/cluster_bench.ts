// `deno task bench:cluster [--quick]`: a three-node cluster of real `kiseki server`
// processes on loopback beside a single node, in the same run, driven by the signed S3 load
// generator (s3_load.ts, its own process): 64 KiB PUT/GET at 16 callers and 64 MiB PUT/GET
// at one, through node 1 and spread over all three nodes (the callers split between them);
// the ratio is the cluster's MB/s over the single node's. In the cluster every chunk is
// stored as 3 copies on 3 nodes over the chunk fabric; the single node keeps EC 4+2 on its
// own devices. Then the chunk fabric's own rows (bench:fabric: 1 MiB fragments against bare
// loopback TCP measured in the same run, target >= 0.7x) and the repair rate
// (bench:chunk-cluster), each run as its own process. All processes share this machine's
// cores: the cluster rows pay for three servers. Writes tests/bench/results/cluster.json.
//
//   deno run -A tests/bench/cluster_bench.ts [--quick]

import { readS3Credentials, run, type RunningRole, startRole, waitForHttp } from "../e2e/_role.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const KIB = 1024;
const MIB = 1024 * KIB;
const AWS = "/usr/bin/aws";
const LOAD = new URL("./s3_load.ts", import.meta.url).pathname;
const RESULTS = new URL("./results/cluster.json", import.meta.url);
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };
const SINGLE_OCTET = 211;
const CLUSTER_OCTET = 212;
const READY_MS = 120_000;
const CASES: { size: number; concurrency: number; seconds: number; count: number }[] = [
  { size: 64 * KIB, concurrency: 16, seconds: QUICK ? 2 : 10, count: 200_000 },
  { size: 64 * MIB, concurrency: 1, seconds: QUICK ? 4 : 30, count: QUICK ? 3 : 24 },
];

const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));
const progress = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));

interface Node {
  id: number;
  host: string;
  dir: string;
  role: RunningRole;
}

function nodeEnv(host: string, dir: string, cluster: { id: number; peers: string } | null) {
  const on = (port: number) => `${host}:${port}`;
  return {
    KISEKI_DATA_DIR: dir,
    KISEKI_RAFT_ADDR: on(PORTS.raft),
    KISEKI_DATA_ADDR: on(PORTS.data),
    KISEKI_METRICS_ADDR: on(PORTS.metrics),
    KISEKI_S3_ADDR: on(PORTS.s3),
    KISEKI_NFS_ADDR: on(PORTS.nfs),
    KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
    KISEKI_POOLS: JSON.stringify({ devices: 6, deviceSize: "8GiB", segmentSize: "64MiB" }),
    ...(cluster === null ? {} : {
      KISEKI_NODE_ID: String(cluster.id),
      KISEKI_RAFT_PEERS: cluster.peers,
      KISEKI_BOOTSTRAP: cluster.id === 1 ? "true" : "false",
      // Loopback between processes of one machine: plain TCP, said so.
      KISEKI_ALLOW_INSECURE: "true",
    }),
  };
}

async function ready(n: Node): Promise<void> {
  const exited = n.role.exited.then((code) => {
    throw new Error(`node ${n.host} exited with ${code}: ${n.role.stderr().slice(-3000)}`);
  });
  await Promise.race([
    waitForHttp(`http://${n.host}:${PORTS.metrics}/health`, "OK", READY_MS),
    exited,
  ]);
}

interface Target {
  node: Node;
  credentials: { accessKeyId: string; secretAccessKey: string };
}

async function target(node: Node): Promise<Target> {
  const file = `${node.dir}.s3-credentials`;
  const r = await run(AWS, [
    "--endpoint-url",
    `http://${node.host}:${PORTS.s3}`,
    "s3",
    "mb",
    "s3://bench",
  ], {
    env: {
      AWS_SHARED_CREDENTIALS_FILE: file,
      AWS_CONFIG_FILE: "/dev/null",
      AWS_DEFAULT_REGION: "us-east-1",
    },
  });
  if (r.code !== 0) throw new Error(`make bucket on ${node.host}: ${r.stderr}`);
  return { node, credentials: await readS3Credentials(file) };
}

interface LoadResult {
  mbPerSecond: number;
  ops: number;
  errors: number;
  firstError: string | null;
  keysWritten: number | null;
}

/** Keys each target's PUT of a size wrote: its GET asks for those only. */
const written = new Map<string, number>();

async function load(
  t: Target,
  op: "put" | "get",
  c: (typeof CASES)[number],
  concurrency: number,
): Promise<LoadResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      LOAD,
      `--endpoint=http://${t.node.host}:${PORTS.s3}`,
      "--bucket=bench",
      `--access-key=${t.credentials.accessKeyId}`,
      `--secret-key=${t.credentials.secretAccessKey}`,
      `--op=${op}`,
      `--size=${c.size}`,
      `--concurrency=${concurrency}`,
      `--seconds=${c.seconds}`,
      `--count=${c.count}`,
      `--keys=${
        op === "get" ? written.get(`${t.node.host}/${c.size}`) ?? 1 : c.size >= MIB ? 1 : 64
      }`,
      `--prefix=b${c.size}`,
      `--warmup-ms=${c.size >= MIB ? 0 : 200}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  const line = d.decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !line.startsWith("{")) {
    throw new Error(
      `s3_load ${op} ${c.size} on ${t.node.host}: ${d.decode(out.stderr).slice(0, 600)}\n` +
        `server: ${t.node.role.stderr().slice(-3000)}`,
    );
  }
  const result = JSON.parse(line) as LoadResult;
  // A loaded shared machine drops the odd connection: counted and shown, not fatal, unless
  // nothing got through.
  if (result.errors > 0) {
    progress(
      `  ${op} ${c.size} on ${t.node.host}: ${result.errors} errors, first: ${result.firstError}\n` +
        t.node.role.stderr().split("\n").filter((l) =>
          / (WARN|ERROR) /.test(l) && !l.includes("payload unreadable")
        ).slice(-5).join("\n"),
    );
  }
  if (result.ops === 0) throw new Error(`s3_load ${op} ${c.size} on ${t.node.host}: nothing done`);
  if (op === "put") {
    const key = `${t.node.host}/${c.size}`;
    written.set(key, Math.max(written.get(key) ?? 0, result.keysWritten ?? 0));
  }
  return result;
}

/** The callers of one case split between the targets (at least one each), run together. */
async function spread(targets: Target[], op: "put" | "get", c: (typeof CASES)[number]) {
  const share = (i: number) =>
    Math.max(
      1,
      Math.floor(c.concurrency / targets.length) + (i < c.concurrency % targets.length ? 1 : 0),
    );
  const results = await Promise.all(targets.map((t, i) => load(t, op, c, share(i))));
  return {
    mbPerSecond: results.reduce((n, r) => n + r.mbPerSecond, 0),
    errors: results.reduce((n, r) => n + r.errors, 0),
    concurrency: targets.reduce((n, _, i) => n + share(i), 0),
  };
}

async function subBench(name: string): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(`./${name}_bench.ts`, import.meta.url).pathname,
      ...(QUICK ? ["--quick"] : []),
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (out.code !== 0) {
    throw new Error(`${name}: ${new TextDecoder().decode(out.stderr).slice(-3000)}`);
  }
  return JSON.parse(await Deno.readTextFile(new URL(`./results/${name}.json`, import.meta.url)));
}

interface Row {
  case: string;
  op: string;
  size: number | null;
  concurrency: number | null;
  mb: number;
  ceiling: number | null;
  ratio: number | null;
  /** Failed requests of the case (S3 rows). */
  errors?: number;
}

const rows: Row[] = [];
const work = await Deno.makeTempDir({ prefix: "kiseki-bench-cluster-" });
const nodes: Node[] = [];
try {
  progress("starting a single node and a three-node cluster");
  const singleHost = `127.0.${SINGLE_OCTET}.1`;
  const single: Node = {
    id: 0,
    host: singleHost,
    dir: `${work}/single`,
    role: startRole("server", nodeEnv(singleHost, `${work}/single`, null)),
  };
  nodes.push(single);
  const peers = [1, 2, 3].map((id) => `${id}=127.0.${CLUSTER_OCTET}.${id}:${PORTS.raft}`).join(",");
  for (const id of [1, 2, 3]) {
    const host = `127.0.${CLUSTER_OCTET}.${id}`;
    nodes.push({
      id,
      host,
      dir: `${work}/n${id}`,
      role: startRole("server", nodeEnv(host, `${work}/n${id}`, { id, peers })),
    });
  }
  await Promise.all(nodes.map(ready));
  const one = await target(single);
  const members = await Promise.all(nodes.slice(1).map(target));

  for (const c of CASES) {
    for (const op of ["put", "get"] as const) {
      progress(`${op} ${c.size / KIB} KiB c=${c.concurrency}`);
      const single = await load(one, op, c, c.concurrency);
      const base = single.mbPerSecond;
      const via1 = await load(members[0]!, op, c, c.concurrency);
      const all = await spread(members, op, c);
      const size = c.size;
      rows.push(
        {
          case: "1 node",
          op,
          size,
          concurrency: c.concurrency,
          mb: base,
          ceiling: base,
          ratio: 1,
          errors: single.errors,
        },
        {
          case: "3 nodes, through node 1",
          op,
          size,
          concurrency: c.concurrency,
          mb: via1.mbPerSecond,
          ceiling: base,
          ratio: via1.mbPerSecond / base,
          errors: via1.errors,
        },
        {
          case: "3 nodes, spread over all",
          op,
          size,
          concurrency: all.concurrency,
          mb: all.mbPerSecond,
          ceiling: base,
          ratio: all.mbPerSecond / base,
          errors: all.errors,
        },
      );
    }
  }
} finally {
  await Promise.all(nodes.map((n) => n.role.stop("SIGKILL")));
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

progress("bench:fabric");
const fabric = await subBench("fabric");
for (const r of fabric.rows as Record<string, number | string>[]) {
  if (r.transport !== "tcp") continue;
  rows.push({
    case: "fabric 1 MiB fragments vs bare TCP",
    op: String(r.op),
    size: MIB,
    concurrency: Number(r.concurrency),
    mb: Number(r.mbPerSecond),
    ceiling: Number(r.ceilingMbPerSecond),
    ratio: Number(r.ratio),
  });
}
progress("bench:chunk-cluster (repair)");
const chunkCluster = await subBench("chunk_cluster");
for (const r of chunkCluster.rows as Row[]) {
  if (r.op === "repair") rows.push({ ...r, size: MIB, concurrency: null });
}

print("cluster of 3 server processes beside 1, S3 through node 1 and spread; fabric; repair");
table(
  print,
  ["case", "op", "size", "callers", "MB/s", "ceiling MB/s", "ratio", "errors"],
  rows.map((r) => [
    r.case,
    r.op,
    r.size === null ? "-" : r.size >= MIB ? `${r.size / MIB} MiB` : `${r.size / KIB} KiB`,
    r.concurrency ?? "-",
    r.mb.toFixed(1),
    r.ceiling === null ? "-" : r.ceiling.toFixed(1),
    r.ratio === null ? "-" : r.ratio.toFixed(2),
    r.errors ?? "-",
  ]),
  { leftColumns: 2 },
);
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(
  RESULTS,
  JSON.stringify({ mode: QUICK ? "quick" : "full", rows }, null, 2),
);
