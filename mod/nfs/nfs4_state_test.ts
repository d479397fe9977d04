import assert from "node:assert/strict";
import { LockDeniedError, lockRange, NFS4_LENGTH_TO_EOF, Nfs4State } from "./nfs4_state.ts";
import {
  NFS4ERR_BAD_STATEID,
  NFS4ERR_BADSESSION,
  NFS4ERR_EXPIRED,
  NFS4ERR_INVAL,
  NFS4ERR_OLD_STATEID,
  NFS4ERR_RESOURCE,
  READ_LT,
  WRITE_LT,
} from "./nfs4_const.ts";
import { Nfs4Error } from "./nfs4_errors.ts";

const SESSION = {
  maxOps: 16,
  maxRequestBytes: 1 << 20,
  maxResponseBytes: 1 << 20,
  slots: 4,
  maxCachedBytes: 4096,
};

function stateWith(options: Partial<ConstructorParameters<typeof Nfs4State>[0]> = {}) {
  let nowMs = 1_000_000;
  const state = new Nfs4State({ now: () => nowMs, boot: 7, leaseMs: 1000, ...options });
  return { state, advance: (ms: number) => (nowMs += ms) };
}

function confirmed(state: Nfs4State, owner: string) {
  const c = state.exchangeId(new TextEncoder().encode(owner), new Uint8Array(8), false);
  state.confirm(c);
  return { client: c, session: state.createSession(c, SESSION) };
}

function statusOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof Nfs4Error) return e.status;
    throw e;
  }
  return 0;
}

Deno.test("Nfs4State expires a client silent for two leases, with its sessions and state", () => {
  const { state, advance } = stateWith();
  const a = confirmed(state, "a");
  const b = confirmed(state, "b");
  const open = state.open(a.client, "o", "f", 3, 0);
  advance(1500);
  state.renew(b.client);
  advance(1000);
  // a was last heard 2.5 leases ago: the next EXCHANGE_ID sweeps it away.
  state.exchangeId(new TextEncoder().encode("c"), new Uint8Array(8), false);
  assert.equal(statusOf(() => state.session(a.session.id)), NFS4ERR_BADSESSION);
  assert.equal(statusOf(() => state.client(a.client.id)), NFS4ERR_EXPIRED);
  assert.equal(statusOf(() => state.find(open)), NFS4ERR_BAD_STATEID);
  assert.equal(state.session(b.session.id).client, b.client);
  assert.deepEqual(state.forgotten, [a.client.record]);
});

Deno.test("Nfs4State holds a client to its stateid and lock owner limits", () => {
  const { state } = stateWith({ stateidsPerClientMax: 3, lockOwnersPerClientMax: 1 });
  const { client } = confirmed(state, "limits");
  const o1 = state.open(client, "o1", "f1", 3, 0);
  state.open(client, "o2", "f2", 3, 0);
  const lock = state.lockStateFor(o1, { clientId: client.id, owner: new Uint8Array([1]) });
  assert.equal(statusOf(() => state.open(client, "o3", "f3", 1, 0)), NFS4ERR_RESOURCE);
  // The same open owner upgrading its open takes no new stateid.
  assert.equal(state.open(client, "o1", "f1", 1, 0), o1);
  state.free(lock);
  state.lockStateFor(o1, { clientId: client.id, owner: new Uint8Array([1]) });
  const o2 = state.open(client, "o2", "f2", 1, 0);
  assert.equal(
    statusOf(() => state.lockStateFor(o2, { clientId: client.id, owner: new Uint8Array([2]) })),
    NFS4ERR_RESOURCE,
  );
});

Deno.test("Nfs4State refuses more clients than its limit", () => {
  const { state } = stateWith({ clientsMax: 2 });
  confirmed(state, "one");
  confirmed(state, "two");
  assert.equal(
    statusOf(() => state.exchangeId(new TextEncoder().encode("three"), new Uint8Array(8), false)),
    NFS4ERR_RESOURCE,
  );
});

Deno.test("Nfs4State splits and merges byte ranges of one lock owner", () => {
  const { state } = stateWith();
  const { client } = confirmed(state, "ranges");
  const open = state.open(client, "o", "f", 3, 0);
  const mine = state.lockStateFor(open, { clientId: client.id, owner: new Uint8Array([1]) });
  const theirs = state.lockStateFor(
    state.open(client, "p", "f", 3, 0),
    { clientId: client.id, owner: new Uint8Array([2]) },
  );
  state.lock(mine, WRITE_LT, lockRange(0n, NFS4_LENGTH_TO_EOF));
  state.unlock(mine, lockRange(100n, 100n));
  assert.deepEqual(mine.ranges.map((r) => [r.start, r.end]), [[0n, 100n], [200n, 1n << 64n]]);
  state.lock(theirs, READ_LT, lockRange(150n, 10n));
  let denied: unknown = null;
  try {
    state.lock(theirs, READ_LT, lockRange(190n, 20n));
  } catch (e) {
    denied = e;
  }
  assert.ok(denied instanceof LockDeniedError);
  assert.equal(denied.denied.start, 200n);
  assert.equal(denied.denied.length, NFS4_LENGTH_TO_EOF);
  // A read lock of mine over theirs is fine (both read); a write lock is not.
  assert.equal(statusOf(() => state.lock(mine, READ_LT, lockRange(150n, 5n))), 0);
  assert.ok(state.conflict("f", mine.lockOwnerKey, WRITE_LT, lockRange(155n, 1n)) !== null);
  assert.equal(statusOf(() => lockRange(1n << 63n, 1n << 63n)), 0);
  assert.equal(statusOf(() => lockRange((1n << 64n) - 1n, 2n)), NFS4ERR_INVAL);
  const seqid = mine.seqid;
  state.unlock(mine, lockRange(0n, 1n));
  assert.equal(statusOf(() => state.find({ seqid, other: mine.other })), NFS4ERR_OLD_STATEID);
});
