/**
 * The persistent range map: which chunks of which file are present, verified and durable, plus
 * pin, local and last-access state. It lives in SQLite in the state directory, off the marked
 * filesystem, and is the only truth about content (never SEEK_HOLE: a hole and written zeros
 * look alike, and a torn write is not a hole).
 * @packageDocumentation
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** What status reports for a file. */
export type FileState = 'placeholder' | 'partial' | 'present' | 'local';

/** One file's row. */
export interface FileRecord {
  readonly id: number;
  readonly path: string;
  readonly size: number;
  readonly chunks: number;
  /** One bit per chunk, chunk i at byte i>>3, bit i&7. */
  bitmap: Uint8Array;
  /** Chunks present. */
  have: number;
  pinned: boolean;
  local: boolean;
  /** ms since the epoch of the last hydration or access we saw. */
  lastAccess: number;
  /** ctime (ns, as a string) right after the file became present: a later change means local. */
  presentCtime: string | null;
}

/** State of a record, derived. */
export function stateOf(r: FileRecord): FileState {
  if (r.local) return 'local';
  if (r.have >= r.chunks) return 'present';
  return r.have === 0 ? 'placeholder' : 'partial';
}

/** Whether chunk i is present. */
export function hasChunk(r: FileRecord, i: number): boolean {
  return ((r.bitmap[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
}

interface Row {
  id: number;
  path: string;
  size: number;
  chunks: number;
  bitmap: Buffer;
  have: number;
  pinned: number;
  local: number;
  last_access: number;
  present_ctime: string | null;
}

/** The SQLite range map of one mount. */
export class RangeMap {
  readonly #db: Database.Database;
  readonly #setChunks: Database.Statement;
  readonly #setFlags: Database.Statement;

  /** Open (creating) `stateDir/rangemap.db`. */
  constructor(stateDir: string) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.#db = new Database(join(stateDir, 'rangemap.db'));
    // WAL with synchronous=NORMAL: a crash of the process loses nothing; a power loss can lose
    // the last commits, which only makes us fetch again, because data is fdatasync'ed before
    // its chunk is recorded.
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS files (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
        chunks INTEGER NOT NULL, bitmap BLOB NOT NULL, have INTEGER NOT NULL DEFAULT 0,
        pinned INTEGER NOT NULL DEFAULT 0, local INTEGER NOT NULL DEFAULT 0,
        last_access INTEGER NOT NULL DEFAULT 0, present_ctime TEXT);
    `);
    this.#setChunks = this.#db.prepare('UPDATE files SET bitmap = ?, have = ?, last_access = ?, present_ctime = ? WHERE id = ?');
    this.#setFlags = this.#db.prepare('UPDATE files SET pinned = ?, local = ?, last_access = ? WHERE id = ?');
  }

  /** A meta value. */
  meta(key: string): string | undefined {
    return (this.#db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  /** Set a meta value. */
  setMeta(key: string, value: string): void {
    this.#db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /** Insert rows for files not yet known (in one transaction); known rows are kept. */
  addFiles(files: readonly { path: string; size: number; chunks: number }[]): void {
    const ins = this.#db.prepare('INSERT OR IGNORE INTO files (path, size, chunks, bitmap) VALUES (?, ?, ?, ?)');
    this.#db.transaction(() => {
      for (const f of files) ins.run(f.path, f.size, f.chunks, Buffer.alloc(Math.ceil(f.chunks / 8)));
    })();
  }

  /** Every file record. */
  all(): FileRecord[] {
    return (this.#db.prepare('SELECT * FROM files ORDER BY path').all() as Row[]).map((r) => ({
      id: r.id,
      path: r.path,
      size: r.size,
      chunks: r.chunks,
      bitmap: new Uint8Array(r.bitmap),
      have: r.have,
      pinned: r.pinned !== 0,
      local: r.local !== 0,
      lastAccess: r.last_access,
      presentCtime: r.present_ctime,
    }));
  }

  /** Persist a record's chunk state, or the durable part of it given as `durable`. */
  saveChunks(r: FileRecord, durable: { bitmap: Uint8Array; have: number } = r): void {
    this.#setChunks.run(Buffer.from(durable.bitmap), durable.have, r.lastAccess, durable.have >= r.chunks ? r.presentCtime : null, r.id);
  }

  /** Persist a record's pin/local flags and last access. */
  saveFlags(r: FileRecord): void {
    this.#setFlags.run(r.pinned ? 1 : 0, r.local ? 1 : 0, r.lastAccess, r.id);
  }

  /** Run several saves as one commit. */
  batch(fn: () => void): void {
    this.#db.transaction(fn)();
  }

  close(): void {
    this.#db.close();
  }
}
