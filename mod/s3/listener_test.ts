import assert from "node:assert/strict";
import { CompositionError } from "../composition/mod.ts";
import { s3ErrorOf } from "./gateway.ts";
import { createLogger } from "../obs/mod.ts";
import { isSendableHeaderValue, listenS3, type S3Listener, slowDownResponse } from "./listener.ts";
import type { S3HttpRequest } from "./request_body.ts";

const HOST = "127.0.133.1";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Sends `request` on a new connection and reads until the server closes or `ms` passes. */
async function exchange(
  port: number,
  request: string,
  ms = 3000,
): Promise<{ text: string; closed: boolean; conn: Deno.TcpConn }> {
  const conn = await Deno.connect({ hostname: HOST, port });
  if (request !== "") await conn.write(encoder.encode(request));
  let text = "";
  let closed = false;
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"wait">((r) => setTimeout(r, Math.max(1, deadline - Date.now()), "wait")),
    ]);
    if (n === "wait") break;
    if (n === null) {
      closed = true;
      break;
    }
    text += decoder.decode(buf.subarray(0, n));
    if (/\r\n\r\n[\s\S]*<\/Error>|\r\n\r\nok$/.test(text)) break;
  }
  return { text, closed, conn };
}

async function withListener(
  options: Partial<Parameters<typeof listenS3>[0]>,
  fn: (l: S3Listener) => Promise<void>,
): Promise<void> {
  const listener = listenS3({
    hostname: HOST,
    port: 0,
    handler: () => Promise.resolve(new Response("ok")),
    ...options,
  });
  try {
    await fn(listener);
  } finally {
    await listener.shutdown();
  }
}

Deno.test("isSendableHeaderValue() takes what HTTP can carry and nothing the writer panics on", () => {
  assert.equal(isSendableHeaderValue(""), true);
  assert.equal(isSendableHeaderValue("text/plain; charset=utf-8"), true);
  assert.equal(isSendableHeaderValue("a\tb"), true);
  assert.equal(isSendableHeaderValue("r\u00e9sum\u00e9 \u00ff"), true);
  for (const bad of ["\u0000", "a\u0001", "\r", "\n", "\u001f", "\u007f", "\u0100", "\u4e2d"]) {
    assert.equal(isSendableHeaderValue(bad), false, JSON.stringify(bad));
  }
});

Deno.test("listenS3() answers InternalError in place of a response whose headers cannot be sent, and keeps serving", async () => {
  // The pinned runtime's HTTP writer panics (the process exits) on such a header.
  const handler = (request: S3HttpRequest) =>
    Promise.resolve(
      new URL(request.url).pathname === "/bad"
        ? new Response("x", { headers: { "x-echo": "a\u0001b" } })
        : new Response("ok"),
    );
  const logged: string[] = [];
  const logger = createLogger({
    level: "error",
    format: "text",
    sink: { write: (line: string) => void logged.push(line) },
  });
  await withListener({ handler, logger }, async (l) => {
    for (const method of ["GET", "HEAD"]) {
      const bad = await exchange(
        l.addr.port,
        `${method} /bad HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n`,
      );
      assert.match(bad.text, /^HTTP\/1\.1 500 /, bad.text);
      assert.doesNotMatch(bad.text, /x-echo/i);
      if (method === "GET") assert.match(bad.text, /<Error><Code>InternalError<\/Code>/);
      bad.conn.close();
    }
    const good = await exchange(l.addr.port, "GET /good HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(good.text, /^HTTP\/1\.1 200 [\s\S]*ok$/);
    good.conn.close();
  });
  assert.equal(
    logged.filter((l) => /s3 request failed.*x-echo/.test(l)).length,
    2,
    logged.join(""),
  );
});

Deno.test("listenS3() answers SlowDown with Retry-After past its connection cap", async () => {
  await withListener({ connectionsMax: 2 }, async (l) => {
    const port = l.addr.port;
    const a = await Deno.connect({ hostname: HOST, port });
    const b = await Deno.connect({ hostname: HOST, port });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(l.stats().connectionsOpen, 2);
    const third = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(third.text, /^HTTP\/1\.1 503 /);
    assert.match(third.text, /retry-after: 1\r\n/i);
    assert.match(third.text, /<Error><Code>SlowDown<\/Code>/);
    third.conn.close();
    a.close();
    b.close();
    await new Promise((r) => setTimeout(r, 100));
    const again = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(again.text, /^HTTP\/1\.1 200 /);
    again.conn.close();
  });
});

Deno.test("listenS3() closes connections idle past its bound, not ones with a request in progress", async () => {
  let release: () => void = () => {};
  const slow = new Promise<void>((r) => (release = r));
  await withListener({
    idleMs: 200,
    handler: async (request) => {
      if (new URL(request.url).pathname === "/slow") await slow;
      return new Response("ok");
    },
  }, async (l) => {
    const idle = await exchange(l.addr.port, "", 2000);
    assert.ok(idle.closed, "an idle connection is closed");
    idle.conn.close();
    const half = await exchange(l.addr.port, "GET / HTTP/1.1\r\nHost:", 2000);
    assert.ok(half.closed, "half a request head does not hold a connection");
    half.conn.close();
    const busy = exchange(l.addr.port, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", 3000);
    await new Promise((r) => setTimeout(r, 600));
    release();
    const answered = await busy;
    assert.match(answered.text, /^HTTP\/1\.1 200 /, "a slow request outlives the idle bound");
    answered.conn.close();
  });
});

Deno.test("listenS3() refuses a request body past its bodies-in-flight cap, not requests without one", async () => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  await withListener({
    bodiesInFlightMax: 1,
    handler: async (request) => {
      if (request.method === "PUT") await held;
      await request.body?.cancel();
      return new Response("ok");
    },
  }, async (l) => {
    const port = l.addr.port;
    const first = exchange(
      port,
      "PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
      3000,
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(l.stats().bodiesInFlight, 1);
    const second = await exchange(
      port,
      "PUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert.match(second.text, /^HTTP\/1\.1 503 [\s\S]*<Code>SlowDown<\/Code>/);
    second.conn.close();
    const get = await exchange(port, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(get.text, /^HTTP\/1\.1 200 /);
    get.conn.close();
    release();
    const done = await first;
    assert.match(done.text, /^HTTP\/1\.1 200 /);
    done.conn.close();
  });
});

Deno.test("slowDownResponse() and an engine refusal both answer SlowDown with Retry-After", async () => {
  const r = slowDownResponse("connections", "node-1");
  assert.equal(r.status, 503);
  assert.equal(r.headers.get("retry-after"), "1");
  assert.equal(r.headers.get("connection"), "close");
  assert.match(await r.text(), /<Code>SlowDown<\/Code>[\s\S]*<HostId>node-1<\/HostId>/);
  assert.equal(slowDownResponse("connections", "node-1", "HEAD").body, null);
  const refused = s3ErrorOf(new CompositionError("unavailable", "read-ahead memory exhausted"));
  assert.equal(refused.code, "SlowDown");
  assert.equal(refused.headers["Retry-After"], "1");
});
