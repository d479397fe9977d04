// Scrub and repair: walks every chunk of a store in id order, a bounded number per step,
// reading and verifying each fragment (record header and CRC-32C), rebuilding damaged or
// missing fragments from the others and writing them back (LocalChunkStore.scrubChunk()).
// The cursor and the pass's running totals are persisted after each step (in the chunk
// index's meta table, with the step's repairs' commits), so a restart resumes the pass where
// it stopped and still reports the whole pass. ScrubRunner (scrub_runner.ts) paces it.

import { assert } from "../base/mod.ts";
import { counter, gauge } from "../obs/mod.ts";
import type { LocalChunkStore } from "./chunk_store.ts";

/** Chunks one scrub step visits by default. */
export const SCRUB_STEP_CHUNKS_DEFAULT = 64;
export const SCRUB_STEP_CHUNKS_MAX = 65_536;
/** Fragment bytes one step reads by default (it stops after the chunk that crosses it). */
export const SCRUB_STEP_BYTES_DEFAULT = 64 << 20;
/** Steps runPass() takes at most: a pass over a store that keeps growing still ends. */
export const SCRUB_PASS_STEPS_MAX = 10_000_000;
/** The index meta key of the persisted cursor. */
export const SCRUB_CURSOR_KEY = "scrub_cursor";
/** The index meta key of the persisted pass totals (JSON of ScrubProgress). */
export const SCRUB_PROGRESS_KEY = "scrub_progress";

const checkedTotal = counter<"pool">({
  name: "kiseki_scrub_fragments_checked_total",
  help: "Fragments read and verified by scrub",
  labelNames: ["pool"],
});
const damagedTotal = counter<"pool">({
  name: "kiseki_scrub_fragments_damaged_total",
  help: "Fragments scrub found missing, unreadable or corrupt",
  labelNames: ["pool"],
});
const repairedTotal = counter<"pool">({
  name: "kiseki_scrub_fragments_repaired_total",
  help: "Fragments scrub rebuilt and wrote back",
  labelNames: ["pool"],
});
const unrecoverableTotal = counter<"pool">({
  name: "kiseki_scrub_chunks_unrecoverable_total",
  help: "Chunks scrub found with fewer good fragments than needed to rebuild them",
  labelNames: ["pool"],
});
const chunksCheckedTotal = counter<"pool">({
  name: "kiseki_scrub_chunks_checked_total",
  help: "Chunks scrub visited",
  labelNames: ["pool"],
});
const bytesCheckedTotal = counter<"pool">({
  name: "kiseki_scrub_bytes_checked_total",
  help: "Fragment bytes scrub read and verified",
  labelNames: ["pool"],
});
// Gauges from the persisted progress: right after a restart they show the pass underway
// and the findings of the last complete pass, not zeros.
const passChunks = gauge<"pool">({
  name: "kiseki_scrub_pass_chunks_checked",
  help: "Chunks checked so far in the scrub pass underway (0 between passes)",
  labelNames: ["pool"],
});
const passDamaged = gauge<"pool">({
  name: "kiseki_scrub_pass_fragments_damaged",
  help: "Damaged fragments found so far in the scrub pass underway",
  labelNames: ["pool"],
});
const passesCompleted = gauge<"pool">({
  name: "kiseki_scrub_passes_completed",
  help: "Scrub passes this store has completed (persisted)",
  labelNames: ["pool"],
});
const lastPassEnd = gauge<"pool">({
  name: "kiseki_scrub_last_pass_end_timestamp_seconds",
  help: "When the last complete scrub pass ended (Unix seconds; 0 before the first)",
  labelNames: ["pool"],
});
const lastPassDamaged = gauge<"pool">({
  name: "kiseki_scrub_last_pass_fragments_damaged",
  help: "Damaged fragments the last complete scrub pass found",
  labelNames: ["pool"],
});
const lastPassRepaired = gauge<"pool">({
  name: "kiseki_scrub_last_pass_fragments_repaired",
  help: "Fragments the last complete scrub pass rebuilt",
  labelNames: ["pool"],
});
const lastPassUnrecoverable = gauge<"pool">({
  name: "kiseki_scrub_last_pass_chunks_unrecoverable",
  help: "Chunks the last complete scrub pass could not rebuild",
  labelNames: ["pool"],
});

export interface ScrubReport {
  chunksChecked: number;
  fragmentsChecked: number;
  fragmentsDamaged: number;
  fragmentsRepaired: number;
  chunksUnrecoverable: number;
  bytesChecked: number;
  /** Device files found deleted or replaced and reattached at the start of the pass. */
  devicesReattached: number;
  /** This step finished a pass over every chunk; the next step starts a new one. */
  passComplete: boolean;
}

/** One pass's totals so far (or in the end), with when it started and ended. */
export interface ScrubPass extends Omit<ScrubReport, "passComplete"> {
  startedAtMs: number;
  /** Set once the pass is complete. */
  finishedAtMs: number | null;
}

/** What the index remembers of scrub: the pass underway, the last complete one. */
export interface ScrubProgress {
  /** The pass underway (its cursor is persisted beside it); null between passes. */
  pass: ScrubPass | null;
  lastPass: ScrubPass | null;
  passesCompleted: number;
}

export interface ChunkScrubberOptions {
  chunksPerStep?: number;
  bytesPerStep?: number;
  /** Rebuild what is damaged (default true); false only reports. */
  repair?: boolean;
  /** Wall clock for the pass timestamps (default Date.now). */
  now?: () => number;
}

export class ChunkScrubber {
  readonly #store: LocalChunkStore;
  readonly #chunksPerStep: number;
  readonly #bytesPerStep: number;
  readonly #repair: boolean;
  readonly #now: () => number;

  constructor(store: LocalChunkStore, options: ChunkScrubberOptions = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
    this.#chunksPerStep = options.chunksPerStep ?? SCRUB_STEP_CHUNKS_DEFAULT;
    this.#bytesPerStep = options.bytesPerStep ?? SCRUB_STEP_BYTES_DEFAULT;
    this.#repair = options.repair ?? true;
    assert(
      Number.isInteger(this.#chunksPerStep) && this.#chunksPerStep >= 1 &&
        this.#chunksPerStep <= SCRUB_STEP_CHUNKS_MAX,
      `chunksPerStep must be 1..${SCRUB_STEP_CHUNKS_MAX}`,
    );
    assert(this.#bytesPerStep >= 1, "bytesPerStep must be positive");
    publish(store.pool.name, this.progress());
  }

  /** The pass underway and the last complete pass, as persisted. */
  progress(): ScrubProgress {
    const empty: ScrubProgress = { pass: null, lastPass: null, passesCompleted: 0 };
    const value = this.#store.index.getMeta(SCRUB_PROGRESS_KEY);
    if (value === undefined) return empty;
    try {
      const parsed = JSON.parse(new TextDecoder().decode(value)) as ScrubProgress;
      if (typeof parsed.passesCompleted !== "number") return empty;
      // A pass is underway exactly when a cursor is persisted; a record without one is stale.
      return { ...parsed, pass: this.cursor() === null ? null : parsed.pass };
    } catch {
      return empty; // A record this release cannot read: start the accounting afresh.
    }
  }

  /** Where the pass stands: the last chunk id checked, or null at the start of a pass. */
  cursor(): Uint8Array | null {
    const value = this.#store.index.getMeta(SCRUB_CURSOR_KEY);
    return value === undefined || value.length === 0 ? null : value;
  }

  /** Checks (and repairs) the next chunks of the pass, then persists the cursor. */
  async step(): Promise<ScrubReport> {
    const report = emptyScrubReport();
    const store = this.#store;
    const pool = store.pool.name;
    let cursor = this.cursor();
    const progress = this.progress();
    const pass = progress.pass ?? emptyPass(this.#now());
    if (cursor === null) report.devicesReattached = (await store.checkDevices()).length;
    const batch = store.index.scan(cursor, this.#chunksPerStep);
    for (const { id } of batch) {
      const r = await store.scrubChunk(id, { repair: this.#repair });
      report.chunksChecked++;
      report.fragmentsChecked += r.fragmentsChecked;
      report.fragmentsDamaged += r.fragmentsDamaged;
      report.fragmentsRepaired += r.fragmentsRepaired;
      report.bytesChecked += r.bytesChecked;
      if (r.unrecoverable) report.chunksUnrecoverable++;
      cursor = id;
      if (report.bytesChecked >= this.#bytesPerStep) break;
    }
    if (report.fragmentsChecked > 0) checkedTotal.inc({ pool }, report.fragmentsChecked);
    if (report.fragmentsDamaged > 0) damagedTotal.inc({ pool }, report.fragmentsDamaged);
    if (report.fragmentsRepaired > 0) repairedTotal.inc({ pool }, report.fragmentsRepaired);
    if (report.chunksUnrecoverable > 0) {
      unrecoverableTotal.inc({ pool }, report.chunksUnrecoverable);
    }
    if (report.chunksChecked > 0) chunksCheckedTotal.inc({ pool }, report.chunksChecked);
    if (report.bytesChecked > 0) bytesCheckedTotal.inc({ pool }, report.bytesChecked);
    report.passComplete = batch.length < this.#chunksPerStep &&
      report.chunksChecked === batch.length;
    addCounts(pass, report);
    const next: ScrubProgress = report.passComplete
      ? {
        pass: null,
        lastPass: { ...pass, finishedAtMs: this.#now() },
        passesCompleted: progress.passesCompleted + 1,
      }
      : { ...progress, pass };
    await store.env.transaction((txn) => {
      store.index.stageMeta(txn, SCRUB_CURSOR_KEY, report.passComplete ? null : cursor);
      store.index.stageMeta(
        txn,
        SCRUB_PROGRESS_KEY,
        new TextEncoder().encode(JSON.stringify(next)),
      );
    });
    publish(pool, next);
    return report;
  }

  /** Steps until the current pass completes; returns the pass's totals. */
  async runPass(): Promise<ScrubReport> {
    const total = emptyScrubReport();
    for (let i = 0; i < SCRUB_PASS_STEPS_MAX && !total.passComplete; i++) {
      const step = await this.step();
      addCounts(total, step);
      total.passComplete = step.passComplete;
    }
    return total;
  }
}

type ScrubCounts = Omit<ScrubReport, "passComplete">;

function addCounts(into: ScrubCounts, step: ScrubCounts): void {
  for (const key of COUNT_KEYS) into[key] += step[key];
}

const COUNT_KEYS = [
  "chunksChecked",
  "fragmentsChecked",
  "fragmentsDamaged",
  "fragmentsRepaired",
  "chunksUnrecoverable",
  "bytesChecked",
  "devicesReattached",
] as const satisfies readonly (keyof ScrubCounts)[];

function emptyPass(startedAtMs: number): ScrubPass {
  const { passComplete: _, ...counts } = emptyScrubReport();
  return { ...counts, startedAtMs, finishedAtMs: null };
}

function publish(pool: string, progress: ScrubProgress): void {
  passChunks.set({ pool }, progress.pass?.chunksChecked ?? 0);
  passDamaged.set({ pool }, progress.pass?.fragmentsDamaged ?? 0);
  passesCompleted.set({ pool }, progress.passesCompleted);
  const last = progress.lastPass;
  lastPassEnd.set({ pool }, last === null ? 0 : (last.finishedAtMs ?? 0) / 1000);
  lastPassDamaged.set({ pool }, last?.fragmentsDamaged ?? 0);
  lastPassRepaired.set({ pool }, last?.fragmentsRepaired ?? 0);
  lastPassUnrecoverable.set({ pool }, last?.chunksUnrecoverable ?? 0);
}

function emptyScrubReport(): ScrubReport {
  return {
    chunksChecked: 0,
    fragmentsChecked: 0,
    fragmentsDamaged: 0,
    fragmentsRepaired: 0,
    chunksUnrecoverable: 0,
    bytesChecked: 0,
    devicesReattached: 0,
    passComplete: false,
  };
}
