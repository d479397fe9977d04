// `deno task bench:s3 [--quick]`: S3 PUT and GET throughput and latency through the gateway of
// one real `kiseki server` (started with the role table's flags, fresh temp data dir, its
// default pool), for 4 KiB, 64 KiB, 1 MiB and 64 MiB objects at 1 and 16 concurrent clients.
// The load generator (tests/bench/s3_load.ts) is a separate process that signs every request
// with SigV4 (the AWS SDK's signer, payload SHA-256 in x-amz-content-sha256), sends distinct
// content on every PUT (nothing deduplicates) and keeps its connections alive; on a 2-core
// machine it competes with the server for CPU, as a client on the same host would.
//
// GET rows report the share of chunk reads the server's chunk cache (KISEKI_CHUNK_CACHE_MAX,
// default 256 MiB) answered: the GETs re-read the keys just written, so small objects are
// served from memory after their first read. One more row measures 64 KiB c=16 GETs on a
// second server with the cache off (every GET reads, verifies and decrypts its fragments).
//
// LIST rows: ListObjectsV2 over LIST_KEYS one-byte keys spread over LIST_DIRS directories
// (`list/dNNN/<i>`), one page per request: a prefix listing (`prefix=list/`, the first 1000
// keys) and a delimiter listing (`prefix=list/&delimiter=/`, the LIST_DIRS common prefixes),
// at 1 and 16 concurrent clients. Their ceiling is the bare-HTTP 4 KiB GET at the same
// concurrency, compared in requests per second (a listing answer is one small request).
//
// Every row also reports the server's CPU time (user + system, from /proc/<pid>/stat) per
// request the case sent, warm-up included: steadier than op/s on a shared, noisy machine.
//
// Same-run ceilings:
//  - bare HTTP: a plain Deno.serve in another process (s3_load.ts serve) that streams the
//    requested size from pooled 64 KiB / 1 MiB buffers on GET and reads and discards the body
//    on PUT, driven by the same load generator without signing, at the same size and
//    concurrency; the ceiling of the 4 KiB .. 1 MiB rows.
//  - engine: the object engine's 64 MiB write/read MB/s from tests/bench/results/engine.json
//    (rerun first with --engine; otherwise the stored file, its date printed); the ceiling of
//    the 64 MiB rows.
// Targets (the issue's): 64 KiB c=16 PUT >= 2,000 op/s; GET from the chunk cache >= 12,000
// op/s at <= 60 µs of server CPU per GET (SigV4 checked on every request), and >= 4,000
// op/s with the cache off; 64 MiB PUT >= 0.5x and GET >= 0.7x of the engine ceiling.
// Prints a table and writes tests/bench/results/s3.json. MB = 10^6 bytes.
//
//   deno run -A tests/bench/s3_bench.ts [--quick] [--engine]

// Bench only: the AWS SDK's SigV4 signer (bucket creation).
// deno-lint-ignore no-import-prefix
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";
import {
  readS3Credentials,
  type RunningRole,
  startRole,
  testAddrs,
  waitForHttp,
} from "../e2e/_role.ts";
import { NodeSha256 } from "./s3_load.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const RUN_ENGINE = Deno.args.includes("--engine");
const RESULTS_PATH = new URL("./results/s3.json", import.meta.url);
const ENGINE_PATH = new URL("./results/engine.json", import.meta.url);
const LOAD = new URL("./s3_load.ts", import.meta.url).pathname;
const ENGINE_BENCH = new URL("./engine_bench.ts", import.meta.url).pathname;

const KIB = 1024;
const MIB = 1024 * KIB;
const SIZES = [4 * KIB, 64 * KIB, MIB, 64 * MIB];
const CONCURRENCY = [1, 16];
const LARGE = 64 * MIB;
const BUCKET = "bench";
/** Time box and op bound of one case (small and medium objects). */
const CASE_SECONDS = QUICK ? 0.8 : 5;
const CASE_OPS_MAX = QUICK ? 20_000 : 200_000;
const CEILING_SECONDS = QUICK ? 0.5 : 3;
const WARMUP_MS = QUICK ? 150 : 1000;
/** 64 MiB cases: op bound per concurrency, and a time box. */
const LARGE_OPS: Record<number, number> = QUICK ? { 1: 3 } : { 1: 8, 16: 32 };
const LARGE_SECONDS = QUICK ? 10 : 30;
/** A load-generator process that runs longer than its bounds plus this is killed. */
const LOAD_GRACE_MS = 30_000;
/** Distinct keys per size (PUTs overwrite them in turn; GETs read them): at most 512 MiB. */
const keysFor = (size: number) => Math.max(1, Math.min(64, Math.floor(512 * MIB / size)));
const TARGET_OPS = { get: 12_000, put: 2000 };
/** Server CPU per cached 64 KiB GET at most, in µs. */
const TARGET_CACHED_GET_CPU_US = 60;
/** 64 KiB c=16 GETs with the chunk cache off. */
const TARGET_UNCACHED_GET_OPS = 4000;
const TARGET_RATIO = { get: 0.7, put: 0.5 };
const HOST_OCTET = 41;
const CEILING_ADDR = `127.0.${HOST_OCTET}.2:29500`;

const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));
const progress = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));
const round = (v: number, digits: number) => Number(v.toFixed(digits));
const sizeName = (b: number) =>
  b >= MIB ? `${b / MIB} MiB` : b >= KIB ? `${b / KIB} KiB` : `${b} B`;

type Op = "put" | "get" | "list";

/** Keys and directories of the listing rows. */
const LIST_KEYS = 3000;
const LIST_DIRS = 30;
const LIST_PAGE_KEYS = 1000;
const LIST_CASES = [
  {
    variant: `prefix, ${LIST_PAGE_KEYS} keys of ${LIST_KEYS}`,
    args: ["--list-prefix=list/"],
    expect: LIST_PAGE_KEYS,
  },
  {
    variant: `delimiter, ${LIST_DIRS} prefixes over ${LIST_KEYS} keys`,
    args: ["--list-prefix=list/", "--delimiter=/"],
    expect: LIST_DIRS,
  },
];

export interface LoadResult {
  op: Op;
  size: number;
  concurrency: number;
  ops: number;
  bytes: number;
  seconds: number;
  opsPerSecond: number;
  mbPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  errors: number;
  firstError: string | null;
  keysWritten: number | null;
  /** Requests sent, warm-up included. */
  requests: number;
}

interface Row {
  op: Op;
  size: number;
  concurrency: number;
  ops: number;
  seconds: number;
  opsPerSecond: number;
  mbPerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
  errors: number;
  /** GETs: share of chunk reads the server's chunk cache answered during the case. */
  cacheHitRatio: number | null;
  /** Server CPU time (user + system) per request, warm-up included, in µs. */
  serverCpuUsPerOp: number | null;
  /** A configuration other than the defaults (e.g. "chunk cache off"). */
  variant?: string;
  ceilingMbPerSecond: number | null;
  ceilingOpsPerSecond: number | null;
  ceilingSource: "bare-http" | "engine" | "bare-http 4 KiB GET op/s" | null;
  ratio: number | null;
  target?: string;
  met?: boolean;
}

export async function runLoad(args: string[], boundSeconds: number): Promise<LoadResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", LOAD, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, boundSeconds * 1000 + LOAD_GRACE_MS);
  const out = await child.output();
  clearTimeout(timer);
  const d = new TextDecoder();
  const line = d.decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !line.startsWith("{")) {
    throw new Error(`s3_load ${args.join(" ")} exited ${out.code}: ${d.decode(out.stderr)}`);
  }
  return JSON.parse(line) as LoadResult;
}

function caseArgs(op: Op, size: number, concurrency: number): { args: string[]; bound: number } {
  const large = size >= LARGE;
  const seconds = large ? LARGE_SECONDS : CASE_SECONDS;
  const count = large ? LARGE_OPS[concurrency]! : CASE_OPS_MAX;
  return {
    args: [
      `--op=${op}`,
      `--size=${size}`,
      `--concurrency=${concurrency}`,
      `--seconds=${seconds}`,
      `--count=${count}`,
      `--warmup-ms=${large ? 0 : WARMUP_MS}`,
    ],
    bound: seconds + (large ? 0 : WARMUP_MS / 1000),
  };
}

// ---- ceilings ------------------------------------------------------------------------------

async function bareHttpCeilings(): Promise<Map<string, LoadResult>> {
  const results = new Map<string, LoadResult>();
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", LOAD, "serve", `--addr=${CEILING_ADDR}`],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    await waitForHttp(`http://${CEILING_ADDR}/health`, "OK");
    for (const size of SIZES.filter((s) => s < LARGE)) {
      for (const concurrency of CONCURRENCY) {
        for (const op of ["put", "get"] as const) {
          const r = await runLoad([
            `--endpoint=http://${CEILING_ADDR}`,
            `--bucket=${BUCKET}`,
            "--unsigned",
            `--op=${op}`,
            `--size=${size}`,
            `--concurrency=${concurrency}`,
            `--seconds=${CEILING_SECONDS}`,
            `--count=${CASE_OPS_MAX}`,
            `--warmup-ms=${WARMUP_MS}`,
          ], CEILING_SECONDS);
          progress(
            `bare http ${op} ${sizeName(size)} c=${concurrency}: ${r.opsPerSecond} op/s, ` +
              `${r.mbPerSecond} MB/s`,
          );
          results.set(`${op}/${size}/${concurrency}`, r);
        }
      }
    }
  } finally {
    try {
      server.kill("SIGTERM");
    } catch { /* gone */ }
    await server.status;
  }
  return results;
}

interface EngineCeiling {
  put: number;
  get: number;
  generatedAt: string;
  mode: string;
}

async function engineCeiling(): Promise<EngineCeiling | null> {
  if (RUN_ENGINE) {
    progress(`running tests/bench/engine_bench.ts${QUICK ? " --quick" : ""} ...`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", ENGINE_BENCH, ...(QUICK ? ["--quick"] : [])],
      stdout: "null",
      stderr: "inherit",
    }).output();
    if (out.code !== 0) progress(`engine_bench exited ${out.code}; using the stored engine.json`);
  }
  try {
    const engine = JSON.parse(await Deno.readTextFile(ENGINE_PATH));
    const pick = (op: string) =>
      (engine.rows as { op: string; objectBytes: number; variant?: string; mbPerSecond: number }[])
        .find((r) => r.op === op && r.objectBytes === LARGE && r.variant === undefined)
        ?.mbPerSecond;
    const put = pick("write");
    const get = pick("read");
    if (put === undefined || get === undefined) return null;
    return { put, get, generatedAt: engine.generatedAt, mode: engine.mode };
  } catch {
    return null;
  }
}

// ---- the node ------------------------------------------------------------------------------

export async function createBucket(
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
): Promise<void> {
  const url = new URL(endpoint);
  const signer = new SignatureV4({
    service: "s3",
    region: "us-east-1",
    credentials,
    sha256: NodeSha256,
    uriEscapePath: false,
  });
  const signed = await signer.sign({
    method: "PUT",
    protocol: url.protocol,
    hostname: url.hostname,
    port: Number(url.port),
    path: `/${BUCKET}`,
    query: {},
    headers: {
      host: url.host,
      "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "content-length": "0",
    },
  });
  const headers = { ...signed.headers } as Record<string, string>;
  delete headers.host;
  const r = await fetch(`${endpoint}/${BUCKET}`, { method: "PUT", headers });
  const body = await r.text();
  if (r.status !== 200) throw new Error(`CreateBucket: ${r.status} ${body}`);
}

// ---- one server ------------------------------------------------------------------------------

export interface Node {
  /** The server's pid (for its CPU time and memory). */
  pid: number;
  /** The load generator's endpoint, bucket and credential arguments for this node. */
  common: string[];
  /** Runs the load generator against this node's bucket. */
  run(args: string[], bound: number): Promise<LoadResult & ServerSide>;
}

/** What the server side measured during one case. */
export interface ServerSide {
  cacheHitRatio: number | null;
  serverCpuUsPerOp: number | null;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** User plus system CPU time of a process so far, in µs; null when /proc cannot say. */
export async function cpuMicros(pid: number): Promise<number | null> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / USER_HZ;
  } catch {
    return null;
  }
}

/** Starts a fresh `kiseki server` (role table flags, temp data dir), creates the bucket. */
export async function withServer(
  extraEnv: Record<string, string>,
  fn: (node: Node) => Promise<void>,
  hostOctet = HOST_OCTET,
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-s3-bench-" });
  const addrs = testAddrs(hostOctet);
  let server: RunningRole | null = null;
  try {
    server = startRole("server", {
      ...addrs,
      KISEKI_DATA_DIR: dataDir,
      KISEKI_LOG_LEVEL: "warn",
      ...extraEnv,
    });
    await Promise.race([
      waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000),
      server.exited.then((code) => {
        throw new Error(`kiseki server exited ${code}: ${server!.stderr()}`);
      }),
    ]);
    const credentials = await readS3Credentials(`${dataDir}.s3-credentials`);
    const endpoint = `http://${addrs.KISEKI_S3_ADDR}`;
    await createBucket(endpoint, credentials);
    const common = [
      `--endpoint=${endpoint}`,
      `--bucket=${BUCKET}`,
      `--access-key=${credentials.accessKeyId}`,
      `--secret-key=${credentials.secretAccessKey}`,
    ];
    const metricsUrl = `http://${addrs.KISEKI_METRICS_ADDR}/metrics`;
    await fn({
      pid: server.pid,
      common,
      run: async (args, bound) => {
        const before = await cacheLookups(metricsUrl);
        const cpuBefore = await cpuMicros(server!.pid);
        const r = await runLoad([...common, ...args], bound);
        const cpuAfter = await cpuMicros(server!.pid);
        const after = await cacheLookups(metricsUrl);
        const serverCpuUsPerOp = cpuBefore === null || cpuAfter === null || r.requests === 0
          ? null
          : round((cpuAfter - cpuBefore) / r.requests, 1);
        const hits = after.hit - before.hit;
        const lookups = hits + after.miss - before.miss;
        const cacheHitRatio = r.op === "get" && lookups > 0 ? round(hits / lookups, 3) : null;
        progress(
          `s3 ${r.op} ${r.op === "list" ? "" : sizeName(r.size)} c=${r.concurrency}: ` +
            `${r.opsPerSecond} op/s, ` +
            `${r.mbPerSecond} MB/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms` +
            (cacheHitRatio === null ? "" : `, chunk cache hits ${cacheHitRatio}`) +
            (serverCpuUsPerOp === null ? "" : `, server CPU ${serverCpuUsPerOp} µs/op`) +
            (r.errors ? `, ${r.errors} errors (${r.firstError})` : ""),
        );
        return { ...r, cacheHitRatio, serverCpuUsPerOp };
      },
    });
  } finally {
    if (server !== null) {
      const code = await server.stop("SIGTERM");
      if (code !== 0) progress(`kiseki server exited ${code}: ${server.stderr().slice(-2000)}`);
    }
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

/** The server's chunk cache lookups so far (kiseki_chunk_cache_lookups_total). */
async function cacheLookups(url: string): Promise<{ hit: number; miss: number }> {
  const text = await (await fetch(url)).text();
  const get = (outcome: string) =>
    Number(
      text.match(
        new RegExp(`^kiseki_chunk_cache_lookups_total\\{outcome="${outcome}"\\} (\\S+)$`, "m"),
      )?.[1] ?? 0,
    );
  return { hit: get("hit"), miss: get("miss") };
}

function rowOf(
  r: LoadResult & ServerSide,
  engine: Awaited<ReturnType<typeof engineCeiling>>,
  ceilings: Awaited<ReturnType<typeof bareHttpCeilings>>,
): Row {
  const large = r.size >= LARGE;
  const ceiling = large ? null : ceilings.get(`${r.op}/${r.size}/${r.concurrency}`);
  const ceilingMb = large && r.op !== "list"
    ? (engine?.[r.op] ?? null)
    : (ceiling?.mbPerSecond ?? null);
  return {
    op: r.op,
    size: r.size,
    concurrency: r.concurrency,
    ops: r.ops,
    seconds: r.seconds,
    opsPerSecond: r.opsPerSecond,
    mbPerSecond: r.mbPerSecond,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    errors: r.errors,
    cacheHitRatio: r.cacheHitRatio,
    serverCpuUsPerOp: r.serverCpuUsPerOp,
    ceilingMbPerSecond: ceilingMb,
    ceilingOpsPerSecond: ceiling?.opsPerSecond ?? null,
    ceilingSource: large ? (engine ? "engine" : null) : (ceiling ? "bare-http" : null),
    ratio: ceilingMb ? round(r.mbPerSecond / ceilingMb, 3) : null,
  };
}

// ---- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  const engine = await engineCeiling();
  const ceilings = await bareHttpCeilings();

  const rows: Row[] = [];
  await withServer({}, async (node) => {
    for (const size of SIZES) {
      const keys = keysFor(size);
      let written = 0;
      for (const concurrency of CONCURRENCY) {
        if (size >= LARGE && LARGE_OPS[concurrency] === undefined) continue;
        for (const op of ["put", "get"] as const) {
          const c = caseArgs(op, size, concurrency);
          // GETs read only keys that PUTs have written.
          const k = op === "put" ? keys : Math.max(1, written);
          const r = await node.run([...c.args, `--keys=${k}`], c.bound);
          if (op === "put") written = Math.max(written, r.keysWritten ?? 0);
          const row = rowOf(r, engine, ceilings);
          if (size === 64 * KIB && concurrency === 16) {
            row.target = `>= ${TARGET_OPS[op]} op/s` +
              (op === "get" ? `, <= ${TARGET_CACHED_GET_CPU_US} µs CPU` : "");
            row.met = r.errors === 0 && r.opsPerSecond >= TARGET_OPS[op] &&
              (op === "put" ||
                (r.serverCpuUsPerOp !== null && r.serverCpuUsPerOp <= TARGET_CACHED_GET_CPU_US));
          } else if (size === LARGE && concurrency === 1) {
            row.target = `>= ${TARGET_RATIO[op]}x engine`;
            row.met = row.ratio !== null && r.errors === 0 && row.ratio >= TARGET_RATIO[op];
          }
          rows.push(row);
        }
      }
    }
    // Listings: populate once, then one page per request.
    const put = await node.run([
      "--op=put",
      "--size=1",
      "--concurrency=16",
      "--seconds=120",
      `--count=${LIST_KEYS}`,
      `--keys=${LIST_KEYS}`,
      "--prefix=list",
      `--dirs=${LIST_DIRS}`,
    ], 120);
    if (put.ops !== LIST_KEYS || put.errors !== 0) {
      throw new Error(`listing keys: ${put.ops} of ${LIST_KEYS} written (${put.firstError})`);
    }
    for (const listCase of LIST_CASES) {
      for (const concurrency of CONCURRENCY) {
        const r = await node.run([
          "--op=list",
          ...listCase.args,
          `--max-keys=${LIST_PAGE_KEYS}`,
          `--expect=${listCase.expect}`,
          `--concurrency=${concurrency}`,
          `--seconds=${CASE_SECONDS}`,
          `--count=${CASE_OPS_MAX}`,
          `--warmup-ms=${WARMUP_MS}`,
        ], CASE_SECONDS + WARMUP_MS / 1000);
        const ceiling = ceilings.get(`get/${4 * KIB}/${concurrency}`);
        rows.push({
          ...rowOf(r, engine, ceilings),
          variant: listCase.variant,
          ceilingMbPerSecond: null,
          ceilingOpsPerSecond: ceiling?.opsPerSecond ?? null,
          ceilingSource: ceiling ? "bare-http 4 KiB GET op/s" : null,
          ratio: ceiling ? round(r.opsPerSecond / ceiling.opsPerSecond, 3) : null,
        });
      }
    }
  });
  // The same 64 KiB c=16 GETs with the chunk cache off: every GET reads and verifies its
  // fragments from the devices (O_DIRECT) and decrypts them.
  await withServer({ KISEKI_CHUNK_CACHE_MAX: "0" }, async (node) => {
    const size = 64 * KIB;
    const put = await node.run(
      [...caseArgs("put", size, 16).args, `--keys=${keysFor(size)}`],
      caseArgs("put", size, 16).bound,
    );
    const c = caseArgs("get", size, 16);
    const r = await node.run([...c.args, `--keys=${Math.max(1, put.keysWritten ?? 1)}`], c.bound);
    rows.push({
      ...rowOf(r, engine, ceilings),
      variant: "chunk cache off",
      target: `>= ${TARGET_UNCACHED_GET_OPS} op/s`,
      met: r.errors === 0 && r.opsPerSecond >= TARGET_UNCACHED_GET_OPS,
    });
  });

  const seconds = round((performance.now() - started) / 1000, 1);
  print(
    `S3 gateway, one kiseki server on loopback, ${navigator.hardwareConcurrency} cpus, ` +
      `${QUICK ? "quick" : "full"} mode, ${seconds} s; SigV4-signed requests, MB = 10^6 bytes`,
  );
  print(
    "ceilings: bare Deno.serve (same load generator, unsigned) for 4 KiB .. 1 MiB; " +
      (engine
        ? `object engine 64 MiB c=1 (write ${engine.put} / read ${engine.get} MB/s) from ` +
          `results/engine.json (${engine.mode}, ${engine.generatedAt}${
            RUN_ENGINE ? ", rerun now" : ", not rerun in this run"
          }) for 64 MiB`
        : "engine ceiling not measured in this run (no results/engine.json)"),
  );
  print();
  table(
    print,
    [
      "op",
      "size",
      "c",
      "op/s",
      "MB/s",
      "p50 ms",
      "p99 ms",
      "err",
      "cache hits",
      "srv CPU µs/op",
      "ceil MB/s",
      "ratio",
      "target",
    ],
    rows.map((r) => [
      r.op.toUpperCase() + (r.variant ? ` (${r.variant})` : ""),
      r.op === "list" ? "-" : sizeName(r.size),
      r.concurrency,
      r.opsPerSecond,
      r.mbPerSecond,
      r.p50Ms ?? "-",
      r.p99Ms ?? "-",
      r.errors,
      r.cacheHitRatio ?? "-",
      r.serverCpuUsPerOp ?? "-",
      r.ceilingMbPerSecond !== null
        ? `${r.ceilingMbPerSecond} (${r.ceilingSource})`
        : r.ceilingOpsPerSecond !== null
        ? `${r.ceilingOpsPerSecond} op/s (${r.ceilingSource})`
        : "-",
      r.ratio ?? "-",
      r.target === undefined ? "" : `${r.target}: ${r.met ? "MET" : "NOT MET"}`,
    ]),
  );
  if (QUICK) print("(quick mode: 64 MiB at c=16 skipped; short time boxes, noisy)");

  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        benchmark: "s3",
        mode: QUICK ? "quick" : "full",
        generatedAt: new Date().toISOString(),
        seconds,
        host: { cpus: navigator.hardwareConcurrency, deno: Deno.version.deno },
        signing: "SigV4 (@smithy/signature-v4), payload SHA-256 header",
        ceilings: {
          bareHttp: "Deno.serve in a separate process, pooled buffers, same load generator",
          engine: engine === null ? null : {
            source: "tests/bench/results/engine.json",
            rerun: RUN_ENGINE,
            mode: engine.mode,
            generatedAt: engine.generatedAt,
            writeMbPerSecond: engine.put,
            readMbPerSecond: engine.get,
          },
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
