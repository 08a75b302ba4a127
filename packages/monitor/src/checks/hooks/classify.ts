/**
 * The `hooks` check's decisions, as pure functions over plain records (no memory access): where a
 * callback address lies (core kernel text, a module's text, or somewhere no code should be), which
 * functions count as the system-call path, what each registered hook means (tampering, a warning,
 * nothing), and what changed since a baseline. See docs/monitor-hooks.md for the rules and why.
 */
import type { Finding, Severity } from '../../model.js';
import { vaHex } from '../../model.js';

export const HOOKS = 'hooks';

/** Where an address lies. Only `core_text` and `module_text` hold code a hook may call. */
export type HookLocation =
  | 'core_text'
  | 'module_text'
  /** inside a listed module, but not its text (data, rodata): not executable */
  | 'module_data'
  /** the kernel image outside `_stext`..`_etext` (data, rodata, bss, freed init text) */
  | 'kernel_image'
  /** the kernel-image/module window outside the image and every listed module (a hidden module?) */
  | 'module_area'
  /** the direct map (`page_offset_base`..): kmalloc'd heap, page allocations */
  | 'direct_map'
  /** vmalloc space (`vmalloc_base`..) */
  | 'vmalloc'
  /** a user-space address */
  | 'user'
  | 'null'
  | 'unknown';

export const HOOK_LOCATION_TEXT: Record<HookLocation, string> = {
  core_text: 'core kernel text',
  module_text: 'module text',
  module_data: 'module memory that is not text',
  kernel_image: 'the kernel image outside its text',
  module_area: 'module space outside every listed module',
  direct_map: 'the direct map (heap)',
  vmalloc: 'vmalloc space',
  user: 'a user-space address',
  null: 'NULL',
  unknown: 'no known kernel code region',
};

export function isText(l: HookLocation): boolean {
  return l === 'core_text' || l === 'module_text';
}

/** A [base, base+size) range. */
export interface VaRange {
  base: bigint;
  size: bigint;
}

export interface ModuleTextRanges {
  name: string;
  /** Executable ranges (core text, init text while it exists). */
  text: VaRange[];
  /** Every range of the module's memory (text included). */
  all: VaRange[];
}

/** What `locateAddress` needs to know about the kernel's address space (from symbols and globals). */
export interface HookAddressMap {
  /** `_stext`..`_etext`. */
  textStart: bigint;
  textEnd: bigint;
  /** `_text`..`_end` (the whole image); falls back to the text bounds. */
  imageStart: bigint;
  imageEnd: bigint;
  modules: ModuleTextRanges[];
  /** `page_offset_base` (start of the direct map), when readable. */
  directMap?: bigint;
  /** `vmalloc_base`, when readable. */
  vmalloc?: bigint;
  /** `vmemmap_base` (end of vmalloc space), when readable. */
  vmemmap?: bigint;
}

/** x86-64: the kernel image sits in [0xffffffff80000000, +1 GiB), modules above it up to MODULE_SPACE_END. */
const IMAGE_WINDOW_START = 0xffffffff80000000n;
const MODULE_SPACE_END = 0xffffffffff000000n;
/** Lowest non-canonical address of a 5-level user half (a 4-level user half ends at 2^47). */
const USER_TOP = 1n << 56n;

export interface HookLocated {
  location: HookLocation;
  /** The module whose memory holds it (module_text / module_data). */
  module?: string;
  /** Offset from the module's first text range (module_text/module_data). */
  moduleOffset?: bigint;
}

function inRange(r: VaRange, va: bigint): boolean {
  return va >= r.base && va < r.base + r.size;
}

/** Where an address lies (see HookLocation). */
export function locateAddress(map: HookAddressMap, va: bigint): HookLocated {
  const v = BigInt.asUintN(64, va);
  if (v === 0n) return { location: 'null' };
  if (v >= map.textStart && v < map.textEnd) return { location: 'core_text' };
  for (const m of map.modules) {
    const base = m.text[0]?.base ?? m.all[0]?.base ?? 0n;
    if (m.text.some((r) => inRange(r, v))) return { location: 'module_text', module: m.name, moduleOffset: v - base };
    if (m.all.some((r) => inRange(r, v))) return { location: 'module_data', module: m.name, moduleOffset: v - base };
  }
  if (v >= map.imageStart && v < map.imageEnd) return { location: 'kernel_image' };
  if (v >= IMAGE_WINDOW_START && v < MODULE_SPACE_END) return { location: 'module_area' };
  if (map.directMap !== undefined && map.vmalloc !== undefined && v >= map.directMap && v < map.vmalloc)
    return { location: 'direct_map' };
  if (map.vmalloc !== undefined && map.vmemmap !== undefined && v >= map.vmalloc && v < map.vmemmap)
    return { location: 'vmalloc' };
  if (v < USER_TOP) return { location: 'user' };
  return { location: 'unknown' };
}

/**
 * Functions on the system-call path: the per-syscall entry points and bodies (`__x64_sys_*`,
 * `__do_sys_*`, `__se_sys_*`, ia32/x32/compat variants) and the dispatch path every syscall goes
 * through (`x64_sys_call`, `do_syscall_64`, the entry code). A hook there sees (and can rewrite)
 * every call of that syscall, or of all of them.
 */
const SYSCALL_PREFIX =
  /^(__x64_sys_|__ia32_sys_|__x32_compat_sys_|__ia32_compat_sys_|__x64_compat_sys_|__do_sys_|__se_sys_|__do_compat_sys_|__se_compat_sys_)/;
const SYSCALL_DISPATCH = new Set([
  'x64_sys_call',
  'x32_sys_call',
  'ia32_sys_call',
  'do_syscall_64',
  'do_int80_syscall_32',
  'do_int80_emulation',
  'do_fast_syscall_32',
  '__do_fast_syscall_32',
  'do_SYSENTER_32',
  'entry_SYSCALL_64',
  'entry_SYSCALL_64_after_hwframe',
  'entry_SYSCALL_compat',
  'entry_INT80_compat',
  'syscall_trace_enter',
]);

/** Strip `+0x…`, a module suffix ` [mod]` and compiler suffixes (`.isra.0`, `.constprop.0`, `.llvm.N`, `.cold`). */
export function symbolBaseName(symbol: string): string {
  let s = symbol.replace(/ \[[^\]]*\]$/, '');
  const plus = s.indexOf('+0x');
  if (plus > 0) s = s.slice(0, plus);
  const dot = s.indexOf('.');
  return dot > 0 ? s.slice(0, dot) : s;
}

/** Is this function (a name, or `name+0xoff`) on the system-call path? */
export function onSyscallPath(symbol: string): boolean {
  const n = symbolBaseName(symbol);
  return SYSCALL_PREFIX.test(n) || SYSCALL_DISPATCH.has(n);
}

export type HookKind = 'ftrace' | 'kprobe' | 'netfilter' | 'notifier' | 'lsm';

/** A callback address, located and named. */
export interface HookTarget {
  va: bigint;
  location: HookLocation;
  module?: string;
  /** `name+0xoff` (core), `name+0xoff [module]` or `module:+0xoff` (module), else the hex address. */
  symbol: string;
}

/** ftrace: which functions an ops filters on. */
export interface FtraceFilter {
  /** Entries in the filter hash; 0 = no filter: the ops traces every traceable function. */
  count: number;
  /** The filtered functions (symbolized), at most a few dozen (see `truncated`). */
  functions: string[];
  /** Those on the system-call path (all of them, not truncated). */
  syscalls: string[];
  truncated: boolean;
  /** ftrace direct calls (`ftrace_func_entry.direct`) of the filtered functions, located. */
  direct: { ip: string; target: HookTarget }[];
}

/** One registered callback. */
export interface HookRecord {
  kind: HookKind;
  /**
   * Where it is registered, stable across passes: `ftrace_ops_list`, `kprobe __do_sys_getppid+0x4`,
   * `netfilter ipv4/POST_ROUTING`, `keyboard_notifier_list`, `lsm file_open`.
   */
  where: string;
  /** The callback's role: func, pre_handler, post_handler, handler, entry_handler, hook, notifier_call, static_call. */
  role: string;
  target: HookTarget;
  /** The object that holds the callback (ftrace_ops, kprobe, notifier_block, nf_hook_entries, security_hook_list). */
  object: bigint;
  /** Where that object lies (a core static, a module's data, the heap). */
  objectLocation?: HookLocation;
  objectModule?: string;
  /** kprobes: the probed address. */
  probe?: HookTarget;
  /** ftrace: the ops' filter. */
  filter?: FtraceFilter;
  /** LSM: the LSM's name (`apparmor`); netfilter: `prio -225`; kprobes: flags; free text. */
  detail?: string;
  lsm?: string;
  /**
   * What the kernel's own bookkeeping says the callback is, when it differs from the callback that
   * runs: LSM static calls (`key->func` ≠ the registered hook), netfilter (`orig_ops[i]->hook` ≠
   * `hooks[i].hook`). Tampering.
   */
  expected?: { what: string; target: HookTarget };
  /** LSM static calls: the slot's static key is disabled (`active` off). */
  inactive?: boolean;
  /** Network namespaces (inode numbers) where a netfilter hook is registered. */
  netns?: number[];
}

/** One hook in the baseline (`state.hooks`). */
export interface HookStateEntry {
  key: string;
  kind: HookKind;
  where: string;
  role: string;
  symbol: string;
  location: HookLocation;
  module?: string;
  lsm?: string;
}

export interface HooksState {
  version: 1;
  /** Which structure each kind was read from on this kernel (for reports; see HookVariants). */
  variants: Record<string, string>;
  /** Modules loaded at this pass. */
  modules: string[];
  hooks: HookStateEntry[];
}

/** Stable key of a hook (what baselines compare and alerts de-duplicate on). */
export function hookKey(h: HookRecord): string {
  let k = `${h.kind}:${h.where}:${h.role}:${h.target.symbol}`;
  if (h.kind === 'ftrace' && h.filter && h.filter.syscalls.length > 0) k += `:${h.filter.syscalls.join(',')}`;
  return k;
}

export function stateEntry(h: HookRecord): HookStateEntry {
  const e: HookStateEntry = {
    key: hookKey(h),
    kind: h.kind,
    where: h.where,
    role: h.role,
    symbol: h.target.symbol,
    location: h.target.location,
  };
  if (h.target.module) e.module = h.target.module;
  if (h.lsm) e.lsm = h.lsm;
  return e;
}

/** Notifier chains: what a module's callback on them means. */
export const NOTIFIER_MODULE_RULE: Readonly<Record<string, { severity: Severity; why: string } | undefined>> = {
  keyboard_notifier_list: {
    severity: 'medium',
    why: 'sees every keystroke (what keyloggers register; accessibility modules such as speakup do too)',
  },
  vt_notifier_list: {
    severity: 'low',
    why: 'sees every character written to the virtual consoles (screen loggers; speakup does too)',
  },
};

function describeTarget(t: HookTarget): string {
  const where =
    t.location === 'module_text' || t.location === 'module_data'
      ? `${HOOK_LOCATION_TEXT[t.location]} of ${t.module}`
      : HOOK_LOCATION_TEXT[t.location];
  return t.symbol === vaHex(t.va) || t.symbol === '0x' + t.va.toString(16)
    ? `${vaHex(t.va)} (${where})`
    : `${t.symbol} (${vaHex(t.va)}, ${where})`;
}

function describeHook(h: HookRecord): string {
  const obj = h.object
    ? ` [${kindObject(h.kind)} at ${vaHex(h.object)}${h.objectLocation ? `, ${objectWhere(h)}` : ''}]`
    : '';
  const detail = h.detail ? ` (${h.detail})` : '';
  return `${label(h.kind, h.where)}${detail} ${h.role}${obj}`;
}

/** `netfilter ipv4/LOCAL_IN`, `kprobe __x64_sys_getppid`, `notifier keyboard_notifier_list`, `ftrace ftrace_ops_list`. */
function label(kind: HookKind, where: string): string {
  const first = where.split(' ')[0];
  return first === kind || (kind === 'kprobe' && first === 'kretprobe') ? where : `${kind} ${where}`;
}

function objectWhere(h: HookRecord): string {
  const l = h.objectLocation!;
  if (l === 'module_data' || l === 'module_text') return `in module ${h.objectModule}`;
  if (l === 'kernel_image') return 'a kernel static';
  return HOOK_LOCATION_TEXT[l];
}

function kindObject(kind: HookKind): string {
  switch (kind) {
    case 'ftrace':
      return 'ftrace_ops';
    case 'kprobe':
      return 'kprobe';
    case 'netfilter':
      return 'nf_hook_entries';
    case 'notifier':
      return 'notifier_block';
    case 'lsm':
      return 'security_hook_list';
  }
}

function finding(h: HookRecord, kind: Finding['kind'], severity: Severity, evidence: string): Finding {
  return {
    check: HOOKS,
    kind,
    severity,
    address: vaHex(h.target.va),
    symbol: h.target.location === 'null' ? null : h.target.symbol,
    evidence,
    key: `${HOOKS}:${hookKey(h)}`,
    new: vaHex(h.target.va),
  };
}

/**
 * What one hook means on its own (no history): tampering, a warning, or nothing (undefined).
 * The rules (docs/monitor-hooks.md):
 * - a callback outside core and module text → tampering, high (LSM: critical); NULL → a warning;
 * - LSM: a hook in a module → tampering, critical (LSMs are built in); a static call whose target
 *   differs from its hook, or an unused slot with a target → critical; a disabled static key of a
 *   non-BPF LSM hook → high;
 * - ftrace: an ops whose func is in a module and filters on a syscall function (or whose direct call
 *   on one is in a module) → tampering, high; a module's ops on other functions, or on every
 *   function → warning, medium;
 * - kprobes: a handler in a module on a syscall function → tampering, high; a handler in a module
 *   elsewhere → warning, medium; a probe address outside text → warning, medium;
 * - notifiers: a module on keyboard_notifier_list → warning, medium; on vt_notifier_list → warning,
 *   low; other chains → nothing;
 * - netfilter: a module's hook → nothing (that is what netfilter modules do).
 */
export function judgeHook(h: HookRecord): Finding | undefined {
  const t = h.target;
  const what = describeHook(h);
  if (t.location === 'null')
    return h.role === 'static_call'
      ? undefined
      : finding(h, 'warning', 'low', `${what} is NULL (a broken registration)`);
  if (h.kind === 'lsm') {
    if (h.expected)
      return finding(
        h,
        'tampering',
        'critical',
        `${what}: ${h.expected.what} calls ${describeTarget(h.expected.target)}, not the registered hook ${describeTarget(t)}`,
      );
    if (h.role === 'static_call')
      return finding(h, 'tampering', 'critical', `${what}: an unused LSM static call slot calls ${describeTarget(t)}`);
    if (t.location !== 'core_text')
      return finding(
        h,
        'tampering',
        'critical',
        `${what} → ${describeTarget(t)}: LSMs are built into the kernel, every hook must be in core kernel text`,
      );
    if (h.inactive && h.lsm !== 'bpf')
      return finding(
        h,
        'tampering',
        'high',
        `${what} → ${describeTarget(t)}: its static key is disabled (the hook is skipped)`,
      );
    return undefined;
  }
  if (!isText(t.location))
    return finding(
      h,
      'tampering',
      'high',
      `${what} → ${describeTarget(t)}: a registered callback must point into core kernel or module text`,
    );
  if (h.expected)
    return finding(
      h,
      'tampering',
      'high',
      `${what} → ${describeTarget(t)}, but ${h.expected.what} is ${describeTarget(h.expected.target)}: the callback was replaced in place`,
    );
  if (h.kind === 'ftrace') {
    const f = h.filter;
    const moduleDirect = f?.direct.filter((d) => d.target.location === 'module_text' && onSyscallPath(d.ip)) ?? [];
    if (moduleDirect.length > 0)
      return finding(
        h,
        'tampering',
        'high',
        `${what}: ftrace direct call on ${moduleDirect.map((d) => `${d.ip} → ${describeTarget(d.target)}`).join(', ')} (a module redirecting a system call)`,
      );
    if (t.location !== 'module_text') return undefined;
    if (f && f.syscalls.length > 0)
      return finding(
        h,
        'tampering',
        'high',
        `${what} → ${describeTarget(t)} filters on system-call function${f.syscalls.length > 1 ? 's' : ''} ${f.syscalls.slice(0, 8).join(', ')}${f.syscalls.length > 8 ? ` (+${f.syscalls.length - 8})` : ''}: a module hooking a system call through ftrace`,
      );
    if (!f || f.count === 0)
      return finding(h, 'warning', 'medium', `${what} → ${describeTarget(t)} traces every function (no filter)`);
    return finding(
      h,
      'warning',
      'medium',
      `${what} → ${describeTarget(t)} traces ${f.count} function${f.count > 1 ? 's' : ''}: ${f.functions.slice(0, 8).join(', ')}${f.count > 8 ? ', …' : ''}`,
    );
  }
  if (h.kind === 'kprobe') {
    if (t.location === 'module_text' && h.probe && onSyscallPath(h.probe.symbol))
      return finding(
        h,
        'tampering',
        'high',
        `${what} → ${describeTarget(t)}: a module's handler on system-call function ${h.probe.symbol}`,
      );
    if (h.probe && !isText(h.probe.location))
      return finding(
        h,
        'warning',
        'medium',
        `${what}: probe address ${describeTarget(h.probe)} is not in kernel or module text`,
      );
    if (t.location === 'module_text')
      return finding(h, 'warning', 'medium', `${what} → ${describeTarget(t)}: a module's kprobe handler`);
    return undefined;
  }
  if (h.kind === 'notifier' && t.location === 'module_text') {
    const rule = NOTIFIER_MODULE_RULE[h.where];
    if (rule)
      return finding(h, 'warning', rule.severity, `${what} → ${describeTarget(t)}: a module's callback ${rule.why}`);
  }
  return undefined;
}

/**
 * Findings from history: with a baseline, a hook whose key is new is an `event` (severity info: a
 * netfilter module loaded, a tracer started) unless it is already judged on its own; a baseline hook
 * that is gone is an event too, except an LSM hook (LSM hooks are never unregistered: tampering, high).
 * `removals: false` (a partial pass: what did not read is not gone) reports additions only.
 */
export function diffHooks(
  current: readonly HookRecord[],
  judged: readonly Finding[],
  baseline: HooksState,
  opts: { removals?: boolean } = {},
): Finding[] {
  const out: Finding[] = [];
  const before = new Map(baseline.hooks.map((e) => [e.key, e]));
  const now = new Map<string, HookRecord>();
  for (const h of current) if (!now.has(hookKey(h))) now.set(hookKey(h), h);
  const judgedKeys = new Set(judged.map((f) => f.key));
  for (const [key, h] of now) {
    if (before.has(key) || judgedKeys.has(`${HOOKS}:${key}`)) continue;
    const from = h.target.module
      ? ` from module ${h.target.module}${baseline.modules.includes(h.target.module) ? '' : ' (loaded after the baseline)'}`
      : '';
    out.push({
      ...finding(h, 'event', 'info', `new since the baseline: ${describeHook(h)} → ${describeTarget(h.target)}${from}`),
    });
  }
  for (const [key, e] of before) {
    if (now.has(key) || opts.removals === false) continue;
    const gone = `${label(e.kind, e.where)} ${e.role} → ${e.symbol}${e.module && !e.symbol.includes(`[${e.module}]`) ? ` [${e.module}]` : ''}`;
    if (e.kind === 'lsm')
      out.push({
        check: HOOKS,
        kind: 'tampering',
        severity: 'high',
        address: null,
        symbol: e.symbol,
        evidence: `LSM hook gone since the baseline: ${gone}${e.lsm ? ` (${e.lsm})` : ''} — LSM hooks are never unregistered at run time`,
        key: `${HOOKS}:${key}`,
        old: e.symbol,
      });
    else
      out.push({
        check: HOOKS,
        kind: 'event',
        severity: 'info',
        address: null,
        symbol: e.symbol,
        evidence: `gone since the baseline: ${gone}`,
        key: `${HOOKS}:${key}`,
        old: e.symbol,
      });
  }
  return out;
}

/** Is `x` a HooksState this version understands? (A baseline from another version is ignored.) */
export function isHooksState(x: unknown): x is HooksState {
  const s = x as HooksState | undefined;
  return !!s && s.version === 1 && Array.isArray(s.hooks) && Array.isArray(s.modules);
}
