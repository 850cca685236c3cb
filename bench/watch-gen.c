/*
 * watch-gen: trees and file storms for the watch benchmarks (bench/watch-*.ts).
 *
 *   watch-gen tree DIR FILES_PER_LEAF FANOUT...
 *     Below the existing directory DIR, builds a tree of directories d0..d{F-1} per level, one
 *     level per FANOUT argument, and FILES_PER_LEAF empty files f0..f{N-1} in every directory of
 *     the last level. `tree DIR 10 100 100` makes 1 + 100 + 10,000 = 10,101 directories
 *     (counting DIR) and 100,000 files; `tree DIR 10 100 100 10` makes 110,101 directories and
 *     1,000,000 files. Prints "dirs files seconds" (dirs counts DIR).
 *
 *   watch-gen storm DIR FILES DIRS
 *     Creates DIR, DIRS subdirectories, and FILES files spread over them, each created, written
 *     (a few bytes), closed and unlinked at once, as fast as it can; then removes the
 *     subdirectories and DIR. Prints "files dirs seconds user_cpu_seconds system_cpu_seconds".
 *
 * Compiled at bench time into a temp dir with `cc`; never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "watch-gen: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long files_per_leaf;
static long dirs_made;
static long files_made;

/* path holds the directory (len bytes, no trailing slash); depth indexes fanout[]. */
static void build(char *path, size_t len, const long *fanout, int levels, int depth) {
  if (depth == levels) {
    for (long i = 0; i < files_per_leaf; i++) {
      int n = snprintf(path + len, 4096 - len, "/f%ld", i);
      if (n < 0 || (size_t)n >= 4096 - len) die("path too long", path);
      int fd = open(path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) die("open", path);
      if (close(fd) != 0) die("close", path);
      files_made++;
    }
    path[len] = 0;
    return;
  }
  for (long d = 0; d < fanout[depth]; d++) {
    int n = snprintf(path + len, 4096 - len, "/d%ld", d);
    if (n < 0 || (size_t)n >= 4096 - len) die("path too long", path);
    if (mkdir(path, 0755) != 0) die("mkdir", path);
    dirs_made++;
    build(path, len + (size_t)n, fanout, levels, depth + 1);
    path[len] = 0;
  }
}

static int tree(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: watch-gen tree DIR FILES_PER_LEAF FANOUT...\n");
    return 2;
  }
  files_per_leaf = atol(argv[3]);
  int levels = argc - 4;
  long fanout[32];
  if (levels > 32) levels = 32;
  for (int i = 0; i < levels; i++) fanout[i] = atol(argv[4 + i]);
  static char path[4096];
  size_t len = strlen(argv[2]);
  if (len >= sizeof path) die("path too long", argv[2]);
  memcpy(path, argv[2], len + 1);
  while (len > 1 && path[len - 1] == '/') path[--len] = 0;
  double t0 = now();
  dirs_made = 1;
  build(path, len, fanout, levels, 0);
  printf("%ld %ld %.6f\n", dirs_made, files_made, now() - t0);
  return 0;
}

static int storm(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: watch-gen storm DIR FILES DIRS\n");
    return 2;
  }
  const char *root = argv[2];
  long files = atol(argv[3]);
  long dirs = atol(argv[4]);
  if (files < 0 || dirs < 1) {
    fprintf(stderr, "watch-gen: bad FILES or DIRS\n");
    return 2;
  }
  double t0 = now();
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
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%ld %ld %.6f %.6f %.6f\n", made, dirs, now() - t0, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "tree") == 0) return tree(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "storm") == 0) return storm(argc, argv);
  fprintf(stderr, "usage: watch-gen tree DIR FILES_PER_LEAF FANOUT... | watch-gen storm DIR FILES DIRS\n");
  return 2;
}
