import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type EngineStack, startEngineStack } from "../role/engine_stack.ts";
import { createLogger } from "../obs/mod.ts";
import { type NfsGateway, startNfsGateway } from "./gateway.ts";
import type { NfsObjectBackend } from "./bucket_fs.ts";
import { NF3DIR, NF3LNK, Nfs3Client } from "./nfs3_client.ts";
import { RpcClient } from "./rpc_client.ts";
import {
  NFS3ERR_ACCES,
  NFS3ERR_BAD_COOKIE,
  NFS3ERR_BADHANDLE,
  NFS3ERR_EXIST,
  NFS3ERR_ISDIR,
  NFS3ERR_NAMETOOLONG,
  NFS3ERR_NOENT,
  NFS3ERR_NOT_SYNC,
  NFS3ERR_NOTDIR,
  NFS3ERR_NOTEMPTY,
  NFS3ERR_NOTSUPP,
  NFS3ERR_STALE,
} from "./errors.ts";
import { MOUNT_PROGRAM, MOUNT_V3 } from "./mount.ts";
import { IPPROTO_TCP, PMAP_PROGRAM, PMAP_V2 } from "./portmap.ts";
import { NFS_PROGRAM } from "./nfs3.ts";
import { AUTH_ERROR, AUTH_TOOWEAK, frameRecord, PROG_MISMATCH } from "./rpc.ts";
import { XdrWriter } from "./xdr.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const TENANT = new Uint8Array(16).fill(0x42);
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

interface Harness {
  gateway: NfsGateway;
  stack: EngineStack;
  client: Nfs3Client;
  rpc: RpcClient;
  root: Uint8Array;
  port: number;
}

async function withNfs(
  fn: (h: Harness) => Promise<void>,
  options: {
    clientAllowed?: (host: string) => boolean;
    writeIdleMs?: number;
    writeHoleBytesMax?: number;
    /** What the gateway sees of the engine (default: the engine itself). */
    backend?: (engine: EngineStack["engine"]) => NfsObjectBackend;
  } = {},
): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-nfs3-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 256 << 20, segmentSizeBytes: 4 << 20 },
  });
  const gateway = startNfsGateway({
    backend: options.backend?.(stack.engine) ?? stack.engine,
    tenantId: TENANT,
    addr: { host: "127.0.0.1", port: 0 },
    logger: quiet,
    clientAllowed: options.clientAllowed,
    writeIdleMs: options.writeIdleMs,
    writeHoleBytesMax: options.writeHoleBytesMax,
  });
  const rpc = await RpcClient.connect("127.0.0.1", gateway.addr.port);
  try {
    const client = new Nfs3Client(rpc);
    const mounted = await client.mount("/");
    await fn({
      gateway,
      stack,
      client,
      rpc,
      root: mounted.fh ?? new Uint8Array(0),
      port: gateway.addr.port,
    });
  } finally {
    await rpc.close();
    await gateway.close();
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

async function bucket(h: Harness, name: string): Promise<Uint8Array> {
  await h.stack.engine.createNamespace(TENANT, name, "bucket");
  const found = await h.client.lookup(h.root, name);
  assert.equal(found.status, 0);
  return found.fh!;
}

async function s3Text(h: Harness, b: string, key: string): Promise<string> {
  const got = await h.stack.engine.getObject(h.stack.engine.namespace(TENANT, b), key);
  return DECODER.decode(new Uint8Array(await new Response(got.body).arrayBuffer()));
}

Deno.test("NFSv3: buckets are top-level directories and S3 objects read as files", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "photos");
    const ns = h.stack.engine.namespace(TENANT, "photos");
    await h.stack.engine.putObject(ns, "2024/jan/a.txt", ENCODER.encode("from s3"));
    await h.stack.engine.putObject(ns, "top.txt", ENCODER.encode("top"));
    assert.deepEqual(await h.client.list(h.root), [".", "..", "photos"]);
    assert.deepEqual(await h.client.list(b, 4096, true), [".", "..", "2024", "top.txt"]);
    const y = await h.client.lookup(b, "2024");
    assert.equal(y.attr!.type, NF3DIR);
    const m = await h.client.lookup(y.fh!, "jan");
    const f = await h.client.lookup(m.fh!, "a.txt");
    assert.equal(f.attr!.size, 7);
    assert.equal(f.attr!.mode, 0o644);
    const read = await h.client.read(f.fh!, 0, 100);
    assert.equal(DECODER.decode(read.data!), "from s3");
    assert.equal(read.eof, true);
    const part = await h.client.read(f.fh!, 5, 1);
    assert.deepEqual([DECODER.decode(part.data!), part.eof], ["s", false]);
    assert.equal((await h.client.lookup(b, "nope")).status, NFS3ERR_NOENT);
    assert.equal((await h.client.lookup(h.root, "nobucket")).status, NFS3ERR_NOENT);
    // ".." of a bucket is the root.
    const up = await h.client.lookup(b, "..");
    assert.deepEqual(up.fh, h.root);
    // A file is not a directory.
    assert.equal((await h.client.lookup(f.fh!, "x")).status, NFS3ERR_NOTDIR);
    // Handles from elsewhere are refused cleanly.
    assert.equal((await h.client.getattr(new Uint8Array([9, 9, 9]))).status, NFS3ERR_BADHANDLE);
  });
});

Deno.test("NFSv3: files written over NFS are objects with an MD5 ETag, and COMMIT's verifier is stable", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "data");
    const made = await h.client.create(b, "f.bin", { mode: 1, attr: { mode: 0o600 } });
    assert.equal(made.status, 0);
    assert.equal(made.attr!.mode, 0o600);
    assert.ok(made.dirWcc.after !== null);
    const fh = made.fh!;
    const body = new Uint8Array(3 << 20);
    crypto.getRandomValues(body.subarray(0, 65536));
    for (let i = 65536; i < body.length; i++) body[i] = i & 0xff;
    // Unstable writes, sent all at once and out of order: replies come as each finishes.
    const chunk = 256 << 10;
    const writes = [];
    for (let off = body.length - chunk; off >= 0; off -= chunk) {
      writes.push(h.client.write(fh, off, body.subarray(off, off + chunk), 0));
    }
    const replies = await Promise.all(writes);
    for (const w of replies) {
      assert.equal(w.status, 0);
      assert.equal(w.count, chunk);
      assert.equal(w.committed, 0);
    }
    const verifier = replies[0]!.verifier!;
    assert.ok(replies.every((w) => w.verifier!.every((v, i) => v === verifier[i])));
    // Size shows before the commit.
    assert.equal((await h.client.getattr(fh)).attr!.size, body.length);
    const committed = await h.client.commit(fh);
    assert.equal(committed.status, 0);
    assert.deepEqual(committed.verifier, verifier);
    const ns = h.stack.engine.namespace(TENANT, "data");
    const head = await h.stack.engine.headObject(ns, "f.bin");
    assert.equal(head.size, body.length);
    assert.equal(head.etag, createHash("md5").update(body).digest("hex"));
    assert.equal(head.metadata["mode"], String(0o100600));
    // Read back over NFS in pieces.
    const back = new Uint8Array(body.length);
    for (let off = 0; off < body.length; off += 1 << 20) {
      const r = await h.client.read(fh, off, 1 << 20);
      back.set(r.data!, off);
    }
    assert.deepEqual(back, body);
    // Reads in any order, behind, ahead and overlapping what a stream gave, read right.
    for (
      const [off, n] of [[2 << 20, 4096], [0, 100], [50, 1 << 20], [10, 10], [3 << 20, 7], [
        (3 << 20) - 5,
        64,
      ]]
    ) {
      const r = await h.client.read(fh, off!, n!);
      assert.deepEqual(
        r.data,
        body.subarray(off!, Math.min(off! + n!, body.length)),
        `read ${off}+${n}`,
      );
      assert.equal(r.eof, off! + n! >= body.length);
    }
    // A small overwrite in the middle and a FILE_SYNC write: durable when answered.
    const sync = await h.client.write(fh, 100, ENCODER.encode("PATCH"), 2);
    assert.equal(sync.committed, 2);
    assert.equal(sync.wcc.before!.size, body.length);
    const patched = await h.stack.engine.getObject(ns, "f.bin", { range: { start: 98, end: 107 } });
    const bytes = new Uint8Array(await new Response(patched.body).arrayBuffer());
    assert.deepEqual([...bytes], [
      ...body.subarray(98, 100),
      ...ENCODER.encode("PATCH"),
      ...body.subarray(105, 108),
    ]);
  });
});

Deno.test("NFSv3: unstable writes left without a COMMIT are stored once idle", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "idle");
    const fh = (await h.client.create(b, "x", { mode: 0, attr: {} })).fh!;
    await h.client.write(fh, 0, ENCODER.encode("later"), 0);
    const deadline = Date.now() + 5_000;
    let text = "";
    while (Date.now() < deadline) {
      text = await s3Text(h, "idle", "x");
      if (text === "later") break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(text, "later");
  }, { writeIdleMs: 100 });
});

Deno.test("NFSv3: create modes, mkdir, symlink, remove, rmdir, rename and refused operations", async (t) => {
  await withNfs(async (h) => {
    const b = await bucket(h, "tree");
    await t.step("exclusive CREATE is idempotent with its verifier only", async () => {
      const v1 = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
      const first = await h.client.create(b, "lock", { mode: 2, verifier: v1 });
      assert.equal(first.status, 0);
      const retry = await h.client.create(b, "lock", { mode: 2, verifier: v1 });
      assert.equal(retry.status, 0);
      assert.deepEqual(retry.fh, first.fh);
      const other = await h.client.create(b, "lock", { mode: 2, verifier: new Uint8Array(8) });
      assert.equal(other.status, NFS3ERR_EXIST);
      assert.equal((await h.client.create(b, "lock", { mode: 1, attr: {} })).status, NFS3ERR_EXIST);
      // UNCHECKED on an existing file applies its attributes (O_TRUNC).
      await h.client.write(first.fh!, 0, ENCODER.encode("abc"), 2);
      const trunc = await h.client.create(b, "lock", { mode: 0, attr: { size: 0 } });
      assert.equal(trunc.status, 0);
      assert.equal(trunc.attr!.size, 0);
    });
    await t.step(
      "mkdir makes a directory an S3 listing shows, and refuses a taken name",
      async () => {
        const d = await h.client.mkdir(b, "docs", { mode: 0o750 });
        assert.equal(d.status, 0);
        assert.equal(d.attr!.type, NF3DIR);
        assert.equal(d.attr!.mode, 0o750);
        assert.equal((await h.client.mkdir(b, "docs")).status, NFS3ERR_EXIST);
        assert.equal((await h.client.mkdir(b, "lock")).status, NFS3ERR_EXIST);
        const listed = await h.stack.engine.listObjects(h.stack.engine.namespace(TENANT, "tree"), {
          delimiter: "/",
        });
        assert.deepEqual(listed.commonPrefixes, ["docs/"]);
        const deep = await h.client.mkdir(d.fh!, "a");
        const deeper = await h.client.mkdir(deep.fh!, "b");
        assert.equal(deeper.status, 0);
        assert.equal((await h.client.mkdir(b, "x".repeat(256))).status, NFS3ERR_NAMETOOLONG);
      },
    );
    await t.step("symlinks store their target and read back", async () => {
      const s = await h.client.symlink(b, "ln", "docs/a");
      assert.equal(s.status, 0);
      assert.equal(s.attr!.type, NF3LNK);
      assert.deepEqual(await h.client.readlink(s.fh!), { status: 0, target: "docs/a" });
      const l = await h.client.lookup(b, "ln");
      assert.equal(l.attr!.type, NF3LNK);
      assert.equal((await h.client.readlink(b)).status, 22);
    });
    await t.step("MKNOD is refused with NFS3ERR_NOTSUPP and changes nothing", async () => {
      assert.equal((await h.client.mknod(b, "fifo", 7)).status, NFS3ERR_NOTSUPP);
      assert.equal((await h.client.mknod(b, "dev", 4)).status, NFS3ERR_NOTSUPP);
      assert.equal((await h.client.lookup(b, "fifo")).status, NFS3ERR_NOENT);
    });
    await t.step("rename moves files and directories across directories", async () => {
      const docs = (await h.client.lookup(b, "docs")).fh!;
      const a = (await h.client.lookup(docs, "a")).fh!;
      const f = await h.client.create(a, "note.txt", { mode: 1, attr: {} });
      await h.client.write(f.fh!, 0, ENCODER.encode("moving"), 2);
      const mv = await h.client.rename(a, "note.txt", b, "note2.txt");
      assert.equal(mv.status, 0);
      assert.ok(mv.fromWcc.after !== null && mv.toWcc.after !== null);
      assert.equal((await h.client.lookup(a, "note.txt")).status, NFS3ERR_NOENT);
      assert.equal(await s3Text(h, "tree", "note2.txt"), "moving");
      // The old handle is stale now.
      assert.equal((await h.client.getattr(f.fh!)).status, NFS3ERR_STALE);
      // A directory with content moves whole, to another bucket too.
      const other = await bucket(h, "other");
      assert.equal((await h.client.rename(b, "docs", other, "moved")).status, 0);
      assert.equal((await h.client.lookup(b, "docs")).status, NFS3ERR_NOENT);
      const moved = (await h.client.lookup(other, "moved")).fh!;
      assert.deepEqual(await h.client.list(moved), [".", "..", "a"]);
      const ma = (await h.client.lookup(moved, "a")).fh!;
      assert.deepEqual(await h.client.list(ma), [".", "..", "b"]);
      // Into itself: refused.
      assert.equal((await h.client.rename(other, "moved", ma, "x")).status, 22);
      // A file onto a directory: refused.
      assert.equal((await h.client.rename(b, "note2.txt", other, "moved")).status, NFS3ERR_ISDIR);
    });
    await t.step("remove and rmdir keep POSIX rules; an emptied directory stays", async () => {
      const other = (await h.client.lookup(h.root, "other")).fh!;
      const moved = (await h.client.lookup(other, "moved")).fh!;
      assert.equal((await h.client.rmdir(other, "moved")).status, NFS3ERR_NOTEMPTY);
      assert.equal((await h.client.remove(other, "moved")).status, NFS3ERR_ISDIR);
      assert.equal((await h.client.rmdir(b, "lock")).status, NFS3ERR_NOTDIR);
      const d = await h.client.mkdir(moved, "tmp");
      const f = await h.client.create(d.fh!, "only", { mode: 1, attr: {} });
      assert.equal(f.status, 0);
      const rm = await h.client.remove(d.fh!, "only");
      assert.equal(rm.status, 0);
      assert.ok(rm.wcc.before !== null && rm.wcc.after !== null);
      assert.deepEqual(await h.client.list(d.fh!), [".", ".."]);
      assert.equal((await h.client.remove(d.fh!, "only")).status, NFS3ERR_NOENT);
      assert.equal((await h.client.rmdir(moved, "tmp")).status, 0);
      assert.equal((await h.client.lookup(moved, "tmp")).status, NFS3ERR_NOENT);
    });
    await t.step("a top-level mkdir makes a bucket and rmdir removes an empty one", async () => {
      const made = await h.client.mkdir(h.root, "fresh-bucket");
      assert.equal(made.status, 0);
      const ns = await h.stack.engine.getNamespace(
        h.stack.engine.namespace(TENANT, "fresh-bucket"),
      );
      assert.equal(ns.kind, "bucket");
      assert.equal((await h.client.mkdir(h.root, "Bad_Name")).status, 22);
      assert.equal(
        (await h.client.create(h.root, "file", { mode: 1, attr: {} })).status,
        NFS3ERR_ACCES,
      );
      assert.equal((await h.client.rmdir(h.root, "fresh-bucket")).status, 0);
      assert.equal((await h.client.lookup(h.root, "fresh-bucket")).status, NFS3ERR_NOENT);
    });
  });
});

Deno.test("NFSv3: SETATTR truncates, extends, chmods and honours its ctime guard", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "attrs");
    const fh = (await h.client.create(b, "f", { mode: 1, attr: {} })).fh!;
    await h.client.write(fh, 0, ENCODER.encode("0123456789"), 2);
    const cut = await h.client.setattr(fh, { size: 4 });
    assert.equal(cut.status, 0);
    assert.equal(cut.wcc.before!.size, 10);
    assert.equal(cut.wcc.after!.size, 4);
    assert.equal(await s3Text(h, "attrs", "f"), "0123");
    // A hole past the largest one allowed is refused, whatever it is made by.
    assert.equal((await h.client.setattr(fh, { size: 4 + (1 << 20) + 1 })).status, 27);
    assert.equal((await h.client.write(fh, 2 << 20, new Uint8Array(1), 0)).status, 27);
    // So is a size given at creation, and one within the limit is zeros.
    assert.equal(
      (await h.client.create(b, "huge", { mode: 0, attr: { size: 2 ** 40 } })).status,
      27,
    );
    const sized = await h.client.create(b, "sized", { mode: 1, attr: { size: 5000 } });
    assert.equal(sized.attr!.size, 5000);
    assert.deepEqual((await h.client.read(sized.fh!, 4990, 100)).data, new Uint8Array(10));
    // Sparse extension reads as zeros.
    assert.equal((await h.client.setattr(fh, { size: 8 })).status, 0);
    assert.deepEqual([...(await h.client.read(fh, 0, 100)).data!], [48, 49, 50, 51, 0, 0, 0, 0]);
    const chmod = await h.client.setattr(fh, {
      mode: 0o640,
      uid: 1000,
      gid: 100,
      mtime: 1_700_000_000_000,
    });
    assert.equal(chmod.status, 0);
    assert.equal(chmod.wcc.after!.mode, 0o640);
    assert.equal(chmod.wcc.after!.uid, 1000);
    assert.equal(chmod.wcc.after!.mtime, 1_700_000_000_000);
    const ctime = chmod.wcc.after!.ctime;
    assert.equal(
      (await h.client.setattr(fh, { mode: 0o600 }, ctime - 5000)).status,
      NFS3ERR_NOT_SYNC,
    );
    assert.equal((await h.client.setattr(fh, { mode: 0o600 }, ctime)).status, 0);
    // Directories: mode on a marker; buckets keep theirs.
    const d = (await h.client.mkdir(b, "d")).fh!;
    assert.equal((await h.client.setattr(d, { mode: 0o700 })).wcc.after!.mode, 0o700);
    assert.equal((await h.client.setattr(b, { mode: 0o700 })).status, 1);
  }, { writeHoleBytesMax: 1 << 20 });
});

Deno.test("NFSv3: ACCESS follows AUTH_SYS uid/gid and the mode bits", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "perm");
    const fh =
      (await h.client.create(b, "mine", { mode: 1, attr: { mode: 0o640, uid: 1000, gid: 50 } }))
        .fh!;
    const all = 0x3f;
    assert.equal((await h.client.access(fh, all)).granted, 0x01 | 0x04 | 0x08);
    const as = (uid: number, gid: number, gids: number[] = []) => {
      h.rpc.cred = { stamp: 1, machineName: "t", uid, gid, gids };
    };
    as(1000, 1);
    assert.equal((await h.client.access(fh, all)).granted, 0x01 | 0x04 | 0x08);
    as(2000, 7, [50]);
    assert.equal((await h.client.access(fh, all)).granted, 0x01);
    as(2000, 7);
    assert.equal((await h.client.access(fh, all)).granted, 0);
    assert.equal((await h.client.read(fh, 0, 10)).status, NFS3ERR_ACCES);
    assert.equal((await h.client.write(fh, 0, new Uint8Array(1), 2)).status, NFS3ERR_ACCES);
    // The bucket is root's 0755: others may not create in it.
    assert.equal((await h.client.create(b, "x", { mode: 1, attr: {} })).status, NFS3ERR_ACCES);
    // AUTH_NONE is too weak for anything but NULL.
    const none = await h.rpc.call(NFS_PROGRAM, 3, 1, new XdrWriter().opaque(fh).finish(), {
      cred: null,
    });
    assert.deepEqual(none, { kind: "denied", stat: AUTH_ERROR, authStat: AUTH_TOOWEAK });
  });
});

Deno.test("NFSv3: READDIR pages with cookies, and a cookie of another start is refused", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "many");
    const ns = h.stack.engine.namespace(TENANT, "many");
    const expected = [];
    for (let i = 0; i < 150; i++) {
      const name = `file-${String(i).padStart(3, "0")}`;
      expected.push(name);
      await h.stack.engine.putObject(ns, name, new Uint8Array(1));
    }
    for (let i = 0; i < 5; i++) {
      await h.stack.engine.putObject(ns, `sub${i}/x`, new Uint8Array(1));
      expected.push(`sub${i}`);
    }
    // A file and a directory of the same name: the directory wins.
    await h.stack.engine.putObject(ns, "sub0", new Uint8Array(1));
    expected.sort();
    const small = await h.client.list(b, 1024);
    assert.deepEqual(small, [".", "..", ...expected]);
    const plus = await h.client.list(b, 2048, true);
    assert.deepEqual(plus, [".", "..", ...expected]);
    const page = await h.client.readdir(b, 0n, new Uint8Array(8), 1024, true);
    assert.ok(!page.eof);
    assert.ok(page.entries.every((e) => e.attr !== null && e.fh !== undefined));
    const wrong = await h.client.readdir(b, page.entries.at(-1)!.cookie, new Uint8Array(8), 1024);
    assert.equal(wrong.status, NFS3ERR_BAD_COOKIE);
    const foreign = await h.client.readdir(b, 999_999n, page.verifier!, 1024);
    assert.equal(foreign.status, NFS3ERR_BAD_COOKIE);
    // fileids are stable across listings and lookups.
    const x = await h.client.lookup(b, "file-000");
    const listed = page.entries.find((e) => e.name === "file-000")!;
    assert.equal(listed.fileid, x.attr!.fileid);
  });
});

Deno.test("NFSv3: hard links are names of one file, for NFS and as S3 objects", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "links");
    const ns = h.stack.engine.namespace(TENANT, "links");
    const d = (await h.client.mkdir(b, "sub")).fh!;
    const f = await h.client.create(b, "a", { mode: 0, attr: {} });
    assert.equal((await h.client.write(f.fh!, 0, ENCODER.encode("first"), 2)).status, 0);
    assert.equal((await h.client.link(f.fh!, d, "b")).status, 0);
    assert.equal((await h.client.link(f.fh!, d, "b")).status, NFS3ERR_EXIST);
    assert.equal((await h.client.link(b, d, "dirlink")).status, NFS3ERR_ISDIR);
    const a1 = (await h.client.getattr(f.fh!)).attr!;
    const l = await h.client.lookup(d, "b");
    assert.equal(a1.nlink, 2);
    assert.equal(l.attr!.nlink, 2);
    assert.equal(l.attr!.fileid, a1.fileid, "one file: one fileid under both names");
    // A write through one name (unstable, then COMMIT) reads through the other.
    assert.equal((await h.client.write(l.fh!, 5, ENCODER.encode(" and second"), 0)).status, 0);
    assert.equal((await h.client.commit(l.fh!)).status, 0);
    const viaA = await h.client.read(f.fh!, 0, 100);
    assert.equal(DECODER.decode(viaA.data), "first and second");
    // Attributes are the file's too.
    assert.equal((await h.client.setattr(f.fh!, { mode: 0o600 })).status, 0);
    assert.equal((await h.client.getattr(l.fh!)).attr!.mode, 0o600);
    // S3 sees each name as an object with the content.
    assert.equal(await s3Text(h, "links", "a"), "first and second");
    assert.equal(await s3Text(h, "links", "sub/b"), "first and second");
    // Unlinking one name keeps the other, with one link left.
    assert.equal((await h.client.remove(b, "a")).status, 0);
    assert.equal((await h.client.lookup(b, "a")).status, NFS3ERR_NOENT);
    const left = await h.client.lookup(d, "b");
    assert.equal(left.attr!.nlink, 1);
    assert.equal(DECODER.decode((await h.client.read(left.fh!, 0, 100)).data), "first and second");
    // A renamed link keeps its links; the other name learns the new one.
    assert.equal((await h.client.link(left.fh!, b, "c")).status, 0);
    assert.equal((await h.client.rename(d, "b", b, "b2")).status, 0);
    const c = await h.client.lookup(b, "c");
    assert.equal(c.attr!.nlink, 2);
    assert.equal((await h.client.write(c.fh!, 0, ENCODER.encode("FIRST"), 2)).status, 0);
    const b2 = await h.client.lookup(b, "b2");
    assert.equal(DECODER.decode((await h.client.read(b2.fh!, 0, 5)).data), "FIRST");
    assert.equal(await h.stack.engine.headObject(ns, "sub/b").catch(() => null), null);
    // Renaming a name over another name of the same file changes nothing.
    assert.equal((await h.client.rename(b, "c", b, "b2")).status, 0);
    assert.equal((await h.client.lookup(b, "c")).attr!.nlink, 2);
    assert.equal((await h.client.lookup(b, "b2")).attr!.nlink, 2);
  });
});

Deno.test("NFSv3: RENAME moves a large file's chunk references, not its bytes", async () => {
  // Every byte the gateway reads or stores through the engine, counted.
  const moved = { read: 0, stored: 0 };
  const counting = (engine: EngineStack["engine"]): NfsObjectBackend =>
    new Proxy(engine, {
      get(target, name, receiver) {
        const value = Reflect.get(target, name, receiver);
        if (typeof value !== "function") return value;
        if (name === "getObject") {
          return async (...args: Parameters<typeof engine.getObject>) => {
            const got = await engine.getObject(...args);
            moved.read += got.contentLength;
            return got;
          };
        }
        if (name === "putObject") {
          return (...args: Parameters<typeof engine.putObject>) => {
            const body = args[2];
            if (body instanceof Uint8Array) moved.stored += body.length;
            else moved.stored += Number.MAX_SAFE_INTEGER; // a stream: data
            return engine.putObject(...args);
          };
        }
        return value.bind(target);
      },
    });
  await withNfs(async (h) => {
    const b = await bucket(h, "moves");
    const ns = h.stack.engine.namespace(TENANT, "moves");
    const big = crypto.getRandomValues(new Uint8Array(8 << 20).subarray(0, 65536));
    const body = new Uint8Array(8 << 20);
    for (let i = 0; i < body.length; i += big.length) body.set(big, i);
    await h.stack.engine.putObject(ns, "big.bin", body);
    const sub = (await h.client.mkdir(b, "dir")).fh!;
    moved.read = moved.stored = 0;
    assert.equal((await h.client.rename(b, "big.bin", sub, "moved.bin")).status, 0);
    // Moving 8 MiB read no byte of it and stored none (a directory marker at most).
    assert.deepEqual(moved, { read: 0, stored: 0 });
    const found = await h.client.lookup(sub, "moved.bin");
    assert.equal(found.attr!.size, body.length);
    const got = await h.stack.engine.getObject(ns, "dir/moved.bin");
    const bytes = new Uint8Array(await new Response(got.body).arrayBuffer());
    assert.equal(
      createHash("sha256").update(bytes).digest("hex"),
      createHash("sha256").update(body).digest("hex"),
    );
  }, { backend: counting });
});

Deno.test("NFSv3: FSINFO, FSSTAT and PATHCONF report the server's real limits", async () => {
  await withNfs(async (h) => {
    const info = await h.client.fsinfo(h.root);
    assert.equal(info.status, 0);
    assert.equal(info.rtmax, 1 << 20);
    assert.equal(info.wtmax, 1 << 20);
    assert.equal(info.maxfilesize, 5 * 1024 ** 4);
    assert.equal(info.timeDeltaMs, 1);
    const b = await bucket(h, "space");
    await h.stack.engine.putObject(
      h.stack.engine.namespace(TENANT, "space"),
      "x",
      new Uint8Array(1000),
    );
    const stat = await h.client.fsstat(b);
    assert.equal(stat.status, 0);
    assert.ok(stat.tbytes! >= 1000);
    assert.deepEqual(await h.client.pathconf(b), {
      status: 0,
      linkmax: 64,
      nameMax: 255,
      noTrunc: true,
      chownRestricted: true,
      caseInsensitive: false,
      casePreserving: true,
    });
  });
});

Deno.test("MOUNT and portmap on the NFS port: MNT, EXPORT, DUMP, UMNT, GETPORT, DUMP", async () => {
  await withNfs(async (h) => {
    await bucket(h, "mnt");
    const m = await h.client.mount("/mnt");
    assert.equal(m.status, 0);
    assert.deepEqual(m.flavors, [1]);
    assert.equal((await h.client.getattr(m.fh!)).attr!.type, NF3DIR);
    assert.equal((await h.client.mount("/nope")).status, 2);
    const exp = await h.rpc.call(MOUNT_PROGRAM, MOUNT_V3, 5, new Uint8Array(0), { cred: null });
    assert.equal(exp.kind, "success");
    const dump = await h.rpc.call(MOUNT_PROGRAM, MOUNT_V3, 2);
    if (dump.kind !== "success") throw new Error("dump");
    assert.equal(dump.results.bool(), true);
    assert.equal(dump.results.string(255), "127.0.0.1");
    const getport = (prog: number, vers: number) =>
      h.rpc.call(
        PMAP_PROGRAM,
        PMAP_V2,
        3,
        new XdrWriter().u32(prog).u32(vers).u32(IPPROTO_TCP).u32(0).finish(),
        {
          cred: null,
        },
      );
    for (
      const [prog, vers, port] of [[100003, 3, h.port], [100005, 3, h.port], [100003, 4, h.port], [
        100021,
        4,
        0,
      ]]
    ) {
      const got = await getport(prog!, vers!);
      if (got.kind !== "success") throw new Error("getport");
      assert.equal(got.results.u32(), port);
    }
    const pd = await h.rpc.call(PMAP_PROGRAM, PMAP_V2, 4, new Uint8Array(0), { cred: null });
    if (pd.kind !== "success") throw new Error("pmap dump");
    let entries = 0;
    while (pd.results.bool()) {
      pd.results.u32();
      pd.results.u32();
      assert.equal(pd.results.u32(), IPPROTO_TCP);
      assert.equal(pd.results.u32(), h.port);
      entries++;
    }
    assert.equal(entries, 4);
    // rpcbind v3/v4 and NFSv4 answer PROG_MISMATCH, so clients fall back.
    assert.deepEqual(await h.rpc.call(PMAP_PROGRAM, 4, 0, new Uint8Array(0), { cred: null }), {
      kind: "accepted",
      stat: PROG_MISMATCH,
      low: 2,
      high: 2,
    });
    // NFSv4: NULL answers; a COMPOUND of v4.0 or an unknown minor version is refused with its
    // tag echoed (4.1 and 4.2: nfs4_test.ts).
    assert.equal(
      (await h.rpc.call(NFS_PROGRAM, 4, 0, new Uint8Array(0), { cred: null })).kind,
      "success",
    );
    for (const minor of [0, 9]) {
      const compound = new XdrWriter().string("tag!").u32(minor).u32(1).u32(53).finish();
      const v4 = await h.rpc.call(NFS_PROGRAM, 4, 1, compound);
      if (v4.kind !== "success") throw new Error("compound");
      assert.equal(v4.results.u32(), 10021 /* NFS4ERR_MINOR_VERS_MISMATCH */);
      assert.equal(v4.results.string(16), "tag!");
      assert.equal(v4.results.u32(), 0);
    }
    const garbage4 = await h.rpc.call(NFS_PROGRAM, 4, 1, new XdrWriter().u32(1 << 20).finish());
    assert.deepEqual(garbage4, { kind: "accepted", stat: 4 });
    assert.deepEqual(await h.rpc.call(NFS_PROGRAM, 5, 0, new Uint8Array(0)), {
      kind: "accepted",
      stat: PROG_MISMATCH,
      low: 3,
      high: 4,
    });
    const umnt = await h.rpc.call(
      MOUNT_PROGRAM,
      MOUNT_V3,
      3,
      new XdrWriter().string("/mnt").finish(),
    );
    assert.equal(umnt.kind, "success");
  });
});

Deno.test("a client outside the allowed networks gets NFS3ERR_ACCES and MNT3ERR_ACCES", async () => {
  await withNfs(async (h) => {
    assert.equal((await h.client.mount("/")).status, 13);
    // A handle made elsewhere still gets no data.
    const root = new Uint8Array([1, 0, 0, 0]);
    assert.equal((await h.client.getattr(root)).status, NFS3ERR_ACCES);
    assert.equal((await h.client.readdir(root, 0n, new Uint8Array(8), 4096)).status, NFS3ERR_ACCES);
  }, { clientAllowed: () => false });
});

Deno.test("the RPC server closes a connection that sends an oversized record, and serves others", async () => {
  await withNfs(async (h) => {
    const bad = await RpcClient.connect("127.0.0.1", h.port);
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, 0x8000_0000 | (64 << 20));
    await bad.sendRaw(head);
    assert.equal(await bad.waitClosed(5_000), true);
    await bad.close();
    // Garbage args of a real procedure: GARBAGE_ARGS, and the connection stays.
    const garbage = await h.rpc.call(NFS_PROGRAM, 3, 1, new Uint8Array([0, 0, 0, 200]));
    assert.deepEqual(garbage, { kind: "accepted", stat: 4 });
    await h.rpc.sendRaw(frameRecord(new Uint8Array(3)));
    assert.equal((await h.client.getattr(h.root)).status, 0);
  });
});

Deno.test("KISEKI_PORTMAP_ADDR: a second listener answers GETPORT with the NFS port", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-nfs3-pmap-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 64 << 20, segmentSizeBytes: 4 << 20 },
  });
  const gateway = startNfsGateway({
    backend: stack.engine,
    tenantId: TENANT,
    addr: { host: "127.0.0.1", port: 0 },
    portmapAddr: { host: "127.0.0.1", port: 0 },
    logger: quiet,
  });
  const rpc = await RpcClient.connect("127.0.0.1", gateway.portmapAddr!.port, null);
  try {
    const args = new XdrWriter().u32(MOUNT_PROGRAM).u32(3).u32(IPPROTO_TCP).u32(0).finish();
    const got = await rpc.call(PMAP_PROGRAM, PMAP_V2, 3, args);
    if (got.kind !== "success") throw new Error("getport");
    assert.equal(got.results.u32(), gateway.addr.port);
    // Only the portmapper is served there.
    const nfs = await rpc.call(NFS_PROGRAM, 3, 0);
    assert.deepEqual(nfs, { kind: "accepted", stat: 1 /* PROG_UNAVAIL */ });
  } finally {
    await rpc.close();
    await gateway.close();
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("a retransmitted REMOVE or CREATE gets its first reply from the duplicate request cache", async () => {
  await withNfs(async (h) => {
    const b = await bucket(h, "drc");
    const create = new XdrWriter().opaque(b).string("once").u32(1)
      .bool(false).bool(false).bool(false).bool(false).u32(0).u32(0).finish();
    const first = await h.rpc.call(NFS_PROGRAM, 3, 8, create, { xid: 0x5eed });
    const again = await h.rpc.call(NFS_PROGRAM, 3, 8, create, { xid: 0x5eed });
    if (first.kind !== "success" || again.kind !== "success") throw new Error("create");
    assert.equal(first.results.u32(), 0);
    // A GUARDED create done twice would be NFS3ERR_EXIST: the cache answered instead.
    assert.equal(again.results.u32(), 0);
    const remove = new XdrWriter().opaque(b).string("once").finish();
    const r1 = await h.rpc.call(NFS_PROGRAM, 3, 12, remove, { xid: 0x5eee });
    const r2 = await h.rpc.call(NFS_PROGRAM, 3, 12, remove, { xid: 0x5eee });
    if (r1.kind !== "success" || r2.kind !== "success") throw new Error("remove");
    assert.equal(r1.results.u32(), 0);
    assert.equal(r2.results.u32(), 0);
    // A new xid is a new call.
    const r3 = await h.rpc.call(NFS_PROGRAM, 3, 12, remove, { xid: 0x5eef });
    if (r3.kind !== "success") throw new Error("remove");
    assert.equal(r3.results.u32(), NFS3ERR_NOENT);
    assert.ok(h.gateway.stats().drcHits >= 2);
  });
});
