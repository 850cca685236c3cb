/**
 * watch: subtree watching with one filesystem mark, renames as one event, overflow never silent.
 * @packageDocumentation
 */
import { existsSync, realpathSync, statSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { FanotifyError } from '../errors.js';
import { FileId } from '../kernel/fileid.js';
import { native } from '../native.js';
import { FilesystemGroup, type FsSubscriber } from './fs-group.js';
import { IgnoreMatcher } from './ignore.js';
import { InodeGroup } from './inode-group.js';
import { RootWatch } from './root.js';
import { Subscription } from './subscription.js';
import { Batcher } from './batch.js';
import { watchUnmounts } from './unmount.js';
import { connect, DEFAULT_SOCKET } from '../remote/client.js';
import type { WatchBackend, WatchEvent, WatchOptions } from './types.js';

export type { WatchEvent, WatchEventType, WatchOptions, WatchBackend, ReadyInfo, RescanReason } from './types.js';
export { Subscription, type SubscriptionEvents } from './subscription.js';
export { IgnoreMatcher } from './ignore.js';
export { crawlSync, snapshotTree, snapshotTreeSync, diffTrees, stateOfPath, sameObject, type TreeState, type EntryState } from './crawl.js';

/**
 * Coalesce a sequence of events the way a batch is coalesced: one create/update/delete per path
 * in first-seen order, create+delete → nothing, delete+create → update; renames keep their place.
 */
export function coalesce(events: Iterable<WatchEvent>): WatchEvent[] {
  const b = new Batcher();
  for (const ev of events) b.add(ev);
  return b.take();
}

const BACKENDS: readonly WatchBackend[] = ['auto', 'fanotify', 'fanotify-inode', 'daemon'];

/** Resolve and check a root: it must be an existing directory. */
function checkRoot(root: string): string {
  const abs = resolvePath(root);
  let real: string;
  try {
    real = realpathSync(abs);
  } catch (err) {
    throw new FanotifyError(`watch: cannot watch ${abs}: ${(err as { code?: string }).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`, (err as { code?: string }).code ?? 'ENOENT');
  }
  if (!statSync(real).isDirectory()) throw new FanotifyError(`watch: ${abs} is not a directory`, 'ENOTDIR');
  return real;
}

function rootKey(root: string): string | undefined {
  try {
    const h = native.nameToHandle(-100, root, 0);
    return FileId.from(native.fsid(root).fsid, h.handleType, h.handle).key;
  } catch {
    return undefined; // A filesystem without handles: root self events are recognised by path.
  }
}

/**
 * Watch one or more directory trees.
 *
 * With CAP_SYS_ADMIN each filesystem gets one fanotify group with one filesystem mark, shared by
 * every root on it: setup is O(1) whatever the tree size, and a file created right after its
 * directory is never missed. Without it, unprivileged inode marks are placed per directory.
 *
 * @example
 * ```ts
 * const sub = watch('/srv/app', { ignore: ['node_modules', '**\/*.log'] });
 * for await (const batch of sub) for (const ev of batch) console.log(ev.type, ev.path);
 * ```
 * @throws FanotifyError for a root that is not a directory, or an unknown backend.
 */
export function watch(root: string | readonly string[], options: WatchOptions = {}): Subscription {
  const startedAt = performance.now();
  const backend = (options.backend ?? 'auto') as WatchBackend;
  if (!BACKENDS.includes(backend)) {
    throw new FanotifyError(`watch: unknown backend "${String(options.backend)}"; choose from ${BACKENDS.join(', ')}`, 'EINVAL');
  }
  const roots = [...new Set((typeof root === 'string' ? [root] : root).map(checkRoot))];
  if (roots.length === 0) throw new FanotifyError('watch: no root given', 'EINVAL');
  const ignores = new Map(roots.map((r) => [r, new IgnoreMatcher(r, options.ignore ?? [])]));
  const sub = new Subscription(roots, {
    debounceMs: options.debounceMs ?? 30,
    autoRescan: options.autoRescan ?? false,
    ignores,
    flushWhen: options.flushWhen,
    coalesce: options.coalesce,
  });

  if (backend === 'auto' || backend === 'fanotify') {
    try {
      startFilesystemBackend(sub, roots, ignores, startedAt, options.unlimitedQueue ?? false, options.fileIds ?? false);
      return sub;
    } catch (err) {
      const denied = err instanceof FanotifyError && err.code === 'EPERM';
      if (backend === 'fanotify' || !denied) throw err;
    }
  }
  const socket = process.env.FAN_SOCKET ?? DEFAULT_SOCKET;
  if (backend === 'daemon' || (backend === 'auto' && existsSync(socket))) {
    startDaemonBackend(sub, roots, options.ignore ?? [], socket, startedAt, () => {
      if (backend === 'daemon') sub.error(roots[0]!, new FanotifyError(`watch: the daemon at ${socket} refused or is not running (start \`fan serve\`)`, 'ECONNREFUSED'));
      else startInodeBackend(sub, roots, ignores, startedAt, options.fileIds ?? false);
    });
    return sub;
  }
  startInodeBackend(sub, roots, ignores, startedAt, options.fileIds ?? false);
  return sub;
}

/**
 * Subscribe through a `fan serve` daemon: it holds the filesystem mark this process may not
 * place. Its records become watch events; its invalidations become rescans.
 */
function startDaemonBackend(
  sub: Subscription,
  roots: readonly string[],
  ignore: readonly string[],
  socket: string,
  startedAt: number,
  fallback: () => void,
): void {
  const remotes = roots.map((root) => ({ root, remote: connect(socket, { root, ignore, clientName: 'fanotify-watch' }) }));
  const closeAll = (): void => {
    for (const r of remotes) void r.remote.close();
  };
  Promise.all(remotes.map((r) => r.remote.ready)).then(
    () => {
      if (sub.closed) return closeAll();
      for (const { root, remote } of remotes) {
        remote.on('update', (u) => {
          const time = Date.now();
          if (u.type === 'events') {
            for (const r of u.events) {
              const path = `${root}/${r.path}`;
              if (r.kind === 'rename') sub.change({ type: 'rename', path, oldPath: `${root}/${r.oldPath ?? ''}`, isDir: r.isDir, time });
              else sub.change({ type: r.kind === 'attrib' ? 'update' : r.kind, path, isDir: r.isDir, time });
            }
          } else if (u.type === 'invalidate') {
            if (u.reason === 'root-gone') sub.end(root, 'root-deleted');
            else sub.overflow();
          } else {
            sub.error(root, new FanotifyError(`watch: the daemon reported: ${u.message}`, u.code));
          }
        });
      }
      sub.start({ backend: 'daemon', close: closeAll }, startedAt);
    },
    () => {
      closeAll();
      if (!sub.closed) fallback();
    },
  );
}

function startFilesystemBackend(
  sub: Subscription,
  roots: readonly string[],
  ignores: ReadonlyMap<string, IgnoreMatcher>,
  startedAt: number,
  unlimitedQueue: boolean,
  fileIds: boolean,
): void {
  const joined: { group: FilesystemGroup; subscriber: FsSubscriber }[] = [];
  try {
    for (const root of roots) {
      const group = FilesystemGroup.forPath(root, unlimitedQueue);
      const watchRoot = new RootWatch(
        root,
        rootKey(root),
        ignores.get(root)!,
        sub,
        { ignoredDirectory: (dir) => group.ignoreDirectory(dir) },
        fileIds,
      );
      const subscriber: FsSubscriber = {
        roots: [watchRoot],
        overflow: () => sub.overflow(),
        error: (path, err) => sub.error(path, err),
      };
      group.add(subscriber);
      joined.push({ group, subscriber });
    }
  } catch (err) {
    for (const j of joined) j.group.remove(j.subscriber);
    throw err;
  }
  const stopUnmounts = watchUnmounts(roots, (root) => sub.end(root, 'unmounted'));
  sub.start(
    {
      backend: 'fanotify',
      close: () => {
        stopUnmounts();
        for (const j of joined) j.group.remove(j.subscriber);
      },
    },
    startedAt,
  );
}

function startInodeBackend(
  sub: Subscription,
  roots: readonly string[],
  ignores: ReadonlyMap<string, IgnoreMatcher>,
  startedAt: number,
  fileIds: boolean,
): void {
  const group = new InodeGroup(
    () => sub.overflow(),
    (err) => sub.error(roots[0]!, err),
  );
  const watchRoots = roots.map(
    (root) =>
      new RootWatch(
        root,
        rootKey(root),
        ignores.get(root)!,
        sub,
        { newDirectory: (dir) => group.markDirectory(dir, false) },
        fileIds,
      ),
  );
  try {
    group.start(watchRoots);
  } catch (err) {
    group.close();
    throw err;
  }
  const stopUnmounts = watchUnmounts(roots, (root) => sub.end(root, 'unmounted'));
  sub.start(
    {
      backend: 'fanotify-inode',
      close: () => {
        stopUnmounts();
        group.close();
      },
    },
    startedAt,
  );
}
