/**
 * File identifiers carried by FID info records.
 * @packageDocumentation
 */

const FSID_LEN = 8;
/** Bytes of `handle_bytes u32, handle_type s32` before the handle itself. */
const HANDLE_HEADER_LEN = 8;

/**
 * A kernel file identifier: the filesystem id plus an opaque file handle that
 * `open_by_handle_at(2)` accepts on a mount of that filesystem.
 *
 * It views the read() batch it was decoded from instead of copying, and computes its
 * string forms only when asked, because most events are filtered before anyone needs them.
 */
export class FileId {
  #fsid: string | undefined;
  #key: string | undefined;

  /**
   * @param bytes - buffer holding `fsid, handle_bytes, handle_type, f_handle` at `start`
   * @param start - offset of the fsid
   * @param handleType - the handle's `handle_type`
   * @param handleLength - the handle's `handle_bytes`
   */
  constructor(
    private readonly bytes: Buffer,
    private readonly start: number,
    readonly handleType: number,
    readonly handleLength: number,
  ) {}

  /** Build an id from its parts (an fsid of 8 bytes as from `statfs`, and handle bytes). */
  static from(fsid: Buffer, handleType: number, handle: Buffer): FileId {
    if (fsid.length !== FSID_LEN) throw new RangeError(`fsid must be ${FSID_LEN} bytes, got ${fsid.length}`);
    const bytes = Buffer.alloc(FSID_LEN + HANDLE_HEADER_LEN + handle.length);
    fsid.copy(bytes, 0);
    bytes.writeUInt32LE(handle.length, FSID_LEN);
    bytes.writeInt32LE(handleType, FSID_LEN + 4);
    handle.copy(bytes, FSID_LEN + HANDLE_HEADER_LEN);
    return new FileId(bytes, 0, handleType, handle.length);
  }

  /** The filesystem id as 16 hex digits, in the byte order of the record (as `statfs` lays it out). */
  get fsid(): string {
    return (this.#fsid ??= this.bytes.toString('hex', this.start, this.start + FSID_LEN));
  }

  /** The raw fsid bytes. */
  get fsidBytes(): Buffer {
    return this.bytes.subarray(this.start, this.start + FSID_LEN);
  }

  /** The `f_handle` bytes (a view, not a copy). */
  get handle(): Buffer {
    const from = this.start + FSID_LEN + HANDLE_HEADER_LEN;
    return this.bytes.subarray(from, from + this.handleLength);
  }

  /** A string that is equal for two ids exactly when they name the same object. */
  get key(): string {
    return (this.#key ??= this.bytes.toString(
      'hex',
      this.start,
      this.start + FSID_LEN + HANDLE_HEADER_LEN + this.handleLength,
    ));
  }

  /** JSON form: the key. */
  toJSON(): string {
    return this.key;
  }
}
