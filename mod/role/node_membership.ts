// Node membership on a storage node. Every node watches its peers' Raft links; the node
// leading the cluster-state group records a peer down once it has been unreachable past
// KISEKI_NODE_DOWN_GRACE (its fragments are then rebuilt elsewhere by every writer) and up
// again once it answers steadily. Each node reports the draining nodes its own chunks no
// longer use, and a removal waits for those reports. The operator API behind
// `kiseki admin node add|drain|remove` lives here too: an add takes the node into every Raft
// group (learner, then voter once caught up) before it takes data, a removal takes it out
// of every group once its data is off it.

import { assert, formatHostPort, type HostPort, parseHostPort } from "../base/mod.ts";
import {
  type ClusterChunkStore,
  type Durability,
  formatDurability,
  nodeLossesSurvivable,
} from "../chunk/mod.ts";
import {
  CLUSTER_STATE_GROUP_ID,
  type ClusterNode,
  type ClusterStateService,
  ClusterStateUnavailableError,
} from "../control/mod.ts";
import { adminJson, type DrainView } from "../admin/mod.ts";
import type { Logger } from "../obs/mod.ts";
import { RaftUnavailableError } from "../raft/host.ts";
import type { Cluster } from "./cluster.ts";

/** How often peers' links are looked at. */
export const NODE_MONITOR_INTERVAL_MS = 1_000;
/** A node recorded down must stay reachable this long before it is recorded up again. */
export const NODE_RETURN_STABLE_MS = 3_000;
/** How often this node looks for draining nodes its chunks no longer use. */
export const NODE_EVACUATION_CHECK_MS = 5_000;
/** How long an add waits for the node to become a voter of every group (it must catch up). */
export const NODE_JOIN_WAIT_MS = 60_000;
/** How long a removal waits for the node to leave every group. */
export const NODE_LEAVE_WAIT_MS = 30_000;
/** Pause between tries of a membership change (another change of the group may be pending). */
const MEMBERSHIP_RETRY_MS = 250;

/** What the monitor knows of one peer's link. */
interface PeerSeen {
  /** First observation of the current run of "down" ones, or null while it is up. */
  downSinceMs: number | null;
  /** First observation of the current run of "up" ones, or null while it is down. */
  upSinceMs: number | null;
}

export interface NodeTransition {
  id: number;
  addr: string;
  state: "up" | "down";
  reason: string;
}

/**
 * The state changes the leader of the cluster state should record now: a node recorded up
 * whose link has been down past the grace period goes down; a node recorded down whose link
 * has been up for NODE_RETURN_STABLE_MS comes back up. Pure.
 */
export function nodeTransitions(input: {
  self: number;
  nodes: readonly ClusterNode[];
  seen: ReadonlyMap<number, PeerSeen>;
  nowMs: number;
  graceMs: number;
}): NodeTransition[] {
  const out: NodeTransition[] = [];
  for (const n of input.nodes) {
    if (n.id === input.self) continue;
    const seen = input.seen.get(n.id);
    if (seen === undefined) continue;
    // Counted from the first look that found it away: never shorter than the grace.
    const awayMs = seen.downSinceMs === null ? 0 : input.nowMs - seen.downSinceMs;
    if (n.state === "up" && seen.downSinceMs !== null && awayMs >= input.graceMs) {
      out.push({
        id: n.id,
        addr: n.addr,
        state: "down",
        reason: `unreachable for ${Math.round(awayMs / 1000)} s (KISEKI_NODE_DOWN_GRACE ` +
          `${Math.round(input.graceMs / 1000)} s)`,
      });
    } else if (
      n.state === "down" && seen.upSinceMs !== null &&
      input.nowMs - seen.upSinceMs >= NODE_RETURN_STABLE_MS
    ) {
      out.push({ id: n.id, addr: n.addr, state: "up", reason: "reachable again" });
    }
  }
  return out;
}

export interface NodeMembershipOptions {
  state: ClusterStateService;
  cluster: Cluster;
  /** The node's cluster chunk store (none on a lone node). */
  store: () => ClusterChunkStore | undefined;
  graceMs: number;
  logger: Logger;
  now?: () => number;
  /** Also told where each recorded node's Raft port is (the chunk fabric dials it). */
  onPeerAddress?: (id: number, addr: HostPort) => void;
}

/** Runs the monitor and the evacuation reports until stop(). */
export function startNodeMembership(options: NodeMembershipOptions): { stop(): Promise<void> } {
  const { state, cluster, logger } = options;
  const now = options.now ?? (() => performance.now());
  const self = cluster.host.nodeId;
  const seen = new Map<number, PeerSeen>();
  let lastEvacuationCheck = -Infinity;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> = Promise.resolve();

  const observe = (t: number) => {
    for (const p of cluster.transport.peerLinks()) {
      const s: PeerSeen = seen.get(p.id) ?? { downSinceMs: null, upSinceMs: null };
      if (p.link === "up") {
        s.downSinceMs = null;
        s.upSinceMs ??= t;
      } else {
        s.upSinceMs = null;
        s.downSinceMs ??= t;
      }
      seen.set(p.id, s);
    }
    assert(seen.size <= cluster.transport.peerLinks().length + 1, "one record per peer");
  };

  const leading = () => {
    const status = cluster.host.status(CLUSTER_STATE_GROUP_ID);
    return status.role === "leader" && status.lead === self;
  };

  const pass = async () => {
    const t = now();
    observe(t);
    if (!state.isReady()) return;
    // Members added after start-up are dialled at the address the cluster state records
    // (after a restart, once the log that carried it is compacted, the only place it is).
    for (const n of state.nodes()) {
      if (n.id === self || n.state === "removed") continue;
      let addr: HostPort;
      try {
        addr = parseHostPort(n.addr);
      } catch {
        continue;
      }
      cluster.setPeerAddress(n.id, addr);
      options.onPeerAddress?.(n.id, addr);
    }
    if (leading()) {
      for (
        const change of nodeTransitions({
          self,
          nodes: state.nodes(),
          seen,
          nowMs: t,
          graceMs: options.graceMs,
        })
      ) {
        logger.warn(change.state === "down" ? "node marked down" : "node marked up", {
          peer: change.id,
          reason: change.reason,
        });
        await state.setNode(change.id, change.addr, change.state);
      }
    }
    const store = options.store();
    if (store === undefined || t - lastEvacuationCheck < NODE_EVACUATION_CHECK_MS) return;
    lastEvacuationCheck = t;
    for (const n of state.nodes()) {
      if (n.state !== "draining" || state.evacuatedBy(n.id).includes(self)) continue;
      if (store.fragmentsOn(n.id, 1) > 0) continue;
      if (await state.reportEvacuated(n.id, n.sinceMs)) {
        logger.info("this node's chunks are off the draining node", { peer: n.id });
      }
    }
  };

  const loop = () => {
    if (stopped) return;
    running = pass().catch((e) => {
      if (!(e instanceof ClusterStateUnavailableError)) {
        logger.warn("node membership pass failed", { error: (e as Error).message });
      }
    }).finally(() => {
      if (!stopped) timer = setTimeout(loop, NODE_MONITOR_INTERVAL_MS);
    });
  };
  loop();
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}

// ---- operator API ----------------------------------------------------------------------------

export interface NodesApiOptions {
  state: ClusterStateService;
  /** Ids of the configured Raft peers (the nodes this release can talk to). */
  configured: readonly number[];
  /** The pool's durability across the cluster. */
  durability: Durability;
  store: () => ClusterChunkStore | undefined;
  /** This node's Raft link to `id` ("up", "down", "never"; null for itself). */
  link: (id: number) => "up" | "down" | "never" | null;
  logger: Logger;
  /**
   * The Raft groups a node is added to and removed from; without it only configured
   * nodes are recorded (their groups already have them).
   */
  raft?: RaftMembership;
  /** Whether this node's sandbox lets it dial `addr` (KISEKI_PEER_NETWORKS); default yes. */
  canDial?: (addr: HostPort) => boolean;
}

/** What node add and remove need of the metadata plane. */
export type RaftMembership = Pick<Cluster, "host">;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Makes `id` a voter of every Raft group: added as a learner (carrying its address), then
 * promoted by each group's leader once caught up. Waits until this node has applied the
 * promotion in every group; throws RaftUnavailableError past NODE_JOIN_WAIT_MS.
 */
export async function joinRaftGroups(
  raft: RaftMembership,
  id: number,
  addr: string,
  logger: Logger,
): Promise<void> {
  const host = raft.host;
  const deadline = performance.now() + NODE_JOIN_WAIT_MS;
  for (const shardId of host.shardIds()) {
    for (;;) {
      const conf = host.conf(shardId);
      if (conf.voters.includes(id)) break;
      if (performance.now() > deadline) {
        throw new RaftUnavailableError(
          `node ${id} is not a voter of group ${shardId} after ${NODE_JOIN_WAIT_MS} ms ` +
            `(voters ${conf.voters.join(",")}, learners ${conf.learners.join(",")}): is it ` +
            `running with the members as its KISEKI_RAFT_PEERS and reachable at ${addr}?`,
        );
      }
      if (!conf.learners.includes(id)) {
        try {
          await host.changeMembership(shardId, { type: "add_learner", nodeId: id, addr });
          logger.info("node added to a Raft group as a learner", { peer: id, shard: shardId });
        } catch (e) {
          if (!(e instanceof RaftUnavailableError)) throw e;
        }
      }
      await sleep(MEMBERSHIP_RETRY_MS);
    }
  }
}

/** Takes `id` out of every Raft group; throws RaftUnavailableError past NODE_LEAVE_WAIT_MS. */
export async function leaveRaftGroups(
  raft: RaftMembership,
  id: number,
  logger: Logger,
): Promise<void> {
  const host = raft.host;
  const deadline = performance.now() + NODE_LEAVE_WAIT_MS;
  for (const shardId of host.shardIds()) {
    for (;;) {
      const conf = host.conf(shardId);
      if (!conf.voters.includes(id) && !conf.learners.includes(id)) break;
      if (performance.now() > deadline) {
        throw new RaftUnavailableError(
          `node ${id} is still a member of group ${shardId} after ${NODE_LEAVE_WAIT_MS} ms`,
        );
      }
      try {
        await host.changeMembership(shardId, { type: "remove_node", nodeId: id });
        logger.info("node removed from a Raft group", { peer: id, shard: shardId });
      } catch (e) {
        if (!(e instanceof RaftUnavailableError)) throw e;
        await sleep(MEMBERSHIP_RETRY_MS);
      }
    }
  }
}

/**
 * The nodes still to report draining node `node` evacuated before it can be removed: every
 * node recorded up, and the drained node itself (its own chunks) while it answers.
 */
function evacuationWaitsFor(options: NodesApiOptions, node: ClusterNode): number[] {
  const reported = new Set(options.state.evacuatedBy(node.id));
  const self = options.state.nodeId;
  return options.state.nodes()
    .filter((n) =>
      n.state === "up" || (n.id === node.id && (n.id === self || options.link(n.id) === "up"))
    )
    .map((n) => n.id)
    .filter((id) => !reported.has(id));
}

/** Nodes that take new fragments: recorded up, or configured and not recorded yet. */
function dataNodes(options: NodesApiOptions): number[] {
  const recorded = new Map(options.state.nodes().map((n) => [n.id, n.state]));
  const ids = new Set([...recorded.keys(), ...options.configured]);
  return [...ids].filter((id) => (recorded.get(id) ?? "up") === "up");
}

/** Where the drain of `id` stands, or null when it is not draining. */
export function drainOf(options: NodesApiOptions, id: number): DrainView | null {
  const node = options.state.nodes().find((n) => n.id === id);
  if (node?.state !== "draining") return null;
  return {
    evacuatedBy: options.state.evacuatedBy(id),
    waitingFor: evacuationWaitsFor(options, node),
  };
}

export function nodesView(options: NodesApiOptions): Record<string, unknown> {
  const store = options.store();
  return {
    durability: formatDurability(options.durability),
    nodes: options.state.nodes().map((n) => ({
      ...n,
      link: options.link(n.id),
      ...(n.state === "draining"
        ? {
          evacuatedBy: options.state.evacuatedBy(n.id),
          waitingFor: evacuationWaitsFor(options, n),
        }
        : {}),
      // This node's own chunks with a fragment still there (what its drain must move); a
      // count walks this node's index, so it is made for draining nodes only.
      fragmentsHere: store === undefined || n.state !== "draining" ? null : store.fragmentsOn(n.id),
    })),
    chunks: store === undefined ? null : {
      degraded: store.degradedCount(),
      repairing: store.repairingCount(),
      rebalance: store.rebalanceProgress(),
    },
  };
}

/** The handler of /api/v1/nodes: GET the list, POST /api/v1/nodes/{id}/add|drain|remove. */
export async function nodesApi(
  req: Request,
  url: URL,
  options: NodesApiOptions,
): Promise<Response> {
  const { state } = options;
  try {
    if (url.pathname === "/api/v1/nodes" && req.method === "GET") {
      await state.sync();
      return adminJson(200, nodesView(options));
    }
    const match = /^\/api\/v1\/nodes\/([0-9]{1,10})\/(add|drain|remove)$/.exec(url.pathname);
    if (match === null || req.method !== "POST") {
      return adminJson(405, {
        error: "method_not_allowed",
        message: `${req.method} ${url.pathname}`,
      });
    }
    const id = Number(match[1]);
    const action = match[2]!;
    await state.sync();
    const node = state.nodes().find((n) => n.id === id);
    const refuse = (message: string) => adminJson(409, { error: "refused", message });
    if (action === "add") {
      let body: { addr?: unknown } = {};
      try {
        body = await req.json() as { addr?: unknown };
      } catch {
        // An add without a body keeps the address the node had.
      }
      if (!options.configured.includes(id) && options.raft === undefined) {
        return refuse(
          `node ${id} is not in KISEKI_RAFT_PEERS, and this node runs no Raft groups to add ` +
            `it to`,
        );
      }
      if (node !== undefined && node.state !== "removed") {
        return refuse(`node ${id} is a member already (${node.state})`);
      }
      const addr = typeof body.addr === "string" ? body.addr : node?.addr;
      if (addr === undefined) {
        return adminJson(400, {
          error: "invalid_argument",
          message: `node ${id} was never a member: give its address ({"addr": "host:port"})`,
        });
      }
      try {
        parseHostPort(addr);
      } catch (e) {
        return adminJson(400, {
          error: "invalid_argument",
          message: `addr ${addr} is not host:port: ${(e as Error).message}`,
        });
      }
      const raftAddr = formatHostPort(parseHostPort(addr));
      if (options.canDial !== undefined && !options.canDial(parseHostPort(addr))) {
        return refuse(
          `this node may not dial ${raftAddr}: start the nodes with KISEKI_PEER_NETWORKS ` +
            `covering the new node's address (or name it in KISEKI_RAFT_PEERS)`,
        );
      }
      // A voter first: it takes data only once it holds the metadata (and the cluster key,
      // which its peers give to members of the cluster-state group).
      if (options.raft !== undefined) {
        await joinRaftGroups(options.raft, id, raftAddr, options.logger);
      }
      await state.setNode(id, raftAddr, "up");
      options.logger.info("node added", { peer: id, addr: raftAddr });
      return adminJson(200, nodesView(options));
    }
    if (node === undefined) return adminJson(404, { error: "not_found", message: `no node ${id}` });
    if (action === "drain") {
      if (node.state === "draining") return adminJson(200, nodesView(options));
      if (node.state === "removed") return refuse(`node ${id} is removed`);
      const before = dataNodes(options);
      const after = before.filter((n) => n !== id);
      const d = options.durability;
      const lossesBefore = nodeLossesSurvivable(d, before.length);
      const lossesAfter = nodeLossesSurvivable(d, after.length);
      if (after.length === 0 || lossesAfter < lossesBefore) {
        return refuse(
          `draining node ${id} would leave ${after.length} node(s) for ${formatDurability(d)}: ` +
            `chunks would survive the loss of ${lossesAfter} node(s) instead of ` +
            `${lossesBefore}; add a node first`,
        );
      }
      await state.setNode(id, node.addr, "draining");
      options.logger.info("node draining", { peer: id });
      return adminJson(200, nodesView(options));
    }
    // remove
    if (node.state === "removed") return adminJson(200, nodesView(options));
    if (node.state !== "draining") {
      return refuse(`node ${id} is ${node.state}: drain it first (kiseki admin node drain)`);
    }
    const waiting = evacuationWaitsFor(options, node);
    if (waiting.length > 0) {
      return refuse(
        `node ${id} still holds fragments of chunks written by node(s) ${waiting.join(", ")} ` +
          `(they have not reported it evacuated yet); try again when the drain is done`,
      );
    }
    if (id === state.nodeId && options.raft !== undefined) {
      // A node taken out of a group may never hear that the change committed: it could not
      // tell when it is done. Another member can.
      return refuse(`node ${id} is the node answering: ask another node to remove it (--node)`);
    }
    // Out of the groups first: a node recorded removed but still voting would count toward
    // (and could block) every quorum.
    if (options.raft !== undefined) await leaveRaftGroups(options.raft, id, options.logger);
    await state.setNode(id, node.addr, "removed");
    options.logger.info("node removed", { peer: id });
    return adminJson(200, nodesView(options));
  } catch (e) {
    if (e instanceof ClusterStateUnavailableError || e instanceof RaftUnavailableError) {
      return adminJson(503, { error: "unavailable", message: e.message });
    }
    options.logger.error("node API failed", { error: e });
    return adminJson(500, { error: "internal", message: (e as Error).message });
  }
}
