// The multi-group host: drives many Raft groups (one per shard) on one node. It ticks them,
// routes incoming messages, and turns each group's Ready into I/O in the documented order:
// persist (one durable commit for every group with work: group commit), then send, then
// apply, then advance. Proposals and linearizable reads resolve when this node has applied
// the entry or reached the read point, so a caller's write is acknowledged only once it is
// committed on a majority and applied here.

import { setImmediate } from "node:timers";
import { assert } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import { createRaftNode } from "./raw_node.ts";
import { decodeConfChange } from "./conf_change.ts";
import {
  type ConfChange,
  type ConfChangeType,
  type ConfState,
  type Entry,
  type Message,
  type NodeId,
  NONE,
  ProposalDroppedError,
  type RaftConfig,
  type RaftLogStore,
  type RaftNode,
  type RaftStatus,
  type Ready,
  type Snapshot,
} from "./types.ts";

/** Where a group's messages go; the transport drops rather than blocks (Raft tolerates loss). */
export interface RaftMessageSink {
  send(shardId: number, message: Message): void;
}

/** A shard's replicated state machine. `apply` sees every committed command exactly once per life. */
export interface RaftStateMachine {
  /** Applies one committed command; the result is handed to the proposer's waiter. */
  apply(entry: Entry, command: Uint8Array): unknown;
  /** Installs a snapshot received from the leader. */
  restore(snapshot: Snapshot): void;
  /** Called after each batch of applied entries (e.g. to persist the applied index). */
  afterApply?(appliedIndex: number): void | Promise<void>;
}

export interface RaftGroupOptions {
  shardId: number;
  store: RaftLogStore;
  stateMachine: RaftStateMachine;
  /** Index the state machine had applied before this start (0: replay everything). */
  applied: number;
}

export interface RaftHostOptions {
  nodeId: NodeId;
  sink: RaftMessageSink;
  log: Logger;
  /** Core settings shared by every group (storage and applied come per group). */
  raft: Omit<RaftConfig, "id" | "storage" | "applied">;
  /** How long a proposal or read may wait before failing as unavailable. */
  requestTimeoutMs: number;
  /** Upper bound on proposals and reads waiting per group. */
  waitersPerGroupMax: number;
  /** Observes events for metrics; optional. */
  observer?: RaftHostObserver;
  /**
   * Takes snapshot messages instead of `sink` (streams them to the follower), and reports
   * the outcome through reportSnapshot(). Without it the sink gets them as one message.
   */
  snapshotSender?: (shardId: number, message: Message) => void;
  /**
   * Sees every conf change as this node applies it (including those replayed after a
   * restart), with the member's address when the change carried one: the transport dials
   * members added after start-up through it.
   */
  onConfChange?: (shardId: number, change: MembershipChange, conf: ConfState) => void;
}

/** A membership change as the host proposes and reports it. */
export interface MembershipChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** The member's Raft address ("host:port"), carried in the log so every member learns it. */
  addr?: string;
}

export interface RaftHostObserver {
  persisted(groups: number, entries: number, seconds: number): void;
  applied(shardId: number, entries: number): void;
  leaderChanged(shardId: number, lead: NodeId, term: number): void;
  committed(shardId: number, seconds: number): void;
}

/** The outcome of a proposal: where it landed and what the state machine returned. */
export interface ProposalResult {
  index: number;
  term: number;
  result: unknown;
}

export class RaftUnavailableError extends Error {
  override name = "RaftUnavailableError";
}

/** No leader took the proposal (none known, or one handing over): it never entered the log. */
export class RaftProposalDroppedError extends RaftUnavailableError {
  override name = "RaftProposalDroppedError";
}

// A command entry is [u8 version][u64 proposal id][command]. Ids are unique per node life
// (node id in the high bits, a counter below) so any node can match the entry it applies to
// its own waiter, including proposals a follower forwarded to the leader.
const COMMAND_VERSION = 1;
const COMMAND_HEADER_BYTES = 9;
/** Bits of a proposal id below the proposing node's id (the per-node counter). */
const PROPOSAL_COUNTER_BITS = 40n;

/** The node that proposed a command entry (the one its proposal id names). */
export function proposalNodeId(proposalId: bigint): number {
  return Number(proposalId >> PROPOSAL_COUNTER_BITS);
}

export function encodeCommand(proposalId: bigint, command: Uint8Array): Uint8Array {
  const out = new Uint8Array(COMMAND_HEADER_BYTES + command.length);
  out[0] = COMMAND_VERSION;
  new DataView(out.buffer).setBigUint64(1, proposalId);
  out.set(command, COMMAND_HEADER_BYTES);
  return out;
}

export function decodeCommand(
  data: Uint8Array,
): { proposalId: bigint; command: Uint8Array } | null {
  if (data.length < COMMAND_HEADER_BYTES || data[0] !== COMMAND_VERSION) return null;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  return { proposalId: view.getBigUint64(1), command: data.subarray(COMMAND_HEADER_BYTES) };
}

interface Waiter<T> {
  resolve(value: T): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
  startedMs: number;
}

// A conf change's context is [u64 proposal id][address, UTF-8]: the id lets the proposer
// match the applied entry to its waiter, the address tells every member how to reach the node.
const CONF_CONTEXT_HEADER_BYTES = 8;

function encodeConfContext(proposalId: bigint, addr: string | undefined): Uint8Array {
  const a = new TextEncoder().encode(addr ?? "");
  const out = new Uint8Array(CONF_CONTEXT_HEADER_BYTES + a.length);
  new DataView(out.buffer).setBigUint64(0, proposalId);
  out.set(a, CONF_CONTEXT_HEADER_BYTES);
  return out;
}

function decodeConfContext(context: Uint8Array): { proposalId: bigint | null; addr?: string } {
  if (context.length < CONF_CONTEXT_HEADER_BYTES) return { proposalId: null };
  const view = new DataView(context.buffer, context.byteOffset, context.byteLength);
  const addr = new TextDecoder().decode(context.subarray(CONF_CONTEXT_HEADER_BYTES));
  return { proposalId: view.getBigUint64(0), ...(addr.length > 0 ? { addr } : {}) };
}

/** Ticks between a leader's looks for learners caught up enough to become voters. */
export const LEARNER_PROMOTION_CHECK_TICKS = 5;
/**
 * How far behind the commit index a learner may be and still be promoted: under a steady
 * stream of writes it never quite reaches the commit index, and a voter this close slows
 * no quorum (it is sent the rest in the next append).
 */
export const LEARNER_PROMOTION_LAG_ENTRIES_MAX = 64;

class Group {
  readonly node: RaftNode;
  readonly proposals = new Map<bigint, Waiter<ProposalResult>>();
  readonly confChanges = new Map<bigint, Waiter<ConfState>>();
  readonly reads = new Map<bigint, Waiter<number>>();
  /** Reads whose read point is known, waiting for apply to reach it. */
  readonly readsAwaitingApply: { index: number; waiter: Waiter<number> }[] = [];
  applied: number;
  lead: NodeId = NONE;
  term = 0;
  /** Term and vote last made durable: a hard state that changes only `commit` needs no sync. */
  durableTerm = -1;
  durableVote = -1;
  busy = false;
  /**
   * The conf changes applied here this life (the last CONF_HISTORY_MAX), each with the
   * membership before it: the membership at any index since `confHistoryFrom` is known.
   */
  readonly confHistory: { index: number; before: ConfState }[] = [];
  /** Conf changes at or before this index may be missing from confHistory. */
  confHistoryFrom: number;
  /** Whether a leader holding this node to entries it lost was logged (once per life). */
  lostLogReported = false;

  constructor(
    readonly options: RaftGroupOptions,
    config: RaftConfig,
  ) {
    this.node = createRaftNode(config);
    this.applied = options.applied;
    // Changes up to `applied` were replayed by the core, not seen here.
    this.confHistoryFrom = options.applied;
    const durable = options.store.initialState().hardState;
    this.durableTerm = durable.term;
    this.durableVote = durable.vote;
  }
}

export class RaftHost {
  readonly nodeId: NodeId;
  readonly #options: RaftHostOptions;
  readonly #groups = new Map<number, Group>();
  #nextProposal = 0n;
  #ticks = 0;
  #drainScheduled = false;
  #draining = false;
  #stopped = false;

  constructor(options: RaftHostOptions) {
    assert(options.raft.heartbeatTick < options.raft.electionTick, "heartbeatTick < electionTick");
    this.nodeId = options.nodeId;
    this.#options = options;
    this.#nextProposal = BigInt(options.nodeId) << PROPOSAL_COUNTER_BITS;
  }

  addGroup(options: RaftGroupOptions): void {
    assert(!this.#groups.has(options.shardId), `group ${options.shardId} added twice`);
    const config: RaftConfig = {
      ...this.#options.raft,
      id: this.nodeId,
      storage: options.store,
      applied: options.applied,
    };
    this.#groups.set(options.shardId, new Group(options, config));
  }

  shardIds(): number[] {
    return [...this.#groups.keys()];
  }

  hasGroup(shardId: number): boolean {
    return this.#groups.has(shardId);
  }

  status(shardId: number): RaftStatus {
    return this.#group(shardId).node.status();
  }

  /** Where the group's log starts and ends, and the index of its snapshot. */
  logBounds(shardId: number): { firstIndex: number; lastIndex: number; snapshotIndex: number } {
    const store = this.#group(shardId).options.store;
    return {
      firstIndex: store.firstIndex(),
      lastIndex: store.lastIndex(),
      snapshotIndex: store.snapshot().meta.index,
    };
  }

  /** Membership as the group currently sees it. */
  conf(shardId: number): ConfState {
    return this.status(shardId).conf;
  }

  tick(): void {
    if (this.#stopped) return;
    for (const g of this.#groups.values()) g.node.tick();
    if (++this.#ticks % LEARNER_PROMOTION_CHECK_TICKS === 0) this.#promoteCaughtUpLearners();
    this.#scheduleDrain();
  }

  /**
   * Proposes a membership change of `shardId` (from any member: a follower forwards it to
   * the leader); resolves with the new membership once the change is committed and applied
   * here. The core takes one change at a time per group: a change proposed while another is
   * pending is dropped and this call times out (RaftUnavailableError), so callers retry.
   * A learner added here becomes a voter by itself once it has caught up (the leader of the
   * group, whoever it is by then, promotes it), so a change survives a leader change.
   */
  changeMembership(shardId: number, change: MembershipChange): Promise<ConfState> {
    const g = this.#group(shardId);
    const refused = this.#refusal(g, shardId);
    if (refused !== null) return Promise.reject(refused);
    const id = this.#nextProposal++;
    return new Promise<ConfState>((resolve, reject) => {
      const waiter = this.#waiter(
        g.confChanges,
        id,
        resolve,
        reject,
        `shard ${shardId}: ${change.type} ${change.nodeId}`,
      );
      try {
        g.node.proposeConfChange({
          type: change.type,
          nodeId: change.nodeId,
          context: encodeConfContext(id, change.addr),
        });
      } catch (e) {
        clearTimeout(waiter.timer);
        g.confChanges.delete(id);
        reject(
          e instanceof ProposalDroppedError
            ? new RaftProposalDroppedError(
              `shard ${shardId}: no leader to take the membership change (${e.message})`,
            )
            : e as Error,
        );
        return;
      }
      this.#scheduleDrain();
    });
  }

  /**
   * On every group this node leads, proposes add_voter for a learner whose log has caught
   * up with the commit index (by entries or a snapshot: it is being replicated to, not
   * probed or sent a snapshot) and that answers: a learner only
   * exists here to become a voter once it can vote without slowing the quorum.
   */
  #promoteCaughtUpLearners(): void {
    for (const [shardId, g] of this.#groups) {
      const status = g.node.status();
      if (status.role !== "leader" || status.progress === null) continue;
      if (status.conf.learners.length === 0 || g.confChanges.size > 0) continue;
      for (const learner of status.conf.learners) {
        const pr = status.progress.get(learner);
        if (
          pr === undefined || !pr.recentActive || pr.state !== "replicate" ||
          pr.match + LEARNER_PROMOTION_LAG_ENTRIES_MAX < status.commit
        ) {
          continue;
        }
        this.#options.log.info("promoting a caught-up learner to voter", {
          shard: shardId,
          peer: learner,
          match: pr.match,
        });
        this.changeMembership(shardId, { type: "add_voter", nodeId: learner }).catch((e) =>
          this.#options.log.debug("learner promotion not applied yet", {
            shard: shardId,
            peer: learner,
            error: (e as Error).message,
          })
        );
        break; // one change at a time per group
      }
    }
  }

  /** A message for `shardId` from the transport; unknown shards are dropped. */
  step(shardId: number, message: Message): void {
    if (this.#stopped) return;
    const g = this.#groups.get(shardId);
    if (g === undefined) {
      this.#options.log.debug("message for an unknown shard dropped", {
        shard: shardId,
        from: message.from,
      });
      return;
    }
    if (message.type === "heartbeat" && message.commit > g.options.store.lastIndex()) {
      // The leader only sends commits this node acknowledged: its log lost them (data wiped
      // or restored from an old copy). Raft cannot take it back as it is: it must be removed
      // and added again as a new member, and then catches up by a snapshot.
      if (!g.lostLogReported) {
        g.lostLogReported = true;
        this.#options.log.error(
          "this node's log lacks entries it acknowledged to the leader (data lost or wiped); " +
            "remove the node from the cluster and add it again",
          {
            shard: shardId,
            leader: message.from,
            leaderCommit: message.commit,
            lastIndex: g.options.store.lastIndex(),
          },
        );
      }
      return;
    }
    try {
      g.node.step(message);
    } catch (e) {
      this.#options.log.warn("raft message rejected", {
        shard: shardId,
        from: message.from,
        error: e,
      });
      return;
    }
    this.#scheduleDrain();
  }

  /** The transport dropped a message to `peer`: let the group back off its replication. */
  reportUnreachable(shardId: number, peer: NodeId): void {
    const g = this.#groups.get(shardId);
    if (g === undefined || this.#stopped) return;
    g.node.reportUnreachable(peer);
    this.#scheduleDrain();
  }

  /** How streaming a snapshot to `peer` ended (see RaftHostOptions.snapshotSender). */
  reportSnapshot(shardId: number, peer: NodeId, status: "finish" | "failure"): void {
    const g = this.#groups.get(shardId);
    if (g === undefined || this.#stopped) return;
    g.node.reportSnapshot(peer, status);
    this.#scheduleDrain();
  }

  /**
   * Records `snapshot` (the state machine's inline state at `snapshot.index`, which must be
   * applied) as the group's snapshot and drops the log up to `compactTo` (<= its index), in
   * one durable write. Entries after `compactTo` stay for followers a little behind.
   * Does nothing when the membership at `snapshot.index` is no longer known (more than
   * CONF_HISTORY_MAX conf changes since); a later compaction passes it.
   */
  async compact(
    shardId: number,
    snapshot: { index: number; data: Uint8Array },
    compactTo: number,
  ): Promise<void> {
    const g = this.#group(shardId);
    if (this.#stopped) throw new RaftUnavailableError("node is stopping");
    assert(snapshot.index <= g.applied, `snapshot at ${snapshot.index} is past applied`);
    assert(compactTo <= snapshot.index, "the log is compacted only behind a snapshot");
    // The snapshot records the membership at its own index, not a later one.
    const conf = confAt(g, snapshot.index, this.conf(shardId));
    if (conf === null) return;
    const store = g.options.store;
    if (snapshot.index > store.snapshot().meta.index) {
      store.createSnapshot(snapshot.index, conf, snapshot.data);
    }
    if (compactTo >= store.firstIndex()) store.compact(compactTo);
    await store.persist();
  }

  campaign(shardId: number): void {
    this.#group(shardId).node.campaign();
    this.#scheduleDrain();
  }

  transferLeadership(shardId: number, to: NodeId): void {
    this.#group(shardId).node.transferLeadership(to);
    this.#scheduleDrain();
  }

  /**
   * Proposes a command; resolves once it is committed and applied on this node. A follower
   * forwards it to the leader through Raft. Rejects with RaftUnavailableError when no leader
   * takes it in time.
   */
  propose(shardId: number, command: Uint8Array): Promise<ProposalResult> {
    const g = this.#group(shardId);
    const refused = this.#refusal(g, shardId);
    if (refused !== null) return Promise.reject(refused);
    const id = this.#nextProposal++;
    return new Promise<ProposalResult>((resolve, reject) => {
      const waiter = this.#waiter(g.proposals, id, resolve, reject, `shard ${shardId}: proposal`);
      try {
        g.node.propose(encodeCommand(id, command));
      } catch (e) {
        clearTimeout(waiter.timer);
        g.proposals.delete(id);
        reject(
          e instanceof ProposalDroppedError
            ? new RaftProposalDroppedError(
              `shard ${shardId}: no leader to take the write (${e.message})`,
            )
            : e as Error,
        );
        return;
      }
      this.#scheduleDrain();
    });
  }

  /** Why a new proposal or read cannot wait on `g` now, or null when it can. */
  #refusal(g: Group, shardId: number): RaftUnavailableError | null {
    if (this.#stopped) return new RaftUnavailableError("node is stopping");
    if (
      g.proposals.size + g.reads.size + g.confChanges.size >= this.#options.waitersPerGroupMax
    ) {
      return new RaftUnavailableError(`shard ${shardId}: too many requests in flight`);
    }
    return null;
  }

  /** A linearizable read point: resolves with an index this node has applied, once it is safe to read. */
  readIndex(shardId: number): Promise<number> {
    const g = this.#group(shardId);
    const refused = this.#refusal(g, shardId);
    if (refused !== null) return Promise.reject(refused);
    const id = this.#nextProposal++;
    return new Promise<number>((resolve, reject) => {
      this.#waiter(g.reads, id, resolve, reject, `shard ${shardId}: read`);
      const context = new Uint8Array(8);
      new DataView(context.buffer).setBigUint64(0, id);
      g.node.readIndex(context);
      this.#scheduleDrain();
    });
  }

  /** Stops ticking and fails every waiter; in-flight persistence completes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const g of this.#groups.values()) {
      for (const w of [...g.proposals.values(), ...g.reads.values(), ...g.confChanges.values()]) {
        clearTimeout(w.timer);
        w.reject(new RaftUnavailableError("node is stopping"));
      }
      g.confChanges.clear();
      g.proposals.clear();
      g.reads.clear();
    }
    while (this.#draining) await new Promise((r) => setTimeout(r, 1));
  }

  #group(shardId: number): Group {
    const g = this.#groups.get(shardId);
    if (g === undefined) {
      throw new RaftUnavailableError(`shard ${shardId} is not hosted on this node`);
    }
    return g;
  }

  #waiter<T>(
    map: Map<bigint, Waiter<T>>,
    id: bigint,
    resolve: (v: T) => void,
    reject: (e: Error) => void,
    what: string,
  ): Waiter<T> {
    const timeoutMs = this.#options.requestTimeoutMs;
    const waiter: Waiter<T> = {
      resolve,
      reject,
      startedMs: performance.now(),
      timer: setTimeout(() => {
        map.delete(id);
        reject(
          new RaftUnavailableError(`${what} timed out after ${timeoutMs} ms (no quorum or leader)`),
        );
      }, timeoutMs),
    };
    map.set(id, waiter);
    return waiter;
  }

  #scheduleDrain(): void {
    if (this.#drainScheduled) return;
    this.#drainScheduled = true;
    // A macrotask after pending I/O, so messages and proposals arriving together share one
    // Ready (batching). setImmediate, not setTimeout(0): Deno clamps the latter to ~1-2 ms,
    // and a commit crosses several drains on leader and followers.
    setImmediate(() => {
      this.#drainScheduled = false;
      void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    // A drain scheduled before stop() must not persist into stores being closed.
    if (this.#draining || this.#stopped) return;
    this.#draining = true;
    try {
      for (let pass = 0; pass < DRAIN_PASSES_MAX; pass++) {
        const batch: [Group, Ready][] = [];
        for (const g of this.#groups.values()) {
          if (g.node.hasReady()) batch.push([g, g.node.ready()]);
        }
        if (batch.length === 0) break;
        await this.#handle(batch);
      }
    } catch (e) {
      // A failed persist leaves durable state unknown: stop rather than continue corrupt.
      this.#options.log.error("raft host stopped: persisting the log failed", { error: e });
      this.#stopped = true;
      throw e;
    } finally {
      this.#draining = false;
    }
    if (!this.#stopped && [...this.#groups.values()].some((g) => g.node.hasReady())) {
      this.#scheduleDrain();
    }
  }

  async #handle(batch: [Group, Ready][]): Promise<void> {
    // 1. Stage every group's snapshot, entries and hard state.
    const started = performance.now();
    let entries = 0;
    for (const [g, rd] of batch) {
      const store = g.options.store;
      if (rd.snapshot !== null) store.applySnapshot(rd.snapshot);
      if (rd.entries.length > 0) store.append(rd.entries);
      if (rd.hardState !== null) store.setHardState(rd.hardState);
      entries += rd.entries.length;
    }
    // A leader's replication may leave before its own write is durable (Raft thesis 10.2.1):
    // it promises nothing about this node's disk, and the core counts the leader's own entries
    // toward commit only at advance(), after the sync. Only when term and vote are already
    // durable: a message must never carry a term this node could forget.
    const early = (g: Group, rd: Ready, m: Message): boolean =>
      g.node.status().role === "leader" && LEADER_EARLY_MESSAGES.has(m.type) &&
      (rd.hardState === null ||
        (rd.hardState.term === g.durableTerm && rd.hardState.vote === g.durableVote));
    const snapshotSender = this.#options.snapshotSender;
    const send = (g: Group, m: Message): void => {
      if (m.type === "snapshot" && snapshotSender !== undefined) {
        // Stays in snapshot state until the stream reports back.
        snapshotSender(g.options.shardId, m);
        return;
      }
      this.#options.sink.send(g.options.shardId, m);
      // The transport queues a snapshot as one message; a drop comes back as unreachable,
      // which puts the follower back to probing. Otherwise it stays in snapshot state.
      if (m.type === "snapshot") g.node.reportSnapshot(m.to, "finish");
    };
    const sentEarly = new Set<Message>();
    for (const [g, rd] of batch) {
      for (const m of rd.messages) {
        if (!early(g, rd, m)) continue;
        send(g, m);
        sentEarly.add(m);
      }
    }
    // Like etcd's MustSync: entries, a snapshot, or a new term or vote must be durable before
    // anything else is sent; a commit index alone is recovered from the leader after a crash,
    // so it rides along with the next sync instead of costing one of its own.
    const toPersist = batch.filter(([g, rd]) =>
      rd.snapshot !== null || rd.entries.length > 0 ||
      (rd.hardState !== null &&
        (rd.hardState.term !== g.durableTerm || rd.hardState.vote !== g.durableVote))
    );
    if (toPersist.length > 0) {
      await Promise.all(toPersist.map(([g]) => g.options.store.persist()));
      for (const [g] of toPersist) {
        const hs = g.options.store.initialState().hardState;
        g.durableTerm = hs.term;
        g.durableVote = hs.vote;
      }
      this.#options.observer?.persisted(
        toPersist.length,
        entries,
        (performance.now() - started) / 1000,
      );
    }
    // 2. Now the rest may leave: votes and acknowledgements promise what was just made durable.
    for (const [g, rd] of batch) {
      for (const m of rd.messages) if (!sentEarly.has(m)) send(g, m);
    }
    // 3. Apply, answer reads, then 4. advance.
    for (const [g, rd] of batch) {
      if (rd.softState !== null && (rd.softState.lead !== g.lead)) {
        g.lead = rd.softState.lead;
        g.term = g.node.status().term;
        this.#options.observer?.leaderChanged(g.options.shardId, g.lead, g.term);
        this.#options.log.info("shard leader", {
          shard: g.options.shardId,
          lead: g.lead,
          term: g.term,
        });
      }
      if (rd.snapshot !== null) {
        g.options.stateMachine.restore(rd.snapshot);
        g.applied = rd.snapshot.meta.index;
      }
      for (const rs of rd.readStates) {
        const id = new DataView(rs.context.buffer, rs.context.byteOffset, rs.context.byteLength)
          .getBigUint64(0);
        const waiter = g.reads.get(id);
        if (waiter === undefined) continue;
        g.reads.delete(id);
        g.readsAwaitingApply.push({ index: rs.index, waiter });
      }
      if (rd.committedEntries.length > 0) await this.#apply(g, rd.committedEntries);
      this.#answerReads(g);
      g.node.advance(rd);
    }
  }

  async #apply(g: Group, committed: Entry[]): Promise<void> {
    const sm = g.options.stateMachine;
    for (const entry of committed) {
      if (entry.index <= g.applied) continue;
      if (entry.type === "conf_change") {
        this.#applyConfChange(g, entry);
        continue;
      }
      const decoded = entry.data.length === 0 ? null : decodeCommand(entry.data);
      let result: unknown = undefined;
      if (decoded !== null) result = sm.apply(entry, decoded.command);
      g.applied = entry.index;
      if (decoded === null) continue;
      const waiter = g.proposals.get(decoded.proposalId);
      if (waiter !== undefined) {
        g.proposals.delete(decoded.proposalId);
        clearTimeout(waiter.timer);
        this.#options.observer?.committed(
          g.options.shardId,
          (performance.now() - waiter.startedMs) / 1000,
        );
        waiter.resolve({ index: entry.index, term: entry.term, result });
      }
    }
    this.#options.observer?.applied(g.options.shardId, committed.length);
    await sm.afterApply?.(g.applied);
  }

  /**
   * Applies a committed conf change to the core (it is in the log, so a restarted node
   * replays it: membership persists with the log and, once compacted, in the snapshot's conf).
   */
  #applyConfChange(g: Group, entry: Entry): void {
    let change: ConfChange;
    try {
      change = decodeConfChange(entry.data);
    } catch (e) {
      // The leader admits only decodable changes; a bad one is skipped by every member alike.
      this.#options.log.error("undecodable conf change skipped", {
        shard: g.options.shardId,
        index: entry.index,
        error: e,
      });
      g.applied = entry.index;
      return;
    }
    const before = g.node.status().conf;
    const conf = g.node.applyConfChange(change);
    g.applied = entry.index;
    g.confHistory.push({ index: entry.index, before });
    if (g.confHistory.length > CONF_HISTORY_MAX) {
      g.confHistoryFrom = g.confHistory.shift()!.index;
    }
    const { proposalId, addr } = decodeConfContext(change.context);
    this.#options.log.info("membership changed", {
      shard: g.options.shardId,
      change: change.type,
      peer: change.nodeId,
      voters: conf.voters.join(","),
      learners: conf.learners.join(","),
    });
    this.#options.onConfChange?.(
      g.options.shardId,
      { type: change.type, nodeId: change.nodeId, ...(addr !== undefined ? { addr } : {}) },
      conf,
    );
    if (proposalId === null) return;
    const waiter = g.confChanges.get(proposalId);
    if (waiter === undefined) return;
    g.confChanges.delete(proposalId);
    clearTimeout(waiter.timer);
    waiter.resolve(conf);
  }

  /**
   * Proposals waiting when leadership moves may have been lost with the old leader's log, or
   * may still commit: fail them now (their outcome is unknown to the caller, as for any
   * UNAVAILABLE) rather than at the request timeout, long after a new leader took over.
   */
  #failProposals(g: Group, why: string): void {
    for (const w of g.proposals.values()) {
      clearTimeout(w.timer);
      w.reject(
        new RaftUnavailableError(
          `shard ${g.options.shardId}: ${why}; the write may or may not have been applied`,
        ),
      );
    }
    g.proposals.clear();
  }

  #answerReads(g: Group): void {
    if (g.readsAwaitingApply.length === 0) return;
    const remaining: typeof g.readsAwaitingApply = [];
    for (const r of g.readsAwaitingApply) {
      if (r.index <= g.applied) {
        clearTimeout(r.waiter.timer);
        r.waiter.resolve(g.applied);
      } else remaining.push(r);
    }
    g.readsAwaitingApply.length = 0;
    g.readsAwaitingApply.push(...remaining);
  }
}

/** What a leader may send before its own write of the same Ready is durable. */
const LEADER_EARLY_MESSAGES: ReadonlySet<Message["type"]> = new Set([
  "append",
  "heartbeat",
  "snapshot",
]);

/** Conf changes a group remembers the membership before (for snapshots behind them). */
const CONF_HISTORY_MAX = 16;

/** The membership of `g` at `index` (`now` when no change followed), or null if unknown. */
function confAt(g: Group, index: number, now: ConfState): ConfState | null {
  if (index < g.confHistoryFrom) return null;
  const next = g.confHistory.find((h) => h.index > index);
  return next === undefined ? now : next.before;
}

/** Bounds one drain so a flood of messages cannot starve timers and I/O. */
const DRAIN_PASSES_MAX = 64;
