// `deno task bench:raft [--quick]`: commit throughput and latency of AppendDelta on a real
// three-node cluster (three `kiseki server` processes on loopback, started with the role
// table's flags, the raft write-ahead log with one fdatasync per group commit), at 1, 16 and 64 concurrent proposers
// (each one sequential: the next append after the last one's acknowledgement), 1 KiB
// payloads, all sent to the shard's leader. Same-run ceilings: a 1 KiB write + fdatasync in
// the directory that holds the data dirs, and a loopback TCP round trip between two
// processes. The floor of one commit is fdatasync + 2 RTT (client to leader and back, leader
// to followers and back, the leader's and followers' syncs overlapping); the targets are p50
// within 2x of that floor at 1 proposer, and 10,000 commits/s at 64 proposers over 4 shards.
// Prints a table and writes tests/bench/results/raft.json.
//
//   deno run -A tests/bench/raft_bench.ts [--quick] [--dir=/path/on/the/disk]
//
// The load generator is this process (one gRPC channel per node); on a 2-core machine it
// competes with the three servers for CPU, as a client on the same host would.

import {
  createGrpcClient,
  type GrpcClient,
  LOG_SERVICE,
  type LogServiceMethods,
} from "../../mod/transport/mod.ts";
import { type RunningRole, startRole, waitForHttp } from "../e2e/_role.ts";

const QUICK = Deno.args.includes("--quick");
const DIR_ARG = Deno.args.find((a) => a.startsWith("--dir="))?.slice("--dir=".length);
const ROOT = new URL("../../", import.meta.url).pathname;
const RESULTS_PATH = new URL("./results/raft.json", import.meta.url);

const PAYLOAD_BYTES = 1024;
const CONCURRENCY = [1, 16, 64];
/** A last case: 64 proposers spread over every shard (group commit across shards). */
const SHARDS = 4;
const WARMUP_MS = QUICK ? 500 : 2000;
const MEASURE_MS = QUICK ? 2000 : 10_000;
/** Upper bound on appends per case, whatever the time box. */
const APPENDS_PER_CASE_MAX = QUICK ? 20_000 : 200_000;
const FSYNC_SAMPLES = QUICK ? 200 : 2000;
const RTT_SAMPLES = QUICK ? 1000 : 10_000;
const GRPC_SAMPLES = QUICK ? 500 : 3000;
const P50_TARGET_FACTOR = 2;
/** Commits per second at 64 proposers spread over every shard. */
const SPREAD_TARGET_COMMITS_PER_SECOND = 10_000;
const TENANT = "6b697365-6b69-4000-8000-0000000b3e0c";
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };

const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));
const progress = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

interface Quantiles {
  p50: number;
  p99: number;
  mean: number;
  samples: number;
}

function quantiles(samples: number[]): Quantiles {
  const sorted = samples.slice().sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length);
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    mean,
    samples: sorted.length,
  };
}

// ---- ceilings --------------------------------------------------------------------------

/** 1 KiB overwritten in place (as lmdb rewrites pages of a preallocated map) + fdatasync. */
async function fdatasyncLatency(dir: string): Promise<Quantiles> {
  const path = `${dir}/fdatasync.bin`;
  const blocks = 256;
  const block = new Uint8Array(PAYLOAD_BYTES).fill(0x6b);
  const file = await Deno.open(path, { create: true, read: true, write: true, truncate: true });
  const samples: number[] = [];
  try {
    await file.write(new Uint8Array(blocks * PAYLOAD_BYTES));
    await file.sync();
    for (let i = 0; i < FSYNC_SAMPLES; i++) {
      await file.seek((i % blocks) * PAYLOAD_BYTES, Deno.SeekMode.Start);
      const t0 = performance.now();
      await file.write(block);
      await file.syncData();
      samples.push(performance.now() - t0);
    }
  } finally {
    file.close();
    await Deno.remove(path);
  }
  return quantiles(samples);
}

/** An echo peer in its own process: reads 1 KiB, answers 16 bytes (an append and its ack). */
const ECHO_PEER = `
const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(listener.addr.port);
const conn = await listener.accept();
conn.setNoDelay(true);
const buf = new Uint8Array(${PAYLOAD_BYTES});
const ack = new Uint8Array(16);
let have = 0;
for (;;) {
  const n = await conn.read(buf.subarray(have));
  if (n === null) break;
  have += n;
  if (have === buf.length) { have = 0; await conn.write(ack); }
}
`;

async function loopbackRtt(): Promise<Quantiles> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", ECHO_PEER],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("echo peer exited before listening");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  void child.stdout.cancel();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(text.trim()) });
  conn.setNoDelay(true);
  const out = new Uint8Array(PAYLOAD_BYTES).fill(1);
  const ack = new Uint8Array(16);
  const samples: number[] = [];
  try {
    for (let i = 0; i < RTT_SAMPLES + 100; i++) {
      const t0 = performance.now();
      await conn.write(out);
      let have = 0;
      while (have < ack.length) {
        const n = await conn.read(ack.subarray(have));
        if (n === null) throw new Error("echo peer closed");
        have += n;
      }
      if (i >= 100) samples.push(performance.now() - t0); // the first 100 warm up
    }
  } finally {
    conn.close();
    await child.status;
  }
  return quantiles(samples);
}

/**
 * A unary gRPC call that does no Raft work (ShardHealth), from this process to a node: what
 * the proposer's hop costs by itself, above the TCP round trip.
 */
async function grpcNoOpLatency(node: BenchNode): Promise<Quantiles> {
  const samples: number[] = [];
  for (let i = 0; i < GRPC_SAMPLES + 50; i++) {
    const t0 = performance.now();
    await node.client.ShardHealth({ shardId: 0 });
    if (i >= 50) samples.push(performance.now() - t0);
  }
  return quantiles(samples);
}

// ---- the cluster -----------------------------------------------------------------------

type LogClient = GrpcClient<LogServiceMethods>;

interface BenchNode {
  id: number;
  host: string;
  role: RunningRole;
  client: LogClient;
}

async function startCluster(dir: string): Promise<BenchNode[]> {
  const hosts = [1, 2, 3].map((id) => `127.0.70.${id}`);
  const peers = hosts.map((h, i) => `${i + 1}=${h}:${PORTS.raft}`).join(",");
  const nodes: BenchNode[] = [];
  for (const [i, host] of hosts.entries()) {
    const id = i + 1;
    const dataDir = `${dir}/node${id}`;
    const on = (port: number) => `${host}:${port}`;
    const role = startRole("server", {
      KISEKI_NODE_ID: String(id),
      KISEKI_RAFT_PEERS: peers,
      // Measures Raft over plain TCP (no TLS in the numbers), which a cluster must ask for.
      KISEKI_ALLOW_INSECURE: "true",
      KISEKI_BOOTSTRAP: id === 1 ? "true" : "false",
      KISEKI_RAFT_ADDR: on(PORTS.raft),
      KISEKI_DATA_ADDR: on(PORTS.data),
      KISEKI_METRICS_ADDR: on(PORTS.metrics),
      KISEKI_S3_ADDR: on(PORTS.s3),
      KISEKI_NFS_ADDR: on(PORTS.nfs),
      KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
      KISEKI_DATA_DIR: dataDir,
      KISEKI_SHARDS: String(SHARDS),
      KISEKI_LOG_LEVEL: "warn",
    });
    const client = createGrpcClient(LOG_SERVICE, { host, port: PORTS.data }, {
      deadlineMs: 30_000,
    });
    nodes.push({ id, host, role, client });
  }
  try {
    for (const n of nodes) {
      await waitForHttp(`http://${n.host}:${PORTS.metrics}/health`, "OK", 60_000);
    }
  } catch (e) {
    for (const n of nodes) progress(`--- node ${n.id}\n${n.role.stderr()}`);
    throw e;
  }
  return nodes;
}

async function leaderOf(nodes: BenchNode[], shardId: number): Promise<BenchNode> {
  const deadline = Date.now() + 60_000;
  for (let i = 0; i < 1200 && Date.now() < deadline; i++) {
    try {
      const views = await Promise.all(nodes.map((n) => n.client.ShardHealth({ shardId })));
      const lead = views[0]!.leaderId;
      if (lead !== 0 && views.every((v) => v.leaderId === lead)) {
        return nodes.find((n) => n.id === lead)!;
      }
    } catch { /* starting */ }
    await sleep(50);
  }
  throw new Error(`no leader for shard ${shardId}`);
}

/** Counters and histogram sums from a node's /metrics, by series line name. */
async function scrape(n: BenchNode): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${n.host}:${PORTS.metrics}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = line.match(/^(kiseki_raft_[a-z_]+(?:_sum|_count|_total))(\{[^}]*\})? (\S+)$/);
    if (m === null || (m[2] ?? "").includes("le=")) continue;
    out.set(m[1]! + (m[2] ?? ""), (out.get(m[1]! + (m[2] ?? "")) ?? 0) + Number(m[3]));
  }
  return out;
}

function sumOf(m: Map<string, number>, prefix: string): number {
  let total = 0;
  for (const [k, v] of m) if (k === prefix || k.startsWith(prefix + "{")) total += v;
  return total;
}

interface CaseResult {
  proposers: number;
  shards: number;
  commits: number;
  errors: number;
  seconds: number;
  commitsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  floorMs: number;
  /** p50Ms / floorMs. */
  ratio: number;
  /** On the leader: log entries made durable per persist (one lmdb commit, one sync). */
  leaderEntriesPerPersist: number;
  leaderPersistMeanMs: number;
  /** On the leader: Raft messages per transport frame (batching on the wire). */
  leaderMessagesPerFrame: number;
  /** On the leader: proposal to applied, as the host measures it (no gRPC). */
  leaderCommitMeanMs: number;
}

async function runCase(
  nodes: BenchNode[],
  proposers: number,
  shardIds: number[],
  floorMs: number,
): Promise<CaseResult> {
  const leaders = await Promise.all(shardIds.map((s) => leaderOf(nodes, s)));
  const payload = new Uint8Array(PAYLOAD_BYTES);
  crypto.getRandomValues(payload);
  const hashedKey = new Uint8Array(32);
  let latencies: number[] = [];
  let errors = 0;
  let commits = 0;
  let recording = false;
  let stop = false;
  const worker = async (w: number) => {
    const shardIndex = w % shardIds.length;
    const shardId = shardIds[shardIndex]!;
    const client = leaders[shardIndex]!.client;
    for (let i = 0; !stop && i < APPENDS_PER_CASE_MAX; i++) {
      const t0 = performance.now();
      try {
        await client.AppendDelta({
          shardId,
          tenantId: TENANT,
          operation: "DELTA_OPERATION_CREATE",
          hashedKey,
          chunkRefs: [],
          payload,
        });
        if (recording) {
          latencies.push(performance.now() - t0);
          commits++;
        }
      } catch (e) {
        if (recording) errors++;
        if (errors > 100) throw e;
        await sleep(10);
      }
      if (commits >= APPENDS_PER_CASE_MAX) stop = true;
    }
  };
  const running = Array.from({ length: proposers }, (_, w) => worker(w));
  await sleep(WARMUP_MS);
  const leaderNodes = [...new Set(leaders)];
  const before = await Promise.all(leaderNodes.map(scrape));
  latencies = [];
  commits = 0;
  errors = 0;
  recording = true;
  const started = performance.now();
  await sleep(MEASURE_MS);
  recording = false;
  const seconds = (performance.now() - started) / 1000;
  const after = await Promise.all(leaderNodes.map(scrape));
  stop = true;
  await Promise.all(running);

  const delta = (name: string) =>
    leaderNodes.reduce((t, _, i) => t + sumOf(after[i]!, name) - sumOf(before[i]!, name), 0);
  const persists = delta("kiseki_raft_persist_latency_seconds_count");
  const frames = delta("kiseki_raft_transport_batch_messages_count");
  const commitsSeen = delta("kiseki_raft_commit_latency_seconds_count");
  const q = quantiles(latencies);
  return {
    proposers,
    shards: shardIds.length,
    commits,
    errors,
    seconds,
    commitsPerSecond: commits / seconds,
    p50Ms: q.p50,
    p99Ms: q.p99,
    meanMs: q.mean,
    floorMs,
    ratio: q.p50 / floorMs,
    leaderEntriesPerPersist: delta("kiseki_raft_entries_appended_total") / Math.max(1, persists),
    leaderPersistMeanMs: 1000 * delta("kiseki_raft_persist_latency_seconds_sum") /
      Math.max(1, persists),
    leaderMessagesPerFrame: delta("kiseki_raft_transport_batch_messages_sum") /
      Math.max(1, frames),
    leaderCommitMeanMs: 1000 * delta("kiseki_raft_commit_latency_seconds_sum") /
      Math.max(1, commitsSeen),
  };
}

// ---- main ------------------------------------------------------------------------------

const startedAll = performance.now();
const loadBefore = Deno.loadavg();
const baseDir = DIR_ARG ?? `${ROOT}.kiseki`;
await Deno.mkdir(baseDir, { recursive: true });
const dir = await Deno.makeTempDir({ dir: baseDir, prefix: "bench-raft-" });
let nodes: BenchNode[] = [];
const results: CaseResult[] = [];
let fsync: Quantiles;
let rtt: Quantiles;
let grpc: Quantiles;
try {
  progress(`ceilings: ${FSYNC_SAMPLES} x (1 KiB write + fdatasync) in ${dir}`);
  fsync = await fdatasyncLatency(dir);
  progress(`ceilings: ${RTT_SAMPLES} loopback TCP round trips between two processes`);
  rtt = await loopbackRtt();
  const floorMs = fsync.p50 + 2 * rtt.p50;

  progress("starting three server nodes on 127.0.70.1-3 (fdatasync on every group commit)");
  nodes = await startCluster(dir);
  progress(`ceilings: ${GRPC_SAMPLES} gRPC unary no-ops (ShardHealth) to node 1`);
  grpc = await grpcNoOpLatency(nodes[0]!);
  for (const proposers of CONCURRENCY) {
    progress(`${proposers} proposer(s) on shard 0: ${WARMUP_MS} ms warm-up, ${MEASURE_MS} ms`);
    results.push(await runCase(nodes, proposers, [0], floorMs));
  }
  const all = Array.from({ length: SHARDS }, (_, i) => i);
  const spread = CONCURRENCY[CONCURRENCY.length - 1]!;
  progress(`${spread} proposers over ${SHARDS} shards`);
  results.push(await runCase(nodes, spread, all, floorMs));
} catch (e) {
  for (const n of nodes) progress(`--- node ${n.id}\n${n.role.stderr().slice(-3000)}`);
  throw e;
} finally {
  for (const n of nodes) n.client.close();
  await Promise.all(nodes.map((n) => n.role.stop("SIGTERM")));
  await Deno.remove(dir, { recursive: true });
}

const one = results[0]!;
const floorMs = fsync.p50 + 2 * rtt.p50;
const singleShard = results.filter((r) => r.shards === 1);
const grows = singleShard.every((r, i) =>
  i === 0 || r.commitsPerSecond > singleShard[i - 1]!.commitsPerSecond
);
const p50Met = one.ratio <= P50_TARGET_FACTOR;

const f = (v: number, d = 2) => v.toFixed(d);
print(
  `bench:raft ${
    QUICK ? "--quick" : "(full)"
  }: 3 nodes on loopback, WAL + fdatasync, 1 KiB payloads`,
);
print(
  `ceilings: 1 KiB write + fdatasync p50 ${f(fsync.p50, 3)} ms (p99 ${f(fsync.p99, 3)}), ` +
    `loopback RTT p50 ${f(rtt.p50, 3)} ms (p99 ${f(rtt.p99, 3)}); ` +
    `floor = fdatasync + 2 RTT = ${f(floorMs, 3)} ms`,
);
print(
  `gRPC unary no-op (ShardHealth) to a node p50 ${f(grpc.p50, 3)} ms (p99 ${
    f(grpc.p99, 3)
  }): the proposer's own hop, not in the floor`,
);
print();
print(
  "proposers".padStart(9) + "shards".padStart(7) + "commits/s".padStart(11) +
    "p50 ms".padStart(9) + "p99 ms".padStart(9) + "ratio p50/floor".padStart(17) +
    "entries/persist".padStart(17) + "msgs/frame".padStart(12) + "host commit ms".padStart(16) +
    "errors".padStart(8),
);
for (const r of results) {
  print(
    String(r.proposers).padStart(9) + String(r.shards).padStart(7) +
      f(r.commitsPerSecond, 0).padStart(11) + f(r.p50Ms).padStart(9) + f(r.p99Ms).padStart(9) +
      f(r.ratio, 1).padStart(17) + f(r.leaderEntriesPerPersist, 1).padStart(17) +
      f(r.leaderMessagesPerFrame, 1).padStart(12) + f(r.leaderCommitMeanMs).padStart(16) +
      String(r.errors).padStart(8),
  );
}
print();
print(
  `target p50 <= ${P50_TARGET_FACTOR}x floor at 1 proposer: ${p50Met ? "MET" : "NOT MET"} ` +
    `(${f(one.p50Ms)} ms = ${f(one.ratio, 1)}x ${f(floorMs, 3)} ms)`,
);
print(
  `target throughput grows with concurrency: ${grows ? "MET" : "NOT MET"} (` +
    singleShard.map((r) => `${r.proposers}: ${f(r.commitsPerSecond, 0)}/s`).join(", ") +
    `; x${f(singleShard[singleShard.length - 1]!.commitsPerSecond / one.commitsPerSecond, 1)})`,
);
const spreadRow = results[results.length - 1]!;
const spreadMet = spreadRow.commitsPerSecond >= SPREAD_TARGET_COMMITS_PER_SECOND;
print(
  `target >= ${SPREAD_TARGET_COMMITS_PER_SECOND} commits/s at ${spreadRow.proposers} proposers ` +
    `over ${spreadRow.shards} shards: ${spreadMet ? "MET" : "NOT MET"} ` +
    `(${f(spreadRow.commitsPerSecond, 0)}/s)`,
);
print(
  `load average before ${loadBefore.map((l) => l.toFixed(1)).join(" ")}, after ${
    Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
  } on ${navigator.hardwareConcurrency} CPUs`,
);

await Deno.mkdir(new URL(".", RESULTS_PATH), { recursive: true });
await Deno.writeTextFile(
  RESULTS_PATH,
  JSON.stringify(
    {
      bench: "raft",
      mode: QUICK ? "quick" : "full",
      date: new Date().toISOString(),
      elapsedSeconds: (performance.now() - startedAll) / 1000,
      host: {
        cpus: navigator.hardwareConcurrency,
        deno: Deno.version.deno,
        loadavgBefore: loadBefore,
        loadavgAfter: Deno.loadavg(),
      },
      method: {
        cluster: "3 kiseki server processes on 127.0.70.1-3, role table flags, WAL fdatasync",
        payloadBytes: PAYLOAD_BYTES,
        shards: SHARDS,
        warmupMs: WARMUP_MS,
        measureMs: MEASURE_MS,
        proposer: "sequential AppendDelta to the shard's leader over gRPC from the bench process",
        floor: "fdatasync p50 + 2 x loopback RTT p50",
        ratio: "p50Ms / floorMs",
      },
      ceilings: {
        fdatasyncMs: fsync,
        loopbackRttMs: rtt,
        grpcNoOpMs: grpc,
        floorMs,
      },
      rows: results,
      targets: {
        p50FactorMax: P50_TARGET_FACTOR,
        p50Met,
        throughputGrows: grows,
        spreadCommitsPerSecondMin: SPREAD_TARGET_COMMITS_PER_SECOND,
        spreadMet,
      },
    },
    null,
    2,
  ) + "\n",
);
