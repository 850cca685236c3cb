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
  /** Updates received so far. */
  #received = 0;
  /**
   * Paths to check again, with the number of updates received when they became unsure. The
   * server names events against the tree as it is when it sends them, so an answer can be ahead of
   * the records applied so far: a readdir may list a name that a rename chain (reported by its
   * ends only) passes through, and a lookup under a directory that is still moving may fail. Each
   * is looked up again through its cached parent once an update sent after it was applied.
   */
  readonly #recheck = new Map<string, number>();

  constructor(readonly sub: RemoteSubscription) {}

  /** Load the tree, then apply every update as it arrives. */
  async run(): Promise<void> {
    this.sub.on('update', (u) => {
      const index = ++this.#received;
      this.#chain = this.#chain.then(() => this.apply(u, index)).catch(() => this.#rebuild());
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

  /** Apply one update (`index`: its number in arrival order). */
  async apply(u: RemoteUpdate, index: number): Promise<void> {
    if (u.type === 'invalidate') return this.#rebuild();
    if (u.type !== 'events') return;
    for (const r of u.events) await this.#record(r);
    const due = [...this.#recheck].filter(([, mark]) => mark < index).map(([p]) => p);
    // Parents first, so a child is looked up through its parent's current id.
    due.sort((a, b) => a.split('/').length - b.split('/').length);
    for (const path of due) {
      this.#recheck.delete(path);
      const slash = path.lastIndexOf('/');
      const parent = slash < 0 ? this.sub.root : this.entries.get(path.slice(0, slash))?.object;
      if (!parent) {
        this.#drop(path);
        continue;
      }
      await this.#refresh(parent, path.slice(slash + 1), path, true, false);
    }
  }

  async #record(r: EventRecord): Promise<void> {
    if (r.kind === 'delete') return this.#drop(r.path);
    if (r.kind === 'rename' && r.oldPath !== undefined) {
      const moved: [string, CachedEntry][] = [];
      for (const [p, e] of this.entries) if (p === r.oldPath || p.startsWith(`${r.oldPath}/`)) moved.push([r.path + p.slice(r.oldPath.length), e]);
      this.#drop(r.oldPath);
      this.#drop(r.path);
      for (const [p, e] of moved) this.entries.set(p, e);
      this.#moveRechecks(r.oldPath, r.path);
    }
    // A directory made or moved here may hold entries that were never named: list it.
    await this.#refresh(r.parent, r.name, r.path, r.isDir && r.kind !== 'update' && r.kind !== 'attrib', true);
  }

  /**
   * Look an entry up by its parent's id (and list it when `list`). When that fails, the path is
   * dropped, or with `unsure` (the parent may still be moving) checked again later.
   */
  async #refresh(parent: ObjectRef, name: string, path: string, list: boolean, unsure: boolean): Promise<void> {
    let e;
    try {
      e = await this.sub.lookup(parent, name);
    } catch (err) {
      if (!(err instanceof RemoteError)) throw err;
      if (unsure) this.#recheck.set(path, this.#received);
      else this.#drop(path);
      return;
    }
    this.entries.set(path, { object: e.object, stat: e.stat });
    if (list && e.stat.type === 'dir') await this.#load(e.object, path);
  }

  /**
   * Unsure paths below a renamed `from` are unsure below `to` now. Left at the old path, a name a
   * listing gave ahead of the records would never be checked: its create, move and delete can
   * coalesce into records that never name it.
   */
  #moveRechecks(from: string, to: string): void {
    for (const [p, mark] of [...this.#recheck]) {
      if (p !== from && !p.startsWith(`${from}/`)) continue;
      this.#recheck.delete(p);
      this.#recheck.set(to + p.slice(from.length), mark);
    }
  }

  #drop(path: string): void {
    for (const p of [...this.entries.keys()]) if (p === path || p.startsWith(`${path}/`)) this.entries.delete(p);
  }

  async #rebuild(): Promise<void> {
    this.rebuilds++;
    this.entries.clear();
    this.#recheck.clear();
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
    const mark = this.#received;
    for (const e of list) {
      const p = path === '' ? e.name : `${path}/${e.name}`;
      this.entries.set(p, { object: e.object, stat: e.stat });
      this.#recheck.set(p, mark);
      if (e.stat.type === 'dir') await this.#load(e.object, p);
    }
  }
}
