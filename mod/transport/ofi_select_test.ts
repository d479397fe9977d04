import assert from "node:assert/strict";
import { loadFabricShim } from "../../ffi/fabric/bindings.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";
import { missingPart } from "../base/mod.ts";
import { configureLogging, type LogSink, renderMetrics } from "../obs/mod.ts";
import { chooseMessageTransport, selectMessageTransport } from "./ofi_select.ts";

const shimBuilt = loadFabricShim({ ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" });

function captureLogs<T>(fn: () => T): { lines: string[]; value: T } {
  const lines: string[] = [];
  const sink: LogSink = { write: (line) => lines.push(line) };
  const encoder = new TextEncoder();
  configureLogging({ sink, format: "json" });
  try {
    return { lines, value: fn() };
  } finally {
    configureLogging({
      sink: { write: (line) => Deno.stderr.writeSync(encoder.encode(line + "\n")) },
      format: "text",
    });
  }
}

Deno.test("chooseMessageTransport() falls back to the TCP twin without the shim, saying why", () => {
  const off = chooseMessageTransport({
    shim: { ffiDir: SOURCE_FFI_DIR, ffiMode: "off" },
    tls: null,
  });
  assert.equal(off.transport.name, "tcp");
  assert.match(off.reason, /KISEKI_FFI=off/);
  const missing = chooseMessageTransport({
    shim: { ffiDir: "/nonexistent/kiseki-fabric", ffiMode: "auto" },
    tls: null,
  });
  assert.equal(missing.transport.name, "tcp");
  assert.match(missing.reason, /shim not built/);
  assert.equal(missing.detection.verbs.usable, false);
});

Deno.test("chooseMessageTransport() takes TLS over libfabric's tcp provider when given material", () => {
  const c = chooseMessageTransport({
    shim: { ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" },
    tls: { ca: "x", cert: "y", key: "z" },
  });
  assert.equal(c.transport.name, "tls");
  assert.match(c.reason, /no TLS/);
});

Deno.test({
  name:
    "selectMessageTransport() finds no RDMA device here, no CXI, picks libfabric tcp, logs once",
  ignore: missingPart("libfabric shim", shimBuilt.ok ? null : shimBuilt.reason),
  fn: async () => {
    const options = { shim: { ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" as const }, tls: null };
    const { lines, value } = captureLogs(() => {
      const a = selectMessageTransport(options);
      const b = selectMessageTransport(options);
      assert.equal(a, b, "one choice per process");
      return a;
    });
    assert.equal(lines.length, 1);
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.msg ?? entry.message, "client transport");
    assert.equal(entry.transport, "libfabric-tcp");
    // These machines have libibverbs and no RDMA device: detected, said, never a crash.
    assert.equal(value.detection.verbs.devices, 0);
    assert.match(value.detection.verbs.reason, /no RDMA devices|0 RDMA devices/);
    assert.equal(value.detection.cxi.usable, false);
    assert.ok(value.detection.libfabric.providers.includes("tcp"));
    assert.match(value.reason, /cxi: .*; verbs: .*libibverbs/);
    const metrics = await renderMetrics();
    assert.match(metrics, /kiseki_client_transport\{transport="libfabric-tcp"\} 1/);
    assert.match(metrics, /kiseki_client_rdma_devices 0/);
  },
});
