// The native client's view of the cluster: the object interface gateways use
// (NfsObjectBackend), served by whichever node of the list answers. Chunking (the server's
// CDC), chunk ids and AES-256-GCM sealing happen here, on the compute node; a node sees
// sealed chunks (over the framed client transport) and metadata (over ClientService), never
// plaintext. Keys are per chunk, handed out by the node for the chunks this tenant writes or
// reads. When a node dies mid-operation, the operation continues on another node of the
// list: sealed chunks of a put are kept until its commit, so they can be stored again there.

import { createHash, createHmac } from "node:crypto";
import { assert, formatHostPort, type HostPort, parseHostPort } from "../base/mod.ts";
import { chunkStream, computeChunkId } from "../chunk/mod.ts";
import {
  type Body,
  CompositionError,
  type CompositionErrorCode,
  type CopyOptions,
  type GetObjectOptions,
  type GetObjectResult,
  type ListObjectsOptions,
  type ListObjectsResult,
  type Namespace,
  namespaceIdFor,
  type NamespaceKind,
  type NamespaceRef,
  type ObjectInfo,
  type PutObjectOptions,
  type PutObjectResult,
  resolvePart,
  resolveRange,
  toHex,
} from "../composition/mod.ts";
import { type Aead, WebCryptoAead } from "../crypto/mod.ts";
import type { NfsObjectBackend } from "../nfs/mod.ts";
import { log as rootLog, type Logger } from "../obs/mod.ts";
import {
  CLIENT_SERVICE,
  type ClientHelloResponse,
  type ClientNamespaceInfo,
  type ClientObjectInfo,
  type ClientObjectManifest,
  type ClientServiceMethods,
  ClientTransportConnection,
  ClientTransportError,
  createGrpcClient,
  type GrpcClient,
  GrpcStatus,
  GrpcStatusError,
  type TlsMaterial,
} from "../transport/mod.ts";
import { bypassChunkCache, type ChunkCache } from "./cache_port.ts";
import { envelopeEpoch, openWithKey, sealWithKey } from "./sealing.ts";

/** Chunk ids asked about (and keys handed out) in one PrepareChunks call. */
export const CLIENT_PREPARE_BATCH_CHUNKS = 16;
/** Batches of one put being stored while the next is cut. */
export const CLIENT_PUT_BATCHES_IN_FLIGHT = 2;
/**
 * Chunks one get fetches ahead of its reader (at most 8 x 4 MiB held). Measured with the
 * 64 MiB bench on a loaded 2-core host: 4 ahead read 29-98 MB/s, 8 ahead 119-132 MB/s (each
 * fetch is a round trip to the node, an erasure-coded read there and an open here).
 */
export const CLIENT_READ_AHEAD_CHUNKS = 8;
/**
 * Bytes (plaintext and sealed) one put keeps until its commit, to store them again on another
 * node; a larger put keeps nothing and fails if its node is lost.
 */
export const CLIENT_PUT_RETAINED_BYTES_MAX = 1024 * 1024 * 1024;
/** Nodes tried, in turn, before an operation fails. */
export const CLIENT_FAILOVER_ATTEMPTS_MAX = 12;
/** How long an operation keeps trying nodes before it fails. */
export const CLIENT_FAILOVER_DEADLINE_MS = 90_000;
/** Pause before the next node after a failure (times the attempt number, up to 2 s). */
export const CLIENT_FAILOVER_BACKOFF_MS = 200;
/** Deadline of one metadata call. */
export const CLIENT_CALL_DEADLINE_MS = 30_000;
/** Namespace names remembered by id (a NamespaceRef carries only the id). */
export const CLIENT_NAMESPACE_NAMES_MAX = 4096;
/** Candidate node addresses (given and discovered). */
export const CLIENT_NODES_MAX = 256;

export interface ClusterClientOptions {
  /** Data-path addresses (host:9100) of some nodes; the rest are discovered. */
  addrs: HostPort[];
  /** The tenant's client certificate and the cluster CA (mTLS), or null on loopback. */
  tls: TlsMaterial | null;
  logger?: Logger;
  /** Where chunk plaintexts are kept between reads (default: none, bypass). */
  cache?: ChunkCache;
  /** Default: WebCrypto AES-256-GCM. */
  aead?: Aead;
  /** Default CLIENT_PUT_RETAINED_BYTES_MAX. */
  putRetainedBytesMax?: number;
}

/** A node the client talks to: its gRPC channel, session and transport connection. */
interface Link {
  addr: HostPort;
  grpc: GrpcClient<ClientServiceMethods>;
  hello: ClientHelloResponse;
  session: string;
  conn: ClientTransportConnection;
  broken: boolean;
}

/** What a read knows about its object: chunk keys by epoch, sessions granted the chunks. */
interface ReadContext {
  namespace: string;
  key: string;
  keys: Map<string, Map<number, Uint8Array>>;
  granted: Set<string>;
}

/** What one put keeps for failover, and whether it stopped keeping (past the bound). */
interface RetainedPut {
  bytes: number;
  dropped: boolean;
  /** The put's chunks so far. */
  chunks: PendingChunk[];
}

/** A node lost in a put that kept nothing to store again elsewhere. */
function lostPut(): CompositionError {
  return new CompositionError(
    "unavailable",
    `the node storing this put was lost, and the put (over ${CLIENT_PUT_RETAINED_BYTES_MAX} ` +
      "bytes) kept no copy to store again on another node: write it again",
  );
}

interface PendingChunk {
  id: Uint8Array;
  offset: number;
  length: number;
  plaintext: Uint8Array | null;
  envelope: Uint8Array | null;
  /** Sessions (hex) on which this chunk is stored or proved. */
  storedOn: Set<string>;
  /** Its batch is stored (what the put keeps of it may be dropped). */
  done: boolean;
}

const RETRYABLE_GRPC: ReadonlySet<number> = new Set([
  GrpcStatus.UNAVAILABLE,
  GrpcStatus.DEADLINE_EXCEEDED,
  GrpcStatus.CANCELLED,
  GrpcStatus.UNKNOWN,
  GrpcStatus.INTERNAL,
]);

const CODE_BY_STATUS: Partial<Record<number, CompositionErrorCode>> = {
  [GrpcStatus.INVALID_ARGUMENT]: "invalid_argument",
  [GrpcStatus.NOT_FOUND]: "not_found",
  [GrpcStatus.ALREADY_EXISTS]: "exists",
  [GrpcStatus.FAILED_PRECONDITION]: "precondition_failed",
  [GrpcStatus.RESOURCE_EXHAUSTED]: "no_space",
  [GrpcStatus.UNAVAILABLE]: "unavailable",
  [GrpcStatus.PERMISSION_DENIED]: "namespace_not_found",
};

/** A node's refusal as the engine would have raised it (BucketFs maps these to errno). */
function asCompositionError(e: unknown): unknown {
  if (!(e instanceof GrpcStatusError)) return e;
  const code = (e.metadata["kiseki-code"] as CompositionErrorCode | undefined) ??
    CODE_BY_STATUS[e.code] ?? "unavailable";
  return new CompositionError(code, e.message);
}

function isNoSession(e: unknown): boolean {
  return e instanceof GrpcStatusError && e.metadata["kiseki-code"] === "no_session";
}

function isRetryable(e: unknown): boolean {
  if (e instanceof ClientTransportError) return e.kind === "unavailable";
  if (e instanceof GrpcStatusError) return RETRYABLE_GRPC.has(e.code) || isNoSession(e);
  return false;
}

/** One chunk of an object's current version (see ClusterClient.objectChunks()). */
export interface ObjectChunk {
  id: Uint8Array;
  /** Plaintext bytes of the chunk the object uses. */
  length: number;
  /** The chunk's sealed bytes from a node (with failover). */
  fetchSealed(): Promise<Uint8Array>;
}

/**
 * An object's version as it was when opened: its chunk list and the keys learned so far are
 * kept, so a read at any offset fetches just the chunks under it (through the chunk cache),
 * with no metadata round trip (see ClusterClient.openReader()).
 */
export interface ObjectReader {
  readonly info: ObjectInfo;
  /** `count` bytes at `offset` of the opened version (fewer at its end, none past it). */
  read(offset: number, count: number): Promise<Uint8Array>;
}

export class ClusterClient implements NfsObjectBackend {
  readonly tenantId: Uint8Array;
  readonly #tls: TlsMaterial | null;
  readonly #log: Logger;
  readonly #cache: ChunkCache;
  readonly #aead: Aead;
  readonly #retainedBytesMax: number;
  readonly #candidates: HostPort[];
  readonly #names = new Map<string, string>();
  #next = 0;
  #link: Link | null;
  #linking: Promise<Link> | null = null;
  #closed = false;

  private constructor(options: ClusterClientOptions, link: Link) {
    this.#tls = options.tls;
    this.#log = options.logger ?? rootLog;
    this.#cache = options.cache ?? bypassChunkCache;
    this.#aead = options.aead ?? new WebCryptoAead();
    this.#retainedBytesMax = options.putRetainedBytesMax ?? CLIENT_PUT_RETAINED_BYTES_MAX;
    assert(this.#retainedBytesMax >= 0, "putRetainedBytesMax >= 0");
    this.#candidates = [...options.addrs];
    this.#link = link;
    this.tenantId = hexBytes(link.hello.tenantId);
    this.#learn(link);
  }

  /** Connects to the first node of `addrs` that answers. */
  static async connect(options: ClusterClientOptions): Promise<ClusterClient> {
    assert(options.addrs.length > 0, "a cluster client needs at least one node address");
    assert(options.addrs.length <= CLIENT_NODES_MAX, `at most ${CLIENT_NODES_MAX} addresses`);
    const errors: string[] = [];
    for (const addr of options.addrs) {
      try {
        const link = await openLink(addr, options.tls);
        return new ClusterClient(options, link);
      } catch (e) {
        errors.push(`${formatHostPort(addr)}: ${(e as Error).message}`);
      }
    }
    throw new CompositionError(
      "unavailable",
      `no node of the cluster answered: ${errors.join("; ")}`,
    );
  }

  /** This object, as the FUSE mount's BucketFs sees it. */
  get backend(): NfsObjectBackend {
    return this;
  }

  /** The node the client talks to now. */
  get node(): HostPort | null {
    return this.#link?.addr ?? null;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#drop(this.#link);
    this.#link = null;
    await this.#linking?.catch(() => {});
  }

  // ---- namespaces --------------------------------------------------------------------------

  namespace(tenantId: Uint8Array, name: string): NamespaceRef {
    this.#checkTenant(tenantId);
    const ref = { tenantId, id: namespaceIdFor(tenantId, name), name };
    const key = toHex(ref.id);
    if (!this.#names.has(key)) {
      if (this.#names.size >= CLIENT_NAMESPACE_NAMES_MAX) {
        this.#names.delete(this.#names.keys().next().value!);
      }
      this.#names.set(key, name);
    }
    return ref;
  }

  async createNamespace(
    tenantId: Uint8Array,
    name: string,
    kind: NamespaceKind = "bucket",
  ): Promise<Namespace> {
    this.#checkTenant(tenantId);
    const info = await this.#call((l) => l.grpc.CreateNamespace({ name, kind }));
    return this.#namespaceOf(info);
  }

  async deleteNamespace(ns: NamespaceRef): Promise<void> {
    const name = this.#nameOf(ns);
    await this.#call((l) => l.grpc.DeleteNamespace({ name }));
  }

  async getNamespace(ns: NamespaceRef): Promise<Namespace> {
    const name = this.#nameOf(ns);
    return this.#namespaceOf(await this.#call((l) => l.grpc.GetNamespace({ name })));
  }

  async listNamespaces(tenantId: Uint8Array): Promise<Namespace[]> {
    this.#checkTenant(tenantId);
    const r = await this.#call((l) => l.grpc.ListNamespaces({}));
    return r.namespaces.map((n) => this.#namespaceOf(n));
  }

  // ---- objects -----------------------------------------------------------------------------

  async headObject(ns: NamespaceRef, key: string): Promise<ObjectInfo> {
    const namespace = this.#nameOf(ns);
    return infoOf(await this.#call((l) => l.grpc.HeadObject({ namespace, key })));
  }

  async deleteObject(ns: NamespaceRef, key: string): Promise<{ deleted: boolean }> {
    const namespace = this.#nameOf(ns);
    const r = await this.#call((l) => l.grpc.DeleteObject({ namespace, key }));
    return { deleted: r.deleted };
  }

  async copyObject(
    source: NamespaceRef,
    sourceKey: string,
    target: NamespaceRef,
    targetKey: string,
    options: CopyOptions = {},
  ): Promise<PutObjectResult> {
    const sourceNamespace = this.#nameOf(source);
    const targetNamespace = this.#nameOf(target);
    let metadata = options.metadata;
    if (options.metadataOf !== undefined) {
      metadata = options.metadataOf((await this.headObject(source, sourceKey)).metadata);
    }
    const replace = metadata !== undefined || options.contentType !== undefined;
    const r = await this.#call((l) =>
      l.grpc.CopyObject({
        sourceNamespace,
        sourceKey,
        targetNamespace,
        targetKey,
        replaceMetadata: replace,
        metadata: { ...(metadata ?? {}) },
        contentType: options.contentType ?? "",
      })
    );
    return { etag: r.etag, version: r.version, size: r.size };
  }

  async listObjects(
    ns: NamespaceRef,
    options: ListObjectsOptions = {},
  ): Promise<ListObjectsResult> {
    const namespace = this.#nameOf(ns);
    const r = await this.#call((l) =>
      l.grpc.ListObjects({
        namespace,
        prefix: options.prefix ?? "",
        delimiter: options.delimiter ?? "",
        startAfter: options.startAfter ?? "",
        continuationToken: options.continuationToken ?? "",
        maxKeys: options.maxKeys ?? 0,
      })
    );
    return {
      objects: r.objects.map((o) => ({ ...o })),
      commonPrefixes: r.commonPrefixes,
      keyCount: r.keyCount,
      isTruncated: r.isTruncated,
      nextContinuationToken: r.nextContinuationToken || null,
      nextMarker: r.nextMarker || null,
    };
  }

  /**
   * Stores `body` as `key`'s new version: cut into chunks as a node would cut it, each named
   * and sealed here, stored over the client transport, then committed. Resolves once the
   * commit is acknowledged (every chunk durable first). A node lost on the way is replaced by
   * another; the chunks it had not made durable for this put are stored again there.
   */
  async putObject(
    ns: NamespaceRef,
    key: string,
    body: Body,
    options: PutObjectOptions = {},
  ): Promise<PutObjectResult> {
    const namespace = this.#nameOf(ns);
    const hello = (await this.#current()).hello;
    const mode = hello.dedupMode === "tenant" ? "tenant" : "global";
    const dedupKey = new Uint8Array(hello.dedupKey);
    const md5 = createHash("md5");
    const chunks: PendingChunk[] = [];
    let batch: PendingChunk[] = [];
    const sealedById = new Map<string, Uint8Array>();
    const storing: Promise<void>[] = [];
    const kept: RetainedPut = { bytes: 0, dropped: false, chunks };
    let size = 0;
    const source = body instanceof Uint8Array ? [body] : body;
    for await (
      const piece of chunkStream(source, {
        minBytes: hello.cdcMinBytes,
        avgBytes: hello.cdcAvgBytes,
        maxBytes: hello.cdcMaxBytes,
        normalizationLevel: hello.cdcNormalizationLevel,
      })
    ) {
      const plaintext = piece.bytes.slice();
      md5.update(plaintext);
      size = piece.offset + plaintext.length;
      const chunk: PendingChunk = {
        id: computeChunkId(mode, plaintext, mode === "tenant" ? dedupKey : undefined),
        offset: piece.offset,
        length: plaintext.length,
        plaintext,
        envelope: null,
        storedOn: new Set(),
        done: false,
      };
      chunks.push(chunk);
      batch.push(chunk);
      if (chunks.length > hello.commitChunkRefsMax) {
        throw new CompositionError(
          "too_large",
          `an object of more than ${hello.commitChunkRefsMax} chunks cannot be committed by a client`,
        );
      }
      if (batch.length === CLIENT_PREPARE_BATCH_CHUNKS) {
        // Batches are stored while the next is cut: chunking overlaps the network.
        if (storing.length >= CLIENT_PUT_BATCHES_IN_FLIGHT) await storing.shift()!;
        const store = this.#storeBatch(batch, sealedById, kept);
        store.catch(() => {}); // awaited below
        storing.push(store);
        batch = [];
      }
    }
    for (const store of storing.splice(0)) await store;
    if (batch.length > 0) await this.#storeBatch(batch, sealedById, kept);
    if (options.sizeHint !== undefined && options.sizeHint !== size) {
      throw new CompositionError(
        "invalid_argument",
        `the body holds ${size} bytes, ${options.sizeHint} were announced`,
      );
    }
    const etag = md5.digest("hex");
    const metadata = options.metadataAfterBody !== undefined
      ? await options.metadataAfterBody()
      : options.metadata;
    const r = await this.#call(async (l) => {
      // Chunks not known to this node's session (another node took over) are stored again.
      const missing = chunks.filter((c) => !c.storedOn.has(l.session));
      if (missing.length > 0) await this.#storeOn(l, missing, sealedById);
      return await l.grpc.CommitObject({
        namespace,
        key,
        session: hexBytes(l.session),
        chunks: chunks.map((c) => ({ chunkId: c.id, offset: c.offset, length: c.length })),
        size,
        etag,
        contentType: options.contentType ?? "",
        metadata: { ...(metadata ?? {}) },
        ifAbsent: options.ifAbsent ?? false,
        hasIfVersion: options.ifVersion !== undefined,
        ifVersion: options.ifVersion ?? 0,
      });
    });
    return { etag: r.etag, version: r.version, size: r.size };
  }

  /** Seals and stores one batch; returns the bytes it retains (sealed and plaintext). */
  async #storeBatch(
    batch: PendingChunk[],
    sealedById: Map<string, Uint8Array>,
    kept: RetainedPut,
  ): Promise<void> {
    await this.#call((l) => this.#storeOn(l, batch, sealedById));
    for (const c of batch) {
      c.done = true;
      if (c.envelope !== null && c.plaintext !== null) {
        this.#cache.wrote(c.id, c.envelope, c.plaintext);
      }
      if (kept.dropped) {
        c.plaintext = c.envelope = null;
        continue;
      }
      // Plaintext and envelope stay until the commit: another node may need the chunk
      // uploaded again, or (holding it already) a proof computed from the plaintext.
      kept.bytes += (c.envelope?.length ?? 0) + c.length;
    }
    if (!kept.dropped && kept.bytes > this.#retainedBytesMax) {
      // Past the bound the put keeps nothing: it completes as long as its node stays.
      // Batches still being stored drop theirs when they are done.
      kept.dropped = true;
      for (const c of kept.chunks) if (c.done) c.plaintext = c.envelope = null;
      this.#log.warn("cluster client: a large put keeps no copy for failover", {
        boundBytes: this.#retainedBytesMax,
      });
    }
    if (kept.dropped) sealedById.clear();
  }

  /**
   * Stores `chunks` for `link`'s session, one reference each: a chunk the node does not hold
   * is sealed (once per put) and uploaded; one it holds is proved (HMAC of the plaintext
   * under the node's challenge), so neither plaintext nor a bare id is what grants it.
   */
  async #storeOn(
    link: Link,
    chunks: PendingChunk[],
    sealedById: Map<string, Uint8Array>,
  ): Promise<void> {
    const session = hexBytes(link.session);
    for (let at = 0; at < chunks.length; at += CLIENT_PREPARE_BATCH_CHUNKS) {
      const batch = chunks.slice(at, at + CLIENT_PREPARE_BATCH_CHUNKS);
      const prep = await link.grpc.PrepareChunks({ session, chunkIds: batch.map((c) => c.id) });
      const proofs: { c: PendingChunk; challenge: Uint8Array }[] = [];
      await Promise.all(batch.map(async (c, i) => {
        if (c.plaintext === null && (prep.present[i] || c.envelope === null)) throw lostPut();
        if (prep.present[i]) {
          proofs.push({ c, challenge: new Uint8Array(prep.challenges[i]!) });
          return;
        }
        const hex = toHex(c.id);
        let envelope = sealedById.get(hex);
        if (envelope === undefined) {
          envelope = await sealWithKey({
            aead: this.#aead,
            dataKey: new Uint8Array(prep.keys[i]!),
            epoch: prep.epoch,
            chunkId: c.id,
            plaintext: c.plaintext!,
          });
          sealedById.set(hex, envelope);
        }
        c.envelope = envelope;
        try {
          await link.conn.put(c.id, envelope);
        } catch (e) {
          if (!(e instanceof ClientTransportError) || e.kind !== "forbidden") throw e;
          // Stored by another writer since the prepare: prove possession instead.
          const again = await link.grpc.PrepareChunks({ session, chunkIds: [c.id] });
          if (!again.present[0]) throw e;
          if (c.plaintext === null) throw lostPut();
          proofs.push({ c, challenge: new Uint8Array(again.challenges[0]!) });
          return;
        }
        c.storedOn.add(link.session);
      }));
      if (proofs.length > 0) {
        await link.grpc.ProveChunks({
          session,
          chunkIds: proofs.map((p) => p.c.id),
          proofs: proofs.map((p) =>
            new Uint8Array(createHmac("sha256", p.challenge).update(p.c.plaintext!).digest())
          ),
        });
        for (const p of proofs) p.c.storedOn.add(link.session);
      }
    }
  }

  /**
   * The object's attributes and a stream of its bytes (or of a range or part), resolved once
   * the first chunk is read. Chunks come through the chunk cache; a node lost mid-stream is
   * replaced by another.
   */
  async getObject(
    ns: NamespaceRef,
    key: string,
    options: GetObjectOptions = {},
  ): Promise<GetObjectResult> {
    const namespace = this.#nameOf(ns);
    const ctx: ReadContext = { namespace, key, keys: new Map(), granted: new Set() };
    const manifest = await this.#call((l) => this.#manifest(l, ctx));
    const info = infoOf(manifest.info);
    if (options.partNumber !== undefined && options.range !== undefined) {
      throw new CompositionError("invalid_argument", "give a range or a part number, not both");
    }
    const range = options.partNumber === undefined
      ? resolveRange(options.range, info.size)
      : resolvePart(info.partSizes, info.size, options.partNumber);
    const start = range?.start ?? 0;
    const end = range === null ? info.size : range.end + 1;
    let body: ReadableStream<Uint8Array>;
    if (manifest.inline) {
      const bytes = new Uint8Array(manifest.inlineBytes).subarray(start, end);
      body = new ReadableStream({
        start(controller) {
          if (bytes.length > 0) controller.enqueue(bytes);
          controller.close();
        },
      });
    } else {
      const refs = manifest.chunks.filter((r) => r.offset < end && r.offset + r.length > start);
      const fetch = (i: number) => {
        const r = refs[i]!;
        const p = this.#readChunk(ctx, r.chunkId, r.length).then((plain) =>
          plain.subarray(Math.max(start - r.offset, 0), Math.min(end - r.offset, r.length))
        );
        p.catch(() => {});
        return p;
      };
      const pending: Promise<Uint8Array>[] = [];
      let next = 0;
      const fill = () => {
        while (next < refs.length && pending.length < CLIENT_READ_AHEAD_CHUNKS) {
          pending.push(fetch(next++));
        }
      };
      fill();
      if (pending.length > 0) await pending[0]; // an unreadable object fails here
      body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const head = pending.shift();
          if (head === undefined) {
            controller.close();
            return;
          }
          fill();
          try {
            controller.enqueue(await head);
          } catch (e) {
            controller.error(e);
          }
        },
        cancel() {
          pending.length = 0;
          next = refs.length;
        },
      }, { highWaterMark: 0 });
    }
    return { ...info, range, contentLength: end - start, body };
  }

  /**
   * The chunks of `key`'s current version, each with the means to fetch its sealed bytes
   * (staging pins them into the cache sealed; they are opened only when read). An object
   * stored inline has none.
   */
  async objectChunks(
    ns: NamespaceRef,
    key: string,
  ): Promise<{ info: ObjectInfo; chunks: ObjectChunk[] }> {
    const ctx: ReadContext = {
      namespace: this.#nameOf(ns),
      key,
      keys: new Map(),
      granted: new Set(),
    };
    const manifest = await this.#call((l) => this.#manifest(l, ctx));
    const info = infoOf(manifest.info);
    if (manifest.inline) return { info, chunks: [] };
    const chunks = manifest.chunks.map((c) => {
      const id = new Uint8Array(c.chunkId);
      return {
        id,
        length: c.length,
        fetchSealed: () =>
          this.#call(async (l) => {
            // A node answers chunk reads for a session it granted this object's manifest.
            if (!ctx.granted.has(l.session)) await this.#manifest(l, ctx);
            return await l.conn.get(id);
          }),
      };
    });
    return { info, chunks };
  }

  /** The current version of `key`, kept for reads at any offset (see ObjectReader). */
  async openReader(ns: NamespaceRef, key: string): Promise<ObjectReader> {
    const ctx: ReadContext = {
      namespace: this.#nameOf(ns),
      key,
      keys: new Map(),
      granted: new Set(),
    };
    const manifest = await this.#call((l) => this.#manifest(l, ctx));
    const info = infoOf(manifest.info);
    const size = info.size;
    if (manifest.inline) {
      const bytes = new Uint8Array(manifest.inlineBytes);
      return {
        info,
        read: (offset, count) => Promise.resolve(bytes.slice(offset, offset + count)),
      };
    }
    // Ordered by offset, as the manifest lists them.
    const refs = manifest.chunks.map((c) => ({
      id: new Uint8Array(c.chunkId),
      offset: c.offset,
      length: c.length,
    }));
    return {
      info,
      read: async (offset, count) => {
        const start = Math.max(0, offset), end = Math.min(size, offset + count);
        if (end <= start) return new Uint8Array(0);
        // The first chunk that ends past `start` (binary search), then those up to `end`.
        let lo = 0, hi = refs.length;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (refs[mid]!.offset + refs[mid]!.length <= start) lo = mid + 1;
          else hi = mid;
        }
        const under: typeof refs = [];
        for (let i = lo; i < refs.length && refs[i]!.offset < end; i++) under.push(refs[i]!);
        const out = new Uint8Array(end - start);
        await Promise.all(under.map(async (r) => {
          const plain = await this.#readChunk(ctx, r.id, r.length);
          const from = Math.max(start, r.offset), to = Math.min(end, r.offset + r.length);
          out.set(plain.subarray(from - r.offset, to - r.offset), from - start);
        }));
        return out;
      },
    };
  }

  async #manifest(link: Link, ctx: ReadContext): Promise<ClientObjectManifest> {
    const m = await link.grpc.ObjectManifest({
      namespace: ctx.namespace,
      key: ctx.key,
      session: hexBytes(link.session),
    });
    m.chunks.forEach((c, i) => {
      const id = toHex(c.chunkId);
      let byEpoch = ctx.keys.get(id);
      if (byEpoch === undefined) ctx.keys.set(id, byEpoch = new Map());
      // Keys come for the first chunks; the others are asked for when they are read.
      if (i < m.keys.length) byEpoch.set(m.epoch, new Uint8Array(m.keys[i]!));
    });
    ctx.granted.add(link.session);
    return m;
  }

  async #readChunk(ctx: ReadContext, id: Uint8Array, length: number): Promise<Uint8Array> {
    const fetchSealed = () =>
      this.#call(async (l) => {
        if (!ctx.granted.has(l.session)) await this.#manifest(l, ctx);
        return await l.conn.get(id);
      });
    const open = async (sealed: Uint8Array) => {
      const epoch = envelopeEpoch(sealed);
      const hex = toHex(id);
      let dataKey = ctx.keys.get(hex)?.get(epoch);
      if (dataKey === undefined) {
        const r = await this.#call((l) =>
          l.grpc.ChunkKeys({
            namespace: ctx.namespace,
            key: ctx.key,
            session: hexBytes(l.session),
            epoch,
            chunkIds: [id],
          })
        );
        dataKey = new Uint8Array(r.keys[0]!);
        ctx.keys.get(hex)?.set(epoch, dataKey);
      }
      return await openWithKey({ aead: this.#aead, dataKey, chunkId: id, envelope: sealed });
    };
    const plain = await this.#cache.read(id, fetchSealed, open);
    if (plain.length < length) {
      throw new CompositionError(
        "unavailable",
        `chunk ${toHex(id)} holds ${plain.length} bytes, the object uses ${length}`,
      );
    }
    return plain;
  }

  // ---- nodes and failover ------------------------------------------------------------------

  /**
   * Runs `fn` against the current node; when the node or the link fails (or forgot the
   * session), against the next node, until it succeeds, refuses, or attempts run out.
   */
  async #call<T>(fn: (link: Link) => Promise<T>): Promise<T> {
    const deadline = Date.now() + CLIENT_FAILOVER_DEADLINE_MS;
    let last: unknown = null;
    for (let attempt = 0; attempt < CLIENT_FAILOVER_ATTEMPTS_MAX; attempt++) {
      if (this.#closed) throw new CompositionError("unavailable", "the cluster client is closed");
      if (attempt > 0) {
        if (Date.now() > deadline) break;
        await sleep(Math.min(CLIENT_FAILOVER_BACKOFF_MS * attempt, 2000));
      }
      let link: Link;
      try {
        link = await this.#current();
      } catch (e) {
        last = e;
        continue;
      }
      try {
        return await fn(link);
      } catch (e) {
        if (!isRetryable(e)) throw asCompositionError(e);
        last = e;
        // The same node may still serve (a forgotten session): Hello again there first.
        this.#log.warn("cluster client: node failed an operation, trying another", {
          node: formatHostPort(link.addr),
          error: (e as Error).message,
        });
        this.#fail(link, !isNoSession(e));
      }
    }
    throw new CompositionError(
      "unavailable",
      `no node of the cluster completed the operation: ${(last as Error)?.message ?? "timed out"}`,
    );
  }

  async #current(): Promise<Link> {
    if (this.#link !== null && !this.#link.broken && !this.#link.conn.failed) return this.#link;
    if (this.#linking === null) {
      this.#linking = this.#connectNext().finally(() => this.#linking = null);
    }
    return await this.#linking;
  }

  async #connectNext(): Promise<Link> {
    const errors: string[] = [];
    const previous = this.#link;
    const count = this.#candidates.length;
    for (let i = 0; i < count; i++) {
      const addr = this.#candidates[this.#next % count]!;
      this.#next = (this.#next + 1) % count;
      try {
        const link = await openLink(addr, this.#tls);
        if (link.hello.tenantId !== toHex(this.tenantId)) {
          this.#drop(link);
          throw new Error(
            `node acts for tenant ${link.hello.tenantId}, not ${toHex(this.tenantId)}`,
          );
        }
        this.#learn(link);
        this.#link = link;
        if (previous !== null) {
          this.#log.info("cluster client: now talking to another node", {
            node: formatHostPort(addr),
          });
        }
        return link;
      } catch (e) {
        errors.push(`${formatHostPort(addr)}: ${(e as Error).message}`);
      }
    }
    throw new ClientTransportError("unavailable", `no node answered: ${errors.join("; ")}`);
  }

  /** Drops a failed link; `moveOn` starts the next connection at the following node. */
  #fail(link: Link, moveOn: boolean): void {
    link.broken = true;
    this.#drop(link);
    if (this.#link === link) this.#link = null;
    if (!moveOn) {
      const i = this.#candidates.findIndex((a) => sameAddr(a, link.addr));
      if (i >= 0) this.#next = i;
    }
  }

  #drop(link: Link | null): void {
    if (link === null) return;
    link.conn.close();
    link.grpc.close();
  }

  /** Adds the nodes a node named to the candidates (the order given first). */
  #learn(link: Link): void {
    const start = this.#candidates.findIndex((a) => sameAddr(a, link.addr));
    if (start >= 0) this.#next = (start + 1) % this.#candidates.length;
    for (const n of link.hello.nodes) {
      let addr: HostPort;
      try {
        addr = parseHostPort(n.dataAddr);
      } catch {
        continue;
      }
      if (isWildcard(addr.host)) continue;
      if (this.#candidates.some((a) => sameAddr(a, addr))) continue;
      if (this.#candidates.length >= CLIENT_NODES_MAX) break;
      this.#candidates.push(addr);
    }
  }

  #checkTenant(tenantId: Uint8Array): void {
    if (toHex(tenantId) !== toHex(this.tenantId)) {
      throw new CompositionError(
        "namespace_not_found",
        `this client acts for tenant ${toHex(this.tenantId)}, not ${toHex(tenantId)}`,
      );
    }
  }

  #nameOf(ns: NamespaceRef): string {
    this.#checkTenant(ns.tenantId);
    const carried = (ns as { name?: unknown }).name;
    if (typeof carried === "string") return carried;
    const name = this.#names.get(toHex(ns.id));
    if (name === undefined) {
      throw new CompositionError(
        "namespace_not_found",
        `namespace ${toHex(ns.id)} was not named through this client`,
      );
    }
    return name;
  }

  #namespaceOf(info: ClientNamespaceInfo): Namespace {
    const ref = this.namespace(this.tenantId, info.name);
    return {
      ...ref,
      name: info.name,
      kind: info.kind === "posix" ? "posix" : "bucket",
      createdMs: info.createdMs,
      objects: info.objects,
      bytes: info.bytes,
      uploads: info.uploads,
    };
  }
}

async function openLink(addr: HostPort, tls: TlsMaterial | null): Promise<Link> {
  const grpc = createGrpcClient(CLIENT_SERVICE, addr, {
    tls: tls === null ? null : { ca: tls.ca, cert: tls.cert, key: tls.key },
    deadlineMs: CLIENT_CALL_DEADLINE_MS,
  });
  try {
    const hello = await grpc.Hello({});
    // The transport is on the node that answered: the host dialled (which reaches it, and
    // which its certificate names), at the port it announced.
    const transportAddr = { host: addr.host, port: parseHostPort(hello.transportAddr).port };
    const session = toHex(hello.session);
    const conn = await ClientTransportConnection.connect({
      addr: transportAddr,
      session: hello.session,
      tls: hello.transportTls ? tls : null,
    });
    return { addr, grpc, hello, session, conn, broken: false };
  } catch (e) {
    grpc.close();
    throw e;
  }
}

function infoOf(o: ClientObjectInfo): ObjectInfo {
  return {
    key: o.key,
    size: o.size,
    etag: o.etag,
    version: o.version,
    contentType: o.contentType,
    metadata: { ...o.metadata },
    createdMs: o.createdMs,
    modifiedMs: o.modifiedMs,
    partSizes: o.hasPartSizes ? [...o.partSizes] : null,
  };
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "[::]";
}

function sameAddr(a: HostPort, b: HostPort): boolean {
  return a.host === b.host && a.port === b.port;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
