/**
 * Tests of src/kernel/encode.ts: the exact bytes of `struct fanotify_response` (+ audit rule
 * info), and encodeEvent/encodeBatch → decodeBatch round trips for every record type.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DENY_ERRNOS, EventBit, type DenyErrno } from '../src/kernel/constants.js';
import { decodeBatch } from '../src/kernel/decode.js';
import { encodeBatch, encodeEvent, encodeResponse, responseWord, type EventSpec, type FileIdSpec } from '../src/kernel/encode.js';
import { FileId } from '../src/kernel/fileid.js';

/** The response struct as two words: fd (s32 LE) and response (u32 LE). */
function words(buf: Buffer): [number, number] {
  return [buf.readInt32LE(0), buf.readUInt32LE(4)];
}

describe('encodeResponse', () => {
  test('allow → {fd, 0x1}', () => {
    const buf = encodeResponse(7, { allow: true });
    assert.equal(buf.length, 8);
    assert.equal(buf.toString('hex'), '07000000' + '01000000');
  });

  test('deny → {fd, 0x2}', () => {
    assert.equal(encodeResponse(7, { allow: false }).toString('hex'), '07000000' + '02000000');
  });

  test('fd is written as a signed 32-bit little-endian value', () => {
    assert.deepEqual(words(encodeResponse(0x12345678, { allow: true })), [0x12345678, 1]);
    assert.equal(encodeResponse(0x12345678, { allow: true }).subarray(0, 4).toString('hex'), '78563412');
    assert.deepEqual(words(encodeResponse(-1, { allow: false })), [-1, 2]);
  });

  test('deny with EIO → 0x05000002', () => {
    const buf = encodeResponse(3, { allow: false, errno: 'EIO' });
    assert.deepEqual(words(buf), [3, 0x05000002]);
    assert.equal(buf.subarray(4).toString('hex'), '02000005');
  });

  test('every DENY_ERRNOS value → DENY | errno << 24', () => {
    const expected: Record<DenyErrno, number> = {
      EPERM: 1,
      EIO: 5,
      EAGAIN: 11,
      EBUSY: 16,
      ETXTBSY: 26,
      ENOSPC: 28,
      EDQUOT: 122,
    };
    assert.deepEqual({ ...DENY_ERRNOS }, expected);
    for (const [name, errno] of Object.entries(expected) as [DenyErrno, number][]) {
      const [, word] = words(encodeResponse(4, { allow: false, errno: name }));
      assert.equal(word, (0x2 | (errno << 24)) >>> 0, name);
      assert.equal(word >>> 24, errno, name);
      assert.equal(word & 0xffffff, 0x2, name);
      assert.equal(responseWord({ allow: false, errno: name }), word);
    }
  });

  test('deny with an errno name not in the list throws RangeError listing the valid ones', () => {
    for (const bad of ['ENOENT', 'EACCES', 'eio', '', 'EPERM ']) {
      assert.throws(
        () => encodeResponse(3, { allow: false, errno: bad as DenyErrno }),
        (err: unknown) => {
          assert.ok(err instanceof RangeError);
          assert.ok(err.message.includes(bad), err.message);
          for (const name of Object.keys(DENY_ERRNOS)) assert.ok(err.message.includes(name), `${name} in ${err.message}`);
          return true;
        },
        bad,
      );
    }
  });

  test('errno names inherited from Object.prototype are rejected, not turned into a plain DENY', () => {
    for (const bad of ['toString', 'constructor', 'hasOwnProperty', 'valueOf', '__proto__']) {
      assert.throws(() => encodeResponse(3, { allow: false, errno: bad as DenyErrno }), RangeError, bad);
    }
  });

  test('audit bit 0x10', () => {
    assert.deepEqual(words(encodeResponse(5, { allow: true, audit: true })), [5, 0x11]);
    assert.deepEqual(words(encodeResponse(5, { allow: false, audit: true })), [5, 0x12]);
    assert.deepEqual(words(encodeResponse(5, { allow: false, errno: 'EPERM', audit: true })), [5, 0x01000012]);
    assert.deepEqual(words(encodeResponse(5, { allow: true, audit: false })), [5, 0x1]);
  });

  test('audit rule info → 24 bytes with FAN_INFO|FAN_AUDIT and a {type 1, len 16} record header', () => {
    const buf = encodeResponse(9, { allow: false }, { rule: 42, subjectTrust: 1, objectTrust: 2 });
    assert.equal(buf.length, 24);
    const [fd, word] = words(buf);
    assert.equal(fd, 9);
    assert.equal(word, 0x2 | 0x10 | 0x20);
    assert.equal(buf[8], 1); // FAN_RESPONSE_INFO_AUDIT_RULE
    assert.equal(buf[9], 0); // pad
    assert.equal(buf.readUInt16LE(10), 16); // len of the record, header included
    assert.equal(buf.readUInt32LE(12), 42); // rule_number
    assert.equal(buf.readUInt32LE(16), 1); // subj_trust
    assert.equal(buf.readUInt32LE(20), 2); // obj_trust
  });

  test('audit rule info defaults trusts to 0 and keeps the verdict bits', () => {
    const buf = encodeResponse(9, { allow: true }, { rule: 0xfffffffe });
    assert.equal(buf.length, 24);
    assert.equal(words(buf)[1], 0x1 | 0x10 | 0x20);
    assert.equal(buf.readUInt32LE(12), 0xfffffffe);
    assert.equal(buf.readUInt32LE(16), 0);
    assert.equal(buf.readUInt32LE(20), 0);
    const eio = encodeResponse(9, { allow: false, errno: 'EIO' }, { rule: 1 });
    assert.equal(words(eio)[1], (0x05000002 | 0x30) >>> 0);
  });
});

describe('encodeEvent → decodeBatch round trip', () => {
  const fsid = Buffer.from('991a0837c32da8a2', 'hex');
  const dir: FileIdSpec = { fsid, handleType: 1, handle: Buffer.from('0200000001000000', 'hex') };
  const dir2: FileIdSpec = { fsid, handleType: 1, handle: Buffer.from('0300000001000000', 'hex') };
  const file: FileIdSpec = { fsid, handleType: 0x4d, handle: Buffer.from('0c000000e79908ef1122', 'hex') };
  const keyOf = (id: FileIdSpec): string => FileId.from(id.fsid, id.handleType, id.handle).key;

  function one(spec: EventSpec) {
    const bytes = encodeEvent(spec);
    assert.equal(bytes.readUInt32LE(0), bytes.length, 'event_len');
    assert.equal(bytes.length % 4, 0, 'records are padded to 4 bytes');
    const events = decodeBatch(bytes);
    assert.equal(events.length, 1);
    const ev = events[0]!;
    assert.equal(ev.mask, spec.mask);
    assert.equal(ev.fd, spec.fd ?? -1);
    assert.equal(ev.pid, spec.pid ?? 0);
    return ev;
  }

  test('no records', () => {
    const ev = one({ mask: EventBit.OPEN | EventBit.ACCESS, fd: 12, pid: 99 });
    assert.equal(ev.type, 'open');
    assert.deepEqual(ev.names, ['open', 'access']);
    assert.equal(encodeEvent({ mask: EventBit.OPEN }).length, 24);
  });

  test('fid', () => {
    const ev = one({ mask: EventBit.ATTRIB, records: [{ type: 'fid', id: file }] });
    assert.equal(ev.fid?.key, keyOf(file));
    assert.deepEqual(ev.fid.handle, file.handle);
    assert.equal(ev.fid.handleType, 0x4d);
  });

  test('dfid', () => {
    assert.equal(one({ mask: EventBit.CREATE, records: [{ type: 'dfid', id: dir }] }).dfid?.key, keyOf(dir));
  });

  test('dfidName (+ fid), names of every padding length', () => {
    for (const name of ['a', 'ab', 'abc', 'abcd', 'ünïcødé.txt', '.']) {
      const ev = one({ mask: EventBit.CREATE, records: [{ type: 'dfidName', id: dir, name }, { type: 'fid', id: file }] });
      assert.equal(ev.entry?.name, name);
      assert.equal(ev.entry.dir.key, keyOf(dir));
      assert.equal(ev.fid?.key, keyOf(file));
    }
  });

  test('oldDfidName + newDfidName', () => {
    const ev = one({
      mask: EventBit.RENAME | EventBit.ONDIR,
      records: [
        { type: 'oldDfidName', id: dir, name: 'from' },
        { type: 'newDfidName', id: dir2, name: 'to' },
        { type: 'fid', id: file },
      ],
    });
    assert.ok(ev.type === 'rename');
    assert.equal(ev.isDir, true);
    assert.equal(ev.from?.name, 'from');
    assert.equal(ev.from.dir.key, keyOf(dir));
    assert.equal(ev.to?.name, 'to');
    assert.equal(ev.to.dir.key, keyOf(dir2));
  });

  test('pidfd', () => {
    for (const pidfd of [0, 17, -1, -2]) {
      assert.equal(one({ mask: EventBit.OPEN, fd: 3, records: [{ type: 'pidfd', pidfd }] }).pidfd, pidfd);
    }
  });

  test('error', () => {
    const ev = one({ mask: EventBit.FS_ERROR, records: [{ type: 'error', error: 117, count: 4 }, { type: 'fid', id: file }] });
    assert.ok(ev.type === 'fsError');
    assert.equal(ev.error, 117);
    assert.equal(ev.errorCount, 4);
  });

  test('range', () => {
    const ev = one({ mask: EventBit.PRE_ACCESS, fd: 8, records: [{ type: 'range', offset: 5 * 2 ** 32 + 4096, count: 8192 }] });
    assert.ok(ev.type === 'preAccess');
    assert.deepEqual(ev.range, { offset: 5 * 2 ** 32 + 4096, count: 8192 });
  });

  test('mnt: a 16-byte record with the id at byte 8', () => {
    const mntId = 2 ** 32 * 7 + 0x80000001;
    const bytes = encodeEvent({ mask: EventBit.MNT_ATTACH, records: [{ type: 'mnt', mntId }] });
    assert.equal(bytes.length, 24 + 16);
    assert.equal(bytes.readUInt16LE(24 + 2), 16);
    assert.equal(bytes.readUInt32LE(24 + 4), 0, 'padding after the header');
    assert.equal(bytes.readBigUInt64LE(24 + 8), BigInt(mntId));
    assert.equal(one({ mask: EventBit.MNT_DETACH, records: [{ type: 'mnt', mntId }] }).mntId, mntId);
  });

  test('raw (unknown type) is skipped, the records around it decode', () => {
    const ev = one({
      mask: EventBit.DELETE,
      records: [
        { type: 'raw', infoType: 99, body: Buffer.from('0102030405') },
        { type: 'dfidName', id: dir, name: 'gone' },
        { type: 'raw', infoType: 250, body: Buffer.alloc(0) },
      ],
    });
    assert.equal(ev.entry?.name, 'gone');
  });

  test('encodeBatch concatenates events that decode in order', () => {
    const specs: EventSpec[] = [
      { mask: EventBit.OPEN_PERM, fd: 10, pid: 1 },
      { mask: EventBit.Q_OVERFLOW },
      { mask: EventBit.CREATE | EventBit.MODIFY, pid: 3, records: [{ type: 'dfidName', id: dir, name: 'x' }] },
    ];
    const events = decodeBatch(encodeBatch(specs));
    assert.deepEqual(
      events.map((e) => [e.type, e.mask, e.fd, e.pid]),
      specs.map((s, i) => [['openPerm', 'overflow', 'create'][i], s.mask, s.fd ?? -1, s.pid ?? 0]),
    );
    assert.deepEqual(decodeBatch(encodeBatch([])), []);
  });
});
