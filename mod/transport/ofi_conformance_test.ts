// One suite every client transport passes: the TypeScript TCP twin (plain and mutual TLS)
// and libfabric through its shim (the tcp provider here: the libfabric loopback test).

import assert from "node:assert/strict";
import { loadFabricShim } from "../../ffi/fabric/bindings.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { missingPart } from "../base/mod.ts";
import { genCerts, OPENSSL, tlsMaterial } from "./_testing.ts";
import { FabricMessageTransport } from "./ofi_fabric.ts";
import {
  type MessageConnection,
  type MessageListener,
  type MessageTransport,
  TransportError,
} from "./ofi_port.ts";
import { TcpMessageTransport } from "./ofi_tcp.ts";

const HOST = "127.0.0.1";
const FRAME_MAX = 8 * 1024 * 1024;

interface Pair {
  server: MessageTransport;
  client: MessageTransport;
  /** A client whose frames may exceed the server's bound (to test the receiving side). */
  bigClient: MessageTransport;
  cleanup(): Promise<void>;
}

const fabricLoad = loadFabricShim({ ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" });
const fabricMissing = fabricLoad.ok
  ? fabricLoad.shim.providerUnusable("tcp")
  : `libfabric shim: ${fabricLoad.reason}`;

const implementations: { name: string; ignore: boolean; make: () => Promise<Pair> }[] = [
  {
    name: "tcp",
    ignore: false,
    make: () =>
      Promise.resolve({
        server: new TcpMessageTransport({ frameBytesMax: FRAME_MAX }),
        client: new TcpMessageTransport({ frameBytesMax: FRAME_MAX }),
        bigClient: new TcpMessageTransport({ frameBytesMax: 4 * FRAME_MAX }),
        cleanup: async () => {},
      }),
  },
  {
    name: "tls",
    ignore: missingPart("openssl", OPENSSL ? null : "the openssl command is not installed"),
    make: async () => {
      const dir = await Deno.makeTempDir({ prefix: "kiseki-ofi-tls-" });
      await genCerts(dir, ["--node", `node1:${HOST}`, "--tenant", "acme"]);
      const server = await tlsMaterial(dir, "node1");
      const client = await tlsMaterial(dir, "tenant-acme", "client");
      return {
        server: new TcpMessageTransport({ tls: server, frameBytesMax: FRAME_MAX }),
        client: new TcpMessageTransport({ tls: client, frameBytesMax: FRAME_MAX }),
        bigClient: new TcpMessageTransport({ tls: client, frameBytesMax: 4 * FRAME_MAX }),
        cleanup: () => Deno.remove(dir, { recursive: true }),
      };
    },
  },
  {
    name: "libfabric-tcp",
    ignore: missingPart("libfabric shim (tcp provider)", fabricMissing),
    make: () => {
      if (!fabricLoad.ok) throw new Error(fabricLoad.reason);
      const shim = fabricLoad.shim;
      return Promise.resolve({
        server: new FabricMessageTransport({ shim, provider: "tcp", frameBytesMax: FRAME_MAX }),
        client: new FabricMessageTransport({ shim, provider: "tcp", frameBytesMax: FRAME_MAX }),
        bigClient: new FabricMessageTransport({
          shim,
          provider: "tcp",
          frameBytesMax: 4 * FRAME_MAX,
        }),
        cleanup: async () => {},
      });
    },
  },
];

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < length; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function connected(
  pair: Pair,
  client: MessageTransport = pair.client,
): Promise<{ listener: MessageListener; a: MessageConnection; b: MessageConnection }> {
  const listener = await pair.server.listen(HOST, 0);
  assert.ok(listener.port > 0);
  const accepted = listener.accept();
  const a = await client.dial(HOST, listener.port, { timeoutMs: 5_000 });
  const b = await accepted;
  assert.ok(b !== null);
  return { listener, a, b };
}

for (const impl of implementations) {
  const test = (name: string, fn: (pair: Pair) => Promise<void>) =>
    Deno.test({
      name: `${impl.name}: ${name}`,
      ignore: impl.ignore,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        const pair = await impl.make();
        try {
          await fn(pair);
        } finally {
          await pair.cleanup();
        }
      },
    });

  test("frames of every size arrive whole and in order, both ways", async (pair) => {
    const { listener, a, b } = await connected(pair);
    // Sizes around the message and coalescing boundaries, and a multi-message frame.
    const sizes = [0, 1, 4, 1000, 65_532, 65_536, 65_537, 1_048_572, 1_048_576, 1_048_577];
    sizes.push(3 * 1_048_576 + 11, FRAME_MAX);
    const sends = sizes.map((n, i) => a.send(pattern(n, i + 1)));
    for (let i = 0; i < sizes.length; i++) {
      const got = await b.receive();
      assert.ok(got !== null);
      assert.equal(got.length, sizes[i]);
      assert.deepEqual(got, pattern(sizes[i]!, i + 1), `frame ${i} intact`);
    }
    await Promise.all(sends);
    await b.send(pattern(777, 99));
    assert.deepEqual(await a.receive(), pattern(777, 99));
    await a.close();
    await b.close();
    await listener.close();
  });

  test("a thousand small frames keep their order", async (pair) => {
    const { listener, a, b } = await connected(pair);
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 1000; i++) {
      const f = new Uint8Array(8);
      new DataView(f.buffer).setUint32(0, i);
      sends.push(a.send(f));
    }
    for (let i = 0; i < 1000; i++) {
      const f = await b.receive();
      assert.equal(new DataView(f!.buffer, f!.byteOffset).getUint32(0), i);
    }
    await Promise.all(sends);
    await a.close();
    await b.close();
    await listener.close();
  });

  test("receive() gives every frame sent before the peer closed, then null", async (pair) => {
    const { listener, a, b } = await connected(pair);
    await a.send(pattern(10, 1));
    await a.send(pattern(2_000_000, 2));
    await a.close();
    assert.deepEqual(await b.receive(), pattern(10, 1));
    assert.deepEqual(await b.receive(), pattern(2_000_000, 2));
    assert.equal(await b.receive(), null);
    await b.close();
    await listener.close();
  });

  test("send() refuses a frame over the bound; the receiver refuses one over its own", async (pair) => {
    const { listener, a, b } = await connected(pair);
    await assert.rejects(
      a.send(new Uint8Array(FRAME_MAX + 1)),
      (e) => e instanceof TransportError && e.code === "too_large",
    );
    await a.send(pattern(5, 5)); // the connection still works
    assert.deepEqual(await b.receive(), pattern(5, 5));
    await a.close();
    await b.close();

    const big = await connected(pair, pair.bigClient);
    big.a.send(new Uint8Array(FRAME_MAX + 1)).catch(() => {});
    await assert.rejects(
      big.b.receive(),
      (e) => e instanceof TransportError && e.code === "too_large",
    );
    await big.a.close();
    await big.b.close();
    await big.listener.close();
    await listener.close();
  });

  test("dial() to a port nobody listens on fails with a TransportError", async (pair) => {
    const listener = await pair.server.listen(HOST, 0);
    const port = listener.port;
    await listener.close();
    await assert.rejects(
      pair.client.dial(HOST, port, { timeoutMs: 3_000 }),
      (e) => e instanceof TransportError && (e.code === "refused" || e.code === "unavailable"),
    );
  });

  test("close() ends a waiting accept() with null", async (pair) => {
    const listener = await pair.server.listen(HOST, 0);
    const waiting = listener.accept();
    await listener.close();
    assert.equal(await waiting, null);
  });
}
