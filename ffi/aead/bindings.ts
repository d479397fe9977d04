// Symbol table and a thin typed wrapper over libkiseki_aead.so (ffi/aead/kiseki_aead.c).
// Knows the C signatures, status codes and descriptor layout; knows nothing of the port,
// so mod/crypto/openssl_aead.ts owns validation, buffers and the blocking policy.

import { openShim, type ShimOptions } from "../loader.ts";

/** Must equal KISEKI_AEAD_ABI_VERSION in kiseki_aead.c; a stale build is refused. */
export const AEAD_SHIM_ABI_VERSION = 1;

/** Mirrors KISEKI_AEAD_BATCH_ITEMS_MAX: the C side refuses larger batches. */
export const AEAD_SHIM_BATCH_ITEMS_MAX = 1024;

/** u64 words per batch item in the descriptor buffer (KISEKI_AEAD_DESC_WORDS). */
export const AEAD_DESC_WORDS = 8;
/** Word offsets inside one descriptor item. */
export const AEAD_DESC_KEY = 0;
export const AEAD_DESC_NONCE = 1;
export const AEAD_DESC_IN = 2;
export const AEAD_DESC_IN_LEN = 3;
export const AEAD_DESC_AAD = 4;
export const AEAD_DESC_AAD_LEN = 5;
export const AEAD_DESC_OUT = 6;

/** Status codes returned per message (KISEKI_AEAD_* in kiseki_aead.c). */
export const AEAD_OK = 0;
export const AEAD_EAUTH = 1;
export const AEAD_EINVAL = -1;
export const AEAD_ENOMEM = -2;
export const AEAD_ECIPHER = -3;

const STATUS_TEXT: Record<number, string> = {
  [AEAD_OK]: "ok",
  [AEAD_EAUTH]: "authentication failed",
  [AEAD_EINVAL]: "invalid argument reached the shim",
  [AEAD_ENOMEM]: "out of memory",
  [AEAD_ECIPHER]: "OpenSSL has no AES-256-GCM (provider configuration?)",
  [-4]: "EVP_CipherInit_ex2 failed",
  [-5]: "EVP_CipherUpdate (AAD) failed",
  [-6]: "EVP_CipherUpdate failed",
  [-7]: "EVP_CipherFinal_ex failed",
  [-8]: "EVP_CTRL_GCM tag control failed",
};

export function describeAeadStatus(status: number): string {
  return STATUS_TEXT[status] ?? `unknown shim status ${status}`;
}

// Blocking message arguments: context cache, key, nonce, input, input length, aad, aad
// length, output. Nonblocking ones drop the cache (they key a private context). Lengths
// are u64 and so BigInt: a Number there leaves V8's fast call path (measured 30% slower).
const MESSAGE = [
  "pointer",
  "buffer",
  "buffer",
  "buffer",
  "u64",
  "buffer",
  "u64",
  "buffer",
] as const;
const MESSAGE_ASYNC = ["buffer", "buffer", "buffer", "u64", "buffer", "u64", "buffer"] as const;
// Batch arguments: [context cache,] descriptor, item count, int32 status per item.
const BATCH = ["pointer", "buffer", "u32", "buffer"] as const;
const BATCH_ASYNC = ["buffer", "u32", "buffer"] as const;

export const AEAD_SYMBOLS = {
  kiseki_aead_abi_version: { parameters: [], result: "i32" },
  kiseki_aead_openssl_version: { parameters: ["buffer", "usize"], result: "usize" },
  kiseki_aead_address_of: { parameters: ["buffer"], result: "u64" },
  kiseki_aead_init: { parameters: [], result: "i32" },
  kiseki_aead_cache_new: { parameters: [], result: "pointer" },
  kiseki_aead_cache_free: { parameters: ["pointer"], result: "void" },
  kiseki_aead_seal: { parameters: MESSAGE, result: "i32" },
  kiseki_aead_open: { parameters: MESSAGE, result: "i32" },
  kiseki_aead_seal_async: { parameters: MESSAGE_ASYNC, result: "i32", nonblocking: true },
  kiseki_aead_open_async: { parameters: MESSAGE_ASYNC, result: "i32", nonblocking: true },
  kiseki_aead_seal_batch: { parameters: BATCH, result: "i32" },
  kiseki_aead_open_batch: { parameters: BATCH, result: "i32" },
  kiseki_aead_seal_batch_async: { parameters: BATCH_ASYNC, result: "i32", nonblocking: true },
  kiseki_aead_open_batch_async: { parameters: BATCH_ASYNC, result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

export type AeadSymbols = typeof AEAD_SYMBOLS;

/**
 * A native cache of keyed OpenSSL contexts (kiseki_aead_cache*). It belongs to the thread
 * that created it: only blocking calls on that thread may use it.
 */
export type AeadContextCache = Deno.PointerObject;

/**
 * The loaded shim. Keys are 32 raw bytes passed on every call; blocking calls find a
 * context already keyed with them in the caller's cache, `*Async` calls run on a runtime
 * worker thread with a private context and may overlap anything.
 */
export class AeadShim {
  readonly path: string;
  readonly #lib: Deno.DynamicLibrary<AeadSymbols>["symbols"];

  constructor(lib: Deno.DynamicLibrary<AeadSymbols>, path: string) {
    this.#lib = lib.symbols;
    this.path = path;
  }

  abiVersion(): number {
    return this.#lib.kiseki_aead_abi_version();
  }

  /** OpenSSL_version(OPENSSL_VERSION) of the libcrypto actually loaded. */
  opensslVersion(): string {
    const out = new Uint8Array(256);
    const length = Number(this.#lib.kiseki_aead_openssl_version(out, BigInt(out.length)));
    return new TextDecoder().decode(out.subarray(0, Math.min(length, out.length - 1))) || "unknown";
  }

  /** Native address of a buffer's first byte (see addressOf() in mod/crypto). */
  addressOf(buffer: Uint8Array): bigint {
    return this.#lib.kiseki_aead_address_of(buffer);
  }

  /** AEAD_OK when libcrypto can provide AES-256-GCM. */
  init(): number {
    return this.#lib.kiseki_aead_init();
  }

  /** A context cache for the calling thread; null when out of memory. */
  cacheNew(): AeadContextCache | null {
    return this.#lib.kiseki_aead_cache_new();
  }

  /** Wipes and frees a cache; it must not be used afterwards. */
  cacheFree(cache: AeadContextCache): void {
    this.#lib.kiseki_aead_cache_free(cache);
  }

  seal(
    cache: AeadContextCache,
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): number {
    return this.#lib.kiseki_aead_seal(
      cache,
      key,
      nonce,
      plaintext,
      BigInt(plaintext.length),
      aad,
      BigInt(aad.length),
      out,
    );
  }

  open(
    cache: AeadContextCache,
    key: Uint8Array,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): number {
    return this.#lib.kiseki_aead_open(
      cache,
      key,
      nonce,
      sealed,
      BigInt(sealed.length),
      aad,
      BigInt(aad.length),
      out,
    );
  }

  sealAsync(
    key: Uint8Array,
    nonce: Uint8Array,
    plaintext: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    return this.#lib.kiseki_aead_seal_async(
      key,
      nonce,
      plaintext,
      BigInt(plaintext.length),
      aad,
      BigInt(aad.length),
      out,
    );
  }

  openAsync(
    key: Uint8Array,
    nonce: Uint8Array,
    sealed: Uint8Array,
    aad: Uint8Array,
    out: Uint8Array,
  ): Promise<number> {
    return this.#lib.kiseki_aead_open_async(
      key,
      nonce,
      sealed,
      BigInt(sealed.length),
      aad,
      BigInt(aad.length),
      out,
    );
  }

  /**
   * Runs `count` items packed in `descriptor` (AEAD_DESC_WORDS u64 words each, as pairs
   * of u32 little-endian halves); writes one status per item to `statuses`. Returns the
   * number of authentication failures, or a negative status for the first item that
   * could not run at all.
   */
  batch(
    cache: AeadContextCache,
    open: boolean,
    descriptor: Uint32Array,
    count: number,
    statuses: Int32Array,
  ): number {
    return open
      ? this.#lib.kiseki_aead_open_batch(cache, descriptor, count, statuses)
      : this.#lib.kiseki_aead_seal_batch(cache, descriptor, count, statuses);
  }

  batchAsync(
    open: boolean,
    descriptor: Uint32Array,
    count: number,
    statuses: Int32Array,
  ): Promise<number> {
    return open
      ? this.#lib.kiseki_aead_open_batch_async(descriptor, count, statuses)
      : this.#lib.kiseki_aead_seal_batch_async(descriptor, count, statuses);
  }
}

export type AeadShimLoad =
  | { ok: true; shim: AeadShim; path: string }
  | { ok: false; reason: string; path: string };

/** Opens the shim and checks its ABI and cipher; never throws. */
export function loadAeadShim(options: ShimOptions): AeadShimLoad {
  const opened = openShim("aead", AEAD_SYMBOLS, options);
  if (!opened.ok) return opened;
  const shim = new AeadShim(opened.lib, opened.path);
  const abi = shim.abiVersion();
  if (abi !== AEAD_SHIM_ABI_VERSION) {
    opened.lib.close();
    return {
      ok: false,
      reason: `shim ABI ${abi} at ${opened.path}, expected ${AEAD_SHIM_ABI_VERSION} (rebuild ffi)`,
      path: opened.path,
    };
  }
  const status = shim.init();
  if (status !== AEAD_OK) {
    opened.lib.close();
    return { ok: false, reason: describeAeadStatus(status), path: opened.path };
  }
  return { ok: true, shim, path: opened.path };
}
