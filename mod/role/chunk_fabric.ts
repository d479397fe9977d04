// The server's chunk fabric: in a cluster, this node's pool keeps one record per fragment
// (the LocalFragmentStore), served to the other nodes by a fabric server on the Raft port,
// and the engine stores chunks through a ClusterChunkStore that places their fragments on
// every node's devices over a fabric client with the Raft port's TLS material. The nodes are
// those the cluster state records (up, down, draining, removed); the configured Raft peers
// stand in until the cluster state is reached.

import { type Config, formatHostPort, type HostPort } from "../base/mod.ts";
import {
  CLUSTER_FRAGMENT_TIMEOUT_MS_DEFAULT,
  ClusterChunkStore,
  type Durability,
  FabricFragmentPeers,
  formatDurability,
  fragmentHandler,
  type LocalChunkStore,
  LocalFragmentStore,
  RecordedClusterMembers,
  type RecordedNode,
  StaticClusterMembers,
} from "../chunk/mod.ts";
import type { ErasureCodecFactory } from "../ec/mod.ts";
import type { Logger } from "../obs/mod.ts";
import {
  FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
  FabricClient,
  FabricServer,
  readTlsMaterial,
  type TcpRaftTransport,
} from "../transport/mod.ts";

/** The durability of the local store under a cluster: one record per fragment. */
export const FRAGMENT_POOL_DURABILITY: Durability = Object.freeze({ kind: "copies", copies: 1 });

export interface ChunkFabric {
  store: ClusterChunkStore;
  /** Where node `id`'s Raft port is (nodes added after start-up). */
  setPeer(id: number, addr: HostPort): void;
  close(): Promise<void>;
}

/** True when the node is one of several (KISEKI_RAFT_PEERS names others). */
export function clustered(config: Config): boolean {
  return config.raftPeers.some((p) => p.id !== config.nodeId);
}

export async function startChunkFabric(options: {
  config: Config;
  transport: TcpRaftTransport;
  /** The node's pool, opened with FRAGMENT_POOL_DURABILITY. */
  local: LocalChunkStore;
  codecs: ErasureCodecFactory;
  /** The pool's durability across the cluster. */
  durability: Durability;
  /** The node records of the cluster state (empty until it is reached). */
  nodes: () => readonly RecordedNode[];
  logger: Logger;
}): Promise<ChunkFabric> {
  const { config, transport, logger } = options;
  const fragments = new LocalFragmentStore({ node: config.nodeId, store: options.local });
  // The store is made below; a reference dropped through another node waits for it.
  let owner: ClusterChunkStore | null = null;
  const server = FabricServer.attach(transport, {
    nodeId: config.nodeId,
    clusterId: transport.clusterId,
    handler: fragmentHandler(fragments, {
      dropOwn: (id) => owner === null ? Promise.resolve(false) : owner.dropOwn(id),
      addOwn: (id, tag) => owner === null ? Promise.resolve(false) : owner.addOwn(id, tag),
      hasOwn: (id) => Promise.resolve(owner?.hasOwn(id) ?? false),
    }),
    logger,
  });
  const client = new FabricClient({
    nodeId: config.nodeId,
    clusterId: transport.clusterId,
    peers: config.raftPeers.filter((p) => p.id !== config.nodeId),
    tls: config.tls ? await readTlsMaterial(config.tls) : null,
    logger,
  });
  const store = new ClusterChunkStore({
    self: config.nodeId,
    members: new RecordedClusterMembers(
      options.nodes,
      new StaticClusterMembers(
        config.raftPeers.map((p) => ({ id: p.id, addr: formatHostPort(p.addr) })),
      ),
    ),
    local: fragments,
    peers: new FabricFragmentPeers({ client, timeoutMs: CLUSTER_FRAGMENT_TIMEOUT_MS_DEFAULT }),
    codecs: options.codecs,
    durability: options.durability,
    fragmentBytesMax: FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
    logger: logger.child({ component: "chunk-cluster" }),
  });
  owner = store;
  const background = store.start();
  logger.info("chunk fabric started", {
    nodes: config.raftPeers.length,
    durability: formatDurability(options.durability),
  });
  return {
    store,
    setPeer: (id, addr) => {
      if (id !== config.nodeId) client.setPeer(id, addr);
    },
    async close() {
      await background.stop();
      await store.close();
      await client.close();
      await server.close();
    },
  };
}
