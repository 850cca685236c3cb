/**
 * Shared pieces of the guard benchmarks (bench/guard-open.ts, bench/guard-scan.ts): compiling
 * the C helpers, child processes with deadlines, /proc CPU numbers, CPU profiles, tables.
 *
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

/** dist/src/cli/main.js */
export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Compile bench/NAME.c into `dir`; returns the binary. */
export function compile(dir: string, name: string): string {
  const src = fileURLToPath(new URL(`../../bench/${name}.c`, import.meta.url));
  const bin = join(dir, name);
  execFileSync('cc', ['-O2', '-Wall', '-o', bin, src], { stdio: 'inherit' });
  return bin;
}

export { machineNote, median, quantile } from './watch-util.js';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** User+system CPU seconds of a live process (all its threads), from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** A child process whose stdout lines we collect. */
export interface Child {
  readonly proc: ChildProcess;
  readonly name: string;
  /** stdout so far. */
  out(): string;
  /** stderr so far (first 64 KiB). */
  err(): string;
  /** Resolves with the exit code or signal once the process exited and its pipes closed. */
  readonly closed: Promise<number | string>;
  /** True once exited. */
  exited(): boolean;
}

/** Every child still running, for the final cleanup. */
export const liveChildren = new Set<Child>();

// Last resort (an exception, or SIGINT: test/helpers/loopfs.ts exits the process from its signal
// handler): SIGKILL every child still running. Registered at import, so this runs before the
// loop filesystem's own exit handler unmounts: no listener outlives us with a mark on it.
process.on('exit', () => {
  for (const c of liveChildren) {
    if (!c.exited()) {
      try {
        c.proc.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});

/** Spawn a child, collecting its stdout/stderr. */
export function start(name: string, cmd: string, args: string[], options: { stdout?: 'pipe' | number; env?: NodeJS.ProcessEnv } = {}): Child {
  const proc = spawn(cmd, args, { stdio: ['ignore', options.stdout ?? 'pipe', 'pipe'], env: options.env ?? process.env });
  let out = '';
  let err = '';
  let done = false;
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (err.length < 65536) err += s;
  });
  const closed = new Promise<number | string>((resolve) => {
    proc.once('error', (e) => {
      err += `spawn error: ${e.message}`;
      done = true;
      resolve('spawn-error');
    });
    proc.once('close', (code, signal) => {
      done = true;
      resolve(code ?? signal ?? -1);
    });
  });
  const child: Child = { proc, name, out: () => out, err: () => err, closed, exited: () => done };
  liveChildren.add(child);
  void closed.then(() => liveChildren.delete(child));
  return child;
}

/** Wait (up to deadlineMs) until `test` holds; throws naming the child on timeout or early exit. */
export async function waitFor(child: Child, what: string, test: () => boolean | Promise<boolean>, deadlineMs: number): Promise<void> {
  const end = performance.now() + deadlineMs;
  for (;;) {
    if (await test()) return;
    if (child.exited()) throw new Error(`${child.name} exited (${String(await child.closed)}) before ${what}:\n${child.err()}${child.out()}`);
    if (performance.now() > end) throw new Error(`${child.name}: no ${what} within ${deadlineMs / 1000} s:\n${child.err()}${child.out()}`);
    await sleep(5);
  }
}

/** Wait for "ready" on the child's stdout. */
export function waitReady(child: Child, deadlineMs = 30_000): Promise<void> {
  return waitFor(child, '"ready"', () => /^ready$/m.test(child.out()), deadlineMs);
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code once it has exited. */
export async function stop(child: Child, graceMs = 10_000): Promise<number | string> {
  if (!child.exited()) {
    child.proc.kill('SIGTERM');
    const t = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
    try {
      return await child.closed;
    } finally {
      clearTimeout(t);
    }
  }
  return child.closed;
}

/** SIGKILL every child still alive and wait (up to 10 s each) for them to go. */
export async function killAll(): Promise<void> {
  for (const c of [...liveChildren]) {
    if (c.exited()) continue;
    c.proc.kill('SIGKILL');
    await Promise.race([c.closed, sleep(10_000)]);
  }
}

/** Run to completion with a deadline (SIGKILL after it); throws on a non-zero exit. */
export async function runToEnd(name: string, cmd: string, args: string[], deadlineMs: number): Promise<string> {
  const c = start(name, cmd, args);
  const t = setTimeout(() => c.proc.kill('SIGKILL'), deadlineMs);
  const code = await c.closed.finally(() => clearTimeout(t));
  if (code !== 0) throw new Error(`${name} ${args.join(' ')} failed (${String(code)}${code === 'SIGKILL' ? `, deadline ${deadlineMs / 1000} s` : ''}):\n${c.err()}`);
  return c.out();
}

/** Markdown table. */
export function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]): string => `| ${cells.map(String).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/** n with `digits` decimals and thousands separators. */
export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/**
 * The top functions by self time of the newest .cpuprofile in `dir` (as written by
 * `node --cpu-prof --cpu-prof-dir DIR`): a markdown table.
 */
export function profileSummary(dir: string, top = 25): string {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
  const file = files.at(-1);
  if (!file) return `(no .cpuprofile in ${dir})`;
  const p = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    const dt = p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0;
    if (!n) continue;
    const f = n.callFrame;
    const url = f.url.replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/');
    const key = `${f.functionName || '(anonymous)'} ${url ? `${url}:${f.lineNumber + 1}` : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  const busy = total - (self.get('(idle)') ?? 0);
  const rows = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, us]) => [k.replace(/\|/g, '\\|'), fmt(us / 1000, 1), `${fmt((100 * us) / total, 1)}%`, k === '(idle)' ? '' : `${fmt((100 * us) / busy, 1)}%`]);
  return `${join(dir, file)}: ${fmt(total / 1000, 0)} ms sampled, ${fmt(busy / 1000, 0)} ms not idle\n\n${table(['function', 'self ms', 'of all', 'of busy'], rows)}`;
}
