import assert from "node:assert/strict";
import { NFS3ERR_BADHANDLE, NFS3ERR_STALE, NfsError } from "./errors.ts";
import {
  fileIdOf,
  type FsNode,
  HandleTable,
  INLINE_PATH_BYTES_MAX,
  NFS3_FHSIZE,
} from "./file_handle.ts";

const NS = new Uint8Array(16).fill(7);

function status(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof NfsError) return e.status;
    throw e;
  }
  return 0;
}

Deno.test("HandleTable carries short paths in the handle, so another table (a restart) reads them", () => {
  const a = new HandleTable();
  const nodes: FsNode[] = [
    { kind: "root" },
    { kind: "dir", ns: NS, path: "" },
    { kind: "dir", ns: NS, path: "a/b" },
    { kind: "object", ns: NS, path: "x".repeat(INLINE_PATH_BYTES_MAX) },
    { kind: "object", ns: NS, path: "名前/ファイル" },
  ];
  for (const node of nodes) {
    const fh = a.encode(node);
    assert.ok(fh.length <= NFS3_FHSIZE);
    assert.deepEqual(new HandleTable().decode(fh), node);
  }
  assert.equal(a.longPaths, 0);
});

Deno.test("HandleTable names long paths by digest; forgotten ones are stale, garbage is a bad handle", () => {
  const table = new HandleTable(2);
  const long = (i: number): FsNode => ({ kind: "object", ns: NS, path: `${i}/${"p".repeat(100)}` });
  const fh0 = table.encode(long(0));
  assert.ok(fh0.length <= NFS3_FHSIZE);
  assert.deepEqual(table.decode(fh0), long(0));
  table.encode(long(1));
  table.encode(long(2));
  assert.equal(table.longPaths, 2);
  assert.equal(status(() => table.decode(fh0)), NFS3ERR_STALE);
  assert.equal(status(() => new HandleTable().decode(table.encode(long(2)))), NFS3ERR_STALE);
  for (
    const bad of [[], [9, 0, 0, 0], [1, 0, 0, 0, 1], [1, 5, 0, 0], [1, 2, 0, 0, ...NS], [
      1,
      1,
      7,
      0,
      ...NS,
    ]]
  ) {
    assert.equal(status(() => table.decode(new Uint8Array(bad))), NFS3ERR_BADHANDLE, `${bad}`);
  }
  const notUtf8 = new Uint8Array([1, 2, 0, 0, ...NS, 0xff]);
  assert.equal(status(() => table.decode(notUtf8)), NFS3ERR_BADHANDLE);
});

Deno.test("fileIdOf() is stable, 63-bit, and tells a directory from a file of the same path", () => {
  const d = fileIdOf({ kind: "dir", ns: NS, path: "a" });
  const o = fileIdOf({ kind: "object", ns: NS, path: "a" });
  assert.notEqual(d, o);
  assert.equal(d, fileIdOf({ kind: "dir", ns: NS, path: "a" }));
  assert.ok(d > 1n && d < 2n ** 63n);
  assert.equal(fileIdOf({ kind: "root" }), 1n);
});
