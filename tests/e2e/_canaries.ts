// Canaries for at-rest tests: random 16-byte markers written into a node as names, metadata
// and bodies, and a scan of every byte of every file under a directory for each of them in
// clear, UTF-16 (both byte orders) and hex. tests/e2e/at_rest_test.ts shows the scan finds
// them in an unsealed copy, so a scan that finds nothing means something.

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";

const encoder = new TextEncoder();

/** A random 16-byte marker, written as 32 lowercase hex digits (valid in bucket names). */
export function canary(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex");
}

/**
 * The byte strings a leak of `text` would show: clear, UTF-16 (both orders), hex (of the
 * text's bytes: digits only, so upper and lower case agree).
 */
export function needlesOf(text: string): { form: string; bytes: Buffer }[] {
  const clear = Buffer.from(text, "utf8");
  return [
    { form: "clear", bytes: clear },
    { form: "utf-16le", bytes: Buffer.from(text, "utf16le") },
    { form: "utf-16be", bytes: Buffer.from(text, "utf16le").swap16() },
    { form: "hex", bytes: Buffer.from(clear.toString("hex"), "utf8") },
  ];
}

export interface Finding {
  canary: string;
  role: string;
  form: string;
  file: string;
  offset: number;
}

/** Every regular file under `dir`, recursively. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await filesUnder(path));
    else if (entry.isFile) out.push(path);
  }
  return out;
}

const SCAN_WINDOW_BYTES = 16 << 20;
const CANARY_CHARS = 32;
/** 1 for the bytes of a hex digit (either case). */
const HEX_DIGIT = new Uint8Array(256);
for (const c of "0123456789abcdefABCDEF") HEX_DIGIT[c.charCodeAt(0)] = 1;
/** Windows looked up per run of hex digits (a leaked body is one long run). */
const WINDOWS_PER_RUN_MAX = 1 << 16;

/**
 * Finds every canary form in `bytes`. Every form of a canary is a run of hex digits, one
 * byte each (clear, hex, HEX) or one byte each with a zero byte beside it (UTF-16 in either
 * order), so the scan walks the bytes once per layout, collects such runs of at least a
 * canary's length, and looks each window of a run up by its text (lowercased).
 */
function findIn(
  bytes: Uint8Array,
  lookup: Map<string, { canary: string; form: string }>,
  onHit: (canary: string, form: string, offset: number) => void,
): void {
  // stride 1: clear/hex; stride 2 at offsets 0 and 1 with the zero byte after or before.
  const layouts = [
    { stride: 1, start: 0, zero: 0 },
    { stride: 2, start: 0, zero: 1 },
    { stride: 2, start: 1, zero: 1 },
    { stride: 2, start: 1, zero: -1 },
    { stride: 2, start: 2, zero: -1 },
  ];
  for (const { stride, start, zero } of layouts) {
    let runStart = -1;
    const end = bytes.length;
    for (let i = start; i <= end; i += stride) {
      const inRun = i < end && HEX_DIGIT[bytes[i]!] === 1 &&
        (zero === 0 || (i + zero >= 0 && i + zero < end && bytes[i + zero] === 0));
      if (inRun) {
        if (runStart < 0) runStart = i;
        continue;
      }
      if (runStart >= 0) {
        const chars = (i - runStart) / stride;
        if (chars >= CANARY_CHARS) visitRun(bytes, runStart, chars, stride, lookup, onHit, zero);
        runStart = -1;
      }
    }
  }
}

function visitRun(
  bytes: Uint8Array,
  at: number,
  chars: number,
  stride: number,
  lookup: Map<string, { canary: string; form: string }>,
  onHit: (canary: string, form: string, offset: number) => void,
  zero: number,
): void {
  let text = "";
  for (let k = 0; k < chars; k++) text += String.fromCharCode(bytes[at + k * stride]!);
  const lower = text.toLowerCase();
  const windows = Math.min(WINDOWS_PER_RUN_MAX, chars - CANARY_CHARS + 1);
  for (let w = 0; w < windows; w++) {
    for (const length of [CANARY_CHARS, 2 * CANARY_CHARS]) {
      if (w + length > chars) continue;
      const hit = lookup.get(lower.slice(w, w + length));
      if (hit === undefined) continue;
      const form = stride === 2 ? (zero === 1 ? "utf-16le" : "utf-16be") : hit.form;
      onHit(hit.canary, form, at + w * stride);
    }
  }
}

/**
 * Scans every byte of every file under each root for every canary form. Files are read in
 * windows that overlap by more than the longest form, so a match across an edge is found.
 */
export async function scan(roots: string[], canaries: Map<string, string>): Promise<Finding[]> {
  const lookup = new Map<string, { canary: string; form: string }>();
  for (const text of canaries.keys()) {
    assert.match(text, /^[0-9a-f]{32}$/, "canaries are 32 hex digits");
    lookup.set(text, { canary: text, form: "clear" });
    lookup.set(Buffer.from(text).toString("hex"), { canary: text, form: "hex" });
  }
  const overlap = 4 * 2 * CANARY_CHARS + 8;
  const findings: Finding[] = [];
  const seen = new Set<string>();
  let filesScanned = 0;
  for (const root of roots) {
    for (const file of await filesUnder(root)) {
      filesScanned++;
      const handle = await Deno.open(file, { read: true });
      try {
        const window = new Uint8Array(SCAN_WINDOW_BYTES + overlap);
        let carried = 0;
        let base = 0;
        for (;;) {
          let filled = carried;
          while (filled < window.length) {
            const n = await handle.read(window.subarray(filled));
            if (n === null) break;
            filled += n;
          }
          findIn(window.subarray(0, filled), lookup, (canary, form, offset) => {
            const id = `${canary}/${form}/${file}`;
            if (seen.has(id)) return;
            seen.add(id);
            findings.push({
              canary,
              role: canaries.get(canary)!,
              form,
              file,
              offset: base + offset,
            });
          });
          if (filled < window.length) break;
          // Keep the tail: a form may straddle the edge.
          window.copyWithin(0, filled - overlap, filled);
          base += filled - overlap;
          carried = overlap;
        }
      } finally {
        handle.close();
      }
    }
  }
  assert.ok(filesScanned > 0, `scanned no file under ${roots.join(", ")}`);
  return findings;
}

export function report(findings: Finding[]): string {
  return findings.slice(0, 20).map((f) => `${f.role} (${f.form}) in ${f.file} at ${f.offset}`).join(
    "\n",
  );
}

/** A body of `bytes` made of the canary text repeated (its 16 raw bytes lead). */
export function bodyOf(text: string, bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const unit = encoder.encode(text);
  for (let at = 0; at < bytes; at += unit.length) out.set(unit.subarray(0, bytes - at), at);
  return out;
}
