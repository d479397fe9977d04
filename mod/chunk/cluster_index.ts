// The cluster chunk store's index: per chunk this node wrote, where each fragment lives
// (node, device), its CRC, the refcount and tenants; plus the queues the background work
// drains (degraded chunks, unreferenced chunks, fragment releases owed to nodes).

import { assert } from "../base/mod.ts";
import { type Durability, formatDurability, fragmentCount, parseDurability } from "./pool.ts";

export const CLUSTER_INDEX_TABLES = {
  chunks: "cluster_chunks",
  degraded: "cluster_degraded",
  unreferenced: "cluster_unreferenced",
  releases: "cluster_releases",
} as const;

export interface ClusterFragment {
  node: number;
  device: string;
  /** CRC-32C of the fragment: a holder's bytes are checked before they are decoded. */
  crc: number;
}

export interface ClusterEntry {
  /** The node that wrote the fragments (they are kept under writerChunkId(id, writer)). */
  writer: number;
  durability: Durability;
  refcount: number;
  lengthBytes: number;
  fragmentBytes: number;
  /** By fragment index; null where the fragment is missing (the chunk is degraded). */
  fragments: (ClusterFragment | null)[];
  tenants: string[];
  tenantOverflow: boolean;
  /**
   * Taken over from a writer recorded down or removed (cluster_store.ts, adoptStep()): its
   * fragments are kept and repaired here, and since the writer's reference count went with
   * it, the chunk is retained (its references are not counted; a leak, never a loss).
   */
  adopted?: true;
}

export function encodeClusterEntry(e: ClusterEntry): Uint8Array {
  assert(e.fragments.length === fragmentCount(e.durability), "fragment count");
  return new TextEncoder().encode(JSON.stringify({
    v: 1,
    w: e.writer,
    d: formatDurability(e.durability),
    r: e.refcount,
    l: e.lengthBytes,
    b: e.fragmentBytes,
    f: e.fragments.map((f) => (f === null ? null : [f.node, f.device, f.crc])),
    t: e.tenants,
    o: e.tenantOverflow,
    ...(e.adopted ? { a: 1 } : {}),
  }));
}

export function decodeClusterEntry(bytes: Uint8Array): ClusterEntry {
  const j = JSON.parse(new TextDecoder().decode(bytes));
  assert(j.v === 1, "cluster chunk entry version");
  return {
    writer: j.w,
    durability: parseDurability(j.d),
    refcount: j.r,
    lengthBytes: j.l,
    fragmentBytes: j.b,
    fragments: (j.f as ([number, string, number] | null)[]).map((f) =>
      f === null ? null : { node: f[0], device: f[1], crc: f[2] }
    ),
    tenants: j.t,
    tenantOverflow: j.o,
    ...(j.a === 1 ? { adopted: true as const } : {}),
  };
}

/**
 * The fragment index at which a fabric DELETE of a chunk id drops one reference of the chunk
 * on the node whose index counts it (fabric_fragments.ts); no fragment has it.
 */
export const REFERENCE_FRAGMENT_INDEX = 0xffff_fffe;

export function releaseKey(id: Uint8Array, index: number, node: number): Uint8Array {
  const key = new Uint8Array(40);
  key.set(id, 0);
  const view = new DataView(key.buffer);
  view.setUint32(32, index);
  view.setUint32(36, node);
  return key;
}
