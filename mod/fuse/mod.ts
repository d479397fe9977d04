// FUSE: the kernel protocol over /dev/fuse, spoken from Deno without libfuse. The mount
// (dev.ts), the protocol server (server.ts, opcodes.ts over the ABI in abi.ts) and the file
// system (fs_api.ts; KisekiFs over the shared bucket namespace) are apart from each other.
export { mountKiseki } from "./mount.ts";
export type { KisekiMount, MountKisekiOptions } from "./mount.ts";
export { FuseServer } from "./server.ts";
export type { FuseConnection, FuseServerOptions } from "./server.ts";
export { FuseError } from "./fs_api.ts";
export type { RawFileSystem } from "./fs_api.ts";
export { KisekiFs } from "./kiseki_fs.ts";
export { FuseDevice, mountFuse, unmountFuse } from "./dev.ts";
