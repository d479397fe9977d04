// kiseki.v1.ClientService (proto/kiseki/v1/client.proto): the data-path metadata a native
// client asks a node for. Shapes as @grpc/proto-loader gives them (camelCase, uint64 as
// number, bytes as Uint8Array, maps as records); handlers live in mod/role/client_service.ts.

import { defineGrpcService, type GrpcServiceDefinition } from "./grpc.ts";

export interface ClientClusterNode {
  nodeId: number;
  dataAddr: string;
}

export interface ClientHelloResponse {
  tenantId: string;
  session: Uint8Array;
  nodes: ClientClusterNode[];
  transportAddr: string;
  dedupMode: string;
  dedupKey: Uint8Array;
  cdcMinBytes: number;
  cdcAvgBytes: number;
  cdcMaxBytes: number;
  cdcNormalizationLevel: number;
  commitChunkRefsMax: number;
  transportTls: boolean;
}

export interface ClientNamespaceRequest {
  name: string;
  kind?: string;
}

export interface ClientNamespaceInfo {
  name: string;
  kind: string;
  createdMs: number;
  objects: number;
  bytes: number;
  uploads: number;
}

export interface ClientObjectRequest {
  namespace: string;
  key: string;
  session?: Uint8Array;
}

export interface ClientObjectInfo {
  key: string;
  size: number;
  etag: string;
  version: number;
  contentType: string;
  metadata: Record<string, string>;
  createdMs: number;
  modifiedMs: number;
  partSizes: number[];
  hasPartSizes: boolean;
}

export interface ClientListObjectsRequest {
  namespace: string;
  prefix?: string;
  delimiter?: string;
  startAfter?: string;
  continuationToken?: string;
  maxKeys?: number;
}

export interface ClientListObjectsResponse {
  objects: { key: string; size: number; etag: string; modifiedMs: number; version: number }[];
  commonPrefixes: string[];
  keyCount: number;
  isTruncated: boolean;
  nextContinuationToken: string;
  nextMarker: string;
}

export interface ClientCopyObjectRequest {
  sourceNamespace: string;
  sourceKey: string;
  targetNamespace: string;
  targetKey: string;
  replaceMetadata?: boolean;
  metadata?: Record<string, string>;
  contentType?: string;
}

export interface ClientChunkRef {
  chunkId: Uint8Array;
  offset: number;
  length: number;
}

export interface ClientObjectManifest {
  info: ClientObjectInfo;
  inline: boolean;
  inlineBytes: Uint8Array;
  chunks: ClientChunkRef[];
  epoch: number;
  keys: Uint8Array[];
}

export interface ClientChunkKeysRequest {
  namespace: string;
  key: string;
  session: Uint8Array;
  epoch: number;
  chunkIds: Uint8Array[];
}

export interface ClientPrepareChunksResponse {
  epoch: number;
  present: boolean[];
  keys: Uint8Array[];
  challenges: Uint8Array[];
}

export interface ClientCommitObjectRequest {
  namespace: string;
  key: string;
  session: Uint8Array;
  chunks: ClientChunkRef[];
  size: number;
  etag: string;
  contentType?: string;
  metadata?: Record<string, string>;
  ifAbsent?: boolean;
  hasIfVersion?: boolean;
  ifVersion?: number;
}

export interface ClientCommitObjectResponse {
  etag: string;
  version: number;
  size: number;
}

export type ClientServiceMethods = {
  Hello: { request: Record<string, never>; response: ClientHelloResponse };
  ListNamespaces: {
    request: Record<string, never>;
    response: { namespaces: ClientNamespaceInfo[] };
  };
  CreateNamespace: { request: ClientNamespaceRequest; response: ClientNamespaceInfo };
  GetNamespace: { request: ClientNamespaceRequest; response: ClientNamespaceInfo };
  DeleteNamespace: { request: ClientNamespaceRequest; response: Record<string, never> };
  HeadObject: { request: ClientObjectRequest; response: ClientObjectInfo };
  ListObjects: { request: ClientListObjectsRequest; response: ClientListObjectsResponse };
  DeleteObject: { request: ClientObjectRequest; response: { deleted: boolean } };
  CopyObject: { request: ClientCopyObjectRequest; response: ClientCommitObjectResponse };
  ObjectManifest: { request: ClientObjectRequest; response: ClientObjectManifest };
  ChunkKeys: { request: ClientChunkKeysRequest; response: { keys: Uint8Array[] } };
  PrepareChunks: {
    request: { session: Uint8Array; chunkIds: Uint8Array[] };
    response: ClientPrepareChunksResponse;
  };
  ProveChunks: {
    request: { session: Uint8Array; chunkIds: Uint8Array[]; proofs: Uint8Array[] };
    response: Record<string, never>;
  };
  CommitObject: { request: ClientCommitObjectRequest; response: ClientCommitObjectResponse };
};

export const CLIENT_SERVICE: GrpcServiceDefinition<ClientServiceMethods> = defineGrpcService<
  ClientServiceMethods
>("kiseki.v1.ClientService", "kiseki/v1/client.proto", [
  "Hello",
  "ListNamespaces",
  "CreateNamespace",
  "GetNamespace",
  "DeleteNamespace",
  "HeadObject",
  "ListObjects",
  "DeleteObject",
  "CopyObject",
  "ObjectManifest",
  "ChunkKeys",
  "PrepareChunks",
  "ProveChunks",
  "CommitObject",
]);
