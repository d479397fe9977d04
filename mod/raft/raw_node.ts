// RaftNode: the host's handle on one group member. It turns the state machine's changes into
// Ready batches (persist, then send, then apply) and takes the host's advance() back.
//
// The cycle: `if (node.hasReady()) { const rd = node.ready(); persist rd.snapshot,
// rd.entries, rd.hardState; send rd.messages; apply rd.committedEntries; node.advance(rd); }`
// Only one Ready is outstanding at a time: ready() may not be called again before advance().
// The host may keep calling tick()/step()/propose() while a Ready is outstanding; what they
// produce goes into the next Ready.

import { assert } from "../base/mod.ts";
import { encodeConfChange } from "./conf_change.ts";
import { Raft } from "./raft.ts";
import { EMPTY_BYTES } from "./types.ts";
import type {
  ConfChange,
  ConfState,
  HardState,
  Message,
  NodeId,
  RaftConfig,
  RaftNode,
  RaftStatus,
  Ready,
  SoftState,
} from "./types.ts";

function softStateEqual(a: SoftState, b: SoftState): boolean {
  return a.lead === b.lead && a.role === b.role;
}

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

function isEmptyHardState(state: HardState): boolean {
  return state.term === 0 && state.vote === 0 && state.commit === 0;
}

class RawRaftNode implements RaftNode {
  readonly #raft: Raft;
  #prevSoftState: SoftState;
  #prevHardState: HardState;
  /** The Ready handed to the host and not yet advanced. */
  #outstanding: Ready | null = null;

  constructor(config: RaftConfig) {
    this.#raft = new Raft(config);
    this.#prevSoftState = this.#raft.softState();
    this.#prevHardState = this.#raft.hardState();
  }

  /** The state machine, for tests and tools inside this module. */
  get raft(): Raft {
    return this.#raft;
  }

  tick(): void {
    this.#raft.tick();
  }

  step(message: Message): void {
    if (message.to !== this.#raft.id) return; // misrouted: not ours to act on
    this.#raft.step(message);
  }

  campaign(): void {
    this.#raft.hup("election");
  }

  propose(data: Uint8Array): void {
    this.#raft.propose([{ term: 0, index: 0, type: "normal", data }]);
  }

  proposeConfChange(change: ConfChange): void {
    this.#raft.propose([{
      term: 0,
      index: 0,
      type: "conf_change",
      data: encodeConfChange(change),
    }]);
  }

  applyConfChange(change: ConfChange): ConfState {
    return this.#raft.applyConfChange(change);
  }

  transferLeadership(to: NodeId): void {
    this.#raft.transferLeadership(to);
  }

  readIndex(context: Uint8Array): void {
    this.#raft.readIndex(context.byteLength === 0 ? EMPTY_BYTES : context.slice());
  }

  reportUnreachable(id: NodeId): void {
    this.#raft.reportUnreachable(id);
  }

  reportSnapshot(id: NodeId, status: "finish" | "failure"): void {
    this.#raft.reportSnapshot(id, status);
  }

  hasReady(): boolean {
    if (this.#outstanding !== null) return false;
    const raft = this.#raft;
    if (!softStateEqual(raft.softState(), this.#prevSoftState)) return true;
    const hardState = raft.hardState();
    if (!isEmptyHardState(hardState) && !hardStateEqual(hardState, this.#prevHardState)) {
      return true;
    }
    return raft.raftLog.hasPendingSnapshot() ||
      raft.raftLog.unstableEntries().length > 0 ||
      raft.msgs.length > 0 ||
      raft.readStates.length > 0 ||
      raft.raftLog.hasNextCommittedEntries();
  }

  ready(): Ready {
    assert(this.#outstanding === null, "ready() called again before advance()");
    const raft = this.#raft;
    const softState = raft.softState();
    const hardState = raft.hardState();
    const ready: Ready = {
      softState: softStateEqual(softState, this.#prevSoftState) ? null : softState,
      hardState: hardStateEqual(hardState, this.#prevHardState) ? null : hardState,
      snapshot: raft.raftLog.unstable.snapshot,
      entries: raft.raftLog.unstableEntries().slice(),
      committedEntries: raft.raftLog.nextCommittedEntries(),
      messages: raft.msgs,
      readStates: raft.readStates,
    };
    // Messages and read states belong to this Ready now; new ones go into the next.
    raft.msgs = [];
    raft.readStates = [];
    this.#prevSoftState = softState;
    this.#prevHardState = hardState;
    this.#outstanding = ready;
    return ready;
  }

  advance(ready: Ready): void {
    assert(this.#outstanding === ready, "advance() must be given the outstanding Ready");
    const raft = this.#raft;
    const storage = raft.raftLog.storage;
    // The host's side of the contract: everything this Ready asked to persist is stored.
    if (ready.snapshot !== null) {
      const index = ready.snapshot.meta.index;
      assert(storage.firstIndex() > index, `advance() before snapshot ${index} reached storage`);
    }
    const last = ready.entries.length > 0 ? ready.entries[ready.entries.length - 1] : null;
    if (last !== null) {
      assert(
        storage.lastIndex() >= last.index && storage.term(last.index) === last.term,
        `advance() before entry ${last.index} reached storage`,
      );
    }
    this.#outstanding = null;
    if (ready.snapshot !== null) raft.onSnapshotPersisted(ready.snapshot.meta.index);
    if (last !== null) raft.onPersisted(last.index, last.term);
    raft.onApplied(ready.committedEntries);
  }

  status(): RaftStatus {
    return this.#raft.status();
  }
}

/** Creates a group member from `config`, resuming from whatever `config.storage` holds. */
export function createRaftNode(config: RaftConfig): RaftNode {
  return new RawRaftNode(config);
}

/** The state machine behind a node made by createRaftNode (tests and tools only). */
export function raftOf(node: RaftNode): Raft {
  assert(node instanceof RawRaftNode, "not a node made by createRaftNode");
  return node.raft;
}
