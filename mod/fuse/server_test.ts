import assert from "node:assert/strict";
import * as abi from "./abi.ts";
import { FUSE_MAX_WRITE_BYTES, type FuseConnection, FuseServer } from "./server.ts";
import { FuseError, type RawFileSystem } from "./fs_api.ts";
import { LockTable } from "./locks.ts";

/** A connection fed by the test: requests in, replies captured; ends when closed. */
class ScriptedConnection implements FuseConnection {
  readonly replies: { unique: bigint; error: number; body: Uint8Array }[] = [];
  readonly #queue: Uint8Array[] = [];
  #waiting: (() => void)[] = [];
  #closed = false;
  #replied: (() => void) | null = null;

  send(req: Uint8Array): void {
    this.#queue.push(req);
    this.#wake();
  }

  close(): void {
    this.#closed = true;
    this.#wake();
  }

  #wake(): void {
    const all = this.#waiting.splice(0);
    for (const w of all) w();
  }

  async read(buf: Uint8Array<ArrayBuffer>): Promise<number> {
    while (this.#queue.length === 0 && !this.#closed) {
      await new Promise<void>((r) => this.#waiting.push(r));
    }
    const next = this.#queue.shift();
    if (next === undefined) return -1;
    buf.set(next);
    return next.length;
  }

  alive(): boolean {
    return !this.#closed;
  }

  reply(header: Uint8Array<ArrayBuffer>, body: Uint8Array | null): boolean {
    const v = new DataView(header.buffer);
    assert.equal(v.getUint32(0, true), abi.OUT_HEADER_BYTES + (body?.length ?? 0));
    this.replies.push({
      unique: v.getBigUint64(8, true),
      error: -v.getInt32(4, true) || 0,
      body: body === null ? new Uint8Array(0) : body.slice(),
    });
    this.#replied?.();
    return true;
  }

  /** Waits until `n` replies have come (bounded). */
  async replied(n: number): Promise<void> {
    const deadline = Date.now() + 5000;
    while (this.replies.length < n) {
      assert.ok(Date.now() < deadline, `only ${this.replies.length} of ${n} replies`);
      await new Promise<void>((r) => {
        this.#replied = r;
        setTimeout(r, 50);
      });
    }
  }

  reply_(unique: bigint) {
    return this.replies.find((r) => r.unique === unique);
  }
}

let nextUnique = 100n;

function request(
  opcode: number,
  nodeid: bigint,
  body: Uint8Array,
): { bytes: Uint8Array; unique: bigint } {
  const unique = nextUnique++;
  const w = new abi.OutWriter(abi.IN_HEADER_BYTES + body.length);
  w.u32(abi.IN_HEADER_BYTES + body.length).u32(opcode).u64(unique).u64(nodeid);
  w.u32(0).u32(0).u32(4242).u32(0).put(body);
  return { bytes: w.done(), unique };
}

function initBody(minor: number, flags: number): Uint8Array {
  return new abi.OutWriter(64).u32(7).u32(minor).u32(128 * 1024).u32(flags).pad(48).done();
}

const ALL_FLAGS = 0x7fffffff;

const attr: abi.Attr = {
  ino: 7n,
  size: 3,
  blocks: 1,
  atimeMs: 1000,
  mtimeMs: 2000,
  ctimeMs: 3000,
  mode: abi.S_IFREG | 0o644,
  nlink: 1,
  uid: 1,
  gid: 2,
  blksize: 4096,
};

/** A file system with one file; everything it was not given for a test fails loudly. */
function fakeFs(over: Partial<RawFileSystem>): RawFileSystem & { forgotten: bigint[] } {
  const forgotten: bigint[] = [];
  const base = new Proxy({}, {
    get: (_t, p) => {
      if (p === "forgotten") return forgotten;
      if (p === "forget") return (id: bigint) => forgotten.push(id);
      if (p === "destroy") return () => Promise.resolve();
      if (p in over) return (over as Record<string | symbol, unknown>)[p];
      return () => Promise.reject(new Error(`unexpected ${String(p)}`));
    },
  });
  return base as RawFileSystem & { forgotten: bigint[] };
}

async function withServer(
  fs: RawFileSystem,
  fn: (c: ScriptedConnection, s: FuseServer) => Promise<void>,
  options: { writebackCache?: boolean; init?: boolean } = {},
): Promise<void> {
  const conn = new ScriptedConnection();
  const server = new FuseServer({
    connection: conn,
    fs,
    writebackCache: options.writebackCache,
    requestsInFlightMax: 4,
  });
  const served = server.serve();
  try {
    if (options.init !== false) {
      conn.send(request(abi.FUSE_INIT, 0n, initBody(45, ALL_FLAGS)).bytes);
      await conn.replied(1);
    }
    await fn(conn, server);
  } finally {
    conn.close();
    await served;
  }
}

Deno.test("FuseServer INIT negotiates 1 MiB writes, readdirplus and parallel dirops, no writeback by default", async () => {
  await withServer(fakeFs({}), async (conn) => {
    await conn.replied(1);
    const out = new DataView(conn.replies[0]!.body.buffer);
    assert.equal(conn.replies[0]!.error, 0);
    assert.equal(conn.replies[0]!.body.length, abi.INIT_OUT_BYTES);
    assert.equal(out.getUint32(0, true), 7);
    assert.equal(out.getUint32(4, true), abi.FUSE_KERNEL_MINOR_VERSION);
    const flags = out.getUint32(12, true);
    for (
      const f of [
        abi.FUSE_ASYNC_READ,
        abi.FUSE_DO_READDIRPLUS,
        abi.FUSE_PARALLEL_DIROPS,
        abi.FUSE_MAX_PAGES,
        abi.FUSE_POSIX_LOCKS,
        abi.FUSE_FLOCK_LOCKS,
      ]
    ) {
      assert.notEqual(flags & f, 0, `flag 0x${f.toString(16)}`);
    }
    assert.equal(flags & abi.FUSE_WRITEBACK_CACHE, 0);
    assert.equal(out.getUint32(20, true), FUSE_MAX_WRITE_BYTES);
    assert.equal(out.getUint16(28, true), 256);
  });
});

Deno.test("FuseServer INIT grants only flags the kernel offered, writeback when asked", async () => {
  const conn = new ScriptedConnection();
  const server = new FuseServer({
    connection: conn,
    fs: fakeFs({}),
    writebackCache: true,
    requestsInFlightMax: 2,
  });
  const served = server.serve();
  conn.send(
    request(abi.FUSE_INIT, 0n, initBody(31, abi.FUSE_ASYNC_READ | abi.FUSE_WRITEBACK_CACHE)).bytes,
  );
  await conn.replied(1);
  conn.close();
  await served;
  const flags = new DataView(conn.replies[0]!.body.buffer).getUint32(12, true);
  assert.equal(flags, abi.FUSE_ASYNC_READ | abi.FUSE_WRITEBACK_CACHE);
});

Deno.test("FuseServer refuses a kernel older than 7.28 and requests before INIT", async () => {
  await withServer(fakeFs({}), async (conn) => {
    conn.send(request(abi.FUSE_INIT, 0n, initBody(26, ALL_FLAGS)).bytes);
    const early = request(abi.FUSE_GETATTR, 1n, new Uint8Array(16));
    conn.send(early.bytes);
    await conn.replied(2);
    assert.equal(conn.replies[0]!.error, abi.EPROTO);
    assert.equal(conn.reply_(early.unique)!.error, abi.EIO);
  }, { init: false });
});

Deno.test("FuseServer answers every opcode it does not handle with ENOSYS", async () => {
  await withServer(fakeFs({}), async (conn) => {
    const asked = [
      abi.FUSE_IOCTL,
      abi.FUSE_POLL,
      abi.FUSE_BMAP,
      abi.FUSE_COPY_FILE_RANGE,
      abi.FUSE_TMPFILE,
      abi.FUSE_STATX,
      7,
      19,
      999,
    ]
      .map((op) => request(op, 1n, new Uint8Array(64)));
    for (const r of asked) conn.send(r.bytes);
    await conn.replied(1 + asked.length);
    for (const r of asked) assert.equal(conn.reply_(r.unique)!.error, abi.ENOSYS);
  });
});

Deno.test("FuseServer answers a body shorter than its struct with EINVAL, a name without NUL too", async () => {
  await withServer(
    fakeFs({ lookup: () => Promise.reject(new Error("not reached")) }),
    async (conn) => {
      const short = request(abi.FUSE_SETATTR, 1n, new Uint8Array(10));
      const noNul = request(abi.FUSE_LOOKUP, 1n, new TextEncoder().encode("abc"));
      conn.send(short.bytes);
      conn.send(noNul.bytes);
      await conn.replied(3);
      assert.equal(conn.reply_(short.unique)!.error, abi.EINVAL);
      assert.equal(conn.reply_(noNul.unique)!.error, abi.EINVAL);
    },
  );
});

Deno.test("FuseServer LOOKUP replies an entry_out, FuseError becomes -errno, FORGET gets no reply", async () => {
  const fs = fakeFs({
    lookup: (_c, parent, name) =>
      name === "f"
        ? Promise.resolve({ nodeid: 9n, attr })
        : Promise.reject(new FuseError(abi.ENOENT, `no ${name} in ${parent}`)),
  });
  await withServer(fs, async (conn) => {
    const found = request(abi.FUSE_LOOKUP, 1n, new TextEncoder().encode("f\0"));
    const missing = request(abi.FUSE_LOOKUP, 1n, new TextEncoder().encode("g\0"));
    const forget = request(abi.FUSE_FORGET, 9n, new abi.OutWriter(8).u64(1).done());
    const batch = request(
      abi.FUSE_BATCH_FORGET,
      0n,
      new abi.OutWriter(40).u32(2).u32(0).u64(11).u64(1).u64(12).u64(3).done(),
    );
    for (const r of [found, missing, forget, batch]) conn.send(r.bytes);
    await conn.replied(3);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(conn.replies.length, 3, "FORGET and BATCH_FORGET are not answered");
    const e = conn.reply_(found.unique)!;
    assert.equal(e.error, 0);
    assert.equal(e.body.length, abi.ENTRY_OUT_BYTES);
    const v = new DataView(e.body.buffer);
    assert.equal(v.getBigUint64(0, true), 9n);
    assert.equal(v.getBigUint64(40, true), 7n, "attr.ino");
    assert.equal(v.getUint32(40 + 60, true), abi.S_IFREG | 0o644, "attr.mode");
    assert.equal(conn.reply_(missing.unique)!.error, abi.ENOENT);
    assert.deepEqual(fs.forgotten, [9n, 11n, 12n]);
  });
});

Deno.test("FuseServer INTERRUPT ends a waiting SETLKW with EINTR; one for an unknown request is EAGAIN", async () => {
  const locks = new LockTable();
  locks.set(5n, { owner: 1n, flock: false, start: 0n, end: 99n, type: abi.F_WRLCK, pid: 1 });
  const fs = fakeFs({
    setlk: (ctx, nodeid, req, wait) => {
      const ask = { ...req.lock, owner: req.owner, flock: req.flock };
      return wait
        ? locks.setWait(nodeid, ask, ctx.signal)
        : Promise.resolve(locks.set(nodeid, ask));
    },
  });
  await withServer(fs, async (conn) => {
    const lk = new abi.OutWriter(48).u64(1).u64(2).u64(0).u64(10).u32(abi.F_WRLCK).u32(77).u32(0)
      .u32(0).done();
    const wait = request(abi.FUSE_SETLKW, 5n, lk);
    conn.send(wait.bytes);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(conn.replies.length, 1, "the lock waits");
    const stray = request(abi.FUSE_INTERRUPT, 0n, new abi.OutWriter(8).u64(123456).done());
    conn.send(stray.bytes);
    conn.send(request(abi.FUSE_INTERRUPT, 0n, new abi.OutWriter(8).u64(wait.unique).done()).bytes);
    await conn.replied(3);
    assert.equal(conn.reply_(stray.unique)!.error, abi.EAGAIN);
    assert.equal(conn.reply_(wait.unique)!.error, abi.EINTR);
  });
});

Deno.test("FuseServer READDIRPLUS packs what fits and forgets the entries it could not send", async () => {
  const fs = fakeFs({
    readdir: (_c, _n, _fh, _off, max, plus) => {
      assert.equal(plus, true);
      return Promise.resolve(
        Array.from({ length: max + 3 }, (_, i) => ({
          name: `name-${i}`,
          ino: BigInt(100 + i),
          type: abi.DT_REG,
          off: BigInt(i + 1),
          entry: { nodeid: BigInt(1000 + i), attr },
        })),
      );
    },
  });
  await withServer(fs, async (conn) => {
    const body = new abi.OutWriter(40).u64(1).u64(0).u32(1024).pad(20).done();
    const rd = request(abi.FUSE_READDIRPLUS, 1n, body);
    conn.send(rd.bytes);
    await conn.replied(2);
    const got = conn.reply_(rd.unique)!;
    assert.equal(got.error, 0);
    const per = abi.direntBytes("name-0".length, true);
    const sent = Math.floor(1024 / per);
    assert.equal(got.body.length, sent * per);
    const v = new DataView(got.body.buffer);
    assert.equal(v.getBigUint64(0, true), 1000n, "first entry's nodeid");
    assert.equal(v.getBigUint64(abi.ENTRY_OUT_BYTES + 8, true), 1n, "its dirent off");
    const max = Math.floor(1024 / (abi.DIRENTPLUS_BYTES + 8));
    assert.deepEqual(
      fs.forgotten,
      Array.from({ length: max + 3 - sent }, (_, i) => BigInt(1000 + sent + i)),
    );
  });
});
