/**
 * The recorder's in-memory state index (pure).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StateIndex } from '../src/journal/state-index.js';
import type { EntryState } from '../src/watch/index.js';

const file = (ino: number): EntryState => ({ isDir: false, ino, size: 1, mtimeMs: 1, ctimeMs: 1 });
const dir = (ino: number): EntryState => ({ isDir: true, ino, size: 0, mtimeMs: 1, ctimeMs: 1 });
const keys = (ix: StateIndex): string[] => [...ix.entries.keys()].sort();

test('deleteTree removes the entry and everything below it, and nothing else', () => {
  const ix = new StateIndex(new Map([['a', dir(1)], ['a/b', dir(2)], ['a/b/c', file(3)], ['ab', file(4)], ['z', file(5)]]));
  ix.deleteTree('a');
  assert.deepEqual(keys(ix), ['ab', 'z']);
  assert.deepEqual([...ix.below('')], ['ab', 'z']);
});

test('moveTree carries the subtree along and replaces the entry at the target', () => {
  const ix = new StateIndex(new Map([['a', dir(1)], ['a/x', file(2)], ['a/y', dir(3)], ['a/y/z', file(4)], ['b', file(9)]]));
  ix.moveTree('a', 'b');
  assert.deepEqual(keys(ix), ['b', 'b/x', 'b/y', 'b/y/z']);
  assert.equal(ix.get('b')!.ino, 1);
  assert.deepEqual([...ix.below('b')].sort(), ['b/x', 'b/y', 'b/y/z']);
  assert.deepEqual([...ix.below('a')], []);
});

test('entries below a path that has none are linked: a later delete or move of the directory takes them', () => {
  // Named ahead of the index: d/f is known before d itself.
  const ix = new StateIndex();
  ix.set('d/e/f', file(7));
  assert.deepEqual([...ix.below('d')], ['d/e/f']);
  ix.set('d', dir(6));
  ix.moveTree('d', 'm');
  assert.deepEqual(keys(ix), ['m', 'm/e/f']);
  ix.deleteTree('m');
  assert.deepEqual(keys(ix), []);
  assert.deepEqual([...ix.below('')], []);
});

test('moveTree keeps entries already below the target (they were named ahead of the index)', () => {
  const ix = new StateIndex(new Map([['p', dir(1)], ['p/a', file(2)], ['s/r', dir(3)]]));
  ix.moveTree('p', 's');
  assert.deepEqual(keys(ix), ['s', 's/a', 's/r']);
});

test('replaceAll drops every old link', () => {
  const ix = new StateIndex(new Map([['a', dir(1)], ['a/b', file(2)]]));
  ix.replaceAll(new Map([['c', file(3)]]));
  assert.deepEqual(keys(ix), ['c']);
  assert.deepEqual([...ix.below('a')], []);
  assert.deepEqual([...ix.below('')], ['c']);
});
