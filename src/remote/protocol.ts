/**
 * The remote protocol, version 1 (docs/protocol.md): length-prefixed JSON frames, the messages
 * both sides exchange, and an incremental decoder that rejects oversize, empty and garbage frames
 * cheaply. Pure: no I/O, no import of the watch service.
 * @packageDocumentation
 */
import { z } from 'zod';

/** The protocol versions this implementation speaks, newest first. */
export const PROTOCOL_VERSIONS = [1] as const;

/** Largest frame payload accepted by default (1 MiB). A longer declared length ends the connection. */
export const DEFAULT_MAX_FRAME = 1 << 20;

/** Entries per `readdir` answer unless the client asks for another `limit`. */
export const READDIR_PAGE = 1000;

/** Bytes of the big-endian length that starts every frame. */
const HEADER = 4;

/** An object as the server names it: an opaque id plus the generation of that id. */
export interface ObjectRef {
  readonly id: string;
  readonly gen: number;
}

/** The kinds of change an event record carries. */
export const EVENT_KINDS = ['create', 'update', 'delete', 'rename', 'attrib'] as const;
/** One kind of change. */
export type EventKind = (typeof EVENT_KINDS)[number];

/**
 * One change. `path` is relative to the subscribed root ('' is the root itself). A rename is one
 * record: `oldParent`/`oldName` and `newParent`/`newName` (with `parent`/`name` equal to the new
 * side and `oldPath` the old relative path).
 */
export interface EventRecord {
  readonly kind: EventKind;
  readonly object: ObjectRef;
  readonly parent: ObjectRef;
  readonly name: string;
  readonly path: string;
  readonly isDir: boolean;
  readonly oldParent?: ObjectRef;
  readonly oldName?: string;
  readonly newParent?: ObjectRef;
  readonly newName?: string;
  readonly oldPath?: string;
}

/** What `stat` returns about an object. */
export interface StatInfo {
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  readonly size: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
}

/** One directory entry as `readdir` and `lookup` return it. */
export interface DirEntry {
  readonly name: string;
  readonly object: ObjectRef;
  readonly stat: StatInfo;
}

/** Why a subscription must drop everything it cached. */
export type InvalidateReason =
  /** The client's queue overflowed (it read too slowly), or the kernel queue overflowed. */
  | 'overflow'
  /** The resume cursor cannot be honoured: see `detail` (pruned, other-instance, malformed…). */
  | 'resume'
  /** The root was moved, deleted or unmounted: the subscription ends after this message. */
  | 'root-gone';

/** Error codes of `error` messages. */
export const ERROR_CODES = [
  'bad-frame',
  'frame-too-large',
  'bad-message',
  'unsupported-version',
  'hello-required',
  'auth-required',
  'auth-failed',
  'forbidden',
  'no-such-root',
  'unknown-subscription',
  'duplicate-subscription',
  'unknown-object',
  'stale-object',
  'out-of-root',
  'not-a-directory',
  'io-error',
  'busy',
] as const;
/** One error code. */
export type ErrorCode = (typeof ERROR_CODES)[number];

const idPattern = /^[0-9a-f]{24}$/;
const objectRef = z.strictObject({ id: z.string().max(64), gen: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER) });
const req = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const subId = z.string().min(1).max(64);

/** zod schemas of every message a client may send. Unknown fields are rejected. */
export const clientMessage = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('hello'),
    req: req.optional(),
    versions: z.array(z.number().int().min(1).max(1000)).min(1).max(16),
    client: z.string().max(200).optional(),
    capabilities: z.array(z.string().max(64)).max(32).optional(),
  }),
  z.strictObject({ type: z.literal('auth'), req: req.optional(), token: z.string().min(1).max(4096) }),
  z.strictObject({
    type: z.literal('subscribe'),
    req: req.optional(),
    sub: subId,
    root: z.string().min(1).max(4096),
    kinds: z.array(z.enum(EVENT_KINDS)).min(1).max(EVENT_KINDS.length).optional(),
    ignore: z.array(z.string().min(1).max(1024)).max(256).optional(),
    cursor: z.string().max(256).optional(),
  }),
  z.strictObject({ type: z.literal('unsubscribe'), req: req.optional(), sub: subId }),
  z.strictObject({ type: z.literal('stat'), req, sub: subId, object: objectRef }),
  z.strictObject({ type: z.literal('lookup'), req, sub: subId, parent: objectRef, name: z.string().min(1).max(255) }),
  z.strictObject({
    type: z.literal('readdir'),
    req,
    sub: subId,
    object: objectRef,
    /** Index of the first entry (names in byte order) to return. */
    offset: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    /** Entries per answer, default {@link READDIR_PAGE}. */
    limit: z.number().int().min(1).max(5000).optional(),
  }),
  z.strictObject({ type: z.literal('ping'), req: req.optional() }),
  z.strictObject({ type: z.literal('bye') }),
]);
/** A validated client message. */
export type ClientMessage = z.infer<typeof clientMessage>;

/** Messages the server sends. */
export type ServerMessage =
  | { type: 'hello'; req?: number; version: number; server: string; capabilities: string[]; auth: 'peer' | 'token' | 'none' }
  | {
      type: 'ack';
      req?: number;
      sub?: string;
      root?: ObjectRef;
      cursor?: string;
      stat?: StatInfo;
      entry?: DirEntry;
      entries?: DirEntry[];
      /** readdir: the offset of the next page, when there is one. */
      next?: number;
    }
  | { type: 'events'; sub: string; seq: number; events: EventRecord[]; cursor?: string }
  | { type: 'invalidate'; sub: string; seq: number; reason: InvalidateReason; detail?: string; cursor?: string }
  | { type: 'error'; req?: number; sub?: string; code: ErrorCode; message: string }
  | { type: 'pong'; req?: number }
  | { type: 'bye'; reason: string };

/** True when `s` has the shape of a server-issued id (cheap pre-check before any table lookup). */
export function isWellFormedId(s: string): boolean {
  return idPattern.test(s);
}

/** Encode one message as a frame: 4-byte big-endian payload length + UTF-8 JSON. */
export function encodeFrame(message: unknown): Buffer {
  return frameOf(JSON.stringify(message));
}

/** Frame an already serialised JSON text. */
export function frameOf(json: string): Buffer {
  const len = Buffer.byteLength(json);
  const buf = Buffer.allocUnsafe(HEADER + len);
  buf.writeUInt32BE(len, 0);
  buf.write(json, HEADER, 'utf8');
  return buf;
}

/** What the decoder makes of the bytes it was given. */
export type Decoded =
  | { readonly ok: true; readonly value: unknown }
  | {
      readonly ok: false;
      readonly code: 'bad-frame' | 'frame-too-large';
      readonly message: string;
      /** The stream cannot be resynchronised: the connection must end. */
      readonly fatal: boolean;
    };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Splits a byte stream into frames and parses each payload as JSON. Oversize lengths are detected
 * from the 4 header bytes, before any payload is buffered; a frame's bytes are copied at most
 * once. A frame that is not UTF-8 JSON is reported and skipped: the length keeps the stream in
 * sync. After a fatal result the decoder ignores further input.
 */
export class FrameDecoder {
  readonly #max: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #need = -1;
  #dead = false;

  constructor(maxFrame = DEFAULT_MAX_FRAME) {
    this.#max = maxFrame;
  }

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Feed bytes; returns every complete frame (or error) they finish, in order. */
  push(chunk: Buffer): Decoded[] {
    if (this.#dead || chunk.length === 0) return [];
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    const out: Decoded[] = [];
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < HEADER) break;
        const len = this.#take(HEADER).readUInt32BE(0);
        if (len > this.#max) {
          this.#dead = true;
          this.#chunks = [];
          this.#buffered = 0;
          out.push({ ok: false, code: 'frame-too-large', message: `frame of ${len} bytes exceeds the limit of ${this.#max}`, fatal: true });
          break;
        }
        if (len === 0) {
          out.push({ ok: false, code: 'bad-frame', message: 'empty frame', fatal: false });
          continue;
        }
        this.#need = len;
      }
      if (this.#buffered < this.#need) break;
      const payload = this.#take(this.#need);
      this.#need = -1;
      out.push(parsePayload(payload));
    }
    return out;
  }

  /** The stream ended: an incomplete frame is an error. */
  end(): Decoded[] {
    if (this.#dead || (this.#buffered === 0 && this.#need < 0)) return [];
    const where = this.#need < 0 ? `${this.#buffered} of ${HEADER} header bytes` : `${this.#buffered} of ${this.#need} payload bytes`;
    this.#dead = true;
    this.#chunks = [];
    this.#buffered = 0;
    return [{ ok: false, code: 'bad-frame', message: `stream ended inside a frame (${where})`, fatal: true }];
  }

  /** Remove and return the first n buffered bytes (n ≤ buffered). */
  #take(n: number): Buffer {
    const first = this.#chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.#chunks[0]!;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(k);
      }
    }
    this.#buffered -= n;
    return out;
  }
}

function parsePayload(payload: Buffer): Decoded {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return { ok: false, code: 'bad-frame', message: 'frame payload is not valid UTF-8', fatal: false };
  }
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false, code: 'bad-frame', message: 'frame payload is not JSON', fatal: false };
  }
}

/** Validate a decoded value as a client message, or say what is wrong with it. */
export function parseClientMessage(value: unknown): { ok: true; message: ClientMessage } | { ok: false; message: string } {
  const r = clientMessage.safeParse(value);
  if (r.success) return { ok: true, message: r.data };
  const issue = r.error.issues[0];
  const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'message';
  return { ok: false, message: `${where}: ${issue?.message ?? 'invalid'}` };
}

/** Choose the newest version both sides speak, or undefined. */
export function negotiate(offered: readonly number[]): number | undefined {
  return PROTOCOL_VERSIONS.find((v) => offered.includes(v));
}
