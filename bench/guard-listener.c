/*
 * guard-listener: the minimal C permission listener the guard is measured against.
 *
 *   guard-listener MOUNTPOINT [IGNORE_FILE]
 *
 * fanotify_init(FAN_CLASS_CONTENT), a mount mark with FAN_OPEN_PERM on MOUNTPOINT, then a
 * poll/read loop answering every event FAN_ALLOW (and closing its fd). With IGNORE_FILE, an
 * inode ignore mark for FAN_OPEN_PERM is placed on that file first (the kernel-side "decision
 * cache" anchor). Writes "ready" to stdout once marked; on SIGTERM/SIGINT writes "events N" and
 * exits (closing the group releases anything pending).
 * Compiled at bench time by bench/guard-open.ts (cc -O2); never committed as a binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: guard-listener MOUNTPOINT [IGNORE_FILE]\n");
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  int fan = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE | O_CLOEXEC);
  if (fan < 0) {
    perror("guard-listener: fanotify_init");
    return 1;
  }
  if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_PERM, AT_FDCWD, argv[1]) < 0) {
    perror("guard-listener: fanotify_mark (mount)");
    return 1;
  }
  if (argc > 2 && fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK, FAN_OPEN_PERM, AT_FDCWD, argv[2]) < 0) {
    perror("guard-listener: fanotify_mark (ignore)");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);

  static char buf[64 * 1024] __attribute__((aligned(8)));
  long events = 0;
  struct pollfd pfd = {.fd = fan, .events = POLLIN};
  while (!stop) {
    int n = poll(&pfd, 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("guard-listener: poll");
      break;
    }
    for (;;) {
      ssize_t len = read(fan, buf, sizeof buf);
      if (len < 0) {
        if (errno == EAGAIN || errno == EINTR) break;
        perror("guard-listener: read");
        stop = 1;
        break;
      }
      struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
      for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
        if (m->fd < 0) continue;
        if (m->mask & FAN_OPEN_PERM) {
          struct fanotify_response r = {.fd = m->fd, .response = FAN_ALLOW};
          if (write(fan, &r, sizeof r) < 0) perror("guard-listener: write");
        }
        close(m->fd);
        events++;
      }
    }
  }
  printf("events %ld\n", events);
  fflush(stdout);
  close(fan);
  return 0;
}
