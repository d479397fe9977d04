// `deno task bench:fabric [--quick]` (deno run -A tests/bench/fabric_bench.ts): chunk fabric
// throughput for 1 MiB fragments over loopback. A peer process runs a Raft transport with a
// FabricServer on its port (the store in it keeps nothing: a put is acknowledged once its
// bytes arrived, a get answers a 1 MiB fragment from the buffer the fabric lends it, as the
// disk store reads into it), and this process's FabricClient
// puts and gets fragments at 1 and 16 callers (each sequential: its next request after the
// last one's answer). Puts send from buffers the client lends (as the erasure coder will
// fill them), gets receive into one reused buffer per caller. The same-run ceiling is bare loopback TCP between the same two
// processes: node:net sockets moving the same number of 1 MiB buffers one way, no framing,
// no answers, measured right before and after each case; the ratio is fabric MB/s over the
// better of the two. Target: >= 0.7x. Prints a table and writes
// tests/bench/results/fabric.json. The same cases run again over mutual TLS (certificates
// from scripts/gen_certs.sh) against a bare node:tls ceiling, for information.
//
//   deno run -A tests/bench/fabric_bench.ts [--quick]

import * as net from "node:net";
import * as tls from "node:tls";
import { FabricClient, FabricServer, TcpRaftTransport } from "../../mod/transport/mod.ts";
import type { FragmentHandler, TlsMaterial } from "../../mod/transport/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { table } from "./_table.ts";

const MIB = 1 << 20;
const QUICK = Deno.args.includes("--quick");
const PEER = Deno.args.includes("--peer");
const RESULTS = new URL("./results/fabric.json", import.meta.url);
const FRAGMENT_BYTES = MIB;
const CONCURRENCY = [1, 16];
/** Fragments moved per case (after the warm-up), and the time box of one case. */
const FRAGMENTS_PER_CASE = QUICK ? 256 : 4096;
const CASE_SECONDS_MAX = QUICK ? 5 : 30;
const WARMUP_FRAGMENTS = QUICK ? 32 : 256;
const TARGET_RATIO = 0.7;
const CLUSTER = "bench-fabric";
const HOST = "127.0.0.1";

const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));
const progress = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));

// ---- the peer process ------------------------------------------------------------------

/** A store that keeps nothing, so the numbers are the fabric's: see the header. */
function nullStore(): FragmentHandler {
  const resident = { length: FRAGMENT_BYTES };
  return {
    put: () => Promise.resolve(),
    // As the disk store will: the range is read straight into the buffer the fabric sends
    // from (here nothing is read: the bytes are whatever the pool held).
    get: (r) => {
      const length = Math.max(0, Math.min(r.lengthMax, resident.length - r.offset));
      return Promise.resolve({ bytes: r.allocate(length), sizeBytes: resident.length });
    },
    stat: () => Promise.resolve({ sizeBytes: resident.length, meta: new Uint8Array(0) }),
    delete: () => Promise.resolve(true),
  };
}

/**
 * The ceiling's peer: a connection opens with "P" + u32 count (it then sends count x 1 MiB,
 * answered by one byte at the end) or "G" + u32 count (the peer sends count x 1 MiB).
 */
function ceilingServer(material: TlsMaterial | null): net.Server {
  const block = new Uint8Array(FRAGMENT_BYTES).fill(7);
  const serve = (socket: net.Socket) => {
    let head = new Uint8Array(0);
    let expect = -1;
    let got = 0;
    socket.on("error", () => {});
    socket.on("data", (chunk: Uint8Array) => {
      if (expect < 0) {
        const all = new Uint8Array(head.length + chunk.length);
        all.set(head);
        all.set(chunk, head.length);
        if (all.length < 5) {
          head = all;
          return;
        }
        const count = new DataView(all.buffer).getUint32(1);
        if (all[0] === 0x47) { // "G"
          expect = 0;
          let sent = 0;
          const pump = () => {
            while (sent < count) {
              sent++;
              if (!socket.write(block)) {
                socket.once("drain", pump);
                return;
              }
            }
          };
          pump();
          return;
        }
        expect = count * FRAGMENT_BYTES;
        chunk = all.subarray(5);
      }
      got += chunk.length;
      if (expect > 0 && got >= expect) socket.write(new Uint8Array([1]));
    });
  };
  return material === null
    ? net.createServer({ noDelay: true }, serve)
    : tls.createServer({ ...tlsOptions(material), requestCert: true }, serve);
}

function tlsOptions(m: TlsMaterial) {
  return { ca: [m.ca], cert: m.cert, key: m.key, minVersion: "TLSv1.2" as const };
}

function connectCeiling(port: number, material: TlsMaterial | null): Promise<net.Socket> {
  const socket = material === null
    ? net.connect({ host: HOST, port, noDelay: true })
    : tls.connect({ host: HOST, port, ...tlsOptions(material) });
  socket.setNoDelay(true);
  return new Promise((resolve, reject) => {
    socket.once(material === null ? "connect" : "secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** The peer's TLS material (node2) and this process's (node1), from gen_certs.sh. */
async function readMaterial(dir: string, name: string): Promise<TlsMaterial> {
  return {
    ca: await Deno.readTextFile(`${dir}/ca.crt`),
    cert: await Deno.readTextFile(`${dir}/${name}/server.crt`),
    key: await Deno.readTextFile(`${dir}/${name}/server.key`),
  };
}

async function runPeer(): Promise<void> {
  const logger = createLogger({
    level: "warn",
    format: "text",
    sink: { write: (l) => progress(l) },
  });
  const tlsDir = Deno.args.find((a) => a.startsWith("--tls-dir="))?.slice("--tls-dir=".length);
  const ports: Record<string, { fabricPort: number; ceilingPort: number }> = {};
  for (const transportKind of tlsDir === undefined ? ["tcp"] : ["tcp", "mtls"]) {
    const material = transportKind === "tcp" ? null : await readMaterial(tlsDir!, "node2");
    const transport = await TcpRaftTransport.listen({
      nodeId: 2,
      clusterId: CLUSTER,
      listen: { host: HOST, port: 0 },
      peers: [],
      tls: material,
      logger,
    });
    FabricServer.attach(transport, {
      nodeId: 2,
      clusterId: CLUSTER,
      handler: nullStore(),
      logger,
    });
    const ceiling = ceilingServer(material);
    await new Promise<void>((r) => ceiling.listen(0, HOST, r));
    const ceilingPort = (ceiling.address() as net.AddressInfo).port;
    ports[transportKind] = { fabricPort: transport.addr.port, ceilingPort };
  }
  print(JSON.stringify(ports));
  // Runs until the bench closes its stdin.
  for await (const _ of Deno.stdin.readable) { /* nothing comes */ }
  Deno.exit(0);
}

// ---- the ceiling -----------------------------------------------------------------------

async function ceilingPut(
  port: number,
  count: number,
  material: TlsMaterial | null,
): Promise<number> {
  const socket = await connectCeiling(port, material);
  const head = new Uint8Array(5);
  head[0] = 0x50; // "P"
  new DataView(head.buffer).setUint32(1, count);
  const block = new Uint8Array(FRAGMENT_BYTES).fill(3);
  const acked = new Promise((r) => socket.once("data", r));
  const started = performance.now();
  socket.write(head);
  for (let i = 0; i < count; i++) {
    if (!socket.write(block)) await new Promise((r) => socket.once("drain", r));
  }
  await acked;
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  return (count * FRAGMENT_BYTES) / 1e6 / seconds;
}

async function ceilingGet(
  port: number,
  count: number,
  material: TlsMaterial | null,
): Promise<number> {
  const socket = await connectCeiling(port, material);
  const head = new Uint8Array(5);
  head[0] = 0x47; // "G"
  new DataView(head.buffer).setUint32(1, count);
  let got = 0;
  const done = new Promise<void>((resolve) =>
    socket.on("data", (c: Uint8Array) => {
      got += c.length;
      if (got >= count * FRAGMENT_BYTES) resolve();
    })
  );
  const started = performance.now();
  socket.write(head);
  await done;
  const seconds = (performance.now() - started) / 1000;
  socket.destroy();
  return (count * FRAGMENT_BYTES) / 1e6 / seconds;
}

// ---- the fabric ------------------------------------------------------------------------

interface Row {
  /** tcp: plain TCP (the target's rows); mtls: mutual TLS on both the fabric and the ceiling. */
  transport: "tcp" | "mtls";
  op: "put" | "get";
  concurrency: number;
  fragmentBytes: number;
  fragments: number;
  seconds: number;
  mbPerSecond: number;
  ceilingMbPerSecond: number;
  /** The ceiling right before and right after this case (the larger is the ceiling). */
  ceilingRunsMbPerSecond: number[];
  /** mbPerSecond / ceilingMbPerSecond. */
  ratio: number;
  p50Ms: number;
  p99Ms: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
}

async function fabricCase(
  client: FabricClient,
  op: "put" | "get",
  concurrency: number,
  fragments: number,
): Promise<{ seconds: number; done: number; latencies: number[] }> {
  const chunkId = new Uint8Array(32).fill(op === "put" ? 1 : 2);
  // One receive buffer per caller, reused: the pooled path a reader takes.
  const into = Array.from({ length: concurrency }, () => new Uint8Array(FRAGMENT_BYTES));
  const latencies: number[] = [];
  let next = 0;
  const deadline = performance.now() + CASE_SECONDS_MAX * 1000;
  const worker = async (w: number) => {
    while (next < fragments && performance.now() < deadline) {
      const index = next++;
      const t0 = performance.now();
      if (op === "put") {
        // As an erasure coder would: the fragment is produced in a buffer the fabric lends,
        // which goes out without a copy (here its bytes are whatever the pool held).
        const bytes = client.lendFragmentBuffer(FRAGMENT_BYTES);
        await client.put(2, { chunkId, index, bytes });
      } else {
        const r = await client.get(2, { chunkId, index, length: FRAGMENT_BYTES, into: into[w] });
        if (r.bytes.length !== FRAGMENT_BYTES) throw new Error(`short get: ${r.bytes.length}`);
      }
      latencies.push(performance.now() - t0);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
  return { seconds: (performance.now() - started) / 1000, done: latencies.length, latencies };
}

/** TLS material for the mtls rows, or null (with the reason printed) when openssl is missing. */
async function makeCertificates(): Promise<string | null> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-fabric-bench-tls-" });
  try {
    const out = await new Deno.Command("bash", {
      args: [
        new URL("../../scripts/gen_certs.sh", import.meta.url).pathname,
        "--out",
        dir,
        "--node",
        `node1:${HOST}`,
        "--node",
        `node2:${HOST}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (out.success) return dir;
    progress(`no mtls rows: gen_certs.sh failed: ${new TextDecoder().decode(out.stderr)}`);
  } catch (e) {
    progress(`no mtls rows: ${(e as Error).message}`);
  }
  await Deno.remove(dir, { recursive: true });
  return null;
}

async function main(): Promise<void> {
  const startedAll = performance.now();
  const loadBefore = Deno.loadavg();
  const tlsDir = await makeCertificates();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--peer",
      ...(tlsDir === null ? [] : [`--tls-dir=${tlsDir}`]),
    ],
    env: { NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the peer process exited before listening");
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  void child.stdout.cancel();
  const ports = JSON.parse(text.trim()) as Record<
    string,
    { fabricPort: number; ceilingPort: number }
  >;
  const logger = createLogger({
    level: "warn",
    format: "text",
    sink: { write: (l) => progress(l) },
  });
  const rows: Row[] = [];
  try {
    for (const transport of ["tcp", "mtls"] as const) {
      if (ports[transport] === undefined) continue;
      const { fabricPort, ceilingPort } = ports[transport]!;
      const material = transport === "tcp" ? null : await readMaterial(tlsDir!, "node1");
      const client = new FabricClient({
        nodeId: 1,
        clusterId: CLUSTER,
        peers: [{ id: 2, addr: { host: HOST, port: fabricPort } }],
        tls: material,
        logger,
      });
      try {
        for (const op of ["put", "get"] as const) {
          for (const concurrency of CONCURRENCY) {
            // The ceiling is measured right before and right after each case, the better
            // kept: a noisy moment on a shared machine then does not flatter the ratio.
            const ceiling = op === "put" ? ceilingPut : ceilingGet;
            progress(
              `${transport} ${op} c=${concurrency}: ceiling, fabric (${FRAGMENTS_PER_CASE} x 1 MiB), ceiling`,
            );
            const before = await ceiling(ceilingPort, FRAGMENTS_PER_CASE, material);
            await fabricCase(client, op, concurrency, WARMUP_FRAGMENTS);
            const r = await fabricCase(client, op, concurrency, FRAGMENTS_PER_CASE);
            const after = await ceiling(ceilingPort, FRAGMENTS_PER_CASE, material);
            const sorted = r.latencies.slice().sort((a, b) => a - b);
            const mbPerSecond = (r.done * FRAGMENT_BYTES) / 1e6 / r.seconds;
            const ceilingMbPerSecond = Math.max(before, after);
            rows.push({
              transport,
              op,
              concurrency,
              fragmentBytes: FRAGMENT_BYTES,
              fragments: r.done,
              seconds: r.seconds,
              mbPerSecond,
              ceilingMbPerSecond,
              ceilingRunsMbPerSecond: [before, after],
              ratio: mbPerSecond / ceilingMbPerSecond,
              p50Ms: percentile(sorted, 0.5),
              p99Ms: percentile(sorted, 0.99),
            });
          }
        }
      } finally {
        await client.close();
      }
    }
  } finally {
    await child.stdin.close();
    await child.status;
    if (tlsDir !== null) await Deno.remove(tlsDir, { recursive: true });
  }
  const best = Math.max(...rows.map((r) => r.ratio));
  const atSixteen = rows.filter((r) => r.concurrency === 16 && r.transport === "tcp");
  const met = atSixteen.every((r) => r.ratio >= TARGET_RATIO);

  const f = (v: number, d = 1) => v.toFixed(d);
  print(
    `bench:fabric ${QUICK ? "--quick" : "(full)"}: 1 MiB fragments over loopback, ` +
      `client and server in two processes, plain TCP and mutual TLS`,
  );
  print(
    "ceiling: bare node:net (tcp) or node:tls (mtls) loopback between the same processes, " +
      "1 MiB writes one way (put: this process sends; get: it receives), best of right " +
      "before and right after the case",
  );
  print();
  table(
    print,
    [
      "transport",
      "op",
      "callers",
      "fragments",
      "MB/s",
      "ceiling MB/s",
      "(before/after)",
      "ratio",
      "p50 ms",
      "p99 ms",
    ],
    rows.map((r) => [
      r.transport,
      r.op,
      r.concurrency,
      r.fragments,
      f(r.mbPerSecond, 0),
      f(r.ceilingMbPerSecond, 0),
      r.ceilingRunsMbPerSecond.map((v) => f(v, 0)).join("/"),
      r.ratio.toFixed(2),
      f(r.p50Ms, 2),
      f(r.p99Ms, 2),
    ]),
    { leftColumns: 2 },
  );
  print();
  print(
    `target >= ${TARGET_RATIO}x of the ceiling at 16 callers over TCP: ${
      met ? "MET" : "NOT MET"
    } ` +
      `(${atSixteen.map((r) => `${r.op} ${r.ratio.toFixed(2)}x`).join(", ")}; best ${
        best.toFixed(2)
      }x)`,
  );
  print(
    `load average before ${loadBefore.map((l) => l.toFixed(1)).join(" ")}, after ${
      Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
    } on ${navigator.hardwareConcurrency} CPUs (a shared machine: numbers are noisy)`,
  );
  await Deno.mkdir(new URL(".", RESULTS), { recursive: true });
  await Deno.writeTextFile(
    RESULTS,
    JSON.stringify(
      {
        bench: "fabric",
        mode: QUICK ? "quick" : "full",
        date: new Date().toISOString(),
        elapsedSeconds: (performance.now() - startedAll) / 1000,
        host: {
          cpus: navigator.hardwareConcurrency,
          deno: Deno.version.deno,
          loadavgBefore: loadBefore,
          loadavgAfter: Deno.loadavg(),
        },
        method: {
          peer: "a second process: TcpRaftTransport + FabricServer, a store that keeps nothing",
          client: "FabricClient, sequential callers, gets into reused per-caller buffers",
          fragmentBytes: FRAGMENT_BYTES,
          fragmentsPerCase: FRAGMENTS_PER_CASE,
          warmupFragments: WARMUP_FRAGMENTS,
          ceiling: "node:net socket pair between the same processes, 1 MiB writes one way, " +
            "best of right before and right after each case",
          ratio: "mbPerSecond / ceilingMbPerSecond",
        },
        rows,
        targets: { ratioMin: TARGET_RATIO, met },
      },
      null,
      2,
    ) + "\n",
  );
}

if (PEER) await runPeer();
else await main();
