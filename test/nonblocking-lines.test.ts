/**
 * The writer of the daemons' logs: it never blocks on a reader that stopped, drops beyond its
 * bound and says how many it dropped, keeps the order of what it writes, and survives a reader
 * that left.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NonBlockingLines } from '../src/cli/nonblocking-lines.js';

/** A FIFO with its read end open (non-blocking, not read yet), so writers can open it. */
function fifo(): { path: string; readFd: number; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'fan-nblines-'));
  const path = join(dir, 'log.fifo');
  execFileSync('mkfifo', [path]);
  const readFd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  return { path, readFd, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Everything the FIFO delivers until every writer has closed it. */
function readAll(fd: number): Promise<string> {
  const sock = new Socket({ fd, readable: true, writable: false });
  let text = '';
  sock.setEncoding('utf8').on('data', (d: string) => (text += d));
  return new Promise((resolve, reject) => {
    sock.once('end', () => resolve(text));
    sock.once('error', reject);
  });
}

test('a reader that stops: pushes never wait, lines beyond the bound are dropped and counted, order is kept', async () => {
  const f = fifo();
  try {
    const w = new NonBlockingLines(f.path, {
      flushAfterMs: 1,
      maxQueuedBytes: 64 * 1024,
      dropNotice: (n) => JSON.stringify({ dropped: n }),
    });
    const pad = 'x'.repeat(90);
    let pushed = 0;
    // ~2 MB against a 64 KiB pipe and a 64 KiB queue: if a push waited on the reader, this
    // loop would never end (the test's reader starts only after it).
    for (; pushed < 20_000; pushed++) w.push(JSON.stringify({ i: pushed, pad }));
    await new Promise((r) => setTimeout(r, 100)); // the first batch is out and the pipe is full
    assert.ok(w.dropped > 0, 'nothing dropped although nobody read');
    const text = readAll(f.readFd);
    // Writing resumes: the next line is preceded by the count of the lines lost meanwhile.
    await new Promise((r) => setTimeout(r, 100));
    w.push(JSON.stringify({ i: pushed++, pad }));
    await w.close(10_000);
    const lines = (await text).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { i?: number; dropped?: number });
    const seen = lines.filter((l) => l.i !== undefined).map((l) => l.i!);
    const dropped = lines.reduce((sum, l) => sum + (l.dropped ?? 0), 0);
    assert.equal(seen.length + dropped, pushed, 'every line is written or counted as dropped');
    assert.equal(dropped, w.dropped);
    assert.ok(seen.every((v, k) => k === 0 || v > seen[k - 1]!), 'lines keep their order');
    assert.equal(seen.at(-1), pushed - 1, 'the last line, pushed after the reader came back, is written');
    assert.ok(lines.findIndex((l) => l.dropped !== undefined) < lines.length - 1, 'the count comes before the line that followed the loss');
  } finally {
    f.cleanup();
  }
});

test('a reader that left (EPIPE) with exitOnEpipe false: the lines are counted as dropped, and the process goes on', async () => {
  const f = fifo();
  try {
    const errors: string[] = [];
    const w = new NonBlockingLines(f.path, {
      flushAfterMs: 1,
      maxQueuedBytes: 1024 * 1024,
      exitOnEpipe: false,
      dropNotice: (n) => `dropped ${n}`,
      onError: (err) => errors.push((err as NodeJS.ErrnoException).code ?? err.message),
    });
    closeSync(f.readFd);
    for (let i = 0; i < 10; i++) w.push(`line ${i}`);
    await w.close(5000);
    assert.equal(w.dropped, 10);
    assert.ok(errors.length > 0 && errors.every((e) => e === 'EPIPE'), errors.join(', '));
  } finally {
    f.cleanup();
  }
});
