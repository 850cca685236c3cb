/**
 * Encode what we write to the kernel (responses), and event batches for fixtures, fuzzing
 * and benchmarks. Pure: no I/O.
 * @packageDocumentation
 */
import {
  DENY_ERRNOS,
  ERRNO_MASK,
  ERRNO_SHIFT,
  InfoType,
  METADATA_LEN,
  METADATA_VERSION,
  RESPONSE_INFO_AUDIT_RULE,
  Response,
  type DenyErrno,
} from './constants.js';

/** A verdict for a permission event. */
export type Verdict =
  | { readonly allow: true; readonly audit?: boolean }
  | { readonly allow: false; readonly errno?: DenyErrno; readonly audit?: boolean };

/** Optional audit rule information sent with `FAN_INFO`. */
export interface AuditRuleInfo {
  readonly rule: number;
  readonly subjectTrust?: number;
  readonly objectTrust?: number;
}

/**
 * The `response` word of `struct fanotify_response` for a verdict.
 * @throws RangeError when the errno is not one the kernel accepts for FAN_DENY_ERRNO.
 */
export function responseWord(verdict: Verdict): number {
  let word: number;
  if (verdict.allow) {
    word = Response.ALLOW;
  } else if (verdict.errno === undefined) {
    word = Response.DENY;
  } else {
    // Own properties only: a name such as "toString" must not reach Object.prototype.
    const errno = Object.hasOwn(DENY_ERRNOS, verdict.errno) ? DENY_ERRNOS[verdict.errno] : undefined;
    if (errno === undefined) {
      throw new RangeError(
        `cannot deny with ${String(verdict.errno)}: the kernel accepts only ${Object.keys(DENY_ERRNOS).join(', ')}`,
      );
    }
    word = Response.DENY | ((errno & ERRNO_MASK) << ERRNO_SHIFT);
  }
  if (verdict.audit) word |= Response.AUDIT;
  return word >>> 0;
}

/** Encode `struct fanotify_response` (plus an audit rule record when given). */
export function encodeResponse(fd: number, verdict: Verdict, info?: AuditRuleInfo): Buffer {
  const word = responseWord(verdict);
  if (!info) {
    const buf = Buffer.allocUnsafe(8);
    buf.writeInt32LE(fd, 0);
    buf.writeUInt32LE(word, 4);
    return buf;
  }
  const buf = Buffer.alloc(8 + 16);
  buf.writeInt32LE(fd, 0);
  buf.writeUInt32LE((word | Response.INFO | Response.AUDIT) >>> 0, 4);
  buf[8] = RESPONSE_INFO_AUDIT_RULE;
  buf.writeUInt16LE(16, 10);
  buf.writeUInt32LE(info.rule >>> 0, 12);
  buf.writeUInt32LE((info.subjectTrust ?? 0) >>> 0, 16);
  buf.writeUInt32LE((info.objectTrust ?? 0) >>> 0, 20);
  return buf;
}

/** A file id for {@link encodeEvent}. */
export interface FileIdSpec {
  /** 8 bytes. */
  readonly fsid: Buffer;
  readonly handleType: number;
  readonly handle: Buffer;
}

/** An info record for {@link encodeEvent}. */
export type RecordSpec =
  | { readonly type: 'fid' | 'dfid'; readonly id: FileIdSpec }
  | { readonly type: 'dfidName' | 'oldDfidName' | 'newDfidName'; readonly id: FileIdSpec; readonly name: string }
  | { readonly type: 'pidfd'; readonly pidfd: number }
  | { readonly type: 'error'; readonly error: number; readonly count: number }
  | { readonly type: 'range'; readonly offset: number; readonly count: number }
  | { readonly type: 'mnt'; readonly mntId: number }
  | { readonly type: 'raw'; readonly infoType: number; readonly body: Buffer };

/** One event for {@link encodeEvent}. */
export interface EventSpec {
  readonly mask: number;
  readonly fd?: number;
  readonly pid?: number;
  readonly records?: readonly RecordSpec[];
}

const NAMED_TYPES = {
  dfidName: InfoType.DFID_NAME,
  oldDfidName: InfoType.OLD_DFID_NAME,
  newDfidName: InfoType.NEW_DFID_NAME,
} as const;

function writeU64(buf: Buffer, value: number, at: number): void {
  buf.writeUInt32LE(value % 2 ** 32, at);
  buf.writeUInt32LE(Math.floor(value / 2 ** 32), at + 4);
}

function record(infoType: number, body: Buffer): Buffer {
  // The kernel pads every record to a multiple of 4 bytes.
  const len = (4 + body.length + 3) & ~3;
  const buf = Buffer.alloc(len);
  buf[0] = infoType;
  buf.writeUInt16LE(len, 2);
  body.copy(buf, 4);
  return buf;
}

function fidBody(id: FileIdSpec, name?: string): Buffer {
  const nameBytes = name === undefined ? Buffer.alloc(0) : Buffer.from(`${name}\0`);
  const body = Buffer.alloc(16 + id.handle.length + nameBytes.length);
  id.fsid.copy(body, 0, 0, 8);
  body.writeUInt32LE(id.handle.length, 8);
  body.writeInt32LE(id.handleType, 12);
  id.handle.copy(body, 16);
  nameBytes.copy(body, 16 + id.handle.length);
  return body;
}

function encodeRecord(spec: RecordSpec): Buffer {
  switch (spec.type) {
    case 'fid':
      return record(InfoType.FID, fidBody(spec.id));
    case 'dfid':
      return record(InfoType.DFID, fidBody(spec.id));
    case 'dfidName':
    case 'oldDfidName':
    case 'newDfidName':
      return record(NAMED_TYPES[spec.type], fidBody(spec.id, spec.name));
    case 'pidfd': {
      const body = Buffer.alloc(4);
      body.writeInt32LE(spec.pidfd, 0);
      return record(InfoType.PIDFD, body);
    }
    case 'error': {
      const body = Buffer.alloc(8);
      body.writeInt32LE(spec.error, 0);
      body.writeUInt32LE(spec.count, 4);
      return record(InfoType.ERROR, body);
    }
    case 'range': {
      const body = Buffer.alloc(20);
      writeU64(body, spec.offset, 4);
      writeU64(body, spec.count, 12);
      return record(InfoType.RANGE, body);
    }
    case 'mnt': {
      // 4 bytes of padding, then the u64 at byte 8 of the record (C alignment of __u64).
      const body = Buffer.alloc(12);
      writeU64(body, spec.mntId, 4);
      return record(InfoType.MNT, body);
    }
    case 'raw':
      return record(spec.infoType, spec.body);
  }
}

/** Encode one event exactly as the kernel lays it out in a read() buffer. */
export function encodeEvent(spec: EventSpec): Buffer {
  const records = (spec.records ?? []).map(encodeRecord);
  const eventLen = METADATA_LEN + records.reduce((n, r) => n + r.length, 0);
  const meta = Buffer.alloc(METADATA_LEN);
  meta.writeUInt32LE(eventLen, 0);
  meta[4] = METADATA_VERSION;
  meta.writeUInt16LE(METADATA_LEN, 6);
  writeU64(meta, spec.mask, 8);
  meta.writeInt32LE(spec.fd ?? -1, 16);
  meta.writeInt32LE(spec.pid ?? 0, 20);
  return Buffer.concat([meta, ...records], eventLen);
}

/** Encode several events into one batch. */
export function encodeBatch(specs: readonly EventSpec[]): Buffer {
  return Buffer.concat(specs.map(encodeEvent));
}
