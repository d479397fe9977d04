// The object engine's hash workers: MD5 (the ETag, in stream order) and chunk ids computed
// on worker threads with node:crypto, reading chunks from the shared envelope buffers. Used
// when the hashing shim is not loaded (with it, hashing runs through nonblocking FFI).

import { assert } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { EnvelopeBuffer } from "./object_engine_buffers.ts";
import { ENGINE_ASSEMBLY_BUFFERS_MAX, ENGINE_CHUNK_BUFFERS_MAX } from "./object_engine_limits.ts";

/**
 * The hash worker's code: MD5 of each put's chunks in order (the etag) and each chunk's id
 * (SHA-256, or HMAC-SHA256 under the session's tenant key: the same functions as
 * computeChunkId(); a test compares them), read from the shared envelope buffers.
 */
const HASH_WORKER_SOURCE = `
import { createHash, createHmac } from "node:crypto";
const buffers = [];
const sessions = new Map();
self.onmessage = (event) => {
  const m = event.data;
  try {
    if (m.op === "buffer") {
      buffers[m.index] = new Uint8Array(m.buffer);
    } else if (m.op === "chunk") {
      // The first chunk of a session starts it (key: null or the tenant's dedup key); the
      // last one (m.last) also finishes it and answers with the MD5 too.
      if (m.start) sessions.set(m.session, { md5: createHash("md5"), key: m.key });
      const s = sessions.get(m.session);
      const view = buffers[m.index].subarray(m.offset, m.offset + m.length);
      s.md5.update(view);
      const digest = s.key === null
        ? createHash("sha256").update(view).digest()
        : createHmac("sha256", s.key).update(view).digest();
      const id = new Uint8Array(32);
      id.set(digest);
      let md5;
      if (m.last) {
        sessions.delete(m.session);
        md5 = s.md5.digest("hex");
      }
      self.postMessage({ request: m.request, id, md5 }, [id.buffer]);
    } else if (m.op === "finish") {
      if (m.start) sessions.set(m.session, { md5: createHash("md5"), key: m.key });
      const s = sessions.get(m.session);
      sessions.delete(m.session);
      self.postMessage({ request: m.request, md5: s.md5.digest("hex") });
    } else if (m.op === "abort") {
      sessions.delete(m.session);
    }
  } catch (e) {
    if (m.request !== undefined) self.postMessage({ request: m.request, error: String(e) });
  }
};
`;

/** Requests to the hash worker awaiting an answer; bounded by the buffers and puts in flight. */
const HASH_REQUESTS_MAX = ENGINE_CHUNK_BUFFERS_MAX + ENGINE_ASSEMBLY_BUFFERS_MAX;

/**
 * MD5 and chunk ids computed on a worker thread, so they overlap with chunking, sealing
 * and storing on the event loop (on two cores this is most of a put's CPU time). Messages
 * are handled in the order posted, which keeps each put's MD5 in stream order.
 */
/** A hash worker's answer: a chunk's id, the session's MD5 (hex) at its end, or both. */
interface HashAnswer {
  id?: Uint8Array;
  md5?: string;
}

class HashWorker {
  readonly #worker: Worker;
  readonly #url: string;
  readonly #pending = new Map<
    number,
    { resolve: (v: HashAnswer) => void; reject: (e: Error) => void }
  >();
  #requests = 0;
  #sessions = 0;
  #buffers = 0;
  #failure: Error | null = null;
  /** Sessions started here whose start has not gone to the worker yet: their keys. */
  readonly #unstarted = new Map<number, Uint8Array | null>();
  /** MD5s that came back with a session's last chunk, until finish() takes them. */
  readonly #finished = new Map<number, string>();

  private constructor(worker: Worker, url: string) {
    this.#worker = worker;
    this.#url = url;
    worker.onmessage = (event: MessageEvent) => {
      const m = event.data as HashAnswer & { request: number; error?: string };
      const waiter = this.#pending.get(m.request);
      if (waiter === undefined) return;
      this.#pending.delete(m.request);
      if (m.error !== undefined) waiter.reject(new Error(`hash worker: ${m.error}`));
      else waiter.resolve(m);
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#fail(new Error(`hash worker failed: ${event.message}`));
    };
    worker.onmessageerror = () => this.#fail(new Error("hash worker: a message did not decode"));
  }

  /** A running worker, or null where workers cannot start (the caller hashes inline). */
  static start(logger: Logger): HashWorker | null {
    let url: string | null = null;
    try {
      url = URL.createObjectURL(new Blob([HASH_WORKER_SOURCE], { type: "text/javascript" }));
      return new HashWorker(new Worker(url, { type: "module", name: "kiseki-hash" }), url);
    } catch (e) {
      if (url !== null) URL.revokeObjectURL(url);
      logger.warn("hash worker unavailable: hashing on the event loop", {
        error: (e as Error).message,
      });
      return null;
    }
  }

  get failed(): boolean {
    return this.#failure !== null;
  }

  register(buffer: SharedArrayBuffer): number {
    const index = this.#buffers++;
    this.#worker.postMessage({ op: "buffer", index, buffer });
    return index;
  }

  /** A new session; nothing goes to the worker until its first chunk (or finish). */
  start(key: Uint8Array | null): number {
    const session = ++this.#sessions;
    this.#unstarted.set(session, key);
    return session;
  }

  /**
   * The chunk id of `length` bytes at `offset` of `buffer`, hashed into the session's MD5.
   * `last`: the session's final chunk; the MD5 comes back with it (finish() then costs no
   * message), so a one-chunk object is one message each way.
   */
  async chunk(
    session: number,
    buffer: EnvelopeBuffer,
    offset: number,
    length: number,
    last = false,
  ): Promise<Uint8Array> {
    const key = this.#unstarted.get(session);
    const start = key !== undefined;
    if (start) this.#unstarted.delete(session);
    const answer = await this.#ask({
      op: "chunk",
      session,
      index: buffer.index,
      offset,
      length,
      last,
      start,
      key: key ?? null,
    });
    if (answer.md5 !== undefined) this.#finished.set(session, answer.md5);
    return answer.id!;
  }

  /** The session's MD5 (hex): from its last chunk's answer, or asked for now. */
  finish(session: number): Promise<string> {
    const md5 = this.#finished.get(session);
    if (md5 !== undefined) {
      this.#finished.delete(session);
      return Promise.resolve(md5);
    }
    const key = this.#unstarted.get(session);
    const start = key !== undefined;
    if (start) this.#unstarted.delete(session);
    return this.#ask({ op: "finish", session, start, key: key ?? null }).then((a) => a.md5!);
  }

  abort(session: number): void {
    this.#finished.delete(session);
    if (this.#unstarted.delete(session)) return;
    if (this.#failure === null) this.#worker.postMessage({ op: "abort", session });
  }

  close(): void {
    this.#fail(new Error("the engine is closed"));
  }

  #ask(message: Record<string, unknown>): Promise<HashAnswer> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    assert(this.#pending.size < HASH_REQUESTS_MAX, "hash worker requests within their bound");
    const request = ++this.#requests;
    return new Promise((resolve, reject) => {
      this.#pending.set(request, { resolve, reject });
      this.#worker.postMessage({ ...message, request });
    });
  }

  #fail(error: Error): void {
    if (this.#failure !== null) return;
    this.#failure = error;
    this.#worker.terminate();
    URL.revokeObjectURL(this.#url);
    for (const waiter of this.#pending.values()) waiter.reject(error);
    this.#pending.clear();
  }
}

/**
 * Several hash workers behind HashWorker's interface: every envelope buffer is registered
 * with all of them (same index everywhere), and each session is pinned to the worker with
 * the fewest open sessions when it starts.
 */
export class HashWorkers {
  readonly #workers: HashWorker[];
  readonly #open: number[];
  readonly #sessions = new Map<number, { worker: number; session: number }>();
  #next = 0;

  private constructor(workers: HashWorker[]) {
    this.#workers = workers;
    this.#open = workers.map(() => 0);
  }

  /** `count` running workers (fewer if some cannot start), or null if none can. */
  static start(count: number, logger: Logger): HashWorkers | null {
    const workers: HashWorker[] = [];
    for (let i = 0; i < count; i++) {
      const worker = HashWorker.start(logger);
      if (worker === null) break;
      workers.push(worker);
    }
    return workers.length === 0 ? null : new HashWorkers(workers);
  }

  get failed(): boolean {
    return this.#workers.some((w) => w.failed);
  }

  register(buffer: SharedArrayBuffer): number {
    const indexes = this.#workers.map((w) => w.register(buffer));
    assert(indexes.every((i) => i === indexes[0]), "hash workers number buffers alike");
    return indexes[0]!;
  }

  start(key: Uint8Array | null): number {
    let worker = 0;
    for (let i = 1; i < this.#workers.length; i++) {
      if (this.#open[i]! < this.#open[worker]!) worker = i;
    }
    this.#open[worker]!++;
    const id = ++this.#next;
    this.#sessions.set(id, { worker, session: this.#workers[worker]!.start(key) });
    return id;
  }

  chunk(
    id: number,
    buffer: EnvelopeBuffer,
    offset: number,
    length: number,
    last = false,
  ): Promise<Uint8Array> {
    const s = this.#sessions.get(id)!;
    return this.#workers[s.worker]!.chunk(s.session, buffer, offset, length, last);
  }

  finish(id: number): Promise<string> {
    const s = this.#end(id);
    return this.#workers[s.worker]!.finish(s.session);
  }

  abort(id: number): void {
    const s = this.#sessions.get(id);
    if (s === undefined) return;
    this.#end(id);
    this.#workers[s.worker]!.abort(s.session);
  }

  close(): void {
    for (const w of this.#workers) w.close();
  }

  #end(id: number): { worker: number; session: number } {
    const s = this.#sessions.get(id)!;
    this.#sessions.delete(id);
    this.#open[s.worker]!--;
    return s;
  }
}
