// Structured logs: one line per event, text for people (default) or JSON for collectors,
// filtered by level. Written to stderr so stdout stays free for command output.

import type { LogFormat, LogLevel } from "../base/config.ts";

export type { LogFormat, LogLevel };
export type LogFields = Record<string, unknown>;

const LEVEL_RANK: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4 };

export interface LogSink {
  write(line: string): void;
}

const encoder = new TextEncoder();
const stderrSink: LogSink = {
  write(line) {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  },
};

interface LoggerState {
  level: LogLevel;
  format: LogFormat;
  sink: LogSink;
}

export class Logger {
  readonly #state: LoggerState;
  readonly #fields: LogFields;

  constructor(state: LoggerState, fields: LogFields = {}) {
    this.#state = state;
    this.#fields = fields;
  }

  /** A logger that adds `fields` to every line and shares this one's level and sink. */
  child(fields: LogFields): Logger {
    return new Logger(this.#state, { ...this.#fields, ...fields });
  }

  enabled(level: LogLevel): boolean {
    return LEVEL_RANK[level] >= LEVEL_RANK[this.#state.level];
  }

  trace(message: string, fields?: LogFields): void {
    this.#emit("trace", message, fields);
  }
  debug(message: string, fields?: LogFields): void {
    this.#emit("debug", message, fields);
  }
  info(message: string, fields?: LogFields): void {
    this.#emit("info", message, fields);
  }
  warn(message: string, fields?: LogFields): void {
    this.#emit("warn", message, fields);
  }
  error(message: string, fields?: LogFields): void {
    this.#emit("error", message, fields);
  }

  #emit(level: LogLevel, message: string, fields?: LogFields): void {
    if (!this.enabled(level)) return;
    const all = fields ? { ...this.#fields, ...fields } : this.#fields;
    const time = new Date().toISOString();
    this.#state.sink.write(
      this.#state.format === "json"
        ? JSON.stringify({ time, level, msg: message, ...normalize(all) })
        : formatText(time, level, message, all),
    );
  }
}

function normalize(fields: LogFields): LogFields {
  const out: LogFields = {};
  for (const [k, v] of Object.entries(fields)) {
    out[k] = v instanceof Error ? `${v.name}: ${v.message}` : typeof v === "bigint" ? String(v) : v;
  }
  return out;
}

function formatText(time: string, level: LogLevel, message: string, fields: LogFields): string {
  let line = `${time} ${level.toUpperCase().padEnd(5)} ${message}`;
  for (const [k, v] of Object.entries(normalize(fields))) {
    const text = typeof v === "string" ? v : JSON.stringify(v);
    line += ` ${k}=${/^[^\s"=]+$/.test(text ?? "") ? text : JSON.stringify(text)}`;
  }
  return line;
}

const rootState: LoggerState = { level: "info", format: "text", sink: stderrSink };

/** The process-wide root logger; roles configure it once at start. */
export const log: Logger = new Logger(rootState);

export interface ConfigureLoggingOptions {
  level?: LogLevel;
  format?: LogFormat;
  sink?: LogSink;
}

export function configureLogging(options: ConfigureLoggingOptions): void {
  if (options.level) rootState.level = options.level;
  if (options.format) rootState.format = options.format;
  if (options.sink) rootState.sink = options.sink;
}

/** A logger writing to `sink` with its own level and format (tests, tools). */
export function createLogger(
  options: Required<Omit<ConfigureLoggingOptions, "sink">> & {
    sink: LogSink;
  },
): Logger {
  return new Logger({ level: options.level, format: options.format, sink: options.sink });
}
