// Entry of kiseki-control. Planned; until it is built it explains itself and exits 2.

import { notBuilt } from "./_run.ts";

export function main(args: string[]): Promise<number> {
  return Promise.resolve(notBuilt("control", args));
}

if (import.meta.main) Deno.exit(await main(Deno.args));
