// What every fold function shares: the tables, the delta being folded with its overlay, the
// outcome it fills in, and the typed refusal that discards the delta's writes. Folding is
// deterministic: it reads only the store and the delta (its sequence and HLC time), never a
// clock or randomness, so every replica and every rebuild reaches the same bytes.

import type { KvEnv, KvTable } from "../disk/mod.ts";
import type { CompositionErrorCode, Content, MutationOutcome } from "../composition/mod.ts";
import type { Delta } from "../log/mod.ts";
import type { Overlay } from "./_overlay.ts";

export interface ViewTables {
  meta: KvTable;
  ns: KvTable;
  nsTenant: KvTable;
  obj: KvTable;
  upload: KvTable;
  uploadId: KvTable;
  part: KvTable;
  inode: KvTable;
  dirent: KvTable;
  cookie: KvTable;
}

/** Table order is part of serialize()'s output. */
export const VIEW_TABLE_NAMES: Readonly<Record<keyof ViewTables, string>> = Object.freeze({
  meta: "view_meta",
  ns: "view_ns",
  nsTenant: "view_ns_tenant",
  obj: "view_obj",
  upload: "view_upload",
  uploadId: "view_upload_id",
  part: "view_part",
  inode: "view_inode",
  dirent: "view_dirent",
  cookie: "view_cookie",
});

export function openTables(env: KvEnv): ViewTables {
  const t = {} as Record<keyof ViewTables, KvTable>;
  for (const [field, name] of Object.entries(VIEW_TABLE_NAMES)) {
    t[field as keyof ViewTables] = env.table(name);
  }
  return t;
}

export interface Fold {
  store: Overlay;
  tables: ViewTables;
  delta: Delta;
  /** The delta's commit time (HLC physical ms). */
  nowMs: number;
  outcome: MutationOutcome;
}

/** A deterministic refusal: the delta is in the log but changes nothing. */
export class FoldRefusal extends Error {
  override name = "FoldRefusal";
  constructor(readonly code: CompositionErrorCode, message: string) {
    super(message);
  }
}

export function refuse(code: CompositionErrorCode, message: string): never {
  throw new FoldRefusal(code, message);
}

/** Records that the delta stopped referencing `content`'s chunks. */
export function release(fold: Fold, content: Content): void {
  if (content.kind === "chunks") {
    for (const r of content.chunkRefs) fold.outcome.released.push(r.chunkId);
  }
}
