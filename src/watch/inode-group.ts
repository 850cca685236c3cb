/**
 * The unprivileged backend: a group reporting file ids with one inode mark per directory
 * (Linux 5.13+ lets any user do this). Setup grows with the number of directories.
 * @packageDocumentation
 */
import { FanotifyGroup } from '../group.js';
import { FileId } from '../kernel/fileid.js';
import { native } from '../native.js';
import { PathResolver } from '../resolve/paths.js';
import { crawlSync } from './crawl.js';
import { WATCH_EVENTS } from './fs-group.js';
import type { RootWatch } from './root.js';

/**
 * An unprivileged group for one subscription. Unprivileged processes cannot open handles
 * (open_by_handle_at needs CAP_DAC_READ_SEARCH), so every marked directory's handle is put in
 * the resolver's cache with its path when it is marked; the cache is unbounded here.
 */
export class InodeGroup {
  readonly #group: FanotifyGroup;
  readonly resolver = new PathResolver({ cacheSize: Number.MAX_SAFE_INTEGER });
  #roots: readonly RootWatch[] = [];

  constructor(
    private readonly onOverflow: () => void,
    private readonly onError: (err: Error) => void,
  ) {
    this.#group = FanotifyGroup.open({ report: ['dfidNameTarget'], ignorePids: [] });
  }

  /** Mark a root and every directory below it (not ignored ones), then start reading. */
  start(roots: readonly RootWatch[]): void {
    this.#roots = roots;
    for (const r of roots) {
      this.markDirectory(r.root, true);
      crawlSync(r.root, (p, isDir) => isDir && this.markDirectory(p, false), r.ignore);
    }
    this.#group.listen(
      (ev) => {
        if (ev.type === 'overflow') return this.onOverflow();
        const paths = this.resolver.resolve(ev);
        const time = Date.now();
        for (const r of this.#roots) r.handle(ev, paths, time);
      },
      { onError: (err) => this.onError(err instanceof Error ? err : new Error(String(err))) },
    );
  }

  /**
   * Mark one directory for its own and its children's events, and teach the resolver its path.
   * A directory that vanished meanwhile is skipped; a root that cannot be marked throws.
   */
  markDirectory(dir: string, isRoot: boolean): void {
    try {
      this.#group.mark(dir, { events: WATCH_EVENTS, onDir: true, onChild: true, dontFollow: true, onlyDir: true });
      const h = native.nameToHandle(-100, dir, 0);
      this.resolver.remember(FileId.from(native.fsid(dir).fsid, h.handleType, h.handle), dir);
    } catch (err) {
      if (isRoot) throw err;
    }
  }

  close(): void {
    void this.#group.close();
    this.resolver.close();
  }
}
