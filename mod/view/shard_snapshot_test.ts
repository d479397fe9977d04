import assert from "node:assert/strict";
import { CompositionError, namespaceRoutingKey, utf8 } from "../composition/mod.ts";
import { shardForKey } from "../log/mod.ts";
import { startSingleNode, tenant, TenantKeys } from "./test_stack.ts";

Deno.test("ViewStore.snapshotPart() exports a shard's namespaces and installs them on another node, refusing reads meanwhile", async () => {
  const keys = new TenantKeys();
  const a = await startSingleNode({ keys });
  const b = await startSingleNode({ keys });
  try {
    const ns = await a.service.createNamespace(tenant(1), "snap", "bucket");
    const ref = a.service.ref(tenant(1), "snap");
    for (let i = 0; i < 50; i++) {
      const body = utf8(`v${i}`);
      await a.service.put(ref, `k${i}`, { inline: body, size: body.length, etag: `e${i}` });
    }
    await a.service.delete(ref, "k7");
    const shardId = shardForKey(a.shardMap, namespaceRoutingKey(ns.id));
    const owns = (id: Uint8Array) => shardForKey(a.shardMap, namespaceRoutingKey(id)) === shardId;
    // B has a namespace of its own on that shard, which the snapshot does not know: it goes.
    const stale = Array.from({ length: 32 }, (_, i) => `stale${i}`).find((name) =>
      shardForKey(b.shardMap, namespaceRoutingKey(b.service.ref(tenant(1), name).id)) === shardId
    )!;
    await b.service.createNamespace(tenant(1), stale, "bucket");

    const chunks: Uint8Array[] = [];
    const index = await a.views.snapshotPart(shardId, owns).export((c) => {
      chunks.push(c);
      return Promise.resolve();
    }, 1);
    assert.equal(index, a.views.watermark(shardId));

    // Install from a stream that stalls half way: reads of the shard are refused meanwhile.
    let release = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const stream = async function* () {
      yield chunks[0]!;
      await gate;
      yield* chunks.slice(1);
    };
    const part = b.views.snapshotPart(shardId, owns);
    const installing = part.install(stream(), index + 1000);
    await new Promise((r) => setTimeout(r, 100));
    assert.throws(
      () => b.service.get(ref, "k1"),
      (e) => e instanceof CompositionError && e.code === "unavailable",
    );
    release();
    await installing;

    assert.equal(b.views.watermark(shardId), index + 1000);
    for (let i = 0; i < 50; i++) {
      if (i === 7) {
        assert.throws(() => b.service.get(ref, "k7"), /no key "k7"/);
        continue;
      }
      const c = b.service.get(ref, `k${i}`);
      assert(c.content.kind === "inline");
      assert.equal(new TextDecoder().decode(c.content.bytes), `v${i}`);
    }
    assert.equal(b.service.list(ref, { maxKeys: 100 }).keyCount, 49);
    assert.equal(b.views.namespace(b.service.ref(tenant(1), stale).id), undefined);
    assert.deepEqual(b.views.namespaces(tenant(1)).map((n) => n.name), ["snap"]);
    // A part already past an index keeps its state.
    await part.install(stream(), 5);
    assert.equal(b.views.watermark(shardId), index + 1000);
  } finally {
    await a.close();
    await b.close();
    await Deno.remove(a.dir, { recursive: true });
    await Deno.remove(b.dir, { recursive: true });
  }
});
