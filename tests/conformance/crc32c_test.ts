// Runs one CRC-32C suite against the TypeScript twin and the ISA-L shim: the shim with every
// call native, as installed (short inputs on the twin), and behind crc32c() once installed.
// Every result is checked against a bit-at-a-time reference. Without a usable shim its cases
// are registered as ignored with the reason, so the gap shows in the report.

import assert from "node:assert/strict";
import { defaultShimOptions, type ShimOptions } from "../../ffi/loader.ts";
import { openEcShim } from "../../ffi/ec/bindings.ts";
import { CRC32C_NATIVE_MIN_BYTES, nativeCrc32c, selectCrc32c } from "../../ffi/ec/crc32c.ts";
import {
  crc32c,
  type Crc32cFunction,
  crc32cImplementation,
  crc32cPure,
  installCrc32c,
  missingPart,
  Prng,
} from "../../mod/base/mod.ts";

/** Bit-at-a-time reference, independent of every implementation under test. */
function crc32cBitwise(bytes: Uint8Array, previous = 0): number {
  let crc = ~previous >>> 0;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

function isUint32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffffffff && value === value >>> 0;
}

interface Crc32cConformanceOptions {
  /** Prefix of every test name, e.g. "crc32c[isa-l]". */
  name: string;
  /** Called inside each test, so an absent implementation costs nothing when ignored. */
  impl: () => Crc32cFunction;
  /** Registers every case with `ignore: true` and this reason in its name. */
  ignoreReason?: string;
  /** Runs after each case, passed or failed. */
  after?: () => void;
}

function registerCrc32cConformance(options: Crc32cConformanceOptions): void {
  const suffix = options.ignoreReason === undefined ? "" : ` (ignored: ${options.ignoreReason})`;
  const test = (what: string, fn: (crc: Crc32cFunction) => void) =>
    Deno.test({
      name: `${options.name} ${what}${suffix}`,
      ignore: missingPart(options.name, options.ignoreReason),
      fn: () => {
        try {
          fn(options.impl());
        } finally {
          options.after?.();
        }
      },
    });

  test("matches the standard check value and the RFC 3720 vectors", (crc) => {
    assert.equal(crc(new TextEncoder().encode("123456789"), 0), 0xe3069283);
    // RFC 3720 appendix B.4.
    assert.equal(crc(new Uint8Array(32), 0), 0x8a9136aa);
    assert.equal(crc(new Uint8Array(32).fill(0xff), 0), 0x62a8ab43);
    assert.equal(crc(Uint8Array.from({ length: 32 }, (_, i) => i), 0), 0x46dd794e);
    assert.equal(crc(Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0), 0x113fdb5c);
  });

  test("of empty input is 0, and continuing over it keeps the CRC", (crc) => {
    assert.equal(crc(new Uint8Array(0), 0), 0);
    const prng = new Prng(1);
    for (let i = 0; i < 64; i++) {
      const previous = prng.nextU32();
      assert.equal(crc(new Uint8Array(0), previous), previous);
      assert.equal(crc(new Uint8Array(16).subarray(5, 5), previous), previous);
    }
  });

  test("agrees with the twin and the reference at every length 0..300", (crc) => {
    const prng = new Prng(0x300);
    for (let length = 0; length <= 300; length++) {
      const data = prng.bytes(length);
      const expected = crc32cBitwise(data);
      assert.equal(crc32cPure(data), expected, `twin, length ${length}`);
      assert.equal(crc(data, 0), expected, `length ${length}`);
      const previous = prng.nextU32();
      assert.equal(crc(data, previous), crc32cBitwise(data, previous), `length ${length} cont.`);
    }
  });

  test("continues across random split points", (crc) => {
    const prng = new Prng(0x5911);
    for (let round = 0; round < 200; round++) {
      const data = prng.bytes(prng.nextInt(5000));
      const whole = crc32cBitwise(data);
      // Up to eight pieces, cut anywhere, empty pieces included.
      const cuts = Array.from({ length: prng.nextInt(8) }, () => prng.nextInt(data.length + 1))
        .sort((a, b) => a - b);
      let running = 0;
      let start = 0;
      for (const cut of [...cuts, data.length]) {
        running = crc(data.subarray(start, cut), running);
        start = cut;
      }
      assert.equal(running, whole, `round ${round}, cuts ${cuts.join(",")} of ${data.length}`);
    }
  });

  test("reads exactly its view of an unaligned subarray (byteOffset 1..7)", (crc) => {
    const prng = new Prng(0x0ff5e7);
    const backing = prng.bytes(8192 + 64);
    for (let offset = 1; offset <= 7; offset++) {
      for (const length of [0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 255, 1000, 4096, 8191]) {
        const view = backing.subarray(offset, offset + length);
        const expected = crc32cBitwise(view.slice());
        assert.equal(crc(view, 0), expected, `offset ${offset} length ${length}`);
        // The same bytes in their own aligned buffer give the same CRC.
        assert.equal(crc(view.slice(), 0), expected, `copy, offset ${offset} length ${length}`);
      }
    }
  });

  test("of a 4 MiB buffer matches the reference, whole and in 64 KiB pieces", (crc) => {
    const data = new Prng(0x4_000_000).bytes(4 * 1024 * 1024);
    const expected = crc32cBitwise(data);
    assert.equal(crc(data, 0), expected);
    let running = 0;
    for (let at = 0; at < data.length; at += 65536) {
      running = crc(data.subarray(at, at + 65536), running);
    }
    assert.equal(running, expected);
  });

  test("returns a uint32, also when given a signed previous value", (crc) => {
    const prng = new Prng(0x32);
    let highBitSeen = false;
    for (let i = 0; i < 500; i++) {
      const data = prng.bytes(prng.nextInt(100));
      const previous = prng.nextU32();
      const result = crc(data, previous);
      assert.ok(isUint32(result), `result ${result} for length ${data.length}`);
      highBitSeen ||= result >= 0x80000000;
      // A CRC that went through `| 0` (a signed int32) means the same register.
      assert.equal(crc(data, previous | 0), result);
    }
    assert.ok(highBitSeen, "no result had its top bit set; the uint32 check proved nothing");
  });
}

// KISEKI_FFI=off or KISEKI_FFI_DIR choose the shim here as they do for a role, so the
// ignored path can be checked on a machine that has the shim built.
const shim: ShimOptions = {
  ffiDir: Deno.env.get("KISEKI_FFI_DIR") ?? defaultShimOptions().ffiDir,
  ffiMode: Deno.env.get("KISEKI_FFI") === "off" ? "off" : "auto",
};
const load = openEcShim(shim);
const absent = load.ok ? undefined : `ISA-L shim absent: ${load.reason}; run ffi/build.sh`;
const unreachable = (): Crc32cFunction => {
  throw new Error("unreachable: ignored");
};

registerCrc32cConformance({ name: "crc32c[typescript]", impl: () => crc32cPure });

registerCrc32cConformance({
  name: "crc32c[isa-l, every call native]",
  impl: load.ok ? () => nativeCrc32c(load.lib, 0) : unreachable,
  ignoreReason: absent,
});

registerCrc32cConformance({
  name: `crc32c[isa-l, native from ${CRC32C_NATIVE_MIN_BYTES} bytes]`,
  impl: load.ok ? () => nativeCrc32c(load.lib) : unreachable,
  ignoreReason: absent,
});

// What a role runs: selectCrc32c() installed behind crc32c(); the twin is put back after each
// case so the rest of the process sees the default.
let selected: ReturnType<typeof selectCrc32c> | undefined;
registerCrc32cConformance({
  name: "crc32c() with selectCrc32c() installed",
  impl: () => {
    selected ??= selectCrc32c(shim);
    installCrc32c(selected.impl, selected.name, selected.reason);
    assert.deepEqual(crc32cImplementation(), { name: selected.name, reason: selected.reason });
    assert.equal(selected.name, load.ok ? "isa-l" : "typescript", selected.reason);
    return crc32c;
  },
  after: () => installCrc32c(crc32cPure, "typescript", "conformance: twin reinstated"),
});

Deno.test("selectCrc32c() falls back to the twin with the reason when KISEKI_FFI=off", () => {
  const selected = selectCrc32c({ ...shim, ffiMode: "off" });
  assert.equal(selected.name, "typescript");
  assert.equal(selected.impl, crc32cPure);
  assert.match(selected.reason, /^slicing-by-8 \(KISEKI_FFI=off\)$/);
});

Deno.test("selectCrc32c() falls back to the twin with the reason when the shim is missing", () => {
  const selected = selectCrc32c({ ffiDir: "/nonexistent/kiseki-ffi", ffiMode: "auto" });
  assert.equal(selected.name, "typescript");
  assert.match(selected.reason, /shim not built/);
});
