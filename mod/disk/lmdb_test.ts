import assert from "node:assert/strict";
import { AssertionError, Prng } from "../base/mod.ts";
import {
  injectCommitFailure,
  KV_PAGE_KEY_BYTES,
  KV_REKEY_BATCH_RECORDS,
  type KvEnv,
  KvError,
  kvFailureKind,
  type KvPageKeys,
  LMDB_ENV_VARS,
  LMDB_SYS_PERMISSIONS,
  lmdbPermissionFlags,
  openKvEnv,
} from "./lmdb.ts";

const NODE_MODULES_DIR = new URL("../../node_modules", import.meta.url).pathname.replace(
  /\/$/,
  "",
);
const PROJECT_DIR = new URL("../..", import.meta.url).pathname;

async function withEnv(
  fn: (env: KvEnv, dir: string) => Promise<void>,
  mapSizeBytes = 64 << 20,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-" });
  const env = await openKvEnv({ path: dir, pageKeys: null, mapSizeBytes });
  try {
    await fn(env, dir);
  } finally {
    await env.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function u64(n: number): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n));
  return bytes;
}

Deno.test("KvTable.getSync() returns committed bytes exactly, as plain Uint8Arrays", async () => {
  await withEnv(async (env) => {
    const t = env.table("t");
    const backing = Uint8Array.of(9, 8, 7, 6);
    await env.transaction((txn) => {
      txn.put(t, Uint8Array.of(1), Uint8Array.of(1, 2, 3));
      txn.put(t, Uint8Array.of(2), new Uint8Array(0));
      txn.put(t, Uint8Array.of(3), backing.subarray(1, 3));
      txn.put(t, Uint8Array.of(4), new Uint8Array(100_000).fill(0xab));
    });
    const one = t.getSync(Uint8Array.of(1))!;
    assert.equal(Object.getPrototypeOf(one), Uint8Array.prototype);
    assert.deepEqual(one, Uint8Array.of(1, 2, 3));
    assert.deepEqual(t.getSync(Uint8Array.of(2)), new Uint8Array(0));
    assert.deepEqual(t.getSync(Uint8Array.of(3)), Uint8Array.of(8, 7));
    assert.deepEqual(t.getSync(Uint8Array.of(4)), new Uint8Array(100_000).fill(0xab));
    assert.equal(t.getSync(Uint8Array.of(5)), undefined);
    // A returned value is the caller's: a later read is not affected by mutating it.
    one[0] = 99;
    assert.deepEqual(t.getSync(Uint8Array.of(1)), Uint8Array.of(1, 2, 3));
  });
});

Deno.test("KvTable.range() iterates big-endian number keys in numeric order, with bounds", async () => {
  await withEnv(async (env) => {
    const t = env.table("t");
    const prng = new Prng(5);
    const numbers = Array.from({ length: 500 }, () => prng.nextInt(2 ** 32) * 1000 + 7);
    numbers.push(0, 255, 256, 65535, 65536, 2 ** 40, Number.MAX_SAFE_INTEGER);
    await env.transaction((txn) => {
      for (const n of numbers) txn.put(t, u64(n), Uint8Array.of(n % 251));
    });
    const sorted = [...new Set(numbers)].sort((a, b) => a - b);
    const keysOf = (it: Iterable<{ key: Uint8Array }>): number[] =>
      [...it].map((e) => Number(new DataView(e.key.buffer, e.key.byteOffset).getBigUint64(0)));
    assert.deepEqual(keysOf(t.range()), sorted);
    const lo = sorted[10]!;
    const hi = sorted[20]!;
    assert.deepEqual(keysOf(t.range({ start: u64(lo), end: u64(hi) })), sorted.slice(10, 20));
    assert.deepEqual(
      keysOf(t.range({ start: u64(lo), end: u64(hi), reverse: true })),
      sorted.slice(10, 20).reverse(),
    );
    assert.deepEqual(keysOf(t.range({ reverse: true, limit: 3 })), sorted.slice(-3).reverse());
    assert.deepEqual(keysOf(t.range({ start: u64(lo + 1), limit: 2 })), sorted.slice(11, 13));
    assert.deepEqual(keysOf(t.range({ end: u64(sorted[2]!), reverse: true })), [
      sorted[1]!,
      sorted[0]!,
    ]);
    assert.deepEqual(keysOf(t.range({ start: u64(hi), end: u64(lo) })), []);
    for (const { key, value } of t.range({ limit: 50 })) {
      const n = Number(new DataView(key.buffer, key.byteOffset).getBigUint64(0));
      assert.deepEqual(value, Uint8Array.of(n % 251));
    }
  });
});

Deno.test("KvEnv.transaction() applies its writes in order, across tables, all or none", async () => {
  await withEnv(async (env) => {
    const a = env.table("a");
    const b = env.table("b");
    const k = Uint8Array.of(1);
    await env.transaction((txn) => {
      txn.put(a, k, Uint8Array.of(1));
      txn.delete(a, k);
      txn.delete(b, k);
      txn.put(b, k, Uint8Array.of(2));
      txn.delete(a, Uint8Array.of(42)); // deleting a missing key is not an error
    });
    assert.equal(a.getSync(k), undefined);
    assert.deepEqual(b.getSync(k), Uint8Array.of(2));
    // A throwing transaction function writes nothing.
    await assert.rejects(
      env.transaction((txn) => {
        txn.put(a, k, Uint8Array.of(3));
        throw new Error("boom");
      }),
      /boom/,
    );
    assert.equal(a.getSync(k), undefined);
    // Empty transactions resolve.
    await env.transaction(() => {});
  });
});

Deno.test("KvEnv.transaction() calls in one event turn are each applied", async () => {
  await withEnv(async (env) => {
    const t = env.table("t");
    await Promise.all(
      Array.from(
        { length: 50 },
        (_, i) => env.transaction((txn) => txn.put(t, u64(i), u64(i * i))),
      ),
    );
    assert.equal([...t.range()].length, 50);
    assert.deepEqual(t.getSync(u64(7)), u64(49));
  });
});

Deno.test("KvEnv.transaction() grows the map past mapSizeBytes instead of failing", async () => {
  await withEnv(async (env) => {
    const t = env.table("t");
    const big = new Prng(1).bytes(4 << 20);
    await env.transaction((txn) => txn.put(t, Uint8Array.of(2), big));
    assert.deepEqual(t.getSync(Uint8Array.of(2)), big);
  }, 1 << 20);
});

Deno.test("KvTxn asserts on bad keys and on use after its function returned", async () => {
  await withEnv(async (env) => {
    const t = env.table("t");
    await assert.rejects(
      env.transaction((txn) => txn.put(t, new Uint8Array(0), Uint8Array.of(1))),
      AssertionError,
    );
    await assert.rejects(
      env.transaction((txn) => txn.put(t, new Uint8Array(512), Uint8Array.of(1))),
      AssertionError,
    );
    let leaked: { delete(t: unknown, k: Uint8Array): void } | null = null;
    await env.transaction((txn) => {
      leaked = txn as never;
    });
    assert.throws(() => leaked!.delete(t, Uint8Array.of(1)), AssertionError);
  });
});

Deno.test("openKvEnv() keeps data across close and reopen, and refuses a second open", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv.dotted-" });
  try {
    const env = await openKvEnv({ path: dir, pageKeys: null, mapSizeBytes: 8 << 20 });
    await env.transaction((txn) => txn.put(env.table("t"), Uint8Array.of(7), Uint8Array.of(8)));
    await assert.rejects(openKvEnv({ path: dir, pageKeys: null, mapSizeBytes: 8 << 20 }), KvError);
    await env.close();
    assert.throws(() => env.table("t"), AssertionError);
    const again = await openKvEnv({ path: dir, pageKeys: null, mapSizeBytes: 8 << 20 });
    assert.deepEqual(again.table("t").getSync(Uint8Array.of(7)), Uint8Array.of(8));
    await again.close();
    // The directory holds the environment (a dotted name is not taken for a file).
    assert.ok((await Deno.stat(`${dir}/data.mdb`)).isFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Starts this file as a sandboxed child that opens an env, writes and reads back. */
async function runSandboxed(
  dir: string,
  env: readonly string[],
  sys: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const flags = lmdbPermissionFlags({ nodeModulesDir: NODE_MODULES_DIR, dataDirs: [dir] })
    .map((f) =>
      f.startsWith("--allow-env=")
        ? `--allow-env=${env.join(",")}`
        : f.startsWith("--allow-sys=")
        ? `--allow-sys=${sys.join(",")}`
        : f
    );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--quiet", ...flags, new URL(import.meta.url).pathname, dir],
    cwd: PROJECT_DIR,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

Deno.test({
  name: "lmdb runs under exactly LMDB_ENV_VARS, LMDB_SYS_PERMISSIONS and scoped file/FFI access",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-sandbox-" });
    try {
      const ok = await runSandboxed(dir, LMDB_ENV_VARS, LMDB_SYS_PERMISSIONS);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stdout.trim(), "sandboxed lmdb ok");
      // Every listed name is needed: without any one of them the open fails.
      for (const name of LMDB_ENV_VARS) {
        const run = await runSandboxed(
          dir,
          LMDB_ENV_VARS.filter((v) => v !== name),
          LMDB_SYS_PERMISSIONS,
        );
        assert.notEqual(run.code, 0, `still works without env ${name}`);
        assert.match(run.stderr, new RegExp(`Requires env access to "${name}"`), run.stderr);
      }
      for (const kind of LMDB_SYS_PERMISSIONS) {
        const run = await runSandboxed(
          dir,
          LMDB_ENV_VARS,
          LMDB_SYS_PERMISSIONS.filter((s) => s !== kind),
        );
        assert.notEqual(run.code, 0, `still works without sys ${kind}`);
        assert.match(run.stderr, new RegExp(`Requires sys access to "${kind}"`), run.stderr);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** Page keys kept raw in `<dir>/test.key` (the real source seals them: mod/keys). */
class FilePageKeys implements KvPageKeys {
  readonly keyFile = "test.key";
  created = 0;
  async keyFor(dir: string): Promise<Uint8Array> {
    try {
      return await Deno.readFile(`${dir}/test.key`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const key = crypto.getRandomValues(new Uint8Array(KV_PAGE_KEY_BYTES));
    await this.store(dir, key);
    this.created++;
    return key;
  }
  async store(dir: string, key: Uint8Array): Promise<void> {
    await Deno.writeFile(`${dir}/test.key`, key, { mode: 0o600 });
  }
  async destroy(dir: string): Promise<void> {
    await Deno.remove(`${dir}/test.key`).catch(() => {});
  }
}

const text = (s: string) => new TextEncoder().encode(s);

function includes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

async function filesUnder(dir: string): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await filesUnder(path));
    else if (e.isFile) out.push(await Deno.readFile(path));
  }
  return out;
}

Deno.test("openKvEnv() with a page key keeps keys and values out of data.mdb; without one they are there", async () => {
  const root = await Deno.makeTempDir({ prefix: "kiseki-kv-page-" });
  try {
    const canaryKey = text("kv-canary-key-7f3a9c");
    const canaryValue = text("kv-canary-value-19be44");
    for (const encrypted of [true, false]) {
      const dir = `${root}/${encrypted}`;
      const env = await openKvEnv({
        path: dir,
        pageKeys: encrypted ? new FilePageKeys() : null,
        mapSizeBytes: 8 << 20,
      });
      const t = env.table("t");
      await env.transaction((txn) => txn.put(t, canaryKey, canaryValue));
      assert.deepEqual(t.getSync(canaryKey), canaryValue);
      await env.close();
      const data = await Deno.readFile(`${dir}/data.mdb`);
      assert.equal(includes(data, canaryKey), !encrypted, `key in clear, encrypted=${encrypted}`);
      assert.equal(includes(data, canaryValue), !encrypted);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("reads share a snapshot, yet every read after a commit resolved sees it (plain and page-encrypted)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-snapshot-" });
  try {
    for (const pageKeys of [null, new FilePageKeys()]) {
      const env = await openKvEnv({
        path: `${dir}/${pageKeys === null ? "plain" : "sealed"}`,
        pageKeys,
        mapSizeBytes: 8 << 20,
      });
      try {
        const a = env.table("a");
        for (let round = 0; round < 50; round++) {
          await env.transaction((txn) => txn.put(a, text("k"), text(`v${round}`)));
          // Read in the same turn as the commit resolved, and in later turns.
          assert.deepEqual(a.getSync(text("k")), text(`v${round}`), `round ${round}`);
          await new Promise((r) => setTimeout(r, 0));
          assert.deepEqual([...a.range()].map((e) => e.value), [text(`v${round}`)]);
        }
        // A table opened while a snapshot is held is readable and writable at once.
        assert.deepEqual(a.getSync(text("k")), text("v49"));
        const b = env.table("b");
        assert.deepEqual([...b.range()], []);
        assert.equal(b.getSync(text("x")), undefined);
        await env.transaction((txn) => txn.put(b, text("x"), text("y")));
        assert.deepEqual(b.getSync(text("x")), text("y"));
        // A deletion is seen as soon as its commit resolved, too.
        await env.transaction((txn) => txn.delete(a, text("k")));
        assert.equal(a.getSync(text("k")), undefined);
        // Later turns see the latest commit too.
        await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(b.getSync(text("x")), text("y"));
      } finally {
        await env.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Why no tmpfs can be mounted here, or null (root on Linux). */
function cannotMount(): string | null {
  // The sandboxed child (see the end of this file) runs this module too, with no such rights.
  if (import.meta.main) return "sandboxed child";
  if (Deno.build.os !== "linux" || Deno.uid() !== 0) return "mounting needs root";
  return null;
}

/** Mounts a 3 MiB tmpfs on a fresh directory; the caller unmounts it. */
async function smallFilesystem(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-full-" });
  const out = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=3m", "tmpfs", dir],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `mount tmpfs: ${new TextDecoder().decode(out.stderr).trim()}`);
  return dir;
}

const noMount = cannotMount();

Deno.test({
  name:
    "a commit the filesystem has no room for fails its caller with the cause, and the process lives" +
    (noMount === null ? "" : ` [not applicable: ${noMount}]`),
  ignore: noMount !== null,
  async fn() {
    const dir = await smallFilesystem();
    try {
      for (const pageKeys of [null, new FilePageKeys()]) {
        const path = `${dir}/${pageKeys === null ? "plain" : "sealed"}`;
        const env = await openKvEnv({ path, pageKeys, mapSizeBytes: 1 << 20 });
        const t = env.table("t");
        let failure: unknown = null;
        for (let i = 0; i < 400 && failure === null; i++) {
          await env.transaction((txn) => {
            for (let j = 0; j < 10; j++) txn.put(t, text(`k${i}-${j}`), new Uint8Array(4000));
          }).catch((e) => (failure = e));
        }
        assert.ok(failure instanceof KvError, `the filesystem filled: ${failure}`);
        assert.match(String(failure), /lmdb commit in .* failed: /);
        assert.doesNotMatch(String(failure), /see commitError/, "the cause is named");
        // Every echo of the failure settles within these turns; an unhandled one fails the test.
        await new Promise((r) => setTimeout(r, 300));
        assert.ok(t.getSync(text("k0-0")) !== undefined, "what was committed still reads");
        await env.close().catch(() => {});
        await Deno.remove(path, { recursive: true });
      }
    } finally {
      await new Deno.Command("umount", { args: [dir] }).output();
      await Deno.remove(dir).catch(() => {});
    }
  },
});

Deno.test("KvEnv.rekey() keeps every record under a new page key and destroys the old one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-rekey-" });
  const keys = new FilePageKeys();
  try {
    let env = await openKvEnv({ path: `${dir}/env`, pageKeys: keys, mapSizeBytes: 8 << 20 });
    const a = env.table("a");
    const b = env.table("b");
    const count = KV_REKEY_BATCH_RECORDS + 17; // more than one copy batch
    const keyOf = (i: number) => text(`k${String(i).padStart(6, "0")}`);
    await env.transaction((txn) => {
      for (let i = 0; i < count; i++) txn.put(a, keyOf(i), text(`v${i}`));
      txn.put(b, text("gone"), text("deleted-record-canary"));
    });
    const oldKey = await Deno.readFile(`${dir}/env/test.key`);
    // Other files in the environment's directory (keys/ holds node.kek) are left alone.
    await Deno.writeTextFile(`${dir}/env/node.kek`, "not lmdb's");
    await env.transaction((txn) => txn.delete(b, text("gone")));
    // A write racing the rekey waits for it and lands in the new environment.
    const racing = env.transaction((txn) => txn.put(b, text("late"), text("after")));
    await env.rekey();
    await racing;
    assert.equal([...a.range()].length, count);
    assert.deepEqual(a.getSync(keyOf(count - 1)), text(`v${count - 1}`));
    assert.deepEqual(b.getSync(text("late")), text("after"));
    assert.equal(b.getSync(text("gone")), undefined);
    const newKey = await Deno.readFile(`${dir}/env/test.key`);
    assert.notDeepEqual(newKey, oldKey);
    await env.close();
    const entries = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(entries, ["env"], "no .rekey directory left");
    assert.equal(await Deno.readTextFile(`${dir}/env/node.kek`), "not lmdb's");
    env = await openKvEnv({ path: `${dir}/env`, pageKeys: keys, mapSizeBytes: 8 << 20 });
    assert.equal([...env.table("a").range()].length, count);
    await env.close();
    // The old page key (the only way to read the old pages, free ones included) is gone.
    for (const bytes of await filesUnder(dir)) assert.ok(!includes(bytes, oldKey));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openKvEnv() finishes a rekey interrupted mid-swap, and drops one interrupted mid-copy", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-rekey-crash-" });
  const keys = new FilePageKeys();
  const options = { pageKeys: keys, mapSizeBytes: 8 << 20 };
  const write = async (path: string, value: string) => {
    const env = await openKvEnv({ path, ...options });
    await env.transaction((txn) => txn.put(env.table("t"), text("k"), text(value)));
    await env.close();
  };
  const read = async () => {
    const env = await openKvEnv({ path: `${dir}/env`, ...options });
    const value = new TextDecoder().decode(env.table("t").getSync(text("k")));
    await env.close();
    return value;
  };
  try {
    await write(`${dir}/env`, "old");
    await Deno.writeTextFile(`${dir}/env/node.kek`, "kept");
    // A copy without its completion marker: dropped, the old environment stays.
    await write(`${dir}/env.rekey`, "new");
    assert.equal(await read(), "old");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["env"]);
    // A complete copy, and the crash after steps 1 and 2 (old key and file moved aside).
    await write(`${dir}/env.rekey`, "new");
    await Deno.writeFile(`${dir}/env.rekey/complete`, new Uint8Array(0));
    await Deno.mkdir(`${dir}/env.rekey/old`);
    for (const f of ["test.key", "data.mdb"]) {
      await Deno.rename(`${dir}/env/${f}`, `${dir}/env.rekey/old/${f}`);
    }
    assert.equal(await read(), "new");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["env"]);
    assert.equal(await Deno.readTextFile(`${dir}/env/node.kek`), "kept");
    // The crash after step 3 only (new file in place, new key not yet).
    await write(`${dir}/env.rekey`, "newer");
    await Deno.writeFile(`${dir}/env.rekey/complete`, new Uint8Array(0));
    await Deno.mkdir(`${dir}/env.rekey/old`);
    await Deno.rename(`${dir}/env/test.key`, `${dir}/env.rekey/old/test.key`);
    await Deno.rename(`${dir}/env/data.mdb`, `${dir}/env.rekey/old/data.mdb`);
    await Deno.rename(`${dir}/env.rekey/data.mdb`, `${dir}/env/data.mdb`);
    assert.equal(await read(), "newer");
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["env"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openKvEnv() with page keys encrypts an environment written without one, in place", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-upgrade-" });
  const canary = text("plaintext-era-canary-5e1f0a");
  try {
    const plain = await openKvEnv({ path: `${dir}/env`, pageKeys: null, mapSizeBytes: 8 << 20 });
    await plain.transaction((txn) => txn.put(plain.table("t"), canary, canary));
    await plain.close();
    assert.ok(includes(await Deno.readFile(`${dir}/env/data.mdb`), canary));
    const keys = new FilePageKeys();
    const env = await openKvEnv({ path: `${dir}/env`, pageKeys: keys, mapSizeBytes: 8 << 20 });
    assert.deepEqual(env.table("t").getSync(canary), canary);
    await env.close();
    for (const bytes of await filesUnder(dir)) assert.ok(!includes(bytes, canary));
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["env"]);
    const again = await openKvEnv({ path: `${dir}/env`, pageKeys: keys, mapSizeBytes: 8 << 20 });
    assert.deepEqual(again.table("t").getSync(canary), canary);
    await again.close();
    // Without its key, an encrypted file is refused (lmdb itself would crash on it).
    await Deno.rename(`${dir}/env/test.key`, `${dir}/lost.key`);
    await assert.rejects(
      openKvEnv({ path: `${dir}/env`, pageKeys: keys, mapSizeBytes: 8 << 20 }),
      (e: unknown) => e instanceof KvError && /page key was lost/.test(e.message),
    );
    await assert.rejects(
      openKvEnv({ path: `${dir}/env`, pageKeys: null, mapSizeBytes: 8 << 20 }),
      (e: unknown) => e instanceof KvError && /page-encrypted/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openKvEnv() with legacyPageKeys rewrites an environment an earlier version page-encrypted, unencrypted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-legacy-" });
  try {
    const keys = new FilePageKeys();
    const sealed = await openKvEnv({ path: `${dir}/env`, pageKeys: keys, mapSizeBytes: 8 << 20 });
    const marker = text("legacy-record-0123456789");
    await sealed.transaction((txn) => {
      for (let i = 0; i < 3000; i++) txn.put(sealed.table("t"), text(`k${i}`), marker);
    });
    await sealed.close();
    const plain = await openKvEnv({
      path: `${dir}/env`,
      pageKeys: null,
      legacyPageKeys: keys,
      mapSizeBytes: 8 << 20,
    });
    assert.equal([...plain.table("t").range()].length, 3000);
    assert.deepEqual(plain.table("t").getSync(text("k7")), marker);
    await plain.close();
    assert.ok(includes(await Deno.readFile(`${dir}/env/data.mdb`), marker), "now unencrypted");
    assert.equal(await fileExistsIn(`${dir}/env/test.key`), false, "the old key is destroyed");
    // Opened again (with or without the legacy keys) it stays as it is.
    const again = await openKvEnv({
      path: `${dir}/env`,
      pageKeys: null,
      legacyPageKeys: keys,
      mapSizeBytes: 8 << 20,
    });
    assert.equal([...again.table("t").range()].length, 3000);
    await again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function fileExistsIn(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("kvFailureKind() tells a full filesystem and a damaged environment from the rest", () => {
  assert.equal(kvFailureKind("No space left on device"), "space");
  assert.equal(kvFailureKind("MDB_MAP_FULL: Environment mapsize limit reached"), "space");
  assert.equal(
    kvFailureKind(
      "MDB_BAD_TXN: Transaction must abort, has a child, or is invalid: freelist " +
        "entry 7 had bad/duplicate entries",
    ),
    "damaged",
  );
  assert.equal(
    kvFailureKind(
      "MDB_NOTFOUND: No matching key/data pair found: Attempting to delete free-space record",
    ),
    "damaged",
  );
  assert.equal(kvFailureKind("Input/output error"), "other");
});

Deno.test("a commit failed as damaged rebuilds the environment from its records, and writes go on (plain and page-encrypted)", async () => {
  for (const encrypted of [false, true]) {
    const dir = await Deno.makeTempDir({ prefix: "kiseki-kv-damaged-" });
    try {
      const env = await openKvEnv({
        path: `${dir}/env`,
        pageKeys: encrypted ? new FilePageKeys() : null,
        mapSizeBytes: 8 << 20,
      });
      const t = env.table("t");
      const u = env.table("u");
      const prng = new Prng(encrypted ? 2 : 1);
      const records = new Map<string, Uint8Array>();
      for (let batch = 0; batch < 4; batch++) {
        await env.transaction((txn) => {
          for (let i = 0; i < 1500; i++) {
            const key = prng.bytes(12);
            const value = prng.bytes(1 + prng.nextInt(300));
            txn.put(i % 2 === 0 ? t : u, key, value);
            records.set(`${i % 2}:${[...key]}`, value);
          }
        });
      }
      assert.equal(env.rebuilds, 0);
      injectCommitFailure(
        env,
        "MDB_BAD_TXN: Transaction must abort: freelist entry 3 had bad/duplicate entries",
      );
      const lost = Uint8Array.of(9, 9, 9);
      const failed = await env.transaction((txn) => txn.put(t, lost, lost)).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(failed instanceof KvError && failed.kind === "damaged", String(failed));
      // The next commit waits for the rebuild, then lands in the fresh file.
      const after = Uint8Array.of(7, 7);
      await env.transaction((txn) => txn.put(u, after, after));
      await env.settled();
      assert.equal(env.rebuilds, 1);
      assert.equal(t.getSync(lost), undefined, "the failed commit changed nothing");
      assert.deepEqual(u.getSync(after), after);
      for (const [name, table] of [["0", t], ["1", u]] as const) {
        let seen = 0;
        for (const { key, value } of table.range()) {
          const want = records.get(`${name}:${[...key]}`);
          if (want === undefined) continue;
          assert.deepEqual(value, want);
          seen++;
        }
        assert.equal(seen, [...records.keys()].filter((k) => k.startsWith(`${name}:`)).length);
      }
      await env.close();
      // The rebuilt file is the one that opens next time.
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["env"]);
      const again = await openKvEnv({
        path: `${dir}/env`,
        pageKeys: encrypted ? new FilePageKeys() : null,
        mapSizeBytes: 8 << 20,
      });
      assert.deepEqual(again.table("u").getSync(after), after);
      assert.equal(
        [...again.table("t").range()].length + [...again.table("u").range()].length,
        records.size + 1,
      );
      await again.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

// The sandboxed child: `deno run <flags> lmdb_test.ts <dir>` (Deno.test is a no-op there).
if (import.meta.main) {
  const dir = Deno.args[0]!;
  const env = await openKvEnv({ path: `${dir}/env`, pageKeys: null, mapSizeBytes: 8 << 20 });
  const t = env.table("t");
  await env.transaction((txn) => txn.put(t, Uint8Array.of(1, 2), Uint8Array.of(3, 4)));
  assert.deepEqual(t.getSync(Uint8Array.of(1, 2)), Uint8Array.of(3, 4));
  assert.equal([...t.range()].length, 1);
  await env.close();
  console.log("sandboxed lmdb ok");
}
