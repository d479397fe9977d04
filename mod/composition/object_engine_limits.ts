// The object engine's limits in one place: buffers, queues and caches of the put and get
// paths, with the relationships between them asserted once at load.

import { assert } from "../base/mod.ts";

/** Chunks one put seals and stores concurrently (each holds one envelope buffer). */
export const ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX = 8;
/** Envelope buffers the engine owns across all puts; a put waits for one when all are lent. */
export const ENGINE_CHUNK_BUFFERS_MAX = 64;
/** CDC assembly buffers (one per put being chunked); further puts wait. */
export const ENGINE_ASSEMBLY_BUFFERS_MAX = 32;
/** Puts that may wait for a buffer before new ones are refused as "unavailable". */
export const ENGINE_BUFFER_WAITERS_MAX = 4096;
/**
 * Chunks a get fetches ahead of the one its reader is consuming. Measured with 1 MiB chunks
 * on EC 4+2 through the S3 gateway: 4 ahead streamed a 64 MiB GET at 900-985 MB/s, 8 at
 * 795-815, 16 at 640: reads merged into one disk round complete together, so a deep window
 * delays the chunk the reader waits for behind the ones it does not need yet.
 */
export const ENGINE_READ_AHEAD_CHUNKS = 4;
/**
 * A get whose reader takes no bytes for this long gives up its fetched chunks and fails: a
 * client that stops reading must not hold read-ahead memory (and its connection) forever.
 * 120 s lets a 64 KB/s reader take a 4 MiB chunk (the CDC maximum) with room to spare.
 */
export const ENGINE_READ_STALL_MS = 120_000;
/** Most hash workers an engine runs (MD5 and chunk ids; one saturates at ~500 MB/s). */
export const ENGINE_HASH_WORKERS_MAX = 4;
/** References given back concurrently after a commit released them. */
export const ENGINE_RELEASES_IN_FLIGHT_MAX = 32;
/** Overwrites whose releases may run behind their writers at once. */
export const ENGINE_RELEASES_BEHIND_MAX = 256;
/** S3's limit on one object. */
export const ENGINE_OBJECT_BYTES_MAX = 5 * 1024 ** 4;
/** S3's minimum size of every part but the last. */
export const ENGINE_PART_BYTES_MIN_DEFAULT = 5 << 20;
/** System key epochs whose master keys the engine keeps in memory. */
export const ENGINE_MASTER_KEYS_CACHED_MAX = 64;

assert(
  ENGINE_PUT_CHUNKS_IN_FLIGHT_MAX <= ENGINE_CHUNK_BUFFERS_MAX,
  "one put can have all its chunks in flight",
);
