import { configureLogging, type LogSink } from "../obs/mod.ts";
import { selectErasureCodec } from "./select.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";

function fail(message: string): never {
  throw new Error(message);
}

function captureLogs(fn: () => void): string[] {
  const lines: string[] = [];
  const sink: LogSink = { write: (line) => lines.push(line) };
  const encoder = new TextEncoder();
  configureLogging({ sink, format: "json" });
  try {
    fn();
  } finally {
    configureLogging({
      sink: { write: (line) => Deno.stderr.writeSync(encoder.encode(line + "\n")) },
      format: "text",
    });
  }
  return lines;
}

Deno.test("selectErasureCodec() falls back to the twin when the shim is missing, logging once", () => {
  const dir = "/nonexistent/kiseki-ec-select-test";
  const lines = captureLogs(() => {
    const a = selectErasureCodec({ ffiDir: dir, ffiMode: "auto" });
    const b = selectErasureCodec({ ffiDir: dir, ffiMode: "auto" });
    if (a !== b) fail("same options must return the same factory");
    if (a.implementation !== "typescript") fail(`implementation ${a.implementation}`);
    if (!a.reason.startsWith("shim not built")) fail(`reason ${a.reason}`);
  });
  if (lines.length !== 1) fail(`${lines.length} log lines, expected 1`);
  const entry = JSON.parse(lines[0]!);
  if (entry.level !== "info" || entry.impl !== "typescript" || !entry.reason.includes(dir)) {
    fail(`log line ${lines[0]}`);
  }
});

Deno.test("selectErasureCodec() honours KISEKI_FFI=off", () => {
  captureLogs(() => {
    const f = selectErasureCodec({ ffiDir: SOURCE_FFI_DIR, ffiMode: "off" });
    if (f.implementation !== "typescript" || f.reason !== "KISEKI_FFI=off") fail(f.reason);
  });
});

Deno.test("selectErasureCodec() picks isa-l when the shim is built", () => {
  let built = true;
  try {
    Deno.statSync(`${SOURCE_FFI_DIR}/libkiseki_ec.so`);
  } catch {
    built = false;
  }
  const lines = captureLogs(() => {
    const f = selectErasureCodec({ ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" });
    const expected = built ? "isa-l" : "typescript";
    if (f.implementation !== expected) fail(`${f.implementation}: ${f.reason}`);
    if (built && !f.reason.startsWith("shim loaded from")) fail(f.reason);
  });
  if (lines.length !== 1) fail(`${lines.length} log lines, expected 1`);
});
