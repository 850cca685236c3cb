/**
 * The mount table, keyed by filesystem id, so a file handle can be opened on its filesystem.
 * @packageDocumentation
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import { native } from '../native.js';

/** One line of /proc/self/mountinfo. */
export interface MountInfo {
  readonly mountId: number;
  readonly parentId: number;
  /** The path inside its filesystem that is mounted here (`/` for a whole filesystem). */
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
}

/** Filesystem types that hold no user files and are never worth tracing. */
export const PSEUDO_FILESYSTEMS: ReadonlySet<string> = new Set([
  'proc', 'sysfs', 'cgroup', 'cgroup2', 'devpts', 'mqueue', 'debugfs', 'tracefs', 'securityfs',
  'pstore', 'bpf', 'configfs', 'fusectl', 'hugetlbfs', 'autofs', 'binfmt_misc', 'rpc_pipefs',
  'nsfs', 'efivarfs', 'selinuxfs', 'devtmpfs', 'ramfs', 'nfsd', 'rootfs',
]);

/** Undo the octal escapes (\040 for space…) of /proc mount files. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parse /proc/PID/mountinfo text. Malformed lines are skipped. */
export function parseMountInfo(text: string): MountInfo[] {
  const mounts: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    if (left.length < 5 || right.length < 2) continue;
    mounts.push({
      mountId: Number(left[0]),
      parentId: Number(left[1]),
      root: unescape(left[3]!),
      mountPoint: unescape(left[4]!),
      fsType: right[0]!,
      source: unescape(right[1]!),
    });
  }
  return mounts;
}

/** A filesystem as seen through one of its mounts. */
export interface FilesystemEntry {
  /** 16 hex digits, as in FID records. */
  readonly fsid: string;
  /** statfs f_type. */
  readonly type: number;
  /** The mount used to open handles: the one showing the filesystem's root, shortest path first. */
  readonly mount: MountInfo;
}

/**
 * O_RDONLY | O_DIRECTORY | O_CLOEXEC. open_by_handle_at refuses an O_PATH anchor (EBADF), so
 * the anchor is a real open of the mount point: one event, from our own pid, filtered.
 */
const ANCHOR_FLAGS = 0o200000 | 0o2000000;

/**
 * Filesystems by fsid, and anchors on them for open_by_handle_at. The table reloads itself when
 * asked for an fsid it does not know (a mount appeared).
 *
 * Anchors are opened per lookup and closed at once: an fd held open on a mount point would make
 * `umount` of a watched filesystem fail with EBUSY. Lookups happen on cache misses only.
 */
export class MountTable {
  #byFsid = new Map<string, FilesystemEntry>();
  #loadedAt = 0;

  constructor(private readonly mountInfoPath = '/proc/self/mountinfo') {
    this.reload();
  }

  /** Every filesystem found, one entry per fsid. */
  get filesystems(): FilesystemEntry[] {
    return [...this.#byFsid.values()];
  }

  /** Re-read the mount table. Anchors of filesystems that went away are closed. */
  reload(): void {
    const mounts = parseMountInfo(readFileSync(this.mountInfoPath, 'utf8'));
    const next = new Map<string, FilesystemEntry>();
    for (const mount of mounts) {
      let id: { fsid: Buffer; type: number };
      try {
        id = native.fsid(mount.mountPoint);
      } catch {
        continue; // Not reachable from here (another namespace, permission): not ours to resolve.
      }
      const fsid = id.fsid.toString('hex');
      const seen = next.get(fsid);
      if (!seen || better(mount, seen.mount)) next.set(fsid, { fsid, type: id.type, mount });
    }
    this.#byFsid = next;
    this.#loadedAt = Date.now();
  }

  /** The filesystem with this fsid, reloading (at most every 100 ms) when it is unknown. */
  get(fsid: string): FilesystemEntry | undefined {
    let entry = this.#byFsid.get(fsid);
    if (!entry && Date.now() - this.#loadedAt > 100) {
      this.reload();
      entry = this.#byFsid.get(fsid);
    }
    return entry;
  }

  /** The filesystem a path lives on. */
  forPath(path: string): FilesystemEntry | undefined {
    return this.get(native.fsid(path).fsid.toString('hex'));
  }

  /**
   * Run `fn` with an fd on the filesystem for open_by_handle_at.
   * @returns fn's result, or undefined when the fsid is unknown or its mount point cannot be opened.
   */
  withAnchor<T>(fsid: string, fn: (anchorFd: number) => T): T | undefined {
    const entry = this.get(fsid);
    if (!entry) return undefined;
    let fd: number;
    try {
      fd = openSync(entry.mount.mountPoint, ANCHOR_FLAGS);
    } catch {
      return undefined; // Unmounted or hidden since the table was read.
    }
    try {
      return fn(fd);
    } finally {
      closeSync(fd);
    }
  }
}

/** Prefer the mount that shows the whole filesystem, then the shortest mount point. */
function better(a: MountInfo, b: MountInfo): boolean {
  if ((a.root === '/') !== (b.root === '/')) return a.root === '/';
  return a.mountPoint.length < b.mountPoint.length;
}
