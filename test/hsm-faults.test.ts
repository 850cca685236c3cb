import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { mkdir, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { publish, requestControl, type MountHandle, type MountOptions } from '../src/hsm/index.js';
import { socketPath } from '../src/hsm/registry.js';
import { startFaultyHttp, type FaultyHttp, type Fault } from './helpers/faulty-http.js';
import { makeSourceTree, readInChild, useHsmMounts } from './helpers/hsm.js';
import { deadline } from './helpers/proc.js';

const MiB = 1024 * 1024;
const { loop, stateRoot, mount } = useHsmMounts(128);
const FILES = { 'f1.bin': 2 * MiB + 5, 'f2.bin': 3 * MiB, 'f3.bin': MiB, 'f4.bin': 2 * MiB, 'd/f5.bin': 4 * MiB, 'd/long.bin': 40 * MiB + 7 };
let src: ReturnType<typeof makeSourceTree>;
let server: FaultyHttp;
const logs: string[] = [];

before(async () => {
  src = makeSourceTree(FILES, 7);
  await publish(src.root, { chunkSize: MiB });
  server = await startFaultyHttp(src.root);
});
after(async () => {
  await server.close();
  src.cleanup();
});

function mountAt(name: string, timeoutMs: number, stateName = name, source = server.url, extra: Partial<MountOptions> = {}): Promise<MountHandle> {
  return mount(name, { source, stateName, timeoutMs, log: (m) => { logs.push(m); if (process.env['HSM_DEBUG']) process.stderr.write(`hsm: ${m}\n`); }, ...extra });
}

async function workerPid(target: string): Promise<number> {
  const r = await requestControl(socketPath(target), { op: 'status', paths: [] });
  return r['workerPid'] as number;
}

async function fileState(target: string, rel: string): Promise<string> {
  const r = await requestControl(socketPath(target), { op: 'status', paths: [join(target, rel)] });
  return ((r['files'] as { state: string }[])[0] ?? { state: 'none' }).state;
}

const want = (rel: string): Buffer => src.content.get(rel) as Buffer;

test('every kind of source failure gives EIO, stores nothing, and a later read succeeds', async () => {
  const h = await mountAt('faults', 800);
  const faults: Fault[] = ['error', 'truncate', 'corrupt', 'reset', 'stall'];
  for (const fault of faults) {
    server.fault = fault;
    const r = await readInChild(join(h.target, 'f1.bin'), MiB + 10, 1000);
    assert.deepEqual([r.ok, r.errno], [false, 'EIO'], `fault ${fault}`);
    // Deadline 800 ms, two retries with backoff: a stall ends in a few seconds, never hangs.
    assert.ok(r.ms < 15_000, `fault ${fault} took ${r.ms} ms`);
    assert.equal(await fileState(h.target, 'f1.bin'), 'placeholder', `fault ${fault}: ${server.ranges.join(' ')}`);
  }
  server.fault = 'none';
  const ok = await readInChild(join(h.target, 'f1.bin'));
  assert.ok(ok.ok, ok.errno);
  assert.ok(ok.data.equals(want('f1.bin')));
  assert.ok(logs.some((l) => /f1\.bin @1048576\+4096: .*HTTP 500/.test(l)), logs.join('\n'));
  assert.ok(logs.some((l) => /does not match its SHA-256/.test(l)));
});

test('offline: present content and listings keep working, missing content fails fast with EIO', async () => {
  const h = await mountAt('offline', 2000);
  server.fault = 'none';
  const r = await readInChild(join(h.target, 'f3.bin'));
  assert.ok(r.data.equals(want('f3.bin')));
  server.fault = 'reset';
  assert.deepEqual(readdirSync(join(h.target)).sort(), ['d', 'f1.bin', 'f2.bin', 'f3.bin', 'f4.bin', 'link', 'true']);
  const again = await readInChild(join(h.target, 'f3.bin'));
  assert.ok(again.ok && again.data.equals(want('f3.bin')));
  const missing = await readInChild(join(h.target, 'f2.bin'), 0, 10);
  assert.deepEqual([missing.ok, missing.errno], [false, 'EIO']);
  assert.ok(missing.ms < 5000, `took ${missing.ms} ms`);
  server.fault = 'none';
});

test('SIGKILL of the worker during cold reads: readers get EIO, never zeros; the restarted worker serves the next read', async () => {
  const h = await mountAt('crash', 30_000);
  server.fault = 'stall';
  const arrived = new Promise<void>((resolve) => {
    const files = new Set<string>();
    server.onRange = (url) => {
      files.add(url);
      if (files.size === 3) resolve();
    };
  });
  const readers = ['f2.bin', 'f4.bin', 'd/f5.bin'].map((rel) => readInChild(join(h.target, rel), 0, 2 * MiB));
  await arrived;
  server.onRange = undefined;
  const pid = await workerPid(h.target);
  process.kill(pid, 'SIGKILL');
  const results = await Promise.all(readers);
  for (const r of results) {
    assert.deepEqual([r.ok, r.errno], [false, 'EIO']);
    assert.ok(r.ms < 20_000);
  }
  server.fault = 'none';
  let next = pid;
  const deadline = Date.now() + 20_000;
  while (next === pid && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    next = await workerPid(h.target).catch(() => pid);
  }
  assert.notEqual(next, pid, 'the worker was not restarted');
  for (const rel of ['f2.bin', 'd/f5.bin']) {
    const r = await readInChild(join(h.target, rel));
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(want(rel)), rel);
  }
  assert.ok(logs.some((l) => /worker SIGKILL; restarting/.test(l)), logs.join('\n'));
});

test('SIGKILL while the source answers: every read returns the source bytes or EIO, never zeros', async () => {
  const h = await mountAt('crash2', 5000);
  server.fault = 'none';
  for (let round = 0; round < 3; round++) {
    await requestControl(socketPath(h.target), { op: 'evict', paths: [h.target] });
    const readers = ['f2.bin', 'f4.bin', 'd/f5.bin'].map((rel) => readInChild(join(h.target, rel)).then((r) => ({ rel, r })));
    await new Promise((r) => setTimeout(r, 30 + round * 40));
    const pid = await workerPid(h.target);
    process.kill(pid, 'SIGKILL');
    for (const { rel, r } of await Promise.all(readers)) {
      if (r.ok) assert.ok(r.data.equals(want(rel)), `${rel}: content differs from the source`);
      else assert.equal(r.errno, 'EIO');
    }
    const deadline = Date.now() + 20_000;
    while ((await workerPid(h.target).catch(() => pid)) === pid && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  }
  for (const rel of ['f2.bin', 'f4.bin', 'd/f5.bin']) {
    const r = await readInChild(join(h.target, rel));
    assert.ok(r.ok && r.data.equals(want(rel)), rel);
  }
});

test('unmount and mount again keeps the range map: present files need no source', async () => {
  server.fault = 'none';
  let h = await mountAt('restart', 2000);
  const r = await readInChild(join(h.target, 'f4.bin'));
  assert.ok(r.data.equals(want('f4.bin')));
  await readInChild(join(h.target, 'f2.bin'), MiB, 10);
  await h.unmount();
  assert.deepEqual(readdirSync(h.target), []);
  server.fault = 'reset';
  h = await mountAt('restart', 2000);
  assert.equal(await fileState(h.target, 'f4.bin'), 'present');
  assert.equal(await fileState(h.target, 'f2.bin'), 'partial');
  const again = await readInChild(join(h.target, 'f4.bin'));
  assert.ok(again.ok && again.data.equals(want('f4.bin')));
  const head = await readInChild(join(h.target, 'f2.bin'), MiB, 100);
  assert.ok(head.ok && head.data.equals(want('f2.bin').subarray(MiB, MiB + 100)));
  const tail = await readInChild(join(h.target, 'f2.bin'), 2 * MiB, 100);
  assert.deepEqual([tail.ok, tail.errno], [false, 'EIO']);
  server.fault = 'none';
});

test('a crash loop: after more than 5 worker deaths in a minute the supervisor answers EIO itself', async () => {
  server.fault = 'none';
  const h = await mountAt('loop', 2000);
  let pid = await workerPid(h.target);
  for (let death = 1; death <= 6; death++) {
    process.kill(pid, 'SIGKILL');
    if (death === 6) break;
    const deadline = Date.now() + 20_000;
    let next = pid;
    while (next === pid && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      next = await workerPid(h.target).catch(() => pid);
    }
    assert.notEqual(next, pid, `no restart after death ${death}`);
    pid = next;
  }
  const deadline = Date.now() + 10_000;
  while (!logs.some((l) => /died 6 times in a minute/.test(l)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(logs.some((l) => /died 6 times in a minute; answering every access with EIO until unmount/.test(l)), logs.join('\n'));
  const r = await readInChild(join(h.target, 'f1.bin'), 0, 10);
  assert.deepEqual([r.ok, r.errno], [false, 'EIO']);
  await h.unmount();
  assert.deepEqual(readdirSync(h.target), []);
});

/** Wait (up to 20 s) until a worker other than `pid` serves the mount. */
async function nextWorker(target: string, pid: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while ((await workerPid(target).catch(() => pid)) === pid) {
    assert.ok(Date.now() < deadline, 'the worker was not restarted');
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('a read is answered only once its chunk is durable and recorded: a SIGKILL right after it loses nothing', async () => {
  server.fault = 'none';
  const h = await mountAt('durable', 5000);
  // Chunk 1 of 3 alone: not from the start, so nothing else is fetched.
  const r = await readInChild(join(h.target, 'f2.bin'), MiB + 5, 100);
  assert.ok(r.ok && r.data.equals(want('f2.bin').subarray(MiB + 5, MiB + 105)), r.errno);
  const pid = await workerPid(h.target);
  process.kill(pid, 'SIGKILL');
  server.fault = 'reset';
  try {
    await nextWorker(h.target, pid);
    assert.equal(await fileState(h.target, 'f2.bin'), 'partial');
    const again = await readInChild(join(h.target, 'f2.bin'), MiB, MiB);
    assert.ok(again.ok, again.errno);
    assert.ok(again.data.equals(want('f2.bin').subarray(MiB, 2 * MiB)));
  } finally {
    server.fault = 'none';
  }
});

test('--allow-before-durable: reads are answered before the flush, and the content is the same', async () => {
  server.fault = 'none';
  const h = await mountAt('fast', 5000, 'fast', server.url, { syncBeforeAllow: false });
  for (const rel of ['f1.bin', 'd/f5.bin']) {
    const r = await readInChild(join(h.target, rel));
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(want(rel)), rel);
  }
  const deadline = Date.now() + 10_000;
  while ((await fileState(h.target, 'd/f5.bin')) !== 'present') {
    assert.ok(Date.now() < deadline, 'not recorded as present within 10 s');
    await new Promise((r) => setTimeout(r, 50));
  }
});

test('fetched chunks never resurrect the tail of a file the user truncated', async () => {
  server.fault = 'none';
  const h = await mountAt('trunc', 2000);
  const path = join(h.target, 'f2.bin');
  await truncate(path, MiB + 100);
  const r = await readInChild(path);
  assert.ok(r.ok, r.errno);
  assert.ok(r.data.equals(want('f2.bin').subarray(0, MiB + 100)));
  assert.equal(await fileState(h.target, 'f2.bin'), 'local');
  const tail = await readInChild(path, MiB + 100, 4096);
  assert.deepEqual([tail.ok, tail.data.length], [true, 0]);
});

/** The byte ranges of `ranges` ("bytes=a-b"), sorted. */
function spans(ranges: readonly string[]): [number, number][] {
  return ranges.map((r) => r.slice(6).split('-').map(Number) as [number, number]).sort((x, y) => x[0] - y[0]);
}

test('two reads from offset 0 get the whole file streamed in a few requests, each byte fetched once', async () => {
  server.fault = 'none';
  const h = await mountAt('stream', 5000);
  const seen: string[] = [];
  server.onRange = (url, range) => {
    if (url === '/d/long.bin') seen.push(range);
  };
  try {
    // 128 KiB in two 64 KiB reads: a read-ahead window would stop 24 chunks ahead of them.
    const head = await readInChild(join(h.target, 'd/long.bin'), 0, 128 * 1024);
    assert.ok(head.ok, head.errno);
    const deadline = Date.now() + 20_000;
    while ((await fileState(h.target, 'd/long.bin')) !== 'present') {
      assert.ok(Date.now() < deadline, `not present after 20 s: ${seen.join(' ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const r = await readInChild(join(h.target, 'd/long.bin'));
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(want('d/long.bin')));
  } finally {
    server.onRange = undefined;
  }
  assert.ok(seen.length <= 8, seen.join(' '));
  let next = 0;
  for (const [a, b] of spans(seen)) {
    assert.equal(a, next, seen.join(' '));
    next = b + 1;
  }
  assert.equal(next, 40 * MiB + 7);
});

test('a stream cut mid-body keeps the chunks verified before the cut and fetches only the rest again', async () => {
  server.fault = 'none';
  const h = await mountAt('cut', 5000);
  const seen: string[] = [];
  // Chunk 1 alone (not read from the start), then the read-ahead of chunks 2-3 in one request,
  // cut after chunk 2: only chunk 3 is asked for again.
  server.onRange = (url, range) => {
    if (url !== '/d/f5.bin') return;
    seen.push(range);
    server.fault = seen.length === 2 ? 'truncate' : 'none';
  };
  try {
    const r = await readInChild(join(h.target, 'd/f5.bin'), MiB, 3 * MiB);
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(want('d/f5.bin').subarray(MiB)));
  } finally {
    server.onRange = undefined;
    server.fault = 'none';
  }
  assert.deepEqual(seen, [`bytes=${MiB}-${2 * MiB - 1}`, `bytes=${2 * MiB}-${4 * MiB - 1}`, `bytes=${3 * MiB}-${4 * MiB - 1}`]);
  assert.equal(await fileState(h.target, 'd/f5.bin'), 'partial');
});

test('fan hsm mount whose stderr nobody reads: the supervisor still logs, serves and stops on SIGTERM', async () => {
  // A FIFO filled up before the mount starts: a blocking write(2) to it would never return, and
  // an unbounded queue would keep every line in memory.
  const dir = mkdtempSync(join(tmpdir(), 'fan-hsm-stderr-'));
  const fifo = join(dir, 'stderr.fifo');
  execFileSync('mkfifo', [fifo]);
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const fillFd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  const errFd = openSync(fifo, constants.O_WRONLY);
  try {
    for (;;) {
      try {
        writeSync(fillFd, Buffer.alloc(4096, 0x2e));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw err;
      }
    }
    const target = join(loop.fs.dir, 'stalled-stderr');
    await mkdir(target);
    server.fault = 'error';
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const child = spawn(process.execPath, [cli, 'hsm', 'mount', '--json', server.url, target, '--state-dir', join(stateRoot, 'stalled-stderr')], { stdio: ['ignore', 'pipe', errFd] });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await deadline(
        new Promise<void>((resolve, reject) => {
          child.stdout!.setEncoding('utf8').on('data', (s: string) => s.includes('"mounted"') && resolve());
          child.once('exit', (code) => reject(new Error(`fan hsm mount exited ${code}`)));
        }),
        30_000,
        'fan hsm mount to be mounted',
      );
      // Each failed read makes the supervisor log a line to the full FIFO.
      for (let i = 0; i < 3; i++) {
        const r = await readInChild(join(target, 'f2.bin'), i * MiB, 4096);
        assert.deepEqual([r.ok, r.errno], [false, 'EIO']);
      }
      server.fault = 'none';
      const ok = await readInChild(join(target, 'f3.bin'));
      assert.ok(ok.data.equals(want('f3.bin')));
    } catch (err) {
      child.kill('SIGKILL');
      await exited;
      throw err;
    }
    child.kill('SIGTERM');
    try {
      assert.equal(await deadline(exited, 30_000, 'fan hsm mount to stop on SIGTERM with its stderr full'), 0);
    } catch (err) {
      const ps = execFileSync('ps', ['-o', 'pid,ppid,stat,wchan:30,args', '--ppid', String(child.pid), '-p', String(child.pid)], { encoding: 'utf8' });
      child.kill('SIGKILL');
      throw new Error(`${(err as Error).message}\n${ps}`);
    }
  } finally {
    server.fault = 'none';
    for (const fd of [errFd, fillFd, readFd]) closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
