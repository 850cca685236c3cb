/**
 * The worker of a mount: it owns nothing the kernel cares about except marks on a group fd it
 * inherited from the supervisor. It makes the placeholders, marks every file that is not fully
 * present, answers pre-content events by hydrating, and serves the control socket.
 * @packageDocumentation
 */
import { fstatSync, writeSync } from 'node:fs';
import { lstat, mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FanotifyGroup, isPermissionEvent, type GroupEvent, type PermissionEvent } from '../group.js';
import type { EventName } from '../kernel/names.js';
import { native, type AccessTable } from '../native.js';
import { AccessState } from './access.js';
import { serveControl, type ControlRequest } from './control.js';
import { Hydrator, needsMark, type Tracked } from './hydrator.js';
import { chunkCount, parseManifest, type FileEntry, type Manifest } from './manifest.js';
import { createPlaceholders } from './placeholders.js';
import { RangeMap, stateOf } from './rangemap.js';
import { openSource, type Source } from './source.js';

/** What the supervisor hands a worker. */
export interface WorkerConfig {
  /** The inherited group fd and its fanotify_init flags. */
  readonly groupFd: number;
  readonly groupFlags: number;
  /** Where to write the highest event fd number seen (int32 LE), before handling it. */
  readonly reportFd: number;
  readonly source: string;
  readonly target: string;
  readonly backing: string;
  readonly stateDir: string;
  readonly socket: string;
  /** Source request deadline in ms. */
  readonly timeoutMs: number;
  /** Keep hydrated bytes under this many with LRU eviction; 0 = no limit. */
  readonly maxCacheSize: number;
  /** Keep each eviction's EBUSY window open this long (ms), so tests can observe it. Default 0. */
  readonly evictHoldMs?: number;
  /** Answer a read only once its chunks are durable and recorded (see HydratorOptions). Default true. */
  readonly syncBeforeAllow?: boolean;
}

/** What the worker needs from its supervisor. */
export interface WorkerHooks {
  /** Placeholders exist and are marked: the target may be made reachable. */
  ready(): void;
  /** Make the target unreachable; rejects with the reason (e.g. busy). */
  unmount(force: boolean): Promise<void>;
  /** A line for the log. */
  log(msg: string): void;
  /** Log `msg` and end the worker now (the supervisor answers what it held and restarts it). */
  fatal(msg: string): void;
}

/** A file with content missing: reads and execs wait for it; modify tells us it turned local. */
const MARK: readonly EventName[] = ['preAccess', 'openExecPerm', 'modify'];
const MARK_EVICTING: readonly EventName[] = [...MARK, 'openPerm'];
/** How long an exec waits for the file's other events to be answered (their writable fds closed). */
const EXEC_QUIET_MS = 2000;
/** A loop turn's worth of waiting for events read but not yet delivered. */
const EXEC_SETTLE_MS = 5;

/** Why a file was or was not evicted. */
export interface EvictResult {
  readonly path: string;
  readonly evicted: boolean;
  readonly reason?: string;
}

/** One running mount. */
export class HsmDaemon {
  readonly #cfg: WorkerConfig;
  readonly #hooks: WorkerHooks;
  readonly #manifest: Manifest;
  readonly #map: RangeMap;
  readonly #source: Source;
  readonly #group: FanotifyGroup;
  /** Files whose reads of present chunks the native reader answers without us. */
  readonly #table: AccessTable;
  readonly #hydrator: Hydrator;
  readonly #byPath = new Map<string, Tracked>();
  readonly #byIno = new Map<number, Tracked>();
  /** Permission events being handled per file: each holds a writable event fd until answered. */
  readonly #handling = new Map<Tracked, number>();
  /** Exec permission events waiting for their file, answered together (see #exec). */
  readonly #execs = new Map<Tracked, PermissionEvent[]>();
  #maxReported = -1;
  #cacheBytes = 0;
  #lruScheduled = false;
  #server: Server | undefined;

  private constructor(cfg: WorkerConfig, hooks: WorkerHooks, manifest: Manifest, map: RangeMap, source: Source) {
    this.#cfg = cfg;
    this.#hooks = hooks;
    this.#manifest = manifest;
    this.#map = map;
    this.#source = source;
    // It reports the fds it answers to the supervisor itself, like #onEvent.
    this.#table = native.createAccessTable(cfg.reportFd);
    this.#group = FanotifyGroup.fromFd(cfg.groupFd, cfg.groupFlags, {
      class: 'preContent',
      // Our own deadline is the source's; the group's is a backstop that denies, never allows.
      timeoutMs: cfg.timeoutMs * 3 + 10_000,
      defaultVerdict: 'deny',
      highWaterMark: 4096,
      accessTable: this.#table,
    });
    this.#hydrator = new Hydrator({
      source,
      chunkSize: manifest.chunkSize,
      backing: cfg.backing,
      rangeMap: map,
      syncBeforeAllow: cfg.syncBeforeAllow ?? true,
      onPresent: (t) => this.#applyMark(t),
      onBytes: (_t, n) => {
        this.#cacheBytes += n;
        this.#scheduleLru();
      },
      onBackgroundError: (t, err) => hooks.log(`background fetch of ${t.entry.path}: ${(err as Error).message}`),
    });
  }

  /** Load state, make placeholders, mark, listen, serve control; then tell the supervisor. */
  static async start(cfg: WorkerConfig, hooks: WorkerHooks): Promise<HsmDaemon> {
    const source = openSource(cfg.source, { timeoutMs: cfg.timeoutMs });
    const manifest = await loadManifest(cfg.stateDir, source);
    const map = new RangeMap(cfg.stateDir);
    const known = map.meta('manifestHash');
    if (known !== undefined && known !== manifest.hash) {
      map.close();
      throw new Error(`${cfg.stateDir} holds the state of another published tree (manifest ${known.slice(0, 12)}…); use another --state-dir or remove it`);
    }
    map.setMeta('manifestHash', manifest.hash);
    const files = manifest.entries.filter((e): e is FileEntry => e.type === 'file');
    map.addFiles(files.map((f) => ({ path: f.path, size: f.size, chunks: chunkCount(f.size, manifest.chunkSize) })));
    await createPlaceholders(cfg.backing, manifest);
    const d = new HsmDaemon(cfg, hooks, manifest, map, source);
    await d.#track(files);
    d.#group.listen((ev) => d.#onEvent(ev), {
      onError: (err) => hooks.log(`event: ${(err as Error).message ?? String(err)}`),
      // Reads it would never see again would wait forever: die, so the supervisor answers the
      // in-flight ones with EIO and starts a worker that reads.
      onReadFailure: (err) => hooks.fatal(`reading pre-content events failed (${(err as Error).message ?? String(err)}); restarting the worker`),
    });
    d.#markAll();
    d.#server = serveControl(cfg.socket, (req, progress) => d.#control(req, progress));
    hooks.ready();
    return d;
  }

  async #track(files: readonly FileEntry[]): Promise<void> {
    const recs = new Map(this.#map.all().map((r) => [r.path, r]));
    const cs = this.#manifest.chunkSize;
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < files.length) {
        const entry = files[next++] as FileEntry;
        const rec = recs.get(entry.path);
        if (!rec) throw new Error(`range map has no row for ${entry.path}`);
        const st = await lstat(join(this.#cfg.backing, entry.path));
        const access = new AccessState(rec.chunks);
        // Loaded from the range map: durable and recorded, so allowed at once in either mode.
        access.copyBits(rec.bitmap);
        access.lastAccess = rec.lastAccess;
        const t: Tracked = { entry, rec, dev: st.dev, ino: st.ino, access, inflight: new Map(), writer: undefined, writes: Promise.resolve(), unsynced: new Map() };
        this.#byPath.set(entry.path, t);
        this.#byIno.set(st.ino, t);
        this.#cacheBytes += Math.min(rec.size, rec.have * cs);
      }
    };
    await Promise.all(Array.from({ length: 32 }, lane));
  }

  #markAll(): void {
    for (const t of this.#byPath.values()) this.#applyMark(t);
  }

  /**
   * The mark a file needs in its state: pre-content and modify while content is missing; only
   * modify (which never delays a read) once present, to notice it turning local; none if local.
   */
  #applyMark(t: Tracked): void {
    const path = this.#hydrator.backingPath(t);
    if (needsMark(t)) {
      this.#group.mark(path, { events: MARK });
      if (!t.rec.local) this.#table.set(t.dev, t.ino, t.access.buffer, this.#manifest.chunkSize, t.rec.size);
      return;
    }
    this.#table.delete(t.dev, t.ino);
    try {
      this.#group.unmark(path, { events: t.rec.local ? MARK_EVICTING : MARK_EVICTING.filter((e) => e !== 'modify') });
    } catch {
      // Not marked (ENOENT): nothing to stop.
    }
    if (!t.rec.local) this.#group.mark(path, { events: ['modify'] });
  }

  #onEvent(ev: GroupEvent): Promise<void> | void {
    if (!isPermissionEvent(ev)) {
      if (ev.names.includes('modify')) this.#modified(ev);
      return;
    }
    // Before anything can fail: the supervisor must know which fds to answer if we die.
    if (ev.fd > this.#maxReported) {
      this.#maxReported = ev.fd;
      const b = Buffer.alloc(4);
      b.writeInt32LE(ev.fd);
      try {
        writeSync(this.#cfg.reportFd, b);
      } catch {
        // EPIPE: the supervisor is gone, there is nobody left to answer for us; serve on.
      }
    }
    return this.#permission(ev);
  }

  #lookup(fd: number): Tracked | undefined {
    try {
      const st = fstatSync(fd);
      const t = this.#byIno.get(st.ino);
      // A truncate raises a pre-content event but no FAN_MODIFY (verified on 6.18): a size
      // other than the published one means the user changed the file.
      if (t && st.size !== t.rec.size) this.#setLocal(t);
      return t;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether a file was changed here since it became present (its size differs, or its ctime
   * moved since we recorded it): then it is local. Catches changes made while no daemon ran and
   * truncates, which raise no FAN_MODIFY.
   */
  async #checkLocal(t: Tracked): Promise<boolean> {
    if (t.rec.local) return true;
    if (t.rec.have < t.rec.chunks) return false;
    try {
      const st = await stat(this.#hydrator.backingPath(t), { bigint: true });
      const ctimeMoved = t.rec.presentCtime !== null && t.unsynced.size === 0 && st.ctimeNs.toString() !== t.rec.presentCtime;
      if (Number(st.size) !== t.rec.size || ctimeMoved) this.#setLocal(t);
    } catch {
      // Gone from the backing tree: nothing to protect.
    }
    return t.rec.local;
  }

  async #permission(ev: PermissionEvent): Promise<void> {
    const t = this.#lookup(ev.fd);
    if (!t) {
      ev.allow();
      return;
    }
    if (t.access.blocked) {
      ev.deny('EBUSY');
      return;
    }
    const settled = this.#hydrator.settled(t);
    if (ev.type === 'openExecPerm' && !settled) return this.#exec(t, ev);
    if (ev.type !== 'preAccess' || settled) {
      ev.allow();
      return;
    }
    t.rec.lastAccess = Date.now();
    // The event fd is writable and raises no events: the file's fetches write through it.
    const release = this.#hydrator.wantsEventFd(t) ? this.#hydrator.adoptFd(t, ev.takeFd()) : undefined;
    const range = ev.range ?? { offset: 0, count: t.rec.size };
    this.#handling.set(t, (this.#handling.get(t) ?? 0) + 1);
    try {
      await this.#hydrator.access(t, range.offset, range.count);
      ev.allow();
    } catch (err) {
      this.#hooks.log(`${t.entry.path} @${range.offset}+${range.count}: ${(err as Error).message}`);
      ev.deny('EIO');
    } finally {
      // Answered: the group has closed the event's fd, or it stays open only as the writer.
      release?.();
      this.#handling.set(t, (this.#handling.get(t) ?? 1) - 1);
    }
  }

  /**
   * An exec of a file with content missing. execve denies writers (ETXTBSY) right after this
   * event is answered, and from then on an O_RDWR event fd cannot be opened for the file, so its
   * later pre-content events (reads of the ELF, page faults) would be denied by the kernel. So the
   * whole file is made present, durable and unmarked first, and every writable fd we hold on it
   * (our writer, readers' event fds, the fds of every exec waiting on it, this one's) is closed
   * before the answers are written.
   */
  async #exec(t: Tracked, ev: PermissionEvent): Promise<void> {
    t.rec.lastAccess = Date.now();
    const waiting = this.#execs.get(t) ?? [];
    this.#execs.set(t, waiting);
    waiting.push(ev);
    let failure: Error | undefined;
    try {
      await this.#hydrator.hydrateAll(t, true);
      await this.#hydrator.closeWriter(t);
      // Events already read from the kernel (their fds open) but not yet handed to us, e.g.
      // other execs of this file, get a few turns of the loop to arrive and join the batch.
      const quietBy = Date.now() + EXEC_QUIET_MS;
      for (let turn = 0; turn < 3; turn++) {
        await sleep(EXEC_SETTLE_MS);
        while ((this.#handling.get(t) ?? 0) > 0 && Date.now() < quietBy) await sleep(2);
      }
    } catch (err) {
      failure = err as Error;
      this.#hooks.log(`exec of ${t.entry.path}: ${failure.message}`);
    }
    // Answered together: an exec let go while another one's writable event fd is still open
    // would fail. Closed before answering, in one tick. Our reading thread may hand a closed
    // number to a new event before the answer is written; the kernel gives an answer to the
    // oldest event with that fd number, which is ours, and the new event reaches the group's
    // table only in a later tick, after ours left it. That thread also answers reads of present
    // chunks itself: held meanwhile, so it cannot answer such a new event before ours is written.
    const batch = waiting.splice(0);
    if (this.#execs.get(t) === waiting) this.#execs.delete(t);
    this.#table.hold(true);
    try {
      for (const e of batch) native.close(e.takeFd());
      for (const e of batch) {
        if (failure) e.deny('EIO');
        else e.allow();
      }
    } finally {
      this.#table.hold(false);
    }
  }

  /** A write went through: fill the rest from the source, and never evict it. */
  #modified(ev: GroupEvent): void {
    const t = this.#lookup(ev.fd);
    if (!t) return;
    if (needsMark(t) && this.#hydrator.wantsEventFd(t)) this.#hydrator.adoptFd(t, ev.takeFd())();
    this.#setLocal(t);
  }

  /** The user changed the file: it is local from now on, completed from the source if partial. */
  #setLocal(t: Tracked): void {
    if (t.rec.local) return;
    t.rec.local = true;
    // A local file's reads all come to us, as the files' reads did before the access table.
    this.#table.delete(t.dev, t.ino);
    this.#map.saveFlags(t.rec);
    if (!needsMark(t)) this.#applyMark(t);
    else this.#hydrator.hydrateAll(t).catch((err: unknown) => this.#hooks.log(`completing modified ${t.entry.path}: ${(err as Error).message}`));
  }

  #scheduleLru(): void {
    if (!this.#cfg.maxCacheSize || this.#cacheBytes <= this.#cfg.maxCacheSize || this.#lruScheduled) return;
    this.#lruScheduled = true;
    setTimeout(() => {
      this.#evictLru()
        .catch((err: unknown) => this.#hooks.log(`cache eviction: ${(err as Error).message}`))
        .finally(() => (this.#lruScheduled = false));
    }, 100).unref();
  }

  async #evictLru(): Promise<void> {
    // Reads the native reader answered count as uses too.
    for (const t of this.#byPath.values()) t.rec.lastAccess = Math.max(t.rec.lastAccess, t.access.lastAccess);
    const candidates = [...this.#byPath.values()]
      .filter((t) => t.rec.have > 0 && !t.rec.pinned && !t.rec.local && t.inflight.size === 0)
      .sort((a, b) => a.rec.lastAccess - b.rec.lastAccess);
    for (const t of candidates) {
      if (this.#cacheBytes <= this.#cfg.maxCacheSize) return;
      const r = await this.evict(t);
      if (!r.evicted && r.reason) this.#hooks.log(`cache eviction skipped ${t.entry.path}: ${r.reason}`);
    }
  }

  /**
   * Punch a file's content out. New opens get EBUSY meanwhile; a file open elsewhere (a write
   * lease fails), local, pinned or being fetched is refused with the reason.
   */
  async evict(t: Tracked): Promise<EvictResult> {
    const path = this.#hydrator.backingPath(t);
    const refuse = (reason: string): EvictResult => ({ path: t.entry.path, evicted: false, reason });
    if (t.rec.local) return refuse('local: modified here, never evicted');
    if (t.rec.pinned) return refuse('pinned (fan hsm unpin first)');
    if (t.access.blocked) return refuse('already being evicted');
    if (t.rec.have === 0) return { path: t.entry.path, evicted: false, reason: 'nothing to evict (placeholder)' };
    if (t.inflight.size > 0) return refuse('being fetched');
    await this.#hydrator.flush();
    if (await this.#checkLocal(t)) return refuse('local: changed since it was fetched, never evicted');
    t.access.blocked = true;
    try {
      await this.#hydrator.closeWriter(t);
      this.#group.mark(path, { events: MARK_EVICTING });
      const fh = await open(path, 'r+');
      try {
        // A write lease succeeds only if nobody else has the file open. It is a probe, dropped
        // at once: held, it would make a new opener wait for us (and send us SIGIO) instead of
        // reaching the open-permission event that answers EBUSY.
        try {
          native.setLease(fh.fd, native.constants.F_WRLCK);
          native.setLease(fh.fd, native.constants.F_UNLCK);
        } catch {
          return refuse('open by another process');
        }
        // Record first: a crash between the two steps then only makes us fetch again.
        const had = Math.min(t.rec.size, t.rec.have * this.#manifest.chunkSize);
        t.access.clear();
        t.rec.bitmap.fill(0);
        t.rec.have = 0;
        t.rec.presentCtime = null;
        this.#map.saveChunks(t.rec);
        // truncate, not FALLOC_FL_PUNCH_HOLE: it runs in the thread pool, so the pre-content
        // event it raises is answered by this thread instead of waiting on it.
        await fh.truncate(0);
        await fh.truncate(t.rec.size);
        const mtime = t.entry.mtimeMs / 1000;
        await fh.utimes(mtime, mtime);
        await fh.datasync();
        this.#cacheBytes -= had;
        if (this.#cfg.evictHoldMs) await sleep(this.#cfg.evictHoldMs);
        return { path: t.entry.path, evicted: true };
      } finally {
        await fh.close();
      }
    } finally {
      t.access.blocked = false;
      this.#group.unmark(path, { events: ['openPerm'] });
      this.#applyMark(t);
    }
  }

  /** Files named by user paths (files or directories under the target). */
  #select(paths: readonly string[]): Tracked[] {
    if (paths.length === 0) return [...this.#byPath.values()];
    const out = new Set<Tracked>();
    for (const p of paths) {
      if (p !== this.#cfg.target && !p.startsWith(`${this.#cfg.target}/`)) throw new Error(`${p} is not under ${this.#cfg.target}`);
      const rel = p.slice(this.#cfg.target.length + 1);
      let found = false;
      for (const [path, t] of this.#byPath) {
        if (rel === '' || path === rel || path.startsWith(`${rel}/`)) {
          out.add(t);
          found = true;
        }
      }
      if (!found && !this.#manifest.entries.some((e) => e.path === rel)) throw new Error(`${p}: not in the published tree`);
    }
    return [...out];
  }

  async #control(req: ControlRequest, progress: (p: Record<string, unknown>) => void): Promise<Record<string, unknown>> {
    switch (req.op) {
      case 'status': {
        const files = this.#select(req.paths);
        for (const t of files) await this.#checkLocal(t);
        return this.#status(files);
      }
      case 'pin':
      case 'unpin':
        for (const t of this.#select(req.paths)) {
          t.rec.pinned = req.op === 'pin';
          this.#map.saveFlags(t.rec);
        }
        return {};
      case 'evict': {
        const results: EvictResult[] = [];
        for (const t of this.#select(req.paths)) results.push(await this.evict(t));
        return { results };
      }
      case 'prefetch':
        return this.#prefetch(this.#select(req.paths), progress);
      case 'unmount':
        await this.#hooks.unmount(req.force);
        return {};
    }
  }

  #status(files: readonly Tracked[]): Record<string, unknown> {
    const cs = this.#manifest.chunkSize;
    const totals = { files: 0, placeholder: 0, partial: 0, present: 0, local: 0, pinned: 0, bytes: 0, presentBytes: 0 };
    const list = files.map((t) => {
      const state = stateOf(t.rec);
      const present = Math.min(t.rec.size, t.rec.have * cs);
      totals.files++;
      totals[state]++;
      if (t.rec.pinned) totals.pinned++;
      totals.bytes += t.rec.size;
      totals.presentBytes += present;
      return {
        path: join(this.#cfg.target, t.entry.path),
        state,
        percent: t.rec.chunks === 0 ? 100 : Math.floor((100 * t.rec.have) / t.rec.chunks),
        pinned: t.rec.pinned,
        size: t.rec.size,
      };
    });
    return { files: list, totals, workerPid: process.pid, fastReads: this.#table.stats().answered };
  }

  async #prefetch(files: readonly Tracked[], progress: (p: Record<string, unknown>) => void): Promise<Record<string, unknown>> {
    const cs = this.#manifest.chunkSize;
    const missing = (t: Tracked): number => t.rec.size - Math.min(t.rec.size, t.rec.have * cs);
    const bytesTotal = files.reduce((s, t) => s + missing(t), 0);
    let bytesDone = 0;
    const failed: { path: string; error: string }[] = [];
    const WINDOW = 16;
    for (const t of files) {
      for (let a = 0; a < t.rec.chunks; a += WINDOW) {
        const before = missing(t);
        try {
          await this.#hydrator.ensure(t, a, Math.min(t.rec.chunks, a + WINDOW) - 1);
        } catch (err) {
          failed.push({ path: join(this.#cfg.target, t.entry.path), error: (err as Error).message });
          break;
        }
        bytesDone += before - missing(t);
        progress({ path: join(this.#cfg.target, t.entry.path), bytesDone, bytesTotal });
      }
    }
    return { bytesDone, bytesTotal, failed };
  }

  /**
   * Close every writer we hold through the target (event fds are opened on the path the reader
   * used), so that an unmount does not find the target busy because of us; until
   * {@link resumeEventFds}, writes go through the backing path. Gives up waiting for writers in
   * use after `waitMs`.
   */
  async releaseEventFds(waitMs = 3000): Promise<void> {
    this.#hydrator.adoptEventFds = false;
    const closed = Promise.all([...this.#byPath.values()].map((t) => (t.writer?.silent ? this.#hydrator.closeWriter(t) : undefined)));
    await Promise.race([closed, sleep(waitMs)]);
  }

  /** The unmount did not happen: write through event fds again. */
  resumeEventFds(): void {
    this.#hydrator.adoptEventFds = true;
  }

  /** Stop serving: close the control socket, answer what is pending (deny), release our fd. */
  async stop(): Promise<void> {
    this.#server?.close();
    await this.#hydrator.flush();
    for (const t of this.#byPath.values()) await this.#hydrator.closeWriter(t);
    await this.#group.close();
    this.#source.close();
    this.#map.close();
  }
}

async function loadManifest(stateDir: string, source: Source): Promise<Manifest> {
  const cached = join(stateDir, 'manifest.json');
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  try {
    // After a restart the tree is served from the copy we verified at mount time, even offline.
    return parseManifest(await readFile(cached, 'utf8'), cached);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const text = await source.manifest();
  const m = parseManifest(text, `${source.location} manifest`);
  await writeFile(cached, text, { mode: 0o600 });
  return m;
}
