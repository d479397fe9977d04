// Symbol table and a thin typed wrapper over libkiseki_fabric.so (ffi/fabric/kiseki_fabric.c).
// Knows the C signatures and status codes; knows nothing of frames or the port, so
// mod/transport/ofi_fabric.ts owns framing, ordering and closing.

import { openShim, type ShimLoad, type ShimOptions } from "../loader.ts";

/** Must equal KF_ABI_VERSION in kiseki_fabric.c; a stale build is refused. */
export const FABRIC_SHIM_ABI_VERSION = 1;
/** Bytes kf_providers() may write (KF_PROVIDERS_BYTES_MAX). */
export const FABRIC_PROVIDERS_BYTES_MAX = 4096;

/** libfabric errno values the shim returns negated (rdma/fi_errno.h). */
export const FI_EAGAIN = 11;
export const FI_EINVAL = 22;
export const FI_EMSGSIZE = 90;
export const FI_ECONNRESET = 104;
export const FI_ETIMEDOUT = 110;
export const FI_ECONNREFUSED = 111;
export const FI_ECANCELED = 125;
export const FI_ENODATA = 61;

const CONNECT = {
  parameters: ["buffer", "buffer", "buffer", "i32", "buffer"],
  result: "i32",
  nonblocking: true,
} as const;

export const FABRIC_SYMBOLS = {
  kf_abi_version: { parameters: [], result: "i32" },
  kf_fi_version: { parameters: [], result: "u32" },
  kf_msg_bytes_max: { parameters: [], result: "u32" },
  kf_strerror: { parameters: ["i32"], result: "pointer" },
  kf_providers: { parameters: ["buffer", "u32"], result: "i32" },
  kf_provider_usable: { parameters: ["buffer"], result: "i32" },
  kf_verbs_devices: { parameters: ["buffer", "u32"], result: "i32" },
  kf_connect: CONNECT,
  kf_listen: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  kf_accept: { parameters: ["pointer", "i32", "buffer"], result: "i32", nonblocking: true },
  // The same C functions twice: called with timeout 0 on the event loop first (a free send
  // buffer, a message already there: no thread hop), then to wait, on a runtime worker.
  kf_send_now: {
    name: "kf_send",
    parameters: ["pointer", "buffer", "u64", "buffer", "u64", "i32"],
    result: "i32",
  },
  kf_send: {
    parameters: ["pointer", "buffer", "u64", "buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  kf_recv_now: { name: "kf_recv", parameters: ["pointer", "buffer", "u64", "i32"], result: "i64" },
  kf_recv: {
    parameters: ["pointer", "buffer", "u64", "i32"],
    result: "i64",
    nonblocking: true,
  },
  kf_flush_now: { name: "kf_flush", parameters: ["pointer", "i32"], result: "i32" },
  kf_flush: { parameters: ["pointer", "i32"], result: "i32", nonblocking: true },
  kf_conn_cancel: { parameters: ["pointer"], result: "void" },
  kf_conn_close: { parameters: ["pointer"], result: "void" },
  kf_listener_cancel: { parameters: ["pointer"], result: "void" },
  kf_listener_close: { parameters: ["pointer"], result: "void" },
} as const;

export type FabricSymbols = typeof FABRIC_SYMBOLS;
export type FabricLib = Deno.DynamicLibrary<FabricSymbols>;

export type FabricShimLoad =
  | { ok: true; shim: FabricShim; path: string }
  | { ok: false; reason: string; path: string };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A NUL-terminated C string. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** The loaded shim with its version checked. */
export class FabricShim {
  readonly lib: FabricLib;
  /** libfabric's own version, "major.minor". */
  readonly libfabricVersion: string;
  readonly msgBytesMax: number;

  constructor(lib: FabricLib) {
    this.lib = lib;
    const v = lib.symbols.kf_fi_version();
    this.libfabricVersion = `${v >>> 16}.${v & 0xffff}`;
    this.msgBytesMax = lib.symbols.kf_msg_bytes_max();
  }

  describe(status: number | bigint): string {
    const code = Number(status);
    const ptr = this.lib.symbols.kf_strerror(code);
    const text = ptr === null ? "" : new Deno.UnsafePointerView(ptr).getCString();
    return `${text || "error"} (${-code})`;
  }

  /** Names of the providers libfabric offers on this host (tcp, udp, shm, verbs, cxi...). */
  providers(): string[] {
    const out = new Uint8Array(FABRIC_PROVIDERS_BYTES_MAX);
    const n = this.lib.symbols.kf_providers(out, out.length);
    if (n <= 0) return [];
    return decoder.decode(out.subarray(0, n)).split(",").filter((p) => p !== "");
  }

  /** null when the provider offers message endpoints here, else why not. */
  providerUnusable(provider: string): string | null {
    const rc = this.lib.symbols.kf_provider_usable(cString(provider));
    if (rc === 0) return null;
    return rc === -FI_ENODATA
      ? `libfabric has no ${provider} message endpoint on this host`
      : `${provider}: ${this.describe(rc)}`;
  }

  /** RDMA devices libibverbs sees (-1: cannot tell) and the line that says so. */
  verbsDevices(): { devices: number; reason: string } {
    const why = new Uint8Array(512);
    const n = this.lib.symbols.kf_verbs_devices(why, why.length);
    const end = why.indexOf(0);
    return { devices: n, reason: decoder.decode(why.subarray(0, end < 0 ? why.length : end)) };
  }

  close(): void {
    this.lib.close();
  }
}

export function loadFabricShim(options: ShimOptions): FabricShimLoad {
  const loaded: ShimLoad<FabricSymbols> = openShim("fabric", FABRIC_SYMBOLS, options);
  if (!loaded.ok) return loaded;
  const abi = loaded.lib.symbols.kf_abi_version();
  if (abi !== FABRIC_SHIM_ABI_VERSION) {
    loaded.lib.close();
    return {
      ok: false,
      reason: `stale shim ${loaded.path}: ABI ${abi}, expected ${FABRIC_SHIM_ABI_VERSION}`,
      path: loaded.path,
    };
  }
  return { ok: true, shim: new FabricShim(loaded.lib), path: loaded.path };
}
