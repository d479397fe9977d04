// `deno task bench:chunk-cluster [--quick]`: chunk puts and gets spread over nodes by the
// cluster chunk store, beside one node's local store in the same run. Each node is real in
// all but its process: its own pool of file devices (io_uring or plain files, as the server
// picks) in a temp dir, its own lmdb index, a Raft transport on 127.0.0.x with the fabric
// server attached, and a fabric client to the others; every fragment that leaves the writer
// crosses loopback TCP. All nodes share this process (and the machine's cores), so the
// cluster rows pay for every node's work: a lower bound of a real cluster.
//
// Rows: 1 MiB chunks put and got by 16 callers through one node, for one node's local store
// (EC 4+2 over 6 devices: the ceiling, ratio 1), 3 nodes with 3 copies, and 6 nodes with EC
// 4+2; then the repair rate: chunks written while one node of three was down, rebuilt onto
// it once it is back (fragment bytes written per second). Writes tests/bench/results/
// chunk_cluster.json.
//
//   deno run -A tests/bench/chunk_cluster_bench.ts [--quick]

import {
  ClusterChunkStore,
  type Durability,
  FabricFragmentPeers,
  fragmentHandler,
  LocalChunkStore,
  LocalFragmentStore,
  parsePoolSpecs,
  StaticClusterMembers,
} from "../../mod/chunk/mod.ts";
import type { ChunkStore } from "../../mod/chunk/mod.ts";
import { selectErasureCodec } from "../../mod/ec/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { FabricClient, FabricServer, TcpRaftTransport } from "../../mod/transport/mod.ts";
import { createHash } from "node:crypto";
import { table } from "./_table.ts";

const QUICK = Deno.args.includes("--quick");
const MIB = 1 << 20;
const CHUNK_BYTES = MIB;
const CHUNKS = QUICK ? 48 : 384;
const CALLERS = 16;
const CLUSTER = "bench-chunk-cluster";
const RESULTS = new URL("./results/chunk_cluster.json", import.meta.url);
const logger = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const codecs = selectErasureCodec();
const encoder = new TextEncoder();
const print = (line = "") => Deno.stdout.writeSync(encoder.encode(line + "\n"));
const progress = (line: string) => Deno.stderr.writeSync(encoder.encode(line + "\n"));

interface BenchNode {
  id: number;
  local: LocalChunkStore;
  fragments: LocalFragmentStore;
  transport: TcpRaftTransport | null;
  server: FabricServer | null;
  client: FabricClient | null;
  store: ClusterChunkStore | null;
  port: number;
}

async function openLocal(dir: string, devices: number, durability: string) {
  const [pool] = parsePoolSpecs(
    JSON.stringify({
      name: "bench",
      devices,
      deviceSize: "1GiB",
      segmentSize: "16MiB",
      durability,
    }),
    { dataDir: dir },
  );
  return await LocalChunkStore.open({
    pool: pool!,
    codecs,
    indexDir: `${dir}/index`,
    indexPageKeys: null,
    logger,
  });
}

async function listen(node: BenchNode): Promise<void> {
  node.transport = await TcpRaftTransport.listen({
    nodeId: node.id,
    clusterId: CLUSTER,
    listen: { host: `127.0.0.${node.id}`, port: node.port },
    peers: [],
    tls: null,
    logger,
  });
  node.port = node.transport.addr.port;
  node.server = FabricServer.attach(node.transport, {
    nodeId: node.id,
    clusterId: CLUSTER,
    handler: fragmentHandler(node.fragments),
    logger,
  });
}

async function stopFabric(node: BenchNode): Promise<void> {
  await node.server?.close();
  await node.transport?.close();
  node.server = null;
  node.transport = null;
}

async function startNodes(dir: string, count: number, durability: Durability) {
  const nodes: BenchNode[] = [];
  for (let id = 1; id <= count; id++) {
    const local = await openLocal(`${dir}/n${id}`, 2, "copies:1");
    const node: BenchNode = {
      id,
      local,
      fragments: new LocalFragmentStore({ node: id, store: local }),
      transport: null,
      server: null,
      client: null,
      store: null,
      port: 0,
    };
    await listen(node);
    nodes.push(node);
  }
  const peers = nodes.map((n) => ({ id: n.id, addr: `127.0.0.${n.id}:${n.port}` }));
  for (const node of nodes) {
    node.client = new FabricClient({
      nodeId: node.id,
      clusterId: CLUSTER,
      peers: nodes.filter((n) => n !== node).map((n) => ({
        id: n.id,
        addr: { host: `127.0.0.${n.id}`, port: n.port },
      })),
      limits: { connectTimeoutMs: 1000, reconnectDelayMsMin: 10, reconnectDelayMsMax: 50 },
      logger,
    });
    node.store = new ClusterChunkStore({
      self: node.id,
      members: new StaticClusterMembers(peers),
      local: node.fragments,
      peers: new FabricFragmentPeers({ client: node.client, timeoutMs: 10_000 }),
      codecs,
      durability,
      nodeRetryMs: 100,
      logger,
    });
  }
  return {
    nodes,
    async close() {
      for (const n of nodes) {
        await n.store?.close();
        await n.client?.close();
        await stopFabric(n);
        await n.local.close();
      }
    },
  };
}

function makeChunks(count: number, seed: number): { id: Uint8Array; bytes: Uint8Array }[] {
  return Array.from({ length: count }, (_, i) => {
    const bytes = new Uint8Array(CHUNK_BYTES);
    // Distinct contents cheaply: a counter pattern, salted by chunk and seed.
    const view = new DataView(bytes.buffer);
    for (let at = 0; at < bytes.length; at += 4) view.setUint32(at, (at * 2654435761) ^ i ^ seed);
    return { id: new Uint8Array(createHash("sha256").update(bytes).digest()), bytes };
  });
}

/** MB/s of `fn` run over `items` by CALLERS sequential callers. */
async function rate<T>(items: T[], fn: (item: T) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CALLERS }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
  const seconds = (performance.now() - started) / 1000;
  return (items.length * CHUNK_BYTES) / MIB / seconds;
}

async function putGet(store: ChunkStore, seed: number): Promise<{ put: number; get: number }> {
  const chunks = makeChunks(CHUNKS, seed);
  // Warm-up: connections, inventories, segment heads.
  await rate(makeChunks(CALLERS, seed + 1000), (c) => store.put(c.id, c.bytes));
  const put = await rate(chunks, (c) => store.put(c.id, c.bytes));
  const get = await rate(chunks, async (c) => {
    const back = await store.get(c.id);
    if (back.length !== c.bytes.length) throw new Error("short read");
  });
  return { put, get };
}

interface Row {
  case: string;
  op: string;
  mb: number;
  ceiling: number | null;
  ratio: number | null;
}

const rows: Row[] = [];
const work = await Deno.makeTempDir({ prefix: "kiseki-bench-chunk-cluster-" });
try {
  progress("local store: 1 node, EC 4+2 over 6 devices");
  const local = await openLocal(`${work}/local`, 6, "ec:4+2");
  const base = await putGet(local, 1);
  await local.close();
  rows.push({ case: "1 node, local EC 4+2", op: "put", mb: base.put, ceiling: base.put, ratio: 1 });
  rows.push({ case: "1 node, local EC 4+2", op: "get", mb: base.get, ceiling: base.get, ratio: 1 });

  for (
    const [name, count, durability] of [
      ["3 nodes, 3 copies", 3, { kind: "copies", copies: 3 }],
      ["6 nodes, EC 4+2", 6, { kind: "ec", k: 4, m: 2 }],
    ] as const
  ) {
    progress(`cluster: ${name}`);
    const cluster = await startNodes(`${work}/${count}`, count, durability);
    const r = await putGet(cluster.nodes[0]!.store!, 2 + count);
    await cluster.close();
    rows.push({ case: name, op: "put", mb: r.put, ceiling: base.put, ratio: r.put / base.put });
    rows.push({ case: name, op: "get", mb: r.get, ceiling: base.get, ratio: r.get / base.get });
  }

  progress("repair: 3 nodes, 3 copies, chunks written with node 3 down");
  const cluster = await startNodes(`${work}/repair`, 3, { kind: "copies", copies: 3 });
  const [n1, , n3] = cluster.nodes;
  await rate(makeChunks(4, 99), (c) => n1!.store!.put(c.id, c.bytes));
  await stopFabric(n3!);
  const chunks = makeChunks(CHUNKS, 7);
  await rate(chunks, (c) => n1!.store!.put(c.id, c.bytes));
  const degraded = n1!.store!.degradedCount();
  await listen(n3!);
  await new Promise((r) => setTimeout(r, 150));
  const started = performance.now();
  let bytes = 0;
  for (let i = 0; i < 100 && n1!.store!.degradedCount() > 0; i++) {
    bytes += (await n1!.store!.repairStep({ max: 64 })).bytes;
  }
  const repairMb = bytes / MIB / ((performance.now() - started) / 1000);
  const left = n1!.store!.degradedCount();
  await cluster.close();
  // (A put already on its way to node 3 when it stopped may have landed there whole.)
  if (degraded < CHUNKS / 2 || left !== 0) {
    throw new Error(`repair: ${degraded} degraded of ${CHUNKS}, ${left} left after repair`);
  }
  rows.push({
    case: "3 nodes, repair onto a returned node",
    op: "repair",
    mb: repairMb,
    ceiling: null,
    ratio: null,
  });
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

print(
  `cluster chunk store, ${
    CHUNK_BYTES / MIB
  } MiB chunks, ${CALLERS} callers, ${CHUNKS} chunks per case`,
);
table(
  print,
  ["case", "op", "MB/s", "1-node MB/s", "ratio"],
  rows.map((r) => [
    r.case,
    r.op,
    r.mb.toFixed(1),
    r.ceiling === null ? "-" : r.ceiling.toFixed(1),
    r.ratio === null ? "-" : r.ratio.toFixed(2),
  ]),
);
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(
  RESULTS,
  JSON.stringify(
    { mode: QUICK ? "quick" : "full", chunkBytes: CHUNK_BYTES, callers: CALLERS, rows },
    null,
    2,
  ),
);
