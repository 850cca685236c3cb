/**
 * The supervisor of a mount: it creates the pre-content group and keeps it for the whole life of
 * the mount, so a dying worker never releases it (the kernel would then ALLOW every pending read
 * and readers would see zeros in holes). It runs the worker with the group fd inherited, answers
 * the events a dead worker left pending with EIO, restarts it, and owns the bind mount that makes
 * the tree reachable: made after the worker's marks are in place, removed before the group is
 * released.
 * @packageDocumentation
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { writeSync } from 'node:fs';
import { chmod, mkdir, readdir, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { FanotifyGroup } from '../group.js';
import { encodeResponse } from '../kernel/encode.js';
import { FsMagic } from '../kernel/constants.js';
import { FanotifyError, fsTypeName } from '../errors.js';
import { native } from '../native.js';
import { mountId, register, socketPath, STATE_ROOT, unregister } from './registry.js';
import type { WorkerConfig } from './daemon.js';

const execFileP = promisify(execFile);
const WORKER = fileURLToPath(new URL('./worker-entry.js', import.meta.url));
/** Filesystems that accept pre-content marks (statfs f_type). */
const PRE_CONTENT_FS = new Set<number>([FsMagic.EXT4, FsMagic.XFS, FsMagic.BTRFS]);
/** More worker deaths than this within {@link CRASH_WINDOW_MS} is a crash loop. */
const CRASH_LIMIT = 5;
const CRASH_WINDOW_MS = 60_000;
/** Fd numbers above the highest one a worker reported that are answered too (events read but not reported yet). */
const SWEEP_MARGIN = 256;
/** How long an unmount waits for the worker to close the event fds it writes through. */
const RELEASE_WAIT_MS = 4000;
/** Event fds: writable, large-file (the kernel's O_LARGEFILE), close-on-exec. */
const EVENT_FD_FLAGS = native.constants.O_RDWR | native.constants.O_CLOEXEC | 0o100000;

/** Options of {@link mountTree}. */
export interface MountOptions {
  /** `http(s)://` URL of a published tree, or a local directory holding one. */
  readonly source: string;
  /** Empty directory on ext4/xfs/btrfs where the tree appears. */
  readonly target: string;
  /** Range map and cached manifest. Default /var/lib/fan/hsm/<id>. */
  readonly stateDir?: string;
  /** A directory (mode 0700) whose root/ holds the placeholders. Default `.<name>.fan-hsm` next to the target (same filesystem). */
  readonly backing?: string;
  /** Source request deadline in ms. Default 30 000. */
  readonly timeoutMs?: number;
  /** Keep hydrated bytes under this (LRU eviction). Default 0: no limit. */
  readonly maxCacheSize?: number;
  /** Keep each eviction's EBUSY window open this long (ms); for tests. Default 0. */
  readonly evictHoldMs?: number;
  /**
   * Answer a read only once the chunks it needs are durable (fdatasync) and recorded in the
   * range map. False: answer once they are written, and make them durable within 100 ms
   * (faster cold reads; a crash in between only costs a refetch). Default true.
   */
  readonly syncBeforeAllow?: boolean;
  /** Log lines (worker restarts, fetch failures). Default stderr. */
  readonly log?: (msg: string) => void;
}

/** A running mount. */
export interface MountHandle {
  readonly target: string;
  readonly backing: string;
  readonly stateDir: string;
  /** Resolves when the tree is unmounted and the group released. */
  readonly done: Promise<void>;
  /** Unmount (like `fan hsm unmount`); rejects when the target is busy and not `force`. */
  unmount(force?: boolean): Promise<void>;
}

async function fsCheck(path: string, what: string): Promise<void> {
  const { type } = native.fsid(path);
  if (!PRE_CONTENT_FS.has(type)) {
    throw new FanotifyError(`ext4/xfs/btrfs required for pre-content marks; ${what} ${path} is ${fsTypeName(type)}`, 'EOPNOTSUPP');
  }
}

/**
 * Mount a published tree: start the supervisor logic in this process and the worker as a child.
 * Resolves once the target is reachable.
 */
export async function mountTree(o: MountOptions): Promise<MountHandle> {
  const log = o.log ?? ((m: string) => process.stderr.write(`fan hsm: ${m}\n`));
  let target: string;
  try {
    target = await realpath(o.target);
    if (!(await stat(target)).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new FanotifyError(`hsm mount: target ${o.target}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; create an empty directory on ext4/xfs/btrfs`, 'ENOENT');
  }
  await fsCheck(target, 'target');
  if ((await readdir(target)).length > 0) throw new FanotifyError(`hsm mount: target ${target} is not empty (or already mounted)`, 'ENOTEMPTY');
  // Placeholders live in root/ of a directory only root can enter: nobody reaches them before
  // they are marked, even outside the bind mount.
  const container = o.backing ?? join(dirname(target), `.${basename(target)}.fan-hsm`);
  await mkdir(container, { recursive: true, mode: 0o700 });
  await chmod(container, 0o700);
  await fsCheck(container, 'backing directory');
  const backing = join(container, 'root');
  await mkdir(backing, { recursive: true });
  await chmod(backing, 0o755);
  const stateDir = o.stateDir ?? join(STATE_ROOT, mountId(target));
  const source = /^https?:\/\//.test(o.source) ? o.source : await realpath(o.source);
  // Deny by default: this process answers events only in a crash loop, and never with ALLOW.
  // Event fds are opened O_RDWR: the kernel opens them without notification, so the worker's
  // writes through them raise no pre-content events of their own.
  const group = FanotifyGroup.open({ class: 'preContent', unlimitedMarks: true, unlimitedQueue: true, defaultVerdict: 'deny', eventFdFlags: EVENT_FD_FLAGS });
  const socket = socketPath(target);
  await mkdir(dirname(socket), { recursive: true, mode: 0o700 });
  const cfg: Omit<WorkerConfig, 'groupFd' | 'reportFd'> = {
    groupFlags: group.flags,
    source,
    target,
    backing,
    stateDir,
    socket,
    timeoutMs: o.timeoutMs ?? 30_000,
    maxCacheSize: o.maxCacheSize ?? 0,
    evictHoldMs: o.evictHoldMs ?? 0,
    syncBeforeAllow: o.syncBeforeAllow ?? true,
  };

  let mounted = false;
  let stopping = false;
  let child: ChildProcess | undefined;
  let everReady = false;
  const deaths: number[] = [];
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  let startWait: { resolve: () => void; reject: (e: Error) => void } | undefined;
  const started = new Promise<void>((resolve, reject) => (startWait = { resolve, reject }));

  let nextRelease = 1;
  const releaseWaits = new Map<number, () => void>();
  /** Ask the worker to close the fds it holds through the target (bounded: it may be stuck or dying). */
  const releaseWorkerFds = async (): Promise<void> => {
    const c = child;
    if (!c?.connected) return;
    const id = nextRelease++;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, RELEASE_WAIT_MS);
      releaseWaits.set(id, () => (clearTimeout(timer), resolve()));
      c.send({ t: 'release', id });
    });
    releaseWaits.delete(id);
  };

  const doUnmount = async (force: boolean): Promise<void> => {
    if (!mounted) return;
    await releaseWorkerFds();
    try {
      await execFileP('umount', [target]);
    } catch (err) {
      const stderr = String((err as { stderr?: string }).stderr ?? '');
      if (!force) {
        if (child?.connected) child.send({ t: 'resume' });
        throw new Error(`${target} is busy: processes still use files in it (see \`fuser -vm ${target}\`); close them or unmount with --force`, { cause: err });
      }
      log(`umount ${target}: ${stderr.trim()}; detaching lazily`);
      await execFileP('umount', ['-l', target]);
    }
    mounted = false;
  };

  const finish = async (): Promise<void> => {
    await doUnmount(true).catch((err: unknown) => log(`unmount: ${(err as Error).message}`));
    // Only now, with the tree unreachable, may the kernel's release-time ALLOW happen.
    await group.close();
    unregister(target);
    resolveDone();
  };

  const answerLeftovers = (maxFd: number): void => {
    const deny = (fd: number): void => {
      try {
        writeSync(group.fd, encodeResponse(fd, { allow: false, errno: 'EIO' }));
      } catch {
        // ENOENT: no event pending on that fd number.
      }
    };
    for (let fd = 3; fd <= maxFd + SWEEP_MARGIN; fd++) deny(fd);
  };

  const spawnWorker = (): void => {
    // fdatasync, source reads, writes and hashing all run in the thread pool; with libuv's
    // default 4 threads a long fdatasync starves the writes readers are waiting for.
    const env = { ...process.env, UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? '16' };
    const c = spawn(process.execPath, [WORKER], { stdio: ['ignore', 'inherit', 'inherit', 'ipc', group.fd, 'pipe'], env });
    child = c;
    let maxFd = -1;
    let rest = Buffer.alloc(0);
    ((c.stdio as unknown as Readable[])[5] as Readable).on('data', (b: Buffer) => {
      rest = Buffer.concat([rest, b]);
      while (rest.length >= 4) {
        maxFd = Math.max(maxFd, rest.readInt32LE(0));
        rest = rest.subarray(4);
      }
    });
    c.on('message', (m: { t: string; msg?: string; force?: boolean; id?: number }) => {
      if (m.t === 'log') log(m.msg ?? '');
      else if (m.t === 'released') releaseWaits.get(m.id ?? 0)?.();
      else if (m.t === 'fatal') {
        startWait?.reject(new Error(m.msg ?? 'worker failed'));
      } else if (m.t === 'ready') {
        if (mounted) return;
        execFileP('mount', ['--bind', backing, target]).then(
          () => {
            mounted = true;
            everReady = true;
            register({ target, backing, stateDir, socket, pid: process.pid, source });
            startWait?.resolve();
            startWait = undefined;
          },
          (err: unknown) => startWait?.reject(new Error(`mount --bind ${backing} ${target}: ${(err as Error).message}`)),
        );
      } else if (m.t === 'unmount') {
        doUnmount(m.force ?? false).then(
          () => {
            stopping = true;
            c.send({ t: 'unmounted', id: m.id });
          },
          (err: unknown) => c.send({ t: 'unmounted', id: m.id, error: (err as Error).message }),
        );
      }
    });
    c.on('close', (code, signal) => {
      child = undefined;
      // The worker is gone, but the group lives on in this process: every event it read and did
      // not answer is still pending, matched by its fd number. Answer them EIO, never ALLOW.
      answerLeftovers(maxFd);
      if (stopping) {
        void finish();
        return;
      }
      if (!everReady) {
        startWait?.reject(new Error(`the hsm worker exited before the tree was ready (${signal ?? `code ${code}`})`));
        startWait = undefined;
        stopping = true;
        void finish();
        return;
      }
      const now = Date.now();
      deaths.push(now);
      while (deaths.length > 0 && (deaths[0] as number) < now - CRASH_WINDOW_MS) deaths.shift();
      if (deaths.length > CRASH_LIMIT) {
        log(`the worker died ${deaths.length} times in a minute; answering every access with EIO until unmount`);
        group.listen((ev) => {
          if ('deny' in ev) ev.deny('EIO');
        });
        return;
      }
      log(`worker ${signal ?? `exit ${code}`}; restarting (pending accesses were answered EIO)`);
      setTimeout(spawnWorker, 100 * deaths.length);
    });
    c.send({ t: 'config', cfg });
  };

  const unmount = async (force = false): Promise<void> => {
    if (stopping) return done;
    await doUnmount(force);
    stopping = true;
    if (child) child.send({ t: 'stop' });
    else void finish();
    return done;
  };

  spawnWorker();
  try {
    await started;
  } catch (err) {
    stopping = true;
    child?.kill('SIGKILL');
    await done;
    throw err;
  }
  return { target, backing, stateDir, done, unmount };
}
