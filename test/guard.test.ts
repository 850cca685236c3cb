/**
 * The guard with real child processes on a loop filesystem: policy rules, deadlines, handlers,
 * worker threads, the decision cache, self-exclusion, SIGKILL release, and real clamd.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Guard, parsePolicy, policyFrom, type DecisionRecord, type PolicyInput } from '../src/guard/index.js';
import { functionScanner } from '../src/scan/index.js';
import { ClamdScanner } from '../src/scan/clamd.js';
import { FanotifyError } from '../src/errors.js';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { openInChild, runInChild, deadline } from './helpers/proc.js';
import { startClamd, TEST_MALWARE, TEST_SIGNATURE_REPORTED, type ClamdInstance } from './helpers/clamd.js';

requireRoot();

/** `fan ARGS…` (guard or scan) as a child, started once it says it is guarding; stdout as given. */
async function startGuardCli(args: string[], stdout: 'pipe' | 'ignore') {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', stdout, 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await deadline(
      (async () => {
        while (!stderr.includes('fan: guarding')) {
          if (child.exitCode !== null) throw new Error(`fan ${args[0]} exited: ${stderr}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      })(),
      20_000,
      `fan ${args[0]} to start`,
    );
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return { child, exited, stderr: () => stderr };
}

describe('guard on ext4', { timeout: 180_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  let dir: string;
  let n = 0;
  before(() => {
    // Children run as other users in some tests: let them through the private temp dir.
    fs.chmodSync(`${loop.fs.dir}/..`, 0o755);
  });

  /** A fresh directory with files, and a guard on it with this policy. */
  const setup = (policy: PolicyInput, extra: Partial<Parameters<typeof Guard.start>[0]> = {}) => {
    dir = `${loop.fs.dir}/g${n++}`;
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    for (const f of ['plain.txt', 'secret.key', 'tool.sh']) fs.writeFileSync(`${dir}/${f}`, f);
    fs.chmodSync(`${dir}/tool.sh`, 0o755);
    fs.writeFileSync(`${dir}/tool.sh`, '#!/bin/sh\necho ran\n');
    const log: DecisionRecord[] = [];
    const guard = Guard.start({ paths: [dir], policy: policyFrom(policy), log: (r) => log.push(r), ...extra });
    return { guard, log };
  };

  test('allow, deny and the default, as a child process sees them', async () => {
    const { guard, log } = setup({ default: 'allow', rules: [{ name: 'keys', match: { path: '**/*.key' }, verdict: 'deny' }] });
    try {
      const denied = await openInChild(`${dir}/secret.key`);
      assert.deepEqual([denied.ok, denied.code], [false, 'EPERM']);
      const allowed = await openInChild(`${dir}/plain.txt`, { read: true });
      assert.deepEqual([allowed.ok, allowed.data], [true, 'plain.txt']);
      const keyLog = log.find((r) => r.path === `${dir}/secret.key`);
      assert.deepEqual({ answer: keyLog?.answer, rule: keyLog?.rule, decision: keyLog?.decision, pid: keyLog?.pid }, { answer: 'deny', rule: 'keys', decision: 'deny', pid: denied.pid });
    } finally {
      await guard.close();
    }
  });

  test('each match field selects: event, uid, gid, comm, exe, parent', async () => {
    const { guard } = setup({
      events: ['open', 'exec'],
      rules: [
        { name: 'no-exec', match: { path: '**/tool.sh', event: 'exec' }, verdict: 'deny' },
        { name: 'nobody', match: { path: '**/plain.txt', uid: 65534 }, verdict: 'deny' },
        { name: 'group', match: { path: '**/secret.key', gid: 65533 }, verdict: 'deny' },
        { name: 'cat', match: { path: '**/secret.key', comm: 'cat' }, verdict: 'deny' },
        { name: 'exe', match: { path: '**/secret.key', exe: '/usr/bin/head' }, verdict: 'deny' },
        { name: 'parent', match: { path: '**/secret.key', comm: 'tail', parent: 'sh' }, verdict: 'deny' },
      ],
    });
    const sh = (cmd: string, uid?: number, gid?: number) =>
      runInChild(
        `const { execFileSync } = require('node:child_process');
         try { process.stdout.write(execFileSync('/bin/sh', ['-c', process.argv[1]], { stdio: ['ignore', 'pipe', 'pipe'] }).toString()); }
         catch (e) { process.stdout.write('FAIL ' + String(e.stderr).trim()); }`,
        { args: [cmd], uid, gid },
      );
    try {
      // exec denied, but reading the script is allowed.
      assert.match((await sh(`${dir}/tool.sh`)).stdout, /FAIL .*Operation not permitted|FAIL .*Permission denied/);
      assert.equal((await sh(`/bin/sh ${dir}/tool.sh`)).stdout, 'ran\n');
      // uid: nobody is denied plain.txt, root is not.
      assert.match((await sh(`cat ${dir}/plain.txt`, 65534, 65534)).stdout, /FAIL .*Operation not permitted/);
      assert.equal((await sh(`cat ${dir}/plain.txt`)).stdout, 'plain.txt');
      // gid 65533 denied secret.key (uid nobody, gid 65533).
      assert.match((await sh(`dd status=none if=${dir}/secret.key`, 65534, 65533)).stdout, /FAIL .*Operation not permitted/);
      // comm cat denied; dd allowed.
      assert.match((await sh(`cat ${dir}/secret.key`)).stdout, /FAIL .*Operation not permitted/);
      assert.equal((await sh(`dd status=none if=${dir}/secret.key`)).stdout, 'secret.key');
      // exe /usr/bin/head denied.
      assert.match((await sh(`head -c 100 ${dir}/secret.key`)).stdout, /FAIL .*Operation not permitted/);
      // parent: tail run by sh is denied; tail run straight from node is not.
      assert.equal((await sh(`tail -c 100 ${dir}/secret.key 2>&1; true`)).stdout.includes('Operation not permitted'), true);
      const direct = await runInChild(
        `process.stdout.write(require('node:child_process').execFileSync('tail', ['-c', '100', process.argv[1]]).toString())`,
        { args: [`${dir}/secret.key`] },
      );
      assert.equal(direct.stdout, 'secret.key');
    } finally {
      await guard.close();
    }
  });

  test('deny with an errno (pre-content group) reaches the opener', async () => {
    const { guard } = setup({ rules: [{ match: { path: '**/*.key' }, verdict: 'deny', errno: 'EIO' }] });
    try {
      const r = await openInChild(`${dir}/secret.key`, { read: true });
      assert.deepEqual([r.ok, r.code], [false, 'EIO']);
    } finally {
      await guard.close();
    }
  });

  test('a hanging handler is cut off by the deadline with the error verdict, in time', async () => {
    const { guard, log } = setup(
      { timeoutMs: 300, onError: 'deny', rules: [{ match: { path: '**/plain.txt' }, verdict: 'ask' }] },
      { handler: () => new Promise(() => {}) },
    );
    try {
      const t0 = Date.now();
      const r = await openInChild(`${dir}/plain.txt`, { timeoutMs: 5000 });
      const ms = Date.now() - t0;
      assert.equal(r.code, 'EPERM');
      assert.ok(ms >= 290 && ms < 3000, `answered after ${ms} ms`);
      assert.equal(log.length, 0, 'the handler never finished, so nothing was decided by it');
      assert.equal(guard.pending, 0);
    } finally {
      await guard.close();
    }
  });

  test('a throwing handler is answered with the error verdict at once', async () => {
    const { guard, log } = setup(
      { timeoutMs: 10_000, onError: 'deny', rules: [{ match: { path: '**/plain.txt' }, verdict: 'ask' }] },
      { handler: () => { throw new Error('boom'); } },
    );
    try {
      const t0 = Date.now();
      const r = await openInChild(`${dir}/plain.txt`);
      assert.equal(r.code, 'EPERM');
      assert.ok(Date.now() - t0 < 5000);
      assert.equal(log[0]?.error, 'boom');
    } finally {
      await guard.close();
    }
  });

  test('worker threads decide; a crashed worker answers with the error verdict and is replaced', async () => {
    const module = `${loop.fs.dir}/../handler-${n}.mjs`;
    fs.writeFileSync(
      module,
      `export default function (ctx) {
         if (ctx.path.endsWith('secret.key')) return 'deny';
         if (ctx.path.endsWith('tool.sh')) process.exit(3);
         return { verdict: 'allow' };
       }`,
    );
    const { guard, log } = setup(
      { timeoutMs: 10_000, onError: 'deny', rules: [{ verdict: 'ask' }] },
      { workers: { module, size: 2 } },
    );
    try {
      assert.equal((await openInChild(`${dir}/secret.key`)).code, 'EPERM');
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      const t0 = Date.now();
      const crash = await openInChild(`${dir}/tool.sh`);
      assert.equal(crash.code, 'EPERM');
      assert.ok(Date.now() - t0 < 5000, 'answered when the worker died, not at the deadline');
      assert.match(log.find((r) => r.path.endsWith('tool.sh'))?.error ?? '', /worker thread exited with code 3/);
      // The replacement worker decides the next one.
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
    } finally {
      await guard.close();
    }
  });

  test('50 processes × 200 opens: every one answered, none left blocked', async () => {
    const { guard } = setup({ rules: [{ match: { path: '**/secret.key' }, verdict: 'deny' }] }, { cache: false });
    try {
      const script = `const fs = require('node:fs'); let denied = 0, ok = 0;
        for (let i = 0; i < 200; i++) {
          try { fs.closeSync(fs.openSync(process.argv[i % 2 ? 1 : 2], 'r')); ok++; } catch (e) { if (e.code === 'EPERM') denied++; else throw e; }
        }
        console.log(ok + ' ' + denied);`;
      const runs = await Promise.all(
        Array.from({ length: 50 }, () => runInChild(script, { args: [`${dir}/plain.txt`, `${dir}/secret.key`], timeoutMs: 60_000 })),
      );
      for (const r of runs) assert.equal(r.stdout.trim(), '100 100', r.stderr);
      assert.equal(guard.pending, 0);
      assert.equal(guard.metrics.byAnswer.allow, 5000);
      assert.equal(guard.metrics.byAnswer.deny, 5000);
    } finally {
      await guard.close();
    }
  });

  test('the cache: a second open never reaches the guard; a write invalidates it', async () => {
    const { guard, log } = setup({ rules: [] });
    try {
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log.length, 1);
      assert.equal(log[0]!.cached, true);
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log.length, 1, 'the kernel answered the second open itself');
      // A write clears the ignore mark: the next open is decided again.
      await fs.promises.appendFile(`${dir}/plain.txt`, 'more');
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log.length, 2);
      // Flushing forgets everything.
      guard.flushCache();
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log.length, 3);
    } finally {
      await guard.close();
    }
  });

  test('decisions that depend on the process are never cached', async () => {
    const { guard, log } = setup({ rules: [{ match: { path: '**/plain.txt', uid: 65534 }, verdict: 'deny' }] });
    try {
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log[0]!.cached, false);
      assert.equal((await openInChild(`${dir}/plain.txt`, { uid: 65534 })).code, 'EPERM');
    } finally {
      await guard.close();
    }
  });

  test('guarding the directory the guard logs to does not deadlock', async () => {
    dir = `${loop.fs.dir}/g${n++}`;
    fs.mkdirSync(dir);
    fs.writeFileSync(`${dir}/f`, 'x');
    const logFile = `${dir}/decisions.ndjson`;
    const stream = fs.createWriteStream(logFile, { flags: 'a' });
    await new Promise((r) => stream.once('open', r));
    const guard = Guard.start({
      paths: [dir],
      policy: policyFrom({ rules: [] }),
      cache: false,
      log: (r) => stream.write(`${JSON.stringify(r)}\n`),
      ownPaths: [logFile],
    });
    try {
      for (let i = 0; i < 20; i++) assert.equal((await openInChild(`${dir}/f`, { timeoutMs: 5000 })).ok, true);
      // Our own async reads of the guarded log are answered at once.
      await new Promise<void>((r) => stream.write('', () => r()));
      const lines = (await deadline(fs.promises.readFile(logFile, 'utf8'), 5000, 'reading the guarded log')).trim().split('\n');
      assert.equal(lines.length, 20);
    } finally {
      await guard.close();
      stream.end();
    }
  });

  /** Opens of one file made through `floodUnreadLog`. */
  const FLOOD_OPENS = 25_000;

  /**
   * `fan guard --json --no-cache` on a fresh directory, with a stdout nobody reads, and
   * {@link FLOOD_OPENS} opens of a file there by a child: the output fills the pipe after a few
   * hundred lines, and the guard's 4 MiB of queued lines after about 17,000. Resolves once every
   * open was answered; kills the guard if they were not.
   */
  const floodUnreadLog = async (name: string) => {
    const d = `${loop.fs.dir}/${name}`;
    fs.mkdirSync(d);
    fs.writeFileSync(`${d}/f`, 'f');
    const policyFile = `${loop.fs.dir}/../${name}-policy.json`;
    fs.writeFileSync(policyFile, JSON.stringify({ default: 'allow', timeoutMs: 2000, rules: [] }));
    const guard = await startGuardCli(['guard', '--policy', policyFile, '--json', '--no-cache', d], 'pipe');
    try {
      const r = await runInChild(
        `const fs = require('node:fs'); for (let i = 0; i < ${FLOOD_OPENS}; i++) fs.closeSync(fs.openSync(process.argv[1], 'r')); console.log('done');`,
        { args: [`${d}/f`], timeoutMs: 60_000 },
      );
      assert.equal(r.stdout.trim(), 'done', r.stderr);
    } catch (err) {
      guard.child.kill('SIGKILL');
      await guard.exited;
      throw err;
    } finally {
      fs.rmSync(policyFile, { force: true });
    }
    return { ...guard, file: `${d}/f` };
  };

  test('fan guard --json whose reader stalls: opens are still answered, and the log says how many lines it dropped', async () => {
    const { child, exited, stderr, file } = await floodUnreadLog('stalled-log');
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (x: string) => (out += x));
    child.kill('SIGTERM');
    assert.equal(await deadline(exited, 20_000, 'fan guard to exit on SIGTERM'), 0, stderr());
    const lines = out.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { path?: string; dropped?: number });
    const decisions = lines.filter((l) => l.path === file).length;
    const dropped = lines.reduce((sum, l) => sum + (l.dropped ?? 0), 0);
    assert.ok(dropped > 0, `the reader stalled, yet nothing was dropped (${decisions} lines)`);
    assert.equal(decisions + dropped, FLOOD_OPENS, 'every decision is either written or counted as dropped');
  });

  test('fan guard --json whose reader never reads: SIGTERM still ends it, and stderr says lines were dropped', async () => {
    const { child, exited, stderr } = await floodUnreadLog('never-read-log');
    try {
      // Nobody ever reads stdout: the exit must neither wait for the reader nor hang in a write.
      child.kill('SIGTERM');
      assert.equal(await deadline(exited, 20_000, 'fan guard to exit on SIGTERM with its stdout full'), 0, stderr());
      assert.match(stderr(), /decision log: the reader stopped reading; up to \d+ last lines were dropped/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a pre-content guard refuses to guard its own log (it would wait on itself)', () => {
    assert.throws(
      () =>
        Guard.start({
          paths: [loop.fs.dir],
          policy: policyFrom({ rules: [{ match: { path: '**/*.x' }, verdict: 'deny', errno: 'EIO' }] }),
          ownPaths: [`${loop.fs.dir}/log.ndjson`],
        }),
      (e: unknown) => e instanceof FanotifyError && e.code === 'EDEADLK' && /would wait on itself/.test(e.message),
    );
  });

  test('configuration errors name the problem', () => {
    assert.throws(() => Guard.start({ paths: [loop.fs.dir], policy: policyFrom({ rules: [{ verdict: 'ask' }] }) }), /"ask" rules but no handler/);
    assert.throws(() => Guard.start({ paths: [loop.fs.dir], policy: policyFrom({ rules: [{ verdict: 'scan' }] }) }), /"scan" rules but no scanner/);
    assert.throws(() => parsePolicy('rules:\n  - verdict: nope\n', 'p.yaml'), /p\.yaml:2:14: rules\[0\]\.verdict: Invalid option/);
  });

  test('a scanner decides "scan" rules; infected files are denied', async () => {
    // Read through the event's fd (it raises no events); reopening the path synchronously from
    // the thread that answers would wait on ourselves.
    const scanner = functionScanner('test', (t) => {
      const buf = Buffer.alloc(64);
      const n = fs.readSync(t.fd, buf, 0, 64, 0);
      return buf.toString('utf8', 0, n).includes('EVIL') ? { verdict: 'infected', signature: 'Test.Evil' } : { verdict: 'clean' };
    });
    const { guard, log } = setup({ rules: [{ verdict: 'scan' }] }, { scanner });
    try {
      await fs.promises.writeFile(`${dir}/evil.bin`, 'EVIL');
      assert.equal((await openInChild(`${dir}/evil.bin`)).code, 'EPERM');
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log.find((r) => r.path.endsWith('evil.bin'))?.signature, 'Test.Evil');
    } finally {
      await guard.close();
    }
  });

  test('a scan the deadline cut off still reads its own file, and its fd is closed when the scan ends', async () => {
    // The deadline answers the opener; the scanner is still at work and reads the event fd
    // afterwards. Were that fd closed with the answer, its number could by then name another
    // event's file (or a pipe), and a late "infected" would quarantine the wrong file.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const scanning = new Promise<void>((r) => (started = r));
    let read = '';
    let finished!: () => void;
    const done = new Promise<void>((r) => (finished = r));
    const scanner = functionScanner('slow', async (t) => {
      started();
      await gate;
      try {
        const buf = Buffer.alloc(64);
        read = buf.toString('utf8', 0, fs.readSync(t.fd, buf, 0, 64, 0));
      } catch (err) {
        read = `error ${(err as NodeJS.ErrnoException).code}`;
      }
      setImmediate(finished);
      return { verdict: 'clean' };
    });
    const { guard, log } = setup({ timeoutMs: 200, onError: 'allow', rules: [{ match: { path: '**/plain.txt' }, verdict: 'scan' }] }, { scanner });
    const openFds = (): number => fs.readdirSync('/proc/self/fd').length;
    try {
      const fdsBefore = openFds();
      const opened = openInChild(`${dir}/plain.txt`, { timeoutMs: 5000 });
      await scanning;
      assert.equal((await opened).ok, true, 'answered by the deadline');
      release();
      await done;
      assert.equal(read, 'plain.txt');
      assert.deepEqual(log.map((r) => [r.late, r.cached]), [[true, false]]);
      assert.equal(openFds(), fdsBefore, 'the event fd was closed once the scan ended');
    } finally {
      release();
      await guard.close();
    }
  });

  test('a write that ends between the scan and the ignore mark leaves the file uncached', async () => {
    // The writer finishes after the scanner has read the file and before the guard marks it: the
    // kernel drops an ignore mark on modification only once the mark is there, so a mark placed
    // now would let every later open read content nobody scanned.
    let scans = 0;
    const scanner = functionScanner('racy', async () => {
      if (++scans === 1) await fs.promises.appendFile(`${dir}/plain.txt`, ' unscanned');
      return { verdict: 'clean' };
    });
    const { guard, log } = setup({ rules: [{ verdict: 'scan' }] }, { scanner });
    try {
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.deepEqual(log.map((r) => r.cached), [false]);
      assert.equal(guard.metrics.cacheRefused, 1);
      // Decided again, and this time nothing changed while it was scanned: cached.
      assert.deepEqual([(await openInChild(`${dir}/plain.txt`, { read: true })).data, scans], ['plain.txt unscanned', 2]);
      assert.deepEqual(log.map((r) => r.cached), [false, true]);
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.equal(log.length, 2, 'the kernel answered the third open itself');
    } finally {
      await guard.close();
    }
  });

  test('a file open for writing while it is scanned is not cached', async () => {
    // A write under way while the scanner reads may end before the mark without changing the
    // file's ctime again: the scan result of a file someone can write to is not cached.
    const scanner = functionScanner('clean', () => ({ verdict: 'clean' }));
    const { guard, log } = setup({ rules: [{ verdict: 'scan' }] }, { scanner });
    const writer = await fs.promises.open(`${dir}/plain.txt`, 'r+');
    let writerOpen = true;
    try {
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.deepEqual(log.map((r) => r.cached), [false]);
      await writer.close();
      writerOpen = false;
      assert.equal((await openInChild(`${dir}/plain.txt`)).ok, true);
      assert.deepEqual(log.map((r) => r.cached), [false, true]);
      assert.equal(guard.metrics.cacheRefused, 1);
    } finally {
      if (writerOpen) await writer.close();
      await guard.close();
    }
  });

  test('logAllowed false: the log gets denials, audits, detections and failures, not plain allows', async () => {
    const scanner = functionScanner('test', (t) => {
      const buf = Buffer.alloc(64);
      const text = buf.toString('utf8', 0, fs.readSync(t.fd, buf, 0, 64, 0));
      if (text === 'BROKEN') throw new Error('cannot scan this');
      return text === 'EVIL' ? { verdict: 'infected', signature: 'Test.Evil' } : { verdict: 'clean' };
    });
    const { guard, log } = setup(
      {
        default: 'allow',
        rules: [
          { name: 'keys', match: { path: '**/*.key' }, verdict: 'deny' },
          { name: 'tools', match: { path: '**/*.sh' }, verdict: 'audit' },
          { name: 'bins', match: { path: '**/*.bin' }, verdict: 'scan' },
        ],
      },
      { scanner, logAllowed: false },
    );
    try {
      // Async writes: a synchronous one from the thread that answers would wait on itself.
      for (const [f, text] of [['evil.bin', 'EVIL'], ['broken.bin', 'BROKEN'], ['clean.bin', 'CLEAN']]) await fs.promises.writeFile(`${dir}/${f!}`, text!);
      const names = ['secret.key', 'tool.sh', 'plain.txt', 'evil.bin', 'broken.bin', 'clean.bin'];
      const codes = [];
      for (const f of names) codes.push((await openInChild(`${dir}/${f}`)).code);
      assert.deepEqual(codes, ['EPERM', null, null, 'EPERM', null, null]);
      assert.deepEqual(
        log.map((r) => [r.path.slice(dir.length + 1), r.answer, r.rule, r.signature ?? r.error ?? null, r.comm !== undefined]),
        [
          ['secret.key', 'deny', 'keys', null, true],
          ['tool.sh', 'allow', 'tools', null, true],
          ['evil.bin', 'deny', 'bins', 'Test.Evil', true],
          ['broken.bin', 'allow', 'bins', `scanner test failed on ${dir}/broken.bin: cannot scan this`, true],
        ],
      );
      // Every decision is still counted.
      assert.equal(guard.metrics.decisions, names.length);
    } finally {
      await guard.close();
    }
  });

  test('dry run decides and logs, but allows', async () => {
    const { guard, log } = setup({ rules: [{ match: { path: '**/*.key' }, verdict: 'deny' }] }, { dryRun: true });
    try {
      assert.equal((await openInChild(`${dir}/secret.key`)).ok, true);
      assert.deepEqual([log[0]?.decision, log[0]?.answer, log[0]?.dryRun], ['deny', 'allow', true]);
    } finally {
      await guard.close();
    }
  });

  test('SIGKILL of the guard releases every waiting process (the kernel answers on close)', async () => {
    dir = `${loop.fs.dir}/g${n++}`;
    fs.mkdirSync(dir);
    fs.writeFileSync(`${dir}/f`, 'data');
    const url = new URL('../src/guard/index.js', import.meta.url).href;
    const guardProc = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { Guard, policyFrom } = await import(${JSON.stringify(url)});
         Guard.start({ paths: [${JSON.stringify(dir)}], policy: policyFrom({ timeoutMs: 600000, rules: [{ verdict: 'ask' }] }),
                       handler: () => new Promise(() => {}) });
         console.log('ready');`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await deadline(new Promise((r) => guardProc.stdout!.once('data', r)), 10_000, 'the guard child to start');
      const openers = Array.from({ length: 5 }, () => openInChild(`${dir}/f`, { read: true, timeoutMs: 20_000 }));
      await new Promise((r) => setTimeout(r, 500)); // they are now blocked in open()
      guardProc.kill('SIGKILL');
      const results = await Promise.all(openers);
      for (const r of results) assert.deepEqual([r.ok, r.data], [true, 'data']);
    } finally {
      guardProc.kill('SIGKILL');
    }
  });
});

describe('on-access scanning with a real clamd', { timeout: 180_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4' });
  let clamd: ClamdInstance;
  before(async () => {
    clamd = await startClamd();
  });
  after(async () => clamd?.stop());

  for (const mode of ['fildes', 'instream'] as const) {
    test(`${mode}: files with the test signature are denied, others allowed`, async () => {
      const dir = `${loop.fs.dir}/${mode}`;
      fs.mkdirSync(dir);
      fs.writeFileSync(`${dir}/clean.txt`, 'hello');
      fs.writeFileSync(`${dir}/bad.txt`, `prefix ${TEST_MALWARE} suffix`);
      const scanner = new ClamdScanner({ socket: clamd.socket, mode });
      const log: DecisionRecord[] = [];
      const guard = Guard.start({
        paths: [dir],
        policy: policyFrom({ rules: [{ verdict: 'scan' }], timeoutMs: 20_000 }),
        scanner,
        log: (r) => log.push(r),
        excludePids: [clamd.pid],
      });
      try {
        const bad = await openInChild(`${dir}/bad.txt`, { timeoutMs: 20_000 });
        assert.deepEqual([bad.ok, bad.code], [false, 'EPERM']);
        const clean = await openInChild(`${dir}/clean.txt`, { read: true, timeoutMs: 20_000 });
        assert.deepEqual([clean.ok, clean.data], [true, 'hello']);
        assert.equal(log.find((r) => r.path.endsWith('bad.txt'))?.signature, TEST_SIGNATURE_REPORTED);
        assert.deepEqual(
          log.map((r) => [r.path.slice(dir.length + 1), r.answer, r.cached]),
          [
            ['bad.txt', 'deny', false],
            ['clean.txt', 'allow', true],
          ],
        );
        // Cached: the kernel answers the next open itself.
        assert.equal((await openInChild(`${dir}/clean.txt`, { timeoutMs: 20_000 })).ok, true);
        assert.equal(log.length, 2);
      } finally {
        await guard.close();
        await scanner.close();
      }
    });
  }

  test('fan scan --prevent --json --log --log-clean: decisions are written in batches while it runs, and the last ones at SIGTERM', async () => {
    const dir = `${loop.fs.dir}/cli`;
    fs.mkdirSync(dir);
    const files = Array.from({ length: 20 }, (_, i) => `${dir}/f${i}`);
    files.forEach((f, i) => fs.writeFileSync(f, i === 7 ? `x ${TEST_MALWARE} y` : `clean ${i}`));
    fs.writeFileSync(`${dir}/last`, 'last');
    const logFile = `${loop.fs.dir}/../scan-log.ndjson`;
    const lines = (): Record<string, unknown>[] =>
      (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const { child, exited, stderr } = await startGuardCli(['scan', '--clamd', clamd.socket, '--prevent', '--json', '--log-clean', '--log', logFile, dir], 'ignore');
    try {
      const opened = await runInChild(
        `const fs = require('node:fs');
         for (const f of process.argv.slice(1)) {
           try { fs.closeSync(fs.openSync(f, 'r')); process.stdout.write('ok\\n'); } catch (e) { process.stdout.write(e.code + '\\n'); }
         }`,
        { args: files, timeoutMs: 30_000 },
      );
      assert.deepEqual(opened.stdout.trim().split('\n'), files.map((_, i) => (i === 7 ? 'EPERM' : 'ok')));
      // Written on their own within the batch interval (20 ms), long before any exit.
      await deadline(
        (async () => {
          while (lines().length < files.length) await new Promise((r) => setTimeout(r, 20));
        })(),
        5_000,
        'the decision lines of a running fan scan',
      );
      // The last decision is still queued when SIGTERM arrives: the exit writes it.
      const last = await openInChild(`${dir}/last`, { timeoutMs: 20_000 });
      assert.deepEqual([last.ok, last.code], [true, null]);
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      throw err;
    }
    child.kill('SIGTERM');
    assert.equal(await deadline(exited, 20_000, 'fan scan to exit on SIGTERM'), 0, stderr());
    const log = lines();
    assert.deepEqual(
      log.map((r) => [r.path, r.answer, r.signature ?? null]),
      [...files, `${dir}/last`].map((f, i) => [f, i === 7 ? 'deny' : 'allow', i === 7 ? TEST_SIGNATURE_REPORTED : null]),
    );
    fs.rmSync(logFile);
  });

  test('fan scan without --log-clean logs the detection only (clean files are counted, not logged)', async () => {
    const dir = `${loop.fs.dir}/cli-quiet`;
    fs.mkdirSync(dir);
    const files = Array.from({ length: 6 }, (_, i) => `${dir}/f${i}`);
    files.forEach((f, i) => fs.writeFileSync(f, i === 2 ? `x ${TEST_MALWARE} y` : `clean ${i}`));
    const { child, exited, stderr } = await startGuardCli(['scan', '--clamd', clamd.socket, '--prevent', '--json', dir], 'pipe');
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
    try {
      const opened = await runInChild(
        `const fs = require('node:fs');
         for (const f of process.argv.slice(1)) {
           try { fs.closeSync(fs.openSync(f, 'r')); process.stdout.write('ok\\n'); } catch (e) { process.stdout.write(e.code + '\\n'); }
         }`,
        { args: files, timeoutMs: 30_000 },
      );
      assert.deepEqual(opened.stdout.trim().split('\n'), files.map((_, i) => (i === 2 ? 'EPERM' : 'ok')));
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await deadline(exited, 20_000, 'fan scan to exit on SIGTERM'), 0, stderr());
    const log = out
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      log.map((r) => [r.path, r.answer, r.signature]),
      [[files[2], 'deny', TEST_SIGNATURE_REPORTED]],
    );
    assert.match(stderr(), /\{"metrics":\{"decisions":6,/); // every file decided
  });
});
