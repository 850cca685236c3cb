/**
 * Helpers of the remote tests: a raw frame-level client (to send anything, read everything, or
 * stop reading), and a log of a RemoteSubscription's updates.
 *
 * @module
 */
import { connect as netConnect, type Socket } from 'node:net';
import { readdirSync, lstatSync } from 'node:fs';
import { FrameDecoder, encodeFrame } from '../../src/remote/protocol.js';
import type { RemoteSubscription, RemoteUpdate } from '../../src/remote/client.js';
import type { EventRecord } from '../../src/remote/protocol.js';
import { Waker } from './waker.js';

/** A message as the server sent it. */
export type Msg = Record<string, unknown> & { type: string };

/** A client that speaks frames directly. */
export class RawClient {
  readonly messages: Msg[] = [];
  readonly errors: string[] = [];
  closed = false;
  readonly #waker = new Waker();
  readonly #decoder = new FrameDecoder(64 << 20);
  #req = 0;

  private constructor(readonly socket: Socket) {
    socket.on('data', (b: Buffer) => {
      for (const d of this.#decoder.push(b)) {
        if (d.ok) this.messages.push(d.value as Msg);
        else this.errors.push(d.message);
      }
      this.#waker.wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.#waker.wake();
    });
  }

  /** Connect to a unix socket. */
  static open(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = netConnect(path);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /** Connect and say hello. */
  static async hello(path: string): Promise<RawClient> {
    const c = await RawClient.open(path);
    const h = await c.request({ type: 'hello', versions: [1] });
    if (h.type !== 'hello') throw new Error(`hello answered with ${JSON.stringify(h)}`);
    return c;
  }

  send(msg: unknown): void {
    this.socket.write(encodeFrame(msg));
  }

  /** Wait for (and remove) the first message matching `pred`. */
  async next(pred: (m: Msg) => boolean, ms = 5000, what = 'a message'): Promise<Msg> {
    let found: Msg | undefined;
    await this.#waker.until(() => {
      const i = this.messages.findIndex(pred);
      if (i >= 0) [found] = this.messages.splice(i, 1);
      return found !== undefined || this.closed;
    }, ms);
    if (!found) throw new Error(`no ${what} within ${ms} ms (closed: ${this.closed}); have ${JSON.stringify(this.messages).slice(0, 2000)}`);
    return found;
  }

  /** Send with a fresh `req` and wait for the answer (ack, hello, pong or error). */
  request(msg: Record<string, unknown>, ms = 5000): Promise<Msg> {
    const req = ++this.#req;
    this.send({ ...msg, req });
    return this.next((m) => m.req === req, ms, `answer to ${String(msg.type)} #${req}`);
  }

  /** Wait until the server closed the connection. */
  async waitClosed(ms = 5000): Promise<void> {
    await this.#waker.until(() => this.closed, ms);
    if (!this.closed) throw new Error(`the server did not close the connection within ${ms} ms`);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Collects a subscription's updates. */
export class UpdateLog {
  readonly updates: RemoteUpdate[] = [];
  readonly #waker = new Waker();

  constructor(sub: RemoteSubscription) {
    sub.on('update', (u) => {
      this.updates.push(u);
      this.#waker.wake();
    });
  }

  /** Every event record received so far. */
  get records(): EventRecord[] {
    return this.updates.flatMap((u) => (u.type === 'events' ? u.events : []));
  }

  /** Wait until `pred` holds on the updates. */
  async until(pred: (u: RemoteUpdate[]) => boolean, ms = 5000, what = 'updates'): Promise<void> {
    await this.#waker.until(() => pred(this.updates), ms);
    if (!pred(this.updates)) throw new Error(`deadline: ${what} within ${ms} ms; have ${JSON.stringify(this.updates).slice(0, 3000)}`);
  }
}

/** "kind path" (or "rename old->new"), '/' marking directories. */
export function describeRecord(r: EventRecord): string {
  const dir = r.isDir ? '/' : '';
  return r.kind === 'rename' ? `rename ${r.oldPath}->${r.path}${dir}` : `${r.kind} ${r.path}${dir}`;
}

/** The host's tree below `root` as relative path → "type size". */
export function hostTree(root: string, rel = '', out = new Map<string, string>()): Map<string, string> {
  for (const name of readdirSync(rel === '' ? root : `${root}/${rel}`).sort()) {
    const p = rel === '' ? name : `${rel}/${name}`;
    const st = lstatSync(`${root}/${p}`);
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
    out.set(p, `${type} ${type === 'dir' ? '-' : st.size}`);
    if (st.isDirectory()) hostTree(root, p, out);
  }
  return out;
}
