/**
 * What the native reader needs to answer a file's reads of present chunks without JS, and what
 * it records of them: one buffer per file, shared with the reader's access table (referenced
 * there, not copied). Both sides run on the loop thread.
 *
 * Layout (native/fanotify.c, "access table"): six float64 fields, then one bit per chunk.
 * @packageDocumentation
 */

/** Header fields, in float64 slots. */
const LAST_ACCESS = 0;
const LAST_CHUNK = 1;
const STREAK_START = 2;
const FROM_START = 3;
const FROM_START_END = 4;
const BLOCKED = 5;
const HEADER_SLOTS = 6;

/**
 * A file's read-tracking state and the chunks a read may be allowed for at once. The reader
 * updates the tracking fields for the reads it answers, by the rules {@link Hydrator.access}
 * applies to the others, so read-ahead and LRU see every read.
 */
export class AccessState {
  /** The buffer given to the access table. */
  readonly buffer: Buffer;
  readonly #f: Float64Array;
  readonly #bits: Uint8Array;

  constructor(chunks: number) {
    const bytes = HEADER_SLOTS * 8 + Math.ceil(chunks / 8);
    // Its own ArrayBuffer: aligned for the float64 view, never a slice of Buffer's pool.
    const ab = new ArrayBuffer(Math.ceil(bytes / 8) * 8);
    this.buffer = Buffer.from(ab, 0, bytes);
    this.#f = new Float64Array(ab, 0, HEADER_SLOTS);
    this.#bits = new Uint8Array(ab, HEADER_SLOTS * 8);
    this.lastChunk = -1;
  }

  /** ms since the epoch of the last read seen (by JS or the reader). */
  get lastAccess(): number {
    return this.#f[LAST_ACCESS] as number;
  }
  set lastAccess(v: number) {
    this.#f[LAST_ACCESS] = v;
  }
  /** Last chunk a reader touched, for sequential read-ahead; -1 before any. */
  get lastChunk(): number {
    return this.#f[LAST_CHUNK] as number;
  }
  set lastChunk(v: number) {
    this.#f[LAST_CHUNK] = v;
  }
  /** First chunk of the current sequential streak (the read-ahead window grows with it). */
  get streakStart(): number {
    return this.#f[STREAK_START] as number;
  }
  set streakStart(v: number) {
    this.#f[STREAK_START] = v;
  }
  /** Reads in a row, each starting where the last ended, since one at offset 0; 0 if none. */
  get fromStart(): number {
    return this.#f[FROM_START] as number;
  }
  set fromStart(v: number) {
    this.#f[FROM_START] = v;
  }
  /** Where the last of those reads ended. */
  get fromStartEnd(): number {
    return this.#f[FROM_START_END] as number;
  }
  set fromStartEnd(v: number) {
    this.#f[FROM_START_END] = v;
  }
  /** An eviction is under way: every event of the file goes to JS, and its opens get EBUSY. */
  get blocked(): boolean {
    return this.#f[BLOCKED] !== 0;
  }
  set blocked(v: boolean) {
    this.#f[BLOCKED] = v ? 1 : 0;
  }

  /** Reads of chunk i may be allowed without waiting (it is what JS would allow at once). */
  allow(i: number): void {
    this.#bits[i >> 3] = (this.#bits[i >> 3] ?? 0) | (1 << (i & 7));
  }

  /** Make the bits those of `bitmap` (same layout), e.g. the durable chunks of the range map. */
  copyBits(bitmap: Uint8Array): void {
    this.#bits.set(bitmap.subarray(0, this.#bits.length));
  }

  /** No chunk may be allowed without JS any more (before content is dropped). */
  clear(): void {
    this.#bits.fill(0);
  }
}
