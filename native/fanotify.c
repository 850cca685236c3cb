/*
 * fanotify N-API addon: syscalls and fd plumbing only (no policy, no parsing).
 *
 * Every failing syscall throws an Error with message "CODE: strerror, syscall"
 * and properties code (errno name), errno (positive number) and syscall.
 * Bad argument types throw TypeError; out-of-range sizes throw RangeError.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- constants the (old) system headers may lack ---------------------- */

#ifndef SYS_fanotify_init
#define SYS_fanotify_init 300
#endif
#ifndef SYS_fanotify_mark
#define SYS_fanotify_mark 301
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef MAX_HANDLE_SZ
#define MAX_HANDLE_SZ 128
#endif
#ifndef AT_FDCWD
#define AT_FDCWD -100
#endif
#ifndef AT_SYMLINK_FOLLOW
#define AT_SYMLINK_FOLLOW 0x400
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif
#ifndef AT_HANDLE_FID
#define AT_HANDLE_FID 0x200
#endif
#ifndef O_PATH
#define O_PATH 010000000
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef F_SETLEASE
#define F_SETLEASE 1024
#endif
#ifndef F_GETLEASE
#define F_GETLEASE 1025
#endif
#ifndef MSG_CMSG_CLOEXEC
#define MSG_CMSG_CLOEXEC 0x40000000
#endif

/* Largest read buffer startReader accepts (1 GiB). */
#define READER_MAX_BUFFER (1u << 30)
/* Reads per poll wakeup, so one busy group cannot starve the loop. */
#define READER_MAX_READS 64
/*
 * Larger than any one event (metadata and every info record: handles of at most 128 bytes,
 * a name of at most 255). A read that left this much of the buffer unused took every queued
 * event.
 */
#define READER_EVENT_ROOM 4096
/* fds accepted in one recvmsg; extras beyond the first are closed. */
#define RECV_MAX_FDS 32

/* Layout-compatible with struct file_handle, with room for MAX_HANDLE_SZ. */
struct handle_buf {
  unsigned int handle_bytes;
  int handle_type;
  unsigned char f_handle[MAX_HANDLE_SZ];
};

/* ---- errors ------------------------------------------------------------ */

#define ERRNO_NAMES(X)                                                        \
  X(EPERM) X(ENOENT) X(ESRCH) X(EINTR) X(EIO) X(ENXIO) X(E2BIG) X(ENOEXEC)  \
  X(EBADF) X(ECHILD) X(EAGAIN) X(ENOMEM) X(EACCES) X(EFAULT) X(ENOTBLK)     \
  X(EBUSY) X(EEXIST) X(EXDEV) X(ENODEV) X(ENOTDIR) X(EISDIR) X(EINVAL)      \
  X(ENFILE) X(EMFILE) X(ENOTTY) X(ETXTBSY) X(EFBIG) X(ENOSPC) X(ESPIPE)     \
  X(EROFS) X(EMLINK) X(EPIPE) X(EDOM) X(ERANGE) X(EDEADLK)                  \
  X(ENAMETOOLONG) X(ENOLCK) X(ENOSYS) X(ENOTEMPTY) X(ELOOP) X(ENOMSG)       \
  X(EIDRM) X(ENODATA) X(ETIME) X(ENOLINK) X(EPROTO) X(EBADMSG)              \
  X(EOVERFLOW) X(EBADFD) X(EILSEQ) X(EUSERS) X(ENOTSOCK) X(EDESTADDRREQ)    \
  X(EMSGSIZE) X(EPROTOTYPE) X(ENOPROTOOPT) X(EPROTONOSUPPORT)               \
  X(ESOCKTNOSUPPORT) X(EOPNOTSUPP) X(EPFNOSUPPORT) X(EAFNOSUPPORT)          \
  X(EADDRINUSE) X(EADDRNOTAVAIL) X(ENETDOWN) X(ENETUNREACH) X(ENETRESET)    \
  X(ECONNABORTED) X(ECONNRESET) X(ENOBUFS) X(EISCONN) X(ENOTCONN)           \
  X(ESHUTDOWN) X(ETIMEDOUT) X(ECONNREFUSED) X(EHOSTDOWN) X(EHOSTUNREACH)    \
  X(EALREADY) X(EINPROGRESS) X(ESTALE) X(EDQUOT) X(ECANCELED)               \
  X(EOWNERDEAD) X(ENOTRECOVERABLE) X(ENOMEDIUM) X(EMEDIUMTYPE) X(ENOKEY)    \
  X(EKEYEXPIRED) X(EKEYREVOKED) X(EKEYREJECTED) X(ERFKILL) X(EHWPOISON)

static const char *errno_name(int err, char *scratch, size_t n) {
  switch (err) {
#define ERRNO_CASE(name) \
  case name:             \
    return #name;
    ERRNO_NAMES(ERRNO_CASE)
#undef ERRNO_CASE
    default:
      snprintf(scratch, n, "E%d", err);
      return scratch;
  }
}

/* Builds (does not throw) an errno Error. Returns NULL if even that failed. */
static napi_value make_errno_error(napi_env env, int err, const char *syscall_name) {
  char scratch[32];
  char strbuf[128];
  char msg[320];
  const char *code = errno_name(err, scratch, sizeof scratch);
  const char *desc = strerror_r(err, strbuf, sizeof strbuf);
  snprintf(msg, sizeof msg, "%s: %s, %s", code, desc, syscall_name);

  napi_value jcode, jmsg, jerrno, jsyscall, error;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) != napi_ok ||
      napi_create_int32(env, err, &jerrno) != napi_ok ||
      napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &jsyscall) != napi_ok ||
      napi_create_error(env, jcode, jmsg, &error) != napi_ok)
    return NULL;
  napi_set_named_property(env, error, "errno", jerrno);
  napi_set_named_property(env, error, "syscall", jsyscall);
  return error;
}

/* Throws an errno Error; always returns NULL so callers can `return throw_errno(...)`. */
static napi_value throw_errno(napi_env env, int err, const char *syscall_name) {
  napi_value error = make_errno_error(env, err, syscall_name);
  if (error != NULL) {
    napi_throw(env, error);
  } else {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, NULL, syscall_name);
  }
  return NULL;
}

static napi_value throw_type(napi_env env, const char *name, const char *what) {
  char msg[160];
  snprintf(msg, sizeof msg, "The \"%s\" argument must be %s", name, what);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

static napi_value throw_range(napi_env env, const char *name, const char *what) {
  char msg[160];
  snprintf(msg, sizeof msg, "The value of \"%s\" is out of range. It must be %s", name, what);
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

/* Throws a generic Error for a failed N-API call unless one is already pending. */
static napi_value throw_napi(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) {
    const napi_extended_error_info *info = NULL;
    napi_get_last_error_info(env, &info);
    napi_throw_error(env, NULL,
                     info && info->error_message ? info->error_message : "N-API call failed");
  }
  return NULL;
}

#define NAPI_OK(env, call) \
  do {                     \
    if ((call) != napi_ok) return throw_napi(env); \
  } while (0)

/* ---- argument helpers -------------------------------------------------- */

static bool get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_napi(env);
    return false;
  }
  return true; /* missing arguments are filled with undefined */
}

static bool arg_number(napi_env env, napi_value v, const char *name, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number ||
      napi_get_value_double(env, v, out) != napi_ok) {
    throw_type(env, name, "of type number");
    return false;
  }
  if (!isfinite(*out) || *out != trunc(*out)) {
    throw_type(env, name, "an integer");
    return false;
  }
  return true;
}

static bool arg_int32(napi_env env, napi_value v, const char *name, int32_t *out) {
  double d;
  if (!arg_number(env, v, name, &d)) return false;
  if (d < INT32_MIN || d > INT32_MAX) {
    throw_range(env, name, "an int32");
    return false;
  }
  *out = (int32_t)d;
  return true;
}

/* Flags: accepts [-2^31, 2^32) so results of JS bitwise ops (signed) work. */
static bool arg_uint32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  double d;
  if (!arg_number(env, v, name, &d)) return false;
  if (d < INT32_MIN || d > UINT32_MAX) {
    throw_range(env, name, "a 32-bit flag word");
    return false;
  }
  *out = d < 0 ? (uint32_t)(int32_t)d : (uint32_t)d;
  return true;
}

static bool arg_int64(napi_env env, napi_value v, const char *name, int64_t *out) {
  double d;
  if (!arg_number(env, v, name, &d)) return false;
  if (d < -9007199254740992.0 || d > 9007199254740992.0) {
    throw_range(env, name, "a safe integer");
    return false;
  }
  *out = (int64_t)d;
  return true;
}

/* 64-bit mask: number in [-2^31, 2^53] (negatives are int32 bit patterns) or bigint. */
static bool arg_mask(napi_env env, napi_value v, const char *name, uint64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) {
    throw_napi(env);
    return false;
  }
  if (t == napi_bigint) {
    bool lossless = false;
    if (napi_get_value_bigint_uint64(env, v, out, &lossless) != napi_ok || !lossless) {
      throw_range(env, name, "a 64-bit unsigned value");
      return false;
    }
    return true;
  }
  double d;
  if (!arg_number(env, v, name, &d)) return false;
  if (d < INT32_MIN || d > 9007199254740992.0) {
    throw_range(env, name, "between 0 and 2^53");
    return false;
  }
  *out = d < 0 ? (uint64_t)(uint32_t)(int32_t)d : (uint64_t)d;
  return true;
}

/*
 * String argument → C string. Uses `stackbuf` when it fits, else malloc.
 * When `nullable`, null/undefined give *out = NULL. Free with free_path().
 */
static bool arg_path(napi_env env, napi_value v, const char *name, bool nullable,
                     char *stackbuf, size_t stacksize, char **out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) {
    throw_napi(env);
    return false;
  }
  if (nullable && (t == napi_null || t == napi_undefined)) {
    *out = NULL;
    return true;
  }
  if (t != napi_string) {
    throw_type(env, name, nullable ? "of type string or null" : "of type string");
    return false;
  }
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_napi(env);
    return false;
  }
  char *buf = stackbuf;
  if (len + 1 > stacksize) {
    buf = malloc(len + 1);
    if (buf == NULL) {
      throw_errno(env, ENOMEM, "malloc");
      return false;
    }
  }
  size_t got = 0;
  if (napi_get_value_string_utf8(env, v, buf, len + 1, &got) != napi_ok) {
    if (buf != stackbuf) free(buf);
    throw_napi(env);
    return false;
  }
  if (strlen(buf) != got) {
    if (buf != stackbuf) free(buf);
    throw_type(env, name, "a string without null bytes");
    return false;
  }
  *out = buf;
  return true;
}

static void free_path(char *p, char *stackbuf) {
  if (p != NULL && p != stackbuf) free(p);
}

static bool arg_buffer(napi_env env, napi_value v, const char *name, void **data, size_t *len) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, v, data, len) != napi_ok) {
    throw_type(env, name, "a Buffer or Uint8Array");
    return false;
  }
  return true;
}

static bool arg_function(napi_env env, napi_value v, const char *name) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_function) {
    throw_type(env, name, "of type function");
    return false;
  }
  return true;
}

static napi_value make_int(napi_env env, int64_t n) {
  napi_value v;
  if (napi_create_int64(env, n, &v) != napi_ok) return throw_napi(env);
  return v;
}

static napi_value make_undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

static bool set_int(napi_env env, napi_value obj, const char *key, int64_t n) {
  napi_value v;
  return napi_create_int64(env, n, &v) == napi_ok &&
         napi_set_named_property(env, obj, key, v) == napi_ok;
}

/* ---- fanotify_init / fanotify_mark ------------------------------------- */

static napi_value js_init(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  uint32_t flags, event_f_flags;
  if (!get_args(env, info, 2, argv) || !arg_uint32(env, argv[0], "flags", &flags) ||
      !arg_uint32(env, argv[1], "eventFFlags", &event_f_flags))
    return NULL;
  long fd = syscall(SYS_fanotify_init, flags, event_f_flags);
  if (fd < 0) return throw_errno(env, errno, "fanotify_init");
  return make_int(env, fd);
}

static napi_value js_mark(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd, dirfd;
  uint32_t flags;
  uint64_t mask;
  char stackbuf[PATH_MAX];
  char *path = NULL;
  if (!get_args(env, info, 5, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_uint32(env, argv[1], "flags", &flags) || !arg_mask(env, argv[2], "mask", &mask) ||
      !arg_int32(env, argv[3], "dirfd", &dirfd) ||
      !arg_path(env, argv[4], "path", true, stackbuf, sizeof stackbuf, &path))
    return NULL;
  long rc = syscall(SYS_fanotify_mark, fd, flags, mask, dirfd, path);
  int err = errno;
  free_path(path, stackbuf);
  if (rc < 0) return throw_errno(env, err, "fanotify_mark");
  return make_undefined(env);
}

/* ---- access table: pre-content reads answered without JS (HSM) ------------
 *
 * A reader given a table answers FAN_PRE_ACCESS events itself when the file's owner (JS) has
 * said, in a buffer it owns, that every chunk under the read is there. The rest of the batch
 * goes to JS unchanged. Everything runs on the loop thread, like the JS that writes the buffers,
 * so there is no locking.
 *
 * A file's state buffer: ACCESS_HEADER bytes of float64 fields (native byte order), then one bit
 * per chunk (chunk i at byte i>>3, bit i&7). C only reads the bits and "blocked", and writes the
 * access fields, by the same rules as src/hsm/hydrator.ts (see src/hsm/access.ts).
 *
 * With a table, the reader runs in a thread of its own (below), so that answering a read never
 * waits for the loop thread, which is busy fetching. The table's entries are guarded by its
 * mutex; the state buffers are not: JS writes them on the loop thread while the reader thread
 * reads them. A bit seen late only sends a read to JS. Bits are only cleared before an eviction,
 * which first blocks the file and happens only when nobody has the file open (a write lease
 * probe, which our own event fds also make fail), so no read of it can be in flight then. The
 * access fields are hints for read-ahead and LRU: a lost update costs nothing else.
 */

#define FAN_PRE_ACCESS_BIT 0x00100000ull
/* FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM | FAN_PRE_ACCESS */
#define FAN_ALL_PERM_BITS 0x00170000ull
#define FAN_ALLOW_RESPONSE 0x01u
#define INFO_TYPE_RANGE 6
#define EVENT_METADATA_LEN 24

enum { AT_LAST_ACCESS, AT_LAST_CHUNK, AT_STREAK_START, AT_FROM_START, AT_FROM_START_END, AT_BLOCKED, AT_FIELDS };
#define ACCESS_HEADER (AT_FIELDS * 8)

typedef struct access_entry {
  struct access_entry *next;
  uint64_t dev, ino;
  napi_ref ref; /* keeps the JS buffer (and so `state`) alive */
  unsigned char *state;
  uint64_t chunk_size, size, chunks;
} access_entry_t;

struct fast_read {
  size_t at; /* the event's offset in the batch */
  access_entry_t *entry;
  uint64_t offset, count;
  int32_t fd;
};

typedef struct access_table {
  napi_env env;
  pthread_mutex_t lock;
  bool held; /* hold(true): answer nothing here until hold(false) */
  int report_fd;
  int max_reported;
  access_entry_t **buckets;
  size_t nbuckets, count;
  struct fast_read *fast; /* scratch: the events of one batch answered here */
  size_t nfast_cap;
  double answered; /* events answered here */
} access_table_t;

static double state_get(const access_entry_t *e, int field) {
  double v;
  memcpy(&v, e->state + field * 8, 8);
  return v;
}

static void state_set(access_entry_t *e, int field, double v) {
  memcpy(e->state + field * 8, &v, 8);
}

static size_t table_slot(const access_table_t *t, uint64_t dev, uint64_t ino) {
  uint64_t h = (ino ^ (dev << 32) ^ (dev >> 32)) * 0x9e3779b97f4a7c15ull;
  return (size_t)(h >> 32) & (t->nbuckets - 1);
}

static access_entry_t **table_find(access_table_t *t, uint64_t dev, uint64_t ino) {
  access_entry_t **p = &t->buckets[table_slot(t, dev, ino)];
  while (*p != NULL && !((*p)->dev == dev && (*p)->ino == ino)) p = &(*p)->next;
  return p;
}

static void table_free_entry(access_table_t *t, access_entry_t *e) {
  napi_delete_reference(t->env, e->ref);
  free(e);
}

static bool table_grow(access_table_t *t) {
  size_t n = t->nbuckets * 2;
  access_entry_t **b = calloc(n, sizeof *b);
  if (b == NULL) return false;
  access_entry_t **old = t->buckets;
  size_t oldn = t->nbuckets;
  t->buckets = b;
  t->nbuckets = n;
  for (size_t i = 0; i < oldn; i++) {
    for (access_entry_t *e = old[i], *next; e != NULL; e = next) {
      next = e->next;
      size_t s = table_slot(t, e->dev, e->ino);
      e->next = b[s];
      b[s] = e;
    }
  }
  free(old);
  return true;
}

static void table_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  access_table_t *t = data;
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (access_entry_t *e = t->buckets[i], *next; e != NULL; e = next) {
      next = e->next;
      table_free_entry(t, e);
    }
  }
  free(t->buckets);
  free(t->fast);
  pthread_mutex_destroy(&t->lock);
  free(t);
}

static access_table_t *table_this(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  napi_value self;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok) {
    throw_napi(env);
    return NULL;
  }
  if (argc < n) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return NULL;
  }
  if (napi_unwrap(env, self, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, NULL, "not an access table (call it as a method)");
    return NULL;
  }
  return data;
}

static bool arg_u64(napi_env env, napi_value v, const char *name, uint64_t *out) {
  double d;
  if (!arg_number(env, v, name, &d)) return false;
  if (!(d >= 0 && d <= 9007199254740991.0) || d != floor(d)) {
    throw_range(env, name, "an integer >= 0 and <= 2^53-1");
    return false;
  }
  *out = (uint64_t)d;
  return true;
}

/* set(dev, ino, state, chunkSize, size): add or replace a file's entry. */
static napi_value js_table_set(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  access_table_t *t = table_this(env, info, 5, argv);
  if (t == NULL) return NULL;
  uint64_t dev, ino, chunk_size, size;
  void *data;
  size_t len;
  if (!arg_u64(env, argv[0], "dev", &dev) || !arg_u64(env, argv[1], "ino", &ino) ||
      !arg_buffer(env, argv[2], "state", &data, &len) ||
      !arg_u64(env, argv[3], "chunkSize", &chunk_size) || !arg_u64(env, argv[4], "size", &size))
    return NULL;
  if (chunk_size == 0) return throw_range(env, "chunkSize", "> 0");
  uint64_t chunks = (size + chunk_size - 1) / chunk_size;
  if (len < ACCESS_HEADER + (chunks + 7) / 8) return throw_range(env, "state", "large enough for the header and one bit per chunk");
  napi_ref ref;
  NAPI_OK(env, napi_create_reference(env, argv[2], 1, &ref));
  napi_ref old = NULL;
  pthread_mutex_lock(&t->lock);
  access_entry_t **p = table_find(t, dev, ino);
  access_entry_t *e = *p;
  if (e == NULL) {
    if ((t->count >= t->nbuckets && !table_grow(t)) || (e = calloc(1, sizeof *e)) == NULL) {
      pthread_mutex_unlock(&t->lock);
      napi_delete_reference(env, ref);
      return throw_errno(env, ENOMEM, "malloc");
    }
    p = table_find(t, dev, ino);
    *p = e;
    t->count++;
  } else {
    old = e->ref;
  }
  e->dev = dev;
  e->ino = ino;
  e->ref = ref;
  e->state = data;
  e->chunk_size = chunk_size;
  e->size = size;
  e->chunks = chunks;
  pthread_mutex_unlock(&t->lock);
  if (old != NULL) napi_delete_reference(env, old);
  return make_undefined(env);
}

/* delete(dev, ino): forget a file (its events all go to JS); true if it was there. */
static napi_value js_table_delete(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  access_table_t *t = table_this(env, info, 2, argv);
  if (t == NULL) return NULL;
  uint64_t dev, ino;
  if (!arg_u64(env, argv[0], "dev", &dev) || !arg_u64(env, argv[1], "ino", &ino)) return NULL;
  pthread_mutex_lock(&t->lock);
  access_entry_t **p = table_find(t, dev, ino);
  access_entry_t *e = *p;
  if (e != NULL) {
    *p = e->next;
    t->count--;
  }
  pthread_mutex_unlock(&t->lock);
  if (e != NULL) table_free_entry(t, e);
  napi_value r;
  NAPI_OK(env, napi_get_boolean(env, e != NULL, &r));
  return r;
}

/*
 * hold(on): while on, every event goes to JS. For a caller that closes an event fd before
 * writing its answer (HsmDaemon#exec): a new event handed that number must not be answered here
 * in between, since the kernel would take that answer for the older event.
 */
static napi_value js_table_hold(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  access_table_t *t = table_this(env, info, 1, argv);
  if (t == NULL) return NULL;
  bool on;
  if (napi_get_value_bool(env, argv[0], &on) != napi_ok) return throw_type(env, "on", "a boolean");
  pthread_mutex_lock(&t->lock);
  t->held = on;
  pthread_mutex_unlock(&t->lock);
  return make_undefined(env);
}

/* stats(): { files, answered }. */
static napi_value js_table_stats(napi_env env, napi_callback_info info) {
  access_table_t *t = table_this(env, info, 0, NULL);
  if (t == NULL) return NULL;
  pthread_mutex_lock(&t->lock);
  int64_t files = (int64_t)t->count, answered = (int64_t)t->answered;
  pthread_mutex_unlock(&t->lock);
  napi_value obj;
  NAPI_OK(env, napi_create_object(env, &obj));
  if (!set_int(env, obj, "files", files) || !set_int(env, obj, "answered", answered)) return throw_napi(env);
  return obj;
}

static napi_value js_create_access_table(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t report_fd;
  if (!get_args(env, info, 1, argv) || !arg_int32(env, argv[0], "reportFd", &report_fd)) return NULL;
  access_table_t *t = calloc(1, sizeof *t);
  if (t == NULL) return throw_errno(env, ENOMEM, "malloc");
  t->env = env;
  pthread_mutex_init(&t->lock, NULL);
  t->report_fd = report_fd;
  t->max_reported = -1;
  t->nbuckets = 64;
  t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
  if (t->buckets == NULL) {
    free(t);
    return throw_errno(env, ENOMEM, "malloc");
  }
  napi_value obj;
  napi_property_descriptor props[] = {
      {"set", NULL, js_table_set, NULL, NULL, NULL, napi_default, NULL},
      {"delete", NULL, js_table_delete, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_table_stats, NULL, NULL, NULL, napi_default, NULL},
      {"hold", NULL, js_table_hold, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_create_object(env, &obj) != napi_ok ||
      napi_define_properties(env, obj, sizeof props / sizeof props[0], props) != napi_ok ||
      napi_wrap(env, obj, t, table_finalize, NULL, NULL) != napi_ok) {
    free(t->buckets);
    free(t);
    return throw_napi(env);
  }
  return obj;
}

static uint64_t get_u64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* The chunks [first, last] JS would wait for: Hydrator.chunksOf, clamped to the last chunk. */
static void chunk_span(const access_entry_t *e, uint64_t offset, uint64_t count, uint64_t *first, uint64_t *last) {
  uint64_t end = count > UINT64_MAX - offset ? UINT64_MAX : offset + count;
  *first = offset / e->chunk_size;
  *last = (end - 1) / e->chunk_size;
  if (*first > e->chunks - 1) *first = e->chunks - 1;
  if (*last > e->chunks - 1) *last = e->chunks - 1;
}

/*
 * The file of a pre-content read this table may answer, with the read's range; NULL if JS must
 * see the event: not a plain FAN_PRE_ACCESS with a range of count > 0, a file not in the table
 * or blocked (being evicted), a size other than the published one (JS then makes it local), or
 * a chunk under the range that is not there.
 */
static access_entry_t *table_match(access_table_t *t, const unsigned char *ev, size_t len,
                                   uint64_t *offset, uint64_t *count) {
  uint64_t mask = get_u64(ev + 8);
  int32_t fd;
  memcpy(&fd, ev + 16, 4);
  if ((mask & FAN_ALL_PERM_BITS) != FAN_PRE_ACCESS_BIT || fd < 0) return NULL;
  uint16_t meta_len;
  memcpy(&meta_len, ev + 6, 2);
  bool have_range = false;
  for (size_t at = meta_len; at + 4 <= len;) {
    uint16_t rec_len;
    memcpy(&rec_len, ev + at + 2, 2);
    if (rec_len < 4 || at + rec_len > len) return NULL;
    if (ev[at] == INFO_TYPE_RANGE && rec_len >= 24) {
      *offset = get_u64(ev + at + 8);
      *count = get_u64(ev + at + 16);
      have_range = true;
    }
    at += rec_len;
  }
  if (!have_range || *count == 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0) return NULL;
  access_entry_t *e = *table_find(t, (uint64_t)st.st_dev, (uint64_t)st.st_ino);
  if (e == NULL || e->chunks == 0 || (uint64_t)st.st_size != e->size || state_get(e, AT_BLOCKED) != 0)
    return NULL;
  uint64_t first, last;
  chunk_span(e, *offset, *count, &first, &last);
  const unsigned char *bits = e->state + ACCESS_HEADER;
  for (uint64_t i = first; i <= last; i++)
    if (!(bits[i >> 3] & (1u << (i & 7)))) return NULL;
  /*
   * Reads that start fetches go to JS even when their chunks are there: the read that shows a
   * reader wants the whole file (the second in a row from offset 0), and, before that, a
   * sequential read while the chunk after it is still missing (read-ahead moves on).
   */
  double from = state_get(e, AT_FROM_START);
  from = *offset == 0 ? 1 : from > 0 && (double)*offset == state_get(e, AT_FROM_START_END) ? from + 1 : 0;
  if (from == 2) return NULL;
  double prev = state_get(e, AT_LAST_CHUNK);
  bool sequential = (double)first == prev || (double)first == prev + 1;
  if (from < 2 && sequential && last + 1 < e->chunks && !(bits[(last + 1) >> 3] & (1u << ((last + 1) & 7))))
    return NULL;
  return e;
}

/* What Hydrator.access records of a read, and the time for LRU. */
static void table_note_access(access_entry_t *e, uint64_t offset, uint64_t count) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  state_set(e, AT_LAST_ACCESS, (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000));
  uint64_t first_chunk, last_chunk;
  chunk_span(e, offset, count, &first_chunk, &last_chunk);
  double first = (double)first_chunk, last = (double)last_chunk;
  double prev = state_get(e, AT_LAST_CHUNK);
  if (!(first == prev || first == prev + 1)) state_set(e, AT_STREAK_START, first);
  state_set(e, AT_LAST_CHUNK, last);
  double from = state_get(e, AT_FROM_START);
  from = offset == 0 ? 1 : from > 0 && (double)offset == state_get(e, AT_FROM_START_END) ? from + 1 : 0;
  state_set(e, AT_FROM_START, from);
  state_set(e, AT_FROM_START_END, (double)(offset + count));
}

/*
 * Answer (FAN_ALLOW) the batch's reads whose chunks are all there, close their fds and drop
 * them from the batch; returns the length of what is left for JS.
 *
 * If the worker dies, its supervisor answers every fd number up to the highest one reported.
 * So the highest fd answered here is reported first, before any answer, like JS does before
 * handling an event (an event read here is never answered without being covered).
 */
static size_t table_filter_locked(access_table_t *t, int group_fd, unsigned char *buf, size_t n);

static size_t table_filter(access_table_t *t, int group_fd, unsigned char *buf, size_t n) {
  pthread_mutex_lock(&t->lock);
  size_t left = t->held ? n : table_filter_locked(t, group_fd, buf, n);
  pthread_mutex_unlock(&t->lock);
  return left;
}

static size_t table_filter_locked(access_table_t *t, int group_fd, unsigned char *buf, size_t n) {
  size_t nfast = 0, scanned = 0;
  int max_fd = -1;
  while (scanned + EVENT_METADATA_LEN <= n) {
    const unsigned char *ev = buf + scanned;
    uint32_t len;
    memcpy(&len, ev, 4);
    uint16_t meta_len;
    memcpy(&meta_len, ev + 6, 2);
    /* Malformed: left as it is for JS, which decodes it and reports (and answers what it can). */
    if (len < EVENT_METADATA_LEN || len > n - scanned || meta_len < EVENT_METADATA_LEN || meta_len > len) break;
    struct fast_read f = {scanned, NULL, 0, 0, -1};
    f.entry = table_match(t, ev, len, &f.offset, &f.count);
    if (f.entry != NULL) {
      if (nfast == t->nfast_cap) {
        size_t cap = t->nfast_cap ? t->nfast_cap * 2 : 256;
        struct fast_read *grown = realloc(t->fast, cap * sizeof *grown);
        if (grown == NULL) break;
        t->fast = grown;
        t->nfast_cap = cap;
      }
      memcpy(&f.fd, ev + 16, 4);
      if (f.fd > max_fd) max_fd = f.fd;
      t->fast[nfast++] = f;
    }
    scanned += len;
  }
  if (nfast == 0) return n;
  if (max_fd > t->max_reported) {
    ssize_t w;
    do w = write(t->report_fd, &max_fd, 4);
    while (w < 0 && errno == EINTR);
    /* EPIPE: the supervisor is gone, nobody is left to answer for us; serve on (as JS does). */
    t->max_reported = max_fd;
  }
  size_t out = 0, at = 0;
  for (size_t k = 0; k < nfast; k++) {
    const struct fast_read *f = &t->fast[k];
    struct {
      int32_t fd;
      uint32_t response;
    } resp = {f->fd, FAN_ALLOW_RESPONSE};
    ssize_t w;
    do w = write(group_fd, &resp, sizeof resp);
    while (w < 0 && errno == EINTR);
    /* ENOENT: nobody waits on it any more. Other failures: JS gets the event, and its answer. */
    if (w != (ssize_t)sizeof resp && !(w < 0 && errno == ENOENT)) continue;
    table_note_access(f->entry, f->offset, f->count);
    close(f->fd);
    t->answered++;
    /* Keep what lies before this event, drop the event. */
    if (out != at) memmove(buf + out, buf + at, f->at - at);
    out += f->at - at;
    uint32_t len;
    memcpy(&len, buf + f->at, 4);
    at = f->at + len;
  }
  if (out != at) memmove(buf + out, buf + at, n - at);
  return out + (n - at);
}

/* ---- reader: uv_poll on the non-blocking group fd ---------------------- */

typedef struct reader {
  napi_env env;
  uv_poll_t poll;
  int fd;
  size_t bufsize;
  unsigned char *buf;
  napi_ref callback;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup_hook;
  int refs;     /* 1 for the uv handle (until its close callback) + 1 per JS method */
  bool polling; /* uv_poll_start is in effect */
  bool closed;  /* stop() or env cleanup issued uv_close */
  bool delivering; /* inside reader_read_queued (readQueued() then asks for a reread) */
  /* Asked for by readQueued() during a delivery: read once more after it even if that read
   * emptied the queue; REREAD_YIELD: sched_yield() first. */
  enum { REREAD_NO, REREAD_NOW, REREAD_YIELD } reread;
} reader_t;

static void reader_release(reader_t *r) {
  if (--r->refs == 0) free(r);
}

static void reader_on_close(uv_handle_t *handle) {
  reader_t *r = handle->data;
  napi_env env = r->env;
  napi_async_cleanup_hook_handle hook = r->cleanup_hook;
  r->cleanup_hook = NULL;
  if (r->callback != NULL) {
    napi_delete_reference(env, r->callback);
    r->callback = NULL;
  }
  if (r->async_context != NULL) {
    napi_async_destroy(env, r->async_context);
    r->async_context = NULL;
  }
  free(r->buf);
  r->buf = NULL;
  reader_release(r); /* r may be gone from here on */
  /* Removing the hook may let the env finish tearing down (and run finalizers). */
  if (hook != NULL) napi_remove_async_cleanup_hook(hook);
}

static void reader_close(reader_t *r) {
  if (r->closed) return;
  r->closed = true;
  if (r->polling) {
    uv_poll_stop(&r->poll);
    r->polling = false;
  }
  uv_close((uv_handle_t *)&r->poll, reader_on_close);
}

static void reader_cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  reader_close(arg);
}

/*
 * Calls onBatch(err, batch) through napi_make_callback (so microtasks drain).
 * A throwing callback becomes an uncaught exception. Returns false when the
 * environment can no longer run JS.
 */
static bool reader_deliver(reader_t *r, int err, const char *syscall_name, size_t n) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return false;
  bool ok = false;
  napi_value argv[2], cb, recv, result;
  if (err != 0) {
    argv[0] = make_errno_error(env, err, syscall_name);
    if (argv[0] == NULL || napi_get_null(env, &argv[1]) != napi_ok) goto out;
  } else {
    if (napi_get_null(env, &argv[0]) != napi_ok ||
        napi_create_buffer_copy(env, n, r->buf, NULL, &argv[1]) != napi_ok)
      goto out;
  }
  if (napi_get_reference_value(env, r->callback, &cb) != napi_ok || cb == NULL ||
      napi_get_global(env, &recv) != napi_ok)
    goto out;
  napi_status status = napi_make_callback(env, r->async_context, recv, cb, 2, argv, &result);
  ok = status == napi_ok;
out:;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception;
    if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
      napi_valuetype t = napi_undefined;
      napi_typeof(env, exception, &t);
      if (t != napi_undefined) {
        napi_fatal_exception(env, exception);
        ok = true; /* the process decides (uncaughtException); keep reading */
      }
    }
  }
  napi_close_handle_scope(env, scope);
  return ok;
}

/*
 * Read and deliver batches until the queue is empty as of a read (or READER_MAX_READS batches, so
 * other handles get their turn).
 */
static void reader_read_queued(reader_t *r) {
  r->delivering = true;
  for (int i = 0; i < READER_MAX_READS && r->polling && !r->closed; i++) {
    ssize_t n = read(r->fd, r->buf, r->bufsize);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      reader_deliver(r, err, "read", 0);
      reader_close(r);
      break;
    }
    if (n == 0) {
      reader_close(r);
      break;
    }
    if (!reader_deliver(r, 0, NULL, (size_t)n)) {
      reader_close(r);
      break;
    }
    /*
     * The queue was empty as of this read: another read would only say EAGAIN (one wasted
     * syscall per wakeup, which is per event when they come one at a time). The poll is
     * level-triggered, so an event queued since wakes us again.
     *
     * Unless the batch answered permission events and asked for a reread: a process just
     * released often queues its next event within microseconds (a sequential opener), and
     * reading it now saves the loop's two epoll_wait calls and this thread's wake-up.
     */
    if ((size_t)n + READER_EVENT_ROOM <= r->bufsize) {
      int again = r->reread;
      r->reread = REREAD_NO;
      if (again == REREAD_NO) break;
      if (again == REREAD_YIELD) sched_yield();
    }
  }
  r->reread = REREAD_NO;
  r->delivering = false;
}

static void reader_on_poll(uv_poll_t *handle, int status, int events) {
  reader_t *r = handle->data;
  if (r->closed) return;
  if (status < 0) {
    reader_deliver(r, -status, "uv_poll", 0);
    reader_close(r);
    return;
  }
  if (events & UV_READABLE) reader_read_queued(r);
}

static reader_t *reader_from_info(napi_env env, napi_callback_info info) {
  void *data = NULL;
  napi_get_cb_info(env, info, NULL, NULL, NULL, &data);
  return data;
}

static napi_value js_reader_pause(napi_env env, napi_callback_info info) {
  reader_t *r = reader_from_info(env, info);
  if (r != NULL && !r->closed && r->polling) {
    uv_poll_stop(&r->poll);
    r->polling = false;
  }
  return make_undefined(env);
}

static napi_value js_reader_resume(napi_env env, napi_callback_info info) {
  reader_t *r = reader_from_info(env, info);
  if (r != NULL && !r->closed && !r->polling) {
    int rc = uv_poll_start(&r->poll, UV_READABLE, reader_on_poll);
    if (rc < 0) return throw_errno(env, -rc, "uv_poll_start");
    r->polling = true;
  }
  return make_undefined(env);
}

/*
 * readQueued(yieldFirst): read now what the kernel has queued, without waiting for the loop's
 * next poll. Within a delivery (the batch being handled comes first), read once more right
 * after it instead, even if its read emptied the queue. Nothing while paused.
 * With yieldFirst, sched_yield() first: a process just answered that waits for this CPU runs (and
 * queues its next event) before we read, instead of after whatever the caller does next.
 */
static napi_value js_reader_read_queued(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool yield_first = false;
  size_t argc = 1;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, &data) != napi_ok) return throw_napi(env);
  if (argc >= 1 && napi_get_value_bool(env, argv[0], &yield_first) != napi_ok) yield_first = false;
  reader_t *r = data;
  if (r != NULL && !r->closed && r->polling && r->delivering) {
    r->reread = yield_first ? REREAD_YIELD : REREAD_NOW;
  } else if (r != NULL && !r->closed && r->polling) {
    if (yield_first) sched_yield();
    reader_read_queued(r);
  }
  return make_undefined(env);
}

static napi_value js_reader_stop(napi_env env, napi_callback_info info) {
  reader_t *r = reader_from_info(env, info);
  if (r != NULL) reader_close(r);
  return make_undefined(env);
}

static napi_value js_reader_ref(napi_env env, napi_callback_info info) {
  reader_t *r = reader_from_info(env, info);
  if (r != NULL && !r->closed) uv_ref((uv_handle_t *)&r->poll);
  return make_undefined(env);
}

static napi_value js_reader_unref(napi_env env, napi_callback_info info) {
  reader_t *r = reader_from_info(env, info);
  if (r != NULL && !r->closed) uv_unref((uv_handle_t *)&r->poll);
  return make_undefined(env);
}

static void reader_method_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  reader_release(data);
}

/*
 * obj[name] = fn bound to `data`. Each such function holds the struct: `*refs` counts it, and
 * `release` gives it back when the function is collected.
 */
static bool add_bound_method(napi_env env, napi_value obj, const char *name, napi_callback fn,
                             void *data, int *refs, napi_finalize release) {
  napi_value f;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, data, &f) != napi_ok) return false;
  (*refs)++;
  if (napi_add_finalizer(env, f, data, release, NULL, NULL) != napi_ok) {
    (*refs)--;
    return false;
  }
  return napi_set_named_property(env, obj, name, f) == napi_ok;
}

static bool reader_add_method(napi_env env, reader_t *r, napi_value obj, const char *name,
                              napi_callback fn) {
  return add_bound_method(env, obj, name, fn, r, &r->refs, reader_method_finalize);
}

static void reader_free_unstarted(uv_handle_t *handle) {
  reader_t *r = handle->data;
  free(r->buf);
  free(r);
}


/* ---- thread reader: the reader of a group with an access table -------------
 *
 * A thread polls the group fd, reads, answers what the access table can answer, and queues the
 * rest of each batch for the loop thread (uv_async), which hands it to JS like the poll reader.
 * Same JS interface (pause, resume, stop, ref, unref) and the same guarantees: batches in order;
 * stop() joins the thread and delivers what it had read and not yet delivered (those events are
 * then the caller's to answer, like any delivered event), so no event read is ever lost.
 */

typedef struct tbatch {
  struct tbatch *next;
  int err; /* an error (delivered, then the reader closes); 0 for events */
  const char *syscall_name; /* of err */
  size_t len;
  unsigned char data[];
} tbatch_t;

typedef struct treader {
  napi_env env;
  uv_async_t async;
  pthread_t thread;
  bool thread_started;
  int fd, wake_fd;
  size_t bufsize;
  napi_ref callback, table_ref;
  access_table_t *table;
  napi_async_context async_context;
  napi_async_cleanup_hook_handle cleanup_hook;
  pthread_mutex_t qlock;
  tbatch_t *head, *tail;
  atomic_bool paused, stopping;
  int refs;    /* 1 for the uv handle (until its close callback) + 1 per JS method */
  bool refed;  /* ref() (the default) rather than unref() */
  bool closed; /* stop() or env cleanup began closing */
} treader_t;

static void treader_release(treader_t *r) {
  if (--r->refs == 0) {
    pthread_mutex_destroy(&r->qlock);
    free(r);
  }
}

static void treader_wake(treader_t *r) {
  uint64_t one = 1;
  ssize_t w;
  do w = write(r->wake_fd, &one, sizeof one);
  while (w < 0 && errno == EINTR);
}

static void treader_push(treader_t *r, tbatch_t *b) {
  pthread_mutex_lock(&r->qlock);
  if (r->tail != NULL) r->tail->next = b;
  else r->head = b;
  r->tail = b;
  pthread_mutex_unlock(&r->qlock);
  uv_async_send(&r->async);
}

static tbatch_t *treader_pop(treader_t *r) {
  pthread_mutex_lock(&r->qlock);
  tbatch_t *b = r->head;
  if (b != NULL) {
    r->head = b->next;
    if (r->head == NULL) r->tail = NULL;
  }
  pthread_mutex_unlock(&r->qlock);
  return b;
}

static void *treader_main(void *arg) {
  treader_t *r = arg;
  unsigned char *buf = malloc(r->bufsize);
  if (buf == NULL) {
    tbatch_t *b = calloc(1, sizeof *b);
    if (b != NULL) {
      b->err = ENOMEM;
      b->syscall_name = "malloc";
      treader_push(r, b);
    }
    return NULL;
  }
  while (!atomic_load(&r->stopping)) {
    struct pollfd p[2] = {{atomic_load(&r->paused) ? -1 : r->fd, POLLIN, 0}, {r->wake_fd, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      tbatch_t *b = calloc(1, sizeof *b);
      if (b != NULL) {
        b->err = errno;
        b->syscall_name = "poll";
        treader_push(r, b);
      }
      break;
    }
    if (p[1].revents & POLLIN) {
      uint64_t v;
      ssize_t rd = read(r->wake_fd, &v, sizeof v);
      (void)rd;
    }
    if (!(p[0].revents & (POLLIN | POLLERR | POLLHUP)) || atomic_load(&r->stopping)) continue;
    for (;;) {
      ssize_t n = read(r->fd, buf, r->bufsize);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        tbatch_t *b = calloc(1, sizeof *b);
        if (b != NULL) {
          b->err = n < 0 ? errno : 0;
          b->syscall_name = "read";
          treader_push(r, b);
        }
        free(buf);
        return NULL;
      }
      size_t left = table_filter(r->table, r->fd, buf, (size_t)n);
      if (left > 0) {
        tbatch_t *b = malloc(sizeof *b + left);
        if (b == NULL) {
          /* Nothing sane to do without memory: hand JS the error, and stop reading. */
          tbatch_t *e = calloc(1, sizeof *e);
          if (e != NULL) {
            e->err = ENOMEM;
            e->syscall_name = "malloc";
            treader_push(r, e);
          }
          free(buf);
          return NULL;
        }
        b->next = NULL;
        b->err = 0;
        b->len = left;
        memcpy(b->data, buf, left);
        treader_push(r, b);
      }
      /* As in reader_on_poll: a read that left room took every queued event. */
      if ((size_t)n + READER_EVENT_ROOM <= r->bufsize) break;
    }
  }
  free(buf);
  return NULL;
}

static bool treader_deliver(treader_t *r, const tbatch_t *b) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return false;
  bool ok = false;
  napi_value argv[2], cb, recv, result;
  if (b->err != 0) {
    argv[0] = make_errno_error(env, b->err, b->syscall_name);
    if (argv[0] == NULL || napi_get_null(env, &argv[1]) != napi_ok) goto out;
  } else if (napi_get_null(env, &argv[0]) != napi_ok ||
             napi_create_buffer_copy(env, b->len, b->data, NULL, &argv[1]) != napi_ok) {
    goto out;
  }
  if (napi_get_reference_value(env, r->callback, &cb) != napi_ok || cb == NULL ||
      napi_get_global(env, &recv) != napi_ok)
    goto out;
  ok = napi_make_callback(env, r->async_context, recv, cb, 2, argv, &result) == napi_ok;
out:;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value exception;
    if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
      napi_fatal_exception(env, exception);
      ok = true; /* the process decides (uncaughtException); keep reading */
    }
  }
  napi_close_handle_scope(env, scope);
  return ok;
}

static void treader_close(treader_t *r, bool deliver_rest);

/* Deliver queued batches in order; a read error or end of stream closes the reader. */
static void treader_drain(treader_t *r, bool deliver) {
  tbatch_t *b;
  while ((b = treader_pop(r)) != NULL) {
    bool end = b->err != 0 || b->len == 0;
    bool ok = deliver && (b->len == 0 && b->err == 0 ? true : treader_deliver(r, b));
    free(b);
    if (deliver && (end || !ok)) {
      deliver = false;
      treader_close(r, false);
    }
  }
}

static void treader_on_async(uv_async_t *handle) {
  treader_t *r = handle->data;
  if (!r->closed) treader_drain(r, true);
}

static void treader_on_close(uv_handle_t *handle) {
  treader_t *r = handle->data;
  napi_env env = r->env;
  napi_async_cleanup_hook_handle hook = r->cleanup_hook;
  r->cleanup_hook = NULL;
  if (r->callback != NULL) napi_delete_reference(env, r->callback);
  if (r->table_ref != NULL) napi_delete_reference(env, r->table_ref);
  r->callback = r->table_ref = NULL;
  if (r->async_context != NULL) napi_async_destroy(env, r->async_context);
  r->async_context = NULL;
  treader_release(r); /* r may be gone from here on */
  if (hook != NULL) napi_remove_async_cleanup_hook(hook);
}

/*
 * Stop and join the thread, then deliver (deliver_rest) or drop what it read: dropped only when
 * the environment is going away and can no longer run JS.
 */
static void treader_close(treader_t *r, bool deliver_rest) {
  if (r->closed) return;
  r->closed = true;
  if (r->thread_started) {
    atomic_store(&r->stopping, true);
    treader_wake(r);
    pthread_join(r->thread, NULL);
    r->thread_started = false;
  }
  treader_drain(r, deliver_rest);
  close(r->wake_fd);
  r->wake_fd = -1;
  uv_close((uv_handle_t *)&r->async, treader_on_close);
}

static void treader_cleanup_hook(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  treader_close(arg, false);
}

static treader_t *treader_from_info(napi_env env, napi_callback_info info) {
  void *data = NULL;
  napi_get_cb_info(env, info, NULL, NULL, NULL, &data);
  return data;
}

static napi_value js_treader_pause(napi_env env, napi_callback_info info) {
  treader_t *r = treader_from_info(env, info);
  if (r != NULL && !r->closed && !atomic_exchange(&r->paused, true)) {
    treader_wake(r);
    /* Like a stopped poll: a paused reader does not keep the loop alive. */
    uv_unref((uv_handle_t *)&r->async);
  }
  return make_undefined(env);
}

static napi_value js_treader_resume(napi_env env, napi_callback_info info) {
  treader_t *r = treader_from_info(env, info);
  if (r != NULL && !r->closed && atomic_exchange(&r->paused, false)) {
    treader_wake(r);
    if (r->refed) uv_ref((uv_handle_t *)&r->async);
  }
  return make_undefined(env);
}

static napi_value js_treader_stop(napi_env env, napi_callback_info info) {
  treader_t *r = treader_from_info(env, info);
  if (r != NULL) treader_close(r, true);
  return make_undefined(env);
}

static napi_value js_treader_ref(napi_env env, napi_callback_info info) {
  treader_t *r = treader_from_info(env, info);
  if (r != NULL && !r->closed) {
    r->refed = true;
    if (!atomic_load(&r->paused)) uv_ref((uv_handle_t *)&r->async);
  }
  return make_undefined(env);
}

static napi_value js_treader_unref(napi_env env, napi_callback_info info) {
  treader_t *r = treader_from_info(env, info);
  if (r != NULL && !r->closed) {
    r->refed = false;
    uv_unref((uv_handle_t *)&r->async);
  }
  return make_undefined(env);
}

static void treader_method_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  treader_release(data);
}

static bool treader_add_method(napi_env env, treader_t *r, napi_value obj, const char *name,
                               napi_callback fn) {
  return add_bound_method(env, obj, name, fn, r, &r->refs, treader_method_finalize);
}

static void treader_free_unstarted(uv_handle_t *handle) {
  treader_t *r = handle->data;
  close(r->wake_fd);
  pthread_mutex_destroy(&r->qlock);
  free(r);
}

static napi_value start_thread_reader(napi_env env, int fd, size_t bufsize, napi_value callback,
                                      napi_value table_obj, access_table_t *table) {
  uv_loop_t *loop = NULL;
  NAPI_OK(env, napi_get_uv_event_loop(env, &loop));
  treader_t *r = calloc(1, sizeof *r);
  if (r == NULL) return throw_errno(env, ENOMEM, "malloc");
  r->env = env;
  r->fd = fd;
  r->bufsize = bufsize;
  r->table = table;
  r->refed = true;
  pthread_mutex_init(&r->qlock, NULL);
  r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (r->wake_fd < 0) {
    int err = errno;
    pthread_mutex_destroy(&r->qlock);
    free(r);
    return throw_errno(env, err, "eventfd");
  }
  int rc = uv_async_init(loop, &r->async, treader_on_async);
  if (rc < 0) {
    close(r->wake_fd);
    pthread_mutex_destroy(&r->qlock);
    free(r);
    return throw_errno(env, -rc, "uv_async_init");
  }
  r->async.data = r;
  r->refs = 1; /* the uv handle */
  napi_value obj, name;
  if (napi_create_reference(env, callback, 1, &r->callback) != napi_ok ||
      napi_create_reference(env, table_obj, 1, &r->table_ref) != napi_ok) {
    if (r->callback != NULL) napi_delete_reference(env, r->callback);
    uv_close((uv_handle_t *)&r->async, treader_free_unstarted);
    return throw_napi(env);
  }
  /* From here on, failures go through treader_close (which frees what exists). */
  if (napi_create_object(env, &obj) != napi_ok ||
      napi_create_string_utf8(env, "FanotifyReader", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, obj, name, &r->async_context) != napi_ok ||
      napi_add_async_cleanup_hook(env, treader_cleanup_hook, r, &r->cleanup_hook) != napi_ok ||
      !treader_add_method(env, r, obj, "pause", js_treader_pause) ||
      !treader_add_method(env, r, obj, "resume", js_treader_resume) ||
      !treader_add_method(env, r, obj, "stop", js_treader_stop) ||
      !treader_add_method(env, r, obj, "ref", js_treader_ref) ||
      !treader_add_method(env, r, obj, "unref", js_treader_unref)) {
    treader_close(r, false);
    return throw_napi(env);
  }
  rc = pthread_create(&r->thread, NULL, treader_main, r);
  if (rc != 0) {
    treader_close(r, false);
    return throw_errno(env, rc, "pthread_create");
  }
  r->thread_started = true;
  return obj;
}

static napi_value js_start_reader(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  double size;
  if (!get_args(env, info, 4, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_number(env, argv[1], "bufferSize", &size) ||
      !arg_function(env, argv[2], "onBatch"))
    return NULL;
  napi_valuetype table_type;
  NAPI_OK(env, napi_typeof(env, argv[3], &table_type));
  if (table_type != napi_undefined) {
    access_table_t *table = NULL;
    if (napi_unwrap(env, argv[3], (void **)&table) != napi_ok || table == NULL) {
      napi_throw_type_error(env, NULL, "accessTable must come from createAccessTable()");
      return NULL;
    }
    if (size < 1 || size > READER_MAX_BUFFER) return throw_range(env, "bufferSize", ">= 1 and <= 2^30");
    if (fd < 0) return throw_errno(env, EBADF, "poll");
    return start_thread_reader(env, fd, (size_t)size, argv[2], argv[3], table);
  }
  if (size < 1 || size > READER_MAX_BUFFER) return throw_range(env, "bufferSize", ">= 1 and <= 2^30");
  if (fd < 0) return throw_errno(env, EBADF, "uv_poll_init");

  uv_loop_t *loop = NULL;
  NAPI_OK(env, napi_get_uv_event_loop(env, &loop));

  reader_t *r = calloc(1, sizeof *r);
  if (r == NULL) return throw_errno(env, ENOMEM, "malloc");
  r->env = env;
  r->fd = fd;
  r->bufsize = (size_t)size;
  r->buf = malloc(r->bufsize);
  if (r->buf == NULL) {
    free(r);
    return throw_errno(env, ENOMEM, "malloc");
  }
  int rc = uv_poll_init(loop, &r->poll, fd);
  if (rc < 0) {
    free(r->buf);
    free(r);
    return throw_errno(env, -rc, "uv_poll_init");
  }
  r->poll.data = r;
  rc = uv_poll_start(&r->poll, UV_READABLE, reader_on_poll);
  if (rc < 0) {
    uv_close((uv_handle_t *)&r->poll, reader_free_unstarted);
    return throw_errno(env, -rc, "uv_poll_start");
  }
  r->polling = true;
  r->refs = 1; /* the uv handle */

  /* From here on, failures go through reader_close (which frees what exists). */
  napi_value obj, name;
  if (napi_create_reference(env, argv[2], 1, &r->callback) != napi_ok ||
      napi_create_object(env, &obj) != napi_ok ||
      napi_create_string_utf8(env, "FanotifyReader", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, obj, name, &r->async_context) != napi_ok ||
      napi_add_async_cleanup_hook(env, reader_cleanup_hook, r, &r->cleanup_hook) != napi_ok ||
      !reader_add_method(env, r, obj, "pause", js_reader_pause) ||
      !reader_add_method(env, r, obj, "resume", js_reader_resume) ||
      !reader_add_method(env, r, obj, "readQueued", js_reader_read_queued) ||
      !reader_add_method(env, r, obj, "stop", js_reader_stop) ||
      !reader_add_method(env, r, obj, "ref", js_reader_ref) ||
      !reader_add_method(env, r, obj, "unref", js_reader_unref)) {
    reader_close(r);
    return throw_napi(env);
  }
  return obj;
}

/* ---- file handles ------------------------------------------------------ */

static napi_value js_name_to_handle(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t dirfd;
  uint32_t flags;
  char stackbuf[PATH_MAX];
  char *path = NULL;
  if (!get_args(env, info, 3, argv) || !arg_int32(env, argv[0], "dirfd", &dirfd) ||
      !arg_path(env, argv[1], "path", false, stackbuf, sizeof stackbuf, &path))
    return NULL;
  if (!arg_uint32(env, argv[2], "flags", &flags)) {
    free_path(path, stackbuf);
    return NULL;
  }
  struct handle_buf h;
  int mount_id = 0;
  h.handle_bytes = MAX_HANDLE_SZ;
  h.handle_type = 0;
  int rc = name_to_handle_at(dirfd, path, (struct file_handle *)&h, &mount_id, (int)flags);
  int err = errno;
  free_path(path, stackbuf);
  if (rc < 0) return throw_errno(env, err, "name_to_handle_at");

  napi_value obj, buf;
  NAPI_OK(env, napi_create_object(env, &obj));
  NAPI_OK(env, napi_create_buffer_copy(env, h.handle_bytes, h.f_handle, NULL, &buf));
  if (!set_int(env, obj, "handleType", h.handle_type) ||
      napi_set_named_property(env, obj, "handle", buf) != napi_ok ||
      !set_int(env, obj, "mountId", mount_id))
    return throw_napi(env);
  return obj;
}

static napi_value js_open_by_handle(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t mount_fd, handle_type;
  uint32_t flags;
  void *data;
  size_t len;
  if (!get_args(env, info, 4, argv) || !arg_int32(env, argv[0], "mountFd", &mount_fd) ||
      !arg_int32(env, argv[1], "handleType", &handle_type) ||
      !arg_buffer(env, argv[2], "handle", &data, &len) ||
      !arg_uint32(env, argv[3], "flags", &flags))
    return NULL;
  if (len > MAX_HANDLE_SZ) return throw_errno(env, EINVAL, "open_by_handle_at");
  struct handle_buf h;
  h.handle_bytes = (unsigned int)len;
  h.handle_type = handle_type;
  if (len > 0) memcpy(h.f_handle, data, len);
  int fd;
  do {
    fd = open_by_handle_at(mount_fd, (struct file_handle *)&h, (int)flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return throw_errno(env, errno, "open_by_handle_at");
  return make_int(env, fd);
}

/* ---- statfs ------------------------------------------------------------ */

static napi_value fsid_result(napi_env env, const struct statfs *st) {
  napi_value obj, buf;
  NAPI_OK(env, napi_create_object(env, &obj));
  NAPI_OK(env, napi_create_buffer_copy(env, sizeof st->f_fsid, &st->f_fsid, NULL, &buf));
  NAPI_OK(env, napi_set_named_property(env, obj, "fsid", buf));
  if (!set_int(env, obj, "type", (uint32_t)st->f_type)) return throw_napi(env);
  return obj;
}

static napi_value js_fsid(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char stackbuf[PATH_MAX];
  char *path = NULL;
  if (!get_args(env, info, 1, argv) ||
      !arg_path(env, argv[0], "path", false, stackbuf, sizeof stackbuf, &path))
    return NULL;
  struct statfs st;
  int rc;
  do {
    rc = statfs(path, &st);
  } while (rc < 0 && errno == EINTR);
  int err = errno;
  free_path(path, stackbuf);
  if (rc < 0) return throw_errno(env, err, "statfs");
  return fsid_result(env, &st);
}

static napi_value js_fsid_of_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !arg_int32(env, argv[0], "fd", &fd)) return NULL;
  struct statfs st;
  int rc;
  do {
    rc = fstatfs(fd, &st);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return throw_errno(env, errno, "fstatfs");
  return fsid_result(env, &st);
}

/* ---- processes, files --------------------------------------------------- */

static napi_value js_pidfd_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t pid;
  uint32_t flags;
  if (!get_args(env, info, 2, argv) || !arg_int32(env, argv[0], "pid", &pid) ||
      !arg_uint32(env, argv[1], "flags", &flags))
    return NULL;
  long fd = syscall(SYS_pidfd_open, (pid_t)pid, flags);
  if (fd < 0) return throw_errno(env, errno, "pidfd_open");
  return make_int(env, fd);
}

static napi_value do_fallocate(napi_env env, int fd, int mode, int64_t offset, int64_t length) {
  int rc;
  do {
    rc = fallocate(fd, mode, (off_t)offset, (off_t)length);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return throw_errno(env, errno, "fallocate");
  return make_undefined(env);
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  uint32_t mode;
  int64_t offset, length;
  if (!get_args(env, info, 4, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_uint32(env, argv[1], "mode", &mode) || !arg_int64(env, argv[2], "offset", &offset) ||
      !arg_int64(env, argv[3], "length", &length))
    return NULL;
  return do_fallocate(env, fd, (int)mode, offset, length);
}

static napi_value js_punch_hole(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  int64_t offset, length;
  if (!get_args(env, info, 3, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_int64(env, argv[1], "offset", &offset) || !arg_int64(env, argv[2], "length", &length))
    return NULL;
  return do_fallocate(env, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

/* ---- writeback ----------------------------------------------------------- */

/* sync_file_range in the threadpool: even SYNC_FILE_RANGE_WRITE alone can wait for block
 * allocation and a congested device queue, which must not stall the loop. */
typedef struct {
  napi_async_work work;
  napi_ref callback;
  int fd;
  int64_t offset, length;
  unsigned int flags;
  int err;
} sync_range_job;

static void sync_range_execute(napi_env env, void *data) {
  (void)env;
  sync_range_job *job = data;
  int rc;
  do {
    rc = sync_file_range(job->fd, (off_t)job->offset, (off_t)job->length, job->flags);
  } while (rc < 0 && errno == EINTR);
  job->err = rc < 0 ? errno : 0;
}

static void sync_range_complete(napi_env env, napi_status status, void *data) {
  sync_range_job *job = data;
  napi_value callback, global, arg;
  if (napi_get_reference_value(env, job->callback, &callback) == napi_ok &&
      napi_get_global(env, &global) == napi_ok) {
    if (status != napi_ok) {
      arg = make_errno_error(env, ECANCELED, "sync_file_range");
    } else if (job->err != 0) {
      arg = make_errno_error(env, job->err, "sync_file_range");
    } else {
      napi_get_null(env, &arg);
    }
    if (arg != NULL) napi_call_function(env, global, callback, 1, &arg, NULL);
  }
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value js_sync_file_range(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd;
  uint32_t flags;
  int64_t offset, length;
  napi_valuetype type;
  if (!get_args(env, info, 5, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_int64(env, argv[1], "offset", &offset) || !arg_int64(env, argv[2], "length", &length) ||
      !arg_uint32(env, argv[3], "flags", &flags))
    return NULL;
  NAPI_OK(env, napi_typeof(env, argv[4], &type));
  if (type != napi_function) return throw_type(env, "callback", "a function");
  sync_range_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, ENOMEM, "sync_file_range");
  job->fd = fd;
  job->offset = offset;
  job->length = length;
  job->flags = flags;
  napi_value name;
  if (napi_create_string_utf8(env, "fanotify:syncFileRange", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &job->callback) != napi_ok) {
    free(job);
    return throw_napi(env);
  }
  if (napi_create_async_work(env, NULL, name, sync_range_execute, sync_range_complete, job,
                             &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    napi_delete_reference(env, job->callback);
    free(job);
    return throw_napi(env);
  }
  return make_undefined(env);
}

/* ---- unix sockets ------------------------------------------------------ */

static napi_value js_send_fd(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t sock, fd;
  void *data;
  size_t len;
  if (!get_args(env, info, 3, argv) || !arg_int32(env, argv[0], "socketFd", &sock) ||
      !arg_int32(env, argv[1], "fdToSend", &fd) || !arg_buffer(env, argv[2], "data", &data, &len))
    return NULL;
  char nul = 0;
  struct iovec iov;
  iov.iov_base = len > 0 ? data : &nul;
  iov.iov_len = len > 0 ? len : 1;
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, errno, "sendmsg");
  return make_int(env, n);
}

static napi_value js_recv_fd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t sock;
  double max;
  if (!get_args(env, info, 2, argv) || !arg_int32(env, argv[0], "socketFd", &sock) ||
      !arg_number(env, argv[1], "maxLength", &max))
    return NULL;
  if (max < 1 || max > READER_MAX_BUFFER) return throw_range(env, "maxLength", ">= 1 and <= 2^30");
  size_t cap = (size_t)max;
  unsigned char stackbuf[4096];
  unsigned char *buf = cap <= sizeof stackbuf ? stackbuf : malloc(cap);
  if (buf == NULL) return throw_errno(env, ENOMEM, "malloc");

  union {
    char buf[CMSG_SPACE(sizeof(int) * RECV_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = buf, .iov_len = cap};
  struct msghdr msg;
  ssize_t n;
  do {
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    if (buf != stackbuf) free(buf);
    return throw_errno(env, err, "recvmsg");
  }

  int received = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (received < 0)
        received = fd;
      else
        close(fd);
    }
  }

  napi_value obj, data;
  napi_status s1 = napi_create_buffer_copy(env, (size_t)n, buf, NULL, &data);
  if (buf != stackbuf) free(buf);
  if (s1 != napi_ok || napi_create_object(env, &obj) != napi_ok || !set_int(env, obj, "fd", received) ||
      napi_set_named_property(env, obj, "data", data) != napi_ok) {
    if (received >= 0) close(received);
    return throw_napi(env);
  }
  return obj;
}

static napi_value js_peer_cred(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t sock;
  if (!get_args(env, info, 1, argv) || !arg_int32(env, argv[0], "socketFd", &sock)) return NULL;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return throw_errno(env, errno, "getsockopt");
  napi_value obj;
  NAPI_OK(env, napi_create_object(env, &obj));
  if (!set_int(env, obj, "pid", cred.pid) || !set_int(env, obj, "uid", cred.uid) ||
      !set_int(env, obj, "gid", cred.gid))
    return throw_napi(env);
  return obj;
}

/* ---- many socket writes in one system call ----------------------------- */

/*
 * A fan-out server hands one batch to many sockets. One sendmsg(2) per socket returns to user
 * mode after each wake-up of a reader, and that is where the woken reader preempts the writer:
 * measured, ~95% of the server's preemptions, about ten per batch of 100 sockets. An io_uring
 * takes every sendmsg of a batch in one io_uring_enter; the wake-ups happen inside it, so the
 * writer can only be preempted once, after the last socket. Sends are MSG_DONTWAIT: each one
 * completes (bytes written, -EAGAIN, or an error) inside that same call, so the caller gets every
 * result when it returns and keeps the order of what it writes next. Without io_uring (kernel
 * older than 5.19, io_uring_disabled) the same sends are made one sendmsg at a time.
 */
#include <linux/io_uring.h>
#include <sys/mman.h>

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif

/* Sockets per io_uring_enter. */
#define SEND_RING_ENTRIES 256

typedef struct {
  int fd; /* the io_uring, or -1: one sendmsg per socket */
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  void *sq_map, *cq_map, *sqe_map;
  size_t sq_len, cq_len, sqe_len;
  /* Scratch kept between calls: one msghdr per socket, one iovec per part. */
  struct msghdr *msgs;
  struct iovec *iovs;
  size_t nmsgs, niovs;
} send_ring_t;

static void send_ring_unmap(send_ring_t *r) {
  if (r->sqe_map != NULL && r->sqe_map != MAP_FAILED) munmap(r->sqe_map, r->sqe_len);
  if (r->cq_map != NULL && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map) munmap(r->cq_map, r->cq_len);
  if (r->sq_map != NULL && r->sq_map != MAP_FAILED) munmap(r->sq_map, r->sq_len);
  r->sq_map = r->cq_map = r->sqe_map = NULL;
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
}

/*
 * Set up the io_uring; on any failure the ring sends one sendmsg at a time. The setup flags need
 * 5.19, which also completes a MSG_DONTWAIT send that would block with -EAGAIN instead of waiting
 * for the socket: an older kernel gets no ring, so a send can never hold up the caller.
 */
static void send_ring_setup(send_ring_t *r) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN;
  r->fd = (int)syscall(__NR_io_uring_setup, SEND_RING_ENTRIES, &p);
  if (r->fd < 0) return;
  r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  bool single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
  if (single) r->sq_len = r->cq_len = r->sq_len > r->cq_len ? r->sq_len : r->cq_len;
  r->sq_map = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  r->cq_map = single ? r->sq_map
                     : mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
  r->sqe_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqe_map = mmap(NULL, r->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (r->sq_map == MAP_FAILED || r->cq_map == MAP_FAILED || r->sqe_map == MAP_FAILED || p.sq_entries < SEND_RING_ENTRIES) {
    send_ring_unmap(r);
    return;
  }
  char *sq = r->sq_map, *cq = r->cq_map;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  r->sqes = r->sqe_map;
}

static void send_ring_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  send_ring_t *r = data;
  send_ring_unmap(r);
  free(r->msgs);
  free(r->iovs);
  free(r);
}

static int32_t send_one(int fd, struct msghdr *msg) {
  ssize_t w;
  do {
    w = sendmsg(fd, msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (w < 0 && errno == EINTR);
  return w < 0 ? -errno : (int32_t)w;
}

/*
 * Sends msgs[from, from + k) through the ring, results into out. A send the kernel did not take
 * (the ring failed) is made with sendmsg, and the ring is given up for good.
 */
static void send_ring_batch(send_ring_t *r, const int32_t *fds, struct msghdr *msgs, size_t from, unsigned k, int32_t *out) {
  unsigned tail = *r->sq_tail;
  for (unsigned i = 0; i < k; i++, tail++) {
    unsigned idx = tail & *r->sq_mask;
    struct io_uring_sqe *e = &r->sqes[idx];
    memset(e, 0, sizeof *e);
    e->opcode = IORING_OP_SENDMSG;
    e->fd = fds[from + i];
    e->addr = (uint64_t)(uintptr_t)&msgs[from + i];
    e->len = 1;
    e->msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL;
    e->user_data = from + i;
    r->sq_array[idx] = idx;
    out[from + i] = INT32_MIN; /* not completed yet */
  }
  __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
  unsigned done = 0;
  for (int busy = 0;;) {
    unsigned head = *r->cq_head, ctail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    for (; head != ctail; head++, done++) {
      struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
      out[c->user_data] = c->res;
    }
    __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
    if (done >= k) return;
    unsigned unsubmitted = tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    if (syscall(__NR_io_uring_enter, r->fd, unsubmitted, k - done, IORING_ENTER_GETEVENTS, NULL, 0) >= 0 || errno == EINTR ||
        ((errno == EAGAIN || errno == EBUSY) && ++busy < 1000))
      continue;
    /*
     * The ring failed: it is given up, and later calls use sendmsg. Sends it never took are made
     * here; one taken and not completed (never seen: a MSG_DONTWAIT send completes inside the
     * call) is reported ECANCELED, since whether its bytes went out is unknown.
     */
    *r->sq_tail = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    send_ring_unmap(r);
    for (unsigned i = 0; i < k; i++) {
      if (i >= k - unsubmitted)
        out[from + i] = send_one(fds[from + i], &msgs[from + i]);
      else if (out[from + i] == INT32_MIN)
        out[from + i] = -ECANCELED;
    }
    return;
  }
}

static bool int32_array_arg(napi_env env, napi_value v, const char *name, int32_t **data, size_t *len) {
  bool is = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &type, len, (void **)data, &ab, &off) != napi_ok || type != napi_int32_array) {
    throw_type(env, name, "an Int32Array");
    return false;
  }
  return true;
}

static bool grow(void **p, size_t *have, size_t want, size_t size) {
  if (*have >= want) return true;
  size_t n = want < 64 ? 64 : want * 2;
  void *q = realloc(*p, n * size);
  if (q == NULL) return false;
  *p = q;
  *have = n;
  return true;
}

/* ring.send(fds, counts, parts, results): socket i gets the next counts[i] parts in one sendmsg. */
static napi_value js_send_ring_send(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], self;
  void *data = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, &self, NULL) != napi_ok) return throw_napi(env);
  if (napi_unwrap(env, self, &data) != napi_ok || data == NULL)
    return throw_type(env, "this", "a send ring (call send as its method)");
  send_ring_t *r = data;
  int32_t *fds, *counts, *out;
  size_t n, ncounts, nout;
  uint32_t nparts;
  bool is = false;
  if (!int32_array_arg(env, argv[0], "fds", &fds, &n) || !int32_array_arg(env, argv[1], "counts", &counts, &ncounts) ||
      !int32_array_arg(env, argv[3], "results", &out, &nout))
    return NULL;
  if (napi_is_array(env, argv[2], &is) != napi_ok || !is || napi_get_array_length(env, argv[2], &nparts) != napi_ok)
    return throw_type(env, "parts", "an Array of Buffers");
  if (ncounts != n || nout != n) return throw_range(env, "counts", "and results as long as fds");
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    if (counts[i] < 1 || counts[i] > IOV_MAX) return throw_range(env, "counts", "each 1 to IOV_MAX");
    total += (size_t)counts[i];
  }
  if (total != nparts) return throw_range(env, "parts", "as many Buffers as counts add up to");
  if (!grow((void **)&r->msgs, &r->nmsgs, n, sizeof *r->msgs) || !grow((void **)&r->iovs, &r->niovs, total, sizeof *r->iovs))
    return throw_errno(env, ENOMEM, "malloc");
  struct iovec *iov = r->iovs;
  uint32_t at = 0;
  for (size_t i = 0; i < n; i++) {
    struct msghdr *m = &r->msgs[i];
    memset(m, 0, sizeof *m);
    m->msg_iov = iov;
    m->msg_iovlen = (size_t)counts[i];
    size_t bytes = 0;
    for (int32_t j = 0; j < counts[i]; j++, iov++, at++) {
      napi_value b;
      if (napi_get_element(env, argv[2], at, &b) != napi_ok) return throw_napi(env);
      if (!arg_buffer(env, b, "parts", &iov->iov_base, &iov->iov_len)) return NULL;
      bytes += iov->iov_len;
    }
    if (bytes > INT32_MAX) return throw_range(env, "parts", "at most 2 GiB per socket");
  }
  for (size_t from = 0; from < n; from += SEND_RING_ENTRIES) {
    unsigned k = (unsigned)(n - from < SEND_RING_ENTRIES ? n - from : SEND_RING_ENTRIES);
    if (r->fd >= 0)
      send_ring_batch(r, fds, r->msgs, from, k, out);
    else
      for (unsigned i = 0; i < k; i++) out[from + i] = send_one(fds[from + i], &r->msgs[from + i]);
  }
  return make_undefined(env);
}

/* ring.uring: true while the sends go through io_uring. */
static napi_value js_send_ring_uring(napi_env env, napi_callback_info info) {
  napi_value self, v;
  void *data = NULL;
  size_t argc = 0;
  if (napi_get_cb_info(env, info, &argc, NULL, &self, NULL) != napi_ok || napi_unwrap(env, self, &data) != napi_ok || data == NULL)
    return throw_type(env, "this", "a send ring");
  NAPI_OK(env, napi_get_boolean(env, ((send_ring_t *)data)->fd >= 0, &v));
  return v;
}

static napi_value js_create_send_ring(napi_env env, napi_callback_info info) {
  (void)info;
  send_ring_t *r = calloc(1, sizeof *r);
  if (r == NULL) return throw_errno(env, ENOMEM, "malloc");
  r->fd = -1;
  send_ring_setup(r);
  napi_value obj;
  napi_property_descriptor props[] = {
      {"send", NULL, js_send_ring_send, NULL, NULL, NULL, napi_default, NULL},
      {"uring", NULL, NULL, js_send_ring_uring, NULL, NULL, napi_default, NULL},
  };
  if (napi_create_object(env, &obj) != napi_ok ||
      napi_define_properties(env, obj, sizeof props / sizeof props[0], props) != napi_ok ||
      napi_wrap(env, obj, r, send_ring_finalize, NULL, NULL) != napi_ok) {
    send_ring_finalize(env, r, NULL);
    return throw_napi(env);
  }
  return obj;
}

/* ---- access as another user -------------------------------------------- */

/*
 * faccessat2(path, mode, AT_EACCESS) under another user's filesystem credentials (fsuid, fsgid,
 * supplementary groups), so the kernel decides with ACLs and LSMs included, without a process.
 * Credentials are per thread in the kernel: the raw syscalls change only this thread (glibc's
 * setgroups would change every thread of the process), and are restored before returning.
 */
static void restore_creds_or_die(uid_t fsuid, gid_t fsgid, long ngroups, const gid_t *groups) {
  syscall(SYS_setfsuid, fsuid);
  syscall(SYS_setfsgid, fsgid);
  if ((uid_t)syscall(SYS_setfsuid, -1) != fsuid || (gid_t)syscall(SYS_setfsgid, -1) != fsgid ||
      syscall(SYS_setgroups, ngroups, groups) < 0) {
    /* A thread left with another user's credentials must not keep running. */
    fprintf(stderr, "fanotify: cannot restore this thread's credentials after accessAs\n");
    abort();
  }
}

static napi_value js_access_as(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint32_t uid, gid, mode, ngroups = 0;
  bool is_array = false;
  char stackbuf[PATH_MAX];
  char *path = NULL;
  if (!get_args(env, info, 5, argv) || !arg_uint32(env, argv[0], "uid", &uid) ||
      !arg_uint32(env, argv[1], "gid", &gid))
    return NULL;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &ngroups) != napi_ok || ngroups > 65536)
    return throw_type(env, "groups", "an array of at most 65536 gids");
  if (!arg_uint32(env, argv[4], "mode", &mode)) return NULL;
  gid_t *groups = malloc(sizeof(gid_t) * (ngroups + 1));
  if (groups == NULL) return throw_errno(env, ENOMEM, "malloc");
  for (uint32_t i = 0; i < ngroups; i++) {
    napi_value g;
    uint32_t v;
    if (napi_get_element(env, argv[2], i, &g) != napi_ok || !arg_uint32(env, g, "groups[i]", &v)) {
      free(groups);
      return NULL;
    }
    groups[i] = v;
  }
  if (!arg_path(env, argv[3], "path", false, stackbuf, sizeof stackbuf, &path)) {
    free(groups);
    return NULL;
  }
  long nsaved = syscall(SYS_getgroups, 0, NULL);
  gid_t *saved = nsaved >= 0 ? malloc(sizeof(gid_t) * (size_t)(nsaved + 1)) : NULL;
  if (saved == NULL || syscall(SYS_getgroups, nsaved, saved) != nsaved) {
    int err = nsaved < 0 ? errno : ENOMEM;
    free(saved);
    free(groups);
    free_path(path, stackbuf);
    return throw_errno(env, err, "getgroups");
  }
  uid_t old_uid = (uid_t)syscall(SYS_setfsuid, -1);
  gid_t old_gid = (gid_t)syscall(SYS_setfsgid, -1);
  int rc = -1, err = 0;
  const char *failed = "setgroups";
  if (syscall(SYS_setgroups, (long)ngroups, groups) < 0) {
    err = errno;
  } else {
    syscall(SYS_setfsgid, gid);
    syscall(SYS_setfsuid, uid);
    if ((gid_t)syscall(SYS_setfsgid, -1) != gid || (uid_t)syscall(SYS_setfsuid, -1) != uid) {
      failed = "setfsuid";
      err = EPERM;
    } else {
      failed = "faccessat2";
      rc = (int)syscall(SYS_faccessat2, AT_FDCWD, path, (int)mode, AT_EACCESS);
      err = rc < 0 ? errno : 0;
    }
  }
  restore_creds_or_die(old_uid, old_gid, nsaved, saved);
  free(saved);
  free(groups);
  free_path(path, stackbuf);
  if (rc == 0) {
    napi_value t;
    NAPI_OK(env, napi_get_boolean(env, true, &t));
    return t;
  }
  if (err == EACCES || err == ENOENT || err == ENOTDIR || err == ELOOP || err == ENAMETOOLONG) {
    napi_value f;
    NAPI_OK(env, napi_get_boolean(env, false, &f));
    return f;
  }
  return throw_errno(env, err, failed);
}

/* ---- leases, close ----------------------------------------------------- */

static napi_value js_set_lease(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd, type;
  if (!get_args(env, info, 2, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_int32(env, argv[1], "type", &type))
    return NULL;
  int rc;
  do {
    rc = fcntl(fd, F_SETLEASE, type);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return throw_errno(env, errno, "fcntl");
  return make_undefined(env);
}

static napi_value js_get_lease(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !arg_int32(env, argv[0], "fd", &fd)) return NULL;
  int rc = fcntl(fd, F_GETLEASE);
  if (rc < 0) return throw_errno(env, errno, "fcntl");
  return make_int(env, rc);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, errno, "close");
  return make_undefined(env);
}

/* ---- change stamps (the guard's scan cache) ---------------------------- */

/* Bytes changeStamp writes: ctime seconds, ctime nanoseconds, size, each an int64. */
#define CHANGE_STAMP_BYTES 24

/*
 * changeStamp(fd, out, noWriters): write the file's change stamp to out and return true.
 *
 * With noWriters, the stamp is taken first and then a read lease is taken and dropped at once: the
 * kernel refuses it (EAGAIN) while anyone has the file open for writing, so success proves that
 * no write was in progress after the stamp. A writer opening the file while the lease is held
 * waits for the drop and makes the kernel signal the lease holder; the signal of this fd is set
 * to SIGURG (ignored by default) first, because the default SIGIO would end the process.
 * Returns false for a file that is not regular, is open for writing, or whose filesystem refuses
 * leases. An fstat failure (a bad fd) is thrown.
 */
static napi_value js_change_stamp(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  void *data;
  size_t len;
  bool no_writers;
  if (!get_args(env, info, 3, argv) || !arg_int32(env, argv[0], "fd", &fd) ||
      !arg_buffer(env, argv[1], "out", &data, &len))
    return NULL;
  if (napi_get_value_bool(env, argv[2], &no_writers) != napi_ok) return throw_type(env, "noWriters", "a boolean");
  if (len < CHANGE_STAMP_BYTES) return throw_range(env, "out", "at least 24 bytes long");
  struct stat st;
  if (fstat(fd, &st) < 0) return throw_errno(env, errno, "fstat");
  bool ok = S_ISREG(st.st_mode);
  if (ok && no_writers) {
    int rc;
    ok = fcntl(fd, F_SETSIG, SIGURG) == 0;
    if (ok) {
      do {
        rc = fcntl(fd, F_SETLEASE, F_RDLCK);
      } while (rc < 0 && errno == EINTR);
      ok = rc == 0;
    }
    if (ok) {
      do {
        rc = fcntl(fd, F_SETLEASE, F_UNLCK);
      } while (rc < 0 && errno == EINTR);
    }
  }
  int64_t stamp[3] = {(int64_t)st.st_ctim.tv_sec, (int64_t)st.st_ctim.tv_nsec, (int64_t)st.st_size};
  memcpy(data, stamp, sizeof stamp);
  napi_value result;
  NAPI_OK(env, napi_get_boolean(env, ok, &result));
  return result;
}

/* ---- module ------------------------------------------------------------ */

static napi_value make_constants(napi_env env) {
  static const struct {
    const char *name;
    int64_t value;
  } table[] = {
      {"AT_FDCWD", AT_FDCWD},
      {"AT_SYMLINK_FOLLOW", AT_SYMLINK_FOLLOW},
      {"AT_EMPTY_PATH", AT_EMPTY_PATH},
      {"AT_HANDLE_FID", AT_HANDLE_FID},
      {"O_RDONLY", O_RDONLY},
      {"O_WRONLY", O_WRONLY},
      {"O_RDWR", O_RDWR},
      {"O_PATH", O_PATH},
      {"O_DIRECTORY", O_DIRECTORY},
      {"O_NOFOLLOW", O_NOFOLLOW},
      {"O_CLOEXEC", O_CLOEXEC},
      {"O_NONBLOCK", O_NONBLOCK},
      {"O_LARGEFILE", O_LARGEFILE},
      {"FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE},
      {"FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE},
      {"F_RDLCK", F_RDLCK},
      {"F_WRLCK", F_WRLCK},
      {"F_UNLCK", F_UNLCK},
      {"SYNC_FILE_RANGE_WAIT_BEFORE", SYNC_FILE_RANGE_WAIT_BEFORE},
      {"SYNC_FILE_RANGE_WRITE", SYNC_FILE_RANGE_WRITE},
      {"SYNC_FILE_RANGE_WAIT_AFTER", SYNC_FILE_RANGE_WAIT_AFTER},
  };
  napi_value obj;
  NAPI_OK(env, napi_create_object(env, &obj));
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
    if (!set_int(env, obj, table[i].name, table[i].value)) return throw_napi(env);
  NAPI_OK(env, napi_object_freeze(env, obj));
  return obj;
}

NAPI_MODULE_INIT() {
  napi_value constants = make_constants(env);
  if (constants == NULL) return NULL;
#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}
  napi_property_descriptor props[] = {
      METHOD("init", js_init),
      METHOD("mark", js_mark),
      METHOD("startReader", js_start_reader),
      METHOD("createAccessTable", js_create_access_table),
      METHOD("nameToHandle", js_name_to_handle),
      METHOD("openByHandle", js_open_by_handle),
      METHOD("fsid", js_fsid),
      METHOD("fsidOfFd", js_fsid_of_fd),
      METHOD("pidfdOpen", js_pidfd_open),
      METHOD("fallocate", js_fallocate),
      METHOD("punchHole", js_punch_hole),
      METHOD("syncFileRange", js_sync_file_range),
      METHOD("sendFd", js_send_fd),
      METHOD("recvFd", js_recv_fd),
      METHOD("peerCred", js_peer_cred),
      METHOD("createSendRing", js_create_send_ring),
      METHOD("accessAs", js_access_as),
      METHOD("setLease", js_set_lease),
      METHOD("getLease", js_get_lease),
      METHOD("changeStamp", js_change_stamp),
      METHOD("close", js_close),
      {"constants", NULL, NULL, NULL, NULL, constants, napi_enumerable, NULL},
  };
#undef METHOD
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
