/**
 * Fetching content into placeholders: missing chunks are read from the source (adjacent ones in
 * one request), verified against the manifest, written, made durable, and only then recorded in
 * the range map. One fetch per chunk at a time, shared by every reader waiting for it. Writes go
 * through an event fd when there is one: the kernel opens those without notification, so our
 * own writes raise no pre-content event.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { close, fdatasync, fstat, futimes, open, write } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { native } from '../native.js';
import type { AccessState } from './access.js';
import type { FileEntry } from './manifest.js';
import { hasChunk, stateOf, type FileRecord, type RangeMap } from './rangemap.js';
import type { Source } from './source.js';

/** One file the hydrator serves: its manifest entry, range map record and in-memory state. */
export interface Tracked {
  readonly entry: FileEntry;
  readonly rec: FileRecord;
  /** The backing file's st_dev and st_ino (the access table's key). */
  readonly dev: number;
  readonly ino: number;
  /**
   * Where reads are tracked (for read-ahead and LRU) and which chunks the native reader may
   * allow without us: also the reads it answered itself.
   */
  readonly access: AccessState;
  /** Chunk index → the fetch that will bring it. */
  readonly inflight: Map<number, Promise<void>>;
  /** The fd our writes go through, if one is open. */
  writer: Writer | undefined;
  /**
   * The last of the file's writes: they run one at a time. A buffered write holds the inode
   * lock, and writes of the same file from several threadpool threads at once spin on it,
   * burning CPU a reader of the file needs (seen in perf as rwsem_spin_on_owner).
   */
  writes: Promise<void>;
  /** Chunks written but not yet durable, so not yet in the range map → the flush sequence number when written. */
  readonly unsynced: Map<number, number>;
}

/** A writable fd of one file, shared by the fetches writing into it. */
export class Writer {
  readonly fd: Promise<number>;
  /**
   * An event fd: the kernel opened it with FMODE_NONOTIFY, so writes through it raise no
   * events. Otherwise a path we opened, whose writes raise pre-content events that the group
   * answers at once for our pid, but each after a round trip through the event loop.
   */
  readonly silent: boolean;
  /** Resolves once the fd is closed. */
  readonly closed: Promise<void>;
  idle: NodeJS.Timeout | undefined;
  #users = 0;
  #retired = false;
  #closing = false;
  #resolveClosed!: () => void;

  constructor(fd: Promise<number>, silent: boolean) {
    this.fd = fd;
    this.silent = silent;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /** A write or flush starts using the fd. */
  enter(): void {
    this.#users++;
    clearTimeout(this.idle);
    this.idle = undefined;
  }

  /** It is done; true when nobody uses the fd any more. */
  leave(): boolean {
    this.#users--;
    if (this.#users > 0) return false;
    if (this.#retired) this.#close();
    return true;
  }

  /** Close the fd once nobody uses it; resolves when closed. */
  retire(): Promise<void> {
    this.#retired = true;
    clearTimeout(this.idle);
    this.idle = undefined;
    if (this.#users === 0) this.#close();
    return this.closed;
  }

  #close(): void {
    if (this.#closing) return;
    this.#closing = true;
    void this.fd
      .then((fd) => closeP(fd))
      .catch(() => undefined)
      .then(() => this.#resolveClosed());
  }
}

const writeP = promisify(write);
const fstatP = promisify(fstat);
const fdatasyncP = promisify(fdatasync);
const futimesP = promisify(futimes);
const closeP = promisify(close);
const openP = promisify(open);

/** Parallel requests that stream the rest of a file read from its start. */
const WHOLE_FILE_STREAMS = 4;

/** How long written chunks nobody waits for wait to be made durable together. */
const FLUSH_DELAY_MS = 100;

/** Flushes a reader waits through for its chunks before it gets EIO (each retries failed files). */
const DURABLE_ATTEMPTS = 3;

/** An idle writer is closed after this long: a held writable fd makes a lease probe (eviction) and execve fail. */
const WRITER_IDLE_MS = 2000;

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
  /**
   * Answer a reader only once its chunks are durable (fdatasync) and recorded in the range map,
   * as the issue orders it; readers waiting at the same time share one fdatasync per file and
   * one SQLite commit. False: answer once the bytes are written, and make them durable and
   * record them within 100 ms (faster; a crash before then costs a refetch, never wrong bytes).
   * Default true.
   */
  readonly syncBeforeAllow?: boolean;
  /**
   * Every chunk of a file is in it: stop intercepting it. With `syncBeforeAllow`, called once
   * they are also durable and recorded and our writer is closed; otherwise as soon as written.
   */
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
  readonly #syncFirst: boolean;
  readonly #dirty = new Set<Tracked>();
  #flushTimer: NodeJS.Timeout | undefined;
  /** The tail of the flush chain: every flush asked for so far. */
  #flushing: Promise<void> = Promise.resolve();
  /** The flush queued behind the running one, which the next waiters join (group commit). */
  #queued: Promise<void> | undefined;
  /** The running flush, if any. */
  #running: Promise<void> | undefined;
  /** Flushes started so far: a chunk written at sequence n is covered by flush n+1. */
  #flushSeq = 0;
  /** Files being fetched whole for a reader from their start. */
  readonly #streaming = new Set<Tracked>();

  constructor(options: HydratorOptions) {
    this.#o = options;
    this.#readAhead = options.readAhead ?? 24;
    this.#maxRun = options.maxRun ?? 8;
    this.#syncFirst = options.syncBeforeAllow ?? true;
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
    // The native reader applies the same rules to the reads it answers (native/fanotify.c).
    const a = t.access;
    const sequential = first === a.lastChunk || first === a.lastChunk + 1;
    if (!sequential) a.streakStart = first;
    a.lastChunk = last;
    a.fromStart = offset === 0 ? 1 : a.fromStart > 0 && offset === a.fromStartEnd ? a.fromStart + 1 : 0;
    a.fromStartEnd = offset + count;
    if (a.fromStart >= 2) {
      // A read continuing reads from offset 0 (cp, tar, sha256sum): the whole file is wanted.
      // Fetch all of it now rather than a window crawling with the reader. The reads answered
      // natively in between count too, so this may be the first one we see after the first.
      if (!this.#streaming.has(t)) {
        this.#streaming.add(t);
        this.#streamWhole(t)
          .catch((err: unknown) => this.#o.onBackgroundError?.(t, err))
          .finally(() => this.#streaming.delete(t));
      }
    } else if (sequential && last + 1 < t.rec.chunks) {
      // Like the kernel's readahead, the window doubles with the streak: a file read from start
      // to end is soon fetched whole, becomes present and stops costing an event per read.
      const window = Math.max(this.#readAhead, 2 * (last - a.streakStart + 1));
      this.ensure(t, last + 1, Math.min(t.rec.chunks - 1, last + window)).catch((err: unknown) => this.#o.onBackgroundError?.(t, err));
    }
    await this.ensure(t, first, last);
    if (this.#syncFirst) await this.durable(t, first, last);
  }

  /**
   * Fetch every missing chunk in order, {@link WHOLE_FILE_STREAMS} requests of up to `maxRun`
   * chunks at a time, each lane taking the lowest run nobody fetches yet. Bytes then arrive
   * about in the order a reader from the start wants them, at the speed of all streams
   * together; with one request per quarter of the file, the reader got a quarter of it.
   */
  async #streamWhole(t: Tracked): Promise<void> {
    const n = t.rec.chunks;
    const free = (i: number): boolean => !hasChunk(t.rec, i) && !t.inflight.has(i);
    let next = 0;
    let failure: unknown;
    const lane = async (): Promise<void> => {
      while (failure === undefined) {
        while (next < n && !free(next)) next++;
        if (next >= n) return;
        const a = next;
        let b = a;
        while (b + 1 < n && b + 1 - a < this.#maxRun && free(b + 1)) b++;
        next = b + 1;
        await this.#fetchRun(t, a, b).catch((err: unknown) => (failure ??= err));
      }
    };
    await Promise.all(Array.from({ length: WHOLE_FILE_STREAMS }, lane));
    if (failure !== undefined) throw failure;
  }

  /** Make the whole file present; with `durable`, also durable and recorded. */
  async hydrateAll(t: Tracked, durable = false): Promise<void> {
    if (t.rec.chunks === 0) return;
    await this.ensure(t, 0, t.rec.chunks - 1);
    if (durable) await this.durable(t, 0, t.rec.chunks - 1);
  }

  /** Whether every chunk is written, durable and recorded: nothing left to wait for. */
  settled(t: Tracked): boolean {
    return !needsMark(t) && t.unsynced.size === 0;
  }

  /**
   * Wait until written chunks [first, last] are durable and recorded, flushing now rather than
   * on the timer. Waiters join the flush that covers their chunks: the running one if it started
   * after they were written, else the one queued behind it, so one fdatasync per file and one
   * commit serve every reader waiting at that moment.
   * @throws when the chunks cannot be made durable (the flush failed repeatedly).
   */
  async durable(t: Tracked, first: number, last: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let writtenAt = -1;
      for (let i = first; i <= last; i++) writtenAt = Math.max(writtenAt, t.unsynced.get(i) ?? -1);
      if (writtenAt < 0) return;
      if (attempt === DURABLE_ATTEMPTS) throw new Error(`${t.entry.path}: fetched chunks could not be made durable (fdatasync failed ${attempt} times)`);
      await (this.#running && this.#flushSeq > writtenAt ? this.#running : this.flush());
    }
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
        const p = (async () => {
          if (this.#firstBadChunk(t, i, i, bytes) >= 0) return;
          await this.#store(t, i, i, bytes);
          settle.get(i)?.();
          settle.delete(i);
        })().catch(() => undefined);
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
      bad = this.#firstBadChunk(t, a, b, bytes);
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
    const write = t.writes.then(() =>
      this.#withWriter(t, async (fd) => {
        // Never write past the end of a file the user truncated: that would resurrect content.
        const end = Math.min(bytes.length, (await fstatP(fd)).size - offset);
        let done = 0;
        while (done < end) {
          const { bytesWritten } = await writeP(fd, bytes, done, end - done, offset + done);
          done += bytesWritten;
        }
      }),
    );
    t.writes = write.catch(() => undefined);
    await write;
    this.#startWriteback(t, offset, bytes.length);
    // Verified bytes are in the page cache. The range map learns of them only after they are
    // durable (see flush), so a crash in between costs a refetch.
    for (let i = a; i <= b; i++) {
      if (hasChunk(t.rec, i)) continue;
      t.rec.bitmap[i >> 3] = (t.rec.bitmap[i >> 3] ?? 0) | (1 << (i & 7));
      t.rec.have++;
      t.unsynced.set(i, this.#flushSeq);
      // Without syncBeforeAllow a written chunk is what a reader is allowed at once.
      if (!this.#syncFirst) t.access.allow(i);
    }
    t.rec.lastAccess = Date.now();
    this.#o.onBytes?.(t, bytes.length);
    this.#dirty.add(t);
    // Failures of single files are reported by the flush; nobody waits for this one.
    this.#flushTimer ??= setTimeout(() => void this.flush().catch(() => undefined), FLUSH_DELAY_MS);
    // Without syncBeforeAllow, stop intercepting as soon as every byte is in the file. If we die
    // before the flush, the range map still says "not present" and the file is marked again.
    if (!this.#syncFirst && t.rec.have >= t.rec.chunks) this.#o.onPresent?.(t);
  }

  /**
   * Start writing bytes just stored back to the disk now rather than at the flush: the fdatasync
   * that makes them durable then waits only for the tail (on this VM's loop ext4, flushes of 16
   * MiB went from 65 to 15 ms at most). Failures are left to that fdatasync, which reports them.
   */
  #startWriteback(t: Tracked, offset: number, length: number): void {
    void this.#withWriter(t, (fd) => new Promise<void>((resolve) => native.syncFileRange(fd, offset, length, native.constants.SYNC_FILE_RANGE_WRITE, () => resolve()))).catch(() => undefined);
  }

  /**
   * Make every written chunk durable (one fdatasync per file, however many chunks) and record
   * them in the range map in one commit; files that became fully present are then reported.
   */
  flush(): Promise<void> {
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#queued) return this.#queued;
    const next = this.#flushing.then(() => {
      this.#queued = undefined;
      this.#flushSeq++;
      this.#running = this.#flushDirty();
      return this.#running;
    });
    this.#queued = next;
    // A failed flush must not stop the next one; its callers see the failure through `next`.
    this.#flushing = next.catch(() => undefined).finally(() => (this.#running = undefined));
    return next;
  }

  async #flushDirty(): Promise<void> {
    const files = [...this.#dirty];
    this.#dirty.clear();
    if (files.length === 0) return;
    const synced = await Promise.all(
      files.map(async (t) => {
        const chunks = [...t.unsynced.keys()];
        try {
          await this.#withWriter(t, async (fd) => {
            // Our writes moved mtime; the published one is restored once per flush, not per write.
            const mtime = t.entry.mtimeMs / 1000;
            await futimesP(fd, mtime, mtime);
            await fdatasyncP(fd);
            if (t.rec.have >= t.rec.chunks && t.unsynced.size === chunks.length) t.rec.presentCtime = (await fstatP(fd, { bigint: true })).ctimeNs.toString();
          });
        } catch (err) {
          this.#o.onBackgroundError?.(t, err);
          this.#dirty.add(t);
          return undefined;
        }
        for (const i of chunks) t.unsynced.delete(i);
        return chunks;
      }),
    );
    this.#o.rangeMap.batch(() => {
      for (const t of files) {
        const bitmap = Uint8Array.from(t.rec.bitmap);
        for (const i of t.unsynced.keys()) bitmap[i >> 3] = (bitmap[i >> 3] ?? 0) & ~(1 << (i & 7));
        this.#o.rangeMap.saveChunks(t.rec, { bitmap, have: t.rec.have - t.unsynced.size });
      }
    });
    // Durable and recorded: what a reader is allowed at once with syncBeforeAllow.
    if (this.#syncFirst) files.forEach((t, k) => synced[k]?.forEach((i) => t.access.allow(i)));
    files.forEach((t, k) => {
      if (!synced[k] || t.unsynced.size > 0 || t.rec.have < t.rec.chunks) return;
      // Not awaited: an adopted event fd closes only once its event is answered, and that event
      // may be waiting for this very flush.
      void this.closeWriter(t);
      if (this.#syncFirst) this.#o.onPresent?.(t);
    });
  }

  /**
   * The first chunk of [a, b] whose bytes do not match the manifest, or -1. Hashed here, on the
   * loop (about 1 ms per MiB with SHA-NI), not with WebCrypto in the thread pool: WebCrypto
   * copies its input and wipes the copy, and four digests at once on this machine's two vCPUs
   * took 400 ms of CPU for 256 MiB against 230 ms one after the other, CPU a reader needs.
   */
  #firstBadChunk(t: Tracked, a: number, b: number, bytes: Buffer): number {
    const cs = this.#o.chunkSize;
    for (let i = a; i <= b; i++) {
      const k = i - a;
      if (createHash('sha256').update(bytes.subarray(k * cs, (k + 1) * cs)).digest('hex') !== t.entry.chunks[i]) return i;
    }
    return -1;
  }

  /** False while the target is being unmounted: event fds are opened through it and keep it busy. */
  adoptEventFds = true;

  /** Whether {@link adoptFd} would take an event fd for this file: it has no silent writer yet. */
  wantsEventFd(t: Tracked): boolean {
    return this.adoptEventFds && !t.access.blocked && !t.writer?.silent;
  }

  /**
   * Make an event's fd (which the caller took from the group, so it outlives the event) the
   * file's writer. The group must open event fds O_RDWR; the kernel opens them with
   * FMODE_NONOTIFY, so writes through them raise no events. A path writer still in use is closed
   * once its writes are done.
   * @returns the release to call once the event is answered: until then the fd stays open, since
   * the kernel matches the answer by fd number and a closed number can be handed to a new event.
   */
  adoptFd(t: Tracked, fd: number): () => void {
    const old = t.writer;
    const w = new Writer(Promise.resolve(fd), true);
    t.writer = w;
    w.enter();
    void old?.retire();
    return () => {
      if (w.leave() && t.writer === w) this.#idleLater(t, w);
    };
  }

  async #withWriter<T>(t: Tracked, fn: (fd: number) => Promise<T>): Promise<T> {
    // No event fd to write through (prefetch, a flush after the idle writer was closed): open
    // the backing path. Its writes raise pre-content events, answered at once for our pid.
    t.writer ??= new Writer(openP(this.backingPath(t), 'r+'), false);
    const w = t.writer;
    w.enter();
    try {
      return await fn(await w.fd);
    } finally {
      if (w.leave() && t.writer === w) this.#idleLater(t, w);
    }
  }

  #idleLater(t: Tracked, w: Writer): void {
    w.idle = setTimeout(() => {
      if (t.writer === w) void this.closeWriter(t);
    }, WRITER_IDLE_MS).unref();
  }

  /**
   * Stop using the file's writer; resolves once its fd is closed (at once if no write is using
   * it, else after the last one). Needed before a lease probe and before letting an exec go on.
   */
  closeWriter(t: Tracked): Promise<void> {
    const w = t.writer;
    t.writer = undefined;
    return w ? w.retire() : Promise.resolve();
  }
}

/** Whether a file still needs interception (not every chunk present). */
export function needsMark(t: Tracked): boolean {
  return stateOf(t.rec) !== 'present' && !(t.rec.local && t.rec.have >= t.rec.chunks);
}
