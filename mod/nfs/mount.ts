// MOUNT version 3 (RFC 1813 appendix I), program 100005: MNT turns an export path into the
// root file handle, UMNT/UMNTALL forget a client's mounts, DUMP lists them, EXPORT lists
// what may be mounted. Served on the NFS port, so no rpcbind or mountd is needed. Which
// export a path falls under, and whether the client may mount it, is NfsExports' answer.

import { NfsError } from "./errors.ts";
import type { NfsExports } from "./exports.ts";
import { AUTH_SYS, PROC_UNAVAIL } from "./rpc.ts";
import { RpcAcceptError, type RpcContext, type RpcProgram } from "./rpc_server.ts";
import { type XdrReader, XdrWriter } from "./xdr.ts";

export const MOUNT_PROGRAM = 100005;
export const MOUNT_V3 = 3;
export const MOUNTPROC3_NULL = 0;
export const MOUNTPROC3_MNT = 1;
export const MOUNTPROC3_DUMP = 2;
export const MOUNTPROC3_UMNT = 3;
export const MOUNTPROC3_UMNTALL = 4;
export const MOUNTPROC3_EXPORT = 5;

export const MNT3_OK = 0;
export const MNT3ERR_NOENT = 2;
export const MNT3ERR_IO = 5;
export const MNT3ERR_ACCES = 13;
export const MNT3ERR_NOTDIR = 20;
export const MNT3ERR_INVAL = 22;
export const MNT3ERR_NAMETOOLONG = 63;
export const MNT3ERR_SERVERFAULT = 10006;

/** dirpath is at most MNTPATHLEN bytes. */
export const MNTPATHLEN = 1024;
/** Mounts remembered for DUMP (oldest first out): it is advisory, as in every mountd. */
export const MOUNT_ENTRIES_MAX = 1024;

const NFS_STATUS_TO_MNT: Record<number, number> = {
  2: MNT3ERR_NOENT,
  13: MNT3ERR_ACCES,
  20: MNT3ERR_NOTDIR,
  22: MNT3ERR_INVAL,
  63: MNT3ERR_NAMETOOLONG,
  70: MNT3ERR_NOENT,
};

export class MountProgram implements RpcProgram {
  readonly prog = MOUNT_PROGRAM;
  readonly versLow = MOUNT_V3;
  readonly versHigh = MOUNT_V3;
  readonly #exports: NfsExports;
  /** "host\0path" of the mounts clients made. */
  readonly #mounts = new Set<string>();

  constructor(options: { exports: NfsExports }) {
    this.#exports = options.exports;
  }

  get mounts(): number {
    return this.#mounts.size;
  }

  allowsAuthNone(proc: number): boolean {
    // Listing exports and mounts reveals no data; mounting needs AUTH_SYS.
    return proc === MOUNTPROC3_EXPORT || proc === MOUNTPROC3_DUMP;
  }

  async call(_vers: number, proc: number, args: XdrReader, ctx: RpcContext): Promise<Uint8Array> {
    const w = new XdrWriter(128);
    switch (proc) {
      case MOUNTPROC3_NULL:
        break;
      case MOUNTPROC3_MNT: {
        const path = args.string(MNTPATHLEN);
        try {
          const { handle } = await this.#exports.mount(path, ctx.peerHost, ctx.auth!);
          w.u32(MNT3_OK).opaque(handle);
          w.u32(1).u32(AUTH_SYS);
          const key = `${ctx.peerHost}\0${path}`;
          this.#mounts.delete(key);
          this.#mounts.add(key);
          if (this.#mounts.size > MOUNT_ENTRIES_MAX) {
            this.#mounts.delete(this.#mounts.values().next().value!);
          }
        } catch (e) {
          w.u32(e instanceof NfsError ? NFS_STATUS_TO_MNT[e.status] ?? MNT3ERR_IO : MNT3ERR_IO);
        }
        break;
      }
      case MOUNTPROC3_DUMP:
        for (const m of this.#mounts) {
          const [host, path] = m.split("\0") as [string, string];
          w.bool(true).string(host).string(path);
        }
        w.bool(false);
        break;
      case MOUNTPROC3_UMNT: {
        const path = args.string(MNTPATHLEN);
        this.#mounts.delete(`${ctx.peerHost}\0${path}`);
        break;
      }
      case MOUNTPROC3_UMNTALL:
        for (const m of [...this.#mounts]) {
          if (m.startsWith(`${ctx.peerHost}\0`)) this.#mounts.delete(m);
        }
        break;
      case MOUNTPROC3_EXPORT:
        // Each export with the client networks it serves (groups are what exports(5) lists).
        for (const e of this.#exports.list()) {
          w.bool(true).string(e.path);
          for (const c of e.clients) w.bool(true).string(c);
          w.bool(false);
        }
        w.bool(false);
        break;
      default:
        throw new RpcAcceptError(PROC_UNAVAIL, `MOUNT procedure ${proc}`);
    }
    return w.finish();
  }
}
