import assert from "node:assert/strict";
import {
  collectProcessMetrics,
  counter,
  gauge,
  histogram,
  PROCESS_METRICS_DROPPED,
  renderMetrics,
} from "./metrics.ts";

Deno.test("counter() wants _total and gauge()/histogram() refuse the suffixes Prometheus reserves", () => {
  assert.throws(() => counter({ name: "kiseki_test_things", help: "h" }), /must end in _total/);
  assert.throws(
    () => gauge({ name: "kiseki_test_open_total", help: "h" }),
    /must not end in _total/,
  );
  assert.throws(() => histogram({ name: "kiseki_test_bucket", help: "h" }), /must not end in/);
  assert.throws(() => gauge({ name: "nodejs_x", help: "h" }), /must match kiseki_/);
  counter({ name: "kiseki_test_things_total", help: "h" }).inc();
});

Deno.test("collectProcessMetrics() exports no gauge named like a counter and a measured RSS", async () => {
  collectProcessMetrics();
  const text = await renderMetrics();
  const types = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) types.set(m[1]!, m[2]!);
  for (const name of PROCESS_METRICS_DROPPED.filter((n) => n !== "process_resident_memory_bytes")) {
    assert.ok(!types.has(name), `${name} is not exported`);
  }
  for (const [name, type] of types) {
    if (type === "counter") assert.match(name, /_total$/, `counter ${name}`);
    else assert.doesNotMatch(name, /_total$/, `${type} ${name}`);
  }
  assert.equal(types.get("process_resident_memory_bytes"), "gauge");
  const rss = Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)?.[1]);
  assert.ok(rss > 1 << 20, `resident memory measured: ${rss}`);
  assert.match(text, /^process_cpu_seconds_total \S+$/m);
});
