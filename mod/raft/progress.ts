// What a leader knows about each member's log: how far it matches (match), what to send next
// (next), and how much may be in flight (probe / replicate / snapshot flow control). The
// tracker holds one Progress per member plus the voter and learner sets.

import { assert } from "../base/mod.ts";
import { committedIndex, voteResult } from "./quorum.ts";
import type { VoteResult } from "./quorum.ts";
import type { ConfState, NodeId, ProgressState, ProgressStatus } from "./types.ts";

/** Upper bound on RaftConfig.maxInflightMsgs: the Inflights ring is allocated up front. */
export const INFLIGHT_MSGS_MAX = 4096;

/**
 * A ring of the last entry index of each append message in flight to one follower, oldest
 * first. Acknowledging index i frees every message that ends at or below i.
 */
export class Inflights {
  readonly capacity: number;
  #buffer: number[];
  #start = 0;
  #count = 0;

  constructor(capacity: number) {
    assert(
      Number.isInteger(capacity) && capacity > 0 && capacity <= INFLIGHT_MSGS_MAX,
      `inflights capacity must be in [1, ${INFLIGHT_MSGS_MAX}]`,
    );
    this.capacity = capacity;
    this.#buffer = new Array<number>(capacity).fill(0);
  }

  get count(): number {
    return this.#count;
  }

  full(): boolean {
    return this.#count === this.capacity;
  }

  /** Records a message whose last entry is `lastIndex`; indexes must increase. */
  add(lastIndex: number): void {
    assert(!this.full(), "cannot add to full inflights");
    if (this.#count > 0) {
      const newest = this.#buffer[(this.#start + this.#count - 1) % this.capacity];
      assert(lastIndex > newest, "inflight indexes must increase");
    }
    this.#buffer[(this.#start + this.#count) % this.capacity] = lastIndex;
    this.#count++;
  }

  /** Frees every message whose last index is <= `index`. */
  freeLE(index: number): void {
    while (this.#count > 0 && this.#buffer[this.#start] <= index) {
      this.#start = (this.#start + 1) % this.capacity;
      this.#count--;
    }
    if (this.#count === 0) this.#start = 0;
  }

  /** Frees the oldest message (a heartbeat response proves the follower is alive). */
  freeFirstOne(): void {
    if (this.#count === 0) return;
    this.freeLE(this.#buffer[this.#start]);
  }

  reset(): void {
    this.#start = 0;
    this.#count = 0;
  }
}

/**
 * Replication state of one member, as seen by the leader.
 *  - probe: the leader does not know where the logs match; one append in flight at a time.
 *  - replicate: logs match up to `match`; appends are pipelined (bounded by inflights).
 *  - snapshot: the needed entries are compacted; wait until the snapshot is installed.
 */
export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** Index of the snapshot in flight (snapshot state only). */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum round (a new member starts active). */
  recentActive = true;
  /** Probe state: an append was sent and no response has arrived since. */
  probeSent = false;
  /** Highest commit index sent in an append (a later one may need sending on its own). */
  sentCommit = 0;
  isLearner: boolean;
  readonly inflights: Inflights;

  constructor(next: number, maxInflightMsgs: number, isLearner: boolean) {
    assert(next >= 1, "progress next must be >= 1");
    this.next = next;
    this.isLearner = isLearner;
    this.inflights = new Inflights(maxInflightMsgs);
  }

  #resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    if (this.state === "snapshot") {
      // The snapshot may have been installed: probe right after it.
      const pendingSnapshot = this.pendingSnapshot;
      this.#resetState("probe");
      this.next = Math.max(this.match + 1, pendingSnapshot + 1);
    } else {
      this.#resetState("probe");
      this.next = this.match + 1;
    }
    // Appends past next - 1 may have been lost, and the commit indexes they carried with them.
    this.sentCommit = Math.min(this.sentCommit, this.next - 1);
  }

  becomeReplicate(): void {
    this.#resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.#resetState("snapshot");
    this.pendingSnapshot = snapshotIndex;
  }

  /**
   * Records an acknowledgment up to `index`. Returns true when match advanced. A stale
   * (smaller) acknowledgment changes nothing.
   */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** Records that an append carried commit index `commit`. */
  sentCommitIndex(commit: number): void {
    this.sentCommit = Math.max(this.sentCommit, commit);
  }

  /**
   * Whether sending commit index `commit` could advance the follower's commit: it is newer
   * than what was sent, and what was sent does not already cover the follower's log.
   */
  canBumpCommit(commit: number): boolean {
    return commit > this.sentCommit && this.sentCommit < this.next - 1;
  }

  /** Records that entries up to `lastIndex` were sent (replicate state pipelining). */
  sentEntries(entryCount: number, lastIndex: number): void {
    switch (this.state) {
      case "replicate":
        if (entryCount > 0) {
          assert(lastIndex + 1 > this.next - 1, "sent entries must extend next");
          this.next = lastIndex + 1;
          this.inflights.add(lastIndex);
        }
        break;
      case "probe":
        if (entryCount > 0) this.probeSent = true;
        break;
      case "snapshot":
        assert(false, "cannot send entries in snapshot state");
    }
  }

  /**
   * Handles a rejected append at `rejected` with the follower's hint `matchHint` (the
   * largest index that may match). Returns false when the rejection is stale.
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      // Stale if the logs are already known to match at `rejected`.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // In probe state one append is in flight, at next - 1; any other rejection is stale.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  /** True when no append may be sent now (flow control). */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }

  toStatus(): ProgressStatus {
    return {
      match: this.match,
      next: this.next,
      state: this.state,
      recentActive: this.recentActive,
      isLearner: this.isLearner,
    };
  }
}

/** Membership plus one Progress per member. */
export class ProgressTracker {
  readonly voters: Set<NodeId> = new Set();
  readonly learners: Set<NodeId> = new Set();
  readonly progress: Map<NodeId, Progress> = new Map();
  readonly maxInflightMsgs: number;

  constructor(maxInflightMsgs: number) {
    this.maxInflightMsgs = maxInflightMsgs;
  }

  confState(): ConfState {
    return {
      voters: [...this.voters].sort((a, b) => a - b),
      learners: [...this.learners].sort((a, b) => a - b),
    };
  }

  /** Replaces membership with `conf`; every member starts probing at `next`. */
  reset(conf: ConfState, next: number): void {
    this.voters.clear();
    this.learners.clear();
    this.progress.clear();
    for (const id of conf.voters) this.addVoter(id, next);
    for (const id of conf.learners) this.addLearner(id, next);
  }

  isMember(id: NodeId): boolean {
    return this.progress.has(id);
  }

  addVoter(id: NodeId, next: number): void {
    assert(id > 0, "node id must be positive");
    const existing = this.progress.get(id);
    if (existing !== undefined) {
      existing.isLearner = false;
    } else {
      this.progress.set(id, new Progress(next, this.maxInflightMsgs, false));
    }
    this.learners.delete(id);
    this.voters.add(id);
  }

  addLearner(id: NodeId, next: number): void {
    assert(id > 0, "node id must be positive");
    const existing = this.progress.get(id);
    if (existing !== undefined) {
      existing.isLearner = true;
    } else {
      this.progress.set(id, new Progress(next, this.maxInflightMsgs, true));
    }
    this.voters.delete(id);
    this.learners.add(id);
  }

  remove(id: NodeId): void {
    this.progress.delete(id);
    this.voters.delete(id);
    this.learners.delete(id);
  }

  /** Exactly one voter (learners do not count). */
  isSingleton(): boolean {
    return this.voters.size === 1;
  }

  /** The largest index a quorum of voters has acknowledged. */
  committed(): number {
    const matches = new Map<NodeId, number>();
    for (const id of this.voters) matches.set(id, this.progress.get(id)?.match ?? 0);
    return committedIndex(this.voters, matches);
  }

  tallyVotes(votes: ReadonlyMap<NodeId, boolean>): VoteResult {
    return voteResult(this.voters, votes);
  }

  /** Whether a quorum of voters was recently active; `self` always counts as active. */
  quorumActive(self: NodeId): boolean {
    const votes = new Map<NodeId, boolean>();
    for (const id of this.voters) {
      const pr = this.progress.get(id);
      votes.set(id, id === self || (pr?.recentActive ?? false));
    }
    return voteResult(this.voters, votes) === "won";
  }

  resetRecentActive(self: NodeId): void {
    for (const [id, pr] of this.progress) pr.recentActive = id === self;
  }
}
