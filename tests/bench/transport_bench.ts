// Client transports on loopback: one-way streams of frames (1 MiB and 64 KiB) through every
// transport available here (the TCP twin, the twin with mutual TLS, libfabric's tcp provider
// through ffi/fabric; verbs and CXI where the host has them) against the same run's ceiling:
// the same bytes over a bare TCP loopback connection (Deno.connect, 1 MiB writes and reads,
// no framing). Prints a table and writes tests/bench/results/transport.json.
//
//   deno run -A tests/bench/transport_bench.ts [--quick]
//
// MB/s is 10^6 bytes per second of frame payload; each figure is the best of several rounds.

import { loadFabricShim } from "../../ffi/fabric/bindings.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { genCerts, OPENSSL, tlsMaterial } from "../../mod/transport/_testing.ts";
import {
  detectTransports,
  FabricMessageTransport,
  type MessageTransport,
  TcpMessageTransport,
} from "../../mod/transport/mod.ts";
import { table as printTable } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const HOST = "127.0.0.1";
const MIB = 1 << 20;
const STREAM_BYTES = (QUICK ? 64 : 512) * MIB;
const FRAME_SIZES: readonly number[] = [MIB, 64 * 1024];
const ROUNDS = QUICK ? 2 : 3;
const RESULTS_PATH = new URL("./results/transport.json", import.meta.url);

const encoder = new TextEncoder();
function print(line = ""): void {
  Deno.stdout.writeSync(encoder.encode(line + "\n"));
}

interface Row {
  transport: string;
  frameBytes: number;
  mbPerSecond: number;
  ceilingMbPerSecond: number;
  ratio: number;
}

/** MB/s of STREAM_BYTES sent as frames of `frameBytes` from one end to the other. */
async function stream(
  server: MessageTransport,
  client: MessageTransport,
  frameBytes: number,
): Promise<number> {
  const listener = await server.listen(HOST, 0);
  const accepted = listener.accept();
  const a = await client.dial(HOST, listener.port);
  const b = (await accepted)!;
  const frames = Math.floor(STREAM_BYTES / frameBytes);
  const frame = new Uint8Array(frameBytes).fill(0x5a);
  const start = performance.now();
  const receiving = (async () => {
    let bytes = 0;
    for (let i = 0; i < frames; i++) {
      const got = await b.receive();
      if (got === null || got.length !== frameBytes) throw new Error(`frame ${i} lost`);
      bytes += got.length;
    }
    return bytes;
  })();
  // Up to 8 frames in flight, as a client reading ahead would keep them.
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < frames; i++) {
    inFlight.push(a.send(frame));
    if (inFlight.length >= 8) await inFlight.shift();
  }
  await Promise.all(inFlight);
  const bytes = await receiving;
  const seconds = (performance.now() - start) / 1000;
  await a.close();
  await b.close();
  await listener.close();
  return bytes / 1e6 / seconds;
}

/** The ceiling: the same bytes over bare loopback TCP, 1 MiB writes, reads into 1 MiB. */
async function bareTcp(): Promise<number> {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepting = listener.accept();
  const writer = await Deno.connect({ hostname: HOST, port });
  const reader = await accepting;
  const chunk = new Uint8Array(MIB).fill(0x5a);
  const start = performance.now();
  const reading = (async () => {
    const buf = new Uint8Array(MIB);
    let total = 0;
    while (total < STREAM_BYTES) {
      const n = await reader.read(buf);
      if (n === null) break;
      total += n;
    }
    return total;
  })();
  for (let sent = 0; sent < STREAM_BYTES; sent += MIB) {
    let off = 0;
    while (off < MIB) off += await writer.write(chunk.subarray(off));
  }
  const total = await reading;
  const seconds = (performance.now() - start) / 1000;
  writer.close();
  reader.close();
  listener.close();
  return total / 1e6 / seconds;
}

async function main(): Promise<void> {
  const transports: { name: string; server: MessageTransport; client: MessageTransport }[] = [];
  const plain = new TcpMessageTransport();
  transports.push({ name: "tcp (TypeScript twin)", server: plain, client: plain });
  let certDir: string | null = null;
  if (OPENSSL) {
    certDir = await Deno.makeTempDir({ prefix: "kiseki-transport-bench-" });
    await genCerts(certDir, ["--node", `node1:${HOST}`, "--tenant", "bench"]);
    transports.push({
      name: "tls (TypeScript twin, mTLS)",
      server: new TcpMessageTransport({ tls: await tlsMaterial(certDir, "node1") }),
      client: new TcpMessageTransport({
        tls: await tlsMaterial(certDir, "tenant-bench", "client"),
      }),
    });
  } else print("tls not measured: no openssl command to issue certificates");
  const { detection } = detectTransports(defaultShimOptions());
  const loaded = loadFabricShim(defaultShimOptions());
  if (loaded.ok) {
    for (const provider of ["tcp", "verbs", "cxi"]) {
      const unusable = loaded.shim.providerUnusable(provider);
      if (unusable !== null) {
        print(`libfabric-${provider} not measured: ${unusable}`);
        continue;
      }
      const t = new FabricMessageTransport({ shim: loaded.shim, provider });
      transports.push({ name: `libfabric-${provider}`, server: t, client: t });
    }
  } else print(`libfabric not measured: ${loaded.reason}`);
  print(`verbs: ${detection.verbs.reason}; cxi: ${detection.cxi.reason}`);

  const rows: Row[] = [];
  try {
    let ceiling = 0;
    for (let r = 0; r < ROUNDS; r++) ceiling = Math.max(ceiling, await bareTcp());
    for (const t of transports) {
      for (const frameBytes of FRAME_SIZES) {
        let best = 0;
        for (let r = 0; r < ROUNDS; r++) {
          best = Math.max(best, await stream(t.server, t.client, frameBytes));
        }
        rows.push({
          transport: t.name,
          frameBytes,
          mbPerSecond: Math.round(best),
          ceilingMbPerSecond: Math.round(ceiling),
          ratio: Math.round((best / ceiling) * 1000) / 1000,
        });
      }
    }
  } finally {
    if (certDir !== null) await Deno.remove(certDir, { recursive: true });
  }

  print(
    `client transports, loopback, ${STREAM_BYTES / MIB} MiB one way per figure, best of ` +
      `${ROUNDS}; ceiling: bare TCP loopback (1 MiB writes); MB/s = 10^6 B/s`,
  );
  printTable(
    print,
    ["transport", "frame", "MB/s", "bare TCP MB/s", "ratio"],
    rows.map((r) => [
      r.transport,
      r.frameBytes >= MIB ? `${r.frameBytes / MIB} MiB` : `${r.frameBytes / 1024} KiB`,
      r.mbPerSecond,
      r.ceilingMbPerSecond,
      r.ratio,
    ]),
    { leftColumns: 2 },
  );
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    RESULTS_PATH,
    JSON.stringify(
      {
        mode: QUICK ? "quick" : "full",
        streamBytes: STREAM_BYTES,
        verbs: detection.verbs,
        cxi: detection.cxi,
        libfabric: detection.libfabric,
        rows,
      },
      null,
      2,
    ) + "\n",
  );
}

if (import.meta.main) await main();
