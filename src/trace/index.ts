/**
 * trace: who touches what, system-wide, with a path on every event.
 * @packageDocumentation
 */
import { FanotifyGroup, type GroupEvent } from '../group.js';
import { FanotifyError } from '../errors.js';
import { EventBit } from '../kernel/constants.js';
import type { EventName } from '../kernel/names.js';
import { PathResolver, ProcessCache, PSEUDO_FILESYSTEMS, isUnder, type FilesystemEntry, type ResolvedPaths } from '../resolve/index.js';

/** fatrace's type letters, in fatrace's order, plus ours for what fatrace does not show. */
const LETTERS: readonly [number, string][] = [
  [EventBit.ACCESS, 'R'],
  [EventBit.CLOSE_WRITE | EventBit.CLOSE_NOWRITE, 'C'],
  [EventBit.MODIFY, 'W'],
  [EventBit.OPEN | EventBit.OPEN_EXEC, 'O'],
  [EventBit.CREATE, '+'],
  [EventBit.DELETE | EventBit.DELETE_SELF, 'D'],
  [EventBit.MOVED_FROM | EventBit.RENAME, '<'],
  [EventBit.MOVED_TO | EventBit.RENAME, '>'],
  [EventBit.ATTRIB, 'A'],
];

/** Every type letter trace knows. */
export const TYPE_LETTERS = 'RCWO+D<>A';

/** fatrace-style type letters for a mask. */
export function typeLetters(mask: number): string {
  let s = '';
  for (const [bits, letter] of LETTERS) if (mask & bits) s += letter;
  return s;
}

/** The mask selected by a string of type letters. */
export function maskOfLetters(letters: string): number {
  let mask = 0;
  for (const ch of letters) {
    const hit = LETTERS.filter(([, l]) => l === ch);
    if (hit.length === 0) throw new FanotifyError(`unknown event type "${ch}" in --filter; choose from ${TYPE_LETTERS}`, 'EINVAL');
    for (const [bits] of hit) mask |= bits;
  }
  return mask;
}

const TRACED_EVENTS: readonly EventName[] = [
  'access', 'modify', 'closeWrite', 'closeNoWrite', 'open', 'openExec',
  'create', 'delete', 'rename', 'attrib',
];

/** One traced access. */
export interface TraceRecord {
  /** Milliseconds since the epoch when the event was read. */
  readonly time: number;
  readonly pid: number;
  readonly comm?: string;
  readonly exe?: string;
  readonly uid?: number;
  /** Event names in the (possibly merged) mask. */
  readonly events: readonly EventName[];
  /** fatrace type letters. */
  readonly types: string;
  /** The path (for a rename, the new path). */
  readonly path?: string;
  /** For a rename, the old path. */
  readonly oldPath?: string;
  /** The file no longer existed when the event was read. */
  readonly deleted?: boolean;
  /** The event is about a directory. */
  readonly isDir: boolean;
  /** The kernel queue overflowed and events before this one were lost. */
  readonly overflow?: boolean;
}

/** What to trace. */
export interface TraceOptions {
  /** Trace the filesystems of these paths, reporting only events under them. Default: every real filesystem. */
  readonly paths?: readonly string[];
  /** Only events whose type letters intersect this mask (see {@link maskOfLetters}). */
  readonly filterMask?: number;
  /** Only events of processes with this comm. */
  readonly command?: string;
  /** Never report these pids (this process is always left out). */
  readonly ignorePids?: readonly number[];
  /** Called for filesystems that cannot be traced (no file ids, not permitted). */
  readonly onSkip?: (fs: FilesystemEntry, reason: string) => void;
  /** Read and handling errors. Default: a process warning. */
  readonly onError?: (err: unknown) => void;
}

/** A running trace. */
export interface TraceSession {
  /** The filesystems being traced (by mount point). */
  readonly filesystems: readonly FilesystemEntry[];
  /** Stop tracing and release everything. */
  close(): Promise<void>;
  /** Let the process exit while tracing. */
  unref(): void;
  /** Counters: events read, records delivered, events without a path, overflows. */
  readonly stats: { events: number; records: number; withoutPath: number; overflows: number };
}

/**
 * Start tracing. Records arrive in batches (one per kernel read) so callers can write them out
 * in one go.
 * @throws FanotifyError when no filesystem can be traced, or without CAP_SYS_ADMIN.
 */
export function trace(options: TraceOptions, onRecords: (records: TraceRecord[]) => void): TraceSession {
  const resolver = new PathResolver();
  const processes = new ProcessCache();
  const wanted = selectFilesystems(resolver, options.paths);
  const group = FanotifyGroup.open({
    report: ['dfidNameTarget'],
    unlimitedMarks: true,
    batchDelayMs: 1,
    ignorePids: [process.pid, ...(options.ignorePids ?? [])],
  });
  const traced: FilesystemEntry[] = [];
  for (const fs of wanted) {
    try {
      group.mark(fs.mount.mountPoint, { kind: 'filesystem', events: TRACED_EVENTS, onDir: true });
      traced.push(fs);
    } catch (err) {
      if (err instanceof FanotifyError && err.code === 'EPERM') {
        void group.close();
        throw err;
      }
      options.onSkip?.(fs, err instanceof Error ? err.message : String(err));
    }
  }
  if (traced.length === 0) {
    void group.close();
    throw new FanotifyError('trace: none of the selected filesystems can be traced', 'ENODEV');
  }
  const roots = options.paths?.map((p) => p.replace(/\/+$/, '') || '/');
  const stats = { events: 0, records: 0, withoutPath: 0, overflows: 0 };
  const now = (): number => performance.timeOrigin + performance.now();

  const toRecord = (ev: GroupEvent, resolved: ResolvedPaths, time: number): TraceRecord | undefined => {
    stats.events++;
    if (ev.type === 'overflow') {
      stats.overflows++;
      return { time, pid: 0, events: ev.names, types: '', isDir: false, overflow: true };
    }
    if (options.filterMask !== undefined && !(ev.mask & options.filterMask)) return undefined;
    const path = resolved.path;
    // An event we cannot name might be under the roots: it is delivered, never dropped unseen.
    const named = path !== undefined || resolved.oldPath !== undefined;
    if (roots && named && !roots.some((r) => (path && isUnder(path, r)) || (resolved.oldPath && isUnder(resolved.oldPath, r)))) {
      return undefined;
    }
    const proc = processes.get(ev.pid);
    if (options.command !== undefined && proc.comm !== options.command) return undefined;
    if (!named) stats.withoutPath++;
    return {
      time,
      pid: ev.pid,
      comm: proc.comm,
      exe: proc.exe,
      uid: proc.uid,
      events: ev.names,
      types: typeLetters(ev.mask),
      path,
      oldPath: resolved.oldPath,
      deleted: resolved.gone,
      isDir: ev.isDir,
    };
  };

  // Events are resolved a read batch at a time, so deletes inside a tree removed before we read
  // them still get their paths (PathResolver.resolveAll).
  let batch: GroupEvent[] = [];
  group.listen((ev) => void batch.push(ev), {
    onError: options.onError,
    onBatchEnd: () => {
      if (batch.length === 0) return;
      const events = batch;
      batch = [];
      const time = now();
      const paths = resolver.resolveAll(events);
      const records: TraceRecord[] = [];
      for (let i = 0; i < events.length; i++) {
        const r = toRecord(events[i]!, paths[i]!, time);
        if (r) records.push(r);
      }
      if (records.length === 0) return;
      stats.records += records.length;
      onRecords(records);
    },
  });

  return {
    filesystems: traced,
    stats,
    unref: () => group.unref(),
    close: async () => {
      await group.close();
      resolver.close();
    },
  };
}

/** Filesystems to mark: those of the given paths, or every real one. */
function selectFilesystems(resolver: PathResolver, paths: readonly string[] | undefined): FilesystemEntry[] {
  const mounts = resolver.mounts;
  if (paths && paths.length > 0) {
    const byFsid = new Map<string, FilesystemEntry>();
    for (const p of paths) {
      let fs: FilesystemEntry | undefined;
      try {
        fs = mounts.forPath(p);
      } catch (err) {
        throw new FanotifyError(`trace: cannot trace ${p}: ${(err as Error).message}`, (err as { code?: string }).code ?? 'ENOENT');
      }
      if (!fs) throw new FanotifyError(`trace: ${p} is on no filesystem listed in /proc/self/mountinfo`, 'ENOENT');
      byFsid.set(fs.fsid, fs);
    }
    return [...byFsid.values()];
  }
  return mounts.filesystems.filter((fs) => !PSEUDO_FILESYSTEMS.has(fs.mount.fsType));
}

/** Format a record the way fatrace does: `comm(pid): TYPES path`. */
export function formatFatrace(r: TraceRecord, timestamp: 0 | 1 | 2 = 0): string {
  let prefix = '';
  if (timestamp === 1) {
    const d = new Date(r.time);
    const micros = Math.floor((r.time % 1000) * 1000).toString().padStart(6, '0');
    prefix = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}:${String(d.getSeconds()).padStart(2, '0')}.${micros} `;
  } else if (timestamp === 2) {
    prefix = `${(r.time / 1000).toFixed(6)} `;
  }
  if (r.overflow) return `${prefix}[queue overflow: events were lost]`;
  const path = r.oldPath !== undefined && r.oldPath !== r.path ? `${r.oldPath} -> ${r.path ?? '?'}` : (r.path ?? '?');
  return `${prefix}${r.comm ?? 'unknown'}(${r.pid}): ${r.types.padEnd(3)} ${path}`;
}

/** The NDJSON form of a record. */
export function formatJson(r: TraceRecord): string {
  return JSON.stringify({
    time: new Date(r.time).toISOString(),
    pid: r.pid,
    comm: r.comm,
    exe: r.exe,
    uid: r.uid,
    events: r.events,
    types: r.types,
    path: r.path,
    oldPath: r.oldPath,
    newPath: r.oldPath !== undefined ? r.path : undefined,
    deleted: r.deleted || undefined,
    isDir: r.isDir || undefined,
    overflow: r.overflow,
  });
}
