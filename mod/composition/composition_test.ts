import assert from "node:assert/strict";
import {
  type ChunkRef,
  COMPOSITION_KEY_BYTES_MAX,
  contentProblem,
  keyProblem,
  METADATA_BYTES_MAX,
  METADATA_ENTRIES_MAX,
  metadataProblem,
  posixNameProblem,
  posixTimeOfMs,
  symlinkTargetProblem,
} from "./composition.ts";

const id = (n: number) => new Uint8Array(32).fill(n);
const ref = (offsetBytes: number, lengthBytes: number, n = 1): ChunkRef => ({
  chunkId: id(n),
  offsetBytes,
  lengthBytes,
});

Deno.test("contentProblem() contiguous: refs must tile [0, size) exactly", () => {
  const refs = [ref(0, 10), ref(10, 5, 2)];
  assert.equal(contentProblem({ kind: "chunks", chunkRefs: refs }, 15, "contiguous"), null);
  assert.match(contentProblem({ kind: "chunks", chunkRefs: refs }, 16, "contiguous")!, /cover 15/);
  assert.match(
    contentProblem({ kind: "chunks", chunkRefs: [ref(0, 10), ref(11, 4)] }, 15, "contiguous")!,
    /does not follow/,
  );
  assert.match(
    contentProblem({ kind: "chunks", chunkRefs: [ref(1, 10)] }, 11, "contiguous")!,
    /does not follow/,
  );
  assert.equal(contentProblem({ kind: "chunks", chunkRefs: [] }, 0, "contiguous"), null);
  assert.match(
    contentProblem({ kind: "chunks", chunkRefs: [ref(0, 0)] }, 0, "contiguous")!,
    /length 0/,
  );
  assert.match(
    contentProblem(
      {
        kind: "chunks",
        chunkRefs: [{ chunkId: new Uint8Array(31), offsetBytes: 0, lengthBytes: 1 }],
      },
      1,
      "contiguous",
    )!,
    /32 bytes/,
  );
  assert.equal(contentProblem({ kind: "inline", bytes: new Uint8Array(3) }, 3, "contiguous"), null);
  assert.match(
    contentProblem({ kind: "inline", bytes: new Uint8Array(3) }, 4, "contiguous")!,
    /size is 4/,
  );
});

Deno.test("contentProblem() sparse: refs ascend without overlap inside [0, size), holes allowed", () => {
  assert.equal(
    contentProblem({ kind: "chunks", chunkRefs: [ref(5, 10), ref(20, 5)] }, 100, "sparse"),
    null,
  );
  assert.match(
    contentProblem({ kind: "chunks", chunkRefs: [ref(5, 10), ref(14, 5)] }, 100, "sparse")!,
    /does not follow/,
  );
  assert.match(
    contentProblem({ kind: "chunks", chunkRefs: [ref(95, 10)] }, 100, "sparse")!,
    /past size/,
  );
  assert.equal(contentProblem({ kind: "inline", bytes: new Uint8Array(3) }, 10, "sparse"), null);
  assert.match(
    contentProblem({ kind: "inline", bytes: new Uint8Array(3) }, 2, "sparse")!,
    /more than size/,
  );
  assert.match(contentProblem({ kind: "chunks", chunkRefs: [] }, -1, "sparse")!, /size -1/);
});

Deno.test("keyProblem() allows any UTF-8 up to 1024 bytes except NUL and lone surrogates", () => {
  assert.equal(keyProblem("a/b/c.txt"), null);
  assert.equal(keyProblem("日本/😀"), null);
  assert.equal(keyProblem("x".repeat(COMPOSITION_KEY_BYTES_MAX)), null);
  assert.match(keyProblem("x".repeat(COMPOSITION_KEY_BYTES_MAX + 1))!, /1025 bytes/);
  assert.match(keyProblem("é".repeat(513))!, /1026 bytes/);
  assert.match(keyProblem("")!, /empty/);
  assert.match(keyProblem("a\u0000")!, /NUL/);
  assert.match(keyProblem("\ud800")!, /well-formed/);
});

Deno.test("metadataProblem() bounds entries and total bytes", () => {
  assert.equal(metadataProblem({ a: "1", "content-x": "" }), null);
  const many: Record<string, string> = {};
  for (let i = 0; i <= METADATA_ENTRIES_MAX; i++) many[`k${i}`] = "";
  assert.match(metadataProblem(many)!, /entries/);
  assert.match(metadataProblem({ k: "v".repeat(METADATA_BYTES_MAX) })!, /bytes/);
  assert.match(metadataProblem({ "": "v" })!, /empty/);
});

Deno.test("posixNameProblem() and symlinkTargetProblem() refuse what a directory cannot hold", () => {
  assert.equal(posixNameProblem("file.txt"), null);
  for (const bad of ["", ".", "..", "a/b", "a\u0000", "x".repeat(256)]) {
    assert.notEqual(posixNameProblem(bad), null, JSON.stringify(bad));
  }
  assert.equal(symlinkTargetProblem("../a/b"), null);
  assert.notEqual(symlinkTargetProblem(""), null);
  assert.notEqual(symlinkTargetProblem("x".repeat(4096)), null);
});

Deno.test("posixTimeOfMs() splits milliseconds into seconds and nanoseconds", () => {
  assert.deepEqual(posixTimeOfMs(1_700_000_000_123), { sec: 1_700_000_000, nsec: 123_000_000 });
  assert.deepEqual(posixTimeOfMs(0), { sec: 0, nsec: 0 });
});
