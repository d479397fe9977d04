// Small secret key files (a node KEK, a store's sealing key): read only when private to the
// owner, written atomically and durably. Callers turn failures into their own error type.

import { assert } from "../base/mod.ts";

/** The file's bytes; null when it does not exist. Throws `makeError(message)` otherwise. */
export async function readKeyFile(
  path: string,
  lengthBytes: number,
  makeError: (message: string) => Error,
): Promise<Uint8Array | null> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw makeError(`cannot stat ${path}: ${(e as Error).message}`);
  }
  if (stat.mode !== null && (stat.mode & 0o077) !== 0) {
    throw makeError(
      `${path} is accessible to group or others (mode ${(stat.mode & 0o777).toString(8)}); ` +
        `run chmod 600 on it`,
    );
  }
  const raw = await Deno.readFile(path);
  if (raw.length !== lengthBytes) {
    throw makeError(`${path} holds ${raw.length} bytes, the key is ${lengthBytes}`);
  }
  return raw;
}

/** Writes a key durably and atomically: temp file 0600, fsync, rename, fsync directory. */
export async function writeKeyFile(
  dir: string,
  path: string,
  raw: Uint8Array,
  makeError: (message: string) => Error,
): Promise<void> {
  const temp = `${path}.tmp`;
  try {
    await Deno.remove(temp).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
    const file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
    try {
      const written = await file.write(raw);
      assert(written === raw.length, "short key file write");
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(temp, path);
    const directory = await Deno.open(dir, { read: true });
    try {
      await directory.sync();
    } finally {
      directory.close();
    }
  } catch (e) {
    throw makeError(`cannot write ${path}: ${(e as Error).message}`);
  }
}
