/**
 * A client process of bench/remote-fanout.ts (started with `fork`, talks over IPC).
 *
 *   remote-fanout-child sink SOCKET ROOT N     N raw connections that read and discard
 *   remote-fanout-child probe SOCKET ROOT N    N connect() clients measuring each create's latency
 *   remote-fanout-child anchor - ROOT MS       a direct watch() (MS batching window), measuring the same
 *
 * Sends `{t:'ready'}` once subscribed; latencies are kept from `{t:'measure'}` on (the warm-up
 * before it is only counted); on `{t:'stop'}` answers `{t:'done', lat, seen, bytes}` (latencies in
 * ms, sorted; the probes' (stamp, latency) pairs; creates seen in all; bytes read by the sinks) and exits. A latency is the receipt time minus the
 * CLOCK_MONOTONIC time in the created file's name (t<ns>, stamped by the generator right before
 * its open(2)).
 * @module
 */
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { connect } from '../src/remote/client.js';
import { watch } from '../src/watch/index.js';
import { rawSubscribe } from './remote-util.js';
import { monoNs } from './watch-util.js';

/** A message from a client process. */
export type FanoutChildMsg = { t: 'ready' } | { t: 'done'; lat: number[]; samples: [stampNs: number, ms: number][]; seen: number; bytes: number } | { t: 'fail'; message: string };

const [mode, sock, root, n] = process.argv.slice(2) as [string, string, string, string];
const count = Number(n);
const lat: number[] = [];
/** Each measured create: its generator stamp (monotonic ns) and its latency, to take apart against the server's trace. */
const samples: [number, number][] = [];
let measuring = false;
let seen = 0;
let bytes = 0;

/** Latency in ms from a created file's name (t<monotonic ns>). */
function record(path: string, now: bigint): void {
  const m = /\/?t(\d+)$/.exec(path);
  if (!m) return;
  seen++;
  if (!measuring) return;
  const ms = Number(now - BigInt(m[1]!)) / 1e6;
  lat.push(ms);
  samples.push([Number(m[1]!), ms]);
}

function send(msg: FanoutChildMsg, then?: () => void): void {
  process.send!(msg, undefined, {}, () => then?.());
}

/** A raw subscribed connection counting what it reads; resolves at the server's first answer (the subscribe ack). */
async function rawSink(): Promise<Socket> {
  const s = await rawSubscribe(sock, root);
  s.on('data', (b: Buffer) => void (bytes += b.length));
  await once(s, 'data');
  return s;
}

async function start(): Promise<() => Promise<void>> {
  if (mode === 'sink') {
    const socks = await Promise.all(Array.from({ length: count }, rawSink));
    return async () => {
      for (const s of socks) s.destroy();
    };
  }
  if (mode === 'probe') {
    const subs = Array.from({ length: count }, () => {
      const sub = connect(sock, { root });
      sub.on('update', (u) => {
        if (u.type !== 'events') return;
        const now = monoNs();
        for (const r of u.events) if (r.kind === 'create') record(r.path, now);
      });
      return sub;
    });
    await Promise.all(subs.map((s) => s.ready));
    return async () => {
      for (const s of subs) await s.close();
    };
  }
  if (mode === 'anchor') {
    const w = watch(root, { debounceMs: count });
    w.on('events', (batch) => {
      const now = monoNs();
      for (const ev of batch) if (ev.type === 'create') record(ev.path, now);
    });
    await w.ready;
    return () => w.close();
  }
  throw new Error(`unknown mode ${mode}`);
}

try {
  const stop = await start();
  process.on('message', (m: { t: string }) => {
    if (m.t === 'measure') measuring = true;
    if (m.t !== 'stop') return;
    void stop().then(() => {
      send({ t: 'done', lat: lat.sort((a, b) => a - b), samples: mode === 'probe' ? samples : [], seen, bytes }, () => process.disconnect());
    });
  });
  send({ t: 'ready' });
} catch (err) {
  send({ t: 'fail', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }, () => process.disconnect());
}
