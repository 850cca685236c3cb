/**
 * Quarantine: move an infected file out of reach, into a 0700 directory, read-only (0400), under
 * a unique name, with a `<name>.json` of metadata beside it (original path, time, size, sha256,
 * and what the caller knows: signature, pid, comm…).
 *
 * Asynchronous I/O only: the guard calls this from the thread that answers permission events,
 * and a synchronous open of a file on a guarded filesystem would wait for an answer that thread
 * can no longer give.
 *
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, createReadStream } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

/** Where {@link quarantine} put the file and its metadata. */
export interface QuarantineResult {
  /** The file's new path inside the quarantine directory (mode 0400). */
  quarantinedPath: string;
  /** `<quarantinedPath>.json`, the metadata. */
  metaPath: string;
}

/** The content of the `.json` written beside a quarantined file. */
export interface QuarantineRecord {
  /** Absolute path the file had. */
  originalPath: string;
  /** Where it is now. */
  quarantinedPath: string;
  /** ISO time of the quarantine. */
  quarantinedAt: string;
  /** Size in bytes of the quarantined content. */
  size: number;
  /** sha256 (hex) of the quarantined content, or null when it could not be read (see hashError). */
  sha256: string | null;
  /** Why the content could not be hashed. */
  hashError?: string;
  /** The file's original permission bits, octal (e.g. "0755"). */
  mode: string;
  /** Original owner. */
  uid: number;
  /** Original group. */
  gid: number;
  /** Original modification time (ISO). */
  mtime: string;
  /** True when the file was copied and unlinked (another filesystem) rather than renamed. */
  copied: boolean;
  /** What the caller passed (signature, pid, comm, …). */
  meta: Record<string, unknown>;
}

/** Longest file name on the filesystems we care about. */
const NAME_MAX = 255;

function uniqueName(original: string, now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, ''); // 20260121T061101.123Z
  const prefix = `${stamp}-${randomBytes(6).toString('hex')}-`;
  let base = basename(original).replace(/[\0-\x1f\x7f]/g, '_') || 'file';
  // Leave room for the ".json" of the metadata file.
  const room = NAME_MAX - Buffer.byteLength(prefix) - '.json'.length;
  while (Buffer.byteLength(base) > room) base = base.slice(0, -1);
  return prefix + base;
}

async function sha256Of(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    const buf = chunk as Buffer;
    size += buf.length;
    hash.update(buf);
  }
  return { sha256: hash.digest('hex'), size };
}

/**
 * Move `path` into `dir` (created with mode 0700 when missing) under a unique name
 * (`<time>-<random>-<basename>`), by rename, or by copy and unlink across filesystems (EXDEV);
 * make it 0400; write `<name>.json` (a {@link QuarantineRecord}) beside it. Only regular files
 * are quarantined (a symlink or directory is refused, nothing is moved).
 */
export async function quarantine(path: string, dir: string, meta: Record<string, unknown> = {}): Promise<QuarantineResult> {
  const originalPath = resolve(path);
  const st = await lstat(originalPath);
  if (!st.isFile()) throw new Error(`quarantine: ${originalPath} is not a regular file; not moved`);

  const qdir = resolve(dir);
  const created = await mkdir(qdir, { recursive: true, mode: 0o700 });
  if (created !== undefined) await chmod(qdir, 0o700); // whatever the umask

  const now = new Date();
  const name = uniqueName(originalPath, now);
  const quarantinedPath = join(qdir, name);
  const metaPath = `${quarantinedPath}.json`;

  let copied = false;
  try {
    await rename(originalPath, quarantinedPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    copied = true;
    await copyFile(originalPath, quarantinedPath, fsConstants.COPYFILE_EXCL);
    try {
      await chmod(quarantinedPath, 0o400);
      await unlink(originalPath);
    } catch (unlinkErr) {
      // The original could not be removed: do not leave a second copy behind.
      await unlink(quarantinedPath).catch(() => {});
      throw unlinkErr;
    }
  }
  await chmod(quarantinedPath, 0o400);

  let sha256: string | null = null;
  let size = st.size;
  let hashError: string | undefined;
  try {
    ({ sha256, size } = await sha256Of(quarantinedPath));
  } catch (err) {
    hashError = (err as Error).message;
  }

  const record: QuarantineRecord = {
    originalPath,
    quarantinedPath,
    quarantinedAt: now.toISOString(),
    size,
    sha256,
    ...(hashError !== undefined ? { hashError } : {}),
    mode: `0${(st.mode & 0o7777).toString(8)}`,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime.toISOString(),
    copied,
    meta,
  };
  await writeFile(metaPath, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return { quarantinedPath, metaPath };
}
