/**
 * `fan hsm`: publish a tree, mount it as placeholders hydrated on first access, and manage the
 * local copy (evict, pin, prefetch, status, unmount).
 * @packageDocumentation
 */
import { spawn } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { closeSync, mkdirSync, openSync, readFileSync, realpathSync } from 'node:fs';
import { Command } from 'commander';
import cliProgress from 'cli-progress';
import { publish, mountTree, requestControl, mountOf, logPath, DEFAULT_CHUNK_SIZE, type ControlRequest, type ControlReply } from '../hsm/index.js';
import { NonBlockingLines } from './nonblocking-lines.js';
import { action, LineWriter, onShutdown, positiveInt } from './output.js';

/** Set in the environment of the daemon `fan hsm mount --background` starts. */
const DETACHED_ENV = 'FAN_HSM_DETACHED';

/** Log lines kept for a stderr reader that does not keep up, before later ones are dropped (counted). */
const LOG_MAX_QUEUED_BYTES = 1024 * 1024;

/** How long the exit waits for stderr's reader to take the last log lines. */
const LOG_CLOSE_MS = 2000;

/**
 * `fan hsm mount --background`: run the same command detached (its own session, stdout to
 * nowhere, stderr to the mount's log), print its mounted line once the tree is reachable and
 * return; if it fails first, print the end of its log and exit as it did.
 */
async function mountInBackground(target: string): Promise<void> {
  let abs = resolve(target);
  try {
    abs = realpathSync(abs);
  } catch {
    // The daemon names the problem with the target.
  }
  const log = logPath(abs);
  mkdirSync(dirname(log), { recursive: true, mode: 0o700 });
  const fd = openSync(log, 'a', 0o600);
  const args = process.argv.slice(1).filter((a) => a !== '--background');
  const child = spawn(process.execPath, [...process.execArgv, ...args], { detached: true, stdio: ['ignore', 'ignore', fd, 'ipc'], env: { ...process.env, [DETACHED_ENV]: '1' } });
  closeSync(fd);
  const outcome = await new Promise<{ line: string } | { code: number }>((done) => {
    child.once('message', (m: { line?: string }) => done({ line: m.line ?? '' }));
    child.once('exit', (code, signal) => done({ code: code ?? (signal ? 1 : 0) }));
  });
  if ('code' in outcome) {
    const tail = readFileSync(log, 'utf8').trimEnd().split('\n').slice(-10).join('\n');
    process.stderr.write(`${tail}\nfan hsm: the background mount exited (code ${outcome.code}); log: ${log}\n`);
    process.exit(outcome.code || 1);
  }
  child.unref();
  if (child.connected) child.disconnect();
  process.stdout.write(`${outcome.line}\n`);
}

const UNITS: Record<string, number> = { '': 1, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tib: 1024 ** 4 };

/** Parse 4096, 64KiB, 1MiB, 10G… (binary units), or exit 2 naming the option. */
export function parseSize(name: string): (text: string) => number {
  return (text) => {
    const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
    const unit = UNITS[(m?.[2] ?? 'x').toLowerCase()];
    if (!m || unit === undefined) {
      process.stderr.write(`fan: ${name} needs a size like 4096, 64KiB, 1MiB or 10GiB; got "${text}"\n`);
      process.exit(2);
    }
    return Math.floor(Number(m[1]) * unit);
  };
}

const abs = (p: string): string => {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
};

/** Send a request to the daemon serving the first path; fail with its error. */
async function ask(paths: readonly string[], req: (absPaths: string[]) => ControlRequest, onLine?: (r: ControlReply) => void): Promise<Record<string, unknown>> {
  const absPaths = paths.map(abs);
  const m = mountOf(absPaths[0] ?? abs('.'));
  for (const p of absPaths) {
    if (mountOf(p).target !== m.target) throw new Error(`${p} is in another mounted tree than ${absPaths[0]}; one tree per command`);
  }
  const r = await requestControl(m.socket, req(absPaths), onLine);
  if (!r.ok) throw new Error(r.error ?? 'the daemon refused');
  return r;
}

const fmtBytes = (n: number): string => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
};

/** Build the `hsm` command and its subcommands. */
export function hsmCommand(): Command {
  const hsm = new Command('hsm').description(
    'Mount a published tree (HTTP or a local directory) on ext4/xfs/btrfs as placeholders that are fetched, ' +
      'verified and stored on first access (pre-content fanotify, Linux 6.14+), no FUSE. See docs/hsm.md.',
  );

  hsm
    .command('publish')
    .description(`Write ${'.fan-hsm-manifest.json'} into DIR: every entry's metadata and a SHA-256 per chunk of every file. Serve DIR with any HTTP server that supports Range requests.`)
    .argument('<dir>', 'the tree to publish')
    .option('--chunk-size <size>', `fetch/verify unit, a multiple of 4 KiB (default ${DEFAULT_CHUNK_SIZE / 1024 / 1024}MiB)`, parseSize('--chunk-size'))
    .option('--json', 'print a summary as JSON')
    .action(
      action(async (dir: string, flags: { chunkSize?: number; json?: boolean }) => {
        const m = await publish(dir, { chunkSize: flags.chunkSize });
        const files = m.entries.filter((e) => e.type === 'file');
        const bytes = files.reduce((s, e) => s + (e.type === 'file' ? e.size : 0), 0);
        const out = new LineWriter();
        out.push(flags.json ? JSON.stringify({ entries: m.entries.length, files: files.length, bytes, chunkSize: m.chunkSize, hash: m.hash }) : `published ${m.entries.length} entries (${files.length} files, ${fmtBytes(bytes)}), manifest ${m.hash.slice(0, 16)}…`);
        out.flush();
      }),
    );

  hsm
    .command('mount')
    .description('Mount SOURCE (an http(s):// URL of a published tree, or a local directory) at TARGET and serve it until unmounted (in the foreground, where SIGINT/SIGTERM unmount, unless --background).')
    .argument('<source>', 'http(s):// URL or directory of a published tree')
    .argument('<target>', 'an empty directory on ext4, xfs or btrfs')
    .option('--state-dir <dir>', 'range map and cached manifest (default /var/lib/fan/hsm/<id>); keep it off the target filesystem')
    .option('--backing <dir>', 'where the placeholders live, on the target\'s filesystem (default .<name>.fan-hsm next to TARGET)')
    .option('--timeout <ms>', 'deadline of one source request; a reader gets EIO after it (default 30000)', positiveInt('--timeout'))
    .option('--max-cache-size <size>', 'keep hydrated content under this size, evicting least recently fetched files', parseSize('--max-cache-size'))
    .option('--allow-before-durable', 'answer a read once its chunks are written and make them durable within 100 ms (faster cold reads; a crash in between costs a refetch). Default: a read waits until its chunks are fdatasync\'ed and recorded in the range map')
    .option('--background', 'detach once the tree is reachable: print the mounted line and return; the daemon logs to <run dir>/<id>.log and stops on `fan hsm unmount`')
    .option('--json', 'log as NDJSON')
    .action(
      action(async (source: string, target: string, flags: { stateDir?: string; backing?: string; timeout?: number; maxCacheSize?: number; allowBeforeDurable?: boolean; background?: boolean; json?: boolean }) => {
        if (flags.background) return mountInBackground(target);
        // The supervisor answers for a dead worker: a stalled stderr reader must never hold it up.
        const errOut = new NonBlockingLines('stderr', {
          flushAfterMs: 0,
          maxQueuedBytes: LOG_MAX_QUEUED_BYTES,
          exitOnEpipe: false,
          dropNotice: (n) =>
            flags.json
              ? JSON.stringify({ time: new Date().toISOString(), type: 'dropped', count: n, reason: "stderr's reader did not keep up" })
              : `fan hsm: ${n} log lines dropped: stderr's reader did not keep up`,
        });
        const log = (msg: string): void => {
          errOut.push(flags.json ? JSON.stringify({ time: new Date().toISOString(), type: 'log', message: msg }) : `fan hsm: ${msg}`);
        };
        const h = await mountTree({ source, target, stateDir: flags.stateDir, backing: flags.backing, timeoutMs: flags.timeout, maxCacheSize: flags.maxCacheSize, syncBeforeAllow: !flags.allowBeforeDurable, log });
        const out = new LineWriter();
        const line = flags.json ? JSON.stringify({ type: 'mounted', source, target: h.target, backing: h.backing, stateDir: h.stateDir }) : `mounted ${source} at ${h.target} (state ${h.stateDir})`;
        if (process.env[DETACHED_ENV] === '1' && process.send) {
          // Started by --background: the parent prints the line and returns.
          process.send({ line });
          process.disconnect();
        } else {
          out.push(line);
          out.flush();
        }
        onShutdown(() => h.unmount(true));
        await h.done;
        await errOut.close(LOG_CLOSE_MS);
        process.exit(0);
      }),
    );

  hsm
    .command('unmount')
    .description('Make TARGET unreachable, then stop its daemon. Refuses while files in it are open, unless --force (lazy unmount).')
    .argument('<target>', 'a mounted target')
    .option('--force', 'detach even if busy; processes that keep files open may then read zeros in holes')
    .action(
      action(async (target: string, flags: { force?: boolean }) => {
        await ask([target], () => ({ op: 'unmount', force: flags.force ?? false }));
      }),
    );

  hsm
    .command('evict')
    .description('Punch fetched content out of files (directories: every file under them). Files that are open, local (modified) or pinned are kept, with the reason.')
    .argument('<paths...>', 'files or directories in a mounted tree')
    .option('--json', 'one JSON line per file')
    .action(
      action(async (paths: string[], flags: { json?: boolean }) => {
        const r = await ask(paths, (p) => ({ op: 'evict', paths: p }));
        const results = r['results'] as { path: string; evicted: boolean; reason?: string }[];
        const out = new LineWriter();
        for (const x of results) out.push(flags.json ? JSON.stringify(x) : x.evicted ? `evicted ${x.path}` : `kept    ${x.path}: ${x.reason ?? ''}`);
        out.flush();
      }),
    );

  for (const op of ['pin', 'unpin'] as const) {
    hsm
      .command(op)
      .description(op === 'pin' ? 'Never evict these files (directories: every file under them); combine with prefetch for an offline copy.' : 'Allow eviction of these files again.')
      .argument('<paths...>', 'files or directories in a mounted tree')
      .action(
        action(async (paths: string[]) => {
          await ask(paths, (p) => ({ op, paths: p }));
        }),
      );
  }

  hsm
    .command('prefetch')
    .description('Fetch these files (directories: every file under them) now, with a progress bar.')
    .argument('<paths...>', 'files or directories in a mounted tree')
    .option('--json', 'NDJSON progress events {type:"progress", path, bytesDone, bytesTotal} and a final result')
    .action(
      action(async (paths: string[], flags: { json?: boolean }) => {
        const out = new LineWriter();
        let bar: cliProgress.SingleBar | undefined;
        const r = await ask(
          paths,
          (p) => ({ op: 'prefetch', paths: p }),
          (line) => {
            if (flags.json) {
              out.push(JSON.stringify(line));
              out.flush();
              return;
            }
            const total = Number(line['bytesTotal']);
            bar ??= new cliProgress.SingleBar({ format: 'prefetch [{bar}] {percentage}% {value}/{total} bytes {file}', hideCursor: true }, cliProgress.Presets.shades_classic);
            if (!bar.isActive) bar.start(total, 0, { file: '' });
            bar.update(Number(line['bytesDone']), { file: String(line['path']) });
          },
        );
        bar?.stop();
        const failed = r['failed'] as { path: string; error: string }[];
        out.push(flags.json ? JSON.stringify(r) : `fetched ${fmtBytes(Number(r['bytesDone']))} of ${fmtBytes(Number(r['bytesTotal']))}`);
        for (const f of flags.json ? [] : failed) out.push(`failed ${f.path}: ${f.error}`);
        out.flush();
        if (failed.length > 0) process.exit(1);
      }),
    );

  hsm
    .command('status')
    .description('Per file state (placeholder, partial n%, present, local; pinned) and totals.')
    .argument('[paths...]', 'files or directories in a mounted tree (default: the current directory)')
    .option('--json', 'one JSON object: {files: [{path, state, percent, pinned, size}], totals, workerPid, fastReads (reads the worker answered natively since it started)}')
    .action(
      action(async (paths: string[], flags: { json?: boolean }) => {
        const list = paths.length > 0 ? paths : ['.'];
        const r = await ask(list, (p) => ({ op: 'status', paths: p }));
        const out = new LineWriter();
        if (flags.json) {
          const { type: _t, ok: _o, ...rest } = r;
          out.push(JSON.stringify(rest));
        } else {
          for (const f of r['files'] as { path: string; state: string; percent: number; pinned: boolean }[]) {
            const state = f.state === 'partial' ? `partial ${f.percent}%` : f.state;
            out.push(`${(state + (f.pinned ? ' pinned' : '')).padEnd(20)} ${f.path}`);
          }
          const t = r['totals'] as Record<string, number>;
          out.push(`# ${t['files']} files: ${t['present']} present, ${t['partial']} partial, ${t['placeholder']} placeholders, ${t['local']} local, ${t['pinned']} pinned; ${fmtBytes(t['presentBytes'] ?? 0)} of ${fmtBytes(t['bytes'] ?? 0)} here`);
        }
        out.flush();
      }),
    );
  return hsm;
}
