// The native client library a compute node uses to talk to the cluster (the FUSE mount sits
// on it): discovery from any node of KISEKI_DATA_ADDR, client-side chunking and sealing,
// metadata over ClientService, sealed chunks over the framed client transport, failover
// between nodes, and the chunk cache port reads go through.

import type { HostPort } from "../base/mod.ts";
import type { Aead } from "../crypto/mod.ts";
import type { NfsObjectBackend } from "../nfs/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { TlsMaterial } from "../transport/mod.ts";
import type { ChunkCache } from "./cache_port.ts";
import type { NamespaceRef, ObjectInfo } from "../composition/mod.ts";
import type { ObjectChunk, ObjectReader } from "./cluster_client.ts";
import { ClusterClient as ClusterClientImpl } from "./cluster_client.ts";

export { bypassChunkCache } from "./cache_port.ts";
export type { ChunkCache } from "./cache_port.ts";
export {
  CLIENT_CALL_DEADLINE_MS,
  CLIENT_FAILOVER_ATTEMPTS_MAX,
  CLIENT_FAILOVER_BACKOFF_MS,
  CLIENT_FAILOVER_DEADLINE_MS,
  CLIENT_NAMESPACE_NAMES_MAX,
  CLIENT_NODES_MAX,
  CLIENT_PREPARE_BATCH_CHUNKS,
  CLIENT_PUT_BATCHES_IN_FLIGHT,
  CLIENT_PUT_RETAINED_BYTES_MAX,
  CLIENT_READ_AHEAD_CHUNKS,
} from "./cluster_client.ts";
export type { ObjectChunk, ObjectReader } from "./cluster_client.ts";
export {
  ClusterDatasetSource,
  DATASET_LIST_PAGE_KEYS,
  type DatasetClient,
  DatasetPathError,
  parseDatasetPath,
} from "./dataset_source.ts";
export { envelopeEpoch, openWithKey, sealWithKey } from "./sealing.ts";
export type { SealWithKeyOptions } from "./sealing.ts";

export interface ClusterClientOptions {
  /** Data-path addresses (KISEKI_DATA_ADDR, host:9100) of some of the cluster's nodes. */
  addrs: HostPort[];
  /** The tenant's client certificate with the cluster CA (mTLS); null: loopback, default tenant. */
  tls: TlsMaterial | null;
  logger: Logger;
  /** Where chunk plaintexts are kept between reads (default bypassChunkCache). */
  cache?: ChunkCache;
  /** Default: WebCrypto AES-256-GCM (the role passes its selected implementation). */
  aead?: Aead;
  /**
   * Bytes one put keeps until its commit to store again on another node if its node dies
   * (default CLIENT_PUT_RETAINED_BYTES_MAX, 1 GiB); a larger put keeps nothing.
   */
  putRetainedBytesMax?: number;
}

/** A connected client of one tenant. */
export interface ClusterClient {
  /** The object interface (as the NFS gateway's BucketFs uses it; the FUSE mount too). */
  readonly backend: NfsObjectBackend;
  /** The tenant this client acts for (16 bytes), as the node named it. */
  readonly tenantId: Uint8Array;
  /** The node the client talks to now (it changes on failover). */
  readonly node: HostPort | null;
  /** The chunks of an object's current version, fetched sealed (staging pins them so). */
  objectChunks(
    ns: NamespaceRef,
    key: string,
  ): Promise<{ info: ObjectInfo; chunks: ObjectChunk[] }>;
  /** An object's current version, kept for reads at any offset (its chunk list and keys). */
  openReader(ns: NamespaceRef, key: string): Promise<ObjectReader>;
  /** Closes the connections (the cache passed in stays the caller's to close). */
  close(): Promise<void>;
}

/** Connects to the first node of `addrs` that answers, and learns the others from it. */
export function connectClusterClient(options: ClusterClientOptions): Promise<ClusterClient> {
  return ClusterClientImpl.connect(options);
}
