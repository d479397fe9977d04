import { BufferPool, Prng } from "../base/mod.ts";
import {
  BoundedLru,
  checkGeometry,
  EC_FRAGMENT_ALIGN_BYTES,
  EcError,
  fragmentLengthFor,
  join,
  planReconstruct,
  split,
} from "./codec.ts";

function fail(message: string): never {
  throw new Error(message);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function throwsCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof EcError && e.code === code) return;
    fail(`threw ${e}, expected EcError ${code}`);
  }
  fail(`did not throw ${code}`);
}

Deno.test("checkGeometry() allows k + m up to 255 and names the limit when refusing", () => {
  checkGeometry({ k: 1, m: 1 });
  checkGeometry({ k: 200, m: 55 });
  try {
    checkGeometry({ k: 200, m: 56 });
    fail("k + m = 256 accepted");
  } catch (e) {
    if (!(e instanceof EcError) || !e.message.includes("255")) fail(`${e}`);
  }
});

Deno.test("fragmentLengthFor() rounds up to the SIMD alignment, at least one unit", () => {
  const cases: [number, number, number][] = [
    [0, 4, 64],
    [1, 4, 64],
    [256, 4, 64],
    [257, 4, 128],
    [(1 << 20) + 1, 4, 262_208],
    [(1 << 20) + 1, 3, 349_568],
  ];
  for (const [length, k, expected] of cases) {
    const actual = fragmentLengthFor(length, k);
    if (actual !== expected) fail(`${length}/${k}: ${actual} != ${expected}`);
    if (actual % EC_FRAGMENT_ALIGN_BYTES !== 0 || actual * k < length) fail("bad fragment length");
  }
});

Deno.test("split() then join() returns the original bytes for odd and empty lengths", () => {
  const prng = new Prng(17);
  for (const length of [0, 1, 3, 63, 64, 65, 255, 4097, 100_003]) {
    for (const k of [1, 2, 3, 4, 7, 10]) {
      const object = prng.bytes(length);
      const s = split(object, k);
      if (s.fragments.length !== k) fail("fragment count");
      for (const f of s.fragments) if (f.length !== s.fragmentLength) fail("unequal fragments");
      const padded = s.fragments.flatMap((f) => Array.from(f)).slice(length);
      if (padded.some((b) => b !== 0)) fail(`${length}/${k}: padding not zero`);
      if (!equalBytes(join(s.fragments, s.dataLength), object)) fail(`${length}/${k} round trip`);
    }
  }
});

Deno.test("split() views an exactly-sized object without copying; join() views adjacent fragments", () => {
  const object = new Prng(2).bytes(4 * 128);
  const s = split(object, 4);
  if (s.fragments[2]!.buffer !== object.buffer || s.fragments[2]!.byteOffset !== 256) {
    fail("fragments are not views of the object");
  }
  const joined = join(s.fragments, 500);
  if (joined.buffer !== object.buffer || joined.length !== 500) fail("join() copied");
  const separate = [Uint8Array.of(1, 2), Uint8Array.of(3, 4)];
  const out = new Uint8Array(8);
  const copied = join(separate, 3, out);
  if (!equalBytes(copied, Uint8Array.of(1, 2, 3)) || copied.buffer !== out.buffer) {
    fail("join(out)");
  }
  throwsCode(() => join(separate, 5), "bad_fragment_length");
});

Deno.test("split() with a pool fills pooled buffers and release() returns them", () => {
  const pool = new BufferPool({ bufferSizeBytes: 128, countMax: 4 });
  const object = new Prng(3).bytes(301);
  const s = split(object, 3, pool);
  if (s.fragmentLength !== 128) fail(`fragment length ${s.fragmentLength}`);
  if (pool.stats().lent !== 3) fail("pool buffers not used");
  if (!equalBytes(join(s.fragments, s.dataLength), object)) fail("round trip");
  s.release();
  s.release();
  if (pool.stats().lent !== 0) fail("release() did not return buffers");
  // Too small a pool is refused before any buffer is taken.
  try {
    split(new Uint8Array(1000), 2, pool);
    fail("small pool accepted");
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
  }
  // An exhausted pool gives back what it lent to this call.
  const held = [pool.acquireOrThrow(), pool.acquireOrThrow()];
  try {
    split(new Uint8Array(301), 3, pool);
    fail("exhausted pool accepted");
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
  }
  if (pool.stats().lent !== 2) fail("partial acquisition leaked");
  held.forEach((b) => pool.release(b));
});

Deno.test("planReconstruct() reads the first k present fragments and sorts targets", () => {
  const f = (n: number) => new Uint8Array(n);
  const slots = [null, f(8), null, f(8), f(8), f(8)];
  const plan = planReconstruct(4, 2, slots, new Map([[2, f(8)], [0, f(8)]]));
  if (plan === null) fail("null plan");
  if (plan.survivors.join() !== "1,3,4,5" || plan.targets.join() !== "0,2") fail("plan");
  if (plan.length !== 8) fail("length");
  if (planReconstruct(4, 2, slots, new Map()) !== null) fail("empty targets must plan nothing");
  throwsCode(
    () => planReconstruct(4, 2, [null, null, null, f(8), f(8), f(8)], new Map()),
    "too_few_fragments",
  );
});

Deno.test("BoundedLru evicts least recently used entries by count and by bytes", () => {
  const lru = new BoundedLru<number>(3, 100);
  lru.set("a", 1, 10);
  lru.set("b", 2, 10);
  lru.set("c", 3, 10);
  lru.get("a");
  lru.set("d", 4, 10);
  const sizeAfterCount: number = lru.size;
  if (lru.get("b") !== undefined || lru.get("a") !== 1 || sizeAfterCount !== 3) {
    fail("count eviction");
  }
  lru.set("e", 5, 85);
  if (lru.bytes > 100 || lru.get("e") !== 5) fail(`byte eviction left ${lru.bytes} bytes`);
  // An entry larger than the bound is still kept alone: it is about to be used.
  lru.set("huge", 6, 500);
  if (lru.size !== 1 || lru.get("huge") !== 6) fail("oversized newest entry");
});
