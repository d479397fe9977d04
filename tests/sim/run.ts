// Wires the simulator to the real Raft core and formats results, for main.ts and sim_test.ts.

import { createRaftNode } from "../../mod/raft/mod.ts";
import { runSimulation, type SimBugs, type SimResult, type SimStats } from "./cluster.ts";

export interface SeedOptions {
  seed: number;
  nodes: number;
  opsMax: number;
  /** Virtual length of the fault phase; drawn from the seed when absent. */
  chaosMs?: number;
  bugs?: Partial<SimBugs>;
  /** Real-time cap per seed; a seed past it fails as "wall_clock_cap". */
  wallClockCapMs?: number;
  trace?: (line: string) => void;
}

export const WALL_CLOCK_CAP_MS_DEFAULT = 30_000;

export function runSeed(options: SeedOptions): SimResult {
  return runSimulation({
    seed: options.seed,
    nodeCount: options.nodes,
    opsMax: options.opsMax,
    chaosMs: options.chaosMs,
    createNode: createRaftNode,
    bugs: options.bugs,
    wallClock: {
      nowMs: () => performance.now(),
      capMs: options.wallClockCapMs ?? WALL_CLOCK_CAP_MS_DEFAULT,
    },
    trace: options.trace,
  });
}

/** The command that replays one seed alone. */
export function reproduceCommand(options: SeedOptions): string {
  const chaos = options.chaosMs === undefined ? "" : ` --chaos-ms ${options.chaosMs}`;
  const bugs = (options.bugs?.staleReads ? " --bug stale-reads" : "") +
    (options.bugs?.loseLastPersistedBatch ? " --bug lose-persisted" : "") +
    (options.bugs?.forgetVotes ? " --bug forget-votes" : "") +
    (options.bugs?.noSnapshotReports ? " --bug no-snapshot-reports" : "");
  return `deno run -A tests/sim/main.ts --seed ${options.seed} --nodes ${options.nodes} ` +
    `--ops ${options.opsMax}${chaos}${bugs} --verbose`;
}

/** One line per failure: the seed, the failing check, and its first line of detail. */
export function failureLines(result: SimResult, options: SeedOptions): string[] {
  return result.failures.map((f) => {
    const detail = f.detail.split("\n").join(" / ");
    return `FAIL seed=${result.seed} nodes=${options.nodes} check=${f.check} at=${f.atMs}ms: ${detail}`;
  });
}

export type StatsTotals = SimStats & { seeds: number; maxRecoveryMs: number };

export function emptyTotals(): StatsTotals {
  return {
    seeds: 0,
    virtualMs: 0,
    events: 0,
    messagesSent: 0,
    messagesDropped: 0,
    partitions: 0,
    crashes: 0,
    pauses: 0,
    transfers: 0,
    campaigns: 0,
    membershipChanges: 0,
    persistFailures: 0,
    tornWrites: 0,
    leadersElected: 0,
    maxTerm: 0,
    snapshotsCreated: 0,
    snapshotsInstalled: 0,
    entriesApplied: 0,
    opsOk: 0,
    opsPending: 0,
    recoveryMs: 0,
    maxRecoveryMs: 0,
  };
}

export function addStats(totals: StatsTotals, stats: SimStats): void {
  totals.seeds++;
  for (const key of Object.keys(stats) as (keyof SimStats)[]) {
    if (key === "maxTerm") totals.maxTerm = Math.max(totals.maxTerm, stats.maxTerm);
    else if (key === "recoveryMs") {
      if (stats.recoveryMs > 0) totals.recoveryMs += stats.recoveryMs;
      totals.maxRecoveryMs = Math.max(totals.maxRecoveryMs, stats.recoveryMs);
    } else totals[key] += stats[key];
  }
}

export function formatTotals(t: StatsTotals): string {
  return [
    `virtual ${(t.virtualMs / 1000).toFixed(0)}s`,
    `events ${t.events}`,
    `messages ${t.messagesSent} (dropped ${t.messagesDropped})`,
    `partitions ${t.partitions}`,
    `crashes ${t.crashes} (persist failures ${t.persistFailures}, torn writes ${t.tornWrites})`,
    `pauses ${t.pauses}`,
    `forced campaigns ${t.campaigns}`,
    `leadership transfers ${t.transfers}`,
    `membership changes proposed ${t.membershipChanges}`,
    `leaders ${t.leadersElected} (max term ${t.maxTerm})`,
    `snapshots ${t.snapshotsCreated} created, ${t.snapshotsInstalled} installed`,
    `entries applied ${t.entriesApplied}`,
    `ops ${t.opsOk} ok, ${t.opsPending} pending`,
    `recovery mean ${
      t.seeds > 0 ? Math.round(t.recoveryMs / t.seeds) : 0
    }ms max ${t.maxRecoveryMs}ms`,
  ].join("; ");
}
