/**
 * Decode fanotify read() batches into typed events. Pure: no I/O, no state.
 * @packageDocumentation
 */
import { EventBit, InfoType, METADATA_LEN, METADATA_VERSION, PERMISSION_BITS } from './constants.js';
import {
  DecodeError,
  type ByteRange,
  type DecodedEvent,
  type DirEntryRef,
} from './events.js';
import { FileId } from './fileid.js';
import { namesOf, type EventName } from './names.js';

const INFO_HEADER_LEN = 4;
/** header + fsid(8) + handle_bytes(4) + handle_type(4) */
const FID_FIXED_LEN = INFO_HEADER_LEN + 16;
const TWO_POW_32 = 2 ** 32;

/** Mutable form of the fields filled from info records while one event is decoded. */
interface Records {
  fid?: FileId;
  dfid?: FileId;
  entry?: DirEntryRef;
  from?: DirEntryRef;
  to?: DirEntryRef;
  pidfd?: number;
  mntId?: number;
  range?: ByteRange;
  error?: number;
  errorCount?: number;
}

function readU64(buf: Buffer, at: number): number {
  return buf.readUInt32LE(at) + buf.readUInt32LE(at + 4) * TWO_POW_32;
}

function decodeFid(buf: Buffer, at: number, len: number, withName: boolean): { id: FileId; name?: string } {
  if (len < FID_FIXED_LEN) throw new DecodeError(`file id record of ${len} bytes is shorter than ${FID_FIXED_LEN}`, at);
  const handleBytes = buf.readUInt32LE(at + 12);
  const handleType = buf.readInt32LE(at + 16);
  const handleEnd = at + FID_FIXED_LEN + handleBytes;
  if (handleBytes > len - FID_FIXED_LEN) {
    throw new DecodeError(`file handle of ${handleBytes} bytes overflows its ${len}-byte record`, at);
  }
  const id = new FileId(buf, at + INFO_HEADER_LEN, handleType, handleBytes);
  if (!withName) return { id };
  const end = at + len;
  const nul = buf.indexOf(0, handleEnd);
  if (nul < 0 || nul >= end) throw new DecodeError('entry name is not NUL-terminated inside its record', at);
  if (nul === handleEnd) throw new DecodeError('entry name is empty', at);
  return { id, name: buf.toString('utf8', handleEnd, nul) };
}

function decodeRecords(buf: Buffer, from: number, end: number): Records {
  const rec: Records = {};
  let at = from;
  while (at < end) {
    if (end - at < INFO_HEADER_LEN) throw new DecodeError(`${end - at} stray bytes after the last info record`, at);
    const type = buf[at]!;
    const len = buf.readUInt16LE(at + 2);
    if (len < INFO_HEADER_LEN) throw new DecodeError(`info record length ${len} is shorter than its header`, at);
    if (len > end - at) throw new DecodeError(`info record of ${len} bytes overflows its event by ${len - (end - at)}`, at);
    switch (type) {
      case InfoType.FID:
        rec.fid = decodeFid(buf, at, len, false).id;
        break;
      case InfoType.DFID:
        rec.dfid = decodeFid(buf, at, len, false).id;
        break;
      case InfoType.DFID_NAME:
      case InfoType.OLD_DFID_NAME:
      case InfoType.NEW_DFID_NAME: {
        const { id, name } = decodeFid(buf, at, len, true);
        const ref = { dir: id, name: name! };
        if (type === InfoType.DFID_NAME) rec.entry = ref;
        else if (type === InfoType.OLD_DFID_NAME) rec.from = ref;
        else rec.to = ref;
        break;
      }
      case InfoType.PIDFD:
        if (len < 8) throw new DecodeError(`pidfd record of ${len} bytes is shorter than 8`, at);
        rec.pidfd = buf.readInt32LE(at + 4);
        break;
      case InfoType.ERROR:
        if (len < 12) throw new DecodeError(`error record of ${len} bytes is shorter than 12`, at);
        rec.error = buf.readInt32LE(at + 4);
        rec.errorCount = buf.readUInt32LE(at + 8);
        break;
      case InfoType.RANGE:
        if (len < 24) throw new DecodeError(`range record of ${len} bytes is shorter than 24`, at);
        rec.range = { offset: readU64(buf, at + 8), count: readU64(buf, at + 16) };
        break;
      case InfoType.MNT:
        if (len < 12) throw new DecodeError(`mount record of ${len} bytes is shorter than 12`, at);
        rec.mntId = readU64(buf, at + 4);
        break;
      default:
        // A record type newer than this decoder: its length lets us step over it.
        break;
    }
    at += len;
  }
  return rec;
}

function eventType(mask: number, names: readonly EventName[]): DecodedEvent['type'] {
  if (mask & EventBit.Q_OVERFLOW) return 'overflow';
  if (mask & PERMISSION_BITS) {
    if (mask & EventBit.PRE_ACCESS) return 'preAccess';
    if (mask & EventBit.OPEN_EXEC_PERM) return 'openExecPerm';
    if (mask & EventBit.ACCESS_PERM) return 'accessPerm';
    return 'openPerm';
  }
  if (mask & EventBit.RENAME) return 'rename';
  if (mask & EventBit.FS_ERROR) return 'fsError';
  if (mask & EventBit.MNT_ATTACH) return 'mountAttach';
  if (mask & EventBit.MNT_DETACH) return 'mountDetach';
  return (names[0] as DecodedEvent['type'] | undefined) ?? 'unknown';
}

/**
 * Decode one event starting at `offset`.
 * @returns the event and the offset of the next one.
 * @throws DecodeError when the bytes are malformed.
 */
export function decodeEventAt(buf: Buffer, offset: number): { event: DecodedEvent; next: number } {
  const left = buf.length - offset;
  if (left < METADATA_LEN) throw new DecodeError(`${left} bytes left, an event needs at least ${METADATA_LEN}`, offset);
  const eventLen = buf.readUInt32LE(offset);
  const vers = buf[offset + 4]!;
  const metadataLen = buf.readUInt16LE(offset + 6);
  if (vers !== METADATA_VERSION) throw new DecodeError(`metadata version ${vers}, expected ${METADATA_VERSION}`, offset);
  if (eventLen < METADATA_LEN) throw new DecodeError(`event_len ${eventLen} is shorter than the metadata`, offset);
  if (eventLen > left) throw new DecodeError(`event_len ${eventLen} runs ${eventLen - left} bytes past the batch`, offset);
  if (metadataLen < METADATA_LEN || metadataLen > eventLen) {
    throw new DecodeError(`metadata_len ${metadataLen} is outside ${METADATA_LEN}..${eventLen}`, offset);
  }
  const mask = readU64(buf, offset + 8);
  const fd = buf.readInt32LE(offset + 16);
  const pid = buf.readInt32LE(offset + 20);
  const end = offset + eventLen;
  const rec = metadataLen < eventLen ? decodeRecords(buf, offset + metadataLen, end) : undefined;
  const names = namesOf(mask);
  const event = {
    type: eventType(mask, names),
    mask,
    names,
    pid,
    fd,
    isDir: (mask & EventBit.ONDIR) !== 0,
    ...rec,
  } as DecodedEvent;
  return { event, next: end };
}

/**
 * Decode a whole read() batch.
 * @throws DecodeError on the first malformed event; nothing after it is trusted.
 */
export function decodeBatch(buf: Buffer): DecodedEvent[] {
  const events: DecodedEvent[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const { event, next } = decodeEventAt(buf, offset);
    events.push(event);
    offset = next;
  }
  return events;
}
