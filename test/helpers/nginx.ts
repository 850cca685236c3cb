/**
 * A real nginx (Debian's) serving a directory on 127.0.0.1 and a free port, with its config,
 * logs and pid in a temp dir; the access log tells how many body bytes were served.
 *
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { accepts, freePort } from './loopback.js';

/** A running nginx. */
export interface Nginx {
  /** `http://127.0.0.1:PORT/` */
  readonly url: string;
  readonly port: number;
  /** Requests served so far: `{uri, status, bytes, range}`. */
  requests(): Promise<{ uri: string; status: number; bytes: number; range: string }[]>;
  /** Body bytes served so far (sum over the access log). */
  bytesServed(): Promise<number>;
  /** Stop nginx and remove its temp dir. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Start nginx serving `root`. Fails loudly (naming the Debian package) when nginx is missing.
 */
export async function startNginx(root: string): Promise<Nginx> {
  const dir = await mkdtemp(join(tmpdir(), 'fan-nginx-'));
  const port = await freePort();
  const log = join(dir, 'access.log');
  await writeFile(
    join(dir, 'nginx.conf'),
    `user root;
worker_processes 1;
error_log ${dir}/error.log;
pid ${dir}/nginx.pid;
events { worker_connections 1024; }
http {
  log_format bytes '$request_uri $status $body_bytes_sent "$http_range"';
  access_log ${log} bytes;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  sendfile on; keepalive_requests 1000000; keepalive_timeout 120s;
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${root}; location / { autoindex on; } }
}
`,
  );
  let child: ChildProcess;
  try {
    child = spawn('/usr/sbin/nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    throw new Error(`cannot start nginx (apt-get install nginx-light or nginx): ${(err as Error).message}`);
  }
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.once('error', () => undefined);
  const deadline = Date.now() + 10_000;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`nginx did not start on port ${port} (is it installed? apt-get install nginx): ${stderr}`);
    }
    await sleep(20);
  }
  let stopped = false;
  const requests = async (): Promise<{ uri: string; status: number; bytes: number; range: string }[]> => {
    const text = await readFile(log, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => {
        const m = /^(\S+) (\d+) (\d+) "(.*)"$/.exec(l);
        return { uri: m?.[1] ?? '', status: Number(m?.[2]), bytes: Number(m?.[3]), range: m?.[4] ?? '' };
      });
  };
  return {
    url: `http://127.0.0.1:${port}/`,
    port,
    requests,
    bytesServed: async () => (await requests()).reduce((s, r) => s + r.bytes, 0),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000).then(() => child.kill('SIGKILL'))]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
