// The server's background scrub: a ScrubRunner over the node's chunk store, paced by
// KISEKI_SCRUB_RATE and KISEKI_SCRUB_INTERVAL_S, and its operator API route:
//
//   GET  /api/v1/scrub         status: the pass underway, the last complete pass, the pace
//   POST /api/v1/scrub/start   start a pass now (409 when one is underway)

import type { Config } from "../base/mod.ts";
import { adminJson as json, type AdminRoute } from "../admin/mod.ts";
import { type LocalChunkStore, ScrubRunner } from "../chunk/mod.ts";
import type { Logger } from "../obs/mod.ts";

export const SCRUB_API_PREFIX = "/api/v1/scrub";

export interface ScrubService {
  runner: ScrubRunner;
  /** To mount at SCRUB_API_PREFIX. */
  api: AdminRoute;
  /** Ends the loop after the step underway. */
  stop(): Promise<void>;
}

export function startScrub(
  options: {
    config: Pick<Config, "scrubRateBytesPerSecond" | "scrubIntervalMs">;
    store: LocalChunkStore;
    logger: Logger;
  },
): ScrubService {
  const runner = new ScrubRunner({
    store: options.store,
    rateBytesPerSecond: options.config.scrubRateBytesPerSecond,
    passIntervalMs: options.config.scrubIntervalMs,
    logger: options.logger,
  });
  runner.start();
  const status = runner.status();
  options.logger.info("scrub", {
    pool: status.pool,
    background: status.background,
    rateBytesPerSecond: status.rateBytesPerSecond,
    intervalS: status.passIntervalMs / 1000,
    resuming: status.pass !== null,
  });
  return { runner, api: scrubApi(runner), stop: () => runner.stop() };
}

/** The operator route of one runner. */
export function scrubApi(runner: Pick<ScrubRunner, "status" | "requestPass">): AdminRoute {
  return (req, url) => {
    const rest = url.pathname.slice(SCRUB_API_PREFIX.length);
    if (rest === "" || rest === "/") {
      if (req.method !== "GET") return Promise.resolve(notAllowed("GET"));
      return Promise.resolve(json(200, runner.status()));
    }
    if (rest === "/start") {
      if (req.method !== "POST") return Promise.resolve(notAllowed("POST"));
      if (!runner.requestPass()) {
        return Promise.resolve(json(409, {
          error: "conflict",
          message: "a scrub pass is already underway",
          status: runner.status(),
        }));
      }
      return Promise.resolve(json(202, { started: true, status: runner.status() }));
    }
    return Promise.resolve(json(404, { error: "not_found", message: url.pathname }));
  };
}

function notAllowed(allow: string): Response {
  const r = json(405, { error: "method_not_allowed", message: `use ${allow}` });
  r.headers.set("allow", allow);
  return r;
}
