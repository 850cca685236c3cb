/**
 * Event → path: directory handles through an LRU cache, entries as parent path + name, so
 * deleted files keep their path.
 * @packageDocumentation
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { native, isNativeError } from '../native.js';
import type { DecodedEvent } from '../kernel/events.js';
import type { FileId } from '../kernel/fileid.js';
import { EventBit } from '../kernel/constants.js';
import { MountTable } from './mounts.js';
import { LruMap } from './lru.js';

/** The paths of one event. */
export interface ResolvedPaths {
  /** The object's path (for a rename: the new path). Undefined when it cannot be named. */
  readonly path?: string;
  /** For a rename: the old path. */
  readonly oldPath?: string;
  /** The object no longer exists (its handle is stale); `path` may still name where it was. */
  readonly gone?: boolean;
  /**
   * For a rename: the object is back at `oldPath` already. The kernel merges a rename into an
   * identical one still queued, so in A→B, B→A, A→B the last has no event of its own; this says
   * that it happened.
   */
  readonly movedBack?: boolean;
}

/** Why a handle did not resolve. */
export type HandleMiss = 'gone' | 'unknown-filesystem' | 'error';

const O_PATH_CLOEXEC = 0o10000000 | 0o2000000;
const NOT_WANTED: ResolvedPaths = Object.freeze({});
const DELETED_SUFFIX = ' (deleted)';

/** Whether anything (a file, a directory, a dangling symlink) is at `path` now. */
export function entryExists(path: string): boolean {
  try {
    return lstatSync(path, { throwIfNoEntry: false }) !== undefined;
  } catch {
    return false;
  }
}

/** True when a lookup produced a path rather than a {@link HandleMiss}. */
function isPath(p: string): boolean {
  return p.charCodeAt(0) === 47; /* / */
}

/** Join a directory path and an entry name without doubling the root slash. */
export function joinPath(dir: string, name: string): string {
  if (name === '.' || name === '') return dir;
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** True when `path` is `prefix` or below it. */
export function isUnder(path: string, prefix: string): boolean {
  if (prefix === '/') return path.startsWith('/');
  return path === prefix || (path.startsWith(prefix) && path.charCodeAt(prefix.length) === 47 /* / */);
}

/** Options of {@link PathResolver}. */
export interface PathResolverOptions {
  /** Directory handles kept. Default 16384. */
  readonly cacheSize?: number;
  /**
   * File handles kept (for events that name a file only by its handle: modify, close_write,
   * attrib). Default 65536: a miss costs an open_by_handle_at and a readlink, and a churning
   * working set of tens of thousands of files is common (builds, the journal's benchmark).
   */
  readonly fileCacheSize?: number;
  /** A mount table to share. Default: a new one. */
  readonly mounts?: MountTable;
}

/**
 * Resolves events to paths. Feed it every event in order through {@link resolve}: directory
 * renames and deletes update the cache before later events are resolved.
 */
export class PathResolver {
  readonly mounts: MountTable;
  /** Directory handle key → path. Handles of deleted directories stay: they are never reused. */
  readonly #dirs: LruMap<string, string>;
  /**
   * File handle key → last known path, from events that carry both the file's id and its
   * entry, so id-only events of a file already unlinked (attrib, deleteSelf) keep a path.
   */
  readonly #files: LruMap<string, string>;
  /** Counters, for benchmarks and diagnostics. */
  readonly stats = { hits: 0, misses: 0, gone: 0, unresolved: 0 };
  /**
   * Resolving an event again after later events of its batch (see {@link resolveAll}): what the
   * cache holds may be newer than the event, so the event only adds what the cache lacks.
   */
  #late = false;
  /** A batch is being resolved (see {@link resolveAll}): the two sets below are kept. */
  #batching = false;
  /**
   * Keys whose path was read from the present during this batch (a handle opened now): that
   * path already holds every move of the batch, so the batch's renames leave it alone.
   */
  readonly #present = new Set<string>();
  /**
   * Keys named this batch by an event below a directory of {@link #present} (or below one of
   * these): a path of the present with an event's name. A rename of the batch can neither
   * leave it (the name may be old) nor move it (the rest may be new): it is dropped, and named
   * from the present when next needed.
   */
  readonly #derived = new Set<string>();

  constructor(options: PathResolverOptions = {}) {
    this.mounts = options.mounts ?? new MountTable();
    this.#dirs = new LruMap(options.cacheSize ?? 16384);
    this.#files = new LruMap(options.fileCacheSize ?? 65536);
  }

  /** Number of cached directory paths. */
  get cacheSize(): number {
    return this.#dirs.size;
  }

  /** Remember that a directory id has a path. */
  remember(id: FileId, path: string): void {
    this.#dirs.set(id.key, path);
  }

  /** Forget a directory and everything cached below it. */
  forgetTree(path: string): void {
    for (const cache of [this.#dirs, this.#files]) {
      for (const [key, p] of cache.entries()) if (isUnder(p, path) && !this.#present.has(key)) cache.delete(key);
    }
  }

  /** Rewrite cached paths after a directory moved from `from` to `to`. */
  moveTree(from: string, to: string): void {
    for (const cache of [this.#dirs, this.#files]) {
      for (const [key, p] of cache.entries()) {
        if (!isUnder(p, from) || this.#present.has(key)) continue;
        if (this.#derived.has(key)) cache.delete(key);
        else cache.replace(key, to + p.slice(from.length));
      }
    }
  }

  /**
   * Cache the path an event gave `key`, an entry of the directory `parentKey`; when resolving
   * late (see {@link #late}), only if the cache has none.
   */
  #learn(cache: LruMap<string, string>, key: string, path: string, parentKey: string | undefined): void {
    if (this.#late && cache.get(key) !== undefined) return;
    cache.set(key, path);
    if (!this.#batching) return;
    this.#present.delete(key);
    if (parentKey !== undefined && (this.#present.has(parentKey) || this.#derived.has(parentKey))) this.#derived.add(key);
    else this.#derived.delete(key);
  }

  /**
   * The current path of a directory id (cached), or of any id (not cached when not a dir).
   * @returns the path, or a miss reason.
   */
  pathOfDir(id: FileId): string | HandleMiss {
    const hit = this.#dirs.get(id.key);
    if (hit !== undefined) {
      this.stats.hits++;
      return hit;
    }
    this.stats.misses++;
    const path = this.openPath(id);
    if (isPath(path)) {
      this.#dirs.set(id.key, path);
      if (this.#batching) {
        this.#present.add(id.key);
        this.#derived.delete(id.key);
      }
    }
    return path;
  }

  /**
   * Resolve a handle by opening it (O_PATH: no open event, no data access) and reading the
   * fd's link. Not cached.
   */
  openPath(id: FileId): string | HandleMiss {
    const result = this.mounts.withAnchor(id.fsid, (anchor): string | HandleMiss => {
      let fd: number;
      try {
        fd = native.openByHandle(anchor, id.handleType, id.handle, O_PATH_CLOEXEC);
      } catch (err) {
        if (isNativeError(err) && (err.code === 'ESTALE' || err.code === 'ENOENT')) {
          this.stats.gone++;
          return 'gone';
        }
        return 'error';
      }
      try {
        const link = readlinkSync(`/proc/self/fd/${fd}`);
        return link.endsWith(DELETED_SUFFIX) ? 'gone' : link;
      } catch {
        return 'error';
      } finally {
        native.close(fd);
      }
    });
    return result ?? 'unknown-filesystem';
  }

  /**
   * The paths of an event, updating the cache for directory creates, renames and deletes.
   * Call it for every event, in order.
   */
  resolve(ev: DecodedEvent): ResolvedPaths {
    if (ev.type === 'rename') return this.#resolveRename(ev);
    if (ev.entry) {
      const dir = this.pathOfDir(ev.entry.dir);
      if (!isPath(dir)) return this.#fallback(ev, dir as HandleMiss);
      const path = joinPath(dir, ev.entry.name);
      if (ev.entry.name !== '.') {
        if (ev.isDir) this.#trackDir(ev, path, ev.entry.dir.key);
        else if (ev.fid) this.#learn(this.#files, ev.fid.key, path, ev.entry.dir.key);
      }
      return ev.mask & EventBit.DELETE ? { path, gone: true } : { path };
    }
    return this.#fallback(ev, undefined);
  }

  /**
   * Keep the cache right for directory entries that appear, disappear or move away. A create
   * merged with its delete is still remembered: events of the files inside it may follow in the
   * queue. A deleted directory is remembered too: its handle is stale forever, so the entry can
   * only ever name where it was, and it names the parent of earlier deletes inside it (see
   * {@link resolveAll}).
   */
  #trackDir(ev: DecodedEvent, path: string, parentKey: string): void {
    if (ev.mask & (EventBit.CREATE | EventBit.MOVED_TO | EventBit.DELETE) && ev.fid) this.#learn(this.#dirs, ev.fid.key, path, parentKey);
    else if (ev.mask & EventBit.MOVED_FROM && !this.#late) this.forgetTree(path);
  }

  /**
   * Resolve the events of one read batch. An event whose directory was already gone when read
   * (`rm -r` of a tree we never saw) is retried after the rest of the batch: the delete of that
   * directory, later in the queue, carries its id and its own parent, so the path of a deleted
   * tree is rebuilt from the top down. Events `wanted` says no to are not resolved (their
   * paths are empty): a miss costs a handle open.
   */
  resolveAll(events: readonly DecodedEvent[], wanted: (ev: DecodedEvent) => boolean = () => true): ResolvedPaths[] {
    this.#batching = true;
    try {
      return this.#resolveBatch(events, wanted);
    } finally {
      this.#batching = false;
      this.#present.clear();
      this.#derived.clear();
    }
  }

  #resolveBatch(events: readonly DecodedEvent[], wanted: (ev: DecodedEvent) => boolean): ResolvedPaths[] {
    const out = events.map((ev) => (wanted(ev) ? this.resolve(ev) : NOT_WANTED));
    let pending: number[] = [];
    for (let i = 0; i < out.length; i++) {
      const ev = events[i]!;
      if (out[i] === NOT_WANTED) continue;
      if (out[i]!.path === undefined && (ev.entry || (ev.type === 'rename' && (ev.from || ev.to)))) pending.push(i);
    }
    this.#late = true;
    try {
      while (pending.length > 0) {
        const still: number[] = [];
        for (const i of pending) {
          const r = this.resolve(events[i]!);
          if (r.path !== undefined) out[i] = r;
          else still.push(i);
        }
        if (still.length === pending.length) break;
        pending = still;
      }
    } finally {
      this.#late = false;
    }
    return out;
  }

  #resolveRename(ev: Extract<DecodedEvent, { type: 'rename' }>): ResolvedPaths {
    const fromDir = ev.from ? this.pathOfDir(ev.from.dir) : undefined;
    const toDir = ev.to ? this.pathOfDir(ev.to.dir) : undefined;
    const oldPath = fromDir && isPath(fromDir) && ev.from ? joinPath(fromDir, ev.from.name) : undefined;
    const path = toDir && isPath(toDir) && ev.to ? joinPath(toDir, ev.to.name) : undefined;
    // Renamed back and forth faster than we read: see ResolvedPaths.movedBack.
    const back = oldPath !== undefined && path !== undefined && oldPath !== path && ev.fid !== undefined && this.#movedBack(ev.fid, oldPath, path);
    if (this.#late) {
      // Named only now, after later events of the batch: its cache update happened, as far as it
      // could, in the first pass; moving the old path's entries now would move what those later
      // events put there (a new directory made at the old path).
      return back ? { path, oldPath, movedBack: true } : { path, oldPath };
    }
    if (ev.isDir) {
      if (back) {
        this.forgetTree(path);
        this.#learn(this.#dirs, ev.fid!.key, oldPath, ev.from?.dir.key);
        return { path, oldPath, movedBack: true };
      }
      if (oldPath && path) this.moveTree(oldPath, path);
      else if (oldPath) this.forgetTree(oldPath);
      if (path && ev.fid) this.#learn(this.#dirs, ev.fid.key, path, ev.to?.dir.key);
    } else if (path && ev.fid) {
      if (back) {
        this.#learn(this.#files, ev.fid.key, oldPath, ev.from?.dir.key);
        return { path, oldPath, movedBack: true };
      }
      this.#learn(this.#files, ev.fid.key, path, ev.to?.dir.key);
    }
    if (path === undefined && ev.fid) {
      const p = this.#idPath(ev.fid);
      if (p) return { path: p, oldPath };
    }
    return { path, oldPath };
  }

  /**
   * Whether the object a rename moved from `oldPath` to `path` is back at `oldPath` already. Two
   * lstats first (the new path empty, the old one not), so the handle is opened only then.
   */
  #movedBack(id: FileId, oldPath: string, path: string): boolean {
    if (entryExists(path) || !entryExists(oldPath)) return false;
    return this.openPath(id) === oldPath;
  }

  /** Events without a usable DFID+name: the object's own id, then the event fd. */
  #fallback(ev: DecodedEvent, miss: HandleMiss | undefined): ResolvedPaths {
    const id = ev.fid ?? ev.dfid;
    if (id) {
      if (!ev.isDir && id === ev.fid) {
        const known = this.#files.get(id.key);
        if (known !== undefined) return ev.mask & EventBit.DELETE_SELF ? { path: known, gone: true } : { path: known };
      }
      const p = ev.isDir || id === ev.dfid ? this.pathOfDir(id) : this.openPath(id);
      if (isPath(p)) return { path: p };
      miss = p as HandleMiss;
    }
    if (ev.fd >= 0) {
      try {
        const link = readlinkSync(`/proc/self/fd/${ev.fd}`);
        return link.endsWith(DELETED_SUFFIX) ? { path: link.slice(0, -DELETED_SUFFIX.length), gone: true } : { path: link };
      } catch {
        miss = 'error';
      }
    }
    this.stats.unresolved++;
    return miss === 'gone' ? { gone: true } : {};
  }

  #idPath(id: FileId): string | undefined {
    const p = this.openPath(id);
    return isPath(p) ? p : undefined;
  }

  /** Drop the caches. */
  close(): void {
    this.#dirs.clear();
    this.#files.clear();
  }
}
