// Erasure coding: Reed-Solomon over GF(2^8) behind one port, backed by ISA-L or by a
// byte-identical TypeScript twin. Roles call selectErasureCodec() once and pass the factory on.
export {
  EC_ASYNC_THRESHOLD_BYTES_DEFAULT,
  EC_DECODE_TABLES_BYTES_MAX,
  EC_DECODE_TABLES_ENTRIES_MAX,
  EC_FRAGMENT_ALIGN_BYTES,
  EC_FRAGMENT_BYTES_MAX,
  EC_FRAGMENT_STAGGER_BYTES,
  EC_FRAGMENTS_MAX,
  EC_GEOMETRIES_CACHED_MAX,
  EcError,
  fragmentLengthFor,
  join,
  split,
} from "./codec.ts";
export type {
  EcErrorCode,
  EcGeometry,
  EcImplementation,
  ErasureCodec,
  ErasureCodecFactory,
  ErasureCodecOptions,
  SplitObject,
} from "./codec.ts";
export { IsalCodec, IsalCodecFactory } from "./isal_codec.ts";
export { selectErasureCodec } from "./select.ts";
export { TypeScriptCodec, TypeScriptCodecFactory } from "./typescript_codec.ts";
