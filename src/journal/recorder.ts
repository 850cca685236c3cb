/**
 * The journal recorder: watch roots, log every change durably, reconcile after downtime and
 * overflow so the log never has a silent gap.
 * @packageDocumentation
 */
import { realpathSync } from 'node:fs';
import { basename } from 'node:path';
import {
  watch,
  IgnoreMatcher,
  snapshotTreeSync,
  diffTrees,
  type EntryState,
  type Subscription,
  type WatchEvent,
} from '../watch/index.js';
import { isUnder } from '../resolve/paths.js';
import { FanotifyError } from '../errors.js';
import { JournalStore, defaultStateDir, type NewChange, type RootRow, type StateUpdate } from './store.js';
import { StateIndex } from './state-index.js';
import { ChangeLogger, pendingCommit, withoutDuplicateDirs, type PendingCommit } from './change-logger.js';

/** Files the journal writes into a root to sync with its recorder; never logged. */
export const COOKIE_PREFIX = '.fanotify-cookie-';

/** How long changes are kept. */
export interface Retention {
  /** Drop changes older than this. Default 7 days. */
  readonly maxAgeMs?: number;
  /** Keep at most this many changes per root. Default 1,000,000. */
  readonly maxChanges?: number;
}

/** Options of {@link Recorder.start}. */
export interface RecorderOptions {
  /** Where journal.db lives. Default $XDG_STATE_HOME/fanotify, or /var/lib/fanotify for root. */
  readonly stateDir?: string;
  /** Extra ignore patterns (as for watch). */
  readonly ignore?: readonly string[];
  /** Batching window of the underlying watch, in ms. Default 10. */
  readonly debounceMs?: number;
  readonly retention?: Retention;
  /**
   * No limit on the kernel queue of the recorder's fanotify group (default true): a burst the
   * recorder cannot keep up with waits in kernel memory instead of overflowing into a
   * reconciliation. False: the queue is bounded, and an overflow is reconciled.
   */
  readonly unlimitedQueue?: boolean;
  /** Start a new journal when the database is corrupt, instead of failing. */
  readonly rebuildIfCorrupt?: boolean;
  /** Failures while recording (a root's reconciliation, a commit). Default: a process warning. */
  readonly onError?: (err: Error) => void;
  /** Called after each reconciliation. */
  readonly onReconcile?: (root: string, info: { changes: number; ms: number; reason: string }) => void;
}

/** True when a process with this pid exists. */
export function pidAlive(pid: number | null): boolean {
  if (pid === null || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

interface RootState {
  readonly path: string;
  readonly row: RootRow;
  readonly ignore: IgnoreMatcher;
  /** Strip the root prefix: relative paths are what the store keeps. */
  readonly prefix: number;
  /** The store's state index of the root, in memory: events are logged against it. */
  readonly index: StateIndex;
  readonly logger: ChangeLogger;
}

/**
 * A logged delete of a directory deletes everything below it (for readers, and in the index).
 * When a directory was replaced (another inode at its path), entries below it that did not change
 * (moved out and back, or into the new directory) are not in the diff: log them as created, after
 * the deletes, instead of as unchanged or updated.
 */
function withContentsOfDeletedDirs(
  diff: ReturnType<typeof diffTrees>,
  now: ReadonlyMap<string, EntryState>,
): ReturnType<typeof diffTrees> {
  const gone = new Set(diff.filter((d) => d.type === 'delete' && d.isDir).map((d) => d.path));
  if (gone.size === 0) return diff;
  const created = new Set(diff.filter((d) => d.type === 'create').map((d) => d.path));
  const again: ReturnType<typeof diffTrees> = [];
  for (const [path, st] of now) {
    if (created.has(path)) continue;
    for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) {
      if (gone.has(path.slice(0, i))) {
        again.push({ type: 'create', path, isDir: st.isDir });
        break;
      }
    }
  }
  if (again.length === 0) return diff;
  const recreated = new Set(again.map((d) => d.path));
  return [...diff.filter((d) => !(d.type === 'update' && recreated.has(d.path))), ...again];
}

/** Retention in force by default. */
export const DEFAULT_RETENTION: Required<Retention> = { maxAgeMs: 7 * 24 * 3600_000, maxChanges: 1_000_000 };
const PRUNE_EVERY_MS = 10_000;

/** A running recorder. */
export class Recorder {
  readonly store: JournalStore;
  readonly #roots: RootState[];
  readonly #sub: Subscription;
  readonly #retention: Required<Retention>;
  readonly #onError: (err: Error) => void;
  readonly #onReconcile: RecorderOptions['onReconcile'];
  #live = false;
  #buffered: WatchEvent[][] = [];
  #closed = false;
  #lastPrune = 0;
  readonly #cookieWaiters = new Map<string, () => void>();
  /** Counters: changes logged, commits, reconciliations. */
  readonly stats = { changes: 0, commits: 0, reconciles: 0 };

  private constructor(store: JournalStore, roots: RootState[], sub: Subscription, options: RecorderOptions) {
    this.store = store;
    this.#roots = roots;
    this.#sub = sub;
    this.#retention = { ...DEFAULT_RETENTION, ...options.retention };
    this.#onError = options.onError ?? ((err) => process.emitWarning(err));
    this.#onReconcile = options.onReconcile;
  }

  /**
   * Start recording roots: claim them, start watching, reconcile what changed while nobody
   * recorded, then log events as they come.
   * @throws FanotifyError when another live process records one of the roots.
   */
  static async start(rootPaths: readonly string[], options: RecorderOptions = {}): Promise<Recorder> {
    const stateDir = options.stateDir ?? defaultStateDir();
    const store = JournalStore.open({ stateDir, rebuildIfCorrupt: options.rebuildIfCorrupt });
    let realState: string;
    try {
      realState = realpathSync(stateDir);
    } catch {
      realState = stateDir;
    }
    // The journal's own files must never be journaled (or watched: each commit would be an event).
    // An absolute pattern applies only to the root that contains it.
    const ignore = [...(options.ignore ?? []), realState];
    const roots: RootState[] = [];
    try {
      for (const p of rootPaths) {
        const path = realpathSync(p);
        if (path === realState || isUnder(path, realState)) {
          throw new FanotifyError(`journal: cannot record ${path}: it is inside the journal's state directory ${realState}`, 'EINVAL');
        }
        const row = store.ensureRoot(path);
        if (row.recorderPid !== null && row.recorderPid !== process.pid && pidAlive(row.recorderPid)) {
          throw new FanotifyError(`journal: ${path} is already being recorded by pid ${row.recorderPid}`, 'EBUSY');
        }
        const matcher = new IgnoreMatcher(path, ignore);
        const index = new StateIndex(row.indexed ? store.loadState(row.id) : new Map());
        roots.push({ path, row, ignore: matcher, prefix: path === '/' ? 1 : path.length + 1, index, logger: new ChangeLogger(path, index, matcher) });
      }
    } catch (err) {
      store.close();
      throw err;
    }
    for (const r of roots) store.claim(r.row.id, process.pid);
    const sub = watch(
      roots.map((r) => r.path),
      {
        debounceMs: options.debounceMs ?? 10,
        ignore,
        unlimitedQueue: options.unlimitedQueue ?? true,
        // Each change is checked against the disk and the index: coalescing would guess.
        coalesce: false,
        // A sync cookie means a reader is waiting: log what came before it now.
        flushWhen: (ev) => ev.type === 'create' && basename(ev.path).startsWith(COOKIE_PREFIX),
      },
    );
    const rec = new Recorder(store, roots, sub, options);
    sub.on('events', (batch) => rec.#onBatch(batch));
    await sub.ready;
    for (const r of roots) rec.reconcile(r.path, r.row.indexed ? (r.row.clean ? 'restart' : 'unclean-stop') : 'first-index');
    rec.#live = true;
    for (const batch of rec.#buffered.splice(0)) rec.#apply(batch);
    return rec;
  }

  /** The recorded roots. */
  get roots(): string[] {
    return this.#roots.map((r) => r.path);
  }

  #onBatch(batch: WatchEvent[]): void {
    if (this.#closed) return;
    if (!this.#live) {
      this.#buffered.push(batch);
      return;
    }
    try {
      this.#apply(batch);
    } catch (err) {
      this.#onError(err instanceof Error ? err : new Error(String(err)));
    }
  }

  #rootOf(path: string): RootState | undefined {
    let best: RootState | undefined;
    for (const r of this.#roots) if (isUnder(path, r.path) && (!best || r.path.length > best.path.length)) best = r;
    return best;
  }

  /** Turn a batch into logged changes and state updates: one transaction per root. */
  #apply(batch: WatchEvent[]): void {
    const perRoot = new Map<RootState, PendingCommit>();
    const rescans: { root: RootState; reason: string }[] = [];
    // A cookie says "everything before me is logged": acknowledge it only once this batch is
    // committed (and reconciled), or a reader could answer without the changes ahead of it.
    const cookies: string[] = [];
    for (const ev of batch) {
      const root = this.#rootOf(ev.path);
      if (!root) continue;
      if (ev.type === 'rescan') {
        rescans.push({ root, reason: ev.reason });
        continue;
      }
      if (ev.type === 'error') {
        this.#onError(new Error(`journal: while watching ${root.path}: ${ev.error.message}`));
        continue;
      }
      if (basename(ev.path).startsWith(COOKIE_PREFIX)) {
        if (ev.type === 'create') cookies.push(basename(ev.path).slice(COOKIE_PREFIX.length));
        continue;
      }
      let out = perRoot.get(root);
      if (!out) perRoot.set(root, (out = pendingCommit()));
      const rel = ev.path.slice(root.prefix);
      if (ev.type === 'rename') {
        const from = isUnder(ev.oldPath, root.path) && ev.oldPath !== root.path ? ev.oldPath.slice(root.prefix) : undefined;
        root.logger.rename(from, rel, ev.isDir, ev.time, out);
      } else {
        root.logger.path(rel, ev.type, ev.time, out);
      }
    }
    for (const [root, { changes, state }] of perRoot) {
      if (changes.length === 0 && state.length === 0) continue;
      this.store.commit(root.row.id, changes, state);
      this.stats.changes += changes.length;
      this.stats.commits++;
    }
    for (const { root, reason } of rescans) this.reconcile(root.path, reason);
    this.#maybePrune();
    for (const token of cookies) this.#cookieSeen(token);
  }

  /**
   * Crawl a root, compare it with the state index, and log the differences as ordinary changes.
   * A root's first crawl only builds the index (there is no earlier state to differ from).
   * @returns the number of changes logged.
   */
  reconcile(rootPath: string, reason: string): number {
    const root = this.#roots.find((r) => r.path === rootPath);
    if (!root) throw new Error(`journal: ${rootPath} is not recorded here`);
    const t0 = performance.now();
    const now = withoutDuplicateDirs(root.path, snapshotTreeSync(root.path, root.ignore));
    // Cookies the crawl found were written before it: once it is committed, they are answered
    // (after an overflow their create events may be lost, and a reader would wait in vain).
    const cookies: string[] = [];
    for (const p of [...now.keys()]) {
      const name = basename(p);
      if (!name.startsWith(COOKIE_PREFIX)) continue;
      now.delete(p);
      if (!p.includes('/')) cookies.push(name.slice(COOKIE_PREFIX.length));
    }
    const row = this.store.root(root.path)!;
    const time = Date.now();
    const changes: NewChange[] = [];
    const state: StateUpdate[] = [];
    if (!row.indexed) {
      for (const [path, st] of now) state.push({ op: 'set', path, state: st });
    } else {
      for (const d of withContentsOfDeletedDirs(diffTrees(root.index.entries, now), now)) {
        changes.push({ time, kind: d.type, path: d.path, isDir: d.isDir });
        if (d.type === 'delete') state.push({ op: 'delete', path: d.path });
      }
      for (const d of changes) {
        if (d.kind === 'delete') continue;
        const st = now.get(d.path);
        if (st) state.push({ op: 'set', path: d.path, state: st });
      }
    }
    const ms = performance.now() - t0;
    this.store.commit(row.id, changes, state, { reconcileMs: ms, indexed: !row.indexed });
    root.index.replaceAll(now);
    root.logger.clearStale();
    this.stats.reconciles++;
    this.stats.changes += changes.length;
    for (const token of cookies) this.#cookieSeen(token);
    this.#onReconcile?.(root.path, { changes: changes.length, ms, reason });
    return changes.length;
  }

  #maybePrune(): void {
    const now = Date.now();
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = now;
    for (const r of this.#roots) this.store.prune(r.row.id, this.#retention);
  }

  /** Prune every root now (tests, `fan journal prune`). */
  pruneNow(retention: Retention = this.#retention): void {
    for (const r of this.#roots) this.store.prune(r.row.id, retention);
  }

  #cookieSeen(token: string): void {
    const waiter = this.#cookieWaiters.get(token);
    if (waiter) {
      // A reader in this process: no need to tell other processes (a durable write costs ms).
      this.#cookieWaiters.delete(token);
      waiter();
      return;
    }
    this.store.setMeta(`cookie:${token}`, String(Date.now()));
  }

  /**
   * Resolve once the cookie `token` has been logged (everything before it is committed), or
   * after `timeoutMs`. Register before writing the cookie file.
   * @returns whether the cookie was seen.
   */
  waitForCookie(token: string, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#cookieWaiters.delete(token);
        resolve(false);
      }, timeoutMs);
      this.#cookieWaiters.set(token, () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Stop recording: flush, mark the roots cleanly stopped, close the store. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#sub.close(); // delivers the last batch through #onBatch
    this.#closed = true;
    for (const r of this.#roots) this.store.release(r.row.id);
    this.store.close();
  }
}
