// The node's data directory: the layout of DESIGN.md created on first start, and a
// node identity file that stops a data directory from being reused by another node id.
//
// DESIGN: what each part holds at rest, and how it is protected. The lmdb environments that
// hold tenant-readable records in clear (views/, keys/, keys/s3/) are page-encrypted
// (mod/disk/lmdb.ts: ChaCha8 per page, keys, values, free pages and all) under their own
// random page key, sealed with AES-256-GCM beside them in `<env>/page.key`
// (mod/keys/page_keys.ts). raft/ and chunks/index/ are plain lmdb: what they hold of a
// tenant is sealed record by record or is a digest (lmdb-js's page encryption failed and
// crashed under their write load; see mod/disk/lmdb.ts). tests/e2e/at_rest_test.ts scans
// every byte of all of it for canaries.
//
//   keys/node.kek          the node KEK (0600, raw): seals the key store's records and the
//                          page keys of keys/ and views/. Whoever reads it on the node can
//                          unseal those (until the key server holds it).
//   keys/                  system key epochs and tenant KEKs (each record also AES-GCM sealed
//                          under node.kek), tenant dedup keys (wrapped by the tenant KEK).
//   keys/s3/               S3 access keys: ids and tenants, secrets AES-GCM sealed under
//                          keys/s3/s3_credentials.kek, which also seals this env's page key.
//   raft/                  the Raft log and state per shard, plain lmdb: delta headers
//                          (tenant ids, SHA-256 routing keys of namespace ids, chunk ids),
//                          payloads (names, metadata, inline bytes, upload state) sealed per
//                          tenant with AES-256-GCM under keys the tenant's KEK wraps. A
//                          namespace id is a digest of (tenant, bucket name): a guessed name
//                          can be confirmed, none can be read.
//   raft/wal/              the write-ahead log in front of raft/ (mod/disk/wal.ts): the same
//                          records as raft/ (table, key, value of each commit) with LSNs and
//                          CRCs, until lmdb is checkpointed from them and the segments go.
//                          Nothing that raft/ does not hold as well, sealed the same way.
//   views/                 what the log folds into: bucket and object names, directory
//                          entries, user metadata and stored headers, inline bytes, multipart
//                          uploads and parts, chunk lists. In clear inside the pages (for
//                          ordered listings), so protected by page encryption only; a shred
//                          drops a tenant's records and rekeys the environment.
//   chunks/index/          plain lmdb: chunk ids (SHA-256 of plaintext, or HMAC under the
//                          tenant's dedup key; the same ids head each fragment record on the
//                          devices), refcounts, fragment locations, 64-bit hashed tenant tags,
//                          the scrub cursor and pass totals. Nothing tenant-readable.
//   chunks/devices/*.dev   segments of chunk fragments: every chunk sealed with AES-256-GCM
//                          under a per-chunk key (HKDF of the system epoch key and chunk id)
//                          before erasure coding; segment headers hold ids and lengths.
//   small/                 reserved: small objects ride inline in the delta (raft/, views/).
//   config/                node.json (node id, creation), admin-token (0600, operator bearer
//                          token), default-tenant (its id). The default tenant's first S3 key
//                          for aws-cli goes to KISEKI_S3_CREDENTIALS_FILE, which must lie
//                          outside the data dir (config refuses it inside); unset, no key is
//                          written anywhere. A file an earlier version left here is moved
//                          there, or overwritten and removed.
//
// A crypto-shred (POST /api/v1/tenants/<id>/shred) destroys the tenant's KEK (so its raft
// payloads and wrapped keys never open again), drops its view records, gives back its chunk
// references (GC then erases chunks no one else holds), and rekeys views/ and keys/ so that
// nothing of it lingers in free pages under a key that still exists.

import type { Config } from "../base/mod.ts";

export const DATA_DIR_SUBDIRS = ["raft", "keys", "chunks", "small", "config"] as const;
export const DATA_DIR_FORMAT = 1;

export interface NodeIdentity {
  format: number;
  nodeId: number;
  createdAt: string;
  createdBy: string;
}

export class DataDirError extends Error {
  override name = "DataDirError";
}

/** Creates the layout if missing and checks the identity; returns it and whether it is new. */
export async function prepareDataDir(
  config: Pick<Config, "dataDir" | "nodeId">,
  version: string,
): Promise<{ identity: NodeIdentity; created: boolean }> {
  const root = config.dataDir;
  try {
    await Deno.mkdir(root, { recursive: true, mode: 0o750 });
    for (const sub of DATA_DIR_SUBDIRS) {
      await Deno.mkdir(`${root}/${sub}`, { recursive: true, mode: 0o750 });
    }
  } catch (e) {
    throw new DataDirError(
      `KISEKI_DATA_DIR=${root}: cannot create the data directory: ${(e as Error).message}`,
    );
  }
  const path = `${root}/config/node.json`;
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new DataDirError(`cannot read ${path}: ${(e as Error).message}`);
    }
  }
  if (text !== null) {
    let identity: NodeIdentity;
    try {
      identity = JSON.parse(text) as NodeIdentity;
    } catch {
      throw new DataDirError(
        `${path} is not valid JSON; refusing to start on a damaged data directory`,
      );
    }
    if (identity.format !== DATA_DIR_FORMAT) {
      throw new DataDirError(
        `${path}: data directory format ${identity.format} is not ${DATA_DIR_FORMAT}`,
      );
    }
    if (identity.nodeId !== config.nodeId) {
      throw new DataDirError(
        `KISEKI_NODE_ID=${config.nodeId} but ${root} belongs to node ${identity.nodeId}; ` +
          `use that node id or another KISEKI_DATA_DIR`,
      );
    }
    return { identity, created: false };
  }
  const identity: NodeIdentity = {
    format: DATA_DIR_FORMAT,
    nodeId: config.nodeId,
    createdAt: new Date().toISOString(),
    createdBy: `kiseki ${version}`,
  };
  // Write then rename so a crash never leaves a half-written identity.
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(identity, null, 2) + "\n", { mode: 0o640 });
  const f = await Deno.open(tmp, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
  return { identity, created: true };
}
