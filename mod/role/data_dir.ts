// The node's data directory: the layout of DESIGN.md created on first start, and a
// node identity file that stops a data directory from being reused by another node id.

import type { Config } from "../base/mod.ts";

export const DATA_DIR_SUBDIRS = ["raft", "keys", "chunks", "small", "config"] as const;
export const DATA_DIR_FORMAT = 1;

export interface NodeIdentity {
  format: number;
  nodeId: number;
  createdAt: string;
  createdBy: string;
}

export class DataDirError extends Error {
  override name = "DataDirError";
}

/** Creates the layout if missing and checks the identity; returns it and whether it is new. */
export async function prepareDataDir(
  config: Pick<Config, "dataDir" | "nodeId">,
  version: string,
): Promise<{ identity: NodeIdentity; created: boolean }> {
  const root = config.dataDir;
  try {
    await Deno.mkdir(root, { recursive: true, mode: 0o750 });
    for (const sub of DATA_DIR_SUBDIRS) {
      await Deno.mkdir(`${root}/${sub}`, { recursive: true, mode: 0o750 });
    }
  } catch (e) {
    throw new DataDirError(
      `KISEKI_DATA_DIR=${root}: cannot create the data directory: ${(e as Error).message}`,
    );
  }
  const path = `${root}/config/node.json`;
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new DataDirError(`cannot read ${path}: ${(e as Error).message}`);
    }
  }
  if (text !== null) {
    let identity: NodeIdentity;
    try {
      identity = JSON.parse(text) as NodeIdentity;
    } catch {
      throw new DataDirError(
        `${path} is not valid JSON; refusing to start on a damaged data directory`,
      );
    }
    if (identity.format !== DATA_DIR_FORMAT) {
      throw new DataDirError(
        `${path}: data directory format ${identity.format} is not ${DATA_DIR_FORMAT}`,
      );
    }
    if (identity.nodeId !== config.nodeId) {
      throw new DataDirError(
        `KISEKI_NODE_ID=${config.nodeId} but ${root} belongs to node ${identity.nodeId}; ` +
          `use that node id or another KISEKI_DATA_DIR`,
      );
    }
    return { identity, created: false };
  }
  const identity: NodeIdentity = {
    format: DATA_DIR_FORMAT,
    nodeId: config.nodeId,
    createdAt: new Date().toISOString(),
    createdBy: `kiseki ${version}`,
  };
  // Write then rename so a crash never leaves a half-written identity.
  const tmp = `${path}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(identity, null, 2) + "\n", { mode: 0o640 });
  const f = await Deno.open(tmp, { read: true });
  try {
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
  return { identity, created: true };
}
