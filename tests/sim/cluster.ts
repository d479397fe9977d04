// The simulation harness: N Raft nodes, each with a simulated disk and a key-value state
// machine, on a simulated network under a virtual clock, driven by one seed. A nemesis
// crashes, pauses and partitions nodes, forces elections, transfers leadership and changes
// membership; clients issue puts, gets and compare-and-sets with timeouts and retries.
// Safety invariants are checked at every step, liveness once faults stop, and the client
// history for linearizability at the end. Everything derives from the seed.

import { assert, Prng } from "../../mod/base/mod.ts";
import { decodeMessage, encodeMessage } from "../../mod/raft/codec.ts";
import { decodeConfChange } from "../../mod/raft/conf_change.ts";
import {
  type ConfChange,
  type ConfState,
  EMPTY_BYTES,
  type Entry,
  type HardState,
  type Message,
  type MessageType,
  ProposalDroppedError,
  type RaftConfig,
  type RaftNode,
  type RaftRole,
  type Ready,
} from "../../mod/raft/types.ts";
import { SimClock } from "./clock.ts";
import {
  DiskFaultError,
  type DiskFaults,
  type LiveStoreFactory,
  NO_DISK_FAULTS,
  SimDisk,
} from "./disk.ts";
import {
  decodeCommand,
  encodeCommand,
  type KvCommand,
  type KvResult,
  KvStateMachine,
} from "./kv.ts";
import {
  checkLinearizable,
  type CheckVerdict,
  type KvInput,
  type KvOperation,
} from "./linearizability.ts";
import { type NetworkOptions, SimNetwork } from "./network.ts";

export type RaftNodeFactory = (config: RaftConfig) => RaftNode;

/** Deliberate bugs, only for proving the simulator catches a broken system. */
export interface SimBugs {
  /** Nodes answer gets from their local state at once, with no read index (stale reads). */
  staleReads: boolean;
  /** A crash also loses the last batch persist() acknowledged. */
  loseLastPersistedBatch: boolean;
  /** The host persists hard states without the vote: a restarted node may vote twice in a term. */
  forgetVotes: boolean;
  /** The host never calls reportSnapshot() (a lost snapshot then stalls that follower). */
  noSnapshotReports: boolean;
}

export interface ClusterOptions {
  seed: number;
  nodeCount: number;
  /** Client operations (history entries, retries included) issued during the fault phase. */
  opsMax: number;
  createNode: RaftNodeFactory;
  /** The live store under each simulated disk; the core's MemoryRaftLogStore by default. */
  liveStore?: LiveStoreFactory;
  bugs?: Partial<SimBugs>;
  /** Virtual length of the fault phase; drawn from the seed when absent. */
  chaosMs?: number;
  /** Virtual time allowed, once faults stop, to elect a leader, finish a write and converge. */
  livenessMsMax?: number;
  /** A wall-clock cap, for a harness that must not hang; only ends the run, never steers it. */
  wallClock?: { nowMs: () => number; capMs: number };
  /** Receives one line per notable event (crash, partition, leader, client op). */
  trace?: (line: string) => void;
}

export interface SimFailure {
  check: string;
  detail: string;
  atMs: number;
}

export interface SimStats {
  virtualMs: number;
  events: number;
  messagesSent: number;
  messagesDropped: number;
  partitions: number;
  crashes: number;
  pauses: number;
  transfers: number;
  campaigns: number;
  membershipChanges: number;
  persistFailures: number;
  tornWrites: number;
  leadersElected: number;
  maxTerm: number;
  snapshotsCreated: number;
  snapshotsInstalled: number;
  entriesApplied: number;
  opsOk: number;
  opsPending: number;
  /** Virtual time from the end of faults to the final write's return (-1: never). */
  recoveryMs: number;
}

export interface SimResult {
  seed: number;
  failures: SimFailure[];
  history: KvOperation[];
  linearizability: CheckVerdict | "skipped";
  /** A hash of every delivery, apply and fault: equal across runs of one seed. */
  traceHash: string;
  stats: SimStats;
  scenario: Scenario;
}

/** The per-seed fault and workload mix (swarm testing: each seed draws its own). */
export interface Scenario {
  network: NetworkOptions;
  disk: DiskFaults;
  /** Chance per nemesis step (one tick) that a node crashes. */
  crashProbability: number;
  /** Chance per persist with staged writes that the host loses power mid-write (torn writes). */
  crashMidPersistProbability: number;
  /** Chance per granted vote that the voter crashes at once and restarts within QUICK_RESTART_MS_MAX. */
  crashAfterVoteProbability: number;
  /** Chance per nemesis step that a node's process freezes (GC pause, VM migration). */
  pauseProbability: number;
  pauseMaxMs: number;
  /** Chance per nemesis step that the leader is asked to hand leadership to another node. */
  transferProbability: number;
  /** Chance per nemesis step that one or two nodes campaign at once (as if their timers fired together). */
  campaignProbability: number;
  /** Chance per nemesis step that the leader proposes a membership change. */
  membershipChangeProbability: number;
  downtimeMinMs: number;
  downtimeMaxMs: number;
  /** Nodes down at once, at most. */
  crashedMax: number;
  snapshotEveryEntries: number;
  compactTrailingEntries: number;
  clients: number;
  keys: number;
  readRatio: number;
  casRatio: number;
  /** Share of gets served through the log rather than by read index. */
  readViaLogRatio: number;
  /** Share of requests a client sends to a random node instead of its believed leader. */
  randomTargetRatio: number;
  clientTimeoutMs: number;
  thinkMaxMs: number;
  chaosMs: number;
  electionTick: number;
  heartbeatTick: number;
  preVote: boolean;
  checkQuorum: boolean;
  maxSizePerMsgBytes: number;
  maxInflightMsgs: number;
  maxUncommittedEntriesBytes: number;
}

export const TICK_MS = 10;
export const LIVENESS_MS_MAX_DEFAULT = 10_000;
/** Requests a node tracks for clients at once; clients are few and sequential. */
export const NODE_REQUESTS_MAX = 10_000;
const CLIENT_LATENCY_MAX_MS = 4;
const REDIRECT_BACKOFF_MS = 10;
const QUICK_RESTART_MS_MAX = 5;
const RESTORE_MEMBERSHIP_EVERY_MS = 50;
const RETRY_BACKOFF_BASE_MS = 20;
const RETRY_BACKOFF_DOUBLINGS_MAX = 5;
const WALL_CLOCK_CHECK_EVERY_EVENTS = 512;

export function drawScenario(prng: Prng, nodeCount: number): Scenario {
  const pick = <T>(xs: readonly T[]): T => xs[prng.nextInt(xs.length)];
  const between = (lo: number, hi: number) => lo + prng.nextInt(hi - lo + 1);
  const calm = prng.nextInt(10) === 0;
  const f = (x: number) => (calm ? 0 : x);
  const latencyMaxMs = between(1, 10);
  return {
    network: {
      latencyMinMs: between(0, 1),
      latencyMaxMs,
      latencyTailProbability: f(pick([0, 0.01, 0.05])),
      latencyTailMaxMs: latencyMaxMs + between(20, 300),
      dropProbability: f(pick([0, 0.01, 0.05, 0.1])),
      duplicateProbability: f(pick([0, 0.01, 0.05])),
      reorder: prng.nextInt(2) === 0,
      partitionProbability: f(pick([0, 0.005, 0.01, 0.02])),
      partitionDurationMinMs: 100,
      partitionDurationMaxMs: between(500, 3000),
    },
    disk: {
      persistFailProbability: f(pick([0, 0, 0.001, 0.005])),
      tornWriteProbability: f(pick([0, 0.3, 0.8])),
      persistLatencyMinMs: 0,
      persistLatencyMaxMs: pick([0, 1, 3]),
      persistLatencyTailProbability: f(pick([0, 0.02])),
      persistLatencyTailMaxMs: 50,
    },
    crashProbability: f(pick([0, 0.002, 0.005, 0.01])),
    crashMidPersistProbability: f(pick([0, 0.005, 0.02])),
    crashAfterVoteProbability: f(pick([0, 0.1, 0.5])),
    pauseProbability: f(pick([0, 0.002, 0.01])),
    pauseMaxMs: between(50, 1000),
    transferProbability: f(pick([0, 0.002, 0.01])),
    campaignProbability: f(pick([0, 0.005, 0.02])),
    membershipChangeProbability: f(pick([0, 0, 0.005, 0.02])),
    downtimeMinMs: 10,
    downtimeMaxMs: between(100, 1500),
    crashedMax: prng.nextInt(4) === 0 ? nodeCount : Math.floor((nodeCount - 1) / 2),
    snapshotEveryEntries: between(3, 40),
    compactTrailingEntries: between(0, 5),
    clients: between(2, 5),
    keys: between(1, 3),
    readRatio: pick([0.3, 0.5, 0.7]),
    casRatio: pick([0, 0.1, 0.3]),
    readViaLogRatio: pick([0, 0.3]),
    randomTargetRatio: pick([0, 0.2, 0.5]),
    clientTimeoutMs: between(200, 800),
    thinkMaxMs: between(10, 120),
    chaosMs: between(1500, 5000),
    electionTick: between(8, 15),
    heartbeatTick: between(1, 3),
    preVote: prng.nextInt(2) === 0,
    checkQuorum: prng.nextInt(2) === 0,
    maxSizePerMsgBytes: pick([64, 512, 1 << 20]),
    maxInflightMsgs: pick([1, 4, 256]),
    maxUncommittedEntriesBytes: pick([0, 0, 2048]),
  };
}

interface ClientRequest {
  clientId: number;
  reqId: number;
  input: KvInput;
  /** Gets only: through the log instead of a read index. */
  viaLog: boolean;
}

interface SimNode {
  id: number;
  alive: boolean;
  /** Bumped at every crash, so events scheduled for a dead incarnation do nothing. */
  incarnation: number;
  raft: RaftNode | null;
  disk: SimDisk;
  sm: KvStateMachine;
  conf: ConfState;
  persisting: boolean;
  /** A paused process (GC, VM migration) handles nothing before this time. */
  pausedUntilMs: number;
  role: RaftRole;
  lead: number;
  snapshotIndex: number;
  durableHardState: HardState;
  waitingProposals: Map<number, ClientRequest>;
  waitingReads: Map<number, ClientRequest>;
  readsAwaitingApply: { index: number; request: ClientRequest }[];
}

interface Client {
  id: number;
  leaderGuess: number;
  /** The outstanding operation: its history index and the current attempt. */
  op: { index: number; request: ClientRequest } | null;
  lastSeen: Map<string, string | null>;
  /** The final-write client retries forever and ignores opsMax. */
  isFinal: boolean;
  issued: number;
  /** Consecutive timeouts, for exponential backoff (an outage must not pile up pending ops). */
  timeoutsInARow: number;
}

type Phase = "chaos" | "recovery" | "done";

class Failed extends Error {}

export class Cluster {
  readonly scenario: Scenario;
  readonly #options: ClusterOptions;
  readonly #bugs: SimBugs;
  readonly #clock = new SimClock();
  readonly #prng: Prng;
  readonly #nemesisPrng: Prng;
  readonly #clientPrng: Prng;
  readonly #network: SimNetwork<{ type: MessageType; bytes: Uint8Array }>;
  readonly #nodes: SimNode[] = [];
  readonly #clients: Client[] = [];
  readonly #history: KvOperation[] = [];
  readonly #failures: SimFailure[] = [];
  readonly #leaderOfTerm = new Map<number, number>();
  readonly #appliedEntry = new Map<number, string>();
  readonly #stateDigestAt = new Map<number, string>();
  readonly #stats: SimStats;
  #phase: Phase = "chaos";
  #logical = 0;
  #nextReqId = 1;
  #trace = 0x811c9dc5;
  #recoveryStartMs = 0;
  #finalIndex = 0;
  #finalDone = false;
  /** Request id of the final write's current attempt. */
  #finalReqId = -1;
  #wallStartedMs = 0;

  constructor(options: ClusterOptions) {
    assert(options.nodeCount >= 1 && options.nodeCount <= 9, "nodeCount in [1, 9]");
    this.#options = options;
    this.#bugs = {
      staleReads: false,
      loseLastPersistedBatch: false,
      forgetVotes: false,
      noSnapshotReports: false,
      ...options.bugs,
    };
    const master = new Prng(options.seed);
    const sub = () => new Prng(master.nextU32() * 0x1_0000 + master.nextInt(0x1_0000));
    this.#prng = sub();
    this.scenario = drawScenario(sub(), options.nodeCount);
    if (options.chaosMs !== undefined) this.scenario.chaosMs = options.chaosMs;
    this.#nemesisPrng = sub();
    this.#clientPrng = sub();
    const networkPrng = sub();
    const nodeIds = Array.from({ length: options.nodeCount }, (_, i) => i + 1);
    this.#network = new SimNetwork({
      clock: this.#clock,
      prng: networkPrng,
      nodeIds,
      options: this.scenario.network,
      deliver: (m, from, to) => this.#deliver(m.bytes, from, to),
      onDrop: (m, from, to, reason) => this.#onDrop(m.type, from, to, reason),
      onEvent: (line) => this.#note(line),
    });
    this.#stats = {
      virtualMs: 0,
      events: 0,
      messagesSent: 0,
      messagesDropped: 0,
      partitions: 0,
      crashes: 0,
      pauses: 0,
      transfers: 0,
      campaigns: 0,
      membershipChanges: 0,
      persistFailures: 0,
      tornWrites: 0,
      leadersElected: 0,
      maxTerm: 0,
      snapshotsCreated: 0,
      snapshotsInstalled: 0,
      entriesApplied: 0,
      opsOk: 0,
      opsPending: 0,
      recoveryMs: -1,
    };
    const conf: ConfState = { voters: nodeIds, learners: [] };
    for (const id of nodeIds) {
      const disk = new SimDisk({
        prng: sub(),
        initialConf: conf,
        faults: this.scenario.disk,
        liveStore: options.liveStore,
        bugs: { loseLastPersistedBatch: this.#bugs.loseLastPersistedBatch },
      });
      this.#nodes.push({
        id,
        alive: false,
        incarnation: 0,
        raft: null,
        disk,
        sm: new KvStateMachine(),
        conf,
        persisting: false,
        pausedUntilMs: 0,
        role: "follower",
        lead: 0,
        snapshotIndex: 0,
        durableHardState: { term: 0, vote: 0, commit: 0 },
        waitingProposals: new Map(),
        waitingReads: new Map(),
        readsAwaitingApply: [],
      });
    }
    for (let i = 0; i < this.scenario.clients; i++) {
      this.#clients.push({
        id: i + 1,
        leaderGuess: 1 + this.#clientPrng.nextInt(options.nodeCount),
        op: null,
        lastSeen: new Map(),
        isFinal: false,
        issued: 0,
        timeoutsInARow: 0,
      });
    }
  }

  /** Runs the whole scenario: faults, then recovery and the liveness check, then the checker. */
  run(): SimResult {
    const s = this.scenario;
    this.#wallStartedMs = this.#options.wallClock?.nowMs() ?? 0;
    const livenessMsMax = this.#options.livenessMsMax ?? LIVENESS_MS_MAX_DEFAULT;
    let linearizability: CheckVerdict | "skipped" = "skipped";
    try {
      this.#guard(() => {
        for (const node of this.#nodes) this.#start(node);
        this.#scheduleNemesis();
        for (const client of this.#clients) this.#scheduleNextOp(client);
      });
      this.#runUntil(() => this.#clock.nowMs >= s.chaosMs);
      this.#guard(() => this.#beginRecovery());
      const deadline = this.#clock.nowMs + livenessMsMax;
      this.#runUntil(() => this.#converged() || this.#clock.nowMs >= deadline);
      if (!this.#finalDone) {
        this.#fail(
          "liveness",
          `no final write within ${livenessMsMax} ms after faults stopped; ${this.#describeNodes()}`,
        );
      }
      if (!this.#converged()) {
        this.#fail(
          "liveness",
          `nodes did not apply the final write (index ${this.#finalIndex}) within ${livenessMsMax} ms; ${this.#describeNodes()}`,
        );
      }
      this.#phase = "done";
    } catch (e) {
      if (!(e instanceof Failed)) throw e;
    }
    if (this.#failures.length === 0) {
      const result = checkLinearizable(this.#history);
      linearizability = result.verdict;
      if (result.verdict === "illegal") {
        this.#failures.push({
          check: "linearizability",
          detail: result.explanation,
          atMs: this.#clock.nowMs,
        });
      }
      if (result.verdict === "unknown") {
        this.#note(`linearizability unknown: ${result.explanation}`);
      }
    }
    this.#stats.virtualMs = this.#clock.nowMs;
    this.#stats.messagesSent = this.#network.stats.sent;
    this.#stats.messagesDropped = this.#network.stats.dropped;
    this.#stats.partitions = this.#network.stats.partitions;
    for (const node of this.#nodes) {
      this.#stats.persistFailures += node.disk.stats.persistFailures;
      this.#stats.tornWrites += node.disk.stats.tornWrites;
    }
    for (const op of this.#history) {
      if (op.output === null) this.#stats.opsPending++;
      else this.#stats.opsOk++;
    }
    return {
      seed: this.#options.seed,
      failures: this.#failures,
      history: this.#history,
      linearizability,
      traceHash: (this.#trace >>> 0).toString(16).padStart(8, "0"),
      stats: this.#stats,
      scenario: this.scenario,
    };
  }

  // --- Event loop.

  #runUntil(done: () => boolean): void {
    const wall = this.#options.wallClock;
    while (!done()) {
      if (wall !== undefined && this.#stats.events % WALL_CLOCK_CHECK_EVERY_EVENTS === 0) {
        if (wall.nowMs() - this.#wallStartedMs > wall.capMs) {
          this.#fail(
            "wall_clock_cap",
            `exceeded ${wall.capMs} ms of real time at virtual ${this.#clock.nowMs} ms`,
          );
        }
      }
      this.#stats.events++;
      let ran = false;
      this.#guard(() => {
        ran = this.#clock.runNext();
      });
      assert(ran, "the event queue ran dry (nodes always tick)");
    }
  }

  /** Turns an exception from the core or the harness into a failure that ends the run. */
  #guard(run: () => void): void {
    try {
      run();
    } catch (e) {
      if (e instanceof Failed) throw e;
      const err = e instanceof Error ? e : new Error(String(e));
      const where = (err.stack ?? "").split("\n").slice(1, 4).map((l) => l.trim()).join(" < ");
      this.#fail("exception", `${err.name}: ${err.message} at ${where}`);
    }
  }

  #fail(check: string, detail: string): never {
    this.#failures.push({ check, detail, atMs: this.#clock.nowMs });
    this.#note(`FAIL ${check}: ${detail}`);
    throw new Failed(check);
  }

  #note(line: string): void {
    this.#options.trace?.(`[${String(this.#clock.nowMs).padStart(6)}] ${line}`);
  }

  #mix(...values: number[]): void {
    let h = this.#trace;
    for (const v of values) {
      h = Math.imul(h ^ (v & 0xffff), 0x01000193);
      h = Math.imul(h ^ (v >>> 16), 0x01000193);
    }
    this.#trace = h;
  }

  // --- Nodes.

  #config(node: SimNode, applied: number): RaftConfig {
    const s = this.scenario;
    const prng = this.#prng;
    return {
      id: node.id,
      electionTick: s.electionTick,
      heartbeatTick: s.heartbeatTick,
      storage: node.disk,
      applied,
      maxSizePerMsgBytes: s.maxSizePerMsgBytes,
      maxInflightMsgs: s.maxInflightMsgs,
      maxUncommittedEntriesBytes: s.maxUncommittedEntriesBytes,
      preVote: s.preVote,
      checkQuorum: s.checkQuorum,
      randomInt: (n) => prng.nextInt(n),
    };
  }

  #start(node: SimNode): void {
    const snapshot = node.disk.snapshot();
    node.sm = new KvStateMachine();
    node.sm.restore(snapshot.data, snapshot.meta.index);
    node.conf = snapshot.meta.conf;
    this.#checkStateDigest(node, snapshot.meta.index, "restart from snapshot");
    node.snapshotIndex = snapshot.meta.index;
    node.durableHardState = node.disk.durableHardState();
    node.alive = true;
    node.persisting = false;
    node.role = "follower";
    node.lead = 0;
    node.raft = this.#options.createNode(this.#config(node, snapshot.meta.index));
    const incarnation = node.incarnation;
    // Nodes tick out of phase with each other, as real hosts do.
    this.#clock.after(1 + this.#prng.nextInt(TICK_MS), () => this.#tick(node, incarnation));
    this.#processReady(node);
  }

  #tick(node: SimNode, incarnation: number): void {
    this.#onNode(node, incarnation, () => {
      node.raft!.tick();
      this.#processReady(node);
      if (node.incarnation === incarnation) {
        this.#clock.after(TICK_MS, () => this.#tick(node, incarnation));
      }
    });
  }

  /**
   * Runs `run` on the node's incarnation `incarnation` once it is not paused (a paused
   * process handles nothing until it wakes, then everything in arrival order), or `lost`
   * if that incarnation died first.
   */
  #onNode(node: SimNode, incarnation: number, run: () => void, lost?: () => void): void {
    if (node.incarnation !== incarnation || !node.alive) {
      lost?.();
      return;
    }
    if (this.#clock.nowMs < node.pausedUntilMs) {
      this.#clock.at(node.pausedUntilMs, () => this.#onNode(node, incarnation, run, lost));
      return;
    }
    run();
  }

  #crash(node: SimNode, reason: string, downtimeMs?: number): void {
    assert(node.alive, "crash of a dead node");
    const report = node.disk.crash();
    this.#note(
      `n${node.id} crash (${reason}); lost ${report.lostWrites} staged writes, torn kept ${report.tornEntriesKept}`,
    );
    this.#mix(0xc0, node.id, report.lostWrites, report.tornEntriesKept);
    this.#stats.crashes++;
    node.alive = false;
    node.incarnation++;
    node.raft = null;
    node.persisting = false;
    node.pausedUntilMs = 0;
    node.role = "follower";
    node.lead = 0;
    node.waitingProposals.clear();
    node.waitingReads.clear();
    node.readsAwaitingApply = [];
    const s = this.scenario;
    const downMs = this.#phase !== "chaos" ? 0 : downtimeMs ??
      s.downtimeMinMs + this.#nemesisPrng.nextInt(s.downtimeMaxMs - s.downtimeMinMs + 1);
    const incarnation = node.incarnation;
    this.#clock.after(downMs, () => {
      if (node.incarnation === incarnation && !node.alive) this.#restart(node);
    });
  }

  /** What a node kept of its committed log must match what every node applied there. */
  #checkDurableLog(node: SimNode): void {
    const disk = node.disk;
    const commit = Math.min(disk.durableHardState().commit, disk.lastIndex());
    const first = disk.firstIndex();
    if (commit < first) return;
    for (const entry of disk.entries(first, commit + 1, Number.MAX_SAFE_INTEGER)) {
      const seen = this.#appliedEntry.get(entry.index);
      const signature = entrySignature(entry);
      if (seen !== undefined && seen !== signature) {
        this.#fail(
          "durability",
          `n${node.id} restarts with ${signature} committed at ${entry.index}, applied elsewhere: ${seen}`,
        );
      }
    }
  }

  #restart(node: SimNode): void {
    node.disk.restart();
    this.#checkDurableLog(node);
    this.#note(`n${node.id} restart`);
    this.#mix(0xc1, node.id);
    this.#start(node);
  }

  /** Drains Ready batches in the documented order: persist, send, apply, advance. */
  #processReady(node: SimNode): void {
    while (node.alive && !node.persisting && node.raft!.hasReady()) {
      const raft = node.raft!;
      const rd = raft.ready();
      if (rd.softState !== null) this.#onSoftState(node, rd);
      if (rd.snapshot !== null) node.disk.applySnapshot(rd.snapshot);
      if (rd.entries.length > 0) node.disk.append(rd.entries);
      if (rd.hardState !== null) {
        node.disk.setHardState(
          this.#bugs.forgetVotes ? { ...rd.hardState, vote: 0 } : rd.hardState,
        );
      }
      if (node.disk.stagedWrites > 0) {
        const latencyMs = node.disk.sampleLatencyMs();
        if (latencyMs > 0) {
          node.persisting = true;
          const incarnation = node.incarnation;
          this.#clock.after(latencyMs, () =>
            this.#onNode(node, incarnation, () => {
              node.persisting = false;
              this.#finishReady(node, rd);
              this.#processReady(node);
            }));
          return;
        }
      }
      this.#finishReady(node, rd);
    }
  }

  #finishReady(node: SimNode, rd: Ready): void {
    const s = this.scenario;
    if (
      this.#phase === "chaos" && node.disk.stagedWrites > 0 && s.crashMidPersistProbability > 0 &&
      this.#nemesisPrng.nextFloat() < s.crashMidPersistProbability &&
      this.#downCount() < s.crashedMax
    ) {
      this.#crash(node, "power lost mid-persist");
      return;
    }
    try {
      node.disk.persistNow();
    } catch (e) {
      if (!(e instanceof DiskFaultError)) throw e;
      this.#crash(node, "persist failed");
      return;
    }
    const before = node.durableHardState;
    if (rd.hardState !== null) this.#checkHardState(node, rd.hardState);
    node.durableHardState = node.disk.durableHardState();
    for (const m of rd.messages) this.#send(node, m);
    // Buggify: die right after granting a vote, and come back fast, while the election that
    // asked for it may still be running (a host that forgets its vote would vote again).
    const hs = rd.hardState;
    if (
      hs !== null && hs.vote !== 0 && hs.vote !== node.id &&
      (hs.term !== before.term || hs.vote !== before.vote) && this.#phase === "chaos" &&
      s.crashAfterVoteProbability > 0 &&
      this.#nemesisPrng.nextFloat() < s.crashAfterVoteProbability &&
      this.#downCount() < s.crashedMax
    ) {
      const incarnation = node.incarnation;
      const downtimeMs = 1 + this.#nemesisPrng.nextInt(QUICK_RESTART_MS_MAX);
      this.#clock.after(0, () => {
        if (node.incarnation === incarnation && node.alive) {
          this.#crash(node, "right after voting", downtimeMs);
        }
      });
    }
    if (rd.snapshot !== null) this.#applySnapshot(node, rd);
    for (const entry of rd.committedEntries) this.#applyEntry(node, entry);
    for (const rs of rd.readStates) {
      const reqId = decodeContext(rs.context);
      const request = node.waitingReads.get(reqId);
      if (request === undefined) continue;
      node.waitingReads.delete(reqId);
      node.readsAwaitingApply.push({ index: rs.index, request });
    }
    this.#serveReads(node);
    node.raft!.advance(rd);
    this.#maybeSnapshot(node);
  }

  #onSoftState(node: SimNode, rd: Ready): void {
    const soft = rd.softState!;
    const wasLeader = node.role === "leader";
    node.role = soft.role;
    node.lead = soft.lead;
    if (soft.role !== "leader" || wasLeader) return;
    const term = node.raft!.status().term;
    const previous = this.#leaderOfTerm.get(term);
    if (previous !== undefined && previous !== node.id) {
      this.#fail("election_safety", `term ${term} has two leaders: n${previous} and n${node.id}`);
    }
    this.#leaderOfTerm.set(term, node.id);
    this.#stats.leadersElected++;
    this.#stats.maxTerm = Math.max(this.#stats.maxTerm, term);
    this.#mix(0x1e, node.id, term);
    this.#note(`n${node.id} leader of term ${term}`);
  }

  /** A durable vote never changes within a term, and term and commit never go back. */
  #checkHardState(node: SimNode, next: HardState): void {
    const prev = node.durableHardState;
    if (next.term < prev.term) {
      this.#fail("hard_state", `n${node.id} term went back from ${prev.term} to ${next.term}`);
    }
    if (next.term === prev.term && prev.vote !== 0 && next.vote !== prev.vote) {
      this.#fail(
        "hard_state",
        `n${node.id} changed its vote in term ${next.term}: ${prev.vote} -> ${next.vote}`,
      );
    }
    if (next.commit < prev.commit) {
      this.#fail(
        "hard_state",
        `n${node.id} commit went back from ${prev.commit} to ${next.commit}`,
      );
    }
  }

  #applySnapshot(node: SimNode, rd: Ready): void {
    const snapshot = rd.snapshot!;
    const index = snapshot.meta.index;
    if (index <= node.sm.applied) {
      this.#fail(
        "applied_monotonic",
        `n${node.id} installs snapshot ${index} with ${node.sm.applied} applied`,
      );
    }
    node.sm.restore(snapshot.data, index);
    node.conf = snapshot.meta.conf;
    node.snapshotIndex = index;
    this.#stats.snapshotsInstalled++;
    this.#mix(0x5a, node.id, index);
    this.#checkStateDigest(node, index, "snapshot install");
  }

  #applyEntry(node: SimNode, entry: Entry): void {
    if (entry.index !== node.sm.applied + 1) {
      this.#fail(
        "applied_monotonic",
        `n${node.id} applies entry ${entry.index} after ${node.sm.applied}`,
      );
    }
    const signature = entrySignature(entry);
    const seen = this.#appliedEntry.get(entry.index);
    if (seen === undefined) {
      this.#appliedEntry.set(entry.index, signature);
    } else if (seen !== signature) {
      this.#fail(
        "state_machine_safety",
        `n${node.id} applies ${signature} at ${entry.index}, another node applied ${seen}`,
      );
    }
    this.#mix(0xa0, node.id, entry.index, entry.term);
    this.#stats.entriesApplied++;
    if (entry.type === "conf_change") {
      const change = decodeConfChange(entry.data);
      node.conf = node.raft!.applyConfChange(change);
      if (node.role === "leader") {
        this.#note(`n${node.id} applied ${change.type} n${change.nodeId}: ${confText(node.conf)}`);
      }
    } else if (entry.data.length > 0) {
      const command = decodeCommand(entry.data);
      const result = node.sm.apply(command);
      const request = node.waitingProposals.get(command.r);
      if (request !== undefined && result !== null) {
        node.waitingProposals.delete(command.r);
        this.#reply(node, request, result);
      }
      if (command.r === this.#finalReqId && this.#finalIndex === 0) this.#finalIndex = entry.index;
    }
    node.sm.applied = entry.index;
    this.#checkStateDigest(node, entry.index, "apply");
  }

  /** Equal logs give equal states and memberships at every index, however they were reached. */
  #checkStateDigest(node: SimNode, index: number, what: string): void {
    const digest = `${node.sm.digest()} ${confText(node.conf)}`;
    const seen = this.#stateDigestAt.get(index);
    if (seen === undefined) this.#stateDigestAt.set(index, digest);
    else if (seen !== digest) {
      this.#fail(
        "state_machine_safety",
        `n${node.id} state after ${what} at ${index} is ${digest}, expected ${seen}`,
      );
    }
  }

  #serveReads(node: SimNode): void {
    if (node.readsAwaitingApply.length === 0) return;
    const still: { index: number; request: ClientRequest }[] = [];
    for (const r of node.readsAwaitingApply) {
      if (r.index <= node.sm.applied) {
        this.#reply(node, r.request, { kind: "get", value: node.sm.get(r.request.input.key) });
      } else {
        still.push(r);
      }
    }
    node.readsAwaitingApply = still;
  }

  #maybeSnapshot(node: SimNode): void {
    const s = this.scenario;
    if (!node.alive || node.sm.applied - node.snapshotIndex < s.snapshotEveryEntries) return;
    const index = node.sm.applied;
    node.disk.createSnapshot(index, node.conf, node.sm.snapshot());
    node.snapshotIndex = index;
    const compactTo = index - s.compactTrailingEntries;
    if (compactTo >= node.disk.firstIndex()) node.disk.compact(compactTo);
    this.#stats.snapshotsCreated++;
  }

  // --- Network.

  #send(node: SimNode, m: Message): void {
    // A forwarded message (a read index a deposed leader passes on) keeps its originator
    // in `from`, as in etcd; the link it travels is still this node's.
    assert(m.to !== node.id, `n${node.id} sends a ${m.type} message to itself`);
    this.#network.send(node.id, m.to, { type: m.type, bytes: encodeMessage(m) });
  }

  #deliver(bytes: Uint8Array, from: number, to: number): void {
    const node = this.#nodes[to - 1];
    const m = decodeMessage(bytes);
    this.#onNode(node, node.incarnation, () => {
      this.#mix(MESSAGE_CODE[m.type], from, to, m.term, m.index, m.entries.length, m.commit);
      node.raft!.step(m);
      if (m.type === "snapshot") this.#reportSnapshot(from, to, "finish");
      this.#processReady(node);
    }, () => {
      // The connection is refused; a snapshot sender must hear of it or wait forever.
      if (m.type === "snapshot") this.#reportSnapshot(from, to, "failure");
    });
  }

  #onDrop(type: MessageType, from: number, to: number, reason: string): void {
    this.#mix(0xd0, from, to);
    if (type === "snapshot") this.#reportSnapshot(from, to, "failure");
    if (reason === "partition" && (type === "append" || type === "heartbeat")) {
      // The transport notices the broken connection; tell the sender (later, outside its Ready).
      const sender = this.#nodes[from - 1];
      const incarnation = sender.incarnation;
      this.#clock.after(0, () =>
        this.#onNode(sender, incarnation, () => {
          sender.raft!.reportUnreachable(to);
          this.#processReady(sender);
        }));
    }
  }

  #reportSnapshot(from: number, to: number, status: "finish" | "failure"): void {
    if (this.#bugs.noSnapshotReports) return;
    const sender = this.#nodes[from - 1];
    const incarnation = sender.incarnation;
    this.#clock.after(0, () =>
      this.#onNode(sender, incarnation, () => {
        sender.raft!.reportSnapshot(to, status);
        this.#processReady(sender);
      }));
  }

  // --- Nemesis.

  #scheduleNemesis(): void {
    this.#clock.after(TICK_MS, () => {
      if (this.#phase !== "chaos") return;
      // Half the partitions single out the leader: a deposed leader that still believes it
      // leads is where stale reads and lost writes hide.
      const leader = this.#nemesisPrng.nextInt(2) === 0 ? this.#runningLeader()?.id : undefined;
      this.#network.nemesisStep(leader);
      const s = this.scenario;
      if (s.crashProbability > 0 && this.#nemesisPrng.nextFloat() < s.crashProbability) {
        const up = this.#nodes.filter((n) => n.alive);
        if (this.#downCount() < s.crashedMax && up.length > 0) {
          this.#crash(up[this.#nemesisPrng.nextInt(up.length)], "nemesis");
        }
      }
      if (s.pauseProbability > 0 && this.#nemesisPrng.nextFloat() < s.pauseProbability) {
        const node = this.#nodes[this.#nemesisPrng.nextInt(this.#nodes.length)];
        const pauseMs = 1 + this.#nemesisPrng.nextInt(s.pauseMaxMs);
        if (node.alive && node.pausedUntilMs <= this.#clock.nowMs) {
          node.pausedUntilMs = this.#clock.nowMs + pauseMs;
          this.#note(`n${node.id} pauses for ${pauseMs} ms`);
          this.#stats.pauses++;
          this.#mix(0xb0, node.id, pauseMs);
        }
      }
      if (s.campaignProbability > 0 && this.#nemesisPrng.nextFloat() < s.campaignProbability) {
        const count = 1 + this.#nemesisPrng.nextInt(2);
        for (let i = 0; i < count; i++) {
          const node = this.#nodes[this.#nemesisPrng.nextInt(this.#nodes.length)];
          if (!node.alive || node.pausedUntilMs > this.#clock.nowMs) continue;
          this.#note(`n${node.id} campaigns`);
          this.#stats.campaigns++;
          node.raft!.campaign();
          this.#processReady(node);
        }
      }
      if (
        s.membershipChangeProbability > 0 &&
        this.#nemesisPrng.nextFloat() < s.membershipChangeProbability
      ) {
        this.#changeMembership();
      }
      if (s.transferProbability > 0 && this.#nemesisPrng.nextFloat() < s.transferProbability) {
        const leader = this.#nodes.find((n) =>
          n.alive && n.role === "leader" && n.pausedUntilMs <= this.#clock.nowMs
        );
        const to = 1 + this.#nemesisPrng.nextInt(this.#nodes.length);
        if (leader !== undefined && to !== leader.id) {
          this.#note(`n${leader.id} transfers leadership to n${to}`);
          this.#stats.transfers++;
          leader.raft!.transferLeadership(to);
          this.#processReady(leader);
        }
      }
      this.#scheduleNemesis();
    });
  }

  /** The running node that leads the highest term (a deposed leader may not know it yet). */
  #runningLeader(): SimNode | undefined {
    let best: SimNode | undefined;
    let bestTerm = -1;
    for (const n of this.#nodes) {
      if (!n.alive || n.role !== "leader" || n.pausedUntilMs > this.#clock.nowMs) continue;
      const term = n.raft!.status().term;
      if (term > bestTerm) [best, bestTerm] = [n, term];
    }
    return best;
  }

  /** Asks the leader to remove a voter (never below a majority of the nodes), or add one back. */
  #changeMembership(): void {
    const leader = this.#runningLeader();
    if (leader === undefined) return;
    const { voters, learners } = leader.conf;
    const votersMin = Math.max(2, this.#nodes.length - 2);
    const options: ConfChange[] = [];
    for (const n of this.#nodes) {
      const change = (type: ConfChange["type"]): ConfChange => ({
        type,
        nodeId: n.id,
        context: EMPTY_BYTES,
      });
      if (voters.includes(n.id)) {
        if (voters.length > votersMin) options.push(change("remove_node"), change("add_learner"));
      } else if (learners.includes(n.id)) {
        options.push(change("add_voter"), change("remove_node"));
      } else {
        options.push(change("add_voter"), change("add_learner"));
      }
    }
    if (options.length === 0) return;
    this.#proposeConfChange(leader, options[this.#nemesisPrng.nextInt(options.length)]);
  }

  #proposeConfChange(leader: SimNode, change: ConfChange): void {
    this.#note(`n${leader.id} proposes ${change.type} n${change.nodeId}`);
    this.#stats.membershipChanges++;
    try {
      leader.raft!.proposeConfChange(change);
    } catch (e) {
      if (!(e instanceof ProposalDroppedError)) throw e;
      return;
    }
    this.#processReady(leader);
  }

  /** Recovery: until every node is a voter again, ask the leader to add one back. */
  #restoreMembership(): void {
    if (this.#phase !== "recovery") return;
    const leader = this.#runningLeader();
    const missing = leader === undefined
      ? undefined
      : this.#nodes.find((n) => !leader.conf.voters.includes(n.id));
    if (leader !== undefined && missing !== undefined) {
      this.#proposeConfChange(leader, {
        type: "add_voter",
        nodeId: missing.id,
        context: EMPTY_BYTES,
      });
    }
    this.#clock.after(RESTORE_MEMBERSHIP_EVERY_MS, () => this.#restoreMembership());
  }

  #downCount(): number {
    let down = 0;
    for (const n of this.#nodes) if (!n.alive) down++;
    return down;
  }

  #beginRecovery(): void {
    this.#phase = "recovery";
    this.#recoveryStartMs = this.#clock.nowMs;
    this.#note("faults stop: heal, restart, calm network and disks");
    this.#network.heal();
    const calm: NetworkOptions = {
      ...this.scenario.network,
      dropProbability: 0,
      duplicateProbability: 0,
      latencyTailProbability: 0,
      partitionProbability: 0,
    };
    this.#network.setOptions(calm);
    for (const node of this.#nodes) {
      node.disk.setFaults({
        ...NO_DISK_FAULTS,
        persistLatencyMaxMs: this.scenario.disk.persistLatencyMaxMs,
      });
    }
    for (const node of this.#nodes) if (!node.alive) this.#restart(node);
    this.#restoreMembership();
    const final: Client = {
      id: this.#clients.length + 1,
      leaderGuess: 1 + this.#clientPrng.nextInt(this.#nodes.length),
      op: null,
      lastSeen: new Map(),
      isFinal: true,
      issued: 0,
      timeoutsInARow: 0,
    };
    this.#clients.push(final);
    this.#startOp(final, { kind: "put", key: "k0", value: "final-0" });
  }

  #converged(): boolean {
    if (!this.#finalDone || this.#finalIndex === 0) return false;
    const full = this.#nodes.length;
    return this.#nodes.every((n) =>
      n.alive && n.sm.applied >= this.#finalIndex && n.conf.voters.length === full
    );
  }

  #describeNodes(): string {
    return this.#nodes.map((n) => {
      if (!n.alive) return `n${n.id}:down`;
      const st = n.raft!.status();
      let progress = "";
      for (const [id, p] of st.progress ?? []) {
        progress += ` n${id}:${p.state}/m${p.match}/n${p.next}${p.recentActive ? "" : "/inactive"}`;
      }
      const log = `log ${n.disk.firstIndex()}..${n.disk.lastIndex()}`;
      return `n${n.id}:${st.role}/t${st.term}/c${st.commit}/a${n.sm.applied}/lead${st.lead} ${log}` +
        (progress === "" ? "" : ` [progress${progress}]`);
    }).join(" ");
  }

  // --- Clients.

  #scheduleNextOp(client: Client): void {
    const thinkMs = this.#clientPrng.nextInt(this.scenario.thinkMaxMs + 1);
    this.#clock.after(thinkMs, () => {
      if (this.#phase !== "chaos" || client.op !== null) return;
      if (this.#history.length >= this.#options.opsMax) return;
      const s = this.scenario;
      const key = `k${this.#clientPrng.nextInt(s.keys)}`;
      const roll = this.#clientPrng.nextFloat();
      if (roll < s.readRatio) {
        this.#startOp(client, { kind: "get", key });
      } else if (roll < s.readRatio + (1 - s.readRatio) * s.casRatio) {
        const expected = client.lastSeen.get(key) ?? null;
        this.#startOp(client, { kind: "cas", key, expected, value: this.#uniqueValue(client) });
      } else {
        this.#startOp(client, { kind: "put", key, value: this.#uniqueValue(client) });
      }
    });
  }

  #uniqueValue(client: Client): string {
    return `c${client.id}-${client.issued}`;
  }

  #startOp(client: Client, input: KvInput): void {
    client.issued++;
    const index = this.#history.length;
    this.#history.push({
      clientId: client.id,
      input,
      callAt: this.#logical++,
      output: null,
      returnAt: null,
    });
    const viaLog = input.kind !== "get" ||
      this.#clientPrng.nextFloat() < this.scenario.readViaLogRatio;
    client.op = { index, request: { clientId: client.id, reqId: 0, input, viaLog } };
    this.#note(`c${client.id} call #${index} ${JSON.stringify(input)}`);
    this.#sendAttempt(client);
  }

  /** Sends the outstanding op to the guessed leader under a fresh request id. */
  #sendAttempt(client: Client): void {
    const op = client.op!;
    const reqId = this.#nextReqId++;
    op.request = { ...op.request, reqId };
    if (client.isFinal) this.#finalReqId = reqId;
    const request = op.request;
    // Mostly the believed leader; sometimes any node, as a client behind a load balancer
    // would (reads on a deposed leader or a lagging follower are where stale reads hide).
    const random = this.scenario.randomTargetRatio > 0 &&
      this.#clientPrng.nextFloat() < this.scenario.randomTargetRatio;
    const target = this.#nodes[
      random ? this.#clientPrng.nextInt(this.#nodes.length) : client.leaderGuess - 1
    ];
    this.#clientHop(() =>
      this.#onNode(target, target.incarnation, () => this.#handleRequest(target, request))
    );
    this.#clock.after(this.scenario.clientTimeoutMs, () => {
      if (client.op?.request.reqId === reqId) this.#onTimeout(client);
    });
  }

  /** One trip between a client and a node: a little latency, and the network's drop rate. */
  #clientHop(run: () => void): void {
    const drop = this.#network.options.dropProbability;
    if (drop > 0 && this.#clientPrng.nextFloat() < drop) return;
    this.#clock.after(1 + this.#clientPrng.nextInt(CLIENT_LATENCY_MAX_MS), run);
  }

  #onTimeout(client: Client): void {
    const op = client.op!;
    // The attempt may or may not have taken effect: the op stays pending in the history,
    // and a retry is a new op (a put gets a fresh value, so the checker stays sound).
    this.#note(`c${client.id} timeout #${op.index}`);
    client.op = null;
    client.leaderGuess = 1 + this.#clientPrng.nextInt(this.#nodes.length);
    client.timeoutsInARow++;
    const shift = Math.min(client.timeoutsInARow, RETRY_BACKOFF_DOUBLINGS_MAX);
    const backoffMs = RETRY_BACKOFF_BASE_MS * (1 << shift) +
      this.#clientPrng.nextInt(RETRY_BACKOFF_BASE_MS);
    const input = op.request.input;
    this.#clock.after(backoffMs, () => {
      if (client.isFinal) {
        this.#startOp(client, { kind: "put", key: "k0", value: `final-${client.issued}` });
        return;
      }
      if (this.#phase !== "chaos" || this.#history.length >= this.#options.opsMax) return;
      this.#startOp(
        client,
        input.kind === "get" ? input : { ...input, value: this.#uniqueValue(client) },
      );
    });
  }

  #handleRequest(node: SimNode, request: ClientRequest): void {
    if (!node.alive) return;
    const input = request.input;
    if (input.kind === "get" && this.#bugs.staleReads) {
      this.#reply(node, request, { kind: "get", value: node.sm.get(input.key) });
      return;
    }
    assert(
      node.waitingProposals.size + node.waitingReads.size < NODE_REQUESTS_MAX,
      "too many requests at one node",
    );
    if (input.kind === "get" && !request.viaLog) {
      if (node.lead === 0) return this.#redirect(node, request);
      try {
        node.raft!.readIndex(encodeContext(request.reqId));
      } catch (e) {
        // The node lost its leader since its last Ready: nothing was started.
        if (!(e instanceof ProposalDroppedError)) throw e;
        return this.#redirect(node, request);
      }
      node.waitingReads.set(request.reqId, request);
      this.#processReady(node);
      return;
    }
    const command: KvCommand = input.kind === "put"
      ? { t: "put", k: input.key, v: input.value, r: request.reqId }
      : input.kind === "get"
      ? { t: "get", k: input.key, r: request.reqId }
      : { t: "cas", k: input.key, e: input.expected, v: input.value, r: request.reqId };
    try {
      node.raft!.propose(encodeCommand(command));
    } catch (e) {
      if (!(e instanceof ProposalDroppedError)) throw e;
      // Dropped means never appended: the same op may be retried as is.
      return this.#redirect(node, request);
    }
    node.waitingProposals.set(request.reqId, request);
    this.#processReady(node);
  }

  #redirect(node: SimNode, request: ClientRequest): void {
    const lead = node.lead;
    this.#clientHop(() => {
      const client = this.#clients[request.clientId - 1];
      if (client.op?.request.reqId !== request.reqId) return;
      client.leaderGuess = lead !== 0 ? lead : 1 + this.#clientPrng.nextInt(this.#nodes.length);
      this.#clock.after(REDIRECT_BACKOFF_MS, () => {
        if (client.op?.request.reqId === request.reqId) this.#sendAttempt(client);
      });
    });
  }

  #reply(node: SimNode, request: ClientRequest, result: KvResult): void {
    // Replies carry the node's leader hint, which clients follow (as etcd's clients do).
    const lead = node.lead;
    this.#clientHop(() => {
      const client = this.#clients[request.clientId - 1];
      const op = client.op;
      if (op === null || op.request.reqId !== request.reqId) return;
      const record = this.#history[op.index];
      record.output = result;
      record.returnAt = this.#logical++;
      client.op = null;
      client.timeoutsInARow = 0;
      if (lead !== 0) client.leaderGuess = lead;
      const input = op.request.input;
      if (result.kind === "get") client.lastSeen.set(input.key, result.value);
      if (input.kind === "put") client.lastSeen.set(input.key, input.value);
      if (input.kind === "cas" && result.kind === "cas" && result.ok) {
        client.lastSeen.set(input.key, input.value);
      }
      this.#mix(0xcc, client.id, op.index);
      this.#note(`c${client.id} return #${op.index} ${JSON.stringify(result)} from n${node.id}`);
      if (client.isFinal) {
        this.#finalDone = true;
        this.#stats.recoveryMs = this.#clock.nowMs - this.#recoveryStartMs;
        return;
      }
      this.#scheduleNextOp(client);
    });
  }
}

const MESSAGE_CODE: Record<MessageType, number> = {
  append: 1,
  append_resp: 2,
  vote: 3,
  vote_resp: 4,
  prevote: 5,
  prevote_resp: 6,
  heartbeat: 7,
  heartbeat_resp: 8,
  snapshot: 9,
  timeout_now: 10,
  read_index: 11,
  read_index_resp: 12,
  propose: 13,
};

const textDecoder = new TextDecoder();

function confText(conf: ConfState): string {
  const voters = [...conf.voters].sort((a, b) => a - b);
  const learners = [...conf.learners].sort((a, b) => a - b);
  return `voters=${voters}${learners.length > 0 ? ` learners=${learners}` : ""}`;
}

function entrySignature(entry: Entry): string {
  return `${entry.term}/${entry.type}/${textDecoder.decode(entry.data)}`;
}

function encodeContext(reqId: number): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setFloat64(0, reqId);
  return bytes;
}

function decodeContext(context: Uint8Array): number {
  if (context.length !== 8) return -1;
  return new DataView(context.buffer, context.byteOffset, 8).getFloat64(0);
}

/** Runs one seed end to end. */
export function runSimulation(options: ClusterOptions): SimResult {
  return new Cluster(options).run();
}
