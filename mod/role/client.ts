// Entry of kiseki-client: the compute node's CLI for its cache. `stage` pulls a dataset into
// pinned L2 (KISEKI_CACHE_DIR) with a progress bar and resumes where an interrupted run
// stopped; `--status` reports staged datasets; `--release` unpins one. Staging fetches
// sealed chunks through the cluster client (KISEKI_DATA_ADDR, mTLS as the tenant, failover);
// tests pass their own `connect`.

import type { Config } from "../base/mod.ts";
import {
  createChunkCache,
  type DatasetSource,
  formatBytes,
  formatProgress,
  L2FullError,
  type Progress,
  StageError,
  Stager,
  type StageState,
} from "../client/cache/mod.ts";
import { ClusterDatasetSource, connectClusterClient, parseDatasetPath } from "../client/mod.ts";
import { CompositionError } from "../composition/mod.ts";
import { log } from "../obs/mod.ts";
import { readTlsMaterial } from "../transport/mod.ts";
import { EXIT_USAGE, loadRoleConfig } from "./_run.ts";
import { ROLE_TABLE } from "./table.ts";

const USAGE = `${ROLE_TABLE.client.binary}: ${ROLE_TABLE.client.summary}

usage:
  kiseki-client stage --dataset PATH             pin every chunk of PATH into the L2 cache,
                                                 with progress; run it again to resume
  kiseki-client stage --dataset PATH --status    the staging state of PATH
  kiseki-client stage --status                   every dataset staged on this node
  kiseki-client stage --dataset PATH --release   unpin PATH (its chunks stay until evicted)

The cache is KISEKI_CACHE_DIR (bounded by KISEKI_CACHE_L2_MAX); the cluster is reached through
KISEKI_DATA_ADDR.`;

/** Most often the progress line is redrawn on a terminal, and printed when not one. */
const PROGRESS_TTY_INTERVAL_MS = 200;
const PROGRESS_LOG_INTERVAL_MS = 5_000;

export interface ClientDeps {
  /** Configuration (default: the environment, as every role reads it). */
  config?: Config;
  /** Opens the cluster for staging (default: the cluster client on KISEKI_DATA_ADDR). */
  connect?: (config: Config) => Promise<DatasetSource & { close(): Promise<void> }>;
  /** Where lines go (default: stdout / stderr). */
  out?: (line: string) => void;
  err?: (text: string, final: boolean) => void;
  isTerminal?: boolean;
}

interface StageArgs {
  dataset: string | null;
  status: boolean;
  release: boolean;
}

function parseStageArgs(args: string[]): StageArgs | string {
  const parsed: StageArgs = { dataset: null, status: false, release: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--dataset") {
      const v = args[++i];
      if (v === undefined || v === "") return "--dataset needs a path";
      parsed.dataset = v;
    } else if (a.startsWith("--dataset=")) parsed.dataset = a.slice("--dataset=".length);
    else if (a === "--status") parsed.status = true;
    else if (a === "--release") parsed.release = true;
    else return `unknown argument '${a}'`;
  }
  if (parsed.status && parsed.release) return "--status and --release do not go together";
  if (!parsed.status && parsed.dataset === null) return "--dataset PATH is required";
  if (parsed.dataset !== null && !parsed.dataset.startsWith("/")) {
    return "--dataset takes a path from the namespace root, starting with /";
  }
  if (parsed.dataset !== null && !parsed.status && !parsed.release) {
    try {
      parseDatasetPath(parsed.dataset);
    } catch (e) {
      return (e as Error).message;
    }
  }
  return parsed;
}

function describe(s: StageState, label: string): string {
  const state = s.finished ? "staged" : "partial (run stage again to resume)";
  return `${label}  ${state}  ${s.filesDone}/${s.filesTotal} files  ` +
    `${formatBytes(s.bytesDone)}/${formatBytes(s.bytesTotal)}  ${s.chunksPinned} chunks pinned  ` +
    `updated ${new Date(s.updatedAtMs).toISOString()}`;
}

export async function main(args: string[], deps: ClientDeps = {}): Promise<number> {
  const out = deps.out ?? ((line: string) => console.log(line));
  const encoder = new TextEncoder();
  const err = deps.err ??
    ((text: string, final: boolean) => {
      Deno.stderr.writeSync(encoder.encode(final ? text + "\n" : text));
    });
  if (args.length === 0 || args.includes("--help") || args.includes("-h")) {
    (args.length === 0 ? (t: string) => err(t, true) : out)(USAGE);
    return args.length === 0 ? EXIT_USAGE : 0;
  }
  const [command, ...rest] = args;
  if (command !== "stage") {
    err(`kiseki-client: unknown command '${command}' (try --help)`, true);
    return EXIT_USAGE;
  }
  const parsed = parseStageArgs(rest);
  if (typeof parsed === "string") {
    err(`kiseki-client stage: ${parsed}`, true);
    return EXIT_USAGE;
  }
  const config = deps.config ?? loadRoleConfig("client");
  if (config === null) return EXIT_USAGE;
  if (config.cacheMode === "bypass" || config.cacheL2MaxBytes === 0) {
    err(
      "kiseki-client stage: staging pins chunks into the L2 cache, and this node keeps none " +
        "(KISEKI_CACHE_MODE=bypass or KISEKI_CACHE_L2_MAX=0)",
      true,
    );
    return EXIT_USAGE;
  }
  const client = await createChunkCache({
    mode: config.cacheMode,
    dir: config.cacheDir,
    l1MaxBytes: 0,
    l2MaxBytes: config.cacheL2MaxBytes,
    disconnectWipeMs: config.cacheDisconnectWipeMs,
  });
  try {
    const stager = new Stager({ cache: client.tiered!, dir: `${config.cacheDir}/staging` });
    if (parsed.status) {
      const states = await stager.status(parsed.dataset ?? undefined);
      if (states.length === 0) {
        out(parsed.dataset === null ? "no dataset staged" : `${parsed.dataset}: not staged`);
        return parsed.dataset === null ? 0 : 1;
      }
      // Dataset paths are not written down on the node, only their hashes.
      for (const s of states) out(describe(s, parsed.dataset ?? s.id.slice(0, 16)));
      return 0;
    }
    const dataset = parsed.dataset!;
    if (parsed.release) {
      const n = await stager.release(dataset);
      out(`${dataset}: released, ${n} chunks unpinned`);
      return 0;
    }
    let source: DatasetSource & { close(): Promise<void> };
    try {
      source = await (deps.connect ?? connectCluster)(config);
    } catch (e) {
      err(
        `kiseki-client stage: cannot reach the cluster at KISEKI_DATA_ADDR: ${
          (e as Error).message
        }`,
        true,
      );
      return 1;
    }
    client.disconnect?.connected();
    try {
      const tty = deps.isTerminal ?? Deno.stderr.isTerminal();
      let last = -Infinity;
      let lastLine = "";
      const state = await stager.stage(source, dataset, {
        onProgress: (p: Progress) => {
          const now = performance.now();
          lastLine = formatProgress(p);
          const every = tty ? PROGRESS_TTY_INTERVAL_MS : PROGRESS_LOG_INTERVAL_MS;
          if (now - last < every) return;
          last = now;
          err(tty ? `\r${lastLine}` : lastLine, !tty);
        },
      });
      if (lastLine !== "") err(tty ? `\r${lastLine}` : lastLine, true);
      out(describe(state, dataset));
      return state.finished ? 0 : 1;
    } catch (e) {
      // A cluster's refusal (no such bucket, an object gone) is said as the cluster said it.
      if (e instanceof L2FullError || e instanceof StageError || e instanceof CompositionError) {
        err(`\nkiseki-client stage: ${e.message}; what is staged so far is kept`, true);
        return 1;
      }
      throw e;
    } finally {
      await source.close();
    }
  } finally {
    await client.close();
  }
}

/** The cluster client as staging's source: sealed chunks, opened only when read. */
async function connectCluster(
  config: Config,
): Promise<DatasetSource & { close(): Promise<void> }> {
  const client = await connectClusterClient({
    addrs: config.dataAddrs,
    tls: config.tls ? await readTlsMaterial(config.tls) : null,
    logger: log.child({ role: "client" }),
  });
  const source = new ClusterDatasetSource(client);
  return {
    listFiles: (path) => source.listFiles(path),
    chunksOf: (file) => source.chunksOf(file),
    close: () => client.close(),
  };
}

if (import.meta.main) Deno.exit(await main(Deno.args));
