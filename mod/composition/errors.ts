// The one error type the composition service and the views raise for requests they cannot
// serve. `code` is protocol-neutral; gateways map it (S3 error codes, nfsstat, errno).

export type CompositionErrorCode =
  /** Malformed input (bad key, limit exceeded, bad token): S3 InvalidArgument, NFS3ERR_INVAL. */
  | "invalid_argument"
  /** The namespace does not exist (or belongs to another tenant): NoSuchBucket. */
  | "namespace_not_found"
  /** A namespace of that name already exists for the tenant: BucketAlreadyOwnedByYou. */
  | "namespace_exists"
  /** Objects, uploads or directory entries remain: BucketNotEmpty. */
  | "namespace_not_empty"
  /** The operation does not apply to this kind of namespace (bucket vs posix). */
  | "wrong_kind"
  /** No such key or inode: NoSuchKey, NFS3ERR_NOENT. */
  | "not_found"
  /** The name is taken: NFS3ERR_EXIST. */
  | "exists"
  /** A directory that must be empty is not: NFS3ERR_NOTEMPTY. */
  | "not_empty"
  | "not_a_directory"
  | "is_a_directory"
  /** A rename that would move a directory under itself: EINVAL. */
  | "invalid_rename"
  | "too_many_links"
  /** A write precondition (if-absent, if-version) did not hold: PreconditionFailed. */
  | "precondition_failed"
  | "no_such_upload"
  /** A listed part is missing or its etag differs: InvalidPart. */
  | "invalid_part"
  /** Part numbers are not strictly ascending: InvalidPartOrder. */
  | "invalid_part_order"
  /** A part other than the last is smaller than the minimum: EntityTooSmall. */
  | "entity_too_small"
  /** The result would exceed a size or count limit: EntityTooLarge, NFS3ERR_FBIG. */
  | "too_large"
  /** The shard is in maintenance (read-only) mode: NFS3ERR_ROFS, S3 503. */
  | "read_only"
  /**
   * The storage pool has no room for new data (it returns as deleted data is reclaimed):
   * S3 507 InsufficientStorage, NFS3ERR_NOSPC / NFS4ERR_NOSPC, FUSE ENOSPC.
   */
  | "no_space"
  /** No quorum, timeout, or the view has not caught up: S3 503 SlowDown, NFS3ERR_JUKEBOX. */
  | "unavailable";

export class CompositionError extends Error {
  override name = "CompositionError";
  constructor(readonly code: CompositionErrorCode, message: string) {
    super(message);
  }
}
