// Load generator for `deno task bench:s3`, run as its own process so that its CPU is not the
// server's event loop. `concurrency` workers, each sequential (the next request after the
// last one's response body is fully read), on keep-alive connections (fetch's pool). Every
// request to the gateway is signed with SigV4 by the AWS SDK's signer (@smithy/signature-v4);
// a PUT carries the SHA-256 of its body in x-amz-content-sha256, as the SDK sends over http,
// computed once since every PUT sends the same pooled payload buffer. `--unsigned` sends
// the same requests without signing (for the bare-HTTP ceiling server).
//
//   deno run -A tests/bench/s3_load.ts --endpoint=http://127.0.0.1:29000 --bucket=b \
//     --access-key=AK --secret-key=SK --size=65536 --concurrency=16 --op=put \
//     --seconds=2 --count=20000 [--keys=64] [--prefix=bench] [--warmup-ms=200] [--unsigned]
//     [--dirs=N]
//
// `--dirs=N` spreads the PUT keys over N directories (`<prefix>/dNNN/<i>`), for listings.
// `--op=list` sends ListObjectsV2 requests instead (one request, one page, is one op):
// `--list-prefix=P [--delimiter=/] [--max-keys=1000] --expect=N` checks every answer's
// KeyCount (keys plus common prefixes) is N.
//
// Prints one JSON line (MB = 10^6 bytes, as the other benches): {op, size, concurrency, ops, bytes, seconds, opsPerSecond,
// mbPerSecond, p50Ms, p99Ms, errors, firstError, keysWritten}.
//
//   deno run -A tests/bench/s3_load.ts serve --addr=127.0.0.1:29500
//
// The ceiling server: a bare Deno.serve that answers GET with the requested number of
// bytes (`?size=` or the `x-size` header) streamed from pooled 64 KiB / 1 MiB buffers, and
// PUT by reading and discarding the body. `--server=http1` serves the same with the S3
// listener's own HTTP/1.1 (mod/s3/http1.ts) instead, `--server=listener` with the whole S3
// listener; `--body=bytes` answers GET with one fresh Uint8Array instead of a stream of
// pooled buffers.

import { Buffer } from "node:buffer";
import { createHash, createHmac, type Hash, type Hmac } from "node:crypto";
// Bench only: the AWS SDK's SigV4 signer, so requests are signed as an SDK signs them.
// deno-lint-ignore no-import-prefix
import { SignatureV4 } from "npm:@smithy/signature-v4@5.7.5";
import type { S3HttpRequest } from "../../mod/s3/mod.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
/** Upper bound on the latency samples kept (and ops run) whatever the arguments say. */
const OPS_MAX = 1_000_000;

function arg(name: string): string | undefined {
  return Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

function need(name: string): string {
  const v = arg(name);
  if (v === undefined) throw new Error(`s3_load: --${name}= is required`);
  return v;
}

function toBuffer(data: ArrayBuffer | ArrayBufferView): Buffer {
  return data instanceof ArrayBuffer
    ? Buffer.from(data)
    : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** node:crypto SHA-256 / HMAC in the shape @smithy/signature-v4 expects. */
export class NodeSha256 {
  readonly #hash: Hash | Hmac;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#hash = secret === undefined
      ? createHash("sha256")
      : createHmac("sha256", typeof secret === "string" ? secret : toBuffer(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#hash.update(typeof data === "string" ? data : toBuffer(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#hash.digest()));
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

const round = (v: number, digits: number) => Number.isFinite(v) ? Number(v.toFixed(digits)) : null;

// ---- ceiling server ----------------------------------------------------------------------

async function serve(): Promise<void> {
  const [host, port] = need("addr").split(":");
  const pool64k = new Uint8Array(64 * KIB).fill(0x6b);
  const pool1m = new Uint8Array(MIB).fill(0x6b);
  // `--body=bytes`: GET answers are one Uint8Array (a fresh one each) instead of a stream.
  const bytesBody = arg("body") === "bytes";
  // A clean exit on Ctrl-C, so `--cpu-prof` writes its profile.
  Deno.addSignalListener("SIGINT", () => Deno.exit(0));
  const handler = async (request: Request | S3HttpRequest): Promise<Response> => {
    if (request.method === "PUT") {
      let n = 0;
      if (request.body) { for await (const c of request.body) n += c.byteLength; }
      return new Response(null, { status: 200, headers: { etag: `"${n}"` } });
    }
    const url = new URL(request.url);
    if (url.pathname === "/health") return new Response("OK");
    const size = Number(url.searchParams.get("size") ?? request.headers.get("x-size") ?? 0);
    const headers = { "content-length": String(size) };
    if (bytesBody) return new Response(new Uint8Array(size).fill(0x6b), { headers });
    const pool = size <= 64 * KIB ? pool64k : pool1m;
    let left = size;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (left <= 0) return controller.close();
        const n = Math.min(left, pool.length);
        controller.enqueue(n === pool.length ? pool : pool.subarray(0, n));
        left -= n;
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers });
  };
  // `--server=http1`: the S3 listener's own HTTP (mod/s3/http1.ts) on each connection in
  // place of Deno.serve; `--server=listener`: the whole S3 listener (its limits too).
  // Imported here: the load generator itself never needs the server's modules.
  if (arg("server") === "http1") {
    const { serveHttp1 } = await import("../../mod/s3/http1.ts");
    const listener = Deno.listen({ hostname: host!, port: Number(port) });
    for await (const conn of listener) {
      serveHttp1(conn, {
        handler,
        onError: () => new Response(null, { status: 500 }),
        defaultHost: `${host}:${port}`,
      });
    }
  } else if (arg("server") === "listener") {
    const { listenS3 } = await import("../../mod/s3/mod.ts");
    listenS3({ hostname: host!, port: Number(port), handler });
  } else {
    Deno.serve({ hostname: host, port: Number(port), onListen: () => {} }, handler);
  }
}

// ---- load ---------------------------------------------------------------------------------

async function load(): Promise<void> {
  const endpoint = need("endpoint").replace(/\/$/, "");
  const bucket = need("bucket");
  const op = need("op");
  if (op !== "put" && op !== "get" && op !== "list") {
    throw new Error(`s3_load: --op=${op}: put, get or list`);
  }
  const size = op === "list" ? 0 : Number(need("size"));
  const concurrency = Number(need("concurrency"));
  const seconds = Number(need("seconds"));
  const count = Math.min(OPS_MAX, Number(need("count")));
  const keys = Math.max(1, Number(arg("keys") ?? "64"));
  const prefix = arg("prefix") ?? `bench-${size}`;
  const warmupMs = Number(arg("warmup-ms") ?? "0");
  const unsigned = Deno.args.includes("--unsigned");
  const dirs = Math.max(0, Number(arg("dirs") ?? "0"));
  const listQuery: Record<string, string> = op === "list"
    ? {
      "list-type": "2",
      prefix: need("list-prefix"),
      "max-keys": arg("max-keys") ?? "1000",
      ...(arg("delimiter") === undefined ? {} : { delimiter: arg("delimiter")! }),
    }
    : {};
  const listExpected = op === "list" ? Number(need("expect")) : 0;
  const url = new URL(endpoint);

  // Every PUT sends distinct content (no chunk deduplicates against another), as a real
  // workload does: each worker owns a payload buffer and stamps the op index into every
  // 64 KiB of it (every chunk the gateway cuts contains a stamp), then hashes it for
  // x-amz-content-sha256 as an SDK does over http.
  const template = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) template[i] = (i >> 12) & 0xff;
  // Allocated before anything is timed (fresh large buffers are slow to fault in).
  const payloads: Uint8Array[] = op === "put"
    ? Array.from({ length: concurrency }, () => template.slice())
    : [];
  const payloadFor = (worker: number, index: number): { body: Uint8Array; hash: string } => {
    const body = payloads[worker] ??= template.slice();
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    for (let at = 0; at + 8 <= size; at += 64 * KIB) {
      view.setUint32(at, index);
      view.setUint32(at + 4, worker ^ 0x6b697365);
    }
    return { body, hash: createHash("sha256").update(body).digest("hex") };
  };
  const signer = unsigned ? null : new SignatureV4({
    service: "s3",
    region: "us-east-1",
    credentials: { accessKeyId: need("access-key"), secretAccessKey: need("secret-key") },
    sha256: NodeSha256,
    uriEscapePath: false,
  });

  async function once(
    worker: number,
    index: number,
  ): Promise<{ bytes: number; error: string | null }> {
    const key = index % keys;
    const path = op === "list"
      ? `/${bucket}`
      : dirs > 0
      ? `/${bucket}/${prefix}/d${String(key % dirs).padStart(3, "0")}/${key}`
      : `/${bucket}/${prefix}/${key}`;
    const query = op === "list" ? listQuery : {};
    const search = new URLSearchParams(query).toString().replaceAll("+", "%20");
    const payload = op === "put" ? payloadFor(worker, index) : null;
    const headers: Record<string, string> = {
      host: url.host,
      "x-amz-content-sha256": payload !== null
        ? payload.hash
        : "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    };
    if (op === "put") headers["content-length"] = String(size);
    if (unsigned) headers["x-size"] = String(size);
    let sent = headers;
    if (signer !== null) {
      const signed = await signer.sign({
        method: op === "put" ? "PUT" : "GET",
        protocol: url.protocol,
        hostname: url.hostname,
        port: Number(url.port),
        path,
        query,
        headers,
      });
      sent = { ...signed.headers } as Record<string, string>;
    }
    delete sent.host;
    const response = await fetch(`${endpoint}${path}${search ? `?${search}` : ""}`, {
      method: op === "put" ? "PUT" : "GET",
      headers: sent,
      body: payload?.body as Uint8Array<ArrayBuffer> | undefined,
    });
    if (op === "list") {
      const text = await response.text();
      if (response.status !== 200) {
        return { bytes: 0, error: `LIST ${search}: ${response.status} ${text.slice(0, 200)}` };
      }
      const keyCount = Number(text.match(/<KeyCount>(\d+)<\/KeyCount>/)?.[1] ?? -1);
      if (keyCount !== listExpected) {
        return {
          bytes: 0,
          error: `LIST ${search}: KeyCount ${keyCount}, expected ${listExpected}`,
        };
      }
      return { bytes: new TextEncoder().encode(text).length, error: null };
    }
    let bytes = 0;
    if (response.body) {
      for await (const chunk of response.body) bytes += chunk.byteLength;
    }
    if (response.status !== 200) {
      return { bytes: 0, error: `${op.toUpperCase()} ${path}: ${response.status}` };
    }
    if (op === "get" && bytes !== size) {
      return { bytes: 0, error: `GET ${path}: ${bytes} bytes, expected ${size}` };
    }
    return { bytes: op === "put" ? size : bytes, error: null };
  }

  // Warm-up (not counted): connections opened, code paths compiled.
  let next = 0;
  if (warmupMs > 0) {
    const until = performance.now() + warmupMs;
    await Promise.all(Array.from({ length: concurrency }, async (_, worker) => {
      while (performance.now() < until && next < count) await once(worker, next++);
    }));
  }

  const latencies = new Float64Array(count);
  let ops = 0;
  let bytes = 0;
  let errors = 0;
  let firstError: string | null = null;
  let issued = 0;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async (_, worker) => {
    while (issued < count && performance.now() < deadline) {
      const index = next++;
      issued++;
      const t0 = performance.now();
      try {
        const r = await once(worker, index);
        if (r.error !== null) {
          errors++;
          firstError ??= r.error;
          continue;
        }
        latencies[ops++] = performance.now() - t0;
        bytes += r.bytes;
      } catch (e) {
        errors++;
        firstError ??= (e as Error).message;
      }
    }
  }));
  const elapsed = (performance.now() - start) / 1000;
  const sorted = latencies.subarray(0, ops).sort();
  console.log(JSON.stringify({
    op,
    size,
    concurrency,
    ops,
    bytes,
    seconds: round(elapsed, 3),
    opsPerSecond: round(ops / elapsed, 1),
    mbPerSecond: round(bytes / 1e6 / elapsed, 1),
    p50Ms: round(percentile(sorted, 0.5), 2),
    p99Ms: round(percentile(sorted, 0.99), 2),
    errors,
    firstError,
    keysWritten: op === "put" ? Math.min(keys, next) : null,
    // Every request sent, warm-up included: what the server's CPU time is divided by.
    requests: next,
  }));
}

if (import.meta.main) {
  if (Deno.args[0] === "serve") await serve();
  else await load();
}
