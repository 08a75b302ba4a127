/**
 * Reading every registered hook of five kinds from kernel memory (the `hooks` check's input):
 * ftrace ops, kprobes, netfilter hooks, notifier chains (keyboard, vt and a few others) and LSM
 * hooks. Which structure each kind is read from is decided by what exists in BTF and kallsyms,
 * never by a version number; every walk is bounded; a structure that does not read gives a warning
 * and `partial`, never a throw. See docs/monitor-hooks.md.
 */
import { isPmiError, PmiError } from '@pmi/core';
import type { KernelObjects, StructView } from '@pmi/kernel';
import { listModules, loadModuleSymbols, type ModuleRow, type ModuleSymbols } from '@pmi/linux';
import { vaHex } from '../../model.js';
import {
  onSyscallPath,
  locateAddress,
  type HookAddressMap,
  type FtraceFilter,
  type HookKind,
  type HookRecord,
  type HookLocation,
  type ModuleTextRanges,
  type HookTarget,
} from './classify.js';

/** Bounds (a corrupt structure must never make a walk long). */
export const HOOK_LIMITS = {
  ftraceOps: 1024,
  /** ftrace_hash.size_bits above this is not a hash the kernel makes (FTRACE_HASH_MAX_BITS is 12). */
  ftraceHashBits: 16,
  ftraceHashEntries: 1 << 20,
  /** Functions kept per ftrace filter (all syscall functions are kept). */
  ftraceFunctionsKept: 32,
  /** KPROBE_TABLE_SIZE = 1 << KPROBE_HASH_BITS (6) since 2.6; a smaller room up to the next symbol wins. */
  kprobeTable: 64,
  kprobesPerBucket: 4096,
  netns: 4096,
  /** The kernel refuses more than MAX_HOOK_COUNT (1024) entries per hook. */
  nfEntries: 1024,
  notifiers: 1024,
  lsmPerHook: 64,
} as const;

/** Which structure each kind was read from ('absent' when this kernel has none). */
export type HookVariants = Record<HookKind, string>;

export interface HookEnumeration {
  hooks: HookRecord[];
  warnings: string[];
  partial: boolean;
  variants: HookVariants;
  /** Time per kind (ms), and `setup` (symbols, modules, address map). */
  ms: Record<string, number>;
  /** Modules loaded (names, list order). */
  modules: string[];
  map: HookAddressMap;
}

export interface HookEnumerateOptions {
  signal?: AbortSignal;
  /** Kinds to read (default all). */
  kinds?: readonly HookKind[];
}

export const HOOK_KINDS: readonly HookKind[] = ['ftrace', 'kprobe', 'netfilter', 'notifier', 'lsm'];

// ------------------------------------------------------------------------------------------ setup

/** Text ranges of every module: `mem[MOD_TEXT]`/`mem[MOD_INIT_TEXT]` (6.4+), else `core_layout`/`init_layout` base + text_size. */
export async function moduleTextRanges(
  k: KernelObjects,
  rows: readonly ModuleRow[],
  warnings: string[],
): Promise<ModuleTextRanges[]> {
  const all = (m: ModuleRow) => m.regions.map((r) => ({ base: r.base, size: BigInt(r.size) }));
  if (rows.length === 0) return [];
  if (k.hasField('module', 'mem')) {
    return rows.map((m) => ({
      name: m.name,
      text: m.regions
        .filter((r) => r.kind === 'text' || r.kind === 'init_text')
        .map((r) => ({ base: r.base, size: BigInt(r.size) })),
      all: all(m),
    }));
  }
  const T = k.layout('module', [
    'core_layout.base',
    'core_layout.size',
    'core_layout.text_size',
    'init_layout.base',
    'init_layout.size',
    'init_layout.text_size',
  ]);
  const views = await k.readStructs(
    rows.map((m) => m.va),
    T,
  );
  return rows.map((m, i) => {
    const v = views[i];
    const base: ModuleTextRanges = { name: m.name, text: [], all: all(m) };
    if (v instanceof PmiError) {
      warnings.push(`module ${m.name}: layout unreadable (${v.message}); its whole core memory counts as text`);
      base.text = base.all;
      return base;
    }
    for (const l of ['core_layout', 'init_layout']) {
      const b = v.ptr(`${l}.base`);
      const ts = v.num(`${l}.text_size`);
      const size = v.num(`${l}.size`);
      if (b !== 0n && ts > 0) base.text.push({ base: b, size: BigInt(ts) });
      if (l === 'init_layout' && b !== 0n && size > 0) base.all.push({ base: b, size: BigInt(size) });
    }
    return base;
  });
}

async function optionalGlobal(k: KernelObjects, name: string): Promise<bigint | undefined> {
  try {
    if (!k.symbols.get(name)) return undefined;
    const v = BigInt(await k.globalValue(name));
    return v === 0n ? undefined : BigInt.asUintN(64, v);
  } catch {
    return undefined;
  }
}

/** The address map (core text, image, modules, direct map and vmalloc bases) and the module rows. */
export async function buildAddressMap(
  k: KernelObjects,
  warnings: string[],
  signal?: AbortSignal,
): Promise<{ map: HookAddressMap; rows: ModuleRow[] }> {
  const get = (n: string) => k.symbols.get(n)?.address;
  const textStart = get('_stext') ?? get('_text');
  const textEnd = get('_etext');
  if (textStart === undefined || textEnd === undefined)
    throw new PmiError('E_NOT_FOUND', 'monitor', 'kernel text bounds: no _stext/_etext symbol', {});
  let rows: ModuleRow[] = [];
  try {
    const r = await listModules(k, { signal });
    rows = r.rows;
    for (const w of r.warnings) warnings.push(`modules: ${w}`);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`modules list unreadable (${e.message}): every module address counts as outside module text`);
  }
  let modules: ModuleTextRanges[] = [];
  try {
    modules = await moduleTextRanges(k, rows, warnings);
  } catch (e) {
    if (!isPmiError(e)) throw e;
    warnings.push(`module text ranges unreadable (${e.message}): every module address counts as outside module text`);
  }
  const map: HookAddressMap = {
    textStart,
    textEnd,
    imageStart: get('_text') ?? textStart,
    imageEnd: get('_end') ?? textEnd,
    modules,
    directMap: await optionalGlobal(k, 'page_offset_base'),
    vmalloc: await optionalGlobal(k, 'vmalloc_base'),
    vmemmap: await optionalGlobal(k, 'vmemmap_base'),
  };
  return { map, rows };
}

/** Names and locates callback addresses (module symbols are read once, on the first module address). */
export class TargetNamer {
  private modSyms?: Promise<ModuleSymbols | undefined>;
  constructor(
    private readonly k: KernelObjects,
    readonly map: HookAddressMap,
    private readonly rows: readonly ModuleRow[],
    private readonly warnings: string[],
  ) {}

  private moduleSymbols(): Promise<ModuleSymbols | undefined> {
    this.modSyms ??= loadModuleSymbols(this.k, { modules: this.rows }).then(
      (s) => {
        for (const w of s.warnings) this.warnings.push(`module symbols: ${w}`);
        return s;
      },
      (e: unknown) => {
        if (!isPmiError(e)) throw e;
        this.warnings.push(`module symbols unreadable: ${e.message}`);
        return undefined;
      },
    );
    return this.modSyms;
  }

  /** Core kernel symbol `name+0xoff` (image addresses only), else undefined. */
  coreSymbol(va: bigint): string | undefined {
    if (va < this.map.imageStart || va >= this.map.imageEnd) return undefined;
    const hit = this.k.symbols.byAddress(va, 1n << 24n);
    if (!hit) return undefined;
    return hit.offset === 0n ? hit.name : `${hit.name}+0x${hit.offset.toString(16)}`;
  }

  async target(va: bigint): Promise<HookTarget> {
    const v = BigInt.asUintN(64, va);
    const l = locateAddress(this.map, v);
    let symbol: string | undefined;
    if (l.location === 'core_text' || l.location === 'kernel_image') symbol = this.coreSymbol(v);
    else if (l.module) {
      symbol = (await this.moduleSymbols())?.format(v);
      symbol ??= `${l.module}:+0x${(l.moduleOffset ?? 0n).toString(16)}`;
    }
    const t: HookTarget = { va: v, location: l.location, symbol: symbol ?? vaHex(v) };
    if (l.module) t.module = l.module;
    return t;
  }

  /** Where an object (a struct holding a callback) lies. */
  objectWhere(va: bigint): { objectLocation: HookLocation; objectModule?: string } {
    const l = locateAddress(this.map, va);
    return l.module ? { objectLocation: l.location, objectModule: l.module } : { objectLocation: l.location };
  }
}

interface Part {
  hooks: HookRecord[];
  variant: string;
}

/** Collected by every reader: warnings and whether something could not be read. */
interface Sink {
  warnings: string[];
  partial: boolean;
}

function fail(s: Sink, what: string, e: unknown): void {
  if (!isPmiError(e)) throw e;
  s.warnings.push(`${what}: ${e.message}`);
  s.partial = true;
}

// ------------------------------------------------------------------------------------------ ftrace

async function ftraceFilter(
  k: KernelObjects,
  n: TargetNamer,
  funcHash: bigint,
  s: Sink,
  what: string,
): Promise<FtraceFilter | undefined> {
  if (funcHash === 0n) return undefined;
  const H = k.layout('ftrace_ops_hash', ['filter_hash']);
  const hashVa = (await k.read(funcHash, H)).ptr('filter_hash');
  const empty: FtraceFilter = { count: 0, functions: [], syscalls: [], truncated: false, direct: [] };
  if (hashVa === 0n) return empty;
  const FH = k.layout('ftrace_hash', ['size_bits', 'buckets', 'count']);
  const h = await k.read(hashVa, FH);
  const bits = h.num('size_bits');
  const count = h.num('count');
  const buckets = h.ptr('buckets');
  if (count === 0 || buckets === 0n) return empty;
  if (bits > HOOK_LIMITS.ftraceHashBits || count > HOOK_LIMITS.ftraceHashEntries) {
    s.warnings.push(`${what}: filter hash at ${vaHex(hashVa)} has size_bits ${bits}, count ${count}: not read`);
    s.partial = true;
    return { ...empty, count };
  }
  const E = k.layout('ftrace_func_entry', ['hlist', 'ip', 'direct?']);
  const heads = await k.readPointers(buckets, 1 << bits);
  const f: FtraceFilter = { count, functions: [], syscalls: [], truncated: false, direct: [] };
  let seen = 0;
  for (let b = 0; b < heads.length; b++) {
    if (heads[b] === 0n) continue;
    const r = await collect(
      k.walkHlist(buckets + BigInt(b * 8), E, 'hlist', { max: count + 1, name: `${what} filter bucket ${b}` }),
    );
    if (r.error) fail(s, `${what}: filter hash`, r.error);
    for (const e of r.items) {
      seen++;
      const ip = e.ptr('ip');
      const name = n.coreSymbol(ip) ?? (await n.target(ip)).symbol;
      if (onSyscallPath(name)) f.syscalls.push(name);
      if (f.functions.length < HOOK_LIMITS.ftraceFunctionsKept) f.functions.push(name);
      else f.truncated = true;
      if (E.has('direct') && !e.isNull('direct')) f.direct.push({ ip: name, target: await n.target(e.ptr('direct')) });
    }
  }
  if (seen !== count) s.warnings.push(`${what}: filter hash says ${count} entries, ${seen} read`);
  f.syscalls.sort();
  return f;
}

async function collect(it: AsyncIterable<StructView>): Promise<{ items: StructView[]; error?: PmiError }> {
  const items: StructView[] = [];
  try {
    for await (const x of it) items.push(x);
    return { items };
  } catch (e) {
    if (isPmiError(e)) return { items, error: e };
    throw e;
  }
}

export async function readFtraceHooks(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  const list = k.symbols.get('ftrace_ops_list');
  const end = k.symbols.get('ftrace_list_end');
  if (!list || !end || !k.hasType('ftrace_ops')) return { hooks: [], variant: 'absent' };
  const O = k.layout('ftrace_ops', ['func', 'next', 'flags', 'func_hash']);
  // the flag's value differs between kernels; BTF's global enumerator index is costly to build, so
  // it is looked up only for ops whose func is not core kernel text (the ones worth describing)
  let ipmodify: number | bigint | undefined | null = null;
  const hooks: HookRecord[] = [];
  const seen = new Set<bigint>();
  let p = await k.readPointer(list.address);
  for (let i = 0; ; i++) {
    if (p === end.address) break;
    if (p === 0n) {
      s.warnings.push(`ftrace_ops_list: NULL link after ${i} ops (the list ends at ftrace_list_end)`);
      s.partial = true;
      break;
    }
    if (seen.has(p) || i >= HOOK_LIMITS.ftraceOps) {
      s.warnings.push(`ftrace_ops_list: ${seen.has(p) ? 'cycle' : 'too long'} at ${vaHex(p)} after ${i} ops`);
      s.partial = true;
      break;
    }
    seen.add(p);
    let o: StructView;
    try {
      o = await k.read(p, O);
    } catch (e) {
      fail(s, `ftrace_ops at ${vaHex(p)}`, e);
      break;
    }
    const what = `ftrace_ops at ${vaHex(p)}`;
    let filter: FtraceFilter | undefined;
    try {
      filter = await ftraceFilter(k, n, o.ptr('func_hash'), s, what);
    } catch (e) {
      fail(s, `${what}: filter`, e);
    }
    const flags = o.u64('flags');
    const target = await n.target(o.ptr('func'));
    const details: string[] = [];
    const owner = n.coreSymbol(p);
    if (owner) details.push(owner);
    if (target.location !== 'core_text') {
      if (ipmodify === null) ipmodify = k.btf.enumerator('FTRACE_OPS_FL_IPMODIFY')?.value;
      if (ipmodify !== undefined && (flags & BigInt(ipmodify)) !== 0n) details.push('IPMODIFY');
    }
    if (filter)
      details.push(filter.count === 0 ? 'no filter' : `${filter.count} function${filter.count > 1 ? 's' : ''}`);
    hooks.push({
      kind: 'ftrace',
      where: 'ftrace_ops_list',
      role: 'func',
      target,
      object: p,
      ...n.objectWhere(p),
      filter,
      detail: details.join(', '),
    });
    p = o.ptr('next');
  }
  return { hooks, variant: 'ftrace_ops_list' };
}

// ------------------------------------------------------------------------------------------ kprobes

const KPROBE_FLAGS: [number, string][] = [
  [1, 'GONE'],
  [2, 'DISABLED'],
  [4, 'OPTIMIZED'],
  [8, 'FTRACE'],
];

function kprobeFlags(f: number): string {
  const names = KPROBE_FLAGS.filter(([b]) => (f & b) !== 0).map(([, nm]) => nm);
  return names.length ? names.join('|') : '';
}

/** Entries of `kprobe_table`: 64, or fewer when the next symbol comes sooner. */
export function kprobeTableSize(k: KernelObjects, va: bigint): number {
  let room: number = HOOK_LIMITS.kprobeTable;
  const hit = k.symbols.byAddress(va, 0n);
  if (hit) {
    for (let i = hit.index + 1; i < k.symbols.count; i++) {
      const a = k.symbols.address(i);
      if (a <= va) continue;
      room = Math.min(room, Number((a - va) / 8n));
      break;
    }
  }
  return Math.max(1, room);
}

export async function readKprobeHooks(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  const table = k.symbols.get('kprobe_table');
  if (!table || !k.hasType('kprobe')) return { hooks: [], variant: 'absent' };
  const size = kprobeTableSize(k, table.address);
  const KP = k.layout('kprobe', ['hlist', 'list', 'addr', 'pre_handler', 'post_handler', 'flags']);
  const aggr = k.symbols.get('aggr_pre_handler')?.address;
  const kret = k.symbols.get('pre_handler_kretprobe')?.address;
  const RP =
    k.hasType('kretprobe') && k.hasField('kretprobe', 'kp')
      ? k.layout('kretprobe', ['kp', 'handler', 'entry_handler?'])
      : undefined;
  const hooks: HookRecord[] = [];
  const heads = await k.readPointers(table.address, size);

  const one = async (kp: StructView): Promise<void> => {
    const probe = await n.target(kp.ptr('addr'));
    const flags = kprobeFlags(kp.num('flags'));
    const pre = kp.ptr('pre_handler');
    const common = { kind: 'kprobe' as const, object: kp.va, ...n.objectWhere(kp.va), probe };
    if (RP && kret !== undefined && pre === kret) {
      // a kretprobe: the user's handlers live in the struct kretprobe around the kprobe
      const rp = await k.read(RP.containerOf(kp.va, 'kp'), RP);
      const where = `kretprobe ${probe.symbol}`;
      for (const role of ['handler', 'entry_handler']) {
        if (!RP.has(role) || rp.isNull(role)) continue;
        hooks.push({ ...common, where, role, target: await n.target(rp.ptr(role)), detail: flags || undefined });
      }
      return;
    }
    const where = `kprobe ${probe.symbol}`;
    for (const role of ['pre_handler', 'post_handler']) {
      if (kp.isNull(role)) continue;
      hooks.push({ ...common, where, role, target: await n.target(kp.ptr(role)), detail: flags || undefined });
    }
  };

  for (let b = 0; b < heads.length; b++) {
    if (heads[b] === 0n) continue;
    const name = `kprobe_table[${b}]`;
    const r = await collect(
      k.walkHlist(table.address + BigInt(b * 8), KP, 'hlist', { max: HOOK_LIMITS.kprobesPerBucket, name }),
    );
    if (r.error) fail(s, name, r.error);
    for (const kp of r.items) {
      try {
        if (aggr !== undefined && kp.ptr('pre_handler') === aggr) {
          // an aggregated probe: several kprobes on one address, listed on ap->list
          const c = await k.collectList(kp.addressOf('list'), KP, 'list', {
            max: HOOK_LIMITS.kprobesPerBucket,
            name: `aggregated kprobe at ${vaHex(kp.va)}`,
          });
          if (c.error) fail(s, `aggregated kprobe at ${vaHex(kp.va)}`, c.error);
          for (const child of c.items) await one(child);
        } else await one(kp);
      } catch (e) {
        fail(s, `kprobe at ${vaHex(kp.va)}`, e);
      }
    }
  }
  return { hooks, variant: `kprobe_table[${size}]` };
}

// ------------------------------------------------------------------------------------------ netfilter

const INET_HOOKS = ['PRE_ROUTING', 'LOCAL_IN', 'FORWARD', 'LOCAL_OUT', 'POST_ROUTING'];
const ARP_HOOKS = ['IN', 'OUT', 'FORWARD'];
/** netns_nf arrays read: family name, field, hook names (bridge numbers its hooks as inet does). */
const NF_FAMILIES = [
  { family: 'ipv4', field: 'hooks_ipv4', names: INET_HOOKS },
  { family: 'ipv6', field: 'hooks_ipv6', names: INET_HOOKS },
  { family: 'arp', field: 'hooks_arp', names: ARP_HOOKS },
  { family: 'bridge', field: 'hooks_bridge', names: INET_HOOKS },
] as const;

export async function readNetfilterHooks(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  const init = k.symbols.get('init_net');
  if (!init || !k.hasField('net', 'nf') || !k.hasType('nf_hook_entries') || !k.hasType('nf_hook_entry'))
    return { hooks: [], variant: 'absent' };
  const fams = NF_FAMILIES.filter((f) => k.hasField('netns_nf', f.field));
  const N = k.layout('net', ['list', 'ns.inum?', ...fams.map((f) => `nf.${f.field}`)]);
  let nets: StructView[];
  const nsList = k.symbols.get('net_namespace_list');
  if (nsList) {
    const r = await k.collectList(nsList.address, N, 'list', { max: HOOK_LIMITS.netns, name: 'net_namespace_list' });
    if (r.error) fail(s, 'net_namespace_list', r.error);
    nets = r.items;
    if (!nets.some((v) => v.va === init.address)) nets.unshift(await k.read(init.address, N));
  } else nets = [await k.read(init.address, N)];

  const hooksOff = BigInt(k.btf.fieldOffset('nf_hook_entries', 'hooks'));
  const entrySize = k.btf.sizeOf('nf_hook_entry');
  const hookOff = k.btf.fieldOffset('nf_hook_entry', 'hook');
  const HE = k.layout('nf_hook_entries', ['num_hook_entries']);
  const OPS = k.hasType('nf_hook_ops') ? k.layout('nf_hook_ops', ['hook', 'priority?']) : undefined;
  const accept = k.symbols.get('accept_all')?.address;
  const byKey = new Map<string, HookRecord>();
  const hooks: HookRecord[] = [];
  for (const net of nets) {
    const inum = N.has('ns.inum') ? net.num('ns.inum') : undefined;
    for (const f of fams) {
      const field = `nf.${f.field}`;
      const len = net.length(field);
      for (let i = 0; i < len; i++) {
        const e = net.array(field, i) as bigint;
        if (e === 0n) continue;
        const where = `netfilter ${f.family}/${f.names[i] ?? `hook${i}`}`;
        try {
          const num = (await k.read(e, HE)).num('num_hook_entries');
          if (num > HOOK_LIMITS.nfEntries) {
            s.warnings.push(
              `${where}: nf_hook_entries at ${vaHex(e)} claims ${num} entries (the kernel allows ${HOOK_LIMITS.nfEntries}): not read`,
            );
            s.partial = true;
            continue;
          }
          if (num === 0) continue;
          const raw = await k.readBytes(e + hooksOff, entrySize * num);
          const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
          // after hooks[num] the kernel keeps `struct nf_hook_ops *orig_ops[num]` (allocate_hook_entries_size)
          const opsVa = await k.readPointers(e + hooksOff + BigInt(entrySize * num), num).catch(() => undefined);
          const ops = OPS && opsVa ? await k.readStructs(opsVa, OPS) : undefined;
          for (let j = 0; j < num; j++) {
            const hook = dv.getBigUint64(j * entrySize + hookOff, true);
            const o = ops?.[j];
            const view = o && !(o instanceof PmiError) ? o : undefined;
            const prio = view && OPS!.has('priority') ? `prio ${view.int('priority')}` : undefined;
            const target = await n.target(hook);
            const rec: HookRecord = {
              kind: 'netfilter',
              where,
              role: 'hook',
              target,
              object: e,
              ...n.objectWhere(e),
              detail: prio,
              netns: inum !== undefined ? [inum] : undefined,
            };
            const opsHook = view?.ptr('hook');
            if (opsHook !== undefined && opsHook !== hook && hook !== accept && opsHook !== accept)
              rec.expected = { what: 'its nf_hook_ops.hook', target: await n.target(opsHook) };
            const key = `${where}|${target.symbol}|${rec.expected?.target.symbol ?? ''}`;
            const had = byKey.get(key);
            if (had) {
              if (inum !== undefined && had.netns && !had.netns.includes(inum)) had.netns.push(inum);
              continue;
            }
            byKey.set(key, rec);
            hooks.push(rec);
          }
        } catch (err) {
          fail(s, `${where} (netns ${inum ?? '?'}) at ${vaHex(e)}`, err);
        }
      }
    }
  }
  return { hooks, variant: `net.nf.{${fams.map((f) => f.field).join(',')}} × ${nets.length} netns` };
}

// ------------------------------------------------------------------------------------------ notifiers

/** Notifier chains read, and the head type each is declared with. */
export const NOTIFIER_CHAINS: readonly { name: string; head: string }[] = [
  { name: 'keyboard_notifier_list', head: 'atomic_notifier_head' },
  { name: 'vt_notifier_list', head: 'atomic_notifier_head' },
  { name: 'module_notify_list', head: 'blocking_notifier_head' },
  { name: 'panic_notifier_list', head: 'atomic_notifier_head' },
  { name: 'die_chain', head: 'atomic_notifier_head' },
  { name: 'reboot_notifier_list', head: 'blocking_notifier_head' },
  { name: 'netdev_chain', head: 'raw_notifier_head' },
];

export async function readNotifierHooks(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  if (!k.hasType('notifier_block')) return { hooks: [], variant: 'absent' };
  const NB = k.layout('notifier_block', ['notifier_call', 'next', 'priority']);
  const hooks: HookRecord[] = [];
  const read: string[] = [];
  for (const c of NOTIFIER_CHAINS) {
    const sym = k.symbols.get(c.name);
    if (!sym || !k.hasField(c.head, 'head')) continue;
    read.push(c.name);
    const seen = new Set<bigint>();
    try {
      let p = await k.readPointer(sym.address + BigInt(k.btf.fieldOffset(c.head, 'head')));
      for (let i = 0; p !== 0n; i++) {
        if (seen.has(p) || i >= HOOK_LIMITS.notifiers) {
          s.warnings.push(`${c.name}: ${seen.has(p) ? 'cycle' : 'too long'} at ${vaHex(p)} after ${i} notifier blocks`);
          s.partial = true;
          break;
        }
        seen.add(p);
        const nb = await k.read(p, NB);
        hooks.push({
          kind: 'notifier',
          where: c.name,
          role: 'notifier_call',
          target: await n.target(nb.ptr('notifier_call')),
          object: p,
          ...n.objectWhere(p),
          detail: `priority ${nb.int('priority')}`,
        });
        p = nb.ptr('next');
      }
    } catch (e) {
      fail(s, c.name, e);
    }
  }
  return { hooks, variant: read.length ? read.join(',') : 'absent' };
}

// ------------------------------------------------------------------------------------------ LSM

async function lsmName(k: KernelObjects, cache: Map<bigint, string>, p: bigint): Promise<string> {
  if (p === 0n) return '?';
  let v = cache.get(p);
  if (v === undefined) {
    v = await k.readString(p, 64).catch(() => '?');
    cache.set(p, v);
  }
  return v;
}

/** Before static calls: `security_hook_heads`, one hlist of `struct security_hook_list` per hook. */
async function readLsmHlists(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  const heads = k.symbols.get('security_hook_heads')!;
  const id = k.btf.findType('security_hook_heads', 'struct')!;
  const members = k.btf.members(id);
  const HL = k.layout('security_hook_list', ['list', 'hook', 'lsm']);
  const bytes = await k.readBytes(heads.address, k.btf.sizeOf(id));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // chase every list's links first (one small read per node), then read all nodes in one batch
  const listOff = BigInt(HL.offsetOf('list'));
  const nextOff = BigInt(k.btf.fieldOffset('hlist_node', 'next'));
  const nodes: { hook: string; va: bigint }[] = [];
  for (const m of members) {
    const off = m.bitOffset / 8;
    let node = dv.getBigUint64(off, true);
    const seen = new Set<bigint>();
    const what = `security_hook_heads.${m.name}`;
    try {
      while (node !== 0n) {
        if (seen.has(node) || seen.size >= HOOK_LIMITS.lsmPerHook) {
          s.warnings.push(
            `${what}: ${seen.has(node) ? 'cycle' : 'too long'} at ${vaHex(node)} after ${seen.size} hooks`,
          );
          s.partial = true;
          break;
        }
        seen.add(node);
        nodes.push({ hook: m.name, va: node - listOff });
        node = await k.readPointer(node + nextOff);
      }
    } catch (e) {
      nodes.pop(); // its link did not read: neither will the node
      fail(s, `${what}: hook list at ${vaHex(node)}`, e);
    }
  }
  const views = await k.readStructs(
    nodes.map((x) => x.va),
    HL,
  );
  const names = new Map<bigint, string>();
  const hooks: HookRecord[] = [];
  for (let i = 0; i < nodes.length; i++) {
    const h = views[i];
    if (h instanceof PmiError) {
      fail(s, `security_hook_heads.${nodes[i].hook}`, h);
      continue;
    }
    const lsm = await lsmName(k, names, h.ptr('lsm'));
    hooks.push({
      kind: 'lsm',
      where: `lsm ${nodes[i].hook}`,
      role: 'hook',
      target: await n.target(h.ptr('hook')),
      object: h.va,
      ...n.objectWhere(h.va),
      lsm,
      detail: lsm,
    });
  }
  return { hooks, variant: `security_hook_heads (${members.length} hlists)` };
}

/**
 * Static calls (the kernel's choice from 6.12 on): `static_calls_table`, per hook an array of
 * `struct lsm_static_call {key, trampoline, hl, active}`; a used slot's `hl` is the registered
 * `security_hook_list`, `key->func` what the static call really calls, `active` its static key.
 */
async function readLsmStaticCalls(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  const table = k.symbols.get('static_calls_table')!;
  const id = k.btf.findType('lsm_static_calls_table', 'struct')!;
  const members = k.btf.members(id);
  const size = k.btf.sizeOf(id);
  const sc = k.btf.sizeOf('lsm_static_call');
  const oKey = k.btf.fieldOffset('lsm_static_call', 'key');
  const oHl = k.btf.fieldOffset('lsm_static_call', 'hl');
  const oAct = k.hasField('lsm_static_call', 'active') ? k.btf.fieldOffset('lsm_static_call', 'active') : undefined;
  const bytes = await k.readBytes(table.address, size);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  interface Slot {
    hook: string;
    i: number;
    va: bigint;
    key: bigint;
    hl: bigint;
    active: bigint;
  }
  const used: Slot[] = [];
  const unused: Slot[] = [];
  for (const m of members) {
    const base = m.bitOffset / 8;
    const count = Math.floor(k.btf.sizeOf(m.type) / sc);
    for (let i = 0; i < count; i++) {
      const p = base + i * sc;
      const slot: Slot = {
        hook: m.name,
        i,
        va: table.address + BigInt(p),
        key: dv.getBigUint64(p + oKey, true),
        hl: dv.getBigUint64(p + oHl, true),
        active: oAct === undefined ? 0n : dv.getBigUint64(p + oAct, true),
      };
      (slot.hl !== 0n ? used : unused).push(slot);
    }
  }
  const lsmField = k.hasField('security_hook_list', 'lsmid') ? 'lsmid.name' : 'lsm';
  const HL = k.layout('security_hook_list', ['hook', lsmField]);
  const KEY = k.layout('static_call_key', ['func']);
  const ACT =
    oAct !== undefined && k.hasType('static_key_false')
      ? k.layout('static_key_false', ['key.enabled.counter'])
      : undefined;
  const [hls, keys, unusedKeys, acts] = await Promise.all([
    k.readStructs(
      used.map((u) => u.hl),
      HL,
    ),
    k.readStructs(
      used.map((u) => u.key),
      KEY,
    ),
    k.readStructs(
      unused.filter((u) => u.key !== 0n).map((u) => u.key),
      KEY,
    ),
    ACT
      ? k.readStructs(
          used.map((u) => u.active),
          ACT,
        )
      : Promise.resolve(undefined),
  ]);
  const names = new Map<bigint, string>();
  const hooks: HookRecord[] = [];
  for (let j = 0; j < used.length; j++) {
    const u = used[j];
    const h = hls[j];
    const where = `lsm ${u.hook}`;
    if (h instanceof PmiError) {
      fail(s, `${where} slot ${u.i}: security_hook_list`, h);
      continue;
    }
    let lsm = '?';
    if (lsmField === 'lsm') lsm = await lsmName(k, names, h.ptr('lsm'));
    else if (h.reached('lsmid.name')) lsm = await lsmName(k, names, h.ptr('lsmid.name'));
    const target = await n.target(h.ptr('hook'));
    const rec: HookRecord = {
      kind: 'lsm',
      where,
      role: 'hook',
      target,
      object: h.va,
      ...n.objectWhere(h.va),
      lsm,
      detail: lsm,
    };
    const kv = keys[j];
    if (kv instanceof PmiError) fail(s, `${where} slot ${u.i}: static_call_key`, kv);
    else if (kv.ptr('func') !== h.ptr('hook'))
      rec.expected = { what: 'its static call', target: await n.target(kv.ptr('func')) };
    const a = acts?.[j];
    if (a && !(a instanceof PmiError) && a.int('key.enabled.counter') === 0) rec.inactive = true;
    hooks.push(rec);
  }
  const withKey = unused.filter((u) => u.key !== 0n);
  for (let j = 0; j < withKey.length; j++) {
    const kv = unusedKeys[j];
    const u = withKey[j];
    if (kv instanceof PmiError) {
      fail(s, `lsm ${u.hook} slot ${u.i}: static_call_key`, kv);
      continue;
    }
    const f = kv.ptr('func');
    if (f === 0n) continue;
    hooks.push({
      kind: 'lsm',
      where: `lsm ${u.hook}`,
      role: 'static_call',
      target: await n.target(f),
      object: u.va,
      ...n.objectWhere(u.va),
    });
  }
  return {
    hooks,
    variant: `static_calls_table (${members.length} hooks × ${Math.round(size / members.length / sc)} slots, ${used.length} used)`,
  };
}

export async function readLsmHooks(k: KernelObjects, n: TargetNamer, s: Sink): Promise<Part> {
  if (k.hasType('lsm_static_calls_table') && k.hasType('lsm_static_call') && k.symbols.get('static_calls_table'))
    return readLsmStaticCalls(k, n, s);
  if (k.hasType('security_hook_heads') && k.symbols.get('security_hook_heads')) return readLsmHlists(k, n, s);
  return { hooks: [], variant: 'absent' };
}

const READERS: Record<HookKind, (k: KernelObjects, n: TargetNamer, s: Sink) => Promise<Part>> = {
  ftrace: readFtraceHooks,
  kprobe: readKprobeHooks,
  netfilter: readNetfilterHooks,
  notifier: readNotifierHooks,
  lsm: readLsmHooks,
};

/** Every hook of the requested kinds, with the address map they were located on. */
export async function enumerateHooks(k: KernelObjects, opts: HookEnumerateOptions = {}): Promise<HookEnumeration> {
  const t0 = performance.now();
  const sink: Sink = { warnings: [], partial: false };
  const { map, rows } = await buildAddressMap(k, sink.warnings, opts.signal);
  const namer = new TargetNamer(k, map, rows, sink.warnings);
  const ms: Record<string, number> = { setup: performance.now() - t0 };
  const variants = {} as HookVariants;
  const hooks: HookRecord[] = [];
  for (const kind of opts.kinds ?? HOOK_KINDS) {
    opts.signal?.throwIfAborted();
    const t = performance.now();
    try {
      const part = await READERS[kind](k, namer, sink);
      hooks.push(...part.hooks);
      variants[kind] = part.variant;
    } catch (e) {
      fail(sink, `${kind} hooks`, e);
      variants[kind] = 'unreadable';
    }
    ms[kind] = performance.now() - t;
  }
  return { hooks, warnings: sink.warnings, partial: sink.partial, variants, ms, modules: rows.map((r) => r.name), map };
}
