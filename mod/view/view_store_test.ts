import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import {
  type ChunkRef,
  CompositionError,
  type Namespace,
  type PayloadCipher,
  ROOT_INODE,
  toHex,
  utf8,
} from "../composition/mod.ts";
import { injectCommitFailure, type KvEnv } from "../disk/mod.ts";
import {
  quietLogger,
  type SingleNode,
  startSingleNode,
  tenant,
  TenantKeys,
  withSingleNode,
} from "./test_stack.ts";
import { openViewEnv, ViewStore } from "./view_store.ts";

/** Counts opens; the real cipher does the work. */
function countingCipher(counter: { opens: number }) {
  return (inner: PayloadCipher): PayloadCipher => ({
    seal: (t, p) => inner.seal(t, p),
    open: (t, s) => {
      counter.opens++;
      return inner.open(t, s);
    },
  });
}

/** Counts durable transactions; the real environment does the work. */
function countingEnv(counter: { transactions: number }) {
  return (env: KvEnv): KvEnv => ({
    get path() {
      return env.path;
    },
    table: (name) => env.table(name),
    transaction: (fn) => {
      counter.transactions++;
      return env.transaction(fn);
    },
    rekey: () => env.rekey(),
    rebuild: () => env.rebuild(),
    settled: () => env.settled(),
    get rebuilds() {
      return env.rebuilds;
    },
    close: () => env.close(),
  });
}

function chunks(prng: Prng, n: number): { refs: ChunkRef[]; size: number } {
  let at = 0;
  const refs = Array.from({ length: n }, () => {
    const lengthBytes = 1 + prng.nextInt(1000);
    const r = { chunkId: prng.bytes(32), offsetBytes: at, lengthBytes };
    at += lengthBytes;
    return r;
  });
  return { refs, size: at };
}

/** Builds a second view store from the node's log alone and waits until it matches the node's watermarks. */
async function freshStoreFromLog(
  node: SingleNode,
): Promise<{ bytes: Uint8Array; close(): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-view2-" });
  const env = await openViewEnv({ dataDir: dir, pageKeys: null, mapSizeBytes: 64 << 20 });
  const store = await ViewStore.open({ env, cipher: node.cipher, logger: quietLogger });
  for (const [shardId, sm] of node.stateMachines) store.attach(shardId, sm);
  store.start(node.deltaLog);
  for (const shardId of node.stateMachines.keys()) {
    await store.whenFolded(shardId, node.views.watermark(shardId));
  }
  return {
    bytes: store.serialize(),
    async close() {
      await store.close();
      await env.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * Puts, overwrites, deletes, copies, multipart (complete and abort) in two tenants' buckets,
 * and mkdir/create/link/unlink/rmdir/rename/setattr/write in a POSIX namespace, four at a
 * time. Refusals (CompositionError) are part of the workload; anything else fails the test.
 */
async function randomWorkload(
  node: SingleNode,
  prng: Prng,
  steps: number,
): Promise<{ ok: number; refused: number }> {
  const svc = node.service;
  const buckets: Namespace[] = [
    await svc.createNamespace(tenant(1), "work-a", "bucket"),
    await svc.createNamespace(tenant(2), "work-b", "bucket"),
  ];
  const fs = await svc.createNamespace(tenant(1), "work-fs", "posix");
  const keys = Array.from({ length: 24 }, (_, i) => `k/${i % 4}/${"x".repeat(i)}${i}`);
  keys.push("L/" + "y".repeat(460) + "1", "L/" + "y".repeat(460) + "2");
  const uploads: { ns: Namespace; key: string; uploadId: string; parts: Map<number, string> }[] =
    [];
  const dirs = [ROOT_INODE];
  const files: number[] = [];
  const names = ["a", "b", "c", "d", "e"];
  const pick = <T>(xs: T[]): T => xs[prng.nextInt(xs.length)]!;
  const stats = { ok: 0, refused: 0 };
  const step = async (): Promise<void> => {
    const ns = pick(buckets);
    const key = pick(keys);
    switch (prng.nextInt(16)) {
      case 0:
      case 1:
      case 2: {
        if (prng.nextInt(2)) {
          const body = prng.bytes(prng.nextInt(100));
          await svc.put(ns, key, {
            inline: body,
            size: body.length,
            etag: `i${body.length}`,
            metadata: { n: String(prng.nextInt(9)) },
          });
        } else {
          const c = chunks(prng, 1 + prng.nextInt(3));
          await svc.put(ns, key, {
            chunkRefs: c.refs,
            size: c.size,
            etag: "c",
            contentType: "x/y",
          });
        }
        return;
      }
      case 3:
        await svc.delete(ns, key);
        return;
      case 4:
        await svc.copy(ns, key, pick(buckets) === ns ? ns : ns, pick(keys));
        return;
      case 5: {
        const { uploadId } = await svc.startUpload(ns, key, { metadata: { m: "1" } });
        uploads.push({ ns, key, uploadId, parts: new Map() });
        return;
      }
      case 6:
      case 7: {
        const u = uploads.length > 0 ? pick(uploads) : undefined;
        if (u === undefined) return;
        const n = 1 + prng.nextInt(4);
        const c = chunks(prng, 1 + prng.nextInt(2));
        const etag = `p${prng.nextInt(1000)}`;
        await svc.putPart(u.ns, u.key, u.uploadId, n, { chunkRefs: c.refs, size: c.size, etag });
        u.parts.set(n, etag);
        return;
      }
      case 8: {
        const u = uploads.length > 0 ? pick(uploads) : undefined;
        if (u === undefined) return;
        const parts = [...u.parts].sort((a, b) => a[0] - b[0]).map(([partNumber, etag]) => ({
          partNumber,
          etag,
        }));
        if (prng.nextInt(4) === 0) parts.pop();
        await svc[prng.nextInt(3) === 0 ? "abortUpload" : "completeUpload"](
          u.ns,
          u.key,
          u.uploadId,
          { parts: parts.length > 0 ? parts : [{ partNumber: 1, etag: "none" }], etag: "mpu" },
        );
        return;
      }
      case 9: {
        const d = await svc.mkdir(fs, pick(dirs), pick(names), { mode: 0o755, uid: 1, gid: 1 });
        dirs.push(d.inode);
        return;
      }
      case 10: {
        const f = await svc.createFile(fs, pick(dirs), pick(names), {
          mode: 0o644,
          uid: 1,
          gid: 1,
        });
        files.push(f.inode);
        return;
      }
      case 11:
        if (files.length > 0) await svc.link(fs, pick(files), pick(dirs), pick(names));
        return;
      case 12:
        await (prng.nextInt(2)
          ? svc.unlink(fs, pick(dirs), pick(names))
          : svc.rmdir(fs, pick(dirs), pick(names)));
        return;
      case 13:
        await svc.rename(fs, pick(dirs), pick(names), pick(dirs), pick(names));
        return;
      case 14:
        if (files.length > 0) {
          await svc.setAttributes(fs, pick(files), {
            size: prng.nextInt(3000),
            mode: prng.nextInt(0o777),
            atime: "now",
          });
        }
        return;
      default:
        if (files.length > 0) {
          const c = chunks(prng, 1 + prng.nextInt(3));
          await svc.writeContent(fs, pick(files), {
            chunkRefs: c.refs,
            size: c.size + prng.nextInt(10),
          });
        }
    }
  };
  for (let i = 0; i < steps; i += 4) {
    const results = await Promise.allSettled([step(), step(), step(), step()]);
    for (const r of results) {
      if (r.status === "fulfilled") stats.ok++;
      else if (r.reason instanceof CompositionError) stats.refused++;
      else throw r.reason;
    }
  }
  return stats;
}

Deno.test("ViewStore folds only deltas after its persisted watermark when the node restarts", async () => {
  const keys = new TenantKeys();
  const counter = { opens: 0 };
  let node = await startSingleNode({ keys, wrapCipher: countingCipher(counter) });
  const dir = node.dir;
  try {
    const ns = await node.service.createNamespace(tenant(1), "b", "bucket");
    for (let i = 0; i < 30; i++) {
      await node.service.put(ns, `k${i}`, { inline: new Uint8Array([i]), size: 1, etag: "e" });
    }
    const watermarks = [...node.stateMachines.keys()].map((s) => node.views.watermark(s));
    const before = node.views.serialize();
    assert.equal(counter.opens, 31);
    await node.close();

    counter.opens = 0;
    node = await startSingleNode({ dir, keys, wrapCipher: countingCipher(counter) });
    // The host replays its whole log through the listeners on start.
    for (const shardId of node.stateMachines.keys()) await node.deltaLog.read(shardId, 0, 1, true);
    for (const shardId of node.stateMachines.keys()) {
      assert.ok(node.stateMachines.get(shardId)!.lastApplied >= node.views.watermark(shardId));
    }
    assert.deepEqual(
      [...node.stateMachines.keys()].map((s) => node.views.watermark(s)),
      watermarks,
    );
    assert.equal(counter.opens, 0, "deltas at or below the watermark were not opened again");
    assert.deepEqual(node.views.serialize(), before);
    await node.service.put(ns, "after-restart", { inline: new Uint8Array(0), size: 0, etag: "" });
    assert.equal(counter.opens, 1);
    assert.equal(node.service.list(ns).keyCount, 31);
  } finally {
    await node.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ViewStore folds on after lmdb rebuilt a damaged views environment", async () => {
  const node = await startSingleNode({ keys: new TenantKeys(), viewEnvDeferred: false });
  try {
    const ns = await node.service.createNamespace(tenant(1), "b", "bucket");
    for (let i = 0; i < 10; i++) {
      await node.service.put(ns, `k${i}`, { inline: new Uint8Array([i]), size: 1, etag: "e" });
    }
    // The next fold batch's commit fails as lmdb failing its free list would: the views
    // environment rebuilds itself, the batch is committed again, and the writer sees it.
    injectCommitFailure(node.viewEnv, "MDB_BAD_TXN: freelist entry 2 had bad/duplicate entries");
    await node.service.put(ns, "after", { inline: new Uint8Array([42]), size: 1, etag: "e" });
    assert.equal(node.viewEnv.rebuilds, 1);
    assert.equal(node.service.list(ns).keyCount, 11);
    await node.service.put(ns, "later", { inline: new Uint8Array(0), size: 0, etag: "" });
    assert.equal(node.service.list(ns).keyCount, 12);
  } finally {
    await node.close();
    await Deno.remove(node.dir, { recursive: true });
  }
});

Deno.test("ViewStore attached late catches up from the log, one durable transaction per batch", async () => {
  const keys = new TenantKeys();
  let node = await startSingleNode({ keys, shardCount: 1 });
  const dir = node.dir;
  try {
    const ns = await node.service.createNamespace(tenant(1), "b", "bucket");
    for (let i = 0; i < 120; i += 20) {
      await Promise.all(
        Array.from(
          { length: 20 },
          (_, j) =>
            node.service.put(ns, `k${i + j}`, { inline: new Uint8Array([j]), size: 1, etag: "e" }),
        ),
      );
    }
    const expected = node.views.serialize();
    const watermark = node.views.watermark(0);
    await node.close();
    // Lose the views entirely; the log remains.
    await Deno.remove(`${dir}/views`, { recursive: true });
    const counter = { transactions: 0 };
    node = await startSingleNode({
      dir,
      keys,
      shardCount: 1,
      attachLate: true,
      wrapViewEnv: countingEnv(counter),
      viewOptions: { batchDeltasMax: 50 },
    });
    await node.views.whenFolded(0, watermark);
    assert.deepEqual(node.views.serialize(), expected);
    // 121 deltas in batches of at most 50: 3 batches, 3 transactions (plus the format mark).
    assert.equal(node.views.stats().batches, 3);
    assert.equal(counter.transactions, 3 + 1);
    assert.ok(node.views.stats().catchUpReads >= 3);
  } finally {
    await node.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ViewStore drops an overflowing queue and catches up from the log; writers still read their writes", async () => {
  await withSingleNode(async (node) => {
    const ns = await node.service.createNamespace(tenant(1), "b", "bucket");
    const catchUpsBefore = node.views.stats().catchUpReads;
    await Promise.all(Array.from({ length: 80 }, async (_, i) => {
      await node.service.put(ns, `k${i}`, { inline: new Uint8Array([i]), size: 1, etag: `e${i}` });
      assert.equal(node.service.get(ns, `k${i}`).etag, `e${i}`);
    }));
    assert.equal(node.service.list(ns).keyCount, 80);
    assert.ok(node.views.stats().catchUpReads > catchUpsBefore, "the overflow path ran");
    const fresh = await freshStoreFromLog(node);
    try {
      assert.deepEqual(node.views.serialize(), fresh.bytes);
    } finally {
      await fresh.close();
    }
  }, { viewOptions: { queueDeltasMax: 2, batchDeltasMax: 3 } });
});

Deno.test("dropAndRebuild() after a long random workload equals the incremental view, byte for byte", async () => {
  await withSingleNode(async (node) => {
    const stats = await randomWorkload(node, new Prng(77), 800);
    assert.ok(stats.ok > 300 && stats.refused > 30, JSON.stringify(stats));
    const incremental = node.views.serialize();
    assert.ok(incremental.length > 10_000);
    const fresh = await freshStoreFromLog(node);
    try {
      assert.deepEqual(fresh.bytes, incremental, "a store folded from the log alone");
    } finally {
      await fresh.close();
    }
    await node.views.dropAndRebuild();
    const rebuilt = node.views.serialize();
    assert.equal(rebuilt.length, incremental.length);
    assert.deepEqual(rebuilt, incremental);
    // The rebuilt view serves writes and reads as before.
    const ns = node.service.ref(tenant(1), "work-a");
    await node.service.put(ns, "after", { inline: new Uint8Array(0), size: 0, etag: "" });
    assert.equal(node.service.get(ns, "after").size, 0);
  });
});

Deno.test("dropAndRebuild() while writes continue converges to what the log says", async () => {
  await withSingleNode(async (node) => {
    await randomWorkload(node, new Prng(5), 120);
    const ns = node.service.ref(tenant(2), "work-b");
    const writes = Promise.all(
      Array.from(
        { length: 60 },
        (_, i) =>
          node.service.put(ns, `during-${i}`, { inline: new Uint8Array([i]), size: 1, etag: "d" }),
      ),
    );
    await Promise.all([node.views.dropAndRebuild(), writes]);
    for (let i = 0; i < 60; i++) assert.equal(node.service.get(ns, `during-${i}`).etag, "d");
    const fresh = await freshStoreFromLog(node);
    try {
      assert.deepEqual(node.views.serialize(), fresh.bytes);
    } finally {
      await fresh.close();
    }
  });
});

Deno.test("ViewStore retries payloads the cipher cannot open yet instead of skipping them", async () => {
  let failures = 0;
  const flaky = (inner: PayloadCipher): PayloadCipher => ({
    seal: (t, p) => inner.seal(t, p),
    open: (t, s) =>
      failures-- > 0 ? Promise.reject(new Error("KMS unreachable")) : inner.open(t, s),
  });
  await withSingleNode(async (node) => {
    const ns = await node.service.createNamespace(tenant(1), "b", "bucket");
    failures = 3;
    await node.service.put(ns, "k", { inline: new Uint8Array([1]), size: 1, etag: "e" });
    assert.equal(failures, -1, "three failed attempts, then success");
    assert.equal(node.service.get(ns, "k").etag, "e");
    assert.equal(node.views.stats().skipped, 0);
  }, { wrapCipher: flaky });
});

Deno.test("a rebuild after a tenant's key is destroyed drops that tenant's views and keeps the others", async () => {
  await withSingleNode(async (node) => {
    const a = await node.service.createNamespace(tenant(1), "a", "bucket");
    const b = await node.service.createNamespace(tenant(2), "b", "bucket");
    await node.service.put(a, "x", { inline: utf8("secret"), size: 6, etag: "e" });
    await node.service.put(b, "y", { inline: utf8("kept"), size: 4, etag: "e" });
    node.keys.destroy(tenant(1));
    node.aeadCipher.forget(tenant(1));
    await node.views.dropAndRebuild();
    assert.deepEqual(node.service.listNamespaces(tenant(1)), []);
    assert.deepEqual(node.service.get(b, "y").content, { kind: "inline", bytes: utf8("kept") });
    assert.equal(node.views.stats().skipped, 2);
    // The watermark moved past the unreadable deltas.
    for (const shardId of node.stateMachines.keys()) {
      assert.equal(node.views.watermark(shardId), node.stateMachines.get(shardId)!.lastApplied);
    }
  });
});

Deno.test("dropTenant() removes a shredded tenant's records, returns their chunk refs, and keeps the others", async () => {
  await withSingleNode(async (node) => {
    const prng = new Prng(7);
    const a = await node.service.createNamespace(tenant(1), "a", "bucket");
    const b = await node.service.createNamespace(tenant(2), "b", "bucket");
    await node.service.put(a, "x", { inline: utf8("secret"), size: 6, etag: "e" });
    const c = chunks(prng, 3);
    await node.service.put(a, "dir/big", { chunkRefs: c.refs, size: c.size, etag: "c" });
    await node.service.put(b, "y", { inline: utf8("kept"), size: 4, etag: "e" });
    const before = node.views.serialize().length;
    node.keys.destroy(tenant(1));
    node.aeadCipher.forget(tenant(1));
    const dropped = await node.views.dropTenant(tenant(1));
    assert.equal(dropped.namespaces, 1);
    assert.ok(dropped.records >= 4, `records ${dropped.records}`);
    assert.deepEqual(
      dropped.releasedChunkIds.map(toHex).sort(),
      c.refs.map((r) => toHex(r.chunkId)).sort(),
    );
    assert.deepEqual(node.service.listNamespaces(tenant(1)), []);
    assert.equal(node.views.namespace(a.id), undefined);
    assert.deepEqual(node.service.get(b, "y").content, { kind: "inline", bytes: utf8("kept") });
    assert.ok(node.views.serialize().length < before);
    // Rekeyed, the views still serve the other tenant, and a rebuild does not bring the
    // shredded tenant back (its deltas no longer open).
    await node.views.rekey();
    assert.deepEqual(node.service.get(b, "y").content, { kind: "inline", bytes: utf8("kept") });
    await node.service.put(b, "z", { inline: utf8("after"), size: 5, etag: "e" });
    await node.views.dropAndRebuild();
    assert.deepEqual(node.service.listNamespaces(tenant(1)), []);
    assert.deepEqual(node.service.get(b, "z").content, { kind: "inline", bytes: utf8("after") });
  }, { pageKeys: true });
});

Deno.test("an interrupted rebuild starts again when the views are opened", async () => {
  const keys = new TenantKeys();
  let node = await startSingleNode({ keys });
  const dir = node.dir;
  try {
    await randomWorkload(node, new Prng(3), 60);
    const expected = node.views.serialize();
    const watermarks = new Map(
      [...node.stateMachines.keys()].map((s) => [s, node.views.watermark(s)]),
    );
    await node.close();
    // Simulate a crash in the middle of clearing: the mark is set, half the objects are gone.
    const env = await openViewEnv({ dataDir: dir, pageKeys: null, mapSizeBytes: 64 << 20 });
    const objects = env.table("view_obj");
    const some = [...objects.range({ limit: 5 })].map((e) => e.key);
    await env.transaction((txn) => {
      txn.put(env.table("view_meta"), utf8("rebuilding"), Uint8Array.of(1));
      for (const k of some) txn.delete(objects, k);
    });
    await env.close();
    node = await startSingleNode({ dir, keys });
    for (const [shardId, w] of watermarks) await node.views.whenFolded(shardId, w);
    assert.deepEqual(node.views.serialize(), expected);
    assert.equal(node.views.stats().rebuilding, false);
  } finally {
    await node.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ViewStore.whenFolded() waits for a sequence and awaitOutcome() times out as unavailable", async () => {
  await withSingleNode(async (node) => {
    const ns = await node.service.createNamespace(tenant(1), "b", "bucket");
    const { version } = await node.service.put(ns, "k", {
      inline: new Uint8Array(0),
      size: 0,
      etag: "",
    });
    const shard = [...node.stateMachines.keys()].find((s) => node.views.watermark(s) === version)!;
    await node.views.whenFolded(shard, version);
    let later = false;
    const waiting = node.views.whenFolded(shard, version + 1).then(() => (later = true));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(later, false);
    await node.service.put(ns, "k2", { inline: new Uint8Array(0), size: 0, etag: "" });
    await waiting;
    const pending = node.views.awaitOutcome(new Uint8Array(16).fill(9), 30);
    await assert.rejects(
      pending.promise,
      (e) => e instanceof CompositionError && e.code === "unavailable",
    );
  });
});
