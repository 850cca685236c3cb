/**
 * Entry of the worker process a supervisor spawns: fd 4 is the inherited group, fd 5 the pipe
 * on which the highest event fd number is reported, and the IPC channel carries the config.
 * @packageDocumentation
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { HsmDaemon, type WorkerConfig } from './daemon.js';
import { unregister } from './registry.js';

const execFileP = promisify(execFile);
/** How often an orphaned worker tries to unmount a target that is still in use. */
const ORPHAN_RETRY_MS = 1000;

type Msg =
  | { t: 'config'; cfg: Omit<WorkerConfig, 'groupFd' | 'reportFd'> }
  | { t: 'stop' }
  | { t: 'unmounted'; id: number; error?: string }
  | { t: 'release'; id: number }
  | { t: 'resume' };

const send = (m: Record<string, unknown>): void => {
  process.send?.(m);
};
const unmountWaits = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
let nextId = 1;
let daemon: HsmDaemon | undefined;
let target: string | undefined;
/** A stop the supervisor asked for: our own disconnect then is no orphaning. */
let stopping = false;

async function stop(): Promise<void> {
  stopping = true;
  await daemon?.stop();
  process.disconnect?.();
  process.exit(0);
}

process.on('message', (m: Msg) => {
  if (m.t === 'config') {
    target = m.cfg.target;
    HsmDaemon.start(
      { ...m.cfg, groupFd: 4, reportFd: 5 },
      {
        ready: () => send({ t: 'ready' }),
        log: (msg) => send({ t: 'log', msg }),
        // Exit only once the line left: a worker that dies is restarted, its last words are kept.
        fatal: (msg) => {
          if (!process.send?.({ t: 'log', msg }, () => process.exit(70))) process.exit(70);
        },
        unmount: (force) =>
          new Promise<void>((resolve, reject) => {
            const id = nextId++;
            unmountWaits.set(id, {
              resolve: () => {
                resolve();
                // Let the control reply reach the client first.
                setTimeout(() => void stop(), 200);
              },
              reject,
            });
            send({ t: 'unmount', force, id });
          }),
      },
    ).then(
      (d) => (daemon = d),
      (err: unknown) => {
        send({ t: 'fatal', msg: err instanceof Error ? err.message : String(err) });
        setTimeout(() => process.exit(1), 100);
      },
    );
  } else if (m.t === 'stop') {
    void stop();
  } else if (m.t === 'release') {
    void (daemon?.releaseEventFds() ?? Promise.resolve()).then(() => send({ t: 'released', id: m.id }));
  } else if (m.t === 'resume') {
    daemon?.resumeEventFds();
  } else if (m.t === 'unmounted') {
    const w = unmountWaits.get(m.id);
    unmountWaits.delete(m.id);
    if (m.error) w?.reject(new Error(m.error));
    else w?.resolve();
  }
});
// A lease break (an open racing our eviction probe) sends SIGIO, whose default is to exit.
process.on('SIGIO', () => undefined);
/**
 * The supervisor is gone (killed): nobody will restart us or unmount, and our copy of the group
 * is the last one, so our exit would let the kernel ALLOW every pending read (zeros in holes).
 * Make the target unreachable first: a plain umount, retried while files are in use, serving
 * their reads meanwhile (never a lazy one, which would leave open files to read zeros once we
 * exit); only then stop.
 */
async function orphaned(): Promise<void> {
  const d = daemon;
  if (stopping) return;
  if (!d || !target) process.exit(0);
  process.stderr.write(`fan hsm: the supervisor is gone; unmounting ${target} once nothing uses it\n`);
  // Event fds are opened through the target: while we wait, write through the backing path.
  await d.releaseEventFds();
  for (;;) {
    try {
      await execFileP('umount', [target]);
      break;
    } catch {
      await sleep(ORPHAN_RETRY_MS);
    }
  }
  unregister(target);
  await d.stop();
  process.exit(0);
}
process.on('disconnect', () => void orphaned());
