/*
 * storm-gen: the file storm of bench/trace-storm.ts.
 *
 *   storm-gen DIR FILES DIRS
 *
 * Creates DIR, then DIRS subdirectories d0..d{DIRS-1} and in them FILES files in total
 * (FILES/DIRS each, the rest in the last one): each file is created, written (a few bytes),
 * closed and unlinked at once. Finally the subdirectories and DIR are removed, so directory
 * creates and deletes are part of the storm. Prints "files dirs seconds" on stdout.
 *
 * Compiled at bench time into a temp dir; never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "storm-gen: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: storm-gen DIR FILES DIRS\n");
    return 2;
  }
  const char *root = argv[1];
  long files = atol(argv[2]);
  long dirs = atol(argv[3]);
  if (files < 0 || dirs < 1) {
    fprintf(stderr, "storm-gen: bad FILES or DIRS\n");
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (mkdir(root, 0755) != 0) die("mkdir", root);
  char path[4096];
  static const char payload[] = "storm\n";
  long made = 0;
  for (long d = 0; d < dirs; d++) {
    snprintf(path, sizeof path, "%s/d%ld", root, d);
    if (mkdir(path, 0755) != 0) die("mkdir", path);
    long n = files / dirs + (d == dirs - 1 ? files % dirs : 0);
    for (long i = 0; i < n; i++, made++) {
      snprintf(path, sizeof path, "%s/d%ld/f%ld", root, d, made);
      int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) die("open", path);
      if (write(fd, payload, sizeof payload - 1) != (ssize_t)(sizeof payload - 1)) die("write", path);
      if (close(fd) != 0) die("close", path);
      if (unlink(path) != 0) die("unlink", path);
    }
  }
  for (long d = 0; d < dirs; d++) {
    snprintf(path, sizeof path, "%s/d%ld", root, d);
    if (rmdir(path) != 0) die("rmdir", path);
  }
  if (rmdir(root) != 0) die("rmdir", root);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%ld %ld %.6f\n", made, dirs, secs);
  return 0;
}
