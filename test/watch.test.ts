/**
 * watch() on real loop filesystems: every rule of the watch service.
 */
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { watch, type WatchEvent } from '../src/watch/index.js';
import { native } from '../src/native.js';
import { FanotifyError } from '../src/errors.js';
import { useLoopFs, requireRoot, createLoopFs } from './helpers/loopfs.js';
import { withMaxQueuedEvents, runInChild, execCmd } from './helpers/proc.js';
import { WatchLog, short } from './helpers/watch.js';

requireRoot();

/** Every fanotify group fd of this process with its fdinfo text. */
function fanotifyFdInfo(): { fd: number; info: string }[] {
  const out: { fd: number; info: string }[] = [];
  for (const name of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${name}`) === 'anon_inode:[fanotify]') {
        out.push({ fd: Number(name), info: fs.readFileSync(`/proc/self/fdinfo/${name}`, 'utf8') });
      }
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

describe('watch rules on ext4', { timeout: 120_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 512 });
  let n = 0;
  /**
   * A fresh root directory and a subscription on it; `existing` makes entries before the watch
   * starts (nothing has named them to it).
   */
  const setup = async (
    options: Parameters<typeof watch>[1] = {},
    existing: (root: string) => void = () => {},
  ): Promise<{ root: string; log: WatchLog; close: () => Promise<void> }> => {
    const root = `${loop.fs.dir}/case${n++}`;
    fs.mkdirSync(root);
    existing(root);
    const sub = watch(root, { debounceMs: 20, ...options });
    const info = await sub.ready;
    assert.equal(info.backend, 'fanotify');
    return { root, log: new WatchLog(sub), close: () => sub.close() };
  };

  test('ready says which backend and how fast', async () => {
    const root = `${loop.fs.dir}/ready`;
    fs.mkdirSync(root);
    const sub = watch(root);
    const seen: unknown[] = [];
    sub.on('ready', (i) => seen.push(i));
    const info = await sub.ready;
    assert.deepEqual(info.roots, [root]);
    assert.equal(info.backend, 'fanotify');
    assert.ok(info.readyMs >= 0 && info.readyMs < 1000, `readyMs ${info.readyMs}`);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(seen, [info]);
    await sub.close();
  });

  test('create, update, delete of files and directories', async () => {
    const { root, log, close } = await setup();
    try {
      fs.writeFileSync(`${root}/a`, '1');
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create a']);
      fs.appendFileSync(`${root}/a`, '2');
      const [written] = await log.take(1);
      assert.deepEqual([short(written!, root), 'attribOnly' in written!], ['update a', false]);
      fs.chmodSync(`${root}/a`, 0o600);
      const [chmodded] = await log.take(1);
      assert.deepEqual([short(chmodded!, root), (chmodded as { attribOnly?: boolean }).attribOnly], ['update a', true]);
      fs.mkdirSync(`${root}/d`);
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create d/']);
      fs.unlinkSync(`${root}/a`);
      fs.rmdirSync(`${root}/d`);
      assert.deepEqual((await log.take(2)).map((e) => short(e, root)), ['delete a', 'delete d/']);
    } finally {
      await close();
    }
  });

  test('events carry path, isDir and time', async () => {
    const { root, log, close } = await setup();
    try {
      const t0 = Date.now();
      fs.mkdirSync(`${root}/x`);
      const [ev] = await log.take(1);
      assert.equal(ev?.type, 'create');
      assert.equal(ev?.path, `${root}/x`);
      assert.equal(ev?.isDir, true);
      assert.ok(ev!.time >= t0 - 5 && ev!.time <= Date.now(), `time ${ev?.time}`);
    } finally {
      await close();
    }
  });

  test('merged masks: create+write+delete in one burst yields nothing; delete+recreate is an update', async () => {
    const { root, log, close } = await setup();
    try {
      fs.writeFileSync(`${root}/keep`, '0');
      await log.take(1);
      // One synchronous burst: the kernel merges CREATE|MODIFY|CLOSE_WRITE|DELETE of the file.
      fs.writeFileSync(`${root}/tmp`, 'x');
      fs.unlinkSync(`${root}/tmp`);
      fs.unlinkSync(`${root}/keep`);
      fs.writeFileSync(`${root}/keep`, '1');
      fs.writeFileSync(`${root}/marker`, '');
      assert.deepEqual((await log.take(2)).map((e) => short(e, root)), ['update keep', 'create marker']);
    } finally {
      await close();
    }
  });

  test('a rename within the root is one event, for files and directories', async () => {
    const { root, log, close } = await setup();
    try {
      fs.mkdirSync(`${root}/d/e`, { recursive: true });
      fs.writeFileSync(`${root}/d/e/f`, '');
      await log.take(3);
      fs.renameSync(`${root}/d/e/f`, `${root}/d/g`);
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['rename d/e/f->d/g']);
      fs.renameSync(`${root}/d`, `${root}/D`);
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['rename d->D/']);
      // The cache was fixed: later events below the renamed directory use the new path.
      fs.writeFileSync(`${root}/D/e/new`, '');
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create D/e/new']);
    } finally {
      await close();
    }
  });

  test('fileIds: creates, updates and renames carry the file id of their object; deletes and other watches none', async () => {
    const { root, log, close } = await setup({ fileIds: true });
    const plain = watch(root, { debounceMs: 20 });
    const plainLog = new WatchLog(plain);
    await plain.ready;
    /** The handle name_to_handle_at gives for a path, as the event's id must hold it. */
    const handleOf = (p: string): string => {
      const h = native.nameToHandle(-100, p, 0);
      return `${h.handleType}:${h.handle.toString('hex')}`;
    };
    const idOf = (ev: WatchEvent | undefined): string | undefined => {
      const id = ev && 'fileId' in ev ? ev.fileId : undefined;
      return id && `${id.handleType}:${id.handle.toString('hex')}`;
    };
    try {
      fs.mkdirSync(`${root}/d`);
      fs.writeFileSync(`${root}/d/f`, '1');
      const made = await log.take(2);
      assert.deepEqual(made.map((e) => [short(e, root), idOf(e)]), [
        ['create d/', handleOf(`${root}/d`)],
        ['create d/f', handleOf(`${root}/d/f`)],
      ]);
      fs.chmodSync(`${root}/d/f`, 0o600);
      const f = handleOf(`${root}/d/f`);
      assert.deepEqual((await log.take(1)).map((e) => [short(e, root), idOf(e)]), [['update d/f', f]]);
      fs.renameSync(`${root}/d/f`, `${root}/g`);
      assert.deepEqual((await log.take(1)).map((e) => [short(e, root), idOf(e)]), [['rename d/f->g', f]]);
      // Replaced within one window: the update names the new object.
      fs.unlinkSync(`${root}/g`);
      fs.writeFileSync(`${root}/g`, '2');
      assert.deepEqual((await log.take(1)).map((e) => [short(e, root), idOf(e)]), [['update g', handleOf(`${root}/g`)]]);
      fs.unlinkSync(`${root}/g`);
      assert.deepEqual((await log.take(1)).map((e) => [short(e, root), 'fileId' in e]), [['delete g', false]]);
      // A subscription that did not ask has no such field, on the same kernel events.
      const plainEvents = await plainLog.take(6);
      assert.ok(plainEvents.length >= 6 && plainEvents.every((e) => !('fileId' in e)), plainEvents.map((e) => short(e, root)).join(', '));
    } finally {
      await plain.close();
      await close();
    }
  });

  test('renamed back and forth before the reader runs: the rename the kernel merged away is reported, for directories and files', async () => {
    // The kernel merges a rename into an identical one still queued: s->p, p->s, s->p arrive as
    // two events. Without the check the watcher ends with the directory at s, and every later
    // event below it is named under s.
    const { root, log, close } = await setup({ coalesce: false });
    try {
      fs.mkdirSync(`${root}/s`);
      await log.take(1);
      // Synchronous: nothing is read until the loop ends, so every event is still queued.
      for (let i = 0; i < 3; i++) {
        fs.renameSync(`${root}/s`, `${root}/p`);
        fs.writeFileSync(`${root}/p/f${i}`, '');
        fs.renameSync(`${root}/p`, `${root}/s`);
      }
      fs.renameSync(`${root}/s`, `${root}/p`);
      const got = (await log.take(6)).map((e) => short(e, root));
      assert.deepEqual(got.filter((e) => e.startsWith('rename')), ['rename s->p/', 'rename p->s/', 'rename s->p/']);
      fs.writeFileSync(`${root}/p/after`, '');
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create p/after']);
      // Files too.
      fs.writeFileSync(`${root}/a`, '');
      await log.take(1);
      for (let i = 0; i < 3; i++) {
        fs.renameSync(`${root}/a`, `${root}/b`);
        fs.renameSync(`${root}/b`, `${root}/a`);
      }
      fs.renameSync(`${root}/a`, `${root}/b`);
      assert.deepEqual((await log.take(3)).map((e) => short(e, root)), ['rename a->b', 'rename b->a', 'rename a->b']);
    } finally {
      await close();
    }
  });

  test('a directory moved into a tree deleted in the same burst leaves a new directory at its old path named right', async () => {
    // The rename into q is named only after q's delete, later in the read batch. Naming it then
    // must not move what the cache learnt meanwhile: the new s (and s/a) would be named q/s.
    // q exists before the watch, so its handle is not cached: it is named only by its delete.
    const { root, log, close } = await setup({ coalesce: false }, (r) => {
      fs.mkdirSync(`${r}/q/d`, { recursive: true });
      fs.mkdirSync(`${r}/s`);
    });
    try {
      // Synchronous: all of it is queued before the first read.
      fs.renameSync(`${root}/s`, `${root}/q/s`);
      fs.renameSync(`${root}/q/d`, `${root}/t`); // moved out before q goes: lives on at t
      fs.rmSync(`${root}/q`, { recursive: true });
      fs.mkdirSync(`${root}/s`);
      fs.writeFileSync(`${root}/s/a`, '');
      fs.writeFileSync(`${root}/t/x`, '');
      // q/d's source is unnamed when read (q is gone): it is reported as moved in, with contents.
      const got = (await log.take(8)).map((e) => short(e, root));
      assert.deepEqual(got, ['rename s->q/s/', 'create t/', 'create t/x', 'delete q/s/', 'delete q/', 'create s/', 'create s/a', 'create t/x']);
      fs.writeFileSync(`${root}/s/b`, '');
      fs.writeFileSync(`${root}/t/y`, '');
      assert.deepEqual((await log.take(2)).map((e) => short(e, root)), ['create s/b', 'create t/y']);
    } finally {
      await close();
    }
  });

  test('a directory first named by a handle opened after later moves is not moved again by them', async () => {
    // p/p is not cached when `mv s p/p/q` is read, so its handle is opened: it is at s/p by
    // then. The rename must not move that present path (s/p → s/p/q/p) as if it were old.
    const { root, log, close } = await setup({ coalesce: false }, (r) => {
      fs.mkdirSync(`${r}/p/p`, { recursive: true });
      fs.mkdirSync(`${r}/s`);
    });
    try {
      // Synchronous: both are queued before the first read.
      fs.renameSync(`${root}/s`, `${root}/p/p/q`);
      fs.renameSync(`${root}/p`, `${root}/s`);
      assert.deepEqual((await log.take(2)).map((e) => short(e, root)), ['rename s->s/p/q/', 'rename p->s/']);
      fs.writeFileSync(`${root}/s/p/b`, '');
      fs.writeFileSync(`${root}/s/p/q/c`, '');
      assert.deepEqual((await log.take(2)).map((e) => short(e, root)), ['create s/p/b', 'create s/p/q/c']);
    } finally {
      await close();
    }
  });

  test('a directory moved in is created with its contents; moved out is deleted', async () => {
    const { root, log, close } = await setup();
    const outside = `${loop.fs.dir}/outside${n}`;
    try {
      fs.mkdirSync(`${outside}/pkg/lib`, { recursive: true });
      fs.writeFileSync(`${outside}/pkg/index.js`, '');
      fs.writeFileSync(`${outside}/pkg/lib/util.js`, '');
      fs.renameSync(`${outside}/pkg`, `${root}/pkg`);
      const got = (await log.take(4)).map((e) => short(e, root)).sort();
      assert.deepEqual(got, ['create pkg/', 'create pkg/index.js', 'create pkg/lib/', 'create pkg/lib/util.js']);
      fs.renameSync(`${root}/pkg`, `${outside}/back`);
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['delete pkg/']);
      fs.writeFileSync(`${outside}/back/ignored-now`, '');
      fs.writeFileSync(`${root}/after`, '');
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create after']);
    } finally {
      await close();
    }
  });

  test('a file created right after its new directory is never missed (1,000 directories)', async () => {
    const { root, log, close } = await setup();
    try {
      for (let i = 0; i < 1000; i++) {
        fs.mkdirSync(`${root}/d${i}`);
        fs.writeFileSync(`${root}/d${i}/f`, 'x');
      }
      const events = await log.take(2000, 300, 20_000);
      const creates = new Set(events.filter((e) => e.type === 'create').map((e) => e.path));
      for (let i = 0; i < 1000; i++) {
        assert.ok(creates.has(`${root}/d${i}`), `create d${i}`);
        assert.ok(creates.has(`${root}/d${i}/f`), `create d${i}/f`);
      }
      assert.equal(creates.size, 2000);
    } finally {
      await close();
    }
  });

  test('ignored paths and globs report nothing, and the kernel is told to stop sending them', async () => {
    const { root, log, close } = await setup({ ignore: ['node_modules', '**/*.log'] });
    try {
      fs.mkdirSync(`${root}/node_modules/dep`, { recursive: true });
      fs.writeFileSync(`${root}/node_modules/dep/index.js`, '');
      fs.writeFileSync(`${root}/debug.log`, '');
      fs.writeFileSync(`${root}/src.js`, '');
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create src.js']);
      // An evictable inode ignore mark now sits on node_modules (and on node_modules/dep).
      const nm = fs.statSync(`${root}/node_modules`).ino.toString(16);
      const dep = fs.statSync(`${root}/node_modules/dep`).ino.toString(16);
      const marks = fanotifyFdInfo().flatMap((g) => g.info.split('\n'));
      const ignoreMarkOn = (ino: string): boolean =>
        marks.some((l) => new RegExp(`^fanotify ino:${ino} .*ignored_mask:(?!0\\b)[0-9a-f]+`).test(l));
      assert.ok(ignoreMarkOn(nm), `ignore mark on node_modules (ino ${nm}):\n${marks.join('\n')}`);
      assert.ok(ignoreMarkOn(dep), `ignore mark on node_modules/dep (ino ${dep})`);
      for (let i = 0; i < 50; i++) fs.writeFileSync(`${root}/node_modules/dep/f${i}`, '');
      fs.writeFileSync(`${root}/visible`, '');
      assert.deepEqual((await log.take(1)).map((e) => short(e, root)), ['create visible']);
    } finally {
      await close();
    }
  });

  test('several roots on one filesystem share one group', async () => {
    const dev = fs.statSync(loop.fs.dir).dev;
    // fdinfo lists a filesystem mark as "fanotify sdev:<dev> …" (dev in the kernel's encoding).
    const kdev = (((dev >> 8) & 0xfff) << 20 | (dev & 0xff)).toString(16);
    const groupsMarking = (): number => fanotifyFdInfo().filter((g) => g.info.includes(`fanotify sdev:${kdev} `)).length;
    const a = await setup();
    const b = await setup();
    try {
      assert.equal(groupsMarking(), 1, 'one group with one filesystem mark serves both roots');
      fs.writeFileSync(`${a.root}/x`, '');
      fs.writeFileSync(`${b.root}/y`, '');
      assert.deepEqual((await a.log.take(1)).map((e) => short(e, a.root)), ['create x']);
      assert.deepEqual((await b.log.take(1)).map((e) => short(e, b.root)), ['create y']);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('iteration yields batches; breaking out closes the subscription', async () => {
    const root = `${loop.fs.dir}/iter`;
    fs.mkdirSync(root);
    const sub = watch(root, { debounceMs: 10 });
    await sub.ready;
    setTimeout(() => fs.writeFileSync(`${root}/it`, ''), 20);
    for await (const batch of sub) {
      assert.deepEqual(batch.map((e) => short(e, root)), ['create it']);
      break;
    }
    assert.equal(sub.closed, true);
  });

  test('the root being deleted ends the subscription with a rescan', async () => {
    const { root, log } = await setup();
    const closed = new Promise<void>((r) => log.sub.once('close', () => r()));
    fs.writeFileSync(`${root}/f`, '');
    fs.rmSync(root, { recursive: true });
    await closed;
    const events = log.events.map((e) => short(e, root));
    assert.equal(events.at(-1), 'rescan . root-deleted');
    assert.equal(log.sub.closed, true);
  });

  test('the root being moved ends the subscription with a rescan', async () => {
    const { root, log } = await setup();
    const closed = new Promise<void>((r) => log.sub.once('close', () => r()));
    fs.renameSync(root, `${root}-moved`);
    await closed;
    assert.deepEqual(log.events.map((e) => short(e, root)), ['rescan . root-moved']);
  });

  test('bad roots and options fail with clear errors', () => {
    assert.throws(() => watch(`${loop.fs.dir}/nope`), (e: unknown) => e instanceof FanotifyError && /no such directory/.test(e.message));
    fs.writeFileSync(`${loop.fs.dir}/plainfile`, '');
    assert.throws(() => watch(`${loop.fs.dir}/plainfile`), /is not a directory/);
    assert.throws(() => watch(loop.fs.dir, { backend: 'kqueue' }), /unknown backend "kqueue"; choose from auto, fanotify, fanotify-inode/);
    assert.throws(() => watch(loop.fs.dir, { ignore: ['.'] }), /would ignore the whole root/);
  });
});

describe('watch overflow', { timeout: 60_000 }, () => {
  test('a kernel queue overflow becomes a rescan for the root; autoRescan reports the differences', async () => {
    const loop = await createLoopFs({ fstype: 'ext4' });
    try {
      const root = `${loop.dir}/r`;
      fs.mkdirSync(root);
      fs.writeFileSync(`${root}/existing`, 'old');
      await withMaxQueuedEvents(16, async () => {
        const sub = watch(root, { debounceMs: 20, autoRescan: true });
        const log = new WatchLog(sub);
        await sub.ready;
        await new Promise((r) => setTimeout(r, 200)); // the autoRescan snapshot is taken after ready
        try {
          // 200 creates in one tick: nothing is read meanwhile, so the queue overflows.
          for (let i = 0; i < 200; i++) fs.writeFileSync(`${root}/f${i}`, '');
          fs.unlinkSync(`${root}/existing`);
          const events = await log.until((e) => e.filter((x) => x.type === 'create').length >= 200 && e.some((x) => x.type === 'delete'));
          const rescans = events.filter((e) => e.type === 'rescan');
          assert.equal(rescans.length, 1);
          assert.deepEqual(rescans.map((e) => short(e, root)), ['rescan . overflow']);
          const creates = new Set(events.filter((e) => e.type === 'create').map((e) => e.path));
          for (let i = 0; i < 200; i++) assert.ok(creates.has(`${root}/f${i}`), `f${i} reported by the rescan diff`);
          assert.ok(events.some((e) => e.type === 'delete' && e.path === `${root}/existing`));
        } finally {
          await sub.close();
        }
      });
    } finally {
      await loop.cleanup();
    }
  });
});

describe('watch when the filesystem goes away', { timeout: 60_000 }, () => {
  test('unmounting the root\'s filesystem ends the subscription with a rescan', async () => {
    const loop = await createLoopFs({ fstype: 'ext4' });
    try {
      const sub = watch(loop.dir, { debounceMs: 10 });
      const log = new WatchLog(sub);
      await sub.ready;
      const closed = new Promise<void>((r) => sub.once('close', () => r()));
      // The watcher holds nothing open on the filesystem: a plain umount succeeds.
      await execCmd('umount', [loop.dir]);
      await closed;
      assert.deepEqual(log.events.map((e) => short(e, loop.dir)), ['rescan . unmounted']);
    } finally {
      await loop.cleanup();
    }
  });
});

describe('unprivileged fallback', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  before(() => {
    // The mount point's parent is a private temp dir (0700): let the unprivileged user through.
    fs.chmodSync(`${loop.fs.dir}/..`, 0o755);
    fs.mkdirSync(`${loop.fs.dir}/user/deep/er`, { recursive: true });
    chownTree(`${loop.fs.dir}/user`);
  });

  test('a non-root process watches with per-directory inode marks and says so', async () => {
    const url = new URL('../src/watch/index.js', import.meta.url).href;
    const root = `${loop.fs.dir}/user`;
    const r = await runInChild(
      `import * as fs from 'node:fs';
       const { watch } = await import(${JSON.stringify(url)});
       const sub = watch(${JSON.stringify(root)}, { debounceMs: 20 });
       const info = await sub.ready;
       const seen = [];
       sub.on('events', (b) => seen.push(...b.map((e) => e.type + ' ' + (e.oldPath ? e.oldPath + '->' : '') + e.path)));
       fs.writeFileSync(${JSON.stringify(`${root}/deep/er/a`)}, 'x');
       fs.mkdirSync(${JSON.stringify(`${root}/new`)});
       fs.writeFileSync(${JSON.stringify(`${root}/new/b`)}, 'y');
       await new Promise((r) => setTimeout(r, 300));
       fs.renameSync(${JSON.stringify(`${root}/new/b`)}, ${JSON.stringify(`${root}/deep/c`)});
       await new Promise((r) => setTimeout(r, 300));
       await sub.close();
       console.log(JSON.stringify({ uid: process.getuid(), backend: info.backend, seen }));`,
      { uid: 65534, gid: 65534, module: true, timeoutMs: 20_000 },
    );
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { uid: number; backend: string; seen: string[] };
    assert.equal(out.uid, 65534);
    assert.equal(out.backend, 'fanotify-inode');
    assert.deepEqual(out.seen, [
      `create ${root}/deep/er/a`,
      `create ${root}/new`,
      `create ${root}/new/b`,
      `rename ${root}/new/b->${root}/deep/c`,
    ]);
  });

  test('backend "fanotify" without privilege fails with the reason', async () => {
    const url = new URL('../src/watch/index.js', import.meta.url).href;
    const r = await runInChild(
      `const { watch } = await import(${JSON.stringify(url)});
       try { watch(${JSON.stringify(`${loop.fs.dir}/user`)}, { backend: 'fanotify' }); console.log('watching'); }
       catch (e) { console.log(e.message); }`,
      { uid: 65534, gid: 65534, module: true },
    );
    assert.match(r.stdout, /needs CAP_SYS_ADMIN: run as root/);
  });
});

function chownTree(dir: string): void {
  const walk = (p: string): void => {
    fs.chownSync(p, 65534, 65534);
    if (fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) walk(`${p}/${e}`);
  };
  walk(dir);
}

