// A POSIX test list that runs against any mounted directory (the shape of go-fuse's
// posixtest): each case gets a fresh empty directory on the mount. Calls Deno has no API for
// (mmap, fcntl and flock locks, xattrs, SEEK_DATA, renameat2) run in python3, whose os
// module makes the plain system calls.

import assert from "node:assert/strict";

export interface PosixCase {
  name: string;
  run(dir: string): Promise<void>;
}

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/** Runs a python3 snippet with `d` bound to the case's directory; fails on a non-zero exit. */
export async function py(dir: string, code: string): Promise<string> {
  const prelude = "import os, sys, errno, fcntl, mmap, ctypes, time, subprocess\n" +
    `d = ${JSON.stringify(dir)}\n` +
    "def expect_errno(e, f, *a):\n" +
    "    try:\n        f(*a)\n    except OSError as x:\n" +
    "        assert x.errno == e, f'{f.__name__}: errno {x.errno}, wanted {e}'\n        return\n" +
    "    raise AssertionError(f'{f.__name__} succeeded, wanted errno {e}')\n";
  const out = await new Deno.Command("python3", {
    args: ["-c", prelude + code],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const stdout = DECODER.decode(out.stdout), stderr = DECODER.decode(out.stderr);
  if (!out.success) throw new Error(`python3 failed:\n${stderr}\n${stdout}`);
  return stdout;
}

async function errnoOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).name;
  }
  return "ok";
}

function pattern(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

export const POSIX_CASES: PosixCase[] = [
  {
    name: "a file written is read back whole, and stat gives its size and mode",
    async run(d) {
      const data = pattern(300_000, 1);
      await Deno.writeFile(`${d}/f`, data, { mode: 0o640 });
      assert.deepEqual(await Deno.readFile(`${d}/f`), data);
      const st = await Deno.stat(`${d}/f`);
      assert.equal(st.size, data.length);
      assert.equal(st.isFile, true);
      assert.equal(st.mode! & 0o777, 0o640);
    },
  },
  {
    name: "writes at scattered offsets of a large file read back as written",
    async run(d) {
      const f = await Deno.open(`${d}/big`, { create: true, write: true, read: true });
      const size = 6 << 20;
      const want = new Uint8Array(size);
      for (
        const [off, len, seed] of [[0, 1 << 20, 2], [5 << 20, 1 << 20, 3], [100, 5000, 4], [
          (3 << 20) + 7,
          70_000,
          5,
        ]]
      ) {
        const p = pattern(len!, seed!);
        want.set(p, off);
        await f.seek(off!, Deno.SeekMode.Start);
        let at = 0;
        while (at < p.length) at += await f.write(p.subarray(at));
      }
      f.close();
      assert.deepEqual(await Deno.readFile(`${d}/big`), want);
    },
  },
  {
    name: "truncate shrinks and grows a file; grown bytes read as zeros",
    async run(d) {
      await Deno.writeFile(`${d}/t`, pattern(10_000, 6));
      await Deno.truncate(`${d}/t`, 100);
      assert.equal((await Deno.stat(`${d}/t`)).size, 100);
      await Deno.truncate(`${d}/t`, 5000);
      const got = await Deno.readFile(`${d}/t`);
      assert.equal(got.length, 5000);
      assert.deepEqual(got.subarray(0, 100), pattern(10_000, 6).subarray(0, 100));
      assert.ok(got.subarray(100).every((b) => b === 0));
      // ftruncate through an open file
      const f = await Deno.open(`${d}/t`, { write: true });
      await f.truncate(7);
      f.close();
      assert.equal((await Deno.stat(`${d}/t`)).size, 7);
    },
  },
  {
    name: "O_APPEND writes land at the end, however the offset was moved",
    async run(d) {
      await Deno.writeFile(`${d}/a`, ENCODER.encode("one\n"));
      const f = await Deno.open(`${d}/a`, { append: true });
      await f.write(ENCODER.encode("two\n"));
      await f.seek(0, Deno.SeekMode.Start);
      await f.write(ENCODER.encode("three\n"));
      f.close();
      await Deno.writeTextFile(`${d}/a`, "four\n", { append: true });
      assert.equal(await Deno.readTextFile(`${d}/a`), "one\ntwo\nthree\nfour\n");
    },
  },
  {
    name: "mkdir, nested files, readdir, rmdir of a non-empty and then an empty directory",
    async run(d) {
      await Deno.mkdir(`${d}/x/y/z`, { recursive: true });
      await Deno.writeTextFile(`${d}/x/y/file`, "f");
      const names = [];
      for await (const e of Deno.readDir(`${d}/x/y`)) names.push(`${e.name}:${e.isDirectory}`);
      assert.deepEqual(names.sort(), ["file:false", "z:true"]);
      assert.equal(await errnoOf(Deno.remove(`${d}/x/y`)), "Error"); // ENOTEMPTY
      await py(d, "expect_errno(errno.ENOTEMPTY, os.rmdir, d + '/x/y')");
      await Deno.remove(`${d}/x/y/z`);
      await Deno.remove(`${d}/x/y/file`);
      await Deno.remove(`${d}/x/y`);
      assert.equal(await errnoOf(Deno.stat(`${d}/x/y`)), "NotFound");
      assert.equal((await Deno.stat(`${d}/x`)).isDirectory, true);
    },
  },
  {
    name: "errors: ENOENT, EEXIST, EISDIR, ENOTDIR, ENAMETOOLONG",
    async run(d) {
      await Deno.writeTextFile(`${d}/file`, "x");
      await Deno.mkdir(`${d}/dir`);
      await py(
        d,
        `
expect_errno(errno.ENOENT, os.stat, d + '/nope')
expect_errno(errno.EEXIST, os.mkdir, d + '/dir')
expect_errno(errno.EEXIST, os.open, d + '/file', os.O_CREAT | os.O_EXCL | os.O_WRONLY)
expect_errno(errno.EISDIR, os.open, d + '/dir', os.O_WRONLY)
expect_errno(errno.ENOTDIR, os.mkdir, d + '/file/sub')
expect_errno(errno.ENOTDIR, os.rmdir, d + '/file')
expect_errno(errno.EISDIR, os.unlink, d + '/dir')
expect_errno(errno.ENAMETOOLONG, os.open, d + '/' + 'n' * 256, os.O_CREAT | os.O_WRONLY)
`,
      );
    },
  },
  {
    name: "symlinks: readlink, following, lstat, dangling links",
    async run(d) {
      await Deno.writeTextFile(`${d}/target`, "through the link");
      await Deno.symlink("target", `${d}/link`);
      assert.equal(await Deno.readLink(`${d}/link`), "target");
      assert.equal(await Deno.readTextFile(`${d}/link`), "through the link");
      assert.equal((await Deno.lstat(`${d}/link`)).isSymlink, true);
      await Deno.symlink("nowhere/at/all", `${d}/dangling`);
      assert.equal(await Deno.readLink(`${d}/dangling`), "nowhere/at/all");
      assert.equal(await errnoOf(Deno.stat(`${d}/dangling`)), "NotFound");
      await Deno.remove(`${d}/link`);
      assert.equal(await Deno.readTextFile(`${d}/target`), "through the link");
    },
  },
  {
    name: "rename: to a new name, over an existing file, of a directory with contents",
    async run(d) {
      await Deno.writeTextFile(`${d}/a`, "A");
      await Deno.writeTextFile(`${d}/b`, "B");
      await Deno.rename(`${d}/a`, `${d}/c`);
      assert.equal(await errnoOf(Deno.stat(`${d}/a`)), "NotFound");
      await Deno.rename(`${d}/c`, `${d}/b`);
      assert.equal(await Deno.readTextFile(`${d}/b`), "A");
      await Deno.mkdir(`${d}/dir/sub`, { recursive: true });
      await Deno.writeTextFile(`${d}/dir/sub/f`, "deep");
      // an open directory handle keeps working across the rename (node ids move along)
      await Deno.rename(`${d}/dir`, `${d}/moved`);
      assert.equal(await Deno.readTextFile(`${d}/moved/sub/f`), "deep");
      assert.equal(await errnoOf(Deno.stat(`${d}/dir`)), "NotFound");
      await Deno.mkdir(`${d}/other`);
      await Deno.rename(`${d}/moved/sub/f`, `${d}/other/g`);
      assert.equal(await Deno.readTextFile(`${d}/other/g`), "deep");
    },
  },
  {
    name: "renameat2: RENAME_NOREPLACE refuses an existing target, RENAME_EXCHANGE swaps",
    async run(d) {
      await Deno.writeTextFile(`${d}/x`, "X");
      await Deno.writeTextFile(`${d}/y`, "Y");
      await py(
        d,
        `
libc = ctypes.CDLL(None, use_errno=True)
AT = -100
def r2(a, b, flags):
    if libc.renameat2(AT, (d + '/' + a).encode(), AT, (d + '/' + b).encode(), flags) != 0:
        return ctypes.get_errno()
    return 0
assert r2('x', 'y', 1) == errno.EEXIST
assert r2('x', 'z', 1) == 0
assert r2('z', 'y', 2) == 0
assert open(d + '/z').read() == 'Y' and open(d + '/y').read() == 'X'
assert r2('z', 'nope', 2) == errno.ENOENT
assert r2('z', 'y', 4) in (errno.EINVAL, errno.ENOSYS)
`,
      );
    },
  },
  {
    name: "hard links: one inode for both names, writes shared, unlink keeps the other",
    async run(d) {
      await Deno.writeTextFile(`${d}/orig`, "one name");
      await py(
        d,
        `
os.link(d + '/orig', d + '/second')
a, b = os.stat(d + '/orig'), os.stat(d + '/second')
assert a.st_ino == b.st_ino, (a.st_ino, b.st_ino)
assert a.st_nlink == 2 and b.st_nlink == 2, (a.st_nlink, b.st_nlink)
assert open(d + '/second').read() == 'one name'
with open(d + '/second', 'r+') as f:
    f.seek(4)
    f.write('NAME')
assert open(d + '/orig').read() == 'one NAME', open(d + '/orig').read()
expect_errno(errno.EEXIST, os.link, d + '/orig', d + '/second')
os.mkdir(d + '/sub')
os.link(d + '/second', d + '/sub/third')
assert os.stat(d + '/orig').st_nlink == 3
os.unlink(d + '/orig')
assert not os.path.exists(d + '/orig')
assert os.stat(d + '/second').st_nlink == 2, os.stat(d + '/second').st_nlink
assert open(d + '/sub/third').read() == 'one NAME'
os.unlink(d + '/sub/third')
assert os.stat(d + '/second').st_nlink == 1
assert open(d + '/second').read() == 'one NAME'
assert sorted(os.listdir(d)) == ['second', 'sub'], os.listdir(d)
`,
      );
      // A fresh lookup (another process, no cached dentry) finds the surviving name's bytes.
      assert.equal(await Deno.readTextFile(`${d}/second`), "one NAME");
      assert.equal(await errnoOf(Deno.stat(`${d}/orig`)), "NotFound");
    },
  },
  {
    name: "an unlinked file that is still open reads and writes until closed",
    async run(d) {
      await py(
        d,
        `
fd = os.open(d + '/u', os.O_CREAT | os.O_RDWR, 0o644)
os.write(fd, b'still here')
os.unlink(d + '/u')
assert not os.path.exists(d + '/u')
assert os.listdir(d) == [], os.listdir(d)
assert os.fstat(fd).st_nlink == 0
os.lseek(fd, 0, 0)
assert os.read(fd, 100) == b'still here'
os.write(fd, b'!')
os.lseek(fd, 0, 0)
assert os.read(fd, 100) == b'still here!'
os.close(fd)
assert os.listdir(d) == []
`,
      );
    },
  },
  {
    name: "a file replaced by rename while open keeps its bytes for the open file",
    async run(d) {
      await py(
        d,
        `
open(d + '/old', 'w').write('old bytes')
open(d + '/new', 'w').write('new bytes')
fd = os.open(d + '/old', os.O_RDWR)
os.rename(d + '/new', d + '/old')
assert open(d + '/old').read() == 'new bytes'
assert os.read(fd, 100) == b'old bytes'
os.write(fd, b'!')
os.close(fd)
assert open(d + '/old').read() == 'new bytes'
assert sorted(os.listdir(d)) == ['old'], os.listdir(d)
`,
      );
    },
  },
  {
    name: "chmod, chown and utimes change what stat shows",
    async run(d) {
      await Deno.writeTextFile(`${d}/m`, "m");
      await Deno.chmod(`${d}/m`, 0o600);
      assert.equal((await Deno.stat(`${d}/m`)).mode! & 0o7777, 0o600);
      await Deno.chown(`${d}/m`, 1234, 5678);
      const st = await Deno.stat(`${d}/m`);
      assert.equal(st.uid, 1234);
      assert.equal(st.gid, 5678);
      await Deno.utime(`${d}/m`, new Date(1_500_000_000_000), new Date(1_600_000_000_000));
      assert.equal((await Deno.stat(`${d}/m`)).mtime!.getTime(), 1_600_000_000_000);
      await Deno.mkdir(`${d}/dm`);
      await Deno.chmod(`${d}/dm`, 0o700);
      assert.equal((await Deno.stat(`${d}/dm`)).mode! & 0o7777, 0o700);
    },
  },
  {
    name: "mknod makes regular files and refuses fifos",
    async run(d) {
      await py(
        d,
        `
import stat
os.mknod(d + '/reg', 0o644 | stat.S_IFREG)
assert stat.S_ISREG(os.stat(d + '/reg').st_mode)
expect_errno(errno.EPERM, os.mkfifo, d + '/fifo')
`,
      );
    },
  },
  {
    name: "mmap reads a file's bytes",
    async run(d) {
      const data = pattern(200_000, 9);
      await Deno.writeFile(`${d}/mm`, data);
      const out = await py(
        d,
        `
import hashlib
with open(d + '/mm', 'rb') as f:
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    print(hashlib.sha256(m[:]).hexdigest(), m[12345], len(m))
    m.close()
`,
      );
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
      const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
      assert.equal(out.trim(), `${hex} ${data[12345]} ${data.length}`);
    },
  },
  {
    name: "lseek SEEK_DATA and SEEK_HOLE see the file as all data, ENXIO past the end",
    async run(d) {
      await Deno.writeFile(`${d}/s`, pattern(10_000, 10));
      await py(
        d,
        `
fd = os.open(d + '/s', os.O_RDONLY)
assert os.lseek(fd, 100, os.SEEK_DATA) == 100
assert os.lseek(fd, 100, os.SEEK_HOLE) == 10000
expect_errno(errno.ENXIO, os.lseek, fd, 10000, os.SEEK_DATA)
os.close(fd)
`,
      );
    },
  },
  {
    name: "xattrs: set, get, list, replace, remove, and their errors",
    async run(d) {
      await Deno.writeTextFile(`${d}/x`, "x");
      await Deno.mkdir(`${d}/xd`);
      await py(
        d,
        `
p = d + '/x'
os.setxattr(p, 'user.one', b'1')
os.setxattr(p, 'user.two', bytes(range(256)))
assert os.getxattr(p, 'user.one') == b'1'
assert os.getxattr(p, 'user.two') == bytes(range(256))
assert sorted(os.listxattr(p)) == ['user.one', 'user.two']
expect_errno(errno.EEXIST, os.setxattr, p, 'user.one', b'x', os.XATTR_CREATE)
expect_errno(errno.ENODATA, os.setxattr, p, 'user.three', b'x', os.XATTR_REPLACE)
os.setxattr(p, 'user.one', b'uno', os.XATTR_REPLACE)
assert os.getxattr(p, 'user.one') == b'uno'
os.removexattr(p, 'user.one')
expect_errno(errno.ENODATA, os.getxattr, p, 'user.one')
expect_errno(errno.ENODATA, os.removexattr, p, 'user.one')
assert os.listxattr(p) == ['user.two']
os.setxattr(d + '/xd', 'user.dir', b'on a directory')
assert os.getxattr(d + '/xd', 'user.dir') == b'on a directory'
assert open(p).read() == 'x'
`,
      );
    },
  },
  {
    name: "fcntl locks conflict across processes and are dropped on close; SETLKW waits",
    async run(d) {
      await Deno.writeTextFile(`${d}/lk`, "locked");
      await py(
        d,
        `
p = d + '/lk'
fd = os.open(p, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
child = "import fcntl, os, sys\\nfd = os.open(sys.argv[1], os.O_RDWR)\\n"
r = subprocess.run([sys.executable, '-c', child + "try:\\n fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\\nexcept OSError as e:\\n sys.exit(7)\\n", p])
assert r.returncode == 7, r.returncode
r = subprocess.run([sys.executable, '-c', child + "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 20)\\n", p])
assert r.returncode == 0, 'a disjoint range is free'
waiter = subprocess.Popen([sys.executable, '-c', child + "fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)\\nprint('got')\\n", p], stdout=subprocess.PIPE)
time.sleep(0.5)
assert waiter.poll() is None, 'the waiter must block'
os.close(fd)
out, _ = waiter.communicate(timeout=20)
assert out.strip() == b'got'
`,
      );
    },
  },
  {
    name: "flock locks conflict between open files and are dropped when the file closes",
    async run(d) {
      await Deno.writeTextFile(`${d}/fl`, "flock");
      await py(
        d,
        `
p = d + '/fl'
a = os.open(p, os.O_RDONLY)
b = os.open(p, os.O_RDONLY)
fcntl.flock(a, fcntl.LOCK_EX)
expect_errno(errno.EWOULDBLOCK, fcntl.flock, b, fcntl.LOCK_SH | fcntl.LOCK_NB)
os.close(a)
# The kernel sends RELEASE (which drops a closed file's flock) after close() returns: the
# lock goes within moments, not at once (as with every FUSE file system).
for attempt in range(100):
    try:
        fcntl.flock(b, fcntl.LOCK_SH | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        time.sleep(0.02)
else:
    raise AssertionError('the flock of a closed file was never released')
c = os.open(p, os.O_RDONLY)
fcntl.flock(c, fcntl.LOCK_SH | fcntl.LOCK_NB)
os.close(b); os.close(c)
`,
      );
    },
  },
  {
    name: "readdir while the directory changes: every name once, new names after rewind",
    async run(d) {
      for (let i = 0; i < 120; i++) await Deno.writeTextFile(`${d}/f${i}`, String(i));
      await py(
        d,
        `
seen = []
with os.scandir(d) as it:
    for i, e in enumerate(it):
        seen.append(e.name)
        if i == 10:
            open(d + '/late', 'w').close()
            os.unlink(d + '/f119')
assert len(seen) == len(set(seen)), 'a name listed twice'
assert set(seen) - {'late'} <= {f'f{i}' for i in range(120)}
now = set(os.listdir(d))
assert 'late' in now and 'f119' not in now and len(now) == 120
`,
      );
    },
  },
  {
    name: "statfs reports blocks, sizes and name length",
    async run(d) {
      const out = await py(
        d,
        "s = os.statvfs(d)\nprint(s.f_bsize, s.f_blocks > 0, s.f_bavail > 0, s.f_namemax)",
      );
      assert.equal(out.trim(), "4096 True True 255");
    },
  },
  {
    name: "access(2) answers for read, write and execute",
    async run(d) {
      await Deno.writeTextFile(`${d}/ac`, "x");
      await Deno.chmod(`${d}/ac`, 0o644);
      await py(
        d,
        `
assert os.access(d + '/ac', os.R_OK | os.W_OK)
assert not os.access(d + '/ac', os.X_OK)
assert os.access(d, os.X_OK | os.W_OK)
assert not os.access(d + '/none', os.F_OK)
`,
      );
    },
  },
  {
    name: "fallocate grows a file with zeros; KEEP_SIZE leaves its size",
    async run(d) {
      await Deno.writeTextFile(`${d}/fa`, "abc");
      await py(
        d,
        `
fd = os.open(d + '/fa', os.O_RDWR)
os.posix_fallocate(fd, 0, 8192)
assert os.fstat(fd).st_size == 8192
os.close(fd)
data = open(d + '/fa', 'rb').read()
assert data[:3] == b'abc' and data[3:] == bytes(8189)
`,
      );
    },
  },
  {
    name: "files opened in parallel by many writers each keep their own bytes",
    async run(d) {
      await Promise.all(
        Array.from({ length: 8 }, (_, i) => Deno.writeFile(`${d}/p${i}`, pattern(100_000, 20 + i))),
      );
      for (let i = 0; i < 8; i++) {
        assert.deepEqual(await Deno.readFile(`${d}/p${i}`), pattern(100_000, 20 + i));
      }
    },
  },
  {
    name: "fsync and fdatasync store a file's writes",
    async run(d) {
      const f = await Deno.open(`${d}/fs`, { create: true, write: true });
      await f.write(ENCODER.encode("synced"));
      await f.sync();
      await f.syncData();
      f.close();
      await py(d, "fd = os.open(d, os.O_RDONLY)\nos.fsync(fd)\nos.close(fd)");
      assert.equal(await Deno.readTextFile(`${d}/fs`), "synced");
    },
  },
];
