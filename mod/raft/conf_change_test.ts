import assert from "node:assert/strict";
import { AssertionError } from "../base/mod.ts";
import {
  CONF_CHANGE_CONTEXT_BYTES_MAX,
  ConfChangeDecodeError,
  decodeConfChange,
  encodeConfChange,
} from "./conf_change.ts";
import type { ConfChange } from "./types.ts";

Deno.test("encodeConfChange() and decodeConfChange() round-trip every change type", () => {
  const changes: ConfChange[] = [
    { type: "add_voter", nodeId: 1, context: new Uint8Array(0) },
    { type: "add_learner", nodeId: 2 ** 40 + 7, context: new TextEncoder().encode("10.0.0.4") },
    { type: "remove_node", nodeId: Number.MAX_SAFE_INTEGER, context: new Uint8Array([0, 255]) },
  ];
  for (const change of changes) {
    assert.deepEqual(decodeConfChange(encodeConfChange(change)), change);
  }
});

Deno.test("encodeConfChange() writes a versioned big-endian layout", () => {
  const bytes = encodeConfChange({
    type: "add_learner",
    nodeId: 258,
    context: new Uint8Array([9]),
  });
  assert.deepEqual([...bytes], [1, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1, 9]);
});

Deno.test("decodeConfChange() reads from a view into a larger buffer", () => {
  const encoded = encodeConfChange({ type: "add_voter", nodeId: 5, context: new Uint8Array(0) });
  const buffer = new Uint8Array(encoded.length + 10);
  buffer.set(encoded, 7);
  assert.equal(decodeConfChange(buffer.subarray(7, 7 + encoded.length)).nodeId, 5);
});

Deno.test("decodeConfChange() rejects malformed bytes with ConfChangeDecodeError", () => {
  const good = encodeConfChange({ type: "add_voter", nodeId: 5, context: new Uint8Array([1]) });
  const mutate = (at: number, value: number) => {
    const copy = good.slice();
    copy[at] = value;
    return copy;
  };
  const cases: Uint8Array[] = [
    good.subarray(0, 5), // short header
    mutate(0, 2), // unknown version
    mutate(1, 9), // unknown type
    mutate(9, 0), // node id 0
    mutate(2, 0xff), // node id past the safe range
    good.subarray(0, good.length - 1), // context truncated
    new Uint8Array([...good, 0]), // trailing byte
    mutate(10, 0x7f), // context length over the limit
  ];
  for (const bytes of cases) assert.throws(() => decodeConfChange(bytes), ConfChangeDecodeError);
});

Deno.test("encodeConfChange() asserts on an invalid node id or oversized context", () => {
  assert.throws(
    () => encodeConfChange({ type: "add_voter", nodeId: 0, context: new Uint8Array(0) }),
    AssertionError,
  );
  assert.throws(
    () =>
      encodeConfChange({
        type: "add_voter",
        nodeId: 1,
        context: new Uint8Array(CONF_CHANGE_CONTEXT_BYTES_MAX + 1),
      }),
    AssertionError,
  );
});
