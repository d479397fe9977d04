// CI runs every benchmark in its --quick mode: each must finish, print its table, and write
// JSON whose rows carry a throughput, the same-run ceiling and their ratio. Numbers are not
// judged here (a shared 2-core machine is too noisy for that); the full runs are by hand.

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

interface Row {
  mb: number;
  ceiling: number | null;
  ratio: number | null;
}

async function runBench(
  name: string,
  rowsOf: (json: Record<string, unknown>) => Row[],
  env: Record<string, string> = {},
): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}tests/bench/${name}_bench.ts`, "--quick"],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(stdout, /ratio/i, "prints a table with a ratio column");
  const json = JSON.parse(await Deno.readTextFile(`${ROOT}tests/bench/results/${name}.json`));
  const rows = rowsOf(json);
  assert.ok(rows.length >= 4, `${name}: has rows`);
  for (const r of rows) {
    assert.ok(r.mb > 0, `${name}: positive throughput`);
    if (r.ceiling !== null && r.ratio !== null) {
      assert.ok(r.ceiling > 0);
      assert.ok(
        Math.abs(r.ratio - r.mb / r.ceiling) < 0.02 * Math.max(1, r.ratio),
        `${name}: ratio = value / ceiling`,
      );
    }
  }
  assert.ok(
    rows.some((r) => r.ratio !== null),
    `${name}: at least one row compares with its ceiling`,
  );
}

Deno.test("bench:crypto --quick measures OpenSSL and WebCrypto against openssl speed", async () => {
  await runBench("crypto", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number | null>[]).map((r) => ({
      mb: r.mbPerSecond as number,
      ceiling: (r.ceilingMbPerSecond ?? null) as number | null,
      ratio: (r.ratio ?? null) as number | null,
    }));
  });
});

Deno.test("bench:ec --quick measures ISA-L and the TypeScript twin against native ISA-L", async () => {
  await runBench("ec", (json) => {
    assert.equal(json.quick, true);
    return (json.results as Record<string, number | null>[]).map((r) => ({
      mb: r.mbPerS as number,
      ceiling: (r.ceilingMbPerS ?? null) as number | null,
      ratio: (r.ratio ?? null) as number | null,
    }));
  });
});

Deno.test("bench:raft --quick commits on three nodes against fdatasync + 2 RTT", async () => {
  await runBench("raft", (json) => {
    assert.equal(json.mode, "quick");
    const rows = json.rows as Record<string, number>[];
    for (const r of rows) assert.ok(r.commitsPerSecond! > 0 && r.p99Ms! >= r.p50Ms!);
    // The "throughput" column here is a latency: the ratio is p50 over the same-run floor.
    return rows.map((r) => ({ mb: r.p50Ms!, ceiling: r.floorMs!, ratio: r.ratio! }));
  });
});

Deno.test("bench:disk --quick measures UringDisk and FileDisk against fio", async () => {
  await runBench("disk", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number | null>[]).map((r) => ({
      mb: r.mbPerS as number,
      ceiling: r.ceilingMbPerS ?? null,
      ratio: r.ratio ?? null,
    }));
  });
});

Deno.test("bench:cdc --quick measures the chunker against a plain scan of the same bytes", async () => {
  await runBench("cdc", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number>[]).map((r) => ({
      mb: r.mbPerSecond!,
      ceiling: r.ceilingMbPerSecond!,
      ratio: r.ratio!,
    }));
  });
});

Deno.test("bench:engine --quick writes and reads objects through the engine against fio", async () => {
  await runBench("engine", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number | null>[]).map((r) => ({
      mb: r.mbPerSecond as number,
      ceiling: r.ceilingMbPerSecond ?? null,
      ratio: r.ratio ?? null,
    }));
  });
});

Deno.test("bench:s3 --quick drives the S3 gateway with signed requests against a bare HTTP server and the engine", async () => {
  await runBench("s3", (json) => {
    assert.equal(json.mode, "quick");
    const rows = json.rows as Record<string, number | null>[];
    for (const r of rows) assert.equal(r.errors, 0);
    return rows.map((r) => ({
      mb: r.mbPerSecond as number,
      ceiling: r.ceilingMbPerSecond ?? null,
      ratio: r.ratio ?? null,
    }));
  });
});

Deno.test("bench:gc --quick reclaims released chunks against the same store's write rate", async () => {
  await runBench("gc", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number>[]).map((r) => ({
      mb: r.reclaimMbPerS!,
      ceiling: r.writeMbPerS!,
      ratio: r.ratio!,
    }));
  });
});

Deno.test("bench:fabric --quick moves 1 MiB fragments between two processes against bare loopback TCP", async () => {
  await runBench("fabric", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number>[]).map((r) => ({
      mb: r.mbPerSecond!,
      ceiling: r.ceilingMbPerSecond!,
      ratio: r.ratio!,
    }));
  });
});

Deno.test("bench:chunk-cluster --quick spreads chunks over in-process nodes beside one node's store", async () => {
  await runBench("chunk_cluster", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as { mb: number; ceiling: number | null; ratio: number | null }[]).map((
      r,
    ) => ({ mb: r.mb, ceiling: r.ceiling, ratio: r.ratio }));
  });
});

Deno.test("bench:client-cache --quick reads L1 and L2 hits against memcpy and fio", async () => {
  await runBench("client_cache", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number | null>[]).map((r) => ({
      mb: r.mbPerSecond as number,
      ceiling: r.ceilingMbPerSecond ?? null,
      ratio: r.ratio ?? null,
    }));
  });
});

Deno.test("bench:transport --quick streams frames through each transport against bare TCP", async () => {
  await runBench("transport", (json) => {
    assert.equal(json.mode, "quick");
    return (json.rows as Record<string, number>[]).map((r) => ({
      mb: r.mbPerSecond!,
      ceiling: r.ceilingMbPerSecond!,
      ratio: r.ratio!,
    }));
  });
});

Deno.test("bench:peers --quick runs Kiseki and MinIO in turns (MinIO skipped with a line when not built)", async () => {
  // A MinIO build takes ~10 minutes: the test uses a cached one and otherwise checks the
  // skip, rather than building it.
  const cached = `${Deno.env.get("HOME") ?? "/root"}/.cache/kiseki/bin/minio`;
  const minio = Deno.env.get("KISEKI_MINIO_BIN") ??
    (await Deno.stat(cached).then(() => cached, () => "/nonexistent/kiseki-minio"));
  await runBench("peers", (json) => {
    assert.equal(json.mode, "quick");
    const rows = json.rows as {
      kiseki: { opsPerSecond: number; errors: number };
      minio: { opsPerSecond: number; errors: number } | null;
      opsRatio: number | null;
    }[];
    assert.equal(rows.length, 10, "PUT and GET of five size/concurrency cases");
    const skipped = (json.minio as { skipped?: string }).skipped;
    for (const r of rows) {
      assert.equal(r.kiseki.errors, 0);
      assert.equal(r.minio === null, skipped !== undefined, "MinIO rows exactly when it ran");
      if (r.minio !== null) assert.equal(r.minio.errors, 0);
    }
    return rows.map((r) => ({
      mb: r.kiseki.opsPerSecond,
      ceiling: r.minio?.opsPerSecond ?? null,
      ratio: r.opsRatio,
    }));
  }, { KISEKI_MINIO_BIN: minio });
});
