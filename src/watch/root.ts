/**
 * One watched root: turns resolved kernel events into watch events for that root.
 * @packageDocumentation
 */
import { dirname } from 'node:path';
import { EventBit } from '../kernel/constants.js';
import type { DecodedEvent } from '../kernel/events.js';
import type { FileId } from '../kernel/fileid.js';
import { entryExists, isUnder, type ResolvedPaths } from '../resolve/paths.js';
import { crawlSync } from './crawl.js';
import type { IgnoreMatcher } from './ignore.js';
import type { RescanReason, WatchEvent } from './types.js';

/** Where a root's events go. */
export interface RootSink {
  /** A change to batch. */
  change(ev: WatchEvent): void;
  /** The root is gone (deleted, moved, unmounted): report and end the subscription. */
  end(root: string, reason: RescanReason): void;
}

/** What a backend does for a root besides translating events. */
export interface RootHooks {
  /** An ignored directory produced an event: the backend may stop the kernel sending more. */
  ignoredDirectory?(dir: string): void;
  /**
   * A directory appeared under the root (created, moved in, or found inside one that did). A
   * backend with per-directory marks marks it; the root then crawls it for entries that were
   * made before the mark was in place.
   */
  newDirectory?(dir: string): void;
}

const UPDATE_BITS = EventBit.MODIFY | EventBit.CLOSE_WRITE | EventBit.ATTRIB;
/** Update bits that mean the content may have changed (not only metadata). */
const CONTENT_BITS = EventBit.MODIFY | EventBit.CLOSE_WRITE;

/** The id of the object an event is about, for directory self events too (DFID_NAME "."). */
function objectId(ev: DecodedEvent): FileId | undefined {
  if (ev.fid) return ev.fid;
  if (ev.entry?.name === '.') return ev.entry.dir;
  return undefined;
}

/** Event → changes for one root. */
export class RootWatch {
  #ended = false;

  constructor(
    readonly root: string,
    /** The root directory's file id key, to recognise events on the root itself. */
    readonly rootKey: string | undefined,
    readonly ignore: IgnoreMatcher,
    private readonly sink: RootSink,
    private readonly hooks: RootHooks = {},
    /** Give events the kernel's id of their object (see WatchOptions.fileIds). */
    private readonly fileIds = false,
  ) {}

  /** True once the root went away. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Whether a path is inside this root and not ignored. */
  covers(path: string | undefined): path is string {
    return path !== undefined && path !== this.root && isUnder(path, this.root) && !this.ignore.ignores(path);
  }

  #end(reason: RescanReason): void {
    if (this.#ended) return;
    this.#ended = true;
    this.sink.end(this.root, reason);
  }

  /** Feed one event, already resolved. Events must come in kernel order. */
  handle(ev: DecodedEvent, paths: ResolvedPaths, time: number): void {
    if (this.#ended) return;
    const id = objectId(ev);
    if (this.rootKey !== undefined && id?.key === this.rootKey) {
      if (ev.mask & EventBit.DELETE_SELF) this.#end('root-deleted');
      else if (ev.mask & EventBit.MOVE_SELF) this.#end('root-moved');
      return;
    }
    if (ev.type === 'rename') return this.#rename(ev, paths, time);
    const path = paths.path;
    if (path === undefined) return;
    if (path === this.root) {
      if (ev.mask & EventBit.DELETE) this.#end('root-deleted');
      return;
    }
    if (!isUnder(path, this.root)) return;
    if (this.ignore.ignores(path)) {
      this.#ignored(path, ev.isDir);
      return;
    }
    const isDir = ev.isDir;
    const m = ev.mask;
    if (m & EventBit.CREATE && m & EventBit.DELETE) {
      // Merged in the queue, order lost: the file system says how it ended (and what is there
      // may be another object, whose own create comes later: no id).
      if (entryExists(path)) this.#appeared(path, isDir, time, false, undefined);
    } else if (m & EventBit.CREATE) {
      this.#appeared(path, isDir, time, false, ev.fid);
    } else if (m & EventBit.DELETE) {
      this.sink.change({ type: 'delete', path, isDir, time });
    } else if (m & UPDATE_BITS && !(m & (EventBit.DELETE_SELF | EventBit.MOVE_SELF))) {
      if (m & CONTENT_BITS) this.#change({ type: 'update', path, isDir, time }, ev.fid);
      else this.#change({ type: 'update', path, isDir, time, attribOnly: true }, ev.fid);
    }
  }

  /** A change, with the id of its object when asked for ids and the event carried one. */
  #change(change: Exclude<WatchEvent, { type: 'rescan' | 'error' }>, fid: FileId | undefined): void {
    this.sink.change(this.fileIds && fid !== undefined ? { ...change, fileId: fid } : change);
  }

  #ignored(path: string, isDir: boolean): void {
    if (!this.hooks.ignoredDirectory) return;
    if (isDir) this.hooks.ignoredDirectory(path);
    const parent = dirname(path);
    if (parent !== this.root && isUnder(parent, this.root) && this.ignore.ignores(parent)) this.hooks.ignoredDirectory(parent);
  }

  /**
   * Report a new entry. A directory's contents are crawled and reported as creates when they
   * came without events of their own (`crawl`: moved in) or when the backend marks directories
   * one by one (entries made before the mark).
   */
  #appeared(path: string, isDir: boolean, time: number, crawl: boolean, fid: FileId | undefined): void {
    this.#change({ type: 'create', path, isDir, time }, fid);
    if (!isDir || !(crawl || this.hooks.newDirectory)) return;
    this.hooks.newDirectory?.(path);
    crawlSync(
      path,
      (p, d) => {
        this.sink.change({ type: 'create', path: p, isDir: d, time });
        if (d) this.hooks.newDirectory?.(p);
      },
      this.ignore,
    );
  }

  #rename(ev: DecodedEvent, paths: ResolvedPaths, time: number): void {
    const { oldPath, path } = paths;
    if (oldPath === this.root) return this.#end('root-moved');
    const fromIn = this.covers(oldPath);
    const toIn = this.covers(path);
    if (fromIn && toIn) {
      this.#change({ type: 'rename', oldPath, path, isDir: ev.isDir, time }, ev.fid);
      if (paths.movedBack) this.#change({ type: 'rename', oldPath: path, path: oldPath, isDir: ev.isDir, time }, ev.fid);
    } else if (toIn) {
      // Moved in from outside the root: its contents arrived without events of their own.
      this.#appeared(path, ev.isDir, time, true, ev.fid);
    } else if (fromIn) {
      this.sink.change({ type: 'delete', path: oldPath, isDir: ev.isDir, time });
    } else if (path !== undefined && isUnder(path, this.root) && this.ignore.ignores(path)) {
      this.#ignored(path, ev.isDir);
    }
  }
}
