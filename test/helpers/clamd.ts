/**
 * A real clamd for tests: Debian's clamav-daemon started as a child process, on a unix socket in
 * a fresh temp dir, with a database of one hand-made body signature (freshclam cannot download
 * here, and we do not want the 300 MB official database anyway).
 *
 * With that one-signature database clamd answers PING about 20 ms after it is spawned.
 *
 * @module
 */
import { spawn } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** The ASCII test string our signature matches. */
export const TEST_MALWARE = 'FANOTIFY-TEST-MALWARE-7d1f3c';
/** The signature name in the .ndb. */
export const TEST_SIGNATURE = 'Fanotify.Test.Signature';
/** The name clamd reports for it (databases outside the official set get `.UNOFFICIAL`). */
export const TEST_SIGNATURE_REPORTED = `${TEST_SIGNATURE}.UNOFFICIAL`;

/** How long startClamd waits for PONG. */
const START_DEADLINE_MS = 60_000;

/** A running clamd. */
export interface ClamdInstance {
  /** Its unix socket. */
  socket: string;
  /** Its pid. */
  pid: number;
  /** The database directory (one .ndb). */
  dbDir: string;
  /** The temp dir holding config, socket, db and log. */
  dir: string;
  /** clamd's log file. */
  logFile: string;
  /** Milliseconds from spawn to the first PONG. */
  startMs: number;
  /** Resolves with the exit code (or signal name) when clamd exits. */
  exited: Promise<number | string>;
  /** Stop clamd (SIGTERM, then SIGKILL after 5 s) and remove the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startClamd}. */
export interface StartClamdOptions {
  /** More clamd.conf lines, e.g. `StreamMaxLength 1K`, `IdleTimeout 1`. */
  extraConfig?: string[];
  /**
   * Where clamd writes its temporary files (every INSTREAM stream is copied to one before it is
   * scanned): a fresh directory made under this one and removed by stop(). Default: the temp dir
   * holding the config (under os.tmpdir()).
   */
  temporaryParent?: string;
}

function findClamd(): string | undefined {
  for (const p of ['/usr/sbin/clamd', '/usr/local/sbin/clamd', '/usr/bin/clamd', '/usr/local/bin/clamd']) {
    if (existsSync(p)) return p;
  }
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'clamd'))) return join(dir, 'clamd');
  }
  return undefined;
}

/** One zPING on a fresh connection; true on PONG. */
function pingOnce(socket: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.createConnection({ path: socket });
    let data = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => s.write('zPING\0'));
    s.on('data', (d: Buffer) => {
      data += d.toString('latin1');
      if (data.includes('\0')) done(data.startsWith('PONG'));
    });
    s.on('error', () => done(false));
    s.on('close', () => done(data.startsWith('PONG')));
  });
}

/** Hex of an ASCII string, for an .ndb body signature. */
function hex(text: string): string {
  return Buffer.from(text, 'latin1').toString('hex');
}

/**
 * Start clamd with a one-signature database in a fresh temp dir and wait (up to 60 s) for it to
 * answer PING. Throws when clamd is not installed (the tests then fail, they never skip).
 */
export async function startClamd(options: StartClamdOptions = {}): Promise<ClamdInstance> {
  const clamd = findClamd();
  if (!clamd) throw new Error('clamd not installed: apt-get install clamav-daemon');

  const dir = await mkdtemp(join(tmpdir(), 'fanotify-clamd-'));
  const dbDir = join(dir, 'db');
  await mkdir(dbDir);
  await writeFile(join(dbDir, 'fanotify-test.ndb'), `${TEST_SIGNATURE}:0:*:${hex(TEST_MALWARE)}\n`);
  const socket = join(dir, 'clamd.sock');
  const logFile = join(dir, 'clamd.log');
  const conf = join(dir, 'clamd.conf');
  const tempDir = options.temporaryParent ? await mkdtemp(join(options.temporaryParent, 'fanotify-clamd-tmp-')) : dir;
  await writeFile(
    conf,
    [
      `LocalSocket ${socket}`,
      'LocalSocketMode 600',
      'FixStaleSocket yes',
      `DatabaseDirectory ${dbDir}`,
      `TemporaryDirectory ${tempDir}`,
      `PidFile ${join(dir, 'clamd.pid')}`,
      `LogFile ${logFile}`,
      'LogTime yes',
      'LogVerbose no',
      'Foreground yes',
      'User root',
      // Quick and quiet: no periodic database self-check, no bytecode, no extra threads.
      'SelfCheck 0',
      'Bytecode no',
      'MaxThreads 12',
      ...(options.extraConfig ?? []),
      '',
    ].join('\n'),
  );

  const started = performance.now();
  const child = spawn(clamd, [`--config-file=${conf}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    if (stderr.length < 16_384) stderr += s;
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1));
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });
  const pid = child.pid;
  if (pid === undefined) {
    await rm(dir, { recursive: true, force: true });
    await rm(tempDir, { recursive: true, force: true });
    throw new Error(`could not spawn ${clamd}`);
  }

  // Last resort when the test process ends without stop().
  const onExit = (): void => {
    try {
      if (!hasExited) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(tempDir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', onExit);
    if (!hasExited) {
      child.kill('SIGTERM');
      const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killTimer);
    }
    await rm(dir, { recursive: true, force: true });
    await rm(tempDir, { recursive: true, force: true });
  };

  const deadline = started + START_DEADLINE_MS;
  for (;;) {
    if (hasExited) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      await stop();
      throw new Error(`clamd exited before answering PING (exit ${String(await exited)}):\n${stderr}\n${log}`);
    }
    if (existsSync(socket) && (await pingOnce(socket))) break;
    if (performance.now() > deadline) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      await stop();
      throw new Error(`clamd did not answer PING within ${START_DEADLINE_MS / 1000} s:\n${stderr}\n${log}`);
    }
    await sleep(10);
  }
  const startMs = performance.now() - started;
  return { socket, pid, dbDir, dir, logFile, startMs, exited, stop };
}
