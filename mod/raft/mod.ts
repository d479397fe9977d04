// Raft: the consensus core (a pure state machine behind RaftNode), its vocabulary, the
// conf-change entry format and an in-memory log store for tests and simulation.
export {
  CompactedError,
  EMPTY_BYTES,
  emptyMessage,
  NONE,
  ProposalDroppedError,
  UnavailableError,
} from "./types.ts";
export type {
  ConfChange,
  ConfChangeType,
  ConfState,
  Entry,
  EntryType,
  HardState,
  Message,
  MessageType,
  NodeId,
  ProgressState,
  ProgressStatus,
  RaftConfig,
  RaftLogStore,
  RaftNode,
  RaftRole,
  RaftStatus,
  RaftStorage,
  ReadState,
  Ready,
  Snapshot,
  SnapshotMetadata,
  SoftState,
} from "./types.ts";
export { createRaftNode } from "./raw_node.ts";
export {
  CAMPAIGN_TRANSFER_CONTEXT,
  COMMITTED_ENTRIES_PER_READY_BYTES_MAX,
  ELECTION_TICK_MAX,
  MESSAGES_PENDING_MAX,
  validateRaftConfig,
} from "./raft.ts";
export { INFLIGHT_MSGS_MAX } from "./progress.ts";
export { READ_INDEX_REQUESTS_PENDING_MAX } from "./read_only.ts";
export {
  CONF_CHANGE_CONTEXT_BYTES_MAX,
  ConfChangeDecodeError,
  decodeConfChange,
  encodeConfChange,
} from "./conf_change.ts";
export { MEMORY_STORE_STAGED_WRITES_MAX, MemoryRaftLogStore } from "./memory_storage.ts";
export type { MemoryRaftLogStoreOptions } from "./memory_storage.ts";
export { committedIndex, majoritySize, voteResult } from "./quorum.ts";
export {
  describeConfState,
  describeEntry,
  describeHardState,
  describeMessage,
  describeReady,
  describeSnapshot,
} from "./describe.ts";
export type { VoteResult } from "./quorum.ts";
