/**
 * Shared by the fan-out bench and its client processes.
 * @module
 */
import { connect as netConnect, type Socket } from 'node:net';
import { encodeFrame } from '../src/remote/protocol.js';

/**
 * A raw protocol connection to `fan serve` on `sock`, subscribed to `root` (hello and subscribe
 * are sent on connect; nothing it receives is read here). Resolves once connected.
 */
export function rawSubscribe(sock: string, root: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(sock);
    s.once('error', reject);
    s.once('connect', () => {
      s.write(encodeFrame({ type: 'hello', versions: [1] }));
      s.write(encodeFrame({ type: 'subscribe', sub: 's', root }));
      resolve(s);
    });
  });
}
