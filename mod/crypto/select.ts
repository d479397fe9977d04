// Picks the AEAD implementation for this process: the OpenSSL shim when it loads and
// passes its self-test, else the WebCrypto twin. Says which one and why, once.

import type { ShimOptions } from "../../ffi/loader.ts";
import { gauge, log, type Logger } from "../obs/mod.ts";
import type { Aead } from "./aead.ts";
import { OpensslAead } from "./openssl_aead.ts";
import { WebCryptoAead } from "./webcrypto_aead.ts";

/** Chooses without logging or remembering: for tests and tools that want a fresh Aead. */
export function chooseAead(options: ShimOptions): Aead {
  const loaded = OpensslAead.load(options);
  if (loaded.ok) return loaded.aead;
  return new WebCryptoAead(loaded.reason);
}

/** Distinct shim option sets remembered; a process normally has exactly one. */
const SELECTIONS_CACHED_MAX = 8;

// One choice per shim configuration, so the choice is made, and logged, once.
const chosen = new Map<string, Aead>();

const implementationGauge = gauge<"impl">({
  name: "kiseki_aead_implementation",
  help: "1 for the AEAD implementation in use (openssl or webcrypto)",
  labelNames: ["impl"],
});

/**
 * The process's Aead for `options`: the same instance on every call, and one info line
 * (`aead implementation impl=... reason=...`) the first time.
 */
export function selectAead(options: ShimOptions, logger: Logger = log): Aead {
  const id = `${options.ffiMode}\u0000${options.ffiDir}`;
  const existing = chosen.get(id);
  if (existing !== undefined) return existing;
  const aead = chooseAead(options);
  if (chosen.size >= SELECTIONS_CACHED_MAX) chosen.delete(chosen.keys().next().value!);
  chosen.set(id, aead);
  if (aead instanceof OpensslAead) {
    logger.info("aead implementation", {
      impl: aead.implementation,
      reason: aead.reason,
      openssl: aead.opensslVersion,
    });
  } else {
    logger.info("aead implementation", { impl: aead.implementation, reason: aead.reason });
  }
  implementationGauge.set({ impl: aead.implementation }, 1);
  return aead;
}
