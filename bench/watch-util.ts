/**
 * Shared pieces of the watch benchmarks (bench/watch-ready.ts, watch-latency.ts, watch-noise.ts):
 * the C generator, a loop-mounted ext4 with a chosen inode count, watcher child processes
 * (bench/watch-child.ts) and their /proc numbers, statistics and tables.
 *
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { NdjsonChild } from './ndjson-child.js';

// ---------------------------------------------------------------------------------------------
// Arguments

/** Parse `--name value` / `--flag` arguments against defaults (numbers, strings, booleans). */
export function parseFlags<T extends Record<string, number | string | boolean>>(
  argv: string[],
  defaults: T,
  usage: string,
): T {
  const out: Record<string, number | string | boolean> = { ...defaults };
  const fail = (msg: string): never => {
    process.stderr.write(`${msg}\nusage: ${usage}\n`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (!a.startsWith('--')) fail(`unexpected argument ${a}`);
    const key = a.slice(2).replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (!(key in defaults)) fail(`unknown option ${a}`);
    const def = defaults[key];
    if (typeof def === 'boolean') {
      out[key] = true;
      continue;
    }
    const v = argv[++i];
    if (v === undefined) fail(`${a} needs a value`);
    if (typeof def === 'number') {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) fail(`${a} needs a non-negative number, got ${String(v)}`);
      out[key] = n;
    } else out[key] = String(v);
  }
  return out as T;
}

// ---------------------------------------------------------------------------------------------
// Machine

/** One line describing the machine (and `extra`, e.g. tool versions), for the report. */
export function machineNote(extra = ''): string {
  const mem = Math.round(Number(/MemTotal:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024 / 1024);
  let source = '';
  try {
    const cwd = fileURLToPath(new URL('../..', import.meta.url));
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'native'], { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    source = `; source ${head}${dirty ? ' + uncommitted changes in src/ or native/' : ''}`;
  } catch {
    /* not a git checkout */
  }
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  return `${cpus().length} CPUs, ${mem} GiB, Linux ${release()}, node ${process.version}${extra}${source}; load average at start ${load}`;
}

/** {@link machineNote} with the versions of the anchors of the watch benchmarks. */
export function watchMachineNote(): string {
  const version = (pkg: string): string => {
    try {
      return (JSON.parse(readFileSync(fileURLToPath(new URL(`../../node_modules/${pkg}/package.json`, import.meta.url)), 'utf8')) as { version: string }).version;
    } catch {
      return '?';
    }
  };
  return machineNote(`, @parcel/watcher ${version('@parcel/watcher')}, chokidar ${version('chokidar')}`);
}

// ---------------------------------------------------------------------------------------------
// /proc

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU seconds between two readings; never negative (the kernel rescales utime/stime). */
export function cpuDelta(a: { user: number; sys: number }, b: { user: number; sys: number }): { user: number; sys: number; total: number } {
  const user = Math.max(0, b.user - a.user);
  const sys = Math.max(0, b.sys - a.sys);
  return { user, sys, total: Math.max(0, b.user + b.sys - a.user - a.sys) };
}

/** User and system CPU seconds of a live process (all its threads), from /proc/PID/stat. */
export function cpuSeconds(pid: number): { user: number; sys: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { user: Number(rest[11]) / CLK_TCK, sys: Number(rest[12]) / CLK_TCK };
}

/** VmRSS and VmHWM (peak) of a live process in MiB. */
export function memMiB(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** CLOCK_MONOTONIC in ns, comparable between processes (libuv's uv_hrtime). */
export function monoNs(): bigint {
  return process.hrtime.bigint();
}

// ---------------------------------------------------------------------------------------------
// The generator

/** Compile bench/NAME.c (default watch-gen) into `dir`; returns the binary. */
export function compileGen(dir: string, name = 'watch-gen'): string {
  const src = fileURLToPath(new URL(`../../bench/${name}.c`, import.meta.url));
  const bin = join(dir, name);
  execFileSync('cc', ['-O2', '-Wall', '-o', bin, src], { stdio: 'inherit' });
  return bin;
}

/** Run the generator to completion; returns its stdout numbers. */
export async function runGen(bin: string, args: string[], deadlineMs = 30 * 60_000): Promise<{ pid: number; nums: number[]; wallS: number }> {
  const t0 = performance.now();
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), deadlineMs);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  }).finally(() => clearTimeout(timer));
  if (code !== 0) throw new Error(`watch-gen ${args.join(' ')} failed (${String(code)}): ${err}`);
  return { pid: child.pid ?? -1, nums: out.trim().split(/\s+/).map(Number), wallS: (performance.now() - t0) / 1000 };
}

/** Start the generator without waiting (for the noise storm). */
export function startGen(bin: string, args: string[]): { proc: ChildProcess; done: Promise<{ nums: number[]; endNs: bigint }> } {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const done = new Promise<{ nums: number[]; endNs: bigint }>((resolve, reject) => {
    let endNs = 0n;
    proc.once('error', reject);
    proc.once('exit', () => (endNs = monoNs()));
    // 'close' comes after 'exit' and after stdout is drained.
    proc.once('close', (code) => {
      if (code !== 0) reject(new Error(`watch-gen ${args.join(' ')} failed (${String(code)}): ${err}`));
      else resolve({ nums: out.trim().split(/\s+/).map(Number), endNs: endNs || monoNs() });
    });
  });
  return { proc, done };
}

// ---------------------------------------------------------------------------------------------
// A loop-mounted ext4 with a chosen inode count (test/helpers/loopfs.ts has no mkfs options)

export interface Ext4 {
  dir: string;
  image: string;
  cleanup(): Promise<void>;
}

const liveMounts = new Set<{ tmp: string; dir: string }>();
let exitHooked = false;

function cleanupSync(): void {
  for (const m of liveMounts) {
    try {
      execFileSync('umount', ['-l', m.dir], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* not mounted */
    }
    try {
      rmSync(m.tmp, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
    liveMounts.delete(m);
  }
}

function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === dir);
}

/**
 * A sparse ext4 image of `sizeMiB` with at least `inodes` inodes, loop-mounted in a fresh temp
 * dir. Inode tables are initialised by mkfs, so no lazy-init thread writes in the background
 * while we measure. `cleanup()` unmounts and removes everything; a process exit or SIGINT does
 * the same synchronously.
 */
export async function createExt4(sizeMiB: number, inodes: number): Promise<Ext4> {
  if (process.getuid?.() !== 0) throw new Error('the watch benchmarks need root (loop mounts, fanotify filesystem marks)');
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', cleanupSync);
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        process.stderr.write(`${sig}: unmounting the benchmark filesystem(s)\n`);
        cleanupSync();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
    }
  }
  const tmp = await mkdtemp(join(tmpdir(), 'fan-watch-bench-'));
  const dir = join(tmp, 'mnt');
  const image = join(tmp, 'ext4.img');
  const entry = { tmp, dir };
  liveMounts.add(entry);
  const cleanup = async (): Promise<void> => {
    for (let i = 0; i < 5 && isMounted(dir); i++) {
      try {
        execFileSync('umount', [dir], { stdio: 'pipe', timeout: 60_000 });
      } catch {
        await sleep(300 * (i + 1));
      }
    }
    if (isMounted(dir)) execFileSync('umount', ['-l', dir], { stdio: 'pipe', timeout: 60_000 });
    try {
      const devs = execFileSync('losetup', ['-j', image], { encoding: 'utf8' })
        .split('\n')
        .map((l) => l.split(':')[0]?.trim() ?? '')
        .filter((d) => d.startsWith('/dev/'));
      for (const d of devs) execFileSync('losetup', ['-d', d], { stdio: 'ignore' });
    } catch {
      /* already detached */
    }
    await rm(tmp, { recursive: true, force: true });
    liveMounts.delete(entry);
  };
  try {
    await mkdir(dir);
    const fh = await open(image, 'w');
    await fh.truncate(sizeMiB * 1024 * 1024);
    await fh.close();
    execFileSync(
      'mkfs.ext4',
      ['-q', '-F', '-N', String(inodes), '-E', 'lazy_itable_init=0,lazy_journal_init=0', image],
      { stdio: 'inherit', timeout: 10 * 60_000 },
    );
    execFileSync('mount', ['-o', 'loop', image, dir], { stdio: 'inherit' });
  } catch (err) {
    await cleanup();
    throw err;
  }
  return { dir, image, cleanup };
}

// ---------------------------------------------------------------------------------------------
// Watcher children (bench/watch-child.ts)

export type Tool = 'ours' | 'parcel' | 'chokidar' | 'none';

export const TOOL_LABEL: Record<Tool, string> = {
  ours: 'ours (fanotify watch())',
  parcel: '@parcel/watcher subscribe',
  chokidar: 'chokidar watch',
  none: 'bare node (no watcher)',
};

/** A message from a watcher child. */
export type ChildMsg =
  | {
      t: 'ready';
      readyMs: number;
      info?: { backend: string; readyMs: number };
      rssMiB: number;
      rssGcMiB: number;
      heapGcMiB: number;
      hwmMiB: number;
    }
  | { t: 'ev'; at: string; n: number; items: { type: string; path: string; oldPath?: string }[] }
  | { t: 'stats'; events: number; batches: number; outside: number; outsideSample: string[]; rescans: number; errors: number; rssMiB: number; hwmMiB: number }
  | { t: 'fail'; message: string };

export interface ChildOptions {
  tool: Tool;
  dir: string;
  debounceMs?: number;
  /** Send every batch to the parent (default true). */
  report?: boolean;
  /** Extra node flags (e.g. --cpu-prof). */
  nodeFlags?: string[];
}

/** A watcher in its own node process, so its RSS and CPU are its own (messages on stdout). */
export class WatcherChild extends NdjsonChild<ChildMsg> {
  constructor(readonly opts: ChildOptions) {
    const script = fileURLToPath(new URL('./watch-child.js', import.meta.url));
    const args = [
      '--expose-gc',
      ...(opts.nodeFlags ?? []),
      script,
      opts.tool,
      opts.dir,
      '--debounce',
      String(opts.debounceMs ?? -1),
      '--report',
      opts.report === false ? '0' : '1',
    ];
    super(`${opts.tool} child`, process.execPath, args, 'stdout');
  }

  /** Messages received so far (and not taken). */
  take(): ChildMsg[] {
    return this.msgs.splice(0);
  }

  /** Wait for the first message matching `pred` (earlier non-matching ones are kept). */
  async next<M extends ChildMsg>(pred: (m: ChildMsg) => m is M, timeoutMs: number): Promise<M> {
    return this.waitUntil(
      () => {
        const i = this.msgs.findIndex(pred);
        if (i >= 0) return this.msgs.splice(i, 1)[0] as M;
        const fail = this.msgs.find((m) => m.t === 'fail');
        if (fail && fail.t === 'fail') throw new Error(`${this.opts.tool}: ${fail.message}`);
        return undefined;
      },
      'answer',
      timeoutMs,
    );
  }

  send(cmd: Record<string, unknown>): void {
    this.proc.stdin?.write(`${JSON.stringify(cmd)}\n`);
  }

  async stats(timeoutMs = 10_000): Promise<Extract<ChildMsg, { t: 'stats' }>> {
    this.send({ c: 'stats' });
    return this.next((m): m is Extract<ChildMsg, { t: 'stats' }> => m.t === 'stats', timeoutMs);
  }

  /** Ask the child to close its watcher and exit; SIGKILL after `ms`. */
  async close(ms = 15_000): Promise<void> {
    if (!this.alive) return;
    this.send({ c: 'close' });
    const t = setTimeout(() => this.proc.kill('SIGKILL'), ms);
    await this.exited.finally(() => clearTimeout(t));
  }
}

export const isReady = (m: ChildMsg): m is Extract<ChildMsg, { t: 'ready' }> => m.t === 'ready';
export const isEv = (m: ChildMsg): m is Extract<ChildMsg, { t: 'ev' }> => m.t === 'ev';

// ---------------------------------------------------------------------------------------------
// Numbers and tables

export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function fmt(n: number, digits = 2): string {
  if (!Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function table(rows: string[][]): string {
  const [head, ...body] = rows;
  if (!head) return '';
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...body.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function verdict(ok: boolean): string {
  return ok ? 'PASS' : 'MISS';
}

// ---------------------------------------------------------------------------------------------
// CPU profiles

interface Profile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Top functions by self time of the newest .cpuprofile in `dir`. */
export function profileSummary(dir: string, top = 25): string {
  const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort();
  const last = files[files.length - 1];
  if (!last) return `no .cpuprofile in ${dir}`;
  const p = JSON.parse(readFileSync(join(dir, last), 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i] ?? -1);
    const dt = p.timeDeltas[i] ?? 0;
    if (!n) continue;
    total += dt;
    const cf = n.callFrame;
    const where = cf.url ? `${cf.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const idle = [...self].filter(([k]) => k.startsWith('(idle)')).reduce((s, [, v]) => s + v, 0);
  const busy = total - idle;
  const rows = [...self]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, v]) => [k, fmt(v / 1000, 1), `${fmt((100 * v) / busy, 1)}%`]);
  return `profile ${join(dir, last)}: ${fmt(busy / 1e6)} s busy of ${fmt(total / 1e6)} s sampled\n${table([['function (self time)', 'ms', '% of busy'], ...rows])}`;
}
