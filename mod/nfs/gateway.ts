// The NFS gateway of a node: NFS v3 and v4.1/4.2, MOUNT v3 and the portmapper on one TCP port
// (KISEKI_NFS_ADDR), optionally the portmapper alone on another (KISEKI_PORTMAP_ADDR, 111),
// over a tenant's buckets.

import type { HostPort } from "../base/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { NfsObjectBackend } from "./bucket_fs.ts";
import { type NfsExport, NfsExports } from "./exports.ts";
import { HandleTable } from "./file_handle.ts";
import { MOUNT_PROGRAM, MOUNT_V3, MountProgram } from "./mount.ts";
import { Nfs3Program, NFS_PROGRAM, NFS_V3 } from "./nfs3.ts";
import { Nfs4Program, NfsProgram } from "./nfs4.ts";
import { Nfs4Compound } from "./nfs4_compound.ts";
import { nfs4Ops } from "./nfs4_ops.ts";
import { type ClientRecordStore, Nfs4State } from "./nfs4_state.ts";
import { IPPROTO_TCP, PMAP_PROGRAM, PMAP_V2, type PortMapping, PortmapProgram } from "./portmap.ts";
import { listenRpc, RpcDispatcher, type RpcServer, type RpcServerStats } from "./rpc_server.ts";

export interface NfsGatewayOptions {
  backend: NfsObjectBackend;
  /** The tenant whose buckets are served under "/" while no export is configured. */
  tenantId: Uint8Array;
  /** The configured exports (the cluster state's), read at every call. */
  exports?: () => NfsExport[];
  addr: HostPort;
  portmapAddr?: HostPort | null;
  logger?: Logger;
  /** Who may use the built-in export, while none is configured (default: loopback). */
  clientAllowed?: (host: string) => boolean;
  /** Pool space for FSSTAT. */
  space?: () => { totalBytes: number; freeBytes: number };
  /** Unstable writes idle this long are committed (default WRITE_IDLE_MS). */
  writeIdleMs?: number;
  /** The largest hole a write may open past a file's end (default WRITE_HOLE_BYTES_MAX). */
  writeHoleBytesMax?: number;
  /** Where NFSv4 client records outlive a restart (none: no reclaims after one). */
  nfs4ClientRecords?: ClientRecordStore | null;
  /** NFSv4 lease and grace period (defaults: NFS4_LEASE_SECONDS, one lease). */
  nfs4LeaseMs?: number;
  nfs4GraceMs?: number;
}

export interface NfsGateway {
  addr: Deno.NetAddr;
  portmapAddr: Deno.NetAddr | null;
  /** The dispatcher behind the listeners (for in-process callers and fuzzing). */
  dispatcher: RpcDispatcher;
  stats(): RpcServerStats;
  close(): Promise<void>;
}

export function startNfsGateway(options: NfsGatewayOptions): NfsGateway {
  const handles = new HandleTable();
  const exports = new NfsExports({
    backend: options.backend,
    defaultTenant: options.tenantId,
    handles,
    exports: options.exports,
    defaultClientAllowed: options.clientAllowed,
    logger: options.logger,
    writeIdleMs: options.writeIdleMs,
    writeHoleBytesMax: options.writeHoleBytesMax,
  });
  // Both change on every start: a client resends unstable writes and restarts listings.
  const writeVerifier = crypto.getRandomValues(new Uint8Array(8));
  const cookieVerifier = crypto.getRandomValues(new Uint8Array(8));
  let nfsPort = 0;
  const mappings = (): PortMapping[] => [
    { prog: PMAP_PROGRAM, vers: PMAP_V2, prot: IPPROTO_TCP, port: nfsPort },
    { prog: MOUNT_PROGRAM, vers: MOUNT_V3, prot: IPPROTO_TCP, port: nfsPort },
    { prog: NFS_PROGRAM, vers: NFS_V3, prot: IPPROTO_TCP, port: nfsPort },
    { prog: NFS_PROGRAM, vers: 4, prot: IPPROTO_TCP, port: nfsPort },
  ];
  const portmap = new PortmapProgram(mappings);
  const nfs4State = new Nfs4State({
    now: Date.now,
    boot: new DataView(crypto.getRandomValues(new Uint8Array(4)).buffer).getUint32(0),
    leaseMs: options.nfs4LeaseMs,
    graceMs: options.nfs4GraceMs,
  });
  const records = options.nfs4ClientRecords ?? null;
  // Clients recorded before this start may reclaim during the grace period.
  const loaded = records === null ? Promise.resolve() : records.load().then(
    (r) => nfs4State.setReclaimable(r),
    (error) => options.logger?.warn("nfs4: client records not loaded", { error }),
  );
  const nfs4 = new Nfs4Compound({
    state: nfs4State,
    store: records,
    logger: options.logger,
    ready: loaded,
    // NFSv4 goes through the same exports as v3 and MOUNT, under its pseudo-file system.
    ops: nfs4Ops({
      exports,
      state: nfs4State,
      writeVerifier,
      cookieVerifier,
      space: options.space,
      logger: options.logger,
    }),
  });
  const dispatcher = new RpcDispatcher(
    [
      portmap,
      new MountProgram({ exports }),
      new NfsProgram(
        new Nfs3Program({
          exports,
          writeVerifier,
          cookieVerifier,
          space: options.space,
          logger: options.logger,
        }),
        new Nfs4Program(nfs4),
      ),
    ],
    undefined,
    options.logger,
  );
  const server = listenRpc({
    hostname: options.addr.host,
    port: options.addr.port,
    programs: [],
    dispatcher,
    logger: options.logger,
  });
  nfsPort = server.addr.port;
  let portmapServer: RpcServer | null = null;
  if (options.portmapAddr) {
    try {
      portmapServer = listenRpc({
        hostname: options.portmapAddr.host,
        port: options.portmapAddr.port,
        programs: [portmap],
        logger: options.logger,
      });
    } catch (e) {
      void server.close();
      throw e;
    }
  }
  return {
    addr: server.addr,
    portmapAddr: portmapServer?.addr ?? null,
    dispatcher,
    stats: () => server.stats(),
    async close() {
      await portmapServer?.close();
      await server.close();
      await exports.close();
    },
  };
}
