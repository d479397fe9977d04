// The object interface the S3 gateway sees: buckets as a tenant's namespaces, objects,
// multipart uploads, listings. The composition layer's ObjectEngine implements it; the
// gateway never reaches raft, chunks or disks. Failures are CompositionErrors, which the
// gateway turns into the S3 codes AWS sends.

import type {
  Body,
  ByteRange,
  CompleteOptions,
  CopyOptions,
  GetObjectOptions,
  GetObjectResult,
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
  ObjectInfo,
  PutObjectOptions,
  PutObjectResult,
} from "../composition/mod.ts";

// The engine's own object types: the gateway sees the same shapes, only fewer methods.
export type BackendBody = Body;
export type BackendObjectInfo = ObjectInfo;
export type BackendByteRange = ByteRange;
export type BackendGetOptions = GetObjectOptions;
export type BackendGetResult = GetObjectResult;
export type BackendPutResult = PutObjectResult;
export type BackendPutOptions = PutObjectOptions;

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
    options?: CopyOptions,
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
    options?: { sizeHint?: number; metadataAfterBody?: () => Promise<Metadata> },
  ): Promise<{ etag: string; size: number }>;
  completeMultipartUpload(
    ns: NamespaceRef,
    key: string,
    uploadId: string,
    parts: Array<{ partNumber: number; etag: string }>,
    options?: CompleteOptions,
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
