/*
 * guard-reader: open and read each file of a list once, with P concurrent processes.
 *
 *   guard-reader LISTFILE PROCS OUTPREFIX
 *
 * LISTFILE has one path per line. Process k (of PROCS, forked) takes lines k, k+P, k+2P, …;
 * for each it opens the file, reads it to EOF in 64 KiB reads, and closes it, and records
 * "index open_errno read_errno bytes latency_ns" (latency: open through close) in
 * OUTPREFIX.k, written once at the end. The parent prints "elapsed_ns N": from just before the
 * first fork to the last child's exit.
 * Compiled at bench time by bench/guard-scan.ts (cc -O2); never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: guard-reader LISTFILE PROCS OUTPREFIX\n");
    return 2;
  }
  int procs = atoi(argv[2]);
  if (procs <= 0) return 2;
  FILE *lf = fopen(argv[1], "r");
  if (!lf) {
    perror("guard-reader: list");
    return 1;
  }
  size_t cap = 1024, n = 0;
  char **paths = malloc(cap * sizeof *paths);
  char line[4096];
  while (fgets(line, sizeof line, lf)) {
    size_t l = strlen(line);
    while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
    if (l == 0) continue;
    if (n == cap) paths = realloc(paths, (cap *= 2) * sizeof *paths);
    paths[n++] = strdup(line);
  }
  fclose(lf);

  int64_t t0 = now_ns();
  for (int k = 0; k < procs; k++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("guard-reader: fork");
      return 1;
    }
    if (pid > 0) continue;
    static char buf[64 * 1024];
    size_t outcap = 64 * n + 64, outlen = 0;
    char *out = malloc(outcap);
    for (size_t i = (size_t)k; i < n; i += (size_t)procs) {
      int64_t a = now_ns();
      int oerr = 0, rerr = 0;
      long long bytes = 0;
      int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        oerr = errno;
      } else {
        for (;;) {
          ssize_t r = read(fd, buf, sizeof buf);
          if (r < 0) {
            if (errno == EINTR) continue;
            rerr = errno;
            break;
          }
          if (r == 0) break;
          bytes += r;
        }
        close(fd);
      }
      int64_t b = now_ns();
      outlen += (size_t)snprintf(out + outlen, outcap - outlen, "%zu %d %d %lld %lld\n", i, oerr, rerr, bytes, (long long)(b - a));
    }
    char name[4096];
    snprintf(name, sizeof name, "%s.%d", argv[3], k);
    FILE *f = fopen(name, "w");
    if (!f || fwrite(out, 1, outlen, f) != outlen || fclose(f) != 0) {
      perror("guard-reader: output");
      _exit(1);
    }
    _exit(0);
  }
  int failed = 0;
  for (int k = 0; k < procs; k++) {
    int st;
    if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
  }
  int64_t t1 = now_ns();
  printf("elapsed_ns %lld\n", (long long)(t1 - t0));
  return failed;
}
