// Sequential NFS READs of one file served from one open object stream: each READ takes the
// next bytes instead of opening a ranged GET of its own, so the engine's read-ahead works
// for a file read front to back. A READ behind the stream, far ahead of it, or of another
// version of the object is answered by the caller's ranged GET instead.

import type { GetObjectOptions, GetObjectResult, NamespaceRef } from "../composition/mod.ts";

/** Open streams at once (each holds the engine's read-ahead for its object). */
export const READ_STREAMS_MAX = 8;
/** A stream unused this long is closed, giving its read-ahead back. */
export const READ_STREAM_IDLE_MS = 2_000;
/** How far past its position a stream serves a READ, skipping what lies between. */
export const READ_SKIP_BYTES_MAX = 4 << 20;

export interface ReadBackend {
  getObject(ns: NamespaceRef, key: string, options?: GetObjectOptions): Promise<GetObjectResult>;
}

interface Stream {
  key: string;
  version: number;
  /** Object offset of the next byte `reader` gives (after `leftover`). */
  pos: number;
  leftover: Uint8Array;
  reader: ReadableStreamDefaultReader<Uint8Array>;
  /** Reads of this stream run one at a time, in arrival order. */
  tail: Promise<unknown>;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class ReadStreams {
  readonly #streams = new Map<string, Stream>();
  readonly #backend: ReadBackend;
  readonly #idleMs: number;
  hits = 0;

  constructor(backend: ReadBackend, idleMs = READ_STREAM_IDLE_MS) {
    this.#backend = backend;
    this.#idleMs = idleMs;
  }

  get open(): number {
    return this.#streams.size;
  }

  /**
   * `count` bytes at `offset` of version `version` of the object (fewer at its end), or null
   * when no stream can serve them (the caller reads a range instead).
   */
  read(
    ref: NamespaceRef,
    path: string,
    version: number,
    offset: number,
    count: number,
  ): Promise<Uint8Array | null> {
    const key = `${ref.id.join(",")}/${path}`;
    let s = this.#streams.get(key);
    if (s !== undefined && s.version !== version) {
      this.#drop(s);
      s = undefined;
    }
    if (s === undefined) {
      // Only a read from the start opens a stream: a random reader gets ranges.
      if (offset !== 0) return Promise.resolve(null);
      while (this.#streams.size >= READ_STREAMS_MAX) {
        this.#drop(this.#streams.values().next().value!);
      }
      const opened: Stream = {
        key,
        version,
        pos: 0,
        leftover: new Uint8Array(0),
        reader: null as unknown as ReadableStreamDefaultReader<Uint8Array>,
        tail: Promise.resolve(),
        timer: undefined,
      };
      const start = this.#backend.getObject(ref, path).then((got) => {
        if (got.version !== version) throw new Error("the object changed");
        opened.reader = got.body.getReader();
      });
      opened.tail = start;
      this.#streams.set(key, opened);
      s = opened;
    }
    const stream = s;
    const result = stream.tail.then(() => this.#take(stream, offset, count));
    stream.tail = result.catch(() => {});
    return result.catch(() => {
      this.#drop(stream);
      return null;
    });
  }

  async #take(s: Stream, offset: number, count: number): Promise<Uint8Array | null> {
    if (this.#streams.get(s.key) !== s) return null;
    const at = s.pos - s.leftover.length;
    if (offset < at || offset - at > READ_SKIP_BYTES_MAX) return null;
    this.#arm(s);
    let skip = offset - at;
    const out = new Uint8Array(count);
    let filled = 0;
    let pending = s.leftover;
    s.leftover = new Uint8Array(0);
    for (;;) {
      if (pending.length > 0) {
        const dropped = Math.min(skip, pending.length);
        skip -= dropped;
        pending = pending.subarray(dropped);
        const take = Math.min(pending.length, count - filled);
        out.set(pending.subarray(0, take), filled);
        filled += take;
        pending = pending.subarray(take);
        if (filled === count) {
          s.leftover = pending;
          break;
        }
      }
      const next = await s.reader.read();
      if (next.done) break;
      pending = next.value;
      s.pos += pending.length;
    }
    this.hits++;
    return filled === count ? out : out.subarray(0, filled);
  }

  #arm(s: Stream): void {
    clearTimeout(s.timer);
    s.timer = setTimeout(() => this.#drop(s), this.#idleMs);
  }

  #drop(s: Stream): void {
    clearTimeout(s.timer);
    if (this.#streams.get(s.key) === s) this.#streams.delete(s.key);
    // Cancelled once its reads are done: the engine gives its read-ahead back.
    void s.tail.then(() => s.reader?.cancel().catch(() => {}));
  }

  /** Closes every stream. */
  close(): void {
    for (const s of [...this.#streams.values()]) this.#drop(s);
  }
}
