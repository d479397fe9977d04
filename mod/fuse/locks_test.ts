import assert from "node:assert/strict";
import { F_RDLCK, F_UNLCK, F_WRLCK, LockTable } from "./locks.ts";
import { EAGAIN, EINTR } from "./abi.ts";
import { FuseError } from "./fs_api.ts";

const lock = (owner: bigint, start: bigint, end: bigint, type: number, flock = false) => ({
  owner,
  flock,
  start,
  end,
  type,
  pid: Number(owner),
});

function errnoOf(f: () => void): number | null {
  try {
    f();
    return null;
  } catch (e) {
    return (e as FuseError).errno;
  }
}

Deno.test("LockTable: write locks conflict on overlap, read locks share, own locks never conflict", () => {
  const t = new LockTable();
  t.set(1n, lock(1n, 0n, 9n, F_WRLCK));
  assert.equal(errnoOf(() => t.set(1n, lock(2n, 5n, 15n, F_RDLCK))), EAGAIN);
  assert.equal(errnoOf(() => t.set(1n, lock(2n, 10n, 15n, F_WRLCK))), null);
  assert.equal(errnoOf(() => t.set(1n, lock(1n, 0n, 20n, F_RDLCK))), EAGAIN, "2 holds 10-15");
  assert.equal(errnoOf(() => t.set(2n, lock(3n, 0n, 9n, F_WRLCK))), null, "other node");
  assert.equal(t.test(1n, lock(3n, 12n, 12n, F_RDLCK)).owner, 2n);
  assert.equal(t.test(1n, lock(3n, 30n, 40n, F_WRLCK)).type, F_UNLCK);
});

Deno.test("LockTable: unlocking the middle of a range splits it", () => {
  const t = new LockTable();
  t.set(1n, lock(1n, 0n, 99n, F_WRLCK));
  t.set(1n, lock(1n, 40n, 59n, F_UNLCK));
  assert.equal(t.count, 2);
  assert.equal(t.test(1n, lock(2n, 50n, 50n, F_WRLCK)).type, F_UNLCK);
  assert.equal(t.test(1n, lock(2n, 39n, 39n, F_WRLCK)).type, F_WRLCK);
  assert.equal(t.test(1n, lock(2n, 60n, 60n, F_WRLCK)).type, F_WRLCK);
});

Deno.test("LockTable: flock and fcntl locks do not see each other; releaseOwner drops one kind", () => {
  const t = new LockTable();
  t.set(1n, lock(1n, 0n, 0xffff_ffff_ffff_ffffn, F_WRLCK, true));
  t.set(1n, lock(2n, 0n, 9n, F_WRLCK, false));
  assert.equal(errnoOf(() => t.set(1n, lock(3n, 0n, 9n, F_RDLCK, true))), EAGAIN);
  t.releaseOwner(1n, 1n, false);
  assert.equal(errnoOf(() => t.set(1n, lock(3n, 0n, 9n, F_RDLCK, true))), EAGAIN);
  t.releaseOwner(1n, 1n, true);
  assert.equal(errnoOf(() => t.set(1n, lock(3n, 0n, 9n, F_RDLCK, true))), null);
});

Deno.test("LockTable.setWait() waits for the holder to let go, and ends with EINTR when aborted", async () => {
  const t = new LockTable();
  t.set(1n, lock(1n, 0n, 9n, F_WRLCK));
  const ac = new AbortController();
  let got = false;
  const waiting = t.setWait(1n, lock(2n, 0n, 9n, F_WRLCK), ac.signal).then(() => (got = true));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(got, false);
  t.releaseOwner(1n, 1n, false);
  await waiting;
  assert.equal(got, true);
  const ac2 = new AbortController();
  const stuck = t.setWait(1n, lock(3n, 5n, 5n, F_RDLCK), ac2.signal);
  ac2.abort();
  await assert.rejects(stuck, (e) => e instanceof FuseError && e.errno === EINTR);
});
