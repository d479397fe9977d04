// Picks the erasure-coding implementation: the ISA-L shim when it is built and loadable,
// else the TypeScript twin. The decision and its reason are logged once, so an operator can
// always tell which code is encoding their data.

import { defaultShimOptions, type ShimOptions } from "../../ffi/loader.ts";
import { openEcShim } from "../../ffi/ec/bindings.ts";
import { gauge, log } from "../obs/mod.ts";
import type { ErasureCodecFactory } from "./codec.ts";
import { IsalCodecFactory } from "./isal_codec.ts";
import { TypeScriptCodecFactory } from "./typescript_codec.ts";

/** Distinct shim option sets remembered; a process normally has one. */
const SELECTIONS_CACHED_MAX = 8;

const selections = new Map<string, ErasureCodecFactory>();
const announced = new Set<string>();

const implementationGauge = gauge<"impl">({
  name: "kiseki_ec_implementation",
  help: "1 for the erasure-coding implementation in use (isa-l or typescript)",
  labelNames: ["impl"],
});

/**
 * The erasure-codec factory for `options`: ISA-L if libkiseki_ec.so loads (and ffiMode is
 * not "off"), otherwise the TypeScript twin with the reason the shim was not used. Repeated
 * calls with the same options return the same factory and do not log again.
 */
export function selectErasureCodec(
  options: ShimOptions = defaultShimOptions(),
): ErasureCodecFactory {
  const key = `${options.ffiMode}\u0000${options.ffiDir}`;
  const cached = selections.get(key);
  if (cached !== undefined) return cached;

  const load = openEcShim(options);
  const factory: ErasureCodecFactory = load.ok
    ? new IsalCodecFactory(load.lib, `shim loaded from ${load.path}`)
    : new TypeScriptCodecFactory(load.reason);

  if (selections.size >= SELECTIONS_CACHED_MAX) {
    selections.delete(selections.keys().next().value!);
  }
  selections.set(key, factory);

  const decision = `${factory.implementation}\u0000${factory.reason}`;
  if (!announced.has(decision)) {
    announced.add(decision);
    log.info("erasure coding implementation selected", {
      impl: factory.implementation,
      reason: factory.reason,
    });
    implementationGauge.set({ impl: factory.implementation }, 1);
  }
  return factory;
}
