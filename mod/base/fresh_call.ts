// A call that many callers may share, as long as each gets the result of a run that
// started after it asked: linearizable reads coalesce their quorum round trips this way
// (a read index obtained before a caller arrived may miss writes acknowledged before it).

/**
 * Runs `fn` for callers, one run at a time. A caller never joins a run already in flight:
 * with none, it starts one; otherwise every caller arriving during a run shares the single
 * run that follows it.
 */
export class FreshCall<T> {
  readonly #fn: () => Promise<T>;
  #running: Promise<T> | null = null;
  #next: Promise<T> | null = null;

  constructor(fn: () => Promise<T>) {
    this.#fn = fn;
  }

  call(): Promise<T> {
    if (this.#next !== null) return this.#next;
    if (this.#running === null) return this.#start();
    const next = this.#running.then(() => {}, () => {}).then(() => {
      this.#next = null;
      return this.#start();
    });
    this.#next = next;
    return next;
  }

  #start(): Promise<T> {
    const run = this.#fn();
    this.#running = run;
    const clear = () => {
      if (this.#running === run) this.#running = null;
    };
    run.then(clear, clear);
    return run;
  }
}
