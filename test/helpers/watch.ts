/**
 * Collect watch events so tests can wait for exact sequences.
 */
import type { Subscription, WatchEvent } from '../../src/watch/index.js';
import { Waker } from './waker.js';

/** Buffers every batch a subscription delivers. */
export class WatchLog {
  readonly events: WatchEvent[] = [];
  readonly batches: WatchEvent[][] = [];
  readonly #waker = new Waker();

  constructor(readonly sub: Subscription) {
    sub.on('events', (batch) => {
      this.batches.push(batch);
      this.events.push(...batch);
      this.#waker.wake();
    });
  }

  /** Wait until `pred` holds for the collected events (or `ms` pass), then return them all. */
  async until(pred: (events: WatchEvent[]) => boolean, ms = 5000): Promise<WatchEvent[]> {
    await this.#waker.until(() => pred(this.events), ms);
    return this.events;
  }

  /** Wait for `n` events, then for a quiet `quietMs`, and take everything. */
  async take(n: number, quietMs = 150, ms = 5000): Promise<WatchEvent[]> {
    await this.until((e) => e.length >= n, ms);
    let seen = -1;
    while (seen !== this.events.length) {
      seen = this.events.length;
      await new Promise((r) => setTimeout(r, quietMs));
    }
    this.batches.length = 0;
    return this.events.splice(0);
  }
}

/** "type path" (or "rename old->new"), relative to `root`, "/" marking directories. */
export function short(ev: WatchEvent, root: string): string {
  const rel = (p: string): string => (p === root ? '.' : p.startsWith(`${root}/`) ? p.slice(root.length + 1) : p);
  const dir = ev.isDir ? '/' : '';
  if (ev.type === 'rename') return `rename ${rel(ev.oldPath)}->${rel(ev.path)}${dir}`;
  if (ev.type === 'rescan') return `rescan ${rel(ev.path)} ${ev.reason}`;
  return `${ev.type} ${rel(ev.path)}${dir}`;
}
