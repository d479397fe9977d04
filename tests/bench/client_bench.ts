// `deno run -A tests/bench/client_bench.ts [--quick]`: the native client library's 64 MiB
// put and get (chunking, ids and sealing in this process, sealed chunks over the client
// transport, metadata over gRPC) beside the S3 path's 64 MiB PUT and GET (the JS SDK, the
// gateway chunking and sealing on the node) against the same real `kiseki server`, in the
// same run, each object distinct (nothing deduplicates). The S3 GETs may be answered from
// the node's plaintext chunk cache (KISEKI_CHUNK_CACHE_MAX); the client's read sealed chunks
// from the store and open them itself (it runs with no chunk cache here: bypass). On a 2-core machine the client and
// the node compete for CPU, as a client on a storage node would. Prints a table and writes
// tests/bench/results/client.json. MB = 10^6 bytes.

// Bench only: the AWS SDK for the S3 rows.
import {
  CreateBucketCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  // deno-lint-ignore no-import-prefix
} from "npm:@aws-sdk/client-s3@3.1175.0";
import { Prng } from "../../mod/base/mod.ts";
import { connectClusterClient } from "../../mod/client/mod.ts";
import { selectAead } from "../../mod/crypto/mod.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { log } from "../../mod/obs/mod.ts";
import {
  readS3Credentials,
  type RunningRole,
  startRole,
  testAddrs,
  waitForHttp,
} from "../e2e/_role.ts";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const MIB = 1024 * 1024;
const SIZE = 64 * MIB;
const REPS = QUICK ? 2 : 5;
const RESULTS_PATH = new URL("./results/client.json", import.meta.url);

interface Row {
  path: string;
  op: string;
  mb: number;
  ceiling: number | null;
  ratio: number | null;
}

function mbps(bytes: number, ms: number): number {
  return Math.round((bytes / 1e6) / (ms / 1000) * 10) / 10;
}

async function drain(stream: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const piece of stream) n += piece.length;
  return n;
}

const dataDir = await Deno.makeTempDir({ prefix: "kiseki-bench-client-" });
const env = { ...testAddrs(165), KISEKI_DATA_DIR: dataDir, KISEKI_LOG_LEVEL: "warn" };
let server: RunningRole | null = null;
try {
  server = startRole("server", env);
  await waitForHttp(`http://${env.KISEKI_METRICS_ADDR}/health`, "OK", 90_000);
  const [host, port] = env.KISEKI_DATA_ADDR.split(":") as [string, string];
  // The AEAD the node uses too (OpenSSL through its shim, else WebCrypto), as the client
  // role would pass it.
  const client = await connectClusterClient({
    addrs: [{ host, port: Number(port) }],
    tls: null,
    logger: log,
    aead: selectAead({ ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" }),
  });
  const s3 = new S3Client({
    endpoint: `http://${env.KISEKI_S3_ADDR}`,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: await readS3Credentials(`${dataDir}.s3-credentials`),
  });
  const prng = new Prng(0xbe);
  const bodies = Array.from({ length: REPS + 1 }, () => prng.bytes(SIZE));
  await client.backend.createNamespace(client.tenantId, "clientbench");
  const ns = client.backend.namespace(client.tenantId, "clientbench");
  await s3.send(new CreateBucketCommand({ Bucket: "s3bench" }));
  const time = async (fn: () => Promise<void>) => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  const results: Record<string, number> = {};
  for (const path of ["client", "s3"] as const) {
    // One warm-up object, then REPS timed puts and gets of distinct objects.
    let putMs = 0;
    let getMs = 0;
    for (let i = 0; i <= REPS; i++) {
      const key = `o-${i}`;
      const body = bodies[i]!;
      const put = path === "client"
        ? () => client.backend.putObject(ns, key, body).then(() => {})
        : () =>
          s3.send(new PutObjectCommand({ Bucket: "s3bench", Key: key, Body: body })).then(() => {});
      const get = path === "client"
        ? async () => {
          const n = await drain((await client.backend.getObject(ns, key)).body);
          if (n !== SIZE) throw new Error(`client get returned ${n} bytes`);
        }
        : async () => {
          const r = await s3.send(new GetObjectCommand({ Bucket: "s3bench", Key: key }));
          const n = await drain(r.Body!.transformToWebStream() as ReadableStream<Uint8Array>);
          if (n !== SIZE) throw new Error(`s3 get returned ${n} bytes`);
        };
      const p = await time(put);
      const g = await time(get);
      if (i > 0) {
        putMs += p;
        getMs += g;
      }
    }
    results[`${path}-put`] = mbps(SIZE * REPS, putMs);
    results[`${path}-get`] = mbps(SIZE * REPS, getMs);
  }
  s3.destroy();
  await client.close();
  const rows: Row[] = (["put", "get"] as const).flatMap((op) => [
    { path: "S3 (JS SDK)", op, mb: results[`s3-${op}`]!, ceiling: null, ratio: null },
    {
      path: "client library",
      op,
      mb: results[`client-${op}`]!,
      ceiling: results[`s3-${op}`]!,
      ratio: Math.round(results[`client-${op}`]! / results[`s3-${op}`]! * 100) / 100,
    },
  ]);
  table(
    console.log,
    ["path", "op", "size", "MB/s", "S3 MB/s", "ratio"],
    rows.map((r) => [r.path, r.op, "64 MiB", r.mb, r.ceiling ?? "-", r.ratio ?? "-"]),
    { leftColumns: 3 },
  );
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify({ date: new Date().toISOString(), quick: QUICK, reps: REPS, rows }, null, 2) +
      "\n",
  );
} finally {
  await server?.stop();
  await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  await Deno.remove(`${dataDir}.s3-credentials`).catch(() => {});
}
