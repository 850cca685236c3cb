/**
 * The stat cache against a scripted subscription: answers that run ahead of the records applied
 * so far, as the real server's do when the host keeps changing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { StatCache } from '../src/remote/cache-client.js';
import { RemoteError, type RemoteSubscription, type RemoteUpdate } from '../src/remote/client.js';
import type { DirEntry, EventRecord, ObjectRef, StatInfo } from '../src/remote/protocol.js';

const DIR: StatInfo = { type: 'dir', size: 0, mode: 0o755, uid: 0, gid: 0, nlink: 2, mtimeMs: 0, ctimeMs: 0 };
const FILE: StatInfo = { ...DIR, type: 'file', size: 1, mode: 0o644, nlink: 1 };

/**
 * A host tree the test changes by hand, answering `lookup`/`readdir` by id like the server: from
 * the tree as it is now, whatever records the cache has applied so far.
 */
class ScriptedSubscription extends EventEmitter {
  /** Relative path → [object id, isDir]; '' is the root. */
  readonly tree = new Map<string, [string, boolean]>([['', ['root', true]]]);
  #next = 0;
  readonly ready = Promise.resolve({ root: { id: 'root', gen: 1 } });
  readonly root: ObjectRef = { id: 'root', gen: 1 };

  add(path: string, isDir: boolean): void {
    this.tree.set(path, [`o${this.#next++}`, isDir]);
  }
  move(from: string, to: string): void {
    for (const [p, v] of [...this.tree]) {
      if (p !== from && !p.startsWith(`${from}/`)) continue;
      this.tree.delete(p);
      this.tree.set(to + p.slice(from.length), v);
    }
  }
  remove(path: string): void {
    for (const p of [...this.tree.keys()]) if (p === path || p.startsWith(`${path}/`)) this.tree.delete(p);
  }
  #pathOf(ref: ObjectRef): string {
    for (const [p, [id]] of this.tree) if (id === ref.id) return p;
    throw new RemoteError('stale-object', `${ref.id} is gone`);
  }
  #entry(path: string): DirEntry {
    const [id, isDir] = this.tree.get(path)!;
    return { name: path.slice(path.lastIndexOf('/') + 1), object: { id, gen: 1 }, stat: isDir ? DIR : FILE };
  }
  async lookup(parent: ObjectRef, name: string): Promise<DirEntry> {
    const dir = this.#pathOf(parent);
    const path = dir === '' ? name : `${dir}/${name}`;
    if (!this.tree.has(path)) throw new RemoteError('unknown-object', `no entry "${name}" in that directory`);
    return this.#entry(path);
  }
  async readdir(object: ObjectRef): Promise<DirEntry[]> {
    const dir = this.#pathOf(object);
    const prefix = dir === '' ? '' : `${dir}/`;
    return [...this.tree.keys()].filter((p) => p !== '' && p.startsWith(prefix) && !p.slice(prefix.length).includes('/')).map((p) => this.#entry(p));
  }
  /** A record of a change at `path` as the server names it: against the tree as it is now. */
  record(kind: EventRecord['kind'], path: string, isDir: boolean, oldPath?: string): EventRecord {
    const cut = path.lastIndexOf('/');
    const parentPath = cut < 0 ? '' : path.slice(0, cut);
    const ref = (p: string): ObjectRef => ({ id: this.tree.get(p)?.[0] ?? 'gone', gen: 1 });
    return { kind, object: ref(path), parent: ref(parentPath), name: path.slice(cut + 1), path, isDir, ...(oldPath === undefined ? {} : { oldPath }) };
  }
  send(events: EventRecord[]): void {
    const u: RemoteUpdate = { type: 'events', events };
    this.emit('update', u);
  }
}

function cached(cache: StatCache): string[] {
  return [...cache.entries.keys()].sort();
}

test('a name listed ahead of the records is checked again at its new path after its directory moves', async () => {
  const sub = new ScriptedSubscription();
  const cache = new StatCache(sub as unknown as RemoteSubscription);
  await cache.run();
  // d was made with f in it; the record of d arrives while f still exists, so the listing of d
  // names f before any record does.
  sub.add('d', true);
  sub.add('d/f', false);
  sub.send([sub.record('create', 'd', true)]);
  await cache.idle();
  assert.deepEqual(cached(cache), ['d', 'd/f']);
  // Then d moved to m, and f was created, moved out and deleted within one batching window: the
  // watch reports only the delete at f's last place, never naming m/f.
  sub.move('d', 'm');
  sub.move('m/f', 'g');
  sub.remove('g');
  sub.send([sub.record('rename', 'm', true, 'd'), sub.record('delete', 'g', false)]);
  await cache.idle();
  assert.deepEqual(cached(cache), ['m']);
});
