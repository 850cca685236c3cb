/**
 * The node listener process of bench/guard-open.ts, in one of four modes:
 *
 *   node dist/bench/guard-child.js PATH guard-off|guard-on|group|raw
 *
 * - `guard-off` / `guard-on`: our `Guard` with one allow-all rule for `open` on PATH (a mount
 *   mark), decision cache off / on, no decision log: what a user gets.
 * - `group`: `FanotifyGroup` (content class, mount mark, FAN_OPEN_PERM) with `listen(ev =>
 *   ev.allow())`: the event layer without the guard's policy, path and process lookups.
 * - `raw`: the addon alone (`native.init`, `native.mark`, `native.startReader`), answering each
 *   event with one `writeSync` and closing its fd, then back to the event loop: what a JS
 *   listener costs without the group's reread after a batch it answered.
 *
 * Writes "ready" to stdout once marked. On SIGTERM/SIGINT: stops (answering anything pending),
 * writes "events N" (and "metrics <json>" for the guard) to stdout and exits 0 (so `node
 * --cpu-prof` writes its profile).
 *
 * @module
 */
import { writeSync } from 'node:fs';
import { Guard, policyFrom } from '../src/guard/index.js';
import { FanotifyGroup } from '../src/group.js';
import { native } from '../src/native.js';
import { EventBit, InitFlag, MarkFlag } from '../src/kernel/constants.js';

const MODES = ['guard-off', 'guard-on', 'group', 'raw'] as const;
type Mode = (typeof MODES)[number];
const [path, modeArg] = process.argv.slice(2);
if (!path || !(MODES as readonly string[]).includes(modeArg ?? '')) {
  process.stderr.write(`usage: node dist/bench/guard-child.js PATH ${MODES.join('|')}\n`);
  process.exit(2);
}
const mode = modeArg as Mode;

let events = 0;
let close: () => Promise<void>;
let extra = (): string => '';

if (mode === 'guard-off' || mode === 'guard-on') {
  const guard = Guard.start({
    paths: [path],
    policy: policyFrom({ default: 'allow', onError: 'allow', events: ['open'], rules: [{ name: 'allow-all', verdict: 'allow' }] }),
    cache: mode === 'guard-on',
  });
  close = () => guard.close();
  extra = () => {
    events = guard.metrics.decisions;
    return `metrics ${JSON.stringify(guard.metrics)}\n`;
  };
} else if (mode === 'group') {
  const group = FanotifyGroup.open({ class: 'content', ignorePids: [process.pid] });
  group.mark(path, { kind: 'mount', events: ['openPerm'] });
  group.listen((ev) => {
    events++;
    if ('allow' in ev) ev.allow();
  });
  close = () => group.close();
} else {
  const fd = native.init(InitFlag.CLOEXEC | InitFlag.NONBLOCK | InitFlag.CLASS_CONTENT, 0o2000000 /* O_CLOEXEC */);
  native.mark(fd, MarkFlag.ADD | MarkFlag.MOUNT, EventBit.OPEN_PERM, -100, path);
  const response = Buffer.alloc(8);
  response.writeUInt32LE(1 /* FAN_ALLOW */, 4);
  const reader = native.startReader(fd, 64 * 1024, (err, batch) => {
    if (err || !batch) return;
    for (let off = 0; off + 24 <= batch.length; ) {
      const len = batch.readUInt32LE(off);
      const efd = batch.readInt32LE(off + 16);
      if (efd >= 0) {
        response.writeInt32LE(efd, 0);
        writeSync(fd, response);
        native.close(efd);
        events++;
      }
      off += len;
    }
  });
  close = async () => {
    reader.stop();
    native.close(fd); // closing the group allows anything still pending
  };
}
process.stdout.write('ready\n');

let stopping = false;
const stop = (): void => {
  if (stopping) return;
  stopping = true;
  void close().then(() => {
    const more = extra();
    process.stdout.write(`${more}events ${events}\n`, () => process.exit(0));
  });
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
