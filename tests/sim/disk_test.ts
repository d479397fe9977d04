import assert from "node:assert/strict";
import { Prng } from "../../mod/base/mod.ts";
import type { Entry } from "../../mod/raft/types.ts";
import { DiskFaultError, type DiskFaults, NO_DISK_FAULTS, SimDisk } from "./disk.ts";

const CONF = { voters: [1, 2, 3], learners: [] };

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) {
    out.push({ term, index: i, type: "normal", data: new TextEncoder().encode(`e${i}`) });
  }
  return out;
}

function disk(seed: number, faults: Partial<DiskFaults> = {}, lose = false): SimDisk {
  return new SimDisk({
    prng: new Prng(seed),
    initialConf: CONF,
    bootstrapIndex: 0,
    faults: { ...NO_DISK_FAULTS, ...faults },
    bugs: { loseLastPersistedBatch: lose },
  });
}

Deno.test("SimDisk shows staged writes at once and keeps only persisted ones across a crash", () => {
  const d = disk(1);
  d.append(entries(1, 3, 1));
  d.setHardState({ term: 1, vote: 2, commit: 2 });
  d.persistNow();
  d.append(entries(4, 6, 1));
  d.setHardState({ term: 2, vote: 3, commit: 5 });
  assert.equal(d.lastIndex(), 6);
  assert.equal(d.initialState().hardState.term, 2);
  const report = d.crash();
  assert.equal(report.lostWrites, 2);
  assert.throws(() => d.lastIndex(), /disk used while its host is down/);
  d.restart();
  assert.equal(d.lastIndex(), 3);
  assert.deepEqual(d.initialState().hardState, { term: 1, vote: 2, commit: 2 });
  assert.deepEqual(d.initialState().confState, CONF);
});

Deno.test("SimDisk torn writes keep a strict prefix of the unpersisted batch", () => {
  const kept = new Set<number>();
  for (let seed = 0; seed < 200; seed++) {
    const d = disk(seed, { tornWriteProbability: 1 });
    d.append(entries(1, 4, 1));
    d.setHardState({ term: 1, vote: 1, commit: 2 });
    d.persistNow();
    // A new leader overwrites the uncommitted 3..4; this batch is never acknowledged.
    d.append(entries(3, 8, 2));
    d.setHardState({ term: 2, vote: 0, commit: 2 });
    d.crash();
    d.restart();
    const last = d.lastIndex();
    // The hard state comes last in the batch: a torn batch never reaches it.
    assert.deepEqual(d.initialState().hardState, { term: 1, vote: 1, commit: 2 });
    assert.equal(d.term(1), 1);
    assert.equal(d.term(2), 1);
    if (d.term(3) === 1) {
      assert.equal(last, 4, "the old log, untouched");
    } else {
      assert.ok(last >= 3 && last <= 8, `a prefix of the new entries, got to ${last}`);
      for (let i = 3; i <= last; i++) assert.equal(d.term(i), 2);
    }
    kept.add(d.term(3) === 1 ? 0 : last);
  }
  // The tear point varies with the seed: nothing kept, or the truncation and some entries.
  assert.ok(kept.size >= 4, `tear points seen: ${[...kept]}`);
});

Deno.test("SimDisk persistNow() fails with DiskFaultError and leaves the batch undurable", () => {
  const d = disk(3, { persistFailProbability: 1 });
  d.append(entries(1, 2, 1));
  assert.throws(() => d.persistNow(), DiskFaultError);
  d.crash();
  d.restart();
  assert.equal(d.lastIndex(), 0);
});

Deno.test("SimDisk keeps a snapshot with trailing entries across a restart", () => {
  const d = disk(4);
  d.append(entries(1, 10, 1));
  d.setHardState({ term: 1, vote: 1, commit: 10 });
  d.persistNow();
  const data = new Uint8Array([7]);
  d.createSnapshot(8, CONF, data);
  d.compact(6);
  d.persistNow();
  d.crash();
  d.restart();
  assert.equal(d.firstIndex(), 7);
  assert.equal(d.lastIndex(), 10);
  assert.equal(d.snapshot().meta.index, 8);
  assert.deepEqual(d.snapshot().data, data);
  assert.equal(d.term(6), 1);
  assert.deepEqual(d.entries(7, 11, 1 << 20).map((e) => e.index), [7, 8, 9, 10]);
});

Deno.test("SimDisk installs a snapshot from a leader and survives a restart", () => {
  const d = disk(5);
  d.append(entries(1, 3, 1));
  d.applySnapshot({ meta: { index: 20, term: 3, conf: CONF }, data: new Uint8Array([1]) });
  d.setHardState({ term: 3, vote: 0, commit: 20 });
  d.persistNow();
  d.crash();
  d.restart();
  assert.equal(d.firstIndex(), 21);
  assert.equal(d.lastIndex(), 20);
  assert.equal(d.term(20), 3);
});

Deno.test("SimDisk with the lose-persisted bug drops an acknowledged batch", () => {
  const d = disk(6, {}, true);
  d.append(entries(1, 2, 1));
  d.persistNow();
  d.append(entries(3, 4, 1));
  d.persistNow();
  d.crash();
  d.restart();
  assert.equal(d.lastIndex(), 2);
});
