/**
 * Errors a user can hit, each naming what went wrong and what to do.
 * @packageDocumentation
 */
import { release } from 'node:os';
import { InitFlag, EventBit, FsMagic } from './kernel/constants.js';

/** An fanotify failure with the errno `code`, the `syscall`, and a `hint` saying what to do. */
export class FanotifyError extends Error {
  override readonly name = 'FanotifyError';
  constructor(
    message: string,
    /** errno name such as EPERM, or a code of ours such as ENOTSUP_FS. */
    readonly code: string,
    /** The syscall that failed, when one did. */
    readonly syscall?: string,
    /** The errno number, when a syscall failed. */
    readonly errno?: number,
  ) {
    super(message);
  }
}

/** The running kernel's version as [major, minor]. */
export function kernelVersion(text = release()): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

function atLeast(major: number, minor: number): boolean {
  const [a, b] = kernelVersion();
  return a > major || (a === major && b >= minor);
}

/** Kernel versions that introduced each init flag, newest first so the first miss is named. */
const INIT_FLAG_VERSIONS: [number, string, number, number][] = [
  [InitFlag.REPORT_MNT, 'FAN_REPORT_MNT', 6, 14],
  [InitFlag.CLASS_PRE_CONTENT, 'FAN_CLASS_PRE_CONTENT with FAN_PRE_ACCESS', 6, 14],
  [InitFlag.REPORT_FD_ERROR, 'FAN_REPORT_FD_ERROR', 6, 13],
  [InitFlag.REPORT_TARGET_FID, 'FAN_REPORT_TARGET_FID', 5, 17],
  [InitFlag.REPORT_PIDFD, 'FAN_REPORT_PIDFD', 5, 15],
  [InitFlag.REPORT_DIR_FID | InitFlag.REPORT_NAME, 'FAN_REPORT_DIR_FID / FAN_REPORT_NAME', 5, 9],
  [InitFlag.REPORT_FID, 'FAN_REPORT_FID', 5, 1],
];

/** Filesystem magic numbers (statfs f_type) to names, for messages. */
const FS_NAMES: Record<number, string> = {
  [FsMagic.EXT4]: 'ext4',
  [FsMagic.XFS]: 'xfs',
  [FsMagic.BTRFS]: 'btrfs',
  [FsMagic.TMPFS]: 'tmpfs',
  0x794c7630: 'overlayfs',
  0x65735546: 'fuse',
  0x9fa0: 'proc',
  0x62656572: 'sysfs',
  0x6969: 'nfs',
  0x2fc12fc1: 'zfs',
  0x73717368: 'squashfs',
  0xe0f5e1e2: 'erofs',
  0x4d44: 'vfat',
  0x5346544e: 'ntfs',
  0x858458f6: 'ramfs',
  0x63677270: 'cgroup2',
};

/** A readable name for a statfs f_type. */
export function fsTypeName(type: number): string {
  return FS_NAMES[type] ?? `filesystem type 0x${type.toString(16)}`;
}

function errnoOf(err: unknown): { code: string; errno?: number; message: string } {
  const e = err as { code?: unknown; errno?: unknown; message?: unknown };
  return {
    code: typeof e?.code === 'string' ? e.code : 'EUNKNOWN',
    errno: typeof e?.errno === 'number' ? e.errno : undefined,
    message: typeof e?.message === 'string' ? e.message : String(err),
  };
}

/** Translate a failed fanotify_init into an error that says what to do. */
export function explainInitError(err: unknown, flags: number): FanotifyError {
  const { code, errno } = errnoOf(err);
  const classBits = flags & (InitFlag.CLASS_CONTENT | InitFlag.CLASS_PRE_CONTENT);
  let msg: string;
  if (code === 'EPERM') {
    msg =
      'fanotify_init: needs CAP_SYS_ADMIN: run as root. Without it, a group must report file ids ' +
      '(reportFid), may place inode marks only, and gets no permission events.';
  } else if (code === 'EINVAL') {
    if (classBits === InitFlag.CLASS_PRE_CONTENT && flags & (InitFlag.REPORT_FID | InitFlag.REPORT_DIR_FID)) {
      msg = 'fanotify_init: a pre-content group cannot report file ids (FAN_REPORT_FID/DIR_FID); its events carry fds';
    } else if (flags & InitFlag.REPORT_PIDFD && flags & InitFlag.REPORT_TID) {
      msg = 'fanotify_init: reportPidfd and reportTid cannot be combined';
    } else if (flags & InitFlag.REPORT_NAME && !(flags & InitFlag.REPORT_DIR_FID)) {
      msg = 'fanotify_init: reportName needs reportDirFid';
    } else {
      const missing = INIT_FLAG_VERSIONS.find(([bit, , maj, min]) => (flags & bit) === bit && !atLeast(maj, min));
      msg = missing
        ? `fanotify_init: kernel ${missing[2]}.${missing[3]}+ required for ${missing[1]}; this is ${release()}`
        : `fanotify_init: the kernel rejected flags 0x${flags.toString(16)} (EINVAL)`;
    }
  } else if (code === 'EMFILE') {
    msg = 'fanotify_init: too many fanotify groups for this user (/proc/sys/fs/fanotify/max_user_groups) or open files';
  } else if (code === 'ENOSYS') {
    msg = 'fanotify_init: this kernel was built without fanotify (CONFIG_FANOTIFY)';
  } else {
    msg = `fanotify_init failed: ${errnoOf(err).message}`;
  }
  return new FanotifyError(msg, code, 'fanotify_init', errno);
}

/** Context of a failed mark, for {@link explainMarkError}. */
export interface MarkContext {
  readonly path: string;
  readonly kind: string;
  readonly mask: number;
  readonly groupFlags: number;
  /** statfs f_type of the path, when it could be read. */
  readonly fsType?: number;
}

const DIRENT_BITS =
  EventBit.CREATE | EventBit.DELETE | EventBit.MOVED_FROM | EventBit.MOVED_TO | EventBit.RENAME |
  EventBit.ATTRIB | EventBit.DELETE_SELF | EventBit.MOVE_SELF;
const PERM_BITS = EventBit.OPEN_PERM | EventBit.ACCESS_PERM | EventBit.OPEN_EXEC_PERM;

/** Translate a failed fanotify_mark into an error that says what to do. */
export function explainMarkError(err: unknown, ctx: MarkContext): FanotifyError {
  const { code, errno, message } = errnoOf(err);
  const where = `${ctx.kind} mark on ${ctx.path}`;
  const fs = ctx.fsType === undefined ? 'its filesystem' : fsTypeName(ctx.fsType);
  let msg: string;
  switch (code) {
    case 'ENOENT':
      msg = `fanotify_mark: ${ctx.path} does not exist`;
      break;
    case 'ENOTDIR':
      msg = `fanotify_mark: ${ctx.path} is not a directory (onlyDir was asked)`;
      break;
    case 'EPERM':
    case 'EACCES':
      msg = `fanotify_mark: ${where} needs CAP_SYS_ADMIN: run as root (unprivileged groups may place inode marks only)`;
      break;
    case 'EOPNOTSUPP':
      msg =
        ctx.mask & EventBit.PRE_ACCESS
          ? `fanotify_mark: ext4/xfs/btrfs required for pre-content marks; ${ctx.path} is ${fs}`
          : `fanotify_mark: ${fs} at ${ctx.path} does not support the requested events`;
      break;
    case 'EXDEV':
      msg =
        `fanotify_mark: ${ctx.path} is on ${fs}, whose objects cannot be reported by file id here ` +
        '(a btrfs subvolume or an overlay/FUSE mount): mark its own mount point, or use a group without reportFid';
      break;
    case 'ENODEV':
      msg = `fanotify_mark: ${fs} at ${ctx.path} has no filesystem id, so id-reporting groups cannot mark it`;
      break;
    case 'ENOSPC':
      msg = 'fanotify_mark: too many marks: raise /proc/sys/fs/fanotify/max_user_marks or open the group with unlimitedMarks';
      break;
    case 'EINVAL':
      if (ctx.kind === 'mount' && ctx.mask & DIRENT_BITS) {
        msg = `fanotify_mark: a mount mark cannot take create/delete/move/rename/attrib/self events (${ctx.path}); use a filesystem mark`;
      } else if (ctx.mask & EventBit.PRE_ACCESS && !atLeast(6, 14)) {
        msg = `fanotify_mark: kernel 6.14+ required for FAN_PRE_ACCESS; this is ${release()}`;
      } else if (ctx.mask & (PERM_BITS | EventBit.PRE_ACCESS) && (ctx.groupFlags & 0xc) === 0) {
        msg = `fanotify_mark: permission events need a group of class 'content' or 'preContent' (${where})`;
      } else if (ctx.mask & EventBit.PRE_ACCESS && (ctx.groupFlags & 0xc) !== InitFlag.CLASS_PRE_CONTENT) {
        msg = `fanotify_mark: preAccess events need a group of class 'preContent' (${where})`;
      } else {
        msg = `fanotify_mark: the kernel rejected the ${where} with mask 0x${ctx.mask.toString(16)} (EINVAL)`;
      }
      break;
    default:
      msg = `fanotify_mark: ${where} failed: ${message}`;
  }
  return new FanotifyError(msg, code, 'fanotify_mark', errno);
}
