/**
 * Where published content comes from: an HTTP(S) server that honours Range requests, or a local
 * directory. A source returns exactly the bytes asked for or throws; verification is the caller's.
 * @packageDocumentation
 */
import http from 'node:http';
import https from 'node:https';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MANIFEST_NAME } from './manifest.js';
import { feed, RangeClient, rangeReplyProblem, RangeReplyError, type BodySink, type Flow } from './range-client.js';

/** A tier that serves a published tree. */
export interface Source {
  /** Human-readable location, for messages. */
  readonly location: string;
  /** The manifest text. */
  manifest(): Promise<string>;
  /**
   * Exactly `length` bytes of `path` (relative to the tree root) from `offset`.
   * @throws SourceError on any failure, after the source's own retries.
   */
  read(path: string, offset: number, length: number): Promise<Buffer>;
  /**
   * Bytes [offset, offset+length) of `path` in one pass, handed over in consecutive pieces of
   * `pieceSize` bytes (the last may be shorter) as soon as each is complete. A piece's bytes are
   * the caller's only until its promise settles (the source may reuse the buffer then). The
   * source reads on only while few pieces are still being handled, so memory stays bounded. No
   * retries: pieces already handed over stand, the caller fetches the rest again.
   * @throws SourceError on the first failure.
   */
  readPieces(path: string, offset: number, length: number, pieceSize: number, onPiece: (index: number, bytes: Buffer) => Promise<void>): Promise<void>;
  /** Release connections. */
  close(): void;
}

/** A failed source read; `transient` when a later retry may succeed. */
export class SourceError extends Error {
  override readonly name = 'SourceError';
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
  }
}

/** Options of {@link HttpSource}. */
export interface HttpSourceOptions {
  /** Deadline of one request, including its body, in ms. Default 30 000. */
  readonly timeoutMs?: number;
  /** Extra attempts after a transient failure. Default 2. */
  readonly retries?: number;
  /** Connections kept alive and used in parallel. Default 8. */
  readonly maxSockets?: number;
}

/** Pieces handed over and not yet handled before a streamed body is paused. */
const MAX_PENDING_PIECES = 4;

/** Range reads over kept-alive HTTP(S) connections. */
export class HttpSource implements Source {
  readonly location: string;
  readonly #base: URL;
  /** Node's client: the manifest, and everything over HTTPS. */
  readonly #agent: http.Agent;
  /** Range reads over plain HTTP. */
  readonly #ranges: RangeClient | undefined;
  readonly #timeoutMs: number;
  readonly #retries: number;

  constructor(url: string, options: HttpSourceOptions = {}) {
    this.#base = new URL(url.endsWith('/') ? url : `${url}/`);
    if (this.#base.protocol !== 'http:' && this.#base.protocol !== 'https:') {
      throw new SourceError(`${url}: only http:// and https:// sources are supported`, false);
    }
    this.location = this.#base.href;
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 8 };
    this.#agent = this.#base.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    if (this.#base.protocol === 'http:') this.#ranges = new RangeClient(this.#base, { maxSockets: agentOptions.maxSockets, timeoutMs: options.timeoutMs });
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#retries = options.retries ?? 2;
  }

  #url(path: string): URL {
    return new URL(path.split('/').map(encodeURIComponent).join('/'), this.#base);
  }

  async manifest(): Promise<string> {
    return this.#retry(async () => {
      const parts: Buffer[] = [];
      await this.#request(this.#url(MANIFEST_NAME), undefined, (b) => void parts.push(b));
      return Buffer.concat(parts).toString('utf8');
    });
  }

  read(path: string, offset: number, length: number): Promise<Buffer> {
    if (length === 0) return Promise.resolve(Buffer.alloc(0));
    return this.#retry(async () => {
      // A range body lands once, in a buffer of the size asked for.
      const into = Buffer.allocUnsafe(length);
      let got = 0;
      await this.#get(path, offset, length, { space: (max) => into.subarray(got, got + max), filled: (n) => void (got += n) });
      return into;
    });
  }

  readPieces(path: string, offset: number, length: number, pieceSize: number, onPiece: (index: number, bytes: Buffer) => Promise<void>): Promise<void> {
    if (length === 0) return Promise.resolve();
    return this.#get(path, offset, length, new Pieces(length, pieceSize, onPiece), true);
  }

  /**
   * One range GET into `sink`: plain HTTP through the {@link RangeClient} (bytes read straight
   * into the sink), HTTPS through Node's client.
   */
  async #get(path: string, offset: number, length: number, sink: BodySink, perData = false): Promise<void> {
    if (!this.#ranges) {
      const flow = (res: http.IncomingMessage): void => sink.attach?.({ pause: () => res.pause(), resume: () => res.resume() });
      await this.#request(this.#url(path), { offset, length }, (b) => feed(sink, b), perData, flow);
      return;
    }
    const url = this.#url(path);
    try {
      await this.#ranges.get(url.pathname, offset, length, sink, perData);
    } catch (err) {
      const e = err instanceof RangeReplyError ? err : new RangeReplyError(String(err), true);
      throw new SourceError(`${url.href} bytes ${offset}+${length}: ${e.message}`, e.transient);
    }
  }

  async #retry<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const transient = err instanceof SourceError ? err.transient : true;
        if (!transient || attempt >= this.#retries) throw err;
        await sleep(50 * 2 ** attempt);
      }
    }
  }

  /**
   * One GET through Node's client; `sink` sees the body as it arrives, only after the status and
   * Content-Range are checked, and never more than the range asked for (`onBody` is called
   * before its first byte). The deadline covers the whole request, or, with `perData`, each wait
   * for more bytes (a long streamed body is not a stall).
   */
  #request(url: URL, range: { offset: number; length: number } | undefined, sink: (b: Buffer) => void, perData = false, onBody?: (res: http.IncomingMessage) => void): Promise<void> {
    const mod = url.protocol === 'https:' ? https : http;
    const what = range ? `${url.href} bytes ${range.offset}+${range.length}` : url.href;
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const fail = (msg: string, transient: boolean): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        req.destroy();
        reject(new SourceError(`${what}: ${msg}`, transient));
      };
      const headers: Record<string, string> = {};
      if (range) headers['range'] = `bytes=${range.offset}-${range.offset + range.length - 1}`;
      const req = mod.get(url, { agent: this.#agent, headers }, (res) => {
        const status = res.statusCode ?? 0;
        const problem = range
          ? rangeReplyProblem({ status, headers: new Map(Object.entries(res.headers).map(([k, v]) => [k, String(v)])) }, range.offset, range.length)
          : status === 200
            ? undefined
            : new RangeReplyError(`HTTP ${status}`, status >= 500 || status === 429);
        if (problem) {
          res.resume();
          fail(problem.message, problem.transient);
          return;
        }
        onBody?.(res);
        let got = 0;
        res.on('data', (b: Buffer) => {
          if (done) return;
          if (range && got + b.length > range.length) {
            fail(`body longer than the ${range.length} bytes asked for`, true);
            return;
          }
          got += b.length;
          if (perData) timer.refresh();
          sink(b);
        });
        res.on('error', (err) => fail(err.message, true));
        res.on('aborted', () => fail('connection closed mid-body', true));
        res.on('end', () => {
          if (done) return;
          if (range && got !== range.length) {
            fail(`short read: ${got} of ${range.length} bytes`, true);
            return;
          }
          done = true;
          clearTimeout(timer);
          resolve();
        });
      });
      req.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message, true));
      const timer = setTimeout(() => fail(`no ${perData ? 'bytes' : 'complete answer'} within ${this.#timeoutMs} ms`, true), this.#timeoutMs);
    });
  }

  close(): void {
    this.#ranges?.close();
    this.#agent.destroy();
  }
}

/**
 * A body cut into consecutive pieces of `pieceSize` bytes, each handed to `onPiece` once full.
 * Pieces are recycled once handled: a fresh 1 MiB buffer per piece costs more in garbage
 * collection than anything else here. The body stops flowing while {@link MAX_PENDING_PIECES}
 * are being handled.
 */
class Pieces implements BodySink {
  readonly #free: Buffer[] = [];
  #flow: Flow | undefined;
  #paused = false;
  #pending = 0;
  #index = 0;
  #fill = 0;
  #piece: Buffer;

  constructor(
    readonly length: number,
    readonly pieceSize: number,
    readonly onPiece: (index: number, bytes: Buffer) => Promise<void>,
  ) {
    this.#piece = this.#take(Math.min(pieceSize, length));
  }

  attach(flow: Flow): void {
    this.#flow = flow;
  }

  space(max: number): Buffer {
    return this.#piece.subarray(this.#fill, Math.min(this.#piece.length, this.#fill + max));
  }

  filled(n: number): void {
    this.#fill += n;
    if (this.#fill < this.#piece.length) return;
    const handed = this.#piece;
    this.#pending++;
    const settled = (): void => {
      this.#pending--;
      if (handed.length === this.pieceSize) this.#free.push(handed);
      if (this.#paused && this.#pending < MAX_PENDING_PIECES) {
        this.#paused = false;
        this.#flow?.resume();
      }
    };
    this.onPiece(this.#index, handed).then(settled, settled);
    this.#index++;
    const rest = this.length - this.#index * this.pieceSize;
    if (rest > 0) this.#piece = this.#take(Math.min(this.pieceSize, rest));
    this.#fill = 0;
    if (this.#pending >= MAX_PENDING_PIECES && !this.#paused) {
      this.#paused = true;
      this.#flow?.pause();
    }
  }

  #take(size: number): Buffer {
    const b = this.#free.pop();
    return b && b.length >= size ? b.subarray(0, size) : Buffer.allocUnsafe(size);
  }
}

/** A local directory holding a published tree (a slower tier, e.g. a network mount). */
export class LocalSource implements Source {
  readonly location: string;

  constructor(readonly root: string) {
    this.location = root;
  }

  manifest(): Promise<string> {
    return readFile(join(this.root, MANIFEST_NAME), 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new SourceError(`${join(this.root, MANIFEST_NAME)}: ${err.code ?? err.message}; run \`fan hsm publish ${this.root}\` first`, false);
    });
  }

  async read(path: string, offset: number, length: number): Promise<Buffer> {
    const abs = join(this.root, path);
    try {
      const fh = await open(abs, 'r');
      try {
        const buf = Buffer.allocUnsafe(length);
        let got = 0;
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
          if (bytesRead === 0) throw new SourceError(`${abs}: short read: ${got} of ${length} bytes at ${offset}`, true);
          got += bytesRead;
        }
        return buf;
      } finally {
        await fh.close();
      }
    } catch (err) {
      if (err instanceof SourceError) throw err;
      throw new SourceError(`${abs}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, true);
    }
  }

  async readPieces(path: string, offset: number, length: number, pieceSize: number, onPiece: (index: number, bytes: Buffer) => Promise<void>): Promise<void> {
    // A local tier has no per-request cost worth streaming around: one read per piece.
    for (let index = 0; index * pieceSize < length; index++) {
      const at = index * pieceSize;
      await onPiece(index, await this.read(path, offset + at, Math.min(pieceSize, length - at)));
    }
  }

  close(): void {}
}

/** A source for a `http(s)://` URL or a local directory path. */
export function openSource(location: string, options: HttpSourceOptions = {}): Source {
  return /^https?:\/\//.test(location) ? new HttpSource(location, options) : new LocalSource(location);
}
