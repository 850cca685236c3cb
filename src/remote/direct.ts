/**
 * Frames written to client sockets from a libuv threadpool thread. A feed batch goes to every
 * subscriber in one tick; the frames queued in that tick become one native job (one sendmsg per
 * socket), so the event loop reads the next events while the kernel copies and wakes the readers
 * (the writes were ~40% of the server's loop at 100 clients). One job runs at a time: jobs
 * running side by side on a 2-core machine measured worse than one writer thread.
 * @packageDocumentation
 */
import { constants } from 'node:os';
import { native } from '../native.js';

const { EAGAIN, ECANCELED } = constants.errno;

/** What happened to a frame: `rest` is what the socket did not take (empty: all of it). */
export type DirectResult = { ok: true; rest: Buffer[] } | { ok: false; errno: number };

interface Pending {
  readonly sock: DirectSocket;
  readonly parts: readonly Buffer[];
  readonly done: (r: DirectResult) => void;
}

let pending: Pending[] = [];
/** One job at a time: frames of the ticks meanwhile wait and go in the next one. */
let running = false;

function flush(): void {
  if (running || pending.length === 0) return;
  running = true;
  const jobs = pending;
  pending = [];
  const fds = Int32Array.from(jobs, (j) => j.sock.fd);
  const results = new Int32Array(jobs.length);
  native.sendFrames(
    fds,
    jobs.map((j) => j.parts),
    results,
    (ok) => {
      running = false;
      for (let i = 0; i < jobs.length; i++) {
        const { sock, parts, done } = jobs[i]!;
        sock.finished();
        const n = results[i]!;
        done(!ok ? { ok: false, errno: ECANCELED } : n < 0 && n !== -EAGAIN ? { ok: false, errno: -n } : { ok: true, rest: unwritten(parts, Math.max(0, n)) });
      }
      flush();
    },
  );
}

/** The parts of a frame after its first `written` bytes. */
function unwritten(parts: readonly Buffer[], written: number): Buffer[] {
  const rest: Buffer[] = [];
  for (const p of parts) {
    if (written >= p.length) written -= p.length;
    else {
      rest.push(written > 0 ? p.subarray(written) : p);
      written = 0;
    }
  }
  return rest;
}

/**
 * A stream socket's second fd (a dup, so the socket cannot close under a running job and its
 * number cannot be reused for another file meanwhile), written by native jobs.
 */
export class DirectSocket {
  #busy = false;
  #closed = false;

  /** @param fd - a dup of the socket's fd; this object closes it. */
  constructor(readonly fd: number) {}

  /** True while a frame is in a job: the next frames of this socket must wait for `done`. */
  get busy(): boolean {
    return this.#busy;
  }

  /**
   * Write one frame (all of it, part of it, or none: see {@link DirectResult}) in this tick's job.
   * Call only while not {@link DirectSocket.busy} and with nothing else pending on the socket.
   */
  write(parts: readonly Buffer[], done: (r: DirectResult) => void): void {
    if (this.#busy || this.#closed) throw new Error('direct socket busy or closed');
    this.#busy = true;
    if (pending.length === 0 && !running) process.nextTick(flush);
    pending.push({ sock: this, parts, done });
  }

  /** @internal The job holding this socket's frame is over. */
  finished(): void {
    this.#busy = false;
    if (this.#closed) native.close(this.fd);
  }

  /** Close the fd (after the running job, if any). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#busy) native.close(this.fd);
  }
}
