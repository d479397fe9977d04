// Read-index requests waiting for a quorum of heartbeat acknowledgments. A leader records
// its commit index when a read arrives, then serves the read once a quorum has confirmed,
// in this term, that it is still the leader (Raft thesis §6.4).

import { assert } from "../base/mod.ts";
import type { NodeId } from "./types.ts";

/** Upper bound on read-index requests pending at one leader (the map is fed by clients). */
export const READ_INDEX_REQUESTS_PENDING_MAX = 4096;

export interface ReadIndexRequest {
  /** The leader's commit index when the request arrived. */
  index: number;
  /** Who asked: the leader itself (its own id) or a follower that forwarded the request. */
  from: NodeId;
  context: Uint8Array;
  /** Members that acknowledged a heartbeat carrying this request's context. */
  acks: Set<NodeId>;
}

/** Map key for a context: contexts are opaque bytes, compared by value. */
export function contextKey(context: Uint8Array): string {
  let key = "";
  for (const byte of context) key += String.fromCharCode(byte);
  return key;
}

export class ReadOnly {
  #pending: Map<string, ReadIndexRequest> = new Map();
  /** Keys of pending requests in arrival order. */
  #queue: string[] = [];

  get pendingCount(): number {
    return this.#queue.length;
  }

  full(): boolean {
    return this.#queue.length >= READ_INDEX_REQUESTS_PENDING_MAX;
  }

  /**
   * Records a request at commit `index`. A request whose context is already pending is
   * ignored (it will be answered with the first one). Returns false when the queue is full.
   */
  addRequest(index: number, from: NodeId, context: Uint8Array): boolean {
    const key = contextKey(context);
    if (this.#pending.has(key)) return true;
    if (this.full()) return false;
    this.#pending.set(key, { index, from, context, acks: new Set() });
    this.#queue.push(key);
    return true;
  }

  /** Records that `id` acknowledged the heartbeat carrying `context`; returns the ackers. */
  recvAck(id: NodeId, context: Uint8Array): ReadonlySet<NodeId> | null {
    const request = this.#pending.get(contextKey(context));
    if (request === undefined) return null;
    request.acks.add(id);
    return request.acks;
  }

  /**
   * Removes and returns every request up to and including the one tagged `context`: a
   * quorum acknowledging a later heartbeat also confirms leadership for earlier requests.
   */
  advance(context: Uint8Array): ReadIndexRequest[] {
    const key = contextKey(context);
    const position = this.#queue.indexOf(key);
    if (position < 0) return [];
    const released: ReadIndexRequest[] = [];
    for (const k of this.#queue.slice(0, position + 1)) {
      const request = this.#pending.get(k);
      assert(request !== undefined, "read-index queue and map disagree");
      released.push(request);
      this.#pending.delete(k);
    }
    this.#queue = this.#queue.slice(position + 1);
    return released;
  }

  /** Context of the newest pending request (heartbeats carry it), or null. */
  lastPendingContext(): Uint8Array | null {
    if (this.#queue.length === 0) return null;
    const request = this.#pending.get(this.#queue[this.#queue.length - 1]);
    assert(request !== undefined, "read-index queue and map disagree");
    return request.context;
  }

  reset(): void {
    this.#pending.clear();
    this.#queue = [];
  }
}
