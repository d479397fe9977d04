// The object interface the S3 gateway sees: buckets as a tenant's namespaces, objects,
// multipart uploads, listings. The composition layer's ObjectEngine implements it; the
// gateway never reaches raft, chunks or disks. Failures are CompositionErrors, which the
// gateway turns into the S3 codes AWS sends.

import type {
  ListObjectsOptions,
  ListObjectsResult,
  ListPartsOptions,
  ListPartsResult,
  ListUploadsOptions,
  ListUploadsResult,
  Metadata,
  Namespace,
  NamespaceKind,
  NamespaceRef,
} from "../composition/mod.ts";

export type BackendBody = ReadableStream<Uint8Array> | Uint8Array;

export interface BackendObjectInfo {
  key: string;
  size: number;
  /** Unquoted: MD5 hex, or "<md5 of part md5s>-N". */
  etag: string;
  version: number;
  contentType: string;
  metadata: Metadata;
  createdMs: number;
  modifiedMs: number;
  /**
   * A multipart object's part sizes, in part order; null for a single-part object (and for
   * multipart objects stored before part sizes were kept, which read as one part).
   */
  partSizes: readonly number[] | null;
}

export type BackendByteRange = { start: number; end?: number } | { suffixBytes: number };

export interface BackendGetOptions {
  range?: BackendByteRange;
  /**
   * Only this part (not with `range`): a multipart object's part N, or part 1 of a
   * single-part object (the whole object, range null). A part past the last fails with
   * ObjectPartError (S3 InvalidPartNumber).
   */
  partNumber?: number;
}

export interface BackendGetResult extends BackendObjectInfo {
  /** Inclusive; null: the whole object. An empty part: end = start - 1. */
  range: { start: number; end: number } | null;
  contentLength: number;
  body: ReadableStream<Uint8Array>;
}

export interface BackendPutResult {
  etag: string;
  version: number;
  size: number;
}

export interface BackendPutOptions {
  contentType?: string;
  metadata?: Metadata;
  sizeHint?: number;
  ifAbsent?: boolean;
  ifVersion?: number;
}

/** The narrow object interface of the gateway (ObjectEngine satisfies it). */
export interface S3Backend {
  namespace(tenantId: Uint8Array, name: string): NamespaceRef;
  createNamespace(tenantId: Uint8Array, name: string, kind?: NamespaceKind): Promise<Namespace>;
  deleteNamespace(ns: NamespaceRef): Promise<void>;
  getNamespace(ns: NamespaceRef): Promise<Namespace>;
  listNamespaces(tenantId: Uint8Array): Promise<Namespace[]>;

  putObject(
    ns: NamespaceRef,
    key: string,
    body: BackendBody,
    options?: BackendPutOptions,
  ): Promise<BackendPutResult>;
  headObject(ns: NamespaceRef, key: string): Promise<BackendObjectInfo>;
  getObject(
    ns: NamespaceRef,
    key: string,
    options?: BackendGetOptions,
  ): Promise<BackendGetResult>;
  deleteObject(ns: NamespaceRef, key: string): Promise<{ deleted: boolean }>;
  copyObject(
    source: NamespaceRef,
    sourceKey: string,
    target: NamespaceRef,
    targetKey: string,
    options?: { metadata?: Metadata; contentType?: string },
  ): Promise<BackendPutResult>;
  listObjects(ns: NamespaceRef, options?: ListObjectsOptions): Promise<ListObjectsResult>;

  createMultipartUpload(
    ns: NamespaceRef,
    key: string,
    options?: { contentType?: string; metadata?: Metadata },
  ): Promise<{ uploadId: string }>;
  uploadPart(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    partNumber: number,
    body: BackendBody,
    options?: { sizeHint?: number },
  ): Promise<{ etag: string; size: number }>;
  completeMultipartUpload(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    parts: Array<{ partNumber: number; etag: string }>,
  ): Promise<BackendPutResult>;
  abortMultipartUpload(ns: NamespaceRef, key: string, uploadId: string): Promise<void>;
  listParts(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    options?: ListPartsOptions,
  ): Promise<ListPartsResult>;
  listMultipartUploads(ns: NamespaceRef, options?: ListUploadsOptions): Promise<ListUploadsResult>;
}
