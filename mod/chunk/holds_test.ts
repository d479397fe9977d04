import assert from "node:assert/strict";
import { openTestEnv, Prng } from "./_testing.ts";
import { tenantTag } from "./chunk_index.ts";
import { HoldError, LmdbHoldStore } from "./holds.ts";

async function withHolds(
  fn: (holds: LmdbHoldStore, reopen: () => Promise<LmdbHoldStore>) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-holds-" });
  let env = await openTestEnv(dir);
  try {
    await fn(new LmdbHoldStore(env), async () => {
      await env.close();
      env = await openTestEnv(dir);
      return new LmdbHoldStore(env);
    });
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const none = { tenants: [], tenantOverflow: false };

Deno.test("LmdbHoldStore: a chunk-set hold covers exactly its chunks, durably", async () => {
  await withHolds(async (holds, reopen) => {
    const prng = new Prng(1);
    const held = [prng.bytes(32), prng.bytes(32)];
    const free = prng.bytes(32);
    await holds.place({ id: "legal-1", kind: "chunks", chunkIds: held, reason: "litigation" });
    holds = await reopen();
    assert.equal(holds.holding(held[0]!, none), "legal-1");
    assert.equal(holds.holding(held[1]!, none), "legal-1");
    assert.equal(holds.holding(free, none), null);
    assert.deepEqual(holds.list(), [{
      id: "legal-1",
      kind: "chunks",
      chunks: 2,
      reason: "litigation",
    }]);
    assert.equal(await holds.release("legal-1"), true);
    assert.equal(await holds.release("legal-1"), false);
    assert.equal(holds.holding(held[0]!, none), null);
  });
});

Deno.test("LmdbHoldStore: a tenant hold covers chunks that tenant referenced", async () => {
  await withHolds(async (holds) => {
    const id = new Prng(2).bytes(32);
    await holds.place({ id: "retain-acme", kind: "tenant", tenant: "acme" });
    assert.equal(
      holds.holding(id, { tenants: [tenantTag("acme")], tenantOverflow: false }),
      "retain-acme",
    );
    assert.equal(
      holds.holding(id, { tenants: [tenantTag("globex")], tenantOverflow: false }),
      null,
    );
    // A chunk whose tenant list overflowed might belong to acme: held to be safe.
    assert.equal(
      holds.holding(id, { tenants: [tenantTag("globex")], tenantOverflow: true }),
      "retain-acme",
    );
    await holds.release("retain-acme");
    assert.equal(holds.holding(id, { tenants: [tenantTag("acme")], tenantOverflow: true }), null);
  });
});

Deno.test("LmdbHoldStore refuses repeated ids and bad specs", async () => {
  await withHolds(async (holds) => {
    await holds.place({ id: "h", kind: "tenant", tenant: "acme" });
    const code = (c: string) => (e: unknown) => e instanceof HoldError && e.code === c;
    await assert.rejects(holds.place({ id: "h", kind: "tenant", tenant: "x" }), code("exists"));
    await assert.rejects(holds.place({ id: "", kind: "tenant", tenant: "x" }), code("invalid"));
    await assert.rejects(holds.place({ id: "a", kind: "tenant", tenant: "" }), code("invalid"));
    await assert.rejects(holds.place({ id: "b", kind: "chunks", chunkIds: [] }), code("invalid"));
    await assert.rejects(
      holds.place({ id: "c", kind: "chunks", chunkIds: [new Uint8Array(5)] }),
      code("invalid"),
    );
  });
});
