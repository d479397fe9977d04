// Majority arithmetic for one voter set: the index a quorum has acknowledged, and the outcome
// of a vote. Pure functions over plain maps; learners never appear here.

import { assert } from "../base/mod.ts";
import type { NodeId } from "./types.ts";

/** Outcome of counting votes: a quorum granted, a quorum cannot be reached, or neither yet. */
export type VoteResult = "won" | "lost" | "pending";

/** Smallest number of voters that forms a majority of `voterCount`. */
export function majoritySize(voterCount: number): number {
  assert(Number.isInteger(voterCount) && voterCount >= 0, "voter count must be a natural number");
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The largest index that a majority of `voters` has acknowledged, given each voter's
 * acknowledged (match) index. A voter with no entry in `matchIndexes` counts as 0. An empty
 * voter set commits nothing (returns 0): a group without voters cannot make progress.
 */
export function committedIndex(
  voters: Iterable<NodeId>,
  matchIndexes: ReadonlyMap<NodeId, number>,
): number {
  const acked: number[] = [];
  for (const id of voters) acked.push(matchIndexes.get(id) ?? 0);
  if (acked.length === 0) return 0;
  // Sorted descending, the q-th largest index is held by at least q voters.
  acked.sort((a, b) => b - a);
  return acked[majoritySize(acked.length) - 1];
}

/**
 * Tallies `votes` (true = granted) among `voters`; votes from non-voters are ignored. An empty
 * voter set never wins.
 */
export function voteResult(
  voters: Iterable<NodeId>,
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  let voterCount = 0;
  let granted = 0;
  let rejected = 0;
  for (const id of voters) {
    voterCount++;
    const vote = votes.get(id);
    if (vote === true) granted++;
    else if (vote === false) rejected++;
  }
  if (voterCount === 0) return "lost";
  const quorum = majoritySize(voterCount);
  if (granted >= quorum) return "won";
  if (voterCount - rejected >= quorum) return "pending";
  return "lost";
}
