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
  /**
   * Creates made from a rename onto a path that may have held something before the window: the
   * rename replaced it. Renamed away again, such a path must be reported deleted, not forgotten.
   */
  readonly #mayReplace = new Set<WatchEvent>();

  /** @param coalesce - false: keep every change, in order (the batcher only collects). */
  constructor(readonly coalesce = true) {}

  /** Number of pending events (before coalescing removes any). */
  get size(): number {
    return this.#slots.length;
  }

  add(ev: WatchEvent): void {
    if (!this.coalesce) {
      this.#slots.push(ev);
      return;
    }
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
    const replaced = this.#mayReplace.delete(prev);
    let next: 'create' | 'update' | 'delete' | undefined;
    if (ev.type === 'create') next = was === 'delete' ? 'update' : was === 'create' ? 'create' : 'update';
    else if (ev.type === 'update') next = was === 'create' ? 'create' : was === 'delete' ? 'update' : 'update';
    else next = was === 'create' && !replaced ? undefined : 'delete';
    if (next === undefined) {
      this.#slots[at] = undefined;
      this.#byPath.delete(ev.path);
    } else {
      // Only metadata changed if every update coalesced into this one says so.
      const attribOnly = next === 'update' && was === 'update' && prev.attribOnly === true && ev.type === 'update' && ev.attribOnly === true;
      // The object now there is the newest event's; an update without an id is of the same one.
      const fileId = next === 'delete' ? undefined : (ev.fileId ?? (ev.type === 'update' && 'fileId' in prev ? prev.fileId : undefined));
      let slot: WatchEvent = attribOnly
        ? { type: next, path: ev.path, isDir: ev.isDir, time: prev.time, attribOnly }
        : { type: next, path: ev.path, isDir: ev.isDir, time: prev.time };
      if (fileId !== undefined) slot = { ...slot, fileId };
      this.#slots[at] = slot;
      if (replaced && next === 'create') this.#mayReplace.add(slot);
    }
  }

  #addRename(ev: WatchEvent & { type: 'rename' }): void {
    const at = this.#byPath.get(ev.oldPath);
    const prev = at === undefined ? undefined : this.#slots[at];
    if (at !== undefined && prev?.type === 'create') {
      // Created and renamed within the window: to the reader it is a create of the new path,
      // and so is everything reported below it so far (a directory's contents move with it).
      const target = this.#byPath.get(ev.path);
      const targetSlot = target === undefined ? undefined : this.#slots[target];
      const targetWasNew = targetSlot?.type === 'create' && !this.#mayReplace.has(targetSlot);
      const fileId = ev.fileId ?? prev.fileId;
      const created: WatchEvent =
        fileId === undefined ? { type: 'create', path: ev.path, isDir: ev.isDir, time: prev.time } : { type: 'create', path: ev.path, isDir: ev.isDir, time: prev.time, fileId };
      if (this.#mayReplace.has(prev)) {
        // What the earlier rename replaced at the old path is gone now.
        this.#mayReplace.delete(prev);
        this.#slots[at] = { type: 'delete', path: ev.oldPath, isDir: prev.isDir, time: prev.time };
      } else {
        this.#byPath.delete(ev.oldPath);
        this.#slots[at] = undefined;
      }
      if (target !== undefined) {
        this.#slots[target] = undefined;
        if (targetSlot) this.#mayReplace.delete(targetSlot);
        this.#byPath.delete(ev.path);
      }
      if (target !== undefined || this.#slots[at]?.type === 'delete') {
        this.#byPath.set(ev.path, this.#slots.push(created) - 1);
      } else {
        // Keep its place, so a directory still comes before its contents.
        this.#slots[at] = created;
        this.#byPath.set(ev.path, at);
      }
      if (!targetWasNew) this.#mayReplace.add(created);
      if (ev.isDir) this.#moveBelow(ev.oldPath, ev.path);
      return;
    }
    // Later changes of either path start a new slot after the rename.
    this.#byPath.delete(ev.oldPath);
    this.#byPath.delete(ev.path);
    this.#slots.push(ev);
  }

  /** Pending changes below directory `from` now live below `to`. */
  #moveBelow(from: string, to: string): void {
    const prefix = `${from}/`;
    for (const [path, at] of [...this.#byPath]) {
      if (!path.startsWith(prefix)) continue;
      const slot = this.#slots[at];
      if (!slot || slot.type === 'rename') continue;
      const moved = to + path.slice(from.length);
      this.#byPath.delete(path);
      this.#byPath.set(moved, at);
      this.#slots[at] = { ...slot, path: moved };
    }
  }

  /** The coalesced events, and an empty batcher. */
  take(): WatchEvent[] {
    const out = this.#slots.filter((e): e is WatchEvent => e !== undefined);
    this.#slots = [];
    this.#byPath.clear();
    this.#mayReplace.clear();
    return out;
  }
}
