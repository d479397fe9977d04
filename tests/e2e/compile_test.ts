// `scripts/kiseki compile`: one binary per role from its own entry, with the role table's
// flags baked in. This host cannot download the Deno runtime, so the real compile is shown
// with a fake DENORT_BIN (the runtime is refused plainly) and the flags with --dry-run.

import assert from "node:assert/strict";
import {
  INSTALLED_DEFAULTS,
  INSTALLED_NODE_MODULES_DIR,
  ROLE_NAMES,
  ROLE_TABLE,
  roleConfig,
  roleFlags,
} from "../../mod/role/mod.ts";
import { ROOT, run } from "./_role.ts";

const compile = (args: string[], env: Record<string, string> = {}) =>
  run(Deno.execPath(), ["run", "--quiet", "-A", `${ROOT}scripts/compile.ts`, ...args], {
    env: { ...env, NO_COLOR: "1" },
  });

Deno.test("compile --dry-run bakes each built role's table flags into its own entry", async () => {
  const r = await compile(["--dry-run", "--out", "/tmp/kiseki-dist"]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  const built = ROLE_NAMES.filter((role) => ROLE_TABLE[role].built);
  assert.equal(lines.length, built.length);
  for (const [i, role] of built.entries()) {
    const config = roleConfig(role, INSTALLED_DEFAULTS[role], "/usr/local/lib/kiseki");
    const flags = roleFlags(role, config, {
      cwd: "/",
      ffiDir: config.ffiDir,
      nodeModulesDir: INSTALLED_NODE_MODULES_DIR,
      protoDir: "/usr/local/lib/kiseki/proto",
    });
    const line = lines[i]!;
    assert.ok(line.startsWith(["deno", "compile", "--quiet", ...flags].join(" ") + " "), line);
    assert.ok(
      line.endsWith(
        ` --output /tmp/kiseki-dist/${ROLE_TABLE[role].binary} ${ROOT}${ROLE_TABLE[role].entry}`,
      ),
      line,
    );
  }
  assert.match(lines[0]!, /--allow-write=\/var\/lib\/kiseki /);
  assert.match(
    lines[0]!,
    /--allow-ffi=\/usr\/local\/lib\/kiseki\/node_modules,\/usr\/local\/lib\/kiseki /,
  );
});

Deno.test("compile names the role and honours the site's environment", async () => {
  const r = await compile(["keyserver", "--dry-run"], { KISEKI_DATA_DIR: "/srv/keys" });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /--allow-write=\/srv\/keys /);
  assert.doesNotMatch(r.stdout, /--allow-ffi/);
  const bad = await compile(["server", "--dry-run"], { KISEKI_S3_ADDR: "nowhere" });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /compile server: KISEKI_S3_ADDR="nowhere" is invalid/);
});

Deno.test("compile uses DENORT_BIN and says plainly when it is not a runtime", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-compile-" });
  try {
    const fake = `${dir}/denort`;
    await Deno.writeTextFile(fake, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    const r = await compile(["admin", "--out", dir], { DENORT_BIN: fake });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      new RegExp(`DENORT_BIN=${fake} is not a usable denort ${Deno.version.deno} runtime`),
    );
    const missing = await compile(["admin", "--out", dir], { DENORT_BIN: `${dir}/absent` });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /DENORT_BIN=.*absent does not exist/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
