/**
 * Coalescing of changes within one batching window.
 * @packageDocumentation
 */
import type { WatchEvent } from './types.js';

/**
 * Collects changes and coalesces create/update/delete per path, keeping first-seen order:
 * create+update → create, create+delete → nothing, delete+create → update, update+delete →
 * delete. Renames, rescans and errors keep their place; a rename of something created in the
 * same window becomes a create of the new path.
 */
export class Batcher {
  #slots: (WatchEvent | undefined)[] = [];
  /** path → index in #slots of its pending create/update/delete. */
  #byPath = new Map<string, number>();

  /** Number of pending events (before coalescing removes any). */
  get size(): number {
    return this.#slots.length;
  }

  add(ev: WatchEvent): void {
    switch (ev.type) {
      case 'create':
      case 'update':
      case 'delete':
        this.#addPlain(ev);
        break;
      case 'rename':
        this.#addRename(ev);
        break;
      default:
        this.#slots.push(ev);
    }
  }

  #addPlain(ev: WatchEvent & { type: 'create' | 'update' | 'delete' }): void {
    const at = this.#byPath.get(ev.path);
    const prev = at === undefined ? undefined : this.#slots[at];
    if (at === undefined || !prev || prev.type === 'rename') {
      this.#byPath.set(ev.path, this.#slots.push(ev) - 1);
      return;
    }
    const was = prev.type;
    let next: 'create' | 'update' | 'delete' | undefined;
    if (ev.type === 'create') next = was === 'delete' ? 'update' : was === 'create' ? 'create' : 'update';
    else if (ev.type === 'update') next = was === 'create' ? 'create' : was === 'delete' ? 'update' : 'update';
    else next = was === 'create' ? undefined : 'delete';
    if (next === undefined) {
      this.#slots[at] = undefined;
      this.#byPath.delete(ev.path);
    } else {
      this.#slots[at] = { type: next, path: ev.path, isDir: ev.isDir, time: prev.time };
    }
  }

  #addRename(ev: WatchEvent & { type: 'rename' }): void {
    const at = this.#byPath.get(ev.oldPath);
    const prev = at === undefined ? undefined : this.#slots[at];
    if (at !== undefined && prev?.type === 'create') {
      // Created and renamed within the window: to the reader it is a create of the new path.
      this.#slots[at] = undefined;
      this.#byPath.delete(ev.oldPath);
      this.#addPlain({ type: 'create', path: ev.path, isDir: ev.isDir, time: prev.time });
      return;
    }
    // Later changes of either path start a new slot after the rename.
    this.#byPath.delete(ev.oldPath);
    this.#byPath.delete(ev.path);
    this.#slots.push(ev);
  }

  /** The coalesced events, and an empty batcher. */
  take(): WatchEvent[] {
    const out = this.#slots.filter((e): e is WatchEvent => e !== undefined);
    this.#slots = [];
    this.#byPath.clear();
    return out;
  }
}
