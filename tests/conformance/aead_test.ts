// Runs the AEAD conformance suite against every implementation: the OpenSSL shim (as
// built, and forced onto its nonblocking path) and the WebCrypto twin, each exchanging
// sealed data with the other. Without a built shim its cases are reported as ignored,
// with the reason in their names, never passed silently.

import { defaultShimOptions, type ShimOptions } from "../../ffi/loader.ts";
import { OpensslAead, WebCryptoAead } from "../../mod/crypto/mod.ts";
import { aeadConformance } from "./aead_conformance.ts";

// KISEKI_FFI=off or KISEKI_FFI_DIR choose the shim here as they do for a role, so the
// ignored path can be checked on a machine that has the shim built.
const shim: ShimOptions = {
  ffiDir: Deno.env.get("KISEKI_FFI_DIR") ?? defaultShimOptions().ffiDir,
  ffiMode: Deno.env.get("KISEKI_FFI") === "off" ? "off" : "auto",
};
const probe = OpensslAead.load(shim);
const shimAbsent = probe.ok ? undefined : `OpenSSL shim absent: ${probe.reason}; run ffi/build.sh`;

function openssl(nonblockingMinBytes?: number): () => OpensslAead {
  return () => {
    const loaded = OpensslAead.load(shim, { nonblockingMinBytes });
    if (!loaded.ok) throw new Error(loaded.reason);
    return loaded.aead;
  };
}

const webcrypto = { name: "webcrypto", create: () => new WebCryptoAead() };
const opensslPeer = shimAbsent === undefined
  ? { name: "openssl", create: openssl() }
  : { name: "openssl", absent: shimAbsent };

aeadConformance({
  name: "openssl",
  implementation: "openssl",
  create: openssl(),
  peer: webcrypto,
  absent: shimAbsent,
});

// Every call, however small, through the nonblocking entry points and private contexts.
aeadConformance({
  name: "openssl, all nonblocking",
  implementation: "openssl",
  create: openssl(0),
  peer: webcrypto,
  absent: shimAbsent,
});

aeadConformance({
  name: "webcrypto",
  implementation: "webcrypto",
  create: webcrypto.create,
  peer: opensslPeer,
});
