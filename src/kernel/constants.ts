/**
 * The fanotify uapi of Linux 6.18 (include/uapi/linux/fanotify.h), as plain numbers.
 *
 * Everything here is a value the kernel defines; nothing is ours. Names keep the kernel's
 * spelling without the `FAN_` prefix so a reader can grep the header.
 * @packageDocumentation
 */

/** Event bits of `fanotify_event_metadata.mask` and of mark masks. */
export const EventBit = {
  ACCESS: 0x1,
  MODIFY: 0x2,
  ATTRIB: 0x4,
  CLOSE_WRITE: 0x8,
  CLOSE_NOWRITE: 0x10,
  OPEN: 0x20,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  OPEN_EXEC: 0x1000,
  Q_OVERFLOW: 0x4000,
  FS_ERROR: 0x8000,
  OPEN_PERM: 0x10000,
  ACCESS_PERM: 0x20000,
  OPEN_EXEC_PERM: 0x40000,
  PRE_ACCESS: 0x100000,
  MNT_ATTACH: 0x1000000,
  MNT_DETACH: 0x2000000,
  EVENT_ON_CHILD: 0x8000000,
  RENAME: 0x10000000,
  ONDIR: 0x40000000,
} as const;

/** Event bits that need a response from the listener. */
export const PERMISSION_BITS =
  EventBit.OPEN_PERM | EventBit.ACCESS_PERM | EventBit.OPEN_EXEC_PERM | EventBit.PRE_ACCESS;

/** Flags of `fanotify_init(flags, …)`. */
export const InitFlag = {
  CLOEXEC: 0x1,
  NONBLOCK: 0x2,
  CLASS_NOTIF: 0x0,
  CLASS_CONTENT: 0x4,
  CLASS_PRE_CONTENT: 0x8,
  UNLIMITED_QUEUE: 0x10,
  UNLIMITED_MARKS: 0x20,
  ENABLE_AUDIT: 0x40,
  REPORT_PIDFD: 0x80,
  REPORT_TID: 0x100,
  REPORT_FID: 0x200,
  REPORT_DIR_FID: 0x400,
  REPORT_NAME: 0x800,
  REPORT_TARGET_FID: 0x1000,
  REPORT_FD_ERROR: 0x2000,
  REPORT_MNT: 0x4000,
} as const;

/** `FAN_REPORT_DFID_NAME`: parent directory id plus entry name. */
export const REPORT_DFID_NAME = InitFlag.REPORT_DIR_FID | InitFlag.REPORT_NAME;
/** `FAN_REPORT_DFID_NAME_TARGET`: parent id, name, and the id of the object itself. */
export const REPORT_DFID_NAME_TARGET =
  REPORT_DFID_NAME | InitFlag.REPORT_FID | InitFlag.REPORT_TARGET_FID;

/** Flags of `fanotify_mark(fd, flags, …)`. */
export const MarkFlag = {
  ADD: 0x1,
  REMOVE: 0x2,
  DONT_FOLLOW: 0x4,
  ONLYDIR: 0x8,
  MOUNT: 0x10,
  IGNORED_MASK: 0x20,
  IGNORED_SURV_MODIFY: 0x40,
  FLUSH: 0x80,
  FILESYSTEM: 0x100,
  EVICTABLE: 0x200,
  IGNORE: 0x400,
  INODE: 0x0,
  MNTNS: 0x110,
} as const;

/** `FAN_MARK_IGNORE_SURV`: an ignore mark that survives modification. */
export const MARK_IGNORE_SURV = MarkFlag.IGNORE | MarkFlag.IGNORED_SURV_MODIFY;

/** Info record types that follow the event metadata. */
export const InfoType = {
  FID: 1,
  DFID_NAME: 2,
  DFID: 3,
  PIDFD: 4,
  ERROR: 5,
  RANGE: 6,
  MNT: 7,
  OLD_DFID_NAME: 10,
  NEW_DFID_NAME: 12,
} as const;

/** Response bits written back for permission events. */
export const Response = {
  ALLOW: 0x1,
  DENY: 0x2,
  AUDIT: 0x10,
  INFO: 0x20,
} as const;

/** Response info record type for `FAN_INFO` responses. */
export const RESPONSE_INFO_AUDIT_RULE = 1;

/** `FANOTIFY_METADATA_VERSION`. */
export const METADATA_VERSION = 3;
/** `sizeof(struct fanotify_event_metadata)`. */
export const METADATA_LEN = 24;
/** `FAN_NOFD`: the event carries no file descriptor. */
export const NOFD = -1;
/** `FAN_EPIDFD`: the kernel failed to create a pidfd for the event. */
export const EPIDFD = -2;
/** Bit position of the errno inside a `FAN_DENY_ERRNO` response. */
export const ERRNO_SHIFT = 24;
/** Mask of the errno inside a `FAN_DENY_ERRNO` response. */
export const ERRNO_MASK = 0xff;

/**
 * The errnos a pre-content group may return through `FAN_DENY_ERRNO`; the kernel refuses
 * any other with EINVAL.
 */
export const DENY_ERRNOS = {
  EPERM: 1,
  EIO: 5,
  EAGAIN: 11,
  EBUSY: 16,
  ETXTBSY: 26,
  ENOSPC: 28,
  EDQUOT: 122,
} as const;

/** An errno name accepted by `FAN_DENY_ERRNO`. */
export type DenyErrno = keyof typeof DENY_ERRNOS;

/** Filesystem magic numbers (statfs f_type, linux/magic.h) of the filesystems we treat apart. */
export const FsMagic = {
  /** ext2, ext3 and ext4 share it. */
  EXT4: 0xef53,
  XFS: 0x58465342,
  BTRFS: 0x9123683e,
  TMPFS: 0x01021994,
} as const;
