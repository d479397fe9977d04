// Shared start-up for role entries: read and validate the environment, configure logs,
// and turn a bad configuration into one line per variable and exit code 2.

import { type Config, CONFIG_VARIABLE_NAMES, type ConfigEnv, ConfigError } from "../base/mod.ts";
import { configureLogging } from "../obs/mod.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { ROLE_TABLE, roleConfig, type RoleName } from "./table.ts";

/** Where shims are installed next to compiled binaries (`KISEKI_FFI_DIR` overrides). */
export const INSTALLED_FFI_DIR = "/usr/local/lib/kiseki";

export const EXIT_USAGE = 2;

/** True inside a `deno compile`d binary, whose modules live in a virtual file system. */
export function isCompiled(): boolean {
  return import.meta.url.includes("/deno-compile-");
}

/**
 * Defaults of an installed binary (the deployment guide's paths) where a source checkout
 * uses directories under the current one. Compile bakes permissions for these.
 */
export const INSTALLED_DEFAULTS: Readonly<Record<RoleName, Readonly<Record<string, string>>>> = {
  server: { KISEKI_DATA_DIR: "/var/lib/kiseki" },
  keyserver: { KISEKI_DATA_DIR: "/var/lib/kiseki-keys" },
  "client-fuse": { KISEKI_CACHE_DIR: "/var/cache/kiseki" },
  control: { KISEKI_DATA_DIR: "/var/lib/kiseki-control" },
  admin: {},
  client: { KISEKI_CACHE_DIR: "/var/cache/kiseki" },
};

export function defaultFfiDir(): string {
  return isCompiled() ? INSTALLED_FFI_DIR : SOURCE_FFI_DIR;
}

/** Reads only Kiseki's own variables (the sandbox grants nothing else). */
export function readConfigEnv(role?: RoleName): ConfigEnv {
  const env: Record<string, string | undefined> = role && isCompiled()
    ? { ...INSTALLED_DEFAULTS[role] }
    : {};
  for (const name of CONFIG_VARIABLE_NAMES) env[name] = Deno.env.get(name) ?? env[name];
  return env;
}

/** Loads the role's configuration; on error prints each problem on one line and returns null. */
export function loadRoleConfig(role: RoleName): Config | null {
  try {
    const config = roleConfig(role, readConfigEnv(role), defaultFfiDir());
    configureLogging({ level: config.logLevel, format: config.logFormat });
    return config;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    for (const problem of e.problems) console.error(`${ROLE_TABLE[role].binary}: ${problem}`);
    return null;
  }
}

export const VERSION = "0.1.0";

/** The `--help` text and exit of a role that is planned but not built yet. */
export function notBuilt(role: RoleName, args: string[]): number {
  const spec = ROLE_TABLE[role];
  const wantsHelp = args.includes("--help") || args.includes("-h");
  const text = `${spec.binary}: ${spec.summary}\n` +
    `This role is not built yet in Kiseki ${VERSION}; it exits with status ${EXIT_USAGE}.`;
  if (wantsHelp) console.log(text);
  else console.error(text);
  return EXIT_USAGE;
}
