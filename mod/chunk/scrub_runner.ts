// Background scrub: runs ChunkScrubber steps one after another, paced so that scrub reads at
// most `rateBytesPerSecond` (below foreground I/O), one pass per `passIntervalMs` (a pass in
// progress at start-up resumes at once, from its persisted cursor), and answers the status
// the operator API serves. An operator may start a pass now.

import { assert } from "../base/mod.ts";
import { counter, gauge, type Logger } from "../obs/mod.ts";
import type { LocalChunkStore } from "./chunk_store.ts";
import {
  ChunkScrubber,
  SCRUB_STEP_BYTES_DEFAULT,
  SCRUB_STEP_CHUNKS_DEFAULT,
  type ScrubPass,
} from "./scrub.ts";

/** Default read rate of background scrub: a small share of one device's bandwidth. */
export const SCRUB_RATE_BYTES_PER_SECOND_DEFAULT = 16 << 20;
/** Default time from the start of one pass to the start of the next. */
export const SCRUB_PASS_INTERVAL_MS_DEFAULT = 24 * 3600 * 1000;
/** One step reads about this much of the rate's budget, so pauses stay short and even. */
export const SCRUB_STEP_MS_TARGET = 1_000;
/** After a failed step, wait this long before the next. */
export const SCRUB_RETRY_MS = 10_000;
/** setTimeout's own bound; longer waits are taken in pieces. */
const SLEEP_MS_MAX = 2 ** 31 - 1;

const running = gauge<"pool">({
  name: "kiseki_scrub_running",
  help: "1 while a scrub pass is underway, 0 between passes",
  labelNames: ["pool"],
});
const rateLimit = gauge<"pool">({
  name: "kiseki_scrub_rate_limit_bytes_per_second",
  help: "Read rate background scrub keeps below (0: background scrub off)",
  labelNames: ["pool"],
});
const progressRatio = gauge<"pool">({
  name: "kiseki_scrub_pass_progress_ratio",
  help: "Share of the chunk id space the scrub pass underway has covered (0 between passes)",
  labelNames: ["pool"],
});
const errorsTotal = counter<"pool">({
  name: "kiseki_scrub_errors_total",
  help: "Scrub steps that failed (retried after a pause)",
  labelNames: ["pool"],
});

export interface ScrubRunnerOptions {
  store: LocalChunkStore;
  /** Read-rate bound of scrub; 0 turns background passes off (a requested pass still runs). */
  rateBytesPerSecond?: number;
  /** From the start of one pass to the start of the next (default one day). */
  passIntervalMs?: number;
  /** Rebuild what is damaged (default true). */
  repair?: boolean;
  logger: Logger;
  /** Wall clock (default Date.now). */
  now?: () => number;
  /** Waits `ms` or until `signal` aborts (default: a timer). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

export type ScrubState = "scanning" | "waiting" | "off" | "stopped";

/** What the operator sees (GET /api/v1/scrub, `kiseki admin scrub`). */
export interface ScrubStatus {
  pool: string;
  state: ScrubState;
  /** False when KISEKI_SCRUB_RATE is 0: passes run only when asked for. */
  background: boolean;
  rateBytesPerSecond: number;
  passIntervalMs: number;
  /**
   * How far the pass underway has come, 0..1, estimated from its cursor: chunk ids are
   * uniform hashes, so the cursor's leading bytes are the share of the id space behind it.
   */
  passProgress: number | null;
  pass: ScrubPass | null;
  lastPass: ScrubPass | null;
  passesCompleted: number;
  /** When the next pass is due (null while one runs, or with background passes off). */
  nextPassAtMs: number | null;
  lastError: string | null;
}

export class ScrubRunner {
  readonly #store: LocalChunkStore;
  readonly #scrubber: ChunkScrubber;
  readonly #background: boolean;
  readonly #rate: number;
  readonly #intervalMs: number;
  readonly #logger: Logger;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  #state: ScrubState = "stopped";
  #requested = false;
  #lastError: string | null = null;
  #loop: Promise<void> | null = null;
  readonly #stop = new AbortController();
  /** Aborted to end a wait between passes early (a requested pass, or stop). */
  #wake = new AbortController();

  constructor(options: ScrubRunnerOptions) {
    const rate = options.rateBytesPerSecond ?? SCRUB_RATE_BYTES_PER_SECOND_DEFAULT;
    assert(Number.isFinite(rate) && rate >= 0, "rateBytesPerSecond must be 0 or more");
    this.#background = rate > 0;
    // A pass asked for while background passes are off still runs at the default pace.
    this.#rate = rate > 0 ? rate : SCRUB_RATE_BYTES_PER_SECOND_DEFAULT;
    this.#intervalMs = options.passIntervalMs ?? SCRUB_PASS_INTERVAL_MS_DEFAULT;
    assert(this.#intervalMs >= 1, "passIntervalMs must be positive");
    this.#store = options.store;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? sleep;
    const bytesPerStep = Math.max(
      1,
      Math.min(SCRUB_STEP_BYTES_DEFAULT, Math.floor(this.#rate * SCRUB_STEP_MS_TARGET / 1000)),
    );
    this.#scrubber = new ChunkScrubber(options.store, {
      chunksPerStep: SCRUB_STEP_CHUNKS_DEFAULT,
      bytesPerStep,
      repair: options.repair,
      now: this.#now,
    });
    rateLimit.set({ pool: this.#store.pool.name }, this.#background ? this.#rate : 0);
  }

  /** Starts the background loop (once). */
  start(): void {
    assert(this.#loop === null, "ScrubRunner.start() twice");
    this.#state = this.#background ? "waiting" : "off";
    this.#loop = this.#run();
  }

  /** Starts a pass now; false when one is already underway. */
  requestPass(): boolean {
    if (this.#scrubber.progress().pass !== null || this.#requested) return false;
    this.#requested = true;
    this.#wake.abort();
    return true;
  }

  status(): ScrubStatus {
    const progress = this.#scrubber.progress();
    const last = progress.lastPass;
    return {
      pool: this.#store.pool.name,
      state: this.#state,
      background: this.#background,
      rateBytesPerSecond: this.#background ? this.#rate : 0,
      passIntervalMs: this.#intervalMs,
      passProgress: idSpaceShare(this.#scrubber.cursor()),
      pass: progress.pass,
      lastPass: last,
      passesCompleted: progress.passesCompleted,
      nextPassAtMs: progress.pass !== null || this.#requested || !this.#background
        ? null
        : last === null
        ? this.#now()
        : last.startedAtMs + this.#intervalMs,
      lastError: this.#lastError,
    };
  }

  /** Ends the loop after the step underway (its progress is persisted). */
  async stop(): Promise<void> {
    this.#stop.abort();
    this.#wake.abort();
    await this.#loop;
    this.#state = "stopped";
    running.set({ pool: this.#store.pool.name }, 0);
  }

  async #run(): Promise<void> {
    const pool = this.#store.pool.name;
    while (!this.#stop.signal.aborted) {
      try {
        const progress = this.#scrubber.progress();
        if (progress.pass === null && !this.#requested) {
          const dueAtMs = !this.#background
            ? Infinity
            : (progress.lastPass?.startedAtMs ?? -Infinity) + this.#intervalMs;
          const waitMs = dueAtMs - this.#now();
          if (waitMs > 0) {
            this.#state = this.#background ? "waiting" : "off";
            running.set({ pool }, 0);
            if (this.#wake.signal.aborted) this.#wake = new AbortController();
            await this.#sleep(Math.min(waitMs, SLEEP_MS_MAX), this.#wake.signal);
            continue;
          }
        }
        if (progress.pass === null) {
          this.#logger.info("scrub pass starting", { pool });
        }
        this.#requested = false;
        this.#state = "scanning";
        running.set({ pool }, 1);
        const started = performance.now();
        const report = await this.#scrubber.step();
        this.#lastError = null;
        progressRatio.set({ pool }, idSpaceShare(this.#scrubber.cursor()) ?? 0);
        if (report.passComplete) {
          const last = this.#scrubber.progress().lastPass!;
          const fields = {
            pool,
            chunks: last.chunksChecked,
            damaged: last.fragmentsDamaged,
            repaired: last.fragmentsRepaired,
            unrecoverable: last.chunksUnrecoverable,
          };
          if (last.fragmentsDamaged > 0) this.#logger.warn("scrub pass found damage", fields);
          else this.#logger.info("scrub pass complete", fields);
          // Set in the same turn the pass's end was persisted, so no status sees them differ.
          this.#state = this.#background ? "waiting" : "off";
          running.set({ pool }, 0);
        }
        // Pace: the step's bytes at the configured rate, less the time the step took.
        const pauseMs = report.bytesChecked * 1000 / this.#rate - (performance.now() - started);
        if (pauseMs > 0) await this.#sleep(pauseMs, this.#stop.signal);
      } catch (e) {
        if (this.#stop.signal.aborted) break;
        errorsTotal.inc({ pool });
        this.#lastError = (e as Error).message;
        this.#logger.warn("scrub step failed; retrying after a pause", { pool, error: e });
        await this.#sleep(SCRUB_RETRY_MS, this.#stop.signal);
      }
    }
  }
}

/** The share of the id space at or below `cursor` (null: no pass underway). */
function idSpaceShare(cursor: Uint8Array | null): number | null {
  if (cursor === null || cursor.length < 4) return null;
  const view = new DataView(cursor.buffer, cursor.byteOffset, 4);
  return (view.getUint32(0) + 1) / 2 ** 32;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}
