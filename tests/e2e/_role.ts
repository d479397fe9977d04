// Starts roles the way they ship: `deno run` with exactly the role table's permission flags
// (the flags `deno compile` bakes in), on loopback addresses the test chooses.

import {
  ROLE_TABLE,
  roleConfig,
  roleFlags,
  type RoleName,
  SOURCE_NODE_MODULES_DIR,
  SOURCE_PROTO_DIR,
} from "../../mod/role/mod.ts";
import { SOURCE_FFI_DIR } from "../../ffi/loader.ts";

export const ROOT: string = new URL("../../", import.meta.url).pathname;

export interface RunningRole {
  child: Deno.ChildProcess;
  /** The role's process id (with a `prefix` that execs, such as `ip netns exec`, the same). */
  pid: number;
  flags: string[];
  /** Everything the role wrote to stderr so far (logs). */
  stderr(): string;
  /** Resolves with the exit code once the role stops. */
  exited: Promise<number>;
  stop(signal?: Deno.Signal): Promise<number>;
}

/** Loopback listeners for one test: unique host, unusual ports, no clash with a real node. */
export interface TestAddrs {
  KISEKI_S3_ADDR: string;
  KISEKI_NFS_ADDR: string;
  KISEKI_METRICS_ADDR: string;
  KISEKI_DATA_ADDR: string;
  KISEKI_ADVISORY_ADDR: string;
  KISEKI_RAFT_ADDR: string;
}

export function testAddrs(hostOctet: number): TestAddrs {
  const host = `127.0.${hostOctet}.1`;
  return {
    KISEKI_S3_ADDR: `${host}:29000`,
    KISEKI_NFS_ADDR: `${host}:22049`,
    KISEKI_METRICS_ADDR: `${host}:29090`,
    KISEKI_DATA_ADDR: `${host}:29100`,
    KISEKI_ADVISORY_ADDR: `${host}:29101`,
    KISEKI_RAFT_ADDR: `${host}:29300`,
  };
}

export function flagsFor(role: RoleName, env: Record<string, string>, cwd = ROOT): string[] {
  const config = roleConfig(role, env, SOURCE_FFI_DIR);
  return roleFlags(role, config, {
    cwd,
    ffiDir: config.ffiDir,
    nodeModulesDir: SOURCE_NODE_MODULES_DIR,
    protoDir: SOURCE_PROTO_DIR,
  });
}

export function startRole(
  role: RoleName,
  env: Record<string, string>,
  args: string[] = [],
  options: {
    entry?: string;
    flagsEnv?: Record<string, string>;
    /**
     * A command that execs the role in place, e.g. `["/usr/sbin/ip", "netns", "exec", "ns1"]`
     * to run it inside a network namespace; the role's flags and environment are unchanged.
     */
    prefix?: string[];
  } = {},
): RunningRole {
  const entry = options.entry ?? ROLE_TABLE[role].entry;
  // A server writes the default tenant's first S3 key beside its data dir, where tests read it.
  if (role === "server" && env.KISEKI_DATA_DIR && env.KISEKI_S3_CREDENTIALS_FILE === undefined) {
    env = { ...env, KISEKI_S3_CREDENTIALS_FILE: s3CredentialsFileOf(env.KISEKI_DATA_DIR) };
  }
  // A test of a bad variable still runs the role under the flags a valid setup would get.
  const flags = flagsFor(role, options.flagsEnv ?? env);
  const denoArgs = ["run", "--quiet", ...flags, `${ROOT}${entry}`, ...args];
  const prefix = options.prefix ?? [];
  const child = new Deno.Command(prefix[0] ?? Deno.execPath(), {
    args: prefix.length > 0 ? [...prefix.slice(1), Deno.execPath(), ...denoArgs] : denoArgs,
    cwd: ROOT,
    env: { ...env, NO_COLOR: "1" },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let err = "";
  const decoder = new TextDecoder();
  const drained = (async () => {
    for await (const chunk of child.stderr) err += decoder.decode(chunk, { stream: true });
  })();
  const out = child.stdout.pipeTo(new WritableStream());
  const exited = child.status.then(async (s) => {
    await Promise.all([drained, out]);
    return s.code;
  });
  return {
    child,
    pid: child.pid,
    flags,
    stderr: () => err,
    exited,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      return await exited;
    },
  };
}

/** Polls `url` until it answers 200 with `body`, or fails after `timeoutMs`. */
export async function waitForHttp(url: string, body: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      last = `${r.status} ${await r.text()}`;
      if (r.status === 200 && last === `200 ${body}`) return;
    } catch (e) {
      last = (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer ${body} within ${timeoutMs} ms (last: ${last})`);
}

/** Runs a command to completion and returns its exit code and output. */
/**
 * Calls `get` until it gives something other than null (an error counts as not yet), every
 * `everyMs`, for at most `deadlineMs`; the timeout names `what` and the last error.
 */
export async function pollUntil<T>(
  what: string,
  get: () => Promise<T | null>,
  deadlineMs: number,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await get();
      if (v !== null) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${last})`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function run(
  cmd: string,
  args: string[],
  options: { env?: Record<string, string>; cwd?: string; clearEnv?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd ?? ROOT,
    env: options.env,
    clearEnv: options.clearEnv,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/**
 * Where startRole() has a server with data dir `dataDir` write the default tenant's first S3
 * key (KISEKI_S3_CREDENTIALS_FILE): beside the data dir, never in it.
 */
export function s3CredentialsFileOf(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, "")}.s3-credentials`;
}

/** The default tenant's S3 key a server wrote on first start (see s3CredentialsFileOf()). */
export async function readS3Credentials(
  path: string,
): Promise<{ accessKeyId: string; secretAccessKey: string }> {
  // Written at first start, before the node reports ready; a moment's grace for the file.
  let text = "";
  for (let attempt = 0;; attempt++) {
    try {
      text = await Deno.readTextFile(path);
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound) || attempt >= 150) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const get = (name: string) => text.match(new RegExp(`^\\s*${name}\\s*=\\s*(\\S+)`, "m"))?.[1];
  const accessKeyId = get("aws_access_key_id");
  const secretAccessKey = get("aws_secret_access_key");
  if (!accessKeyId || !secretAccessKey) throw new Error(`${path}: no S3 key in the file`);
  return { accessKeyId, secretAccessKey };
}
