/**
 * A benchmark's helper process that reports in NDJSON lines on one of its streams: the lines
 * are parsed and kept, everything else it prints is kept as text for the failure message.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Text kept from the child's non-JSON output, so a failure can quote its end. */
const TEXT_LIMIT = 100_000;

export class NdjsonChild<M> {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Parsed lines, in arrival order (subclasses may take some out). */
  protected readonly msgs: M[] = [];
  readonly exited: Promise<number | null>;
  #waiters: (() => void)[] = [];
  #exited = false;
  #text = '';

  /**
   * @param label names the child in errors.
   * @param jsonStream which stream carries the NDJSON; the other one is kept as text.
   * @param stamp turns a parsed line into the kept message (e.g. adds the arrival time).
   */
  constructor(
    readonly label: string,
    command: string,
    args: string[],
    jsonStream: 'stdout' | 'stderr',
    stamp: (parsed: unknown) => M = (p) => p as M,
  ) {
    this.proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    if (this.proc.pid === undefined) throw new Error(`could not start ${label}`);
    this.pid = this.proc.pid;
    const textStream = jsonStream === 'stdout' ? this.proc.stderr! : this.proc.stdout!;
    textStream.setEncoding('utf8').on('data', (s: string) => this.#keepText(s));
    createInterface({ input: this.proc[jsonStream]! }).on('line', (line) => {
      try {
        this.msgs.push(stamp(JSON.parse(line)));
      } catch {
        this.#keepText(`[${jsonStream}] ${line}\n`);
      }
      this.#wake();
    });
    this.exited = new Promise((resolve) => {
      this.proc.once('close', (code) => {
        this.#exited = true;
        this.#wake();
        resolve(code);
      });
    });
  }

  get alive(): boolean {
    return !this.#exited;
  }

  /** What the child printed that was not an NDJSON message (warnings, failures). */
  get text(): string {
    return this.#text;
  }

  #keepText(s: string): void {
    if (this.#text.length < TEXT_LIMIT) this.#text += s;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /**
   * Wait until `found()` returns something (re-checked on every message), or fail when the
   * child exits first or `timeoutMs` passes; `what` names the awaited message in the error.
   */
  protected async waitUntil<T>(found: () => T | undefined, what: string, timeoutMs: number): Promise<T> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = found();
      if (m !== undefined) return m;
      if (this.#exited) throw new Error(`${this.label} exited before ${what}: ${this.#text.slice(-2000)}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`${this.label}: no ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.#exited) this.proc.kill(signal);
  }

  /** Ask with `signal` (default SIGTERM); SIGKILL after `ms`. */
  async stop(ms = 30_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.#exited) return this.exited;
    this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), ms);
    return this.exited.finally(() => clearTimeout(t));
  }
}
