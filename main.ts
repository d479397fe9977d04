// Development entry: `deno run main.ts <role> [args]` dispatches to the role's entry module,
// the same module `deno compile` builds that role's binary from.

import { isRoleName, ROLE_NAMES, ROLE_TABLE } from "./mod/role/table.ts";

const USAGE = `kiseki: distributed storage for HPC and AI clusters

Usage: kiseki <role> [args]      (each role: kiseki <role> --help)

Roles:
${
  ROLE_NAMES.map((r) =>
    `  ${r.padEnd(12)} ${ROLE_TABLE[r].summary}${ROLE_TABLE[r].built ? "" : " (not built yet)"}`
  ).join("\n")
}
`;

export async function main(args: string[]): Promise<number> {
  const [role, ...rest] = args;
  if (role === undefined || role === "--help" || role === "-h" || role === "help") {
    console.log(USAGE);
    return role === undefined ? 2 : 0;
  }
  if (!isRoleName(role)) {
    console.error(`kiseki: unknown role '${role}' (roles: ${ROLE_NAMES.join(", ")})`);
    return 2;
  }
  const entry = new URL(`./${ROLE_TABLE[role].entry}`, import.meta.url).href;
  const module = await import(entry) as { main(args: string[]): Promise<number> };
  return await module.main(rest);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
