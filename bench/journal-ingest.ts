/**
 * Benchmark: sustained ingest. A C generator (source below, compiled at bench time into a temp
 * dir) churns files under a root recorded by `fan journal run` (a child process) as fast as it
 * can; we measure how fast changes become durable in the journal (the root's `high_seq`, read
 * through a second SQLite connection, i.e. committed), the recorder's CPU, and whether any
 * overflow forced a reconciliation.
 *
 *   npm run build && node dist/bench/journal-ingest.js [--ops 500000] [--pool 50000] [--dirs 100]
 *       [--rates 0,50000] [--profile DIR]
 *
 * The generator works on a pool of `--pool` paths spread over `--dirs` directories, round-robin:
 * op i touches path i % pool; rounds (i / pool) cycle create (open O_CREAT|O_TRUNC, write 8
 * bytes, close), modify (open O_APPEND, write 8 bytes, close), delete (unlink). With 500,000 ops
 * and a pool of 50,000: 200,000 creates, 150,000 modifies, 150,000 deletes; the same path is
 * touched again only `pool` ops later, so the watch's coalescing window (10 ms) never merges two
 * ops and each op should become exactly one logged change. `--rates` lists generator paces in
 * ops/s to run one after the other (0: as fast as it can), each on a fresh root with a fresh
 * recorder. After the generator exits, a sentinel file is created; the recorder has caught up
 * when the sentinel's change is in the database. Pace `-1` ("drain") stops the recorder
 * (SIGSTOP) while the generator runs as fast as it can, so every event waits in the recorder's
 * unlimited kernel queue, then resumes it (SIGCONT): the recorder's own ingest rate, with the
 * whole machine, measured from the resume until it has caught up.
 *
 * @module
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DbProbe,
  RecorderProc,
  compare,
  type Kind,
  cpuSeconds,
  fmt,
  machineNote,
  makeBench,
  memMiB,
  loadNote,
  parseFlags,
  profileSummary,
  sleep,
  table,
  verdict,
} from './journal-util.js';
import { JournalStore, type NewChange, type StateUpdate } from '../src/journal/store.js';
import { openJournal } from '../src/journal/index.js';

const CHURN_C = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what, const char *path) {
  fprintf(stderr, "journal-churn: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

/* journal-churn DIR POOL DIRS OPS RATE: prints "ops creates modifies deletes seconds user sys" */
int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: journal-churn DIR POOL DIRS OPS RATE\n");
    return 2;
  }
  const char *root = argv[1];
  long pool = atol(argv[2]), dirs = atol(argv[3]), ops = atol(argv[4]);
  double rate = atof(argv[5]);
  if (pool < 1 || dirs < 1 || ops < 0) return 2;
  char path[4096];
  for (long d = 0; d < dirs; d++) {
    snprintf(path, sizeof path, "%s/d%ld", root, d);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die("mkdir", path);
  }
  static const char payload[] = "churn!\n";
  long counts[3] = {0, 0, 0};
  double t0 = now();
  for (long i = 0; i < ops; i++) {
    if (rate > 0 && i % 500 == 0) {
      double due = t0 + (double)i / rate, t = now();
      if (due > t) {
        struct timespec ts = {(time_t)(due - t), (long)(((due - t) - (double)(time_t)(due - t)) * 1e9)};
        nanosleep(&ts, NULL);
      }
    }
    long j = i % pool, round = i / pool;
    snprintf(path, sizeof path, "%s/d%ld/f%ld", root, j % dirs, j);
    int fd;
    switch (round % 3) {
      case 0:
        fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) die("open", path);
        if (write(fd, payload, sizeof payload - 1) < 0) die("write", path);
        if (close(fd) != 0) die("close", path);
        break;
      case 1:
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0) die("open", path);
        if (write(fd, payload, sizeof payload - 1) < 0) die("write", path);
        if (close(fd) != 0) die("close", path);
        break;
      default:
        if (unlink(path) != 0) die("unlink", path);
    }
    counts[round % 3]++;
  }
  double secs = now() - t0;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%ld %ld %ld %ld %.6f %.6f %.6f\n", ops, counts[0], counts[1], counts[2], secs,
         (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6, (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  return 0;
}
`;

const flags = parseFlags(
  process.argv.slice(2),
  { ops: 500_000, pool: 50_000, dirs: 100, rates: '0,50000,-1', profile: '', noStore: false },
  'node dist/bench/journal-ingest.js [--ops N] [--pool N] [--dirs N] [--rates R1,R2] [--profile DIR] [--no-store]',
);
const rates = flags.rates.split(',').map(Number);

interface Result {
  rate: number;
  genOps: number;
  genSeconds: number;
  genCpu: number;
  /** Logged changes (high seq growth) from generator start until the sentinel, sentinel excluded. */
  logged: number;
  kinds: Record<string, number>;
  /** From generator start until the sentinel was durable. */
  caughtSeconds: number;
  /** Logged while the generator ran. */
  loggedDuringGen: number;
  peak1s: number;
  /** Paced runs: the largest gap between ops issued (rate × t) and changes logged. */
  maxBacklog: number;
  /** Drain runs: from the recorder's resume until it caught up. */
  drainSeconds: number;
  cpuUser: number;
  cpuSys: number;
  hwmMiB: number;
  reconciles: { reason: string; ms: number; changes: number }[];
  errors: string[];
  /** since(cursor from before the generator) against the tree at the end. */
  final: ReturnType<typeof compare>;
  finalFresh: boolean;
  profile?: string;
}

async function runOnce(b: Awaited<ReturnType<typeof makeBench>>, gen: string, rate: number, k: number): Promise<Result> {
  const root = join(b.fs.dir, `churn${k}`);
  mkdirSync(root);
  for (let d = 0; d < flags.dirs; d++) mkdirSync(join(root, `d${d}`));
  const drain = rate < 0;
  const profDir = flags.profile ? join(flags.profile, `rate-${rate}`) : '';
  if (profDir) {
    rmSync(profDir, { recursive: true, force: true });
    mkdirSync(profDir, { recursive: true });
  }
  const rec = new RecorderProc([root], b.stateDir, { nodeFlags: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [] });
  let probe: DbProbe | undefined;
  try {
    await rec.waitFor('ready', 120_000);
    const startMsgs = rec.all.length;
    probe = new DbProbe(b.stateDir);
    const high0 = probe.high(root);
    const reader = await openJournal(root, { stateDir: b.stateDir, record: false });
    const cursor0 = reader.cursor();
    const cpu0 = cpuSeconds(rec.pid);
    const samples: { t: number; high: number }[] = [];
    if (drain) process.kill(rec.pid, 'SIGSTOP');
    const t0 = performance.now();
    const proc = spawn(gen, [root, String(flags.pool), String(flags.dirs), String(flags.ops), String(drain ? 0 : rate)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    proc.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    proc.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    let genDone = false;
    let genEnd = 0;
    const exited = new Promise<number | null>((resolve) => proc.once('close', (c) => {
      genDone = true;
      genEnd = performance.now();
      resolve(c);
    }));
    let highAtGenEnd = -1;
    while (!genDone) {
      samples.push({ t: performance.now() - t0, high: probe.high(root) });
      await sleep(100);
    }
    const code = await exited;
    if (code !== 0) throw new Error(`churn generator failed (${String(code)}): ${err}`);
    highAtGenEnd = probe.high(root);
    samples.push({ t: genEnd - t0, high: highAtGenEnd });
    const nums = out.trim().split(/\s+/).map(Number);
    writeFileSync(join(root, 'end-sentinel'), 'end\n');
    const resumed = performance.now();
    if (drain) process.kill(rec.pid, 'SIGCONT');
    const deadline = performance.now() + 600_000;
    let sentinelSeq: number | undefined;
    while ((sentinelSeq = probe.find(root, high0, 'end-sentinel')) === undefined) {
      if (performance.now() > deadline) throw new Error('recorder did not catch up within 600 s');
      if (!rec.alive) throw new Error(`recorder died: ${rec.text.slice(-2000)}`);
      samples.push({ t: performance.now() - t0, high: probe.high(root) });
      await sleep(20);
    }
    const caught = performance.now();
    const cpu1 = cpuSeconds(rec.pid);
    const mem = memMiB(rec.pid);
    const high1 = probe.high(root);
    samples.push({ t: caught - t0, high: high1 });
    // The highest growth over any 1 s window of the samples.
    let peak = 0;
    for (let i = 0, j = 0; i < samples.length; i++) {
      while (j < samples.length && samples[j]!.t - samples[i]!.t < 1000) j++;
      if (j >= samples.length) break;
      const dt = (samples[j]!.t - samples[i]!.t) / 1000;
      peak = Math.max(peak, (samples[j]!.high - samples[i]!.high) / dt);
    }
    let maxBacklog = 0;
    if (rate > 0) {
      for (const x of samples) {
        const issued = Math.min(flags.ops, (rate * Math.min(x.t, genEnd - t0)) / 1000);
        maxBacklog = Math.max(maxBacklog, issued - (x.high - high0));
      }
    }
    const kinds = probe.kinds(root, high0);
    // No silent gap: what since() says changed must be the tree as it is now (every file created).
    const sinceAll = await reader.since(cursor0);
    await reader.close();
    const want = new Map<string, Kind>([[join(root, 'end-sentinel'), 'created']]);
    for (const d of readdirSync(root)) {
      if (d === 'end-sentinel') continue;
      for (const f of readdirSync(join(root, d))) want.set(join(root, d, f), 'created');
    }
    const final = compare(want, sinceAll.changes.map((c) => ({ path: c.path, kind: c.kind })));
    const after = rec.all.slice(startMsgs);
    const res: Result = {
      rate,
      genOps: nums[0] ?? NaN,
      genSeconds: nums[4] ?? NaN,
      genCpu: (nums[5] ?? NaN) + (nums[6] ?? NaN),
      logged: sentinelSeq - high0 - 1,
      kinds,
      caughtSeconds: (caught - t0) / 1000,
      loggedDuringGen: highAtGenEnd - high0,
      peak1s: peak,
      maxBacklog,
      drainSeconds: (caught - resumed) / 1000,
      cpuUser: cpu1.user - cpu0.user,
      cpuSys: cpu1.sys - cpu0.sys,
      hwmMiB: mem.hwm,
      reconciles: after.filter((m) => m.type === 'reconcile').map((m) => ({ reason: String(m.reason), ms: Number(m.ms), changes: Number(m.changes) })),
      errors: after.filter((m) => m.type === 'error').map((m) => String(m.message)),
      final,
      finalFresh: sinceAll.freshInstance,
    };
    probe.close();
    probe = undefined;
    await rec.stop();
    if (profDir) res.profile = profileSummary(profDir, 25);
    return res;
  } finally {
    probe?.close();
    rec.kill('SIGKILL');
    await rec.exited;
  }
}

/**
 * Diagnostic: `JournalStore.commit` alone (no events, no lstat, no path resolution), synthetic
 * changes of a churn like the generator's, in batches of `batch` changes, each with its state
 * update as the recorder writes them. The ceiling of the store as the recorder uses it.
 */
function storeOnly(batch: number, total: number, withState: boolean): { perSec: number; cpuUs: number } {
  const dir = mkdtempSync(join(tmpdir(), 'fan-journal-store-'));
  try {
    const store = JournalStore.open({ stateDir: dir });
    const root = store.ensureRoot('/bench/root');
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < total; i += batch) {
      const changes: NewChange[] = [];
      const state: StateUpdate[] = [];
      for (let k = i; k < Math.min(total, i + batch); k++) {
        const j = k % flags.pool;
        const round = Math.floor(k / flags.pool) % 3;
        const path = `d${j % flags.dirs}/f${j}`;
        const kind = round === 0 ? 'create' : round === 1 ? 'update' : 'delete';
        changes.push({ time: Date.now(), kind, path, isDir: false });
        if (!withState) continue;
        if (kind === 'delete') state.push({ op: 'delete', path });
        else state.push({ op: 'set', path, state: { isDir: false, ino: 1000 + j, size: 8 * (round + 1), mtimeMs: Date.now(), ctimeMs: Date.now() } });
      }
      store.commit(root.id, changes, state);
    }
    const ms = performance.now() - t0;
    const c = process.cpuUsage(c0);
    store.close();
    return { perSec: total / (ms / 1000), cpuUs: (c.user + c.system) / total };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const load0 = loadNote();
const b = await makeBench({ tree: false });
try {
  const gen = join(b.scratch, 'journal-churn');
  writeFileSync(`${gen}.c`, CHURN_C);
  execFileSync('cc', ['-O2', '-Wall', '-o', gen, `${gen}.c`], { stdio: 'inherit' });
  // Baseline: the generator with no recorder, on its own root.
  const base = join(b.fs.dir, 'baseline');
  mkdirSync(base);
  const baseOut = execFileSync(gen, [base, String(flags.pool), String(flags.dirs), String(flags.ops), '0'], { encoding: 'utf8' });
  const baseNums = baseOut.trim().split(/\s+/).map(Number);
  process.stderr.write(`baseline (no recorder): ${flags.ops} ops in ${fmt(baseNums[4] ?? NaN)} s = ${fmt(flags.ops / (baseNums[4] ?? NaN), 0)} ops/s\n`);
  const results: Result[] = [];
  for (const [k, rate] of rates.entries()) {
    const r = await runOnce(b, gen, rate, k);
    results.push(r);
    process.stderr.write(
      `rate ${rate || 'max'}: gen ${fmt(r.genOps / r.genSeconds, 0)} ops/s for ${fmt(r.genSeconds)} s; logged ${r.logged} ` +
        `(${JSON.stringify(r.kinds)}) caught up at ${fmt(r.caughtSeconds)} s = ${fmt(r.logged / r.caughtSeconds, 0)}/s; ` +
        `during gen ${fmt(r.loggedDuringGen / r.genSeconds, 0)}/s; drain ${fmt(r.drainSeconds)} s; peak 1 s ${fmt(r.peak1s, 0)}/s; cpu ${fmt(r.cpuUser)}+${fmt(r.cpuSys)} s; ` +
        `reconciles ${JSON.stringify(r.reconciles)}; errors ${r.errors.length}; final since exact ${r.final.exact} (${r.final.sample.join('; ')})\n`,
    );
    if (r.profile) process.stderr.write(`${r.profile}\n`);
  }
  const rows = [
    [
      'generator pace',
      'generator ops/s (wall s)',
      'changes durably logged (of ops)',
      'logged/s, gen start → caught up (drain: resume → caught up)',
      'logged/s while gen ran',
      'peak 1 s logged/s',
      'caught up after gen exit (s)',
      'max backlog (paced)',
      'recorder CPU user+sys s (µs/change)',
      'recorder peak RSS MiB',
      'overflow → reconcile',
      'since(cursor before) = final tree',
      'target ≥ 50,000/s',
    ],
    ...results.map((r) => {
      const overall = r.rate < 0 ? r.logged / r.drainSeconds : r.logged / r.caughtSeconds;
      const overflows = r.reconciles.filter((x) => x.reason === 'overflow');
      // A drain logs fewer changes than ops: the kernel merged the queued events of each path.
      const clean = r.reconciles.length === 0 && (r.rate < 0 || r.logged >= r.genOps) && r.final.exact && !r.finalFresh;
      // Unpaced: the durable rate itself. Paced at the target: keeping up with the pace (logging
      // as fast as the generator issues, caught up at most 0.5 s after it) is the target.
      const ok =
        r.rate === 0
          ? overall >= 50_000 && clean
          : r.rate >= 50_000 && r.genOps / r.genSeconds >= 0.98 * r.rate && r.loggedDuringGen / r.genSeconds >= 0.98 * r.rate &&
            r.caughtSeconds - r.genSeconds <= 0.5 && clean;
      return [
        r.rate < 0 ? 'drain: recorder stopped while the generator ran' : r.rate ? `${fmt(r.rate, 0)} ops/s` : 'as fast as it can',
        `${fmt(r.genOps / r.genSeconds, 0)} (${fmt(r.genSeconds)})`,
        `${r.logged} (${fmt((100 * r.logged) / r.genOps, 1)}%): ${Object.entries(r.kinds).map(([k, n]) => `${k} ${k === 'create' ? n - 1 : n}`).join(', ')}`,
        fmt(overall, 0),
        fmt(r.loggedDuringGen / r.genSeconds, 0),
        fmt(r.peak1s, 0),
        fmt(r.caughtSeconds - r.genSeconds),
        r.rate > 0 ? fmt(r.maxBacklog, 0) : '',
        `${fmt(r.cpuUser)} + ${fmt(r.cpuSys)} (${fmt((1e6 * (r.cpuUser + r.cpuSys)) / Math.max(1, r.logged), 1)})`,
        fmt(r.hwmMiB, 0),
        r.reconciles.length === 0
          ? 'none'
          : `${overflows.length} overflow, ${r.reconciles.length - overflows.length} other: ${r.reconciles.map((x) => `${x.reason} ${fmt(x.ms, 0)} ms/${x.changes}`).join('; ')}`,
        `${r.final.exact && !r.finalFresh ? 'exact' : 'NOT exact'} (${r.final.count} changes; missing ${r.final.missing}, extra ${r.final.extra}, wrong kind ${r.final.wrongKind}${r.finalFresh ? ', FRESH' : ''})`,
        r.rate < 0
          ? `diagnostic (the recorder alone: ${clean ? 'exact' : 'NOT exact'})`
          : r.rate > 0 && r.rate < 50_000
            ? `diagnostic (paced below target): ${clean ? 'keeps up' : 'does not keep up'}`
            : verdict(ok),
      ];
    }),
  ];
  process.stdout.write(
    `journal ingest: ${flags.ops} ops (create/modify/delete churn over ${flags.pool} paths in ${flags.dirs} dirs) on loop ext4; ` +
      `recorder \`fan journal run\` in a child, state dir on the host disk; generator alone: ${fmt(flags.ops / (baseNums[4] ?? NaN), 0)} ops/s; ${machineNote()}; at start ${load0}, at the end ${loadNote()}\n\n` +
      `${table(rows)}\n`,
  );
  for (const r of results) if (r.errors.length) process.stdout.write(`errors at pace ${r.rate}: ${r.errors.slice(0, 5).join('; ')}\n`);
  if (!flags.noStore) {
    const rows2: string[][] = [['changes per commit', 'commit() changes/s, with state index', 'CPU µs/change', 'changes/s, log only (no state updates)', 'CPU µs/change']];
    for (const n of [100, 500, 2000, 10000]) {
      const a = storeOnly(n, 200_000, true);
      const z = storeOnly(n, 200_000, false);
      rows2.push([String(n), fmt(a.perSec, 0), fmt(a.cpuUs, 1), fmt(z.perSec, 0), fmt(z.cpuUs, 1)]);
    }
    process.stdout.write(
      `\nDiagnostic: JournalStore.commit alone, 200,000 synthetic churn changes, synchronous=FULL WAL on the host disk (this process):\n\n${table(rows2)}\n`,
    );
  }
} finally {
  await b.cleanup();
}
