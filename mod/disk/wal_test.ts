import assert from "node:assert/strict";
import { FileWal, injectWalWriteFailure, WAL_SEGMENT_BYTES_MIN, WalCorruptError } from "./wal.ts";

const body = (lsn: number): Uint8Array => {
  const out = new Uint8Array(1 + (lsn * 37) % 300);
  out.fill(lsn & 0xff);
  out[0] = (lsn >> 8) & 0xff;
  return out;
};

async function segments(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".wal")) names.push(e.name);
  return names.sort();
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "kiseki-wal-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("FileWal.append() shares one fdatasync among the records of a turn, and open() returns them", async () => {
  await withDir(async (dir) => {
    const { wal, records } = await FileWal.open({ dir });
    assert.equal(records.length, 0);
    const appended = Array.from({ length: 100 }, (_, i) => wal.append(body(i + 1)));
    assert.deepEqual(appended.map((a) => a.lsn), Array.from({ length: 100 }, (_, i) => i + 1));
    await Promise.all(appended.map((a) => a.durable));
    assert.equal(wal.stats().syncs, 1);
    assert.equal(wal.durableLsn, 100);
    await wal.append(body(101)).durable;
    assert.equal(wal.stats().syncs, 2);
    await wal.close();
    const again = await FileWal.open({ dir, fromLsn: 40 });
    assert.deepEqual(
      again.records,
      Array.from({ length: 61 }, (_, i) => ({ lsn: i + 41, body: body(i + 41) })),
    );
    assert.equal(again.wal.append(body(102)).lsn, 102);
    await again.wal.close();
  });
});

Deno.test("FileWal rolls to preallocated segments and release() drops those behind a checkpoint", async () => {
  await withDir(async (dir) => {
    const { wal } = await FileWal.open({ dir, segmentBytes: WAL_SEGMENT_BYTES_MIN });
    const big = new Uint8Array(20_000).fill(7);
    for (let i = 0; i < 12; i++) await wal.append(big).durable;
    const before = await segments(dir);
    assert.ok(before.length >= 4, `segments: ${before}`);
    for (const name of before) {
      assert.equal((await Deno.stat(`${dir}/${name}`)).size, WAL_SEGMENT_BYTES_MIN);
    }
    // A record bigger than a segment gets a segment of its own size.
    const huge = new Uint8Array(WAL_SEGMENT_BYTES_MIN * 2).fill(9);
    await wal.append(huge).durable;
    assert.equal(await wal.release(12), before.length);
    assert.deepEqual(await segments(dir), [(13).toString(16).padStart(16, "0") + ".wal"]);
    await wal.close();
    const again = await FileWal.open({ dir, fromLsn: 12, segmentBytes: WAL_SEGMENT_BYTES_MIN });
    assert.equal(again.records.length, 1);
    assert.deepEqual(again.records[0]!.body, huge);
    await again.wal.close();
  });
});

/** Overwrites `bytes` at `offset` of the last segment. */
async function damageLast(dir: string, offset: number, bytes: Uint8Array): Promise<void> {
  const names = await segments(dir);
  const file = await Deno.open(`${dir}/${names[names.length - 1]}`, { write: true });
  await file.seek(offset, Deno.SeekMode.Start);
  await file.write(bytes);
  file.close();
}

Deno.test("FileWal.open() cuts a torn tail and goes on in a fresh segment", async () => {
  await withDir(async (dir) => {
    const { wal } = await FileWal.open({ dir });
    for (let i = 1; i <= 10; i++) await wal.append(body(i)).durable;
    // The last group commit: three records, the middle one torn (its bytes half written).
    const last = [11, 12, 13].map((lsn) => wal.append(body(lsn)));
    await Promise.all(last.map((a) => a.durable));
    await wal.close();
    const bytes = await Deno.readFile(`${dir}/${(await segments(dir))[0]}`);
    // Find record 12's header: lsn 12 as u64 at +8 of an 8-aligned offset.
    let at = -1;
    for (let p = 32; p < bytes.length; p += 8) {
      const view = new DataView(bytes.buffer, p, 24);
      if (view.getUint32(8) === 0 && view.getUint32(12) === 12 && view.getUint32(20) === 11) {
        at = p;
        break;
      }
    }
    assert.ok(at > 0);
    await damageLast(dir, at + 30, new Uint8Array(8).fill(0xee));
    const torn: unknown[] = [];
    const again = await FileWal.open({ dir, onTornTail: (info) => torn.push(info) });
    assert.deepEqual(again.records.map((r) => r.lsn), Array.from({ length: 11 }, (_, i) => i + 1));
    assert.equal(torn.length, 1);
    assert.equal(again.wal.append(body(12)).lsn, 12);
    await again.wal.append(body(13)).durable;
    await again.wal.close();
    assert.equal((await segments(dir)).length, 2);
    // The torn bytes stay behind in the old segment and are never read again.
    const third = await FileWal.open({ dir });
    assert.deepEqual(
      third.records,
      Array.from({ length: 13 }, (_, i) => ({ lsn: i + 1, body: body(i + 1) })),
    );
    await third.wal.close();
  });
});

Deno.test("FileWal.open() refuses a damaged record that a later group commit follows", async () => {
  await withDir(async (dir) => {
    const { wal } = await FileWal.open({ dir });
    for (let i = 1; i <= 10; i++) await wal.append(body(i)).durable;
    await wal.close();
    // Record 1 sits right after the 32-byte segment header; damage its body.
    await damageLast(dir, 32 + 24, Uint8Array.of(0xff ^ body(1)[0]!));
    await assert.rejects(FileWal.open({ dir }), WalCorruptError);
  });
});

Deno.test("FileWal.open() refuses a segment missing from the middle", async () => {
  await withDir(async (dir) => {
    const { wal } = await FileWal.open({ dir, segmentBytes: WAL_SEGMENT_BYTES_MIN });
    const big = new Uint8Array(30_000);
    for (let i = 0; i < 8; i++) await wal.append(big).durable;
    await wal.close();
    const names = await segments(dir);
    assert.ok(names.length >= 3);
    await Deno.remove(`${dir}/${names[1]}`);
    await assert.rejects(FileWal.open({ dir }), /records are missing/);
  });
});

// ---- kill -9 in the middle of group commits ----------------------------------------------

Deno.test("FileWal keeps every acknowledged record when its process is killed mid-batch", async () => {
  await withDir(async (dir) => {
    let acked = 0;
    for (const killAfter of [300, 517, 41]) {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", `--allow-read=${dir}`, `--allow-write=${dir}`, import.meta.filename!, dir],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const decoder = new TextDecoder();
      let buffered = "";
      let acks = 0;
      let killed = false;
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      for await (const chunk of child.stdout) {
        buffered += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          acked = Math.max(acked, Number(line));
          if (!killed && ++acks >= killAfter) {
            killed = true;
            child.kill("SIGKILL");
          }
        }
      }
      clearTimeout(timer);
      const status = await child.status;
      await child.stderr.cancel();
      assert.equal(status.signal, "SIGKILL");
      const { wal, records } = await FileWal.open({ dir });
      assert.ok(records.length >= acked, `${records.length} records, ${acked} acknowledged`);
      for (const [i, r] of records.entries()) {
        assert.equal(r.lsn, i + 1);
        assert.deepEqual(r.body, body(r.lsn));
      }
      await wal.close();
    }
  });
});

// The crash child: appends in bursts of group commits and prints each acknowledged LSN.
if (import.meta.main) {
  const { wal } = await FileWal.open({ dir: Deno.args[0]!, segmentBytes: WAL_SEGMENT_BYTES_MIN });
  const encoder = new TextEncoder();
  for (let round = 0;; round++) {
    const batch = Array.from({ length: 1 + (round % 13) }, () => {
      const lsn = wal.lastLsn + 1;
      return wal.append(body(lsn));
    });
    await Promise.all(batch.map(async (a) => {
      await a.durable;
      Deno.stdout.writeSync(encoder.encode(`${a.lsn}\n`));
    }));
  }
}

Deno.test("FileWal moves on from a checkpointed segment so that it can be released", async () => {
  await withDir(async (dir) => {
    const { wal } = await FileWal.open({ dir });
    const record = new Uint8Array(64 << 10);
    for (let i = 0; i < 5; i++) await wal.append(record).durable;
    assert.equal(await wal.release(5), 0);
    // Fully checkpointed and past WAL_ROLL_CHECKPOINTED_BYTES: the next record starts anew.
    await wal.append(record).durable;
    assert.equal((await segments(dir)).length, 2);
    assert.equal(await wal.release(6), 1);
    assert.deepEqual(await segments(dir), [(6).toString(16).padStart(16, "0") + ".wal"]);
    // A segment takes on disk what it holds, not its size.
    const stat = await Deno.stat(`${dir}/${(await segments(dir))[0]}`);
    if (stat.blocks !== null) assert.ok(stat.blocks * 512 < 1 << 20, `${stat.blocks} blocks`);
    await wal.close();
    const again = await FileWal.open({ dir, fromLsn: 6 });
    assert.equal(again.records.length, 0);
    assert.equal(again.wal.append(record).lsn, 7);
    await again.wal.close();
  });
});

Deno.test("FileWal tries a group commit that met a full disk again in a fresh segment, and stops on other errors", async () => {
  await withDir(async (dir) => {
    const retries: number[] = [];
    const { wal } = await FileWal.open({
      dir,
      spaceRetryMs: 5,
      onSpaceRetry: (attempt) => retries.push(attempt),
    });
    for (let i = 1; i <= 3; i++) await wal.append(body(i)).durable;
    const full = () => new Error("No space left on device (os error 28)");
    injectWalWriteFailure(wal, [full(), full()]);
    const batch = [4, 5, 6].map((lsn) => wal.append(body(lsn)));
    await Promise.all(batch.map((a) => a.durable));
    assert.deepEqual(retries, [1, 2]);
    // The first try left the batch's bytes after record 3, the second in a segment of its
    // own that the third replaced: the copy in the last segment counts.
    assert.equal((await segments(dir)).length, 2);
    await wal.append(body(7)).durable;
    injectWalWriteFailure(wal, [new Error("Input/output error (os error 5)")]);
    await assert.rejects(wal.append(body(8)).durable, /Input\/output error/);
    assert.throws(() => wal.append(body(9)), WalCorruptError);
    await wal.close();
    const again = await FileWal.open({ dir });
    // Record 8's bytes were written but its sync failed: it may or may not be there.
    const lsns = again.records.map((r) => r.lsn);
    assert.deepEqual(lsns.slice(0, 7), [1, 2, 3, 4, 5, 6, 7]);
    for (const r of again.records) assert.deepEqual(r.body, body(r.lsn));
    await again.wal.close();
  });
});
