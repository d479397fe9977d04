// The bad-input campaign of the NFS gateway: valid NFSv3, MOUNT, NFSv4 and portmap calls
// against a real engine, mutated (bytes of the arguments, now and then of the header) and
// cut short, sent to the gateway's RPC dispatcher. Every record must be answered or dropped
// as RPC says, never end in a server fault or take long; the gateway must serve normal
// calls afterwards. Seeded: the same seed replays the same inputs.

import { Prng } from "../../mod/base/mod.ts";
import { startEngineStack } from "../../mod/role/engine_stack.ts";
import { startNfsGateway } from "../../mod/nfs/mod.ts";
import { MOUNT_PROGRAM } from "../../mod/nfs/mount.ts";
import { NFS_PROGRAM } from "../../mod/nfs/nfs3.ts";
import { Nfs3Client } from "../../mod/nfs/nfs3_client.ts";
import { PMAP_PROGRAM } from "../../mod/nfs/portmap.ts";
import { decodeReply, encodeCall, SYSTEM_ERR } from "../../mod/nfs/rpc.ts";
import { RpcClient } from "../../mod/nfs/rpc_client.ts";
import { type XdrReader, XdrWriter } from "../../mod/nfs/xdr.ts";
import { Nfs4Client, open as open4, sequence } from "../../mod/nfs/nfs4_client.ts";
import * as V4 from "../../mod/nfs/nfs4_const.ts";
import { createLogger } from "../../mod/obs/mod.ts";

/** One input answered later than this is a hang. */
export const NFS_FUZZ_CALL_MS_MAX = 10_000;

export interface NfsFuzzReport {
  seed: number;
  inputs: number;
  answered: number;
  dropped: number;
  faults: number;
  slowest: { ms: number; input: number };
  /** Whether the gateway answered normal calls after the campaign. */
  healthy: boolean;
  /** NFSv4 operations past SEQUENCE that the COMPOUND dispatcher ran (ok or refused). */
  compoundOps?: number;
  ms: number;
}

const quiet = createLogger({ level: "error", format: "text", sink: { write: () => {} } });
/** The gateway's last warnings (why a call failed), shown with an unhealthy result. */
const warnings: string[] = [];
const gatewayLog = createLogger({
  level: "warn",
  format: "text",
  sink: {
    write: (line: string) => {
      warnings.push(line);
      if (warnings.length > 5) warnings.shift();
    },
  },
});

export async function runNfsFuzz(
  options: { seed: number; inputs: number; log?: (line: string) => void },
): Promise<NfsFuzzReport> {
  const log = options.log ?? (() => {});
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-fuzz-nfs-" });
  const stack = await startEngineStack({
    dataDir,
    logger: quiet,
    pool: { deviceSizeBytes: 256 << 20, segmentSizeBytes: 4 << 20 },
  });
  const tenant = new Uint8Array(16).fill(0x46);
  // Holes are zeros the gateway writes: small ones keep the campaign about decoding.
  const gateway = startNfsGateway({
    backend: stack.engine,
    tenantId: tenant,
    addr: { host: "127.0.0.1", port: 0 },
    logger: gatewayLog,
    writeHoleBytesMax: 1 << 20,
  });
  const rpc = await RpcClient.connect("127.0.0.1", gateway.addr.port);
  const started = performance.now();
  try {
    const client = new Nfs3Client(rpc);
    await stack.engine.createNamespace(tenant, "fuzz", "bucket");
    const root = (await client.mount("/")).fh!;
    const b = (await client.lookup(root, "fuzz")).fh!;
    const file = (await client.create(b, "f", { mode: 1, attr: {} })).fh!;
    const cred = { stamp: 1, machineName: "fuzz", uid: 0, gid: 0, gids: [] };
    const w = () => new XdrWriter();
    const sattr = (x: XdrWriter) => x.bool(false).bool(false).bool(false).bool(false).u32(0).u32(0);
    const seeds: [number, number, number, Uint8Array][] = [
      [NFS_PROGRAM, 3, 1, w().opaque(file).finish()],
      [
        NFS_PROGRAM,
        3,
        2,
        w().opaque(file).bool(true).u32(0o644).bool(false).bool(false).bool(true).u64(3).u32(1)
          .u32(0).bool(false).finish(),
      ],
      [NFS_PROGRAM, 3, 3, w().opaque(b).string("f").finish()],
      [NFS_PROGRAM, 3, 4, w().opaque(file).u32(0x3f).finish()],
      [NFS_PROGRAM, 3, 6, w().opaque(file).u64(0).u32(100).finish()],
      [NFS_PROGRAM, 3, 7, w().opaque(file).u64(2).u32(3).u32(0).opaque(new Uint8Array(3)).finish()],
      [NFS_PROGRAM, 3, 8, sattr(w().opaque(b).string("g").u32(0)).finish()],
      [NFS_PROGRAM, 3, 8, w().opaque(b).string("x").u32(2).fixed(new Uint8Array(8)).finish()],
      [NFS_PROGRAM, 3, 9, sattr(w().opaque(b).string("d")).finish()],
      [NFS_PROGRAM, 3, 10, sattr(w().opaque(b).string("l")).string("f").finish()],
      [NFS_PROGRAM, 3, 11, sattr(w().opaque(b).string("n").u32(3)).u32(1).u32(2).finish()],
      [NFS_PROGRAM, 3, 12, w().opaque(b).string("g").finish()],
      [NFS_PROGRAM, 3, 14, w().opaque(b).string("g").opaque(b).string("h").finish()],
      [NFS_PROGRAM, 3, 15, w().opaque(file).opaque(b).string("k").finish()],
      [NFS_PROGRAM, 3, 16, w().opaque(b).u64(0).fixed(new Uint8Array(8)).u32(4096).finish()],
      [
        NFS_PROGRAM,
        3,
        17,
        w().opaque(b).u64(0).fixed(new Uint8Array(8)).u32(4096).u32(8192).finish(),
      ],
      [NFS_PROGRAM, 3, 18, w().opaque(root).finish()],
      [NFS_PROGRAM, 3, 21, w().opaque(file).u64(0).u32(0).finish()],
      [NFS_PROGRAM, 4, 1, w().string("t").u32(1).u32(1).u32(53).finish()],
      [MOUNT_PROGRAM, 3, 1, w().string("/fuzz").finish()],
      [MOUNT_PROGRAM, 3, 3, w().string("/fuzz").finish()],
      [PMAP_PROGRAM, 2, 3, w().u32(100003).u32(3).u32(6).u32(0).finish()],
    ];
    // NFSv4: a session whose slots the v4 seeds use in turn, each with its next sequence id,
    // so mutated calls reach the operations behind SEQUENCE.
    const v4 = new Nfs4Client(rpc);
    await v4.establish("fuzz-client", new Uint8Array(8).fill(0x46), 64);
    const v4Seq: number[] = new Array(64).fill(0);
    const setup = await v4.call([
      { op: V4.OP_PUTROOTFH },
      { op: V4.OP_LOOKUP, args: (x) => x.string("fuzz") },
      open4("v4f", { create: true }),
      { op: V4.OP_GETFH },
    ]);
    v4Seq[0] = v4.slots[0]!;
    const v4Open = setup.results[3]?.value?.stateid ?? { seqid: 0, other: new Uint8Array(12) };
    const v4Fh: Uint8Array = setup.results[4]?.value ?? new Uint8Array(4);
    const stid = (x: XdrWriter) => x.u32(v4Open.seqid).fixed(v4Open.other);
    /** COMPOUND bodies behind a SEQUENCE (the SEQUENCE is added when the input is made). */
    const v4Bodies: ((x: XdrWriter) => number)[] = [
      (x) => (x.u32(V4.OP_PUTROOTFH).u32(V4.OP_LOOKUP).string("fuzz").u32(V4.OP_GETATTR)
        .u32(2).u32(0x0010_011a).u32(0x00b0_a23a),
        3),
      (x) => (x.u32(V4.OP_PUTFH).opaque(v4Fh).u32(V4.OP_READ).u32(v4Open.seqid)
        .fixed(v4Open.other).u64(0).u32(100),
        2),
      (x) => (stid(x.u32(V4.OP_PUTFH).opaque(v4Fh).u32(V4.OP_WRITE)).u64(0).u32(2)
        .opaque(new Uint8Array(5)),
        2),
      (x) => (x.u32(V4.OP_PUTFH).opaque(v4Fh).u32(V4.OP_LOCK).u32(2).bool(false).u64(0).u64(10)
        .bool(true).u32(0).u32(v4Open.seqid).fixed(v4Open.other).u32(0).u64(v4.clientId)
        .string("lo").u32(V4.OP_LOCKT).u32(2).u64(0).u64(10).u64(0).string("other"),
        3),
      (x) => (stid(x.u32(V4.OP_PUTFH).opaque(v4Fh).u32(V4.OP_SETATTR)).u32(2).u32(0x10)
        .u32(0x30).opaque(new XdrWriter().u64(3).string("0").string("0").finish()),
        2),
      (x) => (x.u32(V4.OP_PUTROOTFH).u32(V4.OP_LOOKUP).string("fuzz").u32(V4.OP_READDIR).u64(0)
        .fixed(new Uint8Array(8)).u32(4096).u32(8192).u32(1).u32(0x0010_0002),
        3),
      (x) => (x.u32(V4.OP_PUTROOTFH).u32(V4.OP_LOOKUP).string("fuzz").u32(V4.OP_OPEN).u32(0)
        .u32(3).u32(0).u64(0).string("o2").u32(1).u32(0).u32(1).u32(2).u32(0)
        .opaque(new XdrWriter().u32(0o600).finish()).u32(0).string("v4g").u32(V4.OP_CLOSE)
        .u32(0).u32(1).fixed(new Uint8Array(12)),
        4),
      (x) => (x.u32(V4.OP_PUTROOTFH).u32(V4.OP_LOOKUP).string("fuzz").u32(V4.OP_SAVEFH)
        .u32(V4.OP_RENAME).string("v4g").string("v4h").u32(V4.OP_REMOVE).string("v4h"),
        5),
      (x) => (stid(stid(x.u32(V4.OP_PUTFH).opaque(v4Fh).u32(V4.OP_SAVEFH).u32(V4.OP_COPY)))
        .u64(0).u64(10).u64(5).bool(false).bool(true).u32(0).u32(V4.OP_SEEK),
        3),
      (x) => (x.u32(V4.OP_TEST_STATEID).u32(1).u32(v4Open.seqid).fixed(v4Open.other)
        .u32(V4.OP_SECINFO_NO_NAME).u32(0),
        2),
    ];
    const v4Args = (i: number, body: number): { args: Uint8Array; slot: number } => {
      const slot = i % 64;
      const x = new XdrWriter(256).string("").u32(2);
      const inner = new XdrWriter(256);
      const n = v4Bodies[body]!(inner);
      x.u32(n + 1);
      sequence(v4.session!, v4Seq[slot]! + 1, slot).args!(x.u32(V4.OP_SEQUENCE));
      return { args: x.fixed(inner.finish()).finish(), slot };
    };
    const prng = new Prng(options.seed);
    const peer = { host: "127.0.0.1", port: 900, localPort: gateway.addr.port };
    const report: NfsFuzzReport = {
      seed: options.seed,
      inputs: 0,
      answered: 0,
      dropped: 0,
      faults: 0,
      slowest: { ms: 0, input: -1 },
      healthy: false,
      ms: 0,
      compoundOps: 0,
    };
    const v4First = seeds.length;
    const v4Kinds = v4Bodies.length + 2;
    for (let i = 0; i < options.inputs; i++) {
      const pick = prng.nextInt(seeds.length + v4Kinds);
      let prog: number, vers: number, proc: number, args: Uint8Array;
      let v4Slot = -1;
      if (pick < v4First) [prog, vers, proc, args] = seeds[pick]!;
      else if (pick - v4First < v4Bodies.length) {
        [prog, vers, proc] = [NFS_PROGRAM, 4, 1];
        ({ args, slot: v4Slot } = v4Args(i, pick - v4First));
      } else {
        // Session operations without SEQUENCE: EXCHANGE_ID and CREATE_SESSION.
        [prog, vers, proc] = [NFS_PROGRAM, 4, 1];
        const x = new XdrWriter(256).string("t").u32(1).u32(1);
        if (pick - v4First === v4Bodies.length) {
          x.u32(V4.OP_EXCHANGE_ID).fixed(new Uint8Array(8)).string(`c${i % 8}`).u32(0).u32(0)
            .u32(0);
        } else {
          x.u32(V4.OP_CREATE_SESSION).u64(v4.clientId).u32(1).u32(0);
          for (const size of [1 << 20, 4096]) {
            x.u32(0).u32(size).u32(size).u32(0).u32(8).u32(2).u32(0);
          }
          x.u32(0x40000001).u32(0);
        }
        args = x.finish();
      }
      const record = encodeCall({ xid: i, prog, vers, proc, cred }, args);
      const headerBytes = record.length - args.length - ((4 - (args.length % 4)) % 4);
      const input = record.slice();
      for (let m = 1 + prng.nextInt(4); m > 0; m--) {
        const at = prng.nextInt(8) === 0
          ? prng.nextInt(input.length)
          : headerBytes + prng.nextInt(Math.max(1, input.length - headerBytes));
        if (at < input.length) input[at] = prng.nextInt(256);
      }
      const sent = prng.nextInt(6) === 0
        ? input.subarray(0, prng.nextInt(input.length + 1))
        : input;
      const t0 = performance.now();
      const reply = await gateway.dispatcher.dispatch(sent, peer);
      const ms = performance.now() - t0;
      if (ms > report.slowest.ms) report.slowest = { ms, input: i };
      report.inputs++;
      if (reply === null) {
        report.dropped++;
        continue;
      }
      report.answered++;
      const decoded = decodeReply(reply);
      if (decoded.body.kind === "accepted" && decoded.body.stat === SYSTEM_ERR) {
        report.faults++;
        log(`input ${i}: SYSTEM_ERR for prog ${prog} proc ${proc}`);
      }
      if (vers === 4 && proc === 1 && decoded.body.kind === "success") {
        const seen = compoundSeen(decoded.body.results);
        if (seen.serverFault) {
          report.faults++;
          log(`input ${i}: NFS4ERR_SERVERFAULT from COMPOUND`);
        }
        if (seen.sequence !== null && seen.sequence.slot === v4Slot) {
          v4Seq[v4Slot] = seen.sequence.seq;
        }
        report.compoundOps! += Math.max(0, seen.ops - 1);
        // A mutated session id is refused; only a session really gone is made again.
        if (seen.badSession) {
          const probe = await v4.compound([sequence(v4.session!, 1, 63)]);
          if (probe.status === V4.NFS4ERR_BADSESSION) {
            await v4.establish("fuzz-client", new Uint8Array(8).fill(0x46), 64);
            v4Seq.fill(0);
          }
        }
      }
      if (i > 0 && i % 100_000 === 0) log(`${i} inputs, ${report.faults} faults`);
    }
    // Healthy: the root answers, and a new bucket takes a file that reads back (the fuzz
    // may have renamed or removed anything it started with).
    const health = await client.mkdir(root, `health-${options.seed}`);
    const made = health.fh === undefined
      ? null
      : await client.create(health.fh, "ok", { mode: 1, attr: {} });
    const wrote = made?.fh === undefined
      ? null
      : await client.write(made.fh, 0, new TextEncoder().encode("ok"), 2);
    const read = made?.fh === undefined ? null : await client.read(made.fh, 0, 10);
    log(
      `health: mkdir ${health.status}, create ${made?.status}, write ${wrote?.status}, ` +
        `read ${read?.status}`,
    );
    if (wrote?.status !== 0) { for (const w of warnings) log(`gateway: ${w.trim()}`); }
    report.healthy = (await client.getattr(root)).status === 0 && wrote?.status === 0 &&
      new TextDecoder().decode(read?.data ?? new Uint8Array(0)) === "ok";
    report.ms = performance.now() - started;
    return report;
  } finally {
    await rpc.close();
    await gateway.close();
    await stack.close();
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** What a COMPOUND reply says: operations run, a server fault, the slot SEQUENCE took. */
function compoundSeen(r: XdrReader): {
  ops: number;
  serverFault: boolean;
  badSession: boolean;
  sequence: { slot: number; seq: number } | null;
} {
  const status = r.u32();
  r.opaque(1024);
  const ops = r.u32();
  let sequence: { slot: number; seq: number } | null = null;
  if (ops > 0 && r.u32() === V4.OP_SEQUENCE && r.u32() === 0) {
    r.fixed(16);
    const seq = r.u32();
    sequence = { slot: r.u32(), seq };
  }
  return {
    ops,
    serverFault: status === V4.NFS4ERR_SERVERFAULT,
    badSession: status === V4.NFS4ERR_BADSESSION && ops === 1,
    sequence,
  };
}

/** Whether a campaign passed, and its report as text. */
export function judgeNfsFuzz(r: NfsFuzzReport): { ok: boolean; text: string } {
  const ok = r.faults === 0 && r.healthy && r.slowest.ms < NFS_FUZZ_CALL_MS_MAX;
  return {
    ok,
    text: `fuzz:nfs seed ${r.seed}: ${r.inputs} inputs in ${(r.ms / 1000).toFixed(1)} s, ` +
      `${r.answered} answered, ${r.dropped} dropped, ${r.faults} server faults, ` +
      `${r.compoundOps ?? 0} v4 operations past SEQUENCE, slowest ` +
      `${r.slowest.ms.toFixed(1)} ms (input ${r.slowest.input}), healthy after: ${r.healthy}` +
      ` => ${ok ? "PASS" : "FAIL"}`,
  };
}
