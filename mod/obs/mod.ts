// Observability: structured logs and Prometheus metrics (OpenTelemetry tracing comes later).
export { configureLogging, createLogger, log, Logger } from "./log.ts";
export type { LogFields, LogFormat, LogLevel, LogSink } from "./log.ts";
export {
  collectProcessMetrics,
  counter,
  gauge,
  histogram,
  LATENCY_BUCKETS_SECONDS,
  METRICS_CONTENT_TYPE,
  renderMetrics,
} from "./metrics.ts";
export type { Counter, Gauge, Histogram, MetricOptions } from "./metrics.ts";
