/**
 * Decode throughput of `decodeBatch` on recorded batches (see fixtures.ts).
 *
 *   npx tsc -p . && node dist/bench/decode.js [seconds]
 *
 * For each batch kind: warm up, then decode the same 256 KiB batch for at least `seconds`
 * (default 2) and print events/s against the target. The "+ dir.key" rows also read the
 * directory key of every entry (and of both rename entries): the string the path resolver's
 * directory cache is keyed by.
 */
import { decodeBatch } from '../src/kernel/decode.js';
import type { DecodedEvent } from '../src/kernel/events.js';
import { dfidNameTargetBatch, fdBatch, type RecordedBatch } from './fixtures.js';

const TARGET = 2_000_000;
const seconds = Number(process.argv[2] ?? 2);
const WARMUP_MS = 500;

let sink = 0;

function readKeys(events: DecodedEvent[]): void {
  for (const ev of events) {
    if (ev.entry) sink += ev.entry.dir.key.length;
    if (ev.type === 'rename') {
      if (ev.from) sink += ev.from.dir.key.length;
      if (ev.to) sink += ev.to.dir.key.length;
    }
  }
}

function run(batch: RecordedBatch, keys: boolean, ms: number): number {
  const { bytes } = batch;
  let events = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(ms * 1e6));
  let now = start;
  do {
    for (let i = 0; i < 8; i++) {
      const decoded = decodeBatch(bytes);
      if (keys) readKeys(decoded);
      events += decoded.length;
      sink += decoded.length;
    }
    now = process.hrtime.bigint();
  } while (now < deadline);
  return events / (Number(now - start) / 1e9);
}

function fmt(n: number): string {
  return `${(n / 1e6).toFixed(2)} M`;
}

const batches = [dfidNameTargetBatch(), fdBatch()];
console.log(`decodeBatch throughput (node ${process.version}, ${seconds} s per row, target ${fmt(TARGET)} events/s)`);
console.log('');
const rows: { name: string; bytes: number; events: number; rate: number }[] = [];
for (const batch of batches) {
  // Sanity: the batch decodes to the number of events it was built from.
  const n = decodeBatch(batch.bytes).length;
  if (n !== batch.events) throw new Error(`${batch.kind}: decoded ${n} events, built ${batch.events}`);
  for (const keys of batch.kind === 'fd' ? [false] : [false, true]) {
    run(batch, keys, WARMUP_MS);
    const rate = run(batch, keys, seconds * 1000);
    rows.push({ name: batch.kind + (keys ? ' + dir.key' : ''), bytes: batch.bytes.length, events: batch.events, rate });
  }
}
const width = Math.max(...rows.map((r) => r.name.length));
for (const r of rows) {
  const verdict = r.rate >= TARGET ? 'PASS' : 'MISS';
  console.log(
    `${r.name.padEnd(width)}  ${String(r.bytes).padStart(6)} B  ${String(r.events).padStart(6)} events/batch  ` +
      `${fmt(r.rate).padStart(8)} events/s  ${(r.rate / TARGET).toFixed(2)}x target  ${verdict}`,
  );
}
if (sink === 0) console.log('(no events)');
