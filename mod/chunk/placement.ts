// Placement: which devices of a pool hold the fragments of a chunk. Rendezvous
// (highest-random-weight) hashing ranks every device by a score drawn from hash(chunk id,
// device id), so adding or removing a device moves only the fragments that device gains or
// loses. Pure: no I/O, no clock, no randomness beyond the hash.

import { assert } from "../base/mod.ts";

/** Devices one placement may rank; device numbers in the index are 16-bit. */
export const PLACEMENT_DEVICES_MAX = 4096;
/** Fragments one chunk may have (EC k+m or N copies); the EC codec's own bound is 255. */
export const PLACEMENT_FRAGMENTS_MAX = 255;
/** Node name used for devices that do not say which node they are on. */
export const PLACEMENT_NODE_LOCAL = "local";

export interface PlacementDevice {
  /** Stable identity of the device: scores depend on it, never on list order. */
  id: string;
  /** The node the device is attached to (default: PLACEMENT_NODE_LOCAL). */
  node?: string;
  /** Relative share of fragments, e.g. capacity in bytes (default 1; must be > 0). */
  weight?: number;
}

export type PlacementErrorCode = "too_few_devices" | "invalid_devices";

export class PlacementError extends Error {
  override name = "PlacementError";
  constructor(readonly code: PlacementErrorCode, message: string) {
    super(message);
  }
}

export interface PlaceOptions {
  /** Devices (by index in the placement's list) that may not be chosen: failed, full, in use. */
  exclude?: (deviceIndex: number) => boolean;
}

/**
 * Rendezvous placement over a fixed device list. place() returns `count` distinct devices;
 * no two on one node when the eligible devices span at least `count` nodes, otherwise as
 * evenly spread over the nodes as the devices allow (at most ceil(count / nodes) per node).
 */
export class Placement {
  readonly devices: readonly Readonly<PlacementDevice>[];
  readonly #seeds: Uint32Array;
  readonly #weights: Float64Array;
  readonly #nodeOf: Int32Array;
  readonly nodeCount: number;

  constructor(devices: readonly PlacementDevice[]) {
    if (devices.length === 0 || devices.length > PLACEMENT_DEVICES_MAX) {
      throw new PlacementError(
        "invalid_devices",
        `placement needs 1..${PLACEMENT_DEVICES_MAX} devices, got ${devices.length}`,
      );
    }
    const ids = new Set<string>();
    const nodes = new Map<string, number>();
    this.#seeds = new Uint32Array(devices.length * 2);
    this.#weights = new Float64Array(devices.length);
    this.#nodeOf = new Int32Array(devices.length);
    devices.forEach((d, i) => {
      if (typeof d.id !== "string" || d.id.length === 0 || ids.has(d.id)) {
        throw new PlacementError(
          "invalid_devices",
          `device ${i}: id ${JSON.stringify(d.id)} is empty or repeated`,
        );
      }
      ids.add(d.id);
      const weight = d.weight ?? 1;
      if (!(weight > 0) || !Number.isFinite(weight)) {
        throw new PlacementError("invalid_devices", `device ${d.id}: weight ${weight} must be > 0`);
      }
      const node = d.node ?? PLACEMENT_NODE_LOCAL;
      if (!nodes.has(node)) nodes.set(node, nodes.size);
      const bytes = new TextEncoder().encode(d.id);
      this.#seeds[2 * i] = murmur3(bytes, 0x9747b28c);
      this.#seeds[2 * i + 1] = murmur3(bytes, 0x5bd1e995);
      this.#weights[i] = weight;
      this.#nodeOf[i] = nodes.get(node)!;
    });
    this.devices = devices.map((d) => Object.freeze({ ...d }));
    this.nodeCount = nodes.size;
  }

  /** The score of device `index` for `key`: higher wins. */
  score(key: Uint8Array, index: number): number {
    assert(index >= 0 && index < this.devices.length, "device index out of range");
    const hi = murmur3(key, this.#seeds[2 * index]!);
    const lo = murmur3(key, this.#seeds[2 * index + 1]!);
    // 53 uniform bits mapped into (0, 1), then the weighted rendezvous score -w / ln(u):
    // device i wins a key with probability w_i / sum(w).
    const u = (hi * 2 ** 21 + (lo >>> 11) + 1) / (2 ** 53 + 1);
    return -this.#weights[index]! / Math.log(u);
  }

  /** Every device index, best first, for `key`. */
  rank(key: Uint8Array): number[] {
    const n = this.devices.length;
    const scores = new Float64Array(n);
    for (let i = 0; i < n; i++) scores[i] = this.score(key, i);
    const order = Array.from({ length: n }, (_, i) => i);
    // Ties (probability ~2^-53) break by index so the result is a pure function of the input.
    order.sort((a, b) => scores[b]! - scores[a]! || a - b);
    return order;
  }

  /**
   * `count` distinct device indices for `key`, in fragment order (fragment i goes to the
   * i-th device). Throws PlacementError "too_few_devices" when fewer eligible devices exist.
   */
  place(key: Uint8Array, count: number, options: PlaceOptions = {}): number[] {
    assert(
      Number.isInteger(count) && count >= 1 && count <= PLACEMENT_FRAGMENTS_MAX,
      `placement count ${count} must be 1..${PLACEMENT_FRAGMENTS_MAX}`,
    );
    const exclude = options.exclude ?? (() => false);
    const order = this.rank(key).filter((i) => !exclude(i));
    if (order.length < count) {
      throw new PlacementError(
        "too_few_devices",
        `need ${count} distinct devices, only ${order.length} of ${this.devices.length} eligible`,
      );
    }
    const nodesEligible = new Set(order.map((i) => this.#nodeOf[i]!)).size;
    const perNodeMax = Math.ceil(count / nodesEligible);
    const perNode = new Map<number, number>();
    const chosen: number[] = [];
    const skipped: number[] = [];
    for (const i of order) {
      if (chosen.length === count) break;
      const node = this.#nodeOf[i]!;
      const used = perNode.get(node) ?? 0;
      if (used >= perNodeMax) {
        skipped.push(i);
        continue;
      }
      perNode.set(node, used + 1);
      chosen.push(i);
    }
    // The per-node cap can leave too few only if nodes have uneven device counts; then fill
    // from the best skipped devices (still distinct devices, as even as the pool allows).
    for (const i of skipped) {
      if (chosen.length === count) break;
      chosen.push(i);
    }
    assert(chosen.length === count, "placement chose too few devices");
    return chosen;
  }
}

/** MurmurHash3 x86_32 of `bytes` with `seed`: fast and well mixed, for ranking only. */
export function murmur3(bytes: Uint8Array, seed: number): number {
  let h = seed >>> 0;
  const n = bytes.length;
  const blocks = n & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = n & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[blocks + 2]! << 16;
    if (tail >= 2) k ^= bytes[blocks + 1]! << 8;
    k ^= bytes[blocks]!;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
