/**
 * Tests of the C addon (native/fanotify.c) through src/native.ts: exact values,
 * exact errno codes, and the reader's loop behaviour. Marks here are inode
 * marks with notification events only, on a temp dir (never mount/filesystem
 * marks or permission events on the root filesystem).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isNativeError, native, type NativeError, type Reader } from '../src/native.js';

const FAN_CLOEXEC = 0x1;
const FAN_NONBLOCK = 0x2;
const FAN_CLASS_PRE_CONTENT = 0x8;
const FAN_REPORT_FID = 0x200;
const FAN_REPORT_DIR_FID = 0x400;
const FAN_REPORT_NAME = 0x800;
const FAN_REPORT_TARGET_FID = 0x1000;
const FAN_REPORT_DFID_NAME_TARGET = FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME | FAN_REPORT_TARGET_FID;
const FAN_MARK_ADD = 0x1;
const FAN_CREATE = 0x100;
const FAN_EVENT_ON_CHILD = 0x08000000;
const FAN_ONDIR = 0x40000000;
const FAN_EVENT_INFO_TYPE_DFID_NAME = 2;

const { constants: C } = native;
const T = { timeout: 10000 };
const NATIVE_URL = new URL('../src/native.js', import.meta.url).href;

let tmp = '';
before(() => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fanotify-native-')));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let dirCount = 0;
function freshDir(): string {
  const dir = path.join(tmp, `d${dirCount++}`);
  fs.mkdirSync(dir);
  return dir;
}

/** Asserts fn throws a NativeError with this code and syscall. */
function assertErrno(fn: () => unknown, code: string, syscall: string): NativeError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught !== undefined, `expected ${code} from ${syscall}, nothing was thrown`);
  assert.ok(isNativeError(caught), `not a NativeError: ${String(caught)}`);
  assert.equal(caught.code, code);
  assert.equal(caught.syscall, syscall);
  assert.equal(caught.errno, (os.constants.errno as Record<string, number>)[code]);
  assert.match(caught.message, new RegExp(`^${code}: .+, ${syscall}$`));
  return caught;
}

/** A notification group reporting DFID_NAME + target FID, watching dir for creations. */
function fidGroup(dir: string): number {
  const fd = native.init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET, C.O_RDONLY | C.O_CLOEXEC);
  native.mark(fd, FAN_MARK_ADD, FAN_CREATE | FAN_ONDIR | FAN_EVENT_ON_CHILD, C.AT_FDCWD, dir);
  return fd;
}

/** Resolves with the first batch (or rejects with the reader error / a deadline). */
function firstBatch(fd: number, bufferSize = 64 * 1024): { reader: Reader; batch: Promise<Buffer> } {
  let reader!: Reader;
  const batch = new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no batch within 5 s')), 5000);
    reader = native.startReader(fd, bufferSize, (err, buf) => {
      clearTimeout(timer);
      if (err) reject(err);
      else if (buf) resolve(buf);
      else reject(new Error('callback with neither error nor batch'));
    });
  });
  return { reader, batch };
}

interface ParsedEvent {
  eventLen: number;
  vers: number;
  metadataLen: number;
  mask: bigint;
  fd: number;
  pid: number;
  dfidName?: { fsid: Buffer; handleType: number; handle: Buffer; name: string };
}

function parseEvents(buf: Buffer): ParsedEvent[] {
  const out: ParsedEvent[] = [];
  let off = 0;
  while (off + 24 <= buf.length) {
    const ev: ParsedEvent = {
      eventLen: buf.readUInt32LE(off),
      vers: buf.readUInt8(off + 4),
      metadataLen: buf.readUInt16LE(off + 6),
      mask: buf.readBigUInt64LE(off + 8),
      fd: buf.readInt32LE(off + 16),
      pid: buf.readInt32LE(off + 20),
    };
    assert.ok(ev.eventLen >= 24 && off + ev.eventLen <= buf.length, `bad event_len ${ev.eventLen}`);
    let rec = off + ev.metadataLen;
    while (rec + 4 <= off + ev.eventLen) {
      const type = buf.readUInt8(rec);
      const len = buf.readUInt16LE(rec + 2);
      assert.ok(len >= 4, `bad info record len ${len}`);
      if (type === FAN_EVENT_INFO_TYPE_DFID_NAME) {
        const fsid = buf.subarray(rec + 4, rec + 12);
        const handleBytes = buf.readUInt32LE(rec + 12);
        const handleType = buf.readInt32LE(rec + 16);
        const handle = buf.subarray(rec + 20, rec + 20 + handleBytes);
        const nameStart = rec + 20 + handleBytes;
        const nameEnd = buf.indexOf(0, nameStart);
        ev.dfidName = { fsid, handleType, handle, name: buf.toString('utf8', nameStart, nameEnd) };
      }
      rec += len;
    }
    out.push(ev);
    off += ev.eventLen;
  }
  return out;
}

function runChild(script: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 8000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

// ---- init / mark ---------------------------------------------------------

test('init: a FID notification group opens; a bad flag combination is EINVAL', T, () => {
  const fd = native.init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET, C.O_RDONLY | C.O_CLOEXEC);
  assert.ok(Number.isInteger(fd) && fd >= 0);
  native.close(fd);

  const err = assertErrno(
    () => native.init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_PRE_CONTENT | FAN_REPORT_FID, C.O_RDONLY),
    'EINVAL',
    'fanotify_init',
  );
  assert.equal(err.errno, 22);
  assert.equal(err.message, 'EINVAL: Invalid argument, fanotify_init');
});

test('argument types are checked with TypeError / RangeError', T, () => {
  const n = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  assert.throws(() => n.init!('1', 0), TypeError);
  assert.throws(() => n.init!(1.5, 0), TypeError);
  assert.throws(() => n.mark!(0, 1, 1, C.AT_FDCWD, 42), TypeError);
  assert.throws(() => n.mark!(0, 1, 1, C.AT_FDCWD, 'a\0b'), TypeError);
  assert.throws(() => n.startReader!(0, 4096, null), TypeError);
  assert.throws(() => n.startReader!(0, 0, () => {}), RangeError);
  assert.throws(() => n.openByHandle!(0, 1, 'abc', 0), TypeError);
  assert.throws(() => n.recvFd!(0, 0), RangeError);
});

test('mark: a nonexistent path is ENOENT from fanotify_mark', T, () => {
  const fd = native.init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME_TARGET, C.O_RDONLY);
  try {
    assertErrno(
      () => native.mark(fd, FAN_MARK_ADD, FAN_CREATE, C.AT_FDCWD, path.join(tmp, 'does', 'not', 'exist')),
      'ENOENT',
      'fanotify_mark',
    );
    // A bigint mask is accepted too.
    native.mark(fd, FAN_MARK_ADD, BigInt(FAN_CREATE), C.AT_FDCWD, tmp);
  } finally {
    native.close(fd);
  }
});

// ---- reader --------------------------------------------------------------

test('startReader delivers a FAN_CREATE batch with a DFID_NAME record; stop() releases the loop', T, async () => {
  const dir = freshDir();
  const fd = fidGroup(dir);
  const { reader, batch } = firstBatch(fd);
  try {
    fs.writeFileSync(path.join(dir, 'created.txt'), 'x');
    const buf = await batch;
    assert.ok(buf.readUInt32LE(0) >= 24, 'event_len >= 24');
    assert.equal(buf.readUInt8(4), 3, 'vers');
    assert.ok((buf.readBigUInt64LE(8) & BigInt(FAN_CREATE)) !== 0n, 'mask has FAN_CREATE');
    const [ev] = parseEvents(buf);
    assert.ok(ev);
    assert.equal(ev.metadataLen, 24);
    assert.equal(ev.fd, -1, 'FID groups report FAN_NOFD');
    assert.equal(ev.pid, process.pid);
    assert.ok(ev.dfidName, 'has a DFID_NAME record');
    assert.equal(ev.dfidName.name, 'created.txt');
    // The record's fsid is exactly what fsid() returns, and the dir handle matches nameToHandle.
    assert.deepEqual(ev.dfidName.fsid, native.fsid(dir).fsid);
    const h = native.nameToHandle(C.AT_FDCWD, dir, 0);
    assert.equal(ev.dfidName.handleType, h.handleType);
    assert.deepEqual(ev.dfidName.handle, h.handle);
  } finally {
    reader.stop();
    reader.stop(); // idempotent
    reader.pause(); // no-ops after stop
    reader.resume();
    native.close(fd);
  }
});

test('reader: no callbacks while paused; resume delivers; none after stop', T, async () => {
  const dir = freshDir();
  const fd = fidGroup(dir);
  let batches = 0;
  const reader = native.startReader(fd, 64 * 1024, (err) => {
    assert.ifError(err);
    batches++;
  });
  try {
    reader.pause();
    fs.writeFileSync(path.join(dir, 'a'), '');
    await sleep(150);
    assert.equal(batches, 0, 'no batch while paused');
    reader.resume();
    const deadline = Date.now() + 5000;
    while (batches === 0 && Date.now() < deadline) await sleep(10);
    assert.equal(batches, 1);
    reader.stop();
    fs.writeFileSync(path.join(dir, 'b'), '');
    await sleep(150);
    assert.equal(batches, 1, 'no batch after stop');
  } finally {
    reader.stop();
    native.close(fd);
  }
});

test('reader: microtasks drain after each callback (napi_make_callback)', T, async () => {
  const dir = freshDir();
  const fd = fidGroup(dir);
  // Two queued events, and a buffer that holds only one: two reads in one wakeup.
  // One event: metadata + DFID_NAME (header, fsid, handle, "one\0") + FID (header, fsid, handle).
  const hlen = native.nameToHandle(C.AT_FDCWD, dir, 0).handle.length;
  const eventSize = 24 + Math.ceil((20 + hlen + 4) / 4) * 4 + (20 + hlen);
  fs.writeFileSync(path.join(dir, 'one'), '');
  fs.writeFileSync(path.join(dir, 'two'), '');
  const order: string[] = [];
  let calls = 0;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('timeout')), 5000);
    const reader = native.startReader(fd, Math.floor(eventSize * 1.5), (err, buf) => {
      if (err) {
        clearTimeout(timer);
        reader.stop();
        reject(err);
        return;
      }
      const n = ++calls;
      order.push(`cb${n}:${parseEvents(buf!)[0]?.dfidName?.name}`);
      void Promise.resolve().then(() => order.push(`micro${n}`));
      if (n === 2) {
        clearTimeout(timer);
        reader.stop();
        setImmediate(resolve);
      }
    });
  });
  try {
    await done;
    assert.deepEqual(order, ['cb1:one', 'micro1', 'cb2:two', 'micro2']);
  } finally {
    native.close(fd);
  }
});

test('reader: a read error (buffer too small) reaches the callback as EINVAL from read', T, async () => {
  const dir = freshDir();
  const fd = fidGroup(dir);
  const { reader, batch } = firstBatch(fd, 8);
  try {
    fs.writeFileSync(path.join(dir, 'x'), '');
    await assert.rejects(batch, (e: unknown) => {
      assert.ok(isNativeError(e));
      assert.equal(e.code, 'EINVAL');
      assert.equal(e.syscall, 'read');
      return true;
    });
  } finally {
    reader.stop();
    native.close(fd);
  }
});

test('startReader on an fd epoll cannot watch is EPERM from uv_poll_init', T, () => {
  const fd = fs.openSync(path.join(tmp, 'regular'), 'w');
  try {
    assertErrno(() => native.startReader(fd, 4096, () => {}), 'EPERM', 'uv_poll_init');
  } finally {
    fs.closeSync(fd);
  }
});

test('reader: a throwing callback is an uncaught exception; unref() lets the process exit', T, () => {
  const dir = freshDir();
  const script = `
    import { native } from ${JSON.stringify(NATIVE_URL)};
    import fs from 'node:fs';
    const fd = native.init(0x3 | 0x1e00, 0);
    native.mark(fd, 0x1, 0x100 | 0x08000000, -100, ${JSON.stringify(dir)});
    let calls = 0;
    const reader = native.startReader(fd, 65536, () => {
      calls++;
      Promise.resolve().then(() => console.log('microtask'));
      throw new Error('boom');
    });
    process.on('uncaughtException', (e) => {
      console.log('uncaught ' + e.message + ' after ' + calls);
      // Still alive: unref instead of stop; the process must exit by itself.
      reader.unref();
    });
    fs.writeFileSync(${JSON.stringify(path.join(dir, 'f'))}, '');
  `;
  const r = runChild(script);
  assert.equal(r.signal, null, `child killed (hung?): ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^uncaught boom after 1$/m);
  assert.match(r.stdout, /^microtask$/m);
});

test('reader: a worker exiting or terminated with an active reader does not crash', T, () => {
  const dir = freshDir();
  const workerFile = path.join(dir, 'worker.mjs');
  fs.writeFileSync(
    workerFile,
    `
    import { parentPort, workerData } from 'node:worker_threads';
    import { native } from ${JSON.stringify(NATIVE_URL)};
    const fd = native.init(0x3 | 0x1e00, 0);
    native.mark(fd, 0x1, 0x100 | 0x08000000, -100, ${JSON.stringify(dir)});
    native.startReader(fd, 65536, () => {});
    parentPort.postMessage('ready');
    if (workerData === 'exit') setTimeout(() => process.exit(0), 20);
  `,
  );
  const script = `
    import { Worker } from 'node:worker_threads';
    for (const how of ['exit', 'terminate', 'exit', 'terminate']) {
      const w = new Worker(${JSON.stringify(workerFile)}, { workerData: how, execArgv: [] });
      await new Promise((resolve, reject) => {
        w.on('error', reject);
        w.on('message', () => { if (how === 'terminate') void w.terminate(); });
        w.on('exit', resolve);
      });
    }
    console.log('ok');
  `;
  const r = runChild(script);
  assert.equal(r.signal, null, `child died by ${r.signal}: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'ok');
});

// ---- handles -------------------------------------------------------------

test('nameToHandle + openByHandle round trip; ESTALE once the file is gone', T, () => {
  const dir = freshDir();
  const file = path.join(dir, 'handle.txt');
  fs.writeFileSync(file, 'content via handle');
  const h = native.nameToHandle(C.AT_FDCWD, file, 0);
  assert.ok(Buffer.isBuffer(h.handle));
  assert.ok(h.handle.length > 0 && h.handle.length <= 128);
  assert.equal(typeof h.handleType, 'number');
  assert.ok(Number.isInteger(h.mountId));

  const mountFd = fs.openSync(dir, 'r');
  try {
    const fd = native.openByHandle(mountFd, h.handleType, h.handle, C.O_RDONLY);
    try {
      const buf = Buffer.alloc(64);
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      assert.equal(buf.toString('utf8', 0, n), 'content via handle');
      assert.equal(fs.readlinkSync(`/proc/self/fd/${fd}`), file);
    } finally {
      native.close(fd);
    }
    // AT_EMPTY_PATH on an fd gives the same handle.
    const fileFd = fs.openSync(file, 'r');
    try {
      assert.deepEqual(native.nameToHandle(fileFd, '', C.AT_EMPTY_PATH).handle, h.handle);
    } finally {
      fs.closeSync(fileFd);
    }
    assertErrno(() => native.openByHandle(mountFd, h.handleType, Buffer.alloc(129), C.O_RDONLY), 'EINVAL', 'open_by_handle_at');

    fs.unlinkSync(file);
    assertErrno(() => native.openByHandle(mountFd, h.handleType, h.handle, C.O_RDONLY), 'ESTALE', 'open_by_handle_at');
  } finally {
    fs.closeSync(mountFd);
  }
  assertErrno(() => native.nameToHandle(C.AT_FDCWD, file, 0), 'ENOENT', 'name_to_handle_at');
});

test('fsid: 8 raw bytes, same for path and fd, type matches statfs', T, () => {
  const dir = freshDir();
  const a = native.fsid(dir);
  assert.ok(Buffer.isBuffer(a.fsid));
  assert.equal(a.fsid.length, 8);
  assert.equal(a.type, fs.statfsSync(dir).type);
  const fd = fs.openSync(dir, 'r');
  try {
    const b = native.fsidOfFd(fd);
    assert.deepEqual(b.fsid, a.fsid);
    assert.equal(b.type, a.type);
  } finally {
    fs.closeSync(fd);
  }
  assert.equal(native.fsid('/proc').type, 0x9fa0);
  assertErrno(() => native.fsid(path.join(dir, 'nope')), 'ENOENT', 'statfs');
  assertErrno(() => native.fsidOfFd(1 << 30), 'EBADF', 'fstatfs');
});

// ---- processes, files ----------------------------------------------------

test('pidfdOpen: own pid gives an fd; an unused pid is ESRCH', T, () => {
  const fd = native.pidfdOpen(process.pid, 0);
  assert.ok(fd >= 0);
  assert.match(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'), new RegExp(`^Pid:\\s+${process.pid}$`, 'm'));
  native.close(fd);
  assertErrno(() => native.pidfdOpen(0x7ffffff0, 0), 'ESRCH', 'pidfd_open');
});

test('punchHole zeroes exactly the range and keeps the size; fallocate extends', T, () => {
  const file = path.join(freshDir(), 'holes.bin');
  fs.writeFileSync(file, Buffer.alloc(16384, 0xab));
  const fd = fs.openSync(file, 'r+');
  try {
    native.punchHole(fd, 4096, 4096);
    const back = Buffer.alloc(16384);
    assert.equal(fs.readSync(fd, back, 0, back.length, 0), 16384);
    assert.equal(fs.fstatSync(fd).size, 16384);
    for (let i = 0; i < back.length; i++) {
      const want = i >= 4096 && i < 8192 ? 0 : 0xab;
      if (back[i] !== want) assert.fail(`byte ${i} is ${back[i]}, want ${want}`);
    }
    native.fallocate(fd, 0, 0, 65536);
    assert.equal(fs.fstatSync(fd).size, 65536);
    native.fallocate(fd, C.FALLOC_FL_PUNCH_HOLE | C.FALLOC_FL_KEEP_SIZE, 0, 65536);
    assert.equal(fs.fstatSync(fd).size, 65536);
    assertErrno(() => native.punchHole(fd, -1, 4096), 'EINVAL', 'fallocate');
  } finally {
    fs.closeSync(fd);
  }
});

test('syncFileRange runs in the threadpool and reports errno errors to its callback', T, async () => {
  const file = path.join(freshDir(), 'writeback.bin');
  const fd = fs.openSync(file, 'w+');
  const run = (f: number, flags: number): Promise<NativeError | null> =>
    new Promise((resolve) => native.syncFileRange(f, 0, 1 << 20, flags, (err) => resolve(err)));
  try {
    fs.writeSync(fd, Buffer.alloc(1 << 20, 7), 0, 1 << 20, 0);
    assert.equal(await run(fd, C.SYNC_FILE_RANGE_WRITE), null);
    assert.equal(await run(fd, C.SYNC_FILE_RANGE_WAIT_BEFORE | C.SYNC_FILE_RANGE_WRITE | C.SYNC_FILE_RANGE_WAIT_AFTER), null);
    const bad = await run(fd, 8);
    assert.ok(isNativeError(bad));
    assert.equal(bad.code, 'EINVAL');
    assert.equal(bad.syscall, 'sync_file_range');
    const devNull = fs.openSync('/dev/null', 'r');
    try {
      assert.equal((await run(devNull, C.SYNC_FILE_RANGE_WRITE))?.code, 'ESPIPE');
    } finally {
      fs.closeSync(devNull);
    }
  } finally {
    fs.closeSync(fd);
  }
  assert.equal((await run(fd, C.SYNC_FILE_RANGE_WRITE))?.code, 'EBADF');
  assert.throws(() => native.syncFileRange(fd, 0, 1, C.SYNC_FILE_RANGE_WRITE, 'no' as unknown as () => void), TypeError);
});

test('setLease / getLease', T, () => {
  const file = path.join(freshDir(), 'lease.txt');
  fs.writeFileSync(file, 'x');
  const fd = fs.openSync(file, 'r');
  try {
    assert.equal(native.getLease(fd), C.F_UNLCK);
    native.setLease(fd, C.F_RDLCK);
    assert.equal(native.getLease(fd), C.F_RDLCK);
    native.setLease(fd, C.F_UNLCK);
    assert.equal(native.getLease(fd), C.F_UNLCK);
    // A read lease is refused while the file is open for writing.
    const writer = fs.openSync(file, 'r+');
    try {
      assertErrno(() => native.setLease(fd, C.F_RDLCK), 'EAGAIN', 'fcntl');
    } finally {
      fs.closeSync(writer);
    }
  } finally {
    fs.closeSync(fd);
  }
});

test('close: closes, and a second close is EBADF', T, () => {
  const fd = fs.openSync(path.join(tmp, 'closeme'), 'w');
  native.close(fd);
  assertErrno(() => native.close(fd), 'EBADF', 'close');
});

test('constants have the x86_64 glibc values', T, () => {
  assert.deepEqual(
    { ...C },
    {
      AT_FDCWD: -100,
      AT_SYMLINK_FOLLOW: 0x400,
      AT_EMPTY_PATH: 0x1000,
      AT_HANDLE_FID: 0x200,
      O_RDONLY: 0,
      O_WRONLY: 1,
      O_RDWR: 2,
      O_PATH: 0o10000000,
      O_DIRECTORY: 0o200000,
      O_NOFOLLOW: 0o400000,
      O_CLOEXEC: 0o2000000,
      O_NONBLOCK: 0o4000,
      O_LARGEFILE: 0,
      FALLOC_FL_KEEP_SIZE: 1,
      FALLOC_FL_PUNCH_HOLE: 2,
      F_RDLCK: 0,
      F_WRLCK: 1,
      F_UNLCK: 2,
      SYNC_FILE_RANGE_WAIT_BEFORE: 1,
      SYNC_FILE_RANGE_WRITE: 2,
      SYNC_FILE_RANGE_WAIT_AFTER: 4,
    },
  );
});

// ---- unix sockets --------------------------------------------------------

test('sendFd / recvFd / peerCred over a unix socket', T, async () => {
  const dir = freshDir();
  const sockPath = path.join(dir, 'sock');
  const file = path.join(dir, 'passed.txt');
  fs.writeFileSync(file, 'read through a passed fd');

  // pauseOnConnect: libuv must not read the server side, we recvmsg it ourselves.
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, resolve);
  });
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(sockPath);
  await new Promise<void>((resolve, reject) => {
    client.once('error', reject);
    client.once('connect', resolve);
  });
  const peer = await accepted;
  const handleFd = (s: net.Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;
  const clientFd = handleFd(client);
  const serverFd = handleFd(peer);
  assert.ok(clientFd >= 0 && serverFd >= 0);

  const recv = async (max: number): Promise<{ fd: number; data: Buffer }> => {
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        return native.recvFd(serverFd, max);
      } catch (e) {
        if (!isNativeError(e) || e.code !== 'EAGAIN' || Date.now() > deadline) throw e;
        await sleep(5);
      }
    }
  };

  const fileFd = fs.openSync(file, 'r');
  try {
    assertErrno(() => native.recvFd(serverFd, 16), 'EAGAIN', 'recvmsg');

    assert.equal(native.sendFd(clientFd, fileFd, Buffer.from('hi')), 2);
    const got = await recv(16);
    assert.equal(got.data.toString(), 'hi');
    assert.ok(got.fd >= 0 && got.fd !== fileFd);
    try {
      const buf = Buffer.alloc(64);
      const n = fs.readSync(got.fd, buf, 0, buf.length, 0);
      assert.equal(buf.toString('utf8', 0, n), 'read through a passed fd');
      assert.equal(fs.readlinkSync(`/proc/self/fd/${got.fd}`), file);
      const flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${got.fd}`, 'utf8'))?.[1];
      assert.ok(flags !== undefined && (parseInt(flags, 8) & C.O_CLOEXEC) !== 0, 'received fd is O_CLOEXEC');
    } finally {
      native.close(got.fd);
    }

    // Empty data is sent as one NUL byte.
    assert.equal(native.sendFd(clientFd, fileFd, Buffer.alloc(0)), 1);
    const nul = await recv(16);
    assert.deepEqual(nul.data, Buffer.from([0]));
    assert.ok(nul.fd >= 0);
    native.close(nul.fd);

    // Plain data carries no fd.
    await new Promise<void>((resolve, reject) => client.write('plain', (err) => (err ? reject(err) : resolve())));
    const plain = await recv(16);
    assert.equal(plain.fd, -1);
    assert.equal(plain.data.toString(), 'plain');

    assert.deepEqual(native.peerCred(serverFd), { pid: process.pid, uid: 0, gid: 0 });
    assert.deepEqual(native.peerCred(clientFd), { pid: process.pid, uid: 0, gid: 0 });
    assertErrno(() => native.peerCred(fileFd), 'ENOTSOCK', 'getsockopt');
    assertErrno(() => native.sendFd(fileFd, fileFd, Buffer.from('x')), 'ENOTSOCK', 'sendmsg');
  } finally {
    fs.closeSync(fileFd);
    client.destroy();
    peer.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
