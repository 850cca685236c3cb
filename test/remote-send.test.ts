/**
 * The server's socket writes: the native send ring (many sendmsg in one io_uring_enter) and the
 * transport that gathers one tick's frames into it. Real unix socket pairs, exact bytes.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants } from 'node:os';
import { native } from '../src/native.js';
import { socketTransport } from '../src/remote/transport.js';
import { sleep } from './helpers/journal.js';

const { EAGAIN, EPIPE, EBADF } = constants.errno;

/** Connected unix socket pairs: `server[i]` is the accepted end of `client[i]`. */
class Pairs {
  readonly server: Socket[] = [];
  readonly client: Socket[] = [];
  #srv: Server | undefined;

  static async open(dir: string, n: number): Promise<Pairs> {
    const p = new Pairs();
    const path = join(dir, `pairs-${Date.now()}-${Math.random()}.sock`);
    // The server ends never read (pauseOnConnect), so Node never closes them at their peer's end.
    p.#srv = createServer({ pauseOnConnect: true }, (s) => void p.server.push(s));
    await new Promise<void>((resolve) => p.#srv!.listen(path, resolve));
    for (let i = 0; i < n; i++) {
      const c = connect(path);
      c.on('error', () => undefined);
      await new Promise<void>((resolve) => c.once('connect', resolve));
      p.client.push(c);
      while (p.server.length <= i) await sleep(5);
      p.server[i]!.on('error', () => undefined);
    }
    return p;
  }

  close(): void {
    for (const s of [...this.server, ...this.client]) s.destroy();
    this.#srv?.close();
  }
}

function fdOf(s: Socket): number {
  return (s as unknown as { _handle: { fd: number } })._handle.fd;
}

/** Everything `s` reads until `bytes` arrived, or until its end with `toEnd` (10 s at most). */
async function readAll(s: Socket, bytes: number, toEnd = false): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  let ended = false;
  s.on('data', (b: Buffer) => {
    chunks.push(b);
    got += b.length;
  });
  // Ended already: a socket without a reader ends once it had nothing to read.
  if (s.readableEnded) return Buffer.alloc(0);
  s.once('end', () => (ended = true));
  s.resume();
  const end = Date.now() + 10_000;
  while ((toEnd ? !ended : got < bytes) && Date.now() < end) await sleep(5);
  return Buffer.concat(chunks);
}

describe('the server socket writes', { timeout: 60_000 }, () => {
  let dir = '';
  const opened: Pairs[] = [];
  const pairs = async (n: number): Promise<Pairs> => {
    const p = await Pairs.open(dir, n);
    opened.push(p);
    return p;
  };
  before(() => {
    dir = fs.mkdtempSync(join(tmpdir(), 'fan-send-'));
  });
  after(() => {
    // Also the sockets of a test that failed half-way, so the process can end.
    for (const p of opened) p.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a send ring writes each socket its parts in one sendmsg; a full socket takes part, then nothing; errors are -errno', async () => {
    const ring = native.createSendRing();
    assert.equal(ring.uring, true, 'io_uring is available on this kernel (6.18)');
    const p = await pairs(3);
    try {
      for (const c of p.client) c.pause();
      const big = Buffer.alloc(4 << 20, 0x61);
      const res = new Int32Array(3);
      ring.send(Int32Array.from(p.server, fdOf), Int32Array.of(2, 1, 3), [Buffer.from('ab'), Buffer.from('cd'), big, Buffer.from('x'), Buffer.from('y'), Buffer.from('z')], res);
      assert.equal(res[0], 4);
      assert.ok(res[1]! > 0 && res[1]! < big.length, `a unix socket takes part of 4 MiB (took ${res[1]})`);
      assert.equal(res[2], 3);
      const again = new Int32Array(1);
      ring.send(Int32Array.of(fdOf(p.server[1]!)), Int32Array.of(1), [Buffer.from('more')], again);
      assert.equal(again[0], -EAGAIN, 'a full socket takes nothing, without blocking');
      assert.deepEqual((await readAll(p.client[0]!, 4)).toString(), 'abcd');
      assert.deepEqual((await readAll(p.client[2]!, 3)).toString(), 'xyz');

      p.client[2]!.destroy();
      await sleep(50);
      const bad = new Int32Array(2);
      ring.send(Int32Array.of(fdOf(p.server[2]!), 1_000_000), Int32Array.of(1, 1), [Buffer.from('x'), Buffer.from('y')], bad);
      assert.deepEqual([...bad], [-EPIPE, -EBADF]);
      assert.throws(() => ring.send(Int32Array.of(1), Int32Array.of(2), [Buffer.from('x')], new Int32Array(1)), RangeError);
      assert.throws(() => ring.send(Int32Array.of(1), Int32Array.of(0), [], new Int32Array(1)), RangeError);
      assert.throws(() => ring.send([1] as unknown as Int32Array, Int32Array.of(1), [Buffer.from('x')], new Int32Array(1)), TypeError);
    } finally {
      p.close();
    }
  });

  test('frames sent in one tick to many sockets arrive whole and in order; what a full socket did not take goes through its queue first', async () => {
    const p = await pairs(8);
    try {
      const ts = p.server.map((s) => socketTransport(s, true));
      p.client[7]!.pause();
      const frame = (i: number, k: number): Buffer => Buffer.from(`<${i}:${k}:${'.'.repeat(i === 7 ? 300_000 : 10)}>`);
      const want = p.server.map(() => [] as Buffer[]);
      for (let k = 0; k < 20; k++) {
        // One tick: every socket gets a frame (two parts), as a feed batch does.
        for (let i = 0; i < ts.length; i++) {
          const f = frame(i, k);
          ts[i]!.send([f.subarray(0, 3), f.subarray(3)]);
          want[i]!.push(f);
        }
        assert.equal(ts[0]!.pendingBytes > 0, true, 'gathered bytes count as pending until the tick ends');
        await sleep(1);
      }
      for (let i = 0; i < ts.length; i++) {
        const all = Buffer.concat(want[i]!);
        assert.ok((await readAll(p.client[i]!, all.length)).equals(all), `socket ${i}: every byte, in order`);
      }
    } finally {
      p.close();
    }
  });

  test('end() sends the frames gathered in the tick before the end; destroy() drops them and writes nothing', async () => {
    const p = await pairs(2);
    try {
      const [a, b] = p.server.map((s) => socketTransport(s, true));
      a!.send([Buffer.from('last words')]);
      a!.end();
      b!.send([Buffer.from('never')]);
      b!.destroy();
      assert.equal((await readAll(p.client[0]!, 0, true)).toString(), 'last words', 'the gathered frame, then the end');
      assert.equal((await readAll(p.client[1]!, 0, true)).toString(), '', 'nothing, then the end');
    } finally {
      p.close();
    }
  });

  test('a sender held back by gathered bytes is told to go on after the tick', async () => {
    const p = await pairs(1);
    try {
      const t = socketTransport(p.server[0]!, true);
      let drains = 0;
      t.onDrain(() => drains++);
      t.send([Buffer.alloc(64 * 1024, 0x62)]);
      assert.equal(t.congested, true, 'a gathered frame above the high-water mark congests like a queued one');
      await sleep(20);
      assert.equal(t.congested, false);
      assert.equal(drains, 1);
      assert.equal((await readAll(p.client[0]!, 64 * 1024)).length, 64 * 1024);
    } finally {
      p.close();
    }
  });
});
