// The cluster as the chunk store sees it, through two narrow ports: the member nodes and
// their state (ClusterMembers: the configured peers today, the cluster state later), and
// fragments on other nodes (FragmentPeers: the chunk fabric, fabric_fragments.ts).

import { assert } from "../base/mod.ts";
import type { DeviceInventory } from "./fragment_store.ts";

/** Nodes of one cluster placement. */
export const CLUSTER_NODES_MAX = 1024;

export type ClusterNodeState = "up" | "down" | "unknown";

export interface ClusterMember {
  id: number;
  addr: string;
  state: ClusterNodeState;
}

/**
 * The nodes of the cluster and what is known of their state. Backed by the configured peers
 * and the store's own reachability reports today; by the cluster state later.
 */
export interface ClusterMembers {
  nodes(): ClusterMember[];
  /** The store saw `node` answer (true) or fail (false). */
  report?(node: number, reachable: boolean): void;
}

/** Why a request to a peer failed: its node is unreachable, or it refused this fragment. */
export type FragmentPeerFailure = "unreachable" | "refused";

export class FragmentPeerError extends Error {
  override name = "FragmentPeerError";
  constructor(readonly kind: FragmentPeerFailure, readonly node: number, message: string) {
    super(message);
  }
}

/** Fragments on other nodes (the chunk fabric). Errors are FragmentPeerErrors. */
export interface FragmentPeers {
  put(
    node: number,
    chunkId: Uint8Array,
    index: number,
    bytes: Uint8Array,
    device: string,
  ): Promise<void>;
  /** The fragment, or null when the node does not hold it. */
  get(
    node: number,
    chunkId: Uint8Array,
    index: number,
    sizeBytes: number,
  ): Promise<Uint8Array | null>;
  has(node: number, chunkId: Uint8Array, index: number): Promise<boolean>;
  /** Drops one reference; false when the node did not hold it. */
  release(node: number, chunkId: Uint8Array, index: number): Promise<boolean>;
  inventory(node: number): Promise<DeviceInventory>;
}

/** The configured nodes, down while the store's requests to them fail. */
export class StaticClusterMembers implements ClusterMembers {
  readonly #peers: readonly { id: number; addr: string }[];
  readonly #state = new Map<number, ClusterNodeState>();

  constructor(peers: readonly { id: number; addr: string }[]) {
    assert(peers.length >= 1 && peers.length <= CLUSTER_NODES_MAX, "1..1024 nodes");
    this.#peers = peers;
  }

  nodes(): ClusterMember[] {
    return this.#peers.map((p) => ({ ...p, state: this.#state.get(p.id) ?? "unknown" }));
  }

  report(node: number, reachable: boolean): void {
    if (this.#peers.some((p) => p.id === node)) this.#state.set(node, reachable ? "up" : "down");
  }
}
