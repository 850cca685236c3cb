/**
 * Worker thread bootstrap: load the user's handler module and answer one message per access.
 * @packageDocumentation
 */
import { parentPort, workerData } from 'node:worker_threads';

type Handler = (ctx: unknown) => unknown;

const mod = (await import((workerData as { module: string }).module)) as { default?: Handler; handler?: Handler };
const handler = mod.default ?? mod.handler;
if (typeof handler !== 'function') {
  throw new Error(`${(workerData as { module: string }).module} must export a default (or "handler") function`);
}

parentPort!.on('message', (m: { id: number; ctx: unknown }) => {
  Promise.resolve()
    .then(() => handler(m.ctx))
    .then(
      (decision) => parentPort!.postMessage({ id: m.id, decision }),
      (err: unknown) => parentPort!.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) }),
    );
});
