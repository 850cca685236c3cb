/**
 * Readable event names and their kernel bits.
 * @packageDocumentation
 */
import { EventBit } from './constants.js';

/** Readable names of the event bits, in the order a merged mask is listed. */
export const EVENT_BITS = {
  create: EventBit.CREATE,
  delete: EventBit.DELETE,
  movedFrom: EventBit.MOVED_FROM,
  movedTo: EventBit.MOVED_TO,
  rename: EventBit.RENAME,
  deleteSelf: EventBit.DELETE_SELF,
  moveSelf: EventBit.MOVE_SELF,
  attrib: EventBit.ATTRIB,
  modify: EventBit.MODIFY,
  closeWrite: EventBit.CLOSE_WRITE,
  closeNoWrite: EventBit.CLOSE_NOWRITE,
  open: EventBit.OPEN,
  openExec: EventBit.OPEN_EXEC,
  access: EventBit.ACCESS,
  openPerm: EventBit.OPEN_PERM,
  accessPerm: EventBit.ACCESS_PERM,
  openExecPerm: EventBit.OPEN_EXEC_PERM,
  preAccess: EventBit.PRE_ACCESS,
  overflow: EventBit.Q_OVERFLOW,
  fsError: EventBit.FS_ERROR,
  mountAttach: EventBit.MNT_ATTACH,
  mountDetach: EventBit.MNT_DETACH,
} as const;

/** Any readable event name. */
export type EventName = keyof typeof EVENT_BITS;

/** Names of events that must be answered (a verdict is owed to the kernel). */
export type PermissionEventName = 'openPerm' | 'accessPerm' | 'openExecPerm' | 'preAccess';

/** Names of plain notification events (no verdict, may be merged into one mask). */
export type NotifyEventName = Exclude<
  EventName,
  PermissionEventName | 'rename' | 'overflow' | 'fsError' | 'mountAttach' | 'mountDetach'
>;

const ENTRIES = Object.entries(EVENT_BITS) as [EventName, number][];
const BY_NAME: ReadonlyMap<string, number> = new Map(ENTRIES);

/** True when `name` is a known event name. */
export function isEventName(name: string): name is EventName {
  return BY_NAME.has(name);
}

/**
 * The mask for a list of event names.
 * @throws TypeError naming the unknown event and listing the valid ones.
 */
export function maskOf(names: readonly string[]): number {
  let mask = 0;
  for (const name of names) {
    const bit = BY_NAME.get(name);
    if (bit === undefined) {
      throw new TypeError(`unknown fanotify event "${name}"; valid events: ${[...BY_NAME.keys()].join(', ')}`);
    }
    mask |= bit;
  }
  return mask >>> 0;
}

const namesCache = new Map<number, readonly EventName[]>();

/**
 * The names of every event bit set in `mask`, in {@link EVENT_BITS} order. Flag bits
 * (ONDIR, EVENT_ON_CHILD) are not names and are left out. The result is frozen and shared.
 */
export function namesOf(mask: number): readonly EventName[] {
  const cached = namesCache.get(mask);
  if (cached) return cached;
  const names: EventName[] = [];
  for (const [name, bit] of ENTRIES) if (mask & bit) names.push(name);
  Object.freeze(names);
  // Masks seen in practice are few; bound the cache anyway so fuzzed input can't grow it.
  if (namesCache.size < 4096) namesCache.set(mask, names);
  return names;
}
