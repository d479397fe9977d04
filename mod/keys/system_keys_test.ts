import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ManualClock, Prng } from "../base/mod.ts";
import { openChunk, sealChunk, WebCryptoAead } from "../crypto/mod.ts";
import { createLogger, renderMetrics } from "../obs/mod.ts";
import {
  KeyStoreError,
  LocalKeyStore,
  LocalSealedKeyProvider,
  NODE_KEK_FILE,
  UnknownEpochError,
} from "./system_keys.ts";

const aead = new WebCryptoAead();
const quiet = createLogger({ level: "error", format: "json", sink: { write: () => {} } });

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-keys-" });
  try {
    await fn(`${dir}/keys`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function openProvider(dir: string, clock = new ManualClock(1_700_000_000_000)) {
  const store = await LocalKeyStore.open({ dir, aead, logger: quiet });
  const provider = await LocalSealedKeyProvider.open({ store, clock, logger: quiet });
  return {
    store,
    provider,
    close: async () => {
      provider.close();
      await store.close();
    },
  };
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("LocalSealedKeyProvider.open() creates epoch 1 and a 0600 node KEK on first start", async () => {
  await withDir(async (dir) => {
    const { provider, close } = await openProvider(dir);
    try {
      assert.equal(await provider.currentEpoch(), 1);
      const key = await provider.masterKey(1);
      assert.equal(key.length, 32);
      assert.notDeepEqual(key, new Uint8Array(32));
      assert.deepEqual(await provider.epochs(), [
        { epoch: 1, createdAtMs: 1_700_000_000_000, current: true },
      ]);
      const stat = await Deno.stat(`${dir}/${NODE_KEK_FILE}`);
      assert.equal(stat.mode! & 0o777, 0o600);
      assert.equal(stat.size, 32);
      assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
      assert.match(await renderMetrics(), /^kiseki_keys_current_epoch 1$/m);
    } finally {
      await close();
    }
  });
});

Deno.test("LocalSealedKeyProvider.rotate() makes a new current epoch and keeps old ones readable", async () => {
  await withDir(async (dir) => {
    const clock = new ManualClock(1000);
    const { provider, close } = await openProvider(dir, clock);
    try {
      const first = await provider.masterKey(1);
      clock.set(2000);
      assert.equal(await provider.rotate(), 2);
      assert.equal(await provider.currentEpoch(), 2);
      const second = await provider.masterKey(2);
      assert.notDeepEqual(first, second);
      assert.deepEqual(await provider.masterKey(1), first, "epoch 1 still readable");
      assert.deepEqual(await provider.epochs(), [
        { epoch: 1, createdAtMs: 1000, current: false },
        { epoch: 2, createdAtMs: 2000, current: true },
      ]);
      assert.match(await renderMetrics(), /^kiseki_keys_current_epoch 2$/m);
      // Concurrent rotations are serialized, each getting its own epoch.
      assert.deepEqual(await Promise.all([provider.rotate(), provider.rotate()]), [3, 4]);
      await assert.rejects(provider.masterKey(5), UnknownEpochError);
      await assert.rejects(
        provider.masterKey(0),
        (e: unknown) => e instanceof UnknownEpochError && e.epoch === 0,
      );
      // The returned key is a copy.
      (await provider.masterKey(1)).fill(0);
      assert.deepEqual(await provider.masterKey(1), first);
    } finally {
      await close();
    }
  });
});

Deno.test("LocalSealedKeyProvider keeps rotations across a restart", async () => {
  await withDir(async (dir) => {
    let opened = await openProvider(dir);
    const keys = [await opened.provider.masterKey(1)];
    await opened.provider.rotate();
    await opened.provider.rotate();
    keys.push(await opened.provider.masterKey(2), await opened.provider.masterKey(3));
    await opened.close();

    opened = await openProvider(dir);
    try {
      assert.equal(await opened.provider.currentEpoch(), 3);
      for (let epoch = 1; epoch <= 3; epoch++) {
        assert.deepEqual(await opened.provider.masterKey(epoch), keys[epoch - 1]);
      }
      assert.equal(await opened.provider.rotate(), 4);
    } finally {
      await opened.close();
    }
  });
});

Deno.test("LocalSealedKeyProvider.rotate() is durable when it resolves: a process exiting without close keeps it", async () => {
  await withDir(async (dir) => {
    // A child process rotates twice and exits at once, closing nothing.
    const code = `
      import { WebCryptoAead } from "${new URL("../crypto/mod.ts", import.meta.url)}";
      import { LocalKeyStore, LocalSealedKeyProvider } from "${
      import.meta.resolve("./system_keys.ts")
    }";
      const store = await LocalKeyStore.open({ dir: ${
      JSON.stringify(dir)
    }, aead: new WebCryptoAead() });
      const provider = await LocalSealedKeyProvider.open({ store });
      await provider.rotate();
      const epoch = await provider.rotate();
      const key = await provider.masterKey(epoch);
      console.log(JSON.stringify({ epoch, key: Array.from(key) }));
      Deno.exit(0);
    `;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", code],
      cwd: new URL("../..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    const child = JSON.parse(lines[lines.length - 1]!);
    assert.equal(child.epoch, 3);
    const opened = await openProvider(dir);
    try {
      assert.equal(await opened.provider.currentEpoch(), 3);
      assert.deepEqual(await opened.provider.masterKey(3), Uint8Array.from(child.key));
    } finally {
      await opened.close();
    }
  });
});

Deno.test("LocalSealedKeyProvider: chunks sealed before a rotation open after it", async () => {
  await withDir(async (dir) => {
    const { provider, close } = await openProvider(dir);
    try {
      const seal = async (text: string) => {
        const plaintext = new TextEncoder().encode(text);
        const chunkId = new Uint8Array(createHash("sha256").update(plaintext).digest());
        const epoch = await provider.currentEpoch();
        const masterKey = await provider.masterKey(epoch);
        return {
          chunkId,
          envelope: await sealChunk({ aead, masterKey, epoch, chunkId, plaintext }),
        };
      };
      const open = ({ chunkId, envelope }: { chunkId: Uint8Array; envelope: Uint8Array }) =>
        openChunk({ aead, masterKeyFor: (e) => provider.masterKey(e), chunkId, envelope });
      const old = await seal("before rotation");
      await provider.rotate();
      const fresh = await seal("after rotation");
      assert.equal(new DataView(fresh.envelope.buffer).getUint32(8), 2);
      assert.equal(new TextDecoder().decode(await open(old)), "before rotation");
      assert.equal(new TextDecoder().decode(await open(fresh)), "after rotation");
    } finally {
      await close();
    }
  });
});

Deno.test("LocalKeyStore keeps master keys out of the store file in clear", async () => {
  await withDir(async (dir) => {
    const { provider, close } = await openProvider(dir);
    const key = await provider.masterKey(1);
    await close();
    const data = await Deno.readFile(`${dir}/data.mdb`);
    assert.ok(data.length > 0);
    assert.ok(!contains(data, key), "master key bytes appear in data.mdb");
    assert.ok(!contains(data, await Deno.readFile(`${dir}/${NODE_KEK_FILE}`)), "KEK in data.mdb");
  });
});

Deno.test("LocalKeyStore.open() refuses a missing, replaced or exposed node KEK", async () => {
  await withDir(async (dir) => {
    await (await openProvider(dir)).close();
    const kekPath = `${dir}/${NODE_KEK_FILE}`;
    const kek = await Deno.readFile(kekPath);

    await Deno.chmod(kekPath, 0o644);
    await assert.rejects(
      openProvider(dir),
      (e: unknown) => e instanceof KeyStoreError && /chmod 600/.test(e.message),
    );
    await Deno.chmod(kekPath, 0o600);

    await Deno.remove(kekPath);
    await assert.rejects(
      openProvider(dir),
      (e: unknown) => e instanceof KeyStoreError && /is missing but/.test(e.message),
    );

    await Deno.writeFile(kekPath, new Prng(1).bytes(32), { mode: 0o600 });
    await assert.rejects(
      openProvider(dir),
      (e: unknown) => e instanceof KeyStoreError && /does not open the keys/.test(e.message),
    );

    await Deno.writeFile(kekPath, kek.subarray(0, 31), { mode: 0o600 });
    await assert.rejects(openProvider(dir), KeyStoreError);

    // The environment is released after each refusal, and the real KEK still works.
    await Deno.writeFile(kekPath, kek, { mode: 0o600 });
    const reopened = await openProvider(dir);
    assert.equal(await reopened.provider.currentEpoch(), 1);
    await reopened.close();
  });
});

Deno.test("LocalKeyStore.unseal() accepts a record only under the identity it was sealed for", async () => {
  await withDir(async (dir) => {
    const store = await LocalKeyStore.open({ dir, aead, logger: quiet });
    try {
      const a = new TextEncoder().encode("record a");
      const sealed = await store.seal(Uint8Array.of(1, 2, 3), a);
      assert.deepEqual(await store.unseal(sealed, a), Uint8Array.of(1, 2, 3));
      await assert.rejects(
        store.unseal(sealed, new TextEncoder().encode("record b")),
        KeyStoreError,
      );
      const tampered = sealed.slice();
      tampered[tampered.length - 1]! ^= 1;
      await assert.rejects(store.unseal(tampered, a), KeyStoreError);
      await assert.rejects(store.unseal(sealed.subarray(0, 10), a), KeyStoreError);
    } finally {
      await store.close();
    }
  });
});
