/**
 * Remote: fan-out latency and server CPU with many clients, and the effect of a stalled client.
 *
 *   npm run build && node dist/bench/remote-fanout.js [--clients 100] [--rate 20000]
 *        [--seconds 5] [--probes 5]
 *
 * A fresh loop-mounted ext4. `fan serve` runs as a child process (its CPU and memory are read
 * from /proc). A generator child makes `--rate` changes per second: half creates of empty files
 * named with CLOCK_MONOTONIC at creation, half unlinks of the file created 1,000 creates earlier.
 * `--clients` clients subscribe to the root over the unix socket: `--probes` of them are full
 * clients (`connect()`, JSON parsed) that compute each create's latency from its name; the others
 * read and discard their bytes (the server does the same work for every client). The anchor, in
 * the same run: a `watch()` subscriber in this process with the same 2 ms batching window, i.e.
 * the latency of the events before they cross the socket.
 *
 * Phase 1: every client reads. Phase 2: the same, plus one client that never reads; the server's
 * memory must stay bounded and the others' latency unchanged; when the stalled client reads
 * again it must get `invalidate`.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createLoopFs } from '../test/helpers/loopfs.js';
import { connect, type RemoteSubscription } from '../src/remote/client.js';
import { FrameDecoder, encodeFrame } from '../src/remote/protocol.js';
import { watch } from '../src/watch/index.js';
import { cpuDelta, cpuSeconds, fmt, machineNote, memMiB, monoNs, parseFlags, quantile, table, verdict } from './watch-util.js';

const USAGE = 'node dist/bench/remote-fanout.js [--clients N] [--rate CHANGES_PER_S] [--seconds S] [--probes N]';
const o = parseFlags(process.argv.slice(2), { clients: 100, rate: 20000, seconds: 5, probes: 5 }, USAGE);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

/** The generator: creates named with their creation time, unlinks 1,000 creates later. */
const GENERATOR = `
const fs = require('node:fs');
const [dir, rate, seconds] = process.argv.slice(1).map((v, i) => i === 0 ? v : Number(v));
const creates = rate / 2;
const live = [];
let made = 0;
const t0 = process.hrtime.bigint();
const end = t0 + BigInt(Math.round(seconds * 1e9));
function tick() {
  const now = process.hrtime.bigint();
  if (now >= end) { for (const p of live) fs.unlinkSync(p); console.log(made); return; }
  const due = Math.floor(Number(now - t0) / 1e9 * creates);
  while (made < due) {
    const p = dir + '/d' + (made % 10) + '/t' + process.hrtime.bigint();
    fs.writeFileSync(p, '');
    live.push(p);
    made++;
    if (live.length > 1000) fs.unlinkSync(live.shift());
  }
  setImmediate(tick);
}
tick();
`;

interface Phase {
  label: string;
  remote: number[];
  direct: number[];
  serverCpuS: number;
  serverRssMiB: number;
  made: number;
  stalledInvalidate?: boolean;
}

/** Latency in ms from a created file's name (t<monotonic ns>). */
function latencyOf(path: string, now: bigint): number | undefined {
  const m = /\/?t(\d+)$/.exec(path);
  return m ? Number(now - BigInt(m[1]!)) / 1e6 : undefined;
}

function rawSubscribe(sock: string, root: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(sock);
    s.once('error', reject);
    s.once('connect', () => {
      s.write(encodeFrame({ type: 'hello', versions: [1] }));
      s.write(encodeFrame({ type: 'subscribe', sub: 's', root }));
      resolve(s);
    });
  });
}

async function runPhase(label: string, sock: string, server: ChildProcess, root: string, stall: boolean): Promise<Phase> {
  const probes: RemoteSubscription[] = [];
  const remote: number[] = [];
  for (let i = 0; i < o.probes; i++) {
    const sub = connect(sock, { root });
    sub.on('update', (u) => {
      if (u.type !== 'events') return;
      const now = monoNs();
      for (const r of u.events) {
        if (r.kind !== 'create') continue;
        const l = latencyOf(r.path, now);
        if (l !== undefined) remote.push(l);
      }
    });
    await sub.ready;
    probes.push(sub);
  }
  const sinks: Socket[] = [];
  for (let i = o.probes; i < o.clients; i++) {
    const s = await rawSubscribe(sock, root);
    s.on('data', () => undefined);
    sinks.push(s);
  }
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
  const direct: number[] = [];
  const w = watch(root, { debounceMs: 2 });
  w.on('events', (batch) => {
    const now = monoNs();
    for (const ev of batch) {
      if (ev.type !== 'create') continue;
      const l = latencyOf(ev.path, now);
      if (l !== undefined) direct.push(l);
    }
  });
  await w.ready;
  await sleep(300);
  const cpu0 = cpuSeconds(server.pid!);
  const gen = spawn(process.execPath, ['-e', GENERATOR, root, String(o.rate), String(o.seconds)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  gen.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  let peakRss = 0;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, memMiB(server.pid!).rss)), 100);
  await new Promise((r) => gen.once('close', r));
  await sleep(500);
  clearInterval(sampler);
  const cpu = cpuDelta(cpu0, cpuSeconds(server.pid!));
  let stalledInvalidate: boolean | undefined;
  if (stalled) {
    stalled.resume();
    const end = Date.now() + 10_000;
    while (!stalledMsgs.includes('invalidate') && Date.now() < end) await sleep(20);
    stalledInvalidate = stalledMsgs.includes('invalidate');
    stalled.destroy();
  }
  await w.close();
  for (const p of probes) await p.close();
  for (const s of sinks) s.destroy();
  await sleep(300);
  return { label, remote: remote.sort((a, b) => a - b), direct: direct.sort((a, b) => a - b), serverCpuS: cpu.total, serverRssMiB: peakRss, made: Number(out.trim()) || 0, ...(stalledInvalidate === undefined ? {} : { stalledInvalidate }) };
}

async function main(): Promise<void> {
  const note = machineNote();
  const fs = await createLoopFs({ fstype: 'ext4', sizeMiB: 512 });
  const sockDir = mkdtempSync(join(tmpdir(), 'fan-bench-remote-'));
  const sock = join(sockDir, 'fan.sock');
  const server = spawn(process.execPath, [CLI, 'serve', '--socket', sock, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      server.stdout!.once('data', () => resolve());
      server.once('exit', (c) => reject(new Error(`fan serve exited (${String(c)})`)));
    });
    const root = join(fs.dir, 'gen');
    mkdirSync(root);
    for (let i = 0; i < 10; i++) mkdirSync(join(root, `d${i}`));
    const phases = [await runPhase('all clients read', sock, server, root, false), await runPhase('plus one stalled client', sock, server, root, true)];
    const rows = [['phase', 'creates', `remote p50 ms (${o.probes} probes)`, 'remote p99 ms', 'direct watch() p50 ms', 'direct p99 ms', 'p99 remote/direct', 'server CPU % of a core', 'server peak RSS MiB']];
    for (const p of phases) {
      const rp99 = quantile(p.remote, 0.99);
      const dp99 = quantile(p.direct, 0.99);
      rows.push([
        p.label,
        `${p.made} (${fmt(p.remote.length / Math.max(1, o.probes), 0)} per probe)`,
        fmt(quantile(p.remote, 0.5)),
        fmt(rp99),
        fmt(quantile(p.direct, 0.5)),
        fmt(dp99),
        `${fmt(rp99 / dp99, 1)}×`,
        fmt((p.serverCpuS / o.seconds) * 100, 0),
        fmt(p.serverRssMiB, 0),
      ]);
    }
    const [a, b] = phases as [Phase, Phase];
    process.stdout.write(`${note}\n${o.clients} clients, ${o.rate} changes/s for ${o.seconds} s\n\n${table(rows)}\n\n`);
    process.stdout.write(`target p99 ≤ 20 ms: ${verdict(quantile(a.remote, 0.99) <= 20)} (${fmt(quantile(a.remote, 0.99))} ms)\n`);
    process.stdout.write(`stalled client: others' p99 ${fmt(quantile(a.remote, 0.99))} → ${fmt(quantile(b.remote, 0.99))} ms; server peak RSS ${fmt(a.serverRssMiB, 0)} → ${fmt(b.serverRssMiB, 0)} MiB; invalidate on resume: ${b.stalledInvalidate ? 'yes' : 'NO'}\n`);
    const missing = a.remote.length < a.made * o.probes * 0.99 || b.remote.length < b.made * o.probes * 0.99;
    if (missing) process.stdout.write(`note: probes saw ${a.remote.length}/${a.made * o.probes} and ${b.remote.length}/${b.made * o.probes} creates (a probe that overflowed got invalidate)\n`);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await fs.cleanup();
    rmSync(sockDir, { recursive: true, force: true });
  }
}

await main();
