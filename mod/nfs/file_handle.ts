// NFS file handles of the bucket namespace: at most 64 bytes (NFS3_FHSIZE) naming the root,
// a bucket, or a path in a bucket. Short paths ride in the handle itself, so such handles
// survive restarts; longer ones are named by a digest the gateway remembers in a bounded
// table (a handle evicted from it, or from before a restart, answers NFS3ERR_STALE).

import { toHex } from "../base/mod.ts";
import { createHash } from "node:crypto";
import { assert, bytesEqual } from "../base/mod.ts";
import { NAMESPACE_ID_BYTES } from "../composition/mod.ts";
import { NFS3ERR_BADHANDLE, NFS3ERR_STALE, NfsError } from "./errors.ts";

export const NFS3_FHSIZE = 64;
/** Long-path handles the gateway remembers (oldest first out); each holds a path (<= 1 KiB). */
export const LONG_PATHS_MAX = 1 << 16;

const FH_VERSION = 1;
const HEADER_BYTES = 4 + NAMESPACE_ID_BYTES; // version, kind, form, export, namespace id
const DIGEST_BYTES = 24;
/** Paths up to this many UTF-8 bytes ride in the handle. */
export const INLINE_PATH_BYTES_MAX = NFS3_FHSIZE - HEADER_BYTES;

export type NodeKind = "root" | "dir" | "object";

/** What a handle names: the export root, or a directory or object path of a bucket. */
export type FsNode =
  | { kind: "root" }
  | { kind: "dir"; ns: Uint8Array; path: string }
  | { kind: "object"; ns: Uint8Array; path: string };

const KIND_CODE: Record<NodeKind, number> = { root: 0, dir: 1, object: 2 };
const FORM_INLINE = 0;
const FORM_DIGEST = 1;
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder("utf-8", { fatal: true });

export class HandleTable {
  readonly #longPaths = new Map<string, string>();
  readonly #max: number;

  constructor(longPathsMax = LONG_PATHS_MAX) {
    this.#max = longPathsMax;
  }

  get longPaths(): number {
    return this.#longPaths.size;
  }

  /** The handle of `node` under export `exportId` (0: the default export). */
  encode(node: FsNode, exportId = 0): Uint8Array {
    assert(Number.isInteger(exportId) && exportId >= 0 && exportId <= 255, "export id is a byte");
    if (node.kind === "root") {
      return new Uint8Array([FH_VERSION, KIND_CODE.root, FORM_INLINE, exportId]);
    }
    const path = ENCODER.encode(node.path);
    const head = new Uint8Array(HEADER_BYTES);
    head.set([FH_VERSION, KIND_CODE[node.kind], FORM_INLINE, exportId]);
    head.set(node.ns, 4);
    if (path.length <= INLINE_PATH_BYTES_MAX) {
      const fh = new Uint8Array(HEADER_BYTES + path.length);
      fh.set(head);
      fh.set(path, HEADER_BYTES);
      return fh;
    }
    const digest = digestOf(node.ns, path);
    const id = hex(digest);
    this.#longPaths.delete(id);
    this.#longPaths.set(id, node.path);
    if (this.#longPaths.size > this.#max) {
      this.#longPaths.delete(this.#longPaths.keys().next().value!);
    }
    head[2] = FORM_DIGEST;
    const fh = new Uint8Array(HEADER_BYTES + DIGEST_BYTES);
    fh.set(head);
    fh.set(digest, HEADER_BYTES);
    return fh;
  }

  /** The node a handle names; BADHANDLE when malformed, STALE when no longer known. */
  decode(fh: Uint8Array): FsNode {
    if (fh.length < 4 || fh[0] !== FH_VERSION) {
      throw new NfsError(NFS3ERR_BADHANDLE, "not a handle of this server");
    }
    const kind = fh[1];
    if (kind === KIND_CODE.root) {
      if (fh.length !== 4) throw new NfsError(NFS3ERR_BADHANDLE, "root handle of a bad length");
      return { kind: "root" };
    }
    if ((kind !== KIND_CODE.dir && kind !== KIND_CODE.object) || fh.length < HEADER_BYTES) {
      throw new NfsError(NFS3ERR_BADHANDLE, "handle of an unknown kind");
    }
    const ns = fh.slice(4, HEADER_BYTES);
    let path: string;
    if (fh[2] === FORM_INLINE) {
      try {
        path = DECODER.decode(fh.subarray(HEADER_BYTES));
      } catch {
        throw new NfsError(NFS3ERR_BADHANDLE, "handle path is not UTF-8");
      }
    } else if (fh[2] === FORM_DIGEST && fh.length === HEADER_BYTES + DIGEST_BYTES) {
      const digest = fh.subarray(HEADER_BYTES);
      const known = this.#longPaths.get(hex(digest));
      if (known === undefined || !bytesEqual(digestOf(ns, ENCODER.encode(known)), digest)) {
        throw new NfsError(NFS3ERR_STALE, "a long-path handle this server no longer knows");
      }
      path = known;
    } else {
      throw new NfsError(NFS3ERR_BADHANDLE, "handle of an unknown form");
    }
    if (kind === KIND_CODE.object && path === "") {
      throw new NfsError(NFS3ERR_BADHANDLE, "object handle without a path");
    }
    return { kind: kind === KIND_CODE.dir ? "dir" : "object", ns, path };
  }
}

function digestOf(ns: Uint8Array, path: Uint8Array): Uint8Array {
  return new Uint8Array(
    createHash("sha256").update("kiseki/nfs-fh/v1\0").update(ns).update(path).digest(),
  ).subarray(0, DIGEST_BYTES);
}

const hex = toHex;

/** The export a handle was issued under (its fourth byte); null when it is too short. */
export function exportIdOf(fh: Uint8Array): number | null {
  return fh.length < 4 ? null : fh[3]!;
}

/** A stable 63-bit file id of a node (fileid3): the root is 1. */
export function fileIdOf(node: FsNode): bigint {
  if (node.kind === "root") return 1n;
  const h = createHash("sha256").update("kiseki/nfs-fileid/v1\0").update(node.ns)
    .update(node.kind === "dir" ? "d" : "o").update(node.path).digest();
  const id = new DataView(h.buffer, h.byteOffset, 8).getBigUint64(0) & 0x7fff_ffff_ffff_ffffn;
  return id < 2n ? id + 2n : id;
}
