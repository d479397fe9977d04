import assert from "node:assert/strict";
import {
  HTTP1_BUFFERED_RESPONSE_BYTES_MAX,
  HTTP1_DRAIN_BYTES_MAX,
  HTTP1_HEAD_BYTES_MAX,
  type Http1Connection,
  type Http1Handler,
  serveHttp1,
} from "./http1.ts";

const HOST = "127.0.136.1";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Serves every connection to a fresh port with `handler` until `fn` is done. */
async function withServer(
  handler: Http1Handler,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: HOST, port: 0 });
  const served: Http1Connection[] = [];
  const conns: Deno.Conn[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      served.push(serveHttp1(conn, {
        handler,
        onError: () => new Response(null, { status: 500 }),
        defaultHost: "default.host",
      }));
    }
  })();
  try {
    await fn((listener.addr as Deno.NetAddr).port);
  } finally {
    listener.close();
    await loop.catch(() => {});
    for (const s of served) s.close();
    // A request still in progress (a failed test) must not hold the test open.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(served.map((s) => s.finished)),
      new Promise((r) => timer = setTimeout(r, 1000)),
    ]);
    clearTimeout(timer);
    for (const conn of conns) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    await Promise.all(served.map((s) => s.finished));
  }
}

/** A client connection that reads what the server sends, with a bound on waiting. */
class Client {
  text = "";
  closed = false;
  readonly #buf = new Uint8Array(1 << 20);
  private constructor(readonly conn: Deno.TcpConn) {}

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: HOST, port }));
  }

  send(text: string | Uint8Array): Promise<number> {
    return this.conn.write(typeof text === "string" ? encoder.encode(text) : text);
  }

  /** Reads until `done(text)` holds, the server closes, or `ms` pass. */
  async until(done: (text: string) => boolean, ms = 3000): Promise<string> {
    const deadline = Date.now() + ms;
    while (!done(this.text) && !this.closed && Date.now() < deadline) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.conn.read(this.#buf).catch(() => null),
        new Promise<"wait">((r) =>
          timer = setTimeout(r, Math.max(1, deadline - Date.now()), "wait")
        ),
      ]);
      clearTimeout(timer);
      if (n === "wait") break;
      if (n === null) this.closed = true;
      else this.text += decoder.decode(this.#buf.subarray(0, n));
    }
    return this.text;
  }

  /** Reads until the server closes (or `ms` pass). */
  untilClosed(ms = 3000): Promise<string> {
    return this.until(() => false, ms);
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

/** Responses in `text`, split at each status line. */
function statuses(text: string): string[] {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]!);
}

const echo: Http1Handler = async (request) => {
  const body = request.body === null ? "" : decoder.decode(await request.bytes());
  return new Response(`${request.method} ${new URL(request.url).pathname} ${body}`);
};

Deno.test("serveHttp1() reads a head that arrives a byte at a time, and answers pipelined requests in order", async () => {
  await withServer(echo, async (port) => {
    const c = await Client.open(port);
    const head = "PUT /one HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    for (const byte of encoder.encode(head)) await c.send(new Uint8Array([byte]));
    await c.until((t) => t.endsWith("PUT /one abc"));
    // Two more in one write, the second with a body; then a bare-LF head.
    await c.send(
      "GET /two HTTP/1.1\r\nHost: h\r\n\r\nPUT /three HTTP/1.1\r\nHost: h\r\n" +
        "Content-Length: 2\r\n\r\nxyGET /four HTTP/1.1\nHost: h\n\n",
    );
    const text = await c.until((t) => t.endsWith("GET /four "));
    assert.deepEqual(statuses(text), ["200", "200", "200", "200"]);
    assert.match(text, /PUT \/one abc[\s\S]*GET \/two [\s\S]*PUT \/three xy[\s\S]*GET \/four $/);
    assert.equal(c.closed, false, "keep-alive");
    c.close();
  });
});

Deno.test("serveHttp1() sends 100 Continue only when the handler reads the body; a refusal comes first, then the close", async () => {
  const handler: Http1Handler = async (request) => {
    if (request.headers.get("authorization") !== "good") {
      return new Response("<Error><Code>AccessDenied</Code></Error>", { status: 403 });
    }
    return new Response(`got ${(await request.bytes()).length}`);
  };
  await withServer(handler, async (port) => {
    const refused = await Client.open(port);
    await refused.send(
      "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n",
    );
    const text = await refused.untilClosed();
    assert.match(text, /^HTTP\/1\.1 403 /, text);
    assert.doesNotMatch(text, /100 Continue/);
    assert.match(text, /connection: close\r\n/);
    assert.ok(refused.closed, "the connection closes: the body was never asked for");
    refused.close();

    const accepted = await Client.open(port);
    await accepted.send(
      "PUT /k HTTP/1.1\r\nHost: h\r\nAuthorization: good\r\nContent-Length: 5\r\n" +
        "Expect: 100-continue\r\n\r\n",
    );
    assert.equal(
      await accepted.until((t) => t.includes("\r\n\r\n")),
      "HTTP/1.1 100 Continue\r\n\r\n",
    );
    await accepted.send("hello");
    const answer = await accepted.until((t) => t.endsWith("got 5"));
    assert.match(answer, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    accepted.close();
  });
});

Deno.test("serveHttp1() decodes chunked request bodies, trailers included, as a stream and whole", async () => {
  const handler: Http1Handler = async (request) => {
    let text = "";
    if (new URL(request.url).pathname === "/stream") {
      for await (const chunk of request.body!) text += `[${decoder.decode(chunk)}]`;
    } else text = decoder.decode(await request.bytes());
    return new Response(text);
  };
  await withServer(handler, async (port) => {
    const c = await Client.open(port);
    const chunked = "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n" +
      "A\r\n0123456789\r\n0\r\nx-trailer: t\r\n\r\n";
    await c.send(`PUT /stream HTTP/1.1\r\nHost: h\r\n${chunked}`);
    await c.until((t) => t.endsWith("[0123456789]"));
    await c.send(`PUT /whole HTTP/1.1\r\nHost: h\r\n${chunked}`);
    const text = await c.until((t) => t.endsWith("abc0123456789"));
    assert.match(text, /\[abc\]\[0123456789\][\s\S]*200 OK[\s\S]*\r\n\r\nabc0123456789$/);
    // The same body a byte at a time, after the head and the buffer have been read empty
    // (the JS SDK sends aws-chunked uploads chunked this way, in pieces).
    c.text = "";
    const [head, body] = chunked.split("\r\n\r\n", 2) as [string, string];
    await c.send(`PUT /stream HTTP/1.1\r\nHost: h\r\n${head}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 20));
    for (const byte of encoder.encode(`${body}\r\n\r\n`)) {
      await c.send(new Uint8Array([byte]));
    }
    const slow = await c.until((t) => t.endsWith("[0123456789]"));
    assert.match(slow, /^HTTP\/1\.1 200 OK[\s\S]*\[abc\]\[0123456789\]$/);
    c.close();
  });
});

Deno.test("serveHttp1() refuses malformed and oversized heads itself, and closes", async () => {
  const cases: Array<[string, string]> = [
    ["GET / HTTP/2.0\r\nHost: h\r\n\r\n", "400"],
    ["GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", "400"],
    ["G(T / HTTP/1.1\r\nHost: h\r\n\r\n", "400"],
    ["GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "400"],
    ["GET / HTTP/1.1\r\nX: a\u0001b\r\n\r\n", "400"],
    ["GET / HTTP/1.1\r\n folded\r\n\r\n", "400"],
    ["PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n", "400"],
    ["PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "400"],
    ["PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "400"],
    ["PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "400"],
    [`GET / HTTP/1.1\r\n${"x-m: v\r\n".repeat(101)}\r\n`, "431"],
    [`GET / HTTP/1.1\r\nX: ${"v".repeat(HTTP1_HEAD_BYTES_MAX)}\r\n\r\n`, "431"],
    [`GET /${"a".repeat(HTTP1_HEAD_BYTES_MAX + 10)} HTTP/1.1\r\n\r\n`, "414"],
  ];
  let handled = 0;
  const handler: Http1Handler = () => {
    handled++;
    return Promise.resolve(new Response("ok"));
  };
  await withServer(handler, async (port) => {
    for (const [request, status] of cases) {
      const c = await Client.open(port);
      await c.send(request).catch(() => 0);
      const text = await c.untilClosed();
      assert.deepEqual(statuses(text), [status], JSON.stringify(request.slice(0, 80)));
      assert.ok(c.closed, "closed after the refusal");
      c.close();
    }
  });
  assert.equal(handled, 0, "no handler saw a refused head");
});

Deno.test("serveHttp1() frames responses: HEAD, 204, a declared length, a whole body, a stream of unknown length", async () => {
  const big = new Uint8Array(HTTP1_BUFFERED_RESPONSE_BYTES_MAX * 3).fill(120);
  const handler: Http1Handler = (request) => {
    const path = new URL(request.url).pathname;
    const stream = (parts: Uint8Array[]) =>
      new ReadableStream<Uint8Array>({
        pull(c) {
          const p = parts.shift();
          if (p === undefined) c.close();
          else c.enqueue(p);
        },
      });
    if (path === "/head") {
      return Promise.resolve(new Response(null, { headers: { "content-length": "1234" } }));
    }
    if (path === "/empty") return Promise.resolve(new Response(null, { status: 204 }));
    if (path === "/sized") {
      return Promise.resolve(
        new Response(stream([big.subarray(0, 100_000), big.subarray(100_000)]), {
          headers: { "content-length": String(big.length) },
        }),
      );
    }
    if (path === "/string") return Promise.resolve(new Response("s".repeat(100_000)));
    return Promise.resolve(new Response(stream([big, encoder.encode("end")])));
  };
  await withServer(handler, async (port) => {
    const c = await Client.open(port);
    await c.send("HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n");
    let text = await c.until((t) => t.endsWith("\r\n\r\n"));
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n[\s\S]*content-length: 1234\r\n/);
    await c.send("GET /empty HTTP/1.1\r\nHost: h\r\n\r\n");
    text = await c.until((t) => /204[\s\S]*\r\n\r\n$/.test(t));
    assert.doesNotMatch(text.slice(text.indexOf("204")), /content-length|transfer-encoding/);
    c.text = "";
    await c.send("GET /sized HTTP/1.1\r\nHost: h\r\n\r\n");
    text = await c.until((t) => t.length >= t.indexOf("\r\n\r\n") + 4 + big.length);
    assert.match(text, new RegExp(`content-length: ${big.length}\r\n`));
    assert.equal(text.length - text.indexOf("\r\n\r\n") - 4, big.length);
    // A body given whole (as the gateway's XML is) goes with its length, however large.
    c.text = "";
    await c.send("GET /string HTTP/1.1\r\nHost: h\r\n\r\n");
    text = await c.until((t) => t.endsWith("s".repeat(100)) && t.length > 100_000);
    assert.match(text, /content-length: 100000\r\n/);
    assert.doesNotMatch(text, /transfer-encoding/);
    c.text = "";
    await c.send("GET /unknown HTTP/1.1\r\nHost: h\r\n\r\n");
    text = await c.until((t) => t.endsWith("0\r\n\r\n"));
    assert.match(text, /transfer-encoding: chunked\r\n/);
    // De-chunked, the body is the stream's bytes.
    let rest = text.slice(text.indexOf("\r\n\r\n") + 4);
    let body = "";
    while (true) {
      const line = rest.indexOf("\r\n");
      const size = parseInt(rest.slice(0, line), 16);
      if (size === 0) break;
      body += rest.slice(line + 2, line + 2 + size);
      rest = rest.slice(line + 4 + size);
    }
    assert.equal(body, decoder.decode(big) + "end");
    assert.equal(c.closed, false);
    c.close();
  });
});

Deno.test("serveHttp1() fails a body cut short to its reader, and still answers", async () => {
  let failure = "";
  const handler: Http1Handler = async (request) => {
    try {
      await request.bytes();
    } catch (e) {
      failure = (e as Error).name;
      return new Response("IncompleteBody", { status: 400 });
    }
    return new Response("complete");
  };
  await withServer(handler, async (port) => {
    const c = await Client.open(port);
    await c.send("PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    await c.conn.closeWrite();
    const text = await c.untilClosed();
    assert.match(text, /^HTTP\/1\.1 400 [\s\S]*IncompleteBody$/);
    assert.equal(failure, "UnexpectedEof");
    c.close();
  });
});

Deno.test("serveHttp1() drops a small unread body to keep the connection, and closes after a large one", async () => {
  const handler: Http1Handler = (request) =>
    Promise.resolve(
      new Response(request.method === "PUT" ? "refused" : "next", {
        status: request.method === "PUT" ? 403 : 200,
      }),
    );
  await withServer(handler, async (port) => {
    const small = await Client.open(port);
    const body = "x".repeat(HTTP1_DRAIN_BYTES_MAX);
    await small.send(
      `PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
        "GET /k HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    const text = await small.until((t) => t.endsWith("next"));
    assert.deepEqual(statuses(text), ["403", "200"]);
    assert.doesNotMatch(text, /connection: close/);
    small.close();

    const large = await Client.open(port);
    const length = HTTP1_DRAIN_BYTES_MAX * 16;
    await large.send(`PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: ${length}\r\n\r\n`);
    // The client keeps sending its body; the answer must still reach it whole.
    const sending = large.send(new Uint8Array(length)).catch(() => 0);
    const refused = await large.untilClosed();
    await sending;
    assert.deepEqual(statuses(refused), ["403"]);
    assert.match(refused, /connection: close\r\n[\s\S]*refused$/);
    large.close();
  });
});

Deno.test("serveHttp1() gives the handler the request target as sent, and Host or a default as the URL host", async () => {
  const seen: string[] = [];
  const handler: Http1Handler = (request) => {
    seen.push(request.url);
    return Promise.resolve(new Response("ok"));
  };
  await withServer(handler, async (port) => {
    const c = await Client.open(port);
    await c.send("GET /b/a/../%2e%2e/k%20x?list-type=2&prefix=a+b HTTP/1.1\r\nHost: h:9\r\n\r\n");
    await c.until((t) => t.endsWith("ok"));
    c.text = "";
    await c.send("GET /x HTTP/1.0\r\n\r\n");
    await c.untilClosed();
    c.close();
  });
  assert.deepEqual(seen, [
    "http://h:9/b/a/../%2e%2e/k%20x?list-type=2&prefix=a+b",
    "http://default.host/x",
  ]);
});
