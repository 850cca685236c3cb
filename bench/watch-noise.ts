/**
 * Watch: the cost of activity outside the watched subtree, ours vs @parcel/watcher, in one run.
 *
 *   npm run build && node dist/bench/watch-noise.js [--files 100000] [--dirs 100] [--runs 1]
 *        [--debounce -1] [--profile DIR]
 *
 * On a fresh loop-mounted ext4, a watcher (its own node process, bench/watch-child.ts) watches
 * `ROOT/watched` (10 files) while the C generator (bench/watch-gen.c `storm`) creates, writes,
 * closes and unlinks `--files` files in `--dirs` directories under `ROOT/elsewhere` as fast as it
 * can. Meanwhile this process rewrites one watched file every 100 ms, to show the watch stays live
 * and to measure its latency under the storm. After the storm a sentinel file in the subtree must
 * be reported ("caught up").
 *
 * CPU is utime+stime of the watcher process from /proc/PID/stat: from the storm's start to its
 * end, and to caught up; divided by the storm's wall time it is the share of one core. Every
 * delivered event is checked against the subtree; rescans (queue overflows) are counted.
 *
 * Our watcher has one filesystem mark, so the kernel queues every event of the filesystem to it
 * and it filters them in user space; @parcel/watcher places inotify watches on the subtree's
 * directories only, so the kernel never sends it the storm. Both are reported as measured.
 *
 * Unless `--no-floor`, each run also measures bench/watch-fanread.c, a minimal C reader of the same
 * kernel group and mark that only counts events: once reading as events arrive (as ours does),
 * once sleeping 1 ms after each wake-up. It shows how much of the cost is the kernel's and the
 * wake-ups', whatever the reader does with the events.
 *
 * `--profile DIR` adds one run of ours under `node --cpu-prof` and prints its top functions.
 * `--debounce MS` passes debounceMs to ours (default: ours' default).
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs, type LoopFs } from '../test/helpers/loopfs.js';
import {
  TOOL_LABEL,
  WatcherChild,
  compileGen,
  cpuDelta,
  cpuSeconds,
  fmt,
  isEv,
  isReady,
  watchMachineNote,
  memMiB,
  monoNs,
  parseFlags,
  profileSummary,
  quantile,
  startGen,
  table,
  verdict,
  type ChildMsg,
  type Tool,
} from './watch-util.js';

const USAGE = 'node dist/bench/watch-noise.js [--files N] [--dirs N] [--runs N] [--debounce MS] [--profile DIR] [--no-floor]';
const o = parseFlags(process.argv.slice(2), { files: 100_000, dirs: 100, runs: 1, debounce: -1, profile: '', noFloor: false }, USAGE);
// --debounce: -1 (the default) means ours runs with its own default debounceMs.

interface Result {
  label: string;
  tool: Tool;
  stormS: number;
  rate: number;
  cpuStorm: number;
  userStorm: number;
  sysStorm: number;
  cpuCaught: number;
  caughtAfterS: number;
  events: number;
  outside: number;
  outsideSample: string[];
  rescans: number;
  errors: number;
  probes: number;
  probeSeen: number;
  lat: number[];
  hwmMiB: number;
  debounceMs: number;
  /** The storm process's own CPU (getrusage). */
  genUser: number;
  genSys: number;
}

async function stormOnce(gen: string, root: string): Promise<{ wallS: number; genUser: number; genSys: number }> {
  const startNs = monoNs();
  const g = startGen(gen, ['storm', join(root, 'elsewhere'), String(o.files), String(o.dirs)]);
  const { endNs, nums } = await g.done;
  if (nums[0] !== o.files) throw new Error(`storm made ${String(nums[0])} files, expected ${o.files}`);
  return { wallS: Number(endNs - startNs) / 1e9, genUser: nums[3] ?? NaN, genSys: nums[4] ?? NaN };
}

async function measure(gen: string, root: string, watched: string[], tool: Tool, profileDir?: string): Promise<Result> {
  const debounceMs = tool === 'ours' && o.debounce >= 0 ? o.debounce : undefined;
  const subtract = tool === 'ours' ? (debounceMs ?? 30) : 0;
  const child = new WatcherChild({
    tool,
    dir: join(root, 'watched'),
    ...(debounceMs === undefined ? {} : { debounceMs }),
    ...(profileDir ? { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {}),
  });
  try {
    await child.next(isReady, 60_000);
    await sleep(600);
    child.take();
    const cpu0 = cpuSeconds(child.pid);
    const startNs = monoNs();
    const g = startGen(gen, ['storm', join(root, 'elsewhere'), String(o.files), String(o.dirs)]);
    let stormDone = false;
    const done = g.done.finally(() => (stormDone = true));
    // Rewrite a watched file every 100 ms during the storm.
    const writes: { path: string; t: bigint }[] = [];
    const buf = Buffer.from('rewritten\n');
    for (let i = 0; !stormDone; i++) {
      const path = watched[i % watched.length]!;
      const fd = openSync(path, 'r+');
      writeSync(fd, buf, 0, buf.length, 0);
      writes.push({ path, t: monoNs() });
      closeSync(fd);
      await Promise.race([sleep(100), done.catch(() => undefined)]);
    }
    const { endNs, nums } = await done;
    const cpuEnd = cpuSeconds(child.pid);
    if (nums[0] !== o.files) throw new Error(`storm made ${String(nums[0])} files, expected ${o.files}`);
    const stormS = Number(endNs - startNs) / 1e9;
    // Caught up: a sentinel written after the storm is reported.
    const sentinel = join(root, 'watched', `sentinel-${tool}-${Date.now()}`);
    writeFileSync(sentinel, 'end\n');
    const ev = await child.next((m): m is Extract<ChildMsg, { t: 'ev' }> => isEv(m) && m.items.some((it) => it.path === sentinel), 120_000);
    const cpuCaught = cpuSeconds(child.pid);
    const caughtAfterS = Number(BigInt(ev.at) - endNs) / 1e9;
    const stats = await child.stats();
    const hwmMiB = memMiB(child.pid).hwm;
    const evs = child.take().filter(isEv) as Extract<ChildMsg, { t: 'ev' }>[];
    evs.push(ev);
    const lat: number[] = [];
    for (const w of writes) {
      let best: bigint | undefined;
      for (const e of evs) {
        const at = BigInt(e.at);
        if (at < w.t || (best !== undefined && at >= best)) continue;
        if (e.items.some((it) => it.path === w.path)) best = at;
      }
      if (best !== undefined && Number(best - w.t) / 1e6 < 2000) lat.push(Number(best - w.t) / 1e6 - subtract);
    }
    lat.sort((a, b) => a - b);
    return {
      label: `${TOOL_LABEL[tool]}${profileDir ? ' under --cpu-prof' : ''}`,
      tool,
      stormS,
      rate: o.files / stormS,
      cpuStorm: cpuDelta(cpu0, cpuEnd).total,
      userStorm: cpuDelta(cpu0, cpuEnd).user,
      sysStorm: cpuDelta(cpu0, cpuEnd).sys,
      cpuCaught: cpuDelta(cpu0, cpuCaught).total,
      caughtAfterS,
      events: stats.events,
      outside: stats.outside,
      outsideSample: stats.outsideSample,
      rescans: stats.rescans,
      errors: stats.errors,
      probes: writes.length,
      probeSeen: lat.length,
      lat,
      hwmMiB,
      debounceMs: subtract,
      genUser: nums[3] ?? NaN,
      genSys: nums[4] ?? NaN,
    };
  } finally {
    await child.close();
    child.kill();
  }
}

interface Floor {
  label: string;
  stormS: number;
  genUser: number;
  genSys: number;
  cpuStorm: number;
  userStorm: number;
  sysStorm: number;
  cpuTotal: number;
  reads: number;
  events: number;
}

/** The minimal C reader (bench/watch-fanread.c) during one storm. */
async function measureFloor(fanread: string, gen: string, root: string, sleepUs: number): Promise<Floor> {
  const proc = spawn(fanread, [root, String(sleepUs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (x: string) => (err += x));
  const closed = new Promise<number | null>((resolve) => proc.once('close', resolve));
  try {
    await Promise.race([
      new Promise<void>((resolve) => proc.stdout.once('data', () => resolve())),
      closed.then(() => {
        throw new Error(`watch-fanread failed: ${err}`);
      }),
    ]);
    await sleep(300);
    const pid = proc.pid!;
    const cpu0 = cpuSeconds(pid);
    const startNs = monoNs();
    const { endNs, nums } = await startGen(gen, ['storm', join(root, 'elsewhere'), String(o.files), String(o.dirs)]).done;
    const cpuEnd = cpuSeconds(pid);
    await sleep(300);
    proc.kill('SIGINT');
    await closed;
    const [reads = NaN, events = NaN, user = NaN, sys = NaN] = err.trim().split(/\s+/).map(Number);
    return {
      label: sleepUs > 0 ? `minimal C reader, same mark, sleeps ${sleepUs / 1000} ms per wake-up` : 'minimal C reader, same mark, reads at once',
      stormS: Number(endNs - startNs) / 1e9,
      genUser: nums[3] ?? NaN,
      genSys: nums[4] ?? NaN,
      cpuStorm: cpuDelta(cpu0, cpuEnd).total,
      userStorm: cpuDelta(cpu0, cpuEnd).user,
      sysStorm: cpuDelta(cpu0, cpuEnd).sys,
      cpuTotal: cpuDelta(cpu0, { user, sys }).total,
      reads,
      events,
    };
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'watch-noise-'));
  let fs: LoopFs | undefined;
  try {
    const gen = compileGen(work);
    const fanread = compileGen(work, 'watch-fanread');
    fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 1024 });
    const root = fs.dir;
    const watched: string[] = [];
    mkdirSync(join(root, 'watched'));
    for (let i = 0; i < 10; i++) {
      const p = join(root, 'watched', `f${i}`);
      writeFileSync(p, 'initial\n');
      watched.push(p);
    }
    const queue = readFileSync('/proc/sys/fs/fanotify/max_queued_events', 'utf8').trim();
    process.stdout.write(`# watch-noise: ${watchMachineNote()}; fanotify max_queued_events ${queue}\n`);
    process.stdout.write(
      `storm: ${o.files} files created+written+closed+unlinked in ${o.dirs} dirs under ${root}/elsewhere; watched: ${root}/watched (10 files)\n`,
    );
    const base: { wallS: number; genUser: number; genSys: number }[] = [];
    const results: Result[] = [];
    const floors: Floor[] = [];
    for (let r = 0; r < o.runs; r++) {
      const b = await stormOnce(gen, root);
      base.push(b);
      process.stderr.write(`no watcher: storm ${fmt(b.wallS)} s\n`);
      for (const tool of ['ours', 'parcel'] as Tool[]) {
        const res = await measure(gen, root, watched, tool);
        process.stderr.write(
          `${tool}: storm ${fmt(res.stormS)} s, CPU ${fmt(res.cpuStorm)} s (${fmt((100 * res.cpuStorm) / res.stormS, 0)}%), outside ${res.outside}, rescans ${res.rescans}\n`,
        );
        results.push(res);
      }
      if (!o.noFloor) {
        for (const us of [0, 1000]) {
          const f = await measureFloor(fanread, gen, root, us);
          process.stderr.write(`${f.label}: storm ${fmt(f.stormS)} s, CPU ${fmt(f.cpuStorm)} s, ${f.events} events in ${f.reads} reads\n`);
          floors.push(f);
        }
      }
    }
    let profileText = '';
    if (o.profile) {
      const dir = join(o.profile, `noise-${Date.now()}`);
      mkdirSync(dir, { recursive: true });
      results.push(await measure(gen, root, watched, 'ours', dir));
      profileText = profileSummary(dir, 25);
    }
    const pct = (x: number, s: number): string => `${fmt((100 * x) / s, 1)}%`;
    const baseWall = base.reduce((a, b) => a + b.wallS, 0) / base.length;
    const rows: string[][] = [
      [
        'watcher',
        'storm wall (s)',
        'storm rate (files/s)',
        'storm process CPU user / sys (s)',
        'watcher CPU during storm (s), user / sys',
        '% of one core during storm',
        'CPU to caught up (s)',
        '… ÷ storm wall',
        'caught up after storm (s)',
        'events delivered',
        'from outside the subtree',
        'rescans',
        'subtree writes seen',
        'their latency p50 / p99 (ms)',
        'peak RSS (MiB)',
        'watcher CPU per storm file (µs)',
        '… at the unwatched storm rate, % of one core',
      ],
    ];
    for (const r of results) {
      rows.push([
        r.label,
        fmt(r.stormS),
        fmt(r.rate, 0),
        `${fmt(r.genUser)} / ${fmt(r.genSys)}`,
        `${fmt(r.cpuStorm)}, ${fmt(r.userStorm)} / ${fmt(r.sysStorm)}`,
        pct(r.cpuStorm, r.stormS),
        fmt(r.cpuCaught),
        pct(r.cpuCaught, r.stormS),
        fmt(r.caughtAfterS),
        String(r.events),
        String(r.outside),
        String(r.rescans),
        `${r.probeSeen} of ${r.probes}`,
        `${fmt(quantile(r.lat, 0.5), 1)} / ${fmt(quantile(r.lat, 0.99), 1)}`,
        fmt(r.hwmMiB, 1),
        fmt((r.cpuCaught / o.files) * 1e6, 1),
        pct(r.cpuCaught, baseWall),
      ]);
    }
    for (const f of floors) {
      rows.push([
        f.label,
        fmt(f.stormS),
        fmt(o.files / f.stormS, 0),
        `${fmt(f.genUser)} / ${fmt(f.genSys)}`,
        `${fmt(f.cpuStorm)}, ${fmt(f.userStorm)} / ${fmt(f.sysStorm)}`,
        pct(f.cpuStorm, f.stormS),
        fmt(f.cpuTotal),
        pct(f.cpuTotal, f.stormS),
        '–',
        `${f.events} read in ${f.reads} reads`,
        '–',
        '–',
        '–',
        '–',
        '–',
        fmt((f.cpuTotal / o.files) * 1e6, 1),
        pct(f.cpuTotal, baseWall),
      ]);
    }
    process.stdout.write(
      `\nstorm without a watcher: ${base.map((b) => `${fmt(b.wallS)} s (${fmt(o.files / b.wallS, 0)} files/s, storm process CPU ${fmt(b.genUser)} user / ${fmt(b.genSys)} sys)`).join('; ')}\n\n${table(rows)}\n`,
    );
    for (const r of results.filter((x) => x.outside > 0)) {
      process.stdout.write(`\n${r.label}: events from outside the subtree, e.g. ${r.outsideSample.join('; ')}\n`);
    }
    const ours = results.filter((r) => r.tool === 'ours' && !r.label.includes('cpu-prof'));
    const worstPct = Math.max(...ours.map((r) => (100 * r.cpuCaught) / r.stormS));
    const worstAtBase = Math.max(...ours.map((r) => (100 * r.cpuCaught) / baseWall));
    const slow = Math.max(...ours.map((r) => r.stormS / baseWall));
    const outside = ours.reduce((s, r) => s + r.outside, 0);
    const rescans = ours.reduce((s, r) => s + r.rescans, 0);
    process.stdout.write(
      `\nSubtree latency excludes ours' debounce window (${fmt(ours[0]?.debounceMs ?? NaN, 0)} ms); @parcel/watcher's is as measured.\n\n${table([
        ['target', 'measured (worst run)', 'verdict'],
        ['ours ≤ 50% of one core during the storm (CPU to caught up ÷ storm wall)', `${fmt(worstPct, 1)}%`, verdict(worstPct <= 50)],
        [
          '… the same CPU at the unwatched storm rate (CPU to caught up ÷ storm wall without a watcher)',
          `${fmt(worstAtBase, 1)}% (the storm ran ${fmt(slow, 2)}× longer under ours)`,
          verdict(worstAtBase <= 50),
        ],
        ['no event from outside the subtree delivered', `${outside} outside, ${rescans} rescans`, verdict(outside === 0)],
      ])}\n`,
    );
    if (profileText) process.stdout.write(`\n${profileText}\n`);
  } finally {
    await fs?.cleanup();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
