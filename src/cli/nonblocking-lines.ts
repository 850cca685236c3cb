/**
 * Output of the daemons whose thread also answers permission events (`fan guard`, `fan scan`,
 * the `fan hsm mount` supervisor). Such a thread must never wait on its output's reader: one
 * write(2) blocked on a stalled pipe would freeze every guarded open, or every read waiting for
 * content. Lines are collected and written in batches, asynchronously, one write at a time.
 * While more than a bound waits, new lines are dropped and counted, and the count is written as a
 * line of its own once writing resumes: lines may be lost to a reader that does not read, but
 * never silently.
 * @packageDocumentation
 */
import { closeSync, fstatSync, openSync, write, writeSync } from 'node:fs';

/** Options of {@link NonBlockingLines}. */
export interface NonBlockingLinesOptions {
  /** A batch is written at most this long (ms) after its first line. */
  readonly flushAfterMs: number;
  /** Most bytes waiting to be written; lines beyond are dropped and counted. */
  readonly maxQueuedBytes: number;
  /** The line that reports `dropped` lost lines (without its newline). */
  readonly dropNotice: (dropped: number) => string;
  /**
   * The reader closed its end (EPIPE): true (default) ends the process quietly, as every other
   * command's output does; false counts the lines as dropped and goes on (a daemon must not stop
   * because nobody reads its log).
   */
  readonly exitOnEpipe?: boolean;
  /** A write failed (other than EAGAIN, and EPIPE when exiting on it): its lines are counted as dropped. */
  readonly onError?: (err: Error) => void;
}

/** How long to wait before trying again a write the reader refused (EAGAIN). */
const RETRY_MS = 10;

/** Lines to a file, stdout or stderr, never blocking the caller. */
export class NonBlockingLines {
  readonly #fd: number;
  readonly #owned: boolean;
  /** A regular file: a write to it cannot stall on a reader, so the exit may write synchronously. */
  readonly #regular: boolean;
  readonly #o: NonBlockingLinesOptions;
  #lines: string[] = [];
  #queuedBytes = 0;
  /** The batch being written (what is left of it). */
  #inflight: Buffer | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Dropped since the last notice was queued. */
  #droppedUnreported = 0;
  #droppedTotal = 0;
  #idle: (() => void)[] = [];
  #closed = false;

  /** @param to - a path to append to, or `stdout` / `stderr` */
  constructor(to: string, options: NonBlockingLinesOptions) {
    this.#owned = to !== 'stdout' && to !== 'stderr';
    this.#fd = to === 'stdout' ? 1 : to === 'stderr' ? 2 : openSync(to, 'a');
    this.#regular = fstatSync(this.#fd).isFile();
    this.#o = options;
    // Lines still queued when the process ends (exit(), an uncaught exception).
    process.once('exit', this.#onExit);
  }

  /** Lines dropped so far because the reader did not keep up. */
  get dropped(): number {
    return this.#droppedTotal;
  }

  /** Queue a line (without its newline). */
  push(line: string): void {
    if (this.#closed) return;
    if (this.#queuedBytes + (this.#inflight?.length ?? 0) > this.#o.maxQueuedBytes) {
      this.#droppedUnreported++;
      this.#droppedTotal++;
      return;
    }
    if (this.#droppedUnreported > 0) this.#queue(this.#o.dropNotice(this.#takeDropped()));
    this.#queue(line);
    this.#timer ??= setTimeout(this.#onTimer, this.#o.flushAfterMs).unref();
  }

  #queue(line: string): void {
    this.#lines.push(line);
    this.#queuedBytes += Buffer.byteLength(line) + 1;
  }

  #takeDropped(): number {
    const n = this.#droppedUnreported;
    this.#droppedUnreported = 0;
    return n;
  }

  readonly #onTimer = (): void => {
    this.#timer = undefined;
    this.#writeNext();
  };

  /** Start writing the queued lines unless a write is under way (its end continues). */
  #writeNext(): void {
    if (this.#inflight) return;
    if (this.#lines.length === 0) {
      for (const done of this.#idle.splice(0)) done();
      return;
    }
    this.#inflight = Buffer.from(`${this.#lines.join('\n')}\n`);
    this.#lines = [];
    this.#queuedBytes = 0;
    this.#writeInflight();
  }

  #writeInflight(): void {
    const buf = this.#inflight!;
    write(this.#fd, buf, 0, buf.length, null, (err, n) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE' && this.#o.exitOnEpipe !== false) process.exit(0);
        if (code === 'EAGAIN') {
          setTimeout(() => this.#writeInflight(), RETRY_MS).unref();
          return;
        }
        const lost = buf.toString().split('\n').length - 1;
        this.#droppedUnreported += lost;
        this.#droppedTotal += lost;
        this.#o.onError?.(err);
        n = buf.length;
      }
      this.#inflight = n < buf.length ? buf.subarray(n) : undefined;
      if (this.#inflight) this.#writeInflight();
      else this.#writeNext();
    });
  }

  /**
   * Write what is queued, waiting up to `timeoutMs` for the reader; what it does not take by
   * then is counted as dropped and reported through `onError`. Then close the file (stdout and
   * stderr stay open).
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    process.off('exit', this.#onExit);
    if (this.#droppedUnreported > 0) this.#queue(this.#o.dropNotice(this.#takeDropped()));
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      new Promise<boolean>((resolve) => {
        this.#idle.push(() => resolve(true));
        this.#writeNext();
      }),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!drained) {
      const lost = this.#lines.length;
      this.#droppedTotal += lost;
      this.#o.onError?.(new Error(`the reader stopped reading; the last ${lost} lines were dropped`));
      return;
    }
    if (this.#owned) closeSync(this.#fd);
  }

  /** At exit only a regular file is written to, synchronously: a pipe could stall the exit. */
  readonly #onExit = (): void => {
    if (!this.#regular || this.#inflight) return;
    if (this.#droppedUnreported > 0) this.#queue(this.#o.dropNotice(this.#takeDropped()));
    if (this.#lines.length > 0) writeSync(this.#fd, `${this.#lines.join('\n')}\n`);
  };
}
