/**
 * Fetching content into placeholders: missing chunks are read from the source (adjacent ones in
 * one request), verified against the manifest, written, made durable, and only then recorded in
 * the range map. One fetch per chunk at a time, shared by every reader waiting for it.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { open, stat, type FileHandle } from 'node:fs/promises';
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
  /** Our writer, opened on the backing path (not through the user-visible mount). */
  writer: { fh: Promise<FileHandle>; users: number; idle: NodeJS.Timeout | undefined } | undefined;
  /** Eviction in progress: opens are refused with EBUSY. */
  evicting: boolean;
}

/** Options of {@link Hydrator}. */
export interface HydratorOptions {
  readonly source: Source;
  readonly chunkSize: number;
  /** The backing directory holding the placeholders. */
  readonly backing: string;
  readonly rangeMap: RangeMap;
  /** Chunks fetched ahead of a sequential reader. Default 16. */
  readonly readAhead?: number;
  /** Most chunks merged into one request. Default 4. */
  readonly maxRun?: number;
  /** Extra fetches of a run whose bytes fail verification. Default 2. */
  readonly verifyRetries?: number;
  /** A file became fully present (e.g. to stop intercepting it). */
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

  constructor(options: HydratorOptions) {
    this.#o = options;
    this.#readAhead = options.readAhead ?? 16;
    this.#maxRun = options.maxRun ?? 4;
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
    t.lastChunk = last;
    if (sequential && last + 1 < t.rec.chunks) {
      this.ensure(t, last + 1, Math.min(t.rec.chunks - 1, last + this.#readAhead)).catch((err: unknown) => this.#o.onBackgroundError?.(t, err));
    }
    await this.ensure(t, first, last);
  }

  /** Make the whole file present. */
  hydrateAll(t: Tracked): Promise<void> {
    return t.rec.chunks === 0 ? Promise.resolve() : this.ensure(t, 0, t.rec.chunks - 1);
  }

  /** Make chunks [first, last] present, fetching missing ones (merged) and joining running fetches. */
  ensure(t: Tracked, first: number, last: number): Promise<void> {
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
      else if (i - runStart + 1 > this.#maxRun) {
        flush(i - 1);
        runStart = i;
      }
    }
    flush(last);
    return waits.length === 1 ? (waits[0] as Promise<void>) : Promise.all(waits).then(() => undefined);
  }

  #fetchRun(t: Tracked, a: number, b: number): Promise<void> {
    const p = this.#fetchAndStore(t, a, b).finally(() => {
      for (let i = a; i <= b; i++) if (t.inflight.get(i) === p) t.inflight.delete(i);
    });
    for (let i = a; i <= b; i++) t.inflight.set(i, p);
    return p;
  }

  async #fetchAndStore(t: Tracked, a: number, b: number): Promise<void> {
    const cs = this.#o.chunkSize;
    const offset = a * cs;
    const length = Math.min(t.rec.size, (b + 1) * cs) - offset;
    let bytes: Buffer | undefined;
    let bad = -1;
    for (let attempt = 0; attempt <= (this.#o.verifyRetries ?? 2); attempt++) {
      bytes = await this.#o.source.read(t.entry.path, offset, length);
      bad = this.#firstBadChunk(t, a, b, bytes);
      if (bad < 0) break;
    }
    if (bad >= 0 || !bytes) {
      throw new Error(`${t.entry.path}: chunk ${bad} does not match its SHA-256 in the manifest (source changed or corrupt)`);
    }
    await this.#withWriter(t, async (fh) => {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, offset + done);
        done += bytesWritten;
      }
      const mtime = t.entry.mtimeMs / 1000;
      await fh.utimes(mtime, mtime);
      await fh.datasync();
      for (let i = a; i <= b; i++) {
        if (hasChunk(t.rec, i)) continue;
        t.rec.bitmap[i >> 3] = (t.rec.bitmap[i >> 3] ?? 0) | (1 << (i & 7));
        t.rec.have++;
      }
      t.rec.lastAccess = Date.now();
      if (t.rec.have >= t.rec.chunks) t.rec.presentCtime = await ctimeOf(fh);
      this.#o.rangeMap.saveChunks(t.rec);
    });
    this.#o.onBytes?.(t, length);
    if (t.rec.have >= t.rec.chunks) {
      void this.closeWriter(t);
      this.#o.onPresent?.(t);
    }
  }

  #firstBadChunk(t: Tracked, a: number, b: number, bytes: Buffer): number {
    const cs = this.#o.chunkSize;
    for (let i = a; i <= b; i++) {
      const part = bytes.subarray((i - a) * cs, (i - a + 1) * cs);
      if (createHash('sha256').update(part).digest('hex') !== t.entry.chunks[i]) return i;
    }
    return -1;
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
export async function ctimeOf(target: FileHandle | string): Promise<string> {
  const st = typeof target === 'string' ? await stat(target, { bigint: true }) : await target.stat({ bigint: true });
  return st.ctimeNs.toString();
}

/** Whether a file still needs interception (not every chunk present). */
export function needsMark(t: Tracked): boolean {
  return stateOf(t.rec) !== 'present' && !(t.rec.local && t.rec.have >= t.rec.chunks);
}
