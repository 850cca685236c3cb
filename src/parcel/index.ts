/**
 * `fanotify/parcel`: a drop-in replacement for `@parcel/watcher` (v2.x) on Linux.
 *
 * Switch `import watcher from '@parcel/watcher'` (or `import * as watcher`, or
 * `const watcher = require(…)` in a bundled project) to `fanotify/parcel` and the calls keep
 * working: `subscribe`, `unsubscribe`, `writeSnapshot` and `getEventsSince` take the same
 * arguments, and callbacks get the same `(err, events)` with `{ type, path }` events.
 *
 * What is the same as @parcel/watcher:
 * - paths are absolute, under `path.resolve(dir)`;
 * - one event per path per batch, coalesced like @parcel/watcher: create then delete → nothing,
 *   delete then create → `update`, create then update → `create`, update then delete → `delete`;
 * - a rename is a `delete` of the old path and a `create` of the new one; a directory renamed
 *   within the tree is reported as the directory only, as @parcel/watcher does on Linux;
 * - `ignore` takes paths (relative to `dir`, or absolute), globs relative to `dir`, and RegExps
 *   tested against the path relative to `dir`; everything below an ignored directory is ignored;
 * - subscriptions with the same `dir` and equivalent `ignore` share one watch, each callback is
 *   registered once, and `unsubscribe(dir, fn, opts)` removes exactly that callback;
 * - an exception thrown by a callback is not swallowed: it surfaces as an uncaught exception.
 *
 * What is better:
 * - setup is one fanotify filesystem mark, not a crawl with one inotify watch per directory;
 * - a file created right after its new directory is never missed, and a directory moved into
 *   the tree is reported with a `create` for each entry inside it;
 * - a lost-events overflow is never silent: the callback gets an `Error` (first argument) saying
 *   to rescan; so does the tree's root being deleted, moved or unmounted (the watch then ends);
 * - an empty event list is never delivered.
 *
 * `opts.backend` is accepted and ignored: the backend is fanotify (a filesystem mark with
 * CAP_SYS_ADMIN, inode marks without). `writeSnapshot`/`getEventsSince` crawl and diff; the
 * snapshot file is versioned JSON.
 *
 * @packageDocumentation
 */
import { statSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isAbsolute, relative, resolve as resolvePath } from 'node:path';
import picomatch from 'picomatch';
import {
  watch,
  diffTrees,
  snapshotTree,
  IgnoreMatcher,
  type EntryState,
  type TreeState,
  type Subscription,
  type RescanReason,
  type WatchEvent,
} from '../watch/index.js';
import { JournalStore, openJournal, pidAlive, type JournalChange } from '../journal/index.js';

/** The kind of a change: @parcel/watcher's three. */
export type EventType = 'create' | 'update' | 'delete';

/** One change. `path` is absolute. */
export interface Event {
  /** Absolute path of the entry that changed. */
  path: string;
  /** What happened to it. */
  type: EventType;
}

/**
 * Receives each batch of changes. `err` is `null` for a normal batch. When something went wrong
 * (events were lost in an overflow, the root went away, an internal error), `err` is an `Error`
 * and `events` is empty.
 */
export type SubscribeCallback = (err: Error | null, events: Event[]) => unknown;

/** What {@link subscribe} resolves to. */
export interface AsyncSubscription {
  /** Stop delivering to this subscription's callback. Resolves once it is stopped. */
  unsubscribe(): Promise<void>;
}

/** @parcel/watcher's backend names. Accepted for compatibility and ignored: fanotify is used. */
export type BackendType = 'fs-events' | 'watchman' | 'inotify' | 'windows' | 'brute-force';

/** Options of every function here, as in @parcel/watcher. */
export interface Options {
  /**
   * What not to report: paths (relative to `dir` or absolute), globs relative to `dir` (e.g.
   * `**\/*.log`), or RegExps without flags tested against the path relative to `dir`. An ignored
   * directory's contents are ignored too.
   */
  ignore?: (string | RegExp)[];
  /** Accepted and ignored. */
  backend?: BackendType;
}

/** The batching window of subscriptions, in ms. @parcel/watcher waits at least 50 ms. */
const DEBOUNCE_MS = 30;

// ---------------------------------------------------------------------------------------------
// Options

/** Options resolved for one `dir`. */
interface Normalized {
  /** `path.resolve(dir)`: the prefix of every reported path. */
  readonly dir: string;
  /** Paths relative to `dir` and globs, for {@link IgnoreMatcher}. */
  readonly patterns: readonly string[];
  /** RegExp ignores (no flags). */
  readonly regexps: readonly RegExp[];
  /** An ignore path names `dir` itself: nothing is reported. */
  readonly ignoreAll: boolean;
  /** Identity of a shared watch: dir + ignore rules (the backend does not matter). */
  readonly key: string;
}

function normalize(dir: string, opts: Options | undefined, fn: string): Normalized {
  if (typeof dir !== 'string' || dir === '') throw new TypeError(`${fn}: dir must be a non-empty string`);
  const abs = resolvePath(dir);
  const patterns: string[] = [];
  const regexps: RegExp[] = [];
  let ignoreAll = false;
  const ignore = opts?.ignore;
  if (ignore !== undefined && !Array.isArray(ignore)) throw new TypeError(`${fn}: opts.ignore must be an array`);
  for (const value of ignore ?? []) {
    if (value instanceof RegExp) {
      if (value.flags !== '') {
        throw new Error(
          `RegExp ignore patterns must not have flags (got /${value.source}/${value.flags}). Flags are not supported by the native matcher.`,
        );
      }
      regexps.push(value);
    } else if (typeof value !== 'string') {
      throw new TypeError(`${fn}: opts.ignore entries must be strings or RegExps, got ${typeof value}`);
    } else if (value === '') {
      continue;
    } else if (picomatch.scan(value).isGlob) {
      patterns.push(value);
    } else {
      // Like @parcel/watcher: a plain path is resolved against dir.
      const rel = relative(abs, resolvePath(abs, value));
      if (rel === '') ignoreAll = true;
      else if (rel !== '..' && !rel.startsWith('../') && !isAbsolute(rel)) patterns.push(rel);
      // A path outside dir can never match: dropped.
    }
  }
  const key = JSON.stringify([abs, [...new Set(patterns)].sort(), [...new Set(regexps.map((r) => r.source))].sort(), ignoreAll]);
  return { dir: abs, patterns, regexps, ignoreAll, key };
}

/** A filter for paths under a root by the RegExp and ignore-all rules (the rest go to IgnoreMatcher). */
function extraFilter(n: Normalized, root: string): ((path: string) => boolean) | undefined {
  if (n.ignoreAll) return () => true;
  if (n.regexps.length === 0) return undefined;
  return (path) => {
    if (path.length <= root.length) return false;
    let rel = root === '/' ? path.slice(1) : path.slice(root.length + 1);
    // The path itself and each ancestor below the root: an ignored directory covers its contents.
    for (;;) {
      for (const r of n.regexps) if (r.test(rel)) return true;
      const slash = rel.lastIndexOf('/');
      if (slash < 0) return false;
      rel = rel.slice(0, slash);
    }
  };
}

function checkDir(dir: string, fn: string): void {
  let isDir: boolean;
  try {
    isDir = statSync(dir).isDirectory();
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new Error(`${fn}: cannot read ${dir}: ${code === 'ENOENT' ? 'no such directory' : (err as Error).message}`, { cause: err });
  }
  if (!isDir) throw new Error(`${fn}: ${dir} is not a directory`);
}

// ---------------------------------------------------------------------------------------------
// Coalescing

/**
 * @parcel/watcher's per-batch event list: one entry per path in first-seen order; a path that
 * was created and then deleted is dropped and, if it comes back, starts again at the end.
 */
class EventList {
  readonly #events = new Map<string, { created: boolean; deleted: boolean }>();

  create(path: string): void {
    const e = this.#get(path);
    if (e.deleted) e.deleted = false; // Deleted and created again: an update.
    else e.created = true;
  }

  update(path: string): void {
    this.#get(path);
  }

  delete(path: string): void {
    const e = this.#get(path);
    if (e.created) this.#events.delete(path); // Created and deleted: nothing happened.
    else e.deleted = true;
  }

  get size(): number {
    return this.#events.size;
  }

  /** Fresh event objects (each callback gets its own). */
  events(): Event[] {
    const out: Event[] = [];
    for (const [path, e] of this.#events) out.push({ path, type: e.created ? 'create' : e.deleted ? 'delete' : 'update' });
    return out;
  }

  #get(path: string): { created: boolean; deleted: boolean } {
    let e = this.#events.get(path);
    if (!e) {
      e = { created: false, deleted: false };
      this.#events.set(path, e);
    }
    return e;
  }
}

function rescanMessage(dir: string, reason: RescanReason): string {
  switch (reason) {
    case 'overflow':
      return `fanotify: events were lost (overflow); rescan ${dir}`;
    case 'root-deleted':
      return `fanotify: ${dir} was deleted; the watch has ended`;
    case 'root-moved':
      return `fanotify: ${dir} was moved away; the watch has ended`;
    case 'unmounted':
      return `fanotify: the filesystem of ${dir} was unmounted; the watch has ended`;
  }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

/** One fanotify watch shared by every callback subscribed with the same dir and ignore rules. */
class SharedWatch {
  readonly callbacks: SubscribeCallback[] = [];
  readonly sub: Subscription;
  readonly ready: Promise<unknown>;
  readonly #n: Normalized;
  /** Maps a path under the watch's real root to one under `dir` (they differ through symlinks). */
  readonly #toDir: (path: string) => string;
  readonly #ignored: ((path: string) => boolean) | undefined;
  #closed = false;

  constructor(n: Normalized) {
    this.#n = n;
    this.sub = watch(n.dir, { ignore: n.patterns, debounceMs: DEBOUNCE_MS });
    const real = this.sub.roots[0] ?? n.dir;
    this.#toDir =
      real === n.dir
        ? (p) => p
        : (p) => (p === real ? n.dir : p.startsWith(real === '/' ? '/' : `${real}/`) ? n.dir + (real === '/' ? p : p.slice(real.length)) : p);
    this.#ignored = extraFilter(n, n.dir);
    this.sub.on('events', (batch) => this.#deliver(batch));
    this.sub.once('close', () => this.#ended());
    this.ready = this.sub.ready;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Add a callback; a callback already present is not added twice (as @parcel/watcher). */
  add(fn: SubscribeCallback): void {
    if (!this.callbacks.includes(fn)) this.callbacks.push(fn);
  }

  /** Remove a callback; the watch closes with the last one. */
  async remove(fn: SubscribeCallback): Promise<void> {
    const i = this.callbacks.indexOf(fn);
    if (i >= 0) this.callbacks.splice(i, 1);
    if (this.callbacks.length === 0) await this.close();
  }

  async close(): Promise<void> {
    this.callbacks.length = 0;
    this.#ended();
    await this.sub.close();
  }

  #ended(): void {
    this.#closed = true;
    if (registry.get(this.#n.key) === this) registry.delete(this.#n.key);
  }

  #deliver(batch: readonly WatchEvent[]): void {
    const list = new EventList();
    const errors: Error[] = [];
    const keep = (path: string): string | undefined => {
      const p = this.#toDir(path);
      return this.#ignored?.(p) ? undefined : p;
    };
    for (const ev of batch) {
      switch (ev.type) {
        case 'create':
        case 'update':
        case 'delete': {
          const p = keep(ev.path);
          if (p !== undefined) list[ev.type](p);
          break;
        }
        case 'rename': {
          const from = keep(ev.oldPath);
          const to = keep(ev.path);
          if (from !== undefined) list.delete(from);
          if (to !== undefined) list.create(to);
          break;
        }
        case 'rescan':
          errors.push(new Error(rescanMessage(this.#toDir(ev.path), ev.reason)));
          break;
        case 'error':
          errors.push(ev.error);
          break;
      }
    }
    // Changes first, then what went wrong after (or around) them.
    if (list.size > 0) this.#call(null, () => list.events());
    for (const err of errors) this.#call(err, () => []);
  }

  #call(err: Error | null, events: () => Event[]): void {
    for (const fn of [...this.callbacks]) {
      if (!this.callbacks.includes(fn)) continue; // Unsubscribed by an earlier callback.
      try {
        const r = fn(err, events());
        // A rejected promise from an async callback is the caller's to handle, as with parcel.
        void r;
      } catch (thrown) {
        // Like @parcel/watcher: a throwing callback is a fatal (uncaught) exception, but the
        // other callbacks still get the batch.
        process.nextTick(() => {
          throw thrown;
        });
      }
    }
  }
}

/** Live shared watches by {@link Normalized.key}. */
const registry = new Map<string, SharedWatch>();

/**
 * Subscribe to changes under `dir`. Resolves once the watch is live: every change made after
 * that is reported. `fn(err, events)` gets batches of coalesced `{ type, path }` events with
 * `err === null`, or an `Error` and `[]` when events were lost (overflow: rescan), the root was
 * deleted, moved or unmounted (the watch has ended), or an internal error happened.
 *
 * @param dir - the directory to watch (relative paths are resolved against the cwd)
 * @param fn - the callback; subscribing the same function twice with the same dir and options
 *   registers it once
 * @param opts - `ignore` rules; `backend` is accepted and ignored
 * @returns a handle whose `unsubscribe()` stops this callback
 * @throws (rejects) when `dir` is not a directory, or an `ignore` RegExp has flags
 *
 * @example
 * ```ts
 * import { subscribe } from 'fanotify/parcel';
 * const sub = await subscribe(process.cwd(), (err, events) => {
 *   if (err) return console.error(err.message);
 *   for (const e of events) console.log(e.type, e.path);
 * }, { ignore: ['node_modules', '**\/*.log'] });
 * // later
 * await sub.unsubscribe();
 * ```
 */
export async function subscribe(dir: string, fn: SubscribeCallback, opts?: Options): Promise<AsyncSubscription> {
  if (typeof fn !== 'function') throw new TypeError('subscribe: fn must be a function');
  const n = normalize(dir, opts, 'subscribe');
  let shared = registry.get(n.key);
  if (!shared || shared.closed) {
    shared = new SharedWatch(n);
    registry.set(n.key, shared);
  }
  shared.add(fn);
  const mine = shared;
  try {
    await mine.ready;
  } catch (err) {
    await mine.remove(fn);
    throw err;
  }
  return {
    unsubscribe: () => mine.remove(fn),
  };
}

/**
 * Stop the subscription made with the same `dir`, the same function `fn` and equivalent
 * `opts` (the same ignore rules). Resolves when nothing matches, too.
 *
 * @param dir - the directory given to {@link subscribe}
 * @param fn - the callback given to {@link subscribe}
 * @param opts - the options given to {@link subscribe}
 */
export async function unsubscribe(dir: string, fn: SubscribeCallback, opts?: Options): Promise<void> {
  const n = normalize(dir, opts, 'unsubscribe');
  await registry.get(n.key)?.remove(fn);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

/** What identifies our snapshot files. */
const SNAPSHOT_FORMAT = 'fanotify-parcel-snapshot';
/** Current version of the snapshot file. Readers refuse other versions. */
const SNAPSHOT_VERSION = 1;

/** One entry of a snapshot file: [isDir (0|1), ino, size, mtimeMs, ctimeMs]. */
type SnapshotEntry = [number, number, number, number, number];

/**
 * The JSON of a snapshot file (version 1). Paths are relative to `root`. A snapshot holds either
 * `entries` (a crawl) or `cursor` (a position in the journal recording `root`).
 */
interface SnapshotFile {
  format: typeof SNAPSHOT_FORMAT;
  version: typeof SNAPSHOT_VERSION;
  /** `path.resolve(dir)` when written. */
  root: string;
  /** When written, ms since the epoch. */
  time: number;
  entries?: Record<string, SnapshotEntry>;
  /** A journal cursor, when a journal was recording `root`. */
  cursor?: string;
}

/**
 * The journal recording `dir`, when a live recorder (e.g. `fan journal run`) holds it in the
 * default state directory; undefined otherwise (then snapshots crawl).
 */
function liveJournal(dir: string): boolean {
  let store: JournalStore | undefined;
  try {
    store = JournalStore.open({ readonly: true });
    const row = store.root(dir);
    return row !== undefined && pidAlive(row.recorderPid);
  } catch {
    return false;
  } finally {
    store?.close();
  }
}

/** Journal changes as parcel events: renames become delete + create; ignored paths are left out. */
function journalEvents(n: Normalized, changes: readonly JournalChange[]): Event[] {
  const matcher = new IgnoreMatcher(n.dir, n.patterns);
  const ignored = extraFilter(n, n.dir);
  const keep = (p: string): boolean => !matcher.ignores(p) && !ignored?.(p);
  const byPath = new Map<string, EventType>();
  const put = (path: string, type: EventType): void => {
    if (!keep(path)) return;
    const was = byPath.get(path);
    byPath.delete(path); // re-insert: the order is that of the last change
    if (was === 'delete' && type === 'create') byPath.set(path, 'update');
    else if (was === 'create' && type === 'delete') return;
    else if (was === 'create') byPath.set(path, 'create');
    else byPath.set(path, type);
  };
  for (const c of changes) {
    if (c.kind === 'renamed') {
      put(c.oldPath!, 'delete');
      put(c.path, 'create');
    } else {
      put(c.path, c.kind === 'created' ? 'create' : c.kind === 'updated' ? 'update' : 'delete');
    }
  }
  return [...byPath].map(([path, type]) => ({ path, type }));
}

/** Crawl `n.dir` with every ignore rule. */
async function crawl(n: Normalized): Promise<TreeState> {
  if (n.ignoreAll) return new Map();
  const state = await snapshotTree(n.dir, new IgnoreMatcher(n.dir, n.patterns));
  const ignored = extraFilter(n, n.dir);
  if (ignored) for (const p of [...state.keys()]) if (ignored(p)) state.delete(p);
  return state;
}

function relativeTo(root: string, path: string): string {
  return root === '/' ? path.slice(1) : path.slice(root.length + 1);
}

function absoluteIn(root: string, rel: string): string {
  return root === '/' ? `/${rel}` : `${root}/${rel}`;
}

/**
 * Write a snapshot of the tree under `dir` to the file `snapshotPath`, for
 * {@link getEventsSince}. The file is versioned JSON listing every entry (type, inode, size,
 * times), written atomically (temp file + rename).
 *
 * @param dir - the directory to snapshot
 * @param snapshotPath - the file to write (replaced if it exists)
 * @param opts - `ignore` rules: ignored entries are left out
 * @returns `snapshotPath`
 * @throws (rejects) when `dir` is not a directory or the file cannot be written
 */
export async function writeSnapshot(dir: string, snapshotPath: string, opts?: Options): Promise<string> {
  const n = normalize(dir, opts, 'writeSnapshot');
  const file = resolvePath(snapshotPath);
  checkDir(n.dir, 'writeSnapshot');
  const data: SnapshotFile = { format: SNAPSHOT_FORMAT, version: SNAPSHOT_VERSION, root: n.dir, time: Date.now() };
  if (liveJournal(n.dir)) {
    // A journal records this root: the snapshot is a cursor, no crawl needed.
    const journal = await openJournal(n.dir, { record: false });
    try {
      data.cursor = (await journal.since(undefined, { emptyOnFreshInstance: true })).cursor;
    } finally {
      await journal.close();
    }
  } else {
    const state = await crawl(n);
    const entries: Record<string, SnapshotEntry> = {};
    for (const [path, s] of state) entries[relativeTo(n.dir, path)] = [s.isDir ? 1 : 0, s.ino, s.size, s.mtimeMs, s.ctimeMs];
    data.entries = entries;
  }
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(data));
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new Error(`writeSnapshot: cannot write snapshot file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return snapshotPath;
}

/**
 * Read and check a snapshot file: a journal cursor, or entries as absolute paths under `root`.
 */
async function readSnapshot(file: string, root: string): Promise<{ cursor: string } | { state: TreeState }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as { code?: string }).code;
    throw new Error(`getEventsSince: cannot read snapshot file ${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, {
      cause: err,
    });
  }
  const corrupt = (why: string): Error => new Error(`getEventsSince: snapshot file ${file} is corrupt: ${why}`);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw corrupt((err as Error).message);
  }
  if (typeof data !== 'object' || data === null || (data as { format?: unknown }).format !== SNAPSHOT_FORMAT) {
    throw corrupt('not a snapshot written by fanotify/parcel writeSnapshot()');
  }
  const { version, entries, cursor } = data as { version?: unknown; entries?: unknown; cursor?: unknown };
  if (version !== SNAPSHOT_VERSION) {
    throw new Error(`getEventsSince: snapshot file ${file} has version ${String(version)}; this version reads version ${SNAPSHOT_VERSION}: write a new snapshot`);
  }
  if (typeof cursor === 'string') return { cursor };
  if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) throw corrupt('no entries');
  const state: TreeState = new Map();
  for (const [rel, e] of Object.entries(entries as Record<string, unknown>)) {
    if (rel === '' || rel.startsWith('/') || !Array.isArray(e) || e.length !== 5 || !e.every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw corrupt(`bad entry ${JSON.stringify(rel)}`);
    }
    const [isDir, ino, size, mtimeMs, ctimeMs] = e as SnapshotEntry;
    const entry: EntryState = { isDir: isDir === 1, ino, size, mtimeMs, ctimeMs };
    state.set(absoluteIn(root, rel), entry);
  }
  return { state };
}

/**
 * The changes under `dir` since {@link writeSnapshot} wrote `snapshotPath`. When a journal
 * (`fan journal run`) was recording `dir` at snapshot time, the snapshot holds a cursor and the
 * journal answers in milliseconds, across restarts of the recorder; otherwise a fresh crawl is
 * diffed against the snapshot. New entries are `create`, removed ones `delete`, files whose
 * size or times changed `update`; an entry replaced by another inode (a rename onto it, or
 * delete and recreate) is `delete` + `create`, and a rename is `delete` of the old path +
 * `create` of the new one. Directories themselves are never `update`. Ignored paths are left
 * out on both sides.
 *
 * @param dir - the directory given to {@link writeSnapshot} (entries are matched by their path
 *   relative to it, so a moved tree can be compared too)
 * @param snapshotPath - the snapshot file
 * @param opts - `ignore` rules
 * @throws (rejects) when the snapshot file is missing, unreadable, corrupt or of another
 *   version (the message names the file), or `dir` is not a directory
 */
export async function getEventsSince(dir: string, snapshotPath: string, opts?: Options): Promise<Event[]> {
  const n = normalize(dir, opts, 'getEventsSince');
  const file = resolvePath(snapshotPath);
  const snapshot = await readSnapshot(file, n.dir);
  checkDir(n.dir, 'getEventsSince');
  if ('cursor' in snapshot) {
    // Written while a journal recorded the root: ask it. If its continuity was lost (another
    // instance, pruned), every entry is reported as created, as a fresh start must be.
    const journal = await openJournal(n.dir, { record: false });
    try {
      return journalEvents(n, (await journal.since(snapshot.cursor)).changes);
    } finally {
      await journal.close();
    }
  }
  const before = snapshot.state;
  const after = await crawl(n);
  const ignored = extraFilter(n, n.dir);
  const matcher = new IgnoreMatcher(n.dir, n.patterns);
  for (const p of [...before.keys()]) if (matcher.ignores(p) || ignored?.(p)) before.delete(p);
  return diffTrees(before, after).map((d) => ({ path: d.path, type: d.type }));
}

/**
 * The same functions as one object, for `import watcher from 'fanotify/parcel'` (the shape of
 * `require('@parcel/watcher')`).
 */
const watcher: {
  subscribe: typeof subscribe;
  unsubscribe: typeof unsubscribe;
  writeSnapshot: typeof writeSnapshot;
  getEventsSince: typeof getEventsSince;
} = { subscribe, unsubscribe, writeSnapshot, getEventsSince };

export default watcher;
