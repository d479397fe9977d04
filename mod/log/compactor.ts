// Log compaction: in the background, each shard takes a snapshot of its inline state at the
// applied index (a few bytes: the views and other durable parts are their own snapshot, kept
// up to date by folding) and truncates its Raft log behind it once every durable part holds
// that index. Nothing is copied and no write waits: taking a snapshot is one capture between
// two applies, and truncation one small lmdb transaction. A margin of entries stays behind
// the snapshot for followers a little behind (and for views that lose their last commit to
// a power cut); a follower further behind catches up by a streamed snapshot.

import { assert } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { RaftLogStore } from "../raft/mod.ts";
import type { RaftHost } from "../raft/host.ts";
import type { ShardId } from "./shard.ts";
import type { SnapshottingStateMachine } from "./snapshot.ts";

/** Entries applied since the last snapshot before the next is taken. */
export const RAFT_SNAPSHOT_ENTRIES_DEFAULT = 1024;
/** Entries kept behind a snapshot (slow followers, views replaying their last commit). */
export const RAFT_LOG_MARGIN_ENTRIES_DEFAULT = 1024;
/** Further entries kept for a follower that is connected but behind, before it gets a snapshot. */
export const RAFT_LOG_FOLLOWER_RETAIN_ENTRIES_MAX = 65_536;
/** How often each shard is looked at. */
export const RAFT_COMPACT_INTERVAL_MS_DEFAULT = 500;

export interface LogCompactorOptions {
  host: RaftHost;
  shards: ReadonlyMap<ShardId, { store: RaftLogStore; stateMachine: SnapshottingStateMachine }>;
  log: Logger;
  snapshotEntries?: number;
  marginEntries?: number;
  intervalMs?: number;
  /** Called after each compaction (metrics, tests). */
  onCompacted?: (shardId: ShardId, snapshotIndex: number, firstIndex: number) => void;
}

export interface CompactorShardStats {
  shardId: ShardId;
  snapshotIndex: number;
  firstIndex: number;
  lastIndex: number;
  compactions: number;
}

interface ShardCompaction {
  /** A captured snapshot waiting for the durable parts to reach its index. */
  pending: { index: number; data: Uint8Array } | null;
  snapshotIndex: number;
  compactions: number;
}

export class LogCompactor {
  readonly #options: LogCompactorOptions;
  readonly #snapshotEntries: number;
  readonly #marginEntries: number;
  readonly #state = new Map<ShardId, ShardCompaction>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #running: Promise<void> | null = null;
  #stopped = false;
  #failuresLogged = 0;

  constructor(options: LogCompactorOptions) {
    this.#options = options;
    this.#snapshotEntries = options.snapshotEntries ?? RAFT_SNAPSHOT_ENTRIES_DEFAULT;
    this.#marginEntries = options.marginEntries ?? RAFT_LOG_MARGIN_ENTRIES_DEFAULT;
    assert(
      Number.isInteger(this.#snapshotEntries) && this.#snapshotEntries >= 1,
      "snapshotEntries",
    );
    assert(Number.isInteger(this.#marginEntries) && this.#marginEntries >= 0, "marginEntries");
    for (const [shardId, { store }] of options.shards) {
      this.#state.set(shardId, {
        pending: null,
        snapshotIndex: store.firstIndex() - 1,
        compactions: 0,
      });
    }
  }

  start(): void {
    assert(this.#timer === null, "LogCompactor started twice");
    this.#timer = setInterval(() => {
      if (this.#running === null) {
        this.#running = this.runOnce().finally(() => (this.#running = null));
      }
    }, this.#options.intervalMs ?? RAFT_COMPACT_INTERVAL_MS_DEFAULT);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    await this.#running;
  }

  stats(): CompactorShardStats[] {
    return [...this.#options.shards].map(([shardId, { store }]) => ({
      shardId,
      snapshotIndex: this.#state.get(shardId)!.snapshotIndex,
      firstIndex: store.firstIndex(),
      lastIndex: store.lastIndex(),
      compactions: this.#state.get(shardId)!.compactions,
    }));
  }

  /** One pass over every shard (the timer's work; tests call it directly). */
  async runOnce(): Promise<void> {
    for (const [shardId, shard] of this.#options.shards) {
      if (this.#stopped) return;
      try {
        await this.#compactShard(shardId, shard);
      } catch (e) {
        // The next pass tries again; a broken store stops the host on its own.
        if (this.#failuresLogged++ < 10) {
          this.#options.log.warn("log compaction failed", { shard: shardId, error: e });
        }
      }
    }
  }

  async #compactShard(
    shardId: ShardId,
    shard: { store: RaftLogStore; stateMachine: SnapshottingStateMachine },
  ): Promise<void> {
    const { store, stateMachine } = shard;
    const s = this.#state.get(shardId)!;
    // A snapshot installed from the leader moves the log start on its own.
    s.snapshotIndex = Math.max(s.snapshotIndex, store.firstIndex() - 1);
    if (s.pending !== null && s.pending.index <= s.snapshotIndex) s.pending = null;
    if (s.pending === null) {
      if (stateMachine.lastApplied - s.snapshotIndex < this.#snapshotEntries) return;
      s.pending = stateMachine.captureSnapshot();
    }
    const pending = s.pending;
    // The views and other durable parts must hold the snapshot's index before the log goes.
    if (stateMachine.durableIndex() < pending.index) return;
    const compactTo = Math.max(
      store.firstIndex() - 1,
      this.#retainedFrom(shardId, pending.index - this.#marginEntries),
    );
    await this.#options.host.compact(shardId, pending, compactTo);
    stateMachine.forgetThrough(compactTo);
    s.snapshotIndex = pending.index;
    s.pending = null;
    s.compactions++;
    this.#options.onCompacted?.(shardId, pending.index, store.firstIndex());
  }

  /** Where the log may be cut: `target`, or lower for a connected follower a little behind. */
  #retainedFrom(shardId: ShardId, target: number): number {
    const status = this.#options.host.status(shardId);
    let cut = target;
    if (status.progress === null) return cut;
    for (const [id, pr] of status.progress) {
      if (id === status.id || !pr.recentActive) continue;
      if (pr.match < cut && pr.match >= target - RAFT_LOG_FOLLOWER_RETAIN_ENTRIES_MAX) {
        cut = pr.match;
      }
    }
    return cut;
  }
}
