// Mutation check of the simulator's power: copies the Raft core to a temporary directory,
// plants one known bug (a mutant), and counts how many seeds catch it. A simulator that
// passes the real core but misses these mutants is too gentle.
//
//   deno run -A tests/sim/mutation.ts [--seeds N] [--nodes 3|5] [MUTANT ...]
//
// The mutants patch source text; when the core changes, a pattern may stop matching and the
// run says so (update the pattern, not the core).

import { runSimulation } from "./cluster.ts";

interface Mutant {
  file: string;
  from: string;
  to: string;
  /** What a correct core must do that the mutant does not. */
  breaks: string;
}

export const MUTANTS: Record<string, Mutant> = {
  quorum_minus_one: {
    file: "quorum.ts",
    from: "return Math.floor(voterCount / 2) + 1;",
    to: "return Math.max(1, Math.floor(voterCount / 2));",
    breaks: "a quorum is a strict majority",
  },
  vote_ignores_log: {
    file: "raft_log.ts",
    from: "return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());",
    to: "return true;",
    breaks: "votes go only to candidates with an up-to-date log (§5.4.1)",
  },
  vote_twice: {
    file: "raft.ts",
    from: "const canVote = this.vote === m.from ||",
    to: "const canVote = true ||",
    breaks: "one vote per term",
  },
  commit_prior_term: {
    file: "raft_log.ts",
    from: "if (index > this.committed && this.termOrZero(index) === term) {",
    to: "if (index > this.committed && this.termOrZero(index) > 0) {",
    breaks: "only current-term entries commit by counting replicas (figure 8)",
  },
  read_index_no_quorum: {
    file: "raft.ts",
    from: "if (this.tracker.isSingleton() && this.tracker.voters.has(this.id)) {",
    to: "if (true) {",
    breaks: "a read index waits for a quorum to confirm leadership",
  },
  read_index_before_term_commit: {
    file: "raft.ts",
    from: "return this.raftLog.termOrZero(this.raftLog.committed) === this.term;",
    to: "return true;",
    breaks: "a new leader serves reads only after committing an entry of its term",
  },
};

async function buildMutant(name: string, mutant: Mutant, dir: string): Promise<string> {
  const core = new URL("../../mod/raft/", import.meta.url);
  const base = new URL("../../mod/base/mod.ts", import.meta.url).href;
  const types = new URL("types.ts", core).href;
  const out = `${dir}/${name}`;
  await Deno.mkdir(out, { recursive: true });
  let patched = false;
  for await (const f of Deno.readDir(core)) {
    if (!f.isFile || !f.name.endsWith(".ts") || f.name.endsWith("_test.ts")) continue;
    if (f.name === "mod.ts" || f.name === "host.ts") continue;
    // Shared types stay the real ones, so errors thrown by the mutant are the host's classes.
    let text = (await Deno.readTextFile(new URL(f.name, core)))
      .replaceAll(`"../base/mod.ts"`, JSON.stringify(base))
      .replaceAll(`"./types.ts"`, JSON.stringify(types));
    if (f.name === mutant.file) {
      if (!text.includes(mutant.from)) {
        throw new Error(
          `mutant ${name}: pattern no longer in mod/raft/${mutant.file}: ${mutant.from}`,
        );
      }
      text = text.replace(mutant.from, mutant.to);
      patched = true;
    }
    await Deno.writeTextFile(`${out}/${f.name}`, text);
  }
  if (!patched) throw new Error(`mutant ${name}: mod/raft/${mutant.file} not found`);
  return `${out}/raw_node.ts`;
}

async function main(): Promise<void> {
  let seeds = 300;
  const nodeCounts: number[] = [];
  const names: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    const a = Deno.args[i];
    if (a === "--seeds") seeds = Number(Deno.args[++i]);
    else if (a === "--nodes") nodeCounts.push(Number(Deno.args[++i]));
    else if (a in MUTANTS) names.push(a);
    else throw new Error(`unknown argument ${a}; mutants: ${Object.keys(MUTANTS).join(", ")}`);
  }
  if (nodeCounts.length === 0) nodeCounts.push(3, 5);
  const dir = await Deno.makeTempDir({ prefix: "kiseki-mutants-" });
  try {
    for (const name of names.length > 0 ? names : Object.keys(MUTANTS)) {
      const mutant = MUTANTS[name];
      const { createRaftNode } = await import(`file://${await buildMutant(name, mutant, dir)}`);
      for (const nodeCount of nodeCounts) {
        const checks = new Map<string, number>();
        let caught = 0;
        let first = -1;
        for (let seed = 1; seed <= seeds; seed++) {
          const result = runSimulation({
            seed,
            nodeCount,
            opsMax: 100,
            createNode: createRaftNode,
          });
          if (result.failures.length === 0) continue;
          caught++;
          if (first < 0) first = seed;
          const check = result.failures[0].check;
          checks.set(check, (checks.get(check) ?? 0) + 1);
        }
        const by = [...checks].map(([c, n]) => `${c} ${n}`).join(", ");
        console.log(
          `${name} (${mutant.breaks}), ${nodeCount} nodes: caught by ${caught}/${seeds} seeds` +
            (caught > 0 ? `, first ${first}; ${by}` : ""),
        );
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
