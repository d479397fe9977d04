// Entry of kiseki-keyserver. Planned; until it is built it explains itself and exits 2.

import { notBuilt } from "./_run.ts";

export function main(args: string[]): Promise<number> {
  return Promise.resolve(notBuilt("keyserver", args));
}

if (import.meta.main) Deno.exit(await main(Deno.args));
