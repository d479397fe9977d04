// Kiseki AEAD shim: AES-256-GCM through OpenSSL's EVP interface. TypeScript owns the
// port, the validation and the policy (blocking or not); this file turns one call, or one
// packed batch descriptor, into EVP calls and reports a status code.
//
// Every entry point re-checks its arguments and every OpenSSL return value, because a bad
// pointer here crashes the whole process and an ignored error could release plaintext
// that was never authenticated.

#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "OpenSSL >= 3.0 required (EVP_CIPHER_fetch, EVP_CipherInit_ex2)"
#endif

#define KISEKI_EXPORT __attribute__((visibility("default")))

// Bumped whenever a signature or the batch descriptor layout changes; bindings.ts refuses
// a shim built from another version instead of calling it with the wrong arguments.
#define KISEKI_AEAD_ABI_VERSION 1

#define KISEKI_AEAD_KEY_BYTES 32
#define KISEKI_AEAD_NONCE_BYTES 12
#define KISEKI_AEAD_TAG_BYTES 16

// EVP_*Update take an int length; longer inputs are fed in chunks of this size.
#define KISEKI_AEAD_CHUNK_BYTES (1 << 30)
// GCM's limit on one message: 2^39 - 256 bits (NIST SP 800-38D, 5.2.1.1).
#define KISEKI_AEAD_PLAINTEXT_MAX_BYTES ((((uint64_t)1) << 36) - 32)
// Mirrors AEAD_BATCH_ITEMS_MAX in mod/crypto/aead.ts; the descriptor buffer is sized by it.
#define KISEKI_AEAD_BATCH_ITEMS_MAX 1024
// Batch descriptor: per item eight u64 words (see the enum below).
#define KISEKI_AEAD_DESC_WORDS 8

#define KISEKI_AEAD_OK 0
#define KISEKI_AEAD_EAUTH 1
#define KISEKI_AEAD_EINVAL -1
#define KISEKI_AEAD_ENOMEM -2
#define KISEKI_AEAD_ECIPHER -3 // the provider has no AES-256-GCM (e.g. a restricted config)
#define KISEKI_AEAD_EINIT -4
#define KISEKI_AEAD_EAAD -5
#define KISEKI_AEAD_EUPDATE -6
#define KISEKI_AEAD_EFINAL -7
#define KISEKI_AEAD_ETAG -8

enum { D_KEY, D_NONCE, D_IN, D_IN_LEN, D_AAD, D_AAD_LEN, D_OUT, D_RESERVED };

// A key handle: the raw bytes (for contexts created on other threads) and one context
// already keyed, reused by the thread that owns the handle so each small call pays only
// for setting the IV, not for the key schedule and GHASH table.
typedef struct kiseki_aead_key {
  EVP_CIPHER_CTX *ctx;
  unsigned char raw[KISEKI_AEAD_KEY_BYTES];
} kiseki_aead_key;

// Fetched once: an implicit fetch on every init takes a lock and a lookup in OpenSSL 3.
static EVP_CIPHER *g_cipher = NULL;
static pthread_once_t g_cipher_once = PTHREAD_ONCE_INIT;

static void fetch_cipher(void) { g_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL); }

static const EVP_CIPHER *cipher(void) {
  if (pthread_once(&g_cipher_once, fetch_cipher) != 0) return NULL;
  return g_cipher;
}

KISEKI_EXPORT int kiseki_aead_abi_version(void) { return KISEKI_AEAD_ABI_VERSION; }

KISEKI_EXPORT const char *kiseki_aead_openssl_version(void) {
  return OpenSSL_version(OPENSSL_VERSION);
}

// Returns KISEKI_AEAD_OK when the cipher can be fetched; called once at load.
KISEKI_EXPORT int kiseki_aead_init(void) {
  if (cipher() == NULL) {
    ERR_clear_error();
    return KISEKI_AEAD_ECIPHER;
  }
  return KISEKI_AEAD_OK;
}

KISEKI_EXPORT void kiseki_aead_key_free(kiseki_aead_key *key) {
  if (key == NULL) return;
  EVP_CIPHER_CTX_free(key->ctx);
  OPENSSL_cleanse(key->raw, sizeof key->raw);
  free(key);
}

// Returns a handle or NULL (out of memory, or no cipher).
KISEKI_EXPORT kiseki_aead_key *kiseki_aead_key_new(const uint8_t *raw) {
  const EVP_CIPHER *c = cipher();
  if (raw == NULL || c == NULL) return NULL;
  kiseki_aead_key *key = calloc(1, sizeof *key);
  if (key == NULL) return NULL;
  memcpy(key->raw, raw, KISEKI_AEAD_KEY_BYTES);
  key->ctx = EVP_CIPHER_CTX_new();
  if (key->ctx == NULL || EVP_CipherInit_ex2(key->ctx, c, key->raw, NULL, 1, NULL) != 1) {
    ERR_clear_error();
    kiseki_aead_key_free(key);
    return NULL;
  }
  return key;
}

static int update_chunked(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, uint64_t len) {
  while (len > 0) {
    int chunk = len > KISEKI_AEAD_CHUNK_BYTES ? KISEKI_AEAD_CHUNK_BYTES : (int)len;
    int written = 0;
    if (EVP_CipherUpdate(ctx, out, &written, in, chunk) != 1) return 0;
    // GCM is a stream mode: output must match input byte for byte, or `out` math breaks.
    if (out != NULL && written != chunk) return 0;
    in += chunk;
    if (out != NULL) out += chunk;
    len -= (uint64_t)chunk;
  }
  return 1;
}

// One message. `raw` is NULL when `ctx` already holds this key (the owner's context).
// Seal: in = plaintext (in_len), out = ciphertext || tag. Open: in = ciphertext || tag
// (in_len >= TAG), out = plaintext; on any failure the plaintext region is wiped.
static int run_one(EVP_CIPHER_CTX *ctx, int enc, const unsigned char *raw, const uint8_t *nonce,
                   const uint8_t *in, uint64_t in_len, const uint8_t *aad, uint64_t aad_len,
                   uint8_t *out) {
  if (nonce == NULL || out == NULL || (in == NULL && in_len > 0) ||
      (aad == NULL && aad_len > 0)) {
    return KISEKI_AEAD_EINVAL;
  }
  uint64_t text_len = in_len;
  unsigned char tag[KISEKI_AEAD_TAG_BYTES];
  if (!enc) {
    if (in_len < KISEKI_AEAD_TAG_BYTES) return KISEKI_AEAD_EAUTH;
    text_len = in_len - KISEKI_AEAD_TAG_BYTES;
    // Copied before decrypting, so an in-place open cannot overwrite the tag first.
    memcpy(tag, in + text_len, KISEKI_AEAD_TAG_BYTES);
  }
  if (text_len > KISEKI_AEAD_PLAINTEXT_MAX_BYTES) return KISEKI_AEAD_EINVAL;

  int status = KISEKI_AEAD_OK;
  if (EVP_CipherInit_ex2(ctx, raw == NULL ? NULL : cipher(), raw, nonce, enc, NULL) != 1) {
    status = KISEKI_AEAD_EINIT;
  } else if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KISEKI_AEAD_TAG_BYTES,
                                         tag) != 1) {
    status = KISEKI_AEAD_ETAG;
  } else if (!update_chunked(ctx, NULL, aad, aad_len)) {
    status = KISEKI_AEAD_EAAD;
  } else if (!update_chunked(ctx, out, in, text_len)) {
    status = KISEKI_AEAD_EUPDATE;
  } else {
    int final_len = 0;
    if (EVP_CipherFinal_ex(ctx, out + text_len, &final_len) != 1 || final_len != 0) {
      // For open this is the tag mismatch; for seal it should not happen.
      status = enc ? KISEKI_AEAD_EFINAL : KISEKI_AEAD_EAUTH;
    } else if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KISEKI_AEAD_TAG_BYTES,
                                          out + text_len) != 1) {
      status = KISEKI_AEAD_ETAG;
    }
  }
  if (status != KISEKI_AEAD_OK) {
    ERR_clear_error();
    if (!enc) OPENSSL_cleanse(out, (size_t)text_len);
  }
  OPENSSL_cleanse(tag, sizeof tag);
  return status;
}

// Blocking entry points: run on the thread that owns `key`, with its keyed context.
KISEKI_EXPORT int kiseki_aead_seal(kiseki_aead_key *key, const uint8_t *nonce, const uint8_t *pt,
                                   uint64_t pt_len, const uint8_t *aad, uint64_t aad_len,
                                   uint8_t *out) {
  if (key == NULL) return KISEKI_AEAD_EINVAL;
  return run_one(key->ctx, 1, NULL, nonce, pt, pt_len, aad, aad_len, out);
}

KISEKI_EXPORT int kiseki_aead_open(kiseki_aead_key *key, const uint8_t *nonce,
                                   const uint8_t *sealed, uint64_t sealed_len,
                                   const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  if (key == NULL) return KISEKI_AEAD_EINVAL;
  return run_one(key->ctx, 0, NULL, nonce, sealed, sealed_len, aad, aad_len, out);
}

// Nonblocking entry points: run on a runtime worker thread while the owner may be using
// the key's context, so they key a private context from the raw bytes (about a
// microsecond, against the hundreds these large inputs take).
static int run_one_private(int enc, kiseki_aead_key *key, const uint8_t *nonce, const uint8_t *in,
                           uint64_t in_len, const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  if (key == NULL) return KISEKI_AEAD_EINVAL;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return KISEKI_AEAD_ENOMEM;
  int status = run_one(ctx, enc, key->raw, nonce, in, in_len, aad, aad_len, out);
  EVP_CIPHER_CTX_free(ctx);
  return status;
}

KISEKI_EXPORT int kiseki_aead_seal_async(kiseki_aead_key *key, const uint8_t *nonce,
                                         const uint8_t *pt, uint64_t pt_len, const uint8_t *aad,
                                         uint64_t aad_len, uint8_t *out) {
  return run_one_private(1, key, nonce, pt, pt_len, aad, aad_len, out);
}

KISEKI_EXPORT int kiseki_aead_open_async(kiseki_aead_key *key, const uint8_t *nonce,
                                         const uint8_t *sealed, uint64_t sealed_len,
                                         const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  return run_one_private(0, key, nonce, sealed, sealed_len, aad, aad_len, out);
}

// A batch: `count` items described by `desc` (KISEKI_AEAD_DESC_WORDS u64 words each),
// one status per item into `statuses`. Returns the number of items that failed
// authentication, or the first negative code of an item that could not run (the caller
// then discards the whole batch; every failed open output has been wiped). `owner` says
// whether the calling
// thread owns the keys' contexts (blocking call) or must key a private context.
static int run_batch(int enc, int owner, const uint64_t *desc, uint32_t count, int32_t *statuses) {
  if (desc == NULL || statuses == NULL || count > KISEKI_AEAD_BATCH_ITEMS_MAX) {
    return KISEKI_AEAD_EINVAL;
  }
  EVP_CIPHER_CTX *private_ctx = NULL;
  const kiseki_aead_key *private_key = NULL;
  if (!owner) {
    private_ctx = EVP_CIPHER_CTX_new();
    if (private_ctx == NULL) return KISEKI_AEAD_ENOMEM;
  }
  int failed = 0;
  int fatal = KISEKI_AEAD_OK;
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t *d = desc + (size_t)i * KISEKI_AEAD_DESC_WORDS;
    kiseki_aead_key *key = (kiseki_aead_key *)(uintptr_t)d[D_KEY];
    int status;
    if (key == NULL) {
      status = KISEKI_AEAD_EINVAL;
    } else if (owner) {
      status = run_one(key->ctx, enc, NULL, (const uint8_t *)(uintptr_t)d[D_NONCE],
                       (const uint8_t *)(uintptr_t)d[D_IN], d[D_IN_LEN],
                       (const uint8_t *)(uintptr_t)d[D_AAD], d[D_AAD_LEN],
                       (uint8_t *)(uintptr_t)d[D_OUT]);
    } else {
      // Consecutive items under one key re-key nothing: only the IV changes.
      status = run_one(private_ctx, enc, key == private_key ? NULL : key->raw,
                       (const uint8_t *)(uintptr_t)d[D_NONCE],
                       (const uint8_t *)(uintptr_t)d[D_IN], d[D_IN_LEN],
                       (const uint8_t *)(uintptr_t)d[D_AAD], d[D_AAD_LEN],
                       (uint8_t *)(uintptr_t)d[D_OUT]);
      // After a failed init the context's key is unknown; force a re-key next time.
      private_key = status == KISEKI_AEAD_OK || status == KISEKI_AEAD_EAUTH ? key : NULL;
    }
    statuses[i] = status;
    if (status == KISEKI_AEAD_EAUTH) {
      failed++;
    } else if (status != KISEKI_AEAD_OK && fatal == KISEKI_AEAD_OK) {
      fatal = status;
    }
  }
  EVP_CIPHER_CTX_free(private_ctx);
  return fatal != KISEKI_AEAD_OK ? fatal : failed;
}

KISEKI_EXPORT int kiseki_aead_seal_batch(const uint64_t *desc, uint32_t count, int32_t *statuses) {
  return run_batch(1, 1, desc, count, statuses);
}

KISEKI_EXPORT int kiseki_aead_open_batch(const uint64_t *desc, uint32_t count, int32_t *statuses) {
  return run_batch(0, 1, desc, count, statuses);
}

KISEKI_EXPORT int kiseki_aead_seal_batch_async(const uint64_t *desc, uint32_t count,
                                               int32_t *statuses) {
  return run_batch(1, 0, desc, count, statuses);
}

KISEKI_EXPORT int kiseki_aead_open_batch_async(const uint64_t *desc, uint32_t count,
                                               int32_t *statuses) {
  return run_batch(0, 0, desc, count, statuses);
}
