// The files with unstable writes in progress: one WriteSession per file at a time, started
// from the object's current version, ended by COMMIT, a read, an idle timer or room for
// another file. A write the session cannot take (behind its stream) ends it and starts the
// next, so every write lands in order; a failed store is reported to the next COMMIT.

import { toHex } from "../base/mod.ts";
import {
  CompositionError,
  type GetObjectOptions,
  type GetObjectResult,
  type Metadata,
  type NamespaceRef,
  type ObjectInfo,
  type PutObjectOptions,
  type PutObjectResult,
} from "../composition/mod.ts";
import type { Logger } from "../obs/mod.ts";
import { NFS3ERR_IO, NFS3ERR_STALE, NfsError } from "./errors.ts";
import { WriteSession } from "./write_back.ts";

/** Files with unstable writes in progress at once (the oldest is committed to make room). */
export const WRITE_SESSIONS_MAX = 64;
/** Bytes of unstable writes one file holds before it waits for the stream to take them. */
export const WRITE_SESSION_PENDING_BYTES_MAX = 16 << 20;
/** An unstable write session idle this long is committed, so S3 sees its bytes. */
export const WRITE_IDLE_MS = 2_000;
const DEFAULT_CONTENT_TYPE = "application/octet-stream";

/** What the writes need of the object engine. */
export interface WriteBackend {
  headObject(ns: NamespaceRef, key: string): Promise<ObjectInfo>;
  getObject(ns: NamespaceRef, key: string, options?: GetObjectOptions): Promise<GetObjectResult>;
  putObject(
    ns: NamespaceRef,
    key: string,
    body: ReadableStream<Uint8Array>,
    options?: PutObjectOptions,
  ): Promise<PutObjectResult>;
}

export function notFound(e: unknown): boolean {
  return e instanceof CompositionError &&
    (e.code === "not_found" || e.code === "namespace_not_found");
}

/** The first `length` bytes of a stream (fewer if it ends first). */
export async function collect(
  stream: ReadableStream<Uint8Array>,
  length: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let at = 0;
  for await (const part of stream) {
    const take = Math.min(part.length, length - at);
    out.set(part.subarray(0, take), at);
    at += take;
  }
  return at === length ? out : out.subarray(0, at);
}

interface OpenFile {
  ns: Uint8Array;
  path: string;
  session: WriteSession | null;
  /** A session being finished or started: others wait for it. */
  transition: Promise<void> | null;
  timer: ReturnType<typeof setTimeout> | undefined;
  lastWriteMs: number;
  /** The error of a session that failed, reported to the next commit. */
  failure: unknown;
}

export interface FileWritesOptions {
  backend: WriteBackend;
  ref: (ns: Uint8Array) => NamespaceRef;
  now: () => number;
  idleMs?: number;
  logger?: Logger;
  /** Told when a file's new version was stored (or failed to be). */
  stored?: (ns: Uint8Array, path: string) => void;
  /** The new version's metadata from the old one's (its mtime, say). */
  metadataOf?: (old: Metadata) => Metadata;
  sessionsMax?: number;
}

export class FileWrites {
  readonly #files = new Map<string, OpenFile>();
  readonly #backend: WriteBackend;
  readonly #ref: (ns: Uint8Array) => NamespaceRef;
  readonly #now: () => number;
  readonly #idleMs: number;
  readonly #log: Logger | undefined;
  readonly #stored: (ns: Uint8Array, path: string) => void;
  readonly #metadataOf: (old: Metadata) => Metadata;
  readonly #sessionsMax: number;

  constructor(options: FileWritesOptions) {
    this.#backend = options.backend;
    this.#ref = options.ref;
    this.#now = options.now;
    this.#idleMs = options.idleMs ?? WRITE_IDLE_MS;
    this.#log = options.logger;
    this.#stored = options.stored ?? (() => {});
    this.#metadataOf = options.metadataOf ?? ((m) => m);
    this.#sessionsMax = options.sessionsMax ?? WRITE_SESSIONS_MAX;
  }

  #key(ns: Uint8Array, path: string): string {
    return `${toHex(ns)}/${path}`;
  }

  get open(): number {
    return this.#files.size;
  }

  has(ns: Uint8Array, path: string): boolean {
    return this.#files.has(this.#key(ns, path));
  }

  /** The size and last write time of a file with writes in progress, or null. */
  pending(ns: Uint8Array, path: string): { size: number; lastWriteMs: number } | null {
    const open = this.#files.get(this.#key(ns, path));
    if (open?.session == null) return null;
    return { size: open.session.size, lastWriteMs: open.lastWriteMs };
  }

  /** Accepts a write (it is stored by the next commit, or when idle). */
  async write(ns: Uint8Array, path: string, offset: number, data: Uint8Array): Promise<void> {
    const key = this.#key(ns, path);
    for (;;) {
      let open = this.#files.get(key);
      if (open === undefined) {
        await this.#makeRoom();
        if (this.#files.has(key)) continue;
        open = {
          ns,
          path,
          session: null,
          transition: null,
          timer: undefined,
          lastWriteMs: 0,
          failure: null,
        };
        this.#files.set(key, open);
      }
      if (open.transition !== null) {
        await open.transition.catch(() => {});
        continue;
      }
      if (open.session !== null && open.session.accepts(offset)) {
        const session = open.session;
        session.write(offset, data);
        open.lastWriteMs = this.#now();
        this.#arm(key, open);
        await session.room();
        return;
      }
      const o = open;
      const beginning = o.session === null;
      o.transition = (beginning ? this.#begin(o) : this.#finish(o)).finally(() => {
        o.transition = null;
      });
      try {
        await o.transition;
      } catch (e) {
        // Only a start fails (#finish keeps its error for the commit): nothing was written.
        if (beginning && this.#files.get(key) === o && o.session === null) this.#files.delete(key);
        throw e;
      }
    }
  }

  /** Makes every write to the file durable (COMMIT); NFS3ERR_IO if storing failed. */
  async commit(ns: Uint8Array, path: string): Promise<void> {
    try {
      await this.#close(this.#key(ns, path));
    } catch (e) {
      throw new NfsError(NFS3ERR_IO, `written data could not be stored: ${(e as Error).message}`);
    }
  }

  /** Sets the file's size, storing its pending writes with it. */
  async truncate(ns: Uint8Array, path: string, size: number): Promise<void> {
    const key = this.#key(ns, path);
    const open = this.#files.get(key);
    if (open?.session && open.transition === null && open.session.accepts(size)) {
      open.session.truncate(size);
      await this.commit(ns, path);
      return;
    }
    if (open !== undefined) await this.commit(ns, path);
    const info = await this.#head(ns, path);
    if (info.size === size) return;
    const session = this.#session(ns, path, info);
    session.truncate(size);
    await session.finish();
    this.#stored(ns, path);
  }

  /** Commits every file's pending writes (shutdown). */
  async close(): Promise<void> {
    for (const key of [...this.#files.keys()]) {
      await this.#close(key).catch((e) => {
        this.#log?.warn("nfs: pending writes could not be stored at shutdown", { error: e });
      });
    }
  }

  async #head(ns: Uint8Array, path: string): Promise<ObjectInfo> {
    try {
      return await this.#backend.headObject(this.#ref(ns), path);
    } catch (e) {
      if (notFound(e)) throw new NfsError(NFS3ERR_STALE, "the file is gone");
      throw e;
    }
  }

  #session(ns: Uint8Array, path: string, info: ObjectInfo): WriteSession {
    const ref = this.#ref(ns);
    return new WriteSession({
      baseSize: info.size,
      pendingBytesMax: WRITE_SESSION_PENDING_BYTES_MAX,
      fill: async (offset, length) => {
        const out = new Uint8Array(length);
        try {
          const got = await this.#backend.getObject(ref, path, {
            range: { start: offset, end: offset + length - 1 },
          });
          out.set(await collect(got.body, length));
        } catch (e) {
          // The version before shrank or went meanwhile: what is not there reads as zeros.
          if (!notFound(e) && !(e instanceof CompositionError && e.code === "invalid_argument")) {
            throw e;
          }
        }
        return out;
      },
      sink: async (body) => {
        await this.#backend.putObject(ref, path, body, {
          contentType: info.contentType || DEFAULT_CONTENT_TYPE,
          metadata: this.#metadataOf(info.metadata),
        });
      },
    });
  }

  async #makeRoom(): Promise<void> {
    while (this.#files.size >= this.#sessionsMax) {
      let oldest: [string, OpenFile] | undefined;
      for (const entry of this.#files) {
        if (oldest === undefined || entry[1].lastWriteMs < oldest[1].lastWriteMs) oldest = entry;
      }
      await this.#close(oldest![0]).catch(() => {});
    }
  }

  #arm(key: string, open: OpenFile): void {
    clearTimeout(open.timer);
    open.timer = setTimeout(() => {
      this.#close(key).catch((e) => {
        this.#log?.warn("nfs: an idle write could not be committed", {
          path: open.path,
          error: e,
        });
      });
    }, this.#idleMs);
  }

  async #begin(open: OpenFile): Promise<void> {
    open.session = this.#session(open.ns, open.path, await this.#head(open.ns, open.path));
  }

  async #finish(open: OpenFile): Promise<void> {
    const session = open.session;
    if (session === null) return;
    try {
      await session.finish();
    } catch (e) {
      open.failure = e;
      this.#log?.warn("nfs: storing written data failed", { path: open.path, error: e });
    } finally {
      open.session = null;
      this.#stored(open.ns, open.path);
    }
  }

  /** Ends the file's session (if any) and forgets the file; throws the session's error. */
  async #close(key: string): Promise<void> {
    const open = this.#files.get(key);
    if (open === undefined) return;
    while (open.transition !== null) await open.transition.catch(() => {});
    clearTimeout(open.timer);
    const o = open;
    o.transition = this.#finish(o).finally(() => {
      o.transition = null;
    });
    await o.transition;
    if (this.#files.get(key) === open && open.session === null) this.#files.delete(key);
    const failure = open.failure;
    open.failure = null;
    if (failure !== null) throw failure;
  }
}
