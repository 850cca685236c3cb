/**
 * A scanner that runs a command-line scanner (clamscan, clamdscan, a script) with the file's
 * path appended, and maps its exit code: like clamscan, 0 = clean, 1 = infected, anything else
 * = error. The signature is taken from the first stdout line ending in `: <name> FOUND`.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { errorResult, CLEAN, type ScanResult, type ScanTarget, type Scanner } from './scanner.js';

/** Options of {@link commandScanner}. */
export interface CommandScannerOptions {
  /** The program (looked up in PATH). */
  command: string;
  /** Arguments before the file path. */
  args?: string[];
  /** Kill the command (SIGKILL) and answer an error after this many ms (default 30000). */
  timeoutMs?: number;
  /** Exit codes meaning clean (default [0]). */
  cleanCodes?: number[];
  /** Exit codes meaning infected (default [1]). */
  infectedCodes?: number[];
  /** Scanner name for logs (default `command:<command>`). */
  name?: string;
  /** Environment of the command (default: ours). */
  env?: NodeJS.ProcessEnv;
}

/** Output kept from each stream (the rest is dropped). */
const MAX_OUTPUT = 64 * 1024;

/** SIGKILL the child's process group (it leads one: spawned detached), or the child alone. */
function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
    else child.kill('SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/** The signature named by the first `…: <name> FOUND` line of clamscan-style output, if any. */
export function signatureFromOutput(stdout: string): string | undefined {
  for (const line of stdout.split(/\r?\n/)) {
    const m = /^.*: (.+?) FOUND$/.exec(line.trimEnd());
    if (m?.[1]) return m[1];
  }
  return undefined;
}

/** A {@link Scanner} running `command ...args <path>` for each file. */
export function commandScanner(options: CommandScannerOptions): Scanner {
  const { command } = options;
  if (typeof command !== 'string' || command.length === 0) throw new TypeError('commandScanner: command must be a non-empty string');
  const args = options.args ?? [];
  const timeoutMs = options.timeoutMs ?? 30_000;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new RangeError(`commandScanner: timeoutMs must be a positive integer, got ${timeoutMs}`);
  const cleanCodes = new Set(options.cleanCodes ?? [0]);
  const infectedCodes = new Set(options.infectedCodes ?? [1]);
  const name = options.name ?? `command:${command}`;
  const children = new Set<ChildProcess>();
  let closed = false;

  function run(target: ScanTarget, signal?: AbortSignal): Promise<ScanResult> {
    const line = [command, ...args, target.path].join(' ');
    return new Promise<ScanResult>((resolve) => {
      let settled = false;
      let stdout = '';
      let stderr = '';
      let killedFor: string | undefined;
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const finish = (result: ScanResult): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (onAbort) signal?.removeEventListener('abort', onAbort);
        resolve(result);
      };
      let child: ChildProcess;
      try {
        child = spawn(command, [...args, target.path], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: options.env ?? process.env,
          // Its own process group, so a timeout kills the scanner's children too (whose open
          // pipes would otherwise keep us waiting).
          detached: true,
        });
      } catch (err) {
        finish(errorResult(new Error(`${name}: cannot run ${line}: ${(err as Error).message}`, { cause: err })));
        return;
      }
      children.add(child);
      const kill = (why: string): void => {
        killedFor ??= why;
        killGroup(child);
      };
      timer = setTimeout(() => kill(`timed out after ${timeoutMs} ms`), timeoutMs);
      onAbort = (): void => kill('aborted by the caller');
      signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout?.setEncoding('utf8').on('data', (s: string) => {
        if (stdout.length < MAX_OUTPUT) stdout += s;
      });
      child.stderr?.setEncoding('utf8').on('data', (s: string) => {
        if (stderr.length < MAX_OUTPUT) stderr += s;
      });
      child.on('error', (err) => {
        children.delete(child);
        finish(errorResult(new Error(`${name}: cannot run ${line}: ${err.message}`, { cause: err })));
      });
      child.on('exit', () => {
        // Killed by us: answer now, without waiting for grandchildren to release the pipes.
        if (killedFor) {
          children.delete(child);
          finish(errorResult(new Error(`${name}: ${line} ${killedFor}`)));
        }
      });
      child.on('close', (code, sig) => {
        children.delete(child);
        if (killedFor) {
          finish(errorResult(new Error(`${name}: ${line} ${killedFor}`)));
        } else if (code === null) {
          finish(errorResult(new Error(`${name}: ${line} was killed by ${sig ?? 'a signal'}`)));
        } else if (cleanCodes.has(code)) {
          finish(CLEAN);
        } else if (infectedCodes.has(code)) {
          finish({ verdict: 'infected', signature: signatureFromOutput(stdout) ?? 'unknown' });
        } else {
          const detail = (stderr.trim() || stdout.trim()).split('\n').slice(0, 3).join(' / ');
          finish(errorResult(new Error(`${name}: ${line} exited with code ${code}${detail ? `: ${detail}` : ''}`)));
        }
      });
    });
  }

  return {
    name,
    async scan(target: ScanTarget, signal?: AbortSignal): Promise<ScanResult> {
      if (closed) return errorResult(new Error(`${name}: the scanner is closed`));
      if (signal?.aborted) return errorResult(new Error(`${name}: scan of ${target.path} aborted by the caller`));
      try {
        return await run(target, signal);
      } catch (err) {
        return errorResult(err);
      }
    },
    async close(): Promise<void> {
      closed = true;
      const running = [...children];
      await Promise.all(
        running.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null || c.signalCode !== null) return resolve();
              c.once('exit', () => resolve());
              killGroup(c);
            }),
        ),
      );
    },
  };
}
