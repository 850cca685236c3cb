/**
 * Notification events on a real loop-mounted ext4: every event type, merged masks, FAN_RENAME,
 * directory renames fixing the path cache, deleted files keeping their paths, overflow.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { FanotifyGroup } from '../src/group.js';
import { FanotifyError } from '../src/errors.js';
import { useLoopFs, requireRoot, createLoopFs } from './helpers/loopfs.js';
import { EventLog, brief } from './helpers/events.js';
import { withMaxQueuedEvents, runInChild, execCmd } from './helpers/proc.js';

requireRoot();

const ALL_NOTIFY = [
  'access', 'modify', 'attrib', 'closeWrite', 'closeNoWrite', 'open', 'movedFrom', 'movedTo',
  'create', 'delete', 'deleteSelf', 'moveSelf', 'openExec', 'rename',
] as const;

describe('notification events on ext4 (filesystem mark, DFID+name+target)', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  let group: FanotifyGroup;
  let log: EventLog;
  let root: string;

  before(() => {
    root = `${loop.fs.dir}/t`;
    fs.mkdirSync(root);
    // Our own pid is not ignored here, so the test's synchronous fs calls are the events.
    group = FanotifyGroup.open({ report: ['dfidNameTarget'], ignorePids: [] });
    group.mark(loop.fs.dir, { kind: 'filesystem', events: [...ALL_NOTIFY], onDir: true });
    log = new EventLog(group, root);
  });
  after(async () => {
    await group.close();
    log.close();
  });

  const step = async (n: number): Promise<string[]> => (await log.takeAtLeast(n)).map((s) => brief(s, root));

  test('every notification event type, with merged masks and exact paths', async () => {
    fs.mkdirSync(`${root}/d`);
    assert.deepEqual(await step(1), ['create/|d']);

    // One synchronous burst: the kernel merges the events of one pid on one file into one mask.
    fs.writeFileSync(`${root}/d/f`, 'hello');
    assert.deepEqual(await step(1), ['create,modify,closeWrite,open|d/f']);

    fs.readFileSync(`${root}/d/f`);
    assert.deepEqual(await step(1), ['closeNoWrite,open,access|d/f']);

    fs.chmodSync(`${root}/d/f`, 0o600);
    assert.deepEqual(await step(1), ['attrib|d/f']);

    fs.renameSync(`${root}/d/f`, `${root}/d/g`);
    assert.deepEqual(await step(4), ['rename|d/f->d/g', 'movedFrom|d/f', 'movedTo|d/g', 'moveSelf|d/g']);

    fs.copyFileSync('/bin/true', `${root}/d/t`);
    fs.chmodSync(`${root}/d/t`, 0o755);
    assert.deepEqual(await step(1), ['create,attrib,modify,closeWrite,open|d/t']);
    execFileSync(`${root}/d/t`);
    const exec = await log.takeAtLeast(1);
    assert.equal(exec.length, 1);
    assert.ok(exec[0]!.names.includes('openExec'), `openExec in ${exec[0]!.names.join(',')}`);
    assert.notEqual(exec[0]!.pid, process.pid, 'the exec is reported for the child pid');

    fs.unlinkSync(`${root}/d/g`);
    const unlink = await log.takeAtLeast(2);
    // deleteSelf names the inode only (no parent, no name) and its handle is stale: the path
    // comes from the resolver's memory of that file id.
    assert.deepEqual(unlink.map((s) => brief(s, root)), ['deleteSelf,attrib|d/g', 'delete|d/g']);
    assert.deepEqual(unlink.map((s) => s.gone), [true, true]);
  });

  test('a directory rename moves cached paths, so later events resolve under the new name', async () => {
    fs.mkdirSync(`${root}/a/b`, { recursive: true });
    fs.writeFileSync(`${root}/a/b/x`, '1');
    await log.takeAtLeast(3);
    fs.renameSync(`${root}/a`, `${root}/z`);
    assert.deepEqual(await step(4), ['rename/|a->z', 'movedFrom/|a', 'movedTo/|z', 'moveSelf/|z']);
    // b's handle was cached as .../a/b: it must now resolve as .../z/b.
    fs.writeFileSync(`${root}/z/b/y`, '2');
    assert.deepEqual(await step(1), ['create,modify,closeWrite,open|z/b/y']);
  });

  test('deleted files and directories keep their paths (DFID + name)', async () => {
    fs.mkdirSync(`${root}/gone/sub`, { recursive: true });
    fs.writeFileSync(`${root}/gone/sub/file`, 'x');
    await log.takeAtLeast(3);
    // Everything is deleted before a single event is read: no handle can be opened any more.
    fs.rmSync(`${root}/gone`, { recursive: true });
    const seen = await log.takeAtLeast(5);
    const deletes = seen.filter((s) => s.names.includes('delete')).map((s) => brief(s, root));
    assert.deepEqual(deletes, ['delete|gone/sub/file', 'delete/|gone/sub', 'delete/|gone']);
    for (const s of seen.filter((x) => x.names.includes('delete'))) assert.equal(s.gone, true);
  });
});

describe('queue overflow', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });

  test('a full kernel queue arrives as an explicit overflow event', async () => {
    await withMaxQueuedEvents(16, async () => {
      const group = FanotifyGroup.open({ report: ['dfidNameTarget'], ignorePids: [] });
      try {
        group.mark(loop.fs.dir, { kind: 'filesystem', events: ['create'] });
        // 100 creates in one tick: nothing is read meanwhile, so 16 fit and the rest overflow.
        for (let i = 0; i < 100; i++) fs.writeFileSync(`${loop.fs.dir}/o${i}`, '');
        const log = new EventLog(group, loop.fs.dir);
        const seen = await log.takeAtLeast(17);
        log.close();
        const overflows = seen.filter((s) => s.type === 'overflow');
        assert.equal(overflows.length, 1, 'exactly one overflow event');
        assert.equal(seen.filter((s) => s.type === 'create').length, 16, 'the queue held 16 events');
      } finally {
        await group.close();
      }
    });
  });
});

describe('errors name the problem and the fix', { timeout: 30_000 }, () => {
  test('an unprivileged process is told it needs CAP_SYS_ADMIN', async () => {
    const url = new URL('../src/group.js', import.meta.url).href;
    const r = await runInChild(
      `const { FanotifyGroup } = await import(${JSON.stringify(url)});
       try { FanotifyGroup.open({ class: 'content' }); console.log('opened'); }
       catch (e) { console.log(JSON.stringify({ code: e.code, syscall: e.syscall, message: e.message })); }`,
      { uid: 65534, gid: 65534, module: true },
    );
    const out = JSON.parse(r.stdout.trim()) as { code: string; syscall: string; message: string };
    assert.equal(out.code, 'EPERM');
    assert.equal(out.syscall, 'fanotify_init');
    assert.match(out.message, /needs CAP_SYS_ADMIN: run as root/);
  });

  test('a pre-content group asking for file ids is refused with the reason', () => {
    assert.throws(
      () => FanotifyGroup.open({ class: 'preContent', report: ['fid'] }),
      (e: unknown) => e instanceof FanotifyError && e.code === 'EINVAL' && /cannot report file ids/.test(e.message),
    );
  });

  test('a mount mark with create events says to use a filesystem mark', () => {
    const group = FanotifyGroup.open({ report: ['dfidName'] });
    try {
      assert.throws(
        () => group.mark('/tmp', { kind: 'mount', events: ['create'] }),
        (e: unknown) => e instanceof FanotifyError && e.code === 'EINVAL' && /use a filesystem mark/.test(e.message),
      );
      assert.throws(
        () => group.mark('/nonexistent/path', { events: ['open'] }),
        (e: unknown) => e instanceof FanotifyError && e.code === 'ENOENT' && /does not exist/.test(e.message),
      );
      assert.throws(() => group.mark('/tmp', { events: ['bogus' as 'open'] }), /unknown fanotify event "bogus"/);
    } finally {
      void group.close();
    }
  });

  test('a reader that can no longer read says so through onReadFailure, not as a handler error', async () => {
    const dir = fs.mkdtempSync('/tmp/fan-readfail-');
    fs.writeFileSync(`${dir}/f`, 'x');
    // A buffer smaller than one event: the kernel refuses the read (EINVAL), the reader stops.
    const group = FanotifyGroup.open({ ignorePids: [], readBufferSize: 16 });
    try {
      group.mark(`${dir}/f`, { events: ['open'] });
      const failures: unknown[] = [];
      const errors: unknown[] = [];
      let events = 0;
      const failed = new Promise<void>((resolve) => {
        group.listen(() => void events++, {
          onError: (e) => {
            errors.push(e);
            resolve();
          },
          onReadFailure: (e) => {
            failures.push(e);
            resolve();
          },
        });
      });
      fs.readFileSync(`${dir}/f`);
      await failed;
      assert.equal(failures.length, 1);
      assert.equal((failures[0] as NodeJS.ErrnoException).code, 'EINVAL');
      assert.equal((failures[0] as NodeJS.ErrnoException).syscall, 'read');
      assert.deepEqual(errors, []);
      assert.equal(events, 0);
    } finally {
      await group.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the resolver never pins a mount', { timeout: 30_000 }, () => {
  test('a filesystem whose paths were resolved can be unmounted at once (no EBUSY)', async () => {
    const loop = await createLoopFs({ fstype: 'ext4' });
    const group = FanotifyGroup.open({ report: ['dfidNameTarget'], ignorePids: [] });
    try {
      group.mark(loop.dir, { kind: 'filesystem', events: ['create'], onDir: true });
      const log = new EventLog(group, loop.dir);
      fs.mkdirSync(`${loop.dir}/sub`);
      fs.writeFileSync(`${loop.dir}/sub/f`, '');
      const seen = await log.takeAtLeast(2);
      assert.deepEqual(seen.map((s) => brief(s, loop.dir)), ['create/|sub', 'create|sub/f']);
      // A plain umount (not lazy) must succeed while the group and resolver are alive.
      await execCmd('umount', [loop.dir]);
      log.close();
    } finally {
      await group.close();
      await loop.cleanup();
    }
  });
});
