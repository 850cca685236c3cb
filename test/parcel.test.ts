/**
 * fanotify/parcel: the @parcel/watcher API, called the way watcher users (dev servers, bundlers,
 * build caches) call it, on a private loop-mounted ext4.
 */
import { strict as assert } from 'node:assert';
import {
  appendFileSync,
  chmodSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  rmdirSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import watcher, {
  getEventsSince,
  subscribe,
  unsubscribe,
  writeSnapshot,
  type AsyncSubscription,
  type Event,
  type Options,
  type SubscribeCallback,
} from '../src/parcel/index.js';
import { useLoopFs } from './helpers/loopfs.js';
import { withMaxQueuedEvents } from './helpers/proc.js';

const T = { timeout: 20_000 };
/** Longer than the batching window (30 ms) plus scheduling noise. */
const QUIET_MS = 250;

/** One callback invocation. */
interface Call {
  readonly err: Error | null;
  readonly events: Event[];
}

/** A callback that records its calls, and lets a test wait for them with a deadline. */
class Recorder {
  readonly calls: Call[] = [];
  #wake: (() => void) | undefined;
  readonly fn: SubscribeCallback = (err, events) => {
    this.calls.push({ err, events });
    this.#wake?.();
  };

  /** The next call (already recorded or yet to come), or a failure after `ms`. */
  async next(ms = 5000, what = 'a callback'): Promise<Call> {
    const end = Date.now() + ms;
    while (this.calls.length === 0) {
      const left = end - Date.now();
      if (left <= 0) throw new Error(`deadline: no ${what} within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
    }
    return this.calls.shift()!;
  }

  /** The next normal batch: asserts `err === null` and a non-empty list. */
  async batch(ms = 5000): Promise<Event[]> {
    const c = await this.next(ms, 'batch');
    assert.equal(c.err, null, `expected err === null, got ${String(c.err)}`);
    assert.ok(Array.isArray(c.events) && c.events.length > 0, 'a batch is never empty');
    return c.events;
  }

  /** Events of every batch until `n` events have come, then a quiet period; sorted by path. */
  async collect(n: number, ms = 5000): Promise<Event[]> {
    const out: Event[] = [];
    const end = Date.now() + ms;
    while (out.length < n) out.push(...(await this.batch(Math.max(1, end - Date.now()))));
    await this.quiet();
    return byPath(out);
  }

  /** Assert that no callback comes for `ms`. */
  async quiet(ms = QUIET_MS): Promise<void> {
    await sleep(ms);
    assert.deepEqual(this.calls, [], 'no callback expected');
  }
}

function byPath(events: readonly Event[]): Event[] {
  return [...events].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.type < b.type ? -1 : 1));
}

function ev(type: Event['type'], path: string): Event {
  return { type, path };
}

describe('fanotify/parcel (@parcel/watcher API)', () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  let n = 0;
  /** A fresh subdirectory per test. */
  const fresh = (name: string): string => {
    const d = join(loop.fs.dir, `${++n}-${name}`);
    mkdirSync(d);
    return d;
  };

  /** subscribe, run the test body, and always unsubscribe. */
  async function withSub(dir: string, opts: Options | undefined, body: (rec: Recorder, sub: AsyncSubscription) => Promise<void>): Promise<void> {
    const rec = new Recorder();
    const sub = await subscribe(dir, rec.fn, opts);
    try {
      await body(rec, sub);
    } finally {
      await sub.unsubscribe();
    }
  }

  it('create, write, delete: one event each, err is null', T, async () => {
    const dir = fresh('basic');
    await withSub(dir, undefined, async (rec) => {
      const f = join(dir, 'a.txt');
      writeFileSync(f, 'hello');
      const c = await rec.next();
      assert.equal(c.err, null);
      assert.deepEqual(c.events, [ev('create', f)]);

      writeFileSync(f, 'hello again');
      assert.deepEqual(await rec.batch(), [ev('update', f)]);

      appendFileSync(f, '!');
      assert.deepEqual(await rec.batch(), [ev('update', f)]);

      unlinkSync(f);
      assert.deepEqual(await rec.batch(), [ev('delete', f)]);
      await rec.quiet();
    });
  });

  it('create + write + delete inside one batch window: no callback at all', T, async () => {
    const dir = fresh('transient');
    await withSub(dir, undefined, async (rec) => {
      const f = join(dir, 'tmp.txt');
      writeFileSync(f, 'x');
      appendFileSync(f, 'y');
      unlinkSync(f);
      await rec.quiet(400);
      // The watch is still alive.
      const g = join(dir, 'after.txt');
      writeFileSync(g, 'z');
      assert.deepEqual(await rec.batch(), [ev('create', g)]);
    });
  });

  it('delete then create within a batch: update', T, async () => {
    const dir = fresh('replace');
    const f = join(dir, 'f');
    writeFileSync(f, 'old');
    await withSub(dir, undefined, async (rec) => {
      unlinkSync(f);
      writeFileSync(f, 'new');
      assert.deepEqual(await rec.batch(), [ev('update', f)]);
      await rec.quiet();
    });
  });

  it('chmod is an update', T, async () => {
    const dir = fresh('chmod');
    const f = join(dir, 'f');
    writeFileSync(f, 'x');
    await withSub(dir, undefined, async (rec) => {
      chmodSync(f, 0o600);
      assert.deepEqual(await rec.batch(), [ev('update', f)]);
    });
  });

  it('rename a → b: delete a + create b in one batch', T, async () => {
    const dir = fresh('rename');
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    writeFileSync(a, 'x');
    await withSub(dir, undefined, async (rec) => {
      renameSync(a, b);
      assert.deepEqual(byPath(await rec.batch()), [ev('delete', a), ev('create', b)]);
      await rec.quiet();
    });
  });

  it('create then rename within a batch: only the new path is created', T, async () => {
    const dir = fresh('create-rename');
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    await withSub(dir, undefined, async (rec) => {
      writeFileSync(a, 'x');
      renameSync(a, b);
      assert.deepEqual(await rec.batch(), [ev('create', b)]);
      await rec.quiet();
    });
  });

  it('rename onto an existing file: delete of the source, create of the target (as @parcel/watcher)', T, async () => {
    const dir = fresh('rename-over');
    const tmp = join(dir, '.index.html.tmp');
    const target = join(dir, 'index.html');
    writeFileSync(target, 'v1');
    writeFileSync(tmp, 'v2');
    await withSub(dir, undefined, async (rec) => {
      // How editors and build tools save atomically.
      renameSync(tmp, target);
      assert.deepEqual(byPath(await rec.batch()), byPath([ev('delete', tmp), ev('create', target)]));
      await rec.quiet();
    });
  });

  it('mkdir + file inside immediately: creates for both', T, async () => {
    const dir = fresh('mkdir');
    await withSub(dir, undefined, async (rec) => {
      const d = join(dir, 'src');
      const f = join(d, 'index.ts');
      mkdirSync(d);
      writeFileSync(f, 'export {}');
      assert.deepEqual(await rec.collect(2), [ev('create', d), ev('create', f)]);
    });
  });

  it('nested mkdir -p with files: every level is created', T, async () => {
    const dir = fresh('mkdir-p');
    await withSub(dir, undefined, async (rec) => {
      mkdirSync(join(dir, 'a/b/c'), { recursive: true });
      writeFileSync(join(dir, 'a/b/c/f'), '1');
      writeFileSync(join(dir, 'a/g'), '2');
      assert.deepEqual(await rec.collect(5), [
        ev('create', join(dir, 'a')),
        ev('create', join(dir, 'a/b')),
        ev('create', join(dir, 'a/b/c')),
        ev('create', join(dir, 'a/b/c/f')),
        ev('create', join(dir, 'a/g')),
      ]);
    });
  });

  it('directory moved in from outside: created with its contents; moved out: deleted', T, async () => {
    const outside = fresh('outside');
    const dir = fresh('movein');
    const src = join(outside, 'pkg');
    mkdirSync(join(src, 'lib'), { recursive: true });
    writeFileSync(join(src, 'package.json'), '{}');
    writeFileSync(join(src, 'lib/index.js'), '');
    await withSub(dir, undefined, async (rec) => {
      const m = join(dir, 'pkg');
      renameSync(src, m);
      assert.deepEqual(await rec.collect(4), [
        ev('create', m),
        ev('create', join(m, 'lib')),
        ev('create', join(m, 'lib/index.js')),
        ev('create', join(m, 'package.json')),
      ]);
      renameSync(m, src);
      assert.deepEqual(await rec.batch(), [ev('delete', m)]);
      await rec.quiet();
    });
  });

  it('directory renamed within the tree: delete of the old dir + create of the new one', T, async () => {
    const dir = fresh('dir-rename');
    mkdirSync(join(dir, 'old'));
    writeFileSync(join(dir, 'old/f'), '1');
    await withSub(dir, undefined, async (rec) => {
      renameSync(join(dir, 'old'), join(dir, 'new'));
      assert.deepEqual(byPath(await rec.batch()), [ev('create', join(dir, 'new')), ev('delete', join(dir, 'old'))]);
      // The renamed directory is still watched.
      writeFileSync(join(dir, 'new/f'), '2');
      assert.deepEqual(await rec.batch(), [ev('update', join(dir, 'new/f'))]);
    });
  });

  it('rm -r of a directory made while watching: deletes for it and its contents', T, async () => {
    const dir = fresh('rm-r');
    await withSub(dir, undefined, async (rec) => {
      mkdirSync(join(dir, 'd/e'), { recursive: true });
      writeFileSync(join(dir, 'd/e/f'), '1');
      assert.equal((await rec.collect(3)).length, 3);
      rmSync(join(dir, 'd'), { recursive: true });
      assert.deepEqual(await rec.collect(3), [
        ev('delete', join(dir, 'd')),
        ev('delete', join(dir, 'd/e')),
        ev('delete', join(dir, 'd/e/f')),
      ]);
    });
  });

  it(
    'rm -r of a directory that existed before the watch: deletes for it and its contents',
    {
      ...T,
      
    },
    async () => {
      const dir = fresh('rm-r-old');
      mkdirSync(join(dir, 'd/e'), { recursive: true });
      writeFileSync(join(dir, 'd/e/f'), '1');
      await withSub(dir, undefined, async (rec) => {
        rmSync(join(dir, 'd'), { recursive: true });
        assert.deepEqual(await rec.collect(3, 2000), [
          ev('delete', join(dir, 'd')),
          ev('delete', join(dir, 'd/e')),
          ev('delete', join(dir, 'd/e/f')),
        ]);
      });
    },
  );

  it('ignore: a plain dir name and a glob', T, async () => {
    const dir = fresh('ignore');
    await withSub(dir, { ignore: ['node_modules', '**/*.log'] }, async (rec) => {
      mkdirSync(join(dir, 'node_modules/dep'), { recursive: true });
      writeFileSync(join(dir, 'node_modules/dep/index.js'), '');
      writeFileSync(join(dir, 'debug.log'), '');
      mkdirSync(join(dir, 'src'));
      writeFileSync(join(dir, 'src/app.log'), '');
      writeFileSync(join(dir, 'src/app.ts'), '');
      writeFileSync(join(dir, 'README.md'), '');
      assert.deepEqual(await rec.collect(3), [
        ev('create', join(dir, 'README.md')),
        ev('create', join(dir, 'src')),
        ev('create', join(dir, 'src/app.ts')),
      ]);
      // Later changes under ignored paths stay silent, others still arrive.
      writeFileSync(join(dir, 'node_modules/dep/index.js'), 'changed');
      appendFileSync(join(dir, 'src/app.log'), 'more');
      rmSync(join(dir, 'node_modules/dep'), { recursive: true });
      await rec.quiet();
      writeFileSync(join(dir, 'src/app.ts'), 'changed');
      assert.deepEqual(await rec.batch(), [ev('update', join(dir, 'src/app.ts'))]);
      await rec.quiet();
    });
  });

  it('ignore: an absolute path and a RegExp', T, async () => {
    const dir = fresh('ignore-abs');
    mkdirSync(join(dir, 'dist'));
    mkdirSync(join(dir, '.cache'));
    await withSub(dir, { ignore: [join(dir, 'dist'), /(^|\/)\.cache(\/|$)/] }, async (rec) => {
      writeFileSync(join(dir, 'dist/bundle.js'), '');
      writeFileSync(join(dir, '.cache/x'), '');
      writeFileSync(join(dir, 'index.ts'), '');
      assert.deepEqual(await rec.collect(1), [ev('create', join(dir, 'index.ts'))]);
    });
  });

  it('a RegExp ignore with flags is refused, like @parcel/watcher', T, async () => {
    const dir = fresh('regexp-flags');
    await assert.rejects(subscribe(dir, () => {}, { ignore: [/x/i] }), /must not have flags/);
  });

  it('two subscriptions on one dir; unsubscribe(dir, fn) and subscription.unsubscribe() stop only their own', T, async () => {
    const dir = fresh('two');
    const a = new Recorder();
    const b = new Recorder();
    const subA = await subscribe(dir, a.fn);
    const subB = await subscribe(dir, b.fn);
    try {
      const f1 = join(dir, 'f1');
      writeFileSync(f1, '1');
      assert.deepEqual(await a.batch(), [ev('create', f1)]);
      assert.deepEqual(await b.batch(), [ev('create', f1)]);

      await unsubscribe(dir, a.fn);
      const f2 = join(dir, 'f2');
      writeFileSync(f2, '2');
      assert.deepEqual(await b.batch(), [ev('create', f2)]);
      await a.quiet();

      await subB.unsubscribe();
      writeFileSync(join(dir, 'f3'), '3');
      await b.quiet();
      await a.quiet(0);
    } finally {
      await subA.unsubscribe();
      await subB.unsubscribe();
    }
  });

  it('subscription.unsubscribe() drops a batch still being collected', T, async () => {
    const dir = fresh('unsub-pending');
    const rec = new Recorder();
    const sub = await subscribe(dir, rec.fn);
    writeFileSync(join(dir, 'late'), 'x');
    // Let the kernel event reach the batcher, but not the end of the window.
    await sleep(5);
    await sub.unsubscribe();
    await rec.quiet();
  });

  it('subscriptions with different ignore rules on one dir each apply their own', T, async () => {
    const dir = fresh('two-ignores');
    const all = new Recorder();
    const some = new Recorder();
    const subAll = await subscribe(dir, all.fn);
    const subSome = await subscribe(dir, some.fn, { ignore: ['*.tmp'] });
    try {
      writeFileSync(join(dir, 'x.tmp'), '');
      writeFileSync(join(dir, 'x.ts'), '');
      assert.deepEqual(await all.collect(2), [ev('create', join(dir, 'x.tmp')), ev('create', join(dir, 'x.ts'))]);
      assert.deepEqual(await some.collect(1), [ev('create', join(dir, 'x.ts'))]);
      // unsubscribe with the matching options finds the right one.
      await unsubscribe(dir, some.fn, { ignore: ['*.tmp'] });
      writeFileSync(join(dir, 'y.ts'), '');
      assert.deepEqual(await all.batch(), [ev('create', join(dir, 'y.ts'))]);
      await some.quiet();
    } finally {
      await subAll.unsubscribe();
      await subSome.unsubscribe();
    }
  });

  it(
    'a subscription without ignore sees a directory another subscription ignores',
    T,
    async () => {
      const dir = fresh('ignore-mark-shared');
      mkdirSync(join(dir, 'node_modules'));
      await withSub(dir, { ignore: ['node_modules'] }, async (ignoring) => {
        writeFileSync(join(dir, 'node_modules/a'), ''); // the first event from it: ignore mark placed
        await ignoring.quiet();
        await withSub(dir, undefined, async (all) => {
          writeFileSync(join(dir, 'node_modules/b'), '');
          assert.deepEqual(await all.collect(1, 2000), [ev('create', join(dir, 'node_modules/b'))]);
        });
      });
    },
  );

  it(
    'an ignored directory renamed to a watched name is watched',
    T,
    async () => {
      const dir = fresh('ignore-mark-rename');
      mkdirSync(join(dir, 'node_modules'));
      await withSub(dir, { ignore: ['node_modules'] }, async (rec) => {
        writeFileSync(join(dir, 'node_modules/a'), ''); // ignore mark placed
        await rec.quiet();
        renameSync(join(dir, 'node_modules'), join(dir, 'lib'));
        assert.deepEqual(await rec.collect(2, 2000), [ev('create', join(dir, 'lib')), ev('create', join(dir, 'lib/a'))]);
        writeFileSync(join(dir, 'lib/b'), '');
        assert.deepEqual(await rec.collect(1, 2000), [ev('create', join(dir, 'lib/b'))]);
      });
    },
  );

  it('the same callback subscribed twice is called once per batch', T, async () => {
    const dir = fresh('twice');
    const rec = new Recorder();
    const s1 = await subscribe(dir, rec.fn);
    const s2 = await subscribe(dir, rec.fn);
    try {
      writeFileSync(join(dir, 'f'), '');
      assert.deepEqual(await rec.batch(), [ev('create', join(dir, 'f'))]);
      await rec.quiet();
    } finally {
      await s1.unsubscribe();
      await s2.unsubscribe();
    }
  });

  it("opts.backend 'inotify' is accepted (and fanotify used)", T, async () => {
    const dir = fresh('backend');
    await withSub(dir, { backend: 'inotify' }, async (rec) => {
      writeFileSync(join(dir, 'f'), '');
      assert.deepEqual(await rec.batch(), [ev('create', join(dir, 'f'))]);
    });
  });

  it('relative dir: paths are absolute', T, async () => {
    const dir = fresh('relative');
    const cwd = process.cwd();
    process.chdir(loop.fs.dir);
    const rec = new Recorder();
    const subscribing = subscribe(dir.slice(loop.fs.dir.length + 1), rec.fn);
    process.chdir(cwd); // dir is resolved synchronously, as by @parcel/watcher
    const sub = await subscribing;
    try {
      writeFileSync(join(dir, 'f'), '');
      assert.deepEqual(await rec.batch(), [ev('create', join(dir, 'f'))]);
    } finally {
      await sub.unsubscribe();
    }
  });

  it('the default export has the same functions', T, () => {
    assert.equal(watcher.subscribe, subscribe);
    assert.equal(watcher.unsubscribe, unsubscribe);
    assert.equal(watcher.writeSnapshot, writeSnapshot);
    assert.equal(watcher.getEventsSince, getEventsSince);
  });

  it('subscribe on a missing directory rejects', T, async () => {
    await assert.rejects(subscribe(join(loop.fs.dir, 'no-such-dir'), () => {}), /no-such-dir/);
  });

  it('the root being deleted is an error through the callback', T, async () => {
    const dir = fresh('root-gone');
    await withSub(dir, undefined, async (rec) => {
      rmdirSync(dir);
      const c = await rec.next();
      assert.ok(c.err instanceof Error);
      assert.match(c.err.message, /was deleted/);
      assert.ok(c.err.message.includes(dir));
      assert.deepEqual(c.events, []);
    });
  });

  it('a queue overflow is an error through the callback, and events keep coming', { timeout: 60_000 }, async () => {
    const dir = fresh('overflow');
    await withMaxQueuedEvents(64, async () => {
      const rec = new Recorder();
      const sub = await subscribe(dir, rec.fn);
      try {
        for (let i = 0; i < 2000; i++) writeFileSync(join(dir, `f${i}`), '');
        let err: Error | null = null;
        const end = Date.now() + 10_000;
        while (err === null) {
          const c = await rec.next(Math.max(1, end - Date.now()), 'overflow error');
          if (c.err) {
            err = c.err;
            assert.deepEqual(c.events, []);
          }
        }
        assert.match(err.message, /overflow/);
        assert.ok(err.message.includes(`rescan ${dir}`), err.message);
        await sleep(QUIET_MS);
        rec.calls.length = 0;
        writeFileSync(join(dir, 'after'), '');
        assert.deepEqual(await rec.batch(), [ev('create', join(dir, 'after'))]);
      } finally {
        await sub.unsubscribe();
      }
    });
  });

  describe('writeSnapshot / getEventsSince', () => {
    it('reports create, update, delete and rename since the snapshot', T, async () => {
      const dir = fresh('snapshot');
      const snap = join(loop.fs.dir, `${n}-snapshot.json`);
      mkdirSync(join(dir, 'sub'));
      writeFileSync(join(dir, 'keep'), 'same');
      writeFileSync(join(dir, 'mod'), 'before');
      writeFileSync(join(dir, 'del'), 'x');
      writeFileSync(join(dir, 'ren-a'), 'x');
      writeFileSync(join(dir, 'sub/inner'), 'x');

      assert.equal(await writeSnapshot(dir, snap), snap);
      const data = JSON.parse(readFileSync(snap, 'utf8')) as { version?: unknown; root?: unknown };
      assert.equal(data.version, 1);
      assert.equal(data.root, dir);

      // Nothing changed yet.
      assert.deepEqual(await getEventsSince(dir, snap), []);

      writeFileSync(join(dir, 'new'), 'x');
      writeFileSync(join(dir, 'mod'), 'after!');
      const future = new Date(Date.now() + 60_000);
      utimesSync(join(dir, 'mod'), future, future); // mtime surely differs
      unlinkSync(join(dir, 'del'));
      renameSync(join(dir, 'ren-a'), join(dir, 'ren-b'));
      mkdirSync(join(dir, 'newdir'));
      writeFileSync(join(dir, 'sub/inner2'), 'x'); // sub's mtime changes: directories are never updates

      assert.deepEqual(byPath(await getEventsSince(dir, snap)), [
        ev('delete', join(dir, 'del')),
        ev('update', join(dir, 'mod')),
        ev('create', join(dir, 'new')),
        ev('create', join(dir, 'newdir')),
        ev('delete', join(dir, 'ren-a')),
        ev('create', join(dir, 'ren-b')),
        ev('create', join(dir, 'sub/inner2')),
      ]);
      // The snapshot itself is unchanged by reading it.
      assert.equal((await getEventsSince(dir, snap)).length, 7);
    });

    it('a same-size rewrite with a new mtime is an update', T, async () => {
      const dir = fresh('snapshot-mtime');
      const snap = join(loop.fs.dir, `${n}-snapshot.json`);
      writeFileSync(join(dir, 'f'), 'aaaa');
      await writeSnapshot(dir, snap);
      writeFileSync(join(dir, 'f'), 'bbbb');
      const later = new Date(Date.now() + 5_000);
      utimesSync(join(dir, 'f'), later, later);
      assert.deepEqual(await getEventsSince(dir, snap), [ev('update', join(dir, 'f'))]);
    });

    it('respects ignore', T, async () => {
      const dir = fresh('snapshot-ignore');
      const snap = join(loop.fs.dir, `${n}-snapshot.json`);
      const opts: Options = { ignore: ['node_modules', '**/*.log'] };
      mkdirSync(join(dir, 'node_modules'));
      writeFileSync(join(dir, 'node_modules/a'), '');
      writeFileSync(join(dir, 'x.log'), '');
      await writeSnapshot(dir, snap, opts);
      const data = JSON.parse(readFileSync(snap, 'utf8')) as { entries: Record<string, unknown> };
      assert.deepEqual(Object.keys(data.entries), []);
      writeFileSync(join(dir, 'node_modules/b'), '');
      unlinkSync(join(dir, 'x.log'));
      writeFileSync(join(dir, 'y.log'), '');
      writeFileSync(join(dir, 'src.ts'), '');
      assert.deepEqual(await getEventsSince(dir, snap, opts), [ev('create', join(dir, 'src.ts'))]);
    });

    it('a missing snapshot file rejects with an error naming it', T, async () => {
      const dir = fresh('snapshot-missing');
      const snap = join(loop.fs.dir, 'does-not-exist.json');
      await assert.rejects(getEventsSince(dir, snap), (err: Error) => {
        assert.ok(err.message.includes(snap), err.message);
        return true;
      });
    });

    it('a corrupt snapshot file rejects with an error naming it', T, async () => {
      const dir = fresh('snapshot-corrupt');
      const garbage = join(loop.fs.dir, `${n}-garbage.json`);
      writeFileSync(garbage, 'not json at all\n');
      await assert.rejects(getEventsSince(dir, garbage), (err: Error) => {
        assert.ok(err.message.includes(garbage), err.message);
        assert.match(err.message, /corrupt/);
        return true;
      });
      const foreign = join(loop.fs.dir, `${n}-foreign.json`);
      writeFileSync(foreign, JSON.stringify({ hello: 'world' }));
      await assert.rejects(getEventsSince(dir, foreign), (err: Error) => err.message.includes(foreign));
      const truncated = join(loop.fs.dir, `${n}-truncated.json`);
      await writeSnapshot(dir, truncated);
      writeFileSync(truncated, readFileSync(truncated, 'utf8').slice(0, 20));
      await assert.rejects(getEventsSince(dir, truncated), (err: Error) => err.message.includes(truncated));
    });

    it('writeSnapshot on a missing directory rejects', T, async () => {
      await assert.rejects(writeSnapshot(join(loop.fs.dir, 'nope'), join(loop.fs.dir, 'nope.json')), /nope/);
    });
  });
});

describe('fanotify/parcel snapshots through a recording journal', () => {
  const loop = useLoopFs({ fstype: 'ext4' });

  it('writeSnapshot stores a cursor and getEventsSince asks the journal, across a recorder restart', { timeout: 60_000 }, async () => {
    const { Recorder } = await import('../src/journal/index.js');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const state = mkdtempSync(join(tmpdir(), 'fan-parcel-state-'));
    const savedXdg = process.env.XDG_STATE_HOME;
    process.env.XDG_STATE_HOME = state; // the default state dir, where snapshots look for a journal
    const dir = join(loop.fs.dir, 'journaled');
    mkdirSync(dir);
    writeFileSync(join(dir, 'keep'), '1');
    writeFileSync(join(dir, 'old'), '1');
    let rec = await Recorder.start([dir]);
    try {
      const snap = join(loop.fs.dir, 'journaled.snapshot');
      await writeSnapshot(dir, snap);
      const stored = JSON.parse(readFileSync(snap, 'utf8')) as { cursor?: string; entries?: unknown };
      assert.match(stored.cursor ?? '', /^fj1:/);
      assert.equal(stored.entries, undefined, 'no crawl when a journal records the root');
      writeFileSync(join(dir, 'new'), 'x');
      renameSync(join(dir, 'old'), join(dir, 'renamed'));
      await rec.close();
      // Changes while nobody records: the next recorder's reconciliation logs them.
      writeFileSync(join(dir, 'keep'), '22');
      rec = await Recorder.start([dir]);
      const events = (await getEventsSince(dir, snap)).map((e) => `${e.type} ${e.path.slice(dir.length + 1)}`).sort();
      assert.deepEqual(events, ['create new', 'create renamed', 'delete old', 'update keep']);
    } finally {
      await rec.close();
      if (savedXdg === undefined) delete process.env.XDG_STATE_HOME;
      else process.env.XDG_STATE_HOME = savedXdg;
      rmSync(state, { recursive: true, force: true });
    }
  });
});
