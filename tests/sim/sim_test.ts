// The simulator in CI: many seeds in quick mode on 3 and 5 nodes, proof that it fails when
// safety is broken on purpose, and proof that a seed replays exactly.

import assert from "node:assert/strict";
import type { SimResult } from "./cluster.ts";
import {
  addStats,
  emptyTotals,
  failureLines,
  formatTotals,
  reproduceCommand,
  runSeed,
  type SeedOptions,
  type StatsTotals,
} from "./run.ts";

/** Quick mode: fewer client ops per seed than main.ts's default, to keep CI in budget. */
const QUICK_OPS = 100;
const QUICK_SEEDS = 200;
/** Generous: a quick seed takes a fraction of a second; this only stops a hang. */
const QUICK_WALL_CLOCK_CAP_MS = 20_000;

function runQuick(nodes: number, seeds: number): { failures: string[]; totals: StatsTotals } {
  const failures: string[] = [];
  const totals = emptyTotals();
  for (let seed = 1; seed <= seeds; seed++) {
    const options: SeedOptions = {
      seed,
      nodes,
      opsMax: QUICK_OPS,
      wallClockCapMs: QUICK_WALL_CLOCK_CAP_MS,
    };
    const result = runSeed(options);
    addStats(totals, result.stats);
    if (result.failures.length > 0) {
      failures.push(...failureLines(result, options), `  reproduce: ${reproduceCommand(options)}`);
    }
  }
  return { failures, totals };
}

/** The run must actually have exercised the faults it claims to test. */
function assertCoverage(totals: StatsTotals, seeds: number): void {
  const summary = formatTotals(totals);
  assert.ok(totals.crashes > seeds / 4, `too few crashes: ${summary}`);
  assert.ok(totals.partitions > seeds / 4, `too few partitions: ${summary}`);
  assert.ok(totals.tornWrites > 0, `no torn writes: ${summary}`);
  assert.ok(totals.persistFailures > 0, `no persist failures: ${summary}`);
  assert.ok(totals.snapshotsInstalled > seeds / 10, `too few snapshot installs: ${summary}`);
  assert.ok(totals.leadersElected > seeds * 2, `too few elections: ${summary}`);
  assert.ok(totals.pauses > seeds / 4, `too few pauses: ${summary}`);
  assert.ok(totals.transfers > 0, `no leadership transfers: ${summary}`);
  assert.ok(totals.membershipChanges > seeds / 4, `too few membership changes: ${summary}`);
  assert.ok(totals.opsOk > seeds * QUICK_OPS / 2, `too few completed ops: ${summary}`);
  assert.ok(totals.opsPending > 0, `no pending ops: ${summary}`);
}

for (const nodes of [3, 5]) {
  Deno.test(`simulation: ${QUICK_SEEDS} seeds on ${nodes} nodes keep every invariant`, () => {
    const { failures, totals } = runQuick(nodes, QUICK_SEEDS);
    assert.deepEqual(failures, [], failures.join("\n"));
    assertCoverage(totals, QUICK_SEEDS);
    console.log(`${nodes} nodes: ${formatTotals(totals)}`);
  });
}

function firstFailing(
  options: Omit<SeedOptions, "seed">,
  seedsMax: number,
): SimResult | null {
  for (let seed = 1; seed <= seedsMax; seed++) {
    const result = runSeed({ ...options, seed });
    if (result.failures.length > 0) return result;
  }
  return null;
}

Deno.test("simulation catches stale reads served without a read index", () => {
  const result = firstFailing({ nodes: 3, opsMax: QUICK_OPS, bugs: { staleReads: true } }, 50);
  assert.ok(result !== null, "no seed in 50 caught reads served from a node's local state");
  assert.equal(result.failures[0].check, "linearizability");
});

Deno.test("simulation catches a disk that loses acknowledged writes", () => {
  const result = firstFailing(
    { nodes: 3, opsMax: QUICK_OPS, bugs: { loseLastPersistedBatch: true } },
    100,
  );
  assert.ok(result !== null, "no seed in 100 caught a disk that forgets persisted writes");
});

Deno.test("simulation catches a host that forgets its votes", () => {
  // Rarer: a voter must crash right after voting and hear a second candidate of the same
  // term once back; about one seed in two hundred gets there.
  const result = firstFailing({ nodes: 3, opsMax: QUICK_OPS, bugs: { forgetVotes: true } }, 1500);
  assert.ok(result !== null, "no seed in 1500 caught a double vote");
  assert.equal(result.failures[0].check, "election_safety");
});

Deno.test("simulation catches a host that never reports snapshot status", () => {
  // The leader keeps a follower in snapshot state until told the snapshot's fate; if the
  // snapshot is lost and nobody says so, that follower never catches up: a liveness failure.
  const result = firstFailing(
    { nodes: 3, opsMax: QUICK_OPS, bugs: { noSnapshotReports: true } },
    300,
  );
  assert.ok(result !== null, "no seed in 300 caught a follower stalled by a lost snapshot");
  assert.equal(result.failures[0].check, "liveness");
});

Deno.test("simulation replays a seed exactly", () => {
  const options = { nodes: 5, opsMax: QUICK_OPS };
  const a = runSeed({ ...options, seed: 7 });
  const b = runSeed({ ...options, seed: 7 });
  const c = runSeed({ ...options, seed: 8 });
  assert.equal(a.traceHash, b.traceHash);
  assert.deepEqual(a.history, b.history);
  assert.deepEqual(a.stats, b.stats);
  assert.deepEqual(a.failures, b.failures);
  assert.notEqual(a.traceHash, c.traceHash);
  assert.notDeepEqual(a.history, c.history);
});
