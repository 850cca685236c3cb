/**
 * A bounded map that forgets the least recently used entry first.
 * @packageDocumentation
 */

/** Map with a size bound; `get` and `set` make an entry the most recent. */
export class LruMap<K, V> {
  readonly #map = new Map<K, V>();

  constructor(readonly max: number) {}

  get size(): number {
    return this.#map.size;
  }

  get(key: K): V | undefined {
    const value = this.#map.get(key);
    if (value !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.max) {
      const oldest = this.#map.keys().next().value as K;
      this.#map.delete(oldest);
    }
  }

  delete(key: K): void {
    this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
  }

  /** Entries, oldest first. Setting an existing key while iterating keeps the order. */
  entries(): IterableIterator<[K, V]> {
    return this.#map.entries();
  }

  /** Replace the value of an existing key without touching its recency. */
  replace(key: K, value: V): void {
    if (this.#map.has(key)) this.#map.set(key, value);
  }
}
