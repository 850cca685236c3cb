/**
 * Watch: latency from a write to the watcher's callback, ours vs @parcel/watcher, in one run.
 *
 *   npm run build && node dist/bench/watch-latency.js [--writes 500] [--interval 10]
 *        [--debounce 1] [--runs 1] [--no-default]
 *
 * A small tree (10 directories × 10 files) on a fresh loop-mounted ext4. Each watcher runs in its
 * own node process (bench/watch-child.ts); this process writes: `--writes` times, every
 * `--interval` ms, it overwrites a few bytes at the start of the next file (round robin over
 * the 100 files, so a file is written again only 1 s later) and takes CLOCK_MONOTONIC right after
 * the write() syscall returns (before close()). The child takes the same clock when its callback
 * runs. A write's latency is the time to the first delivered batch that names its file.
 *
 * Ours runs with `debounceMs` = `--debounce` (default 1 ms) and, unless `--no-default`, with the
 * default debounceMs (30 ms); the debounce window is subtracted from ours. @parcel/watcher has a
 * fixed batching (src/Debounce.cc: it delivers after 50 ms without events, at the latest 500 ms after
 * the previous delivery, and at once for the first event after 500 ms of quiet): its numbers are as
 * measured. A second table (`--sparse N`, default 30) has isolated writes 600 ms apart, where
 * parcel skips its window.
 *
 * @module
 */
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs, type LoopFs } from '../test/helpers/loopfs.js';
import {
  WatcherChild,
  cpuDelta,
  cpuSeconds,
  fmt,
  isEv,
  isReady,
  watchMachineNote,
  monoNs,
  parseFlags,
  quantile,
  table,
  verdict,
  type ChildMsg,
  type Tool,
} from './watch-util.js';

const USAGE = 'node dist/bench/watch-latency.js [--writes N] [--interval MS] [--debounce MS] [--runs N] [--no-default] [--sparse N]';
const o = parseFlags(process.argv.slice(2), { writes: 500, interval: 10, debounce: 1, runs: 1, noDefault: false, sparse: 30 }, USAGE);
const SPARSE_INTERVAL = 600;

interface Config {
  label: string;
  tool: Tool;
  debounceMs?: number;
  /** Subtracted from the measured latency. */
  subtractMs: number;
  /** Subtracted in the steady stream, when it differs. */
  steadySubtractMs?: number;
}

interface Result {
  config: Config;
  subtractMs: number;
  lat: number[];
  missed: number;
  batches: number;
  cpuS: number;
}

async function measure(cfg: Config, root: string, files: string[], count: number, interval: number, subtractMs: number): Promise<Result> {
  const child = new WatcherChild({ tool: cfg.tool, dir: root, ...(cfg.debounceMs === undefined ? {} : { debounceMs: cfg.debounceMs }) });
  try {
    await child.next(isReady, 60_000);
    await sleep(600); // past parcel's 500 ms quiet period, like any watcher left alone a moment
    child.take();
    const cpu0 = cpuSeconds(child.pid);
    const writes: { path: string; t: bigint }[] = [];
    const buf = Buffer.from('written\n');
    for (let i = 0; i < count; i++) {
      const path = files[i % files.length]!;
      const fd = openSync(path, 'r+');
      writeSync(fd, buf, 0, buf.length, 0);
      const t = monoNs();
      closeSync(fd);
      writes.push({ path, t });
      await sleep(interval);
    }
    await sleep(1500);
    const cpu1 = cpuSeconds(child.pid);
    const evs = child.take().filter(isEv) as Extract<ChildMsg, { t: 'ev' }>[];
    // For each write: the first batch at or after it that names its file.
    const lat: number[] = [];
    let missed = 0;
    for (const w of writes) {
      let best: bigint | undefined;
      for (const ev of evs) {
        const at = BigInt(ev.at);
        if (at < w.t) continue;
        if (best !== undefined && at >= best) continue;
        if (ev.items.some((it) => it.path === w.path)) best = at;
      }
      if (best === undefined || Number(best - w.t) / 1e6 > 900) missed++;
      else lat.push(Number(best - w.t) / 1e6 - subtractMs);
    }
    lat.sort((a, b) => a - b);
    return { config: cfg, subtractMs, lat, missed, batches: evs.length, cpuS: cpuDelta(cpu0, cpu1).total };
  } finally {
    await child.close();
    child.kill();
  }
}

async function main(): Promise<void> {
  let fs: LoopFs | undefined;
  try {
    fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 256 });
    const root = join(fs.dir, 'tree');
    const files: string[] = [];
    for (let d = 0; d < 10; d++) {
      mkdirSync(join(root, `d${d}`), { recursive: true });
      for (let f = 0; f < 10; f++) {
        const p = join(root, `d${d}`, `f${f}`);
        writeFileSync(p, 'initial content\n');
        files.push(p);
      }
    }
    // Interleave the files over the directories so consecutive writes hit different directories.
    files.sort((a, b) => a.slice(-2).localeCompare(b.slice(-2)) || a.localeCompare(b));
    const configs: Config[] = [
      { label: `ours, debounceMs ${o.debounce}`, tool: 'ours', debounceMs: o.debounce, subtractMs: o.debounce },
      // In a steady stream a batch's window starts at its first event, so later writes wait less
      // than 30 ms: the steady table shows this one as measured; isolated writes subtract 30.
      ...(o.noDefault ? [] : [{ label: 'ours, default debounceMs (30)', tool: 'ours' as Tool, subtractMs: 30, steadySubtractMs: 0 }]),
      { label: '@parcel/watcher (fixed batching)', tool: 'parcel', subtractMs: 0 },
    ];
    process.stdout.write(`# watch-latency: ${watchMachineNote()}\n`);
    process.stdout.write(`${o.writes} writes, one every ${o.interval} ms, round robin over ${files.length} files in 10 dirs on loop ext4 ${fs.dir}\n`);
    const results: Result[] = [];
    const sparse: Result[] = [];
    for (let r = 0; r < o.runs; r++) {
      for (const cfg of configs) {
        const res = await measure(cfg, root, files, o.writes, o.interval, cfg.steadySubtractMs ?? cfg.subtractMs);
        process.stderr.write(`${cfg.label}: p50 ${fmt(quantile(res.lat, 0.5))} p99 ${fmt(quantile(res.lat, 0.99))} ms, missed ${res.missed}\n`);
        results.push(res);
      }
    }
    if (o.sparse > 0) {
      for (const cfg of configs) {
        const res = await measure(cfg, root, files, o.sparse, SPARSE_INTERVAL, cfg.subtractMs);
        process.stderr.write(`isolated, ${cfg.label}: p50 ${fmt(quantile(res.lat, 0.5))} p99 ${fmt(quantile(res.lat, 0.99))} ms, missed ${res.missed}\n`);
        sparse.push(res);
      }
    }
    const rows: string[][] = [
      ['watcher', 'subtracted (ms)', 'writes seen', 'batches', 'p50 (ms)', 'p90 (ms)', 'p99 (ms)', 'max (ms)', 'watcher CPU (s)'],
    ];
    for (const r of results) {
      rows.push([
        r.config.label,
        fmt(r.subtractMs, 0),
        `${r.lat.length} of ${r.lat.length + r.missed}`,
        String(r.batches),
        fmt(quantile(r.lat, 0.5)),
        fmt(quantile(r.lat, 0.9)),
        fmt(quantile(r.lat, 0.99)),
        fmt(r.lat[r.lat.length - 1] ?? NaN),
        fmt(r.cpuS),
      ]);
    }
    const parcel = results.filter((r) => r.config.tool === 'parcel');
    process.stdout.write(
      `\n${table(rows)}\n\n@parcel/watcher waits for 50 ms without events before it delivers, for at most 500 ms (its src/Debounce.cc): under a steady stream of writes its batches come every ~500 ms.\n`,
    );
    if (sparse.length > 0) {
      const srows: string[][] = [['watcher', 'subtracted (ms)', 'writes seen', 'p50 (ms)', 'p99 (ms)', 'max (ms)']];
      for (const r of sparse) {
        srows.push([
          r.config.label,
          fmt(r.subtractMs, 0),
          `${r.lat.length} of ${r.lat.length + r.missed}`,
          fmt(quantile(r.lat, 0.5)),
          fmt(quantile(r.lat, 0.99)),
          fmt(r.lat[r.lat.length - 1] ?? NaN),
        ]);
      }
      process.stdout.write(`\nIsolated writes (${o.sparse}, one every ${SPARSE_INTERVAL} ms: @parcel/watcher's first event after 500 ms of quiet skips its window):\n\n${table(srows)}\n`);
    }
    const main = results.filter((r) => r.config.tool === 'ours' && r.config.debounceMs === o.debounce);
    const worst = Math.max(...main.map((r) => quantile(r.lat, 0.99)));
    const p99Parcel = Math.max(...parcel.map((r) => quantile(r.lat, 0.99)));
    process.stdout.write(
      `\n${table([
        ['target', 'measured', 'verdict'],
        [`ours p99 ≤ 10 ms (debounceMs ${o.debounce} subtracted)`, `${fmt(worst)} ms`, verdict(worst <= 10 && main.every((r) => r.missed === 0))],
      ])}\n\np99 ratio @parcel/watcher (as measured) ÷ ours: ${fmt(p99Parcel / worst, 1)}×\n`,
    );
  } finally {
    await fs?.cleanup();
  }
}

await main();
