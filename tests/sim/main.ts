// The deterministic simulator's command line:
//
//   deno run -A tests/sim/main.ts --seeds N [--nodes 3|5] [--first-seed S] [--ops M]
//   deno run -A tests/sim/main.ts --seed S [--nodes 3|5] [--ops M] [--verbose]
//
// Prints one line per failed check (with the seed that reproduces it) and a summary; exits
// non-zero if any seed failed. Everything in a run derives from its seed.

import type { SimBugs } from "./cluster.ts";
import { describeOperation } from "./linearizability.ts";
import {
  addStats,
  emptyTotals,
  failureLines,
  formatTotals,
  reproduceCommand,
  runSeed,
  type SeedOptions,
  WALL_CLOCK_CAP_MS_DEFAULT,
} from "./run.ts";

interface Args {
  seeds: number;
  firstSeed: number;
  seed: number | null;
  nodes: number;
  ops: number;
  chaosMs: number | undefined;
  verbose: boolean;
  wallClockCapMs: number;
  bugs: Partial<SimBugs>;
}

const USAGE = "usage: main.ts [--seeds N] [--first-seed S] [--seed S] [--nodes 3|5] " +
  "[--ops M] [--chaos-ms T] [--wall-cap-ms T] [--bug stale-reads|lose-persisted|forget-votes|no-snapshot-reports] [--verbose]";

function parseArgs(argv: string[]): Args {
  const args: Args = {
    seeds: 100,
    firstSeed: 1,
    seed: null,
    nodes: 3,
    ops: 200,
    chaosMs: undefined,
    verbose: false,
    wallClockCapMs: WALL_CLOCK_CAP_MS_DEFAULT,
    bugs: {},
  };
  const int = (flag: string, value: string | undefined, min: number): number => {
    const n = Number(value);
    if (value === undefined || !Number.isSafeInteger(n) || n < min) {
      throw new Error(`${flag} needs an integer >= ${min}, got ${value}\n${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case "--seeds":
        args.seeds = int(flag, argv[++i], 1);
        break;
      case "--first-seed":
        args.firstSeed = int(flag, argv[++i], 0);
        break;
      case "--seed":
        args.seed = int(flag, argv[++i], 0);
        break;
      case "--nodes":
        args.nodes = int(flag, argv[++i], 1);
        if (args.nodes !== 3 && args.nodes !== 5) {
          throw new Error(`--nodes must be 3 or 5\n${USAGE}`);
        }
        break;
      case "--ops":
        args.ops = int(flag, argv[++i], 1);
        break;
      case "--chaos-ms":
        args.chaosMs = int(flag, argv[++i], 0);
        break;
      case "--wall-cap-ms":
        args.wallClockCapMs = int(flag, argv[++i], 1);
        break;
      case "--bug": {
        // Deliberately break the system, to watch the simulator catch it.
        const name = argv[++i];
        if (name === "stale-reads") args.bugs.staleReads = true;
        else if (name === "lose-persisted") args.bugs.loseLastPersistedBatch = true;
        else if (name === "forget-votes") args.bugs.forgetVotes = true;
        else if (name === "no-snapshot-reports") args.bugs.noSnapshotReports = true;
        else {throw new Error(
            `--bug must be stale-reads, lose-persisted, forget-votes or no-snapshot-reports\n${USAGE}`,
          );}
        break;
      }
      case "--verbose":
        args.verbose = true;
        break;
      case "--help":
        console.log(USAGE);
        Deno.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${flag}\n${USAGE}`);
    }
  }
  return args;
}

function main(): number {
  const args = parseArgs(Deno.args);
  const seeds = args.seed !== null
    ? [args.seed]
    : Array.from({ length: args.seeds }, (_, i) => args.firstSeed + i);
  const totals = emptyTotals();
  let failed = 0;
  let unknown = 0;
  const startedMs = performance.now();
  for (const seed of seeds) {
    const options: SeedOptions = {
      seed,
      nodes: args.nodes,
      opsMax: args.ops,
      chaosMs: args.chaosMs,
      wallClockCapMs: args.wallClockCapMs,
      bugs: args.bugs,
      trace: args.verbose ? (line) => console.log(line) : undefined,
    };
    const seedStartMs = performance.now();
    const result = runSeed(options);
    addStats(totals, result.stats);
    if (args.verbose) {
      console.log(`scenario ${JSON.stringify(result.scenario)}`);
      console.log(`stats ${JSON.stringify(result.stats)}`);
      result.history.forEach((op, i) => console.log(`  ${describeOperation(op, i)}`));
      console.log(
        `seed ${seed}: trace ${result.traceHash}, linearizability ${result.linearizability}, ` +
          `${(performance.now() - seedStartMs).toFixed(0)} ms`,
      );
    }
    if (result.linearizability === "unknown") {
      unknown++;
      console.log(
        `UNKNOWN seed=${seed} nodes=${args.nodes}: linearizability search budget exhausted`,
      );
    }
    if (result.failures.length > 0) {
      failed++;
      for (const line of failureLines(result, options)) console.log(line);
      console.log(`  reproduce: ${reproduceCommand(options)}`);
    }
  }
  const wallS = ((performance.now() - startedMs) / 1000).toFixed(1);
  console.log(
    `${seeds.length} seeds, ${args.nodes} nodes, ${args.ops} ops: ${failed} failed, ` +
      `${unknown} unknown, ${wallS}s`,
  );
  console.log(`  ${formatTotals(totals)}`);
  return failed > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(main());
