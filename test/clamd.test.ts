/**
 * Scanners against a real clamd (Debian clamav-daemon, started by test/helpers/clamd.ts with a
 * one-signature database), plus fake unix servers for the failure cases, the reply parser,
 * commandScanner, functionScanner and quarantine.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ClamdError,
  ClamdScanner,
  commandScanner,
  functionScanner,
  parseClamdReply,
  quarantine,
  signatureFromOutput,
  splitClamdReply,
  type QuarantineRecord,
  type ScanResult,
} from '../src/scan/index.js';
import { startClamd, TEST_MALWARE, TEST_SIGNATURE_REPORTED, type ClamdInstance } from './helpers/clamd.js';

const T = { timeout: 30_000 };
const HOOK = { timeout: 70_000 };

let tmp = '';
let clamd: ClamdInstance | undefined;
const fds: number[] = [];

function clamdSocket(): string {
  assert.ok(clamd, 'clamd did not start');
  return clamd.socket;
}

before(async () => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fanotify-scan-')));
  clamd = await startClamd();
  process.stderr.write(`# clamd (1 signature) answered PING ${clamd.startMs.toFixed(0)} ms after spawn\n`);
}, HOOK);

after(async () => {
  for (const fd of fds) fs.closeSync(fd);
  await clamd?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
}, HOOK);

let fileCount = 0;
/** Write a file and open it read-only (closed in after()). */
function openFile(content: string | Buffer, name = `f${fileCount++}`): { fd: number; path: string } {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, content);
  const fd = fs.openSync(p, 'r');
  fds.push(fd);
  return { fd, path: p };
}

const infectedContent = (i = 0): string => `header ${i}\n${TEST_MALWARE}\ntrailer ${i}\n`;
const cleanContent = (i = 0): string => `nothing to see here ${i}\n`;

function assertError(r: ScanResult, pattern: RegExp): Error {
  assert.equal(r.verdict, 'error', `expected an error result, got ${JSON.stringify(r)}`);
  assert.ok(r.verdict === 'error');
  assert.match(r.error.message, pattern);
  return r.error;
}

/** A unix server that accepts connections and never answers. */
async function silentServer(): Promise<{ socket: string; connections: () => number; close: () => Promise<void> }> {
  const socket = path.join(tmp, `silent-${fileCount++}.sock`);
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    sockets.add(s);
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket,
    connections: () => count,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A unix server that answers every NUL-terminated command with `reply` (a function of the command). */
async function scriptedServer(reply: (cmd: string) => string | undefined): Promise<{ socket: string; close: () => Promise<void> }> {
  const socket = path.join(tmp, `scripted-${fileCount++}.sock`);
  const server = net.createServer((s) => {
    let buf = '';
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      let i: number;
      while ((i = buf.indexOf('\0')) >= 0) {
        const cmd = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!/^z[A-Z]+$/.test(cmd) || cmd === 'zIDSESSION') continue;
        const r = reply(cmd);
        if (r !== undefined) s.write(r);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return { socket, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

// ---------------------------------------------------------------------------------------------

describe('clamd reply parser', () => {
  test('OK, FOUND, ERROR, id prefixes, NUL or newline or nothing at the end', T, () => {
    assert.deepEqual(parseClamdReply('stream: OK\0'), { kind: 'clean', id: undefined, subject: 'stream' });
    assert.deepEqual(parseClamdReply('fd[10]: OK'), { kind: 'clean', id: undefined, subject: 'fd[10]' });
    assert.deepEqual(parseClamdReply('stream: Eicar-Signature FOUND\0'), {
      kind: 'infected',
      id: undefined,
      subject: 'stream',
      signature: 'Eicar-Signature',
    });
    assert.deepEqual(parseClamdReply(Buffer.from('12: fd[11]: Fanotify.Test.Signature.UNOFFICIAL FOUND\0')), {
      kind: 'infected',
      id: 12,
      subject: 'fd[11]',
      signature: 'Fanotify.Test.Signature.UNOFFICIAL',
    });
    // A path containing ": " keeps the signature after the last one.
    assert.deepEqual(parseClamdReply('/srv/a: b/file: Win.Test.EICAR_HDB-1 FOUND\n'), {
      kind: 'infected',
      id: undefined,
      subject: '/srv/a: b/file',
      signature: 'Win.Test.EICAR_HDB-1',
    });
    assert.deepEqual(parseClamdReply('3: stream: OK\0'), { kind: 'clean', id: 3, subject: 'stream' });
    assert.deepEqual(parseClamdReply('INSTREAM size limit exceeded. ERROR\0'), {
      kind: 'error',
      id: undefined,
      message: 'INSTREAM size limit exceeded.',
    });
    assert.deepEqual(parseClamdReply('7: fd[9]: lstat() failed: No such file or directory. ERROR'), {
      kind: 'error',
      id: 7,
      message: 'fd[9]: lstat() failed: No such file or directory.',
    });
    assert.deepEqual(parseClamdReply('ERROR\0'), { kind: 'error', id: undefined, message: 'ERROR' });
  });

  test('garbage is unknown, never clean', T, () => {
    for (const raw of ['', '\0', 'PONG', 'hello world', 'OK', 'stream: ok', 'FOUND', 'x: FOUND', '42:', '\x00\x01\x02']) {
      const r = parseClamdReply(raw);
      assert.equal(r.kind, 'unknown', `${JSON.stringify(raw)} parsed as ${JSON.stringify(r)}`);
    }
  });

  test('splitClamdReply strips the id and the terminator', T, () => {
    assert.deepEqual(splitClamdReply('2: PONG\0'), { id: 2, body: 'PONG' });
    assert.deepEqual(splitClamdReply('PONG\n'), { id: undefined, body: 'PONG' });
    assert.deepEqual(splitClamdReply('ClamAV 1.4.6\0'), { id: undefined, body: 'ClamAV 1.4.6' });
  });
});

// ---------------------------------------------------------------------------------------------

describe('ClamdScanner with a real clamd', () => {
  for (const mode of ['fildes', 'instream'] as const) {
    test(`${mode}: a file with the test string is infected, others are clean, offsets untouched`, T, async () => {
      const scanner = new ClamdScanner({ socket: clamdSocket(), mode });
      try {
        const bad = openFile(infectedContent());
        const good = openFile(cleanContent());
        assert.deepEqual(await scanner.scan(bad), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
        assert.deepEqual(await scanner.scan(good), { verdict: 'clean' });
        assert.deepEqual(await scanner.scan({ ...openFile(''), size: 0 }), { verdict: 'clean' });
        // Neither passing the fd nor streaming it moved the fd's offset.
        const head = Buffer.alloc(6);
        assert.equal(fs.readSync(bad.fd, head, 0, 6, null), 6);
        assert.equal(head.toString(), 'header');
        // The fds are still ours and open.
        assert.ok(fs.fstatSync(good.fd).isFile());
      } finally {
        await scanner.close();
      }
    });
  }

  test('instream: the test string split across small chunks is still found', T, async () => {
    const scanner = new ClamdScanner({ socket: clamdSocket(), mode: 'instream', chunkBytes: 7 });
    try {
      const big = `${'x'.repeat(100_003)}${TEST_MALWARE}${'y'.repeat(5)}`;
      assert.deepEqual(await scanner.scan(openFile(big)), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
      assert.deepEqual(await scanner.scan(openFile('z'.repeat(70_000))), { verdict: 'clean' });
    } finally {
      await scanner.close();
    }
  });

  test('instream: a file that grew past its known size is streamed whole, on the same session', T, async () => {
    const scanner = new ClamdScanner({ socket: clamdSocket(), mode: 'instream' });
    try {
      // The signature lies past the stated size: a one-read send of `size` bytes would miss it.
      const grown = openFile(`${'x'.repeat(2000)}${TEST_MALWARE}`);
      assert.deepEqual(await scanner.scan({ ...grown, size: 1000 }), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
      // A file that shrank: what is there is sent, and the session stays usable.
      assert.deepEqual(await scanner.scan({ ...openFile('short'), size: 4000 }), { verdict: 'clean' });
      assert.deepEqual(await scanner.scan(openFile(infectedContent())), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
      assert.equal(scanner.connections, 1);
    } finally {
      await scanner.close();
    }
  });

  test('instream without a known size: files around one chunk are scanned whole, on one session', T, async () => {
    const scanner = new ClamdScanner({ socket: clamdSocket(), mode: 'instream' });
    try {
      // A first scan leaves an idle session, so the next ones take the one-read path when they fit.
      assert.deepEqual(await scanner.scan(openFile(cleanContent())), { verdict: 'clean' });
      const chunk = 64 * 1024;
      // The signature ends each file: a send that stopped at one read would miss it.
      for (const size of [chunk - 1, chunk, chunk + 100]) {
        const body = `${'x'.repeat(size - TEST_MALWARE.length)}${TEST_MALWARE}`;
        assert.equal(body.length, size);
        assert.deepEqual(await scanner.scan(openFile(body)), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED }, `${size} bytes`);
        assert.deepEqual(await scanner.scan(openFile('y'.repeat(size))), { verdict: 'clean' }, `${size} bytes, clean`);
      }
      assert.equal(scanner.connections, 1);
    } finally {
      await scanner.close();
    }
  });

  test('sessions: sequential scans, ping and version reuse one connection', T, async () => {
    const scanner = new ClamdScanner({ socket: clamdSocket() });
    try {
      assert.equal(await scanner.ping(), true);
      assert.match(await scanner.version(), /^ClamAV \d+\.\d+/);
      for (let i = 0; i < 10; i++) {
        const r = await scanner.scan(openFile(i % 2 ? infectedContent(i) : cleanContent(i)));
        assert.equal(r.verdict, i % 2 ? 'infected' : 'clean');
      }
      assert.equal(scanner.connections, 1);
    } finally {
      await scanner.close();
    }
    assert.equal(scanner.connections, 0);
  });

  for (const mode of ['fildes', 'instream'] as const) {
    test(`${mode}: 50 concurrent scans through a pool of 4 are all answered correctly`, T, async () => {
      const scanner = new ClamdScanner({ socket: clamdSocket(), mode, poolSize: 4 });
      try {
        const files = Array.from({ length: 50 }, (_, i) => ({ ...openFile(i % 3 === 0 ? infectedContent(i) : cleanContent(i)), infected: i % 3 === 0 }));
        let maxConnections = 0;
        const results = await Promise.all(
          files.map(async (f) => {
            const r = await scanner.scan(f);
            maxConnections = Math.max(maxConnections, scanner.connections);
            return r;
          }),
        );
        results.forEach((r, i) => {
          const f = files[i];
          assert.ok(f);
          assert.deepEqual(r, f.infected ? { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED } : { verdict: 'clean' }, `file ${i}`);
        });
        assert.ok(maxConnections <= 4, `${maxConnections} connections for poolSize 4`);
        assert.ok(scanner.connections >= 1 && scanner.connections <= 4);
      } finally {
        await scanner.close();
      }
    });
  }

  test('instream: a file larger than maxStreamBytes is an error naming the limit, without asking clamd', T, async () => {
    const scanner = new ClamdScanner({ socket: clamdSocket(), mode: 'instream', maxStreamBytes: 1024 });
    try {
      const f = openFile(Buffer.alloc(4096, 0x61));
      const err = assertError(await scanner.scan(f), /larger than maxStreamBytes \(4096 > 1024 bytes\)/);
      assert.equal((err as ClamdError).code, 'EFBIG');
      assert.equal(scanner.connections, 0);
      // A file of exactly the limit is scanned.
      assert.deepEqual(await scanner.scan(openFile(Buffer.alloc(1024, 0x61))), { verdict: 'clean' });
      // A size given by the caller is trusted for the early check…
      assertError(await scanner.scan({ ...openFile('small'), size: 5000 }), /maxStreamBytes/);
      // …and a file that is bigger than announced is caught while streaming.
      assertError(await scanner.scan({ ...openFile(Buffer.alloc(2000, 0x62)), size: 10 }), /larger than maxStreamBytes \(1025 > 1024 bytes\)/);
    } finally {
      await scanner.close();
    }
  });

  test("instream: clamd's own StreamMaxLength answer is an error result", T, async () => {
    const small = await startClamd({ extraConfig: ['StreamMaxLength 1K'] });
    const scanner = new ClamdScanner({ socket: small.socket, mode: 'instream', chunkBytes: 512 });
    try {
      assertError(await scanner.scan(openFile(Buffer.alloc(8192, 0x63))), /could not scan .*INSTREAM size limit exceeded/);
      // The scanner recovers on a new connection.
      assert.deepEqual(await scanner.scan(openFile(infectedContent())), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
    } finally {
      await scanner.close();
      await small.stop();
    }
  });

  test('a session closed by clamd (IdleTimeout) is replaced transparently', T, async () => {
    const short = await startClamd({ extraConfig: ['IdleTimeout 1'] });
    const scanner = new ClamdScanner({ socket: short.socket, retries: 0 });
    try {
      assert.deepEqual(await scanner.scan(openFile(cleanContent())), { verdict: 'clean' });
      assert.equal(scanner.connections, 1);
      await sleep(2500); // clamd closes the idle session after 1 s
      assert.deepEqual(await scanner.scan(openFile(infectedContent())), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
      assert.equal(scanner.connections, 1);
    } finally {
      await scanner.close();
      await short.stop();
    }
  });

  for (const mode of ['instream', 'fildes'] as const) {
    test(`${mode}: a stale pooled session whose server vanished is retried on a fresh connection`, T, async () => {
      // Replies once per connection, then closes it, so a pooled session is dead on reuse.
      let conns = 0;
      const socket = path.join(tmp, `oneshot-${fileCount++}.sock`);
      const server = net.createServer((s) => {
        conns++;
        let id = 0;
        s.on('error', () => {});
        s.on('data', (d: Buffer) => {
          for (const cmd of d.toString('latin1').split('\0')) {
            if (cmd === 'zFILDES' || cmd === 'zINSTREAM') {
              id++;
              // Answer and keep the connection open but mark it to be dropped silently on next use.
              if (id === 1) s.write(`${id}: stream: OK\0`);
              else s.destroy();
            }
          }
        });
      });
      await new Promise<void>((resolve) => server.listen(socket, resolve));
      const scanner = new ClamdScanner({ socket, mode, retries: 0 });
      try {
        const f = openFile(cleanContent());
        assert.deepEqual(await scanner.scan(f), { verdict: 'clean' });
        // The pooled session breaks mid-request (for FILDES: after the fd went out at once on it):
        // reconnect once without using up a retry.
        assert.deepEqual(await scanner.scan(f), { verdict: 'clean' });
        assert.equal(conns, 2);
      } finally {
        await scanner.close();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    });
  }

  test('clamd stopped: pooled scanner answers an error naming the socket, fast', T, async () => {
    const own = await startClamd();
    const scanner = new ClamdScanner({ socket: own.socket });
    try {
      assert.deepEqual(await scanner.scan(openFile(infectedContent())), { verdict: 'infected', signature: TEST_SIGNATURE_REPORTED });
      await own.stop(); // SIGTERM: clamd removes its socket
      const t0 = performance.now();
      const err = assertError(await scanner.scan(openFile(cleanContent())), new RegExp(`clamd at ${own.socket} is unreachable \\(ENOENT\\): is clamd running\\?`));
      assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
      assert.equal((err as ClamdError).code, 'ENOENT');
      assert.equal(await scanner.ping(), false);
      await assert.rejects(scanner.version(), /unreachable \(ENOENT\)/);
    } finally {
      await scanner.close();
      await own.stop();
    }
  });

  test('clamd killed (stale socket file): ECONNREFUSED error naming the socket, fast', T, async () => {
    const own = await startClamd();
    const scanner = new ClamdScanner({ socket: own.socket, mode: 'fildes' });
    try {
      process.kill(own.pid, 'SIGKILL');
      await own.exited;
      assert.ok(fs.existsSync(own.socket), 'SIGKILL leaves the socket file behind');
      const t0 = performance.now();
      const err = assertError(
        await scanner.scan(openFile(cleanContent())),
        new RegExp(`clamd at ${own.socket} is unreachable \\(ECONNREFUSED\\): is clamd running\\?`),
      );
      assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
      assert.equal((err as ClamdError).socket, own.socket);
    } finally {
      await scanner.close();
      await own.stop();
    }
  });

  test('no socket at all: ENOENT for both modes, under 1 s including the retry', T, async () => {
    const socket = path.join(tmp, 'no-such.sock');
    for (const mode of ['fildes', 'instream'] as const) {
      const scanner = new ClamdScanner({ socket, mode, retries: 1 });
      const t0 = performance.now();
      assertError(await scanner.scan(openFile(cleanContent())), /clamd at .*no-such\.sock is unreachable \(ENOENT\)/);
      assert.ok(performance.now() - t0 < 1000);
      await scanner.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('ClamdScanner failure handling with fake servers', () => {
  test('a bad fd is an error result in both modes, and the connection is not reused', T, async () => {
    for (const mode of ['fildes', 'instream'] as const) {
      const scanner = new ClamdScanner({ socket: clamdSocket(), mode });
      try {
        assertError(await scanner.scan({ fd: 987_654, path: '/nowhere' }), /EBADF/);
        assertError(await scanner.scan({ fd: -1, path: '/nowhere' }), /bad fd -1/);
        assert.deepEqual(await scanner.scan(openFile(cleanContent())), { verdict: 'clean' });
      } finally {
        await scanner.close();
      }
    }
  });


  for (const mode of ['fildes', 'instream'] as const) {
    test(`${mode}: a server that never answers → error within timeoutMs`, T, async () => {
      const server = await silentServer();
      const scanner = new ClamdScanner({ socket: server.socket, mode, timeoutMs: 300 });
      try {
        const t0 = performance.now();
        const err = assertError(await scanner.scan(openFile(cleanContent())), new RegExp(`clamd at ${server.socket} did not answer within 300 ms`));
        const took = performance.now() - t0;
        assert.ok(took >= 290 && took < 800, `took ${took} ms`);
        assert.equal((err as ClamdError).code, 'ETIMEDOUT');
        assert.equal(scanner.connections, 0, 'the timed-out connection is not reused');
      } finally {
        await scanner.close();
        await server.close();
      }
    });
  }

  test('the deadline covers waiting for a free connection', T, async () => {
    const server = await silentServer();
    const scanner = new ClamdScanner({ socket: server.socket, timeoutMs: 300, poolSize: 1 });
    try {
      const t0 = performance.now();
      const [a, b] = await Promise.all([scanner.scan(openFile('a')), scanner.scan(openFile('b'))]);
      assert.ok(performance.now() - t0 < 800);
      assertError(a, /did not answer within 300 ms/);
      // b waited for a's slot; a's timer and b's fire together, so b may just have got the slot.
      assertError(b, /no free connection within 300 ms \(poolSize 1, all busy\)|did not answer within 300 ms .*; \d+ ms of it waiting for a free connection, poolSize 1\)/);
      assert.equal(server.connections(), 1);
    } finally {
      await scanner.close();
      await server.close();
    }
  });

  test("the caller's AbortSignal ends a scan at once", T, async () => {
    const server = await silentServer();
    const scanner = new ClamdScanner({ socket: server.socket, timeoutMs: 5000 });
    try {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      const t0 = performance.now();
      const err = assertError(await scanner.scan(openFile('x'), ac.signal), /aborted by the caller/);
      assert.ok(performance.now() - t0 < 1000);
      assert.equal((err as ClamdError).code, 'EABORTED');
      const pre = new AbortController();
      pre.abort();
      assertError(await scanner.scan(openFile('x'), pre.signal), /aborted/);
    } finally {
      await scanner.close();
      await server.close();
    }
  });

  test('close() answers running scans with an error and refuses new ones', T, async () => {
    const server = await silentServer();
    const scanner = new ClamdScanner({ socket: server.socket, timeoutMs: 5000 });
    try {
      const running = scanner.scan(openFile('x'));
      await sleep(50);
      const t0 = performance.now();
      await scanner.close();
      assertError(await running, /scanner is closed/);
      assert.ok(performance.now() - t0 < 1000);
      assertError(await scanner.scan(openFile('y')), /scanner is closed/);
    } finally {
      await server.close();
    }
  });

  test('ERROR and unparseable replies are error results; wrong session ids are caught', T, async () => {
    const replies = ['1: fd[5]: Access denied. ERROR\0', '1: something odd\0', '7: stream: OK\0'];
    let n = 0;
    const server = await scriptedServer(() => replies[n++ % replies.length]);
    const scanner = new ClamdScanner({ socket: server.socket, mode: 'instream', retries: 0 });
    try {
      assertError(await scanner.scan(openFile('a')), /could not scan .*: fd\[5\]: Access denied\./);
      assertError(await scanner.scan(openFile('b')), /unexpected reply .*"something odd"/);
      assertError(await scanner.scan(openFile('c')), /answered request 7 when 1 was expected/);
    } finally {
      await scanner.close();
      await server.close();
    }
  });

  test('a reply without a NUL, ended by EOF, without sessions', T, async () => {
    const socket = path.join(tmp, `closing-${fileCount++}.sock`);
    let received = '';
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        received += d.toString('latin1');
        // The zero-length chunk ends the stream.
        if (received.endsWith('\0\0\0\0')) s.end('stream: Some.Sig FOUND\n');
      });
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    const scanner = new ClamdScanner({ socket, mode: 'instream', sessions: false });
    try {
      assert.deepEqual(await scanner.scan(openFile('q')), { verdict: 'infected', signature: 'Some.Sig' });
      assert.ok(received.startsWith('zINSTREAM\0\0\0\0\x01q'), JSON.stringify(received));
      assert.equal(scanner.connections, 0);
    } finally {
      await scanner.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  test('options are validated', T, () => {
    assert.throws(() => new ClamdScanner({ socket: { host: '127.0.0.1', port: 3310 }, mode: 'fildes' }), /unix socket/);
    assert.equal(new ClamdScanner({ socket: { host: '127.0.0.1', port: 3310 } }).mode, 'instream');
    assert.equal(new ClamdScanner({ socket: '/x.sock' }).mode, 'fildes');
    assert.throws(() => new ClamdScanner({ socket: '/x.sock', poolSize: 0 }), RangeError);
    assert.equal(new ClamdScanner({ socket: '/x.sock' }).name, 'clamd:/x.sock');
  });

  test('TCP instream against a fake clamd', T, async () => {
    const server = net.createServer((s) => {
      let buf = Buffer.alloc(0);
      s.on('error', () => {});
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const text = buf.toString('latin1');
        if (text.startsWith('zIDSESSION\0zPING\0')) s.write('1: PONG\0');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const scanner = new ClamdScanner({ socket: { host: '127.0.0.1', port } });
    try {
      assert.equal(await scanner.ping(), true);
    } finally {
      await scanner.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('commandScanner', () => {
  let script = '';
  before(() => {
    script = path.join(tmp, 'fake-scan.sh');
    fs.writeFileSync(
      script,
      [
        '#!/bin/sh',
        'f="$1"',
        'case "$f" in *.slow) sleep 10 ;; esac',
        'case "$f" in *.broken) echo "cannot read $f" >&2; exit 2 ;; esac',
        `if grep -q '${TEST_MALWARE}' "$f"; then echo "scanning..."; echo "$f: Fake.Sig-1 FOUND"; exit 1; fi`,
        'if grep -q NONAME "$f"; then exit 1; fi',
        'echo "$f: OK"; exit 0',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
  });

  test('exit codes map to clean / infected (with signature) / error', T, async () => {
    const scanner = commandScanner({ command: script, timeoutMs: 2000 });
    try {
      assert.deepEqual(await scanner.scan(openFile(cleanContent())), { verdict: 'clean' });
      assert.deepEqual(await scanner.scan(openFile(infectedContent())), { verdict: 'infected', signature: 'Fake.Sig-1' });
      assert.deepEqual(await scanner.scan(openFile('NONAME')), { verdict: 'infected', signature: 'unknown' });
      assertError(await scanner.scan(openFile('x', `b${fileCount}.broken`)), /exited with code 2: cannot read/);
    } finally {
      await scanner.close();
    }
  });

  test('custom code sets, args before the path', T, async () => {
    const scanner = commandScanner({ command: '/bin/sh', args: [script], cleanCodes: [0, 2], infectedCodes: [1] });
    try {
      assert.deepEqual(await scanner.scan(openFile('x', `c${fileCount}.broken`)), { verdict: 'clean' });
    } finally {
      await scanner.close();
    }
  });

  test('timeout, missing command, abort', T, async () => {
    const scanner = commandScanner({ command: script, timeoutMs: 300 });
    try {
      const t0 = performance.now();
      assertError(await scanner.scan(openFile('x', `s${fileCount}.slow`)), /timed out after 300 ms/);
      assert.ok(performance.now() - t0 < 2000);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      assertError(await scanner.scan(openFile('x', `t${fileCount}.slow`), ac.signal), /aborted/);
    } finally {
      await scanner.close();
    }
    const missing = commandScanner({ command: path.join(tmp, 'no-such-scanner') });
    assertError(await missing.scan(openFile('x')), /cannot run .*ENOENT/);
    await missing.close();
    assertError(await missing.scan(openFile('x')), /closed/);
  });

  test('signatureFromOutput', T, () => {
    assert.equal(signatureFromOutput('/a/b: Eicar-Signature FOUND\n\n----------- SCAN SUMMARY'), 'Eicar-Signature');
    assert.equal(signatureFromOutput('/a: b: X.Y FOUND'), 'X.Y');
    assert.equal(signatureFromOutput('/a: OK\n'), undefined);
  });
});

describe('functionScanner', () => {
  test('results pass through; throws, rejections and bad results become errors', T, async () => {
    const s = functionScanner('fn', (t) => (t.path.endsWith('bad') ? { verdict: 'infected', signature: 'S' } : { verdict: 'clean' }));
    assert.deepEqual(await s.scan({ fd: 0, path: '/x/bad' }), { verdict: 'infected', signature: 'S' });
    assert.deepEqual(await s.scan({ fd: 0, path: '/x/good' }), { verdict: 'clean' });
    const throwing = functionScanner('thrower', () => {
      throw new Error('boom');
    });
    assertError(await throwing.scan({ fd: 0, path: '/x' }), /scanner thrower failed on \/x: boom/);
    const rejecting = functionScanner('rejecter', async () => Promise.reject(new Error('nope')));
    assertError(await rejecting.scan({ fd: 0, path: '/x' }), /nope/);
    const garbage = functionScanner('garbage', () => ({ verdict: 'maybe' }) as unknown as ScanResult);
    assertError(await garbage.scan({ fd: 0, path: '/x' }), /invalid result/);
    await s.close();
    assertError(await s.scan({ fd: 0, path: '/x' }), /closed/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('quarantine', () => {
  for (const where of ['same filesystem (rename)', 'other filesystem (EXDEV: copy + unlink)'] as const) {
    test(`moves the file, 0400, with metadata: ${where}`, T, async (t) => {
      const srcDir = where.startsWith('same') ? tmp : fs.mkdtempSync('/dev/shm/fanotify-q-');
      t.after(() => {
        if (srcDir !== tmp) fs.rmSync(srcDir, { recursive: true, force: true });
      });
      assert.ok(where.startsWith('same') || fs.statSync(srcDir).dev !== fs.statSync(tmp).dev, '/dev/shm must be another filesystem');
      const src = path.join(srcDir, `evil ${fileCount++}.exe`);
      const content = infectedContent(42);
      fs.writeFileSync(src, content, { mode: 0o755 });
      const qdir = path.join(tmp, `quarantine-${fileCount++}`, 'nested');
      const { quarantinedPath, metaPath } = await quarantine(src, qdir, { signature: TEST_SIGNATURE_REPORTED, pid: 1234, comm: 'cat' });

      assert.equal(fs.existsSync(src), false, 'source gone');
      assert.equal(path.dirname(quarantinedPath), qdir);
      assert.match(path.basename(quarantinedPath), /^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{12}-evil \d+\.exe$/);
      assert.equal(metaPath, `${quarantinedPath}.json`);
      assert.equal(fs.readFileSync(quarantinedPath, 'utf8'), content);
      assert.equal(fs.statSync(quarantinedPath).mode & 0o7777, 0o400);
      assert.equal(fs.statSync(qdir).mode & 0o7777, 0o700);

      const record = JSON.parse(fs.readFileSync(metaPath, 'utf8')) as QuarantineRecord;
      assert.equal(record.originalPath, src);
      assert.equal(record.quarantinedPath, quarantinedPath);
      assert.equal(record.sha256, createHash('sha256').update(content).digest('hex'));
      assert.equal(record.size, Buffer.byteLength(content));
      assert.equal(record.mode, '0755');
      assert.equal(record.copied, !where.startsWith('same'));
      assert.ok(Math.abs(Date.parse(record.quarantinedAt) - Date.now()) < 60_000);
      assert.deepEqual(record.meta, { signature: TEST_SIGNATURE_REPORTED, pid: 1234, comm: 'cat' });

      // A second file with the same name gets its own slot.
      fs.writeFileSync(src, 'again');
      const second = await quarantine(src, qdir, {});
      assert.notEqual(second.quarantinedPath, quarantinedPath);
      assert.equal(fs.readFileSync(quarantinedPath, 'utf8'), content);
    });
  }

  test('refuses what is not a regular file, and missing files', T, async () => {
    const link = path.join(tmp, `link-${fileCount++}`);
    fs.symlinkSync('/etc/hostname', link);
    await assert.rejects(quarantine(link, path.join(tmp, 'qq'), {}), /not a regular file/);
    assert.ok(fs.lstatSync(link).isSymbolicLink());
    await assert.rejects(quarantine(path.join(tmp, 'missing'), path.join(tmp, 'qq'), {}), /ENOENT/);
  });
});
