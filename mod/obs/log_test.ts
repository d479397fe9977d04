import assert from "node:assert/strict";
import { createLogger } from "./log.ts";

function capture(format: "text" | "json", level: "info" | "debug" = "info") {
  const lines: string[] = [];
  return { lines, logger: createLogger({ level, format, sink: { write: (l) => lines.push(l) } }) };
}

Deno.test("Logger drops lines below its level", () => {
  const { lines, logger } = capture("text", "info");
  logger.debug("hidden");
  logger.info("shown");
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^\d{4}-\d\d-\d\dT\S+Z INFO {2}shown$/);
});

Deno.test("Logger writes JSON with child fields and error text", () => {
  const { lines, logger } = capture("json");
  logger.child({ node: 3 }).warn("disk slow", { device: "/dev/nvme0n1", error: new Error("EIO") });
  const event = JSON.parse(lines[0]!);
  assert.equal(event.level, "warn");
  assert.equal(event.msg, "disk slow");
  assert.equal(event.node, 3);
  assert.equal(event.error, "Error: EIO");
});

Deno.test("Logger quotes text fields that contain spaces", () => {
  const { lines, logger } = capture("text");
  logger.info("opened", { dir: "/var/lib/kiseki", reason: "shim not built" });
  assert.match(lines[0]!, / dir=\/var\/lib\/kiseki reason="shim not built"$/);
});
