/**
 * Pre-content reads answered by the native reader from an access table (what the HSM worker
 * uses to serve reads of present chunks without a round trip through JS): the table itself on a
 * plain pre-content group, then a real mount (sequential cold reads, truncate, eviction, LRU).
 * Marks go only on loop-mounted images; every group has a deadline.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { FanotifyGroup, isPermissionEvent, type PermissionEvent } from '../src/group.js';
import { native, type AccessTable } from '../src/native.js';
import { AccessState } from '../src/hsm/access.js';
import { publish, requestControl, type MountHandle } from '../src/hsm/index.js';
import { socketPath } from '../src/hsm/registry.js';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { runInChild } from './helpers/proc.js';
import { makeSourceTree, randomBuffer, readInChild, useHsmMounts } from './helpers/hsm.js';

requireRoot();

const KiB = 1024;
const MiB = 1024 * KiB;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Read `length` bytes at `offset` in a child; prints the bytes (base64) or the errno code. */
const READ_SCRIPT = `const fs = require('node:fs');
const [p, off, n] = process.argv.slice(1);
try {
  const fd = fs.openSync(p, 'r'); const b = Buffer.alloc(Number(n));
  const got = fs.readSync(fd, b, 0, b.length, Number(off));
  console.log('OK ' + b.subarray(0, got).toString('base64'));
} catch (e) { console.log('ERR ' + e.code); }`;

async function childRead(path: string, offset: number, length: number): Promise<{ ok: boolean; data: Buffer; code?: string }> {
  const r = await runInChild(READ_SCRIPT, { args: [path, String(offset), String(length)], timeoutMs: 20_000 });
  const [status, rest = ''] = r.stdout.trim().split(' ');
  return status === 'OK' ? { ok: true, data: Buffer.from(rest, 'base64') } : { ok: false, data: Buffer.alloc(0), code: rest };
}

describe('the native access table on a pre-content group', { timeout: 120_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 64 });
  const CHUNK = 64 * KiB;
  const content = randomBuffer(3 * CHUNK, 7);
  let file: string;
  let reportPath: string;
  let reportFd: number;
  let group: FanotifyGroup;
  let table: AccessTable;
  let state: AccessState;
  /** Events the JS handler saw, and what it answers (deny EIO unless told otherwise). */
  const seen: { offset: number; count: number }[] = [];
  let verdict: (ev: PermissionEvent) => void = (ev) => ev.deny('EIO');
  let dev = 0;
  let ino = 0;

  before(() => {
    file = join(loop.fs.dir, 'f');
    writeFileSync(file, content);
    ({ dev, ino } = statSync(file));
    reportPath = join(loop.fs.dir, '..', `report-${process.pid}`);
    reportFd = openSync(reportPath, 'w');
    state = new AccessState(3);
    state.allow(0);
    state.allow(1);
    table = native.createAccessTable(reportFd);
    group = FanotifyGroup.open({ class: 'preContent', timeoutMs: 10_000, defaultVerdict: 'deny', accessTable: table });
    group.mark(file, { events: ['preAccess'] });
    group.listen((ev) => {
      if (!isPermissionEvent(ev)) return;
      if (ev.range) seen.push(ev.range);
      verdict(ev);
    });
    table.set(dev, ino, state.buffer, CHUNK, content.length);
  });
  after(async () => {
    await group.close();
    closeSync(reportFd);
    rmSync(reportPath, { force: true });
  });

  test('a read of a chunk whose bit is set is allowed without JS, reported first and tracked', async () => {
    const t0 = Date.now();
    const r = await childRead(file, 100, 4000);
    assert.ok(r.ok, r.code);
    assert.ok(r.data.equals(content.subarray(100, 4100)));
    assert.deepEqual(seen, []);
    assert.ok(table.stats().answered >= 1);
    assert.deepEqual(table.stats().files, 1);
    // The fd number it answered was written to the report fd before the answer.
    const reported = readFileSync(reportPath);
    assert.ok(reported.length >= 4 && reported.length % 4 === 0, `report of ${reported.length} bytes`);
    assert.ok(reported.readInt32LE(reported.length - 4) >= 3);
    assert.ok(state.lastAccess >= t0 - 1 && state.lastAccess <= Date.now() + 1, `lastAccess ${state.lastAccess}`);
    assert.equal(state.lastChunk, 0);
  });

  test('a read touching a chunk whose bit is clear reaches JS (here: EIO), never allowed natively', async () => {
    const before = table.stats().answered;
    const r = await childRead(file, 2 * CHUNK - 100, 200);
    assert.deepEqual([r.ok, r.code], [false, 'EIO']);
    assert.ok(seen.some((g) => g.offset < 2 * CHUNK && g.offset + g.count > 2 * CHUNK), JSON.stringify(seen));
    assert.equal(table.stats().answered, before);
    const last = await childRead(file, 2 * CHUNK + 10, 10);
    assert.deepEqual([last.ok, last.code], [false, 'EIO']);
  });

  test('reads that start fetches reach JS although their chunks are there: the second in a row from 0, and a sequential one before a missing chunk', async () => {
    state.lastChunk = -1;
    state.fromStart = 0;
    const before = table.stats().answered;
    seen.length = 0;
    verdict = (ev) => ev.allow();
    try {
      // One process, reads one after another: 0, then where it ended (→ JS), then on.
      const r = await runInChild(
        `const fs = require('node:fs'); const fd = fs.openSync(process.argv[1], 'r'); const b = Buffer.alloc(4096);
         for (const off of [0, 4096, 8192]) fs.readSync(fd, b, 0, 4096, off);
         fs.readSync(fd, b, 0, 4096, ${CHUNK + 100});
         console.log('done');`,
        { args: [file], timeoutMs: 20_000 },
      );
      assert.equal(r.stdout.trim(), 'done', r.stderr);
    } finally {
      verdict = (ev) => ev.deny('EIO');
    }
    // 0 and 8192 natively; 4096 (second from 0) and chunk 1 (sequential, chunk 2 missing) by JS.
    assert.deepEqual(seen.map((g) => Math.floor(g.offset / 4096) * 4096).sort((a, b) => a - b), [4096, CHUNK]);
    assert.equal(table.stats().answered, before + 2);
  });

  test('blocked, a size other than the published one, or a file not in the table: every read reaches JS', async () => {
    const before = table.stats().answered;
    const expectJs = async (): Promise<void> => {
      seen.length = 0;
      const r = await childRead(file, 0, 100);
      assert.deepEqual([r.ok, r.code], [false, 'EIO']);
      assert.equal(seen.length >= 1, true);
    };
    state.blocked = true;
    await expectJs();
    state.blocked = false;
    table.set(dev, ino, state.buffer, CHUNK, content.length + 1);
    await expectJs();
    assert.equal(table.delete(dev, ino), true);
    assert.equal(table.delete(dev, ino), false);
    await expectJs();
    assert.equal(table.stats().answered, before);
    table.set(dev, ino, state.buffer, CHUNK, content.length);
    seen.length = 0;
    const r = await childRead(file, 0, 100);
    assert.ok(r.ok && r.data.equals(content.subarray(0, 100)));
    assert.deepEqual(seen, []);
  });

  test('a batch mixing reads answered natively and reads for JS: each one gets its own answer', async () => {
    seen.length = 0;
    const before = table.stats().answered;
    // JS allows the chunk 2 reads (and the chunk 1 reads it may see: chunk 2 is missing), but
    // only after holding the loop for a while, so that events pile up in the kernel queue.
    verdict = (ev) => {
      const until = Date.now() + 150;
      while (Date.now() < until);
      ev.allow();
    };
    const reads = Array.from({ length: 12 }, (_, k) => {
      const off = (k % 3) * CHUNK + 1000 + k;
      return childRead(file, off, 3000).then((r) => ({ r, off }));
    });
    for (const { r, off } of await Promise.all(reads)) {
      assert.ok(r.ok, `read at ${off}: ${r.code}`);
      assert.ok(r.data.equals(content.subarray(off, off + 3000)), `bytes at ${off}`);
    }
    assert.equal(seen.filter((g) => g.offset + g.count > 2 * CHUNK).length, 4, `JS saw the chunk 2 reads: ${JSON.stringify(seen)}`);
    assert.ok(seen.every((g) => g.offset >= CHUNK), JSON.stringify(seen));
    assert.ok(table.stats().answered >= before + 4, 'the chunk 0 reads were answered natively');
    verdict = (ev) => ev.deny('EIO');
  });

  test('the thread reader pauses at the high-water mark and resumes; close answers what is pending with the default verdict', async () => {
    const other = join(loop.fs.dir, 'g');
    writeFileSync(other, content);
    const g = FanotifyGroup.open({ class: 'preContent', timeoutMs: 10_000, defaultVerdict: 'deny', highWaterMark: 1, accessTable: native.createAccessTable(-1) });
    const got: number[] = [];
    let hold = true;
    try {
      g.mark(other, { events: ['preAccess'] });
      g.listen(async (ev) => {
        if (!isPermissionEvent(ev)) return;
        got.push(ev.pid);
        // Left pending (a handler that never settles): close() answers it.
        if (hold) return new Promise<void>(() => undefined);
        await sleep(200);
        ev.allow();
      });
      hold = false;
      // Three readers at once; one event held at a time, the others wait in the kernel queue.
      const reads = await Promise.all([0, 1, 2].map((k) => childRead(other, k * 1000, 100)));
      for (const [k, r] of reads.entries()) assert.ok(r.ok && r.data.equals(content.subarray(k * 1000, k * 1000 + 100)), `read ${k}: ${r.code}`);
      assert.equal(got.length, 3);
      hold = true;
      const pending = childRead(other, 0, 100);
      const t0 = Date.now();
      while (g.pendingCount === 0 && Date.now() - t0 < 10_000) await sleep(10);
      assert.equal(g.pendingCount, 1);
      await g.close();
      const r = await pending;
      assert.deepEqual([r.ok, r.code], [false, 'EPERM']);
    } finally {
      await g.close();
    }
  });

  test('wrong arguments are refused with a clear error', () => {
    assert.throws(() => table.set(dev, ino, Buffer.alloc(8), CHUNK, content.length), /state/);
    assert.throws(() => table.set(dev, ino, state.buffer, 0, content.length), /chunkSize/);
    const { stats } = table;
    assert.throws(() => Reflect.apply(stats, {}, []), /access table/);
    assert.throws(() => native.startReader(0, 4096, () => undefined, {} as never), /createAccessTable/);
  });
});

describe('an hsm mount answers reads of present chunks natively', { timeout: 300_000 }, () => {
  const { mount } = useHsmMounts(256);
  const FILES = { 'seq.bin': 24 * MiB + 5, 'a.bin': 3 * MiB, 'b.bin': 2 * MiB, 'c.bin': MiB };
  let src: ReturnType<typeof makeSourceTree>;
  before(async () => {
    src = makeSourceTree(FILES, 11);
    await publish(src.root, { chunkSize: MiB });
  });
  after(() => src.cleanup());

  function mountAt(name: string, extra: { maxCacheSize?: number; evictHoldMs?: number; syncBeforeAllow?: boolean } = {}): Promise<MountHandle> {
    return mount(name, { source: src.root, timeoutMs: 10_000, log: () => undefined, ...extra });
  }

  async function status(target: string, rel?: string): Promise<{ state: string; fastReads: number }> {
    const r = await requestControl(socketPath(target), { op: 'status', paths: [rel ? join(target, rel) : target] });
    assert.ok(r.ok, r.error);
    const files = r['files'] as { state: string; percent: number }[];
    const f = files[0];
    return { state: rel && f ? (f.state === 'partial' ? `partial ${f.percent}%` : f.state) : '', fastReads: r['fastReads'] as number };
  }

  async function waitForState(target: string, rel: string, want: string): Promise<void> {
    const deadline = Date.now() + 15_000;
    while ((await status(target, rel)).state !== want && Date.now() < deadline) await sleep(50);
    assert.equal((await status(target, rel)).state, want);
  }

  for (const syncBeforeAllow of [true, false]) {
    test(`a cold sha256sum (32 KiB reads) is mostly answered natively and equals the source${syncBeforeAllow ? '' : ' (--allow-before-durable)'}`, async () => {
      const h = await mountAt(syncBeforeAllow ? 'seq' : 'seq-fast', { syncBeforeAllow });
      const r = await runInChild(
        `const { execFileSync } = require('node:child_process');
         console.log(execFileSync('sha256sum', [process.argv[1]], { encoding: 'utf8' }).split(' ')[0]);`,
        { args: [join(h.target, 'seq.bin')], timeoutMs: 120_000 },
      );
      const want = createHash('sha256').update(src.content.get('seq.bin') as Buffer).digest('hex');
      assert.equal(r.stdout.trim(), want, r.stderr);
      const s = await status(h.target);
      assert.ok(s.fastReads > 0, `reads answered natively: ${s.fastReads}`);
      await waitForState(h.target, 'seq.bin', 'present');
    });
  }

  test('a truncate of a file with natively served chunks reaches the worker: the file turns local with the right bytes', async () => {
    const h = await mountAt('trunc');
    const path = join(h.target, 'a.bin');
    const want = src.content.get('a.bin') as Buffer;
    // The last chunk only (no read-ahead after it), then a read of it answered natively.
    assert.ok((await childRead(path, 2 * MiB + 10, 100)).ok);
    const before = (await status(h.target)).fastReads;
    const again = await childRead(path, 2 * MiB + 5000, 100);
    assert.ok(again.data.equals(want.subarray(2 * MiB + 5000, 2 * MiB + 5100)));
    assert.ok((await status(h.target)).fastReads > before, 'the second read of chunk 2 was answered natively');
    await truncate(path, 2 * MiB + MiB / 2);
    const r = await readInChild(path);
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(want.subarray(0, 2 * MiB + MiB / 2)));
    await waitForState(h.target, 'a.bin', 'local');
  });

  test('eviction of a partial file with natively served chunks: EBUSY meanwhile, then hydrated again correctly', async () => {
    const h = await mountAt('evict', { evictHoldMs: 3000 });
    const path = join(h.target, 'a.bin');
    const want = src.content.get('a.bin') as Buffer;
    assert.ok((await childRead(path, 2 * MiB + 10, 100)).ok);
    const before = (await status(h.target)).fastReads;
    assert.ok((await childRead(path, 2 * MiB + 200, 100)).ok);
    assert.ok((await status(h.target)).fastReads > before);
    assert.equal((await status(h.target, 'a.bin')).state, 'partial 33%');
    const evicting = requestControl(socketPath(h.target), { op: 'evict', paths: [path] });
    const t0 = Date.now();
    while ((await status(h.target, 'a.bin')).state !== 'placeholder' && Date.now() - t0 < 2500) await sleep(20);
    const during = await childRead(path, 2 * MiB + 200, 100);
    assert.deepEqual([during.ok, during.code], [false, 'EBUSY']);
    const res = await evicting;
    assert.ok(res.ok, res.error);
    assert.deepEqual(res['results'], [{ path: 'a.bin', evicted: true }]);
    const r = await readInChild(path);
    assert.ok(r.ok, r.errno);
    assert.ok(r.data.equals(want));
  });

  test('--max-cache-size evicts the least recently read file, counting reads answered natively', async () => {
    const h = await mountAt('lru', { maxCacheSize: 2 * MiB + MiB / 2 });
    // Reads of last chunks fetch one chunk each (no read-ahead).
    assert.ok((await childRead(join(h.target, 'a.bin'), 2 * MiB + 10, 100)).ok);
    await sleep(30);
    assert.ok((await childRead(join(h.target, 'b.bin'), MiB + 10, 100)).ok);
    await sleep(30);
    // a.bin read again, answered natively: it is now more recent than b.bin.
    const before = (await status(h.target)).fastReads;
    assert.ok((await childRead(join(h.target, 'a.bin'), 2 * MiB + 500, 100)).ok);
    assert.ok((await status(h.target)).fastReads > before, 'the second read of a.bin was answered natively');
    await sleep(30);
    assert.ok((await childRead(join(h.target, 'c.bin'), 10, 100)).ok);
    await waitForState(h.target, 'b.bin', 'placeholder');
    assert.equal((await status(h.target, 'a.bin')).state, 'partial 33%');
    assert.equal((await status(h.target, 'c.bin')).state, 'present');
  });
});
