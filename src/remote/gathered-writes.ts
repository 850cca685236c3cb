/**
 * Frames for idle stream sockets, gathered over one tick and sent with one system call.
 *
 * A feed batch goes to every subscriber in one tick. Written one `writev` per socket, each write
 * wakes that socket's reader, and on the return to user mode the woken reader preempts the server
 * (≈ 95% of the server's preemptions in the fan-out bench, ~10 per batch of 100 sockets), so a
 * batch took 2–15 ms to hand over while the clients ran in between. Gathered, the sends of the
 * tick go to the kernel in one call (native `SendRing`, an io_uring), the wake-ups happen inside
 * it, and the server can be preempted at most once, after its last socket.
 *
 * Only a socket with nothing queued in Node gathers (its bytes would otherwise overtake); what the
 * kernel does not take goes through the socket's own queue, in order, before anything written
 * after it.
 * @packageDocumentation
 */
import type { Socket } from 'node:net';
import { constants } from 'node:os';
import { getSystemErrorName } from 'node:util';
import { native, type SendRing } from '../native.js';

const { EAGAIN } = constants.errno;

interface Gathered {
  readonly fd: number;
  readonly parts: Buffer[];
  bytes: number;
  /** Called once the frames were sent (or handed to the socket's queue). */
  readonly sent: () => void;
}

const pending = new Map<Socket, Gathered>();
let ring: SendRing | undefined;

/** The socket's fd, or -1 when it has none (closed, not a libuv stream). */
function fdOf(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** Bytes gathered for `socket` and not sent yet. */
export function gatheredBytes(socket: Socket): number {
  return pending.get(socket)?.bytes ?? 0;
}

/**
 * Take `parts` (one frame) for `socket` if it can gather: it has frames gathered already, or
 * nothing queued in Node. False: write them yourself. `sent` runs after the tick's send.
 */
export function gather(socket: Socket, parts: readonly Buffer[], sent: () => void): boolean {
  let g = pending.get(socket);
  if (!g) {
    const fd = fdOf(socket);
    if (fd < 0 || socket.writableLength > 0 || socket.destroyed || socket.connecting || !socket.writable) return false;
    if (pending.size === 0) queueMicrotask(flush);
    pending.set(socket, (g = { fd, parts: [], bytes: 0, sent }));
  }
  for (const p of parts) {
    g.parts.push(p);
    g.bytes += p.length;
  }
  return true;
}

/** Stop gathering for `socket`; its gathered frames, if any, are returned unsent. */
export function release(socket: Socket): Buffer[] | undefined {
  const g = pending.get(socket);
  pending.delete(socket);
  return g?.parts;
}

/** The parts after their first `written` bytes. */
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

/** Write parts through the socket's own queue (one writev). */
export function writeThrough(socket: Socket, parts: readonly Buffer[]): void {
  if (parts.length === 1) {
    socket.write(parts[0]!);
    return;
  }
  socket.cork();
  for (const p of parts) socket.write(p);
  socket.uncork();
}

function flush(): void {
  const items = [...pending];
  pending.clear();
  // A socket destroyed since (its fd closed, the number perhaps reused) is not written.
  const live = items.filter(([s, g]) => !s.destroyed && fdOf(s) === g.fd);
  const results = new Int32Array(live.length);
  try {
    ring ??= native.createSendRing();
    ring.send(
      Int32Array.from(live, ([, g]) => g.fd),
      Int32Array.from(live, ([, g]) => g.parts.length),
      live.flatMap(([, g]) => g.parts),
      results,
    );
  } catch {
    // No ring (out of memory): nothing was sent, every frame goes through its socket's queue.
    results.fill(0);
  }
  for (let i = 0; i < live.length; i++) {
    const [socket, g] = live[i]!;
    const n = results[i]!;
    if (n === g.bytes) {
      // All of it.
    } else if (n >= 0 || n === -EAGAIN) {
      writeThrough(socket, unwritten(g.parts, Math.max(0, n)));
    } else {
      // Broken (EPIPE, ECONNRESET…) or, if the ring failed mid-call, in an unknown state.
      const code = getSystemErrorName(n);
      socket.destroy(Object.assign(new Error(`sendmsg ${code}`), { code, errno: n, syscall: 'sendmsg' }));
    }
  }
  for (const [, g] of items) g.sent();
}
