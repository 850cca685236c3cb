/**
 * The generic scanner interface: what a guard asks about an open file, and the three answers.
 *
 * A scanner gets the file as an open fd (from a fanotify permission event, so reading it raises
 * no further events) plus its path for messages and for scanners that need a path. It never
 * throws and never closes the fd: every failure is a `{ verdict: 'error' }` result, and the
 * caller decides what an error means (allow or deny).
 *
 * @module
 */

/** The file to scan. */
export interface ScanTarget {
  /** An open, readable fd of the file. The scanner must not close it or move its offset. */
  readonly fd: number;
  /** The file's path (for messages, and for scanners that need a path). */
  readonly path: string;
  /** The file's size in bytes, when the caller already knows it. */
  readonly size?: number;
}

/** A scanner's answer. */
export type ScanResult =
  | { readonly verdict: 'clean' }
  | { readonly verdict: 'infected'; readonly signature: string }
  | { readonly verdict: 'error'; readonly error: Error };

/** Something that can scan an open file. */
export interface Scanner {
  /** A short name for logs, e.g. `clamd:/run/clamav/clamd.ctl`. */
  readonly name: string;
  /** Scan the open file. Must never throw: failures are { verdict: 'error' }. Must not close target.fd. */
  scan(target: ScanTarget, signal?: AbortSignal): Promise<ScanResult>;
  /** Release connections and child processes; later scans answer { verdict: 'error' }. */
  close(): Promise<void>;
}

/** The clean result (one shared frozen object). */
export const CLEAN: ScanResult = Object.freeze({ verdict: 'clean' as const });

/** An error result; non-Error values are wrapped in an Error. */
export function errorResult(error: unknown): ScanResult {
  return { verdict: 'error', error: error instanceof Error ? error : new Error(String(error)) };
}

/** True when `value` has the shape of a ScanResult. */
export function isScanResult(value: unknown): value is ScanResult {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as { verdict?: unknown; signature?: unknown; error?: unknown };
  return (
    v.verdict === 'clean' ||
    (v.verdict === 'infected' && typeof v.signature === 'string') ||
    (v.verdict === 'error' && v.error instanceof Error)
  );
}

/**
 * A scanner made from a JS function. Exceptions, rejections and results that are not a
 * ScanResult become `{ verdict: 'error' }` naming the scanner. `close()` does nothing.
 */
export function functionScanner(name: string, fn: (t: ScanTarget) => Promise<ScanResult> | ScanResult): Scanner {
  let closed = false;
  return {
    name,
    async scan(target: ScanTarget, signal?: AbortSignal): Promise<ScanResult> {
      if (closed) return errorResult(new Error(`scanner ${name} is closed`));
      if (signal?.aborted) return errorResult(new Error(`scanner ${name}: scan of ${target.path} aborted`));
      try {
        const result = await fn(target);
        if (!isScanResult(result)) {
          return errorResult(new Error(`scanner ${name} returned an invalid result for ${target.path}: ${describe(result)}`));
        }
        return result;
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        return errorResult(new Error(`scanner ${name} failed on ${target.path}: ${message}`, { cause: err }));
      }
    },
    async close(): Promise<void> {
      closed = true;
    },
  };
}

function describe(value: unknown): string {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.length > 200 ? `${text.slice(0, 200)}…` : text;
  } catch {
    return String(value);
  }
}
