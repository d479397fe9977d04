import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import {
  CompositionError,
  type CompositionService,
  fromUtf8,
  type ListObjectsResult,
  type NamespaceRef,
  utf8,
} from "../composition/mod.ts";
import { compareKeys } from "../log/mod.ts";
import { KEY_VERBATIM_BYTES } from "./_ordered.ts";
import { tenant, withSingleNode } from "./test_stack.ts";

// ---- a reference model of ListObjectsV2, written from the S3 rules ---------------------------

type Pos = { after: "key" | "prefix"; value: Uint8Array } | null;

function startsWith(a: Uint8Array, p: Uint8Array): boolean {
  return a.length >= p.length && p.every((b, i) => a[i] === b);
}

function indexOf(a: Uint8Array, d: Uint8Array, from: number): number {
  for (let i = from; i + d.length <= a.length; i++) {
    if (d.every((b, j) => a[i + j] === b)) return i;
  }
  return -1;
}

interface ModelPage {
  keys: string[];
  prefixes: string[];
  elements: { kind: "key" | "prefix"; value: Uint8Array }[];
  isTruncated: boolean;
}

function modelList(
  sorted: Uint8Array[],
  prefix: string,
  delimiter: string,
  pos: Pos,
  max: number,
): ModelPage {
  const p = utf8(prefix);
  const d = utf8(delimiter);
  const elements: { kind: "key" | "prefix"; value: Uint8Array }[] = [];
  for (const key of sorted) {
    if (!startsWith(key, p)) continue;
    if (pos?.after === "key" && compareKeys(key, pos.value) <= 0) continue;
    if (
      pos?.after === "prefix" && (compareKeys(key, pos.value) <= 0 || startsWith(key, pos.value))
    ) continue;
    const at = d.length === 0 ? -1 : indexOf(key, d, p.length);
    const element = at < 0
      ? { kind: "key" as const, value: key }
      : { kind: "prefix" as const, value: key.slice(0, at + d.length) };
    // A common prefix at or before a key position was listed (or skipped) already.
    if (
      element.kind === "prefix" && pos?.after === "key" &&
      compareKeys(element.value, pos.value) <= 0
    ) continue;
    const last = elements[elements.length - 1];
    if (
      last?.kind === "prefix" && element.kind === "prefix" &&
      compareKeys(last.value, element.value) === 0
    ) {
      continue;
    }
    elements.push(element);
  }
  const page = max === 0 ? [] : elements.slice(0, max);
  const text = (b: Uint8Array) => fromUtf8(b)!;
  return {
    keys: page.filter((e) => e.kind === "key").map((e) => text(e.value)),
    prefixes: page.filter((e) => e.kind === "prefix").map((e) => text(e.value)),
    elements: page,
    isTruncated: max > 0 && elements.length > max,
  };
}

// ---- helpers ---------------------------------------------------------------------------------

const ALPHABET = ["a", "b", "c", "/", "-", "é", "日", "😀", "/a", "b/"];

function randomKey(prng: Prng): string {
  let s = "";
  for (let i = 1 + prng.nextInt(6); i > 0; i--) s += ALPHABET[prng.nextInt(ALPHABET.length)];
  return s;
}

/** Keys long enough to share their first KEY_VERBATIM_BYTES bytes, differing only after. */
function longKeys(prng: Prng): string[] {
  const stem = "L/" + "x".repeat(KEY_VERBATIM_BYTES - 2);
  const out = [stem, stem.slice(0, -1) + "y"];
  for (let i = 0; i < 12; i++) out.push(stem + randomKey(prng) + (i % 3 === 0 ? "/z" : ""));
  out.push("L/" + "x".repeat(KEY_VERBATIM_BYTES + 500));
  return out;
}

async function putAll(
  service: CompositionService,
  ns: NamespaceRef,
  keys: string[],
): Promise<void> {
  for (let i = 0; i < keys.length; i += 32) {
    await Promise.all(
      keys.slice(i, i + 32).map((key) =>
        service.put(ns, key, {
          inline: utf8(key).subarray(0, 8),
          size: Math.min(8, utf8(key).length),
          etag: `e${key.length}`,
        })
      ),
    );
  }
}

function sortedBytes(keys: Iterable<string>): Uint8Array[] {
  return [...new Set(keys)].map(utf8).sort(compareKeys);
}

function samePage(view: ListObjectsResult, model: ModelPage, what: string): void {
  assert.deepEqual(view.objects.map((o) => o.key), model.keys, `${what}: keys`);
  assert.deepEqual(view.commonPrefixes, model.prefixes, `${what}: prefixes`);
  assert.equal(view.isTruncated, model.isTruncated, `${what}: truncated`);
  assert.equal(view.keyCount, model.keys.length + model.prefixes.length, `${what}: keyCount`);
  assert.equal(view.nextContinuationToken !== null, model.isTruncated, `${what}: token`);
  if (model.isTruncated) {
    assert.equal(view.nextMarker, fromUtf8(model.elements[model.elements.length - 1]!.value));
  }
}

// ---- tests -----------------------------------------------------------------------------------

Deno.test("BucketView.list() pages exactly like the ListObjectsV2 model (prefix, delimiter, tokens, long keys)", async () => {
  await withSingleNode(async ({ service }) => {
    const prng = new Prng(42);
    const ns = await service.createNamespace(tenant(1), "listing", "bucket");
    const keys = [...Array.from({ length: 220 }, () => randomKey(prng)), ...longKeys(prng)];
    await putAll(service, ns, keys);
    const sorted = sortedBytes(keys);
    assert.equal(service.list(ns, { maxKeys: 1000 }).keyCount, sorted.length);

    const prefixes = [
      "",
      "a",
      "a/",
      "b",
      "日",
      "😀",
      "L/",
      "L/" + "x".repeat(KEY_VERBATIM_BYTES - 2),
      "zzz",
    ];
    const delimiters = ["", "/", "b", "/a", "é"];
    let pages = 0;
    for (const prefix of prefixes) {
      for (const delimiter of delimiters) {
        for (const maxKeys of [1, 3, 7, 1000]) {
          let token: string | undefined;
          let pos: Pos = null;
          for (let page = 0;; page++) {
            const view = service.list(ns, { prefix, delimiter, maxKeys, continuationToken: token });
            const model = modelList(sorted, prefix, delimiter, pos, maxKeys);
            samePage(
              view,
              model,
              `prefix=${JSON.stringify(prefix)} delimiter=${
                JSON.stringify(delimiter)
              } max=${maxKeys} page=${page}`,
            );
            pages++;
            if (!view.isTruncated) break;
            token = view.nextContinuationToken!;
            const last = model.elements[model.elements.length - 1]!;
            pos = { after: last.kind, value: last.value };
            assert.ok(page < 500, "pagination does not end");
          }
        }
      }
    }
    assert.ok(pages > 500);
  });
});

Deno.test("BucketView.list() honours startAfter (and v1 markers that name a common prefix)", async () => {
  await withSingleNode(async ({ service }) => {
    const prng = new Prng(7);
    const ns = await service.createNamespace(tenant(1), "markers", "bucket");
    const keys = Array.from({ length: 120 }, () => randomKey(prng));
    await putAll(service, ns, keys);
    const sorted = sortedBytes(keys);
    for (let i = 0; i < 60; i++) {
      const startAfter = i % 5 === 0 ? "a/" : randomKey(prng);
      const delimiter = ["", "/", "b"][i % 3]!;
      const maxKeys = 1 + prng.nextInt(20);
      const view = service.list(ns, { startAfter, delimiter, maxKeys });
      samePage(
        view,
        modelList(sorted, "", delimiter, { after: "key", value: utf8(startAfter) }, maxKeys),
        `startAfter=${startAfter}`,
      );
      if (view.isTruncated) {
        // ListObjects v1: the next request's marker is nextMarker.
        const next = service.list(ns, { startAfter: view.nextMarker!, delimiter, maxKeys });
        const seen = new Set([...view.objects.map((o) => o.key), ...view.commonPrefixes]);
        for (const e of [...next.objects.map((o) => o.key), ...next.commonPrefixes]) {
          assert.ok(!seen.has(e), `${e} listed twice across v1 pages`);
        }
      }
    }
    const zero = service.list(ns, { maxKeys: 0 });
    assert.deepEqual([zero.keyCount, zero.isTruncated, zero.nextContinuationToken], [
      0,
      false,
      null,
    ]);
  });
});

Deno.test("BucketView.listUploads() orders by key then initiation, with key and upload-id markers", async () => {
  await withSingleNode(async ({ service }) => {
    const prng = new Prng(9);
    const ns = await service.createNamespace(tenant(1), "mpu", "bucket");
    const keys = Array.from({ length: 25 }, () => randomKey(prng));
    keys.push(
      "L/" + "x".repeat(KEY_VERBATIM_BYTES + 5),
      "L/" + "x".repeat(KEY_VERBATIM_BYTES + 5) + "a",
    );
    const uploads: { key: string; uploadId: string }[] = [];
    for (const key of keys) {
      for (let n = 1 + prng.nextInt(2); n > 0; n--) {
        uploads.push({ key, uploadId: (await service.startUpload(ns, key)).uploadId });
      }
    }
    const expected = [...uploads].sort((a, b) =>
      compareKeys(utf8(a.key), utf8(b.key)) || (a.uploadId < b.uploadId ? -1 : 1)
    );
    // Same key: ids ascend with initiation.
    for (let i = 1; i < uploads.length; i++) {
      if (uploads[i]!.key === uploads[i - 1]!.key) {
        assert.ok(uploads[i]!.uploadId > uploads[i - 1]!.uploadId);
      }
    }
    const all = service.listUploads(ns);
    assert.deepEqual(
      all.uploads.map((u) => [u.key, u.uploadId]),
      expected.map((u) => [u.key, u.uploadId]),
    );
    for (const max of [1, 2, 5]) {
      const got: [string, string][] = [];
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      for (;;) {
        const page = service.listUploads(ns, { maxUploads: max, keyMarker, uploadIdMarker });
        got.push(...page.uploads.map((u) => [u.key, u.uploadId] as [string, string]));
        if (!page.isTruncated) break;
        keyMarker = page.nextKeyMarker!;
        uploadIdMarker = page.nextUploadIdMarker!;
      }
      assert.deepEqual(got, expected.map((u) => [u.key, u.uploadId]), `max=${max}`);
    }
    // A key marker alone skips every upload of that key.
    const key = expected[3]!.key;
    const after = service.listUploads(ns, { keyMarker: key });
    assert.ok(after.uploads.every((u) => compareKeys(utf8(u.key), utf8(key)) > 0));
    // Delimiters roll uploads up like keys.
    const rolled = service.listUploads(ns, { delimiter: "/" });
    const modelPrefixes = modelList(sortedBytes(keys), "", "/", null, 1000).prefixes;
    assert.deepEqual(rolled.commonPrefixes, modelPrefixes);
    assert.throws(
      () => service.listUploads(ns, { keyMarker: "a", uploadIdMarker: "not-hex" }),
      (e) => e instanceof CompositionError && e.code === "invalid_argument",
    );
  });
});
