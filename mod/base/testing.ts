// Test support for tests that need an outside part (an FFI shim, a real client, a validator).
// Outside CI such a test is skipped and its name says why; under CI=true a missing part
// fails the run, so FFI and real-client coverage cannot vanish from CI unseen. A case that
// does not apply to an implementation (power loss on a real file) is a plain `ignore: true`.

/** True when the environment says the suite runs in CI (`CI` set, and not 0/false). */
export function inCi(value: string | undefined = Deno.env.get("CI")): boolean {
  return value !== undefined && value !== "" && !/^(0|false|no|off)$/i.test(value);
}

const announced = new Set<string>();

/**
 * The `ignore` of a test that needs `what`: false when it is present (`reason` empty). When
 * it is missing, true; under CI, also registers one failing test per missing part, named
 * `requires <what>`, whose error says what is missing and why.
 */
export function missingPart(
  what: string,
  reason: string | false | null | undefined,
  ci: boolean = inCi(),
): boolean {
  if (reason === undefined || reason === null || reason === false || reason === "") return false;
  if (ci && !announced.has(what)) {
    announced.add(what);
    Deno.test(`requires ${what} (CI=true)`, () => {
      throw new Error(
        `${what} is missing: ${reason}. Under CI=true a missing shim or tool fails the run ` +
          "instead of skipping the tests that need it; install it (scripts/kiseki setup).",
      );
    });
  }
  return true;
}
