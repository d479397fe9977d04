// kiseki_fabric: a framed-message transport over libfabric message endpoints (FI_EP_MSG),
// for whichever provider the caller names (tcp here; verbs where a device exists). The shim
// owns its buffers: received messages land in a ring of posted buffers and are copied out;
// sent messages are copied into a ring of send buffers, so no caller memory is ever left
// posted when a call returns or times out. Message boundaries are libfabric's; frames
// longer than one message are cut and joined by the TypeScript side (ffi/fabric/bindings.ts).
//
// Threads: one send and one receive call may run at once on a connection (Deno runs
// nonblocking FFI calls on its blocking pool), so domains ask for FI_THREAD_SAFE. Waits are
// sliced (KF_WAIT_SLICE_MS) so kf_*_cancel() is seen quickly; close only after every call
// on the handle has returned.
//
// Return values: 0 or a count on success, a negative libfabric errno (-FI_E*) on failure;
// -FI_EAGAIN is a timeout, -FI_ECANCELED a cancel, -FI_ECONNRESET the peer went away.

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define KF_ABI_VERSION 1
#define KF_API_VERSION FI_VERSION(1, 9)
/**
 * Largest message the shim sends or receives (a frame is cut into messages of this size):
 * 64 KiB and room for the frame header. The tcp provider completes a send of this size
 * inline when the socket has room; 1 MiB messages waited on progress polling and measured
 * slower on loaded hosts (noisy: 140-870 MB/s either way on 2 shared cores).
 */
#define KF_MSG_BYTES_MAX ((1u << 16) + 4096)
/** Receive buffers kept posted per connection, and sends in flight at most (~1 MiB each way). */
#define KF_RX_DEPTH 16
#define KF_TX_DEPTH 16
/** Longest single wait inside a call, so cancels and deadlines are seen. */
#define KF_WAIT_SLICE_MS 20
/** Bytes of provider names kf_providers() writes at most. */
#define KF_PROVIDERS_BYTES_MAX 4096

#define EXPORT __attribute__((visibility("default")))

struct kf_listener {
  struct fi_info *info;
  struct fid_fabric *fabric;
  struct fid_eq *eq;
  struct fid_pep *pep;
  atomic_int cancelled;
};

struct kf_conn {
  struct fi_info *info;
  struct fid_fabric *fabric;
  struct fid_domain *domain;
  struct fid_eq *eq;
  struct fid_ep *ep;
  struct fid_cq *txcq;
  struct fid_cq *rxcq;
  struct fid_mr *rxmr;
  struct fid_mr *txmr;
  void *rxdesc;
  void *txdesc;
  uint8_t *rxbuf;
  uint8_t *txbuf;
  size_t msg_max;
  struct fi_context2 rxctx[KF_RX_DEPTH];
  struct fi_context2 txctx[KF_TX_DEPTH];
  int tx_free[KF_TX_DEPTH];
  int tx_free_count;
  int connected;
  atomic_int cancelled;
  atomic_int peer_closed;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int slice_until(int64_t deadline) {
  int64_t left = deadline - now_ms();
  if (left <= 0) return 0;
  return left < KF_WAIT_SLICE_MS ? (int)left : KF_WAIT_SLICE_MS;
}

static struct fi_info *make_hints(const char *prov) {
  struct fi_info *hints = fi_allocinfo();
  if (hints == NULL) return NULL;
  hints->ep_attr->type = FI_EP_MSG;
  hints->caps = FI_MSG;
  hints->mode = FI_CONTEXT | FI_CONTEXT2;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_VIRT_ADDR;
  hints->domain_attr->threading = FI_THREAD_SAFE;
  hints->fabric_attr->prov_name = strdup(prov);
  if (hints->fabric_attr->prov_name == NULL) {
    fi_freeinfo(hints);
    return NULL;
  }
  return hints;
}

EXPORT int kf_abi_version(void) { return KF_ABI_VERSION; }

EXPORT uint32_t kf_fi_version(void) { return fi_version(); }

EXPORT uint32_t kf_msg_bytes_max(void) { return KF_MSG_BYTES_MAX; }

EXPORT const char *kf_strerror(int code) { return fi_strerror(code < 0 ? -code : code); }

/** Comma-separated names of every provider libfabric offers here; its length, or < 0. */
EXPORT int kf_providers(char *out, uint32_t cap) {
  struct fi_info *list = NULL;
  int rc = fi_getinfo(KF_API_VERSION, NULL, NULL, 0, NULL, &list);
  if (rc != 0) {
    if (cap > 0) out[0] = 0;
    return rc == -FI_ENODATA ? 0 : rc;
  }
  size_t used = 0;
  if (cap > 0) out[0] = 0;
  for (struct fi_info *i = list; i != NULL; i = i->next) {
    const char *name = i->fabric_attr != NULL ? i->fabric_attr->prov_name : NULL;
    if (name == NULL) continue;
    // Skip names already written (a provider appears once per interface and endpoint type).
    size_t n = strlen(name);
    const char *p = out;
    int seen = 0;
    while (used > 0 && p != NULL && *p) {
      const char *comma = strchr(p, ',');
      size_t len = comma ? (size_t)(comma - p) : strlen(p);
      if (len == n && memcmp(p, name, n) == 0) {
        seen = 1;
        break;
      }
      p = comma ? comma + 1 : NULL;
    }
    if (seen) continue;
    if (used + n + 2 > cap) {
      fi_freeinfo(list);
      return -FI_ETOOSMALL;
    }
    if (used > 0) out[used++] = ',';
    memcpy(out + used, name, n);
    used += n;
    out[used] = 0;
  }
  fi_freeinfo(list);
  return (int)used;
}

/** 0 when `prov` offers message endpoints here, else why not (-FI_ENODATA: it does not). */
EXPORT int kf_provider_usable(const char *prov) {
  struct fi_info *hints = make_hints(prov);
  if (hints == NULL) return -FI_ENOMEM;
  struct fi_info *info = NULL;
  int rc = fi_getinfo(KF_API_VERSION, NULL, NULL, 0, hints, &info);
  fi_freeinfo(hints);
  if (info != NULL) fi_freeinfo(info);
  return rc;
}

/**
 * RDMA devices libibverbs sees here (loaded at run time, so the shim needs no verbs to
 * build or load); < 0 when it cannot tell. `why` gets one line saying what was found.
 */
EXPORT int kf_verbs_devices(char *why, uint32_t cap) {
  if (cap > 0) why[0] = 0;
  void *lib = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    const char *e = dlerror();
    snprintf(why, cap, "libibverbs not loadable: %s", e ? e : "unknown");
    return -1;
  }
  typedef void **(*get_list_fn)(int *);
  typedef void (*free_list_fn)(void **);
  get_list_fn get_list = (get_list_fn)dlsym(lib, "ibv_get_device_list");
  free_list_fn free_list = (free_list_fn)dlsym(lib, "ibv_free_device_list");
  if (get_list == NULL || free_list == NULL) {
    snprintf(why, cap, "libibverbs lacks ibv_get_device_list");
    dlclose(lib);
    return -1;
  }
  int n = 0;
  errno = 0;
  void **list = get_list(&n);
  if (list == NULL) {
    // ENOSYS: no verbs support in the kernel (no /sys/class/infiniband_verbs): no devices.
    int e = errno;
    snprintf(why, cap, "libibverbs: no RDMA devices (%s)", strerror(e ? e : ENODEV));
    dlclose(lib);
    return e == ENOSYS || e == 0 || e == ENODEV || e == ENOENT ? 0 : -1;
  }
  free_list(list);
  snprintf(why, cap, "libibverbs: %d RDMA device%s", n, n == 1 ? "" : "s");
  dlclose(lib);
  return n;
}

// ---- connections ----

static void conn_free(struct kf_conn *c) {
  if (c->ep) fi_close(&c->ep->fid);
  if (c->rxmr) fi_close(&c->rxmr->fid);
  if (c->txmr) fi_close(&c->txmr->fid);
  if (c->txcq) fi_close(&c->txcq->fid);
  if (c->rxcq) fi_close(&c->rxcq->fid);
  if (c->eq) fi_close(&c->eq->fid);
  if (c->domain) fi_close(&c->domain->fid);
  if (c->fabric) fi_close(&c->fabric->fid);
  if (c->info) fi_freeinfo(c->info);
  free(c->rxbuf);
  free(c->txbuf);
  free(c);
}

static int post_rx(struct kf_conn *c, int slot) {
  for (;;) {
    ssize_t rc = fi_recv(c->ep, c->rxbuf + (size_t)slot * c->msg_max, c->msg_max, c->rxdesc, 0,
                         &c->rxctx[slot]);
    if (rc != -FI_EAGAIN) return (int)rc;
    struct fi_cq_msg_entry none;
    (void)fi_cq_read(c->rxcq, &none, 0);  // drives progress on providers that need it
  }
}

/** Opens everything a connection needs on `info` (taken: freed with the connection). */
static int conn_open(struct fi_info *info, struct kf_conn **out) {
  struct kf_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    fi_freeinfo(info);
    return -FI_ENOMEM;
  }
  c->info = info;
  int rc = fi_fabric(info->fabric_attr, &c->fabric, NULL);
  if (rc) goto fail;
  rc = fi_domain(c->fabric, info, &c->domain, NULL);
  if (rc) goto fail;
  struct fi_eq_attr eq_attr = {.size = 16, .wait_obj = FI_WAIT_UNSPEC};
  rc = fi_eq_open(c->fabric, &eq_attr, &c->eq, NULL);
  if (rc) goto fail;
  struct fi_cq_attr cq_attr = {
      .size = KF_TX_DEPTH, .format = FI_CQ_FORMAT_MSG, .wait_obj = FI_WAIT_UNSPEC};
  rc = fi_cq_open(c->domain, &cq_attr, &c->txcq, NULL);
  if (rc) goto fail;
  cq_attr.size = KF_RX_DEPTH;
  rc = fi_cq_open(c->domain, &cq_attr, &c->rxcq, NULL);
  if (rc) goto fail;
  rc = fi_endpoint(c->domain, info, &c->ep, NULL);
  if (rc) goto fail;
  rc = fi_ep_bind(c->ep, &c->eq->fid, 0);
  if (rc) goto fail;
  rc = fi_ep_bind(c->ep, &c->txcq->fid, FI_TRANSMIT);
  if (rc) goto fail;
  rc = fi_ep_bind(c->ep, &c->rxcq->fid, FI_RECV);
  if (rc) goto fail;
  rc = fi_enable(c->ep);
  if (rc) goto fail;
  c->msg_max = KF_MSG_BYTES_MAX;
  if (info->ep_attr->max_msg_size > 0 && info->ep_attr->max_msg_size < c->msg_max) {
    c->msg_max = info->ep_attr->max_msg_size;
  }
  c->rxbuf = aligned_alloc(4096, KF_RX_DEPTH * c->msg_max);
  c->txbuf = aligned_alloc(4096, KF_TX_DEPTH * c->msg_max);
  if (c->rxbuf == NULL || c->txbuf == NULL) {
    rc = -FI_ENOMEM;
    goto fail;
  }
  if (info->domain_attr->mr_mode & FI_MR_LOCAL) {
    rc = fi_mr_reg(c->domain, c->rxbuf, KF_RX_DEPTH * c->msg_max, FI_RECV, 0, 1, 0, &c->rxmr,
                   NULL);
    if (rc) goto fail;
    rc = fi_mr_reg(c->domain, c->txbuf, KF_TX_DEPTH * c->msg_max, FI_SEND, 0, 2, 0, &c->txmr,
                   NULL);
    if (rc) goto fail;
    c->rxdesc = fi_mr_desc(c->rxmr);
    c->txdesc = fi_mr_desc(c->txmr);
  }
  for (int i = 0; i < KF_TX_DEPTH; i++) c->tx_free[i] = i;
  c->tx_free_count = KF_TX_DEPTH;
  for (int i = 0; i < KF_RX_DEPTH; i++) {
    rc = post_rx(c, i);
    if (rc) goto fail;
  }
  *out = c;
  return 0;
fail:
  conn_free(c);
  return rc;
}

/** Waits for FI_CONNECTED on the connection's event queue. */
static int wait_connected(struct kf_conn *c, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    if (atomic_load(&c->cancelled)) return -FI_ECANCELED;
    int slice = slice_until(deadline);
    if (slice == 0) return -FI_ETIMEDOUT;
    uint32_t event = 0;
    struct {
      struct fi_eq_cm_entry entry;
      uint8_t data[256];
    } buf;
    ssize_t n = fi_eq_sread(c->eq, &event, &buf, sizeof buf, slice, 0);
    if (n == -FI_EAGAIN || n == -FI_ETIMEDOUT) continue;
    if (n == -FI_EAVAIL) {
      struct fi_eq_err_entry err = {0};
      fi_eq_readerr(c->eq, &err, 0);
      return err.err > 0 ? -err.err : -FI_ECONNREFUSED;
    }
    if (n < 0) return (int)n;
    if (event == FI_CONNECTED) {
      c->connected = 1;
      return 0;
    }
    if (event == FI_SHUTDOWN) return -FI_ECONNREFUSED;
  }
}

EXPORT int kf_connect(const char *prov, const char *host, const char *port, int timeout_ms,
                      void **out) {
  struct fi_info *hints = make_hints(prov);
  if (hints == NULL) return -FI_ENOMEM;
  struct fi_info *info = NULL;
  int rc = fi_getinfo(KF_API_VERSION, host, port, 0, hints, &info);
  fi_freeinfo(hints);
  if (rc) return rc;
  // Keep only the first match; the rest of the list is not ours to hold.
  struct fi_info *first = fi_dupinfo(info);
  fi_freeinfo(info);
  if (first == NULL) return -FI_ENOMEM;
  struct kf_conn *c = NULL;
  rc = conn_open(first, &c);
  if (rc) return rc;
  rc = fi_connect(c->ep, c->info->dest_addr, NULL, 0);
  if (rc == 0) rc = wait_connected(c, timeout_ms);
  if (rc) {
    conn_free(c);
    return rc;
  }
  *out = c;
  return 0;
}

/**
 * Reaps send completions, waiting up to `wait_ms` (0: only what is there). Polls with a short
 * backoff instead of fi_cq_sread: the tcp provider's wait wakes on sockets turning readable,
 * not writable, so a blocked send queue slept out whole wait slices (measured 3x slower).
 */
static int reap_tx(struct kf_conn *c, int wait_ms) {
  struct fi_cq_msg_entry done[KF_TX_DEPTH];
  int64_t deadline = now_ms() + wait_ms;
  long sleep_ns = 2000;
  ssize_t n;
  for (;;) {
    n = fi_cq_read(c->txcq, done, KF_TX_DEPTH);
    if (n != -FI_EAGAIN) break;
    if (wait_ms <= 0 || now_ms() >= deadline || atomic_load(&c->cancelled)) return 0;
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
    if (sleep_ns < 200000) sleep_ns *= 2;
  }
  if (n == -FI_EAVAIL) {
    struct fi_cq_err_entry err = {0};
    fi_cq_readerr(c->txcq, &err, 0);
    if (err.op_context != NULL) {
      c->tx_free[c->tx_free_count++] = (int)((struct fi_context2 *)err.op_context - c->txctx);
    }
    atomic_store(&c->peer_closed, 1);
    return err.err > 0 ? -err.err : -FI_ECONNRESET;
  }
  if (n < 0) return (int)n;
  for (ssize_t i = 0; i < n; i++) {
    c->tx_free[c->tx_free_count++] = (int)((struct fi_context2 *)done[i].op_context - c->txctx);
  }
  return (int)n;
}

/**
 * Queues one message, `head` then `body` (both copied: a frame header needs no copy of its
 * own on the caller's side); returns once it is posted, waiting for a free send buffer.
 */
EXPORT int kf_send(void *handle, const uint8_t *head, uint64_t head_len, const uint8_t *body,
                   uint64_t body_len, int timeout_ms) {
  struct kf_conn *c = handle;
  uint64_t len = head_len + body_len;
  if (len > c->msg_max) return -FI_EMSGSIZE;
  int64_t deadline = now_ms() + timeout_ms;
  while (c->tx_free_count == 0) {
    if (atomic_load(&c->cancelled)) return -FI_ECANCELED;
    if (atomic_load(&c->peer_closed)) return -FI_ECONNRESET;
    int slice = slice_until(deadline);
    if (slice == 0) return -FI_EAGAIN;
    int rc = reap_tx(c, slice);
    if (rc < 0) return rc;
  }
  int slot = c->tx_free[--c->tx_free_count];
  uint8_t *dst = c->txbuf + (size_t)slot * c->msg_max;
  if (head_len > 0) memcpy(dst, head, head_len);
  if (body_len > 0) memcpy(dst + head_len, body, body_len);
  for (;;) {
    ssize_t rc = fi_send(c->ep, dst, len, c->txdesc, 0, &c->txctx[slot]);
    if (rc == 0) return 0;
    if (rc != -FI_EAGAIN || atomic_load(&c->cancelled) || now_ms() >= deadline) {
      c->tx_free[c->tx_free_count++] = slot;
      return rc == -FI_EAGAIN ? (atomic_load(&c->cancelled) ? -FI_ECANCELED : -FI_EAGAIN)
                              : (int)rc;
    }
    int reaped = reap_tx(c, 1);
    if (reaped < 0) {
      c->tx_free[c->tx_free_count++] = slot;
      return reaped;
    }
  }
}

/** Waits until every queued send has completed. */
EXPORT int kf_flush(void *handle, int timeout_ms) {
  struct kf_conn *c = handle;
  int64_t deadline = now_ms() + timeout_ms;
  while (c->tx_free_count < KF_TX_DEPTH) {
    if (atomic_load(&c->cancelled)) return -FI_ECANCELED;
    int slice = slice_until(deadline);
    if (slice == 0) return -FI_EAGAIN;
    int rc = reap_tx(c, slice);
    if (rc < 0) return rc;
  }
  return 0;
}

/** True once the peer has shut the connection down (seen on the event queue). */
static int saw_shutdown(struct kf_conn *c) {
  if (atomic_load(&c->peer_closed)) return 1;
  uint32_t event = 0;
  struct {
    struct fi_eq_cm_entry entry;
    uint8_t data[256];
  } buf;
  ssize_t n = fi_eq_read(c->eq, &event, &buf, sizeof buf, 0);
  if (n == -FI_EAVAIL) {
    struct fi_eq_err_entry err = {0};
    fi_eq_readerr(c->eq, &err, 0);
    atomic_store(&c->peer_closed, 1);
    return 1;
  }
  if (n >= 0 && event == FI_SHUTDOWN) {
    atomic_store(&c->peer_closed, 1);
    return 1;
  }
  return 0;
}

/**
 * Waits for one message and copies it to `out` (at least kf_msg_bytes_max() bytes); returns
 * its length. Messages that arrived before the peer shut down are all delivered first.
 */
EXPORT int64_t kf_recv(void *handle, uint8_t *out, uint64_t cap, int timeout_ms) {
  struct kf_conn *c = handle;
  if (cap < c->msg_max) return -FI_EINVAL;
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    if (atomic_load(&c->cancelled)) return -FI_ECANCELED;
    int slice = slice_until(deadline);
    struct fi_cq_msg_entry got;
    ssize_t n = slice > 0 ? fi_cq_sread(c->rxcq, &got, 1, NULL, slice)
                          : fi_cq_read(c->rxcq, &got, 1);
    if (n == 1) {
      int slot = (int)((struct fi_context2 *)got.op_context - c->rxctx);
      size_t len = got.len;
      memcpy(out, c->rxbuf + (size_t)slot * c->msg_max, len);
      int rc = post_rx(c, slot);
      if (rc) return rc;
      return (int64_t)len;
    }
    if (n == -FI_EAVAIL) {
      struct fi_cq_err_entry err = {0};
      fi_cq_readerr(c->rxcq, &err, 0);
      atomic_store(&c->peer_closed, 1);
      return err.err == FI_ECANCELED ? -FI_ECONNRESET : (err.err > 0 ? -err.err : -FI_EIO);
    }
    if (n < 0 && n != -FI_EAGAIN && n != -FI_ETIMEDOUT) return n;
    if (saw_shutdown(c)) {
      // Drain what arrived before the shutdown; only then report it.
      n = fi_cq_read(c->rxcq, &got, 1);
      if (n == 1) {
        int slot = (int)((struct fi_context2 *)got.op_context - c->rxctx);
        memcpy(out, c->rxbuf + (size_t)slot * c->msg_max, got.len);
        (void)post_rx(c, slot);
        return (int64_t)got.len;
      }
      return -FI_ECONNRESET;
    }
    if (slice == 0) return -FI_EAGAIN;
  }
}

/** Makes calls waiting on this connection return -FI_ECANCELED within one wait slice. */
EXPORT void kf_conn_cancel(void *handle) { atomic_store(&((struct kf_conn *)handle)->cancelled, 1); }

/** Shuts the connection down and frees it; no call on it may be running. */
EXPORT void kf_conn_close(void *handle) {
  struct kf_conn *c = handle;
  if (c->connected && !atomic_load(&c->peer_closed)) fi_shutdown(c->ep, 0);
  conn_free(c);
}

// ---- listeners ----

static void listener_free(struct kf_listener *l) {
  if (l->pep) fi_close(&l->pep->fid);
  if (l->eq) fi_close(&l->eq->fid);
  if (l->fabric) fi_close(&l->fabric->fid);
  if (l->info) fi_freeinfo(l->info);
  free(l);
}

EXPORT int kf_listen(const char *prov, const char *host, const char *port, void **out,
                     uint32_t *out_port) {
  struct fi_info *hints = make_hints(prov);
  if (hints == NULL) return -FI_ENOMEM;
  struct kf_listener *l = calloc(1, sizeof *l);
  if (l == NULL) {
    fi_freeinfo(hints);
    return -FI_ENOMEM;
  }
  struct fi_info *info = NULL;
  int rc = fi_getinfo(KF_API_VERSION, host, port, FI_SOURCE, hints, &info);
  fi_freeinfo(hints);
  if (rc) {
    free(l);
    return rc;
  }
  l->info = fi_dupinfo(info);
  fi_freeinfo(info);
  if (l->info == NULL) {
    free(l);
    return -FI_ENOMEM;
  }
  rc = fi_fabric(l->info->fabric_attr, &l->fabric, NULL);
  if (rc) goto fail;
  struct fi_eq_attr eq_attr = {.size = 64, .wait_obj = FI_WAIT_UNSPEC};
  rc = fi_eq_open(l->fabric, &eq_attr, &l->eq, NULL);
  if (rc) goto fail;
  rc = fi_passive_ep(l->fabric, l->info, &l->pep, NULL);
  if (rc) goto fail;
  rc = fi_pep_bind(l->pep, &l->eq->fid, 0);
  if (rc) goto fail;
  rc = fi_listen(l->pep);
  if (rc) goto fail;
  struct sockaddr_storage addr;
  size_t addrlen = sizeof addr;
  *out_port = 0;
  if (fi_getname(&l->pep->fid, &addr, &addrlen) == 0) {
    if (addr.ss_family == AF_INET) *out_port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    if (addr.ss_family == AF_INET6) *out_port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
  }
  *out = l;
  return 0;
fail:
  listener_free(l);
  return rc;
}

/** Waits for one connection request and accepts it (-FI_EAGAIN when none came in time). */
EXPORT int kf_accept(void *handle, int timeout_ms, void **out) {
  struct kf_listener *l = handle;
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    if (atomic_load(&l->cancelled)) return -FI_ECANCELED;
    int slice = slice_until(deadline);
    if (slice == 0) return -FI_EAGAIN;
    uint32_t event = 0;
    struct {
      struct fi_eq_cm_entry entry;
      uint8_t data[256];
    } buf;
    ssize_t n = fi_eq_sread(l->eq, &event, &buf, sizeof buf, slice, 0);
    if (n == -FI_EAGAIN || n == -FI_ETIMEDOUT) continue;
    if (n == -FI_EAVAIL) {
      struct fi_eq_err_entry err = {0};
      fi_eq_readerr(l->eq, &err, 0);
      continue;  // a request that failed on its way in is not the listener's failure
    }
    if (n < 0) return (int)n;
    if (event != FI_CONNREQ) {
      if (buf.entry.info) fi_freeinfo(buf.entry.info);
      continue;
    }
    // The request's handle outlives its info (the provider frees it on accept or reject).
    fid_t request = buf.entry.info->handle;
    struct kf_conn *c = NULL;
    int rc = conn_open(buf.entry.info, &c);
    if (rc) {
      fi_reject(l->pep, request, NULL, 0);  // the dialer hears "refused" at once
      continue;
    }
    rc = fi_accept(c->ep, NULL, 0);
    if (rc == 0) rc = wait_connected(c, 10000);
    if (rc) {
      conn_free(c);
      continue;
    }
    *out = c;
    return 0;
  }
}

EXPORT void kf_listener_cancel(void *handle) {
  atomic_store(&((struct kf_listener *)handle)->cancelled, 1);
}

/** Stops listening and frees the listener; no call on it may be running. */
EXPORT void kf_listener_close(void *handle) { listener_free(handle); }
