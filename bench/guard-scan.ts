/**
 * On-access scan throughput with prevention on: `fan scan` (FILDES and INSTREAM) vs
 * `clamonacc --fdpass`, the same clamd, on a loop-mounted ext4.
 *
 *   npm run build && node dist/bench/guard-scan.js [--files 2000] [--procs 4] [--workers 4]
 *       [--tools fildes,instream,clamonacc] [--deadline 900] [--profile DIR] [--count-scans]
 *       [--clamd-tmp DIR] [--warmup N] [--rounds R]
 *
 * Every measurement gets its own fresh set of FILES distinct small files (1–8 KiB of random
 * bytes; every 100th file also holds the test signature's string) and its own freshly started
 * clamd (test/helpers/clamd.ts: one hand-made signature), so neither clamd's clean-file cache
 * nor our kernel decision cache carries anything from one measurement to the next. A C reader (bench/guard-reader.c) opens
 * and reads (to EOF, 64 KiB reads) each file of a set once; we report files/s, open+read+close
 * latency, the CPU of the tool and of clamd per file, and whether every infected file, and only
 * those, was refused with EPERM. Each tool is measured with 1 sequential reader and with PROCS
 * concurrent ones.
 *
 * `--rounds R` (default 3) repeats all measurements R times on new sets. Within a round, the
 * tools of one reader mode run back to back, in alternating order from round to round; each
 * round gives a ratio ours ÷ clamonacc, and the verdict is the median of those ratios, because
 * the host's load drifts more between rounds than within one.
 *
 * The tools, each started after its clamd answers PING and measured once it denies a probe
 * file holding the signature in its set's directory:
 *   fildes    node dist/src/cli/main.js scan --clamd SOCKET --prevent [--workers N] MNT
 *   instream  … scan --clamd SOCKET --prevent --instream [--workers N] MNT
 *   clamonacc clamonacc --foreground --fdpass --config-file=CONF --log=FILE, CONF holding
 *             LocalSocket SOCKET, OnAccessIncludePath MNT, OnAccessPrevention yes,
 *             OnAccessExcludeUname clamav (clamonacc refuses to start without an exclusion).
 *
 * `--count-scans` starts clamd with `LogClean yes` and counts the scans clamd logged (OK and
 * FOUND lines) per file of the measured set (the probe and the warm-up set not counted).
 *
 * `--clamd-tmp DIR` makes every clamd of the run write its temporary files (INSTREAM copies each
 * stream to one before scanning it) under DIR, e.g. /dev/shm (tmpfs), instead of under os.tmpdir()
 * (the default, printed in the header). The same setting serves every tool of a run.
 *
 * `--warmup N` first has every tool (clamonacc too) scan N other distinct files with the same
 * reader mode, unmeasured, after it is ready and before the measured set: the steady state of a
 * long-running daemon, where node has compiled its hot path. Without it (the default, and the
 * issue's measure) the measured set is the first thing each tool scans after start.
 *
 * `--profile DIR` runs `fan scan` under `node --cpu-prof --cpu-prof-dir DIR/TOOL-MODE` and prints
 * its top functions by self time (throughput numbers of such a run include the profiler).
 *
 * Safety: marks only on the loop mount; every wait has a deadline; tools and clamd are killed
 * before the filesystem is unmounted, also on failure.
 *
 * @module
 */
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs, type LoopFs } from '../test/helpers/loopfs.js';
import { startClamd, TEST_MALWARE, type ClamdInstance } from '../test/helpers/clamd.js';
import { CLI, compile, cpuSeconds, fmt, killAll, machineNote, median, profileSummary, quantile, runToEnd, start, stop, table, type Child } from './guard-util.js';

type Tool = 'fildes' | 'instream' | 'clamonacc';
const TOOLS: Tool[] = ['fildes', 'instream', 'clamonacc'];
const LABEL: Record<Tool, string> = {
  fildes: 'fan scan --prevent (FILDES)',
  instream: 'fan scan --prevent --instream',
  clamonacc: 'clamonacc --fdpass',
};

interface Options {
  files: number;
  procs: number;
  workers: number;
  tools: Tool[];
  deadline: number;
  profile?: string;
  /** Start clamd with LogClean and count its scans per file. */
  countScans: boolean;
  /** Parent of clamd's TemporaryDirectory (default: under os.tmpdir()). */
  clamdTmp?: string;
  /** Files scanned, unmeasured, before each measured set (0: none). */
  warmup: number;
  /** Rounds, each measuring every tool on fresh sets; ratios are medians over the rounds. */
  rounds: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { files: 2000, procs: 4, workers: 4, tools: TOOLS, deadline: 900, countScans: false, warmup: 0, rounds: 3 };
  const usage = (m: string): never => {
    process.stderr.write(
      `guard-scan: ${m}\nusage: node dist/bench/guard-scan.js [--files N] [--procs P] [--workers W] [--tools fildes,instream,clamonacc] [--deadline SECONDS] [--profile DIR] [--count-scans] [--clamd-tmp DIR] [--warmup N] [--rounds R]\n`,
    );
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[++i];
    if (a === '--count-scans') {
      o.countScans = true;
      i--;
    } else if (a === '--tools') {
      const ts = (v ?? '').split(',').filter(Boolean);
      if (ts.length === 0 || ts.some((t) => !(TOOLS as string[]).includes(t))) usage(`--tools takes a list of ${TOOLS.join(', ')}`);
      o.tools = ts as Tool[];
    } else if (a === '--clamd-tmp') {
      if (!v) usage('--clamd-tmp needs a directory');
      o.clamdTmp = v;
    } else if (a === '--profile') {
      if (!v) usage('--profile needs a directory');
      o.profile = v;
    } else if (a === '--warmup') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) usage('--warmup needs a number of files (0 or more)');
      o.warmup = n;
    } else if (a === '--files' || a === '--procs' || a === '--workers' || a === '--deadline' || a === '--rounds') {
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) usage(`${a} needs a positive integer`);
      o[a.slice(2) as 'files' | 'procs' | 'workers' | 'deadline' | 'rounds'] = n;
    } else usage(`unknown argument ${String(a)}`);
  }
  return o;
}

/** The filesystem type of the mount holding `dir` (e.g. ext4, tmpfs). */
function fsType(dir: string): string {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown filesystem';
  }
}

/** One set of files in its own directory. */
interface FileSet {
  dir: string;
  list: string;
  sizes: number[];
  infected: Set<number>;
  probe: string;
}

const EPERM = 1;

async function makeSet(dir: string, listFile: string, n: number): Promise<FileSet> {
  await mkdir(dir);
  const sizes: number[] = [];
  const infected = new Set<number>();
  const paths: string[] = [];
  const sig = Buffer.from(TEST_MALWARE, 'latin1');
  for (let i = 0; i < n; i++) {
    const size = randomInt(1024, 8193);
    const data = randomBytes(size);
    if (i % 100 === 37) {
      sig.copy(data, randomInt(0, size - sig.length));
      infected.add(i);
    }
    const p = join(dir, `f${String(i).padStart(5, '0')}`);
    await writeFile(p, data);
    sizes.push(size);
    paths.push(p);
  }
  const probe = join(dir, 'zz-probe');
  await writeFile(probe, Buffer.concat([randomBytes(512), sig, randomBytes(512)]));
  await writeFile(listFile, `${paths.join('\n')}\n`);
  return { dir, list: listFile, sizes, infected, probe };
}

/** True once opening `file` is refused with EPERM (the tool scans and prevents there). */
function denied(file: string): boolean {
  try {
    closeSync(openSync(file, 'r'));
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitDenied(tool: Child, files: string[], deadlineMs: number): Promise<number> {
  const t0 = performance.now();
  const pending = new Set(files);
  while (pending.size > 0) {
    for (const f of [...pending]) if (denied(f)) pending.delete(f);
    if (pending.size === 0) break;
    if (tool.exited()) throw new Error(`${tool.name} exited (${String(await tool.closed)}) before it denied the probe files:\n${tool.err()}${tool.out()}`);
    if (performance.now() - t0 > deadlineMs) throw new Error(`${tool.name}: probe files not denied within ${deadlineMs / 1000} s: ${[...pending].join(', ')}\n${tool.err()}`);
    await sleep(20);
  }
  return performance.now() - t0;
}

interface ReadResult {
  wallS: number;
  filesPerS: number;
  latMs: number[];
  infectedDeniedOpen: number;
  infectedDeniedRead: number;
  infectedAllowed: number;
  cleanDenied: number;
  cleanBad: number;
  toolCpuS: number;
  clamdCpuS: number;
  /** Scans in clamd's log (with --count-scans). */
  scans?: number;
}

async function runReader(reader: string, set: FileSet, procs: number, outPrefix: string, deadlineS: number, tool: Child, clamd: ClamdInstance): Promise<ReadResult> {
  const cpu0 = cpuSeconds(tool.proc.pid!);
  const cl0 = cpuSeconds(clamd.pid);
  const out = await runToEnd('guard-reader', reader, [set.list, String(procs), outPrefix], deadlineS * 1000);
  const cpu1 = cpuSeconds(tool.proc.pid!);
  const cl1 = cpuSeconds(clamd.pid);
  const ns = Number(/elapsed_ns (\d+)/.exec(out)?.[1]);
  const r: ReadResult = {
    wallS: ns / 1e9,
    filesPerS: set.sizes.length / (ns / 1e9),
    latMs: [],
    infectedDeniedOpen: 0,
    infectedDeniedRead: 0,
    infectedAllowed: 0,
    cleanDenied: 0,
    cleanBad: 0,
    toolCpuS: cpu1 - cpu0,
    clamdCpuS: cl1 - cl0,
  };
  const seen = new Set<number>();
  for (let k = 0; k < procs; k++) {
    for (const line of (await readFile(`${outPrefix}.${k}`, 'utf8')).split('\n')) {
      if (!line) continue;
      const [idx, oerr, rerr, bytes, lat] = line.split(' ').map(Number) as [number, number, number, number, number];
      seen.add(idx);
      r.latMs.push(lat / 1e6);
      if (set.infected.has(idx)) {
        if (oerr === EPERM) r.infectedDeniedOpen++;
        else if (rerr === EPERM) r.infectedDeniedRead++;
        else r.infectedAllowed++;
      } else if (oerr === EPERM || rerr === EPERM) r.cleanDenied++;
      else if (oerr !== 0 || rerr !== 0 || bytes !== set.sizes[idx]) r.cleanBad++;
    }
  }
  if (seen.size !== set.sizes.length) throw new Error(`guard-reader reported ${seen.size} of ${set.sizes.length} files`);
  return r;
}

function startTool(tool: Tool, clamd: ClamdInstance, mnt: string, work: string, workers: number, mode: string, profileDir?: string): Child {
  if (tool === 'clamonacc') {
    const conf = join(work, `clamonacc-${mode}.conf`);
    const text = [`LocalSocket ${clamd.socket}`, `OnAccessIncludePath ${mnt}`, 'OnAccessPrevention yes', 'OnAccessExcludeUname clamav', ''].join('\n');
    writeFileSync(conf, text);
    const log = join(work, `clamonacc-${mode}.log`);
    writeFileSync(log, ''); // clamonacc appends, and every round starts it again
    return start('clamonacc', 'clamonacc', ['--foreground', '--fdpass', `--config-file=${conf}`, `--log=${log}`]);
  }
  const log = openSync(join(work, `${tool}-${mode}.log`), 'w');
  try {
    const prof = profileDir ? ['--cpu-prof', '--cpu-prof-dir', join(profileDir, `${tool}-${mode}`)] : [];
    return start(`fan scan (${tool})`, process.execPath, [...prof, CLI, 'scan', '--clamd', clamd.socket, '--prevent', ...(tool === 'instream' ? ['--instream'] : []), '--workers', String(workers), mnt], {
      stdout: log,
    });
  } finally {
    closeSync(log);
  }
}

type Mode = 'seq' | 'par';
const MODES: Mode[] = ['seq', 'par'];

/** One tool's measurement of one set in one reader mode. */
interface Measurement {
  r: ReadResult;
  readyMs: number;
  note: string;
}

/** What `fan scan` printed as its last metrics line on exit, in a few words. */
function fanScanNote(stderr: string): string {
  const line = /^\{"metrics":.*$/m.exec(stderr)?.[0];
  if (!line) return 'metrics none';
  const printed = JSON.parse(line) as {
    metrics: { decisions: number; byAnswer: { deny: number }; cacheInserts: number; cacheRefused?: number; failures: number; late: number };
    responses?: { responses: number; writes: number };
  };
  const m = printed.metrics;
  const w = printed.responses;
  return (
    `metrics ${m.decisions} decisions, ${m.byAnswer.deny} denied, ${m.cacheInserts} cached, ${m.cacheRefused ?? 0} not cached (changed or open for writing), ${m.failures} failures, ${m.late} late` +
    (w ? `; ${w.responses} answers in ${w.writes} writes` : '')
  );
}

/** Scans clamd logged so far (it runs with LogClean under --count-scans). */
async function clamdScans(clamd: ClamdInstance): Promise<number> {
  const log = await readFile(clamd.logFile, 'utf8');
  return (log.match(/: (OK|.* FOUND)$/gm) ?? []).length;
}

/**
 * Start a fresh clamd and the tool, wait until the tool denies the set's probe, read the warm-up
 * set (if any) and then the measured set, stop both.
 */
async function measure(o: Options, reader: string, t: Tool, mode: Mode, set: FileSet, warm: FileSet | undefined, mnt: string, work: string, profileDir: string | undefined, clamds: Set<ClamdInstance>): Promise<Measurement> {
  const procs = mode === 'seq' ? 1 : o.procs;
  const clamd = await startClamd({ extraConfig: o.countScans ? ['LogClean yes'] : [], temporaryParent: o.clamdTmp });
  clamds.add(clamd);
  let tool: Child | undefined;
  try {
    tool = startTool(t, clamd, mnt, work, o.workers, mode, profileDir);
    const readyMs = await waitDenied(tool, [set.probe], 60_000);
    if (warm) await runReader(reader, warm, procs, join(work, `${t}-${mode}-warm.out`), o.deadline, tool, clamd);
    const scansBefore = o.countScans ? await clamdScans(clamd) : 0;
    const r = await runReader(reader, set, procs, join(work, `${t}-${mode}.out`), o.deadline, tool, clamd);
    if (o.countScans) r.scans = (await clamdScans(clamd)) - scansBefore;
    process.stderr.write(
      `${LABEL[t]}, ${mode === 'seq' ? 'sequential' : `${o.procs} readers`}: ${fmt(r.filesPerS, 1)} files/s (${fmt(r.wallS, 2)} s); infected denied ${r.infectedDeniedOpen}+${r.infectedDeniedRead}/${set.infected.size}, clean denied ${r.cleanDenied}, clean errors ${r.cleanBad}\n`,
    );
    const code = await stop(tool);
    let note: string;
    if (t === 'clamonacc') {
      const log = await readFile(join(work, `clamonacc-${mode}.log`), 'utf8').catch(() => '');
      note = `exit ${String(code)}, its log has ${(log.match(/FOUND/g) ?? []).length} FOUND lines${warm ? ' (probe, warm-up and measured set)' : ''}`;
    } else note = `exit ${String(code)}, ${fanScanNote(tool.err())}`;
    return { r, readyMs, note };
  } finally {
    if (tool) await stop(tool, 5000);
    await clamd.stop();
    clamds.delete(clamd);
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'guard-scan-'));
  process.on('exit', () => rmSync(work, { recursive: true, force: true })); // also after SIGINT
  let fs: LoopFs | undefined;
  const clamds = new Set<ClamdInstance>();
  try {
    const reader = compile(work, 'guard-reader');
    fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 1024 });
    const mnt = fs.dir;
    const clamdVersion = execFileSync('clamd', ['--version'], { encoding: 'utf8' }).trim();
    process.stdout.write(
      `guard scan: ${fmt(o.files)} distinct files of 1–8 KiB per set (${fmt(o.files / 100)} with the test signature), a fresh set and a fresh clamd per tool, reader mode and round, on loop ext4 ${mnt}; ${o.rounds} round(s); readers: 1 sequential and ${o.procs} concurrent processes; ${o.warmup > 0 ? `each tool warmed up on ${fmt(o.warmup)} other files before each measured set` : 'measured from the first file after start (no warm-up)'}; fan scan --workers ${o.workers}; ${clamdVersion}, TemporaryDirectory under ${o.clamdTmp ?? tmpdir()} (${fsType(o.clamdTmp ?? tmpdir())}); ${machineNote()}\n\n`,
    );
    const results = new Map<string, Measurement[]>(); // `${tool} ${mode}` → one per round
    const key = (t: Tool, mode: Mode): string => `${t} ${mode}`;
    const sets = new Map<string, FileSet>();
    for (let round = 1; round <= o.rounds; round++) {
      // Within a round a mode's tools run back to back, in alternating order from round to
      // round, so that each round's ratio compares runs seconds apart.
      const order = round % 2 === 1 ? o.tools : [...o.tools].reverse();
      const dirs: string[] = [];
      const warmSets = new Map<string, FileSet>();
      for (const mode of MODES) {
        for (const t of order) {
          const name = `r${round}-${t}-${mode}`;
          sets.set(key(t, mode), await makeSet(join(mnt, name), join(work, `${name}.list`), o.files));
          dirs.push(join(mnt, name));
          if (o.warmup > 0) {
            warmSets.set(key(t, mode), await makeSet(join(mnt, `${name}-warm`), join(work, `${name}-warm.list`), o.warmup));
            dirs.push(join(mnt, `${name}-warm`));
          }
        }
      }
      execFileSync('sync');
      if (o.rounds > 1) process.stderr.write(`round ${round}:\n`);
      for (const mode of MODES) {
        for (const t of order) {
          const m = await measure(o, reader, t, mode, sets.get(key(t, mode))!, warmSets.get(key(t, mode)), mnt, work, round === 1 ? o.profile : undefined, clamds);
          results.set(key(t, mode), [...(results.get(key(t, mode)) ?? []), m]);
        }
      }
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    }

    const mid = (ms: Measurement[], f: (r: ReadResult) => number): number => median(ms.map((m) => f(m.r)));
    const rows: (string | number)[][] = [];
    for (const t of o.tools) {
      for (const mode of MODES) {
        const ms = results.get(key(t, mode))!;
        const sum = (f: (r: ReadResult) => number): number => ms.reduce((n, m) => n + f(m.r), 0);
        const lat = ms.flatMap((m) => m.r.latMs).sort((a, b) => a - b); // quantile() takes sorted input
        const infected = sets.get(key(t, mode))!.infected.size * ms.length;
        const atRead = sum((r) => r.infectedDeniedRead);
        rows.push([
          LABEL[t],
          mode === 'seq' ? '1 (sequential)' : `${o.procs} concurrent`,
          fmt(mid(ms, (r) => r.filesPerS), 1),
          ...(o.rounds > 1 ? [ms.map((m) => fmt(m.r.filesPerS, 0)).join(' / ')] : []),
          `${fmt(median(lat), 2)} / ${fmt(quantile(lat, 0.99), 2)} / ${fmt(Math.max(...lat), 1)}`,
          fmt(mid(ms, (r) => (r.toolCpuS * 1e6) / o.files), 0),
          fmt(mid(ms, (r) => (r.clamdCpuS * 1e6) / o.files), 0),
          `${sum((r) => r.infectedDeniedOpen) + atRead}/${infected}${atRead ? ` (${atRead} at read)` : ''}`,
          `${sum((r) => r.cleanDenied)} / ${sum((r) => r.cleanBad)}`,
          ...(o.countScans ? [fmt(mid(ms, (r) => (r.scans ?? NaN) / o.files), 2)] : []),
        ]);
      }
    }
    const many = o.rounds > 1 ? ' (median of rounds)' : '';
    process.stdout.write(
      `${table(['tool', 'readers', `files/s${many}`, ...(o.rounds > 1 ? ['each round'] : []), 'latency ms p50 / p99 / max (all rounds)', `tool CPU µs/file${many}`, `clamd CPU µs/file${many}`, 'infected denied EPERM', 'clean denied / other errors', ...(o.countScans ? ['clamd scans per file'] : [])], rows)}\n\n`,
    );
    for (const t of o.tools) {
      for (const mode of MODES) {
        const ms = results.get(key(t, mode))!;
        process.stdout.write(`- ${LABEL[t]}, ${mode}: ready (probe denied) within ${ms.map((m) => fmt(m.readyMs, 0)).join(' / ')} ms; ${ms.map((m) => m.note).join('; ')}\n`);
      }
    }
    if (o.tools.includes('clamonacc')) {
      const ratioRows: (string | number)[][] = [];
      for (const t of o.tools.filter((x) => x !== 'clamonacc')) {
        for (const mode of MODES) {
          const ours = results.get(key(t, mode))!;
          const theirs = results.get(key('clamonacc', mode))!;
          const each = ours.map((m, i) => m.r.filesPerS / theirs[i]!.r.filesPerS);
          const ratio = median(each);
          ratioRows.push([
            `${LABEL[t]} / clamonacc, ${mode === 'seq' ? 'sequential' : `${o.procs} readers`}`,
            fmt(ratio, 2),
            ...(o.rounds > 1 ? [`${each.map((x) => fmt(x, 2)).join(' / ')} (${each.filter((x) => x >= 3).length} of ${each.length} ≥ 3)`] : []),
            '≥ 3',
            ratio >= 3 ? 'PASS' : 'MISS',
          ]);
        }
      }
      process.stdout.write(`\n${table([`files/s ratio${many}`, 'value', ...(o.rounds > 1 ? ['each round'] : []), 'target', ''], ratioRows)}\n`);
    }
    if (o.profile) {
      for (const t of o.tools.filter((x) => x !== 'clamonacc')) {
        for (const mode of MODES) {
          process.stdout.write(`\nprofile of ${LABEL[t]}, ${mode} (round 1): ${profileSummary(join(o.profile, `${t}-${mode}`), 20)}\n`);
        }
      }
    }
    const allOk = [...results.values()].every((ms) => ms.every(({ r }) => r.infectedAllowed === 0 && r.cleanDenied === 0 && r.cleanBad === 0));
    process.stdout.write(`\ndetection: ${allOk ? 'every infected file refused with EPERM and every clean file read in full, by every tool' : 'SEE TABLE: some infected file was allowed or some clean file refused'}\n`);
  } finally {
    await killAll(); // tools go before the unmount
    for (const c of clamds) await c.stop();
    await fs?.cleanup();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`guard-scan: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
