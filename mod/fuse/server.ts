// The FUSE protocol server: reads requests from a connection, answers INIT, INTERRUPT and
// DESTROY itself, and runs every other opcode through the opcode table against a
// RawFileSystem, many requests in flight. Request buffers (each the size of the largest
// request) come from a fixed pool and go back when the request is answered.

import * as abi from "./abi.ts";
import { FuseError, type RawFileSystem } from "./fs_api.ts";
import { type Limits, opcodeName, OPCODES } from "./opcodes.ts";
import type { Logger } from "../obs/mod.ts";

/** Largest WRITE the kernel sends (negotiated at INIT; 256 pages of 4 KiB). */
export const FUSE_MAX_WRITE_BYTES = 1 << 20;
/** A request buffer: the largest WRITE plus its headers (the kernel wants a page more). */
export const FUSE_REQUEST_BUFFER_BYTES = FUSE_MAX_WRITE_BYTES + 4096;
/** Requests being handled at once; each holds one pooled request buffer. */
export const FUSE_REQUESTS_IN_FLIGHT_MAX = 16;
/** Reads of the device outstanding at once (each one is a worker thread blocked in read(2)). */
export const FUSE_READERS = 2;
/** Background requests the kernel may queue (async reads, writeback). */
export const FUSE_MAX_BACKGROUND = 32;

/** The connection the server reads from and answers on (FuseDevice, or a test double). */
export interface FuseConnection {
  read(buf: Uint8Array<ArrayBuffer>): Promise<number>;
  alive(): boolean;
  reply(header: Uint8Array<ArrayBuffer>, body: Uint8Array | null): boolean;
}

export interface FuseServerOptions {
  connection: FuseConnection;
  fs: RawFileSystem;
  logger?: Logger;
  /** Entry and attribute cache lifetimes given to the kernel. */
  validity?: abi.Validity;
  /**
   * Let the kernel cache writes (FUSE_WRITEBACK_CACHE). Only safe when nothing else changes
   * the files under this mount: the kernel then trusts its own size and mtime.
   */
  writebackCache?: boolean;
  requestsInFlightMax?: number;
  readers?: number;
}

/** Default cache lifetimes: short, so a change over S3 or NFS shows within a second. */
export const DEFAULT_VALIDITY: abi.Validity = { entryMs: 1000, attrMs: 1000 };

class BufferPool {
  readonly #free: Uint8Array<ArrayBuffer>[] = [];
  readonly #waiting: ((b: Uint8Array<ArrayBuffer>) => void)[] = [];

  constructor(count: number, bytes: number) {
    for (let i = 0; i < count; i++) this.#free.push(new Uint8Array(bytes));
  }

  acquire(): Promise<Uint8Array<ArrayBuffer>> {
    const b = this.#free.pop();
    if (b !== undefined) return Promise.resolve(b);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  release(b: Uint8Array<ArrayBuffer>): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next(b);
    else this.#free.push(b);
  }
}

export class FuseServer {
  readonly #conn: FuseConnection;
  readonly #fs: RawFileSystem;
  readonly #log: Logger | undefined;
  readonly #pool: BufferPool;
  readonly #readers: number;
  readonly #writeback: boolean;
  readonly #inFlight = new Map<bigint, AbortController>();
  readonly #limits: Limits;
  readonly #outHeader = new Uint8Array(abi.OUT_HEADER_BYTES);
  #initialized = false;
  #stopping = false;
  /** Requests answered, by opcode name (for tests and metrics). */
  readonly counts = new Map<string, number>();

  constructor(options: FuseServerOptions) {
    this.#conn = options.connection;
    this.#fs = options.fs;
    this.#log = options.logger;
    this.#writeback = options.writebackCache ?? false;
    this.#readers = options.readers ?? FUSE_READERS;
    const inFlight = options.requestsInFlightMax ?? FUSE_REQUESTS_IN_FLIGHT_MAX;
    if (inFlight < this.#readers) throw new Error("fewer request buffers than readers");
    this.#pool = new BufferPool(inFlight, FUSE_REQUEST_BUFFER_BYTES);
    this.#limits = {
      validity: options.validity ?? DEFAULT_VALIDITY,
      maxRead: FUSE_MAX_WRITE_BYTES,
    };
  }

  /** Serves until the connection ends (unmount or abort); then the file system is destroyed. */
  async serve(): Promise<void> {
    const loops: Promise<void>[] = [];
    for (let i = 0; i < this.#readers; i++) loops.push(this.#readLoop());
    await Promise.all(loops);
    for (const c of this.#inFlight.values()) c.abort();
    await this.#fs.destroy();
  }

  async #readLoop(): Promise<void> {
    while (!this.#stopping) {
      const buf = await this.#pool.acquire();
      const n = await this.#conn.read(buf);
      if (n < abi.IN_HEADER_BYTES) {
        this.#pool.release(buf);
        if (!this.#conn.alive()) {
          this.#stopping = true;
          return;
        }
        continue; // interrupted read
      }
      void this.#dispatch(buf, n).finally(() => this.#pool.release(buf));
    }
  }

  #send(unique: bigint, errno: number, body: Uint8Array | null): void {
    const h = this.#outHeader;
    const v = new DataView(h.buffer);
    v.setUint32(0, abi.OUT_HEADER_BYTES + (body?.length ?? 0), true);
    v.setInt32(4, -errno, true);
    v.setBigUint64(8, unique, true);
    if (!this.#conn.reply(h, body)) {
      this.#log?.debug("fuse reply refused (request interrupted)", { unique: String(unique) });
    }
  }

  async #dispatch(buf: Uint8Array<ArrayBuffer>, n: number): Promise<void> {
    const view = new DataView(buf.buffer, 0, n);
    const header = abi.readInHeader(view);
    const body = buf.subarray(abi.IN_HEADER_BYTES, Math.min(n, header.len));
    const name = opcodeName(header.opcode);
    this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
    if (header.opcode === abi.FUSE_INIT) return this.#init(header, new abi.InReader(body));
    if (header.opcode === abi.FUSE_INTERRUPT) {
      const target = new abi.InReader(body).u64();
      const c = this.#inFlight.get(target);
      // Not (yet) here: EAGAIN makes the kernel send the interrupt again later.
      if (c === undefined) this.#send(header.unique, abi.EAGAIN, null);
      else c.abort();
      return;
    }
    if (header.opcode === abi.FUSE_DESTROY) {
      this.#stopping = true;
      await this.#fs.destroy();
      this.#send(header.unique, 0, null);
      return;
    }
    const spec = OPCODES.get(header.opcode);
    if (spec === undefined || !this.#initialized) {
      this.#send(header.unique, spec === undefined ? abi.ENOSYS : abi.EIO, null);
      return;
    }
    if (body.length < spec.inBytes) {
      this.#send(header.unique, abi.EINVAL, null);
      return;
    }
    const abort = new AbortController();
    if (spec.reply !== "none") this.#inFlight.set(header.unique, abort);
    try {
      const out = await spec.handle(this.#fs, {
        header,
        body: new abi.InReader(body),
        ctx: { uid: header.uid, gid: header.gid, pid: header.pid, signal: abort.signal },
      }, this.#limits);
      if (spec.reply === "none") return;
      this.#send(header.unique, 0, spec.reply === "empty" ? null : out);
    } catch (e) {
      if (spec.reply === "none") {
        this.#log?.warn("fuse request failed", { op: spec.name, error: e as Error });
        return;
      }
      const errno = abort.signal.aborted ? abi.EINTR : errnoOf(e);
      this.#log?.debug("fuse request refused", {
        op: spec.name,
        nodeid: header.nodeid,
        errno,
        reason: (e as Error).message,
      });
      if (!(e instanceof FuseError) && !(e instanceof abi.AbiError)) {
        this.#log?.warn("fuse request failed", { op: spec.name, error: e as Error });
      }
      this.#send(header.unique, errno, null);
    } finally {
      this.#inFlight.delete(header.unique);
    }
  }

  #init(header: abi.InHeader, r: abi.InReader): void {
    const major = r.u32(), minor = r.u32(), maxReadahead = r.u32(), flags = r.u32();
    if (major !== abi.FUSE_KERNEL_VERSION || (major === 7 && minor < abi.FUSE_KERNEL_MINOR_MIN)) {
      this.#log?.error("fuse kernel protocol too old", { major, minor });
      this.#send(header.unique, abi.EPROTO, null);
      return;
    }
    let want = abi.FUSE_ASYNC_READ | abi.FUSE_BIG_WRITES | abi.FUSE_MAX_PAGES |
      abi.FUSE_DO_READDIRPLUS | abi.FUSE_READDIRPLUS_AUTO | abi.FUSE_PARALLEL_DIROPS |
      abi.FUSE_ASYNC_DIO | abi.FUSE_POSIX_LOCKS | abi.FUSE_FLOCK_LOCKS |
      abi.FUSE_AUTO_INVAL_DATA | abi.FUSE_CACHE_SYMLINKS;
    if (this.#writeback) want |= abi.FUSE_WRITEBACK_CACHE;
    const granted = flags & want;
    this.#send(
      header.unique,
      0,
      abi.initOut({
        minor: Math.min(minor, abi.FUSE_KERNEL_MINOR_VERSION),
        maxReadahead,
        flags: granted,
        maxBackground: FUSE_MAX_BACKGROUND,
        congestionThreshold: (FUSE_MAX_BACKGROUND * 3) / 4,
        maxWrite: FUSE_MAX_WRITE_BYTES,
        // Times are kept to the millisecond (user metadata `mtime`).
        timeGranNs: 1_000_000,
        maxPages: FUSE_MAX_WRITE_BYTES / 4096,
      }),
    );
    this.#initialized = true;
    this.#log?.info("fuse connection initialized", {
      kernel: `${major}.${minor}`,
      flags: `0x${granted.toString(16)}`,
    });
  }
}

/** The errno of any failure: FuseError's own, EINVAL for a malformed body, else EIO. */
export function errnoOf(e: unknown): number {
  if (e instanceof FuseError) return e.errno;
  if (e instanceof abi.AbiError) return abi.EINVAL;
  return abi.EIO;
}
