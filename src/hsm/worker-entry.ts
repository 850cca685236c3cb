/**
 * Entry of the worker process a supervisor spawns: fd 4 is the inherited group, fd 5 the pipe
 * on which the highest event fd number is reported, and the IPC channel carries the config.
 * @packageDocumentation
 */
import { HsmDaemon, type WorkerConfig } from './daemon.js';

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

async function stop(): Promise<void> {
  await daemon?.stop();
  process.disconnect?.();
  process.exit(0);
}

process.on('message', (m: Msg) => {
  if (m.t === 'config') {
    HsmDaemon.start(
      { ...m.cfg, groupFd: 4, reportFd: 5 },
      {
        ready: () => send({ t: 'ready' }),
        log: (msg) => send({ t: 'log', msg }),
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
// Without a supervisor there is nobody to restart us or to unmount: keep serving until killed.
process.on('disconnect', () => undefined);
