import assert from "node:assert/strict";
import { missingPart, Prng } from "../base/mod.ts";
import { createLogger, type Logger } from "../obs/mod.ts";
import { emptyMessage, type Message } from "../raft/mod.ts";
import {
  FRAME_TYPE_BATCH,
  HANDSHAKE_FIXED_SIZE_BYTES,
  HANDSHAKE_WRONG_CLUSTER,
  RAFT_PROTOCOL_VERSION,
  type RaftTransportLimits,
  TcpRaftTransport,
  type TlsMaterial,
} from "./raft_transport.ts";
import { genCerts, OPENSSL, tlsMaterial } from "./_testing.ts";

const CLUSTER = "test-cluster";

interface Node {
  transport: TcpRaftTransport;
  received: { shard: number; msg: Message }[];
  unreachable: { shard: number; peer: number }[];
  logs: string[];
}

function capture(): { logger: Logger; logs: string[] } {
  const logs: string[] = [];
  return {
    logs,
    logger: createLogger({ level: "debug", format: "text", sink: { write: (l) => logs.push(l) } }),
  };
}

async function startNode(
  id: number,
  options: {
    port?: number;
    tls?: TlsMaterial;
    limits?: Partial<RaftTransportLimits>;
    cluster?: string;
  } = {},
): Promise<Node> {
  const { logger, logs } = capture();
  const transport = await TcpRaftTransport.listen({
    nodeId: id,
    clusterId: options.cluster ?? CLUSTER,
    listen: { host: `127.0.0.${id}`, port: options.port ?? 0 },
    peers: [],
    tls: options.tls,
    limits: { reconnectDelayMsMin: 10, reconnectDelayMsMax: 100, ...options.limits },
    logger,
    random: () => 0.5,
  });
  const node: Node = { transport, received: [], unreachable: [], logs };
  transport.onMessage((shard, msg) => node.received.push({ shard, msg }));
  transport.onUnreachable((shard, peer) => node.unreachable.push({ shard, peer }));
  return node;
}

/** Tells every node where every other node listens. */
function introduce(nodes: Node[]): void {
  for (const a of nodes) {
    for (const b of nodes) {
      if (a !== b) a.transport.setPeer(b.transport.nodeId, b.transport.addr);
    }
  }
}

async function closeAll(nodes: Node[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.transport.close()));
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A message with a little of everything, so delivery checks cover the codec too. */
function message(from: number, to: number, n: number, prng: Prng): Message {
  const msg = emptyMessage(n % 3 === 0 ? "append" : "heartbeat", from, to, 7);
  msg.index = n;
  msg.commit = n;
  msg.context = prng.bytes(n % 5);
  if (msg.type === "append") {
    msg.entries = [{ term: 7, index: n + 1, type: "normal", data: prng.bytes(n % 40) }];
  }
  return msg;
}

Deno.test(
  "TcpRaftTransport carries messages of several shards both ways between two nodes",
  async () => {
    const nodes = [await startNode(1), await startNode(2)];
    try {
      introduce(nodes);
      const [a, b] = nodes as [Node, Node];
      const prng = new Prng(1);
      const sentAB: { shard: number; msg: Message }[] = [];
      const sentBA: { shard: number; msg: Message }[] = [];
      for (let i = 0; i < 60; i++) {
        const shard = 100 + (i % 6);
        const ab = message(1, 2, i, prng);
        const ba = message(2, 1, i, prng);
        sentAB.push({ shard, msg: ab });
        sentBA.push({ shard, msg: ba });
        a.transport.send(shard, ab);
        b.transport.send(shard, ba);
      }
      await waitFor("delivery", () => a.received.length === 60 && b.received.length === 60);
      assert.deepEqual(b.received, sentAB, "in order, with the right shard, byte-exact");
      assert.deepEqual(a.received, sentBA);
      assert.equal(a.unreachable.length + b.unreachable.length, 0);
      assert.equal(a.transport.stats().connectedPeers, 1);
      assert.equal(a.transport.stats().protocolErrors, 0);
    } finally {
      await closeAll(nodes);
    }
  },
);

Deno.test("TcpRaftTransport connects three nodes all to all", async () => {
  const nodes = [await startNode(1), await startNode(2), await startNode(3)];
  try {
    introduce(nodes);
    const prng = new Prng(2);
    for (let round = 0; round < 10; round++) {
      for (const from of nodes) {
        for (const to of nodes) {
          if (from === to) continue;
          from.transport.send(
            round % 4,
            message(from.transport.nodeId, to.transport.nodeId, round, prng),
          );
        }
      }
    }
    await waitFor("delivery", () => nodes.every((n) => n.received.length === 20));
    for (const n of nodes) {
      const senders = new Set(n.received.map((r) => r.msg.from));
      assert.equal(senders.size, 2, `node ${n.transport.nodeId} hears both others`);
      for (const r of n.received) {
        assert.equal(r.msg.to, n.transport.nodeId);
        assert.equal(r.shard, r.msg.index % 4);
      }
      assert.equal(n.transport.stats().connectedPeers, 2);
    }
  } finally {
    await closeAll(nodes);
  }
});

Deno.test(
  "TcpRaftTransport batches: a burst leaves in far fewer frames and writes than messages",
  async () => {
    const nodes = [await startNode(1), await startNode(2)];
    try {
      introduce(nodes);
      const [a, b] = nodes as [Node, Node];
      const prng = new Prng(3);
      // Connect first, so the burst meets an open connection.
      a.transport.send(1, message(1, 2, 0, prng));
      await waitFor("first delivery", () => b.received.length === 1);
      const before = a.transport.stats();

      // One Raft Ready's worth of messages, sent in one go, travels as one frame in one write.
      for (let i = 1; i <= 50; i++) a.transport.send(i, message(1, 2, i, prng));
      await waitFor("ready delivery", () => b.received.length === 51);
      const ready = a.transport.stats();
      assert.equal(ready.framesSent - before.framesSent, 1);
      assert.equal(ready.writes - before.writes, 1);
      assert.equal(b.transport.stats().framesReceived, 2);

      // A sustained stream: sends keep coming while writes are in flight.
      const total = 20_000;
      let sent = 0;
      while (sent < total) {
        for (let i = 0; i < 500; i++, sent++) {
          a.transport.send(sent % 64, message(1, 2, sent, prng));
        }
        await new Promise((r) => setTimeout(r, 0));
      }
      await waitFor("stream delivery", () => b.received.length === 51 + total, 20_000);
      const after = a.transport.stats();
      const frames = after.framesSent - ready.framesSent;
      const writes = after.writes - ready.writes;
      assert.ok(frames * 20 <= total, `${total} messages in ${frames} frames`);
      assert.ok(writes <= frames, `${frames} frames in ${writes} writes`);
      assert.equal(after.messagesDropped, 0);
      for (let i = 0; i < total; i++) assert.equal(b.received[51 + i]!.msg.index, i);
    } finally {
      await closeAll(nodes);
    }
  },
);

Deno.test(
  "TcpRaftTransport reconnects after the peer restarts and delivery resumes",
  async () => {
    const a = await startNode(1);
    let b = await startNode(2);
    const port = b.transport.addr.port;
    try {
      introduce([a, b]);
      const prng = new Prng(4);
      a.transport.send(5, message(1, 2, 1, prng));
      await waitFor("delivery before restart", () => b.received.length === 1);

      await b.transport.close();
      // Sends while the peer is down are dropped and reported to their shard's Raft.
      await waitFor("unreachable report", () => {
        a.transport.send(5, message(1, 2, 2, prng));
        return a.unreachable.some((u) => u.shard === 5 && u.peer === 2);
      });
      assert.equal(a.transport.stats().connectedPeers, 0);

      b = await startNode(2, { port });
      await waitFor("delivery after restart", () => {
        a.transport.send(6, message(1, 2, 3, prng));
        return b.received.some((r) => r.shard === 6);
      });
      assert.ok(a.transport.stats().reconnects >= 1);
      assert.equal(a.transport.stats().connectedPeers, 1);
      const warnings = a.logs.filter((l) => l.includes("raft peer unreachable"));
      assert.equal(warnings.length, 1, "one warning per outage, not one per attempt");
    } finally {
      await closeAll([a, b]);
    }
  },
);

Deno.test(
  "TcpRaftTransport bounds each peer's queue and reports what it drops",
  async () => {
    // Nothing listens at the peer's address: the queue fills while the dial fails.
    const a = await startNode(1, { limits: { peerQueueCountMax: 10 } });
    try {
      a.transport.setPeer(9, { host: "127.0.0.9", port: 9 });
      const prng = new Prng(5);
      for (let i = 0; i < 25; i++) a.transport.send(i, message(1, 9, i, prng));
      // The 15 that did not fit are refused at once, each reported for its shard.
      assert.equal(a.transport.stats().messagesDropped, 15);
      assert.deepEqual(
        a.unreachable.map((u) => u.shard),
        Array.from({ length: 15 }, (_, i) => 10 + i),
      );
      // The 10 queued go when the dial fails: reported once per shard.
      await waitFor("queued drops", () => a.transport.stats().messagesDropped === 25);
      assert.equal(a.unreachable.length, 25);
      assert.ok(a.unreachable.every((u) => u.peer === 9));
    } finally {
      await a.transport.close();
    }
  },
);

Deno.test(
  "TcpRaftTransport drops messages to a node it has no address for, and says so once",
  async () => {
    const a = await startNode(1);
    try {
      const prng = new Prng(6);
      a.transport.send(1, message(1, 42, 1, prng));
      a.transport.send(2, message(1, 42, 2, prng));
      assert.deepEqual(a.unreachable, [{ shard: 1, peer: 42 }, { shard: 2, peer: 42 }]);
      assert.equal(a.logs.filter((l) => l.includes("no address for raft peer")).length, 1);
    } finally {
      await a.transport.close();
    }
  },
);

/** Connects a raw TCP client to `node`, writes `bytes`, and reads until the node closes. */
async function rawExchange(node: Node, bytes: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({
    hostname: node.transport.addr.host,
    port: node.transport.addr.port,
  });
  try {
    await conn.write(bytes);
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        break; // reset by the peer: closed as well
      }
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const out = new Uint8Array(chunks.reduce((s, c) => s + c.length, 0));
    let at = 0;
    for (const c of chunks) out.set(c, (at += c.length) - c.length);
    return out;
  } finally {
    conn.close();
  }
}

function hello(
  options: { cluster?: string; sender?: number; receiver?: number; version?: number },
): Uint8Array {
  const cluster = new TextEncoder().encode(options.cluster ?? CLUSTER);
  const bytes = new Uint8Array(HANDSHAKE_FIXED_SIZE_BYTES + cluster.length);
  const view = new DataView(bytes.buffer);
  bytes.set(new TextEncoder().encode("KRFT"));
  view.setUint8(4, options.version ?? RAFT_PROTOCOL_VERSION);
  view.setUint16(6, cluster.length);
  view.setUint32(8, options.sender ?? 7);
  view.setUint32(12, options.receiver ?? 2);
  bytes.set(cluster, HANDSHAKE_FIXED_SIZE_BYTES);
  return bytes;
}

Deno.test(
  "TcpRaftTransport closes a connection that sends garbage, logs it once, and keeps serving",
  async () => {
    const nodes = [await startNode(1), await startNode(2)];
    try {
      introduce(nodes);
      const [a, b] = nodes as [Node, Node];
      const prng = new Prng(7);

      // Noise instead of a handshake.
      const noise = prng.bytes(1000);
      assert.equal((await rawExchange(b, noise)).length, 0, "closed without an answer");

      // A good handshake, then a frame whose message is noise.
      const frame = new Uint8Array(5 + 4 + 8 + 40);
      const view = new DataView(frame.buffer);
      view.setUint32(0, frame.length - 5);
      view.setUint8(4, FRAME_TYPE_BATCH);
      view.setUint32(5, 1);
      view.setUint32(9, 3);
      view.setUint32(13, 40);
      frame.set(prng.bytes(40), 17);
      const answer = await rawExchange(b, new Uint8Array([...hello({}), ...frame]));
      assert.equal(
        answer.length,
        HANDSHAKE_FIXED_SIZE_BYTES + CLUSTER.length,
        "the hello was answered",
      );
      assert.equal(answer[5], 0, "and accepted");

      // A frame type nobody defined.
      const unknownType = new Uint8Array([0, 0, 0, 0, 99]);
      await rawExchange(b, new Uint8Array([...hello({}), ...unknownType]));

      await waitFor("three protocol errors", () => b.transport.stats().protocolErrors === 3);
      const lines = b.logs.filter((l) => l.includes("closing inbound connection"));
      assert.equal(lines.length, 3, lines.join("\n"));
      assert.match(lines[0]!, /bad magic/);
      assert.match(lines[1]!, /batch message 0/);
      assert.match(lines[2]!, /unknown frame type 99/);
      assert.equal(b.received.length, 0, "nothing from a bad frame is delivered");

      // The node still talks to its real peer.
      a.transport.send(1, message(1, 2, 1, prng));
      await waitFor("delivery after garbage", () => b.received.length === 1);
    } finally {
      await closeAll(nodes);
    }
  },
);

Deno.test(
  "TcpRaftTransport answers a wrong cluster, node or version with a refusal it can name",
  async () => {
    const b = await startNode(2);
    const other = await startNode(1, { cluster: "another-cluster" });
    try {
      const cases: [Uint8Array, number][] = [
        [hello({ cluster: "another-cluster" }), HANDSHAKE_WRONG_CLUSTER],
        [hello({ receiver: 5 }), 3],
        [hello({ version: 9 }), 1],
      ];
      for (const [bytes, status] of cases) {
        const answer = await rawExchange(b, bytes);
        assert.equal(answer[5], status);
        assert.equal(answer[4], RAFT_PROTOCOL_VERSION, "the answer names the version it speaks");
      }
      // A real transport of another cluster is refused too, and reports the peer unreachable.
      other.transport.setPeer(2, b.transport.addr);
      other.transport.send(1, message(1, 2, 1, new Prng(8)));
      await waitFor("refusal", () => other.unreachable.length === 1);
      assert.ok(other.logs.some((l) => l.includes("wrong cluster id")), other.logs.join("\n"));
      assert.equal(b.received.length, 0);
    } finally {
      await closeAll([b, other]);
    }
  },
);

Deno.test("TcpRaftTransport fails a connection whose peer stops reading, and reports its shards", async () => {
  // A peer that answers the handshake and then never reads again.
  const listener = Deno.listen({ hostname: "127.0.0.7", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      held.push(conn);
      const buf = new Uint8Array(HANDSHAKE_FIXED_SIZE_BYTES + CLUSTER.length);
      let got = 0;
      while (got < buf.length) {
        const n = await conn.read(buf.subarray(got));
        if (n === null) break;
        got += n;
      }
      await conn.write(hello({ sender: 7, receiver: 1 }));
    }
  })();
  const a = await startNode(1, { limits: { writeTimeoutMs: 200 } });
  try {
    a.transport.setPeer(7, { host: "127.0.0.7", port: (listener.addr as Deno.NetAddr).port });
    const big = emptyMessage("append", 1, 7, 1);
    big.entries = [{ term: 1, index: 1, type: "normal", data: new Uint8Array(256 * 1024) }];
    await waitFor("stall detected", () => {
      for (let i = 0; i < 8; i++) a.transport.send(3, big);
      return a.logs.some((l) => l.includes("stalled"));
    }, 20_000);
    await waitFor("unreachable report", () => a.unreachable.some((u) => u.shard === 3));
    assert.equal(a.transport.stats().connectedPeers, 0);
  } finally {
    await a.transport.close();
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
});

// ---- mutual TLS ------------------------------------------------------------------------

Deno.test({
  name:
    "TcpRaftTransport over mutual TLS delivers between cluster nodes and refuses plain TCP, another CA and tenant certificates" +
    (OPENSSL ? "" : " (IGNORED: openssl missing, Debian package openssl)"),
  ignore: missingPart("openssl (Debian openssl)", !OPENSSL && "no openssl command on PATH"),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-raft-tls-" });
    const nodes: Node[] = [];
    try {
      await genCerts(`${dir}/ours`, [
        "--node",
        "node1:127.0.0.1",
        "--node",
        "node2:127.0.0.2",
        "--tenant",
        "acme",
      ]);
      await genCerts(`${dir}/theirs`, ["--node", "node3:127.0.0.3"]);
      const a = await startNode(1, { tls: await tlsMaterial(`${dir}/ours`, "node1") });
      const b = await startNode(2, { tls: await tlsMaterial(`${dir}/ours`, "node2") });
      nodes.push(a, b);
      introduce([a, b]);
      const prng = new Prng(9);
      for (let i = 0; i < 20; i++) {
        a.transport.send(i % 3, message(1, 2, i, prng));
        b.transport.send(i % 3, message(2, 1, i, prng));
      }
      await waitFor("TLS delivery", () => a.received.length === 20 && b.received.length === 20);

      // Another CA's node: b refuses it (and it would refuse b's certificate too).
      const stranger = await startNode(3, { tls: await tlsMaterial(`${dir}/theirs`, "node3") });
      // A node without TLS at all.
      const plain = await startNode(4);
      // A tenant's client certificate from our own CA: valid chain, wrong kind of identity.
      const tenantMaterial = { ...await tlsMaterial(`${dir}/ours`, "tenant-acme", "client") };
      const tenant = await startNode(5, { tls: tenantMaterial });
      nodes.push(stranger, plain, tenant);
      for (const n of [stranger, plain, tenant]) {
        n.transport.setPeer(2, b.transport.addr);
        n.transport.send(1, message(n.transport.nodeId, 2, 1, prng));
      }
      await waitFor(
        "refusals reported",
        () => [stranger, plain, tenant].every((n) => n.unreachable.length >= 1),
      );
      await waitFor("refusals counted", () => b.transport.stats().protocolErrors >= 3);
      assert.equal(b.received.length, 20, "nothing from the refused peers");
      assert.ok(b.logs.some((l) => /OU \[\\?"tenant\\?"\]/.test(l)), b.logs.join("\n"));
      for (const n of [stranger, plain, tenant]) {
        assert.equal(n.transport.stats().connectedPeers, 0);
        assert.ok(
          plain.logs.some((l) => l.includes("the other side speaks TLS")),
          plain.logs.join("\n"),
        );
      }
      // The dialler checks the certificate against the address it dials: node 6 presents
      // node2's certificate (which names 127.0.0.2) from 127.0.0.6.
      const impostor = await startNode(6, { tls: await tlsMaterial(`${dir}/ours`, "node2") });
      nodes.push(impostor);
      a.transport.setPeer(6, impostor.transport.addr);
      a.transport.send(1, message(1, 6, 1, prng));
      await waitFor("impostor refused", () => a.unreachable.some((u) => u.peer === 6));
      assert.ok(
        a.logs.some((l) => l.includes("peer=6") && l.includes("is not in the cert's list")),
        a.logs.join("\n"),
      );
      assert.equal(impostor.received.length, 0);

      // Still fine between the real nodes.
      a.transport.send(9, message(1, 2, 99, prng));
      await waitFor("delivery after refusals", () => b.received.length === 21);
    } finally {
      await closeAll(nodes);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
