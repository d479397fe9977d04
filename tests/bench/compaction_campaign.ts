// `deno task campaign:compaction [overwrites] [keys] [valueBytes]`: overwrites of few small
// keys through a real engine stack with the default log compaction (1,000,000 overwrites
// of 1,000 keys of 1 KiB unless told), reporting the size of raft/ against the live data as
// it goes and at the end. Not a benchmark: the proof that the log follows live data.

import { dirBytes, runOverwrites } from "../e2e/_overwrites.ts";

const overwrites = Number(Deno.args[0] ?? 1_000_000);
const keys = Number(Deno.args[1] ?? 1_000);
const valueBytes = Number(Deno.args[2] ?? 1024);
const dataDir = await Deno.makeTempDir({ prefix: "kiseki-compaction-campaign-" });
const started = performance.now();
let raftPeak = 0;
try {
  const result = await runOverwrites({
    dataDir,
    keys,
    overwrites,
    valueBytes,
    concurrency: 16,
    progress: {
      every: Math.max(1, Math.floor(overwrites / 20)),
      report: (done, raftBytes) => {
        raftPeak = Math.max(raftPeak, raftBytes);
        const s = (performance.now() - started) / 1000;
        console.log(
          `${done} overwrites, ${s.toFixed(0)} s, ${(done / s).toFixed(0)}/s: raft/ ${
            mib(raftBytes)
          }`,
        );
      },
    },
  });
  raftPeak = Math.max(raftPeak, result.raftBytes);
  console.log(
    `done: ${overwrites} overwrites of ${keys} keys x ${valueBytes} B in ${
      result.seconds.toFixed(0)
    } s (${(overwrites / result.seconds).toFixed(0)}/s)\n` +
      `  live data ${mib(result.liveBytes)}, written ${mib(overwrites * valueBytes)}\n` +
      `  raft/ ${mib(result.raftBytes)} at the end, ${mib(raftPeak)} at most ` +
      `(${(raftPeak / result.liveBytes).toFixed(1)}x live)\n` +
      `  views/ ${mib(result.viewBytes)}; data dir ${mib(await dirBytes(dataDir))}\n` +
      `  logs ${JSON.stringify(result.logs)}`,
  );
} finally {
  await Deno.remove(dataDir, { recursive: true });
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}
