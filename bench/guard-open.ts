/**
 * Per-open overhead of a permission guard, side by side in one run on a loop-mounted ext4.
 *
 *   npm run build && node dist/bench/guard-open.js [--count 200000] [--rounds 3] [--pin] [--profile DIR]
 *
 * A C program (bench/guard-opener.c, compiled into a temp dir) opens and closes one file COUNT
 * times (after 1,000 untimed warm-up opens) and prints µs per open+close. Each round runs it,
 * one variant after the other (medians over the rounds are reported):
 *   (a) with no listener;
 *   (b) under a minimal C listener (bench/guard-listener.c): FAN_CLASS_CONTENT, a mount mark
 *       with FAN_OPEN_PERM, a poll/read loop answering FAN_ALLOW;
 *   (b') the same C listener plus an inode ignore mark on the file (the kernel-cache anchor);
 *   (c) under our Guard (bench/guard-child.ts, a separate node process), one allow-all rule,
 *       decision cache off;
 *   (d) the same with the decision cache on;
 *   (e) node on our addon alone (startReader, one writeSync per answer, close): what a JS
 *       listener costs that goes back to the event loop after each answer, as (b) does;
 *   (f) FanotifyGroup.listen answering allow (the event layer without the guard);
 * ((c)–(f) are bench/guard-child.ts in a separate node process) and prints µs/op, the listener's CPU per open, the events it saw, and the ratios
 * ours-uncached / C listener (target ≤ 1.25) and ours-cached / no listener (target ≤ 1.1). A
 * round runs each ratio's two variants back to back ((a) then (d), (b) then (c)); the verdict is
 * the median over the rounds of that round's ratio.
 *
 * `--pin` runs the opener under `taskset -c 0` and every listener under `taskset -c 1` (all
 * threads), so that each answer is a cross-CPU wake-up of the same two CPUs: less noise from
 * the scheduler's placement, which varies from round to round on these shared VMs.
 *
 * `--profile DIR` afterwards runs (c) once more under `node --cpu-prof --cpu-prof-dir DIR` and
 * prints the guard's top functions by self time (that run's µs/op includes the profiler).
 *
 * Safety: marks only on the loop mount; every wait has a deadline; listeners are killed
 * before the filesystem is unmounted, also on failure.
 *
 * @module
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs, type LoopFs } from '../test/helpers/loopfs.js';
import { compile, cpuSeconds, fmt, killAll, machineNote, median, profileSummary, runToEnd, start, stop, table, waitReady, type Child } from './guard-util.js';

interface Options {
  count: number;
  rounds: number;
  profile?: string;
  /** Pin the opener to CPU 0 and the listener (all its threads) to CPU 1. */
  pin: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { count: 200_000, rounds: 3, pin: false };
  const usage = (m: string): never => {
    process.stderr.write(`guard-open: ${m}\nusage: node dist/bench/guard-open.js [--count N] [--rounds R] [--pin] [--profile DIR]\n`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--count' || a === '--rounds') {
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) usage(`${a} needs a positive integer`);
      if (a === '--count') o.count = n;
      else o.rounds = n;
      i++;
    } else if (a === '--pin') {
      o.pin = true;
    } else if (a === '--profile') {
      if (!v) usage('--profile needs a directory');
      o.profile = v;
      i++;
    } else usage(`unknown argument ${String(a)}`);
  }
  return o;
}

type Variant = 'none' | 'c' | 'c-ignore' | 'ours-uncached' | 'ours-cached' | 'raw' | 'group';
// Each target's pair runs back to back ((a) then (d); (b) then (c)), so that a round's ratio
// compares runs seconds apart: the host's state drifts between rounds more than within a pair.
const VARIANTS: Variant[] = ['none', 'ours-cached', 'c-ignore', 'c', 'ours-uncached', 'raw', 'group'];
const LABEL: Record<Variant, string> = {
  none: '(a) no listener',
  c: '(b) C listener, FAN_OPEN_PERM allow',
  'c-ignore': "(b') C listener + inode ignore mark",
  'ours-uncached': '(c) our Guard, allow-all, cache off',
  'ours-cached': '(d) our Guard, allow-all, cache on',
  raw: '(e) node on our addon alone (startReader + writeSync, no reread)',
  group: '(f) FanotifyGroup.listen(ev => ev.allow())',
};
const CHILD_MODE: Partial<Record<Variant, string>> = { 'ours-uncached': 'guard-off', 'ours-cached': 'guard-on', raw: 'raw', group: 'group' };

interface Result {
  usPerOp: number;
  /** Listener CPU per open (µs), from /proc between ready and stop. */
  cpuUsPerOp?: number;
  /** Events the listener decided in userspace. */
  events?: number;
}

const WARMUP = 1000;
/**
 * After a listener is ready, let it settle before timing: a node listener just started still
 * compiles and collects on background threads, which on 2 CPUs competes with the opener. The
 * guard is a daemon; its steady state is what the targets are about. Every listener gets it.
 */
const SETTLE_MS = 500;
const GUARD_CHILD = fileURLToPath(new URL('./guard-child.js', import.meta.url));

async function runVariant(v: Variant, bins: { opener: string; listener: string }, mnt: string, file: string, count: number, pin: boolean, profileDir?: string): Promise<Result> {
  let listener: Child | undefined;
  // taskset execs the command: the pid stays the listener's.
  const onCpu = (cpu: number, cmd: string, args: string[]): [string, string[]] => (pin ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args]);
  if (v === 'c') listener = start('guard-listener', ...onCpu(1, bins.listener, [mnt]));
  else if (v === 'c-ignore') listener = start('guard-listener', ...onCpu(1, bins.listener, [mnt, file]));
  else if (CHILD_MODE[v]) {
    const nodeArgs = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
    listener = start('guard-child', ...onCpu(1, process.execPath, [...nodeArgs, GUARD_CHILD, mnt, CHILD_MODE[v]]));
  }
  try {
    if (listener) {
      await waitReady(listener);
      await sleep(SETTLE_MS);
    }
    const cpu0 = listener ? cpuSeconds(listener.proc.pid!) : 0;
    // Deadline: 2 ms per open, at least 120 s (200,000 opens at 100 µs take 20 s).
    const out = await runToEnd('guard-opener', ...onCpu(0, bins.opener, [file, String(count), String(WARMUP)]), Math.max(120_000, count * 2));
    const cpu1 = listener ? cpuSeconds(listener.proc.pid!) : 0;
    const usPerOp = Number(out.trim().split(/\s+/)[0]);
    const r: Result = { usPerOp };
    if (listener) {
      r.cpuUsPerOp = ((cpu1 - cpu0) * 1e6) / (count + WARMUP);
      const code = await stop(listener);
      if (code !== 0) throw new Error(`${listener.name} exited with ${String(code)}:\n${listener.err()}`);
      const ev = /^events (\d+)$/m.exec(listener.out());
      if (ev) r.events = Number(ev[1]);
    }
    return r;
  } finally {
    if (listener) await stop(listener, 5000);
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const bindir = await mkdtemp(join(tmpdir(), 'guard-open-bin-'));
  process.on('exit', () => rmSync(bindir, { recursive: true, force: true })); // also after SIGINT
  let fs: LoopFs | undefined;
  try {
    const bins = { opener: compile(bindir, 'guard-opener'), listener: compile(bindir, 'guard-listener') };
    fs = await createLoopFs({ fstype: 'ext4' });
    const file = join(fs.dir, 'target');
    await writeFile(file, Buffer.alloc(4096, 'x'));
    process.stdout.write(`guard open: ${fmt(o.count)} open+close of one 4 KiB file (after ${fmt(WARMUP)} untimed warm-up opens) on loop ext4 ${fs.dir}; ${o.rounds} round(s); ${o.pin ? 'opener pinned to CPU 0, listeners to CPU 1' : 'not pinned'}; ${machineNote()}\n\n`);
    const results = new Map<Variant, Result[]>(VARIANTS.map((v) => [v, []]));
    for (let round = 1; round <= o.rounds; round++) {
      for (const v of VARIANTS) {
        const r = await runVariant(v, bins, fs.dir, file, o.count, o.pin);
        results.get(v)!.push(r);
        process.stderr.write(`round ${round}: ${LABEL[v]}: ${fmt(r.usPerOp, 2)} µs/op${r.events !== undefined ? `, ${fmt(r.events)} events` : ''}${r.cpuUsPerOp !== undefined ? `, listener CPU ${fmt(r.cpuUsPerOp, 2)} µs/op` : ''}\n`);
      }
    }
    const med = (v: Variant, k: keyof Result): number => median(results.get(v)!.map((r) => r[k] ?? NaN));
    const none = med('none', 'usPerOp');
    const rows = VARIANTS.map((v) => [
      LABEL[v],
      fmt(med(v, 'usPerOp'), 2),
      o.rounds > 1 ? results.get(v)!.map((r) => fmt(r.usPerOp, 2)).join(' / ') : '',
      v === 'none' ? '' : fmt(med(v, 'cpuUsPerOp'), 2),
      v === 'none' ? '' : fmt(med(v, 'events')),
      fmt(med(v, 'usPerOp') / none, 2),
    ]);
    process.stdout.write(`${table(['', 'µs/op (median)', 'each round', 'listener CPU µs/op', 'events decided in userspace', '× no listener'], rows)}\n\n`);
    // The verdicts use the median of the per-round ratios of each back-to-back pair.
    const pairRatio = (v: Variant, base: Variant): number[] => results.get(v)!.map((r, i) => r.usPerOp / results.get(base)![i]!.usPerOp);
    const uncachedRounds = pairRatio('ours-uncached', 'c');
    const cachedRounds = pairRatio('ours-cached', 'none');
    const uncachedRatio = median(uncachedRounds);
    const cachedRatio = median(cachedRounds);
    const cIgnoreRatio = med('c-ignore', 'usPerOp') / none;
    process.stdout.write(
      `${table(
        ['ratio', 'value', 'target', ''],
        [
          ['ours uncached / C listener (median of rounds)', fmt(uncachedRatio, 3), '≤ 1.25', uncachedRatio <= 1.25 ? 'PASS' : 'MISS'],
          ['  each round', uncachedRounds.map((x) => fmt(x, 3)).join(' / '), '', ''],
          ['  ratio of the medians', fmt(med('ours-uncached', 'usPerOp') / med('c', 'usPerOp'), 3), '', ''],
          ['ours cached / no listener (median of rounds)', fmt(cachedRatio, 3), '≤ 1.1', cachedRatio <= 1.1 ? 'PASS' : 'MISS'],
          ['  each round', cachedRounds.map((x) => fmt(x, 3)).join(' / '), '', ''],
          ['  ratio of the medians', fmt(med('ours-cached', 'usPerOp') / none, 3), '', ''],
          ['C listener + ignore mark / no listener (anchor)', fmt(cIgnoreRatio, 3), '', ''],
          ['ours cached / C listener + ignore mark', fmt(med('ours-cached', 'usPerOp') / med('c-ignore', 'usPerOp'), 3), '', ''],
          ['(e) node on the addon alone / C listener', fmt(med('raw', 'usPerOp') / med('c', 'usPerOp'), 3), '', ''],
          ['(f) FanotifyGroup / C listener', fmt(med('group', 'usPerOp') / med('c', 'usPerOp'), 3), '', ''],
          ['ours uncached / (e)', fmt(med('ours-uncached', 'usPerOp') / med('raw', 'usPerOp'), 3), '', ''],
        ],
      )}\n`,
    );
    if (o.profile) {
      mkdirSync(o.profile, { recursive: true });
      const r = await runVariant('ours-uncached', bins, fs.dir, file, o.count, o.pin, o.profile);
      process.stdout.write(`\nprofile of (c) under node --cpu-prof: ${fmt(r.usPerOp, 2)} µs/op with the profiler, listener CPU ${fmt(r.cpuUsPerOp ?? NaN, 2)} µs/op\n\n${profileSummary(o.profile)}\n`);
    }
  } finally {
    await killAll(); // listeners go before the unmount
    await fs?.cleanup();
    await rm(bindir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`guard-open: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
