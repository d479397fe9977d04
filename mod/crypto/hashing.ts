// The hashing port of the put path: streaming SHA-256 and MD5 (SigV4 payload hashes, ETags)
// and the one pass over a chunk that names it (SHA-256, or HMAC-SHA256 under a tenant's
// dedup key, as computeChunkId() does) while feeding the object's running MD5.
// NodeHashing here is the pure twin (node:crypto); OpensslHashing (ffi/hash) is the fast
// one. Both pass the conformance suite in hashing_test.ts.

import { createHash, createHmac, type Hash } from "node:crypto";

/** A streaming digest; digest() ends it. */
export interface StreamDigest {
  update(bytes: Uint8Array): void;
  digest(): Uint8Array;
  /** Frees native state without a digest (an aborted put); a no-op for the twin. */
  dispose(): void;
}

export interface Hashing {
  readonly implementation: "node" | "openssl";
  sha256(): StreamDigest;
  md5(): StreamDigest;
  /**
   * The id of `chunk` (SHA-256, or HMAC-SHA256 under `key`) with the same bytes fed to
   * `md5` (a digest from this Hashing's md5(), or null): one pass where the implementation
   * can.
   */
  chunkId(chunk: Uint8Array, key: Uint8Array | null, md5: StreamDigest | null): Uint8Array;
}

class NodeDigest implements StreamDigest {
  readonly #hash: Hash;
  constructor(algorithm: "sha256" | "md5") {
    this.#hash = createHash(algorithm);
  }
  update(bytes: Uint8Array): void {
    this.#hash.update(bytes);
  }
  digest(): Uint8Array {
    return new Uint8Array(this.#hash.digest());
  }
  dispose(): void {}
}

/** The pure twin: node:crypto. */
export class NodeHashing implements Hashing {
  readonly implementation = "node" as const;
  sha256(): StreamDigest {
    return new NodeDigest("sha256");
  }
  md5(): StreamDigest {
    return new NodeDigest("md5");
  }
  chunkId(chunk: Uint8Array, key: Uint8Array | null, md5: StreamDigest | null): Uint8Array {
    md5?.update(chunk);
    const h = key === null ? createHash("sha256") : createHmac("sha256", key);
    return new Uint8Array(h.update(chunk).digest());
  }
}
