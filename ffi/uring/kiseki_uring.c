// Kiseki disk I/O shim: one io_uring per device file, driven through liburing. TypeScript
// owns validation, buffers and ordering; this file turns one call carrying a plan of packed
// batch descriptors (one per ring) into sliding windows of reads and writes on all those
// rings at once, each optionally followed by fdatasync, waits for all of them, and reports
// bytes or -errno per op, so a round over every device costs a single FFI crossing.
//
// Every entry point re-checks its arguments and every liburing return: a bad pointer here
// is a crash of the whole process, and a request left in flight is the kernel writing into
// memory the garbage collector may already have reused.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// Bumped whenever a signature or the descriptor layout changes; bindings.ts checks it.
#define KISEKI_URING_ABI_VERSION 3

// Descriptor: KISEKI_URING_OP_WORDS uint64 words per op.
#define KISEKI_URING_OP_WORDS 4
#define KISEKI_URING_OP_KIND 0    // KISEKI_URING_READ or KISEKI_URING_WRITE
#define KISEKI_URING_OP_OFFSET 1  // byte offset on the device
#define KISEKI_URING_OP_ADDRESS 2 // buffer address
#define KISEKI_URING_OP_LENGTH 3  // bytes
#define KISEKI_URING_READ 0
#define KISEKI_URING_WRITE 1

// Mirrors DISK_BATCH_OPS_MAX and DISK_OP_BYTES_MAX in mod/disk/device.ts.
#define KISEKI_URING_BATCH_OPS_MAX 1024
#define KISEKI_URING_OP_BYTES_MAX (1u << 30)
// Submission queue entries per ring.
#define KISEKI_URING_DEPTH_MAX 4096
// O_DIRECT transfers: offsets, lengths and addresses are multiples of this.
#define KISEKI_URING_ALIGN_BYTES 4096
// Completions of -EAGAIN/-EINTR re-queued in one call before the op is failed.
#define KISEKI_URING_RETRIES_MAX 1024

// kiseki_uring_open() flags.
#define KISEKI_URING_WANT_DIRECT 1

// kiseki_uring_open() info slots (int32).
#define KISEKI_URING_INFO_ERRNO 0        // errno of a failed open, else 0
#define KISEKI_URING_INFO_DIRECT 1       // 1 when the fd is O_DIRECT
#define KISEKI_URING_INFO_DIRECT_ERRNO 2 // errno that ruled O_DIRECT out, else 0
#define KISEKI_URING_INFO_STAGE 3        // where open failed or O_DIRECT was ruled out
#define KISEKI_URING_INFO_SLOTS 4
#define KISEKI_URING_STAGE_OPEN 1        // open(2)
#define KISEKI_URING_STAGE_QUEUE_INIT 2  // io_uring_queue_init
#define KISEKI_URING_STAGE_TEST_READ 3   // O_DIRECT test read of block 0
#define KISEKI_URING_STAGE_TEST_WRITE 4  // O_DIRECT test write of block 0 (same bytes back)
#define KISEKI_URING_STAGE_ALLOC 5       // test buffer allocation

// Batch results (kiseki_uring_run() status) besides 0 and -EINVAL.
// The ring failed; no request is in flight; unfinished ops hold -errno or -ECANCELED.
#define KISEKI_URING_EBROKEN (-1000)
// The ring failed with requests in flight: the kernel may still write their buffers.
#define KISEKI_URING_EWEDGED (-1001)
// kiseki_uring_run() sync status of an entry whose sync was not attempted.
#define KISEKI_URING_ENOTRUN (-1002)

// kiseki_uring_run() plan: KISEKI_URING_PLAN_WORDS uint64 words per entry (one ring each).
#define KISEKI_URING_PLAN_WORDS 5
#define KISEKI_URING_PLAN_RING 0    // struct kiseki_ring *
#define KISEKI_URING_PLAN_DESC 1    // descriptor address (ops as above)
#define KISEKI_URING_PLAN_COUNT 2   // ops in the descriptor
#define KISEKI_URING_PLAN_RESULTS 3 // int32 results address, one per op
#define KISEKI_URING_PLAN_FLAGS 4   // KISEKI_URING_PLAN_SYNC
#define KISEKI_URING_PLAN_SYNC 1    // fdatasync after the ops
// Rings one kiseki_uring_run() call may drive.
#define KISEKI_URING_PLAN_ENTRIES_MAX 256

struct kiseki_ring {
  struct io_uring ring;
  int fd;
  unsigned depth;
  int direct;
  int broken;
};

int kiseki_uring_abi_version(void) { return KISEKI_URING_ABI_VERSION; }

// The address of a caller's buffer, for descriptors. Deno.UnsafePointer.of() needs unscoped
// --allow-ffi; a call into this already-opened library does not.
uint64_t kiseki_uring_address_of(const void *p) { return (uint64_t)(uintptr_t)p; }
// The address of a ring, for kiseki_uring_run() plans.
uint64_t kiseki_uring_ring_address(const struct kiseki_ring *kr) { return (uint64_t)(uintptr_t)kr; }

int kiseki_uring_depth_max(void) { return KISEKI_URING_DEPTH_MAX; }
int kiseki_uring_batch_ops_max(void) { return KISEKI_URING_BATCH_OPS_MAX; }
int kiseki_uring_plan_entries_max(void) { return KISEKI_URING_PLAN_ENTRIES_MAX; }

// Can this process use io_uring at all, with the opcodes we need? 0 or -errno (ENOSYS on old
// kernels, EPERM when kernel.io_uring_disabled or seccomp forbid it, EOPNOTSUPP when an
// opcode is missing).
int kiseki_uring_probe(void) {
  struct io_uring ring;
  int ret = io_uring_queue_init(2, &ring, 0);
  if (ret < 0) return ret;
  struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
  if (probe == NULL) {
    io_uring_queue_exit(&ring);
    return -EOPNOTSUPP;
  }
  int ok = io_uring_opcode_supported(probe, IORING_OP_READ) &&
           io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
           io_uring_opcode_supported(probe, IORING_OP_FSYNC);
  io_uring_free_probe(probe);
  io_uring_queue_exit(&ring);
  return ok ? 0 : -EOPNOTSUPP;
}

// Submits what is queued and waits for one completion, retrying interruptions.
static int submit_wait(struct io_uring *ring) {
  for (;;) {
    int ret = io_uring_submit_and_wait(ring, 1);
    if (ret != -EINTR) return ret;
  }
}

// user_data of single requests; batch ops carry their index, which is always smaller.
#define KISEKI_URING_SINGLE UINT64_MAX

// One read or write through the ring and its result: for the open-time O_DIRECT test. Sets
// *ring_failed when the ring itself (not the request) failed.
static int run_one(struct io_uring *ring, int opcode, int fd, void *buf, unsigned len,
                   uint64_t offset, int *ring_failed) {
  *ring_failed = 0;
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  if (sqe == NULL) return -EBUSY;
  if (opcode == IORING_OP_READ) {
    io_uring_prep_read(sqe, fd, buf, len, offset);
  } else {
    io_uring_prep_write(sqe, fd, buf, len, offset);
  }
  sqe->user_data = KISEKI_URING_SINGLE;
  int ret = submit_wait(ring);
  if (ret < 0) {
    *ring_failed = 1;
    return ret;
  }
  struct io_uring_cqe *cqe = NULL;
  for (;;) {
    ret = io_uring_wait_cqe(ring, &cqe);
    if (ret != -EINTR) break;
  }
  if (ret < 0) {
    *ring_failed = 1;
    return ret;
  }
  int res = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  return res;
}

// Reads block 0 with O_DIRECT and writes the same bytes back: proves both directions work
// on this file system without changing the device. 0 or -errno; *stage says which failed.
static int test_direct(struct io_uring *ring, int fd, int *stage) {
  void *block = NULL;
  if (posix_memalign(&block, KISEKI_URING_ALIGN_BYTES, KISEKI_URING_ALIGN_BYTES) != 0) {
    *stage = KISEKI_URING_STAGE_ALLOC;
    return -ENOMEM;
  }
  int ring_failed = 0;
  *stage = KISEKI_URING_STAGE_TEST_READ;
  int ret = run_one(ring, IORING_OP_READ, fd, block, KISEKI_URING_ALIGN_BYTES, 0, &ring_failed);
  if (ret >= 0 && ret != KISEKI_URING_ALIGN_BYTES) ret = -ENODATA;
  if (ret >= 0) {
    *stage = KISEKI_URING_STAGE_TEST_WRITE;
    ret = run_one(ring, IORING_OP_WRITE, fd, block, KISEKI_URING_ALIGN_BYTES, 0, &ring_failed);
    if (ret >= 0 && ret != KISEKI_URING_ALIGN_BYTES) ret = -EIO;
  }
  // A request the ring lost may still target the block: leak it rather than free it.
  if (!ring_failed) free(block);
  if (ring_failed && ret == -EINVAL) ret = -EIO; // not the file system refusing O_DIRECT
  return ret < 0 ? ret : 0;
}

static void fail_info(int32_t *info, int err, int stage) {
  info[KISEKI_URING_INFO_ERRNO] = err;
  info[KISEKI_URING_INFO_STAGE] = stage;
}

// Opens an existing device file (TypeScript creates, sizes and locks it first, under Deno's
// permission checks) and a ring of `depth` entries. With KISEKI_URING_WANT_DIRECT it tries
// O_DIRECT and keeps it only if a test read and write through the ring succeed; EINVAL there
// means the file system refuses direct I/O, so it reopens buffered and says why in `info`.
// Returns NULL with info[ERRNO] set on failure.
struct kiseki_ring *kiseki_uring_open(const char *path, uint32_t flags, uint32_t depth,
                                      int32_t *info) {
  if (info == NULL) return NULL;
  memset(info, 0, sizeof(int32_t) * KISEKI_URING_INFO_SLOTS);
  if (path == NULL || path[0] == '\0' || depth < 1 || depth > KISEKI_URING_DEPTH_MAX ||
      (flags & ~(uint32_t)KISEKI_URING_WANT_DIRECT) != 0) {
    fail_info(info, EINVAL, KISEKI_URING_STAGE_OPEN);
    return NULL;
  }
  struct kiseki_ring *kr = calloc(1, sizeof(*kr));
  if (kr == NULL) {
    fail_info(info, ENOMEM, KISEKI_URING_STAGE_ALLOC);
    return NULL;
  }
  kr->depth = depth;
  int ret = io_uring_queue_init(depth, &kr->ring, 0);
  if (ret < 0) {
    fail_info(info, -ret, KISEKI_URING_STAGE_QUEUE_INIT);
    free(kr);
    return NULL;
  }
  int fd = -1;
  if (flags & KISEKI_URING_WANT_DIRECT) {
    fd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
    if (fd < 0 && errno != EINVAL) {
      fail_info(info, errno, KISEKI_URING_STAGE_OPEN);
      goto fail_ring;
    }
    if (fd < 0) {
      info[KISEKI_URING_INFO_DIRECT_ERRNO] = EINVAL;
      info[KISEKI_URING_INFO_STAGE] = KISEKI_URING_STAGE_OPEN;
    } else {
      int stage = 0;
      ret = test_direct(&kr->ring, fd, &stage);
      if (ret == 0) {
        info[KISEKI_URING_INFO_DIRECT] = 1;
      } else if (ret == -EINVAL || ret == -EOPNOTSUPP) {
        info[KISEKI_URING_INFO_DIRECT_ERRNO] = -ret;
        info[KISEKI_URING_INFO_STAGE] = stage;
        close(fd);
        fd = -1;
      } else {
        fail_info(info, -ret, stage);
        close(fd);
        goto fail_ring;
      }
    }
  }
  if (fd < 0) {
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      fail_info(info, errno, KISEKI_URING_STAGE_OPEN);
      goto fail_ring;
    }
  }
  kr->fd = fd;
  kr->direct = info[KISEKI_URING_INFO_DIRECT];
  return kr;

fail_ring:
  io_uring_queue_exit(&kr->ring);
  free(kr);
  return NULL;
}

static int check_batch(const struct kiseki_ring *kr, const uint64_t *desc, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t *op = &desc[(size_t)i * KISEKI_URING_OP_WORDS];
    uint64_t kind = op[KISEKI_URING_OP_KIND];
    uint64_t offset = op[KISEKI_URING_OP_OFFSET];
    uint64_t address = op[KISEKI_URING_OP_ADDRESS];
    uint64_t length = op[KISEKI_URING_OP_LENGTH];
    if (kind != KISEKI_URING_READ && kind != KISEKI_URING_WRITE) return -EINVAL;
    if (length > KISEKI_URING_OP_BYTES_MAX) return -EINVAL;
    if (length > 0 && address == 0) return -EINVAL;
    if (offset > (uint64_t)INT64_MAX - length) return -EINVAL;
    if (kr->direct && ((offset | address | length) % KISEKI_URING_ALIGN_BYTES) != 0) {
      return -EINVAL;
    }
  }
  return 0;
}

static void prep_op(struct io_uring_sqe *sqe, int fd, const uint64_t *op, uint32_t done,
                    uint32_t index) {
  uint64_t offset = op[KISEKI_URING_OP_OFFSET] + done;
  char *address = (char *)(uintptr_t)op[KISEKI_URING_OP_ADDRESS] + done;
  unsigned remaining = (unsigned)(op[KISEKI_URING_OP_LENGTH] - done);
  if (op[KISEKI_URING_OP_KIND] == KISEKI_URING_READ) {
    io_uring_prep_read(sqe, fd, address, remaining, offset);
  } else {
    io_uring_prep_write(sqe, fd, address, remaining, offset);
  }
  sqe->user_data = index;
}

// Waits for the `inflight` requests the kernel has consumed, recording their results, after
// the ring failed. 0 when none is left in flight; KISEKI_URING_EWEDGED when waiting failed.
static int drain_after_failure(struct io_uring *ring, unsigned inflight, int32_t *results,
                               uint32_t count, int err) {
  unsigned unconsumed = io_uring_sq_ready(ring);
  unsigned consumed = inflight > unconsumed ? inflight - unconsumed : 0;
  while (consumed > 0) {
    struct io_uring_cqe *cqe = NULL;
    int ret = io_uring_wait_cqe(ring, &cqe);
    if (ret == -EINTR) continue;
    if (ret < 0) return KISEKI_URING_EWEDGED;
    uint64_t i = cqe->user_data;
    if (i < count) {
      results[i] = cqe->res < 0 ? cqe->res : -err;
      consumed--;
    }
    io_uring_cqe_seen(ring, cqe);
  }
  return 0;
}

// One batch of ops on one ring while it runs: a sliding window of requests, with the ops
// whose short transfer or retryable error needs another request kept in `pending`. Each
// pending op was in flight, and in-flight plus pending never exceeds the ring's depth.
struct batch {
  struct kiseki_ring *kr;
  const uint64_t *desc;
  uint32_t count;
  int32_t *results;
  uint32_t *pending;
  unsigned npending;
  unsigned inflight;
  unsigned retries;
  uint32_t next;
};

// Checks a batch and readies its state; 0, -EINVAL or KISEKI_URING_EBROKEN.
static int batch_init(struct batch *b, struct kiseki_ring *kr, const uint64_t *desc,
                      uint32_t count, int32_t *results, uint32_t *pending) {
  if (kr == NULL || (desc == NULL && count > 0) || (results == NULL && count > 0) ||
      count > KISEKI_URING_BATCH_OPS_MAX) {
    return -EINVAL;
  }
  if (kr->broken) return KISEKI_URING_EBROKEN;
  int bad = check_batch(kr, desc, count);
  if (bad != 0) return bad;
  b->kr = kr;
  b->desc = desc;
  b->count = count;
  b->results = results;
  b->pending = pending;
  b->npending = 0;
  b->inflight = 0;
  b->retries = 0;
  b->next = 0;
  for (uint32_t i = 0; i < count; i++) results[i] = 0;
  return 0;
}

// Queues requests until the window is full or nothing is left to queue.
static void batch_fill(struct batch *b) {
  struct io_uring *ring = &b->kr->ring;
  while (b->inflight < b->kr->depth && (b->npending > 0 || b->next < b->count)) {
    uint32_t i = b->npending > 0 ? b->pending[b->npending - 1] : b->next;
    const uint64_t *op = &b->desc[(size_t)i * KISEKI_URING_OP_WORDS];
    struct io_uring_sqe *sqe = NULL;
    if (op[KISEKI_URING_OP_LENGTH] > 0) {
      sqe = io_uring_get_sqe(ring);
      // Cannot happen with inflight < depth (the SQ has depth entries); fail safe anyway.
      if (sqe == NULL) break;
    }
    if (b->npending > 0) b->npending--;
    else b->next++;
    if (sqe == NULL) continue; // zero-length op: done without the kernel
    prep_op(sqe, b->kr->fd, op, (uint32_t)b->results[i], i);
    b->inflight++;
  }
}

// Runs the batch to its end (requests already queued by batch_fill() included) and waits
// for all of them. results[i] receives the bytes done (the op's length on success) or
// -errno. Short transfers are continued; a read that meets end of file fails with -ENODATA.
// Returns 0 when every op ran (check results), KISEKI_URING_EBROKEN or KISEKI_URING_EWEDGED
// when the ring itself failed (the ring is unusable afterwards).
static int batch_run(struct batch *b) {
  struct kiseki_ring *kr = b->kr;
  struct io_uring *ring = &kr->ring;
  const uint32_t count = b->count;
  int32_t *results = b->results;
  while (b->next < count || b->npending > 0 || b->inflight > 0) {
    batch_fill(b);
    if (b->inflight == 0) break;

    int ret = submit_wait(ring);
    if (ret == -EAGAIN || ret == -EBUSY) {
      // Kernel short of memory or completions backed up: reap what is there, then retry.
      if (io_uring_cq_ready(ring) == 0) {
        if (++b->retries > KISEKI_URING_RETRIES_MAX) ret = -EIO;
        else {
          sched_yield();
          continue;
        }
      } else {
        ret = 0;
      }
    }
    if (ret < 0) {
      int err = -ret;
      kr->broken = 1;
      int drained = drain_after_failure(ring, b->inflight, results, count, err);
      // Entries the kernel never consumed stay in the SQ; the ring is never entered again.
      for (uint32_t i = 0; i < count; i++) {
        const uint64_t *op = &b->desc[(size_t)i * KISEKI_URING_OP_WORDS];
        if (results[i] >= 0 && (uint64_t)results[i] < op[KISEKI_URING_OP_LENGTH]) {
          results[i] = -ECANCELED;
        }
      }
      return drained != 0 ? drained : KISEKI_URING_EBROKEN;
    }

    unsigned head;
    unsigned seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(ring, head, cqe) {
      seen++;
      if (cqe->user_data >= count) continue; // not ours (cannot happen; never trust it)
      b->inflight--;
      uint32_t i = (uint32_t)cqe->user_data;
      int res = cqe->res;
      const uint64_t *op = &b->desc[(size_t)i * KISEKI_URING_OP_WORDS];
      if (res == -EAGAIN || res == -EINTR) {
        if (++b->retries <= KISEKI_URING_RETRIES_MAX) {
          b->pending[b->npending++] = i;
          continue;
        }
      }
      if (res < 0) {
        results[i] = res;
      } else if (res == 0) {
        results[i] = op[KISEKI_URING_OP_KIND] == KISEKI_URING_READ ? -ENODATA : -EIO;
      } else {
        results[i] += res;
        if ((uint64_t)results[i] < op[KISEKI_URING_OP_LENGTH]) b->pending[b->npending++] = i;
      }
    }
    io_uring_cq_advance(ring, seen);
  }
  // Safety net: an op the loop could not finish is reported failed, never as success.
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t *op = &b->desc[(size_t)i * KISEKI_URING_OP_WORDS];
    if (results[i] >= 0 && (uint64_t)results[i] < op[KISEKI_URING_OP_LENGTH]) results[i] = -EIO;
  }
  return 0;
}

// Queues an fdatasync (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC) and submits it without
// waiting. 0, or -errno from the submit (the ring is then marked broken).
static int fsync_start(struct kiseki_ring *kr) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&kr->ring);
  if (sqe == NULL) return -EBUSY;
  io_uring_prep_fsync(sqe, kr->fd, IORING_FSYNC_DATASYNC);
  sqe->user_data = KISEKI_URING_SINGLE;
  for (;;) {
    int ret = io_uring_submit(&kr->ring);
    if (ret == -EINTR) continue;
    if (ret < 0) {
      kr->broken = 1;
      return ret;
    }
    return 0;
  }
}

// Waits for the fdatasync fsync_start() queued: 0 or -errno of the sync, or
// KISEKI_URING_EBROKEN when waiting failed (the ring is marked broken).
static int fsync_finish(struct kiseki_ring *kr) {
  for (;;) {
    struct io_uring_cqe *cqe = NULL;
    int ret = io_uring_wait_cqe(&kr->ring, &cqe);
    if (ret == -EINTR) continue;
    if (ret < 0) {
      kr->broken = 1;
      return KISEKI_URING_EBROKEN;
    }
    uint64_t tag = cqe->user_data;
    int res = cqe->res;
    io_uring_cqe_seen(&kr->ring, cqe);
    if (tag != KISEKI_URING_SINGLE) continue; // not ours (cannot happen; never trust it)
    return res < 0 ? res : 0;
  }
}

// Runs the batches of several rings in one call, all rings working at once: every ring's
// first window is queued and submitted before any is waited on, and a ring's fdatasync (plan
// flag KISEKI_URING_PLAN_SYNC, issued after all of its ops completed, whatever their
// results) is submitted as soon as its ops are done, while the other rings are still being
// waited on. The plan holds KISEKI_URING_PLAN_WORDS uint64 words per entry (ring, descriptor
// address, op count, results address, flags); status receives two int32 per entry: the
// batch's return (batch_run(), or -EINVAL / KISEKI_URING_EBROKEN from batch_init()), and the
// sync's: 0 or -errno of the fdatasync, KISEKI_URING_EBROKEN when the ring failed under it,
// 0 when not asked for, KISEKI_URING_ENOTRUN when the batch left the ring broken.
// Returns 0, or -EINVAL for a malformed plan (nothing done). A ring appears at most once.
int kiseki_uring_run(const uint64_t *plan, uint32_t entries, int32_t *status) {
  if (plan == NULL || status == NULL || entries == 0 || entries > KISEKI_URING_PLAN_ENTRIES_MAX) {
    return -EINVAL;
  }
  size_t depths = 0;
  for (uint32_t e = 0; e < entries; e++) {
    const uint64_t *p = &plan[(size_t)e * KISEKI_URING_PLAN_WORDS];
    if (p[KISEKI_URING_PLAN_RING] == 0) return -EINVAL;
    depths += ((const struct kiseki_ring *)(uintptr_t)p[KISEKI_URING_PLAN_RING])->depth;
    for (uint32_t f = 0; f < e; f++) {
      if (plan[(size_t)f * KISEKI_URING_PLAN_WORDS + KISEKI_URING_PLAN_RING] ==
          p[KISEKI_URING_PLAN_RING]) {
        return -EINVAL;
      }
    }
  }
  struct batch *batches = calloc(entries, sizeof(struct batch));
  uint32_t *pending = malloc(depths * sizeof(uint32_t));
  if (batches == NULL || pending == NULL) {
    free(batches);
    free(pending);
    return -ENOMEM;
  }
  // 0: nothing to wait for; 1: ops queued; 2: fsync queued.
  uint8_t *state = calloc(entries, 1);
  if (state == NULL) {
    free(batches);
    free(pending);
    return -ENOMEM;
  }
  size_t window = 0;
  for (uint32_t e = 0; e < entries; e++) {
    const uint64_t *p = &plan[(size_t)e * KISEKI_URING_PLAN_WORDS];
    struct kiseki_ring *kr = (struct kiseki_ring *)(uintptr_t)p[KISEKI_URING_PLAN_RING];
    uint32_t *own = &pending[window];
    window += kr->depth;
    int32_t *st = &status[(size_t)e * 2];
    st[0] = 0;
    st[1] = 0;
    uint64_t count = p[KISEKI_URING_PLAN_COUNT];
    int rc = count > KISEKI_URING_BATCH_OPS_MAX
               ? -EINVAL
               : batch_init(&batches[e], kr, (const uint64_t *)(uintptr_t)p[KISEKI_URING_PLAN_DESC],
                            (uint32_t)count, (int32_t *)(uintptr_t)p[KISEKI_URING_PLAN_RESULTS],
                            own);
    if (rc != 0) {
      st[0] = rc;
      st[1] = KISEKI_URING_ENOTRUN;
      continue;
    }
    if (count > 0) {
      batch_fill(&batches[e]);
      // Errors surface in batch_run(), which submits again before it waits.
      while (io_uring_submit(&kr->ring) == -EINTR) {
      }
      state[e] = 1;
    } else if (p[KISEKI_URING_PLAN_FLAGS] & KISEKI_URING_PLAN_SYNC) {
      int sr = fsync_start(kr);
      if (sr < 0) st[1] = KISEKI_URING_EBROKEN;
      else state[e] = 2;
    }
  }
  for (uint32_t e = 0; e < entries; e++) {
    if (state[e] != 1) continue;
    const uint64_t *p = &plan[(size_t)e * KISEKI_URING_PLAN_WORDS];
    int32_t *st = &status[(size_t)e * 2];
    st[0] = batch_run(&batches[e]);
    state[e] = 0;
    if (!(p[KISEKI_URING_PLAN_FLAGS] & KISEKI_URING_PLAN_SYNC)) continue;
    if (st[0] != 0) {
      st[1] = KISEKI_URING_ENOTRUN;
      continue;
    }
    if (fsync_start(batches[e].kr) < 0) st[1] = KISEKI_URING_EBROKEN;
    else state[e] = 2;
  }
  for (uint32_t e = 0; e < entries; e++) {
    if (state[e] != 2) continue;
    const uint64_t *p = &plan[(size_t)e * KISEKI_URING_PLAN_WORDS];
    struct kiseki_ring *kr = (struct kiseki_ring *)(uintptr_t)p[KISEKI_URING_PLAN_RING];
    status[(size_t)e * 2 + 1] = fsync_finish(kr);
  }
  free(state);
  free(pending);
  free(batches);
  return 0;
}

// Tears down the ring and closes the file. 0 or -errno from close(2) (the ring is gone
// either way). Only called once no kiseki_uring_run() holds the ring.
int kiseki_uring_close(struct kiseki_ring *kr) {
  if (kr == NULL) return -EINVAL;
  io_uring_queue_exit(&kr->ring);
  int ret = close(kr->fd) < 0 ? -errno : 0;
  free(kr);
  return ret;
}
