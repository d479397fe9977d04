// Base: assertions, configuration, buffer pools, seeded randomness. Depends on nothing.
export { assert, AssertionError, unreachable } from "./assert.ts";
export { BufferPool } from "./buffer_pool.ts";
export type { BufferPoolOptions, BufferPoolStats } from "./buffer_pool.ts";
export {
  CONFIG_VARIABLE_NAMES,
  CONFIG_VARIABLES,
  ConfigError,
  formatHostPort,
  parseByteSize,
  parseConfig,
  parseHostPort,
  parseRaftPeers,
} from "./config.ts";
export type {
  CacheMode,
  Config,
  ConfigEnv,
  ConfigVariable,
  FfiMode,
  HostPort,
  LogFormat,
  LogLevel,
  ParseConfigOptions,
  RaftPeer,
  TlsPaths,
} from "./config.ts";
export { Prng } from "./prng.ts";
