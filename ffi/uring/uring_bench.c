// Native ceiling for tests/bench/disk_bench.ts when fio is not installed: sequential reads or
// writes of a file in fixed-size blocks through io_uring, keeping `depth` requests in flight
// (O_DIRECT when asked and allowed), with a final fdatasync after writes. Prints one JSON
// line: {"mb_s": ..., "direct": 0|1, "seconds": ...}.
//
//   uring_bench <path> <read|write> <total_bytes> <block_bytes> <depth> <direct 0|1>

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ALIGN_BYTES 4096
#define DEPTH_MAX 256

static int die(const char *what, int err) {
  fprintf(stderr, "uring_bench: %s: %s\n", what, strerror(err));
  return 1;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: uring_bench <path> <read|write> <total> <block> <depth> <direct>\n");
    return 2;
  }
  const char *path = argv[1];
  int writing = strcmp(argv[2], "write") == 0;
  uint64_t total = strtoull(argv[3], NULL, 10);
  unsigned block = (unsigned)strtoul(argv[4], NULL, 10);
  unsigned depth = (unsigned)strtoul(argv[5], NULL, 10);
  int direct = atoi(argv[6]);
  if (block == 0 || block % ALIGN_BYTES != 0 || total % block != 0 || depth < 1 ||
      depth > DEPTH_MAX) {
    fprintf(stderr, "uring_bench: bad sizes\n");
    return 2;
  }
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600);
  if (fd < 0 && direct && errno == EINVAL) {
    direct = 0;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  }
  if (fd < 0) return die("open", errno);
  if (ftruncate(fd, (off_t)total) < 0) return die("ftruncate", errno);
  void *buffers[DEPTH_MAX];
  for (unsigned i = 0; i < depth; i++) {
    if (posix_memalign(&buffers[i], ALIGN_BYTES, block) != 0) return die("alloc", ENOMEM);
    memset(buffers[i], (int)(0x5a + i), block);
  }
  struct io_uring ring;
  int ret = io_uring_queue_init(depth, &ring, 0);
  if (ret < 0) return die("io_uring_queue_init", -ret);

  uint64_t blocks = total / block;
  uint64_t next = 0;
  uint64_t completed = 0;
  unsigned inflight = 0;
  unsigned free_slots[DEPTH_MAX];
  unsigned nfree = depth;
  for (unsigned i = 0; i < depth; i++) free_slots[i] = i;
  double start = now_seconds();
  while (completed < blocks) {
    while (inflight < depth && next < blocks) {
      struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
      if (sqe == NULL) break;
      unsigned slot = free_slots[--nfree];
      if (writing) io_uring_prep_write(sqe, fd, buffers[slot], block, next * block);
      else io_uring_prep_read(sqe, fd, buffers[slot], block, next * block);
      sqe->user_data = slot;
      next++;
      inflight++;
    }
    ret = io_uring_submit_and_wait(&ring, 1);
    if (ret == -EINTR) continue;
    if (ret < 0) return die("io_uring_submit_and_wait", -ret);
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&ring, head, cqe) {
      seen++;
      if (cqe->res != (int)block) {
        return die(writing ? "write" : "read", cqe->res < 0 ? -cqe->res : EIO);
      }
      free_slots[nfree++] = (unsigned)cqe->user_data;
      inflight--;
      completed++;
    }
    io_uring_cq_advance(&ring, seen);
  }
  if (writing && fdatasync(fd) < 0) return die("fdatasync", errno);
  double seconds = now_seconds() - start;
  printf("{\"mb_s\": %.1f, \"direct\": %d, \"seconds\": %.4f}\n", (double)total / 1e6 / seconds,
         direct, seconds);
  io_uring_queue_exit(&ring);
  close(fd);
  return 0;
}
