/**
 * Helpers of the HSM tests: published source trees, reads of mounted files in child processes
 * (never in the test process, which may itself be serving the source), and mounts that are
 * always unmounted.
 *
 * @module
 */
import { after } from 'node:test';
import { execFile } from 'node:child_process';
import { copyFileSync, chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mountTree, type MountHandle, type MountOptions } from '../../src/hsm/index.js';
import { useLoopFs, type LoopFs } from './loopfs.js';
import { mulberry32 } from './random.js';

/** Deterministic pseudo-random bytes. */
export function randomBuffer(size: number, seed: number): Buffer {
  const rand = mulberry32(seed);
  const b = Buffer.allocUnsafe(size + 3);
  for (let i = 0; i < size; i += 4) b.writeUInt32LE(rand(), i);
  return b.subarray(0, size);
}

/** A source tree: nested dirs, files of edge-case sizes, a symlink and an ELF copy of /bin/true. */
export function makeSourceTree(files: Record<string, number>, seed = 1): { root: string; content: Map<string, Buffer>; cleanup(): void } {
  const root = mkdtempSync(join(tmpdir(), 'fan-hsm-src-'));
  const content = new Map<string, Buffer>();
  let s = seed;
  for (const [path, size] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    const b = randomBuffer(size, s++);
    writeFileSync(join(root, path), b);
    content.set(path, b);
  }
  symlinkSync(Object.keys(files)[0] ?? 'x', join(root, 'link'));
  copyFileSync('/bin/true', join(root, 'true'));
  chmodSync(join(root, 'true'), 0o755);
  return { root, content, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** The outcome of a read in a child: the bytes, or the errno name. */
export interface ChildRead {
  readonly ok: boolean;
  readonly errno?: string;
  readonly data: Buffer;
  readonly ms: number;
}

const PY_READ = `
import os, sys, base64, errno, time
p, off, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t = time.monotonic()
try:
    if mode == 'mmap':
        import mmap
        with open(p, 'rb') as f:
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            data = m[off:off + n] if n >= 0 else m[:]
    else:
        fd = os.open(p, os.O_RDONLY)
        if n < 0: n = os.fstat(fd).st_size - off
        os.lseek(fd, off, 0)
        data = b''
        while len(data) < n:
            b = os.read(fd, min(n - len(data), 65536))
            if not b: break
            data += b
        os.close(fd)
    sys.stdout.write('OK %d %s' % ((time.monotonic() - t) * 1000, base64.b64encode(data).decode()))
except OSError as e:
    sys.stdout.write('ERR %d %s' % ((time.monotonic() - t) * 1000, errno.errorcode.get(e.errno, str(e.errno))))
`;

/** Read `length` bytes (-1: to the end) at `offset` of `path` in a python child, by read(2) or mmap. */
export function readInChild(path: string, offset = 0, length = -1, mode: 'read' | 'mmap' = 'read', timeoutMs = 60_000): Promise<ChildRead> {
  return new Promise((resolve, reject) => {
    execFile('python3', ['-c', PY_READ, path, String(offset), String(length), mode], { maxBuffer: 1 << 30, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout) => {
      if (err) {
        reject(new Error(`reader child failed: ${err.message}`));
        return;
      }
      const [status, ms, rest] = stdout.split(' ');
      if (status === 'OK') resolve({ ok: true, data: Buffer.from(rest ?? '', 'base64'), ms: Number(ms) });
      else resolve({ ok: false, errno: rest ?? '?', data: Buffer.alloc(0), ms: Number(ms) });
    });
  });
}

/** Options of one mount made by {@link useHsmMounts}: all of {@link MountOptions} but where it lives. */
export type TestMountOptions = Omit<MountOptions, 'target' | 'stateDir'> & {
  /** Name of its state directory under the state root; default the mount's name. */
  readonly stateName?: string;
};

/**
 * Mounts for the tests of one file or suite (call at its top level): a fresh run directory
 * (FAN_HSM_RUN_DIR) and state root, and a loop ext4 of `sizeMiB` on which `mount(name)` makes
 * `<fs>/<name>` a mount. After the tests every mount is unmounted (forced) before the filesystem
 * goes, then both directories are removed.
 */
export function useHsmMounts(sizeMiB: number): {
  readonly loop: { readonly fs: LoopFs };
  readonly stateRoot: string;
  /** Every mount made so far, in order. */
  readonly handles: readonly MountHandle[];
  mount(name: string, options: TestMountOptions): Promise<MountHandle>;
} {
  const runDir = mkdtempSync(join(tmpdir(), 'fan-hsm-run-'));
  process.env['FAN_HSM_RUN_DIR'] = runDir;
  const stateRoot = mkdtempSync(join(tmpdir(), 'fan-hsm-state-'));
  const handles: MountHandle[] = [];
  after(async () => {
    for (const h of handles) await h.unmount(true).catch(() => undefined);
    rmSync(runDir, { recursive: true, force: true });
    rmSync(stateRoot, { recursive: true, force: true });
  });
  // Registered after the hook above, so mounts are gone before the filesystem is unmounted.
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB });
  return {
    loop,
    stateRoot,
    handles,
    async mount(name, { stateName = name, ...options }) {
      const target = join(loop.fs.dir, name);
      await mkdir(target, { recursive: true });
      const h = await mountTree({ ...options, target, stateDir: join(stateRoot, stateName) });
      handles.push(h);
      return h;
    },
  };
}
