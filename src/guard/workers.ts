/**
 * A pool of worker threads running a user's decision handler, one event per call.
 * @packageDocumentation
 */
import { Worker } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import { resolve as resolvePath } from 'node:path';
import type { AccessContext } from './policy.js';

/** What a handler returns: a verdict, optionally with an errno for a deny. */
export type HandlerDecision = 'allow' | 'deny' | { readonly verdict: 'allow' | 'deny'; readonly errno?: string };

interface Pending {
  resolve: (d: HandlerDecision) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  inFlight: Map<number, Pending>;
}

const ENTRY = new URL('./worker-entry.js', import.meta.url);

/**
 * Runs `module`'s default export `(ctx: AccessContext) => HandlerDecision | Promise<…>` in `size`
 * worker threads. Each call goes to exactly one worker, the least busy one. A worker that crashes
 * fails its in-flight calls (the guard then answers them with its error verdict) and is replaced.
 */
export class WorkerPool {
  readonly #slots: Slot[] = [];
  readonly #url: string;
  #next = 1;
  #closed = false;
  /** Why the pool stopped replacing workers (a crash loop), if it did. */
  #broken: string | undefined;
  #recentCrashes: number[] = [];
  /** Workers replaced after a crash. */
  restarts = 0;

  constructor(module: string, readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`workers must be a positive integer, got ${size}`);
    this.#url = module.startsWith('file:') ? module : pathToFileURL(resolvePath(module)).href;
    for (let i = 0; i < size; i++) this.#slots.push(this.#spawn());
  }

  /** Thread ids of the workers (they share this process's pid). */
  get threadIds(): number[] {
    return this.#slots.map((s) => s.worker.threadId);
  }

  #spawn(): Slot {
    const worker = new Worker(ENTRY, { workerData: { module: this.#url } });
    const slot: Slot = { worker, inFlight: new Map() };
    worker.on('message', (m: { id: number; decision?: HandlerDecision; error?: string }) => {
      const p = slot.inFlight.get(m.id);
      if (!p) return;
      slot.inFlight.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(m.error));
      else p.resolve(m.decision!);
    });
    const fail = (why: string): void => {
      for (const p of slot.inFlight.values()) p.reject(new Error(why));
      slot.inFlight.clear();
      if (this.#closed || this.#broken) return;
      // A handler module that cannot even load would crash every replacement: stop the loop.
      const now = Date.now();
      this.#recentCrashes = [...this.#recentCrashes.filter((t) => now - t < 5000), now];
      if (this.#recentCrashes.length > this.size * 3) {
        this.#broken = why;
        return;
      }
      const at = this.#slots.indexOf(slot);
      if (at >= 0) {
        this.restarts++;
        this.#slots[at] = this.#spawn();
      }
    };
    worker.on('error', (err) => fail(`worker thread crashed: ${err.message}`));
    worker.on('exit', (code) => fail(`worker thread exited with code ${code}`));
    worker.unref();
    return slot;
  }

  /** Run the handler for one access in the least busy worker. */
  run(ctx: AccessContext): Promise<HandlerDecision> {
    if (this.#closed) return Promise.reject(new Error('the worker pool is closed'));
    if (this.#broken) return Promise.reject(new Error(`the worker pool stopped after repeated crashes: ${this.#broken}`));
    let slot = this.#slots[0]!;
    for (const s of this.#slots) if (s.inFlight.size < slot.inFlight.size) slot = s;
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      slot.inFlight.set(id, { resolve, reject });
      slot.worker.postMessage({ id, ctx });
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }
}
