/**
 * Noticing that a watched root's filesystem was unmounted. A filesystem mark just stops
 * reporting when its filesystem goes away, so this watches mounts separately: a mount-namespace
 * mark (FAN_MNT_DETACH, Linux 6.14+, CAP_SYS_ADMIN) when possible, else a 1 s poll.
 * @packageDocumentation
 */
import { FanotifyGroup } from '../group.js';
import { native } from '../native.js';

interface Watched {
  readonly root: string;
  readonly fsid: string;
  readonly onUnmounted: (root: string) => void;
}

const watched = new Set<Watched>();
let detachGroup: FanotifyGroup | undefined;
let pollTimer: NodeJS.Timeout | undefined;

function fsidOf(path: string): string | undefined {
  try {
    return native.fsid(path).fsid.toString('hex');
  } catch {
    return undefined;
  }
}

/** Re-check every root: a root whose path now lies on another filesystem was unmounted. */
function check(): void {
  for (const w of [...watched]) {
    if (fsidOf(w.root) !== w.fsid) {
      watched.delete(w);
      w.onUnmounted(w.root);
    }
  }
  if (watched.size === 0) stop();
}

function start(): void {
  if (detachGroup || pollTimer) return;
  try {
    const group = FanotifyGroup.open({ report: ['mnt'] });
    group.mark('/proc/self/ns/mnt', { kind: 'mntns', events: ['mountDetach'] });
    group.listen(() => check(), { onError: () => {} });
    group.unref();
    detachGroup = group;
  } catch {
    pollTimer = setInterval(check, 1000);
    pollTimer.unref();
  }
}

function stop(): void {
  if (detachGroup) void detachGroup.close();
  detachGroup = undefined;
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = undefined;
}

/**
 * Call `onUnmounted(root)` once when a root's filesystem is unmounted.
 * @returns a function that stops watching these roots.
 */
export function watchUnmounts(roots: readonly string[], onUnmounted: (root: string) => void): () => void {
  const entries: Watched[] = [];
  for (const root of roots) {
    const fsid = fsidOf(root);
    if (fsid === undefined) continue;
    const w = { root, fsid, onUnmounted };
    watched.add(w);
    entries.push(w);
  }
  if (entries.length > 0) start();
  return () => {
    for (const w of entries) watched.delete(w);
    if (watched.size === 0) stop();
  };
}
