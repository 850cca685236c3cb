/**
 * journal: persistent "what changed since cursor X", crash safe, with honest fresh instances.
 * @packageDocumentation
 */
import { realpathSync, writeFileSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { IgnoreMatcher, snapshotTreeSync } from '../watch/index.js';
import { joinPath, isUnder } from '../resolve/paths.js';
import { FanotifyError } from '../errors.js';
import { formatCursor, parseCursor, rootTag } from './cursor.js';
import { JournalStore, defaultStateDir, type ChangeKind, type RootRow } from './store.js';
import { Recorder, COOKIE_PREFIX, pidAlive, type RecorderOptions } from './recorder.js';

export { Recorder, DEFAULT_RETENTION, COOKIE_PREFIX, type RecorderOptions, type Retention, pidAlive } from './recorder.js';
export { JournalStore, defaultStateDir, type RootRow, type LoggedChange } from './store.js';
export { parseCursor, formatCursor, rootTag, type CursorParts } from './cursor.js';

/** Why a `since` result is a fresh instance: the caller must treat its view as unknown. */
export type FreshReason =
  /** The cursor is not one of ours. */
  | 'malformed'
  /** The cursor belongs to another journal instance (the database was rebuilt or replaced). */
  | 'other-instance'
  /** The cursor belongs to another root. */
  | 'other-root'
  /** The changes after the cursor were pruned by retention. */
  | 'pruned'
  /** The cursor is ahead of the journal (a restored or rolled-back database). */
  | 'unknown-position'
  /** No cursor was given. */
  | 'no-cursor';

/** One coalesced change. Paths are absolute. */
export interface JournalChange {
  readonly kind: 'created' | 'updated' | 'deleted' | 'renamed';
  readonly path: string;
  /** For `renamed`. */
  readonly oldPath?: string;
  readonly isDir: boolean;
}

/** The answer of {@link Journal.since}. */
export interface SinceResult {
  /** Pass this to the next `since` call. */
  readonly cursor: string;
  /** True when the changes could not be computed from the cursor; see `reason`. */
  readonly freshInstance: boolean;
  readonly reason?: FreshReason;
  /**
   * Coalesced changes in order. On a fresh instance: every existing entry as `created`
   * (or nothing with `emptyOnFreshInstance`).
   */
  readonly changes: JournalChange[];
}

/** Options of {@link Journal.since}. */
export interface SinceOptions {
  /** On a fresh instance, return no changes instead of every existing entry. */
  readonly emptyOnFreshInstance?: boolean;
  /**
   * Before answering, write a cookie file into the root and wait (up to 2 s) until the recorder
   * logged it, so every change made before the call is included. Default true when a recorder
   * is running.
   */
  readonly sync?: boolean;
}

/** Options of {@link openJournal}. */
export interface JournalOptions extends Omit<RecorderOptions, 'onReconcile'> {
  /**
   * `auto` (default): record in this process unless another live process records the root;
   * `false`: only read what others recorded.
   */
  readonly record?: 'auto' | false;
}

/** An open journal for one root. */
export interface Journal {
  readonly root: string;
  /** Who records this root: this process, another one, or nobody. */
  readonly recorder: 'self' | 'other' | 'none';
  /** A cursor at the newest logged change. */
  cursor(): string;
  /** What changed after `cursor`. */
  since(cursor: string | undefined, options?: SinceOptions): Promise<SinceResult>;
  close(): Promise<void>;
}

/** How long `since` waits for its sync cookie to be logged. */
const SYNC_TIMEOUT_MS = 2000;

const KIND: Record<string, JournalChange['kind']> = { create: 'created', update: 'updated', delete: 'deleted', rename: 'renamed' };

/**
 * Open the journal of a root. By default this process records the root while the journal is
 * open (unless a `fan journal run` already does), and reconciles on open, so changes made while
 * nothing recorded are still reported: `since` across a restart is not a fresh instance.
 */
export async function openJournal(root: string, options: JournalOptions = {}): Promise<Journal> {
  let path: string;
  try {
    path = realpathSync(root);
  } catch {
    throw new FanotifyError(`journal: cannot open ${root}: no such directory`, 'ENOENT');
  }
  const stateDir = options.stateDir ?? defaultStateDir();
  const probe = JournalStore.open({ stateDir, rebuildIfCorrupt: options.rebuildIfCorrupt });
  const row = probe.root(path);
  const other = row !== undefined && row.recorderPid !== process.pid && pidAlive(row.recorderPid);
  probe.close();
  let recorder: Recorder | undefined;
  if (options.record !== false && !other) recorder = await Recorder.start([path], options);
  const store = recorder?.store ?? JournalStore.open({ stateDir });
  // What the recorder never logs is never listed either: its ignores and the state directory.
  let realState: string;
  try {
    realState = realpathSync(stateDir);
  } catch {
    realState = stateDir;
  }
  const ignore = new IgnoreMatcher(path, [
    ...(options.ignore ?? []),
    ...(realState !== path && isUnder(realState, path) ? [realState] : []),
  ]);
  return new OpenJournal(path, store, recorder, other ? 'other' : recorder ? 'self' : 'none', ignore);
}

class OpenJournal implements Journal {
  constructor(
    readonly root: string,
    private readonly store: JournalStore,
    private readonly rec: Recorder | undefined,
    readonly recorder: 'self' | 'other' | 'none',
    private readonly ignore: IgnoreMatcher,
  ) {}

  #row(): RootRow | undefined {
    return this.store.root(this.root);
  }

  cursor(): string {
    return formatCursor({ instance: this.store.instance, rootTag: rootTag(this.root), seq: this.#row()?.highSeq ?? 0 });
  }

  async since(cursor: string | undefined, options: SinceOptions = {}): Promise<SinceResult> {
    const live = this.recorder === 'self' || (this.recorder === 'other' && pidAlive(this.#row()?.recorderPid ?? null));
    if (options.sync ?? live) await this.#sync();
    const row = this.#row();
    const high = row?.highSeq ?? 0;
    const next = formatCursor({ instance: this.store.instance, rootTag: rootTag(this.root), seq: high });
    const fresh = (reason: FreshReason): SinceResult => ({
      cursor: next,
      freshInstance: true,
      reason,
      changes: options.emptyOnFreshInstance ? [] : this.#everything(),
    });
    if (cursor === undefined) return fresh('no-cursor');
    const parts = parseCursor(cursor);
    if (!parts) return fresh('malformed');
    if (parts.instance !== this.store.instance) return fresh('other-instance');
    if (parts.rootTag !== rootTag(this.root)) return fresh('other-root');
    if (!row || parts.seq > high) return fresh('unknown-position');
    if (parts.seq < row.lowSeq - 1) return fresh('pruned');
    const abs = (rel: string): string => joinPath(this.root, rel);
    const changes = coalesceLog(this.store.changesAfter(row.id, parts.seq)).map((c): JournalChange => ({
      kind: KIND[c.kind]!,
      path: abs(c.path),
      ...(c.oldPath !== undefined ? { oldPath: abs(c.oldPath) } : {}),
      isDir: c.isDir,
    }));
    return { cursor: next, freshInstance: false, changes };
  }

  /** Every existing entry, as created, in path order. */
  #everything(): JournalChange[] {
    const tree = snapshotTreeSync(this.root, this.ignore);
    return [...tree]
      .filter(([p]) => !p.split('/').pop()!.startsWith(COOKIE_PREFIX))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([p, st]) => ({ kind: 'created', path: joinPath(this.root, p), isDir: st.isDir }));
  }

  /** Write a cookie into the root and wait until the recorder logged it. */
  async #sync(): Promise<void> {
    const token = `${process.pid}-${randomBytes(6).toString('hex')}`;
    const file = joinPath(this.root, `${COOKIE_PREFIX}${token}`);
    const seen = this.rec?.waitForCookie(token, SYNC_TIMEOUT_MS);
    try {
      writeFileSync(file, '');
    } catch {
      return; // A read-only root: answer with what is logged.
    }
    try {
      if (seen) {
        await seen;
        return;
      }
      // Another process records: it acknowledges through the database.
      const end = Date.now() + SYNC_TIMEOUT_MS;
      while (this.store.getMeta(`cookie:${token}`) === undefined && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 2));
      }
      try {
        this.store.deleteMeta(`cookie:${token}`);
      } catch {
        // A read-only store: the recorder's cookie row stays; it is tiny.
      }
    } finally {
      try {
        unlinkSync(file);
      } catch {
        // Already gone.
      }
    }
  }

  async close(): Promise<void> {
    if (this.rec) await this.rec.close();
    else this.store.close();
  }
}

/** A logged change as {@link coalesceLog} takes and gives it (paths relative to the root). */
export interface LogEntry {
  readonly kind: ChangeKind;
  readonly path: string;
  readonly oldPath?: string;
  readonly isDir: boolean;
}

/**
 * Coalesce logged changes per path, in order, so that applying the result to the tree as it was
 * at the cursor gives the tree as it is: create+update → create, create+delete → nothing,
 * delete+create → update, update+delete → delete; renames keep their place.
 *
 * A directory's rename and delete also act on everything below it, so they never move across
 * changes logged below the directory: a directory deleted and created again stays a delete and a
 * create (the delete empties it); a directory created, given contents and then deleted or renamed
 * keeps its create, and its delete or rename follows the contents. After a directory's rename,
 * delete or create, later changes below it start new entries. Something created and renamed over
 * an existing path is a create that replaced it: deleting it later is a delete.
 *
 * O(n · depth).
 */
export function coalesceLog(changes: Iterable<LogEntry>): LogEntry[] {
  /** `replaced`: a create that may have replaced an existing entry, so it cannot cancel out. */
  const slots: ((LogEntry & { replaced?: true }) | undefined)[] = [];
  /** path → index of its pending create/update/delete slot. */
  const byPath = new Map<string, number>();
  /** directory → slot count when it was last created, deleted or renamed: older slots below it are stale. */
  const changedAt = new Map<string, number>();
  /** directory → live slots naming something below it, made since it was last changed. */
  const liveBelow = new Map<string, number>();
  const ancestors = function* (p: string): Generator<string> {
    for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) yield p.slice(0, i);
  };
  /** Count (+1) or uncount (-1) the slot at `at` for the directories above it. */
  const count = (at: number, by: 1 | -1): void => {
    const s = slots[at]!;
    const dirs = new Set(ancestors(s.path));
    if (s.oldPath !== undefined) for (const a of ancestors(s.oldPath)) dirs.add(a);
    for (const a of dirs) if (at >= (changedAt.get(a) ?? -1)) liveBelow.set(a, (liveBelow.get(a) ?? 0) + by);
  };
  /** The pending slot of a path, unless a directory above it changed since. */
  const pending = (path: string): number | undefined => {
    const at = byPath.get(path);
    if (at === undefined || slots[at] === undefined) return undefined;
    for (const a of ancestors(path)) {
      if ((changedAt.get(a) ?? -1) > at) {
        byPath.delete(path);
        return undefined;
      }
    }
    return at;
  };
  /**
   * Something below `dir` may be logged after its slot at `at`. Exact when `dir` was created or
   * renamed at `at` (counting starts there); otherwise it also answers yes for older slots, or
   * for slots it did not count: that only coalesces less.
   */
  const anyBelow = (dir: string, at: number): boolean => (liveBelow.get(dir) ?? 0) > 0 || (changedAt.get(dir) ?? -1) > at;
  const changed = (dir: string): void => {
    changedAt.set(dir, slots.length);
    liveBelow.set(dir, 0);
  };
  const push = (entry: LogEntry & { replaced?: true }): number => {
    const at = slots.push(entry) - 1;
    count(at, 1);
    return at;
  };
  const remove = (at: number): void => {
    count(at, -1);
    slots[at] = undefined;
  };
  const plain = (kind: 'create' | 'update' | 'delete', path: string, isDir: boolean): void => {
    const at = pending(path);
    const prev = at === undefined ? undefined : slots[at];
    const contentsLogged = at !== undefined && prev !== undefined && (isDir || prev.isDir) && anyBelow(path, at);
    // Below a directory deleted or made (again), paths name new things.
    if (isDir && kind !== 'update') changed(path);
    if (at === undefined || prev === undefined) {
      byPath.set(path, push({ kind, path, isDir }));
      return;
    }
    if (kind === 'delete') {
      if (contentsLogged) {
        byPath.set(path, push({ kind, path, isDir }));
      } else if (prev.kind === 'create' && !prev.replaced) {
        remove(at);
        byPath.delete(path);
      } else {
        slots[at] = { kind: 'delete', path, isDir };
      }
    } else if (prev.kind === 'delete' && prev.isDir) {
      // The delete emptied the directory: an update in its place would not.
      byPath.set(path, push({ kind, path, isDir }));
    } else {
      slots[at] = { ...prev, kind: prev.kind === 'create' ? 'create' : 'update', path, isDir };
    }
  };
  for (const c of changes) {
    if (c.kind !== 'rename') {
      plain(c.kind, c.path, c.isDir);
      continue;
    }
    const from = c.oldPath!;
    const at = pending(from);
    const prev = at === undefined ? undefined : slots[at];
    const convert = at !== undefined && prev?.kind === 'create' && !prev.replaced && !(c.isDir && anyBelow(from, at));
    if (c.isDir) {
      changed(from);
      changed(c.path);
    }
    if (convert) {
      // Created and renamed (with nothing logged inside): a create of the new path, which
      // replaced whatever was there.
      remove(at!);
      byPath.delete(from);
      if (pending(c.path) !== undefined) plain('create', c.path, c.isDir);
      else byPath.set(c.path, push({ kind: 'create', path: c.path, isDir: c.isDir, replaced: true }));
      continue;
    }
    byPath.delete(from);
    byPath.delete(c.path);
    push({ kind: 'rename', path: c.path, oldPath: from, isDir: c.isDir });
  }
  return slots.filter((s) => s !== undefined).map(({ replaced: _, ...entry }) => entry);
}
