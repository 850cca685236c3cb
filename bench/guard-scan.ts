/**
 * On-access scan throughput with prevention on: `fan scan` (FILDES and INSTREAM) vs
 * `clamonacc --fdpass`, the same clamd, on a loop-mounted ext4.
 *
 *   npm run build && node dist/bench/guard-scan.js [--files 2000] [--procs 4] [--workers 4]
 *       [--tools fildes,instream,clamonacc] [--deadline 900] [--profile DIR] [--count-scans]
 *       [--clamd-tmp DIR]
 *
 * Every tool gets its own fresh sets of FILES distinct small files (1–8 KiB of random bytes;
 * every 100th file also holds the test signature's string), one set for a sequential reader and
 * one for PROCS concurrent readers, and its own freshly started clamd (test/helpers/clamd.ts:
 * one hand-made signature), so neither clamd's clean-file cache nor our kernel decision cache
 * carries anything from one measurement to the next. A C reader (bench/guard-reader.c) opens
 * and reads (to EOF, 64 KiB reads) each file of a set once; we report files/s, open+read+close
 * latency, the CPU of the tool and of clamd per file, and whether every infected file, and only
 * those, was refused with EPERM.
 *
 * The tools, each started after its clamd answers PING and measured once it denies a probe
 * file holding the signature in every set directory:
 *   fildes    node dist/src/cli/main.js scan --clamd SOCKET --prevent [--workers N] MNT
 *   instream  … scan --clamd SOCKET --prevent --instream [--workers N] MNT
 *   clamonacc clamonacc --foreground --fdpass --config-file=CONF --log=FILE, CONF holding
 *             LocalSocket SOCKET, OnAccessIncludePath MNT, OnAccessPrevention yes,
 *             OnAccessExcludeUname clamav (clamonacc refuses to start without an exclusion).
 *
 * `--count-scans` starts clamd with `LogClean yes` and counts the scans clamd logged (OK and
 * FOUND lines) per file read, probes included (each tool and mode: files + 2 probes).
 *
 * `--clamd-tmp DIR` makes every clamd of the run write its temporary files (INSTREAM copies each
 * stream to one before scanning it) under DIR, e.g. /dev/shm (tmpfs), instead of under os.tmpdir()
 * (the default, printed in the header). The same setting serves every tool of a run.
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
}

function parseArgs(argv: string[]): Options {
  const o: Options = { files: 2000, procs: 4, workers: 4, tools: TOOLS, deadline: 900, countScans: false };
  const usage = (m: string): never => {
    process.stderr.write(
      `guard-scan: ${m}\nusage: node dist/bench/guard-scan.js [--files N] [--procs P] [--workers W] [--tools fildes,instream,clamonacc] [--deadline SECONDS] [--profile DIR] [--count-scans] [--clamd-tmp DIR]\n`,
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
    } else if (a === '--files' || a === '--procs' || a === '--workers' || a === '--deadline') {
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) usage(`${a} needs a positive integer`);
      o[a.slice(2) as 'files' | 'procs' | 'workers' | 'deadline'] = n;
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
    return start('clamonacc', 'clamonacc', ['--foreground', '--fdpass', `--config-file=${conf}`, `--log=${join(work, `clamonacc-${mode}.log`)}`]);
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

interface ToolRun {
  readyMs: number;
  seq: ReadResult;
  par: ReadResult;
  notes: string[];
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const work = await mkdtemp(join(tmpdir(), 'guard-scan-'));
  process.on('exit', () => rmSync(work, { recursive: true, force: true })); // also after SIGINT
  let fs: LoopFs | undefined;
  const clamds = new Set<ClamdInstance>();
  try {
    const reader = compile(work, 'guard-reader');
    fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 512 });
    const mnt = fs.dir;
    const sets = new Map<Tool, { seq: FileSet; par: FileSet }>();
    for (const t of o.tools) {
      sets.set(t, {
        seq: await makeSet(join(mnt, `${t}-seq`), join(work, `${t}-seq.list`), o.files),
        par: await makeSet(join(mnt, `${t}-par`), join(work, `${t}-par.list`), o.files),
      });
    }
    execFileSync('sync');
    const clamdVersion = execFileSync('clamd', ['--version'], { encoding: 'utf8' }).trim();
    process.stdout.write(
      `guard scan: ${fmt(o.files)} distinct files of 1–8 KiB per set (${fmt(o.files / 100)} with the test signature), a fresh set and a fresh clamd per tool and reader mode, on loop ext4 ${mnt}; readers: 1 sequential and ${o.procs} concurrent processes; fan scan --workers ${o.workers}; ${clamdVersion}, TemporaryDirectory under ${o.clamdTmp ?? tmpdir()} (${fsType(o.clamdTmp ?? tmpdir())}); ${machineNote()}\n\n`,
    );
    const runs = new Map<Tool, ToolRun>();
    for (const t of o.tools) {
      const set = sets.get(t)!;
      const res: Partial<ToolRun> = { notes: [] };
      for (const mode of ['seq', 'par'] as const) {
        const clamd = await startClamd({ extraConfig: o.countScans ? ['LogClean yes'] : [], temporaryParent: o.clamdTmp });
        clamds.add(clamd);
        let tool: Child | undefined;
        try {
          tool = startTool(t, clamd, mnt, work, o.workers, mode, o.profile);
          const readyMs = await waitDenied(tool, [set.seq.probe, set.par.probe], 60_000);
          res.readyMs = Math.max(res.readyMs ?? 0, readyMs);
          const r = await runReader(reader, set[mode], mode === 'seq' ? 1 : o.procs, join(work, `${t}-${mode}.out`), o.deadline, tool, clamd);
          res[mode] = r;
          process.stderr.write(
            `${LABEL[t]}, ${mode === 'seq' ? 'sequential' : `${o.procs} readers`}: ${fmt(r.filesPerS, 1)} files/s (${fmt(r.wallS, 2)} s); infected denied ${r.infectedDeniedOpen}+${r.infectedDeniedRead}/${set[mode].infected.size}, clean denied ${r.cleanDenied}, clean errors ${r.cleanBad}\n`,
          );
          const code = await stop(tool);
          if (t === 'clamonacc') {
            const log = await readFile(join(work, `clamonacc-${mode}.log`), 'utf8').catch(() => '');
            const found = (log.match(/FOUND/g) ?? []).length;
            res.notes!.push(`${mode}: exit ${String(code)}, its log has ${found} FOUND lines`);
          } else {
            const line = /^\{"metrics":.*$/m.exec(tool.err())?.[0];
            const printed = line
              ? (JSON.parse(line) as {
                  metrics: { decisions: number; byAnswer: { deny: number }; cacheInserts: number; cacheRefused?: number; failures: number; late: number };
                  responses?: { responses: number; writes: number };
                })
              : undefined;
            const m = printed?.metrics;
            const w = printed?.responses;
            res.notes!.push(
              `${mode}: exit ${String(code)}, metrics ${
                m
                  ? `${m.decisions} decisions, ${m.byAnswer.deny} denied, ${m.cacheInserts} cached, ${m.cacheRefused ?? 0} not cached (changed or open for writing), ${m.failures} failures, ${m.late} late` +
                    (w ? `; ${w.responses} answers in ${w.writes} writes` : '')
                  : 'none'
              }`,
            );
          }
          if (o.countScans) {
            const log = await readFile(clamd.logFile, 'utf8');
            r.scans = (log.match(/: (OK|.* FOUND)$/gm) ?? []).length;
          }
        } finally {
          if (tool) await stop(tool, 5000);
          await clamd.stop();
          clamds.delete(clamd);
        }
      }
      runs.set(t, res as ToolRun);
    }

    const rows: (string | number)[][] = [];
    for (const t of o.tools) {
      const run = runs.get(t)!;
      for (const mode of ['seq', 'par'] as const) {
        const r = run[mode];
        const set = sets.get(t)![mode];
        rows.push([
          LABEL[t],
          mode === 'seq' ? '1 (sequential)' : `${o.procs} concurrent`,
          fmt(r.filesPerS, 1),
          fmt(r.wallS, 2),
          `${fmt(median(r.latMs), 2)} / ${fmt(quantile(r.latMs, 0.99), 2)} / ${fmt(Math.max(...r.latMs), 1)}`,
          fmt((r.toolCpuS * 1e6) / o.files, 0),
          fmt((r.clamdCpuS * 1e6) / o.files, 0),
          `${r.infectedDeniedOpen + r.infectedDeniedRead}/${set.infected.size}${r.infectedDeniedRead ? ` (${r.infectedDeniedRead} at read)` : ''}`,
          `${r.cleanDenied} / ${r.cleanBad}`,
          ...(o.countScans ? [fmt((r.scans ?? NaN) / (o.files + 2), 2)] : []),
        ]);
      }
    }
    process.stdout.write(
      `${table(['tool', 'readers', 'files/s', 'wall s', 'latency ms p50 / p99 / max', 'tool CPU µs/file', 'clamd CPU µs/file', 'infected denied EPERM', 'clean denied / other errors', ...(o.countScans ? ['clamd scans per file'] : [])], rows)}\n\n`,
    );
    for (const t of o.tools) process.stdout.write(`- ${LABEL[t]}: ready (probes denied) within ${fmt(runs.get(t)!.readyMs, 0)} ms; ${runs.get(t)!.notes.join('; ')}\n`);
    const acc = runs.get('clamonacc');
    if (acc) {
      const ratioRows: (string | number)[][] = [];
      for (const t of o.tools.filter((x) => x !== 'clamonacc')) {
        for (const mode of ['seq', 'par'] as const) {
          const ratio = runs.get(t)![mode].filesPerS / acc[mode].filesPerS;
          ratioRows.push([`${LABEL[t]} / clamonacc, ${mode === 'seq' ? 'sequential' : `${o.procs} readers`}`, fmt(ratio, 2), '≥ 3', ratio >= 3 ? 'PASS' : 'MISS']);
        }
      }
      process.stdout.write(`\n${table(['files/s ratio', 'value', 'target', ''], ratioRows)}\n`);
    }
    if (o.profile) {
      for (const t of o.tools.filter((x) => x !== 'clamonacc')) {
        for (const mode of ['seq', 'par'] as const) {
          process.stdout.write(`\nprofile of ${LABEL[t]}, ${mode}: ${profileSummary(join(o.profile, `${t}-${mode}`), 20)}\n`);
        }
      }
    }
    const allOk = o.tools.every((t) =>
      (['seq', 'par'] as const).every((m) => {
        const r = runs.get(t)![m];
        return r.infectedAllowed === 0 && r.cleanDenied === 0 && r.cleanBad === 0;
      }),
    );
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
