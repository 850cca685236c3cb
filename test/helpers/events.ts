/**
 * Collect resolved events from a group so tests can wait for and assert exact sequences.
 */
import type { FanotifyGroup, GroupEvent } from '../../src/group.js';
import { PathResolver, isUnder } from '../../src/resolve/index.js';
import type { EventName } from '../../src/kernel/names.js';
import { Waker } from './waker.js';

/** An event reduced to what a test asserts. */
export interface Seen {
  readonly type: string;
  readonly names: readonly EventName[];
  readonly isDir: boolean;
  readonly path?: string;
  readonly oldPath?: string;
  readonly gone?: boolean;
  readonly pid: number;
}

/** Listens on a group, resolves every event in order, and keeps those under `root`. */
export class EventLog {
  readonly seen: Seen[] = [];
  readonly resolver = new PathResolver();
  readonly #waker = new Waker();

  constructor(group: FanotifyGroup, readonly root: string, onEvent?: (ev: GroupEvent) => void) {
    group.listen((ev) => {
      onEvent?.(ev);
      const r = this.resolver.resolve(ev);
      const path = r.path ?? r.oldPath;
      // Path-less events (a deleted inode's deleteSelf) are kept: the test's filesystem is private.
      if (path !== undefined && !isUnder(path, root)) return;
      this.seen.push({ type: ev.type, names: ev.names, isDir: ev.isDir, path: r.path, oldPath: r.oldPath, gone: r.gone, pid: ev.pid });
      this.#waker.wake();
    });
  }

  /** Remove and return everything seen so far. */
  take(): Seen[] {
    return this.seen.splice(0);
  }

  /** Wait until `count` events are held (or `ms` passed), then take them all. */
  async takeAtLeast(count: number, ms = 3000): Promise<Seen[]> {
    await this.#waker.until(() => this.seen.length >= count, ms);
    // Let events of the same burst that are still in the kernel queue arrive too.
    await new Promise((r) => setTimeout(r, 50));
    return this.take();
  }

  close(): void {
    this.resolver.close();
  }
}

/** Compact form for deepEqual: "names|path" or "names|old->new", with "/" for dirs. */
export function brief(s: Seen, root: string): string {
  const rel = (p: string | undefined): string => (p === undefined ? '?' : p === root ? '.' : p.slice(root.length + 1));
  const where = s.oldPath !== undefined ? `${rel(s.oldPath)}->${rel(s.path)}` : rel(s.path);
  return `${s.names.join(',')}${s.isDir ? '/' : ''}|${where}`;
}
