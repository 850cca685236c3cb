/**
 * Trace storm: `fan trace --json` side by side with fatrace on one loop-mounted ext4 filesystem.
 *
 *   npm run build && node dist/bench/trace-storm.js [--files N] [--dirs D] [--deadline S]
 *                                                   [--profile DIR] [--keep]
 *
 * A C generator (bench/watch-gen.c `storm`, compiled into a temp dir with `cc`) creates, writes, closes
 * and unlinks N files spread over D subdirectories as fast as it can, then removes the
 * subdirectories. It runs once without a tracer (baseline), once under `fatrace -c`, once
 * under `fan trace --json MOUNTPOINT` (the comparison), and once under `fan trace --json` without
 * a PATH (every real filesystem; a path audit: with a PATH argument, records whose path cannot
 * be resolved are filtered out and never show up, so only this pass shows them). For each
 * tracer we count the lines/records of the generator's pid, how many carry a path that names
 * the object, overflows, and the tracer's CPU time between "live" (a start sentinel showed up
 * in its output) and "caught up" (an end sentinel written after the generator exited showed up).
 *
 * `--profile DIR` runs our tracer under `node --cpu-prof` and prints its top functions by self
 * time (CPU numbers of that run include the profiler's overhead).
 *
 * @module
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs, type LoopFs } from '../test/helpers/loopfs.js';
import { compileGen, profileSummary } from './watch-util.js';

// ---------------------------------------------------------------------------------------------
// Options

interface Options {
  files: number;
  dirs: number;
  deadlineS: number;
  profileDir?: string;
  keep: boolean;
}

function usage(message: string): never {
  process.stderr.write(
    `trace-storm: ${message}\n` +
      'usage: node dist/bench/trace-storm.js [--files N] [--dirs D] [--deadline SECONDS] [--profile DIR] [--keep]\n',
  );
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { files: 100_000, dirs: 100, deadlineS: 600, keep: false };
  const int = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) usage(`${flag} needs a positive integer, got ${String(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--files') o.files = int(a, argv[++i]);
    else if (a === '--dirs') o.dirs = int(a, argv[++i]);
    else if (a === '--deadline') o.deadlineS = int(a, argv[++i]);
    else if (a === '--profile') {
      const dir = argv[++i];
      if (!dir) usage('--profile needs a directory');
      o.profileDir = dir;
    } else if (a === '--keep') o.keep = true;
    else usage(`unknown argument ${String(a)}`);
  }
  if (o.dirs > o.files) o.dirs = o.files;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Processes

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Cpu {
  user: number;
  sys: number;
}

/** User and system CPU seconds of a live process (all its threads), from /proc/PID/stat. */
function cpuSeconds(pid: number): Cpu {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return { user: Number(rest[11]) / CLK_TCK, sys: Number(rest[12]) / CLK_TCK };
}

/** Peak resident set size in MiB, from /proc/PID/status. */
function peakRssMiB(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child with its stderr collected and a promise of its exit. */
interface Child {
  proc: ChildProcess;
  pid: number;
  stderr: () => string;
  exited: Promise<Exit>;
  isAlive: () => boolean;
}

function startChild(cmd: string, args: string[], cwd: string): Child {
  const proc = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  let alive = true;
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (err.length < 4_000_000) err += s;
  });
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => {
    if (out.length < 1_000_000) out += s;
  });
  const exited = new Promise<Exit>((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', (code, signal) => {
      alive = false;
      resolve({ code, signal });
    });
  });
  if (proc.pid === undefined) throw new Error(`could not start ${cmd}`);
  return {
    proc,
    pid: proc.pid,
    stderr: () => err + (out ? `\n[stdout] ${out}` : ''),
    exited,
    isAlive: () => alive,
  };
}

/** SIGINT, then SIGKILL when the child has not exited within `ms`. */
async function stop(child: Child, ms = 15_000): Promise<Exit> {
  if (!child.isAlive()) return child.exited;
  child.proc.kill('SIGINT');
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), ms);
  try {
    return await child.exited;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Following an output file

/** Reads a growing file incrementally and looks for a string in what was appended. */
class Tail {
  #offset = 0;
  #carry = '';
  readonly #buf = Buffer.alloc(1 << 20);
  constructor(readonly file: string) {}

  /** True when `needle` appeared since the last call that returned true (or since the start). */
  async seen(needle: string): Promise<boolean> {
    let fh;
    try {
      fh = await open(this.file, 'r');
    } catch {
      return false; // not created yet
    }
    try {
      for (;;) {
        const { bytesRead } = await fh.read(this.#buf, 0, this.#buf.length, this.#offset);
        if (bytesRead === 0) return false;
        this.#offset += bytesRead;
        const text = this.#carry + this.#buf.toString('latin1', 0, bytesRead);
        if (text.includes(needle)) {
          this.#carry = '';
          return true;
        }
        this.#carry = text.slice(-needle.length);
      }
    } finally {
      await fh.close();
    }
  }
}

/**
 * Touch `sentinel` every `everyMs` until its name shows up in the tracer's output, the tracer
 * dies, or the deadline passes. Rewriting keeps producing events, so a sentinel event lost to
 * a queue overflow does not hang the benchmark.
 */
async function awaitSentinel(
  tail: Tail,
  sentinel: string,
  tracer: Child,
  deadlineMs: number,
  everyMs: number,
  onTick?: () => void,
): Promise<{ ok: boolean; ms: number; why?: string }> {
  const t0 = performance.now();
  const name = sentinel.slice(sentinel.lastIndexOf('/') + 1);
  let lastTouch = -Infinity;
  for (;;) {
    const now = performance.now();
    if (now - lastTouch >= everyMs) {
      writeFileSync(sentinel, 'x\n');
      lastTouch = now;
    }
    onTick?.();
    if (await tail.seen(name)) return { ok: true, ms: performance.now() - t0 };
    if (!tracer.isAlive()) return { ok: false, ms: performance.now() - t0, why: 'tracer exited' };
    if (performance.now() - t0 > deadlineMs) {
      return { ok: false, ms: performance.now() - t0, why: `not seen within ${deadlineMs / 1000} s` };
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------
// The generator

interface GenResult {
  pid: number;
  wallS: number;
  /** The generator's own clock (mkdir of the root to rmdir of the root). */
  innerS: number;
}

async function runGenerator(bin: string, root: string, o: Options): Promise<GenResult> {
  const t0 = performance.now();
  const child = startChild(bin, ['storm', root, String(o.files), String(o.dirs)], '/');
  let out = '';
  child.proc.stdout?.on('data', (s: string) => (out += s));
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), o.deadlineS * 1000);
  const exit = await child.exited.finally(() => clearTimeout(timer));
  const wallS = (performance.now() - t0) / 1000;
  if (exit.code !== 0) throw new Error(`watch-gen storm failed (${exit.code ?? exit.signal}): ${child.stderr()}`);
  const [made, , secs] = out.trim().split(' ');
  if (Number(made) !== o.files) throw new Error(`watch-gen storm made ${made} files, expected ${o.files}`);
  return { pid: child.pid, wallS, innerS: Number(secs) };
}

// ---------------------------------------------------------------------------------------------
// Counting

interface Counts {
  /** Lines/records of the generator's pid. */
  events: number;
  /** ... that carry a path naming the event's object (the file or directory itself). */
  objectPath: number;
  /** ... that carry only the parent directory's path (fatrace's create/delete lines). */
  parentOnly: number;
  /** ... without any path ("(deleted)" for fatrace, no `path` for us). */
  noPath: number;
  /** Distinct storm files named at least once, of N. */
  filesNamed: number;
  /** Storm subdirectories whose create and delete were both reported with their own path. */
  dirsComplete: number;
  /** Records whose events include `attrib` (the nlink change of an unlink; fatrace does not ask for it). */
  attrib: number;
  /** ... of those, without a path. */
  attribNoPath: number;
  overflows: number;
  /** Lines/records of other pids (sentinels, ...). */
  others: number;
  unparsed: number;
}

function emptyCounts(): Counts {
  return {
    events: 0,
    objectPath: 0,
    parentOnly: 0,
    noPath: 0,
    filesNamed: 0,
    dirsComplete: 0,
    attrib: 0,
    attribNoPath: 0,
    overflows: 0,
    others: 0,
    unparsed: 0,
  };
}

function readLines(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

/** fatrace 0.17 prints `comm(pid): TYPES path`, TYPES padded to 3 columns. */
function countFatrace(file: string, storm: string, genPid: number): Counts {
  const c = emptyCounts();
  const fileRe = new RegExp(`^${escapeRe(storm)}/d\\d+/f\\d+$`);
  const files = new Set<string>();
  for (const line of readLines(file)) {
    const at = line.indexOf('): ');
    const open = at < 0 ? -1 : line.lastIndexOf('(', at);
    if (open < 0) {
      c.unparsed++;
      continue;
    }
    const pid = Number(line.slice(open + 1, at));
    if (pid !== genPid) {
      c.others++;
      continue;
    }
    const m = /^(\S*) +(.*)$/.exec(line.slice(at + 3));
    if (!m) {
      c.unparsed++;
      continue;
    }
    const path = m[2] ?? '';
    c.events++;
    if (path === '(deleted)') c.noPath++;
    else if (fileRe.test(path)) {
      c.objectPath++;
      files.add(path);
    } else {
      // The generator never opens a directory: a directory path is a create/delete event
      // reported (FAN_REPORT_FID) against the parent, with the entry's name lost.
      c.parentOnly++;
    }
  }
  c.filesNamed = files.size;
  // fatrace never names a created or deleted directory itself (only its parent).
  c.dirsComplete = 0;
  return c;
}

interface JsonRecord {
  pid?: number;
  path?: string;
  events?: string[];
  isDir?: boolean;
  overflow?: boolean;
}

function countFan(file: string, storm: string, genPid: number): Counts {
  const c = emptyCounts();
  const fileRe = new RegExp(`^${escapeRe(storm)}/d\\d+/f\\d+$`);
  const dirRe = new RegExp(`^${escapeRe(storm)}/d\\d+$`);
  const files = new Set<string>();
  const dirCreated = new Set<string>();
  const dirDeleted = new Set<string>();
  for (const line of readLines(file)) {
    let r: JsonRecord;
    try {
      r = JSON.parse(line) as JsonRecord;
    } catch {
      c.unparsed++;
      continue;
    }
    if (r.overflow) {
      c.overflows++;
      continue;
    }
    if (r.pid !== genPid) {
      c.others++;
      continue;
    }
    c.events++;
    const path = r.path;
    const attrib = r.events?.includes('attrib') ?? false;
    if (attrib) c.attrib++;
    if (path === undefined) {
      c.noPath++;
      if (attrib) c.attribNoPath++;
      continue;
    }
    c.objectPath++;
    if (fileRe.test(path)) files.add(path);
    else if (dirRe.test(path) && r.isDir) {
      if (r.events?.includes('create')) dirCreated.add(path);
      if (r.events?.includes('delete')) dirDeleted.add(path);
    }
  }
  c.filesNamed = files.size;
  c.dirsComplete = [...dirCreated].filter((d) => dirDeleted.has(d)).length;
  return c;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---------------------------------------------------------------------------------------------
// One traced run

type Tool = 'fatrace' | 'fan' | 'fan-all';

const TOOL_LABEL: Record<Tool, string> = {
  fatrace: 'fatrace -c',
  fan: 'fan trace --json MNT',
  'fan-all': 'fan trace --json (no PATH)',
};

interface RunResult {
  tool: Tool;
  gen: GenResult;
  /** CPU seconds of the tracer from live to caught up. */
  cpuS: number;
  /** ... of which user and system time. */
  cpuUserS: number;
  cpuSysS: number;
  /** CPU seconds of the tracer from exec to caught up (includes start-up). */
  cpuTotalS: number;
  /** Seconds from the generator's exit until the tracer had written everything. */
  drainS: number;
  caughtUp: boolean;
  why?: string;
  peakRssMiB: number;
  counts: Counts;
  exit: Exit;
  /** Interesting stderr lines, with counts. */
  stderr: Map<string, number>;
}

function summarizeStderr(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    m.set(line, (m.get(line) ?? 0) + 1);
  }
  return m;
}

async function tracedRun(tool: Tool, fs: LoopFs, work: string, genBin: string, o: Options): Promise<RunResult> {
  const out = join(work, `${tool}.out`);
  const storm = join(fs.dir, `storm-${tool}`);
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  let tracer: Child;
  if (tool === 'fatrace') {
    // -c marks the filesystem of the current directory.
    tracer = startChild('fatrace', ['-c', '-o', out], fs.dir);
  } else {
    const prof = o.profileDir && tool === 'fan' ? ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`] : [];
    const scope = tool === 'fan' ? [fs.dir] : [];
    tracer = startChild(process.execPath, [...prof, cli, 'trace', '--json', '-o', out, ...scope], work);
  }
  try {
    const tail = new Tail(out);
    const live = await awaitSentinel(tail, join(fs.dir, `.start-${tool}`), tracer, 20_000, 100);
    if (!live.ok) throw new Error(`${tool} did not come up (${live.why}): ${tracer.stderr()}`);
    const cpu0 = cpuSeconds(tracer.pid);
    const gen = await runGenerator(genBin, storm, o);
    // Sample while waiting, so a tracer that dies (fatrace exits on some errors) still has a
    // last known CPU time.
    let cpu1: Cpu = { user: NaN, sys: NaN };
    let rss = NaN;
    const sample = (): void => {
      try {
        cpu1 = cpuSeconds(tracer.pid);
        rss = peakRssMiB(tracer.pid);
      } catch {
        // exited
      }
    };
    const done = await awaitSentinel(tail, join(fs.dir, `.end-${tool}`), tracer, o.deadlineS * 1000, 250, sample);
    if (tracer.isAlive()) sample();
    const exit = await stop(tracer);
    const counts = tool === 'fatrace' ? countFatrace(out, storm, gen.pid) : countFan(out, storm, gen.pid);
    const stderr = tracer.stderr();
    if (tool === 'fatrace' && /unexpected event info type/i.test(stderr)) counts.overflows++;
    return {
      tool,
      gen,
      cpuS: cpu1.user + cpu1.sys - cpu0.user - cpu0.sys,
      cpuUserS: cpu1.user - cpu0.user,
      cpuSysS: cpu1.sys - cpu0.sys,
      cpuTotalS: cpu1.user + cpu1.sys,
      drainS: done.ms / 1000,
      caughtUp: done.ok,
      ...(done.why === undefined ? {} : { why: done.why }),
      peakRssMiB: rss,
      counts,
      exit,
      stderr: summarizeStderr(stderr),
    };
  } finally {
    await stop(tracer);
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

const fmtInt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—');
const fmt = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '—');
const pct = (a: number, b: number): string => (b > 0 ? `${((100 * a) / b).toFixed(1)}%` : '—');

function table(rows: string[][]): string {
  const [head, ...body] = rows;
  if (!head) return '';
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...body.map(line)].join('\n');
}

function report(o: Options, baseline: GenResult, fat: RunResult, fan: RunResult, all: RunResult): string {
  const runs = [fat, fan, all];
  const us = (r: RunResult): number => (1e6 * r.cpuS) / r.counts.events;
  const usFile = (r: RunResult): number => (1e6 * r.cpuS) / o.files;
  const f = fat.counts;
  const u = fan.counts;
  const a = all.counts;
  const col = (fn: (r: RunResult) => string): string[] => runs.map(fn);
  const share = (n: (c: Counts) => number) => (r: RunResult): string => `${fmtInt(n(r.counts))} (${pct(n(r.counts), r.counts.events)})`;
  const rows: string[][] = [
    ['', ...runs.map((r) => TOOL_LABEL[r.tool]), 'MNT run / fatrace'],
    [`generator wall time (s); no tracer: ${fmt(baseline.wallS)}`, ...col((r) => fmt(r.gen.wallS)), fmt(fan.gen.wallS / fat.gen.wallS)],
    ['generator rate (files/s)', ...col((r) => fmtInt(o.files / r.gen.wallS)), ''],
    ['caught up after the generator exited (s)', ...col((r) => (r.caughtUp ? fmt(r.drainS) : `no (${r.why ?? ''})`)), ''],
    ['events (lines/records of the generator pid)', ...col((r) => fmtInt(r.counts.events)), fmt(u.events / f.events)],
    ["… with the object's own path", ...col(share((c) => c.objectPath)), ''],
    ["… with only the parent directory's path", ...col(share((c) => c.parentOnly)), ''],
    ['… without a path ("(deleted)" / no `path`)', ...col(share((c) => c.noPath)), ''],
    ['… ATTRIB records (nlink change of unlink)', ...col((r) => (r.tool === 'fatrace' ? 'not traced' : `${fmtInt(r.counts.attrib)}, ${fmtInt(r.counts.attribNoPath)} without path`)), ''],
    [`storm files named at least once (of ${fmtInt(o.files)})`, ...col((r) => `${fmtInt(r.counts.filesNamed)} (${pct(r.counts.filesNamed, o.files)})`), ''],
    [`subdirs with create and delete under their own path (of ${o.dirs})`, ...col((r) => fmtInt(r.counts.dirsComplete)), ''],
    ['overflows', ...col((r) => fmtInt(r.counts.overflows)), ''],
    ['tracer CPU, live → caught up (s)', ...col((r) => fmt(r.cpuS)), fmt(fan.cpuS / fat.cpuS)],
    ['… user / system (s)', ...col((r) => `${fmt(r.cpuUserS)} / ${fmt(r.cpuSysS)}`), ''],
    ['tracer CPU per event (µs)', ...col((r) => fmt(us(r))), fmt(us(fan) / us(fat))],
    ['tracer CPU per storm file (µs)', ...col((r) => fmt(usFile(r))), fmt(usFile(fan) / usFile(fat))],
    ['tracer CPU incl. start-up (s)', ...col((r) => fmt(r.cpuTotalS)), ''],
    ['tracer peak RSS (MiB)', ...col((r) => fmt(r.peakRssMiB, 1)), ''],
  ];
  const ratio = us(fan) / us(fat);
  const verdict = (ok: boolean): string => (ok ? 'PASS' : 'MISS');
  const targets = [
    `- CPU per event, ours (MNT run) / fatrace = ${fmt(ratio)} (target ≤ 2): ${verdict(ratio <= 2)}`,
    `- records with a path, MNT run = ${pct(u.objectPath, u.events)}: ${verdict(u.events > 0 && u.noPath === 0)}` +
      ' (an event that cannot be named is still written out, so this also counts unnamed ones)',
    `- records with a path, no-PATH run (nothing filtered) = ${pct(a.objectPath, a.events)} (target 100%): ${verdict(a.events > 0 && a.noPath === 0)}`,
    `- every storm file named with its path, MNT run = ${fmtInt(u.filesNamed)} of ${fmtInt(o.files)}: ${verdict(u.filesNamed === o.files)}`,
    `- overflows, ours = ${u.overflows} + ${a.overflows} (target 0): ${verdict(u.overflows + a.overflows === 0 && fan.caughtUp && all.caughtUp)}`,
  ];
  return `${table(rows)}\n\nTargets:\n${targets.join('\n')}\n`;
}

function stderrReport(r: RunResult): string {
  const label = TOOL_LABEL[r.tool];
  if (r.stderr.size === 0) return `${label}: stderr empty; exit ${r.exit.code ?? r.exit.signal}`;
  const top = [...r.stderr].sort((a, b) => b[1] - a[1]).slice(0, 5);
  return `${label}: exit ${r.exit.code ?? r.exit.signal}; stderr:\n${top.map(([l, n]) => `  ${n} × ${l.slice(0, 160)}`).join('\n')}`;
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.profileDir) mkdirSync(o.profileDir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), 'trace-storm-'));
  let fs: LoopFs | undefined;
  try {
    const genBin = compileGen(work);
    fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 1024 });
    const queue = readFileSync('/proc/sys/fs/fanotify/max_queued_events', 'utf8').trim();
    let fatraceVersion = '(version unknown)';
    try {
      fatraceVersion = execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'fatrace'], { encoding: 'utf8' }).trim();
    } catch {
      // not a Debian package
    }
    process.stdout.write(
      `trace storm: ${o.files} files in ${o.dirs} dirs on loop ext4 ${fs.dir}; ` +
        `${cpus().length} CPUs, Linux ${release()}, ` +
        `node ${process.version}, fatrace ${fatraceVersion}, max_queued_events ${queue}\n`,
    );

    const baseline = await runGenerator(genBin, join(fs.dir, 'storm-baseline'), o);
    process.stdout.write(`baseline (no tracer): ${fmt(baseline.wallS)} s, ${fmtInt(o.files / baseline.wallS)} files/s\n`);
    const runs: RunResult[] = [];
    for (const tool of ['fatrace', 'fan', 'fan-all'] as const) {
      const r = await tracedRun(tool, fs, work, genBin, o);
      runs.push(r);
      process.stdout.write(`${TOOL_LABEL[tool]}: generator ${fmt(r.gen.wallS)} s, tracer CPU ${fmt(r.cpuS)} s\n`);
    }
    const [fat, fan, all] = runs as [RunResult, RunResult, RunResult];
    process.stdout.write(`\n${report(o, baseline, fat, fan, all)}`);
    process.stdout.write(`\n${runs.map(stderrReport).join('\n')}\n`);
    if (o.profileDir) process.stdout.write(`\n${profileSummary(o.profileDir)}\n`);
    if (o.keep) process.stdout.write(`\noutputs kept in ${work}\n`);
  } finally {
    await fs?.cleanup();
    if (!o.keep) await rm(work, { recursive: true, force: true });
  }
}

await main();
