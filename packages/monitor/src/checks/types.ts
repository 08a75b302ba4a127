/**
 * The contract every integrity check implements. One shape for all of them, so `pmi check`,
 * `pmi baseline` and `pmi watch` run any check the same way:
 *
 * - `run(ctx, baseline)` does one pass. `baseline` is this check's own part of a baseline (what an
 *   earlier pass returned as `state`), or undefined on the first observation — then the pass
 *   compares only what needs no history (e.g. a table entry against the symbol it should name) and
 *   returns the `state` that becomes the baseline.
 * - `state` must be JSON (strings for addresses and hashes: no bigint), small enough for a file.
 * - `regions` (optional) are byte ranges the watcher polls every interval; a change there makes the
 *   watcher run this check again at once.
 */
import type { PhysicalMemory } from '@pmi/core';
import type { DiscoveredKernel, KernelObjects } from '@pmi/kernel';
import type { CheckResult } from '../model.js';

export interface CheckContext {
  /** Discovery's result: memory, symbols, facts (release, slide, paging). */
  d: DiscoveredKernel;
  /** Typed access through BTF (KernelObjects.from(d)); the same instance for every check of a pass. */
  k: KernelObjects;
  mem: PhysicalMemory;
  signal?: AbortSignal;
}

/** A byte range the watcher polls: physical address + size (virtually contiguous kernel data is
 * split into its physically contiguous pieces by whoever builds the spec). */
export interface PolledRegion {
  /** Stable name, e.g. `sys_call_table`, `idt_table`, `x64_sys_call`. */
  name: string;
  /** Kernel virtual address of the first byte. */
  va: bigint;
  /** Physical pieces, in order; their sizes sum to `size`. */
  pieces: { pa: number; len: number }[];
  size: number;
}

export interface CheckOutcome extends CheckResult {
  /** JSON state for the baseline (see file comment). */
  state?: unknown;
  /** Regions to poll, with their bytes at this pass (the watcher's reference copy). */
  regions?: { region: PolledRegion; bytes: Uint8Array }[];
}

export interface Check {
  /** Short id used in findings, baselines and metrics: `syscall_table`, `idt`, `text`, … */
  id: string;
  /** One line for docs and `pmi check --list`. */
  title: string;
  /** True when a pass costs little (critical set, polled often); false for heavy cross-views. */
  light: boolean;
  run(ctx: CheckContext, baseline: unknown | undefined): Promise<CheckOutcome>;
}
