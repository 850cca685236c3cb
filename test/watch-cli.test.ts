/**
 * `fan watch` end to end: the ready line, NDJSON events, --ignore, --exec, clean exit.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { deadline } from './helpers/proc.js';
import { formatWatchText } from '../src/cli/watch.js';

requireRoot();

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** A running `fan watch` whose stdout lines are collected. */
class FanWatch {
  readonly lines: string[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
  stderr = '';

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [CLI, 'watch', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts);
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((r) => this.child.on('exit', (code) => r(code)));
  }

  async waitFor(pred: (lines: string[]) => boolean, what: string): Promise<void> {
    await deadline(
      (async () => {
        while (!pred(this.lines)) await new Promise((r) => setTimeout(r, 20));
      })(),
      10_000,
      `${what} (stdout: ${this.lines.join(' | ')}; stderr: ${this.stderr})`,
    );
  }

  async stop(): Promise<void> {
    this.child.kill('SIGINT');
    await deadline(this.exited, 5000, 'fan watch to exit on SIGINT');
  }
}

describe('fan watch', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });

  test('--json: a ready line first, then one line per change; --ignore drops ignored paths', async () => {
    const root = `${loop.fs.dir}/json`;
    fs.mkdirSync(root);
    const w = new FanWatch(['--json', '--ignore', '*.tmp', '--debounce', '10', root]);
    try {
      await w.waitFor((l) => l.length >= 1, 'the ready line');
      const ready = JSON.parse(w.lines[0]!) as { type: string; roots: string[]; backend: string; readyMs: number };
      assert.deepEqual({ type: ready.type, roots: ready.roots, backend: ready.backend }, { type: 'ready', roots: [root], backend: 'fanotify' });
      assert.equal(typeof ready.readyMs, 'number');
      fs.writeFileSync(`${root}/skip.tmp`, '');
      fs.writeFileSync(`${root}/a.txt`, '');
      await w.waitFor((l) => l.length >= 2, 'the create line');
      fs.renameSync(`${root}/a.txt`, `${root}/b.txt`);
      await w.waitFor((l) => l.length >= 3, 'the rename line');
      const events = w.lines.slice(1).map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.deepEqual(
        events.map((e) => [e.type, e.oldPath, e.path, e.isDir]),
        [
          ['create', undefined, `${root}/a.txt`, false],
          ['rename', `${root}/a.txt`, `${root}/b.txt`, false],
        ],
      );
      assert.match(String(events[0]!.time), /^\d{4}-\d\d-\d\dT/);
    } finally {
      await w.stop();
    }
  });

  test('--exec runs once per batch with the changed paths on stdin and in $FAN_CHANGED_PATHS', async () => {
    const root = `${loop.fs.dir}/exec`;
    fs.mkdirSync(root);
    const out = `${loop.fs.dir}/exec.out`;
    const w = new FanWatch([
      '--json',
      '--debounce', '100',
      '--exec', `{ cat; echo "count=$FAN_CHANGED_COUNT"; printf '%s\\n' "$FAN_CHANGED_PATHS"; } > ${out}`,
      root,
    ]);
    try {
      await w.waitFor((l) => l.length >= 1, 'the ready line');
      fs.writeFileSync(`${root}/one`, '');
      fs.writeFileSync(`${root}/two`, '');
      await deadline(
        (async () => {
          while (!(fs.existsSync(out) && fs.readFileSync(out, 'utf8').includes('count=2'))) await new Promise((r) => setTimeout(r, 20));
        })(),
        10_000,
        'the --exec output',
      );
      assert.equal(fs.readFileSync(out, 'utf8'), `${root}/one\n${root}/two\ncount=2\n${root}/one\n${root}/two\n`);
    } finally {
      await w.stop();
    }
  });

  test('the root being deleted prints a rescan line and exits 0', async () => {
    const root = `${loop.fs.dir}/gone`;
    fs.mkdirSync(root);
    const w = new FanWatch([root]);
    await w.waitFor(() => w.stderr.includes('watching'), 'the watching message');
    fs.rmdirSync(root);
    const code = await deadline(w.exited, 10_000, 'fan watch to exit after its root was deleted');
    assert.equal(code, 0);
    assert.deepEqual(w.lines, [`rescan ${root} (root-deleted: rescan this tree)`]);
  });

  test('a missing directory is an error naming it, exit status 1', async () => {
    const w = new FanWatch([`${loop.fs.dir}/missing`]);
    const code = await deadline(w.exited, 10_000, 'fan watch to fail');
    assert.equal(code, 1);
    assert.equal(w.stderr, `fan: watch: cannot watch ${loop.fs.dir}/missing: no such directory\n`);
  });
});

test('text lines', () => {
  assert.equal(formatWatchText({ type: 'create', path: '/a/b', isDir: true, time: 0 }), 'create /a/b/');
  assert.equal(formatWatchText({ type: 'rename', oldPath: '/a', path: '/b', isDir: false, time: 0 }), 'rename /a -> /b');
  assert.equal(formatWatchText({ type: 'rescan', path: '/r', reason: 'overflow', isDir: true, time: 0 }), 'rescan /r (overflow: rescan this tree)');
});
