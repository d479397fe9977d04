// Kiseki erasure-coding shim: a thin, validated door onto Intel ISA-L's Reed-Solomon
// (GF(2^8), poly 0x11d, Cauchy generator) and its CRC-32C. TypeScript owns the caching and
// the policy; this file only turns one call with a packed pointer descriptor into one ISA-L
// call, so a k+m encode costs a single FFI crossing.
//
// Every entry point re-checks its arguments and returns a negative code instead of
// trusting the caller, because a bad pointer here is a crash of the whole process.

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <isa-l/crc.h>
#include <isa-l/erasure_code.h>

// Bumped whenever a signature below changes; bindings.ts refuses a mismatched shim.
#define KISEKI_EC_ABI_VERSION 2

// Cauchy rows and columns are k+m distinct field elements; 255 keeps the count a byte.
#define KISEKI_EC_TOTAL_MAX 255

// crc32_iscsi() takes an int length; longer buffers are fed to it in pieces of this size.
#define KISEKI_CRC32C_STEP_BYTES ((uint64_t)1 << 30)

#define KISEKI_EC_OK 0
#define KISEKI_EC_EINVAL -1
#define KISEKI_EC_ESINGULAR -2

int kiseki_ec_abi_version(void) { return KISEKI_EC_ABI_VERSION; }

// The address of a caller's buffer, for fragment descriptors. Deno.UnsafePointer.of() needs
// unscoped --allow-ffi; a call into this already-opened library does not.
uint64_t kiseki_ec_address_of(const void *p) { return (uint64_t)(uintptr_t)p; }

// Encode matrix: (k+m) x k, identity on top, Cauchy 1/(i ^ j) below.
int kiseki_ec_gen_matrix(int k, int m, uint8_t *matrix) {
  if (k < 1 || m < 1 || k + m > KISEKI_EC_TOTAL_MAX || matrix == NULL) return KISEKI_EC_EINVAL;
  gf_gen_cauchy1_matrix(matrix, k + m, k);
  return KISEKI_EC_OK;
}

// Expands `rows` x k coefficients into ISA-L's multiply tables (32 bytes per coefficient).
int kiseki_ec_init_tables(int k, int rows, uint8_t *coefficients, uint8_t *gftbls) {
  if (k < 1 || rows < 1 || k > KISEKI_EC_TOTAL_MAX || rows > KISEKI_EC_TOTAL_MAX ||
      coefficients == NULL || gftbls == NULL) {
    return KISEKI_EC_EINVAL;
  }
  ec_init_tables(k, rows, coefficients, gftbls);
  return KISEKI_EC_OK;
}

// Decode matrix for rebuilding `targets` from the k fragments `survivors` (indices into the
// (k+m)-row encode matrix). Row t of the result multiplies the survivors into fragment
// targets[t]: for a data target it is a row of the inverted survivor matrix, for a parity
// target it is that parity's encode row times the inverse (re-encode from recovered data).
int kiseki_ec_decode_matrix(int k, int m, const uint8_t *encode_matrix, const uint8_t *survivors,
                            const uint8_t *targets, int target_count, uint8_t *out) {
  uint8_t b[KISEKI_EC_TOTAL_MAX * KISEKI_EC_TOTAL_MAX];
  uint8_t inv[KISEKI_EC_TOTAL_MAX * KISEKI_EC_TOTAL_MAX];
  int n = k + m;
  if (k < 1 || m < 1 || n > KISEKI_EC_TOTAL_MAX || encode_matrix == NULL || survivors == NULL ||
      targets == NULL || out == NULL || target_count < 1 || target_count > m) {
    return KISEKI_EC_EINVAL;
  }
  for (int r = 0; r < k; r++) {
    if (survivors[r] >= n) return KISEKI_EC_EINVAL;
    memcpy(&b[r * k], &encode_matrix[survivors[r] * k], (size_t)k);
  }
  if (gf_invert_matrix(b, inv, k) != 0) return KISEKI_EC_ESINGULAR;
  for (int t = 0; t < target_count; t++) {
    int target = targets[t];
    if (target >= n) return KISEKI_EC_EINVAL;
    if (target < k) {
      memcpy(&out[t * k], &inv[target * k], (size_t)k);
      continue;
    }
    for (int j = 0; j < k; j++) {
      uint8_t s = 0;
      for (int i = 0; i < k; i++) s ^= gf_mul(inv[i * k + j], encode_matrix[target * k + i]);
      out[t * k + j] = s;
    }
  }
  return KISEKI_EC_OK;
}

// One encode or decode pass: `pointers` holds k source addresses then `rows` destination
// addresses, so the caller packs every fragment into one descriptor instead of k+m arguments.
// Bound twice in bindings.ts: blocking for small fragments, nonblocking for large ones.
int kiseki_ec_encode(int len, int k, int rows, uint8_t *gftbls, const uint64_t *pointers) {
  uint8_t *sources[KISEKI_EC_TOTAL_MAX];
  uint8_t *dests[KISEKI_EC_TOTAL_MAX];
  if (len < 0 || k < 1 || rows < 1 || k > KISEKI_EC_TOTAL_MAX || rows > KISEKI_EC_TOTAL_MAX ||
      gftbls == NULL || pointers == NULL) {
    return KISEKI_EC_EINVAL;
  }
  for (int i = 0; i < k; i++) {
    sources[i] = (uint8_t *)(uintptr_t)pointers[i];
    if (sources[i] == NULL) return KISEKI_EC_EINVAL;
  }
  for (int i = 0; i < rows; i++) {
    dests[i] = (uint8_t *)(uintptr_t)pointers[k + i];
    if (dests[i] == NULL) return KISEKI_EC_EINVAL;
  }
  if (len > 0) ec_encode_data(len, k, rows, gftbls, sources, dests);
  return KISEKI_EC_OK;
}

// CRC-32C (Castagnoli) with the same continuation as mod/base/crc32c.ts:
// kiseki_crc32c(b, n, kiseki_crc32c(a, m, 0)) == CRC-32C of a followed by b, and 0 for
// empty input. crc32_iscsi() neither inverts its initial value nor its result, so the
// finished CRC `previous` becomes the running register ~previous, and the register after
// the last byte is inverted back (crc32_iscsi("123456789", 9, ~0) == ~0xE3069283).
uint32_t kiseki_crc32c(const uint8_t *buf, uint64_t len, uint32_t previous) {
  uint32_t crc = ~previous;
  // Deno may pass NULL for an empty buffer; nothing to add then.
  if (buf == NULL) return previous;
  while (len > 0) {
    uint64_t step = len < KISEKI_CRC32C_STEP_BYTES ? len : KISEKI_CRC32C_STEP_BYTES;
    crc = crc32_iscsi((unsigned char *)buf, (int)step, crc);
    buf += step;
    len -= step;
  }
  return ~crc;
}
