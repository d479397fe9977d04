import assert from "node:assert/strict";
import { Prng } from "../../mod/base/mod.ts";
import {
  checkLinearizable,
  type KvInput,
  type KvOperation,
  type KvOutput,
} from "./linearizability.ts";

function put(
  clientId: number,
  key: string,
  value: string,
  callAt: number,
  returnAt: number | null,
): KvOperation {
  return {
    clientId,
    input: { kind: "put", key, value },
    callAt,
    output: returnAt === null ? null : { kind: "put" },
    returnAt,
  };
}

function get(
  clientId: number,
  key: string,
  value: string | null,
  callAt: number,
  returnAt: number | null,
): KvOperation {
  return {
    clientId,
    input: { kind: "get", key },
    callAt,
    output: returnAt === null ? null : { kind: "get", value },
    returnAt,
  };
}

function cas(
  clientId: number,
  key: string,
  expected: string | null,
  value: string,
  ok: boolean | null,
  callAt: number,
  returnAt: number | null,
): KvOperation {
  return {
    clientId,
    input: { kind: "cas", key, expected, value },
    callAt,
    output: ok === null ? null : { kind: "cas", ok },
    returnAt,
  };
}

const verdict = (history: KvOperation[]) => checkLinearizable(history).verdict;

Deno.test("checkLinearizable() accepts an empty history and a sequential one", () => {
  assert.equal(verdict([]), "ok");
  assert.equal(
    verdict([
      get(1, "x", null, 0, 1),
      put(1, "x", "a", 2, 3),
      get(2, "x", "a", 4, 5),
      put(2, "x", "b", 6, 7),
      get(1, "x", "b", 8, 9),
    ]),
    "ok",
  );
});

Deno.test("checkLinearizable() lets a read concurrent with a write see either value", () => {
  for (const seen of [null, "a"]) {
    assert.equal(verdict([put(1, "x", "a", 0, 10), get(2, "x", seen, 2, 5)]), "ok");
  }
  assert.equal(verdict([put(1, "x", "a", 0, 10), get(2, "x", "zzz", 2, 5)]), "illegal");
});

Deno.test("checkLinearizable() rejects a stale read after a completed write", () => {
  const result = checkLinearizable([
    put(1, "x", "a", 0, 1),
    put(1, "x", "b", 2, 3),
    get(2, "x", "a", 4, 5),
  ]);
  assert.equal(result.verdict, "illegal");
  assert.match(result.explanation, /key x: not linearizable/);
});

Deno.test("checkLinearizable() rejects two readers seeing writes in opposite orders", () => {
  const history = [
    put(1, "x", "a", 0, 100),
    put(2, "x", "b", 0, 100),
    get(3, "x", "a", 1, 2),
    get(3, "x", "b", 3, 4),
    get(4, "x", "b", 5, 6),
    get(4, "x", "a", 7, 8),
  ];
  assert.equal(verdict(history), "illegal");
  // Without the last read the two orders no longer conflict.
  assert.equal(verdict(history.slice(0, 5)), "ok");
});

Deno.test("checkLinearizable() rejects a read of a value before its write was called", () => {
  assert.equal(verdict([get(2, "x", "a", 0, 1), put(1, "x", "a", 2, 3)]), "illegal");
});

Deno.test("checkLinearizable() treats touching intervals as concurrent", () => {
  assert.equal(verdict([put(1, "x", "a", 0, 5), get(2, "x", null, 5, 6)]), "ok");
  assert.equal(verdict([put(1, "x", "a", 0, 4), get(2, "x", null, 5, 6)]), "illegal");
});

Deno.test("checkLinearizable() lets a pending write take effect late, or never", () => {
  // Never observed: as if it never happened.
  assert.equal(verdict([put(1, "x", "a", 0, null), get(2, "x", null, 50, 51)]), "ok");
  // Observed long after its call: it took effect late.
  assert.equal(
    verdict([put(1, "x", "a", 0, null), get(2, "x", null, 10, 11), get(2, "x", "a", 50, 51)]),
    "ok",
  );
  // Once observed it cannot be undone.
  assert.equal(
    verdict([put(1, "x", "a", 0, null), get(2, "x", "a", 10, 11), get(2, "x", null, 50, 51)]),
    "illegal",
  );
  // It cannot take effect before it was called.
  assert.equal(verdict([get(2, "x", "a", 0, 1), put(1, "x", "a", 2, null)]), "illegal");
  // A pending write overwritten and then seen again is still illegal.
  assert.equal(
    verdict([
      put(1, "x", "a", 0, null),
      get(2, "x", "a", 10, 11),
      put(3, "x", "b", 20, 21),
      get(2, "x", "a", 30, 31),
    ]),
    "illegal",
  );
});

Deno.test("checkLinearizable() ignores pending reads", () => {
  assert.equal(verdict([put(1, "x", "a", 0, 1), get(2, "x", null, 0, null)]), "ok");
});

Deno.test("checkLinearizable() checks compare-and-set", () => {
  assert.equal(
    verdict([
      put(1, "x", "a", 0, 1),
      cas(1, "x", "a", "b", true, 2, 3),
      cas(2, "x", "a", "c", false, 4, 5),
      get(2, "x", "b", 6, 7),
    ]),
    "ok",
  );
  assert.equal(
    verdict([put(1, "x", "a", 0, 1), cas(1, "x", "a", "b", false, 2, 3)]),
    "illegal",
  );
  // Two concurrent cas from the same expected value cannot both win.
  assert.equal(
    verdict([
      put(1, "x", "a", 0, 1),
      cas(1, "x", "a", "b", true, 2, 10),
      cas(2, "x", "a", "c", true, 2, 10),
    ]),
    "illegal",
  );
  // A pending cas may have won: a later read of its value is fine.
  assert.equal(
    verdict([
      put(1, "x", "a", 0, 1),
      cas(1, "x", "a", "b", null, 2, null),
      get(2, "x", "b", 9, 10),
    ]),
    "ok",
  );
});

Deno.test("checkLinearizable() checks keys independently", () => {
  const result = checkLinearizable([
    put(1, "x", "a", 0, 1),
    put(1, "y", "b", 2, 3),
    get(2, "x", "a", 4, 5),
    get(2, "y", null, 6, 7),
  ]);
  assert.equal(result.verdict, "illegal");
  assert.deepEqual(result.keys.map((k) => [k.key, k.verdict]), [["x", "ok"], ["y", "illegal"]]);
});

Deno.test("checkLinearizable() reports unknown when the search budget runs out", () => {
  // Many fully concurrent writes and reads: a large search space.
  const history: KvOperation[] = [];
  for (let i = 0; i < 14; i++) history.push(put(i, "x", `v${i}`, 0, 1000));
  for (let i = 0; i < 14; i++) history.push(get(100 + i, "x", `v${13 - i}`, 1, 999));
  history.push(get(200, "x", "nope", 1001, 1002));
  assert.equal(checkLinearizable(history, { statesExploredMax: 1000 }).verdict, "unknown");
});

// Brute force over every order consistent with real time (and every subset of pending
// operations), for small random histories; the search must agree with it exactly.
function bruteForce(history: KvOperation[]): boolean {
  const keys = new Set(history.map((o) => o.input.key));
  for (const key of keys) {
    if (!bruteForceKey(history.filter((o) => o.input.key === key))) return false;
  }
  return true;
}

function bruteForceKey(ops: KvOperation[]): boolean {
  const n = ops.length;
  const used = new Array<boolean>(n).fill(false);
  const precedes = (a: KvOperation, b: KvOperation) => a.returnAt !== null && a.returnAt < b.callAt;
  const search = (state: string | null, placed: number): boolean => {
    // Every completed op placed: the remaining pending ones may never happen.
    if (ops.every((o, i) => used[i] || o.returnAt === null)) return true;
    for (let i = 0; i < n; i++) {
      if (used[i]) continue;
      // Minimal: no unplaced op must precede it.
      if (ops.some((o, j) => !used[j] && j !== i && precedes(o, ops[i]))) continue;
      const next = apply(state, ops[i]);
      if (next === undefined) continue;
      used[i] = true;
      if (search(next, placed + 1)) return true;
      used[i] = false;
    }
    return false;
  };
  return search(null, 0);
}

function apply(state: string | null, op: KvOperation): string | null | undefined {
  const i = op.input;
  if (i.kind === "put") return i.value;
  if (i.kind === "get") {
    if (op.output === null) return state;
    return op.output.kind === "get" && op.output.value === state ? state : undefined;
  }
  const matches = state === i.expected;
  if (op.output === null) return matches ? i.value : state;
  if (op.output.kind !== "cas" || op.output.ok !== matches) return undefined;
  return matches ? i.value : state;
}

function randomHistory(prng: Prng, withCas: boolean, pendingOneIn: number): KvOperation[] {
  const values = ["a", "b", "c"];
  const n = 1 + prng.nextInt(6);
  const history: KvOperation[] = [];
  for (let i = 0; i < n; i++) {
    const key = prng.nextInt(4) === 0 ? "y" : "x";
    const callAt = prng.nextInt(10);
    const pending = prng.nextInt(pendingOneIn) === 0;
    const returnAt = pending ? null : callAt + prng.nextInt(6);
    const kind = prng.nextInt(withCas ? 3 : 2);
    let input: KvInput;
    let output: KvOutput;
    if (kind === 0) {
      input = { kind: "put", key, value: values[prng.nextInt(3)] };
      output = { kind: "put" };
    } else if (kind === 1) {
      input = { kind: "get", key };
      const v = prng.nextInt(4);
      output = { kind: "get", value: v === 3 ? null : values[v] };
    } else {
      const e = prng.nextInt(4);
      input = {
        kind: "cas",
        key,
        expected: e === 3 ? null : values[e],
        value: values[prng.nextInt(3)],
      };
      output = { kind: "cas", ok: prng.nextInt(2) === 0 };
    }
    history.push({ clientId: i, input, callAt, output: pending ? null : output, returnAt });
  }
  return history;
}

Deno.test("checkLinearizable() agrees with brute force on small random histories", () => {
  const prng = new Prng(20240601);
  const tally = { ok: 0, illegal: 0 };
  for (let round = 0; round < 6000; round++) {
    const history = randomHistory(prng, round % 2 === 0, round % 3 === 0 ? 2 : 5);
    const expected = bruteForce(history) ? "ok" : "illegal";
    const got = checkLinearizable(history).verdict;
    assert.equal(got, expected, `round ${round}: ${JSON.stringify(history)}`);
    tally[expected]++;
  }
  // Both outcomes must be well represented, or the comparison proves little.
  assert.ok(tally.ok > 500 && tally.illegal > 500, JSON.stringify(tally));
});

Deno.test("checkLinearizable() accepts histories generated from a sequential run", () => {
  const prng = new Prng(99);
  for (let round = 0; round < 200; round++) {
    // Linearization points 0, 10, 20, ...; each interval is stretched around its point.
    const history: KvOperation[] = [];
    let state: string | null = null;
    for (let i = 0; i < 40; i++) {
      const point = i * 10;
      const callAt = point - prng.nextInt(60);
      const returnAt = point + prng.nextInt(60);
      const pending = prng.nextInt(8) === 0;
      if (prng.nextInt(2) === 0) {
        state = `v${i}`;
        history.push(put(i % 5, "x", state, callAt, pending ? null : returnAt));
      } else {
        history.push(get(i % 5, "x", state, callAt, pending ? null : returnAt));
      }
    }
    const result = checkLinearizable(history);
    assert.equal(result.verdict, "ok", result.explanation);
  }
});
