import assert from "node:assert/strict";
import type { GetObjectResult, NamespaceRef } from "../composition/mod.ts";
import {
  type FileReader,
  type FileReaders,
  FUSE_READERS_MAX,
  HandleStreams,
} from "./file_reads.ts";

const REF: NamespaceRef = { tenantId: new Uint8Array(16), id: new Uint8Array(16) };

/** Objects as byte arrays; counts what the handle streams ask for. */
class Objects implements FileReaders {
  readonly bytes = new Map<string, Uint8Array>();
  opened = 0;
  ranged = 0;
  failing = new Set<string>();

  openReader(_ns: NamespaceRef, key: string): Promise<FileReader> {
    this.opened++;
    // The version at open: later replacements are not seen through this reader.
    const version = this.bytes.get(key);
    if (version === undefined) return Promise.reject(new Error("no such object"));
    return Promise.resolve({
      read: (offset: number, count: number) => {
        if (this.failing.has(key)) return Promise.reject(new Error("the version is gone"));
        return Promise.resolve(version.slice(offset, offset + count));
      },
    });
  }

  getObject(): Promise<GetObjectResult> {
    this.ranged++;
    return Promise.reject(new Error("streams are not under test here"));
  }
}

function filled(n: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

Deno.test("random reads of a handle use one reader opened at the first such read", async () => {
  const objects = new Objects();
  const data = filled(1 << 16, 1);
  objects.bytes.set("f", data);
  const streams = new HandleStreams(objects, objects);
  for (const at of [40_000, 8_192, 60_000, 123]) {
    const got = await streams.readAt(1n, 7n, REF, "f", at, 4096);
    assert.deepEqual(got, data.slice(at, at + 4096));
  }
  assert.deepEqual(objects.opened, 1);
  assert.deepEqual(streams.readerHits, 4);
  // Past the end: what there is, then nothing.
  assert.deepEqual((await streams.readAt(1n, 7n, REF, "f", (1 << 16) - 10, 4096))?.length, 10);
  assert.deepEqual((await streams.readAt(1n, 7n, REF, "f", 1 << 17, 4096))?.length, 0);
  // Another handle of the same file has its own reader.
  await streams.readAt(2n, 7n, REF, "f", 0, 16);
  assert.deepEqual(objects.opened, 2);
  assert.deepEqual(streams.readers, 2);
});

Deno.test("a write, a close or a failed read drops the reader; the next read opens anew", async () => {
  const objects = new Objects();
  objects.bytes.set("f", filled(8192, 1));
  const streams = new HandleStreams(objects, objects);
  await streams.readAt(1n, 7n, REF, "f", 100, 10);
  const replaced = filled(8192, 2);
  objects.bytes.set("f", replaced);
  // Close-to-open: the open handle still reads the version it opened...
  assert.deepEqual(
    await streams.readAt(1n, 7n, REF, "f", 100, 10),
    filled(8192, 1).slice(100, 110),
  );
  // ...until the file is written through the mount.
  streams.changed(7n);
  assert.deepEqual(await streams.readAt(1n, 7n, REF, "f", 100, 10), replaced.slice(100, 110));
  assert.deepEqual(objects.opened, 2);
  streams.close(1n);
  assert.deepEqual(streams.readers, 0);
  await streams.readAt(1n, 7n, REF, "f", 0, 10);
  assert.deepEqual(objects.opened, 3);
  // A reader whose version is gone answers null (the caller reads a range) and is dropped.
  objects.failing.add("f");
  assert.deepEqual(await streams.readAt(1n, 7n, REF, "f", 0, 10), null);
  assert.deepEqual(streams.readers, 0);
  objects.failing.clear();
  assert.deepEqual(await streams.readAt(1n, 7n, REF, "f", 0, 4), replaced.slice(0, 4));
  // Without a source of readers there is nothing to read through.
  assert.deepEqual(await new HandleStreams(objects).readAt(1n, 7n, REF, "f", 0, 4), null);
});

Deno.test("readers held are bounded by FUSE_READERS_MAX", async () => {
  const objects = new Objects();
  objects.bytes.set("f", filled(64, 1));
  const streams = new HandleStreams(objects, objects);
  for (let h = 1; h <= FUSE_READERS_MAX + 5; h++) {
    await streams.readAt(BigInt(h), 7n, REF, "f", 1, 8);
  }
  assert.deepEqual(streams.readers, FUSE_READERS_MAX);
});
