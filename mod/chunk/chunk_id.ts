// Chunk identity: 32 bytes naming a chunk's plaintext. SHA-256 of the plaintext lets equal
// chunks of different tenants share one stored copy; HMAC-SHA256 under a tenant's key
// confines dedup to that tenant and hides from everyone else that two tenants hold the
// same bytes (a SHA-256 id confirms a guessed file to anyone who sees ids).
//
// Hashing goes through node:crypto's synchronous createHash/createHmac: measured in Deno
// 2.9 (tests/bench/cdc_bench.ts, "chunk id" rows) SHA-256 runs at 1256 / 2045 / 2189 MB/s
// for 4 KiB / 64 KiB / 1 MiB against crypto.subtle.digest's 173 / 1128 / 1937 (WebCrypto's
// async round trip costs ~40 µs a call); HMAC-SHA256 measured alike.

import { createHash, createHmac } from "node:crypto";
import { toHex } from "../base/mod.ts";

export const CHUNK_ID_BYTES = 32;
/** Shortest tenant dedup key accepted (HMAC-SHA256 keys shorter than the hash are weak). */
export const TENANT_DEDUP_KEY_BYTES_MIN = 32;

declare const chunkIdBrand: unique symbol;

/** 32 bytes identifying a chunk's content; obtained only from the functions below. */
export type ChunkId = Uint8Array & { readonly [chunkIdBrand]: true };

/**
 * Per-tenant dedup mode: "global" ids are SHA-256 (dedup across tenants), "tenant" ids
 * are HMAC-SHA256 under the tenant's dedup key (dedup only within the tenant).
 */
export type DedupMode = "global" | "tenant";

export const DEDUP_MODES: readonly DedupMode[] = Object.freeze(["global", "tenant"]);

/** A string or byte string that is not a chunk id. */
export class ChunkIdError extends Error {
  override name = "ChunkIdError";
}

/** Plain 32-byte copy of a node Buffer digest (never a view into Buffer's shared pool). */
function own(digest: Uint8Array): ChunkId {
  const id = new Uint8Array(CHUNK_ID_BYTES);
  id.set(digest);
  return id as ChunkId;
}

/** SHA-256 of the plaintext: the id for tenants that dedup globally. */
export function sha256ChunkId(plaintext: Uint8Array): ChunkId {
  return own(createHash("sha256").update(plaintext).digest());
}

/** HMAC-SHA256 of the plaintext under the tenant's dedup key: tenant-isolated dedup. */
export function hmacChunkId(tenantKey: Uint8Array, plaintext: Uint8Array): ChunkId {
  if (!(tenantKey instanceof Uint8Array) || tenantKey.length < TENANT_DEDUP_KEY_BYTES_MIN) {
    throw new RangeError(
      `tenant dedup key must be at least ${TENANT_DEDUP_KEY_BYTES_MIN} bytes, got ` +
        `${tenantKey?.length}`,
    );
  }
  return hmacSha256(tenantKey, plaintext);
}

/**
 * HMAC-SHA256 with no key-length check: the primitive under hmacChunkId(), exported for
 * known-answer tests (RFC 4231 uses short keys). Not in the chunk door.
 */
export function hmacSha256(key: Uint8Array, data: Uint8Array): ChunkId {
  return own(createHmac("sha256", key).update(data).digest());
}

/** The id for a tenant's mode; "tenant" mode needs the tenant's dedup key. */
export function computeChunkId(
  mode: DedupMode,
  plaintext: Uint8Array,
  tenantKey?: Uint8Array,
): ChunkId {
  if (mode === "global") return sha256ChunkId(plaintext);
  if (mode === "tenant") {
    if (tenantKey === undefined) throw new RangeError("dedup mode 'tenant' needs a tenant key");
    return hmacChunkId(tenantKey, plaintext);
  }
  throw new RangeError(`unknown dedup mode ${JSON.stringify(mode)}`);
}

/** Checks and adopts 32 bytes read from storage or the wire (copied). */
export function chunkIdFromBytes(bytes: Uint8Array): ChunkId {
  if (!(bytes instanceof Uint8Array) || bytes.length !== CHUNK_ID_BYTES) {
    throw new ChunkIdError(`chunk id must be ${CHUNK_ID_BYTES} bytes, got ${bytes?.length}`);
  }
  return own(bytes);
}

/** Lower-case hex, 64 characters. */
export function chunkIdToHex(id: ChunkId): string {
  return toHex(id);
}

function nibble(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  const lower = code | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** Parses 64 hex characters (either case); anything else is a ChunkIdError. */
export function chunkIdFromHex(hex: string): ChunkId {
  if (typeof hex !== "string" || hex.length !== CHUNK_ID_BYTES * 2) {
    throw new ChunkIdError(
      `chunk id must be ${CHUNK_ID_BYTES * 2} hex characters, got ${
        typeof hex === "string" ? hex.length : typeof hex
      }`,
    );
  }
  const id = new Uint8Array(CHUNK_ID_BYTES);
  for (let i = 0; i < CHUNK_ID_BYTES; i++) {
    const hi = nibble(hex.charCodeAt(2 * i));
    const lo = nibble(hex.charCodeAt(2 * i + 1));
    if (hi < 0 || lo < 0) {
      throw new ChunkIdError(`chunk id has a non-hex character near position ${2 * i}`);
    }
    id[i] = (hi << 4) | lo;
  }
  return id as ChunkId;
}

export function chunkIdEquals(a: ChunkId, b: ChunkId): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
