/**
 * Process information for an event's pid, cached per (pid, start time).
 * @packageDocumentation
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { LruMap } from './lru.js';

/** What we know of a process. Fields are undefined when the process is gone or hidden. */
export interface ProcessInfo {
  readonly pid: number;
  readonly comm?: string;
  readonly exe?: string;
  readonly uid?: number;
  readonly gid?: number;
  readonly ppid?: number;
  /** Start time in clock ticks since boot (field 22 of /proc/PID/stat). */
  readonly startTime?: number;
}

/** Parse /proc/PID/stat: comm is in parentheses and may itself contain spaces and ')'. */
export function parseStat(text: string): { comm: string; ppid: number; startTime: number } | undefined {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return undefined;
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state): ppid is field 4, starttime field 22.
  const ppid = Number(rest[1]);
  const startTime = Number(rest[19]);
  if (!Number.isFinite(ppid) || !Number.isFinite(startTime)) return undefined;
  return { comm: text.slice(open + 1, close), ppid, startTime };
}

/** Parse the effective uid and gid from /proc/PID/status. */
export function parseStatusIds(text: string): { uid?: number; gid?: number } {
  const uid = /^Uid:\s+\d+\s+(\d+)/m.exec(text);
  const gid = /^Gid:\s+\d+\s+(\d+)/m.exec(text);
  return { uid: uid ? Number(uid[1]) : undefined, gid: gid ? Number(gid[1]) : undefined };
}

interface Entry {
  info: ProcessInfo;
  checkedAt: number;
}

/** Options of {@link ProcessCache}. */
export interface ProcessCacheOptions {
  /** Entries kept. Default 4096. */
  readonly size?: number;
  /**
   * How long an entry is trusted before its start time is checked again (pid reuse), in ms.
   * Default 1000.
   */
  readonly revalidateMs?: number;
  /** Root of procfs. Default /proc. */
  readonly procRoot?: string;
}

/**
 * Looks up processes and caches them. An entry is keyed by pid and proven by its start time:
 * after `revalidateMs` the start time is read again, and a different one (the pid was reused)
 * replaces the entry.
 */
export class ProcessCache {
  readonly #entries: LruMap<number, Entry>;
  readonly #revalidateMs: number;
  readonly #proc: string;

  constructor(options: ProcessCacheOptions = {}) {
    this.#entries = new LruMap(options.size ?? 4096);
    this.#revalidateMs = options.revalidateMs ?? 1000;
    this.#proc = options.procRoot ?? '/proc';
  }

  /** Information about `pid`; only `pid` is set when the process has exited. */
  get(pid: number): ProcessInfo {
    const now = Date.now();
    const entry = this.#entries.get(pid);
    if (entry && now - entry.checkedAt < this.#revalidateMs) return entry.info;
    const stat = this.#readStat(pid);
    if (entry && stat && entry.info.startTime === stat.startTime) {
      entry.checkedAt = now;
      return entry.info;
    }
    if (!stat) return entry?.info ?? { pid };
    const info = this.#load(pid, stat);
    this.#entries.set(pid, { info, checkedAt: now });
    return info;
  }

  #readStat(pid: number): ReturnType<typeof parseStat> {
    try {
      return parseStat(readFileSync(`${this.#proc}/${pid}/stat`, 'utf8'));
    } catch {
      return undefined;
    }
  }

  #load(pid: number, stat: NonNullable<ReturnType<typeof parseStat>>): ProcessInfo {
    let exe: string | undefined;
    let ids: { uid?: number; gid?: number } = {};
    try {
      exe = readlinkSync(`${this.#proc}/${pid}/exe`);
    } catch {
      // Kernel threads have no exe; hidden processes deny it.
    }
    try {
      ids = parseStatusIds(readFileSync(`${this.#proc}/${pid}/status`, 'utf8'));
    } catch {
      // Exited between reads.
    }
    return { pid, comm: stat.comm, exe, ppid: stat.ppid, startTime: stat.startTime, ...ids };
  }
}
