import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { mkdir, writeFile, open, truncate } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { publish, mountTree, requestControl, mountOf, type MountHandle, type Manifest } from '../src/hsm/index.js';
import { socketPath } from '../src/hsm/registry.js';
import { createLoopFs } from './helpers/loopfs.js';
import { startNginx, type Nginx } from './helpers/nginx.js';
import { makeSourceTree, readInChild, useHsmMounts } from './helpers/hsm.js';
import { runFan, fanOk, CLI } from './helpers/journal.js';
import { mulberry32 } from './helpers/random.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const { loop, stateRoot, handles, mount } = useHsmMounts(256);

const FILES = { 'a/big.bin': 5 * MiB + 123, 'a/b/one.bin': MiB, 'small.txt': 100, 'empty': 0, 'page.bin': 4095, 'c/d/e/deep.bin': 2 * MiB + 1 };
let src: ReturnType<typeof makeSourceTree>;
let manifest: Manifest;

before(async () => {
  src = makeSourceTree(FILES);
  manifest = await publish(src.root, { chunkSize: MiB });
});
after(() => src.cleanup());

function mountAt(source: string, name: string, extra: { maxCacheSize?: number; evictHoldMs?: number } = {}): Promise<MountHandle> {
  return mount(name, { source, timeoutMs: 5000, log: (m) => { if (process.env['HSM_DEBUG']) process.stderr.write(`hsm: ${m}\n`); }, ...extra });
}

async function status(target: string, path = target): Promise<{ files: { path: string; state: string; percent: number; pinned: boolean }[]; workerPid: number }> {
  const r = await requestControl(socketPath(target), { op: 'status', paths: [path] });
  assert.ok(r.ok, r.error);
  return r as unknown as { files: { path: string; state: string; percent: number; pinned: boolean }[]; workerPid: number };
}

/** Wait (up to 10 s) for a state that follows an event the daemon sees asynchronously. */
async function waitForState(target: string, rel: string, want: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while ((await stateOf(target, rel)) !== want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await stateOf(target, rel), want);
}

async function evictAll(target: string, path: string): Promise<void> {
  const r = await requestControl(socketPath(target), { op: 'evict', paths: [path] });
  assert.ok(r.ok, r.error);
}

async function stateOf(target: string, rel: string): Promise<string> {
  const s = await status(target, join(target, rel));
  const f = s.files[0];
  return f ? (f.state === 'partial' ? `partial ${f.percent}%` : f.state) + (f.pinned ? ' pinned' : '') : 'none';
}

describe('hsm mount of a local directory', () => {
  let h: MountHandle;
  before(async () => {
    h = await mountAt(src.root, 'local');
  });

  test('placeholders carry the published metadata before any content is fetched', async () => {
    for (const e of manifest.entries) {
      const st = lstatSync(join(h.target, e.path));
      assert.equal(st.mode & 0o7777, e.mode, e.path);
      assert.ok(Math.abs(st.mtimeMs - e.mtimeMs) < 1, `${e.path}: mtime ${st.mtimeMs} vs ${e.mtimeMs}`);
      assert.equal(st.uid, e.uid);
      if (e.type === 'file') assert.equal(st.size, e.size, e.path);
      if (e.type === 'symlink') assert.equal(readlinkSync(join(h.target, e.path)), e.target);
    }
    assert.equal(await stateOf(h.target, 'a/big.bin'), 'placeholder');
    assert.equal(await stateOf(h.target, 'empty'), 'present');
  });

  test('random ranges read through the target equal the source, fetching only what they cover', async () => {
    const rand = mulberry32(99);
    const big = src.content.get('a/big.bin') as Buffer;
    const r0 = await readInChild(join(h.target, 'a/big.bin'), 3 * MiB + 17, 100);
    assert.ok(r0.ok, r0.errno);
    assert.deepEqual(r0.data, big.subarray(3 * MiB + 17, 3 * MiB + 117));
    assert.equal(await stateOf(h.target, 'a/big.bin'), 'partial 16%');
    for (let i = 0; i < 12; i++) {
      const off = rand() % big.length;
      const len = 1 + (rand() % (2 * MiB));
      const r = await readInChild(join(h.target, 'a/big.bin'), off, len);
      assert.ok(r.ok, r.errno);
      assert.ok(r.data.equals(big.subarray(off, off + len)), `range ${off}+${len}`);
    }
    const page = await readInChild(join(h.target, 'page.bin'));
    assert.ok(page.data.equals(src.content.get('page.bin') as Buffer));
  });

  test('concurrent readers of one cold file all get the source bytes', async () => {
    const want = src.content.get('c/d/e/deep.bin') as Buffer;
    const reads = await Promise.all([0, 1, 2, 3].map(() => readInChild(join(h.target, 'c/d/e/deep.bin'))));
    for (const r of reads) {
      assert.ok(r.ok, r.errno);
      assert.ok(r.data.equals(want));
    }
    assert.equal(await stateOf(h.target, 'c/d/e/deep.bin'), 'present');
  });

  test('mmap of a cold file and exec of a lazily fetched ELF binary work', async () => {
    const m = await readInChild(join(h.target, 'a/b/one.bin'), 0, -1, 'mmap');
    assert.ok(m.ok, m.errno);
    assert.ok(m.data.equals(src.content.get('a/b/one.bin') as Buffer));
    assert.equal(await stateOf(h.target, 'true'), 'placeholder');
    const { stdout } = await execFileP(join(h.target, 'true'), [], { timeout: 20_000 });
    assert.equal(stdout, '');
    assert.equal(await stateOf(h.target, 'true'), 'present');
  });

  test('a write to a partial file completes it from the source and makes it local, never evicted', async () => {
    const path = join(h.target, 'small.txt');
    assert.equal(await stateOf(h.target, 'small.txt'), 'placeholder');
    const fh = await open(path, 'r+');
    await fh.write(Buffer.from('XY'), 0, 2, 10);
    await fh.close();
    const want = Buffer.from(src.content.get('small.txt') as Buffer);
    want.write('XY', 10);
    const r = await readInChild(path);
    assert.ok(r.data.equals(want));
    await waitForState(h.target, 'small.txt', 'local');
    const out = await fanOk(['hsm', 'evict', '--json', path]);
    assert.deepEqual(JSON.parse(out), { path: 'small.txt', evicted: false, reason: 'local: modified here, never evicted' });
  });
});

/** `fan hsm mount --json` of the local source in a child; resolves with its first line (mounted). */
async function cliMount(name: string): Promise<{ target: string; child: ReturnType<typeof spawn>; exited: Promise<number | null>; line: string }> {
  const target = join(loop.fs.dir, name);
  await mkdir(target);
  const child = spawn(process.execPath, [CLI, 'hsm', 'mount', '--json', src.root, target, '--state-dir', join(stateRoot, name)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (out.includes('\n')) resolve(out.split('\n')[0] ?? '');
    });
    child.once('exit', (code) => reject(new Error(`fan hsm mount exited ${code}`)));
  });
  return { target, child, exited, line };
}

test('fan hsm mount in the foreground; unmount refuses while a file is open, then detaches', async () => {
  const { target, child, exited, line } = await cliMount('cli');
  try {
    assert.deepEqual(JSON.parse(line), { type: 'mounted', source: src.root, target, backing: join(loop.fs.dir, '.cli.fan-hsm', 'root'), stateDir: join(stateRoot, 'cli') });
    const r = await readInChild(join(target, 'a/b/one.bin'), 0, 10);
    assert.ok(r.data.equals((src.content.get('a/b/one.bin') as Buffer).subarray(0, 10)));
    const fh = await open(join(target, 'small.txt'), 'r');
    const busy = await runFan(['hsm', 'unmount', target]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /is busy: processes still use files in it/);
    await fh.close();
    await fanOk(['hsm', 'unmount', target]);
    assert.equal(await exited, 0);
    assert.deepEqual(readdirSync(target), []);
  } finally {
    child.kill('SIGKILL');
  }
});

test('execs of a cold ELF of many chunks, concurrent with a cold reader of it: all run, the reader gets the source bytes', async () => {
  // 4 KiB chunks: /bin/true spans about ten of them, so the reader and the execs race over a
  // file that is being filled, and every writable fd we hold on it must be gone before an exec
  // is let go (execve fails with ETXTBSY while anyone has the file open for writing).
  const tree = makeSourceTree({ 'x.bin': 10 }, 3);
  try {
    await publish(tree.root, { chunkSize: 4096 });
    const h = await mountAt(tree.root, 'exec4k');
    const elf = join(h.target, 'true');
    assert.equal(await stateOf(h.target, 'true'), 'placeholder');
    const reader = readInChild(elf);
    const runs = await Promise.allSettled([1, 2, 3].map(() => execFileP(elf, [], { timeout: 20_000 })));
    assert.deepEqual(runs.map((r) => (r.status === 'fulfilled' ? 'ran' : String((r.reason as Error).message))), ['ran', 'ran', 'ran']);
    const r = await reader;
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(readFileSync(join(tree.root, 'true'))));
    assert.equal(await stateOf(h.target, 'true'), 'present');
    await execFileP(elf, [], { timeout: 20_000 });
  } finally {
    tree.cleanup();
  }
});

test('a SIGKILLed supervisor: the worker keeps serving open files, unmounts once nothing uses the target, then exits', async () => {
  const { target, child, exited } = await cliMount('orphan');
  let worker = 0;
  try {
    worker = (await status(target)).workerPid;
    const fh = await open(join(target, 'a/big.bin'), 'r');
    try {
      child.kill('SIGKILL');
      await exited;
      await new Promise((r) => setTimeout(r, 1500));
      // Still mounted (the open file keeps it busy) and still served: never zeros.
      const r = await readInChild(join(target, 'a/big.bin'), 3 * MiB + 7, 1000);
      assert.ok(r.ok, r.errno);
      assert.ok(r.data.equals((src.content.get('a/big.bin') as Buffer).subarray(3 * MiB + 7, 3 * MiB + 1007)));
    } finally {
      await fh.close();
    }
    const deadline = Date.now() + 15_000;
    while (readdirSync(target).length > 0) {
      assert.ok(Date.now() < deadline, 'the orphaned worker did not unmount the target');
      await new Promise((r) => setTimeout(r, 100));
    }
    while (alive(worker)) {
      assert.ok(Date.now() < deadline, 'the orphaned worker did not exit');
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    child.kill('SIGKILL');
    if (worker && alive(worker)) process.kill(worker, 'SIGKILL');
  }
});

test('fan hsm mount --background returns once the tree is reachable; status and unmount reach the daemon, which then exits', async () => {
  const target = join(loop.fs.dir, 'bg');
  await mkdir(target);
  const out = await fanOk(['hsm', 'mount', '--background', '--json', src.root, target, '--state-dir', join(stateRoot, 'bg')], 30_000);
  assert.deepEqual(JSON.parse(out), { type: 'mounted', source: src.root, target, backing: join(loop.fs.dir, '.bg.fan-hsm', 'root'), stateDir: join(stateRoot, 'bg') });
  const supervisor = mountOf(target).pid;
  try {
    const r = await readInChild(join(target, 'c/d/e/deep.bin'));
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(src.content.get('c/d/e/deep.bin') as Buffer));
    assert.equal(await stateOf(target, 'c/d/e/deep.bin'), 'present');
    await fanOk(['hsm', 'unmount', target]);
    const deadline = Date.now() + 15_000;
    while (alive(supervisor)) {
      assert.ok(Date.now() < deadline, 'the background daemon did not exit after unmount');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(readdirSync(target), []);
  } finally {
    if (alive(supervisor)) process.kill(supervisor, 'SIGTERM');
  }
});

test('fan hsm mount --background on tmpfs fails with the daemon\'s message and its exit code', async () => {
  const tmp = await createLoopFs({ fstype: 'tmpfs' });
  try {
    const r = await runFan(['hsm', 'mount', '--background', src.root, tmp.dir, '--state-dir', join(stateRoot, 'bg-tmpfs')], 30_000);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /ext4\/xfs\/btrfs required for pre-content marks; target .* is tmpfs/);
    assert.match(r.stderr, /the background mount exited \(code 1\)/);
  } finally {
    await tmp.cleanup();
  }
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('a truncate of a placeholder hydrates the content under it first; the file is then local', async () => {
  const h = handles[0] as MountHandle;
  const path = join(h.target, 'page.bin');
  await evictAll(h.target, path);
  assert.equal(await stateOf(h.target, 'page.bin'), 'placeholder');
  await truncate(path, 4096 + 100);
  const grown = await readInChild(path);
  const want = Buffer.concat([src.content.get('page.bin') as Buffer, Buffer.alloc(101)]);
  assert.ok(grown.data.equals(want));
  await waitForState(h.target, 'page.bin', 'local');
});

describe('hsm mount served by nginx', () => {
  let nginx: Nginx;
  let h: MountHandle;
  before(async () => {
    nginx = await startNginx(src.root);
    h = await mountAt(nginx.url, 'nginx', { evictHoldMs: 8000 });
  });
  after(async () => {
    await nginx.stop();
  });

  test('a random 4 KiB read fetches exactly the chunk covering it', async () => {
    const before = await nginx.bytesServed();
    const big = src.content.get('a/big.bin') as Buffer;
    const r = await readInChild(join(h.target, 'a/big.bin'), 2 * MiB + 8192, 4096);
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(big.subarray(2 * MiB + 8192, 2 * MiB + 12288)));
    const ranges = (await nginx.requests()).filter((q) => q.uri === '/a/big.bin');
    assert.deepEqual(ranges.map((q) => [q.status, q.range]), [[206, `bytes=${2 * MiB}-${3 * MiB - 1}`]]);
    assert.equal((await nginx.bytesServed()) - before, MiB);
  });

  test('a whole read equals the source; a present file is read without going to nginx', async () => {
    const big = src.content.get('a/big.bin') as Buffer;
    const r = await readInChild(join(h.target, 'a/big.bin'));
    assert.ok(r.data.equals(big));
    assert.equal(await stateOf(h.target, 'a/big.bin'), 'present');
    const served = await nginx.bytesServed();
    const again = await readInChild(join(h.target, 'a/big.bin'));
    assert.ok(again.data.equals(big));
    assert.equal(await nginx.bytesServed(), served);
  });

  test('evict: open files, pinned files are kept with the reason; new opens get EBUSY while content is punched', async () => {
    const path = join(h.target, 'a/big.bin');
    const holder = await open(path, 'r');
    const held = JSON.parse(await fanOk(['hsm', 'evict', '--json', path]));
    assert.deepEqual(held, { path: 'a/big.bin', evicted: false, reason: 'open by another process' });
    await holder.close();
    await fanOk(['hsm', 'pin', path]);
    assert.equal(await stateOf(h.target, 'a/big.bin'), 'present pinned');
    assert.match(await fanOk(['hsm', 'evict', path]), /^kept {4}a\/big\.bin: pinned/);
    await fanOk(['hsm', 'unpin', path]);
    const evicting = runFan(['hsm', 'evict', '--json', path]);
    const t0 = Date.now();
    // The eviction is recorded before the content is dropped, and its EBUSY window stays open
    // for evictHoldMs after that: a generous margin for a loaded machine.
    while ((await stateOf(h.target, 'a/big.bin')) !== 'placeholder' && Date.now() - t0 < 6000) await new Promise((r) => setTimeout(r, 20));
    const during = await readInChild(path, 0, 10);
    assert.deepEqual([during.ok, during.errno], [false, 'EBUSY']);
    const res = await evicting;
    assert.deepEqual(JSON.parse(res.stdout), { path: 'a/big.bin', evicted: true });
    assert.equal(await stateOf(h.target, 'a/big.bin'), 'placeholder');
    const served = await nginx.bytesServed();
    const r = await readInChild(path, 5 * MiB, 123);
    assert.ok(r.data.equals((src.content.get('a/big.bin') as Buffer).subarray(5 * MiB)));
    assert.equal((await nginx.bytesServed()) - served, 123);
  });

  test('prefetch --json reports progress and leaves every file present; status lists states and totals', async () => {
    const res = await runFan(['hsm', 'prefetch', '--json', join(h.target, 'a')], 60_000);
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = lines.filter((l) => l['type'] === 'progress');
    assert.ok(progress.length >= 2);
    const last = lines.at(-1) as Record<string, unknown>;
    assert.equal(last['bytesDone'], last['bytesTotal']);
    assert.equal(progress.at(-1)?.['bytesDone'], last['bytesTotal']);
    const text = await fanOk(['hsm', 'status', join(h.target, 'a')]);
    assert.match(text, /^present\s+.*\/a\/b\/one\.bin$/m);
    assert.match(text, /^present\s+.*\/a\/big\.bin$/m);
    assert.match(text, /^# 2 files: 2 present, 0 partial, 0 placeholders, 0 local, 0 pinned; 6\.0 MiB of 6\.0 MiB here$/m);
  });
});

test('max cache size evicts the least recently fetched files', async () => {
  const h = await mountAt(src.root, 'lru', { maxCacheSize: 3 * MiB });
  await readInChild(join(h.target, 'a/b/one.bin'));
  await readInChild(join(h.target, 'c/d/e/deep.bin'));
  await readInChild(join(h.target, 'page.bin'));
  await waitForState(h.target, 'a/b/one.bin', 'placeholder');
  assert.equal(await stateOf(h.target, 'c/d/e/deep.bin'), 'present');
  const r = await readInChild(join(h.target, 'a/b/one.bin'));
  assert.ok(r.data.equals(src.content.get('a/b/one.bin') as Buffer));
});

test('a target on tmpfs is refused with a message naming the filesystem', async () => {
  const tmp = await createLoopFs({ fstype: 'tmpfs' });
  try {
    const target = join(tmp.dir, 't');
    mkdirSync(target);
    await assert.rejects(mountTree({ source: src.root, target, stateDir: join(stateRoot, 'tmpfs') }), /ext4\/xfs\/btrfs required for pre-content marks; target .*\/t is tmpfs/);
    const res = await runFan(['hsm', 'mount', src.root, target, '--state-dir', join(stateRoot, 'tmpfs2')]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /is tmpfs/);
  } finally {
    await tmp.cleanup();
  }
});

test('publish and a missing manifest give clear CLI errors', async () => {
  const res = await runFan(['hsm', 'publish', '--chunk-size', '1000', src.root]);
  assert.equal(res.code, 1);
  assert.match(res.stderr, /chunk size must be a multiple of 4096/);
  const empty = mkdtempSync(join(tmpdir(), 'fan-hsm-empty-'));
  await writeFile(join(empty, 'x'), 'x');
  const target = join(loop.fs.dir, 'nomanifest');
  await mkdir(target);
  const m = await runFan(['hsm', 'mount', empty, target, '--state-dir', join(stateRoot, 'nomanifest')]);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /\.fan-hsm-manifest\.json: ENOENT; run `fan hsm publish/);
  rmSync(empty, { recursive: true, force: true });
});
