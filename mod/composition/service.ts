// The composition service: turns namespace, object, multipart and POSIX mutations into
// sealed deltas, commits them on the namespace's shard, and answers once the delta is
// committed AND folded into this node's views, with the fold's verdict. Reads go through
// the views. The views decide every precondition (existence, emptiness, part order, rename
// cycles) when they fold, in log order, so all replicas agree; this service only checks
// shapes and limits up front so that malformed requests never reach the log.
//
// Contract with callers: chunks referenced by a mutation must be stored durably BEFORE the
// call; a resolved call means the delta is committed on a majority and visible to reads on
// this node (read-your-writes). A rejected call with code "unavailable" after the commit
// may still have taken effect (like any timed-out write).

import { assert } from "../base/mod.ts";
import { type Delta, LogError, shardForKey, type ShardMap } from "../log/mod.ts";
import { bytesEqual, fromHex } from "./bytes.ts";
import {
  type ChunkRef,
  type Composition,
  type Content,
  CONTENT_TYPE_BYTES_MAX,
  contentProblem,
  ETAG_BYTES_MAX,
  INLINE_BYTES_MAX,
  INLINE_THRESHOLD_BYTES_DEFAULT,
  type Inode,
  inodeNumberProblem,
  keyProblem,
  type Metadata,
  metadataProblem,
  modeProblem,
  PART_NUMBER_MAX,
  partSizesProblem,
  posixNameProblem,
  PUT_PART_SIZES_MAX,
  type SetAttributes,
  shortTextProblem,
  symlinkTargetProblem,
  type Upload,
  UPLOAD_ID_BYTES,
} from "./composition.ts";
import {
  encodePayload,
  partsDigest,
  type Payload,
  PAYLOAD_OPS,
  PAYLOAD_TOKEN_BYTES,
  payloadChunkIds,
  PayloadFormatError,
  type PutCondition,
} from "./codec.ts";
import { CompositionError, type CompositionErrorCode } from "./errors.ts";
import type {
  ListObjectsOptions,
  ListObjectsResult,
  ListPartsOptions,
  ListPartsResult,
  ListUploadsOptions,
  ListUploadsResult,
  ReaddirOptions,
  ReaddirResult,
} from "./listing.ts";
import {
  type Namespace,
  namespaceIdFor,
  type NamespaceKind,
  namespaceNameProblem,
  type NamespaceRef,
  namespaceRoutingKey,
  tenantIdProblem,
} from "./namespace.ts";
import type { PayloadCipher } from "./payload_cipher.ts";

/** How long a writer waits for its committed delta to be folded before answering "unavailable". */
export const OUTCOME_WAIT_MS_DEFAULT = 30_000;
/** Bytes of a parts digest that mean "do not check etags". */
const NO_DIGEST = new Uint8Array(32);

/** Commits a delta through its shard's Raft group (DeltaLog implements it). */
export interface DeltaCommitter {
  /** Resolves once the delta is durable on a majority and applied on this node. */
  append(delta: Omit<Delta, "sequence" | "timestamp">): Promise<{ sequence: number }>;
}

/** What the fold decided about one mutation. */
export interface MutationOutcome {
  shardId: number;
  sequence: number;
  /** Null: applied. Otherwise the refusal; the delta changed nothing. */
  error: { code: CompositionErrorCode; message: string } | null;
  /** Chunk ids the mutation stopped referencing (overwritten, deleted, truncated, abandoned). */
  released: Uint8Array[];
  /** object_put and upload_complete: the object's new version. */
  version?: number;
  /** upload_complete: the object's size. */
  size?: number;
  uploadId?: string;
  /** POSIX mutations other than unlink/rmdir/rename: the inode afterwards. */
  inode?: Inode;
  /** object_delete: whether a key was there. */
  deleted?: boolean;
  namespace?: Namespace;
}

export interface PendingOutcome {
  promise: Promise<MutationOutcome>;
  /** Stops waiting (the append failed); the promise then never settles. */
  cancel(): void;
}

/**
 * The views as the service needs them (implemented by the view store). Reads are
 * synchronous and see a consistent prefix of each shard.
 */
export interface CompositionViews {
  /**
   * Registers interest in the mutation carrying `token` (before it is appended). Resolves
   * with its outcome once the delta is folded and visible to reads; rejects with
   * CompositionError("unavailable") after `timeoutMs`.
   */
  awaitOutcome(token: Uint8Array, timeoutMs: number): PendingOutcome;
  namespace(namespaceId: Uint8Array): Namespace | undefined;
  namespaces(tenantId: Uint8Array): Namespace[];
  object(namespaceId: Uint8Array, key: string): Composition | undefined;
  list(namespaceId: Uint8Array, options: ListObjectsOptions): ListObjectsResult;
  upload(namespaceId: Uint8Array, uploadId: Uint8Array): Upload | undefined;
  listUploads(namespaceId: Uint8Array, options: ListUploadsOptions): ListUploadsResult;
  listParts(
    namespaceId: Uint8Array,
    uploadId: Uint8Array,
    options: ListPartsOptions,
  ): ListPartsResult | undefined;
  inode(namespaceId: Uint8Array, inode: number): Inode | undefined;
  lookup(namespaceId: Uint8Array, parent: number, name: string): Inode | undefined;
  readdir(namespaceId: Uint8Array, directory: number, options: ReaddirOptions): ReaddirResult;
}

export interface CompositionServiceOptions {
  committer: DeltaCommitter;
  cipher: PayloadCipher;
  /** The current shard map (a function, so splits are seen). */
  shardMap: () => ShardMap;
  views: CompositionViews;
  /** Largest inline object accepted (default 4 KiB, at most INLINE_BYTES_MAX). */
  inlineBytesMax?: number;
  outcomeWaitMs?: number;
  /** Fills its argument with random bytes (request tokens); defaults to crypto.getRandomValues. */
  random?: (bytes: Uint8Array) => Uint8Array;
}

export interface PutInput {
  /** Exactly one of chunkRefs (tiling [0, size)) and inline (size bytes). */
  chunkRefs?: ChunkRef[];
  inline?: Uint8Array;
  size: number;
  contentType?: string;
  metadata?: Metadata;
  /** Computed by the caller (S3: MD5 hex, quoted as the gateway likes). */
  etag: string;
  /** Refuse unless the key does not exist (If-None-Match: *). */
  ifAbsent?: boolean;
  /** Refuse unless the key is at this version. */
  ifVersion?: number;
  /**
   * A multipart object's part sizes (at most PUT_PART_SIZES_MAX, adding up to `size`): a
   * copy keeps its source's layout. Omitted: a single-part object.
   */
  partSizes?: number[];
}

export interface PutResult {
  version: number;
  /** Chunk ids the overwritten version held. */
  released: Uint8Array[];
}

export interface PartInput {
  chunkRefs: ChunkRef[];
  size: number;
  etag: string;
  /** Kept with the part and listed with it (S3: its checksums). */
  metadata?: Metadata;
}

export interface CompleteInput {
  /** As the client listed them; order is validated by the fold. */
  parts: { partNumber: number; etag: string }[];
  /** The object's etag, computed by the caller (S3: MD5 of part MD5s, "-N"). */
  etag: string;
  /** Compare the listed etags with the stored parts (default true). */
  checkEtags?: boolean;
  /** Every part but the last must be at least this big (default 0; S3: 5 MiB). */
  partBytesMin?: number;
  /**
   * The object's part layout: "listed" (default): the listed parts' sizes, as S3 keeps them
   * for GET ?partNumber; sizes: these instead (adding up to the parts' total: a multipart
   * object copied through hidden parts); null: a single-part object (a large put's hidden
   * parts).
   */
  partSizes?: "listed" | number[] | null;
  /** Refuse unless the key does not exist (If-None-Match: *). Needs a part layout. */
  ifAbsent?: boolean;
  /** Refuse unless the key is at this version. Needs a part layout. */
  ifVersion?: number;
  /** Entries added to the upload's metadata (checksums known at completion). */
  metadata?: Metadata;
}

export interface CopyInput {
  /** Replace the metadata and content type instead of copying them (S3 REPLACE directive). */
  metadata?: Metadata;
  contentType?: string;
}

export interface PosixOwner {
  mode: number;
  uid: number;
  gid: number;
}

export class CompositionService {
  readonly #committer: DeltaCommitter;
  readonly #cipher: PayloadCipher;
  readonly #shardMap: () => ShardMap;
  readonly #views: CompositionViews;
  readonly #random: (bytes: Uint8Array) => Uint8Array;
  readonly #outcomeWaitMs: number;
  readonly inlineBytesMax: number;

  constructor(options: CompositionServiceOptions) {
    this.#committer = options.committer;
    this.#cipher = options.cipher;
    this.#shardMap = options.shardMap;
    this.#views = options.views;
    this.#random = options.random ?? ((b) => crypto.getRandomValues(b));
    this.#outcomeWaitMs = options.outcomeWaitMs ?? OUTCOME_WAIT_MS_DEFAULT;
    this.inlineBytesMax = options.inlineBytesMax ?? INLINE_THRESHOLD_BYTES_DEFAULT;
    assert(
      Number.isInteger(this.inlineBytesMax) && this.inlineBytesMax >= 0 &&
        this.inlineBytesMax <= INLINE_BYTES_MAX,
      `inlineBytesMax must be within 0..${INLINE_BYTES_MAX}`,
    );
    assert(this.#outcomeWaitMs > 0, "outcomeWaitMs must be positive");
  }

  // ---- namespaces ----------------------------------------------------------------------------

  /** The ref of `tenantId`'s namespace called `name` (whether or not it exists). */
  ref(tenantId: Uint8Array, name: string): NamespaceRef {
    invalidIf(tenantIdProblem(tenantId) ?? namespaceNameProblem(name));
    return { tenantId, id: namespaceIdFor(tenantId, name) };
  }

  async createNamespace(
    tenantId: Uint8Array,
    name: string,
    kind: NamespaceKind,
    root: PosixOwner = { mode: 0o755, uid: 0, gid: 0 },
  ): Promise<Namespace> {
    const ref = this.ref(tenantId, name);
    if (kind !== "bucket" && kind !== "posix") invalid(`unknown namespace kind ${kind}`);
    const outcome = await this.#mutate(ref, {
      type: "namespace_create",
      name,
      kind,
      rootMode: root.mode,
      rootUid: root.uid,
      rootGid: root.gid,
    });
    assert(outcome.namespace !== undefined, "namespace_create outcome without a namespace");
    return outcome.namespace;
  }

  /** Deletes an empty namespace (no objects, no uploads, or an empty root directory). */
  async deleteNamespace(ref: NamespaceRef): Promise<void> {
    await this.#mutate(ref, { type: "namespace_delete" });
  }

  getNamespace(ref: NamespaceRef): Namespace {
    return this.#namespace(ref);
  }

  listNamespaces(tenantId: Uint8Array): Namespace[] {
    invalidIf(tenantIdProblem(tenantId));
    return this.#views.namespaces(tenantId);
  }

  // ---- objects -------------------------------------------------------------------------------

  /** Stores `key`'s new version. The chunks must already be durable. */
  async put(ref: NamespaceRef, key: string, input: PutInput): Promise<PutResult> {
    invalidIf(keyProblem(key));
    const content = this.#content(input, "contiguous");
    const condition = putCondition(input);
    const metadata = input.metadata ?? {};
    const contentType = input.contentType ?? "";
    invalidIf(
      metadataProblem(metadata) ??
        shortTextProblem("content type", contentType, CONTENT_TYPE_BYTES_MAX) ??
        shortTextProblem("etag", input.etag, ETAG_BYTES_MAX),
    );
    if (input.partSizes !== undefined) {
      invalidIf(partSizesProblem(input.partSizes, input.size, PUT_PART_SIZES_MAX));
    }
    const outcome = await this.#mutate(ref, {
      type: "object_put",
      key,
      size: input.size,
      contentType,
      metadata,
      etag: input.etag,
      content,
      condition,
      ...(input.partSizes !== undefined && { partSizes: input.partSizes }),
    });
    return { version: outcome.version!, released: outcome.released };
  }

  /** Deletes `key`; deleting a missing key succeeds with deleted: false (as S3 does). */
  async delete(
    ref: NamespaceRef,
    key: string,
  ): Promise<{ deleted: boolean; released: Uint8Array[] }> {
    invalidIf(keyProblem(key));
    const outcome = await this.#mutate(ref, { type: "object_delete", key });
    return { deleted: outcome.deleted ?? false, released: outcome.released };
  }

  /** The object with its content (chunk refs or inline bytes). */
  get(ref: NamespaceRef, key: string): Composition {
    this.#namespace(ref, "bucket");
    invalidIf(keyProblem(key));
    const object = this.#views.object(ref.id, key);
    if (object === undefined) {
      throw new CompositionError("not_found", `no key ${JSON.stringify(key)}`);
    }
    return object;
  }

  /** The object without its content. */
  head(ref: NamespaceRef, key: string): Omit<Composition, "content"> {
    const { content: _content, ...rest } = this.get(ref, key);
    return rest;
  }

  list(ref: NamespaceRef, options: ListObjectsOptions = {}): ListObjectsResult {
    this.#namespace(ref, "bucket");
    return this.#views.list(ref.id, options);
  }

  /**
   * A new object referencing the same chunks (or inline bytes) as the source, with its etag
   * and so its part layout (at most PUT_PART_SIZES_MAX parts here; ObjectEngine copies more).
   */
  async copy(
    source: NamespaceRef,
    sourceKey: string,
    target: NamespaceRef,
    targetKey: string,
    input: CopyInput = {},
  ): Promise<PutResult & { etag: string; size: number }> {
    const from = this.get(source, sourceKey);
    const result = await this.put(target, targetKey, {
      ...(from.content.kind === "inline"
        ? { inline: from.content.bytes }
        : { chunkRefs: from.content.chunkRefs }),
      size: from.size,
      contentType: input.contentType ?? from.contentType,
      metadata: input.metadata ?? from.metadata,
      etag: from.etag,
      partSizes: from.partSizes,
    });
    return { ...result, etag: from.etag, size: from.size };
  }

  // ---- multipart -----------------------------------------------------------------------------

  async startUpload(
    ref: NamespaceRef,
    key: string,
    options: { contentType?: string; metadata?: Metadata } = {},
  ): Promise<{ uploadId: string }> {
    invalidIf(keyProblem(key));
    const metadata = options.metadata ?? {};
    const contentType = options.contentType ?? "";
    invalidIf(
      metadataProblem(metadata) ??
        shortTextProblem("content type", contentType, CONTENT_TYPE_BYTES_MAX),
    );
    const outcome = await this.#mutate(ref, {
      type: "upload_start",
      key,
      contentType,
      metadata,
    });
    return { uploadId: outcome.uploadId! };
  }

  /** Stores a part (replacing one of the same number). The chunks must already be durable. */
  async putPart(
    ref: NamespaceRef,
    key: string,
    uploadId: string,
    partNumber: number,
    input: PartInput,
  ): Promise<{ released: Uint8Array[] }> {
    invalidIf(keyProblem(key));
    const id = uploadIdBytes(uploadId);
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > PART_NUMBER_MAX) {
      invalid(`part number ${partNumber} is not 1..${PART_NUMBER_MAX}`);
    }
    const content: Content = { kind: "chunks", chunkRefs: input.chunkRefs };
    invalidIf(
      contentProblem(content, input.size, "contiguous") ??
        shortTextProblem("etag", input.etag, ETAG_BYTES_MAX) ??
        metadataProblem(input.metadata ?? {}),
    );
    const outcome = await this.#mutate(ref, {
      type: "upload_part",
      key,
      uploadId: id,
      partNumber,
      size: input.size,
      etag: input.etag,
      chunkRefs: input.chunkRefs,
      ...(input.metadata !== undefined && Object.keys(input.metadata).length > 0 &&
        { metadata: input.metadata }),
    });
    return { released: outcome.released };
  }

  /**
   * Completes an upload: the listed parts, in order, become the object; parts not listed
   * are dropped (their chunk ids come back in `released`, with the overwritten object's).
   */
  async completeUpload(
    ref: NamespaceRef,
    key: string,
    uploadId: string,
    input: CompleteInput,
  ): Promise<PutResult & { size: number }> {
    invalidIf(keyProblem(key) ?? shortTextProblem("etag", input.etag, ETAG_BYTES_MAX));
    const id = uploadIdBytes(uploadId);
    if (input.parts.length === 0) invalid("a completion must list at least one part");
    if (input.parts.length > PART_NUMBER_MAX) invalid(`more than ${PART_NUMBER_MAX} parts`);
    for (const p of input.parts) {
      if (!Number.isInteger(p.partNumber) || p.partNumber < 1 || p.partNumber > PART_NUMBER_MAX) {
        invalid(`part number ${p.partNumber} is not 1..${PART_NUMBER_MAX}`);
      }
      invalidIf(shortTextProblem("etag", p.etag, ETAG_BYTES_MAX));
    }
    const partBytesMin = input.partBytesMin ?? 0;
    if (!Number.isSafeInteger(partBytesMin) || partBytesMin < 0) {
      invalid(`partBytesMin ${partBytesMin} is invalid`);
    }
    const partSizes = input.partSizes === undefined ? "listed" : input.partSizes;
    if (Array.isArray(partSizes)) invalidIf(partSizesProblem(partSizes, null));
    const condition = putCondition(input);
    const metadata = input.metadata ?? {};
    invalidIf(metadataProblem(metadata));
    if (partSizes === null && (condition.kind !== "none" || Object.keys(metadata).length > 0)) {
      invalid("a conditional completion keeps its parts' layout");
    }
    const outcome = await this.#mutate(ref, {
      type: "upload_complete",
      key,
      uploadId: id,
      partNumbers: input.parts.map((p) => p.partNumber),
      partsDigest: input.checkEtags === false ? NO_DIGEST : partsDigest(input.parts),
      partBytesMin,
      etag: input.etag,
      ...(partSizes !== null && { partSizes }),
      ...(condition.kind !== "none" && { condition }),
      ...(Object.keys(metadata).length > 0 && { metadata }),
    });
    return { version: outcome.version!, released: outcome.released, size: outcome.size! };
  }

  /** Abandons an upload; `released` holds every chunk id its parts referenced. */
  async abortUpload(
    ref: NamespaceRef,
    key: string,
    uploadId: string,
  ): Promise<{ released: Uint8Array[] }> {
    invalidIf(keyProblem(key));
    const outcome = await this.#mutate(ref, {
      type: "upload_abort",
      key,
      uploadId: uploadIdBytes(uploadId),
    });
    return { released: outcome.released };
  }

  listParts(
    ref: NamespaceRef,
    key: string,
    uploadId: string,
    options: ListPartsOptions = {},
  ): ListPartsResult {
    this.#namespace(ref, "bucket");
    const result = this.#views.listParts(ref.id, uploadIdBytes(uploadId), options);
    if (result === undefined || result.upload.key !== key) {
      throw new CompositionError("no_such_upload", `no upload ${uploadId} for this key`);
    }
    return result;
  }

  listUploads(ref: NamespaceRef, options: ListUploadsOptions = {}): ListUploadsResult {
    this.#namespace(ref, "bucket");
    return this.#views.listUploads(ref.id, options);
  }

  // ---- POSIX ---------------------------------------------------------------------------------

  async mkdir(ref: NamespaceRef, parent: number, name: string, owner: PosixOwner): Promise<Inode> {
    this.#checkEntry(parent, name);
    invalidIf(modeProblem(owner.mode));
    const outcome = await this.#mutate(ref, { type: "posix_mkdir", parent, name, ...owner });
    return outcome.inode!;
  }

  /** Creates an empty regular file; fails with "exists" if the name is taken. */
  async createFile(
    ref: NamespaceRef,
    parent: number,
    name: string,
    owner: PosixOwner,
  ): Promise<Inode> {
    this.#checkEntry(parent, name);
    invalidIf(modeProblem(owner.mode));
    const outcome = await this.#mutate(ref, { type: "posix_create", parent, name, ...owner });
    return outcome.inode!;
  }

  async symlink(
    ref: NamespaceRef,
    parent: number,
    name: string,
    target: string,
    owner: { uid: number; gid: number },
  ): Promise<Inode> {
    this.#checkEntry(parent, name);
    invalidIf(symlinkTargetProblem(target));
    const outcome = await this.#mutate(ref, {
      type: "posix_symlink",
      parent,
      name,
      target,
      uid: owner.uid,
      gid: owner.gid,
    });
    return outcome.inode!;
  }

  /** A hard link: `name` in `parent` becomes another name of `inode` (not a directory). */
  async link(ref: NamespaceRef, inode: number, parent: number, name: string): Promise<Inode> {
    invalidIf(inodeNumberProblem("inode", inode));
    this.#checkEntry(parent, name);
    const outcome = await this.#mutate(ref, { type: "posix_link", inode, parent, name });
    return outcome.inode!;
  }

  async unlink(
    ref: NamespaceRef,
    parent: number,
    name: string,
  ): Promise<{ released: Uint8Array[] }> {
    this.#checkEntry(parent, name);
    const outcome = await this.#mutate(ref, { type: "posix_unlink", parent, name });
    return { released: outcome.released };
  }

  async rmdir(ref: NamespaceRef, parent: number, name: string): Promise<void> {
    this.#checkEntry(parent, name);
    await this.#mutate(ref, { type: "posix_rmdir", parent, name });
  }

  /**
   * rename(2): moves a file or directory, replacing a compatible target (a non-directory, or
   * an empty directory). Moving a directory under itself fails with "invalid_rename".
   */
  async rename(
    ref: NamespaceRef,
    parent: number,
    name: string,
    newParent: number,
    newName: string,
  ): Promise<{ released: Uint8Array[] }> {
    this.#checkEntry(parent, name);
    this.#checkEntry(newParent, newName);
    const outcome = await this.#mutate(ref, {
      type: "posix_rename",
      parent,
      name,
      newParent,
      newName,
    });
    return { released: outcome.released };
  }

  async setAttributes(
    ref: NamespaceRef,
    inode: number,
    attributes: SetAttributes,
  ): Promise<Inode & { released: Uint8Array[] }> {
    invalidIf(inodeNumberProblem("inode", inode));
    const outcome = await this.#mutate(ref, { type: "posix_setattr", inode, attributes });
    return { ...outcome.inode!, released: outcome.released };
  }

  /** Replaces a file's content (refs may leave holes; bytes past them read as zeros). */
  async writeContent(
    ref: NamespaceRef,
    inode: number,
    input: { chunkRefs?: ChunkRef[]; inline?: Uint8Array; size: number },
  ): Promise<Inode & { released: Uint8Array[] }> {
    invalidIf(inodeNumberProblem("inode", inode));
    const content = this.#content(input, "sparse");
    const outcome = await this.#mutate(ref, {
      type: "posix_write",
      inode,
      size: input.size,
      content,
    });
    return { ...outcome.inode!, released: outcome.released };
  }

  getattr(ref: NamespaceRef, inode: number): Inode {
    this.#namespace(ref, "posix");
    const found = this.#views.inode(ref.id, inode);
    if (found === undefined) throw new CompositionError("not_found", `no inode ${inode}`);
    return found;
  }

  lookup(ref: NamespaceRef, parent: number, name: string): Inode {
    this.#namespace(ref, "posix");
    invalidIf(posixNameProblem(name));
    const found = this.#views.lookup(ref.id, parent, name);
    if (found === undefined) {
      const dir = this.#views.inode(ref.id, parent);
      if (dir !== undefined && dir.type !== "directory") {
        throw new CompositionError("not_a_directory", `inode ${parent} is not a directory`);
      }
      throw new CompositionError("not_found", `no entry ${JSON.stringify(name)} in ${parent}`);
    }
    return found;
  }

  readdir(ref: NamespaceRef, directory: number, options: ReaddirOptions = {}): ReaddirResult {
    this.#namespace(ref, "posix");
    const dir = this.#views.inode(ref.id, directory);
    if (dir === undefined) throw new CompositionError("not_found", `no inode ${directory}`);
    if (dir.type !== "directory") {
      throw new CompositionError("not_a_directory", `inode ${directory} is not a directory`);
    }
    return this.#views.readdir(ref.id, directory, options);
  }

  readlink(ref: NamespaceRef, inode: number): string {
    const found = this.getattr(ref, inode);
    if (found.type !== "symlink") invalid(`inode ${inode} is not a symlink`);
    return found.target;
  }

  // ---- internals -----------------------------------------------------------------------------

  #namespace(ref: NamespaceRef, kind?: NamespaceKind): Namespace {
    const ns = this.#views.namespace(ref.id);
    if (ns === undefined || !bytesEqual(ns.tenantId, ref.tenantId)) {
      throw new CompositionError("namespace_not_found", "no such namespace");
    }
    if (kind !== undefined && ns.kind !== kind) {
      throw new CompositionError("wrong_kind", `namespace ${ns.name} is a ${ns.kind} namespace`);
    }
    return ns;
  }

  #checkEntry(parent: number, name: string): void {
    invalidIf(inodeNumberProblem("parent", parent) ?? posixNameProblem(name));
  }

  #content(
    input: { chunkRefs?: ChunkRef[]; inline?: Uint8Array; size: number },
    layout: "contiguous" | "sparse",
  ): Content {
    if ((input.chunkRefs === undefined) === (input.inline === undefined)) {
      invalid("give exactly one of chunkRefs and inline");
    }
    const content: Content = input.inline !== undefined
      ? { kind: "inline", bytes: input.inline }
      : { kind: "chunks", chunkRefs: input.chunkRefs! };
    if (content.kind === "inline" && content.bytes.length > this.inlineBytesMax) {
      invalid(
        `inline content is ${content.bytes.length} bytes (max ${this.inlineBytesMax}); store chunks`,
      );
    }
    invalidIf(contentProblem(content, input.size, layout));
    return content;
  }

  /** Seals, commits and waits for the fold's verdict; throws CompositionError on refusal. */
  async #mutate(
    ref: NamespaceRef,
    body: DistributiveOmit<Payload, "token" | "namespaceId">,
  ): Promise<MutationOutcome> {
    invalidIf(tenantIdProblem(ref.tenantId));
    const token = this.#random(new Uint8Array(PAYLOAD_TOKEN_BYTES));
    const payload = { ...body, token, namespaceId: ref.id } as Payload;
    let plaintext: Uint8Array;
    try {
      plaintext = encodePayload(payload);
    } catch (e) {
      if (e instanceof PayloadFormatError) invalid(e.message);
      throw e;
    }
    const sealed = await this.#cipher.seal(ref.tenantId, plaintext);
    const hashedKey = namespaceRoutingKey(ref.id);
    const shardId = shardForKey(this.#shardMap(), hashedKey);
    const pending = this.#views.awaitOutcome(token, this.#outcomeWaitMs);
    try {
      await this.#committer.append({
        shardId,
        tenantId: ref.tenantId,
        op: PAYLOAD_OPS[payload.type],
        hashedKey,
        chunkRefs: payloadChunkIds(payload),
        payload: sealed,
      });
    } catch (e) {
      pending.cancel();
      throw mapCommitError(e);
    }
    const outcome = await pending.promise;
    if (outcome.error !== null) {
      throw new CompositionError(outcome.error.code, outcome.error.message);
    }
    return outcome;
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function invalid(message: string): never {
  throw new CompositionError("invalid_argument", message);
}

function invalidIf(problem: string | null): void {
  if (problem !== null) invalid(problem);
}

function uploadIdBytes(uploadId: string): Uint8Array {
  const id = fromHex(uploadId, UPLOAD_ID_BYTES);
  if (id === null) throw new CompositionError("no_such_upload", `no upload ${uploadId}`);
  return id;
}

function mapCommitError(e: unknown): unknown {
  if (!(e instanceof LogError)) return e;
  switch (e.code) {
    case "unavailable":
      return new CompositionError("unavailable", e.message);
    case "failed_precondition":
      return new CompositionError("read_only", e.message);
    case "invalid_argument":
      return new CompositionError("invalid_argument", e.message);
    case "not_found":
      return new CompositionError("unavailable", e.message);
    default:
      return e;
  }
}

/** The precondition of a put or completion: none, absent (ifAbsent) or a version (ifVersion). */
function putCondition(input: { ifAbsent?: boolean; ifVersion?: number }): PutCondition {
  if (input.ifAbsent && input.ifVersion !== undefined) {
    invalid("ifAbsent and ifVersion exclude each other");
  }
  if (input.ifAbsent) return { kind: "absent" };
  if (input.ifVersion !== undefined) {
    if (!Number.isSafeInteger(input.ifVersion) || input.ifVersion < 1) {
      invalid(`ifVersion ${input.ifVersion} is not a version`);
    }
    return { kind: "version", version: input.ifVersion };
  }
  return { kind: "none" };
}
