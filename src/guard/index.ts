/**
 * guard: permission events answered by policy, handlers, workers and scanners, on time, once.
 * @packageDocumentation
 */
import { readFile } from 'node:fs/promises';
import { parsePolicy, PolicyError, type Policy } from './policy.js';

export { Guard, type GuardOptions, type DecisionRecord } from './guard.js';
export {
  parsePolicy,
  policyFrom,
  CompiledPolicy,
  PolicyError,
  type Policy,
  type PolicyInput,
  type Rule,
  type RuleVerdict,
  type AccessContext,
  type AccessKind,
} from './policy.js';
export { WorkerPool, type HandlerDecision } from './workers.js';
export { GuardMetrics, LATENCY_BUCKETS_MS } from './metrics.js';

/**
 * Read and validate a policy file (YAML or JSON). Asynchronous on purpose: a guard re-reading its
 * policy must never block the thread that answers permission events.
 * @throws PolicyError naming file:line:column and the field.
 */
export async function loadPolicy(file: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new PolicyError(`${file}: cannot read the policy: ${(err as Error).message}`);
  }
  return parsePolicy(text, file);
}
