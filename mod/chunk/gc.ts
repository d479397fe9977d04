// Garbage collection of chunks: erases chunks whose refcount fell to zero unless a
// retention hold covers them (index entry and extents removed in one durable commit), then
// compaction returns their segment space. Each step does bounded work, so a role can run it
// between other work; run() drives steps until nothing is left.

import { assert } from "../base/mod.ts";
import { counter } from "../obs/mod.ts";
import type { LocalChunkStore } from "./chunk_store.ts";
import type { HoldSubject, LmdbHoldStore } from "./holds.ts";

/** Unreferenced chunks one GC step examines by default. */
export const GC_STEP_CHUNKS_DEFAULT = 256;
export const GC_STEP_CHUNKS_MAX = 65_536;
/** Compaction steps run() takes at most, so a store being written to still finishes. */
export const GC_COMPACT_STEPS_MAX = 100_000;

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

  /** Examines up to chunksPerStep unreferenced chunks and erases the ones no hold covers. */
  async step(): Promise<GcStepReport> {
    const report: GcStepReport = emptyGcReport();
    const ids = this.#store.index.unreferenced(this.#cursor, this.#chunksPerStep);
    const holding = (id: Uint8Array, subject: HoldSubject) =>
      this.#holds === null ? null : this.#holds.holding(id, subject);
    const pool = this.#store.pool.name;
    for (const id of ids) {
      report.examined++;
      const result = await this.#store.eraseUnreferenced(id, holding);
      if (result.outcome === "erased") {
        report.erased++;
        report.bytesErased += result.bytes;
        erasedTotal.inc({ pool });
      } else if (result.outcome === "held") {
        report.held++;
        heldTotal.inc({ pool });
      } else if (result.outcome === "referenced") {
        report.revived++;
      }
    }
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
    if (report.segmentsFreed > 0) segmentsFreedTotal.inc({ pool }, report.segmentsFreed);
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
}

/** The counters of a GC step, summed over a run. */
const GC_STEP_COUNTS = ["examined", "erased", "bytesErased", "held", "revived"] as const;

function emptyGcReport(): GcStepReport {
  return { examined: 0, erased: 0, bytesErased: 0, held: 0, revived: 0, passComplete: false };
}
