/**
 * A watch subscription: batches changes, delivers them to listeners and iterators, ends cleanly.
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import { Batcher } from './batch.js';
import { diffTrees, snapshotTree, stateOfPath, type TreeState } from './crawl.js';
import type { IgnoreMatcher } from './ignore.js';
import type { RootSink } from './root.js';
import type { ReadyInfo, RescanReason, WatchEvent } from './types.js';
import { isUnder } from '../resolve/paths.js';

/** What a backend gives a subscription: a way to stop it. */
export interface BackendHandle {
  readonly backend: ReadyInfo['backend'];
  close(): void;
}

/** Events of {@link Subscription} as an EventEmitter. */
export interface SubscriptionEvents {
  /** The watch is live. */
  ready: [info: ReadyInfo];
  /** A batch of coalesced events. */
  events: [batch: WatchEvent[]];
  /** The subscription ended (closed, or every root went away). */
  close: [];
}

/**
 * A live watch. Use it as an async iterable of event batches (`for await (const batch of sub)`;
 * breaking out closes it) or as an EventEmitter (`sub.on('events', batch => …)`). Errors arrive
 * as `error` events inside batches, never as an emitter 'error', so a listener is never required.
 */
export class Subscription extends EventEmitter<SubscriptionEvents> implements AsyncIterable<WatchEvent[]>, RootSink {
  /** Resolves once events are being captured. */
  readonly ready: Promise<ReadyInfo>;
  readonly #resolveReady!: (info: ReadyInfo) => void;
  readonly #debounceMs: number;
  readonly #flushWhen: ((ev: WatchEvent) => boolean) | undefined;
  readonly #batcher: Batcher;
  #timer: NodeJS.Timeout | undefined;
  #backend: BackendHandle | undefined;
  #closed = false;
  #liveRoots: Set<string>;
  #queue: WatchEvent[][] = [];
  #waiters: ((r: IteratorResult<WatchEvent[]>) => void)[] = [];
  #info: ReadyInfo | undefined;
  /** autoRescan: the last known state per root. */
  readonly #snapshots = new Map<string, TreeState>();
  readonly #ignores: ReadonlyMap<string, IgnoreMatcher>;

  constructor(
    readonly roots: readonly string[],
    options: {
      debounceMs: number;
      autoRescan: boolean;
      ignores: ReadonlyMap<string, IgnoreMatcher>;
      flushWhen?: (ev: WatchEvent) => boolean;
      coalesce?: boolean;
    },
  ) {
    super();
    this.#batcher = new Batcher(options.coalesce ?? true);
    this.#debounceMs = options.debounceMs;
    this.#flushWhen = options.flushWhen;
    this.#liveRoots = new Set(roots);
    this.#ignores = options.ignores;
    let resolve!: (info: ReadyInfo) => void;
    this.ready = new Promise((r) => (resolve = r));
    this.#resolveReady = resolve;
    if (options.autoRescan) {
      for (const root of roots) this.#snapshots.set(root, new Map());
    }
  }

  /** The ready information, once ready. */
  get info(): ReadyInfo | undefined {
    return this.#info;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Called by `watch()` when the backend is live. */
  start(backend: BackendHandle, startedAt: number): void {
    this.#backend = backend;
    const info: ReadyInfo = { roots: this.roots, backend: backend.backend, readyMs: performance.now() - startedAt };
    this.#info = info;
    this.#resolveReady(info);
    // After the caller had a chance to attach listeners.
    queueMicrotask(() => this.emit('ready', info));
    for (const root of this.#snapshots.keys()) {
      void snapshotTree(root, this.#ignores.get(root)).then((s) => {
        if (!this.#closed) this.#snapshots.set(root, s);
      });
    }
  }

  /** RootSink: a change to batch. */
  change(ev: WatchEvent): void {
    if (this.#closed) return;
    this.#batcher.add(ev);
    if (this.#flushWhen?.(ev)) this.#flush();
    else this.#schedule();
  }

  /** RootSink: the root went away; report it and end when no root is left. */
  end(root: string, reason: RescanReason): void {
    this.change({ type: 'rescan', path: root, reason, isDir: true, time: Date.now() });
    this.#liveRoots.delete(root);
    if (this.#liveRoots.size === 0) {
      this.#flush();
      void this.close();
    }
  }

  /** The kernel queue overflowed: every root must rescan; with autoRescan, diff and report. */
  overflow(): void {
    const time = Date.now();
    for (const root of this.#liveRoots) this.change({ type: 'rescan', path: root, reason: 'overflow', isDir: true, time });
    for (const [root, before] of this.#snapshots) {
      void snapshotTree(root, this.#ignores.get(root)).then((after) => {
        if (this.#closed) return;
        this.#snapshots.set(root, after);
        for (const d of diffTrees(before, after)) this.change({ ...d, time: Date.now() });
      });
    }
  }

  /** Report an error for a root without ending it. */
  error(path: string, error: Error): void {
    this.change({ type: 'error', path, error, isDir: false, time: Date.now() });
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => this.#flush(), this.#debounceMs);
  }

  #flush(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#batcher.take();
    if (batch.length === 0) return;
    this.#track(batch);
    this.emit('events', batch);
    const waiter = this.#waiters.shift();
    if (waiter) waiter({ value: batch, done: false });
    else if (this.listenerCount('events') === 0 || this.#iterating) this.#queue.push(batch);
  }

  #iterating = false;

  /** Keep the autoRescan snapshots current with what was reported. */
  #track(batch: WatchEvent[]): void {
    if (this.#snapshots.size === 0) return;
    for (const ev of batch) {
      for (const [root, state] of this.#snapshots) {
        if (!isUnder(ev.path, root)) continue;
        if (ev.type === 'rename') {
          // The entries below a renamed directory moved with it, unchanged.
          for (const [p, st] of [...state]) {
            if (!isUnder(p, ev.oldPath)) continue;
            state.delete(p);
            state.set(ev.path + p.slice(ev.oldPath.length), st);
          }
        } else if (ev.type === 'delete') {
          for (const p of state.keys()) if (isUnder(p, ev.path)) state.delete(p);
        }
        if (ev.type === 'create' || ev.type === 'update' || ev.type === 'rename') {
          const st = stateOfPath(ev.path);
          if (st) state.set(ev.path, st);
        }
      }
    }
  }

  /** Async iteration over batches. Breaking out of the loop closes the subscription. */
  [Symbol.asyncIterator](): AsyncIterator<WatchEvent[]> {
    this.#iterating = true;
    return {
      next: () => {
        const batch = this.#queue.shift();
        if (batch) return Promise.resolve({ value: batch, done: false });
        if (this.#closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }

  /** Stop watching. Pending changes are delivered first. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    this.#backend?.close();
    for (const w of this.#waiters.splice(0)) w({ value: undefined, done: true });
    this.emit('close');
  }

  /** `await using sub = watch(…)`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
