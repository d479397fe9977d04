import assert from "node:assert/strict";
import { Prng } from "../../mod/base/mod.ts";
import { SimClock } from "./clock.ts";
import { CALM_NETWORK, type NetworkOptions, SimNetwork } from "./network.ts";

interface Delivery {
  atMs: number;
  from: number;
  to: number;
  n: number;
}

function setup(seed: number, options: Partial<NetworkOptions>) {
  const clock = new SimClock();
  const delivered: Delivery[] = [];
  const dropped: string[] = [];
  const events: string[] = [];
  const net = new SimNetwork<number>({
    clock,
    prng: new Prng(seed),
    nodeIds: [1, 2, 3],
    options: {
      ...CALM_NETWORK,
      latencyTailMaxMs: options.latencyMaxMs ?? CALM_NETWORK.latencyMaxMs,
      ...options,
    },
    deliver: (n, from, to) => delivered.push({ atMs: clock.nowMs, from, to, n }),
    onDrop: (_n, _from, _to, reason) => dropped.push(reason),
    onEvent: (line) => events.push(line),
  });
  const drain = () => {
    while (clock.runNext()) { /* run everything queued */ }
  };
  return { clock, net, delivered, dropped, events, drain };
}

Deno.test("SimNetwork delivers within the latency range and in order without reordering", () => {
  const { net, delivered, drain } = setup(1, { latencyMinMs: 2, latencyMaxMs: 9 });
  for (let i = 0; i < 500; i++) net.send(1, 2, i);
  drain();
  assert.equal(delivered.length, 500);
  assert.deepEqual(delivered.map((d) => d.n), [...Array(500).keys()]);
  for (const d of delivered) assert.ok(d.atMs >= 2 && d.atMs <= 9);
});

Deno.test("SimNetwork reorders, drops and duplicates when told to", () => {
  const { net, delivered, dropped, drain } = setup(2, {
    latencyMinMs: 1,
    latencyMaxMs: 50,
    reorder: true,
    dropProbability: 0.2,
    duplicateProbability: 0.1,
  });
  for (let i = 0; i < 2000; i++) net.send(1, 2, i);
  drain();
  const order = delivered.map((d) => d.n);
  assert.ok(order.some((n, i) => i > 0 && n < order[i - 1]), "some message overtook another");
  assert.ok(dropped.length > 300 && dropped.length < 500, `dropped ${dropped.length}`);
  assert.ok(net.stats.duplicated > 100 && net.stats.duplicated < 250);
  assert.equal(delivered.length, 2000 - dropped.length + net.stats.duplicated);
});

Deno.test("SimNetwork latency tail stays within its bound", () => {
  const { net, delivered, drain } = setup(3, {
    latencyMaxMs: 5,
    latencyTailProbability: 0.5,
    latencyTailMaxMs: 100,
    reorder: true,
  });
  for (let i = 0; i < 1000; i++) net.send(2, 3, i);
  drain();
  const slow = delivered.filter((d) => d.atMs > 5);
  assert.ok(slow.length > 400 && slow.length < 600);
  assert.ok(delivered.every((d) => d.atMs <= 100));
});

Deno.test("SimNetwork partitions block links until healed, one way too", () => {
  const { net, delivered, dropped, drain } = setup(4, {});
  net.partition("one_way_out");
  // Exactly one node is muted: it can hear but not be heard.
  const muted = [1, 2, 3].filter((x) => !net.linkUp(x, 1 + (x % 3)) && net.linkUp(1 + (x % 3), x));
  assert.equal(muted.length, 1);
  const victim = muted[0];
  const other = victim === 1 ? 2 : 1;
  net.send(victim, other, 1);
  net.send(other, victim, 2);
  drain();
  assert.deepEqual(delivered.map((d) => d.n), [2]);
  assert.deepEqual(dropped, ["partition"]);
  net.heal();
  net.send(victim, other, 3);
  drain();
  assert.deepEqual(delivered.map((d) => d.n), [2, 3]);
});

Deno.test("SimNetwork drops a message in flight when a partition starts", () => {
  const { net, delivered, dropped, drain, clock } = setup(5, {
    latencyMinMs: 10,
    latencyMaxMs: 10,
  });
  const pairs = [[1, 2], [2, 1], [1, 3], [3, 1], [2, 3], [3, 2]];
  pairs.forEach(([from, to], i) => net.send(from, to, i));
  clock.after(5, () => net.partition("isolate"));
  drain();
  const up = pairs.filter(([from, to]) => net.linkUp(from, to));
  assert.equal(up.length, 2, "an isolated node leaves one pair, both ways");
  assert.deepEqual(delivered.map((d) => [d.from, d.to]), up);
  assert.deepEqual(dropped, ["partition", "partition", "partition", "partition"]);
});

Deno.test("SimNetwork nemesis partitions heal on their own", () => {
  const { net, clock, events } = setup(6, {
    partitionProbability: 1,
    partitionDurationMinMs: 100,
    partitionDurationMaxMs: 200,
  });
  net.nemesisStep();
  assert.ok(net.partitioned);
  clock.after(250, () => {});
  while (clock.runNext()) { /* until the heal */ }
  assert.ok(!net.partitioned);
  assert.equal(events.length, 2);
  assert.match(events[1], /heal/);
});

Deno.test("SimNetwork is reproducible from its seed", () => {
  const run = (seed: number) => {
    const { net, delivered, drain } = setup(seed, {
      latencyMaxMs: 30,
      reorder: true,
      dropProbability: 0.1,
      duplicateProbability: 0.1,
    });
    for (let i = 0; i < 200; i++) net.send(1 + (i % 3), 1 + ((i + 1) % 3), i);
    drain();
    return delivered;
  };
  assert.deepEqual(run(7), run(7));
  assert.notDeepEqual(run(7), run(8));
});
