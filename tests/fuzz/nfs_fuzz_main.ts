// `deno task fuzz:nfs [--seed N] [--inputs N]` (default 1,000,000 inputs): the bad-input
// campaign of nfs_fuzz.ts; exits 1 on any server fault, a hang, or a gateway that stopped
// serving normal calls. The seed is printed first: the same seed replays the same inputs.

import { judgeNfsFuzz, runNfsFuzz } from "./nfs_fuzz.ts";

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(Deno.args[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} needs a whole number`);
  return v;
}

if (import.meta.main) {
  const seed = flag("seed", Math.floor(Math.random() * 0x7fff_ffff));
  const inputs = flag("inputs", 1_000_000);
  console.log(`fuzz:nfs seed ${seed} (replay: deno task fuzz:nfs --seed ${seed})`);
  const report = await runNfsFuzz({ seed, inputs, log: console.log });
  const { ok, text } = judgeNfsFuzz(report);
  console.log(text);
  Deno.exit(ok ? 0 : 1);
}
