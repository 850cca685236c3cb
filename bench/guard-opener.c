/*
 * guard-opener: open and close one file N times and print the cost per open+close.
 *
 *   guard-opener FILE [COUNT=200000] [WARMUP=1000]
 *
 * Prints one line: "<us per op> <total seconds> <count>". The warm-up opens are not timed (a
 * guard with a decision cache decides the first open in userspace and caches it).
 * Compiled at bench time by bench/guard-open.ts (cc -O2); never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_close(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "guard-opener: open %s: %s\n", path, strerror(errno));
    return -1;
  }
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: guard-opener FILE [COUNT] [WARMUP]\n");
    return 2;
  }
  const char *path = argv[1];
  long count = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
  long warmup = argc > 3 ? strtol(argv[3], NULL, 10) : 1000;
  if (count <= 0 || warmup < 0) {
    fprintf(stderr, "guard-opener: bad COUNT or WARMUP\n");
    return 2;
  }
  for (long i = 0; i < warmup; i++)
    if (open_close(path) < 0) return 1;
  double t0 = now_s();
  for (long i = 0; i < count; i++)
    if (open_close(path) < 0) return 1;
  double t = now_s() - t0;
  printf("%.4f %.6f %ld\n", t * 1e6 / (double)count, t, count);
  return 0;
}
