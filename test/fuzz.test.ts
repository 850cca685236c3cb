/**
 * Fuzzing of the batch decoder (src/kernel/decode.ts).
 *
 * Property: `decodeBatch(buf)` returns an array of well-formed events or throws a DecodeError;
 * any other exception (a RangeError from a Buffer read, a TypeError…) is a bug. Unmutated
 * batches from encodeBatch decode to exactly what was encoded. No buffer takes long.
 *
 * Inputs, from a seeded PRNG:
 * - purely random buffers of 0..512 bytes (half of them with vers = 3 so they get further);
 * - structured random: valid metadata framing around random records of every known type;
 * - valid batches of random events with random records (checked against their specs);
 * - those batches mutated: bytes flipped, truncated, length fields overwritten with edge
 *   values, two batches spliced, or several of these at once.
 *
 * Reproduce a failure with the seed from the test name:
 *   FUZZ_SEED=0x1234abcd FUZZ_COUNT=1000000 node --test dist/test/fuzz.test.js
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';
import { EventBit } from '../src/kernel/constants.js';
import { decodeBatch } from '../src/kernel/decode.js';
import { encodeEvent, type EventSpec, type FileIdSpec, type RecordSpec } from '../src/kernel/encode.js';
import { DecodeError, type DecodedEvent, type DirEntryRef } from '../src/kernel/events.js';
import { FileId } from '../src/kernel/fileid.js';
import { EVENT_BITS } from '../src/kernel/names.js';
import { mulberry32 } from './helpers/random.js';

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${raw} is not a non-negative integer`);
  return n;
}

const SEED = envInt('FUZZ_SEED', randomInt(0, 2 ** 32)) >>> 0;
const COUNT = envInt('FUZZ_COUNT', 1_000_000);
/** No single buffer may take longer than this to decode (GC pauses included). */
const MAX_MS = envInt('FUZZ_MAX_MS', 250);
const SEED_HEX = `0x${SEED.toString(16).padStart(8, '0')}`;


const rand = mulberry32(SEED);
/** A uniform integer in 0..n-1. */
const below = (n: number): number => (n <= 1 ? 0 : Math.floor((rand() / 2 ** 32) * n));
const chance = (p: number): boolean => rand() / 2 ** 32 < p;
function pick<T>(items: readonly T[]): T {
  return items[below(items.length)]!;
}

function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) b.writeUInt32LE(rand(), i);
  for (; i < n; i++) b[i] = rand() & 0xff;
  return b;
}

// ---------------------------------------------------------------------------------------------
// Random valid events.

const BITS = Object.values(EVENT_BITS) as number[];
const FLAGS = [EventBit.ONDIR, EventBit.EVENT_ON_CHILD];
const NAME_CODE_POINTS = [
  [0x21, 0x7e],
  [0x20, 0x20],
  [0xa1, 0x24f],
  [0x3040, 0x30ff],
  [0x1f300, 0x1f64f],
] as const;
const UNKNOWN_TYPES = [0, 8, 9, 11, 13, 42, 99, 128, 255];
const FSIDS = [randomBytes(8), randomBytes(8), Buffer.alloc(8)];

function randomMask(): number {
  const r = below(10);
  if (r < 5) {
    let m = 0;
    for (let n = 1 + below(3); n > 0; n--) m |= pick(BITS);
    if (chance(0.3)) m |= pick(FLAGS);
    return m >>> 0;
  }
  if (r < 9) return rand(); // any 32-bit mask
  return rand() + (rand() & 0x1fffff) * 2 ** 32; // bits above 31 (exact up to 2^53)
}

function randomName(): string {
  if (chance(0.05)) return '.';
  const len = 1 + below(24);
  let s = '';
  for (let i = 0; i < len; i++) {
    const [lo, hi] = chance(0.85) ? NAME_CODE_POINTS[0] : pick(NAME_CODE_POINTS);
    s += String.fromCodePoint(lo + below(hi - lo + 1));
  }
  return s;
}

function randomId(): FileIdSpec {
  const handle = chance(0.6) ? randomBytes(8) : randomBytes(below(41));
  return { fsid: pick(FSIDS), handleType: chance(0.8) ? 1 : rand() | 0, handle };
}

function randomRecord(): RecordSpec {
  switch (below(10)) {
    case 0:
      return { type: 'fid', id: randomId() };
    case 1:
      return { type: 'dfid', id: randomId() };
    case 2:
    case 3:
      return { type: 'dfidName', id: randomId(), name: randomName() };
    case 4:
      return { type: chance(0.5) ? 'oldDfidName' : 'newDfidName', id: randomId(), name: randomName() };
    case 5:
      return { type: 'pidfd', pidfd: pick([-2, -1, 0, 3, rand() | 0]) };
    case 6:
      return { type: 'error', error: rand() | 0, count: rand() };
    case 7:
      return { type: 'range', offset: rand() + (rand() & 0x1fffff) * 2 ** 32, count: rand() };
    case 8:
      return { type: 'mnt', mntId: rand() + (rand() & 0x1fffff) * 2 ** 32 };
    default:
      return { type: 'raw', infoType: pick(UNKNOWN_TYPES), body: randomBytes(below(24)) };
  }
}

function randomEvent(): EventSpec {
  const records: RecordSpec[] = [];
  for (let n = below(5); n > 0; n--) records.push(randomRecord());
  return {
    mask: randomMask(),
    fd: chance(0.5) ? -1 : pick([0, 3, 1000, rand() | 0]),
    pid: chance(0.9) ? below(1 << 22) : rand() | 0,
    records,
  };
}

interface Valid {
  specs: EventSpec[];
  bytes: Buffer;
  /** Offsets and widths of every length-like field, for targeted overwrites. */
  fields: { at: number; width: 2 | 4 }[];
}

function randomValid(): Valid {
  const specs: EventSpec[] = [];
  for (let n = 1 + below(4); n > 0; n--) specs.push(randomEvent());
  const parts = specs.map(encodeEvent);
  const bytes = Buffer.concat(parts);
  const fields: Valid['fields'] = [];
  let ev = 0;
  for (const part of parts) {
    fields.push({ at: ev, width: 4 }, { at: ev + 6, width: 2 });
    for (let at = ev + 24; at < ev + part.length; ) {
      const type = bytes[at]!;
      const len = bytes.readUInt16LE(at + 2);
      fields.push({ at: at + 2, width: 2 });
      if (type === 1 || type === 2 || type === 3 || type === 10 || type === 12) fields.push({ at: at + 12, width: 4 });
      at += len;
    }
    ev += part.length;
  }
  return { specs, bytes, fields };
}

// ---------------------------------------------------------------------------------------------
// Mutations.

const EDGE_VALUES = [0, 1, 3, 4, 23, 24, 0xffff, 0xffffffff];

function flipBytes(buf: Buffer): Buffer {
  const out = Buffer.from(buf);
  if (out.length === 0) return out;
  for (let n = 1 + below(4); n > 0; n--) {
    const i = below(out.length);
    out[i] = chance(0.5) ? out[i]! ^ (1 << below(8)) : rand() & 0xff;
  }
  return out;
}

function truncate(buf: Buffer): Buffer {
  return buf.subarray(0, below(buf.length + 1));
}

function overwriteLength(v: Valid, buf: Buffer): Buffer {
  const out = Buffer.from(buf);
  for (let n = 1 + below(2); n > 0; n--) {
    const f = pick(v.fields);
    if (f.at + f.width > out.length) continue;
    const current = f.width === 4 ? out.readUInt32LE(f.at) : out.readUInt16LE(f.at);
    const r = below(3);
    const value = r === 0 ? pick(EDGE_VALUES) : r === 1 ? current + pick([-4, -3, -2, -1, 1, 2, 3, 4]) : rand();
    if (f.width === 4) out.writeUInt32LE(value >>> 0, f.at);
    else out.writeUInt16LE(value & 0xffff, f.at);
  }
  return out;
}

function splice(a: Buffer, b: Buffer): Buffer {
  return Buffer.concat([a.subarray(0, below(a.length + 1)), b.subarray(below(b.length + 1))]);
}

/** Valid metadata framing around random records of known types with random contents. */
function structuredRandom(): Buffer {
  const parts: Buffer[] = [];
  for (let events = 1 + below(3); events > 0; events--) {
    const records: Buffer[] = [];
    for (let n = below(4); n > 0; n--) {
      const len = chance(0.7) ? 4 * (1 + below(12)) : 4 + below(48);
      const r = randomBytes(len);
      r[0] = pick([1, 2, 3, 4, 5, 6, 7, 10, 12, 1, 2, 2, ...UNKNOWN_TYPES]);
      r.writeUInt16LE(len, 2);
      if ([1, 2, 3, 10, 12].includes(r[0]!) && len >= 16 && chance(0.8)) r.writeUInt32LE(below(len - 19 + 4), 12);
      records.push(r);
    }
    const body = Buffer.concat(records);
    const meta = randomBytes(24);
    meta.writeUInt32LE(24 + body.length, 0);
    meta[4] = 3;
    meta.writeUInt16LE(24, 6);
    parts.push(meta, body);
  }
  if (chance(0.2)) parts.push(randomBytes(below(8)));
  return Buffer.concat(parts);
}

// ---------------------------------------------------------------------------------------------
// Checks.

const TYPES = new Set<string>([...Object.keys(EVENT_BITS), 'unknown']);
const NAMES = new Set<string>(Object.keys(EVENT_BITS));

function checkId(id: FileId | undefined, what: string): void {
  if (id === undefined) return;
  assert.ok(id instanceof FileId, `${what} is not a FileId`);
  assert.equal(id.handle.length, id.handleLength, `${what}.handle is cut short`);
  assert.equal(id.fsidBytes.length, 8, `${what}.fsidBytes is cut short`);
  assert.match(id.fsid, /^[0-9a-f]{16}$/, `${what}.fsid`);
  assert.equal(id.key.length, 2 * (16 + id.handleLength), `${what}.key length`);
  assert.ok(Number.isInteger(id.handleType), `${what}.handleType`);
}

function checkEntry(ref: DirEntryRef | undefined, what: string): void {
  if (ref === undefined) return;
  checkId(ref.dir, `${what}.dir`);
  assert.equal(typeof ref.name, 'string', `${what}.name`);
  assert.ok(ref.name.length > 0, `${what}.name is empty`);
  assert.ok(!ref.name.includes('\0'), `${what}.name holds a NUL`);
}

function checkEvent(ev: DecodedEvent): void {
  assert.equal(typeof ev.type, 'string');
  assert.ok(TYPES.has(ev.type), `unknown type ${ev.type}`);
  assert.ok(Array.isArray(ev.names), 'names is not an array');
  for (const n of ev.names) assert.ok(NAMES.has(n), `unknown name ${String(n)}`);
  if (ev.type === 'unknown') assert.equal(ev.names.length, 0, 'type unknown with names');
  else assert.ok(ev.names.includes(ev.type), `type ${ev.type} not in names ${ev.names.join(',')}`);
  assert.ok(Number.isFinite(ev.mask) && ev.mask >= 0, 'mask');
  assert.ok(Number.isInteger(ev.fd) && Number.isInteger(ev.pid), 'fd/pid');
  assert.equal(typeof ev.isDir, 'boolean');
  checkId(ev.fid, 'fid');
  checkId(ev.dfid, 'dfid');
  checkEntry(ev.entry, 'entry');
  if (ev.type === 'rename') {
    checkEntry(ev.from, 'from');
    checkEntry(ev.to, 'to');
  }
  if (ev.type === 'preAccess' && ev.range) assert.ok(Number.isFinite(ev.range.offset + ev.range.count), 'range');
  if (ev.type === 'fsError' && ev.error !== undefined) assert.ok(Number.isInteger(ev.error + ev.errorCount), 'error');
  if (ev.mntId !== undefined) assert.ok(Number.isFinite(ev.mntId), 'mntId');
  if (ev.pidfd !== undefined) assert.ok(Number.isInteger(ev.pidfd), 'pidfd');
}

/** The records a spec leaves on its event: the last of each kind wins. */
function checkAgainstSpec(ev: DecodedEvent, spec: EventSpec): void {
  assert.equal(ev.mask, spec.mask, 'mask');
  assert.equal(ev.fd, spec.fd ?? -1, 'fd');
  assert.equal(ev.pid, spec.pid ?? 0, 'pid');
  const last = new Map<string, RecordSpec>();
  for (const r of spec.records ?? []) last.set(r.type, r);
  const key = (id: FileIdSpec) => FileId.from(id.fsid, id.handleType, id.handle).key;
  const fid = last.get('fid');
  assert.equal(ev.fid?.key, fid?.type === 'fid' ? key(fid.id) : undefined, 'fid');
  const dfid = last.get('dfid');
  assert.equal(ev.dfid?.key, dfid?.type === 'dfid' ? key(dfid.id) : undefined, 'dfid');
  const entry = last.get('dfidName');
  if (entry?.type === 'dfidName') {
    assert.equal(ev.entry?.name, entry.name, 'entry.name');
    assert.equal(ev.entry.dir.key, key(entry.id), 'entry.dir');
  } else assert.equal(ev.entry, undefined, 'entry');
  const pidfd = last.get('pidfd');
  assert.equal(ev.pidfd, pidfd?.type === 'pidfd' ? pidfd.pidfd : undefined, 'pidfd');
  const mnt = last.get('mnt');
  assert.equal(ev.mntId, mnt?.type === 'mnt' ? mnt.mntId : undefined, 'mntId');
  if (ev.type === 'rename') {
    const from = last.get('oldDfidName');
    const to = last.get('newDfidName');
    assert.equal(ev.from?.name, from?.type === 'oldDfidName' ? from.name : undefined, 'from');
    assert.equal(ev.to?.name, to?.type === 'newDfidName' ? to.name : undefined, 'to');
  }
  if (ev.type === 'preAccess') {
    const range = last.get('range');
    assert.deepEqual(ev.range, range?.type === 'range' ? { offset: range.offset, count: range.count } : undefined, 'range');
  }
  if (ev.type === 'fsError') {
    const error = last.get('error');
    assert.equal(ev.error, error?.type === 'error' ? error.error : undefined, 'error');
    assert.equal(ev.errorCount, error?.type === 'error' ? error.count : undefined, 'errorCount');
  }
}

// ---------------------------------------------------------------------------------------------

type Mode = 'random' | 'structured' | 'valid' | 'flip' | 'truncate' | 'length' | 'splice' | 'combo';

test(`fuzz: decodeBatch returns events or throws DecodeError (FUZZ_SEED=${SEED_HEX} FUZZ_COUNT=${COUNT})`, { timeout: 15 * 60_000 }, (t) => {
  const stats = new Map<Mode, { n: number; threw: number }>();
  let maxMs = 0;
  let maxAt = -1;
  let maxLen = 0;
  let events = 0;
  let base = randomValid();
  let other = randomValid();
  const started = performance.now();

  for (let i = 0; i < COUNT; i++) {
    // A fresh valid batch every few iterations; each is decoded unmutated once, then mutated.
    let mode: Mode;
    let buf: Buffer;
    let specs: EventSpec[] | undefined;
    const r = i % 8;
    if (r === 0) {
      other = base;
      base = randomValid();
      mode = 'valid';
      buf = base.bytes;
      specs = base.specs;
    } else if (r === 1) {
      mode = 'random';
      buf = randomBytes(below(513));
      if (chance(0.5) && buf.length > 4) buf[4] = 3;
    } else if (r === 2) {
      mode = 'structured';
      buf = structuredRandom();
    } else {
      mode = pick(['flip', 'flip', 'truncate', 'length', 'length', 'splice', 'combo'] as const);
      switch (mode) {
        case 'flip':
          buf = flipBytes(base.bytes);
          break;
        case 'truncate':
          buf = truncate(base.bytes);
          break;
        case 'length':
          buf = overwriteLength(base, base.bytes);
          break;
        case 'splice':
          buf = chance(0.2) ? Buffer.concat([base.bytes, other.bytes]) : splice(base.bytes, other.bytes);
          break;
        default:
          buf = base.bytes;
          for (let n = 2 + below(3); n > 0; n--) {
            const m = below(4);
            buf = m === 0 ? flipBytes(buf) : m === 1 ? truncate(buf) : m === 2 ? overwriteLength(base, buf) : splice(buf, other.bytes);
          }
      }
    }

    const s = stats.get(mode) ?? { n: 0, threw: 0 };
    stats.set(mode, s);
    s.n++;
    const t0 = performance.now();
    let decoded: DecodedEvent[] | undefined;
    try {
      decoded = decodeBatch(buf);
    } catch (err) {
      if (!(err instanceof DecodeError)) {
        assert.fail(
          `decodeBatch threw ${err instanceof Error ? err.stack : String(err)}\n` +
            `  seed ${SEED_HEX}, iteration ${i}, mode ${mode}, ${buf.length} bytes:\n  ${buf.toString('hex')}`,
        );
      }
      assert.ok(Number.isInteger(err.offset) && err.offset >= 0 && err.offset <= buf.length, `DecodeError offset ${err.offset}`);
      s.threw++;
    }
    const ms = performance.now() - t0;
    if (ms > maxMs) {
      maxMs = ms;
      maxAt = i;
      maxLen = buf.length;
    }
    if (decoded === undefined) {
      if (specs) assert.fail(`a valid batch did not decode: seed ${SEED_HEX}, iteration ${i}\n  ${buf.toString('hex')}`);
      continue;
    }
    try {
      assert.ok(Array.isArray(decoded));
      events += decoded.length;
      for (const ev of decoded) checkEvent(ev);
      if (specs) {
        assert.equal(decoded.length, specs.length, 'event count');
        decoded.forEach((ev, k) => checkAgainstSpec(ev, specs[k]!));
      }
    } catch (err) {
      assert.fail(
        `${err instanceof Error ? err.message : String(err)}\n` +
          `  seed ${SEED_HEX}, iteration ${i}, mode ${mode}, ${buf.length} bytes:\n  ${buf.toString('hex')}`,
      );
    }
  }

  const seconds = (performance.now() - started) / 1000;
  const modes = [...stats].map(([m, s]) => `${m} ${s.n} (${s.threw} DecodeError)`).join(', ');
  t.diagnostic(`seed ${SEED_HEX}: ${COUNT} buffers in ${seconds.toFixed(1)} s, ${events} events decoded`);
  t.diagnostic(modes);
  t.diagnostic(`slowest buffer: ${maxMs.toFixed(2)} ms (iteration ${maxAt}, ${maxLen} bytes)`);
  assert.ok(maxMs < MAX_MS, `iteration ${maxAt} (${maxLen} bytes) took ${maxMs.toFixed(1)} ms > ${MAX_MS} ms; seed ${SEED_HEX}`);
});

test('large adversarial batches decode in linear time', () => {
  const MiB = 1 << 20;
  const time = (f: () => void): number => {
    const t0 = performance.now();
    f();
    return performance.now() - t0;
  };
  // 1 MiB of bare 24-byte events.
  const bare = Buffer.concat(Array.from({ length: Math.floor(MiB / 24) }, () => encodeEvent({ mask: EventBit.OPEN, fd: 3 })));
  // One 1 MiB event of 4-byte unknown records.
  const manyRecords = Buffer.alloc(24 + MiB);
  manyRecords.writeUInt32LE(manyRecords.length, 0);
  manyRecords[4] = 3;
  manyRecords.writeUInt16LE(24, 6);
  for (let at = 24; at < manyRecords.length; at += 4) {
    manyRecords[at] = 99;
    manyRecords.writeUInt16LE(4, at + 2);
  }
  // An unterminated name at the start of 1 MiB without any NUL.
  const unterminated = Buffer.alloc(24 + 32 + MiB, 0x61);
  unterminated.writeUInt32LE(24 + 32, 0);
  unterminated[4] = 3;
  unterminated.writeUInt16LE(24, 6);
  unterminated.fill(0, 8, 24);
  unterminated[24] = 2;
  unterminated[25] = 0;
  unterminated.writeUInt16LE(32, 26);
  unterminated.writeUInt32LE(4, 24 + 12);
  unterminated.writeInt32LE(1, 24 + 16);

  const ms = {
    bare: time(() => assert.equal(decodeBatch(bare).length, Math.floor(MiB / 24))),
    manyRecords: time(() => assert.equal(decodeBatch(manyRecords).length, 1)),
    unterminated: time(() => assert.throws(() => decodeBatch(unterminated), DecodeError)),
  };
  for (const [name, t] of Object.entries(ms)) assert.ok(t < 2000, `${name}: ${t.toFixed(0)} ms`);
});
