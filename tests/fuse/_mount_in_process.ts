// Starts tests/fuse/mount_main.ts (an object engine in a temp dir, mounted with FUSE) as a
// child process, the way a client role runs: the test's own file calls then go through the
// kernel like any program's.

import { ROOT } from "../e2e/_role.ts";

export interface RunningMount {
  mountpoint: string;
  dataDir: string;
  pid: number;
  child: Deno.ChildProcess;
  stderr(): string;
  /** What the mount process printed before it was ready ("gateways {...}" among it). */
  banner: string;
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Removes the temp dirs (after the mount is gone). */
  cleanup(): Promise<void>;
}

/** Why a FUSE mount cannot be tested here, or null. */
export function fuseMissing(): string | null {
  if (Deno.build.os !== "linux") return "FUSE tests need Linux";
  try {
    Deno.statSync("/dev/fuse");
  } catch {
    return "/dev/fuse is missing";
  }
  if (Deno.uid() !== 0) return "mount(2) needs root";
  return null;
}

const READY_MS = 90_000;

export async function startMount(
  options: { fusermount?: boolean; logLevel?: string; dataDir?: string; gateways?: boolean } = {},
): Promise<RunningMount> {
  const base = await Deno.makeTempDir({ prefix: "kiseki-fuse-" });
  const mountpoint = `${base}/mnt`, dataDir = options.dataDir ?? `${base}/data`;
  await Deno.mkdir(mountpoint);
  if (options.dataDir === undefined) await Deno.mkdir(dataDir);
  const args = [
    "run",
    "--allow-all",
    `${ROOT}tests/fuse/mount_main.ts`,
    "--mountpoint",
    mountpoint,
    "--data",
    dataDir,
    "--log-level",
    options.logLevel ?? Deno.env.get("KISEKI_FUSE_TEST_LOG_LEVEL") ?? "warn",
  ];
  if (options.fusermount) args.push("--fusermount");
  if (options.gateways) args.push("--gateways");
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const errDone = (async () => {
    const dec = new TextDecoder();
    for await (const c of child.stderr) errText = (errText + dec.decode(c)).slice(-200_000);
  })();
  const exited = child.status.then((s) => s.code);
  const reader = child.stdout.getReader();
  const dec = new TextDecoder();
  let out = "";
  const deadline = Date.now() + READY_MS;
  while (!out.includes("mounted\n")) {
    const left = deadline - Date.now();
    const next = await Promise.race([
      reader.read(),
      new Promise<"timeout">((r) => setTimeout(() => r("timeout"), Math.max(0, left))),
    ]);
    if (next === "timeout" || next.done) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await exited;
      await errDone;
      throw new Error(`the mount did not come up: ${out}\n${errText}`);
    }
    out += dec.decode(next.value);
  }
  // Keep draining stdout so the child never blocks on a full pipe.
  void (async () => {
    for (;;) if ((await reader.read()).done) break;
  })();
  const mount: RunningMount = {
    mountpoint,
    dataDir,
    pid: child.pid,
    child,
    stderr: () => errText,
    banner: out,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      const code = await exited;
      await errDone;
      return code;
    },
    async cleanup() {
      await lazyUnmount(mountpoint);
      await Deno.remove(base, { recursive: true }).catch(() => {});
    },
  };
  return mount;
}

/** The mount's log without the lookups of absent names (tools probe for many), last lines. */
export function mountLogTail(m: RunningMount, chars = 6000): string {
  return m.stderr().split("\n").filter((l) => !/op=(LOOKUP .*errno=2|GETXATTR .*errno=61) /.test(l))
    .join("\n")
    .slice(-chars);
}

/** True when `dir` is a mount point (in /proc/self/mounts). */
export async function isMounted(dir: string): Promise<boolean> {
  const mounts = await Deno.readTextFile("/proc/self/mounts");
  return mounts.split("\n").some((l) => l.split(" ")[1] === dir);
}

/** `umount -l DIR` when it is still mounted (a crashed server's mount). */
export async function lazyUnmount(dir: string): Promise<void> {
  if (!(await isMounted(dir))) return;
  await new Deno.Command("umount", { args: ["-l", dir], stdout: "null", stderr: "null" })
    .output();
}
