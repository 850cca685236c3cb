/**
 * Who a local client is and what it may see. The peer's uid and gid come from SO_PEERCRED (the
 * kernel's word, not the client's); its supplementary groups from /proc/PID/status.
 *
 * Subscribing to a root is decided by the kernel itself: `test -d -r -x ROOT` runs under setpriv
 * with the peer's uid, gid and groups, so ACLs, LSMs and every path component's search bit count
 * exactly as they would for the client's own open(). That costs a process per subscribe, which is
 * rare. Inside a root, where a check is needed per directory an event or a lookup names, the
 * kernel decides too, without a process: faccessat2 under the peer's filesystem credentials on
 * the calling thread (`native.accessAs`), cached per root, peer and directory until that
 * directory changes.
 * @packageDocumentation
 */
import { execFile } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { native } from '../native.js';

/** A local client's identity. */
export interface PeerIdentity {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups (the primary gid included). */
  readonly groups: readonly number[];
}

/** The identity of the process at the other end of a connected unix socket fd. */
export function peerIdentity(fd: number): PeerIdentity {
  const { pid, uid, gid } = native.peerCred(fd);
  let groups: number[] = [gid];
  try {
    const m = /^Groups:\s*([\d ]*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (m) groups = [...new Set([gid, ...m[1]!.trim().split(/\s+/).filter(Boolean).map(Number)])];
  } catch {
    // The peer already exited: its primary group alone (only ever less access).
  }
  return { pid, uid, gid, groups };
}

/** True when the peer may read and search `dir`, decided by the kernel under the peer's credentials. */
export function canSubscribe(peer: PeerIdentity, dir: string): Promise<boolean> {
  if (peer.uid === 0) return Promise.resolve(true);
  const others = peer.groups.filter((g) => g !== peer.gid);
  const args = [
    `--reuid=${peer.uid}`,
    `--regid=${peer.gid}`,
    ...(others.length > 0 ? [`--groups=${others.join(',')}`] : ['--clear-groups']),
    '--',
    '/usr/bin/test',
    '-d',
    dir,
    '-a',
    '-r',
    dir,
    '-a',
    '-x',
    dir,
  ];
  return new Promise((resolve) => {
    execFile('/usr/bin/setpriv', args, { timeout: 5000 }, (err) => resolve(err === null));
  });
}

const R_OK = 4;
const X_OK = 1;
/** Directories remembered per peer identity before that peer's cache starts over. */
const MAX_DIRS_PER_PEER = 10_000;
/** Peer identities remembered per root before the cache starts over. */
const MAX_PEERS = 1_000;

/**
 * True when the peer may search every directory down to `root/dir` and read the last one (to see
 * its names), decided by the kernel under the peer's credentials (`native.accessAs`: ACLs and
 * LSMs count). `dir` is relative; '' is the root, checked at subscribe. A path with a symlink in
 * it (swapped in after the events it names) is refused rather than followed.
 */
function canListBelow(peer: PeerIdentity, root: string, dir: string): boolean {
  if (peer.uid === 0 || dir === '') return true;
  const abs = `${root}/${dir}`;
  try {
    if (realpathSync.native(abs) !== abs) return false;
    return native.accessAs(peer.uid, peer.gid, peer.groups, abs, R_OK | X_OK);
  } catch {
    // Without CAP_SETUID/CAP_SETGID the kernel cannot be asked: refuse rather than guess.
    return false;
  }
}

/**
 * Per served root: which directories each peer identity (uid, gid, groups) may list, as
 * {@link canListBelow} answered. A directory's entry, and those below it, are dropped when the
 * directory changes (its attributes or ACL, or it is created, deleted or renamed), so a later
 * check asks the kernel again.
 */
export class AccessCache {
  readonly #byPeer = new Map<string, Map<string, boolean>>();

  constructor(readonly root: string) {}

  /** May `peer` see the names in directory `dir` (relative to the root)? */
  canList(peer: PeerIdentity, dir: string): boolean {
    if (peer.uid === 0 || dir === '') return true;
    const key = `${peer.uid}:${peer.gid}:${peer.groups.join(',')}`;
    let dirs = this.#byPeer.get(key);
    if (!dirs) {
      if (this.#byPeer.size >= MAX_PEERS) this.#byPeer.clear();
      this.#byPeer.set(key, (dirs = new Map()));
    }
    let ok = dirs.get(dir);
    if (ok === undefined) {
      ok = canListBelow(peer, this.root, dir);
      if (dirs.size >= MAX_DIRS_PER_PEER) dirs.clear();
      dirs.set(dir, ok);
    }
    return ok;
  }

  /** Directory `dir` (relative) changed: forget what was known of it and below it. */
  changed(dir: string): void {
    if (dir === '') {
      this.#byPeer.clear();
      return;
    }
    const below = `${dir}/`;
    for (const dirs of this.#byPeer.values()) {
      for (const d of dirs.keys()) if (d === dir || d.startsWith(below)) dirs.delete(d);
    }
  }
}
