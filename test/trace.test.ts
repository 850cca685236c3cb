/**
 * `fan trace` end to end: the CLI on a loop filesystem, JSON and fatrace-style text, paths of
 * files that no longer exist, filters, and usage errors.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { deadline, execCmd, ExecError } from './helpers/proc.js';
import { formatFatrace, maskOfLetters, typeLetters } from '../src/trace/index.js';
import { EventBit } from '../src/kernel/constants.js';

requireRoot();

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** Run `fan trace ARGS` until `sentinel` shows up in its output, after running `act`. */
async function traceWhile(args: string[], dir: string, act: () => void | Promise<void>): Promise<string> {
  const out = `${dir}/../trace-${process.hrtime.bigint()}.out`;
  const child = spawn(process.execPath, [CLI, 'trace', '-o', out, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const read = (): string => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '');
  const waitFor = async (what: string): Promise<void> => {
    await deadline(
      (async () => {
        while (!read().includes(what)) await new Promise((r) => setTimeout(r, 20));
      })(),
      10_000,
      `"${what}" in fan trace output (stderr: ${stderr})`,
    );
  };
  try {
    // Live once one of the files we keep creating is reported (a create passes every filter used here).
    const ready = `${dir}/ready-${process.pid}-`;
    await deadline(
      (async () => {
        for (let n = 0; !read().includes(ready); n++) {
          fs.writeFileSync(`${ready}${n}`, '');
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      10_000,
      `fan trace to start (stderr: ${stderr})`,
    );
    await act();
    const end = `end-${process.hrtime.bigint()}`;
    fs.writeFileSync(`${dir}/${end}`, '');
    await waitFor(end);
  } finally {
    child.kill('SIGINT');
    await deadline(exited, 5000, 'fan trace to exit on SIGINT');
  }
  return read();
}

describe('fan trace', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });

  test('--json names every file, including ones deleted before the event was read', async () => {
    const dir = loop.fs.dir;
    const text = await traceWhile(['--json', dir], dir, () => {
      fs.mkdirSync(`${dir}/w`);
      fs.writeFileSync(`${dir}/w/a.txt`, 'one');
      fs.appendFileSync(`${dir}/w/a.txt`, 'two');
      fs.renameSync(`${dir}/w/a.txt`, `${dir}/w/b.txt`);
      fs.unlinkSync(`${dir}/w/b.txt`);
      fs.rmdirSync(`${dir}/w`);
    });
    const records = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { pid: number; events: string[]; path?: string; oldPath?: string; newPath?: string; comm?: string })
      .filter((r) => r.path?.startsWith(`${dir}/w`) || r.oldPath?.startsWith(`${dir}/w`));
    for (const r of records) assert.ok(r.path, `every record has a path: ${JSON.stringify(r)}`);
    const has = (event: string, path: string): boolean => records.some((r) => r.events.includes(event) && r.path === path);
    assert.ok(has('create', `${dir}/w`), 'mkdir');
    assert.ok(has('create', `${dir}/w/a.txt`), 'create');
    assert.ok(has('modify', `${dir}/w/a.txt`), 'modify');
    const rename = records.find((r) => r.events.includes('rename'));
    assert.deepEqual(
      { oldPath: rename?.oldPath, newPath: rename?.newPath, path: rename?.path },
      { oldPath: `${dir}/w/a.txt`, newPath: `${dir}/w/b.txt`, path: `${dir}/w/b.txt` },
    );
    assert.ok(has('delete', `${dir}/w/b.txt`), 'delete of a file that no longer exists');
    assert.ok(has('delete', `${dir}/w`), 'rmdir');
    for (const r of records) assert.equal(r.pid, process.pid);
    assert.ok(records.every((r) => r.comm === 'node' || r.comm === 'MainThread'), JSON.stringify(records.map((r) => r.comm)));
  });

  test('text output is fatrace\'s "comm(pid): TYPES path", filtered with -f', async () => {
    const dir = loop.fs.dir;
    const text = await traceWhile(['-f', '+D', dir], dir, async () => {
      fs.writeFileSync(`${dir}/t1`, 'x');
      fs.readFileSync(`${dir}/t1`);
      // Let the tracer read the create first, or the kernel merges the delete into it.
      await new Promise((r) => setTimeout(r, 300));
      fs.unlinkSync(`${dir}/t1`);
    });
    const lines = text.split('\n').filter((l) => l.endsWith(`${dir}/t1`));
    assert.equal(lines.length, 2, lines.join('\n'));
    assert.match(lines[0]!, new RegExp(`^\\S+\\(${process.pid}\\): [^ ]*\\+[^ ]* +${dir}/t1$`));
    assert.match(lines[1]!, new RegExp(`^\\S+\\(${process.pid}\\): D {3}${dir}/t1$`));
  });

  test('bad flags are usage errors with exit status 2 and a message', async () => {
    await assert.rejects(execCmd(process.execPath, [CLI, 'trace', '--seconds', 'abc']), (e: unknown) => {
      assert.ok(e instanceof ExecError);
      assert.equal(e.code, 2);
      assert.match(e.stderr, /--seconds needs a positive integer, got "abc"/);
      return true;
    });
    await assert.rejects(execCmd(process.execPath, [CLI, 'trace', '-f', 'Z', '-s', '1', loop.fs.dir]), (e: unknown) => {
      assert.ok(e instanceof ExecError);
      assert.equal(e.code, 1);
      assert.match(e.stderr, /unknown event type "Z" in --filter; choose from RCWO\+D<>A/);
      return true;
    });
    await assert.rejects(execCmd(process.execPath, [CLI, 'trace', '-s', '1', '/does/not/exist']), (e: unknown) => {
      assert.ok(e instanceof ExecError);
      assert.match(e.stderr, /cannot trace \/does\/not\/exist/);
      return true;
    });
  });

  test('--seconds stops by itself', async () => {
    const t0 = Date.now();
    await execCmd(process.execPath, [CLI, 'trace', '-s', '1', '-o', '/dev/null', loop.fs.dir], { timeoutMs: 10_000 });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 1000 && elapsed < 8000, `ran ${elapsed} ms`);
  });
});

test('type letters follow fatrace', () => {
  assert.equal(typeLetters(EventBit.ACCESS | EventBit.CLOSE_NOWRITE | EventBit.OPEN), 'RCO');
  assert.equal(typeLetters(EventBit.CLOSE_WRITE | EventBit.MODIFY | EventBit.OPEN), 'CWO');
  assert.equal(typeLetters(EventBit.RENAME), '<>');
  assert.equal(maskOfLetters('W'), EventBit.MODIFY);
  assert.equal(
    formatFatrace({ time: 0, pid: 7, comm: 'cat', events: ['open'], types: 'O', path: '/x', isDir: false }),
    'cat(7): O   /x',
  );
  assert.equal(
    formatFatrace({ time: 0, pid: 7, comm: 'mv', events: ['rename'], types: '<>', path: '/b', oldPath: '/a', isDir: false }),
    'mv(7): <>  /a -> /b',
  );
});
