// A simulated network between numbered nodes, driven by the seeded Prng and the virtual
// clock: per-message latency with a slow tail, drops, duplicates, reordering, and
// partitions (symmetric, one-way, bridged) that heal after a random time.

import { assert, type Prng } from "../../mod/base/mod.ts";
import type { SimClock } from "./clock.ts";

export interface NetworkOptions {
  latencyMinMs: number;
  latencyMaxMs: number;
  /** Chance a message takes the slow path, uniform in (latencyMaxMs, latencyTailMaxMs]. */
  latencyTailProbability: number;
  latencyTailMaxMs: number;
  dropProbability: number;
  duplicateProbability: number;
  /** false: each directed link delivers in send order. */
  reorder: boolean;
  /** Chance, per nemesis step with no partition active, that one starts. */
  partitionProbability: number;
  partitionDurationMinMs: number;
  partitionDurationMaxMs: number;
}

export const CALM_NETWORK: NetworkOptions = {
  latencyMinMs: 1,
  latencyMaxMs: 5,
  latencyTailProbability: 0,
  latencyTailMaxMs: 5,
  dropProbability: 0,
  duplicateProbability: 0,
  reorder: false,
  partitionProbability: 0,
  partitionDurationMinMs: 0,
  partitionDurationMaxMs: 0,
};

/** Messages in flight at once; past it the network drops, as a full socket buffer would. */
export const IN_FLIGHT_MESSAGES_MAX = 20_000;
/** Node ids must be below this (links are encoded as from * NODE_ID_LIMIT + to). */
export const NODE_ID_LIMIT = 1 << 16;

export type PartitionKind = "isolate" | "split" | "one_way_in" | "one_way_out" | "bridge";

export type DropReason = "random" | "partition" | "overflow";

export interface NetworkStats {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  partitions: number;
}

export interface SimNetworkOptions<T> {
  clock: SimClock;
  prng: Prng;
  nodeIds: readonly number[];
  options: NetworkOptions;
  deliver: (message: T, from: number, to: number) => void;
  /** Told when a message is lost, e.g. so the sender can report the peer unreachable. */
  onDrop?: (message: T, from: number, to: number, reason: DropReason) => void;
  /** Told of partitions starting and healing, for the trace. */
  onEvent?: (line: string) => void;
}

export class SimNetwork<T> {
  readonly stats: NetworkStats = {
    sent: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    partitions: 0,
  };
  #clock: SimClock;
  #prng: Prng;
  #nodeIds: readonly number[];
  #options: NetworkOptions;
  #deliver: (message: T, from: number, to: number) => void;
  #onDrop: (message: T, from: number, to: number, reason: DropReason) => void;
  #onEvent: (line: string) => void;
  #blocked = new Set<number>();
  #lastDeliveryMs = new Map<number, number>();
  #inFlight = 0;
  /** Bumped on heal, so a stale scheduled heal cannot end a newer partition. */
  #partitionEpoch = 0;

  constructor(init: SimNetworkOptions<T>) {
    for (const id of init.nodeIds) assert(id > 0 && id < NODE_ID_LIMIT, `node id ${id}`);
    validateOptions(init.options);
    this.#clock = init.clock;
    this.#prng = init.prng;
    this.#nodeIds = [...init.nodeIds];
    this.#options = { ...init.options };
    this.#deliver = init.deliver;
    this.#onDrop = init.onDrop ?? (() => {});
    this.#onEvent = init.onEvent ?? (() => {});
  }

  get options(): Readonly<NetworkOptions> {
    return this.#options;
  }

  /** Replaces the fault settings (e.g. calm for the liveness phase); in-flight traffic keeps its fate. */
  setOptions(options: NetworkOptions): void {
    validateOptions(options);
    this.#options = { ...options };
  }

  get partitioned(): boolean {
    return this.#blocked.size > 0;
  }

  linkUp(from: number, to: number): boolean {
    return !this.#blocked.has(from * NODE_ID_LIMIT + to);
  }

  send(from: number, to: number, message: T): void {
    this.stats.sent++;
    if (!this.linkUp(from, to)) return this.#drop(message, from, to, "partition");
    if (this.#chance(this.#options.dropProbability)) return this.#drop(message, from, to, "random");
    this.#schedule(from, to, message);
    if (this.#chance(this.#options.duplicateProbability)) {
      this.stats.duplicated++;
      this.#schedule(from, to, message);
    }
  }

  /**
   * One step of the partition nemesis: maybe start a random partition that heals later.
   * `target`, when given, is the node a partition singles out (e.g. the current leader).
   */
  nemesisStep(target?: number): void {
    if (this.partitioned || this.#nodeIds.length < 2) return;
    if (!this.#chance(this.#options.partitionProbability)) return;
    const kinds: PartitionKind[] = ["isolate", "split", "one_way_in", "one_way_out", "bridge"];
    this.partition(kinds[this.#prng.nextInt(kinds.length)], target);
    const { partitionDurationMinMs: lo, partitionDurationMaxMs: hi } = this.#options;
    const epoch = this.#partitionEpoch;
    this.#clock.after(lo + this.#prng.nextInt(hi - lo + 1), () => {
      if (epoch === this.#partitionEpoch) this.heal();
    });
  }

  /** Starts a partition of the given kind over randomly chosen nodes, `target` first if given. */
  partition(kind: PartitionKind, target?: number): void {
    const ids = this.#shuffled();
    if (target !== undefined) {
      assert(ids.includes(target), `partition target ${target} is not a node`);
      ids.splice(ids.indexOf(target), 1);
      ids.unshift(target);
    }
    const n = ids.length;
    let description: string;
    switch (kind) {
      case "isolate": {
        const victim = ids[0];
        for (const other of ids.slice(1)) this.#cutBoth(victim, other);
        description = `isolate ${victim}`;
        break;
      }
      case "split": {
        const size = 1 + this.#prng.nextInt(n - 1);
        const a = ids.slice(0, size);
        const b = ids.slice(size);
        for (const x of a) for (const y of b) this.#cutBoth(x, y);
        description = `split [${a}] | [${b}]`;
        break;
      }
      case "one_way_in": {
        // The victim hears nobody but is still heard: it campaigns into a working cluster.
        const victim = ids[0];
        for (const other of ids.slice(1)) this.#cut(other, victim);
        description = `deafen ${victim}`;
        break;
      }
      case "one_way_out": {
        // The victim is heard by nobody but hears everyone: a leader that cannot reach anyone.
        const victim = ids[0];
        for (const other of ids.slice(1)) this.#cut(victim, other);
        description = `mute ${victim}`;
        break;
      }
      case "bridge": {
        // Two halves that only the bridge node can talk to both of.
        if (n < 3) return this.partition("isolate", target);
        const bridge = ids[0];
        const rest = ids.slice(1);
        const size = 1 + this.#prng.nextInt(rest.length - 1);
        const a = rest.slice(0, size);
        const b = rest.slice(size);
        for (const x of a) for (const y of b) this.#cutBoth(x, y);
        description = `bridge ${bridge} between [${a}] | [${b}]`;
        break;
      }
    }
    this.stats.partitions++;
    this.#onEvent(`partition ${description}`);
  }

  heal(): void {
    this.#partitionEpoch++;
    if (this.#blocked.size === 0) return;
    this.#blocked.clear();
    this.#onEvent("heal");
  }

  #cut(from: number, to: number): void {
    this.#blocked.add(from * NODE_ID_LIMIT + to);
  }

  #cutBoth(a: number, b: number): void {
    this.#cut(a, b);
    this.#cut(b, a);
  }

  #shuffled(): number[] {
    const ids = [...this.#nodeIds];
    for (let i = ids.length - 1; i > 0; i--) {
      const j = this.#prng.nextInt(i + 1);
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    return ids;
  }

  #chance(p: number): boolean {
    return p > 0 && this.#prng.nextFloat() < p;
  }

  #latencyMs(): number {
    const o = this.#options;
    if (this.#chance(o.latencyTailProbability) && o.latencyTailMaxMs > o.latencyMaxMs) {
      return o.latencyMaxMs + 1 + this.#prng.nextInt(o.latencyTailMaxMs - o.latencyMaxMs);
    }
    return o.latencyMinMs + this.#prng.nextInt(o.latencyMaxMs - o.latencyMinMs + 1);
  }

  #schedule(from: number, to: number, message: T): void {
    if (this.#inFlight >= IN_FLIGHT_MESSAGES_MAX) return this.#drop(message, from, to, "overflow");
    let atMs = this.#clock.nowMs + this.#latencyMs();
    const link = from * NODE_ID_LIMIT + to;
    if (!this.#options.reorder) {
      atMs = Math.max(atMs, this.#lastDeliveryMs.get(link) ?? 0);
      this.#lastDeliveryMs.set(link, atMs);
    }
    this.#inFlight++;
    this.#clock.at(atMs, () => {
      this.#inFlight--;
      // A partition that started while the message was in flight still stops it.
      if (!this.linkUp(from, to)) return this.#drop(message, from, to, "partition");
      this.stats.delivered++;
      this.#deliver(message, from, to);
    });
  }

  #drop(message: T, from: number, to: number, reason: DropReason): void {
    this.stats.dropped++;
    this.#onDrop(message, from, to, reason);
  }
}

function validateOptions(o: NetworkOptions): void {
  assert(o.latencyMinMs >= 0 && o.latencyMaxMs >= o.latencyMinMs, "latency range");
  assert(o.latencyTailMaxMs >= o.latencyMaxMs, "latency tail must not be below latencyMaxMs");
  for (const p of [o.latencyTailProbability, o.dropProbability, o.duplicateProbability]) {
    assert(p >= 0 && p <= 1, "probability out of [0, 1]");
  }
  assert(o.partitionProbability >= 0 && o.partitionProbability <= 1, "partitionProbability");
  assert(o.partitionDurationMaxMs >= o.partitionDurationMinMs, "partition duration range");
}
