// The simulation's virtual clock: a discrete-event queue in virtual milliseconds. Events at
// the same time run in the order they were scheduled, so a seed replays exactly.

import { assert } from "../../mod/base/mod.ts";

export type SimEvent = () => void;

interface Scheduled {
  atMs: number;
  seq: number;
  run: SimEvent;
}

/** A bound on queued events: a runaway feedback loop fails loudly instead of eating memory. */
export const SCHEDULED_EVENTS_MAX = 1_000_000;

export class SimClock {
  #nowMs = 0;
  #seq = 0;
  #heap: Scheduled[] = [];

  get nowMs(): number {
    return this.#nowMs;
  }

  get pending(): number {
    return this.#heap.length;
  }

  /** Runs `run` at virtual time `atMs` (not before now). */
  at(atMs: number, run: SimEvent): void {
    assert(Number.isFinite(atMs) && atMs >= this.#nowMs, `event scheduled in the past: ${atMs}`);
    assert(this.#heap.length < SCHEDULED_EVENTS_MAX, "too many scheduled events");
    this.#push({ atMs, seq: this.#seq++, run });
  }

  after(delayMs: number, run: SimEvent): void {
    this.at(this.#nowMs + delayMs, run);
  }

  /** Time of the next event, or null when none is queued. */
  peekMs(): number | null {
    return this.#heap.length === 0 ? null : this.#heap[0].atMs;
  }

  /** Advances to the next event and runs it; false when nothing is queued. */
  runNext(): boolean {
    const top = this.#pop();
    if (top === undefined) return false;
    this.#nowMs = top.atMs;
    top.run();
    return true;
  }

  #less(a: Scheduled, b: Scheduled): boolean {
    return a.atMs < b.atMs || (a.atMs === b.atMs && a.seq < b.seq);
  }

  #push(item: Scheduled): void {
    const h = this.#heap;
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(h[i], h[parent])) break;
      [h[i], h[parent]] = [h[parent], h[i]];
      i = parent;
    }
  }

  #pop(): Scheduled | undefined {
    const h = this.#heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const lastItem = h.pop()!;
    if (h.length > 0) {
      h[0] = lastItem;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l], h[m])) m = l;
        if (r < h.length && this.#less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}
