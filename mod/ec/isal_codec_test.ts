import { openEcShim } from "../../ffi/ec/bindings.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { Prng } from "../base/mod.ts";
import { IsalCodecFactory } from "./isal_codec.ts";
import { cauchyEncodeMatrix } from "./matrix.ts";

const shim = openEcShim(defaultShimOptions());
const ignore = !shim.ok;
const suffix = shim.ok ? "" : ` [ignored: ISA-L shim absent: ${shim.reason}]`;

function fail(message: string): never {
  throw new Error(message);
}

Deno.test({
  name: `kiseki_ec_gen_matrix() equals cauchyEncodeMatrix() for every k + m <= 40${suffix}`,
  ignore,
  fn() {
    if (!shim.ok) return;
    for (let k = 1; k < 40; k++) {
      for (let m = 1; k + m <= 40; m++) {
        const native = new Uint8Array((k + m) * k);
        if (shim.lib.symbols.kiseki_ec_gen_matrix(k, m, native) !== 0) fail("gen_matrix failed");
        const twin = cauchyEncodeMatrix(k, m);
        if (native.some((x, i) => x !== twin[i])) fail(`${k}+${m} matrices differ`);
      }
    }
  },
});

Deno.test({
  name: `kiseki_ec_* reject invalid arguments with -1 instead of crashing${suffix}`,
  ignore,
  fn() {
    if (!shim.ok) return;
    const s = shim.lib.symbols;
    const buf = new Uint8Array(64);
    if (s.kiseki_ec_gen_matrix(0, 1, buf) !== -1) fail("k=0");
    if (s.kiseki_ec_gen_matrix(200, 56, buf) !== -1) fail("k+m=256");
    if (s.kiseki_ec_init_tables(1, 1, null, buf) !== -1) fail("null coefficients");
    if (s.kiseki_ec_encode(16, 1, 1, buf, null) !== -1) fail("null descriptor");
    if (s.kiseki_ec_encode(16, 1, 1, buf, new BigUint64Array(2)) !== -1) fail("null pointers");
    if (s.kiseki_ec_encode(-1, 1, 1, buf, new BigUint64Array(2)) !== -1) fail("negative length");
  },
});

Deno.test({
  name: `IsalCodec encodes tiny on-heap arrays and offset views at the right addresses${suffix}`,
  ignore,
  fn() {
    if (!shim.ok) return;
    const codec = new IsalCodecFactory(shim.lib, "test").create({ k: 2, m: 1 });
    const prng = new Prng(1);
    for (let round = 0; round < 200; round++) {
      // Fresh small arrays live on the V8 heap until their buffer is materialised.
      const len = 1 + prng.nextInt(48);
      const a = prng.bytes(len);
      const b = prng.bytes(len);
      const slab = new Uint8Array(len + 5);
      const p = slab.subarray(5);
      codec.encode([a, b], [p]);
      // A parity computed from the wrong address would not give `a` back.
      const out = new Uint8Array(len);
      codec.reconstruct([null, b, p], new Map([[0, out]]));
      if (out.some((x, i) => x !== a[i])) fail(`round ${round}: rebuilt data differs`);
      if (slab.subarray(0, 5).some((x) => x !== 0)) fail("wrote before the view");
    }
  },
});

Deno.test({
  name: `IsalCodecFactory reports isa-l with its reason${suffix}`,
  ignore,
  fn() {
    if (!shim.ok) return;
    const f = new IsalCodecFactory(shim.lib, `shim loaded from ${shim.path}`);
    if (f.implementation !== "isa-l" || !f.reason.includes(shim.path)) fail("identity");
    if (f.create({ k: 4, m: 2 }).implementation !== "isa-l") fail("codec implementation");
  },
});

Deno.test({
  name: `IsalCodecFactory.allocateFragments() starts every fragment on a 64-byte address${suffix}`,
  ignore,
  fn() {
    if (!shim.ok) return;
    const f = new IsalCodecFactory(shim.lib, "test");
    for (const length of [1, 100, 65_536, (1 << 20) + 3]) {
      for (const b of f.allocateFragments(11, length)) {
        const address = Deno.UnsafePointer.value(Deno.UnsafePointer.of(b));
        if (address % 64n !== 0n) fail(`length ${length}: address ${address} not 64-aligned`);
      }
    }
  },
});
