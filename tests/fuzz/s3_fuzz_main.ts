// `deno task fuzz:s3 [--seed N] [--cases N] [--seconds N] [--concurrency N] [--only i,j]
// [--octet N]` (the server listens on 127.0.<octet>.1, default FUZZ_HOST_OCTET):
// starts a real `kiseki server` on a loopback address and runs the bad-input campaign of
// s3_fuzz.ts against its S3 port; exits 1 when any answer was wrong, the server died, or it
// stopped serving normal requests. The seed is printed first: the same seed replays the
// same cases (`--only` replays single ones).

import { readS3Credentials, startRole, testAddrs, waitForHttp } from "../e2e/_role.ts";
import { formatReport, healthyRoundTrip, prepareTarget, runFuzz } from "./s3_fuzz.ts";

/** Loopback address block of the campaign's server (127.0.<octet>.1). */
export const FUZZ_HOST_OCTET = 132;
/** Lines of the server's log shown when it exits during a campaign (why it died). */
const SERVER_LOG_TAIL_LINES = 40;

export interface CampaignResult {
  ok: boolean;
  text: string;
}

/** Starts a server, runs the campaign, checks the server after it, stops the server. */
export async function campaign(options: {
  seed: number;
  cases: number;
  seconds: number;
  concurrency: number;
  only?: number[];
  hostOctet?: number;
  log?: (line: string) => void;
}): Promise<CampaignResult> {
  const log = options.log ?? console.log;
  log(`fuzz:s3 seed ${options.seed} (replay: deno task fuzz:s3 --seed ${options.seed})`);
  const dataDir = await Deno.makeTempDir({ prefix: "kiseki-fuzz-s3-" });
  const addrs = testAddrs(options.hostOctet ?? FUZZ_HOST_OCTET);
  const server = startRole("server", { ...addrs, KISEKI_DATA_DIR: dataDir });
  try {
    await waitForHttp(`http://${addrs.KISEKI_METRICS_ADDR}/health`, "OK", 60_000);
    const key = await readS3Credentials(`${dataDir}.s3-credentials`);
    const [host, port] = addrs.KISEKI_S3_ADDR.split(":");
    const target = {
      host: host!,
      port: Number(port),
      accessKeyId: key.accessKeyId,
      secretAccessKey: key.secretAccessKey,
      bucket: "fuzz-target",
    };
    await prepareTarget(target);
    const report = await runFuzz(target, {
      seed: options.seed,
      cases: options.cases,
      timeMs: options.seconds * 1000,
      concurrency: options.concurrency,
      only: options.only,
    });
    const lines = [formatReport(report)];
    let ok = report.failures.length === 0;
    const exited = await Promise.race([server.exited, new Promise((r) => setTimeout(r, 0, null))]);
    if (exited !== null) {
      ok = false;
      lines.push(`  the server exited (code ${exited}) during the campaign; its last log lines:`);
      const tail = server.stderr().trimEnd().split("\n").slice(-SERVER_LOG_TAIL_LINES);
      for (const line of tail) lines.push(`    ${line}`);
    } else {
      try {
        await healthyRoundTrip(target);
        lines.push("  after the campaign: a signed PUT and GET round-trip succeeded");
      } catch (e) {
        ok = false;
        lines.push(`  after the campaign: ${(e as Error).message}`);
      }
    }
    const internal = server.stderr().split("\n").filter((l) =>
      l.includes("s3 request failed") && l.includes("code=InternalError")
    );
    // Also those no answer showed: a client that left before its 500 could be sent.
    if (internal.length > 0) {
      ok = false;
      lines.push(`  server logged ${internal.length} internal failures, first: ${internal[0]}`);
    }
    const text = lines.join("\n");
    log(text);
    return { ok, text };
  } finally {
    await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const args: Record<string, string> = {};
  for (let i = 0; i < Deno.args.length; i++) {
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(Deno.args[i]!);
    if (
      m === null || !["seed", "cases", "seconds", "concurrency", "only", "octet"].includes(m[1]!)
    ) {
      console.error(`fuzz:s3: unknown argument ${Deno.args[i]}`);
      Deno.exit(2);
    }
    args[m[1]!] = m[2] ?? Deno.args[++i] ?? "";
  }
  const seed = args.seed !== undefined
    ? Number(args.seed)
    : crypto.getRandomValues(new Uint32Array(1))[0]!;
  const result = await campaign({
    seed,
    cases: Number(args.cases ?? 100_000),
    seconds: Number(args.seconds ?? 600),
    concurrency: Number(args.concurrency ?? 8),
    only: args.only?.split(",").map(Number),
    hostOctet: args.octet === undefined ? undefined : Number(args.octet),
  });
  Deno.exit(result.ok ? 0 : 1);
}
