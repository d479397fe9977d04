// CRC-32C through ISA-L's crc32_iscsi in the ec shim, shaped for mod/base's installCrc32c().
// Roles pick it with selectCrc32c(); inputs shorter than CRC32C_NATIVE_MIN_BYTES stay in the
// TypeScript twin, whose loop is quicker there than the FFI crossing.

import { type Crc32cFunction, crc32cPure } from "../../mod/base/crc32c.ts";
import { Prng } from "../../mod/base/prng.ts";
import type { ShimOptions } from "../loader.ts";
import { type EcShim, openEcShim } from "./bindings.ts";

/**
 * Shortest input handed to the shim. Measured on an AMD EPYC (AVX-512) with Deno 2.9: a
 * blocking call with a BigInt length costs ~25-30 ns, the twin ~0.9 ns per byte plus ~3 ns,
 * so they cross at 28-32 bytes.
 */
export const CRC32C_NATIVE_MIN_BYTES = 32;

/** The standard CRC-32C check value: the CRC of the ASCII bytes "123456789". */
const CHECK_INPUT = new TextEncoder().encode("123456789");
const CHECK_VALUE = 0xe3069283;
/** Bytes compared against the twin before the shim is trusted. */
const SELF_CHECK_BYTES = 4096;

/**
 * A Crc32cFunction calling kiseki_crc32c() for inputs of `nativeMinBytes` or more and the
 * twin below that. The length goes over as a BigInt: Deno takes its fast call path for a
 * u64 parameter only when given a BigInt, and a number costs ~75 ns on the slow path.
 */
export function nativeCrc32c(
  lib: EcShim,
  nativeMinBytes: number = CRC32C_NATIVE_MIN_BYTES,
): Crc32cFunction {
  const native = lib.symbols.kiseki_crc32c;
  return (bytes, previous) =>
    bytes.length < nativeMinBytes
      ? crc32cPure(bytes, previous)
      : native(bytes, BigInt(bytes.length), previous >>> 0);
}

export interface Crc32cSelection {
  impl: Crc32cFunction;
  /** "isa-l" or "typescript", as the other implementation gauges name them. */
  name: "isa-l" | "typescript";
  reason: string;
}

/**
 * The CRC-32C implementation for `options`: ISA-L if libkiseki_ec.so loads and agrees with
 * the twin on the check value and a seeded 4 KiB buffer, else the twin with the reason.
 * Never throws; the caller installs and announces the choice.
 */
export function selectCrc32c(options: ShimOptions): Crc32cSelection {
  const load = openEcShim(options);
  if (!load.ok) {
    return { impl: crc32cPure, name: "typescript", reason: `slicing-by-8 (${load.reason})` };
  }
  const native = nativeCrc32c(load.lib, 0);
  const sample = new Prng(0x63726333).bytes(SELF_CHECK_BYTES);
  const got = native(CHECK_INPUT, 0);
  if (got !== CHECK_VALUE || native(sample, 0) !== crc32cPure(sample, 0)) {
    load.lib.close();
    return {
      impl: crc32cPure,
      name: "typescript",
      reason: `slicing-by-8 (crc32_iscsi self-check failed at ${load.path}: check value ` +
        `0x${got.toString(16)})`,
    };
  }
  return {
    impl: nativeCrc32c(load.lib),
    name: "isa-l",
    reason: `crc32_iscsi, shim loaded from ${load.path}; inputs under ` +
      `${CRC32C_NATIVE_MIN_BYTES} bytes stay in typescript`,
  };
}
