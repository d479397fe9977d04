// Opens a built shim (ffi/build/libkiseki_<name>.so) for a port that has a pure twin.
// Never throws: every way loading can fail becomes a reason the caller logs once before
// choosing the twin.

import type { FfiMode } from "../mod/base/config.ts";

export interface ShimOptions {
  /** Directory holding libkiseki_<name>.so. */
  ffiDir: string;
  /** `off` refuses every shim (operators force the twins with KISEKI_FFI=off). */
  ffiMode: FfiMode;
}

export type ShimLoad<S extends Deno.ForeignLibraryInterface> =
  | { ok: true; lib: Deno.DynamicLibrary<S>; path: string }
  | { ok: false; reason: string; path: string };

/** Where shims live in a source checkout. */
export const SOURCE_FFI_DIR: string = new URL("./build", import.meta.url).pathname;

export function defaultShimOptions(): ShimOptions {
  return { ffiDir: SOURCE_FFI_DIR, ffiMode: "auto" };
}

export function shimPath(ffiDir: string, name: string): string {
  return `${ffiDir.replace(/\/+$/, "")}/libkiseki_${name}.so`;
}

export function openShim<S extends Deno.ForeignLibraryInterface>(
  name: string,
  symbols: S,
  options: ShimOptions,
): ShimLoad<S> {
  const path = shimPath(options.ffiDir, name);
  if (options.ffiMode === "off") return { ok: false, reason: "KISEKI_FFI=off", path };
  try {
    Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return { ok: false, reason: `shim not built (${path} missing)`, path };
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return { ok: false, reason: `no permission to read ${path}`, path };
    }
    return { ok: false, reason: `cannot stat ${path}: ${(e as Error).message}`, path };
  }
  try {
    return { ok: true, lib: Deno.dlopen(path, symbols), path };
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      return { ok: false, reason: `no --allow-ffi permission for ${path}`, path };
    }
    return { ok: false, reason: `dlopen failed: ${(e as Error).message}`, path };
  }
}
