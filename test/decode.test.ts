/**
 * Tests of the batch decoder (src/kernel/decode.ts) from byte fixtures written by hand here,
 * with Buffer writes that follow include/uapi/linux/fanotify.h, so a bug in encode.ts cannot
 * hide one in decode.ts. One fixture is a real batch captured from the kernel on this machine.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventBit } from '../src/kernel/constants.js';
import { decodeBatch, decodeEventAt } from '../src/kernel/decode.js';
import { encodeEvent } from '../src/kernel/encode.js';
import { DecodeError, type DecodedEvent } from '../src/kernel/events.js';
import { FileId } from '../src/kernel/fileid.js';

// ---------------------------------------------------------------------------------------------
// Hand-written byte builders (independent of encode.ts).

const FSID = Buffer.from('0102030405060708', 'hex');
const FSID2 = Buffer.from('f0e0d0c0b0a09080', 'hex');
/** An ext4 handle: FILEID_INO32_GEN (1), ino u32 + generation u32. */
const H_DIR = Buffer.from([0x02, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
const H_FILE = Buffer.from([0x0c, 0, 0, 0, 0xe7, 0x99, 0x08, 0xef]);
const H_DIR2 = Buffer.from([0x0d, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]);

interface Meta {
  eventLen?: number;
  vers?: number;
  metadataLen?: number;
  maskHigh?: number;
}

function metadata(eventLen: number, mask: number, fd: number, pid: number, o: Meta = {}): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt32LE(eventLen, 0); // event_len
  b[4] = o.vers ?? 3; // vers
  b[5] = 0; // reserved
  b.writeUInt16LE(o.metadataLen ?? 24, 6); // metadata_len
  b.writeUInt32LE(mask >>> 0, 8); // mask, low word
  b.writeUInt32LE(o.maskHigh ?? 0, 12); // mask, high word
  b.writeInt32LE(fd, 16);
  b.writeInt32LE(pid, 20);
  return b;
}

/** One event: metadata with event_len covering the records (unless overridden). */
function event(mask: number, records: readonly Buffer[] = [], fd = -1, pid = 4321, o: Meta = {}): Buffer {
  const body = Buffer.concat(records as Buffer[]);
  const extra = (o.metadataLen ?? 24) - 24;
  const pad = Buffer.alloc(Math.max(0, extra));
  return Buffer.concat([metadata(o.eventLen ?? 24 + pad.length + body.length, mask, fd, pid, o), pad, body]);
}

/** An info record: `{type u8, pad u8, len u16}` + body, padded to 4 like the kernel does. */
function rec(type: number, body: Buffer, len?: number): Buffer {
  const size = len ?? (4 + body.length + 3) & ~3;
  const b = Buffer.alloc(Math.max(size, 4 + body.length));
  b[0] = type;
  b[1] = 0;
  b.writeUInt16LE(size, 2);
  body.copy(b, 4);
  return b.subarray(0, Math.max(size, 4 + body.length));
}

/** fsid(8) + handle_bytes u32 + handle_type s32 + f_handle [+ name + NUL]. */
function fidBody(fsid: Buffer, handleType: number, handle: Buffer, name?: string, handleBytes?: number): Buffer {
  const nameBytes = name === undefined ? Buffer.alloc(0) : Buffer.from(name + '\0', 'utf8');
  const b = Buffer.alloc(16 + handle.length + nameBytes.length);
  fsid.copy(b, 0);
  b.writeUInt32LE(handleBytes ?? handle.length, 8);
  b.writeInt32LE(handleType, 12);
  handle.copy(b, 16);
  nameBytes.copy(b, 16 + handle.length);
  return b;
}

const fidRec = (handle: Buffer, fsid = FSID, handleType = 1): Buffer => rec(1, fidBody(fsid, handleType, handle));
const dfidRec = (handle: Buffer, fsid = FSID): Buffer => rec(3, fidBody(fsid, 1, handle));
const nameRec = (type: 2 | 10 | 12, handle: Buffer, name: string, fsid = FSID): Buffer =>
  rec(type, fidBody(fsid, 1, handle, name));

function pidfdRec(pidfd: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(pidfd, 0);
  return rec(4, b);
}

function errorRec(error: number, count: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeInt32LE(error, 0);
  b.writeUInt32LE(count, 4);
  return rec(5, b);
}

/** struct fanotify_event_info_range: hdr, u32 pad, u64 offset, u64 count (24 bytes). */
function rangeRec(offset: bigint, count: bigint): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(0, 0);
  b.writeBigUInt64LE(offset, 4);
  b.writeBigUInt64LE(count, 12);
  return rec(6, b);
}

/**
 * struct fanotify_event_info_mnt: hdr, then `__u64 mnt_id`, which the C ABI aligns to 8,
 * so 4 bytes of padding follow the header and the record is 16 bytes.
 */
function mntRec(mntId: bigint): Buffer {
  const b = Buffer.alloc(12);
  b.writeBigUInt64LE(mntId, 4);
  return rec(7, b);
}

function only(buf: Buffer): DecodedEvent {
  const events = decodeBatch(buf);
  assert.equal(events.length, 1);
  return events[0]!;
}

function hexOf(...parts: Buffer[]): string {
  return Buffer.concat(parts).toString('hex');
}

function assertFileId(id: FileId | undefined, fsid: Buffer, handleType: number, handle: Buffer): void {
  assert.ok(id instanceof FileId, 'expected a FileId');
  assert.equal(id.fsid, fsid.toString('hex'));
  assert.deepEqual(id.fsidBytes, fsid);
  assert.equal(id.handleType, handleType);
  assert.equal(id.handleLength, handle.length);
  assert.deepEqual(id.handle, handle);
  const header = Buffer.alloc(8);
  header.writeUInt32LE(handle.length, 0);
  header.writeInt32LE(handleType, 4);
  assert.equal(id.key, hexOf(fsid, header, handle));
  assert.equal(id.toJSON(), id.key);
}

/** Assert that decoding throws a DecodeError at `offset`, with a message matching `message`. */
function assertDecodeError(buf: Buffer, offset: number, message?: RegExp): void {
  let thrown: unknown;
  try {
    decodeBatch(buf);
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof DecodeError, `expected a DecodeError, got ${String(thrown)}`);
  assert.equal(thrown.name, 'DecodeError');
  assert.equal(thrown.offset, offset, `offset of: ${thrown.message}`);
  assert.ok(thrown.message.includes(`at byte ${offset}`), thrown.message);
  if (message) assert.match(thrown.message, message);
}

const M = EventBit;

// ---------------------------------------------------------------------------------------------

describe('decode: info records', () => {
  test('FID: the object id, no name', () => {
    const ev = only(event(M.ATTRIB, [fidRec(H_FILE)], -1, 77));
    assert.equal(ev.type, 'attrib');
    assert.deepEqual(ev.names, ['attrib']);
    assert.equal(ev.mask, M.ATTRIB);
    assert.equal(ev.fd, -1);
    assert.equal(ev.pid, 77);
    assert.equal(ev.isDir, false);
    assertFileId(ev.fid, FSID, 1, H_FILE);
    assert.equal(ev.dfid, undefined);
    assert.equal(ev.entry, undefined);
  });

  test('FID: a handle that is not a multiple of 4 bytes is read up to handle_bytes, not the padding', () => {
    const handle = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]); // 13 bytes → record padded to 36
    const r = fidRec(handle, FSID2, 0x81);
    assert.equal(r.length, 36);
    const ev = only(event(M.MODIFY, [r]));
    assertFileId(ev.fid, FSID2, 0x81, handle);
  });

  test('FID: an inode-less id (FS_ERROR on a superblock) has handle_bytes 0', () => {
    const ev = only(event(M.MODIFY, [fidRec(Buffer.alloc(0), FSID, 0xff)]));
    assertFileId(ev.fid, FSID, 0xff, Buffer.alloc(0));
  });

  test('DFID: the parent directory without a name', () => {
    const ev = only(event(M.CREATE, [dfidRec(H_DIR)]));
    assert.equal(ev.type, 'create');
    assertFileId(ev.dfid, FSID, 1, H_DIR);
    assert.equal(ev.fid, undefined);
    assert.equal(ev.entry, undefined);
  });

  test('DFID_NAME: directory id and entry name, followed by the target FID', () => {
    const ev = only(event(M.CREATE, [nameRec(2, H_DIR, 'hello-world.txt'), fidRec(H_FILE)]));
    assert.equal(ev.type, 'create');
    assert.ok(ev.entry);
    assertFileId(ev.entry.dir, FSID, 1, H_DIR);
    assert.equal(ev.entry.name, 'hello-world.txt');
    assertFileId(ev.fid, FSID, 1, H_FILE);
  });

  test('DFID_NAME: every padding length (0..3 NULs after the terminator) gives the same name', () => {
    for (const name of ['a', 'ab', 'abc', 'abcd', 'abcde']) {
      const ev = only(event(M.DELETE, [nameRec(2, H_DIR, name)]));
      assert.equal(ev.entry?.name, name);
    }
  });

  test('DFID_NAME: "." for the directory itself, and UTF-8 names', () => {
    assert.equal(only(event(M.ATTRIB | M.ONDIR, [nameRec(2, H_DIR, '.')])).entry?.name, '.');
    const name = 'résumé ☃ 日本.txt';
    assert.equal(only(event(M.CREATE, [nameRec(2, H_DIR, name)])).entry?.name, name);
  });

  test('OLD_DFID_NAME + NEW_DFID_NAME: FAN_RENAME|FAN_ONDIR is one rename event', () => {
    const ev = only(
      event(M.RENAME | M.ONDIR, [nameRec(10, H_DIR, 'old-dir'), nameRec(12, H_DIR2, 'new-dir', FSID), fidRec(H_FILE)]),
    );
    assert.equal(ev.type, 'rename');
    assert.deepEqual(ev.names, ['rename']);
    assert.equal(ev.isDir, true);
    assert.equal(ev.mask, (M.RENAME | M.ONDIR) >>> 0);
    assert.ok(ev.type === 'rename');
    assert.ok(ev.from && ev.to);
    assert.equal(ev.from.name, 'old-dir');
    assert.equal(ev.to.name, 'new-dir');
    assertFileId(ev.from.dir, FSID, 1, H_DIR);
    assertFileId(ev.to.dir, FSID, 1, H_DIR2);
    assert.notEqual(ev.from.dir.key, ev.to.dir.key);
    assertFileId(ev.fid, FSID, 1, H_FILE);
    assert.equal(ev.entry, undefined);
  });

  test('PIDFD: a pidfd, FAN_NOPIDFD (-1) and FAN_EPIDFD (-2)', () => {
    assert.equal(only(event(M.OPEN, [pidfdRec(12)], 5)).pidfd, 12);
    assert.equal(only(event(M.OPEN, [pidfdRec(-1)], 5)).pidfd, -1);
    const ev = only(event(M.OPEN, [pidfdRec(-2)], 5));
    assert.equal(ev.pidfd, -2);
    assert.equal(ev.fd, 5);
    assert.equal(only(event(M.OPEN, [], 5)).pidfd, undefined);
  });

  test('ERROR: FAN_FS_ERROR gives an fsError with error and errorCount', () => {
    const ev = only(event(M.FS_ERROR, [errorRec(117, 3), fidRec(H_FILE)], -1, 0));
    assert.equal(ev.type, 'fsError');
    assert.deepEqual(ev.names, ['fsError']);
    assert.ok(ev.type === 'fsError');
    assert.equal(ev.error, 117);
    assert.equal(ev.errorCount, 3);
    assertFileId(ev.fid, FSID, 1, H_FILE);
  });

  test('ERROR: error is signed and errorCount unsigned', () => {
    const ev = only(event(M.FS_ERROR, [errorRec(-5, 0xffffffff)]));
    assert.ok(ev.type === 'fsError');
    assert.equal(ev.error, -5);
    assert.equal(ev.errorCount, 0xffffffff);
  });

  test('RANGE: preAccess with an offset above 2^32', () => {
    const offset = 5 * 2 ** 32 + 4096;
    const ev = only(event(M.PRE_ACCESS, [rangeRec(BigInt(offset), 8192n)], 9, 555));
    assert.equal(ev.type, 'preAccess');
    assert.deepEqual(ev.names, ['preAccess']);
    assert.equal(ev.fd, 9);
    assert.equal(ev.pid, 555);
    assert.ok(ev.type === 'preAccess');
    assert.deepEqual(ev.range, { offset, count: 8192 });
  });

  test('RANGE: the largest exact offsets (2^53 - 4096) survive', () => {
    const offset = 2 ** 53 - 4096;
    const ev = only(event(M.PRE_ACCESS, [rangeRec(BigInt(offset), BigInt(2 ** 40))], 9));
    assert.ok(ev.type === 'preAccess');
    assert.deepEqual(ev.range, { offset, count: 2 ** 40 });
  });

  test('MNT: mountAttach and mountDetach with a mount id above 2^32 (u64 at byte 8 of a 16-byte record)', () => {
    const mntId = 3 * 2 ** 32 + 0x80000064;
    const r = mntRec(BigInt(mntId));
    assert.equal(r.length, 16);
    const attach = only(event(M.MNT_ATTACH, [r], -1, 0));
    assert.equal(attach.type, 'mountAttach');
    assert.deepEqual(attach.names, ['mountAttach']);
    assert.equal(attach.mntId, mntId);
    const detach = only(event(M.MNT_DETACH, [mntRec(0x80000065n)], -1, 0));
    assert.equal(detach.type, 'mountDetach');
    assert.equal(detach.mntId, 0x80000065);
  });

  test('MNT: a FAN_MNT_ATTACH batch captured from the kernel (mount of a tmpfs)', () => {
    // fanotify_init(FAN_REPORT_MNT), mark FAN_MARK_MNTNS on /proc/self/ns/mnt, mount tmpfs.
    const captured = Buffer.from(
      '28000000' + '03001800' + '00000001' + '00000000' + 'ffffffff' + '4f200000' + '07001000' + '00000000' + '64000080' + '00000000',
      'hex',
    );
    assert.equal(captured.length, 40);
    const ev = only(captured);
    assert.equal(ev.type, 'mountAttach');
    assert.equal(ev.fd, -1);
    assert.equal(ev.pid, 0x204f);
    assert.equal(ev.mntId, 0x80000064);
  });

  test('an unknown record type (99) is skipped by its length and the next record is still decoded', () => {
    const unknown = rec(99, Buffer.from('deadbeefcafebabe0102', 'hex')); // 14 → padded to 16
    const ev = only(event(M.CREATE, [unknown, nameRec(2, H_DIR, 'after-unknown'), fidRec(H_FILE)]));
    assert.equal(ev.type, 'create');
    assert.equal(ev.entry?.name, 'after-unknown');
    assertFileId(ev.fid, FSID, 1, H_FILE);
    // A bare header (len 4) of an unknown type is fine too.
    assert.equal(only(event(M.CREATE, [rec(200, Buffer.alloc(0)), fidRec(H_FILE)])).fid?.handleLength, 8);
  });

  test('records in any order: FID before DFID_NAME', () => {
    const ev = only(event(M.DELETE, [fidRec(H_FILE), nameRec(2, H_DIR, 'x.o')]));
    assert.equal(ev.entry?.name, 'x.o');
    assertFileId(ev.fid, FSID, 1, H_FILE);
  });

  test('metadata_len above 24 (a future, longer metadata): records start at metadata_len', () => {
    const ev = only(event(M.CREATE, [fidRec(H_FILE)], -1, 1, { metadataLen: 32 }));
    assertFileId(ev.fid, FSID, 1, H_FILE);
  });
});

describe('decode: masks and event types', () => {
  test('merged CREATE|MODIFY|CLOSE_WRITE: names in EVENT_BITS order, type create, raw mask kept', () => {
    const mask = M.CLOSE_WRITE | M.MODIFY | M.CREATE | M.EVENT_ON_CHILD;
    const ev = only(event(mask, [nameRec(2, H_DIR, 'a.txt'), fidRec(H_FILE)]));
    assert.equal(ev.type, 'create');
    assert.deepEqual(ev.names, ['create', 'modify', 'closeWrite']);
    assert.equal(ev.mask, mask);
    assert.equal(ev.isDir, false);
  });

  test('names leave out ONDIR and EVENT_ON_CHILD; a mask with only flags is type unknown', () => {
    const ev = only(event(M.ONDIR | M.EVENT_ON_CHILD, []));
    assert.equal(ev.type, 'unknown');
    assert.deepEqual(ev.names, []);
    assert.equal(ev.isDir, true);
  });

  test('overflow: FAN_Q_OVERFLOW with fd -1', () => {
    const ev = only(event(M.Q_OVERFLOW, [], -1, 0));
    assert.equal(ev.type, 'overflow');
    assert.deepEqual(ev.names, ['overflow']);
    assert.equal(ev.fd, -1);
    assert.equal(ev.pid, 0);
  });

  test('permission events openPerm / accessPerm / openExecPerm carry their fd', () => {
    const cases = [
      [M.OPEN_PERM, 'openPerm', 11],
      [M.ACCESS_PERM, 'accessPerm', 12],
      [M.OPEN_EXEC_PERM, 'openExecPerm', 13],
    ] as const;
    for (const [mask, type, fd] of cases) {
      const ev = only(event(mask, [], fd, 999));
      assert.equal(ev.type, type);
      assert.deepEqual(ev.names, [type]);
      assert.equal(ev.fd, fd);
      assert.equal(ev.pid, 999);
    }
  });

  test('negative pid and fd are read as signed', () => {
    const ev = only(event(M.OPEN, [], -13, -1));
    assert.equal(ev.fd, -13);
    assert.equal(ev.pid, -1);
  });

  test('several events in one batch come out in order, and decodeEventAt walks them', () => {
    const a = event(M.OPEN_PERM, [], 20, 1);
    const b = event(M.CREATE, [nameRec(2, H_DIR, 'one'), fidRec(H_FILE)], -1, 2);
    const c = event(M.Q_OVERFLOW, [], -1, 0);
    const d = event(M.RENAME, [nameRec(10, H_DIR, 'x'), nameRec(12, H_DIR2, 'y')], -1, 3);
    const batch = Buffer.concat([a, b, c, d]);
    const events = decodeBatch(batch);
    assert.deepEqual(
      events.map((e) => [e.type, e.pid]),
      [
        ['openPerm', 1],
        ['create', 2],
        ['overflow', 0],
        ['rename', 3],
      ],
    );
    let offset = 0;
    const nexts: number[] = [];
    while (offset < batch.length) {
      offset = decodeEventAt(batch, offset).next;
      nexts.push(offset);
    }
    assert.deepEqual(nexts, [a.length, a.length + b.length, a.length + b.length + c.length, batch.length]);
  });

  test('decodeBatch of an empty buffer returns []', () => {
    assert.deepEqual(decodeBatch(Buffer.alloc(0)), []);
  });

  test('a batch captured from the kernel: ext4, FAN_REPORT_DFID_NAME_TARGET, create+write+close then rename', () => {
    const captured = Buffer.from(
      '6000000003001800' + '0a01000000000000' + 'ffffffff2e210000' +
        '02002c00991a0837c32da8a20800000001000000020000000000000068656c6c6f2d776f726c642e74787400' +
        '01001c00991a0837c32da8a208000000010000000c000000e79908ef' +
        '8800000003001800' + '0000001000000000' + 'ffffffff2e210000' +
        '0a002c00991a0837c32da8a20800000001000000020000000000000068656c6c6f2d776f726c642e74787400' +
        '0c002800991a0837c32da8a208000000010000000200000000000000' + '72656e616d65642e74787400' +
        '01001c00991a0837c32da8a208000000010000000c000000e79908ef',
      'hex',
    );
    assert.equal(captured.length, 232);
    const [create, rename, ...rest] = decodeBatch(captured);
    assert.equal(rest.length, 0);
    assert.ok(create && rename);
    assert.equal(create.type, 'create');
    assert.deepEqual(create.names, ['create', 'modify', 'closeWrite']);
    assert.equal(create.pid, 0x212e);
    assert.equal(create.entry?.name, 'hello-world.txt');
    assert.equal(create.entry!.dir.fsid, '991a0837c32da8a2');
    assert.deepEqual(create.entry!.dir.handle, Buffer.from('0200000000000000', 'hex'));
    assert.equal(create.fid?.handleType, 1);
    assert.ok(rename.type === 'rename');
    assert.equal(rename.from?.name, 'hello-world.txt');
    assert.equal(rename.to?.name, 'renamed.txt');
    assert.equal(rename.from!.dir.key, rename.to!.dir.key);
    assert.equal(rename.fid?.key, create.fid!.key);
  });

  test('round trip: what encodeEvent lays out decodes like the hand-written bytes', () => {
    const id = (handle: Buffer, fsid = FSID) => ({ fsid, handleType: 1, handle });
    const cases: [Buffer, Buffer][] = [
      [
        encodeEvent({ mask: M.CREATE, pid: 4321, records: [{ type: 'dfidName', id: id(H_DIR), name: 'n.txt' }, { type: 'fid', id: id(H_FILE) }] }),
        event(M.CREATE, [nameRec(2, H_DIR, 'n.txt'), fidRec(H_FILE)]),
      ],
      [
        encodeEvent({ mask: M.RENAME, pid: 4321, records: [{ type: 'oldDfidName', id: id(H_DIR), name: 'a' }, { type: 'newDfidName', id: id(H_DIR2), name: 'bb' }] }),
        event(M.RENAME, [nameRec(10, H_DIR, 'a'), nameRec(12, H_DIR2, 'bb')]),
      ],
      [encodeEvent({ mask: M.ATTRIB, pid: 4321, records: [{ type: 'dfid', id: id(H_DIR) }] }), event(M.ATTRIB, [dfidRec(H_DIR)])],
      [encodeEvent({ mask: M.OPEN, fd: 5, pid: 4321, records: [{ type: 'pidfd', pidfd: -2 }] }), event(M.OPEN, [pidfdRec(-2)], 5)],
      [encodeEvent({ mask: M.FS_ERROR, pid: 4321, records: [{ type: 'error', error: 5, count: 2 }] }), event(M.FS_ERROR, [errorRec(5, 2)])],
      [
        encodeEvent({ mask: M.PRE_ACCESS, fd: 9, pid: 4321, records: [{ type: 'range', offset: 5 * 2 ** 32 + 4096, count: 8192 }] }),
        event(M.PRE_ACCESS, [rangeRec(BigInt(5 * 2 ** 32 + 4096), 8192n)], 9),
      ],
      [
        encodeEvent({ mask: M.MNT_ATTACH, pid: 4321, records: [{ type: 'mnt', mntId: 2 ** 40 + 7 }] }),
        event(M.MNT_ATTACH, [mntRec(BigInt(2 ** 40 + 7))]),
      ],
    ];
    for (const [encoded, byHand] of cases) {
      assert.equal(encoded.toString('hex'), byHand.toString('hex'));
      const a = only(encoded);
      const b = only(byHand);
      assert.equal(JSON.stringify(a), JSON.stringify(b));
    }
  });
});

describe('decode: FileId', () => {
  test('key is equal for the same fsid + handle from different events and buffers', () => {
    const a = only(event(M.CREATE, [nameRec(2, H_DIR, 'one')])).entry!.dir;
    const b = only(event(M.DELETE, [fidRec(Buffer.from(H_FILE)), dfidRec(Buffer.from(H_DIR))], -1, 1)).dfid!;
    assert.notEqual(a, b);
    assert.equal(a.key, b.key);
    assert.equal(a.key, FileId.from(FSID, 1, H_DIR).key);
  });

  test('key differs when one handle byte, the handle type, or the fsid differs', () => {
    const base = only(event(M.CREATE, [fidRec(H_FILE)])).fid!;
    for (let i = 0; i < H_FILE.length; i++) {
      const h = Buffer.from(H_FILE);
      h[i] = h[i]! ^ 0x01;
      const other = only(event(M.CREATE, [fidRec(h)])).fid!;
      assert.notEqual(other.key, base.key, `byte ${i}`);
    }
    assert.notEqual(only(event(M.CREATE, [fidRec(H_FILE, FSID, 2)])).fid!.key, base.key);
    assert.notEqual(only(event(M.CREATE, [fidRec(H_FILE, FSID2)])).fid!.key, base.key);
    // A shorter handle that is a prefix of another is a different object.
    assert.notEqual(only(event(M.CREATE, [fidRec(H_FILE.subarray(0, 4))])).fid!.key, base.key);
  });

  test('fsid is the record bytes as 16 hex digits', () => {
    const id = only(event(M.CREATE, [fidRec(H_FILE, FSID2)])).fid!;
    assert.equal(id.fsid, 'f0e0d0c0b0a09080');
    assert.match(id.fsid, /^[0-9a-f]{16}$/);
  });

  test('FileId.from rejects an fsid that is not 8 bytes', () => {
    assert.throws(() => FileId.from(Buffer.alloc(4), 1, H_FILE), RangeError);
  });
});

describe('decode: malformed input raises DecodeError with the offset', () => {
  const good = event(M.CREATE, [nameRec(2, H_DIR, 'ok'), fidRec(H_FILE)]);
  const G = good.length;

  test('1..23 bytes: too short for the metadata, at the start and after a good event', () => {
    for (let n = 1; n < 24; n++) {
      assertDecodeError(event(M.OPEN, [], 3).subarray(0, n), 0, /needs at least 24/);
      assertDecodeError(Buffer.concat([good, event(M.OPEN, [], 3).subarray(0, n)]), G, /needs at least 24/);
    }
  });

  test('event_len 0', () => {
    assertDecodeError(event(M.OPEN, [], 3, 1, { eventLen: 0 }), 0, /event_len 0/);
    assertDecodeError(Buffer.concat([good, event(M.OPEN, [], 3, 1, { eventLen: 0 })]), G, /event_len 0/);
  });

  test('event_len below 24', () => {
    for (const n of [1, 4, 23]) assertDecodeError(event(M.OPEN, [], 3, 1, { eventLen: n }), 0, /shorter than the metadata/);
  });

  test('event_len past the end of the batch', () => {
    assertDecodeError(event(M.OPEN, [], 3, 1, { eventLen: 25 }), 0, /past the batch/);
    assertDecodeError(event(M.OPEN, [], 3, 1, { eventLen: 0xffffffff }), 0, /past the batch/);
    assertDecodeError(Buffer.concat([good, good.subarray(0, G - 1)]), G, /past the batch/);
  });

  test('vers other than 3', () => {
    for (const vers of [0, 2, 4, 255]) assertDecodeError(event(M.OPEN, [], 3, 1, { vers }), 0, /version/);
    assertDecodeError(Buffer.concat([good, event(M.OPEN, [], 3, 1, { vers: 2 })]), G, /version 2/);
  });

  test('metadata_len below 24 or above event_len', () => {
    for (const metadataLen of [0, 4, 23]) {
      assertDecodeError(Buffer.concat([metadata(24, M.OPEN, 3, 1, { metadataLen })]), 0, /metadata_len/);
    }
    assertDecodeError(metadata(24, M.OPEN, 3, 1, { metadataLen: 25 }), 0, /metadata_len 25/);
    const withRecord = event(M.CREATE, [fidRec(H_FILE)]);
    withRecord.writeUInt16LE(withRecord.length + 4, 6);
    assertDecodeError(Buffer.concat([good, withRecord]), G, /metadata_len/);
  });

  test('info record len 0 and len 1..3 (shorter than its header)', () => {
    for (const len of [0, 1, 2, 3]) {
      const bad = event(M.CREATE, [rec(1, Buffer.alloc(28), len)]);
      assertDecodeError(bad, 24, new RegExp(`length ${len} is shorter than its header`));
      assertDecodeError(Buffer.concat([good, bad]), G + 24);
    }
    // The bad record after a good one in the same event.
    assertDecodeError(event(M.CREATE, [fidRec(H_FILE), rec(3, Buffer.alloc(28), 0)]), 24 + 28);
  });

  test('a record that overflows its event (but not the batch)', () => {
    const r = fidRec(H_FILE);
    r.writeUInt16LE(r.length + 4, 2);
    const bad = event(M.CREATE, [r]);
    assertDecodeError(Buffer.concat([bad, good]), 24, /overflows its event by 4/);
  });

  test('a FID / DFID / DFID_NAME record shorter than 20 bytes', () => {
    for (const type of [1, 2, 3, 10, 12]) {
      for (const len of [4, 8, 16]) assertDecodeError(event(M.CREATE, [rec(type, Buffer.alloc(len - 4), len)]), 24, /shorter than 20/);
    }
  });

  test('handle_bytes that overflows its record', () => {
    for (const type of [1, 3]) {
      const bad = rec(type, fidBody(FSID, 1, H_FILE, undefined, 9));
      assertDecodeError(event(M.CREATE, [bad]), 24, /handle of 9 bytes overflows/);
      const huge = rec(type, fidBody(FSID, 1, H_FILE, undefined, 0xffffffff));
      assertDecodeError(Buffer.concat([good, event(M.CREATE, [huge])]), G + 24, /overflows/);
    }
    // With a name, the handle may not run into the name's terminator either.
    const named = rec(2, fidBody(FSID, 1, H_FILE, 'abc', 8 + 5));
    assertDecodeError(event(M.CREATE, [named]), 24, /overflows/);
  });

  test('DFID_NAME without a NUL terminator inside its record (even when a NUL follows it)', () => {
    // Name fills the record up to a 4-byte boundary with no terminator: "abcd" after a 28-byte fid part.
    const body = Buffer.concat([fidBody(FSID, 1, H_DIR), Buffer.from('abcd')]);
    for (const type of [2, 10, 12]) {
      const bad = event(M.CREATE, [rec(type, body)]);
      assertDecodeError(bad, 24, /not NUL-terminated/);
      // The next event's metadata starts with zero bytes; they must not terminate the name.
      assertDecodeError(Buffer.concat([bad, event(M.OPEN, [], 3)]), 24, /not NUL-terminated/);
      // Nor may the next record's.
      assertDecodeError(event(M.CREATE, [rec(type, body), fidRec(H_FILE)]), 24, /not NUL-terminated/);
    }
    // A handle that fills the whole record leaves no room for a name.
    assertDecodeError(event(M.CREATE, [rec(2, fidBody(FSID, 1, H_DIR))]), 24, /not NUL-terminated/);
  });

  test('an empty entry name', () => {
    for (const type of [2, 10, 12]) {
      assertDecodeError(event(M.CREATE, [rec(type, fidBody(FSID, 1, H_DIR, ''))]), 24, /name is empty/);
    }
  });

  test('PIDFD record shorter than 8', () => {
    assertDecodeError(event(M.OPEN, [rec(4, Buffer.alloc(0), 4)], 3), 24, /pidfd record of 4 bytes/);
    assertDecodeError(event(M.OPEN, [rec(4, Buffer.alloc(2), 6), Buffer.alloc(2)], 3), 24, /pidfd record of 6 bytes/);
  });

  test('ERROR record shorter than 12', () => {
    assertDecodeError(event(M.FS_ERROR, [rec(5, Buffer.alloc(4), 8)]), 24, /error record of 8 bytes/);
  });

  test('RANGE record shorter than 24', () => {
    for (const len of [4, 12, 20]) {
      assertDecodeError(event(M.PRE_ACCESS, [rec(6, Buffer.alloc(len - 4), len)], 9), 24, /range record of/);
    }
  });

  test('MNT record shorter than 16', () => {
    for (const len of [4, 8, 12]) {
      assertDecodeError(event(M.MNT_ATTACH, [rec(7, Buffer.alloc(len - 4), len)]), 24, /mount record of/);
    }
  });

  test('1..3 stray bytes after the last record', () => {
    for (let n = 1; n <= 3; n++) {
      const bad = event(M.CREATE, [fidRec(H_FILE), Buffer.alloc(n, 0x07)]);
      assertDecodeError(bad, 24 + 28, new RegExp(`${n} stray bytes`));
      assertDecodeError(Buffer.concat([good, bad, good]), G + 24 + 28);
      // Also with no record at all, right after metadata_len.
      assertDecodeError(event(M.OPEN, [Buffer.alloc(n)], 3), 24, /stray bytes/);
    }
  });

  test('nothing after the first malformed event is returned (the whole batch throws)', () => {
    assertDecodeError(Buffer.concat([good, good, event(M.OPEN, [], 3, 1, { vers: 9 }), good]), 2 * G);
  });
});
