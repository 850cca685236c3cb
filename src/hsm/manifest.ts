/**
 * The published description of a tree: every entry's metadata and, for regular files, a SHA-256
 * per chunk. A static HTTP server serves the tree and this manifest; a mount trusts nothing else.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { lstat, open, opendir, readlink, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** File name of the manifest at the root of a published tree. */
export const MANIFEST_NAME = '.fan-hsm-manifest.json';
/** Manifest format version this code writes and reads. */
export const MANIFEST_VERSION = 1;
/** Default chunk size: the unit of fetching, verifying and recording. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;

const relPath = z
  .string()
  .min(1)
  .max(4096)
  .refine(
    (p) => !p.startsWith('/') && !p.includes('\0') && p.split('/').every((c) => c !== '' && c !== '.' && c !== '..'),
    'must be a relative path without empty, "." or ".." components',
  );
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');
const u32 = z.number().int().min(0).max(0xffffffff);
const common = {
  path: relPath,
  mode: z.number().int().min(0).max(0o7777),
  uid: u32,
  gid: u32,
  mtimeMs: z.number().finite().min(0),
};
const fileEntry = z
  .object({ ...common, type: z.literal('file'), size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), chunks: z.array(sha256) })
  .strict();
const dirEntry = z.object({ ...common, type: z.literal('dir') }).strict();
const linkEntry = z.object({ ...common, type: z.literal('symlink'), target: z.string().min(1).max(4096).refine((t) => !t.includes('\0'), 'must not contain NUL') }).strict();
const entry = z.discriminatedUnion('type', [fileEntry, dirEntry, linkEntry]);
const body = z
  .object({
    format: z.literal('fan-hsm-manifest'),
    version: z.literal(MANIFEST_VERSION),
    chunkSize: z.number().int().min(4096).max(1 << 30).refine((n) => n % 4096 === 0, 'must be a multiple of 4096'),
    entries: z.array(entry),
    hash: sha256,
  })
  .strict();

/** A regular file of the tree. */
export type FileEntry = z.infer<typeof fileEntry>;
/** Any entry of the tree. */
export type ManifestEntry = z.infer<typeof entry>;
/** A parsed, validated manifest. */
export type Manifest = z.infer<typeof body>;

/** A manifest that cannot be used; the message says what is wrong and where. */
export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

/** The hash of a manifest's content: SHA-256 of its canonical JSON without the hash field. */
export function manifestHash(m: Omit<Manifest, 'hash'>): string {
  const canonical = JSON.stringify({ format: m.format, version: m.version, chunkSize: m.chunkSize, entries: m.entries.map(canonicalEntry) });
  return createHash('sha256').update(canonical).digest('hex');
}

function canonicalEntry(e: ManifestEntry): unknown {
  const base = [e.path, e.type, e.mode, e.uid, e.gid, e.mtimeMs];
  if (e.type === 'file') return [...base, e.size, e.chunks];
  if (e.type === 'symlink') return [...base, e.target];
  return base;
}

/** Number of chunks of a file of `size` bytes. */
export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/**
 * Parse and validate manifest text: schema, hash, chunk counts, unique paths, parents before
 * children.
 * @throws ManifestError naming the first problem.
 */
export function parseManifest(text: string, where = 'manifest'): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ManifestError(`${where}: not JSON (${(err as Error).message})`);
  }
  const r = body.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    const at = issue?.path.join('.') || '(root)';
    throw new ManifestError(`${where}: ${at}: ${issue?.message ?? 'invalid'}`);
  }
  const m = r.data;
  if (manifestHash(m) !== m.hash) throw new ManifestError(`${where}: hash mismatch: the manifest was altered or truncated; publish it again`);
  const seen = new Map<string, ManifestEntry['type']>();
  for (const e of m.entries) {
    if (seen.has(e.path)) throw new ManifestError(`${where}: duplicate path ${e.path}`);
    const slash = e.path.lastIndexOf('/');
    if (slash > 0 && seen.get(e.path.slice(0, slash)) !== 'dir') {
      throw new ManifestError(`${where}: ${e.path}: parent directory is not listed before it`);
    }
    if (e.type === 'file' && e.chunks.length !== chunkCount(e.size, m.chunkSize)) {
      throw new ManifestError(`${where}: ${e.path}: ${e.chunks.length} chunk hashes for ${e.size} bytes (expected ${chunkCount(e.size, m.chunkSize)})`);
    }
    seen.set(e.path, e.type);
  }
  return m;
}

/** Options of {@link publish}. */
export interface PublishOptions {
  /** Chunk size in bytes (multiple of 4096). Default 1 MiB. */
  readonly chunkSize?: number;
  /** Called after each file is hashed. */
  readonly onFile?: (path: string, size: number) => void;
}

/**
 * Walk `root` (not following symlinks), hash every regular file per chunk and write
 * `root/.fan-hsm-manifest.json` atomically. Entries other than files, dirs and symlinks are
 * skipped.
 * @returns the manifest written.
 */
export async function publish(root: string, options: PublishOptions = {}): Promise<Manifest> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < 4096 || chunkSize % 4096 !== 0) {
    throw new ManifestError(`chunk size must be a multiple of 4096 bytes, at least 4096; got ${chunkSize}`);
  }
  const entries: ManifestEntry[] = [];
  const buf = Buffer.allocUnsafe(chunkSize);
  const walk = async (rel: string): Promise<void> => {
    const dir = await opendir(rel ? join(root, rel) : root);
    const names: string[] = [];
    for await (const d of dir) names.push(d.name);
    names.sort();
    for (const name of names) {
      if (!rel && name === MANIFEST_NAME) continue;
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(root, path);
      const st = await lstat(abs);
      const base = { path, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Math.floor(st.mtimeMs) };
      if (st.isDirectory()) {
        entries.push({ ...base, type: 'dir' });
        await walk(path);
      } else if (st.isSymbolicLink()) {
        entries.push({ ...base, type: 'symlink', target: await readlink(abs) });
      } else if (st.isFile()) {
        const chunks: string[] = [];
        const fh = await open(abs, 'r');
        try {
          for (let off = 0; off < st.size; off += chunkSize) {
            const want = Math.min(chunkSize, st.size - off);
            let got = 0;
            while (got < want) {
              const { bytesRead } = await fh.read(buf, got, want - got, off + got);
              if (bytesRead === 0) throw new ManifestError(`${abs} shrank while publishing; publish a tree that is not being written`);
              got += bytesRead;
            }
            chunks.push(createHash('sha256').update(buf.subarray(0, want)).digest('hex'));
          }
        } finally {
          await fh.close();
        }
        entries.push({ ...base, type: 'file', size: st.size, chunks });
        options.onFile?.(path, st.size);
      }
    }
  };
  await walk('');
  const draft = { format: 'fan-hsm-manifest' as const, version: MANIFEST_VERSION as 1, chunkSize, entries };
  const manifest: Manifest = { ...draft, hash: manifestHash(draft) };
  const out = join(root, MANIFEST_NAME);
  await writeFile(`${out}.tmp`, JSON.stringify(manifest));
  await rename(`${out}.tmp`, out);
  return manifest;
}
