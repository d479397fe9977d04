import assert from "node:assert/strict";
import { AssertionError } from "./assert.ts";
import {
  compareHlc,
  HLC_LOGICAL_MAX,
  HLC_PHYSICAL_MS_MAX,
  HlcDriftError,
  HlcError,
  type HlcTimestamp,
  HybridLogicalClock,
  ManualClock,
  packHlc,
  readHlc,
  SystemClock,
  unpackHlc,
  writeHlc,
} from "./hlc.ts";
import { Prng } from "./prng.ts";

const ts = (physicalMs: number, logical: number): HlcTimestamp => ({ physicalMs, logical });

Deno.test("HybridLogicalClock.now() follows the wall clock and counts within a millisecond", () => {
  const clock = new ManualClock(1000);
  const hlc = new HybridLogicalClock({ clock });
  assert.deepEqual(hlc.now(), ts(1000, 0));
  assert.deepEqual(hlc.now(), ts(1000, 1));
  assert.deepEqual(hlc.now(), ts(1000, 2));
  clock.advance(5);
  assert.deepEqual(hlc.now(), ts(1005, 0));
});

Deno.test("HybridLogicalClock.now() stays monotonic when the wall clock goes backwards", () => {
  const clock = new ManualClock(2000);
  const hlc = new HybridLogicalClock({ clock });
  const a = hlc.now();
  clock.set(1500);
  const b = hlc.now();
  const c = hlc.now();
  assert.deepEqual(b, ts(2000, 1));
  assert.ok(compareHlc(a, b) < 0 && compareHlc(b, c) < 0);
});

Deno.test("HybridLogicalClock.now() borrows the next millisecond when the counter overflows", () => {
  const clock = new ManualClock(10);
  const hlc = new HybridLogicalClock({ clock, last: ts(10, HLC_LOGICAL_MAX - 1) });
  assert.deepEqual(hlc.now(), ts(10, HLC_LOGICAL_MAX));
  assert.deepEqual(hlc.now(), ts(11, 0));
  clock.set(11);
  assert.deepEqual(hlc.now(), ts(11, 1));
});

Deno.test("HybridLogicalClock.update() orders after both the remote and local timestamps", () => {
  const clock = new ManualClock(1000);
  const hlc = new HybridLogicalClock({ clock });
  hlc.now(); // 1000.0
  // Remote ahead within the drift limit: adopt its physical time.
  assert.deepEqual(hlc.update(ts(1200, 7)), ts(1200, 8));
  // Remote behind: keep ours, tick.
  assert.deepEqual(hlc.update(ts(900, 50)), ts(1200, 9));
  // Same millisecond: max of both counters + 1.
  assert.deepEqual(hlc.update(ts(1200, 40)), ts(1200, 41));
  // Wall clock passed both: reset the counter.
  clock.set(5000);
  assert.deepEqual(hlc.update(ts(4000, 3)), ts(5000, 0));
});

Deno.test("HybridLogicalClock.update() refuses a remote too far ahead with HlcDriftError", () => {
  const clock = new ManualClock(10_000);
  const hlc = new HybridLogicalClock({ clock, driftMsMax: 100 });
  const before = hlc.now();
  assert.throws(
    () => hlc.update(ts(10_101, 0)),
    (e: unknown) =>
      e instanceof HlcDriftError && e.localMs === 10_000 && e.driftMsMax === 100 &&
      /101 ms ahead/.test(e.message),
  );
  // Nothing changed; exactly at the limit is accepted.
  assert.deepEqual(hlc.last(), before);
  assert.deepEqual(hlc.update(ts(10_100, 0)), ts(10_100, 1));
});

Deno.test("HybridLogicalClock.update() rejects a malformed remote with HlcError", () => {
  const hlc = new HybridLogicalClock({ clock: new ManualClock(1) });
  assert.throws(() => hlc.update(ts(-1, 0)), HlcError);
  assert.throws(() => hlc.update(ts(1, HLC_LOGICAL_MAX + 1)), HlcError);
  assert.throws(() => hlc.update(ts(1.5, 0)), HlcError);
});

Deno.test("HybridLogicalClock asserts on a clock returning nonsense", () => {
  const hlc = new HybridLogicalClock({ clock: { nowMs: () => Number.NaN } });
  assert.throws(() => hlc.now(), AssertionError);
});

Deno.test("HybridLogicalClock keeps causality across simulated nodes with skewed clocks", () => {
  const prng = new Prng(42);
  const clocks = [new ManualClock(1000), new ManualClock(1030), new ManualClock(990)];
  const nodes = clocks.map((clock) => new HybridLogicalClock({ clock, driftMsMax: 1000 }));
  const lastSeen = nodes.map(() => ts(0, 0));
  for (let step = 0; step < 5000; step++) {
    for (const c of clocks) if (prng.nextInt(3) === 0) c.advance(prng.nextInt(3));
    const from = prng.nextInt(3);
    const to = prng.nextInt(3);
    const sent = nodes[from]!.now();
    assert.ok(compareHlc(sent, lastSeen[from]!) > 0, "local monotonic");
    const received = nodes[to]!.update(sent);
    assert.ok(compareHlc(received, sent) > 0, "receive after send");
    assert.ok(compareHlc(received, lastSeen[to]!) > 0, "local monotonic on receive");
    lastSeen[from] = compareHlc(sent, lastSeen[from]!) > 0 ? sent : lastSeen[from]!;
    lastSeen[to] = received;
    const ahead = received.physicalMs - Math.max(...clocks.map((c) => c.nowMs()));
    assert.ok(ahead <= 1, `HLC stays within a tick of the fastest wall clock (${ahead})`);
  }
});

Deno.test("packHlc() round-trips and sorts like compareHlc", () => {
  const samples = [
    ts(0, 0),
    ts(0, 1),
    ts(1, 0),
    ts(1_700_000_000_000, 65535),
    ts(HLC_PHYSICAL_MS_MAX, HLC_LOGICAL_MAX),
  ];
  for (const a of samples) {
    assert.deepEqual(unpackHlc(packHlc(a)), a);
    for (const b of samples) {
      const packed = packHlc(a) < packHlc(b) ? -1 : packHlc(a) > packHlc(b) ? 1 : 0;
      assert.equal(packed, Math.sign(compareHlc(a, b)));
    }
  }
  assert.equal(packHlc(ts(HLC_PHYSICAL_MS_MAX, HLC_LOGICAL_MAX)), (1n << 64n) - 1n);
  assert.throws(() => packHlc(ts(HLC_PHYSICAL_MS_MAX + 1, 0)), AssertionError);
});

Deno.test("writeHlc() writes the packed value big-endian and readHlc() reads it back", () => {
  const bytes = new Uint8Array(10);
  const view = new DataView(bytes.buffer);
  const t = ts(0x0102_0304_0506, 0x0708);
  writeHlc(view, 1, t);
  assert.deepEqual([...bytes], [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]);
  assert.deepEqual(readHlc(view, 1), t);
  assert.equal(view.getBigUint64(1), packHlc(t));
});

Deno.test("SystemClock.nowMs() is close to Date.now()", () => {
  assert.ok(Math.abs(new SystemClock().nowMs() - Date.now()) < 1000);
});
