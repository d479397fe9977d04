// The FUSE device and the mount, through libc over Deno FFI (no libfuse): /dev/fuse opened
// with open(2) (mount(2) needs the raw fd in its `fd=` option), mount(2) as root,
// fusermount3 (which passes the fd back over a socket) otherwise, umount2(MNT_DETACH).
// Reads of /dev/fuse block until the kernel has a request, so they run as nonblocking FFI
// calls (on a worker thread, 13-85 µs each here); replies are writev(2) on the caller's
// thread (a write to /dev/fuse never blocks).

const O_RDWR = 0o2;
const O_CLOEXEC = 0o2000000;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MNT_DETACH = 2;
const POLLIN = 0x001;
const POLLERR = 0x008;
const POLLHUP = 0x010;
const POLLNVAL = 0x020;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Libc | null = null;

/**
 * Where libc may be, by absolute path: a sandboxed role's FFI permission names files, and a
 * bare "libc.so.6" would be checked as a file in the current directory.
 */
const LIBC_PATHS: readonly string[] = [
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/usr/lib/aarch64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib64/libc.so.6",
];

function lib(): Libc {
  if (libc !== null) return libc;
  let firstError: unknown = null;
  for (const path of LIBC_PATHS) {
    try {
      libc = Deno.dlopen(path, SYMBOLS).symbols;
      return libc;
    } catch (e) {
      firstError ??= e;
    }
  }
  throw new Error(`cannot load libc from ${LIBC_PATHS.join(", ")}: ${firstError}`);
}

const ENCODER = new TextEncoder();

function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = ENCODER.encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** errno of the last blocking call on this thread, with its text. */
function lastError(what: string): Error {
  const c = lib();
  const p = c.__errno_location();
  const errno = p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
  const text = c.strerror(errno);
  const msg = text === null ? `errno ${errno}` : Deno.UnsafePointerView.getCString(text);
  const e = new Error(`${what}: ${msg}`);
  (e as Error & { errno: number }).errno = errno;
  return e;
}

/** An open /dev/fuse connection. */
export class FuseDevice {
  readonly fd: number;
  #closed = false;
  readonly #iov = new BigUint64Array(4);
  readonly #pollfd = new Uint8Array(8);

  constructor(fd: number) {
    this.fd = fd;
  }

  /** Opens /dev/fuse (root, or a user the device lets in). */
  static open(): FuseDevice {
    const fd = lib().open(cstr("/dev/fuse"), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) throw lastError("cannot open /dev/fuse");
    return new FuseDevice(fd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Reads one request into `buf` (which must hold the largest: max_write plus headers).
   * Returns its length, or -1 when the read failed and the caller should look at alive().
   */
  async read(buf: Uint8Array<ArrayBuffer>): Promise<number> {
    const n = await lib().read(this.fd, buf, BigInt(buf.length));
    return Number(n);
  }

  /**
   * False once the connection is gone (unmounted or aborted): poll(2) says POLLERR then.
   * A failed read on a live connection was interrupted and is tried again.
   */
  alive(): boolean {
    if (this.#closed) return false;
    const v = new DataView(this.#pollfd.buffer);
    v.setInt32(0, this.fd, true);
    v.setInt16(4, POLLIN, true);
    v.setInt16(6, 0, true);
    const n = lib().poll(this.#pollfd, 1n, 0);
    if (n < 0) return false;
    const revents = v.getInt16(6, true);
    return (revents & (POLLERR | POLLHUP | POLLNVAL)) === 0;
  }

  /**
   * Writes one reply as a single writev(2) of header and body. Returns false when the kernel
   * refused it (ENOENT: the request was interrupted and is gone; the caller moves on).
   */
  reply(header: Uint8Array<ArrayBuffer>, body: Uint8Array | null): boolean {
    if (this.#closed) return false;
    const iov = this.#iov;
    iov[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(header)));
    iov[1] = BigInt(header.length);
    let count = 1;
    if (body !== null && body.length > 0) {
      iov[2] = BigInt(
        Deno.UnsafePointer.value(Deno.UnsafePointer.of(body as Uint8Array<ArrayBuffer>)),
      );
      iov[3] = BigInt(body.length);
      count = 2;
    }
    const n = lib().writev(this.fd, iov, count);
    return Number(n) >= 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    lib().close(this.fd);
  }
}

export interface MountOptions {
  mountpoint: string;
  /** The name `mount` shows as the source. */
  fsName: string;
  /** Let other users than the mounting one in (root mounts: always allowed). */
  allowOther: boolean;
  /** Force fusermount3 even as root (tests the unprivileged path). */
  useFusermount?: boolean;
}

/** Mounts a FUSE file system at `mountpoint` and returns the connection to serve it. */
export async function mountFuse(options: MountOptions): Promise<FuseDevice> {
  const root = Deno.uid() === 0;
  if (root && !options.useFusermount) return mountAsRoot(options);
  return await mountWithFusermount(options);
}

function mountAsRoot(options: MountOptions): FuseDevice {
  const dev = FuseDevice.open();
  const data = [
    `fd=${dev.fd}`,
    "rootmode=40000",
    "user_id=0",
    "group_id=0",
    "default_permissions",
    ...(options.allowOther ? ["allow_other"] : []),
  ].join(",");
  const rc = lib().mount(
    cstr(options.fsName),
    cstr(options.mountpoint),
    cstr("fuse.kiseki"),
    BigInt(MS_NOSUID | MS_NODEV),
    cstr(data),
  );
  if (rc !== 0) {
    const e = lastError(`mount(2) of ${options.mountpoint} failed`);
    dev.close();
    throw e;
  }
  return dev;
}

/**
 * fusermount3 (setuid root) opens /dev/fuse, mounts, and sends the fd over the socket named
 * by _FUSE_COMMFD as SCM_RIGHTS. The socket end it gets must be inheritable (no CLOEXEC).
 */
async function mountWithFusermount(options: MountOptions): Promise<FuseDevice> {
  const c = lib();
  const fds = new Int32Array(2);
  if (c.socketpair(AF_UNIX, SOCK_STREAM, 0, new Uint8Array(fds.buffer)) !== 0) {
    throw lastError("socketpair failed");
  }
  const [mine, theirs] = [fds[0]!, fds[1]!];
  try {
    const opts = [
      `fsname=${options.fsName}`,
      "subtype=kiseki",
      "default_permissions",
      "nosuid",
      "nodev",
      ...(options.allowOther ? ["allow_other"] : []),
    ].join(",");
    const out = await new Deno.Command("fusermount3", {
      args: ["-o", opts, "--", options.mountpoint],
      env: { _FUSE_COMMFD: String(theirs) },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `fusermount3 failed: ${new TextDecoder().decode(out.stderr).trim() || out.code}`,
      );
    }
    const fd = receiveFd(mine);
    return new FuseDevice(fd);
  } finally {
    c.close(mine);
    c.close(theirs);
  }
}

/** One fd sent as SCM_RIGHTS on `sock` (already there: fusermount3 has exited). */
function receiveFd(sock: number): number {
  const data = new Uint8Array(1);
  const iov = new BigUint64Array(2);
  iov[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(data)));
  iov[1] = 1n;
  const control = new Uint8Array(64);
  // struct msghdr (x86_64/aarch64): name, namelen(+pad), iov, iovlen, control, controllen, flags
  const msg = new BigUint64Array(7);
  msg[2] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov)));
  msg[3] = 1n;
  msg[4] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(control)));
  msg[5] = BigInt(control.length);
  const n = lib().recvmsg(sock, new Uint8Array(msg.buffer), 0);
  if (Number(n) < 0) throw lastError("recvmsg of the fuse fd failed");
  const v = new DataView(control.buffer);
  const len = Number(v.getBigUint64(0, true));
  const level = v.getInt32(8, true), type = v.getInt32(12, true);
  if (len < 20 || level !== SOL_SOCKET || type !== SCM_RIGHTS) {
    throw new Error("fusermount3 sent no file descriptor");
  }
  return v.getInt32(16, true);
}

/** Detaches the mount (MNT_DETACH: busy files keep working until closed). */
export async function unmountFuse(mountpoint: string, viaFusermount: boolean): Promise<void> {
  if (Deno.uid() === 0 && !viaFusermount) {
    if (lib().umount2(cstr(mountpoint), MNT_DETACH) !== 0) {
      throw lastError(`umount2 of ${mountpoint} failed`);
    }
    return;
  }
  const out = await new Deno.Command("fusermount3", {
    args: ["-u", "-z", "--", mountpoint],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`fusermount3 -u failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}
