// `deno task bench:space [--quick]` (deno run -A tests/bench/space_bench.ts): does freed space
// keep up with the write rate? A real `kiseki server` on a small pool (six 128 MiB device
// files, 16 MiB segments, EC 4+2) takes signed PUTs from the load generator (s3_load.ts, its
// own process) as fast as it can, each one overwriting one of a few keys, so every PUT
// releases the previous version's chunks. /metrics is sampled while it runs. Reports the
// write rate, how many times the pool's capacity that moved, refused PUTs, the peak of used
// bytes against capacity, and how long after the load stopped every released chunk was
// erased and used bytes were back to live bytes (within a segment per device). Writes tests/bench/results/space.json.

// deno-lint-ignore no-import-prefix
import { CreateBucketCommand, S3Client } from "npm:@aws-sdk/client-s3@3.1175.0";
import { readS3Credentials, startRole } from "../e2e/_role.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const MIB = 1 << 20;
const RESULTS = new URL("./results/space.json", import.meta.url);
const LOAD = new URL("./s3_load.ts", import.meta.url).pathname;
const DEVICES = 6;
const SEGMENT_BYTES = 16 * MIB;
const POOL = JSON.stringify({
  name: "default",
  devices: DEVICES,
  deviceSize: "128MiB",
  segmentSize: "16MiB",
});
const CASES = [
  { size: 64 * 1024, concurrency: 16, keys: 64 },
  { size: 1 * MIB, concurrency: 8, keys: 16 },
  { size: 16 * MIB, concurrency: 2, keys: 4 },
];
const SECONDS = QUICK ? 4 : 20;
/** How long used bytes may take to settle after the load before the bench says so. */
const SETTLE_MS_MAX = 60_000;
const SAMPLE_MS = 200;

interface Gauges {
  capacity: number;
  used: number;
  live: number;
  /** Chunks released and not yet erased (their bytes still count as live). */
  unreferenced: number;
}

interface Row {
  size: number;
  writeMbPerS: number;
  capacityMultiple: number;
  errors: number;
  firstError: string | null;
  peakUsedPercent: number;
  settleSeconds: number | null;
}

const encoder = new TextEncoder();
function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

function freeAddrs(): Record<string, string> {
  const names = [
    "KISEKI_S3_ADDR",
    "KISEKI_NFS_ADDR",
    "KISEKI_METRICS_ADDR",
    "KISEKI_DATA_ADDR",
    "KISEKI_ADVISORY_ADDR",
    "KISEKI_RAFT_ADDR",
  ];
  const listeners = names.map(() => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const out: Record<string, string> = {};
  names.forEach((n, i) => (out[n] = `127.0.0.1:${(listeners[i]!.addr as Deno.NetAddr).port}`));
  for (const l of listeners) l.close();
  return out;
}

async function gauges(metricsAddr: string): Promise<Gauges> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  const value = (name: string) =>
    Number(
      text.split("\n").find((l) => l.startsWith(`${name}{pool="default"}`))?.split(" ").at(-1) ??
        NaN,
    );
  return {
    capacity: value("kiseki_pool_capacity_bytes"),
    used: value("kiseki_pool_used_bytes"),
    live: value("kiseki_pool_live_bytes"),
    unreferenced: value("kiseki_pool_unreferenced_chunks"),
  };
}

async function runCase(
  c: (typeof CASES)[number],
  endpoint: string,
  metricsAddr: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
): Promise<Row> {
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const g = await gauges(metricsAddr);
      peak = Math.max(peak, g.used / g.capacity);
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
    }
  })();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      LOAD,
      `--endpoint=${endpoint}`,
      "--bucket=space",
      `--access-key=${credentials.accessKeyId}`,
      `--secret-key=${credentials.secretAccessKey}`,
      `--size=${c.size}`,
      `--concurrency=${c.concurrency}`,
      "--op=put",
      `--seconds=${SECONDS}`,
      "--count=1000000",
      `--keys=${c.keys}`,
      `--prefix=space-${c.size}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  sampling = false;
  await sampler;
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !line.startsWith("{")) {
    throw new Error(`s3_load exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  }
  const result = JSON.parse(line) as {
    mbPerSecond: number;
    bytes: number;
    errors: number;
    firstError: string | null;
  };
  const started = performance.now();
  let settleSeconds: number | null = null;
  while (performance.now() - started < SETTLE_MS_MAX) {
    const g = await gauges(metricsAddr);
    // Settled: every released chunk erased, and used within a segment per device of live.
    if (g.unreferenced === 0 && g.used - g.live <= DEVICES * SEGMENT_BYTES) {
      settleSeconds = (performance.now() - started) / 1000;
      break;
    }
    await new Promise((r) => setTimeout(r, SAMPLE_MS));
  }
  const { capacity } = await gauges(metricsAddr);
  return {
    size: c.size,
    writeMbPerS: result.mbPerSecond,
    capacityMultiple: result.bytes / capacity,
    errors: result.errors,
    firstError: result.firstError,
    peakUsedPercent: peak * 100,
    settleSeconds,
  };
}

const dataDir = await Deno.makeTempDir({ prefix: "kiseki-space-bench-" });
const env: Record<string, string> = {
  ...freeAddrs(),
  KISEKI_DATA_DIR: dataDir,
  KISEKI_POOLS: POOL,
};
const server = startRole("server", env);
const rows: Row[] = [];
try {
  const health = `http://${env.KISEKI_METRICS_ADDR}/health`;
  for (let i = 0;; i++) {
    try {
      const r = await fetch(health);
      await r.body?.cancel();
      if (r.status === 200) break;
    } catch { /* not up yet */ }
    if (i > 300) throw new Error(`server not healthy: ${server.stderr()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const endpoint = `http://${env.KISEKI_S3_ADDR}`;
  const credentials = await readS3Credentials(`${dataDir}.s3-credentials`);
  const client = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials });
  await client.send(new CreateBucketCommand({ Bucket: "space" }));
  client.destroy();
  for (const c of CASES) {
    rows.push(await runCase(c, endpoint, env.KISEKI_METRICS_ADDR!, credentials));
  }
} finally {
  await server.stop();
  await Deno.remove(dataDir, { recursive: true });
}

print(
  `Overwrite load on a ${DEVICES} x 128 MiB pool (EC 4+2, 16 MiB segments), ${SECONDS} s per size`,
);
table(
  print,
  ["size", "write MB/s", "x capacity", "refused", "peak used %", "settle s"],
  rows.map((r) => [
    r.size >= MIB ? `${r.size / MIB} MiB` : `${r.size / 1024} KiB`,
    r.writeMbPerS.toFixed(1),
    r.capacityMultiple.toFixed(1),
    r.errors === 0 ? "0" : `${r.errors} (${r.firstError})`,
    r.peakUsedPercent.toFixed(0),
    r.settleSeconds === null ? `>${SETTLE_MS_MAX / 1000}` : r.settleSeconds.toFixed(1),
  ]),
);
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(
  RESULTS,
  JSON.stringify({ mode: QUICK ? "quick" : "full", rows }, null, 2) + "\n",
);
