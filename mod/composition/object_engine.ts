// The object engine: the narrow object interface gateways use (S3, NFS, FUSE never reach
// raft or disk). A put streams the body through content-defined chunking, names each chunk
// (SHA-256, or HMAC under the tenant's dedup key), seals it in an envelope under the
// current system key epoch and stores it (an id already stored only gains a reference),
// and only once every chunk is durable commits the composition through the composition
// service. Small bodies ride inline in the delta. A get resolves the name through the
// views and streams only the chunks the range touches, opening envelopes of any epoch.
//
// Reference accounting: every chunk reference an object, part or upload holds is one
// refcount in the chunk store. Refs are taken before the commit that uses them and given
// back when a commit releases them (overwrite, delete, abort, unlisted parts), or when the
// commit is definitely refused. A crash, or a commit whose fate is unknown ("unavailable"),
// leaks refs rather than risk dropping one still in use: space, never data.
//
// Where the bytes of a streamed PUT are copied, and why (with the hashing shim loaded):
//  1. socket -> a fresh read buffer (mod/s3/http1.ts readSome, up to 256 KiB a read): the
//     kernel's copy out of the socket. Bytes that arrived with the head are sliced out of
//     the connection's buffer instead (it is reused for the next request).
//     The SigV4 payload SHA-256 reads these pieces where they are, on a runtime thread
//     (mod/s3/checksums.ts BodyDigestStream), at most S3_PAYLOAD_HASH_AHEAD_BYTES_MAX ahead.
//  2. pieces -> the CDC assembly buffer (chunkStream), only for a chunk that spans pieces:
//     a chunk must be contiguous to be named and sealed. A chunk inside one piece is not
//     copied here.
//  3. chunk -> an envelope buffer at ENVELOPE_HEADER_BYTES (#storeStream): the assembly
//     buffer and the pieces move on while the chunk is hashed, sealed and stored, and the
//     envelope buffer has room for the header and tag around it. The MD5 (in stream order)
//     and the chunk id read it in place on runtime threads, before sealing.
//  4. none for sealing: AES-256-GCM encrypts the envelope buffer in place (sealChunk out =
//     the same buffer).
//  5. envelope -> k aligned fragment buffers (chunk store #fill): O_DIRECT needs aligned,
//     padded buffers per device; ISA-L computes the m parity fragments from them in place.
//  6. fragments -> devices: io_uring O_DIRECT writes (DMA from the fragment buffers).
// A GET: the k data fragments are read (O_DIRECT) straight into their places in one
// envelope buffer (a degraded read reconstructs the missing ones there), the envelope is
// opened in place (openChunk out = the envelope body) and the plaintext is enqueued as a
// view of it (a range is a subarray): no copy between the device read and the socket write.

import { createHash } from "node:crypto";
import { assert } from "../base/mod.ts";
import {
  type CdcOptions,
  type CdcParams,
  cdcParams,
  ChunkCache,
  type ChunkStore,
  ChunkStoreError,
  chunkStream,
  computeChunkId,
  type DedupMode,
  TENANT_DEDUP_KEY_BYTES_MIN,
} from "../chunk/mod.ts";
import {
  type Aead,
  type AsyncStreamDigest,
  ENVELOPE_HEADER_BYTES,
  envelopeBytes,
  type Hashing,
  openChunk,
  sealChunk,
} from "../crypto/mod.ts";
import type { SystemKeyProvider } from "../keys/mod.ts";
import { counter, histogram, log as rootLog, type Logger } from "../obs/mod.ts";
import { bytesEqual, fromHex, toHex } from "./bytes.ts";
import {
  type ChunkRef,
  type Composition,
  COMPOSITION_CHUNK_REFS_MAX,
  type Metadata,
  PART_NUMBER_MAX,
  PUT_CHUNK_REFS_MAX,
  PUT_PART_SIZES_MAX,
} from "./composition.ts";
import { CompositionError } from "./errors.ts";
import { READ_AHEAD_BYTES_MAX_DEFAULT, ReadBudget } from "./read_budget.ts";
import type {
  ListObjectsOptions,
  ListObjectsResult,
  ListPartsOptions,
  ListPartsResult,
  ListUploadsOptions,
  ListUploadsResult,
} from "./listing.ts";
import type { Namespace, NamespaceKind, NamespaceRef } from "./namespace.ts";
import { PayloadUnreadableError } from "./payload_cipher.ts";
import type { CompositionService, PutInput } from "./service.ts";
import { BufferLender, type EnvelopeBuffer, EnvelopeBuffers } from "./object_engine_buffers.ts";
import { HashWorkers } from "./object_engine_hash.ts";
import {
  type ByteRange,
  firstEndingAfter,
  firstStartingAt,
  rebase,
  resolvePart,
  resolveRange,
} from "./object_engine_ranges.ts";
import {
  ENGINE_ASSEMBLY_BUFFERS_MAX,
  ENGINE_CHUNK_BUFFERS_MAX,
  ENGINE_HASH_WORKERS_MAX,
  ENGINE_MASTER_KEYS_CACHED_MAX,
  ENGINE_OBJECT_BYTES_MAX,
  ENGINE_PART_BYTES_MIN_DEFAULT,
  ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX,
  ENGINE_READ_AHEAD_CHUNKS,
  ENGINE_READ_STALL_MS,
  ENGINE_RELEASES_BEHIND_MAX,
  ENGINE_RELEASES_IN_FLIGHT_MAX,
} from "./object_engine_limits.ts";

// The engine's limits live in object_engine_limits.ts; this door keeps exporting them.
export * from "./object_engine_limits.ts";
export {
  type ByteRange,
  ObjectPartError,
  ObjectRangeError,
  resolvePart,
  resolveRange,
} from "./object_engine_ranges.ts";

const MD5_HEX = /^[0-9a-f]{32}$/;
/** Placeholder of a ref whose chunk id is still being computed. */
const NO_CHUNK_ID = new Uint8Array(32);

// ---- metrics -------------------------------------------------------------------------------

const bytesIn = counter<"op">({
  name: "kiseki_engine_bytes_in_total",
  help: "Object bytes received by the engine (puts and parts)",
  labelNames: ["op"],
});
const bytesOut = counter<"op">({
  name: "kiseki_engine_bytes_out_total",
  help: "Object bytes returned by the engine (gets)",
  labelNames: ["op"],
});
const opSeconds = histogram<"op" | "outcome">({
  name: "kiseki_engine_op_duration_seconds",
  help: "Duration of engine operations (get: until the body is fully read)",
  labelNames: ["op", "outcome"],
});
const chunksTotal = counter<"outcome">({
  name: "kiseki_engine_chunks_total",
  help: "Chunks a put referenced, by whether they were stored or already present (dedup)",
  labelNames: ["outcome"],
});
const releasesTotal = counter<"outcome">({
  name: "kiseki_engine_chunk_releases_total",
  help: "Chunk references given back (ok) or that could not be (failed: leaked space)",
  labelNames: ["outcome"],
});

// ---- shapes --------------------------------------------------------------------------------

/** Names chunks for a tenant: SHA-256 (global dedup) or HMAC under the tenant's dedup key. */
export interface TenantDedup {
  modeFor(tenantId: Uint8Array): DedupMode;
  /** The tenant's dedup key (at least 32 bytes); only asked for "tenant" mode. */
  keyFor(tenantId: Uint8Array): Promise<Uint8Array>;
}

/** Whether a tenant's key is alive (KmsPayloadCipher.probe satisfies it). */
export interface TenantGate {
  /** Resolves when the tenant's key works; PayloadUnreadableError once destroyed. */
  probe(tenantId: Uint8Array): Promise<void>;
}

export interface ObjectEngineOptions {
  service: CompositionService;
  chunkStore: ChunkStore;
  /** Seals and opens chunk envelopes. */
  aead: Aead;
  systemKeys: SystemKeyProvider;
  /** Checked before every operation; default: always alive. */
  tenantGate?: TenantGate;
  /** Default: every tenant dedups globally (SHA-256 chunk ids). */
  dedup?: TenantDedup;
  cdc?: CdcOptions;
  /** Chunk refs one composition commit carries; larger puts go through hidden parts. */
  putChunkRefsMax?: number;
  /** Every part but the last of a completed upload must be this big (default 5 MiB). */
  partBytesMin?: number;
  chunksInFlightMax?: number;
  readAheadChunks?: number;
  /**
   * Bound in bytes of the chunks all gets hold ahead of their readers (default
   * READ_AHEAD_BYTES_MAX_DEFAULT; the server passes KISEKI_READ_AHEAD_MAX). At least the
   * largest chunk.
   */
  readAheadBytesMax?: number;
  /** Default ENGINE_READ_STALL_MS. */
  readStallMs?: number;
  /**
   * Bound in bytes of the memory cache of chunk plaintexts read (default 0: none; the
   * server passes KISEKI_CHUNK_CACHE_MAX).
   */
  chunkCacheBytes?: number;
  /** Hash (MD5, chunk ids) on a worker thread (default true; false: on the event loop). */
  hashWorker?: boolean;
  /**
   * Hash workers to run (default: one per core beyond the first, 1..ENGINE_HASH_WORKERS_MAX).
   * A put's session stays on one worker (its MD5 runs in order); puts spread over them.
   */
  hashWorkers?: number;
  /**
   * Hashing whose async calls run off the event loop (the OpenSSL shim): when given, a put's
   * MD5 runs in order and its chunk ids side by side on runtime worker threads, in place of
   * the hash workers (which are then not started).
   */
  hashing?: Hashing;
  logger?: Logger;
}

export type Body = ReadableStream<Uint8Array> | Uint8Array;

export interface PutObjectOptions {
  contentType?: string;
  metadata?: Metadata;
  /** The body's length when known (Content-Length): a body of another length is refused. */
  sizeHint?: number;
  /** Refuse unless the key does not exist (If-None-Match: *). */
  ifAbsent?: boolean;
  /** Refuse unless the key is at this version. */
  ifVersion?: number;
  /**
   * The metadata, known only once the body has ended (checksums a client sends after the
   * body): asked for after the last byte is read, before the commit, instead of `metadata`.
   */
  metadataAfterBody?: () => Promise<Metadata>;
}

export interface PutObjectResult {
  /** MD5 hex of the body (S3 ETag, unquoted). */
  etag: string;
  version: number;
  size: number;
}

export interface ObjectInfo {
  key: string;
  size: number;
  /** Unquoted: MD5 hex, or "<md5 of part md5s>-N" for multipart objects. */
  etag: string;
  version: number;
  contentType: string;
  metadata: Metadata;
  createdMs: number;
  modifiedMs: number;
  /**
   * A multipart object's part sizes, in part order (the etag ends "-<count>"); null for a
   * single-part object, and for multipart objects stored before part sizes were kept
   * (which read as one part).
   */
  partSizes: readonly number[] | null;
  /** The multipart upload (hex id) this version was completed from; absent otherwise. */
  completedUploadId?: string;
}

export interface GetObjectOptions {
  range?: ByteRange;
  /**
   * Only this part's bytes (1..PART_NUMBER_MAX; not with `range`), resolved by resolvePart()
   * against the version read: a single-part object is its part 1.
   */
  partNumber?: number;
}

export interface GetObjectResult extends ObjectInfo {
  /**
   * The bytes returned, inclusive (null: the whole object). An empty part of a multipart
   * object: end = start - 1.
   */
  range: { start: number; end: number } | null;
  contentLength: number;
  body: ReadableStream<Uint8Array>;
}

export interface CompletedPart {
  partNumber: number;
  /** As the client lists it; surrounding quotes are ignored. */
  etag: string;
}

export interface CopyOptions {
  metadata?: Metadata;
  /** The copy's metadata from the source's (of the version copied); wins over `metadata`. */
  metadataOf?: (source: Metadata) => Metadata;
  contentType?: string;
}

export interface CompleteOptions {
  /** Refuse unless the key does not exist (If-None-Match: *). */
  ifAbsent?: boolean;
  /** Refuse unless the key is at this version. */
  ifVersion?: number;
  /** Entries added to the upload's metadata (what is known only at completion). */
  metadata?: Metadata;
}

export interface EngineStats {
  chunksStored: number;
  chunksDeduplicated: number;
  refsReleased: number;
  releaseFailures: number;
}

/** A body stored as chunks: their refs (each holding one reference), size and MD5. */
interface StoredChunks {
  refs: ChunkRef[];
  size: number;
  etag: string;
}

/** Per-put context: who writes, how chunks are named and sealed. */
interface WriteContext {
  tenant: string;
  /** The tenant's dedup key (HMAC chunk ids), or null for SHA-256 ids. */
  dedupKey: Uint8Array | null;
  epoch: number;
  masterKey: Uint8Array;
  /** Refs this operation holds that no committed composition owns yet. */
  taken: Uint8Array[];
  /** A commit failed in a way that may still have taken effect (and so own `taken`). */
  uncertain: boolean;
}

type RefHolder = Pick<WriteContext, "taken" | "uncertain">;

const globalDedup: TenantDedup = {
  modeFor: () => "global",
  keyFor: () => Promise.reject(new Error("global dedup has no tenant key")),
};

export class ObjectEngine {
  readonly service: CompositionService;
  readonly chunkStore: ChunkStore;
  readonly cdc: CdcParams;
  readonly inlineBytesMax: number;
  readonly putChunkRefsMax: number;
  readonly partBytesMin: number;
  readonly #aead: Aead;
  readonly #systemKeys: SystemKeyProvider;
  readonly #gate: TenantGate | null;
  readonly #dedup: TenantDedup;
  readonly #chunksInFlightMax: number;
  readonly #readAhead: number;
  readonly #readBudget: ReadBudget;
  readonly #readStallMs: number;
  readonly #chunkCache: ChunkCache;
  readonly #log: Logger;
  readonly #envelopes: EnvelopeBuffers;
  readonly #assembly: BufferLender;
  readonly #hasher: HashWorkers | null;
  readonly #hashing: Hashing | null;
  readonly #masterKeys = new Map<number, Uint8Array>();
  /** Releases running behind the writes that caused them (see #releaseBehind). */
  readonly #behind = new Set<Promise<void>>();
  readonly #stats: EngineStats = {
    chunksStored: 0,
    chunksDeduplicated: 0,
    refsReleased: 0,
    releaseFailures: 0,
  };

  constructor(options: ObjectEngineOptions) {
    this.service = options.service;
    this.chunkStore = options.chunkStore;
    this.cdc = cdcParams(options.cdc);
    this.inlineBytesMax = options.service.inlineBytesMax;
    this.putChunkRefsMax = options.putChunkRefsMax ?? PUT_CHUNK_REFS_MAX;
    this.partBytesMin = options.partBytesMin ?? ENGINE_PART_BYTES_MIN_DEFAULT;
    this.#aead = options.aead;
    this.#systemKeys = options.systemKeys;
    this.#gate = options.tenantGate ?? null;
    this.#dedup = options.dedup ?? globalDedup;
    this.#chunksInFlightMax = options.chunksInFlightMax ?? ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX;
    this.#readAhead = options.readAheadChunks ?? ENGINE_READ_AHEAD_CHUNKS;
    this.#chunkCache = new ChunkCache(options.chunkCacheBytes ?? 0);
    const readAheadBytesMax = options.readAheadBytesMax ??
      Math.max(READ_AHEAD_BYTES_MAX_DEFAULT, this.cdc.maxBytes);
    assert(
      readAheadBytesMax >= this.cdc.maxBytes,
      `readAheadBytesMax (${readAheadBytesMax}) must hold the largest chunk (${this.cdc.maxBytes})`,
    );
    this.#readBudget = new ReadBudget(readAheadBytesMax);
    this.#readStallMs = options.readStallMs ?? ENGINE_READ_STALL_MS;
    assert(this.#readStallMs > 0, "readStallMs must be > 0");
    this.#log = options.logger ?? rootLog;
    assert(
      Number.isInteger(this.putChunkRefsMax) && this.putChunkRefsMax >= 1 &&
        this.putChunkRefsMax <= PUT_CHUNK_REFS_MAX,
      `putChunkRefsMax must be 1..${PUT_CHUNK_REFS_MAX}`,
    );
    assert(
      Number.isInteger(this.#chunksInFlightMax) && this.#chunksInFlightMax >= 1 &&
        this.#chunksInFlightMax <= ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX,
      `chunksInFlightMax must be 1..${ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX}`,
    );
    assert(
      Number.isInteger(this.#readAhead) && this.#readAhead >= 1 &&
        this.#readAhead <= ENGINE_READ_AHEAD_CHUNKS,
      `readAheadChunks must be 1..${ENGINE_READ_AHEAD_CHUNKS}`,
    );
    assert(Number.isSafeInteger(this.partBytesMin) && this.partBytesMin >= 0, "partBytesMin");
    const workers = options.hashWorkers ??
      Math.max(1, Math.min(ENGINE_HASH_WORKERS_MAX, (navigator.hardwareConcurrency || 2) - 1));
    assert(
      Number.isInteger(workers) && workers >= 1 && workers <= ENGINE_HASH_WORKERS_MAX,
      `hashWorkers must be 1..${ENGINE_HASH_WORKERS_MAX}`,
    );
    this.#hashing = options.hashing?.offLoop ? options.hashing : null;
    this.#hasher = options.hashWorker === false || this.#hashing !== null
      ? null
      : HashWorkers.start(workers, this.#log);
    // None allocated ahead: an idle server holds no envelope memory (8 of them would be
    // 32 MiB of touched pages at the default CDC maximum); the first puts fault theirs in.
    this.#envelopes = new EnvelopeBuffers(
      envelopeBytes(this.cdc.maxBytes),
      ENGINE_CHUNK_BUFFERS_MAX,
      0,
      (buffer) => this.#hasher?.register(buffer) ?? -1,
    );
    this.#assembly = new BufferLender(this.cdc.maxBytes, ENGINE_ASSEMBLY_BUFFERS_MAX);
  }

  stats(): EngineStats {
    return { ...this.#stats };
  }

  /** Stops the hash worker; puts in flight fail. */
  /** Waits for the releases put behind (overwritten versions' chunks), then stops the hasher. */
  async close(): Promise<void> {
    await this.releasesSettled();
    this.#hasher?.close();
  }

  /** Resolves once every reference release started so far has finished. */
  async releasesSettled(): Promise<void> {
    while (this.#behind.size > 0) await Promise.allSettled([...this.#behind]);
  }

  // ---- namespaces ----------------------------------------------------------------------------

  /** The ref of `tenantId`'s namespace `name`, whether or not it exists. */
  namespace(tenantId: Uint8Array, name: string): NamespaceRef {
    return this.service.ref(tenantId, name);
  }

  createNamespace(
    tenantId: Uint8Array,
    name: string,
    kind: NamespaceKind = "bucket",
  ): Promise<Namespace> {
    return this.#op("create_namespace", async () => {
      await this.#checkTenant(tenantId);
      return await this.service.createNamespace(tenantId, name, kind);
    });
  }

  deleteNamespace(ns: NamespaceRef): Promise<void> {
    return this.#op("delete_namespace", async () => {
      await this.#checkTenant(ns.tenantId);
      await this.service.deleteNamespace(ns);
    });
  }

  getNamespace(ns: NamespaceRef): Promise<Namespace> {
    return this.#op("get_namespace", async () => {
      await this.#checkTenant(ns.tenantId);
      return this.service.getNamespace(ns);
    });
  }

  listNamespaces(tenantId: Uint8Array): Promise<Namespace[]> {
    return this.#op("list_namespaces", async () => {
      await this.#checkTenant(tenantId);
      return this.service.listNamespaces(tenantId);
    });
  }

  // ---- objects -------------------------------------------------------------------------------

  /**
   * Stores `body` as `key`'s new version. Resolves once the composition is committed and
   * every chunk it references is durable; the etag is the body's MD5 (hex).
   */
  putObject(
    ns: NamespaceRef,
    key: string,
    body: Body,
    options: PutObjectOptions = {},
  ): Promise<PutObjectResult> {
    return this.#op("put", async () => {
      await this.#checkTenant(ns.tenantId);
      const sizeHint = checkSizeHint(options.sizeHint);
      if (options.ifAbsent) {
        // Fails early; the fold decides for good when the commit is ordered.
        let exists = true;
        try {
          this.service.head(ns, key);
        } catch (e) {
          if (!(e instanceof CompositionError) || e.code !== "not_found") throw e;
          exists = false;
        }
        if (exists) {
          throw new CompositionError("precondition_failed", `key ${JSON.stringify(key)} exists`);
        }
      }
      const source = await this.#inlineOrStream(body, sizeHint);
      if (source.inline === null) return await this.#putChunked(ns, key, source.stream, options);
      const bytes = source.inline;
      checkSize(bytes.length, sizeHint);
      bytesIn.inc({ op: "put" }, bytes.length);
      const etag = md5Hex(bytes);
      const metadata = await metadataOf(options);
      const { version, released } = await this.#commit(null, () =>
        this.service.put(ns, key, {
          inline: bytes,
          size: bytes.length,
          contentType: options.contentType,
          metadata,
          etag,
          ifAbsent: options.ifAbsent,
          ifVersion: options.ifVersion,
        }));
      await this.#releaseBehind(released);
      return { etag, version, size: bytes.length };
    });
  }

  async #putChunked(
    ns: NamespaceRef,
    key: string,
    source: AsyncIterable<Uint8Array>,
    options: PutObjectOptions,
  ): Promise<PutObjectResult> {
    const ctx = await this.#writeContext(ns.tenantId);
    try {
      const stored = await this.#storeStream(ctx, source, "put", COMPOSITION_CHUNK_REFS_MAX);
      checkSize(stored.size, options.sizeHint);
      const metadata = await metadataOf(options);
      const { version } = await this.#commitRefs(ns, key, ctx, stored.refs, {
        size: stored.size,
        etag: stored.etag,
        contentType: options.contentType,
        metadata,
        ifAbsent: options.ifAbsent,
        ifVersion: options.ifVersion,
      });
      return { etag: stored.etag, version, size: stored.size };
    } catch (e) {
      await this.#giveBack(ctx, e);
      throw e;
    }
  }

  /**
   * Commits `refs` (whose refs `holder` took) as `key`'s new version and gives back what the
   * commit released. Refs (or part sizes) beyond what one delta carries go as hidden parts
   * of an upload, completed at the end (aborted on failure, which gives their refs back).
   */
  async #commitRefs(
    ns: NamespaceRef,
    key: string,
    holder: RefHolder,
    refs: ChunkRef[],
    put: Omit<PutInput, "chunkRefs" | "inline">,
  ): Promise<{ version: number }> {
    if (
      refs.length <= this.putChunkRefsMax && (put.partSizes?.length ?? 0) <= PUT_PART_SIZES_MAX
    ) {
      const { version, released } = await this.#commit(
        holder,
        () => this.service.put(ns, key, { ...put, chunkRefs: refs }),
      );
      holder.taken.length = 0;
      await this.#releaseBehind(released);
      return { version };
    }
    if (put.ifAbsent || put.ifVersion !== undefined) {
      throw new CompositionError(
        "invalid_argument",
        `a conditional put of more than ${this.putChunkRefsMax} chunks is not supported`,
      );
    }
    const parts = Math.max(Math.ceil(refs.length / this.putChunkRefsMax), 1);
    if (parts > PART_NUMBER_MAX) {
      throw new CompositionError("too_large", `object needs more than ${PART_NUMBER_MAX} parts`);
    }
    // `holder` took exactly one ref per entry of `refs`; as each part commits, the upload
    // owns that part's refs and the holder keeps only the rest.
    assert(holder.taken.length === refs.length, "one ref taken per chunk ref");
    const { uploadId } = await this.#commit(
      holder,
      () =>
        this.service.startUpload(ns, key, { contentType: put.contentType, metadata: put.metadata }),
    );
    try {
      for (let i = 0; i < parts; i++) {
        const from = i * this.putChunkRefsMax;
        const slice = refs.slice(from, from + this.putChunkRefsMax);
        const last = slice[slice.length - 1];
        // Empty only for an object of no chunks whose part sizes alone overflow one put.
        const size = last === undefined
          ? 0
          : last.offsetBytes + last.lengthBytes - slice[0]!.offsetBytes;
        await this.#commit(holder, () =>
          this.service.putPart(ns, key, uploadId, i + 1, {
            chunkRefs: rebase(slice),
            size,
            etag: "",
          }));
        holder.taken = refs.slice(from + slice.length).map((r) => r.chunkId);
      }
      const done = await this.#commit(holder, () =>
        this.service.completeUpload(ns, key, uploadId, {
          parts: Array.from({ length: parts }, (_, i) => ({ partNumber: i + 1, etag: "" })),
          etag: put.etag,
          checkEtags: false,
          partBytesMin: 0,
          // The hidden parts are not the object's: it keeps the layout it was given, if any.
          partSizes: put.partSizes ?? null,
        }));
      await this.#release(done.released);
      return { version: done.version };
    } catch (e) {
      // The abort gives back what committed parts own (whichever commits took effect); the
      // refs still in `holder` are given back, or kept if uncertain, by the caller.
      await this.#abandon(ns, key, uploadId);
      throw e;
    }
  }

  headObject(ns: NamespaceRef, key: string): Promise<ObjectInfo> {
    return this.#op("head", async () => {
      await this.#checkTenant(ns.tenantId);
      return info(this.service.get(ns, key));
    });
  }

  /**
   * The object's attributes and a stream of its bytes (or of `range`). Resolves once the
   * first chunk is read, so an object whose data cannot be read fails here, not mid-body.
   */
  async getObject(
    ns: NamespaceRef,
    key: string,
    options: GetObjectOptions = {},
  ): Promise<GetObjectResult> {
    const started = performance.now();
    let composition: Composition;
    try {
      await this.#checkTenant(ns.tenantId);
      composition = this.service.get(ns, key);
    } catch (e) {
      observe("get", started, "error");
      throw mapTenantError(e);
    }
    const size = composition.size;
    let range: { start: number; end: number } | null;
    try {
      if (options.partNumber !== undefined && options.range !== undefined) {
        throw new CompositionError("invalid_argument", "give a range or a part number, not both");
      }
      range = options.partNumber === undefined
        ? resolveRange(options.range, size)
        : resolvePart(composition.partSizes ?? null, size, options.partNumber);
    } catch (e) {
      observe("get", started, "error");
      throw e;
    }
    const start = range?.start ?? 0;
    const end = range === null ? size : range.end + 1;
    const content = composition.content;
    let body: ReadableStream<Uint8Array>;
    if (content.kind === "inline") {
      const bytes = content.bytes.subarray(start, end);
      body = new ReadableStream({
        start(controller) {
          if (bytes.length > 0) controller.enqueue(bytes);
          bytesOut.inc({ op: "get" }, bytes.length);
          observe("get", started, "ok");
          controller.close();
        },
      });
    } else {
      try {
        body = await this.#chunkBody(key, content.chunkRefs, start, end, started);
      } catch (e) {
        observe("get", started, "error");
        throw e;
      }
    }
    return { ...info(composition), range, contentLength: end - start, body };
  }

  /** Deletes `key` (a missing key succeeds with deleted: false) and gives back its chunks. */
  deleteObject(ns: NamespaceRef, key: string): Promise<{ deleted: boolean }> {
    return this.#op("delete", async () => {
      await this.#checkTenant(ns.tenantId);
      const { deleted, released } = await this.#commit(null, () => this.service.delete(ns, key));
      await this.#release(released);
      return { deleted };
    });
  }

  /**
   * A new object referencing the source's chunks (each gains a reference first, so the
   * source may change or go meanwhile). `metadata`/`contentType` replace the source's;
   * `metadataOf` makes the copy's metadata from the source's (of the version copied).
   */
  copyObject(
    source: NamespaceRef,
    sourceKey: string,
    target: NamespaceRef,
    targetKey: string,
    options: CopyOptions = {},
  ): Promise<PutObjectResult> {
    return this.#op("copy", async () => {
      await this.#checkTenant(source.tenantId);
      if (!bytesEqual(target.tenantId, source.tenantId)) await this.#checkTenant(target.tenantId);
      const from = this.service.get(source, sourceKey);
      const contentType = options.contentType ?? from.contentType;
      const metadata = options.metadataOf?.(from.metadata) ?? options.metadata ?? from.metadata;
      if (from.content.kind === "inline") {
        const bytes = from.content.bytes;
        const { version, released } = await this.#commit(
          null,
          () =>
            this.service.put(target, targetKey, {
              inline: bytes,
              size: from.size,
              contentType,
              metadata,
              etag: from.etag,
              partSizes: from.partSizes,
            }),
        );
        await this.#release(released);
        return { etag: from.etag, version, size: from.size };
      }
      const refs = from.content.chunkRefs;
      const tenant = toHex(target.tenantId);
      const ctx: RefHolder = { taken: [], uncertain: false };
      try {
        for (const r of refs) {
          try {
            await this.chunkStore.incRef(r.chunkId, { tenant });
          } catch (e) {
            throw new CompositionError(
              "not_found",
              `source ${JSON.stringify(sourceKey)} changed during the copy: ${
                (e as Error).message
              }`,
            );
          }
          ctx.taken.push(r.chunkId);
        }
        // The etag stays the source's, "-N" included, so the part layout stays with it.
        const { version } = await this.#commitRefs(target, targetKey, ctx, refs, {
          size: from.size,
          contentType,
          metadata,
          etag: from.etag,
          partSizes: from.partSizes,
        });
        return { etag: from.etag, version, size: from.size };
      } catch (e) {
        await this.#giveBack(ctx, e);
        throw e;
      }
    });
  }

  listObjects(ns: NamespaceRef, options: ListObjectsOptions = {}): Promise<ListObjectsResult> {
    return this.#op("list", async () => {
      await this.#checkTenant(ns.tenantId);
      return this.service.list(ns, options);
    });
  }

  // ---- multipart -----------------------------------------------------------------------------

  createMultipartUpload(
    ns: NamespaceRef,
    key: string,
    options: { contentType?: string; metadata?: Metadata } = {},
  ): Promise<{ uploadId: string }> {
    return this.#op("create_upload", async () => {
      await this.#checkTenant(ns.tenantId);
      return await this.#commit(null, () => this.service.startUpload(ns, key, options));
    });
  }

  /** Stores a part (replacing one of the same number); the etag is its MD5 (hex). */
  uploadPart(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    partNumber: number,
    body: Body,
    options: {
      sizeHint?: number;
      /** Kept with the part, known once its body has ended (S3: its checksums). */
      metadataAfterBody?: () => Promise<Metadata>;
    } = {},
  ): Promise<{ etag: string; size: number }> {
    return this.#op("upload_part", async () => {
      await this.#checkTenant(ns.tenantId);
      const sizeHint = checkSizeHint(options.sizeHint);
      if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > PART_NUMBER_MAX) {
        throw new CompositionError(
          "invalid_argument",
          `part number ${partNumber} is not 1..${PART_NUMBER_MAX}`,
        );
      }
      // Fails early (no_such_upload) instead of storing a part nobody can complete.
      this.service.listParts(ns, key, uploadId, { maxParts: 1 });
      const ctx = await this.#writeContext(ns.tenantId);
      try {
        const stored = await this.#storeStream(
          ctx,
          sourceOf(body),
          "upload_part",
          this.putChunkRefsMax,
        );
        checkSize(stored.size, sizeHint);
        const metadata = await options.metadataAfterBody?.();
        const { released } = await this.#commit(
          ctx,
          () =>
            this.service.putPart(ns, key, uploadId, partNumber, {
              chunkRefs: stored.refs,
              size: stored.size,
              etag: stored.etag,
              metadata,
            }),
        );
        ctx.taken.length = 0;
        await this.#release(released);
        return { etag: stored.etag, size: stored.size };
      } catch (e) {
        await this.#giveBack(ctx, e);
        throw e;
      }
    });
  }

  /**
   * Makes the listed parts, in order, the object; parts not listed are given back. The etag
   * is S3's: MD5 of the parts' binary MD5s, then "-N". Completing an upload again with the
   * same parts, while the key still holds what it made, answers that again (as S3 does: a
   * client retries a completion whose answer it lost); with other parts, no_such_upload.
   */
  completeMultipartUpload(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    parts: CompletedPart[],
    options: CompleteOptions = {},
  ): Promise<PutObjectResult> {
    return this.#op("complete_upload", async () => {
      await this.#checkTenant(ns.tenantId);
      const listed = parts.map((p) => ({ partNumber: p.partNumber, etag: unquote(p.etag) }));
      const hash = createHash("md5");
      for (const p of listed) {
        const digest = MD5_HEX.test(p.etag) ? fromHex(p.etag, 16) : null;
        if (digest === null) {
          throw new CompositionError("invalid_part", `part ${p.partNumber} etag is not an MD5`);
        }
        hash.update(digest);
      }
      const etag = `${hash.digest("hex")}-${listed.length}`;
      let done;
      try {
        done = await this.#commit(null, () =>
          this.service.completeUpload(ns, key, uploadId, {
            parts: listed,
            etag,
            partBytesMin: this.partBytesMin,
            ifAbsent: options.ifAbsent,
            ifVersion: options.ifVersion,
            metadata: options.metadata,
          }));
      } catch (e) {
        // The upload is gone: completed before (a retry, or a concurrent completion that won)
        // if the key holds what it made. Upload ids are never reused, so that is conclusive.
        const before = e instanceof CompositionError && e.code === "no_such_upload"
          ? this.#completedFrom(ns, key, uploadId, etag)
          : null;
        if (before !== null) return before;
        throw e;
      }
      await this.#release(done.released);
      return { etag, version: done.version, size: done.size };
    });
  }

  /**
   * What completing `uploadId` made, when the key still holds it: null when the key holds
   * something else; no_such_upload when it holds that upload's object but `etag` (other
   * parts) is not its etag.
   */
  #completedFrom(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    etag: string,
  ): PutObjectResult | null {
    let current: Composition;
    try {
      current = this.service.get(ns, key);
    } catch (e) {
      if (e instanceof CompositionError && e.code === "not_found") return null;
      throw e;
    }
    const id = current.completedUploadId;
    if (id === undefined || toHex(id) !== uploadId.toLowerCase()) return null;
    if (current.etag !== etag) {
      throw new CompositionError(
        "no_such_upload",
        `upload ${uploadId} was completed with other parts`,
      );
    }
    return { etag, version: current.version, size: current.size };
  }

  /** Abandons an upload and gives back every chunk its parts referenced. */
  abortMultipartUpload(ns: NamespaceRef, key: string, uploadId: string): Promise<void> {
    return this.#op("abort_upload", async () => {
      await this.#checkTenant(ns.tenantId);
      const { released } = await this.#commit(
        null,
        () => this.service.abortUpload(ns, key, uploadId),
      );
      await this.#release(released);
    });
  }

  listParts(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    options: ListPartsOptions = {},
  ): Promise<ListPartsResult> {
    return this.#op("list_parts", async () => {
      await this.#checkTenant(ns.tenantId);
      return this.service.listParts(ns, key, uploadId, options);
    });
  }

  listMultipartUploads(
    ns: NamespaceRef,
    options: ListUploadsOptions = {},
  ): Promise<ListUploadsResult> {
    return this.#op("list_uploads", async () => {
      await this.#checkTenant(ns.tenantId);
      return this.service.listUploads(ns, options);
    });
  }

  // ---- writing -------------------------------------------------------------------------------

  /** Either the whole (small) body, or a stream to chunk (holding what was read already). */
  async #inlineOrStream(
    body: Body,
    sizeHint: number | undefined,
  ): Promise<
    { inline: Uint8Array; stream: null } | { inline: null; stream: AsyncIterable<Uint8Array> }
  > {
    if (body instanceof Uint8Array) {
      return body.length <= this.inlineBytesMax
        ? { inline: body, stream: null }
        : { inline: null, stream: toAsync([body]) };
    }
    if (sizeHint !== undefined && sizeHint > this.inlineBytesMax) {
      return { inline: null, stream: body };
    }
    const reader = body.getReader();
    const head: Uint8Array[] = [];
    let headBytes = 0;
    let done = false;
    try {
      while (headBytes <= this.inlineBytesMax) {
        const r = await reader.read();
        if (r.done) {
          done = true;
          break;
        }
        head.push(r.value);
        headBytes += r.value.length;
      }
    } catch (e) {
      reader.releaseLock();
      throw e;
    }
    if (done) {
      reader.releaseLock();
      const bytes = new Uint8Array(headBytes);
      let at = 0;
      for (const piece of head) {
        bytes.set(piece, at);
        at += piece.length;
      }
      return { inline: bytes, stream: null };
    }
    return { inline: null, stream: prepend(head, reader) };
  }

  /** How this put names and seals chunks. */
  async #writeContext(tenantId: Uint8Array): Promise<WriteContext> {
    let dedupKey: Uint8Array | null = null;
    if (this.#dedup.modeFor(tenantId) === "tenant") {
      dedupKey = await this.#dedup.keyFor(tenantId);
      assert(
        dedupKey.length >= TENANT_DEDUP_KEY_BYTES_MIN,
        "a tenant dedup key is long enough for HMAC ids",
      );
    }
    const epoch = await this.#systemKeys.currentEpoch();
    return {
      tenant: toHex(tenantId),
      dedupKey,
      epoch,
      masterKey: await this.#masterKey(epoch),
      taken: [],
      uncertain: false,
    };
  }

  /**
   * Chunks `source`, stores every chunk (bounded concurrency, pooled buffers) and returns
   * the refs once all are durable, with the body's MD5. More than `refsMax` chunks fail the
   * call ("too_large") as soon as the next one is cut.
   *
   * Each chunk is copied into an envelope buffer as soon as it is cut; from there the hash
   * worker (or this thread, without one) computes its id and feeds the MD5 in stream order,
   * and the chunk is sealed in place and stored, while the stream moves on.
   */
  async #storeStream(
    ctx: WriteContext,
    source: AsyncIterable<Uint8Array>,
    op: string,
    refsMax: number,
  ): Promise<StoredChunks> {
    const hashing = this.#hashing;
    const hasher = hashing === null && this.#hasher !== null && !this.#hasher.failed
      ? this.#hasher
      : null;
    const session = hasher?.start(ctx.dedupKey) ?? 0;
    // Off-loop hashing: the MD5 is fed chunk by chunk in stream order (each update after the
    // last), while chunk ids run side by side.
    const md5Async: AsyncStreamDigest | null = hashing?.md5Async() ?? null;
    const md5 = hasher === null && hashing === null ? createHash("md5") : null;
    const assembly = await this.#assembly.acquire();
    const refs: ChunkRef[] = [];
    let total = 0;
    const inFlight = new Set<Promise<void>>();
    const failed: { error: unknown }[] = [];
    const settle = async () => {
      while (inFlight.size > 0) await Promise.race(inFlight);
    };
    /** Hashes the chunk in `buffer` (plaintext at the envelope body) and stores it. */
    const launch = (ref: ChunkRef, buffer: EnvelopeBuffer, last: boolean) => {
      const length = ref.lengthBytes;
      let id: Promise<Uint8Array>;
      if (hasher !== null) {
        id = hasher.chunk(session, buffer, ENVELOPE_HEADER_BYTES, length, last);
      } else if (hashing !== null) {
        // Both read the plaintext where it lies; sealing overwrites it in place, so the
        // chunk's id is ready only when its MD5 update has also finished.
        const body = buffer.bytes.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + length);
        id = Promise.allSettled([md5Async!.update(body), hashing.chunkIdAsync(body, ctx.dedupKey)])
          .then(([m, i]) => {
            if (m.status === "rejected") throw m.reason;
            if (i.status === "rejected") throw i.reason;
            return i.value;
          });
      } else {
        const body = buffer.bytes.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + length);
        md5!.update(body);
        id = Promise.resolve(
          ctx.dedupKey === null
            ? computeChunkId("global", body)
            : computeChunkId("tenant", body, ctx.dedupKey),
        );
      }
      const task = this.#storeChunk(ctx, ref, id, buffer).catch((error) =>
        void failed.push({ error })
      );
      inFlight.add(task);
      task.finally(() => inFlight.delete(task));
    };
    let held: { ref: ChunkRef; buffer: EnvelopeBuffer } | null = null;
    try {
      const chunks = chunkStream(counting(source, op), { ...this.cdc, buffer: assembly });
      for await (const chunk of chunks) {
        const length = chunk.bytes.length;
        total = chunk.offset + length;
        if (total > ENGINE_OBJECT_BYTES_MAX) {
          throw new CompositionError(
            "too_large",
            `object exceeds ${ENGINE_OBJECT_BYTES_MAX} bytes`,
          );
        }
        if (refs.length === refsMax) {
          throw new CompositionError("too_large", `more than ${refsMax} chunks`);
        }
        while (inFlight.size >= this.#chunksInFlightMax) await Promise.race(inFlight);
        if (failed.length > 0) break;
        const buffer = await this.#envelopes.acquire();
        buffer.bytes.set(chunk.bytes, ENVELOPE_HEADER_BYTES);
        const ref: ChunkRef = {
          chunkId: NO_CHUNK_ID,
          offsetBytes: chunk.offset,
          lengthBytes: length,
        };
        refs.push(ref);
        // Each chunk is launched once the next one is cut (or the body ended), so the last
        // one goes to the hasher marked last and brings the MD5 back with its id.
        if (held !== null) launch(held.ref, held.buffer, false);
        held = { ref, buffer };
      }
      if (held !== null && failed.length === 0) {
        launch(held.ref, held.buffer, true);
        held = null;
      }
    } catch (e) {
      failed.push({ error: e });
    } finally {
      if (held !== null) this.#envelopes.release(held.buffer);
      await settle();
      this.#assembly.release(assembly);
    }
    if (failed.length > 0) {
      hasher?.abort(session);
      await md5Async?.dispose();
      throw failed[0]!.error;
    }
    const etag = hasher !== null
      ? await hasher.finish(session)
      : md5Async !== null
      ? toHex(await md5Async.digest())
      : md5!.digest("hex");
    return { refs, size: total, etag };
  }

  /**
   * Takes one reference on the chunk in `buffer` (plaintext at the envelope body) once its
   * id is known: an existing chunk gains one; a new one is sealed in place and stored.
   */
  async #storeChunk(
    ctx: WriteContext,
    ref: ChunkRef,
    idPromise: Promise<Uint8Array>,
    buffer: EnvelopeBuffer,
  ): Promise<void> {
    try {
      const id = await idPromise;
      ref.chunkId = id;
      if ((await this.chunkStore.stat(id)) !== null) {
        try {
          await this.chunkStore.incRef(id, { tenant: ctx.tenant });
          ctx.taken.push(id);
          this.#stats.chunksDeduplicated++;
          chunksTotal.inc({ outcome: "deduplicated" });
          return;
        } catch (e) {
          // Erased by GC between stat and incRef: store it afresh below.
          if ((e as { code?: string }).code !== "not_found") throw e;
        }
      }
      const plaintext = buffer.bytes.subarray(
        ENVELOPE_HEADER_BYTES,
        ENVELOPE_HEADER_BYTES + ref.lengthBytes,
      );
      const envelope = await sealChunk({
        aead: this.#aead,
        masterKey: ctx.masterKey,
        epoch: ctx.epoch,
        chunkId: id,
        plaintext,
        out: buffer.bytes,
      });
      const { created } = await this.chunkStore.put(id, envelope, { tenant: ctx.tenant });
      ctx.taken.push(id);
      if (created) this.#stats.chunksStored++;
      else this.#stats.chunksDeduplicated++;
      chunksTotal.inc({ outcome: created ? "stored" : "deduplicated" });
    } finally {
      this.#envelopes.release(buffer);
    }
  }

  /** Lookups of the chunk cache so far and what it holds. */
  chunkCacheStats(): { hits: number; misses: number; bytes: number; entries: number } {
    const c = this.#chunkCache;
    return { hits: c.hits, misses: c.misses, bytes: c.bytes, entries: c.size };
  }

  // ---- reading -------------------------------------------------------------------------------

  async #chunkBody(
    key: string,
    refs: readonly ChunkRef[],
    start: number,
    end: number,
    started: number,
  ): Promise<ReadableStream<Uint8Array>> {
    // The refs the range touches: [first, last).
    const last = firstStartingAt(refs, end);
    const first = start === end ? last : firstEndingAfter(refs, start);
    const readAhead = this.#readAhead;
    const budget = this.#readBudget;
    // Each chunk fetched holds its length of the read budget until its reader takes it
    // (or, after a cancel or failure, until its fetch settles).
    const pending: { bytes: number; plain: Promise<Uint8Array> }[] = [];
    let next = first;
    let delivered = 0;
    let finished = false;
    const cost = (ref: ChunkRef) => Math.min(ref.lengthBytes, budget.bytesMax);
    const launch = () => {
      const ref = refs[next++]!;
      const from = Math.max(start - ref.offsetBytes, 0);
      const to = Math.min(end - ref.offsetBytes, ref.lengthBytes);
      const plain = this.#readChunk(key, ref).then((p) => p.subarray(from, to));
      plain.catch(() => {}); // observed when its turn comes (or never, after a cancel)
      pending.push({ bytes: cost(ref), plain });
    };
    /** Read-ahead: only with budget that is free now. */
    const fill = () => {
      while (next < last && pending.length < readAhead && budget.tryTake(cost(refs[next]!))) {
        launch();
      }
    };
    /** Gives back the budget of every chunk still pending, once each fetch settles. */
    const drop = () => {
      for (const { bytes, plain } of pending.splice(0)) {
        const give = () => budget.give(bytes);
        plain.then(give, give);
      }
      next = last;
    };
    const finish = (outcome: string) => {
      if (finished) return;
      finished = true;
      bytesOut.inc({ op: "get" }, delivered);
      observe("get", started, outcome);
    };
    // The first chunk is read before answering, so an unreadable object fails the call,
    // and a read that finds no budget is refused before it starts.
    if (next < last) {
      if (!budget.tryTake(cost(refs[next]!))) throw budget.exhausted();
      launch();
    }
    fill();
    if (pending.length > 0) {
      try {
        await pending[0]!.plain;
      } catch (e) {
        drop();
        throw e;
      }
    }
    // A reader that takes nothing for #readStallMs loses what was fetched for it.
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    const stallMs = this.#readStallMs;
    const watch = (controller: ReadableStreamDefaultController<Uint8Array>) => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        if (finished) return;
        drop();
        finish("stalled");
        controller.error(
          new CompositionError("unavailable", `object ${JSON.stringify(key)}: reader stalled`),
        );
      }, stallMs);
      Deno.unrefTimer(stallTimer as unknown as number);
    };
    return new ReadableStream<Uint8Array>({
      start: (controller) => watch(controller),
      pull: async (controller) => {
        clearTimeout(stallTimer);
        if (finished) return;
        if (pending.length === 0 && next < last) {
          // Read-ahead found no free budget: wait in line for the chunk the reader needs.
          const bytes = cost(refs[next]!);
          try {
            await budget.take(bytes);
          } catch (e) {
            finish("error");
            controller.error(e);
            return;
          }
          if (next >= last) {
            budget.give(bytes); // cancelled while waiting
            return;
          }
          launch();
        }
        const head = pending.shift();
        if (head === undefined) {
          finish("ok");
          controller.close();
          return;
        }
        fill();
        try {
          const bytes = await head.plain;
          delivered += bytes.length;
          controller.enqueue(bytes);
          watch(controller);
        } catch (e) {
          drop();
          finish("error");
          controller.error(e);
        } finally {
          budget.give(head.bytes);
        }
      },
      cancel: () => {
        clearTimeout(stallTimer);
        drop();
        finish("cancelled");
      },
    }, { highWaterMark: 0 });
  }

  /** Bytes of the read-ahead budget in use, and reads waiting for it. */
  readBudgetStats(): { usedBytes: number; bytesMax: number; waiting: number } {
    const b = this.#readBudget;
    return { usedBytes: b.usedBytes, bytesMax: b.bytesMax, waiting: b.waiting };
  }

  /**
   * One chunk's plaintext: from the chunk cache, or fetched (verified, rebuilt if degraded),
   * opened in place and cached. The result is read-only (it may be the cache's copy).
   */
  async #readChunk(key: string, ref: ChunkRef): Promise<Uint8Array> {
    const cacheKey = this.#chunkCache.maxBytes > 0 ? toHex(ref.chunkId) : "";
    if (cacheKey !== "") {
      const hit = this.#chunkCache.get(cacheKey);
      if (hit !== undefined && hit.length >= ref.lengthBytes) return hit;
    }
    let envelope: Uint8Array;
    try {
      envelope = await this.chunkStore.get(ref.chunkId);
    } catch (e) {
      throw new CompositionError(
        "unavailable",
        `object ${JSON.stringify(key)}: chunk ${toHex(ref.chunkId)} cannot be read: ` +
          (e as Error).message,
      );
    }
    let plaintext: Uint8Array;
    try {
      plaintext = await openChunk({
        aead: this.#aead,
        masterKeyFor: (epoch) => this.#masterKey(epoch),
        chunkId: ref.chunkId,
        envelope,
        out: envelope.subarray(ENVELOPE_HEADER_BYTES),
      });
    } catch (e) {
      throw new CompositionError(
        "unavailable",
        `object ${JSON.stringify(key)}: chunk ${toHex(ref.chunkId)} does not open: ` +
          (e as Error).message,
      );
    }
    if (plaintext.length < ref.lengthBytes) {
      throw new CompositionError(
        "unavailable",
        `object ${JSON.stringify(key)}: chunk ${toHex(ref.chunkId)} holds ${plaintext.length} ` +
          `bytes, the object uses ${ref.lengthBytes}`,
      );
    }
    if (cacheKey !== "") this.#chunkCache.set(cacheKey, plaintext);
    return plaintext;
  }

  // ---- helpers -------------------------------------------------------------------------------

  async #masterKey(epoch: number): Promise<Uint8Array> {
    let key = this.#masterKeys.get(epoch);
    if (key === undefined) {
      key = await this.#systemKeys.masterKey(epoch);
      if (this.#masterKeys.size >= ENGINE_MASTER_KEYS_CACHED_MAX) {
        this.#masterKeys.delete(this.#masterKeys.keys().next().value!);
      }
      this.#masterKeys.set(epoch, key);
    }
    return key;
  }

  async #checkTenant(tenantId: Uint8Array): Promise<void> {
    if (this.#gate === null) return;
    try {
      await this.#gate.probe(tenantId);
    } catch (e) {
      throw mapTenantError(e);
    }
  }

  /**
   * Runs a commit. A failure that may still have taken effect (timeouts, "unavailable",
   * anything unexpected) marks `holder` uncertain, so its refs are not given back. A seal
   * refused for a shredded tenant becomes "namespace_not_found".
   */
  async #commit<T>(holder: RefHolder | null, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      const refused = e instanceof PayloadUnreadableError ||
        (e instanceof CompositionError && e.code !== "unavailable");
      if (!refused && holder !== null) holder.uncertain = true;
      throw mapTenantError(e);
    }
  }

  /**
   * After a failed operation: gives back the refs it took, unless the commit's fate is
   * unknown (it may have taken effect and now own them): then they are left, and logged.
   */
  async #giveBack(holder: RefHolder, e: unknown): Promise<void> {
    const ids = holder.taken.splice(0);
    if (ids.length === 0) return;
    if (holder.uncertain) {
      this.#stats.releaseFailures += ids.length;
      releasesTotal.inc({ outcome: "failed" }, ids.length);
      this.#log.warn("commit outcome unknown: chunk references kept (space may leak)", {
        chunks: ids.length,
        error: (e as Error).message,
      });
      return;
    }
    await this.#release(ids);
  }

  /** Aborts a hidden upload after a failed large put (its parts' refs come back). */
  async #abandon(ns: NamespaceRef, key: string, uploadId: string): Promise<void> {
    try {
      const { released } = await this.service.abortUpload(ns, key, uploadId);
      await this.#release(released);
    } catch (e) {
      this.#log.warn("could not abort the hidden upload of a failed put", {
        uploadId,
        error: (e as Error).message,
      });
    }
  }

  /** Drops one reference per id; failures are logged (leaked space), never thrown. */
  /**
   * Gives back what an overwrite released without holding up the writer: the new version is
   * committed and durable, and the old chunks only wait for their reference counts to drop
   * (a crash in between leaks space, never data). Past ENGINE_RELEASES_BEHIND_MAX releases
   * in the background, the writer waits for its own.
   */
  async #releaseBehind(ids: readonly Uint8Array[]): Promise<void> {
    if (ids.length === 0) return;
    const release = this.#release(ids);
    if (this.#behind.size >= ENGINE_RELEASES_BEHIND_MAX) return await release;
    this.#behind.add(release);
    void release.finally(() => this.#behind.delete(release));
  }

  async #release(ids: readonly Uint8Array[]): Promise<void> {
    for (let at = 0; at < ids.length; at += ENGINE_RELEASES_IN_FLIGHT_MAX) {
      const batch = ids.slice(at, at + ENGINE_RELEASES_IN_FLIGHT_MAX);
      const results = await Promise.allSettled(batch.map((id) => this.chunkStore.decRef(id)));
      results.forEach((r, i) => {
        if (r.status === "fulfilled") {
          this.#stats.refsReleased++;
          releasesTotal.inc({ outcome: "ok" });
          return;
        }
        this.#stats.releaseFailures++;
        releasesTotal.inc({ outcome: "failed" });
        this.#log.error("could not release a chunk reference", {
          chunk: toHex(batch[i]!),
          error: (r.reason as Error).message,
        });
      });
    }
  }

  async #op<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const result = await fn();
      observe(op, started, "ok");
      return result;
    } catch (e) {
      observe(op, started, "error");
      throw mapTenantError(e);
    }
  }
}

// ---- pure helpers --------------------------------------------------------------------------

function observe(op: string, started: number, outcome: string): void {
  opSeconds.observe({ op, outcome }, (performance.now() - started) / 1000);
}

function info(c: Composition): ObjectInfo {
  return {
    key: c.key,
    size: c.size,
    etag: c.etag,
    version: c.version,
    contentType: c.contentType,
    metadata: c.metadata,
    createdMs: c.createdMs,
    modifiedMs: c.modifiedMs,
    partSizes: c.partSizes ?? null,
    ...(c.completedUploadId !== undefined && { completedUploadId: toHex(c.completedUploadId) }),
  };
}

/** A put's metadata: given, or asked for once the body has ended. */
async function metadataOf(options: PutObjectOptions): Promise<Metadata | undefined> {
  return options.metadataAfterBody === undefined
    ? options.metadata
    : await options.metadataAfterBody();
}

function md5Hex(bytes: Uint8Array): string {
  return createHash("md5").update(bytes).digest("hex");
}

function unquote(etag: string): string {
  return etag.length >= 2 && etag.startsWith('"') && etag.endsWith('"') ? etag.slice(1, -1) : etag;
}

/**
 * A shredded tenant's key refusing to seal or open looks like a namespace that is gone; a
 * pool with no room is "no_space" (S3 507, NFS NOSPC, FUSE ENOSPC), never an internal error.
 */
function mapTenantError(e: unknown): unknown {
  if (e instanceof ChunkStoreError && e.code === "pool_full") {
    return new CompositionError("no_space", e.message);
  }
  // Nodes holding (or meant to hold) the chunk are down, or the store is recovering from a
  // failed index commit: retry later (S3 503), not an internal error.
  if (
    e instanceof ChunkStoreError &&
    (e.code === "insufficient_devices" || e.code === "unavailable")
  ) {
    return new CompositionError("unavailable", e.message);
  }
  if (e instanceof PayloadUnreadableError) {
    return new CompositionError(
      "namespace_not_found",
      `the tenant's key is not usable (destroyed: crypto-shred): ${e.message}`,
    );
  }
  return e;
}

function checkSizeHint(sizeHint: number | undefined): number | undefined {
  if (sizeHint === undefined) return undefined;
  if (!Number.isSafeInteger(sizeHint) || sizeHint < 0 || sizeHint > ENGINE_OBJECT_BYTES_MAX) {
    throw new CompositionError("invalid_argument", `sizeHint ${sizeHint} is not a valid size`);
  }
  return sizeHint;
}

function checkSize(size: number, sizeHint: number | undefined): void {
  if (sizeHint !== undefined && size !== sizeHint) {
    throw new CompositionError(
      "invalid_argument",
      `the body was ${size} bytes, ${sizeHint} were announced (truncated or oversized upload)`,
    );
  }
}

function sourceOf(body: Body): AsyncIterable<Uint8Array> {
  return body instanceof Uint8Array ? toAsync([body]) : body;
}

async function* toAsync(pieces: Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* pieces;
}

/** The pieces already read, then the rest of the reader (cancelled if abandoned). */
async function* prepend(
  head: Uint8Array[],
  reader: ReadableStreamDefaultReader<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  let done = false;
  try {
    yield* head;
    for (;;) {
      const r = await reader.read();
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** Passes pieces through, counting them. */
async function* counting(
  source: AsyncIterable<Uint8Array>,
  op: string,
): AsyncGenerator<Uint8Array> {
  for await (const piece of source) {
    if (piece.length === 0) continue;
    bytesIn.inc({ op }, piece.length);
    yield piece;
  }
}
