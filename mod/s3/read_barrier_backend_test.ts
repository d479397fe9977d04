import assert from "node:assert/strict";
import type { NamespaceRef } from "../composition/mod.ts";
import type { S3Backend } from "./backend.ts";
import { type ReadBarrier, ReadBarrierBackend } from "./read_barrier_backend.ts";

Deno.test("ReadBarrierBackend passes the namespace's barrier before each operation, every shard's before listing buckets", async () => {
  const events: string[] = [];
  const ref = (name: string) =>
    ({ id: new TextEncoder().encode(name), name }) as unknown as NamespaceRef;
  const inner = new Proxy({}, {
    get: (_t, op: string) =>
      op === "namespace"
        ? (_tenant: Uint8Array, name: string) => ref(name)
        : (...args: unknown[]) => {
          const first = args[0] as { name?: string } | Uint8Array;
          events.push(`${op}:${first instanceof Uint8Array ? "tenant" : first.name}`);
          return Promise.resolve(op);
        },
  }) as S3Backend;
  let release: () => void = () => {};
  const barrier: ReadBarrier = {
    wait(ns) {
      events.push(`barrier:${ns === null ? "all" : (ns as unknown as { name: string }).name}`);
      return new Promise<void>((r) => release = r);
    },
  };
  const backend = new ReadBarrierBackend(inner, barrier);
  const got = backend.getObject(ref("b1"), "k");
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(events, ["barrier:b1"], "the read waits for the barrier");
  release();
  assert.equal(await got, "getObject");
  assert.deepEqual(events, ["barrier:b1", "getObject:b1"]);
  events.length = 0;
  const listed = backend.listNamespaces(new Uint8Array(16));
  await new Promise((r) => setTimeout(r, 0));
  release();
  await listed;
  assert.deepEqual(events, ["barrier:all", "listNamespaces:tenant"]);
  events.length = 0;
  const copied = backend.copyObject(ref("src"), "a", ref("dst"), "b");
  await new Promise((r) => setTimeout(r, 0));
  release();
  await new Promise((r) => setTimeout(r, 0));
  release();
  await copied;
  assert.deepEqual(events, ["barrier:src", "barrier:dst", "copyObject:src"]);
});

Deno.test("ReadBarrierBackend answers with the barrier's failure and never reaches the engine", async () => {
  let reached = false;
  const inner = { headObject: () => (reached = true, Promise.resolve({})) } as unknown as S3Backend;
  const backend = new ReadBarrierBackend(inner, {
    wait: () => Promise.reject(new Error("no leader")),
  });
  await assert.rejects(
    backend.headObject({ id: new Uint8Array(16) } as unknown as NamespaceRef, "k"),
    /no leader/,
  );
  assert.equal(reached, false);
});
