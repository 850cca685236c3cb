/**
 * remote: serve file events to unprivileged local clients and remote machines, with server-issued
 * object ids, bounded per-client queues, resume by journal cursor, and a NATS JetStream bridge.
 * @packageDocumentation
 */
export { serve, type ServeOptions, type RemoteServer } from './server.js';
export { connect, RemoteSubscription, RemoteError, DEFAULT_SOCKET, type ConnectOptions, type RemoteUpdate, type RemoteSubscriptionEvents } from './client.js';
export { StatCache, type CachedEntry } from './cache-client.js';
export { publishToNats, consumeFromNats, subjectFor, DEFAULT_STREAM, type PublishOptions, type ConsumeOptions, type NatsAuthOptions, type NatsEnvelope } from './nats.js';
export {
  PROTOCOL_VERSIONS,
  DEFAULT_MAX_FRAME,
  EVENT_KINDS,
  ERROR_CODES,
  FrameDecoder,
  encodeFrame,
  parseClientMessage,
  type ObjectRef,
  type EventKind,
  type EventRecord,
  type StatInfo,
  type DirEntry,
  type InvalidateReason,
  type ErrorCode,
  type ClientMessage,
  type ServerMessage,
  type Decoded,
} from './protocol.js';
