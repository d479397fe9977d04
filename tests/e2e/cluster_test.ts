// Three-node clusters of real `kiseki server` processes, each started with exactly the role
// table's permission flags: a SIGKILLed leader replaced and caught up after restart, a leader
// cut off by a network partition between namespaces, shards sharing one connection per peer,
// maintenance mode, and the LogService status codes. Every acknowledged delta is then checked
// on every node: present exactly once, at its acknowledged sequence, in acknowledgement order.

import assert from "node:assert/strict";
import {
  createGrpcClient,
  type Delta,
  type GrpcClient,
  GrpcStatusError,
  LOG_SERVICE,
  type LogServiceMethods,
  type ShardHealthResponse,
} from "../../mod/transport/mod.ts";
import { run, type RunningRole, startRole, waitForHttp } from "./_role.ts";

type LogClient = GrpcClient<LogServiceMethods>;

/** Short ticks keep elections quick (10-20 ticks: 0.5-1 s). */
const TICK_MS = 50;
/** The bound a failover must meet: many election timeouts, for a loaded shared machine. */
const FAILOVER_MS_MAX = 10_000;
const TENANT = "6b697365-6b69-4000-8000-00000000c1a5";
const PORTS = { s3: 29000, nfs: 22049, metrics: 29090, data: 29100, advisory: 29101, raft: 29300 };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---- nodes and clusters ----------------------------------------------------------------

interface NodeSpec {
  id: number;
  /** Where the test reaches the node (data-path gRPC, metrics). */
  clientHost: string;
  /** Where the peers reach the node (Raft). */
  raftHost: string;
  /** A command that execs the role in place (`ip netns exec <ns>`), if any. */
  prefix?: string[];
}

class TestNode {
  role: RunningRole | null = null;
  client: LogClient;

  constructor(readonly spec: NodeSpec, readonly env: Record<string, string>) {
    this.client = this.#connect();
  }

  get id(): number {
    return this.spec.id;
  }

  get metricsUrl(): string {
    return `http://${this.spec.clientHost}:${PORTS.metrics}`;
  }

  #connect(): LogClient {
    return createGrpcClient(LOG_SERVICE, { host: this.spec.clientHost, port: PORTS.data }, {
      deadlineMs: 10_000,
    });
  }

  start(): void {
    assert.equal(this.role, null, `node ${this.id} is already running`);
    this.role = startRole("server", this.env, [], { prefix: this.spec.prefix });
    // A fresh channel: the old one may sit in grpc-js's reconnect backoff.
    this.client.close();
    this.client = this.#connect();
  }

  /** Stops the node: SIGKILL at once, or SIGTERM and SIGKILL if it hangs. */
  async stop(signal: "SIGKILL" | "SIGTERM" = "SIGTERM"): Promise<void> {
    const role = this.role;
    if (role === null) return;
    this.role = null;
    if (signal === "SIGKILL") {
      await role.stop("SIGKILL");
      return;
    }
    try {
      role.child.kill("SIGTERM");
    } catch { /* already gone */ }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const hung = await Promise.race([
      role.exited.then(() => false),
      new Promise<boolean>((r) => timer = setTimeout(() => r(true), 15_000)),
    ]);
    clearTimeout(timer);
    if (hung) await role.stop("SIGKILL");
  }

  logs(): string {
    return this.role?.stderr() ?? "";
  }
}

class TestCluster {
  readonly nodes: TestNode[];

  private constructor(nodes: TestNode[], readonly dataDirs: string[]) {
    this.nodes = nodes;
  }

  static async create(specs: NodeSpec[], shards: number): Promise<TestCluster> {
    const peers = specs.map((s) => `${s.id}=${s.raftHost}:${PORTS.raft}`).join(",");
    const dirs: string[] = [];
    const nodes: TestNode[] = [];
    for (const spec of specs) {
      const dir = await Deno.makeTempDir({ prefix: `kiseki-cluster-n${spec.id}-` });
      dirs.push(dir);
      const on = (port: number) => `${spec.clientHost}:${port}`;
      nodes.push(
        new TestNode(spec, {
          KISEKI_NODE_ID: String(spec.id),
          KISEKI_RAFT_PEERS: peers,
          // Raft behaviour under crashes and partitions, not authentication (that is
          // data_path_auth_test.ts): plain TCP, said explicitly, and the test's client
          // reaches the namespaced nodes from a non-loopback address.
          KISEKI_ALLOW_INSECURE: "true",
          KISEKI_BOOTSTRAP: spec.id === specs[0]!.id ? "true" : "false",
          KISEKI_RAFT_ADDR: `${spec.raftHost}:${PORTS.raft}`,
          KISEKI_DATA_ADDR: on(PORTS.data),
          KISEKI_METRICS_ADDR: on(PORTS.metrics),
          KISEKI_S3_ADDR: on(PORTS.s3),
          KISEKI_NFS_ADDR: on(PORTS.nfs),
          KISEKI_ADVISORY_ADDR: on(PORTS.advisory),
          KISEKI_DATA_DIR: dir,
          KISEKI_SHARDS: String(shards),
          KISEKI_RAFT_TICK_MS: String(TICK_MS),
        }),
      );
    }
    return new TestCluster(nodes, dirs);
  }

  node(id: number): TestNode {
    const n = this.nodes.find((x) => x.id === id);
    assert.ok(n, `no node ${id}`);
    return n;
  }

  others(...ids: number[]): TestNode[] {
    return this.nodes.filter((n) => !ids.includes(n.id));
  }

  async startAll(): Promise<void> {
    for (const n of this.nodes) n.start();
    await Promise.all(this.nodes.map((n) => waitForNode(n)));
  }

  /** Stops every node, closes the clients and removes the data directories. */
  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.stop("SIGKILL")));
    for (const n of this.nodes) n.client.close();
    for (const d of this.dataDirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }

  /** Everything the nodes logged, for assertion messages. */
  logs(): string {
    return this.nodes.map((n) => `--- node ${n.id}\n${n.logs().slice(-4000)}`).join("\n");
  }
}

async function waitForNode(n: TestNode): Promise<void> {
  try {
    await waitForHttp(`${n.metricsUrl}/health`, "OK", 60_000);
  } catch (e) {
    throw new Error(`node ${n.id} did not become ready: ${(e as Error).message}\n${n.logs()}`);
  }
}

function loopbackSpecs(octet: number): NodeSpec[] {
  return [1, 2, 3].map((id) => {
    const host = `127.0.${octet}.${id}`;
    return { id, clientHost: host, raftHost: host };
  });
}

// ---- polling ---------------------------------------------------------------------------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value (not undefined); bounded by time and by count. */
async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + options.timeoutMs;
  const attemptsMax = Math.ceil(options.timeoutMs / intervalMs) + 1;
  let last = "";
  for (let attempt = 0; attempt < attemptsMax && Date.now() < deadline; attempt++) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${what} (last: ${last})`);
}

async function health(n: TestNode, shardId: number): Promise<ShardHealthResponse> {
  return await n.client.ShardHealth({ shardId }, { deadlineMs: 2000 });
}

interface Leadership {
  leader: number;
  term: number;
  elapsedMs: number;
}

/** Waits until every one of `nodes` names the same leader (one of them, not `not`) and term. */
async function waitForLeader(
  nodes: TestNode[],
  shardId: number,
  options: { not?: number; timeoutMs?: number; intervalMs?: number } = {},
): Promise<Leadership> {
  const started = performance.now();
  return await waitFor(
    `one leader of shard ${shardId} on nodes ${nodes.map((n) => n.id)}`,
    async () => {
      const views = await Promise.all(nodes.map((n) => health(n, shardId)));
      const leader = views[0]!.leaderId;
      const term = views[0]!.term;
      if (leader === 0 || leader === options.not) return undefined;
      if (!nodes.some((n) => n.id === leader)) return undefined;
      if (!views.every((v) => v.leaderId === leader && v.term === term)) return undefined;
      return { leader, term, elapsedMs: performance.now() - started };
    },
    { timeoutMs: options.timeoutMs ?? 30_000, intervalMs: options.intervalMs ?? 50 },
  );
}

async function waitForLeaders(
  nodes: TestNode[],
  shards: number[],
  timeoutMs = 60_000,
): Promise<Map<number, number>> {
  const found = await Promise.all(shards.map((s) => waitForLeader(nodes, s, { timeoutMs })));
  return new Map(shards.map((s, i) => [s, found[i]!.leader]));
}

// ---- appends and their outcomes --------------------------------------------------------

interface Ack {
  shard: number;
  payload: string;
  sequence: number;
  via: number;
}

interface Failure {
  shard: number;
  payload: string;
  code: string;
  via: number;
  /** Refused for certain (sent to a cut-off minority, or refused in maintenance). */
  neverCommitted: boolean;
}

function codeOf(e: unknown): string {
  if (e instanceof GrpcStatusError) return e.codeName;
  throw e;
}

/** Every append a test makes and how it ended; the truth the logs are checked against. */
class Ledger {
  readonly acked: Ack[] = [];
  readonly failed: Failure[] = [];
  #next = 0;

  constructor(readonly name: string) {}

  /** One append; a gRPC failure is recorded and returned, anything else throws. */
  async append(
    node: TestNode,
    shard: number,
    options: { deadlineMs?: number; neverCommitted?: boolean } = {},
  ): Promise<Ack | Failure> {
    const payload = `${this.name}/${shard}/${this.#next++}`;
    const bytes = encoder.encode(payload);
    const hashedKey = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    try {
      const r = await node.client.AppendDelta({
        shardId: shard,
        tenantId: TENANT,
        operation: "DELTA_OPERATION_CREATE",
        hashedKey,
        chunkRefs: [],
        payload: bytes,
      }, { deadlineMs: options.deadlineMs ?? 10_000 });
      assert.ok(r.sequence > 0, `sequence of ${payload}`);
      const ack = { shard, payload, sequence: r.sequence, via: node.id };
      this.acked.push(ack);
      return ack;
    } catch (e) {
      const failure = {
        shard,
        payload,
        code: codeOf(e),
        via: node.id,
        neverCommitted: options.neverCommitted ?? false,
      };
      this.failed.push(failure);
      return failure;
    }
  }

  /**
   * Appends until one is acknowledged (bounded by count and time); failures on the way, e.g.
   * while a node has not yet heard from the leader, are recorded and must be UNAVAILABLE.
   */
  async mustAppend(node: TestNode, shard: number, timeoutMs = 30_000): Promise<Ack> {
    const deadline = Date.now() + timeoutMs;
    let last: Failure | undefined;
    for (let i = 0; i < 200 && Date.now() < deadline; i++) {
      const r = await this.append(node, shard);
      if ("sequence" in r) return r;
      last = r;
      assert.ok(
        r.code === "UNAVAILABLE" || r.code === "DEADLINE_EXCEEDED",
        `append to shard ${shard} via node ${node.id} failed with ${r.code}`,
      );
      await sleep(200);
    }
    throw new Error(`no append to shard ${shard} via node ${node.id} succeeded (${last?.code})`);
  }

  maxAcked(shard: number): number {
    return Math.max(0, ...this.acked.filter((a) => a.shard === shard).map((a) => a.sequence));
  }

  summary(): string {
    const codes = new Map<string, number>();
    for (const f of this.failed) codes.set(f.code, (codes.get(f.code) ?? 0) + 1);
    return `${this.acked.length} acknowledged, ${this.failed.length} failed ` +
      `(${[...codes].map(([c, n]) => `${c} x${n}`).join(", ") || "none"})`;
  }
}

async function readAll(n: TestNode, shardId: number): Promise<Delta[]> {
  const out: Delta[] = [];
  // 0 is the start of the log (1 is refused today as "compacted": see the report).
  let from = 0;
  for (let page = 0; page < 10_000; page++) {
    const r = await n.client.ReadDeltas({ shardId, fromSequence: from, maxCount: 1000 }, {
      deadlineMs: 10_000,
    });
    out.push(...r.deltas);
    if (r.nextSequence <= Math.max(from, 1) || r.nextSequence > r.tip) break;
    from = r.nextSequence;
  }
  return out;
}

/**
 * Checks one node's copy of each shard against the ledger: every acknowledged delta exactly
 * once at its sequence, acknowledged sequential appends in order, nothing unknown, failed
 * appends at most once (never, for a minority). Returns the log as `sequence:payload` lines.
 */
async function checkNode(n: TestNode, shards: number[], ledger: Ledger): Promise<string[]> {
  const lines: string[] = [];
  const known = new Set([...ledger.acked, ...ledger.failed].map((x) => x.payload));
  for (const shard of shards) {
    const deltas = await readAll(n, shard);
    const where = new Map<string, number[]>();
    let previous = 0;
    for (const d of deltas) {
      assert.ok(d.sequence > previous, `node ${n.id} shard ${shard}: sequences increase`);
      previous = d.sequence;
      assert.equal(d.tenantId, TENANT);
      const payload = decoder.decode(d.payload);
      if (!payload.startsWith(`${ledger.name}/`)) continue;
      assert.ok(known.has(payload), `node ${n.id} shard ${shard}: unknown delta ${payload}`);
      where.set(payload, [...(where.get(payload) ?? []), d.sequence]);
      lines.push(`${shard}:${d.sequence}:${payload}`);
    }
    for (const a of ledger.acked.filter((x) => x.shard === shard)) {
      assert.deepEqual(
        where.get(a.payload),
        [a.sequence],
        `node ${n.id}: acknowledged ${a.payload} (via node ${a.via}) at ${a.sequence} exactly once`,
      );
    }
    for (const f of ledger.failed.filter((x) => x.shard === shard)) {
      const count = where.get(f.payload)?.length ?? 0;
      assert.ok(count <= 1, `node ${n.id}: failed append ${f.payload} appears ${count} times`);
      if (f.neverCommitted) {
        assert.equal(count, 0, `node ${n.id}: ${f.payload} (${f.code} via ${f.via}) was committed`);
      }
    }
  }
  return lines;
}

/** Every node holds every acknowledged delta, and all nodes hold the same log. */
async function checkLogs(cluster: TestCluster, shards: number[], ledger: Ledger): Promise<void> {
  // Appends in each test are sequential per shard: acknowledgement order is sequence order.
  for (const shard of shards) {
    const seqs = ledger.acked.filter((a) => a.shard === shard).map((a) => a.sequence);
    for (let i = 1; i < seqs.length; i++) {
      assert.ok(seqs[i]! > seqs[i - 1]!, `shard ${shard}: acknowledged out of order: ${seqs}`);
    }
  }
  // A read is linearizable, so the nodes agree once nothing is in flight; a failed append
  // still in some leader's queue may land late, hence a few bounded rounds.
  let logs: string[][] = [];
  for (let round = 0; round < 10; round++) {
    logs = [];
    for (const n of cluster.nodes) logs.push(await checkNode(n, shards, ledger));
    if (logs.every((l) => JSON.stringify(l) === JSON.stringify(logs[0]))) return;
    await sleep(1000);
  }
  assert.deepEqual(logs[1], logs[0], "nodes 1 and 2 hold the same log");
  assert.deepEqual(logs[2], logs[0], "nodes 1 and 3 hold the same log");
}

/** Waits until `n` has applied every acknowledged delta of each shard and knows `leader`. */
async function waitForCatchUp(
  n: TestNode,
  shards: number[],
  ledger: Ledger,
  leaders: Map<number, number>,
  timeoutMs: number,
): Promise<number> {
  const started = performance.now();
  await waitFor(`node ${n.id} to catch up`, async () => {
    for (const shard of shards) {
      const h = await health(n, shard);
      if (h.leaderId !== leaders.get(shard)) return undefined;
      if (h.appliedSequence < ledger.maxAcked(shard)) return undefined;
    }
    return true;
  }, { timeoutMs, intervalMs: 100 });
  return performance.now() - started;
}

// ---- network namespaces ----------------------------------------------------------------

const IP = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}) ?? "ip";
const NS_PREFIX = "kst-";
const NS_BRIDGE = `${NS_PREFIX}br`;
const nodeNs = (id: number) => `${NS_PREFIX}n${id}`;
/** The veth end of node `id`'s cluster link that sits on the bridge (in NS_BRIDGE). */
const bridgePort = (id: number) => `${NS_PREFIX}r${id}b`;

async function ip(...args: string[]): Promise<string> {
  const r = await run(IP, args);
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Removes what an earlier (crashed) run of this test left: its processes and namespaces. */
async function removeNetwork(): Promise<void> {
  const namespaces = await run(IP, ["netns", "list"]);
  for (const line of namespaces.stdout.split("\n")) {
    const ns = line.split(" ")[0] ?? "";
    if (![NS_BRIDGE, nodeNs(1), nodeNs(2), nodeNs(3)].includes(ns)) continue;
    // Only this test starts processes in these namespaces.
    const pids = await run(IP, ["netns", "pids", ns]);
    for (const pid of pids.stdout.split("\n").map(Number).filter((p) => p > 0)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await run(IP, ["netns", "del", ns]);
  }
  // Deleting a namespace deletes its veth ends and their peers; these are for certainty.
  for (const id of [1, 2, 3]) await run(IP, ["link", "del", `${NS_PREFIX}c${id}`]);
}

/**
 * Three node namespaces on a bridge (the cluster network, 10.213.0.0/24), plus one
 * point-to-point client link per node from the root namespace (10.214.<id>.0/24).
 *
 * Why separate client links rather than one root veth into the bridge: the partition must
 * cut the leader off from its peers while the test can still call it, to prove that a
 * minority never acknowledges a write and to watch it step down. With the test on the
 * bridge, downing the leader's bridge port would silence it for the test too. The links
 * are routed nowhere else, so nothing crosses between node namespaces except the bridge.
 */
async function createNetwork(): Promise<NodeSpec[]> {
  await ip("netns", "add", NS_BRIDGE);
  await ip("-n", NS_BRIDGE, "link", "set", "lo", "up");
  await ip("-n", NS_BRIDGE, "link", "add", "br0", "type", "bridge");
  await ip("-n", NS_BRIDGE, "link", "set", "br0", "up");
  const specs: NodeSpec[] = [];
  for (const id of [1, 2, 3]) {
    const ns = nodeNs(id);
    await ip("netns", "add", ns);
    await ip("-n", ns, "link", "set", "lo", "up");
    // Cluster link: node namespace <-> bridge.
    const raftIf = `${NS_PREFIX}r${id}`;
    await ip("-n", ns, "link", "add", raftIf, "type", "veth", "peer", "name", bridgePort(id));
    await ip("-n", ns, "link", "set", bridgePort(id), "netns", NS_BRIDGE);
    await ip("-n", NS_BRIDGE, "link", "set", bridgePort(id), "master", "br0", "up");
    await ip("-n", ns, "addr", "add", `10.213.0.${id}/24`, "dev", raftIf);
    await ip("-n", ns, "link", "set", raftIf, "up");
    // Client link: root namespace <-> node namespace.
    const rootIf = `${NS_PREFIX}c${id}`;
    await ip("link", "add", rootIf, "type", "veth", "peer", "name", `${rootIf}n`);
    await ip("link", "set", `${rootIf}n`, "netns", ns);
    await ip("addr", "add", `10.214.${id}.254/24`, "dev", rootIf);
    await ip("link", "set", rootIf, "up");
    await ip("-n", ns, "addr", "add", `10.214.${id}.1/24`, "dev", `${rootIf}n`);
    await ip("-n", ns, "link", "set", `${rootIf}n`, "up");
    specs.push({
      id,
      clientHost: `10.214.${id}.1`,
      raftHost: `10.213.0.${id}`,
      prefix: [IP, "netns", "exec", ns],
    });
  }
  return specs;
}

// ---- metrics and sockets ---------------------------------------------------------------

async function metricsOf(n: TestNode): Promise<string> {
  const r = await fetch(`${n.metricsUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  assert.equal(r.status, 200);
  return await r.text();
}

function metricValue(text: string, name: string): number | undefined {
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m === null ? undefined : Number(m[1]);
}

/** Established TCP connections of process `pid` to (dialled) and from (accepted) `port`. */
async function raftSockets(pid: number, port: number): Promise<{ out: number; in: number }> {
  const inodes = new Set<string>();
  for await (const e of Deno.readDir(`/proc/${pid}/fd`)) {
    try {
      const target = await Deno.readLink(`/proc/${pid}/fd/${e.name}`);
      const m = target.match(/^socket:\[(\d+)\]$/);
      if (m) inodes.add(m[1]!);
    } catch { /* closed meanwhile */ }
  }
  let out = 0;
  let inbound = 0;
  for (const table of ["tcp", "tcp6"]) {
    const text = await Deno.readTextFile(`/proc/${pid}/net/${table}`).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== "01" || !inodes.has(f[9]!)) continue; // 01: ESTABLISHED
      const localPort = parseInt(f[1]!.split(":")[1]!, 16);
      const remotePort = parseInt(f[2]!.split(":")[1]!, 16);
      if (remotePort === port) out++;
      else if (localPort === port) inbound++;
    }
  }
  return { out, in: inbound };
}

const ALL = (n: number) => Array.from({ length: n }, (_, i) => i);

// ---- tests -----------------------------------------------------------------------------

Deno.test({
  name:
    "cluster: a SIGKILLed leader is replaced in bounded time; after restart it catches up and no acknowledged delta is lost, duplicated or reordered",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const shards = ALL(4);
    const cluster = await TestCluster.create(loopbackSpecs(60), shards.length);
    const ledger = new Ledger("crash");
    try {
      await cluster.startAll();
      const leaders = await waitForLeaders(cluster.nodes, shards);

      // Through a follower (forwarded to the leader through Raft) and through the leader.
      for (const shard of shards) {
        const leader = cluster.node(leaders.get(shard)!);
        const follower = cluster.others(leader.id)[0]!;
        for (let i = 0; i < 5; i++) await ledger.mustAppend(follower, shard);
        for (let i = 0; i < 5; i++) await ledger.mustAppend(leader, shard);
      }

      const victimId = leaders.get(0)!;
      const victim = cluster.node(victimId);
      const survivors = cluster.others(victimId);
      const led = shards.filter((s) => leaders.get(s) === victimId);

      // Appends keep going to the survivors through the failover: one sequential stream per
      // shard, alternating between the two survivors.
      let appending = true;
      const appender = Promise.all(shards.map(async (shard) => {
        for (let i = 0; appending && i < 10_000; i++) {
          const r = await ledger.append(survivors[i % survivors.length]!, shard, {
            deadlineMs: 4000,
          });
          if (!("sequence" in r)) await sleep(50);
        }
      }));

      const killedAt = performance.now();
      await victim.stop("SIGKILL");
      const failovers = await Promise.all(
        led.map((s) => waitForLeader(survivors, s, { not: victimId, timeoutMs: 30_000 })),
      );
      const failoverMs = failovers.map((f) => f.elapsedMs);
      const sinceKill = performance.now() - killedAt;
      console.log(
        `failover after SIGKILL of node ${victimId} (tick ${TICK_MS} ms): ` +
          led.map((s, i) =>
            `shard ${s} -> node ${failovers[i]!.leader} in ${failoverMs[i]!.toFixed(0)} ms`
          )
            .join(", ") +
          ` (all within ${sinceKill.toFixed(0)} ms)`,
      );
      for (const [i, ms] of failoverMs.entries()) {
        assert.ok(ms <= FAILOVER_MS_MAX, `shard ${led[i]}: new leader after ${ms} ms`);
      }

      // Let the appender run a little against the new leaders, then stop it.
      const ackedBefore = ledger.acked.length;
      await waitFor(
        "appends after the failover",
        () => Promise.resolve(ledger.acked.length >= ackedBefore + 20 ? true : undefined),
        { timeoutMs: 30_000 },
      );
      appending = false;
      await appender;
      for (const f of ledger.failed) {
        assert.ok(f.code === "UNAVAILABLE" || f.code === "DEADLINE_EXCEEDED", f.code);
      }
      const newLeaders = await waitForLeaders(survivors, shards, 30_000);
      for (const shard of shards) {
        const leader = cluster.node(newLeaders.get(shard)!);
        const follower = survivors.find((n) => n.id !== leader.id)!;
        await ledger.mustAppend(follower, shard);
        await ledger.mustAppend(leader, shard);
      }

      // The killed node restarts on the same data directory and catches up.
      victim.start();
      const restartedAt = performance.now();
      await waitForNode(victim);
      const readyMs = performance.now() - restartedAt;
      const catchUpMs = await waitForCatchUp(victim, shards, ledger, newLeaders, 60_000);
      const writeStarted = performance.now();
      for (const shard of shards) await ledger.mustAppend(victim, shard);
      console.log(
        `node ${victimId} restarted on its data dir: ready after ${readyMs.toFixed(0)} ms, ` +
          `following the leaders of all ${shards.length} shards with every acknowledged delta ` +
          `applied ${catchUpMs.toFixed(0)} ms later, first writes through it after ` +
          `${(performance.now() - writeStarted).toFixed(0)} ms; appends: ${ledger.summary()}`,
      );

      await checkLogs(cluster, shards, ledger);
    } catch (e) {
      console.error(cluster.logs());
      throw e;
    } finally {
      await cluster.close();
    }
  },
});

Deno.test({
  name:
    "cluster: a partitioned leader never acknowledges, the majority elects and writes on, and after healing the old leader steps down and catches up",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await removeNetwork();
    const shards = ALL(2);
    let cluster: TestCluster | null = null;
    const ledger = new Ledger("partition");
    try {
      const specs = await createNetwork();
      cluster = await TestCluster.create(specs, shards.length);
      await cluster.startAll();
      const leaders = await waitForLeaders(cluster.nodes, shards);
      for (const shard of shards) {
        const leader = cluster.node(leaders.get(shard)!);
        for (const n of cluster.nodes) await ledger.mustAppend(n, shard);
        await ledger.mustAppend(leader, shard);
      }

      const oldId = leaders.get(0)!;
      const old = cluster.node(oldId);
      const majority = cluster.others(oldId);
      const led = shards.filter((s) => leaders.get(s) === oldId);

      // Cut the old leader's cluster link; its client link stays up.
      await ip("-n", NS_BRIDGE, "link", "set", bridgePort(oldId), "down");
      const cutAt = performance.now();

      // The cut-off node keeps being asked to write, and must never acknowledge.
      const minority = (async () => {
        for (let round = 0; round < 2; round++) {
          await Promise.all(led.map(async (shard) => {
            const r = await ledger.append(old, shard, { deadlineMs: 8000, neverCommitted: true });
            assert.ok(!("sequence" in r), `node ${oldId}, cut off, acknowledged ${r.payload}`);
            assert.ok(r.code === "UNAVAILABLE" || r.code === "DEADLINE_EXCEEDED", r.code);
          }));
        }
      })();

      const elected = await Promise.all(
        led.map((s) => waitForLeader(majority, s, { not: oldId, timeoutMs: 30_000 })),
      );
      console.log(
        `partition of node ${oldId}: ` +
          led.map((s, i) =>
            `shard ${s} -> node ${elected[i]!.leader} (term ${elected[i]!.term}) in ${
              elected[i]!.elapsedMs.toFixed(0)
            } ms`
          ).join(", "),
      );
      for (const e of elected) assert.ok(e.elapsedMs <= FAILOVER_MS_MAX, `${e.elapsedMs} ms`);

      // The majority keeps accepting writes, through its leader and its follower.
      const newLeaders = await waitForLeaders(majority, shards, 30_000);
      for (let i = 0; i < 3; i++) {
        for (const shard of shards) for (const n of majority) await ledger.mustAppend(n, shard);
      }

      // check-quorum: the cut-off leader stops claiming leadership without hearing a quorum.
      const stepDown = await waitFor(`node ${oldId} to step down`, async () => {
        for (const shard of led) {
          if ((await health(old, shard)).leaderId === oldId) return undefined;
        }
        return performance.now() - cutAt;
      }, { timeoutMs: 30_000 });
      await minority;
      console.log(
        `node ${oldId} stopped claiming leadership ${stepDown.toFixed(0)} ms after the cut; ` +
          `${ledger.failed.filter((f) => f.neverCommitted).length} appends sent to it all failed`,
      );

      await ip("-n", NS_BRIDGE, "link", "set", bridgePort(oldId), "up");
      const catchUpMs = await waitForCatchUp(old, shards, ledger, newLeaders, 90_000);
      console.log(
        `after healing, node ${oldId} follows the new leaders in ${catchUpMs.toFixed(0)} ms`,
      );
      for (const shard of led) {
        const [mine, theirs]: ShardHealthResponse[] = await Promise.all([
          health(old, shard),
          health(cluster.node(newLeaders.get(shard)!), shard),
        ]);
        assert.equal(mine.term, theirs.term, `shard ${shard}: node ${oldId} is on the new term`);
        assert.notEqual(mine.leaderId, oldId);
      }
      for (const shard of shards) await ledger.mustAppend(old, shard);
      console.log(`appends: ${ledger.summary()}`);
      await checkLogs(cluster, shards, ledger);
    } catch (e) {
      if (cluster !== null) console.error(cluster.logs());
      throw e;
    } finally {
      await cluster?.close();
      await removeNetwork();
    }
  },
});

Deno.test({
  name:
    "cluster: many shards share one Raft connection per peer; maintenance mode refuses writes on every node and reads go on",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const shards = ALL(8);
    const cluster = await TestCluster.create(loopbackSpecs(61), shards.length);
    const ledger = new Ledger("shards");
    try {
      await cluster.startAll();
      const leaders = await waitForLeaders(cluster.nodes, shards);
      // Traffic on every shard, from a follower, so that every node talks on every shard.
      for (const shard of shards) {
        await ledger.mustAppend(cluster.node(leaders.get(shard) === 2 ? 3 : 2), shard);
      }

      // A node dials each peer it has messages for once, whatever the number of shards:
      // with 8 shards on 3 nodes some node leads at least 3, and heartbeats both peers.
      let busiest = { id: 0, led: 0, out: 0 };
      for (const n of cluster.nodes) {
        const text = await metricsOf(n);
        for (const shard of shards) {
          assert.match(text, new RegExp(`^kiseki_raft_leader\\{shard="${shard}"\\} [1-3]$`, "m"));
        }
        const peersWith = (metric: string) =>
          [...text.matchAll(new RegExp(`^${metric}\\{peer="(\\d+)"\\} (\\S+)$`, "gm"))]
            .filter((m) => Number(m[2]) > 0).map((m) => Number(m[1]));
        const sentTo = peersWith("kiseki_raft_transport_messages_sent_total");
        const heardFrom = peersWith("kiseki_raft_transport_messages_received_total");
        const connected = metricValue(text, "kiseki_raft_transport_connected_peers");
        const sockets = await raftSockets(n.role!.pid, PORTS.raft);
        const led = shards.filter((s) => leaders.get(s) === n.id).length;
        console.log(
          `node ${n.id}: leads ${led} of ${shards.length} shards, sent to peers [${sentTo}], ` +
            `heard from [${heardFrom}]; kiseki_raft_transport_connected_peers ${connected}; ` +
            `established Raft connections: ${sockets.out} dialled, ${sockets.in} accepted`,
        );
        assert.ok(sentTo.length <= 2 && heardFrom.length <= 2);
        assert.equal(connected, sentTo.length, `node ${n.id}: one connection per peer sent to`);
        assert.equal(sockets.out, sentTo.length, `node ${n.id}: dialled sockets`);
        assert.equal(sockets.in, heardFrom.length, `node ${n.id}: accepted sockets`);
        if (led > busiest.led) busiest = { id: n.id, led, out: sockets.out };
      }
      assert.ok(busiest.led >= 3, `some node leads 3 or more shards: ${JSON.stringify(busiest)}`);
      assert.equal(busiest.out, 2, `node ${busiest.id} sends ${busiest.led} shards over 2 sockets`);

      // Maintenance on one shard, set through a follower (forwarded like any command).
      const shard = 3;
      const other = 4;
      const follower = cluster.node(leaders.get(shard) === 1 ? 2 : 1);
      const on = await follower.client.SetMaintenance({ shardId: shard, enabled: true });
      assert.equal(on.maintenance, true);
      assert.ok(on.sequence > ledger.maxAcked(shard));
      for (const n of cluster.nodes) {
        await waitFor(
          `node ${n.id} in maintenance`,
          async () => (await health(n, shard)).maintenance ? true : undefined,
          { timeoutMs: 10_000 },
        );
      }
      for (const n of cluster.nodes) {
        const r = await ledger.append(n, shard);
        assert.ok(
          "code" in r && r.code === "FAILED_PRECONDITION",
          `node ${n.id}: ${JSON.stringify(r)}`,
        );
        const page = await n.client.ReadDeltas({ shardId: shard, fromSequence: 0, maxCount: 0 });
        assert.deepEqual(
          page.deltas.map((d) => decoder.decode(d.payload)),
          ledger.acked.filter((a) => a.shard === shard).map((a) => a.payload),
          `node ${n.id} reads shard ${shard} in maintenance`,
        );
        await ledger.mustAppend(n, other);
      }
      const off = await follower.client.SetMaintenance({ shardId: shard, enabled: false });
      assert.equal(off.maintenance, false);
      for (const n of cluster.nodes) {
        await waitFor(
          `node ${n.id} out of maintenance`,
          async () => (await health(n, shard)).maintenance ? undefined : true,
          { timeoutMs: 10_000 },
        );
        await ledger.mustAppend(n, shard);
      }
      // Refused appends are not in anyone's log.
      for (const f of ledger.failed) f.neverCommitted = f.code === "FAILED_PRECONDITION";
      await checkLogs(cluster, shards, ledger);
    } catch (e) {
      console.error(cluster.logs());
      throw e;
    } finally {
      await cluster.close();
    }
  },
});

Deno.test({
  name:
    "cluster: a lone node of a three-node peer list answers NOT_FOUND, INVALID_ARGUMENT and UNAVAILABLE (no quorum)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // FAILED_PRECONDITION needs a quorum to enter maintenance; the test above checks it.
    const cluster = await TestCluster.create(loopbackSpecs(62), 4);
    const node = cluster.node(1);
    try {
      node.start();
      await waitForNode(node);
      const c = node.client;
      const good = {
        shardId: 0,
        tenantId: TENANT,
        operation: "DELTA_OPERATION_CREATE" as const,
        hashedKey: new Uint8Array(32).fill(1),
        chunkRefs: [],
        payload: encoder.encode("lone"),
      };
      const expectCode = async (
        code: string,
        call: () => Promise<unknown>,
        pattern?: RegExp,
      ): Promise<void> => {
        try {
          await call();
        } catch (e) {
          assert.ok(e instanceof GrpcStatusError, String(e));
          assert.equal(e.codeName, code, e.message);
          if (pattern) assert.match(e.message, pattern);
          return;
        }
        assert.fail(`expected ${code}`);
      };

      await expectCode("NOT_FOUND", () => c.AppendDelta({ ...good, shardId: 4 }), /shard 4/);
      await expectCode(
        "NOT_FOUND",
        () => c.ReadDeltas({ shardId: 99, fromSequence: 1, maxCount: 1 }),
      );
      await expectCode("NOT_FOUND", () => c.ShardHealth({ shardId: 1000 }));
      await expectCode("NOT_FOUND", () => c.SetMaintenance({ shardId: 7, enabled: true }));
      await expectCode(
        "INVALID_ARGUMENT",
        () => c.AppendDelta({ ...good, tenantId: "acme" }),
        /tenant_id/,
      );
      await expectCode(
        "INVALID_ARGUMENT",
        () => c.AppendDelta({ ...good, hashedKey: new Uint8Array(16) }),
        /hashed_key has 16 bytes/,
      );
      await expectCode(
        "INVALID_ARGUMENT",
        () => c.AppendDelta({ ...good, operation: "DELTA_OPERATION_UNSPECIFIED" }),
      );
      await expectCode(
        "INVALID_ARGUMENT",
        () => c.AppendDelta({ ...good, payload: new Uint8Array(128 * 1024 + 1) }),
        /payload/,
      );

      const h = await c.ShardHealth({ shardId: 0 });
      assert.equal(h.state, "SHARD_STATE_NO_QUORUM");
      assert.equal(h.leaderId, 0);
      assert.deepEqual(h.members.map((m) => m.nodeId), [1, 2, 3]);
      const started = performance.now();
      await expectCode("UNAVAILABLE", () => c.AppendDelta(good, { deadlineMs: 20_000 }));
      await expectCode(
        "UNAVAILABLE",
        () => c.ReadDeltas({ shardId: 0, fromSequence: 1, maxCount: 1 }, { deadlineMs: 20_000 }),
      );
      await expectCode(
        "UNAVAILABLE",
        () => c.SetMaintenance({ shardId: 0, enabled: true }, { deadlineMs: 20_000 }),
      );
      console.log(
        `no quorum: three UNAVAILABLE answers in ${(performance.now() - started).toFixed(0)} ms`,
      );
    } catch (e) {
      console.error(cluster.logs());
      throw e;
    } finally {
      await cluster.close();
    }
  },
});
