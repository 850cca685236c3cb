/**
 * Decoded fanotify event types: a discriminated union on `type`.
 * @packageDocumentation
 */
import type { FileId } from './fileid.js';
import type { EventName, NotifyEventName, PermissionEventName } from './names.js';

/** A directory entry: the directory's id and the entry's name (`.` for the directory itself). */
export interface DirEntryRef {
  readonly dir: FileId;
  readonly name: string;
}

/** Fields every decoded event has. */
export interface EventBase {
  /** The raw mask, including every merged bit and the ONDIR / EVENT_ON_CHILD flags. */
  readonly mask: number;
  /** Every event bit in `mask`, by name. The kernel merges several into one event. */
  readonly names: readonly EventName[];
  /** The pid (or tid with `reportTid`) that caused the event; 0 when unknown. */
  readonly pid: number;
  /**
   * The event's open file descriptor, -1 when the group reports ids instead, or a negative
   * errno with `reportFdError`. Owned by the group until the event is handled.
   */
  readonly fd: number;
  /** The event happened on a directory (FAN_ONDIR). */
  readonly isDir: boolean;
  /** FID record: the object itself. */
  readonly fid?: FileId;
  /** DFID record: the parent directory, without a name. */
  readonly dfid?: FileId;
  /** DFID_NAME record: the parent directory and the entry name. */
  readonly entry?: DirEntryRef;
  /** PIDFD record: a pidfd of the process (-2 when the kernel failed to make one). */
  readonly pidfd?: number;
  /** MNT record: the mount id. */
  readonly mntId?: number;
}

/** A notification event: no verdict is owed. Several bits may be merged into one. */
export interface NotifyEvent extends EventBase {
  /** The first name in `names` (see EVENT_BITS order), or `unknown` for bits we don't name. */
  readonly type: NotifyEventName | 'unknown';
}

/** FAN_RENAME: one event with both the old and the new directory entry. */
export interface RenameEvent extends EventBase {
  readonly type: 'rename';
  readonly from?: DirEntryRef;
  readonly to?: DirEntryRef;
}

/** A byte range of a pre-content access (RANGE record). */
export interface ByteRange {
  readonly offset: number;
  readonly count: number;
}

/** An event that blocks the accessing process until it is answered. */
export interface PermissionEventData extends EventBase {
  readonly type: PermissionEventName;
  /** For `preAccess`: the range about to be read or written. */
  readonly range?: ByteRange;
}

/** The kernel's queue overflowed: events were lost. */
export interface OverflowEvent extends EventBase {
  readonly type: 'overflow';
}

/** FAN_FS_ERROR: a filesystem reported an error. */
export interface FsErrorEvent extends EventBase {
  readonly type: 'fsError';
  /** The first error's errno. */
  readonly error: number;
  /** How many errors happened since the last report. */
  readonly errorCount: number;
}

/** FAN_MNT_ATTACH / FAN_MNT_DETACH on a mount namespace mark. */
export interface MountEvent extends EventBase {
  readonly type: 'mountAttach' | 'mountDetach';
}

/** Any decoded event. */
export type DecodedEvent =
  | NotifyEvent
  | RenameEvent
  | PermissionEventData
  | OverflowEvent
  | FsErrorEvent
  | MountEvent;

/** Malformed bytes from a read() batch. Carries the offset where decoding stopped. */
export class DecodeError extends Error {
  override readonly name = 'DecodeError';
  constructor(
    message: string,
    /** Byte offset in the batch of the event or record at fault. */
    readonly offset: number,
  ) {
    super(`malformed fanotify event at byte ${offset}: ${message}`);
  }
}
