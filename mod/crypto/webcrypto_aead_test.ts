import assert from "node:assert/strict";
import { AEAD_KEY_BYTES, AeadError } from "./aead.ts";
import { WebCryptoAead } from "./webcrypto_aead.ts";

Deno.test("WebCryptoAead carries the reason it was chosen", () => {
  assert.equal(new WebCryptoAead("shim not built").reason, "shim not built");
  assert.equal(new WebCryptoAead().implementation, "webcrypto");
  assert.match(new WebCryptoAead().reason, /WebCrypto/);
});

Deno.test("WebCryptoAead.importKey() returns a frozen token without key material", async () => {
  const key = await new WebCryptoAead().importKey(new Uint8Array(AEAD_KEY_BYTES).fill(0x5a));
  assert.ok(Object.isFrozen(key));
  assert.deepEqual(Object.keys(key), ["implementation"]);
  assert.ok(!Deno.inspect(key).includes("90"));
});

Deno.test("WebCryptoAead.open() zeroes the plaintext region on failure", async () => {
  const aead = new WebCryptoAead();
  const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
  const nonce = new Uint8Array(12);
  const sealed = new Uint8Array(64 + 16);
  await aead.seal(key, nonce, new Uint8Array(64).fill(1), new Uint8Array(0), sealed);
  sealed[70] ^= 1;
  const out = new Uint8Array(64).fill(0xff);
  await assert.rejects(aead.open(key, nonce, sealed, new Uint8Array(0), out), AeadError);
  assert.ok(out.every((b) => b === 0));
});

Deno.test("WebCryptoAead.sealBatch() seals items concurrently into their own outs", async () => {
  const aead = new WebCryptoAead();
  const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
  const items = Array.from({ length: 8 }, (_, i) => ({
    key,
    nonce: new Uint8Array(12).fill(i),
    plaintext: new Uint8Array(i * 10).fill(i),
    aad: new Uint8Array(0),
    out: new Uint8Array(i * 10 + 16),
  }));
  assert.deepEqual(await aead.sealBatch(items), items.map((it) => it.out.length));
  const distinct = new Set(items.map((it) => Array.from(it.out.subarray(-16)).join(",")));
  assert.equal(distinct.size, items.length);
});
