// The error an NFSv4 operation fails with (its nfsstat4), and the mapping of the file system's
// NfsError (nfsstat3, whose shared codes have the same numbers in v4) and engine failures.

import { CompositionError } from "../composition/mod.ts";
import {
  NFS3ERR_JUKEBOX,
  NFS3ERR_NODEV,
  NFS3ERR_NOT_SYNC,
  NFS3ERR_REMOTE,
  NfsError,
  nfsStatusOf,
} from "./errors.ts";
import { NFS4ERR_DELAY, NFS4ERR_INVAL, NFS4ERR_SERVERFAULT } from "./nfs4_const.ts";

/** An operation's refusal: `status` is the nfsstat4 the client gets. */
export class Nfs4Error extends Error {
  override name = "Nfs4Error";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The nfsstat4 of any failure; nfsstat3 codes with no v4 twin map to their nearest. */
export function nfs4StatusOf(e: unknown): number {
  if (e instanceof Nfs4Error) return e.status;
  if (e instanceof NfsError || e instanceof CompositionError) {
    const s = nfsStatusOf(e);
    if (s === NFS3ERR_JUKEBOX) return NFS4ERR_DELAY;
    if (s === NFS3ERR_NOT_SYNC || s === NFS3ERR_NODEV || s === NFS3ERR_REMOTE) {
      return NFS4ERR_INVAL;
    }
    return s;
  }
  return NFS4ERR_SERVERFAULT;
}
