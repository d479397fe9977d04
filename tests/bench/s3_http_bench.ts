// `deno run -A tests/bench/s3_http_bench.ts [--quick]`: the HTTP layer alone, Deno.serve
// against the S3 listener's own HTTP/1.1 (mod/s3/http1.ts), both serving the bare ceiling
// handler of s3_load.ts (GET streams pooled buffers or, `bytes`, one fresh Uint8Array; PUT
// reads and drops the body) to the same unsigned load generator. Rows alternate between the
// two servers case by case, so a busy machine slows both alike. Each row reports op/s, MB/s
// and the server's CPU time (user + system, /proc/<pid>/stat) per request, warm-up included.
// MB = 10^6 bytes.

import { waitForHttp } from "../e2e/_role.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const LOAD = new URL("./s3_load.ts", import.meta.url).pathname;
const KIB = 1024;
const MIB = 1024 * KIB;
const SECONDS = QUICK ? 1 : 3;
const WARMUP_MS = QUICK ? 200 : 500;
const OPS_MAX = 200_000;
const GRACE_MS = 30_000;
const USER_HZ = 100;
const SERVERS = [
  { name: "Deno.serve", addr: "127.0.41.12:29512", args: [] as string[] },
  { name: "http1", addr: "127.0.41.13:29513", args: ["--server=http1"] },
];
const CASES: Array<{ op: "put" | "get"; size: number; concurrency: number; body?: "bytes" }> = [];
for (const size of [4 * KIB, 64 * KIB, MIB]) {
  for (const concurrency of [1, 16]) {
    CASES.push({ op: "put", size, concurrency }, { op: "get", size, concurrency });
  }
}
CASES.push({ op: "get", size: MIB, concurrency: 1, body: "bytes" });
CASES.push({ op: "get", size: 64 * MIB, concurrency: 1 });
CASES.push({ op: "put", size: 64 * MIB, concurrency: 1 });

const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));

async function cpuMicros(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / USER_HZ;
}

interface Load {
  opsPerSecond: number;
  mbPerSecond: number;
  errors: number;
  firstError: string | null;
  requests: number;
}

async function runLoad(endpoint: string, c: (typeof CASES)[number]): Promise<Load> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      LOAD,
      `--endpoint=${endpoint}`,
      "--bucket=bench",
      "--unsigned",
      `--op=${c.op}`,
      `--size=${c.size}`,
      `--concurrency=${c.concurrency}`,
      `--seconds=${SECONDS}`,
      `--count=${c.size >= 64 * MIB ? 16 : OPS_MAX}`,
      `--warmup-ms=${c.size >= 64 * MIB ? 0 : WARMUP_MS}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), SECONDS * 1000 + GRACE_MS);
  const out = await child.output();
  clearTimeout(timer);
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !line.startsWith("{")) {
    throw new Error(`s3_load exited ${out.code}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(line) as Load;
}

async function main(): Promise<void> {
  const children: Deno.ChildProcess[] = [];
  const rows: (string | number)[][] = [];
  try {
    // One server process per (server, body kind): `--body` is fixed at start.
    const started = new Map<string, { pid: number; endpoint: string }>();
    for (const s of SERVERS) {
      for (const body of ["stream", "bytes"]) {
        const [host, port] = s.addr.split(":");
        const addr = `${host}:${Number(port) + (body === "bytes" ? 100 : 0)}`;
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            "--quiet",
            LOAD,
            "serve",
            `--addr=${addr}`,
            `--body=${body}`,
            ...s.args,
          ],
          stdout: "null",
          stderr: "inherit",
        }).spawn();
        children.push(child);
        await waitForHttp(`http://${addr}/health`, "OK");
        started.set(`${s.name}/${body}`, { pid: child.pid, endpoint: `http://${addr}` });
      }
    }
    for (const c of CASES) {
      for (const s of SERVERS) {
        const server = started.get(`${s.name}/${c.body ?? "stream"}`)!;
        const before = await cpuMicros(server.pid);
        const r = await runLoad(server.endpoint, c);
        const cpu = (await cpuMicros(server.pid)) - before;
        const size = c.size >= MIB ? `${c.size / MIB} MiB` : `${c.size / KIB} KiB`;
        const row = [
          `${c.op.toUpperCase()}${c.body ? ` (${c.body})` : ""}`,
          size,
          c.concurrency,
          s.name,
          r.opsPerSecond,
          r.mbPerSecond,
          r.requests > 0 ? Number((cpu / r.requests).toFixed(1)) : "-",
          r.errors,
        ];
        Deno.stderr.writeSync(encoder.encode(row.join("  ") + "\n"));
        rows.push(row);
      }
    }
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
    }
  }
  print(
    `HTTP layer alone, ${navigator.hardwareConcurrency} cpus, ${QUICK ? "quick" : "full"} mode, ` +
      `unsigned load generator on loopback; MB = 10^6 bytes`,
  );
  table(print, ["op", "size", "c", "server", "op/s", "MB/s", "srv CPU µs/op", "err"], rows, {
    leftColumns: 4,
  });
}

await main();
