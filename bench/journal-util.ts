/**
 * Shared pieces of the journal benchmarks (bench/journal-since.ts, journal-reconcile.ts,
 * journal-ingest.ts): a 100,000-file tree on a fresh loop ext4 (built with bench/watch-gen.c
 * through bench/watch-util.ts), a journal state directory on the host disk, 1,000 mixed changes
 * with the set they must produce, `fan journal run` as a child process, and set comparison.
 *
 * @module
 */
import { appendFileSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { NdjsonChild } from './ndjson-child.js';
import { compileGen, createExt4, runGen, type Ext4 } from './watch-util.js';

export { cpuSeconds, memMiB, fmt, median, table, verdict, parseFlags, machineNote, profileSummary, quantile } from './watch-util.js';

/** The CLI entry point (dist/src/cli/main.js). */
export const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Tree and state directory

export interface Bench {
  /** The loop ext4. */
  readonly fs: Ext4;
  /** The recorded root: `<mnt>/tree`. */
  readonly root: string;
  /** Journal state directory (on the host disk, not the loop fs: real fsyncs, no self-events). */
  readonly stateDir: string;
  /** Scratch dir on the host disk (parcel snapshots, compiled generators, profiles). */
  readonly scratch: string;
  /** Relative paths of the tree's files, in a fixed shuffled order. */
  readonly files: string[];
  readonly dirs: number;
  readonly treeSeconds: number;
  cleanup(): Promise<void>;
}

/**
 * A fresh loop ext4 with `<mnt>/tree` holding `dirs1 × dirs2` leaf directories of `perLeaf` empty
 * files each (default 100 × 100 × 10 = 100,000 files, 10,101 directories).
 */
export async function makeBench(opts: { dirs1?: number; dirs2?: number; perLeaf?: number; sizeMiB?: number; tree?: boolean } = {}): Promise<Bench> {
  const dirs1 = opts.dirs1 ?? 100;
  const dirs2 = opts.dirs2 ?? 100;
  const perLeaf = opts.perLeaf ?? 10;
  const scratch = await mkdtemp(join(tmpdir(), 'fan-journal-bench-'));
  const stateDir = join(scratch, 'state');
  mkdirSync(stateDir);
  let fs: Ext4 | undefined;
  try {
    fs = await createExt4(opts.sizeMiB ?? 2048, 400_000);
    const root = join(fs.dir, 'tree');
    mkdirSync(root);
    let files: string[] = [];
    let dirs = 1;
    let treeSeconds = 0;
    if (opts.tree !== false) {
      const gen = compileGen(scratch);
      const r = await runGen(gen, ['tree', root, String(perLeaf), String(dirs1), String(dirs2)]);
      dirs = r.nums[0] ?? NaN;
      treeSeconds = r.nums[2] ?? NaN;
      for (let a = 0; a < dirs1; a++) for (let b = 0; b < dirs2; b++) for (let c = 0; c < perLeaf; c++) files.push(`d${a}/d${b}/f${c}`);
      files = shuffle(files, 0x5eed);
      if (r.nums[1] !== files.length) throw new Error(`watch-gen made ${r.nums[1]} files, expected ${files.length}`);
    }
    const made = fs;
    return {
      fs: made,
      root,
      stateDir,
      scratch,
      files,
      dirs,
      treeSeconds,
      async cleanup() {
        try {
          await made.cleanup();
        } finally {
          await rm(scratch, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await fs?.cleanup();
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}

/** Deterministic Fisher-Yates shuffle (mulberry32). */
export function shuffle<T>(xs: T[], seed: number): T[] {
  let s = seed >>> 0;
  const rnd = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

// ---------------------------------------------------------------------------------------------
// Changes

export type Kind = 'created' | 'updated' | 'deleted';

/**
 * Make `n` changes under `root`: half modifications (append to an untouched original file),
 * a quarter creations (a new file next to originals), a quarter deletions (of untouched
 * originals). Consumes 3n/4 files from `pool` (so every call touches different files).
 * @returns absolute path → the kind `since` must report.
 */
export function makeChanges(root: string, pool: string[], n: number, tag: string): Map<string, Kind> {
  const expected = new Map<string, Kind>();
  const nMod = Math.floor(n / 2);
  const nCreate = Math.floor(n / 4);
  const nDel = n - nMod - nCreate;
  if (pool.length < nMod + nDel) throw new Error('makeChanges: pool exhausted');
  const take = pool.splice(0, nMod + nDel);
  for (let i = 0; i < nMod; i++) {
    const p = join(root, take[i]!);
    appendFileSync(p, `changed ${tag}\n`);
    expected.set(p, 'updated');
  }
  for (let i = 0; i < nDel; i++) {
    const p = join(root, take[nMod + i]!);
    unlinkSync(p);
    expected.set(p, 'deleted');
  }
  for (let i = 0; i < nCreate; i++) {
    // Next to a modified file: an existing leaf directory.
    const dir = take[i % nMod]!.replace(/\/[^/]+$/, '');
    const p = join(root, dir, `new-${tag}-${i}`);
    writeFileSync(p, 'new\n');
    expected.set(p, 'created');
  }
  return expected;
}

/** Compare what a tool reported with what was done. */
export function compare(expected: ReadonlyMap<string, Kind>, got: Iterable<{ path: string; kind: string }>): {
  count: number;
  exact: boolean;
  missing: number;
  extra: number;
  wrongKind: number;
  sample: string[];
} {
  let count = 0;
  let extra = 0;
  let wrongKind = 0;
  const seen = new Set<string>();
  const sample: string[] = [];
  for (const g of got) {
    count++;
    const want = expected.get(g.path);
    if (want === undefined) {
      extra++;
      if (sample.length < 5) sample.push(`extra ${g.kind} ${g.path}`);
    } else if (want !== g.kind) {
      wrongKind++;
      if (sample.length < 5) sample.push(`${g.path}: ${g.kind}, expected ${want}`);
    }
    seen.add(g.path);
  }
  let missing = 0;
  for (const [p, k] of expected) {
    if (!seen.has(p)) {
      missing++;
      if (sample.length < 5) sample.push(`missing ${k} ${p}`);
    }
  }
  return { count, exact: missing === 0 && extra === 0 && wrongKind === 0 && count === expected.size, missing, extra, wrongKind, sample };
}

// ---------------------------------------------------------------------------------------------
// `fan journal run` as a child

/** One NDJSON line of `fan journal run --json` (stderr). */
export interface RunMsg {
  time: string;
  type: string;
  at: number;
  [k: string]: unknown;
}

/** `node dist/src/cli/main.js journal run --json --state-dir D ROOT…` (messages on stderr). */
export class RecorderProc extends NdjsonChild<RunMsg> {
  readonly startedAt = performance.now();

  constructor(roots: string[], stateDir: string, opts: { nodeFlags?: string[]; args?: string[] } = {}) {
    super(
      'fan journal run',
      process.execPath,
      [...(opts.nodeFlags ?? []), MAIN, 'journal', 'run', '--json', '--state-dir', stateDir, ...(opts.args ?? []), ...roots],
      'stderr',
      (p) => ({ ...(p as RunMsg), at: performance.now() }),
    );
  }

  /** Every message so far, in arrival order. */
  get all(): readonly RunMsg[] {
    return this.msgs;
  }

  /** The first message of this type (kept). */
  async waitFor(type: string, timeoutMs: number): Promise<RunMsg> {
    return this.waitUntil(() => this.msgs.find((x) => x.type === type), `"${type}"`, timeoutMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the database directly (a second connection, as any reader would)

/** A read-only connection to journal.db for polling progress. */
export class DbProbe {
  readonly #db: Database.Database;
  readonly #high: Database.Statement;
  readonly #find: Database.Statement;
  readonly #count: Database.Statement;

  constructor(stateDir: string) {
    this.#db = new Database(join(stateDir, 'journal.db'), { readonly: true, fileMustExist: true });
    this.#db.pragma('busy_timeout = 5000');
    this.#high = this.#db.prepare('SELECT high_seq FROM roots WHERE path = ?').pluck();
    this.#find = this.#db
      .prepare('SELECT seq FROM changes WHERE root_id = (SELECT id FROM roots WHERE path = ?) AND seq > ? AND path = ? LIMIT 1')
      .pluck();
    this.#count = this.#db.prepare('SELECT kind, count(*) AS n FROM changes WHERE root_id = (SELECT id FROM roots WHERE path = ?) AND seq > ? GROUP BY kind');
  }

  /** The root's newest durable sequence number (0 when unknown). */
  high(root: string): number {
    return (this.#high.get(root) as number | undefined) ?? 0;
  }

  /** The seq of the first change of `rel` after `after`, or undefined. */
  find(root: string, after: number, rel: string): number | undefined {
    return this.#find.get(root, after, rel) as number | undefined;
  }

  /** Logged changes after `after`, per kind. */
  kinds(root: string, after: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of this.#count.all(root, after) as { kind: string; n: number }[]) out[r.kind] = r.n;
    return out;
  }

  close(): void {
    this.#db.close();
  }
}

/** The 1-minute load average (other benchmarks running on the machine skew ours). */
export function loadNote(): string {
  return `load average ${loadavg()[0]!.toFixed(2)}`;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
