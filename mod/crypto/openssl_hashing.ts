// Hashing through libkiseki_hash.so (ffi/hash): OpenSSL's SHA-256 (SHA-NI) and MD5, and the
// chunk id + MD5 in one pass over each chunk. The *Async calls are nonblocking FFI (a
// runtime worker thread each): a put's MD5 runs in order while its chunk ids run side by
// side, on the core the event loop is not using.

import type { ShimOptions } from "../../ffi/loader.ts";
import {
  describeHashStatus,
  HASH_MD5,
  HASH_OK,
  HASH_SHA256,
  type HashContext,
  type HashShimLoad,
  loadHashShim,
} from "../../ffi/hash/bindings.ts";
import type { AsyncStreamDigest, Hashing, StreamDigest } from "./hashing.ts";

type Symbols = Extract<HashShimLoad, { ok: true }>["symbols"];

/** Native contexts not disposed are freed when their digest object is collected. */
const contexts = new FinalizationRegistry<{ symbols: Symbols; ctx: HashContext }>(
  ({ symbols, ctx }) => symbols.kiseki_hash_free(ctx),
);

const NO_KEY = new Uint8Array(0);

class NativeDigest implements StreamDigest {
  readonly #symbols: Symbols;
  readonly #size: number;
  #ctx: HashContext | null;

  constructor(symbols: Symbols, kind: number, size: number) {
    const ctx = symbols.kiseki_hash_new(kind);
    if (ctx === null) throw new Error("hash shim: kiseki_hash_new failed (out of memory)");
    this.#symbols = symbols;
    this.#size = size;
    this.#ctx = ctx;
    contexts.register(this, { symbols, ctx }, this);
  }

  /** The native context (for kiseki_hash_chunk); throws once disposed. */
  get context(): HashContext {
    if (this.#ctx === null) throw new Error("hash shim: digest used after it ended");
    return this.#ctx;
  }

  update(bytes: Uint8Array): void {
    check(this.#symbols.kiseki_hash_update(this.context, bytes, BigInt(bytes.length)));
  }

  digest(): Uint8Array {
    const out = new Uint8Array(this.#size);
    check(this.#symbols.kiseki_hash_final(this.context, out));
    this.dispose();
    return out;
  }

  dispose(): void {
    if (this.#ctx === null) return;
    contexts.unregister(this);
    this.#symbols.kiseki_hash_free(this.#ctx);
    this.#ctx = null;
  }
}

/** A native digest whose updates run on runtime worker threads, one after another. */
class NativeAsyncDigest implements AsyncStreamDigest {
  readonly #symbols: Symbols;
  readonly #digest: NativeDigest;
  /** The last update queued (settled, never rejected): the next one starts after it. */
  #tail: Promise<void> = Promise.resolve();
  #failure: Error | null = null;

  constructor(symbols: Symbols, kind: number, size: number) {
    this.#symbols = symbols;
    this.#digest = new NativeDigest(symbols, kind, size);
  }

  update(bytes: Uint8Array): Promise<void> {
    const run = this.#tail.then(async () => {
      if (this.#failure !== null) throw this.#failure;
      const status = await this.#symbols.kiseki_hash_update_async(
        this.#digest.context,
        bytes,
        BigInt(bytes.length),
      );
      if (status !== HASH_OK) {
        throw this.#failure = new Error(`hash shim: ${describeHashStatus(status)}`);
      }
    });
    this.#tail = run.catch(() => {});
    return run;
  }

  async digest(): Promise<Uint8Array> {
    await this.#tail;
    if (this.#failure !== null) {
      this.#digest.dispose();
      throw this.#failure;
    }
    return this.#digest.digest();
  }

  async dispose(): Promise<void> {
    await this.#tail;
    this.#digest.dispose();
  }
}

function check(status: number): void {
  if (status !== HASH_OK) throw new Error(`hash shim: ${describeHashStatus(status)}`);
}

export type OpensslHashingLoad =
  | { ok: true; hashing: OpensslHashing; path: string }
  | { ok: false; reason: string };

export class OpensslHashing implements Hashing {
  readonly implementation = "openssl" as const;
  readonly offLoop = true;
  readonly #symbols: Symbols;

  private constructor(symbols: Symbols) {
    this.#symbols = symbols;
  }

  /** The shim-backed Hashing, or why not (the caller then uses NodeHashing). */
  static load(options: ShimOptions): OpensslHashingLoad {
    const loaded = loadHashShim(options);
    if (!loaded.ok) return { ok: false, reason: loaded.reason };
    return { ok: true, hashing: new OpensslHashing(loaded.symbols), path: loaded.path };
  }

  sha256(): StreamDigest {
    return new NativeDigest(this.#symbols, HASH_SHA256, 32);
  }

  md5(): StreamDigest {
    return new NativeDigest(this.#symbols, HASH_MD5, 16);
  }

  chunkId(chunk: Uint8Array, key: Uint8Array | null, md5: StreamDigest | null): Uint8Array {
    if (md5 !== null && !(md5 instanceof NativeDigest)) {
      throw new TypeError("chunkId(): the MD5 digest is not from this OpensslHashing");
    }
    const id = new Uint8Array(32);
    const k = key ?? NO_KEY;
    check(
      this.#symbols.kiseki_hash_chunk(
        md5?.context ?? null,
        k,
        BigInt(k.length),
        chunk,
        BigInt(chunk.length),
        id,
      ),
    );
    return id;
  }

  md5Async(): AsyncStreamDigest {
    return new NativeAsyncDigest(this.#symbols, HASH_MD5, 16);
  }

  sha256Async(): AsyncStreamDigest {
    return new NativeAsyncDigest(this.#symbols, HASH_SHA256, 32);
  }

  async chunkIdAsync(chunk: Uint8Array, key: Uint8Array | null): Promise<Uint8Array> {
    const id = new Uint8Array(32);
    const k = key ?? NO_KEY;
    check(
      await this.#symbols.kiseki_hash_chunk_async(
        null,
        k,
        BigInt(k.length),
        chunk,
        BigInt(chunk.length),
        id,
      ),
    );
    return id;
  }

  /** CRC-32C continued from `crc` (0 to start), by the SSE4.2 instruction. */
  crc32c(bytes: Uint8Array, crc = 0): number {
    return this.#symbols.kiseki_hash_crc32c(crc >>> 0, bytes, BigInt(bytes.length));
  }
}
