// The cluster as one node sees it, for GET /ui/api/cluster and `kiseki admin status`: the
// nodes (address, state, devices and capacity where known), each shard's Raft group
// (leader, term, members, commit index, log window) and the chunks short of their
// redundancy. The role gathers the inputs; this module only shapes them, so a source that
// knows more later (node states and remote devices from cluster state, chunk repair
// counts) plugs in without changing the answer's form.

import type { PoolReport } from "../chunk/mod.ts";
import { adminJson } from "./http.ts";

/** What a node is, as this node knows it. */
export type NodeViewState =
  /** This node, answering. */
  | "up"
  /** A peer whose Raft connection is up. */
  | "reachable"
  /** A peer this node is failing to reach. */
  | "unreachable"
  /** A peer this node has not tried to reach yet. */
  | "unknown"
  /** States the cluster state records (a node marked down, draining, removed). */
  | "down"
  | "draining"
  | "removed";

export interface DeviceView {
  pool: string;
  device: string;
  path: string;
  status: string;
  capacityBytes: number;
  usedBytes: number;
  liveBytes: number;
}

export interface NodeView {
  id: number;
  address: string;
  self: boolean;
  state: NodeViewState;
  /** Where the state comes from: this node's transport, or the replicated cluster state. */
  stateSource: "local" | "transport" | "cluster";
  /** Null when this node does not know the node's devices. */
  devices: DeviceView[] | null;
  capacityBytes: number | null;
  usedBytes: number | null;
  /** A draining node: the nodes that moved their chunks off it, and those still to. */
  drain?: DrainView;
}

export interface DrainView {
  evacuatedBy: number[];
  waitingFor: number[];
}

export interface ShardMemberView {
  id: number;
  role: string;
  /** Highest index known replicated to the member (the leader knows; others report 0). */
  match: number;
}

export interface ShardView {
  shardId: number;
  leader: number;
  term: number;
  commit: number;
  applied: number;
  state: string;
  members: ShardMemberView[];
  log: { firstIndex: number; lastIndex: number; snapshotIndex: number };
}

export interface ChunkHealthView {
  /** Chunks stored with less than their full redundancy. */
  degraded: number;
  /** Degraded chunks the repairer is rebuilding (not blocked on missing fragments). */
  repairing: number;
  /** Fragments moving after the last membership change (a node joined, drains, went down). */
  rebalance?: { state: "idle" | "running"; examined: number; total: number; moved: number };
}

export interface ClusterView {
  nodeId: number;
  generatedAt: string;
  nodes: NodeView[];
  shards: ShardView[];
  chunks: ChunkHealthView;
}

export interface ClusterViewInputs {
  nodeId: number;
  /** Every member this node knows, itself included, with its transport link when a peer. */
  members: { id: number; address: string; link: "up" | "down" | "never" | null }[];
  /** The node's state in the replicated cluster state, when that knows it (null: it does not). */
  clusterState?: (nodeId: number) => NodeViewState | null;
  /** A node's pools (this node's own reports; others' from cluster state when it has them). */
  pools: (nodeId: number) => readonly PoolReport[] | null;
  /** Where the drain of a draining node stands (null: not draining). */
  drain?: (nodeId: number) => DrainView | null;
  shards: () => ShardView[];
  chunks?: () => ChunkHealthView;
}

function deviceViews(pools: readonly PoolReport[]): DeviceView[] {
  return pools.flatMap((p) =>
    p.devices.map((d) => ({
      pool: p.name,
      device: d.id,
      path: d.path,
      status: d.status,
      capacityBytes: d.capacityBytes,
      usedBytes: d.usedBytes,
      liveBytes: d.liveBytes,
    }))
  );
}

export function buildClusterView(inputs: ClusterViewInputs, now: Date): ClusterView {
  const nodes = inputs.members
    .slice()
    .sort((a, b) => a.id - b.id)
    .map((m): NodeView => {
      const self = m.id === inputs.nodeId;
      const recorded = inputs.clusterState?.(m.id) ?? null;
      let state: NodeViewState;
      let stateSource: NodeView["stateSource"];
      if (recorded !== null) [state, stateSource] = [recorded, "cluster"];
      else if (self) [state, stateSource] = ["up", "local"];
      else {
        stateSource = "transport";
        state = m.link === "up" ? "reachable" : m.link === "down" ? "unreachable" : "unknown";
      }
      const pools = inputs.pools(m.id);
      const drain = inputs.drain?.(m.id) ?? null;
      return {
        ...(drain === null ? {} : { drain }),
        id: m.id,
        address: m.address,
        self,
        state,
        stateSource,
        devices: pools === null ? null : deviceViews(pools),
        capacityBytes: pools === null ? null : pools.reduce((n, p) => n + p.capacityBytes, 0),
        usedBytes: pools === null ? null : pools.reduce((n, p) => n + p.usedBytes, 0),
      };
    });
  return {
    nodeId: inputs.nodeId,
    generatedAt: now.toISOString(),
    nodes,
    shards: inputs.shards().slice().sort((a, b) => a.shardId - b.shardId),
    // Every write is acknowledged only at full redundancy on this node's devices, so until
    // a source counts cross-node degradation and repair, there is none to report.
    chunks: inputs.chunks?.() ?? { degraded: 0, repairing: 0 },
  };
}

/** The handler of GET /ui/api/cluster. */
export function clusterViewHandler(
  view: () => ClusterView,
): (req: Request) => Promise<Response> {
  return (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") {
      return Promise.resolve(
        adminJson(405, { error: "method_not_allowed", message: `${req.method} /ui/api/cluster` }),
      );
    }
    return Promise.resolve(adminJson(200, view()));
  };
}
