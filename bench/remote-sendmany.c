/*
 * remote-sendmany: what handing one frame to many unix sockets costs the writer, one write(2) per
 * socket against all sends in one io_uring_enter (what `fan serve` does, native/fanotify.c
 * SendRing), with readers that behave like Node clients.
 *
 *   cc -O2 -o remote-sendmany bench/remote-sendmany.c
 *   remote-sendmany SOCKETS READERS BYTES READ_WORK_US WRITER_WORK_US ROUNDS
 *
 * SOCKETS unix stream socket pairs; READERS processes read them (epoll, read, then READ_WORK_US of
 * busy work per read, like a Node reader's callback). Each round the writer does WRITER_WORK_US
 * of busy work (its other work: events, records), then writes BYTES to every socket, then sleeps
 * 1 ms. Both modes run ROUNDS rounds, alternated in blocks of 100. Prints, per mode: the round's
 * wall time (p50, p99, max; a preemption right after the last send counts) and how often the
 * writer was preempted per round. (The writer's CPU per send is not printed: its thread CPU clock
 * said 0.5 µs per io_uring send against 3 µs per write(2), while perf sampled the same kernel
 * send cost in both modes; not a number to trust.)
 */
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void busy(long long ns) {
  long long end = now_ns() + ns;
  while (now_ns() < end) {
  }
}

static int cmp(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

static long preemptions(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_nivcsw;
}

struct ring {
  int fd;
  unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
};

static int ring_init(struct ring *r, unsigned entries) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
  if (r->fd < 0) return -1;
  size_t sqsz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  size_t cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (sqsz < cqsz) sqsz = cqsz; /* IORING_FEAT_SINGLE_MMAP (5.4+) */
  char *sq = mmap(NULL, sqsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (sq == MAP_FAILED || r->sqes == MAP_FAILED) return -1;
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(sq + p.cq_off.head);
  r->cq_tail = (unsigned *)(sq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(sq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
  return 0;
}

static void reader(int ep, long long work_ns) {
  static char buf[1 << 16];
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int j = 0; j < n; j++) {
      ssize_t m = read(evs[j].data.fd, buf, sizeof buf);
      if (m == 0) _exit(0);
      if (m > 0) busy(work_ns);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: remote-sendmany SOCKETS READERS BYTES READ_WORK_US WRITER_WORK_US ROUNDS\n");
    return 2;
  }
  int n = atoi(argv[1]), readers = atoi(argv[2]), size = atoi(argv[3]);
  long long read_work = atoll(argv[4]) * 1000, write_work = atoll(argv[5]) * 1000;
  int rounds = atoi(argv[6]);
  if (n < 1 || n > 1024 || readers < 1 || readers > 64 || size < 1 || rounds < 200) {
    fprintf(stderr, "remote-sendmany: 1-1024 sockets, 1-64 readers, BYTES > 0, ROUNDS >= 200\n");
    return 2;
  }
  int w[1024], r[1024];
  pid_t kids[64];
  for (int i = 0; i < n; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) return perror("socketpair"), 1;
    w[i] = sv[0];
    r[i] = sv[1];
  }
  for (int p = 0; p < readers; p++) {
    if ((kids[p] = fork()) == 0) {
      int ep = epoll_create1(0);
      for (int i = p; i < n; i += readers) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = r[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, r[i], &ev);
      }
      for (int i = 0; i < n; i++) close(w[i]);
      reader(ep, read_work);
    }
  }
  for (int i = 0; i < n; i++) close(r[i]);
  struct ring ring;
  if (ring_init(&ring, 1024) < 0) return perror("io_uring"), 1;
  char *data = malloc(size);
  memset(data, 'x', size);
  long long *wall[2] = {malloc(sizeof(long long) * rounds), malloc(sizeof(long long) * rounds)};
  long pre[2] = {0, 0}, shortw[2] = {0, 0};
  int done[2] = {0, 0};
  for (int k = 0; k < 2 * rounds; k++) {
    int mode = (k / 100) % 2;
    busy(write_work);
    long long t0 = now_ns();
    long p0 = preemptions();
    if (mode == 0) {
      for (int i = 0; i < n; i++)
        if (write(w[i], data, size) != size) shortw[0]++;
    } else {
      unsigned tail = *ring.sq_tail;
      for (int i = 0; i < n; i++, tail++) {
        unsigned idx = tail & *ring.sq_mask;
        struct io_uring_sqe *e = &ring.sqes[idx];
        memset(e, 0, sizeof *e);
        e->opcode = IORING_OP_SEND;
        e->fd = w[i];
        e->addr = (unsigned long)data;
        e->len = size;
        e->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
        ring.sq_array[idx] = idx;
      }
      atomic_store_explicit((_Atomic unsigned *)ring.sq_tail, tail, memory_order_release);
      if (syscall(__NR_io_uring_enter, ring.fd, n, n, IORING_ENTER_GETEVENTS, NULL, 0) != n) return perror("io_uring_enter"), 1;
      unsigned h = *ring.cq_head, t = atomic_load_explicit((_Atomic unsigned *)ring.cq_tail, memory_order_acquire);
      for (; h != t; h++)
        if (ring.cqes[h & *ring.cq_mask].res != size) shortw[1]++;
      atomic_store_explicit((_Atomic unsigned *)ring.cq_head, h, memory_order_release);
    }
    /* A preemption right after the last send still delays the round's end. */
    wall[mode][done[mode]++] = now_ns() - t0;
    pre[mode] += preemptions() - p0;
    struct timespec nap = {0, 1000000};
    nanosleep(&nap, NULL);
  }
  printf("%d sockets, %d readers (%lld us per read), %d bytes, writer work %lld us per round, %d rounds per mode\n", n, readers,
         read_work / 1000, size, write_work / 1000, rounds);
  for (int m = 0; m < 2; m++) {
    qsort(wall[m], rounds, sizeof(long long), cmp);
    printf("%-26s round p50 %.2f ms, p99 %.2f ms, max %.2f ms; writer preempted %.2f times per round; short sends %ld\n",
           m ? "io_uring, one enter:" : "one write(2) per socket:", wall[m][rounds / 2] / 1e6, wall[m][rounds * 99 / 100] / 1e6,
           wall[m][rounds - 1] / 1e6, (double)pre[m] / rounds, shortw[m]);
  }
  for (int i = 0; i < n; i++) close(w[i]);
  for (int p = 0; p < readers; p++) waitpid(kids[p], NULL, 0);
  return 0;
}
