import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { chooseAead } from "../crypto/mod.ts";
import {
  InternalTenantKms,
  LocalKeyStore,
  TenantDataKeys,
  TenantKeyNotFoundError,
  type TenantKms,
} from "../keys/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX, PAYLOAD_PLAINTEXT_BYTES_MAX } from "./codec.ts";
import { PayloadUnreadableError } from "./payload_cipher.ts";
import { KmsPayloadCipher, kmsTenantName } from "./tenant_payload_cipher.ts";

const aead = chooseAead(defaultShimOptions());
const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const tenantA = new Uint8Array(16).fill(0xa);
const tenantB = new Uint8Array(16).fill(0xb);

interface Fixture {
  kms: InternalTenantKms;
  keys: TenantDataKeys;
  cipher: KmsPayloadCipher;
}

async function withCipher(
  fn: (f: Fixture) => Promise<void>,
  options: { createKeys?: boolean; wrapKms?: (kms: TenantKms) => TenantKms } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-kms-cipher-" });
  const store = await LocalKeyStore.open({ dir: `${dir}/keys`, aead, logger: quiet });
  const kms = new InternalTenantKms({ store, logger: quiet });
  const keys = new TenantDataKeys({ kms: options.wrapKms?.(kms) ?? kms, aead });
  const cipher = new KmsPayloadCipher({ keys, createKeys: options.createKeys ?? true });
  try {
    await fn({ kms, keys, cipher });
  } finally {
    keys.close();
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("KmsPayloadCipher.open() returns what seal() was given, within the overhead", async () => {
  await withCipher(async ({ cipher }) => {
    for (const n of [0, 1, 100, 4096, PAYLOAD_PLAINTEXT_BYTES_MAX]) {
      const plaintext = new Prng(n).bytes(n);
      const sealed = await cipher.seal(tenantA, plaintext);
      assert.ok(sealed.length - n <= PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX, `overhead at ${n}`);
      assert.deepEqual(await cipher.open(tenantA, sealed), plaintext);
    }
  });
});

Deno.test("KmsPayloadCipher.seal() hides the plaintext and uses a fresh nonce per seal", async () => {
  await withCipher(async ({ cipher }) => {
    const plaintext = new TextEncoder().encode("secret/key/name.txt secret/key/name.txt");
    const a = await cipher.seal(tenantA, plaintext);
    const b = await cipher.seal(tenantA, plaintext);
    assert.notDeepEqual(a, b);
    assert.ok(!new TextDecoder("latin1").decode(a).includes("secret"));
  });
});

Deno.test("KmsPayloadCipher.open() refuses tampering, another tenant and a short payload as unreadable", async () => {
  await withCipher(async ({ cipher }) => {
    const sealed = await cipher.seal(tenantA, new Uint8Array([1, 2, 3]));
    await cipher.seal(tenantB, new Uint8Array([4]));
    const tampered = sealed.slice();
    tampered[tampered.length - 1]! ^= 1;
    await assert.rejects(() => cipher.open(tenantA, tampered), PayloadUnreadableError);
    await assert.rejects(() => cipher.open(tenantB, sealed), PayloadUnreadableError);
    await assert.rejects(() => cipher.open(tenantA, sealed.subarray(0, 2)), PayloadUnreadableError);
    await assert.rejects(() => cipher.open(new Uint8Array(3), sealed), PayloadUnreadableError);
  });
});

Deno.test("KmsPayloadCipher: a destroyed tenant key makes open, seal and probe unreadable", async () => {
  await withCipher(async ({ kms, cipher }) => {
    const sealed = await cipher.seal(tenantA, new Uint8Array([1, 2, 3]));
    const other = await cipher.seal(tenantB, new Uint8Array([9]));
    await cipher.probe(tenantA);
    await kms.destroyKey(kmsTenantName(tenantA));
    await assert.rejects(() => cipher.open(tenantA, sealed), PayloadUnreadableError);
    await assert.rejects(() => cipher.seal(tenantA, new Uint8Array(1)), PayloadUnreadableError);
    await assert.rejects(() => cipher.probe(tenantA), PayloadUnreadableError);
    // The tombstone stops createKeys from bringing the tenant back.
    await assert.rejects(() => cipher.seal(tenantA, new Uint8Array(1)), PayloadUnreadableError);
    assert.deepEqual(await cipher.open(tenantB, other), new Uint8Array([9]));
  });
});

Deno.test("KmsPayloadCipher.seal() without createKeys fails for a tenant the KMS does not know", async () => {
  await withCipher(async ({ kms, cipher }) => {
    await assert.rejects(() => cipher.seal(tenantA, new Uint8Array(1)), PayloadUnreadableError);
    await kms.createKey(kmsTenantName(tenantA));
    const sealed = await cipher.seal(tenantA, new Uint8Array([7]));
    assert.deepEqual(await cipher.open(tenantA, sealed), new Uint8Array([7]));
  }, { createKeys: false });
});

Deno.test("KmsPayloadCipher.open() passes transient KMS failures through (not unreadable)", async () => {
  let failing = false;
  const flaky = (kms: TenantKms): TenantKms => ({
    provider: "flaky",
    createKey: (t) => kms.createKey(t),
    wrap: (t, k) => kms.wrap(t, k),
    unwrap: (t, w) => failing ? Promise.reject(new Error("KMS unreachable")) : kms.unwrap(t, w),
    destroyKey: (t) => kms.destroyKey(t),
    onKeyDestroyed: (l) => kms.onKeyDestroyed(l),
  });
  await withCipher(async ({ keys, cipher }) => {
    const sealed = await cipher.seal(tenantA, new Uint8Array([5]));
    keys.forget(kmsTenantName(tenantA)); // the unwrapped key must come from the KMS again
    failing = true;
    await assert.rejects(
      () => cipher.open(tenantA, sealed),
      (e) => !(e instanceof PayloadUnreadableError) && (e as Error).message === "KMS unreachable",
    );
    failing = false;
    assert.deepEqual(await cipher.open(tenantA, sealed), new Uint8Array([5]));
  }, { wrapKms: flaky });
});

Deno.test("KmsPayloadCipher.seal() refuses a KMS whose wrapped keys exceed the overhead budget", async () => {
  const bloated = (kms: TenantKms): TenantKms => ({
    provider: "bloated",
    createKey: (t) => kms.createKey(t),
    wrap: async (t, k) => {
      const w = await kms.wrap(t, k);
      const out = new Uint8Array(PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX + 1);
      out.set(w);
      return out;
    },
    unwrap: (t, w) => kms.unwrap(t, w),
    destroyKey: (t) => kms.destroyKey(t),
    onKeyDestroyed: (l) => kms.onKeyDestroyed(l),
  });
  await withCipher(async ({ cipher }) => {
    await assert.rejects(() => cipher.seal(tenantA, new Uint8Array(1)), RangeError);
  }, { wrapKms: bloated });
});

Deno.test("kmsTenantName() is the lower-case hex of the tenant id", () => {
  assert.equal(kmsTenantName(tenantA), "0a".repeat(16));
  assert.ok(!(new TenantKeyNotFoundError("x") instanceof PayloadUnreadableError));
});

Deno.test("KmsPayloadCipher.probe() asks the KMS once, seals nothing, and fails after a shred", async () => {
  let wraps = 0;
  await withCipher(async ({ kms, cipher }) => {
    // A tenant unknown to the KMS gets its key (createKeys) on a first probe.
    await cipher.probe(tenantB);
    await kms.createKey(kmsTenantName(tenantA));
    wraps = 0;
    // The first probe fetches the data key (one wrap); later ones and the seal reuse it.
    await cipher.probe(tenantA);
    for (let i = 0; i < 50; i++) await cipher.probe(tenantA);
    const sealed = await cipher.seal(tenantA, new Uint8Array([5]));
    assert.equal(wraps, 1, "probes and the seal share one data key");
    assert.deepEqual(await cipher.open(tenantA, sealed), new Uint8Array([5]));
    await kms.destroyKey(kmsTenantName(tenantA));
    await assert.rejects(() => cipher.probe(tenantA), PayloadUnreadableError);
  }, {
    wrapKms: (kms) =>
      new Proxy(kms, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver);
          if (prop === "wrap") {
            return (...args: Parameters<TenantKms["wrap"]>) => {
              wraps++;
              return target.wrap(...args);
            };
          }
          return typeof value === "function" ? value.bind(target) : value;
        },
      }),
  });
});
