// The vocabulary of the pure Raft core: log entries, persistent state, messages, and the
// Ready batch the host turns into I/O. No I/O, clocks or randomness live here.

/** Node ids are positive; 0 means "none" (no vote, no leader). */
export type NodeId = number;
export const NONE: NodeId = 0;

export type EntryType = "normal" | "conf_change";

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  /** Opaque command bytes for `normal`; an encoded ConfChange for `conf_change`. Empty entries are leader no-ops. */
  data: Uint8Array;
}

/** State that must be durable before any message that depends on it is sent. */
export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

/** Group membership. Changes are single-server (one pending change at a time). */
export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export type ConfChangeType = "add_voter" | "add_learner" | "remove_node";

export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque to Raft: e.g. the new node's address, for the host. */
  context: Uint8Array;
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  conf: ConfState;
}

export interface Snapshot {
  meta: SnapshotMetadata;
  /** The application state machine at meta.index (opaque to Raft). */
  data: Uint8Array;
}

export type MessageType =
  | "append" // leader -> follower: entries after (index, logTerm), commit
  | "append_resp" // follower -> leader: index = last matching index, or reject with hint
  | "vote"
  | "vote_resp"
  | "prevote"
  | "prevote_resp"
  | "heartbeat" // leader -> follower: commit (bounded by the follower's match), context for read index
  | "heartbeat_resp"
  | "snapshot" // leader -> follower: install snapshot
  | "timeout_now" // leader -> transferee: campaign now, ignoring lease
  | "read_index" // follower -> leader: forward a read-index request
  | "read_index_resp"
  | "propose"; // follower -> leader: forwarded proposal (entries)

export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: number;
  /** Term of the entry at `index` (append), or of the candidate's last entry (vote). */
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  reject: boolean;
  /** On a rejected append: the follower's hint of where to probe next. */
  rejectHint: number;
  snapshot: Snapshot | null;
  /** Read-index request id, or a marker on vote messages caused by leadership transfer. */
  context: Uint8Array;
}

export type RaftRole = "follower" | "pre_candidate" | "candidate" | "leader";

/** Volatile state a host shows (leader id, role); never persisted. */
export interface SoftState {
  lead: NodeId;
  role: RaftRole;
}

/** A linearizable read point: once applied up to `index`, serve the read tagged `context`. */
export interface ReadState {
  index: number;
  context: Uint8Array;
}

/**
 * What the host must do, in this order:
 *  1. persist `snapshot` (if any), then `entries` (append, truncating any conflicting
 *     suffix), then `hardState` (if any), and make them durable (fsync);
 *  2. only then send `messages` (a vote or an ack must never outrun the state it promises);
 *  3. apply `committedEntries` to the state machine, and answer `readStates` once applied;
 *  4. call `advance()`.
 */
export interface Ready {
  softState: SoftState | null;
  hardState: HardState | null;
  snapshot: Snapshot | null;
  entries: Entry[];
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
}

/**
 * Read access to the durable log, as the core sees it. Synchronous by design: the core is
 * pure and single-threaded, and the host's storage answers from memory or a memory-mapped
 * store. Indexes are 1-based; `firstIndex()` is one past the snapshot's index.
 */
export interface RaftStorage {
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at most `maxBytes` of data (always at least one entry). */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of entry `index`; for `firstIndex() - 1` the snapshot's term. Throws CompactedError below that. */
  term(index: number): number;
  firstIndex(): number;
  lastIndex(): number;
  snapshot(): Snapshot;
}

/** The requested index was compacted into a snapshot. */
export class CompactedError extends Error {
  override name = "CompactedError";
}

/** The requested index is past the end of the log. */
export class UnavailableError extends Error {
  override name = "UnavailableError";
}

/** A proposal the node cannot take now (not leader and no leader known, transfer in progress, too much in flight). */
export class ProposalDroppedError extends Error {
  override name = "ProposalDroppedError";
}

export function emptyMessage(type: MessageType, from: NodeId, to: NodeId, term: number): Message {
  return {
    type,
    from,
    to,
    term,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    snapshot: null,
    context: EMPTY_BYTES,
  };
}

export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

/** Configuration of one Raft group member (one per shard per node). */
export interface RaftConfig {
  id: NodeId;
  /** Ticks without leader contact before a follower campaigns; randomized in [electionTick, 2*electionTick). */
  electionTick: number;
  /** Ticks between leader heartbeats; must be < electionTick. */
  heartbeatTick: number;
  storage: RaftStorage;
  /** Last index the state machine had applied before a restart (0 on a fresh node). */
  applied: number;
  /** Upper bound on entry bytes in one append message. */
  maxSizePerMsgBytes: number;
  /** Upper bound on append messages in flight to one follower (flow control). */
  maxInflightMsgs: number;
  /** Upper bound on proposed-but-uncommitted entry bytes at the leader (0 = no limit). */
  maxUncommittedEntriesBytes: number;
  preVote: boolean;
  checkQuorum: boolean;
  /** Randomness for election timeouts, injected so a seed reproduces a run: returns an integer in [0, n). */
  randomInt: (n: number) => number;
}

export type ProgressState = "probe" | "replicate" | "snapshot";

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  recentActive: boolean;
  isLearner: boolean;
}

export interface RaftStatus {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lead: NodeId;
  role: RaftRole;
  conf: ConfState;
  /** Leader only: per-member replication progress. */
  progress: Map<NodeId, ProgressStatus> | null;
  leadTransferee: NodeId;
}

/**
 * One member of a Raft group, as a pure state machine (the shape of etcd's RawNode). The
 * host calls tick() on a timer, step() for each message received, and drains ready().
 */
export interface RaftNode {
  tick(): void;
  step(message: Message): void;
  /** Start an election now (tests, bootstrap of a single-voter group). */
  campaign(): void;
  /** Throws ProposalDroppedError when no leader can take it. Followers forward to the leader. */
  propose(data: Uint8Array): void;
  proposeConfChange(change: ConfChange): void;
  /** The host calls this when it applies a committed conf_change entry; returns the new membership. */
  applyConfChange(change: ConfChange): ConfState;
  transferLeadership(to: NodeId): void;
  /** Request a linearizable read point; answered by a ReadState carrying `context`. */
  readIndex(context: Uint8Array): void;
  reportUnreachable(id: NodeId): void;
  reportSnapshot(id: NodeId, status: "finish" | "failure"): void;
  hasReady(): boolean;
  ready(): Ready;
  advance(ready: Ready): void;
  status(): RaftStatus;
}

/**
 * The host's side of the log: what a Ready asks to persist. Writes are staged and become
 * durable together at `persist()` (one fsync for a whole Ready: group commit). Reads through
 * RaftStorage see staged writes at once, as the core expects.
 */
export interface RaftLogStore extends RaftStorage {
  /** Appends entries, first truncating any existing suffix from entries[0].index on. */
  append(entries: Entry[]): void;
  setHardState(state: HardState): void;
  /** Replaces the log with a snapshot (entries up to its index are dropped). */
  applySnapshot(snapshot: Snapshot): void;
  /** Records a snapshot of the state machine at `index` (<= applied) and returns it. */
  createSnapshot(index: number, conf: ConfState, data: Uint8Array): Snapshot;
  /** Drops entries up to and including `index` (must be covered by a snapshot). */
  compact(index: number): void;
  /** Makes every staged write durable. */
  persist(): Promise<void>;
}
