import assert from "node:assert/strict";
import * as net from "node:net";
import { missingPart, Prng } from "../base/mod.ts";
import { createLogger, type Logger } from "../obs/mod.ts";
import { emptyMessage, type Message } from "../raft/mod.ts";
import { FabricClient, type FabricClientLimits, fetchFragments } from "./fabric_client.ts";
import {
  FabricServer,
  type FabricServerLimits,
  type FragmentData,
  type FragmentGet,
  type FragmentHandler,
  type FragmentPut,
  type FragmentRef,
  type FragmentStat,
} from "./fabric_server.ts";
import {
  encodeFabricHandshake,
  FABRIC_HANDSHAKE_OK,
  FABRIC_META_SIZE_BYTES_MAX,
  FABRIC_REQUEST_HEADER_SIZE_BYTES,
  FABRIC_RESPONSE_HEADER_SIZE_BYTES,
  FabricBadRequestError,
  FabricCancelledError,
  FabricNoSpaceError,
  FabricNotFoundError,
  FabricProtocolError,
  FabricTimeoutError,
  FabricUnavailableError,
  OP_GET,
  OP_PUT,
  readRequestHeader,
  readResponseHeader,
  writeRequestHeader,
} from "./fabric_wire.ts";
import { TcpRaftTransport, type TlsMaterial } from "./raft_transport.ts";
import { genCerts, OPENSSL, tlsMaterial } from "./_testing.ts";

const CLUSTER = "test-cluster";
const MIB = 1024 * 1024;

function capture(): { logger: Logger; logs: string[] } {
  const logs: string[] = [];
  return {
    logs,
    logger: createLogger({ level: "debug", format: "text", sink: { write: (l) => logs.push(l) } }),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function key(ref: { chunkId: Uint8Array; index: number }): string {
  return `${Array.from(ref.chunkId, (b) => b.toString(16).padStart(2, "0")).join("")}/${ref.index}`;
}

function chunkId(n: number): Uint8Array {
  const id = new Uint8Array(32);
  new DataView(id.buffer).setUint32(0, n);
  id[31] = 0xc1;
  return id;
}

/**
 * A fragment store in memory, with the hooks the tests need: a gate that holds requests,
 * a capacity that answers no space, and a record of how many bytes its puts held at once.
 */
class MemoryFragments implements FragmentHandler {
  readonly fragments = new Map<string, { bytes: Uint8Array; meta: Uint8Array }>();
  capacityBytes = Infinity;
  usedBytes = 0;
  /** When set, every request waits for it first. */
  gate: Promise<void> | null = null;
  /** Delay of each request, chosen per call (ms). */
  delayMs: (() => number) | null = null;
  putBytesNow = 0;
  putBytesPeak = 0;
  inHandlerNow = 0;
  inHandlerPeak = 0;
  readonly calls: string[] = [];

  async #enter(what: string): Promise<void> {
    this.calls.push(what);
    this.inHandlerNow++;
    this.inHandlerPeak = Math.max(this.inHandlerPeak, this.inHandlerNow);
    if (this.gate !== null) await this.gate;
    if (this.delayMs !== null) await sleep(this.delayMs());
  }

  async put(r: FragmentPut): Promise<void> {
    this.putBytesNow += r.bytes.length;
    this.putBytesPeak = Math.max(this.putBytesPeak, this.putBytesNow);
    try {
      await this.#enter("put");
      if (this.usedBytes + r.bytes.length > this.capacityBytes) {
        throw new FabricNoSpaceError(`no room for ${r.bytes.length} bytes`);
      }
      // The fabric's buffer is lent until put() settles: keep a copy.
      this.fragments.set(key(r), { bytes: r.bytes.slice(), meta: r.meta.slice() });
      this.usedBytes += r.bytes.length;
    } finally {
      this.putBytesNow -= r.bytes.length;
      this.inHandlerNow--;
    }
  }

  async get(r: FragmentGet): Promise<FragmentData | null> {
    try {
      await this.#enter("get");
      const f = this.fragments.get(key(r));
      if (f === undefined) return null;
      if (r.offset > f.bytes.length) {
        throw new FabricBadRequestError(`offset ${r.offset} past the end (${f.bytes.length})`);
      }
      const range = f.bytes.subarray(r.offset, r.offset + r.lengthMax);
      // Every other get reads into the fabric's buffer, so both paths are exercised.
      if (this.calls.length % 2 === 0) {
        const out = r.allocate(range.length);
        out.set(range);
        return { bytes: out, sizeBytes: f.bytes.length };
      }
      return { bytes: range, sizeBytes: f.bytes.length };
    } finally {
      this.inHandlerNow--;
    }
  }

  async stat(r: FragmentRef): Promise<FragmentStat | null> {
    try {
      await this.#enter("stat");
      const f = this.fragments.get(key(r));
      return f === undefined ? null : { sizeBytes: f.bytes.length, meta: f.meta };
    } finally {
      this.inHandlerNow--;
    }
  }

  async delete(r: FragmentRef): Promise<boolean> {
    try {
      await this.#enter("delete");
      const f = this.fragments.get(key(r));
      if (f !== undefined) this.usedBytes -= f.bytes.length;
      return this.fragments.delete(key(r));
    } finally {
      this.inHandlerNow--;
    }
  }
}

interface Node {
  id: number;
  transport: TcpRaftTransport;
  server: FabricServer;
  client: FabricClient;
  store: MemoryFragments;
  logs: string[];
  raftReceived: { shard: number; msg: Message }[];
}

interface NodeOptions {
  port?: number;
  tls?: TlsMaterial;
  cluster?: string;
  clientLimits?: Partial<FabricClientLimits>;
  serverLimits?: Partial<FabricServerLimits>;
  store?: MemoryFragments;
}

async function startNode(id: number, options: NodeOptions = {}): Promise<Node> {
  const { logger, logs } = capture();
  const transport = await TcpRaftTransport.listen({
    nodeId: id,
    clusterId: options.cluster ?? CLUSTER,
    listen: { host: `127.0.0.${id}`, port: options.port ?? 0 },
    peers: [],
    tls: options.tls,
    limits: { reconnectDelayMsMin: 10, reconnectDelayMsMax: 100 },
    logger,
    random: () => 0.5,
  });
  const store = options.store ?? new MemoryFragments();
  const server = FabricServer.attach(transport, {
    nodeId: id,
    clusterId: options.cluster ?? CLUSTER,
    handler: store,
    limits: options.serverLimits,
    logger,
  });
  const client = new FabricClient({
    nodeId: id,
    clusterId: options.cluster ?? CLUSTER,
    tls: options.tls,
    limits: { reconnectDelayMsMin: 10, reconnectDelayMsMax: 100, ...options.clientLimits },
    logger,
    random: () => 0.5,
  });
  const node: Node = { id, transport, server, client, store, logs, raftReceived: [] };
  transport.onMessage((shard, msg) => node.raftReceived.push({ shard, msg }));
  return node;
}

function introduce(nodes: Node[]): void {
  for (const a of nodes) {
    for (const b of nodes) {
      if (a === b) continue;
      a.transport.setPeer(b.id, b.transport.addr);
      a.client.setPeer(b.id, b.transport.addr);
    }
  }
}

async function stopNode(n: Node): Promise<void> {
  await n.client.close();
  await n.server.close();
  await n.transport.close();
}

async function closeAll(nodes: Node[]): Promise<void> {
  await Promise.all(nodes.map(stopNode));
}

Deno.test("FabricClient puts, gets (whole and ranges), stats and deletes fragments on a peer", async () => {
  const nodes = [await startNode(1), await startNode(2)];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    const prng = new Prng(3);
    const bytes = prng.bytes(100_000);
    const meta = new TextEncoder().encode('{"k":4,"m":2,"length":400000}');
    await a.client.put(2, { chunkId: chunkId(1), index: 3, bytes, meta });
    assert.deepEqual(b.store.fragments.get(key({ chunkId: chunkId(1), index: 3 }))?.bytes, bytes);

    const whole = await a.client.get(2, { chunkId: chunkId(1), index: 3 });
    assert.deepEqual(whole.bytes, bytes);
    assert.equal(whole.sizeBytes, bytes.length);
    for (const [offset, length] of [[0, 1], [999, 4096], [99_990, 100], [100_000, 10]]) {
      const into = new Uint8Array(8192);
      const r = await a.client.get(2, { chunkId: chunkId(1), index: 3, offset, length, into });
      assert.deepEqual(r.bytes, bytes.subarray(offset, offset + length), `range ${offset}`);
      assert.equal(r.bytes.buffer, into.buffer, "received into the caller's buffer");
      assert.equal(r.sizeBytes, bytes.length);
    }
    assert.deepEqual(await a.client.stat(2, { chunkId: chunkId(1), index: 3 }), {
      sizeBytes: bytes.length,
      meta,
    });
    assert.equal(await a.client.stat(2, { chunkId: chunkId(1), index: 4 }), null);

    // Typed errors: missing fragment, range past the end, no space, local bad requests.
    await assert.rejects(
      a.client.get(2, { chunkId: chunkId(9), index: 0 }),
      (e) => e instanceof FabricNotFoundError && e.peer === 2,
    );
    await assert.rejects(
      a.client.get(2, { chunkId: chunkId(1), index: 3, offset: 100_001 }),
      (e) => e instanceof FabricBadRequestError && /past the end/.test(e.message),
    );
    b.store.capacityBytes = b.store.usedBytes + 10;
    await assert.rejects(
      a.client.put(2, { chunkId: chunkId(2), index: 0, bytes: new Uint8Array(11) }),
      (e) => e instanceof FabricNoSpaceError && e.code === "no_space",
    );
    b.store.capacityBytes = Infinity;
    await assert.rejects(
      a.client.put(2, {
        chunkId: chunkId(2),
        index: 0,
        bytes: new Uint8Array(1),
        meta: new Uint8Array(FABRIC_META_SIZE_BYTES_MAX + 1),
      }),
      FabricBadRequestError,
    );
    await assert.rejects(
      a.client.put(2, { chunkId: new Uint8Array(31), index: 0, bytes: new Uint8Array(1) }),
      FabricBadRequestError,
    );
    await assert.rejects(
      a.client.put(7, { chunkId: chunkId(2), index: 0, bytes: new Uint8Array(1) }),
      (e) => e instanceof FabricUnavailableError && /no fabric address for node 7/.test(e.message),
    );

    // A fragment produced straight into a lent frame buffer goes out without a copy.
    const lent = a.client.lendFragmentBuffer(5000);
    lent.set(bytes.subarray(0, 5000));
    await a.client.put(2, { chunkId: chunkId(5), index: 0, bytes: lent, meta });
    assert.deepEqual(
      b.store.fragments.get(key({ chunkId: chunkId(5), index: 0 })),
      { bytes: bytes.subarray(0, 5000), meta },
    );
    const unused = a.client.lendFragmentBuffer(10);
    a.client.returnFragmentBuffer(unused);
    assert.throws(() => a.client.returnFragmentBuffer(unused), /not lent/);
    await assert.rejects(
      a.client.put(9, { chunkId: chunkId(5), index: 1, bytes: a.client.lendFragmentBuffer(10) }),
      FabricUnavailableError,
    );

    assert.equal(await a.client.delete(2, { chunkId: chunkId(1), index: 3 }), true);
    assert.equal(await a.client.delete(2, { chunkId: chunkId(1), index: 3 }), false);
    assert.equal(await a.client.stat(2, { chunkId: chunkId(1), index: 3 }), null);
    // An empty fragment is a fragment.
    await a.client.put(2, { chunkId: chunkId(3), index: 0, bytes: new Uint8Array(0) });
    assert.equal((await a.client.get(2, { chunkId: chunkId(3), index: 0 })).bytes.length, 0);
    // And the other way round, on the other node's own connection.
    await b.client.put(1, { chunkId: chunkId(4), index: 1, bytes: bytes.subarray(0, 10) });
    assert.deepEqual(
      a.store.fragments.get(key({ chunkId: chunkId(4), index: 1 }))?.bytes,
      bytes.subarray(0, 10),
    );
    assert.equal(b.server.stats().protocolErrors + a.server.stats().protocolErrors, 0);
    assert.equal(a.client.inflightBytes(2), 0, "nothing left in flight");
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricClient carries 1 MiB and largest fragments byte-exact, and refuses one byte more", async () => {
  const fragmentSizeBytesMax = 4 * MIB;
  const nodes = [
    await startNode(1, { clientLimits: { fragmentSizeBytesMax } }),
    await startNode(2, { serverLimits: { fragmentSizeBytesMax } }),
  ];
  try {
    introduce(nodes);
    const [a] = nodes as [Node, Node];
    const prng = new Prng(5);
    for (const [n, size] of [[1, MIB], [2, fragmentSizeBytesMax]] as const) {
      const bytes = prng.bytes(size);
      await a.client.put(2, { chunkId: chunkId(n), index: 0, bytes });
      const into = new Uint8Array(size);
      const got = await a.client.get(2, { chunkId: chunkId(n), index: 0, into });
      assert.equal(got.bytes.length, size);
      assert.ok(got.bytes.every((v, i) => v === bytes[i]), `${size} bytes byte-exact`);
    }
    await assert.rejects(
      a.client.put(2, {
        chunkId: chunkId(3),
        index: 0,
        bytes: new Uint8Array(fragmentSizeBytesMax + 1),
      }),
      FabricBadRequestError,
    );
    // A peer that takes less than this node sends is told apart before anything is sent.
    const small = await startNode(3, { serverLimits: { fragmentSizeBytesMax: MIB } });
    nodes.push(small);
    introduce(nodes);
    await assert.rejects(
      a.client.put(3, { chunkId: chunkId(3), index: 0, bytes: new Uint8Array(MIB + 1) }),
      (e) => e instanceof FabricBadRequestError && /limit of 1048576/.test(e.message),
    );
    await a.client.put(3, { chunkId: chunkId(3), index: 0, bytes: new Uint8Array(MIB) });
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricClient pipelines many requests on one connection and takes answers out of order", async () => {
  const nodes = [
    await startNode(1, {
      clientLimits: { connectionsPerPeerMax: 1, outstandingPerConnectionMax: 256 },
    }),
    await startNode(2),
  ];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    const prng = new Prng(11);
    const count = 200;
    const payloads = Array.from({ length: count }, (_, i) => prng.bytes(100 + (i * 37) % 5000));
    await Promise.all(
      payloads.map((bytes, i) => a.client.put(2, { chunkId: chunkId(i), index: i % 7, bytes })),
    );
    // Answers come back in a random order: each get waits a random time in the handler.
    const delays = new Prng(12);
    b.store.delayMs = () => delays.nextInt(30);
    const finished: number[] = [];
    const results = await Promise.all(
      payloads.map(async (_, i) => {
        const r = await a.client.get(2, { chunkId: chunkId(i), index: i % 7 });
        finished.push(i);
        return r.bytes;
      }),
    );
    results.forEach((bytes, i) => assert.deepEqual(bytes, payloads[i], `answer ${i}`));
    assert.ok(b.store.inHandlerPeak > 50, `handled concurrently (peak ${b.store.inHandlerPeak})`);
    const inOrder = finished.every((v, i) => v === i);
    assert.ok(!inOrder, "answers arrived out of request order");
    assert.equal(a.client.stats().connects, 1, "one connection carried all of it");
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricClient bounds bytes in flight per peer: callers wait and the store never holds more", async () => {
  const fragment = 256 * 1024;
  const inflightBytesPerPeerMax = 1 * MIB + FABRIC_META_SIZE_BYTES_MAX;
  const nodes = [
    await startNode(1, {
      clientLimits: { fragmentSizeBytesMax: MIB, inflightBytesPerPeerMax, waitingPerPeerMax: 100 },
    }),
    await startNode(2),
  ];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    b.store.delayMs = () => 5;
    const prng = new Prng(13);
    const payloads = Array.from({ length: 64 }, () => prng.bytes(fragment));
    await Promise.all(
      payloads.map((bytes, i) => a.client.put(2, { chunkId: chunkId(i), index: 0, bytes })),
    );
    assert.ok(b.store.putBytesPeak > 0);
    assert.ok(
      b.store.putBytesPeak <= inflightBytesPerPeerMax,
      `store held ${b.store.putBytesPeak} bytes at once (bound ${inflightBytesPerPeerMax})`,
    );
    assert.ok(b.store.putBytesPeak >= 2 * fragment, "the bound was used, not serialised");
    assert.ok(a.client.stats().inflightBytesPeak <= inflightBytesPerPeerMax);
    assert.ok(a.client.stats().waits > 0, "callers waited");
    assert.equal(a.client.inflightBytes(2), 0);
    // Gets are counted by the length they ask for.
    const got = await Promise.all(
      payloads.map((_, i) => a.client.get(2, { chunkId: chunkId(i), index: 0, length: fragment })),
    );
    got.forEach((r, i) => assert.deepEqual(r.bytes, payloads[i]));
    assert.ok(a.client.stats().inflightBytesPeak <= inflightBytesPerPeerMax);
    // The waiting line is bounded too: past it, a request fails at once.
    const many = Array.from(
      { length: 200 },
      (_, i) => a.client.put(2, { chunkId: chunkId(1000 + i), index: 0, bytes: payloads[0]! }),
    );
    const outcomes = await Promise.allSettled(many);
    const refused = outcomes.filter((o) =>
      o.status === "rejected" && o.reason instanceof FabricUnavailableError &&
      /waiting for room/.test(o.reason.message)
    );
    assert.ok(refused.length > 0, "some were refused for the full line");
    assert.ok(outcomes.filter((o) => o.status === "fulfilled").length >= 100);
    assert.equal(a.client.inflightBytes(2), 0);
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricClient fails requests to a killed peer as unavailable, then reconnects when it is back", async () => {
  const a = await startNode(1);
  let b = await startNode(2);
  const nodes = [a, b];
  try {
    introduce(nodes);
    await a.client.put(2, { chunkId: chunkId(1), index: 0, bytes: new Uint8Array([1, 2, 3]) });
    let release!: () => void;
    b.store.gate = new Promise<void>((r) => release = r);
    const hanging = a.client.get(2, { chunkId: chunkId(1), index: 0 });
    await waitFor("the get in the handler", () => b.store.inHandlerNow === 1);
    const port = b.transport.addr.port;
    await stopNode(b);
    await assert.rejects(hanging, (e) => e instanceof FabricUnavailableError && e.peer === 2);
    release();
    // While it is down: unavailable at once (connection refused, then backoff).
    await assert.rejects(
      a.client.stat(2, { chunkId: chunkId(1), index: 0 }),
      FabricUnavailableError,
    );
    b = await startNode(2, { port });
    nodes[1] = b;
    let ok = false;
    for (let i = 0; i < 100 && !ok; i++) {
      try {
        await a.client.put(2, { chunkId: chunkId(2), index: 0, bytes: new Uint8Array([4]) });
        ok = true;
      } catch (e) {
        assert.ok(e instanceof FabricUnavailableError, String(e));
        await sleep(20);
      }
    }
    assert.ok(ok, "reconnected");
    assert.ok(a.client.stats().reconnects >= 1);
    assert.equal(a.client.inflightBytes(2), 0);
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricClient times out and cancels requests, drops their late answers, and keeps the connection", async () => {
  const nodes = [
    await startNode(1, { clientLimits: { connectionsPerPeerMax: 1 } }),
    await startNode(2),
  ];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    const bytes = new Prng(17).bytes(50_000);
    await a.client.put(2, { chunkId: chunkId(1), index: 0, bytes });
    let release!: () => void;
    b.store.gate = new Promise<void>((r) => release = r);
    const into = new Uint8Array(bytes.length).fill(0xee);
    const slow = a.client.get(2, { chunkId: chunkId(1), index: 0, into }, { timeoutMs: 100 });
    await assert.rejects(slow, (e) => e instanceof FabricTimeoutError && e.code === "timeout");
    const controller = new AbortController();
    const cancelled = a.client.stat(2, { chunkId: chunkId(1), index: 0 }, {
      signal: controller.signal,
    });
    await waitFor("both in the handler", () => b.store.inHandlerNow === 2);
    controller.abort();
    await assert.rejects(cancelled, FabricCancelledError);
    assert.equal(a.client.inflightBytes(2), 0, "their bytes are no longer in flight");
    b.store.gate = null;
    release();
    // The late answers arrive and are dropped; the abandoned buffer is not written.
    const after = await a.client.get(2, { chunkId: chunkId(1), index: 0 });
    assert.deepEqual(after.bytes, bytes);
    assert.ok(into.every((v) => v === 0xee), "an abandoned get never writes its buffer");
    assert.equal(a.client.stats().connects, 1, "the same connection");
    assert.equal(a.client.stats().protocolErrors, 0);
    // An already-aborted signal fails before anything is sent.
    await assert.rejects(
      a.client.delete(2, { chunkId: chunkId(1), index: 0 }, { signal: AbortSignal.abort() }),
      FabricCancelledError,
    );
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("fetchFragments returns as soon as k arrive, skips dead or missing owners, and says when k cannot arrive", async () => {
  const nodes = [await startNode(1), await startNode(2), await startNode(3), await startNode(4)];
  try {
    introduce(nodes);
    const [a, b, c, d] = nodes as [Node, Node, Node, Node];
    const prng = new Prng(19);
    const owners = [b, c, d, b, c, d]; // EC 4+2 over three peers
    const fragments = owners.map(() => prng.bytes(64 * 1024));
    await Promise.all(
      owners.map((o, i) =>
        a.client.put(o.id, { chunkId: chunkId(7), index: i, bytes: fragments[i]! })
      ),
    );
    const sources = owners.map((o, i) => ({
      peer: o.id,
      chunkId: chunkId(7),
      index: i,
      length: 64 * 1024,
    }));
    const all = await fetchFragments(a.client, sources, 4);
    assert.equal(all.length, 4);
    for (const f of all) assert.deepEqual(f.bytes, fragments[f.index]);

    // Node 4 holds its fragments: with two hedged gets, the fetch completes from the others
    // while node 4 still holds both of its requests, and cancels them.
    let release!: () => void;
    d.store.gate = new Promise<void>((r) => release = r);
    const some = await fetchFragments(a.client, sources, 4, { timeoutMs: 60_000, hedge: 2 });
    assert.deepEqual(some.map((f) => f.index).sort(), [0, 1, 3, 4]);
    assert.equal(d.store.inHandlerNow, 2, "did not wait for the slow owner");
    await waitFor(
      "the cancelled gets leave nothing in flight",
      () => a.client.inflightBytes(4) === 0,
    );
    d.store.gate = null;
    release();

    // Node 3 dies and one of node 2's fragments is gone: 3 of 4 cannot become 4.
    await stopNode(c);
    b.store.fragments.delete(key({ chunkId: chunkId(7), index: 3 }));
    const rest = await fetchFragments(a.client, [...sources, sources[0]!], 3, { hedge: 1 });
    assert.equal(rest.length, 3);
    await assert.rejects(
      fetchFragments(a.client, sources, 4),
      (e) =>
        e instanceof FabricUnavailableError &&
        /of 4 fragments arrived.*no such fragment/.test(e.message),
    );
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("Raft messages and fabric requests share one port at once", async () => {
  const nodes = [await startNode(1), await startNode(2)];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    const prng = new Prng(23);
    const sent: Message[] = [];
    const fabric = (async () => {
      for (let round = 0; round < 10; round++) {
        await Promise.all(Array.from({ length: 8 }, async (_, i) => {
          const bytes = prng.bytes(32 * 1024);
          await a.client.put(2, { chunkId: chunkId(round), index: i, bytes });
          assert.deepEqual(
            (await a.client.get(2, { chunkId: chunkId(round), index: i })).bytes,
            bytes,
          );
        }));
      }
    })();
    for (let i = 0; i < 100; i++) {
      const msg = emptyMessage("heartbeat", 1, 2, 3);
      msg.commit = i;
      sent.push(msg);
      a.transport.send(i % 4, msg);
      if (i % 10 === 0) await sleep(1);
    }
    await fabric;
    await waitFor("raft delivery", () => b.raftReceived.length === 100);
    assert.deepEqual(b.raftReceived.map((r) => r.msg), sent);
    assert.equal(b.transport.stats().protocolErrors, 0);
    assert.equal(b.server.stats().protocolErrors, 0);
    assert.equal(b.store.fragments.size, 80);
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricClient is refused by a peer of another cluster or under another node id", async () => {
  const nodes = [await startNode(1), await startNode(2), await startNode(3, { cluster: "other" })];
  try {
    const [a, b, c] = nodes as [Node, Node, Node];
    a.client.setPeer(3, c.transport.addr);
    await assert.rejects(
      a.client.put(3, { chunkId: chunkId(1), index: 0, bytes: new Uint8Array(1) }),
      (e) => e instanceof FabricUnavailableError && /wrong cluster id/.test(e.message),
    );
    // Node 1 believes node 4 listens where node 2 does.
    a.client.setPeer(4, b.transport.addr);
    await assert.rejects(
      a.client.put(4, { chunkId: chunkId(1), index: 0, bytes: new Uint8Array(1) }),
      (e) => e instanceof FabricUnavailableError && /wrong node id/.test(e.message),
    );
    assert.equal(b.store.calls.length + c.store.calls.length, 0, "nothing reached a store");
    assert.ok(b.server.stats().protocolErrors >= 1 && c.server.stats().protocolErrors >= 1);
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricServer answers busy past its connection limit, and FabricClient.removePeer() fails waiting callers", async () => {
  const nodes = [
    await startNode(1, { clientLimits: { connectionsPerPeerMax: 1 } }),
    await startNode(2, { serverLimits: { inboundConnectionsMax: 1 } }),
    await startNode(3),
  ];
  try {
    introduce(nodes);
    const [a, b, c] = nodes as [Node, Node, Node];
    await a.client.put(2, { chunkId: chunkId(1), index: 0, bytes: new Uint8Array(4) });
    await assert.rejects(
      c.client.put(2, { chunkId: chunkId(1), index: 1, bytes: new Uint8Array(4) }),
      (e) => e instanceof FabricUnavailableError && /too many fabric connections/.test(e.message),
    );
    assert.equal(b.server.stats().connections, 1);
    // Node 1's connection is unaffected.
    assert.equal((await a.client.get(2, { chunkId: chunkId(1), index: 0 })).bytes.length, 4);

    // Callers in line for room to a peer that is then removed fail at once.
    let release!: () => void;
    b.store.gate = new Promise<void>((r) => release = r);
    const big = new Uint8Array(8 * MIB);
    const inFlight = Array.from(
      { length: 12 },
      (_, i) => a.client.put(2, { chunkId: chunkId(10 + i), index: 0, bytes: big }),
    );
    await waitFor("callers waiting", () => a.client.stats().waits >= 1);
    a.client.removePeer(2);
    const outcomes = await Promise.allSettled(inFlight);
    assert.ok(
      outcomes.every((o) => o.status === "rejected" && o.reason instanceof FabricUnavailableError),
    );
    assert.equal(a.client.inflightBytes(2), 0);
    b.store.gate = null;
    release();
  } finally {
    await closeAll(nodes);
  }
});

// ---- malformed input -------------------------------------------------------------------

Deno.test("readRequestHeader() and readResponseHeader() take any 60 bytes without throwing anything but protocol errors", () => {
  const prng = new Prng(29);
  const valid = new Uint8Array(FABRIC_REQUEST_HEADER_SIZE_BYTES);
  const view = new DataView(valid.buffer);
  writeRequestHeader(view, valid, {
    bodySizeBytes: 100,
    op: OP_PUT,
    metaSizeBytes: 10,
    requestId: 5,
    index: 1,
    offset: 0,
    length: 0,
    chunkId: chunkId(1),
  });
  assert.equal(readRequestHeader(view, valid, 0, MIB).bodySizeBytes, 100);
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    const bytes = i % 2 === 0 ? prng.bytes(FABRIC_REQUEST_HEADER_SIZE_BYTES) : valid.slice();
    if (i % 2 === 1) {
      for (let f = 0; f < 1 + (i % 3); f++) bytes[prng.nextInt(24)]! ^= 1 << prng.nextInt(8);
    }
    const v = new DataView(bytes.buffer);
    for (
      const read of [() => readRequestHeader(v, bytes, 0, MIB), () => readResponseHeader(v, 0)]
    ) {
      try {
        const h = read();
        assert.ok(h.bodySizeBytes >= 0);
      } catch (e) {
        assert.ok(e instanceof FabricProtocolError, String(e));
        refused++;
      }
    }
  }
  assert.ok(refused > 5000, `most garbage is refused (${refused})`);
  assert.equal(FABRIC_RESPONSE_HEADER_SIZE_BYTES, 24);
});

/** Sends `bytes` after a valid handshake on a raw socket; resolves when closed or after 200 ms. */
async function sendRaw(
  addr: { host: string; port: number },
  bytes: Uint8Array,
  handshake = true,
): Promise<{ closed: boolean; received: number }> {
  const socket = net.connect({ host: addr.host, port: addr.port });
  let received = 0;
  let closed = false;
  socket.on("data", (c: Uint8Array) => received += c.length);
  socket.on("error", () => {});
  const done = new Promise<void>((r) =>
    socket.on("close", () => {
      closed = true;
      r();
    })
  );
  await new Promise<void>((r, j) => {
    socket.once("connect", () => r());
    socket.once("error", j);
  });
  if (handshake) {
    socket.write(
      encodeFabricHandshake(FABRIC_HANDSHAKE_OK, new TextEncoder().encode(CLUSTER), 1, 2, MIB),
    );
  }
  socket.write(bytes);
  await Promise.race([done, sleep(200)]);
  socket.destroy();
  return { closed, received };
}

Deno.test("FabricServer closes connections that send malformed frames (seeded fuzz) and keeps serving", async () => {
  const nodes = [await startNode(1), await startNode(2)];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    const prng = new Prng(31);
    const frame = new Uint8Array(FABRIC_REQUEST_HEADER_SIZE_BYTES);
    const fv = new DataView(frame.buffer);
    writeRequestHeader(fv, frame, {
      bodySizeBytes: 0,
      op: OP_GET,
      metaSizeBytes: 0,
      requestId: 1,
      index: 0,
      offset: 0,
      length: 16,
      chunkId: chunkId(1),
    });
    // Named cases first: an unknown op, a body on a get, an oversized put, a duplicate id.
    const cases: Uint8Array[] = [];
    const mutate = (f: (v: DataView, b: Uint8Array) => void) => {
      const b = frame.slice();
      f(new DataView(b.buffer), b);
      return b;
    };
    cases.push(mutate((v) => v.setUint8(4, 9)));
    cases.push(mutate((v) => v.setUint32(0, 5)));
    cases.push(mutate((v) => {
      v.setUint8(4, OP_PUT);
      v.setUint32(0, 0xffff_fff0);
    }));
    cases.push(mutate((v) => v.setUint8(5, 1)));
    const twice = new Uint8Array(2 * frame.length);
    b.store.gate = new Promise(() => {}); // the first get never answers, so its id stays taken
    twice.set(frame);
    twice.set(frame, frame.length);
    cases.push(twice);
    for (let i = 0; i < 30; i++) {
      const m = frame.slice();
      for (let f = 0; f < 3; f++) m[prng.nextInt(28)]! ^= 1 << prng.nextInt(8);
      cases.push(m);
      cases.push(prng.bytes(1 + prng.nextInt(200)));
    }
    let closedCount = 0;
    for (const bytes of cases) {
      const r = await sendRaw(b.transport.addr, bytes);
      if (r.closed) closedCount++;
    }
    // Garbage before the handshake, and a TLS hello on a plain port: closed too.
    assert.ok((await sendRaw(b.transport.addr, prng.bytes(64), false)).closed);
    assert.ok(closedCount >= 5 + 20, `malformed frames closed their connections (${closedCount})`);
    assert.ok(b.server.stats().protocolErrors >= 5);
    b.store.gate = null;
    // The server still serves a real client, and no handler ever saw an unknown op.
    await a.client.put(2, { chunkId: chunkId(5), index: 0, bytes: new Uint8Array([9]) });
    assert.deepEqual(
      (await a.client.get(2, { chunkId: chunkId(5), index: 0 })).bytes,
      new Uint8Array([9]),
    );
    assert.ok(b.store.calls.every((c) => ["put", "get", "stat", "delete"].includes(c)));
    await waitFor("fuzz connections gone", () => b.server.stats().connections <= 1);
  } finally {
    await closeAll(nodes);
  }
});

Deno.test("FabricServer stops reading a connection that holds too many bytes, and resumes", async () => {
  const nodes = [
    await startNode(1, { clientLimits: { inflightBytesPerPeerMax: 64 * MIB } }),
    await startNode(2, { serverLimits: { connectionBytesMax: 2 * MIB, serverBytesMax: 4 * MIB } }),
  ];
  try {
    introduce(nodes);
    const [a, b] = nodes as [Node, Node];
    let release!: () => void;
    b.store.gate = new Promise<void>((r) => release = r);
    const bytes = new Prng(37).bytes(512 * 1024);
    const puts = Array.from(
      { length: 24 },
      (_, i) => a.client.put(2, { chunkId: chunkId(i), index: 0, bytes }),
    );
    await waitFor("the server pauses", () => b.server.stats().pauses > 0);
    await sleep(50);
    assert.ok(
      b.server.stats().heldBytes <= 4 * MIB + 2 * MIB,
      `held ${b.server.stats().heldBytes}`,
    );
    assert.ok(b.store.putBytesPeak <= 6 * MIB);
    b.store.gate = null;
    release();
    await Promise.all(puts);
    assert.equal(b.store.fragments.size, 24);
    await waitFor("nothing held", () => b.server.stats().heldBytes === 0);
  } finally {
    await closeAll(nodes);
  }
});

// ---- mutual TLS ------------------------------------------------------------------------

Deno.test({
  name:
    "FabricClient over mutual TLS moves fragments between nodes and is refused with a tenant certificate or without TLS" +
    (OPENSSL ? "" : " (IGNORED: openssl missing, Debian package openssl)"),
  ignore: missingPart("openssl (Debian openssl)", !OPENSSL && "no openssl command on PATH"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-fabric-tls-" });
    const nodes: Node[] = [];
    try {
      await genCerts(dir, [
        "--node",
        "node1:127.0.0.1",
        "--node",
        "node2:127.0.0.2",
        "--tenant",
        "acme",
      ]);
      const a = await startNode(1, { tls: await tlsMaterial(dir, "node1") });
      const b = await startNode(2, { tls: await tlsMaterial(dir, "node2") });
      nodes.push(a, b);
      introduce([a, b]);
      const bytes = new Prng(41).bytes(MIB);
      await a.client.put(2, { chunkId: chunkId(1), index: 0, bytes });
      assert.deepEqual((await a.client.get(2, { chunkId: chunkId(1), index: 0 })).bytes, bytes);
      // Raft on the same TLS port still works.
      a.transport.send(0, emptyMessage("heartbeat", 1, 2, 1));
      await waitFor("raft over TLS", () => b.raftReceived.length === 1);

      // A tenant's client certificate of the same CA: a valid chain, the wrong kind of holder.
      const tenant = await startNode(5, { tls: await tlsMaterial(dir, "tenant-acme", "client") });
      const plain = await startNode(6);
      nodes.push(tenant, plain);
      for (const n of [tenant, plain]) {
        n.client.setPeer(2, b.transport.addr);
        await assert.rejects(
          n.client.put(2, { chunkId: chunkId(2), index: 0, bytes: new Uint8Array(1) }),
          FabricUnavailableError,
        );
      }
      await waitFor("refusals logged", () => b.logs.some((l) => /OU \[\\?"tenant\\?"\]/.test(l)));
      assert.equal(b.store.fragments.size, 1, "nothing from the refused peers");
    } finally {
      await closeAll(nodes);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
