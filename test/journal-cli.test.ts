/**
 * `fan journal` end to end: exit statuses and messages, `status --json`, `since` output, one
 * recorder per root, rebuild of a healthy journal.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { parseCursor, rootTag } from '../src/journal/index.js';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { RecorderChild, fanOk, journalStatus, removeStateDirs, runFan, tempStateDir, waitUntil, type StatusJson } from './helpers/journal.js';

requireRoot();
after(removeStateDirs);



describe('fan journal', { timeout: 300_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  const mkRoot = (name: string): string => {
    const root = `${loop.fs.dir}/${name}`;
    fs.mkdirSync(root);
    return root;
  };

  test('since with a malformed cursor exits 2 and says what a cursor looks like', { timeout: 30_000 }, async () => {
    const root = mkRoot('malformed');
    const stateDir = tempStateDir();
    for (const bad of ['garbage', 'fj1:zz', '']) {
      const r = await runFan(['journal', 'since', '--state-dir', stateDir, root, bad]);
      assert.equal(r.code, 2, `cursor ${JSON.stringify(bad)}: ${r.stderr}`);
      assert.equal(r.stdout, '');
      assert.ok(r.stderr.includes(`"${bad}" is not a journal cursor`), r.stderr);
      assert.ok(r.stderr.includes('fj1:<instance>:<root>:<seq>'), r.stderr);
      assert.ok(r.stderr.includes(`fan journal cursor ${root}`), r.stderr);
      assert.ok(!/\n\s+at /.test(r.stderr), `a stack trace: ${r.stderr}`);
    }
    // Nothing was created by refusing it.
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });

  test('cursor on a root that is not recorded exits 1 naming the fix', { timeout: 30_000 }, async () => {
    const root = mkRoot('unrecorded');
    const recorded = mkRoot('recorded');
    const stateDir = tempStateDir();
    // No journal at all in the state directory.
    let r = await runFan(['journal', 'cursor', '--state-dir', stateDir, root]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `fan: journal: no journal in ${stateDir} (run \`fan journal run ROOT\` to start one)\n`);
    // A journal that records another root.
    const rec = await RecorderChild.start(stateDir, [recorded]);
    try {
      r = await runFan(['journal', 'cursor', '--state-dir', stateDir, root]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, `fan: journal: ${root} is not recorded (start \`fan journal run ${root}\`)\n`);
      // And a root that does not exist.
      r = await runFan(['journal', 'cursor', '--state-dir', stateDir, `${root}/nope`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /nope: no such directory/);
      // The recorded one has a cursor.
      const cursor = (await fanOk(['journal', 'cursor', '--state-dir', stateDir, recorded])).trim();
      const parts = parseCursor(cursor);
      assert.ok(parts, cursor);
      assert.equal(parts.rootTag, rootTag(recorded));
    } finally {
      await rec.kill('SIGINT');
    }
  });

  test('status --json: the database, and per root its changes, cursors, recorder and last reconciliation', { timeout: 60_000 }, async () => {
    const root = mkRoot('status');
    fs.writeFileSync(`${root}/a`, 'a');
    const stateDir = tempStateDir();
    const rec = await RecorderChild.start(stateDir, [root]);
    let live: StatusJson;
    try {
      live = await journalStatus(stateDir);
      assert.deepEqual(Object.keys(live).sort(), ['db', 'instance', 'roots', 'sizeBytes']);
      assert.equal(live.db, `${stateDir}/journal.db`);
      assert.match(live.instance, /^[0-9a-f]{32}$/);
      assert.ok(Number.isInteger(live.sizeBytes) && live.sizeBytes > 0, `sizeBytes ${live.sizeBytes}`);
      assert.equal(live.roots.length, 1);
      const row = live.roots[0]!;
      assert.deepEqual(Object.keys(row).sort(), ['changes', 'lastReconcile', 'lastStopClean', 'newestSeq', 'oldestCursor', 'recorderPid', 'root']);
      assert.equal(row.root, root);
      assert.equal(row.recorderPid, rec.pid);
      assert.equal(row.lastStopClean, false, 'running: not cleanly stopped');
      assert.equal(row.changes, 0, 'the first start only indexes');
      assert.equal(row.newestSeq, 0);
      assert.deepEqual(parseCursor(row.oldestCursor), { instance: live.instance, rootTag: rootTag(root), seq: 0 });
      assert.ok(row.lastReconcile);
      assert.deepEqual(Object.keys(row.lastReconcile).sort(), ['at', 'changes', 'ms']);
      assert.match(row.lastReconcile.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(Math.abs(Date.parse(row.lastReconcile.at) - Date.now()) < 60_000);
      assert.equal(typeof row.lastReconcile.ms, 'number');
      assert.equal(row.lastReconcile.changes, 0);

      // Changes show up in the counts.
      const c0 = row.oldestCursor;
      fs.writeFileSync(`${root}/b`, 'b');
      fs.mkdirSync(`${root}/d`);
      await fanOk(['journal', 'since', '--state-dir', stateDir, root, c0]); // syncs with the recorder
      const after1 = await journalStatus(stateDir);
      assert.ok(after1.roots[0]!.newestSeq >= 2, `newestSeq ${after1.roots[0]!.newestSeq}`);
      assert.equal(after1.roots[0]!.changes, after1.roots[0]!.newestSeq);
      assert.equal(after1.roots[0]!.oldestCursor, c0, 'nothing pruned');

      // The text form says the same.
      const text = await fanOk(['journal', 'status', '--state-dir', stateDir]);
      assert.ok(text.startsWith(`journal ${stateDir}/journal.db (`), text);
      assert.ok(text.includes(`instance ${live.instance}`), text);
      assert.ok(text.includes(`${root}: ${after1.roots[0]!.changes} changes, newest seq ${after1.roots[0]!.newestSeq}, recording (pid ${rec.pid})`), text);
      assert.ok(text.includes(`  oldest cursor ${c0}`), text);
    } finally {
      const exit = await rec.kill('SIGINT');
      assert.deepEqual(exit, { code: 0, signal: null }, `fan journal run on SIGINT: ${rec.stderr}`);
    }
    const stopped = await journalStatus(stateDir);
    assert.equal(stopped.instance, live.instance);
    assert.equal(stopped.roots[0]!.recorderPid, null);
    assert.equal(stopped.roots[0]!.lastStopClean, true);
  });

  test('status and since with no journal exit 1 naming the fix, and create none', { timeout: 30_000 }, async () => {
    const root = mkRoot('no-journal');
    const stateDir = tempStateDir();
    const r = await runFan(['journal', 'status', '--json', '--state-dir', stateDir]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr, `fan: journal: no journal in ${stateDir} (run \`fan journal run ROOT\` to start one)\n`);
    const cursor = `fj1:${'1'.repeat(32)}:${rootTag(root)}:5`;
    const s = await runFan(['journal', 'since', '--state-dir', stateDir, root, cursor]);
    assert.equal(s.code, 1, `stdout: ${s.stdout}`);
    assert.equal(s.stdout, '');
    assert.equal(s.stderr, `fan: journal: no journal in ${stateDir} (run \`fan journal run ROOT\` to start one)\n`);
    assert.deepEqual(fs.readdirSync(stateDir), [], 'a read created a journal');
  });

  test('run on a root another live process records fails naming that pid; the first keeps recording', { timeout: 60_000 }, async () => {
    const root = mkRoot('busy');
    const stateDir = tempStateDir();
    const first = await RecorderChild.start(stateDir, [root]);
    try {
      const c0 = (await fanOk(['journal', 'cursor', '--state-dir', stateDir, root])).trim();
      const r = await runFan(['journal', 'run', '--state-dir', stateDir, root]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, `fan: journal: ${root} is already being recorded by pid ${first.pid}\n`);
      // Also as one of several roots: nothing is recorded by the refused process.
      const other = mkRoot('busy-other');
      const r2 = await runFan(['journal', 'run', '--state-dir', stateDir, other, root]);
      assert.equal(r2.code, 1, r2.stderr);
      assert.ok(r2.stderr.includes(`already being recorded by pid ${first.pid}`), r2.stderr);
      const s = await journalStatus(stateDir);
      assert.equal(s.roots.find((x) => x.root === root)?.recorderPid, first.pid);
      assert.equal(s.roots.find((x) => x.root === other)?.recorderPid ?? null, null);
      // The first recorder still works.
      fs.writeFileSync(`${root}/x`, 'x');
      const out = JSON.parse(await fanOk(['journal', 'since', '--json', '--state-dir', stateDir, root, c0])) as { freshInstance: boolean; changes: { kind: string; path: string }[] };
      assert.equal(out.freshInstance, false);
      assert.deepEqual(out.changes.map((c) => `${c.kind} ${c.path}`), [`created ${root}/x`]);
    } finally {
      await first.kill('SIGINT');
    }
    // Once it stopped, another may record.
    const second = await RecorderChild.start(stateDir, [root]);
    await second.kill('SIGINT');
  });

  test('since prints changes and a cursor; --json and --empty-on-fresh', { timeout: 60_000 }, async () => {
    const root = mkRoot('since');
    fs.mkdirSync(`${root}/d`);
    fs.writeFileSync(`${root}/old`, 'old');
    const stateDir = tempStateDir();
    const rec = await RecorderChild.start(stateDir, [root]);
    try {
      const c0 = (await fanOk(['journal', 'cursor', '--state-dir', stateDir, root])).trim();
      fs.writeFileSync(`${root}/new`, 'new');
      fs.renameSync(`${root}/old`, `${root}/d/moved`);
      fs.mkdirSync(`${root}/e`);
      let lines: string[] = [];
      await waitUntil(async () => {
        lines = (await fanOk(['journal', 'since', '--state-dir', stateDir, root, c0])).trimEnd().split('\n');
        return lines.length >= 4;
      }, 'three changes');
      assert.deepEqual(lines.slice(0, -1).sort(), [`created ${root}/e/`, `created ${root}/new`, `renamed ${root}/old -> ${root}/d/moved`]);
      const last = lines.at(-1)!;
      assert.match(last, /^# cursor fj1:/);
      const c1 = last.slice('# cursor '.length);
      assert.equal(parseCursor(c1)!.instance, parseCursor(c0)!.instance);
      // Nothing after the new cursor.
      assert.equal(await fanOk(['journal', 'since', '--state-dir', stateDir, root, c1]), `# cursor ${c1}\n`);

      const json = JSON.parse(await fanOk(['journal', 'since', '--json', '--state-dir', stateDir, root, c0])) as Record<string, unknown>;
      assert.deepEqual(Object.keys(json).sort(), ['changes', 'cursor', 'freshInstance']);
      assert.equal(json.freshInstance, false);
      assert.equal(json.cursor, c1);
      assert.deepEqual(
        (json.changes as Record<string, unknown>[]).map((c) => JSON.stringify(c)).sort(),
        [
          { kind: 'created', path: `${root}/e`, isDir: true },
          { kind: 'created', path: `${root}/new`, isDir: false },
          { kind: 'renamed', path: `${root}/d/moved`, oldPath: `${root}/old`, isDir: false },
        ].map((c) => JSON.stringify(c)).sort(),
      );

      // A cursor of another instance: a fresh instance, said so, every entry listed (or none).
      const foreign = c0.replace(/^fj1:[0-9a-f]{32}/, `fj1:${'0'.repeat(32)}`);
      const fresh = (await fanOk(['journal', 'since', '--state-dir', stateDir, root, foreign])).trimEnd().split('\n');
      assert.deepEqual(fresh, [
        '# fresh instance (other-instance): listing every entry; treat your view as unknown',
        `created ${root}/d/`,
        `created ${root}/d/moved`,
        `created ${root}/e/`,
        `created ${root}/new`,
        `# cursor ${c1}`,
      ]);
      const freshJson = JSON.parse(await fanOk(['journal', 'since', '--json', '--empty-on-fresh', '--state-dir', stateDir, root, foreign])) as Record<string, unknown>;
      assert.deepEqual(freshJson, { cursor: c1, freshInstance: true, reason: 'other-instance', changes: [] });
    } finally {
      await rec.kill('SIGINT');
    }
  });

  test('rebuild of a healthy journal keeps it; run refuses a root inside the state directory; bad durations exit 2', { timeout: 60_000 }, async () => {
    const root = mkRoot('rebuild-healthy');
    const stateDir = tempStateDir();
    const rec = await RecorderChild.start(stateDir, [root]);
    fs.writeFileSync(`${root}/a`, 'a');
    await rec.kill('SIGINT');
    const c0 = (await fanOk(['journal', 'cursor', '--state-dir', stateDir, root])).trim();
    const before = await journalStatus(stateDir);
    const out = await fanOk(['journal', 'rebuild', '--state-dir', stateDir]);
    assert.equal(out, `journal ${stateDir}/journal.db is usable (instance ${before.instance})\n`);
    assert.deepEqual(fs.readdirSync(stateDir).filter((f) => f.includes('corrupt')), []);
    const afterRebuild = await journalStatus(stateDir);
    assert.equal(afterRebuild.instance, before.instance);
    assert.deepEqual(afterRebuild.roots.map((r) => [r.root, r.newestSeq]), before.roots.map((r) => [r.root, r.newestSeq]));
    assert.equal((await fanOk(['journal', 'cursor', '--state-dir', stateDir, root])).trim(), c0);

    // A root inside the state directory.
    const inside = `${loop.fs.dir}/state-with-root`;
    fs.mkdirSync(`${inside}/root`, { recursive: true });
    const r = await runFan(['journal', 'run', '--state-dir', inside, `${inside}/root`]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`cannot record ${inside}/root: it is inside the journal's state directory ${inside}`), r.stderr);

    const bad = await runFan(['journal', 'run', '--max-age', '7x', '--state-dir', stateDir, root]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /a duration looks like 90s, 30m, 12h or 7d; got "7x"/);
  });
});
