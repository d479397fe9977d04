// Garbage collection of chunks: erases chunks whose refcount fell to zero unless a
// retention hold covers them (a batch of index entries and their extents removed in one
// durable commit), then compaction returns their segment space. Each step does bounded
// work; run() drives steps until nothing is left, and start() runs them in the background
// for as long as there is work, so freed space follows deletes at the write rate: erasing
// and freeing dead segments move no bytes and run back to back, copying live records out of
// partly dead segments is held to a byte rate below foreground I/O.

import { assert } from "../base/mod.ts";
import { counter, log, type Logger } from "../obs/mod.ts";
import { CHUNK_ERASE_BATCH_MAX, type LocalChunkStore } from "./chunk_store.ts";
import type { HoldSubject, LmdbHoldStore } from "./holds.ts";

/** Unreferenced chunks one GC step examines by default. */
export const GC_STEP_CHUNKS_DEFAULT = 256;
export const GC_STEP_CHUNKS_MAX = 65_536;
/** Compaction steps run() takes at most, so a store being written to still finishes. */
export const GC_COMPACT_STEPS_MAX = 100_000;
/** How often an idle background GC looks for new work (a cheap counter check). */
export const GC_IDLE_POLL_MS_DEFAULT = 250;
/** An idle background GC looks at the whole store at least this often, work seen or not. */
export const GC_RECHECK_MS_DEFAULT = 10_000;
/** Pause of a background GC after a failed step. */
export const GC_RETRY_MS = 5_000;
/**
 * Bytes per second background compaction copies at most (live records moved out of partly
 * dead segments; a read and a write each). Erasing and freeing all-dead segments are not
 * counted: they move no bytes.
 */
export const GC_COMPACT_BYTES_PER_SECOND_DEFAULT = 64 << 20;

const erasedTotal = counter<"pool">({
  name: "kiseki_gc_chunks_erased_total",
  help: "Unreferenced chunks erased by GC",
  labelNames: ["pool"],
});
const heldTotal = counter<"pool">({
  name: "kiseki_gc_chunks_held_total",
  help: "Unreferenced chunks GC left in place because a retention hold covers them",
  labelNames: ["pool"],
});
const segmentsFreedTotal = counter<"pool">({
  name: "kiseki_gc_segments_freed_total",
  help: "Segments returned to free space by compaction",
  labelNames: ["pool"],
});
const bytesReclaimedTotal = counter<"pool">({
  name: "kiseki_gc_bytes_reclaimed_total",
  help: "Bytes of whole segments compaction returned to free space",
  labelNames: ["pool"],
});
const bytesMovedTotal = counter<"pool">({
  name: "kiseki_gc_compaction_bytes_moved_total",
  help: "Bytes of live records compaction copied out of mostly dead segments",
  labelNames: ["pool"],
});

export interface GcStepReport {
  examined: number;
  erased: number;
  /** Bytes of chunk data erased (space returns once compaction frees its segments). */
  bytesErased: number;
  held: number;
  /** Chunks referenced again since their refcount fell to zero (no longer candidates). */
  revived: number;
  /** The step reached the end of the unreferenced queue (the next one starts over). */
  passComplete: boolean;
}

export interface GcRunReport extends GcStepReport {
  segmentsFreed: number;
  bytesMoved: number;
}

export interface ChunkGcOptions {
  /** Holds that block erasure; null when the store has none. */
  holds: LmdbHoldStore | null;
  chunksPerStep?: number;
  /** Bytes of live records one compaction step copies. */
  compactBytesPerStep?: number;
}

export interface GcBackgroundOptions {
  idlePollMs?: number;
  recheckMs?: number;
  compactBytesPerSecond?: number;
  logger?: Logger;
}

/** Totals of a background GC since it started. */
export interface GcBackgroundStats {
  erased: number;
  bytesErased: number;
  segmentsFreed: number;
  bytesMoved: number;
  /** Rounds that found work and drained it. */
  rounds: number;
  failures: number;
}

/** A running background GC; see ChunkGc.start(). */
export interface GcBackground {
  readonly stats: GcBackgroundStats;
  /** Finishes the step in progress and stops. */
  stop(): Promise<void>;
}

export class ChunkGc {
  readonly #store: LocalChunkStore;
  readonly #holds: LmdbHoldStore | null;
  readonly #chunksPerStep: number;
  readonly #compactBytesPerStep: number | undefined;
  /** Where the next step resumes; the queue is durable, the position need not be. */
  #cursor: Uint8Array | null = null;

  constructor(store: LocalChunkStore, options: ChunkGcOptions) {
    this.#store = store;
    this.#holds = options.holds;
    this.#chunksPerStep = options.chunksPerStep ?? GC_STEP_CHUNKS_DEFAULT;
    assert(
      Number.isInteger(this.#chunksPerStep) && this.#chunksPerStep >= 1 &&
        this.#chunksPerStep <= GC_STEP_CHUNKS_MAX,
      `chunksPerStep must be 1..${GC_STEP_CHUNKS_MAX}`,
    );
    this.#compactBytesPerStep = options.compactBytesPerStep;
  }

  /**
   * Examines up to chunksPerStep unreferenced chunks and erases the ones no hold covers, in
   * one commit per CHUNK_ERASE_BATCH_MAX chunks.
   */
  async step(): Promise<GcStepReport> {
    const report: GcStepReport = emptyGcReport();
    const ids = this.#store.index.unreferenced(this.#cursor, this.#chunksPerStep);
    const holding = (id: Uint8Array, subject: HoldSubject) =>
      this.#holds === null ? null : this.#holds.holding(id, subject);
    const pool = this.#store.pool.name;
    for (let at = 0; at < ids.length; at += CHUNK_ERASE_BATCH_MAX) {
      const batch = ids.slice(at, at + CHUNK_ERASE_BATCH_MAX);
      const results = await this.#store.eraseUnreferencedMany(batch, holding);
      for (const result of results) {
        report.examined++;
        if (result.outcome === "erased") {
          report.erased++;
          report.bytesErased += result.bytes;
        } else if (result.outcome === "held") {
          report.held++;
        } else if (result.outcome === "referenced") {
          report.revived++;
        }
      }
    }
    if (report.erased > 0) erasedTotal.inc({ pool }, report.erased);
    if (report.held > 0) heldTotal.inc({ pool }, report.held);
    if (ids.length < this.#chunksPerStep) {
      this.#cursor = null;
      report.passComplete = true;
    } else {
      this.#cursor = ids[ids.length - 1]!;
    }
    return report;
  }

  /** One bounded compaction step; see LocalChunkStore.compactStep(). */
  async compactStep(): Promise<{ idle: boolean; segmentsFreed: number; bytesMoved: number }> {
    const report = await this.#store.compactStep({ bytesMax: this.#compactBytesPerStep });
    const pool = this.#store.pool.name;
    if (report.segmentsFreed > 0) {
      segmentsFreedTotal.inc({ pool }, report.segmentsFreed);
      bytesReclaimedTotal.inc({ pool }, report.segmentsFreed * this.#store.pool.segmentSizeBytes);
    }
    if (report.bytesMoved > 0) bytesMovedTotal.inc({ pool }, report.bytesMoved);
    return report;
  }

  /**
   * A full pass over the unreferenced queue, then compaction until no segment qualifies
   * (or GC_COMPACT_STEPS_MAX steps). For tests and the admin "gc now" action.
   */
  async run(): Promise<GcRunReport> {
    const total: GcRunReport = { ...emptyGcReport(), segmentsFreed: 0, bytesMoved: 0 };
    this.#cursor = null;
    for (;;) {
      const step = await this.step();
      for (const key of GC_STEP_COUNTS) total[key] += step[key];
      if (step.passComplete) break;
    }
    total.passComplete = true;
    for (let i = 0; i < GC_COMPACT_STEPS_MAX; i++) {
      const step = await this.compactStep();
      if (step.idle) break;
      total.segmentsFreed += step.segmentsFreed;
      total.bytesMoved += step.bytesMoved;
      if (step.segmentsFreed === 0 && step.bytesMoved === 0) break;
    }
    return total;
  }

  /**
   * Runs GC in the background until stop(): whenever chunks were released (the store's
   * unreferenced counter moved) or GC_RECHECK_MS_DEFAULT passed, steps run back to back
   * until a whole round erases, frees and moves nothing. Only copying live records is
   * paced (compactBytesPerSecond); between steps the event loop gets its turn. A failed
   * step is logged and retried after GC_RETRY_MS.
   */
  start(options: GcBackgroundOptions = {}): GcBackground {
    const idlePollMs = options.idlePollMs ?? GC_IDLE_POLL_MS_DEFAULT;
    const recheckMs = options.recheckMs ?? GC_RECHECK_MS_DEFAULT;
    const rate = options.compactBytesPerSecond ?? GC_COMPACT_BYTES_PER_SECOND_DEFAULT;
    assert(idlePollMs > 0 && recheckMs >= idlePollMs && rate > 0, "background GC pacing");
    const logger = options.logger ?? log;
    const stats: GcBackgroundStats = {
      erased: 0,
      bytesErased: 0,
      segmentsFreed: 0,
      bytesMoved: 0,
      rounds: 0,
      failures: 0,
    };
    let stopping = false;
    /** Puts that found the pool full, waiting for space to be freed (see setReclaimer()). */
    const reclaimWaiters: ((freed: boolean) => void)[] = [];
    const answerWaiters = (waiters: ((freed: boolean) => void)[], freed: boolean) => {
      for (const resolve of waiters.splice(0)) resolve(freed);
    };
    let wake: (() => void) | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        if (stopping) return resolve();
        wake = resolve;
        timer = setTimeout(resolve, ms);
      }).finally(() => {
        clearTimeout(timer);
        wake = null;
      });
    const round = async (): Promise<void> => {
      // Waiters from before the round hear whether it freed anything; later ones, the next.
      const served = reclaimWaiters.splice(0);
      let freed = false;
      try {
        while (!stopping) {
          const erase = await this.step();
          stats.erased += erase.erased;
          stats.bytesErased += erase.bytesErased;
          const compact = await this.compactStep();
          stats.segmentsFreed += compact.segmentsFreed;
          stats.bytesMoved += compact.bytesMoved;
          if (compact.segmentsFreed > 0) {
            freed = true;
            answerWaiters(served, true);
            answerWaiters(reclaimWaiters, true);
          }
          const compactDone = compact.idle ||
            (compact.segmentsFreed === 0 && compact.bytesMoved === 0);
          if (erase.passComplete && erase.erased === 0 && compactDone) return;
          // Copies are paced unless a put waits for room; erasing and freeing only yield.
          const paced = compact.bytesMoved > 0 && reclaimWaiters.length === 0 &&
            served.length === 0;
          await sleep(paced ? (compact.bytesMoved / rate) * 1000 : 0);
        }
      } finally {
        answerWaiters(served, freed);
      }
    };
    this.#store.setReclaimer(() =>
      new Promise<boolean>((resolve) => {
        if (stopping) return resolve(false);
        reclaimWaiters.push(resolve);
        (wake as (() => void) | null)?.();
      })
    );
    const loop = (async () => {
      let seen = -1;
      let lastRound = -Infinity;
      while (!stopping) {
        const released = this.#store.unreferencedTotal;
        if (
          released !== seen || reclaimWaiters.length > 0 ||
          performance.now() - lastRound >= recheckMs
        ) {
          seen = released;
          lastRound = performance.now();
          try {
            await round();
            stats.rounds++;
          } catch (e) {
            stats.failures++;
            seen = -1; // Try again after a pause (a failing store would log in a loop).
            logger.warn("chunk GC step failed; retrying", {
              pool: this.#store.pool.name,
              retryMs: GC_RETRY_MS,
              error: e,
            });
            answerWaiters(reclaimWaiters, false);
            await sleep(GC_RETRY_MS);
          }
        }
        if (reclaimWaiters.length === 0) await sleep(idlePollMs);
      }
    })();
    return {
      stats,
      stop: async () => {
        stopping = true;
        this.#store.setReclaimer(null);
        (wake as (() => void) | null)?.();
        await loop;
        answerWaiters(reclaimWaiters, false);
      },
    };
  }
}

/** The counters of a GC step, summed over a run. */
const GC_STEP_COUNTS = ["examined", "erased", "bytesErased", "held", "revived"] as const;

function emptyGcReport(): GcStepReport {
  return { examined: 0, erased: 0, bytesErased: 0, held: 0, revived: 0, passComplete: false };
}
