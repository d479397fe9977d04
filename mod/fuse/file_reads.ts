// Sequential reads of an open file served from one object stream per open handle: the
// kernel's read-ahead sends READs front to back (several in flight), and each takes the next
// bytes of the stream instead of a ranged GET of its own, so the engine's own read-ahead
// works. A read the stream cannot serve (behind it, far ahead, random) returns null and the
// caller reads a range. A write to the file drops its streams.
//
// Reads a stream cannot serve (random ones) go to the handle's reader where the backend has
// one: the object's chunk list and keys, fetched at the handle's first such read after open
// and kept until close (close-to-open consistency), so a 4 KiB read fetches the one chunk
// under it (through the chunk cache) instead of asking the node for the chunk list again.

import type { GetObjectOptions, GetObjectResult, NamespaceRef } from "../composition/mod.ts";

/** Open read streams at once (each holds the engine's read-ahead for its object). */
export const FUSE_READ_STREAMS_MAX = 16;
/** How far past its position a stream serves a READ, skipping what lies between. */
export const FUSE_READ_SKIP_BYTES_MAX = 4 << 20;

/** Open files whose chunk lists are kept at once (the oldest gives its list back). */
export const FUSE_READERS_MAX = 64;

/** An opened version of an object, read at any offset (mod/client's ObjectReader). */
export interface FileReader {
  read(offset: number, count: number): Promise<Uint8Array>;
}

/** Where readers come from (the cluster client; absent, random reads are ranged GETs). */
export interface FileReaders {
  openReader(ns: NamespaceRef, key: string): Promise<FileReader>;
}

interface HeldReader {
  node: bigint;
  reader: Promise<FileReader>;
}

export interface StreamBackend {
  getObject(ns: NamespaceRef, key: string, options?: GetObjectOptions): Promise<GetObjectResult>;
}

interface Stream {
  handle: bigint;
  node: bigint;
  /** Object offset of the next byte `reader` gives (after `leftover`). */
  pos: number;
  leftover: Uint8Array;
  reader: ReadableStreamDefaultReader<Uint8Array> | null;
  /** Reads of one stream run one at a time, in arrival order. */
  tail: Promise<unknown>;
  done: boolean;
}

export class HandleStreams {
  readonly #streams = new Map<bigint, Stream>();
  /** Where the last read of each handle ended: a read starting there is sequential. */
  readonly #lastEnd = new Map<bigint, number>();
  readonly #backend: StreamBackend;
  readonly #readers = new Map<bigint, HeldReader>();
  readonly #source: FileReaders | null;
  /** Reads served from a stream (the rest were ranges). */
  hits = 0;
  /** Reads served by a handle's reader (kept chunk list). */
  readerHits = 0;

  constructor(backend: StreamBackend, readers: FileReaders | null = null) {
    this.#backend = backend;
    this.#source = readers;
  }

  /** Chunk lists held (for tests). */
  get readers(): number {
    return this.#readers.size;
  }

  /**
   * `count` bytes at `offset` (fewer at the end) through the handle's reader, or null when
   * there is none to be had (then the caller reads a range).
   */
  async readAt(
    handle: bigint,
    node: bigint,
    ref: NamespaceRef,
    path: string,
    offset: number,
    count: number,
  ): Promise<Uint8Array | null> {
    if (this.#source === null) return null;
    let held = this.#readers.get(handle);
    if (held !== undefined && held.node !== node) {
      this.#readers.delete(handle);
      held = undefined;
    }
    if (held === undefined) {
      while (this.#readers.size >= FUSE_READERS_MAX) {
        this.#readers.delete(this.#readers.keys().next().value!);
      }
      const reader = this.#source.openReader(ref, path);
      reader.catch(() => {});
      held = { node, reader };
      this.#readers.set(handle, held);
    }
    try {
      const got = await (await held.reader).read(offset, count);
      this.readerHits++;
      return got;
    } catch {
      // The version it kept is gone (replaced elsewhere) or the node failed: a ranged read
      // says what is true now; the next read opens the current version.
      if (this.#readers.get(handle) === held) this.#readers.delete(handle);
      return null;
    }
  }

  get open(): number {
    return this.#streams.size;
  }

  /**
   * `count` bytes at `offset` (fewer at the end) from the handle's stream, or null when a
   * stream cannot serve them.
   */
  read(
    handle: bigint,
    node: bigint,
    ref: NamespaceRef,
    path: string,
    offset: number,
    count: number,
  ): Promise<Uint8Array | null> {
    let s = this.#streams.get(handle);
    if (s !== undefined && !this.#serves(s, offset)) {
      this.#drop(s);
      s = undefined;
    }
    if (s === undefined) {
      const sequential = offset === 0 || this.#lastEnd.get(handle) === offset;
      this.#lastEnd.set(handle, offset + count);
      if (!sequential) return Promise.resolve(null);
      s = this.#open(handle, node, ref, path, offset);
    }
    const stream = s;
    this.#lastEnd.set(handle, offset + count);
    const result = stream.tail.then(() => this.#take(stream, offset, count));
    stream.tail = result.catch(() => {});
    return result.catch(() => {
      this.#drop(stream);
      return null;
    });
  }

  #serves(s: Stream, offset: number): boolean {
    const at = s.pos - s.leftover.length;
    return offset >= at && offset - at <= FUSE_READ_SKIP_BYTES_MAX;
  }

  #open(handle: bigint, node: bigint, ref: NamespaceRef, path: string, offset: number): Stream {
    while (this.#streams.size >= FUSE_READ_STREAMS_MAX) {
      this.#drop(this.#streams.values().next().value!);
    }
    const s: Stream = {
      handle,
      node,
      pos: offset,
      leftover: new Uint8Array(0),
      reader: null,
      tail: Promise.resolve(),
      done: false,
    };
    s.tail = this.#backend.getObject(ref, path, { range: { start: offset } }).then((got) => {
      s.reader = got.body.getReader();
    });
    this.#streams.set(handle, s);
    return s;
  }

  async #take(s: Stream, offset: number, count: number): Promise<Uint8Array | null> {
    if (this.#streams.get(s.handle) !== s || s.reader === null) return null;
    if (!this.#serves(s, offset)) return null;
    let skip = offset - (s.pos - s.leftover.length);
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
      if (s.done) break;
      const next = await s.reader.read();
      if (next.done) {
        s.done = true;
        break;
      }
      pending = next.value;
      s.pos += pending.length;
    }
    this.hits++;
    return filled === count ? out : out.subarray(0, filled);
  }

  #drop(s: Stream): void {
    if (this.#streams.get(s.handle) === s) this.#streams.delete(s.handle);
    // Cancelled once its reads are done: the engine gives its read-ahead back.
    void s.tail.then(() => s.reader?.cancel().catch(() => {}));
  }

  /** The handle was closed. */
  close(handle: bigint): void {
    const s = this.#streams.get(handle);
    if (s !== undefined) this.#drop(s);
    this.#lastEnd.delete(handle);
    this.#readers.delete(handle);
  }

  /** The file changed (a write or truncate): its streams read an old version. */
  changed(node: bigint): void {
    for (const s of [...this.#streams.values()]) if (s.node === node) this.#drop(s);
    for (const [handle, held] of [...this.#readers]) {
      if (held.node === node) this.#readers.delete(handle);
    }
  }

  closeAll(): void {
    for (const s of [...this.#streams.values()]) this.#drop(s);
    this.#lastEnd.clear();
    this.#readers.clear();
  }
}
