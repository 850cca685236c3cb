/**
 * Frames written from the threadpool (src/remote/direct.ts): whole frames, what a full socket did
 * not take (byte-exact), a broken socket's errno, and the fd kept open until its job is over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { native } from '../src/native.js';
import { DirectSocket, type DirectResult } from '../src/remote/direct.js';

/** A connected unix socket pair: `server` (whose fd is written) and `client` (the reader). */
async function pair(): Promise<{ server: Socket; client: Socket; cleanup: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'fan-direct-'));
  const path = join(dir, 's.sock');
  const srv = createServer();
  srv.listen(path);
  await once(srv, 'listening');
  const accepted = once(srv, 'connection') as Promise<[Socket]>;
  const client = connect(path);
  await once(client, 'connect');
  const [server] = await accepted;
  return {
    server,
    client,
    cleanup: () => {
      server.destroy();
      client.destroy();
      srv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function fdOf(s: Socket): number {
  return (s as unknown as { _handle: { fd: number } })._handle.fd;
}

function write(d: DirectSocket, parts: Buffer[]): Promise<DirectResult> {
  return new Promise((resolve) => d.write(parts, resolve));
}

/** Read exactly n bytes from a socket (more is an error). */
function readBytes(s: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    let have = 0;
    const onData = (b: Buffer): void => {
      got.push(b);
      have += b.length;
      if (have < n) return;
      s.off('data', onData);
      if (have > n) reject(new Error(`read ${have} bytes, expected ${n}`));
      else resolve(Buffer.concat(got));
    };
    s.on('data', onData);
  });
}

test('frames of several sockets in one tick are written whole, in one job, each in order', { timeout: 30_000 }, async () => {
  const a = await pair();
  const b = await pair();
  const da = new DirectSocket(native.dupFd(fdOf(a.server)));
  const db = new DirectSocket(native.dupFd(fdOf(b.server)));
  try {
    const ra = write(da, [Buffer.from('he'), Buffer.from('ad|'), Buffer.from('tail')]);
    const rb = write(db, [Buffer.from('other')]);
    assert.equal(da.busy, true, 'busy until its job is over');
    assert.throws(() => da.write([Buffer.from('x')], () => undefined), /busy/);
    assert.deepEqual(await ra, { ok: true, rest: [] });
    assert.deepEqual(await rb, { ok: true, rest: [] });
    assert.equal(da.busy, false);
    assert.deepEqual(await write(da, [Buffer.from('|2')]), { ok: true, rest: [] });
    assert.equal((await readBytes(a.client, 11)).toString(), 'head|tail|2');
    assert.equal((await readBytes(b.client, 5)).toString(), 'other');
  } finally {
    da.close();
    db.close();
    a.cleanup();
    b.cleanup();
  }
});

test('a full socket takes part of a frame: the rest is exactly the bytes not written', { timeout: 30_000 }, async () => {
  const p = await pair();
  const d = new DirectSocket(native.dupFd(fdOf(p.server)));
  try {
    p.client.pause();
    const head = Buffer.alloc(1000, 1);
    const body = Buffer.alloc(16 << 20);
    for (let i = 0; i < body.length; i++) body[i] = i % 251;
    const r = await write(d, [head, body, Buffer.from('end')]);
    assert.ok(r.ok, 'a full socket is not an error');
    const restBytes = Buffer.concat(r.rest);
    const all = Buffer.concat([head, body, Buffer.from('end')]);
    assert.ok(restBytes.length > 0 && restBytes.length < all.length, `part written (${all.length - restBytes.length} of ${all.length})`);
    assert.ok(restBytes.equals(all.subarray(all.length - restBytes.length)), 'the rest is the frame after what was written');
    // The paused reader still takes up to its stream's high-water mark: write small frames until
    // the socket takes none of one (EAGAIN), keeping what it took.
    const written = [all.subarray(0, all.length - restBytes.length)];
    let eagain = false;
    for (let i = 0; i < 100_000 && !eagain; i++) {
      const frame = Buffer.from(`<${i}>`);
      const again = await write(d, [frame]);
      assert.ok(again.ok);
      const left = Buffer.concat(again.rest);
      written.push(frame.subarray(0, frame.length - left.length));
      eagain = left.equals(frame);
    }
    assert.ok(eagain, 'a full socket takes nothing of the next frame');
    p.client.resume();
    const expected = Buffer.concat(written);
    const got = await readBytes(p.client, expected.length);
    assert.ok(got.equals(expected), 'the reader got exactly the written prefixes');
  } finally {
    d.close();
    p.cleanup();
  }
});

test('a socket whose peer is gone reports its errno', { timeout: 30_000 }, async () => {
  const p = await pair();
  const d = new DirectSocket(native.dupFd(fdOf(p.server)));
  try {
    p.client.destroy();
    await once(p.server, 'end');
    let r: DirectResult = { ok: true, rest: [] };
    // The first write after the peer's close may still be accepted; the next ones fail.
    for (let i = 0; i < 3 && r.ok; i++) r = await write(d, [Buffer.from('x')]);
    assert.ok(!r.ok, 'a write to a closed peer fails');
    assert.ok([constants.errno.EPIPE, constants.errno.ECONNRESET].includes(r.errno), `errno ${r.errno}`);
  } finally {
    d.close();
    p.cleanup();
  }
});

test('close during a job closes the fd only when the job is over', { timeout: 30_000 }, async () => {
  const p = await pair();
  const fd = native.dupFd(fdOf(p.server));
  const d = new DirectSocket(fd);
  try {
    const r = write(d, [Buffer.from('last')]);
    d.close();
    assert.ok(existsSync(`/proc/self/fd/${fd}`), 'still open while its job may run');
    assert.deepEqual(await r, { ok: true, rest: [] });
    assert.equal(existsSync(`/proc/self/fd/${fd}`), false, 'closed after the job');
    assert.throws(() => d.write([Buffer.from('x')], () => undefined), /closed/);
    assert.equal((await readBytes(p.client, 4)).toString(), 'last');
  } finally {
    p.cleanup();
  }
});
