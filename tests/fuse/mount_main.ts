// A FUSE mount over an object engine in this process (real devices in a data directory), for
// the e2e tests: `deno run -A tests/fuse/mount_main.ts --mountpoint DIR --data DIR`. Prints
// "mounted" when the mount serves, exits 0 once unmounted (SIGTERM/SIGINT unmount).

import { parseArgs } from "node:util";
import { toHex } from "../../mod/base/mod.ts";
import { startEngineStack } from "../../mod/role/engine_stack.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { mountKiseki } from "../../mod/fuse/mod.ts";
import { startNfsGateway } from "../../mod/nfs/mod.ts";
import { listenS3, LocalCredentialStore, S3Gateway } from "../../mod/s3/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mountpoint: { type: "string" },
    data: { type: "string" },
    "log-level": { type: "string", default: "warn" },
    fusermount: { type: "boolean", default: false },
    // Also serve S3 and NFS on loopback over the same engine, as a server node does.
    gateways: { type: "boolean", default: false },
    // Raft log entries per shard between snapshots (default: the engine's).
    "snapshot-entries": { type: "string" },
  },
});
if (values.mountpoint === undefined || values.data === undefined) {
  console.error("usage: mount_main.ts --mountpoint DIR --data DIR");
  Deno.exit(2);
}
const logger = createLogger({
  level: values["log-level"] as "warn",
  format: "text",
  sink: { write: (line: string) => console.error(line) },
});
export const TENANT: Uint8Array = new Uint8Array(16).fill(0x42);
const stack = await startEngineStack({
  dataDir: values.data,
  logger: logger.child({ part: "engine" }),
  pool: { deviceSizeBytes: 512 << 20, segmentSizeBytes: 4 << 20 },
  compaction: values["snapshot-entries"] === undefined
    ? undefined
    : { snapshotEntries: Number(values["snapshot-entries"]) },
});
const mount = await mountKiseki({
  mountpoint: values.mountpoint,
  backend: stack.engine,
  tenantId: TENANT,
  logger,
  useFusermount: values.fusermount,
});
let closeGateways = () => Promise.resolve();
if (values.gateways) {
  const credentials = await LocalCredentialStore.open({
    dir: `${values.data}/s3`,
    aead: stack.aead,
    logger,
  });
  const key = await credentials.create(toHex(TENANT));
  const s3 = new S3Gateway({ backend: stack.engine, credentials, logger });
  const s3Server = listenS3({
    hostname: "127.0.0.1",
    port: 0,
    handler: (request) => s3.handle(request),
    logger,
  });
  const nfs = startNfsGateway({
    backend: stack.engine,
    tenantId: TENANT,
    addr: { host: "127.0.0.1", port: 0 },
    logger,
  });
  console.log(`gateways ${
    JSON.stringify({
      s3: s3Server.addr.port,
      nfs: nfs.addr.port,
      accessKeyId: key.accessKeyId,
      secretAccessKey: key.secretAccessKey,
    })
  }`);
  closeGateways = async () => {
    await s3Server.shutdown();
    await nfs.close();
    await credentials.close();
  };
}
console.log("mounted");
await mount.closed;
await closeGateways();
await stack.close();
console.error(`served: ${JSON.stringify(Object.fromEntries(mount.counts))}`);
Deno.exit(0);
