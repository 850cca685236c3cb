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
import { ResponseWriter } from '../src/responses.js';
import { responseWord } from '../src/kernel/encode.js';
import { createLoopFs, useLoopFs, requireRoot, type LoopFs } from './helpers/loopfs.js';
import { openInChild, runInChild, deadline, execCmd } from './helpers/proc.js';

requireRoot();

/**
 * Resolves once every pid is blocked in the kernel waiting for a permission answer (its wchan is
 * fanotify_handle_event), so that their events are queued; rejects after `ms`.
 */
async function blockedInFanotify(pids: readonly number[], ms = 10_000): Promise<void> {
  const waiting = (pid: number): boolean => {
    try {
      return fs.readFileSync(`/proc/${pid}/wchan`, 'utf8') === 'fanotify_handle_event';
    } catch {
      return false;
    }
  };
  await deadline(
    (async () => {
      while (!pids.every(waiting)) await new Promise((r) => setTimeout(r, 10));
    })(),
    ms,
    `processes ${pids.join(', ')} to wait on a permission event`,
  );
}

/** `n` children opening `paths[i]`; resolves with their pids once each has started. */
function openersOf(paths: readonly string[]): { pids: Promise<number[]>; results: Promise<Awaited<ReturnType<typeof openInChild>>[]> } {
  const spawned: Promise<number>[] = [];
  const results = paths.map((p) => {
    let onSpawn!: (pid: number) => void;
    spawned.push(new Promise<number>((r) => (onSpawn = r)));
    return openInChild(p, { onSpawn, timeoutMs: 20_000 });
  });
  return { pids: Promise.all(spawned), results: Promise.all(results) };
}

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

describe('several answers in one write', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  const names = ['a0', 'd1', 'a2', 'd3'];
  before(() => {
    for (const f of ['gate', ...names]) fs.writeFileSync(`${loop.fs.dir}/${f}`, f);
  });

  test('the answers of one read batch go out in one writev, each with its own verdict', async () => {
    // The reader stops while the gate's event is held (highWaterMark 1), so the four opens made
    // meanwhile are queued in the kernel and read in one batch once the gate is answered.
    let gateSeen!: () => void;
    const gateArrived = new Promise<void>((r) => (gateSeen = r));
    let openGate!: () => void;
    const gateOpen = new Promise<void>((r) => (openGate = r));
    const seen: string[] = [];
    const group = guard(loop.fs.dir, { class: 'content', highWaterMark: 1 }, (ev) => {
      const name = fs.readlinkSync(`/proc/self/fd/${ev.fd}`).slice(loop.fs.dir.length + 1);
      seen.push(name);
      if (name === 'gate') {
        gateSeen();
        return gateOpen.then(() => void ev.allow());
      }
      if (name.startsWith('a')) ev.allow();
      else ev.deny();
    });
    try {
      const gate = openInChild(`${loop.fs.dir}/gate`, { timeoutMs: 20_000 });
      await deadline(gateArrived, 10_000, 'the gate event');
      const openers = openersOf(names.map((f) => `${loop.fs.dir}/${f}`));
      await blockedInFanotify(await openers.pids);
      const before = group.responseStats;
      openGate();
      const results = await openers.results;
      assert.deepEqual((await gate).ok, true);
      assert.deepEqual(
        results.map((r) => r.code),
        [null, 'EPERM', null, 'EPERM'],
      );
      assert.deepEqual([...seen].slice(1).sort(), [...names].sort());
      const after = group.responseStats;
      assert.deepEqual(
        { responses: after.responses - before.responses, writes: after.writes - before.writes },
        { responses: 5, writes: 2 }, // the gate's answer alone, then the batch's four in one
      );
    } finally {
      await group.close();
    }
  });

  test('a response the kernel refuses in the middle of a batch loses none of the others', async () => {
    // The kernel's writev stops at a refused response (ENOENT: no such pending event) and reads
    // none after it; the writer reports it and writes the rest again.
    const group = FanotifyGroup.open({ class: 'content', timeoutMs: 30_000 });
    group.mark(loop.fs.dir, { kind: 'filesystem', events: ['openPerm'] });
    const events = new Map<number, PermissionEvent>();
    let got!: () => void;
    const three = new Promise<void>((r) => (got = r));
    group.listen((ev) => {
      if (!isPermissionEvent(ev)) return;
      events.set(ev.pid, ev);
      if (events.size === 3) got();
      return new Promise(() => {}); // held: the test answers through its own writer
    });
    try {
      const openers = openersOf(['a0', 'd1', 'a2'].map((f) => `${loop.fs.dir}/${f}`));
      const pids = await openers.pids;
      await deadline(three, 10_000, 'three permission events');
      const refused: [string | undefined, number][] = [];
      const writer = new ResponseWriter(group.fd, (err, fd) => refused.push([(err as { code?: string }).code, fd]));
      const [e0, e1, e2] = pids.map((pid) => events.get(pid)!);
      writer.add(e0!.fd, responseWord({ allow: true }));
      writer.add(99_999, responseWord({ allow: true })); // no event has this fd
      writer.add(e2!.fd, responseWord({ allow: false }));
      writer.flush();
      assert.deepEqual(refused, [['ENOENT', 99_999]]);
      assert.deepEqual(writer.stats, { responses: 3, writes: 3 }); // writev (1 taken), the refused one, the last
      writer.add(e0!.fd, responseWord({ allow: true })); // answered already: refused alone
      writer.flush();
      assert.deepEqual(refused, [['ENOENT', 99_999], ['ENOENT', e0!.fd]]);
      // The second opener still waits; answer it through the group.
      assert.equal(e1!.deny(), true);
      assert.deepEqual(
        (await openers.results).map((r) => r.code),
        [null, 'EPERM', 'EPERM'],
      );
    } finally {
      await group.close(); // answers e0 and e2 again: ENOENT, ignored
    }
  });
});

describe('yieldToAnswered', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  before(() => {
    for (const f of ['gate', 'next']) fs.writeFileSync(`${loop.fs.dir}/${f}`, f);
  });

  test('an async handler that answered gets the event its process queued next at once, within the call', async () => {
    // The child opens gate, writes a marker outside the guarded filesystem, then opens next. The
    // gate's handler answers, waits (synchronously: the loop cannot poll meanwhile) until next's
    // open waits on its event, then calls yieldToAnswered: next must be delivered inside the call,
    // not at the loop's next poll.
    const marker = `${loop.fs.dir}/../yield-marker-${process.pid}`;
    fs.rmSync(marker, { force: true });
    const seen: string[] = [];
    let duringCall: string[] | undefined;
    let failure: unknown;
    const group = guard(loop.fs.dir, { class: 'content' }, (ev) => {
      const name = fs.readlinkSync(`/proc/self/fd/${ev.fd}`).slice(loop.fs.dir.length + 1);
      seen.push(name);
      if (name !== 'gate') {
        ev.allow();
        return undefined;
      }
      // Out of the read batch's delivery first (a microtask would still run inside it).
      return new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
        ev.allow();
        try {
          const until = Date.now() + 10_000;
          const nap = new Int32Array(new SharedArrayBuffer(4));
          const queued = (): boolean => fs.existsSync(marker) && fs.readFileSync(`/proc/${ev.pid}/wchan`, 'utf8') === 'fanotify_handle_event';
          while (!queued()) {
            if (Date.now() > until) throw new Error('the child never opened next');
            Atomics.wait(nap, 0, 0, 5);
          }
          const before = seen.length;
          group.yieldToAnswered();
          duringCall = seen.slice(before);
        } catch (err) {
          failure = err;
        }
      });
    });
    try {
      const child = await runInChild(
        `const fs = require('node:fs');
         const [dir, marker] = process.argv.slice(1);
         fs.closeSync(fs.openSync(dir + '/gate', 'r'));
         fs.writeFileSync(marker, '');
         fs.closeSync(fs.openSync(dir + '/next', 'r'));
         process.stdout.write('done');`,
        { args: [loop.fs.dir, marker], timeoutMs: 20_000 },
      );
      assert.equal(failure, undefined);
      assert.deepEqual([child.code, child.stdout], [0, 'done']);
      assert.deepEqual(seen, ['gate', 'next']);
      assert.deepEqual(duringCall, ['next']);
    } finally {
      await group.close();
      fs.rmSync(marker, { force: true });
    }
  });
});

describe('a batch answered as it was delivered', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  const OPENS = 2000;
  before(() => fs.writeFileSync(`${loop.fs.dir}/file`, 'x'));

  test("the released process's next event is read right after the answer, without waiting for the loop's next poll", async () => {
    // An immediate set at each delivery runs in the loop's check phase, right after the poll
    // phase that delivered. Without a reread, each of a sequential opener's events comes at a
    // poll of its own, so the previous delivery's immediate has always run; with it, the next
    // event is often delivered right after the answer, before that immediate.
    let immediatePending = false;
    const immediateRan = (): void => {
      immediatePending = false;
    };
    let sameTurn = 0;
    let answered = 0;
    const group = guard(loop.fs.dir, { class: 'content' }, (ev) => {
      if (immediatePending) sameTurn++;
      immediatePending = true;
      setImmediate(immediateRan);
      answered++;
      ev.allow();
    });
    try {
      // bash opens and closes the file for each `: <`, with little else in between.
      const child = await execCmd('bash', ['-c', 'for ((i = 0; i < $2; i++)); do : < "$1"; done; echo -n done', 'bash', `${loop.fs.dir}/file`, String(OPENS)], {
        timeoutMs: 30_000,
      });
      assert.equal(child.stdout, 'done');
      assert.equal(answered, OPENS);
      assert.ok(sameTurn > 0, `none of ${OPENS} events was read in the turn of the answer before it`);
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
