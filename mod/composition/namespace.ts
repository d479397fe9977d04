// Namespaces: a tenant's bucket or POSIX file system. A namespace's id is derived from its
// tenant and name, and every delta about the namespace or anything in it is routed by the
// SHA-256 of that id, so one namespace lives on one shard and is one total order: renames,
// multipart completion and "delete only when empty" are decided exactly, on every replica.

import { createHash } from "node:crypto";
import { concatBytes, utf8 } from "./bytes.ts";

export const TENANT_ID_BYTES = 16;
export const NAMESPACE_ID_BYTES = 16;
export const NAMESPACE_NAME_BYTES_MAX = 63;
/** Routing keys are full SHA-256 digests (the shard map's hashed key space). */
export const ROUTING_KEY_BYTES = 32;

/** Wire codes of namespace kinds; never change meaning. */
export const NAMESPACE_KINDS = Object.freeze({ bucket: 1, posix: 2 } as const);
export type NamespaceKind = keyof typeof NAMESPACE_KINDS;

/** How a caller names a namespace: the tenant it acts for and the namespace id. */
export interface NamespaceRef {
  tenantId: Uint8Array;
  id: Uint8Array;
}

export interface Namespace extends NamespaceRef {
  name: string;
  kind: NamespaceKind;
  /** Commit time of the creating delta (HLC physical milliseconds). */
  createdMs: number;
  /** Objects (bucket) or inodes other than the root (posix). */
  objects: number;
  /** Sum of object or file sizes. */
  bytes: number;
  /** Multipart uploads in progress. */
  uploads: number;
}

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const hash = createHash("sha256");
  for (const p of parts) hash.update(p);
  return new Uint8Array(hash.digest());
}

const NAMESPACE_ID_DOMAIN = utf8("kiseki/namespace-id/v1\u0000");

/** The id of `tenantId`'s namespace called `name`: the first 16 bytes of a SHA-256. */
export function namespaceIdFor(tenantId: Uint8Array, name: string): Uint8Array {
  return sha256(concatBytes(NAMESPACE_ID_DOMAIN, tenantId, utf8(name))).slice(
    0,
    NAMESPACE_ID_BYTES,
  );
}

/** The hashed key every delta of the namespace is routed by: SHA-256(namespace id). */
export function namespaceRoutingKey(namespaceId: Uint8Array): Uint8Array {
  return sha256(namespaceId);
}

/**
 * Why `name` cannot name a namespace, or null. 1..63 bytes of [A-Za-z0-9._-], not "." or
 * "..": safe as an S3 bucket, an NFS export and a path component. Gateways apply their
 * protocol's stricter rules (S3 bucket naming) before this.
 */
export function namespaceNameProblem(name: string): string | null {
  if (name.length === 0 || name.length > NAMESPACE_NAME_BYTES_MAX) {
    return `namespace name must be 1..${NAMESPACE_NAME_BYTES_MAX} characters`;
  }
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    return "namespace name may hold only letters, digits, '.', '_' and '-'";
  }
  if (name === "." || name === "..") return `namespace name ${JSON.stringify(name)} is reserved`;
  return null;
}

export function tenantIdProblem(tenantId: Uint8Array): string | null {
  return tenantId.length === TENANT_ID_BYTES
    ? null
    : `tenant id is ${tenantId.length} bytes, not ${TENANT_ID_BYTES}`;
}
