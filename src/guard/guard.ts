/**
 * The guard engine: answers permission events through policy rules, handlers, worker threads and
 * scanners, within a deadline, with a kernel-side decision cache.
 * @packageDocumentation
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { FanotifyGroup, isPermissionEvent, type GroupEvent, type PermissionEvent } from '../group.js';
import { FanotifyError } from '../errors.js';
import { native } from '../native.js';
import type { ResponseStats } from '../responses.js';
import type { EventName } from '../kernel/names.js';
import type { DenyErrno } from '../kernel/constants.js';
import { DENY_ERRNOS } from '../kernel/constants.js';
import { isUnder } from '../resolve/paths.js';
import { parseMountInfo } from '../resolve/mounts.js';
import { ProcessCache, type ProcessInfo } from '../resolve/process.js';
import { CompiledPolicy, type AccessContext, type AccessKind, type Policy, type Rule, type RuleVerdict } from './policy.js';
import { WorkerPool, type HandlerDecision } from './workers.js';
import { GuardMetrics } from './metrics.js';
import type { Scanner, ScanResult, ScanTarget } from '../scan/scanner.js';

/** One decision, as logged. */
export interface DecisionRecord {
  readonly time: string;
  readonly pid: number;
  readonly comm?: string;
  readonly exe?: string;
  readonly uid?: number;
  readonly event: AccessKind;
  readonly path: string;
  /** What was answered to the kernel (`allow` in a dry run whatever was decided). */
  readonly answer: 'allow' | 'deny';
  /** What the policy decided. */
  readonly decision: RuleVerdict | 'default';
  readonly errno?: DenyErrno;
  /** Rule name, or `#index`, or `default`. */
  readonly rule: string;
  readonly latencyMs: number;
  /** An ignore mark now answers this file's later accesses in the kernel. */
  readonly cached: boolean;
  readonly dryRun?: boolean;
  /** For scans. */
  readonly signature?: string;
  readonly error?: string;
  /** The group answered first (deadline) with its error verdict. */
  readonly late?: boolean;
}

/** A decision being made: what the event was, and what has been decided so far. */
interface Decided {
  readonly ev: PermissionEvent;
  ctx: AccessContext;
  /** Whether ctx.path holds the path (it is looked up only when needed). */
  pathKnown: boolean;
  /** Looked up for the decision only when a rule needs it, else later and only for the log or a handler. */
  proc: ProcessInfo | undefined;
  readonly t0: number;
  readonly decision: RuleVerdict | 'default';
  readonly rule: string;
  answer: 'allow' | 'deny';
  cacheable: boolean;
  /**
   * The file's change stamp before a scan whose clean result may be cached; taken only when
   * nobody had the file open for writing (see {@link Guard.#cacheScanned}).
   */
  stamp?: Buffer;
  errno?: DenyErrno;
  signature?: string;
  error?: string;
  /** From the event to the answer. */
  latencyMs: number;
  /** The group answered first (deadline) with its error verdict. */
  late: boolean;
}

/** Options of {@link Guard.start}. */
export interface GuardOptions {
  /** Directories (or files) to guard. Their mounts (or filesystems) are marked. */
  readonly paths: readonly string[];
  readonly policy: Policy;
  /** Mark whole filesystems instead of mounts. Default `mount`. */
  readonly markKind?: 'mount' | 'filesystem';
  /** Decides `ask` rules in this thread. */
  readonly handler?: (ctx: AccessContext) => HandlerDecision | Promise<HandlerDecision>;
  /** Decides `ask` rules in worker threads: a module whose default export is the handler. */
  readonly workers?: { readonly module: string; readonly size: number };
  /** Decides `scan` rules. */
  readonly scanner?: Scanner;
  /** What an infected file gets. Default: deny (EPERM). */
  readonly onInfected?: (record: DecisionRecord & { signature: string }) => void | Promise<void>;
  /** Place kernel ignore marks for files found clean/allowed. Default true. */
  readonly cache?: boolean;
  /** Decide and log, but always allow. */
  readonly dryRun?: boolean;
  /** Receives every decision (the NDJSON decision log); see {@link logAllowed}. */
  readonly log?: (record: DecisionRecord) => void;
  /**
   * Whether `log` also receives the decisions that let an access through with nothing to report
   * (allowed by a rule, by the default, or a clean scan). Default true. With false it receives
   * only denials, detections (also in a dry run), audits, failures and deadline answers: what an
   * administrator acts on, without a line (and a path and process lookup) per open.
   */
  readonly logAllowed?: boolean;
  /** More pids that are always allowed at once (e.g. the scanner daemon). */
  readonly excludePids?: readonly number[];
  /**
   * Paths the guard itself writes (its log, state, quarantine). Guarding them is fine with
   * permission events (our own pid is answered at once, and the guard only uses async I/O), but
   * with pre-content events our own writes would wait on ourselves: refused.
   */
  readonly ownPaths?: readonly string[];
  /**
   * The guard can no longer read events (the kernel refused a read): it has closed itself, so
   * the kernel lets every access through unguarded, rather than leaving the ones it queues waiting
   * forever. Restart it. Default: a process warning.
   */
  readonly onFailure?: (err: Error) => void;
}

const EVENT_KIND: Record<string, AccessKind> = {
  openPerm: 'open',
  accessPerm: 'access',
  openExecPerm: 'exec',
  preAccess: 'access',
};
const KIND_EVENTS: Record<AccessKind, EventName> = { open: 'openPerm', access: 'accessPerm', exec: 'openExecPerm' };
/** The options of an ignore mark. */
interface IgnoreMark {
  readonly events: readonly EventName[];
  readonly ignore: true;
}
/** The ignore mark of one decided kind (shared: one per kind rather than one per decision). */
const IGNORE_KIND: Record<AccessKind, IgnoreMark> = {
  open: { events: ['openPerm'], ignore: true },
  access: { events: ['accessPerm'], ignore: true },
  exec: { events: ['openExecPerm'], ignore: true },
};
/** Bytes of a change stamp (native.changeStamp). */
const STAMP_BYTES = 24;

/** A running guard. */
export class Guard {
  readonly #group: FanotifyGroup;
  readonly #roots: string[];
  readonly #processes = new ProcessCache();
  readonly #options: GuardOptions;
  readonly #workers: WorkerPool | undefined;
  /**
   * Every root is a mount point and mount marks are used: every event is under a root, so no
   * path is needed to tell whether it is ours.
   */
  readonly #wholeMounts: boolean;
  /**
   * Whether every decision needs the path (a readlink of the event fd, the largest per-event
   * cost). Otherwise it is looked up only for the log, a scanner or a handler.
   */
  #decisionNeedsPath: boolean;
  #policy: CompiledPolicy;
  readonly metrics = new GuardMetrics();
  #closed = false;
  /**
   * What is left of the decisions answered while the group handles a read batch (ignore marks,
   * metrics, the log): their answers are written when the batch ends, and this runs after that.
   */
  #afterAnswers: (() => void)[] = [];
  /** For the change stamp after a scan (compared at once, so one buffer serves every scan). */
  readonly #stampNow = Buffer.alloc(STAMP_BYTES);

  private constructor(group: FanotifyGroup, roots: string[], policy: CompiledPolicy, options: GuardOptions, workers?: WorkerPool) {
    this.#group = group;
    this.#roots = roots;
    this.#policy = policy;
    this.#options = options;
    this.#workers = workers;
    const points = (options.markKind ?? 'mount') === 'mount' ? mountPoints() : new Set<string>();
    this.#wholeMounts = roots.every((r) => points.has(r));
    this.#decisionNeedsPath = !this.#wholeMounts || policy.byPath;
  }

  /**
   * Start guarding.
   * @throws FanotifyError for a configuration that cannot work: missing privilege, a filesystem
   * without pre-content support where an errno rule needs it, own paths under a pre-content
   * guard, `ask` rules without a handler, `scan` rules without a scanner.
   */
  static start(options: GuardOptions): Guard {
    const policy = new CompiledPolicy(options.policy);
    checkConfig(options, policy);
    const roots = options.paths.map((p) => resolvePath(p));
    const preContent = policy.needsErrno;
    const group = FanotifyGroup.open({
      class: preContent ? 'preContent' : 'content',
      timeoutMs: options.policy.timeoutMs,
      defaultVerdict: options.policy.onError,
      ignorePids: [process.pid, ...(options.excludePids ?? [])],
      unlimitedQueue: true,
      unlimitedMarks: true,
    });
    const events = options.policy.events.map((k) => KIND_EVENTS[k]);
    try {
      for (const root of roots) group.mark(root, { kind: options.markKind ?? 'mount', events });
    } catch (err) {
      void group.close();
      throw err;
    }
    const workers = options.workers ? new WorkerPool(options.workers.module, options.workers.size) : undefined;
    const guard = new Guard(group, roots, policy, options, workers);
    group.listen((ev) => guard.#handle(ev), {
      onError: () => guard.metrics.errors++,
      onReadFailure: (err) => guard.#readFailed(err),
      onBatchEnd: () => guard.#runAfterAnswers(),
    });
    return guard;
  }

  /** The policy in force. */
  get policy(): Policy {
    return this.#policy.policy;
  }

  /** Permission events read and not yet answered. */
  get pending(): number {
    return this.#group.pendingCount;
  }

  /** How many answers the guard's group wrote, in how many write calls (several in one writev when they were given together). */
  get responseStats(): ResponseStats {
    return this.#group.responseStats;
  }

  /**
   * Replace the policy and forget every cached decision. The event classes and the deadline stay
   * those of the start (a different pre-content need requires a restart).
   */
  reload(policy: Policy): void {
    const next = new CompiledPolicy(policy);
    checkConfig({ ...this.#options, policy }, next);
    if (next.needsErrno && !this.#policy.needsErrno) {
      throw new FanotifyError('guard: the new policy denies with an errno, which needs a restart in a pre-content group', 'EINVAL');
    }
    this.#policy = next;
    this.#decisionNeedsPath = !this.#wholeMounts || next.byPath;
    this.flushCache();
  }

  /** Forget every cached decision (after a signature update, or on command). */
  flushCache(): void {
    // Guard marks are mount/filesystem marks; every inode mark of the group is a cache entry.
    this.#group.flush('inode');
    this.metrics.cacheFlushes++;
  }

  /**
   * Decide one event. Synchronous for policy verdicts (allow, deny, audit, default): only `scan`
   * and `ask` return a promise, so the common path costs no promise or microtask.
   */
  #handle(ev: GroupEvent): void | Promise<void> {
    if (!isPermissionEvent(ev)) return;
    const t0 = performance.now();
    const event = EVENT_KIND[ev.type] ?? 'open';
    let path: string | undefined;
    if (this.#decisionNeedsPath) {
      path = pathOf(ev.fd);
      if (!this.#wholeMounts && !this.#roots.some((r) => isUnder(path!, r))) {
        // Same mount, outside what we guard: allow, and never see this file again (the mark goes
        // on once the answer is written, through the fd kept for it).
        this.metrics.outside++;
        if (this.#options.cache === false) {
          ev.allow();
        } else {
          const fd = ev.takeFd();
          ev.allow();
          this.#afterAnswers.push(() => this.#cacheAllowed(fd, 'all'));
        }
        return;
      }
    }
    const policy = this.#policy;
    // The process is looked up here only when a rule needs it (see #knowProcess).
    const proc = policy.byProcess ? this.#processes.get(ev.pid) : undefined;
    const parent = proc?.ppid !== undefined ? this.#processes.get(proc.ppid).comm : undefined;
    const ctx: AccessContext = { path: path ?? '', event, pid: ev.pid, uid: proc?.uid, gid: proc?.gid, comm: proc?.comm, exe: proc?.exe, parent };
    const match = policy.decide(ctx);
    const d: Decided = {
      ev,
      ctx,
      pathKnown: path !== undefined,
      proc,
      t0,
      decision: match?.rule.verdict ?? 'default',
      rule: match ? (match.rule.name ?? `#${match.index}`) : 'default',
      answer: policy.policy.default,
      cacheable: this.#options.cache !== false && !this.#options.dryRun && policy.cacheable(ctx, match?.index) && match?.rule.cache !== false,
      latencyMs: 0,
      late: false,
    };
    switch (d.decision) {
      case 'default':
        break;
      case 'allow':
        d.answer = 'allow';
        break;
      case 'audit':
        d.answer = 'allow';
        d.cacheable = false; // every access is to be recorded
        break;
      case 'deny':
        d.answer = 'deny';
        d.errno = match!.rule.errno;
        break;
      case 'scan':
        return this.#scanned(d);
      case 'ask':
        // Handlers get the path and the process (for their own rules).
        this.#knowPath(d);
        this.#knowProcess(d);
        return this.#asked(d);
    }
    // The group writes this answer when the read batch has been handled; the rest waits for that.
    const fd = this.#answer(d);
    this.#afterAnswers.push(() => void this.#record(d, fd));
  }

  /** After the group wrote the answers of a read batch: cache, count and log their decisions. */
  #runAfterAnswers(): void {
    const tasks = this.#afterAnswers;
    if (tasks.length === 0) return;
    this.#afterAnswers = [];
    for (const task of tasks) {
      try {
        task();
      } catch {
        this.metrics.errors++; // a throwing log callback: the decision itself is made and answered
      }
    }
  }

  /** Look the path up now, while the event fd is ours ('' once the deadline answered it). */
  #knowPath(d: Decided): void {
    if (d.pathKnown) return;
    d.ctx = { ...d.ctx, path: d.ev.answered ? '' : pathOf(d.ev.fd) };
    d.pathKnown = true;
  }

  /**
   * Look the process up (for the log or a handler) while it waits on the event, so its pid
   * cannot have been reused yet; only the pid once the deadline answered.
   */
  #knowProcess(d: Decided): void {
    if (d.proc) return;
    const proc = d.ev.answered ? { pid: d.ev.pid } : this.#processes.get(d.ev.pid);
    d.proc = proc;
    d.ctx = { ...d.ctx, uid: proc.uid, gid: proc.gid, comm: proc.comm, exe: proc.exe };
  }

  async #scanned(d: Decided): Promise<void> {
    const { ev } = d;
    // The scanner reads the event fd until it is done, which may be after the deadline answered
    // the event: the fd stays ours until then, or the group closes it with that answer and its
    // number may name another event's file by the time the scanner reads it.
    const fd = ev.takeFd();
    // A clean result may be cached only if no write can have slipped past the scan: stamp the
    // file before the scanner reads it.
    if (d.cacheable) {
      d.stamp = this.#stampBeforeScan(fd);
      d.cacheable = d.stamp !== undefined;
    }
    // A scanner that needs the path (or a message that names it) looks it up on demand.
    const pathNow = (): string => {
      this.#knowPath(d);
      return d.ctx.path;
    };
    const target: ScanTarget = d.pathKnown
      ? { fd, path: d.ctx.path }
      : {
          fd,
          get path(): string {
            return pathNow();
          },
        };
    let scanning: Promise<ScanResult>;
    try {
      scanning = this.#options.scanner!.scan(target);
    } catch (err) {
      scanning = Promise.resolve(scanFailure(err));
    }
    // For the log: look the path and the process up while the scanner works (the request is on
    // its way once the current microtasks ran), not before it, where the opener waits on them.
    // Only when every decision is logged: else most scans (the clean ones) need neither.
    if (this.#options.log && this.#options.logAllowed !== false) {
      setImmediate(() => {
        this.#knowPath(d);
        this.#knowProcess(d);
      });
    }
    let res: ScanResult;
    try {
      res = await scanning;
    } catch (err) {
      res = scanFailure(err);
    }
    if (res.verdict === 'clean') d.answer = 'allow';
    else if (res.verdict === 'infected') {
      d.answer = 'deny';
      d.signature = res.signature;
    } else {
      d.answer = this.#policy.policy.onError;
      d.error = res.error.message;
    }
    d.cacheable &&= res.verdict === 'clean';
    let cacheFd = -1;
    try {
      cacheFd = this.#answer(d);
      this.#group.yieldToAnswered();
      const record = this.#record(d, cacheFd); // closes cacheFd
      if (record && d.signature && this.#options.onInfected) await this.#options.onInfected({ ...record, signature: d.signature });
    } finally {
      if (cacheFd < 0) closeFd(fd);
    }
  }

  async #asked(d: Decided): Promise<void> {
    d.cacheable = false;
    try {
      const r = await (this.#workers ? this.#workers.run(d.ctx) : this.#options.handler!(d.ctx));
      d.answer = (typeof r === 'string' ? r : r.verdict) === 'deny' ? 'deny' : 'allow';
      if (typeof r !== 'string' && r.errno !== undefined) {
        if (!Object.hasOwn(DENY_ERRNOS, r.errno)) throw new Error(`handler returned an errno the kernel refuses: ${r.errno}`);
        d.errno = r.errno as DenyErrno;
      }
    } catch (err) {
      d.answer = this.#policy.policy.onError;
      d.error = err instanceof Error ? err.message : String(err);
    }
    const fd = this.#answer(d);
    this.#group.yieldToAnswered();
    this.#record(d, fd);
  }

  /**
   * Answer (unless the deadline did). Everything else about the decision waits until after the
   * answer ({@link #record}), except what must be known while the process still waits: its path
   * and process for the record.
   * @returns the event fd, kept open past the answer for the ignore mark; -1 when not to cache
   */
  #answer(d: Decided): number {
    const { ev } = d;
    d.late = ev.answered;
    // The record names the path and the process: look them up while the event fd is open and
    // the process waits (so its pid cannot have been reused yet).
    if (this.#logs(d) || (d.signature && this.#options.onInfected)) {
      this.#knowPath(d);
      this.#knowProcess(d);
    }
    // Answering closes the event fd; the ignore mark, placed after the answer, needs it.
    const fd = !d.late && d.answer === 'allow' && d.cacheable ? ev.takeFd() : -1;
    if (!d.late) {
      if (d.answer === 'allow' || this.#options.dryRun) ev.allow();
      else ev.deny(d.errno);
    }
    d.latencyMs = performance.now() - d.t0;
    return fd;
  }

  /** Whether the log receives this decision (see {@link GuardOptions.logAllowed}). */
  #logs(d: Decided): boolean {
    if (!this.#options.log) return false;
    if (this.#options.logAllowed !== false) return true;
    return d.answer === 'deny' || d.decision === 'audit' || d.signature !== undefined || d.error !== undefined || d.late;
  }

  /**
   * After the answer: cache (through `fd`, which this closes), count and log a decision.
   * @returns the record, built only for the log or `onInfected` (building it costs per event).
   */
  #record(d: Decided, fd: number): DecisionRecord | undefined {
    const { onInfected } = this.#options;
    const log = this.#logs(d) ? this.#options.log : undefined;
    const dryRun = this.#options.dryRun ?? false;
    const cached = fd >= 0 && (d.stamp ? this.#cacheScanned(fd, d.stamp, d.ctx.event) : this.#cacheAllowed(fd, d.ctx.event));
    const { late, latencyMs } = d;
    const answer = late ? this.#policy.policy.onError : dryRun ? 'allow' : d.answer;
    this.metrics.record(answer, d.decision, d.rule, latencyMs, late, d.error !== undefined);
    if (!log && !(d.signature && onInfected)) return undefined;
    // One shape for every record (absent fields are undefined, which JSON leaves out): spreads of
    // optional parts cost an object copy each, per decision.
    const record: DecisionRecord = {
      time: new Date().toISOString(),
      pid: d.ev.pid,
      comm: d.proc?.comm,
      exe: d.proc?.exe,
      uid: d.proc?.uid,
      event: d.ctx.event,
      path: d.ctx.path,
      answer,
      decision: d.decision,
      errno: d.errno,
      rule: d.rule,
      latencyMs,
      cached,
      dryRun: dryRun || undefined,
      signature: d.signature,
      error: d.error,
      late: late || undefined,
    };
    log?.(record);
    return record;
  }

  /**
   * Let the kernel answer this file's later accesses of this kind (`all`: of every guarded kind)
   * itself: an inode ignore mark, which the kernel drops when the file is modified. For decisions
   * that do not depend on the content. Closes `fd`.
   */
  #cacheAllowed(fd: number, kind: AccessKind | 'all'): boolean {
    try {
      const mark: IgnoreMark = kind === 'all' ? { events: this.#policy.policy.events.map((k) => KIND_EVENTS[k]), ignore: true } : IGNORE_KIND[kind];
      if (!this.#ignoreMark(fd, mark)) return false;
      this.metrics.cacheInserts++;
      return true;
    } finally {
      closeFd(fd);
    }
  }

  /**
   * The same for a clean scan, unless a write may have slipped past the scan. The kernel drops an
   * ignore mark on a modification only once the mark is there: a write that ended between the
   * scanner's read and the mark would leave the mark over content nobody scanned. So the file was
   * stamped before the scan, when nobody had it open for writing ({@link #stampBeforeScan}: any
   * write after that began after the stamp), and it is stamped again once the mark is on. A write
   * that began before the second stamp changed the ctime (which a stat makes fine-grained for the
   * next change, Linux 6.13+): the mark is taken back. A write that begins after it ends after
   * the mark is on, and the kernel drops the mark. Closes `fd`.
   */
  #cacheScanned(fd: number, stamp: Buffer, kind: AccessKind): boolean {
    try {
      const mark = IGNORE_KIND[kind];
      if (!this.#ignoreMark(fd, mark)) return false;
      let unchanged = false;
      try {
        unchanged = native.changeStamp(fd, this.#stampNow, false) && this.#stampNow.equals(stamp);
      } catch {
        // Cannot tell: not cached.
      }
      if (unchanged) {
        this.metrics.cacheInserts++;
        return true;
      }
      this.metrics.cacheRefused++;
      try {
        this.#group.unmarkFd(fd, mark);
      } catch {
        // No such mark any more (the group closed, or the write's modification dropped it).
      }
      return false;
    } finally {
      closeFd(fd);
    }
  }

  /**
   * The file's change stamp before a scan, for {@link #cacheScanned}; undefined when the result
   * must not be cached: the file is open for writing (a write may be under way while it is
   * scanned), or it cannot be stamped.
   */
  #stampBeforeScan(fd: number): Buffer | undefined {
    const stamp = Buffer.allocUnsafe(STAMP_BYTES);
    try {
      if (native.changeStamp(fd, stamp, true)) return stamp;
    } catch {
      // A bad fd: the scan reports it.
    }
    this.metrics.cacheRefused++;
    return undefined;
  }

  /** Place an ignore mark through an event fd; false when the kernel refuses (too many marks, a filesystem that cannot). */
  #ignoreMark(fd: number, mark: IgnoreMark): boolean {
    try {
      this.#group.markFd(fd, mark);
      return true;
    } catch {
      return false; // The next access asks again.
    }
  }

  #readFailed(err: unknown): void {
    this.metrics.errors++;
    const reason = err instanceof Error ? err.message : String(err);
    const failure = new Error(`the guard stopped: reading fanotify events failed (${reason}); it released its marks, so accesses are no longer guarded: restart it`);
    void this.close().finally(() => (this.#options.onFailure ?? ((e: Error) => process.emitWarning(e)))(failure));
  }

  /** Stop: answer every pending event with the error verdict, release the group and workers. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#group.close();
    await this.#workers?.close();
  }
}

/** A scanner that broke its contract (threw or rejected): an error result, like its own failures. */
function scanFailure(err: unknown): ScanResult {
  return { verdict: 'error', error: err instanceof Error ? err : new Error(String(err)) };
}

/** Close an event fd the guard kept past its answer (best effort: it is unusable either way). */
function closeFd(fd: number): void {
  try {
    native.close(fd);
  } catch {
    // Nothing to do.
  }
}

/** The path an event fd refers to ('' when it cannot be read). */
function pathOf(fd: number): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return '';
  }
}

/** Mount points of this mount namespace. */
function mountPoints(): Set<string> {
  try {
    return new Set(parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')).map((m) => m.mountPoint));
  } catch {
    return new Set();
  }
}

function checkConfig(options: GuardOptions, policy: CompiledPolicy): void {
  const rules: readonly Rule[] = options.policy.rules;
  if (options.paths.length === 0) throw new FanotifyError('guard: no path to guard', 'EINVAL');
  if (rules.some((r) => r.verdict === 'ask') && !options.handler && !options.workers) {
    throw new FanotifyError('guard: the policy has "ask" rules but no handler or workers module was given', 'EINVAL');
  }
  if (rules.some((r) => r.verdict === 'scan') && !options.scanner) {
    throw new FanotifyError('guard: the policy has "scan" rules but no scanner was given (e.g. --clamd SOCKET)', 'EINVAL');
  }
  if (policy.needsErrno) {
    for (const own of options.ownPaths ?? []) {
      const abs = resolvePath(own);
      const guarded = options.paths.map((p) => resolvePath(p)).find((p) => isUnder(abs, p));
      if (guarded) {
        throw new FanotifyError(
          `guard: ${abs} (written by the guard itself) is under the guarded ${guarded}, and errno rules need pre-content ` +
            'events, which stop every write until answered: the guard would wait on itself. Move it outside the guarded paths.',
          'EDEADLK',
        );
      }
    }
  }
}
