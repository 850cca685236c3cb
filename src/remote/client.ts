/**
 * The remote client: `connect(url, options)` subscribes to a root on a `fan serve` server and
 * yields its changes, reconnecting and resuming from the last cursor by itself. Imports nothing of
 * the watch service, so watch can use it as its daemon backend.
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { connect as netConnect } from 'node:net';
import { WebSocket } from 'ws';
import { FanotifyError } from '../errors.js';
import {
  FrameDecoder,
  PROTOCOL_VERSIONS,
  encodeFrame,
  type DirEntry,
  type ErrorCode,
  type EventKind,
  type EventRecord,
  type InvalidateReason,
  type ObjectRef,
  type StatInfo,
} from './protocol.js';
import { socketTransport, wsTransport, type Transport } from './transport.js';

/** The default unix socket of `fan serve`. */
export const DEFAULT_SOCKET = '/run/fanotify/fan.sock';

/** What a subscription yields. */
export type RemoteUpdate =
  | { readonly type: 'events'; readonly events: readonly EventRecord[]; readonly cursor?: string }
  | {
      readonly type: 'invalidate';
      /** `resume` also when the client reconnected without a cursor to resume from. */
      readonly reason: InvalidateReason;
      readonly detail: string;
      readonly cursor?: string;
    }
  /** A problem the server reported for this subscription; it continues. */
  | { readonly type: 'error'; readonly code: string; readonly message: string };

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The directory on the server to watch (absolute). */
  readonly root: string;
  /** Only these kinds. */
  readonly kinds?: readonly EventKind[];
  /** Paths or globs relative to the root whose events are not sent. */
  readonly ignore?: readonly string[];
  /** Resume from this cursor (from an earlier `events` or `invalidate`). */
  readonly cursor?: string;
  /** Token for `auth` (WebSocket servers). */
  readonly token?: string;
  /** PEM CA certificate(s) to trust for wss://. */
  readonly ca?: string | Buffer;
  /** Reconnect after a lost connection (resuming from the last cursor). Default true. */
  readonly reconnect?: boolean;
  /** First reconnect delay in ms, doubling up to 2 s. Default 50. */
  readonly reconnectDelayMs?: number;
  /** Client name sent in hello. */
  readonly clientName?: string;
  /**
   * Records held for a slow async iterator before the client stops reading the socket (it reads
   * again below a tenth of it). The server's bounded queue then applies: a consumer that stays
   * slow gets `invalidate`. Default 10,000.
   */
  readonly maxBufferedRecords?: number;
}

/** An error answer of the server. */
export class RemoteError extends Error {
  override readonly name = 'RemoteError';
  constructor(
    readonly code: ErrorCode | 'disconnected' | 'closed',
    message: string,
  ) {
    super(message);
  }
}

/** Where the server listens, parsed from a URL or a socket path. */
function target(url: string): { kind: 'unix'; path: string } | { kind: 'ws'; url: string } {
  if (url.startsWith('/')) return { kind: 'unix', path: url };
  if (url.startsWith('unix:')) return { kind: 'unix', path: url.replace(/^unix:(\/\/)?/, '') };
  if (url.startsWith('ws://') || url.startsWith('wss://')) return { kind: 'ws', url };
  throw new FanotifyError(`connect: unsupported URL ${url}: use a socket path, unix:/PATH, ws://HOST:PORT or wss://HOST:PORT`, 'EINVAL');
}

/** Events of {@link RemoteSubscription} as an EventEmitter. */
export interface RemoteSubscriptionEvents {
  update: [update: RemoteUpdate];
  /** A new connection is subscribed (after a reconnect: `resumed` tells whether a cursor was used). */
  connected: [info: { root: ObjectRef; cursor?: string; resumed: boolean }];
  /** The connection was lost; a reconnect follows unless closed. */
  disconnected: [error?: Error];
  close: [error?: Error];
}

const SUB = 's1';

function weight(u: RemoteUpdate): number {
  return u.type === 'events' ? Math.max(1, u.events.length) : 1;
}


/**
 * A live remote subscription: an async iterable of updates (breaking out closes it), or an
 * EventEmitter of 'update'. `stat`/`lookup`/`readdir` ask about objects by id within the root.
 */
export class RemoteSubscription extends EventEmitter<RemoteSubscriptionEvents> implements AsyncIterable<RemoteUpdate> {
  /** Resolves on the first successful subscribe; rejects when it fails (e.g. forbidden). */
  readonly ready: Promise<{ root: ObjectRef; cursor?: string }>;
  #resolveReady!: (v: { root: ObjectRef; cursor?: string }) => void;
  #rejectReady!: (e: Error) => void;
  readonly #url: string;
  readonly #options: ConnectOptions;
  #transport: Transport | undefined;
  #cursor: string | undefined;
  #root: ObjectRef | undefined;
  #req = 0;
  readonly #pending = new Map<number, { resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  #closed = false;
  #everConnected = false;
  #delay: number;
  #queue: RemoteUpdate[] = [];
  /** Records (at least 1 per update) in #queue. */
  #queued = 0;
  #waiters: ((r: IteratorResult<RemoteUpdate>) => void)[] = [];
  #iterating = false;
  #paused = false;
  #failure: Error | undefined;
  /** How many times the connection was re-established. */
  reconnects = 0;

  constructor(url: string, options: ConnectOptions) {
    super();
    target(url);
    this.#url = url;
    this.#options = options;
    this.#cursor = options.cursor;
    this.#delay = options.reconnectDelayMs ?? 50;
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => undefined);
    this.#open();
  }

  /** The root's id on the current connection. */
  get root(): ObjectRef | undefined {
    return this.#root;
  }

  /** The newest cursor received: every change before it was delivered. */
  get cursor(): string | undefined {
    return this.#cursor;
  }

  /** Stat an object. */
  async stat(object: ObjectRef): Promise<StatInfo> {
    return (await this.#request({ type: 'stat', sub: SUB, object })).stat as StatInfo;
  }

  /** The entry `name` in a directory. */
  async lookup(parent: ObjectRef, name: string): Promise<DirEntry> {
    return (await this.#request({ type: 'lookup', sub: SUB, parent, name })).entry as DirEntry;
  }

  /** Every entry of a directory, with ids and stat (fetched a page at a time). */
  async readdir(object: ObjectRef): Promise<DirEntry[]> {
    const out: DirEntry[] = [];
    let offset: number | undefined = 0;
    while (offset !== undefined) {
      const page = await this.#request({ type: 'readdir', sub: SUB, object, offset });
      out.push(...(page.entries as DirEntry[]));
      offset = typeof page.next === 'number' ? page.next : undefined;
    }
    return out;
  }

  /** Round trip to the server. */
  async ping(): Promise<void> {
    await this.#request({ type: 'ping' });
  }

  #request(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
    const t = this.#transport;
    if (this.#closed) return Promise.reject(new RemoteError('closed', 'the subscription is closed'));
    if (!t) return Promise.reject(new RemoteError('disconnected', 'not connected (reconnecting)'));
    const req = ++this.#req;
    return new Promise((resolve, reject) => {
      this.#pending.set(req, { resolve, reject });
      this.#flow();
      t.send([encodeFrame({ ...msg, req })]);
    });
  }

  #open(): void {
    const where = target(this.#url);
    if (where.kind === 'unix') {
      const socket = netConnect(where.path);
      this.#attachWhenUp(socket, 'connect', () => socketTransport(socket));
    } else {
      const ws = new WebSocket(where.url, { ...(this.#options.ca ? { ca: this.#options.ca } : {}) });
      this.#attachWhenUp(ws, 'open', () => wsTransport(ws));
    }
  }

  /** Attach the connection once `upEvent` says it is up; an error before that is a lost connection. */
  #attachWhenUp(conn: EventEmitter, upEvent: string, transport: () => Transport): void {
    let up = false;
    conn.once(upEvent, () => {
      up = true;
      this.#attach(transport());
    });
    conn.once('error', (err: Error) => {
      if (!up) this.#lost(err);
    });
  }

  #attach(t: Transport): void {
    if (this.#closed) {
      t.destroy();
      return;
    }
    this.#transport = t;
    this.#paused = false;
    const decoder = new FrameDecoder();
    t.onData((bytes) => {
      for (const d of decoder.push(bytes)) {
        if (d.ok) this.#onMessage(d.value as Record<string, unknown>);
        else if (d.fatal) t.destroy();
      }
    });
    t.onClose((err) => {
      if (this.#transport === t) this.#transport = undefined;
      this.#lost(err);
    });
    void this.#handshake(t);
  }

  async #handshake(t: Transport): Promise<void> {
    const o = this.#options;
    try {
      await this.#request({ type: 'hello', versions: [...PROTOCOL_VERSIONS], client: o.clientName ?? 'fanotify-client' });
      if (o.token !== undefined) await this.#request({ type: 'auth', token: o.token });
      const resumed = this.#cursor !== undefined;
      const ack = await this.#request({
        type: 'subscribe',
        sub: SUB,
        root: o.root,
        ...(o.kinds ? { kinds: [...o.kinds] } : {}),
        ...(o.ignore ? { ignore: [...o.ignore] } : {}),
        ...(this.#cursor !== undefined ? { cursor: this.#cursor } : {}),
      });
      this.#root = ack.root as ObjectRef;
      if (!resumed && typeof ack.cursor === 'string') this.#cursor = ack.cursor;
      this.#delay = this.#options.reconnectDelayMs ?? 50;
      const info = { root: this.#root, ...(this.#cursor ? { cursor: this.#cursor } : {}), resumed };
      if (!this.#everConnected) {
        this.#everConnected = true;
        this.#resolveReady(info);
      } else {
        this.reconnects++;
        if (!resumed) this.#push({ type: 'invalidate', reason: 'resume', detail: 'reconnected without a cursor: resync' });
      }
      this.emit('connected', info);
    } catch (err) {
      if (err instanceof RemoteError && err.code !== 'disconnected') {
        // The server refused (forbidden, no such root, bad token): retrying would not help.
        await this.#end(err);
      }
      t.destroy();
    }
  }

  #onMessage(m: Record<string, unknown>): void {
    const req = typeof m.req === 'number' ? m.req : undefined;
    if (req !== undefined && this.#pending.has(req)) {
      const p = this.#pending.get(req)!;
      this.#pending.delete(req);
      this.#flow();
      if (m.type === 'error') p.reject(new RemoteError(m.code as ErrorCode, String(m.message)));
      else p.resolve(m);
      return;
    }
    switch (m.type) {
      case 'events': {
        if (typeof m.cursor === 'string') this.#cursor = m.cursor;
        const events = m.events as EventRecord[];
        this.#push({ type: 'events', events, ...(typeof m.cursor === 'string' ? { cursor: m.cursor } : {}) });
        break;
      }
      case 'invalidate':
        if (typeof m.cursor === 'string') this.#cursor = m.cursor;
        this.#push({
          type: 'invalidate',
          reason: m.reason as InvalidateReason,
          detail: String(m.detail ?? ''),
          ...(typeof m.cursor === 'string' ? { cursor: m.cursor } : {}),
        });
        if (m.reason === 'root-gone') void this.#end();
        break;
      case 'error':
        this.#push({ type: 'error', code: String(m.code), message: String(m.message) });
        break;
      default:
        break; // bye, pong without req: the close follows or nothing to do.
    }
  }

  #push(u: RemoteUpdate): void {
    this.emit('update', u);
    const w = this.#waiters.shift();
    if (w) w({ value: u, done: false });
    else if (this.#iterating) {
      this.#queue.push(u);
      this.#queued += weight(u);
      this.#flow();
    }
  }

  /**
   * A slow loop body: stop reading, so the server's bounded queue (and its invalidate) applies
   * instead of this process buffering without bound; but never while an answer is awaited.
   */
  #flow(): void {
    const high = this.#options.maxBufferedRecords ?? 10_000;
    const pause = this.#queued >= (this.#paused ? high / 10 : high) && this.#pending.size === 0;
    if (pause === this.#paused) return;
    this.#paused = pause;
    if (pause) this.#transport?.pause();
    else this.#transport?.resume();
  }

  #lost(err?: Error): void {
    for (const p of this.#pending.values()) p.reject(new RemoteError('disconnected', `connection lost${err ? `: ${err.message}` : ''}`));
    this.#pending.clear();
    if (this.#closed) return;
    if (this.#options.reconnect === false) {
      void this.#end(err ?? new RemoteError('disconnected', 'connection lost'));
      return;
    }
    this.emit('disconnected', err);
    const delay = this.#delay;
    this.#delay = Math.min(this.#delay * 2, 2000);
    setTimeout(() => {
      if (!this.#closed && !this.#transport) this.#open();
    }, delay).unref();
  }

  async #end(err?: Error): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#failure = err;
    if (err && !this.#everConnected) this.#rejectReady(err);
    const t = this.#transport;
    this.#transport = undefined;
    if (t) {
      t.send([encodeFrame({ type: 'bye' })]);
      t.end();
      setTimeout(() => t.destroy(), 500).unref();
    }
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
    this.emit('close', err);
  }

  /** Async iteration over updates. Ends after close; a refused subscription rejects `next()`. */
  [Symbol.asyncIterator](): AsyncIterator<RemoteUpdate> {
    this.#iterating = true;
    return {
      next: () => {
        const u = this.#queue.shift();
        if (u) this.#queued -= weight(u);
        this.#flow();
        if (u) return Promise.resolve({ value: u, done: false });
        if (this.#closed) return this.#failure && !this.#everConnected ? Promise.reject(this.#failure) : Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }

  /** Unsubscribe and disconnect. Idempotent. */
  close(): Promise<void> {
    return this.#end();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * Subscribe to `options.root` on the server at `url` (a unix socket path, `unix:/PATH`,
 * `ws://HOST:PORT` or `wss://HOST:PORT`).
 *
 * @example
 * ```ts
 * const sub = connect('/run/fanotify/fan.sock', { root: '/srv/share' });
 * for await (const u of sub) if (u.type === 'events') for (const r of u.events) console.log(r.kind, r.path);
 * ```
 */
export function connect(url: string, options: ConnectOptions): RemoteSubscription {
  return new RemoteSubscription(url, options);
}
