/**
 * The remote server and client on a real loop filesystem: records, ids, access, queues, resume,
 * fuzzing a live server, connection churn.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { serve, type RemoteServer } from '../src/remote/server.js';
import { connect, type RemoteSubscription } from '../src/remote/client.js';
import { encodeFrame, frameOf, type EventRecord, type ObjectRef } from '../src/remote/protocol.js';
import { useLoopFs, requireRoot } from './helpers/loopfs.js';
import { runInChild, deadline } from './helpers/proc.js';
import { tempStateDir, removeStateDirs, sleep } from './helpers/journal.js';
import { mulberry32 } from './helpers/random.js';
import { native } from '../src/native.js';
import { RawClient, UpdateLog, describeRecord, type Msg } from './helpers/remote.js';

requireRoot();

const CLIENT_JS = fileURLToPath(new URL('../src/remote/client.js', import.meta.url));

/**
 * The start of a child's script (an ES module run as another uid, argv: socket, root): subscribe
 * to the root and collect every record as "kind path" in `seen`.
 */
const CHILD_SUBSCRIBER = `
  const { connect } = await import(${JSON.stringify(CLIENT_JS)});
  const fs = await import('node:fs');
  const [sock, root] = process.argv.slice(1);
  const seen = [];
  const sub = connect(sock, { root, reconnect: false });
  sub.on('update', (u) => { if (u.type === 'events') for (const r of u.events) seen.push(r.kind + ' ' + r.path); });
  await sub.ready;`;

/** Then: create ROOT/ready for the test to start, and wait (8 s at most) for the test's ROOT/last. */
const CHILD_READY_UNTIL_LAST = `
  fs.writeFileSync(root + '/ready', '');
  const end = Date.now() + 8000;
  while (!seen.includes('create last') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));`;

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('remote server on ext4', { timeout: 300_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 256 });
  let server: RemoteServer;
  let sockDir: string;
  let sock: string;
  let n = 0;
  const subs: RemoteSubscription[] = [];

  before(async () => {
    // Unprivileged children must reach the mount and the socket.
    fs.chmodSync(dirname(loop.fs.dir), 0o755);
    sockDir = fs.mkdtempSync(join(tmpdir(), 'fan-remote-'));
    fs.chmodSync(sockDir, 0o755);
    sock = join(sockDir, 'fan.sock');
    server = await serve({ socket: sock, journalStateDir: tempStateDir() });
  });
  after(async () => {
    for (const s of subs) await s.close();
    await server?.close();
    fs.rmSync(sockDir, { recursive: true, force: true });
    removeStateDirs();
  });

  const fresh = (): string => {
    const root = `${loop.fs.dir}/case${n++}`;
    fs.mkdirSync(root);
    return root;
  };
  const subscribe = async (root: string, extra: Partial<Parameters<typeof connect>[1]> = {}): Promise<{ sub: RemoteSubscription; log: UpdateLog }> => {
    const sub = connect(sock, { root, ...extra });
    subs.push(sub);
    const log = new UpdateLog(sub);
    await sub.ready;
    return { sub, log };
  };

  test('changes arrive as records; a rename is one record with both sides', async () => {
    const root = fresh();
    const { sub, log } = await subscribe(root);
    fs.mkdirSync(`${root}/src`);
    fs.writeFileSync(`${root}/src/a.ts`, 'one');
    await log.until(() => log.records.some((r) => r.path === 'src/a.ts'), 5000, 'create src/a.ts');
    const created = log.records.find((r) => r.path === 'src/a.ts')!;
    const srcDir = log.records.find((r) => r.path === 'src')!;
    fs.mkdirSync(`${root}/lib`);
    await log.until(() => log.records.some((r) => r.path === 'lib'));
    const lib = log.records.find((r) => r.path === 'lib')!;
    fs.renameSync(`${root}/src/a.ts`, `${root}/lib/b.ts`);
    fs.unlinkSync(`${root}/lib/b.ts`);
    await log.until(() => log.records.some((r) => r.kind === 'delete'));
    // A file's create and its close-after-write may land in two batches: leave such updates out.
    const records = log.records.filter((r) => r.kind !== 'update');
    assert.deepEqual(records.map(describeRecord), ['create src/', 'create src/a.ts', 'create lib/', 'rename src/a.ts->lib/b.ts', 'delete lib/b.ts']);
    const rename = records[3]!;
    assert.deepEqual(
      { object: rename.object, oldParent: rename.oldParent, oldName: rename.oldName, newParent: rename.newParent, newName: rename.newName, parent: rename.parent, name: rename.name },
      { object: created.object, oldParent: srcDir.object, oldName: 'a.ts', newParent: lib.object, newName: 'b.ts', parent: lib.object, name: 'b.ts' },
    );
    assert.deepEqual(records[4]!.object, created.object, 'the delete names the same object');
    assert.deepEqual(created.parent, srcDir.object);
    assert.deepEqual(srcDir.parent, sub.root);
    assert.ok(!JSON.stringify(records).includes(loop.fs.dir), 'no host path leaves the server');
  });

  test('a metadata-only change is an attrib record; a write is an update', async () => {
    const root = fresh();
    fs.writeFileSync(`${root}/f`, 'one');
    const { log } = await subscribe(root);
    fs.chmodSync(`${root}/f`, 0o600);
    await log.until(() => log.records.some((r) => r.path === 'f'), 5000, 'attrib f');
    fs.appendFileSync(`${root}/f`, 'two');
    await log.until(() => log.records.some((r) => r.kind === 'update'), 5000, 'update f');
    const seen = log.records.map(describeRecord);
    // The write's modify and close-after-write may land in two batches: one or two updates.
    assert.deepEqual([seen[0], [...new Set(seen.slice(1))]], ['attrib f', ['update f']]);
  });

  test('a reused inode keeps its id with the next generation; the old generation is stale', async () => {
    const root = fresh();
    const { sub, log } = await subscribe(root);
    let first: EventRecord | undefined;
    let second: EventRecord | undefined;
    for (let attempt = 0; attempt < 20 && !second; attempt++) {
      fs.writeFileSync(`${root}/f`, 'a');
      const ino = fs.statSync(`${root}/f`).ino;
      await log.until(() => log.records.some((r) => r.kind === 'create' && r.path === 'f'));
      first = log.records.find((r) => r.kind === 'create' && r.path === 'f')!;
      fs.unlinkSync(`${root}/f`);
      await log.until(() => log.records.some((r) => r.kind === 'delete'));
      log.updates.length = 0;
      fs.writeFileSync(`${root}/g`, 'b');
      const reused = fs.statSync(`${root}/g`).ino === ino;
      await log.until(() => log.records.some((r) => r.path === 'g'));
      if (reused) second = log.records.find((r) => r.path === 'g');
      fs.unlinkSync(`${root}/g`);
      await log.until(() => log.records.some((r) => r.kind === 'delete'));
      if (!reused) log.updates.length = 0;
    }
    assert.ok(first && second, 'ext4 reused the inode within 20 tries');
    assert.equal(second.object.id, first.object.id, 'same inode, same id');
    assert.equal(second.object.gen, first.object.gen + 1, 'next generation');
    fs.writeFileSync(`${root}/h`, 'c');
    await log.until(() => log.records.some((r) => r.path === 'h'));
    await assert.rejects(sub.stat(first.object), { code: 'stale-object' });
  });

  test('forged, malformed, out-of-root and stale ids are rejected with error; lookup cannot leave the root', async () => {
    const a = fresh();
    const b = fresh();
    fs.writeFileSync(`${b}/secret`, 'x');
    fs.writeFileSync(`${a}/mine`, 'y');
    const c = await RawClient.hello(sock);
    try {
      const sa = await c.request({ type: 'subscribe', sub: 'a', root: a });
      const sb = await c.request({ type: 'subscribe', sub: 'b', root: b });
      assert.equal(sa.type, 'ack');
      const rootA = sa.root as ObjectRef;
      const rootB = sb.root as ObjectRef;
      const listing = await c.request({ type: 'readdir', sub: 'b', object: rootB });
      const secret = (listing.entries as { name: string; object: ObjectRef }[]).find((e) => e.name === 'secret')!.object;
      const codeOf = async (m: Record<string, unknown>): Promise<string> => {
        const r = await c.request(m);
        assert.equal(r.type, 'error', JSON.stringify(r));
        return `${String(r.code)}`;
      };
      assert.equal(await codeOf({ type: 'stat', sub: 'a', object: { id: 'f'.repeat(24), gen: 1 } }), 'unknown-object');
      assert.equal(await codeOf({ type: 'stat', sub: 'a', object: { id: '../../etc/passwd', gen: 1 } }), 'unknown-object');
      assert.equal(await codeOf({ type: 'stat', sub: 'a', object: { id: secret.id, gen: 1 } }), 'out-of-root');
      assert.equal(await codeOf({ type: 'readdir', sub: 'a', object: rootB }), 'out-of-root');
      assert.equal(await codeOf({ type: 'stat', sub: 'b', object: { id: secret.id, gen: secret.gen + 1 } }), 'unknown-object');
      assert.equal(await codeOf({ type: 'lookup', sub: 'a', parent: rootA, name: '..' }), 'out-of-root');
      assert.equal(await codeOf({ type: 'lookup', sub: 'a', parent: rootA, name: '../case0' }), 'out-of-root');
      assert.equal(await codeOf({ type: 'stat', sub: 'a', object: { id: rootA.id, gen: 0 } }), 'bad-message');
      assert.equal(await codeOf({ type: 'stat', sub: 'zz', object: rootA }), 'unknown-subscription');
      const mine = await c.request({ type: 'lookup', sub: 'a', parent: rootA, name: 'mine' });
      const mineRef = (mine.entry as { object: ObjectRef }).object;
      assert.equal((mine.entry as { stat: { size: number } }).stat.size, 1);
      fs.unlinkSync(`${a}/mine`);
      fs.writeFileSync(`${a}/mine`, 'replaced');
      assert.equal(await codeOf({ type: 'stat', sub: 'a', object: mineRef }), 'stale-object');
      // A directory swapped for a symlink to outside the root: its old id is stale, not followed.
      fs.mkdirSync(`${a}/d`);
      const d = await c.request({ type: 'lookup', sub: 'a', parent: rootA, name: 'd' });
      const dRef = (d.entry as { object: ObjectRef }).object;
      fs.rmdirSync(`${a}/d`);
      fs.symlinkSync(b, `${a}/d`);
      assert.equal(await codeOf({ type: 'readdir', sub: 'a', object: dRef }), 'stale-object');
      assert.equal(await codeOf({ type: 'lookup', sub: 'a', parent: dRef, name: 'secret' }), 'stale-object');
      const pong = await c.request({ type: 'ping' });
      assert.equal(pong.type, 'pong', 'the connection is still served');
    } finally {
      c.close();
    }
  });

  test('readdir pages through a large directory; lookups of missing names are errors and keep no ids', async () => {
    const root = fresh();
    for (let i = 0; i < 2500; i++) fs.writeFileSync(`${root}/f${String(i).padStart(4, '0')}`, '');
    const { sub } = await subscribe(root);
    const entries = await sub.readdir(sub.root!);
    assert.equal(entries.length, 2500);
    assert.equal(new Set(entries.map((e) => e.object.id)).size, 2500);
    assert.deepEqual([entries[0]!.name, entries[2499]!.name], ['f0000', 'f2499']);
    const ids = server.stats().ids;
    for (let i = 0; i < 200; i++) await assert.rejects(sub.lookup(sub.root!, `missing${i}`), { code: 'unknown-object' });
    assert.equal(server.stats().ids, ids);
  });

  test('requests before hello and unknown versions are errors, never crashes', async () => {
    const c = await RawClient.open(sock);
    try {
      const r = await c.request({ type: 'subscribe', sub: 'x', root: '/' });
      assert.deepEqual([r.type, r.code], ['error', 'hello-required']);
      const v = await c.request({ type: 'hello', versions: [7] });
      assert.deepEqual([v.type, v.code], ['error', 'unsupported-version']);
      const h = await c.request({ type: 'hello', versions: [2, 1] });
      assert.deepEqual([h.type, h.version, h.auth], ['hello', 1, 'peer']);
    } finally {
      c.close();
    }
  });

  test('an unprivileged client (uid 65534) cannot subscribe to a directory it cannot read', async () => {
    const closed = fresh();
    fs.chmodSync(closed, 0o700);
    const open = fresh();
    fs.chmodSync(open, 0o755);
    fs.mkdirSync(`${open}/private`, { mode: 0o700 });
    fs.chmodSync(`${open}/private`, 0o700);
    const script = `
      const { connect } = await import(${JSON.stringify(CLIENT_JS)});
      const [sock, root] = process.argv.slice(1);
      const out = {};
      const sub = connect(sock, { root, reconnect: false });
      try { await sub.ready; out.subscribe = 'ok'; } catch (e) { out.subscribe = e.code; out.message = e.message; }
      if (out.subscribe === 'ok') {
        const entries = await sub.readdir(sub.root);
        out.names = entries.map((e) => e.name).sort();
        const priv = entries.find((e) => e.name === 'private');
        try { await sub.readdir(priv.object); out.private = 'listed'; } catch (e) { out.private = e.code; }
      }
      await sub.close();
      console.log(JSON.stringify(out));
    `;
    const denied = await runInChild(script, { uid: 65534, module: true, args: [sock, closed], timeoutMs: 15_000 });
    assert.equal(denied.code, 0, denied.stderr);
    const d = JSON.parse(denied.stdout.trim()) as { subscribe: string; message: string };
    assert.equal(d.subscribe, 'forbidden');
    assert.match(d.message, /uid 65534 may not read and search/);
    const allowed = await runInChild(script, { uid: 65534, module: true, args: [sock, open], timeoutMs: 15_000 });
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.deepEqual(JSON.parse(allowed.stdout.trim()), { subscribe: 'ok', names: ['private'], private: 'forbidden' });
  });

  test('an unprivileged client gets no records from below a directory it cannot search', async () => {
    const root = fresh();
    fs.chmodSync(root, 0o777);
    fs.mkdirSync(`${root}/private`, { mode: 0o700 });
    fs.chmodSync(`${root}/private`, 0o700);
    const script = `${CHILD_SUBSCRIBER}
      ${CHILD_READY_UNTIL_LAST}
      await sub.close();
      console.log(JSON.stringify(seen));
    `;
    const child = runInChild(script, { uid: 65534, module: true, args: [sock, root], timeoutMs: 15_000 });
    const end = Date.now() + 10_000;
    while (!fs.existsSync(`${root}/ready`) && Date.now() < end) await sleep(20);
    fs.writeFileSync(`${root}/private/secret`, 'x');
    fs.mkdirSync(`${root}/private/inner`);
    fs.renameSync(`${root}/private/secret`, `${root}/private/inner/moved`);
    fs.writeFileSync(`${root}/visible`, 'y');
    await sleep(50);
    fs.writeFileSync(`${root}/last`, 'z');
    const r = await child;
    assert.equal(r.code, 0, r.stderr);
    const seen = JSON.parse(r.stdout.trim()) as string[];
    // A file's create and its close-after-write may land in two batches: an update may follow.
    assert.deepEqual(seen.filter((x) => x.startsWith('create ')), ['create ready', 'create visible', 'create last']);
    assert.deepEqual(seen.filter((x) => !/^(create|update) (ready|visible|last)$/.test(x)), [], 'nothing from below private/');
  });

  test('an ACL denying a named user hides that directory from it until the ACL changes', async () => {
    const root = fresh();
    fs.chmodSync(root, 0o777);
    fs.mkdirSync(`${root}/acl`, { mode: 0o755 });
    fs.mkdirSync(`${root}/open`, { mode: 0o755 });
    // The mode bits let "other" list acl/; the ACL entry takes that away from uid 65534 alone.
    execFileSync('setfacl', ['-m', 'u:65534:---', `${root}/acl`]);
    const { log } = await subscribe(root);
    const script = `${CHILD_SUBSCRIBER}
      const dirs = await sub.readdir(sub.root);
      const acl = dirs.find((e) => e.name === 'acl');
      let listing;
      try { await sub.readdir(acl.object); listing = 'listed'; } catch (e) { listing = e.code; }
      ${CHILD_READY_UNTIL_LAST}
      let after;
      try { after = (await sub.readdir(acl.object)).map((e) => e.name).sort(); } catch (e) { after = e.code; }
      await sub.close();
      console.log(JSON.stringify({ listing, seen, after }));
    `;
    const child = runInChild(script, { uid: 65534, module: true, args: [sock, root], timeoutMs: 20_000 });
    await log.until(() => log.records.some((r) => r.path === 'ready'), 10_000, 'the child ready');
    fs.writeFileSync(`${root}/acl/secret`, 'x');
    fs.writeFileSync(`${root}/open/visible`, 'y');
    // Once the root client has the secret's record, the other subscriber's copy was filtered too.
    await log.until(() => log.records.some((r) => r.path === 'acl/secret'), 10_000, 'acl/secret at the root client');
    execFileSync('setfacl', ['-x', 'u:65534', `${root}/acl`]);
    await log.until(() => log.records.some((r) => r.kind === 'attrib' && r.path === 'acl'), 10_000, 'the ACL change as an attrib record');
    fs.writeFileSync(`${root}/acl/after`, 'z');
    await log.until(() => log.records.some((r) => r.path === 'acl/after'), 10_000, 'acl/after at the root client');
    fs.writeFileSync(`${root}/last`, 'w');
    const r = await child;
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as { listing: string; seen: string[]; after: string[] | string };
    assert.equal(out.listing, 'forbidden', 'the ACL denies listing acl/ although "other" may');
    assert.deepEqual(
      out.seen.filter((x) => x.startsWith('create ')),
      ['create ready', 'create open/visible', 'create acl/after', 'create last'],
    );
    assert.ok(!out.seen.some((x) => x.includes('secret')), `nothing of acl/secret: ${JSON.stringify(out.seen)}`);
    assert.deepEqual(out.after, ['after', 'secret'], 'once the ACL entry is gone, acl/ can be listed');
  });

  test('native.accessAs asks the kernel as another user (named-user ACLs count) and restores the thread', () => {
    const dir = fresh();
    fs.chmodSync(dir, 0o755);
    fs.mkdirSync(`${dir}/d`, { mode: 0o755 });
    execFileSync('setfacl', ['-m', 'u:65534:---,g:4242:r-x', `${dir}/d`]);
    fs.chmodSync(`${dir}/d`, 0o750);
    const status = (): string[] => fs.readFileSync('/proc/self/status', 'utf8').match(/^(Uid|Gid|Groups|CapEff|CapPrm):.*$/gm) ?? [];
    const before = status();
    const R_X = 5;
    assert.equal(native.accessAs(65534, 65534, [65534], `${dir}/d`, R_X), false, 'the named-user entry denies');
    assert.equal(native.accessAs(65533, 65533, [65533], `${dir}/d`, R_X), false, 'the mask (750) leaves "other" nothing');
    assert.equal(native.accessAs(65533, 65533, [65533, 4242], `${dir}/d`, R_X), true, 'a supplementary group with an ACL grant');
    assert.equal(native.accessAs(65533, 4242, [], `${dir}/d`, R_X), true, 'the primary group is the fsgid');
    assert.equal(native.accessAs(65533, 65533, [65533], `${dir}/missing`, R_X), false);
    assert.equal(native.accessAs(0, 0, [], `${dir}/d`, R_X), true);
    assert.throws(() => native.accessAs(65533, 65533, ['x' as unknown as number], `${dir}/d`, R_X), /groups/);
    assert.deepEqual(status(), before, 'uid, gids, groups and capabilities are as before');
    fs.readdirSync(`${dir}/d`);
  });

  test('resume after a disconnect returns exactly the missed changes', async () => {
    const root = fresh();
    const { sub: first, log } = await subscribe(root);
    fs.writeFileSync(`${root}/a1`, '1');
    fs.writeFileSync(`${root}/a2`, '2');
    // Wait for the checkpoint cursor that covers both.
    await log.until((u) => u.some((x) => x.type === 'events' && x.cursor !== undefined && log.records.filter((r) => r.path.startsWith('a')).length >= 2), 10_000, 'a checkpoint after a1, a2');
    const cursor = first.cursor!;
    assert.match(cursor, /^fj1:/);
    await first.close();
    fs.writeFileSync(`${root}/b1`, 'b');
    fs.mkdirSync(`${root}/bd`);
    fs.renameSync(`${root}/a1`, `${root}/a3`);
    fs.unlinkSync(`${root}/a2`);
    await sleep(200);
    const { log: log2 } = await subscribe(root, { cursor });
    await log2.until((u) => u.some((x) => x.type === 'events' && x.events.length > 0), 10_000, 'the missed changes');
    await sleep(300);
    const missed = log2.records.map(describeRecord).sort();
    assert.deepEqual(missed, ['create b1', 'create bd/', 'delete a2', 'rename a1->a3']);
    assert.ok(log2.updates.every((u) => u.type !== 'invalidate'));
    fs.writeFileSync(`${root}/live`, 'x');
    await log2.until(() => log2.records.some((r) => r.path === 'live'), 5000, 'live events after the resume');
  });

  test('a resume cursor of another journal instance gets invalidate with the reason', async () => {
    const root = fresh();
    const { log } = await subscribe(root, { cursor: `fj1:${'0'.repeat(32)}:${'0'.repeat(16)}:5` });
    await log.until((u) => u.some((x) => x.type === 'invalidate'), 10_000, 'invalidate');
    const inv = log.updates.find((x) => x.type === 'invalidate')!;
    assert.deepEqual(inv.type === 'invalidate' && [inv.reason, inv.detail], ['resume', 'other-instance']);
  });

  test('a client that reads in sips gets every frame whole and in order, through partial and queued writes', async () => {
    const root = `${loop.fs.dir}/sips`;
    fs.mkdirSync(root);
    const raw = await RawClient.hello(sock);
    assert.equal((await raw.request({ type: 'subscribe', sub: 's', root })).type, 'ack');
    // Paused first, so the socket fills: writes are cut short and the next frames queue.
    raw.socket.pause();
    const N = 4000;
    for (let i = 0; i < N; i += 200) {
      for (let j = i; j < i + 200; j++) fs.writeFileSync(`${root}/sip-file-with-a-long-name-${String(j).padStart(5, '0')}`, '');
      await sleep(5);
    }
    const sipper = setInterval(() => (raw.socket.isPaused() ? raw.socket.resume() : raw.socket.pause()), 15);
    try {
      const events = (): Msg[] => raw.messages.filter((m: Msg) => m.type === 'events');
      const count = (): number => events().reduce((k, m) => k + (m.events as unknown[]).length, 0);
      const end = Date.now() + 30_000;
      while (count() < N && Date.now() < end) await sleep(20);
      assert.deepEqual(raw.messages.filter((m: Msg) => m.type !== 'events' && m.type !== 'ack' && m.type !== 'hello').map((m) => m.type), [], 'no error or invalidate');
      assert.deepEqual(events().map((m) => m.seq), events().map((_, i) => i + 1), 'seq 1, 2, 3… with no frame lost or reordered');
      const paths = events().flatMap((m) => (m.events as EventRecord[]).map((r) => r.path));
      assert.deepEqual(paths, Array.from({ length: N }, (_, j) => `sip-file-with-a-long-name-${String(j).padStart(5, '0')}`));
    } finally {
      clearInterval(sipper);
      raw.close();
    }
  });

  test('live fuzz: 20,000 malformed, oversize and partial frames never disturb another client', async () => {
    const root = fresh();
    const { log } = await subscribe(root);
    const rnd = mulberry32(77);
    let errors = 0;
    let cut = 0;
    const files: string[] = [];
    for (let conn = 0; conn < 20; conn++) {
      const c = await RawClient.open(sock);
      const parts: Buffer[] = [encodeFrame({ type: 'hello', versions: [1] })];
      for (let i = 0; i < 1000; i++) {
        const k = rnd() % 6;
        if (k === 0) parts.push(frameOf('{"type":"subscribe","sub":1}'));
        else if (k === 1) parts.push(frameOf(JSON.stringify({ type: 'stat', req: i, sub: 's', object: { id: (rnd() * 1e9).toString(16), gen: 1 } })));
        else if (k === 2) parts.push(Buffer.from([0, 0, 0, 3, 0xc3, 0x28, 0x41]));
        else if (k === 3) parts.push(Buffer.from([0, 0, 0, 0]));
        else if (k === 4) parts.push(frameOf('[1,2,{'));
        else parts.push(encodeFrame({ type: 'readdir', req: i, sub: 'nope', object: { id: 'a'.repeat(24), gen: 1 } }));
      }
      const ending = conn % 3;
      if (ending === 1) parts.push(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
      if (ending === 2) parts.push(Buffer.from([0, 0, 1]));
      const bytes = Buffer.concat(parts);
      for (let at = 0; at < bytes.length; ) {
        const len = 1 + (rnd() % 700);
        c.socket.write(bytes.subarray(at, at + len));
        at += len;
      }
      const f = `f${conn}`;
      files.push(f);
      fs.writeFileSync(`${root}/${f}`, 'x');
      if (ending === 1) {
        await c.waitClosed(5000);
        cut++;
      } else {
        await c.next((m) => m.type === 'error' && m.code === 'unknown-subscription', 5000);
        await sleep(20);
      }
      errors += c.messages.filter((m) => m.type === 'error').length;
      c.close();
    }
    await log.until(() => files.every((f) => log.records.some((r) => r.path === f)), 10_000, 'every file the other client was told about');
    assert.deepEqual(log.records.filter((r) => r.kind !== 'update').map(describeRecord), files.map((f) => `create ${f}`));
    assert.ok(errors > 5000, `errors answered: ${errors}`);
    assert.equal(cut, 7, 'oversize frames end their connection');
    const c = await RawClient.hello(sock);
    assert.equal((await c.request({ type: 'ping' })).type, 'pong');
    c.close();
  });
});

describe('remote ids across a server restart', { timeout: 120_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 128 });
  after(() => removeStateDirs());

  test('with a state dir, ids of unchanged objects stay valid after a restart; replaced ones are stale; a damaged table means new ids', async () => {
    const stateDir = tempStateDir();
    const sockDir = fs.mkdtempSync(join(tmpdir(), 'fan-remote-ids-'));
    const sock = join(sockDir, 'fan.sock');
    const root = `${loop.fs.dir}/r`;
    fs.mkdirSync(`${root}/sub`, { recursive: true });
    fs.writeFileSync(`${root}/keep`, 'kept');
    fs.writeFileSync(`${root}/sub/deep`, 'deeper');
    fs.writeFileSync(`${root}/gone`, 'old');
    const run = async <T>(fn: (sub: RemoteSubscription) => Promise<T>): Promise<T> => {
      const server = await serve({ socket: sock, journalStateDir: stateDir, lingerMs: 0 });
      const sub = connect(sock, { root, reconnect: false });
      try {
        await sub.ready;
        return await fn(sub);
      } finally {
        await sub.close();
        await server.close();
      }
    };
    const byName = (entries: { name: string; object: ObjectRef }[]): Record<string, ObjectRef> => Object.fromEntries(entries.map((e) => [e.name, e.object]));
    try {
      const before = await run(async (sub) => {
        const top = byName(await sub.readdir(sub.root!));
        const deep = byName(await sub.readdir(top.sub!)).deep!;
        return { root: sub.root!, top, deep };
      });
      // While no server runs: gone is replaced by another file of the same name.
      fs.unlinkSync(`${root}/gone`);
      fs.writeFileSync(`${root}/gone`, 'new');
      await run(async (sub) => {
        assert.deepEqual(sub.root, before.root, 'the root keeps its id');
        assert.equal((await sub.stat(before.top.keep!)).size, 4, 'an id issued before the restart still names keep');
        assert.equal((await sub.stat(before.deep)).size, 6, 'and sub/deep, below a directory no event named this run');
        await assert.rejects(sub.stat(before.top.gone!), { code: 'stale-object' });
        const top = byName(await sub.readdir(sub.root!));
        assert.deepEqual(top.keep, before.top.keep);
        assert.deepEqual(top.sub, before.top.sub);
        assert.notDeepEqual(top.gone, before.top.gone, 'the replacement is another object');
      });
      const saved = fs.readdirSync(stateDir).filter((f) => /^ids-[0-9a-f]{16}\.json$/.test(f));
      assert.equal(saved.length, 1, `one saved table: ${fs.readdirSync(stateDir).join(', ')}`);
      fs.writeFileSync(join(stateDir, saved[0]!), '{"v":1,"rootHandle":');
      await run(async (sub) => {
        assert.notDeepEqual(sub.root, before.root, 'a damaged table is not used');
        await assert.rejects(sub.stat(before.top.keep!), { code: 'unknown-object' });
        assert.equal((await sub.readdir(sub.root!)).length, 3);
      });
    } finally {
      fs.rmSync(sockDir, { recursive: true, force: true });
    }
  });
});

describe('remote queues and churn on ext4', { timeout: 300_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 256 });
  let server: RemoteServer;
  let sockDir: string;
  let sock: string;

  before(async () => {
    sockDir = fs.mkdtempSync(join(tmpdir(), 'fan-remote-q-'));
    sock = join(sockDir, 'fan.sock');
    server = await serve({ socket: sock, maxQueueEvents: 500, maxQueueBytes: 256 * 1024 });
  });
  after(async () => {
    await server?.close();
    fs.rmSync(sockDir, { recursive: true, force: true });
  });

  test('a client that stops reading gets invalidate when it reads again; the other client gets everything', async () => {
    const root = `${loop.fs.dir}/stall`;
    fs.mkdirSync(root);
    const good = connect(sock, { root });
    const log = new UpdateLog(good);
    await good.ready;
    const stalled = await RawClient.hello(sock);
    assert.equal((await stalled.request({ type: 'subscribe', sub: 's', root })).type, 'ack');
    stalled.socket.pause();
    const N = 6000;
    for (let i = 0; i < N; i += 200) {
      for (let j = i; j < i + 200; j++) fs.writeFileSync(`${root}/file-with-a-long-name-${String(j).padStart(5, '0')}`, '');
      await sleep(5);
    }
    await log.until(() => log.records.length >= N, 20_000, `${N} records`);
    assert.equal(new Set(log.records.map((r) => r.path)).size, N);
    assert.ok(log.updates.every((u) => u.type === 'events'), 'no invalidate for the reading client');
    assert.ok(server.stats().overflows >= 1, 'the stalled client overflowed');
    stalled.socket.resume();
    const inv = await stalled.next((m) => m.type === 'invalidate', 10_000, 'invalidate');
    assert.deepEqual([inv.sub, inv.reason], ['s', 'overflow']);
    const seen = stalled.messages.filter((m: Msg) => m.type === 'events').reduce((k, m) => k + (m.events as unknown[]).length, 0);
    assert.ok(seen < N, `the stalled client got ${seen} of ${N} records and an invalidate`);
    stalled.close();
    await good.close();
  });

  test('a slow iterator stops reading: the client holds a bounded number of records and gets invalidate', async () => {
    const root = `${loop.fs.dir}/slow`;
    fs.mkdirSync(root);
    const sub = connect(sock, { root, maxBufferedRecords: 300 });
    await sub.ready;
    let received = 0;
    sub.on('update', (u) => (received += u.type === 'events' ? u.events.length : 1));
    const it = sub[Symbol.asyncIterator]();
    for (let i = 0; i < 6000; i += 200) {
      for (let j = i; j < i + 200; j++) fs.writeFileSync(`${root}/slow-file-with-a-long-name-${String(j).padStart(5, '0')}`, '');
      await sleep(5);
    }
    await sleep(500);
    const held = received;
    assert.ok(held < 3000, `the client stopped reading after ${held} of 6000 records`);
    const kinds: string[] = [];
    const end = Date.now() + 15_000;
    while (!kinds.includes('invalidate') && Date.now() < end) {
      const r = await deadline(it.next(), 5000, 'the next update');
      if (r.done) break;
      kinds.push(r.value.type);
    }
    assert.ok(kinds.includes('invalidate'), `got ${kinds.length} updates, none an invalidate`);
    await sub.close();
  });

  test('2000 connects and disconnects leak no fds, connections or feeds', async () => {
    const root = `${loop.fs.dir}/churn`;
    fs.mkdirSync(root);
    const warm = await RawClient.hello(sock);
    await warm.request({ type: 'subscribe', sub: 'w', root });
    warm.close();
    await sleep(200);
    const before = openFds();
    const rss = process.memoryUsage().rss;
    for (let round = 0; round < 100; round++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const c = await RawClient.hello(sock);
          if (i % 2 === 0) {
            const a = await c.request({ type: 'subscribe', sub: 'x', root });
            assert.equal(a.type, 'ack');
          }
          if (i % 4 === 0) c.send({ type: 'bye' });
          c.close();
        }),
      );
    }
    const end = Date.now() + 10_000;
    while ((server.stats().connections > 0 || server.stats().roots > 0) && Date.now() < end) await sleep(20);
    await sleep(300);
    assert.deepEqual({ connections: server.stats().connections, roots: server.stats().roots, ids: server.stats().ids }, { connections: 0, roots: 0, ids: 0 });
    const afterFds = openFds();
    assert.ok(afterFds <= before + 2, `fds before ${before}, after ${afterFds}`);
    const grown = (process.memoryUsage().rss - rss) / 2 ** 20;
    assert.ok(grown < 100, `rss grew ${grown.toFixed(1)} MiB`);
  });
});
