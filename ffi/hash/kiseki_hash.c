// Hashing shim: SHA-256, MD5 and HMAC-SHA256 through OpenSSL 3 libcrypto (SHA-NI / AVX2
// code paths picked by OpenSSL at run time), and CRC-32C with the SSE4.2 instruction.
// kiseki_hash_chunk() is the put path's one pass over a chunk: the chunk id (SHA-256, or
// HMAC-SHA256 under a tenant key) and the object's running MD5 are fed the same bytes in
// strides small enough to stay in L1/L2, so each byte leaves memory once for both.
// The pure twin is mod/crypto/hashing.ts (node:crypto); both pass one conformance suite.

#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <string.h>

#define KISEKI_HASH_ABI_VERSION 1
#define KISEKI_HASH_SHA256 1
#define KISEKI_HASH_MD5 2
#define KISEKI_HASH_OK 0
#define KISEKI_HASH_EINVAL -1
#define KISEKI_HASH_EDIGEST -2
/* Bytes fed to one digest before the other gets them: 16 KiB stays in L1/L2. */
#define KISEKI_HASH_STRIDE (16u * 1024u)
#define KISEKI_HASH_BLOCK 64u

#define EXPORT __attribute__((visibility("default")))

static const EVP_MD *md_of(int32_t kind) {
  switch (kind) {
    case KISEKI_HASH_SHA256: return EVP_sha256();
    case KISEKI_HASH_MD5: return EVP_md5();
    default: return NULL;
  }
}

EXPORT int32_t kiseki_hash_abi_version(void) { return KISEKI_HASH_ABI_VERSION; }

/* A digest context of `kind`, initialised; NULL for an unknown kind or out of memory. */
EXPORT void *kiseki_hash_new(int32_t kind) {
  const EVP_MD *md = md_of(kind);
  if (md == NULL) return NULL;
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL) return NULL;
  if (EVP_DigestInit_ex(ctx, md, NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

EXPORT void kiseki_hash_free(void *ctx) { EVP_MD_CTX_free((EVP_MD_CTX *)ctx); }

EXPORT int32_t kiseki_hash_update(void *ctx, const uint8_t *in, uint64_t len) {
  if (ctx == NULL || (in == NULL && len > 0)) return KISEKI_HASH_EINVAL;
  if (len == 0) return KISEKI_HASH_OK;
  return EVP_DigestUpdate((EVP_MD_CTX *)ctx, in, len) == 1 ? KISEKI_HASH_OK : KISEKI_HASH_EDIGEST;
}

/* Writes the digest (32 or 16 bytes) to `out` and re-initialises the context for reuse. */
EXPORT int32_t kiseki_hash_final(void *ctx, uint8_t *out) {
  if (ctx == NULL || out == NULL) return KISEKI_HASH_EINVAL;
  EVP_MD_CTX *c = (EVP_MD_CTX *)ctx;
  unsigned int n = 0;
  const EVP_MD *md = EVP_MD_CTX_get0_md(c);
  if (EVP_DigestFinal_ex(c, out, &n) != 1) return KISEKI_HASH_EDIGEST;
  return EVP_DigestInit_ex(c, md, NULL) == 1 ? KISEKI_HASH_OK : KISEKI_HASH_EDIGEST;
}

/* The chunk id of `in` (SHA-256, or HMAC-SHA256 when key_len > 0) into id_out[32], and the
   same bytes into `md5` (an MD5 context, or NULL), in strides: one trip through memory. */
EXPORT int32_t kiseki_hash_chunk(void *md5, const uint8_t *key, uint64_t key_len,
                                 const uint8_t *in, uint64_t len, uint8_t *id_out) {
  if ((in == NULL && len > 0) || id_out == NULL || (key == NULL && key_len > 0)) {
    return KISEKI_HASH_EINVAL;
  }
  int32_t status = KISEKI_HASH_EDIGEST;
  uint8_t pad[KISEKI_HASH_BLOCK];
  uint8_t k[KISEKI_HASH_BLOCK];
  uint8_t inner[32];
  EVP_MD_CTX *sha = EVP_MD_CTX_new();
  if (sha == NULL) return KISEKI_HASH_EDIGEST;
  memset(k, 0, sizeof k);
  if (key_len > KISEKI_HASH_BLOCK) {
    unsigned int n = 0;
    if (EVP_Digest(key, key_len, k, &n, EVP_sha256(), NULL) != 1) goto done;
  } else if (key_len > 0) {
    memcpy(k, key, key_len);
  }
  if (EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) goto done;
  if (key_len > 0) {
    for (unsigned i = 0; i < KISEKI_HASH_BLOCK; i++) pad[i] = k[i] ^ 0x36;
    if (EVP_DigestUpdate(sha, pad, KISEKI_HASH_BLOCK) != 1) goto done;
  }
  for (uint64_t at = 0; at < len; at += KISEKI_HASH_STRIDE) {
    uint64_t n = len - at < KISEKI_HASH_STRIDE ? len - at : KISEKI_HASH_STRIDE;
    if (EVP_DigestUpdate(sha, in + at, n) != 1) goto done;
    if (md5 != NULL && EVP_DigestUpdate((EVP_MD_CTX *)md5, in + at, n) != 1) goto done;
  }
  if (key_len == 0) {
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(sha, id_out, &n) != 1) goto done;
  } else {
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(sha, inner, &n) != 1) goto done;
    for (unsigned i = 0; i < KISEKI_HASH_BLOCK; i++) pad[i] = k[i] ^ 0x5c;
    if (EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) goto done;
    if (EVP_DigestUpdate(sha, pad, KISEKI_HASH_BLOCK) != 1) goto done;
    if (EVP_DigestUpdate(sha, inner, sizeof inner) != 1) goto done;
    if (EVP_DigestFinal_ex(sha, id_out, &n) != 1) goto done;
  }
  status = KISEKI_HASH_OK;
done:
  OPENSSL_cleanse(k, sizeof k);
  OPENSSL_cleanse(pad, sizeof pad);
  OPENSSL_cleanse(inner, sizeof inner);
  EVP_MD_CTX_free(sha);
  return status;
}

/* Bit at a time, for a CPU without SSE4.2 (the reflected Castagnoli polynomial). */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *in, uint64_t len) {
  uint32_t c = ~crc;
  for (uint64_t at = 0; at < len; at++) {
    c ^= in[at];
    for (int b = 0; b < 8; b++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const uint8_t *in, uint64_t len) {
  uint64_t c = ~crc;
  uint64_t at = 0;
  for (; at + 8 <= len; at += 8) {
    uint64_t w;
    memcpy(&w, in + at, 8);
    c = __builtin_ia32_crc32di(c, w);
  }
  uint32_t c32 = (uint32_t)c;
  for (; at < len; at++) c32 = __builtin_ia32_crc32qi(c32, in[at]);
  return ~c32;
}

/* CRC-32C (Castagnoli, reflected, as S3's x-amz-checksum-crc32c) continued from `crc`
   (0 to start): the SSE4.2 instruction, 8 bytes a step, where the CPU has it. */
EXPORT uint32_t kiseki_hash_crc32c(uint32_t crc, const uint8_t *in, uint64_t len) {
  if (in == NULL) return crc;
  return __builtin_cpu_supports("sse4.2") ? crc32c_sse42(crc, in, len)
                                          : crc32c_bitwise(crc, in, len);
}
