/**
 * Watch: time to ready and memory, ours vs @parcel/watcher vs chokidar, side by side in one run.
 *
 *   npm run build && node dist/bench/watch-ready.js [--files 100000] [--big-files 1000000]
 *        [--reps-ours 5] [--reps-parcel 3] [--reps-chokidar 1] [--parcel-deadline 60]
 *        [--chokidar-deadline 300] [--no-big] [--profile DIR]
 *
 * A C generator (bench/watch-gen.c, compiled into a temp dir) builds a tree on a fresh
 * loop-mounted ext4: 10 empty files in every leaf directory, 100 directories per level, so
 * 100,000 files make 1 + 100 + 10,000 = 10,101 directories. Each watcher runs in its own node
 * process (bench/watch-child.ts), so RSS is per tool: we time the call that starts watching the
 * root until it is live, read RSS right after that and after two full GCs, then check that the
 * watch works by creating a file in the deepest directory (from this process) and waiting for its
 * event. Repetitions of the tools are interleaved; the tables give medians and ranges.
 *
 * Then the same for ours and @parcel/watcher on 1,000,000 files (110,101 directories; chokidar
 * is skipped there: at 100k it already needs ~15 s and ~900 MB). Parcel gets `--parcel-deadline`
 * seconds there; a slower parcel is reported as not finished.
 *
 * The page cache is warm (the tree was just written), as on a developer's machine.
 *
 * @module
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  TOOL_LABEL,
  WatcherChild,
  compileGen,
  createExt4,
  fmt,
  isEv,
  isReady,
  watchMachineNote,
  median,
  monoNs,
  parseFlags,
  profileSummary,
  runGen,
  table,
  verdict,
  type Ext4,
  type Tool,
} from './watch-util.js';

const USAGE =
  'node dist/bench/watch-ready.js [--files N] [--big-files N] [--reps-ours N] [--reps-parcel N] [--reps-chokidar N] ' +
  '[--parcel-deadline S] [--chokidar-deadline S] [--no-big] [--profile DIR]';

const o = parseFlags(
  process.argv.slice(2),
  {
    files: 100_000,
    bigFiles: 1_000_000,
    repsOurs: 5,
    repsParcel: 3,
    repsChokidar: 1,
    parcelDeadline: 60,
    chokidarDeadline: 300,
    noBig: false,
    profile: '',
  },
  USAGE,
);

const FILES_PER_LEAF = 10;

/** Fanout per level for `files` files, 10 per leaf, 100 directories per level. */
function shape(files: number): number[] {
  let leaves = Math.max(1, Math.ceil(files / FILES_PER_LEAF));
  const fan: number[] = [];
  while (leaves > 100) {
    fan.push(100);
    leaves = Math.ceil(leaves / 100);
  }
  fan.push(leaves);
  return fan;
}

interface Run {
  tool: Tool;
  ok: boolean;
  why?: string;
  readyMs: number;
  infoReadyMs?: number;
  backend?: string;
  rssMiB: number;
  rssGcMiB: number;
  heapGcMiB: number;
  hwmMiB: number;
  probeMs: number;
}

async function runOne(tool: Tool, root: string, deepDir: string, tag: string, deadlineS: number, profileDir?: string): Promise<Run> {
  const child = new WatcherChild({
    tool,
    dir: root,
    ...(profileDir ? { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] } : {}),
  });
  const empty: Run = { tool, ok: false, readyMs: NaN, rssMiB: NaN, rssGcMiB: NaN, heapGcMiB: NaN, hwmMiB: NaN, probeMs: NaN };
  try {
    let ready;
    try {
      ready = await child.next(isReady, deadlineS * 1000);
    } catch (err) {
      return { ...empty, why: `not ready within ${deadlineS} s (${(err as Error).message.slice(0, 200)})` };
    }
    const run: Run = {
      tool,
      ok: true,
      readyMs: ready.readyMs,
      ...(ready.info ? { infoReadyMs: ready.info.readyMs, backend: ready.info.backend } : {}),
      rssMiB: ready.rssMiB,
      rssGcMiB: ready.rssGcMiB,
      heapGcMiB: ready.heapGcMiB,
      hwmMiB: ready.hwmMiB,
      probeMs: NaN,
    };
    if (tool === 'none') return run;
    // Does it work? A file created in the deepest directory, by this process.
    const probe = join(deepDir, `probe-${tool}-${tag}`);
    const t = monoNs(); // before: the create event is queued inside open(), before writeFileSync returns
    writeFileSync(probe, 'probe\n');
    try {
      const ev = await child.next((m): m is Extract<typeof m, { t: 'ev' }> => isEv(m) && m.items.some((i) => i.path === probe), 30_000);
      run.probeMs = Number(BigInt(ev.at) - t) / 1e6;
    } catch (err) {
      run.ok = false;
      run.why = `probe ${probe} not reported: ${(err as Error).message.slice(0, 200)}`;
    }
    return run;
  } finally {
    await child.close();
    child.kill();
  }
}

interface Phase {
  files: number;
  dirs: number;
  genS: number;
  runs: Run[];
  skipped: Partial<Record<Tool, string>>;
}

async function phase(gen: string, files: number, tools: Tool[], reps: Record<Tool, number>, deadlines: Record<Tool, number>): Promise<Phase> {
  const fan = shape(files);
  const leaves = fan.reduce((a, b) => a * b, 1);
  let dirs = 1;
  let level = 1;
  for (const f of fan) dirs += level *= f;
  const inodes = Math.ceil((leaves * FILES_PER_LEAF + dirs) * 1.1) + 10_000;
  const sizeMiB = Math.max(1024, Math.ceil((dirs * 4096 * 1.5 + inodes * 256 * 1.3) / 1048576) + 1024);
  let fs: Ext4 | undefined;
  const skipped: Partial<Record<Tool, string>> = {};
  try {
    process.stderr.write(`\n[${files} files] mkfs.ext4 ${sizeMiB} MiB, ${inodes} inodes …\n`);
    fs = await createExt4(sizeMiB, inodes);
    const root = join(fs.dir, 'tree');
    mkdirSync(root);
    process.stderr.write(`[${files} files] generating ${fan.join('×')} dirs × ${FILES_PER_LEAF} files …\n`);
    const g = await runGen(gen, ['tree', root, String(FILES_PER_LEAF), ...fan.map(String)]);
    const [madeDirs = NaN, madeFiles = NaN] = g.nums;
    process.stderr.write(`[${files} files] ${madeFiles} files in ${madeDirs} dirs in ${fmt(g.wallS)} s\n`);
    const deepDir = join(root, ...fan.map((f) => `d${f - 1}`));
    const runs: Run[] = [];
    const maxReps = Math.max(...tools.map((t) => reps[t]));
    for (let r = 0; r < maxReps; r++) {
      for (const tool of tools) {
        if (r >= reps[tool] || skipped[tool]) continue;
        const profileDir = o.profile && tool === 'ours' && r === 0 ? join(o.profile, `ready-${files}`) : undefined;
        if (profileDir) mkdirSync(profileDir, { recursive: true });
        const run = await runOne(tool, root, deepDir, `${files}-${r}`, deadlines[tool], profileDir);
        process.stderr.write(
          `[${files} files] ${tool} #${r + 1}: ${run.ok ? `ready ${fmt(run.readyMs, 1)} ms, RSS ${fmt(run.rssMiB, 1)} / ${fmt(run.rssGcMiB, 1)} MiB after GC, probe ${fmt(run.probeMs, 1)} ms` : `FAILED: ${run.why}`}\n`,
        );
        runs.push(run);
        if (!run.ok && run.why?.startsWith('not ready')) skipped[tool] = run.why;
        if (profileDir) process.stderr.write(`${profileSummary(profileDir, 15)}\n`);
      }
    }
    return { files: madeFiles, dirs: madeDirs, genS: g.wallS, runs, skipped };
  } finally {
    await fs?.cleanup();
  }
}

function range(xs: number[], digits = 1): string {
  if (xs.length === 0) return '–';
  const m = median(xs);
  if (xs.length === 1) return fmt(m, digits);
  return `${fmt(m, digits)} (${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)})`;
}

function report(p: Phase, tools: Tool[], notRun: Partial<Record<Tool, string>>): { oursReady: number; oursRss: number; parcelReady: number } {
  const ok = (t: Tool): Run[] => p.runs.filter((r) => r.tool === t && r.ok);
  const oursReady = median(ok('ours').map((r) => r.readyMs));
  const rows: string[][] = [
    ['tool', 'runs', 'ready (ms), median (min–max)', 'RSS after ready (MiB)', 'RSS after GC (MiB)', 'JS heap after GC (MiB)', 'probe: create → event (ms)', 'ready ÷ ours'],
  ];
  for (const t of ['none', ...tools, ...(Object.keys(notRun) as Tool[])] as Tool[]) {
    if (notRun[t]) {
      rows.push([TOOL_LABEL[t], '0', `not run: ${notRun[t]}`, '', '', '', '', '']);
      continue;
    }
    const rs = ok(t);
    const failed = p.runs.filter((r) => r.tool === t && !r.ok);
    if (rs.length === 0 && failed.length === 0) continue;
    if (rs.length === 0) {
      rows.push([TOOL_LABEL[t], `0 of ${failed.length}`, `did not finish: ${failed[0]?.why ?? ''}`, '', '', '', '', '']);
      continue;
    }
    const ready = median(rs.map((r) => r.readyMs));
    rows.push([
      TOOL_LABEL[t],
      `${rs.length}${failed.length ? ` (+${failed.length} failed)` : ''}`,
      t === 'none' ? '–' : range(rs.map((r) => r.readyMs), t === 'ours' ? 2 : 0),
      range(rs.map((r) => r.rssMiB)),
      range(rs.map((r) => r.rssGcMiB)),
      range(rs.map((r) => r.heapGcMiB)),
      t === 'none' ? '–' : range(rs.map((r) => r.probeMs)),
      t === 'none' || t === 'ours' ? '' : `${fmt(ready / oursReady, 0)}×`,
    ]);
  }
  process.stdout.write(`\n### ${p.files.toLocaleString('en-US')} files in ${p.dirs.toLocaleString('en-US')} directories (generated in ${fmt(p.genS, 1)} s)\n\n${table(rows)}\n`);
  const backends = [...new Set(ok('ours').map((r) => r.backend))].join(', ');
  const inner = ok('ours').map((r) => r.infoReadyMs ?? NaN);
  process.stdout.write(`\nours: backend ${backends}; ReadyInfo.readyMs median ${fmt(median(inner), 2)} ms.\n`);
  return { oursReady, oursRss: median(ok('ours').map((r) => r.rssMiB)), parcelReady: median(ok('parcel').map((r) => r.readyMs)) };
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'watch-ready-'));
  try {
    const gen = compileGen(work);
    process.stdout.write(`# watch-ready: ${watchMachineNote()}\n`);
    const reps: Record<Tool, number> = { none: 1, ours: o.repsOurs, parcel: o.repsParcel, chokidar: o.repsChokidar };
    const deadlines: Record<Tool, number> = { none: 30, ours: 30, parcel: 300, chokidar: o.chokidarDeadline };
    const small = await phase(gen, o.files, ['none', 'ours', 'parcel', 'chokidar'], reps, deadlines);
    const s = report(small, ['ours', 'parcel', 'chokidar'], {});
    let b: ReturnType<typeof report> | undefined;
    if (!o.noBig) {
      const big = await phase(gen, o.bigFiles, ['ours', 'parcel'], reps, { ...deadlines, parcel: o.parcelDeadline });
      b = report(big, ['ours', 'parcel'], { chokidar: 'skipped at this size (≈15 s and ≈900 MB already at 100k files)' });
    }
    const rows = [
      ['target', `${small.files.toLocaleString('en-US')} files`, ...(b ? [`${o.bigFiles.toLocaleString('en-US')} files`] : []), 'verdict'],
      [
        'ours ready ≤ 20 ms',
        `${fmt(s.oursReady, 2)} ms`,
        ...(b ? [`${fmt(b.oursReady, 2)} ms`] : []),
        verdict(s.oursReady <= 20 && (!b || b.oursReady <= 20)),
      ],
      ['ours RSS ≤ 60 MB', `${fmt(s.oursRss, 1)} MiB`, ...(b ? [`${fmt(b.oursRss, 1)} MiB`] : []), verdict(s.oursRss * 1.048576 <= 60 && (!b || b.oursRss * 1.048576 <= 60))],
      [
        '≥ 25× faster than @parcel/watcher',
        `${fmt(s.parcelReady / s.oursReady, 0)}×`,
        ...(b ? [Number.isFinite(b.parcelReady) ? `${fmt(b.parcelReady / b.oursReady, 0)}×` : 'parcel did not finish'] : []),
        verdict(s.parcelReady / s.oursReady >= 25),
      ],
    ];
    process.stdout.write(`\n### Against the targets\n\n${table(rows)}\n`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
