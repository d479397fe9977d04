// `deno task bench:fuse [--quick]`: a kiseki-client-fuse mount against a real `kiseki server`
// (client-side sealing, L1/L2 chunk cache, metadata over gRPC, chunks over the client
// transport), measured with fio and file-metadata loops, each beside the same job on the
// local disk and beside the S3 path (64 MiB PUT/GET with the JS SDK against the same node),
// in the same run. Rows: sequential 1 MiB write; sequential 1 MiB read cold (a fresh client
// with an empty cache, a fresh mount, so no page cache) and warm (L1/L2: fio drops the page
// cache of the file before each job, invalidate=1); 4 KiB random read (warm); file create,
// stat and unlink rates. Prints a table and writes tests/bench/results/fuse.json. MB = 10^6
// bytes. The machine is shared: compare ratios within one run.

// Bench only: the AWS SDK for the S3 rows.
import {
  CreateBucketCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import { Prng } from "../../mod/base/mod.ts";
import { readS3Credentials, type RunningRole } from "../e2e/_role.ts";
import {
  fuseMissing,
  lazyUnmount,
  type RunningServer,
  startClient,
  startServer,
} from "../fuse/_mount.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const MIB = 1024 * 1024;
/** The fio file: small enough for the cache and /tmp, large enough to stream. */
const FILE_BYTES = (QUICK ? 64 : 256) * MIB;
const RANDREAD_BYTES = (QUICK ? 4 : 16) * MIB;
const S3_OBJECT_BYTES = 64 * MIB;
const S3_REPS = QUICK ? 2 : 4;
const META_FILES = QUICK ? 100 : 400;
const HOST_OCTET = 87;
const RESULTS_PATH = new URL("./results/fuse.json", import.meta.url);

interface Row {
  test: string;
  unit: "MB/s" | "ops/s";
  /** Through the mount. */
  value: number;
  /** The same job on the local disk. */
  local: number;
  ratioToLocal: number;
  /** The S3 path's 64 MiB row for the same direction, where one compares. */
  s3: number | null;
  ratioToS3: number | null;
}

const round = (x: number, places = 1) => Math.round(x * 10 ** places) / 10 ** places;
const mbps = (bytes: number, ms: number) => round(bytes / 1e6 / (ms / 1000));

async function fio(dir: string, name: string, args: string[]): Promise<number> {
  const out = await new Deno.Command("fio", {
    args: [
      `--name=${name}`,
      `--directory=${dir}`,
      "--filename=bench.fio",
      "--ioengine=psync",
      "--invalidate=1",
      "--output-format=json",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`fio ${name} in ${dir} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const job = JSON.parse(text.slice(text.indexOf("{"))).jobs[0];
  const bytesPerS = Math.max(job.read.bw_bytes as number, job.write.bw_bytes as number);
  return round(bytesPerS / 1e6);
}

const seqWrite = (dir: string) =>
  fio(dir, "seqwrite", ["--rw=write", "--bs=1m", `--size=${FILE_BYTES}`, "--end_fsync=1"]);
const seqRead = (dir: string) =>
  fio(dir, "seqread", ["--rw=read", "--bs=1m", `--size=${FILE_BYTES}`]);
const randRead = (dir: string) =>
  fio(dir, "randread", [
    "--rw=randread",
    "--bs=4k",
    `--size=${FILE_BYTES}`,
    `--io_size=${RANDREAD_BYTES}`,
    "--randrepeat=1",
  ]);

/** Creates, stats and unlinks META_FILES small files in `dir`: operations per second each. */
async function metaRates(dir: string): Promise<{ create: number; stat: number; unlink: number }> {
  const sub = `${dir}/meta-${Date.now()}`;
  await Deno.mkdir(sub);
  const names = Array.from({ length: META_FILES }, (_, i) => `${sub}/f${i}`);
  const rate = async (fn: (p: string) => Promise<unknown>) => {
    const t0 = performance.now();
    for (const p of names) await fn(p);
    return round(names.length / ((performance.now() - t0) / 1000));
  };
  const body = new Uint8Array(100);
  const create = await rate((p) => Deno.writeFile(p, body));
  const stat = await rate((p) => Deno.stat(p));
  const unlink = await rate((p) => Deno.remove(p));
  await Deno.remove(sub);
  return { create, stat, unlink };
}

async function s3Rows(server: RunningServer): Promise<{ put: number; get: number }> {
  const s3 = new S3Client({
    endpoint: `http://${server.addrs.KISEKI_S3_ADDR}`,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: await readS3Credentials(server.s3CredentialsFile),
  });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: "s3bench" }));
    const prng = new Prng(0xf5);
    let putMs = 0, getMs = 0;
    // One warm-up object, then S3_REPS timed distinct objects (nothing deduplicates).
    for (let i = 0; i <= S3_REPS; i++) {
      const body = prng.bytes(S3_OBJECT_BYTES);
      let t0 = performance.now();
      await s3.send(new PutObjectCommand({ Bucket: "s3bench", Key: `o${i}`, Body: body }));
      const p = performance.now() - t0;
      t0 = performance.now();
      const r = await s3.send(new GetObjectCommand({ Bucket: "s3bench", Key: `o${i}` }));
      let n = 0;
      for await (const piece of r.Body!.transformToWebStream() as ReadableStream<Uint8Array>) {
        n += piece.length;
      }
      if (n !== S3_OBJECT_BYTES) throw new Error(`S3 GET returned ${n} bytes`);
      if (i > 0) {
        putMs += p;
        getMs += performance.now() - t0;
      }
    }
    return {
      put: mbps(S3_OBJECT_BYTES * S3_REPS, putMs),
      get: mbps(S3_OBJECT_BYTES * S3_REPS, getMs),
    };
  } finally {
    s3.destroy();
  }
}

const missing = fuseMissing();
if (missing !== null) {
  console.error(`bench:fuse needs a FUSE mount: ${missing}`);
  Deno.exit(1);
}
const base = await Deno.makeTempDir({ prefix: "kiseki-bench-fuse-" });
const local = `${base}/local`;
const mountpoint = `${base}/mnt`;
await Deno.mkdir(local);
await Deno.mkdir(mountpoint);
let server: RunningServer | null = null;
let client: RunningRole | null = null;
const mount = async (cacheDir: string) => {
  client = await startClient({ dataAddr: server!.addrs.KISEKI_DATA_ADDR, mountpoint, cacheDir });
};
const unmount = async () => {
  if (client === null) return;
  const code = await client.stop("SIGTERM");
  if (code !== 0) throw new Error(`the client exited ${code}: ${client.stderr()}`);
  client = null;
};
try {
  server = await startServer({ hostOctet: HOST_OCTET, base });
  const s3 = await s3Rows(server);

  await mount(`${base}/cache-1`);
  const dir = `${mountpoint}/fusebench`;
  await Deno.mkdir(dir);
  const write = { mount: await seqWrite(dir), local: await seqWrite(local) };
  // Cold: a new client with an empty cache on a new mount (no L1, L2 or page cache).
  await unmount();
  await mount(`${base}/cache-2`);
  const cold = { mount: await seqRead(dir), local: await seqRead(local) };
  // Warm: the chunks are in L1/L2 now; fio drops the file's page cache before the job.
  const warm = { mount: await seqRead(dir), local: await seqRead(local) };
  const rand = { mount: await randRead(dir), local: await randRead(local) };
  const meta = { mount: await metaRates(dir), local: await metaRates(local) };
  await unmount();

  const row = (
    test: string,
    unit: Row["unit"],
    v: { mount: number; local: number },
    s3Value: number | null,
  ): Row => ({
    test,
    unit,
    value: v.mount,
    local: v.local,
    ratioToLocal: round(v.mount / v.local, 4),
    s3: s3Value,
    ratioToS3: s3Value === null ? null : round(v.mount / s3Value, 3),
  });
  const rows: Row[] = [
    row("seq write 1 MiB", "MB/s", write, s3.put),
    row("seq read 1 MiB, cold", "MB/s", cold, s3.get),
    row("seq read 1 MiB, warm (L1/L2)", "MB/s", warm, s3.get),
    row("rand read 4 KiB, warm", "MB/s", rand, null),
    row("create", "ops/s", { mount: meta.mount.create, local: meta.local.create }, null),
    row("stat", "ops/s", { mount: meta.mount.stat, local: meta.local.stat }, null),
    row("unlink", "ops/s", { mount: meta.mount.unlink, local: meta.local.unlink }, null),
  ];
  table(
    console.log,
    ["test", "unit", "mount", "local disk", "ratio", "S3 64 MiB", "ratio to S3"],
    rows.map((
      r,
    ) => [r.test, r.unit, r.value, r.local, r.ratioToLocal, r.s3 ?? "-", r.ratioToS3 ?? "-"]),
    { leftColumns: 2 },
  );
  console.log(
    `S3 path (JS SDK, same node): PUT ${s3.put} MB/s, GET ${s3.get} MB/s; fio file ${
      FILE_BYTES / MIB
    } MiB; MB = 10^6 bytes`,
  );
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        mode: QUICK ? "quick" : "full",
        fileBytes: FILE_BYTES,
        s3: {
          objectBytes: S3_OBJECT_BYTES,
          reps: S3_REPS,
          putMbPerSecond: s3.put,
          getMbPerSecond: s3.get,
        },
        rows,
      },
      null,
      2,
    ) + "\n",
  );
} catch (e) {
  // What the roles said is the first thing to read when a run fails.
  const c = client as RunningRole | null;
  console.error(`client log:\n${c?.stderr().slice(-4000) ?? "(not running)"}`);
  console.error(`server log:\n${server?.role.stderr().slice(-4000) ?? "(not running)"}`);
  throw e;
} finally {
  await (client as RunningRole | null)?.stop("SIGKILL");
  await lazyUnmount(mountpoint);
  await server?.stop("SIGTERM");
  await Deno.remove(base, { recursive: true }).catch(() => {});
  await Deno.remove(`${base}/server.s3-credentials`).catch(() => {});
}
