/**
 * The remote server: serves file events of watched roots over a unix socket (local clients,
 * identified by SO_PEERCRED) and optionally over ws:// or wss:// (remote clients, token auth,
 * limited to exported directories).
 * @packageDocumentation
 */
import { createServer as createNetServer, connect as netConnect, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { chmodSync, mkdirSync, readFileSync, realpathSync, unlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { WebSocketServer } from 'ws';
import { FanotifyError } from '../errors.js';
import { peerIdentity } from './access.js';
import { Connection, type ConnectionHost } from './connection.js';
import { RootFeed } from './feed.js';
import { DEFAULT_MAX_FRAME } from './protocol.js';
import { DEFAULT_SOCKET } from './client.js';
import { socketTransport, wsTransport } from './transport.js';

/** Options of {@link serve}. */
export interface ServeOptions {
  /** Unix socket path (mode 0666; access is checked per client). Default {@link DEFAULT_SOCKET}; false: none. */
  readonly socket?: string | false;
  /** `ws://HOST:PORT` or `wss://HOST:PORT` (wss needs `cert` and `key`). Port 0 picks a free one. */
  readonly listen?: string;
  /** PEM certificate file for wss. */
  readonly cert?: string;
  /** PEM private key file for wss. */
  readonly key?: string;
  /** File holding the token WebSocket clients must send in `auth`. Required with `listen`. */
  readonly tokenFile?: string;
  /** Directories WebSocket clients may subscribe to (or below). Required with `listen`. */
  readonly exports?: readonly string[];
  /** Journal state directory: enables cursors and resume (a recorder runs per served root). */
  readonly journalStateDir?: string;
  /** Per-client queue limit in events. Default 10,000. */
  readonly maxQueueEvents?: number;
  /** Per-client queue limit in bytes. Default 8 MiB. */
  readonly maxQueueBytes?: number;
  /** Largest frame accepted from a client. Default 1 MiB. */
  readonly maxFrame?: number;
  /** Batching window of the watches, in ms. Default 2. */
  readonly debounceMs?: number;
  /** Append per-batch timings of every feed to this file (one line per batch, as `FeedOptions.traceFile` describes). */
  readonly traceFile?: string;
  /**
   * With a journal: how long a root stays watched and recorded after its last client left, so a
   * client that reconnects resumes from a recorder that never stopped (renames stay renames).
   * Default 10 minutes.
   */
  readonly lingerMs?: number;
}

/** A running server. */
export interface RemoteServer {
  /** The unix socket path, when listening on one. */
  readonly socketPath: string | undefined;
  /** The WebSocket URL with the actual port, when listening on one. */
  readonly url: string | undefined;
  /** Live numbers, for tests and `fan serve` status lines. */
  stats(): { connections: number; roots: number; ids: number; overflows: number };
  /** The feed of a served root, when it has subscribers (tests and the NATS bridge). */
  acquire(root: string): Promise<RootFeed>;
  release(feed: RootFeed): void;
  /** Say bye to every client, stop listening, stop every watch. */
  close(): Promise<void>;
}

/** A served root: its feed (once open, also `open`), its subscription count, its linger timer. */
interface FeedEntry {
  readonly feed: Promise<RootFeed>;
  open?: RootFeed;
  refs: number;
  linger?: NodeJS.Timeout;
}

/** True when something accepts connections on the unix socket `path`. */
function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Start serving. Rejects with a FanotifyError naming the problem for a socket already served by
 * another process, a missing token file or export list with `listen`, or wss without a key pair.
 */
export async function serve(options: ServeOptions = {}): Promise<RemoteServer> {
  if (options.listen !== undefined) {
    if (!options.tokenFile) throw new FanotifyError('serve: --listen needs --token-file: remote clients must authenticate', 'EINVAL');
    if (!options.exports || options.exports.length === 0) throw new FanotifyError('serve: --listen needs at least one --export directory for remote clients', 'EINVAL');
  }
  const url = options.listen === undefined ? undefined : new URL(options.listen);
  if (url && url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new FanotifyError(`serve: --listen takes ws://HOST:PORT or wss://HOST:PORT, got ${options.listen}`, 'EINVAL');
  if (url?.protocol === 'wss:' && (!options.cert || !options.key)) throw new FanotifyError('serve: wss:// needs --cert and --key (PEM files)', 'EINVAL');
  let tokenHash: Buffer | undefined;
  if (options.tokenFile) {
    let token: string;
    try {
      token = readFileSync(options.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new FanotifyError(`serve: cannot read the token file ${options.tokenFile}: ${(err as Error).message}`, 'ENOENT');
    }
    if (token.length < 16) throw new FanotifyError(`serve: the token in ${options.tokenFile} is too short (at least 16 characters)`, 'EINVAL');
    tokenHash = createHash('sha256').update(token).digest();
  }
  const exports = (options.exports ?? []).map((e) => {
    try {
      return realpathSync.native(e);
    } catch {
      throw new FanotifyError(`serve: export ${e} does not exist`, 'ENOENT');
    }
  });

  const feeds = new Map<string, FeedEntry>();
  const lingerMs = options.lingerMs ?? 600_000;
  const connections = new Set<Connection>();
  let overflows = 0;
  const host: ConnectionHost = {
    limits: {
      maxEvents: options.maxQueueEvents ?? 10_000,
      maxBytes: options.maxQueueBytes ?? 8 << 20,
      maxFrame: options.maxFrame ?? DEFAULT_MAX_FRAME,
    },
    tokenHash,
    exports,
    serverName: 'fanotify/0.1.0',
    acquire(root) {
      let entry = feeds.get(root);
      if (!entry) {
        const feed = RootFeed.open(root, { debounceMs: options.debounceMs ?? 2, journalStateDir: options.journalStateDir, traceFile: options.traceFile });
        const made: FeedEntry = { feed, refs: 0 };
        feed.then(
          (f) => (made.open = f),
          () => feeds.get(root) === made && feeds.delete(root),
        );
        feeds.set(root, (entry = made));
      }
      entry.refs++;
      clearTimeout(entry.linger);
      return entry.feed;
    },
    release(feed) {
      const entry = feeds.get(feed.root);
      if (!entry || --entry.refs > 0) return;
      const stop = (): void => {
        if (entry.refs > 0 || feeds.get(feed.root) !== entry) return;
        feeds.delete(feed.root);
        void feed.close();
      };
      if (feed.hasJournal && lingerMs > 0) entry.linger = setTimeout(stop, lingerMs).unref();
      else stop();
    },
    issuedElsewhere(id, except) {
      for (const e of feeds.values()) if (e.open && e.open !== except && e.open.table.has(id)) return true;
      return false;
    },
    closed(conn) {
      overflows += conn.overflows;
      connections.delete(conn);
    },
  };

  let unix: NetServer | undefined;
  const socketPath = options.socket === false ? undefined : (options.socket ?? DEFAULT_SOCKET);
  if (socketPath) {
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
    if (await socketAlive(socketPath)) throw new FanotifyError(`serve: ${socketPath} is already served by another process; stop it or choose --socket`, 'EADDRINUSE');
    try {
      unlinkSync(socketPath);
    } catch {
      // No stale socket.
    }
    unix = createNetServer((socket: Socket) => {
      let peer;
      try {
        peer = peerIdentity((socket as unknown as { _handle: { fd: number } })._handle.fd);
      } catch {
        socket.destroy();
        return;
      }
      connections.add(new Connection(host, socketTransport(socket, true), { kind: 'peer', peer }));
    });
    await new Promise<void>((resolve, reject) => {
      unix!.once('error', reject);
      unix!.listen(socketPath, () => resolve());
    });
    // Anyone may connect; what each peer may watch is checked against its own uid.
    chmodSync(socketPath, 0o666);
  }

  let web: HttpServer | HttpsServer | undefined;
  let wss: WebSocketServer | undefined;
  let wsUrl: string | undefined;
  if (url) {
    web =
      url.protocol === 'wss:'
        ? createHttpsServer({ cert: readFileSync(options.cert!), key: readFileSync(options.key!) })
        : createHttpServer();
    wss = new WebSocketServer({ server: web, maxPayload: host.limits.maxFrame + 4 });
    wss.on('connection', (ws) => {
      connections.add(new Connection(host, wsTransport(ws), { kind: 'none' }));
    });
    await new Promise<void>((resolve, reject) => {
      web!.once('error', reject);
      web!.listen(Number(url.port || 0), url.hostname.replace(/^\[|\]$/g, ''), () => resolve());
    });
    const addr = web.address();
    const port = typeof addr === 'object' && addr ? addr.port : Number(url.port);
    wsUrl = `${url.protocol}//${url.hostname}:${port}`;
  }

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    url: wsUrl,
    stats: () => {
      let ids = 0;
      for (const e of feeds.values()) ids += e.open?.table.size ?? 0;
      let live = 0;
      for (const c of connections) live += c.overflows;
      return { connections: connections.size, roots: feeds.size, ids, overflows: overflows + live };
    },
    acquire: (root) => host.acquire(root),
    release: (feed) => host.release(feed),
    close: () =>
      (closing ??= (async () => {
        for (const c of [...connections]) c.shutdown('server shutting down');
        await Promise.all([
          unix && new Promise((r) => unix.close(r)),
          wss && new Promise((r) => wss.close(r)),
          web && new Promise((r) => { web.close(r); web.closeAllConnections?.(); }),
        ]);
        for (const c of [...connections]) await c.close();
        for (const e of feeds.values()) clearTimeout(e.linger);
        const all = await Promise.allSettled([...feeds.values()].map((e) => e.feed));
        feeds.clear();
        for (const r of all) if (r.status === 'fulfilled') await r.value.close();
        if (socketPath) {
          try {
            unlinkSync(socketPath);
          } catch {
            // Already gone.
          }
        }
      })()),
  };
}
