/**
 * The backing tree: directories, symlinks and sparse regular files with the published size,
 * mode, ownership and times, made before anyone can reach it. Only async fs calls: after a
 * worker restart the files already carry our group's marks, and a synchronous call from the
 * thread that answers the events would wait on itself.
 * @packageDocumentation
 */
import { chmod, chown, lchown, lstat, lutimes, mkdir, open, rename, symlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest, ManifestEntry } from './manifest.js';

const PARALLEL = 64;

async function inParallel<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, lane));
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Create every entry of `manifest` under `backing` that does not exist yet; existing entries are
 * kept as they are (their content state is in the range map).
 * @returns how many entries were created.
 */
export async function createPlaceholders(backing: string, manifest: Manifest): Promise<number> {
  let created = 0;
  const dirs = manifest.entries.filter((e) => e.type === 'dir');
  for (const d of dirs) {
    // Parents come first in a manifest, so one level at a time is enough.
    if (await exists(join(backing, d.path))) continue;
    await mkdir(join(backing, d.path), { mode: 0o700 });
    created++;
  }
  const others = manifest.entries.filter((e) => e.type !== 'dir');
  await inParallel(others, async (e) => {
    const abs = join(backing, e.path);
    if (await exists(abs)) return;
    created++;
    if (e.type === 'symlink') {
      await symlink(e.target, abs);
      await lchown(abs, e.uid, e.gid);
      await lutimes(abs, e.mtimeMs / 1000, e.mtimeMs / 1000);
      return;
    }
    if (e.type !== 'file') return;
    // Write to a temp name and rename, so a crash never leaves a short placeholder behind.
    const fh = await open(`${abs}.fan-hsm-tmp`, 'w', 0o600);
    try {
      await fh.truncate(e.size);
      await fh.chown(e.uid, e.gid);
      await fh.chmod(e.mode);
      await fh.utimes(e.mtimeMs / 1000, e.mtimeMs / 1000);
    } finally {
      await fh.close();
    }
    await rename(`${abs}.fan-hsm-tmp`, abs);
  });
  // Directory metadata last: creating children changes a directory's mtime.
  for (const d of [...dirs].reverse()) await setDirMeta(join(backing, d.path), d);
  return created;
}

async function setDirMeta(abs: string, d: ManifestEntry): Promise<void> {
  await chown(abs, d.uid, d.gid);
  await chmod(abs, d.mode);
  await utimes(abs, d.mtimeMs / 1000, d.mtimeMs / 1000);
}
