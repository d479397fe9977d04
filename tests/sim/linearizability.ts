// Linearizability checker for a key-value register history: the Wing & Gong search with
// Lowe's memoization of (linearized set, state), as in Porcupine. A register history is
// P-compositional, so it is split by key and each key is checked on its own.
//
// An operation that never returned (its client crashed or timed out) may have taken effect
// at any point after its call, or never: its return is placed at infinity and any output is
// accepted. "Never" needs no separate case: linearized last, it affects no observed output.

import { assert } from "../../mod/base/mod.ts";

export type KvInput =
  | { kind: "put"; key: string; value: string }
  | { kind: "get"; key: string }
  | { kind: "cas"; key: string; expected: string | null; value: string };

export type KvOutput =
  | { kind: "put" }
  | { kind: "get"; value: string | null }
  | { kind: "cas"; ok: boolean };

/** One client operation. Times are logical and only compared with each other. */
export interface KvOperation {
  clientId: number;
  input: KvInput;
  callAt: number;
  /** null: the operation never returned; it may have taken effect after its call, or never. */
  output: KvOutput | null;
  returnAt: number | null;
}

export type CheckVerdict = "ok" | "illegal" | "unknown";

export interface KeyCheckResult {
  key: string;
  verdict: CheckVerdict;
  /** Operations searched after pruning those that cannot matter. */
  operations: number;
  statesExplored: number;
  /** On "illegal": the longest sequence of operations (indexes into the history) that linearizes. */
  longestPrefix: number[];
}

export interface CheckResult {
  verdict: CheckVerdict;
  keys: KeyCheckResult[];
  /** One line per illegal or unknown key, for a failure report. */
  explanation: string;
}

export interface CheckOptions {
  /** Search states explored per key before giving up with "unknown". */
  statesExploredMax?: number;
}

/** Generous for the few hundred operations per key a simulated run produces. */
export const STATES_EXPLORED_MAX_DEFAULT = 500_000;

/** Checks a whole history: illegal if any key is, unknown if any key ran out of budget. */
export function checkLinearizable(
  history: readonly KvOperation[],
  options: CheckOptions = {},
): CheckResult {
  const statesExploredMax = options.statesExploredMax ?? STATES_EXPLORED_MAX_DEFAULT;
  assert(statesExploredMax > 0, "statesExploredMax must be positive");
  const byKey = new Map<string, number[]>();
  history.forEach((op, i) => {
    validate(op, i);
    let list = byKey.get(op.input.key);
    if (list === undefined) byKey.set(op.input.key, list = []);
    list.push(i);
  });
  const keys: KeyCheckResult[] = [];
  for (const key of [...byKey.keys()].sort()) {
    keys.push(checkKey(key, history, byKey.get(key)!, statesExploredMax));
  }
  const verdict: CheckVerdict = keys.some((k) => k.verdict === "illegal")
    ? "illegal"
    : keys.some((k) => k.verdict === "unknown")
    ? "unknown"
    : "ok";
  const lines: string[] = [];
  for (const k of keys) {
    if (k.verdict === "ok") continue;
    if (k.verdict === "unknown") {
      lines.push(`key ${k.key}: unknown after ${k.statesExplored} states (${k.operations} ops)`);
      continue;
    }
    const prefix = k.longestPrefix.map((i) => describeOperation(history[i], i));
    lines.push(
      `key ${k.key}: not linearizable (${k.operations} ops); longest linearizable prefix ` +
        `(${prefix.length} ops) ends ${prefix.slice(-4).join(", ") || "(empty)"}`,
    );
  }
  return { verdict, keys, explanation: lines.join("\n") };
}

/** A short human form of an operation, e.g. `#3 c1 get(k0)->v7 [10,14]`. */
export function describeOperation(op: KvOperation, index: number): string {
  const i = op.input;
  const call = i.kind === "put"
    ? `put(${i.key},${i.value})`
    : i.kind === "get"
    ? `get(${i.key})`
    : `cas(${i.key},${i.expected},${i.value})`;
  let out = "?";
  if (op.output !== null) {
    const o = op.output;
    out = o.kind === "put" ? "ok" : o.kind === "get" ? String(o.value) : String(o.ok);
  }
  const end = op.returnAt === null ? "pending" : String(op.returnAt);
  return `#${index} c${op.clientId} ${call}->${out} [${op.callAt},${end}]`;
}

function validate(op: KvOperation, index: number): void {
  assert(Number.isFinite(op.callAt), `operation ${index}: callAt must be finite`);
  assert(
    (op.output === null) === (op.returnAt === null),
    `operation ${index}: output and returnAt must both be set or both be null`,
  );
  if (op.output !== null) {
    assert(op.output.kind === op.input.kind, `operation ${index}: output kind != input kind`);
    assert(op.returnAt! >= op.callAt, `operation ${index}: returns before its call`);
  }
}

type State = string | null;

/** The sequential register: whether `op` may run in `state`, and the state after it. */
function step(state: State, op: KvOperation): { ok: boolean; next: State } {
  const input = op.input;
  const output = op.output;
  switch (input.kind) {
    case "put":
      return { ok: true, next: input.value };
    case "get":
      if (output === null) return { ok: true, next: state };
      return { ok: output.kind === "get" && output.value === state, next: state };
    case "cas": {
      const matches = state === input.expected;
      if (output === null) return { ok: true, next: matches ? input.value : state };
      const ok = output.kind === "cas" && output.ok === matches;
      return { ok, next: matches ? input.value : state };
    }
  }
}

/**
 * Drops operations that cannot change the verdict: pending gets, and pending writes (put or
 * cas) whose value nobody observed, when no completed cas on the key failed. Sound both
 * ways: linearized last, such a write affects nothing; and from any linearization that has
 * it earlier, it can be removed: until the next effective write only pending cas ops can
 * follow it (no get read its value, no cas expected it, none failed), they must have failed
 * there, and a failed pending cas moves to the end unchanged.
 */
function prune(history: readonly KvOperation[], indexes: number[]): number[] {
  const observed = new Set<string>();
  let failedCas = false;
  for (const i of indexes) {
    const { input, output } = history[i];
    if (output !== null && output.kind === "get" && output.value !== null) {
      observed.add(output.value);
    }
    if (input.kind === "cas" && input.expected !== null) observed.add(input.expected);
    if (output !== null && output.kind === "cas" && !output.ok) failedCas = true;
  }
  return indexes.filter((i) => {
    const { input, output } = history[i];
    if (output !== null) return true;
    if (input.kind === "get") return false;
    return failedCas || observed.has(input.value);
  });
}

interface ListEntry {
  /** Position in the per-key op list; -1 for the head sentinel. */
  op: number;
  isCall: boolean;
  time: number;
  /** For a call: its return entry. */
  match: ListEntry | null;
  prev: ListEntry | null;
  next: ListEntry | null;
}

function checkKey(
  key: string,
  history: readonly KvOperation[],
  allIndexes: number[],
  statesExploredMax: number,
): KeyCheckResult {
  const indexes = prune(history, allIndexes);
  const ops = indexes.map((i) => history[i]);
  const n = ops.length;

  // Calls sort before returns at equal times: touching intervals count as concurrent.
  const events: ListEntry[] = [];
  ops.forEach((op, i) => {
    const ret: ListEntry = {
      op: i,
      isCall: false,
      time: op.returnAt ?? Infinity,
      match: null,
      prev: null,
      next: null,
    };
    events.push({ op: i, isCall: true, time: op.callAt, match: ret, prev: null, next: null });
    events.push(ret);
  });
  events.sort((a, b) =>
    a.time !== b.time ? a.time - b.time : a.isCall !== b.isCall ? (a.isCall ? -1 : 1) : a.op - b.op
  );
  const head: ListEntry = {
    op: -1,
    isCall: false,
    time: -Infinity,
    match: null,
    prev: null,
    next: null,
  };
  let last = head;
  for (const e of events) {
    last.next = e;
    e.prev = last;
    last = e;
  }

  const words = new Uint32Array(Math.max(1, Math.ceil(n / 32)));
  const cache = new Set<string>();
  const calls: { entry: ListEntry; state: State }[] = [];
  let longest: number[] = [];
  let state: State = null;
  let statesExplored = 0;
  let entry = head.next;

  const result = (verdict: CheckVerdict): KeyCheckResult => ({
    key,
    verdict,
    operations: n,
    statesExplored,
    longestPrefix: verdict === "illegal" ? longest.map((i) => indexes[i]) : [],
  });

  while (head.next !== null) {
    assert(entry !== null, "linearizability search ran off the list");
    if (entry.isCall) {
      const { ok, next } = step(state, ops[entry.op]);
      if (ok) {
        words[entry.op >>> 5] |= 1 << (entry.op & 31);
        const cacheKey = cacheKeyOf(words, next);
        if (!cache.has(cacheKey)) {
          cache.add(cacheKey);
          statesExplored++;
          if (statesExplored > statesExploredMax) return result("unknown");
          calls.push({ entry, state });
          if (calls.length > longest.length) longest = calls.map((c) => c.entry.op);
          state = next;
          lift(entry);
          entry = head.next;
          continue;
        }
        words[entry.op >>> 5] &= ~(1 << (entry.op & 31));
      }
      entry = entry.next;
    } else {
      // A return whose call is not yet linearized: backtrack.
      const top = calls.pop();
      if (top === undefined) return result("illegal");
      state = top.state;
      words[top.entry.op >>> 5] &= ~(1 << (top.entry.op & 31));
      unlift(top.entry);
      entry = top.entry.next;
    }
  }
  return result("ok");
}

function cacheKeyOf(words: Uint32Array, state: State): string {
  // Fixed-length bitset first, so the variable-length state cannot blur into it.
  let s = "";
  for (let i = 0; i < words.length; i++) {
    s += String.fromCharCode(words[i] & 0xffff, words[i] >>> 16);
  }
  return state === null ? s + "\u0000" : s + "\u0001" + state;
}

function lift(entry: ListEntry): void {
  entry.prev!.next = entry.next;
  entry.next!.prev = entry.prev;
  const match = entry.match!;
  match.prev!.next = match.next;
  if (match.next !== null) match.next.prev = match.prev;
}

function unlift(entry: ListEntry): void {
  const match = entry.match!;
  match.prev!.next = match;
  if (match.next !== null) match.next.prev = match;
  entry.prev!.next = entry;
  entry.next!.prev = entry;
}
