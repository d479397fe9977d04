// The cluster as the chunk store sees it, through two narrow ports: the member nodes and
// their state (ClusterMembers: the node records of the cluster state, or the configured
// peers before those are known), and fragments on other nodes (FragmentPeers: the chunk
// fabric, fabric_fragments.ts).

import { assert } from "../base/mod.ts";
import type { DeviceInventory } from "./fragment_store.ts";

/** Nodes of one cluster placement. */
export const CLUSTER_NODES_MAX = 1024;

/**
 * "up"/"unknown"/"unreachable" (failing requests now, not recorded down): takes new
 * fragments when reachable; "down": recorded down (away past the grace period),
 * its fragments are rebuilt elsewhere; "draining": readable, its fragments move elsewhere;
 * "removed": gone for good (still named, as the writer of chunks others may read).
 */
export type ClusterNodeState =
  | "up"
  | "unknown"
  | "unreachable"
  | "down"
  | "draining"
  | "removed";

/** Whether a node in `state` takes new fragments. */
export function takesFragments(state: ClusterNodeState): boolean {
  return state === "up" || state === "unknown" || state === "unreachable";
}

/** Whether fragments on a node in `state` must move elsewhere (rebuilt or copied). */
export function evicts(state: ClusterNodeState): boolean {
  return state === "down" || state === "draining" || state === "removed";
}

export interface ClusterMember {
  id: number;
  addr: string;
  state: ClusterNodeState;
}

/**
 * The nodes of the cluster and what is known of their state: the cluster state's node
 * records (RecordedClusterMembers), or the configured peers (StaticClusterMembers).
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

/** The configured nodes, unreachable while the store's requests to them fail. */
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
    if (this.#peers.some((p) => p.id === node)) {
      this.#state.set(node, reachable ? "up" : "unreachable");
    }
  }
}

/** A node as the cluster state records it. */
export interface RecordedNode {
  id: number;
  addr: string;
  state: "up" | "down" | "draining" | "removed";
}

/**
 * Membership from the cluster state's node records: placement uses the nodes recorded up,
 * and moves fragments off those recorded down, draining or removed. A configured peer not
 * recorded yet (it has not joined) counts as the configured peers know it, so a chunk
 * written before it joins is not packed onto fewer nodes than the cluster has.
 */
export class RecordedClusterMembers implements ClusterMembers {
  readonly #records: () => readonly RecordedNode[];
  readonly #fallback: ClusterMembers;

  constructor(records: () => readonly RecordedNode[], fallback: ClusterMembers) {
    this.#records = records;
    this.#fallback = fallback;
  }

  nodes(): ClusterMember[] {
    const records = this.#records();
    assert(records.length <= CLUSTER_NODES_MAX, "recorded nodes within CLUSTER_NODES_MAX");
    const out: ClusterMember[] = records.map((r) => ({ id: r.id, addr: r.addr, state: r.state }));
    const known = new Set(out.map((m) => m.id));
    for (const m of this.#fallback.nodes()) if (!known.has(m.id)) out.push(m);
    return out.sort((a, b) => a.id - b.id);
  }

  report(node: number, reachable: boolean): void {
    this.#fallback.report?.(node, reachable);
  }
}
