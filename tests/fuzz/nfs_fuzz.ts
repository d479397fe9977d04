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
import { XdrWriter } from "../../mod/nfs/xdr.ts";
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
    };
    for (let i = 0; i < options.inputs; i++) {
      const [prog, vers, proc, args] = seeds[prng.nextInt(seeds.length)]!;
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

/** Whether a campaign passed, and its report as text. */
export function judgeNfsFuzz(r: NfsFuzzReport): { ok: boolean; text: string } {
  const ok = r.faults === 0 && r.healthy && r.slowest.ms < NFS_FUZZ_CALL_MS_MAX;
  return {
    ok,
    text: `fuzz:nfs seed ${r.seed}: ${r.inputs} inputs in ${(r.ms / 1000).toFixed(1)} s, ` +
      `${r.answered} answered, ${r.dropped} dropped, ${r.faults} server faults, slowest ` +
      `${r.slowest.ms.toFixed(1)} ms (input ${r.slowest.input}), healthy after: ${r.healthy}` +
      ` => ${ok ? "PASS" : "FAIL"}`,
  };
}
