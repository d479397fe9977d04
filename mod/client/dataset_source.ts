// Staging's view of the cluster (the DatasetSource kiseki-client stage fetches through): a
// dataset path is /bucket or /bucket/prefix in the tenant's namespace, as the FUSE mount shows
// it; its files are the objects under it, their chunks come sealed from the cluster client.

import type { DatasetChunk, DatasetFile, DatasetSource } from "./cache/mod.ts";
import type { NfsObjectBackend } from "../nfs/mod.ts";
import type { ObjectChunk } from "./cluster_client.ts";
import type { NamespaceRef, ObjectInfo } from "../composition/mod.ts";

/** Keys one listing page asks for (the pages of a large dataset are read one by one). */
export const DATASET_LIST_PAGE_KEYS = 1000;

/** What the source needs of a connected cluster client. */
export interface DatasetClient {
  readonly backend: NfsObjectBackend;
  readonly tenantId: Uint8Array;
  objectChunks(ns: NamespaceRef, key: string): Promise<{ info: ObjectInfo; chunks: ObjectChunk[] }>;
}

export class DatasetPathError extends Error {
  override name = "DatasetPathError";
}

/** Splits `/bucket/some/prefix` into the bucket and the key prefix ("" for a whole bucket). */
export function parseDatasetPath(path: string): { bucket: string; prefix: string } {
  if (!path.startsWith("/")) throw new DatasetPathError(`${path}: a dataset path starts with /`);
  const parts = path.split("/").filter((p) => p !== "");
  if (parts.length === 0) {
    throw new DatasetPathError(`${path}: name a bucket (/bucket or /bucket/prefix)`);
  }
  if (parts.some((p) => p === "." || p === "..")) {
    throw new DatasetPathError(`${path}: . and .. are not dataset path parts`);
  }
  return { bucket: parts[0]!, prefix: parts.slice(1).join("/") };
}

/** A DatasetSource over a connected cluster client. */
export class ClusterDatasetSource implements DatasetSource {
  readonly #client: DatasetClient;

  constructor(client: DatasetClient) {
    this.#client = client;
  }

  async *listFiles(path: string): AsyncIterable<DatasetFile> {
    const { bucket, prefix } = parseDatasetPath(path);
    const fs = this.#client.backend;
    const ns = fs.namespace(this.#client.tenantId, bucket);
    // The prefix names a file, or a directory: "data/x" is data/x and data/x/..., never
    // data/xy. A key ending in "/" is a directory marker, not a file.
    const under = prefix === "" ? "" : `${prefix}/`;
    const exact = prefix === "" ? null : await headOrNull(fs, ns, prefix);
    if (exact !== null) {
      yield { path: `/${bucket}/${prefix}`, sizeBytes: exact.size, version: versionOf(exact) };
    }
    let continuationToken: string | undefined;
    for (;;) {
      const page = await fs.listObjects(ns, {
        prefix: under,
        maxKeys: DATASET_LIST_PAGE_KEYS,
        continuationToken,
      });
      for (const o of page.objects) {
        if (o.key.endsWith("/")) continue;
        yield {
          path: `/${bucket}/${o.key}`,
          sizeBytes: o.size,
          version: `${o.version}:${o.etag}`,
        };
      }
      if (!page.isTruncated || page.nextContinuationToken === null) break;
      continuationToken = page.nextContinuationToken;
    }
  }

  async chunksOf(file: DatasetFile): Promise<DatasetChunk[]> {
    const { bucket, prefix } = parseDatasetPath(file.path);
    const ns = this.#client.backend.namespace(this.#client.tenantId, bucket);
    const { chunks } = await this.#client.objectChunks(ns, prefix);
    return chunks.map((c) => ({ id: c.id, fetchSealed: () => c.fetchSealed() }));
  }
}

function versionOf(info: ObjectInfo): string {
  return `${info.version}:${info.etag}`;
}

async function headOrNull(
  fs: NfsObjectBackend,
  ns: NamespaceRef,
  key: string,
): Promise<ObjectInfo | null> {
  try {
    return await fs.headObject(ns, key);
  } catch (e) {
    if ((e as { code?: string }).code === "not_found") return null;
    throw e;
  }
}
