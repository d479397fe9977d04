// Symbol table of the erasure-coding and CRC-32C shim (ffi/ec/kiseki_ec.c) and the one way
// to open it. Signatures here and in the C file change together, with KISEKI_EC_ABI_VERSION
// bumped.

import { openShim, type ShimLoad, type ShimOptions } from "../loader.ts";

/** Must equal KISEKI_EC_ABI_VERSION in kiseki_ec.c; a stale build is refused, not trusted. */
export const EC_SHIM_ABI_VERSION = 2;

/** Return codes of the shim's entry points. */
export const EC_SHIM_OK = 0;
export const EC_SHIM_EINVAL = -1;
export const EC_SHIM_ESINGULAR = -2;

export const EC_SYMBOLS = {
  kiseki_ec_abi_version: { parameters: [], result: "i32" },
  kiseki_ec_address_of: { parameters: ["buffer"], result: "u64" },
  /** (k, m, out[(k+m) x k]) */
  kiseki_ec_gen_matrix: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  /** (k, rows, coefficients[rows x k], gftbls[32 x k x rows]) */
  kiseki_ec_init_tables: { parameters: ["i32", "i32", "buffer", "buffer"], result: "i32" },
  /** (k, m, encodeMatrix, survivors[k], targets[count], count, out[count x k]) */
  kiseki_ec_decode_matrix: {
    parameters: ["i32", "i32", "buffer", "buffer", "buffer", "i32", "buffer"],
    result: "i32",
  },
  /** (len, k, rows, gftbls, pointers[k + rows]): blocking, for work of a few microseconds. */
  kiseki_ec_encode: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** The same C function on Deno's blocking thread pool, for work worth the ~50 us hop. */
  kiseki_ec_encode_nonblocking: {
    name: "kiseki_ec_encode",
    parameters: ["i32", "i32", "i32", "buffer", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  /**
   * (bytes, length, previous) -> CRC-32C continuing `previous`, as mod/base/crc32c.ts.
   * Blocking on purpose: a call costs nanoseconds, the nonblocking hop tens of microseconds.
   */
  kiseki_crc32c: { parameters: ["buffer", "u64", "u32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type EcShimSymbols = typeof EC_SYMBOLS;
export type EcShim = Deno.DynamicLibrary<EcShimSymbols>;

/** Opens libkiseki_ec.so and checks its ABI version; never throws. */
export function openEcShim(options: ShimOptions): ShimLoad<EcShimSymbols> {
  const load = openShim("ec", EC_SYMBOLS, options);
  if (!load.ok) return load;
  const version = load.lib.symbols.kiseki_ec_abi_version();
  if (version !== EC_SHIM_ABI_VERSION) {
    load.lib.close();
    return {
      ok: false,
      reason: `shim ABI ${version} at ${load.path}, expected ${EC_SHIM_ABI_VERSION} (rebuild ffi)`,
      path: load.path,
    };
  }
  return load;
}
