// Prometheus accepts what a real server exports: `promtool check metrics` (Debian package
// prometheus) on /metrics after S3 traffic, an error answer and a scrub pass, so the
// metrics that appear only once used are checked too.

import assert from "node:assert/strict";
import { missingPart } from "../../mod/base/mod.ts";
import { run, startRole, testAddrs, waitForHttp } from "./_role.ts";

const PROMTOOL = "/usr/bin/promtool";
const AWS = "/usr/bin/aws";
const promtoolMissing = await Deno.stat(PROMTOOL).then(() => false, () => true);
const awsMissing = await Deno.stat(AWS).then(() => false, () => true);

Deno.test({
  name: "promtool check metrics passes on a real server's /metrics",
  ignore: missingPart("promtool (Debian prometheus)", promtoolMissing && `${PROMTOOL} not found`) ||
    missingPart("aws-cli (Debian awscli)", awsMissing && `${AWS} not found`),
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "kiseki-e2e-promtool-" });
    const addrs = testAddrs(174);
    const metricsUrl = `http://${addrs.KISEKI_METRICS_ADDR}`;
    const server = startRole("server", { ...addrs, KISEKI_DATA_DIR: dataDir });
    try {
      await waitForHttp(`${metricsUrl}/health`, "OK", 60_000);
      const aws = (...args: string[]) =>
        run(AWS, ["--endpoint-url", `http://${addrs.KISEKI_S3_ADDR}`, ...args], {
          env: {
            AWS_SHARED_CREDENTIALS_FILE: `${dataDir}.s3-credentials`,
            AWS_CONFIG_FILE: "/dev/null",
            AWS_DEFAULT_REGION: "us-east-1",
          },
        });
      const body = `${dataDir}/body`;
      await Deno.writeFile(body, crypto.getRandomValues(new Uint8Array(60_000)));
      assert.equal((await aws("s3", "mb", "s3://prom")).code, 0);
      assert.equal((await aws("s3", "cp", body, "s3://prom/k")).code, 0);
      assert.equal((await aws("s3", "cp", "s3://prom/k", `${body}.back`)).code, 0);
      assert.equal((await aws("s3", "ls", "s3://prom")).code, 0);
      assert.notEqual((await aws("s3", "cp", "s3://prom/absent", `${body}.x`)).code, 0);
      const token = (await Deno.readTextFile(`${dataDir}/config/admin-token`)).trim();
      const headers = { authorization: `Bearer ${token}` };
      // The server's first pass may already have run; either way one more completes.
      const before = await (await fetch(`${metricsUrl}/api/v1/scrub`, { headers })).json();
      await (await fetch(`${metricsUrl}/api/v1/scrub/start`, { method: "POST", headers })).body
        ?.cancel();
      for (let i = 0; i < 300; i++) {
        const s = await (await fetch(`${metricsUrl}/api/v1/scrub`, { headers })).json();
        if (s.passesCompleted > before.passesCompleted && s.pass === null) break;
        await new Promise((r) => setTimeout(r, 100));
      }

      const exposition = await (await fetch(`${metricsUrl}/metrics`)).text();
      assert.match(exposition, /^kiseki_scrub_passes_completed\{pool="default"\} [1-9]/m);
      assert.match(exposition, /^process_resident_memory_bytes [1-9]/m);
      const child = new Deno.Command(PROMTOOL, {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(exposition));
      await writer.close();
      const out = await child.output();
      const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(said.trim(), "", "promtool has nothing to say");
      assert.equal(out.code, 0, said);
    } finally {
      await server.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
});
