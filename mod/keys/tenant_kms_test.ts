import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { AeadError, WebCryptoAead } from "../crypto/mod.ts";
import { createLogger, renderMetrics } from "../obs/mod.ts";
import { LocalKeyStore } from "./system_keys.ts";
import {
  InternalTenantKms,
  openTenantPayload,
  sealTenantPayload,
  TENANT_ID_BYTES_MAX,
  TenantDataKeys,
  TenantKeyDestroyedError,
  TenantKeyNotFoundError,
  type TenantKms,
  TenantKmsError,
  TenantPayloadError,
  TenantUnwrapError,
} from "./tenant_kms.ts";

const aead = new WebCryptoAead();
const quiet = createLogger({ level: "error", format: "json", sink: { write: () => {} } });
const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

interface Fixture {
  dir: string;
  store: LocalKeyStore;
  kms: InternalTenantKms;
  keys: TenantDataKeys;
}

async function openFixture(
  dir: string,
  random?: (target: Uint8Array) => void,
): Promise<Fixture & { close: () => Promise<void> }> {
  const store = await LocalKeyStore.open({ dir, aead, logger: quiet, random });
  const kms = new InternalTenantKms({ store, logger: quiet });
  const keys = new TenantDataKeys({ kms, aead });
  return {
    dir,
    store,
    kms,
    keys,
    close: async () => {
      keys.close();
      await store.close();
    },
  };
}

async function withKms(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "kiseki-tenant-kms-" });
  const fixture = await openFixture(`${root}/keys`);
  try {
    await fn(fixture);
  } finally {
    await fixture.close();
    await Deno.remove(root, { recursive: true });
  }
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("InternalTenantKms.wrap() round-trips through unwrap() for the same tenant only", async () => {
  await withKms(async ({ kms }) => {
    await kms.createKey("tenant-a");
    await kms.createKey("tenant-b");
    await kms.createKey("tenant-a"); // idempotent
    const dataKey = new Prng(1).bytes(32);
    const wrapped = await kms.wrap("tenant-a", dataKey);
    assert.ok(!contains(wrapped, dataKey), "wrapped form hides the key");
    assert.deepEqual(await kms.unwrap("tenant-a", wrapped), dataKey);
    assert.notDeepEqual(await kms.wrap("tenant-a", dataKey), wrapped, "fresh nonce per wrap");
    await assert.rejects(kms.unwrap("tenant-b", wrapped), TenantUnwrapError);
    const tampered = wrapped.slice();
    tampered[20]! ^= 1;
    await assert.rejects(kms.unwrap("tenant-a", tampered), TenantUnwrapError);
    await assert.rejects(kms.unwrap("tenant-a", wrapped.subarray(0, 20)), TenantUnwrapError);
    await assert.rejects(kms.wrap("tenant-a", new Uint8Array(0)), RangeError);
  });
});

Deno.test("InternalTenantKms rejects unknown tenants and bad tenant ids", async () => {
  await withKms(async ({ kms }) => {
    await assert.rejects(kms.wrap("nobody", new Uint8Array(32)), TenantKeyNotFoundError);
    await assert.rejects(kms.unwrap("nobody", new Uint8Array(64)), TenantKeyNotFoundError);
    await assert.rejects(kms.destroyKey("nobody"), TenantKeyNotFoundError);
    for (const bad of ["", "a\u0000b", "line\nbreak", "x".repeat(TENANT_ID_BYTES_MAX + 1)]) {
      await assert.rejects(kms.createKey(bad), TenantKmsError, JSON.stringify(bad));
      await assert.rejects(kms.wrap(bad, new Uint8Array(32)), TenantKmsError);
    }
    await kms.createKey("é".repeat(TENANT_ID_BYTES_MAX / 2)); // 128 UTF-8 bytes
  });
});

Deno.test("InternalTenantKms.destroyKey() crypto-shreds: unwrap fails for good, others unaffected", async () => {
  await withKms(async ({ kms }) => {
    await kms.createKey("doomed");
    await kms.createKey("survivor");
    const doomed = await kms.wrap("doomed", new Uint8Array(32).fill(1));
    const survivor = await kms.wrap("survivor", new Uint8Array(32).fill(2));
    const heard: string[] = [];
    const unsubscribe = kms.onKeyDestroyed((t) => heard.push(t));
    await kms.destroyKey("doomed");
    assert.deepEqual(heard, ["doomed"]);
    await assert.rejects(kms.unwrap("doomed", doomed), TenantKeyDestroyedError);
    await assert.rejects(kms.wrap("doomed", new Uint8Array(32)), TenantKeyDestroyedError);
    await assert.rejects(kms.createKey("doomed"), TenantKeyDestroyedError, "never recreated");
    await kms.destroyKey("doomed"); // idempotent
    assert.deepEqual(heard, ["doomed"], "announced once");
    assert.deepEqual(await kms.unwrap("survivor", survivor), new Uint8Array(32).fill(2));
    unsubscribe();
    assert.match(await renderMetrics(), /^kiseki_keys_tenant_keys_destroyed_total [1-9]/m);
  });
});

Deno.test("InternalTenantKms keeps keys and shreds across a restart, sealed at rest", async () => {
  const root = await Deno.makeTempDir({ prefix: "kiseki-tenant-kms-" });
  try {
    // Every key the store generates (node KEK, tenant KEKs) is recorded, to look for later.
    const generated: Uint8Array[] = [];
    const recording = (target: Uint8Array) => {
      crypto.getRandomValues(target);
      if (target.length === 32) generated.push(target.slice());
    };
    let f = await openFixture(`${root}/keys`, recording);
    await f.kms.createKey("kept");
    await f.kms.createKey("shredded");
    const kept = await f.kms.wrap("kept", new Uint8Array(32).fill(7));
    const shredded = await f.kms.wrap("shredded", new Uint8Array(32).fill(8));
    const keptPayload = await sealTenantPayload(f.keys, "kept", text("kept payload"));
    const shreddedPayload = await sealTenantPayload(f.keys, "shredded", text("shredded payload"));
    await f.kms.destroyKey("shredded");
    await f.close();

    const data = await Deno.readFile(`${root}/keys/data.mdb`);
    assert.ok(generated.length >= 3, "node KEK and two tenant KEKs");
    for (const key of generated) assert.ok(!contains(data, key), "a key is in data.mdb in clear");

    f = await openFixture(`${root}/keys`);
    try {
      assert.deepEqual(await f.kms.unwrap("kept", kept), new Uint8Array(32).fill(7));
      assert.equal(str(await openTenantPayload(f.keys, "kept", keptPayload)), "kept payload");
      await assert.rejects(f.kms.unwrap("shredded", shredded), TenantKeyDestroyedError);
      await assert.rejects(
        openTenantPayload(f.keys, "shredded", shreddedPayload),
        TenantKeyDestroyedError,
      );
    } finally {
      await f.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("sealTenantPayload() output opens with openTenantPayload() and hides the plaintext", async () => {
  await withKms(async ({ kms, keys }) => {
    await kms.createKey("t1");
    const plaintext = text('{"name":"/secret/plans.txt","chunks":["ab12"]}');
    const sealed = await sealTenantPayload(keys, "t1", plaintext);
    assert.ok(!contains(sealed, text("secret")));
    assert.deepEqual(await openTenantPayload(keys, "t1", sealed), plaintext);
    const empty = await sealTenantPayload(keys, "t1", new Uint8Array(0));
    assert.deepEqual(await openTenantPayload(keys, "t1", empty), new Uint8Array(0));
    // A fresh KMS client (another node) with an empty cache opens it through the KMS.
    const other = new TenantDataKeys({ kms, aead });
    assert.deepEqual(await openTenantPayload(other, "t1", sealed), plaintext);
    other.close();
    // Caller AAD binds the payload to its place.
    const bound = await sealTenantPayload(keys, "t1", plaintext, text("shard 3 key 9"));
    assert.deepEqual(await openTenantPayload(keys, "t1", bound, text("shard 3 key 9")), plaintext);
    await assert.rejects(openTenantPayload(keys, "t1", bound, text("shard 3 key 10")), AeadError);
    await assert.rejects(openTenantPayload(keys, "t1", bound), AeadError);
  });
});

Deno.test("openTenantPayload(): tenant B cannot open tenant A's payload", async () => {
  await withKms(async ({ kms, keys }) => {
    await kms.createKey("a");
    await kms.createKey("b");
    const forA = await sealTenantPayload(keys, "a", text("a's names"));
    await sealTenantPayload(keys, "b", text("b warms its cache"));
    await assert.rejects(openTenantPayload(keys, "b", forA), TenantUnwrapError);
    await assert.rejects(openTenantPayload(keys, "nobody", forA), TenantKeyNotFoundError);
    assert.equal(str(await openTenantPayload(keys, "a", forA)), "a's names");
  });
});

Deno.test("openTenantPayload() after destroyKey(): that tenant's payloads are gone, others open", async () => {
  await withKms(async ({ kms, keys }) => {
    await kms.createKey("shred-me");
    await kms.createKey("keep-me");
    const doomed = await Promise.all(
      ["one", "two", "three"].map((s) => sealTenantPayload(keys, "shred-me", text(s))),
    );
    const kept = await sealTenantPayload(keys, "keep-me", text("still here"));
    // Warm the cache: the data key is held in memory before the shred.
    assert.equal(str(await openTenantPayload(keys, "shred-me", doomed[0]!)), "one");
    await kms.destroyKey("shred-me");
    for (const payload of doomed) {
      await assert.rejects(openTenantPayload(keys, "shred-me", payload), TenantKeyDestroyedError);
    }
    await assert.rejects(sealTenantPayload(keys, "shred-me", text("new")), TenantKeyDestroyedError);
    assert.equal(str(await openTenantPayload(keys, "keep-me", kept)), "still here");
  });
});

Deno.test("TenantDataKeys.forget() drops cached keys for a shred done through another KMS", async () => {
  await withKms(async ({ kms }) => {
    await kms.createKey("t");
    let destroyed = false;
    // A KMS client on "another node": it sees the shred only through its KMS calls.
    const remote: TenantKms = {
      provider: "test",
      createKey: (t) => kms.createKey(t),
      wrap: (t, k) => kms.wrap(t, k),
      unwrap: (t, w) =>
        destroyed ? Promise.reject(new TenantKeyDestroyedError(t)) : kms.unwrap(t, w),
      destroyKey: (t) => kms.destroyKey(t),
      onKeyDestroyed: () => () => {},
    };
    const keys = new TenantDataKeys({ kms: remote, aead });
    const sealed = await sealTenantPayload(keys, "t", text("x"));
    destroyed = true;
    assert.equal(str(await openTenantPayload(keys, "t", sealed)), "x", "cached until told");
    keys.forget("t");
    await assert.rejects(openTenantPayload(keys, "t", sealed), TenantKeyDestroyedError);
    keys.close();
  });
});

Deno.test("TenantDataKeys reuses one data key until sealsPerKeyMax, then wraps a new one", async () => {
  await withKms(async ({ kms }) => {
    await kms.createKey("t");
    let wraps = 0;
    let unwraps = 0;
    const counting: TenantKms = {
      provider: "counting",
      createKey: (t) => kms.createKey(t),
      wrap: (t, k) => (wraps++, kms.wrap(t, k)),
      unwrap: (t, w) => (unwraps++, kms.unwrap(t, w)),
      destroyKey: (t) => kms.destroyKey(t),
      onKeyDestroyed: (l) => kms.onKeyDestroyed(l),
    };
    const keys = new TenantDataKeys({ kms: counting, aead, sealsPerKeyMax: 3 });
    const sealed = await Promise.all(
      Array.from({ length: 7 }, (_, i) => sealTenantPayload(keys, "t", text(`p${i}`))),
    );
    assert.equal(wraps, 3, "7 seals at 3 per key need 3 data keys");
    const prefixes = new Set(sealed.map((s) => s.subarray(0, 3 + ((s[1]! << 8) | s[2]!)).join()));
    assert.equal(prefixes.size, 3);
    for (let i = 0; i < 7; i++) {
      assert.equal(str(await openTenantPayload(keys, "t", sealed[i]!)), `p${i}`);
    }
    assert.equal(unwraps, 0, "own data keys open from the cache");
    keys.close();
  });
});

Deno.test("openTenantPayload() rejects malformed payloads with TenantPayloadError", async () => {
  await withKms(async ({ kms, keys }) => {
    await kms.createKey("t");
    const sealed = await sealTenantPayload(keys, "t", text("payload"));
    const cases = [
      new Uint8Array(0),
      sealed.subarray(0, 2),
      Uint8Array.of(2, ...sealed.subarray(1)),
      Uint8Array.of(1, 0, 0, ...new Uint8Array(40)),
      sealed.subarray(0, 3 + ((sealed[1]! << 8) | sealed[2]!) + 20),
    ];
    for (const bad of cases) {
      await assert.rejects(openTenantPayload(keys, "t", bad), TenantPayloadError);
    }
    const flipped = sealed.slice();
    flipped[flipped.length - 1]! ^= 0x80;
    await assert.rejects(openTenantPayload(keys, "t", flipped), AeadError);
    const badWrap = sealed.slice();
    badWrap[10]! ^= 1;
    await assert.rejects(openTenantPayload(keys, "t", badWrap), TenantUnwrapError);
  });
});
