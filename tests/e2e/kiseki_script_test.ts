// The README's two commands: `scripts/kiseki server` brings a node up from a clean data
// dir, and `scripts/kiseki test` closes with the line CI reads and fails when a test fails.

import assert from "node:assert/strict";
import { ROOT, run, testAddrs, waitForHttp } from "./_role.ts";

Deno.test("scripts/kiseki server starts a node from a clean data dir and answers OK", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-script-" });
  await Deno.remove(dataDir); // clean: the node creates it
  const env = { ...testAddrs(18), KISEKI_DATA_DIR: dataDir };
  const child = new Deno.Command(`${ROOT}scripts/kiseki`, {
    args: ["server"],
    env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let logs = "";
  const drained = (async () => {
    const d = new TextDecoder();
    for await (const c of child.stderr) logs += d.decode(c, { stream: true });
  })();
  try {
    await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    assert.equal((await Deno.stat(`${dataDir}/config/node.json`)).isFile, true);
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    await drained;
    assert.equal(status.code, 0, logs);
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
  assert.match(logs, /node ready/);
});

Deno.test("scripts/kiseki test ends with 'N passed, N failed, N skipped' and fails on a failure", async () => {
  const r = await run(`${ROOT}scripts/kiseki`, ["test", "tests/e2e/testdata/runner_fixture.ts"]);
  const last = r.stdout.trim().split("\n").at(-1);
  assert.equal(last, "2 passed, 1 failed, 1 skipped");
  assert.notEqual(r.code, 0);
});

Deno.test("scripts/kiseki rejects a bad variable before the role starts", async () => {
  const r = await run(`${ROOT}scripts/kiseki`, ["server"], {
    env: { KISEKI_DATA_DIR: "/tmp/kiseki-never", KISEKI_RAFT_PEERS: "1=a:9300,1=b:9300" },
  });
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /^kiseki-server: KISEKI_RAFT_PEERS="1=a:9300,1=b:9300" is invalid: .*node id 1 appears twice/m,
  );
});
