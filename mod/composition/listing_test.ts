import assert from "node:assert/strict";
import { utf8 } from "./bytes.ts";
import { CompositionError } from "./errors.ts";
import { decodeContinuationToken, encodeContinuationToken } from "./listing.ts";

Deno.test("decodeContinuationToken() returns the position encodeContinuationToken() was given", () => {
  for (const after of ["key", "prefix"] as const) {
    for (const value of ["a", "a/b/", "日本語/😀", "x".repeat(1024)]) {
      const token = encodeContinuationToken({ after, value: utf8(value) });
      assert.match(token, /^[A-Za-z0-9_-]+$/);
      assert.deepEqual(decodeContinuationToken(token), { after, value: utf8(value) });
    }
  }
});

Deno.test("decodeContinuationToken() refuses tokens it did not make with invalid_argument", () => {
  const good = encodeContinuationToken({ after: "key", value: utf8("abc") });
  for (
    const bad of ["", "!!", "a", good.slice(0, -2), good + "AA", "AgEAAWE", "AQMAAWE", "AQEAAA"]
  ) {
    assert.throws(
      () => decodeContinuationToken(bad),
      (e) => e instanceof CompositionError && e.code === "invalid_argument",
      bad,
    );
  }
});
