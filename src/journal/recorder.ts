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
  stateOfPath,
  type Subscription,
  type WatchEvent,
} from '../watch/index.js';
import { isUnder } from '../resolve/paths.js';
import { FanotifyError } from '../errors.js';
import { JournalStore, defaultStateDir, type NewChange, type RootRow, type StateUpdate } from './store.js';

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
        roots.push({ path, row, ignore: new IgnoreMatcher(path, ignore), prefix: path === '/' ? 1 : path.length + 1 });
      }
    } catch (err) {
      store.close();
      throw err;
    }
    for (const r of roots) store.claim(r.row.id, process.pid);
    const sub = watch(
      roots.map((r) => r.path),
      { debounceMs: options.debounceMs ?? 10, ignore },
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
    const perRoot = new Map<RootState, { changes: NewChange[]; state: StateUpdate[] }>();
    const rescans: { root: RootState; reason: string }[] = [];
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
        if (ev.type === 'create') this.#cookieSeen(basename(ev.path).slice(COOKIE_PREFIX.length));
        continue;
      }
      let entry = perRoot.get(root);
      if (!entry) perRoot.set(root, (entry = { changes: [], state: [] }));
      const rel = ev.path.slice(root.prefix);
      const time = ev.time;
      if (ev.type === 'rename') {
        if (!isUnder(ev.oldPath, root.path)) continue;
        const oldRel = ev.oldPath.slice(root.prefix);
        entry.changes.push({ time, kind: 'rename', path: rel, oldPath: oldRel, isDir: ev.isDir });
        entry.state.push({ op: 'move', from: oldRel, to: rel });
        // A rename changes the inode's ctime: index it as it is now, or a restart sees an update.
        const st = stateOfPath(ev.path);
        if (st) entry.state.push({ op: 'set', path: rel, state: st });
      } else if (ev.type === 'delete') {
        entry.changes.push({ time, kind: 'delete', path: rel, isDir: ev.isDir });
        entry.state.push({ op: 'delete', path: rel });
      } else {
        entry.changes.push({ time, kind: ev.type, path: rel, isDir: ev.isDir });
        const st = stateOfPath(ev.path);
        // Gone already: its delete is on the way and will clear the index entry.
        if (st) entry.state.push({ op: 'set', path: rel, state: st });
      }
    }
    for (const [root, { changes, state }] of perRoot) {
      this.store.commit(root.row.id, changes, state);
      this.stats.changes += changes.length;
      this.stats.commits++;
    }
    for (const { root, reason } of rescans) this.reconcile(root.path, reason);
    this.#maybePrune();
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
    const now = snapshotTreeSync(root.path, root.ignore);
    for (const p of [...now.keys()]) if (basename(p).startsWith(COOKIE_PREFIX)) now.delete(p);
    const row = this.store.root(root.path)!;
    const time = Date.now();
    const changes: NewChange[] = [];
    const state: StateUpdate[] = [];
    if (!row.indexed) {
      for (const [path, st] of now) state.push({ op: 'set', path, state: st });
    } else {
      const before = this.store.loadState(row.id);
      for (const d of diffTrees(before, now)) {
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
    this.stats.reconciles++;
    this.stats.changes += changes.length;
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
    this.store.setMeta(`cookie:${token}`, String(Date.now()));
    this.#cookieWaiters.get(token)?.();
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
