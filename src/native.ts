/**
 * Typed loader for the C addon (native/fanotify.c, built by node-gyp into
 * build/Release/fanotify.node). The addon holds syscalls and fd plumbing only.
 *
 * Every failing syscall throws a {@link NativeError}: message `CODE: strerror, syscall`,
 * with `code`, positive `errno` and `syscall`. Wrong argument types throw TypeError,
 * out-of-range sizes RangeError.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Error thrown by a failing syscall in the addon. */
export interface NativeError extends Error {
  /** errno name, e.g. 'EPERM', 'ESTALE' (or `E${n}` for unnamed values). */
  code: string;
  /** Positive errno number. */
  errno: number;
  /** Name of the failing call, e.g. 'fanotify_init', 'open_by_handle_at', 'read'. */
  syscall: string;
}

/** A uv_poll reader on a non-blocking fanotify fd; it does not own (or close) the fd. */
export interface Reader {
  /** Stop polling (the kernel queue keeps events); the reader stops keeping the loop alive. */
  pause(): void;
  /** Start polling again after pause(). */
  resume(): void;
  /**
   * Read and deliver now what the kernel has queued, rather than at the loop's next poll. During
   * the delivery of a batch: read once more right after it, even if its read emptied the queue.
   * Does nothing while paused. With `yieldFirst`, `sched_yield()` first, so that a process just
   * answered that waits for this CPU runs before the read. Absent
   * on the thread reader (the one of a group with an access table), whose thread reads as soon as
   * events are queued.
   */
  readQueued?(yieldFirst?: boolean): void;
  /**
   * Stop for good and close the handle; idempotent; no callbacks after it returns (a thread
   * reader, the one of a group with an access table, delivers during the call what it had read).
   * Call before closing the fd.
   */
  stop(): void;
  /** Let the active reader keep the event loop alive (the default). */
  ref(): void;
  /** Do not let this reader alone keep the event loop alive. */
  unref(): void;
}

/**
 * Pre-content reads a reader answers itself (FAN_ALLOW, without reaching JS) when the file's
 * state buffer says every chunk under the read is there. Made by `createAccessTable`, passed to
 * `startReader`. The state layout is in src/hsm/access.ts.
 */
export interface AccessTable {
  /**
   * Add or replace a file (by st_dev, st_ino). `state` is kept referenced (not copied) until
   * {@link delete}: the bits JS sets in it take effect at the next event. It must hold the
   * header and one bit per chunk of `size` bytes in `chunkSize` chunks.
   */
  set(dev: number, ino: number, state: Buffer, chunkSize: number, size: number): void;
  /** Forget a file: its events all reach JS again. True if it was there. */
  delete(dev: number, ino: number): boolean;
  /** Files in the table, and events answered without JS so far. */
  stats(): { files: number; answered: number };
  /**
   * While on, answer nothing (every event reaches JS). For closing an event fd before writing
   * its answer: the reader must not answer a new event handed the same number in between.
   */
  hold(on: boolean): void;
}

/** Result of name_to_handle_at. */
export interface HandleInfo {
  /** Filesystem-specific handle type (struct file_handle.handle_type). */
  handleType: number;
  /** The f_handle bytes (length = handle_bytes, at most 128). */
  handle: Buffer;
  /** Mount id as reported by name_to_handle_at. */
  mountId: number;
}

/** Result of statfs/fstatfs. */
export interface FsidInfo {
  /** The 8 raw bytes of f_fsid as laid out in memory (what FID info records carry). */
  fsid: Buffer;
  /** f_type magic, e.g. 0xEF53 ext4, 0x01021994 tmpfs, 0x58465342 xfs, 0x9123683E btrfs. */
  type: number;
}

/** Result of recvFd. */
export interface ReceivedFd {
  /** The received fd (O_CLOEXEC), or -1 when the message carried none. */
  fd: number;
  /** The data bytes received (empty at end of stream). */
  data: Buffer;
}

/** Credentials of the peer of a connected unix socket. */
export interface PeerCred {
  /** Peer process id. */
  pid: number;
  /** Peer user id. */
  uid: number;
  /** Peer group id. */
  gid: number;
}

/** Platform constants (x86_64 glibc values). */
export interface NativeConstants {
  /** Special dirfd: the current directory (-100). */
  readonly AT_FDCWD: number;
  /** name_to_handle_at: follow a trailing symlink (0x400). */
  readonly AT_SYMLINK_FOLLOW: number;
  /** Operate on dirfd itself when path is '' (0x1000). */
  readonly AT_EMPTY_PATH: number;
  /** name_to_handle_at: return a non-decodable FID-only handle (0x200). */
  readonly AT_HANDLE_FID: number;
  /** Open read-only. */
  readonly O_RDONLY: number;
  /** Open write-only. */
  readonly O_WRONLY: number;
  /** Open read-write. */
  readonly O_RDWR: number;
  /** Open a path-only fd. */
  readonly O_PATH: number;
  /** Fail unless a directory. */
  readonly O_DIRECTORY: number;
  /** Do not follow a trailing symlink. */
  readonly O_NOFOLLOW: number;
  /** Close on exec. */
  readonly O_CLOEXEC: number;
  /** Non-blocking I/O. */
  readonly O_NONBLOCK: number;
  /** glibc's O_LARGEFILE, which is 0 on x86_64 (the kernel forces large-file fds on 64-bit). */
  readonly O_LARGEFILE: number;
  /** fallocate: keep the file size. */
  readonly FALLOC_FL_KEEP_SIZE: number;
  /** fallocate: deallocate a range (needs KEEP_SIZE). */
  readonly FALLOC_FL_PUNCH_HOLE: number;
  /** Read lease. */
  readonly F_RDLCK: number;
  /** Write lease. */
  readonly F_WRLCK: number;
  /** Remove the lease. */
  readonly F_UNLCK: number;
  /** sync_file_range: wait for writeback already under way in the range before starting. */
  readonly SYNC_FILE_RANGE_WAIT_BEFORE: number;
  /** sync_file_range: start writeback of the range's dirty pages (does not wait for it). */
  readonly SYNC_FILE_RANGE_WRITE: number;
  /** sync_file_range: wait for the range's writeback to finish. */
  readonly SYNC_FILE_RANGE_WAIT_AFTER: number;
}

/**
 * Sends to many stream sockets in one system call (an io_uring; one sendmsg per socket when the
 * kernel has none). Every send is non-blocking and done when `send` returns.
 */
export interface SendRing {
  /**
   * Socket `fds[i]` gets the next `counts[i]` Buffers of `parts` in one sendmsg(MSG_DONTWAIT |
   * MSG_NOSIGNAL); `results[i]` becomes the bytes it took (maybe fewer than given) or −errno
   * (−EAGAIN: none; −ECANCELED: unknown, the ring failed mid-call).
   */
  send(fds: Int32Array, counts: Int32Array, parts: readonly Buffer[], results: Int32Array): void;
  /** True while the sends go through io_uring. */
  readonly uring: boolean;
}

/** The functions exported by build/Release/fanotify.node. */
export interface NativeAddon {
  /** fanotify_init(flags, eventFFlags); returns the group fd. */
  init(flags: number, eventFFlags: number): number;
  /** fanotify_mark; mask is a number (up to 2^53) or bigint; path null means dirfd itself. */
  mark(fd: number, flags: number, mask: number | bigint, dirfd: number, path: string | null): void;
  /**
   * Poll fd in the main loop and pass each read() batch (a new Buffer) to onBatch; read errors
   * end it. With an access table, the reader runs in a thread of its own (so its answers never
   * wait for the loop), answers the reads the table can answer and leaves them out of the batch (a
   * batch left empty is not delivered); the rest reaches onBatch in the loop, in order, and
   * stop() delivers what was read and not yet delivered before it returns.
   */
  startReader(fd: number, bufferSize: number, onBatch: (err: NativeError | null, batch: Buffer | null) => void, accessTable?: AccessTable): Reader;
  /**
   * A table of files whose pre-content reads of present chunks a reader answers itself. Before
   * answering, it writes the highest event fd number it answers (int32, native order) to
   * `reportFd` when above the highest written so far (see src/hsm/supervisor.ts).
   */
  createAccessTable(reportFd: number): AccessTable;
  /** name_to_handle_at with a 128-byte handle buffer. */
  nameToHandle(dirfd: number, path: string, flags: number): HandleInfo;
  /** open_by_handle_at(mountFd, {handleType, handle}, flags); returns the new fd. */
  openByHandle(mountFd: number, handleType: number, handle: Buffer, flags: number): number;
  /** statfs(path): raw f_fsid bytes and f_type. */
  fsid(path: string): FsidInfo;
  /** fstatfs(fd): raw f_fsid bytes and f_type. */
  fsidOfFd(fd: number): FsidInfo;
  /** pidfd_open(pid, flags); returns the pidfd. */
  pidfdOpen(pid: number, flags: number): number;
  /** fallocate(fd, mode, offset, length). */
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  /** fallocate with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE. */
  punchHole(fd: number, offset: number, length: number): void;
  /**
   * sync_file_range(fd, offset, length, flags) in the libuv threadpool; `done` gets null or the
   * errno Error. The fd must stay open until then. Starting writeback early (SYNC_FILE_RANGE_WRITE)
   * leaves a later fdatasync little to wait for; it makes nothing durable by itself.
   */
  syncFileRange(fd: number, offset: number, length: number, flags: number, done: (err: NativeError | null) => void): void;
  /** sendmsg one fd (SCM_RIGHTS) with data (one NUL byte if empty), MSG_NOSIGNAL; returns bytes sent; EAGAIN is thrown. */
  sendFd(socketFd: number, fdToSend: number, data: Buffer): number;
  /** recvmsg up to maxLength bytes and at most one fd (extra fds are closed), MSG_CMSG_CLOEXEC. */
  recvFd(socketFd: number, maxLength: number): ReceivedFd;
  /** getsockopt SO_PEERCRED. */
  peerCred(socketFd: number): PeerCred;
  /** A {@link SendRing} (freed with the object). */
  createSendRing(): SendRing;
  /**
   * faccessat2(path, mode, AT_EACCESS) with this thread's filesystem uid, gid and supplementary
   * groups set to the given ones for the call (ACLs and LSMs apply), then restored. True when
   * allowed; false for EACCES, ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG; other errors (EPERM without
   * CAP_SETUID/CAP_SETGID) are thrown. `mode` is R_OK/W_OK/X_OK bits.
   */
  accessAs(uid: number, gid: number, groups: readonly number[], path: string, mode: number): boolean;
  /** fcntl F_SETLEASE (F_RDLCK, F_WRLCK or F_UNLCK). */
  setLease(fd: number, type: number): void;
  /** fcntl F_GETLEASE; returns F_RDLCK, F_WRLCK or F_UNLCK. */
  getLease(fd: number): number;
  /**
   * fstat the file into `out` (at least 24 bytes: ctime seconds, ctime nanoseconds, size, each an
   * int64) and return true. With `noWriters`, then take a read lease and drop it at once: false
   * when anyone has the file open for writing (or the filesystem refuses leases), so that no
   * write was in progress after the stamp. Also false for a file that is not regular.
   */
  changeStamp(fd: number, out: Buffer, noWriters: boolean): boolean;
  /** close(2); EINTR is ignored. */
  close(fd: number): void;
  /** Platform constants. */
  readonly constants: NativeConstants;
}

/** True when e is an Error carrying the errno properties the addon sets. */
export function isNativeError(e: unknown): e is NativeError {
  return (
    e instanceof Error &&
    typeof (e as Partial<NativeError>).code === 'string' &&
    typeof (e as Partial<NativeError>).errno === 'number' &&
    typeof (e as Partial<NativeError>).syscall === 'string'
  );
}

function load(): NativeAddon {
  // Compiled to dist/src/native.js: the package root is two levels up.
  const addonPath = fileURLToPath(new URL('../../build/Release/fanotify.node', import.meta.url));
  try {
    return createRequire(import.meta.url)(addonPath) as NativeAddon;
  } catch (cause) {
    const detail = cause instanceof Error ? cause.message : String(cause);
    throw new Error(
      `fanotify: the native addon is not built (${addonPath}); run \`npm ci\` in the package directory (or \`npm run install\` / \`npx node-gyp rebuild\` to rebuild only the addon). Original error: ${detail}`,
      { cause },
    );
  }
}

/** The loaded addon. */
export const native: NativeAddon = load();
