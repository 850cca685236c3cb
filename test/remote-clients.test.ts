/**
 * Clients of the remote server: the coherent stat cache (random changes, kernel overflow),
 * watch() through the daemon for an unprivileged process, WebSocket with token and TLS, and the
 * `fan connect` command.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { serve, type RemoteServer } from '../src/remote/server.js';
import { connect } from '../src/remote/client.js';
import { StatCache } from '../src/remote/cache-client.js';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { runInChild, withMaxQueuedEvents, execCmd } from './helpers/proc.js';
import { prng, sleep, waitUntil, CLI, runFan } from './helpers/journal.js';
import { UpdateLog, describeRecord, hostTree } from './helpers/remote.js';

requireRoot();

const WATCH_JS = fileURLToPath(new URL('../src/watch/index.js', import.meta.url));

/** The cache as relative path → "type size", like {@link hostTree}. */
function cacheTree(cache: StatCache): Map<string, string> {
  return new Map(
    [...cache.entries]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([p, e]) => [p, `${e.stat.type} ${e.stat.type === 'dir' ? '-' : e.stat.size}`]),
  );
}

/** Random file and directory changes below `root`, tracked so every op is valid. */
class RandomTree {
  readonly files = new Set<string>();
  readonly dirs = new Set<string>(['']);
  #k = 0;
  constructor(
    readonly root: string,
    readonly rnd: () => number,
  ) {}

  #pick<T>(s: Set<T>): T | undefined {
    if (s.size === 0) return undefined;
    return [...s][Math.floor(this.rnd() * s.size)];
  }
  #abs(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }
  #join(dir: string, name: string): string {
    return dir === '' ? name : `${dir}/${name}`;
  }
  #move(from: string, to: string): void {
    for (const set of [this.files, this.dirs]) {
      for (const p of [...set]) {
        if (p === from || p.startsWith(`${from}/`)) {
          set.delete(p);
          set.add(to + p.slice(from.length));
        }
      }
    }
  }

  op(): void {
    const r = this.rnd();
    const dir = this.#pick(this.dirs)!;
    if (r < 0.3 || this.files.size === 0) {
      const p = this.#join(dir, `f${this.#k++}`);
      fs.writeFileSync(this.#abs(p), 'x'.repeat(Math.floor(this.rnd() * 100)));
      this.files.add(p);
    } else if (r < 0.45) {
      fs.appendFileSync(this.#abs(this.#pick(this.files)!), 'y'.repeat(1 + Math.floor(this.rnd() * 50)));
    } else if (r < 0.55) {
      const p = this.#join(dir, `d${this.#k++}`);
      fs.mkdirSync(this.#abs(p));
      this.dirs.add(p);
    } else if (r < 0.7) {
      const f = this.#pick(this.files)!;
      const to = this.#join(dir, `r${this.#k++}`);
      fs.renameSync(this.#abs(f), this.#abs(to));
      this.#move(f, to);
    } else if (r < 0.78) {
      const d = this.#pick(this.dirs)!;
      if (d === '' || dir === d || dir.startsWith(`${d}/`)) return;
      const to = this.#join(dir, `m${this.#k++}`);
      fs.renameSync(this.#abs(d), this.#abs(to));
      this.#move(d, to);
    } else if (r < 0.9) {
      const f = this.#pick(this.files)!;
      fs.unlinkSync(this.#abs(f));
      this.files.delete(f);
    } else {
      const d = this.#pick(this.dirs)!;
      if (d === '') return;
      fs.rmSync(this.#abs(d), { recursive: true });
      for (const set of [this.files, this.dirs]) for (const p of [...set]) if (p === d || p.startsWith(`${d}/`)) set.delete(p);
    }
  }
}

describe('remote clients on ext4', { timeout: 300_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 256 });
  let server: RemoteServer;
  let sockDir: string;
  let sock: string;
  let n = 0;

  before(async () => {
    fs.chmodSync(dirname(loop.fs.dir), 0o755);
    sockDir = fs.mkdtempSync(join(tmpdir(), 'fan-remote-c-'));
    fs.chmodSync(sockDir, 0o755);
    sock = join(sockDir, 'fan.sock');
    server = await serve({ socket: sock });
  });
  after(async () => {
    await server?.close();
    fs.rmSync(sockDir, { recursive: true, force: true });
  });
  const fresh = (mode = 0o755): string => {
    const root = `${loop.fs.dir}/case${n++}`;
    fs.mkdirSync(root);
    fs.chmodSync(root, mode);
    return root;
  };

  test('a stat cache equals the host tree after random changes, and after an overflow → invalidate → resync', async () => {
    const root = fresh();
    // The root's fanotify group is made now, with a kernel queue of 64 events.
    const sub = await withMaxQueuedEvents(64, async () => {
      const s = connect(sock, { root });
      await s.ready;
      return s;
    });
    const cache = new StatCache(sub);
    await cache.run();
    let marker = 0;
    const settle = async (): Promise<void> => {
      const name = `.settle-${marker++}`;
      fs.writeFileSync(`${root}/${name}`, '');
      await waitUntil(async () => {
        await cache.idle();
        return cache.entries.has(name);
      }, `the cache to see ${name}`);
      fs.unlinkSync(`${root}/${name}`);
      await waitUntil(async () => {
        await cache.idle();
        return !cache.entries.has(name);
      }, `the cache to drop ${name}`);
    };
    const tree = new RandomTree(root, prng(20261121));
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 80; i++) {
        tree.op();
        if (i % 7 === 0) await sleep(1);
      }
      await settle();
      assert.deepEqual(cacheTree(cache), hostTree(root), `round ${round}`);
    }
    assert.equal(cache.rebuilds, 1, 'no invalidate yet');
    // 3000 changes while the server cannot read: the 64-event kernel queue overflows.
    for (let i = 0; i < 3000; i++) tree.op();
    await waitUntil(() => cache.rebuilds >= 2, 'an invalidate and a rebuild', 15_000);
    await settle();
    assert.deepEqual(cacheTree(cache), hostTree(root), 'after the overflow');
    assert.ok(hostTree(root).size > 0, 'the tree is not empty');
    await sub.close();
  });

  test('watch() in a process without CAP_SYS_ADMIN subscribes through the daemon; ready says so', async () => {
    const root = fresh(0o777);
    const script = `
      const { watch } = await import(${JSON.stringify(WATCH_JS)});
      const fs = await import('node:fs');
      const [root] = process.argv.slice(1);
      const sub = watch(root, { debounceMs: 10 });
      const info = await sub.ready;
      const seen = [];
      sub.on('events', (b) => seen.push(...b.map((e) => e.type === 'rename' ? 'rename ' + e.oldPath.slice(root.length + 1) + '->' + e.path.slice(root.length + 1) : e.type + ' ' + e.path.slice(root.length + 1))));
      fs.writeFileSync(root + '/from-child', 'x');
      fs.renameSync(root + '/from-child', root + '/renamed');
      const end = Date.now() + 5000;
      while (seen.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      await sub.close();
      console.log(JSON.stringify({ backend: info.backend, roots: info.roots, seen }));
    `;
    const r = await runInChild(script, { uid: 65534, module: true, args: [root], env: { ...process.env, FAN_SOCKET: sock }, timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { backend: string; roots: string[]; seen: string[] };
    assert.equal(out.backend, 'daemon');
    assert.deepEqual(out.roots, [root]);
    assert.ok(
      JSON.stringify(out.seen) === JSON.stringify(['create from-child', 'rename from-child->renamed']) || JSON.stringify(out.seen) === JSON.stringify(['create renamed']),
      JSON.stringify(out.seen),
    );
  });

  test('fan connect --json prints a ready line and one line per record', async () => {
    const root = fresh();
    const child = spawn(process.execPath, [CLI, 'connect', '--json', sock, root], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    try {
      await waitUntil(() => out.includes('"type":"ready"'), 'the ready line', 10_000);
      fs.writeFileSync(`${root}/x`, '1');
      fs.renameSync(`${root}/x`, `${root}/y`);
      await waitUntil(() => out.includes('"kind":"rename"') || out.includes('"path":"y"'), 'the records', 10_000);
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(lines[0]!.type, 'ready');
      const events = lines.filter((l) => l.type === 'event').map((l) => (l.kind === 'rename' ? `rename ${String(l.oldPath)}->${String(l.path)}` : `${String(l.kind)} ${String(l.path)}`));
      assert.ok(['create x,rename x->y', 'create y'].includes(events.join(',')), events.join(','));
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('fan serve refuses what it cannot do safely, saying what to add', async () => {
    const noToken = await runFan(['serve', '--no-socket', '--listen', 'ws://127.0.0.1:0', '--export', '/tmp']);
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /--listen needs --token-file: remote clients must authenticate/);
    const busy = await runFan(['serve', '--socket', sock]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /is already served by another process; stop it or choose --socket/);
  });

  describe('WebSocket', () => {
    let wsServer: RemoteServer;
    let wssServer: RemoteServer;
    let dir: string;
    let exported: string;
    const token = 'correct-horse-battery-staple';

    before(async () => {
      dir = fs.mkdtempSync(join(tmpdir(), 'fan-remote-ws-'));
      fs.writeFileSync(`${dir}/token`, `${token}\n`);
      await execCmd('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { timeoutMs: 30_000 });
      exported = fresh();
      wsServer = await serve({ socket: false, listen: 'ws://127.0.0.1:0', tokenFile: `${dir}/token`, exports: [exported] });
      wssServer = await serve({ socket: false, listen: 'wss://127.0.0.1:0', tokenFile: `${dir}/token`, exports: [exported], cert: `${dir}/cert.pem`, key: `${dir}/key.pem` });
    });
    after(async () => {
      await wsServer?.close();
      await wssServer?.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    test('a wrong or missing token is refused; a root outside the exports is forbidden', async () => {
      await assert.rejects(connect(wsServer.url!, { root: exported, token: 'wrong-token-wrong-token', reconnect: false }).ready, { code: 'auth-failed' });
      await assert.rejects(connect(wsServer.url!, { root: exported, reconnect: false }).ready, { code: 'auth-required' });
      await assert.rejects(connect(wsServer.url!, { root: loop.fs.dir, token, reconnect: false }).ready, { code: 'forbidden' });
    });

    for (const secure of [false, true]) {
      test(`events over ${secure ? 'wss' : 'ws'} with the token`, async () => {
        const s = secure ? wssServer : wsServer;
        const sub = connect(s.url!, { root: exported, token, reconnect: false, ...(secure ? { ca: fs.readFileSync(`${dir}/cert.pem`) } : {}) });
        const log = new UpdateLog(sub);
        await sub.ready;
        const name = secure ? 'over-wss' : 'over-ws';
        fs.mkdirSync(`${exported}/${name}`);
        await log.until(() => log.records.some((r) => r.path === name), 5000);
        assert.deepEqual(log.records.map(describeRecord), [`create ${name}/`]);
        const entries = await sub.readdir(sub.root!);
        assert.ok(entries.some((e) => e.name === name && e.stat.type === 'dir'));
        await sub.close();
      });
    }
  });
});
