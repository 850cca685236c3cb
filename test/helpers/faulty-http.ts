/**
 * An in-test HTTP server for a directory, with Range support and switchable faults: server
 * errors, stalls, truncated bodies, wrong bytes, or refusing connections.
 *
 * @module
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';

/** What the server does with the next requests. */
export type Fault = 'none' | 'error' | 'stall' | 'truncate' | 'corrupt' | 'reset';

/** A running faulty server. */
export interface FaultyHttp {
  readonly url: string;
  /** The current fault, applied to range requests (the manifest is always served). */
  fault: Fault;
  /** Range requests received. */
  readonly ranges: string[];
  /** Called when a range request arrives (before it is answered). */
  onRange: ((url: string, range: string) => void) | undefined;
  close(): Promise<void>;
}

/** Serve `root` on 127.0.0.1 and a free port. */
export async function startFaultyHttp(root: string): Promise<FaultyHttp> {
  const sockets = new Set<Socket>();
  const state: FaultyHttp = {
    url: '',
    fault: 'none',
    ranges: [],
    onRange: undefined,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  const server: Server = createServer((req, res) => {
    void serve(root, state, req.url ?? '/', req.headers.range, res);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  (state as { url: string }).url = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
  return state;
}

async function serve(root: string, state: FaultyHttp, url: string, range: string | undefined, res: ServerResponse): Promise<void> {
  const path = join(root, decodeURIComponent(url.split('?')[0] ?? '/'));
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    res.writeHead(404).end();
    return;
  }
  try {
    const size = (await fh.stat()).size;
    const m = range ? /^bytes=(\d+)-(\d+)$/.exec(range) : null;
    if (!m) {
      const all = Buffer.alloc(size);
      await fh.read(all, 0, size, 0);
      res.writeHead(200, { 'content-length': size }).end(all);
      return;
    }
    state.ranges.push(range ?? '');
    state.onRange?.(url, range ?? '');
    const start = Number(m[1]);
    const end = Math.min(Number(m[2]), size - 1);
    const body = Buffer.alloc(end - start + 1);
    await fh.read(body, 0, body.length, start);
    const headers = { 'content-length': body.length, 'content-range': `bytes ${start}-${end}/${size}` };
    switch (state.fault) {
      case 'none':
        res.writeHead(206, headers).end(body);
        return;
      case 'error':
        res.writeHead(500).end('broken');
        return;
      case 'stall':
        res.writeHead(206, headers);
        res.write(body.subarray(0, body.length >> 1));
        return; // never finishes; the client's deadline must cut it
      case 'truncate':
        res.writeHead(206, headers);
        res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy());
        return;
      case 'corrupt':
        for (let i = 0; i < body.length; i += 4096) body[i] = (body[i] ?? 0) ^ 0xff;
        res.writeHead(206, headers).end(body);
        return;
      case 'reset':
        res.socket?.destroy();
        return;
    }
  } finally {
    await fh.close();
  }
}
