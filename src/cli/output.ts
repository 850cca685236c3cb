/**
 * Output plumbing shared by the commands: buffered line writers and failure reporting.
 * @packageDocumentation
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { FanotifyError } from '../errors.js';

/** Lines collected and written with one write(2), to a file or stdout. */
export class LineWriter {
  readonly #fd: number;
  readonly #owned: boolean;
  #lines: string[] = [];

  /** @param file - a path to append to, or undefined for stdout */
  constructor(file?: string) {
    this.#owned = file !== undefined;
    this.#fd = file === undefined ? 1 : openSync(file, 'a');
  }

  /** Queue a line (without its newline). */
  push(line: string): void {
    this.#lines.push(line);
  }

  /** Write every queued line now. A closed reader (EPIPE) ends the process quietly. */
  flush(): void {
    if (this.#lines.length === 0) return;
    const text = `${this.#lines.join('\n')}\n`;
    this.#lines = [];
    let buf = Buffer.from(text);
    while (buf.length > 0) {
      let n: number;
      try {
        n = writeSync(this.#fd, buf);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'EAGAIN') continue;
        if (code === 'EPIPE') process.exit(0);
        throw err;
      }
      buf = buf.subarray(n);
    }
  }

  /** Flush and close the file (stdout stays open). */
  close(): void {
    this.flush();
    if (this.#owned) closeSync(this.#fd);
  }
}

/** Print a failure the way a user can act on it, and exit 1. */
export function reportFailure(err: unknown): never {
  if (err instanceof FanotifyError) {
    process.stderr.write(`fan: ${err.message}\n`);
  } else if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    process.stderr.write(`fan: ${err.message}${code && !err.message.includes(code) ? ` (${code})` : ''}\n`);
    if (process.env.FAN_DEBUG) process.stderr.write(`${err.stack ?? ''}\n`);
  } else {
    process.stderr.write(`fan: ${String(err)}\n`);
  }
  process.exit(1);
}

/** A commander action whose failure is reported with {@link reportFailure} (exit 1). */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      reportFailure(err);
    }
  };
}

/** Parse a positive integer option, or exit 2 with a message naming the option. */
export function positiveInt(name: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) {
      process.stderr.write(`fan: ${name} needs a positive integer, got "${value}"\n`);
      process.exit(2);
    }
    return n;
  };
}

/** Run `stop` on SIGINT/SIGTERM (once), then exit 0. */
export function onShutdown(stop: () => Promise<void> | void): void {
  let stopping = false;
  const handler = (): void => {
    if (stopping) return;
    stopping = true;
    Promise.resolve(stop()).then(
      () => process.exit(0),
      (err: unknown) => reportFailure(err),
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
}
