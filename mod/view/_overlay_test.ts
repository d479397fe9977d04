import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { openKvEnv } from "../disk/mod.ts";
import { committed, Overlay } from "./_overlay.ts";
import { afterPrefixBound, KEY_VERBATIM_BYTES, lowerBound, successor } from "./_ordered.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("Overlay.range() merges nested uncommitted writes over committed entries in key order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-overlay-" });
  const env = await openKvEnv({ path: dir, pageKeys: null, mapSizeBytes: 16 << 20 });
  try {
    const t = env.table("t");
    const prng = new Prng(8);
    const key = () => Uint8Array.of(prng.nextInt(6), prng.nextInt(6));
    const model = new Map<string, Uint8Array>();
    await env.transaction((txn) => {
      for (let i = 0; i < 20; i++) {
        const k = key();
        const v = prng.bytes(2);
        txn.put(t, k, v);
        model.set(hex(k), v);
      }
    });
    for (let round = 0; round < 30; round++) {
      const batch = new Overlay(committed);
      const layer = new Overlay(batch);
      const expected = new Map(model);
      for (const o of [batch, layer]) {
        for (let i = 0; i < 8; i++) {
          const k = key();
          if (prng.nextInt(3) === 0) {
            o.delete(t, k);
            expected.delete(hex(k));
          } else {
            const v = prng.bytes(2);
            o.put(t, k, v);
            expected.set(hex(k), v);
          }
        }
      }
      const start = Uint8Array.of(prng.nextInt(3));
      const end = prng.nextInt(2) ? Uint8Array.of(3 + prng.nextInt(3)) : undefined;
      const want = [...expected]
        .filter(([k]) => k >= hex(start) && (end === undefined || k < hex(end)))
        .sort(([a], [b]) => (a < b ? -1 : 1));
      const got = layer.range(t, start, end).map((e) => [hex(e.key), e.value] as const);
      assert.deepEqual(got, want);
      for (const [k, v] of expected) {
        assert.deepEqual(
          layer.get(t, Uint8Array.from(k.match(/../g)!.map((x) => parseInt(x, 16)))),
          v,
        );
      }
      // Merging into the parent keeps the same view.
      layer.mergeInto(batch);
      assert.deepEqual(batch.range(t, start, end).map((e) => [hex(e.key), e.value] as const), want);
    }
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ordered-key bounds: successor(), lowerBound() and afterPrefixBound()", () => {
  const ns = new Uint8Array(16).fill(1);
  assert.deepEqual(successor(Uint8Array.of(1, 2, 0xff)), Uint8Array.of(1, 3));
  assert.equal(successor(Uint8Array.of(0xff, 0xff)), undefined);
  assert.deepEqual(lowerBound(ns, Uint8Array.of(9)), Uint8Array.of(...ns, 9));
  const long = new Uint8Array(KEY_VERBATIM_BYTES + 10).fill(0x61);
  assert.equal(lowerBound(ns, long).length, 16 + KEY_VERBATIM_BYTES);
  assert.deepEqual(
    afterPrefixBound(ns, Uint8Array.of(0x61, 0x2f)),
    Uint8Array.of(...ns, 0x61, 0x2f, 0xff),
  );
  assert.equal(afterPrefixBound(ns, long).length, 16 + KEY_VERBATIM_BYTES);
});
