/**
 * The journal on real loop filesystems: continuity across clean restarts, SIGKILLs and kernel
 * queue overflows; sync with a recorder in another process; fresh instances with their reasons;
 * corrupt and truncated databases; the state directory inside the root; and property tests
 * comparing `since` with a model of random file operations (paced: the recorder sees each
 * operation before the next; bursts: faster than its batching window), plus a pure property test
 * of the coalescing of the log.
 *
 * Property tests print their base seed. FAN_JOURNAL_SEED=n fixes it, FAN_JOURNAL_SEQUENCES=n sets
 * the number of sequences, FAN_JOURNAL_SEQUENCE_SEED=n reruns one failing sequence (its seed is in
 * the failure), FAN_COALESCE_SEQUENCES=n sets the number of pure coalescing sequences.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { openJournal, coalesceLog, JournalStore, Recorder, formatCursor, parseCursor, rootTag, type Journal, type JournalChange, type LogEntry, type SinceResult } from '../src/journal/index.js';
import { FanotifyError } from '../src/errors.js';
import { dirname } from 'node:path';
import { useLoopFs, requireRoot, createLoopFs, mountEntry } from './helpers/loopfs.js';
import { withMaxQueuedEvents } from './helpers/proc.js';
import {
  RecorderChild,
  changeSet,
  describeChange,
  fanOk,
  journalStatus,
  prng,
  removeStateDirs,
  runFan,
  sleep,
  tempStateDir,
  waitUntil,
} from './helpers/journal.js';

requireRoot();
after(removeStateDirs);

/** A cursor at "now": `since` syncs with the recorder first, so it covers every change made before. */
async function syncedCursor(j: Journal): Promise<string> {
  return (await j.since(undefined, { emptyOnFreshInstance: true })).cursor;
}

/** Every entry below `root` (relative, '/' marking directories), sorted. */
function treeOf(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, prefix: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const rel = prefix + e.name;
      if (e.isDirectory()) {
        out.push(`${rel}/`);
        walk(`${dir}/${e.name}`, `${rel}/`);
      } else {
        out.push(rel);
      }
    }
  };
  walk(root, '');
  return out.sort();
}

/** Create files (content = their name) and directories (ending in '/') below root. */
function populate(root: string, entries: readonly string[]): void {
  for (const e of entries) {
    if (e.endsWith('/')) fs.mkdirSync(`${root}/${e}`, { recursive: true });
    else fs.writeFileSync(`${root}/${e}`, e);
  }
}

describe('journal on ext4', { timeout: 600_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 512 });
  const mkRoot = (name: string): string => {
    const root = `${loop.fs.dir}/${name}`;
    fs.mkdirSync(root);
    return root;
  };

  test('since across a clean restart returns exactly what changed, live and during the downtime', { timeout: 60_000 }, async () => {
    const root = mkRoot('clean-restart');
    populate(root, ['keep.txt', 'mod.txt', 'del.txt', 'dir/', 'dir/inner.txt', 'ren.txt', 'untouched/', 'untouched/u.txt']);
    const stateDir = tempStateDir();
    let j = await openJournal(root, { stateDir });
    try {
      assert.equal(j.recorder, 'self');
      const c0 = await syncedCursor(j);
      fs.writeFileSync(`${root}/live.txt`, 'live');
      fs.appendFileSync(`${root}/mod.txt`, '+live');
      const mid = await j.since(c0);
      assert.equal(mid.freshInstance, false);
      assert.deepEqual(changeSet(mid.changes, root), ['created live.txt', 'updated mod.txt']);
      await j.close();

      // Downtime: nothing records.
      fs.writeFileSync(`${root}/down.txt`, 'down');
      fs.appendFileSync(`${root}/keep.txt`, '+down');
      fs.unlinkSync(`${root}/del.txt`);
      fs.rmSync(`${root}/dir`, { recursive: true });
      fs.mkdirSync(`${root}/newdir`);
      fs.writeFileSync(`${root}/newdir/x.txt`, 'x');
      fs.renameSync(`${root}/ren.txt`, `${root}/ren2.txt`);
      fs.unlinkSync(`${root}/live.txt`);

      j = await openJournal(root, { stateDir });
      const r = await j.since(c0);
      assert.equal(r.freshInstance, false, `reason ${r.reason}`);
      assert.equal(r.reason, undefined);
      assert.deepEqual(changeSet(r.changes, root), [
        'created down.txt',
        'created newdir/',
        'created newdir/x.txt',
        'created ren2.txt', // a rename while nobody watched is a delete and a create
        'deleted del.txt',
        'deleted dir/',
        'deleted dir/inner.txt',
        'deleted ren.txt',
        'updated keep.txt',
        'updated mod.txt',
      ]);
      // From the cursor taken while recording: only what followed it.
      const fromMid = await j.since(mid.cursor);
      assert.equal(fromMid.freshInstance, false);
      assert.deepEqual(changeSet(fromMid.changes, root), [
        'created down.txt',
        'created newdir/',
        'created newdir/x.txt',
        'created ren2.txt',
        'deleted del.txt',
        'deleted dir/',
        'deleted dir/inner.txt',
        'deleted live.txt',
        'deleted ren.txt',
        'updated keep.txt',
      ]);
      const again = await j.since(r.cursor);
      assert.deepEqual(again, { cursor: r.cursor, freshInstance: false, changes: [] });
      // A restart without changes adds nothing.
      await j.close();
      j = await openJournal(root, { stateDir });
      assert.deepEqual((await j.since(r.cursor)).changes, []);
    } finally {
      await j.close();
    }
  });

  test('since across a SIGKILL of the recorder: recorded, in-flight and downtime changes, not fresh', { timeout: 90_000 }, async () => {
    const root = mkRoot('sigkill');
    populate(root, ['keep/', 'keep/k1', 'keep/k2', 'mod.txt', 'del.txt', 'dir/', 'dir/inner.txt', 'ren-src.txt']);
    const stateDir = tempStateDir();
    let rec: RecorderChild | undefined = await RecorderChild.start(stateDir, [root]);
    let j: Journal | undefined;
    try {
      const c0 = (await fanOk(['journal', 'cursor', '--state-dir', stateDir, root])).trim();
      assert.ok(parseCursor(c0), c0);
      // Recorded while the child runs.
      fs.writeFileSync(`${root}/new1.txt`, 'new1');
      fs.appendFileSync(`${root}/mod.txt`, '+1');
      fs.unlinkSync(`${root}/del.txt`);
      fs.mkdirSync(`${root}/newdir`);
      fs.writeFileSync(`${root}/newdir/a.txt`, 'a');
      fs.renameSync(`${root}/ren-src.txt`, `${root}/ren-dst.txt`);
      const recorded = [
        'created new1.txt',
        'created newdir/',
        'created newdir/a.txt',
        'deleted del.txt',
        'renamed ren-src.txt -> ren-dst.txt',
        'updated mod.txt',
      ];
      let seen: string[] = [];
      await waitUntil(async () => {
        const out = await fanOk(['journal', 'since', '--json', '--state-dir', stateDir, root, c0]);
        const r = JSON.parse(out) as { freshInstance: boolean; changes: JournalChange[] };
        assert.equal(r.freshInstance, false);
        seen = changeSet(r.changes, root);
        return seen.join('\n') === recorded.join('\n');
      }, 'the recorder to log the first changes').catch((err: Error) => {
        throw new Error(`${err.message}; last seen ${JSON.stringify(seen)}`);
      });
      // In flight when the recorder dies: logged or not, it must come back.
      fs.writeFileSync(`${root}/inflight.txt`, 'inflight');
      const killedAt = Date.now();
      const exit = await rec.kill('SIGKILL');
      rec = undefined;
      assert.equal(exit.signal, 'SIGKILL');

      const statusAfterKill = await journalStatus(stateDir);
      assert.equal(statusAfterKill.roots.length, 1);
      assert.equal(statusAfterKill.roots[0]!.root, root);
      assert.equal(statusAfterKill.roots[0]!.lastStopClean, false);
      assert.equal(statusAfterKill.roots[0]!.recorderPid, null);

      // Downtime.
      fs.writeFileSync(`${root}/down.txt`, 'down');
      fs.appendFileSync(`${root}/keep/k1`, '+down');
      fs.rmSync(`${root}/dir`, { recursive: true });
      fs.unlinkSync(`${root}/new1.txt`);
      fs.appendFileSync(`${root}/newdir/a.txt`, '+down');

      j = await openJournal(root, { stateDir });
      assert.equal(j.recorder, 'self');
      const r = await j.since(c0);
      assert.equal(r.freshInstance, false, `reason ${r.reason}`);
      assert.deepEqual(changeSet(r.changes, root), [
        'created down.txt',
        'created inflight.txt',
        'created newdir/',
        'created newdir/a.txt',
        'deleted del.txt',
        'deleted dir/',
        'deleted dir/inner.txt',
        'renamed ren-src.txt -> ren-dst.txt',
        'updated keep/k1',
        'updated mod.txt',
      ]);

      const status = await journalStatus(stateDir);
      const row = status.roots[0]!;
      assert.equal(row.recorderPid, process.pid);
      assert.ok(row.lastReconcile, 'a reconciliation ran');
      assert.ok(Date.parse(row.lastReconcile.at) >= killedAt - 5, `reconciled at ${row.lastReconcile.at}, killed at ${new Date(killedAt).toISOString()}`);
      // down.txt, keep/k1, dir, dir/inner.txt, new1.txt, newdir/a.txt; and inflight.txt unless it was logged.
      assert.ok(row.lastReconcile.changes === 6 || row.lastReconcile.changes === 7, `reconcile logged ${row.lastReconcile.changes} changes`);
      await j.close();
      j = undefined;
      const stopped = await journalStatus(stateDir);
      assert.equal(stopped.roots[0]!.lastStopClean, true);
    } finally {
      await rec?.kill('SIGKILL');
      await j?.close();
    }
  });

  test('a live recorder in another process: since includes every change made before the call, even under load', { timeout: 90_000 }, async () => {
    const root = mkRoot('sync-other');
    fs.mkdirSync(`${root}/churn`);
    const stateDir = tempStateDir();
    const rec = await RecorderChild.start(stateDir, [root]);
    // Another process keeps writing files, so batches are busy when the cookie arrives.
    const churn = spawn(
      process.execPath,
      ['-e', "const fs=require('fs');const end=Date.now()+30000;let i=0;while(Date.now()<end){fs.writeFileSync(process.argv[1]+'/c'+(i++%400),'x');}", `${root}/churn`],
      { stdio: 'ignore' },
    );
    let j: Journal | undefined;
    try {
      j = await openJournal(root, { stateDir, record: false });
      assert.equal(j.recorder, 'other');
      let cursor = await syncedCursor(j);
      await sleep(100);
      const missed: number[] = [];
      for (let i = 0; i < 60; i++) {
        fs.writeFileSync(`${root}/m${i}`, 'm');
        const r: SinceResult = await j.since(cursor);
        assert.equal(r.freshInstance, false);
        if (!r.changes.some((c) => c.path === `${root}/m${i}` && c.kind === 'created')) missed.push(i);
        cursor = r.cursor;
      }
      assert.deepEqual(missed, [], 'since answered before the changes made ahead of it were durable');
    } finally {
      churn.kill('SIGKILL');
      await j?.close();
      await rec.kill('SIGINT');
    }
  });

  test('forced overflow: a burst beyond the kernel queue is reconciled, never a silent gap', { timeout: 90_000 }, async () => {
    // The limit is read when the fanotify group is made, and the watch service has one group per
    // filesystem per process: a fresh filesystem gets a fresh group.
    const own = await createLoopFs({ fstype: 'ext4' });
    let j: Journal | undefined;
    try {
      const root = `${own.dir}/overflow`;
      fs.mkdirSync(root);
      populate(root, ['old.txt']);
      const stateDir = tempStateDir();
      j = await withMaxQueuedEvents(16, () => openJournal(root, { stateDir, unlimitedQueue: false }));
      const c0 = await syncedCursor(j);
      const burstAt = Date.now();
      for (let i = 0; i < 300; i++) fs.writeFileSync(`${root}/f${String(i).padStart(3, '0')}`, 'x');
      const t0 = performance.now();
      const r = await j.since(c0);
      const ms = performance.now() - t0;
      assert.equal(r.freshInstance, false);
      const expected = Array.from({ length: 300 }, (_, i) => `created f${String(i).padStart(3, '0')}`);
      assert.deepEqual(changeSet(r.changes, root), expected);
      const store = JournalStore.open({ stateDir, readonly: true });
      try {
        const row = store.root(root)!;
        assert.ok(row.lastReconcileAt !== null && row.lastReconcileAt >= burstAt, 'the overflow was reconciled');
        assert.ok((row.lastReconcileChanges ?? 0) >= 300 - 16, `reconcile logged ${row.lastReconcileChanges} changes`);
      } finally {
        store.close();
      }
      // The reconciliation saw the sync cookie: since need not wait out its 2 s sync timeout.
      assert.ok(ms < 1500, `since took ${ms.toFixed(0)} ms after the overflow`);
      // And the journal keeps recording afterwards.
      fs.writeFileSync(`${root}/after.txt`, 'after');
      assert.deepEqual(changeSet((await j.since(r.cursor)).changes, root), ['created after.txt']);
    } finally {
      await j?.close();
      await own.cleanup();
    }
  });

  test('fresh instances say why: other instance, other root, malformed, pruned, ahead', { timeout: 60_000 }, async () => {
    const root = mkRoot('fresh');
    const other = mkRoot('fresh-other');
    populate(root, ['b.txt', 'a/', 'a/z.txt', 'a-c.txt', 'a/y/', 'a/y/deep.txt']);
    const stateDir = tempStateDir();
    const stateDir2 = tempStateDir();
    // Every entry, in path order, with isDir.
    const everything: [string, boolean][] = [
      [`${root}/a`, true],
      [`${root}/a-c.txt`, false],
      [`${root}/a/y`, true],
      [`${root}/a/y/deep.txt`, false],
      [`${root}/a/z.txt`, false],
      [`${root}/b.txt`, false],
    ];
    const j = await openJournal(root, { stateDir });
    const j2 = await openJournal(root, { stateDir: stateDir2 });
    const jo = await openJournal(other, { stateDir });
    try {
      const good = await syncedCursor(j);
      const fromOtherInstance = await syncedCursor(j2);
      const fromOtherRoot = await syncedCursor(jo);
      assert.notEqual(parseCursor(fromOtherInstance)!.instance, parseCursor(good)!.instance);
      assert.equal(parseCursor(fromOtherRoot)!.instance, parseCursor(good)!.instance);

      const check = async (cursor: string | undefined, reason: string): Promise<void> => {
        const r = await j.since(cursor);
        assert.equal(r.freshInstance, true, `${cursor}: not fresh`);
        assert.equal(r.reason, reason, `${cursor}`);
        assert.ok(r.changes.every((c) => c.kind === 'created'), `${cursor}: ${r.changes.map((c) => describeChange(c, root))}`);
        assert.deepEqual(r.changes.map((c) => [c.path, c.isDir]), everything, `${cursor}: every entry, sorted`);
        const empty = await j.since(cursor, { emptyOnFreshInstance: true });
        assert.deepEqual({ ...empty, cursor: '' }, { cursor: '', freshInstance: true, reason, changes: [] });
        // The fresh result's cursor continues normally.
        assert.deepEqual((await j.since(r.cursor)).changes, []);
      };
      await check(fromOtherInstance, 'other-instance');
      await check(fromOtherRoot, 'other-root');
      for (const bad of ['garbage', '', 'fj1:', `${good}x`, good.replace(/^fj1/, 'fj2'), good.replace(/:\d+$/, ':99999999999999999'), good.replace(/:\d+$/, ':-1')]) {
        await check(bad, 'malformed');
      }
      await check(undefined, 'no-cursor');
      const parts = parseCursor(good)!;
      await check(formatCursor({ ...parts, seq: parts.seq + 1000 }), 'unknown-position');
      assert.equal((await j.since(good)).freshInstance, false);
    } finally {
      await j.close();
      await j2.close();
      await jo.close();
    }

    // Pruned: keep only the newest change.
    const rec = await Recorder.start([root], { stateDir });
    let row = rec.store.root(root)!;
    const before = formatCursor({ instance: rec.store.instance, rootTag: rootTag(root), seq: row.highSeq });
    // mkdir: one event, one logged change each.
    const logged = (name: string): boolean => rec.store.changesAfter(row.id, row.highSeq).some((c) => c.path === name);
    fs.mkdirSync(`${root}/p1`);
    await waitUntil(() => logged('p1'), 'p1 to be logged');
    fs.mkdirSync(`${root}/p2`);
    await waitUntil(() => logged('p2'), 'p2 to be logged');
    rec.pruneNow({ maxChanges: 1 });
    row = rec.store.root(root)!;
    assert.equal(row.lowSeq, row.highSeq, 'one change is kept');
    await rec.close();
    const jp = await openJournal(root, { stateDir });
    try {
      const cur = (seq: number): string => formatCursor({ instance: parseCursor(before)!.instance, rootTag: rootTag(root), seq });
      const pruned = await jp.since(before);
      assert.equal(pruned.freshInstance, true);
      assert.equal(pruned.reason, 'pruned');
      assert.deepEqual(changeSet(pruned.changes, root), treeOf(root).map((p) => `created ${p}`));
      assert.ok(treeOf(root).includes('p2/'));
      assert.equal((await jp.since(cur(row.lowSeq - 2), { emptyOnFreshInstance: true })).reason, 'pruned');
      // A cursor right before the low-water mark is still answerable.
      const edge = await jp.since(cur(row.lowSeq - 1));
      assert.equal(edge.freshInstance, false);
      assert.deepEqual(changeSet(edge.changes, root), ['created p2/']);
      const status = await journalStatus(stateDir);
      assert.equal(status.roots.find((s) => s.root === root)!.oldestCursor, cur(row.lowSeq - 1));
    } finally {
      await jp.close();
    }
  });

  describe('a corrupt or truncated journal.db', () => {
    const damage: [string, (file: string) => void][] = [
      ['garbage over the whole file', (f) => fs.writeFileSync(f, Buffer.alloc(fs.statSync(f).size, 0x5a))],
      ['garbage over the header', (f) => {
        const fd = fs.openSync(f, 'r+');
        fs.writeSync(fd, Buffer.alloc(100, 0x41), 0, 100, 0);
        fs.closeSync(fd);
      }],
      ['garbage over a page in the middle', (f) => {
        const fd = fs.openSync(f, 'r+');
        const pages = Math.floor(fs.statSync(f).size / 4096);
        fs.writeSync(fd, Buffer.alloc(4096, 0x41), 0, 4096, Math.floor(pages / 2) * 4096);
        fs.closeSync(fd);
      }],
      ['truncated to 0 bytes', (f) => fs.truncateSync(f, 0)],
      ['truncated to 50 bytes', (f) => fs.truncateSync(f, 50)],
      ['truncated to its first page', (f) => fs.truncateSync(f, 4096)],
      ['truncated to half', (f) => fs.truncateSync(f, Math.floor(fs.statSync(f).size / 8192) * 4096)],
    ];
    let n = 0;
    for (const [name, hurt] of damage) {
      test(name, { timeout: 60_000 }, async () => {
        const root = mkRoot(`corrupt-${n++}`);
        populate(root, ['a.txt', 'd/', 'd/b.txt']);
        const stateDir = tempStateDir();
        const file = `${stateDir}/journal.db`;
        let j = await openJournal(root, { stateDir });
        const oldCursor = await syncedCursor(j);
        // Enough changes for a database of many pages, every one in use (nothing deleted).
        for (let i = 0; i < 800; i++) fs.writeFileSync(`${root}/d/f${i}`, 'x');
        await syncedCursor(j);
        await j.close();
        assert.ok(!fs.existsSync(`${file}-wal`), 'a clean close leaves no WAL');
        hurt(file);
        const damagedSize = fs.statSync(file).size;

        const isClear = (err: unknown): boolean => {
          assert.ok(err instanceof FanotifyError, `not a FanotifyError: ${String(err)}`);
          assert.equal(err.code, 'EJOURNALCORRUPT');
          assert.ok(err.message.includes(file), err.message);
          assert.match(err.message, /`fan journal rebuild`/);
          return true;
        };
        assert.throws(() => JournalStore.open({ stateDir }), isClear);
        assert.throws(() => JournalStore.open({ stateDir, readonly: true }), isClear);
        await assert.rejects(openJournal(root, { stateDir }), isClear);
        await assert.rejects(openJournal(root, { stateDir, record: false }), isClear);
        for (const args of [['journal', 'status', '--state-dir', stateDir], ['journal', 'cursor', '--state-dir', stateDir, root], ['journal', 'since', '--state-dir', stateDir, root, oldCursor]]) {
          const r = await runFan(args);
          assert.equal(r.code, 1, `fan ${args.join(' ')}: ${r.stderr}`);
          assert.ok(r.stderr.includes(file) && r.stderr.includes('`fan journal rebuild`'), `fan ${args.join(' ')}: ${r.stderr}`);
          assert.equal(r.stdout, '');
        }
        assert.equal(fs.statSync(file).size, damagedSize, 'nothing was written to the damaged file');

        const out = await fanOk(['journal', 'rebuild', '--state-dir', stateDir]);
        assert.match(out, /usable \(instance [0-9a-f]{32}\)/);
        assert.ok(!out.includes(parseCursor(oldCursor)!.instance), 'a new instance');
        const aside = fs.readdirSync(stateDir).filter((f) => /^journal\.db\.corrupt-\d+$/.test(f));
        assert.equal(aside.length, 1, `kept aside: ${fs.readdirSync(stateDir).join(' ')}`);
        assert.equal(fs.statSync(`${stateDir}/${aside[0]}`).size, damagedSize);

        j = await openJournal(root, { stateDir });
        try {
          const r = await j.since(oldCursor);
          assert.equal(r.freshInstance, true);
          assert.equal(r.reason, 'other-instance');
          assert.deepEqual(changeSet(r.changes, root), treeOf(root).map((p) => `created ${p}`));
          assert.equal(r.changes.length, 803);
          fs.writeFileSync(`${root}/after.txt`, '');
          assert.deepEqual(changeSet((await j.since(r.cursor)).changes, root), ['created after.txt']);
        } finally {
          await j.close();
        }
      });
    }
  });

  test('a state directory inside the recorded root is not journaled', { timeout: 60_000 }, async () => {
    const root = mkRoot('state-inside');
    populate(root, ['a.txt']);
    const stateDir = `${root}/.journal-state`;
    let j = await openJournal(root, { stateDir });
    try {
      const c0 = await syncedCursor(j);
      fs.writeFileSync(`${root}/b.txt`, 'b');
      const r = await j.since(c0);
      assert.deepEqual(changeSet(r.changes, root), ['created b.txt']);
      // Restarts delete and recreate journal.db-wal and -shm: no change either.
      await j.close();
      j = await openJournal(root, { stateDir });
      fs.writeFileSync(`${root}/c.txt`, 'c');
      assert.deepEqual(changeSet((await j.since(c0)).changes, root), ['created b.txt', 'created c.txt']);
      // A fresh listing lists what the journal tracks: never the state directory.
      const fresh = await j.since('not-a-cursor');
      assert.equal(fresh.freshInstance, true);
      assert.deepEqual(changeSet(fresh.changes, root), ['created a.txt', 'created b.txt', 'created c.txt']);
      assert.ok(fs.existsSync(`${stateDir}/journal.db`));
      // A root inside the state directory is refused.
      fs.mkdirSync(`${stateDir}/sub`);
      await assert.rejects(openJournal(`${stateDir}/sub`, { stateDir }), (err: unknown) => err instanceof FanotifyError && err.code === 'EINVAL' && /inside the journal's state directory/.test(err.message));
    } finally {
      await j.close();
    }
  });

  test('a directory replaced during the downtime, with an old entry moved into the new one: the entry is reported', { timeout: 30_000 }, async () => {
    const root = mkRoot('dir-replaced');
    populate(root, ['d/', 'd/keep/', 'd/keep/f', 'd/drop', 'other']);
    const stateDir = tempStateDir();
    let j = await openJournal(root, { stateDir });
    try {
      const c0 = await syncedCursor(j);
      await j.close();
      // The subdirectory and its file keep their inodes, paths and contents; d is a new directory
      // (made while the old one exists, so it cannot reuse its inode number).
      const oldIno = fs.statSync(`${root}/d`).ino;
      fs.mkdirSync(`${root}/d.new`);
      fs.renameSync(`${root}/d/keep`, `${root}/d.new/keep`);
      fs.rmSync(`${root}/d`, { recursive: true });
      fs.renameSync(`${root}/d.new`, `${root}/d`);
      assert.notEqual(fs.statSync(`${root}/d`).ino, oldIno);
      j = await openJournal(root, { stateDir });
      const r = await j.since(c0);
      assert.equal(r.freshInstance, false);
      // "deleted d/" empties d: what is in the new d must be reported again.
      const { view } = applyChanges(new Set(['d', 'd/keep', 'd/keep/f', 'd/drop', 'other']), new Set(), r.changes, root);
      assert.deepEqual([...view].sort(), ['d', 'd/keep', 'd/keep/f', 'other'], r.changes.map((c) => describeChange(c, root)).join(', '));
      assert.ok(!r.changes.some((c) => c.path === `${root}/other`));
      // The state index still knows them: their delete in a later downtime is seen.
      await j.close();
      fs.rmSync(`${root}/d/keep`, { recursive: true });
      j = await openJournal(root, { stateDir });
      const r2 = await j.since(c0);
      const later = applyChanges(new Set(['d', 'd/keep', 'd/keep/f', 'd/drop', 'other']), new Set(), r2.changes, root).view;
      assert.deepEqual([...later].sort(), ['d', 'other'], r2.changes.map((c) => describeChange(c, root)).join(', '));
      const fromR = applyChanges(new Set(['d', 'd/keep', 'd/keep/f', 'other']), new Set(), (await j.since(r.cursor)).changes, root).view;
      assert.deepEqual([...fromR].sort(), ['d', 'other']);
    } finally {
      await j.close();
    }
  });

  test('logged, then gone before it was indexed, then its rename lost with the stop: the restart reports it gone', { timeout: 30_000 }, async () => {
    const root = mkRoot('gone-before-indexed');
    const stateDir = tempStateDir();
    // A long batching window: the create is read, then applied only by close().
    let j = await openJournal(root, { stateDir, debounceMs: 500 });
    try {
      const c0 = await syncedCursor(j);
      fs.mkdirSync(`${root}/r`);
      fs.writeFileSync(`${root}/f`, 'f');
      await sleep(100); // the creates are read and wait in the batch
      fs.renameSync(`${root}/r`, `${root}/p`);
      fs.renameSync(`${root}/f`, `${root}/g`);
      await j.close(); // applies the batch (r and f are gone by then); the renames are never read
      j = await openJournal(root, { stateDir });
      const r = await j.since(c0);
      assert.equal(r.freshInstance, false);
      assert.deepEqual(
        [...applyChanges(new Set(), new Set(), r.changes, root).view].sort(),
        ['g', 'p'],
        r.changes.map((c) => describeChange(c, root)).join(', '),
      );
    } finally {
      await j.close();
    }
  });

  test('a directory created with contents and renamed in a later batch: since reports the contents at the new path', { timeout: 30_000 }, async () => {
    const root = mkRoot('created-renamed');
    const stateDir = tempStateDir();
    const j = await openJournal(root, { stateDir });
    try {
      const c0 = await syncedCursor(j);
      fs.mkdirSync(`${root}/d`);
      fs.writeFileSync(`${root}/d/x`, 'x');
      await syncedCursor(j); // logged before the rename
      fs.renameSync(`${root}/d`, `${root}/e`);
      fs.mkdirSync(`${root}/f`);
      fs.writeFileSync(`${root}/f/y`, 'y');
      await syncedCursor(j);
      fs.renameSync(`${root}/f`, `${root}/g`);
      fs.rmSync(`${root}/g`, { recursive: true });
      const r = await j.since(c0);
      assert.deepEqual(applyChanges(new Set(), new Set(), r.changes, root).view, new Set(['e', 'e/x']), r.changes.map((c) => describeChange(c, root)).join(', '));
    } finally {
      await j.close();
    }
  });

  test('a directory created with contents and renamed within one batch: since reports the contents at the new path', { timeout: 30_000 }, async () => {
    const root = mkRoot('created-renamed-1');
    const stateDir = tempStateDir();
    const j = await openJournal(root, { stateDir });
    try {
      const c0 = await syncedCursor(j);
      fs.mkdirSync(`${root}/d`);
      fs.writeFileSync(`${root}/d/x`, 'x');
      fs.renameSync(`${root}/d`, `${root}/e`);
      const r = await j.since(c0);
      assert.deepEqual(applyChanges(new Set(), new Set(), r.changes, root).view, new Set(['e', 'e/x']), r.changes.map((c) => describeChange(c, root)).join(', '));
      // And the state index learnt e/x: a restart does not report it again.
      const c1 = r.cursor;
      await j.close();
      const j2 = await openJournal(root, { stateDir });
      try {
        assert.deepEqual(changeSet((await j2.since(c1)).changes, root), []);
      } finally {
        await j2.close();
      }
    } finally {
      await j.close();
    }
  });

  /**
   * Seeded random sequences; every failing one is reported with its seed and operations.
   * FAN_JOURNAL_SEED=n fixes the base seed, FAN_JOURNAL_SEQUENCES=n the count, and
   * FAN_JOURNAL_SEQUENCE_SEED=n runs just that one sequence.
   */
  const property = async (t: { diagnostic(msg: string): void }, flavor: 'paced' | 'bursts', seeds?: readonly number[]): Promise<void> => {
    const base = process.env.FAN_JOURNAL_SEED ? Number(process.env.FAN_JOURNAL_SEED) : Math.floor(Math.random() * 0x7fffffff);
    const only = process.env.FAN_JOURNAL_SEQUENCE_SEED;
    const count = only ? 1 : (seeds?.length ?? Number(process.env.FAN_JOURNAL_SEQUENCES ?? 32));
    t.diagnostic(`${flavor}: base seed ${base} (rerun with FAN_JOURNAL_SEED=${base})`);
    const failures: string[] = [];
    for (let i = 0; i < count; i++) {
      const fixed = only ? Number(only) : seeds?.[i];
      let seed = fixed ?? (Math.imul(base ^ 0x9e3779b9, i + 1) + i) >>> 0;
      // Crashes (a child recorder SIGKILLed) are slow: only in every eighth sequence, whose seed
      // says so (divisible by 6), so that a seed alone reproduces a sequence.
      if (fixed === undefined) seed = i % 8 === 3 ? seed - (seed % 6) : seed % 6 === 0 ? seed + 1 : seed;
      try {
        await runSequence(mkRoot(`${flavor}-${seed}`), seed, { crashes: seed % 6 === 0, paced: flavor === 'paced' });
      } catch (err) {
        failures.push(`sequence ${i}, FAN_JOURNAL_SEQUENCE_SEED=${seed}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    if (failures.length > 0) {
      assert.fail(`${failures.length} of ${count} ${flavor} sequences failed (base seed ${base}):\n\n${failures.slice(0, 3).join('\n\n')}` +
        (failures.length > 3 ? `\n\n... and the sequences ${failures.slice(3).map((f) => f.split(':')[0]).join(', ')}` : ''));
    }
  };

  test('property, paced: since(cursor) applied to the tree at the cursor gives the tree now', { timeout: 540_000 }, async (t) => {
    // The recorder sees each operation before the next one: restarts, crashes, reconciliation
    // and coalescing, with one operation per watch batch.
    await property(t, 'paced');
  });

  test('property, bursts: since(cursor) applied to the tree at the cursor gives the tree now', { timeout: 540_000 }, async (t) => {
    // Operations faster than the batching window, with random pauses: events are read after the
    // paths they name changed again (directories renamed under queued events, inodes reused),
    // and the kernel merges some of them. Seeds that once failed are in the journal notes.
    await property(t, 'bursts');
  });

  test('property, bursts: the sequences that failed before the journal logged against the disk', { timeout: 300_000 }, async (t) => {
    // Each showed one defect: a rename over an existing path lost by the batcher (3702301416),
    // directories renamed under queued events (1418774978, 206228330, 617685871, 2897778575,
    // 4202121535, 3651939186), children logged before their directory (1336020510), a target
    // named ahead of the index (2184060188, 4111216060, 150470902), inode reuse (534447996), a
    // crawl racing a rename (1296005076), a file written after its rename whose modify events a
    // stop dropped, while the rename had indexed its new content (2812098541), a rename into a
    // directory deleted in the same read batch, named late, that moved the resolver's entry of a
    // new directory made at its old path (1463234551), a directory first named from the present
    // (its handle opened after later renames), then moved by one of those renames (1610363519), a
    // file indexed at the path the disk showed after two renames, then moved by the first of them
    // in the index (2293884091).
    await property(t, 'bursts', [
      3702301416, 1418774978, 206228330, 617685871, 2897778575, 4202121535, 3651939186, 1336020510, 2184060188, 4111216060,
      150470902, 534447996, 1296005076, 2812098541, 1463234551, 1610363519, 2293884091,
    ]);
  });
});

// ---------------------------------------------------------------------------------------------
// The property test.

/** Relative path → entity: an id that survives renames and a version bumped by every write. */
type Model = Map<string, { isDir: boolean; id: number; ver: number }>;

const under = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir}/`);

/**
 * Apply `since` changes, in order, to a view (a set of relative paths). `dirty` marks paths whose
 * content the changes said was new (created/updated); renames carry the marks along.
 */
function applyChanges(view: Set<string>, dirty: Set<string>, changes: readonly JournalChange[], root: string): { view: Set<string>; dirty: Set<string> } {
  const rel = (p: string): string => {
    assert.ok(p.startsWith(`${root}/`), `${p} is not under ${root}`);
    return p.slice(root.length + 1);
  };
  const removeTree = (set: Set<string>, p: string): void => {
    for (const q of [...set]) if (under(q, p)) set.delete(q);
  };
  for (const c of changes) {
    const p = rel(c.path);
    if (c.kind === 'created' || c.kind === 'updated') {
      view.add(p);
      dirty.add(p);
    } else if (c.kind === 'deleted') {
      removeTree(view, p);
      removeTree(dirty, p);
    } else {
      const from = rel(c.oldPath!);
      const move = (set: Set<string>): void => {
        const moved = [...set].filter((q) => under(q, from));
        removeTree(set, p);
        for (const q of moved) set.delete(q);
        for (const q of moved) set.add(p + q.slice(from.length));
      };
      move(view);
      move(dirty);
    }
  }
  return { view, dirty };
}

describe('coalesceLog', () => {
  test('property: the coalesced log applied to the tree at the cursor gives the tree now', { timeout: 60_000 }, () => {
    const base = process.env.FAN_JOURNAL_SEED ? Number(process.env.FAN_JOURNAL_SEED) : Math.floor(Math.random() * 0x7fffffff);
    const count = Number(process.env.FAN_COALESCE_SEQUENCES ?? 4000);
    for (let i = 0; i < count; i++) {
      const seed = (Math.imul(base ^ 0x85ebca6b, i + 1) + i) >>> 0;
      checkCoalesce(seed);
    }
  });

  test('examples', { timeout: 10_000 }, () => {
    const c = (kind: LogEntry['kind'], path: string, isDir = false, oldPath?: string): LogEntry => ({ kind, path, isDir, ...(oldPath ? { oldPath } : {}) });
    const show = (log: LogEntry[]): string[] => coalesceLog(log).map((e) => `${e.kind} ${e.oldPath ? `${e.oldPath}->` : ''}${e.path}${e.isDir ? '/' : ''}`);
    assert.deepEqual(show([c('create', 'a'), c('update', 'a'), c('update', 'b'), c('delete', 'b'), c('delete', 'c'), c('create', 'c')]), ['create a', 'delete b', 'update c']);
    assert.deepEqual(show([c('create', 'a'), c('delete', 'a')]), []);
    // A file created and renamed is a create of the new path.
    assert.deepEqual(show([c('create', 'a'), c('rename', 'b', false, 'a')]), ['create b']);
    // A directory created with contents and renamed keeps both.
    assert.deepEqual(show([c('create', 'd', true), c('create', 'd/x'), c('rename', 'e', true, 'd')]), ['create d/', 'create d/x', 'rename d->e/']);
    // An empty one is a create of the new path.
    assert.deepEqual(show([c('create', 'd', true), c('rename', 'e', true, 'd')]), ['create e/']);
    // A directory created with contents and deleted again is nothing.
    assert.deepEqual(show([c('create', 'd', true), c('create', 'd/x'), c('delete', 'd/x'), c('delete', 'd', true)]), []);
    // A directory deleted (its contents implied) and made again is a delete and a create.
    assert.deepEqual(show([c('delete', 'd', true), c('create', 'd', true)]), ['delete d/', 'create d/']);
    // After a directory rename, a later change below it is not merged into one from before.
    assert.deepEqual(show([c('create', 'd/x'), c('rename', 'e', true, 'd'), c('rename', 'd', true, 'e'), c('delete', 'd/x')]), ['create d/x', 'rename d->e/', 'rename e->d/', 'delete d/x']);
    // Created, renamed over an existing file, deleted: the existing file is gone.
    assert.deepEqual(show([c('create', 'tmp'), c('rename', 'a', false, 'tmp'), c('delete', 'a')]), ['delete a']);
  });
});

/** One random sequence of tree operations, logged the way the recorder logs them. */
function checkCoalesce(seed: number): void {
  const rnd = prng(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const tree: Model = new Map();
  let nextId = 1;
  const log: LogEntry[] = [];
  const names = ['a', 'b', 'c', 'd'];
  const dirs = (): string[] => ['', ...[...tree].filter(([, e]) => e.isDir).map(([p]) => p)];
  const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);
  const fresh = (maxDepth: number): string | undefined => {
    const dir = pick(dirs());
    const p = join(dir, pick(names));
    return tree.has(p) || p.split('/').length > maxDepth ? undefined : p;
  };
  const step = (silent: boolean): void => {
    const emit = (e: LogEntry): void => {
      if (!silent) log.push(e);
    };
    const files = [...tree].filter(([, e]) => !e.isDir).map(([p]) => p);
    const ds = dirs().filter((d) => d !== '');
    const r = int(100);
    if (r < 20) {
      const p = fresh(4);
      if (!p) return;
      tree.set(p, { isDir: int(3) === 0, id: nextId++, ver: 0 });
      emit({ kind: 'create', path: p, isDir: tree.get(p)!.isDir });
    } else if (r < 35 && files.length > 0) {
      const p = pick(files);
      const e = tree.get(p)!;
      tree.set(p, { ...e, ver: e.ver + 1 });
      emit({ kind: 'update', path: p, isDir: false });
    } else if (r < 50 && (files.length > 0 || ds.length > 0)) {
      const p = pick([...files, ...ds]);
      const gone = [...tree.keys()].filter((q) => under(q, p)).sort().reverse(); // children first
      for (const q of gone) {
        // The watch cannot name deletes inside a directory that is gone and was never seen.
        if (q === p || rnd() < 0.5) emit({ kind: 'delete', path: q, isDir: tree.get(q)!.isDir });
        tree.delete(q);
      }
    } else if (r < 90 && (files.length > 0 || ds.length > 0)) {
      const from = pick([...files, ...ds]);
      const isDir = tree.get(from)!.isDir;
      let to = fresh(4);
      if (rnd() < 0.3) {
        // Over an existing file (for a file) or an empty directory (for a directory).
        const targets = [...tree].filter(([p, e]) => e.isDir === isDir && p !== from && !under(p, from) && !under(from, p) && (!e.isDir || ![...tree.keys()].some((q) => q.startsWith(`${p}/`))));
        if (targets.length > 0) to = pick(targets)[0];
      }
      if (!to || under(to, from)) return;
      const moved = [...tree].filter(([p]) => under(p, from));
      for (const [p] of moved) tree.delete(p);
      tree.delete(to);
      for (const [p, e] of moved) tree.set(to + p.slice(from.length), e);
      emit({ kind: 'rename', path: to, oldPath: from, isDir });
    }
  };
  /** A reconciliation: silent changes, then the differences as diffTrees and the recorder log them. */
  const reconcile = (): void => {
    const before = new Map(tree);
    for (let k = int(5); k > 0; k--) step(true);
    const sorted = (m: Model): [string, { isDir: boolean; id: number; ver: number }][] => [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [p, was] of sorted(before)) {
      const now = tree.get(p);
      if (!now || now.id !== was.id) log.push({ kind: 'delete', path: p, isDir: was.isDir });
    }
    // As the recorder does: what is below a deleted directory is created again.
    const goneDirs = [...before].filter(([p, was]) => was.isDir && tree.get(p)?.id !== was.id).map(([p]) => p);
    for (const [p, now] of sorted(tree)) {
      const was = before.get(p);
      if (!was || was.id !== now.id || goneDirs.some((d) => p.startsWith(`${d}/`))) log.push({ kind: 'create', path: p, isDir: now.isDir });
      else if (!now.isDir && was.ver !== now.ver) log.push({ kind: 'update', path: p, isDir: false });
    }
  };
  for (let k = 0; k < 8; k++) step(false);
  const n = 10 + int(40);
  const cursorAt = int(n);
  let snapshot: Model = new Map();
  let from = 0;
  for (let i = 0; i < n; i++) {
    if (i === cursorAt) {
      snapshot = new Map(tree);
      from = log.length;
    }
    if (int(12) === 0) reconcile();
    else step(false);
  }
  const after = log.slice(from);
  const abs = (e: LogEntry): JournalChange => ({
    kind: ({ create: 'created', update: 'updated', delete: 'deleted', rename: 'renamed' } as const)[e.kind],
    path: `/r/${e.path}`,
    ...(e.oldPath !== undefined ? { oldPath: `/r/${e.oldPath}` } : {}),
    isDir: e.isDir,
  });
  const want = [...tree.keys()].sort();
  const coalesced = coalesceLog(after);
  const explain = (): string =>
    `seed ${seed}\nat the cursor: ${[...snapshot.keys()].sort().join(' ')}\nlog: ${after.map((e) => `${e.kind} ${e.oldPath ? `${e.oldPath}->` : ''}${e.path}${e.isDir ? '/' : ''}`).join(', ')}\n` +
    `coalesced: ${coalesced.map((e) => `${e.kind} ${e.oldPath ? `${e.oldPath}->` : ''}${e.path}${e.isDir ? '/' : ''}`).join(', ')}`;
  const raw = applyChanges(new Set(snapshot.keys()), new Set(), after.map(abs), '/r').view;
  assert.deepEqual([...raw].sort(), want, `the raw log itself is wrong (a bug in the test): ${explain()}`);
  const { view, dirty } = applyChanges(new Set(snapshot.keys()), new Set(), coalesced.map(abs), '/r');
  assert.deepEqual([...view].sort(), want, explain());
  const known = new Set([...snapshot.values()].map((e) => `${e.id}.${e.ver}`));
  const unreported = [...tree].filter(([p, e]) => !known.has(`${e.id}.${e.ver}`) && !dirty.has(p)).map(([p]) => p);
  assert.deepEqual(unreported, [], `changed but not reported as created/updated\n${explain()}`);
}

interface SequenceOptions {
  /** Sometimes run a recorder child and SIGKILL it. */
  crashes: boolean;
  /** Sync with the recorder after every operation made while the journal is open. */
  paced: boolean;
}

/** One random sequence of operations with a cursor taken somewhere in it. */
async function runSequence(root: string, seed: number, opts: SequenceOptions): Promise<void> {
  const rnd = prng(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const stateDir = tempStateDir();
  const model: Model = new Map();
  let nextId = 1;
  const log: string[] = [];
  const FILES = ['a', 'b', 'c', 'd', 'e', 'f'];
  const DIRS = ['p', 'q', 'r', 's'];

  const dirs = (): string[] => ['', ...[...model].filter(([, e]) => e.isDir).map(([p]) => p)];
  const files = (): string[] => [...model].filter(([, e]) => !e.isDir).map(([p]) => p);
  const depth = (p: string): number => (p === '' ? 0 : p.split('/').length);
  const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);
  const abs = (p: string): string => `${root}/${p}`;
  const content = (): string => 'x'.repeat(1 + int(40)) + String(int(1e6));
  const newPath = (names: readonly string[], maxParentDepth: number): string | undefined => {
    for (let k = 0; k < 8; k++) {
      const dir = pick(dirs());
      if (depth(dir) > maxParentDepth) continue;
      const p = join(dir, pick(names));
      if (!model.has(p)) return p;
    }
    return undefined;
  };

  /** One file operation on disk and in the model; false when none applied. */
  const fileOp = (): boolean => {
    const r = int(100);
    if (r < 20) {
      const p = newPath(FILES, 2);
      if (!p) return false;
      fs.writeFileSync(abs(p), content());
      model.set(p, { isDir: false, id: nextId++, ver: 0 });
      log.push(`create ${p}`);
    } else if (r < 40) {
      const fl = files();
      if (fl.length === 0) return false;
      const p = pick(fl);
      const e = model.get(p)!;
      if (rnd() < 0.6) {
        fs.appendFileSync(abs(p), content());
        log.push(`append ${p}`);
      } else {
        // Same size, other bytes.
        const size = fs.statSync(abs(p)).size;
        fs.writeFileSync(abs(p), Buffer.alloc(size, 97 + int(26)));
        log.push(`overwrite ${p}`);
      }
      model.set(p, { ...e, ver: e.ver + 1 });
    } else if (r < 50) {
      const fl = files();
      if (fl.length === 0) return false;
      const p = pick(fl);
      fs.unlinkSync(abs(p));
      model.delete(p);
      log.push(`unlink ${p}`);
    } else if (r < 62) {
      const p = newPath(DIRS, 1);
      if (!p) return false;
      fs.mkdirSync(abs(p));
      model.set(p, { isDir: true, id: nextId++, ver: 0 });
      log.push(`mkdir ${p}`);
    } else if (r < 68) {
      const ds = dirs().filter((d) => d !== '');
      if (ds.length === 0) return false;
      const d = pick(ds);
      fs.rmSync(abs(d), { recursive: true });
      for (const p of [...model.keys()]) if (under(p, d)) model.delete(p);
      log.push(`rm -r ${d}`);
    } else if (r < 84) {
      const fl = files();
      if (fl.length === 0) return false;
      const from = pick(fl);
      let to: string | undefined;
      if (rnd() < 0.25) {
        const others = fl.filter((f) => f !== from);
        if (others.length > 0) to = pick(others); // replaces a file
      }
      to ??= newPath(FILES, 2);
      if (!to) return false;
      fs.renameSync(abs(from), abs(to));
      const e = model.get(from)!;
      model.delete(from);
      model.set(to, e);
      log.push(`mv ${from} ${to}`);
    } else {
      const ds = dirs().filter((d) => d !== '');
      if (ds.length === 0) return false;
      const from = pick(ds);
      let to: string | undefined;
      const emptyDirs = ds.filter((d) => !under(d, from) && ![...model.keys()].some((p) => p.startsWith(`${d}/`)) && !under(from, d));
      if (rnd() < 0.2 && emptyDirs.length > 0) {
        to = pick(emptyDirs); // replaces an empty directory
      } else {
        for (let k = 0; k < 8 && !to; k++) {
          const parent = pick(dirs().filter((d) => !under(d, from)));
          const p = join(parent, pick(DIRS));
          if (!model.has(p)) to = p;
        }
      }
      if (!to) return false;
      fs.renameSync(abs(from), abs(to));
      const moved = [...model].filter(([p]) => under(p, from));
      for (const [p] of moved) model.delete(p);
      model.delete(to);
      for (const [p, e] of moved) model.set(to + p.slice(from.length), e);
      log.push(`mv ${from}/ ${to}/`);
    }
    return true;
  };

  // A small starting tree.
  for (let k = 0; k < 6 + int(8); k++) fileOp();
  const start = [...log];
  log.length = 0;

  const nOps = 20 + int(41);
  const cursorAt = int(nOps);
  let cursor: string | undefined;
  let snapshot: Model | undefined;
  let j: Journal = await openJournal(root, { stateDir });
  let child: RecorderChild | undefined;
  const fail = (msg: string): never => {
    // What the recorder logged after the cursor, before coalescing.
    let logged = '';
    try {
      const store = JournalStore.open({ stateDir, readonly: true });
      try {
        const row = store.root(root);
        const seq = parseCursor(cursor)?.seq ?? 0;
        if (row) {
          const raw = store.changesAfter(row.id, seq);
          logged = raw.map((c) => `${c.kind} ${c.oldPath ? `${c.oldPath}->` : ''}${c.path}${c.isDir ? '/' : ''}`).join(', ');
          // Is the log itself right (then coalescing is wrong), or already the log?
          const asChanges = raw.map((c): JournalChange => ({
            kind: ({ create: 'created', update: 'updated', delete: 'deleted', rename: 'renamed' } as const)[c.kind],
            path: `${root}/${c.path}`,
            ...(c.oldPath !== undefined ? { oldPath: `${root}/${c.oldPath}` } : {}),
            isDir: c.isDir,
          }));
          const view = applyChanges(new Set(snapshot?.keys() ?? []), new Set(), asChanges, root).view;
          const ok = [...view].sort().join() === [...model.keys()].sort().join();
          logged += ok ? '\n(applied uncoalesced, the log gives the tree now)' : '\n(applied uncoalesced, the log does NOT give the tree now: the events logged were wrong)';
        }
      } finally {
        store.close();
      }
    } catch (err) {
      logged = `(unreadable: ${String(err)})`;
    }
    const mnt = dirname(root);
    throw new Error(
      `${msg}\nlogged: ${logged}\nroot ${root} (exists: ${fs.existsSync(root)}; ${mnt} is a mount: ${mountEntry(mnt) !== undefined})\n` +
        `starting tree ops: ${start.join('; ')}\nops (the cursor is the <cursor> line):\n${log.map((l, i) => `  ${i}: ${l}`).join('\n')}`,
    );
  };
  try {
    const step = async (i: number): Promise<void> => {
      if (i === cursorAt) {
        log.push('<cursor>');
        cursor = await syncedCursor(j);
        snapshot = new Map(model);
      }
      const r = int(100);
      if (r < 4) {
        log.push('restart: close');
        await j.close();
        for (let k = int(4); k > 0; k--) fileOp();
        log.push('restart: open');
        j = await openJournal(root, { stateDir });
      } else if (r < 9 && opts.crashes) {
        log.push('crash: close, start a recorder child');
        await j.close();
        child = await RecorderChild.start(stateDir, [root]);
        // Paced: the child sees each operation before the next, but the last, which may be
        // in flight when it dies.
        const reader = opts.paced ? await openJournal(root, { stateDir, record: false }) : undefined;
        try {
          for (let k = 1 + int(5); k > 0; k--) {
            fileOp();
            if (reader && k > 1) await syncedCursor(reader);
            else if (rnd() < 0.3) await sleep(int(20));
          }
        } finally {
          await reader?.close();
        }
        await sleep(int(40));
        log.push('crash: SIGKILL');
        await child.kill('SIGKILL');
        child = undefined;
        for (let k = int(4); k > 0; k--) fileOp();
        log.push('crash: open');
        j = await openJournal(root, { stateDir });
      } else if (r < 20) {
        // Batch boundaries: a pause, or a sync.
        if (rnd() < 0.5) {
          const ms = int(25);
          log.push(`sleep ${ms}`);
          await sleep(ms);
        } else {
          log.push('sync');
          await syncedCursor(j);
        }
      } else if (fileOp() && opts.paced) {
        await syncedCursor(j);
      }
    };
    for (let i = 0; i < nOps; i++) {
      try {
        await step(i);
      } catch (err) {
        fail(`operation ${i} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    const result = await j.since(cursor);
    if (result.freshInstance) fail(`since(cursor) is a fresh instance (${result.reason})`);
    const got = result.changes.map((c) => describeChange(c, root));
    // Sanity of the test itself: the model is the disk.
    const disk = treeOf(root);
    const modelTree = [...model].map(([p, e]) => (e.isDir ? `${p}/` : p)).sort();
    assert.deepEqual(modelTree, disk, 'model and disk disagree (a bug in the test)');
    const snap = snapshot!;
    const { view, dirty } = applyChanges(new Set(snap.keys()), new Set(), result.changes, root);
    const want = new Set(model.keys());
    const missing = [...want].filter((p) => !view.has(p));
    const extra = [...view].filter((p) => !want.has(p));
    if (missing.length > 0 || extra.length > 0) {
      fail(`applying since(cursor) to the tree at the cursor does not give the tree now: missing ${JSON.stringify(missing)}, extra ${JSON.stringify(extra)}\nsince: ${got.join(', ')}`);
    }
    // Files: a directory's content is its entries, checked above (and a directory replaced by
    // an empty one that got the same inode number cannot be told apart from it).
    const before = new Set([...snap.values()].map((e) => `${e.id}.${e.ver}`));
    const unreported = [...model].filter(([p, e]) => !e.isDir && !before.has(`${e.id}.${e.ver}`) && !dirty.has(p)).map(([p]) => p);
    if (unreported.length > 0) fail(`changed since the cursor but not reported as created/updated: ${JSON.stringify(unreported)}\nsince: ${got.join(', ')}`);
    // A restart right now adds nothing (paced: the state index is exact), or at most
    // over-reports entries that exist (bursts: an entry stat'ed after it had moved on).
    await j.close();
    j = await openJournal(root, { stateDir });
    const after2 = await j.since(result.cursor);
    const again = applyChanges(new Set(model.keys()), new Set(), after2.changes, root).view;
    if (opts.paced ? after2.changes.length > 0 : [...again].sort().join() !== [...model.keys()].sort().join()) {
      fail(`a restart without changes logged ${after2.changes.map((c) => describeChange(c, root)).join(', ')}: the state index was wrong\nsince: ${got.join(', ')}`);
    }
  } finally {
    await child?.kill('SIGKILL');
    await j.close();
  }
}
