/**
 * The recorder's in-memory copy of a root's state index: the last known state of every path,
 * with each directory's children, so that a directory's delete or rename is O(its subtree), not
 * O(the root).
 * @packageDocumentation
 */
import type { EntryState } from '../watch/index.js';

/** The parent of a root-relative path (`''` for the root's own entries). */
function parentOf(rel: string): string {
  const slash = rel.lastIndexOf('/');
  return slash < 0 ? '' : rel.slice(0, slash);
}

/**
 * Paths relative to the root → last known state, mirroring the store's `state` table.
 *
 * Entries may exist below a path that has none: events are resolved to paths as of when they were
 * read, which can be ahead of the index (a file created in a directory whose own create or
 * rename-in is still queued). Such paths are linked into the tree all the same, so a later delete
 * or rename of the directory takes them along.
 */
export class StateIndex {
  readonly #entries: Map<string, EntryState>;
  /** Path (`''`: the root) → its children that are entries or have entries below them. */
  readonly #children = new Map<string, Set<string>>();
  /** Inode → path of every directory entry (a directory has one path; files may have several). */
  readonly #dirs = new Map<number, string>();

  constructor(entries: Map<string, EntryState> = new Map()) {
    this.#entries = entries;
    for (const [rel, st] of entries) {
      this.#link(rel);
      if (st.isDir) this.#dirs.set(st.ino, rel);
    }
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Every entry: read-only, for diffing against a crawl. */
  get entries(): ReadonlyMap<string, EntryState> {
    return this.#entries;
  }

  get(rel: string): EntryState | undefined {
    return this.#entries.get(rel);
  }

  set(rel: string, state: EntryState): void {
    const was = this.#entries.get(rel);
    if (!was) this.#link(rel);
    else if (was.isDir) this.#forgetDir(rel, was);
    this.#entries.set(rel, state);
    if (state.isDir) this.#dirs.set(state.ino, rel);
  }

  /** The path of the directory entry with this inode, if any. */
  dirPathOf(ino: number): string | undefined {
    return this.#dirs.get(ino);
  }

  /** Paths strictly below `rel` that are entries, parents before children. */
  *below(rel: string): Generator<string> {
    for (const p of this.#linkedBelow(rel)) if (this.#entries.has(p)) yield p;
  }

  /** Remove `rel` and everything below it. */
  deleteTree(rel: string): void {
    if (!this.#children.has(rel)) {
      // A file, or an empty directory: the common case, without walking.
      const st = this.#entries.get(rel);
      if (st?.isDir) this.#forgetDir(rel, st);
      this.#entries.delete(rel);
      this.#unlink(rel);
      return;
    }
    for (const p of [...this.#linkedBelow(rel), rel]) {
      const st = this.#entries.get(p);
      if (st?.isDir) this.#forgetDir(p, st);
      this.#entries.delete(p);
      this.#children.delete(p);
    }
    this.#unlink(rel);
  }

  #forgetDir(rel: string, st: EntryState): void {
    if (this.#dirs.get(st.ino) === rel) this.#dirs.delete(st.ino);
  }

  /**
   * Move `from` and everything below it to `to`. An entry at `to` is replaced; entries below
   * `to` stay (rename(2) only replaces an empty directory, so they were named ahead of the index).
   */
  moveTree(from: string, to: string): void {
    if (from === to) return;
    const moved: [string, EntryState][] = [];
    const self = this.#entries.get(from);
    if (self) moved.push([to, self]);
    for (const p of this.below(from)) moved.push([to + p.slice(from.length), this.#entries.get(p)!]);
    this.deleteTree(from);
    const replaced = this.#entries.get(to);
    if (replaced) {
      if (replaced.isDir) this.#forgetDir(to, replaced);
      this.#entries.delete(to);
      if (!this.#children.has(to)) this.#unlink(to);
    }
    for (const [p, st] of moved) this.set(p, st);
  }

  /** Replace the whole index. */
  replaceAll(entries: ReadonlyMap<string, EntryState>): void {
    this.#entries.clear();
    this.#children.clear();
    this.#dirs.clear();
    for (const [rel, st] of entries) this.set(rel, st);
  }

  *#linkedBelow(rel: string): Generator<string> {
    const kids = this.#children.get(rel);
    if (!kids) return;
    for (const k of [...kids]) {
      yield k;
      yield* this.#linkedBelow(k);
    }
  }

  /** Link `rel` and its unlinked ancestors into the tree. */
  #link(rel: string): void {
    for (let p = rel; p !== ''; ) {
      const parent = parentOf(p);
      const kids = this.#children.get(parent);
      if (kids) {
        kids.add(p);
        return;
      }
      this.#children.set(parent, new Set([p]));
      p = parent;
    }
  }

  /** Unlink `rel`, and ancestors left with neither an entry nor children. */
  #unlink(rel: string): void {
    for (let p = rel; p !== ''; ) {
      const parent = parentOf(p);
      const kids = this.#children.get(parent);
      if (!kids) return;
      kids.delete(p);
      if (kids.size > 0) return;
      this.#children.delete(parent);
      if (this.#entries.has(parent)) return;
      p = parent;
    }
  }
}
