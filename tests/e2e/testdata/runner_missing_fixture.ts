// Input for kiseki_script_test.ts: one test passes, one needs an outside part that no machine
// has, one does not apply by design. Outside CI both others are skipped; under CI=true the
// missing part fails the run and the by-design skip stays a skip.
import { missingPart } from "../../../mod/base/mod.ts";

Deno.test("fixture passes", () => {});
Deno.test({
  name: "fixture needs kiseki-fixture-tool",
  ignore: missingPart("kiseki-fixture-tool", "no machine has it"),
  fn: () => {},
});
Deno.test({ name: "fixture case does not apply here", ignore: true, fn: () => {} });
