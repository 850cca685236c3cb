/**
 * The HSM's plain-HTTP range client (src/hsm/range-client.ts) against scripted servers: exact
 * bytes however the reply is cut into packets, connection reuse, every malformed or unusable
 * reply rejected with a message and the right `transient`, deadlines, and a fuzz of replies.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpSource, SourceError } from '../src/hsm/source.js';
import { feed, parseHead, RangeClient, rangeReplyProblem, RangeReplyError, type BodySink } from '../src/hsm/range-client.js';
import { mulberry32 } from './helpers/random.js';

const T = { timeout: 20_000 };

/** What a scripted server does with one request on one connection. */
type Script = (socket: net.Socket, request: { path: string; offset: number; length: number; n: number }) => void | Promise<void>;

interface Scripted {
  readonly url: URL;
  /** Connections accepted so far. */
  connections: number;
  /** Most connections open at once. */
  maxOpen: number;
  script: Script;
  close(): Promise<void>;
}

/** A TCP server that parses GET requests with a Range header and hands each to `script`. */
async function scripted(script: Script): Promise<Scripted> {
  const sockets = new Set<net.Socket>();
  let requests = 0;
  const state: Scripted = {
    url: new URL('http://127.0.0.1/'),
    connections: 0,
    maxOpen: 0,
    script,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer((socket) => {
    state.connections++;
    sockets.add(socket);
    state.maxOpen = Math.max(state.maxOpen, sockets.size);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let text = '';
    socket.on('data', (b) => {
      text += b.toString('latin1');
      for (let end = text.indexOf('\r\n\r\n'); end >= 0; end = text.indexOf('\r\n\r\n')) {
        const head = text.slice(0, end);
        text = text.slice(end + 4);
        const path = /^GET (\S+) HTTP\/1\.1/.exec(head)?.[1] ?? '';
        const m = /\r\nRange: bytes=(\d+)-(\d+)/i.exec(head);
        const offset = Number(m?.[1] ?? 0);
        void state.script(socket, { path, offset, length: Number(m?.[2] ?? -1) - offset + 1, n: requests++ });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  (state as { url: URL }).url = new URL(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`);
  return state;
}

/** The bytes of a test file: byte i is a function of i. */
function content(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = ((offset + i) * 31 + 7) & 0xff;
  return b;
}

function reply206(offset: number, length: number, extra = ''): Buffer {
  return Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${length}\r\nContent-Range: bytes ${offset}-${offset + length - 1}/1000000\r\n${extra}\r\n`, 'latin1'), content(offset, length)]);
}

/** A sink into one buffer, cut into regions of at most `region` bytes. */
function bufferSink(length: number, region = Infinity): BodySink & { readonly bytes: Buffer; readonly got: number } {
  const bytes = Buffer.alloc(length);
  let got = 0;
  return {
    bytes,
    get got() {
      return got;
    },
    space: (max) => bytes.subarray(got, got + Math.min(max, region)),
    filled: (n) => void (got += n),
  };
}

async function rejection(p: Promise<unknown>): Promise<RangeReplyError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RangeReplyError, `not a RangeReplyError: ${String(err)}`);
    return err;
  }
  assert.fail('expected a rejection');
}

describe('reply heads', () => {
  test('parseHead: status, lower-case names, repeated headers', () => {
    const h = parseHead('HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nX-A: 1\r\nx-a: 2\r\nContent-Length:10');
    assert.equal(h.status, 206);
    assert.deepEqual([...h.headers], [
      ['content-length', '10'],
      ['x-a', '1, 2'],
    ]);
    assert.equal(parseHead('HTTP/1.0 200').status, 200);
  });

  test('parseHead refuses what is not an HTTP/1.x reply head', () => {
    assert.throws(() => parseHead('SSH-2.0-OpenSSH'), /not an HTTP\/1\.x reply: "SSH-2\.0-OpenSSH"/);
    assert.throws(() => parseHead('HTTP/1.1 20 OK'), /not an HTTP\/1\.x reply/);
    assert.throws(() => parseHead('HTTP/1.1 200 OK\r\nno colon here'), /malformed reply header line "no colon here"/);
    assert.throws(() => parseHead('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2'), /conflicting Content-Length/);
  });

  test('rangeReplyProblem: which replies are usable, and which failures are worth a retry', () => {
    const head = (status: number, headers: Record<string, string> = {}) => ({ status, headers: new Map(Object.entries(headers)) });
    assert.equal(rangeReplyProblem(head(206, { 'content-range': 'bytes 10-19/100' }), 10, 10), undefined);
    assert.equal(rangeReplyProblem(head(200, { 'content-length': '10' }), 0, 10), undefined);
    const cases: [ReturnType<typeof head>, RegExp, boolean][] = [
      [head(206, { 'content-range': 'bytes 10-20/100' }), /unexpected Content-Range "bytes 10-20\/100"/, true],
      [head(206), /unexpected Content-Range ""/, true],
      [head(200, { 'content-length': '100' }), /ignores Range requests/, false],
      [head(500), /^HTTP 500$/, true],
      [head(503), /^HTTP 503$/, true],
      [head(429), /^HTTP 429$/, true],
      [head(404), /^HTTP 404$/, false],
      [head(416), /^HTTP 416 \(range not satisfiable: the source changed since publishing\)$/, false],
    ];
    for (const [h, message, transient] of cases) {
      const p = rangeReplyProblem(h, 10, 10);
      assert.ok(p, `status ${h.status} must be refused`);
      assert.match(p.message, message);
      assert.equal(p.transient, transient, `status ${h.status}`);
    }
  });

  test('feed copies a buffer into a sink however small its regions', () => {
    const sink = bufferSink(100, 7);
    const data = content(0, 100);
    feed(sink, data);
    assert.equal(sink.got, 100);
    assert.ok(sink.bytes.equals(data));
  });
});

describe('RangeClient against scripted servers', () => {
  let srv: Scripted;
  before(async () => {
    srv = await scripted(() => undefined);
  });
  after(() => srv.close());

  const ok: Script = (s, r) => void s.write(reply206(r.offset, r.length));

  test('the body lands exactly, whether it comes with the head, byte by byte, or in odd pieces', T, async () => {
    const client = new RangeClient(srv.url);
    try {
      for (const cut of [0, 1, 13, 4096]) {
        srv.script = async (s, r) => {
          const all = reply206(r.offset, r.length);
          if (cut === 0) {
            s.write(all);
            return;
          }
          for (let at = 0; at < all.length; at += cut) {
            s.write(all.subarray(at, at + cut));
            if (cut < 100 && at % 500 === 0) await sleep(1);
          }
        };
        for (const region of [Infinity, 3]) {
          const sink = bufferSink(3000, region);
          await client.get('/f.bin', 12345, 3000, sink);
          assert.equal(sink.got, 3000, `cut ${cut}, region ${region}`);
          assert.ok(sink.bytes.equals(content(12345, 3000)), `cut ${cut}, region ${region}`);
        }
      }
    } finally {
      client.close();
    }
  });

  test('one kept-alive connection serves requests in turn; Connection: close makes the next one new', T, async () => {
    srv.script = ok;
    const client = new RangeClient(srv.url);
    try {
      const before = srv.connections;
      for (let i = 0; i < 5; i++) await client.get('/f.bin', i * 100, 100, bufferSink(100));
      assert.equal(srv.connections - before, 1);
      srv.script = (s, r) => void s.write(reply206(r.offset, r.length, 'Connection: close\r\n'));
      const a = bufferSink(50);
      await client.get('/f.bin', 0, 50, a);
      srv.script = ok;
      const b = bufferSink(50);
      await client.get('/f.bin', 50, 50, b);
      assert.ok(a.bytes.equals(content(0, 50)) && b.bytes.equals(content(50, 50)));
      assert.equal(srv.connections - before, 2);
    } finally {
      client.close();
    }
  });

  test('at most maxSockets connections at once; every waiting request is served', T, async () => {
    srv.script = async (s, r) => {
      await sleep(20);
      s.write(reply206(r.offset, r.length));
    };
    const client = new RangeClient(srv.url, { maxSockets: 2 });
    try {
      srv.maxOpen = 0;
      const sinks = Array.from({ length: 7 }, () => bufferSink(64));
      await Promise.all(sinks.map((sink, i) => client.get('/f.bin', i * 64, 64, sink)));
      sinks.forEach((sink, i) => assert.ok(sink.bytes.equals(content(i * 64, 64))));
      assert.ok(srv.maxOpen <= 2, `${srv.maxOpen} connections were open at once`);
    } finally {
      client.close();
    }
  });

  test('a kept-alive connection the server closed while idle is replaced without an error', T, async () => {
    srv.script = (s, r) => {
      s.write(reply206(r.offset, r.length));
      setTimeout(() => s.destroy(), 5);
    };
    const client = new RangeClient(srv.url);
    try {
      await client.get('/f.bin', 0, 10, bufferSink(10));
      await sleep(50);
      srv.script = ok;
      const sink = bufferSink(10);
      await client.get('/f.bin', 10, 10, sink);
      assert.ok(sink.bytes.equals(content(10, 10)));
      // A request the server drops on a fresh connection is an error, not a silent retry loop.
      srv.script = (s) => void s.destroy();
      const e = await rejection(client.get('/f.bin', 0, 10, bufferSink(10)));
      assert.equal(e.transient, true);
      assert.match(e.message, /connection closed/);
    } finally {
      client.close();
    }
  });

  test('unusable replies are refused with a message, transient or not', T, async () => {
    const client = new RangeClient(srv.url);
    const cases: [string, Script, RegExp, boolean][] = [
      ['server error', (s) => void s.write('HTTP/1.1 500 Oops\r\nContent-Length: 6\r\n\r\nbroken'), /^HTTP 500$/, true],
      ['not found', (s) => void s.write('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n'), /^HTTP 404$/, false],
      ['chunked', (s, r) => void s.write(`HTTP/1.1 206 P\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes ${r.offset}-${r.offset + r.length - 1}/9999\r\n\r\n`), /must carry Content-Length: 100 \(got Transfer-Encoding: chunked\)/, false],
      ['wrong length', (s, r) => void s.write(`HTTP/1.1 206 P\r\nContent-Length: 99\r\nContent-Range: bytes ${r.offset}-${r.offset + r.length - 1}/9999\r\n\r\n`), /must carry Content-Length: 100 \(got Content-Length: 99\)/, false],
      ['other range', (s, r) => void s.write(reply206(r.offset + 1, r.length)), /unexpected Content-Range "bytes 1-100\/1000000"/, true],
      ['truncated', (s, r) => void s.end(reply206(r.offset, r.length).subarray(0, -40)), /connection closed mid-body: short read: 60 of 100 bytes/, true],
      ['garbage', (s) => void s.write('SSH-2.0-OpenSSH_9.2\r\n\r\n'), /not an HTTP\/1\.x reply/, true],
      ['endless head', (s) => void s.write(`HTTP/1.1 206 P\r\nX: ${'a'.repeat(20_000)}`), /reply head longer than 16384 bytes/, true],
      ['too much', (s, r) => void s.write(Buffer.concat([Buffer.from(`HTTP/1.1 206 P\r\nContent-Length: 100\r\nContent-Range: bytes ${r.offset}-${r.offset + 99}/9999\r\n\r\n`), Buffer.alloc(200)])), /^$/, true],
    ];
    try {
      for (const [name, script, message, transient] of cases) {
        srv.script = script;
        const sink = bufferSink(100);
        const p = client.get('/f.bin', 0, 100, sink);
        if (name === 'too much') {
          // Only the 100 bytes the framing gives are taken; the rest ends the connection, not the read.
          await p;
          assert.equal(sink.got, 100);
          const before = srv.connections;
          srv.script = ok;
          await client.get('/f.bin', 0, 100, bufferSink(100));
          assert.equal(srv.connections - before, 1, 'the connection that sent too much is not used again');
          continue;
        }
        const e = await rejection(p);
        assert.match(e.message, message, name);
        assert.equal(e.transient, transient, name);
        assert.ok(sink.got <= 100, name);
      }
      // The client is still usable.
      srv.script = ok;
      const sink = bufferSink(100);
      await client.get('/f.bin', 0, 100, sink);
      assert.ok(sink.bytes.equals(content(0, 100)));
    } finally {
      client.close();
    }
  });

  test('deadlines: a whole reply, or with perData each wait for bytes', T, async () => {
    const client = new RangeClient(srv.url, { timeoutMs: 150 });
    try {
      srv.script = () => undefined;
      const silent = await rejection(client.get('/f.bin', 0, 10, bufferSink(10)));
      assert.match(silent.message, /^no complete answer within 150 ms$/);
      assert.equal(silent.transient, true);
      // A body trickling for longer than the deadline, but never pausing that long, is fine with perData.
      srv.script = async (s, r) => {
        const all = reply206(r.offset, r.length);
        for (let at = 0; at < all.length; at += 40) {
          s.write(all.subarray(at, at + 40));
          await sleep(40);
        }
      };
      const sink = bufferSink(300);
      await client.get('/f.bin', 0, 300, sink, true);
      assert.ok(sink.bytes.equals(content(0, 300)));
      const whole = await rejection(client.get('/f.bin', 0, 300, bufferSink(300)));
      assert.match(whole.message, /^no complete answer within 150 ms$/);
      srv.script = (s, r) => void s.write(reply206(r.offset, r.length).subarray(0, 150));
      const stalled = await rejection(client.get('/f.bin', 0, 300, bufferSink(300), true));
      assert.match(stalled.message, /^no bytes within 150 ms$/);
    } finally {
      client.close();
    }
  });

  test('HttpSource.readPieces through the client: pieces in order, exact, with the flow paused while they are handled', T, async () => {
    srv.script = ok;
    const source = new HttpSource(srv.url.href);
    try {
      const seen: number[] = [];
      let busy = 0;
      let most = 0;
      await source.readPieces('f.bin', 1000, 10 * 4096 + 17, 4096, async (i, bytes) => {
        busy++;
        most = Math.max(most, busy);
        assert.ok(bytes.equals(content(1000 + i * 4096, Math.min(4096, 10 * 4096 + 17 - i * 4096))), `piece ${i}`);
        seen.push(i);
        await sleep(5);
        busy--;
      });
      assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.ok(most <= 5, `${most} pieces were handled at once`);
      srv.script = (s) => void s.write('HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n');
      await assert.rejects(source.read('f.bin', 0, 10), (err: unknown) => err instanceof SourceError && /f\.bin bytes 0\+10: HTTP 503$/.test(err.message) && err.transient);
    } finally {
      source.close();
    }
  });
});

const FUZZ_SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 32));
const FUZZ_COUNT = Number(process.env['FUZZ_COUNT'] ?? 1000);

test(`fuzz: mangled replies are read exactly or refused, never hang or throw otherwise (FUZZ_SEED=${FUZZ_SEED} FUZZ_COUNT=${FUZZ_COUNT})`, { timeout: 10 * 60_000 }, async () => {
  const rand = mulberry32(FUZZ_SEED);
  const pick = (n: number): number => rand() % n;
  const mangle = (b: Buffer): Buffer => {
    const out = Buffer.from(b);
    switch (pick(6)) {
      case 0: // flip bytes anywhere
        for (let k = pick(8) + 1; k > 0; k--) out[pick(out.length)] = pick(256);
        return out;
      case 1: // cut short
        return out.subarray(0, pick(out.length));
      case 2: // random bytes instead
        return randomBytes(pick(300));
      case 3: // a header mangled in the head
        return Buffer.concat([Buffer.from(`HTTP/1.1 ${[200, 206, 304, 500, 999][pick(5)]} X\r\nContent-Length: ${[-1, 0, 100, 1e18, 'x'][pick(5)]}\r\nContent-Range: bytes ${pick(3)}-${pick(200)}/5\r\n\r\n`), out.subarray(pick(out.length))]);
      case 4: // extra bytes after the body
        return Buffer.concat([out, randomBytes(pick(50) + 1)]);
      default: // intact
        return out;
    }
  };
  const srv = await scripted(() => undefined);
  const client = new RangeClient(srv.url, { timeoutMs: 60 });
  try {
    let exact = 0;
    let refused = 0;
    for (let i = 0; i < FUZZ_COUNT; i++) {
      const reply = mangle(reply206(0, 100));
      const cuts = pick(4);
      srv.script = async (s) => {
        if (cuts === 0) s.write(reply);
        else for (let at = 0; at < reply.length; at += 1 + pick(60)) s.write(reply.subarray(at, at + 1 + pick(60)));
        // Mostly the connection ends; otherwise a reply cut short is a stall the deadline ends.
        if (pick(4) > 0) {
          await sleep(1);
          s.end();
        }
      };
      const sink = bufferSink(100);
      try {
        await client.get('/f.bin', 0, 100, sink);
        assert.equal(sink.got, 100, `case ${i}: resolved with ${sink.got} bytes`);
        exact++;
      } catch (err) {
        assert.ok(err instanceof RangeReplyError, `case ${i}: ${String(err)}`);
        assert.ok(err.message.length > 0);
        refused++;
      }
      assert.ok(sink.got <= 100, `case ${i}: ${sink.got} bytes written into a 100-byte body`);
    }
    assert.ok(exact > 0 && refused > 0, `exact ${exact}, refused ${refused}`);
    srv.script = (s, r) => void s.write(reply206(r.offset, r.length));
    const sink = bufferSink(100);
    await client.get('/f.bin', 0, 100, sink);
    assert.ok(sink.bytes.equals(content(0, 100)));
  } finally {
    client.close();
    await srv.close();
  }
});
