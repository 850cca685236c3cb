/**
 * A clamd client: `zFILDES` (the event's fd passed over the unix socket with SCM_RIGHTS) or
 * `zINSTREAM` (the content streamed in length-prefixed chunks, read with positional reads so
 * the fd's offset is untouched), over a pool of connections reused through clamd sessions
 * (`zIDSESSION` … `zEND`), with a per-scan deadline and retries on connection failures.
 *
 * Verified against clamd 1.4.6:
 * - `zFILDES\0` must reach clamd before (or in the same message as, but not on) the byte the
 *   fd rides on: the fd attached to `zFILDES\0` alone is refused with "PROTOCOL ERROR:
 *   ancillary data sent without FILDES". We send `zFILDES\0` plus one NUL byte, with the fd, in
 *   one sendmsg (clamdscan sends the command, then one byte with the fd, in two).
 * - In a session, replies carry the request id (`3: fd[11]: OK`) and pipelined replies can
 *   arrive out of order; we keep one request in flight per connection and check the id.
 * - An error reply can be followed by a second one ("PROTOCOL ERROR… ERROR\0Error processing
 *   command. ERROR\0"), so a connection that saw an error is never reused.
 * - A stream over StreamMaxLength is refused ("INSTREAM size limit exceeded. ERROR") and the
 *   connection closed at once: our next write fails with EPIPE, and through net.Socket that
 *   error destroys the socket before the refusal is read. Requests are therefore written to the
 *   socket's fd directly, and EPIPE just ends the sending.
 *
 * @module
 */
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { native, isNativeError } from '../native.js';
import { CLEAN, errorResult, type ScanResult, type ScanTarget, type Scanner } from './scanner.js';

const fsRead = promisify(fs.read);

const INSTREAM = Buffer.from('zINSTREAM\0', 'latin1');
/** zFILDES\0 and the NUL byte the fd rides on (see the module comment). */
const FILDES = Buffer.from('zFILDES\0\0', 'latin1');

/** clamd's StreamMaxLength default (25 MiB). */
export const DEFAULT_MAX_STREAM_BYTES = 25 * 1024 * 1024;

/** Options of {@link ClamdScanner}. */
export interface ClamdOptions {
  /** clamd's unix socket path (LocalSocket), or its TCP address (TCPSocket; INSTREAM only). */
  socket: string | { host: string; port: number };
  /** 'fildes' passes the fd (unix sockets only; the default there), 'instream' streams the content. */
  mode?: 'fildes' | 'instream';
  /** INSTREAM: files larger than this are not sent but answered with an error (default 25 MiB, clamd's StreamMaxLength default). */
  maxStreamBytes?: number;
  /** INSTREAM chunk size (default 64 KiB). */
  chunkBytes?: number;
  /** Each scan (waiting for a connection included) answers within this many ms (default 10000). */
  timeoutMs?: number;
  /** Extra attempts after a connection failure (refused, reset, closed without answer); default 1. */
  retries?: number;
  /** Delay before a retry, in ms (default 50). */
  retryDelayMs?: number;
  /** Scans in flight at once, and connections kept (default 4). */
  poolSize?: number;
  /** Reuse connections through clamd sessions (zIDSESSION); default true. false: one connection per request. */
  sessions?: boolean;
  /** Pooled connections idle longer than this are closed instead of reused (default 20000; clamd's IdleTimeout default is 30 s). */
  idleMs?: number;
}

/** What went wrong in a clamd exchange (on ClamdError.code). */
export type ClamdErrorCode =
  | 'ENOENT' // no socket at that path
  | 'ECONNREFUSED' // socket exists, nobody listens
  | 'ECONNRESET' // connection broke mid-request
  | 'ECLOSED' // clamd closed without answering, or the scanner was closed
  | 'ETIMEDOUT' // no answer within timeoutMs
  | 'EABORTED' // the caller's AbortSignal fired
  | 'EFBIG' // INSTREAM: file larger than maxStreamBytes
  | 'ECLAMD' // clamd answered ERROR
  | 'EPROTO' // an answer we cannot parse, or the wrong request id
  | 'EIO'; // reading the file or sending the fd failed

/** A clamd failure, naming the socket and what went wrong. */
export class ClamdError extends Error {
  override readonly name = 'ClamdError';
  constructor(
    message: string,
    readonly code: ClamdErrorCode | string,
    /** The socket path or host:port. */
    readonly socket: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Reply parsing

/** A clamd reply split into its session request id (when present) and its text. */
export interface ClamdReply {
  /** The `N: ` request id of an IDSESSION reply. */
  readonly id: number | undefined;
  /** The text without the id prefix, the trailing NUL/newline and surrounding blanks. */
  readonly body: string;
}

/** A clamd scan reply, parsed. */
export type ClamdScanReply =
  | { readonly kind: 'clean'; readonly id: number | undefined; readonly subject: string }
  | { readonly kind: 'infected'; readonly id: number | undefined; readonly subject: string; readonly signature: string }
  | { readonly kind: 'error'; readonly id: number | undefined; readonly message: string }
  | { readonly kind: 'unknown'; readonly id: number | undefined; readonly text: string };

/** Split a raw reply into request id and body; accepts a trailing NUL or newline or none. */
export function splitClamdReply(raw: string | Buffer): ClamdReply {
  const text = (typeof raw === 'string' ? raw : raw.toString('utf8')).replace(/[\0\r\n]+$/, '').trim();
  const m = /^(\d+): ([\s\S]*)$/.exec(text);
  if (m) return { id: Number(m[1]), body: (m[2] ?? '').trim() };
  return { id: undefined, body: text };
}

/**
 * Parse a scan reply: `stream: OK`, `fd[10]: Eicar-Signature FOUND`,
 * `INSTREAM size limit exceeded. ERROR`, each optionally with a `N: ` id prefix and a trailing NUL.
 */
export function parseClamdReply(raw: string | Buffer): ClamdScanReply {
  const { id, body } = splitClamdReply(raw);
  const found = /^([\s\S]*): (.+) FOUND$/.exec(body);
  if (found) return { kind: 'infected', id, subject: found[1] ?? '', signature: (found[2] ?? '').trim() };
  if (body === 'ERROR' || body.endsWith(' ERROR')) {
    return { kind: 'error', id, message: body.slice(0, -'ERROR'.length).trim() || 'ERROR' };
  }
  const ok = /^([\s\S]*): OK$/.exec(body);
  if (ok) return { kind: 'clean', id, subject: ok[1] ?? '' };
  return { kind: 'unknown', id, text: body };
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const CONNECTION_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ENOTCONN', 'EAGAIN', 'ECLOSED', 'EHOSTUNREACH', 'ENETUNREACH']);

function errCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function isConnectionError(err: unknown): boolean {
  const code = errCode(err);
  return code !== undefined && CONNECTION_CODES.has(code);
}

/**
 * A request's cancellation: the part of an AbortSignal this client uses. An AbortController per
 * scan costs an EventTarget, its listeners and their bookkeeping, which showed up in profiles.
 */
class Cancel {
  aborted = false;
  reason: Error | undefined;
  #listeners: (() => void)[] = [];

  /** Abort once with `reason`; later calls do nothing. */
  abort(reason: Error): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const fn of listeners) fn();
  }

  /** Call fn (once) on abort. */
  onAbort(fn: () => void): void {
    this.#listeners.push(fn);
  }

  offAbort(fn: () => void): void {
    const i = this.#listeners.indexOf(fn);
    if (i >= 0) this.#listeners.splice(i, 1);
  }
}

/** Resolve/reject with p, or reject with signal.reason when the signal fires first. */
function raceAbort<T>(p: Promise<T>, signal: Cancel): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.onAbort(onAbort);
    p.then(
      (v) => {
        signal.offAbort(onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.offAbort(onAbort);
        reject(e as Error);
      },
    );
  });
}

function sleep(ms: number, signal: Cancel): Promise<void> {
  return raceAbort(
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.onAbort(() => clearTimeout(t));
    }),
    signal,
  );
}

/** Bytes of a whole INSTREAM request for a file of `size` bytes: command, length, size + 1 bytes (to see growth), end. */
function wholeStreamBytes(size: number): number {
  return INSTREAM.length + 4 + size + 1 + 4;
}

function positiveInt(value: number | undefined, fallback: number, name: string, min = 1): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) throw new RangeError(`ClamdScanner: ${name} must be an integer ≥ ${min}, got ${value}`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// One connection

/** Whether a request still waits for a pool slot, and how long it waited. */
interface QueueState {
  waiting: boolean;
  waitedMs: number;
}

/** A request running within its deadline. */
interface Running {
  /** performance.now() by which it must be done. */
  readonly deadline: number;
  /** Abort it as timed out. */
  expire: () => void;
  abort: (reason: Error) => void;
}

/** Given to a request's sender. */
interface SendControl {
  /** False once a reply arrived, the connection closed or the request was aborted: stop sending. */
  stillSending(): boolean;
  /** Call right after issuing the request's last bytes. */
  sent(): void;
}

interface Waiter {
  resolve(reply: ClamdReply): void;
  reject(err: Error): void;
}

/**
 * Opens a socket to clamd whose received bytes go to `onData` (a view of a buffer reused for the
 * next read: copy what must outlive the call), not to 'data' events.
 */
type Connect = (onData: (chunk: Buffer) => void) => net.Socket;

/** Bytes read at once from clamd (a reply is a line: longer ones take several reads). */
const REPLY_READ_BYTES = 4096;

/**
 * net.Socket's `onread`: each read lands in one buffer per connection and goes to `onData`
 * directly. A reply then costs no Buffer, no stream push and no 'data' event, which were a good
 * part of the time from clamd's answer to ours.
 */
function readInto(onData: (chunk: Buffer) => void): net.OnReadOpts {
  const buffer = Buffer.allocUnsafe(REPLY_READ_BYTES);
  return {
    buffer,
    callback: (n: number) => {
      onData(buffer.subarray(0, n));
      return true; // keep reading
    },
  };
}

/** One connection to clamd, with at most one request in flight. */
class Connection {
  readonly socket: net.Socket;
  #buffer: Buffer[] = [];
  #waiter: Waiter | undefined;
  #closeError: Error | undefined;
  #nextId = 1;
  /** True once the connection must not be reused (error reply, stray data, protocol trouble). */
  broken = false;
  closed = false;
  lastUsed = Date.now();
  uses = 0;
  onClose: (() => void) | undefined;

  constructor(
    connect: Connect,
    readonly where: string,
    readonly session: boolean,
  ) {
    const socket = connect((chunk) => this.#onData(chunk));
    this.socket = socket;
    socket.on('end', () => {
      // A reply without its NUL terminator, then EOF: deliver what we have.
      const rest = Buffer.concat(this.#buffer);
      this.#buffer = [];
      if (rest.length > 0 && rest.some((b) => b !== 0x0a && b !== 0x20)) this.#deliver(rest);
      this.#close(new ClamdError(`clamd at ${where} closed the connection without answering`, 'ECLOSED', where));
    });
    socket.on('error', (err: Error) => {
      const code = errCode(err) ?? 'EIO';
      this.#close(new ClamdError(`clamd at ${where}: connection failed (${code}): ${err.message}`, code, where, { cause: err }));
    });
    socket.on('close', () => {
      this.#close(new ClamdError(`clamd at ${where} closed the connection without answering`, 'ECLOSED', where));
    });
  }

  /** The connected socket's fd (for sendmsg), or undefined. */
  get fd(): number | undefined {
    const fd = (this.socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
    return typeof fd === 'number' && fd >= 0 ? fd : undefined;
  }

  #onData(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nul = chunk.indexOf(0, start);
      if (nul < 0) break;
      const part = chunk.subarray(start, nul);
      const whole = this.#buffer.length > 0 ? Buffer.concat([...this.#buffer, part]) : part;
      this.#buffer = [];
      this.#deliver(whole);
      start = nul + 1;
    }
    // The chunk's memory is reused for the next read.
    if (start < chunk.length) this.#buffer.push(Buffer.from(chunk.subarray(start)));
  }

  #deliver(raw: Buffer): void {
    const reply = splitClamdReply(raw);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter) waiter.resolve(reply);
    else this.broken = true; // a reply nobody asked for (e.g. the second line of an error)
  }

  #close(err: Error): void {
    if (!this.closed) {
      this.closed = true;
      this.#closeError = err;
      this.socket.destroy();
      this.onClose?.();
    }
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(err);
  }

  /** Destroy the socket; a pending request fails with err. */
  fail(err: Error): void {
    this.broken = true;
    this.#close(err);
  }

  /** Close politely (zEND in a session). */
  end(): void {
    if (this.closed) return;
    this.broken = true;
    if (this.session) this.socket.end('zEND\0');
    else this.socket.end();
    const t = setTimeout(() => this.socket.destroy(), 1000);
    t.unref();
  }

  /** Write bytes; resolves once handed to the kernel. With `last`, calls last.sent() once issued. */
  write(data: Buffer | string, last?: SendControl): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.closed) {
        reject(this.#closeError ?? new ClamdError(`clamd at ${this.where}: connection closed`, 'ECLOSED', this.where));
        return;
      }
      this.socket.write(data, (err) => (err ? reject(err) : resolve()));
      last?.sent();
    });
  }

  /**
   * The reply to a request the caller has just sent in full, synchronously (the fast path: no
   * reply can have been read yet). Checked like {@link request}'s: a reply with the
   * wrong session id, or any failure, destroys the connection.
   */
  awaitReply(): Promise<ClamdReply> {
    const id = this.session ? this.#nextId++ : undefined;
    this.uses++;
    this.socket.ref();
    return new Promise<ClamdReply>((resolve, reject) => {
      this.#waiter = {
        resolve: (r) => {
          if (id !== undefined && r.id !== id) {
            const err = new ClamdError(`clamd at ${this.where} answered request ${String(r.id)} when ${id} was expected: ${JSON.stringify(r.body)}`, 'EPROTO', this.where);
            this.fail(err);
            reject(err);
            return;
          }
          this.socket.unref();
          this.lastUsed = Date.now();
          resolve(r);
        },
        reject: (err) => {
          this.fail(err);
          reject(err);
        },
      };
    });
  }

  /**
   * Send one request and wait for its reply. If `send` fails, the connection is destroyed.
   * `send` calls `ctl.sent()` once the last bytes are issued; a reply that arrives before that
   * (clamd refusing a stream early) leaves the connection unusable, and `ctl.stillSending()`
   * turns false so the sender stops.
   */
  async request(send: (ctl: SendControl) => Promise<void>, signal: Cancel): Promise<ClamdReply> {
    if (this.closed) throw this.#closeError ?? new ClamdError(`clamd at ${this.where}: connection closed`, 'ECLOSED', this.where);
    if (this.#waiter) throw new Error('internal: two requests on one clamd connection');
    const id = this.session ? this.#nextId++ : undefined;
    this.uses++;
    let answered = false;
    const reply = new Promise<ClamdReply>((resolve, reject) => {
      this.#waiter = {
        resolve: (r) => {
          answered = true;
          resolve(r);
        },
        reject: (e) => {
          answered = true;
          reject(e);
        },
      };
    });
    reply.catch(() => {}); // observed below; avoid an unhandled rejection while sending
    this.socket.ref();
    let sent = false;
    const ctl: SendControl = {
      stillSending: () => !answered && !this.closed && !signal.aborted,
      sent: () => {
        if (!answered) sent = true;
      },
    };
    try {
      send(ctl).catch((err: unknown) => {
        const code = errCode(err) ?? 'EIO';
        const e =
          err instanceof ClamdError
            ? err
            : new ClamdError(`clamd at ${this.where}: sending the request failed (${code}): ${(err as Error).message}`, code, this.where, { cause: err });
        this.fail(e);
      });
      const r = await raceAbort(reply, signal);
      // An answer before the whole request went out (clamd refusing a stream early): the
      // connection's protocol state is unknown, so it is not reused.
      if (!sent) this.broken = true;
      if (id !== undefined && r.id !== id) {
        this.broken = true;
        throw new ClamdError(`clamd at ${this.where} answered request ${String(r.id)} when ${id} was expected: ${JSON.stringify(r.body)}`, 'EPROTO', this.where);
      }
      this.lastUsed = Date.now();
      return r;
    } catch (err) {
      // A timed-out or aborted request leaves a reply in flight: never reuse the connection.
      this.fail(err as Error);
      throw err;
    } finally {
      if (!this.closed) this.socket.unref();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The scanner

/**
 * clamd as a {@link Scanner}: pooled session connections, `zFILDES` or `zINSTREAM`,
 * a deadline per scan, retries on connection failures. Never throws from scan().
 */
export class ClamdScanner implements Scanner {
  readonly name: string;
  readonly mode: 'fildes' | 'instream';
  readonly #where: string;
  readonly #connect: Connect;
  readonly #maxStreamBytes: number;
  readonly #chunkBytes: number;
  readonly #timeoutMs: number;
  readonly #retries: number;
  readonly #retryDelayMs: number;
  readonly #poolSize: number;
  readonly #sessions: boolean;
  readonly #idleMs: number;
  readonly #idle: Connection[] = [];
  readonly #all = new Set<Connection>();
  readonly #slotWaiters: (() => void)[] = [];
  #inFlight = 0;
  #closed = false;
  /**
   * The requests running now, oldest first: all have the same timeout, so one timer set for the
   * oldest serves them all (a timer per scan cost a setTimeout and a clearTimeout each).
   */
  readonly #running = new Set<Running>();
  #deadlineTimer: NodeJS.Timeout | undefined;
  #scratchBuffer: Buffer = Buffer.alloc(0);

  constructor(options: ClamdOptions) {
    const { socket } = options;
    if (typeof socket === 'string') {
      if (socket.length === 0) throw new TypeError('ClamdScanner: socket path is empty');
      this.#where = socket;
      this.#connect = (onData) => net.createConnection({ path: socket, onread: readInto(onData) });
    } else {
      if (typeof socket !== 'object' || socket === null || typeof socket.host !== 'string' || !Number.isInteger(socket.port)) {
        throw new TypeError('ClamdScanner: socket must be a unix socket path or { host, port }');
      }
      this.#where = `${socket.host}:${socket.port}`;
      this.#connect = (onData) => net.createConnection({ host: socket.host, port: socket.port, onread: readInto(onData) });
    }
    this.mode = options.mode ?? (typeof socket === 'string' ? 'fildes' : 'instream');
    if (this.mode !== 'fildes' && this.mode !== 'instream') throw new TypeError(`ClamdScanner: mode must be 'fildes' or 'instream', got ${String(this.mode)}`);
    if (this.mode === 'fildes' && typeof socket !== 'string') {
      throw new TypeError(`ClamdScanner: mode 'fildes' passes the fd over a unix socket; clamd at ${this.#where} is TCP, use mode 'instream'`);
    }
    this.#maxStreamBytes = positiveInt(options.maxStreamBytes, DEFAULT_MAX_STREAM_BYTES, 'maxStreamBytes', 0);
    this.#chunkBytes = positiveInt(options.chunkBytes, 64 * 1024, 'chunkBytes');
    this.#timeoutMs = positiveInt(options.timeoutMs, 10_000, 'timeoutMs');
    this.#retries = positiveInt(options.retries, 1, 'retries', 0);
    this.#retryDelayMs = positiveInt(options.retryDelayMs, 50, 'retryDelayMs', 0);
    this.#poolSize = positiveInt(options.poolSize, 4, 'poolSize');
    this.#sessions = options.sessions ?? true;
    this.#idleMs = positiveInt(options.idleMs, 20_000, 'idleMs', 0);
    this.name = `clamd:${this.#where}`;
  }

  /** The socket path or host:port. */
  get socket(): string {
    return this.#where;
  }

  /** Connections open now (idle and busy). */
  get connections(): number {
    return this.#all.size;
  }

  /** Scan the open file; see {@link Scanner.scan}. */
  scan(target: ScanTarget, signal?: AbortSignal): Promise<ScanResult> {
    return (signal === undefined && this.#sendNow(target)) || this.#scan(target, signal);
  }

  /**
   * The common case without the general path's queueing, retry and cancellation machinery
   * (whose promises and closures cost a sequential scan more than its syscalls): with a free
   * slot and an idle session, the request goes out whole in this call (FILDES: the fd; INSTREAM:
   * a file smaller than one chunk, read with one pread) and one promise waits for the reply.
   * Undefined when that is not the case, so the general path takes the scan; a connection
   * failure afterwards (a session clamd closed while it was idle) hands the scan to the general
   * path too, within the same deadline.
   */
  #sendNow(target: ScanTarget): Promise<ScanResult> | undefined {
    if (this.#closed || this.#inFlight >= this.#poolSize || this.#slotWaiters.length > 0) return undefined;
    if (!Number.isInteger(target.fd) || target.fd < 0) return undefined;
    const conn = this.#takeIdle();
    if (!conn) return undefined;
    let request: Buffer = FILDES;
    if (this.mode === 'instream') {
      let whole: Buffer | undefined;
      try {
        // Without a known size, no fstat: one pread of up to a chunk (one byte more than fits
        // the fast path) reads a small file whole, and says that a larger one is not small.
        const size = target.size ?? Math.min(this.#chunkBytes - 1, this.#maxStreamBytes);
        if (size < this.#chunkBytes && size <= this.#maxStreamBytes) whole = this.#wholeStream(target.fd, size, this.#scratch(size));
      } catch {
        // Left to the general path, which words the error.
      }
      if (!whole) {
        this.#idle.push(conn); // untouched
        return undefined;
      }
      request = whole;
    }
    const sock = conn.fd;
    let sent = -1;
    try {
      if (sock !== undefined) sent = request === FILDES ? native.sendFd(sock, target.fd, FILDES) : fs.writeSync(sock, request);
    } catch {
      // Left to the general path, which retries, waits out EAGAIN and words the error.
    }
    if (sent < request.length) {
      // Nothing sent, or half a request on the wire: this session is done either way.
      conn.fail(new ClamdError(`clamd at ${this.#where}: sending the request failed`, 'EIO', this.#where));
      return undefined;
    }
    const started = performance.now();
    this.#inFlight++;
    const running: Running = {
      deadline: started + this.#timeoutMs,
      expire: () => conn.fail(new ClamdError(`clamd at ${this.#where} did not answer within ${this.#timeoutMs} ms (${this.#what(target)})`, 'ETIMEDOUT', this.#where)),
      abort: (reason) => conn.fail(reason),
    };
    this.#running.add(running);
    this.#deadlineTimer ??= this.#armDeadline(this.#timeoutMs);
    return conn.awaitReply().then(
      (reply) => {
        let result: ScanResult;
        try {
          // Throws on ERROR and unparseable replies, so that connection is not reused.
          result = this.#result(reply, target);
          this.#release(conn);
        } catch (err) {
          conn.fail(err as Error);
          result = errorResult(this.#explain(err, this.#what(target)));
        }
        this.#running.delete(running);
        this.#releaseSlot();
        return result;
      },
      (err: unknown) => {
        this.#releaseSlot();
        // The general path keeps this request's place among the deadlines (they are in order).
        if (isConnectionError(err) && !this.#closed) return this.#scan(target, undefined, running);
        this.#running.delete(running);
        return errorResult(this.#explain(err, this.#what(target)));
      },
    );
  }

  /** The general path: a slot, a pooled or new connection, retries, all within the deadline (`prior`'s, if given). */
  async #scan(target: ScanTarget, signal: AbortSignal | undefined, prior?: Running): Promise<ScanResult> {
    const what = (): string => this.#what(target);
    try {
      if (!Number.isInteger(target.fd) || target.fd < 0) {
        throw new ClamdError(`clamd at ${this.#where}: ${what()}: bad fd ${String(target.fd)}`, 'EIO', this.#where);
      }
      let size: number | undefined;
      if (this.mode === 'instream') {
        // fstat of an open fd never waits on a disk (nor on a permission event).
        size = target.size ?? fs.fstatSync(target.fd).size;
        if (size > this.#maxStreamBytes) throw this.#tooBig(target.path, size);
      }
      return await this.#withDeadline(
        what,
        signal,
        async (conn, sig) => {
          const reply = await conn.request(
            (ctl) => (this.mode === 'fildes' ? this.#sendFildes(conn, target.fd, ctl, sig) : this.#sendInstream(conn, target, size!, ctl)),
            sig,
          );
          // Throws on ERROR and unparseable replies, so that connection is not reused.
          return this.#result(reply, target);
        },
        prior,
      );
    } catch (err) {
      return errorResult(this.#explain(err, what()));
    } finally {
      // Also when it failed before reaching #withDeadline (which removes its own entry).
      if (prior) this.#running.delete(prior);
    }
  }

  /** zPING: true when clamd answers PONG within timeoutMs. Never throws. */
  async ping(signal?: AbortSignal): Promise<boolean> {
    try {
      const reply = await this.#withDeadline(() => 'PING', signal, (conn, sig) => conn.request((ctl) => conn.write('zPING\0', ctl), sig));
      return reply.body === 'PONG';
    } catch {
      return false;
    }
  }

  /** zVERSION: clamd's version line, e.g. `ClamAV 1.4.6/27000/…`. Throws a ClamdError on failure. */
  async version(signal?: AbortSignal): Promise<string> {
    try {
      const reply = await this.#withDeadline(() => 'VERSION', signal, (conn, sig) => conn.request((ctl) => conn.write('zVERSION\0', ctl), sig));
      if (!/^ClamAV /.test(reply.body)) {
        throw new ClamdError(`clamd at ${this.#where} gave an unexpected VERSION reply: ${JSON.stringify(reply.body)}`, 'EPROTO', this.#where);
      }
      return reply.body;
    } catch (err) {
      throw this.#explain(err, 'VERSION');
    }
  }

  /** Close all connections (ending sessions); scans still running or waiting answer { verdict: 'error' }. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const reason = new ClamdError(`clamd at ${this.#where}: the scanner is closed`, 'ECLOSED', this.#where);
    for (const r of [...this.#running]) r.abort(reason);
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    const sockets = [...this.#all].map((c) => c.socket);
    for (const c of this.#idle.splice(0)) c.end();
    for (const c of this.#all) if (!c.closed) c.fail(new ClamdError(`clamd at ${this.#where}: the scanner is closed`, 'ECLOSED', this.#where));
    await Promise.all(
      sockets.map((s) => (s.closed ? undefined : new Promise<void>((resolve) => s.once('close', () => resolve())))),
    );
  }

  // -------------------------------------------------------------------------------------------

  /** The scan, for messages (built only for one: reading target.path may cost a lookup). */
  #what(target: ScanTarget): string {
    return `${this.mode === 'fildes' ? 'FILDES' : 'INSTREAM'} scan of ${target.path}`;
  }

  /**
   * A whole INSTREAM request in one buffer (command, one chunk, end of stream) for a file of at
   * most `size` bytes, read with one synchronous pread of size + 1 bytes (through the event fd,
   * which raises no event, so it cannot wait on the guard), in `buf` (at least
   * wholeStreamBytes(size) long). Undefined when the file holds more (it grew since its size was
   * taken, or `size` was only a bound): it then needs the chunked stream.
   */
  #wholeStream(fd: number, size: number, buf: Buffer = Buffer.allocUnsafe(wholeStreamBytes(size))): Buffer | undefined {
    const head = INSTREAM.length;
    INSTREAM.copy(buf, 0);
    const n = fs.readSync(fd, buf, head + 4, size + 1, 0);
    if (n > size) return undefined;
    buf.writeUInt32BE(n, head);
    // An empty chunk would end the stream early: an empty file is just the end.
    const end = n === 0 ? head : head + 4 + n;
    buf.writeUInt32BE(0, end);
    return buf.subarray(0, end + 4);
  }

  /**
   * A buffer for a whole INSTREAM request of a file of `size` bytes that is written
   * synchronously (so it is free again when the write returns): one per scanner, grown as
   * needed, instead of a new one per scan.
   */
  #scratch(size: number): Buffer {
    const need = wholeStreamBytes(size);
    if (this.#scratchBuffer.length < need) this.#scratchBuffer = Buffer.allocUnsafe(Math.max(need, 16 * 1024));
    return this.#scratchBuffer;
  }

  #tooBig(path: string, size: number): ClamdError {
    return new ClamdError(
      `${path} is larger than maxStreamBytes (${size} > ${this.#maxStreamBytes} bytes): not scanned, as clamd would answer "INSTREAM size limit exceeded"`,
      'EFBIG',
      this.#where,
    );
  }

  #result(reply: ClamdReply, target: ScanTarget): ScanResult {
    // The common answer, without parseClamdReply's second split and regexes (a FOUND or ERROR
    // reply never ends so).
    if (reply.body.endsWith(': OK')) return CLEAN;
    const parsed = parseClamdReply(reply.body);
    switch (parsed.kind) {
      case 'clean':
        return CLEAN;
      case 'infected':
        return { verdict: 'infected', signature: parsed.signature };
      case 'error':
        throw new ClamdError(`clamd at ${this.#where} could not scan ${target.path}: ${parsed.message}`, 'ECLAMD', this.#where);
      default:
        throw new ClamdError(`clamd at ${this.#where} gave an unexpected reply for ${target.path}: ${JSON.stringify(reply.body)}`, 'EPROTO', this.#where);
    }
  }

  /** Turn any failure into a ClamdError whose message names the socket and what happened. */
  #explain(err: unknown, what: string): Error {
    const code = errCode(err);
    if (err instanceof ClamdError) {
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        return new ClamdError(`clamd at ${this.#where} is unreachable (${code}): is clamd running?`, code, this.#where, { cause: err });
      }
      return err;
    }
    if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EACCES' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
      return new ClamdError(
        `clamd at ${this.#where} is unreachable (${code})${code === 'EACCES' ? ': no permission on the socket' : ': is clamd running?'}`,
        code,
        this.#where,
        { cause: err },
      );
    }
    const message = err instanceof Error ? err.message : String(err);
    return new ClamdError(`clamd at ${this.#where}: ${what} failed${code ? ` (${code})` : ''}: ${message}`, code ?? 'EIO', this.#where, { cause: err });
  }

  /**
   * Run fn on a pooled connection within the scan deadline, with retries on connection errors.
   * With `prior` (a fast-path request handed over), its deadline and its place among the
   * deadlines are kept.
   */
  async #withDeadline<T>(
    what: () => string,
    signal: AbortSignal | undefined,
    fn: (conn: Connection, signal: Cancel) => Promise<T>,
    prior?: Running,
  ): Promise<T> {
    if (this.#closed) throw new ClamdError(`clamd at ${this.#where}: the scanner is closed`, 'ECLOSED', this.#where);
    const cancel = new Cancel();
    const started = prior ? prior.deadline - this.#timeoutMs : performance.now();
    const queue: QueueState = { waiting: true, waitedMs: 0 };
    const running: Running = prior ?? { deadline: started + this.#timeoutMs, expire: () => {}, abort: () => {} };
    running.expire = () => {
      const pool = `poolSize ${this.#poolSize}`;
      const message = queue.waiting
        ? `clamd at ${this.#where}: no free connection within ${this.#timeoutMs} ms (${pool}, all busy) for ${what()}`
        : `clamd at ${this.#where} did not answer within ${this.#timeoutMs} ms (${what()}${
            queue.waitedMs >= 1 ? `; ${Math.round(queue.waitedMs)} ms of it waiting for a free connection, ${pool}` : ''
          })`;
      cancel.abort(new ClamdError(message, 'ETIMEDOUT', this.#where));
    };
    running.abort = (reason) => cancel.abort(reason);
    const onCallerAbort = (): void => cancel.abort(new ClamdError(`clamd at ${this.#where}: ${what()} aborted by the caller`, 'EABORTED', this.#where, { cause: signal?.reason }));
    if (signal?.aborted) onCallerAbort();
    signal?.addEventListener('abort', onCallerAbort, { once: true });
    if (!prior) {
      this.#running.add(running);
      this.#deadlineTimer ??= this.#armDeadline(this.#timeoutMs);
    }
    try {
      return await this.#attempts(cancel, fn, () => {
        queue.waiting = false;
        queue.waitedMs = performance.now() - started;
      });
    } finally {
      signal?.removeEventListener('abort', onCallerAbort);
      this.#running.delete(running);
    }
  }

  /**
   * Unref'd: a request waiting on clamd keeps its socket ref'd, and an idle scanner must not keep
   * the process alive.
   */
  #armDeadline(ms: number): NodeJS.Timeout {
    return setTimeout(this.#onDeadline, ms).unref();
  }

  /** Time out every request that is due, and wait for the next one. */
  readonly #onDeadline = (): void => {
    this.#deadlineTimer = undefined;
    const now = performance.now();
    for (const r of this.#running) {
      const left = r.deadline - now;
      // Timers count whole ms of the loop's clock: within 1 ms is due.
      if (left > 1) {
        this.#deadlineTimer = this.#armDeadline(Math.ceil(left));
        return;
      }
      r.expire();
    }
  };

  async #attempts<T>(signal: Cancel, fn: (conn: Connection, signal: Cancel) => Promise<T>, onSlot: () => void): Promise<T> {
    await this.#acquireSlot(signal);
    onSlot();
    try {
      let retriesLeft = this.#retries;
      for (;;) {
        const pooled = this.#takeIdle();
        let conn: Connection;
        try {
          conn = pooled ?? (await this.#open(signal));
        } catch (err) {
          if (!signal.aborted && isConnectionError(err) && retriesLeft-- > 0) {
            await sleep(this.#retryDelayMs, signal);
            continue;
          }
          throw err;
        }
        try {
          const value = await fn(conn, signal);
          this.#release(conn);
          return value;
        } catch (err) {
          conn.fail(err as Error);
          if (signal.aborted) throw signal.reason;
          if (isConnectionError(err)) {
            // A pooled session that clamd closed (IdleTimeout, restart): reconnect without
            // counting it as a retry. A fresh connection that broke uses up a retry.
            if (pooled) continue;
            if (retriesLeft-- > 0) {
              await sleep(this.#retryDelayMs, signal);
              continue;
            }
          }
          throw err;
        }
      }
    } finally {
      this.#releaseSlot();
    }
  }

  #acquireSlot(signal: Cancel): Promise<void> {
    if (this.#inFlight < this.#poolSize && this.#slotWaiters.length === 0) {
      this.#inFlight++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        signal.offAbort(onAbort);
        this.#inFlight++;
        resolve();
      };
      const onAbort = (): void => {
        const i = this.#slotWaiters.indexOf(grant);
        if (i >= 0) this.#slotWaiters.splice(i, 1);
        reject(signal.reason as Error);
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.onAbort(onAbort);
      this.#slotWaiters.push(grant);
    });
  }

  #releaseSlot(): void {
    this.#inFlight--;
    const next = this.#slotWaiters.shift();
    if (next) next();
  }

  #takeIdle(): Connection | undefined {
    for (;;) {
      const conn = this.#idle.pop();
      if (!conn) return undefined;
      if (conn.closed || conn.broken) continue;
      if (Date.now() - conn.lastUsed > this.#idleMs) {
        conn.end();
        continue;
      }
      return conn;
    }
  }

  #release(conn: Connection): void {
    if (this.#closed || !this.#sessions || conn.closed || conn.broken) {
      conn.end();
      return;
    }
    this.#idle.push(conn);
  }

  async #open(signal: Cancel): Promise<Connection> {
    const conn = new Connection(this.#connect, this.#where, this.#sessions);
    const { socket } = conn;
    this.#all.add(conn);
    conn.onClose = () => {
      this.#all.delete(conn);
      const i = this.#idle.indexOf(conn);
      if (i >= 0) this.#idle.splice(i, 1);
    };
    try {
      await raceAbort(
        new Promise<void>((resolve, reject) => {
          const onError = (err: Error): void => reject(err);
          socket.once('error', onError);
          socket.once('connect', () => {
            socket.off('error', onError);
            resolve();
          });
        }),
        signal,
      );
      if (this.#sessions) await raceAbort(conn.write('zIDSESSION\0'), signal);
      socket.unref();
      return conn;
    } catch (err) {
      conn.fail(err as Error);
      throw err;
    }
  }

  /** zFILDES\0 and one NUL byte, with the fd attached, in one sendmsg. */
  async #sendFildes(conn: Connection, fd: number, ctl: SendControl, signal: Cancel): Promise<void> {
    const sock = conn.fd;
    if (sock === undefined) throw new ClamdError(`clamd at ${this.#where}: the connection has no fd to send with`, 'EIO', this.#where);
    const data = FILDES;
    let delay = 1;
    for (;;) {
      try {
        const sent = native.sendFd(sock, fd, data);
        if (sent < data.length) await conn.write(data.subarray(sent), ctl);
        else ctl.sent();
        return;
      } catch (err) {
        if (isNativeError(err) && (err.code === 'EAGAIN' || err.code === 'EWOULDBLOCK')) {
          await sleep(delay, signal);
          delay = Math.min(delay * 2, 50);
          continue;
        }
        if (isNativeError(err) && (err.code === 'EBADF' || err.code === 'ENOTSOCK') && conn.closed) {
          throw new ClamdError(`clamd at ${this.#where} closed the connection without answering`, 'ECLOSED', this.#where, { cause: err });
        }
        throw err;
      }
    }
  }

  /**
   * zINSTREAM\0, then length-prefixed chunks read with pread, then a zero-length chunk. A file
   * that fits one chunk (by its size at the start) is read with one synchronous pread (one
   * 64 KiB read at most, where a threadpool read costs a round trip per chunk and one more to
   * see the end) and sent in one write: command, chunk and end.
   */
  async #sendInstream(conn: Connection, target: ScanTarget, size: number, ctl: SendControl): Promise<void> {
    const whole = size < this.#chunkBytes ? this.#wholeStream(target.fd, size) : undefined;
    if (whole) {
      await this.#writeDirect(conn, whole, ctl);
      return;
    }
    if (!(await this.#writeDirect(conn, INSTREAM))) return;
    let position = 0;
    for (;;) {
      if (!ctl.stillSending()) return;
      // Read at most one byte past the cap, to notice a file that grew beyond it.
      const want = Math.min(this.#chunkBytes, this.#maxStreamBytes + 1 - position);
      if (want <= 0) throw this.#tooBig(target.path, position);
      const chunk = Buffer.allocUnsafe(4 + want);
      const { bytesRead } = await fsRead(target.fd, chunk, 4, want, position);
      if (bytesRead === 0) break;
      position += bytesRead;
      if (position > this.#maxStreamBytes) throw this.#tooBig(target.path, position);
      chunk.writeUInt32BE(bytesRead, 0);
      if (!ctl.stillSending()) return;
      if (!(await this.#writeDirect(conn, chunk.subarray(0, 4 + bytesRead)))) return;
    }
    if (ctl.stillSending()) await this.#writeDirect(conn, Buffer.alloc(4), ctl);
  }

  /**
   * Write `data` to the session's socket fd directly (as the fast path does), with `ctl.sent()`
   * once all of it is out. EPIPE or ECONNRESET mean clamd stopped reading: it refused the stream
   * (StreamMaxLength) and closed, and its answer, already in our receive buffer, settles the
   * request; a write through the socket would destroy it on the error and lose that answer.
   * What the socket buffer cannot take now goes through the socket's own queued write.
   * @returns false when clamd stopped reading (send nothing more).
   */
  async #writeDirect(conn: Connection, data: Buffer, ctl?: SendControl): Promise<boolean> {
    const sock = conn.fd;
    let n = 0;
    if (sock !== undefined) {
      try {
        n = fs.writeSync(sock, data);
      } catch (err) {
        const code = errCode(err);
        if (code === 'EPIPE' || code === 'ECONNRESET') return false;
        if (code !== 'EAGAIN') throw err;
      }
    }
    if (n < data.length) await conn.write(n === 0 ? data : data.subarray(n), ctl);
    else ctl?.sent();
    return true;
  }

}
