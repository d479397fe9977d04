// Symbol table and a thin typed wrapper over libkiseki_hash.so (ffi/hash/kiseki_hash.c).
// Knows the C signatures and status codes; mod/crypto/openssl_hashing.ts owns the port.

import { openShim, type ShimOptions } from "../loader.ts";

/** Must equal KISEKI_HASH_ABI_VERSION in kiseki_hash.c; a stale build is refused. */
export const HASH_SHIM_ABI_VERSION = 1;
/** Digest kinds (KISEKI_HASH_SHA256, KISEKI_HASH_MD5). */
export const HASH_SHA256 = 1;
export const HASH_MD5 = 2;
/** Status codes (KISEKI_HASH_* in kiseki_hash.c). */
export const HASH_OK = 0;
const STATUS_TEXT: Record<number, string> = {
  [-1]: "invalid argument reached the shim",
  [-2]: "an OpenSSL digest call failed",
};

export function describeHashStatus(status: number): string {
  return STATUS_TEXT[status] ?? `unknown shim status ${status}`;
}

// Lengths are u64 and so BigInt: a Number there leaves V8's fast call path.
export const HASH_SYMBOLS = {
  kiseki_hash_abi_version: { parameters: [], result: "i32" },
  kiseki_hash_new: { parameters: ["i32"], result: "pointer" },
  kiseki_hash_free: { parameters: ["pointer"], result: "void" },
  kiseki_hash_update: { parameters: ["pointer", "buffer", "u64"], result: "i32" },
  kiseki_hash_final: { parameters: ["pointer", "buffer"], result: "i32" },
  kiseki_hash_chunk: {
    parameters: ["pointer", "buffer", "u64", "buffer", "u64", "buffer"],
    result: "i32",
  },
  kiseki_hash_crc32c: { parameters: ["u32", "buffer", "u64"], result: "u32" },
  // The same two on a runtime worker thread (nonblocking): the put path's hashing off the
  // event loop, on the other core.
  kiseki_hash_update_async: {
    name: "kiseki_hash_update",
    parameters: ["pointer", "buffer", "u64"],
    result: "i32",
    nonblocking: true,
  },
  kiseki_hash_chunk_async: {
    name: "kiseki_hash_chunk",
    parameters: ["pointer", "buffer", "u64", "buffer", "u64", "buffer"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

export type HashSymbols = typeof HASH_SYMBOLS;

/** A native digest context (EVP_MD_CTX); it belongs to the thread that uses it. */
export type HashContext = Deno.PointerObject;

export type HashShimLoad =
  | { ok: true; symbols: Deno.DynamicLibrary<HashSymbols>["symbols"]; path: string }
  | { ok: false; reason: string; path: string };

/** Opens the shim and checks its ABI version; never throws. */
export function loadHashShim(options: ShimOptions): HashShimLoad {
  const opened = openShim("hash", HASH_SYMBOLS, options);
  if (!opened.ok) return opened;
  const version = opened.lib.symbols.kiseki_hash_abi_version();
  if (version !== HASH_SHIM_ABI_VERSION) {
    opened.lib.close();
    return {
      ok: false,
      reason: `shim ABI ${version}, expected ${HASH_SHIM_ABI_VERSION} (rebuild ffi/)`,
      path: opened.path,
    };
  }
  return { ok: true, symbols: opened.lib.symbols, path: opened.path };
}
