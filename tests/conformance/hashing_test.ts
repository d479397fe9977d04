// The hashing port's conformance suite: the node:crypto twin and the OpenSSL shim give the
// same digests, ids and running MD5s, checked against published vectors (FIPS 180-2,
// RFC 1321, RFC 4231) and against each other on random data.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { crc32cPure, missingPart, toHex } from "../../mod/base/mod.ts";
import { type Hashing, NodeHashing } from "../../mod/crypto/hashing.ts";
import { OpensslHashing } from "../../mod/crypto/openssl_hashing.ts";

const loaded = OpensslHashing.load(defaultShimOptions());
const utf8 = (s: string) => new TextEncoder().encode(s);

const implementations: { name: string; make: () => Hashing; ignore: boolean }[] = [
  { name: "NodeHashing", make: () => new NodeHashing(), ignore: false },
  {
    name: "OpensslHashing" + (loaded.ok ? "" : ` (ignored: shim absent: ${loaded.reason})`),
    make: () => {
      if (!loaded.ok) throw new Error(loaded.reason);
      return loaded.hashing;
    },
    ignore: missingPart(
      "the hashing shim (ffi/hash; Debian libssl-dev)",
      !loaded.ok && loaded.reason,
    ),
  },
];

for (const impl of implementations) {
  const test = (name: string, fn: (h: Hashing) => void) =>
    Deno.test({ name: `${impl.name}: ${name}`, ignore: impl.ignore, fn: () => fn(impl.make()) });

  test("sha256() and md5() match the published vectors", (h) => {
    const sha = h.sha256();
    sha.update(utf8("ab"));
    sha.update(utf8("c"));
    assert.equal(
      toHex(sha.digest()),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    const md5 = h.md5();
    md5.update(utf8("abc"));
    assert.equal(toHex(md5.digest()), "900150983cd24fb0d6963f7d28e17f72");
    assert.equal(toHex(h.md5().digest()), "d41d8cd98f00b204e9800998ecf8427e");
  });

  test("chunkId() names a chunk by SHA-256, or by HMAC-SHA256 under a key (RFC 4231)", (h) => {
    assert.equal(
      toHex(h.chunkId(utf8("abc"), null, null)),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    assert.equal(
      toHex(h.chunkId(utf8("what do ya want for nothing?"), utf8("Jefe"), null)),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
    // A key longer than the block is hashed first (RFC 4231 test case 6).
    assert.equal(
      toHex(
        h.chunkId(
          utf8("Test Using Larger Than Block-Size Key - Hash Key First"),
          new Uint8Array(131).fill(0xaa),
          null,
        ),
      ),
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    );
  });

  test("chunkId() feeds the running MD5 with every chunk in order", (h) => {
    const data = new Uint8Array(3 * 65536 + 17);
    crypto.getRandomValues(data.subarray(0, 65536));
    data.copyWithin(65536, 0, 65536 * 2 + 17);
    const md5 = h.md5();
    const cuts = [0, 1, 40_000, 140_001, data.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const chunk = data.subarray(cuts[i], cuts[i + 1]);
      const id = h.chunkId(chunk, i % 2 ? utf8("a tenant key of 32 bytes or so..") : null, md5);
      assert.equal(id.length, 32);
    }
    assert.equal(toHex(md5.digest()), createHash("md5").update(data).digest("hex"));
  });

  test("agrees with the twin on random chunks of every size near the stride", (h) => {
    const twin = new NodeHashing();
    const data = new Uint8Array(70_000);
    crypto.getRandomValues(data.subarray(0, 65536));
    for (const n of [0, 1, 63, 64, 65, 16383, 16384, 16385, 32769, 70_000]) {
      const chunk = data.subarray(0, n);
      const key = n % 2 ? data.subarray(1000, 1032) : null;
      assert.equal(toHex(h.chunkId(chunk, key, null)), toHex(twin.chunkId(chunk, key, null)));
      const a = h.sha256();
      a.update(chunk);
      const b = twin.sha256();
      b.update(chunk);
      assert.equal(toHex(a.digest()), toHex(b.digest()));
    }
  });

  Deno.test({
    name: `${impl.name}: md5Async() and chunkIdAsync() agree with the sync calls`,
    ignore: impl.ignore,
    fn: async () => {
      const h = impl.make();
      const data = new Uint8Array(200_001);
      crypto.getRandomValues(data.subarray(0, 65536));
      data.copyWithin(65536, 0, 200_001 - 65536);
      const md5 = h.md5Async();
      const ids = await Promise.all(
        [0, 50_000, 150_000].map((at, i, all) => {
          const chunk = data.subarray(at, all[i + 1] ?? data.length);
          const key = i === 1 ? utf8("a tenant key of 32 bytes or so..") : null;
          return Promise.all([md5.update(chunk), h.chunkIdAsync(chunk, key)]).then(([, id]) =>
            toHex(id) === toHex(h.chunkId(chunk, key, null))
          );
        }),
      );
      assert.deepEqual(ids, [true, true, true]);
      assert.equal(toHex(await md5.digest()), createHash("md5").update(data).digest("hex"));
      const dropped = h.md5Async();
      await dropped.update(data);
      await dropped.dispose();
    },
  });

  test("dispose() ends a digest without one", (h) => {
    const d = h.md5();
    d.update(utf8("x"));
    d.dispose();
    d.dispose();
  });
}

Deno.test({
  name: "OpensslHashing.crc32c() matches the pure CRC-32C, whole and continued",
  ignore: !loaded.ok,
  fn: () => {
    if (!loaded.ok) return;
    const data = new Uint8Array(10_007);
    crypto.getRandomValues(data);
    assert.equal(loaded.hashing.crc32c(utf8("123456789")), 0xe3069283);
    assert.equal(loaded.hashing.crc32c(data), crc32cPure(data));
    const first = loaded.hashing.crc32c(data.subarray(0, 4099));
    assert.equal(loaded.hashing.crc32c(data.subarray(4099), first), crc32cPure(data));
  },
});

Deno.test("OpensslHashing.load() reports a missing shim instead of throwing", () => {
  const r = OpensslHashing.load({ ffiDir: "/nonexistent/kiseki", ffiMode: "auto" });
  assert.equal(r.ok, false);
});
