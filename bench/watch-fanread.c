/*
 * watch-fanread: the floor for bench/watch-noise.ts — a minimal C reader of the same kernel
 * group and mark as our watcher (FAN_REPORT_DFID_NAME_TARGET, FAN_MARK_FILESYSTEM for create,
 * delete, modify, close_write, attrib, rename, move_self, delete_self with FAN_ONDIR). It only
 * counts events: no decoding, no paths, no filtering.
 *
 *   watch-fanread MOUNTPOINT SLEEP_US
 *
 * SLEEP_US 0 reads as soon as events are queued (as our watcher does); SLEEP_US > 0 sleeps that
 * long after each wake-up, so events pile up (and merge) in the kernel queue and each read()
 * returns many. Prints "ready" once the mark is in place; on SIGINT/SIGTERM prints
 * "reads events user_cpu_seconds system_cpu_seconds" on stderr.
 *
 * Compiled at bench time into a temp dir; never committed as a binary.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/fanotify.h>
#include <sys/resource.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int s) {
  (void)s;
  stop = 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: watch-fanread MOUNTPOINT SLEEP_US\n");
    return 2;
  }
  long sleep_us = atol(argv[2]);
  int fd = fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME_TARGET, O_RDONLY);
  if (fd < 0) {
    perror("watch-fanread: fanotify_init");
    return 1;
  }
  unsigned long long mask = FAN_CREATE | FAN_DELETE | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_ATTRIB | FAN_RENAME |
                            FAN_MOVE_SELF | FAN_DELETE_SELF | FAN_ONDIR;
  if (fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD, argv[1]) < 0) {
    perror("watch-fanread: fanotify_mark");
    return 1;
  }
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  static char buf[256 * 1024];
  long reads = 0, events = 0;
  printf("ready\n");
  fflush(stdout);
  while (!stop) {
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    for (;;) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n <= 0) break;
      reads++;
      for (char *q = buf; q < buf + n; q += ((struct fanotify_event_metadata *)q)->event_len) events++;
      if (n < (ssize_t)sizeof buf / 2) break;
    }
    if (sleep_us > 0) usleep((useconds_t)sleep_us);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  fprintf(stderr, "%ld %ld %.6f %.6f\n", reads, events, (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
          (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  return 0;
}
