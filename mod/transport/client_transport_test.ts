import assert from "node:assert/strict";
import { Prng, toHex } from "../base/mod.ts";
import {
  CLIENT_FRAME_HEADER_BYTES,
  CLIENT_OP_PUT,
  CLIENT_STATUS_NOT_FOUND,
  ClientFrameError,
  ClientFrameReader,
  encodeClientFrame,
} from "./client_wire.ts";
import {
  ClientTransportRefusal,
  ClientTransportServer,
  type ClientTransportSession,
} from "./client_transport_server.ts";
import {
  CLIENT_CONN_REQUESTS_IN_FLIGHT_MAX,
  ClientTransportConnection,
  ClientTransportError,
} from "./client_transport_conn.ts";

Deno.test("ClientFrameReader cuts frames however the bytes are split", () => {
  const prng = new Prng(5);
  const frames = [0, 1, 700, 70_000].map((n, i) =>
    encodeClientFrame(CLIENT_OP_PUT, i + 1, prng.bytes(n))
  );
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    all.set(f, at);
    at += f.length;
  }
  for (const step of [1, 7, 12, 4096, all.length]) {
    const reader = new ClientFrameReader();
    const got = [];
    for (let i = 0; i < all.length; i += step) got.push(...reader.push(all.subarray(i, i + step)));
    assert.equal(got.length, frames.length);
    got.forEach((g, i) => {
      assert.equal(g.requestId, i + 1);
      assert.equal(g.kind, CLIENT_OP_PUT);
      assert.deepEqual(g.body, frames[i]!.subarray(CLIENT_FRAME_HEADER_BYTES));
    });
    assert.equal(reader.pendingBytes, 0);
  }
});

Deno.test("ClientFrameReader refuses a body over its maximum before buffering it", () => {
  const reader = new ClientFrameReader(1024);
  const header = encodeClientFrame(CLIENT_OP_PUT, 1, new Uint8Array(1025)).subarray(0, 12);
  assert.throws(() => reader.push(header), ClientFrameError);
  const reserved = encodeClientFrame(CLIENT_OP_PUT, 1, new Uint8Array(1));
  reserved[6] = 1;
  assert.throws(() => new ClientFrameReader().push(reserved), /reserved/);
});

/** A session over an in-memory map: the transport under test is real sockets and frames. */
function memorySession(store: Map<string, Uint8Array>): ClientTransportSession {
  return {
    put(id, envelope) {
      const created = !store.has(toHex(id));
      store.set(toHex(id), envelope.slice());
      return Promise.resolve({ created });
    },
    get(id) {
      const bytes = store.get(toHex(id));
      if (bytes === undefined) {
        return Promise.reject(new ClientTransportRefusal(CLIENT_STATUS_NOT_FOUND, "no chunk"));
      }
      return Promise.resolve(bytes);
    },
  };
}

Deno.test("ClientTransportServer: HELLO names a session; puts and gets pipeline; unknown sessions are refused", async () => {
  const store = new Map<string, Uint8Array>();
  const token = new Prng(6).bytes(32);
  const server = await ClientTransportServer.start({
    addr: { host: "127.0.164.1", port: 0 },
    handler: {
      session: (s, caller) =>
        caller.kind !== "loopback"
          ? "not loopback"
          : toHex(s) === toHex(token)
          ? memorySession(store)
          : "no such session",
    },
  });
  try {
    await assert.rejects(
      ClientTransportConnection.connect({ addr: server.addr, session: new Uint8Array(32) }),
      (e: unknown) => e instanceof ClientTransportError && e.kind === "forbidden",
    );
    const conn = await ClientTransportConnection.connect({ addr: server.addr, session: token });
    const prng = new Prng(7);
    const chunks = Array.from({ length: 3 * CLIENT_CONN_REQUESTS_IN_FLIGHT_MAX }, (_, i) => ({
      id: prng.bytes(32),
      bytes: prng.bytes(1000 + i * 997),
    }));
    const created = await Promise.all(chunks.map((c) => conn.put(c.id, c.bytes)));
    assert.deepEqual(created, chunks.map(() => true));
    assert.equal(await conn.put(chunks[0]!.id, chunks[0]!.bytes), false);
    const back = await Promise.all(chunks.map((c) => conn.get(c.id)));
    back.forEach((b, i) => assert.deepEqual(b, chunks[i]!.bytes));
    await assert.rejects(
      conn.get(prng.bytes(32)),
      (e: unknown) => e instanceof ClientTransportError && e.kind === "not_found",
    );
    // The node going away fails what is in flight as "unavailable" (the client tries another).
    const pending = conn.get(chunks[1]!.id).then(() => "answered", (e) => e);
    await server.close();
    const outcome = await pending;
    if (outcome !== "answered") {
      assert.ok(outcome instanceof ClientTransportError && outcome.kind === "unavailable");
    }
    await assert.rejects(
      conn.get(chunks[1]!.id),
      (e: unknown) => e instanceof ClientTransportError && e.kind === "unavailable",
    );
    conn.close();
  } finally {
    await server.close().catch(() => {});
  }
});
