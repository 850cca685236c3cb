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
  readonly #agent: http.Agent;
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
      // A range body is copied once, into a buffer of the size asked for.
      const into = Buffer.allocUnsafe(length);
      let got = 0;
      await this.#request(this.#url(path), { offset, length }, (b) => {
        got += b.copy(into, got);
      });
      return into;
    });
  }

  async readPieces(path: string, offset: number, length: number, pieceSize: number, onPiece: (index: number, bytes: Buffer) => Promise<void>): Promise<void> {
    if (length === 0) return;
    // Pieces are recycled: a fresh 1 MiB buffer per piece costs more in garbage collection than
    // the copy into it.
    const free: Buffer[] = [];
    const take = (size: number): Buffer => {
      const b = free.pop();
      return b && b.length >= size ? b.subarray(0, size) : Buffer.allocUnsafe(size);
    };
    let index = 0;
    let piece = take(Math.min(pieceSize, length));
    let fill = 0;
    let pending = 0;
    let paused = false;
    await this.#request(
      this.#url(path),
      { offset, length },
      (b, res) => {
        for (let pos = 0; pos < b.length; ) {
          const n = b.copy(piece, fill, pos);
          fill += n;
          pos += n;
          if (fill < piece.length) continue;
          pending++;
          const handed = piece;
          const settled = (): void => {
            pending--;
            if (handed.length === pieceSize) free.push(handed);
            if (paused && pending < MAX_PENDING_PIECES) {
              paused = false;
              res.resume();
            }
          };
          onPiece(index, piece).then(settled, settled);
          index++;
          const rest = length - index * pieceSize;
          if (rest > 0) piece = take(Math.min(pieceSize, rest));
          fill = 0;
        }
        if (pending >= MAX_PENDING_PIECES && !paused) {
          paused = true;
          res.pause();
        }
      },
      true,
    );
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
   * One GET; `sink` sees the body as it arrives, only after status and Content-Range are checked,
   * and never more than the range asked for. The deadline covers the whole request, or, with
   * `perData`, each wait for more bytes (a long streamed body is not a stall).
   */
  #request(url: URL, range: { offset: number; length: number } | undefined, sink: (b: Buffer, res: http.IncomingMessage) => void, perData = false): Promise<void> {
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
        if (range ? status !== 206 && status !== 200 : status !== 200) {
          res.resume();
          fail(`HTTP ${status}${range && status === 416 ? ' (range not satisfiable: the source changed since publishing)' : ''}`, status >= 500 || status === 429);
          return;
        }
        if (range && status === 200 && !(range.offset === 0 && Number(res.headers['content-length']) === range.length)) {
          res.resume();
          fail('the server ignores Range requests; serve the tree with one that supports them (nginx does)', false);
          return;
        }
        if (range && status === 206) {
          const m = /^bytes (\d+)-(\d+)\//.exec(res.headers['content-range'] ?? '');
          if (!m || Number(m[1]) !== range.offset || Number(m[2]) !== range.offset + range.length - 1) {
            res.resume();
            fail(`unexpected Content-Range "${res.headers['content-range'] ?? ''}"`, true);
            return;
          }
        }
        let got = 0;
        res.on('data', (b: Buffer) => {
          if (done) return;
          if (range && got + b.length > range.length) {
            fail(`body longer than the ${range.length} bytes asked for`, true);
            return;
          }
          got += b.length;
          if (perData) timer.refresh();
          sink(b, res);
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
    this.#agent.destroy();
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
