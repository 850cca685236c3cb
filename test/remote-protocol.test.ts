/**
 * The remote protocol without a server: framing, the decoder under a million malformed, oversize,
 * empty and split frames, and message validation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, encodeFrame, frameOf, parseClientMessage, negotiate, type Decoded } from '../src/remote/protocol.js';
import { mulberry32 } from './helpers/random.js';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdTable, MAX_DEAD, type SavedIds } from '../src/remote/ids.js';

test('a frame is a 4-byte big-endian length and UTF-8 JSON', () => {
  const f = encodeFrame({ type: 'ping', req: 7, s: 'é' });
  const json = '{"type":"ping","req":7,"s":"é"}';
  assert.equal(f.readUInt32BE(0), Buffer.byteLength(json));
  assert.equal(f.subarray(4).toString('utf8'), json);
  assert.deepEqual(new FrameDecoder().push(f), [{ ok: true, value: { type: 'ping', req: 7, s: 'é' } }]);
});

test('oversize lengths are fatal from the header alone; empty and garbage frames are skipped in sync', () => {
  const d = new FrameDecoder(100);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(101);
  const out = d.push(Buffer.concat([frameOf('1'), Buffer.from([0, 0, 0, 0]), frameOf('{x'), Buffer.from([0, 0, 0, 2, 0xff, 0xfe]), frameOf('2'), header]));
  assert.deepEqual(
    out.map((r) => (r.ok ? `ok ${String(r.value)}` : `${r.code} ${r.fatal} ${r.message}`)),
    [
      'ok 1',
      'bad-frame false empty frame',
      'bad-frame false frame payload is not JSON',
      'bad-frame false frame payload is not valid UTF-8',
      'ok 2',
      'frame-too-large true frame of 101 bytes exceeds the limit of 100',
    ],
  );
  assert.deepEqual(d.push(frameOf('3')), [], 'nothing after a fatal error');
});

test('a stream that ends inside a frame is reported', () => {
  const d = new FrameDecoder();
  assert.deepEqual(d.push(frameOf('"abc"').subarray(0, 6)), []);
  const end = d.end();
  assert.equal(end.length, 1);
  assert.equal((end[0] as Extract<Decoded, { ok: false }>).message, 'stream ended inside a frame (2 of 5 payload bytes)');
});

test('message validation names the field and never throws', () => {
  assert.deepEqual(parseClientMessage({ type: 'hello', versions: [1] }), { ok: true, message: { type: 'hello', versions: [1] } });
  assert.deepEqual(parseClientMessage({ type: 'stat', req: 1, sub: 's', object: { id: 'a', gen: 0 } }), {
    ok: false,
    message: 'object.gen: Too small: expected number to be >=1',
  });
  assert.equal(parseClientMessage({ type: 'subscribe', sub: 's', root: '/x', extra: 1 }).ok, false);
  assert.equal(parseClientMessage(null).ok, false);
  assert.equal(parseClientMessage([1, 2]).ok, false);
  assert.equal(negotiate([3, 2]), undefined);
  assert.equal(negotiate([2, 1]), 1);
});

/** Random bytes that are not valid UTF-8 JSON (a lone continuation byte first). */
function garbage(rnd: () => number): Buffer {
  const b = Buffer.alloc(1 + (rnd() % 24));
  for (let i = 0; i < b.length; i++) b[i] = rnd() & 0xff;
  b[0] = 0x80 | (b[0]! & 0x3f);
  return b;
}

const VALID: unknown[] = [
  { type: 'hello', versions: [1] },
  { type: 'ping', req: 3 },
  { type: 'subscribe', sub: 'a', root: '/srv', kinds: ['create'] },
  { type: 'stat', req: 9, sub: 'a', object: { id: 'f'.repeat(24), gen: 2 } },
];
const INVALID_JSON = ['{"type":"hello"}', '[]', '"x"', '{"type":"stat","req":-1}', '{"type":"subscribe","sub":"","root":"/"}', 'null', '1e999'];

test('fuzz: 1,000,000 frames of every kind, split at random points, decode exactly', () => {
  const rnd = mulberry32(0x5eed);
  const MAX = 256;
  let frames = 0;
  let valid = 0;
  let invalidMessages = 0;
  let streams = 0;
  while (frames < 1_000_000) {
    streams++;
    const parts: Buffer[] = [];
    const expect: string[] = [];
    const n = 2000 + (rnd() % 2000);
    for (let i = 0; i < n; i++) {
      const k = rnd() % 10;
      if (k < 4) {
        const v = VALID[rnd() % VALID.length];
        parts.push(encodeFrame(v));
        expect.push('ok');
      } else if (k < 6) {
        const s = INVALID_JSON[rnd() % INVALID_JSON.length]!;
        parts.push(frameOf(s));
        expect.push('ok');
      } else if (k < 8) {
        const g = garbage(rnd);
        const h = Buffer.alloc(4);
        h.writeUInt32BE(g.length);
        parts.push(h, g);
        expect.push('bad-frame');
      } else if (k < 9) {
        parts.push(Buffer.alloc(4));
        expect.push('bad-frame');
      } else {
        const text = `"${'x'.repeat(rnd() % (MAX - 2))}"`;
        parts.push(frameOf(text));
        expect.push('ok');
      }
    }
    // End each stream one of three ways: cleanly, inside a frame, or with an oversize length.
    const ending = rnd() % 3;
    if (ending === 1) parts.push(frameOf('{"type":"ping"}').subarray(0, 1 + (rnd() % 10)));
    if (ending === 2) {
      const h = Buffer.alloc(4);
      h.writeUInt32BE(MAX + 1 + (rnd() % 0xffffff));
      parts.push(h, garbage(rnd));
      expect.push('frame-too-large');
    }
    const stream = Buffer.concat(parts);
    const d = new FrameDecoder(MAX);
    const got: Decoded[] = [];
    for (let at = 0; at < stream.length; ) {
      const len = rnd() % 8 === 0 ? 1 + (rnd() % 2048) : 1 + (rnd() % 16);
      got.push(...d.push(stream.subarray(at, at + len)));
      at += len;
    }
    got.push(...d.end());
    if (ending === 1) expect.push('bad-frame');
    assert.equal(got.length, expect.length, `stream ${streams}: ${got.length} results for ${expect.length} frames`);
    for (let i = 0; i < got.length; i++) {
      const g = got[i]!;
      assert.equal(g.ok ? 'ok' : g.code, expect[i], `stream ${streams} frame ${i}`);
      if (g.ok) {
        if (parseClientMessage(g.value).ok) valid++;
        else invalidMessages++;
      }
    }
    frames += n;
  }
  assert.ok(frames >= 1_000_000);
  assert.ok(valid > 300_000 && invalidMessages > 150_000, `valid ${valid}, invalid ${invalidMessages}`);
});

test('fuzz: a saved id table, however damaged, never throws and never names anything outside the root', () => {
  const base = mkdtempSync(join(tmpdir(), 'fan-ids-'));
  const root = join(base, 'root');
  mkdirSync(`${root}/d/e`, { recursive: true });
  writeFileSync(`${root}/d/f`, 'x');
  writeFileSync(`${base}/outside`, 'secret');
  try {
    const table = new IdTable(root);
    const f = table.at('d/f', false).node;
    const e = table.at('d/e', true).node;
    const good = table.save();
    assert.equal(good.nodes.length, 3, 'd, d/e and d/f are saved');
    const again = new IdTable(root, JSON.parse(JSON.stringify(good)) as unknown);
    assert.deepEqual(again.ref(again.root), table.ref(table.root));
    for (const n of [f, e]) {
      const r = again.resolve(table.ref(n));
      assert.ok(r.ok && r.path === table.pathOf(n), `${table.pathOf(n)} keeps its id`);
    }
    const next = mulberry32(20261121);
    const rnd = (): number => next() / 2 ** 32;
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const junk: unknown[] = ['..', '../outside', '', 'd//f', '/etc/passwd', 'd/../../outside', 'd/\0', -1, 0, 1.5, 2 ** 60, null, {}, [], true, 'x'.repeat(5000), f.id, e.id];
    let loaded = 0;
    for (let i = 0; i < 3000; i++) {
      const saved = JSON.parse(JSON.stringify(good)) as { -readonly [K in keyof SavedIds]: unknown } & { nodes: unknown[][] };
      for (let m = 1 + Math.floor(rnd() * 4); m > 0; m--) {
        const what = rnd();
        const nodes = Array.isArray(saved.nodes) ? saved.nodes : undefined;
        const node = nodes && nodes.length > 0 ? pick(nodes) : undefined;
        const bad = structuredClone(pick(junk));
        if (what < 0.6 && Array.isArray(node)) node[Math.floor(rnd() * 7)] = bad;
        else if (what < 0.7 && nodes) nodes.push(pick([Array.isArray(node) ? [...(node as unknown[])] : [], bad, []]) as unknown[]);
        else if (what < 0.8 && nodes) nodes.reverse();
        else (saved as Record<string, unknown>)[pick(['v', 'rootHandle', 'rootId', 'nodes'])] = bad;
      }
      const t = new IdTable(root, saved);
      if (t.size > 1) loaded++;
      for (const n of Array.isArray(saved.nodes) ? saved.nodes : []) {
        if (!Array.isArray(n) || typeof n[0] !== 'string') continue;
        const r = t.resolve({ id: n[0], gen: typeof n[1] === 'number' ? n[1] : 1 });
        if (r.ok) assert.ok(r.abs === root || r.abs.startsWith(`${root}/`), `an id resolved outside the root: ${r.abs}`);
      }
    }
    assert.ok(loaded > 100, `some damaged tables still load their valid part (${loaded})`);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('deleted ids answer stale-object for the newest MAX_DEAD deletes, then unknown-object, oldest first', () => {
  const root = mkdtempSync(join(tmpdir(), 'fan-ids-dead-'));
  try {
    const table = new IdTable(root);
    const extra = 5;
    const refs = [];
    // The files stay (their delete events are told to the table only): a freed inode number
    // reused by the next file would give its id a new generation instead of a new id.
    for (let i = 0; i < MAX_DEAD + extra; i++) {
      writeFileSync(`${root}/f${i}`, '');
      const { node } = table.at(`f${i}`, false);
      if (i < extra + 2) refs.push(table.ref(node));
      table.deleted(`f${i}`, false);
    }
    assert.equal(table.size, MAX_DEAD + 1, 'the root and the newest MAX_DEAD dead ids are kept');
    const codes = refs.map((r) => {
      const res = table.resolve(r);
      return res.ok ? 'ok' : res.code;
    });
    assert.deepEqual(codes, [...Array<string>(extra).fill('unknown-object'), 'stale-object', 'stale-object']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
