// Input for kiseki_script_test.ts: a suite with known outcomes (two pass, one fails, one
// is ignored) so the closing line of `scripts/kiseki test` can be checked.
Deno.test("fixture passes once", () => {});
Deno.test("fixture passes twice", () => {});
Deno.test("fixture fails", () => {
  throw new Error("this fixture fails on purpose");
});
Deno.test({ name: "fixture is ignored", ignore: true, fn: () => {} });
