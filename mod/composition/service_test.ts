import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { shardForKey } from "../log/mod.ts";
import { namespaceRoutingKey } from "./namespace.ts";
import { tenant, withSingleNode } from "../view/test_stack.ts";
import { type ChunkRef, METADATA_BYTES_MAX } from "./composition.ts";
import { CompositionError, type CompositionErrorCode } from "./errors.ts";

function refs(prng: Prng, lengths: number[]): ChunkRef[] {
  let at = 0;
  return lengths.map((lengthBytes) => {
    const r = { chunkId: prng.bytes(32), offsetBytes: at, lengthBytes };
    at += lengthBytes;
    return r;
  });
}

async function rejectsWith(
  p: Promise<unknown> | (() => unknown),
  code: CompositionErrorCode,
): Promise<void> {
  const isCode = (e: unknown) => e instanceof CompositionError && e.code === code;
  if (typeof p === "function") assert.throws(p, isCode);
  else await assert.rejects(p, isCode);
}

Deno.test("CompositionService namespaces: create, list, refuse duplicates, delete only when empty", async () => {
  await withSingleNode(async ({ service }) => {
    const t = tenant(1);
    const ns = await service.createNamespace(t, "photos", "bucket");
    assert.equal(ns.kind, "bucket");
    assert.deepEqual(service.getNamespace(service.ref(t, "photos")), ns);
    await service.createNamespace(t, "home", "posix");
    assert.deepEqual(service.listNamespaces(t).map((n) => n.name).sort(), ["home", "photos"]);
    assert.deepEqual(service.listNamespaces(tenant(2)), []);
    await rejectsWith(service.createNamespace(t, "photos", "posix"), "namespace_exists");
    await service.put(ns, "a", { inline: new Uint8Array([1]), size: 1, etag: "e" });
    await rejectsWith(service.deleteNamespace(ns), "namespace_not_empty");
    await service.delete(ns, "a");
    await service.deleteNamespace(ns);
    await rejectsWith(() => service.getNamespace(ns), "namespace_not_found");
    await rejectsWith(service.deleteNamespace(ns), "namespace_not_found");
    // The same name can be created again, empty.
    const again = await service.createNamespace(t, "photos", "bucket");
    assert.equal(service.list(again).keyCount, 0);
  });
});

Deno.test("CompositionService.put() then get()/list() on the same node sees the write (read-your-writes)", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "b", "bucket");
    const prng = new Prng(1);
    await Promise.all(Array.from({ length: 40 }, async (_, i) => {
      const key = `k/${String(i).padStart(3, "0")}`;
      const r = await service.put(ns, key, {
        chunkRefs: refs(prng, [10, 20]),
        size: 30,
        etag: `e${i}`,
      });
      const got = service.get(ns, key);
      assert.equal(got.version, r.version);
      assert.equal(got.etag, `e${i}`);
      assert.ok(service.list(ns, { prefix: key }).objects.some((o) => o.key === key));
    }));
    assert.equal(service.list(ns).keyCount, 40);
    assert.equal(service.getNamespace(ns).objects, 40);
    assert.equal(service.getNamespace(ns).bytes, 40 * 30);
  });
});

Deno.test("CompositionService.put() overwrites with a higher version and reports the released chunks", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "b", "bucket");
    const prng = new Prng(2);
    const first = refs(prng, [5, 5]);
    const v1 = await service.put(ns, "obj", {
      chunkRefs: first,
      size: 10,
      etag: "one",
      contentType: "text/plain",
      metadata: { color: "blue" },
    });
    assert.deepEqual(v1.released, []);
    const created = service.get(ns, "obj").createdMs;
    const v2 = await service.put(ns, "obj", {
      inline: new Uint8Array([9, 9]),
      size: 2,
      etag: "two",
    });
    assert.ok(v2.version > v1.version);
    assert.deepEqual(v2.released, first.map((r) => r.chunkId));
    const got = service.get(ns, "obj");
    assert.deepEqual(got.content, { kind: "inline", bytes: new Uint8Array([9, 9]) });
    assert.equal(got.createdMs, created);
    assert.ok(got.modifiedMs >= created);
    assert.deepEqual(got.metadata, {});
    const head = service.head(ns, "obj");
    assert.equal("content" in head, false);
    assert.equal(head.size, 2);
    const d = await service.delete(ns, "obj");
    assert.deepEqual(d, { deleted: true, released: [] });
    assert.deepEqual(await service.delete(ns, "obj"), { deleted: false, released: [] });
    await rejectsWith(() => service.get(ns, "obj"), "not_found");
    // Versions keep rising across a delete.
    const v3 = await service.put(ns, "obj", { inline: new Uint8Array(0), size: 0, etag: "" });
    assert.ok(v3.version > v2.version);
  });
});

Deno.test("CompositionService.put() checks conditions, shapes and the inline threshold", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "b", "bucket");
    const small = { inline: new Uint8Array([1]), size: 1, etag: "e" };
    const v = await service.put(ns, "k", { ...small, ifAbsent: true });
    await rejectsWith(service.put(ns, "k", { ...small, ifAbsent: true }), "precondition_failed");
    await rejectsWith(
      service.put(ns, "k", { ...small, ifVersion: v.version + 1 }),
      "precondition_failed",
    );
    await service.put(ns, "k", { ...small, ifVersion: v.version });
    assert.equal(service.inlineBytesMax, 4096);
    await rejectsWith(
      service.put(ns, "big", { inline: new Uint8Array(4097), size: 4097, etag: "" }),
      "invalid_argument",
    );
    await rejectsWith(service.put(ns, "", small), "invalid_argument");
    await rejectsWith(service.put(ns, "k", { ...small, size: 2 }), "invalid_argument");
    await rejectsWith(
      service.put(ns, "k", { inline: new Uint8Array(1), chunkRefs: [], size: 1, etag: "" }),
      "invalid_argument",
    );
    await rejectsWith(
      service.put(ns, "k", { ...small, metadata: { big: "x".repeat(METADATA_BYTES_MAX + 1) } }),
      "invalid_argument",
    );
    await rejectsWith(() => service.list(ns, { maxKeys: -1 }), "invalid_argument");
    await rejectsWith(
      () => service.list(ns, { continuationToken: "garbage!" }),
      "invalid_argument",
    );
  });
});

Deno.test("CompositionService multipart: parts, listing, completion checks, abort", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "b", "bucket");
    const prng = new Prng(3);
    const { uploadId } = await service.startUpload(ns, "big/file", {
      contentType: "application/x",
      metadata: { a: "1" },
    });
    assert.match(uploadId, /^[0-9a-f]{32}$/);
    const p1 = refs(prng, [100, 100]);
    const p1b = refs(prng, [150, 50]);
    const p2 = refs(prng, [30]);
    const p3 = refs(prng, [7]);
    await service.putPart(ns, "big/file", uploadId, 1, { chunkRefs: p1, size: 200, etag: "x1" });
    // A part uploaded again replaces the first one, whose chunks are released.
    const again = await service.putPart(ns, "big/file", uploadId, 1, {
      chunkRefs: p1b,
      size: 200,
      etag: "e1",
    });
    assert.deepEqual(again.released, p1.map((r) => r.chunkId));
    await service.putPart(ns, "big/file", uploadId, 2, { chunkRefs: p2, size: 30, etag: "e2" });
    await service.putPart(ns, "big/file", uploadId, 3, { chunkRefs: p3, size: 7, etag: "e3" });
    await rejectsWith(
      service.putPart(ns, "other", uploadId, 4, { chunkRefs: p3, size: 7, etag: "e" }),
      "no_such_upload",
    );
    await rejectsWith(
      service.putPart(ns, "big/file", "00".repeat(16), 4, { chunkRefs: p3, size: 7, etag: "e" }),
      "no_such_upload",
    );
    const uploads = service.listUploads(ns);
    assert.deepEqual(uploads.uploads.map((u) => [u.key, u.uploadId, u.parts]), [[
      "big/file",
      uploadId,
      3,
    ]]);
    const page1 = service.listParts(ns, "big/file", uploadId, { maxParts: 2 });
    assert.deepEqual(page1.parts.map((p) => p.partNumber), [1, 2]);
    assert.equal(page1.isTruncated, true);
    assert.equal(page1.nextPartNumberMarker, 2);
    const page2 = service.listParts(ns, "big/file", uploadId, { partNumberMarker: 2 });
    assert.deepEqual(page2.parts.map((p) => p.partNumber), [3]);
    assert.equal(page2.isTruncated, false);

    const parts = [{ partNumber: 1, etag: "e1" }, { partNumber: 2, etag: "e2" }];
    await rejectsWith(
      service.completeUpload(ns, "big/file", uploadId, { parts: [...parts].reverse(), etag: "m" }),
      "invalid_part_order",
    );
    await rejectsWith(
      service.completeUpload(ns, "big/file", uploadId, {
        parts: [...parts, { partNumber: 9, etag: "e9" }],
        etag: "m",
      }),
      "invalid_part",
    );
    await rejectsWith(
      service.completeUpload(ns, "big/file", uploadId, {
        parts: [parts[0]!, { partNumber: 2, etag: "wrong" }],
        etag: "m",
      }),
      "invalid_part",
    );
    await rejectsWith(
      service.completeUpload(ns, "big/file", uploadId, { parts, etag: "m", partBytesMin: 201 }),
      "entity_too_small",
    );
    // Refusals changed nothing.
    assert.equal(service.listParts(ns, "big/file", uploadId).parts.length, 3);

    const done = await service.completeUpload(ns, "big/file", uploadId, {
      parts,
      etag: "m-2",
      partBytesMin: 200,
    });
    assert.equal(done.size, 230);
    // Part 3 was not listed: its chunks are released.
    assert.deepEqual(done.released, p3.map((r) => r.chunkId));
    const object = service.get(ns, "big/file");
    assert.equal(object.etag, "m-2");
    assert.equal(object.contentType, "application/x");
    assert.deepEqual(object.metadata, { a: "1" });
    assert.deepEqual(object.content, {
      kind: "chunks",
      chunkRefs: [
        { ...p1b[0]!, offsetBytes: 0 },
        { ...p1b[1]!, offsetBytes: 150 },
        { ...p2[0]!, offsetBytes: 200 },
      ],
    });
    await rejectsWith(() => service.listParts(ns, "big/file", uploadId), "no_such_upload");
    assert.equal(service.listUploads(ns).uploads.length, 0);
    assert.equal(service.getNamespace(ns).uploads, 0);

    const second = await service.startUpload(ns, "tmp");
    const q = refs(prng, [4, 4]);
    await service.putPart(ns, "tmp", second.uploadId, 5, { chunkRefs: q, size: 8, etag: "q" });
    const aborted = await service.abortUpload(ns, "tmp", second.uploadId);
    assert.deepEqual(aborted.released, q.map((r) => r.chunkId));
    await rejectsWith(service.abortUpload(ns, "tmp", second.uploadId), "no_such_upload");
    await service.delete(ns, "big/file");
    await service.deleteNamespace(ns);
  });
});

Deno.test("CompositionService.copy() makes a new object over the same chunks", async () => {
  await withSingleNode(async ({ service }) => {
    const a = await service.createNamespace(tenant(1), "a", "bucket");
    const b = await service.createNamespace(tenant(1), "b", "bucket");
    const chunks = refs(new Prng(4), [8, 8]);
    await service.put(a, "src", {
      chunkRefs: chunks,
      size: 16,
      etag: "s",
      metadata: { m: "1" },
      contentType: "x/y",
    });
    const copied = await service.copy(a, "src", b, "dst");
    assert.equal(copied.etag, "s");
    const dst = service.get(b, "dst");
    assert.deepEqual(dst.content, { kind: "chunks", chunkRefs: chunks });
    assert.deepEqual(dst.metadata, { m: "1" });
    await service.copy(a, "src", a, "renamed", { metadata: { n: "2" }, contentType: "a/b" });
    assert.deepEqual(service.get(a, "renamed").metadata, { n: "2" });
    assert.equal(service.get(a, "renamed").contentType, "a/b");
    await rejectsWith(service.copy(a, "missing", b, "x"), "not_found");
  });
});

Deno.test("CompositionService keeps a completed upload's part sizes, an explicit layout, or none", async () => {
  await withSingleNode(async ({ service }) => {
    const ns = await service.createNamespace(tenant(1), "b", "bucket");
    const prng = new Prng(5);
    const upload = async (key: string, sizes: number[]) => {
      const { uploadId } = await service.startUpload(ns, key);
      for (const [i, size] of sizes.entries()) {
        const chunkRefs = size === 0 ? [] : refs(prng, [size]);
        await service.putPart(ns, key, uploadId, i + 1, { chunkRefs, size, etag: `e${i}` });
      }
      // Part 9, uploaded but not listed, is no part of the object.
      await service.putPart(ns, key, uploadId, 9, {
        chunkRefs: refs(prng, [3]),
        size: 3,
        etag: "",
      });
      return {
        uploadId,
        parts: sizes.map((_, i) => ({ partNumber: i + 1, etag: `e${i}` })),
      };
    };
    const listed = await upload("listed", [100, 40, 0]);
    await service.completeUpload(ns, "listed", listed.uploadId, {
      parts: listed.parts,
      etag: "m-3",
    });
    assert.deepEqual(service.get(ns, "listed").partSizes, [100, 40, 0]);
    assert.deepEqual(service.head(ns, "listed").partSizes, [100, 40, 0]);

    // A copy through hidden parts: the layout it is given, not the hidden parts'.
    const explicit = await upload("explicit", [70, 70]);
    await rejectsWith(
      service.completeUpload(ns, "explicit", explicit.uploadId, {
        parts: explicit.parts,
        etag: "m-3",
        partSizes: [100, 41],
      }),
      "invalid_argument",
    );
    await rejectsWith(
      service.completeUpload(ns, "explicit", explicit.uploadId, {
        parts: explicit.parts,
        etag: "m-3",
        partSizes: [],
      }),
      "invalid_argument",
    );
    await service.completeUpload(ns, "explicit", explicit.uploadId, {
      parts: explicit.parts,
      etag: "m-3",
      partSizes: [100, 40, 0],
    });
    assert.deepEqual(service.get(ns, "explicit").partSizes, [100, 40, 0]);

    // A large put's hidden parts: a single-part object.
    const hidden = await upload("hidden", [70, 70]);
    await service.completeUpload(ns, "hidden", hidden.uploadId, {
      parts: hidden.parts,
      etag: "md5",
      partSizes: null,
    });
    assert.equal(service.get(ns, "hidden").size, 140);
    assert.ok(!("partSizes" in service.get(ns, "hidden")));

    // A put may carry a layout (a copy keeps its source's); it must describe the object.
    const chunks = refs(prng, [50, 30]);
    await rejectsWith(
      service.put(ns, "p", { chunkRefs: chunks, size: 80, etag: "m-2", partSizes: [50, 31] }),
      "invalid_argument",
    );
    await service.put(ns, "p", { chunkRefs: chunks, size: 80, etag: "m-2", partSizes: [60, 20] });
    assert.deepEqual(service.get(ns, "p").partSizes, [60, 20]);
    await service.copy(ns, "listed", ns, "copied");
    assert.deepEqual(service.get(ns, "copied").partSizes, [100, 40, 0]);
    // An overwrite without a layout leaves none behind.
    await service.put(ns, "p", { chunkRefs: chunks, size: 80, etag: "plain" });
    assert.ok(!("partSizes" in service.get(ns, "p")));
    await service.copy(ns, "p", ns, "copied");
    assert.ok(!("partSizes" in service.get(ns, "copied")));
  });
});

Deno.test("CompositionService keeps tenants apart and namespace kinds apart", async () => {
  await withSingleNode(async ({ service }) => {
    const mine = await service.createNamespace(tenant(1), "shared-name", "bucket");
    await service.put(mine, "secret", { inline: new Uint8Array([1]), size: 1, etag: "e" });
    // Another tenant addressing my namespace id directly finds nothing, and cannot write.
    const theirs = { tenantId: tenant(2), id: mine.id };
    await rejectsWith(() => service.get(theirs, "secret"), "namespace_not_found");
    await rejectsWith(() => service.list(theirs), "namespace_not_found");
    await rejectsWith(
      service.put(theirs, "x", { inline: new Uint8Array(0), size: 0, etag: "" }),
      "namespace_not_found",
    );
    await rejectsWith(service.delete(theirs, "secret"), "namespace_not_found");
    await rejectsWith(service.deleteNamespace(theirs), "namespace_not_found");
    // The same name under another tenant is another namespace.
    const other = await service.createNamespace(tenant(2), "shared-name", "bucket");
    assert.notDeepEqual(other.id, mine.id);
    assert.equal(service.list(other).keyCount, 0);
    const fs = await service.createNamespace(tenant(1), "fs", "posix");
    await rejectsWith(
      service.put(fs, "x", { inline: new Uint8Array(0), size: 0, etag: "" }),
      "wrong_kind",
    );
    await rejectsWith(() => service.list(fs), "wrong_kind");
    await rejectsWith(service.mkdir(mine, 1, "d", { mode: 0o755, uid: 0, gid: 0 }), "wrong_kind");
  });
});

Deno.test("CompositionService commits sealed deltas on the namespace's shard, chunk ids in the header", async () => {
  await withSingleNode(async ({ service, deltaLog, shardMap }) => {
    const t = tenant(3);
    const ns = await service.createNamespace(t, "logbook", "bucket");
    const chunks = refs(new Prng(5), [3, 4]);
    const { version } = await service.put(ns, "plain-text-key-name", {
      chunkRefs: chunks,
      size: 7,
      etag: "e",
    });
    const hashedKey = namespaceRoutingKey(ns.id);
    const shard = shardForKey(shardMap, hashedKey);
    const { deltas } = await deltaLog.read(shard, 0, 100);
    const put = deltas.find((d) => d.sequence === version)!;
    assert.equal(put.op, "update");
    assert.deepEqual(put.tenantId, t);
    assert.deepEqual(put.hashedKey, hashedKey);
    assert.deepEqual(put.chunkRefs, chunks.map((r) => r.chunkId));
    assert.ok(!new TextDecoder("latin1").decode(put.payload).includes("plain-text-key-name"));
    assert.ok(deltas.every((d) => d.shardId === shard));
  });
});

Deno.test("CompositionService answers read_only while the shard is in maintenance", async () => {
  await withSingleNode(async ({ service, deltaLog, shardMap }) => {
    const ns = await service.createNamespace(tenant(1), "b", "bucket");
    const shard = shardForKey(shardMap, namespaceRoutingKey(ns.id));
    await deltaLog.setMaintenance(shard, true);
    await rejectsWith(
      service.put(ns, "k", { inline: new Uint8Array(0), size: 0, etag: "" }),
      "read_only",
    );
    await deltaLog.setMaintenance(shard, false);
    await service.put(ns, "k", { inline: new Uint8Array(0), size: 0, etag: "" });
    assert.equal(service.list(ns).keyCount, 1);
  });
});
