/**
 * Permission and pre-content events as a real child process sees them: exact errnos, the
 * deadline, a throwing handler, close, and the pre-content range record.
 * Blocking marks go only on loop-mounted images; every wait has a deadline.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { FanotifyGroup, isPermissionEvent, type GroupEvent, type PermissionEvent } from '../src/group.js';
import { FanotifyError } from '../src/errors.js';
import { createLoopFs, useLoopFs, requireRoot, type LoopFs } from './helpers/loopfs.js';
import { openInChild, runInChild, deadline } from './helpers/proc.js';

requireRoot();

/** A group guarding `dir` for open permission, with a handler the test swaps. */
function guard(
  dir: string,
  options: Parameters<typeof FanotifyGroup.open>[0],
  handler: (ev: PermissionEvent) => void | Promise<void>,
  events: ('openPerm' | 'preAccess')[] = ['openPerm'],
): FanotifyGroup {
  const group = FanotifyGroup.open(options);
  group.mark(dir, { kind: 'filesystem', events });
  group.listen((ev: GroupEvent) => (isPermissionEvent(ev) ? handler(ev) : undefined), { onError: () => {} });
  return group;
}

describe('permission events (class content) on ext4', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  let file: string;
  before(() => {
    file = `${loop.fs.dir}/secret`;
    fs.writeFileSync(file, 'payload');
  });

  test('allow lets the child read; deny gives it EPERM', async () => {
    let verdict: 'allow' | 'deny' = 'allow';
    const seen: number[] = [];
    const group = guard(loop.fs.dir, { class: 'content' }, (ev) => {
      seen.push(ev.pid);
      if (verdict === 'allow') ev.allow();
      else ev.deny();
    });
    try {
      const ok = await openInChild(file, { read: true });
      assert.deepEqual({ ok: ok.ok, code: ok.code, data: ok.data }, { ok: true, code: null, data: 'payload' });
      assert.ok(seen.includes(ok.pid), 'the event came from the child pid');
      verdict = 'deny';
      const denied = await openInChild(file);
      assert.deepEqual({ ok: denied.ok, code: denied.code }, { ok: false, code: 'EPERM' });
    } finally {
      await group.close();
    }
  });

  test('deny with an errno needs a pre-content group, and says so', async () => {
    let thrown: unknown;
    const group = guard(loop.fs.dir, { class: 'content' }, (ev) => {
      try {
        ev.deny('EIO');
      } catch (err) {
        thrown = err;
        ev.deny();
      }
    });
    try {
      const r = await openInChild(file);
      assert.equal(r.code, 'EPERM');
      assert.ok(thrown instanceof RangeError);
      assert.match((thrown as Error).message, /needs a pre-content group/);
    } finally {
      await group.close();
    }
  });

  test('a second answer is a no-op', async () => {
    const results: boolean[] = [];
    const group = guard(loop.fs.dir, { class: 'content' }, (ev) => {
      results.push(ev.answered, ev.allow(), ev.answered, ev.deny(), ev.allow());
    });
    try {
      const r = await openInChild(file, { read: true });
      assert.equal(r.ok, true);
      assert.deepEqual(results, [false, true, true, false, false]);
    } finally {
      await group.close();
    }
  });

  test('an unanswered event gets the default verdict when the deadline passes', async () => {
    const held: PermissionEvent[] = [];
    const group = guard(loop.fs.dir, { class: 'content', timeoutMs: 300, defaultVerdict: 'deny' }, (ev) => {
      held.push(ev);
      return new Promise(() => {}); // a handler that hangs forever
    });
    try {
      const t0 = Date.now();
      const r = await openInChild(file, { timeoutMs: 5000 });
      const elapsed = Date.now() - t0;
      assert.equal(r.code, 'EPERM');
      assert.ok(elapsed >= 290, `waited ${elapsed} ms, deadline is 300`);
      assert.ok(elapsed < 3000, `waited ${elapsed} ms`);
      assert.equal(held.length, 1);
      assert.equal(held[0]!.answered, true);
      assert.equal(held[0]!.allow(), false, 'a late answer is a no-op');
    } finally {
      await group.close();
    }
  });

  test('a throwing handler answers with the default verdict at once', async () => {
    const group = guard(loop.fs.dir, { class: 'content', timeoutMs: 10_000, defaultVerdict: 'deny' }, () => {
      throw new Error('handler bug');
    });
    try {
      const t0 = Date.now();
      const r = await openInChild(file);
      assert.equal(r.code, 'EPERM');
      assert.ok(Date.now() - t0 < 5000, 'not by the 10 s deadline');
    } finally {
      await group.close();
    }
  });

  test('a rejecting async handler answers with the default verdict', async () => {
    const group = guard(loop.fs.dir, { class: 'content', timeoutMs: 10_000, defaultVerdict: 'allow' }, async () => {
      await new Promise((r) => setTimeout(r, 20));
      throw new Error('async handler bug');
    });
    try {
      const r = await openInChild(file, { read: true });
      assert.deepEqual([r.ok, r.data], [true, 'payload']);
    } finally {
      await group.close();
    }
  });

  test('close answers every pending event with the default verdict', async () => {
    let sawEvent!: () => void;
    const arrived = new Promise<void>((r) => (sawEvent = r));
    const group = guard(loop.fs.dir, { class: 'content', timeoutMs: 60_000, defaultVerdict: 'deny' }, () => {
      sawEvent();
      return new Promise(() => {}); // held, never answered
    });
    const child = openInChild(file, { timeoutMs: 10_000 });
    await deadline(arrived, 5000, 'the open permission event');
    assert.equal(group.pendingCount, 1);
    await group.close();
    const r = await child;
    assert.equal(r.code, 'EPERM', 'answered with the configured default, not the kernel release ALLOW');
    assert.equal(group.pendingCount, 0);
  });

  test('our own accesses are allowed at once and never reach the handler', async () => {
    let calls = 0;
    const group = guard(loop.fs.dir, { class: 'content', defaultVerdict: 'deny' }, (ev) => {
      calls++;
      ev.deny();
    });
    try {
      // Async I/O: a synchronous open would block the thread that must answer it.
      const data = await deadline(fs.promises.readFile(file, 'utf8'), 5000, 'own read');
      assert.equal(data, 'payload');
      assert.equal(calls, 0);
    } finally {
      await group.close();
    }
  });

  test('many concurrent opens are each answered exactly once', async () => {
    let answered = 0;
    const group = guard(loop.fs.dir, { class: 'content' }, async (ev) => {
      await new Promise((r) => setTimeout(r, Math.random() * 5));
      if (ev.allow()) answered++;
    });
    try {
      const script = `const fs = require('node:fs');
        for (let i = 0; i < 100; i++) fs.closeSync(fs.openSync(process.argv[1], 'r'));
        console.log('done');`;
      const runs = await Promise.all(Array.from({ length: 8 }, () => runInChild(script, { args: [file], timeoutMs: 20_000 })));
      for (const r of runs) assert.equal(r.stdout.trim(), 'done', r.stderr);
      assert.equal(answered, 800);
      assert.equal(group.pendingCount, 0);
    } finally {
      await group.close();
    }
  });
});

describe('pre-content events', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  let file: string;
  before(() => {
    file = `${loop.fs.dir}/big`;
    fs.writeFileSync(file, Buffer.alloc(64 * 1024, 0x61));
  });

  test('FAN_PRE_ACCESS carries the page-aligned range being read', async () => {
    const ranges: { offset: number; count: number }[] = [];
    const group = guard(
      loop.fs.dir,
      { class: 'preContent' },
      (ev) => {
        if (ev.type === 'preAccess' && ev.range) ranges.push(ev.range);
        ev.allow();
      },
      ['preAccess'],
    );
    try {
      const r = await runInChild(
        `const fs = require('node:fs'); const fd = fs.openSync(process.argv[1], 'r');
         const b = Buffer.alloc(100); const n = fs.readSync(fd, b, 0, 100, 8192 + 10);
         console.log(n, b.toString('latin1', 0, 3));`,
        { args: [file] },
      );
      assert.equal(r.stdout.trim(), '100 aaa');
      const hit = ranges.find((g) => g.offset <= 8202 && g.offset + g.count >= 8302);
      assert.ok(hit, `a range covers 8202..8302: ${JSON.stringify(ranges)}`);
      assert.equal(hit.offset % 4096, 0, 'page aligned offset');
    } finally {
      await group.close();
    }
  });

  test('deny(EIO) reaches the reader as EIO', async () => {
    const group = guard(loop.fs.dir, { class: 'preContent' }, (ev) => void ev.deny('EIO'), ['preAccess']);
    try {
      const r = await openInChild(file, { read: true });
      assert.deepEqual([r.ok, r.code], [false, 'EIO']);
    } finally {
      await group.close();
    }
  });

  test('deny rejects errnos the kernel would refuse', async () => {
    let thrown: unknown;
    const group = guard(loop.fs.dir, { class: 'preContent' }, (ev) => {
      try {
        ev.deny('ENOENT' as 'EIO');
      } catch (err) {
        thrown = err;
      }
      ev.deny('EBUSY');
    }, ['preAccess']);
    try {
      const r = await openInChild(file, { read: true });
      assert.equal(r.code, 'EBUSY');
      assert.ok(thrown instanceof RangeError);
      assert.match((thrown as Error).message, /accepts only EPERM, EIO/);
    } finally {
      await group.close();
    }
  });

  test('tmpfs refuses pre-content marks with a message naming the filesystem', async () => {
    let tmp: LoopFs | undefined;
    const group = FanotifyGroup.open({ class: 'preContent' });
    try {
      tmp = await createLoopFs({ fstype: 'tmpfs' });
      const dir = tmp.dir;
      assert.throws(
        () => group.mark(dir, { kind: 'filesystem', events: ['preAccess'] }),
        (e: unknown) =>
          e instanceof FanotifyError &&
          e.code === 'EOPNOTSUPP' &&
          e.message === `fanotify_mark: ext4/xfs/btrfs required for pre-content marks; ${dir} is tmpfs`,
      );
    } finally {
      await group.close();
      await tmp?.cleanup();
    }
  });
});

describe('group lifecycle', { timeout: 30_000 }, () => {
  let loop: LoopFs;
  before(async () => {
    loop = await createLoopFs({ fstype: 'ext4' });
  });
  after(async () => loop.cleanup());

  test('iterating delivers events and breaking out closes the group', async () => {
    const group = FanotifyGroup.open({ report: ['dfidName'], ignorePids: [] });
    group.mark(loop.dir, { kind: 'filesystem', events: ['create'] });
    fs.writeFileSync(`${loop.dir}/it`, '');
    for await (const ev of group) {
      assert.equal(ev.type, 'create');
      assert.equal(ev.entry?.name, 'it');
      break;
    }
    assert.equal(group.closed, true);
    assert.throws(() => group.mark(loop.dir, { events: ['open'] }), /closed/);
  });

  test('a group delivers to one consumer only', () => {
    const group = FanotifyGroup.open({});
    try {
      group.listen(() => {});
      assert.throws(() => group.listen(() => {}), /already delivers events/);
    } finally {
      void group.close();
    }
  });
});
