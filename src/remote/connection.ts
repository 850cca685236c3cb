/**
 * One client connection of the server: decodes and validates its frames, answers its requests,
 * and owns its bounded outgoing queue. A client that reads too slowly loses its queued events and
 * gets `invalidate`; it never makes the server buffer without bound or wait.
 * @packageDocumentation
 */
import { lstatSync, readdirSync, realpathSync } from 'node:fs';
import { timingSafeEqual, createHash } from 'node:crypto';
import { IgnoreMatcher } from '../watch/index.js';
import { canSubscribe, type PeerIdentity } from './access.js';
import type { RootFeed, FeedSubscriber } from './feed.js';
import { statInfo, type IdNode } from './ids.js';
import {
  FrameDecoder,
  encodeFrame,
  frameOf,
  isWellFormedId,
  negotiate,
  parseClientMessage,
  type ClientMessage,
  type DirEntry,
  type ErrorCode,
  type EventKind,
  type EventRecord,
  type InvalidateReason,
  type ObjectRef,
  type ServerMessage,
  READDIR_PAGE,
} from './protocol.js';
import type { Transport } from './transport.js';

/** What a connection needs from its server. */
export interface ConnectionHost {
  readonly limits: { readonly maxEvents: number; readonly maxBytes: number; readonly maxFrame: number };
  /** SHA-256 of the token clients must present, when token auth is on. */
  readonly tokenHash: Buffer | undefined;
  /** For token clients: the directories under which they may subscribe. */
  readonly exports: readonly string[];
  readonly serverName: string;
  /** Open (or share) the feed of a real root path. */
  acquire(root: string): Promise<RootFeed>;
  release(feed: RootFeed): void;
  /** True when some served root's table issued `id` (to tell out-of-root from forged ids). */
  issuedElsewhere(id: string, except: RootFeed): boolean;
  closed(conn: Connection): void;
}

/** How the client proved who it is. */
export type ClientAuth = { kind: 'peer'; peer: PeerIdentity } | { kind: 'token' } | { kind: 'none' };

/** Records per `events` frame, so frames stay far below the frame limit. */
const RECORDS_PER_FRAME = 1000;
/** How long a new connection has to say hello. */
const HELLO_TIMEOUT_MS = 10_000;
/** Subscriptions one connection may hold. */
const MAX_SUBSCRIPTIONS = 64;

/**
 * Frame bodies per record array and chunk offset: the JSON array of the records and the frame's
 * closing brace, encoded once and shared by every subscriber that sends them unfiltered.
 */
const bodies = new WeakMap<readonly EventRecord[], Map<number, Buffer>>();
function recordsBody(records: readonly EventRecord[], from: number, count: number): Buffer {
  let chunks = bodies.get(records);
  if (!chunks) bodies.set(records, (chunks = new Map()));
  let b = chunks.get(from);
  if (b === undefined) {
    b = Buffer.from(`${JSON.stringify(from === 0 && count >= records.length ? records : records.slice(from, from + count))}}`);
    chunks.set(from, b);
  }
  return b;
}

/**
 * A frame as parts: its length and `head` (the only per-client bytes), then the shared `rest`
 * (written to every socket from the same buffers). Copying the records into one buffer per
 * client was measured slower: a large allocation per client and batch, paid for by the GC.
 */
function framed(head: string, rest: readonly Buffer[]): { parts: Buffer[]; bytes: number } {
  const headBytes = Buffer.byteLength(head);
  let bytes = 4 + headBytes;
  for (const r of rest) bytes += r.length;
  const first = Buffer.allocUnsafe(4 + headBytes);
  first.writeUInt32BE(bytes - 4, 0);
  first.write(head, 4);
  return { parts: [first, ...rest], bytes };
}

function single(frame: Buffer): { parts: Buffer[]; bytes: number } {
  return { parts: [frame], bytes: frame.length };
}

interface Queued {
  readonly parts: readonly Buffer[];
  readonly bytes: number;
  readonly events: number;
  /** Frames of a subscription (events, checkpoints, invalidates) are dropped on overflow. */
  readonly sub?: ClientSub;
}

class ClientSub implements FeedSubscriber {
  seq = 0;
  /** The start of this subscription's `events` frames, up to the sequence number. */
  readonly #eventsHead: string;
  /** Until a resume is answered: feed batches that arrived meanwhile. */
  joining: { no: number; records: EventRecord[] }[] | undefined;

  constructor(
    readonly conn: Connection,
    readonly id: string,
    readonly feed: RootFeed,
    readonly kinds: ReadonlySet<EventKind> | undefined,
    readonly ignore: IgnoreMatcher | undefined,
  ) {
    this.#eventsHead = `{"type":"events","sub":${JSON.stringify(id)},"seq":`;
  }

  batch(no: number, records: EventRecord[]): void {
    if (this.joining) this.joining.push({ no, records });
    else this.send(records);
  }

  /** Send records (after filtering), chunked. */
  send(records: EventRecord[], cursor?: string): void {
    const visible = this.#filter(records);
    if (visible.length === 0 && cursor === undefined) return;
    for (let i = 0; i < visible.length || (i === 0 && cursor !== undefined); i += RECORDS_PER_FRAME) {
      const count = Math.min(RECORDS_PER_FRAME, visible.length - i);
      const body = recordsBody(visible, i, count);
      // The last frame of a resume answer carries the cursor before its closing brace.
      const rest = i + RECORDS_PER_FRAME >= visible.length && cursor !== undefined ? [body.subarray(0, -1), Buffer.from(`,"cursor":${JSON.stringify(cursor)}}`)] : [body];
      const { parts, bytes } = framed(`${this.#eventsHead}${++this.seq},"events":`, rest);
      this.conn.enqueue({ parts, bytes, events: Math.max(count, 1), sub: this });
    }
  }

  checkpoint(cursor: string): void {
    if (this.joining) return; // The resume answer carries its own cursor.
    this.conn.enqueue({ ...single(frameOf(`${this.#eventsHead}${++this.seq},"events":[],"cursor":${JSON.stringify(cursor)}}`)), events: 1, sub: this });
  }

  invalidate(reason: InvalidateReason, detail: string): void {
    this.joining = undefined;
    const msg: ServerMessage = { type: 'invalidate', sub: this.id, seq: ++this.seq, reason, detail, ...(this.feed.cursor ? { cursor: this.feed.cursor } : {}) };
    this.conn.enqueue({ ...single(encodeFrame(msg)), events: 0, sub: this });
    if (reason === 'root-gone') this.conn.unsubscribe(this);
  }

  error(message: string): void {
    this.conn.send({ type: 'error', sub: this.id, code: 'io-error', message });
  }

  #filter(records: EventRecord[]): EventRecord[] {
    const peer = this.conn.auth.kind === 'peer' && this.conn.auth.peer.uid !== 0 ? this.conn.auth.peer : undefined;
    if (!this.kinds && !this.ignore && !peer) return records;
    return records.filter((r) => {
      if (this.kinds && !this.kinds.has(r.kind)) return false;
      if (this.ignore && this.ignore.ignores(`${this.feed.root}/${r.path}`)) return false;
      if (!peer) return true;
      return this.listable(parentOf(r.path)) && (r.oldPath === undefined || this.listable(parentOf(r.oldPath)));
    });
  }

  /** May this client see the names in directory `dir` (relative)? */
  listable(dir: string): boolean {
    const auth = this.conn.auth;
    return auth.kind !== 'peer' || this.feed.access.canList(auth.peer, dir);
  }
}

function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

class RequestError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** One connected client. */
export class Connection {
  readonly #host: ConnectionHost;
  readonly #transport: Transport;
  readonly #decoder: FrameDecoder;
  readonly #subs = new Map<string, ClientSub>();
  #queue: Queued[] = [];
  #head = 0;
  #qEvents = 0;
  #qBytes = 0;
  #version: number | undefined;
  #authed: boolean;
  #closed = false;
  /** Requests run one at a time, in order, so answers keep the order of questions. */
  #work: Promise<void> = Promise.resolve();
  /** Invalidations sent because this client read too slowly. */
  overflows = 0;
  readonly #helloTimer: NodeJS.Timeout;

  constructor(host: ConnectionHost, transport: Transport, readonly auth: ClientAuth) {
    this.#host = host;
    this.#transport = transport;
    this.#decoder = new FrameDecoder(host.limits.maxFrame);
    this.#authed = auth.kind !== 'none' || host.tokenHash === undefined;
    transport.onData((bytes) => this.#onData(bytes));
    transport.onDrain(() => this.#pump());
    transport.onClose(() => void this.close());
    // A connection that never says hello must not hold an fd forever.
    this.#helloTimer = setTimeout(() => {
      if (this.#version === undefined) this.#bye(`no hello within ${HELLO_TIMEOUT_MS / 1000} s`);
    }, HELLO_TIMEOUT_MS).unref();
  }

  /** Events and bytes queued for this client. */
  get queued(): { events: number; bytes: number } {
    return { events: this.#qEvents, bytes: this.#qBytes };
  }

  /** Queue a control message (answers, errors). */
  send(msg: ServerMessage): void {
    this.enqueue({ ...single(encodeFrame(msg)), events: 0 });
  }

  /** Queue a frame, dropping this client's subscription frames when the queue would overflow. */
  enqueue(item: Queued): void {
    if (this.#closed) return;
    const { maxEvents, maxBytes } = this.#host.limits;
    if (item.sub && item.events > 0 && (this.#qEvents + item.events > maxEvents || this.#qBytes + item.bytes > maxBytes)) {
      this.#overflow(item.sub);
      return;
    }
    if (this.#qBytes + item.bytes > 2 * maxBytes) {
      // Only answers are left and they alone are too much: a client that asks without reading.
      this.#bye('the client does not read its answers');
      return;
    }
    if (this.#head === this.#queue.length && !this.#transport.congested) {
      // Nothing waiting: straight to the transport.
      this.#transport.send(item.parts);
      return;
    }
    this.#queue.push(item);
    this.#qEvents += item.events;
    this.#qBytes += item.bytes;
    this.#pump();
  }

  #overflow(current: ClientSub): void {
    this.overflows++;
    const hit = new Set<ClientSub>([current]);
    const keep: Queued[] = [];
    for (let i = this.#head; i < this.#queue.length; i++) {
      const q = this.#queue[i]!;
      if (q.sub) hit.add(q.sub);
      else keep.push(q);
    }
    this.#queue = keep;
    this.#head = 0;
    this.#qEvents = 0;
    this.#qBytes = keep.reduce((n, q) => n + q.bytes, 0);
    for (const s of hit) if (this.#subs.get(s.id) === s) s.invalidate('overflow', 'the client read too slowly; its queued events were dropped');
  }

  #pump(): void {
    while (this.#head < this.#queue.length && !this.#transport.congested && !this.#closed) {
      const q = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Queued;
      this.#qEvents -= q.events;
      this.#qBytes -= q.bytes;
      this.#transport.send(q.parts);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #onData(bytes: Buffer): void {
    for (const d of this.#decoder.push(bytes)) {
      if (!d.ok) {
        this.send({ type: 'error', code: d.code, message: d.message });
        if (d.fatal) this.#bye(d.message);
        continue;
      }
      const parsed = parseClientMessage(d.value);
      if (!parsed.ok) {
        const req = (d.value as { req?: unknown } | null)?.req;
        this.send({ type: 'error', ...(typeof req === 'number' && Number.isSafeInteger(req) ? { req } : {}), code: 'bad-message', message: parsed.message });
        continue;
      }
      const msg = parsed.message;
      this.#work = this.#work.then(() => this.#handle(msg)).catch((err: unknown) => {
        const req = 'req' in msg ? msg.req : undefined;
        const code: ErrorCode = err instanceof RequestError ? err.code : 'io-error';
        this.send({ type: 'error', ...(req === undefined ? {} : { req }), ...('sub' in msg ? { sub: msg.sub } : {}), code, message: (err as Error).message });
      });
    }
  }

  async #handle(msg: ClientMessage): Promise<void> {
    if (this.#closed) return;
    if (msg.type === 'hello') {
      const version = negotiate(msg.versions);
      if (version === undefined) throw new RequestError('unsupported-version', `this server speaks protocol version 1; the client offered ${msg.versions.join(', ')}`);
      this.#version = version;
      this.send({
        type: 'hello',
        ...(msg.req === undefined ? {} : { req: msg.req }),
        version,
        server: this.#host.serverName,
        capabilities: ['stat', 'lookup', 'readdir', 'resume'],
        auth: this.auth.kind === 'peer' ? 'peer' : this.#host.tokenHash ? 'token' : 'none',
      });
      return;
    }
    if (msg.type === 'bye') return this.#bye('client said bye');
    if (this.#version === undefined) throw new RequestError('hello-required', 'send hello (with the protocol versions you speak) first');
    if (msg.type === 'ping') return this.send({ type: 'pong', ...(msg.req === undefined ? {} : { req: msg.req }) });
    if (msg.type === 'auth') {
      const hash = this.#host.tokenHash;
      if (!hash) throw new RequestError('bad-message', 'this server does not use token authentication');
      const given = createHash('sha256').update(msg.token).digest();
      if (!timingSafeEqual(given, hash)) {
        this.send({ type: 'error', ...(msg.req === undefined ? {} : { req: msg.req }), code: 'auth-failed', message: 'wrong token' });
        return this.#bye('authentication failed');
      }
      this.#authed = true;
      return this.send({ type: 'ack', ...(msg.req === undefined ? {} : { req: msg.req }) });
    }
    if (!this.#authed) throw new RequestError('auth-required', 'send auth with the token first');
    switch (msg.type) {
      case 'subscribe':
        return this.#subscribe(msg);
      case 'unsubscribe': {
        const s = this.#sub(msg.sub);
        this.unsubscribe(s);
        return this.send({ type: 'ack', ...(msg.req === undefined ? {} : { req: msg.req }), sub: s.id });
      }
      case 'stat': {
        const s = this.#sub(msg.sub);
        const { abs } = this.#resolve(s, msg.object);
        return this.send({ type: 'ack', req: msg.req, sub: s.id, stat: statInfo(lstatSync(abs)) });
      }
      case 'lookup': {
        const s = this.#sub(msg.sub);
        if (msg.name.includes('/') || msg.name === '.' || msg.name === '..' || msg.name.includes('\0')) {
          throw new RequestError('out-of-root', `"${msg.name}" is not a single name inside the directory`);
        }
        const dir = this.#resolveDir(s, msg.parent);
        const node = s.feed.table.lookup(dir.node, msg.name);
        let entry: DirEntry | undefined;
        try {
          entry = node && !node.dead ? this.#entry(s, node, `${dir.abs}/${msg.name}`) : undefined;
        } catch {
          entry = undefined;
        }
        if (!entry) throw new RequestError('unknown-object', `no entry "${msg.name}" in that directory`);
        return this.send({ type: 'ack', req: msg.req, sub: s.id, entry });
      }
      case 'readdir': {
        const s = this.#sub(msg.sub);
        const dir = this.#resolveDir(s, msg.object);
        const all = readdirSync(dir.abs).sort();
        const offset = msg.offset ?? 0;
        const page = all.slice(offset, offset + (msg.limit ?? READDIR_PAGE));
        const entries: DirEntry[] = [];
        for (const name of page) {
          const node = s.feed.table.lookup(dir.node, name);
          if (!node || node.dead) continue;
          try {
            entries.push(this.#entry(s, node, `${dir.abs}/${name}`));
          } catch {
            // Removed while listing: its delete event follows.
          }
        }
        const next = offset + page.length < all.length ? offset + page.length : undefined;
        return this.send({ type: 'ack', req: msg.req, sub: s.id, entries, ...(next === undefined ? {} : { next }) });
      }
    }
  }

  #entry(s: ClientSub, node: IdNode, abs: string): DirEntry {
    return { name: node.name, object: s.feed.table.ref(node), stat: statInfo(lstatSync(abs)) };
  }

  #sub(id: string): ClientSub {
    const s = this.#subs.get(id);
    if (!s) throw new RequestError('unknown-subscription', `no subscription "${id}" on this connection`);
    return s;
  }

  #resolve(s: ClientSub, ref: ObjectRef): { node: IdNode; abs: string; path: string } {
    if (!isWellFormedId(ref.id)) throw new RequestError('unknown-object', `"${ref.id.slice(0, 64)}" is not an id this server issues`);
    const r = s.feed.table.resolve(ref);
    if (!r.ok) {
      if (r.code === 'unknown-object' && this.#host.issuedElsewhere(ref.id, s.feed)) {
        throw new RequestError('out-of-root', `object ${ref.id} is outside the root of subscription "${s.id}"`);
      }
      throw new RequestError(r.code, r.message);
    }
    const dir = r.node === s.feed.table.root ? '' : parentOf(r.path);
    if (!s.listable(dir)) throw new RequestError('forbidden', `you may not search the directory holding this object`);
    return r;
  }

  #resolveDir(s: ClientSub, ref: ObjectRef): { node: IdNode; abs: string } {
    const r = this.#resolve(s, ref);
    if (!r.node.isDir) throw new RequestError('not-a-directory', `object ${ref.id} is not a directory`);
    if (!s.listable(r.path)) throw new RequestError('forbidden', `you may not list this directory`);
    return r;
  }

  async #subscribe(msg: Extract<ClientMessage, { type: 'subscribe' }>): Promise<void> {
    const req = msg.req === undefined ? {} : { req: msg.req };
    if (this.#subs.has(msg.sub)) throw new RequestError('duplicate-subscription', `subscription "${msg.sub}" already exists on this connection`);
    if (this.#subs.size >= MAX_SUBSCRIPTIONS) throw new RequestError('busy', `at most ${MAX_SUBSCRIPTIONS} subscriptions per connection; open another connection`);
    if (!msg.root.startsWith('/')) throw new RequestError('no-such-root', `root must be an absolute path, got "${msg.root}"`);
    const peer = this.auth.kind === 'peer' ? this.auth.peer : undefined;
    const forbidden = (path: string): RequestError =>
      new RequestError('forbidden', `uid ${peer!.uid} may not read and search ${path} (or it is not a directory)`);
    // As the peer first, so that "does not exist" is never told about a place it cannot search.
    if (peer && !(await canSubscribe(peer, msg.root))) throw forbidden(msg.root);
    let root: string;
    try {
      root = realpathSync.native(msg.root);
    } catch {
      throw new RequestError('no-such-root', `${msg.root} does not exist`);
    }
    // A symlink swapped in between must not lead somewhere the peer cannot read.
    if (peer && root !== msg.root && !(await canSubscribe(peer, root))) throw forbidden(msg.root);
    if (this.auth.kind !== 'peer' && !this.#host.exports.some((e) => root === e || root.startsWith(`${e}/`))) {
      throw new RequestError('forbidden', `${root} is not under a directory this server exports (--export)`);
    }
    let ignore: IgnoreMatcher | undefined;
    try {
      ignore = msg.ignore && msg.ignore.length > 0 ? new IgnoreMatcher(root, msg.ignore) : undefined;
    } catch (err) {
      throw new RequestError('bad-message', (err as Error).message);
    }
    let feed: RootFeed;
    try {
      feed = await this.#host.acquire(root);
    } catch (err) {
      throw new RequestError('io-error', `cannot watch ${root}: ${(err as Error).message}`);
    }
    if (this.#closed || this.#subs.has(msg.sub)) {
      this.#host.release(feed);
      if (this.#closed) return;
      throw new RequestError('duplicate-subscription', `subscription "${msg.sub}" already exists on this connection`);
    }
    const s = new ClientSub(this, msg.sub, feed, msg.kinds ? new Set(msg.kinds) : undefined, ignore);
    const resume = msg.cursor !== undefined;
    if (resume) s.joining = [];
    this.#subs.set(s.id, s);
    feed.add(s);
    this.send({ type: 'ack', ...req, sub: s.id, root: feed.table.ref(feed.table.root), ...(feed.cursor ? { cursor: feed.cursor } : {}) });
    if (!resume) return;
    if (!feed.hasJournal) {
      s.invalidate('resume', 'this server keeps no journal (start it with --journal): resync');
      s.joining = undefined;
      return;
    }
    const { result, records, coveredBatch } = await feed.since(msg.cursor!);
    if (this.#subs.get(s.id) !== s) return;
    const held = s.joining ?? [];
    s.joining = undefined;
    if (result.freshInstance) {
      s.invalidate('resume', result.reason ?? 'unknown');
    } else {
      s.send(records, result.cursor);
    }
    for (const b of held) if (b.no > coveredBatch) s.send(b.records);
  }

  /** End one subscription. */
  unsubscribe(s: ClientSub): void {
    if (this.#subs.get(s.id) !== s) return;
    this.#subs.delete(s.id);
    s.feed.remove(s);
    this.#host.release(s.feed);
  }

  #bye(reason: string): void {
    if (this.#closed) return;
    this.#transport.send([encodeFrame({ type: 'bye', reason } satisfies ServerMessage)]);
    this.#transport.end();
    // A peer that never closes its side must not keep the fd.
    setTimeout(() => this.#transport.destroy(), 1000).unref();
    void this.close(false);
  }

  /** Drop the connection and everything it holds (`destroy`: without flushing). Idempotent. */
  async close(destroy = true): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#helloTimer);
    for (const s of [...this.#subs.values()]) this.unsubscribe(s);
    this.#queue = [];
    this.#qBytes = 0;
    this.#qEvents = 0;
    if (destroy) this.#transport.destroy();
    this.#host.closed(this);
  }

  /** Tell the client the server is going away, then close. */
  shutdown(reason: string): void {
    this.#bye(reason);
  }
}
