// `deno task bench:peers [--quick]`: Kiseki beside MinIO, driven by the project's own load
// generator (tests/bench/s3_load.ts: SigV4 as the AWS SDK signs, payload SHA-256 header,
// keep-alive connections, distinct content on every PUT), in turns: each case runs against
// one server and then the other (the first alternating case by case), same sizes, same
// concurrency, same key counts, while both servers stay up.
//
//  - Kiseki: one `kiseki server` as `scripts/kiseki server` runs it (role table flags, its
//    defaults: AES-256-GCM, EC 4+2 over six O_DIRECT device files, durable before the answer).
//  - MinIO: one process over six drive directories, storage class EC:2, SSE-S3 on every
//    object (a static KMS key from MINIO_KMS_SECRET_KEY and a bucket encryption default;
//    checked on the first object written). The binary is KISEKI_MINIO_BIN, or
//    ~/.cache/kiseki/bin/minio, built there with `go install github.com/minio/minio@latest`
//    when Go is present; without either, the MinIO rows are skipped with one line.
//
// Cases: PUT and GET of 4 KiB, 64 KiB and 1 MiB at c=16, and of 64 MiB at c=1 and c=4.
// Each row gives op/s, MB/s, p50/p99, the server's CPU time per request (user + system from
// /proc/<pid>/stat, warm-up included) and its peak anonymous RSS (RssAnon from
// /proc/<pid>/status, sampled), for both, and their ratios (Kiseki / MinIO). Targets (the
// issue's): 64 MiB rows >= 1.2x MinIO's op/s and 64 MiB PUT CPU <= MinIO's; the smaller rows
// >= 1.5x. Prints a table and writes tests/bench/results/peers.json. MB = 10^6 bytes.
//
//   deno run -A tests/bench/peers_bench.ts [--quick]

// Bench only: the AWS SDK's SigV4 signer (bucket set-up on MinIO).
// deno-lint-ignore no-import-prefix
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";
import { createHash } from "node:crypto";
import { waitForHttp } from "../e2e/_role.ts";
import { NodeSha256 } from "./s3_load.ts";
import {
  cpuMicros,
  type LoadResult,
  type Node as KisekiNode,
  runLoad,
  withServer,
} from "./s3_bench.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const RESULTS_PATH = new URL("./results/peers.json", import.meta.url);

const KIB = 1024;
const MIB = 1024 * KIB;
const LARGE = 64 * MIB;
const BUCKET = "bench";
/** Host octet of the loopback addresses (127.0.N.x) this bench's servers listen on. */
const HOST_OCTET = 43;
const MINIO_ADDR = `127.0.${HOST_OCTET}.3:29600`;
const MINIO_CONSOLE_ADDR = `127.0.${HOST_OCTET}.3:29601`;
const MINIO_USER = "kisekibench";
const MINIO_PASSWORD = "kisekibench-secret";
/** MinIO's static KMS key (name:base64 of 32 bytes): a bench-only key for SSE-S3. */
const MINIO_KMS_KEY = `kiseki-bench:${btoa(String.fromCharCode(...new Uint8Array(32).fill(7)))}`;
const MINIO_DRIVES = 6;
/** CreateBucket retries while MinIO answers 503 (initialising), and the pause between. */
const MINIO_INIT_RETRIES = 240;
const MINIO_INIT_RETRY_MS = 250;
/** `go install` of MinIO takes ~10 min on 2 cores; bounded so a stuck build cannot hang. */
const GO_BUILD_TIMEOUT_MS = 40 * 60_000;
const CASE_SECONDS = QUICK ? 1.5 : 6;
const CASE_OPS_MAX = QUICK ? 20_000 : 200_000;
const WARMUP_MS = QUICK ? 200 : 1000;
/** 64 MiB cases: op bound per concurrency, and a time box. */
const LARGE_OPS: Record<number, number> = QUICK ? { 1: 3, 4: 8 } : { 1: 10, 4: 24 };
const LARGE_SECONDS = QUICK ? 15 : 40;
/** RssAnon sampling period while a case runs. */
const RSS_SAMPLE_MS = 100;
/** Distinct keys per size (PUTs overwrite them in turn; GETs read them): at most 512 MiB. */
const keysFor = (size: number) => Math.max(4, Math.min(64, Math.floor(512 * MIB / size)));

const CASES: { size: number; concurrency: number }[] = [
  { size: 4 * KIB, concurrency: 16 },
  { size: 64 * KIB, concurrency: 16 },
  { size: MIB, concurrency: 16 },
  { size: LARGE, concurrency: 1 },
  { size: LARGE, concurrency: 4 },
];
const TARGET_SMALL = 1.5;
const TARGET_LARGE = 1.2;
/** Kiseki's memory targets: idle VmRSS, and RssAnon under load beyond the chunk cache. */
const TARGET_IDLE_RSS_MIB = 150;
const TARGET_ANON_MIB_BEYOND_CACHE = 512;
/** The server's chunk cache as this bench runs it (the default KISEKI_CHUNK_CACHE_MAX). */
const CHUNK_CACHE_MIB = 256;
const TARGET_ANON_MIB = TARGET_ANON_MIB_BEYOND_CACHE + CHUNK_CACHE_MIB;

const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));
const progress = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));
const round = (v: number, digits: number) => Number(v.toFixed(digits));
const sizeName = (b: number) => b >= MIB ? `${b / MIB} MiB` : `${b / KIB} KiB`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Op = "put" | "get";
type System = "kiseki" | "minio";

/** One server as the cases see it. */
interface Target {
  system: System;
  pid: number;
  common: string[];
}

interface Measured extends LoadResult {
  serverCpuUsPerOp: number | null;
  /** Peak anonymous RSS of the server process during the case, in MiB. */
  rssAnonPeakMib: number | null;
}

interface Row {
  op: Op;
  size: number;
  concurrency: number;
  kiseki: Measured;
  minio: Measured | null;
  opsRatio: number | null;
  cpuRatio: number | null;
  target: string;
  met: boolean | null;
}

// ---- process measurements -------------------------------------------------------------------

/** A resident memory figure of a process (RssAnon, VmRSS) in KiB; null when /proc cannot say. */
async function rssKib(pid: number, field = "RssAnon"): Promise<number | null> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const m = status.match(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m"));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
const rssAnonKib = (pid: number) => rssKib(pid, "RssAnon");
const mib = (kib: number | null) => kib === null ? null : round(kib / 1024, 1);

/** Runs one case against one server: load, CPU time and peak RssAnon of the server. */
async function measure(target: Target, args: string[], bound: number): Promise<Measured> {
  let peak: number | null = null;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const kib = await rssAnonKib(target.pid);
      if (kib !== null) peak = Math.max(peak ?? 0, kib);
      await sleep(RSS_SAMPLE_MS);
    }
  })();
  const cpuBefore = await cpuMicros(target.pid);
  let r: LoadResult;
  try {
    r = await runLoad([...target.common, ...args], bound);
  } finally {
    sampling = false;
    await sampler;
  }
  const cpuAfter = await cpuMicros(target.pid);
  const serverCpuUsPerOp = cpuBefore === null || cpuAfter === null || r.requests === 0
    ? null
    : round((cpuAfter - cpuBefore) / r.requests, 1);
  const rssAnonPeakMib = peak === null ? null : round(peak / 1024, 1);
  progress(
    `${target.system} ${r.op} ${sizeName(r.size)} c=${r.concurrency}: ${r.opsPerSecond} op/s, ` +
      `${r.mbPerSecond} MB/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, ` +
      `server CPU ${serverCpuUsPerOp} µs/op, RssAnon peak ${rssAnonPeakMib} MiB` +
      (r.errors ? `, ${r.errors} errors (${r.firstError})` : ""),
  );
  return { ...r, serverCpuUsPerOp, rssAnonPeakMib };
}

// ---- MinIO ---------------------------------------------------------------------------------

/** The MinIO binary: KISEKI_MINIO_BIN, the cached build, or a fresh `go install` into the cache. */
async function minioBinary(): Promise<{ path: string | null; why: string }> {
  const given = Deno.env.get("KISEKI_MINIO_BIN");
  if (given) {
    return await exists(given)
      ? { path: given, why: `KISEKI_MINIO_BIN=${given}` }
      : { path: null, why: `KISEKI_MINIO_BIN=${given} does not exist` };
  }
  const cache = `${Deno.env.get("HOME") ?? "/root"}/.cache/kiseki/bin`;
  const cached = `${cache}/minio`;
  if (await exists(cached)) return { path: cached, why: `cached build ${cached}` };
  let go: Deno.ChildProcess;
  try {
    await Deno.mkdir(cache, { recursive: true });
    progress(`building MinIO with Go into ${cache} (go install github.com/minio/minio@latest) ...`);
    go = new Deno.Command("go", {
      args: ["install", "github.com/minio/minio@latest"],
      env: { GOBIN: cache },
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch {
    return { path: null, why: "no MinIO binary and no Go toolchain (`go` not found)" };
  }
  const timer = setTimeout(() => {
    try {
      go.kill("SIGKILL");
    } catch { /* gone */ }
  }, GO_BUILD_TIMEOUT_MS);
  const out = await go.output();
  clearTimeout(timer);
  if (out.code !== 0 || !await exists(cached)) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    return { path: null, why: `go install of MinIO failed (exit ${out.code}): ${err}` };
  }
  return { path: cached, why: `built now into ${cached}` };
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** One signed request to MinIO (bucket set-up and checks), with a SHA-256 payload hash. */
async function minioRequest(
  method: string,
  path: string,
  query: Record<string, string>,
  body: Uint8Array = new Uint8Array(0),
  extra: Record<string, string> = {},
): Promise<Response> {
  const url = new URL(`http://${MINIO_ADDR}`);
  const signer = new SignatureV4({
    service: "s3",
    region: "us-east-1",
    credentials: { accessKeyId: MINIO_USER, secretAccessKey: MINIO_PASSWORD },
    sha256: NodeSha256,
    uriEscapePath: false,
  });
  const signed = await signer.sign({
    method,
    protocol: url.protocol,
    hostname: url.hostname,
    port: Number(url.port),
    path,
    query,
    headers: {
      host: url.host,
      "x-amz-content-sha256": createHash("sha256").update(body).digest("hex"),
      "content-length": String(body.byteLength),
      ...extra,
    },
  });
  const headers = { ...signed.headers } as Record<string, string>;
  delete headers.host;
  const search = Object.keys(query).map((k) => query[k] === "" ? k : `${k}=${query[k]}`).join(
    "&",
  );
  return await fetch(`http://${MINIO_ADDR}${path}${search ? `?${search}` : ""}`, {
    method,
    headers,
    body: body.byteLength > 0 ? body as Uint8Array<ArrayBuffer> : undefined,
  });
}

/** Starts MinIO (six drive dirs, EC:2, SSE-S3 by default on the bucket), runs fn, stops it. */
async function withMinio(binary: string, fn: (target: Target) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-peers-minio-" });
  const drives = Array.from({ length: MINIO_DRIVES }, (_, i) => `${dir}/d${i + 1}`);
  for (const d of drives) await Deno.mkdir(d);
  const child = new Deno.Command(binary, {
    args: ["server", "--quiet", "--address", MINIO_ADDR, "--console-address", MINIO_CONSOLE_ADDR]
      .concat(drives),
    env: {
      MINIO_ROOT_USER: MINIO_USER,
      MINIO_ROOT_PASSWORD: MINIO_PASSWORD,
      MINIO_KMS_SECRET_KEY: MINIO_KMS_KEY,
      // Older releases encrypt every object with this alone; newer ones by the bucket default
      // set below. Both are set; the first object written is checked.
      MINIO_KMS_AUTO_ENCRYPTION: "on",
      MINIO_STORAGE_CLASS_STANDARD: "EC:2",
      MINIO_BROWSER: "off",
      // The drive dirs share the root filesystem (as Kiseki's device files do).
      MINIO_CI_CD: "1",
      MINIO_UPDATE: "off",
    },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const drain = (async () => {
    const d = new TextDecoder();
    for await (const c of child.stderr) stderr = (stderr + d.decode(c)).slice(-4000);
  })();
  try {
    await Promise.race([
      waitForHttp(`http://${MINIO_ADDR}/minio/health/ready`, "", 120_000),
      child.status.then((s) => {
        throw new Error(`minio exited ${s.code}: ${stderr}`);
      }),
    ]);
    // MinIO may say ready before its object layer is (503 XMinioServerNotInitialized).
    let r = await minioRequest("PUT", `/${BUCKET}`, {});
    for (let i = 0; r.status === 503 && i < MINIO_INIT_RETRIES; i++) {
      await r.body?.cancel();
      await sleep(MINIO_INIT_RETRY_MS);
      r = await minioRequest("PUT", `/${BUCKET}`, {});
    }
    if (r.status !== 200) throw new Error(`MinIO CreateBucket: ${r.status} ${await r.text()}`);
    await r.body?.cancel();
    const sse = encoder.encode(
      `<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
        `<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>` +
        `</ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>`,
    );
    r = await minioRequest("PUT", `/${BUCKET}`, { encryption: "" }, sse, {
      "content-md5": btoa(String.fromCharCode(...createHash("md5").update(sse).digest())),
    });
    if (r.status !== 200) {
      throw new Error(`MinIO PutBucketEncryption: ${r.status} ${await r.text()}`);
    }
    await r.body?.cancel();
    // Every object encrypted: a probe object must come back with the SSE header.
    r = await minioRequest("PUT", `/${BUCKET}/sse-probe`, {}, encoder.encode("probe"));
    await r.body?.cancel();
    r = await minioRequest("HEAD", `/${BUCKET}/sse-probe`, {});
    await r.body?.cancel();
    if (r.headers.get("x-amz-server-side-encryption") !== "AES256") {
      throw new Error(
        `MinIO did not encrypt the probe object (x-amz-server-side-encryption: ` +
          `${r.headers.get("x-amz-server-side-encryption")})`,
      );
    }
    await fn({
      system: "minio",
      pid: child.pid,
      common: [
        `--endpoint=http://${MINIO_ADDR}`,
        `--bucket=${BUCKET}`,
        `--access-key=${MINIO_USER}`,
        `--secret-key=${MINIO_PASSWORD}`,
      ],
    });
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await drain.catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

// ---- the cases -----------------------------------------------------------------------------

function caseArgs(op: Op, size: number, concurrency: number, keys: number) {
  const large = size >= LARGE;
  const seconds = large ? LARGE_SECONDS : CASE_SECONDS;
  return {
    args: [
      `--op=${op}`,
      `--size=${size}`,
      `--concurrency=${concurrency}`,
      `--seconds=${seconds}`,
      `--count=${large ? LARGE_OPS[concurrency]! : CASE_OPS_MAX}`,
      `--warmup-ms=${large ? 0 : WARMUP_MS}`,
      `--keys=${keys}`,
      `--prefix=peers-${size}`,
    ],
    bound: seconds + (large ? 0 : WARMUP_MS / 1000),
  };
}

async function runCases(kiseki: Target, minio: Target | null): Promise<Row[]> {
  const rows: Row[] = [];
  let turn = 0;
  for (const { size, concurrency } of CASES) {
    const keys = size >= LARGE ? Math.max(concurrency, LARGE_OPS[concurrency]!) : keysFor(size);
    /** Keys the PUT case wrote on both servers: what the GET case reads. */
    let written = keys;
    for (const op of ["put", "get"] as const) {
      const c = caseArgs(op, size, concurrency, op === "put" ? keys : Math.max(1, written));
      // Alternate which server goes first, so neither always runs on a warmer machine.
      const order = minio === null ? [kiseki] : turn++ % 2 === 0 ? [kiseki, minio] : [
        minio,
        kiseki,
      ];
      const got = new Map<System, Measured>();
      for (const t of order) got.set(t.system, await measure(t, c.args, c.bound));
      const k = got.get("kiseki")!;
      const m = got.get("minio") ?? null;
      if (op === "put") {
        written = Math.min(k.keysWritten ?? 0, m === null ? Infinity : m.keysWritten ?? 0);
      }
      const large = size >= LARGE;
      const opsRatio = m && m.opsPerSecond > 0 ? round(k.opsPerSecond / m.opsPerSecond, 2) : null;
      const cpuRatio = m && m.serverCpuUsPerOp && k.serverCpuUsPerOp !== null
        ? round(k.serverCpuUsPerOp / m.serverCpuUsPerOp, 2)
        : null;
      const want = large ? TARGET_LARGE : TARGET_SMALL;
      const cpuTarget = large && op === "put";
      const target = `>= ${want}x op/s` + (cpuTarget ? ", CPU <= 1x" : "");
      const met = opsRatio === null
        ? null
        : k.errors === 0 && opsRatio >= want && (!cpuTarget || (cpuRatio ?? Infinity) <= 1);
      rows.push({ op, size, concurrency, kiseki: k, minio: m, opsRatio, cpuRatio, target, met });
    }
  }
  return rows;
}

// ---- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  const load = Deno.loadavg();
  const binary = await minioBinary();
  let minioLine: string;
  if (binary.path === null) {
    minioLine = `MinIO: skipped (${binary.why}); Kiseki rows only`;
    progress(minioLine);
  } else {
    minioLine = `MinIO: ${binary.why}; one process, ${MINIO_DRIVES} drive dirs, EC:2, SSE-S3 ` +
      `(static KMS key) on every object`;
  }
  let rows: Row[] = [];
  let idleRssMib: { kiseki: number | null; minio: number | null } = { kiseki: null, minio: null };
  let idleVmRssMib: { kiseki: number | null; minio: number | null } = {
    kiseki: null,
    minio: null,
  };
  await withServer({}, async (node: KisekiNode) => {
    const kiseki: Target = { system: "kiseki", pid: node.pid, common: node.common };
    // Idle, after start-up and bucket creation (before any object).
    await sleep(1000);
    idleRssMib.kiseki = mib(await rssAnonKib(node.pid));
    idleVmRssMib.kiseki = mib(await rssKib(node.pid, "VmRSS"));
    if (binary.path === null) {
      rows = await runCases(kiseki, null);
      return;
    }
    await withMinio(binary.path, async (minio) => {
      await sleep(1000);
      idleRssMib = { ...idleRssMib, minio: mib(await rssAnonKib(minio.pid)) };
      idleVmRssMib = { ...idleVmRssMib, minio: mib(await rssKib(minio.pid, "VmRSS")) };
      rows = await runCases(kiseki, minio);
    });
  }, HOST_OCTET);

  const seconds = round((performance.now() - started) / 1000, 1);
  print(
    `Kiseki vs MinIO, one server each on loopback, ${navigator.hardwareConcurrency} cpus, ` +
      `${QUICK ? "quick" : "full"} mode, ${seconds} s; load average at start ` +
      `${load.map((l) => l.toFixed(2)).join(" ")}; same load generator (SigV4, payload ` +
      `SHA-256), cases in turns; MB = 10^6 bytes`,
  );
  print(
    "Kiseki: kiseki server defaults (AES-256-GCM, EC 4+2 over six O_DIRECT device files); " +
      minioLine,
  );
  const idleMet = idleVmRssMib.kiseki !== null && idleVmRssMib.kiseki <= TARGET_IDLE_RSS_MIB;
  const peakAnon = Math.max(...rows.map((r) => r.kiseki.rssAnonPeakMib ?? 0));
  print(
    `idle VmRSS (RssAnon): kiseki ${idleVmRssMib.kiseki ?? "-"} (${idleRssMib.kiseki ?? "-"}) ` +
      `MiB, minio ${idleVmRssMib.minio ?? "-"} (${idleRssMib.minio ?? "-"}) MiB; kiseki target ` +
      `idle VmRSS <= ${TARGET_IDLE_RSS_MIB} MiB: ${idleMet ? "MET" : "NOT MET"}`,
  );
  print(
    `kiseki peak RssAnon over every case ${peakAnon} MiB; target <= ${TARGET_ANON_MIB_BEYOND_CACHE}` +
      ` MiB + ${CHUNK_CACHE_MIB} MiB chunk cache: ${
        peakAnon <= TARGET_ANON_MIB ? "MET" : "NOT MET"
      }`,
  );
  print();
  const dash = (v: number | null | undefined) => v ?? "-";
  table(
    print,
    [
      "op",
      "size",
      "c",
      "K op/s",
      "M op/s",
      "ratio",
      "K MB/s",
      "M MB/s",
      "K p50/p99 ms",
      "M p50/p99 ms",
      "K CPU µs/op",
      "M CPU µs/op",
      "CPU ratio",
      "K/M RssAnon MiB",
      "err",
      "target",
    ],
    rows.map((r) => [
      r.op.toUpperCase(),
      sizeName(r.size),
      r.concurrency,
      r.kiseki.opsPerSecond,
      dash(r.minio?.opsPerSecond),
      dash(r.opsRatio),
      r.kiseki.mbPerSecond,
      dash(r.minio?.mbPerSecond),
      `${r.kiseki.p50Ms}/${r.kiseki.p99Ms}`,
      r.minio ? `${r.minio.p50Ms}/${r.minio.p99Ms}` : "-",
      dash(r.kiseki.serverCpuUsPerOp),
      dash(r.minio?.serverCpuUsPerOp),
      dash(r.cpuRatio),
      `${dash(r.kiseki.rssAnonPeakMib)}/${dash(r.minio?.rssAnonPeakMib)}`,
      `${r.kiseki.errors}/${r.minio?.errors ?? "-"}`,
      r.met === null ? `${r.target}: -` : `${r.target}: ${r.met ? "MET" : "NOT MET"}`,
    ]),
    { leftColumns: 2 },
  );
  if (QUICK) print("(quick mode: short time boxes and few 64 MiB ops; noisy)");

  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        benchmark: "peers",
        mode: QUICK ? "quick" : "full",
        generatedAt: new Date().toISOString(),
        seconds,
        host: {
          cpus: navigator.hardwareConcurrency,
          deno: Deno.version.deno,
          loadAverageAtStart: load,
        },
        minio: binary.path === null ? { skipped: binary.why } : { binary: binary.why },
        idleRssAnonMib: idleRssMib,
        idleVmRssMib,
        memoryTargets: {
          idleVmRssMibMax: TARGET_IDLE_RSS_MIB,
          idleMet,
          rssAnonPeakMib: peakAnon,
          rssAnonMibMax: TARGET_ANON_MIB,
          rssAnonMet: peakAnon <= TARGET_ANON_MIB,
        },
        rows,
      },
      null,
      2,
    ) + "\n",
  );
  progress(`wrote ${RESULTS_PATH.pathname}`);
}

if (import.meta.main) await main();
