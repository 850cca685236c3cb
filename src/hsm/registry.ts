/**
 * Where a mounted tree's daemon can be found: one small JSON file per mount in a run directory,
 * so `fan hsm status /some/path` finds the mount that contains the path without flags.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';

/** Default directory of the registry entries and control sockets. */
export const RUN_DIR = '/run/fan/hsm';
/** Default parent of per-mount state directories (range map, cached manifest). */
export const STATE_ROOT = '/var/lib/fan/hsm';

/** One mounted tree. */
export interface MountEntry {
  /** The user-visible directory. */
  readonly target: string;
  /** The directory holding the placeholders (bind-mounted on the target). */
  readonly backing: string;
  readonly stateDir: string;
  /** The control socket of the worker. */
  readonly socket: string;
  /** The supervisor's pid. */
  readonly pid: number;
  readonly source: string;
}

/** A short stable id of a target path. */
export function mountId(target: string): string {
  return createHash('sha256').update(target).digest('hex').slice(0, 16);
}

function runDir(): string {
  return process.env['FAN_HSM_RUN_DIR'] ?? RUN_DIR;
}

/** The control socket path for a target. */
export function socketPath(target: string): string {
  return join(runDir(), `${mountId(target)}.sock`);
}

/** Where a mount started with `fan hsm mount --background` logs. */
export function logPath(target: string): string {
  return join(runDir(), `${mountId(target)}.log`);
}

/** Record a mount. */
export function register(e: MountEntry): void {
  mkdirSync(runDir(), { recursive: true, mode: 0o700 });
  const file = join(runDir(), `${mountId(e.target)}.json`);
  writeFileSync(`${file}.tmp`, JSON.stringify(e));
  renameSync(`${file}.tmp`, file);
}

/** Forget a mount. */
export function unregister(target: string): void {
  rmSync(join(runDir(), `${mountId(target)}.json`), { force: true });
  rmSync(socketPath(target), { force: true });
}

/** Every recorded mount. */
export function mounts(): MountEntry[] {
  let names: string[];
  try {
    names = readdirSync(runDir());
  } catch {
    return [];
  }
  const out: MountEntry[] = [];
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      out.push(JSON.parse(readFileSync(join(runDir(), n), 'utf8')) as MountEntry);
    } catch {
      // A half-written or foreign file is not a mount.
    }
  }
  return out;
}

/**
 * The mount whose target contains `absPath` (the deepest one).
 * @throws Error when none does.
 */
export function mountOf(absPath: string): MountEntry {
  let best: MountEntry | undefined;
  for (const m of mounts()) {
    if ((absPath === m.target || absPath.startsWith(`${m.target}/`)) && (!best || m.target.length > best.target.length)) best = m;
  }
  if (!best) throw new Error(`${absPath} is not inside a tree mounted with \`fan hsm mount\``);
  return best;
}
