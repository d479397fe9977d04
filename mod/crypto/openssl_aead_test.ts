import assert from "node:assert/strict";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { missingPart } from "../base/mod.ts";
import { AEAD_KEY_BYTES, AEAD_TAG_BYTES, type AeadSealItem } from "./aead.ts";
import { OPENSSL_NONBLOCKING_MIN_BYTES_DEFAULT, OpensslAead } from "./openssl_aead.ts";
import { WebCryptoAead } from "./webcrypto_aead.ts";

const built = OpensslAead.load(defaultShimOptions());
const absent = built.ok ? "" : ` (ignored: OpenSSL shim absent: ${built.reason})`;

function load(nonblockingMinBytes?: number): OpensslAead {
  const loaded = OpensslAead.load(defaultShimOptions(), { nonblockingMinBytes });
  if (!loaded.ok) throw new Error(loaded.reason);
  return loaded.aead;
}

function shimTest(name: string, fn: () => Promise<void> | void): void {
  Deno.test({
    name: name + absent,
    ignore: missingPart(
      "the OpenSSL shim (ffi/aead; Debian libssl-dev)",
      !built.ok && built.reason,
    ),
    fn,
  });
}

Deno.test("OpensslAead.load() reports a missing shim instead of throwing", () => {
  const loaded = OpensslAead.load({ ffiDir: "/nonexistent/kiseki", ffiMode: "auto" });
  assert.deepEqual(loaded, {
    ok: false,
    reason: "shim not built (/nonexistent/kiseki/libkiseki_aead.so missing)",
  });
  const off = OpensslAead.load({ ...defaultShimOptions(), ffiMode: "off" });
  assert.deepEqual(off, { ok: false, reason: "KISEKI_FFI=off" });
});

Deno.test("OpensslAead.load() refuses a file that is not the shim", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/libkiseki_aead.so`, "not an ELF file");
    const loaded = OpensslAead.load({ ffiDir: dir, ffiMode: "auto" });
    assert.equal(loaded.ok, false);
    assert.match((loaded as { reason: string }).reason, /^dlopen failed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

shimTest("OpensslAead reports the shim path and the OpenSSL version", () => {
  const aead = load();
  assert.equal(aead.implementation, "openssl");
  assert.match(aead.reason, /^shim loaded from \/.*\/libkiseki_aead\.so$/);
  assert.match(aead.opensslVersion, /^OpenSSL 3\.\d+\.\d+/);
  assert.equal(aead.nonblockingMinBytes, OPENSSL_NONBLOCKING_MIN_BYTES_DEFAULT);
});

shimTest("OpensslAead seals small messages before seal() returns (blocking call)", async () => {
  const aead = load();
  const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
  const out = new Uint8Array(4096 + AEAD_TAG_BYTES);
  const pending = aead.seal(key, new Uint8Array(12), new Uint8Array(4096), new Uint8Array(0), out);
  assert.ok(out.subarray(4096).some((b) => b !== 0), "tag written synchronously");
  await pending;
});

shimTest("OpensslAead seals large messages off the event loop (nonblocking call)", async () => {
  const aead = load();
  const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
  const size = 16 * 1024 * 1024;
  const plaintext = new Uint8Array(size);
  const out = new Uint8Array(size + AEAD_TAG_BYTES);
  // A worker needs milliseconds for 16 MiB; seeing the tag unwritten right after the call
  // shows seal() returned first. A preempted main thread can miss that, so try thrice.
  let sawPending = false;
  for (let attempt = 0; attempt < 3 && !sawPending; attempt++) {
    out.fill(0);
    const pending = aead.seal(key, new Uint8Array(12), plaintext, new Uint8Array(0), out);
    sawPending = out.subarray(size).every((b) => b === 0);
    await pending;
    assert.ok(out.subarray(size).some((b) => b !== 0), "tag written once settled");
  }
  assert.ok(sawPending, "seal() of 16 MiB returned before the tag was written");
});

shimTest("OpensslAead interleaves more keys than its context cache holds", async () => {
  const aead = load();
  const twin = new WebCryptoAead();
  const raws = Array.from({ length: 20 }, (_, i) => new Uint8Array(AEAD_KEY_BYTES).fill(i + 1));
  const keys = await Promise.all(raws.map((r) => aead.importKey(r)));
  const twinKeys = await Promise.all(raws.map((r) => twin.importKey(r)));
  const plaintext = new Uint8Array(100).fill(0x33);
  for (const order of [[...keys.keys()], [...keys.keys()].reverse(), [0, 19, 0, 19, 5, 0]]) {
    for (const i of order) {
      const a = new Uint8Array(116);
      const b = new Uint8Array(116);
      await aead.seal(keys[i], new Uint8Array(12), plaintext, new Uint8Array(0), a);
      await twin.seal(twinKeys[i], new Uint8Array(12), plaintext, new Uint8Array(0), b);
      assert.deepEqual(a, b, `key ${i}`);
    }
  }
});

shimTest("OpensslAead batches survive detached and resizable buffers", async () => {
  const aead = load();
  const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES));
  const resizable = new ArrayBuffer(64, { maxByteLength: 4096 });
  const view = new Uint8Array(resizable);
  const item = (): AeadSealItem => ({
    key,
    nonce: new Uint8Array(12),
    plaintext: view.subarray(0, 32),
    aad: new Uint8Array(0),
    out: new Uint8Array(48),
  });
  const first = item();
  await aead.sealBatch([first]); // remembers the buffer's address
  resizable.resize(4096);
  const grown = item();
  await aead.sealBatch([grown]);
  assert.deepEqual(grown.out, first.out);
  // A transferred buffer leaves empty views behind: refused, never dereferenced.
  const moving = new Uint8Array(new ArrayBuffer(64));
  const sealItem = { ...item(), plaintext: moving.subarray(0, 32) };
  await aead.sealBatch([sealItem]);
  const nonce = new Uint8Array(new ArrayBuffer(12));
  await aead.sealBatch([{ ...item(), nonce }]);
  nonce.buffer.transfer();
  await assert.rejects(aead.sealBatch([{ ...item(), nonce }]), RangeError);
});

shimTest("OpensslAead nonblocking batches do not share a descriptor", async () => {
  const aead = load(0);
  const key = await aead.importKey(new Uint8Array(AEAD_KEY_BYTES).fill(1));
  const batches = Array.from({ length: 6 }, (_, b) =>
    Array.from({ length: 50 }, (_, i) => ({
      key,
      nonce: new Uint8Array(12).fill(b),
      plaintext: new Uint8Array(200).fill(i),
      aad: new Uint8Array(0),
      out: new Uint8Array(216),
    })));
  await Promise.all(batches.map((items) => aead.sealBatch(items)));
  const reference = load();
  const refKey = await reference.importKey(new Uint8Array(AEAD_KEY_BYTES).fill(1));
  for (const items of batches) {
    for (const it of items) {
      const out = new Uint8Array(216);
      await reference.seal(refKey, it.nonce, it.plaintext, it.aad, out);
      assert.deepEqual(it.out, out);
    }
  }
});
