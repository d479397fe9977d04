// The shard delta log: every metadata mutation is a delta committed through its shard's
// Raft group. The committed Raft log is the delta sequence itself (a delta's sequence is
// its log index); this module is the state machine applied to it (maintenance mode,
// counters) and the service behind the LogService API: append, read, health, maintenance.

import { assert, type HybridLogicalClock } from "../base/mod.ts";
import {
  type Entry,
  type NodeId,
  ProposalDroppedError,
  type RaftLogStore,
  type Snapshot,
} from "../raft/mod.ts";
import type { RaftHost, RaftStateMachine } from "../raft/host.ts";
import {
  decodeCommand,
  proposalNodeId,
  RaftProposalDroppedError,
  RaftUnavailableError,
} from "../raft/host.ts";
import { decodeDelta, type Delta, DeltaFormatError, encodeDelta } from "./delta.ts";
import type { ShardId } from "./shard.ts";
import {
  checkPartName,
  decodeInlineSnapshot,
  type DurableSnapshotPart,
  encodeInlineSnapshot,
  type InlineSnapshotPart,
  SNAPSHOT_PARTS_MAX,
  type SnapshottingStateMachine,
} from "./snapshot.ts";

/** Page size bound for ReadDeltas, whatever the client asks. */
export const READ_DELTAS_PAGE_MAX = 1000;
/** Bytes of entries one ReadDeltas page scans at most. */
export const READ_DELTAS_PAGE_BYTES_MAX = 4 << 20;
/**
 * How long an append or a read barrier waits out a shard without a leader (an election, a
 * leadership transfer) before answering unavailable. Only proposals that never entered the
 * log are retried, so a retry cannot apply a delta twice.
 */
export const LEADER_WAIT_MS = 5_000;
/** Pause between those retries (a few Raft ticks). */
const LEADER_RETRY_PAUSE_MS = 50;

const COMMAND_APPEND = 1;
const COMMAND_SET_MAINTENANCE = 2;

export type LogErrorCode =
  | "not_found"
  | "failed_precondition"
  | "unavailable"
  | "invalid_argument"
  | "out_of_range";

/** A request the log cannot serve; the gRPC layer maps `code` onto a status code. */
export class LogError extends Error {
  override name = "LogError";
  constructor(readonly code: LogErrorCode, message: string) {
    super(message);
  }
}

export interface AppendResult {
  sequence: number;
  term: number;
  timestamp: Delta["timestamp"];
}

/** A delta as the log holds it: with the term that appended it and the node that took it. */
export interface LoggedDelta extends Delta {
  /** The Raft term of the leader that appended it. */
  term: number;
  /** The node that accepted the append (its clock stamped the delta's timestamp). */
  nodeId: number;
}

export interface ReadDeltasResult {
  deltas: LoggedDelta[];
  /** Where the next page starts. */
  nextSequence: number;
  /** The last applied sequence of the shard on this node (the tip readers may see). */
  tip: number;
}

export interface ShardHealth {
  shardId: ShardId;
  leader: NodeId;
  term: number;
  commit: number;
  applied: number;
  state: "healthy" | "degraded" | "no_quorum";
  maintenance: boolean;
  members: { id: NodeId; address: string; role: string; match: number }[];
}

/** Sees each applied delta once, in order; must not throw (a view that cannot fold stops the node). */
export type DeltaListener = (delta: Delta) => void;

/** Outcome of applying one command: a sequence, or why it was refused. */
type ApplyOutcome = { sequence: number } | { refused: string };

/** The state folded from a shard's log: what the next command is checked against. */
export class ShardStateMachine implements RaftStateMachine, SnapshottingStateMachine {
  maintenance = false;
  appliedDeltas = 0;
  lastApplied = 0;
  /** Sequence of the last delta applied (handed to the listeners); no-ops and refusals skip it. */
  lastDelta = 0;
  /** Appends that reached the log but were refused at apply (maintenance began first). */
  readonly refused = new Set<number>();
  readonly #listeners: DeltaListener[] = [];
  readonly #inline = new Map<string, InlineSnapshotPart>();
  readonly #durable = new Map<string, DurableSnapshotPart>();

  constructor(readonly shardId: ShardId) {
    this.addInlinePart({
      name: "shard",
      capture: () => Uint8Array.of(this.maintenance ? 1 : 0),
      restore: (bytes) => {
        this.maintenance = bytes?.[0] === 1;
      },
    });
  }

  apply(entry: Entry, command: Uint8Array): ApplyOutcome | undefined {
    this.lastApplied = entry.index;
    switch (command[0]) {
      case COMMAND_APPEND:
        // Deterministic on every replica: the flag is part of the same ordered log.
        if (this.maintenance) {
          this.refused.add(entry.index);
          return { refused: `shard ${this.shardId} is in maintenance (read-only) mode` };
        }
        this.appliedDeltas++;
        this.lastDelta = entry.index;
        if (this.#listeners.length > 0) {
          const delta = { ...decodeDelta(command.subarray(1)), sequence: entry.index };
          for (const listener of this.#listeners) listener(delta);
        }
        return { sequence: entry.index };
      case COMMAND_SET_MAINTENANCE:
        this.maintenance = command[1] === 1;
        return { sequence: entry.index };
      default:
        return undefined; // an unknown command from a newer version: skipped by all alike
    }
  }

  /**
   * Calls `listener` with every delta as it is applied, in sequence order, on this node:
   * views fold from here, so a writer's acknowledged delta is already in its views.
   */
  onDelta(listener: DeltaListener): void {
    this.#listeners.push(listener);
  }

  /** Adds state captured with each snapshot of this shard (register before the first apply). */
  addInlinePart(part: InlineSnapshotPart): void {
    this.#addPart(part.name);
    this.#inline.set(part.name, part);
  }

  /** Adds state that is durable on its own and streamed to followers that need a snapshot. */
  addDurablePart(part: DurableSnapshotPart): void {
    this.#addPart(part.name);
    this.#durable.set(part.name, part);
  }

  #addPart(name: string): void {
    checkPartName(name);
    assert(!this.#inline.has(name) && !this.#durable.has(name), `part ${name} added twice`);
    assert(this.#inline.size + this.#durable.size < SNAPSHOT_PARTS_MAX, "too many parts");
  }

  durableParts(): DurableSnapshotPart[] {
    return [...this.#durable.values()];
  }

  /**
   * The index up to which the shard's state survives without its log: the applied index,
   * or the oldest durable part's index when that is behind.
   */
  durableIndex(): number {
    let index = this.lastApplied;
    for (const part of this.#durable.values()) index = Math.min(index, part.durableIndex());
    return index;
  }

  /** Every inline part's state at the applied index, as one snapshot record. */
  captureSnapshot(): { index: number; data: Uint8Array } {
    const parts = new Map<string, Uint8Array>();
    for (const [name, part] of this.#inline) parts.set(name, part.capture());
    return { index: this.lastApplied, data: encodeInlineSnapshot(parts) };
  }

  /** Refusals at or below `index` can no longer be read from the log: forget them. */
  forgetThrough(index: number): void {
    for (const i of this.refused) if (i <= index) this.refused.delete(i);
  }

  restore(snapshot: Snapshot): void {
    const parts = decodeInlineSnapshot(snapshot.data);
    for (const [name, part] of this.#inline) part.restore(parts.get(name));
    // The bootstrap record (one byte, before any command) leaves the shard at 0: readers of
    // lastApplied wait for deltas up to it, and there are none.
    if (snapshot.data.length > 1) this.lastApplied = snapshot.meta.index;
    this.forgetThrough(snapshot.meta.index);
  }
}

export interface DeltaLogOptions {
  host: RaftHost;
  hlc: HybridLogicalClock;
  /** The node's log stores and state machines, by shard. */
  shards: Map<ShardId, { store: RaftLogStore; stateMachine: ShardStateMachine }>;
  /** Addresses of members, for health answers. */
  memberAddress: (id: NodeId) => string;
}

/** The LogService behaviour, independent of the wire. */
export class DeltaLog {
  readonly #options: DeltaLogOptions;

  constructor(options: DeltaLogOptions) {
    this.#options = options;
  }

  #shard(shardId: number): { store: RaftLogStore; stateMachine: ShardStateMachine } {
    const shard = this.#options.shards.get(shardId);
    if (shard === undefined) {
      throw new LogError("not_found", `shard ${shardId} does not exist on this node`);
    }
    return shard;
  }

  /** Commits a delta; resolves once it is durable on a majority and applied here. */
  async append(delta: Omit<Delta, "sequence" | "timestamp">): Promise<AppendResult> {
    const shard = this.#shard(delta.shardId);
    if (shard.stateMachine.maintenance) {
      throw new LogError(
        "failed_precondition",
        `shard ${delta.shardId} is in maintenance (read-only) mode`,
      );
    }
    const timestamp = this.#options.hlc.now();
    let encoded: Uint8Array;
    try {
      encoded = encodeDelta({ ...delta, sequence: 0, timestamp });
    } catch (e) {
      if (e instanceof DeltaFormatError) throw new LogError("invalid_argument", e.message);
      throw e;
    }
    const command = new Uint8Array(1 + encoded.length);
    command[0] = COMMAND_APPEND;
    command.set(encoded, 1);
    const result = await this.#propose(delta.shardId, command);
    const outcome = result.result as ApplyOutcome | undefined;
    if (outcome === undefined || "refused" in outcome) {
      throw new LogError("failed_precondition", outcome?.refused ?? "the delta was not applied");
    }
    return { sequence: outcome.sequence, term: result.term, timestamp };
  }

  async setMaintenance(shardId: number, enabled: boolean): Promise<{ sequence: number }> {
    this.#shard(shardId);
    const result = await this.#propose(
      shardId,
      Uint8Array.of(COMMAND_SET_MAINTENANCE, enabled ? 1 : 0),
    );
    return { sequence: result.index };
  }

  /**
   * Deltas with sequence >= `fromSequence`, in order, at most `maxCount` (bounded). With
   * `linearizable`, first confirms with a quorum that this node has everything committed.
   */
  async read(
    shardId: number,
    fromSequence: number,
    maxCount: number,
    linearizable = true,
  ): Promise<ReadDeltasResult> {
    const shard = this.#shard(shardId);
    if (!Number.isSafeInteger(fromSequence) || fromSequence < 0) {
      throw new LogError(
        "invalid_argument",
        `from_sequence ${fromSequence} is not a non-negative integer`,
      );
    }
    const count = Math.max(1, Math.min(maxCount || READ_DELTAS_PAGE_MAX, READ_DELTAS_PAGE_MAX));
    if (linearizable) {
      try {
        await this.#options.host.readIndex(shardId);
      } catch (e) {
        if (e instanceof RaftUnavailableError) throw new LogError("unavailable", e.message);
        throw e;
      }
    }
    const tip = shard.stateMachine.lastApplied;
    const deltas: LoggedDelta[] = [];
    // Index 1 holds the bootstrap membership, never a delta: the log starts there. Below a
    // later snapshot, deltas were compacted away.
    const first = shard.store.firstIndex();
    if (fromSequence < first && first > 2) {
      throw new LogError("out_of_range", `sequences below ${first} were compacted`);
    }
    let next = Math.max(fromSequence, first);
    while (next <= tip && deltas.length < count) {
      const entries = shard.store.entries(next, tip + 1, READ_DELTAS_PAGE_BYTES_MAX);
      for (const entry of entries) {
        next = entry.index + 1;
        const delta = shard.stateMachine.refused.has(entry.index) ? null : deltaOf(entry);
        if (delta !== null) deltas.push(delta);
        if (deltas.length >= count) break;
      }
      if (entries.length === 0) break;
    }
    return { deltas, nextSequence: next, tip };
  }

  health(shardId: number): ShardHealth {
    const shard = this.#shard(shardId);
    const status = this.#options.host.status(shardId);
    const voters = status.conf.voters;
    let state: ShardHealth["state"] = "healthy";
    if (status.lead === 0) state = "no_quorum";
    else if (status.progress !== null) {
      const active = voters.filter((id) =>
        id === status.id || status.progress!.get(id)?.recentActive
      );
      if (active.length < voters.length) state = "degraded";
    }
    const members = [...voters, ...status.conf.learners].map((id) => ({
      id,
      address: this.#options.memberAddress(id),
      role: status.conf.learners.includes(id)
        ? "learner"
        : id === status.lead
        ? "leader"
        : "follower",
      match: status.progress?.get(id)?.match ?? (id === status.id ? status.commit : 0),
    }));
    return {
      shardId,
      leader: status.lead,
      term: status.term,
      commit: status.commit,
      applied: shard.stateMachine.lastApplied,
      state,
      maintenance: shard.stateMachine.maintenance,
      members,
    };
  }

  /**
   * A read barrier: once everything committed on the shard before the call is applied here
   * (a Raft read index, waiting out elections), resolves with the sequence of the last delta
   * applied, which views must have folded to show every acknowledged write.
   */
  async readBarrier(shardId: number): Promise<number> {
    const shard = this.#shard(shardId);
    const deadline = performance.now() + LEADER_WAIT_MS;
    for (;;) {
      if (this.#options.host.status(shardId).lead !== 0) {
        try {
          await this.#options.host.readIndex(shardId);
          return shard.stateMachine.lastDelta;
        } catch (e) {
          // A leader lost between the check and the call: the read never left this node.
          if (!(e instanceof RaftUnavailableError) && !(e instanceof ProposalDroppedError)) throw e;
          if (performance.now() >= deadline) throw new LogError("unavailable", e.message);
        }
      } else if (performance.now() >= deadline) {
        throw new LogError("unavailable", `shard ${shardId} has no leader`);
      }
      await new Promise((r) => setTimeout(r, LEADER_RETRY_PAUSE_MS));
    }
  }

  async #propose(shardId: number, command: Uint8Array) {
    const deadline = performance.now() + LEADER_WAIT_MS;
    for (;;) {
      try {
        return await this.#options.host.propose(shardId, command);
      } catch (e) {
        if (e instanceof RaftProposalDroppedError && performance.now() < deadline) {
          await new Promise((r) => setTimeout(r, LEADER_RETRY_PAUSE_MS));
          continue;
        }
        if (e instanceof RaftUnavailableError) throw new LogError("unavailable", e.message);
        throw e;
      }
    }
  }
}

/** The delta a committed entry carries, with its sequence and term; null for other entries. */
function deltaOf(entry: Entry): LoggedDelta | null {
  if (entry.type !== "normal" || entry.data.length === 0) return null;
  const decoded = decodeCommand(entry.data);
  if (decoded === null || decoded.command[0] !== COMMAND_APPEND) return null;
  const delta = decodeDelta(decoded.command.subarray(1));
  return {
    ...delta,
    sequence: entry.index,
    term: entry.term,
    nodeId: proposalNodeId(decoded.proposalId),
  };
}
