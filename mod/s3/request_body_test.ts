import assert from "node:assert/strict";
import { S3Error } from "./errors.ts";
import { readRequestBytes, requestBodyStream } from "./request_body.ts";

/** A request whose body yields `pieces`, then fails as a vanished connection does. */
function failingRequest(pieces: Uint8Array[], error: unknown): Request {
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < pieces.length) controller.enqueue(pieces[i++]!);
      else controller.error(error);
    },
  });
  return new Request("http://s3.test/b/k", { method: "PUT", body });
}

function stalledRequest(): Request {
  const body = new ReadableStream<Uint8Array>({ pull: () => new Promise(() => {}) });
  return new Request("http://s3.test/b/k", { method: "PUT", body });
}

const gone = new TypeError("Cannot read body as underlying resource unavailable");

Deno.test("readRequestBytes() turns a body cut short by the transport into IncompleteBody", async () => {
  const e = await readRequestBytes(failingRequest([new Uint8Array(3)], gone)).catch((e) => e);
  assert.ok(e instanceof S3Error);
  assert.equal(e.code, "IncompleteBody");
  assert.equal(e.status, 400);
  assert.equal(e.cause, gone);
});

Deno.test("readRequestBytes() answers RequestTimeout for a body that stalls", async () => {
  const e = await readRequestBytes(stalledRequest(), 30).catch((e) => e);
  assert.ok(e instanceof S3Error);
  assert.equal(e.code, "RequestTimeout");
});

Deno.test("readRequestBytes() reads a whole body and an absent one", async () => {
  const ok = new Request("http://s3.test/b/k", { method: "PUT", body: "hello" });
  assert.deepEqual(await readRequestBytes(ok), new TextEncoder().encode("hello"));
  assert.equal((await readRequestBytes(new Request("http://s3.test/"))).length, 0);
});

Deno.test("requestBodyStream() passes bytes through and fails IncompleteBody or RequestTimeout", async () => {
  const pieces = [new Uint8Array([1, 2]), new Uint8Array([3])];
  const stream = requestBodyStream(failingRequest(pieces, gone))!;
  const got: number[] = [];
  const e = await (async () => {
    for await (const chunk of stream) got.push(...chunk);
  })().catch((e) => e);
  assert.deepEqual(got, [1, 2, 3]);
  assert.ok(e instanceof S3Error && e.code === "IncompleteBody");
  const stalled = requestBodyStream(stalledRequest(), 30)!;
  const t = await stalled.getReader().read().catch((e) => e);
  assert.ok(t instanceof S3Error && t.code === "RequestTimeout");
  assert.equal(requestBodyStream(new Request("http://s3.test/")), null);
});

Deno.test("requestBodyStream() keeps S3 errors from the body as they are", async () => {
  const own = new S3Error("BadDigest");
  const e = await requestBodyStream(failingRequest([], own))!.getReader().read().catch((e) => e);
  assert.equal(e, own);
});
