import assert from "node:assert/strict";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { missingPart } from "../base/mod.ts";
import { createLogger } from "../obs/mod.ts";
import { OpensslAead } from "./openssl_aead.ts";
import { chooseAead, selectAead } from "./select.ts";
import { WebCryptoAead } from "./webcrypto_aead.ts";

function capture() {
  const lines: string[] = [];
  const logger = createLogger({
    level: "info",
    format: "json",
    sink: { write: (l) => lines.push(l) },
  });
  return { lines, logger };
}

Deno.test("chooseAead() falls back to the twin when KISEKI_FFI=off", () => {
  const aead = chooseAead({ ...defaultShimOptions(), ffiMode: "off" });
  assert.ok(aead instanceof WebCryptoAead);
  assert.equal(aead.reason, "KISEKI_FFI=off");
});

Deno.test("chooseAead() says which shim file is missing", () => {
  const aead = chooseAead({ ffiDir: "/nonexistent/kiseki-ffi", ffiMode: "auto" });
  assert.equal(aead.implementation, "webcrypto");
  assert.equal(aead.reason, "shim not built (/nonexistent/kiseki-ffi/libkiseki_aead.so missing)");
});

Deno.test("selectAead() returns one instance per options and logs it once", () => {
  const { lines, logger } = capture();
  // A directory no other test names, so this test makes the first choice for it.
  const options = { ffiDir: "/nonexistent/select-test", ffiMode: "auto" as const };
  const first = selectAead(options, logger);
  assert.equal(selectAead(options, logger), first);
  assert.equal(selectAead({ ...options }, logger), first);
  assert.equal(lines.length, 1);
  const line = JSON.parse(lines[0]);
  assert.equal(line.level, "info");
  assert.equal(line.msg, "aead implementation");
  assert.equal(line.impl, "webcrypto");
  assert.match(line.reason, /^shim not built/);
});

const built = OpensslAead.load(defaultShimOptions());

Deno.test({
  name: "selectAead() picks the OpenSSL shim and logs its version" +
    (built.ok ? "" : ` (ignored: OpenSSL shim absent: ${built.reason})`),
  ignore: missingPart("the OpenSSL shim (ffi/aead; Debian libssl-dev)", !built.ok && built.reason),
  fn: () => {
    const { lines, logger } = capture();
    const aead = selectAead(defaultShimOptions(), logger);
    assert.equal(aead.implementation, "openssl");
    assert.equal(selectAead(defaultShimOptions(), logger), aead);
    assert.equal(lines.length, 1);
    const line = JSON.parse(lines[0]);
    assert.equal(line.impl, "openssl");
    assert.match(line.reason, /^shim loaded from .*libkiseki_aead\.so$/);
    assert.match(line.openssl, /^OpenSSL \d/);
  },
});
