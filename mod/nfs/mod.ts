// NFS: XDR, ONC RPC over TCP, the portmapper, MOUNT v3 and NFS v3 over a tenant's buckets
// (one namespace with S3). The gateway sees the object engine through NfsObjectBackend only.
export { startNfsGateway } from "./gateway.ts";
export type { NfsGateway, NfsGatewayOptions } from "./gateway.ts";
export { BucketFs } from "./bucket_fs.ts";
export type { NfsObjectBackend } from "./bucket_fs.ts";
export { NfsError } from "./errors.ts";
export { XdrError, XdrReader, XdrWriter } from "./xdr.ts";
export { RecordDecoder, RPC_RECORD_BYTES_MAX } from "./rpc.ts";
export { RpcDispatcher } from "./rpc_server.ts";
export { nfsStatusOf } from "./errors.ts";
export type { Caller, FileAttr, SetAttr } from "./bucket_fs.ts";
export type { FsNode } from "./file_handle.ts";
