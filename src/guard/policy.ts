/**
 * Guard policies: YAML or JSON rules, validated with errors that name the line and the field.
 * @packageDocumentation
 */
import picomatch from 'picomatch';
import { parseDocument, LineCounter, isNode } from 'yaml';
import { z } from 'zod';
import { DENY_ERRNOS, type DenyErrno } from '../kernel/constants.js';
import { FanotifyError } from '../errors.js';

/** The accesses a guard decides. */
export type AccessKind = 'open' | 'access' | 'exec';

/** What a rule decides. */
export type RuleVerdict = 'allow' | 'deny' | 'audit' | 'scan' | 'ask';

const oneOrMany = <T extends z.ZodType>(t: T) =>
  z.union([t, z.array(t).min(1)]).transform((v): z.output<T>[] => (Array.isArray(v) ? v : [v]));

const errnoNames = Object.keys(DENY_ERRNOS) as [DenyErrno, ...DenyErrno[]];

const MatchSchema = z
  .object({
    path: oneOrMany(z.string().min(1)).optional(),
    event: oneOrMany(z.enum(['open', 'access', 'exec'])).optional(),
    uid: oneOrMany(z.number().int().nonnegative()).optional(),
    gid: oneOrMany(z.number().int().nonnegative()).optional(),
    comm: oneOrMany(z.string().min(1)).optional(),
    exe: oneOrMany(z.string().min(1)).optional(),
    parent: oneOrMany(z.string().min(1)).optional(),
  })
  .strict();

const RuleSchema = z
  .object({
    name: z.string().min(1).optional(),
    match: MatchSchema.default({}),
    verdict: z.enum(['allow', 'deny', 'audit', 'scan', 'ask']),
    errno: z.enum(errnoNames).optional(),
    cache: z.boolean().optional(),
  })
  .strict()
  .refine((r) => r.errno === undefined || r.verdict === 'deny', {
    message: 'errno is only valid with verdict: deny',
    path: ['errno'],
  });

const PolicySchema = z
  .object({
    version: z.literal(1).default(1),
    default: z.enum(['allow', 'deny']).default('allow'),
    onError: z.enum(['allow', 'deny']).default('allow'),
    timeoutMs: z.number().int().positive().max(600_000).default(2000),
    events: oneOrMany(z.enum(['open', 'access', 'exec'])).default(['open', 'exec']),
    rules: z.array(RuleSchema).default([]),
  })
  .strict();

/** A validated rule. */
export type Rule = z.output<typeof RuleSchema>;
/** A validated policy. */
export type Policy = z.output<typeof PolicySchema>;
/** A policy as written (before defaults). */
export type PolicyInput = z.input<typeof PolicySchema>;

/** A policy file that failed to parse or validate. */
export class PolicyError extends FanotifyError {
  constructor(
    message: string,
    /** 1-based line of the offending field, when known. */
    readonly line?: number,
  ) {
    super(message, 'EPOLICY');
  }
}

/**
 * Parse and validate a policy from YAML or JSON text (JSON is YAML).
 * @param source - a name for messages, usually the file path
 * @throws PolicyError naming `source:line:column`, the field path and the problem.
 */
export function parsePolicy(text: string, source = 'policy'): Policy {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = lines.linePos(e.pos[0]);
    throw new PolicyError(`${source}:${pos.line}:${pos.col}: ${e.message.split('\n')[0]}`, pos.line);
  }
  const result = PolicySchema.safeParse(doc.toJS() ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  // Point at the deepest node of the path that exists in the document.
  let at: { line: number; col: number } | undefined;
  for (let n = issue.path.length; n >= 0 && !at; n--) {
    const node = doc.getIn(issue.path.slice(0, n) as (string | number)[], true);
    if (isNode(node) && node.range) at = lines.linePos(node.range[0]);
  }
  const field = issue.path.length > 0 ? issue.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') : '(top level)';
  const where = at ? `${source}:${at.line}:${at.col}` : source;
  throw new PolicyError(`${where}: ${field}: ${issue.message}`, at?.line);
}

/** Validate a policy given as an object (the programmatic form). */
export function policyFrom(input: PolicyInput): Policy {
  const result = PolicySchema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  throw new PolicyError(`policy: ${issue.path.map(String).join('.') || '(top level)'}: ${issue.message}`);
}

/** Who is accessing what, as a rule sees it. */
export interface AccessContext {
  readonly path: string;
  readonly event: AccessKind;
  readonly pid: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly comm?: string;
  readonly exe?: string;
  /** The parent process's comm. */
  readonly parent?: string;
}

/** A policy compiled for fast matching. */
export class CompiledPolicy {
  readonly #rules: ({ rule: Rule; index: number } & CompiledMatch)[];

  /** True when some rule looks at the accessing process (uid, gid, comm, exe, parent). */
  readonly byProcess: boolean;

  /** Some rule matches on the path: every decision needs it. */
  readonly byPath: boolean;

  constructor(readonly policy: Policy) {
    this.#rules = policy.rules.map((rule, index) => ({ rule, index, ...compileMatch(rule.match) }));
    this.byProcess = this.#rules.some((r) => r.byProcess);
    this.byPath = policy.rules.some((r) => r.match.path !== undefined);
  }


  /** True when some rule denies with an errno other than EPERM (that needs a pre-content group). */
  get needsErrno(): boolean {
    return this.policy.rules.some((r) => r.errno !== undefined && r.errno !== 'EPERM');
  }

  /** The first matching rule (with its index), or undefined: the policy default applies. */
  decide(c: AccessContext): { rule: Rule; index: number } | undefined {
    for (const r of this.#rules) if (r.test(c)) return r;
    return undefined;
  }

  /**
   * Whether the decision for this file and access kind holds for every process, so the kernel may
   * answer later accesses itself: no rule up to the deciding one (all rules when the default
   * decided) that matches the file and kind depends on who accesses it.
   */
  cacheable(c: AccessContext, decidedIndex: number | undefined): boolean {
    const end = decidedIndex ?? this.#rules.length - 1;
    for (let i = 0; i <= end; i++) {
      const r = this.#rules[i]!;
      if (r.byProcess && r.testObject(c)) return false;
    }
    return true;
  }
}

/** A rule's match, compiled. */
interface CompiledMatch {
  /** The whole match. */
  readonly test: (c: AccessContext) => boolean;
  /** Only the file and access-kind conditions. */
  readonly testObject: (c: AccessContext) => boolean;
  /** The rule has conditions on the accessing process (uid, gid, comm, exe, parent). */
  readonly byProcess: boolean;
}

function compileMatch(m: Rule['match']): CompiledMatch {
  const objectTests: ((c: AccessContext) => boolean)[] = [];
  if (m.path) {
    const isMatch = picomatch(m.path, { dot: true });
    objectTests.push((c) => isMatch(c.path));
  }
  if (m.event) {
    const set = new Set(m.event);
    objectTests.push((c) => set.has(c.event));
  }
  const tests = [...objectTests];
  if (m.exe) {
    const isMatch = picomatch(m.exe, { dot: true });
    tests.push((c) => c.exe !== undefined && isMatch(c.exe));
  }
  if (m.uid) {
    const set = new Set(m.uid);
    tests.push((c) => c.uid !== undefined && set.has(c.uid));
  }
  if (m.gid) {
    const set = new Set(m.gid);
    tests.push((c) => c.gid !== undefined && set.has(c.gid));
  }
  if (m.comm) {
    const set = new Set(m.comm);
    tests.push((c) => c.comm !== undefined && set.has(c.comm));
  }
  if (m.parent) {
    const set = new Set(m.parent);
    tests.push((c) => c.parent !== undefined && set.has(c.parent));
  }
  return {
    test: (c) => tests.every((t) => t(c)),
    testObject: (c) => objectTests.every((t) => t(c)),
    byProcess: tests.length > objectTests.length,
  };
}
