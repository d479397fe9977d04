// Objects whose chunks a native client sealed and stored itself (mod/client/): the node
// hands out per-chunk data keys scoped to what the client writes or may read, and commits
// the client's chunk list in the same composition the engine writes, so S3 and NFS read it.
// Reference accounting as in the engine: every ref a composition holds is one refcount;
// refs are taken before the commit (a client's PUT takes one, or the commit adds one to a
// chunk stored already), given back when the commit is refused or releases them, and kept
// (leaked space, never lost data) when the commit's fate is unknown.

import { assert } from "../base/mod.ts";
import type { ChunkStore } from "../chunk/mod.ts";
import { createHmac, timingSafeEqual } from "node:crypto";
import { type Aead, deriveChunkDek, openChunk } from "../crypto/mod.ts";
import type { SystemKeyProvider } from "../keys/mod.ts";
import { counter, log as rootLog, type Logger } from "../obs/mod.ts";
import { bytesEqual, toHex } from "./bytes.ts";
import {
  CHUNK_ID_BYTES,
  type ChunkRef,
  type Composition,
  type Metadata,
  PUT_CHUNK_REFS_MAX,
} from "./composition.ts";
import { CompositionError } from "./errors.ts";
import type { NamespaceRef } from "./namespace.ts";
import { PayloadUnreadableError } from "./payload_cipher.ts";
import type { CompositionService } from "./service.ts";

/** System key epochs whose master keys are kept in memory. */
export const SEALED_MASTER_KEYS_CACHED_MAX = 64;
/** Chunk ids one key request may name. */
export const SEALED_KEYS_PER_REQUEST_MAX = 4096;

const commitsTotal = counter<"outcome">({
  name: "kiseki_sealed_object_commits_total",
  help: "Commits of client-sealed objects, by outcome",
  labelNames: ["outcome"],
});

export interface SealedObjectsOptions {
  service: CompositionService;
  chunkStore: ChunkStore;
  systemKeys: SystemKeyProvider;
  /** Opens stored chunks to check proofs of possession. */
  aead: Aead;
  logger?: Logger;
}

/** Refs a client session already holds (its PUTs took them), consumed by a commit. */
export interface HeldRefs {
  /** Takes one held ref of `chunkId` for the commit; false when none is held. */
  take(chunkId: Uint8Array): boolean;
  /** Gives a taken ref back to the holder (the commit was refused). */
  restore(chunkId: Uint8Array): void;
}

export interface SealedCommit {
  refs: ChunkRef[];
  size: number;
  etag: string;
  contentType?: string;
  metadata?: Metadata;
  ifAbsent?: boolean;
  ifVersion?: number;
}

/** An upload of a chunk that is stored already: the writer proves possession instead. */
export class SealedStoredError extends CompositionError {
  override name = "SealedStoredError";
  constructor(chunkId: Uint8Array) {
    super(
      "precondition_failed",
      `chunk ${toHex(chunkId)} is stored already: prepare it again and prove possession`,
    );
  }
}

export class SealedObjects {
  readonly #service: CompositionService;
  readonly #chunkStore: ChunkStore;
  readonly #systemKeys: SystemKeyProvider;
  readonly #aead: Aead;
  readonly #log: Logger;
  readonly #masterKeys = new Map<number, Uint8Array>();

  constructor(options: SealedObjectsOptions) {
    this.#service = options.service;
    this.#chunkStore = options.chunkStore;
    this.#systemKeys = options.systemKeys;
    this.#aead = options.aead;
    this.#log = options.logger ?? rootLog;
  }

  currentEpoch(): Promise<number> {
    return this.#systemKeys.currentEpoch();
  }

  /** The data key of each chunk under `epoch` (the key its envelope is sealed under). */
  async dataKeys(epoch: number, chunkIds: readonly Uint8Array[]): Promise<Uint8Array[]> {
    if (chunkIds.length > SEALED_KEYS_PER_REQUEST_MAX) {
      throw new CompositionError(
        "too_large",
        `at most ${SEALED_KEYS_PER_REQUEST_MAX} chunk ids per request, got ${chunkIds.length}`,
      );
    }
    for (const id of chunkIds) checkChunkId(id);
    let master: Uint8Array;
    try {
      master = await this.#masterKey(epoch);
    } catch (e) {
      throw new CompositionError(
        "invalid_argument",
        `key epoch ${epoch} is not readable: ${(e as Error).message}`,
      );
    }
    return chunkIds.map((id) => deriveChunkDek(master, id));
  }

  /** Whether each chunk is stored on this node's store. */
  async present(chunkIds: readonly Uint8Array[]): Promise<boolean[]> {
    for (const id of chunkIds) checkChunkId(id);
    return await Promise.all(
      chunkIds.map(async (id) => (await this.#chunkStore.stat(id)) !== null),
    );
  }

  /**
   * Takes one reference on a new chunk a writer uploaded. A chunk stored already is not
   * touched by an upload (its id alone proves nothing): the writer proves possession
   * instead (prove()); an upload that races another writer's store is refused the same way.
   */
  async storeUploaded(
    chunkId: Uint8Array,
    envelope: Uint8Array,
    tenant: string,
  ): Promise<{ created: boolean }> {
    checkChunkId(chunkId);
    if ((await this.#chunkStore.stat(chunkId)) !== null) throw new SealedStoredError(chunkId);
    const { created } = await this.#chunkStore.put(chunkId, envelope, { tenant });
    if (created) return { created };
    // Stored by another writer meanwhile: the reference stands only for the same bytes.
    if (bytesEqual(await this.#chunkStore.get(chunkId), envelope)) return { created: false };
    await this.#release([chunkId]);
    throw new SealedStoredError(chunkId);
  }

  /**
   * Checks a writer's proof that it holds a stored chunk's plaintext, HMAC-SHA256(challenge,
   * plaintext), against the stored chunk opened in this node's memory, and takes one
   * reference when it holds. False (no reference) when it does not.
   */
  async prove(
    chunkId: Uint8Array,
    challenge: Uint8Array,
    proof: Uint8Array,
    tenant: string,
  ): Promise<boolean> {
    checkChunkId(chunkId);
    let envelope: Uint8Array;
    try {
      envelope = await this.#chunkStore.get(chunkId);
    } catch (e) {
      if ((e as { code?: string }).code === "not_found") return false;
      throw e;
    }
    const plaintext = await openChunk({
      aead: this.#aead,
      masterKeyFor: (epoch) => this.#masterKey(epoch),
      chunkId,
      envelope,
    });
    const expected = createHmac("sha256", challenge).update(plaintext).digest();
    plaintext.fill(0);
    if (proof.length !== expected.length || !timingSafeEqual(expected, proof)) return false;
    await this.#chunkStore.incRef(chunkId, { tenant });
    return true;
  }

  /** The object's current composition (the caller checked the tenant and read barrier). */
  composition(ns: NamespaceRef, key: string): Composition {
    return this.#service.get(ns, key);
  }

  /**
   * Commits `input.refs` as `key`'s new version. Each ref is one reference: one the session
   * holds (`held`), else one added to a chunk that is stored; a chunk that is neither fails
   * the commit (the client uploads it first).
   */
  async commit(
    ns: NamespaceRef,
    key: string,
    input: SealedCommit,
    held: HeldRefs,
  ): Promise<{ version: number }> {
    const refs = input.refs;
    if (refs.length > PUT_CHUNK_REFS_MAX) {
      throw new CompositionError(
        "too_large",
        `a client commit carries at most ${PUT_CHUNK_REFS_MAX} chunk refs, got ${refs.length}`,
      );
    }
    for (const r of refs) checkChunkId(r.chunkId);
    const fromHeld: Uint8Array[] = [];
    const giveBack = () => {
      for (const id of fromHeld) held.restore(id);
    };
    try {
      for (const r of refs) {
        if (!held.take(r.chunkId)) {
          throw new CompositionError(
            "precondition_failed",
            `chunk ${toHex(r.chunkId)} was not uploaded in this session (once per ref): ` +
              "upload it first",
          );
        }
        fromHeld.push(r.chunkId);
      }
    } catch (e) {
      giveBack();
      commitsTotal.inc({ outcome: "refused" });
      throw e;
    }
    let result;
    try {
      result = await this.#service.put(ns, key, {
        // An empty object has no chunks: it is empty inline content, as the engine stores it.
        ...(refs.length === 0 ? { inline: new Uint8Array(0) } : { chunkRefs: refs }),
        size: input.size,
        etag: input.etag,
        contentType: input.contentType,
        metadata: input.metadata,
        ifAbsent: input.ifAbsent,
        ifVersion: input.ifVersion,
      });
    } catch (e) {
      const refused = e instanceof PayloadUnreadableError ||
        (e instanceof CompositionError && e.code !== "unavailable");
      if (refused) {
        giveBack();
        commitsTotal.inc({ outcome: "refused" });
      } else {
        // The commit may still take effect and own these refs: keep them.
        commitsTotal.inc({ outcome: "uncertain" });
        this.#log.warn("client commit outcome unknown: chunk references kept (space may leak)", {
          chunks: refs.length,
          error: (e as Error).message,
        });
      }
      throw e;
    }
    commitsTotal.inc({ outcome: "ok" });
    await this.#release(result.released);
    return { version: result.version };
  }

  /** Drops one reference per id; failures are logged (leaked space), never thrown. */
  async #release(ids: readonly Uint8Array[]): Promise<void> {
    const results = await Promise.allSettled(ids.map((id) => this.#chunkStore.decRef(id)));
    results.forEach((r, i) => {
      if (r.status === "rejected") {
        this.#log.error("could not release a chunk reference", {
          chunk: toHex(ids[i]!),
          error: (r.reason as Error).message,
        });
      }
    });
  }

  /** Gives back refs a session took and never committed (it expired or closed). */
  releaseHeld(ids: readonly Uint8Array[]): Promise<void> {
    return this.#release(ids);
  }

  async #masterKey(epoch: number): Promise<Uint8Array> {
    let key = this.#masterKeys.get(epoch);
    if (key === undefined) {
      key = await this.#systemKeys.masterKey(epoch);
      if (this.#masterKeys.size >= SEALED_MASTER_KEYS_CACHED_MAX) {
        this.#masterKeys.delete(this.#masterKeys.keys().next().value!);
      }
      this.#masterKeys.set(epoch, key);
    }
    return key;
  }
}

function checkChunkId(id: Uint8Array): void {
  if (!(id instanceof Uint8Array) || id.length !== CHUNK_ID_BYTES) {
    throw new CompositionError(
      "invalid_argument",
      `a chunk id is ${CHUNK_ID_BYTES} bytes, got ${(id as Uint8Array)?.length ?? "none"}`,
    );
  }
}

assert(SEALED_KEYS_PER_REQUEST_MAX >= PUT_CHUNK_REFS_MAX, "one request covers one commit's ids");
