/**
 * hooks: the callbacks a rootkit can register (or forge) to intercept the kernel without touching
 * the syscall table — ftrace ops, kprobes, netfilter hooks, keyboard/vt and other notifier chains,
 * LSM hooks — each enumerated and its target classified: core kernel text, a loaded module's text,
 * or anywhere else (heap, vmalloc, module space no listed module owns, kernel data), which no
 * legitimate hook points at. Rules per kind and the baseline's role: docs/monitor-hooks.md.
 *
 * The pieces: `enumerateHooks` (hooks/enumerate.ts) reads, `judgeHook` / `diffHooks`
 * (hooks/classify.ts) decide — pure functions over plain records.
 */
import { isPmiError } from '@pmi/core';
import type { Finding } from '../model.js';
import type { Check, CheckOutcome } from './types.js';
import {
  diffHooks,
  HOOKS,
  isHooksState,
  judgeHook,
  stateEntry,
  type HooksState,
  type HookStateEntry,
} from './hooks/classify.js';
import { enumerateHooks } from './hooks/enumerate.js';

export {
  HOOKS,
  HOOK_LOCATION_TEXT,
  NOTIFIER_MODULE_RULE,
  judgeHook,
  diffHooks,
  hookKey,
  isHooksState,
  locateAddress,
  onSyscallPath,
  symbolBaseName,
  type FtraceFilter,
  type HookAddressMap,
  type HookKind,
  type HookLocated,
  type HookLocation,
  type HookRecord,
  type HookStateEntry,
  type HookTarget,
  type HooksState,
  type ModuleTextRanges,
  type VaRange,
} from './hooks/classify.js';
export {
  HOOK_KINDS,
  HOOK_LIMITS,
  NOTIFIER_CHAINS,
  TargetNamer,
  buildAddressMap,
  enumerateHooks,
  kprobeTableSize,
  type HookEnumerateOptions,
  type HookEnumeration,
  type HookVariants,
} from './hooks/enumerate.js';

/** The state a pass returns (the baseline of the next): every hook seen, de-duplicated by key. */
export function hooksState(e: {
  hooks: Parameters<typeof stateEntry>[0][];
  variants: Record<string, string>;
  modules: string[];
}): HooksState {
  const seen = new Map<string, HookStateEntry>();
  for (const h of e.hooks) {
    const s = stateEntry(h);
    if (!seen.has(s.key)) seen.set(s.key, s);
  }
  return { version: 1, variants: { ...e.variants }, modules: [...e.modules], hooks: [...seen.values()] };
}

export const hooksCheck: Check = {
  id: HOOKS,
  title:
    'Hooks: ftrace ops, kprobes, netfilter hooks, keyboard/vt notifiers and LSM hooks point into kernel or module text; module hooks on system calls',
  light: false,
  async run(ctx, baseline): Promise<CheckOutcome> {
    const t0 = performance.now();
    let e;
    try {
      e = await enumerateHooks(ctx.k, { signal: ctx.signal });
    } catch (err) {
      if (!isPmiError(err)) throw err;
      return {
        check: HOOKS,
        findings: [],
        warnings: [`hooks: ${err.message}`],
        partial: true,
        ms: performance.now() - t0,
      };
    }
    const findings: Finding[] = [];
    const seen = new Set<string>();
    for (const h of e.hooks) {
      const f = judgeHook(h);
      if (!f || seen.has(f.key)) continue;
      seen.add(f.key);
      findings.push(f);
    }
    const warnings = [...e.warnings];
    if (baseline !== undefined) {
      if (isHooksState(baseline)) {
        // on a partial pass, what did not read is not gone: additions only
        findings.push(...diffHooks(e.hooks, findings, baseline, { removals: !e.partial }));
      } else warnings.push('hooks: the baseline is not a hooks state of this version; not compared');
    }
    return {
      check: HOOKS,
      findings,
      warnings,
      partial: e.partial,
      ms: performance.now() - t0,
      state: hooksState(e),
    };
  },
};
