/**
 * Benchmark: continuity across a recorder crash. `fan journal run` records a 100,000-file tree
 * in a child process; it is SIGKILLed, 1,000 changes are made while it is down, and it is
 * started again: it must reconcile (crawl, diff against its state index, log the differences)
 * within 2 s, and `since(cursor)` from before the crash must return exactly the changed paths,
 * not a fresh instance.
 *
 *   npm run build && node dist/bench/journal-reconcile.js [--rounds 3] [--changes 1000] [--profile DIR]
 *
 * Reported per round: the reconcile time the recorder logs (`{type:'reconcile', ms, changes}` of
 * `--json`: crawl + load of the state index + diff, before the commit), the wall time from
 * spawning the restarted recorder to its `ready` line (node start-up, opening and checking the
 * database, the watch, reconcile and its commit), and the comparison of `since` with the
 * changes made. `--profile DIR` runs the restarted recorders under `node --cpu-prof`.
 *
 * @module
 */
import { mkdirSync } from 'node:fs';
import { openJournal } from '../src/journal/index.js';
import {
  RecorderProc,
  compare,
  fmt,
  machineNote,
  makeBench,
  makeChanges,
  loadNote,
  median,
  parseFlags,
  profileSummary,
  table,
  verdict,
  type RunMsg,
} from './journal-util.js';

const flags = parseFlags(
  process.argv.slice(2),
  { rounds: 3, changes: 1000, profile: '' },
  'node dist/bench/journal-reconcile.js [--rounds N] [--changes N] [--profile DIR]',
);

interface Round {
  reconcileMs: number;
  reconcileChanges: number;
  reason: string;
  readyMs: number;
  sinceMs: number;
  check: ReturnType<typeof compare>;
  fresh: boolean;
}

const b = await makeBench();
let rec: RecorderProc | undefined;
const nFiles = b.files.length;
const load0 = loadNote();
try {
  process.stderr.write(`tree: ${nFiles} files, ${b.dirs} dirs in ${fmt(b.treeSeconds)} s under ${b.root}\n`);
  let t = performance.now();
  rec = new RecorderProc([b.root], b.stateDir);
  const ready0 = await rec.waitFor('ready', 120_000);
  const first = rec.all.find((m) => m.type === 'reconcile');
  const firstReadyMs = ready0.at - t;
  process.stderr.write(`first start: ready in ${fmt(firstReadyMs)} ms, first index ${fmt(Number(first?.ms))} ms (${String(first?.reason)})\n`);

  const out: Round[] = [];
  for (let i = 0; i < flags.rounds; i++) {
    const reader = await openJournal(b.root, { stateDir: b.stateDir, record: false });
    const cursor = reader.cursor();
    await reader.close();
    rec.kill('SIGKILL');
    await rec.exited;
    const expected = makeChanges(b.root, b.files, flags.changes, `down${i}`);
    if (flags.profile) mkdirSync(flags.profile, { recursive: true });
    t = performance.now();
    rec = new RecorderProc([b.root], b.stateDir, {
      nodeFlags: flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${flags.profile}`] : [],
    });
    const ready = await rec.waitFor('ready', 120_000);
    const readyMs = ready.at - t;
    const r = rec.all.find((m) => m.type === 'reconcile') as RunMsg & { ms: number; changes: number; reason: string };
    const j = await openJournal(b.root, { stateDir: b.stateDir, record: false });
    t = performance.now();
    const res = await j.since(cursor);
    const sinceMs = performance.now() - t;
    await j.close();
    const check = compare(expected, res.changes.map((c) => ({ path: c.path, kind: c.kind })));
    out.push({ reconcileMs: r.ms, reconcileChanges: r.changes, reason: r.reason, readyMs, sinceMs, check, fresh: res.freshInstance });
    process.stderr.write(
      `round ${i + 1}: reconcile (${r.reason}) ${fmt(r.ms)} ms, ${r.changes} changes; ready after ${fmt(readyMs)} ms; ` +
        `since ${fmt(sinceMs)} ms: ${check.count} changes, fresh ${res.freshInstance}, exact ${check.exact}` +
        `${check.sample.length ? ` (${check.sample.join('; ')})` : ''}\n`,
    );
    if (flags.profile) {
      await rec.stop();
      process.stderr.write(`${profileSummary(flags.profile, 20)}\n`);
      rec = new RecorderProc([b.root], b.stateDir);
      await rec.waitFor('ready', 120_000);
    }
  }
  const ok = (r: Round): boolean => r.check.exact && !r.fresh && r.reconcileMs <= 2000;
  process.stdout.write(
    `journal reconcile: ${nFiles} files in ${b.dirs} dirs on loop ext4 ${b.root}, SIGKILL, ${flags.changes} changes while down, restart; ` +
      `state dir on the host disk; ${machineNote()}; at start ${load0}\n\n` +
      table([
        ['round', 'reconcile ms (logged)', 'changes logged', 'restart → ready ms (wall)', 'since(cursor) ms', 'since result', 'target ≤ 2 s, exact'],
        ...out.map((r, i) => [
          String(i + 1),
          fmt(r.reconcileMs),
          String(r.reconcileChanges),
          fmt(r.readyMs),
          fmt(r.sinceMs),
          `${r.check.count} changes, fresh ${r.fresh}, missing ${r.check.missing}, extra ${r.check.extra}, wrong kind ${r.check.wrongKind}`,
          verdict(ok(r)),
        ]),
        [
          'median',
          fmt(median(out.map((r) => r.reconcileMs))),
          '',
          fmt(median(out.map((r) => r.readyMs))),
          fmt(median(out.map((r) => r.sinceMs))),
          out.every((r) => r.check.exact && !r.fresh) ? 'all exact' : 'NOT all exact',
          verdict(out.every(ok)),
        ],
      ]) +
      `\n\nfirst start (first index of the tree): ready after ${fmt(firstReadyMs)} ms, index ${fmt(Number(first?.ms))} ms logged. At the end: ${loadNote()}.\n`,
  );
} finally {
  rec?.kill('SIGKILL');
  await rec?.exited;
  await b.cleanup();
}
