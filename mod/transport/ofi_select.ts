// Picks the client transport for this process, in the order CXI > verbs > TCP: libfabric's
// cxi provider where it offers message endpoints; libfabric's verbs provider where libibverbs
// sees an RDMA device; else TCP: mutual TLS when there is TLS material (libfabric's tcp
// provider carries no TLS), else libfabric's tcp provider through the shim, else the pure
// TypeScript twin. Says which one and why, once, and exports it as a metric.

import { type FabricShim, loadFabricShim } from "../../ffi/fabric/bindings.ts";
import type { ShimOptions } from "../../ffi/loader.ts";
import { gauge, log, type Logger } from "../obs/mod.ts";
import { FabricMessageTransport } from "./ofi_fabric.ts";
import type { MessageTransport } from "./ofi_port.ts";
import { TcpMessageTransport } from "./ofi_tcp.ts";
import type { TlsMaterial } from "./raft_transport.ts";

/** What was found on this host, each with the line that says so. */
export interface TransportDetection {
  libfabric: { loaded: boolean; reason: string; version: string | null; providers: string[] };
  cxi: { usable: boolean; reason: string };
  verbs: { devices: number; usable: boolean; reason: string };
}

export interface TransportChoice {
  transport: MessageTransport;
  reason: string;
  detection: TransportDetection;
  /** The loaded shim, when one is (close it with the process, or in tests). */
  shim: FabricShim | null;
}

export interface SelectTransportOptions {
  shim: ShimOptions;
  /** Mutual TLS material; with it, TCP means TLS. */
  tls: TlsMaterial | null;
  frameBytesMax?: number;
}

/** Looks at the host without choosing: libfabric's providers, CXI, RDMA devices. */
export function detectTransports(
  shimOptions: ShimOptions,
): { detection: TransportDetection; shim: FabricShim | null } {
  const loaded = loadFabricShim(shimOptions);
  if (!loaded.ok) {
    const why = `libfabric shim not loaded: ${loaded.reason}`;
    return {
      shim: null,
      detection: {
        libfabric: { loaded: false, reason: loaded.reason, version: null, providers: [] },
        cxi: { usable: false, reason: why },
        verbs: { devices: -1, usable: false, reason: why },
      },
    };
  }
  const shim = loaded.shim;
  const providers = shim.providers();
  const cxiUnusable = shim.providerUnusable("cxi");
  const verbs = shim.verbsDevices();
  let verbsUsable = false;
  let verbsReason = verbs.reason;
  if (verbs.devices > 0) {
    const unusable = shim.providerUnusable("verbs");
    verbsUsable = unusable === null;
    if (unusable !== null) verbsReason += `; ${unusable}`;
  }
  return {
    shim,
    detection: {
      libfabric: {
        loaded: true,
        reason: `shim loaded from ${loaded.path}`,
        version: shim.libfabricVersion,
        providers,
      },
      cxi: {
        usable: cxiUnusable === null,
        reason: cxiUnusable === null
          ? "libfabric cxi provider offers message endpoints"
          : providers.some((p) => p.split(";")[0] === "cxi")
          ? `cxi provider listed, but ${cxiUnusable}`
          : "no cxi provider in libfabric here",
      },
      verbs: { devices: verbs.devices, usable: verbsUsable, reason: verbsReason },
    },
  };
}

/** Chooses without logging or remembering (tests, tools). */
export function chooseMessageTransport(options: SelectTransportOptions): TransportChoice {
  const { detection, shim } = detectTransports(options.shim);
  const frameBytesMax = options.frameBytesMax;
  const fabric = (provider: string) =>
    new FabricMessageTransport({ shim: shim!, provider, frameBytesMax });
  if (detection.cxi.usable) {
    return { transport: fabric("cxi"), reason: detection.cxi.reason, detection, shim };
  }
  if (detection.verbs.usable) {
    return { transport: fabric("verbs"), reason: detection.verbs.reason, detection, shim };
  }
  const passed = `cxi: ${detection.cxi.reason}; verbs: ${detection.verbs.reason}`;
  if (options.tls !== null) {
    return {
      transport: new TcpMessageTransport({ tls: options.tls, frameBytesMax }),
      reason: `${passed}; TLS material given (libfabric's tcp provider has no TLS)`,
      detection,
      shim,
    };
  }
  if (shim !== null && shim.providerUnusable("tcp") === null) {
    return {
      transport: fabric("tcp"),
      reason: `${passed}; libfabric ${shim.libfabricVersion} tcp provider`,
      detection,
      shim,
    };
  }
  return {
    transport: new TcpMessageTransport({ frameBytesMax }),
    reason: `${passed}; ${
      shim === null ? detection.libfabric.reason : "libfabric has no tcp message endpoint"
    }: the TypeScript TCP twin`,
    detection,
    shim,
  };
}

const transportGauge = gauge<"transport">({
  name: "kiseki_client_transport",
  help:
    "1 for the client transport in use (libfabric-cxi, libfabric-verbs, libfabric-tcp, tls, tcp)",
  labelNames: ["transport"],
});
const rdmaDevicesGauge = gauge({
  name: "kiseki_client_rdma_devices",
  help: "RDMA devices libibverbs sees on this host (-1: cannot tell)",
});

/** Distinct option sets remembered; a process normally has exactly one. */
const SELECTIONS_CACHED_MAX = 8;
const chosen = new Map<string, TransportChoice>();

/**
 * The process's transport for these options: the same choice on every call, one info line
 * (`client transport transport=... reason=...`) and the metrics the first time.
 */
export function selectMessageTransport(
  options: SelectTransportOptions,
  logger: Logger = log,
): TransportChoice {
  const id = [
    options.shim.ffiMode,
    options.shim.ffiDir,
    options.tls === null ? "plain" : "tls",
    options.frameBytesMax ?? "",
  ].join("\u0000");
  const existing = chosen.get(id);
  if (existing !== undefined) return existing;
  const choice = chooseMessageTransport(options);
  if (chosen.size >= SELECTIONS_CACHED_MAX) chosen.delete(chosen.keys().next().value!);
  chosen.set(id, choice);
  const d = choice.detection;
  logger.info("client transport", {
    transport: choice.transport.name,
    reason: choice.reason,
    libfabric: d.libfabric.version ?? "none",
    providers: d.libfabric.providers.join(","),
    rdmaDevices: d.verbs.devices,
  });
  transportGauge.set({ transport: choice.transport.name }, 1);
  rdmaDevicesGauge.set({}, d.verbs.devices);
  return choice;
}
