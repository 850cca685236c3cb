/**
 * A real nats-server (Debian's) with JetStream, on loopback and a free port, with its store in a
 * temp dir; stopped and removed by `stop()`.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accepts, freePort } from './loopback.js';

/** A running nats-server. */
export interface NatsServer {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}


/** Start `nats-server -js` (with `--auth TOKEN` when given a token) and wait (up to 10 s) until it accepts connections. */
export async function startNats(options: { token?: string } = {}): Promise<NatsServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'fan-nats-'));
  let stderr = '';
  let exited: string | undefined;
  const child: ChildProcess = spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir, ...(options.token ? ['--auth', options.token] : [])], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/usr/bin` },
  });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  child.once('error', (e) => (exited = `cannot start nats-server (apt-get install nats-server): ${e.message}`));
  child.once('exit', (code, signal) => (exited ??= `nats-server exited (${code ?? signal}): ${stderr.slice(-2000)}`));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const end = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (exited !== undefined || Date.now() > end) {
      await stop();
      throw new Error(exited ?? `nats-server did not accept connections on 127.0.0.1:${port} within 10 s: ${stderr.slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `nats://127.0.0.1:${port}`, port, stop };
}
