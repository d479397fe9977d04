// Unstable NFS writes of one file, streamed into its next version. WRITEs land as pending
// extents; a put of the object's new bytes consumes them in offset order while the client
// keeps writing, filling gaps from the version before (or zeros past its end), so a
// sequential copy is stored in one pass. COMMIT (or FILE_SYNC, a read, an idle timer) ends
// the stream and waits for the put. A write behind what was already streamed ends the
// current version first and starts another.

import { assert } from "../base/mod.ts";

/** Bytes of pending (not yet streamed) extents one file may hold before gaps are filled. */
export const WRITE_PENDING_BYTES_MAX = 64 << 20;
/** Pending extents one file may hold (tiny scattered writes) before gaps are filled. */
export const WRITE_EXTENTS_MAX = 4096;
/** Gap filler read or zeroed at a time. */
export const WRITE_FILL_BYTES_MAX = 1 << 20;

export interface Extent {
  offset: number;
  bytes: Uint8Array;
}

/** Where the streamed version reads what no write covers: the previous version's bytes. */
export type FillSource = (offset: number, length: number) => Promise<Uint8Array>;

/** Stores a version: consumes `body` to its end and resolves once it is durable. */
export type VersionSink = (body: ReadableStream<Uint8Array>) => Promise<void>;

/**
 * One version being written. `write()` resolves when the extent is accepted (it may wait for
 * room); `finish()` ends the body at `size` and resolves when the sink has stored it.
 */
export class WriteSession {
  /** Bytes streamed so far: writes below this start a new session. */
  #pos = 0;
  #size: number;
  readonly #baseSize: number;
  readonly #extents: Extent[] = [];
  #pendingBytes = 0;
  #finishing = false;
  #wake: (() => void) | null = null;
  #roomWaiters: (() => void)[] = [];
  readonly #fill: FillSource;
  readonly #stored: Promise<void>;
  #failed: unknown = null;
  readonly #pendingBytesMax: number;

  constructor(options: {
    baseSize: number;
    fill: FillSource;
    sink: VersionSink;
    pendingBytesMax?: number;
  }) {
    this.#baseSize = options.baseSize;
    this.#size = options.baseSize;
    this.#fill = options.fill;
    this.#pendingBytesMax = options.pendingBytesMax ?? WRITE_PENDING_BYTES_MAX;
    const body = ReadableStream.from(this.#body());
    this.#stored = options.sink(body).catch((e) => {
      this.#failed = e;
      this.#wakeAll();
      throw e;
    });
    // Observed by finish(); a failure before then is kept in #failed.
    this.#stored.catch(() => {});
  }

  /** The file's size with everything written so far. */
  get size(): number {
    return this.#size;
  }

  get streamedBytes(): number {
    return this.#pos;
  }

  get failed(): unknown {
    return this.#failed;
  }

  /** Whether a write at `offset` can join this session (it is not behind the stream). */
  accepts(offset: number): boolean {
    return !this.#finishing && this.#failed === null && offset >= this.#pos;
  }

  /**
   * Adds a write (synchronously, so callers choose the session and write in one step);
   * then wait for `room()` before acknowledging it.
   */
  write(offset: number, bytes: Uint8Array): void {
    assert(this.accepts(offset), "a write joins only a session that accepts it");
    if (bytes.length === 0) return;
    this.#insert({ offset, bytes });
    this.#size = Math.max(this.#size, offset + bytes.length);
    this.#wakeBody();
  }

  /** Resolves when the pending extents are within their limits again. */
  async room(): Promise<void> {
    while (
      this.#failed === null &&
      (this.#pendingBytes > this.#pendingBytesMax || this.#extents.length > WRITE_EXTENTS_MAX)
    ) {
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
    if (this.#failed !== null) throw this.#failed;
  }

  /** Sets the size (truncate or extend); only at or past what was streamed. */
  truncate(size: number): void {
    assert(this.accepts(size), "a truncate joins only a session that accepts it");
    this.#size = size;
    for (let i = this.#extents.length - 1; i >= 0; i--) {
      const e = this.#extents[i]!;
      if (e.offset >= size) {
        this.#extents.splice(i, 1);
        this.#pendingBytes -= e.bytes.length;
      } else if (e.offset + e.bytes.length > size) {
        this.#pendingBytes -= e.offset + e.bytes.length - size;
        e.bytes = e.bytes.subarray(0, size - e.offset);
      }
    }
    this.#wakeBody();
  }

  /** Ends the version and waits until it is stored. */
  async finish(): Promise<void> {
    this.#finishing = true;
    this.#wakeBody();
    await this.#stored;
  }

  /** Inserts an extent; newer bytes replace what older pending extents held there. */
  #insert(extent: Extent): void {
    const start = extent.offset;
    const end = start + extent.bytes.length;
    const kept: Extent[] = [];
    for (const e of this.#extents) {
      const eEnd = e.offset + e.bytes.length;
      if (eEnd <= start || e.offset >= end) {
        kept.push(e);
        continue;
      }
      this.#pendingBytes -= e.bytes.length;
      if (e.offset < start) {
        const head = { offset: e.offset, bytes: e.bytes.subarray(0, start - e.offset) };
        kept.push(head);
        this.#pendingBytes += head.bytes.length;
      }
      if (eEnd > end) {
        const tail = { offset: end, bytes: e.bytes.subarray(end - e.offset) };
        kept.push(tail);
        this.#pendingBytes += tail.bytes.length;
      }
    }
    kept.push(extent);
    this.#pendingBytes += extent.bytes.length;
    kept.sort((a, b) => a.offset - b.offset);
    this.#extents.length = 0;
    this.#extents.push(...kept);
  }

  #wakeBody(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #wakeAll(): void {
    this.#wakeBody();
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }

  #roomMade(): void {
    if (this.#pendingBytes <= this.#pendingBytesMax && this.#extents.length <= WRITE_EXTENTS_MAX) {
      const waiters = this.#roomWaiters;
      this.#roomWaiters = [];
      for (const w of waiters) w();
    }
  }

  async *#body(): AsyncGenerator<Uint8Array> {
    for (;;) {
      const next = this.#extents[0];
      if (next !== undefined && next.offset === this.#pos) {
        this.#extents.shift();
        this.#pendingBytes -= next.bytes.length;
        this.#pos += next.bytes.length;
        this.#roomMade();
        yield next.bytes;
        continue;
      }
      const pressed = this.#pendingBytes > this.#pendingBytesMax ||
        this.#extents.length > WRITE_EXTENTS_MAX;
      if (this.#finishing || pressed) {
        const gapEnd = Math.min(next?.offset ?? this.#size, this.#size);
        if (this.#pos >= gapEnd) {
          assert(next === undefined, "an extent lies past the size");
          return;
        }
        const at = this.#pos;
        let length = Math.min(gapEnd - at, WRITE_FILL_BYTES_MAX);
        if (at < this.#baseSize) length = Math.min(length, this.#baseSize - at);
        // Claimed before the read: a write into this gap from now on starts a new session.
        this.#pos += length;
        const bytes = at >= this.#baseSize ? new Uint8Array(length) : await this.#fill(at, length);
        assert(bytes.length === length, "a fill returns the bytes asked for");
        yield bytes;
        continue;
      }
      if (this.#failed !== null) return;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }
}
