import assert from "node:assert/strict";
import {
  type ClusterDevice,
  ClusterPlacement,
  ClusterPlacementError,
  nodeLossesSurvivable,
  perNodeMaxFor,
  safeFragmentsFor,
} from "./cluster_placement.ts";

/** Deterministic chunk ids (xorshift), so the property tests are repeatable. */
function ids(count: number, seed: number): Uint8Array[] {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0);
  };
  return Array.from({ length: count }, () => {
    const id = new Uint8Array(32);
    const view = new DataView(id.buffer);
    for (let i = 0; i < 32; i += 4) view.setUint32(i, next());
    return id;
  });
}

/** `nodes` nodes of 1-2 devices of 2, 3 or 4 TiB (weights in TiB), fixed by the node number. */
function cluster(nodes: number): ClusterDevice[] {
  const devices: ClusterDevice[] = [];
  for (let node = 1; node <= nodes; node++) {
    const count = 1 + (node % 2);
    for (let d = 0; d < count; d++) {
      devices.push({ node, id: `dev${d}`, weight: [2, 3, 4][(node + d) % 3]! });
    }
  }
  return devices;
}

Deno.test("ClusterPlacement keeps every device of 100 mixed nodes within 5% of its fair share", () => {
  const devices = cluster(100);
  const placement = new ClusterPlacement(devices);
  const total = devices.reduce((n, d) => n + d.weight, 0);
  const counts = new Float64Array(devices.length);
  const fragments = 3;
  // Enough fragments that the smallest device's expected count is ~4 standard deviations
  // away from 5%: a deviation beyond it is the placement's bias, not chance.
  const smallest = Math.min(...devices.map((d) => d.weight));
  const chunks = Math.ceil((6400 * total) / smallest / fragments);
  for (const id of ids(chunks, 7)) {
    for (const d of placement.place(id, fragments, { perNodeMax: 1 })) counts[d!]++;
  }
  let worst = 0;
  devices.forEach((d, i) => {
    const fair = (chunks * fragments * d.weight) / total;
    worst = Math.max(worst, Math.abs(counts[i]! - fair) / fair);
  });
  assert.ok(worst < 0.05, `worst device is ${(worst * 100).toFixed(2)}% off its fair share`);
});

Deno.test("ClusterPlacement moves about 1/N of fragments when a node is added", () => {
  const devices = cluster(100);
  const before = new ClusterPlacement(devices);
  const added = [...devices, { node: 101, id: "dev0", weight: 2 }, {
    node: 101,
    id: "dev1",
    weight: 2,
  }];
  const after = new ClusterPlacement(added);
  const total = added.reduce((n, d) => n + d.weight, 0);
  const share = 4 / total;
  let moved = 0;
  let toNew = 0;
  let fragmentsTotal = 0;
  for (const id of ids(20_000, 11)) {
    const a = before.place(id, 6, { perNodeMax: 1 });
    const b = after.place(id, 6, { perNodeMax: 1 });
    for (let f = 0; f < 6; f++) {
      fragmentsTotal++;
      const da = devices[a[f]!]!;
      const db = added[b[f]!]!;
      if (da.node !== db.node || da.id !== db.id) {
        moved++;
        if (db.node === 101) toNew++;
      }
    }
  }
  const fraction = moved / fragmentsTotal;
  assert.ok(fraction > 0.7 * share, `moved ${fraction}, the new node's share is ${share}`);
  assert.ok(fraction < 1.3 * share, `moved ${fraction}, the new node's share is ${share}`);
  // Nearly every move is to the new node; the rest are fragments it displaced on the same
  // node (the per-node limit) that move once more.
  assert.ok(toNew / moved > 0.9, `only ${toNew} of ${moved} moves went to the new node`);
});

Deno.test("ClusterPlacement never puts two fragments on one device or more than perNodeMax on a node", () => {
  const placement = new ClusterPlacement(cluster(8));
  for (const id of ids(2000, 3)) {
    const chosen = placement.place(id, 6, { perNodeMax: 1 });
    assert.deepEqual(chosen.filter((d) => d === null).length, 0);
    assert.deepEqual(new Set(chosen).size, 6);
    assert.deepEqual(new Set(chosen.map((d) => placement.nodeOf(d!))).size, 6);
    const two = placement.place(id, 11, { perNodeMax: 2 });
    const perNode = new Map<number, number>();
    for (const d of two) {
      perNode.set(placement.nodeOf(d!), (perNode.get(placement.nodeOf(d!)) ?? 0) + 1);
    }
    assert.ok([...perNode.values()].every((n) => n <= 2));
    assert.deepEqual(new Set(two).size, 11);
  }
});

Deno.test("ClusterPlacement leaves a fragment unplaced rather than break the per-node limit", () => {
  const placement = new ClusterPlacement(cluster(3));
  const [id] = ids(1, 5);
  const down = (i: number) => placement.nodeOf(i) === 2;
  const chosen = placement.place(id!, 3, { perNodeMax: 1, exclude: down });
  assert.deepEqual(chosen.filter((d) => d === null).length, 1);
  assert.ok(chosen.every((d) => d === null || placement.nodeOf(d) !== 2));
});

Deno.test("ClusterPlacement sends a fragment of an excluded device to the next of its ranking", () => {
  const placement = new ClusterPlacement(cluster(10));
  for (const id of ids(200, 9)) {
    const normal = placement.place(id, 3, { perNodeMax: 1 });
    const lost = normal[1]!;
    const again = placement.place(id, 3, {
      perNodeMax: 1,
      exclude: (i) => placement.nodeOf(i) === placement.nodeOf(lost),
    });
    assert.deepEqual(again[0], normal[0]);
    assert.ok(again[1] !== null && placement.nodeOf(again[1]) !== placement.nodeOf(lost));
    const ranked = placement.rank(id, 1).filter((i) =>
      placement.nodeOf(i) !== placement.nodeOf(lost) &&
      placement.nodeOf(i) !== placement.nodeOf(normal[0]!)
    );
    // Fragment 2 may have taken the best remaining; fragment 1 takes the best it can.
    assert.ok(ranked.slice(0, 2).includes(again[1]!) || again[2] === ranked[0]);
  }
});

Deno.test("ClusterPlacement keeps fixed fragments where they are", () => {
  const placement = new ClusterPlacement(cluster(10));
  const [id] = ids(1, 13);
  const normal = placement.place(id!, 3, { perNodeMax: 1 });
  const other = placement.devices.findIndex((_, i) =>
    !normal.includes(i) && normal.every((d) => placement.nodeOf(d!) !== placement.nodeOf(i))
  );
  const chosen = placement.place(id!, 3, { perNodeMax: 1, fixed: new Map([[0, other]]) });
  assert.deepEqual(chosen[0], other);
});

Deno.test("ClusterPlacement rejects repeated devices and bad weights", () => {
  assert.throws(() => new ClusterPlacement([]), ClusterPlacementError);
  assert.throws(
    () => new ClusterPlacement([{ node: 1, id: "a", weight: 1 }, { node: 1, id: "a", weight: 1 }]),
    ClusterPlacementError,
  );
  assert.throws(
    () => new ClusterPlacement([{ node: 1, id: "a", weight: 0 }]),
    ClusterPlacementError,
  );
  // One id on two nodes is two devices.
  new ClusterPlacement([{ node: 1, id: "a", weight: 1 }, { node: 2, id: "a", weight: 1 }]);
});

Deno.test("perNodeMaxFor() and safeFragmentsFor() keep one node's loss survivable", () => {
  const ec42 = { kind: "ec", k: 4, m: 2 } as const;
  const ec83 = { kind: "ec", k: 8, m: 3 } as const;
  const copies3 = { kind: "copies", copies: 3 } as const;
  assert.deepEqual(perNodeMaxFor(ec42, 1), 6);
  assert.deepEqual(perNodeMaxFor(ec42, 6), 1);
  assert.deepEqual(perNodeMaxFor(ec42, 4), 2);
  assert.deepEqual(perNodeMaxFor(ec42, 2), 2); // 6 fragments do not fit: the pool cannot be written
  assert.deepEqual(perNodeMaxFor(ec83, 4), 3);
  assert.deepEqual(perNodeMaxFor(copies3, 3), 1);
  assert.deepEqual(perNodeMaxFor(copies3, 2), 2);
  assert.deepEqual(safeFragmentsFor(ec42), 5);
  assert.deepEqual(safeFragmentsFor(ec83), 9);
  assert.deepEqual(safeFragmentsFor(copies3), 2);
  assert.deepEqual(safeFragmentsFor({ kind: "copies", copies: 1 }), 1);
});

Deno.test("nodeLossesSurvivable() drops when a drain leaves too few nodes for the spread", () => {
  const copies3 = { kind: "copies", copies: 3 } as const;
  assert.equal(nodeLossesSurvivable(copies3, 4), 2);
  assert.equal(nodeLossesSurvivable(copies3, 3), 2);
  assert.equal(nodeLossesSurvivable(copies3, 2), 1);
  assert.equal(nodeLossesSurvivable(copies3, 1), 0);
  const ec42 = { kind: "ec", k: 4, m: 2 } as const;
  assert.equal(nodeLossesSurvivable(ec42, 6), 2);
  assert.equal(nodeLossesSurvivable(ec42, 5), 1);
  assert.equal(nodeLossesSurvivable(ec42, 3), 1);
});
