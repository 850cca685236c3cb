/**
 * The inode number inside a file handle, for the filesystems whose handle layout is known, so
 * the id table can tell a reused inode from the kernel's event alone, without an `lstat`.
 * @packageDocumentation
 */
import { FsMagic } from '../kernel/constants.js';

/** Reads the inode number out of a handle of one filesystem; undefined when it cannot. */
export type InodeOfHandle = (handleType: number, handle: Buffer) => number | undefined;

/** A handle and the inode number `lstat` gives for the same object. */
export interface KnownHandle {
  readonly handleType: number;
  readonly handle: Buffer;
  readonly ino: number;
}

// Handle types (linux/exportfs.h) and where each filesystem puts the inode number (fs/*/export.c;
// the u32 fields are in host byte order, little-endian on the machines this runs on: the check
// against the root below turns the reader off anywhere that does not hold).
const FILEID_INO32_GEN = 1;
const FILEID_INO32_GEN_PARENT = 2;
const XFS_FILEID_TYPE_64FLAG = 0x80;
const FILEID_BTRFS_WITHOUT_PARENT = 0x4d;
const FILEID_BTRFS_WITH_PARENT_ROOT = 0x4f;

const u64 = (h: Buffer, at: number): number => h.readUInt32LE(at) + h.readUInt32LE(at + 4) * 2 ** 32;

/** ext4 (generic_encode_ino32_fh): `u32 ino, u32 generation[, parent]`. */
const ext4: InodeOfHandle = (t, h) => ((t === FILEID_INO32_GEN || t === FILEID_INO32_GEN_PARENT) && h.length >= 8 ? h.readUInt32LE(0) : undefined);

/** xfs: as ext4 for 32-bit inode numbers; with the 64-bit flag, `u64 ino, u32 generation[, parent]`. */
const xfs: InodeOfHandle = (t, h) => {
  if (t === FILEID_INO32_GEN || t === FILEID_INO32_GEN_PARENT) return h.length >= 8 ? h.readUInt32LE(0) : undefined;
  if (t === (FILEID_INO32_GEN | XFS_FILEID_TYPE_64FLAG) || t === (FILEID_INO32_GEN_PARENT | XFS_FILEID_TYPE_64FLAG)) return h.length >= 12 ? u64(h, 0) : undefined;
  return undefined;
};

/** tmpfs (shmem_encode_fh): `u32 generation, u64 ino` as two u32s, type 1. */
const tmpfs: InodeOfHandle = (t, h) => (t === FILEID_INO32_GEN && h.length >= 12 ? u64(h, 4) : undefined);

/**
 * btrfs (struct btrfs_fid): `u64 objectid, u64 root_objectid, u32 generation…`. An inode number
 * is an objectid within one subvolume (its own st_dev), so only handles of the root's subvolume
 * are read.
 */
function btrfs(rootSubvolume: number): InodeOfHandle {
  return (t, h) => (t >= FILEID_BTRFS_WITHOUT_PARENT && t <= FILEID_BTRFS_WITH_PARENT_ROOT && h.length >= 20 && u64(h, 8) === rootSubvolume ? u64(h, 0) : undefined);
}

/**
 * The reader for a filesystem of type `fsType` (statfs f_type), or undefined when its layout is
 * unknown or does not give `root`'s inode number for `root`'s handle.
 */
export function inodeReader(fsType: number, root: KnownHandle): InodeOfHandle | undefined {
  let read: InodeOfHandle | undefined;
  if (fsType === FsMagic.EXT4) read = ext4;
  else if (fsType === FsMagic.XFS) read = xfs;
  else if (fsType === FsMagic.TMPFS) read = tmpfs;
  else if (fsType === FsMagic.BTRFS && root.handle.length >= 16) read = btrfs(u64(root.handle, 8));
  return read !== undefined && read(root.handleType, root.handle) === root.ino ? read : undefined;
}
