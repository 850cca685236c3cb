/**
 * Throw-away filesystems for tests that put fanotify marks: a sparse image
 * file, formatted and loop-mounted in a fresh temp dir (or a tmpfs), and
 * always unmounted and removed again — by `cleanup()`, by the `after` hook of
 * {@link useLoopFs}, or, as a last resort, synchronously on process exit or
 * SIGINT/SIGTERM.
 *
 * Never put permission or pre-content marks on the root filesystem: use one
 * of these (DESIGN.md §6).
 *
 * @module
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ExecError, execCmd } from './proc.js';

/** Filesystem types {@link createLoopFs} can make. */
export type FsType = 'ext4' | 'xfs' | 'btrfs' | 'tmpfs';

/** A mounted throw-away filesystem. */
export interface LoopFs {
  /** The mountpoint: an empty, writable directory at the root of the new filesystem. */
  readonly dir: string;
  /** The filesystem type that is mounted at {@link LoopFs.dir}. */
  readonly fstype: FsType;
  /** The backing image file (absent for tmpfs). */
  readonly image?: string;
  /** The loop device, e.g. `/dev/loop3` (absent for tmpfs). */
  readonly device?: string;
  /**
   * Unmount (retrying while busy, lazily as a last resort), detach the loop
   * device and remove the temp dir. Idempotent. Throws only when the
   * filesystem could not be unmounted; other problems are reported on stderr.
   */
  cleanup(): Promise<void>;
}

/** Options of {@link createLoopFs}. */
export interface LoopFsOptions {
  /** Default `'ext4'`. */
  fstype?: FsType;
  /**
   * Size in MiB. Defaults: ext4 and btrfs 256, xfs 320, tmpfs 64. Raised to
   * the minimum the mkfs accepts (xfs 320, btrfs 128, ext4 16).
   */
  sizeMiB?: number;
  /**
   * Attach the image with `losetup --direct-io=on`: the loop device reads and writes the image
   * without the host page cache, as a disk would. Without it every byte written is cached twice
   * (the test filesystem's page cache and the image file's) and an fdatasync writes it back
   * twice, which makes durable writes several times slower than on a real disk. Default false.
   */
  directIo?: boolean;
}

const MKFS: Record<Exclude<FsType, 'tmpfs'>, { cmd: string; args: string[]; pkg: string; min: number; def: number }> = {
  ext4: { cmd: 'mkfs.ext4', args: ['-q', '-F'], pkg: 'e2fsprogs', min: 16, def: 256 },
  xfs: { cmd: 'mkfs.xfs', args: ['-q', '-f'], pkg: 'xfsprogs', min: 320, def: 320 },
  btrfs: { cmd: 'mkfs.btrfs', args: ['-q', '-f'], pkg: 'btrfs-progs', min: 128, def: 256 },
};

/** Debian package that provides each helper command we run. */
const PKG_OF: Record<string, string> = { mount: 'mount', umount: 'mount', losetup: 'mount' };

const ROOT_MESSAGE =
  'these tests need root (CAP_SYS_ADMIN) for fanotify marks and loop mounts: run `sudo npm test`';

/** Throw unless running as root. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error(ROOT_MESSAGE);
}

/** One line of /proc/self/mounts. */
export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
  options: string;
}

/** Undo the octal escapes (`\040` etc.) of /proc/self/mounts. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The entry of /proc/self/mounts mounted at exactly `dir` (the topmost one
 * when several are stacked), or undefined when nothing is mounted there.
 */
export function mountEntry(dir: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [source, target, fstype, options] = line.split(' ');
    if (source === undefined || target === undefined || fstype === undefined) continue;
    if (unescapeMount(target) === dir) {
      found = { source: unescapeMount(source), target: dir, fstype, options: options ?? '' };
    }
  }
  return found;
}

/** The loop devices backed by `image`, from `losetup -j`. */
async function loopDevicesOf(image: string): Promise<string[]> {
  const { stdout } = await execCmd('losetup', ['-j', image]);
  return parseLosetup(stdout);
}

function parseLosetup(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.split(':')[0]?.trim() ?? '')
    .filter((d) => d.startsWith('/dev/'));
}

/** Run a command, turning "not installed" into an actionable error. */
async function run(cmd: string, args: string[], pkg: string | undefined, timeoutMs = 60_000): Promise<string> {
  try {
    return (await execCmd(cmd, args, { timeoutMs })).stdout;
  } catch (err) {
    if (err instanceof ExecError && err.code === 'ENOENT') {
      const p = pkg ?? PKG_OF[cmd] ?? cmd;
      throw new Error(`${cmd} is not installed: run \`apt-get install ${p}\` (or \`bash .ci/run\`)`, { cause: err });
    }
    throw err;
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------
// Registry of live mounts, cleaned synchronously on exit and on signals.

interface Live {
  tmp: string;
  dir: string;
  image?: string;
}

const live = new Set<Live>();
let handlersInstalled = false;

function syncRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10_000,
      env: { ...process.env, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin:/usr/bin:/bin` },
    });
  } catch {
    return '';
  }
}

/** Best-effort synchronous cleanup of everything still registered. */
function cleanupAllSync(): void {
  for (const l of live) {
    if (mountEntry(l.dir) !== undefined) syncRun('umount', ['-l', l.dir]);
    if (l.image !== undefined) {
      for (const dev of parseLosetup(syncRun('losetup', ['-j', l.image]))) syncRun('losetup', ['-d', dev]);
    }
    if (mountEntry(l.dir) === undefined) {
      try {
        rmSync(l.tmp, { recursive: true, force: true });
      } catch {
        /* best effort */
      }
    }
    live.delete(l);
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupAllSync);
  const onSignal = (signal: NodeJS.Signals, code: number) => () => {
    if (live.size > 0) process.stderr.write(`loopfs: ${signal}: unmounting ${live.size} test filesystem(s)\n`);
    cleanupAllSync();
    process.exit(code);
  };
  process.once('SIGINT', onSignal('SIGINT', 130));
  process.once('SIGTERM', onSignal('SIGTERM', 143));
}

// ---------------------------------------------------------------------------

/**
 * Unmount `dir`: plain umount, retried while the target is busy, then
 * `umount -l`. Resolves once nothing is mounted there; rejects otherwise.
 */
async function unmount(dir: string): Promise<void> {
  const errors: string[] = [];
  for (let attempt = 0; attempt < 5 && mountEntry(dir) !== undefined; attempt++) {
    try {
      await run('umount', [dir], undefined, 30_000);
    } catch (err) {
      errors.push(describe(err));
      if (!/busy/i.test(describe(err))) break;
      await sleep(200 * (attempt + 1));
    }
  }
  if (mountEntry(dir) !== undefined) {
    try {
      await run('umount', ['-l', dir], undefined, 30_000);
    } catch (err) {
      errors.push(describe(err));
    }
  }
  if (mountEntry(dir) !== undefined) {
    throw new Error(`could not unmount ${dir}: ${errors.join('; ')}`);
  }
}

/**
 * Create and mount a throw-away filesystem (default ext4) and return it.
 *
 * The image is sparse, lives in a fresh `fan-loop-*` directory under the OS
 * temp dir, and is mounted at `<tmp>/mnt` (tmpfs likewise). Needs root; a
 * missing mkfs tool is an error naming the Debian package to install — the
 * suite fails, it never skips.
 */
export async function createLoopFs(opts: LoopFsOptions = {}): Promise<LoopFs> {
  requireRoot();
  installHandlers();
  const fstype = opts.fstype ?? 'ext4';
  const tmp = await mkdtemp(join(tmpdir(), 'fan-loop-'));
  const dir = join(tmp, 'mnt');
  const entry: Live = { tmp, dir };
  live.add(entry);
  let image: string | undefined;
  let device: string | undefined;

  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => {
    cleaning ??= doCleanup().catch((err: unknown) => {
      cleaning = undefined; // allow a retry
      throw err;
    });
    return cleaning;
  };

  const doCleanup = async (): Promise<void> => {
    const problems: string[] = [];
    let unmountFailed = false;
    try {
      await unmount(dir);
    } catch (err) {
      unmountFailed = true;
      problems.push(describe(err));
    }
    if (image !== undefined) {
      try {
        for (const dev of await loopDevicesOf(image)) {
          try {
            await run('losetup', ['-d', dev], undefined);
          } catch (err) {
            problems.push(`losetup -d ${dev}: ${describe(err)}`);
          }
        }
      } catch (err) {
        problems.push(`losetup -j ${image}: ${describe(err)}`);
      }
    }
    if (!unmountFailed) {
      try {
        await rm(tmp, { recursive: true, force: true, maxRetries: 3 });
      } catch (err) {
        problems.push(`rm -r ${tmp}: ${describe(err)}`);
      }
      live.delete(entry);
    }
    if (unmountFailed) {
      throw new Error(`loopfs cleanup of ${fstype} at ${dir} failed: ${problems.join('; ')}`);
    }
    if (problems.length > 0) {
      process.stderr.write(`loopfs: cleanup of ${dir}: ${problems.join('; ')}\n`);
    }
  };

  try {
    await mkdir(dir);
    if (fstype === 'tmpfs') {
      const size = opts.sizeMiB ?? 64;
      await run('mount', ['-t', 'tmpfs', '-o', `size=${size}m`, 'tmpfs', dir], undefined);
    } else {
      const mkfs = MKFS[fstype];
      const size = Math.max(mkfs.min, opts.sizeMiB ?? mkfs.def);
      image = join(tmp, `${fstype}.img`);
      entry.image = image;
      const fh = await open(image, 'w');
      try {
        await fh.truncate(size * 1024 * 1024);
      } finally {
        await fh.close();
      }
      await run(mkfs.cmd, [...mkfs.args, image], mkfs.pkg);
      if (opts.directIo) {
        device = (await run('losetup', ['--find', '--show', '--direct-io=on', image], undefined)).trim();
        await run('mount', [device, dir], undefined);
      } else {
        await run('mount', ['-o', 'loop', image, dir], undefined);
        device = (await loopDevicesOf(image))[0];
      }
    }
    const mounted = mountEntry(dir);
    if (mounted?.fstype !== fstype) {
      throw new Error(`expected ${fstype} at ${dir}, /proc/self/mounts says ${mounted?.fstype ?? 'nothing'}`);
    }
  } catch (err) {
    await cleanup().catch((cleanupErr: unknown) => {
      process.stderr.write(`loopfs: ${describe(cleanupErr)}\n`);
    });
    throw new Error(`createLoopFs(${fstype}): ${describe(err)}`, { cause: err });
  }

  const fs: LoopFs = {
    dir,
    fstype,
    ...(image === undefined ? {} : { image }),
    ...(device === undefined ? {} : { device }),
    cleanup,
  };
  return fs;
}

/**
 * node:test convenience: create the filesystem in a `before` hook of the
 * enclosing suite (or file) and clean it up in an `after` hook. Access
 * `holder.fs` only inside tests/hooks that run after `before`.
 */
export function useLoopFs(opts: LoopFsOptions = {}): { readonly fs: LoopFs } {
  let current: LoopFs | undefined;
  before(async () => {
    current = await createLoopFs(opts);
  });
  after(async () => {
    const c = current;
    current = undefined;
    await c?.cleanup();
  });
  return {
    get fs(): LoopFs {
      if (current === undefined) {
        throw new Error(
          `useLoopFs(${opts.fstype ?? 'ext4'}): the filesystem is not mounted (accessed outside a test, before the before() hook, or after cleanup)`,
        );
      }
      return current;
    },
  };
}
