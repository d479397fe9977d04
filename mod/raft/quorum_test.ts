import assert from "node:assert/strict";
import { committedIndex, majoritySize, voteResult } from "./quorum.ts";

Deno.test("majoritySize() is more than half", () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 7].map(majoritySize), [1, 1, 2, 2, 3, 3, 4, 4]);
});

Deno.test("committedIndex() is the largest index a majority has acknowledged", () => {
  const m = (entries: [number, number][]) => new Map(entries);
  assert.equal(committedIndex([1], m([[1, 5]])), 5);
  assert.equal(committedIndex([1, 2, 3], m([[1, 5], [2, 3], [3, 9]])), 5);
  assert.equal(committedIndex([1, 2, 3, 4], m([[1, 5], [2, 3], [3, 9], [4, 4]])), 4);
  assert.equal(committedIndex([1, 2, 3, 4, 5], m([[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]])), 3);
});

Deno.test("committedIndex() counts voters without an entry as 0 and ignores non-voters", () => {
  assert.equal(committedIndex([1, 2, 3], new Map([[1, 7], [4, 100], [5, 100]])), 0);
  assert.equal(committedIndex([1, 2, 3], new Map([[1, 7], [2, 6], [4, 100]])), 6);
});

Deno.test("committedIndex() of no voters is 0", () => {
  assert.equal(committedIndex([], new Map([[1, 7]])), 0);
});

Deno.test("voteResult() wins with a majority of grants", () => {
  assert.equal(voteResult([1], new Map([[1, true]])), "won");
  assert.equal(voteResult([1, 2, 3], new Map([[1, true], [2, true]])), "won");
  assert.equal(voteResult([1, 2, 3, 4], new Map([[1, true], [2, true], [3, true]])), "won");
});

Deno.test("voteResult() is pending while a majority is still reachable", () => {
  assert.equal(voteResult([1, 2, 3], new Map([[1, true]])), "pending");
  assert.equal(voteResult([1, 2, 3], new Map([[1, true], [2, false]])), "pending");
  assert.equal(voteResult([1, 2, 3, 4], new Map([[1, true], [2, true], [3, false]])), "pending");
});

Deno.test("voteResult() loses once a majority cannot be reached", () => {
  assert.equal(voteResult([1, 2, 3], new Map([[1, true], [2, false], [3, false]])), "lost");
  assert.equal(voteResult([1, 2, 3, 4], new Map([[1, true], [2, false], [3, false]])), "lost");
  assert.equal(voteResult([], new Map()), "lost");
});

Deno.test("voteResult() ignores votes of non-voters (learners)", () => {
  assert.equal(voteResult([1, 2, 3], new Map([[1, true], [4, true], [5, true]])), "pending");
});
