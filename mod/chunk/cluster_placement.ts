// Placement across nodes: which (node, device) holds each fragment of a chunk. Every fragment
// index has its own rendezvous (highest-random-weight) ranking of the devices, weighted by
// capacity, so adding a device moves only the fragments it now wins (about its share) and a
// fragment whose first choice is unusable falls to the next device of its own ranking.
// Also the redundancy rules: how many fragments one node may hold, and the still-safe subset
// a write may settle for when nodes are down (the default durability by cluster size is
// pool.ts's defaultDurability()). Pure: no I/O, no clock, no randomness beyond the hash.

import { assert } from "../base/mod.ts";
import { murmur3 } from "./placement.ts";
import { type Durability, fragmentCount, toleratedLosses } from "./pool.ts";

/** Devices one cluster placement may rank (every node's devices of one pool). */
export const CLUSTER_PLACEMENT_DEVICES_MAX = 65_536;
/** Fragments one chunk may have (the pools' own bound is 32). */
export const CLUSTER_PLACEMENT_FRAGMENTS_MAX = 64;

export interface ClusterDevice {
  /** The node the device is attached to. */
  node: number;
  /** The device's id on its node (unique per node). */
  id: string;
  /** Relative share of fragments: its capacity (must be > 0). */
  weight: number;
}

export class ClusterPlacementError extends Error {
  override name = "ClusterPlacementError";
}

export interface ClusterPlaceOptions {
  /** Most fragments of the chunk on one node. */
  perNodeMax: number;
  /** Devices (by index) that may not be chosen: unreachable node, full, failed. */
  exclude?: (deviceIndex: number) => boolean;
  /** Devices already holding a fragment of the chunk, by fragment index (kept in place). */
  fixed?: ReadonlyMap<number, number>;
}

/** Rendezvous placement over every (node, device) of a pool. */
export class ClusterPlacement {
  readonly devices: readonly Readonly<ClusterDevice>[];
  readonly nodes: readonly number[];
  readonly #seedA: Uint32Array;
  readonly #seedB: Uint32Array;
  readonly #weights: Float64Array;
  readonly #nodeOf: Int32Array;
  /** Dense node number (0..nodes-1) of each device, for the per-node counts of place(). */
  readonly #slotOf: Int32Array;

  constructor(devices: readonly ClusterDevice[]) {
    if (devices.length === 0 || devices.length > CLUSTER_PLACEMENT_DEVICES_MAX) {
      throw new ClusterPlacementError(
        `placement needs 1..${CLUSTER_PLACEMENT_DEVICES_MAX} devices, got ${devices.length}`,
      );
    }
    const seen = new Set<string>();
    const nodes: number[] = [];
    this.#seedA = new Uint32Array(devices.length);
    this.#seedB = new Uint32Array(devices.length);
    this.#weights = new Float64Array(devices.length);
    this.#nodeOf = new Int32Array(devices.length);
    this.#slotOf = new Int32Array(devices.length);
    const encoder = new TextEncoder();
    devices.forEach((d, i) => {
      const key = `${d.node}/${d.id}`;
      if (!Number.isInteger(d.node) || d.node < 1 || d.id.length === 0 || seen.has(key)) {
        throw new ClusterPlacementError(`device ${i}: ${key} is invalid or repeated`);
      }
      seen.add(key);
      if (!(d.weight > 0) || !Number.isFinite(d.weight)) {
        throw new ClusterPlacementError(`device ${key}: weight ${d.weight} must be > 0`);
      }
      let slot = nodes.indexOf(d.node);
      if (slot < 0) slot = nodes.push(d.node) - 1;
      this.#slotOf[i] = slot;
      const bytes = encoder.encode(key);
      this.#seedA[i] = murmur3(bytes, 0x2f0b_3c1d);
      this.#seedB[i] = murmur3(bytes, 0x7a4c_9e55);
      this.#weights[i] = d.weight;
      this.#nodeOf[i] = d.node;
    });
    this.devices = devices.map((d) => Object.freeze({ ...d }));
    this.nodes = Object.freeze([...nodes].sort((a, b) => a - b));
  }

  nodeOf(deviceIndex: number): number {
    return this.#nodeOf[deviceIndex]!;
  }

  /** The index of device `id` on `node`, or -1. */
  indexOf(node: number, id: string): number {
    return this.devices.findIndex((d) => d.node === node && d.id === id);
  }

  /**
   * Score of device `index` for fragment `fragment` of `key`: higher wins. A device wins a
   * fragment with probability weight / total weight (weighted rendezvous, -w / ln u).
   */
  score(keyHash: number, index: number): number {
    const x = fmix32((keyHash ^ this.#seedA[index]!) >>> 0);
    const y = fmix32((x + this.#seedB[index]!) >>> 0);
    const u = (y + 0.5) / 4294967296;
    return -this.#weights[index]! / Math.log(u);
  }

  /** Device indices for fragment `fragment` of `key`, best first. */
  rank(key: Uint8Array, fragment: number): number[] {
    const h = fragmentHash(key, fragment);
    const n = this.devices.length;
    const scores = new Float64Array(n);
    for (let i = 0; i < n; i++) scores[i] = this.score(h, i);
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => scores[b]! - scores[a]! || a - b);
    return order;
  }

  /**
   * A device index for each of `count` fragments of `key` (null where none is eligible):
   * fragment i takes the best device of its own ranking that is not excluded, not holding
   * another fragment, on a node below `perNodeMax`. Fragments in `fixed` keep their device.
   */
  place(key: Uint8Array, count: number, options: ClusterPlaceOptions): (number | null)[] {
    assert(
      Number.isInteger(count) && count >= 1 && count <= CLUSTER_PLACEMENT_FRAGMENTS_MAX,
      `fragment count ${count}`,
    );
    assert(Number.isInteger(options.perNodeMax) && options.perNodeMax >= 1, "perNodeMax >= 1");
    const exclude = options.exclude ?? (() => false);
    const fixed = options.fixed ?? new Map<number, number>();
    const n = this.devices.length;
    // Typed flags, not sets: place() is the inner loop of every write and of the balance test.
    const blocked = new Uint8Array(n);
    for (let i = 0; i < n; i++) if (exclude(i)) blocked[i] = 1;
    const perNode = new Uint16Array(this.nodes.length);
    const out: (number | null)[] = new Array(count).fill(null);
    const take = (device: number) => {
      blocked[device] = 1;
      perNode[this.#slotOf[device]!]!++;
    };
    for (const [fragment, device] of fixed) {
      assert(fragment >= 0 && fragment < count && out[fragment] === null, "fixed fragment");
      assert(device >= 0 && device < n && !out.includes(device), "fixed devices distinct");
      out[fragment] = device;
      take(device);
    }
    const perNodeMax = options.perNodeMax;
    for (let f = 0; f < count; f++) {
      if (fixed.has(f)) continue;
      const h = fragmentHash(key, f);
      let best = -1;
      let bestScore = -Infinity;
      for (let i = 0; i < n; i++) {
        if (blocked[i] === 1 || perNode[this.#slotOf[i]!]! >= perNodeMax) continue;
        const s = this.score(h, i);
        if (s > bestScore) {
          best = i;
          bestScore = s;
        }
      }
      if (best < 0) continue;
      out[f] = best;
      take(best);
    }
    return out;
  }
}

/** The 32-bit hash fragment `fragment` of `key` is ranked by. */
export function fragmentHash(key: Uint8Array, fragment: number): number {
  return murmur3(key, (0x9e37_79b9 + Math.imul(fragment, 0x85eb_ca6b)) >>> 0);
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85eb_ca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2_ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---- redundancy rules ------------------------------------------------------------------------

/**
 * Most fragments of one chunk a node may hold in a cluster of `nodes` nodes: as spread as
 * the node count allows, and never more than the chunk can lose (one node's loss is always
 * survivable). A lone node holds every fragment.
 */
export function perNodeMaxFor(durability: Durability, nodes: number): number {
  const n = fragmentCount(durability);
  if (nodes <= 1) return n;
  return Math.max(1, Math.min(Math.ceil(n / nodes), toleratedLosses(durability)));
}

/**
 * Whole nodes a chunk survives losing when spread over `nodes` nodes at most
 * perNodeMaxFor() fragments each: what a drain must not lower.
 */
export function nodeLossesSurvivable(durability: Durability, nodes: number): number {
  if (nodes <= 1) return 0;
  const perNode = perNodeMaxFor(durability, nodes);
  return Math.min(nodes - 1, Math.floor(toleratedLosses(durability) / perNode));
}

/**
 * Fragments a write must make durable, on distinct nodes, to be acknowledged when the full
 * set cannot be placed: k+1 of EC k+m, 2 copies (one loss survivable either way).
 */
export function safeFragmentsFor(durability: Durability): number {
  if (durability.kind === "ec") return Math.min(durability.k + 1, durability.k + durability.m);
  return Math.min(2, durability.copies);
}

/** Fragments that must be readable to read the chunk: k, or one copy. */
export function fragmentsNeeded(durability: Durability): number {
  return durability.kind === "ec" ? durability.k : 1;
}
