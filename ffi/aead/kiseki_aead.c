// Kiseki AEAD shim: AES-256-GCM through OpenSSL's EVP interface. TypeScript owns the
// port, the validation and the policy (blocking or not); this file turns one call, or one
// packed batch descriptor, into EVP calls and reports a status code.
//
// Every entry point re-checks its arguments and every OpenSSL return value, because a bad
// pointer here crashes the whole process and an ignored error could release plaintext
// that was never authenticated.

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

// Keyed contexts kept by the thread that owns a cache: a small message then pays only for
// a new IV, not for the key schedule and GHASH table (about 20% of a 4 KiB seal).
#define KISEKI_AEAD_CACHE_ENTRIES 8

enum { D_KEY, D_NONCE, D_IN, D_IN_LEN, D_AAD, D_AAD_LEN, D_OUT, D_RESERVED };

// Entries are found by key content (constant-time compare), so no handle lifetime or
// identity can go stale: a key is 32 bytes the caller passes on every call.
typedef struct kiseki_aead_cache_entry {
  EVP_CIPHER_CTX *ctx;
  uint64_t used_tick;
  int keyed;
  unsigned char key[KISEKI_AEAD_KEY_BYTES];
} kiseki_aead_cache_entry;

typedef struct kiseki_aead_cache {
  uint64_t tick;
  kiseki_aead_cache_entry entries[KISEKI_AEAD_CACHE_ENTRIES];
} kiseki_aead_cache;

// Fetched once: an implicit fetch on every init takes a lock and a lookup in OpenSSL 3.
static EVP_CIPHER *g_cipher = NULL;
static pthread_once_t g_cipher_once = PTHREAD_ONCE_INIT;

static void fetch_cipher(void) { g_cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL); }

static const EVP_CIPHER *cipher(void) {
  if (pthread_once(&g_cipher_once, fetch_cipher) != 0) return NULL;
  return g_cipher;
}

KISEKI_EXPORT int kiseki_aead_abi_version(void) { return KISEKI_AEAD_ABI_VERSION; }

// Copies OpenSSL_version(OPENSSL_VERSION) into `out` (NUL-terminated, truncated to `cap`).
// A copy rather than a pointer: reading a C string from Deno needs unscoped --allow-ffi.
KISEKI_EXPORT size_t kiseki_aead_openssl_version(char *out, size_t cap) {
  const char *v = OpenSSL_version(OPENSSL_VERSION);
  size_t n = strlen(v);
  if (cap == 0) return n;
  size_t copy = n < cap - 1 ? n : cap - 1;
  memcpy(out, v, copy);
  out[copy] = '\0';
  return n;
}

// The address of a caller's buffer, for batch descriptors. Deno.UnsafePointer.of() needs
// unscoped --allow-ffi; a call into this already-opened library does not.
KISEKI_EXPORT uint64_t kiseki_aead_address_of(const void *p) { return (uint64_t)(uintptr_t)p; }

// Returns KISEKI_AEAD_OK when the cipher can be fetched; called once at load.
KISEKI_EXPORT int kiseki_aead_init(void) {
  if (cipher() == NULL) {
    ERR_clear_error();
    return KISEKI_AEAD_ECIPHER;
  }
  return KISEKI_AEAD_OK;
}

KISEKI_EXPORT void kiseki_aead_cache_free(kiseki_aead_cache *cache) {
  if (cache == NULL) return;
  for (int i = 0; i < KISEKI_AEAD_CACHE_ENTRIES; i++) EVP_CIPHER_CTX_free(cache->entries[i].ctx);
  OPENSSL_cleanse(cache, sizeof *cache);
  free(cache);
}

// A cache for one thread (its contexts are created on first use); NULL when out of memory.
KISEKI_EXPORT kiseki_aead_cache *kiseki_aead_cache_new(void) {
  return calloc(1, sizeof(kiseki_aead_cache));
}

// The entry for `key`: one already keyed with it (most recent hit), else the least recently
// used entry, emptied and given a context; NULL when out of memory.
static kiseki_aead_cache_entry *cache_lookup(kiseki_aead_cache *cache, const uint8_t *key) {
  kiseki_aead_cache_entry *victim = &cache->entries[0];
  cache->tick++;
  for (int i = 0; i < KISEKI_AEAD_CACHE_ENTRIES; i++) {
    kiseki_aead_cache_entry *e = &cache->entries[i];
    if (e->keyed && CRYPTO_memcmp(e->key, key, KISEKI_AEAD_KEY_BYTES) == 0) {
      e->used_tick = cache->tick;
      return e;
    }
    if (e->used_tick < victim->used_tick) victim = e;
  }
  if (victim->ctx == NULL) {
    victim->ctx = EVP_CIPHER_CTX_new();
    if (victim->ctx == NULL) return NULL;
  }
  // Marked keyed only after a successful init, so a failure cannot leave an entry
  // claiming a key its context does not hold.
  victim->keyed = 0;
  victim->used_tick = cache->tick;
  OPENSSL_cleanse(victim->key, sizeof victim->key);
  return victim;
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

// One message on `ctx`. `key` is NULL when `ctx` already holds the right key. Seal: in =
// plaintext, out = ciphertext || tag. Open: in = ciphertext || tag (in_len >= TAG), out =
// plaintext; on any failure the plaintext region is wiped. `*keyed` tells the caller
// whether `ctx` now holds the key (init succeeded), whatever the outcome after that.
static int run_one(EVP_CIPHER_CTX *ctx, int enc, const uint8_t *key, const uint8_t *nonce,
                   const uint8_t *in, uint64_t in_len, const uint8_t *aad, uint64_t aad_len,
                   uint8_t *out, int *keyed) {
  *keyed = 0;
  uint64_t text_len = in_len;
  if (!enc) {
    if (in_len < KISEKI_AEAD_TAG_BYTES) return KISEKI_AEAD_EAUTH;
    text_len = in_len - KISEKI_AEAD_TAG_BYTES;
  }
  // An empty open may have no output buffer at all; GCM then writes nothing.
  unsigned char no_output[KISEKI_AEAD_TAG_BYTES];
  if (out == NULL && !enc && text_len == 0) out = no_output;
  if (nonce == NULL || out == NULL || (in == NULL && in_len > 0) ||
      (aad == NULL && aad_len > 0) || text_len > KISEKI_AEAD_PLAINTEXT_MAX_BYTES) {
    return KISEKI_AEAD_EINVAL;
  }
  unsigned char tag[KISEKI_AEAD_TAG_BYTES];
  // Copied before decrypting, so an in-place open cannot overwrite the tag first.
  if (!enc) memcpy(tag, in + text_len, KISEKI_AEAD_TAG_BYTES);

  int status = KISEKI_AEAD_OK;
  if (EVP_CipherInit_ex2(ctx, key == NULL ? NULL : cipher(), key, nonce, enc, NULL) != 1) {
    status = KISEKI_AEAD_EINIT;
  } else if ((*keyed = 1, !enc) &&
             EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KISEKI_AEAD_TAG_BYTES, tag) != 1) {
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
  if (!enc) OPENSSL_cleanse(tag, sizeof tag);
  return status;
}

// On the thread that owns `cache`, with a context that usually already holds the key.
static int run_cached(kiseki_aead_cache *cache, int enc, const uint8_t *key,
                      const uint8_t *nonce, const uint8_t *in, uint64_t in_len,
                      const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  if (cache == NULL || key == NULL) return KISEKI_AEAD_EINVAL;
  kiseki_aead_cache_entry *e = cache_lookup(cache, key);
  if (e == NULL) return KISEKI_AEAD_ENOMEM;
  int keyed = 0;
  int status = run_one(e->ctx, enc, e->keyed ? NULL : key, nonce, in, in_len, aad, aad_len,
                       out, &keyed);
  if (keyed && !e->keyed) memcpy(e->key, key, KISEKI_AEAD_KEY_BYTES);
  // A failed init leaves the context's key unknown: the entry must be re-keyed next time.
  e->keyed = keyed;
  if (!keyed) OPENSSL_cleanse(e->key, sizeof e->key);
  return status;
}

// Blocking entry points: called on the thread that owns `cache`.
KISEKI_EXPORT int kiseki_aead_seal(kiseki_aead_cache *cache, const uint8_t *key,
                                   const uint8_t *nonce, const uint8_t *pt, uint64_t pt_len,
                                   const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  return run_cached(cache, 1, key, nonce, pt, pt_len, aad, aad_len, out);
}

KISEKI_EXPORT int kiseki_aead_open(kiseki_aead_cache *cache, const uint8_t *key,
                                   const uint8_t *nonce, const uint8_t *sealed,
                                   uint64_t sealed_len, const uint8_t *aad, uint64_t aad_len,
                                   uint8_t *out) {
  return run_cached(cache, 0, key, nonce, sealed, sealed_len, aad, aad_len, out);
}

// Nonblocking entry points: run on a runtime worker thread while the owner may be using
// its cache, so they key a private context (about a microsecond, against the hundreds
// these large inputs take).
static int run_private(int enc, const uint8_t *key, const uint8_t *nonce, const uint8_t *in,
                       uint64_t in_len, const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  if (key == NULL) return KISEKI_AEAD_EINVAL;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return KISEKI_AEAD_ENOMEM;
  int keyed = 0;
  int status = run_one(ctx, enc, key, nonce, in, in_len, aad, aad_len, out, &keyed);
  EVP_CIPHER_CTX_free(ctx);
  return status;
}

KISEKI_EXPORT int kiseki_aead_seal_async(const uint8_t *key, const uint8_t *nonce,
                                         const uint8_t *pt, uint64_t pt_len, const uint8_t *aad,
                                         uint64_t aad_len, uint8_t *out) {
  return run_private(1, key, nonce, pt, pt_len, aad, aad_len, out);
}

KISEKI_EXPORT int kiseki_aead_open_async(const uint8_t *key, const uint8_t *nonce,
                                         const uint8_t *sealed, uint64_t sealed_len,
                                         const uint8_t *aad, uint64_t aad_len, uint8_t *out) {
  return run_private(0, key, nonce, sealed, sealed_len, aad, aad_len, out);
}

// A batch: `count` items described by `desc` (KISEKI_AEAD_DESC_WORDS u64 words each),
// one status per item into `statuses`. Returns the number of items that failed
// authentication, or the first negative code of an item that could not run (the caller
// then discards the whole batch; every failed open output has been wiped). With a
// `cache` the caller is its owning thread; without one, a private context is keyed.
static int run_batch(kiseki_aead_cache *cache, int enc, const uint64_t *desc, uint32_t count,
                     int32_t *statuses) {
  if (desc == NULL || statuses == NULL || count > KISEKI_AEAD_BATCH_ITEMS_MAX) {
    return KISEKI_AEAD_EINVAL;
  }
  EVP_CIPHER_CTX *private_ctx = NULL;
  unsigned char private_key[KISEKI_AEAD_KEY_BYTES];
  int private_keyed = 0;
  if (cache == NULL) {
    private_ctx = EVP_CIPHER_CTX_new();
    if (private_ctx == NULL) return KISEKI_AEAD_ENOMEM;
  }
  int failed = 0;
  int fatal = KISEKI_AEAD_OK;
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t *d = desc + (size_t)i * KISEKI_AEAD_DESC_WORDS;
    const uint8_t *key = (const uint8_t *)(uintptr_t)d[D_KEY];
    const uint8_t *nonce = (const uint8_t *)(uintptr_t)d[D_NONCE];
    const uint8_t *in = (const uint8_t *)(uintptr_t)d[D_IN];
    const uint8_t *aad = (const uint8_t *)(uintptr_t)d[D_AAD];
    uint8_t *out = (uint8_t *)(uintptr_t)d[D_OUT];
    int status;
    if (key == NULL) {
      status = KISEKI_AEAD_EINVAL;
    } else if (cache != NULL) {
      status = run_cached(cache, enc, key, nonce, in, d[D_IN_LEN], aad, d[D_AAD_LEN], out);
    } else {
      // Consecutive items under one key re-key nothing: only the IV changes.
      int same = private_keyed && CRYPTO_memcmp(private_key, key, KISEKI_AEAD_KEY_BYTES) == 0;
      int keyed = 0;
      status = run_one(private_ctx, enc, same ? NULL : key, nonce, in, d[D_IN_LEN], aad,
                       d[D_AAD_LEN], out, &keyed);
      if (!same || !keyed) {
        private_keyed = keyed;
        if (keyed) memcpy(private_key, key, KISEKI_AEAD_KEY_BYTES);
      }
    }
    statuses[i] = status;
    if (status == KISEKI_AEAD_EAUTH) {
      failed++;
    } else if (status != KISEKI_AEAD_OK && fatal == KISEKI_AEAD_OK) {
      fatal = status;
    }
  }
  EVP_CIPHER_CTX_free(private_ctx);
  OPENSSL_cleanse(private_key, sizeof private_key);
  return fatal != KISEKI_AEAD_OK ? fatal : failed;
}

KISEKI_EXPORT int kiseki_aead_seal_batch(kiseki_aead_cache *cache, const uint64_t *desc,
                                         uint32_t count, int32_t *statuses) {
  if (cache == NULL) return KISEKI_AEAD_EINVAL;
  return run_batch(cache, 1, desc, count, statuses);
}

KISEKI_EXPORT int kiseki_aead_open_batch(kiseki_aead_cache *cache, const uint64_t *desc,
                                         uint32_t count, int32_t *statuses) {
  if (cache == NULL) return KISEKI_AEAD_EINVAL;
  return run_batch(cache, 0, desc, count, statuses);
}

KISEKI_EXPORT int kiseki_aead_seal_batch_async(const uint64_t *desc, uint32_t count,
                                               int32_t *statuses) {
  return run_batch(NULL, 1, desc, count, statuses);
}

KISEKI_EXPORT int kiseki_aead_open_batch_async(const uint64_t *desc, uint32_t count,
                                               int32_t *statuses) {
  return run_batch(NULL, 0, desc, count, statuses);
}
