// The README's two commands: `scripts/kiseki server` brings a node up from a clean data
// dir, and `scripts/kiseki test` closes with the line CI reads and fails when a test fails.

import assert from "node:assert/strict";
import { ROOT, run, testAddrs, waitForHttp } from "./_role.ts";

/** Debian's aws-cli (a pip copy earlier on PATH may be another major version). */
const AWS_CLI: string | null = await Deno.stat("/usr/bin/aws").then(
  () => "/usr/bin/aws",
  () => null,
);

Deno.test("scripts/kiseki server starts a node from a clean data dir, answers OK and serves aws-cli with the printed key", async () => {
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
    // The first start wrote the default tenant's key where the log says; aws-cli uses it as is.
    const credentials = `${dataDir}.s3-credentials`;
    assert.equal((await Deno.stat(credentials)).mode! & 0o777, 0o600);
    assert.ok(
      AWS_CLI !== null,
      "aws-cli missing: scripts/kiseki setup installs Debian's awscli as root",
    );
    {
      const aws = (...args: string[]) =>
        run(AWS_CLI!, ["--endpoint-url", `http://${env.KISEKI_S3_ADDR}`, ...args], {
          env: {
            AWS_SHARED_CREDENTIALS_FILE: credentials,
            AWS_CONFIG_FILE: "/dev/null",
            AWS_DEFAULT_REGION: "us-east-1",
          },
        });
      const body = `${dataDir}/upload.bin`;
      const bytes = new Uint8Array(3 << 20).map((_, i) => (i * 31 + 7) & 0xff);
      await Deno.writeFile(body, bytes);
      assert.equal((await aws("s3", "mb", "s3://first")).code, 0);
      assert.equal((await aws("s3", "cp", body, "s3://first/dir/upload.bin")).code, 0);
      const ls = await aws("s3", "ls", "--recursive", "s3://first");
      assert.match(ls.stdout, /3145728 dir\/upload\.bin/);
      assert.equal((await aws("s3", "cp", "s3://first/dir/upload.bin", `${body}.back`)).code, 0);
      assert.deepEqual(await Deno.readFile(`${body}.back`), bytes);
      const metrics = await (await fetch(`http://${env.KISEKI_METRICS_ADDR}/metrics`)).text();
      assert.match(metrics, /^kiseki_gateway_requests_total\{op="CreateBucket",status="200"\} 1$/m);
      assert.match(metrics, /^kiseki_gateway_requests_total\{op="PutObject",status="200"\} \d+$/m);
      assert.match(metrics, /^kiseki_gateway_bytes_out_total\{op="GetObject"\} 3145728$/m);
    }
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
  assert.match(r.stdout, /^skipped \(1\):\n {2}.*runner_fixture\.ts => fixture is ignored$/m);
});

Deno.test("scripts/kiseki test skips a test whose tool is missing, but fails it under CI=true", async () => {
  const fixture = "tests/e2e/testdata/runner_missing_fixture.ts";
  const local = await run(`${ROOT}scripts/kiseki`, ["test", fixture], { env: { CI: "false" } });
  assert.equal(local.stdout.trim().split("\n").at(-1), "1 passed, 0 failed, 2 skipped");
  assert.match(local.stdout, /^ {2}.* => fixture needs kiseki-fixture-tool$/m);
  assert.match(local.stdout, /^ {2}.* => fixture case does not apply here$/m);
  assert.equal(local.code, 0);

  const ci = await run(`${ROOT}scripts/kiseki`, ["test", fixture], { env: { CI: "true" } });
  assert.equal(ci.stdout.trim().split("\n").at(-1), "1 passed, 1 failed, 2 skipped");
  assert.match(ci.stdout, /requires kiseki-fixture-tool \(CI=true\) \.\.\. FAILED/);
  assert.match(ci.stdout, /kiseki-fixture-tool is missing: no machine has it/);
  assert.match(ci.stdout, /^ {2}.* => fixture case does not apply here$/m);
  assert.notEqual(ci.code, 0);
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
