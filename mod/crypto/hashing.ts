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

/**
 * A streaming digest fed off the event loop where the implementation can: updates run in
 * the order called; `bytes` must stay unchanged until its update settles.
 */
export interface AsyncStreamDigest {
  update(bytes: Uint8Array): Promise<void>;
  /** After every update settled; ends the digest. */
  digest(): Promise<Uint8Array>;
  /** Ends the digest without one once its updates settled (an aborted put). */
  dispose(): Promise<void>;
}

export interface Hashing {
  readonly implementation: "node" | "openssl";
  /** True when the *Async calls run on another thread (worth using over hash workers). */
  readonly offLoop: boolean;
  sha256(): StreamDigest;
  md5(): StreamDigest;
  /**
   * The id of `chunk` (SHA-256, or HMAC-SHA256 under `key`) with the same bytes fed to
   * `md5` (a digest from this Hashing's md5(), or null): one pass where the implementation
   * can.
   */
  chunkId(chunk: Uint8Array, key: Uint8Array | null, md5: StreamDigest | null): Uint8Array;
  md5Async(): AsyncStreamDigest;
  sha256Async(): AsyncStreamDigest;
  /** chunkId() without an MD5, off the event loop where the implementation can. */
  chunkIdAsync(chunk: Uint8Array, key: Uint8Array | null): Promise<Uint8Array>;
}

/** A StreamDigest behind the async interface (the twin hashes on the calling thread). */
export class SyncAsyncDigest implements AsyncStreamDigest {
  readonly #digest: StreamDigest;
  constructor(digest: StreamDigest) {
    this.#digest = digest;
  }
  update(bytes: Uint8Array): Promise<void> {
    this.#digest.update(bytes);
    return Promise.resolve();
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.#digest.digest());
  }
  dispose(): Promise<void> {
    this.#digest.dispose();
    return Promise.resolve();
  }
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
  readonly offLoop = false;
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
  md5Async(): AsyncStreamDigest {
    return new SyncAsyncDigest(this.md5());
  }
  sha256Async(): AsyncStreamDigest {
    return new SyncAsyncDigest(this.sha256());
  }
  chunkIdAsync(chunk: Uint8Array, key: Uint8Array | null): Promise<Uint8Array> {
    return Promise.resolve(this.chunkId(chunk, key, null));
  }
}
