/**
 * The server's id table named from the kernel's file ids (watch's `fileIds`): on each filesystem
 * whose handle layout it reads, an event's id names the object without asking the disk, and names
 * it as the disk would.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { FileId } from '../src/kernel/fileid.js';
import { native } from '../src/native.js';
import { IdTable } from '../src/remote/ids.js';
import { requireRoot, useLoopFs } from './helpers/loopfs.js';

requireRoot();

/** The file id an event about `path` carries (the kernel encodes it as name_to_handle_at does). */
function fileIdOf(path: string): FileId {
  const h = native.nameToHandle(-100, path, 0);
  return FileId.from(native.fsid(path).fsid, h.handleType, h.handle);
}

for (const fstype of ['ext4', 'xfs', 'btrfs', 'tmpfs'] as const) {
  describe(`id table from file ids on ${fstype}`, { timeout: 60_000 }, () => {
    const loop = useLoopFs({ fstype, sizeMiB: 300 });

    test('an event\'s file id names the object with no disk access, and as the disk would', () => {
      const root = `${loop.fs.dir}/ids`;
      fs.mkdirSync(`${root}/d`, { recursive: true });
      const table = new IdTable(root);
      // Named from the file id after the file is gone: only the id can have said what it was.
      fs.writeFileSync(`${root}/d/gone`, '');
      const gone = fileIdOf(`${root}/d/gone`);
      const ino = fs.lstatSync(`${root}/d/gone`).ino;
      fs.unlinkSync(`${root}/d/gone`);
      const { node } = table.at('d/gone', false, gone);
      assert.deepEqual([node.handleKey, node.inodeKey], [`${gone.handleType}:${gone.handle.toString('hex')}`, ino]);
      // A file that stays: the disk's identity (lookup) finds the very node the id made.
      fs.writeFileSync(`${root}/d/kept`, '');
      const kept = table.at('d/kept', false, fileIdOf(`${root}/d/kept`)).node;
      const d = table.at('d', true).node;
      assert.equal(table.lookup(d, 'kept'), kept);
      // Renamed: the moved object keeps its id, named from the rename's file id.
      fs.renameSync(`${root}/d/kept`, `${root}/moved`);
      assert.equal(table.renamed('d/kept', 'moved', false, fileIdOf(`${root}/moved`)).node, kept);
      const r = table.resolve(table.ref(kept));
      assert.ok(r.ok && r.path === 'moved');
    });

    test('a file id of another filesystem is not read: the disk names the object', () => {
      const root = `${loop.fs.dir}/other`;
      fs.mkdirSync(root);
      const table = new IdTable(root);
      fs.writeFileSync(`${root}/f`, '');
      const real = fileIdOf(`${root}/f`);
      const foreign = FileId.from(Buffer.alloc(8, 0xee), real.handleType, real.handle);
      fs.unlinkSync(`${root}/f`);
      assert.equal(table.at('f', false, foreign).node.handleKey, undefined, 'gone from the disk: no identity');
    });
  });
}

describe('id table from file ids: a reused inode', { timeout: 60_000 }, () => {
  const loop = useLoopFs({ fstype: 'ext4', sizeMiB: 64 });

  test('keeps its id with the next generation when both incarnations are named by their file ids', () => {
    const root = `${loop.fs.dir}/reuse`;
    fs.mkdirSync(root);
    const table = new IdTable(root);
    for (let attempt = 0; attempt < 50; attempt++) {
      fs.writeFileSync(`${root}/a${attempt}`, '');
      const first = table.at(`a${attempt}`, false, fileIdOf(`${root}/a${attempt}`)).node;
      const ino = fs.lstatSync(`${root}/a${attempt}`).ino;
      fs.unlinkSync(`${root}/a${attempt}`);
      table.deleted(`a${attempt}`, false);
      fs.writeFileSync(`${root}/b${attempt}`, '');
      const id = fileIdOf(`${root}/b${attempt}`);
      const reused = fs.lstatSync(`${root}/b${attempt}`).ino === ino;
      fs.unlinkSync(`${root}/b${attempt}`);
      const second = table.at(`b${attempt}`, false, id).node;
      table.deleted(`b${attempt}`, false);
      if (!reused) continue;
      assert.deepEqual([second.id, second.gen], [first.id, first.gen + 1]);
      return;
    }
    assert.fail('ext4 reused no inode within 50 tries');
  });
});
