// The AEAD port on OpenSSL's libcrypto through the kiseki_aead shim. Small messages run as
// blocking FFI calls (nanoseconds of overhead) on contexts already keyed; large ones, and
// large batches, run nonblocking on a runtime worker so the event loop keeps turning.

import {
  AEAD_DESC_AAD,
  AEAD_DESC_AAD_LEN,
  AEAD_DESC_IN,
  AEAD_DESC_IN_LEN,
  AEAD_DESC_KEY,
  AEAD_DESC_NONCE,
  AEAD_DESC_OUT,
  AEAD_DESC_WORDS,
  AEAD_EAUTH,
  AEAD_OK,
  AEAD_SHIM_BATCH_ITEMS_MAX,
  type AeadContextCache,
  type AeadShim,
  describeAeadStatus,
  loadAeadShim,
} from "../../ffi/aead/bindings.ts";
import type { ShimOptions } from "../../ffi/loader.ts";
import { assert, toHex } from "../base/mod.ts";
import {
  type Aead,
  AEAD_BATCH_ITEMS_MAX,
  AEAD_KEY_BYTES,
  AEAD_TAG_BYTES,
  AeadError,
  type AeadKey,
  type AeadOpenItem,
  type AeadSealItem,
  batchError,
  checkBatchSize,
  checkKeyBytes,
  checkOpenArgs,
  checkSealArgs,
  truncatedError,
} from "./aead.ts";

/**
 * Default size from which a message (or a batch's total) runs nonblocking, so no call
 * stalls the event loop for more than ~0.4 ms. Measured on the reference host (2 shared
 * cores, AES-NI with VAES, ~5.5 GB/s per core): a nonblocking call costs ~30 µs plus
 * ~13% (the worker's core has the buffers cold and is shared), so a stream of 1 MiB
 * seals runs at 0.75-0.87x a blocking stream and 256 KiB at 0.6x, while two 1 MiB seals
 * in flight gain only 1.1x. A blocking 1 MiB seal stalls the loop ~0.19 ms: cheaper.
 */
export const OPENSSL_NONBLOCKING_MIN_BYTES_DEFAULT = 2 * 1024 * 1024;

assert(AEAD_BATCH_ITEMS_MAX === AEAD_SHIM_BATCH_ITEMS_MAX, "batch limit matches the shim's");

export interface OpensslAeadOptions {
  /** Messages (or batch totals) of at least this many bytes run nonblocking. */
  nonblockingMinBytes?: number;
}

export type OpensslAeadLoad =
  | { ok: true; aead: OpensslAead }
  | { ok: false; reason: string };

/** Key material kept out of the opaque AeadKey token. */
interface KeyMaterial {
  /** 32 bytes in their own ArrayBuffer (off-heap, so its address never moves). */
  bytes: Uint8Array;
  /** Address of `bytes`, taken on first batch use (it costs a quarter microsecond). */
  address: number;
}

/** One item of a batch call: its key material and the buffers the shim reads and writes. */
interface BatchEntry {
  key: KeyMaterial;
  nonce: Uint8Array;
  input: Uint8Array;
  aad: Uint8Array;
  out: Uint8Array;
}

const entry = (
  key: KeyMaterial,
  nonce: Uint8Array,
  input: Uint8Array,
  aad: Uint8Array,
  out: Uint8Array,
): BatchEntry => ({ key, nonce, input, aad, out });

// Frees a native context cache once its OpensslAead is unreachable (no call can be using it
// then: blocking calls run inside methods of the live instance, nonblocking ones never
// touch the cache).
const cacheRegistry = new FinalizationRegistry<{ shim: AeadShim; cache: AeadContextCache }>(
  ({ shim, cache }) => shim.cacheFree(cache),
);

// Batch descriptors carry raw addresses. Deno.UnsafePointer.of() costs ~250 ns per call,
// as much as sealing 1 KiB, so the base address of each ArrayBuffer is remembered. That is
// sound because V8 never moves a live backing store (ArrayBuffers are off-heap; asking for
// `.buffer` materialises an on-heap typed array first, and resizable buffers reserve their
// maximum up front). A detached buffer keeps a stale entry, but all its views have length
// 0 and addressOf() never looks an empty view up. Buffers must not be transferred while a
// nonblocking call uses them (as for any asynchronous I/O into a caller's buffer).
// Addresses come from the shim itself: Deno.UnsafePointer.of() would need unscoped
// --allow-ffi, while the role's sandbox grants FFI only for the shim's own path.
const baseAddresses = new WeakMap<ArrayBufferLike, number>();
let shimForAddresses: AeadShim | null = null;

function addressOf(view: Uint8Array): number {
  if (view.length === 0) return 0;
  let base = baseAddresses.get(view.buffer);
  if (base === undefined) {
    assert(shimForAddresses !== null, "addressOf() needs a loaded shim");
    base = Number(shimForAddresses.addressOf(new Uint8Array(view.buffer)));
    assert(base !== 0, "a non-empty buffer has an address");
    assert(Number.isSafeInteger(base), "user-space addresses fit in 53 bits");
    baseAddresses.set(view.buffer, base);
  }
  return base + view.byteOffset;
}

/** Writes a u64 word as two little-endian u32 halves. */
function putWord(desc: Uint32Array, item: number, word: number, value: number): void {
  const at = (item * AEAD_DESC_WORDS + word) * 2;
  desc[at] = value >>> 0;
  desc[at + 1] = Math.floor(value / 0x1_0000_0000);
}

export class OpensslAead implements Aead {
  readonly implementation = "openssl" as const;
  readonly reason: string;
  /** The libcrypto version string, e.g. "OpenSSL 3.0.19 27 Jan 2026". */
  readonly opensslVersion: string;
  readonly nonblockingMinBytes: number;
  readonly #shim: AeadShim;
  readonly #cache: AeadContextCache;
  readonly #keys = new WeakMap<AeadKey, KeyMaterial>();
  // Reused by blocking batches only: a nonblocking batch may still be reading its own.
  readonly #descriptor = new Uint32Array(AEAD_BATCH_ITEMS_MAX * AEAD_DESC_WORDS * 2);
  readonly #statuses = new Int32Array(AEAD_BATCH_ITEMS_MAX);
  // Arguments of nonblocking calls in flight, held so nothing they point at is collected.
  readonly #pinned = new Set<unknown>();

  /** Opens the shim and checks it with a known-answer test; a failure is a reason, not a throw. */
  static load(shimOptions: ShimOptions, options: OpensslAeadOptions = {}): OpensslAeadLoad {
    const loaded = loadAeadShim(shimOptions);
    if (!loaded.ok) return { ok: false, reason: loaded.reason };
    shimForAddresses ??= loaded.shim;
    const cache = loaded.shim.cacheNew();
    if (cache === null) return { ok: false, reason: "shim could not allocate contexts" };
    const version = loaded.shim.opensslVersion();
    const aead = new OpensslAead(
      loaded.shim,
      cache,
      `shim loaded from ${loaded.path}`,
      version,
      options,
    );
    const failure = aead.#selfTest();
    if (failure !== null) return { ok: false, reason: `shim self-test failed: ${failure}` };
    return { ok: true, aead };
  }

  private constructor(
    shim: AeadShim,
    cache: AeadContextCache,
    reason: string,
    version: string,
    options: OpensslAeadOptions,
  ) {
    const nonblockingMinBytes = options.nonblockingMinBytes ??
      OPENSSL_NONBLOCKING_MIN_BYTES_DEFAULT;
    assert(
      Number.isSafeInteger(nonblockingMinBytes) && nonblockingMinBytes >= 0,
      "nonblockingMinBytes is a byte count",
    );
    this.#shim = shim;
    this.#cache = cache;
    this.reason = reason;
    this.opensslVersion = version;
    this.nonblockingMinBytes = nonblockingMinBytes;
    cacheRegistry.register(this, { shim, cache });
  }

  importKey(raw: Uint8Array): Promise<AeadKey> {
    try {
      checkKeyBytes(raw);
    } catch (e) {
      return Promise.reject(e);
    }
    const bytes = new Uint8Array(new ArrayBuffer(AEAD_KEY_BYTES));
    bytes.set(raw);
    const key: AeadKey = Object.freeze({ implementation: "openssl" as const });
    this.#keys.set(key, { bytes, address: 0 });
    return Promise.resolve(key);
  }

  async seal(
    key: AeadKey,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    checkSealArgs(nonce, plaintext, aad, out);
    const { bytes } = this.#material(key);
    let status: number;
    if (plaintext.length < this.nonblockingMinBytes) {
      status = this.#shim.seal(this.#cache, bytes, nonce, plaintext, aad, out);
    } else {
      const pin = [bytes, nonce, plaintext, aad, out];
      this.#pinned.add(pin);
      try {
        status = await this.#shim.sealAsync(bytes, nonce, plaintext, aad, out);
      } finally {
        this.#pinned.delete(pin);
      }
    }
    if (status !== AEAD_OK) throw shimFailure("seal", status);
    return plaintext.length + AEAD_TAG_BYTES;
  }

  async open(
    key: AeadKey,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    const length = checkOpenArgs(nonce, sealed, aad, out);
    const { bytes } = this.#material(key);
    if (length < 0) throw truncatedError(sealed.length);
    let status: number;
    if (length < this.nonblockingMinBytes) {
      status = this.#shim.open(this.#cache, bytes, nonce, sealed, aad, out);
    } else {
      const pin = [bytes, nonce, sealed, aad, out];
      this.#pinned.add(pin);
      try {
        status = await this.#shim.openAsync(bytes, nonce, sealed, aad, out);
      } finally {
        this.#pinned.delete(pin);
      }
    }
    if (status === AEAD_EAUTH) {
      throw new AeadError("authentication failed: wrong key, nonce or AAD, or altered data");
    }
    if (status !== AEAD_OK) throw shimFailure("open", status);
    return length;
  }

  async sealBatch(items: readonly AeadSealItem[]): Promise<number[]> {
    checkBatchSize(items.length);
    const entries: BatchEntry[] = [];
    const results: number[] = [];
    let totalBytes = 0;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      checkSealArgs(item.nonce, item.plaintext, item.aad, item.out, i);
      entries.push(entry(this.#material(item.key), item.nonce, item.plaintext, item.aad, item.out));
      results.push(item.plaintext.length + AEAD_TAG_BYTES);
      totalBytes += item.plaintext.length;
    }
    const failed = await this.#runBatch(false, entries, totalBytes, items);
    assert(failed.length === 0, "sealing cannot fail authentication");
    return results;
  }

  async openBatch(items: readonly AeadOpenItem[]): Promise<number[]> {
    checkBatchSize(items.length);
    const entries: BatchEntry[] = [];
    const results: number[] = [];
    let totalBytes = 0;
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      const length = checkOpenArgs(item.nonce, item.sealed, item.aad, item.out, i);
      // Input shorter than a tag goes through too: the shim fails it without reading.
      entries.push(entry(this.#material(item.key), item.nonce, item.sealed, item.aad, item.out));
      results.push(length);
      totalBytes += Math.max(length, 0);
    }
    const failed = await this.#runBatch(true, entries, totalBytes, items);
    if (failed.length > 0) throw batchError(failed, items.length);
    return results;
  }

  /** Packs, runs in one FFI call, and returns the indexes that failed authentication. */
  async #runBatch(
    open: boolean,
    entries: readonly BatchEntry[],
    totalBytes: number,
    pinnedItems: readonly unknown[],
  ): Promise<number[]> {
    const count = entries.length;
    if (count === 0) return [];
    const nonblocking = totalBytes >= this.nonblockingMinBytes;
    const desc = nonblocking ? new Uint32Array(count * AEAD_DESC_WORDS * 2) : this.#descriptor;
    const statuses = nonblocking ? new Int32Array(count) : this.#statuses;
    for (let i = 0; i < count; i++) {
      const e = entries[i]!;
      putWord(desc, i, AEAD_DESC_KEY, this.#keyAddress(e.key));
      putWord(desc, i, AEAD_DESC_NONCE, addressOf(e.nonce));
      putWord(desc, i, AEAD_DESC_IN, addressOf(e.input));
      putWord(desc, i, AEAD_DESC_IN_LEN, e.input.length);
      putWord(desc, i, AEAD_DESC_AAD, addressOf(e.aad));
      putWord(desc, i, AEAD_DESC_AAD_LEN, e.aad.length);
      putWord(desc, i, AEAD_DESC_OUT, addressOf(e.out));
    }
    let result: number;
    if (nonblocking) {
      const pin = [pinnedItems, desc, statuses];
      this.#pinned.add(pin);
      try {
        result = await this.#shim.batchAsync(open, desc, count, statuses);
      } finally {
        this.#pinned.delete(pin);
      }
    } else {
      result = this.#shim.batch(this.#cache, open, desc, count, statuses);
    }
    if (result < 0) throw shimFailure(open ? "openBatch" : "sealBatch", result);
    const failed: number[] = [];
    if (result > 0) {
      for (let i = 0; i < count; i++) if (statuses[i] === AEAD_EAUTH) failed.push(i);
    }
    assert(failed.length === result, "shim failure count matches its statuses");
    return failed;
  }

  #material(key: AeadKey): KeyMaterial {
    const material = this.#keys.get(key);
    if (material === undefined) {
      throw new TypeError(`key was not imported by this OpensslAead (${key?.implementation})`);
    }
    return material;
  }

  #keyAddress(material: KeyMaterial): number {
    if (material.address === 0) material.address = addressOf(material.bytes);
    return material.address;
  }

  /** McGrew-Viega test case 14 through both paths; null when the shim answers right. */
  #selfTest(): string | null {
    const key = new Uint8Array(new ArrayBuffer(AEAD_KEY_BYTES));
    const nonce = new Uint8Array(12);
    const expected = "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919";
    const sealed = new Uint8Array(32);
    if (this.#shim.seal(this.#cache, key, nonce, new Uint8Array(16), new Uint8Array(0), sealed)) {
      return "seal returned an error";
    }
    const hex = toHex(sealed);
    if (hex !== expected) return `seal produced ${hex}`;
    const plain = new Uint8Array(16).fill(1);
    if (this.#shim.open(this.#cache, key, nonce, sealed, new Uint8Array(0), plain)) {
      return "open rejected its own output";
    }
    if (plain.some((b) => b !== 0)) return "open produced the wrong plaintext";
    sealed[31] ^= 1;
    if (this.#shim.open(this.#cache, key, nonce, sealed, new Uint8Array(0), plain) !== AEAD_EAUTH) {
      return "open accepted a forged tag";
    }
    return null;
  }
}

function shimFailure(operation: string, status: number): Error {
  return new Error(`aead shim ${operation} failed: ${describeAeadStatus(status)} (${status})`);
}
