/**
 * Benchmark: "what changed since X" on a 100,000-file tree with 1,000 changes, our journal's
 * `since(cursor)` against @parcel/watcher's `getEventsSince(dir, snapshot)`, side by side in one
 * run on the same tree.
 *
 *   npm run build && node dist/bench/journal-since.js [--reps 5] [--changes 1000] [--settle-ms 500]
 *
 * Two phases, each `--reps` rounds. Phase A: the recorder runs in this process (`openJournal`,
 * recorder 'self'). Phase B: `fan journal run` records in a child process and this process only
 * reads (`openJournal(root, {record: false})`, recorder 'other'), the CLI deployment. A round:
 * take our cursor and a parcel snapshot, make the changes (½ appends to existing files, ¼ new
 * files, ¼ deletions), wait `--settle-ms`, then time `since(cursor)` (sync: the default, which
 * writes a cookie and waits until the recorder logged it), `since(cursor, {sync: false})`, and
 * `getEventsSince`, in alternating order. Both answers are checked against the changes made.
 *
 * @module
 */
import { join } from 'node:path';
import * as parcel from '@parcel/watcher';
import { openJournal, type Journal } from '../src/journal/index.js';
import { RecorderProc, compare, fmt, loadNote, machineNote, makeBench, makeChanges, median, parseFlags, sleep, table, verdict } from './journal-util.js';

const flags = parseFlags(
  process.argv.slice(2),
  { reps: 5, changes: 1000, settleMs: 500, debounceVariant: 1 },
  'node dist/bench/journal-since.js [--reps N] [--changes N] [--settle-ms MS] [--debounce-variant MS (0: skip)]',
);

interface Round {
  oursMs: number;
  oursNoSyncMs: number;
  parcelMs: number;
  snapshotMs: number;
  ours: ReturnType<typeof compare>;
  oursNoSync: ReturnType<typeof compare>;
  parcel: ReturnType<typeof compare>;
  fresh: boolean;
}

async function rounds(label: string, j: Journal, b: Awaited<ReturnType<typeof makeBench>>, n: number, phase: string): Promise<Round[]> {
  const out: Round[] = [];
  for (let i = 0; i < n; i++) {
    const snap = join(b.scratch, `parcel-${phase}-${i}.snapshot`);
    const cursor = j.cursor();
    let t = performance.now();
    await parcel.writeSnapshot(b.root, snap);
    const snapshotMs = performance.now() - t;
    const expected = makeChanges(b.root, b.files, flags.changes, `${phase}${i}`);
    await sleep(flags.settleMs);
    const timeOurs = async (): Promise<[number, number, Awaited<ReturnType<Journal['since']>>, Awaited<ReturnType<Journal['since']>>]> => {
      let t0 = performance.now();
      const r = await j.since(cursor);
      const ms = performance.now() - t0;
      t0 = performance.now();
      const r2 = await j.since(cursor, { sync: false });
      return [ms, performance.now() - t0, r, r2];
    };
    const timeParcel = async (): Promise<[number, parcel.Event[]]> => {
      const t0 = performance.now();
      const ev = await parcel.getEventsSince(b.root, snap);
      return [performance.now() - t0, ev];
    };
    let oursRes: Awaited<ReturnType<typeof timeOurs>>;
    let parcelRes: Awaited<ReturnType<typeof timeParcel>>;
    if (i % 2 === 0) {
      oursRes = await timeOurs();
      parcelRes = await timeParcel();
    } else {
      parcelRes = await timeParcel();
      oursRes = await timeOurs();
    }
    t = performance.now();
    const [oursMs, oursNoSyncMs, r, r2] = oursRes;
    const [parcelMs, ev] = parcelRes;
    const kindOf = { create: 'created', update: 'updated', delete: 'deleted' } as const;
    const round: Round = {
      oursMs,
      oursNoSyncMs,
      parcelMs,
      snapshotMs,
      ours: compare(expected, r.changes.map((c) => ({ path: c.path, kind: c.kind }))),
      oursNoSync: compare(expected, r2.changes.map((c) => ({ path: c.path, kind: c.kind }))),
      parcel: compare(expected, ev.map((e) => ({ path: e.path, kind: kindOf[e.type] }))),
      fresh: r.freshInstance,
    };
    out.push(round);
    process.stderr.write(
      `${label} round ${i + 1}: ours ${fmt(oursMs)} ms (${round.ours.count} changes, exact ${round.ours.exact}), ` +
        `ours sync:false ${fmt(oursNoSyncMs)} ms (${round.oursNoSync.count}), parcel ${fmt(parcelMs)} ms (${round.parcel.count} events, exact ${round.parcel.exact}); ` +
        `parcel writeSnapshot ${fmt(snapshotMs)} ms${round.ours.sample.length ? `; ours: ${round.ours.sample.join('; ')}` : ''}` +
        `${round.parcel.sample.length ? `; parcel: ${round.parcel.sample.join('; ')}` : ''}\n`,
    );
  }
  return out;
}

function report(label: string, rs: Round[]): { row: string[]; ratio: number; ok: boolean } {
  const ours = median(rs.map((r) => r.oursMs));
  const noSync = median(rs.map((r) => r.oursNoSyncMs));
  const par = median(rs.map((r) => r.parcelMs));
  const ratio = par / ours;
  const allExact = rs.every((r) => r.ours.exact && !r.fresh);
  const parcelExact = rs.every((r) => r.parcel.exact);
  const counts = (f: (r: Round) => number): string => rs.map(f).join(', ');
  return {
    ratio,
    ok: ratio >= 50 && allExact,
    row: [
      label,
      `${fmt(ours)} (${rs.map((r) => fmt(r.oursMs, 1)).join(', ')})`,
      `${fmt(noSync)}`,
      `${fmt(par)} (${rs.map((r) => fmt(r.parcelMs, 0)).join(', ')})`,
      `${fmt(ratio, 1)}× (sync:false ${fmt(par / noSync, 0)}×)`,
      `${counts((r) => r.ours.count)}; exact: ${allExact ? 'all' : 'NO'}`,
      `${counts((r) => r.parcel.count)}; exact: ${parcelExact ? 'all' : 'NO'}`,
      verdict(ratio >= 50 && allExact),
    ],
  };
}

const b = await makeBench();
let j: Journal | undefined;
let child: RecorderProc | undefined;
try {
  process.stderr.write(`tree: ${b.files.length} files, ${b.dirs} dirs in ${fmt(b.treeSeconds)} s under ${b.root}\n`);
  const headline =
    `journal since: ${b.files.length} files in ${b.dirs} dirs on loop ext4 ${b.root}, ${flags.changes} changes per round, ` +
    `${flags.reps} rounds per phase, settle ${flags.settleMs} ms; state dir on the host disk (${b.stateDir}); ${machineNote()}; at start ${loadNote()}`;

  // Phase A: recorder in this process.
  let t = performance.now();
  j = await openJournal(b.root, { stateDir: b.stateDir });
  const openMs = performance.now() - t;
  process.stderr.write(`openJournal (recorder ${j.recorder}, first index) ${fmt(openMs)} ms\n`);
  const a = await rounds('A (in-process recorder)', j, b, flags.reps, 'a');
  await j.close();
  j = undefined;

  // Phase A': the same with a shorter batching window (a recorder option): how much of since()
  // is the cookie waiting for the 10 ms window.
  let a2: Round[] = [];
  if (flags.debounceVariant > 0) {
    j = await openJournal(b.root, { stateDir: b.stateDir, debounceMs: flags.debounceVariant });
    a2 = await rounds(`A' (in-process, debounceMs ${flags.debounceVariant})`, j, b, flags.reps, 'c');
    await j.close();
    j = undefined;
  }

  // Phase B: `fan journal run` in a child, this process reads.
  t = performance.now();
  child = new RecorderProc([b.root], b.stateDir);
  await child.waitFor('ready', 120_000);
  const childReadyMs = performance.now() - t;
  j = await openJournal(b.root, { stateDir: b.stateDir, record: false });
  process.stderr.write(`fan journal run ready in ${fmt(childReadyMs)} ms; reader sees recorder '${j.recorder}'\n`);
  const bRounds = await rounds('B (fan journal run child)', j, b, flags.reps, 'b');

  const ra = report('A: recorder in this process (openJournal)', a);
  const rb = report('B: `fan journal run` child, reader openJournal({record:false})', bRounds);
  const snapMed = median([...a, ...a2, ...bRounds].map((r) => r.snapshotMs));
  process.stdout.write(
    `${headline}\n\n` +
      table([
        ['phase', 'ours since() ms, median (rounds)', 'ours sync:false ms', 'parcel getEventsSince ms, median (rounds)', 'parcel / ours', 'ours changes per round', 'parcel events per round', 'target ≥ 50×'],
        ra.row,
        ...(a2.length ? [report(`A': as A with recorder option debounceMs: ${flags.debounceVariant} (default 10)`, a2).row] : []),
        rb.row,
      ]) +
      `\n\nopenJournal with first index of the tree: ${fmt(openMs)} ms; fan journal run ready (restart, reconcile): ${fmt(childReadyMs)} ms; ` +
      `parcel writeSnapshot median ${fmt(snapMed)} ms. At the end: ${loadNote()}.\n`,
  );
} finally {
  try {
    await j?.close();
  } catch {
    /* closing anyway */
  }
  if (child) await child.stop();
  await b.cleanup();
}
