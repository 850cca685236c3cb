/**
 * Who a local client is and what it may see. The peer's uid and gid come from SO_PEERCRED (the
 * kernel's word, not the client's); its supplementary groups from /proc/PID/status.
 *
 * Subscribing to a root is decided by the kernel itself: `test -d -r -x ROOT` runs under setpriv
 * with the peer's uid, gid and groups, so ACLs, LSMs and every path component's search bit count
 * exactly as they would for the client's own open(). That costs a process per subscribe, which is
 * rare. Inside a root, where a check is needed per event and per lookup, mode bits are checked per
 * directory component (owner, group with the peer's groups, other) and cached per subscription:
 * that can only be stricter than the kernel for ACL grants, but it does not see an ACL that denies
 * a named user what "other" allows (docs/remote.md).
 * @packageDocumentation
 */
import { execFile } from 'node:child_process';
import { lstatSync, readFileSync, type Stats } from 'node:fs';
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

const R = 4;
const X = 1;

function permits(peer: PeerIdentity, st: Stats, bits: number): boolean {
  if (peer.uid === 0) return true;
  const shift = st.uid === peer.uid ? 6 : peer.groups.includes(st.gid) ? 3 : 0;
  return ((st.mode >> shift) & bits) === bits;
}

/**
 * True when the peer may search every directory from `root` down to `root/dir` and read the last
 * one (to see its names). `dir` is relative ('' is the root, already checked at subscribe).
 */
export function canListBelow(peer: PeerIdentity, root: string, dir: string): boolean {
  if (peer.uid === 0 || dir === '') return true;
  let path = root;
  const parts = dir.split('/');
  try {
    for (let i = 0; i < parts.length; i++) {
      path = `${path}/${parts[i]}`;
      const st = lstatSync(path);
      if (!st.isDirectory()) return false;
      if (!permits(peer, st, i === parts.length - 1 ? R | X : X)) return false;
    }
  } catch {
    return false;
  }
  return true;
}
