/**
 * `fan watch`: watch directory trees and print (or act on) what changes.
 * @packageDocumentation
 */
import { spawn } from 'node:child_process';
import { Command, Option } from 'commander';
import { watch, type WatchEvent } from '../watch/index.js';
import { LineWriter, onShutdown, positiveInt, reportFailure } from './output.js';

interface WatchFlags {
  json?: boolean;
  ignore: string[];
  exec?: string;
  debounce?: number;
  backend: string;
  autoRescan?: boolean;
}

/** One event as a text line. */
export function formatWatchText(ev: WatchEvent): string {
  const kind = ev.type.padEnd(6);
  const dir = ev.isDir && ev.type !== 'rescan' ? '/' : '';
  switch (ev.type) {
    case 'rename':
      return `${kind} ${ev.oldPath}${dir} -> ${ev.path}${dir}`;
    case 'rescan':
      return `${kind} ${ev.path} (${ev.reason}: rescan this tree)`;
    case 'error':
      return `${kind} ${ev.path}: ${ev.error.message}`;
    default:
      return `${kind} ${ev.path}${dir}`;
  }
}

/** One event as an NDJSON line. */
export function formatWatchJson(ev: WatchEvent): string {
  const time = new Date(ev.time).toISOString();
  if (ev.type === 'error') return JSON.stringify({ type: 'error', path: ev.path, isDir: ev.isDir, time, message: ev.error.message });
  return JSON.stringify({ ...ev, time });
}

/**
 * Runs a command once per batch, never two at once: batches arriving while it runs are merged
 * into the next run.
 */
class BatchRunner {
  #running = false;
  #pending = new Set<string>();

  constructor(private readonly command: string) {}

  push(batch: WatchEvent[]): void {
    for (const ev of batch) {
      if (ev.type === 'rename') this.#pending.add(ev.oldPath);
      this.#pending.add(ev.path);
    }
    this.#run();
  }

  #run(): void {
    if (this.#running || this.#pending.size === 0) return;
    const paths = [...this.#pending];
    this.#pending.clear();
    this.#running = true;
    const list = paths.join('\n');
    const child = spawn('/bin/sh', ['-c', this.command], {
      stdio: ['pipe', 'inherit', 'inherit'],
      env: { ...process.env, FAN_CHANGED_PATHS: list, FAN_CHANGED_COUNT: String(paths.length) },
    });
    child.stdin.on('error', () => {}); // The command need not read its stdin.
    child.stdin.end(`${list}\n`);
    child.on('error', (err) => process.stderr.write(`fan watch: --exec failed to start: ${err.message}\n`));
    child.on('close', (code, signal) => {
      if (code !== 0) process.stderr.write(`fan watch: --exec "${this.command}" exited with ${signal ?? code}\n`);
      this.#running = false;
      this.#run();
    });
  }
}

/** Build the `watch` subcommand. */
export function watchCommand(): Command {
  return new Command('watch')
    .description(
      'Watch directory trees and print every change: create, update, delete, rename (one line with both paths), ' +
        'and rescan when events were lost or a root went away. With root, one filesystem mark covers a whole tree ' +
        'in constant time, whatever its size; without, unprivileged per-directory marks are used.',
    )
    .argument('<dirs...>', 'directories to watch')
    .option('--json', 'write NDJSON; the first line is {"type":"ready","roots":[…],"backend":…,"readyMs":…}')
    .addOption(
      new Option('-i, --ignore <glob>', 'ignore a path or picomatch glob relative to each root (repeatable)')
        .argParser((v: string, prev: string[]) => [...prev, v])
        .default([]),
    )
    .option('-e, --exec <command>', 'run a shell command after each batch; changed paths on its stdin and in $FAN_CHANGED_PATHS')
    .option('-d, --debounce <ms>', 'batching window in milliseconds (default 30)', positiveInt('--debounce'))
    .addOption(new Option('--backend <name>', 'auto, fanotify (filesystem mark, root) or fanotify-inode (unprivileged)').default('auto'))
    .option('--auto-rescan', 'after an overflow, crawl and report the differences (keeps a snapshot in memory)')
    .addHelpText(
      'after',
      `
Output (text):
  create /srv/app/src/new.ts
  update /srv/app/src/index.ts
  rename /srv/app/a.ts -> /srv/app/b.ts
  delete /srv/app/tmp/
  rescan /srv/app (overflow: rescan this tree)
A trailing "/" marks a directory. Changes are coalesced per path within the batching window.

Requirements:
  root for the filesystem-mark backend (Linux 5.17+); otherwise Linux 5.13+ for unprivileged marks.

Examples:
  sudo fan watch --json /srv/app
  sudo fan watch -i node_modules -i '**/*.log' -e 'make -q || make' ./src`,
    )
    .action(async (dirs: string[], flags: WatchFlags) => {
      try {
        await runWatch(dirs, flags);
      } catch (err) {
        reportFailure(err);
      }
    });
}

async function runWatch(dirs: string[], flags: WatchFlags): Promise<void> {
  const out = new LineWriter();
  const sub = watch(dirs, {
    ignore: flags.ignore,
    debounceMs: flags.debounce,
    backend: flags.backend,
    autoRescan: flags.autoRescan,
  });
  const runner = flags.exec ? new BatchRunner(flags.exec) : undefined;
  sub.on('events', (batch) => {
    for (const ev of batch) out.push(flags.json ? formatWatchJson(ev) : formatWatchText(ev));
    out.flush();
    runner?.push(batch);
  });
  sub.on('close', () => {
    out.flush();
    process.exitCode = 0;
  });
  onShutdown(() => sub.close());
  const info = await sub.ready;
  if (flags.json) out.push(JSON.stringify({ type: 'ready', ...info }));
  else process.stderr.write(`fan watch: watching ${info.roots.join(', ')} (backend ${info.backend}, ready in ${info.readyMs.toFixed(1)} ms)\n`);
  out.flush();
}
