import assert from "node:assert/strict";
import { Prng } from "../base/mod.ts";
import {
  AUTH_BADCRED,
  AUTH_ERROR,
  AUTH_SYS,
  AUTH_TOOWEAK,
  CALL,
  decodeCall,
  decodeReply,
  encodeCall,
  frameRecord,
  GARBAGE_ARGS,
  PROC_UNAVAIL,
  PROG_MISMATCH,
  PROG_UNAVAIL,
  RecordDecoder,
  RecordFramingError,
  RPC_MISMATCH,
  RPC_VERSION,
  RPCSEC_GSS,
} from "./rpc.ts";
import { DuplicateRequestCache, listenRpc, RpcDispatcher, type RpcProgram } from "./rpc_server.ts";
import { RpcClient } from "./rpc_client.ts";
import { XdrWriter } from "./xdr.ts";

function int(prng: Prng, lo: number, hi: number): number {
  return lo + prng.nextInt(Math.max(1, hi - lo + 1));
}

const ROOT = { stamp: 7, machineName: "client", uid: 0, gid: 0, gids: [1, 2] };
const PEER = { host: "127.0.0.1", port: 800, localPort: 2049 };

function fragment(bytes: Uint8Array, last: boolean): Uint8Array {
  const out = new Uint8Array(bytes.length + 4);
  new DataView(out.buffer).setUint32(0, ((last ? 0x8000_0000 : 0) | bytes.length) >>> 0);
  out.set(bytes, 4);
  return out;
}

Deno.test("RecordDecoder joins fragments and records split anywhere in the byte stream", () => {
  const a = new Uint8Array(100).fill(1);
  const b = new Uint8Array(7).fill(2);
  const stream = new Uint8Array([
    ...fragment(a.subarray(0, 40), false),
    ...fragment(a.subarray(40), true),
    ...fragment(b, true),
  ]);
  for (const cut of [1, 3, 4, 5, 44, 50, 150]) {
    const d = new RecordDecoder();
    const records = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    assert.equal(records.length, 2, `cut at ${cut}`);
    assert.deepEqual(records[0], a);
    assert.deepEqual(records[1], b);
    assert.equal(d.bufferedBytes, 0);
  }
  // Byte by byte.
  const d = new RecordDecoder();
  const got = [];
  for (const byte of stream) got.push(...d.push(new Uint8Array([byte])));
  assert.equal(got.length, 2);
});

Deno.test("RecordDecoder refuses a record over its limit before its bytes arrive", () => {
  const d = new RecordDecoder(1000);
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, 0x8000_0000 | 2000);
  assert.throws(() => d.push(head), RecordFramingError);
  // The limit counts the whole record, not one fragment.
  const d2 = new RecordDecoder(1000);
  d2.push(fragment(new Uint8Array(600), false));
  assert.throws(() => d2.push(fragment(new Uint8Array(600), true)), /more than 1000 bytes/);
  // Endless empty fragments end too.
  const d3 = new RecordDecoder(1000);
  const empties = new Uint8Array(4 * 2000);
  assert.throws(() => d3.push(empties), /fragments/);
});

Deno.test("decodeCall reads AUTH_SYS and answers bad versions and credentials", () => {
  const record = encodeCall(
    { xid: 9, prog: 100003, vers: 3, proc: 1, cred: ROOT },
    new Uint8Array(4),
  );
  const call = decodeCall(record);
  assert.ok(!("kind" in call));
  assert.equal(call.xid, 9);
  assert.equal(call.cred.flavor, AUTH_SYS);
  assert.deepEqual("sys" in call.cred ? call.cred.sys : null, ROOT);
  assert.equal(call.args.remaining, 4);

  const v3 = new XdrWriter().u32(5).u32(CALL).u32(3).finish();
  assert.deepEqual(decodeCall(v3), { kind: "rpc_mismatch", xid: 5 });
  assert.equal((decodeCall(new Uint8Array(2)) as { kind: string }).kind, "drop");
  const reply = new XdrWriter().u32(5).u32(1).finish();
  assert.equal((decodeCall(reply) as { kind: string }).kind, "drop");
  // An AUTH_SYS body with 17 groups is a bad credential.
  const w = new XdrWriter().u32(1).string("m").u32(0).u32(0).u32(17);
  for (let i = 0; i < 17; i++) w.u32(i);
  const cred = w.finish();
  const bad = new XdrWriter().u32(6).u32(CALL).u32(RPC_VERSION).u32(100003).u32(3).u32(0)
    .u32(AUTH_SYS).opaque(cred).u32(0).u32(0).finish();
  const problem = decodeCall(bad);
  assert.equal((problem as { stat: number }).stat, AUTH_BADCRED);
});

function echoProgram(calls: number[]): RpcProgram {
  return {
    prog: 400000,
    versLow: 1,
    versHigh: 2,
    nonIdempotent: (_v, proc) => proc === 2,
    call(_vers, proc, args) {
      calls.push(proc);
      if (proc === 9) return Promise.reject(new Error("boom"));
      if (proc > 2) return Promise.reject(new (class extends Error {})());
      const n = args.u32();
      return Promise.resolve(new XdrWriter().u32(n + calls.length).finish());
    },
  };
}

async function dispatch(
  d: RpcDispatcher,
  call: Parameters<typeof encodeCall>[0],
  args: Uint8Array,
) {
  const reply = await d.dispatch(encodeCall(call, args), PEER);
  assert.ok(reply !== null);
  return decodeReply(reply);
}

Deno.test("RpcDispatcher answers unknown programs, versions, procedures and garbage", async () => {
  const calls: number[] = [];
  const program = echoProgram(calls);
  program.call = (vers, proc, args, ctx) => {
    if (proc === 5) return Promise.reject(Object.assign(new Error("x")));
    return echoProgram(calls).call(vers, proc, args, ctx);
  };
  const d = new RpcDispatcher([program]);
  const arg = new XdrWriter().u32(1).finish();
  assert.equal(
    (await dispatch(d, { xid: 1, prog: 1, vers: 1, proc: 0, cred: ROOT }, arg)).body.kind,
    "accepted",
  );
  const unavailable = await dispatch(d, { xid: 1, prog: 1, vers: 1, proc: 1, cred: ROOT }, arg);
  assert.deepEqual(unavailable.body, { kind: "accepted", stat: PROG_UNAVAIL });
  const mismatch = await dispatch(d, { xid: 2, prog: 400000, vers: 4, proc: 1, cred: ROOT }, arg);
  assert.deepEqual(mismatch.body, { kind: "accepted", stat: PROG_MISMATCH, low: 1, high: 2 });
  const garbage = await dispatch(
    d,
    { xid: 3, prog: 400000, vers: 1, proc: 1, cred: ROOT },
    new Uint8Array(0),
  );
  assert.deepEqual(garbage.body, { kind: "accepted", stat: GARBAGE_ARGS });
  const ok = await dispatch(d, { xid: 4, prog: 400000, vers: 1, proc: 1, cred: ROOT }, arg);
  assert.equal(ok.xid, 4);
  assert.equal(ok.body.kind, "success");
  const failed = await dispatch(d, { xid: 5, prog: 400000, vers: 1, proc: 9, cred: ROOT }, arg);
  assert.deepEqual(failed.body, { kind: "accepted", stat: 5 /* SYSTEM_ERR */ });
  void PROC_UNAVAIL;
});

Deno.test("RpcDispatcher refuses RPCSEC_GSS with AUTH_BADCRED and AUTH_NONE with AUTH_TOOWEAK", async () => {
  const d = new RpcDispatcher([echoProgram([])]);
  const arg = new XdrWriter().u32(1).finish();
  const gss = new XdrWriter().u32(11).u32(CALL).u32(RPC_VERSION).u32(400000).u32(1).u32(1)
    .u32(RPCSEC_GSS).opaque(new Uint8Array(20)).u32(0).u32(0).fixed(arg).finish();
  const denied = decodeReply((await d.dispatch(gss, PEER))!);
  assert.deepEqual(denied.body, { kind: "denied", stat: AUTH_ERROR, authStat: AUTH_BADCRED });
  const none = await dispatch(d, { xid: 12, prog: 400000, vers: 1, proc: 1, cred: null }, arg);
  assert.deepEqual(none.body, { kind: "denied", stat: AUTH_ERROR, authStat: AUTH_TOOWEAK });
  // NULL is always callable without credentials.
  const nul = await dispatch(d, { xid: 13, prog: 400000, vers: 1, proc: 0, cred: null }, arg);
  assert.equal(nul.body.kind, "success");
  const rpcv = new XdrWriter().u32(14).u32(CALL).u32(3).finish();
  const mism = decodeReply((await d.dispatch(rpcv, PEER))!);
  assert.deepEqual(mism.body, { kind: "denied", stat: RPC_MISMATCH, authStat: undefined });
});

Deno.test("the duplicate request cache answers a retransmitted non-idempotent call without redoing it", async () => {
  const calls: number[] = [];
  const d = new RpcDispatcher([echoProgram(calls)], new DuplicateRequestCache(2));
  const arg = new XdrWriter().u32(100).finish();
  const call = { xid: 77, prog: 400000, vers: 1, proc: 2, cred: ROOT };
  const first = await d.dispatch(encodeCall(call, arg), PEER);
  const again = await d.dispatch(encodeCall(call, arg), PEER);
  assert.deepEqual(again, first);
  assert.deepEqual(calls, [2]);
  assert.equal(d.drc.hits, 1);
  // Another client address, other arguments, or an idempotent procedure: run again.
  await d.dispatch(encodeCall(call, arg), { ...PEER, host: "127.0.0.2" });
  await d.dispatch(encodeCall(call, new XdrWriter().u32(5).finish()), PEER);
  await d.dispatch(encodeCall({ ...call, proc: 1 }, arg), PEER);
  await d.dispatch(encodeCall({ ...call, proc: 1 }, arg), PEER);
  assert.deepEqual(calls, [2, 2, 2, 1, 1]);
  // Bounded: the oldest entries went.
  assert.ok(d.drc.size <= 2);
});

Deno.test("a retransmission while the first call runs gets no reply, then the first's", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let runs = 0;
  const program: RpcProgram = {
    prog: 400001,
    versLow: 1,
    versHigh: 1,
    nonIdempotent: () => true,
    async call() {
      runs++;
      await gate;
      return new XdrWriter().u32(runs).finish();
    },
  };
  const d = new RpcDispatcher([program]);
  const bytes = encodeCall(
    { xid: 1, prog: 400001, vers: 1, proc: 3, cred: ROOT },
    new Uint8Array(0),
  );
  const first = d.dispatch(bytes, PEER);
  assert.equal(await d.dispatch(bytes, PEER), null);
  release();
  const reply = await first;
  assert.deepEqual(await d.dispatch(bytes, PEER), reply);
  assert.equal(runs, 1);
});

Deno.test("fuzz: the dispatcher answers or drops mutated and random records and never throws", async () => {
  const prng = new Prng(0x4e46_5301);
  const d = new RpcDispatcher([echoProgram([])]);
  const seeds = [
    encodeCall(
      { xid: 1, prog: 400000, vers: 1, proc: 1, cred: ROOT },
      new XdrWriter().u32(3).finish(),
    ),
    encodeCall({ xid: 2, prog: 400000, vers: 2, proc: 2, cred: null }, new Uint8Array(8)),
  ];
  const started = performance.now();
  let answered = 0;
  for (let i = 0; i < 20_000; i++) {
    let input: Uint8Array;
    if (i % 5 === 0) {
      input = prng.bytes(int(prng, 0, 80));
    } else {
      input = seeds[i % seeds.length]!.slice();
      for (let m = int(prng, 1, 4); m > 0; m--) {
        const at = int(prng, 0, input.length - 1);
        input[at] = int(prng, 0, 255);
      }
      if (i % 7 === 0) input = input.subarray(0, int(prng, 0, input.length));
    }
    const reply = await d.dispatch(input, PEER);
    if (reply !== null) {
      answered++;
      decodeReply(reply);
    }
  }
  assert.ok(answered > 10_000, `answered ${answered}`);
  assert.ok(performance.now() - started < 60_000);
});

Deno.test("fuzz: RecordDecoder never holds more than its limit for any byte stream", () => {
  const prng = new Prng(0x4e46_5302);
  for (let run = 0; run < 200; run++) {
    const d = new RecordDecoder(4096);
    try {
      for (let i = 0; i < 50; i++) {
        const chunk = prng.bytes(int(prng, 0, 300));
        if (int(prng, 0, 3) === 0 && chunk.length >= 4) chunk[0] &= 0x80; // plausible lengths
        d.push(chunk);
        assert.ok(d.bufferedBytes <= 4096 + 4 + 300);
      }
    } catch (e) {
      assert.ok(e instanceof RecordFramingError);
    }
  }
  assert.deepEqual(new RecordDecoder().push(frameRecord(new Uint8Array(0))), [new Uint8Array(0)]);
});

Deno.test("listenRpc runs a connection's calls at once and replies as each finishes", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const program: RpcProgram = {
    prog: 400002,
    versLow: 1,
    versHigh: 1,
    async call(_vers, proc) {
      if (proc === 1) await gate;
      return new XdrWriter().u32(proc).finish();
    },
  };
  const server = listenRpc({ hostname: "127.0.0.1", port: 0, programs: [program] });
  const client = await RpcClient.connect("127.0.0.1", server.addr.port, ROOT);
  try {
    const order: number[] = [];
    const slow = client.call(400002, 1, 1).then((r) => order.push(1) && r);
    const fast = await client.call(400002, 1, 2);
    order.push(2);
    assert.equal(fast.kind, "success");
    release();
    await slow;
    assert.deepEqual(order, [2, 1]);
    // Fifty calls in flight on one connection, all answered.
    const many = await Promise.all(Array.from({ length: 50 }, () => client.call(400002, 1, 3)));
    assert.ok(many.every((r) => r.kind === "success"));
    assert.equal(server.stats().connections, 1);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("listenRpc holds calls past its server-wide byte bound until others finish", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let started = 0;
  const program: RpcProgram = {
    prog: 400003,
    versLow: 1,
    versHigh: 1,
    async call() {
      started++;
      await gate;
      return new Uint8Array(0);
    },
  };
  // Each call is ~100 bytes: the bound lets one run at a time.
  const server = listenRpc({
    hostname: "127.0.0.1",
    port: 0,
    programs: [program],
    bytesInFlightMax: 150,
  });
  const client = await RpcClient.connect("127.0.0.1", server.addr.port, ROOT);
  try {
    const calls = [1, 2, 3].map(() => client.call(400003, 1, 1, new Uint8Array(40)));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(started, 1);
    release();
    const replies = await Promise.all(calls);
    assert.ok(replies.every((r) => r.kind === "success"));
    assert.equal(started, 3);
  } finally {
    await client.close();
    await server.close();
  }
});
