/**
 * Guard metrics: counters per answer and rule, a latency histogram, cache counters.
 * @packageDocumentation
 */
import type { DecisionRecord } from './guard.js';

/** Upper bounds of the latency buckets, in ms (the last bucket is everything above). */
export const LATENCY_BUCKETS_MS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500] as const;

/** Counters of a running guard. */
export class GuardMetrics {
  /** Decisions made in userspace (cached accesses never reach us). */
  decisions = 0;
  readonly byAnswer = { allow: 0, deny: 0 };
  readonly byDecision: Record<string, number> = {};
  readonly byRule: Record<string, number> = {};
  /** Accesses on a marked mount but outside the guarded paths (allowed and cached). */
  outside = 0;
  /** Ignore marks placed: each one lets the kernel answer a file's later accesses. */
  cacheInserts = 0;
  cacheFlushes = 0;
  /**
   * Clean scans not cached because a write may have slipped past the scan: the file was open for
   * writing when it was scanned, or changed before its ignore mark was on.
   */
  cacheRefused = 0;
  /** Events the group answered first because the deadline passed. */
  late = 0;
  /** Scan or handler failures answered with the error verdict. */
  failures = 0;
  /** Read or response errors. */
  errors = 0;
  /** Counts per latency bucket; index i counts latencies ≤ LATENCY_BUCKETS_MS[i], the last one the rest. */
  readonly latency: number[] = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);

  /** Count one decision (cheap enough for every event: no record object needed). */
  record(answer: 'allow' | 'deny', decision: DecisionRecord['decision'], rule: string, latencyMs: number, late: boolean, failed: boolean): void {
    this.decisions++;
    this.byAnswer[answer]++;
    this.byDecision[decision] = (this.byDecision[decision] ?? 0) + 1;
    this.byRule[rule] = (this.byRule[rule] ?? 0) + 1;
    if (late) this.late++;
    if (failed) this.failures++;
    let i = 0;
    while (i < LATENCY_BUCKETS_MS.length && latencyMs > LATENCY_BUCKETS_MS[i]!) i++;
    this.latency[i]!++;
  }

  /**
   * The share of decided files whose later accesses the kernel answers itself: cache inserts
   * over userspace decisions. (Cached accesses never reach userspace, so they cannot be counted
   * directly; a file decided again after a modification counts once more.)
   */
  get cacheRatio(): number {
    const seen = this.decisions + this.outside;
    return seen === 0 ? 0 : this.cacheInserts / seen;
  }

  /** A plain object for JSON. */
  toJSON(): Record<string, unknown> {
    return {
      decisions: this.decisions,
      byAnswer: this.byAnswer,
      byDecision: this.byDecision,
      byRule: this.byRule,
      outside: this.outside,
      cacheInserts: this.cacheInserts,
      cacheFlushes: this.cacheFlushes,
      cacheRefused: this.cacheRefused,
      cacheRatio: this.cacheRatio,
      late: this.late,
      failures: this.failures,
      errors: this.errors,
      latencyBucketsMs: [...LATENCY_BUCKETS_MS, '+Inf'],
      latency: this.latency,
    };
  }
}
