// One conformance suite for every Disk implementation: each case is registered as a
// Deno.test for a harness, so UringDisk, FileDisk, SimDisk and a fault-free FaultyDisk pass
// identical checks of the port's contract (mod/disk/device.ts). Cases an implementation
// cannot take part in (power loss on a real file) are registered as ignored with the reason.

import assert from "node:assert/strict";
import { missingPart, Prng } from "../../mod/base/mod.ts";
import {
  type Disk,
  DISK_BATCH_OPS_MAX,
  DISK_ERRNO,
  DiskError,
  type DiskOp,
} from "../../mod/disk/mod.ts";

/** A fresh world for one test: devices it opens, and whatever they live in. */
export interface DiskHarness {
  /** Opens a fresh, zero-filled device of `sizeBytes`. */
  create(sizeBytes: number): Promise<Disk>;
  /** Opens the device of `disk` again (after close(); while open it must fail EBUSY). */
  reopen(disk: Disk): Promise<Disk>;
  /** Power loss: unsynced writes are dropped; returns the device reopened. */
  crash?(disk: Disk): Promise<Disk>;
  /** Opens a device file by path, for implementations backed by files. */
  openPath?(path: string, sizeBytes: number): Promise<Disk>;
  /** A directory the test may create device files in (with openPath). */
  directory?: string;
  cleanup(): Promise<void>;
}

export interface DiskConformanceOptions {
  /** Prefix of every test name, e.g. "Disk[io_uring]". */
  name: string;
  /** Called inside each test, so an absent implementation costs nothing when ignored. */
  harness: () => Promise<DiskHarness>;
  /**
   * Why the implementation is missing here: every case is registered ignored with this reason
   * in its name (under CI=true the run fails instead; see missingPart()).
   */
  ignoreReason?: string;
  /** Why crash cases cannot run here (the harness has no crash()). */
  noCrashReason?: string;
  /** Why path cases cannot run here (the harness has no openPath()). */
  noPathReason?: string;
}

const DEVICE_BYTES = 1 << 20;
const LARGE_DEVICE_BYTES = 8 << 20;

function fail(message: string): never {
  throw new Error(message);
}

function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) {
    fail(`${what}: length ${actual.length}, expected ${expected.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      fail(`${what}: first difference at byte ${i}: ${actual[i]} != ${expected[i]}`);
    }
  }
}

/** Rejects with a DiskError of `code` (and its errno), returning it for more checks. */
async function rejectsWith(
  promise: Promise<unknown>,
  code: keyof typeof DISK_ERRNO,
  what: string,
): Promise<DiskError> {
  try {
    await promise;
  } catch (e) {
    if (!(e instanceof DiskError)) fail(`${what}: threw ${String(e)}, not a DiskError`);
    assert.equal(e.code, code, `${what}: ${e.message}`);
    assert.equal(e.errno, DISK_ERRNO[code], `${what}: errno`);
    return e;
  }
  fail(`${what}: resolved, expected ${code}`);
}

/** Length unit for a disk: transfers must be multiples of it. */
function unit(disk: Disk): number {
  return Math.max(1, disk.alignmentBytes);
}

/** Reads `length` bytes at `offset` into a fresh aligned buffer. */
async function readAt(disk: Disk, offsetBytes: number, length: number): Promise<Uint8Array> {
  const [buffer] = disk.allocateAligned(1, length);
  const done = await disk.submit([{ kind: "read", offsetBytes, buffer: buffer! }]);
  assert.deepEqual(done, [length]);
  return buffer!;
}

/** Writes seeded bytes at `offset`; returns a copy of them. */
async function writeAt(
  disk: Disk,
  offsetBytes: number,
  length: number,
  seed: number,
): Promise<Uint8Array> {
  const [buffer] = disk.allocateAligned(1, length);
  new Prng(seed).fill(buffer!);
  const done = await disk.submit([{ kind: "write", offsetBytes, buffer: buffer! }]);
  assert.deepEqual(done, [length]);
  return buffer!.slice();
}

export function registerDiskConformance(options: DiskConformanceOptions): void {
  // A missing implementation fails CI (missingPart()); a case that does not apply to this
  // implementation (no crash(), no openPath()) is skipped by design, in CI too.
  const ignore = missingPart(options.name, options.ignoreReason);
  const suffix = ignore ? ` [ignored: ${options.ignoreReason}]` : "";
  const test = (
    name: string,
    fn: (h: DiskHarness) => Promise<void>,
    skipReason?: string,
  ): void => {
    const skipped = !ignore && skipReason !== undefined;
    Deno.test({
      name: `${options.name} ${name}${suffix}${skipped ? ` [not applicable: ${skipReason}]` : ""}`,
      ignore: ignore || skipped,
      fn: async () => {
        const h = await options.harness();
        try {
          await fn(h);
        } finally {
          await h.cleanup();
        }
      },
    });
  };

  test("reports its size, alignment and mode", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    assert.equal(disk.sizeBytes, DEVICE_BYTES);
    assert.ok(disk.alignmentBytes === 1 || disk.alignmentBytes === 4096, "alignment 1 or 4096");
    assert.equal(disk.direct, disk.alignmentBytes === 4096, "O_DIRECT <=> 4096 alignment");
    assert.ok(disk.reason.length > 0, "says why it runs as it does");
    assert.ok(disk.implementation.length > 0);
    assert.equal(disk.closed, false);
    await disk.close();
    assert.equal(disk.closed, true);
  });

  test("a fresh device reads as zeros", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const all = await readAt(disk, 0, DEVICE_BYTES);
    assertBytes(all, new Uint8Array(DEVICE_BYTES), "fresh device");
    await disk.close();
  });

  test("reads what was written (read-your-writes)", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const u = unit(disk);
    const a = await writeAt(disk, 0, 8 * 1024, 1);
    const b = await writeAt(disk, 64 * 1024, 4 * u, 2);
    const c = await writeAt(disk, DEVICE_BYTES - 16 * 1024, 16 * 1024, 3);
    assertBytes(await readAt(disk, 0, 8 * 1024), a, "a");
    assertBytes(await readAt(disk, 64 * 1024, 4 * u), b, "b");
    assertBytes(await readAt(disk, DEVICE_BYTES - 16 * 1024, 16 * 1024), c, "c");
    // Overwrite part of a; the rest keeps its bytes.
    const a2 = await writeAt(disk, 4096, 4096, 4);
    const expected = a.slice();
    expected.set(a2, 4096);
    assertBytes(await readAt(disk, 0, 8 * 1024), expected, "a overwritten");
    await disk.close();
  });

  test("one batch mixes reads and writes and reports bytes per op", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const a = await writeAt(disk, 0, 16384, 10);
    const [b, c, readA, readZero] = disk.allocateAligned(4, 16384);
    new Prng(11).fill(b!);
    new Prng(12).fill(c!);
    const ops: DiskOp[] = [
      { kind: "write", offsetBytes: 32768, buffer: b! },
      { kind: "read", offsetBytes: 0, buffer: readA! },
      { kind: "write", offsetBytes: 65536, buffer: c! },
      { kind: "read", offsetBytes: 131072, buffer: readZero! },
      { kind: "read", offsetBytes: 4096, buffer: readA!.subarray(0, 0) },
    ];
    assert.deepEqual(await disk.submit(ops), [16384, 16384, 16384, 16384, 0]);
    assertBytes(readA!, a, "read in batch");
    assertBytes(readZero!, new Uint8Array(16384), "unwritten range in batch");
    assertBytes(await readAt(disk, 32768, 16384), b!, "b");
    assertBytes(await readAt(disk, 65536, 16384), c!, "c");
    assert.deepEqual(await disk.submit([]), [], "an empty batch does nothing");
    await disk.close();
  });

  test("transfers at and across alignment boundaries match a model", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const model = new Uint8Array(DEVICE_BYTES);
    const u = unit(disk);
    // [offset, length]: aligned ones always; odd ones where the disk allows them.
    const cases: [number, number][] = [
      [0, 4096],
      [4096, 4096],
      [8192, 12288],
      [40960, 5 * 4096],
      [DEVICE_BYTES - 4096, 4096],
    ];
    if (u === 1) {
      cases.push(
        [0, 1],
        [1, 3],
        [511, 2],
        [4095, 2],
        [4097, 8191],
        [8191, 1],
        [12287, 4098],
        [100_001, 65_537],
        [DEVICE_BYTES - 1, 1],
      );
    }
    let seed = 100;
    for (const [offset, length] of cases) {
      const data = await writeAt(disk, offset, length, seed++);
      model.set(data, offset);
      assertBytes(await readAt(disk, offset, length), data, `write ${offset}+${length}`);
    }
    assertBytes(await readAt(disk, 0, DEVICE_BYTES), model, "whole device vs model");
    // Reads across the boundaries of earlier writes see both sides.
    for (const [offset, length] of [[0, 3 * u], [4096 - u, 2 * u], [8192 - u, 4 * u]]) {
      assertBytes(
        await readAt(disk, offset!, length!),
        model.subarray(offset!, offset! + length!),
        `read ${offset}+${length}`,
      );
    }
    await disk.close();
  });

  test("the last block is addressable and nothing past the end is", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const u = unit(disk);
    const [block, two] = disk.allocateAligned(2, 2 * u);
    const last = block!.subarray(0, u);
    new Prng(20).fill(last);
    assert.deepEqual(
      await disk.submit([{ kind: "write", offsetBytes: DEVICE_BYTES - u, buffer: last }]),
      [u],
    );
    const back = await readAt(disk, DEVICE_BYTES - u, u);
    assertBytes(back, last, "last block");
    const pastEnd = [
      { kind: "read" as const, offsetBytes: DEVICE_BYTES, buffer: two!.subarray(0, u) },
      { kind: "read" as const, offsetBytes: DEVICE_BYTES - u, buffer: two! },
      { kind: "write" as const, offsetBytes: DEVICE_BYTES, buffer: two!.subarray(0, u) },
      { kind: "read" as const, offsetBytes: 2 ** 52, buffer: two!.subarray(0, u) },
    ];
    for (const op of pastEnd) {
      const e = await rejectsWith(disk.submit([op]), "EINVAL", `${op.kind} at ${op.offsetBytes}`);
      assert.equal(e.opIndex, 0);
      assert.match(e.message, /past the end/);
    }
    // A zero-length op at the very end is in range and does nothing.
    assert.deepEqual(
      await disk.submit([{ kind: "read", offsetBytes: DEVICE_BYTES, buffer: two!.subarray(0, 0) }]),
      [0],
    );
    await disk.close();
  });

  test("a batch with one bad op performs none of its ops", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const u = unit(disk);
    const [good, other] = disk.allocateAligned(2, 4096);
    good!.fill(0xaa);
    const e = await rejectsWith(
      disk.submit([
        { kind: "write", offsetBytes: 0, buffer: good! },
        { kind: "read", offsetBytes: DEVICE_BYTES, buffer: other!.subarray(0, u) },
      ]),
      "EINVAL",
      "batch with an op past the end",
    );
    assert.equal(e.opIndex, 1);
    assertBytes(await readAt(disk, 0, 4096), new Uint8Array(4096), "write of refused batch");
    await disk.close();
  });

  test("large ops and batches deeper than any queue", async (h) => {
    const disk = await h.create(LARGE_DEVICE_BYTES);
    const big = await writeAt(disk, 0, 4 << 20, 30);
    assertBytes(await readAt(disk, 0, 4 << 20), big, "4 MiB op");
    const count = 300;
    const buffers = disk.allocateAligned(count, 4096);
    const prng = new Prng(31);
    const writes: DiskOp[] = buffers.map((buffer, i) => ({
      kind: "write",
      offsetBytes: (4 << 20) + i * 4096,
      buffer: prng.fill(buffer),
    }));
    const copies = buffers.map((b) => b.slice());
    assert.deepEqual(await disk.submit(writes), new Array(count).fill(4096));
    for (const b of buffers) b.fill(0);
    const reads: DiskOp[] = buffers.map((buffer, i) => ({
      kind: "read",
      offsetBytes: (4 << 20) + i * 4096,
      buffer,
    }));
    assert.deepEqual(await disk.submit(reads), new Array(count).fill(4096));
    for (let i = 0; i < count; i++) assertBytes(buffers[i]!, copies[i]!, `op ${i}`);
    // The largest batch the port takes, of zero-length ops.
    const empty = new Uint8Array(0);
    const full = Array.from({ length: DISK_BATCH_OPS_MAX }, (): DiskOp => ({
      kind: "read",
      offsetBytes: 0,
      buffer: empty,
    }));
    assert.equal((await disk.submit(full)).length, DISK_BATCH_OPS_MAX);
    await disk.close();
  });

  test("concurrent submits all complete and land", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const preBytes = 131072;
    const pre = await writeAt(disk, 0, preBytes, 40);
    const writers = 48;
    const buffers = disk.allocateAligned(writers + 16, 8192);
    const prng = new Prng(41);
    const pending: Promise<number[]>[] = [];
    for (let i = 0; i < writers; i++) {
      const ops: DiskOp[] = [
        { kind: "write", offsetBytes: preBytes + i * 8192, buffer: prng.fill(buffers[i]!) },
      ];
      pending.push(disk.submit(ops));
      // Interleave reads of the pre-written region, some in their own submits.
      if (i % 3 === 0) {
        const j = writers + (i / 3);
        pending.push(
          disk.submit([{ kind: "read", offsetBytes: (j - writers) * 4096, buffer: buffers[j]! }]),
        );
      }
    }
    const done = await Promise.all(pending);
    for (const d of done) assert.deepEqual(d, [8192]);
    for (let j = writers; j < writers + 16; j++) {
      const offset = (j - writers) * 4096;
      assertBytes(buffers[j]!, pre.subarray(offset, offset + 8192), `concurrent read ${j}`);
    }
    for (let i = 0; i < writers; i++) {
      assertBytes(await readAt(disk, preBytes + i * 8192, 8192), buffers[i]!, `writer ${i}`);
    }
    // sync() called among submits waits for the ones called before it.
    const w = disk.submit([{ kind: "write", offsetBytes: 0, buffer: buffers[0]! }]);
    await Promise.all([w, disk.sync()]);
    await disk.close();
  });

  test("sync() then close() keeps the data for the next open", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const a = await writeAt(disk, 12288, 20480, 50);
    await disk.sync();
    await disk.close();
    const again = await h.reopen(disk);
    assert.equal(again.sizeBytes, DEVICE_BYTES);
    assertBytes(await readAt(again, 12288, 20480), a, "after reopen");
    await again.close();
  });

  test(
    "power loss keeps synced writes and loses unsynced ones",
    async (h) => {
      const disk = await h.create(DEVICE_BYTES);
      const a = await writeAt(disk, 0, 8192, 60);
      await disk.sync();
      await writeAt(disk, 65536, 8192, 61);
      const overwrite = await writeAt(disk, 0, 4096, 62);
      assertBytes(await readAt(disk, 0, 4096), overwrite, "visible before the crash");
      const after = await h.crash!(disk);
      assert.equal(disk.closed, true, "the crashed handle is dead");
      await rejectsWith(disk.submit([]), "EBADF", "submit on the crashed handle");
      assertBytes(await readAt(after, 0, 8192), a, "synced write survives");
      assertBytes(await readAt(after, 65536, 8192), new Uint8Array(8192), "unsynced write lost");
      // And the device keeps working after recovery.
      const b = await writeAt(after, 65536, 4096, 63);
      await after.sync();
      const again = await h.crash!(after);
      assertBytes(await readAt(again, 65536, 4096), b, "write after recovery, synced");
      await again.close();
    },
    options.noCrashReason,
  );

  test("close() lets queued work finish, then refuses calls with EBADF", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const [buffer] = disk.allocateAligned(1, 65536);
    new Prng(70).fill(buffer!);
    const copy = buffer!.slice();
    const inflight = disk.submit([{ kind: "write", offsetBytes: 0, buffer: buffer! }]);
    const closing = disk.close();
    assert.equal(disk.closed, true);
    assert.deepEqual(await inflight, [65536], "a submit called before close() completes");
    await closing;
    await rejectsWith(
      disk.submit([{ kind: "read", offsetBytes: 0, buffer: buffer! }]),
      "EBADF",
      "submit",
    );
    await rejectsWith(disk.sync(), "EBADF", "sync");
    await disk.close(); // idempotent
    const again = await h.reopen(disk);
    assertBytes(await readAt(again, 0, 65536), copy, "queued write reached the device");
    await again.close();
  });

  test("a device is exclusive: opening it twice fails with EBUSY", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    await rejectsWith(h.reopen(disk), "EBUSY", "second open");
    assert.equal(disk.closed, false, "the first handle is unaffected");
    await writeAt(disk, 0, 4096, 80);
    await disk.close();
    const again = await h.reopen(disk);
    await again.close();
  });

  test("bad input is refused with EINVAL and leaves the disk usable", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const u = unit(disk);
    const [ok, second] = disk.allocateAligned(2, 4096);
    const bad: [string, unknown][] = [
      ["not an array", { kind: "read", offsetBytes: 0, buffer: ok }],
      ["null op", [null]],
      ["unknown kind", [{ kind: "erase", offsetBytes: 0, buffer: ok }]],
      ["negative offset", [{ kind: "read", offsetBytes: -u, buffer: ok }]],
      ["fractional offset", [{ kind: "read", offsetBytes: 1.5, buffer: ok }]],
      ["NaN offset", [{ kind: "read", offsetBytes: NaN, buffer: ok }]],
      ["string offset", [{ kind: "read", offsetBytes: "0", buffer: ok }]],
      ["unsafe offset", [{ kind: "read", offsetBytes: 2 ** 53, buffer: ok }]],
      ["ArrayBuffer buffer", [{ kind: "read", offsetBytes: 0, buffer: new ArrayBuffer(4096) }]],
      ["Uint16Array buffer", [{ kind: "read", offsetBytes: 0, buffer: new Uint16Array(2048) }]],
      ["no buffer", [{ kind: "write", offsetBytes: 0 }]],
      [
        "too many ops",
        Array.from({ length: DISK_BATCH_OPS_MAX + 1 }, () => ({
          kind: "read",
          offsetBytes: 0,
          buffer: ok!.subarray(0, 0),
        })),
      ],
      [
        "two writes overlapping",
        [
          { kind: "write", offsetBytes: 0, buffer: ok },
          { kind: "write", offsetBytes: 4096 - u, buffer: second },
        ],
      ],
      [
        "a read overlapping a write",
        [
          { kind: "read", offsetBytes: 8192, buffer: ok },
          { kind: "write", offsetBytes: 8192, buffer: second },
        ],
      ],
    ];
    for (const [what, ops] of bad) {
      await rejectsWith(disk.submit(ops as DiskOp[]), "EINVAL", what);
    }
    // Overlapping reads are fine: nothing depends on their order.
    assert.deepEqual(
      await disk.submit([
        { kind: "read", offsetBytes: 0, buffer: ok! },
        { kind: "read", offsetBytes: 0, buffer: second! },
      ]),
      [4096, 4096],
    );
    await writeAt(disk, 0, 4096, 90);
    await disk.close();
  });

  test("O_DIRECT rules: unaligned offsets, lengths and buffers fail only when direct", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const [slab] = disk.allocateAligned(1, 3 * 4096);
    const unaligned: [string, DiskOp][] = [
      ["offset", { kind: "read", offsetBytes: 512, buffer: slab!.subarray(0, 4096) }],
      ["length", { kind: "write", offsetBytes: 0, buffer: slab!.subarray(0, 4000) }],
      ["buffer", { kind: "read", offsetBytes: 0, buffer: slab!.subarray(1, 4097) }],
      ["buffer by 512", { kind: "write", offsetBytes: 0, buffer: slab!.subarray(512, 4608) }],
    ];
    for (const [what, op] of unaligned) {
      if (disk.alignmentBytes > 1) {
        const e = await rejectsWith(disk.submit([op]), "EINVAL", `unaligned ${what}`);
        assert.match(e.message, /multiples of 4096|4096-byte boundary/);
      } else {
        assert.deepEqual(await disk.submit([op]), [op.buffer.length], `unaligned ${what}`);
      }
    }
    await disk.close();
  });

  test("allocateAligned() gives distinct usable buffers and refuses bad sizes", async (h) => {
    const disk = await h.create(DEVICE_BYTES);
    const buffers = disk.allocateAligned(3, 8192);
    assert.equal(buffers.length, 3);
    buffers.forEach((b, i) => {
      assert.equal(b.length, 8192);
      b.fill(i + 1);
    });
    buffers.forEach((b, i) => assert.ok(b.every((x) => x === i + 1), "buffers do not overlap"));
    const ops = buffers.map((buffer, i): DiskOp => ({
      kind: "write",
      offsetBytes: i * 8192,
      buffer,
    }));
    assert.deepEqual(await disk.submit(ops), [8192, 8192, 8192]);
    assert.equal(disk.allocateAligned(1, 5000)[0]!.length, 5000);
    for (
      const [count, size] of [[0, 4096], [1, 0], [-1, 4096], [1.5, 4096], [1, NaN], [1, 2 ** 40]]
    ) {
      assert.throws(
        () => disk.allocateAligned(count!, size!),
        (e: unknown) => e instanceof DiskError && e.code === "EINVAL",
        `allocateAligned(${count}, ${size})`,
      );
    }
    await disk.close();
  });

  test("open() refuses sizes that are not positive multiples of 4096", async (h) => {
    for (const size of [0, -4096, 1000, 4096.5, NaN, 4097, 2 ** 51]) {
      await rejectsWith(h.create(size), "EINVAL", `sizeBytes ${size}`);
    }
  });

  test(
    "open() creates, extends, and refuses to shrink device files",
    async (h) => {
      const path = `${h.directory}/device`;
      await rejectsWith(
        h.openPath!(`${h.directory}/missing/device`, 4096),
        "ENOENT",
        "missing dir",
      );
      await Deno.writeFile(path, new Uint8Array(4096).fill(7));
      const disk = await h.openPath!(path, 16384);
      assertBytes(await readAt(disk, 0, 4096), new Uint8Array(4096).fill(7), "old bytes kept");
      assertBytes(await readAt(disk, 4096, 12288), new Uint8Array(12288), "extension reads zeros");
      await disk.close();
      assert.equal((await Deno.stat(path)).size, 16384);
      const e = await rejectsWith(h.openPath!(path, 8192), "EINVAL", "larger file");
      assert.match(e.message, /larger than sizeBytes/);
      await rejectsWith(h.openPath!(h.directory!, 4096), "EISDIR", "a directory");
    },
    options.noPathReason,
  );

  test(
    "a device file truncated behind the disk's back reads as EIO",
    async (h) => {
      const path = `${h.directory}/device`;
      const disk = await h.openPath!(path, 65536);
      await writeAt(disk, 0, 65536, 95);
      await Deno.truncate(path, 16384);
      const [first, spanning] = disk.allocateAligned(2, 16384);
      const e = await rejectsWith(
        disk.submit([
          { kind: "read", offsetBytes: 0, buffer: first!.subarray(0, 4096) },
          // Spans the new end: a short read, continued, then end of file.
          { kind: "read", offsetBytes: 8192, buffer: spanning! },
        ]),
        "EIO",
        "read past the shortened file",
      );
      assert.equal(e.opIndex, 1);
      assert.match(e.message, /end of file/);
      await disk.close();
    },
    options.noPathReason,
  );
}
