// Kiseki disk I/O shim: one io_uring per device file, driven through liburing. TypeScript
// owns validation, buffers and ordering; this file turns one call carrying a packed batch
// descriptor into a sliding window of reads and writes on the ring, waits for all of them,
// and reports bytes or -errno per op, so a batch costs a single FFI crossing.
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
#define KISEKI_URING_ABI_VERSION 1

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

// kiseki_uring_submit() results besides 0 and -EINVAL.
// The ring failed; no request is in flight; unfinished ops hold -errno or -ECANCELED.
#define KISEKI_URING_EBROKEN (-1000)
// The ring failed with requests in flight: the kernel may still write their buffers.
#define KISEKI_URING_EWEDGED (-1001)

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

int kiseki_uring_depth_max(void) { return KISEKI_URING_DEPTH_MAX; }
int kiseki_uring_batch_ops_max(void) { return KISEKI_URING_BATCH_OPS_MAX; }

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

// One request through the ring and its result: for open-time tests and fsync. Sets
// *ring_failed when the ring itself (not the request) failed.
static int run_one(struct io_uring *ring, int opcode, int fd, void *buf, unsigned len,
                   uint64_t offset, int *ring_failed) {
  *ring_failed = 0;
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  if (sqe == NULL) return -EBUSY;
  if (opcode == IORING_OP_READ) {
    io_uring_prep_read(sqe, fd, buf, len, offset);
  } else if (opcode == IORING_OP_WRITE) {
    io_uring_prep_write(sqe, fd, buf, len, offset);
  } else {
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
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

// Runs `count` ops (descriptor layout above) and waits for all of them. results[i] receives
// the bytes done (the op's length on success) or -errno. Short transfers are continued; a
// read that meets end of file fails with -ENODATA. Returns 0 when every op ran (check
// results), -EINVAL for a bad batch (nothing done), KISEKI_URING_EBROKEN or
// KISEKI_URING_EWEDGED when the ring itself failed (the ring is unusable afterwards).
// Never called concurrently on one ring: TypeScript queues calls per disk.
int kiseki_uring_submit(struct kiseki_ring *kr, const uint64_t *desc, uint32_t count,
                        int32_t *results) {
  if (kr == NULL || desc == NULL || results == NULL || count > KISEKI_URING_BATCH_OPS_MAX) {
    return -EINVAL;
  }
  if (kr->broken) return KISEKI_URING_EBROKEN;
  int bad = check_batch(kr, desc, count);
  if (bad != 0) return bad;

  struct io_uring *ring = &kr->ring;
  // Ops whose short transfer or retryable error needs another request. Each pending op was
  // in flight, and in-flight plus pending never exceeds depth.
  uint32_t pending[KISEKI_URING_DEPTH_MAX];
  unsigned npending = 0;
  unsigned inflight = 0;
  unsigned retries = 0;
  uint32_t next = 0;
  for (uint32_t i = 0; i < count; i++) results[i] = 0;

  while (next < count || npending > 0 || inflight > 0) {
    while (inflight < kr->depth && (npending > 0 || next < count)) {
      uint32_t i = npending > 0 ? pending[npending - 1] : next;
      const uint64_t *op = &desc[(size_t)i * KISEKI_URING_OP_WORDS];
      struct io_uring_sqe *sqe = NULL;
      if (op[KISEKI_URING_OP_LENGTH] > 0) {
        sqe = io_uring_get_sqe(ring);
        // Cannot happen with inflight < depth (the SQ has depth entries); fail safe anyway.
        if (sqe == NULL) break;
      }
      if (npending > 0) npending--;
      else next++;
      if (sqe == NULL) continue; // zero-length op: done without the kernel
      prep_op(sqe, kr->fd, op, (uint32_t)results[i], i);
      inflight++;
    }
    if (inflight == 0) break;

    int ret = submit_wait(ring);
    if (ret == -EAGAIN || ret == -EBUSY) {
      // Kernel short of memory or completions backed up: reap what is there, then retry.
      if (io_uring_cq_ready(ring) == 0) {
        if (++retries > KISEKI_URING_RETRIES_MAX) ret = -EIO;
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
      int drained = drain_after_failure(ring, inflight, results, count, err);
      // Entries the kernel never consumed stay in the SQ; the ring is never entered again.
      for (uint32_t i = 0; i < count; i++) {
        const uint64_t *op = &desc[(size_t)i * KISEKI_URING_OP_WORDS];
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
      inflight--;
      uint32_t i = (uint32_t)cqe->user_data;
      int res = cqe->res;
      const uint64_t *op = &desc[(size_t)i * KISEKI_URING_OP_WORDS];
      if (res == -EAGAIN || res == -EINTR) {
        if (++retries <= KISEKI_URING_RETRIES_MAX) {
          pending[npending++] = i;
          continue;
        }
      }
      if (res < 0) {
        results[i] = res;
      } else if (res == 0) {
        results[i] = op[KISEKI_URING_OP_KIND] == KISEKI_URING_READ ? -ENODATA : -EIO;
      } else {
        results[i] += res;
        if ((uint64_t)results[i] < op[KISEKI_URING_OP_LENGTH]) pending[npending++] = i;
      }
    }
    io_uring_cq_advance(ring, seen);
  }
  // Safety net: an op the loop could not finish is reported failed, never as success.
  for (uint32_t i = 0; i < count; i++) {
    const uint64_t *op = &desc[(size_t)i * KISEKI_URING_OP_WORDS];
    if (results[i] >= 0 && (uint64_t)results[i] < op[KISEKI_URING_OP_LENGTH]) results[i] = -EIO;
  }
  return 0;
}

// fdatasync through the ring (IORING_OP_FSYNC with IORING_FSYNC_DATASYNC). 0 or -errno;
// KISEKI_URING_EBROKEN when the ring had already failed.
int kiseki_uring_fsync(struct kiseki_ring *kr) {
  if (kr == NULL) return -EINVAL;
  if (kr->broken) return KISEKI_URING_EBROKEN;
  int ring_failed = 0;
  int ret = run_one(&kr->ring, IORING_OP_FSYNC, kr->fd, NULL, 0, 0, &ring_failed);
  if (ring_failed) {
    kr->broken = 1;
    return KISEKI_URING_EBROKEN;
  }
  return ret < 0 ? ret : 0;
}

// Tears down the ring and closes the file. 0 or -errno from close(2) (the ring is gone
// either way). Only called once no submit or fsync is running.
int kiseki_uring_close(struct kiseki_ring *kr) {
  if (kr == NULL) return -EINVAL;
  io_uring_queue_exit(&kr->ring);
  int ret = close(kr->fd) < 0 ? -errno : 0;
  free(kr);
  return ret;
}
