// Runs the Disk conformance suite against UringDisk (O_DIRECT and buffered), FileDisk, SimDisk
// (buffered and with O_DIRECT rules) and a fault-free FaultyDisk; without a usable io_uring
// shim the UringDisk cases are registered as ignored with the reason. Then the parts only
// the test disks have: injected faults, bit rot, torn writes, and selectDisk()'s choice.

import assert from "node:assert/strict";
import { defaultShimOptions } from "../../ffi/loader.ts";
import { openUringShim, type UringShim } from "../../ffi/uring/bindings.ts";
import { missingPart, Prng } from "../../mod/base/mod.ts";
import {
  chooseDiskMechanism,
  type Disk,
  DiskError,
  type DiskOp,
  FaultyDisk,
  FileDisk,
  probeUring,
  selectDisk,
  SimDisk,
  UringDisk,
  uringSchedulerTotals,
} from "../../mod/disk/mod.ts";
import { createLogger } from "../../mod/obs/mod.ts";
import { type DiskHarness, registerDiskConformance } from "./disk_conformance.ts";

type Open = (path: string, sizeBytes: number) => Promise<Disk>;

/** Device files in a fresh temporary directory; every disk still open is closed at the end. */
function fileHarness(open: Open): () => Promise<DiskHarness> {
  return async () => {
    const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
    const opened: Disk[] = [];
    const tracked: Open = async (path, sizeBytes) => {
      const disk = await open(path, sizeBytes);
      opened.push(disk);
      return disk;
    };
    let n = 0;
    return {
      directory,
      create: (sizeBytes) => tracked(`${directory}/disk-${n++}`, sizeBytes),
      reopen: (disk) => tracked(disk.path, disk.sizeBytes),
      openPath: tracked,
      cleanup: async () => {
        for (const disk of opened) await disk.close().catch(() => {});
        await Deno.remove(directory, { recursive: true });
      },
    };
  };
}

function simHarness(alignmentBytes: number, wrap: boolean): () => Promise<DiskHarness> {
  const inner = (disk: Disk): SimDisk => (wrap ? (disk as FaultyDisk).inner : disk) as SimDisk;
  const outer = (sim: SimDisk): Disk => (wrap ? new FaultyDisk(sim) : sim);
  return () =>
    Promise.resolve({
      create: (sizeBytes) =>
        Promise.resolve().then(() =>
          outer(SimDisk.create({ sizeBytes, alignmentBytes, prng: new Prng(1) }))
        ),
      reopen: (disk) => Promise.resolve().then(() => outer(inner(disk).reopen())),
      crash: (disk) =>
        Promise.resolve().then(() => {
          inner(disk).crash();
          return outer(inner(disk).reopen());
        }),
      cleanup: () => Promise.resolve(),
    });
}

const NO_CRASH = "a real file cannot lose power in a test; SimDisk covers crash semantics";
const NO_PATH = "not backed by files";

const shim = openUringShim(defaultShimOptions());
const uringUnusable = shim.ok ? probeUring(shim.lib) : `io_uring shim absent: ${shim.reason}`;
const uring: UringShim | null = shim.ok && uringUnusable === null ? shim.lib : null;
const uringIgnore = uring === null ? `${uringUnusable}; run ffi/build.sh` : undefined;

registerDiskConformance({
  name: "Disk[io_uring]",
  harness: fileHarness((path, sizeBytes) => UringDisk.open(uring!, path, { sizeBytes })),
  ignoreReason: uringIgnore,
  noCrashReason: NO_CRASH,
});
registerDiskConformance({
  name: "Disk[io_uring buffered]",
  harness: fileHarness((path, sizeBytes) =>
    UringDisk.open(uring!, path, { sizeBytes, direct: false, queueDepth: 4 })
  ),
  ignoreReason: uringIgnore,
  noCrashReason: NO_CRASH,
});
registerDiskConformance({
  name: "Disk[file]",
  harness: fileHarness((path, sizeBytes) => FileDisk.open(path, { sizeBytes })),
  noCrashReason: NO_CRASH,
});
registerDiskConformance({
  name: "Disk[sim]",
  harness: simHarness(1, false),
  noPathReason: NO_PATH,
});
registerDiskConformance({
  name: "Disk[sim with O_DIRECT rules]",
  harness: simHarness(4096, false),
  noPathReason: NO_PATH,
});
registerDiskConformance({
  name: "Disk[faulty(sim) without faults]",
  harness: simHarness(1, true),
  noPathReason: NO_PATH,
});

// ---- UringDisk specifics ----

Deno.test({
  name: "UringDisk uses O_DIRECT on this file system or says why not" +
    (uring === null ? ` [ignored: ${uringIgnore}]` : ""),
  ignore: missingPart("Disk[io_uring]", uringIgnore),
  fn: async () => {
    const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
    try {
      const disk = await UringDisk.open(uring!, `${directory}/d`, { sizeBytes: 65536 });
      if (disk.direct) {
        assert.equal(disk.alignmentBytes, 4096);
        assert.match(disk.reason, /O_DIRECT \(test read and write of block 0 passed\)/);
        const [buffer] = disk.allocateAligned(1, 4096);
        // Over-allocating and skewing gives a 4096-aligned address the kernel accepts.
        await disk.submit([{ kind: "write", offsetBytes: 0, buffer: buffer!.fill(1) }]);
      } else {
        assert.equal(disk.alignmentBytes, 1);
        assert.match(disk.reason, /buffered: the file system refused O_DIRECT/);
      }
      assert.equal(disk.queueDepth, 64);
      await disk.close();
      await assert.rejects(
        UringDisk.open(uring!, `${directory}/d`, { sizeBytes: 65536, queueDepth: 0 }),
        (e: unknown) => e instanceof DiskError && e.code === "EINVAL",
      );
    } finally {
      await Deno.remove(directory, { recursive: true });
    }
  },
});

Deno.test({
  name: "UringDisk: the submits and syncs of several disks in one turn share one FFI call" +
    (uring === null ? ` [ignored: ${uringIgnore}]` : ""),
  ignore: missingPart("Disk[io_uring]", uringIgnore),
  fn: async () => {
    const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
    const disks: UringDisk[] = [];
    try {
      for (let i = 0; i < 6; i++) {
        disks.push(await UringDisk.open(uring!, `${directory}/d${i}`, { sizeBytes: 1 << 20 }));
      }
      const written = disks.map((d, i) => d.allocateAligned(1, 8192)[0]!.fill(i + 1));
      const before = uringSchedulerTotals();
      // One turn: a write and a sync queued on every disk, a second write behind the sync.
      const steps: Promise<unknown>[] = [];
      for (const [i, d] of disks.entries()) {
        steps.push(d.submit([{ kind: "write", offsetBytes: 8192, buffer: written[i]! }]));
        steps.push(d.sync());
        steps.push(d.submit([{ kind: "write", offsetBytes: 0, buffer: written[i]! }]));
      }
      await Promise.all(steps);
      const after = uringSchedulerTotals();
      // Writes and syncs of all six disks in one call, the writes behind the syncs in a second.
      assert.equal(after.calls - before.calls, 2, JSON.stringify({ before, after }));
      assert.equal(after.rounds - before.rounds, 12);
      const back = disks.map((d) => d.allocateAligned(2, 8192));
      await Promise.all(disks.map((d, i) =>
        d.submit([
          { kind: "read", offsetBytes: 0, buffer: back[i]![0]! },
          { kind: "read", offsetBytes: 8192, buffer: back[i]![1]! },
        ])
      ));
      for (const [i, pair] of back.entries()) {
        assert.ok(pair.every((b) => b.every((x) => x === i + 1)), `disk ${i} reads its writes`);
      }
      assert.equal(uringSchedulerTotals().calls - after.calls, 1, "six disks' reads, one call");
    } finally {
      for (const d of disks) await d.close();
      await Deno.remove(directory, { recursive: true });
    }
  },
});

// ---- SimDisk ----

Deno.test("SimDisk.crash() with tearing keeps a sector-cut prefix of the last unsynced write", async () => {
  const sector = 512;
  const seen = new Set<string>();
  for (let seed = 0; seed < 64; seed++) {
    const disk = SimDisk.create({
      sizeBytes: 65536,
      prng: new Prng(seed),
      tearSectorBytes: sector,
    });
    const old = new Prng(1000).bytes(8192);
    await disk.submit([{ kind: "write", offsetBytes: 1000, buffer: old }]);
    await disk.sync();
    await disk.submit([{ kind: "write", offsetBytes: 20000, buffer: new Uint8Array(100).fill(9) }]);
    const data = new Prng(seed).bytes(3000);
    await disk.submit([{ kind: "write", offsetBytes: 1300, buffer: data }]);
    const report = disk.crash({ tear: true });
    const kept = report.tornBytesKept;
    // Cuts fall on the write's start, a sector boundary inside it, or its end.
    const end = 1300 + kept;
    assert.ok(kept === 0 || kept === 3000 || end % sector === 0, `cut at ${end}`);
    assert.ok(report.blocksLost >= 2, "both unsynced writes were dirty");
    const after = disk.reopen();
    const [back] = after.allocateAligned(1, 10000);
    await after.submit([{ kind: "read", offsetBytes: 0, buffer: back! }]);
    const expected = new Uint8Array(10000);
    expected.set(old, 1000);
    expected.set(data.subarray(0, kept), 1300);
    assert.deepEqual(back, expected, `seed ${seed}: durable prefix and old bytes only`);
    const lost = new Uint8Array(100);
    await after.submit([{ kind: "read", offsetBytes: 20000, buffer: lost }]);
    assert.deepEqual(lost, new Uint8Array(100), "earlier unsynced write lost entirely");
    seen.add(kept === 0 ? "none" : kept === 3000 ? "all" : "part");
  }
  assert.deepEqual([...seen].sort(), ["all", "none", "part"], "seeds reach every kind of tear");
});

Deno.test("SimDisk.crash() after close() still loses what was never synced", async () => {
  const disk = SimDisk.create({ sizeBytes: 8192 });
  await disk.submit([{ kind: "write", offsetBytes: 0, buffer: new Uint8Array(10).fill(5) }]);
  await disk.close();
  assert.deepEqual(disk.readDurable(0, 10), new Uint8Array(10));
  const report = disk.crash();
  assert.deepEqual(report, { blocksLost: 1, tornBytesKept: 0 });
  const again = disk.reopen();
  const back = new Uint8Array(10);
  await again.submit([{ kind: "read", offsetBytes: 0, buffer: back }]);
  assert.deepEqual(back, new Uint8Array(10));
  await again.submit([{ kind: "write", offsetBytes: 0, buffer: back }]);
  assert.throws(() => again.crash({ tear: true }), /needs a SimDisk created with a prng/);
});

Deno.test("SimDisk.create() refuses sizes it cannot hold and bad tear sectors", () => {
  for (
    const options of [{ sizeBytes: 2 ** 31 }, { sizeBytes: 4096, tearSectorBytes: 0 }, {
      sizeBytes: 4096,
      alignmentBytes: 512,
    }]
  ) {
    assert.throws(
      () => SimDisk.create(options),
      (e: unknown) => e instanceof DiskError && e.code === "EINVAL",
    );
  }
});

// ---- FaultyDisk ----

function writeOp(offsetBytes: number, length: number, fill: number): DiskOp {
  return { kind: "write", offsetBytes, buffer: new Uint8Array(length).fill(fill) };
}

async function readByte(disk: Disk, offsetBytes: number): Promise<number> {
  const buffer = new Uint8Array(1);
  await disk.submit([{ kind: "read", offsetBytes, buffer }]);
  return buffer[0]!;
}

Deno.test("FaultyDisk.failCall() fails exactly call N with the chosen code, undone", async () => {
  const sim = SimDisk.create({ sizeBytes: 65536 });
  const disk = new FaultyDisk(sim).failCall(3, "ENOSPC");
  await disk.submit([writeOp(0, 10, 1)]); // call 1
  await disk.sync(); // call 2
  await assert.rejects(
    disk.submit([writeOp(100, 10, 2)]), // call 3
    (e: unknown) =>
      e instanceof DiskError && e.code === "ENOSPC" && e.errno === 28 &&
      /injected fault on call 3 \(submit of 1 ops, not performed\)/.test(e.message),
  );
  assert.equal(await readByte(disk, 100), 0, "the failed write did not happen");
  await disk.submit([writeOp(100, 10, 3)]); // call 4 succeeds: the rule fired once
  assert.equal(await readByte(disk, 100), 3);
  assert.equal(disk.calls, 6, "submits, syncs and reads are all calls");
  assert.equal(disk.injected, 1);
  // Bad input is refused before it is counted.
  await assert.rejects(disk.submit([writeOp(65536, 1, 0)]), /EINVAL/);
  assert.equal(disk.calls, 6);
});

Deno.test("FaultyDisk.failCall({ applied: true }) performs the write and still reports EIO", async () => {
  const disk = new FaultyDisk(SimDisk.create({ sizeBytes: 8192 })).failCall(1, "EIO", {
    applied: true,
  });
  await assert.rejects(disk.submit([writeOp(0, 4, 7)]), /EIO: .*performed/);
  assert.equal(await readByte(disk, 0), 7);
});

Deno.test("FaultyDisk.failWhen() fails matching calls the given number of times", async () => {
  const disk = new FaultyDisk(SimDisk.create({ sizeBytes: 65536 })).failWhen(
    (call) => call.ops.some((op) => op.kind === "write" && op.offsetBytes === 4096),
    "EROFS",
    { times: 2 },
  );
  await disk.submit([writeOp(0, 4096, 1)]);
  for (let i = 0; i < 2; i++) {
    await assert.rejects(
      disk.submit([writeOp(4096, 10, 2)]),
      (e: unknown) => e instanceof DiskError && e.code === "EROFS",
    );
  }
  await disk.submit([writeOp(4096, 10, 2)]);
  assert.equal(disk.injected, 2);
});

Deno.test("FaultyDisk: a failed sync() leaves the disk failed", async () => {
  const disk = new FaultyDisk(SimDisk.create({ sizeBytes: 8192 })).failWhen(
    (call) => call.kind === "sync",
    "EIO",
    { times: 1 },
  );
  await disk.submit([writeOp(0, 4, 1)]);
  await assert.rejects(disk.sync(), /EIO: .*injected fault on call 2 \(sync/);
  await assert.rejects(disk.submit([writeOp(0, 4, 1)]), /recover from redundancy/);
  await assert.rejects(disk.sync(), /recover from redundancy/);
});

Deno.test("FaultyDisk.flipOnRead() corrupts what reads return, not the device", async () => {
  const sim = SimDisk.create({ sizeBytes: 8192 });
  const disk = new FaultyDisk(sim).flipOnRead(10, 0x80, { times: 1 });
  await disk.submit([writeOp(0, 64, 0x11)]);
  const buffer = new Uint8Array(64);
  await disk.submit([{ kind: "read", offsetBytes: 0, buffer }]);
  assert.equal(buffer[10], 0x91, "bit 7 flipped in the returned bytes");
  assert.equal(buffer.filter((b) => b !== 0x11).length, 1, "only that byte");
  assert.equal(await readByte(disk, 10), 0x11, "the rule retired and the device is intact");
  assert.equal(await readByte(sim, 10), 0x11);
});

Deno.test("FaultyDisk.flipAtRest() rots the stored byte of a SimDisk, durably", async () => {
  const sim = SimDisk.create({ sizeBytes: 8192 });
  const disk = new FaultyDisk(new FaultyDisk(sim));
  await disk.submit([writeOp(0, 16, 0x0f)]);
  await disk.sync();
  await disk.flipAtRest(5, 0x01);
  assert.equal(await readByte(disk, 5), 0x0e);
  assert.equal(sim.readDurable(5, 1)[0], 0x0e, "the durable image rotted too");
  sim.crash();
  assert.equal(await readByte(sim.reopen(), 5), 0x0e, "rot survives a restart");
  assert.equal(disk.calls, 3, "flipAtRest() is not a counted call");
});

Deno.test("FaultyDisk.flipAtRest() rots a byte in a real device file", async () => {
  const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
  try {
    const inner = await FileDisk.open(`${directory}/d`, { sizeBytes: 8192 });
    const disk = new FaultyDisk(inner);
    await disk.submit([writeOp(4096, 100, 0x40)]);
    await disk.flipAtRest(4100, 0x04);
    await disk.close();
    const bytes = await Deno.readFile(`${directory}/d`);
    assert.equal(bytes[4100], 0x44);
    assert.equal(bytes[4099], 0x40);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

// ---- selectDisk ----

function capture() {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: "info",
    format: "json",
    sink: { write: (l) => lines.push(JSON.parse(l)) },
  });
  return { lines, logger };
}

Deno.test("selectDisk() falls back to FileDisk when FFI is off and says so once", async () => {
  const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
  const { lines, logger } = capture();
  try {
    const shimOptions = { ...defaultShimOptions(), ffiMode: "off" as const };
    assert.equal(chooseDiskMechanism(shimOptions).kind, "file");
    const a = await selectDisk({
      path: `${directory}/a`,
      sizeBytes: 8192,
      shim: shimOptions,
      logger,
    });
    const b = await selectDisk({
      path: `${directory}/b`,
      sizeBytes: 8192,
      shim: shimOptions,
      logger,
    });
    assert.ok(a instanceof FileDisk && b instanceof FileDisk);
    assert.equal(lines.length, 1, "one line for one decision");
    assert.equal(lines[0]!.msg, "disk implementation selected");
    assert.equal(lines[0]!.impl, "file");
    assert.match(String(lines[0]!.reason), /KISEKI_FFI=off/);
    await a.close();
    await b.close();
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("selectDisk() names the missing shim and does not hide device errors", async () => {
  const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
  const { lines, logger } = capture();
  const shimOptions = { ffiDir: "/nonexistent/kiseki-disk-select", ffiMode: "auto" as const };
  try {
    const disk = await selectDisk({
      path: `${directory}/a`,
      sizeBytes: 8192,
      shim: shimOptions,
      logger,
    });
    assert.equal(disk.implementation, "file");
    assert.match(
      String(lines[0]!.reason),
      /shim not built \(\/nonexistent\/kiseki-disk-select\/libkiseki_uring\.so missing\)/,
    );
    await disk.close();
    await assert.rejects(
      selectDisk({ path: `${directory}/no/such/dir`, sizeBytes: 8192, shim: shimOptions, logger }),
      (e: unknown) => e instanceof DiskError && e.code === "ENOENT",
    );
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test({
  name: "selectDisk() prefers UringDisk and logs whether O_DIRECT held" +
    (uring === null ? ` [ignored: ${uringIgnore}]` : ""),
  ignore: missingPart("Disk[io_uring]", uringIgnore),
  fn: async () => {
    const directory = await Deno.makeTempDir({ prefix: "kiseki-disk-test-" });
    const { lines, logger } = capture();
    try {
      const disk = await selectDisk({ path: `${directory}/a`, sizeBytes: 8192, logger });
      assert.ok(disk instanceof UringDisk);
      const again = await selectDisk({ path: `${directory}/b`, sizeBytes: 8192, logger });
      assert.ok(lines.length <= 1, "at most one line (another test may have announced it)");
      for (const line of lines) {
        assert.equal(line.impl, "io_uring");
        assert.equal(line.direct, disk.direct);
        assert.match(String(line.reason), /^shim loaded from .*libkiseki_uring\.so; io_uring/);
      }
      await disk.close();
      await again.close();
    } finally {
      await Deno.remove(directory, { recursive: true });
    }
  },
});
