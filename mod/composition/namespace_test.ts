import assert from "node:assert/strict";
import {
  NAMESPACE_ID_BYTES,
  namespaceIdFor,
  namespaceNameProblem,
  namespaceRoutingKey,
  ROUTING_KEY_BYTES,
  sha256,
} from "./namespace.ts";

const tenantA = new Uint8Array(16).fill(1);
const tenantB = new Uint8Array(16).fill(2);

Deno.test("namespaceIdFor() is stable per tenant and name, and differs across tenants", () => {
  const a = namespaceIdFor(tenantA, "photos");
  assert.equal(a.length, NAMESPACE_ID_BYTES);
  assert.deepEqual(namespaceIdFor(tenantA, "photos"), a);
  assert.notDeepEqual(namespaceIdFor(tenantB, "photos"), a);
  assert.notDeepEqual(namespaceIdFor(tenantA, "photos2"), a);
});

Deno.test("namespaceRoutingKey() is the SHA-256 of the namespace id", () => {
  const id = namespaceIdFor(tenantA, "x");
  const key = namespaceRoutingKey(id);
  assert.equal(key.length, ROUTING_KEY_BYTES);
  assert.deepEqual(key, sha256(id));
  // Known answer: SHA-256 of the empty string.
  assert.equal(
    [...sha256(new Uint8Array(0))].map((b) => b.toString(16).padStart(2, "0")).join(""),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

Deno.test("namespaceNameProblem() accepts S3-safe names and refuses the rest", () => {
  for (const ok of ["a", "my-bucket", "A.b_c-9", "x".repeat(63)]) {
    assert.equal(namespaceNameProblem(ok), null, ok);
  }
  for (const bad of ["", ".", "..", "x".repeat(64), "a/b", "a b", "é", "a\u0000"]) {
    assert.notEqual(namespaceNameProblem(bad), null, JSON.stringify(bad));
  }
});
