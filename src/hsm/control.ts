/**
 * The control channel of a mounted tree: NDJSON over a unix socket. A request is one line; the
 * daemon answers with zero or more `progress` lines and one final `result` line. Only root may
 * connect (SO_PEERCRED), since every request acts with the daemon's privileges.
 * @packageDocumentation
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { z } from 'zod';
import { native } from '../native.js';

const request = z.discriminatedUnion('op', [
  z.object({ op: z.literal('status'), paths: z.array(z.string()).max(100_000) }),
  z.object({ op: z.literal('pin'), paths: z.array(z.string()).min(1).max(100_000) }),
  z.object({ op: z.literal('unpin'), paths: z.array(z.string()).min(1).max(100_000) }),
  z.object({ op: z.literal('evict'), paths: z.array(z.string()).min(1).max(100_000) }),
  z.object({ op: z.literal('prefetch'), paths: z.array(z.string()).min(1).max(100_000) }),
  z.object({ op: z.literal('unmount'), force: z.boolean() }),
]);

/** A request to the daemon. Paths are absolute, under the target. */
export type ControlRequest = z.infer<typeof request>;

/** A line from the daemon. */
export type ControlReply =
  | { readonly type: 'progress'; readonly [k: string]: unknown }
  | { readonly type: 'result'; readonly ok: boolean; readonly error?: string; readonly [k: string]: unknown };

const MAX_LINE = 16 * 1024 * 1024;

/** Parse a request line. @throws Error saying what is wrong. */
export function parseRequest(line: string): ControlRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new Error('request is not JSON');
  }
  const r = request.safeParse(raw);
  if (!r.success) throw new Error(`bad request: ${r.error.issues[0]?.path.join('.') || '(root)'}: ${r.error.issues[0]?.message ?? ''}`);
  return r.data;
}

/** Serve requests on `path`; `handle` sends progress lines with `progress` and returns the result. */
export function serveControl(
  path: string,
  handle: (req: ControlRequest, progress: (p: Record<string, unknown>) => void) => Promise<Record<string, unknown>>,
): Server {
  rmSync(path, { force: true });
  const server = createServer((sock: Socket) => {
    const send = (o: unknown): void => {
      if (!sock.destroyed) sock.write(`${JSON.stringify(o)}\n`);
    };
    try {
      const cred = native.peerCred((sock as unknown as { _handle: { fd: number } })._handle.fd);
      if (cred.uid !== 0) {
        send({ type: 'result', ok: false, error: 'only root may control an hsm mount' });
        sock.end();
        return;
      }
    } catch {
      sock.destroy();
      return;
    }
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (s: string) => {
      buf += s;
      if (buf.length > MAX_LINE) {
        send({ type: 'result', ok: false, error: 'request too long' });
        sock.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      sock.pause();
      let req: ControlRequest;
      try {
        req = parseRequest(line);
      } catch (err) {
        send({ type: 'result', ok: false, error: (err as Error).message });
        sock.end();
        return;
      }
      handle(req, (p) => send({ type: 'progress', ...p })).then(
        (res) => send({ type: 'result', ok: true, ...res }),
        (err: unknown) => send({ type: 'result', ok: false, error: err instanceof Error ? err.message : String(err) }),
      ).finally(() => sock.end());
    });
  });
  server.listen(path);
  return server;
}

/** Send one request and call `onLine` for each reply line; resolves with the result line. */
export function requestControl(path: string, req: ControlRequest, onLine: (r: ControlReply) => void = () => undefined): Promise<ControlReply & { type: 'result' }> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    let result: (ControlReply & { type: 'result' }) | undefined;
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (s: string) => {
      buf += s;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const r = JSON.parse(line) as ControlReply;
        if (r.type === 'result') result = r as ControlReply & { type: 'result' };
        else onLine(r);
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot reach the hsm daemon at ${path} (${err.code ?? err.message}); is the tree mounted?`)),
    );
    sock.on('close', () => (result ? resolve(result) : reject(new Error('the hsm daemon closed the connection without an answer'))));
  });
}
