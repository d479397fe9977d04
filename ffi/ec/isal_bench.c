// Native ceiling for the erasure-coding benchmark: the same ISA-L calls the shim makes,
// timed without any FFI crossing. tests/bench/ec_bench.ts runs it with the same k, m and
// fragment size and divides its own throughput by this one.
//
// Usage: isal_bench K M FRAGMENT_BYTES ITERATIONS
// Prints one JSON line: throughput in MB/s (10^6 bytes of data per second) for encode and
// for decode with the first M data fragments missing (decode tables built once, as the
// TypeScript side caches them per erasure pattern).

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <isa-l/erasure_code.h>

#define TOTAL_MAX 255
#define ALIGN_BYTES 64

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t *alloc_fragment(size_t len) {
  void *p = NULL;
  if (posix_memalign(&p, ALIGN_BYTES, len == 0 ? ALIGN_BYTES : len) != 0) return NULL;
  memset(p, 0, len);  // fault the pages in before timing
  return p;
}

static int fail(const char *message) {
  fprintf(stderr, "error: %s\n", message);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 5) return fail("usage: isal_bench K M FRAGMENT_BYTES ITERATIONS");
  int k = atoi(argv[1]), m = atoi(argv[2]), iterations = atoi(argv[4]);
  long len = atol(argv[3]);
  int n = k + m;
  if (k < 1 || m < 1 || n > TOTAL_MAX) return fail("need 1 <= k, 1 <= m, k + m <= 255");
  if (m > k) return fail("decode drops m data fragments, so m <= k");
  if (len < 1 || len > 0x7fffffffL) return fail("FRAGMENT_BYTES must be 1..2^31-1");
  if (iterations < 1) return fail("ITERATIONS must be >= 1");

  uint8_t *frags[TOTAL_MAX], *recovered[TOTAL_MAX];
  for (int i = 0; i < n; i++) {
    frags[i] = alloc_fragment((size_t)len);
    if (frags[i] == NULL) return fail("out of memory");
  }
  for (int i = 0; i < m; i++) {
    recovered[i] = alloc_fragment((size_t)len);
    if (recovered[i] == NULL) return fail("out of memory");
  }
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (int i = 0; i < k; i++) {
    for (long b = 0; b < len; b++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      frags[i][b] = (uint8_t)x;
    }
  }

  static uint8_t matrix[TOTAL_MAX * TOTAL_MAX], tables[32 * TOTAL_MAX * TOTAL_MAX];
  gf_gen_cauchy1_matrix(matrix, n, k);
  ec_init_tables(k, m, &matrix[k * k], tables);

  ec_encode_data((int)len, k, m, tables, frags, &frags[k]);  // warm-up
  double start = now_seconds();
  for (int it = 0; it < iterations; it++) ec_encode_data((int)len, k, m, tables, frags, &frags[k]);
  double encode_seconds = now_seconds() - start;

  // Lose data fragments 0..m-1; decode from the first k survivors m..m+k-1.
  static uint8_t b[TOTAL_MAX * TOTAL_MAX], inv[TOTAL_MAX * TOTAL_MAX];
  static uint8_t decode_tables[32 * TOTAL_MAX * TOTAL_MAX];
  uint8_t *survivors[TOTAL_MAX];
  for (int r = 0; r < k; r++) {
    memcpy(&b[r * k], &matrix[(m + r) * k], (size_t)k);
    survivors[r] = frags[m + r];
  }
  if (gf_invert_matrix(b, inv, k) != 0) return fail("singular survivor matrix");
  ec_init_tables(k, m, inv, decode_tables);  // rows 0..m-1 of the inverse rebuild data 0..m-1

  ec_encode_data((int)len, k, m, decode_tables, survivors, recovered);  // warm-up
  start = now_seconds();
  for (int it = 0; it < iterations; it++) {
    ec_encode_data((int)len, k, m, decode_tables, survivors, recovered);
  }
  double decode_seconds = now_seconds() - start;
  for (int i = 0; i < m; i++) {
    if (memcmp(recovered[i], frags[i], (size_t)len) != 0) return fail("decode mismatch");
  }

  double data_bytes = (double)k * (double)len * (double)iterations;
  printf("{\"k\":%d,\"m\":%d,\"fragment_bytes\":%ld,\"iterations\":%d,"
         "\"encode_seconds\":%.9f,\"decode_seconds\":%.9f,"
         "\"encode_mb_s\":%.1f,\"decode_mb_s\":%.1f}\n",
         k, m, len, iterations, encode_seconds, decode_seconds,
         data_bytes / encode_seconds / 1e6, data_bytes / decode_seconds / 1e6);
  for (int i = 0; i < n; i++) free(frags[i]);
  for (int i = 0; i < m; i++) free(recovered[i]);
  return 0;
}
