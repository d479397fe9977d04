// Invariant checks for production code. A failed assertion is a programmer error:
// stop loudly rather than continue with corrupt state (bad input never reaches here;
// it is rejected at the boundary with a protocol-shaped error instead).

export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Throws AssertionError when `condition` is false. */
export function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Marks a branch the type system proves unreachable. */
export function unreachable(value: never, message = "unreachable"): never {
  throw new AssertionError(`${message}: ${String(value)}`);
}
