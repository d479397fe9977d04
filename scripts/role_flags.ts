// Prints the Deno permission flags of a role for the current environment, one line,
// for scripts/kiseki to `exec deno run <flags> <entry>`. A bad configuration is reported
// here, one line per variable, before any role starts.

import { ConfigError } from "../mod/base/mod.ts";
import { PoolSpecError } from "../mod/chunk/pool.ts";
import {
  isRoleName,
  readConfigEnv,
  ROLE_NAMES,
  roleConfig,
  roleFlags,
  SOURCE_NODE_MODULES_DIR,
  SOURCE_PROTO_DIR,
} from "../mod/role/mod.ts";
import { SOURCE_FFI_DIR } from "../ffi/loader.ts";

const role = Deno.args[0] ?? "";
if (!isRoleName(role)) {
  console.error(`kiseki: unknown role '${role}' (roles: ${ROLE_NAMES.join(", ")})`);
  Deno.exit(2);
}
try {
  const config = roleConfig(role, readConfigEnv(), SOURCE_FFI_DIR);
  console.log(
    roleFlags(role, config, {
      cwd: Deno.cwd(),
      ffiDir: config.ffiDir,
      nodeModulesDir: SOURCE_NODE_MODULES_DIR,
      protoDir: SOURCE_PROTO_DIR,
    }).join(" "),
  );
} catch (e) {
  if (e instanceof PoolSpecError) {
    console.error(`kiseki-${role}: ${e.message}`);
    Deno.exit(2);
  }
  if (!(e instanceof ConfigError)) throw e;
  for (const p of e.problems) console.error(`kiseki-${role}: ${p}`);
  Deno.exit(2);
}
