/**
 * The journal's SQLite store: per root, an append-only change log and an index of the last known
 * state of every path.
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { FanotifyError } from '../errors.js';
import type { EntryState } from '../watch/index.js';

/** Kinds of logged changes. */
export type ChangeKind = 'create' | 'update' | 'delete' | 'rename';

/** One logged change. Paths are relative to the root. */
export interface LoggedChange {
  readonly seq: number;
  readonly time: number;
  readonly kind: ChangeKind;
  readonly path: string;
  readonly oldPath?: string;
  readonly isDir: boolean;
}

/** A change to append (its seq is given by the store). */
export type NewChange = Omit<LoggedChange, 'seq'>;

/** A root as the store knows it. */
export interface RootRow {
  readonly id: number;
  readonly path: string;
  /** Oldest retained sequence number; a cursor at `lowSeq - 1` or later is continuous. */
  readonly lowSeq: number;
  /** Newest sequence number (0: none yet). */
  readonly highSeq: number;
  readonly recorderPid: number | null;
  /** 0 while a recorder runs or after it died; 1 after a clean stop. */
  readonly clean: number;
  /** 1 once the state index was built by a first crawl. */
  readonly indexed: number;
  readonly lastReconcileAt: number | null;
  readonly lastReconcileMs: number | null;
  readonly lastReconcileChanges: number | null;
}

/** The default state directory: $XDG_STATE_HOME/fanotify, /var/lib/fanotify for root, else ~/.local/state/fanotify. */
export function defaultStateDir(): string {
  if (process.env.XDG_STATE_HOME) return join(process.env.XDG_STATE_HOME, 'fanotify');
  if (process.getuid?.() === 0) return '/var/lib/fanotify';
  return join(process.env.HOME ?? '/tmp', '.local', 'state', 'fanotify');
}

const SCHEMA_VERSION = '1';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL UNIQUE,
  low_seq INTEGER NOT NULL DEFAULT 1,
  high_seq INTEGER NOT NULL DEFAULT 0,
  recorder_pid INTEGER,
  clean INTEGER NOT NULL DEFAULT 1,
  indexed INTEGER NOT NULL DEFAULT 0,
  last_reconcile_at REAL,
  last_reconcile_ms REAL,
  last_reconcile_changes INTEGER
);
CREATE TABLE IF NOT EXISTS changes (
  root_id INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  time REAL NOT NULL,
  kind TEXT NOT NULL,
  path TEXT NOT NULL,
  old_path TEXT,
  is_dir INTEGER NOT NULL,
  PRIMARY KEY (root_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
  root_id INTEGER NOT NULL,
  path TEXT NOT NULL,
  is_dir INTEGER NOT NULL,
  ino INTEGER NOT NULL,
  size INTEGER NOT NULL,
  mtime_ms REAL NOT NULL,
  ctime_ms REAL NOT NULL,
  btime_ms REAL NOT NULL DEFAULT 0,
  PRIMARY KEY (root_id, path)
) WITHOUT ROWID;
`;

/** Columns added after schema 1 shipped: added in place to older databases (still schema 1). */
const ADDED_COLUMNS = [{ table: 'state', column: 'btime_ms', ddl: 'ALTER TABLE state ADD COLUMN btime_ms REAL NOT NULL DEFAULT 0' }];

/** Options of {@link JournalStore.open}. */
export interface StoreOptions {
  /** Directory of journal.db. Default {@link defaultStateDir}. */
  readonly stateDir?: string;
  /** Open read-only (readers that never record). */
  readonly readonly?: boolean;
  /**
   * When the database is corrupt: rename it to journal.db.corrupt-<time> and start a new one
   * (a new instance: every old cursor becomes a fresh instance). Default false: throw.
   */
  readonly rebuildIfCorrupt?: boolean;
}

/** Code of a journal.db truncated to 0 bytes (SQLite would silently start a new database in it). */
const EMPTY = 'EMPTY';

function isCorruption(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_IOERR_SHORT_READ' || code === EMPTY;
}

/** Row shape of `changes`. */
interface ChangeRow {
  seq: number;
  time: number;
  kind: string;
  path: string;
  old_path: string | null;
  is_dir: number;
}

/** The SQLite store of one state directory. */
export class JournalStore {
  readonly #db: Database.Database;
  /** The instance id: random, made with the database. */
  readonly instance: string;
  readonly path: string;

  private constructor(db: Database.Database, path: string) {
    this.#db = db;
    this.path = path;
    this.instance = (db.prepare(`SELECT value FROM meta WHERE key = 'instance'`).get() as { value: string }).value;
  }

  /**
   * Open (creating when missing) the store of a state directory.
   * @throws FanotifyError naming the file and the recovery when it is corrupt.
   */
  static open(options: StoreOptions = {}): JournalStore {
    const dir = options.stateDir ?? defaultStateDir();
    const file = join(dir, 'journal.db');
    if (options.readonly && !existsSync(file)) {
      throw new FanotifyError(`journal: no journal in ${dir} (run \`fan journal run ROOT\` to start one)`, 'ENOENT');
    }
    if (!options.readonly) mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      return JournalStore.#openFile(file, options.readonly ?? false);
    } catch (err) {
      if (!isCorruption(err)) throw err;
      if (!options.rebuildIfCorrupt) {
        const code = (err as { code?: string }).code;
        throw new FanotifyError(
          `journal: ${file} is corrupt (${code === EMPTY ? 'empty: truncated to 0 bytes' : code}): run \`fan journal rebuild\` ` +
            '(it keeps the damaged file as journal.db.corrupt-<time> and starts a new journal; old cursors become fresh instances)',
          'EJOURNALCORRUPT',
        );
      }
      const aside = `${file}.corrupt-${Date.now()}`;
      renameSync(file, aside);
      for (const ext of ['-wal', '-shm']) if (existsSync(file + ext)) renameSync(file + ext, aside + ext);
      return JournalStore.#openFile(file, false);
    }
  }

  static #openFile(file: string, readonly: boolean): JournalStore {
    // A new database gets its first page at once (journal_mode below): an existing empty file is a
    // truncated journal, not a new one.
    if (existsSync(file) && statSync(file).size === 0) {
      throw Object.assign(new Error(`${file} is empty`), { code: EMPTY });
    }
    const db = new Database(file, { readonly, fileMustExist: readonly });
    try {
      db.pragma('busy_timeout = 5000');
      if (!readonly) {
        db.pragma('journal_mode = WAL');
        // FULL: a commit is on disk when it returns; that is when a change becomes visible.
        db.pragma('synchronous = FULL');
        db.exec(SCHEMA);
        for (const c of ADDED_COLUMNS) {
          const cols = db.prepare(`PRAGMA table_info(${c.table})`).all() as { name: string }[];
          if (!cols.some((x) => x.name === c.column)) db.exec(c.ddl);
        }
        const version = db.prepare(`SELECT value FROM meta WHERE key = 'schema'`).get() as { value: string } | undefined;
        if (version && version.value !== SCHEMA_VERSION) {
          throw new FanotifyError(`journal: ${file} has schema ${version.value}, this version reads ${SCHEMA_VERSION}`, 'EJOURNALVERSION');
        }
        db.prepare(`INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?), ('instance', ?)`).run(
          SCHEMA_VERSION,
          randomBytes(16).toString('hex'),
        );
      }
      // Any page read can reveal corruption; check the header and the schema now, not mid-query.
      const check = db.pragma('quick_check', { simple: true });
      if (check !== 'ok') throw Object.assign(new Error(`quick_check: ${String(check)}`), { code: 'SQLITE_CORRUPT' });
      return new JournalStore(db, file);
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /** Size of the database files in bytes. */
  get sizeBytes(): number {
    let n = 0;
    for (const ext of ['', '-wal']) {
      try {
        n += statSync(this.path + ext).size;
      } catch {
        // No WAL yet.
      }
    }
    return n;
  }

  /** Every root known to the store. */
  roots(): RootRow[] {
    return (this.#db.prepare('SELECT * FROM roots ORDER BY path').all() as Record<string, unknown>[]).map(toRootRow);
  }

  /** The row of a root, or undefined. */
  root(path: string): RootRow | undefined {
    const row = this.#db.prepare('SELECT * FROM roots WHERE path = ?').get(path) as Record<string, unknown> | undefined;
    return row && toRootRow(row);
  }

  /** The row of a root, created when missing. */
  ensureRoot(path: string): RootRow {
    this.#db.prepare('INSERT OR IGNORE INTO roots (path) VALUES (?)').run(path);
    return this.root(path)!;
  }

  /** Record that a recorder (this process) runs for a root: not clean until it stops. */
  claim(rootId: number, pid: number): void {
    this.#db.prepare('UPDATE roots SET recorder_pid = ?, clean = 0 WHERE id = ?').run(pid, rootId);
  }

  /** Record a clean stop. */
  release(rootId: number): void {
    this.#db.prepare('UPDATE roots SET recorder_pid = NULL, clean = 1 WHERE id = ?').run(rootId);
  }

  /** The last known state of every path of a root. */
  loadState(rootId: number): Map<string, EntryState> {
    const rows = this.#db
      .prepare('SELECT path, is_dir, ino, size, mtime_ms, ctime_ms, btime_ms FROM state WHERE root_id = ?')
      .raw()
      .all(rootId) as [string, number, number, number, number, number, number][];
    const map = new Map<string, EntryState>();
    for (const [path, isDir, ino, size, mtimeMs, ctimeMs, birthtimeMs] of rows) {
      map.set(path, { isDir: isDir === 1, ino, birthtimeMs, size, mtimeMs, ctimeMs });
    }
    return map;
  }

  /**
   * Append changes and apply state updates in one transaction (a group commit): once it returns,
   * the changes are durable and visible to readers.
   * @returns the new high sequence number.
   */
  commit(rootId: number, changes: readonly NewChange[], state: readonly StateUpdate[], extra: CommitExtra = {}): number {
    this.#commitTx ??= this.#prepareCommit();
    return this.#commitTx(rootId, changes, state, extra);
  }

  #commitTx: ((rootId: number, changes: readonly NewChange[], state: readonly StateUpdate[], extra: CommitExtra) => number) | undefined;

  #prepareCommit(): (rootId: number, changes: readonly NewChange[], state: readonly StateUpdate[], extra: CommitExtra) => number {
    const db = this.#db;
    const high = db.prepare('SELECT high_seq FROM roots WHERE id = ?').pluck();
    const insert = db.prepare('INSERT INTO changes (root_id, seq, time, kind, path, old_path, is_dir) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const setHigh = db.prepare('UPDATE roots SET high_seq = ? WHERE id = ?');
    const upsert = db.prepare(
      'INSERT OR REPLACE INTO state (root_id, path, is_dir, ino, size, mtime_ms, ctime_ms, btime_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const delOne = db.prepare('DELETE FROM state WHERE root_id = ? AND path = ?');
    // Everything strictly below a directory: "dir/" <= path < "dir0" ('0' follows '/').
    const delBelow = db.prepare('DELETE FROM state WHERE root_id = ? AND path >= ? AND path < ?');
    const moveBelow = db.prepare(
      'UPDATE OR REPLACE state SET path = ? || substr(path, ?) WHERE root_id = ? AND path >= ? AND path < ?',
    );
    const moveOne = db.prepare('UPDATE OR REPLACE state SET path = ? WHERE root_id = ? AND path = ?');
    const reconciled = db.prepare(
      'UPDATE roots SET last_reconcile_at = ?, last_reconcile_ms = ?, last_reconcile_changes = ? WHERE id = ?',
    );
    const markIndexed = db.prepare('UPDATE roots SET indexed = 1 WHERE id = ?');
    return db.transaction((rootId: number, changes: readonly NewChange[], state: readonly StateUpdate[], extra: CommitExtra): number => {
      let seq = high.get(rootId) as number;
      for (const c of changes) {
        seq++;
        insert.run(rootId, seq, c.time, c.kind, c.path, c.oldPath ?? null, c.isDir ? 1 : 0);
      }
      if (changes.length > 0) setHigh.run(seq, rootId);
      for (const u of state) {
        if (u.op === 'set') {
          upsert.run(rootId, u.path, u.state.isDir ? 1 : 0, u.state.ino, u.state.size, u.state.mtimeMs, u.state.ctimeMs, u.state.birthtimeMs ?? 0);
        } else if (u.op === 'delete') {
          delOne.run(rootId, u.path);
          delBelow.run(rootId, `${u.path}/`, `${u.path}0`);
        } else {
          moveBelow.run(`${u.to}/`, u.from.length + 2, rootId, `${u.from}/`, `${u.from}0`);
          moveOne.run(u.to, rootId, u.from);
        }
      }
      if (extra.reconcileMs !== undefined) reconciled.run(Date.now(), extra.reconcileMs, changes.length, rootId);
      if (extra.indexed) markIndexed.run(rootId);
      return seq;
    });
  }

  /** Changes of a root after `seq`, in order. */
  changesAfter(rootId: number, seq: number): LoggedChange[] {
    const rows = this.#db
      .prepare('SELECT seq, time, kind, path, old_path, is_dir FROM changes WHERE root_id = ? AND seq > ? ORDER BY seq')
      .all(rootId, seq) as ChangeRow[];
    return rows.map((r) => ({
      seq: r.seq,
      time: r.time,
      kind: r.kind as ChangeKind,
      path: r.path,
      ...(r.old_path !== null ? { oldPath: r.old_path } : {}),
      isDir: r.is_dir === 1,
    }));
  }

  /** Number of logged changes of a root. */
  changeCount(rootId: number): number {
    return this.#db.prepare('SELECT count(*) FROM changes WHERE root_id = ?').pluck().get(rootId) as number;
  }

  /**
   * Drop old changes: those older than `maxAgeMs`, and all but the newest `maxChanges`. Moves the
   * root's low-water mark, so cursors before it become fresh instances.
   * @returns how many changes were dropped.
   */
  prune(rootId: number, retention: { maxAgeMs?: number; maxChanges?: number }): number {
    const db = this.#db;
    return db.transaction(() => {
      const row = db.prepare('SELECT low_seq, high_seq FROM roots WHERE id = ?').get(rootId) as { low_seq: number; high_seq: number };
      let cut = row.low_seq;
      if (retention.maxChanges !== undefined) cut = Math.max(cut, row.high_seq - retention.maxChanges + 1);
      if (retention.maxAgeMs !== undefined) {
        const first = db
          .prepare('SELECT min(seq) FROM changes WHERE root_id = ? AND time >= ?')
          .pluck()
          .get(rootId, Date.now() - retention.maxAgeMs) as number | null;
        cut = Math.max(cut, first ?? row.high_seq + 1);
      }
      if (cut <= row.low_seq) return 0;
      const r = db.prepare('DELETE FROM changes WHERE root_id = ? AND seq < ?').run(rootId, cut);
      db.prepare('UPDATE roots SET low_seq = ? WHERE id = ?').run(cut, rootId);
      return r.changes;
    })();
  }

  /** Set a meta value (sync cookies). */
  setMeta(key: string, value: string): void {
    this.#db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)').run(key, value);
  }

  /** Read a meta value. */
  getMeta(key: string): string | undefined {
    return (this.#db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  /** Delete a meta value. */
  deleteMeta(key: string): void {
    this.#db.prepare('DELETE FROM meta WHERE key = ?').run(key);
  }

  close(): void {
    this.#db.close();
  }
}

/** Bookkeeping written with a commit. */
export interface CommitExtra {
  /** This commit is a reconciliation that took this long. */
  readonly reconcileMs?: number;
  /** This commit completes the first index of the root. */
  readonly indexed?: boolean;
}

/** A change to the state index. */
export type StateUpdate =
  | { readonly op: 'set'; readonly path: string; readonly state: EntryState }
  | { readonly op: 'delete'; readonly path: string }
  | { readonly op: 'move'; readonly from: string; readonly to: string };

function toRootRow(r: Record<string, unknown>): RootRow {
  return {
    id: r.id as number,
    path: r.path as string,
    lowSeq: r.low_seq as number,
    highSeq: r.high_seq as number,
    recorderPid: (r.recorder_pid as number | null) ?? null,
    clean: r.clean as number,
    indexed: r.indexed as number,
    lastReconcileAt: (r.last_reconcile_at as number | null) ?? null,
    lastReconcileMs: (r.last_reconcile_ms as number | null) ?? null,
    lastReconcileChanges: (r.last_reconcile_changes as number | null) ?? null,
  };
}
