// Small secret key files (a node KEK, a store's sealing key): read only when private to the
// owner, written atomically and durably. Callers turn failures into their own error type.

import { assert } from "../base/mod.ts";
import { type Aead, AEAD_KEY_BYTES, type AeadKey, type RandomSource } from "../crypto/mod.ts";
import { fileExists, type KvEnv, type KvTable, openKvEnv } from "../disk/mod.ts";
import type { Logger } from "../obs/mod.ts";
import { PageKeyError, SealedPageKeys } from "./page_keys.ts";

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

export interface KeyedEnvOptions {
  /** Directory of the environment and its key file (created 0700). */
  dir: string;
  /** Name of the key file in `dir`. */
  keyFile: string;
  mapSizeBytes: number;
  /** Key, in table "meta", of the record sealed under the key that proves it is the right one. */
  checkKey: Uint8Array;
  aead: Aead;
  random: RandomSource;
  logger: Logger;
  makeError: (message: string) => Error;
  /** Logged when a new key is written, e.g. "node key-encryption key created". */
  createdMessage: string;
  /** What the environment seals under the key, for messages ("keys", "secrets"). */
  holds: string;
}

/**
 * Opens (creating) the lmdb environment in `dir` whose records are sealed under the key in
 * `dir/<keyFile>`, its pages encrypted under a page key sealed under the same key (see
 * SealedPageKeys). A missing key file is created on first start, and refused when the
 * environment already exists (only the lost key could open it). The caller verifies `kek`
 * against `check` (or seals one when it is undefined) and closes `env` if that or anything
 * after it fails. `pageKeys` opens further environments under the same key.
 */
export async function openKeyedEnv(options: KeyedEnvOptions): Promise<{
  env: KvEnv;
  meta: KvTable;
  check: Uint8Array | undefined;
  kek: AeadKey;
  keyPath: string;
  pageKeys: SealedPageKeys;
}> {
  const { dir, makeError } = options;
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw makeError(`cannot create ${dir}: ${(e as Error).message}`);
  }
  const keyPath = `${dir}/${options.keyFile}`;
  let raw = await readKeyFile(keyPath, AEAD_KEY_BYTES, makeError);
  if (raw === null) {
    if (await fileExists(`${dir}/data.mdb`)) {
      throw makeError(
        `${keyPath} is missing but ${dir} holds ${options.holds} sealed under it; restore ` +
          `the file from the node's backup (a new key cannot open them)`,
      );
    }
    raw = new Uint8Array(AEAD_KEY_BYTES);
    options.random(raw);
    await writeKeyFile(dir, keyPath, raw, makeError);
    options.logger.info(options.createdMessage, { path: keyPath });
  }
  const kek = await options.aead.importKey(raw);
  raw.fill(0);
  const pageKeys = new SealedPageKeys({ aead: options.aead, kek, random: options.random });
  let env: KvEnv;
  try {
    env = await openKvEnv({ path: dir, mapSizeBytes: options.mapSizeBytes, pageKeys });
  } catch (e) {
    throw makeError(
      e instanceof PageKeyError && /does not open/.test(e.message)
        ? `${keyPath} does not open the ${options.holds} in ${dir}: the file was replaced, ` +
          `or the store was copied from another node`
        : (e as Error).message,
    );
  }
  try {
    const meta = env.table("meta");
    const check = meta.getSync(options.checkKey);
    return { env, meta, check, kek, keyPath, pageKeys };
  } catch (e) {
    await env.close();
    throw e;
  }
}
