// `deno task stress:put [label] [seconds]`: a sustained overwrite load on one real `kiseki
// server` (fresh temp data dir, default pool): PUT 64 KiB, 4 KiB and 1 MiB at c=16 over 64
// keys each (every PUT releases the chunk it replaces, so GC and compaction run all along),
// a third of the time each. It reports each phase, whether the server is still healthy, its
// exit code and how many lmdb commit failures it logged (all must be 0), and the tail of its
// log when it failed. Not a benchmark: a campaign for the write path's stability under load.

import { readS3Credentials, startRole, testAddrs, waitForHttp } from "../e2e/_role.ts";
const tag = Deno.args[0] ?? "put-stress";
const seconds = Number(Deno.args[1] ?? "150");
const dataDir = await Deno.makeTempDir({ prefix: "kiseki-put-stress-" });
// A loopback block of its own (KISEKI_STRESS_OCTET), so campaigns can run side by side.
const addrs = testAddrs(Number(Deno.env.get("KISEKI_STRESS_OCTET") ?? "43"));
const server = startRole("server", {
  ...addrs,
  KISEKI_DATA_DIR: dataDir,
  KISEKI_LOG_LEVEL: "warn",
});
await waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
const c = await readS3Credentials(`${dataDir}.s3-credentials`);
const env = {
  AWS_ACCESS_KEY_ID: c.accessKeyId,
  AWS_SECRET_ACCESS_KEY: c.secretAccessKey,
  AWS_DEFAULT_REGION: "us-east-1",
};
const mb = await new Deno.Command("aws", {
  args: ["--endpoint-url", `http://${addrs.KISEKI_S3_ADDR}`, "s3", "mb", "s3://bench"],
  env,
}).output();
console.log("mb", mb.code, new TextDecoder().decode(mb.stderr));
for (const [size, conc] of [[65536, 16], [4096, 16], [1048576, 16]]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      new URL("./s3_load.ts", import.meta.url).pathname,
      `--endpoint=http://${addrs.KISEKI_S3_ADDR}`,
      "--bucket=bench",
      `--access-key=${c.accessKeyId}`,
      `--secret-key=${c.secretAccessKey}`,
      "--op=put",
      `--size=${size}`,
      `--concurrency=${conc}`,
      `--seconds=${seconds / 3}`,
      "--count=10000000",
      "--keys=64",
    ],
  }).output();
  console.log(tag, size, new TextDecoder().decode(out.stdout).trim().slice(0, 200));
}
const alive = await fetch(`http://${addrs.KISEKI_METRICS_ADDR}/health`).then((r) => r.status).catch(
  () => "dead",
);
console.log(tag, "server health after:", alive);
const code = await server.stop("SIGTERM");
const err = server.stderr();
const commitFailures =
  (err.match(/Commit failed|BAD_TXN|-30782|commit in .* failed|damaged|rebuild/g) ?? []).length;
console.log(
  tag,
  "exit",
  code,
  "commit failures:",
  commitFailures,
);
if (code !== 0) {
  const logFile = `${Deno.makeTempDirSync({ prefix: "kiseki-put-stress-log-" })}/server.log`;
  Deno.writeTextFileSync(logFile, err);
  console.log(err.slice(-3000));
  console.log(tag, "server log:", logFile);
}
await Deno.remove(dataDir, { recursive: true });
if (code !== 0 || alive !== 200 || commitFailures > 0) Deno.exit(1);
