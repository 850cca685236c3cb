/**
 * `fan connect`: print the changes a `fan serve` server (or a NATS JetStream stream) reports.
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { Command, Option } from 'commander';
import { connect, consumeFromNats, EVENT_KINDS, type EventKind, type EventRecord, type RemoteUpdate } from '../remote/index.js';
import { LineWriter, onShutdown, reportFailure } from './output.js';
import { addNatsFlags, natsAuthOf, type NatsFlags } from './nats-flags.js';

interface ConnectFlags extends NatsFlags {
  json?: boolean;
  cursor?: string;
  tokenFile?: string;
  ca?: string;
  kind: string[];
  ignore: string[];
  durable?: string;
  host?: string;
}

const repeatable = (v: string, prev: string[]): string[] => [...prev, v];

/** One record as a text line. */
export function formatRecordText(r: EventRecord): string {
  const dir = r.isDir ? '/' : '';
  return r.kind === 'rename' ? `rename ${r.oldPath}${dir} -> ${r.path}${dir}` : `${r.kind.padEnd(6)} ${r.path}${dir}`;
}

/** Build the `connect` subcommand. */
export function connectCommand(): Command {
  return addNatsFlags(new Command('connect'))
    .description(
      'Subscribe to a directory on a fan serve server and print its changes, reconnecting and resuming by itself; ' +
        'or consume a host\'s published events from NATS JetStream with a durable consumer.',
    )
    .argument('<url>', 'socket path, unix:/PATH, ws://HOST:PORT, wss://HOST:PORT or nats://HOST:PORT')
    .argument('<root>', 'the directory on the server (absolute)')
    .option('--json', 'write NDJSON: a ready line, then {"type":"event",…record}, {"type":"invalidate",…}, {"type":"cursor",…}')
    .option('--cursor <cursor>', 'resume from this cursor (printed by an earlier run)')
    .option('--token-file <file>', 'file holding the token of a ws:// or wss:// server')
    .option('--ca <file>', 'PEM CA certificate to trust for wss://')
    .addOption(new Option('--kind <kind>', 'only these kinds (repeatable)').choices([...EVENT_KINDS]).argParser(repeatable).default([]))
    .addOption(new Option('-i, --ignore <glob>', 'ignore a path or glob relative to the root (repeatable)').argParser(repeatable).default([]))
    .option('--durable <name>', 'nats: durable consumer name (default fan-connect-<this host>)')
    .option('--host <name>', 'nats: the publishing host (default this host)')
    .addHelpText(
      'after',
      `
Output (text):
  create src/new.ts
  rename a.ts -> b.ts
  invalidate (overflow: ...): drop what you cached and rescan
Paths are relative to the root; a trailing "/" marks a directory.

Examples:
  fan connect /run/fanotify/fan.sock ~/src
  fan connect --json --token-file token wss://build-host:7443 /srv/share
  fan connect nats://127.0.0.1:4222 /srv/share --host web1 --durable indexer
  fan connect nats://nats.lan:4222 /srv/share --host web1 --nats-creds fan.creds --nats-ca ca.pem`,
    )
    .action(async (url: string, root: string, flags: ConnectFlags) => {
      try {
        if (url.startsWith('nats://')) await runNats(url, root, flags);
        else await runConnect(url, root, flags);
      } catch (err) {
        reportFailure(err);
      }
    });
}

function writeUpdate(out: LineWriter, u: RemoteUpdate, json: boolean | undefined): void {
  if (u.type === 'events') {
    for (const r of u.events) out.push(json ? JSON.stringify({ type: 'event', ...r }) : formatRecordText(r));
    if (u.cursor !== undefined && json) out.push(JSON.stringify({ type: 'cursor', cursor: u.cursor }));
  } else if (u.type === 'invalidate') {
    out.push(json ? JSON.stringify(u) : `invalidate (${u.reason}: ${u.detail}): drop what you cached and rescan`);
  } else {
    out.push(json ? JSON.stringify(u) : `error ${u.code}: ${u.message}`);
  }
  out.flush();
}

async function runConnect(url: string, root: string, flags: ConnectFlags): Promise<void> {
  const out = new LineWriter();
  const sub = connect(url, {
    root,
    ...(flags.cursor ? { cursor: flags.cursor } : {}),
    ...(flags.tokenFile ? { token: readFileSync(flags.tokenFile, 'utf8').trim() } : {}),
    ...(flags.ca ? { ca: readFileSync(flags.ca) } : {}),
    ...(flags.kind.length > 0 ? { kinds: flags.kind as EventKind[] } : {}),
    ...(flags.ignore.length > 0 ? { ignore: flags.ignore } : {}),
    clientName: 'fan connect',
  });
  onShutdown(() => sub.close());
  sub.on('update', (u) => writeUpdate(out, u, flags.json));
  sub.on('close', (err) => {
    if (err) reportFailure(err);
    process.exit(0);
  });
  const info = await sub.ready;
  if (flags.json) out.push(JSON.stringify({ type: 'ready', root: info.root, cursor: info.cursor ?? null }));
  else process.stderr.write(`fan connect: subscribed to ${root}${info.cursor ? ` (cursor ${info.cursor})` : ''}\n`);
  out.flush();
  sub.on('disconnected', () => process.stderr.write('fan connect: connection lost; reconnecting\n'));
}

async function runNats(url: string, root: string, flags: ConnectFlags): Promise<void> {
  const out = new LineWriter();
  const host = flags.host ?? hostname();
  const messages = consumeFromNats({ url, host, root, ...natsAuthOf(flags), durable: flags.durable ?? `fan-connect-${hostname().replace(/[^A-Za-z0-9_-]/g, '_')}` });
  onShutdown(async () => {
    await messages.return(undefined);
  });
  if (flags.json) out.push(JSON.stringify({ type: 'ready', host, root }));
  else process.stderr.write(`fan connect: consuming ${host}:${root} from ${url}\n`);
  out.flush();
  for await (const env of messages) {
    if (env.type === 'events') writeUpdate(out, { type: 'events', events: env.events }, flags.json);
    else writeUpdate(out, { type: 'invalidate', reason: env.reason, detail: env.detail }, flags.json);
  }
}
