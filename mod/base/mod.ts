// Base: assertions, configuration, buffer pools, seeded randomness. Depends on nothing.
export { assert, AssertionError, unreachable } from "./assert.ts";
export { BufferPool } from "./buffer_pool.ts";
export { bytesEqual, concatBytes, fromHex, getU64LE, setU64LE, toHex } from "./bytes.ts";
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
export { addressOfPeer, isLoopbackAddress } from "./loopback.ts";
export { FreshCall } from "./fresh_call.ts";
export { BoundedLru } from "./lru.ts";
export { Prng } from "./prng.ts";
export { inCi, missingPart } from "./testing.ts";
export {
  crc32c,
  type Crc32cFunction,
  type Crc32cImplementation,
  crc32cImplementation,
  crc32cPure,
  installCrc32c,
} from "./crc32c.ts";
export {
  compareHlc,
  formatHlc,
  HLC_DRIFT_MS_MAX_DEFAULT,
  HLC_LOGICAL_MAX,
  HLC_PACKED_BYTES,
  HLC_PHYSICAL_MS_MAX,
  HLC_ZERO,
  HlcDriftError,
  HlcError,
  HybridLogicalClock,
  isHlcTimestamp,
  ManualClock,
  packHlc,
  readHlc,
  SystemClock,
  unpackHlc,
  writeHlc,
} from "./hlc.ts";
export type { Clock, HlcTimestamp, HybridLogicalClockOptions } from "./hlc.ts";
