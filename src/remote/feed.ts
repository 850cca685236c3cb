/**
 * One served root: a watch of it, its id table, and (optionally) its journal for cursors. Turns
 * watch batches into protocol records once, for every subscriber of the root.
 * @packageDocumentation
 */
import { appendFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import type { FileId } from '../kernel/fileid.js';
import { watch, type Subscription, type WatchEvent } from '../watch/index.js';
import { openJournal, rootTag, COOKIE_PREFIX, type Journal, type JournalChange, type SinceResult } from '../journal/index.js';
import { AccessCache } from './access.js';
import { IdTable } from './ids.js';
import type { EventRecord, InvalidateReason } from './protocol.js';

/** What a feed tells each subscriber of its root. */
export interface FeedSubscriber {
  /** Records of feed batch number `no` (numbers grow by one per batch). */
  batch(no: number, records: EventRecord[]): void;
  /** Every change up to the last delivered batch is covered by journal cursor `cursor`. */
  checkpoint(cursor: string): void;
  /** The subscriber must drop its cache; `root-gone` ends the subscription. */
  invalidate(reason: InvalidateReason, detail: string): void;
  /** A non-fatal watch error. */
  error(message: string): void;
}

/** Options of {@link RootFeed.open}. */
export interface FeedOptions {
  /** Batching window of the watch, in ms. */
  readonly debounceMs: number;
  /**
   * Journal state directory: set to enable cursors and resume. The root's id table is saved there
   * when the feed closes and loaded when it opens again, so ids survive a server restart.
   */
  readonly journalStateDir?: string;
  /** A cursor checkpoint is taken after this much quiet following real changes (ms). */
  readonly checkpointQuietMs?: number;
  /**
   * Append one line per watch batch to this file (for benchmarks): `RECV_NS SENT_NS FIRST LAST`,
   * monotonic ns when the batch reached the feed and when every subscriber's frame was written to
   * its socket (or queued behind what the socket holds), and the paths of its first and last
   * `create` record (`-` when none).
   */
  readonly traceFile?: string;
}

/** How long a sync waits to see its cookie in the feed before placing the cursor at "now". */
const MARKER_TIMEOUT_MS = 2000;

function isCookie(path: string): boolean {
  return basename(path).startsWith(COOKIE_PREFIX);
}

/** A watch event or a journal change, reduced to what a record needs. */
interface Change {
  readonly type: 'create' | 'update' | 'delete' | 'rename';
  /** An update of metadata only: sent as kind `attrib`. */
  readonly attribOnly?: boolean;
  readonly path: string;
  readonly oldPath?: string;
  readonly isDir: boolean;
  /** The kernel's id of the object (watch events only): the id table need not ask the disk. */
  readonly fileId?: FileId;
}

const FROM_JOURNAL: Record<JournalChange['kind'], Change['type']> = { created: 'create', updated: 'update', deleted: 'delete', renamed: 'rename' };

/** One watched root shared by its subscribers. */
export class RootFeed {
  readonly table: IdTable;
  /** What each local peer may list below the root; kept current by the feed's own events. */
  readonly access: AccessCache;
  readonly #watch: Subscription;
  readonly #journal: Journal | undefined;
  readonly #subs = new Set<FeedSubscriber>();
  readonly #quietMs: number;
  #batchNo = 0;
  #closed = false;
  /** Serialises journal syncs, so the next cookie seen belongs to the running one. */
  #syncChain: Promise<unknown> = Promise.resolve();
  /** The running sync waits for its cookie: resolved with the number of the batch it ended. */
  #expectMarker: ((batchNo: number) => void) | undefined;
  /** During a checkpoint: batches after its cookie, held until the cursor is known. */
  #held: { no: number; records: EventRecord[] }[] | undefined;
  #checkpointTimer: NodeJS.Timeout | undefined;
  #dirty = false;
  /** The newest checkpoint cursor: every change before it was delivered. */
  #cursor: string | undefined;
  /** Where the id table is saved between runs (with a journal). */
  readonly #idFile: string | undefined;
  readonly #traceFile: string | undefined;
  /** Trace lines not yet appended (written in blocks, so tracing costs few syscalls). */
  #traceLines: string[] = [];

  private constructor(readonly root: string, w: Subscription, journal: Journal | undefined, quietMs: number, idFile: string | undefined, traceFile: string | undefined) {
    this.#idFile = idFile;
    this.#traceFile = traceFile;
    let saved: unknown;
    try {
      if (idFile) saved = JSON.parse(readFileSync(idFile, 'utf8'));
    } catch {
      // None saved yet, or unreadable: new ids, as after any restart without one.
    }
    this.table = new IdTable(root, saved);
    this.access = new AccessCache(root);
    this.#watch = w;
    this.#journal = journal;
    this.#quietMs = quietMs;
    w.on('events', (batch) => this.#onBatch(batch));
  }

  /** Start watching `root` (absolute, real). */
  static async open(root: string, options: FeedOptions): Promise<RootFeed> {
    const journal = options.journalStateDir === undefined ? undefined : await openJournal(root, { stateDir: options.journalStateDir });
    let w: Subscription;
    try {
      w = watch(root, { debounceMs: options.debounceMs, flushWhen: (ev) => ev.type === 'create' && isCookie(ev.path), fileIds: true });
      await w.ready;
    } catch (err) {
      await journal?.close();
      throw err;
    }
    const idFile = options.journalStateDir === undefined ? undefined : join(options.journalStateDir, `ids-${rootTag(root)}.json`);
    const feed = new RootFeed(root, w, journal, options.checkpointQuietMs ?? 100, idFile, options.traceFile);
    if (journal) feed.#cursor = journal.cursor();
    return feed;
  }

  /** True when the feed keeps a journal, so cursors and resume work. */
  get hasJournal(): boolean {
    return this.#journal !== undefined;
  }

  /** The newest cursor known to cover every delivered change (undefined without a journal). */
  get cursor(): string | undefined {
    return this.#cursor;
  }

  /** Number of subscribers. */
  get size(): number {
    return this.#subs.size;
  }

  add(s: FeedSubscriber): void {
    this.#subs.add(s);
  }

  /** Remove a subscriber; true when none is left. */
  remove(s: FeedSubscriber): boolean {
    this.#subs.delete(s);
    return this.#subs.size === 0;
  }

  /** The number of the last delivered batch. */
  get batchNo(): number {
    return this.#batchNo;
  }

  /**
   * What changed after `cursor` (a fresh-instance result has no changes), as records, plus the number of the last feed batch those changes
   * cover: the caller delivers the result, then only feed batches numbered after it.
   */
  async since(cursor: string): Promise<{ result: SinceResult; records: EventRecord[]; coveredBatch: number }> {
    const { result, marker } = await this.#sync(cursor);
    return { result, records: this.#records(result.changes.map((c) => ({ ...c, type: FROM_JOURNAL[c.kind] }))), coveredBatch: marker };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#checkpointTimer);
    await this.#watch.close();
    await this.#syncChain.catch(() => undefined);
    await this.#journal?.close();
    this.#flushTrace();
    if (this.#idFile) {
      try {
        writeFileSync(`${this.#idFile}.tmp`, JSON.stringify(this.table.save()), { mode: 0o600 });
        renameSync(`${this.#idFile}.tmp`, this.#idFile);
      } catch {
        // Not saved: the next run issues new ids, which clients revalidate as after any restart.
      }
    }
  }

  #onBatch(batch: WatchEvent[]): void {
    const recvNs = this.#traceFile === undefined ? 0n : process.hrtime.bigint();
    let firstCreate: string | undefined;
    let lastCreate: string | undefined;
    const changes: Change[] = [];
    let marker = false;
    const flush = (): void => {
      if (changes.length === 0) return;
      const records = this.#records(changes.splice(0));
      if (records.length > 0) this.#deliver(records);
      if (this.#traceFile === undefined) return;
      for (const r of records) {
        if (r.kind !== 'create') continue;
        firstCreate ??= r.path;
        lastCreate = r.path;
      }
    };
    for (const ev of batch) {
      if (ev.type === 'rescan') {
        flush();
        const reason: InvalidateReason = ev.reason === 'overflow' ? 'overflow' : 'root-gone';
        for (const s of [...this.#subs]) s.invalidate(reason, ev.reason);
      } else if (ev.type === 'error') {
        for (const s of this.#subs) s.error(ev.error.message);
      } else if (isCookie(ev.path) || (ev.type === 'rename' && isCookie(ev.oldPath))) {
        if (ev.type === 'create') marker = true;
      } else {
        // A directory whose mode, ACL or place changed: ask the kernel again for its subtree.
        if (ev.isDir) {
          this.access.changed(relative(this.root, ev.path));
          if (ev.type === 'rename') this.access.changed(relative(this.root, ev.oldPath));
        }
        changes.push(ev);
      }
    }
    flush();
    if (this.#traceFile !== undefined) {
      // After the tick's gathered socket writes, which run as a microtask queued before this one.
      queueMicrotask(() => {
        this.#traceLines.push(`${recvNs} ${process.hrtime.bigint()} ${firstCreate ?? '-'} ${lastCreate ?? '-'}\n`);
        if (this.#traceLines.length >= 64) this.#flushTrace();
      });
    }
    if (marker && this.#expectMarker) {
      const resolve = this.#expectMarker;
      this.#expectMarker = undefined;
      resolve(this.#batchNo);
    }
  }

  #flushTrace(): void {
    if (this.#traceFile === undefined || this.#traceLines.length === 0) return;
    try {
      appendFileSync(this.#traceFile, this.#traceLines.join(''));
    } catch {
      // A debugging aid only: a trace that cannot be written never stops the feed.
    }
    this.#traceLines = [];
  }

  #deliver(records: EventRecord[]): void {
    const no = ++this.#batchNo;
    if (this.#held) this.#held.push({ no, records });
    else for (const s of this.#subs) s.batch(no, records);
    if (this.#journal) {
      this.#dirty = true;
      clearTimeout(this.#checkpointTimer);
      this.#checkpointTimer = setTimeout(() => this.#checkpoint(), this.#quietMs);
    }
  }

  /** After quiet: learn the cursor that covers every delivered batch and tell the subscribers. */
  #checkpoint(): void {
    if (!this.#dirty || this.#closed) return;
    this.#dirty = false;
    void this.#sync(this.#cursor, true).then(
      ({ result }) => {
        this.#cursor = result.cursor;
        for (const s of this.#subs) s.checkpoint(result.cursor);
        this.#release();
      },
      () => this.#release(),
    );
  }

  #release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const { no, records } of held) for (const s of this.#subs) s.batch(no, records);
  }

  /** journal.since with a sync cookie; resolves with the batch number the cookie ended. */
  #sync(cursor: string | undefined, hold = false): Promise<{ result: SinceResult; marker: number }> {
    const journal = this.#journal;
    if (!journal) return Promise.reject(new Error('no journal'));
    const run = async (): Promise<{ result: SinceResult; marker: number }> => {
      let timer: NodeJS.Timeout | undefined;
      const seen = new Promise<number>((resolve) => {
        this.#expectMarker = (no) => {
          // Batches after the cookie are not covered by the cursor: hold them until it is sent.
          if (hold) this.#held ??= [];
          resolve(no);
        };
        timer = setTimeout(() => {
          this.#expectMarker = undefined;
          if (hold) this.#held ??= [];
          resolve(this.#batchNo);
        }, MARKER_TIMEOUT_MS);
      });
      try {
        const result = await journal.since(cursor, { sync: true, emptyOnFreshInstance: true });
        const marker = await seen;
        return { result, marker };
      } finally {
        clearTimeout(timer);
        this.#expectMarker = undefined;
      }
    };
    const p = this.#syncChain.then(run, run);
    this.#syncChain = p.catch(() => undefined);
    return p;
  }

  /** Name every change's objects in the id table. */
  #records(changes: readonly Change[]): EventRecord[] {
    const out: EventRecord[] = [];
    const t = this.table;
    // Watch paths are absolute and normal: below the root they start with its path and a slash.
    const prefix = `${this.root}/`;
    const below = (path: string): string | undefined => (path.startsWith(prefix) ? path.slice(prefix.length) : undefined);
    for (const c of changes) {
      const rel = below(c.path);
      if (rel === undefined) continue;
      const name = rel.slice(rel.lastIndexOf('/') + 1);
      const oldRel = c.oldPath === undefined ? undefined : below(c.oldPath);
      try {
        if (c.type === 'rename' && oldRel !== undefined) {
          const { node, oldParent, newParent } = t.renamed(oldRel, rel, c.isDir, c.fileId);
          const oldName = oldRel.slice(oldRel.lastIndexOf('/') + 1);
          out.push({
            kind: 'rename',
            object: t.ref(node),
            parent: t.ref(newParent),
            name,
            path: rel,
            isDir: c.isDir,
            oldParent: t.ref(oldParent),
            oldName,
            newParent: t.ref(newParent),
            newName: name,
            oldPath: oldRel,
          });
        } else if (c.type === 'delete') {
          const { node, parent } = t.deleted(rel, c.isDir);
          out.push({ kind: 'delete', object: t.ref(node), parent: t.ref(parent), name, path: rel, isDir: c.isDir });
        } else {
          const { node, parent } = t.at(rel, c.isDir, c.fileId);
          const kind = c.type === 'rename' ? 'create' : c.type === 'update' && c.attribOnly ? 'attrib' : c.type;
          out.push({ kind, object: t.ref(node), parent: t.ref(parent), name, path: rel, isDir: c.isDir });
        }
      } catch {
        // A path the table cannot name (its directory vanished mid-walk): the next event names it.
      }
    }
    return out;
  }
}
