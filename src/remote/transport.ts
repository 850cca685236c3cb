/**
 * Byte transports under the frame protocol: a unix/TCP stream socket or a WebSocket carrying
 * binary messages. Both sides use them; they know nothing of messages.
 * @packageDocumentation
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { gather, gatheredBytes, release, writeThrough } from './gathered-writes.js';

/** A connected byte pipe with backpressure. */
export interface Transport {
  /** Hand bytes (one frame, possibly in parts) to the OS. Call only while not {@link Transport.congested}, except for small control frames. */
  send(parts: readonly Buffer[]): void;
  /** True while the OS side is full: hold further frames until `drain`. */
  readonly congested: boolean;
  /** Bytes handed over but not yet written out. */
  readonly pendingBytes: number;
  onData(fn: (bytes: Buffer) => void): void;
  /** Stop reading (the peer's writes then back up into its own queue). */
  pause(): void;
  resume(): void;
  onDrain(fn: () => void): void;
  onClose(fn: (error?: Error) => void): void;
  /** Finish sending what was handed over, then close. */
  end(): void;
  /** Close at once. */
  destroy(): void;
}

/**
 * {@link Transport.onClose} for a socket or WebSocket: each listener is called once at close, with
 * the last error seen before it, if any.
 */
function closeListeners(conn: Socket | WebSocket): (fn: (error?: Error) => void) => void {
  let fns: ((e?: Error) => void)[] = [];
  let failure: Error | undefined;
  conn.on('error', (e: Error) => (failure = e));
  conn.on('close', () => {
    for (const fn of fns) fn(failure);
    fns = [];
  });
  return (fn) => void fns.push(fn);
}

/** Bytes a WebSocket may hold unsent before it counts as congested. */
const WS_HIGH_WATER = 64 * 1024;

/**
 * A stream socket (unix or TCP) as a transport. With `gatherWrites` (a server's sockets), frames
 * sent while the socket has nothing queued are gathered with other sockets' frames of the same
 * tick and sent in one system call (see gathered-writes.ts).
 */
export function socketTransport(socket: Socket, gatherWrites = false): Transport {
  const onClose = closeListeners(socket);
  const drainFns: (() => void)[] = [];
  socket.on('drain', () => {
    for (const fn of drainFns) fn();
  });
  /** Gathering counts against the socket's high-water mark like its own queue. */
  const congested = (): boolean => socket.writableNeedDrain || gatheredBytes(socket) >= socket.writableHighWaterMark;
  /** After the tick's send: a sender held back by gathered bytes may go on. */
  const sent = (): void => {
    if (!socket.writableNeedDrain && !socket.destroyed) for (const fn of drainFns) fn();
  };
  return {
    send: (parts) => {
      if (!gatherWrites || !gather(socket, parts, sent)) writeThrough(socket, parts);
    },
    get congested() {
      return congested();
    },
    get pendingBytes() {
      return socket.writableLength + gatheredBytes(socket);
    },
    onData: (fn) => void socket.on('data', fn),
    pause: () => void socket.pause(),
    resume: () => void socket.resume(),
    onDrain: (fn) => void drainFns.push(fn),
    onClose,
    end: () => {
      // Frames gathered for this tick go first.
      const parts = release(socket);
      if (parts) writeThrough(socket, parts);
      socket.end();
    },
    destroy: () => {
      release(socket);
      socket.destroy();
    },
  };
}

/** A WebSocket (binary messages, each any slice of the frame stream) as a transport. */
export function wsTransport(ws: WebSocket): Transport {
  let pending = 0;
  const drainFns: (() => void)[] = [];
  const onClose = closeListeners(ws);
  return {
    send: (parts) => {
      const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      pending += bytes.length;
      ws.send(bytes, { binary: true }, () => {
        const was = pending >= WS_HIGH_WATER;
        pending -= bytes.length;
        if (was && pending < WS_HIGH_WATER) for (const fn of drainFns) fn();
      });
    },
    get congested() {
      return pending >= WS_HIGH_WATER;
    },
    get pendingBytes() {
      return pending;
    },
    onData: (fn) =>
      void ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
        if (Array.isArray(data)) fn(Buffer.concat(data));
        else fn(Buffer.isBuffer(data) ? data : Buffer.from(data));
      }),
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    onDrain: (fn) => void drainFns.push(fn),
    onClose,
    end: () => ws.close(1000),
    destroy: () => ws.terminate(),
  };
}
