/**
 * One watcher in its own process, driven by the watch benchmarks (see bench/watch-util.ts).
 *
 *   node --expose-gc dist/bench/watch-child.js ours|parcel|chokidar|none DIR [--debounce MS] [--report 0|1]
 *
 * Loads the tool, then times the call that starts watching DIR until the watch is live (ours:
 * the `ready` promise; parcel: `await subscribe()`; chokidar: its 'ready' event with
 * `ignoreInitial: true`). Then it prints one JSON line `{"t":"ready", readyMs, rssMiB, rssGcMiB,
 * …}` (RSS right after ready, and after two full GCs), one `{"t":"ev", at, items}` line per
 * delivered batch (`at`: CLOCK_MONOTONIC ns when the callback ran; chokidar delivers one event per
 * call), and answers JSON commands on stdin: `{"c":"stats"}` (event counters, events outside DIR,
 * rescans, RSS) and `{"c":"close"}`.
 *
 * Files must be changed by another process: our watcher does not report the changes its own
 * process makes (the group ignores its own pid).
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setImmediate as tick } from 'node:timers/promises';

type Item = { type: string; path: string; oldPath?: string };

const [tool, dirArg, ...rest] = process.argv.slice(2);
let debounceMs: number | undefined;
let report = true;
for (let i = 0; i < rest.length; i++) {
  if (rest[i] === '--debounce') {
    const n = Number(rest[++i]);
    debounceMs = n >= 0 ? n : undefined;
  } else if (rest[i] === '--report') report = rest[++i] !== '0';
}
if (!tool || !dirArg) {
  process.stderr.write('usage: watch-child ours|parcel|chokidar|none DIR [--debounce MS] [--report 0|1]\n');
  process.exit(2);
}
const dir: string = dirArg;

function send(msg: unknown): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

function mem(): { rss: number; hwm: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) / 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

const counters = { events: 0, batches: 0, outside: 0, rescans: 0, errors: 0 };
const outsideSample: string[] = [];
const prefix = dir.endsWith('/') ? dir : `${dir}/`;
const inside = (p: string | undefined): boolean => p === undefined || p === dir || p.startsWith(prefix);

function onBatch(items: Item[]): void {
  const at = process.hrtime.bigint();
  counters.batches++;
  counters.events += items.length;
  for (const it of items) {
    if (it.type === 'rescan') counters.rescans++;
    if (it.type === 'error') counters.errors++;
    if (!inside(it.path) || !inside(it.oldPath)) {
      counters.outside++;
      if (outsideSample.length < 10) outsideSample.push(`${it.type} ${it.oldPath ? `${it.oldPath} -> ` : ''}${it.path}`);
    }
  }
  if (report) send({ t: 'ev', at: String(at), n: items.length, items: items.slice(0, 500) });
}

async function main(): Promise<void> {
  let close: () => Promise<void> = async () => {};
  let info: { backend: string; readyMs: number } | undefined;
  let readyMs: number;
  if (tool === 'ours') {
    const { watch } = await import('../src/watch/index.js');
    const t0 = performance.now();
    const sub = watch(dir, debounceMs === undefined ? {} : { debounceMs });
    const ready = await sub.ready;
    readyMs = performance.now() - t0;
    info = { backend: ready.backend, readyMs: ready.readyMs };
    sub.on('events', (batch) =>
      onBatch(batch.map((e) => (e.type === 'rename' ? { type: e.type, path: e.path, oldPath: e.oldPath } : { type: e.type, path: e.path }))),
    );
    close = () => sub.close();
  } else if (tool === 'parcel') {
    const parcel = await import('@parcel/watcher');
    const t0 = performance.now();
    const s = await parcel.subscribe(dir, (err, events) => {
      if (err) onBatch([{ type: 'error', path: String(err) }]);
      else onBatch(events.map((e) => ({ type: e.type, path: e.path })));
    });
    readyMs = performance.now() - t0;
    close = () => s.unsubscribe();
  } else if (tool === 'chokidar') {
    const chokidar = await import('chokidar');
    const t0 = performance.now();
    const w = chokidar.watch(dir, { ignoreInitial: true });
    await new Promise<void>((resolve, reject) => {
      w.once('ready', () => resolve());
      w.once('error', reject);
    });
    readyMs = performance.now() - t0;
    w.on('all', (type, path) => onBatch([{ type, path }]));
    w.on('error', (err) => onBatch([{ type: 'error', path: String(err) }]));
    close = () => w.close();
  } else if (tool === 'none') {
    readyMs = 0;
  } else {
    throw new Error(`unknown tool ${tool}`);
  }
  const rss = mem().rss;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    await tick();
    gc();
  }
  const after = mem();
  send({
    t: 'ready',
    readyMs,
    ...(info ? { info } : {}),
    rssMiB: rss,
    rssGcMiB: after.rss,
    heapGcMiB: process.memoryUsage().heapUsed / 1024 / 1024,
    hwmMiB: after.hwm,
  });

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd: { c?: string };
    try {
      cmd = JSON.parse(line) as { c?: string };
    } catch {
      return;
    }
    if (cmd.c === 'stats') {
      const m = mem();
      send({ t: 'stats', ...counters, outsideSample, rssMiB: m.rss, hwmMiB: m.hwm });
    } else if (cmd.c === 'close') {
      rl.close();
      void close().finally(() => process.stdout.write('', () => process.exit(0)));
    }
  });
  rl.on('close', () => {
    void close().finally(() => process.exit(0));
  });
}

main().catch((err: unknown) => {
  send({ t: 'fail', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 100);
});
