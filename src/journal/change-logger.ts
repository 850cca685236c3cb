/**
 * Turns watch events into logged changes by comparing what is on disk now with the state index,
 * never by trusting the event alone. An event only says where to look: events that queued up
 * behind an overflow, that the kernel merged, or that name a path already renamed again are
 * checked against the index, so every logged sequence for a path is a valid chain (a create only
 * for something the index lacks, a delete only for something it has) and coalescing is exact.
 * @packageDocumentation
 */
import { crawlSync, stateOfPath, sameObject, type EntryState, type IgnoreMatcher } from '../watch/index.js';
import { isUnder, joinPath } from '../resolve/paths.js';
import type { NewChange, StateUpdate } from './store.js';
import type { StateIndex } from './state-index.js';

/** What an event claims happened at a path. */
export type EventHint = 'create' | 'update' | 'delete';

/** The changes and index updates of one commit. */
export interface PendingCommit {
  readonly changes: NewChange[];
  readonly state: StateUpdate[];
  /**
   * Paths created or updated in this commit since its last delete or rename: a reader sees a
   * commit whole, so another update of one of them says nothing new.
   */
  readonly fresh: Set<string>;
  /**
   * Paths indexed in this commit (kept through renames). An event may have named one from the
   * disk as it is now, ahead of a directory rename still to be applied: see ChangeLogger.#movedAhead.
   */
  readonly indexed: Set<string>;
}

/** An empty commit. */
export function pendingCommit(): PendingCommit {
  return { changes: [], state: [], fresh: new Set(), indexed: new Set() };
}

function sameState(a: EntryState, b: EntryState): boolean {
  return sameObject(a, b) && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

/** Stale paths remembered at most; past that, the oldest are forgotten. */
const MAX_STALE = 10_000;

/** Logs the changes of one root against its state index. Paths are relative to the root. */
export class ChangeLogger {
  /**
   * Paths an event said exist that were gone when it was logged: the object moved on. When a
   * later rename moves a directory above one of them, the moved tree is compared with the disk,
   * or the object would be missing from the index (and the log) at its new place.
   */
  readonly #stale = new Set<string>();

  constructor(
    readonly root: string,
    readonly index: StateIndex,
    readonly ignore: IgnoreMatcher,
  ) {
    this.#prefix = root === '/' ? 1 : root.length + 1;
  }

  /** Length of the root's prefix in absolute paths: slicing it off gives the relative path. */
  readonly #prefix: number;

  /**
   * Bring `rel` in the index in line with the disk, logging the difference. An `update` event on
   * an unchanged stat is still logged: two writes inside one timestamp tick leave the same stat,
   * and a reader between them must learn of the second.
   */
  path(rel: string, hint: EventHint, time: number, out: PendingCommit): void {
    const abs = joinPath(this.root, rel);
    const now = stateOfPath(abs);
    const was = this.index.get(rel);
    if (!now) {
      // Gone without a delete event: deleted, or moved (itself or a directory above it). A
      // rename event on the way says which; remember the path for the directory's case. So
      // is a delete of a path the index never had: it was named ahead of the index.
      if (hint !== 'delete' || !was) this.#remember(rel);
      if (was) this.#deleted(rel, was, time, out);
      return;
    }
    if (!was) {
      this.#created(rel, abs, now, time, out);
      return;
    }
    if (!sameObject(was, now)) {
      this.#deleted(rel, was, time, out);
      this.#created(rel, abs, now, time, out);
      return;
    }
    if ((hint === 'update' || (!now.isDir && !sameState(was, now))) && !out.fresh.has(rel)) {
      out.changes.push({ time, kind: 'update', path: rel, isDir: now.isDir });
      out.fresh.add(rel);
    }
    this.#set(rel, now, time, out);
  }

  /**
   * A rename from `from` to `to` (either may be outside the root: undefined). Logged as one
   * rename when the index knows the source and the disk shows the same object at the target;
   * otherwise (renamed again since, never seen, or named ahead of the index) as whatever both
   * paths now differ by.
   */
  rename(from: string | undefined, to: string | undefined, isDir: boolean, time: number, out: PendingCommit): void {
    if (from !== undefined && to !== undefined) {
      const was = this.index.get(from);
      const now = stateOfPath(joinPath(this.root, to));
      if (was && now && sameObject(was, now) && this.#canRenameTo(from, to)) {
        out.changes.push({ time, kind: 'rename', path: to, oldPath: from, isDir });
        out.fresh.clear();
        out.state.push({ op: 'move', from, to });
        this.index.moveTree(from, to);
        // The file is indexed as it is now, but its content may have changed since the index last
        // saw it (written after the rename, those events still queued): a rename says nothing of
        // content, and if those events are lost (a stop), a restart's reconcile would find the
        // index equal to the disk. So such a change is logged here.
        if (!now.isDir && (now.size !== was.size || now.mtimeMs !== was.mtimeMs)) {
          out.changes.push({ time, kind: 'update', path: to, isDir: false });
          out.fresh.add(to);
        }
        // A rename changes the inode's ctime: index it as it is now, or a restart sees an update.
        this.#set(to, now, time, out);
        if (now.isDir && (this.#takeStaleUnder(from, to) || this.#movedAhead(from, to, out))) this.#syncTree(to, time, out);
        return;
      }
    }
    if (from !== undefined) this.path(from, 'delete', time, out);
    if (to === undefined) return;
    if (isDir && this.#movedDir(from, to, time, out)) return;
    this.path(to, 'create', time, out);
    // A directory renamed away and back: what was named below it meanwhile is below it now.
    if (this.index.get(to)?.isDir && this.#takeStaleUnder(from, to)) this.#syncTree(to, time, out);
  }

  /**
   * The directory now at `to` may be one the index knows at another path, which the event did not
   * name (its source was resolved ahead of the index): log that move as a rename when it reads
   * right, or the old path would keep its entries.
   * @returns true when handled.
   */
  #movedDir(named: string | undefined, to: string, time: number, out: PendingCommit): boolean {
    const now = stateOfPath(joinPath(this.root, to));
    if (!now?.isDir) return false;
    const from = this.index.dirPathOf(now.ino);
    if (from === undefined || from === to) return false;
    if (!this.#canRenameTo(from, to)) {
      this.path(from, 'delete', time, out);
      return false;
    }
    out.changes.push({ time, kind: 'rename', path: to, oldPath: from, isDir: true });
    out.fresh.clear();
    out.state.push({ op: 'move', from, to });
    this.index.moveTree(from, to);
    this.#set(to, now, time, out);
    // Paths named below the event's source are below `to` now, as are those below `from`.
    if (this.#takeStaleUnder(from, to, named) || this.#movedAhead(from, to, out)) this.#syncTree(to, time, out);
    // Something else may have taken the old path since.
    this.path(from, 'create', time, out);
    return true;
  }

  /**
   * A rename is logged as one only when it reads right in the index's past: the target's
   * directory is known, the target is not inside the source, and has nothing below it (rename(2)
   * replaces only an empty directory). A target resolved ahead of the index (its directory was
   * created or renamed since) fails this.
   */
  #canRenameTo(from: string, to: string): boolean {
    if (isUnder(to, from) || !this.index.below(to).next().done) return false;
    const slash = to.lastIndexOf('/');
    return slash < 0 || this.index.get(to.slice(0, slash))?.isDir === true;
  }

  /**
   * Whether a path this commit indexed below `from`, moved to below `to` by a directory rename,
   * is not what the disk holds there. The event that named it may have read the disk after this
   * rename and a later one (a file created in s/s, read at s once s/s had moved there, then the
   * rename of s): then the rename carried it where it never was.
   */
  #movedAhead(from: string, to: string, out: PendingCommit): boolean {
    let wrong = false;
    for (const p of [...out.indexed]) {
      if (p === from || !isUnder(p, from)) continue;
      const q = to + p.slice(from.length);
      out.indexed.add(q);
      if (wrong) continue;
      const was = this.index.get(q);
      if (!was) continue;
      const now = stateOfPath(joinPath(this.root, q));
      if (!now || !sameObject(was, now)) wrong = true;
    }
    return wrong;
  }

  /** Forget every stale path (a reconciliation just compared the whole root with the disk). */
  clearStale(): void {
    this.#stale.clear();
  }

  #remember(rel: string): void {
    this.#stale.add(rel);
    if (this.#stale.size > MAX_STALE) this.#stale.delete(this.#stale.values().next().value!);
  }

  /** Drop the stale paths below any of `dirs`; true when there were any. */
  #takeStaleUnder(...dirs: (string | undefined)[]): boolean {
    let found = false;
    for (const p of this.#stale) {
      if (!dirs.some((d) => d !== undefined && isUnder(p, d))) continue;
      this.#stale.delete(p);
      found = true;
    }
    return found;
  }

  /** Compare everything below directory `rel` with the disk, logging the differences. */
  #syncTree(rel: string, time: number, out: PendingCommit): void {
    const seen = new Set<string>();
    crawlSync(
      joinPath(this.root, rel),
      (path) => {
        const child = path.slice(this.#prefix);
        seen.add(child);
        this.path(child, 'create', time, out);
      },
      this.ignore,
    );
    for (const p of [...this.index.below(rel)]) {
      if (!seen.has(p) && this.index.get(p)) this.path(p, 'delete', time, out);
    }
  }

  #deleted(rel: string, was: EntryState, time: number, out: PendingCommit): void {
    out.changes.push({ time, kind: 'delete', path: rel, isDir: was.isDir });
    out.fresh.clear();
    out.state.push({ op: 'delete', path: rel });
    this.index.deleteTree(rel);
  }

  /**
   * Log a create; a new directory's contents too (events for them may be lost or misnamed). A
   * path named ahead of the index (its directory's own create is still queued) is logged with
   * that directory instead, so that the log always creates a directory before its contents.
   */
  #created(rel: string, abs: string, now: EntryState, time: number, out: PendingCommit): void {
    const slash = rel.lastIndexOf('/');
    if (slash > 0) {
      const parent = rel.slice(0, slash);
      if (!this.index.get(parent) && stateOfPath(joinPath(this.root, parent))?.isDir) {
        this.path(parent, 'create', time, out);
        if (this.index.get(rel)) return;
      }
    }
    out.changes.push({ time, kind: 'create', path: rel, isDir: now.isDir });
    out.fresh.add(rel);
    this.#set(rel, now, time, out);
    if (!now.isDir) return;
    crawlSync(
      abs,
      (path) => {
        const st = stateOfPath(path);
        const child = path.slice(this.#prefix);
        if (!st || this.index.get(child)) return;
        out.changes.push({ time, kind: 'create', path: child, isDir: st.isDir });
        out.fresh.add(child);
        this.#set(child, st, time, out);
      },
      this.ignore,
    );
  }

  #set(rel: string, st: EntryState, time: number, out: PendingCommit): void {
    // A directory has one path: one the index still holds elsewhere is stale (a crawl that raced
    // a rename saw it twice, or its move was never named).
    const other = st.isDir ? this.index.dirPathOf(st.ino) : undefined;
    this.index.set(rel, st);
    out.state.push({ op: 'set', path: rel, state: st });
    out.indexed.add(rel);
    if (other !== undefined && other !== rel && !isUnder(rel, other)) this.path(other, 'delete', time, out);
  }
}

/**
 * Drop directories a crawl saw twice because they were renamed while it ran: of two paths with
 * the same directory inode, keep the one that holds it now (with the entries below it), and
 * forget the other and everything below it.
 */
export function withoutDuplicateDirs(root: string, tree: Map<string, EntryState>): Map<string, EntryState> {
  const byIno = new Map<number, string>();
  const stale: string[] = [];
  for (const [rel, st] of tree) {
    if (!st.isDir) continue;
    const other = byIno.get(st.ino);
    if (other === undefined) {
      byIno.set(st.ino, rel);
      continue;
    }
    const here = stateOfPath(joinPath(root, rel));
    const keepThis = here !== undefined && sameObject(here, st);
    stale.push(keepThis ? other : rel);
    if (keepThis) byIno.set(st.ino, rel);
  }
  if (stale.length === 0) return tree;
  for (const rel of [...tree.keys()]) if (stale.some((d) => isUnder(rel, d))) tree.delete(rel);
  return tree;
}
