/**
 * Journal cursors: opaque strings naming a journal instance, a root and a position.
 * @packageDocumentation
 */
import { createHash } from 'node:crypto';

const PREFIX = 'fj1';
const PATTERN = /^fj1:([0-9a-f]{32}):([0-9a-f]{16}):(0|[1-9][0-9]{0,15})$/;

/** What a cursor names. */
export interface CursorParts {
  /** The journal instance (a random id made with the store), 32 hex digits. */
  readonly instance: string;
  /** A hash of the root path, 16 hex digits. */
  readonly rootTag: string;
  /** The last change sequence number the holder has seen. */
  readonly seq: number;
}

/** A short, stable tag of a root path. */
export function rootTag(root: string): string {
  return createHash('sha256').update(root).digest('hex').slice(0, 16);
}

/** Make a cursor string. */
export function formatCursor(parts: CursorParts): string {
  return `${PREFIX}:${parts.instance}:${parts.rootTag}:${parts.seq}`;
}

/** Parse a cursor, or undefined when it is not one of ours (malformed). */
export function parseCursor(text: unknown): CursorParts | undefined {
  if (typeof text !== 'string') return undefined;
  const m = PATTERN.exec(text.trim());
  if (!m) return undefined;
  const seq = Number(m[3]);
  if (!Number.isSafeInteger(seq)) return undefined;
  return { instance: m[1]!, rootTag: m[2]!, seq };
}
