/**
 * Tests of the test harness itself: loop filesystems mount and vanish again,
 * sysctls are restored, children report errno codes, deadlines fire.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs, mountEntry, requireRoot, useLoopFs, type FsType } from './helpers/loopfs.js';
import { deadline, execCmd, openInChild, runInChild, withMaxQueuedEvents } from './helpers/proc.js';

requireRoot();

const MAX_QUEUED = '/proc/sys/fs/fanotify/max_queued_events';

async function assertGone(fs: { dir: string; image?: string }): Promise<void> {
  assert.equal(mountEntry(fs.dir), undefined, `${fs.dir} is still in /proc/self/mounts`);
  if (fs.image !== undefined) {
    const { stdout } = await execCmd('losetup', ['-j', fs.image]);
    assert.equal(stdout.trim(), '', `loop device still attached to ${fs.image}`);
  }
  assert.equal(existsSync(fs.dir), false, `${fs.dir} still exists`);
}

describe('createLoopFs', () => {
  for (const fstype of ['ext4', 'xfs', 'btrfs', 'tmpfs'] as const satisfies readonly FsType[]) {
    test(`${fstype}: mounts, is writable, and is gone after cleanup()`, { timeout: 120_000 }, async () => {
      const fs = await createLoopFs({ fstype });
      try {
        assert.equal(fs.fstype, fstype);
        const entry = mountEntry(fs.dir);
        assert.ok(entry, `${fs.dir} not in /proc/self/mounts`);
        assert.equal(entry.fstype, fstype);
        const { stdout } = await execCmd('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', fs.dir]);
        assert.equal(stdout.trim(), fstype);
        if (fstype === 'tmpfs') {
          assert.equal(fs.image, undefined);
          assert.equal(fs.device, undefined);
        } else {
          assert.ok(fs.image !== undefined && existsSync(fs.image));
          assert.match(fs.device ?? '', /^\/dev\/loop\d+$/);
          assert.equal(entry.source, fs.device);
        }
        await writeFile(`${fs.dir}/hello.txt`, 'hello loop\n');
        assert.equal(await readFile(`${fs.dir}/hello.txt`, 'utf8'), 'hello loop\n');
      } finally {
        await fs.cleanup();
      }
      await assertGone(fs);
    });
  }

  test('directIo: the loop device bypasses the host page cache (dio 1), the default does not', { timeout: 120_000 }, async () => {
    for (const directIo of [true, false]) {
      const fs = await createLoopFs({ directIo });
      try {
        const dev = (fs.device ?? '').replace('/dev/', '');
        assert.equal((await readFile(`/sys/block/${dev}/loop/dio`, 'utf8')).trim(), directIo ? '1' : '0');
        assert.equal(mountEntry(fs.dir)?.source, fs.device);
        await writeFile(`${fs.dir}/hello.txt`, 'hello disk\n');
        assert.equal(await readFile(`${fs.dir}/hello.txt`, 'utf8'), 'hello disk\n');
      } finally {
        await fs.cleanup();
      }
      await assertGone(fs);
    }
  });

  test('cleanup() twice (and concurrently) is fine', { timeout: 60_000 }, async () => {
    const fs = await createLoopFs();
    await Promise.all([fs.cleanup(), fs.cleanup()]);
    await fs.cleanup();
    await assertGone(fs);
  });

  test('cleanup() unmounts while a file on it is still open (retry, then lazy)', { timeout: 60_000 }, async () => {
    const fs = await createLoopFs();
    const fh = await open(`${fs.dir}/busy`, 'w');
    try {
      await fs.cleanup();
      assert.equal(mountEntry(fs.dir), undefined);
      assert.equal(existsSync(fs.dir), false);
    } finally {
      await fh.close();
    }
    // Once the last reference is gone the (autoclear) loop device detaches.
    const image = fs.image ?? '';
    await deadline(
      (async () => {
        while ((await execCmd('losetup', ['-a'])).stdout.includes(image)) await sleep(100);
      })(),
      10_000,
      `loop device of ${image} to detach`,
    );
  });
});

describe('useLoopFs', () => {
  const holder = useLoopFs({ fstype: 'ext4', sizeMiB: 64 });
  // Read while the suite is being declared, i.e. before its before() hook ran.
  let early: unknown;
  try {
    early = holder.fs;
  } catch (err) {
    early = err;
  }

  test('the holder throws a clear error before the before() hook ran', { timeout: 5_000 }, () => {
    assert.ok(early instanceof Error);
    assert.match(early.message, /useLoopFs\(ext4\): the filesystem is not mounted/);
  });

  test('provides the mounted fs inside tests', { timeout: 5_000 }, () => {
    assert.equal(mountEntry(holder.fs.dir)?.fstype, 'ext4');
  });
});

describe('withMaxQueuedEvents', () => {
  test('sets the value during fn and restores it after', { timeout: 10_000 }, async () => {
    const before = (await readFile(MAX_QUEUED, 'utf8')).trim();
    const during = await withMaxQueuedEvents(37, async () => (await readFile(MAX_QUEUED, 'utf8')).trim());
    assert.equal(during, '37');
    assert.equal((await readFile(MAX_QUEUED, 'utf8')).trim(), before);
  });

  test('restores the value when fn throws', { timeout: 10_000 }, async () => {
    const before = (await readFile(MAX_QUEUED, 'utf8')).trim();
    await assert.rejects(
      withMaxQueuedEvents(41, async () => {
        assert.equal((await readFile(MAX_QUEUED, 'utf8')).trim(), '41');
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal((await readFile(MAX_QUEUED, 'utf8')).trim(), before);
  });
});

describe('openInChild', () => {
  const holder = useLoopFs({ fstype: 'tmpfs' });

  test('missing file: ENOENT', { timeout: 15_000 }, async () => {
    const r = await openInChild(`${holder.fs.dir}/does-not-exist`);
    assert.equal(r.ok, false);
    assert.equal(r.code, 'ENOENT');
    assert.ok(r.pid > 0 && r.pid !== process.pid);
  });

  test('reads the file and reports the pid via onSpawn', { timeout: 15_000 }, async () => {
    await writeFile(`${holder.fs.dir}/data`, 'x'.repeat(70_000));
    let spawned = 0;
    const r = await openInChild(`${holder.fs.dir}/data`, { read: true, onSpawn: (pid) => (spawned = pid) });
    assert.equal(r.ok, true);
    assert.equal(r.code, null);
    assert.equal(r.data, 'x'.repeat(65_536));
    assert.equal(spawned, r.pid);
  });

  test('as another uid: EACCES on a root-only file', { timeout: 15_000 }, async () => {
    await writeFile(`${holder.fs.dir}/secret`, 's', { mode: 0o600 });
    const r = await openInChild(`${holder.fs.dir}/secret`, { uid: 65534 });
    assert.deepEqual({ ok: r.ok, code: r.code }, { ok: false, code: 'EACCES' });
  });

  test('write flag creates the file', { timeout: 15_000 }, async () => {
    const r = await openInChild(`${holder.fs.dir}/new`, { flags: 'w' });
    assert.equal(r.ok, true);
    assert.ok(existsSync(`${holder.fs.dir}/new`));
  });
});

describe('runInChild', () => {
  test('returns exit code and output', { timeout: 15_000 }, async () => {
    const r = await runInChild('console.log(process.argv[1]); console.error("e"); process.exit(3)', {
      args: ['hi'],
    });
    assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 3, stdout: 'hi\n', stderr: 'e\n' });
  });

  test('kills a hung child at the deadline', { timeout: 15_000 }, async () => {
    let pid = 0;
    await assert.rejects(
      runInChild('setInterval(() => {}, 1000)', { timeoutMs: 300, onSpawn: (p) => (pid = p) }),
      /^Error: deadline: runInChild script did not finish within 300 ms/,
    );
    assert.ok(pid > 0);
    const gone = (): boolean => {
      try {
        process.kill(pid, 0);
        return false;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code === 'ESRCH';
      }
    };
    await deadline(
      (async () => {
        while (!gone()) await sleep(50);
      })(),
      5_000,
      `killed child ${pid} to disappear`,
    );
  });
});

describe('deadline', () => {
  test('rejects a never-settling promise with the message', { timeout: 5_000 }, async () => {
    await assert.rejects(deadline(new Promise<never>(() => {}), 50, 'the void'), {
      message: 'deadline: the void did not finish within 50 ms',
    });
  });

  test('passes through a value that arrives in time', { timeout: 5_000 }, async () => {
    assert.equal(await deadline(Promise.resolve(7), 1_000, 'seven'), 7);
  });
});

describe('execCmd', () => {
  test('a missing command fails with ENOENT', { timeout: 5_000 }, async () => {
    await assert.rejects(execCmd('definitely-not-a-command-fan', []), { code: 'ENOENT' });
  });
});
