// Test support for staging: a dataset in memory, presented as the cluster client presents one.

import type { DatasetChunk, DatasetFile, DatasetSource } from "./stage.ts";

/**
 * A dataset the way the cluster client presents one: files with versions, each a list of
 * chunks whose sealed bytes come from a counting fetch. Chunks are keyed by content, so two
 * files with the same bytes share them.
 */
export class MemoryDataset implements DatasetSource {
  readonly files = new Map<string, { version: string; chunks: Uint8Array[] }>();
  readonly fetched = new Map<string, number>();
  failAfterFetches = Infinity;
  #fetches = 0;

  add(path: string, version: string, chunks: Uint8Array[]): void {
    this.files.set(path, { version, chunks });
  }

  async *listFiles(path: string): AsyncIterable<DatasetFile> {
    for (const [p, f] of [...this.files].sort(([a], [b]) => a.localeCompare(b))) {
      if (p === path || p.startsWith(path.replace(/\/+$/, "") + "/")) {
        yield {
          path: p,
          sizeBytes: f.chunks.reduce((n, c) => n + c.length, 0),
          version: f.version,
        };
      }
    }
  }

  chunksOf(file: DatasetFile): Promise<DatasetChunk[]> {
    const f = this.files.get(file.path)!;
    return Promise.resolve(f.chunks.map((plain) => {
      const id = new Uint8Array(32);
      // A content id: the first bytes name the chunk in these tests.
      id.set(plain.subarray(0, Math.min(32, plain.length)));
      return {
        id,
        fetchSealed: () => {
          if (++this.#fetches > this.failAfterFetches) {
            return Promise.reject(new Error("node went away"));
          }
          const key = id.join(",");
          this.fetched.set(key, (this.fetched.get(key) ?? 0) + 1);
          // "Sealed": reversed bytes, never the plaintext itself.
          return Promise.resolve(plain.slice().reverse());
        },
      };
    }));
  }

  fetchCount(): number {
    let n = 0;
    for (const v of this.fetched.values()) n += v;
    return n;
  }
}
