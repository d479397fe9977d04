import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { Prng, toHex } from "../base/mod.ts";
import { computeChunkId } from "../chunk/mod.ts";
import { deriveChunkDek, openChunk, sealChunk } from "../crypto/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { type EngineStack, startEngineStack } from "../role/engine_stack.ts";
import { CompositionError } from "./errors.ts";
import { type HeldRefs, SealedObjects, SealedStoredError } from "./sealed_objects.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const MiB = 1 << 20;
const TENANT = Uint8Array.of(0x7e, ...new Array(14).fill(0), 9);

async function withStack(fn: (stack: EngineStack, sealed: SealedObjects) => Promise<void>) {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-sealed-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 64 * MiB, segmentSizeBytes: 4 * MiB },
  });
  try {
    const sealed = new SealedObjects({
      service: stack.engine.service,
      chunkStore: stack.engine.chunkStore,
      systemKeys: stack.systemKeys,
      aead: stack.aead,
      logger: quiet,
    });
    await fn(stack, sealed);
  } finally {
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Refs held in a map, as a client session holds them. */
function heldRefs(): HeldRefs & { add(id: Uint8Array): void; count(): number } {
  const held = new Map<string, number>();
  return {
    take(id) {
      const n = held.get(toHex(id)) ?? 0;
      if (n === 0) return false;
      held.set(toHex(id), n - 1);
      return true;
    },
    restore(id) {
      held.set(toHex(id), (held.get(toHex(id)) ?? 0) + 1);
    },
    add(id) {
      held.set(toHex(id), (held.get(toHex(id)) ?? 0) + 1);
    },
    count: () => [...held.values()].reduce((a, b) => a + b, 0),
  };
}

Deno.test("SealedObjects: an object sealed by a client commits and reads back through the engine", async () => {
  await withStack(async (stack, sealed) => {
    const tenant = toHex(TENANT);
    await stack.engine.createNamespace(TENANT, "b");
    const ns = stack.engine.namespace(TENANT, "b");
    const prng = new Prng(1);
    const parts = [prng.bytes(300_000), prng.bytes(200_001)];
    const epoch = await sealed.currentEpoch();
    const held = heldRefs();
    let offset = 0;
    const refs = [];
    for (const plaintext of parts) {
      const chunkId = computeChunkId("global", plaintext);
      const [dataKey] = await sealed.dataKeys(epoch, [chunkId]);
      assert.deepEqual(dataKey, deriveChunkDek(await stack.systemKeys.masterKey(epoch), chunkId));
      const envelope = await sealChunk({
        aead: stack.aead,
        masterKey: await stack.systemKeys.masterKey(epoch),
        epoch,
        chunkId,
        plaintext,
      });
      assert.deepEqual(await sealed.storeUploaded(chunkId, envelope, tenant), { created: true });
      held.add(chunkId);
      refs.push({ chunkId, offsetBytes: offset, lengthBytes: plaintext.length });
      offset += plaintext.length;
    }
    const whole = new Uint8Array(offset);
    whole.set(parts[0]!, 0);
    whole.set(parts[1]!, parts[0]!.length);
    const etag = createHash("md5").update(whole).digest("hex");
    const { version } = await sealed.commit(ns, "k", { refs, size: offset, etag }, held);
    assert.ok(version > 0);
    assert.equal(held.count(), 0, "the commit used every held ref");
    const got = await stack.engine.getObject(ns, "k");
    assert.equal(got.etag, etag);
    assert.deepEqual(new Uint8Array(await new Response(got.body).arrayBuffer()), whole);
  });
});

Deno.test("SealedObjects: a stored chunk takes a reference only with a proof of possession", async () => {
  await withStack(async (stack, sealed) => {
    const tenant = toHex(TENANT);
    const plaintext = new Prng(2).bytes(100_000);
    const chunkId = computeChunkId("global", plaintext);
    const epoch = await sealed.currentEpoch();
    const master = await stack.systemKeys.masterKey(epoch);
    const envelope = await sealChunk({
      aead: stack.aead,
      masterKey: master,
      epoch,
      chunkId,
      plaintext,
    });
    await sealed.storeUploaded(chunkId, envelope, tenant);
    assert.equal((await stack.engine.chunkStore.stat(chunkId))!.refcount, 1);
    // Uploading it again (even the same id with other bytes) is refused: prove instead.
    const other = await sealChunk({
      aead: stack.aead,
      masterKey: master,
      epoch,
      chunkId,
      plaintext,
    });
    await assert.rejects(sealed.storeUploaded(chunkId, other, tenant), SealedStoredError);
    assert.deepEqual(await sealed.present([chunkId]), [true]);
    const challenge = new Prng(3).bytes(32);
    const wrong = createHmac("sha256", challenge).update(new Uint8Array(100_000)).digest();
    assert.equal(await sealed.prove(chunkId, challenge, wrong, tenant), false);
    assert.equal((await stack.engine.chunkStore.stat(chunkId))!.refcount, 1);
    const right = createHmac("sha256", challenge).update(plaintext).digest();
    assert.equal(await sealed.prove(chunkId, challenge, right, tenant), true);
    assert.equal((await stack.engine.chunkStore.stat(chunkId))!.refcount, 2);
    // The stored chunk is still the first upload, and opens.
    const opened = await openChunk({
      aead: stack.aead,
      masterKeyFor: () => Promise.resolve(master),
      chunkId,
      envelope: await stack.engine.chunkStore.get(chunkId),
    });
    assert.deepEqual(opened, plaintext);
  });
});

Deno.test("SealedObjects: a commit of chunks the session does not hold is refused, and gives back what it took", async () => {
  await withStack(async (stack, sealed) => {
    await stack.engine.createNamespace(TENANT, "b");
    const ns = stack.engine.namespace(TENANT, "b");
    const held = heldRefs();
    const a = new Prng(4).bytes(32);
    const b = new Prng(5).bytes(32);
    held.add(a);
    await assert.rejects(
      sealed.commit(ns, "k", {
        refs: [
          { chunkId: a, offsetBytes: 0, lengthBytes: 10 },
          { chunkId: b, offsetBytes: 10, lengthBytes: 10 },
        ],
        size: 20,
        etag: "e",
      }, held),
      (e: unknown) => e instanceof CompositionError && e.code === "precondition_failed",
    );
    assert.equal(held.count(), 1, "the held ref of a is back with the session");
    await assert.rejects(stack.engine.headObject(ns, "k"), CompositionError);
  });
});
