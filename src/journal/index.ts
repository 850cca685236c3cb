/**
 * journal: persistent "what changed since cursor X", crash safe, with honest fresh instances.
 * @packageDocumentation
 */
import { realpathSync, writeFileSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { coalesce, snapshotTreeSync, type WatchEvent } from '../watch/index.js';
import { joinPath } from '../resolve/paths.js';
import { FanotifyError } from '../errors.js';
import { formatCursor, parseCursor, rootTag } from './cursor.js';
import { JournalStore, defaultStateDir, type RootRow } from './store.js';
import { Recorder, COOKIE_PREFIX, pidAlive, type RecorderOptions } from './recorder.js';

export { Recorder, DEFAULT_RETENTION, type RecorderOptions, type Retention, pidAlive } from './recorder.js';
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
  return new OpenJournal(path, store, recorder, other ? 'other' : recorder ? 'self' : 'none');
}

class OpenJournal implements Journal {
  constructor(
    readonly root: string,
    private readonly store: JournalStore,
    private readonly rec: Recorder | undefined,
    readonly recorder: 'self' | 'other' | 'none',
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
    const logged = this.store.changesAfter(row.id, parts.seq);
    const abs = (rel: string): string => joinPath(this.root, rel);
    const events: WatchEvent[] = logged.map((c) =>
      c.kind === 'rename'
        ? { type: 'rename', path: abs(c.path), oldPath: abs(c.oldPath!), isDir: c.isDir, time: c.time }
        : { type: c.kind, path: abs(c.path), isDir: c.isDir, time: c.time },
    );
    const changes = coalesce(events).map((e): JournalChange => ({
      kind: KIND[e.type]!,
      path: e.path,
      ...(e.type === 'rename' ? { oldPath: e.oldPath } : {}),
      isDir: e.isDir,
    }));
    return { cursor: next, freshInstance: false, changes };
  }

  /** Every existing entry, as created, in path order. */
  #everything(): JournalChange[] {
    const tree = snapshotTreeSync(this.root);
    return [...tree]
      .filter(([p]) => !p.split('/').pop()!.startsWith(COOKIE_PREFIX))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([p, st]) => ({ kind: 'created', path: joinPath(this.root, p), isDir: st.isDir }));
  }

  /** Write a cookie into the root and wait until the recorder logged it. */
  async #sync(): Promise<void> {
    const token = `${process.pid}-${randomBytes(6).toString('hex')}`;
    const file = joinPath(this.root, `${COOKIE_PREFIX}${token}`);
    try {
      writeFileSync(file, '');
    } catch {
      return; // A read-only root: answer with what is logged.
    }
    try {
      const end = Date.now() + 2000;
      while (this.store.getMeta(`cookie:${token}`) === undefined && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 2));
      }
    } finally {
      try {
        unlinkSync(file);
      } catch {
        // Already gone.
      }
      try {
        this.store.deleteMeta(`cookie:${token}`);
      } catch {
        // A read-only store: the recorder's cookie row stays; it is tiny.
      }
    }
  }

  async close(): Promise<void> {
    if (this.rec) await this.rec.close();
    else this.store.close();
  }
}
