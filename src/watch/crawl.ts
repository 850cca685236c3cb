/**
 * Walking a tree: for moved-in directories, rescans, snapshots and the inode backend.
 * @packageDocumentation
 */
import { readdirSync, lstatSync, type Dirent } from 'node:fs';
import { readdir, lstat } from 'node:fs/promises';
import { joinPath } from '../resolve/paths.js';
import type { IgnoreMatcher } from './ignore.js';

/** What a crawl records of each entry. */
export interface EntryState {
  readonly isDir: boolean;
  readonly ino: number;
  /**
   * Creation time (statx btime) where the filesystem has one (ext4, xfs, btrfs): it tells a new
   * object that reused a deleted one's inode number from the old one. 0 when unknown.
   */
  readonly birthtimeMs?: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

/** Path → state of every entry below a root (the root itself excluded). */
export type TreeState = Map<string, EntryState>;

function stateOf(st: { isDirectory(): boolean; ino: number; size: number; mtimeMs: number; ctimeMs: number; birthtimeMs: number }): EntryState {
  return { isDir: st.isDirectory(), ino: st.ino, birthtimeMs: st.birthtimeMs, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

/**
 * Whether two states are of the same object: same type and inode, and the same birth time when
 * both are known (an inode number is reused as soon as it is freed).
 */
export function sameObject(a: EntryState, b: EntryState): boolean {
  return a.ino === b.ino && a.isDir === b.isDir && (!a.birthtimeMs || !b.birthtimeMs || a.birthtimeMs === b.birthtimeMs);
}

/**
 * Every entry below `dir`, depth first, synchronously. Entries that vanish during the walk are
 * skipped; ignored entries are not entered.
 */
export function crawlSync(dir: string, visit: (path: string, isDir: boolean) => void, ignore?: IgnoreMatcher): void {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const path = joinPath(dir, e.name);
    if (ignore?.ignores(path)) continue;
    const isDir = e.isDirectory();
    visit(path, isDir);
    if (isDir) crawlSync(path, visit, ignore);
  }
}

/** A snapshot of the tree below `root` with lstat data, walked asynchronously. */
export async function snapshotTree(root: string, ignore?: IgnoreMatcher): Promise<TreeState> {
  const state: TreeState = new Map();
  const walk = async (dir: string): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    const subdirs: string[] = [];
    await Promise.all(
      entries.map(async (e) => {
        const path = joinPath(dir, e.name);
        if (ignore?.ignores(path)) return;
        try {
          const st = stateOf(await lstat(path));
          state.set(path, st);
          if (st.isDir) subdirs.push(path);
        } catch {
          // Gone during the walk.
        }
      }),
    );
    for (const d of subdirs) await walk(d);
  };
  await walk(root);
  return state;
}

/**
 * A snapshot of the tree below `root`, synchronously, keyed by path relative to the root. This is
 * the fast form for large trees (no promise per entry).
 */
export function snapshotTreeSync(root: string, ignore?: IgnoreMatcher): TreeState {
  const state: TreeState = new Map();
  const prefix = root === '/' ? 1 : root.length + 1;
  crawlSync(
    root,
    (path) => {
      const st = stateOfPath(path);
      if (st) state.set(path.slice(prefix), st); // else: gone during the walk
    },
    ignore,
  );
  return state;
}

/** lstat one path into an {@link EntryState}, or undefined when it does not exist. */
export function stateOfPath(path: string): EntryState | undefined {
  try {
    // No exception for a missing path: the journal asks about gone paths on every delete.
    const st = lstatSync(path, { throwIfNoEntry: false });
    return st && stateOf(st);
  } catch {
    return undefined; // ENOTDIR, EACCES…: not there as far as we can tell
  }
}

/** The differences from `before` to `after`, as creates, updates and deletes. */
export function diffTrees(
  before: ReadonlyMap<string, EntryState>,
  after: ReadonlyMap<string, EntryState>,
): { type: 'create' | 'update' | 'delete'; path: string; isDir: boolean }[] {
  const out: { type: 'create' | 'update' | 'delete'; path: string; isDir: boolean }[] = [];
  for (const [path, was] of before) {
    const now = after.get(path);
    if (!now || !sameObject(was, now)) out.push({ type: 'delete', path, isDir: was.isDir });
  }
  for (const [path, now] of after) {
    const was = before.get(path);
    if (!was || !sameObject(was, now)) out.push({ type: 'create', path, isDir: now.isDir });
    else if (!now.isDir && (was.mtimeMs !== now.mtimeMs || was.size !== now.size || was.ctimeMs !== now.ctimeMs)) {
      out.push({ type: 'update', path, isDir: false });
    }
  }
  return out;
}
