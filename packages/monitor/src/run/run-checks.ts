/**
 * One pass of a set of checks over a discovered kernel: what `pmi check` and `pmi baseline` do, and
 * what `pmi watch` does for its first observation. A check that throws becomes a partial result
 * with the error as a warning: one broken check never hides the others' findings.
 */
import { KernelObjects, type DiscoveredKernel } from '@pmi/kernel';
import type { CheckResult } from '../model.js';
import type { Check, CheckContext, CheckOutcome } from '../checks/types.js';
import { kernelIdentity, type Baseline, BASELINE_FORMAT, BASELINE_VERSION } from '../baseline/baseline.js';

export interface PassResult {
  results: CheckOutcome[];
  /** The baseline this pass would write (every check's state). */
  baseline: Baseline;
}

export function checkContext(d: DiscoveredKernel, signal?: AbortSignal): CheckContext {
  return { d, k: KernelObjects.from(d), mem: d.mem, signal };
}

export async function runCheck(ctx: CheckContext, c: Check, baseline: unknown): Promise<CheckOutcome> {
  const t0 = performance.now();
  try {
    return await c.run(ctx, baseline);
  } catch (e) {
    const r: CheckResult = {
      check: c.id,
      findings: [],
      warnings: [`${c.id}: ${(e as Error).message}`],
      partial: true,
      ms: performance.now() - t0,
    };
    return r;
  }
}

export async function runChecks(
  ctx: CheckContext,
  checks: readonly Check[],
  baseline: Baseline | undefined,
  target: string,
): Promise<PassResult> {
  const results: CheckOutcome[] = [];
  const states: Record<string, unknown> = {};
  for (const c of checks) {
    if (ctx.signal?.aborted) break;
    const r = await runCheck(ctx, c, baseline?.checks[c.id]);
    results.push(r);
    if (r.state !== undefined) states[c.id] = r.state;
  }
  return {
    results,
    baseline: {
      format: BASELINE_FORMAT,
      version: BASELINE_VERSION,
      created: new Date().toISOString(),
      target,
      kernel: kernelIdentity(ctx.d),
      checks: states,
    },
  };
}
