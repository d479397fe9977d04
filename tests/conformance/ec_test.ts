// Runs the erasure-coding conformance suite against the TypeScript twin and the ISA-L
// shim, the shim's run also checking every parity byte against the twin. Without a built
// shim its cases are registered as ignored with the reason, so the gap shows in the report.

import { defaultShimOptions } from "../../ffi/loader.ts";
import { openEcShim } from "../../ffi/ec/bindings.ts";
import { IsalCodecFactory, TypeScriptCodecFactory } from "../../mod/ec/mod.ts";
import { registerEcConformance } from "./ec_conformance.ts";

const twin = new TypeScriptCodecFactory("conformance");
registerEcConformance({ name: "ErasureCodec[typescript]", factory: () => twin });

const shim = openEcShim(defaultShimOptions());
if (shim.ok) {
  const isal = new IsalCodecFactory(shim.lib, `shim loaded from ${shim.path}`);
  registerEcConformance({
    name: "ErasureCodec[isa-l]",
    factory: () => isal,
    reference: () => twin,
  });
} else {
  registerEcConformance({
    name: "ErasureCodec[isa-l]",
    factory: () => {
      throw new Error("unreachable: ignored");
    },
    ignoreReason: `ISA-L shim absent: ${shim.reason}; run ffi/build.sh`,
  });
}
