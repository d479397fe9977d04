// One byte budget for the chunks that all reads hold in memory ahead of their readers, so
// that read-ahead memory is bounded however many reads run at once. A read takes budget
// for each chunk it fetches and gives it back once the reader took the chunk. Read-ahead
// only uses budget that is free; the chunk a reader waits for may queue for budget (a read
// in progress must finish), and a new read that finds none answers "unavailable" (S3:
// SlowDown) instead of joining an ever longer queue.

import { assert } from "../base/mod.ts";
import { gauge } from "../obs/mod.ts";
import { CompositionError } from "./errors.ts";

/** Default bound of read-ahead memory of one engine (KISEKI_READ_AHEAD_MAX). */
export const READ_AHEAD_BYTES_MAX_DEFAULT = 256 * 1024 * 1024;
/** Reads that may wait for budget for the chunk their reader needs next. */
export const READ_BUDGET_WAITERS_MAX = 1024;
/** A read waiting this long for budget fails (its reader stalls everyone else's memory). */
export const READ_BUDGET_WAIT_MS_MAX = 30_000;

/** Budgets the gauges report (one per engine; dropped once collected). */
const budgets = new Set<WeakRef<ReadBudget>>();

function eachBudget(fn: (b: ReadBudget) => void): void {
  for (const ref of budgets) {
    const b = ref.deref();
    if (b === undefined) budgets.delete(ref);
    else fn(b);
  }
}

gauge({
  name: "kiseki_engine_read_ahead_bytes",
  help: "Chunk bytes reads hold ahead of their readers (KISEKI_READ_AHEAD_MAX bounds it)",
  collect: (set) => {
    let used = 0;
    eachBudget((b) => (used += b.usedBytes));
    set({}, used);
  },
});
gauge({
  name: "kiseki_engine_read_ahead_limit_bytes",
  help: "Bound of the chunk bytes reads may hold ahead of their readers",
  collect: (set) => {
    let max = 0;
    eachBudget((b) => (max += b.bytesMax));
    set({}, max);
  },
});
gauge({
  name: "kiseki_engine_read_ahead_waiting_reads",
  help: "Reads waiting for read-ahead memory for the chunk their reader needs",
  collect: (set) => {
    let waiting = 0;
    eachBudget((b) => (waiting += b.waiting));
    set({}, waiting);
  },
});

interface Waiter {
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class ReadBudget {
  readonly bytesMax: number;
  #used = 0;
  readonly #waiters: Waiter[] = [];

  constructor(bytesMax: number = READ_AHEAD_BYTES_MAX_DEFAULT) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax > 0, "read budget must be > 0 bytes");
    this.bytesMax = bytesMax;
    budgets.add(new WeakRef(this));
  }

  /** Bytes taken and not yet given back. */
  get usedBytes(): number {
    return this.#used;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /** Takes `bytes` if free now and nobody waits before us; false otherwise. */
  tryTake(bytes: number): boolean {
    assert(bytes >= 0 && bytes <= this.bytesMax, "a chunk fits the read budget");
    if (this.#waiters.length > 0 || this.#used + bytes > this.bytesMax) return false;
    this.#used += bytes;
    return true;
  }

  /**
   * Takes `bytes` for the chunk a read in progress needs next, waiting in line for it.
   * Fails "unavailable" when too many wait, or after READ_BUDGET_WAIT_MS_MAX.
   */
  take(bytes: number, waitMsMax: number = READ_BUDGET_WAIT_MS_MAX): Promise<void> {
    if (this.tryTake(bytes)) return Promise.resolve();
    if (this.#waiters.length >= READ_BUDGET_WAITERS_MAX) {
      return Promise.reject(this.#exhausted(`${READ_BUDGET_WAITERS_MAX} reads already wait`));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        bytes,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.#waiters.indexOf(waiter);
          if (i >= 0) this.#waiters.splice(i, 1);
          reject(this.#exhausted(`waited ${waitMsMax} ms`));
          this.#wake();
        }, waitMsMax),
      };
      this.#waiters.push(waiter);
    });
  }

  /** Gives back `bytes` taken before, waking the reads waiting in line that now fit. */
  give(bytes: number): void {
    this.#used -= bytes;
    assert(this.#used >= 0, "read budget given back more than taken");
    this.#wake();
  }

  /** The error of a new read that finds no budget: S3 answers it SlowDown. */
  exhausted(): CompositionError {
    return this.#exhausted(`${this.#used} of ${this.bytesMax} bytes in use`);
  }

  #exhausted(why: string): CompositionError {
    return new CompositionError("unavailable", `read-ahead memory exhausted (${why}); retry`);
  }

  #wake(): void {
    while (this.#waiters.length > 0) {
      const head = this.#waiters[0]!;
      if (this.#used + head.bytes > this.bytesMax) return;
      this.#waiters.shift();
      clearTimeout(head.timer);
      this.#used += head.bytes;
      head.resolve();
    }
  }
}
