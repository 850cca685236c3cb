/**
 * Writing permission responses to a group fd: one `write(2)` for one response, one `writev(2)`
 * for several.
 *
 * What Linux 6.18 does with several responses:
 * - A `write(2)` of several takes only the first: it returns 8 and leaves the others unread
 *   (their processes wait on).
 * - A `writev(2)` takes them all, one per iovec (fanotify has no `write_iter`, so the kernel calls
 *   its write once per iovec). It stops at the first response it refuses (ENOENT: that event is
 *   not pending, e.g. answered already) and returns the bytes of the responses before it, or the
 *   error when the refused one comes first. The responses after it are not read.
 *
 * So a refused response costs one more write, which reports its error, and the rest are written
 * again from the one after it: no answer is lost to another's failure.
 * @module
 */
import { writeSync, writevSync } from 'node:fs';

/** Counts of what a {@link ResponseWriter} wrote. */
export interface ResponseStats {
  /** Responses handed to the kernel (refused ones included). */
  readonly responses: number;
  /** write(2) and writev(2) calls made for them. */
  readonly writes: number;
}

/** Queues responses for one group fd and writes them together. */
export class ResponseWriter {
  readonly #fd: number;
  readonly #onRefused: (err: unknown, eventFd: number) => void;
  /** The responses to write, in order. */
  #queued: Buffer[] = [];
  /** 8-byte buffers for plain responses, reused from one flush to the next. */
  readonly #slots: Buffer[] = [];
  #slotsUsed = 0;
  #responses = 0;
  #writes = 0;

  /**
   * @param fd - the group fd
   * @param onRefused - called for each response the kernel refused, with the error and the event
   * fd the response named
   */
  constructor(fd: number, onRefused: (err: unknown, eventFd: number) => void) {
    this.#fd = fd;
    this.#onRefused = onRefused;
  }

  /** Responses queued and not yet written. */
  get queued(): number {
    return this.#queued.length;
  }

  /** Responses handed to the kernel so far: {@link stats}' count, without an object per call. */
  get total(): number {
    return this.#responses;
  }

  get stats(): ResponseStats {
    return { responses: this.#responses, writes: this.#writes };
  }

  /** Queue a plain response: the event fd and the response word. */
  add(eventFd: number, word: number): void {
    let slot = this.#slots[this.#slotsUsed];
    if (slot === undefined) {
      slot = Buffer.allocUnsafe(8);
      this.#slots.push(slot);
    }
    this.#slotsUsed++;
    slot.writeInt32LE(eventFd, 0);
    slot.writeUInt32LE(word, 4);
    this.#queued.push(slot);
  }

  /** Queue a response already encoded (with its info records), which starts with the event fd. */
  addEncoded(response: Buffer): void {
    this.#queued.push(response);
  }

  /** Write every queued response; refused ones are reported, and never stop the others. */
  flush(): void {
    const q = this.#queued;
    const n = q.length;
    if (n === 0) return;
    this.#queued = [];
    this.#slotsUsed = 0;
    this.#responses += n;
    let i = 0;
    while (i < n) {
      let written: number;
      this.#writes++;
      try {
        written = n - i === 1 ? writeSync(this.#fd, q[i]!) : writevSync(this.#fd, i === 0 ? q : q.slice(i));
      } catch (err) {
        // The first response of this write was refused, and none after it was read.
        this.#onRefused(err, q[i]!.readInt32LE(0));
        i++;
        continue;
      }
      if (written === 0) {
        // Never seen (the kernel takes or refuses each response); counted as refused, not retried forever.
        this.#onRefused(new Error(`write of a fanotify response returned 0`), q[i]!.readInt32LE(0));
        i++;
        continue;
      }
      // Skip the responses taken; a short count stops at a refused one (or at the iovec limit),
      // which the next write starts with.
      while (i < n && written >= q[i]!.length) written -= q[i++]!.length;
    }
  }
}
