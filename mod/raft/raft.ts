// The Raft state machine of one group member: roles, terms, votes, replication, commit,
// membership, leadership transfer and read index. Pure: it consumes ticks, messages and
// host calls, and produces messages and log changes that raw_node.ts turns into a Ready.
// Structure follows the Raft thesis and etcd's raft.go (stepLeader / stepCandidate /
// stepFollower); the code is our own.

import { assert } from "../base/mod.ts";
import { decodeConfChange } from "./conf_change.ts";
import { INFLIGHT_MSGS_MAX, Progress, ProgressTracker } from "./progress.ts";
import { entriesSizeBytes, RaftLog } from "./raft_log.ts";
import { READ_INDEX_REQUESTS_PENDING_MAX, ReadOnly } from "./read_only.ts";
import type { ReadIndexRequest } from "./read_only.ts";
import { EMPTY_BYTES, emptyMessage, NONE, ProposalDroppedError } from "./types.ts";
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  Message,
  MessageType,
  NodeId,
  ProgressStatus,
  RaftConfig,
  RaftRole,
  RaftStatus,
  ReadState,
  Snapshot,
  SoftState,
} from "./types.ts";

/** Marks vote requests caused by leadership transfer: they bypass the leader lease. */
export const CAMPAIGN_TRANSFER_CONTEXT: Uint8Array = new TextEncoder().encode("campaign_transfer");
/** Upper bound on outgoing messages buffered between two Readies (dropping is always safe). */
export const MESSAGES_PENDING_MAX = 65_536;
/** Upper bound on ReadStates buffered between two Readies. */
export const READ_STATES_PENDING_MAX = READ_INDEX_REQUESTS_PENDING_MAX;
/** Upper bound on committed entry bytes handed to the host in one Ready. */
export const COMMITTED_ENTRIES_PER_READY_BYTES_MAX = 16 * 1024 * 1024;
/** Page size when scanning unapplied entries for conf changes. */
export const CONF_CHANGE_SCAN_PAGE_BYTES = 1024 * 1024;
/** Upper bound on RaftConfig.electionTick (ticks are counted in plain numbers). */
export const ELECTION_TICK_MAX = 1_000_000;

type CampaignKind = "pre_election" | "election" | "transfer";

function sortedIds(ids: Iterable<NodeId>): NodeId[] {
  return [...ids].sort((a, b) => a - b);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Asserts the relationships between configuration limits, once, at start-up. */
export function validateRaftConfig(config: RaftConfig): void {
  assert(Number.isSafeInteger(config.id) && config.id > 0, "raft id must be a positive integer");
  assert(
    Number.isInteger(config.heartbeatTick) && config.heartbeatTick >= 1,
    "heartbeatTick must be >= 1",
  );
  assert(
    Number.isInteger(config.electionTick) && config.electionTick > config.heartbeatTick &&
      config.electionTick <= ELECTION_TICK_MAX,
    `electionTick must be in (heartbeatTick, ${ELECTION_TICK_MAX}]`,
  );
  assert(config.maxSizePerMsgBytes > 0, "maxSizePerMsgBytes must be positive");
  assert(
    Number.isInteger(config.maxInflightMsgs) && config.maxInflightMsgs >= 1 &&
      config.maxInflightMsgs <= INFLIGHT_MSGS_MAX,
    `maxInflightMsgs must be in [1, ${INFLIGHT_MSGS_MAX}]`,
  );
  assert(config.maxUncommittedEntriesBytes >= 0, "maxUncommittedEntriesBytes must be >= 0");
  assert(Number.isInteger(config.applied) && config.applied >= 0, "applied must be >= 0");
}

export class Raft {
  readonly id: NodeId;
  term = 0;
  vote: NodeId = NONE;
  lead: NodeId = NONE;
  role: RaftRole = "follower";
  readonly raftLog: RaftLog;
  readonly tracker: ProgressTracker;

  /** Outgoing messages, drained by ready(). */
  msgs: Message[] = [];
  /** Answered read-index requests, drained by ready(). */
  readStates: ReadState[] = [];

  /** Votes received in the current (pre-)campaign. */
  readonly votes: Map<NodeId, boolean> = new Map();
  electionElapsed = 0;
  heartbeatElapsed = 0;
  randomizedElectionTimeout = 0;
  leadTransferee: NodeId = NONE;
  /** Index of the last conf change proposed by this leader; another waits until it is applied. */
  pendingConfIndex = 0;
  /** Entry bytes proposed at this leader and not yet applied. */
  uncommittedSizeBytes = 0;
  readonly readOnly: ReadOnly = new ReadOnly();
  /** Reads that arrived before this leader committed an entry of its term. */
  pendingReadIndexRequests: { from: NodeId; context: Uint8Array }[] = [];

  readonly electionTimeout: number;
  readonly heartbeatTimeout: number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  readonly maxSizePerMsgBytes: number;
  readonly maxUncommittedEntriesBytes: number;
  readonly maxInflightMsgs: number;
  readonly #randomInt: (n: number) => number;

  constructor(config: RaftConfig) {
    validateRaftConfig(config);
    this.id = config.id;
    this.electionTimeout = config.electionTick;
    this.heartbeatTimeout = config.heartbeatTick;
    this.preVote = config.preVote;
    this.checkQuorum = config.checkQuorum;
    this.maxSizePerMsgBytes = config.maxSizePerMsgBytes;
    this.maxUncommittedEntriesBytes = config.maxUncommittedEntriesBytes;
    this.maxInflightMsgs = config.maxInflightMsgs;
    this.#randomInt = config.randomInt;

    this.raftLog = new RaftLog(config.storage, COMMITTED_ENTRIES_PER_READY_BYTES_MAX);
    this.tracker = new ProgressTracker(config.maxInflightMsgs);
    const { hardState, confState } = config.storage.initialState();
    // A snapshot at index 0 is never sent: members added later would rebuild membership from
    // the log alone, without the initial members, and could elect themselves. Bootstrap with
    // a snapshot at index >= 1 that holds the membership, or with conf_change entries.
    assert(
      confState.voters.length + confState.learners.length === 0 ||
        config.storage.firstIndex() > 1 || config.storage.lastIndex() > 0,
      "bootstrap membership must be in a snapshot at index >= 1 or in the log, not at index 0",
    );
    this.tracker.reset(confState, this.raftLog.lastIndex() + 1);
    this.#loadHardState(hardState);
    if (config.applied > 0) this.raftLog.appliedTo(config.applied);
    this.#replayAppliedConfChanges();
    this.becomeFollower(this.term, NONE);
  }

  #loadHardState(hardState: HardState): void {
    assert(hardState.term >= 0 && hardState.vote >= 0, "hard state is malformed");
    assert(
      hardState.commit <= this.raftLog.lastIndex(),
      `hard state commit ${hardState.commit} is past the last index ${this.raftLog.lastIndex()}`,
    );
    this.term = hardState.term;
    this.vote = hardState.vote;
    this.raftLog.commitTo(hardState.commit);
  }

  /**
   * Membership is the storage's conf plus every conf change the host had applied before a
   * restart. Each change sets one member's status, so replaying changes the storage's conf
   * already reflects is harmless.
   */
  #replayAppliedConfChanges(): void {
    this.#scanEntries(this.raftLog.firstIndex(), this.raftLog.applied + 1, (entry) => {
      if (entry.type === "conf_change") this.#changeMembership(decodeConfChange(entry.data));
      return false;
    });
  }

  /** Visits entries in [lo, hi) page by page until `visit` returns true; returns that. */
  #scanEntries(lo: number, hi: number, visit: (entry: Entry) => boolean): boolean {
    let next = lo;
    while (next < hi) {
      const page = this.raftLog.slice(next, hi, CONF_CHANGE_SCAN_PAGE_BYTES);
      assert(page.length > 0, "log scan made no progress");
      for (const entry of page) if (visit(entry)) return true;
      next += page.length;
    }
    return false;
  }

  // ---- State a host observes -------------------------------------------------------------

  softState(): SoftState {
    return { lead: this.lead, role: this.role };
  }

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.raftLog.committed };
  }

  isLearner(): boolean {
    return this.tracker.learners.has(this.id);
  }

  /** Only voters campaign; a learner or a removed node never does. */
  promotable(): boolean {
    return this.tracker.voters.has(this.id);
  }

  status(): RaftStatus {
    let progress: Map<NodeId, ProgressStatus> | null = null;
    if (this.role === "leader") {
      progress = new Map();
      for (const id of sortedIds(this.tracker.progress.keys())) {
        progress.set(id, this.tracker.progress.get(id)!.toStatus());
      }
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.raftLog.committed,
      applied: this.raftLog.applied,
      lead: this.lead,
      role: this.role,
      conf: this.tracker.confState(),
      progress,
      leadTransferee: this.leadTransferee,
    };
  }

  // ---- Role transitions -----------------------------------------------------------------

  #reset(term: number): void {
    assert(term >= this.term, `term must never decrease (${this.term} -> ${term})`);
    if (term !== this.term) {
      this.term = term;
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.#resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.votes.clear();
    const next = this.raftLog.lastIndex() + 1;
    for (const [id, old] of this.tracker.progress) {
      const pr = new Progress(next, this.maxInflightMsgs, old.isLearner);
      pr.recentActive = id === this.id;
      // Persist before count: the leader's own acknowledgment covers only durable entries.
      if (id === this.id) pr.match = this.raftLog.persistedLastIndex();
      this.tracker.progress.set(id, pr);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSizeBytes = 0;
    this.readOnly.reset();
    this.pendingReadIndexRequests = [];
  }

  #resetRandomizedElectionTimeout(): void {
    const jitter = this.#randomInt(this.electionTimeout);
    assert(
      Number.isInteger(jitter) && jitter >= 0 && jitter < this.electionTimeout,
      `randomInt(${this.electionTimeout}) returned ${jitter}`,
    );
    this.randomizedElectionTimeout = this.electionTimeout + jitter;
  }

  becomeFollower(term: number, lead: NodeId): void {
    this.#reset(term);
    this.lead = lead;
    this.role = "follower";
  }

  becomePreCandidate(): void {
    assert(this.role !== "leader", "a leader cannot become a pre-candidate");
    // Neither the term nor the vote changes: a failed pre-campaign leaves no trace.
    this.votes.clear();
    this.lead = NONE;
    this.role = "pre_candidate";
  }

  becomeCandidate(): void {
    assert(this.role !== "leader", "a leader cannot become a candidate");
    this.#reset(this.term + 1);
    this.vote = this.id;
    this.role = "candidate";
  }

  becomeLeader(): void {
    assert(this.role === "candidate", "only a candidate can become leader");
    this.#reset(this.term);
    this.lead = this.id;
    this.role = "leader";
    const self = this.tracker.progress.get(this.id);
    assert(self !== undefined, "a leader must be a member");
    self.becomeReplicate();
    self.recentActive = true;
    // Conf changes in the uncommitted tail may still be pending; allow no new one until then.
    this.pendingConfIndex = this.raftLog.lastIndex();
    // A no-op of this term: entries of earlier terms commit only under it (§5.4.2).
    const appended = this.#appendEntries([{
      term: 0,
      index: 0,
      type: "normal",
      data: EMPTY_BYTES,
    }]);
    assert(appended, "the empty leader entry must always be accepted");
  }

  // ---- Ticks ----------------------------------------------------------------------------

  tick(): void {
    if (this.role === "leader") this.#tickHeartbeat();
    else this.#tickElection();
  }

  #tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup("election");
    }
  }

  #tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.checkQuorum) {
        const active = this.tracker.quorumActive(this.id);
        this.tracker.resetRecentActive(this.id);
        if (!active) {
          // Not heard from a quorum for an election timeout: another leader may exist.
          this.becomeFollower(this.term, NONE);
          return;
        }
      }
      // A leader no longer among the voters was handing off; it is done waiting.
      if (!this.tracker.voters.has(this.id)) {
        this.becomeFollower(this.term, NONE);
        return;
      }
      // A transfer that has not finished within an election timeout is abandoned.
      if (this.leadTransferee !== NONE) this.abortLeaderTransfer();
    }
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.#bcastHeartbeat(null);
    }
  }

  // ---- Elections ------------------------------------------------------------------------

  /** Starts an election if this node may: a voter, not leader, no unapplied conf change. */
  hup(kind: "election" | "transfer"): void {
    if (this.role === "leader") return;
    if (!this.promotable()) return;
    if (this.#hasUnappliedConfChanges()) return;
    this.#campaign(kind === "election" && this.preVote ? "pre_election" : kind);
  }

  #hasUnappliedConfChanges(): boolean {
    const lo = Math.max(this.raftLog.applied + 1, this.raftLog.firstIndex());
    const hi = this.raftLog.committed + 1;
    if (lo >= hi) return false;
    return this.#scanEntries(lo, hi, (entry) => entry.type === "conf_change");
  }

  #campaign(kind: CampaignKind): void {
    let voteType: MessageType;
    let term: number;
    if (kind === "pre_election") {
      this.becomePreCandidate();
      voteType = "prevote";
      // A pre-vote asks "would you vote for me at term + 1?" without moving to it.
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteType = "vote";
      term = this.term;
    }
    if (this.#poll(this.id, true) === "won") {
      // A single-voter group wins on its own vote.
      if (kind === "pre_election") this.#campaign("election");
      else this.#winElection();
      return;
    }
    const lastIndex = this.raftLog.lastIndex();
    const lastTerm = this.raftLog.lastTerm();
    for (const id of sortedIds(this.tracker.voters)) {
      if (id === this.id) continue;
      const m = emptyMessage(voteType, this.id, id, term);
      m.index = lastIndex;
      m.logTerm = lastTerm;
      if (kind === "transfer") m.context = CAMPAIGN_TRANSFER_CONTEXT;
      this.#send(m);
    }
  }

  #poll(id: NodeId, granted: boolean): "won" | "lost" | "pending" {
    if (!this.votes.has(id)) this.votes.set(id, granted);
    return this.tracker.tallyVotes(this.votes);
  }

  #winElection(): void {
    this.becomeLeader();
    this.#bcastAppend();
  }

  #handleVoteRequest(m: Message): void {
    // We may vote for whoever we already voted for, for anyone when we have neither voted
    // nor know a leader in this term, and pre-vote for anyone at a future term.
    const canVote = this.vote === m.from ||
      (this.vote === NONE && this.lead === NONE) ||
      (m.type === "prevote" && m.term > this.term);
    const respType: MessageType = m.type === "vote" ? "vote_resp" : "prevote_resp";
    if (canVote && this.raftLog.isUpToDate(m.index, m.logTerm)) {
      // The response carries the requested term: for a pre-vote that is a future term, which
      // the pre-candidate recognizes as its own.
      this.#send(emptyMessage(respType, this.id, m.from, m.term));
      if (m.type === "vote") {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.#send(this.#voteRejection(respType, m.from));
    }
  }

  /**
   * A (pre)vote rejection carries our commit index and our term there. A candidate whose
   * log holds the same entry learns it is committed (Log Matching): a voter stranded by a
   * conf change whose commit it never heard of (its old leader left) can then apply it.
   */
  #voteRejection(type: MessageType, to: NodeId): Message {
    const resp = emptyMessage(type, this.id, to, this.term);
    resp.reject = true;
    resp.commit = this.raftLog.committed;
    resp.logTerm = this.raftLog.termOrZero(this.raftLog.committed);
    return resp;
  }

  /** Commit knowledge from a peer: (commit, term) committed there, and our entry matches. */
  #learnCommit(commit: number, term: number): void {
    if (commit > this.raftLog.committed && term > 0 && this.raftLog.matchTerm(commit, term)) {
      this.raftLog.commitTo(commit);
    }
  }

  // ---- Step -----------------------------------------------------------------------------

  step(m: Message): void {
    if (m.from === NONE || !this.#wellFormed(m)) return;
    if ((m.type === "vote_resp" || m.type === "prevote_resp") && m.reject) {
      this.#learnCommit(m.commit, m.logTerm); // whatever the term: a commit is a commit
    }

    if (m.term === 0) {
      // Only forwarded requests travel without a term; anything else is malformed.
      if (m.type !== "propose" && m.type !== "read_index") return;
    } else if (m.term > this.term) {
      if (m.type === "vote" || m.type === "prevote") {
        const force = bytesEqual(m.context, CAMPAIGN_TRANSFER_CONTEXT);
        // Leader lease: while we hear from a leader, nobody can disrupt it (thesis §9.6).
        const inLease = (this.checkQuorum || this.preVote) && this.lead !== NONE &&
          this.electionElapsed < this.electionTimeout;
        if (!force && inLease) return;
      }
      if (m.type === "prevote") {
        // A pre-vote never changes our term.
      } else if (m.type === "prevote_resp" && !m.reject) {
        // A granted pre-vote carries the future term; the term moves only if we win.
      } else if (m.type === "append" || m.type === "heartbeat" || m.type === "snapshot") {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.term) {
      if ((this.checkQuorum || this.preVote) && (m.type === "append" || m.type === "heartbeat")) {
        // A stale leader may be cut off from the group; our higher term tells it to step down.
        this.#send(emptyMessage("append_resp", this.id, m.from, this.term));
      } else if (m.type === "prevote") {
        this.#send(this.#voteRejection("prevote_resp", m.from));
      }
      return;
    }

    if (m.type === "vote" || m.type === "prevote") {
      this.#handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case "leader":
        this.#stepLeader(m);
        break;
      case "candidate":
      case "pre_candidate":
        this.#stepCandidate(m);
        break;
      case "follower":
        this.#stepFollower(m);
        break;
    }
  }

  /** Rejects network input that would break invariants (bad input is dropped, not asserted). */
  #wellFormed(m: Message): boolean {
    if (m.type === "append") {
      for (let i = 0; i < m.entries.length; i++) {
        const entry = m.entries[i];
        if (entry.index !== m.index + 1 + i || entry.term > m.term) return false;
      }
    }
    if (m.type === "snapshot" && m.snapshot === null) return false;
    return true;
  }

  #stepLeader(m: Message): void {
    switch (m.type) {
      case "propose":
        try {
          this.propose(m.entries);
        } catch (error) {
          // A forwarded proposal that cannot be taken is dropped; its client retries.
          if (!(error instanceof ProposalDroppedError)) throw error;
        }
        return;
      case "read_index":
        this.#handleReadIndex(m.from, m.context);
        return;
      default:
        break;
    }
    const pr = this.tracker.progress.get(m.from);
    if (pr === undefined) return; // not (or no longer) a member
    switch (m.type) {
      case "append_resp":
        this.#handleAppendResponse(m, pr);
        break;
      case "heartbeat_resp":
        this.#handleHeartbeatResponse(m, pr);
        break;
      default:
        break;
    }
  }

  #stepCandidate(m: Message): void {
    const myVoteResp: MessageType = this.role === "pre_candidate" ? "prevote_resp" : "vote_resp";
    switch (m.type) {
      case "append":
        this.becomeFollower(m.term, m.from);
        this.#handleAppend(m);
        return;
      case "heartbeat":
        this.becomeFollower(m.term, m.from);
        this.#handleHeartbeat(m);
        return;
      case "snapshot":
        this.becomeFollower(m.term, m.from);
        this.#handleSnapshot(m);
        return;
      default:
        break;
    }
    if (m.type !== myVoteResp) return; // proposals and reads are dropped: no leader
    switch (this.#poll(m.from, !m.reject)) {
      case "won":
        if (this.role === "pre_candidate") this.#campaign("election");
        else this.#winElection();
        break;
      case "lost":
        this.becomeFollower(this.term, NONE);
        break;
      case "pending":
        break;
    }
  }

  #stepFollower(m: Message): void {
    switch (m.type) {
      case "propose":
      case "read_index":
        // Forwarded on towards the leader we know, keeping the original sender.
        if (this.lead !== NONE) this.#send({ ...m, to: this.lead });
        break;
      case "append":
        this.electionElapsed = 0;
        this.lead = m.from;
        this.#handleAppend(m);
        break;
      case "heartbeat":
        this.electionElapsed = 0;
        this.lead = m.from;
        this.#handleHeartbeat(m);
        break;
      case "snapshot":
        this.electionElapsed = 0;
        this.lead = m.from;
        this.#handleSnapshot(m);
        break;
      case "timeout_now":
        // The leader asks us to take over: campaign at once, skipping pre-vote.
        this.hup("transfer");
        break;
      case "read_index_resp":
        this.#addReadState({ index: m.index, context: m.context });
        break;
      default:
        break;
    }
  }

  // ---- Follower side of replication -----------------------------------------------------

  #handleAppend(m: Message): void {
    const committed = this.raftLog.committed;
    if (m.index < committed) {
      // Everything up to our commit index matches any leader's log.
      this.#sendAppendResponse(m.from, committed);
      return;
    }
    const lastNewIndex = this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNewIndex !== null) {
      this.#sendAppendResponse(m.from, lastNewIndex);
      return;
    }
    // Mismatch at m.index. Hint the largest index that could match: no entry of ours after
    // it has a term <= the leader's term at m.index, so the leader can skip a whole term.
    const hint = this.raftLog.findConflictByTerm(
      Math.min(m.index, this.raftLog.lastIndex()),
      m.logTerm,
    );
    const resp = emptyMessage("append_resp", this.id, m.from, this.term);
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = hint.index;
    resp.logTerm = hint.term;
    resp.commit = this.raftLog.committed;
    this.#send(resp);
  }

  #sendAppendResponse(to: NodeId, index: number): void {
    const resp = emptyMessage("append_resp", this.id, to, this.term);
    resp.index = index;
    resp.commit = this.raftLog.committed;
    this.#send(resp);
  }

  #handleHeartbeat(m: Message): void {
    this.raftLog.commitTo(m.commit);
    const resp = emptyMessage("heartbeat_resp", this.id, m.from, this.term);
    resp.context = m.context;
    this.#send(resp);
  }

  #handleSnapshot(m: Message): void {
    const snapshot = m.snapshot;
    assert(snapshot !== null, "snapshot message without a snapshot");
    if (this.#restore(snapshot)) {
      this.#sendAppendResponse(m.from, this.raftLog.lastIndex());
    } else {
      this.#sendAppendResponse(m.from, this.raftLog.committed);
    }
  }

  /** Installs `snapshot` if it is news to us; returns whether it did. */
  #restore(snapshot: Snapshot): boolean {
    const meta = snapshot.meta;
    if (meta.index <= this.raftLog.committed) return false;
    assert(this.role === "follower", "only a follower restores a snapshot");
    // A snapshot whose membership lacks us is still installed: a node being added may get
    // one taken before its addition; it follows, non-promotable, until it applies the entry
    // that adds it.
    if (this.raftLog.matchTerm(meta.index, meta.term)) {
      // We already have the snapshot's last entry: fast-forward the commit instead.
      this.raftLog.commitTo(meta.index);
      return false;
    }
    this.raftLog.restore(snapshot);
    this.tracker.reset(meta.conf, this.raftLog.lastIndex() + 1);
    return true;
  }

  // ---- Leader side of replication -------------------------------------------------------

  #bcastAppend(): void {
    for (const id of sortedIds(this.tracker.progress.keys())) {
      if (id !== this.id) this.#maybeSendAppend(id, true);
    }
  }

  #bcastHeartbeat(context: Uint8Array | null): void {
    const ctx = context ?? this.readOnly.lastPendingContext() ?? EMPTY_BYTES;
    for (const id of sortedIds(this.tracker.progress.keys())) {
      if (id === this.id) continue;
      const pr = this.tracker.progress.get(id)!;
      const m = emptyMessage("heartbeat", this.id, id, this.term);
      // The follower may not have entries past its match yet: never commit past them.
      m.commit = Math.min(pr.match, this.raftLog.committed);
      m.context = ctx;
      this.#send(m);
    }
  }

  /**
   * Sends `to` the entries it needs next (or a snapshot if they are compacted), subject to
   * flow control. Returns whether a message was sent.
   */
  #maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.tracker.progress.get(to);
    assert(pr !== undefined, `no progress for ${to}`);
    if (pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    if (prevIndex < this.raftLog.firstIndex() - 1) return this.#maybeSendSnapshot(to, pr);
    const prevTerm = this.raftLog.term(prevIndex);
    const entries = this.raftLog.entriesFrom(pr.next, this.maxSizePerMsgBytes);
    if (entries.length === 0 && !sendIfEmpty) return false;
    const m = emptyMessage("append", this.id, to, this.term);
    m.index = prevIndex;
    m.logTerm = prevTerm;
    m.entries = entries;
    m.commit = this.raftLog.committed;
    this.#send(m);
    if (entries.length > 0) pr.sentEntries(entries.length, entries[entries.length - 1].index);
    pr.sentCommitIndex(m.commit);
    return true;
  }

  #maybeSendSnapshot(to: NodeId, pr: Progress): boolean {
    // A snapshot is expensive: send it only to a member known to be alive.
    if (!pr.recentActive) return false;
    const snapshot = this.raftLog.snapshot();
    assert(
      snapshot.meta.index > 0 && snapshot.meta.index >= this.raftLog.firstIndex() - 1,
      "compacted entries must be covered by the storage snapshot",
    );
    pr.becomeSnapshot(snapshot.meta.index);
    const m = emptyMessage("snapshot", this.id, to, this.term);
    m.snapshot = snapshot;
    this.#send(m);
    return true;
  }

  #sendTimeoutNow(to: NodeId): void {
    this.#send(emptyMessage("timeout_now", this.id, to, this.term));
  }

  #handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      // Fast backtracking: with the follower's (hint index, hint term), skip to the last
      // index of ours whose term is <= the hint term.
      let nextProbeIndex = m.rejectHint;
      if (m.logTerm > 0) {
        nextProbeIndex = this.raftLog.findConflictByTerm(m.rejectHint, m.logTerm).index;
      }
      if (pr.maybeDecrTo(m.index, nextProbeIndex)) {
        if (pr.state === "replicate") pr.becomeProbe();
        this.#maybeSendAppend(m.from, true);
      }
      return;
    }
    // The follower persisted this commit index with its answer: no need to send it again.
    pr.sentCommitIndex(Math.min(m.commit, m.index));
    // A probe acknowledged at our current match also proves the logs match: replicate.
    if (!pr.maybeUpdate(m.index) && !(pr.match === m.index && pr.state === "probe")) return;
    switch (pr.state) {
      case "probe":
        pr.becomeReplicate();
        break;
      case "snapshot":
        if (pr.match + 1 >= this.raftLog.firstIndex()) {
          // The follower caught up past the compaction point: replicate from the log.
          pr.becomeProbe();
          pr.becomeReplicate();
        }
        break;
      case "replicate":
        pr.inflights.freeLE(m.index);
        break;
    }
    const committed = this.#maybeCommit();
    if (committed) {
      this.#releasePendingReadIndexRequests();
      this.#bcastAppend(); // carries the new commit index to everyone, m.from included
    }
    // Flow control may now allow more messages: send what is waiting, without empties.
    let sent = false;
    while (this.#maybeSendAppend(m.from, false)) sent = true;
    if (!committed && !sent && pr.canBumpCommit(this.raftLog.committed)) {
      // The commit index moved while the follower was paused: tell it.
      this.#maybeSendAppend(m.from, true);
    }
    if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex()) {
      this.#sendTimeoutNow(m.from);
    }
  }

  #handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.probeSent = false;
    // The follower is alive: free a slot so a lost append cannot stall replication forever.
    if (pr.state === "replicate" && pr.inflights.full()) pr.inflights.freeFirstOne();
    if (pr.match < this.raftLog.lastIndex() || pr.state === "probe") {
      this.#maybeSendAppend(m.from, true);
    }
    if (m.context.byteLength === 0) return;
    const acks = this.readOnly.recvAck(m.from, m.context);
    if (acks === null) return;
    const votes = new Map<NodeId, boolean>();
    for (const id of acks) votes.set(id, true);
    if (this.tracker.tallyVotes(votes) !== "won") return;
    for (const request of this.readOnly.advance(m.context)) this.#answerReadIndex(request);
  }

  /** Advances commit to what a quorum has acknowledged, if that is an entry of this term. */
  #maybeCommit(): boolean {
    return this.raftLog.maybeCommit(this.tracker.committed(), this.term);
  }

  // ---- Proposals ------------------------------------------------------------------------

  /**
   * Proposes entries (their term and index are assigned here). A leader appends and
   * replicates; a follower forwards to its leader. Throws ProposalDroppedError otherwise.
   */
  propose(entries: Entry[]): void {
    if (entries.length === 0) throw new ProposalDroppedError("empty proposal");
    switch (this.role) {
      case "leader":
        break;
      case "follower": {
        if (this.lead === NONE) {
          throw new ProposalDroppedError(`node ${this.id} knows no leader at term ${this.term}`);
        }
        const m = emptyMessage("propose", this.id, this.lead, 0);
        m.entries = entries;
        this.#send(m);
        return;
      }
      case "candidate":
      case "pre_candidate":
        throw new ProposalDroppedError(`node ${this.id} is campaigning at term ${this.term}`);
    }
    if (!this.tracker.isMember(this.id)) {
      throw new ProposalDroppedError(`leader ${this.id} is not in the configuration`);
    }
    if (this.leadTransferee !== NONE) {
      throw new ProposalDroppedError(
        `leader ${this.id} is transferring leadership to ${this.leadTransferee}`,
      );
    }
    const lastIndex = this.raftLog.lastIndex();
    const accepted = entries.map((entry, i): Entry => {
      if (entry.type !== "conf_change") return entry;
      // One conf change at a time: a second one, or one that would leave no voter, becomes
      // an empty entry (the log position is kept; the change is not).
      if (this.pendingConfIndex > this.raftLog.applied || !this.#confChangeAcceptable(entry)) {
        return { term: 0, index: 0, type: "normal", data: EMPTY_BYTES };
      }
      this.pendingConfIndex = lastIndex + i + 1;
      return entry;
    });
    if (!this.#appendEntries(accepted)) {
      throw new ProposalDroppedError(
        `leader ${this.id} has ${this.uncommittedSizeBytes} uncommitted bytes (limit ${this.maxUncommittedEntriesBytes})`,
      );
    }
    this.#bcastAppend();
  }

  #confChangeAcceptable(entry: Entry): boolean {
    let change: ConfChange;
    try {
      change = decodeConfChange(entry.data);
    } catch {
      return false;
    }
    return !this.#wouldRemoveLastVoter(change);
  }

  #wouldRemoveLastVoter(change: ConfChange): boolean {
    if (change.type === "add_voter") return false;
    return this.tracker.voters.size === 1 && this.tracker.voters.has(change.nodeId);
  }

  /** Appends entries at the end of the leader's log; false if over the uncommitted limit. */
  #appendEntries(entries: readonly Entry[]): boolean {
    const lastIndex = this.raftLog.lastIndex();
    const stamped = entries.map((entry, i): Entry => ({
      term: this.term,
      index: lastIndex + 1 + i,
      type: entry.type,
      data: entry.data,
    }));
    const sizeBytes = entriesSizeBytes(stamped);
    if (
      this.maxUncommittedEntriesBytes > 0 && this.uncommittedSizeBytes > 0 && sizeBytes > 0 &&
      this.uncommittedSizeBytes + sizeBytes > this.maxUncommittedEntriesBytes
    ) {
      return false;
    }
    this.uncommittedSizeBytes += sizeBytes;
    this.raftLog.append(stamped);
    // No self-acknowledgment here: the leader counts its own entries only once the host
    // reports them durable (onPersisted).
    return true;
  }

  // ---- Host callbacks (through the Ready cycle) ------------------------------------------

  /** The host made entries up to (index, term) durable. */
  onPersisted(index: number, term: number): void {
    this.raftLog.stableTo(index, term);
    if (this.role !== "leader" || !this.raftLog.matchTerm(index, term)) return;
    const self = this.tracker.progress.get(this.id);
    if (self === undefined) return;
    if (self.maybeUpdate(index) && this.#maybeCommit()) {
      this.#releasePendingReadIndexRequests();
      this.#bcastAppend();
    }
  }

  /** The host made the snapshot at `index` durable and loaded it into its state machine. */
  onSnapshotPersisted(index: number): void {
    this.raftLog.stableSnapTo(index);
    this.raftLog.appliedTo(index);
  }

  /** The host applied `entries` (ending at the applied index). */
  onApplied(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    this.raftLog.appliedTo(entries[entries.length - 1].index);
    if (this.role === "leader") {
      this.uncommittedSizeBytes = Math.max(
        0,
        this.uncommittedSizeBytes - entriesSizeBytes(entries),
      );
    }
  }

  // ---- Membership -----------------------------------------------------------------------

  /** Applies a committed conf change; returns the new membership. */
  applyConfChange(change: ConfChange): ConfState {
    const added = !this.tracker.isMember(change.nodeId) && change.type !== "remove_node";
    this.#changeMembership(change);
    if (this.role === "leader") {
      if (!this.tracker.voters.has(this.id)) {
        this.#handOffLeadership();
        return this.tracker.confState();
      }
      if (this.leadTransferee !== NONE && !this.tracker.voters.has(this.leadTransferee)) {
        this.abortLeaderTransfer();
      }
      // A smaller quorum may commit more.
      if (this.#maybeCommit()) {
        this.#releasePendingReadIndexRequests();
        this.#bcastAppend();
      }
      // Probe a new member right away rather than at the next heartbeat.
      if (added && change.nodeId !== this.id) this.#maybeSendAppend(change.nodeId, true);
    }
    return this.tracker.confState();
  }

  /**
   * This leader was removed or demoted. Stepping down at once could strand the group: the
   * remaining voters may not know the change committed, so they still count on our vote,
   * which our longer log would refuse them. Keep replicating (the quorum no longer counts
   * us) and hand leadership to the most caught-up voter; step down when it takes over, or
   * after an election timeout.
   */
  #handOffLeadership(): void {
    let target = NONE;
    let bestMatch = -1;
    for (const id of sortedIds(this.tracker.voters)) {
      const match = this.tracker.progress.get(id)!.match;
      if (match > bestMatch) {
        target = id;
        bestMatch = match;
      }
    }
    if (target === NONE) {
      this.becomeFollower(this.term, NONE);
      return;
    }
    if (this.#maybeCommit()) {
      this.#releasePendingReadIndexRequests();
      this.#bcastAppend();
    }
    this.transferLeadership(target);
  }

  #changeMembership(change: ConfChange): void {
    // Removing or demoting the last voter would leave a group that can never elect a leader;
    // every member ignores such a change the same way.
    if (this.#wouldRemoveLastVoter(change)) return;
    const next = this.raftLog.lastIndex() + 1;
    switch (change.type) {
      case "add_voter":
        this.tracker.addVoter(change.nodeId, next);
        break;
      case "add_learner":
        this.tracker.addLearner(change.nodeId, next);
        break;
      case "remove_node":
        this.tracker.remove(change.nodeId);
        break;
    }
  }

  // ---- Leadership transfer --------------------------------------------------------------

  transferLeadership(to: NodeId): void {
    if (this.role !== "leader") return;
    const pr = this.tracker.progress.get(to);
    if (pr === undefined || pr.isLearner || to === this.id) return;
    if (this.leadTransferee !== NONE) {
      if (this.leadTransferee === to) return;
      this.abortLeaderTransfer();
    }
    // The transfer must finish within an election timeout or it is abandoned.
    this.electionElapsed = 0;
    this.leadTransferee = to;
    if (pr.match === this.raftLog.lastIndex()) this.#sendTimeoutNow(to);
    else this.#maybeSendAppend(to, true);
  }

  abortLeaderTransfer(): void {
    this.leadTransferee = NONE;
  }

  // ---- Read index -----------------------------------------------------------------------

  /** A local read request; followers forward it. Throws ProposalDroppedError without a leader. */
  readIndex(context: Uint8Array): void {
    switch (this.role) {
      case "leader":
        this.#handleReadIndex(this.id, context);
        return;
      case "follower": {
        if (this.lead === NONE) {
          throw new ProposalDroppedError(`node ${this.id} knows no leader at term ${this.term}`);
        }
        const m = emptyMessage("read_index", this.id, this.lead, 0);
        m.context = context;
        this.#send(m);
        return;
      }
      case "candidate":
      case "pre_candidate":
        throw new ProposalDroppedError(`node ${this.id} is campaigning at term ${this.term}`);
    }
  }

  #handleReadIndex(from: NodeId, context: Uint8Array): void {
    // Until an entry of this term is committed, our commit index may lag the true one.
    if (!this.#committedEntryInCurrentTerm()) {
      if (this.pendingReadIndexRequests.length < READ_INDEX_REQUESTS_PENDING_MAX) {
        this.pendingReadIndexRequests.push({ from, context });
      }
      return;
    }
    this.#startReadIndex(from, context);
  }

  #startReadIndex(from: NodeId, context: Uint8Array): void {
    const index = this.raftLog.committed;
    // Alone in the group, nobody else can lead. (A leader that was removed is not alone even
    // when one voter remains: that voter may already lead a later term.)
    if (this.tracker.isSingleton() && this.tracker.voters.has(this.id)) {
      this.#answerReadIndex({ index, from, context, acks: new Set() });
      return;
    }
    if (!this.readOnly.addRequest(index, from, context)) return; // full: the client retries
    this.readOnly.recvAck(this.id, context);
    this.#bcastHeartbeat(context);
  }

  #releasePendingReadIndexRequests(): void {
    if (!this.#committedEntryInCurrentTerm()) return;
    const pending = this.pendingReadIndexRequests;
    this.pendingReadIndexRequests = [];
    for (const { from, context } of pending) this.#startReadIndex(from, context);
  }

  #committedEntryInCurrentTerm(): boolean {
    return this.raftLog.termOrZero(this.raftLog.committed) === this.term;
  }

  #answerReadIndex(request: ReadIndexRequest): void {
    if (request.from === this.id) {
      this.#addReadState({ index: request.index, context: request.context });
      return;
    }
    const m = emptyMessage("read_index_resp", this.id, request.from, this.term);
    m.index = request.index;
    m.context = request.context;
    this.#send(m);
  }

  #addReadState(readState: ReadState): void {
    if (this.readStates.length < READ_STATES_PENDING_MAX) this.readStates.push(readState);
  }

  // ---- Failure reports ------------------------------------------------------------------

  reportUnreachable(id: NodeId): void {
    if (this.role !== "leader") return;
    const pr = this.tracker.progress.get(id);
    // Messages may have been lost: stop pipelining and probe again.
    if (pr !== undefined && pr.state === "replicate") pr.becomeProbe();
  }

  reportSnapshot(id: NodeId, status: "finish" | "failure"): void {
    if (this.role !== "leader") return;
    const pr = this.tracker.progress.get(id);
    if (pr === undefined || pr.state !== "snapshot") return;
    if (status === "failure") pr.pendingSnapshot = 0;
    pr.becomeProbe();
    // Wait for the follower's answer (finish) or a heartbeat (failure) before probing.
    pr.probeSent = true;
  }

  // ---- Output ---------------------------------------------------------------------------

  #send(m: Message): void {
    assert(m.from === this.id || m.type === "propose" || m.type === "read_index", "bad sender");
    assert(m.to !== NONE && m.to !== this.id, `message ${m.type} has no peer to go to`);
    if (m.type === "propose" || m.type === "read_index") {
      assert(m.term === 0, "forwarded requests carry no term");
    } else {
      assert(m.term > 0, `message ${m.type} must carry a term`);
    }
    if (this.msgs.length >= MESSAGES_PENDING_MAX) return; // the network may drop it anyway
    this.msgs.push(m);
  }
}
