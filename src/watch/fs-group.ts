/**
 * The privileged backend: one fanotify group and one filesystem mark per filesystem, shared by
 * every root watched on it in this process.
 * @packageDocumentation
 */
import { FanotifyGroup, type GroupEvent } from '../group.js';
import type { EventName } from '../kernel/names.js';
import { EventBit } from '../kernel/constants.js';
import { PathResolver } from '../resolve/paths.js';
import { MountTable } from '../resolve/mounts.js';
import { LruMap } from '../resolve/lru.js';
import { isUnder } from '../resolve/paths.js';
import type { RootWatch } from './root.js';

/** The events a watcher needs. `rename` carries both sides; ONDIR is added by the mark. */
export const WATCH_EVENTS: readonly EventName[] = [
  'create', 'delete', 'modify', 'closeWrite', 'attrib', 'rename', 'moveSelf', 'deleteSelf',
];

/** A subscriber of a filesystem group: its roots, and where overflows go. */
export interface FsSubscriber {
  readonly roots: readonly RootWatch[];
  overflow(): void;
  error(path: string, err: Error): void;
}

const SELF_BITS = EventBit.DELETE_SELF | EventBit.MOVE_SELF;
const groups = new Map<string, FilesystemGroup>();
let sharedMounts: MountTable | undefined;

/** One kernel group watching one whole filesystem. */
export class FilesystemGroup {
  readonly #group: FanotifyGroup;
  readonly #resolver: PathResolver;
  readonly #subscribers = new Set<FsSubscriber>();
  /** Directories that carry our ignore mark, by path (evictable: the kernel may drop it). */
  readonly #ignored = new LruMap<string, true>(4096);
  /** Events of the read batch being received. */
  readonly #batch: GroupEvent[] = [];

  private constructor(
    readonly fsid: string,
    /** Key in the per-process group table. */
    readonly key: string,
    mountPoint: string,
    mounts: MountTable,
    unlimitedQueue: boolean,
  ) {
    // Our own process's changes are changes too (a dev server writing files); the watch events
    // include nothing our resolver does (O_PATH opens raise none).
    this.#group = FanotifyGroup.open({ report: ['dfidNameTarget'], ignorePids: [], batchDelayMs: 1, unlimitedQueue });
    try {
      this.#group.mark(mountPoint, { kind: 'filesystem', events: WATCH_EVENTS, onDir: true });
    } catch (err) {
      void this.#group.close();
      throw err;
    }
    this.#resolver = new PathResolver({ mounts });
    // Events are resolved a read batch at a time: see PathResolver.resolveAll.
    this.#group.listen((ev) => void this.#batch.push(ev), {
      onBatchEnd: () => this.#dispatch(this.#batch.splice(0)),
      onError: (err) => {
        const error = err instanceof Error ? err : new Error(String(err));
        for (const s of this.#subscribers) for (const r of s.roots) s.error(r.root, error);
      },
    });
  }

  /**
   * The group of the filesystem holding `path`, created on first use; subscribers that want an
   * unlimited queue get a group of their own.
   * @throws FanotifyError without CAP_SYS_ADMIN or on a filesystem without file handles.
   */
  static forPath(path: string, unlimitedQueue = false): FilesystemGroup {
    const mounts = (sharedMounts ??= new MountTable());
    let fs = mounts.forPath(path);
    if (!fs) {
      mounts.reload();
      fs = mounts.forPath(path);
    }
    if (!fs) throw new Error(`watch: ${path} is on no filesystem listed in /proc/self/mountinfo`);
    const key = unlimitedQueue ? `${fs.fsid}:unlimited` : fs.fsid;
    let g = groups.get(key);
    if (!g) {
      g = new FilesystemGroup(fs.fsid, key, fs.mount.mountPoint, mounts, unlimitedQueue);
      groups.set(key, g);
    }
    return g;
  }

  /** Resolver of this filesystem's events (shared by its roots). */
  get resolver(): PathResolver {
    return this.#resolver;
  }

  /** Add a subscriber; ignore marks that would hide what it wants are removed. */
  add(sub: FsSubscriber): void {
    this.#subscribers.add(sub);
    for (const [dir] of [...this.#ignored.entries()]) {
      if (sub.roots.some((r) => isUnder(dir, r.root) && !r.ignore.ignores(dir))) this.#unignore(dir);
    }
  }

  /** Remove a subscriber; the group closes with its last one. */
  remove(sub: FsSubscriber): void {
    this.#subscribers.delete(sub);
    if (this.#subscribers.size === 0) {
      groups.delete(this.key);
      void this.#group.close();
      this.#resolver.close();
    }
  }

  /**
   * Stop the kernel reporting a directory's events (an evictable inode ignore mark for its
   * own events and its children's), unless some root still wants them.
   */
  ignoreDirectory(dir: string): void {
    if (this.#ignored.get(dir) || this.#wanted(dir)) return;
    this.#ignored.set(dir, true);
    try {
      this.#group.mark(dir, {
        events: WATCH_EVENTS,
        ignore: true,
        surviveModify: true,
        evictable: true,
        onDir: true,
        onChild: true,
        dontFollow: true,
      });
    } catch {
      // Gone already, or not a directory any more: nothing to silence.
    }
  }

  /** Some root wants the events of this directory. */
  #wanted(dir: string): boolean {
    for (const s of this.#subscribers) {
      for (const r of s.roots) if (isUnder(dir, r.root) && !r.ignore.ignores(dir)) return true;
    }
    return false;
  }

  /** Remove our ignore mark from a directory. */
  #unignore(dir: string): void {
    this.#ignored.delete(dir);
    try {
      this.#group.unmark(dir, { events: WATCH_EVENTS, ignore: true, onDir: true, onChild: true, dontFollow: true });
    } catch {
      // Gone, or the kernel evicted the mark already.
    }
  }

  /** A directory moved: ignore marks below it moved with it, and may now hide wanted events. */
  #dirRenamed(from: string, to: string): void {
    for (const [dir] of [...this.#ignored.entries()]) {
      if (!isUnder(dir, from)) continue;
      const now = to + dir.slice(from.length);
      this.#ignored.delete(dir);
      if (this.#wanted(now)) this.#unignore(now);
      else this.#ignored.set(now, true);
    }
  }

  #dispatch(events: GroupEvent[]): void {
    // A watcher never reports an event on an object itself (delete_self, move_self): only the
    // root's are used, and those are matched by id. Resolving them costs a handle open per miss.
    const paths = this.#resolver.resolveAll(events, (ev) => (ev.mask & SELF_BITS) === 0);
    const time = Date.now();
    for (let i = 0; i < events.length; i++) {
      const ev = events[i]!;
      if (ev.type === 'overflow') {
        for (const s of this.#subscribers) s.overflow();
        continue;
      }
      const p = paths[i]!;
      if (ev.type === 'rename' && ev.isDir && p.oldPath !== undefined && p.path !== undefined) this.#dirRenamed(p.oldPath, p.path);
      for (const s of this.#subscribers) for (const r of s.roots) r.handle(ev, p, time);
    }
  }
}
