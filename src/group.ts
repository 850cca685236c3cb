/**
 * One kernel fanotify group: init options, marks, an event stream, verdicts, close.
 * It is the only owner of an fanotify fd.
 * @packageDocumentation
 */
import { native, type AccessTable, type Reader } from './native.js';
import {
  InitFlag,
  MarkFlag,
  EventBit,
  PERMISSION_BITS,
  REPORT_DFID_NAME,
  REPORT_DFID_NAME_TARGET,
  DENY_ERRNOS,
  type DenyErrno,
} from './kernel/constants.js';
import { decodeEventAt } from './kernel/decode.js';
import { encodeResponse, responseWord, type AuditRuleInfo, type Verdict } from './kernel/encode.js';
import { DecodeError, type ByteRange, type DecodedEvent, type DirEntryRef, type PermissionEventData } from './kernel/events.js';
import type { FileId } from './kernel/fileid.js';
import { maskOf, type EventName, type PermissionEventName } from './kernel/names.js';
import { explainInitError, explainMarkError, FanotifyError } from './errors.js';
import { ResponseWriter, type ResponseStats } from './responses.js';

/** The group's class: plain notification, content permission, or pre-content (HSM). */
export type GroupClass = 'notif' | 'content' | 'preContent';

/** What each event reports besides its mask. */
export type ReportOption =
  | 'fid'
  | 'dirFid'
  | 'name'
  | 'targetFid'
  | 'dfidName'
  | 'dfidNameTarget'
  | 'pidfd'
  | 'tid'
  | 'fdError'
  | 'mnt';

const REPORT_FLAGS: Record<ReportOption, number> = {
  fid: InitFlag.REPORT_FID,
  dirFid: InitFlag.REPORT_DIR_FID,
  name: InitFlag.REPORT_NAME,
  targetFid: InitFlag.REPORT_TARGET_FID,
  dfidName: REPORT_DFID_NAME,
  dfidNameTarget: REPORT_DFID_NAME_TARGET,
  pidfd: InitFlag.REPORT_PIDFD,
  tid: InitFlag.REPORT_TID,
  fdError: InitFlag.REPORT_FD_ERROR,
  mnt: InitFlag.REPORT_MNT,
};

const CLASS_FLAGS: Record<GroupClass, number> = {
  notif: InitFlag.CLASS_NOTIF,
  content: InitFlag.CLASS_CONTENT,
  preContent: InitFlag.CLASS_PRE_CONTENT,
};

/** The verdict a group gives on its own: on deadline, handler failure and close. */
export type DefaultVerdict = 'allow' | 'deny';

/** Options of {@link FanotifyGroup.open}. */
export interface GroupOptions {
  /** Group class; permission events need `content` or `preContent`. Default `notif`. */
  readonly class?: GroupClass;
  /** Info records to report. Default none (events carry an fd). */
  readonly report?: readonly ReportOption[];
  /** No limit on the kernel queue (needs CAP_SYS_ADMIN). Overflow cannot happen then. */
  readonly unlimitedQueue?: boolean;
  /** No limit on the number of marks (needs CAP_SYS_ADMIN). */
  readonly unlimitedMarks?: boolean;
  /** Let verdicts ask for audit records (FAN_ENABLE_AUDIT). */
  readonly audit?: boolean;
  /** open(2) flags of event fds. Default O_RDONLY | O_LARGEFILE | O_CLOEXEC. */
  readonly eventFdFlags?: number;
  /** Deadline for answering a permission event, in ms. Default 5000. */
  readonly timeoutMs?: number;
  /** Verdict given on deadline, handler failure and close. Default `allow`. */
  readonly defaultVerdict?: DefaultVerdict;
  /**
   * Pids whose events are never delivered: notifications are dropped and permission events
   * allowed at once, so our own I/O can never wait on us. Default: this process.
   */
  readonly ignorePids?: readonly number[];
  /** Size of one read() buffer. Default 256 KiB. */
  readonly readBufferSize?: number;
  /**
   * After each read, wait this long (ms) before reading again, so that a busy stream is read in
   * large batches instead of a wake-up every few events. Costs this much latency; meant for
   * notification consumers (watch, trace), not for permission events. Default 0.
   */
  readonly batchDelayMs?: number;
  /**
   * Events held in memory (queued or being handled) before the group stops reading, leaving
   * the rest in the kernel queue (which then overflows visibly rather than growing our memory).
   * Default 8192.
   */
  readonly highWaterMark?: number;
  /**
   * Pre-content reads this table can answer are answered by the reader (allowed, never
   * delivered), which then reads in a thread of its own. For a daemon that knows which content
   * is present (the HSM worker). Default none.
   */
  readonly accessTable?: AccessTable;
}

/** Where a mark attaches. */
export type MarkKind = 'inode' | 'mount' | 'filesystem' | 'mntns';

const KIND_FLAGS: Record<MarkKind, number> = {
  inode: MarkFlag.INODE,
  mount: MarkFlag.MOUNT,
  filesystem: MarkFlag.FILESYSTEM,
  mntns: MarkFlag.MNTNS,
};

/** Options of {@link FanotifyGroup.mark} and {@link FanotifyGroup.unmark}. */
export interface MarkOptions {
  /** Default `inode`. `mntns` takes a path like /proc/self/ns/mnt. */
  readonly kind?: MarkKind;
  /** Events to add (or, with `ignore`, to ignore). */
  readonly events: readonly EventName[];
  /** Report events on directories too (FAN_ONDIR). */
  readonly onDir?: boolean;
  /** On a directory inode mark: report events of its children (FAN_EVENT_ON_CHILD). */
  readonly onChild?: boolean;
  /** Make this an ignore mark (FAN_MARK_IGNORE): the events are not reported for this object. */
  readonly ignore?: boolean;
  /** An ignore mark that stays when the file is modified (FAN_MARK_IGNORED_SURV_MODIFY). */
  readonly surviveModify?: boolean;
  /** The kernel may drop this inode mark under memory pressure (FAN_MARK_EVICTABLE). */
  readonly evictable?: boolean;
  /** Mark a symlink itself, not its target. */
  readonly dontFollow?: boolean;
  /** Fail unless the path is a directory. */
  readonly onlyDir?: boolean;
  /** Resolve `path` relative to this directory fd instead of the cwd. */
  readonly dirFd?: number;
}

/** Methods every delivered event has. */
export interface EventControl {
  /**
   * Take ownership of the event's fd: the group will not close it. You must close it.
   * @returns the fd, or -1 when the event has none.
   */
  takeFd(): number;
}

/** A permission event: answer it once with {@link PermissionControl.allow} or `deny`. */
export interface PermissionControl extends EventControl {
  /**
   * Whether a verdict has been given. Verdicts given while a listener handles a read batch are
   * written together when the batch has been handled, before `onBatchEnd` runs.
   */
  readonly answered: boolean;
  /** Allow the access. */
  allow(options?: { audit?: boolean; info?: AuditRuleInfo }): boolean;
  /**
   * Deny the access, with EPERM or (pre-content groups only) one of EIO, EBUSY, ETXTBSY,
   * EAGAIN, ENOSPC, EDQUOT.
   * @throws RangeError for any other errno, or for an errno outside a pre-content group.
   */
  deny(errno?: DenyErrno, options?: { audit?: boolean; info?: AuditRuleInfo }): boolean;
  /** Answer with a verdict object. A second answer is a no-op returning false. */
  respond(verdict: Verdict, info?: AuditRuleInfo): boolean;
}

/** A permission event as the group delivers it. */
export type PermissionEvent = PermissionEventData & PermissionControl;

/** An event as the group delivers it. */
export type GroupEvent = (Exclude<DecodedEvent, PermissionEventData> & EventControl) | PermissionEvent;

/** True when the event owes a verdict. */
export function isPermissionEvent(ev: GroupEvent): ev is PermissionEvent {
  return (ev.mask & PERMISSION_BITS) !== 0;
}

/** Options of {@link FanotifyGroup.listen}. */
export interface ListenOptions {
  /** Handler failures and read errors. Default: a process warning. */
  readonly onError?: (err: unknown) => void;
  /**
   * The group stopped reading (its read or poll failed): no event will arrive any more, and
   * permission events the kernel queues from now on wait until the group is closed. A daemon
   * should close the group or exit (the kernel then answers what is pending). Default: onError.
   */
  readonly onReadFailure?: (err: unknown) => void;
  /**
   * Called after each read() batch has been handed to the handler and the verdicts given meanwhile
   * have been written (e.g. to flush output, or to do what can wait until the accessing processes run).
   */
  readonly onBatchEnd?: () => void;
}

/**
 * A handler for the callback form. A permission event must be answered before the handler
 * returns, or before the promise it returns settles: an event still unanswered then (or when
 * the handler throws or rejects) gets the default verdict at once. A promise that never settles
 * is cut off by the group's deadline.
 */
export type EventHandler = (event: GroupEvent) => void | Promise<void>;

const DEFAULT_EVENT_FD_FLAGS = 0o100000 /* O_LARGEFILE */ | 0o2000000 /* O_CLOEXEC */;
const noFd = (): number => -1;

/** What a permission event needs from its group: one object per group, not closures per event. */
interface Answerer {
  /** Answer this event once; false when it was answered already. */
  answer(ev: PermEvent, verdict: Verdict, info?: AuditRuleInfo): boolean;
  /** A pre-content group, which may deny with errnos other than EPERM. */
  readonly preContent: boolean;
}

/**
 * A delivered permission event. A class so that the controls are prototype methods: each event
 * costs one object, where closures and a property definition per event showed up in profiles.
 */
class PermEvent implements PermissionEvent {
  readonly type: PermissionEventName;
  readonly mask: number;
  readonly names: readonly EventName[];
  readonly pid: number;
  readonly fd: number;
  readonly isDir: boolean;
  // Present only when the kernel sent the record, as on the decoded event.
  declare readonly range?: ByteRange;
  declare readonly fid?: FileId;
  declare readonly dfid?: FileId;
  declare readonly entry?: DirEntryRef;
  declare readonly pidfd?: number;
  declare readonly mntId?: number;
  readonly #answerer: Answerer;
  /** performance.now() at which the group answers on its own. */
  readonly #deadline: number;
  #answered = false;
  #fdTaken = false;

  constructor(raw: PermissionEventData, answerer: Answerer, deadline: number) {
    this.type = raw.type;
    this.mask = raw.mask;
    this.names = raw.names;
    this.pid = raw.pid;
    this.fd = raw.fd;
    this.isDir = raw.isDir;
    if (raw.range !== undefined) this.range = raw.range;
    if (raw.fid !== undefined) this.fid = raw.fid;
    if (raw.dfid !== undefined) this.dfid = raw.dfid;
    if (raw.entry !== undefined) this.entry = raw.entry;
    if (raw.pidfd !== undefined) this.pidfd = raw.pidfd;
    if (raw.mntId !== undefined) this.mntId = raw.mntId;
    this.#answerer = answerer;
    this.#deadline = deadline;
  }

  get answered(): boolean {
    return this.#answered;
  }

  takeFd(): number {
    this.#fdTaken = true;
    return this.fd;
  }

  respond(verdict: Verdict, info?: AuditRuleInfo): boolean {
    if (!verdict.allow && verdict.errno !== undefined && verdict.errno !== 'EPERM' && !this.#answerer.preContent) {
      throw new RangeError(`deny(${verdict.errno}) needs a pre-content group: other groups can deny with EPERM only`);
    }
    return this.#answerer.answer(this, verdict, info);
  }

  allow(o?: { audit?: boolean; info?: AuditRuleInfo }): boolean {
    return this.respond(o?.audit ? { allow: true, audit: true } : ALLOW, o?.info);
  }

  deny(errno?: DenyErrno, o?: { audit?: boolean; info?: AuditRuleInfo }): boolean {
    if (errno !== undefined && !Object.hasOwn(DENY_ERRNOS, errno)) {
      throw new RangeError(`cannot deny with ${String(errno)}: the kernel accepts only ${Object.keys(DENY_ERRNOS).join(', ')}`);
    }
    return this.respond({ allow: false, errno, audit: o?.audit }, o?.info);
  }

  /** For the group: record the answer; true when the group still owns the event fd. */
  static settle(ev: PermEvent): boolean {
    ev.#answered = true;
    return !ev.#fdTaken;
  }

  /** For the group: when the event is due. */
  static deadlineOf(ev: PermEvent): number {
    return ev.#deadline;
  }
}

const ALLOW: Verdict = { allow: true };

/**
 * One kernel fanotify group.
 *
 * Deliver events either with `for await (const ev of group)` or with {@link listen}; not both.
 * Every permission event is answered exactly once: by you, or with the default verdict when the
 * deadline passes, when your handler throws, and on {@link close}.
 */
export class FanotifyGroup implements AsyncIterable<GroupEvent>, AsyncDisposable {
  /** The group fd. Do not close it yourself: call {@link close}. */
  readonly fd: number;
  /** The fanotify_init flags in use. */
  readonly flags: number;
  /** The options in use. */
  readonly options: Readonly<GroupOptions>;

  readonly #timeoutMs: number;
  readonly #defaultVerdict: Verdict;
  readonly #ignorePids: ReadonlySet<number>;
  readonly #highWater: number;
  /** Unanswered permission events by fd, oldest first (they arrive in order, with one timeout). */
  readonly #pending = new Map<number, PermEvent>();
  readonly #answerer: Answerer;
  /** One timer for the oldest pending event, instead of one per event. */
  #deadlineTimer: NodeJS.Timeout | undefined;
  #refed = true;
  /**
   * Answers are queued here while a read batch is handled and written together when it ends;
   * outside a batch, at once.
   */
  readonly #responses: ResponseWriter;
  /** Handling a read batch: answers wait for its end. */
  #batching = false;
  /** Event fds to close once the batch's answers are written (the kernel matches answers by fd number). */
  #closeAfterAnswers: number[] = [];
  #reader: Reader | undefined;
  #closed = false;
  #consumer: 'iterator' | 'listener' | undefined;
  // Iterator state.
  #queue: GroupEvent[] = [];
  #waiter: { resolve: (r: IteratorResult<GroupEvent>) => void; reject: (e: unknown) => void } | undefined;
  #failure: unknown;
  #lastDelivered: GroupEvent | undefined;
  // Listener state.
  #inFlight = 0;
  #onError: (err: unknown) => void = (err) => process.emitWarning(err instanceof Error ? err : String(err));
  #onReadFailure: ((err: unknown) => void) | undefined;
  /** Paused because too much is held (backpressure). */
  #paused = false;
  /** Paused between reads to let a batch accumulate (batchDelayMs). */
  #napping = false;

  private constructor(fd: number, flags: number, options: GroupOptions) {
    this.fd = fd;
    this.flags = flags;
    this.options = options;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#defaultVerdict = { allow: (options.defaultVerdict ?? 'allow') === 'allow' };
    this.#ignorePids = new Set(options.ignorePids ?? [process.pid]);
    this.#highWater = options.highWaterMark ?? 8192;
    this.#answerer = {
      answer: (ev, verdict, info) => this.#pending.get(ev.fd) === ev && this.#answer(ev.fd, verdict, info),
      preContent: (flags & 0xc) === InitFlag.CLASS_PRE_CONTENT,
    };
    this.#responses = new ResponseWriter(fd, (err) => {
      // ENOENT: the kernel no longer waits on this fd (already answered). Anything else is a
      // real failure the user must see.
      if ((err as { code?: string }).code !== 'ENOENT') this.#onError(err);
    });
  }

  /**
   * Create a kernel group.
   * @throws FanotifyError naming the missing privilege or kernel feature.
   */
  static open(options: GroupOptions = {}): FanotifyGroup {
    let flags = InitFlag.CLOEXEC | InitFlag.NONBLOCK | CLASS_FLAGS[options.class ?? 'notif'];
    for (const r of options.report ?? []) {
      const bit = REPORT_FLAGS[r];
      if (bit === undefined) throw new TypeError(`unknown report option "${r}"; valid: ${Object.keys(REPORT_FLAGS).join(', ')}`);
      flags |= bit;
    }
    if (options.unlimitedQueue) flags |= InitFlag.UNLIMITED_QUEUE;
    if (options.unlimitedMarks) flags |= InitFlag.UNLIMITED_MARKS;
    if (options.audit) flags |= InitFlag.ENABLE_AUDIT;
    let fd: number;
    try {
      fd = native.init(flags, options.eventFdFlags ?? DEFAULT_EVENT_FD_FLAGS);
    } catch (err) {
      throw explainInitError(err, flags);
    }
    return new FanotifyGroup(fd, flags, options);
  }

  /**
   * Wrap a group fd created elsewhere, e.g. inherited from a supervisor process that keeps the
   * group alive across restarts of the process that handles its events. `flags` are the
   * fanotify_init flags the fd was created with (they decide which verdicts are allowed and how
   * mark errors are explained). {@link close} closes this process's copy of the fd only.
   */
  static fromFd(fd: number, flags: number, options: GroupOptions = {}): FanotifyGroup {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fromFd: not an fd: ${String(fd)}`);
    return new FanotifyGroup(fd, flags, options);
  }

  /** True once {@link close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Permission events read and not yet answered. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * How many answers were written, in how many write calls. Answers given while one read batch
   * is handled (synchronously, by a listener) are written together when the batch ends.
   */
  get responseStats(): ResponseStats {
    return this.#responses.stats;
  }

  /**
   * Add a mark (or an ignore mark) on a path.
   * @throws FanotifyError that names the problem: privilege, filesystem type, kernel version.
   */
  mark(path: string, options: MarkOptions): void {
    this.#modifyMark(MarkFlag.ADD, path, options);
  }

  /** Remove events from a mark (or from an ignore mark with `ignore`). */
  unmark(path: string, options: MarkOptions): void {
    this.#modifyMark(MarkFlag.REMOVE, path, options);
  }

  /**
   * Add a mark on the object an open fd refers to, e.g. an event's fd (fanotify_mark with a NULL
   * path). This is how an ignore mark is placed on exactly the file an event was about.
   */
  markFd(fd: number, options: Omit<MarkOptions, 'dirFd'>): void {
    this.#modifyMark(MarkFlag.ADD, null, { ...options, dirFd: fd });
  }

  /** Remove events from the mark (or, with `ignore`, the ignore mark) of the object an open fd refers to. */
  unmarkFd(fd: number, options: Omit<MarkOptions, 'dirFd'>): void {
    this.#modifyMark(MarkFlag.REMOVE, null, { ...options, dirFd: fd });
  }

  /** Remove every mark of a kind (`inode` also flushes ignore marks' inode marks). */
  flush(kind: MarkKind = 'inode'): void {
    this.#assertOpen();
    try {
      native.mark(this.fd, MarkFlag.FLUSH | KIND_FLAGS[kind], 0, -100, null);
    } catch (err) {
      throw explainMarkError(err, { path: '(flush)', kind, mask: 0, groupFlags: this.flags });
    }
  }

  #modifyMark(op: number, path: string | null, o: MarkOptions): void {
    this.#assertOpen();
    const kind = o.kind ?? 'inode';
    let flags = op | KIND_FLAGS[kind];
    if (o.ignore) flags |= MarkFlag.IGNORE;
    if (o.surviveModify) flags |= MarkFlag.IGNORED_SURV_MODIFY;
    if (o.evictable) flags |= MarkFlag.EVICTABLE;
    if (o.dontFollow) flags |= MarkFlag.DONT_FOLLOW;
    if (o.onlyDir) flags |= MarkFlag.ONLYDIR;
    let mask = maskOf(o.events);
    if (o.onDir) mask |= EventBit.ONDIR;
    if (o.onChild) mask |= EventBit.EVENT_ON_CHILD;
    mask >>>= 0;
    try {
      native.mark(this.fd, flags, mask, o.dirFd ?? -100, path);
    } catch (err) {
      let fsType: number | undefined;
      try {
        fsType = path === null ? native.fsidOfFd(o.dirFd ?? -1).type : native.fsid(path).type;
      } catch {
        // The path itself may be the problem; the message then says so without a type.
      }
      const where = path ?? `fd ${o.dirFd ?? -1}`;
      throw explainMarkError(err, { path: where, kind, mask, groupFlags: this.flags, fsType });
    }
  }

  /**
   * Deliver events to a handler, in order. The handler may be async: an event's fd is closed
   * and, for a permission event, the default verdict given if still unanswered, once the
   * handler settles.
   */
  listen(handler: EventHandler, options: ListenOptions = {}): void {
    this.#claim('listener');
    if (options.onError) this.#onError = options.onError;
    this.#onReadFailure = options.onReadFailure;
    this.#start((ev) => this.#dispatch(handler, ev), options.onBatchEnd);
  }

  #dispatch(handler: EventHandler, ev: GroupEvent): void {
    let result: void | Promise<void>;
    try {
      result = handler(ev);
    } catch (err) {
      this.#finish(ev, err);
      return;
    }
    if (result && typeof (result as Promise<void>).then === 'function') {
      this.#inFlight++;
      this.#updateFlow();
      (result as Promise<void>).then(
        () => this.#settled(ev, undefined),
        (err: unknown) => this.#settled(ev, err),
      );
    } else {
      this.#finish(ev, undefined);
    }
  }

  #settled(ev: GroupEvent, err: unknown): void {
    this.#inFlight--;
    this.#finish(ev, err);
    this.#updateFlow();
  }

  /** After a handler is done with an event: report its failure, answer, close its fds. */
  #finish(ev: GroupEvent, err: unknown): void {
    if (err !== undefined) this.#onError(err);
    if (isPermissionEvent(ev)) {
      if (!ev.answered) this.#answerer.answer(ev as PermEvent, this.#defaultVerdict);
    } else {
      this.#release(ev);
    }
  }

  /**
   * For a listener's async handler that has just answered: let the process it released run
   * first, then handle what is queued, before the handler's remaining work, which no process waits
   * on (an ignore mark, a log record). A released process that waits for this CPU gets it
   * (`sched_yield`), and the events queued by then (often that process's next, e.g. a sequential
   * reader's next open) are read and delivered now instead of at the loop's next poll. Within
   * the delivery of a batch, the yield and the read come right after it; the group does that by
   * itself for a batch whose events it answered as they were delivered. Does nothing while
   * paused, or for an iterator.
   */
  yieldToAnswered(): void {
    if (this.#consumer === 'listener') this.#reader?.readQueued?.(true);
  }

  /** Async iteration over events. Breaking out of the loop closes the group. */
  [Symbol.asyncIterator](): AsyncIterator<GroupEvent> {
    this.#claim('iterator');
    this.#start((ev) => {
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = undefined;
        this.#hand(ev);
        w.resolve({ value: ev, done: false });
      } else {
        this.#queue.push(ev);
        this.#updateFlow();
      }
    });
    return {
      next: () => {
        this.#releaseLastDelivered();
        const ev = this.#queue.shift();
        if (ev) {
          this.#updateFlow();
          this.#hand(ev);
          return Promise.resolve({ value: ev, done: false });
        }
        if (this.#failure !== undefined) return Promise.reject(this.#failure);
        if (this.#closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => {
          this.#waiter = { resolve, reject };
        });
      },
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }

  #hand(ev: GroupEvent): void {
    this.#lastDelivered = ev;
  }

  #releaseLastDelivered(): void {
    const ev = this.#lastDelivered;
    this.#lastDelivered = undefined;
    // Permission events stay open until answered (or the deadline); others end here.
    if (ev && !isPermissionEvent(ev)) this.#release(ev);
  }

  #claim(kind: 'iterator' | 'listener'): void {
    this.#assertOpen();
    if (this.#consumer) throw new Error(`this group already delivers events to a ${this.#consumer}; use one consumer`);
    this.#consumer = kind;
  }

  #assertOpen(): void {
    if (this.#closed) throw new FanotifyError('the fanotify group is closed', 'EBADF');
  }

  #start(deliver: (ev: GroupEvent) => void, onBatchEnd?: () => void): void {
    this.#reader = native.startReader(
      this.fd,
      this.options.readBufferSize ?? 256 * 1024,
      (err, batch) => {
        if (err) return this.#fail(err);
        if (batch) {
          const answeredBefore = this.#responses.total;
          this.#ingest(batch, deliver);
          onBatchEnd?.();
          this.#nap();
          // The batch released processes: right after it, yield and read once more, for what
          // they queue next (see yieldToAnswered).
          if (this.#responses.total !== answeredBefore) this.#reader?.readQueued?.(true);
        }
      },
      this.options.accessTable,
    );
  }

  #nap(): void {
    const delay = this.options.batchDelayMs ?? 0;
    if (delay <= 0 || this.#napping || !this.#reader) return;
    this.#napping = true;
    this.#reader.pause();
    setTimeout(() => {
      this.#napping = false;
      if (this.#reader && !this.#paused) this.#reader.resume();
    }, delay);
  }

  /**
   * Run fn with its answers queued, then write them all in one writev (and close their fds). No
   * answer waits on anything but fn: the answers of one read batch, of the deadlines that fall
   * due together, of a close.
   */
  #together(fn: () => void): void {
    const outer = this.#batching;
    this.#batching = true;
    try {
      fn();
    } finally {
      this.#batching = outer;
      // Also when nested (a handler closing the group): what is queued goes out before the fd closes.
      this.#writeAnswers();
    }
  }

  #ingest(batch: Buffer, deliver: (ev: GroupEvent) => void): void {
    this.#together(() => this.#deliverAll(batch, deliver));
  }

  #deliverAll(batch: Buffer, deliver: (ev: GroupEvent) => void): void {
    let offset = 0;
    while (offset < batch.length) {
      let decoded: { event: DecodedEvent; next: number };
      try {
        decoded = decodeEventAt(batch, offset);
      } catch (err) {
        // Nothing after a malformed event can be trusted; a permission event whose fd we
        // could still read gets the default verdict so no process waits forever.
        this.#rescueMalformed(batch, offset);
        this.#onError(err);
        if (this.#consumer === 'iterator' && err instanceof DecodeError) this.#fail(err);
        return;
      }
      offset = decoded.next;
      const ev = this.#prepare(decoded.event);
      if (ev) deliver(ev);
    }
  }

  #rescueMalformed(batch: Buffer, offset: number): void {
    if (batch.length - offset < 24) return;
    const mask = batch.readUInt32LE(offset + 8);
    const fd = batch.readInt32LE(offset + 16);
    if (fd < 0) return;
    if (mask & PERMISSION_BITS) this.#answer(fd, this.#defaultVerdict, undefined, true);
    else this.#closeFd(fd);
  }

  /** Attach controls, filter our own pids, start the deadline. Undefined when filtered. */
  #prepare(raw: DecodedEvent): GroupEvent | undefined {
    const isPerm = (raw.mask & PERMISSION_BITS) !== 0;
    if (this.#ignorePids.has(raw.pid)) {
      if (isPerm) this.#answer(raw.fd, { allow: true }, undefined, true);
      else this.#closeEventFds(raw.fd, raw.pidfd, false);
      return undefined;
    }
    if (!isPerm) {
      const ev = raw as GroupEvent & { takeFd: () => number };
      if (raw.fd < 0 && raw.pidfd === undefined) {
        ev.takeFd = noFd;
      } else {
        const state = { taken: false };
        ev.takeFd = () => {
          state.taken = true;
          return raw.fd;
        };
        takenState.set(ev, state);
      }
      return ev;
    }
    return this.#permissionEvent(raw as PermissionEventData);
  }

  #permissionEvent(raw: PermissionEventData): PermissionEvent {
    const ev = new PermEvent(raw, this.#answerer, performance.now() + this.#timeoutMs);
    this.#pending.set(raw.fd, ev);
    this.#deadlineTimer ??= this.#armDeadline(this.#timeoutMs);
    return ev;
  }

  #armDeadline(ms: number): NodeJS.Timeout {
    const t = setTimeout(this.#onDeadline, ms);
    if (!this.#refed) t.unref();
    return t;
  }

  /** Answer every pending event that is due, and wait for the next one. */
  readonly #onDeadline = (): void => {
    this.#deadlineTimer = undefined;
    this.#together(() => {
      const now = performance.now();
      for (const ev of this.#pending.values()) {
        const left = PermEvent.deadlineOf(ev) - now;
        // Timers count whole ms of the loop's clock: within 1 ms is due.
        if (left > 1) {
          this.#deadlineTimer = this.#armDeadline(Math.ceil(left));
          return;
        }
        this.#answer(ev.fd, this.#defaultVerdict);
      }
    });
  };

  /**
   * Write a verdict once. Later calls for the same fd are no-ops.
   * @returns true when this call answered the event.
   */
  #answer(fd: number, verdict: Verdict, info?: AuditRuleInfo, untracked = false): boolean {
    const ev = this.#pending.get(fd);
    if (!ev && !untracked) return false;
    this.#pending.delete(fd);
    const ownsFd = ev ? PermEvent.settle(ev) : true;
    if (!this.#closed) {
      if (info) this.#responses.addEncoded(encodeResponse(fd, verdict, info));
      else this.#responses.add(fd, responseWord(verdict));
    }
    if (this.#batching) {
      if (ownsFd) this.#closeAfterAnswers.push(fd);
    } else {
      this.#writeAnswers();
      if (ownsFd) this.#closeFd(fd);
    }
    // An unref'd group must not be kept alive by a deadline with nothing left to answer.
    if (!this.#refed && this.#pending.size === 0) this.#clearDeadline();
    this.#updateFlow();
    return true;
  }

  /** Write the queued answers, then close the event fds that waited for them. */
  #writeAnswers(): void {
    this.#responses.flush();
    const fds = this.#closeAfterAnswers;
    if (fds.length === 0) return;
    this.#closeAfterAnswers = [];
    for (const fd of fds) this.#closeFd(fd);
  }

  #release(ev: GroupEvent): void {
    const state = takenState.get(ev);
    if (!state) return;
    takenState.delete(ev);
    this.#closeEventFds(ev.fd, ev.pidfd, state.taken);
  }

  #closeEventFds(fd: number, pidfd: number | undefined, fdTaken: boolean): void {
    if (fd >= 0 && !fdTaken) this.#closeFd(fd);
    if (pidfd !== undefined && pidfd >= 0) this.#closeFd(pidfd);
  }

  #closeFd(fd: number): void {
    if (fd < 0) return;
    try {
      native.close(fd);
    } catch {
      // Closing is best effort: the fd is unusable either way.
    }
  }

  /** Stop reading while too much is held in memory; the kernel queue takes the rest. */
  #updateFlow(): void {
    if (!this.#reader) return;
    const held = this.#queue.length + this.#inFlight + this.#pending.size;
    if (!this.#paused && held >= this.#highWater) {
      this.#paused = true;
      this.#reader.pause();
    } else if (this.#paused && held < this.#highWater / 2) {
      this.#paused = false;
      if (!this.#napping) this.#reader.resume();
    }
  }

  #fail(err: unknown): void {
    this.#failure = err;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.reject(err);
    } else if (this.#consumer === 'listener') {
      (this.#onReadFailure ?? this.#onError)(err);
    }
  }

  /** Let the process exit even though the group is still reading. */
  unref(): void {
    this.#reader?.unref();
    this.#refed = false;
    if (this.#pending.size === 0) this.#clearDeadline();
    else this.#deadlineTimer?.unref();
  }

  /** Keep the process alive while the group is reading (the default). */
  ref(): void {
    this.#reader?.ref();
    this.#refed = true;
    this.#deadlineTimer?.ref();
  }

  #clearDeadline(): void {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
  }

  /**
   * Answer every pending permission event with the default verdict, close every event fd we
   * still hold, stop reading and close the group fd. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#reader?.stop();
    this.#reader = undefined;
    // Answer before marking closed, so the answers are written while the fd is open (in one
    // writev, with any that the batch being handled had queued).
    this.#together(() => {
      for (const fd of [...this.#pending.keys()]) this.#answer(fd, this.#defaultVerdict);
      for (const ev of this.#queue) {
        if (isPermissionEvent(ev)) this.#answer(ev.fd, this.#defaultVerdict);
        else this.#release(ev);
      }
    });
    this.#queue = [];
    this.#releaseLastDelivered();
    this.#clearDeadline();
    this.#closed = true;
    this.#closeFd(this.fd);
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve({ value: undefined, done: true });
    }
  }

  /** `await using group = FanotifyGroup.open(…)` closes it at scope end. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Per-event "fd taken" state of notification events that hold fds. */
const takenState = new WeakMap<object, { taken: boolean }>();
