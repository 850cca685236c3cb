/**
 * Public types of the watch service.
 * @packageDocumentation
 */
import type { FileId } from '../kernel/fileid.js';

/** Why a subscriber must rescan: its view of the tree may be wrong. */
export type RescanReason =
  /** The kernel queue overflowed: events were lost. */
  | 'overflow'
  /** The watched root itself was renamed or moved away. */
  | 'root-moved'
  /** The watched root was deleted. */
  | 'root-deleted'
  /** The root's filesystem was unmounted. */
  | 'unmounted';

/** A change under a watched root. Paths are absolute. */
export type WatchEvent =
  | {
      readonly type: 'create' | 'update' | 'delete';
      readonly path: string;
      readonly isDir: boolean;
      readonly time: number;
      /**
       * On `update`: only metadata changed (mode, owner, times, link count: FAN_ATTRIB without a
       * write), within the whole batch. Absent otherwise.
       */
      readonly attribOnly?: true;
      /** The kernel's id of the object now at `path`: only with {@link WatchOptions.fileIds}. */
      readonly fileId?: FileId;
    }
  | {
      readonly type: 'rename';
      /** The new path. */
      readonly path: string;
      readonly oldPath: string;
      readonly isDir: boolean;
      readonly time: number;
      /** The kernel's id of the moved object: only with {@link WatchOptions.fileIds}. */
      readonly fileId?: FileId;
    }
  | {
      readonly type: 'rescan';
      /** The root to rescan. */
      readonly path: string;
      readonly reason: RescanReason;
      readonly isDir: true;
      readonly time: number;
    }
  | { readonly type: 'error'; readonly path: string; readonly error: Error; readonly isDir: boolean; readonly time: number };

/** The kind of every {@link WatchEvent}. */
export type WatchEventType = WatchEvent['type'];

/**
 * How events are obtained.
 * - `fanotify`: one filesystem mark per filesystem (needs CAP_SYS_ADMIN); O(1) setup.
 * - `fanotify-inode`: unprivileged fanotify inode marks, one per directory (Linux 5.13+).
 * - `daemon`: subscribe through a `fan serve` daemon's unix socket ($FAN_SOCKET, default
 *   /run/fanotify/fan.sock), which watches with its own filesystem mark.
 * - `auto`: `fanotify` when permitted, else `daemon` when its socket exists, else `fanotify-inode`.
 */
export type WatchBackend = 'auto' | 'fanotify' | 'fanotify-inode' | 'daemon';

/** Options of `watch()`. */
export interface WatchOptions {
  /**
   * Paths or picomatch globs, relative to the root, whose events are not reported. A plain path
   * ignores everything below it too; a glob matching a directory ignores its contents.
   */
  readonly ignore?: readonly string[];
  /** Batching window in ms: events are coalesced per path within it. Default 30. */
  readonly debounceMs?: number;
  /** Which mechanism to use. Default `auto`. */
  readonly backend?: WatchBackend | string;
  /**
   * After an overflow, crawl the tree, diff it against the last known state and emit the
   * differences (after the `rescan` event). Keeps a snapshot of the tree in memory. Default false.
   */
  readonly autoRescan?: boolean;
  /**
   * Deliver the current batch at once, without waiting for the batching window, when an event
   * matches: for sync markers such as the journal's cookie files.
   */
  readonly flushWhen?: (event: WatchEvent) => boolean;
  /**
   * Let the kernel queue grow without limit (FAN_UNLIMITED_QUEUE; the `fanotify` backend only):
   * no overflow, hence no rescan, however far the reader falls behind, at the cost of kernel
   * memory while it does. For recorders that must not lose a change, such as the journal.
   * Default false: the queue holds /proc/sys/fs/fanotify/max_queued_events events.
   */
  readonly unlimitedQueue?: boolean;
  /**
   * Coalesce changes per path within a batch (default true). False: every change as it was
   * reported, in order, for consumers that check each one against the disk themselves (the
   * journal): coalescing has to assume things about paths it saw no event for.
   */
  readonly coalesce?: boolean;
  /**
   * Internal, for `fan serve`'s id table: give `create`, `update` and `rename` events the file
   * id (fsid + file handle) the kernel reported for their object, as `fileId`, so a consumer that
   * identifies objects need not ask the filesystem again (`lstat`, `name_to_handle_at`) what a
   * new path holds. Events that carried none (crawled entries, a create merged with its delete,
   * the `daemon` backend) have no `fileId`. Default false: events have no such field.
   * @internal
   */
  readonly fileIds?: boolean;
}

/** What a subscription says once it is live. */
export interface ReadyInfo {
  /** The watched roots (absolute, resolved). */
  readonly roots: readonly string[];
  /** The mechanism in use. */
  readonly backend: Exclude<WatchBackend, 'auto'>;
  /** Milliseconds from the call to the moment events are being captured. */
  readonly readyMs: number;
}
