/**
 * Coalescing rules of a watch batch (pure).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { coalesce, type WatchEvent } from '../src/watch/index.js';
import { FileId } from '../src/kernel/fileid.js';

const ev = (type: 'create' | 'update' | 'delete', path: string, isDir = false): WatchEvent => ({ type, path, isDir, time: 0 });
const mv = (oldPath: string, path: string, isDir = false): WatchEvent => ({ type: 'rename', oldPath, path, isDir, time: 0 });
const show = (events: WatchEvent[]): string[] =>
  events.map((e) => (e.type === 'rename' ? `rename ${e.oldPath}->${e.path}` : `${e.type} ${e.path}`));

test('create/update/delete per path', () => {
  assert.deepEqual(show(coalesce([ev('create', '/a'), ev('update', '/a')])), ['create /a']);
  assert.deepEqual(show(coalesce([ev('create', '/a'), ev('delete', '/a')])), []);
  assert.deepEqual(show(coalesce([ev('delete', '/a'), ev('create', '/a')])), ['update /a']);
  assert.deepEqual(show(coalesce([ev('update', '/a'), ev('delete', '/a')])), ['delete /a']);
  assert.deepEqual(show(coalesce([ev('update', '/b'), ev('update', '/a'), ev('update', '/b')])), ['update /b', 'update /a']);
});

test('a rename keeps its place; later changes of either path come after it', () => {
  assert.deepEqual(show(coalesce([ev('update', '/a'), mv('/a', '/b'), ev('update', '/b')])), ['update /a', 'rename /a->/b', 'update /b']);
});

test('a file created and renamed in one window is a create of the new path', () => {
  assert.deepEqual(show(coalesce([ev('create', '/a'), mv('/a', '/b')])), ['create /b']);
});

test('a directory created with contents and renamed in one window: its contents move with it', () => {
  assert.deepEqual(
    show(coalesce([ev('create', '/r/d', true), ev('create', '/r/d/x'), mv('/r/d', '/r/e', true), ev('update', '/r/e/x')])),
    ['create /r/e', 'create /r/e/x'],
  );
});

test('a file created and renamed over an existing path, then renamed away or deleted: the replaced path is deleted', () => {
  // /b existed before the window: the first rename replaced it, so it must not be forgotten.
  assert.deepEqual(show(coalesce([ev('create', '/a'), mv('/a', '/b'), mv('/b', '/c')])), ['delete /b', 'create /c']);
  assert.deepEqual(show(coalesce([ev('create', '/a'), mv('/a', '/b'), ev('delete', '/b')])), ['delete /b']);
  assert.deepEqual(show(coalesce([ev('create', '/a'), mv('/a', '/b'), ev('update', '/b'), mv('/b', '/c')])), ['delete /b', 'create /c']);
  // The journal's bursts property test found this one: a chain of renames over existing files.
  assert.deepEqual(
    show(coalesce([ev('create', '/x/b'), mv('/x/b', '/d'), mv('/d', '/e'), mv('/e', '/d')])),
    ['delete /e', 'create /d'],
  );
  // A target created in the same window did not exist before it: nothing to delete.
  assert.deepEqual(show(coalesce([ev('create', '/t'), ev('create', '/a'), mv('/a', '/t'), mv('/t', '/c')])), ['create /c']);
});

test('an update is attribOnly only when every update coalesced into it was', () => {
  const attrib = (path: string): WatchEvent => ({ type: 'update', path, isDir: false, time: 0, attribOnly: true });
  assert.deepEqual(coalesce([attrib('/a'), attrib('/a')]), [attrib('/a')]);
  assert.deepEqual(coalesce([attrib('/a'), ev('update', '/a')]), [ev('update', '/a')]);
  assert.deepEqual(coalesce([ev('update', '/a'), attrib('/a')]), [ev('update', '/a')]);
  assert.deepEqual(coalesce([ev('create', '/a'), attrib('/a')]), [ev('create', '/a')]);
});

test('file ids (WatchOptions.fileIds): a coalesced change names the object now at its path', () => {
  const id = (n: number): FileId => FileId.from(Buffer.alloc(8), 1, Buffer.from([n]));
  const withId = (e: WatchEvent, n: number): WatchEvent => ({ ...e, fileId: id(n) }) as WatchEvent;
  const ids = (events: WatchEvent[]): string[] =>
    events.map((e) => `${show([e])[0]} ${'fileId' in e && e.fileId ? e.fileId.handle[0] : '-'}`);
  // An update of the object created in the window, with or without an id of its own.
  assert.deepEqual(ids(coalesce([withId(ev('create', '/a'), 1), ev('update', '/a')])), ['create /a 1']);
  assert.deepEqual(ids(coalesce([withId(ev('create', '/a'), 1), withId(ev('update', '/a'), 1)])), ['create /a 1']);
  // Deleted and made again: the new object.
  assert.deepEqual(ids(coalesce([withId(ev('update', '/a'), 1), ev('delete', '/a'), withId(ev('create', '/a'), 2)])), ['update /a 2']);
  // A delete names no object, and a crawled create (no id) does not inherit the deleted one's.
  assert.deepEqual(ids(coalesce([withId(ev('update', '/a'), 1), ev('delete', '/a')])), ['delete /a -']);
  assert.deepEqual(ids(coalesce([withId(ev('update', '/a'), 1), ev('delete', '/a'), ev('create', '/a')])), ['update /a -']);
  // Created and renamed: the create of the new path keeps the object's id, below a directory too.
  assert.deepEqual(ids(coalesce([withId(ev('create', '/d', true), 1), withId(ev('create', '/d/f'), 2), mv('/d', '/e', true)])), ['create /e 1', 'create /e/f 2']);
  assert.deepEqual(ids(coalesce([withId(mv('/x', '/y'), 3)])), ['rename /x->/y 3']);
});
