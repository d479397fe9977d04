import assert from "node:assert/strict";
import { bytesEqual, concatBytes } from "./bytes.ts";

Deno.test("concatBytes() joins parts in order, including empty ones", () => {
  assert.deepEqual(
    concatBytes(Uint8Array.of(1, 2), new Uint8Array(0), Uint8Array.of(3)),
    Uint8Array.of(1, 2, 3),
  );
  assert.deepEqual(concatBytes(), new Uint8Array(0));
});

Deno.test("bytesEqual() compares length and content", () => {
  assert.equal(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2)), true);
  assert.equal(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3)), false);
  assert.equal(bytesEqual(Uint8Array.of(1), Uint8Array.of(1, 0)), false);
});
