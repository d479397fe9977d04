import assert from "node:assert/strict";
import { ManualClock, Prng } from "../base/mod.ts";
import { WebCryptoAead } from "../crypto/mod.ts";
import { createLogger } from "../obs/mod.ts";
import {
  ACCESS_KEY_ID_LENGTH,
  ACCESS_KEY_ID_PREFIX,
  CREDENTIALS_KEY_FILE,
  CredentialStoreError,
  isAccessKeyId,
  LocalCredentialStore,
  SECRET_ACCESS_KEY_LENGTH,
} from "./credentials.ts";

const aead = new WebCryptoAead();
const quiet = createLogger({ level: "error", format: "json", sink: { write: () => {} } });

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-s3-credentials-" });
  try {
    await fn(`${dir}/s3`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function open(dir: string, clock = new ManualClock(1_700_000_000_000)) {
  return LocalCredentialStore.open({ dir, aead, clock, logger: quiet });
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("LocalCredentialStore.create() makes AWS-shaped keys that lookup() finds", async () => {
  await withDir(async (dir) => {
    const store = await open(dir);
    try {
      const key = await store.create("tenant-a");
      assert.equal(key.accessKeyId.length, ACCESS_KEY_ID_LENGTH);
      assert.ok(key.accessKeyId.startsWith(ACCESS_KEY_ID_PREFIX));
      assert.match(key.accessKeyId, /^[A-Z2-7]{20}$/);
      assert.ok(isAccessKeyId(key.accessKeyId));
      assert.equal(key.secretAccessKey.length, SECRET_ACCESS_KEY_LENGTH);
      assert.match(key.secretAccessKey, /^[A-Za-z0-9+/]{40}$/);
      assert.equal(key.createdAtMs, 1_700_000_000_000);
      assert.deepEqual(await store.lookup(key.accessKeyId), {
        tenantId: "tenant-a",
        secretAccessKey: key.secretAccessKey,
      });
      assert.equal(await store.lookup("KSKIAAAAAAAAAAAAAAAA"), null);
      assert.equal(await store.lookup("not a key id"), null);
      const other = await store.create("tenant-a");
      assert.notEqual(other.accessKeyId, key.accessKeyId);
      assert.notEqual(other.secretAccessKey, key.secretAccessKey);
    } finally {
      await store.close();
    }
  });
});

Deno.test("LocalCredentialStore keeps keys across reopen, secrets sealed, key file 0600", async () => {
  await withDir(async (dir) => {
    let store = await open(dir);
    const key = await store.create("tenant-a");
    await store.close();
    const stat = await Deno.stat(`${dir}/${CREDENTIALS_KEY_FILE}`);
    assert.equal(stat.mode! & 0o777, 0o600);
    assert.equal(stat.size, 32);
    const data = await Deno.readFile(`${dir}/data.mdb`);
    // Pages are encrypted: not even the access key id is in the file in clear.
    assert.ok(
      !contains(data, new TextEncoder().encode(key.accessKeyId)),
      "key id stored in clear",
    );
    assert.ok(
      !contains(data, new TextEncoder().encode(key.secretAccessKey)),
      "secret stored in clear",
    );

    store = await open(dir);
    try {
      assert.equal((await store.lookup(key.accessKeyId))?.secretAccessKey, key.secretAccessKey);
    } finally {
      await store.close();
    }
  });
});

Deno.test("LocalCredentialStore.list() and revoke() work per tenant", async () => {
  await withDir(async (dir) => {
    const clock = new ManualClock(1000);
    const store = await open(dir, clock);
    try {
      const a1 = await store.create("a");
      clock.advance(5);
      const a2 = await store.create("a");
      const ab = await store.create("ab");
      const listed = await store.list("a");
      assert.deepEqual(
        listed.map((k) => k.accessKeyId).sort(),
        [a1.accessKeyId, a2.accessKeyId].sort(),
      );
      assert.ok(listed.every((k) => k.tenantId === "a" && !("secretAccessKey" in k)));
      assert.deepEqual((await store.list("ab")).map((k) => k.accessKeyId), [ab.accessKeyId]);
      assert.deepEqual(await store.list("nobody"), []);

      assert.ok(await store.lookup(a1.accessKeyId));
      assert.equal(await store.revoke(a1.accessKeyId), true);
      assert.equal(
        await store.lookup(a1.accessKeyId),
        null,
        "a revoked key still looked up (cache)",
      );
      assert.equal(await store.revoke(a1.accessKeyId), false);
      assert.deepEqual((await store.list("a")).map((k) => k.accessKeyId), [a2.accessKeyId]);
    } finally {
      await store.close();
    }
  });
});

Deno.test("LocalCredentialStore refuses a replaced or missing key file", async () => {
  await withDir(async (dir) => {
    const store = await open(dir);
    await store.create("t");
    await store.close();
    const path = `${dir}/${CREDENTIALS_KEY_FILE}`;
    const original = await Deno.readFile(path);

    await Deno.writeFile(path, new Prng(1).bytes(32), { mode: 0o600 });
    await assert.rejects(
      open(dir),
      (e: unknown) => e instanceof CredentialStoreError && e.message.includes("does not open"),
    );

    await Deno.remove(path);
    await assert.rejects(
      open(dir),
      (e: unknown) => e instanceof CredentialStoreError && e.message.includes("is missing"),
    );

    await Deno.writeFile(path, original, { mode: 0o644 });
    await Deno.chmod(path, 0o644);
    await assert.rejects(
      open(dir),
      (e: unknown) => e instanceof CredentialStoreError && e.message.includes("chmod 600"),
    );
    await Deno.chmod(path, 0o600);
    const reopened = await open(dir);
    await reopened.close();
  });
});

Deno.test("LocalCredentialStore refuses bad tenant ids", async () => {
  await withDir(async (dir) => {
    const store = await open(dir);
    try {
      await assert.rejects(() => store.create(""), CredentialStoreError);
      await assert.rejects(() => store.create("a\u0000b"), CredentialStoreError);
      await assert.rejects(() => store.create("x".repeat(257)), CredentialStoreError);
    } finally {
      await store.close();
    }
  });
});
