// The port between the client's read/write path and its chunk cache (L1 memory, L2 local
// disk). The client asks the cache for a chunk's plaintext and says how to fetch and open the
// sealed chunk when the cache does not hold it; the cache decides what it keeps, per mode.
// On local disk only sealed bytes are kept (nothing tenant-readable at rest, on compute nodes
// too); plaintext lives only in memory.

/** A chunk cache as the client's data path sees it. */
export interface ChunkCache {
  /**
   * The plaintext of a chunk: from memory, else from local disk (sealed, checksummed; a corrupt
   * entry is dropped and fetched again, never returned), else `fetchSealed()`; `open` turns
   * sealed bytes into plaintext (and fails on anything not sealed under the tenant's keys).
   */
  read(
    chunkId: Uint8Array,
    fetchSealed: () => Promise<Uint8Array>,
    open: (sealed: Uint8Array) => Promise<Uint8Array>,
  ): Promise<Uint8Array>;
  /** A chunk this client has just written, sealed and in plaintext, kept as the mode says. */
  wrote(chunkId: Uint8Array, sealed: Uint8Array, plaintext: Uint8Array): void;
  /** Drops everything (crypto-shred of the tenant, a disconnect past its bound). */
  wipe(reason: string): Promise<void>;
  close(): Promise<void>;
}

/** The cache of `KISEKI_CACHE_MODE=bypass`: keeps nothing, every read is fetched and opened. */
export const bypassChunkCache: ChunkCache = {
  async read(_chunkId, fetchSealed, open) {
    return await open(await fetchSealed());
  },
  wrote() {},
  async wipe() {},
  async close() {},
};
