// Roles started as they ship (the role table's permission flags): the server comes up,
// answers /health and /metrics, stops cleanly; bad configuration stops it with one line;
// each role's sandbox refuses what the role must not do.

import assert from "node:assert/strict";
import { ROLE_NAMES, ROLE_TABLE, type RoleName } from "../../mod/role/mod.ts";
import { shimPath, SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { flagsFor, ROOT, run, startRole, testAddrs, waitForHttp } from "./_role.ts";

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "kiseki-e2e-" });
}

Deno.test("kiseki server starts from an empty data dir, reports ready, serves metrics and stops on SIGTERM", async () => {
  const dataDir = await tempDir();
  const env = { ...testAddrs(11), KISEKI_DATA_DIR: dataDir };
  const server = startRole("server", env);
  try {
    const base = `http://${env.KISEKI_METRICS_ADDR}`;
    await waitForHttp(`${base}/health`, "OK");
    for (const sub of ["raft", "keys", "chunks", "small", "config"]) {
      assert.equal((await Deno.stat(`${dataDir}/${sub}`)).isDirectory, true, `${sub}/ created`);
    }
    const identity = JSON.parse(await Deno.readTextFile(`${dataDir}/config/node.json`));
    assert.equal(identity.nodeId, 1);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /^kiseki_node_ready 1$/m);
    assert.match(metrics, /^kiseki_node_info\{.*aead="(openssl|webcrypto)".*\} 1$/m);
    assert.match(metrics, /^kiseki_node_info\{.*ec="(isa-l|typescript)".*\} 1$/m);
    assert.match(metrics, /^process_resident_memory_bytes \d+/m);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    assert.equal((await fetch(`${base}/health`, { method: "POST" })).status, 405);

    // Each port says once which implementation is active and why.
    const logs = server.stderr();
    assert.equal(logs.match(/aead implementation/g)?.length, 1, logs);
    assert.equal(logs.match(/erasure[- ]cod\w* implementation/gi)?.length, 1, logs);
  } finally {
    assert.equal(await server.stop("SIGTERM"), 0, server.stderr());
    await Deno.remove(dataDir, { recursive: true });
  }
  assert.match(server.stderr(), /stopped/);
});

Deno.test("kiseki server refuses a data dir that belongs to another node id", async () => {
  const dataDir = await tempDir();
  const env = { ...testAddrs(12), KISEKI_DATA_DIR: dataDir };
  const first = startRole("server", env);
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK");
  } finally {
    assert.equal(await first.stop(), 0);
  }
  const second = startRole("server", { ...env, KISEKI_NODE_ID: "2" });
  assert.equal(await second.exited, 1);
  assert.match(second.stderr(), /KISEKI_NODE_ID=2 but .* belongs to node 1/);
  await Deno.remove(dataDir, { recursive: true });
});

Deno.test("kiseki server with a bad variable exits 2 with one line naming it", async () => {
  const dataDir = await tempDir();
  const env = { ...testAddrs(13), KISEKI_DATA_DIR: dataDir };
  const server = startRole("server", { ...env, KISEKI_CACHE_MODE: "always" }, [], {
    flagsEnv: env,
  });
  assert.equal(await server.exited, 2);
  const lines = server.stderr().trim().split("\n");
  assert.deepEqual(lines, [
    'kiseki-server: KISEKI_CACHE_MODE="always" is invalid: expected pinned, organic or bypass',
  ]);
  await Deno.remove(dataDir, { recursive: true });
});

Deno.test("kiseki server with KISEKI_FFI=off runs on the pure twins and says why", async () => {
  const dataDir = await tempDir();
  const env = {
    ...testAddrs(14),
    KISEKI_DATA_DIR: dataDir,
    KISEKI_FFI: "off",
    KISEKI_LOG_FORMAT: "json",
  };
  const server = startRole("server", env);
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK");
    const metrics = await (await fetch(`http://${env.KISEKI_METRICS_ADDR}/metrics`)).text();
    assert.match(metrics, /kiseki_node_info\{.*aead="webcrypto".*ec="typescript"/);
    assert.match(metrics, /^kiseki_crc32c_implementation\{impl="typescript"\} 1$/m);
    const events = server.stderr().trim().split("\n").map((l) => JSON.parse(l));
    const chosen = events.filter((e) => /implementation/.test(e.msg));
    // AES-GCM, erasure coding, device I/O, CRC-32C and hashing: each says once which twin
    // runs and why.
    assert.equal(chosen.length, 5, JSON.stringify(chosen));
    for (const e of chosen) assert.match(e.reason, /KISEKI_FFI=off/);
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("kiseki server reports a taken metrics port and exits 1", async () => {
  const env = { ...testAddrs(15), KISEKI_DATA_DIR: await tempDir() };
  const [host, port] = env.KISEKI_METRICS_ADDR.split(":");
  const blocker = Deno.listen({ hostname: host, port: Number(port) });
  try {
    const server = startRole("server", env);
    assert.equal(await server.exited, 1);
    assert.match(server.stderr(), /cannot listen on KISEKI_METRICS_ADDR=127\.0\.15\.1:29090/);
  } finally {
    blocker.close();
    await Deno.remove(env.KISEKI_DATA_DIR, { recursive: true });
  }
});

/** Runs a role's entry to completion under the role table's flags. */
function runRole(role: RoleName, args: string[]) {
  return run(Deno.execPath(), [
    "run",
    "--quiet",
    ...flagsFor(role, {}),
    `${ROOT}${ROLE_TABLE[role].entry}`,
    ...args,
  ]);
}

/** Runs main.ts (the development dispatcher) with every permission. */
function runMain(args: string[]) {
  return run(Deno.execPath(), ["run", "--quiet", "-A", `${ROOT}main.ts`, ...args]);
}

Deno.test("every role answers --help; roles not built yet say so and exit 2", async () => {
  for (const role of ROLE_NAMES) {
    const r = await runRole(role, ["--help"]);
    if (ROLE_TABLE[role].built) {
      assert.equal(r.code, 0, `${role}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(ROLE_TABLE[role].binary));
    } else {
      assert.equal(r.code, 2, role);
      assert.match(r.stdout, /not built yet/);
    }
  }
  const viaMain = await runMain(["keyserver"]);
  assert.equal(viaMain.code, 2);
  assert.match(viaMain.stderr, /kiseki-keyserver: .*not built yet/s);
  const unknown = await runMain(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown role 'frobnicate'/);
});

Deno.test("kiseki admin status reads a running node", async () => {
  const dataDir = await tempDir();
  const env = { ...testAddrs(16), KISEKI_DATA_DIR: dataDir };
  const server = startRole("server", env);
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK");
    const r = await runRole("admin", ["status", "--node", env.KISEKI_METRICS_ADDR, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout);
    assert.equal(status.health, "OK");
    assert.equal(status.ready, true);
    assert.equal(status.info.node_id, "1");
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
  const down = await runRole("admin", ["status", "--node", env.KISEKI_METRICS_ADDR]);
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach 127\.0\.16\.1:29090/);
});

async function probe(flags: string[], action: string, target: string): Promise<string> {
  const r = await run(Deno.execPath(), [
    "run",
    "--quiet",
    ...flags,
    `${ROOT}tests/e2e/sandbox_probe.ts`,
    action,
    target,
  ]);
  return r.stdout.trim() || r.stderr.trim();
}

Deno.test("role sandboxes: each role's flags allow its own work and refuse the rest", async () => {
  const dataDir = await tempDir();
  const env = { ...testAddrs(17), KISEKI_DATA_DIR: dataDir };
  const shim = shimPath(SOURCE_FFI_DIR, "aead");
  const shimBuilt = await Deno.stat(shim).then(() => true, () => false);
  try {
    const server = flagsFor("server", env);
    assert.equal(await probe(server, "listen", env.KISEKI_S3_ADDR), "ALLOWED");
    assert.equal(await probe(server, "listen", "127.0.17.1:29999"), "REFUSED NotCapable");
    assert.equal(await probe(server, "write", `${dataDir}/probe`), "ALLOWED");
    assert.equal(await probe(server, "write", "/tmp/kiseki-sandbox-escape"), "REFUSED NotCapable");
    assert.equal(await probe(server, "read", "/etc/shadow"), "REFUSED NotCapable");
    assert.equal(await probe(server, "run", "/bin/sh"), "REFUSED NotCapable");
    assert.equal(await probe(server, "env", "HOME"), "REFUSED NotCapable");
    assert.equal(await probe(server, "env", "KISEKI_DATA_DIR"), "ALLOWED");
    assert.equal(await probe(server, "dial", "127.0.0.1:22"), "REFUSED NotCapable");
    if (shimBuilt) assert.equal(await probe(server, "ffi", shim), "ALLOWED");
    assert.equal(
      await probe(server, "ffi", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
      "REFUSED NotCapable",
    );

    // The key server holds system keys: no S3 port, no native code, no node data.
    const keyserver = flagsFor("keyserver", { KISEKI_DATA_DIR: `${dataDir}/keys` });
    assert.equal(await probe(keyserver, "listen", "0.0.0.0:9400"), "ALLOWED");
    assert.equal(await probe(keyserver, "listen", "0.0.0.0:9000"), "REFUSED NotCapable");
    assert.equal(await probe(keyserver, "ffi", shim), "REFUSED NotCapable");
    assert.equal(await probe(keyserver, "write", `${dataDir}/probe`), "REFUSED NotCapable");
    assert.ok(!keyserver.some((f) => f.startsWith("--allow-ffi")), "keyserver has no --allow-ffi");

    // The admin CLI dials nodes but writes nothing and loads no native code.
    const admin = flagsFor("admin", {});
    assert.equal(await probe(admin, "write", `${dataDir}/x`), "REFUSED NotCapable");
    assert.equal(await probe(admin, "ffi", shim), "REFUSED NotCapable");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("kiseki admin s3-credentials creates, lists and revokes keys through the node's operator API", async () => {
  const dataDir = await tempDir();
  const env = { ...testAddrs(19), KISEKI_DATA_DIR: dataDir };
  const server = startRole("server", env);
  const admin = (args: string[]) =>
    run(Deno.execPath(), [
      "run",
      "--quiet",
      ...flagsFor("admin", { KISEKI_DATA_DIR: dataDir }),
      `${ROOT}${ROLE_TABLE.admin.entry}`,
      "s3-credentials",
      ...args,
      "--node",
      env.KISEKI_METRICS_ADDR,
    ], { env: { KISEKI_DATA_DIR: dataDir } });
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK");
    assert.equal((await Deno.stat(`${dataDir}/config/admin-token`)).mode! & 0o777, 0o600);
    const first = JSON.parse((await admin(["list", "--json"])).stdout);
    assert.equal(first.keys.length, 1, "the first start made one key");
    const created = await admin(["create", "--json"]);
    assert.equal(created.code, 0, created.stderr);
    const key = JSON.parse(created.stdout);
    assert.match(key.accessKeyId, /^[A-Z0-9]{20}$/);
    assert.equal(key.secretAccessKey.length, 40);
    const listed = JSON.parse((await admin(["list", "--json"])).stdout);
    assert.equal(listed.keys.length, 2);
    assert.ok(!JSON.stringify(listed).includes(key.secretAccessKey), "list never shows secrets");
    assert.equal((await admin(["revoke", "--key", key.accessKeyId])).code, 0);
    assert.equal(JSON.parse((await admin(["list", "--json"])).stdout).keys.length, 1);
    const bad = await admin(["list", "--tenant", "acme"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /tenant 'acme' is not 32 hex digits or 'default'/);
    const forged = await fetch(
      `http://${env.KISEKI_METRICS_ADDR}/api/v1/s3-credentials?tenant=default`,
      {
        headers: { authorization: "Bearer nope" },
      },
    );
    assert.equal(forged.status, 401);
    await forged.body?.cancel();
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true });
  }
});
