// The shared client-transport conformance suite: every implementation of the
// MessageTransport port registers the same cases through `messageTransportConformance()`,
// so the TCP twin, its mutual-TLS form and libfabric through its shim behave alike: frames
// whole and in order, clean ends, bounds enforced on both sides, typed errors.

import assert from "node:assert/strict";
import {
  type MessageConnection,
  type MessageListener,
  type MessageTransport,
  TransportError,
} from "../../mod/transport/mod.ts";

export const HOST = "127.0.0.1";
/** The frame bound every subject's server and client use (bigClient: four times it). */
export const FRAME_MAX = 8 * 1024 * 1024;

export interface TransportPair {
  server: MessageTransport;
  client: MessageTransport;
  /** A client whose frames may exceed the server's bound (to test the receiving side). */
  bigClient: MessageTransport;
  cleanup(): Promise<void>;
}

export interface TransportSubject {
  /** Shown in every test name. */
  name: string;
  /** True when the implementation is missing here (missingPart() decides, and says why). */
  ignore: boolean;
  make(): Promise<TransportPair>;
}

type Pair = TransportPair;

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

export function messageTransportConformance(impl: TransportSubject): void {
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
    // The stream is out of step after that: it stays failed.
    await assert.rejects(big.b.receive(), (e) => e instanceof TransportError);
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
