/**
 * Fetching content into placeholders: missing chunks are read from the source (adjacent ones in
 * one request), verified against the manifest, written, made durable, and only then recorded in
 * the range map. One fetch per chunk at a time, shared by every reader waiting for it.
 * @packageDocumentation
 */
import { webcrypto } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileEntry } from './manifest.js';
import { hasChunk, stateOf, type FileRecord, type RangeMap } from './rangemap.js';
import type { Source } from './source.js';

/** One file the hydrator serves: its manifest entry, range map record and in-memory state. */
export interface Tracked {
  readonly entry: FileEntry;
  readonly rec: FileRecord;
  /** Chunk index → the fetch that will bring it. */
  readonly inflight: Map<number, Promise<void>>;
  /** Last chunk a reader touched, for sequential read-ahead; -1 before any. */
  lastChunk: number;
  /** First chunk of the current sequential streak (the read-ahead window grows with it). */
  streakStart: number;
  /** Reads in a row, each starting where the last ended, since one at offset 0; 0 if none. */
  fromStart: number;
  /** Where the last of those reads ended. */
  fromStartEnd: number;
  /** Our writer, opened on the backing path (not through the user-visible mount). */
  writer: { fh: Promise<FileHandle>; users: number; idle: NodeJS.Timeout | undefined } | undefined;
  /** Eviction in progress: opens are refused with EBUSY. */
  evicting: boolean;
  /** Chunks written but not yet durable, so not yet in the range map. */
  readonly unsynced: Set<number>;
}

/** Parallel requests that stream the rest of a file read from its start. */
const WHOLE_FILE_STREAMS = 4;

/** How long written chunks wait to be made durable together. */
const FLUSH_DELAY_MS = 100;

/** Options of {@link Hydrator}. */
export interface HydratorOptions {
  readonly source: Source;
  readonly chunkSize: number;
  /** The backing directory holding the placeholders. */
  readonly backing: string;
  readonly rangeMap: RangeMap;
  /** Chunks fetched ahead of a sequential reader. Default 24. */
  readonly readAhead?: number;
  /** Most chunks merged into one request. Default 8. */
  readonly maxRun?: number;
  /** Extra fetches of a run whose bytes fail verification. Default 2. */
  readonly verifyRetries?: number;
  /** Every chunk of a file is written (durable soon after): stop intercepting it. */
  readonly onPresent?: (t: Tracked) => void;
  /** Bytes were hydrated into a file (for progress and cache accounting). */
  readonly onBytes?: (t: Tracked, bytes: number) => void;
  /** Background work (read-ahead, hydration after a write) failed. */
  readonly onBackgroundError?: (t: Tracked, err: unknown) => void;
}

/** Content fetching, verification and recording for every file of one mount. */
export class Hydrator {
  readonly #o: HydratorOptions;
  readonly #readAhead: number;
  readonly #maxRun: number;
  readonly #dirty = new Set<Tracked>();
  #flushTimer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();

  constructor(options: HydratorOptions) {
    this.#o = options;
    this.#readAhead = options.readAhead ?? 24;
    this.#maxRun = options.maxRun ?? 8;
  }

  /** Absolute backing path of a file. */
  backingPath(t: Tracked): string {
    return join(this.#o.backing, t.entry.path);
  }

  /** The chunk indices [first, last] covering bytes [offset, offset+count) of the file, clamped. */
  chunksOf(t: Tracked, offset: number, count: number): [number, number] | undefined {
    const n = t.rec.chunks;
    if (n === 0) return undefined;
    const cs = this.#o.chunkSize;
    const first = Math.min(Math.floor(offset / cs), n - 1);
    const last = Math.min(Math.floor((offset + Math.max(count, 1) - 1) / cs), n - 1);
    return [first, last];
  }

  /**
   * Make bytes [offset, offset+count) present; for a reader moving forward, start fetching the
   * following chunks in the background.
   */
  async access(t: Tracked, offset: number, count: number): Promise<void> {
    const span = this.chunksOf(t, offset, count);
    if (!span) return;
    const [first, last] = span;
    const sequential = first === t.lastChunk || first === t.lastChunk + 1;
    if (!sequential) t.streakStart = first;
    t.lastChunk = last;
    t.fromStart = offset === 0 ? 1 : t.fromStart > 0 && offset === t.fromStartEnd ? t.fromStart + 1 : 0;
    t.fromStartEnd = offset + count;
    if (t.fromStart === 2) {
      // A second read continuing the first one at offset 0 (cp, tar, sha256sum): the whole file
      // is wanted. Stream all of it now in a few large requests rather than a growing window.
      const missing = t.rec.chunks - t.rec.have;
      this.ensure(t, 0, t.rec.chunks - 1, Math.max(this.#maxRun, Math.ceil(missing / WHOLE_FILE_STREAMS))).catch((err: unknown) => this.#o.onBackgroundError?.(t, err));
    } else if (sequential && t.fromStart < 2 && last + 1 < t.rec.chunks) {
      // Like the kernel's readahead, the window doubles with the streak: a file read from start
      // to end is soon fetched whole, becomes present and stops costing an event per read.
      const window = Math.max(this.#readAhead, 2 * (last - t.streakStart + 1));
      this.ensure(t, last + 1, Math.min(t.rec.chunks - 1, last + window)).catch((err: unknown) => this.#o.onBackgroundError?.(t, err));
    }
    await this.ensure(t, first, last);
  }

  /** Make the whole file present. */
  hydrateAll(t: Tracked): Promise<void> {
    return t.rec.chunks === 0 ? Promise.resolve() : this.ensure(t, 0, t.rec.chunks - 1);
  }

  /**
   * Make chunks [first, last] present, fetching missing ones (up to `maxRun` adjacent ones in one
   * request) and joining running fetches.
   */
  ensure(t: Tracked, first: number, last: number, maxRun = this.#maxRun): Promise<void> {
    const waits: Promise<void>[] = [];
    let runStart = -1;
    const flush = (end: number): void => {
      if (runStart >= 0) waits.push(this.#fetchRun(t, runStart, end));
      runStart = -1;
    };
    for (let i = first; i <= last; i++) {
      if (hasChunk(t.rec, i)) {
        flush(i - 1);
        continue;
      }
      const running = t.inflight.get(i);
      if (running) {
        flush(i - 1);
        waits.push(running);
        continue;
      }
      if (runStart < 0) runStart = i;
      else if (i - runStart + 1 > maxRun) {
        flush(i - 1);
        runStart = i;
      }
    }
    flush(last);
    return waits.length === 1 ? (waits[0] as Promise<void>) : Promise.all(waits).then(() => undefined);
  }

  /** Fetch chunks [a, b], each one waited for on its own: a reader needs only its own chunks. */
  #fetchRun(t: Tracked, a: number, b: number): Promise<void> {
    const settle = new Map<number, (err?: unknown) => void>();
    const chunks: Promise<void>[] = [];
    for (let i = a; i <= b; i++) {
      const p = new Promise<void>((resolve, reject) => {
        settle.set(i, (err) => {
          if (t.inflight.get(i) === p) t.inflight.delete(i);
          if (err === undefined) resolve();
          else reject(err);
        });
      });
      // Read-ahead chunks may have no reader: their failure is reported by whoever waits.
      p.catch(() => undefined);
      t.inflight.set(i, p);
      chunks.push(p);
    }
    void this.#streamRun(t, a, b, settle);
    return Promise.all(chunks).then(() => undefined);
  }

  /**
   * One request for the whole run; each chunk is verified and written as soon as its bytes are
   * in. Whatever the stream does not deliver verified (failure, bad bytes) is fetched again in
   * runs, with the source's retries and re-fetches on a bad hash, and fails only then.
   */
  async #streamRun(t: Tracked, a: number, b: number, settle: Map<number, (err?: unknown) => void>): Promise<void> {
    const cs = this.#o.chunkSize;
    const offset = a * cs;
    const handled: Promise<void>[] = [];
    try {
      await this.#o.source.readPieces(t.entry.path, offset, Math.min(t.rec.size, (b + 1) * cs) - offset, cs, (k, bytes) => {
        const i = a + k;
        const p = this.#firstBadChunk(t, i, i, bytes)
          .then(async (bad) => {
            if (bad >= 0) return;
            await this.#store(t, i, i, bytes);
            settle.get(i)?.();
            settle.delete(i);
          })
          .catch(() => undefined);
        handled.push(p);
        return p;
      });
    } catch {
      // Fetched again below.
    }
    await Promise.all(handled);
    const left = [...settle.keys()];
    for (let k = 0; k < left.length; ) {
      const start = left[k] as number;
      let end = start;
      while (k + 1 < left.length && left[k + 1] === end + 1 && end - start + 1 < this.#maxRun) end = left[++k] as number;
      k++;
      let err: unknown;
      try {
        await this.#fetchAndStore(t, start, end);
      } catch (e) {
        err = e;
      }
      for (let i = start; i <= end; i++) settle.get(i)?.(err);
    }
  }

  async #fetchAndStore(t: Tracked, a: number, b: number): Promise<void> {
    const cs = this.#o.chunkSize;
    const offset = a * cs;
    const length = Math.min(t.rec.size, (b + 1) * cs) - offset;
    let bytes: Buffer | undefined;
    let bad = -1;
    for (let attempt = 0; attempt <= (this.#o.verifyRetries ?? 2); attempt++) {
      bytes = await this.#o.source.read(t.entry.path, offset, length);
      bad = await this.#firstBadChunk(t, a, b, bytes);
      if (bad < 0) break;
    }
    if (bad >= 0 || !bytes) {
      throw new Error(`${t.entry.path}: chunk ${bad} does not match its SHA-256 in the manifest (source changed or corrupt)`);
    }
    await this.#store(t, a, b, bytes);
  }

  /** Write verified chunks [a, b] and record them (durable later, see flush). */
  async #store(t: Tracked, a: number, b: number, bytes: Buffer): Promise<void> {
    const offset = a * this.#o.chunkSize;
    await this.#withWriter(t, async (fh) => {
      // Never write past the end of a file the user truncated: that would resurrect content.
      const end = Math.min(bytes.length, (await fh.stat()).size - offset);
      let done = 0;
      while (done < end) {
        const { bytesWritten } = await fh.write(bytes, done, end - done, offset + done);
        done += bytesWritten;
      }
    });
    // Verified bytes are in the page cache: readers may have them now. The range map learns of
    // them only after they are durable (see flush), so a crash in between costs a refetch.
    for (let i = a; i <= b; i++) {
      if (hasChunk(t.rec, i)) continue;
      t.rec.bitmap[i >> 3] = (t.rec.bitmap[i >> 3] ?? 0) | (1 << (i & 7));
      t.rec.have++;
      t.unsynced.add(i);
    }
    t.rec.lastAccess = Date.now();
    this.#o.onBytes?.(t, bytes.length);
    this.#dirty.add(t);
    this.#flushTimer ??= setTimeout(() => void this.flush(), FLUSH_DELAY_MS);
    // Every byte is in the file: stop intercepting now rather than after the flush. If we die
    // before the flush, the range map still says "not present" and the file is marked again.
    if (t.rec.have >= t.rec.chunks) this.#o.onPresent?.(t);
  }

  /**
   * Make every written chunk durable (one fdatasync per file, however many chunks) and record
   * them in the range map in one commit; files that became fully present are then reported.
   */
  flush(): Promise<void> {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#flushing = this.#flushing.then(() => this.#flushDirty());
    return this.#flushing;
  }

  async #flushDirty(): Promise<void> {
    const files = [...this.#dirty];
    this.#dirty.clear();
    if (files.length === 0) return;
    const synced = await Promise.all(
      files.map(async (t) => {
        const chunks = [...t.unsynced];
        try {
          await this.#withWriter(t, async (fh) => {
            // Our writes moved mtime; the published one is restored once per flush, not per write.
            const mtime = t.entry.mtimeMs / 1000;
            await fh.utimes(mtime, mtime);
            await fh.datasync();
            if (t.rec.have >= t.rec.chunks && t.unsynced.size === chunks.length) t.rec.presentCtime = await ctimeOf(fh);
          });
        } catch (err) {
          this.#o.onBackgroundError?.(t, err);
          this.#dirty.add(t);
          return false;
        }
        for (const i of chunks) t.unsynced.delete(i);
        return true;
      }),
    );
    this.#o.rangeMap.batch(() => {
      for (const t of files) {
        const bitmap = Uint8Array.from(t.rec.bitmap);
        for (const i of t.unsynced) bitmap[i >> 3] = (bitmap[i >> 3] ?? 0) & ~(1 << (i & 7));
        this.#o.rangeMap.saveChunks(t.rec, { bitmap, have: t.rec.have - t.unsynced.size });
      }
    });
    files.forEach((t, k) => {
      if (synced[k] && t.unsynced.size === 0 && t.rec.have >= t.rec.chunks) void this.closeWriter(t);
    });
  }

  /** Verify in the thread pool (WebCrypto), so hashing never delays answering other events. */
  async #firstBadChunk(t: Tracked, a: number, b: number, bytes: Buffer): Promise<number> {
    const cs = this.#o.chunkSize;
    const digests = await Promise.all(
      Array.from({ length: b - a + 1 }, (_, k) => webcrypto.subtle.digest('SHA-256', bytes.subarray(k * cs, (k + 1) * cs))),
    );
    const bad = digests.findIndex((d, k) => Buffer.from(d).toString('hex') !== t.entry.chunks[a + k]);
    return bad < 0 ? -1 : a + bad;
  }

  async #withWriter<T>(t: Tracked, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
    if (!t.writer) t.writer = { fh: open(this.backingPath(t), 'r+'), users: 0, idle: undefined };
    const w = t.writer;
    w.users++;
    if (w.idle) clearTimeout(w.idle);
    w.idle = undefined;
    try {
      return await fn(await w.fh);
    } finally {
      w.users--;
      // An idle writer is closed soon: a held fd would make a lease (eviction) fail.
      if (w.users === 0 && t.writer === w) w.idle = setTimeout(() => void this.closeWriter(t), 2000).unref();
    }
  }

  /** Close the file's writer fd if no fetch is using it. */
  async closeWriter(t: Tracked): Promise<void> {
    const w = t.writer;
    if (!w || w.users > 0) return;
    t.writer = undefined;
    if (w.idle) clearTimeout(w.idle);
    await w.fh.then((fh) => fh.close()).catch(() => undefined);
  }
}

/** ctime in ns as a decimal string: what changes on any write, truncate or attribute change. */
async function ctimeOf(fh: FileHandle): Promise<string> {
  return (await fh.stat({ bigint: true })).ctimeNs.toString();
}

/** Whether a file still needs interception (not every chunk present). */
export function needsMark(t: Tracked): boolean {
  return stateOf(t.rec) !== 'present' && !(t.rec.local && t.rec.have >= t.rec.chunks);
}
