/**
 * Output of the daemons whose thread also answers permission events (`fan guard`, `fan scan`,
 * the `fan hsm mount` supervisor). Such a thread must never wait on its output's reader: one
 * write(2) blocked on a stalled pipe would freeze every guarded open, or every read waiting for
 * content. Lines are collected and written in batches, asynchronously, one batch at a time.
 * While more than a bound waits, new lines are dropped and counted, and the count is written as a
 * line of its own once writing resumes: lines may be lost to a reader that does not read, but
 * never silently.
 *
 * Pipes and sockets are written through a libuv stream (non-blocking writes polled by the event
 * loop), never from the threadpool: a threadpool thread blocked in write(2) on a stalled pipe
 * would also block the process's exit, which joins those threads.
 * @packageDocumentation
 */
import { closeSync, fstatSync, openSync, write, writeSync } from 'node:fs';
import { Socket } from 'node:net';

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
  /** A write failed (other than EPIPE when exiting on it): its lines are counted as dropped. */
  readonly onError?: (err: Error) => void;
}

/** Lines in a batch (each ends with a newline). */
const lineCount = (buf: Buffer): number => {
  let n = 0;
  for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) n++;
  return n;
};

/** Where the batches go: a file-like fd written from the threadpool, or a stream. */
type Sink = { readonly kind: 'fd'; readonly fd: number } | { readonly kind: 'stream'; readonly stream: NodeJS.WritableStream };

/** Lines to a file, stdout or stderr, never blocking the caller. */
export class NonBlockingLines {
  readonly #sink: Sink;
  /** The fd we opened (closed by {@link close}); stdout and stderr stay open. */
  readonly #owned: number | undefined;
  readonly #o: NonBlockingLinesOptions;
  #lines: string[] = [];
  #queuedBytes = 0;
  /** The batch being written (for an fd: what is left of it). */
  #inflight: Buffer | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Dropped since the last notice was queued. */
  #droppedUnreported = 0;
  #droppedTotal = 0;
  #idle: (() => void)[] = [];
  #closed = false;

  /** @param to - a path to append to, or `stdout` / `stderr` */
  constructor(to: string, options: NonBlockingLinesOptions) {
    this.#o = options;
    const fd = to === 'stdout' ? 1 : to === 'stderr' ? 2 : openSync(to, 'a');
    this.#owned = fd > 2 ? fd : undefined;
    const st = fstatSync(fd);
    if (st.isFile() || st.isCharacterDevice()) {
      // A file or a device (/dev/null, a terminal): a write returns without waiting for a reader.
      this.#sink = { kind: 'fd', fd };
    } else {
      // Node's own stdout/stderr streams already poll their pipe; another fd gets a stream of its own.
      const stream = fd === 1 ? process.stdout : fd === 2 ? process.stderr : new Socket({ fd, readable: false, writable: true });
      // Failures are handled per write, in its callback; without a listener they would crash the daemon.
      stream.on('error', () => undefined);
      this.#sink = { kind: 'stream', stream };
    }
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
    this.#queueDropNotice();
    this.#queue(line);
    this.#timer ??= setTimeout(this.#onTimer, this.#o.flushAfterMs).unref();
  }

  #queue(line: string): void {
    this.#lines.push(line);
    this.#queuedBytes += Buffer.byteLength(line) + 1;
  }

  /** Queue the count of the lines dropped since the last count, if any. */
  #queueDropNotice(): void {
    if (this.#droppedUnreported === 0) return;
    this.#queue(this.#o.dropNotice(this.#droppedUnreported));
    this.#droppedUnreported = 0;
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
    if (this.#sink.kind === 'stream') {
      this.#sink.stream.write(buf, (err) => this.#written(buf, err ?? null, buf.length));
    } else {
      write(this.#sink.fd, buf, 0, buf.length, null, (err, n) => this.#written(buf, err, n));
    }
  }

  #written(buf: Buffer, err: Error | null, n: number): void {
    if (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPIPE' && this.#o.exitOnEpipe !== false) process.exit(0);
      const lost = lineCount(buf);
      this.#droppedUnreported += lost;
      this.#droppedTotal += lost;
      this.#o.onError?.(err);
      n = buf.length;
    }
    this.#inflight = n < buf.length ? buf.subarray(n) : undefined;
    if (this.#inflight) this.#writeInflight();
    else this.#writeNext();
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
    this.#queueDropNotice();
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
      const lost = this.#lines.length + (this.#inflight ? lineCount(this.#inflight) : 0);
      this.#droppedTotal += lost;
      this.#o.onError?.(new Error(`the reader stopped reading; up to ${lost} last lines were dropped`));
    }
    if (this.#owned === undefined) return;
    if (this.#sink.kind === 'stream') (this.#sink.stream as Socket).destroy();
    // An fd with a write still in flight stays open: its number could be reused under the write.
    else if (drained) closeSync(this.#owned);
  }

  /** At exit only a file or device is written to, synchronously: a pipe could stall the exit. */
  readonly #onExit = (): void => {
    if (this.#sink.kind !== 'fd' || this.#inflight) return;
    this.#queueDropNotice();
    if (this.#lines.length > 0) writeSync(this.#sink.fd, `${this.#lines.join('\n')}\n`);
  };
}
