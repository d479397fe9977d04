import assert from "node:assert/strict";
import { READ_INDEX_REQUESTS_PENDING_MAX, ReadOnly } from "./read_only.ts";

const ctx = (s: string) => new TextEncoder().encode(s);

Deno.test("ReadOnly.advance() releases every request up to the acknowledged one", () => {
  const readOnly = new ReadOnly();
  readOnly.addRequest(10, 1, ctx("a"));
  readOnly.addRequest(11, 2, ctx("b"));
  readOnly.addRequest(12, 1, ctx("c"));
  assert.deepEqual([...readOnly.recvAck(3, ctx("b"))!], [3]);
  const released = readOnly.advance(ctx("b"));
  assert.deepEqual(released.map((r) => [r.index, r.from]), [[10, 1], [11, 2]]);
  assert.equal(readOnly.pendingCount, 1);
  assert.deepEqual(readOnly.lastPendingContext(), ctx("c"));
});

Deno.test("ReadOnly ignores unknown contexts and duplicate requests", () => {
  const readOnly = new ReadOnly();
  assert.equal(readOnly.recvAck(2, ctx("x")), null);
  assert.deepEqual(readOnly.advance(ctx("x")), []);
  readOnly.addRequest(10, 1, ctx("a"));
  readOnly.addRequest(20, 1, ctx("a"));
  assert.equal(readOnly.pendingCount, 1);
  assert.equal(readOnly.advance(ctx("a"))[0].index, 10);
  assert.equal(readOnly.lastPendingContext(), null);
});

Deno.test("ReadOnly.addRequest() refuses past READ_INDEX_REQUESTS_PENDING_MAX", () => {
  const readOnly = new ReadOnly();
  for (let i = 0; i < READ_INDEX_REQUESTS_PENDING_MAX; i++) {
    assert.equal(readOnly.addRequest(1, 1, ctx(`r${i}`)), true);
  }
  assert.equal(readOnly.addRequest(1, 1, ctx("one more")), false);
  readOnly.reset();
  assert.equal(readOnly.pendingCount, 0);
});
