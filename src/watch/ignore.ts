/**
 * Ignore rules: plain paths and picomatch globs relative to a root.
 * @packageDocumentation
 */
import picomatch from 'picomatch';

/** Decides whether a path under a root is ignored. */
export class IgnoreMatcher {
  readonly #prefixes: string[] = [];
  readonly #globs: ((path: string) => boolean)[] = [];

  /**
   * @param root - absolute root without a trailing slash
   * @param patterns - paths or globs relative to the root (absolute paths under the root work too)
   */
  constructor(
    readonly root: string,
    patterns: readonly string[] = [],
  ) {
    for (const raw of patterns) {
      let p = raw.startsWith(`${root}/`) ? raw.slice(root.length + 1) : raw;
      p = p.replace(/^\.\//, '').replace(/\/+$/, '');
      if (p === '' || p === '.') throw new TypeError(`ignore pattern "${raw}" would ignore the whole root ${root}`);
      if (picomatch.scan(p).isGlob) this.#globs.push(picomatch(p, { dot: true }));
      else this.#prefixes.push(p);
    }
  }

  /** True when there are no rules. */
  get empty(): boolean {
    return this.#prefixes.length === 0 && this.#globs.length === 0;
  }

  /**
   * True when `path` (absolute, under the root) is ignored: it matches a rule, or one of its
   * ancestor directories below the root does.
   */
  ignores(path: string): boolean {
    if (this.empty || path.length <= this.root.length) return false;
    const rel = this.root === '/' ? path.slice(1) : path.slice(this.root.length + 1);
    for (const p of this.#prefixes) {
      if (rel === p || (rel.startsWith(p) && rel.charCodeAt(p.length) === 47)) return true;
    }
    if (this.#globs.length === 0) return false;
    // The path itself, then each ancestor: a glob naming a directory covers its contents.
    let candidate = rel;
    for (;;) {
      for (const g of this.#globs) if (g(candidate)) return true;
      const slash = candidate.lastIndexOf('/');
      if (slash < 0) return false;
      candidate = candidate.slice(0, slash);
    }
  }
}
