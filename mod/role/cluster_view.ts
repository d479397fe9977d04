// Wires the cluster view (GET /ui/api/cluster) to what this node has: its Raft transport's
// links for the state of its peers, its own pools for devices and capacity, and each
// shard's Raft group. The node states the cluster state records (down, draining, removed),
// the chunk store's degraded, repairing and rebalance counts, and remote devices plug in
// through the optional sources.

import { formatHostPort } from "../base/mod.ts";
import type { PoolReport } from "../chunk/mod.ts";
import {
  buildClusterView,
  type ChunkHealthView,
  type ClusterView,
  type DrainView,
  type NodeViewState,
} from "../admin/mod.ts";
import type { Cluster } from "./cluster.ts";

export interface ClusterViewSources {
  cluster: Cluster;
  /** This node's pools. */
  localPools: () => readonly PoolReport[];
  /** A node's state as the replicated cluster state records it (null: not recorded). */
  clusterState?: (nodeId: number) => NodeViewState | null;
  /** Another node's pools, when the cluster state carries its device inventory. */
  remotePools?: (nodeId: number) => readonly PoolReport[] | null;
  chunks?: () => ChunkHealthView;
  drain?: (nodeId: number) => DrainView | null;
}

export function clusterView(sources: ClusterViewSources): ClusterView {
  const { cluster } = sources;
  const self = cluster.host.nodeId;
  const members = [
    { id: self, address: formatHostPort(cluster.transport.addr), link: null },
    ...cluster.transport.peerLinks().map((p) => ({
      id: p.id,
      address: formatHostPort(p.addr),
      link: p.link,
    })),
  ];
  return buildClusterView({
    nodeId: self,
    members,
    clusterState: sources.clusterState,
    drain: sources.drain,
    pools: (id) => id === self ? sources.localPools() : sources.remotePools?.(id) ?? null,
    shards: () =>
      cluster.shardIds.map((shardId) => {
        const h = cluster.deltaLog.health(shardId);
        return {
          shardId,
          leader: h.leader,
          term: h.term,
          commit: h.commit,
          // The group's applied index (the shard state counts only the commands it applied).
          applied: Math.max(h.applied, cluster.host.status(shardId).applied),
          state: h.state,
          members: h.members.map((m) => ({ id: m.id, role: m.role, match: m.match })),
          log: cluster.host.logBounds(shardId),
        };
      }),
    chunks: sources.chunks,
  }, new Date());
}
