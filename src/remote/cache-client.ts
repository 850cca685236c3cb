/**
 * An example of a cache-coherent remote client: a stat cache of the remote tree, kept equal to the
 * host's tree by applying events, revalidating by id, and rebuilding from `readdir` on invalidate.
 * @packageDocumentation
 */
import type { EventRecord, ObjectRef, StatInfo } from './protocol.js';
import { RemoteError, type RemoteSubscription, type RemoteUpdate } from './client.js';

/** One cached entry. */
export interface CachedEntry {
  readonly object: ObjectRef;
  readonly stat: StatInfo;
}

/**
 * A stat cache of every entry below a subscription's root, keyed by relative path. Feed it the
 * subscription's updates in order ({@link StatCache.run} does); `idle()` resolves once every
 * update received so far is applied.
 */
export class StatCache {
  readonly entries = new Map<string, CachedEntry>();
  /** Full rebuilds done (the first load, then one per invalidate). */
  rebuilds = 0;
  #chain: Promise<void> = Promise.resolve();

  constructor(readonly sub: RemoteSubscription) {}

  /** Load the tree, then apply every update as it arrives. */
  async run(): Promise<void> {
    this.sub.on('update', (u) => {
      this.#chain = this.#chain.then(() => this.apply(u)).catch(() => this.#rebuild());
    });
    await this.sub.ready;
    this.#chain = this.#chain.then(() => this.#rebuild());
    await this.#chain;
  }

  /** Resolves when every update received so far has been applied. */
  async idle(): Promise<void> {
    let seen: Promise<void> | undefined;
    while (seen !== this.#chain) {
      seen = this.#chain;
      await seen;
    }
  }

  /** Apply one update. */
  async apply(u: RemoteUpdate): Promise<void> {
    if (u.type === 'invalidate') return this.#rebuild();
    if (u.type !== 'events') return;
    for (const r of u.events) await this.#record(r);
  }

  async #record(r: EventRecord): Promise<void> {
    if (r.kind === 'delete') return this.#drop(r.path);
    if (r.kind === 'rename' && r.oldPath !== undefined) {
      const moved: [string, CachedEntry][] = [];
      for (const [p, e] of this.entries) if (p === r.oldPath || p.startsWith(`${r.oldPath}/`)) moved.push([r.path + p.slice(r.oldPath.length), e]);
      this.#drop(r.oldPath);
      this.#drop(r.path);
      for (const [p, e] of moved) this.entries.set(p, e);
      if (moved.length === 0 && r.isDir) return this.#load(r.object, r.path);
    }
    await this.#refresh(r.parent, r.name, r.path, r.isDir && r.kind === 'create');
  }

  /** Look an entry up again by its parent's id; a directory just made is listed too. */
  async #refresh(parent: ObjectRef, name: string, path: string, list: boolean): Promise<void> {
    try {
      const e = await this.sub.lookup(parent, name);
      this.entries.set(path, { object: e.object, stat: e.stat });
      if (list && e.stat.type === 'dir') await this.#load(e.object, path);
    } catch (err) {
      // Gone again (its delete follows) or its parent was replaced: nothing to cache now.
      if (!(err instanceof RemoteError)) throw err;
    }
  }

  #drop(path: string): void {
    for (const p of [...this.entries.keys()]) if (p === path || p.startsWith(`${path}/`)) this.entries.delete(p);
  }

  async #rebuild(): Promise<void> {
    this.rebuilds++;
    this.entries.clear();
    const root = this.sub.root;
    if (root) await this.#load(root, '');
  }

  /** Add everything below the directory `object` (at `path`). */
  async #load(object: ObjectRef, path: string): Promise<void> {
    let list;
    try {
      list = await this.sub.readdir(object);
    } catch (err) {
      if (err instanceof RemoteError) return;
      throw err;
    }
    for (const e of list) {
      const p = path === '' ? e.name : `${path}/${e.name}`;
      this.entries.set(p, { object: e.object, stat: e.stat });
      if (e.stat.type === 'dir') await this.#load(e.object, p);
    }
  }
}
