/**
 * "Recorded" read() batches for benchmarks: byte-for-byte what the kernel hands a listener,
 * generated deterministically so every run decodes the same bytes.
 *
 * The layouts follow a capture made on this machine (Linux 6.18, ext4 on a loop device,
 * `FAN_REPORT_DFID_NAME_TARGET`, filesystem mark): each event is the 24-byte metadata, then a
 * DFID_NAME record (or OLD_DFID_NAME + NEW_DFID_NAME for FAN_RENAME), then the FID of the
 * object; ext4 handles are 8 bytes of type 1 (FILEID_INO32_GEN); records are padded to 4 bytes;
 * fd is FAN_NOFD. The fd-based batch is what fatrace reads: bare metadata with an open fd.
 * @packageDocumentation
 */
import { EventBit } from '../src/kernel/constants.js';
import { encodeEvent, type EventSpec, type FileIdSpec } from '../src/kernel/encode.js';

import { mulberry32 } from '../test/helpers/random.js';



/** The default size of a recorded batch: the group's default read buffer. */
export const BATCH_BYTES = 256 * 1024;

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789_-';
const EXTS = ['.c', '.o', '.ts', '.js', '.json', '.tmp', '.d', '.log', '.txt', ''];

/** An ext4-like fsid (two u32 words derived from the UUID). */
const EXT4_FSID = Buffer.from('991a0837c32da8a2', 'hex');

function ext4Id(ino: number, gen: number): FileIdSpec {
  const handle = Buffer.alloc(8);
  handle.writeUInt32LE(ino >>> 0, 0);
  handle.writeUInt32LE(gen >>> 0, 4);
  return { fsid: EXT4_FSID, handleType: 1, handle };
}

function fileName(rand: () => number): string {
  const ext = EXTS[rand() % EXTS.length] ?? '';
  const len = 8 + (rand() % 13) - ext.length; // 8..20 characters in all
  let s = '';
  for (let i = 0; i < Math.max(1, len); i++) s += NAME_CHARS[rand() % NAME_CHARS.length];
  return s + ext;
}

/** A batch description plus its bytes. */
export interface RecordedBatch {
  readonly kind: string;
  readonly bytes: Buffer;
  readonly events: number;
}

function fill(kind: string, targetBytes: number, next: () => EventSpec): RecordedBatch {
  const parts: Buffer[] = [];
  let size = 0;
  for (;;) {
    const ev = encodeEvent(next());
    if (size + ev.length > targetBytes) break;
    parts.push(ev);
    size += ev.length;
  }
  return { kind, bytes: Buffer.concat(parts, size), events: parts.length };
}

/**
 * A build-tool storm seen through a filesystem mark with `FAN_REPORT_DFID_NAME_TARGET`:
 * creates, writes, closes, attribute changes, deletes and renames in a few dozen directories.
 */
export function dfidNameTargetBatch(targetBytes = BATCH_BYTES, seed = 1): RecordedBatch {
  const rand = mulberry32(seed);
  const dirs = Array.from({ length: 40 }, (_, i) => ext4Id(2 + i * 8191, rand()));
  const pids = [4242, 4243, 5120, 777];
  const merged = EventBit.CREATE | EventBit.MODIFY | EventBit.CLOSE_WRITE;
  const masks = [
    merged,
    merged,
    EventBit.CREATE,
    EventBit.MODIFY,
    EventBit.CLOSE_WRITE,
    EventBit.MODIFY | EventBit.CLOSE_WRITE,
    EventBit.ATTRIB,
    EventBit.DELETE,
    EventBit.CREATE | EventBit.ONDIR,
    EventBit.DELETE | EventBit.ONDIR,
  ];
  let ino = 100_000;
  return fill('dfid-name-target', targetBytes, () => {
    const dir = dirs[rand() % dirs.length]!;
    const target = ext4Id(ino++, rand());
    const pid = pids[rand() % pids.length]!;
    if (rand() % 16 === 0) {
      const to = dirs[rand() % dirs.length]!;
      return {
        mask: EventBit.RENAME,
        pid,
        records: [
          { type: 'oldDfidName', id: dir, name: fileName(rand) },
          { type: 'newDfidName', id: to, name: fileName(rand) },
          { type: 'fid', id: target },
        ],
      };
    }
    return {
      mask: masks[rand() % masks.length]!,
      pid,
      records: [
        { type: 'dfidName', id: dir, name: fileName(rand) },
        { type: 'fid', id: target },
      ],
    };
  });
}

/** What fatrace reads: FAN_CLASS_NOTIF on a mount, no info records, an open fd per event. */
export function fdBatch(targetBytes = BATCH_BYTES, seed = 2): RecordedBatch {
  const rand = mulberry32(seed);
  const masks = [
    EventBit.OPEN,
    EventBit.CLOSE_NOWRITE,
    EventBit.ACCESS,
    EventBit.OPEN | EventBit.ACCESS | EventBit.CLOSE_NOWRITE,
    EventBit.MODIFY,
    EventBit.CLOSE_WRITE,
    EventBit.OPEN_EXEC | EventBit.OPEN,
  ];
  let fd = 7;
  return fill('fd', targetBytes, () => ({
    mask: masks[rand() % masks.length]!,
    fd: fd < 1000 ? fd++ : (fd = 7),
    pid: 1000 + (rand() % 64),
  }));
}
