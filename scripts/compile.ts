// `scripts/kiseki compile [role...] [--dry-run] [--out DIR]`: one `deno compile`d binary per
// role into dist/, each built from its own entry with the role table's permission flags
// baked in. The flags are computed from the environment at build time with the installed
// defaults (data in /var/lib/kiseki*, shims in /usr/local/lib/kiseki), so build with the
// site's KISEKI_* variables set when they differ from the deployment guide's.
//
// `deno compile` needs the Deno runtime (denort) matching this Deno. It downloads it unless
// DENORT_BIN names a local copy; on air-gapped build hosts set DENORT_BIN.

import { ConfigError } from "../mod/base/mod.ts";
import {
  INSTALLED_DEFAULTS,
  INSTALLED_FFI_DIR,
  INSTALLED_NODE_MODULES_DIR,
  isRoleName,
  ROLE_NAMES,
  ROLE_TABLE,
  roleConfig,
  roleFlags,
  type RoleName,
} from "../mod/role/mod.ts";

const root = new URL("..", import.meta.url).pathname;

interface Options {
  roles: RoleName[];
  dryRun: boolean;
  outDir: string;
}

function parseArgs(args: string[]): Options {
  const roles: RoleName[] = [];
  let dryRun = false;
  let outDir = `${root}dist`;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--dry-run") dryRun = true;
    else if (a === "--out" && i + 1 < args.length) outDir = args[++i]!;
    else if (isRoleName(a)) roles.push(a);
    else {
      console.error(`compile: unknown argument '${a}' (roles: ${ROLE_NAMES.join(", ")})`);
      Deno.exit(2);
    }
  }
  return {
    roles: roles.length > 0 ? roles : ROLE_NAMES.filter((r) => ROLE_TABLE[r].built),
    dryRun,
    outDir,
  };
}

/**
 * Test folders of npm packages are never loaded at run time; leaving them out keeps binaries
 * small and avoids a `deno compile` stack overflow on some packages' fixtures (bintrees).
 */
export function npmTestDirs(): string[] {
  const dirs: string[] = [];
  const store = `${root}node_modules/.deno`;
  const visit = (pkgDir: string): void => {
    for (const name of ["test", "tests", "__tests__"]) {
      try {
        if (Deno.statSync(`${pkgDir}/${name}`).isDirectory) dirs.push(`${pkgDir}/${name}`);
      } catch { /* absent */ }
    }
  };
  try {
    for (const entry of Deno.readDirSync(store)) {
      const modules = `${store}/${entry.name}/node_modules`;
      try {
        for (const pkg of Deno.readDirSync(modules)) {
          if (pkg.name.startsWith("@")) {
            for (const scoped of Deno.readDirSync(`${modules}/${pkg.name}`)) {
              visit(`${modules}/${pkg.name}/${scoped.name}`);
            }
          } else if (pkg.isDirectory) visit(`${modules}/${pkg.name}`);
        }
      } catch { /* not a package folder */ }
    }
  } catch { /* no node_modules yet */ }
  return dirs.sort();
}

/** The exact `deno compile` arguments for a role. */
export function compileArgs(
  role: RoleName,
  env: Record<string, string | undefined>,
  outDir: string,
): string[] {
  const spec = ROLE_TABLE[role];
  const config = roleConfig(role, { ...INSTALLED_DEFAULTS[role], ...env }, INSTALLED_FFI_DIR);
  const flags = roleFlags(role, config, {
    cwd: "/",
    ffiDir: config.ffiDir,
    nodeModulesDir: INSTALLED_NODE_MODULES_DIR,
    protoDir: "/usr/local/lib/kiseki/proto",
  });
  return [
    "compile",
    "--quiet",
    ...flags,
    ...npmTestDirs().flatMap((d) => ["--exclude", d]),
    // gRPC loads its service definitions at run time.
    ...(spec.name === "server" ? ["--include", `${root}proto`] : []),
    "--output",
    `${outDir}/${spec.binary}`,
    `${root}${spec.entry}`,
  ];
}

if (import.meta.main) {
  const options = parseArgs(Deno.args);
  const env = Deno.env.toObject();
  const denort = env["DENORT_BIN"];
  if (denort) {
    try {
      Deno.statSync(denort);
    } catch {
      console.error(
        `compile: DENORT_BIN=${denort} does not exist; point it at the denort binary of this Deno version`,
      );
      Deno.exit(2);
    }
  }
  let failed = 0;
  for (const role of options.roles) {
    let args: string[];
    try {
      args = compileArgs(role, env, options.outDir);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      for (const p of e.problems) console.error(`compile ${role}: ${p}`);
      Deno.exit(2);
    }
    if (options.dryRun) {
      console.log(["deno", ...args].join(" "));
      continue;
    }
    await Deno.mkdir(options.outDir, { recursive: true });
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    if (out.success) {
      console.log(
        `compile: ${ROLE_TABLE[role].binary} -> ${options.outDir}/${ROLE_TABLE[role].binary}`,
      );
      continue;
    }
    failed++;
    if (/dl\.deno\.land|error sending request|dns error|Download/i.test(text) && !denort) {
      console.error(
        `compile: ${
          ROLE_TABLE[role].binary
        }: deno compile could not download its runtime (denort ${Deno.version.deno}); ` +
          `this host has no route to it. Copy denort for ${Deno.build.target} here and set DENORT_BIN=/path/to/denort.`,
      );
    } else if (denort && /ELF|Invalid object|base binary/i.test(text)) {
      console.error(
        `compile: ${
          ROLE_TABLE[role].binary
        }: DENORT_BIN=${denort} is not a usable denort ${Deno.version.deno} runtime for ${Deno.build.target}`,
      );
    } else {
      console.error(`compile: ${ROLE_TABLE[role].binary} failed:\n${text.trim()}`);
    }
  }
  Deno.exit(failed > 0 ? 1 : 0);
}
