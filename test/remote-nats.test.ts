/**
 * The NATS JetStream bridge against a real nats-server: publish, consume with a durable consumer,
 * continue after a consumer restart, and the `fan connect nats://` command.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { spawn } from 'node:child_process';
import { serve, type RemoteServer } from '../src/remote/server.js';
import { publishToNats, consumeFromNats, subjectFor, type NatsEnvelope } from '../src/remote/nats.js';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { startNats, type NatsServer } from './helpers/nats.js';
import { CLI, waitUntil } from './helpers/journal.js';
import { describeRecord } from './helpers/remote.js';
import { deadline } from './helpers/proc.js';

requireRoot();

describe('NATS JetStream bridge', { timeout: 120_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 128 });
  let nats: NatsServer;
  let server: RemoteServer;
  let root: string;
  let bridge: Awaited<ReturnType<typeof publishToNats>>;

  before(async () => {
    nats = await startNats();
    root = `${loop.fs.dir}/published`;
    fs.mkdirSync(root);
    server = await serve({ socket: false });
    bridge = await publishToNats((r) => server.acquire(r), (f) => server.release(f), { url: nats.url, roots: [root], host: 'web1', maxAgeMs: 3600_000 });
  });
  after(async () => {
    await bridge?.close();
    await server?.close();
    await nats?.stop();
  });

  /** Take envelopes from a durable consumer until `n` records arrived. */
  const take = async (durable: string, n: number): Promise<NatsEnvelope[]> => {
    const out: NatsEnvelope[] = [];
    let records = 0;
    const it = consumeFromNats({ url: nats.url, host: 'web1', root, durable });
    await deadline(
      (async () => {
        for await (const env of it) {
          out.push(env);
          if (env.type === 'events') records += env.events.length;
          if (records >= n) break;
        }
      })(),
      15_000,
      `${n} records from JetStream`,
    );
    return out;
  };

  test('subjects are per host and root', () => {
    assert.match(subjectFor('web1', root), /^fan\.web1\.[0-9a-f]{16}$/);
    assert.equal(subjectFor('a.b c', '/x'), subjectFor('a_b_c', '/x'));
  });

  test('round trip: events published by the server come back through a durable consumer, which continues after a restart', async () => {
    fs.writeFileSync(`${root}/one`, '1');
    fs.renameSync(`${root}/one`, `${root}/two`);
    await waitUntil(() => bridge.published() >= 1, 'a publication', 10_000);
    const first = await take('indexer', 1);
    const records = first.flatMap((e) => (e.type === 'events' ? e.events : []));
    assert.ok(['create two', 'create one,rename one->two'].includes(records.map(describeRecord).join(',')), records.map(describeRecord).join(','));
    assert.ok(first.every((e) => e.host === 'web1' && e.root === root));
    // Acked messages are not delivered again; new ones are.
    fs.mkdirSync(`${root}/three`);
    const second = await take('indexer', 1);
    const more = second.flatMap((e) => (e.type === 'events' ? e.events : [])).map(describeRecord);
    assert.equal(more.at(-1), 'create three/');
    assert.ok(!more.includes('create two') && !more.includes('create one'), more.join(','));
  });

  test('fan connect nats:// --json prints the records', async () => {
    fs.writeFileSync(`${root}/cli`, 'x');
    await waitUntil(() => bridge.published() >= 3, 'the publication of cli', 10_000);
    const child = spawn(process.execPath, [CLI, 'connect', '--json', '--host', 'web1', '--durable', 'cli', nats.url, root], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    try {
      await waitUntil(() => out.includes('"path":"cli"'), `the cli record (stderr: ${err})`, 15_000);
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(lines[0]!.type, 'ready');
      assert.ok(lines.some((l) => l.type === 'event' && l.kind === 'create' && l.path === 'cli'));
    } finally {
      child.kill('SIGTERM');
    }
  });
});

describe('NATS with token authentication', { timeout: 120_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 128 });
  const TOKEN = 's3cret-token-for-the-test';
  let nats: NatsServer;
  let server: RemoteServer;
  let root: string;
  let tokenFile: string;

  before(async () => {
    nats = await startNats({ token: TOKEN });
    root = `${loop.fs.dir}/authed`;
    fs.mkdirSync(root);
    tokenFile = `${loop.fs.dir}/nats-token`;
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    server = await serve({ socket: false });
  });
  after(async () => {
    await server?.close();
    await nats?.stop();
  });

  test('without the token, or with a wrong one, publishing and consuming fail with a message naming the credentials', async () => {
    const publish = (token?: string): Promise<unknown> =>
      publishToNats((r) => server.acquire(r), (f) => server.release(f), { url: nats.url, roots: [root], host: 'web2', ...(token === undefined ? {} : { token }) });
    for (const token of [undefined, 'wrong-token']) {
      await assert.rejects(publish(token), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'EACCES');
        assert.match(e.message, /refused the credentials: .*Authorization Violation.*check the token/i);
        return true;
      });
    }
    await assert.rejects(consumeFromNats({ url: nats.url, host: 'web2', root, durable: 'x' }).next(), /refused the credentials/);
    assert.equal(server.stats().roots, 0, 'a refused bridge holds no feed');
    await assert.rejects(consumeFromNats({ url: nats.url, host: 'web2', root, durable: 'x', user: 'u' }).next(), /a user needs a password/);
  });

  test('with the token: fan serve --publish and fan connect nats:// --nats-token-file carry records end to end', async () => {
    const sock = `${loop.fs.dir}/serve.sock`;
    const serveProc = spawn(process.execPath, [CLI, 'serve', '--socket', sock, '--json', '--publish', nats.url, '--publish-root', root, '--host-name', 'web2', '--nats-token-file', tokenFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let serveOut = '';
    let serveErr = '';
    serveProc.stdout.setEncoding('utf8').on('data', (s: string) => (serveOut += s));
    serveProc.stderr.setEncoding('utf8').on('data', (s: string) => (serveErr += s));
    let child: ReturnType<typeof spawn> | undefined;
    let out = '';
    let err = '';
    try {
      // Ready means the stream exists: a consumer needs it.
      await waitUntil(() => serveOut.includes('"type":"ready"'), `fan serve ready (stderr: ${serveErr})`, 15_000);
      child = spawn(process.execPath, [CLI, 'connect', '--json', '--host', 'web2', '--durable', 'authed', '--nats-token-file', tokenFile, nats.url, root], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.setEncoding('utf8').on('data', (s: string) => (out += s));
      child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
      await waitUntil(() => out.includes('"type":"ready"'), `fan connect ready (stderr: ${err})`, 15_000);
      fs.writeFileSync(`${root}/through-auth`, 'x');
      await waitUntil(() => out.includes('"path":"through-auth"'), `the record through an authenticated NATS (stderr: ${err} / ${serveErr})`, 15_000);
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.equal(lines[0]!.type, 'ready');
      assert.ok(lines.some((l) => l.type === 'event' && l.kind === 'create' && l.path === 'through-auth'));
    } finally {
      child?.kill('SIGTERM');
      serveProc.kill('SIGTERM');
      await new Promise((r) => serveProc.once('exit', r));
    }
    const refused = spawn(process.execPath, [CLI, 'connect', '--host', 'web2', nats.url, root], { stdio: ['ignore', 'pipe', 'pipe'] });
    let refusedErr = '';
    refused.stderr.setEncoding('utf8').on('data', (s: string) => (refusedErr += s));
    const code = await new Promise<number | null>((r) => refused.once('exit', r));
    assert.notEqual(code, 0);
    assert.match(refusedErr, /refused the credentials/);
  });
});
