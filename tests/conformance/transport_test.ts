// Runs the client-transport conformance suite against every implementation: the TypeScript
// TCP twin, the same with mutual TLS (certificates from scripts/gen_certs.sh), and libfabric
// through ffi/fabric with its tcp provider (the libfabric loopback test). A missing shim or
// openssl is reported as ignored with the reason (a failure under CI=true).

import { loadFabricShim } from "../../ffi/fabric/bindings.ts";
import { defaultShimOptions, type ShimOptions } from "../../ffi/loader.ts";
import { missingPart } from "../../mod/base/mod.ts";
import { genCerts, OPENSSL, tlsMaterial } from "../../mod/transport/_testing.ts";
import { FabricMessageTransport, TcpMessageTransport } from "../../mod/transport/mod.ts";
import {
  FRAME_MAX,
  HOST,
  messageTransportConformance,
  type TransportSubject,
} from "./transport_conformance.ts";

const shim: ShimOptions = {
  ffiDir: Deno.env.get("KISEKI_FFI_DIR") ?? defaultShimOptions().ffiDir,
  ffiMode: Deno.env.get("KISEKI_FFI") === "off" ? "off" : "auto",
};

const fabricLoad = loadFabricShim(shim);
const fabricMissing = fabricLoad.ok
  ? fabricLoad.shim.providerUnusable("tcp")
  : `libfabric shim: ${fabricLoad.reason}`;

const subjects: TransportSubject[] = [
  {
    name: "tcp",
    ignore: false,
    make: () =>
      Promise.resolve({
        server: new TcpMessageTransport({ frameBytesMax: FRAME_MAX }),
        client: new TcpMessageTransport({ frameBytesMax: FRAME_MAX }),
        bigClient: new TcpMessageTransport({ frameBytesMax: 4 * FRAME_MAX }),
        cleanup: async () => {},
      }),
  },
  {
    name: "tls",
    ignore: missingPart("openssl", OPENSSL ? null : "the openssl command is not installed"),
    make: async () => {
      const dir = await Deno.makeTempDir({ prefix: "kiseki-ofi-tls-" });
      await genCerts(dir, ["--node", `node1:${HOST}`, "--tenant", "acme"]);
      const server = await tlsMaterial(dir, "node1");
      const client = await tlsMaterial(dir, "tenant-acme", "client");
      return {
        server: new TcpMessageTransport({ tls: server, frameBytesMax: FRAME_MAX }),
        client: new TcpMessageTransport({ tls: client, frameBytesMax: FRAME_MAX }),
        bigClient: new TcpMessageTransport({ tls: client, frameBytesMax: 4 * FRAME_MAX }),
        cleanup: () => Deno.remove(dir, { recursive: true }),
      };
    },
  },
  {
    name: "libfabric-tcp",
    ignore: missingPart("libfabric shim (tcp provider)", fabricMissing),
    make: () => {
      if (!fabricLoad.ok) throw new Error(fabricLoad.reason);
      const shim = fabricLoad.shim;
      return Promise.resolve({
        server: new FabricMessageTransport({ shim, provider: "tcp", frameBytesMax: FRAME_MAX }),
        client: new FabricMessageTransport({ shim, provider: "tcp", frameBytesMax: FRAME_MAX }),
        bigClient: new FabricMessageTransport({
          shim,
          provider: "tcp",
          frameBytesMax: 4 * FRAME_MAX,
        }),
        cleanup: async () => {},
      });
    },
  },
];

for (const subject of subjects) messageTransportConformance(subject);
