/**
 * The bounded map of the resolvers (pure): what a reader sees after sets, hits, rotations,
 * deletes and replaces, including keys set again after their generation turned old.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LruMap } from '../src/resolve/lru.js';

test('keeps between max/2 and max entries; a hit in the old generation survives the next rotation', () => {
  const m = new LruMap<string, number>(4);
  m.set('a', 1);
  m.set('b', 2);
  m.set('c', 3); // young {a, b} full: it becomes old; young {c}
  assert.equal(m.get('a'), 1); // old hit: back to young {c, a}
  m.set('d', 4); // young full: old {c, a}, young {d}; b dropped
  assert.equal(m.get('b'), undefined);
  assert.deepEqual([...m.entries()], [['c', 3], ['a', 1], ['d', 4]]);
});

test('a key set again after its generation turned old reads its new value everywhere', () => {
  const m = new LruMap<string, string>(4);
  m.set('dir', '/old');
  m.set('x', '/x');
  m.set('w', '/w'); // rotation: old {dir, x}, young {w}
  m.set('dir', '/new'); // young {w, dir}; '/old' stays behind in the old generation
  assert.equal(m.get('dir'), '/new');
  assert.deepEqual([...m.entries()], [['x', '/x'], ['w', '/w'], ['dir', '/new']]);
  // replace() rewrites the value a reader sees, never the shadowed one.
  for (const [key, p] of m.entries()) if (p.startsWith('/new')) m.replace(key, `/moved${p}`);
  assert.equal(m.get('dir'), '/moved/new');
  m.set('y', '/y'); // rotation: the old generation (and the shadowed '/old') goes
  assert.equal(m.get('dir'), '/moved/new');
  m.delete('dir');
  assert.equal(m.get('dir'), undefined);
});

test('delete removes a key from both generations', () => {
  const m = new LruMap<string, string>(4);
  m.set('k', '1');
  m.set('z', 'z');
  m.set('w', 'w');
  m.set('k', '2');
  m.delete('k');
  assert.equal(m.get('k'), undefined);
  assert.deepEqual([...m.entries()], [['z', 'z'], ['w', 'w']]);
});
