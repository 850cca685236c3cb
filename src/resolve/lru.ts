/**
 * A bounded map that forgets the least recently used entries first (approximately).
 * @packageDocumentation
 */

/**
 * Map with a size bound, kept as two generations: entries are set in the young one; a hit in the
 * old one moves the entry back to the young one; when the young one is full, the old one is
 * dropped and the young one becomes old. A hit in the young generation costs one `Map.get`
 * (a strict LRU pays a delete and a set per hit, on the hottest path of every service). Between
 * `max / 2` and `max` entries are kept.
 *
 * Setting a key costs one `Map.set` too: an older value of the key in the old generation is not
 * deleted but shadowed (every read looks in the young generation first) and goes when that
 * generation is dropped.
 */
export class LruMap<K, V> {
  #young = new Map<K, V>();
  #old = new Map<K, V>();
  readonly #half: number;

  constructor(readonly max: number) {
    this.#half = Math.max(1, Math.floor(max / 2));
  }

  /** Entries held; a key set again while its older value is shadowed counts twice. */
  get size(): number {
    return this.#young.size + this.#old.size;
  }

  get(key: K): V | undefined {
    const young = this.#young.get(key);
    if (young !== undefined) return young;
    const old = this.#old.get(key);
    if (old !== undefined) {
      this.#old.delete(key);
      this.#insert(key, old);
    }
    return old;
  }

  set(key: K, value: V): void {
    this.#insert(key, value);
  }

  #insert(key: K, value: V): void {
    if (this.#young.size >= this.#half && !this.#young.has(key)) {
      this.#old = this.#young;
      this.#young = new Map();
    }
    this.#young.set(key, value);
  }

  delete(key: K): void {
    this.#young.delete(key);
    this.#old.delete(key);
  }

  clear(): void {
    this.#young.clear();
    this.#old.clear();
  }

  /** Every entry, older generation first. Safe to delete or `replace` while iterating. */
  *entries(): IterableIterator<[K, V]> {
    const young = this.#young;
    // Not the shadowed values: their keys are in the young generation.
    yield* [...this.#old.entries()].filter(([key]) => !young.has(key));
    yield* [...young.entries()];
  }

  /** Replace the value of an existing key without touching its recency. */
  replace(key: K, value: V): void {
    if (this.#young.has(key)) this.#young.set(key, value);
    else if (this.#old.has(key)) this.#old.set(key, value);
  }
}
