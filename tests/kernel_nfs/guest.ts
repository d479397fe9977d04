// A Linux guest with the kernel NFS client, for tests of the NFS gateway with the client users
// mount with (these machines' kernels have none). Built from Debian packages only: a cloud
// kernel, its sunrpc/nfs/virtio modules, busybox, mount.nfs and flock with their libraries,
// packed into an initramfs whose init runs one shell script and powers off. Booted under
// qemu (TCG, user networking): the guest is 10.0.2.15 and reaches the host's 127.0.0.1 as
// 10.0.2.2. The build is cached outside the tree and reused while its package set holds.

const KERNEL_META_PACKAGE = "linux-image-cloud-amd64";
const MODULES = ["virtio_pci", "virtio_net", "nfs", "nfsv3", "nfsv4"];
/** What the host needs to build and boot a guest. */
const HOST_PACKAGES = { "qemu-system-x86_64": "qemu-system-x86", cpio: "cpio" };
/** The host's 127.0.0.1, as the guest sees it. */
export const GUEST_HOST_ADDR = "10.0.2.2";
const EXIT_MARK = "KISEKI_GUEST_EXIT=";

export interface Guest {
  kernel: string;
  initramfs: string;
  kernelRelease: string;
}

async function sh(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function which(cmd: string): Promise<boolean> {
  return (await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output()).success;
}

/** Why no guest can be built here, or null (needs root and Debian's apt). */
export async function guestUnavailable(): Promise<string | null> {
  if (Deno.uid() !== 0) return "building the guest needs root (apt-get)";
  if (!(await which("apt-get"))) return "building the guest needs Debian's apt";
  return null;
}

/** The default cache: outside the tree, kept between runs. */
export function defaultGuestCache(): string {
  return Deno.env.get("KISEKI_GUEST_CACHE") ??
    `${
      Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/root"}/.cache`
    }/kiseki/kernel-nfs`;
}

/** The packages nfs-common needs at run time (library closure), one apt-cache call a level. */
async function libraryClosure(root: string): Promise<string[]> {
  const seen = new Set([root]);
  let level = [root];
  while (level.length > 0) {
    const out = await sh("apt-cache", [
      "depends",
      "--no-recommends",
      "--no-suggests",
      "--no-conflicts",
      "--no-breaks",
      "--no-replaces",
      "--no-enhances",
      ...level,
    ]);
    const next = [];
    for (const m of out.matchAll(/^\s+(?:Pre)?Depends: (lib[^\s<>]+)$/gm)) {
      if (!seen.has(m[1]!)) {
        seen.add(m[1]!);
        next.push(m[1]!);
      }
    }
    level = next;
  }
  return [...seen].filter((p) => p !== root);
}

/** Builds (or finds in `cache`) a kernel and an initramfs with the NFS client. */
export async function buildGuest(cache: string): Promise<Guest> {
  await Deno.mkdir(cache, { recursive: true });
  const missing = [];
  for (const [cmd, pkg] of Object.entries(HOST_PACKAGES)) {
    if (!(await which(cmd))) missing.push(pkg);
  }
  if (missing.length > 0) {
    await sh("apt-get", ["update", "-qq"]);
    await sh("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing]);
  }
  let kernelPackage = (await sh("apt-cache", ["depends", KERNEL_META_PACKAGE]))
    .match(/Depends: (linux-image-[0-9][^\s]*)/)?.[1];
  if (kernelPackage === undefined) {
    await sh("apt-get", ["update", "-qq"]);
    kernelPackage = (await sh("apt-cache", ["depends", KERNEL_META_PACKAGE]))
      .match(/Depends: (linux-image-[0-9][^\s]*)/)?.[1];
  }
  if (kernelPackage === undefined) throw new Error(`apt knows no ${KERNEL_META_PACKAGE}`);
  const packages = [
    kernelPackage,
    "busybox-static",
    "nfs-common",
    "util-linux",
    ...await libraryClosure("nfs-common"),
  ];
  const policy = await sh("apt-cache", ["policy", ...packages]);
  const stamp = [...policy.matchAll(/^(\S+):\n\s+Installed: .*\n\s+Candidate: (\S+)/gm)]
    .map((m) => `${m[1]}=${m[2]}`).sort().join("\n");
  const guest: Guest = {
    kernel: `${cache}/vmlinuz`,
    initramfs: `${cache}/initramfs.cpio`,
    kernelRelease: "",
  };
  if (
    await exists(guest.initramfs) && await exists(guest.kernel) &&
    (await Deno.readTextFile(`${cache}/stamp`).catch(() => "")) === stamp
  ) {
    guest.kernelRelease = (await Deno.readTextFile(`${cache}/release`)).trim();
    return guest;
  }

  const debs = `${cache}/debs`, tree = `${cache}/tree`, image = `${cache}/image`;
  for (const d of [debs, tree, image]) {
    await Deno.remove(d, { recursive: true }).catch(() => {});
    await Deno.mkdir(d, { recursive: true });
  }
  await sh("apt-get", ["download", ...packages], debs);
  for await (const e of Deno.readDir(debs)) {
    if (e.name.endsWith(".deb")) await sh("dpkg-deb", ["-x", `${debs}/${e.name}`, tree]);
  }
  const release = [...Deno.readDirSync(`${tree}/lib/modules`)][0]!.name;
  const boot = [...Deno.readDirSync(`${tree}/boot`)].find((e) => e.name.startsWith("vmlinuz-"));
  if (boot === undefined) throw new Error(`${kernelPackage} holds no vmlinuz`);
  await Deno.copyFile(`${tree}/boot/${boot.name}`, guest.kernel);

  // Modules in load order: each after those its .modinfo "depends=" names (no depmod here).
  const modRoot = `${tree}/lib/modules/${release}`;
  const byName = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(`${modRoot}/${dir}`)) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory) walk(rel);
      else if (e.name.endsWith(".ko")) byName.set(e.name.slice(0, -3).replaceAll("-", "_"), rel);
    }
  };
  walk("kernel");
  const order: string[] = [];
  const visit = (name: string) => {
    const mod = byName.get(name.replaceAll("-", "_"));
    // Not a module file: built into this kernel, nothing to load.
    if (mod === undefined || order.includes(mod)) return;
    for (const d of modinfoDepends(Deno.readFileSync(`${modRoot}/${mod}`))) visit(d);
    order.push(mod);
  };
  for (const name of MODULES) visit(name);

  // The image: busybox and its applets, mount.nfs, flock, the libraries, the modules, init.
  for (
    const d of ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run", "mnt", "root", "guest"]
  ) {
    await Deno.mkdir(`${image}/${d}`, { recursive: true });
  }
  await Deno.copyFile(`${tree}/bin/busybox`, `${image}/bin/busybox`);
  await Deno.chmod(`${image}/bin/busybox`, 0o755);
  for (const applet of (await sh(`${tree}/bin/busybox`, ["--list"])).split("\n")) {
    if (applet === "" || applet === "busybox") continue;
    await Deno.symlink("busybox", `${image}/bin/${applet}`).catch(() => {});
  }
  await Deno.copyFile(`${tree}/sbin/mount.nfs`, `${image}/sbin/mount.nfs`);
  await Deno.chmod(`${image}/sbin/mount.nfs`, 0o755);
  await Deno.remove(`${image}/bin/flock`).catch(() => {});
  await Deno.copyFile(`${tree}/usr/bin/flock`, `${image}/bin/flock`);
  await Deno.chmod(`${image}/bin/flock`, 0o755);
  for (const dir of ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64"]) {
    if (await exists(`${tree}/${dir}`)) {
      await Deno.mkdir(`${image}/${dir}`, { recursive: true });
      await sh("cp", ["-a", `${tree}/${dir}/.`, `${image}/${dir}/`]);
    }
  }
  const modDir = `${image}/lib/modules/${release}`;
  for (const mod of order) {
    const to = `${modDir}/${mod}`;
    await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${tree}/lib/modules/${release}/${mod}`, to);
  }
  await Deno.writeTextFile(`${image}/etc/modules-order`, order.join("\n") + "\n");
  await Deno.writeTextFile(`${image}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
  await Deno.writeTextFile(`${image}/etc/group`, "root:x:0:\n");
  await Deno.writeTextFile(`${image}/etc/netconfig`, NETCONFIG);
  // mount.nfs asks getprotobyname() for "tcp".
  await Deno.writeTextFile(`${image}/etc/protocols`, "ip 0 IP\ntcp 6 TCP\nudp 17 UDP\n");
  await Deno.writeTextFile(`${image}/init`, INIT, { mode: 0o755 });
  await Deno.chmod(`${image}/init`, 0o755);
  await packCpio(image, guest.initramfs);
  await Deno.writeTextFile(`${cache}/release`, release + "\n");
  await Deno.writeTextFile(`${cache}/stamp`, stamp);
  await Deno.remove(debs, { recursive: true });
  await Deno.remove(tree, { recursive: true });
  guest.kernelRelease = release;
  return guest;
}

/** The modules a module's .modinfo says it depends on. */
function modinfoDepends(ko: Uint8Array): string[] {
  const text = new TextDecoder("latin1").decode(ko);
  const at = text.indexOf("\0depends=");
  if (at < 0) return [];
  const value = text.slice(at + 9, text.indexOf("\0", at + 9));
  return value.split(",").filter((d) => d !== "");
}

// libtirpc reads /etc/netconfig to know tcp and udp.
const NETCONFIG = `udp        tpi_clts      v     inet     udp     -       -
tcp        tpi_cots_ord  v     inet     tcp     -       -
udp6       tpi_clts      v     inet6    udp     -       -
tcp6       tpi_cots_ord  v     inet6    tcp     -       -
`;

// The guest's init: mounts the kernel file systems, loads the modules, brings the network
// up, runs /guest/script (its output on the second serial port), reports its status on the
// first and powers off.
const INIT = `#!/bin/sh
export PATH=/bin:/sbin HOME=/root KISEKI_HOST=${GUEST_HOST_ADDR}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=80% tmpfs /tmp
mount -t tmpfs tmpfs /run
R=/lib/modules/$(uname -r)
while read -r m; do
  [ -n "$m" ] && { insmod "$R/$m" || echo "init: insmod $m failed" > /dev/ttyS0; }
done < /etc/modules-order
hostname kiseki-guest
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
cd /root
set -- $(cat /guest/args 2>/dev/null)
sh /guest/script "$@" < /dev/null > /dev/ttyS1 2>&1
rc=$?
sync
echo "${EXIT_MARK}$rc" > /dev/ttyS0
poweroff -f
`;

async function packCpio(dir: string, out: string): Promise<void> {
  const cmd = new Deno.Command("sh", {
    args: ["-c", `find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > '${out}'`],
    cwd: dir,
    stderr: "piped",
  });
  const r = await cmd.output();
  if (!r.success) throw new Error(`cpio failed: ${new TextDecoder().decode(r.stderr)}`);
}

export interface GuestRun {
  /** The script's exit status; null when the guest never reported one (timeout, crash). */
  status: number | null;
  /** What the script printed (stdout and stderr). */
  output: string;
  /** The guest's console (kernel messages, init). */
  console: string;
  wallMs: number;
}

/**
 * Boots the guest, runs `script` (busybox sh) as root with `args` (words without spaces),
 * and returns its status and output. The guest is stopped after `timeoutMs`.
 */
export async function runGuest(
  guest: Guest,
  script: string,
  options: {
    args?: string[];
    timeoutMs?: number;
    memoryMiB?: number;
    files?: Record<string, Uint8Array>;
  } = {},
): Promise<GuestRun> {
  const work = await Deno.makeTempDir({ prefix: "kiseki-guest-" });
  try {
    const extra = `${work}/extra`;
    await Deno.mkdir(`${extra}/guest`, { recursive: true });
    await Deno.writeTextFile(`${extra}/guest/script`, script);
    for (const a of options.args ?? []) {
      if (/\s/.test(a)) throw new Error(`guest argument ${JSON.stringify(a)} holds a space`);
    }
    await Deno.writeTextFile(`${extra}/guest/args`, (options.args ?? []).join(" "));
    for (const [name, bytes] of Object.entries(options.files ?? {})) {
      await Deno.writeFile(`${extra}/guest/${name}`, bytes);
    }
    await packCpio(extra, `${work}/extra.cpio`);
    // A second cpio archive appended to the first adds /guest to the initramfs.
    const base = await Deno.readFile(guest.initramfs);
    const added = await Deno.readFile(`${work}/extra.cpio`);
    const initrd = new Uint8Array(base.length + added.length);
    initrd.set(base);
    initrd.set(added, base.length);
    await Deno.writeFile(`${work}/initrd`, initrd);
    const started = performance.now();
    const child = new Deno.Command("qemu-system-x86_64", {
      args: [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        String(options.memoryMiB ?? 1024),
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-kernel",
        guest.kernel,
        "-initrd",
        `${work}/initrd`,
        "-append",
        "console=ttyS0 quiet panic=-1 mitigations=off",
        "-serial",
        `file:${work}/console`,
        "-serial",
        `file:${work}/output`,
        "-nic",
        "user,model=virtio-net-pci",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, options.timeoutMs ?? 300_000);
    await child.output();
    clearTimeout(timer);
    const wallMs = performance.now() - started;
    const consoleText = await Deno.readTextFile(`${work}/console`).catch(() => "");
    const output = await Deno.readTextFile(`${work}/output`).catch(() => "");
    const mark = consoleText.lastIndexOf(EXIT_MARK);
    const status = mark < 0 ? null : parseInt(consoleText.slice(mark + EXIT_MARK.length), 10);
    return { status, output, console: consoleText, wallMs };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
