import assert from "node:assert/strict";
import { FabricBadRequestError, FabricNoSpaceError, type FragmentGet } from "../transport/mod.ts";
import { Prng, randomChunk, SimHarness, SimPool } from "./_testing.ts";
import { fragmentHandler, INVENTORY_FRAGMENT_INDEX } from "./fabric_fragments.ts";
import { REFERENCE_FRAGMENT_INDEX } from "./cluster_index.ts";
import { checkInventory, fragmentId, LocalFragmentStore } from "./fragment_store.ts";

async function harness() {
  const h = await SimHarness.create(
    new SimPool({ devices: 2, durability: { kind: "copies", copies: 1 }, name: "f" }),
  );
  const local = new LocalFragmentStore({ node: 4, store: h.store });
  return { h, local, handler: fragmentHandler(local) };
}

const encoder = new TextEncoder();

function getRequest(chunkId: Uint8Array, index: number, offset = 0, lengthMax = 1 << 20) {
  return {
    from: 2,
    chunkId,
    index,
    offset,
    lengthMax,
    allocate: (n: number) => new Uint8Array(n),
  } satisfies FragmentGet;
}

Deno.test("fragmentHandler() stores on the named device, serves ranges, stats and releases", async () => {
  const { h, local, handler } = await harness();
  try {
    const c = randomChunk(new Prng(1), 10_000);
    await handler.put({
      from: 2,
      chunkId: c.id,
      index: 3,
      bytes: c.bytes,
      meta: encoder.encode("f-1"),
    });
    assert.equal(await local.deviceOf(c.id, 3), "f-1");
    assert.equal((await h.store.stat(fragmentId(c.id, 3)))!.fragments[0]!.deviceId, "f-1");
    const whole = await handler.get(getRequest(c.id, 3));
    assert.deepEqual(whole!.bytes, c.bytes);
    const range = await handler.get(getRequest(c.id, 3, 100, 50));
    assert.deepEqual(range!.bytes, c.bytes.subarray(100, 150));
    assert.equal(range!.sizeBytes, 10_000);
    assert.equal(await handler.get(getRequest(c.id, 4)), null);
    assert.equal((await handler.stat({ from: 2, chunkId: c.id, index: 3 }))!.sizeBytes, 10_000);
    assert.equal(await handler.delete({ from: 2, chunkId: c.id, index: 3 }), true);
    assert.equal(await handler.delete({ from: 2, chunkId: c.id, index: 3 }), false);
    assert.equal(await handler.stat({ from: 2, chunkId: c.id, index: 3 }), null);
  } finally {
    await h.close();
  }
});

Deno.test("fragmentHandler() answers bad puts as bad requests and a device that cannot take one as no space", async () => {
  const { h, handler } = await harness();
  try {
    const c = randomChunk(new Prng(2), 1000);
    const put = (meta: Uint8Array, index = 0) =>
      handler.put({ from: 2, chunkId: c.id, index, bytes: c.bytes, meta });
    await assert.rejects(put(new Uint8Array(0)), FabricBadRequestError);
    await assert.rejects(put(new Uint8Array([0xff, 0xfe])), FabricBadRequestError);
    await assert.rejects(put(encoder.encode("f-0"), 64), FabricBadRequestError);
    await assert.rejects(put(encoder.encode("no-such-device")), FabricNoSpaceError);
    assert.equal(await handler.get(getRequest(c.id, 0, 5)), null, "nothing was stored");
  } finally {
    await h.close();
  }
});

Deno.test("fragmentHandler() answers the device inventory at the reserved address", async () => {
  const { h, handler } = await harness();
  try {
    const answer = await handler.get(getRequest(new Uint8Array(32), INVENTORY_FRAGMENT_INDEX));
    const inventory = checkInventory(JSON.parse(new TextDecoder().decode(answer!.bytes)));
    assert.equal(inventory.node, 4);
    assert.deepEqual(inventory.devices.map((d) => d.id), ["f-0", "f-1"]);
    assert.ok(inventory.devices.every((d) => d.writable && d.weight > 0));
    assert.throws(() => checkInventory({ node: 0, pool: "x", devices: [] }), TypeError);
    assert.throws(
      () => checkInventory({ node: 1, pool: "x", devices: [{ id: "", weight: 1 }] }),
      TypeError,
    );
  } finally {
    await h.close();
  }
});

Deno.test("fragmentHandler() drops a chunk reference at the reserved index only where the node keeps references", async () => {
  const { h, local, handler } = await harness();
  try {
    const id = new Uint8Array(32).fill(5);
    const request = { from: 2, chunkId: id, index: REFERENCE_FRAGMENT_INDEX };
    await assert.rejects(() => handler.delete(request), FabricBadRequestError);
    const asked: Uint8Array[] = [];
    const owner = fragmentHandler(local, {
      dropOwn: (chunkId) => {
        asked.push(chunkId);
        return Promise.resolve(asked.length === 1);
      },
      hasOwn: (chunkId) => Promise.resolve(chunkId[0] === 5),
      addOwn: () => Promise.resolve(true),
    });
    assert.notEqual(await owner.stat(request), null, "the owner indexes it");
    assert.equal(await owner.stat({ ...request, chunkId: new Uint8Array(32) }), null);
    await assert.rejects(() => handler.stat(request), FabricBadRequestError);
    assert.equal(await owner.delete(request), true);
    assert.equal(await owner.delete(request), false, "the owner counts no more");
    assert.deepEqual(asked, [id, id]);
    // A reference added: its metadata is the tenant tag (or nothing).
    const add = (meta: Uint8Array) => ({ ...request, bytes: new Uint8Array(0), meta });
    await owner.put(add(new Uint8Array(0)));
    await owner.put(add(encoder.encode("0123456789abcdef")));
    await assert.rejects(() => owner.put(add(encoder.encode("f-0"))), FabricBadRequestError);
    await assert.rejects(() => handler.put(add(new Uint8Array(0))), FabricBadRequestError);
  } finally {
    await h.close();
  }
});
