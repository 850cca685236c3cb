/**
 * `fan serve`: serve file events to local unprivileged clients and remote machines.
 * @packageDocumentation
 */
import { realpathSync } from 'node:fs';
import { Command, Option } from 'commander';
import { serve, publishToNats, DEFAULT_SOCKET } from '../remote/index.js';
import { addNatsFlags, natsAuthOf, type NatsFlags } from './nats-flags.js';
import { defaultStateDir } from '../journal/index.js';
import { LineWriter, onShutdown, positiveInt, reportFailure } from './output.js';

interface ServeFlags extends NatsFlags {
  socket: string | false;
  listen?: string;
  cert?: string;
  key?: string;
  tokenFile?: string;
  export: string[];
  journal?: boolean;
  stateDir?: string;
  maxQueueEvents?: number;
  maxQueueBytes?: number;
  debounce?: number;
  traceBatches?: string;
  publish?: string;
  publishRoot: string[];
  stream?: string;
  retention: 'limits' | 'interest' | 'workqueue';
  maxAge?: number;
  maxMsgs?: number;
  hostName?: string;
  json?: boolean;
}

const repeatable = (v: string, prev: string[]): string[] => [...prev, v];

/** Build the `serve` subcommand. */
export function serveCommand(): Command {
  return addNatsFlags(new Command('serve'))
    .description(
      'Serve file events: local programs subscribe through a unix socket (each may watch only what its uid can read), ' +
        'remote machines through ws:// or wss:// with a token. Renames are one record; objects have server-issued ids ' +
        'with generations; a slow client gets "invalidate" instead of unbounded memory.',
    )
    .option('--socket <path>', `unix socket (mode 0666; access is checked per client uid)`, DEFAULT_SOCKET)
    .option('--no-socket', 'do not listen on a unix socket')
    .option('--listen <url>', 'also listen on ws://HOST:PORT or wss://HOST:PORT (needs --token-file and --export)')
    .option('--cert <file>', 'PEM certificate for wss://')
    .option('--key <file>', 'PEM private key for wss://')
    .option('--token-file <file>', 'file holding the token remote clients must send (at least 16 characters)')
    .addOption(new Option('--export <dir>', 'directory remote clients may subscribe to or below (repeatable)').argParser(repeatable).default([]))
    .option('--journal', 'record served roots in the journal so clients can resume with a cursor after a disconnect')
    .option('--state-dir <dir>', `journal state directory (default ${defaultStateDir()})`)
    .option('--max-queue-events <n>', 'per-client queue limit in events (default 10000)', positiveInt('--max-queue-events'))
    .option('--max-queue-bytes <n>', 'per-client queue limit in bytes (default 8388608)', positiveInt('--max-queue-bytes'))
    .option('-d, --debounce <ms>', 'batching window in milliseconds (default 2)', positiveInt('--debounce'))
    .option('--trace-batches <file>', 'append one line per batch to FILE: monotonic ns received and sent, first and last created path (for benchmarks)')
    .option('--publish <url>', 'publish the --publish-root trees to NATS JetStream at nats://HOST:PORT')
    .addOption(new Option('--publish-root <dir>', 'a root to publish to NATS (repeatable)').argParser(repeatable).default([]))
    .option('--stream <name>', 'JetStream stream name (default FAN, subjects fan.>)')
    .addOption(new Option('--retention <policy>', 'stream retention').choices(['limits', 'interest', 'workqueue']).default('limits'))
    .option('--max-age <seconds>', 'stream: drop messages older than this (default 7 days)', positiveInt('--max-age'))
    .option('--max-msgs <n>', 'stream: keep at most this many messages (default 1000000)', positiveInt('--max-msgs'))
    .option('--host-name <name>', 'this host in NATS subjects fan.<host>.<root hash> (default the hostname)')
    .option('--json', 'write one NDJSON ready line {"type":"ready",…} to stdout')
    .addHelpText(
      'after',
      `
Requirements: root (CAP_SYS_ADMIN) for the filesystem marks; Linux 5.17+.

Examples:
  sudo fan serve                                   local clients: fan connect /run/fanotify/fan.sock /home/me/src
  sudo fan serve --journal                         clients resume after a disconnect from their last cursor
  sudo fan serve --listen wss://0.0.0.0:7443 --cert c.pem --key k.pem --token-file /etc/fanotify/token --export /srv/share
  sudo fan serve --publish nats://127.0.0.1:4222 --publish-root /srv/share --retention limits --max-age 86400
  sudo fan serve --publish nats://nats.lan:4222 --publish-root /srv/share --nats-token-file /etc/fanotify/nats-token`,
    )
    .action(async (flags: ServeFlags) => {
      try {
        await runServe(flags);
      } catch (err) {
        reportFailure(err);
      }
    });
}

async function runServe(flags: ServeFlags): Promise<void> {
  const server = await serve({
    socket: flags.socket,
    listen: flags.listen,
    cert: flags.cert,
    key: flags.key,
    tokenFile: flags.tokenFile,
    exports: flags.export,
    journalStateDir: flags.journal ? (flags.stateDir ?? defaultStateDir()) : undefined,
    maxQueueEvents: flags.maxQueueEvents,
    maxQueueBytes: flags.maxQueueBytes,
    debounceMs: flags.debounce,
    traceFile: flags.traceBatches,
  });
  let bridge: Awaited<ReturnType<typeof publishToNats>> | undefined;
  try {
    if (flags.publish) {
      if (flags.publishRoot.length === 0) throw new Error('serve: --publish needs at least one --publish-root directory');
      bridge = await publishToNats((r) => server.acquire(r), (f) => server.release(f), {
        url: flags.publish,
        ...natsAuthOf(flags),
        roots: flags.publishRoot.map((r) => realpathSync(r)),
        host: flags.hostName,
        stream: flags.stream,
        retention: flags.retention,
        maxAgeMs: flags.maxAge === undefined ? undefined : flags.maxAge * 1000,
        maxMsgs: flags.maxMsgs,
      });
    }
  } catch (err) {
    await server.close();
    throw err;
  }
  onShutdown(async () => {
    await bridge?.close();
    await server.close();
  });
  const where = [server.socketPath, server.url, flags.publish && `${flags.publish} (${flags.publishRoot.join(', ')})`].filter(Boolean);
  if (flags.json) {
    const out = new LineWriter();
    out.push(JSON.stringify({ type: 'ready', socket: server.socketPath ?? null, url: server.url ?? null, publish: flags.publish ?? null, journal: flags.journal === true }));
    out.flush();
  }
  process.stderr.write(`fan serve: serving on ${where.join(', ')}${flags.journal ? ' (journal on: clients can resume)' : ''}\n`);
}
