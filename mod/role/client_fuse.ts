// Entry of kiseki-client-fuse. Planned; until it is built it explains itself and exits 2.

import { notBuilt } from "./_run.ts";

export function main(args: string[]): Promise<number> {
  return Promise.resolve(notBuilt("client-fuse", args));
}

if (import.meta.main) Deno.exit(await main(Deno.args));
