// Entry of kiseki-admin: the operator CLI against any node. It speaks to a node's operator
// endpoint (KISEKI_METRICS_ADDR); commands beyond `status` arrive with the services they manage.

import { formatHostPort, parseHostPort } from "../base/mod.ts";
import type { ClusterView } from "../admin/mod.ts";
import { loadRoleConfig, VERSION } from "./_run.ts";

const USAGE = `kiseki-admin ${VERSION}: operator CLI

Usage: kiseki-admin status [--node host:port] [--json]
       kiseki-admin s3-credentials create|list [--tenant T] [--node host:port] [--json]
       kiseki-admin s3-credentials revoke --key ACCESS_KEY_ID [--node host:port]
       kiseki-admin scrub [status|start] [--node host:port] [--json]
       kiseki-admin pools [--node host:port] [--json]
       kiseki-admin tenants shred --tenant T --yes [--node host:port] [--json]
       kiseki-admin node list [--node host:port] [--json]
       kiseki-admin node add --id N [--raft-addr host:port] [--node host:port] [--json]
       kiseki-admin node drain|remove --id N [--wait] [--node host:port] [--json]
       kiseki-admin nfs-export add --path /P [--tenant T] [--bucket B] [--clients CIDR,...]
                    [--ro] [--no-root-squash] [--anon-uid N] [--anon-gid N] [--node host:port]
       kiseki-admin nfs-export list|remove [--path /P] [--node host:port] [--json]

  status          health and identity of a node (its KISEKI_METRICS_ADDR endpoint), and the
                  cluster as it sees it: nodes, shards (leader, term, members, commit
                  index, log window) and chunks short of their redundancy
  s3-credentials  S3 access keys of a tenant (32 hex digits, or 'default'), through the
                  node's operator API with the token in $KISEKI_DATA_DIR/config/admin-token
  scrub           background scrub of the node's chunks: the pass underway, the last
                  complete pass and its findings (status, the default), or start a pass now
  pools           storage pools: capacity, used and live bytes, devices, what GC reclaimed
  tenants shred   crypto-shred a tenant (32 hex digits, or 'default'): revokes its access
                  keys, destroys its key, drops its names and inline data and gives back its
                  chunks; irreversible, so it needs --yes
  node            cluster membership, through the cluster state (any node): list the nodes
                  and their state; add a node (started with the members as its
                  KISEKI_RAFT_PEERS, at --raft-addr, also --addr): it joins every Raft group
                  as a learner and votes once caught up, then takes data; drain a
                  node (its fragments move to the others; refused when that would lower the
                  node losses chunks survive); remove a drained node (it leaves every Raft group). --wait follows a
                  drain with a progress bar until every node has moved its chunks off it
  nfs-export      NFS exports (cluster state): a path clients mount, the tenant (32 hex
                  digits, or 'default') and optionally the one bucket it shows, the client
                  networks allowed (default loopback), read-only with --ro, root squashed
                  to --anon-uid/--anon-gid (65534) unless --no-root-squash. With no export,
                  the default tenant's buckets are served under / to loopback clients
  --node          the node's operator endpoint (default: KISEKI_METRICS_ADDR, 127.0.0.1:9090)
  --json          machine-readable output
`;

const REQUEST_TIMEOUT_MS = 5_000;
/** Room for a node add or remove (NODE_JOIN_WAIT_MS on the node, and some). */
const NODE_CHANGE_TIMEOUT_MS = 75_000;
/** A shred rekeys the node's environments: it may take a while on a large node. */
const SHRED_TIMEOUT_MS = 30 * 60_000;

export interface NodeStatus {
  node: string;
  health: string;
  ready: boolean;
  info: Record<string, string>;
  /** GET /ui/api/cluster, or null when the node does not serve it (not a server, starting). */
  cluster: ClusterView | null;
}

export async function main(args: string[]): Promise<number> {
  if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return args.length === 0 ? 2 : 0;
  }
  const [command, ...rest] = args;
  if (command === "s3-credentials") return await s3Credentials(rest);
  if (command === "scrub") return await scrub(rest);
  if (command === "pools") return await pools(rest);
  if (command === "tenants") return await tenants(rest);
  if (command === "node" || command === "nodes") return await nodeCommand(rest);
  if (command === "nfs-export") return await nfsExport(rest);
  if (command !== "status") {
    console.error(`kiseki-admin: unknown command '${command}' (see --help)`);
    return 2;
  }
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  let node = formatHostPort(config.metricsAddr);
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === "--json") json = true;
    else if (arg === "--node" && i + 1 < rest.length) node = rest[++i]!;
    else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  try {
    parseHostPort(node);
  } catch (e) {
    console.error(
      `kiseki-admin: --node ${node} is invalid: expected host:port (${(e as Error).message})`,
    );
    return 2;
  }
  let status: NodeStatus;
  try {
    status = await fetchStatus(node);
  } catch (e) {
    console.error(`kiseki-admin: cannot reach ${node}: ${(e as Error).message}`);
    return 1;
  }
  if (json) console.log(JSON.stringify(status, null, 2));
  else {
    const rows: [string, string][] = [
      ["node", status.node],
      ["health", status.health],
      ...Object.entries(status.info),
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
    if (status.cluster !== null) printCluster(status.cluster);
  }
  return status.ready ? 0 : 1;
}

async function s3Credentials(args: string[]): Promise<number> {
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  const [action, ...rest] = args;
  let node = formatHostPort(config.metricsAddr);
  let tenant = "default";
  let key = "";
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === "--json") json = true;
    else if (arg === "--node" && i + 1 < rest.length) node = rest[++i]!;
    else if (arg === "--tenant" && i + 1 < rest.length) tenant = rest[++i]!;
    else if (arg === "--key" && i + 1 < rest.length) key = rest[++i]!;
    else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  if (action !== "create" && action !== "list" && action !== "revoke") {
    console.error("kiseki-admin: s3-credentials needs create, list or revoke (see --help)");
    return 2;
  }
  if (action === "revoke" && key === "") {
    console.error("kiseki-admin: s3-credentials revoke needs --key ACCESS_KEY_ID");
    return 2;
  }
  const base = "/api/v1/s3-credentials";
  const path = action === "revoke"
    ? `${base}/${encodeURIComponent(key)}`
    : `${base}?tenant=${encodeURIComponent(tenant)}`;
  const answer = await callApi(config.dataDir, node, {
    method: action === "create" ? "POST" : action === "revoke" ? "DELETE" : "GET",
    path,
  });
  if (answer === null) return 1;
  const body = answer;
  if (json) console.log(JSON.stringify(body, null, 2));
  else if (action === "create") {
    console.log(`tenant             ${body.tenantId}`);
    console.log(`aws_access_key_id     = ${body.accessKeyId}`);
    console.log(`aws_secret_access_key = ${body.secretAccessKey}`);
    console.log("(the secret is shown only now)");
  } else if (action === "list") {
    const keys = body.keys as { accessKeyId: string; createdAtMs: number }[];
    for (const k of keys) console.log(`${k.accessKeyId}  ${new Date(k.createdAtMs).toISOString()}`);
    if (keys.length === 0) console.log(`no access keys for tenant ${body.tenant}`);
  } else console.log(`revoked ${key}`);
  return 0;
}

interface NfsExportAnswer {
  id: number;
  path: string;
  tenantId: string;
  bucket: string | null;
  clients: string[];
  access: string;
  rootSquash: boolean;
  anonUid: number;
  anonGid: number;
}

async function nfsExport(args: string[]): Promise<number> {
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  const [action, ...rest] = args;
  let node = formatHostPort(config.metricsAddr);
  let json = false;
  const body: Record<string, unknown> = {};
  const whole = (v: string, what: string): number | null => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < 0) {
      console.error(`kiseki-admin: ${what} needs a whole number`);
      return null;
    }
    return n;
  };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    const value = i + 1 < rest.length ? rest[i + 1]! : undefined;
    if (arg === "--json") json = true;
    else if (arg === "--ro") body.access = "ro";
    else if (arg === "--rw") body.access = "rw";
    else if (arg === "--no-root-squash") body.rootSquash = false;
    else if (arg === "--root-squash") body.rootSquash = true;
    else if (value === undefined) {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    } else if (arg === "--node") node = rest[++i]!;
    else if (arg === "--path") body.path = rest[++i]!;
    else if (arg === "--tenant") body.tenant = rest[++i]!;
    else if (arg === "--bucket") body.bucket = rest[++i]!;
    else if (arg === "--clients") body.clients = rest[++i]!.split(",").filter((c) => c !== "");
    else if (arg === "--anon-uid" || arg === "--anon-gid") {
      const n = whole(rest[++i]!, arg);
      if (n === null) return 2;
      body[arg === "--anon-uid" ? "anonUid" : "anonGid"] = n;
    } else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  if (action !== "add" && action !== "list" && action !== "remove") {
    console.error("kiseki-admin: nfs-export needs add, list or remove (see --help)");
    return 2;
  }
  if (action !== "list" && typeof body.path !== "string") {
    console.error(`kiseki-admin: nfs-export ${action} needs --path /P`);
    return 2;
  }
  const base = "/api/v1/nfs-exports";
  const answer = await callApi(config.dataDir, node, {
    method: action === "add" ? "POST" : action === "remove" ? "DELETE" : "GET",
    path: action === "remove" ? `${base}?path=${encodeURIComponent(body.path as string)}` : base,
    body: action === "add" ? body : undefined,
  });
  if (answer === null) return 1;
  if (json) {
    console.log(JSON.stringify(answer, null, 2));
    return 0;
  }
  if (action === "remove") {
    console.log(`removed NFS export ${answer.removed}`);
    return 0;
  }
  const list = action === "add"
    ? [answer.export as NfsExportAnswer]
    : answer.exports as NfsExportAnswer[];
  if (list.length === 0) {
    console.log("no NFS exports: the default tenant's buckets are served under / to loopback");
    return 0;
  }
  printTable(
    ["id", "path", "tenant", "bucket", "clients", "access", "root squash"],
    list.map((e) => [
      String(e.id),
      e.path,
      e.tenantId,
      e.bucket ?? "(all)",
      e.clients.join(","),
      e.access,
      e.rootSquash ? `yes (${e.anonUid}:${e.anonGid})` : "no",
    ]),
  );
  return 0;
}

async function scrub(args: string[]): Promise<number> {
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  let node = formatHostPort(config.metricsAddr);
  let json = false;
  let action = "status";
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--json") json = true;
    else if (arg === "--node" && i + 1 < args.length) node = args[++i]!;
    else if (i === 0 && (arg === "status" || arg === "start")) action = arg;
    else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  const answer = await callApi(config.dataDir, node, {
    method: action === "start" ? "POST" : "GET",
    path: action === "start" ? "/api/v1/scrub/start" : "/api/v1/scrub",
  });
  if (answer === null) return 1;
  if (json) console.log(JSON.stringify(answer, null, 2));
  else if (action === "start") {
    console.log("scrub pass started");
    printScrubStatus(answer.status as ScrubStatusView);
  } else printScrubStatus(answer as unknown as ScrubStatusView);
  return 0;
}

/** The fields of GET /api/v1/scrub this CLI prints (see ScrubStatus in mod/chunk). */
interface ScrubPassView {
  chunksChecked: number;
  fragmentsChecked: number;
  fragmentsDamaged: number;
  fragmentsRepaired: number;
  chunksUnrecoverable: number;
  bytesChecked: number;
  startedAtMs: number;
  finishedAtMs: number | null;
}
interface ScrubStatusView {
  pool: string;
  state: string;
  background: boolean;
  rateBytesPerSecond: number;
  passIntervalMs: number;
  passProgress: number | null;
  pass: ScrubPassView | null;
  lastPass: ScrubPassView | null;
  passesCompleted: number;
  nextPassAtMs: number | null;
  lastError: string | null;
}

function printScrubStatus(s: ScrubStatusView): void {
  const when = (ms: number) => new Date(ms).toISOString();
  const findings = (p: ScrubPassView) =>
    `${p.fragmentsDamaged} damaged, ${p.fragmentsRepaired} repaired, ` +
    `${p.chunksUnrecoverable} unrecoverable`;
  const pace = s.background
    ? `${(s.rateBytesPerSecond / 2 ** 20).toFixed(1)} MiB/s, a pass every ${
      s.passIntervalMs / 1000
    } s`
    : "background passes off (KISEKI_SCRUB_RATE=0)";
  const rows: [string, string][] = [
    ["pool", s.pool],
    ["state", `${s.state} (${pace})`],
    [
      "pass underway",
      s.pass === null
        ? "none"
        : `${s.pass.chunksChecked} chunks checked (about ${
          Math.round((s.passProgress ?? 0) * 100)
        }%), ${findings(s.pass)}; started ${when(s.pass.startedAtMs)}`,
    ],
    [
      "last pass",
      s.lastPass === null
        ? "none yet"
        : `${s.lastPass.chunksChecked} chunks, ${s.lastPass.fragmentsChecked} fragments, ${
          findings(s.lastPass)
        }; ${when(s.lastPass.startedAtMs)} to ${when(s.lastPass.finishedAtMs ?? 0)}`,
    ],
    ["passes", String(s.passesCompleted)],
    ["next pass", s.nextPassAtMs === null ? "-" : when(s.nextPassAtMs)],
  ];
  if (s.lastError !== null) rows.push(["last error", s.lastError]);
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
}

interface PoolAnswer {
  name: string;
  durability: string;
  capacityBytes: number;
  usedBytes: number;
  liveBytes: number;
  writableDevices: number;
  /** Chunks below full redundancy awaiting repair (a cluster's pools). */
  degradedChunks?: number;
  devices: {
    id: string;
    status: string;
    reason: string;
    capacityBytes: number;
    usedBytes: number;
    liveBytes: number;
    segments: number;
    segmentsFree: number;
  }[];
  gc: { erased: number; bytesErased: number; segmentsFreed: number; bytesMoved: number } | null;
}

async function pools(args: string[]): Promise<number> {
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  let node = formatHostPort(config.metricsAddr);
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--json") json = true;
    else if (arg === "--node" && i + 1 < args.length) node = args[++i]!;
    else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  const answer = await callApi(config.dataDir, node, { method: "GET", path: "/api/v1/pools" });
  if (answer === null) return 1;
  if (json) {
    console.log(JSON.stringify(answer, null, 2));
    return 0;
  }
  const list = answer.pools as PoolAnswer[];
  printTable(
    [
      "pool",
      "durability",
      "capacity",
      "used",
      "live",
      "free",
      "writable",
      "degraded",
      "gc erased",
      "gc moved",
    ],
    list.map((p) => [
      p.name,
      p.durability,
      formatBytes(p.capacityBytes),
      formatBytes(p.usedBytes),
      formatBytes(p.liveBytes),
      formatBytes(Math.max(0, p.capacityBytes - p.usedBytes)),
      `${p.writableDevices}/${p.devices.length}`,
      String(p.degradedChunks ?? 0),
      p.gc === null ? "-" : formatBytes(p.gc.bytesErased),
      p.gc === null ? "-" : formatBytes(p.gc.bytesMoved),
    ]),
  );
  console.log("");
  printTable(
    ["device", "pool", "status", "capacity", "used", "live", "segments free"],
    list.flatMap((p) =>
      p.devices.map((d) => [
        d.id,
        p.name,
        d.reason === "" ? d.status : `${d.status} (${d.reason})`,
        formatBytes(d.capacityBytes),
        formatBytes(d.usedBytes),
        formatBytes(d.liveBytes),
        `${d.segmentsFree}/${d.segments}`,
      ])
    ),
  );
  return 0;
}

/** The cluster view as three tables: nodes, shards, chunks. */
export function printCluster(view: ClusterView): void {
  const bytes = (n: number | null) => n === null ? "?" : formatBytes(n);
  console.log("");
  printTable(
    ["node", "address", "state", "devices", "capacity", "used"],
    view.nodes.map((n) => [
      `${n.id}${n.self ? " *" : ""}`,
      n.address,
      (n.stateSource === "cluster" ? n.state : `${n.state} (${n.stateSource})`) +
      (n.drain === undefined ? "" : ` ${
        progressBar(
          n.drain.evacuatedBy.length,
          n.drain.evacuatedBy.length + n.drain.waitingFor.length,
          10,
        )
      } nodes moved off`),
      n.devices === null
        ? "?"
        : `${n.devices.filter((d) => d.status === "ok").length}/${n.devices.length} ok`,
      bytes(n.capacityBytes),
      bytes(n.usedBytes),
    ]),
  );
  console.log("");
  printTable(
    ["shard", "leader", "term", "commit", "applied", "state", "members", "log"],
    view.shards.map((s) => [
      String(s.shardId),
      s.leader === 0 ? "none" : String(s.leader),
      String(s.term),
      String(s.commit),
      String(s.applied),
      s.state,
      s.members.map((m) => `${m.id}:${m.role}${m.match > 0 ? `@${m.match}` : ""}`).join(" "),
      `${s.log.firstIndex}..${s.log.lastIndex} (snapshot ${s.log.snapshotIndex})`,
    ]),
  );
  console.log("");
  const r = view.chunks.rebalance;
  printTable(
    ["degraded chunks", "repairing chunks", "rebalance"],
    [[
      String(view.chunks.degraded),
      String(view.chunks.repairing),
      r === undefined
        ? "-"
        : r.state === "idle"
        ? `idle (last: ${r.moved} fragments moved)`
        : `${progressBar(r.examined, r.total)} ${r.moved} fragments moved`,
    ]],
  );
}

/** `[#####.....] 50% (5/10)`: a fixed-width bar for long operations. */
export function progressBar(done: number, total: number, width = 20): string {
  const fraction = total <= 0 ? 1 : Math.min(1, Math.max(0, done / total));
  const filled = Math.round(fraction * width);
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${Math.floor(fraction * 100)}% ` +
    `(${done}/${total})`;
}

interface NodeAnswer {
  id: number;
  addr: string;
  state: string;
  sinceMs: number;
  link: string | null;
  evacuatedBy?: number[];
  waitingFor?: number[];
  fragmentsHere: number | null;
}

/** Pause between polls of a drain followed with --wait. */
const DRAIN_POLL_MS = 1_000;
/** A drain followed with --wait gives up after this long (the drain itself goes on). */
const DRAIN_WAIT_MS = 6 * 3_600_000;

async function nodeCommand(args: string[]): Promise<number> {
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  const [action, ...rest] = args;
  let node = formatHostPort(config.metricsAddr);
  let json = false;
  let wait = false;
  let id: number | null = null;
  let addr: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === "--json") json = true;
    else if (arg === "--wait") wait = true;
    else if (arg === "--node" && i + 1 < rest.length) node = rest[++i]!;
    else if ((arg === "--addr" || arg === "--raft-addr") && i + 1 < rest.length) {
      addr = rest[++i]!;
    } else if (arg === "--id" && i + 1 < rest.length && /^[0-9]{1,10}$/.test(rest[i + 1]!)) {
      id = Number(rest[++i]);
    } else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  const list = action === undefined || action === "list";
  if (!list && !["add", "drain", "remove"].includes(action)) {
    console.error(`kiseki-admin: node needs list, add, drain or remove (see --help)`);
    return 2;
  }
  if (!list && id === null) {
    console.error(`kiseki-admin: node ${action} needs --id N`);
    return 2;
  }
  let answer = list
    ? await callApi(config.dataDir, node, { method: "GET", path: "/api/v1/nodes" })
    : await callApi(config.dataDir, node, {
      method: "POST",
      path: `/api/v1/nodes/${id}/${action}`,
      body: addr === undefined ? {} : { addr },
      // An add waits for the node to catch up and vote in every Raft group.
      timeoutMs: NODE_CHANGE_TIMEOUT_MS,
    });
  if (answer === null) return 1;
  if (wait && action === "drain") {
    const started = Date.now();
    for (;;) {
      const n = (answer!.nodes as NodeAnswer[]).find((x) => x.id === id);
      const waiting = n?.waitingFor ?? [];
      const done = n?.evacuatedBy?.length ?? 0;
      if (!json) {
        const local = n?.fragmentsHere ?? 0;
        console.error(
          `node ${id} draining ${progressBar(done, done + waiting.length)} ` +
            `nodes done; ${local} fragment(s) of ${node}'s chunks still there` +
            (waiting.length > 0 ? `; waiting for ${waiting.join(", ")}` : ""),
        );
      }
      if (n === undefined || n.state !== "draining" || waiting.length === 0) break;
      if (Date.now() - started > DRAIN_WAIT_MS) {
        console.error(`kiseki-admin: stopped waiting; the drain of node ${id} goes on`);
        return 1;
      }
      await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
      const next = await callApi(config.dataDir, node, { method: "GET", path: "/api/v1/nodes" });
      if (next === null) return 1;
      answer = next;
    }
  }
  if (json) {
    console.log(JSON.stringify(answer, null, 2));
    return 0;
  }
  if (!list) console.log(`node ${id}: ${action} accepted`);
  printTable(
    ["node", "address", "state", "link", "drain"],
    (answer.nodes as NodeAnswer[]).map((n) => [
      String(n.id),
      n.addr,
      n.state,
      n.link ?? "self",
      n.state !== "draining"
        ? "-"
        : (n.waitingFor ?? []).length === 0
        ? "evacuated: ready to remove"
        : `${(n.evacuatedBy ?? []).length} node(s) done, waiting for ${n.waitingFor!.join(", ")}`,
    ]),
  );
  return 0;
}

function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  console.log(line(headers));
  for (const row of rows) console.log(line(row));
}

/** Bytes in binary units, as `ls -h` and the pool specification write them. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

async function tenants(args: string[]): Promise<number> {
  const config = loadRoleConfig("admin");
  if (config === null) return 2;
  const [action, ...rest] = args;
  let node = formatHostPort(config.metricsAddr);
  let tenant = "";
  let yes = false;
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === "--json") json = true;
    else if (arg === "--yes") yes = true;
    else if (arg === "--node" && i + 1 < rest.length) node = rest[++i]!;
    else if (arg === "--tenant" && i + 1 < rest.length) tenant = rest[++i]!;
    else {
      console.error(`kiseki-admin: unknown argument '${arg}' (see --help)`);
      return 2;
    }
  }
  if (action !== "shred") {
    console.error("kiseki-admin: tenants needs shred (see --help)");
    return 2;
  }
  if (tenant === "") {
    console.error("kiseki-admin: tenants shred needs --tenant T");
    return 2;
  }
  if (!yes) {
    console.error(
      `kiseki-admin: shredding tenant ${tenant} destroys its data for good; add --yes to do it`,
    );
    return 2;
  }
  const body = await callApi(config.dataDir, node, {
    method: "POST",
    path: `/api/v1/tenants/${encodeURIComponent(tenant)}/shred`,
    body: { confirm: tenant },
    timeoutMs: SHRED_TIMEOUT_MS,
  });
  if (body === null) return 1;
  if (json) console.log(JSON.stringify(body, null, 2));
  else {
    console.log(`tenant ${body.tenant} shredded`);
    for (const k of Object.keys(body).filter((k) => k !== "tenant")) {
      console.log(`  ${k.padEnd(22)} ${body[k]}`);
    }
  }
  return 0;
}

/**
 * One call to a node's operator API with the admin token of `dataDir`: the JSON body of a
 * 2xx answer, or null after printing one line on what failed.
 */
export async function callApi(
  dataDir: string,
  node: string,
  request: {
    method: "GET" | "POST" | "PUT" | "DELETE";
    path: string;
    body?: unknown;
    timeoutMs?: number;
  },
): Promise<Record<string, unknown> | null> {
  const tokenPath = `${dataDir}/config/admin-token`;
  let token: string;
  try {
    token = (await Deno.readTextFile(tokenPath)).trim();
  } catch (e) {
    console.error(
      `kiseki-admin: cannot read the admin token ${tokenPath}: ${(e as Error).message}`,
    );
    return null;
  }
  let response: Response;
  try {
    response = await fetch(`http://${node}${request.path}`, {
      method: request.method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(request.body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: request.body === undefined ? undefined : JSON.stringify(request.body),
      signal: AbortSignal.timeout(request.timeoutMs ?? REQUEST_TIMEOUT_MS),
    });
  } catch (e) {
    console.error(`kiseki-admin: cannot reach ${node}: ${(e as Error).message}`);
    return null;
  }
  let body: Record<string, unknown>;
  try {
    body = await response.json() as Record<string, unknown>;
  } catch {
    console.error(`kiseki-admin: ${node} answered ${response.status} without a JSON body`);
    return null;
  }
  if (!response.ok) {
    console.error(`kiseki-admin: ${body.error ?? response.status}: ${body.message ?? ""}`);
    return null;
  }
  return body;
}

export async function fetchStatus(node: string): Promise<NodeStatus> {
  const base = `http://${node}`;
  const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  const health = await fetch(`${base}/health`, { signal });
  const healthText = (await health.text()).trim();
  const metrics = await fetch(`${base}/metrics`, { signal });
  const metricsText = await metrics.text();
  const info: Record<string, string> = {};
  const line = metricsText.split("\n").find((l) => l.startsWith("kiseki_node_info{"));
  if (line) {
    for (const m of line.matchAll(/(\w+)="([^"]*)"/g)) info[m[1]!] = m[2]!;
  }
  const clusterAnswer = await fetch(`${base}/ui/api/cluster`, { signal });
  const cluster = clusterAnswer.status === 200 ? await clusterAnswer.json() as ClusterView : null;
  if (cluster === null) await clusterAnswer.body?.cancel();
  return { node, health: healthText, ready: health.status === 200, info, cluster };
}

if (import.meta.main) Deno.exit(await main(Deno.args));
