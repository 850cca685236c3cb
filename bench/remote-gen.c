/*
 * remote-gen: the paced change generator of bench/remote-fanout.ts.
 *
 *   remote-gen DIR RATE SECONDS DIRS
 *
 * For SECONDS, makes RATE changes per second below the existing directories DIR/d0..d{DIRS-1}:
 * half creates of empty files named t<CLOCK_MONOTONIC ns>, the time read right before the
 * open(2) that creates the file, half unlinks of the file created 1,000 creates earlier. Paced
 * with short sleeps (never a busy loop, so it leaves the cores to the server and the clients).
 * At the end the remaining files are unlinked. Prints the number of creates on stdout.
 *
 * Compiled at bench time into a temp dir; never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LIVE 1000

static void die(const char *what, const char *path) {
  fprintf(stderr, "remote-gen: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static long long mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static char live[LIVE][256];

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: remote-gen DIR RATE SECONDS DIRS\n");
    return 2;
  }
  const char *dir = argv[1];
  double creates_per_s = atof(argv[2]) / 2;
  double seconds = atof(argv[3]);
  long dirs = atol(argv[4]);
  if (creates_per_s <= 0 || seconds <= 0 || dirs <= 0) {
    fprintf(stderr, "remote-gen: RATE, SECONDS and DIRS must be positive\n");
    return 2;
  }
  long long t0 = mono_ns();
  long long end = t0 + (long long)(seconds * 1e9);
  long made = 0;
  for (;;) {
    long long now = mono_ns();
    if (now >= end) break;
    long due = (long)((double)(now - t0) / 1e9 * creates_per_s);
    while (made < due) {
      char *slot = live[made % LIVE];
      if (made >= LIVE && unlink(slot) != 0) die("unlink", slot);
      snprintf(slot, sizeof live[0], "%s/d%ld/t%lld", dir, made % dirs, mono_ns());
      int fd = open(slot, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644);
      if (fd < 0) die("create", slot);
      close(fd);
      made++;
    }
    struct timespec nap = {0, 200000};
    nanosleep(&nap, NULL);
  }
  for (long i = made > LIVE ? made - LIVE : 0; i < made; i++) {
    if (unlink(live[i % LIVE]) != 0) die("unlink", live[i % LIVE]);
  }
  printf("%ld\n", made);
  return 0;
}
