// Composition: namespaces, compositions (ordered chunk refs or inline bytes), multipart,
// POSIX mutations, the sealed payload format they travel in, and the service that commits
// them through the shard log and answers from the views.
export {
  READ_AHEAD_BYTES_MAX_DEFAULT,
  READ_BUDGET_WAIT_MS_MAX,
  READ_BUDGET_WAITERS_MAX,
  ReadBudget,
} from "./read_budget.ts";
export {
  ByteReader,
  bytesEqual,
  ByteWriter,
  concatBytes,
  fromHex,
  fromUtf8,
  toHex,
  utf8,
} from "./bytes.ts";
export {
  CHUNK_ID_BYTES,
  CHUNK_LENGTH_BYTES_MAX,
  chunkIdsOf,
  COMPOSITION_CHUNK_REFS_MAX,
  COMPOSITION_KEY_BYTES_MAX,
  CONTENT_TYPE_BYTES_MAX,
  contentProblem,
  EMPTY_CONTENT,
  ETAG_BYTES_MAX,
  INLINE_BYTES_MAX,
  INLINE_THRESHOLD_BYTES_DEFAULT,
  INODE_TYPES,
  keyProblem,
  LINK_COUNT_MAX,
  METADATA_BYTES_MAX,
  METADATA_ENTRIES_MAX,
  METADATA_NAME_BYTES_MAX,
  metadataProblem,
  MODE_BITS_MAX,
  PART_NUMBER_MAX,
  partSizesProblem,
  POSIX_NAME_BYTES_MAX,
  posixNameProblem,
  posixTimeOfMs,
  PUT_CHUNK_REFS_MAX,
  PUT_PART_SIZES_MAX,
  ROOT_INODE,
  SYMLINK_TARGET_BYTES_MAX,
  UPLOAD_ID_BYTES,
} from "./composition.ts";
export type {
  ChunkRef,
  Composition,
  Content,
  DirEntry,
  Inode,
  InodeType,
  Metadata,
  ObjectSummary,
  Part,
  PosixTime,
  SetAttributes,
  Upload,
} from "./composition.ts";
export {
  decodePayload,
  encodePayload,
  PARTS_DIGEST_BYTES,
  partsDigest,
  PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX,
  PAYLOAD_FORMAT_VERSION,
  PAYLOAD_FORMAT_VERSION_MIN,
  PAYLOAD_OPS,
  PAYLOAD_PLAINTEXT_BYTES_MAX,
  PAYLOAD_TOKEN_BYTES,
  PAYLOAD_TYPES,
  payloadChunkIds,
  PayloadFormatError,
} from "./codec.ts";
export type { Payload, PayloadType, PutCondition } from "./codec.ts";
export { CompositionError } from "./errors.ts";
export type { CompositionErrorCode } from "./errors.ts";
export {
  decodeContinuationToken,
  DELIMITER_BYTES_MAX,
  encodeContinuationToken,
  LIST_KEYS_MAX,
  LIST_PARTS_MAX,
  LIST_UPLOADS_MAX,
  READDIR_ENTRIES_MAX,
} from "./listing.ts";
export type {
  ListObjectsOptions,
  ListObjectsResult,
  ListPartsOptions,
  ListPartsResult,
  ListPosition,
  ListUploadsOptions,
  ListUploadsResult,
  ReaddirOptions,
  ReaddirResult,
} from "./listing.ts";
export {
  NAMESPACE_ID_BYTES,
  NAMESPACE_KINDS,
  NAMESPACE_NAME_BYTES_MAX,
  namespaceIdFor,
  namespaceNameProblem,
  namespaceRoutingKey,
  ROUTING_KEY_BYTES,
  sha256,
  TENANT_ID_BYTES,
} from "./namespace.ts";
export type { Namespace, NamespaceKind, NamespaceRef } from "./namespace.ts";
export {
  AEAD_PAYLOAD_KEYS_CACHED_MAX,
  AeadPayloadCipher,
  PayloadUnreadableError,
} from "./payload_cipher.ts";
export type { AeadPayloadCipherOptions, PayloadCipher, TenantKeySource } from "./payload_cipher.ts";
export { CompositionService, OUTCOME_WAIT_MS_DEFAULT } from "./service.ts";
export type {
  CompleteInput,
  CompositionServiceOptions,
  CompositionViews,
  CopyInput,
  DeltaCommitter,
  MutationOutcome,
  PartInput,
  PendingOutcome,
  PosixOwner,
  PutInput,
  PutResult,
} from "./service.ts";
export {
  ENGINE_OBJECT_BYTES_MAX,
  ENGINE_PART_BYTES_MIN_DEFAULT,
  ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX,
  ENGINE_READ_AHEAD_CHUNKS,
  ObjectEngine,
  ObjectPartError,
  ObjectRangeError,
  resolvePart,
  resolveRange,
} from "./object_engine.ts";
export type {
  Body,
  ByteRange,
  CompletedPart,
  CompleteOptions,
  CopyOptions,
  EngineStats,
  GetObjectOptions,
  GetObjectResult,
  ObjectEngineOptions,
  ObjectInfo,
  PutObjectOptions,
  PutObjectResult,
  TenantDedup,
  TenantGate,
} from "./object_engine.ts";
export { KmsPayloadCipher, kmsTenantName } from "./tenant_payload_cipher.ts";
export type { KmsPayloadCipherOptions } from "./tenant_payload_cipher.ts";
export {
  SEALED_KEYS_PER_REQUEST_MAX,
  SEALED_MASTER_KEYS_CACHED_MAX,
  SealedObjects,
  SealedStoredError,
} from "./sealed_objects.ts";
export type { HeldRefs, SealedCommit, SealedObjectsOptions } from "./sealed_objects.ts";
