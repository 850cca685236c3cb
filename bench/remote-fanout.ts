/**
 * Remote: fan-out latency and server CPU with many clients, and the effect of a stalled client.
 *
 *   npm run build && node dist/bench/remote-fanout.js [--clients 100] [--rate 20000]
 *        [--seconds 5] [--warmup 2] [--probes 5] [--sink-procs 4] [--debounce 2] [--profile DIR]
 *        [--server-flags "--trace-gc …"] [--serve-args "--max-queue-events 2000"]
 *
 * A fresh loop-mounted ext4. `fan serve` runs as a child process (its CPU and memory are read
 * from /proc; `--profile DIR` writes its --cpu-prof there and prints the top functions). A C
 * generator (bench/remote-gen.c) makes `--rate` changes per second: half creates of empty files
 * named with CLOCK_MONOTONIC read right before the creating open(2), half unlinks of the file
 * created 1,000 creates earlier, paced with sleeps. `--clients` connections subscribe to the
 * root over the unix socket: `--probes` full clients (`connect()`, every frame parsed) in one
 * probe process compute each create's latency at receipt; the others are raw connections that
 * read and discard, spread over `--sink-procs` processes (real sockets: the server does the same
 * work for each, but 100 Node runtimes would measure the machine, not the server). The anchor, in
 * the same run and its own process: a direct `watch()` with the server's batching window
 * (`--debounce`, 2 ms as the server's default),
 * i.e. the latency of the same events before they cross the socket.
 *
 * Each phase runs the generator `--warmup` + `--seconds` seconds; latencies and server CPU count
 * only after the warm-up (a freshly started server and fresh client processes first JIT-compile
 * their hot paths and grow their tables: ~1 s of backlog that a long-running server does not have).
 *
 * Phase 1: every client reads. Phase 2: the same, plus one client that never reads; the server's
 * memory must stay bounded and the others' latency unchanged; when the stalled client reads
 * again it must get `invalidate`.
 *
 * @module
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs } from '../test/helpers/loopfs.js';
import { FrameDecoder } from '../src/remote/protocol.js';
import type { FanoutChildMsg } from './remote-fanout-child.js';
import { rawSubscribe } from './remote-util.js';
import { compileGen, cpuDelta, cpuSeconds, fmt, machineNote, memMiB, parseFlags, profileSummary, quantile, table, verdict } from './watch-util.js';

const USAGE = 'node dist/bench/remote-fanout.js [--clients N] [--rate CHANGES_PER_S] [--seconds S] [--probes N] [--sink-procs N] [--warmup S] [--debounce MS] [--profile DIR] [--server-flags "NODE FLAGS"] [--serve-args "FAN SERVE FLAGS"]';
const o = parseFlags(process.argv.slice(2), { clients: 100, rate: 20000, seconds: 5, probes: 5, sinkProcs: 4, warmup: 2, debounce: 2, profile: '', serverFlags: '', serveArgs: '' }, USAGE);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const CHILD = fileURLToPath(new URL('./remote-fanout-child.js', import.meta.url));
const DIRS = 10;

interface Phase {
  label: string;
  remote: number[];
  direct: number[];
  serverCpuS: number;
  serverRssMiB: number;
  made: number;
  /** Creates the probes saw, warm-up included. */
  seen: number;
  sinkMiB: number;
  /** CPU seconds of the probe process, the anchor process and all sink processes. */
  clientCpuS: [number, number, number];
  stalledInvalidate?: boolean;
  /** Where the probes' latency went (from the server's --trace-batches). */
  breakdown: Breakdown;
}

/** Latency segments of the probes' creates, each sorted (ms). */
interface Breakdown {
  /** Generator stamp → the batch reaching the server's feed (kernel, watch layer, batching window). */
  toFeed: number[];
  /** Feed → every subscriber's frame handed to its socket (records, encoding, the write loop). */
  toSocket: number[];
  /** All frames handed over → parsed by the probe (wake-up, read, decode in the probe process; negative when the probe's socket came before the last). */
  toProbe: number[];
  /** The three segments (summed per segment) over the creates whose end-to-end latency is in the worst 1%. */
  worst: [number, number, number];
  /** Probe samples matched to a traced batch. */
  matched: number;
}

/** Take the probes' latencies apart with the server's per-batch trace (lines `RECV SENT FIRST LAST`). */
function breakdown(trace: string, samples: readonly [number, number][]): Breakdown {
  const stamp = (path: string): number => Number(/t(\d+)$/.exec(path)?.[1] ?? NaN);
  const batches = trace
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.length === 4 && f[2] !== '-')
    .map(([recv, sent, first, last]) => ({ recv: Number(recv), sent: Number(sent), first: stamp(first!), last: stamp(last!) }))
    .sort((a, b) => a.first - b.first);
  const rows: [number, number, number, number][] = [];
  for (const [ns, ms] of samples) {
    let lo = 0;
    let hi = batches.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (batches[mid]!.first <= ns) lo = mid;
      else hi = mid - 1;
    }
    const b = batches[lo];
    if (!b || b.first > ns || b.last < ns) continue;
    rows.push([ms, (b.recv - ns) / 1e6, (b.sent - b.recv) / 1e6, (ns + ms * 1e6 - b.sent) / 1e6]);
  }
  const col = (i: number): number[] => rows.map((r) => r[i]!).sort((a, b) => a - b);
  const worst = [...rows].sort((a, b) => b[0] - a[0]).slice(0, Math.max(1, Math.ceil(rows.length / 100)));
  const mean = (i: number): number => worst.reduce((n, r) => n + r[i]!, 0) / worst.length;
  return { toFeed: col(1), toSocket: col(2), toProbe: col(3), worst: [mean(1), mean(2), mean(3)], matched: rows.length };
}

/** A forked client process (sink, probe or anchor). */
class ClientProc {
  readonly proc: ChildProcess;
  readonly #msgs: FanoutChildMsg[] = [];
  #wake: (() => void) | undefined;

  constructor(mode: 'sink' | 'probe' | 'anchor', sock: string, root: string, n: number) {
    this.proc = fork(CHILD, [mode, sock, root, String(n)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.proc.on('message', (m: FanoutChildMsg) => {
      this.#msgs.push(m);
      this.#wake?.();
    });
    this.proc.once('exit', () => this.#wake?.());
  }

  async next<T extends FanoutChildMsg['t']>(t: T, timeoutMs = 30_000): Promise<Extract<FanoutChildMsg, { t: T }>> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.#msgs.shift();
      if (m?.t === 'fail') throw new Error(`client process failed: ${m.message}`);
      if (m?.t === t) return m as Extract<FanoutChildMsg, { t: T }>;
      if (m) continue;
      if ((this.proc.exitCode !== null && this.#msgs.length === 0) || Date.now() > end) throw new Error(`client process gave no ${t} (exit ${String(this.proc.exitCode)})`);
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 200);
      });
    }
  }

  async stop(): Promise<Extract<FanoutChildMsg, { t: 'done' }>> {
    this.proc.send({ t: 'stop' });
    return this.next('done');
  }
}

async function runPhase(label: string, gen: string, sock: string, server: ChildProcess, root: string, stall: boolean, traceFile: string): Promise<Phase> {
  rmSync(traceFile, { force: true });
  const procs: ClientProc[] = [];
  const probe = new ClientProc('probe', sock, root, o.probes);
  const anchor = new ClientProc('anchor', '-', root, o.debounce);
  procs.push(probe, anchor);
  const sinks = o.clients - o.probes;
  const nProcs = Math.max(1, Math.min(o.sinkProcs, sinks));
  for (let i = 0; i < nProcs && sinks > 0; i++) {
    const n = Math.floor(sinks / nProcs) + (i < sinks % nProcs ? 1 : 0);
    procs.push(new ClientProc('sink', sock, root, n));
  }
  for (const p of procs) await p.next('ready');
  let stalled: Socket | undefined;
  const stalledMsgs: string[] = [];
  if (stall) {
    stalled = await rawSubscribe(sock, root);
    const dec = new FrameDecoder(64 << 20);
    stalled.on('data', (b: Buffer) => {
      for (const d of dec.push(b)) if (d.ok) stalledMsgs.push((d.value as { type: string }).type);
    });
    await sleep(100);
    stalled.pause();
  }
  await sleep(300);
  const g = spawn(gen, [root, String(o.rate), String(o.warmup + o.seconds), String(DIRS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  g.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  await sleep(o.warmup * 1000);
  for (const c of [probe, anchor]) c.proc.send({ t: 'measure' });
  const cpu0 = cpuSeconds(server.pid!);
  const procCpu0 = procs.map((c) => cpuSeconds(c.proc.pid!));
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, memMiB(server.pid!).rss)), 100);
  const code = await new Promise((r) => g.once('close', r));
  if (code !== 0) throw new Error(`remote-gen failed (${String(code)})`);
  await sleep(500);
  clearInterval(sampler);
  const cpu = cpuDelta(cpu0, cpuSeconds(server.pid!));
  const procCpu = procs.map((c, i) => cpuDelta(procCpu0[i]!, cpuSeconds(c.proc.pid!)).total);
  let stalledInvalidate: boolean | undefined;
  if (stalled) {
    stalled.resume();
    const end = Date.now() + 10_000;
    while (!stalledMsgs.includes('invalidate') && Date.now() < end) await sleep(20);
    stalledInvalidate = stalledMsgs.includes('invalidate');
    stalled.destroy();
  }
  const [p, a, ...s] = await Promise.all(procs.map((c) => c.stop()));
  await sleep(300);
  // The server appends its trace 64 lines at a time: the last ≤ 63 batches of a phase may be missing (counted as unmatched).
  const trace = existsSync(traceFile) ? readFileSync(traceFile, 'utf8') : '';
  return {
    breakdown: breakdown(trace, p!.samples),
    label,
    remote: p!.lat,
    direct: a!.lat,
    serverCpuS: cpu.total,
    serverRssMiB: peakRss,
    made: Number(out.trim()) || 0,
    seen: p!.seen,
    sinkMiB: s.reduce((n, d) => n + d.bytes, 0) / 2 ** 20,
    clientCpuS: [procCpu[0]!, procCpu[1]!, procCpu.slice(2).reduce((n, c) => n + c, 0)],
    ...(stalledInvalidate === undefined ? {} : { stalledInvalidate }),
  };
}

async function main(): Promise<void> {
  const note = machineNote();
  const fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 512 });
  const work = mkdtempSync(join(tmpdir(), 'fan-bench-remote-'));
  const gen = compileGen(work, 'remote-gen');
  const sock = join(work, 'fan.sock');
  const traceFile = join(work, 'batches.trace');
  const prof = [...(o.profile ? ['--cpu-prof', '--cpu-prof-dir', o.profile] : []), ...o.serverFlags.split(' ').filter(Boolean)];
  const server = spawn(process.execPath, [...prof, CLI, 'serve', '--socket', sock, '--debounce', String(o.debounce), '--trace-batches', traceFile, '--json', ...o.serveArgs.split(' ').filter(Boolean)], { stdio: ['ignore', 'pipe', 'inherit'] });
  server.stdout!.setEncoding('utf8');
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const ready = (s: string): void => {
        out += s;
        if (!out.includes('"type":"ready"')) return;
        server.stdout!.off('data', ready);
        resolve();
      };
      server.stdout!.on('data', ready);
      server.once('exit', (c) => reject(new Error(`fan serve exited (${String(c)})`)));
    });
    // What --server-flags makes the server print (--trace-gc…) goes to stderr.
    if (o.serverFlags) server.stdout!.on('data', (s: string) => process.stderr.write(s));
    const root = join(fs.dir, 'gen');
    mkdirSync(root);
    for (let i = 0; i < DIRS; i++) mkdirSync(join(root, `d${i}`));
    const phases = [await runPhase('all clients read', gen, sock, server, root, false, traceFile), await runPhase('plus one stalled client', gen, sock, server, root, true, traceFile)];
    const rows = [['phase', 'creates (with warm-up)', `remote p50 ms (${o.probes} probes)`, 'remote p99 ms', 'direct watch() p50 ms', 'direct p99 ms', 'p99 remote/direct', 'server CPU % of a core', 'server peak RSS MiB', 'MiB read by sinks', 'CPU % of a core: probes / anchor / sinks']];
    for (const p of phases) {
      const rp99 = quantile(p.remote, 0.99);
      const dp99 = quantile(p.direct, 0.99);
      rows.push([
        p.label,
        `${p.made} (${fmt(p.seen / Math.max(1, o.probes), 0)} seen per probe)`,
        fmt(quantile(p.remote, 0.5)),
        fmt(rp99),
        fmt(quantile(p.direct, 0.5)),
        fmt(dp99),
        `${fmt(rp99 / dp99, 1)}×`,
        fmt((p.serverCpuS / o.seconds) * 100, 0),
        fmt(p.serverRssMiB, 0),
        fmt(p.sinkMiB, 0),
        p.clientCpuS.map((c) => fmt((c / o.seconds) * 100, 0)).join(' / '),
      ]);
    }
    const parts = [['phase', 'creates matched to a batch', 'stamp → server feed p50 / p99 ms', 'feed → all frames handed over p50 / p99 ms', 'handed over → probe parsed p50 / p99 ms', 'worst 1% e2e: mean of the three ms']];
    for (const p of phases) {
      const d = p.breakdown;
      const pq = (xs: number[]): string => `${fmt(quantile(xs, 0.5))} / ${fmt(quantile(xs, 0.99))}`;
      parts.push([p.label, `${d.matched} of ${p.remote.length}`, pq(d.toFeed), pq(d.toSocket), pq(d.toProbe), d.worst.map((x) => fmt(x)).join(' + ')]);
    }
    const [a, b] = phases as [Phase, Phase];
    process.stdout.write(`${note}\n${o.clients} clients (${o.probes} probes in one process, the rest in ${o.sinkProcs} sink processes), ${o.rate} changes/s for ${o.seconds} s after ${o.warmup} s of warm-up, ${o.debounce} ms batching window\n\n${table(rows)}\n\nwhere the probes' latency goes (server --trace-batches):\n\n${table(parts)}\n\n`);
    process.stdout.write(`target p99 ≤ 20 ms: ${verdict(quantile(a.remote, 0.99) <= 20)} (${fmt(quantile(a.remote, 0.99))} ms)\n`);
    process.stdout.write(`stalled client: others' p99 ${fmt(quantile(a.remote, 0.99))} → ${fmt(quantile(b.remote, 0.99))} ms; server peak RSS ${fmt(a.serverRssMiB, 0)} → ${fmt(b.serverRssMiB, 0)} MiB; invalidate on resume: ${b.stalledInvalidate ? 'yes' : 'NO'}\n`);
    const missing = a.seen < a.made * o.probes * 0.99 || b.seen < b.made * o.probes * 0.99;
    if (missing) process.stdout.write(`note: probes saw ${a.seen}/${a.made * o.probes} and ${b.seen}/${b.made * o.probes} creates (a probe that overflowed got invalidate)\n`);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await fs.cleanup();
    rmSync(work, { recursive: true, force: true });
    if (o.profile) process.stdout.write(`\nserver ${profileSummary(o.profile)}\n`);
  }
}

await main();
