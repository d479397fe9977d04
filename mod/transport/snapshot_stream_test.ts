import assert from "node:assert/strict";
import * as net from "node:net";
import { createLogger } from "../obs/mod.ts";
import { emptyMessage, type Message } from "../raft/mod.ts";
import type { DurableSnapshotPart } from "../log/mod.ts";
import { TcpRaftTransport } from "./raft_transport.ts";
import { SNAPSHOT_MAGIC, SnapshotStreams } from "./snapshot_stream.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const HOST = "127.44.12";

/** A part holding a list of chunks in memory, durable at `index`. */
class MemoryPart implements DurableSnapshotPart {
  readonly name = "views";
  installed: { chunks: Uint8Array[]; index: number }[] = [];
  constructor(public chunks: Uint8Array[], public index: number) {}
  durableIndex(): number {
    return this.index;
  }
  async export(write: (chunk: Uint8Array) => Promise<void>, atLeast: number): Promise<number> {
    assert(this.index >= atLeast);
    for (const c of this.chunks) await write(c);
    return this.index;
  }
  async install(chunks: AsyncIterable<Uint8Array>, index: number): Promise<void> {
    const got: Uint8Array[] = [];
    for await (const c of chunks) got.push(c);
    this.installed.push({ chunks: got, index });
  }
}

interface Node {
  transport: TcpRaftTransport;
  streams: SnapshotStreams;
  part: MemoryPart;
  delivered: Message[];
  reports: string[];
  dir: string;
}

async function startPair(): Promise<[Node, Node]> {
  const nodes: Node[] = [];
  for (const id of [1, 2]) {
    const transport = await TcpRaftTransport.listen({
      nodeId: id,
      clusterId: "snap-test",
      listen: { host: `${HOST}.${id}`, port: 0 },
      peers: [],
      tls: null,
      logger: quiet,
    });
    const dir = await Deno.makeTempDir({ prefix: "kiseki-snapstream-" });
    const node = {
      transport,
      part: new MemoryPart([], 0),
      delivered: [] as Message[],
      reports: [] as string[],
      dir,
    } as Node;
    node.streams = SnapshotStreams.attach(transport, {
      nodeId: id,
      clusterId: "snap-test",
      addressOf: (peer) => nodes.find((n) => n.transport.nodeId === peer)?.transport.addr ?? null,
      tls: null,
      stagingDir: `${dir}/snapshots`,
      parts: (shard) => shard === 7 ? [node.part] : undefined,
      deliver: (_shard, m) => node.delivered.push(m),
      report: (shard, peer, status) => node.reports.push(`${shard}:${peer}:${status}`),
      log: quiet,
    });
    nodes.push(node);
  }
  return [nodes[0]!, nodes[1]!];
}

async function stop(nodes: Node[]): Promise<void> {
  for (const n of nodes) {
    await n.streams.close();
    await n.transport.close();
    await Deno.remove(n.dir, { recursive: true });
  }
}

function snapshotMessage(index: number): Message {
  const m = emptyMessage("snapshot", 1, 2, 3);
  m.snapshot = {
    meta: { index, term: 3, conf: { voters: [1, 2], learners: [] } },
    data: Uint8Array.of(2, 0, 0),
  };
  return m;
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  assert(check(), "timed out");
}

Deno.test("SnapshotStreams sends a shard's parts in chunks, installs them before delivering the message, leaves no staging file", async () => {
  const [a, b] = await startPair();
  try {
    const chunks = Array.from({ length: 40 }, (_, i) => new Uint8Array(100_000 + i).fill(i));
    a.part = new MemoryPart(chunks, 120);
    a.streams.send(7, snapshotMessage(100));
    a.streams.send(7, snapshotMessage(100)); // a second request while one runs: the same stream
    await until(() => a.reports.length > 0);
    assert.deepEqual(a.reports, ["7:2:finish"]);
    assert.equal(b.part.installed.length, 1);
    assert.equal(b.part.installed[0]!.index, 120);
    assert.deepEqual(b.part.installed[0]!.chunks, chunks);
    assert.equal(b.delivered.length, 1);
    assert.equal(b.delivered[0]!.snapshot!.meta.index, 100);
    assert.deepEqual([...Deno.readDirSync(`${b.dir}/snapshots`)], []);
    assert.equal(a.streams.stats().sent, 1);
    assert.equal(b.streams.stats().received, 1);
  } finally {
    await stop([a, b]);
  }
});

Deno.test("SnapshotStreams refuses a damaged or foreign stream with an answer, installs nothing, stays up", async () => {
  const [a, b] = await startPair();
  try {
    // A shard not hosted here is reported failed at once (Raft asks again later).
    a.part = new MemoryPart([Uint8Array.of(1)], 5);
    const wrongShard = snapshotMessage(5);
    a.streams.send(8, wrongShard);
    await until(() => a.reports.length > 0);
    assert.deepEqual(a.reports, ["8:2:failure"]);

    // Bytes that start like a stream and then go wrong: each is answered or cut, never crashes.
    const garbage = [
      Uint8Array.of(0x4b, 0x53, 0x4e, 0x50, 9, 0), // unknown version
      (() => { // a good header, then a broken part header
        const cluster = new TextEncoder().encode("snap-test");
        const head = new Uint8Array(4 + 2 + cluster.length + 16);
        const v = new DataView(head.buffer);
        v.setUint32(0, SNAPSHOT_MAGIC);
        head[4] = 1;
        head[5] = cluster.length;
        head.set(cluster, 6);
        v.setUint32(6 + cluster.length, 1);
        v.setUint32(10 + cluster.length, 2);
        v.setUint32(14 + cluster.length, 7);
        v.setUint32(18 + cluster.length, 0xffff_ffff); // a message too large
        return head;
      })(),
    ];
    for (const bytes of garbage) {
      const answer = await new Promise<Uint8Array>((resolve) => {
        const socket = net.connect({ host: `${HOST}.2`, port: b.transport.addr.port });
        const got: Uint8Array[] = [];
        socket.on("connect", () => socket.write(bytes));
        socket.on("data", (c: Uint8Array) => got.push(new Uint8Array(c)));
        socket.on("close", () => resolve(new Uint8Array(got.flatMap((c) => [...c]))));
        socket.on("error", () => {});
      });
      assert.equal(answer[0], 1, "refused");
    }
    assert.equal(b.part.installed.length, 0);
    assert.equal(b.delivered.length, 0);
    assert.equal(b.streams.stats().receiveFailures, 2);
  } finally {
    await stop([a, b]);
  }
});
