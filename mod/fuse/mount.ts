// mountKiseki(): a tenant's namespace mounted at a directory, served until unmounted.
// SIGTERM and SIGINT unmount (MNT_DETACH) and let the server drain; a process killed
// outright leaves a mount the kernel has aborted, which `umount -l` clears.

import { mountFuse, unmountFuse } from "./dev.ts";
import type { FileReaders } from "./file_reads.ts";
import { KisekiFs } from "./kiseki_fs.ts";
import { FuseServer } from "./server.ts";
import type { NfsObjectBackend } from "../nfs/mod.ts";
import type { Logger } from "../obs/mod.ts";
import type { Validity } from "./abi.ts";

export interface MountKisekiOptions {
  mountpoint: string;
  backend: NfsObjectBackend;
  tenantId: Uint8Array;
  logger?: Logger;
  /** Keeps an open file's chunk list for random reads (the cluster client). */
  readers?: FileReaders;
  /** Unmount on SIGTERM and SIGINT (default true). */
  handleSignals?: boolean;
  /** Let other users in (allow_other; default true as root). */
  allowOther?: boolean;
  /** Mount through fusermount3 even as root. */
  useFusermount?: boolean;
  /** See FuseServerOptions.writebackCache: only when nothing else writes these buckets. */
  writebackCache?: boolean;
  validity?: Validity;
  /** The name the mount table shows (default "kiseki"). */
  fsName?: string;
}

export interface KisekiMount {
  readonly mountpoint: string;
  /** Requests answered, by opcode name. */
  readonly counts: ReadonlyMap<string, number>;
  /** Unmounts (lazily) and waits for the server to finish. */
  unmount(): Promise<void>;
  /** Resolves when the connection has ended and pending writes are stored. */
  readonly closed: Promise<void>;
}

export async function mountKiseki(options: MountKisekiOptions): Promise<KisekiMount> {
  const log = options.logger?.child({ mountpoint: options.mountpoint });
  const viaFusermount = options.useFusermount === true || Deno.uid() !== 0;
  const dev = await mountFuse({
    mountpoint: options.mountpoint,
    fsName: options.fsName ?? "kiseki",
    allowOther: options.allowOther ?? Deno.uid() === 0,
    useFusermount: options.useFusermount,
  });
  const fs = new KisekiFs({
    backend: options.backend,
    tenantId: options.tenantId,
    logger: log,
    readers: options.readers,
  });
  const server = new FuseServer({
    connection: dev,
    fs,
    logger: log,
    writebackCache: options.writebackCache,
    validity: options.validity,
  });
  let unmounting: Promise<void> | null = null;
  const unmount = (): Promise<void> => {
    unmounting ??= (async () => {
      try {
        await unmountFuse(options.mountpoint, viaFusermount);
      } catch (e) {
        log?.warn("unmount failed", { error: e as Error });
        dev.close();
      }
      await closed;
    })();
    return unmounting;
  };
  const onSignal = () => {
    log?.info("signal received: unmounting");
    void unmount();
  };
  const signals: Deno.Signal[] = options.handleSignals === false ? [] : ["SIGTERM", "SIGINT"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const closed = server.serve().finally(() => {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    dev.close();
    log?.info("fuse mount closed");
  });
  log?.info("fuse mounted");
  return { mountpoint: options.mountpoint, counts: server.counts, unmount, closed };
}
