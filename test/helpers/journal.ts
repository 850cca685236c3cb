/**
 * Helpers of the journal tests: temp state directories, the `fan` CLI as a child (one-shot or a
 * long-running `fan journal run` recorder), and readable forms of `since` results.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JournalChange } from '../../src/journal/index.js';
import { mulberry32 } from './random.js';

/** The compiled CLI entry point. */
export const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

const stateDirs = new Set<string>();

/** A fresh state directory under the OS temp dir (never inside a watched root). */
export function tempStateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fan-journal-state-'));
  stateDirs.add(dir);
  return dir;
}

/** Remove every state directory made by {@link tempStateDir}. */
export function removeStateDirs(): void {
  for (const d of stateDirs) rmSync(d, { recursive: true, force: true });
  stateDirs.clear();
}

/**
 * "kind path" relative to `root`, '/' marking directories; renames as "renamed old -> new".
 */
export function describeChange(c: JournalChange, root: string): string {
  const rel = (p: string): string => (p.startsWith(`${root}/`) ? p.slice(root.length + 1) : p);
  const dir = c.isDir ? '/' : '';
  if (c.kind === 'renamed') return `renamed ${rel(c.oldPath ?? '?')}${dir} -> ${rel(c.path)}${dir}`;
  return `${c.kind} ${rel(c.path)}${dir}`;
}

/** {@link describeChange} of every change, sorted (coalesced results have one entry per path). */
export function changeSet(changes: readonly JournalChange[], root: string): string[] {
  return changes.map((c) => describeChange(c, root)).sort();
}

/** Outcome of a one-shot `fan` run. */
export interface FanResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run `fan ARGS…` to completion (SIGKILLed and rejected after `timeoutMs`). */
export function runFan(args: readonly string[], timeoutMs = 15_000): Promise<FanResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: '/' });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`deadline: fan ${args.join(' ')} did not finish within ${timeoutMs} ms (stderr: ${stderr})`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Run `fan ARGS…`, requiring exit status 0; resolves with stdout. */
export async function fanOk(args: readonly string[], timeoutMs?: number): Promise<string> {
  const r = await runFan(args, timeoutMs);
  if (r.code !== 0) {
    throw new Error(`fan ${args.join(' ')} exited ${r.code ?? r.signal}: stderr=${JSON.stringify(r.stderr)} stdout=${JSON.stringify(r.stdout)}`);
  }
  return r.stdout;
}

/** A `fan journal run` child. */
/** `fan journal status --json`. */
export interface StatusJson {
  db: string;
  instance: string;
  sizeBytes: number;
  roots: {
    root: string;
    changes: number;
    newestSeq: number;
    oldestCursor: string;
    recorderPid: number | null;
    lastStopClean: boolean;
    lastReconcile: { at: string; ms: number; changes: number } | null;
  }[];
}

/** `fan journal status --json` of a state directory. */
export async function journalStatus(stateDir: string): Promise<StatusJson> {
  return JSON.parse(await fanOk(['journal', 'status', '--json', '--state-dir', stateDir])) as StatusJson;
}

export class RecorderChild {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #stderr = '';
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  private constructor(child: ChildProcess) {
    this.child = child;
    this.pid = child.pid ?? -1;
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.#stderr += s));
    child.stdout!.resume();
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
        resolve({ code, signal });
      });
    });
  }

  /** Everything the recorder wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Start `fan journal run --state-dir STATE [EXTRA…] ROOTS…` and wait (up to `timeoutMs`) for
   * its "recording" line. The child is killed when it does not get there.
   */
  static async start(stateDir: string, roots: readonly string[], extra: readonly string[] = [], timeoutMs = 15_000): Promise<RecorderChild> {
    const child = spawn(process.execPath, [CLI, 'journal', 'run', '--state-dir', stateDir, ...extra, ...roots], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: '/',
    });
    const rec = new RecorderChild(child);
    const end = Date.now() + timeoutMs;
    while (!/recording /.test(rec.#stderr)) {
      if (rec.#exit) throw new Error(`fan journal run exited (${rec.#exit.code ?? rec.#exit.signal}) before recording: ${rec.#stderr}`);
      if (Date.now() > end) {
        await rec.kill();
        throw new Error(`deadline: fan journal run did not say "recording" within ${timeoutMs} ms: ${rec.#stderr}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return rec;
  }

  /** Send `signal` (default SIGKILL) and wait (up to 10 s) until the child has exited and been reaped. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.#exit) this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`deadline: fan journal run (pid ${this.pid}) did not exit within 10 s of ${signal}`));
      }, 10_000);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A small deterministic PRNG (mulberry32) of floats in [0, 1). */
export function prng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** Sleep `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `fn` every `everyMs` until it returns true, or fail after `ms` naming `what`. */
export async function waitUntil(fn: () => boolean | Promise<boolean>, what: string, ms = 10_000, everyMs = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`deadline: ${what} within ${ms} ms`);
    await sleep(everyMs);
  }
}
