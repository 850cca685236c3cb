/**
 * Decode fanotify read() batches into typed events. Pure: no I/O, no state that changes a
 * result (only a cache of mask → names/type).
 *
 * This is the hottest code of every service (one call per kernel event), so it reads bytes
 * by index instead of through `Buffer#readUInt32LE` (every offset is bounds-checked here
 * first), writes records straight onto the event object, and caches the names of a mask.
 * @packageDocumentation
 */
import { EventBit, InfoType, METADATA_LEN, METADATA_VERSION, PERMISSION_BITS } from './constants.js';
import { DecodeError, type DecodedEvent, type DirEntryRef } from './events.js';
import { FileId } from './fileid.js';
import { namesOf, type EventName } from './names.js';

const INFO_HEADER_LEN = 4;
/** header + fsid(8) + handle_bytes(4) + handle_type(4) */
const FID_FIXED_LEN = INFO_HEADER_LEN + 16;
const TWO_POW_32 = 2 ** 32;

/** The event object while its records are written onto it. */
type Building = {
  -readonly [K in keyof DecodedEvent | 'from' | 'to' | 'range' | 'error' | 'errorCount']?: unknown;
};

/** u16 LE at `at`; the caller has checked that the bytes exist. */
function u16(buf: Buffer, at: number): number {
  return buf[at]! | (buf[at + 1]! << 8);
}

/** s32 LE at `at`; the caller has checked that the bytes exist. */
function s32(buf: Buffer, at: number): number {
  return buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24);
}

/** u32 LE at `at`; the caller has checked that the bytes exist. */
function u32(buf: Buffer, at: number): number {
  return s32(buf, at) >>> 0;
}

/** u64 LE at `at` as a number (exact below 2^53). */
function u64(buf: Buffer, at: number): number {
  const hi = u32(buf, at + 4);
  const lo = u32(buf, at);
  return hi === 0 ? lo : lo + hi * TWO_POW_32;
}

/** The id of a FID-type record at `at` of `len` bytes (already checked to fit its event). */
function fileIdAt(buf: Buffer, at: number, len: number): FileId {
  if (len < FID_FIXED_LEN) throw new DecodeError(`file id record of ${len} bytes is shorter than ${FID_FIXED_LEN}`, at);
  const handleBytes = u32(buf, at + 12);
  if (handleBytes > len - FID_FIXED_LEN) {
    throw new DecodeError(`file handle of ${handleBytes} bytes overflows its ${len}-byte record`, at);
  }
  return new FileId(buf, at + INFO_HEADER_LEN, s32(buf, at + 16), handleBytes);
}

/** The entry of a DFID_NAME-type record: its directory id and its NUL-terminated name. */
function entryAt(buf: Buffer, at: number, len: number): DirEntryRef {
  const dir = fileIdAt(buf, at, len);
  const from = at + FID_FIXED_LEN + dir.handleLength;
  const end = at + len;
  let nul = from;
  while (nul < end && buf[nul] !== 0) nul++;
  if (nul === end) throw new DecodeError('entry name is not NUL-terminated inside its record', at);
  if (nul === from) throw new DecodeError('entry name is empty', at);
  return { dir, name: buf.toString('utf8', from, nul) };
}

/** Walk the info records in `from..end` and set what they carry on `ev`. */
function decodeRecords(buf: Buffer, from: number, end: number, ev: Building): void {
  let at = from;
  while (at < end) {
    if (end - at < INFO_HEADER_LEN) throw new DecodeError(`${end - at} stray bytes after the last info record`, at);
    const type = buf[at]!;
    const len = u16(buf, at + 2);
    if (len < INFO_HEADER_LEN) throw new DecodeError(`info record length ${len} is shorter than its header`, at);
    if (len > end - at) throw new DecodeError(`info record of ${len} bytes overflows its event by ${len - (end - at)}`, at);
    switch (type) {
      case InfoType.DFID_NAME:
        ev.entry = entryAt(buf, at, len);
        break;
      case InfoType.FID:
        ev.fid = fileIdAt(buf, at, len);
        break;
      case InfoType.DFID:
        ev.dfid = fileIdAt(buf, at, len);
        break;
      case InfoType.OLD_DFID_NAME:
        ev.from = entryAt(buf, at, len);
        break;
      case InfoType.NEW_DFID_NAME:
        ev.to = entryAt(buf, at, len);
        break;
      case InfoType.PIDFD:
        if (len < 8) throw new DecodeError(`pidfd record of ${len} bytes is shorter than 8`, at);
        ev.pidfd = s32(buf, at + 4);
        break;
      case InfoType.ERROR:
        if (len < 12) throw new DecodeError(`error record of ${len} bytes is shorter than 12`, at);
        ev.error = s32(buf, at + 4);
        ev.errorCount = u32(buf, at + 8);
        break;
      case InfoType.RANGE:
        if (len < 24) throw new DecodeError(`range record of ${len} bytes is shorter than 24`, at);
        ev.range = { offset: u64(buf, at + 8), count: u64(buf, at + 16) };
        break;
      case InfoType.MNT:
        // struct fanotify_event_info_mnt { hdr; __u64 mnt_id; }: the C ABI aligns mnt_id to 8,
        // so 4 bytes of padding follow the header and the record is 16 bytes.
        if (len < 16) throw new DecodeError(`mount record of ${len} bytes is shorter than 16`, at);
        ev.mntId = u64(buf, at + 8);
        break;
      default:
        // A record type newer than this decoder: its length lets us step over it.
        break;
    }
    at += len;
  }
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
 * A direct-mapped cache of mask → (names, type): a batch holds few distinct masks, and this
 * is cheaper than a Map lookup per event. Entries only ever hold what namesOf/eventType
 * compute, so the cache never changes a result.
 */
const CACHE_SIZE = 256;
const cachedMask = new Float64Array(CACHE_SIZE).fill(-1);
const cachedNames: (readonly EventName[])[] = new Array<readonly EventName[]>(CACHE_SIZE).fill([]);
const cachedType: DecodedEvent['type'][] = new Array<DecodedEvent['type']>(CACHE_SIZE).fill('unknown');

function slotOf(mask: number): number {
  return (mask ^ (mask >>> 8) ^ (mask >>> 16) ^ (mask >>> 24)) & (CACHE_SIZE - 1);
}

/** Offset of the event after the one {@link decodeOne} decoded last. */
let nextOffset = 0;

/** Decode the event at `offset` and leave the offset of the next one in `nextOffset`. */
function decodeOne(buf: Buffer, offset: number): DecodedEvent {
  const left = buf.length - offset;
  if (left < METADATA_LEN) throw new DecodeError(`${left} bytes left, an event needs at least ${METADATA_LEN}`, offset);
  const eventLen = u32(buf, offset);
  const vers = buf[offset + 4]!;
  const metadataLen = u16(buf, offset + 6);
  if (vers !== METADATA_VERSION) throw new DecodeError(`metadata version ${vers}, expected ${METADATA_VERSION}`, offset);
  if (eventLen < METADATA_LEN) throw new DecodeError(`event_len ${eventLen} is shorter than the metadata`, offset);
  if (eventLen > left) throw new DecodeError(`event_len ${eventLen} runs ${eventLen - left} bytes past the batch`, offset);
  if (metadataLen < METADATA_LEN || metadataLen > eventLen) {
    throw new DecodeError(`metadata_len ${metadataLen} is outside ${METADATA_LEN}..${eventLen}`, offset);
  }
  const mask = u64(buf, offset + 8);
  const slot = slotOf(mask);
  let names: readonly EventName[];
  let type: DecodedEvent['type'];
  if (cachedMask[slot] === mask) {
    names = cachedNames[slot]!;
    type = cachedType[slot]!;
  } else {
    names = namesOf(mask);
    type = eventType(mask, names);
    cachedMask[slot] = mask;
    cachedNames[slot] = names;
    cachedType[slot] = type;
  }
  const ev: Building = {
    type,
    mask,
    names,
    pid: s32(buf, offset + 20),
    fd: s32(buf, offset + 16),
    isDir: (mask & EventBit.ONDIR) !== 0,
  };
  const end = offset + eventLen;
  if (metadataLen < eventLen) decodeRecords(buf, offset + metadataLen, end, ev);
  nextOffset = end;
  return ev as DecodedEvent;
}

/**
 * Decode one event starting at `offset`.
 * @returns the event and the offset of the next one.
 * @throws DecodeError when the bytes are malformed.
 */
export function decodeEventAt(buf: Buffer, offset: number): { event: DecodedEvent; next: number } {
  const event = decodeOne(buf, offset);
  return { event, next: nextOffset };
}

/**
 * Decode a whole read() batch.
 * @throws DecodeError on the first malformed event; nothing after it is trusted.
 */
export function decodeBatch(buf: Buffer): DecodedEvent[] {
  const events: DecodedEvent[] = [];
  let offset = 0;
  while (offset < buf.length) {
    events.push(decodeOne(buf, offset));
    offset = nextOffset;
  }
  return events;
}
