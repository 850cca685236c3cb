/**
 * Server-side object ids: a table of the objects of one served root, keyed by what the kernel
 * says an object is (its file handle, which includes the inode's generation), named to clients by
 * an opaque random id plus a generation. Clients never see a handle, and nothing a client sends
 * is ever decoded as one: a client's id is only looked up in this table.
 * @packageDocumentation
 */
import { lstatSync, realpathSync, type Stats } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import type { FileId } from '../kernel/fileid.js';
import { native } from '../native.js';
import { inodeReader, type InodeOfHandle } from './handle-inode.js';
import { isWellFormedId, type ObjectRef, type StatInfo } from './protocol.js';

/**
 * Identity of an inode number: the number itself on the root's filesystem (a small integer: no
 * string per node for the GC to keep), `dev:ino` elsewhere.
 */
export type InodeKey = number | string;

/** What an object is: one incarnation of one inode. */
interface Identity {
  readonly handleKey: string;
  readonly inodeKey: InodeKey;
  readonly isDir: boolean;
}

/** One object the table knows. */
export interface IdNode {
  readonly id: string;
  readonly gen: number;
  /** Identity of this incarnation: the file handle (or, without handles, inode + birth time). */
  handleKey: string | undefined;
  /** Identity of the inode number, kept across reuse so a reused inode bumps the generation. */
  inodeKey: InodeKey | undefined;
  parent: IdNode | undefined;
  name: string;
  isDir: boolean;
  dead: boolean;
  /**
   * A placeholder named a path before its object's own node got there (see {@link IdTable}); once
   * it did, the placeholder's id resolves to that node.
   */
  alias: IdNode | undefined;
  children: Map<string, IdNode> | undefined;
}

/** Why an id cannot be used. */
export type IdError = 'unknown-object' | 'stale-object';

/** The result of resolving a client's id. */
export type Resolved = { ok: true; node: IdNode; path: string; abs: string } | { ok: false; code: IdError; message: string };

/** Bytes of an id (24 hex digits on the wire). */
const ID_BYTES = 12;
/** Random bytes for the next ids: one refill per 512 ids instead of a Buffer per id. */
const idPool = Buffer.alloc(ID_BYTES * 512);
let idAt = idPool.length;

/** A new random id. */
function newId(): string {
  if (idAt === idPool.length) {
    randomFillSync(idPool);
    idAt = 0;
  }
  idAt += ID_BYTES;
  return idPool.toString('hex', idAt - ID_BYTES, idAt);
}

/** Dead nodes kept (so their ids answer "stale", not "unknown") before the oldest are dropped. */
export const MAX_DEAD = 100_000;

/**
 * A table as saved between server runs: the live objects it named, with their identities. Loaded,
 * it is trusted for nothing: every id is checked against the filesystem when a client uses it,
 * like any other.
 */
export interface SavedIds {
  readonly v: 1;
  /** The root's own identity: a table saved for another directory at that path is not loaded. */
  readonly rootHandle: string;
  readonly rootId: string;
  /** Parents before their children. */
  readonly nodes: readonly SavedNode[];
}

/** One saved object: id, generation, path relative to the root, handle key, inode key, isDir. */
export type SavedNode = readonly [id: string, gen: number, path: string, handleKey: string, inodeKey: string, isDir: boolean];

function isSavedNode(n: unknown): n is SavedNode {
  if (!Array.isArray(n) || n.length !== 6) return false;
  const [id, gen, path, handleKey, inodeKey, isDir] = n as unknown[];
  return (
    typeof id === 'string' && isWellFormedId(id) &&
    typeof gen === 'number' && Number.isSafeInteger(gen) && gen >= 1 &&
    typeof path === 'string' && path !== '' && !path.split('/').some((p) => p === '' || p === '.' || p === '..') && !path.includes('\0') &&
    typeof handleKey === 'string' && typeof inodeKey === 'string' && typeof isDir === 'boolean'
  );
}

/** Stat information a client may see: no inode numbers, no device numbers. */
export function statInfo(st: Stats): StatInfo {
  return {
    type: st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other',
    size: st.size,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    nlink: st.nlink,
    mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs,
  };
}

/**
 * The id table of one root. Nodes form a tree of (parent, name) links mirroring the part of the
 * tree that events, lookups and readdirs have named, so a directory rename moves everything below
 * it in O(1) and a delete makes everything below it stale.
 *
 * Events are named against the filesystem as it is when they are processed, which may be ahead
 * of them (a batch can name `new/x` before the rename that made `new`). A path whose object is
 * still known under its old name gets a placeholder node; when the rename moves the real node
 * there, the placeholder merges into it and its id stays valid.
 */
export class IdTable {
  readonly root: IdNode;
  readonly #byId = new Map<string, IdNode>();
  readonly #byInode = new Map<InodeKey, IdNode>();
  /** st_dev of the root: inode keys of objects on it are plain inode numbers. */
  readonly #dev: number;
  /** The root filesystem's fsid (hex), to tell which kernel file ids are of it. */
  readonly #fsid: string | undefined;
  /** Reads inode numbers out of the root filesystem's handles (undefined: its layout is unknown). */
  readonly #inodeOf: InodeOfHandle | undefined;
  /**
   * Dead nodes, oldest first from `#deadNext` once full: a ring, because
   * `Array.shift` on an array this long copies it (≈ 100 µs per delete, measured).
   */
  readonly #dead: IdNode[] = [];
  #deadNext = 0;

  /**
   * @param rootPath - the absolute, real path of the served root
   * @param saved - a table {@link IdTable.save}d by an earlier run (anything else, or a table of
   *   another directory once at this path, is ignored): its objects keep their ids
   */
  constructor(readonly rootPath: string, saved?: unknown) {
    const st = lstatSync(rootPath);
    this.#dev = st.dev;
    let fs: { fsid: string; type: number; handleType: number; handle: Buffer } | undefined;
    try {
      const { fsid, type } = native.fsid(rootPath);
      fs = { fsid: fsid.toString('hex'), type, ...native.nameToHandle(-100, rootPath, 0) };
    } catch {
      // No handles on this filesystem: every identity comes from the filesystem.
    }
    this.#fsid = fs?.fsid;
    this.#inodeOf = fs && inodeReader(fs.type, { handleType: fs.handleType, handle: fs.handle, ino: st.ino });
    const id = this.#identity(rootPath);
    const s = saved as Partial<SavedIds> | undefined;
    const usable = s?.v === 1 && s.rootHandle === id.handleKey && typeof s.rootId === 'string' && isWellFormedId(s.rootId) && Array.isArray(s.nodes);
    this.root = usable ? this.#newNode(undefined, '', true, id, s.rootId) : this.#newNode(undefined, '', true, id);
    if (usable) this.#load(s.nodes as unknown[]);
  }

  /** The live objects with a known identity, for {@link IdTable}'s `saved` in a later run. */
  save(): SavedIds {
    const nodes: SavedNode[] = [];
    const walk = (dir: IdNode, prefix: string): void => {
      for (const [name, n] of dir.children ?? []) {
        if (n.dead || n.handleKey === undefined || n.inodeKey === undefined) continue;
        const path = prefix === '' ? name : `${prefix}/${name}`;
        nodes.push([n.id, n.gen, path, n.handleKey, typeof n.inodeKey === 'number' ? `${this.#dev}:${n.inodeKey}` : n.inodeKey, n.isDir]);
        walk(n, path);
      }
    };
    walk(this.root, '');
    return { v: 1, rootHandle: this.root.handleKey!, rootId: this.root.id, nodes };
  }

  #load(nodes: readonly unknown[]): void {
    const byPath = new Map<string, IdNode>([['', this.root]]);
    const onRoot = `${this.#dev}:`;
    for (const n of nodes) {
      if (!isSavedNode(n)) continue;
      const [id, gen, path, handleKey, savedInode, isDir] = n;
      const inodeKey = savedInode.startsWith(onRoot) ? Number(savedInode.slice(onRoot.length)) : savedInode;
      const cut = path.lastIndexOf('/');
      const parent = byPath.get(cut < 0 ? '' : path.slice(0, cut));
      const name = path.slice(cut + 1);
      if (!parent || this.#byId.has(id) || this.#byInode.has(inodeKey) || parent.children?.has(name)) continue;
      const node = this.#newNode(parent, name, isDir, { handleKey, inodeKey }, id, gen);
      (parent.children ??= new Map()).set(name, node);
      byPath.set(path, node);
    }
  }

  /** Number of ids held (live and dead), for leak checks. */
  get size(): number {
    return this.#byId.size;
  }

  /** True when `id` was issued by this table (for any generation). */
  has(id: string): boolean {
    return this.#byId.has(id);
  }

  /** The wire name of a node. */
  ref(node: IdNode): ObjectRef {
    return { id: node.id, gen: node.gen };
  }

  /** The path of a live node relative to the root, or undefined when it or a parent is dead. */
  pathOf(node: IdNode): string | undefined {
    const parts: string[] = [];
    for (let n: IdNode | undefined = node; n !== this.root; n = n.parent) {
      if (!n || n.dead) return undefined;
      parts.push(n.name);
    }
    return parts.reverse().join('/');
  }

  /** Absolute path of a relative one. */
  abs(rel: string): string {
    return rel === '' ? this.rootPath : `${this.rootPath}/${rel}`;
  }

  /**
   * The node of the object now at `rel`, identified from the filesystem (a reused inode gets a new
   * generation; a name now holding another object gets that object's node). Directories on the way
   * are named too. An object already gone keeps the node its name had (or gets one without an
   * identity, which no id request can resolve).
   */
  at(rel: string, isDir: boolean, fileId?: FileId): { node: IdNode; parent: IdNode } {
    if (rel === '') return { node: this.root, parent: this.root };
    const { parent, parentPath, name } = this.#split(rel);
    return { node: this.#child(parent, name, isDir, parentPath, this.#identityOf(fileId, isDir)), parent };
  }

  /** The object at `rel` was deleted: its node (known or not) becomes dead. */
  deleted(rel: string, isDir: boolean): { node: IdNode; parent: IdNode } {
    const { parent, name } = this.#split(rel);
    const node = parent.children?.get(name) ?? this.#newNode(parent, name, isDir, undefined);
    this.#kill(node);
    return { node, parent };
  }

  /** The object at `from` is now at `to`: one node moves, with everything below it. */
  renamed(from: string, to: string, isDir: boolean, fileId?: FileId): { node: IdNode; oldParent: IdNode; newParent: IdNode } {
    const { parent: oldParent, name: oldName } = this.#split(from);
    const { parent: newParent, name: newName } = this.#split(to);
    const known = oldParent.children?.get(oldName);
    if (known) {
      oldParent.children!.delete(oldName);
      const replaced = newParent.children?.get(newName);
      if (replaced && replaced !== known) {
        if (replaced.handleKey === undefined) this.#merge(replaced, known);
        else this.#kill(replaced);
      }
      known.parent = newParent;
      known.name = newName;
      (newParent.children ??= new Map()).set(newName, known);
    }
    // Confirm (or learn) the identity at the new place.
    const identity = this.#identityOf(fileId, isDir);
    const node = identity ? this.#child(newParent, newName, isDir, undefined, identity) : this.#child(newParent, newName, isDir);
    return { node, oldParent, newParent };
  }

  /** Resolve a client's id to a live node whose object is still the one the id was issued for. */
  resolve(ref: ObjectRef): Resolved {
    let node = this.#byId.get(ref.id);
    if (!node || ref.gen > node.gen) return { ok: false, code: 'unknown-object', message: `no object ${ref.id}/${ref.gen} was issued for this root` };
    if (ref.gen < node.gen) return { ok: false, code: 'stale-object', message: `object ${ref.id}/${ref.gen} was replaced (now generation ${node.gen})` };
    while (node.alias) node = node.alias;
    const path = this.pathOf(node);
    if (path === undefined) return { ok: false, code: 'stale-object', message: `object ${ref.id}/${ref.gen} was deleted` };
    const abs = this.abs(path);
    // A symlink planted in a parent would lead outside the root: the directory must be its own real path.
    const dir = node === this.root ? abs : abs.slice(0, abs.lastIndexOf('/'));
    let same: boolean;
    try {
      if (realpathSync.native(dir) !== dir) same = false;
      else if (node === this.root) same = this.#identity(abs).handleKey === node.handleKey;
      else same = this.#child(node.parent!, node.name, node.isDir) === node && node.handleKey !== undefined;
    } catch {
      same = false;
    }
    if (!same) return { ok: false, code: 'stale-object', message: `object ${ref.id}/${ref.gen} is no longer at ${path === '' ? 'the root' : path}` };
    return { ok: true, node, path, abs };
  }

  /**
   * The child `name` of a resolved directory, identified from the filesystem; undefined when there
   * is none (so names a client guesses never grow the table).
   */
  lookup(dir: IdNode, name: string): IdNode | undefined {
    const path = this.pathOf(dir);
    try {
      if (path === undefined) return undefined;
      lstatSync(this.abs(path === '' ? name : `${path}/${name}`));
    } catch {
      return undefined;
    }
    return this.#child(dir, name, false);
  }

  /** The directory node holding `rel` (named on the way), its path, and the last name of `rel`. */
  #split(rel: string): { parent: IdNode; parentPath: string; name: string } {
    const cut = rel.lastIndexOf('/');
    const parentPath = cut < 0 ? '' : rel.slice(0, cut);
    return { parent: this.#dir(parentPath), parentPath, name: rel.slice(cut + 1) };
  }

  /**
   * Walk to the directory node at `path`, naming missing ones from the filesystem. Every node
   * reached through `children` is attached, so its path is the names walked so far.
   */
  #dir(path: string): IdNode {
    let n = this.root;
    if (path === '') return n;
    let at = 0;
    for (;;) {
      const end = path.indexOf('/', at);
      const name = end < 0 ? path.slice(at) : path.slice(at, end);
      n = n.children?.get(name) ?? this.#child(n, name, true, at === 0 ? '' : path.slice(0, at - 1));
      if (end < 0) return n;
      at = end + 1;
    }
  }

  /**
   * The node of the object at `parent/name`: the one `known` (what the kernel's event said is
   * there), or else the one the filesystem has there now. `path` is the parent's (undefined: the
   * parent or a directory above it is dead).
   */
  #child(parent: IdNode, name: string, isDir: boolean, path = this.pathOf(parent), known?: Identity): IdNode {
    const existing = parent.children?.get(name);
    let identity: Identity | undefined;
    try {
      if (path !== undefined) identity = known ?? this.#identity(this.abs(path === '' ? name : `${path}/${name}`));
    } catch {
      identity = undefined;
    }
    if (!identity) {
      // Gone already: the node stays under its name so the delete that follows names the same id.
      return existing ?? this.#placeholder(parent, name, isDir);
    }
    if (existing && existing.handleKey === identity.handleKey) {
      existing.isDir = identity.isDir;
      return existing;
    }
    const prev = this.#byInode.get(identity.inodeKey);
    const knownElsewhere = prev !== undefined && prev !== existing && prev.handleKey === identity.handleKey && !prev.dead && this.pathOf(prev) !== undefined;
    if (existing && existing.handleKey === undefined) {
      // A placeholder: it takes the identity, unless the object's own node is on its way here.
      if (knownElsewhere) return existing;
      if (prev && prev !== existing) this.#kill(prev);
      existing.handleKey = identity.handleKey;
      existing.inodeKey = identity.inodeKey;
      existing.isDir = identity.isDir;
      this.#byInode.set(identity.inodeKey, existing);
      return existing;
    }
    if (existing) this.#kill(existing);
    if (knownElsewhere) return this.#placeholder(parent, name, identity.isDir);
    let node: IdNode;
    if (prev && prev.handleKey === identity.handleKey) {
      // A dead (deleted or detached) node of this very object: it lives again here.
      if (prev.parent?.children?.get(prev.name) === prev) prev.parent.children.delete(prev.name);
      prev.parent = parent;
      prev.name = name;
      prev.dead = false;
      prev.isDir = identity.isDir;
      node = prev;
    } else if (prev) {
      // The inode was reused by a new object: same id, next generation; the old one is stale.
      this.#kill(prev);
      node = this.#newNode(parent, name, identity.isDir, identity, prev.id, prev.gen + 1);
      // Now only its place among the dead nodes refers to the old node: its strings can go (it
      // would otherwise keep them for MAX_DEAD deletes, for the major GC to mark each time).
      prev.handleKey = prev.inodeKey = undefined;
      prev.name = '';
      prev.parent = undefined;
    } else {
      node = this.#newNode(parent, name, identity.isDir, identity);
    }
    (parent.children ??= new Map()).set(name, node);
    return node;
  }

  /** A node without identity under `parent/name`. */
  #placeholder(parent: IdNode, name: string, isDir: boolean): IdNode {
    const node = this.#newNode(parent, name, isDir, undefined);
    (parent.children ??= new Map()).set(name, node);
    return node;
  }

  /** The placeholder `from` was standing in for `into`: its id and its children go there. */
  #merge(from: IdNode, into: IdNode): void {
    if (from.parent?.children?.get(from.name) === from) from.parent.children.delete(from.name);
    from.alias = into;
    this.#retire(from);
    for (const [name, c] of from.children ?? []) {
      const there = into.children?.get(name);
      if (!there) {
        c.parent = into;
        (into.children ??= new Map()).set(name, c);
      } else if (c.handleKey === undefined) {
        this.#merge(c, there);
      } else if (there.handleKey === undefined) {
        into.children!.set(name, c);
        c.parent = into;
        this.#merge(there, c);
      } else {
        this.#kill(c);
      }
    }
    from.children = undefined;
  }

  /**
   * The identity a kernel file id gives, without a system call: its handle, and the inode number
   * read from it. Undefined when the id is of another filesystem or its layout is not known.
   */
  #identityOf(fileId: FileId | undefined, isDir: boolean): Identity | undefined {
    if (fileId === undefined || this.#inodeOf === undefined || fileId.fsid !== this.#fsid) return undefined;
    const handle = fileId.handle;
    const ino = this.#inodeOf(fileId.handleType, handle);
    return ino === undefined ? undefined : { handleKey: `${fileId.handleType}:${handle.toString('hex')}`, inodeKey: ino, isDir };
  }

  /** The identity of what is at `abs` now, from the filesystem. */
  #identity(abs: string): Identity {
    const st = lstatSync(abs);
    const inodeKey = st.dev === this.#dev ? st.ino : `${st.dev}:${st.ino}`;
    let handleKey: string;
    try {
      const h = native.nameToHandle(-100, abs, 0);
      handleKey = `${h.handleType}:${h.handle.toString('hex')}`;
    } catch {
      // No handles on this filesystem: birth time tells incarnations apart.
      handleKey = `b:${st.ino}:${st.birthtimeMs}:${st.ctimeMs}`;
    }
    return { handleKey, inodeKey, isDir: st.isDirectory() };
  }

  #newNode(
    parent: IdNode | undefined,
    name: string,
    isDir: boolean,
    identity: { handleKey: string; inodeKey: InodeKey } | undefined,
    id = newId(),
    gen = 1,
  ): IdNode {
    const node: IdNode = {
      id,
      gen,
      handleKey: identity?.handleKey,
      inodeKey: identity?.inodeKey,
      parent,
      name,
      isDir,
      dead: false,
      alias: undefined,
      children: undefined,
    };
    this.#byId.set(id, node);
    if (identity) this.#byInode.set(identity.inodeKey, node);
    return node;
  }

  /** Mark a node dead and detach it; drop the oldest dead nodes (and what hung below them). */
  #kill(node: IdNode): void {
    if (node === this.root) return;
    if (node.parent?.children?.get(node.name) === node) node.parent.children.delete(node.name);
    if (node.dead) return;
    node.dead = true;
    // A dead node names nothing (pathOf stops at it), and it is kept for MAX_DEAD deletes: its
    // name (a slice holding the whole path it came from) and its parent can go now.
    node.name = '';
    node.parent = undefined;
    this.#retire(node);
  }

  /** Keep a dead or merged node's id answering "stale"; drop the oldest when MAX_DEAD are kept. */
  #retire(node: IdNode): void {
    if (this.#dead.length < MAX_DEAD) {
      this.#dead.push(node);
      return;
    }
    const old = this.#dead[this.#deadNext]!;
    this.#dead[this.#deadNext] = node;
    this.#deadNext = (this.#deadNext + 1) % MAX_DEAD;
    if (old.dead || old.alias) this.#drop(old);
  }

  #drop(node: IdNode): void {
    if (this.#byId.get(node.id) === node) this.#byId.delete(node.id);
    if (node.inodeKey && this.#byInode.get(node.inodeKey) === node) this.#byInode.delete(node.inodeKey);
    if (node.children) for (const c of node.children.values()) if (!c.dead) this.#drop(c);
    node.children = undefined;
  }
}
