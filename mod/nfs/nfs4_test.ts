import assert from "node:assert/strict";
import { type EngineStack, startEngineStack } from "../role/engine_stack.ts";
import { createLogger } from "../obs/mod.ts";
import { type NfsGateway, startNfsGateway } from "./gateway.ts";
import { RpcClient } from "./rpc_client.ts";
import {
  attrRequest,
  createSession,
  exchangeId,
  Nfs4Client,
  op,
  open,
  sequence,
  type Stateid4,
  writeStateid,
} from "./nfs4_client.ts";
import * as C from "./nfs4_const.ts";
import type { ClientRecordStore } from "./nfs4_state.ts";
import { XdrReader, XdrWriter } from "./xdr.ts";

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
const TENANT = new Uint8Array(16).fill(0x44);
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

interface Harness {
  gateway: NfsGateway;
  stack: EngineStack;
  rpc: RpcClient;
  c: Nfs4Client;
}

/** Client records in memory, shared by the gateways of one test (a restart keeps them). */
class MemoryRecords implements ClientRecordStore {
  readonly records = new Set<string>();
  load() {
    return Promise.resolve([...this.records]);
  }
  save(r: string) {
    this.records.add(r);
    return Promise.resolve();
  }
  remove(r: string) {
    this.records.delete(r);
    return Promise.resolve();
  }
}

async function withStack(fn: (stack: EngineStack) => Promise<void>): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-nfs4-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 256 << 20, segmentSizeBytes: 4 << 20 },
  });
  try {
    await stack.engine.createNamespace(TENANT, "bkt4", "bucket");
    await fn(stack);
  } finally {
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

async function withGateway(
  stack: EngineStack,
  fn: (h: Harness) => Promise<void>,
  options: {
    records?: ClientRecordStore;
    graceMs?: number;
    leaseMs?: number;
    clientAllowed?: (host: string) => boolean;
  } = {},
): Promise<void> {
  const gateway = startNfsGateway({
    backend: stack.engine,
    tenantId: TENANT,
    addr: { host: "127.0.0.1", port: 0 },
    logger: quiet,
    nfs4ClientRecords: options.records,
    nfs4GraceMs: options.graceMs,
    nfs4LeaseMs: options.leaseMs,
    clientAllowed: options.clientAllowed,
  });
  const rpc = await RpcClient.connect("127.0.0.1", gateway.addr.port);
  try {
    await fn({ gateway, stack, rpc, c: new Nfs4Client(rpc) });
  } finally {
    await rpc.close();
    await gateway.close();
  }
}

async function withNfs4(fn: (h: Harness) => Promise<void>): Promise<void> {
  await withStack((stack) => withGateway(stack, fn));
}

const putroot = op(C.OP_PUTROOTFH);
const lookup = (name: string) => op(C.OP_LOOKUP, (w) => w.string(name));
const getfh = op(C.OP_GETFH);
const putfh = (fh: Uint8Array) => op(C.OP_PUTFH, (w) => w.opaque(fh));
const savefh = op(C.OP_SAVEFH);
const close = (s: Stateid4) => op(C.OP_CLOSE, (w) => writeStateid(w.u32(0), s));
const write = (s: Stateid4, offset: number, data: Uint8Array, stable = C.FILE_SYNC4) =>
  op(C.OP_WRITE, (w) => {
    writeStateid(w, s);
    w.u64(offset).u32(stable).opaque(data);
  });
const read = (s: Stateid4, offset: number, count: number) =>
  op(C.OP_READ, (w) => {
    writeStateid(w, s);
    w.u64(offset).u32(count);
  });
const lock = (
  type: number,
  offset: bigint,
  length: bigint,
  locker: { open: Stateid4; owner: string } | { lock: Stateid4 },
) =>
  op(C.OP_LOCK, (w) => {
    w.u32(type).bool(false).u64(offset).u64(length);
    if ("open" in locker) {
      w.bool(true).u32(0);
      writeStateid(w, locker.open);
      w.u32(0).u64(0n).string(locker.owner);
    } else {
      w.bool(false);
      writeStateid(w, locker.lock);
      w.u32(0);
    }
  });
const ANON: Stateid4 = { seqid: 0, other: new Uint8Array(12) };

/** The statuses of a reply's results. */
const statuses = (r: { results: { status: number }[] }) => r.results.map((x) => x.status);

async function openFile(
  h: Harness,
  name: string,
  options: { access?: number; deny?: number; owner?: string; create?: boolean } = {},
) {
  const r = await h.c.call([putroot, lookup("bkt4"), open(name, options), getfh]);
  return r;
}

Deno.test("COMPOUND answers v4.0 and unknown minor versions NFS4ERR_MINOR_VERS_MISMATCH", async () => {
  await withNfs4(async (h) => {
    for (const minor of [0, 3, 0xffff_ffff]) {
      const r = await h.c.compound([putroot], { minor, tag: "probe" });
      assert.equal(r.status, C.NFS4ERR_MINOR_VERS_MISMATCH);
      assert.equal(r.tag, "probe");
      assert.equal(r.results.length, 0);
    }
  });
});

Deno.test("COMPOUND refuses operations outside a session, misplaced SEQUENCE and unknown ops", async () => {
  await withNfs4(async (h) => {
    let r = await h.c.compound([putroot, getfh]);
    assert.deepEqual(statuses(r), [C.NFS4ERR_OP_NOT_IN_SESSION]);
    r = await h.c.compound([exchangeId("x", new Uint8Array(8)), putroot]);
    assert.deepEqual(statuses(r), [C.NFS4ERR_NOT_ONLY_OP]);
    await h.c.establish("ops-client");
    r = await h.c.call([putroot, sequence(h.c.session!, 9, 1)]);
    assert.deepEqual(statuses(r), [0, 0, C.NFS4ERR_SEQUENCE_POS]);
    // Numbers no minor version defines are OP_ILLEGAL, with resop OP_ILLEGAL.
    for (const n of [0, 2, 72, 9999]) {
      r = await h.c.call([op(n)]);
      assert.equal(r.status, C.NFS4ERR_OP_ILLEGAL);
      assert.equal(r.results[1]!.op, C.OP_ILLEGAL);
    }
    // 4.2 operations are illegal in 4.1, and answered in 4.2.
    r = await h.c.call([putroot, op(C.OP_SEEK, (w) => writeStateid(w, ANON).u64(0).u32(0))]);
    assert.equal(r.results[2]!.op, C.OP_ILLEGAL);
    r = await h.c.call([putroot, op(C.OP_SEEK, (w) => writeStateid(w, ANON).u64(0).u32(0))], {
      minor: 2,
    });
    assert.equal(r.results[2]!.op, C.OP_SEEK);
    assert.equal(r.results[2]!.status, C.NFS4ERR_ISDIR);
    // Operations without a handler answer NOTSUPP, never a dropped call.
    for (const n of [C.OP_LAYOUTGET, C.OP_GETDEVICEINFO, C.OP_SETCLIENTID, C.OP_RENEW]) {
      r = await h.c.call([putroot, op(n, (w) => w.fixed(new Uint8Array(64)))]);
      assert.equal(r.results[2]!.status, C.NFS4ERR_NOTSUPP, `op ${n}`);
    }
    // Arguments cut short are BADXDR for that operation.
    r = await h.c.call([op(C.OP_LOOKUP, (w) => w.u32(100))]);
    assert.deepEqual(statuses(r), [0, C.NFS4ERR_BADXDR]);
    // A COMPOUND with more operations than the session allows.
    r = await h.c.call(Array.from({ length: 20 }, () => putroot));
    assert.deepEqual(statuses(r), [C.NFS4ERR_TOO_MANY_OPS]);
  });
});

Deno.test("SEQUENCE replays a retransmission from the slot and refuses misordered ids", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("seq-client");
    const mkdir = op(C.OP_CREATE, (w) => {
      w.u32(C.NF4DIR).string("d1");
      attrRequest(w, []);
      w.opaque(new Uint8Array(0));
    });
    const first = await h.c.call([putroot, lookup("bkt4"), mkdir], { slot: 2, seq: 1 });
    assert.equal(first.status, 0);
    // The same slot and id: the cached reply, byte for byte, not a second mkdir (EXIST).
    const again = await h.c.call([putroot, lookup("bkt4"), mkdir], { slot: 2, seq: 1 });
    assert.deepEqual(again.bytes, first.bytes);
    const skipped = await h.c.call([putroot], { slot: 2, seq: 3 });
    assert.deepEqual(statuses(skipped), [C.NFS4ERR_SEQ_MISORDERED]);
    const next = await h.c.call([putroot, lookup("bkt4"), mkdir], { slot: 2, seq: 2 });
    assert.deepEqual(statuses(next), [0, 0, 0, C.NFS4ERR_EXIST]);
    const badSlot = await h.c.call([putroot], { slot: 500, seq: 1 });
    assert.deepEqual(statuses(badSlot), [C.NFS4ERR_BADSLOT]);
    const unknown = await h.c.compound([sequence(new Uint8Array(16).fill(7), 1, 0), putroot]);
    assert.deepEqual(statuses(unknown), [C.NFS4ERR_BADSESSION]);
  });
});

Deno.test("CREATE_SESSION is replayed for its sequence id; sessions and clients are destroyed", async () => {
  await withNfs4(async (h) => {
    const ex = await h.c.compound([exchangeId("life", new Uint8Array(8).fill(3))]);
    const { clientId, seq, flags } = ex.results[0]!.value;
    assert.equal(flags & C.EXCHGID4_FLAG_CONFIRMED_R, 0);
    const cs1 = await h.c.compound([createSession(clientId, seq)]);
    const cs2 = await h.c.compound([createSession(clientId, seq)]);
    assert.deepEqual(cs2.results[0]!.value.session, cs1.results[0]!.value.session);
    const cs3 = await h.c.compound([createSession(clientId, seq + 5)]);
    assert.deepEqual(statuses(cs3), [C.NFS4ERR_SEQ_MISORDERED]);
    // The same owner and verifier again: the same, now confirmed, client.
    const ex2 = await h.c.compound([exchangeId("life", new Uint8Array(8).fill(3))]);
    assert.equal(ex2.results[0]!.value.clientId, clientId);
    assert.notEqual(ex2.results[0]!.value.flags & C.EXCHGID4_FLAG_CONFIRMED_R, 0);
    const session = cs1.results[0]!.value.session;
    const bind = await h.c.compound([
      op(C.OP_BIND_CONN_TO_SESSION, (w) => w.fixed(session).u32(C.CDFC4_FORE_OR_BOTH).bool(false)),
    ]);
    assert.equal(bind.results[0]!.value.dir, C.CDFS4_FORE);
    const destroyClient = op(C.OP_DESTROY_CLIENTID, (w) => w.u64(clientId));
    assert.deepEqual(statuses(await h.c.compound([destroyClient])), [C.NFS4ERR_CLIENTID_BUSY]);
    const destroy = op(C.OP_DESTROY_SESSION, (w) => w.fixed(session));
    assert.deepEqual(statuses(await h.c.compound([destroy])), [0]);
    const after = await h.c.compound([sequence(session, 1, 0), putroot]);
    assert.deepEqual(statuses(after), [C.NFS4ERR_BADSESSION]);
    assert.deepEqual(statuses(await h.c.compound([destroyClient])), [0]);
    const gone = await h.c.compound([createSession(clientId, seq + 1)]);
    assert.deepEqual(statuses(gone), [C.NFS4ERR_EXPIRED]);
    // A client id of another server start.
    const stale = await h.c.compound([createSession(clientId ^ (0xffn << 40n), 1)]);
    assert.deepEqual(statuses(stale), [C.NFS4ERR_STALE_CLIENTID]);
  });
});

Deno.test("OPEN, WRITE, READ, COMMIT and CLOSE one file; the file is an object S3 reads", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("io-client");
    const o = await openFile(h, "f.txt", { create: true });
    assert.deepEqual(statuses(o), [0, 0, 0, 0, 0]);
    const st: Stateid4 = o.results[3]!.value.stateid;
    assert.deepEqual(o.results[3]!.value.attrset, [33]);
    const fh: Uint8Array = o.results[4]!.value;
    const w = await h.c.call([putfh(fh), write(st, 0, ENCODER.encode("hello v4"), C.UNSTABLE4)]);
    assert.equal(w.results[2]!.value.count, 8);
    assert.equal(w.results[2]!.value.committed, C.UNSTABLE4);
    const commit = await h.c.call([putfh(fh), op(C.OP_COMMIT, (x) => x.u64(0).u32(0))]);
    assert.deepEqual(commit.results[2]!.value, w.results[2]!.value.verifier);
    const r = await h.c.call([putfh(fh), read(st, 6, 100)]);
    assert.equal(DECODER.decode(r.results[2]!.value.data), "v4");
    assert.equal(r.results[2]!.value.eof, true);
    // The current stateid (seqid 1, other zero) is the one OPEN just made.
    const cur: Stateid4 = { seqid: 1, other: new Uint8Array(12) };
    const oc = await h.c.call([
      putroot,
      lookup("bkt4"),
      open("f.txt"),
      read(cur, 0, 5),
      close(cur),
    ]);
    assert.deepEqual(statuses(oc), [0, 0, 0, 0, 0, 0]);
    assert.equal(DECODER.decode(oc.results[4]!.value.data), "hello");
    assert.deepEqual(
      statuses(await h.c.call([putfh(fh), close(st)])).at(-1),
      C.NFS4ERR_BAD_STATEID,
    );
    const got = await h.stack.engine.getObject(h.stack.engine.namespace(TENANT, "bkt4"), "f.txt");
    assert.equal(await new Response(got.body).text(), "hello v4");
  });
});

Deno.test("share reservations refuse conflicting opens; stateids age and go", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("share-client");
    const a = await openFile(h, "s", { create: true, access: 3, deny: 2, owner: "A" });
    assert.equal(a.status, 0);
    const sa: Stateid4 = a.results[3]!.value.stateid;
    const fh: Uint8Array = a.results[4]!.value;
    // B may not write what A denies, nor deny what A does.
    const b = await openFile(h, "s", { access: 2, owner: "B" });
    assert.deepEqual(statuses(b).at(-1), C.NFS4ERR_SHARE_DENIED);
    const b2 = await openFile(h, "s", { access: 1, deny: 1, owner: "B" });
    assert.deepEqual(statuses(b2).at(-1), C.NFS4ERR_SHARE_DENIED);
    const b3 = await openFile(h, "s", { access: 1, owner: "B" });
    assert.equal(b3.status, 0);
    const sb: Stateid4 = b3.results[3]!.value.stateid;
    // Anonymous writes are refused too while A denies writing.
    const anon = await h.c.call([putfh(fh), write(ANON, 0, ENCODER.encode("x"))]);
    assert.deepEqual(statuses(anon).at(-1), C.NFS4ERR_LOCKED);
    // B opened for reading only: its writes are refused.
    const bw = await h.c.call([putfh(fh), write(sb, 0, ENCODER.encode("x"))]);
    assert.deepEqual(statuses(bw).at(-1), C.NFS4ERR_OPENMODE);
    // A downgrades to read, deny none: its old stateid is now old.
    const down = await h.c.call([
      putfh(fh),
      op(C.OP_OPEN_DOWNGRADE, (w) => writeStateid(w, sa).u32(0).u32(1).u32(0)),
    ]);
    assert.equal(down.status, 0);
    const sa2: Stateid4 = down.results[2]!.value;
    assert.equal(sa2.seqid, sa.seqid + 1);
    const test = await h.c.call([
      op(C.OP_TEST_STATEID, (w) => {
        w.u32(3);
        writeStateid(w, sa);
        writeStateid(w, sa2);
        writeStateid(w, { seqid: 1, other: new Uint8Array(12).fill(9) });
      }),
    ]);
    assert.deepEqual(test.results[1]!.value, [
      C.NFS4ERR_OLD_STATEID,
      0,
      C.NFS4ERR_STALE_STATEID,
    ]);
    const b4 = await openFile(h, "s", { access: 2, owner: "B" });
    assert.equal(b4.status, 0);
    const freed = await h.c.call([op(C.OP_FREE_STATEID, (w) => writeStateid(w, sa2))]);
    assert.deepEqual(statuses(freed), [0, C.NFS4ERR_LOCKS_HELD]);
  });
});

Deno.test("LOCK, LOCKT and LOCKU arbitrate byte ranges between lock owners", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("lock-client");
    const a = await openFile(h, "l", { create: true, owner: "A" });
    const sa: Stateid4 = a.results[3]!.value.stateid;
    const fh: Uint8Array = a.results[4]!.value;
    const b = await openFile(h, "l", { owner: "B" });
    const sb: Stateid4 = b.results[3]!.value.stateid;
    const la = await h.c.call([putfh(fh), lock(C.WRITE_LT, 0n, 100n, { open: sa, owner: "la" })]);
    assert.deepEqual(statuses(la), [0, 0, 0]);
    const lockA: Stateid4 = la.results[2]!.value;
    const lb = await h.c.call([putfh(fh), lock(C.READ_LT, 50n, 10n, { open: sb, owner: "lb" })]);
    assert.deepEqual(statuses(lb).at(-1), C.NFS4ERR_DENIED);
    assert.equal(lb.results[2]!.value.offset, 0n);
    assert.equal(lb.results[2]!.value.length, 100n);
    assert.equal(DECODER.decode(lb.results[2]!.value.owner), "la");
    // Past the lock, B is free; LOCKT agrees.
    const lb2 = await h.c.call([
      putfh(fh),
      lock(C.WRITE_LT, 100n, 0xffff_ffff_ffff_ffffn, {
        open: sb,
        owner: "lb",
      }),
    ]);
    assert.equal(lb2.status, 0);
    const lockB: Stateid4 = lb2.results[2]!.value;
    const lockt = (offset: bigint, owner: string) =>
      op(C.OP_LOCKT, (w) => w.u32(C.WRITE_LT).u64(offset).u64(1n).u64(0n).string(owner));
    assert.deepEqual(
      statuses(await h.c.call([putfh(fh), lockt(10n, "lb")])).at(-1),
      C.NFS4ERR_DENIED,
    );
    assert.deepEqual(statuses(await h.c.call([putfh(fh), lockt(10n, "la")])).at(-1), 0);
    // CLOSE and FREE_STATEID refuse while locks are held.
    assert.deepEqual(statuses(await h.c.call([putfh(fh), close(sa)])).at(-1), C.NFS4ERR_LOCKS_HELD);
    const free = op(C.OP_FREE_STATEID, (w) => writeStateid(w, lockA));
    assert.deepEqual(statuses(await h.c.call([free])).at(-1), C.NFS4ERR_LOCKS_HELD);
    // Unlock the middle: the split ends still hold.
    const unlock = (s: Stateid4, offset: bigint, length: bigint) =>
      op(C.OP_LOCKU, (w) => writeStateid(w.u32(C.WRITE_LT).u32(0), s).u64(offset).u64(length));
    const u = await h.c.call([putfh(fh), unlock(lockA, 40n, 20n)]);
    assert.equal(u.status, 0);
    const lockA2: Stateid4 = u.results[2]!.value;
    assert.equal((await h.c.call([putfh(fh), lockt(45n, "lb")])).status, 0);
    assert.equal((await h.c.call([putfh(fh), lockt(30n, "lb")])).status, C.NFS4ERR_DENIED);
    const u2 = await h.c.call([putfh(fh), unlock(lockA2, 0n, 100n)]);
    assert.equal(u2.status, 0);
    // The freed stateid is the current one; its first seqid is now old.
    assert.equal((await h.c.call([free])).status, C.NFS4ERR_OLD_STATEID);
    const freeNow = op(C.OP_FREE_STATEID, (w) => writeStateid(w, u2.results[2]!.value));
    assert.equal((await h.c.call([freeNow])).status, 0);
    assert.equal((await h.c.call([freeNow])).status, C.NFS4ERR_BAD_STATEID);
    assert.equal((await h.c.call([putfh(fh), close(sa)])).status, 0);
    // Bad ranges and stale lock stateids.
    const zero = await h.c.call([putfh(fh), lock(C.WRITE_LT, 0n, 0n, { lock: lockB })]);
    assert.equal(zero.status, C.NFS4ERR_INVAL);
    const old = await h.c.call([putfh(fh), unlock({ ...lockB, seqid: lockB.seqid + 5 }, 0n, 1n)]);
    assert.equal(old.status, C.NFS4ERR_BAD_STATEID);
  });
});

Deno.test("GETATTR and SETATTR: numeric owners as strings, sizes, modes, refused owners", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("attr-client");
    const o = await openFile(h, "a", { create: true });
    const st: Stateid4 = o.results[3]!.value.stateid;
    const fh: Uint8Array = o.results[4]!.value;
    const attrs = (w: XdrWriter, set: (v: XdrWriter) => void, bits: number[]) => {
      attrRequest(w, bits);
      const v = new XdrWriter(64);
      set(v);
      w.opaque(v.finish());
    };
    const setattr = (bits: number[], set: (v: XdrWriter) => void) =>
      op(C.OP_SETATTR, (w) => attrs(writeStateid(w, st), set, bits));
    const s = await h.c.call([
      putfh(fh),
      setattr([4, 33, 36, 37], (v) => v.u64(5000).u32(0o640).string("1000").string("100")),
    ]);
    assert.deepEqual(statuses(s), [0, 0, 0]);
    assert.deepEqual(s.results[2]!.value, [4, 33, 36, 37]);
    const g = await h.c.call([
      putfh(fh),
      op(C.OP_GETATTR, (w) => attrRequest(w, [1, 4, 33, 36, 37])),
    ]);
    const r = new XdrReader(g.results[2]!.value.values);
    assert.deepEqual(
      [r.u32(), r.u64(), r.u32(), r.string(64), r.string(64)],
      [C.NF4REG, 5000n, 0o640, "1000", "100"],
    );
    const bad = await h.c.call([putfh(fh), setattr([36], (v) => v.string("bob@example.org"))]);
    assert.equal(bad.status, C.NFS4ERR_BADOWNER);
    assert.deepEqual(bad.results[2]!.value, []);
    const readOnly = await h.c.call([putfh(fh), setattr([20], (v) => v.u64(1))]);
    assert.equal(readOnly.status, C.NFS4ERR_INVAL);
    const unsupported = await h.c.call([putfh(fh), setattr([12], (v) => v.u32(0))]);
    assert.equal(unsupported.status, C.NFS4ERR_ATTRNOTSUPP);
    const secinfo = await h.c.call([putfh(fh), op(C.OP_SECINFO_NO_NAME, (w) => w.u32(0)), getfh]);
    assert.deepEqual(secinfo.results[2]!.value, [1]);
    assert.equal(secinfo.results[3]!.status, C.NFS4ERR_NOFILEHANDLE);
  });
});

Deno.test("READDIR, RENAME, REMOVE, symlinks and LOOKUPP over the pseudo-fs root", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("dir-client");
    for (const n of ["x", "y", "z"]) {
      const o = await openFile(h, n, { create: true });
      await h.c.call([putfh(o.results[4]!.value), close(o.results[3]!.value.stateid)]);
    }
    const symlink = op(C.OP_CREATE, (w) => {
      w.u32(C.NF4LNK).string("x").string("ln");
      attrRequest(w, []);
      w.opaque(new Uint8Array(0));
    });
    const made = await h.c.call([putroot, lookup("bkt4"), symlink, op(C.OP_READLINK)]);
    assert.equal(made.results[4]!.value, "x");
    const readdir = (cookie: bigint, verifier: Uint8Array, maxcount: number) =>
      op(C.OP_READDIR, (w) => {
        w.u64(cookie).fixed(verifier).u32(maxcount).u32(maxcount);
        attrRequest(w, [1, 20]);
      });
    const all = await h.c.call([putroot, lookup("bkt4"), readdir(0n, new Uint8Array(8), 8192)]);
    const listed = all.results[3]!.value;
    assert.deepEqual(listed.entries.map((e: { name: string }) => e.name), ["ln", "x", "y", "z"]);
    assert.equal(listed.eof, true);
    // Page by page from a cookie.
    const first = await h.c.call([putroot, lookup("bkt4"), readdir(0n, new Uint8Array(8), 200)]);
    const page = first.results[3]!.value;
    assert.equal(page.eof, false);
    const rest = await h.c.call([
      putroot,
      lookup("bkt4"),
      readdir(page.entries.at(-1).cookie, page.verifier, 8192),
    ]);
    assert.deepEqual(
      [...page.entries, ...rest.results[3]!.value.entries].map((e: { name: string }) => e.name),
      ["ln", "x", "y", "z"],
    );
    const badCookie = await h.c.call([
      putroot,
      lookup("bkt4"),
      readdir(5n, new Uint8Array(8), 8192),
    ]);
    assert.equal(badCookie.status, C.NFS4ERR_BAD_COOKIE);
    const rename = op(C.OP_RENAME, (w) => w.string("x").string("x2"));
    const rn = await h.c.call([putroot, lookup("bkt4"), savefh, rename]);
    assert.equal(rn.status, 0);
    const rm = await h.c.call([putroot, lookup("bkt4"), op(C.OP_REMOVE, (w) => w.string("y"))]);
    assert.equal(rm.status, 0);
    const gone = await h.c.call([putroot, lookup("bkt4"), lookup("y")]);
    assert.equal(gone.status, C.NFS4ERR_NOENT);
    const up = await h.c.call([putroot, lookup("bkt4"), op(C.OP_LOOKUPP), getfh, op(C.OP_LOOKUPP)]);
    assert.deepEqual(statuses(up), [0, 0, 0, 0, 0, C.NFS4ERR_NOENT]);
    const link = await h.c.call([
      putroot,
      lookup("bkt4"),
      lookup("z"),
      savefh,
      putroot,
      lookup("bkt4"),
      op(C.OP_LINK, (w) => w.string("z2")),
      // As the Linux client asks: the directory's and the file's attributes after the link.
      op(C.OP_GETATTR, (w) => attrRequest(w, [1, 3, 33])),
      op(C.OP_RESTOREFH),
      op(C.OP_GETATTR, (w) => attrRequest(w, [1, 3, 4, 27, 33])),
    ]);
    assert.equal(link.status, 0, JSON.stringify(statuses(link)));
    // Both names are one file: the same fileid, read through either name.
    const both = await h.c.call([
      putroot,
      lookup("bkt4"),
      lookup("z"),
      getfh,
      putroot,
      lookup("bkt4"),
      lookup("z2"),
      getfh,
    ]);
    assert.equal(both.status, 0);
    // Sent again (a lost answer, or a retry the client was asked for): the same link.
    const repeat = await h.c.call([
      putroot,
      lookup("bkt4"),
      lookup("z"),
      savefh,
      putroot,
      lookup("bkt4"),
      op(C.OP_LINK, (w) => w.string("z2")),
    ]);
    assert.equal(repeat.status, 0);
    // Another file under that name is still EXIST.
    const w = await openFile(h, "w", { create: true });
    await h.c.call([putfh(w.results[4]!.value), close(w.results[3]!.value.stateid)]);
    const taken = await h.c.call([
      putroot,
      lookup("bkt4"),
      lookup("w"),
      savefh,
      putroot,
      lookup("bkt4"),
      op(C.OP_LINK, (w) => w.string("z2")),
    ]);
    assert.equal(taken.status, C.NFS4ERR_EXIST);
  });
});

Deno.test("4.2: SEEK, ALLOCATE, DEALLOCATE and a server-side COPY", async () => {
  await withNfs4(async (h) => {
    await h.c.establish("v42-client");
    const src = await openFile(h, "src", { create: true });
    const ss: Stateid4 = src.results[3]!.value.stateid;
    const sfh: Uint8Array = src.results[4]!.value;
    const data = new Uint8Array(3 << 20);
    for (let at = 0; at < data.length; at += 65536) {
      crypto.getRandomValues(data.subarray(at, at + 65536));
    }
    for (let at = 0; at < data.length; at += 1 << 20) {
      const w = await h.c.call([putfh(sfh), write(ss, at, data.subarray(at, at + (1 << 20)))]);
      assert.equal(w.status, 0);
    }
    const dst = await openFile(h, "dst", { create: true });
    const ds: Stateid4 = dst.results[3]!.value.stateid;
    const dfh: Uint8Array = dst.results[4]!.value;
    const copy = op(C.OP_COPY, (w) => {
      writeStateid(w, ss);
      writeStateid(w, ds);
      w.u64(1000).u64(0).u64(0).bool(false).bool(true).u32(0);
    });
    const cp = await h.c.call([putfh(sfh), savefh, putfh(dfh), copy], { minor: 2 });
    assert.equal(cp.status, 0);
    assert.equal(cp.results[4]!.value.count, BigInt(data.length - 1000));
    const back = await h.c.call([putfh(dfh), read(ds, 0, 1 << 19)], { minor: 2 });
    assert.deepEqual(back.results[2]!.value.data, data.subarray(1000, 1000 + (1 << 19)));
    const seek = (offset: number, what: number) =>
      op(C.OP_SEEK, (w) => writeStateid(w, ds).u64(offset).u32(what));
    const hole = await h.c.call([putfh(dfh), seek(10, C.NFS4_CONTENT_HOLE)], { minor: 2 });
    assert.deepEqual(hole.results[2]!.value, { eof: true, offset: BigInt(data.length - 1000) });
    const dat = await h.c.call([putfh(dfh), seek(10, C.NFS4_CONTENT_DATA)], { minor: 2 });
    assert.deepEqual(dat.results[2]!.value, { eof: false, offset: 10n });
    const past = await h.c.call([putfh(dfh), seek(data.length, 0)], { minor: 2 });
    assert.equal(past.status, C.NFS4ERR_NXIO);
    const range = (n: number, offset: number, length: number) =>
      op(n, (w) => writeStateid(w, ds).u64(offset).u64(length));
    const alloc = await h.c.call([putfh(dfh), range(C.OP_ALLOCATE, 0, 4 << 20)], { minor: 2 });
    assert.equal(alloc.status, 0);
    const dealloc = await h.c.call([putfh(dfh), range(C.OP_DEALLOCATE, 10, 100)], { minor: 2 });
    assert.equal(dealloc.status, 0);
    const after = await h.c.call([
      putfh(dfh),
      read(ds, 0, 200),
      op(C.OP_GETATTR, (w) => attrRequest(w, [4])),
    ], { minor: 2 });
    const bytes: Uint8Array = after.results[2]!.value.data;
    assert.deepEqual(bytes.subarray(0, 10), data.subarray(1000, 1010));
    assert.ok(bytes.subarray(10, 110).every((b) => b === 0));
    assert.deepEqual(bytes.subarray(110, 200), data.subarray(1110, 1200));
    assert.equal(new XdrReader(after.results[3]!.value.values).u64(), BigInt(4 << 20));
  });
});

Deno.test("after a restart, recorded clients reclaim in the grace period; new opens wait", async () => {
  await withStack(async (stack) => {
    const records = new MemoryRecords();
    let fh = new Uint8Array(0);
    await withGateway(stack, async (h) => {
      await h.c.establish("reclaimer", new Uint8Array(8).fill(5));
      const o = await openFile(h, "kept", { create: true });
      assert.equal(o.status, 0);
      fh = o.results[4]!.value;
    }, { records });
    assert.equal(records.records.size, 1);
    await withGateway(stack, async (h) => {
      // A client the server never knew: no grace for it, and its new opens wait.
      const stranger = new Nfs4Client(h.rpc);
      await stranger.establish("stranger");
      const early = await openFile({ ...h, c: stranger }, "kept");
      assert.equal(early.status, C.NFS4ERR_GRACE);
      const reclaim = op(C.OP_OPEN, (w) => {
        w.u32(0).u32(3).u32(0).u64(0n).string("owner").u32(0).u32(C.CLAIM_PREVIOUS).u32(0);
      });
      const strange = await stranger.call([putfh(fh), reclaim]);
      assert.equal(strange.status, C.NFS4ERR_RECLAIM_BAD);
      // The recorded client reclaims its open, then says it is done: the grace period ends.
      await h.c.establish("reclaimer", new Uint8Array(8).fill(5));
      const again = await h.c.call([putfh(fh), reclaim]);
      assert.equal(again.status, 0);
      const done = await h.c.call([op(C.OP_RECLAIM_COMPLETE, (w) => w.bool(false))]);
      assert.equal(done.status, 0);
      const twice = await h.c.call([op(C.OP_RECLAIM_COMPLETE, (w) => w.bool(false))]);
      assert.equal(twice.status, C.NFS4ERR_COMPLETE_ALREADY);
      const late = await h.c.call([putfh(fh), reclaim]);
      assert.equal(late.status, C.NFS4ERR_NO_GRACE);
      const open2 = await openFile({ ...h, c: stranger }, "kept", { access: 1, owner: "s" });
      assert.equal(open2.status, 0);
    }, { records, graceMs: 60_000 });
  });
});

Deno.test("a client outside the allowed networks gets NFS4ERR_ACCESS for any file handle", async () => {
  await withStack((stack) =>
    withGateway(stack, async (h) => {
      await h.c.establish("outsider");
      const r = await h.c.call([putroot, getfh]);
      assert.deepEqual(statuses(r), [0, C.NFS4ERR_ACCESS]);
      const pub = await h.c.call([op(C.OP_PUTPUBFH)]);
      assert.deepEqual(statuses(pub), [0, C.NFS4ERR_ACCESS]);
    }, { clientAllowed: () => false })
  );
});
