// The cluster chunk store across real nodes in one process: each node has its own fragment
// store on simulated devices, a Raft transport listening on 127.0.0.x with the fabric server
// attached, and a fabric client to the others; only the fabric moves fragments between them.

import assert from "node:assert/strict";
import { formatHostPort } from "../base/mod.ts";
import { FabricClient, FabricServer, TcpRaftTransport } from "../transport/mod.ts";
import {
  codecs,
  openTestEnv,
  Prng,
  quietLogger,
  randomChunk,
  SimPool,
  type TestChunk,
} from "./_testing.ts";
import { ChunkStoreError, LocalChunkStore } from "./chunk_store.ts";
import { defineChunkStoreConformance } from "./chunk_store_conformance.ts";
import {
  ClusterChunkStore,
  type ClusterMembers,
  type FragmentPeers,
  RecordedClusterMembers,
  type RecordedNode,
  StaticClusterMembers,
} from "./cluster_store.ts";
import { FabricFragmentPeers, fragmentHandler } from "./fabric_fragments.ts";
import { LocalFragmentStore, writerChunkId } from "./fragment_store.ts";
import { FRAGMENT_FRAME_HEADER_BYTES } from "./fragment_frame.ts";
import type { Durability } from "./pool.ts";
import type { KvEnv } from "../disk/mod.ts";

const CLUSTER = "kiseki-test";
const { logger } = quietLogger();

class TestNode {
  transport: TcpRaftTransport | null = null;
  server: FabricServer | null = null;
  client!: FabricClient;
  store!: ClusterChunkStore;
  local!: LocalFragmentStore;
  localStore!: LocalChunkStore;
  env!: KvEnv;
  port = 0;
  open!: () => ClusterChunkStore;
  constructor(readonly id: number, readonly dir: string, readonly pool: SimPool) {}

  get host(): string {
    return `127.0.0.${this.id}`;
  }

  async listen(): Promise<void> {
    this.transport = await TcpRaftTransport.listen({
      nodeId: this.id,
      clusterId: CLUSTER,
      listen: { host: this.host, port: this.port },
      peers: [],
      tls: null,
      logger,
    });
    this.port = this.transport.addr.port;
    this.server = FabricServer.attach(this.transport, {
      nodeId: this.id,
      clusterId: CLUSTER,
      handler: fragmentHandler(this.local, {
        dropOwn: (id) => this.store.dropOwn(id),
        addOwn: (id, tag) => this.store.addOwn(id, tag),
        hasOwn: (id) => Promise.resolve(this.store.hasOwn(id)),
      }),
      logger,
    });
  }

  /** The node's fabric goes away (its process is gone, as far as the others can tell). */
  async stop(): Promise<void> {
    await this.server?.close();
    await this.transport?.close();
    this.server = null;
    this.transport = null;
  }
}

interface TestCluster {
  nodes: TestNode[];
  close(): Promise<void>;
}

async function startCluster(
  count: number,
  durability: Durability,
  options: {
    devicesPerNode?: number;
    nodeRetryMs?: number;
    repairIntervalMs?: number;
    /** Wraps the fabric peers of node `self` (to slow or fail some of its requests). */
    wrapPeers?: (peers: FragmentPeers, self: number) => FragmentPeers;
    /** Membership of every node's store (default: the static peers). */
    members?: (peers: { id: number; addr: string }[]) => ClusterMembers;
  } = {},
): Promise<TestCluster> {
  const nodes: TestNode[] = [];
  for (let id = 1; id <= count; id++) {
    const dir = await Deno.makeTempDir({ prefix: `kiseki-cluster-${id}-` });
    const pool = new SimPool({
      devices: options.devicesPerNode ?? 2,
      durability: { kind: "copies", copies: 1 },
      deviceSizeBytes: 24 << 20,
      segmentSizeBytes: 2 << 20,
      name: `n${id}`,
    });
    const node = new TestNode(id, dir, pool);
    node.env = await openTestEnv(dir);
    node.localStore = await LocalChunkStore.open({
      pool: pool.spec,
      codecs,
      env: node.env,
      openDevice: pool.open,
      logger,
    });
    node.local = new LocalFragmentStore({ node: id, store: node.localStore });
    await node.listen();
    nodes.push(node);
  }
  const peers = nodes.map((n) => ({ id: n.id, addr: `${n.host}:${n.port}` }));
  const members = options.members?.(peers);
  for (const node of nodes) {
    node.client = new FabricClient({
      nodeId: node.id,
      clusterId: CLUSTER,
      peers: nodes.filter((n) => n !== node).map((n) => ({
        id: n.id,
        addr: { host: n.host, port: n.port },
      })),
      limits: { reconnectDelayMsMin: 10, reconnectDelayMsMax: 50, connectTimeoutMs: 1000 },
      logger,
    });
    node.open = () =>
      new ClusterChunkStore({
        self: node.id,
        members: members ?? new StaticClusterMembers(peers),
        local: node.local,
        peers: (options.wrapPeers ?? ((p) => p))(
          new FabricFragmentPeers({ client: node.client, timeoutMs: 2000 }),
          node.id,
        ),
        codecs,
        durability,
        nodeRetryMs: options.nodeRetryMs ?? 200,
        repairIntervalMs: options.repairIntervalMs,
        logger,
      });
    node.store = node.open();
  }
  return {
    nodes,
    async close() {
      for (const node of nodes) {
        await node.store.close();
        await node.client.close();
        await node.stop();
        await node.localStore.close();
        await node.env.close();
        await Deno.remove(node.dir, { recursive: true });
      }
    },
  };
}

for (
  const [name, count, durability] of [
    ["3 nodes, 3 copies", 3, { kind: "copies", copies: 3 }],
    ["3 nodes, EC 2+1", 3, { kind: "ec", k: 2, m: 1 }],
  ] as const
) {
  defineChunkStoreConformance(`ClusterChunkStore (${name}, real fabric)`, async () => {
    const cluster = await startCluster(count, durability);
    const writer = cluster.nodes[0]!;
    return {
      get store() {
        return writer.store;
      },
      async reopen() {
        await writer.store.close();
        writer.store = writer.open();
      },
      close: () => cluster.close(),
    };
  });
}

function chunks(count: number, seed: number, length = 50_000): TestChunk[] {
  const prng = new Prng(seed);
  return Array.from({ length: count }, () => randomChunk(prng, length));
}

/** Every fragment's (node, device) from the writer's index, checked against its holder. */
async function checkPlaced(cluster: TestCluster, writer: TestNode, chunk: TestChunk) {
  const stat = (await writer.store.stat(chunk.id))!;
  const held: number[] = [];
  for (const f of stat.fragments) {
    if (f.lost) continue;
    const holder = cluster.nodes.find((n) => n.id === f.node)!;
    const device = await holder.local.deviceOf(writerChunkId(chunk.id, writer.id), f.index);
    assert.equal(`${f.node}/${device}`, f.deviceId, "the index names the device holding it");
    held.push(f.node!);
  }
  return { stat, held };
}

Deno.test("ClusterChunkStore puts copies on three nodes over the fabric and reads them back", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a] = cluster.nodes;
    const data = chunks(12, 1);
    for (const c of data) assert.equal((await a!.store.put(c.id, c.bytes)).created, true);
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.deepEqual([...held].sort(), [1, 2, 3], "one copy on each node");
      assert.deepEqual(await a!.store.get(c.id), c.bytes);
    }
    // Fragments reached the other nodes' devices.
    for (const n of cluster.nodes.slice(1)) {
      assert.equal(n.localStore.poolReport().liveBytes > 12 * 50_000, true);
    }
    // A second put of the same chunk only adds a reference.
    assert.equal((await a!.store.put(data[0]!.id, data[0]!.bytes)).created, false);
    assert.equal((await a!.store.stat(data[0]!.id))!.refcount, 2);
    assert.equal(a!.store.degradedCount(), 0);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore spreads EC 4+2 over six nodes and reads with nodes down", async () => {
  const cluster = await startCluster(6, { kind: "ec", k: 4, m: 2 });
  try {
    const [a] = cluster.nodes;
    const data = chunks(10, 2, 100_001);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    const perNode = new Map<number, number>();
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.equal(new Set(held).size, 6, "six fragments on six distinct nodes");
      for (const n of held) perNode.set(n, (perNode.get(n) ?? 0) + 1);
    }
    assert.equal(perNode.size, 6);
    // Two nodes' fabrics go away (the most EC 4+2 can lose): every chunk still reads.
    await cluster.nodes[2]!.stop();
    await cluster.nodes[4]!.stop();
    for (const c of data) {
      const read = await a!.store.read(c.id);
      assert.deepEqual(read.bytes, c.bytes);
    }
    // A third: the chunks are not lost, but cannot be read until a node is back.
    await cluster.nodes[5]!.stop();
    await assert.rejects(
      a!.store.read(data[0]!.id),
      (e: unknown) => e instanceof ChunkStoreError && e.code === "unavailable",
    );
    await cluster.nodes[5]!.listen();
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(await a!.store.get(data[0]!.id), data[0]!.bytes);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore writes degraded while a node is down and repairs when it returns", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a, , c3] = cluster.nodes;
    // Warm the inventories, then node 3 goes away.
    await a!.store.put(chunks(1, 9)[0]!.id, chunks(1, 9)[0]!.bytes);
    await c3!.stop();
    const data = chunks(8, 3);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    assert.equal(a!.store.degradedCount(), 8, "each chunk is recorded degraded");
    assert.equal(a!.store.poolReport().degradedChunks, 8);
    for (const c of data) {
      const { stat, held } = await checkPlaced(cluster, a!, c);
      assert.deepEqual([...held].sort(), [1, 2], "two copies on distinct nodes");
      assert.equal(stat.fragments.filter((f) => f.lost).length, 1);
      assert.deepEqual(await a!.store.get(c.id), c.bytes);
    }
    // While node 3 is away, repair cannot restore anything.
    const early = await a!.store.repairStep();
    assert.equal(early.repaired, 0);
    assert.equal(a!.store.degradedCount(), 8);
    // Node 3 returns on its address; repair restores the third copy there.
    await c3!.listen();
    await new Promise((r) => setTimeout(r, 250)); // past the node retry delay
    const step = await a!.store.repairStep();
    assert.equal(step.repaired, 8);
    assert.equal(a!.store.degradedCount(), 0);
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.deepEqual([...held].sort(), [1, 2, 3]);
    }
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore refuses a write it cannot make survive one more loss", async () => {
  const cluster = await startCluster(6, { kind: "ec", k: 4, m: 2 });
  try {
    const [a] = cluster.nodes;
    const warm = chunks(1, 5)[0]!;
    await a!.store.put(warm.id, warm.bytes);
    // One node down: five fragments on five nodes (k+1) is still safe, and degraded.
    await cluster.nodes[5]!.stop();
    const [one, two] = chunks(2, 6, 80_000);
    await a!.store.put(one!.id, one!.bytes);
    assert.equal(a!.store.degradedCount(), 1);
    assert.deepEqual(await a!.store.get(one!.id), one!.bytes);
    // Two down: four fragments could be stored, which one more loss would make unreadable.
    await cluster.nodes[4]!.stop();
    await assert.rejects(
      a!.store.put(two!.id, two!.bytes),
      (e: unknown) => e instanceof ChunkStoreError && e.code === "insufficient_devices",
    );
    assert.equal(await a!.store.has(two!.id), false);
    // What it wrote of the refused chunk was given back.
    for (const n of cluster.nodes.slice(0, 4)) {
      for (let i = 0; i < 6; i++) {
        assert.equal(await n.local.size(writerChunkId(two!.id, 1), i), null);
      }
    }
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore GC releases fragments on every node, later for a node that was down", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a, b, c3] = cluster.nodes;
    const data = chunks(4, 4);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    for (const c of data) assert.equal(await a!.store.decRef(c.id), 0);
    await c3!.stop();
    const gc = await a!.store.collect();
    assert.equal(gc.erased, 4);
    for (const c of data) {
      assert.equal(await a!.store.has(c.id), false);
      assert.equal(
        await a!.local.size(writerChunkId(c.id, 1), 0) ??
          await a!.local.size(writerChunkId(c.id, 1), 1) ??
          await a!.local.size(writerChunkId(c.id, 1), 2),
        null,
      );
      for (let i = 0; i < 3; i++) {
        assert.equal(await b!.local.size(writerChunkId(c.id, 1), i), null);
      }
    }
    assert.equal(a!.store.pendingReleases(), 4, "node 3's releases wait for it");
    await c3!.listen();
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(await a!.store.releasePending(), 4);
    assert.equal(a!.store.pendingReleases(), 0);
    for (const c of data) {
      for (let i = 0; i < 3; i++) {
        assert.equal(await c3!.local.size(writerChunkId(c.id, 1), i), null);
      }
    }
    // The holders' own GC now finds the fragments unreferenced.
    assert.equal(c3!.localStore.unreferencedPending(), 4);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore rebuilds a fragment its holder lost", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a] = cluster.nodes;
    const [c] = chunks(1, 8);
    await a!.store.put(c!.id, c!.bytes);
    // The writer's own copy goes (released behind the index's back, as a wiped device would);
    // reads try it first.
    const stat = (await a!.store.stat(c!.id))!;
    const mine = stat.fragments.find((f) => f.node === 1)!;
    assert.equal(await a!.local.release(writerChunkId(c!.id, 1), mine.index), true);
    assert.equal(await a!.local.size(writerChunkId(c!.id, 1), mine.index), null);
    assert.equal(a!.store.degradedCount(), 0);
    // The read still answers from another node, and queues the chunk for repair.
    const read = await a!.store.read(c!.id);
    assert.deepEqual(read.bytes, c!.bytes);
    assert.equal(read.faults.length, 1);
    assert.equal(a!.store.degradedCount(), 1);
    const step = await a!.store.repairStep();
    assert.equal(step.repaired, 1);
    assert.equal(a!.store.degradedCount(), 0);
    const { held } = await checkPlaced(cluster, a!, c!);
    assert.deepEqual([...held].sort(), [1, 2, 3]);
    assert.equal(
      await a!.local.size(writerChunkId(c!.id, 1), mine.index),
      FRAGMENT_FRAME_HEADER_BYTES + c!.bytes.length,
    );
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore keeps serving chunks the node stored before it joined a cluster", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a] = cluster.nodes;
    const [old] = chunks(1, 12);
    await a!.localStore.put(old!.id, old!.bytes);
    assert.equal(await a!.store.has(old!.id), true);
    assert.deepEqual(await a!.store.get(old!.id), old!.bytes);
    assert.equal((await a!.store.put(old!.id, old!.bytes)).created, false);
    assert.equal(await a!.store.decRef(old!.id), 1);
    assert.equal(await a!.store.decRef(old!.id), 0);
    assert.equal(await a!.store.has(old!.id), false);
    assert.equal(a!.localStore.unreferencedPending(), 1);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore reads a chunk another node wrote by asking the holders", async () => {
  const cluster = await startCluster(6, { kind: "ec", k: 4, m: 2 });
  try {
    const [a, b] = cluster.nodes;
    const data = chunks(4, 14, 70_001);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    for (const c of data) {
      assert.equal(await b!.store.stat(c.id), null, "node 2 has no entry of its own");
      assert.deepEqual(await b!.store.get(c.id), c.bytes);
    }
    // With two nodes away the others still find k fragments (and rebuild the rest).
    await cluster.nodes[3]!.stop();
    await cluster.nodes[5]!.stop();
    const c3 = cluster.nodes[2]!;
    for (const c of data) assert.deepEqual(await c3.store.get(c.id), c.bytes);
    const [never] = chunks(1, 15);
    await assert.rejects(
      c3.store.get(never!.id),
      (e: unknown) => e instanceof ChunkStoreError && e.code === "not_found",
    );
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore's background pass notices a returned node and repairs onto it", async () => {
  // Writes would skip node 3 for a minute; the background pass asks it every 100 ms.
  const cluster = await startCluster(3, { kind: "copies", copies: 3 }, {
    nodeRetryMs: 60_000,
    repairIntervalMs: 100,
  });
  const [a, , c3] = cluster.nodes;
  const background = a!.store.start();
  try {
    const warm = chunks(1, 21)[0]!;
    await a!.store.put(warm.id, warm.bytes);
    await c3!.stop();
    const data = chunks(5, 22);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    assert.equal(a!.store.degradedCount(), 5);
    await c3!.listen();
    const deadline = Date.now() + 20_000;
    while (a!.store.degradedCount() > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(a!.store.degradedCount(), 0);
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.deepEqual([...held].sort(), [1, 2, 3]);
    }
  } finally {
    await background.stop();
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore moves a fragment whose holder can no longer read it", async () => {
  const cluster = await startCluster(4, { kind: "copies", copies: 3 });
  try {
    const [a] = cluster.nodes;
    const [c] = chunks(1, 23, 30_000);
    await a!.store.put(c!.id, c!.bytes);
    const stat = (await a!.store.stat(c!.id))!;
    // The writer's own copy: reads try it first.
    const victim = stat.fragments.find((f) => f.node === 1)!;
    const holder = cluster.nodes.find((n) => n.id === victim.node)!;
    // The holder's device loses the record's bytes under its index (a failed device).
    const device = (await holder.local.deviceOf(writerChunkId(c!.id, 1), victim.index))!;
    const index = holder.pool.spec.devices.findIndex((d) => d.id === device);
    holder.pool.faulty(index).failWhen(
      (call) => call.kind === "submit" && call.ops.some((op) => op.kind === "read"),
      "EIO",
    );
    // Reads go on from the others and queue the chunk; repair puts the copy on another node.
    for (let i = 0; i < 3; i++) assert.deepEqual(await a!.store.get(c!.id), c!.bytes);
    assert.equal(a!.store.degradedCount(), 1);
    await a!.store.repairStep();
    const after = (await a!.store.stat(c!.id))!;
    const moved = after.fragments[victim.index]!;
    assert.equal(moved.lost, false);
    assert.notEqual(moved.node, victim.node, "not back onto the holder that cannot read it");
    assert.equal(new Set(after.fragments.map((f) => f.node)).size, 3);
    assert.equal(a!.store.degradedCount(), 0);
    // Its reference on the broken holder is given back (by the next release pass).
    assert.equal(a!.store.pendingReleases(), 1);
    assert.equal(await a!.store.releasePending(), 1);
    assert.equal(a!.store.pendingReleases(), 0);
    assert.equal(await holder.local.size(writerChunkId(c!.id, 1), victim.index), null);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore.verifyStep() finds fragments a holder no longer has", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a, b] = cluster.nodes;
    const data = chunks(5, 31, 20_000);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    // Node 2 loses two of its fragments (as a node whose data was wiped would).
    for (const c of data.slice(0, 2)) {
      const f = (await a!.store.stat(c.id))!.fragments.find((x) => x.node === 2)!;
      assert.equal(await b!.local.release(writerChunkId(c.id, 1), f.index), true);
    }
    // Two steps of three chunks walk the whole index once.
    const one = await a!.store.verifyStep(3);
    const two = await a!.store.verifyStep(3);
    assert.equal(one.checked + two.checked, 5);
    assert.equal(one.missing + two.missing, 2);
    assert.equal(a!.store.degradedCount(), 2);
    assert.equal((await a!.store.repairStep()).repaired, 2);
    assert.equal((await a!.store.verifyStep()).missing, 0);
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.deepEqual([...held].sort(), [1, 2, 3]);
    }
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore keeps each writer's fragments apart: one chunk id sealed twice reads back per writer", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a, b] = cluster.nodes;
    // Two nodes store one chunk id with different bytes (each seals with its own nonce).
    const prng = new Prng(41);
    const id = randomChunk(prng, 10).id;
    const one = prng.bytes(40_000);
    const two = prng.bytes(40_000);
    await a!.store.put(id, one);
    await b!.store.put(id, two);
    assert.deepEqual(await a!.store.get(id), one);
    assert.deepEqual(await b!.store.get(id), two);
    // Each releases its own: node 1's go, node 2's stay readable.
    assert.equal(await a!.store.decRef(id), 0);
    await a!.store.collect();
    assert.deepEqual(await b!.store.get(id), two);
    // A third node finds one of them (which one is the writers' business, both are whole).
    const found = await cluster.nodes[2]!.store.get(id);
    assert.deepEqual(found, two);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore reads around a holder that does not answer", async () => {
  // Node 4's requests for fragment 0 hang until the end of the test (a stalled holder, not a
  // dead one); node 4 holds no copy, so every read of it starts with fragment 0's holder.
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let stalled = false;
  let stalls = 0;
  const cluster = await startCluster(4, { kind: "copies", copies: 3 }, {
    wrapPeers: (peers, self) =>
      self !== 4 ? peers : {
        put: (...a) => peers.put(...a),
        has: (...a) => peers.has(...a),
        release: (...a) => peers.release(...a),
        inventory: (...a) => peers.inventory(...a),
        get: async (node, key, index, size) => {
          if (index === 0 && stalled) {
            stalls++;
            await gate;
          }
          return await peers.get(node, key, index, size);
        },
      },
  });
  try {
    const [a] = cluster.nodes;
    const data: TestChunk[] = [];
    for (const c of chunks(16, 51, 30_001)) {
      await a!.store.put(c.id, c.bytes);
      // Chunks of which node 4 holds no copy: it must ask the others.
      const stat = (await a!.store.stat(c.id))!;
      if (stat.fragments.every((f) => f.node !== 4)) data.push(c);
    }
    assert.ok(data.length >= 2, `${data.length} chunks without a copy on node 4`);
    // Located on the holders (and kept), then read again: one copy is needed; the first
    // asked never answers, so the hedge asks the next holder.
    const reader = cluster.nodes[3]!.store;
    for (const c of data) assert.deepEqual(await reader.get(c.id), c.bytes);
    stalled = true;
    for (const c of data) assert.deepEqual(await reader.get(c.id), c.bytes);
    assert.equal(stalls, data.length, "each read first asked the stalled holder");
  } finally {
    open();
    await cluster.close();
  }
});

Deno.test("StaticClusterMembers reports node state from reachability", () => {
  const members = new StaticClusterMembers([{ id: 1, addr: "a:1" }, { id: 2, addr: "b:1" }]);
  assert.deepEqual(members.nodes().map((n) => n.state), ["unknown", "unknown"]);
  members.report(2, false);
  members.report(1, true);
  members.report(9, true);
  assert.deepEqual(members.nodes().map((n) => `${n.id}:${n.state}`), ["1:up", "2:unreachable"]);
  assert.equal(formatHostPort({ host: "127.0.0.1", port: 1 }), "127.0.0.1:1");
});

/** Node records as the cluster state would hold them, changed by the test. */
function recorded(
  peers: { id: number; addr: string }[],
  states: Map<number, RecordedNode["state"]>,
) {
  return new RecordedClusterMembers(
    () => peers.filter((p) => states.has(p.id)).map((p) => ({ ...p, state: states.get(p.id)! })),
    // The configured peers: those recorded at the start (a node added later is not one).
    new StaticClusterMembers(peers.filter((p) => states.has(p.id))),
  );
}

/** Runs verify, repair and release passes (bounded) until `done()` holds. */
async function settle(
  store: ClusterChunkStore,
  done: () => boolean | Promise<boolean>,
  what: string,
) {
  // A node that failed a request is skipped for nodeRetryMs (200 ms here): passes are paced.
  for (let pass = 0; pass < 100 && !(await done()); pass++) {
    await store.verifyStep();
    await store.repairStep();
    await store.rebalanceStep();
    await store.releasePending();
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(await done(), `${what} within 100 passes`);
}

Deno.test("ClusterChunkStore moves every fragment off a node recorded draining, then releases it there", async () => {
  const states = new Map<number, RecordedNode["state"]>([[1, "up"], [2, "up"], [3, "up"], [
    4,
    "up",
  ]]);
  const cluster = await startCluster(4, { kind: "copies", copies: 3 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, , , d] = cluster.nodes;
    const data = chunks(16, 21, 20_000);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    const before = a!.store.fragmentsOn(4);
    assert.ok(before > 0, "node 4 holds some fragments before the drain");
    states.set(4, "draining");
    await settle(
      a!.store,
      () => a!.store.fragmentsOn(4) === 0 && a!.store.pendingReleases() === 0,
      "drained",
    );
    assert.equal(a!.store.degradedCount(), 0);
    for (const c of data) {
      assert.deepEqual(await a!.store.get(c.id), c.bytes);
      const { stat, held } = await checkPlaced(cluster, a!, c);
      assert.equal(stat.fragments.filter((f) => !f.lost).length, 3, "full redundancy");
      assert.deepEqual(held.slice().sort(), [...new Set(held)].sort(), "one copy per node");
      assert.ok(!held.includes(4), "nothing left on the drained node");
      for (let i = 0; i < 3; i++) {
        assert.equal(await d!.local.size(writerChunkId(c.id, a!.id), i), null, "released");
      }
    }
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore rebuilds the fragments of a node recorded down from the survivors", async () => {
  const states = new Map<number, RecordedNode["state"]>([[1, "up"], [2, "up"], [3, "up"], [
    4,
    "up",
  ]]);
  const cluster = await startCluster(4, { kind: "ec", k: 2, m: 1 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, , , d] = cluster.nodes;
    const data = chunks(12, 22, 30_000);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    assert.ok(a!.store.fragmentsOn(4) > 0);
    await d!.stop();
    states.set(4, "down");
    await settle(a!.store, () => a!.store.fragmentsOn(4) === 0, "rebuilt");
    assert.equal(a!.store.degradedCount(), 0);
    // Releases to the node that is away wait for it.
    assert.ok(a!.store.pendingReleases() > 0, "releases wait for node 4");
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.equal(held.length, 3);
      assert.equal(new Set(held).size, 3, "one fragment per node");
      assert.deepEqual(await a!.store.get(c.id), c.bytes);
    }
    // Node 4 comes back: its stale fragments are given back, and it takes new ones again.
    await d!.listen();
    states.set(4, "up");
    await settle(a!.store, () => a!.store.pendingReleases() === 0, "stale fragments released");
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      for (let i = 0; i < 3; i++) {
        if (!held.includes(4)) {
          assert.equal(await d!.local.size(writerChunkId(c.id, a!.id), i), null, "stale, released");
        }
      }
    }
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore rebalances about a node's share onto a node that joins", async () => {
  const states = new Map<number, RecordedNode["state"]>([[1, "up"], [2, "up"], [3, "up"]]);
  const cluster = await startCluster(4, { kind: "copies", copies: 3 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, , , d] = cluster.nodes;
    const data = chunks(24, 23, 10_000);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    assert.equal(a!.store.fragmentsOn(4), 0);
    // The sweep after opening finds every fragment where placement puts it.
    await settle(a!.store, () => a!.store.rebalanceProgress().state === "idle", "first sweep");
    assert.equal(a!.store.rebalanceProgress().moved, 0, "nothing moves without a change");
    states.set(4, "up");
    await a!.store.rebalanceStep({ max: 4 });
    assert.equal(a!.store.rebalanceProgress().state, "running");
    await settle(a!.store, () => a!.store.rebalanceProgress().state === "idle", "rebalanced");
    const progress = a!.store.rebalanceProgress();
    assert.equal(progress.examined, data.length);
    const moved = a!.store.fragmentsOn(4);
    // 72 fragments over 4 nodes: the newcomer's fair share is 18; rendezvous moves about that.
    assert.ok(moved >= 9 && moved <= 27, `moved ${moved} fragments, about a quarter of 72`);
    // Every fragment that moved went to the newcomer: nothing shifts between the others.
    assert.equal(progress.moved, moved);
    await settle(a!.store, () => a!.store.pendingReleases() === 0, "released");
    for (const c of data) {
      assert.deepEqual(await a!.store.get(c.id), c.bytes);
      const { held } = await checkPlaced(cluster, a!, c);
      assert.equal(new Set(held).size, 3, "three copies on three nodes");
    }
    assert.ok(d!.localStore.poolReport().liveBytes > 0, "node 4 holds data");
  } finally {
    await cluster.close();
  }
});

Deno.test("RecordedClusterMembers takes the recorded states and the configured peers not yet recorded", () => {
  const peers = [{ id: 1, addr: "a:1" }, { id: 2, addr: "b:1" }, { id: 3, addr: "c:1" }];
  const members = new RecordedClusterMembers(
    () => [{ id: 2, addr: "b:2", state: "draining" }, { id: 5, addr: "e:1", state: "removed" }],
    new StaticClusterMembers(peers),
  );
  members.report(3, false);
  assert.deepEqual(
    members.nodes().map((n) => `${n.id}@${n.addr}:${n.state}`),
    ["1@a:1:unknown", "2@b:2:draining", "3@c:1:unreachable", "5@e:1:removed"],
  );
});

Deno.test("ClusterChunkStore rebuilds what a removed node held and drops the releases meant for it", async () => {
  const states = new Map<number, RecordedNode["state"]>([
    [1, "up"],
    [2, "up"],
    [3, "up"],
    [4, "up"],
  ]);
  const cluster = await startCluster(4, { kind: "copies", copies: 3 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, , , d] = cluster.nodes;
    const data = chunks(8, 24, 20_000);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    assert.ok(a!.store.fragmentsOn(4) > 0);
    await d!.stop();
    states.set(4, "removed");
    await settle(
      a!.store,
      () => a!.store.fragmentsOn(4) === 0 && a!.store.pendingReleases() === 0,
      "rebuilt, releases to node 4 dropped",
    );
    for (const c of data) {
      const { held } = await checkPlaced(cluster, a!, c);
      assert.equal(new Set(held).size, 3, "three copies on the three nodes left");
      assert.deepEqual(await a!.store.get(c.id), c.bytes);
    }
  } finally {
    await cluster.close();
  }
});

/** Which of `nodes` hold fragment `i` of `writer`'s copy of `chunk` (by asking each). */
async function holdersOf(nodes: TestNode[], chunk: TestChunk, writer: number, i: number) {
  const key = writerChunkId(chunk.id, writer);
  const held: number[] = [];
  for (const n of nodes) if ((await n.local.size(key, i)) !== null) held.push(n.id);
  return held;
}

Deno.test("ClusterChunkStore survivors adopt and repair the chunks of a writer recorded down", async () => {
  const states = new Map<number, RecordedNode["state"]>([[1, "up"], [2, "up"], [3, "up"], [
    4,
    "up",
  ]]);
  const cluster = await startCluster(4, { kind: "ec", k: 2, m: 1 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, b, c, d] = cluster.nodes;
    const survivors = [b!, c!, d!];
    const data = chunks(12, 31, 30_000);
    for (const chunk of data) await a!.store.put(chunk.id, chunk.bytes);
    // Node 2 wrote one of the chunks it holds a fragment of itself: its own copy then serves
    // the id (node 1's fragments of it stay while node 1 is only down).
    let shared: TestChunk | null = null;
    for (const chunk of data) {
      const mine = await Promise.all([0, 1, 2].map((i) => holdersOf([b!], chunk, 1, i)));
      if (mine.flat().length > 0) shared = chunk;
    }
    assert.ok(shared !== null);
    await b!.store.put(shared.id, shared.bytes);
    // Nothing to adopt while every writer is up.
    for (const n of survivors) assert.equal((await n.store.adoptStep()).adopted, 0);
    // Node 1 is gone for good: only the fragments on the others are left.
    await a!.stop();
    states.set(1, "down");
    let adopted = 0;
    const done = async () => {
      for (const chunk of data) {
        const all = await Promise.all([0, 1, 2].map((i) => holdersOf(survivors, chunk, 1, i)));
        if (chunk === shared) continue;
        if (all.some((held) => held.length !== 1)) return false;
        if (new Set(all.flat()).size !== 3) return false; // one fragment per node
      }
      return survivors.every((n) =>
        n.store.degradedCount() === 0 && n.store.pendingReleases() === 0
      );
    };
    for (let pass = 0; pass < 100 && !(await done()); pass++) {
      for (const n of survivors) {
        adopted += (await n.store.adoptStep()).adopted;
        await n.store.repairStep();
        await n.store.releasePending();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(await done(), "every chunk of node 1 back at full redundancy on the survivors");
    assert.equal(adopted, data.length, "each chunk adopted once, by one survivor");
    for (const chunk of data) {
      // It reads back through every survivor, and is owned by one (node 2 for its own copy).
      for (const n of survivors) assert.deepEqual(await n.store.get(chunk.id), chunk.bytes);
      const owners = [];
      for (const n of survivors) if (await n.store.has(chunk.id)) owners.push(n);
      assert.equal(owners.length, 1, "one owner");
      if (chunk === shared) assert.equal(owners[0], b);
      // The writer's reference count went with it: the chunk is kept.
      assert.equal(await owners[0]!.store.decRef(chunk.id), 1, "retained");
      assert.equal((await owners[0]!.store.collect()).erased, 0);
      // Deletes through the other survivors (more than the one reference the chunk had)
      // never erase it either: an uncounted reference is never dropped below what is held.
      for (const n of survivors) if (n !== owners[0]) await n.store.decRef(chunk.id);
      await owners[0]!.store.decRef(chunk.id);
      for (const n of survivors) assert.equal((await n.store.collect()).erased, 0);
      for (const n of survivors) assert.deepEqual(await n.store.get(chunk.id), chunk.bytes);
    }
    // A further sweep finds nothing new.
    for (const n of survivors) {
      for (let s = 0; s < 3; s++) assert.equal((await n.store.adoptStep()).adopted, 0);
    }
    // Node 1 comes back with its index: it owns its chunks again, and the fragments the
    // survivors rebuilt for them are released (node 1's own are still there).
    await a!.listen();
    states.set(1, "up");
    const handedBack = async () => {
      for (const chunk of data) {
        const all = await Promise.all([0, 1, 2].map((i) => holdersOf(cluster.nodes, chunk, 1, i)));
        if (all.some((held) => held.length !== 1)) return false;
        if (chunk !== shared) {
          for (const n of survivors) if (await n.store.has(chunk.id)) return false;
        }
      }
      return true;
    };
    for (let pass = 0; pass < 50 && !(await handedBack()); pass++) {
      for (const n of survivors) {
        await n.store.adoptStep();
        await n.store.releasePending();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(await handedBack(), "chunks given back to node 1, rebuilt fragments released");
    assert.equal(await b!.store.has(shared.id), true, "node 2 keeps its own copy");
    for (const chunk of data) {
      assert.equal((await a!.store.stat(chunk.id))!.refcount, 1);
      assert.deepEqual(await a!.store.get(chunk.id), chunk.bytes);
    }
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore.decRef() through a node that did not write the chunk drops it on its writer", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a, b] = cluster.nodes;
    const data = chunks(3, 41, 20_000);
    for (const c of data) await a!.store.put(c.id, c.bytes);
    await a!.store.incRef(data[0]!.id);
    // Node 2 indexes none of them: the references are node 1's to drop.
    assert.equal(await b!.store.has(data[0]!.id), false);
    for (const c of data) await b!.store.decRef(c.id);
    assert.equal((await a!.store.stat(data[0]!.id))!.refcount, 1, "one of two dropped");
    for (const c of data.slice(1)) assert.equal((await a!.store.stat(c.id))!.refcount, 0);
    assert.equal((await a!.store.collect()).erased, 2);
    for (const c of data.slice(1)) {
      for (const n of cluster.nodes) {
        assert.equal(await n.local.size(writerChunkId(c.id, 1), 0), null, "released everywhere");
      }
      await assert.rejects(
        () => b!.store.decRef(c.id),
        (e: ChunkStoreError) => e.code === "not_found",
      );
    }
    await b!.store.decRef(data[0]!.id);
    assert.equal((await a!.store.stat(data[0]!.id))!.refcount, 0);
    // An id no node stores is not found, as before.
    await assert.rejects(
      () => b!.store.decRef(new Uint8Array(32).fill(9)),
      (e: ChunkStoreError) => e.code === "not_found",
    );
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore merges a removed writer's copy into the adopter's own and releases it", async () => {
  const states = new Map<number, RecordedNode["state"]>([[1, "up"], [2, "up"], [3, "up"]]);
  const cluster = await startCluster(3, { kind: "copies", copies: 3 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, b, c] = cluster.nodes;
    const [chunk] = chunks(1, 51, 20_000);
    await a!.store.put(chunk!.id, chunk!.bytes);
    await b!.store.put(chunk!.id, chunk!.bytes);
    await a!.stop();
    states.set(1, "removed");
    const orphanHeld = async () =>
      (await Promise.all([0, 1, 2].map((i) => holdersOf([b!, c!], chunk!, 1, i)))).flat().length;
    assert.equal(await orphanHeld(), 2, "node 1's copies on nodes 2 and 3");
    for (let pass = 0; pass < 50 && (await orphanHeld()) > 0; pass++) {
      for (const n of [b!, c!]) {
        await n.store.adoptStep();
        await n.store.releasePending();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(await orphanHeld(), 0, "the removed writer's copies released");
    assert.equal(await c!.store.has(chunk!.id), false, "node 3 adopted nothing");
    assert.equal(await b!.store.decRef(chunk!.id), 1, "node 2's copy carries the references");
    assert.deepEqual(await c!.store.get(chunk!.id), chunk!.bytes);
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore.incRef() through a node that did not write the chunk adds it on its writer", async () => {
  const cluster = await startCluster(3, { kind: "copies", copies: 3 });
  try {
    const [a, b] = cluster.nodes;
    const [chunk] = chunks(1, 61, 20_000);
    await a!.store.put(chunk!.id, chunk!.bytes, { tenant: "t1" });
    await b!.store.incRef(chunk!.id, { tenant: "t2" });
    assert.equal((await a!.store.stat(chunk!.id))!.refcount, 2);
    assert.equal(await b!.store.has(chunk!.id), false, "node 2 indexes nothing");
    await b!.store.decRef(chunk!.id);
    await b!.store.decRef(chunk!.id);
    assert.equal((await a!.store.stat(chunk!.id))!.refcount, 0);
    await assert.rejects(
      () => b!.store.incRef(new Uint8Array(32).fill(3)),
      (e: ChunkStoreError) => e.code === "not_found",
    );
  } finally {
    await cluster.close();
  }
});

Deno.test("ClusterChunkStore takes no reference to a chunk of a writer only down: its return cannot erase one", async () => {
  const states = new Map<number, RecordedNode["state"]>([[1, "up"], [2, "up"], [3, "up"]]);
  const cluster = await startCluster(3, { kind: "copies", copies: 3 }, {
    members: (peers) => recorded(peers, states),
  });
  try {
    const [a, b, c] = cluster.nodes;
    const [chunk] = chunks(1, 71, 20_000);
    await a!.store.put(chunk!.id, chunk!.bytes);
    await a!.stop();
    states.set(1, "down");
    for (let pass = 0; pass < 50 && !(await b!.store.has(chunk!.id)); pass++) {
      for (const n of [b!, c!]) await n.store.adoptStep();
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(await b!.store.has(chunk!.id), true, "node 2, the lowest live holder, adopts");
    // Node 1 may come back with its index and take the chunk back: a reference taken now
    // would be counted nowhere. Both the adopter and the others refuse it as not_found...
    for (const n of [b!, c!]) {
      await assert.rejects(
        () => n.store.incRef(chunk!.id),
        (e: ChunkStoreError) => e.code === "not_found" && /node 1, is down/.test(e.message),
      );
    }
    // ...and a put of the same bytes (what the engine does next) stores a copy of its own.
    assert.deepEqual(await b!.store.put(chunk!.id, chunk!.bytes), { created: true });
    assert.deepEqual(await c!.store.put(chunk!.id, chunk!.bytes), { created: true });
    for (const n of [b!, c!]) assert.equal((await n.store.stat(chunk!.id))!.refcount, 1);
    // Node 1 is back: its count is its own (1), and dropping it erases only its copy.
    await a!.listen();
    states.set(1, "up");
    for (let pass = 0; pass < 10; pass++) {
      for (const n of [b!, c!]) {
        await n.store.adoptStep();
        await n.store.releasePending();
      }
    }
    assert.equal((await a!.store.stat(chunk!.id))!.refcount, 1);
    assert.equal(await a!.store.decRef(chunk!.id), 0);
    assert.equal((await a!.store.collect()).erased, 1);
    for (let pass = 0; pass < 5; pass++) {
      for (const n of cluster.nodes) await n.store.releasePending();
    }
    // The references taken while node 1 was down still read, through every node.
    for (const n of cluster.nodes) assert.deepEqual(await n.store.get(chunk!.id), chunk!.bytes);
    for (const n of [b!, c!]) assert.equal(await n.store.decRef(chunk!.id), 0);
  } finally {
    await cluster.close();
  }
});
