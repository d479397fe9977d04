// nfsstat3 (RFC 1813 §2.6) and the one error type the NFS gateway raises: an NfsError carries
// the status the client gets. Composition failures map to their nfsstat here, once.

import { CompositionError } from "../composition/mod.ts";

export const NFS3_OK = 0;
export const NFS3ERR_PERM = 1;
export const NFS3ERR_NOENT = 2;
export const NFS3ERR_IO = 5;
export const NFS3ERR_NXIO = 6;
export const NFS3ERR_ACCES = 13;
export const NFS3ERR_EXIST = 17;
export const NFS3ERR_XDEV = 18;
export const NFS3ERR_NODEV = 19;
export const NFS3ERR_NOTDIR = 20;
export const NFS3ERR_ISDIR = 21;
export const NFS3ERR_INVAL = 22;
export const NFS3ERR_FBIG = 27;
export const NFS3ERR_NOSPC = 28;
export const NFS3ERR_ROFS = 30;
export const NFS3ERR_MLINK = 31;
export const NFS3ERR_NAMETOOLONG = 63;
export const NFS3ERR_NOTEMPTY = 66;
export const NFS3ERR_DQUOT = 69;
export const NFS3ERR_STALE = 70;
export const NFS3ERR_REMOTE = 71;
export const NFS3ERR_BADHANDLE = 10001;
export const NFS3ERR_NOT_SYNC = 10002;
export const NFS3ERR_BAD_COOKIE = 10003;
export const NFS3ERR_NOTSUPP = 10004;
export const NFS3ERR_TOOSMALL = 10005;
export const NFS3ERR_SERVERFAULT = 10006;
export const NFS3ERR_BADTYPE = 10007;
export const NFS3ERR_JUKEBOX = 10008;

/** A request the gateway refuses: `status` is the nfsstat3 the client gets. */
export class NfsError extends Error {
  override name = "NfsError";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

const COMPOSITION_STATUS: Record<string, number> = {
  invalid_argument: NFS3ERR_INVAL,
  namespace_not_found: NFS3ERR_NOENT,
  namespace_exists: NFS3ERR_EXIST,
  namespace_not_empty: NFS3ERR_NOTEMPTY,
  wrong_kind: NFS3ERR_NOTSUPP,
  not_found: NFS3ERR_NOENT,
  exists: NFS3ERR_EXIST,
  not_empty: NFS3ERR_NOTEMPTY,
  not_a_directory: NFS3ERR_NOTDIR,
  is_a_directory: NFS3ERR_ISDIR,
  invalid_rename: NFS3ERR_INVAL,
  too_many_links: NFS3ERR_MLINK,
  precondition_failed: NFS3ERR_EXIST,
  too_large: NFS3ERR_FBIG,
  read_only: NFS3ERR_ROFS,
  no_space: NFS3ERR_NOSPC,
  unavailable: NFS3ERR_JUKEBOX,
};

/** The nfsstat3 of any failure: NfsError's own, a composition code's, else SERVERFAULT. */
export function nfsStatusOf(e: unknown): number {
  if (e instanceof NfsError) return e.status;
  if (e instanceof CompositionError) return COMPOSITION_STATUS[e.code] ?? NFS3ERR_IO;
  return NFS3ERR_SERVERFAULT;
}
