import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import { chooseAead, WebCryptoAead } from "../crypto/mod.ts";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX } from "./codec.ts";
import { AeadPayloadCipher, PayloadUnreadableError } from "./payload_cipher.ts";

const tenantA = new Uint8Array(16).fill(0xa);
const tenantB = new Uint8Array(16).fill(0xb);

function cipher(aead = chooseAead(defaultShimOptions())) {
  const keys = new Map<number, Uint8Array | undefined>([
    [0xa, crypto.getRandomValues(new Uint8Array(32))],
    [0xb, crypto.getRandomValues(new Uint8Array(32))],
  ]);
  const c = new AeadPayloadCipher({ aead, keyFor: (t) => Promise.resolve(keys.get(t[0]!)) });
  return { c, keys };
}

Deno.test("AeadPayloadCipher.open() returns what seal() was given, within the overhead", async () => {
  for (const aead of [chooseAead(defaultShimOptions()), new WebCryptoAead()]) {
    const { c } = cipher(aead);
    for (const n of [0, 1, 100, 128 * 1024 - PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX]) {
      const plaintext = new Prng(n).bytes(n);
      const sealed = await c.seal(tenantA, plaintext);
      assert.ok(sealed.length - n <= PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX);
      assert.deepEqual(await c.open(tenantA, sealed), plaintext);
    }
  }
});

Deno.test("AeadPayloadCipher hides the plaintext and uses a fresh nonce per seal", async () => {
  const { c } = cipher();
  const plaintext = new TextEncoder().encode("secret/key/name.txt secret/key/name.txt");
  const a = await c.seal(tenantA, plaintext);
  const b = await c.seal(tenantA, plaintext);
  assert.notDeepEqual(a, b);
  assert.ok(!new TextDecoder("latin1").decode(a).includes("secret"));
});

Deno.test("AeadPayloadCipher.open() refuses tampering, another tenant and a destroyed key", async () => {
  const { c, keys } = cipher();
  const sealed = await c.seal(tenantA, new Uint8Array([1, 2, 3]));
  const tampered = sealed.slice();
  tampered[tampered.length - 1]! ^= 1;
  await assert.rejects(() => c.open(tenantA, tampered), PayloadUnreadableError);
  await assert.rejects(() => c.open(tenantB, sealed), PayloadUnreadableError);
  await assert.rejects(() => c.open(tenantA, sealed.subarray(0, 10)), PayloadUnreadableError);
  keys.set(0xa, undefined);
  c.forget(tenantA);
  await assert.rejects(() => c.open(tenantA, sealed), PayloadUnreadableError);
  await assert.rejects(() => c.seal(tenantA, new Uint8Array(1)), PayloadUnreadableError);
});

Deno.test("AeadPayloadCipher.open() passes transient key-source failures through (not unreadable)", async () => {
  let fail = true;
  const key = crypto.getRandomValues(new Uint8Array(32));
  const c = new AeadPayloadCipher({
    aead: new WebCryptoAead(),
    keyFor: () => fail ? Promise.reject(new Error("KMS unreachable")) : Promise.resolve(key),
  });
  await assert.rejects(
    () => c.seal(tenantA, new Uint8Array(1)),
    (e) => !(e instanceof PayloadUnreadableError),
  );
  fail = false;
  const sealed = await c.seal(tenantA, new Uint8Array([5]));
  assert.deepEqual(await c.open(tenantA, sealed), new Uint8Array([5]));
});
