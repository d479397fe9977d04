import assert from "node:assert/strict";
import {
  decodeFragmentFrame,
  encodeFragmentFrame,
  FRAGMENT_FRAME_HEADER_BYTES,
  FragmentFrameError,
} from "./fragment_frame.ts";

const payload = new TextEncoder().encode("a fragment's payload");
const origin = { chunkId: new Uint8Array(32).fill(7), writer: 3 };

Deno.test("encodeFragmentFrame() round-trips the chunk's geometry, length and payload", () => {
  const frame = encodeFragmentFrame(
    { kind: "ec", k: 4, m: 2 },
    5,
    123_456_789_012,
    payload,
    origin,
  );
  assert.equal(frame.length, FRAGMENT_FRAME_HEADER_BYTES + payload.length);
  const { header, payload: back } = decodeFragmentFrame(frame, 5);
  assert.deepEqual(header.durability, { kind: "ec", k: 4, m: 2 });
  assert.equal(header.index, 5);
  assert.equal(header.lengthBytes, 123_456_789_012);
  assert.deepEqual(back, payload);
  // Copies carry no count: every writer's copy of a chunk is the same frame.
  const two = encodeFragmentFrame(
    { kind: "copies", copies: 2 },
    1,
    payload.length,
    payload,
    origin,
  );
  const three = encodeFragmentFrame(
    { kind: "copies", copies: 3 },
    1,
    payload.length,
    payload,
    origin,
  );
  assert.deepEqual(two, three);
  assert.deepEqual(decodeFragmentFrame(two, 1).header.durability, { kind: "copies" });
});

Deno.test("decodeFragmentFrame() refuses a short, foreign, misplaced or damaged frame", () => {
  const frame = encodeFragmentFrame({ kind: "ec", k: 2, m: 1 }, 2, payload.length, payload, origin);
  assert.throws(() => decodeFragmentFrame(frame.subarray(0, 10), 2), FragmentFrameError);
  assert.throws(() => decodeFragmentFrame(frame, 1), /fragment 2, not 1/);
  const flipped = frame.slice();
  flipped[FRAGMENT_FRAME_HEADER_BYTES + 3]! ^= 1;
  assert.throws(() => decodeFragmentFrame(flipped, 2), /CRC/);
  const foreign = frame.slice();
  foreign[0] = 0;
  assert.throws(() => decodeFragmentFrame(foreign, 2), /magic/);
  const scheme = frame.slice();
  scheme[4] = 9;
  assert.throws(() => decodeFragmentFrame(scheme, 2), /scheme/);
});

Deno.test("decodeFragmentFrame() names the chunk and its writer, at any index when asked", () => {
  const frame = encodeFragmentFrame({ kind: "ec", k: 2, m: 1 }, 2, payload.length, payload, origin);
  const { header } = decodeFragmentFrame(frame, null);
  assert.equal(header.index, 2);
  assert.deepEqual(header.origin, origin);
  const zero = frame.slice();
  new DataView(zero.buffer).setUint32(56, 0);
  assert.throws(() => decodeFragmentFrame(zero, 2), /no writer/);
});

Deno.test("decodeFragmentFrame() still reads a v1 frame (no origin)", () => {
  const v1 = new Uint8Array(24 + payload.length);
  v1.set(encodeFragmentFrame({ kind: "ec", k: 2, m: 1 }, 1, 9, payload, origin).subarray(0, 24));
  new DataView(v1.buffer).setUint32(0, 0x4b46_5231);
  v1.set(payload, 24);
  const { header, payload: back } = decodeFragmentFrame(v1, 1);
  assert.equal(header.origin, null);
  assert.equal(header.lengthBytes, 9);
  assert.deepEqual(back, payload);
});
