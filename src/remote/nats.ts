/**
 * The fleet bridge: publish a server's events to NATS JetStream (one subject per host and root)
 * and consume them with a durable consumer, so a fleet's events outlive any one connection.
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { connect as natsConnect, credsAuthenticator, type NatsConnection, type NodeConnectionOptions } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, AckPolicy, DeliverPolicy, RetentionPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { rootTag } from '../journal/index.js';
import { FanotifyError } from '../errors.js';
import type { FeedSubscriber, RootFeed } from './feed.js';
import type { EventRecord, InvalidateReason } from './protocol.js';

/** The stream every host publishes to by default (subjects `fan.>`). */
export const DEFAULT_STREAM = 'FAN';

/** What one NATS message carries. */
export type NatsEnvelope =
  | { readonly type: 'events'; readonly host: string; readonly root: string; readonly events: readonly EventRecord[] }
  | { readonly type: 'invalidate'; readonly host: string; readonly root: string; readonly reason: InvalidateReason; readonly detail: string };

/**
 * How to authenticate to nats-server and secure the connection. At most one of `token`,
 * `user`/`pass` and `credsFile`.
 */
export interface NatsAuthOptions {
  /** A token (nats-server `authorization { token: … }` or `--auth`). */
  readonly token?: string;
  /** User name; needs `pass`. */
  readonly user?: string;
  readonly pass?: string;
  /** A `.creds` file (user JWT and NKey seed) for decentralized (operator) auth. */
  readonly credsFile?: string;
  /** PEM file of the CA that signed the server's certificate; any `tls*` option requires TLS. */
  readonly tlsCa?: string;
  /** PEM client certificate, for servers that verify clients (needs `tlsKey`). */
  readonly tlsCert?: string;
  /** PEM private key of `tlsCert`. */
  readonly tlsKey?: string;
}

/** Options of {@link publishToNats}. */
export interface PublishOptions extends NatsAuthOptions {
  /** nats://HOST:PORT */
  readonly url: string;
  /** Roots to publish (absolute, real paths). */
  readonly roots: readonly string[];
  /** This host's name in subjects. Default os.hostname(). */
  readonly host?: string;
  /** Stream name. Default {@link DEFAULT_STREAM}. */
  readonly stream?: string;
  /** Stream retention: `limits` (keep until max age/messages), `interest` or `workqueue`. Default limits. */
  readonly retention?: 'limits' | 'interest' | 'workqueue';
  /** Drop messages older than this (ms). Default 7 days. */
  readonly maxAgeMs?: number;
  /** Keep at most this many messages. Default 1,000,000. */
  readonly maxMsgs?: number;
}

/** A subject-safe token. */
function token(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, '_') || '_';
}

/** The subject of a host's root: `fan.<host>.<root tag>` (the tag is the journal's root hash). */
export function subjectFor(host: string, root: string): string {
  return `fan.${token(host)}.${rootTag(root)}`;
}

/** The client options of `auth`, checked: a problem is named before any connection is tried. */
function natsAuth(auth: NatsAuthOptions): Partial<NodeConnectionOptions> {
  const ways = [auth.token !== undefined, auth.user !== undefined || auth.pass !== undefined, auth.credsFile !== undefined].filter(Boolean).length;
  if (ways > 1) throw new FanotifyError('nats: give one of a token, a user and password, or a creds file', 'EINVAL');
  if ((auth.user === undefined) !== (auth.pass === undefined)) throw new FanotifyError('nats: a user needs a password and a password needs a user', 'EINVAL');
  if ((auth.tlsCert === undefined) !== (auth.tlsKey === undefined)) throw new FanotifyError('nats: a TLS client certificate needs its key and a key needs its certificate', 'EINVAL');
  const out: { -readonly [K in keyof NodeConnectionOptions]?: NodeConnectionOptions[K] } = {};
  if (auth.token !== undefined) out.token = auth.token;
  if (auth.user !== undefined) {
    out.user = auth.user;
    out.pass = auth.pass;
  }
  if (auth.credsFile !== undefined) {
    let creds: Uint8Array;
    try {
      creds = readFileSync(auth.credsFile);
    } catch (err) {
      throw new FanotifyError(`nats: cannot read the creds file ${auth.credsFile}: ${(err as Error).message}`, 'ENOENT');
    }
    out.authenticator = credsAuthenticator(creds);
  }
  if (auth.tlsCa !== undefined || auth.tlsCert !== undefined) {
    const pem = (file: string, what: string): string => {
      try {
        return readFileSync(file, 'utf8');
      } catch (err) {
        throw new FanotifyError(`nats: cannot read the TLS ${what} ${file}: ${(err as Error).message}`, 'ENOENT');
      }
    };
    out.tls = {
      ...(auth.tlsCa !== undefined ? { ca: pem(auth.tlsCa, 'CA file') } : {}),
      ...(auth.tlsCert !== undefined ? { cert: pem(auth.tlsCert, 'certificate'), key: pem(auth.tlsKey!, 'key') } : {}),
    };
  }
  return out;
}

async function natsOpen(url: string, auth: NatsAuthOptions): Promise<NatsConnection> {
  const u = new URL(url);
  if (u.protocol !== 'nats:') throw new FanotifyError(`nats: expected nats://HOST:PORT, got ${url}`, 'EINVAL');
  const options = natsAuth(auth);
  try {
    return await natsConnect({ servers: `${u.hostname}:${u.port || 4222}`, timeout: 5000, ...options });
  } catch (err) {
    const message = (err as Error).message;
    if (/authori[sz]ation|authentication|permission/i.test(message)) {
      throw new FanotifyError(`nats: ${url} refused the credentials: ${message} (check the token, user and password, or creds file)`, 'EACCES');
    }
    const tls = /tls|certificate|ssl/i.test(message) ? ' (check the TLS CA, certificate and key)' : ' (is nats-server running with -js?)';
    throw new FanotifyError(`nats: cannot connect to ${url}: ${message}${tls}`, 'ECONNREFUSED');
  }
}

/** Create the stream, or bring its subjects, retention and limits to what was asked. */
async function ensureStream(jsm: JetStreamManager, options: PublishOptions): Promise<string> {
  const name = options.stream ?? DEFAULT_STREAM;
  const config = {
    name,
    subjects: ['fan.>'],
    retention: options.retention === 'interest' ? RetentionPolicy.Interest : options.retention === 'workqueue' ? RetentionPolicy.Workqueue : RetentionPolicy.Limits,
    max_age: (options.maxAgeMs ?? 7 * 24 * 3600 * 1000) * 1_000_000,
    max_msgs: options.maxMsgs ?? 1_000_000,
  };
  try {
    await jsm.streams.info(name);
    await jsm.streams.update(name, { subjects: config.subjects, max_age: config.max_age, max_msgs: config.max_msgs });
  } catch (err) {
    if (!/not found/i.test((err as Error).message)) throw err;
    await jsm.streams.add(config);
  }
  return name;
}

/** Publications in flight before further batches are dropped (and an invalidate is published). */
const MAX_IN_FLIGHT = 10_000;
/** Records per message. */
const RECORDS_PER_MESSAGE = 500;

/**
 * Publish every event of `roots` (feeds taken from `acquire`) to JetStream. Each feed batch is
 * one message. When JetStream falls behind, batches are dropped and an `invalidate` follows.
 */
export async function publishToNats(
  acquire: (root: string) => Promise<RootFeed>,
  release: (feed: RootFeed) => void,
  options: PublishOptions,
): Promise<{ close(): Promise<void>; published(): number }> {
  const nc = await natsOpen(options.url, options);
  const host = options.host ?? hostname();
  let published = 0;
  const subs: { feed: RootFeed; sub: FeedSubscriber }[] = [];
  try {
    await ensureStream(await jetstreamManager(nc), options);
    const js = jetstream(nc);
    for (const root of options.roots) {
      const feed = await acquire(root);
      const subject = subjectFor(host, root);
      let inFlight = 0;
      let dropped = false;
      const publish = (env: NatsEnvelope, force = false): void => {
        if (inFlight >= MAX_IN_FLIGHT && !force) {
          dropped = true;
          return;
        }
        inFlight++;
        js.publish(subject, JSON.stringify(env)).then(
          () => {
            inFlight--;
            published++;
            if (dropped && inFlight < MAX_IN_FLIGHT / 2) {
              dropped = false;
              publish({ type: 'invalidate', host, root, reason: 'overflow', detail: 'JetStream fell behind; batches were dropped' }, true);
            }
          },
          () => {
            inFlight--;
            dropped = true;
          },
        );
      };
      const sub: FeedSubscriber = {
        batch: (_no, events) => {
          // Stay far below NATS's default 1 MiB payload limit.
          for (let i = 0; i < events.length; i += RECORDS_PER_MESSAGE) publish({ type: 'events', host, root, events: events.slice(i, i + RECORDS_PER_MESSAGE) });
        },
        checkpoint: () => undefined,
        invalidate: (reason, detail) => publish({ type: 'invalidate', host, root, reason, detail }, true),
        error: () => undefined,
      };
      feed.add(sub);
      subs.push({ feed, sub });
    }
  } catch (err) {
    for (const { feed, sub } of subs) {
      feed.remove(sub);
      release(feed);
    }
    await nc.close();
    throw err;
  }
  return {
    published: () => published,
    close: async () => {
      for (const { feed, sub } of subs) {
        feed.remove(sub);
        release(feed);
      }
      await nc.flush().catch(() => undefined);
      await nc.close();
    },
  };
}

/** Options of {@link consumeFromNats}. */
export interface ConsumeOptions extends NatsAuthOptions {
  readonly url: string;
  /** The publishing host's name. */
  readonly host: string;
  /** The root as the publishing host names it. */
  readonly root: string;
  /** Durable consumer name: a restarted consumer continues where it acked. */
  readonly durable: string;
  readonly stream?: string;
}

/**
 * Consume a host's root from JetStream with a durable consumer. Each message is acked after the
 * caller's loop body for it ran (the next `next()`), so a crash redelivers what was not handled.
 */
export async function* consumeFromNats(options: ConsumeOptions): AsyncGenerator<NatsEnvelope> {
  const nc = await natsOpen(options.url, options);
  try {
    const stream = options.stream ?? DEFAULT_STREAM;
    const jsm = await jetstreamManager(nc);
    const filter = subjectFor(options.host, options.root);
    try {
      await jsm.consumers.info(stream, options.durable);
    } catch {
      await jsm.consumers.add(stream, {
        durable_name: options.durable,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        filter_subject: filter,
      });
    }
    const consumer = await jetstream(nc).consumers.get(stream, options.durable);
    const messages = await consumer.consume();
    for await (const m of messages) {
      yield m.json<NatsEnvelope>();
      m.ack();
    }
  } finally {
    await nc.close();
  }
}
