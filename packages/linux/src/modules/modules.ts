/**
 * Loaded kernel modules: the `modules` list (struct module, `list` member), as /proc/modules shows it.
 *
 * Kernel differences are detected from BTF, never from a version number:
 * - 6.4+: `module->mem[MOD_*]` (struct module_memory {base, size}); /proc/modules prints the sum of
 *   every `mem[type].size` (init sizes are zeroed once init has run) and `mem[MOD_TEXT].base`.
 * - before: `core_layout`/`init_layout` (struct module_layout); /proc/modules prints
 *   `init_layout.size + core_layout.size` (+ `data_layout.size` where that layout exists) and
 *   `core_layout.base`.
 */
import { PmiError, hex } from '@pmi/core';
import type { KernelObjects, Layout, StructView } from '@pmi/kernel';

export type ModuleStateName = 'Live' | 'Loading' | 'Unloading' | 'Unformed';

export interface ModuleRow {
  name: string;
  /** Core text base (what /proc/modules prints as the address). */
  base: bigint;
  /** Size as /proc/modules computes it for this kernel. */
  size: number;
  /** module_refcount(): refcnt − MODULE_REF_BASE (1). */
  refcount: number;
  state: ModuleStateName;
  /** Taint letters as /proc/modules prints them inside "(…)" ('' when untainted). */
  taint: string;
  /** "Used by": the modules that depend on this one (its source_list), plus "[permanent]" when it has init but no exit. */
  deps: string[];
  /** Address of the struct module. */
  va: bigint;
  /** Core memory regions [base, base+size) — used to symbolize addresses inside the module. */
  regions: { kind: string; base: bigint; size: number }[];
  /** module->kallsyms (struct mod_kallsyms *), 0n when absent. */
  kallsyms: bigint;
}

export interface ModuleListResult {
  rows: ModuleRow[];
  warnings: string[];
  /** How this kernel lays out a module's memory: `mem` (`module->mem[MOD_*]`, 6.4+) or `core_layout`
   * (`core_layout`/`init_layout` [+ `data_layout`]). */
  layout: ModuleMemoryLayout;
  /** Set when the walk stopped early (E_LIST); rows are then partial. */
  error?: PmiError;
}

export interface ModuleListOptions {
  /** Upper bound on the list length (default 65,536). */
  max?: number;
  signal?: AbortSignal;
}

const STATE_NAMES: Record<string, ModuleStateName> = {
  MODULE_STATE_LIVE: 'Live',
  MODULE_STATE_COMING: 'Loading',
  MODULE_STATE_GOING: 'Unloading',
  MODULE_STATE_UNFORMED: 'Unformed',
};

/**
 * Taint bits that /proc/modules shows for a module (kernel/panic.c taint_flags[], `.module = true`),
 * indexed by bit number. Bits not listed are never set on modules.
 */
export const MODULE_TAINT_LETTERS: Record<number, string> = {
  0: 'P', // TAINT_PROPRIETARY_MODULE
  1: 'F', // TAINT_FORCED_MODULE
  10: 'C', // TAINT_CRAP
  12: 'O', // TAINT_OOT_MODULE
  13: 'E', // TAINT_UNSIGNED_MODULE
  15: 'K', // TAINT_LIVEPATCH
  16: 'X', // TAINT_AUX
  17: 'T', // TAINT_RANDSTRUCT
  18: 'N', // TAINT_TEST
};

export function taintLetters(taints: bigint): string {
  let s = '';
  for (let bit = 0; bit < 64; bit++) {
    if (((taints >> BigInt(bit)) & 1n) === 0n) continue;
    s += MODULE_TAINT_LETTERS[bit] ?? '';
  }
  return s;
}

export type ModuleMemoryLayout = 'mem' | 'core_layout';

/** `mem` where struct module has `mem[]` (6.4+), else `core_layout`. */
export function moduleMemoryLayout(k: KernelObjects): ModuleMemoryLayout {
  return k.hasField('module', 'mem') ? 'mem' : 'core_layout';
}

/** The module layout the walk needs, per kernel shape. */
export function moduleLayout(k: KernelObjects): Layout {
  const hasMem = moduleMemoryLayout(k) === 'mem';
  const fields = [
    'name',
    'list',
    'state',
    'refcnt.counter?',
    'taints?',
    'source_list?',
    'init?',
    'exit?',
    'kallsyms?',
    ...(hasMem
      ? ['mem']
      : ['core_layout.base', 'core_layout.size', 'init_layout.size', 'data_layout.base?', 'data_layout.size?']),
  ];
  return k.layout('module', fields);
}

function memTypeNames(k: KernelObjects, count: number): string[] {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    let n = `mem${i}`;
    try {
      const name = k.btf.enumName('mod_mem_type', i);
      if (name) n = name.replace(/^MOD_/, '').toLowerCase();
    } catch {
      /* no enum: keep the index name */
    }
    names.push(n);
  }
  return names;
}

/** Decode one struct module (read with moduleLayout) into a row; deps are filled by the caller. */
export function moduleRow(k: KernelObjects, m: StructView): ModuleRow {
  const T = m.layout;
  const regions: ModuleRow['regions'] = [];
  let base = 0n;
  let size = 0;
  if (T.has('mem')) {
    const n = m.length('mem');
    const names = memTypeNames(k, n);
    let textIdx = 0;
    try {
      textIdx = Number(k.btf.enumValue('mod_mem_type', 'MOD_TEXT'));
    } catch {
      textIdx = 0;
    }
    for (let i = 0; i < n; i++) {
      const mm = m.struct('mem', i);
      const b = mm.ptr('base');
      const s = mm.num('size');
      size += s;
      if (i === textIdx) base = b;
      if (s > 0 && b !== 0n) regions.push({ kind: names[i], base: b, size: s });
    }
  } else {
    base = m.ptr('core_layout.base');
    const core = m.num('core_layout.size');
    size = core + m.num('init_layout.size');
    if (core > 0) regions.push({ kind: 'core', base, size: core });
    if (T.has('data_layout.size')) {
      const ds = m.num('data_layout.size');
      size += ds;
      if (ds > 0) regions.push({ kind: 'data', base: m.ptr('data_layout.base'), size: ds });
    }
  }
  const stateEnum = m.enumName('state');
  const state = STATE_NAMES[stateEnum] ?? 'Live';
  const refcnt = T.has('refcnt.counter') ? m.s32('refcnt.counter') : 1;
  const taints = T.has('taints') ? BigInt(m.int('taints')) : 0n;
  let taint = taintLetters(taints);
  if (state === 'Loading') taint += '+';
  if (state === 'Unloading') taint += '-';
  const deps: string[] = [];
  return {
    name: m.str('name'),
    base,
    size,
    refcount: refcnt - 1,
    state,
    taint,
    deps,
    va: m.va,
    regions,
    kallsyms: T.has('kallsyms') ? m.ptr('kallsyms') : 0n,
  };
}

/**
 * Walk the `modules` list: one row per module in list order (newest first, like /proc/modules),
 * with "used by" names from each module's source_list. Unformed modules are skipped (as
 * /proc/modules does). Bounded: a corrupt list yields the rows read so far, a warning and `error`.
 */
export async function listModules(k: KernelObjects, opts: ModuleListOptions = {}): Promise<ModuleListResult> {
  const M = moduleLayout(k);
  const warnings: string[] = [];
  const { items, error } = await k.collectList(k.symbol('modules'), M, 'list', {
    name: 'modules',
    max: opts.max ?? 65536,
    signal: opts.signal,
  });
  if (error) warnings.push(`modules list: ${error.message}`);
  const rows: ModuleRow[] = [];
  for (const m of items) {
    let row: ModuleRow;
    try {
      row = moduleRow(k, m);
    } catch (e) {
      warnings.push(`module at ${hex(m.va)}: ${(e as Error).message}`);
      continue;
    }
    if (row.state === 'Unformed') continue;
    if (M.has('init') && M.has('exit') && !m.isNull('init') && m.isNull('exit')) row.deps.push('[permanent]');
    rows.push(row);
    if (M.has('source_list')) {
      const head = m.addressOf('source_list');
      const first = m.struct('source_list').ptr('next');
      if (first !== head) {
        const U = k.layout('module_use', ['source_list', 'source.name']);
        const users: string[] = [];
        const r = await k.collectList(head, U, 'source_list', { name: `${row.name}.source_list`, max: 4096 });
        for (const u of r.items) users.push(u.reached('source.name') ? u.str('source.name') : '?');
        if (r.error) warnings.push(`${row.name} used-by list: ${r.error.message}`);
        row.deps.unshift(...users);
      }
    }
  }
  return { rows, warnings, error, layout: M.has('mem') ? 'mem' : 'core_layout' };
}
