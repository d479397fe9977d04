// Scrub and repair: walks every chunk of a store in id order, a bounded number per step,
// reading and verifying each fragment (record header and CRC-32C), rebuilding damaged or
// missing fragments from the others and writing them back (LocalChunkStore.scrubChunk()).
// The cursor is persisted after each step, so a restart resumes the pass where it stopped.

import { assert } from "../base/mod.ts";
import { counter } from "../obs/mod.ts";
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

export interface ChunkScrubberOptions {
  chunksPerStep?: number;
  bytesPerStep?: number;
  /** Rebuild what is damaged (default true); false only reports. */
  repair?: boolean;
}

export class ChunkScrubber {
  readonly #store: LocalChunkStore;
  readonly #chunksPerStep: number;
  readonly #bytesPerStep: number;
  readonly #repair: boolean;

  constructor(store: LocalChunkStore, options: ChunkScrubberOptions = {}) {
    this.#store = store;
    this.#chunksPerStep = options.chunksPerStep ?? SCRUB_STEP_CHUNKS_DEFAULT;
    this.#bytesPerStep = options.bytesPerStep ?? SCRUB_STEP_BYTES_DEFAULT;
    this.#repair = options.repair ?? true;
    assert(
      Number.isInteger(this.#chunksPerStep) && this.#chunksPerStep >= 1 &&
        this.#chunksPerStep <= SCRUB_STEP_CHUNKS_MAX,
      `chunksPerStep must be 1..${SCRUB_STEP_CHUNKS_MAX}`,
    );
    assert(this.#bytesPerStep >= 1, "bytesPerStep must be positive");
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
    report.passComplete = batch.length < this.#chunksPerStep &&
      report.chunksChecked === batch.length;
    await store.env.transaction((txn) => {
      store.index.stageMeta(txn, SCRUB_CURSOR_KEY, report.passComplete ? null : cursor);
    });
    return report;
  }

  /** Steps until the current pass completes; returns the pass's totals. */
  async runPass(): Promise<ScrubReport> {
    const total = emptyScrubReport();
    for (let i = 0; i < SCRUB_PASS_STEPS_MAX && !total.passComplete; i++) {
      const step = await this.step();
      for (const key of Object.keys(total) as (keyof ScrubReport)[]) {
        if (key === "passComplete") total.passComplete = step.passComplete;
        else total[key] += step[key];
      }
    }
    return total;
  }
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
