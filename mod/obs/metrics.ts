// Prometheus metrics. The only importer of prom-client: everything else registers and
// updates metrics through these helpers, so the exposition library can change in one place.

import client from "prom-client";

const registry = new client.Registry();
let defaultsCollected = false;

/**
 * Names must carry the product prefix so dashboards and alerts can find them, and follow
 * Prometheus' conventions (what `promtool check metrics` enforces): a counter ends in
 * `_total`, nothing else does, and `_count`, `_sum` and `_bucket` belong to histograms.
 */
function checkName(name: string, kind: "counter" | "gauge" | "histogram"): void {
  if (!/^kiseki_[a-z0-9_]+$/.test(name)) {
    throw new Error(`metric name '${name}' must match kiseki_[a-z0-9_]+`);
  }
  if (kind === "counter" && !name.endsWith("_total")) {
    throw new Error(`counter '${name}' must end in _total`);
  }
  if (kind !== "counter" && /_(total|count|sum|bucket)$/.test(name)) {
    throw new Error(`${kind} '${name}' must not end in _total, _count, _sum or _bucket`);
  }
}

export interface Counter<L extends string = string> {
  inc(labels?: Partial<Record<L, string | number>>, value?: number): void;
}
export interface Gauge<L extends string = string> {
  set(labels: Partial<Record<L, string | number>>, value: number): void;
  inc(labels?: Partial<Record<L, string | number>>, value?: number): void;
  dec(labels?: Partial<Record<L, string | number>>, value?: number): void;
}
export interface Histogram<L extends string = string> {
  observe(labels: Partial<Record<L, string | number>>, value: number): void;
}

export interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
}

function existing<T>(name: string): T | undefined {
  return registry.getSingleMetric(name) as T | undefined;
}

/** A counter; registering the same name twice returns the first. */
export function counter<L extends string = never>(options: MetricOptions<L>): Counter<L> {
  checkName(options.name, "counter");
  const c = existing<client.Counter<L>>(options.name) ??
    new client.Counter<L>({
      name: options.name,
      help: options.help,
      labelNames: options.labelNames ?? [],
      registers: [registry],
    });
  return {
    inc: (labels = {}, value = 1) => c.inc(labels as client.LabelValues<L>, value),
  };
}

export function gauge<L extends string = never>(
  options: MetricOptions<L> & {
    collect?: (set: (labels: Partial<Record<L, string>>, v: number) => void) => void;
  },
): Gauge<L> {
  checkName(options.name, "gauge");
  const collectFn = options.collect;
  const g = existing<client.Gauge<L>>(options.name) ??
    new client.Gauge<L>({
      name: options.name,
      help: options.help,
      labelNames: options.labelNames ?? [],
      registers: [registry],
      collect: collectFn
        ? function (this: client.Gauge<L>) {
          collectFn((labels, v) => this.set(labels as client.LabelValues<L>, v));
        }
        : undefined,
    });
  return {
    set: (labels, value) => g.set(labels as client.LabelValues<L>, value),
    inc: (labels = {}, value = 1) => g.inc(labels as client.LabelValues<L>, value),
    dec: (labels = {}, value = 1) => g.dec(labels as client.LabelValues<L>, value),
  };
}

/** Default buckets cover 50 µs .. 10 s, for storage operations measured in seconds. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

export function histogram<L extends string = never>(
  options: MetricOptions<L> & { buckets?: readonly number[] },
): Histogram<L> {
  checkName(options.name, "histogram");
  const h = existing<client.Histogram<L>>(options.name) ??
    new client.Histogram<L>({
      name: options.name,
      help: options.help,
      labelNames: options.labelNames ?? [],
      buckets: [...(options.buckets ?? LATENCY_BUCKETS_SECONDS)],
      registers: [registry],
    });
  return { observe: (labels, value) => h.observe(labels as client.LabelValues<L>, value) };
}

/**
 * prom-client's default metrics this process does not export. The `nodejs_active_*` trio
 * counts handles of Node's compatibility layer only (not Deno's own resources), and the
 * totals among them are gauges named like counters. The others read /proc/self, which the
 * role sandboxes do not grant: they would report 0 as if it were measured.
 */
export const PROCESS_METRICS_DROPPED: readonly string[] = [
  "nodejs_active_handles",
  "nodejs_active_handles_total",
  "nodejs_active_requests",
  "nodejs_active_requests_total",
  "nodejs_active_resources",
  "nodejs_active_resources_total",
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
];

/**
 * Turns on process metrics (CPU, memory, event loop, V8 heap) once per process: prom-client's
 * defaults less PROCESS_METRICS_DROPPED, and the resident set size from the runtime.
 */
export function collectProcessMetrics(): void {
  if (defaultsCollected) return;
  defaultsCollected = true;
  client.collectDefaultMetrics({ register: registry });
  for (const name of PROCESS_METRICS_DROPPED) registry.removeSingleMetric(name);
  new client.Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers: [registry],
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
}

export const METRICS_CONTENT_TYPE: string = registry.contentType;

/** The Prometheus text exposition of every registered metric. */
export function renderMetrics(): Promise<string> {
  return registry.metrics();
}
