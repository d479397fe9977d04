// The portmapper (RFC 1833), program 100000 version 2: GETPORT and DUMP answer where this
// node's RPC programs listen, so clients find MOUNT and NFS without an rpcbind. Nothing may
// register (SET/UNSET answer false); rpcbind v3/v4 callers get PROG_MISMATCH and fall back.

import { PROC_UNAVAIL } from "./rpc.ts";
import { RpcAcceptError, type RpcProgram } from "./rpc_server.ts";
import { type XdrReader, XdrWriter } from "./xdr.ts";

export const PMAP_PROGRAM = 100000;
export const PMAP_V2 = 2;
export const PMAPPROC_NULL = 0;
export const PMAPPROC_SET = 1;
export const PMAPPROC_UNSET = 2;
export const PMAPPROC_GETPORT = 3;
export const PMAPPROC_DUMP = 4;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export interface PortMapping {
  prog: number;
  vers: number;
  prot: number;
  port: number;
}

export class PortmapProgram implements RpcProgram {
  readonly prog = PMAP_PROGRAM;
  readonly versLow = PMAP_V2;
  readonly versHigh = PMAP_V2;
  readonly #mappings: () => PortMapping[];

  /** `mappings` is asked on each call: the NFS port is known only once it listens. */
  constructor(mappings: () => PortMapping[]) {
    this.#mappings = mappings;
  }

  allowsAuthNone(): boolean {
    return true;
  }

  call(_vers: number, proc: number, args: XdrReader): Promise<Uint8Array> {
    const w = new XdrWriter(64);
    switch (proc) {
      case PMAPPROC_NULL:
        break;
      case PMAPPROC_SET:
      case PMAPPROC_UNSET:
        readMapping(args);
        w.bool(false);
        break;
      case PMAPPROC_GETPORT: {
        const want = readMapping(args);
        const found = this.#mappings().find((m) =>
          m.prog === want.prog && m.vers === want.vers && m.prot === want.prot
        );
        w.u32(found?.port ?? 0);
        break;
      }
      case PMAPPROC_DUMP:
        for (const m of this.#mappings()) {
          w.bool(true).u32(m.prog).u32(m.vers).u32(m.prot).u32(m.port);
        }
        w.bool(false);
        break;
      default:
        return Promise.reject(new RpcAcceptError(PROC_UNAVAIL, `portmap procedure ${proc}`));
    }
    return Promise.resolve(w.finish());
  }
}

function readMapping(r: XdrReader): PortMapping {
  return { prog: r.u32(), vers: r.u32(), prot: r.u32(), port: r.u32() };
}
